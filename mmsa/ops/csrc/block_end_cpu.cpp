// The end of a ResNet block on CPU: BatchNorm, a plane gate (SA, SE, ECA),
// the residual add and the ReLU, as the four passes the block-end host
// (mmsa/ops/block_end_fused.py) drives, the same contracts as the Triton
// launchers in block_end_triton.py:
//   moments         one read of z: each plane's mean about a per-channel
//                   shift and its variance;
//   apply           y = relu(x s + identity), x = BN(z), the output
//                   channels shuffled;
//   sums            four per-plane sums of the masked output gradient;
//   input_grads     dz and the identity's gradient.
// Between them the host computes BN's map and the gate's logit, N x C
// values, in PyTorch. Contiguous NCHW, float32 (vectorised, the ISA the SA
// kernel picked) and float64 (scalar, for gradcheck); each (sample,
// channel) plane is one thread's work.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpu_alloc.h"

// (as in shuffle_attention.cpp: sa_plane_kernels.h names it)
struct SaAhead {
  const float* p[3];
};

#pragma GCC diagnostic ignored "-Wpsabi"
#define SA_TARGET
#define SA_NS be_default
#include "sa_plane_kernels.h"
#include "block_end_plane_kernels.h"
#undef SA_TARGET
#undef SA_NS

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BE_HAVE_AVX2 1
#define SA_TARGET __attribute__((target("avx2,fma")))
#define SA_NS be_avx2
#include "sa_plane_kernels.h"
#include "block_end_plane_kernels.h"
#undef SA_TARGET
#undef SA_NS
#define SA_TARGET \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define SA_NS be_avx512
#include "sa_plane_kernels.h"
#include "block_end_plane_kernels.h"
#undef SA_TARGET
#undef SA_NS
#endif

namespace mmsa {
std::string isa();  // the SA kernel's choice (shuffle_attention.cpp)
}

