// Generic checks over every registered schedule, and the parameterization conversions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cnf/core/error.h"
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
  auto s = path::schedules().get(GetParam())();
  auto v0 = s->at_time(0.0);
  // alpha_0 = 1 exactly for every schedule (double arithmetic, formulas exact at 0).
  EXPECT_NEAR(v0.alpha_t.item<double>(), 1.0, 1e-12) << s->describe();
  // sigma_0 is 0 or a small sigma_min (VE: 0.01 by construction).
  EXPECT_LE(v0.sigma_t.item<double>(), 0.01 + 1e-12) << s->describe();
  auto v1 = s->at_time(1.0);
  if (GetParam() == "ve") {
    EXPECT_NEAR(v1.alpha_t.item<double>(), 1.0, 1e-12);  // VE never shrinks the data
  } else {
    // VP/sub-VP reach alpha_1 = exp(-(0.1 + 9.95)/2) = 6.6e-3, not exactly 0.
    EXPECT_LT(v1.alpha_t.item<double>(), 7e-3) << s->describe();
    EXPECT_NEAR(v1.sigma_t.item<double>(), 1.0, 1e-4) << s->describe();
  }
}

TEST_P(ScheduleTest, DerivativesMatchFiniteDifferences) {
  auto s = path::schedules().get(GetParam())();
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
  auto s = path::schedules().get(GetParam())();
  auto t = times(std::max(0.01, s->t_min()), 0.99, 50);
  auto lam = path::log_snr(*s, t);
  // The path must move from signal to noise: lambda strictly decreasing.
  EXPECT_TRUE((lam.slice(0, 1) < lam.slice(0, 0, -1)).all().item<bool>()) << s->describe();
  // Round trip: alpha^2 / sigma^2 == exp(2 lambda) (float64: 1e-10 relative).
  auto v = (*s)(t);
  EXPECT_TRUE(torch::allclose(torch::exp(2 * lam), v.alpha_t.pow(2) / v.sigma_t.pow(2), 1e-10));
}

TEST_P(ScheduleTest, ConversionsRoundTrip) {
  auto s = path::schedules().get(GetParam())();
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
  auto s = path::schedules().get(GetParam())();
  auto t = times(std::max(0.05, s->t_min()), 0.95, 20);
  auto v = (*s)(t);
  auto c = path::sde_coefficients(*s, t);
  auto lhs = 2 * v.sigma_t * v.d_sigma_t;
  auto rhs = 2 * c.f * v.sigma_t.pow(2) + c.g.pow(2);
  EXPECT_TRUE(torch::allclose(lhs, rhs, 1e-9, 1e-9)) << s->describe();
  // and the mean ODE d alpha/dt = f alpha.
  EXPECT_TRUE(torch::allclose(v.d_alpha_t, c.f * v.alpha_t, 1e-9, 1e-9)) << s->describe();
}

INSTANTIATE_TEST_SUITE_P(AllSchedules, ScheduleTest,
                         ::testing::ValuesIn(path::schedules().names()),
                         [](const auto& info) { return info.param; });

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
