// Generic checks over every registered schedule, and the parameterization conversions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cctype>

#include "cnf/core/error.h"
#include "cnf/core/spec.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

using namespace cnf;

namespace {
torch::Tensor times(double lo, double hi, int n) {
  return torch::linspace(lo, hi, n, torch::kFloat64);
}
}  // namespace

class ScheduleTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScheduleTest, BoundaryValues) {
  auto s = path::make_schedule(GetParam());
  auto v0 = s->at_time(0.0);
  // alpha_0 = 1 exactly for every schedule (double arithmetic, formulas exact at 0).
  EXPECT_NEAR(v0.alpha_t.item<double>(), 1.0, 1e-12) << s->describe();
  // sigma_0 is 0 or a small sigma_min (VE: 0.01 by construction).
  EXPECT_LE(v0.sigma_t.item<double>(), 0.01 + 1e-12) << s->describe();
  auto v1 = s->at_time(1.0);
  if (path::schedule_name(GetParam()) == "ve") {
    EXPECT_NEAR(v1.alpha_t.item<double>(), 1.0, 1e-12);  // VE never shrinks the data
  } else {
    // VP/sub-VP reach alpha_1 = exp(-(0.1 + 9.95)/2) = 6.6e-3, not exactly 0.
    EXPECT_LT(v1.alpha_t.item<double>(), 7e-3) << s->describe();
    EXPECT_NEAR(v1.sigma_t.item<double>(), 1.0, 1e-4) << s->describe();
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
  const Param all[] = {Param::velocity, Param::score, Param::data, Param::noise};
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

TEST_P(ScheduleTest, SdeCoefficientsMatchMarginalVariance) {
  // d sigma^2/dt = 2 f sigma^2 + g^2 is the variance ODE of dx = f x dt + g dw.
  auto s = path::make_schedule(GetParam());
  auto t = times(std::max(0.05, s->t_min()), 0.95, 20);
  auto v = (*s)(t);
  auto c = path::sde_coefficients(*s, t);
  auto lhs = 2 * v.sigma_t * v.d_sigma_t;
  auto rhs = 2 * c.f * v.sigma_t.pow(2) + c.g.pow(2);
  EXPECT_TRUE(torch::allclose(lhs, rhs, 1e-9, 1e-9)) << s->describe();
  // and the mean ODE d alpha/dt = f alpha.
  EXPECT_TRUE(torch::allclose(v.d_alpha_t, c.f * v.alpha_t, 1e-9, 1e-9)) << s->describe();
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
