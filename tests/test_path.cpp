// Generic checks over every registered schedule, and the parameterization conversions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cctype>
#include <cmath>
#include <map>

#include "cnf/core/error.h"
#include "cnf/core/spec.h"
#include "cnf/ode/solve.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

using namespace cnf;

namespace {
torch::Tensor times(double lo, double hi, int n) {
  return torch::linspace(lo, hi, n, torch::kFloat64);
}

// A schedule's parameters by key, as its spec sets them (defaults for the keys it omits).
std::map<std::string, double> spec_params(const std::string& spec) {
  const auto text = split_spec(spec, "schedule");
  const auto& params = path::schedules().get(text.name).params;
  const auto values = spec_values(text, params, "schedule");
  std::map<std::string, double> out;
  for (size_t i = 0; i < params.size(); ++i) out[params[i].key] = values[i];
  return out;
}

// The published closed forms, written out here from the papers and not through the
// library: (alpha_t, sigma_t, d alpha_t/dt, d sigma_t/dt) at one time.
struct Published {
  double alpha, sigma, d_alpha, d_sigma;
};
Published published(const std::string& spec, double t) {
  const std::string name = path::schedule_name(spec);
  auto p = spec_params(spec);
  if (name == "condot") {
    // Lipman et al. 2023, eq. (20), mu_t = t x_1, sigma_t = 1 - (1 - sigma_min) t with data at
    // their t = 1; under t -> 1 - t: alpha = 1 - t, sigma = sigma_min + (1 - sigma_min) t.
    const double m = p["sigma_min"];
    return {1 - t, m + (1 - m) * t, -1, 1 - m};
  }
  if (name == "vp" || name == "subvp") {
    // Song et al., ICLR 2021, the perturbation kernels of the VP and sub-VP SDEs with
    // beta(t) = b0 + t (b1 - b0): mean exp(-1/4 t^2 (b1 - b0) - 1/2 t b0) x_0 for both;
    // variance 1 - exp(-1/2 t^2 (b1 - b0) - t b0) for VP, and for sub-VP (their eq. 34) the
    // square of that, i.e. standard deviation 1 - exp(-1/2 t^2 (b1 - b0) - t b0).
    const double b0 = p["beta_min"], b1 = p["beta_max"];
    const double alpha = std::exp(-0.25 * t * t * (b1 - b0) - 0.5 * t * b0);
    const double d_alpha = alpha * (-0.5 * t * (b1 - b0) - 0.5 * b0);
    const double e = std::exp(-0.5 * t * t * (b1 - b0) - t * b0);  // = alpha^2
    const double d_e = e * (-t * (b1 - b0) - b0);
    if (name == "vp") {
      const double sigma = std::sqrt(1 - e);
      return {alpha, sigma, d_alpha, -d_e / (2 * sigma)};
    }
    return {alpha, 1 - e, d_alpha, -d_e};
  }
  if (name == "ve") {
    // Song et al. 2021 (the VE SDE of SMLD): sigma(t) = sigma_min (sigma_max / sigma_min)^t,
    // x_t = x_0 + sigma(t) z.
    const double lo = p["sigma_min"], hi = p["sigma_max"];
    const double sigma = lo * std::pow(hi / lo, t);
    return {1, sigma, 0, sigma * std::log(hi / lo)};
  }
  if (name == "cosine") {
    // The trigonometric interpolant: alpha = cos(pi t / 2), sigma = sin(pi t / 2).
    const double h = std::acos(-1.0) / 2;
    return {std::cos(h * t), std::sin(h * t), -h * std::sin(h * t), h * std::cos(h * t)};
  }
  if (name == "cosine-abar") {
    // Nichol & Dhariwal 2021, eq. 17: alpha-bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s)
    // * pi / 2); alpha = sqrt(alpha-bar), sigma = sqrt(1 - alpha-bar), derivatives by the chain
    // rule from d alpha-bar / dt = f'(t) / f(0), f'(t) = -sin(2 u) pi / (2 (1 + s)).
    const double s = p["s"], pi = std::acos(-1.0);
    auto u = [&](double x) { return (x + s) / (1 + s) * pi / 2; };
    const double f0 = std::pow(std::cos(u(0)), 2);
    const double abar = std::pow(std::cos(u(t)), 2) / f0;
    const double d_abar = -std::sin(2 * u(t)) * pi / (2 * (1 + s)) / f0;
    const double alpha = std::sqrt(abar), sigma = std::sqrt(1 - abar);
    return {alpha, sigma, d_abar / (2 * alpha), sigma > 0 ? -d_abar / (2 * sigma) : 0.0};
  }
  if (name == "ddpm-linear" || name == "ddpm-scaled-linear") {
    // Ho et al. 2020 (linear betas) and Stable Diffusion's scaled-linear betas (their square
    // roots evenly spaced): alpha-bar_i = prod_{j <= i} (1 - beta_j), timestep i at t = i / N.
    // Published only at the training timesteps and without derivatives (NaN: not compared).
    const double b0 = p["beta_start"], b1 = p["beta_end"], n = p["steps"];
    const double nan = std::nan("");
    const double i = std::round(t * n);
    if (std::abs(t * n - i) > 1e-9) return {nan, nan, nan, nan};
    double abar = 1;
    for (int j = 1; j <= static_cast<int>(i); ++j) {
      const double f = (j - 1) / (n - 1);
      const double beta = name == "ddpm-linear"
                              ? b0 + f * (b1 - b0)
                              : std::pow(std::sqrt(b0) + f * (std::sqrt(b1) - std::sqrt(b0)), 2);
      abar *= 1 - beta;
    }
    return {std::sqrt(abar), std::sqrt(1 - abar), nan, nan};
  }
  if (name == "test_power") {
    // The test-only schedule of tests/test_registration.cpp: alpha = 1 - t^p, sigma = t.
    const double q = p["p"];
    return {1 - std::pow(t, q), t, -q * std::pow(t, q - 1), 1};
  }
  ADD_FAILURE() << "no published form written down for schedule '" << name << "'";
  return {0, 0, 0, 0};
}
}  // namespace

class ScheduleTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScheduleTest, BoundaryValues) {
  auto s = path::make_schedule(GetParam());
  auto v0 = s->at_time(0.0);
  // alpha_0 = 1 exactly for every schedule (double arithmetic, formulas exact at 0).
  EXPECT_NEAR(v0.alpha_t.item<double>(), 1.0, 1e-12) << s->describe();
  // sigma_0 is 0 or a small sigma_min (VE: 0.01 by construction), never negative.
  EXPECT_GE(v0.sigma_t.item<double>(), 0.0) << s->describe();
  EXPECT_LE(v0.sigma_t.item<double>(), 0.01 + 1e-12) << s->describe();
  auto v1 = s->at_time(1.0);
  const double alpha_1 = v1.alpha_t.item<double>(), sigma_1 = v1.sigma_t.item<double>();
  if (path::schedule_name(GetParam()) == "ve") {
    EXPECT_NEAR(alpha_1, 1.0, 1e-12);  // VE never shrinks the data
    EXPECT_NEAR(sigma_1, spec_params(GetParam())["sigma_max"], 1e-9);
  } else if (path::schedule_name(GetParam()) == "ddpm-scaled-linear") {
    // Stable Diffusion's betas end at alpha-bar_N = 0.0047 (alpha_1 = 0.068, sigma_1 =
    // 0.9977) with the defaults (0.015 with the raised parameters): the nonzero terminal SNR
    // of Lin et al. 2024, by design.
    EXPECT_GT(alpha_1, 0.01) << s->describe();
    EXPECT_LT(alpha_1, 0.07) << s->describe();
    EXPECT_NEAR(alpha_1 * alpha_1 + sigma_1 * sigma_1, 1.0, 1e-12) << s->describe();
  } else {
    // Two-sided: condot and cosine reach alpha_1 = 0 (cos(pi/2) = 6e-17 in float64); VP and
    // sub-VP reach exp(-(beta_min + beta_max)/4) = 6.6e-3 with the defaults (1.8e-3 for the
    // raised parameters), not exactly 0; no schedule may end on a negative coefficient.
    EXPECT_GE(alpha_1, 0.0) << s->describe();
    EXPECT_LT(alpha_1, 7e-3) << s->describe();
    // sigma_1 = 1 for condot and cosine; 1 - 2e-5 (VP: sqrt(1 - alpha^2)) or 1 - 4e-5
    // (sub-VP: 1 - alpha^2), from below: no schedule overshoots unit variance.
    EXPECT_LE(sigma_1, 1.0 + 1e-15) << s->describe();
    EXPECT_GE(sigma_1, 1.0 - 1e-4) << s->describe();
  }
}