namespace {

struct FloatPlanes {
  void (*moments)(const float*, int64_t, float, double*, double*);
  void (*apply)(const float*, const float*, float*, int64_t, float, float,
                float, float, float);
  void (*sums)(const float*, const float*, const float*, int64_t, float,
               float, float, float, float, float, double*);
  void (*input_grads)(const float*, const float*, const float*, float*,
                      float*, int64_t, float, float, float, float, float,
                      float, float, float);
};

#define BE_PLANES(ns) \
  FloatPlanes { ns::be_moments, ns::be_apply, ns::be_sums, ns::be_input_grads }

const FloatPlanes& float_planes() {
  static const FloatPlanes planes = [] {
    const std::string isa = mmsa::isa();
#ifdef BE_HAVE_AVX2
    if (isa == "avx512") return BE_PLANES(be_avx512);
    if (isa == "avx2") return BE_PLANES(be_avx2);
#endif
    return BE_PLANES(be_default);
  }();
  return planes;
}

// Scalar double planes, the same contracts.
inline double sigmoid_d(double v) { return 1.0 / (1.0 + std::exp(-v)); }

void moments_d(const double* z, int64_t m, double shift, double* mean,
               double* var) {
  double s = 0;
  for (int64_t i = 0; i < m; ++i) s += z[i] - shift;
  const double mu = s / m;
  double ss = 0;
  for (int64_t i = 0; i < m; ++i) {
    const double d = z[i] - shift - mu;
    ss += d * d;
  }
  *mean = mu;
  *var = ss / m;
}

inline double masked(const double* gy, const double* y, int64_t i) {
  return y == nullptr || y[i] > 0 ? gy[i] : 0.0;
}

void apply_d(const double* z, const double* r, double* y, int64_t m,
             double A, double B, double P, double Q, double c) {
  for (int64_t i = 0; i < m; ++i) {
    const double d = z[i] - c;
    const double v = (A * d + B) * sigmoid_d(P * d + Q);
    y[i] = r == nullptr ? v : (v + r[i] < 0 ? 0 : v + r[i]);
  }
}

void sums_d(const double* gy, const double* y, const double* z, int64_t m,
            double A, double B, double P, double Q, double c, double p,
            double* out) {
  double t[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < m; ++i) {
    const double d = z[i] - c, s = sigmoid_d(P * d + Q);
    const double gs = masked(gy, y, i) * s, v = gs * (A * d + B) * (1 - s);
    t[0] += gs;
    t[1] += (gs + p * v) * d;
    t[2] += v;
    t[3] += v * d;
  }
  for (int k = 0; k < 4; ++k) out[k] = t[k];
}

void input_grads_d(const double* gy, const double* y, const double* z,
                   double* dz, double* dr, int64_t m, double A, double B,
                   double P, double Q, double c, double p, double alpha,
                   double beta) {
  for (int64_t i = 0; i < m; ++i) {
    const double g = masked(gy, y, i), d = z[i] - c;
    const double s = sigmoid_d(P * d + Q);
    const double v = g * s * (A * d + B) * (1 - s);
    dz[i] = A * (g * s + p * v) + beta * d + alpha;
    if (dr != nullptr) dr[i] = g;
  }
}

template <typename T>
struct Planes;

template <>
struct Planes<float> {
  static void moments(const float* z, int64_t m, float shift, double* mean,
                      double* var) {
    float_planes().moments(z, m, shift, mean, var);
  }
  static void apply(const float* z, const float* r, float* y, int64_t m,
                    float A, float B, float P, float Q, float c) {
    float_planes().apply(z, r, y, m, A, B, P, Q, c);
  }
  static void sums(const float* gy, const float* y, const float* z,
                   int64_t m, float A, float B, float P, float Q, float c,
                   float p, double* out) {
    float_planes().sums(gy, y, z, m, A, B, P, Q, c, p, out);
  }
  static void input_grads(const float* gy, const float* y, const float* z,
                          float* dz, float* dr, int64_t m, float A, float B,
                          float P, float Q, float c, float p, float alpha,
                          float beta) {
    float_planes().input_grads(gy, y, z, dz, dr, m, A, B, P, Q, c, p, alpha,
                               beta);
  }
};

template <>
struct Planes<double> {
  static void moments(const double* z, int64_t m, double shift, double* mean,
                      double* var) {
    moments_d(z, m, shift, mean, var);
  }
  static void apply(const double* z, const double* r, double* y, int64_t m,
                    double A, double B, double P, double Q, double c) {
    apply_d(z, r, y, m, A, B, P, Q, c);
  }
  static void sums(const double* gy, const double* y, const double* z,
                   int64_t m, double A, double B, double P, double Q,
                   double c, double p, double* out) {
    sums_d(gy, y, z, m, A, B, P, Q, c, p, out);
  }
  static void input_grads(const double* gy, const double* y, const double* z,
                          double* dz, double* dr, int64_t m, double A,
                          double B, double P, double Q, double c, double p,
                          double alpha, double beta) {
    input_grads_d(gy, y, z, dz, dr, m, A, B, P, Q, c, p, alpha, beta);
  }
};

void check_z(const at::Tensor& z) {
  TORCH_CHECK(z.dim() == 4 && z.is_contiguous() && z.device().is_cpu(),
              "block_end_cpu: z must be a contiguous 4-D CPU tensor, got "
              "shape ", z.sizes(), (z.is_contiguous() ? "" : " (strided)"));
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
              "block_end_cpu: float32 or float64 only, got ", z.scalar_type());
  TORCH_CHECK(z.size(2) * z.size(3) > 0,
              "block_end_cpu: planes of at least one value only, got H x W = ",
              z.size(2), " x ", z.size(3));
}

