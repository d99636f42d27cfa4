// Per-plane kernels of the fused Shuffle Attention, float32.
//
// Included once per instruction set by shuffle_attention.cpp with
// SA_TARGET set to a function attribute (e.g. target("avx2,fma")) and
// SA_NS to a namespace name, so that gcc/clang auto-vectorise the same
// loops for each ISA and the best one is picked at run time. Every function
// here carries SA_TARGET: a helper without it would not be inlined into the
// vectorised loops.
//
// One plane is the H*W values of one (sample, channel). The gate is
// y = x * sigmoid(a * x + b) with per-plane a, b (a = 0 for the channel
// half). Sums are accumulated in double for accuracy. Build flags:
// -fopenmp (simd reductions; at::parallel_for) and -fno-trapping-math
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

// Mean and biased variance of one plane (two passes; the second reads the
// plane from cache). The mean only when var is null (the channel half).
SA_TARGET void plane_stats(const float* x, int64_t m, double* mean,
                           double* var) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < m; ++i) s += x[i];
  const double mu = s / m;
  *mean = mu;
  if (var == nullptr) return;
  const float muf = static_cast<float>(mu);
  double ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < m; ++i) {
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
  const float s0 = sigmoid(b);
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
  double sd = 0, sdx = 0;
  if (a == 0.0f) {
    const float s = sigmoid(b);
#pragma omp simd reduction(+ : sd, sdx)
    for (int64_t i = 0; i < m; ++i) {
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
#pragma omp simd reduction(+ : sd, sdx)
    for (int64_t i = 0; i < len; ++i) {
      const float d = gc[i] * xc[i] * s[i] * (1.0f - s[i]);
      tc[i] = gc[i] * s[i] + a * d;
      sd += d;
      sdx += static_cast<double>(d) * xc[i];
    }
  }
  *sum_d = sd;
  *sum_dx = sdx;
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
