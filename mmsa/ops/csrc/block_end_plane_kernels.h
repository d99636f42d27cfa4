// Per-plane kernels of the block end on CPU (block_end_cpu.cpp), float32.
//
// Included once per instruction set after sa_plane_kernels.h, with the
// same SA_TARGET and SA_NS, whose helpers (the sigmoid, the gate chunks,
// the 16-lane sums) they use. Per (sample, channel) plane of z, about a
// float centre c near the plane's mean (so that a mean far from zero
// cancels nothing):
//   x = A (z - c) + B              BatchNorm's affine map,
//   s = sigmoid(P (z - c) + Q)     the gate (constant where P = 0),
//   y = x s, or relu(x s + r)      with the block's identity r.
// Backward, with g the output gradient through the ReLU (y > 0):
//   v = g x s (1 - s), u = g s + p v   (p: the gate's slope in x),
// and dz = A u + beta (z - c) + alpha.

namespace SA_NS {

// Mean of z - shift over the plane and the plane's variance: one pass of
// shifted sums, and, where the mean is far from the shift against the
// spread (E[d^2] over 8 times the variance), a second pass about the
// mean (as plane_stats).
SA_TARGET void be_moments(const float* z, int64_t m, float shift,
                          double* mean, double* var) {
  const double inv_m = 1.0 / m;
  double s, q;
  shifted_sums(z, m, shift, &s, &q);
  const double ms = s * inv_m, mq = q * inv_m, v1 = mq - ms * ms;
  *mean = ms;
  if (v1 > 0 && mq <= 8 * v1) {
    *var = v1;
    return;
  }
  const double mu = static_cast<double>(shift) + ms;
  const float muf = static_cast<float>(mu);
  double ss;
  shifted_sums(z, m, muf, nullptr, &ss);
  const double dm = mu - muf;
  const double v2 = ss * inv_m - dm * dm;
  *var = v2 > 0 ? v2 : 0.0;
}

// y = x s, with the identity r: relu(x s + r) (NaN kept, as torch.relu).
SA_TARGET void be_apply(const float* z, const float* r, float* y, int64_t m,
                        float A, float B, float P, float Q, float c) {
  float s[kChunk];
  const float s0 = P == 0.0f ? sigmoid(Q) : 0.0f;
  for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
    const float* zc = z + i0;
    float* yc = y + i0;
    if (P == 0.0f) {
      for (int64_t i = 0; i < len; ++i) s[i] = s0;
    } else {
      gates(zc, len, P, Q, c, s);
    }
    if (r == nullptr) {
      for (int64_t i = 0; i < len; ++i) yc[i] = (A * (zc[i] - c) + B) * s[i];
    } else {
      const float* rc = r + i0;
      for (int64_t i = 0; i < len; ++i) {
        yc[i] = relu((A * (zc[i] - c) + B) * s[i] + rc[i]);
      }
    }
  }
}

// The output gradient of [i0, i0 + len) through the ReLU into g[] (a
// copy of gy without the block output y).
SA_TARGET static inline void masked_grad(const float* gy, const float* y,
                                         int64_t len, float* g) {
  if (y == nullptr) {
    for (int64_t i = 0; i < len; ++i) g[i] = gy[i];
  } else {
    for (int64_t i = 0; i < len; ++i) g[i] = relu_grad(gy[i], y[i]);
  }
}

// A constant gate's sums: sum(g), sum(g (z - c)), sum(g (z - c)^2), from
// which the caller forms the four sums of be_sums.
SA_TARGET static inline void constant_sums(const float* g, const float* z,
                                           int64_t len, float c, f16& s0,
                                           f16& s1, f16& s2, double* t) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const f16 g0 = load16(g + i), d = load16(z + i) - c;
    const f16 gd = g0 * d;
    s0 += g0;
    s1 += gd;
    s2 += gd * d;
  }
  for (; i < len; ++i) {
    const double d = z[i] - c, gi = g[i];
    t[0] += gi;
    t[1] += gi * d;
    t[2] += gi * d * d;
  }
}