// An output-shaped tensor (identity, output, its gradient) laid out as z.
void check_like_z(const at::Tensor& t, const at::Tensor& z,
                  const char* what) {
  TORCH_CHECK(t.sizes() == z.sizes() && t.is_contiguous() &&
                  t.scalar_type() == z.scalar_type() && t.device().is_cpu(),
              "block_end_cpu: ", what, " must be a contiguous CPU tensor of ",
              "z's shape ", z.sizes(), " and dtype ", z.scalar_type(),
              ", got ", t.sizes(), " ", t.scalar_type());
}

// The optional one's data, or null.
template <typename T>
const T* data_like_z(const std::optional<at::Tensor>& t, const at::Tensor& z,
                     const char* what) {
  if (!t.has_value() || !t->defined()) return nullptr;
  check_like_z(*t, z, what);
  return t->data_ptr<T>();
}

// The N x C (or C) coefficients as double, checked for their size.
std::vector<double> values(const std::optional<at::Tensor>& t, int64_t size,
                           double fill, const char* what) {
  if (!t.has_value() || !t->defined()) return std::vector<double>(size, fill);
  TORCH_CHECK(t->numel() == size, "block_end_cpu: ", what, " must have ",
              size, " values, got ", t->numel());
  const at::Tensor d = t->detach().to(at::kDouble).contiguous();
  const double* p = d.data_ptr<double>();
  return std::vector<double>(p, p + size);
}

// Each plane's map and gate about its float centre c (its mean rounded to
// the kernel's type): x = A (z - c) + B, logit P (z - c) + Q.
struct PlaneMaps {
  PlaneMaps(const at::Tensor& z, const at::Tensor& shift,
            const at::Tensor& mean, const std::optional<at::Tensor>& a,
            const at::Tensor& m, const std::optional<at::Tensor>& p,
            const at::Tensor& q, int64_t shuffle)
      : n(z.size(0)), c(z.size(1)), hw(z.size(2) * z.size(3)) {
    TORCH_CHECK(shuffle >= 1 && c % shuffle == 0, "block_end_cpu: ", c,
                " channels do not split into shuffle=", shuffle, " groups");
    const auto shift_v = values(shift, c, 0, "shift");
    const auto mean_v = values(mean, n * c, 0, "mean");
    a_ = values(a, c, 1, "a");
    m_ = values(m, n * c, 0, "m");
    p_ = values(p, n * c, 0, "p");
    q_ = values(q, n * c, 0, "q");
    mu.resize(n * c);
    for (int64_t i = 0; i < n * c; ++i) mu[i] = shift_v[i % c] + mean_v[i];
    out_channel.resize(c);
    const int64_t per = c / shuffle;
    for (int64_t ch = 0; ch < c; ++ch) {
      out_channel[ch] = (ch % per) * shuffle + ch / per;
    }
  }

  template <typename T>
  void at(int64_t plane, int64_t ch, T* A, T* B, T* P, T* Q, T* centre,
          T* p, double* d0) const {
    const T cen = static_cast<T>(mu[plane]);
    const double off = static_cast<double>(cen) - mu[plane];
    const double a = a_[ch], slope = p_[plane] * a;
    *A = static_cast<T>(a);
    *B = static_cast<T>(m_[plane] + a * off);
    *P = static_cast<T>(slope);
    *Q = static_cast<T>(q_[plane] + slope * off);
    *centre = cen;
    *p = static_cast<T>(p_[plane]);
    *d0 = off;
  }

  double slope(int64_t plane) const { return p_[plane]; }

  const int64_t n, c, hw;
  std::vector<double> mu;
  std::vector<int64_t> out_channel;

 private:
  std::vector<double> a_, m_, p_, q_;
};

// Runs fn(plane, channel, out_plane) over the N * C planes in parallel.
template <typename Fn>
void for_planes(const PlaneMaps& maps, const Fn& fn) {
  const int64_t c = maps.c;
  at::parallel_for(0, maps.n * c, 1, [&](int64_t begin, int64_t end) {
    int64_t ch = begin % c;
    for (int64_t plane = begin; plane < end; ++plane) {
      fn(plane, ch, plane - ch + maps.out_channel[ch]);
      if (++ch == c) ch = 0;
    }
  });
}

