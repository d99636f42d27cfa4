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
// y = x * sigmoid(a * x + b) with per-plane a, b (a = 0 for the channel
// half). Sums are accumulated in double for accuracy. Build flags:
// -fopenmp (at::parallel_for) and -fno-trapping-math
// (lets the clamps in exp_clamped be if-converted and vectorised).

namespace SA_NS {

// exp(v) for v in [-87.3, 88.3] (clamped), Cephes polynomial; relative
// error about 2 ulp, branch-free so that loops calling it vectorise.
SA_TARGET static inline float exp_clamped(float v) {
  v = v < -87.3f ? -87.3f : v;
  v = v > 88.3f ? 88.3f : v;
  const float n = __builtin_floorf(v * 1.44269504088896341f + 0.5f);
  float r = v - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

SA_TARGET static inline float sigmoid(float z) {
  return 1.0f / (1.0f + exp_clamped(-z));
}

// Eight floats and eight doubles as GCC/clang vector types, for the loops
// that reduce: their partial sums stay in registers, two chains deep, and
// end in a three-level tree. (As omp simd reductions in double, gcc 12
// spilled the 16 lanes and added them one by one: ~70 cycles per
// reduction, two or three per plane, against ~400 cycles of arithmetic in
// a 16x16 plane.)
typedef float f8 __attribute__((vector_size(32)));
typedef double d8 __attribute__((vector_size(64)));

SA_TARGET static inline f8 load8(const float* p) {
  f8 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

SA_TARGET static inline void store8(float* p, f8 v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// (lane by lane: gcc 12 lowers __builtin_convertvector here to two halves
// and an insert instead of one vcvtps2pd)
SA_TARGET static inline d8 widen(f8 v) {
  return d8{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
}

SA_TARGET static inline double hsum(d8 v) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

// Mean and biased variance of one plane (two passes; the second reads the
// plane from cache). The mean only when var is null (the channel half).
SA_TARGET void plane_stats(const float* x, int64_t m, double* mean,
                           double* var) {
  d8 s0 = {}, s1 = {};
  int64_t i = 0;
  for (; i + 16 <= m; i += 16) {
    s0 += widen(load8(x + i));
    s1 += widen(load8(x + i + 8));
  }
  double s = hsum(s0 + s1);
  for (; i < m; ++i) s += x[i];
  const double mu = s / m;
  *mean = mu;
  if (var == nullptr) return;
  const float muf = static_cast<float>(mu);
  d8 q0 = {}, q1 = {};
  for (i = 0; i + 16 <= m; i += 16) {
    const d8 d0 = widen(load8(x + i) - muf);
    const d8 d1 = widen(load8(x + i + 8) - muf);
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  double ss = hsum(q0 + q1);
  for (; i < m; ++i) {
    const float d = x[i] - muf;
    ss += static_cast<double>(d) * d;
  }
  // correct for the float rounding of the mean
  const double dm = mu - muf;
  *var = ss / m - dm * dm;
}

// The gate s = sigmoid(a * x + b) of values [i0, i0 + len) into s[]. Gates
// are computed a chunk at a time into a stack buffer and used by a second
// loop: fusing both in one loop made gcc 12 emit code ~6x slower. (AVX-512
// intrinsics doing both in one loop, with a reciprocal estimate instead of
// the division, measured no faster: the passes wait on memory.)
constexpr int64_t kChunk = 256;

SA_TARGET static inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

// The gradient through the block's ReLU: g = gy where y > 0, else 0
// (torch's threshold_backward on the output).
SA_TARGET static inline float relu_grad(float gy, float y) {
  return y <= 0.0f ? 0.0f : gy;
}

SA_TARGET static inline void gates(const float* x, int64_t len, float a,
                                   float b, float* s) {
  for (int64_t i = 0; i < len; ++i) s[i] = sigmoid(a * x[i] + b);
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

// y = x * sigmoid(a * x + b); with a residual r (the end of a ResNet
// block), y = relu(x * sigmoid(a * x + b) + r), keeping NaN as torch.relu.
SA_TARGET void plane_forward(const float* x, const float* r, float* y,
                             int64_t m, float a, float b,
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
    gates(xc, len, a, b, s);
    if (r == nullptr) {
      for (int64_t i = 0; i < len; ++i) yc[i] = xc[i] * s[i];
    } else {
      const float* rc = r + i0;
      for (int64_t i = 0; i < len; ++i) yc[i] = relu(xc[i] * s[i] + rc[i]);
    }
  }
}

// With d = g * x * s * (1 - s), s = sigmoid(a * x + b): sum(d), sum(d * x).
// g is gy, or with the block output y (residual forward) the gradient
// through the ReLU, which is also the residual's: it is written to g_out.
// For a = 0 the same sums are s(1-s) * sum(g * x) and s(1-s) * sum(g*x*x).
// The part of dx that needs no sums, t = g * s + a * d, goes to dx (from
// where plane_backward_dx reads it back in cache): the second pass then
// neither evaluates the gate again nor keeps it.
SA_TARGET void plane_backward_sums(const float* gy, const float* y,
                                   float* g_out, const float* x, int64_t m,
                                   float a, float b, double* sum_d,
                                   double* sum_dx, float* dx) {
  if (y != nullptr) {
    for (int64_t i = 0; i < m; ++i) g_out[i] = relu_grad(gy[i], y[i]);
  }
  const float* g = y == nullptr ? gy : g_out;
  d8 sd0 = {}, sd1 = {}, sdx0 = {}, sdx1 = {};
  double sd = 0, sdx = 0;
  if (a == 0.0f) {
    const float s = sigmoid(b);
    int64_t i = 0;
    for (; i + 16 <= m; i += 16) {
      const f8 g0 = load8(g + i), g1 = load8(g + i + 8);
      const f8 x0 = load8(x + i), x1 = load8(x + i + 8);
      store8(dx + i, g0 * s);
      store8(dx + i + 8, g1 * s);
      const d8 gx0 = widen(g0 * x0), gx1 = widen(g1 * x1);
      sd0 += gx0;
      sd1 += gx1;
      sdx0 += gx0 * widen(x0);
      sdx1 += gx1 * widen(x1);
    }
    sd = hsum(sd0 + sd1);
    sdx = hsum(sdx0 + sdx1);
    for (; i < m; ++i) {
      const float gx = g[i] * x[i];
      dx[i] = g[i] * s;
      sd += gx;
      sdx += static_cast<double>(gx) * x[i];
    }
    const double ds = static_cast<double>(s) * (1 - s);
    *sum_d = sd * ds;
    *sum_dx = sdx * ds;
    return;
  }
  float s[kChunk];
  for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
    const float* xc = x + i0;
    const float* gc = g + i0;
    float* tc = dx + i0;
    gates(xc, len, a, b, s);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      const f8 x0 = load8(xc + i), x1 = load8(xc + i + 8);
      const f8 s0 = load8(s + i), s1 = load8(s + i + 8);
      const f8 g0 = load8(gc + i), g1 = load8(gc + i + 8);
      const f8 d0 = g0 * x0 * s0 * (1.0f - s0);
      const f8 d1 = g1 * x1 * s1 * (1.0f - s1);
      store8(tc + i, g0 * s0 + a * d0);
      store8(tc + i + 8, g1 * s1 + a * d1);
      const d8 w0 = widen(d0), w1 = widen(d1);
      sd0 += w0;
      sd1 += w1;
      sdx0 += w0 * widen(x0);
      sdx1 += w1 * widen(x1);
    }
    for (; i < len; ++i) {
      const float d = gc[i] * xc[i] * s[i] * (1.0f - s[i]);
      tc[i] = gc[i] * s[i] + a * d;
      sd += d;
      sdx += static_cast<double>(d) * xc[i];
    }
  }
  *sum_d = sd + hsum(sd0 + sd1);
  *sum_dx = sdx + hsum(sdx0 + sdx1);
}

// dx = t + alpha * x + beta, t as plane_backward_sums left it in dx
// (alpha = 0 for the channel half, which then does not read x).
SA_TARGET void plane_backward_dx(const float* x, float* dx, int64_t m,
                                 float alpha, float beta) {
  if (alpha == 0.0f) {
    for (int64_t i = 0; i < m; ++i) dx[i] += beta;
    return;
  }
  for (int64_t i = 0; i < m; ++i) dx[i] += alpha * x[i] + beta;
}

}  // namespace SA_NS
