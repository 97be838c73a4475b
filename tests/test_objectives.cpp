// Training objectives against closed forms: the denoising score-matching loss of the exact
// model of Gaussian data equals its floor for every weighting lambda(t).
//
// Data N(mu, s^2 I) in d dimensions on an affine path: q_t = N(alpha_t mu, v_t I) with
// v_t = alpha_t^2 s^2 + sigma_t^2. The exact noise prediction is E[x_1 | x_t], and
// x_1 - E[x_1 | x_t] is N(0, c_t I) with c_t = Var(x_1 | x_t) = alpha_t^2 s^2 / v_t,
// independent of x_t. The loss in noise units, (lambda(t) / sigma_t^2) || eps - x_1 ||^2
// (objective/score_matching.h), is therefore per sample w(t) c_t chi^2_d with
// w = lambda / sigma^2, and its mean over t ~ U[t_min, t_max] is the floor
//   F = d E_t[w(t) c_t],   with per-sample second moment (d^2 + 2d) E_t[w^2 c_t^2].
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

#include "cnf/core/runtime.h"
#include "cnf/objective/score_matching.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

using namespace cnf;
using path::Param;

namespace {

// The exact model of N(mu, s^2 I) data: it predicts the noise E[x_1 | x_t] = sigma_t y / v_t,
// y = x_t - alpha_t mu.
class ExactNoiseModel : public nn::VelocityFieldImpl {
 public:
  ExactNoiseModel(path::SchedulePtr schedule, torch::Tensor mu, double s)
      : schedule_(std::move(schedule)), mu_(std::move(mu)), s_(s) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    auto v = (*schedule_)(t.to(x.scalar_type()));
    auto alpha = path::expand_as_batch(v.alpha_t, x), sigma = path::expand_as_batch(v.sigma_t, x);
    return sigma * (x - alpha * mu_) / (alpha * alpha * s_ * s_ + sigma * sigma);
  }
  std::vector<int64_t> sample_shape() const override { return {mu_.size(0)}; }

 private:
  path::SchedulePtr schedule_;
  torch::Tensor mu_;
  double s_;
};

// alpha_t, sigma_t^2 and g(t)^2 of a schedule, from the closed forms of the VE, VP and sub-VP
// SDEs (Song et al., ICLR 2021, section 3.4 and appendix B), written here and not read from
// cnf::path, so that the floor is an independent route.
struct ClosedForm {
  double alpha, sigma2, g2;
};
using Formula = std::function<ClosedForm(double)>;

// VP: beta(t) = b0 + t (b1 - b0), B(t) = int_0^t beta; alpha = exp(-B/2), sigma^2 = 1 - e^-B,
// g^2 = beta. Sub-VP: sigma^2 = (1 - e^-B)^2, g^2 = beta (1 - e^{-2B}).
ClosedForm vp(double t, bool sub) {
  const double b0 = 0.1, b1 = 20.0;
  const double big_b = b0 * t + 0.5 * (b1 - b0) * t * t, beta = b0 + t * (b1 - b0);
  const double alpha = std::exp(-0.5 * big_b);
  if (!sub) return {alpha, -std::expm1(-big_b), beta};
  return {alpha, std::pow(-std::expm1(-big_b), 2), beta * -std::expm1(-2 * big_b)};
}
// VE: alpha = 1, sigma = s0 (s1 / s0)^t, g^2 = d sigma^2 / dt = 2 sigma^2 log(s1 / s0).
ClosedForm ve(double t) {
  const double s0 = 0.01, s1 = 10.0;
  const double sigma = s0 * std::pow(s1 / s0, t);
  return {1.0, sigma * sigma, 2 * sigma * sigma * std::log(s1 / s0)};
}

double weight(objective::Weighting w, const ClosedForm& c) {
  switch (w) {
    case objective::Weighting::sigma2:
      return 1.0;  // lambda = sigma^2
    case objective::Weighting::likelihood:
      return c.g2 / c.sigma2;  // lambda = g^2
    case objective::Weighting::uniform:
      return 1.0 / c.sigma2;  // lambda = 1
    case objective::Weighting::min_snr: {
      const double snr = c.alpha * c.alpha / c.sigma2;  // Hang et al.: min(SNR, 5) / SNR
      return std::min(snr, 5.0) / snr;
    }
    case objective::Weighting::edm:
      return 1.0 + c.sigma2 / (c.alpha * c.alpha);  // Karras et al.: 1 + sigma^2 / sigma_data^2
  }
  return 0.0;
}

