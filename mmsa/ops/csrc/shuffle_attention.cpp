// Fused Shuffle Attention (SA-Net) for CPU: forward and backward.
//
// Both halves of SA are y = x * sigmoid(A * x + B) with per-(sample,
// channel) coefficients (channel half: A = 0, B = cw * mean + cb; spatial
// half: A = sw * gw * rstd, B = sw * (gb - gw * mean * rstd) + sb), and
// the channel shuffle only moves input channel g * C/2 + i to output
// channel 2i + g. So each (n, c) plane is handled by one thread:
// statistics, then one element-wise pass written straight to the shuffled
// output plane; the second read of the plane comes from cache. Backward is
// the same shape: one pass for two per-plane sums, one pass writing dx.
// (The kernels take A * x + B as A * (x - c) + (B + A * c) about c, the
// mean as a float, and their sums likewise: about 0 they would cancel when
// the mean is large against the spread.)
//
// Layout: contiguous NCHW; float32 (vectorised, ISA picked at run time:
// AVX-512, AVX2+FMA or the compiler's default) and float64 (scalar, for
// gradcheck).
#include <torch/extension.h>
#include <torch/version.h>

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cpu_alloc.h"

// The inputs of a plane further on, prefetched while one plane computes.
struct SaAhead {
  const float* p[3];
};

// The kernels' inline helpers pass GCC vector types by value; without a
// target ISA gcc warns that such a call's ABI would differ between ISAs,
// which cannot matter for static inline functions of one translation unit
// (gcc reports it at the end of the file, hence no pop).
#pragma GCC diagnostic ignored "-Wpsabi"
#define SA_TARGET
#define SA_NS sa_default
#include "sa_plane_kernels.h"
#undef SA_TARGET
#undef SA_NS

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SA_HAVE_AVX2 1
#define SA_TARGET __attribute__((target("avx2,fma")))
#define SA_NS sa_avx2
#include "sa_plane_kernels.h"
#undef SA_TARGET
#undef SA_NS
// 16 lanes: the sigmoid makes the spatial half compute-bound with AVX2.
#define SA_TARGET \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define SA_NS sa_avx512
#include "sa_plane_kernels.h"
#undef SA_TARGET
#undef SA_NS
#endif

namespace {

struct FloatKernels {
  void (*stats)(const float*, int64_t, double*, double*);
  void (*forward)(const float*, const float*, float*, int64_t, float, float,
                  float, const SaAhead*);
  void (*sums)(const float*, const float*, float*, const float*, int64_t,
               float, float, float, double*, double*, float*);
  void (*dx)(const float*, float*, int64_t, float, float, float);
  const char* isa;
};

std::vector<std::string> supported_isas() {
  std::vector<std::string> isas;
#ifdef SA_HAVE_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw")) {
    isas.push_back("avx512");
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    isas.push_back("avx2");
  }
#endif
  isas.push_back("default");
  return isas;
}

// The best ISA this CPU runs, or MMSA_SA_ISA (to test or compare the
// others).
FloatKernels pick_float_kernels() {
  const std::vector<std::string> isas = supported_isas();
  std::string isa = isas.front();
  if (const char* want = std::getenv("MMSA_SA_ISA")) {
    isa = want;
    TORCH_CHECK(isa == "avx512" || isa == "avx2" || isa == "default",
                "MMSA_SA_ISA must be avx512, avx2 or default, got '", isa,
                "'");
    TORCH_CHECK(std::find(isas.begin(), isas.end(), isa) != isas.end(),
                "MMSA_SA_ISA=", isa, ": this CPU or build does not support ",
                "it; unset MMSA_SA_ISA or pick one of ",
                c10::Join(", ", isas));
  }
#ifdef SA_HAVE_AVX2
  if (isa == "avx512") {
    return {sa_avx512::plane_stats, sa_avx512::plane_forward,
            sa_avx512::plane_backward_sums, sa_avx512::plane_backward_dx,
            "avx512"};
  }
  if (isa == "avx2") {
    return {sa_avx2::plane_stats, sa_avx2::plane_forward,
            sa_avx2::plane_backward_sums, sa_avx2::plane_backward_dx, "avx2"};
  }
#endif
  return {sa_default::plane_stats, sa_default::plane_forward,
          sa_default::plane_backward_sums, sa_default::plane_backward_dx,
          "default"};
}

