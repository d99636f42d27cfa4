// Per-plane kernels of the fused Shuffle Attention, float32.
//
// Included once per instruction set by shuffle_attention.cpp with
// SA_TARGET set to a function attribute (e.g. target("avx2,fma")) and
// SA_NS to a namespace name, so that gcc/clang vectorise the same loops
// (auto-vectorised, or written with GCC vector types where they reduce)
// for each ISA and the best one is picked at run time. Every function
// here carries SA_TARGET: a helper without it would not be inlined into the
// vectorised loops.
//
// One plane is the H*W values of one (sample, channel). The gate is
// y = x * sigmoid(a * (x - c) + b) with per-plane a, b and c, the plane's
// mean as a float (a = 0 for the channel half): about 0, a * x and b
// nearly cancel in float when the mean is large against the spread. Sums
// are short float sums added up in double (see f16 below).
// Build flags: -fopenmp (at::parallel_for) and -fno-trapping-math (lets
// the clamps in exp_clamped be if-converted and vectorised).

namespace SA_NS {

// exp(v) for v in [-87.3, 88.3] (clamped); branch-free so that loops
// calling it vectorise. The gate is most of a spatial plane's arithmetic,
// so it takes the fewest vector operations: n = round(v / ln 2) by adding
// 1.5 * 2^23 + 127, which leaves n + 127 in the sum's low bits (shifted
// up, the bits of 2^n); r = v - n ln 2 in one FMA (ln 2 as a float is off
// by 2e-9, which |n| <= 127 turns into up to 2.5e-7 of relative error at
// the ends of the range, where the gate is within 1e-30 of 0 or 1); and
// exp(r) = 1 + r + r^2 P(r) with a cubic P fitted for least maximum
// relative error on |r| <= ln 2 / 2 (1.05e-7). Max error 2.8 ulp for
// |v| < 20 and 5.4 ulp beyond; the sigmoid's 3.4 and 5.5 ulp, its absolute
// error under 1e-7 as before (with a degree-7 polynomial and a two-FMA
// reduction, three FMAs more: exp 0.9 ulp, sigmoid 2.3 ulp).
SA_TARGET static inline float exp_clamped(float v) {
  v = v < -87.3f ? -87.3f : v;
  v = v > 88.3f ? 88.3f : v;
  constexpr float kRound = 12583039.0f;  // 1.5 * 2^23 + 127
  const float t = v * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  const float r = v - n * 0.693147182f;
  float p = 8.3125075325e-3f;
  p = p * r + 4.1890151799e-2f;
  p = p * r + 1.6667114198e-1f;
  p = p * r + 4.9999231100e-1f;
  p = (p * r + 1.0f) * r + 1.0f;  // 1 + r + r^2 * P(r)
  uint32_t bits;
  __builtin_memcpy(&bits, &t, sizeof(bits));
  bits <<= 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

SA_TARGET static inline float sigmoid(float z) {
  return 1.0f / (1.0f + exp_clamped(-z));
}

// Sixteen floats and eight doubles as GCC/clang vector types, for the
// loops that reduce. Sums are accumulated in float lanes over a chunk of
// at most kChunk values (two accumulators: 8 values per lane for a full
// chunk), and the chunks' sums in double. Widening every value to double
// instead cost more vector operations than the arithmetic being summed
// (single thread, AVX-512, per 16x16 plane: variance 210 -> 154 cycles,
// spatial backward sums 686 -> 539), while 8-term float sums keep the
// rounding small. Values are centred first where a sum would otherwise
// cancel (a mean far from 0).
typedef float f16 __attribute__((vector_size(64)));
typedef double d8 __attribute__((vector_size(64)));

constexpr int64_t kChunk = 256;

SA_TARGET static inline f16 load16(const float* p) {
  f16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

SA_TARGET static inline void store16(float* p, f16 v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// The 16 lanes summed in double (lane by lane: gcc 12 lowers
// __builtin_convertvector here to two halves and an insert).
SA_TARGET static inline double hsum(f16 v) {
  const d8 lo = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
  const d8 hi = {v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
  const d8 w = lo + hi;
  return ((w[0] + w[4]) + (w[2] + w[6])) + ((w[1] + w[5]) + (w[3] + w[7]));
}

// Sums over the plane of d = x - shift into *s and of d^2 into *q (either
// may be null: not summed), 16 float lanes per chunk, chunks in double.
SA_TARGET static inline void shifted_sums(const float* x, int64_t m,
                                          float shift, double* s,
                                          double* q) {
  double ts = 0, tq = 0;
  int64_t i = 0;
  while (i + 16 <= m) {
    f16 s0 = {}, s1 = {}, q0 = {}, q1 = {};
    const int64_t end = std::min(m, i + kChunk);
    for (; i + 32 <= end; i += 32) {
      const f16 d0 = load16(x + i) - shift, d1 = load16(x + i + 16) - shift;
      if (s != nullptr) {
        s0 += d0;
        s1 += d1;
      }
      if (q != nullptr) {
        q0 += d0 * d0;
        q1 += d1 * d1;
      }
    }
    if (i + 16 <= end) {
      const f16 d0 = load16(x + i) - shift;
      if (s != nullptr) s0 += d0;
      if (q != nullptr) q0 += d0 * d0;
      i += 16;
    }
    if (s != nullptr) ts += hsum(s0 + s1);
    if (q != nullptr) tq += hsum(q0 + q1);
  }
  for (; i < m; ++i) {
    const float d = x[i] - shift;
    ts += d;
    tq += static_cast<double>(d) * d;
  }
  if (s != nullptr) *s = ts;
  if (q != nullptr) *q = tq;
}

// Mean and biased variance of one plane (the mean only when var is null:
// the channel half). One pass sums d = x - x[0] and d^2 (x[0] if finite,
// else 0: an inf there would turn the sums into NaN instead of inf), so
// that a large offset does not cancel in the mean. The variance
// E[d^2] - E[d]^2 cancels by E[d^2] / var = 1 + (mean - x[0])^2 / var; up
// to 8 it is taken from that pass, beyond (x[0] an outlier, or not finite)
// from a second pass about the mean, which reads the plane from cache.
SA_TARGET void plane_stats(const float* x, int64_t m, double* mean,
                           double* var) {
  const double inv_m = 1.0 / m;  // off the chain that waits for the sums
  const float x0 = __builtin_isfinite(x[0]) ? x[0] : 0.0f;
  double s, q;
  // two calls, so that each inlined copy drops the loop's unused sums
  if (var == nullptr) {
    shifted_sums(x, m, x0, &s, nullptr);
  } else {
    shifted_sums(x, m, x0, &s, &q);
  }
  const double ms = s * inv_m;
  const double mu = x0 + ms;
  *mean = mu;
  if (var == nullptr) return;
  const double mq = q * inv_m;
  const double v1 = mq - ms * ms;
  // cancellation up to 8x leaves the float sums' rounding under ~5e-6 of
  // var
  if (v1 > 0 && mq <= 8 * v1) {
    *var = v1;
    return;
  }
  const float muf = static_cast<float>(mu);
  double ss;
  shifted_sums(x, m, muf, nullptr, &ss);
  // correct for the float rounding of the mean
  const double dm = mu - muf;
  *var = ss * inv_m - dm * dm;
}

// The gate s = sigmoid(a * (x - c) + b) of values [i0, i0 + len) into
// s[]. Gates are computed a chunk at a time into a stack buffer and used by
// a second loop: fused in one loop, gcc vectorises it far worse. (A
// reciprocal estimate or Newton steps in place of the division do not
// help: the vector arithmetic bounds the gate, not the divider.)

SA_TARGET static inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

// The gradient through the block's ReLU: g = gy where y > 0, else 0
// (torch's threshold_backward on the output).
SA_TARGET static inline float relu_grad(float gy, float y) {
  return y <= 0.0f ? 0.0f : gy;
}

SA_TARGET static inline void gates(const float* x, int64_t len, float a,
                                   float b, float c, float* s) {
  for (int64_t i = 0; i < len; ++i) s[i] = sigmoid(a * (x[i] - c) + b);
}

// Brings the lines of [i0, i0 + len) of each plane in `ahead` (the inputs
// of a plane further on) towards L2 while this plane computes, so that
// that plane's passes wait less on DRAM.
SA_TARGET static inline void prefetch_ahead(const SaAhead* ahead, int64_t i0,
                                            int64_t len) {
  if (ahead == nullptr) return;
  for (int j = 0; j < 3; ++j) {
    const float* p = ahead->p[j];
    if (p == nullptr) continue;
    for (int64_t i = 0; i < len; i += 16) __builtin_prefetch(p + i0 + i, 0, 2);
  }
}

// y = x * s with s = sigmoid(a * (x - c) + b); with a residual r (the end
// of a ResNet block), y = relu(x * s + r), keeping NaN as torch.relu.
SA_TARGET void plane_forward(const float* x, const float* r, float* y,
                             int64_t m, float a, float b, float c,
                             const SaAhead* ahead) {
  float s[kChunk];
  const float s0 = a == 0.0f ? sigmoid(b) : 0.0f;  // the channel half's gate
  for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
    const float* xc = x + i0;
    float* yc = y + i0;
    prefetch_ahead(ahead, i0, len);
    if (a == 0.0f) {
      if (r == nullptr) {
        for (int64_t i = 0; i < len; ++i) yc[i] = xc[i] * s0;
      } else {
        const float* rc = r + i0;
        for (int64_t i = 0; i < len; ++i) yc[i] = relu(xc[i] * s0 + rc[i]);
      }
      continue;
    }
    gates(xc, len, a, b, c, s);
    if (r == nullptr) {
      for (int64_t i = 0; i < len; ++i) yc[i] = xc[i] * s[i];
    } else {
      const float* rc = r + i0;
      for (int64_t i = 0; i < len; ++i) yc[i] = relu(xc[i] * s[i] + rc[i]);
    }
  }
}

// 16 values of plane_backward_sums (below) for a constant gate s: dx gets
// g * s, p sums g * x and q sums g * x * (x - c).
SA_TARGET static inline void constant_gate_step(const float* g,
                                                const float* x, float* dx,
                                                float s, float c, f16& p,
                                                f16& q) {
  const f16 g0 = load16(g), x0 = load16(x);
  store16(dx, g0 * s);
  const f16 gx = g0 * x0;
  p += gx;
  q += gx * (x0 - c);
}

// 16 values of plane_backward_sums for gates s[]: t gets g * s + a * d, p
// sums d and q sums d * (x - c).
SA_TARGET static inline void gate_step(const float* g, const float* x,
                                       const float* s, float* t, float a,
                                       float c, f16& p, f16& q) {
  const f16 x0 = load16(x), s0 = load16(s), g0 = load16(g);
  const f16 gs = g0 * s0, gsx = gs * x0;
  const f16 d = gsx - gsx * s0;  // g x s (1 - s) in 3 operations
  store16(t, gs + a * d);
  p += d;
  q += d * (x0 - c);
}

// With d = g * x * s * (1 - s), s = sigmoid(a * (x - c) + b): sum(d) and
// sum(d * (x - c)) (about 0, the latter would cancel against
// mean * sum(d) in the caller when the mean is large).
// For a = 0 the same sums are s(1-s) * sum(g * x) and
// s(1-s) * sum(g * x * (x - c)).
// g is gy, or with the block output y (residual forward) the gradient
// through the ReLU, which is also the residual's: it is written to g_out.
// The part of dx that needs no sums, t = g * s + a * d, goes to dx (from
// where plane_backward_dx reads it back in cache): the second pass then
// neither evaluates the gate again nor keeps it.
SA_TARGET void plane_backward_sums(const float* gy, const float* y,
                                   float* g_out, const float* x, int64_t m,
                                   float a, float b, float c, double* sum_d,
                                   double* sum_dxc, float* dx) {
  if (y != nullptr) {
    for (int64_t i = 0; i < m; ++i) g_out[i] = relu_grad(gy[i], y[i]);
  }
  const float* g = y == nullptr ? gy : g_out;
  double sd = 0, sdx = 0;
  if (a == 0.0f) {
    const float s = sigmoid(b);
    int64_t i = 0;
    while (i + 16 <= m) {
      f16 p0 = {}, p1 = {}, q0 = {}, q1 = {};
      const int64_t end = std::min(m, i + kChunk);
      for (; i + 32 <= end; i += 32) {
        constant_gate_step(g + i, x + i, dx + i, s, c, p0, q0);
        constant_gate_step(g + i + 16, x + i + 16, dx + i + 16, s, c, p1, q1);
      }
      if (i + 16 <= end) {
        constant_gate_step(g + i, x + i, dx + i, s, c, p0, q0);
        i += 16;
      }
      sd += hsum(p0 + p1);
      sdx += hsum(q0 + q1);
    }
    for (; i < m; ++i) {
      const float gx = g[i] * x[i];
      dx[i] = g[i] * s;
      sd += gx;
      sdx += static_cast<double>(gx) * (x[i] - c);
    }
    const double ds = static_cast<double>(s) * (1 - s);
    *sum_d = sd * ds;
    *sum_dxc = sdx * ds;
    return;
  }
  float s[kChunk];
  for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
    const float* xc = x + i0;
    const float* gc = g + i0;
    float* tc = dx + i0;
    gates(xc, len, a, b, c, s);
    f16 p0 = {}, p1 = {}, q0 = {}, q1 = {};
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
      gate_step(gc + i, xc + i, s + i, tc + i, a, c, p0, q0);
      gate_step(gc + i + 16, xc + i + 16, s + i + 16, tc + i + 16, a, c, p1,
                q1);
    }
    if (i + 16 <= len) {
      gate_step(gc + i, xc + i, s + i, tc + i, a, c, p0, q0);
      i += 16;
    }
    sd += hsum(p0 + p1);
    sdx += hsum(q0 + q1);
    for (; i < len; ++i) {
      const float gs = gc[i] * s[i], gsx = gs * xc[i];
      const float d = gsx - gsx * s[i];
      tc[i] = gs + a * d;
      sd += d;
      sdx += static_cast<double>(d) * (xc[i] - c);
    }
  }
  *sum_d = sd;
  *sum_dxc = sdx;
}

// dx = t + alpha * (x - c) + beta, t as plane_backward_sums left it in dx
// (alpha = 0 for the channel half, which then does not read x).
SA_TARGET void plane_backward_dx(const float* x, float* dx, int64_t m,
                                 float alpha, float beta, float c) {
  if (alpha == 0.0f) {
    for (int64_t i = 0; i < m; ++i) dx[i] += beta;
    return;
  }
  for (int64_t i = 0; i < m; ++i) dx[i] += alpha * (x[i] - c) + beta;
}

}  // namespace SA_NS
