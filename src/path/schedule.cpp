#include "cnf/path/schedule.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/core/text.h"

namespace cnf::path {

ScheduleValues Schedule::at_time(double t) const {
  return (*this)(torch::full({}, t, torch::kFloat64));
}

double Schedule::sigma_1() const { return at_time(1.0).sigma_t.item<double>(); }

CondOT::CondOT(double sigma_min) : sigma_min_(sigma_min) {
  CNF_CHECK(sigma_min >= 0.0 && sigma_min < 1.0, "condot sigma_min must be in [0, 1), got ",
            sigma_min);
}
ScheduleValues CondOT::operator()(const at::Tensor& t) const {
  return {1.0 - t, sigma_min_ + (1.0 - sigma_min_) * t, -torch::ones_like(t),
          torch::full_like(t, 1.0 - sigma_min_)};
}
std::string CondOT::describe() const {
  return canonical_spec("condot", schedules().get("condot").params, {sigma_min_});
}

std::string CondOT::torchscript() const {
  return "alpha = 1.0 - t\nsigma = " + float_literal(sigma_min_) + " + " +
         float_literal(1.0 - sigma_min_) +
         " * t\nd_alpha = -torch.ones_like(t)\nd_sigma = torch.full_like(t, " +
         float_literal(1.0 - sigma_min_) + ")\n";
}

namespace {
void check_beta(const char* name, double beta_min, double beta_max) {
  CNF_CHECK(beta_min > 0.0 && beta_max >= beta_min, name,
            " needs 0 < beta_min <= beta_max, got beta_min=", beta_min, " beta_max=", beta_max);
}
// log alpha_t = -1/2 int_0^t beta(s) ds and its derivative -1/2 beta(t).
std::pair<at::Tensor, at::Tensor> vp_log_alpha(const at::Tensor& t, double b0, double b1) {
  auto log_alpha = -0.5 * (b0 * t + 0.5 * (b1 - b0) * t * t);
  auto d_log_alpha = -0.5 * (b0 + (b1 - b0) * t);
  return {log_alpha, d_log_alpha};
}
}  // namespace

VP::VP(double beta_min, double beta_max) : beta_min_(beta_min), beta_max_(beta_max) {
  check_beta("vp", beta_min, beta_max);
}
ScheduleValues VP::operator()(const at::Tensor& t) const {
  auto [log_alpha, d_log_alpha] = vp_log_alpha(t, beta_min_, beta_max_);
  auto alpha = torch::exp(log_alpha);
  auto d_alpha = alpha * d_log_alpha;
  // sigma^2 = 1 - alpha^2 = -expm1(2 log alpha): accurate near t = 0.
  auto sigma = torch::sqrt(-torch::expm1(2.0 * log_alpha));
  auto d_sigma = -alpha * d_alpha / sigma;
  return {alpha, sigma, d_alpha, d_sigma};
}
std::string VP::describe() const {
  return canonical_spec("vp", schedules().get("vp").params, {beta_min_, beta_max_});
}

namespace {
// log alpha_t and its derivative of the VP family, as TorchScript (see vp_log_alpha).
std::string vp_log_alpha_torchscript(double b0, double b1) {
  return "log_alpha = -0.5 * (" + float_literal(b0) + " * t + " + float_literal(0.5 * (b1 - b0)) +
         " * t * t)\n" + "d_log_alpha = -0.5 * (" + float_literal(b0) + " + " +
         float_literal(b1 - b0) + " * t)\n" +
         "alpha = torch.exp(log_alpha)\nd_alpha = alpha * d_log_alpha\n";
}
}  // namespace

std::string VP::torchscript() const {
  return vp_log_alpha_torchscript(beta_min_, beta_max_) +
         "sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))\nd_sigma = -alpha * d_alpha / sigma\n";
}

SubVP::SubVP(double beta_min, double beta_max) : beta_min_(beta_min), beta_max_(beta_max) {
  check_beta("subvp", beta_min, beta_max);
}
ScheduleValues SubVP::operator()(const at::Tensor& t) const {
  auto [log_alpha, d_log_alpha] = vp_log_alpha(t, beta_min_, beta_max_);
  auto alpha = torch::exp(log_alpha);
  auto d_alpha = alpha * d_log_alpha;
  auto sigma = -torch::expm1(2.0 * log_alpha);
  auto d_sigma = -2.0 * alpha * d_alpha;
  return {alpha, sigma, d_alpha, d_sigma};
}
std::string SubVP::describe() const {
  return canonical_spec("subvp", schedules().get("subvp").params, {beta_min_, beta_max_});
}

std::string SubVP::torchscript() const {
  return vp_log_alpha_torchscript(beta_min_, beta_max_) +
         "sigma = -torch.expm1(2.0 * log_alpha)\nd_sigma = -2.0 * alpha * d_alpha\n";
}

VE::VE(double sigma_min, double sigma_max) : sigma_min_(sigma_min), sigma_max_(sigma_max) {
  CNF_CHECK(sigma_min > 0.0 && sigma_max > sigma_min, "ve needs 0 < sigma_min < sigma_max, got ",
            "sigma_min=", sigma_min, " sigma_max=", sigma_max);
}
ScheduleValues VE::operator()(const at::Tensor& t) const {
  const double log_ratio = std::log(sigma_max_ / sigma_min_);
  auto sigma = sigma_min_ * torch::exp(log_ratio * t);
  return {torch::ones_like(t), sigma, torch::zeros_like(t), sigma * log_ratio};
}
std::string VE::describe() const {
  return canonical_spec("ve", schedules().get("ve").params, {sigma_min_, sigma_max_});
}

std::string VE::torchscript() const {
  const double log_ratio = std::log(sigma_max_ / sigma_min_);
  return "sigma = " + float_literal(sigma_min_) + " * torch.exp(" + float_literal(log_ratio) +
         " * t)\n" +
         "alpha = torch.ones_like(t)\nd_alpha = torch.zeros_like(t)\nd_sigma = sigma * " +
         float_literal(log_ratio) + "\n";
}

ScheduleValues Cosine::operator()(const at::Tensor& t) const {
  const double h = M_PI / 2.0;
  auto c = torch::cos(h * t), s = torch::sin(h * t);
  return {c, s, -h * s, h * c};
}
std::string Cosine::describe() const { return "cosine"; }

namespace {
Registry<ScheduleKind>& schedule_registry() {
  using V = const std::vector<double>&;
  static Registry<ScheduleKind> registry(
      "schedule",
      {
          {"condot",
           {{{"sigma_min", 0.0}}, [](V v) { return SchedulePtr(std::make_shared<CondOT>(v[0])); }}},
          {"vp",
           {{{"beta_min", 0.1}, {"beta_max", 20.0}},
            [](V v) { return SchedulePtr(std::make_shared<VP>(v[0], v[1])); }}},
          {"subvp",
           {{{"beta_min", 0.1}, {"beta_max", 20.0}},
            [](V v) { return SchedulePtr(std::make_shared<SubVP>(v[0], v[1])); }}},
          {"ve",
           {{{"sigma_min", 0.01}, {"sigma_max", 10.0}},
            [](V v) { return SchedulePtr(std::make_shared<VE>(v[0], v[1])); }}},
          {"cosine", {{}, [](V) { return SchedulePtr(std::make_shared<Cosine>()); }}},
          {"cosine-abar",
           {{{"s", 0.008}},
            [](V v) { return SchedulePtr(std::make_shared<CosineAlphaBar>(v[0])); }}},
          {"ddpm-linear",
           {{{"beta_start", 1e-4}, {"beta_end", 0.02}, {"steps", 1000.0}},
            [](V v) {
              return SchedulePtr(
                  std::make_shared<DiscreteDDPM>(DiscreteDDPM::Betas::linear, v[0], v[1], v[2]));
            }}},
          {"ddpm-scaled-linear",
           {{{"beta_start", 0.00085}, {"beta_end", 0.012}, {"steps", 1000.0}},
            [](V v) {
              return SchedulePtr(std::make_shared<DiscreteDDPM>(DiscreteDDPM::Betas::scaled_linear,
                                                                v[0], v[1], v[2]));
            }}},
      });
  return registry;
}
}  // namespace

const Registry<ScheduleKind>& schedules() { return schedule_registry(); }

void add_schedule(const std::string& name, ScheduleKind kind) {
  CNF_CHECK(kind.make != nullptr, "schedule '", name, "' needs a make function");
  schedule_registry().add(name, std::move(kind));
}

std::string Cosine::torchscript() const {
  const std::string h = float_literal(M_PI / 2.0);
  return "alpha = torch.cos(" + h + " * t)\nsigma = torch.sin(" + h + " * t)\n" + "d_alpha = -" +
         h + " * sigma\nd_sigma = " + h + " * alpha\n";
}

CosineAlphaBar::CosineAlphaBar(double s) : s_(s) {
  CNF_CHECK(s >= 0 && s < 1, "cosine-abar needs 0 <= s < 1, got s=", s);
}

ScheduleValues CosineAlphaBar::operator()(const at::Tensor& t) const {
  const double k = M_PI / (2.0 * (1.0 + s_)), c0 = std::cos(k * s_);
  auto theta = k * (t + s_);
  auto alpha = torch::cos(theta) / c0;
  auto d_alpha = -k * torch::sin(theta) / c0;
  // 1 - alpha^2 = (c0^2 - cos^2 theta) / c0^2 = sin(theta - k s) sin(theta + k s) / c0^2,
  // a product form that keeps sigma accurate where alpha is close to 1.
  auto sigma = torch::sqrt(torch::sin(theta - k * s_) * torch::sin(theta + k * s_)) / c0;
  auto d_sigma = -alpha * d_alpha / sigma;
  return {alpha, sigma, d_alpha, d_sigma};
}

std::string CosineAlphaBar::describe() const {
  return canonical_spec("cosine-abar", schedules().get("cosine-abar").params, {s_});
}

std::string CosineAlphaBar::torchscript() const {
  const double k = M_PI / (2.0 * (1.0 + s_)), c0 = std::cos(k * s_);
  const std::string K = float_literal(k), S = float_literal(s_), C = float_literal(c0),
                    KS = float_literal(k * s_);
  return "theta = " + K + " * (t + " + S + ")\nalpha = torch.cos(theta) / " + C + "\nd_alpha = -" +
         K + " * torch.sin(theta) / " + C + "\nsigma = torch.sqrt(torch.sin(theta - " + KS +
         ") * torch.sin(theta + " + KS + ")) / " + C + "\nd_sigma = -alpha * d_alpha / sigma\n";
}

namespace {
const char* ddpm_name(DiscreteDDPM::Betas betas) {
  return betas == DiscreteDDPM::Betas::linear ? "ddpm-linear" : "ddpm-scaled-linear";
}
}  // namespace

DiscreteDDPM::DiscreteDDPM(Betas betas, double beta_start, double beta_end, double steps)
    : betas_(betas), beta_start_(beta_start), beta_end_(beta_end) {
  CNF_CHECK(beta_start > 0 && beta_end >= beta_start && beta_end < 1, ddpm_name(betas),
            " needs 0 < beta_start <= beta_end < 1, got beta_start=", beta_start,
            " beta_end=", beta_end);
  CNF_CHECK(steps >= 2 && steps <= 100000 && steps == std::floor(steps), ddpm_name(betas),
            " needs a whole number of training steps in [2, 100000], got steps=", steps);
  steps_ = static_cast<int64_t>(steps);
  // The same torch operations as torchscript() below, so that both give the same table.
  const auto f64 = torch::TensorOptions(torch::kFloat64);
  auto beta = betas == Betas::linear
                  ? torch::linspace(beta_start, beta_end, steps_, f64)
                  : torch::linspace(std::sqrt(beta_start), std::sqrt(beta_end), steps_, f64).pow(2);
  log_abar_ = torch::cat({torch::zeros({1}, f64), torch::cumsum(torch::log1p(-beta), 0)});
  const double n = static_cast<double>(steps_);
  const auto& L = log_abar_;
  slope_ = torch::cat({(L.slice(0, 1, 2) - L.slice(0, 0, 1)) * n,
                       (L.slice(0, 2) - L.slice(0, 0, steps_ - 1)) * (0.5 * n),
                       (L.slice(0, steps_) - L.slice(0, steps_ - 1, steps_)) * n});
}

ScheduleValues DiscreteDDPM::operator()(const at::Tensor& t) const {
  const double n = static_cast<double>(steps_);
  auto u = t.to(torch::kFloat64) * n;
  auto cell = torch::clamp(torch::floor(u), 0.0, n - 1.0).to(torch::kLong);
  auto s = u - cell.to(torch::kFloat64);
  auto flat = cell.reshape({-1});
  const auto table = log_abar_.to(t.device()), slope = slope_.to(t.device());
  auto pick = [&](const at::Tensor& v, int64_t next) {
    return v.index_select(0, flat + next).reshape(cell.sizes());
  };
  // Cubic Hermite in s = N t - i on [i/N, (i+1)/N]; slopes per unit s are dL/dt / N.
  auto l0 = pick(table, 0), l1 = pick(table, 1), m0 = pick(slope, 0) / n, m1 = pick(slope, 1) / n;
  auto s2 = s * s, s3 = s2 * s;
  auto L =
      (2 * s3 - 3 * s2 + 1) * l0 + (s3 - 2 * s2 + s) * m0 + (3 * s2 - 2 * s3) * l1 + (s3 - s2) * m1;
  auto dL = ((6 * s2 - 6 * s) * l0 + (3 * s2 - 4 * s + 1) * m0 + (6 * s - 6 * s2) * l1 +
             (3 * s2 - 2 * s) * m1) *
            n;
  // alpha = sqrt(alpha-bar) = e^(L/2), sigma = sqrt(1 - e^L) (expm1: accurate near t = 0).
  auto alpha = torch::exp(0.5 * L);
  auto d_alpha = 0.5 * alpha * dL;
  auto sigma = torch::sqrt(-torch::expm1(L));
  auto d_sigma = -alpha * d_alpha / sigma;
  const auto dtype = t.scalar_type();
  return {alpha.to(dtype), sigma.to(dtype), d_alpha.to(dtype), d_sigma.to(dtype)};
}

std::string DiscreteDDPM::describe() const {
  const char* name = ddpm_name(betas_);
  return canonical_spec(name, schedules().get(name).params,
                        {beta_start_, beta_end_, static_cast<double>(steps_)});
}

std::string DiscreteDDPM::torchscript() const {
  const std::string N = std::to_string(steps_), n = float_literal(static_cast<double>(steps_));
  const std::string beta = betas_ == Betas::linear
                               ? "torch.linspace(" + float_literal(beta_start_) + ", " +
                                     float_literal(beta_end_) + ", " + N + ", dtype=ddpm_u.dtype)"
                               : "torch.linspace(" + float_literal(std::sqrt(beta_start_)) + ", " +
                                     float_literal(std::sqrt(beta_end_)) + ", " + N +
                                     ", dtype=ddpm_u.dtype).pow(2)";
  // TorchScript compiled from C++ cannot name torch.float64: the dtype is taken from t.double().
  return "ddpm_u = t.double() * " + n + "\nddpm_beta = " + beta +
         "\nddpm_L = torch.cat([torch.zeros(1, dtype=ddpm_u.dtype), "
         "torch.cumsum(torch.log1p(-ddpm_beta), 0)])\n"
         "ddpm_m = torch.cat([(ddpm_L[1:2] - ddpm_L[0:1]) * " +
         n + ", (ddpm_L[2:] - ddpm_L[0:" + std::to_string(steps_ - 1) + "]) * " +
         float_literal(0.5 * static_cast<double>(steps_)) + ", (ddpm_L[" + N + ":] - ddpm_L[" +
         std::to_string(steps_ - 1) + ":" + N + "]) * " + n +
         "])\n"
         "ddpm_i = torch.clamp(torch.floor(ddpm_u), 0.0, " +
         float_literal(static_cast<double>(steps_ - 1)) +
         ").long()\n"
         "ddpm_s = ddpm_u - ddpm_i.double()\n"
         "ddpm_flat = ddpm_i.reshape(-1)\n"
         "ddpm_l0 = ddpm_L.index_select(0, ddpm_flat).reshape(ddpm_i.shape)\n"
         "ddpm_l1 = ddpm_L.index_select(0, ddpm_flat + 1).reshape(ddpm_i.shape)\n"
         "ddpm_m0 = ddpm_m.index_select(0, ddpm_flat).reshape(ddpm_i.shape) / " +
         n + "\nddpm_m1 = ddpm_m.index_select(0, ddpm_flat + 1).reshape(ddpm_i.shape) / " + n +
         "\nddpm_s2 = ddpm_s * ddpm_s\nddpm_s3 = ddpm_s2 * ddpm_s\n"
         "ddpm_Lt = (2.0 * ddpm_s3 - 3.0 * ddpm_s2 + 1.0) * ddpm_l0 + (ddpm_s3 - 2.0 * ddpm_s2 + "
         "ddpm_s) * ddpm_m0 + (3.0 * ddpm_s2 - 2.0 * ddpm_s3) * ddpm_l1 + (ddpm_s3 - ddpm_s2) * "
         "ddpm_m1\n"
         "ddpm_dL = ((6.0 * ddpm_s2 - 6.0 * ddpm_s) * ddpm_l0 + (3.0 * ddpm_s2 - 4.0 * ddpm_s + "
         "1.0) * ddpm_m0 + (6.0 * ddpm_s - 6.0 * ddpm_s2) * ddpm_l1 + (3.0 * ddpm_s2 - 2.0 * "
         "ddpm_s) * ddpm_m1) * " +
         n +
         "\nddpm_a = torch.exp(0.5 * ddpm_Lt)\nddpm_da = 0.5 * ddpm_a * ddpm_dL\n"
         "ddpm_sg = torch.sqrt(-torch.expm1(ddpm_Lt))\n"
         "alpha = ddpm_a.to(t.dtype)\nsigma = ddpm_sg.to(t.dtype)\n"
         "d_alpha = ddpm_da.to(t.dtype)\nd_sigma = (-ddpm_a * ddpm_da / ddpm_sg).to(t.dtype)\n";
}

SchedulePtr make_schedule(const std::string& spec, double sigma_min) {
  SpecText text = split_spec(spec, "schedule");
  const ScheduleKind& kind = schedules().get(text.name);
  if (text.name == "condot" && sigma_min != 0.0) {
    for (const auto& item : text.items)
      CNF_CHECK(item.first != "sigma_min", "schedule '", spec, "' sets sigma_min and so does ",
                "--sigma-min (", sigma_min, "); give it once");
    text.items.emplace_back("sigma_min", shortest_number(sigma_min));
  }
  return kind.make(spec_values(text, kind.params, "schedule"));
}

std::string schedule_name(const std::string& spec) { return split_spec(spec, "schedule").name; }

}  // namespace cnf::path