const FloatKernels& float_kernels() {
  static const FloatKernels kernels = pick_float_kernels();
  return kernels;
}

// Scalar double kernels, same contracts as sa_plane_kernels.h.
inline double sigmoid_d(double z) { return 1.0 / (1.0 + std::exp(-z)); }

void stats_d(const double* x, int64_t m, double* mean, double* var) {
  double s = 0;
  for (int64_t i = 0; i < m; ++i) s += x[i];
  const double mu = s / m;
  *mean = mu;
  if (var == nullptr) return;
  double ss = 0;
  for (int64_t i = 0; i < m; ++i) ss += (x[i] - mu) * (x[i] - mu);
  *var = ss / m;
}

void forward_d(const double* x, const double* r, double* y, int64_t m,
               double a, double b, double c) {
  for (int64_t i = 0; i < m; ++i) {
    const double v = x[i] * sigmoid_d(a * (x[i] - c) + b);
    y[i] = r == nullptr ? v : (v + r[i] < 0 ? 0 : v + r[i]);
  }
}



void sums_d(const double* gy, const double* y, double* g_out,
            const double* x, int64_t m, double a, double b, double c,
            double* sum_d, double* sum_dxc, double* dx) {
  const double* g = gy;
  if (y != nullptr) {
    for (int64_t i = 0; i < m; ++i) g_out[i] = y[i] <= 0 ? 0 : gy[i];
    g = g_out;
  }
  double sd = 0, sdx = 0;
  for (int64_t i = 0; i < m; ++i) {
    const double s = sigmoid_d(a * (x[i] - c) + b);
    const double d = g[i] * x[i] * s * (1 - s);
    dx[i] = g[i] * s + a * d;
    sd += d;
    sdx += d * (x[i] - c);
  }
  *sum_d = sd;
  *sum_dxc = sdx;
}

void dx_d(const double* x, double* dx, int64_t m, double alpha, double beta,
          double c) {
  for (int64_t i = 0; i < m; ++i) {
    dx[i] += alpha == 0 ? beta : alpha * (x[i] - c) + beta;
  }
}

template <typename T>
struct Kernels;

template <>
struct Kernels<float> {
  static void stats(const float* x, int64_t m, double* mean, double* var) {
    float_kernels().stats(x, m, mean, var);
  }
  static void forward(const float* x, const float* r, float* y, int64_t m,
                      float a, float b, float c, const SaAhead* ahead) {
    float_kernels().forward(x, r, y, m, a, b, c, ahead);
  }
  static void sums(const float* gy, const float* y, float* g, const float* x,
                   int64_t m, float a, float b, float c, double* sd,
                   double* sdx, float* dx) {
    float_kernels().sums(gy, y, g, x, m, a, b, c, sd, sdx, dx);
  }
  static void dx(const float* x, float* dx, int64_t m, float alpha,
                 float beta, float c) {
    float_kernels().dx(x, dx, m, alpha, beta, c);
  }
};

template <>
struct Kernels<double> {
  static void stats(const double* x, int64_t m, double* mean, double* var) {
    stats_d(x, m, mean, var);
  }
  static void forward(const double* x, const double* r, double* y, int64_t m,
                      double a, double b, double c, const SaAhead*) {
    forward_d(x, r, y, m, a, b, c);
  }
  static void sums(const double* gy, const double* y, double* g,
                   const double* x, int64_t m, double a, double b, double c,
                   double* sd, double* sdx, double* dx) {
    sums_d(gy, y, g, x, m, a, b, c, sd, sdx, dx);
  }
  static void dx(const double* x, double* dx, int64_t m, double alpha,
                 double beta, double c) {
    dx_d(x, dx, m, alpha, beta, c);
  }
};

// Prefetching is for the float kernels; the double ones ignore it.
inline const float* as_float(const float* p) { return p; }
inline const float* as_float(const double*) { return nullptr; }

