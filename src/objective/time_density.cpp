#include "cnf/objective/time_density.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
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

// z_t and dz_t/dt tabulated on [lo, hi], on a grid that is uniform inside and geometric
// towards both ends (down to 1e-12 of the range from them), where z may run to +-inf like
// log t. Built once per (schedule, lo, hi) and kept: a training run asks for the same one at
// every step.
struct NoiseLevelTable {
  std::vector<double> t, z, dz;
};

// The table of `schedule` on [lo, hi] (see NoiseLevelTable), computed.
std::shared_ptr<const NoiseLevelTable> make_noise_level_table(const path::Schedule& schedule,
                                                              double lo, double hi) {
  std::vector<double> ends;  // 1e-12 ... 10^-3.1, ten per decade
  for (int k = 0; k < 90; ++k) ends.push_back(std::pow(10.0, -12 + 0.1 * k));
  std::vector<double> g{0.0};
  g.insert(g.end(), ends.begin(), ends.end());
  for (int k = 0; k <= 1000; ++k) g.push_back(1e-3 + (1 - 2e-3) * k / 1000.0);
  for (auto e = ends.rbegin(); e != ends.rend(); ++e) g.push_back(1 - *e);
  g.push_back(1.0);
  auto table = std::make_shared<NoiseLevelTable>();
  for (double v : g) table->t.push_back(lo + (hi - lo) * v);
  table->t.back() = hi;
  auto [z, dz] = noise_level(schedule, torch::tensor(table->t, torch::kFloat64));
  auto zc = z.contiguous(), dzc = dz.contiguous();
  table->z.assign(zc.data_ptr<double>(), zc.data_ptr<double>() + zc.numel());
  table->dz.assign(dzc.data_ptr<double>(), dzc.data_ptr<double>() + dzc.numel());
  return table;
}

// The cached table of `schedule` on [lo, hi], by its canonical spec and the range.
std::shared_ptr<const NoiseLevelTable> noise_level_table(const path::Schedule& schedule, double lo,
                                                         double hi) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const NoiseLevelTable>> cache;
  const std::string key =
      schedule.describe() + "|" + shortest_number(lo) + "|" + shortest_number(hi);
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto table = make_noise_level_table(schedule, lo, hi);
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() >= 64) cache.clear();  // a program sweeping many paths: start over
  cache[key] = table;
  return table;
}

// The time in [lo, hi] at which z_t = target (z_t increasing in t), elementwise. A first guess
// from the cached table (the cell that brackets the target, then Newton steps on the cubic
// Hermite interpolant of z over that cell, in plain doubles), then two Newton steps on the
// schedule itself, each kept only where it stays inside the cell. The guess
// is within ~1e-6 of the cell's width, so two steps reach rounding; in a cell with an
// infinite end (t -> 0 or 1 where sigma or alpha vanish, beyond 1e-12 of the range) the
// midpoint is kept: an error below 1e-12 in t.
at::Tensor time_at_noise_level(const path::Schedule& schedule, const at::Tensor& target, double lo,
                               double hi) {
  const auto cached = noise_level_table(schedule, lo, hi);
  const auto& table = *cached;
  auto host = target.to(torch::kCPU, torch::kFloat64).contiguous();
  const double* zt = host.data_ptr<double>();
  const int64_t n = host.numel();
  std::vector<double> guess(n), a(n), b(n);
  const auto& T = table.t;
  const auto& Z = table.z;
  const auto& D = table.dz;
  for (int64_t i = 0; i < n; ++i) {
    size_t j = static_cast<size_t>(std::upper_bound(Z.begin(), Z.end(), zt[i]) - Z.begin());
    j = std::clamp<size_t>(j, 1, Z.size() - 1);
    a[i] = T[j - 1];
    b[i] = T[j];
    const double h = T[j] - T[j - 1];
    if (!std::isfinite(Z[j - 1]) || !std::isfinite(Z[j]) || !std::isfinite(D[j - 1]) ||
        !std::isfinite(D[j]) || h <= 0) {
      guess[i] = 0.5 * (a[i] + b[i]);
      continue;
    }
    // Newton on the Hermite cubic p(s) - target, s in [0, 1], from the linear guess.
    const double z0 = Z[j - 1], z1 = Z[j], m0 = D[j - 1] * h, m1 = D[j] * h;
    double s = z1 > z0 ? std::clamp((zt[i] - z0) / (z1 - z0), 0.0, 1.0) : 0.5;
    for (int it = 0; it < 8; ++it) {
      const double s2 = s * s, s3 = s2 * s;
      const double p = (2 * s3 - 3 * s2 + 1) * z0 + (s3 - 2 * s2 + s) * m0 +
                       (3 * s2 - 2 * s3) * z1 + (s3 - s2) * m1;
      const double dp = (6 * s2 - 6 * s) * z0 + (3 * s2 - 4 * s + 1) * m0 + (6 * s - 6 * s2) * z1 +
                        (3 * s2 - 2 * s) * m1;
      if (!(dp > 0)) break;
      s = std::clamp(s - (p - zt[i]) / dp, 0.0, 1.0);
    }
    guess[i] = a[i] + h * s;
  }
  const auto opt = target.options();
  auto t = torch::tensor(guess, torch::kFloat64).to(opt.device()).reshape(target.sizes());
  auto lo_t = torch::tensor(a, torch::kFloat64).to(opt.device()).reshape(target.sizes());
  auto hi_t = torch::tensor(b, torch::kFloat64).to(opt.device()).reshape(target.sizes());
  for (int it = 0; it < 2; ++it) {
    auto [z, dz] = noise_level(schedule, t);
    auto newton = t - (z - target) / dz;
    t = torch::where(torch::isfinite(newton) & (newton >= lo_t) & (newton <= hi_t), newton, t);
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

namespace {
// {F(lo), F(hi)} of `d`, the distribution function at the ends of the truncation range, which
// density() and sample() share; throws unless 0 <= lo < hi <= 1 and `d` has mass on [lo, hi].
// Two scalars: computed on the CPU whatever the device of the loss (no device round trip).
std::pair<double, double> truncation(const TimeDensity& d, double lo, double hi,
                                     const path::Schedule& schedule) {
  CNF_CHECK(0 <= lo && lo < hi && hi <= 1, "a time density needs 0 <= lo < hi <= 1, got [", lo,
            ", ", hi, "]");
  const auto ends = d.cdf(torch::tensor({lo, hi}, torch::kFloat64), schedule);
  const double f_lo = ends[0].item<double>(), f_hi = ends[1].item<double>();
  CNF_CHECK(f_hi > f_lo, "time density ", d.describe(), " has no mass on [", lo, ", ", hi,
            "] (its distribution function is ", f_lo, " at both ends); move m or widen s");
  return {f_lo, f_hi};
}
}  // namespace

at::Tensor TimeDensity::density(const at::Tensor& t, double lo, double hi,
                                const path::Schedule& schedule) const {
  const auto [f_lo, f_hi] = truncation(*this, lo, hi, schedule);
  const double mass = f_hi - f_lo;
  auto td = t.to(torch::kDouble);
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
  const auto [f_lo, f_hi] = truncation(*this, lo, hi, schedule);
  // Uniform times draw in the loss's own dtype, as the losses always have (same stream).
  if (kind == TimeDensityKind::uniform) return lo + (hi - lo) * torch::rand({n}, gen, options);
  auto dopt = options.dtype(torch::kDouble);
  auto r = torch::rand({n}, gen, dopt);
  auto u = f_lo + (f_hi - f_lo) * r;
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