TEST_P(ScheduleTest, MatchesPublishedClosedForm) {
  // alpha, sigma and their derivatives at interior times (and both ends) against the
  // published formulas written out independently above.
  auto s = path::make_schedule(GetParam());
  for (double t : {0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0}) {
    const auto v = s->at_time(t);
    const auto e = published(GetParam(), t);
    // Float64 evaluated in a different order (expm1 vs 1 - exp, t * log vs pow): agreement
    // to 1e-12 relative; 1e-13 absolute for the values that vanish (sigma_0, alpha_1).
    auto near = [&](double got, double want, const char* what) {
      EXPECT_NEAR(got, want, 1e-12 * std::abs(want) + 1e-13)
          << s->describe() << " " << what << " at t = " << t;
    };
    // NaN: nothing published there (the discrete schedules between their timesteps, and
    // their derivatives, which DerivativesMatchFiniteDifferences checks).
    if (!std::isnan(e.alpha)) near(v.alpha_t.item<double>(), e.alpha, "alpha");
    if (!std::isnan(e.sigma)) near(v.sigma_t.item<double>(), e.sigma, "sigma");
    if (!std::isnan(e.d_alpha)) near(v.d_alpha_t.item<double>(), e.d_alpha, "d_alpha");
    // VP's d sigma = -alpha d_alpha / sigma divides by sigma_0 = 0 at t = 0: skip that one.
    if (e.sigma > 0 && !std::isnan(e.d_sigma))
      near(v.d_sigma_t.item<double>(), e.d_sigma, "d_sigma");
  }
}

TEST_P(ScheduleTest, DerivativesMatchFiniteDifferences) {
  auto s = path::make_schedule(GetParam());
  const double h = 1e-6;
  auto t = times(std::max(0.02, s->t_min()), 0.98, 25);
  auto v = (*s)(t);
  auto vp = (*s)(t + h), vm = (*s)(t - h);
  // Central differences in float64: truncation O(h^2 f''') ~ 1e-10, round-off ~ 1e-16/h ~ 1e-10,
  // relative to derivatives up to ~|d sigma| ~ 10 for VE; 1e-6 relative is ample.
  auto fd_alpha = (vp.alpha_t - vm.alpha_t) / (2 * h);
  auto fd_sigma = (vp.sigma_t - vm.sigma_t) / (2 * h);
  EXPECT_TRUE(torch::allclose(fd_alpha, v.d_alpha_t, 1e-6, 1e-7)) << s->describe();
  EXPECT_TRUE(torch::allclose(fd_sigma, v.d_sigma_t, 1e-6, 1e-7)) << s->describe();
}

TEST_P(ScheduleTest, SnrIsMonotoneAndRoundTrips) {
  auto s = path::make_schedule(GetParam());
  auto t = times(std::max(0.01, s->t_min()), 0.99, 50);
  auto lam = path::log_snr(*s, t);
  // The path must move from signal to noise: lambda strictly decreasing.
  EXPECT_TRUE((lam.slice(0, 1) < lam.slice(0, 0, -1)).all().item<bool>()) << s->describe();
  // Round trip: alpha^2 / sigma^2 == exp(2 lambda) (float64: 1e-10 relative).
  auto v = (*s)(t);
  EXPECT_TRUE(torch::allclose(torch::exp(2 * lam), v.alpha_t.pow(2) / v.sigma_t.pow(2), 1e-10));
}

TEST_P(ScheduleTest, ConversionsRoundTrip) {
  auto s = path::make_schedule(GetParam());
  torch::manual_seed(0);
  auto t = times(std::max(0.05, s->t_min()), 0.95, 16);
  auto x0 = torch::randn({16, 3}, torch::kFloat64), x1 = torch::randn({16, 3}, torch::kFloat64);
  auto ps = path::sample_path(*s, x0, x1, t);
  using path::Param;
  const Param all[] = {Param::velocity, Param::score, Param::data, Param::noise, Param::v};
  // From the true x_0 every parameterization must reproduce the true x_1 and u_t.
  for (Param to : all) {
    auto pred = path::convert(*s, x0, Param::data, to, ps.x_t, t);
    for (Param back : all) {
      auto again = path::convert(*s, pred, to, back, ps.x_t, t);
      auto expect = path::convert(*s, x0, Param::data, back, ps.x_t, t);
      // Float64 linear algebra on O(1..100) coefficients: 1e-8 absolute.
      EXPECT_TRUE(torch::allclose(again, expect, 1e-8, 1e-8))
          << s->describe() << " " << path::param_name(to) << " -> " << path::param_name(back);
    }
  }
  auto v = path::convert(*s, x0, Param::data, Param::velocity, ps.x_t, t);
  EXPECT_TRUE(torch::allclose(v, ps.dx_t, 1e-8, 1e-8)) << s->describe();
  auto n = path::convert(*s, x0, Param::data, Param::noise, ps.x_t, t);
  EXPECT_TRUE(torch::allclose(n, x1, 1e-8, 1e-8)) << s->describe();
}

