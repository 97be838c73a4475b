#include "cnf/objective/time_density.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/spec.h"

namespace cnf::objective {

const Registry<TimeDensityKind>& time_densities() {
  static const Registry<TimeDensityKind> r("time density",
                                           {{"uniform", TimeDensityKind::uniform},
                                            {"logit-normal", TimeDensityKind::logit_normal},
                                            {"cosine", TimeDensityKind::cosine},
                                            {"log-normal", TimeDensityKind::log_normal}});
  return r;
}

namespace {

constexpr double kPi = 3.14159265358979323846;

// The parameters a family's spec takes, with its defaults.
std::vector<SpecParam> density_params(TimeDensityKind kind) {
  switch (kind) {
    case TimeDensityKind::logit_normal:
      return {{"m", 0.0}, {"s", 1.0}};
    case TimeDensityKind::log_normal:
      return {{"m", -1.2}, {"s", 1.2}};
    case TimeDensityKind::uniform:
    case TimeDensityKind::cosine:
      break;
  }
  return {};
}

// z_t = ln(sigma_t / alpha_t) and dz_t/dt in float64 (+-inf where alpha_t or sigma_t is 0).
std::pair<at::Tensor, at::Tensor> noise_level(const path::Schedule& schedule, const at::Tensor& t) {
  auto v = schedule(t.to(torch::kDouble));
  auto z = v.sigma_t.log() - v.alpha_t.log();
  auto dz = v.d_sigma_t / v.sigma_t - v.d_alpha_t / v.alpha_t;
  return {z, dz};
}

at::Tensor normal_cdf(const at::Tensor& x) { return 0.5 * torch::erfc(-x / std::sqrt(2.0)); }
at::Tensor normal_pdf(const at::Tensor& x) {
  return torch::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi);
}
at::Tensor normal_quantile(const at::Tensor& p) {
  return std::sqrt(2.0) * torch::erfinv(2 * p - 1);
}

// The time in [lo, hi] at which z_t = target (z_t increasing in t), elementwise: a bracket
// and a linear first guess from a table of z on 257 times, then Newton steps that fall back to
// bisection whenever they would leave the bracket (z is smooth inside (lo, hi) but may run to
// +-inf at its ends, where the guess is the cell's midpoint), until no time moves by more
// than 1e-15 (a few steps inside the table's cells; up to ~50 bisections in an end cell).
at::Tensor time_at_noise_level(const path::Schedule& schedule, const at::Tensor& target, double lo,
                               double hi) {
  constexpr int64_t kTable = 257;
  auto grid = torch::linspace(lo, hi, kTable, target.options());
  auto table = noise_level(schedule, grid).first.contiguous();
  auto j = torch::searchsorted(table, target.contiguous()).clamp(1, kTable - 1);
  auto a = grid.index_select(0, j - 1), b = grid.index_select(0, j);
  auto za = table.index_select(0, j - 1), zb = table.index_select(0, j);
  auto guess = a + (b - a) * (target - za) / (zb - za);
  auto t = torch::where(torch::isfinite(guess) & (guess >= a) & (guess <= b), guess, 0.5 * (a + b));
  for (int i = 0; i < 100; ++i) {
    auto [z, dz] = noise_level(schedule, t);
    auto value = z - target;
    a = torch::where(value < 0, t, a);
    b = torch::where(value > 0, t, b);
    auto newton = t - value / dz;
    auto next =
        torch::where(torch::isfinite(newton) & (newton > a) & (newton < b), newton, 0.5 * (a + b));
    next = torch::where(value == 0, t, next);
    const bool settled = (next - t).abs().max().item<double>() <= 1e-15;
    t = next;
    if (settled) break;
  }
  return t;
}

}  // namespace

TimeDensity TimeDensity::parse(const std::string& text) {
  const SpecText spec = split_spec(text, "time density");
  TimeDensity d;
  d.kind = time_densities().get(spec.name);
  const auto params = density_params(d.kind);
  const auto values = spec_values(spec, params, "time density");
  if (!values.empty()) {
    d.m = values[0];
    d.s = values[1];
  }
  CNF_CHECK(d.s > 0, "time density '", text, "': s must be > 0 (the scale of the normal), got ",
            d.s);
  return d;
}

std::string TimeDensity::describe() const {
  const auto params = density_params(kind);
  return canonical_spec(time_densities().name_of(kind), params,
                        params.empty() ? std::vector<double>{} : std::vector<double>{m, s});
}