std::vector<at::Tensor> moments(const at::Tensor& z) {
  check_z(z);
  const int64_t n = z.size(0), c = z.size(1), m = z.size(2) * z.size(3);
  auto shift = new_tensor({c}, z.scalar_type());
  auto mean = new_tensor({n, c}, z.scalar_type());
  auto var = new_tensor({n, c}, z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "block_end_moments", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* sp = shift.data_ptr<scalar_t>();
    for (int64_t ch = 0; ch < c; ++ch) {
      // the channel's first value (0 if not finite: an inf shift would
      // turn every sum into NaN)
      const scalar_t v = zp[ch * m];
      sp[ch] = std::isfinite(v) ? v : scalar_t(0);
    }
    scalar_t* mp = mean.data_ptr<scalar_t>();
    scalar_t* vp = var.data_ptr<scalar_t>();
    at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        double mu, v;
        Planes<scalar_t>::moments(zp + plane * m, m, sp[plane % c], &mu, &v);
        mp[plane] = static_cast<scalar_t>(mu);
        vp[plane] = static_cast<scalar_t>(v);
      }
    });
  });
  return {shift, mean, var};
}

at::Tensor apply(const at::Tensor& z, const std::optional<at::Tensor>& identity,
                 const at::Tensor& shift, const at::Tensor& mean,
                 const std::optional<at::Tensor>& a, const at::Tensor& m,
                 const std::optional<at::Tensor>& p, const at::Tensor& q,
                 int64_t shuffle) {
  check_z(z);
  const PlaneMaps maps(z, shift, mean, a, m, p, q, shuffle);
  auto y = empty_output(z);
  const int64_t hw = maps.hw;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "block_end_apply", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* rp = data_like_z<scalar_t>(identity, z, "the identity");
    scalar_t* yp = y.data_ptr<scalar_t>();
    for_planes(maps, [&](int64_t plane, int64_t ch, int64_t out) {
      scalar_t A, B, P, Q, cen, slope;
      double off;
      maps.at(plane, ch, &A, &B, &P, &Q, &cen, &slope, &off);
      Planes<scalar_t>::apply(zp + plane * hw,
                              rp == nullptr ? nullptr : rp + out * hw,
                              yp + out * hw, hw, A, B, P, Q, cen);
    });
  });
  return y;
}

at::Tensor sums(const at::Tensor& grad_y, const at::Tensor& z,
                const std::optional<at::Tensor>& y, const at::Tensor& shift,
                const at::Tensor& mean, const std::optional<at::Tensor>& a,
                const at::Tensor& m, const std::optional<at::Tensor>& p,
                const at::Tensor& q, int64_t shuffle) {
  check_z(z);
  check_like_z(grad_y, z, "the output gradient");
  const PlaneMaps maps(z, shift, mean, a, m, p, q, shuffle);
  const int64_t nc = maps.n * maps.c, hw = maps.hw;
  auto out = new_tensor({4, maps.n, maps.c}, z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "block_end_sums", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* gp = grad_y.data_ptr<scalar_t>();
    const scalar_t* yp = data_like_z<scalar_t>(y, z, "the block output");
    scalar_t* op = out.data_ptr<scalar_t>();
    for_planes(maps, [&](int64_t plane, int64_t ch, int64_t o) {
      scalar_t A, B, P, Q, cen, slope;
      double off, t[4];
      maps.at(plane, ch, &A, &B, &P, &Q, &cen, &slope, &off);
      Planes<scalar_t>::sums(gp + o * hw, yp == nullptr ? nullptr : yp + o * hw,
                             zp + plane * hw, hw, A, B, P, Q, cen, slope, t);
      // about the plane's mean: z - mean = (z - c) + off, and
      // sum(u) = sum(g s) + p sum(v)
      const double sum_u = t[0] + maps.slope(plane) * t[2];
      op[plane] = static_cast<scalar_t>(t[0]);
      op[nc + plane] = static_cast<scalar_t>(t[1] + off * sum_u);
      op[2 * nc + plane] = static_cast<scalar_t>(t[2]);
      op[3 * nc + plane] = static_cast<scalar_t>(t[3] + off * t[2]);
    });
  });
  return out;
}