TEST_P(ScheduleTest, SdeCoefficientsMatchPublishedForms) {
  // The forward SDEs dx = f x dt + g dw of Song et al., ICLR 2021, with a linear
  // beta(t) = b0 + t (b1 - b0): VP f = -1/2 beta(t), g^2 = beta(t); sub-VP f = -1/2 beta(t),
  // g^2 = beta(t) (1 - exp(-2 int_0^t beta)); VE f = 0, g^2 = d sigma(t)^2 / dt
  // = 2 log(sigma_max / sigma_min) sigma(t)^2. condot and cosine have no published SDE and
  // are covered by the moment equations below.
  const std::string name = path::schedule_name(GetParam());
  auto s = path::make_schedule(GetParam());
  auto p = spec_params(GetParam());
  for (double t : {0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0}) {
    double f = 0, g2 = 0;
    if (name == "vp" || name == "subvp") {
      const double b0 = p["beta_min"], b1 = p["beta_max"];
      const double beta = b0 + t * (b1 - b0), integral = b0 * t + 0.5 * (b1 - b0) * t * t;
      f = -0.5 * beta;
      g2 = name == "vp" ? beta : beta * (1 - std::exp(-2 * integral));
    } else if (name == "ve") {
      const double lo = p["sigma_min"], hi = p["sigma_max"];
      const double sigma = lo * std::pow(hi / lo, t);
      g2 = 2 * std::log(hi / lo) * sigma * sigma;
    } else {
      return;
    }
    auto c = path::sde_coefficients(*s, torch::full({}, t, torch::kFloat64));
    // Float64 through different algebra (d log alpha, 2 sigma d_sigma - 2 f sigma^2 with
    // cancellation near t = 0 for sub-VP, whose g^2 ~ 2 beta^2 t there): 1e-9 relative.
    EXPECT_NEAR(c.f.item<double>(), f, 1e-9 * std::abs(f) + 1e-12) << GetParam() << " t=" << t;
    EXPECT_NEAR(c.g.item<double>() * c.g.item<double>(), g2, 1e-9 * g2 + 1e-12)
        << GetParam() << " t=" << t;
  }
}

TEST_P(ScheduleTest, SdeCoefficientsReproduceTheMarginalByIntegration) {
  // Started at t0 from x_0 ~ N(alpha_t0 m, sigma_t0^2), the linear SDE dx = f x dt + g dw has
  // mean M and variance V with M' = f M and V' = 2 f V + g^2 (the moment equations of a
  // linear SDE; Sarkka & Solin, Applied Stochastic Differential Equations, 2019). Integrating
  // them with the library's f and g (dopri5 at rtol = atol = 1e-12) must land on the
  // schedule's alpha_t1 m and sigma_t1^2: a wrong f or g shows up here without re-deriving
  // either.
  auto s = path::make_schedule(GetParam());
  const double t0 = s->t_min(), t1 = 0.95;
  auto rhs = [&](double t, const ode::State& y) {
    auto c = path::sde_coefficients(*s, torch::full({1}, t, torch::kFloat64));
    return ode::State{c.f * y[0], 2 * c.f * y[1] + c.g * c.g};
  };
  const auto v0 = s->at_time(t0), v1 = s->at_time(t1);
  ode::SolveOptions o;
  o.method = "dopri5";
  o.adaptive.rtol = o.adaptive.atol = 1e-12;
  auto sol = ode::solve(rhs, {v0.alpha_t.reshape({1}), v0.sigma_t.pow(2).reshape({1})}, t0, t1, o);
  // Local errors of 1e-12 relative over a few hundred steps: ~1e-10 relative at t1 (alpha_t1
  // is as small as 3.4e-3 on vp:beta_max=25, still far above atol); 1e-8 leaves room, while
  // g^2 off by 1% moves sigma_t1^2 by ~1e-3.
  EXPECT_NEAR(sol.y[0].item<double>(), v1.alpha_t.item<double>(), 1e-8 * v1.alpha_t.item<double>())
      << s->describe();
  EXPECT_NEAR(sol.y[1].item<double>(), v1.sigma_t.pow(2).item<double>(),
              1e-8 * v1.sigma_t.pow(2).item<double>())
      << s->describe();
}

