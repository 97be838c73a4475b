#include "cnf/path/affine.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"

namespace cnf::path {

at::Tensor expand_as_batch(const at::Tensor& a, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return a.reshape(shape);
}

PathSample sample_path(const Schedule& schedule, const at::Tensor& x_0, const at::Tensor& x_1,
                       const at::Tensor& t) {
  CNF_CHECK(x_0.sizes() == x_1.sizes(), "x_0 and x_1 must have the same shape, got ", x_0.sizes(),
            " and ", x_1.sizes());
  CNF_CHECK(t.dim() == 1 && t.size(0) == x_0.size(0), "t must have shape [", x_0.size(0), "], got ",
            t.sizes());
  auto s = schedule(t.to(x_0.scalar_type()));
  auto b = [&](const at::Tensor& a) { return expand_as_batch(a, x_0); };
  return {t, b(s.alpha_t) * x_0 + b(s.sigma_t) * x_1, b(s.d_alpha_t) * x_0 + b(s.d_sigma_t) * x_1};
}

const Registry<Param>& params() {
  static const Registry<Param> r("parameterization", {{"velocity", Param::velocity},
                                                      {"score", Param::score},
                                                      {"data", Param::data},
                                                      {"noise", Param::noise},
                                                      {"v", Param::v}});
  return r;
}
Param parse_param(const std::string& name) { return params().get(name); }

std::string param_name(Param p) { return params().name_of(p); }

at::Tensor convert(const Schedule& schedule, const at::Tensor& pred, Param from, Param to,
                   const at::Tensor& x_t, const at::Tensor& t) {
  if (from == to) return pred;
  auto s = schedule(t.to(x_t.scalar_type()));
  auto b = [&](const at::Tensor& a) { return expand_as_batch(a, x_t); };
  auto alpha = b(s.alpha_t), sigma = b(s.sigma_t), d_alpha = b(s.d_alpha_t),
       d_sigma = b(s.d_sigma_t);
  // Recover (x0_hat, x1_hat) from whichever is given, then express the target.
  at::Tensor x0, x1;
  switch (from) {
    case Param::data:
      x0 = pred;
      x1 = (x_t - alpha * x0) / sigma;
      break;
    case Param::noise:
      x1 = pred;
      x0 = (x_t - sigma * x1) / alpha;
      break;
    case Param::score:
      x1 = -sigma * pred;
      x0 = (x_t - sigma * x1) / alpha;
      break;
    case Param::velocity: {
      // Cramer's rule on [alpha sigma; d_alpha d_sigma] [x0; x1] = [x_t; v].
      auto det = alpha * d_sigma - sigma * d_alpha;
      x0 = (d_sigma * x_t - sigma * pred) / det;
      x1 = (alpha * pred - d_alpha * x_t) / det;
      break;
    }
    case Param::v: {
      // On the variance-preserving path of the same log-SNR (affine.h): x^ = x_t / r.
      auto r = torch::sqrt(alpha * alpha + sigma * sigma);
      auto a = alpha / r, s = sigma / r, xh = x_t / r;
      x0 = a * xh - s * pred;
      x1 = s * xh + a * pred;
      break;
    }
  }
  switch (to) {
    case Param::data:
      return x0;
    case Param::noise:
      return x1;
    case Param::score:
      return -x1 / sigma;
    case Param::velocity:
      return d_alpha * x0 + d_sigma * x1;
    case Param::v: {
      auto r = torch::sqrt(alpha * alpha + sigma * sigma);
      return (alpha * x1 - sigma * x0) / r;
    }
  }
  return pred;
}

SDECoefficients sde_coefficients(const Schedule& schedule, const at::Tensor& t) {
  auto s = schedule(t);
  auto f = s.d_alpha_t / s.alpha_t;
  auto g2 = 2.0 * s.sigma_t * s.d_sigma_t - 2.0 * f * s.sigma_t * s.sigma_t;
  return {f, torch::sqrt(torch::clamp_min(g2, 0.0))};
}

at::Tensor log_snr(const Schedule& schedule, const at::Tensor& t) {
  auto s = schedule(t);
  return torch::log(s.alpha_t) - torch::log(s.sigma_t);
}

std::pair<at::Tensor, at::Tensor> perturb(const Schedule& schedule, const at::Tensor& x_0,
                                          const at::Tensor& t, at::Generator& gen) {
  auto x_1 = torch::randn(x_0.sizes(), gen, x_0.options().device(torch::kCPU)).to(x_0.device());
  return {sample_path(schedule, x_0, x_1, t).x_t, x_1};
}

namespace {
// The t in [a, b] where the monotone `value(t)` crosses `target` (60 halvings: 1e-18 wide).
template <class F>
double bisect(F value, double target, double a, double b, bool increasing) {
  for (int i = 0; i < 60; ++i) {
    const double m = 0.5 * (a + b);
    if ((value(m) < target) == increasing)
      a = m;
    else
      b = m;
  }
  return 0.5 * (a + b);
}
}  // namespace

TimeRange conversion_range(const Schedule& schedule, double floor) {
  CNF_CHECK(floor > 0 && floor < 0.5, "conversion floor must be in (0, 0.5), got ", floor);
  auto sigma = [&](double t) { return schedule.at_time(t).sigma_t.item<double>(); };
  auto alpha = [&](double t) { return schedule.at_time(t).alpha_t.item<double>(); };
  TimeRange r;
  r.lo = schedule.t_min();
  if (sigma(r.lo) < floor) r.lo = bisect(sigma, floor, r.lo, 1.0, true);
  r.hi = 1.0;
  if (alpha(1.0) < floor) r.hi = bisect(alpha, floor, r.lo, 1.0, false);
  CNF_CHECK(r.lo < r.hi, schedule.describe(),
            " has no time where both alpha_t and sigma_t are >= ", floor,
            "; choose a schedule whose signal and noise both reach ", floor);
  return r;
}

double log_snr_at(const Schedule& schedule, double t) {
  auto s = schedule.at_time(t);
  return std::log(s.alpha_t.item<double>()) - std::log(s.sigma_t.item<double>());
}

double time_at_log_snr(const Schedule& schedule, double lambda, TimeRange range) {
  double a = range.lo, b = range.hi;  // lambda(a) >= lambda >= lambda(b)
  const double l_a = log_snr_at(schedule, a), l_b = log_snr_at(schedule, b);
  const double tol = 1e-12 * (1.0 + std::abs(lambda));
  CNF_CHECK(lambda <= l_a + tol && lambda >= l_b - tol, "log-SNR ", lambda, " is outside [", l_b,
            ", ", l_a, "], the range of ", schedule.describe(), " on [", a, ", ", b, "]");
  if (std::abs(l_a - lambda) <= tol) return a;
  if (std::abs(l_b - lambda) <= tol) return b;
  double t = 0.5 * (a + b);
  for (int i = 0; i < 200 && b - a > 1e-15; ++i) {
    auto s = schedule.at_time(t);
    const double alpha = s.alpha_t.item<double>(), sigma = s.sigma_t.item<double>();
    const double value = std::log(alpha) - std::log(sigma) - lambda;
    if (std::abs(value) <= tol) break;
    if (value > 0)
      a = t;
    else
      b = t;
    const double slope = s.d_alpha_t.item<double>() / alpha - s.d_sigma_t.item<double>() / sigma;
    double next = slope < 0 ? t - value / slope : 0.5 * (a + b);
    if (!(next > a && next < b)) next = 0.5 * (a + b);
    t = next;
  }
  return t;
}

}  // namespace cnf::path