// The channels in the order a pass walks them: each one's input and output
// channel (the 2-group shuffle moves input channel i to output channel
// 2 * (i % (C/2)) + i / (C/2)), parameter index j and half. Tabulated once
// per call without dividing: computed per plane, its ~10 integer divisions
// cost about as much as a whole 16x16 plane's arithmetic, and even a few
// per channel add up (64-bit idiv is slow), single-threaded before the
// parallel pass.
//
// Walked in input order, x and dx are read and written sequentially and
// the output-shaped tensors (out, grad_out, residual) at every other
// plane; in output order the other way round. Where a plane is smaller
// than a 4 KiB page, every-other-plane access defeats the hardware
// prefetcher, so the backward (three output-shaped tensors with a
// residual, against x and dx) walks in output order, and so does the
// forward for such small planes.
struct ChannelRole {
  int64_t in_channel;
  int64_t out_channel;
  int64_t param;
  bool spatial;
};

// Kept per calling thread for the last (channels, groups, order): a
// network's blocks alternate among a few, and a training step calls each
// SA twice.
const std::vector<ChannelRole>& channel_roles(int64_t channels,
                                              int64_t groups,
                                              bool output_order) {
  struct Cached {
    int64_t channels = 0, groups = 0;
    std::vector<ChannelRole> roles;
  };
  thread_local Cached cache[2];  // [output_order]
  Cached& hit = cache[output_order];
  if (hit.channels == channels && hit.groups == groups) return hit.roles;
  const int64_t k = channels / (2 * groups), half = channels / 2;
  hit.roles.resize(channels);
  int64_t j = 0;  // c % (2 * k)
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t o = c < half ? 2 * c : 2 * (c - half) + 1;
    hit.roles[output_order ? o : c] = {c, o, j < k ? j : j - k, j >= k};
    if (++j == 2 * k) j = 0;
  }
  hit.channels = channels;
  hit.groups = groups;
  return hit.roles;
}

// The planes of positions [begin, end) of the N * C planes in the order of
// `roles`, tracking the channel without dividing.
class PlaneWalk {
 public:
  PlaneWalk(const std::vector<ChannelRole>& roles, int64_t m, int64_t begin,
            int64_t end)
      : roles_(roles), c_(static_cast<int64_t>(roles.size())),
        ahead_(std::min<int64_t>(c_, std::max<int64_t>(1, kAhead / m))),
        end_(end), pos_(begin), ch_(begin % c_) {}
  const ChannelRole& role() const { return roles_[ch_]; }
  // Plane indices (n * C + channel) in x and in the output.
  int64_t in_plane() const { return pos_ - ch_ + roles_[ch_].in_channel; }
  int64_t out_plane() const { return pos_ - ch_ + roles_[ch_].out_channel; }
  // The planes whose inputs to prefetch while this one computes: at least
  // kAhead values on, so that they arrive in time; false past the range.
  bool prefetch_target(int64_t* in_plane, int64_t* out_plane) const {
    if (pos_ + ahead_ >= end_) return false;
    const int64_t ch = ch_ + ahead_ < c_ ? ch_ + ahead_ : ch_ + ahead_ - c_;
    const int64_t base = pos_ + ahead_ - ch;
    *in_plane = base + roles_[ch].in_channel;
    *out_plane = base + roles_[ch].out_channel;
    return true;
  }
  bool done() const { return pos_ >= end_; }
  void next() {
    ++pos_;
    ch_ = ch_ + 1 == c_ ? 0 : ch_ + 1;
  }

 private:
  static constexpr int64_t kAhead = 4096;
  const std::vector<ChannelRole>& roles_;
  const int64_t c_, ahead_, end_;
  int64_t pos_, ch_;
};

// Gate coefficients of one plane from its statistics, for the gate
// sigmoid(a * (x - center) + b).
template <typename T>
inline void coefficients(const ChannelRole& role, double mean, double rstd,
                         T center, const T* cw, const T* cb, const T* sw,
                         const T* sb, const T* gw, const T* gb, double* a,
                         double* b) {
  const int64_t j = role.param;
  if (role.spatial) {
    *a = static_cast<double>(sw[j]) * gw[j] * rstd;
    *b = static_cast<double>(sw[j]) *
             (gb[j] - gw[j] * (mean - center) * rstd) +
         sb[j];
  } else {
    *a = 0;
    *b = static_cast<double>(cw[j]) * mean + cb[j];
  }
}