namespace {
// Every registered schedule with its defaults, and each one that has parameters once more
// with all of them set away from the defaults (within the ranges the checks above assume:
// sigma_0 <= 0.01, alpha_1 < 7e-3 off VE).
std::vector<std::string> schedule_specs() {
  std::vector<std::string> specs = path::schedules().names();
  for (const auto& [name, kind] : path::schedules().entries()) {
    if (kind.params.empty()) continue;
    std::string spec = name + ":";
    for (size_t i = 0; i < kind.params.size(); ++i) {
      const auto& p = kind.params[i];
      // condot/ve sigma_min: halved (0 -> 0.005); beta_min doubled, beta_max and
      // sigma_max raised by a quarter.
      const double v = p.fallback == 0.0      ? 0.005
                       : p.key == "sigma_min" ? p.fallback / 2
                       : p.key == "beta_min"  ? 2 * p.fallback
                                              : 1.25 * p.fallback;
      spec += (i ? "," : "") + p.key + "=" + shortest_number(v);
    }
    specs.push_back(spec);
  }
  return specs;
}
std::string test_name(const std::string& spec) {
  std::string s;
  for (char c : spec) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}
}  // namespace

INSTANTIATE_TEST_SUITE_P(AllSchedules, ScheduleTest, ::testing::ValuesIn(schedule_specs()),
                         [](const auto& info) { return test_name(info.param); });

// Spec text round-trips: a schedule built from a spec describes itself by the canonical
// spec, which builds an equal schedule (same coefficients); defaults give the bare name.
TEST(ScheduleSpec, CanonicalTextRoundTrips) {
  for (const auto& spec : schedule_specs()) {
    auto s = path::make_schedule(spec);
    EXPECT_EQ(path::make_schedule(s->describe())->describe(), s->describe()) << spec;
    auto t = times(std::max(0.01, s->t_min()), 1.0, 11);
    auto a = (*s)(t), b = (*path::make_schedule(s->describe()))(t);
    EXPECT_TRUE(torch::equal(a.sigma_t, b.sigma_t) && torch::equal(a.alpha_t, b.alpha_t)) << spec;
  }
  for (const auto& name : path::schedules().names())
    EXPECT_EQ(path::make_schedule(name)->describe(), name);  // what checkpoints store
  EXPECT_EQ(path::make_schedule("vp:beta_max=20,beta_min=0.1")->describe(), "vp");
  EXPECT_EQ(path::make_schedule("vp:beta_max=10")->describe(), "vp:beta_max=10");
  // condot's --sigma-min (kept apart in checkpoints) is the same parameter.
  EXPECT_EQ(path::make_schedule("condot", 0.1)->describe(), "condot:sigma_min=0.1");
  EXPECT_EQ(path::make_schedule("condot:sigma_min=0.2", 0.0)->describe(), "condot:sigma_min=0.2");
  EXPECT_THROW(path::make_schedule("condot:sigma_min=0.2", 0.1), Error);  // given twice
  // The parameters reach the schedule: VE's sigma_1 is its sigma_max.
  EXPECT_NEAR(path::make_schedule("ve:sigma_max=50")->sigma_1(), 50.0, 1e-9);
}