std::vector<at::Tensor> input_grads(
    const at::Tensor& grad_y, const at::Tensor& z,
    const std::optional<at::Tensor>& y, const at::Tensor& shift,
    const at::Tensor& mean, const std::optional<at::Tensor>& a,
    const at::Tensor& m, const std::optional<at::Tensor>& p,
    const at::Tensor& q, const at::Tensor& alpha, const at::Tensor& beta,
    int64_t shuffle, bool write_identity) {
  check_z(z);
  check_like_z(grad_y, z, "the output gradient");
  const PlaneMaps maps(z, shift, mean, a, m, p, q, shuffle);
  const int64_t hw = maps.hw;
  const auto alpha_v = values(alpha, maps.n * maps.c, 0, "alpha");
  const auto beta_v = values(beta, maps.n * maps.c, 0, "beta");
  auto dz = empty_output(z);
  at::Tensor dr = write_identity ? empty_output(z)
                                 : new_tensor({0}, z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "block_end_input_grads", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* gp = grad_y.data_ptr<scalar_t>();
    const scalar_t* yp = data_like_z<scalar_t>(y, z, "the block output");
    scalar_t* dzp = dz.data_ptr<scalar_t>();
    scalar_t* drp = write_identity ? dr.data_ptr<scalar_t>() : nullptr;
    for_planes(maps, [&](int64_t plane, int64_t ch, int64_t o) {
      scalar_t A, B, P, Q, cen, slope;
      double off;
      maps.at(plane, ch, &A, &B, &P, &Q, &cen, &slope, &off);
      // dz = A u + alpha + beta (z - mean), about c
      const double al = alpha_v[plane] + beta_v[plane] * off;
      Planes<scalar_t>::input_grads(
          gp + o * hw, yp == nullptr ? nullptr : yp + o * hw, zp + plane * hw,
          dzp + plane * hw, drp == nullptr ? nullptr : drp + o * hw, hw, A, B,
          P, Q, cen, slope, static_cast<scalar_t>(al),
          static_cast<scalar_t>(beta_v[plane]));
    });
  });
  return {dz, dr};
}

}  // namespace

namespace mmsa {

void register_block_end(pybind11::module& m) {
  m.def("block_end_moments", &moments,
        "(shift, mean, var): each channel's first value, each plane's mean "
        "of z - shift and variance",
        py::arg("z"));
  m.def("block_end_apply", &apply,
        "y = relu(x * sigmoid(p (x - m) + q) + identity), x = a (z - shift "
        "- mean) + m, the output channels shuffled",
        py::arg("z"), py::arg("identity"), py::arg("shift"), py::arg("mean"),
        py::arg("a"), py::arg("m"), py::arg("p"), py::arg("q"),
        py::arg("shuffle"));
  m.def("block_end_sums", &sums,
        "(4, N, C): per plane sum(g s), sum(u zc), sum(v), sum(v zc)",
        py::arg("grad_y"), py::arg("z"), py::arg("y"), py::arg("shift"),
        py::arg("mean"), py::arg("a"), py::arg("m"), py::arg("p"),
        py::arg("q"), py::arg("shuffle"));
  m.def("block_end_input_grads", &input_grads,
        "[dz, d_identity]: dz = a u + alpha + beta zc; d_identity (empty "
        "unless asked for) the output gradient through the ReLU",
        py::arg("grad_y"), py::arg("z"), py::arg("y"), py::arg("shift"),
        py::arg("mean"), py::arg("a"), py::arg("m"), py::arg("p"),
        py::arg("q"), py::arg("alpha"), py::arg("beta"), py::arg("shuffle"),
        py::arg("write_identity"));
}

}  // namespace mmsa