at::Tensor TimeDensity::cdf(const at::Tensor& t, const path::Schedule& schedule) const {
  auto td = t.to(torch::kDouble);
  switch (kind) {
    case TimeDensityKind::uniform:
      return td;
    case TimeDensityKind::logit_normal:
      // logit(0) = -inf and logit(1) = +inf give 0 and 1.
      return normal_cdf((torch::log(td) - torch::log1p(-td) - m) / s);
    case TimeDensityKind::cosine:
      // u = (2 / pi) atan(t / (1 - t)), the inverse of t = 1 - 1 / (tan(pi u / 2) + 1).
      return (2.0 / kPi) * torch::atan2(td, 1 - td);
    case TimeDensityKind::log_normal:
      return normal_cdf((noise_level(schedule, td).first - m) / s);
  }
  return td;
}

at::Tensor TimeDensity::density(const at::Tensor& t, double lo, double hi,
                                const path::Schedule& schedule) const {
  CNF_CHECK(0 <= lo && lo < hi && hi <= 1, "a time density needs 0 <= lo < hi <= 1, got [", lo,
            ", ", hi, "]");
  auto td = t.to(torch::kDouble);
  const auto ends = cdf(torch::tensor({lo, hi}, td.options()), schedule);
  const double mass = (ends[1] - ends[0]).item<double>();
  CNF_CHECK(mass > 0, "time density ", describe(), " has no mass on [", lo, ", ", hi,
            "] (its distribution function is ", ends[0].item<double>(), " at both ends); move m ",
            "or widen s");
  at::Tensor f;
  switch (kind) {
    case TimeDensityKind::uniform:
      f = torch::ones_like(td);
      break;
    case TimeDensityKind::logit_normal: {
      auto x = (torch::log(td) - torch::log1p(-td) - m) / s;
      f = normal_pdf(x) / (s * td * (1 - td));
      break;
    }
    case TimeDensityKind::cosine:
      f = (2.0 / kPi) / ((1 - td).pow(2) + td.pow(2));
      break;
    case TimeDensityKind::log_normal: {
      auto [z, dz] = noise_level(schedule, td);
      f = normal_pdf((z - m) / s) / s * dz;
      break;
    }
  }
  // At an end where the transformed coordinate is infinite the density is 0 (its limit).
  return torch::where(torch::isfinite(f), f, torch::zeros_like(f)) / mass;
}

at::Tensor TimeDensity::sample(int64_t n, double lo, double hi, const path::Schedule& schedule,
                               at::Generator& gen, const at::TensorOptions& options) const {
  CNF_CHECK(0 <= lo && lo < hi && hi <= 1, "a time density needs 0 <= lo < hi <= 1, got [", lo,
            ", ", hi, "]");
  // Uniform times draw in the loss's own dtype, as the losses always have (same stream).
  if (kind == TimeDensityKind::uniform) return lo + (hi - lo) * torch::rand({n}, gen, options);
  auto dopt = options.dtype(torch::kDouble);
  auto r = torch::rand({n}, gen, dopt);
  const auto ends = cdf(torch::tensor({lo, hi}, dopt), schedule);
  auto u = ends[0] + (ends[1] - ends[0]) * r;
  at::Tensor t;
  switch (kind) {
    case TimeDensityKind::uniform:
      break;
    case TimeDensityKind::logit_normal:
      t = torch::sigmoid(m + s * normal_quantile(u));
      break;
    case TimeDensityKind::cosine: {
      // 1 - 1 / (tan + 1) = sin / (sin + cos), finite at u = 1.
      auto a = (kPi / 2) * u;
      t = torch::sin(a) / (torch::sin(a) + torch::cos(a));
      break;
    }
    case TimeDensityKind::log_normal: {
      const auto z_ends = noise_level(schedule, torch::tensor({lo, hi}, dopt)).first;
      auto z =
          (m + s * normal_quantile(u)).clamp(z_ends[0].item<double>(), z_ends[1].item<double>());
      t = time_at_noise_level(schedule, z, lo, hi);
      break;
    }
  }
  // Rounding in the inverse may step just outside [lo, hi].
  return t.clamp(lo, hi).to(options);
}

at::Tensor TimeDensity::weight(const at::Tensor& t, double lo, double hi,
                               const path::Schedule& schedule) const {
  if (is_uniform()) return torch::ones_like(t);
  return ((hi - lo) * density(t, lo, hi, schedule)).to(t.scalar_type());
}

}  // namespace cnf::objective