// The floor F = d m1 and the standard error of an n-sample mean of the per-sample loss, whose
// second moment is (d^2 + 2d) m2 (chi^2_d scaled by w c_t), from m1 = E[w c] and m2 = E[(w c)^2].
std::pair<double, double> floor_and_stderr(double m1, double m2, double d, int64_t n) {
  const double floor = d * m1;
  return {floor, std::sqrt(((d * d + 2 * d) * m2 - floor * floor) / n)};
}

// Score matching of a noise-predicting network on `schedule` with weighting `w`.
objective::ScoreMatchingOptions noise_loss(path::SchedulePtr schedule, objective::Weighting w) {
  objective::ScoreMatchingOptions o;
  o.schedule = std::move(schedule);
  o.param = Param::noise;
  o.weighting = w;
  return o;
}

}  // namespace

TEST(ObjectiveTest, ScoreMatchingLossOfTheExactModelIsItsFloorForEveryWeighting) {
  const auto mu = torch::tensor({1.0, -2.0}, torch::kFloat64);
  const double s = 0.5, d = 2;
  const int64_t n = 1000000;
  auto gen = make_generator(5);
  auto x_0 = mu + s * torch::randn({n, 2}, gen, torch::kFloat64);
  auto x_1 = torch::randn({n, 2}, gen, torch::kFloat64);
  struct Case {
    std::string spec;
    Formula formula;
    double t_min, t_max;  // < 0: the objective's default (the conversion range)
    double lo, hi;        // the range the floor integrates over
  };
  // vp and ve over their default ranges ([1e-3, 1] and [0, 1], path::conversion_range).
  // sub-VP from t = 0.01: its sigma_t ~ beta_min t makes the uniform weight 1/sigma^2 ~ 1e8 at
  // t = 1e-3, a per-sample loss too heavy-tailed for a Monte-Carlo check at any usable n.
  const Case cases[] = {
      {"vp", [](double t) { return vp(t, false); }, -1, -1, 1e-3, 1.0},
      {"subvp", [](double t) { return vp(t, true); }, 0.01, 1.0, 0.01, 1.0},
      {"ve", ve, -1, -1, 0.0, 1.0},
  };
  for (const auto& c : cases) {
    auto schedule = path::make_schedule(c.spec);
    ExactNoiseModel exact(schedule, mu, s);
    for (auto w : {objective::Weighting::sigma2, objective::Weighting::likelihood,
                   objective::Weighting::uniform, objective::Weighting::min_snr,
                   objective::Weighting::edm}) {
      // The floor and the per-sample variance by the midpoint rule, 20000 cells: the
      // integrands vary on the scale of t itself (>= 1e-3), so the relative quadrature error
      // is about (5e-5 / 1e-3)^2 / 24 = 1e-4, far below the Monte-Carlo error.
      const int cells = 20000;
      double m1 = 0, m2 = 0;
      for (int i = 0; i < cells; ++i) {
        const double t = c.lo + (c.hi - c.lo) * (i + 0.5) / cells;
        const ClosedForm f = c.formula(t);
        const double v = f.alpha * f.alpha * s * s + f.sigma2;
        const double wc = weight(w, f) * f.alpha * f.alpha * s * s / v;
        m1 += wc / cells;
        m2 += wc * wc / cells;
      }
      const auto [floor, se] = floor_and_stderr(m1, m2, d, n);
      auto o = noise_loss(schedule, w);
      o.t_min = c.t_min;
      o.t_max = c.t_max;
      auto gen_t = make_generator(9);
      const double loss =
          objective::score_matching_loss(exact, {x_0, x_1}, o, gen_t).loss.item<double>();
      const std::string what = c.spec + " " + objective::weighting_name(w);
      std::printf("[ measured ] %-18s loss %.6g floor %.6g (SE %.2g)\n", what.c_str(), loss, floor,
                  se);
      // The check has teeth: the standard error stays a few percent of the floor at most.
      EXPECT_LT(se, 0.02 * floor) << what;
      // 4.5 standard errors: every one of the fifteen cases passes with probability > 1 - 1e-5
      // under the CLT (the weights' tails are bounded on these ranges, see above).
      EXPECT_NEAR(loss, floor, 4.5 * se) << what;
    }
  }
}