TEST(ScheduleSpec, BadSpecsSayWhatIsWrong) {
  auto message = [](const std::string& spec) {
    try {
      path::make_schedule(spec);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("vp:beta=3").find("valid keys: beta_min, beta_max"), std::string::npos);
  EXPECT_NE(message("vp:beta_max=lots").find("beta_max=lots is not a finite number"),
            std::string::npos);
  EXPECT_NE(message("vp:beta_max").find("is not key=value"), std::string::npos);
  EXPECT_NE(message("vp:beta_max=3,beta_max=4").find("twice"), std::string::npos);
  EXPECT_NE(message("cosine:k=1").find("takes no parameters"), std::string::npos);
  EXPECT_NE(message("vq:beta_max=3").find("valid names: condot, vp"), std::string::npos);
  // The constructors' own range checks still apply.
  EXPECT_NE(message("ve:sigma_min=5,sigma_max=1").find("0 < sigma_min < sigma_max"),
            std::string::npos);
}

TEST(PathTest, CondOTTargetIsDifference) {
  // On the OT path with sigma_min = 0, u_t = x_1 - x_0 for every t.
  path::CondOT s(0.0);
  auto x0 = torch::randn({32, 2}, torch::kFloat64), x1 = torch::randn({32, 2}, torch::kFloat64);
  auto t = torch::rand({32}, torch::kFloat64);
  auto ps = path::sample_path(s, x0, x1, t);
  EXPECT_TRUE(torch::allclose(ps.dx_t, x1 - x0, 0, 1e-14));  // exact up to rounding
  auto tt = t.unsqueeze(1);
  EXPECT_TRUE(torch::allclose(ps.x_t, (1 - tt) * x0 + tt * x1, 0, 1e-14));
}

TEST(PathTest, VPredictionIsSalimansHoAndEdmPreconditioning) {
  // On VP (alpha^2 + sigma^2 = 1) v = alpha x_1 - sigma x_0 (Salimans & Ho 2022, sec. 4); on
  // VE (alpha = 1) EDM's preconditioning with sigma_data = 1 (Karras et al. 2022, table 1:
  // c_skip = 1/(sigma^2 + 1), c_out = sigma / sqrt(sigma^2 + 1)) trains F = (x_0 - c_skip x)
  // / c_out, which is -v. Float64 arithmetic on O(1..10) numbers: 1e-12.
  using path::Param;
  auto x0 = torch::randn({64, 3}, torch::kFloat64), x1 = torch::randn({64, 3}, torch::kFloat64);
  auto t = 0.02 + 0.96 * torch::rand({64}, torch::kFloat64);
  auto col = [](const torch::Tensor& a) { return a.unsqueeze(1); };
  auto vp = path::make_schedule("vp");
  auto pv = path::sample_path(*vp, x0, x1, t);
  auto sv = (*vp)(t);
  auto v = path::convert(*vp, x0, Param::data, Param::v, pv.x_t, t);
  EXPECT_TRUE(torch::allclose(v, col(sv.alpha_t) * x1 - col(sv.sigma_t) * x0, 1e-12, 1e-12));
  auto ve = path::make_schedule("ve");
  auto pe = path::sample_path(*ve, x0, x1, t);
  auto sigma = col((*ve)(t).sigma_t);
  auto c_skip = 1 / (sigma * sigma + 1), c_out = sigma / torch::sqrt(sigma * sigma + 1);
  auto f = (x0 - c_skip * pe.x_t) / c_out;
  auto v_ve = path::convert(*ve, x1, Param::noise, Param::v, pe.x_t, t);
  EXPECT_TRUE(torch::allclose(v_ve, -f, 1e-12, 1e-12));
  // And back: the data and noise read from v are the true ones.
  EXPECT_TRUE(torch::allclose(path::convert(*ve, v_ve, Param::v, Param::data, pe.x_t, t), x0, 1e-12,
                              1e-12));
  EXPECT_EQ(path::parse_param("v"), Param::v);
}

TEST(PathTest, CondOTSigmaMin) {
  path::CondOT s(0.1);
  EXPECT_NEAR(s.at_time(0.0).sigma_t.item<double>(), 0.1, 1e-15);
  EXPECT_NEAR(s.at_time(1.0).sigma_t.item<double>(), 1.0, 1e-15);
  EXPECT_THROW(path::CondOT(1.5), Error);
}

TEST(PathTest, UnknownNamesListValidOnes) {
  try {
    path::make_schedule("vpp");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("condot, vp, subvp, ve, cosine"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(path::parse_param("eps"), Error);
  EXPECT_THROW(path::VP(-1.0, 20.0), Error);
}

// Numbers in spec text: the shortest decimal that reads back exactly, plain for ordinary
// magnitudes.
TEST(ScheduleSpec, NumbersAreShortAndExact) {
  EXPECT_EQ(shortest_number(10.0), "10");
  EXPECT_EQ(shortest_number(20.0), "20");
  EXPECT_EQ(shortest_number(0.1), "0.1");
  EXPECT_EQ(shortest_number(12.5), "12.5");
  EXPECT_EQ(shortest_number(1e-05), "1e-05");
  EXPECT_EQ(shortest_number(-2.5e20), "-2.5e+20");
  for (double v : {0.1, 1.0 / 3.0, 20.0, 1e-5, 123456.789, 0.005, 1e300})
    EXPECT_EQ(std::strtod(shortest_number(v).c_str(), nullptr), v) << v;
}