// The four per-plane sums the backward needs, about c: sum(g s),
// sum(u (z - c)), sum(v), sum(v (z - c)) into out[0..3].
SA_TARGET void be_sums(const float* gy, const float* y, const float* z,
                       int64_t m, float A, float B, float P, float Q,
                       float c, float p, double* out) {
  float g[kChunk], s[kChunk];
  double t[4] = {0, 0, 0, 0};
  if (P == 0.0f) {
    for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
      const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
      masked_grad(gy + i0, y == nullptr ? nullptr : y + i0, len, g);
      f16 s0 = {}, s1 = {}, s2 = {};
      constant_sums(g, z + i0, len, c, s0, s1, s2, t);
      t[0] += hsum(s0);
      t[1] += hsum(s1);
      t[2] += hsum(s2);
    }
    // s constant: x = A d + B with d = z - c
    const double sg = sigmoid(Q);  // the forward's gate
    const double ds = sg * (1 - sg);
    const double sum_v = ds * (A * t[1] + B * t[0]);
    const double sum_vd = ds * (A * t[2] + B * t[1]);
    out[0] = sg * t[0];
    out[1] = sg * t[1] + p * sum_vd;
    out[2] = sum_v;
    out[3] = sum_vd;
    return;
  }
  for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
    const float* zc = z + i0;
    masked_grad(gy + i0, y == nullptr ? nullptr : y + i0, len, g);
    gates(zc, len, P, Q, c, s);
    f16 w = {}, ud = {}, v = {}, vd = {};
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      const f16 d = load16(zc + i) - c, s0 = load16(s + i);
      const f16 gs = load16(g + i) * s0;
      const f16 gsx = gs * (A * d + B);
      const f16 v0 = gsx - gsx * s0;
      w += gs;
      ud += (gs + p * v0) * d;
      v += v0;
      vd += v0 * d;
    }
    t[0] += hsum(w);
    t[1] += hsum(ud);
    t[2] += hsum(v);
    t[3] += hsum(vd);
    for (; i < len; ++i) {
      const float d = zc[i] - c, gs = g[i] * s[i], gsx = gs * (A * d + B);
      const float v0 = gsx - gsx * s[i];
      t[0] += gs;
      t[1] += static_cast<double>(gs + p * v0) * d;
      t[2] += v0;
      t[3] += static_cast<double>(v0) * d;
    }
  }
  for (int k = 0; k < 4; ++k) out[k] = t[k];
}

// dz = A u + beta (z - c) + alpha, and with dr the identity's gradient
// (the output gradient through the ReLU).
SA_TARGET void be_input_grads(const float* gy, const float* y,
                              const float* z, float* dz, float* dr,
                              int64_t m, float A, float B, float P, float Q,
                              float c, float p, float alpha, float beta) {
  float g[kChunk], s[kChunk];
  const float s0 = P == 0.0f ? sigmoid(Q) : 0.0f;
  for (int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int64_t len = m - i0 < kChunk ? m - i0 : kChunk;
    const float* zc = z + i0;
    masked_grad(gy + i0, y == nullptr ? nullptr : y + i0, len, g);
    if (dr != nullptr) {
      float* drc = dr + i0;
      for (int64_t i = 0; i < len; ++i) drc[i] = g[i];
    }
    if (P == 0.0f) {
      for (int64_t i = 0; i < len; ++i) s[i] = s0;
    } else {
      gates(zc, len, P, Q, c, s);
    }
    float* dzc = dz + i0;
    for (int64_t i = 0; i < len; ++i) {
      const float d = zc[i] - c, gs = g[i] * s[i], gsx = gs * (A * d + B);
      const float v0 = gsx - gsx * s[i];
      dzc[i] = A * (gs + p * v0) + beta * d + alpha;
    }
  }
}

}  // namespace SA_NS