namespace {

// Unnormalized time densities on (0, 1), written from the papers' definitions and not read from
// objective::TimeDensity: Esser et al. 2024's logit-normal (eq. 19) and CosMap (eq. 21), and
// EDM's ln sigma ~ N(m, s^2) with sigma = sigma_t / alpha_t on VP, where (closed form above)
// z = ln(sigma / alpha) = ln(e^B - 1) / 2 and dz/dt = beta e^B / (2 (e^B - 1)).
double logit_normal(double t, double m, double s) {
  const double x = (std::log(t / (1 - t)) - m) / s;
  return std::exp(-0.5 * x * x) / (s * t * (1 - t));
}
double cosmap(double t) { return 1.0 / ((1 - t) * (1 - t) + t * t); }
double vp_log_normal(double t, double m, double s) {
  const double b0 = 0.1, b1 = 20.0;
  const double big_b = b0 * t + 0.5 * (b1 - b0) * t * t, beta = b0 + t * (b1 - b0);
  const double z = 0.5 * std::log(std::expm1(big_b));
  const double dz = beta * std::exp(big_b) / (2 * std::expm1(big_b));
  const double x = (z - m) / s;
  return std::exp(-0.5 * x * x) / s * dz;
}

}  // namespace

// Drawing times from a density pi_s and weighting by a density pi_w moves the floor of the
// exact model to d * int pi_s(t) (hi - lo) pi_w(t) w(t) c_t dt (each density normalized on the
// range): the sampler, the weight and the EDM weighting checked against quadrature of the
// densities' definitions.
TEST(ObjectiveTest, ScoreMatchingLossUnderATimeDensityIsTheFloorUnderThatDensity) {
  const auto mu = torch::tensor({1.0, -2.0}, torch::kFloat64);
  const double s = 0.5, d = 2, lo = 1e-3, hi = 1.0;  // vp's conversion range
  const int64_t n = 1000000;
  auto gen = make_generator(6);
  auto x_0 = mu + s * torch::randn({n, 2}, gen, torch::kFloat64);
  auto x_1 = torch::randn({n, 2}, gen, torch::kFloat64);
  auto schedule = path::make_schedule("vp");
  ExactNoiseModel exact(schedule, mu, s);
  using Density = std::function<double(double)>;
  const Density one = [](double) { return 1.0; };
  struct Case {
    std::string sampling, weighting;
    Density sampled, weighted;
  };
  const Case cases[] = {
      {"logit-normal:m=0.5,s=0.8", "uniform", [](double t) { return logit_normal(t, 0.5, 0.8); },
       one},
      {"cosine", "uniform", cosmap, one},
      {"log-normal", "uniform", [](double t) { return vp_log_normal(t, -1.2, 1.2); }, one},
      {"uniform", "logit-normal", one, [](double t) { return logit_normal(t, 0, 1); }},
      {"cosine", "log-normal:m=0,s=2", cosmap, [](double t) { return vp_log_normal(t, 0, 2); }},
  };
  for (const auto& c : cases) {
    for (auto w : {objective::Weighting::sigma2, objective::Weighting::edm}) {
      // Midpoint rule, 200000 cells: the densities vary on the scale of t (>= 1e-3) as the
      // integrands of the test above, so the quadrature error is ~1e-6 relative.
      const int cells = 200000;
      const double h = (hi - lo) / cells;
      double mass_s = 0, mass_w = 0;
      for (int i = 0; i < cells; ++i) {
        const double t = lo + h * (i + 0.5);
        mass_s += c.sampled(t) * h;
        mass_w += c.weighted(t) * h;
      }
      double m1 = 0, m2 = 0;
      for (int i = 0; i < cells; ++i) {
        const double t = lo + h * (i + 0.5);
        const ClosedForm f = vp(t, false);
        const double v = f.alpha * f.alpha * s * s + f.sigma2;
        const double wc =
            (hi - lo) * c.weighted(t) / mass_w * weight(w, f) * f.alpha * f.alpha * s * s / v;
        const double p = c.sampled(t) / mass_s * h;
        m1 += p * wc;
        m2 += p * wc * wc;
      }
      const auto [floor, se] = floor_and_stderr(m1, m2, d, n);
      auto o = noise_loss(schedule, w);
      o.time_sampling = objective::TimeDensity::parse(c.sampling);
      o.time_weighting = objective::TimeDensity::parse(c.weighting);
      auto gen_t = make_generator(10);
      const double loss =
          objective::score_matching_loss(exact, {x_0, x_1}, o, gen_t).loss.item<double>();
      const std::string what =
          c.sampling + " / " + c.weighting + " / " + objective::weighting_name(w);
      std::printf("[ measured ] %-40s loss %.6g floor %.6g (SE %.2g)\n", what.c_str(), loss, floor,
                  se);
      // As above: the standard error is a few percent of the floor at most, and 4.5 standard
      // errors pass each of the ten cases with probability > 1 - 1e-5.
      EXPECT_LT(se, 0.02 * floor) << what;
      EXPECT_NEAR(loss, floor, 4.5 * se) << what;
    }
  }
}