void check_inputs(const at::Tensor& x, const std::vector<at::Tensor>& params,
                  int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(),
              "sa_fused: x must be a contiguous 4-D CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "sa_fused: float32 or float64 only, got ", x.scalar_type());
  TORCH_CHECK(x.size(2) * x.size(3) > 0,
              "sa_fused: planes of at least one value only, got H x W = ",
              x.size(2), " x ", x.size(3), " (use sa_reference)");
  const int64_t c = x.size(1);
  TORCH_CHECK(groups > 0 && c % (2 * groups) == 0,
              "sa_fused: channels ", c, " not divisible by 2*groups");
  for (const auto& p : params) {
    TORCH_CHECK(p.is_contiguous() && p.numel() == c / (2 * groups) &&
                    p.scalar_type() == x.scalar_type(),
                "sa_fused: parameters must be contiguous, k values, x's dtype");
  }
}

// The residual, or the block output for the backward, must be laid out as
// the output.
void check_like_x(const std::optional<at::Tensor>& t, const at::Tensor& x,
                  const char* what) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->sizes() == x.sizes() && t->is_contiguous() &&
                  t->scalar_type() == x.scalar_type() && t->device().is_cpu(),
              "sa_fused: ", what, " must be a contiguous CPU tensor of x's ",
              "shape and dtype");
}

// params: cweight, cbias, sweight, sbias, gn_weight, gn_bias (k values each).
// With a residual r (shape and dtype of x) the output is relu(SA(x) + r),
// the end of a ResNet block in one pass.
// Returns out (shuffled), mean and rstd per (n, c) plane (float64; rstd is
// 0 for the channel half, which does not use it).
std::vector<at::Tensor> sa_forward(const at::Tensor& x,
                                   const std::vector<at::Tensor>& params,
                                   int64_t groups, double eps,
                                   const std::optional<at::Tensor>& residual) {
  check_inputs(x, params, groups);
  check_like_x(residual, x, "residual");
  const int64_t n = x.size(0), c = x.size(1), m = x.size(2) * x.size(3);
  auto out = empty_output(x);
  auto mean = new_tensor({n, c}, at::kDouble);
  auto rstd = new_tensor({n, c}, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sa_forward", [&] {
    using K = Kernels<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = out.data_ptr<scalar_t>();
    const scalar_t *cw = params[0].data_ptr<scalar_t>(),
                   *cb = params[1].data_ptr<scalar_t>(),
                   *sw = params[2].data_ptr<scalar_t>(),
                   *sb = params[3].data_ptr<scalar_t>(),
                   *gw = params[4].data_ptr<scalar_t>(),
                   *gb = params[5].data_ptr<scalar_t>();
    const scalar_t* resp =
        residual.has_value() ? residual->data_ptr<scalar_t>() : nullptr;
    double* mp = mean.data_ptr<double>();
    double* rp = rstd.data_ptr<double>();
    // planes under 4 KiB in output order (see ChannelRole)
    const std::vector<ChannelRole>& roles =
        channel_roles(c, groups, m * sizeof(scalar_t) < 4096);
    at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
      for (PlaneWalk walk(roles, m, begin, end); !walk.done(); walk.next()) {
        const int64_t plane = walk.in_plane();
        const ChannelRole& role = walk.role();
        const scalar_t* xs = xp + plane * m;
        // the channel half needs only the mean (its rstd is stored as 0)
        double mu, var = 0;
        K::stats(xs, m, &mu, role.spatial ? &var : nullptr);
        const double rs =
            role.spatial ? 1.0 / std::sqrt(std::max(var, 0.0) + eps) : 0.0;
        // the gate is taken about the mean rounded to scalar_t
        const scalar_t center = static_cast<scalar_t>(mu);
        double a, bb;
        coefficients(role, mu, rs, center, cw, cb, sw, sb, gw, gb, &a, &bb);
        const int64_t out_plane = walk.out_plane() * m;
        SaAhead ahead{};
        int64_t pf_in, pf_out;
        if (walk.prefetch_target(&pf_in, &pf_out)) {
          ahead.p[0] = as_float(xp + pf_in * m);
          if (resp != nullptr) ahead.p[1] = as_float(resp + pf_out * m);
        }
        K::forward(xs, resp == nullptr ? nullptr : resp + out_plane,
                   yp + out_plane, m, static_cast<scalar_t>(a),
                   static_cast<scalar_t>(bb), center, &ahead);
        mp[plane] = mu;
        rp[plane] = rs;
      }
    });
  });
  return {out, mean, rstd};
}

// Returns dx and the six parameter gradients (shaped like params). Per
// (n, c) plane the kernel leaves two sums, p0 and p1: channel planes
// p0 = dz, p1 = dz * mean with dz = s(1-s) sum(g * x); spatial planes
// p0 = sum(d), p1 = sum(d * xhat). Summed over samples and groups they give
// cweight = P1c, cbias = P0c, sweight = gw P1s + gb P0s, sbias = P0s,
// gn.weight = sw P1s, gn.bias = sw P0s.
// With the output y of a residual forward, grad_out is first taken through
// the ReLU; that gradient is also the residual's (returned second, and
// undefined without y).
std::vector<at::Tensor> sa_backward(const at::Tensor& grad_out,
                                    const at::Tensor& x,
                                    const at::Tensor& mean,
                                    const at::Tensor& rstd,
                                    const std::vector<at::Tensor>& params,
                                    int64_t groups,
                                    const std::optional<at::Tensor>& y) {
  check_inputs(x, params, groups);
  check_like_x(y, x, "the block output");
  TORCH_CHECK(grad_out.sizes() == x.sizes() && grad_out.is_contiguous() &&
                  grad_out.scalar_type() == x.scalar_type(),
              "sa_fused backward: grad_out must match x (contiguous)");
  const int64_t n = x.size(0), c = x.size(1), m = x.size(2) * x.size(3);
  const int64_t k = c / (2 * groups);
  auto dx = empty_output(x);
  at::Tensor dres =
      y.has_value() ? empty_output(x) : at::Tensor();
  // every plane writes its two sums
  std::unique_ptr<double[]> p0(new double[n * c]), p1(new double[n * c]);
  std::vector<at::Tensor> out{dx, dres};
  for (const auto& p : params) {
    out.push_back(new_tensor(p.sizes(), p.scalar_type()));
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sa_backward", [&] {
    using K = Kernels<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gyp = grad_out.data_ptr<scalar_t>();
    const scalar_t* yp = y.has_value() ? y->data_ptr<scalar_t>() : nullptr;
    scalar_t* drp = dres.defined() ? dres.data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    const scalar_t *cw = params[0].data_ptr<scalar_t>(),
                   *cb = params[1].data_ptr<scalar_t>(),
                   *sw = params[2].data_ptr<scalar_t>(),
                   *sb = params[3].data_ptr<scalar_t>(),
                   *gw = params[4].data_ptr<scalar_t>(),
                   *gb = params[5].data_ptr<scalar_t>();
    const double* mp = mean.data_ptr<double>();
    const double* rp = rstd.data_ptr<double>();
    double* p0p = p0.get();
    double* p1p = p1.get();
    const std::vector<ChannelRole>& roles =
        channel_roles(c, groups, /*output_order=*/true);
    const double inv_m = 1.0 / m;
    at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
      for (PlaneWalk walk(roles, m, begin, end); !walk.done(); walk.next()) {
        const int64_t plane = walk.in_plane();
        const ChannelRole& role = walk.role();
        const scalar_t* xs = xp + plane * m;
        const int64_t out_plane = walk.out_plane() * m;
        const scalar_t* gys = gyp + out_plane;
        // with the block output, the gradient through the ReLU goes to dres
        const scalar_t* ys = yp == nullptr ? nullptr : yp + out_plane;
        scalar_t* gs_out = drp == nullptr ? nullptr : drp + out_plane;
        scalar_t* dxs = dxp + plane * m;
        const double mu = mp[plane], rs = rp[plane];
        // gate, sums and dx are taken about the mean rounded to scalar_t
        const scalar_t center = static_cast<scalar_t>(mu);
        double a, bb;
        coefficients(role, mu, rs, center, cw, cb, sw, sb, gw, gb, &a, &bb);
        const scalar_t af = static_cast<scalar_t>(a),
                       bf = static_cast<scalar_t>(bb);
        double sum_d, sum_dxc;
        K::sums(gys, ys, gs_out, xs, m, af, bf, center, &sum_d, &sum_dxc,
                dxs);
        double alpha, beta;
        if (role.spatial) {
          const double m1 = sum_d * inv_m;
          // mean(d * xhat), with sum(d * x) = sum_dxc + center * sum_d
          const double m2 = rs * (sum_dxc * inv_m - (mu - center) * m1);
          // dx = t + alpha * (x - mu) - a * m1, about center
          alpha = -a * rs * m2;
          beta = -a * m1 + a * rs * (mu - center) * m2;
          p0p[plane] = sum_d;
          p1p[plane] = m2 * m;
        } else {
          alpha = 0;
          beta = static_cast<double>(cw[role.param]) * sum_d * inv_m;
          p0p[plane] = sum_d;
          p1p[plane] = sum_d * mu;
        }
        K::dx(xs, dxs, m, static_cast<scalar_t>(alpha),
              static_cast<scalar_t>(beta), center);
      }
    });
    // The per-plane sums to per-parameter sums, in double: a loop here
    // rather than a dozen small ATen ops, each dispatched with cold caches
    // after the passes above.
    std::vector<double> s0(2 * k, 0.0), s1(2 * k, 0.0);  // [half * k + j]
    for (int64_t i = 0; i < n * groups; ++i) {
      for (int64_t h = 0; h < 2 * k; ++h) {
        s0[h] += p0[i * 2 * k + h];
        s1[h] += p1[i * 2 * k + h];
      }
    }
    scalar_t* g[6];
    for (int i = 0; i < 6; ++i) g[i] = out[2 + i].data_ptr<scalar_t>();
    for (int64_t j = 0; j < k; ++j) {
      const double c0 = s0[j], c1 = s1[j], z0 = s0[k + j], z1 = s1[k + j];
      g[0][j] = static_cast<scalar_t>(c1);
      g[1][j] = static_cast<scalar_t>(c0);
      g[2][j] = static_cast<scalar_t>(static_cast<double>(gw[j]) * z1 +
                                      static_cast<double>(gb[j]) * z0);
      g[3][j] = static_cast<scalar_t>(z0);
      g[4][j] = static_cast<scalar_t>(static_cast<double>(sw[j]) * z1);
      g[5][j] = static_cast<scalar_t>(static_cast<double>(sw[j]) * z0);
    }
  });
  return out;
}

}  // namespace

namespace mmsa {

// The inputs as the kernel takes them: x's dtype and contiguous
// (channels_last x: one copy; (1, k, 1, 1) and (k,) parameters are both k
// contiguous values). Checked before converting: each no-op to() or
// contiguous() is a dispatched call, slow with cold caches.
struct KernelInputs {
  KernelInputs(const at::Tensor& x_in,
               const std::optional<at::Tensor>& residual_in,
               const at::Tensor& cweight, const at::Tensor& cbias,
               const at::Tensor& sweight, const at::Tensor& sbias,
               const at::Tensor& gn_weight, const at::Tensor& gn_bias)
      : x(as_kernel_input(x_in, x_in.scalar_type())) {
    const auto dtype = x.scalar_type();
    if (residual_in.has_value()) {
      residual = as_kernel_input(*residual_in, dtype);
    }
    for (const at::Tensor* p :
         {&cweight, &cbias, &sweight, &sbias, &gn_weight, &gn_bias}) {
      params.push_back(as_kernel_input(*p, dtype));
    }
  }

  static at::Tensor as_kernel_input(const at::Tensor& t,
                                    at::ScalarType dtype) {
    if (t.scalar_type() == dtype && t.is_contiguous()) return t;
    return t.to(dtype).contiguous();
  }

  at::Tensor x;
  std::optional<at::Tensor> residual;
  std::vector<at::Tensor> params;
};

// The autograd node, in C++ so that neither the forward's bookkeeping nor
// the backward runs Python: after a pass over a large tensor the caches
// are cold, and the Python autograd.Function's glue (saving and unpacking
// ten tensors, the decorators, the parameter casts) costs as much as the
// kernel itself on small planes.
// Named outside the anonymous namespace: grad_fn and profiler traces show
// it as torch::autograd::CppNode<mmsa::SAFused>.
class SAFused : public torch::autograd::Function<SAFused> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x,
                            const std::optional<at::Tensor>& residual,
                            const at::Tensor& cweight, const at::Tensor& cbias,
                            const at::Tensor& sweight, const at::Tensor& sbias,
                            const at::Tensor& gn_weight,
                            const at::Tensor& gn_bias, int64_t groups,
                            double eps) {
    KernelInputs in(x, residual, cweight, cbias, sweight, sbias, gn_weight,
                    gn_bias);
    auto fwd = sa_forward(in.x, in.params, groups, eps, in.residual);
    // With a residual the backward needs the output for the ReLU's mask.
    // Saved as tensor_data(), which shares storage and version counter but
    // is not the output: a C++ node holds the tensors to save until they
    // are packed, and when packing throws (non-reentrant checkpoint's early
    // stop does so on purpose) an output held there would keep its own
    // grad_fn, the node, alive: a leak per checkpointed block.
    std::vector<at::Tensor> saved{
        in.x, fwd[1], fwd[2],
        in.residual.has_value() ? fwd[0].tensor_data() : at::Tensor()};
    saved.insert(saved.end(), in.params.begin(), in.params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["groups"] = groups;
    return fwd[0];
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const std::vector<at::Tensor> params(saved.begin() + 4, saved.end());
    std::optional<at::Tensor> y;
    if (saved[3].defined()) y = saved[3];
    const at::Tensor& g = grad_outputs[0];
    auto grads = sa_backward(g.contiguous(), saved[0], saved[1], saved[2],
                             params, ctx->saved_data["groups"].toInt(), y);
    // x, residual, six parameters, groups, eps
    torch::autograd::variable_list out(grads.begin(), grads.end());
    out.push_back(at::Tensor());
    out.push_back(at::Tensor());
    if (!at::GradMode::is_enabled()) return out;
    // With create_graph the gradients are returned, and differentiating them
    // raises (as Python's @once_differentiable, which however lets them pass
    // as constants when grad_out does not require grad: they depend on x).
    torch::autograd::variable_list defined;
    for (const auto& t : out) {
      if (t.defined()) defined.push_back(t.detach().requires_grad_(true));
    }
    auto err = std::make_shared<torch::autograd::DelayedError>(
        "sa_fused is differentiable once: its gradients cannot be "
        "differentiated again (create_graph=True); use "
        "ShuffleAttention(impl='reference') for double backward",
        static_cast<int64_t>(defined.size()));
    defined = (*err)(std::move(defined));
    for (size_t i = 0, j = 0; i < out.size(); ++i) {
      if (out[i].defined()) out[i] = defined[j++];
    }
    return out;
  }
};

at::Tensor sa_fused(const at::Tensor& x,
                    const std::optional<at::Tensor>& residual,
                    const at::Tensor& cweight, const at::Tensor& cbias,
                    const at::Tensor& sweight, const at::Tensor& sbias,
                    const at::Tensor& gn_weight, const at::Tensor& gn_bias,
                    int64_t groups, double eps) {
  // the backward shows as CppNode<mmsa::SAFused>; this names the forward
  RECORD_FUNCTION("mmsa::sa_fused", std::vector<c10::IValue>({x}));
  bool record = false;
  if (at::GradMode::is_enabled()) {
    for (const at::Tensor* t : {&x, &cweight, &cbias, &sweight, &sbias,
                                &gn_weight, &gn_bias}) {
      record = record || t->requires_grad();
    }
    record = record || (residual.has_value() && residual->requires_grad());
  }
  if (record) {
    return SAFused::apply(x, residual, cweight, cbias, sweight, sbias,
                          gn_weight, gn_bias, groups, eps);
  }
  // Nothing to record (no_grad, inference, frozen): the kernel alone.
  // Function::apply sets up a node even when it records nothing.
  KernelInputs in(x, residual, cweight, cbias, sweight, sbias, gn_weight,
                  gn_bias);
  return sa_forward(in.x, in.params, groups, eps, in.residual)[0];
}

// sa_fused where the kernel takes x, else None (the reference path's
// cue; mmsa.ops.sa_cpu_kernel.sa_cpu_unsupported says why, under the same
// rule). One call from the block end instead of a dozen tensor attribute
// reads in Python, each slow with the caches cold after a pass over a
// large tensor. Under CPU autocast x and residual run in float32, outside
// autocast.
// at::autocast::is_autocast_enabled(DeviceType) came with torch 2.4; torch
// 2.1 to 2.3 have one function per device.
static bool cpu_autocast_enabled() {
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}

std::optional<at::Tensor> sa_fused_if_supported(
    const at::Tensor& x, const std::optional<at::Tensor>& residual,
    const at::Tensor& cweight, const at::Tensor& cbias,
    const at::Tensor& sweight, const at::Tensor& sbias,
    const at::Tensor& gn_weight, const at::Tensor& gn_bias, int64_t groups,
    double eps) {
  if (!x.device().is_cpu()) return std::nullopt;
  if (x.dim() == 4 && x.size(2) * x.size(3) == 0) return std::nullopt;
  if (!cpu_autocast_enabled()) {
    const auto dtype = x.scalar_type();
    if (dtype != at::kFloat && dtype != at::kDouble) return std::nullopt;
    return sa_fused(x, residual, cweight, cbias, sweight, sbias, gn_weight,
                    gn_bias, groups, eps);
  }
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKey::AutocastCPU);
  std::optional<at::Tensor> res;
  if (residual.has_value()) res = residual->to(at::kFloat);
  return sa_fused(x.to(at::kFloat), res, cweight, cbias, sweight, sbias,
                  gn_weight, gn_bias, groups, eps);
}

std::string isa() { return float_kernels().isa; }

// block_end_cpu.cpp
void register_block_end(pybind11::module& m);

}  // namespace mmsa

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused Shuffle Attention CPU kernels (mmsa)";
  m.def("forward", &sa_forward,
        "SA forward (relu(SA(x) + residual) with a residual): "
        "(out, mean, rstd)",
        py::arg("x"), py::arg("params"), py::arg("groups"), py::arg("eps"),
        py::arg("residual") = py::none());
  m.def("backward", &sa_backward,
        "SA backward: dx, the residual's gradient (None without y) and the "
        "gradients of the six parameters",
        py::arg("grad_out"), py::arg("x"), py::arg("mean"), py::arg("rstd"),
        py::arg("params"), py::arg("groups"), py::arg("y") = py::none());
  m.def("fused", &mmsa::sa_fused,
        "SA (relu(SA(x) + residual) with a residual) as one autograd node",
        py::arg("x"), py::arg("residual"), py::arg("cweight"),
        py::arg("cbias"), py::arg("sweight"), py::arg("sbias"),
        py::arg("gn_weight"), py::arg("gn_bias"), py::arg("groups"),
        py::arg("eps"));
  m.def("fused_if_supported", &mmsa::sa_fused_if_supported,
        "fused, or None where the kernel cannot take x (not CPU, H * W = 0, "
        "a dtype other than float32/float64 outside CPU autocast)",
        py::arg("x"), py::arg("residual"), py::arg("cweight"),
        py::arg("cbias"), py::arg("sweight"), py::arg("sbias"),
        py::arg("gn_weight"), py::arg("gn_bias"), py::arg("groups"),
        py::arg("eps"));
  m.def("isa", &mmsa::isa, "instruction set of the float32 kernels");
  m.def("supported_isas", &supported_isas,
        "instruction sets this CPU and build can run, best first");
  mmsa::register_block_end(m);
}
