// Time densities of the simulation-free losses (objective/time_density.h): each density
// integrates to one on its truncated range, its distribution function is its integral, its
// draws follow that distribution function, and the families meet where the papers say they do
// (EDM's log-normal noise level on the straight path is the logit-normal; on VE it is ln sigma).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/objective/time_density.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

using namespace cnf;
using objective::TimeDensity;

namespace {

struct Case {
  std::string density, schedule;
  double lo, hi;
};

// Densities on every family's shapes: whole ranges (where the transformed coordinate runs to
// +-inf at an end) and truncated ones, on paths whose noise level z_t = ln(sigma_t / alpha_t)
// behaves differently (condot: logit t; vp: ~ ln t / 2 near 0; ve: linear in t).
std::vector<Case> cases() {
  return {{"uniform", "condot", 0.0, 1.0},      {"uniform", "vp", 1e-3, 1.0},
          {"logit-normal", "condot", 0.0, 1.0}, {"logit-normal:m=1,s=0.5", "condot", 0.1, 0.7},
          {"cosine", "condot", 0.0, 1.0},       {"cosine", "vp", 0.2, 0.9},
          {"log-normal", "condot", 0.0, 1.0},   {"log-normal", "vp", 1e-3, 1.0},
          {"log-normal", "ve", 0.0, 1.0},       {"log-normal:m=0,s=0.5", "cosine", 0.05, 0.95}};
}

// The midpoint rule on `cells` cells of [lo, hi] (float64).
torch::Tensor midpoints(double lo, double hi, int64_t cells) {
  return lo + (hi - lo) * (torch::arange(cells, torch::kFloat64) + 0.5) / cells;
}

}  // namespace

TEST(TimeDensityTest, EveryDensityIntegratesToOneAndItsDistributionFunctionIsItsIntegral) {
  for (const auto& c : cases()) {
    const auto d = TimeDensity::parse(c.density);
    auto schedule = path::make_schedule(c.schedule);
    const int64_t cells = 200000;
    auto t = midpoints(c.lo, c.hi, cells);
    auto f = d.density(t, c.lo, c.hi, *schedule);
    const double h = (c.hi - c.lo) / cells;
    const std::string what = c.density + " on " + c.schedule;
    // The densities are smooth on the open range with derivatives at most ~1/t^2 near an end
    // at 1e-3 (vp); the midpoint rule's error h^2/24 * int |f''| is then below 1e-6 at
    // h = 5e-6; a wrong normalization or Jacobian is off by far more.
    EXPECT_NEAR(f.sum().item<double>() * h, 1.0, 1e-6) << what;
    // F(t) - F(lo) over F(hi) - F(lo) equals the density's integral from lo (same rule).
    auto cumulative = torch::cumsum(f, 0) * h;
    auto ends = d.cdf(torch::tensor({c.lo, c.hi}, torch::kFloat64), *schedule);
    const double mass = (ends[1] - ends[0]).item<double>();
    for (int64_t k : {cells / 10, cells / 3, cells / 2, 4 * cells / 5}) {
      const double edge = c.lo + (c.hi - c.lo) * (k + 1.0) / cells;
      const double want =
          (d.cdf(torch::tensor({edge}, torch::kFloat64), *schedule)[0] - ends[0]).item<double>() /
          mass;
      EXPECT_NEAR(cumulative[k].item<double>(), want, 1e-6) << what << " at t = " << edge;
    }
  }
}

TEST(TimeDensityTest, DrawsFollowTheTruncatedDistributionFunction) {
  const int64_t n = 100000;
  for (const auto& c : cases()) {
    const auto d = TimeDensity::parse(c.density);
    auto schedule = path::make_schedule(c.schedule);
    auto gen = make_generator(3);
    auto t = std::get<0>(torch::sort(
        d.sample(n, c.lo, c.hi, *schedule, gen, torch::TensorOptions(torch::kFloat64))));
    const std::string what = c.density + " on " + c.schedule;
    EXPECT_GE(t[0].item<double>(), c.lo) << what;
    EXPECT_LE(t[n - 1].item<double>(), c.hi) << what;
    // Kolmogorov–Smirnov: the largest gap between the empirical and the truncated distribution
    // function. Under the null sqrt(n) D exceeds 1.95 with probability 0.001; a draw from a
    // wrong inverse (or an untruncated one) is off by far more at n = 1e5.
    auto ends = d.cdf(torch::tensor({c.lo, c.hi}, torch::kFloat64), *schedule);
    auto F = (d.cdf(t, *schedule) - ends[0]) / (ends[1] - ends[0]);
    auto rank = torch::arange(n, torch::kFloat64);
    const double gap = torch::max((rank + 1) / n - F, F - rank / n).max().item<double>();
    EXPECT_LT(std::sqrt(double(n)) * gap, 1.95) << what;
  }
}

TEST(TimeDensityTest, EdmsLogNormalIsTheLogitNormalOnTheStraightPathAndLnSigmaOnVe) {
  // condot (sigma_min = 0): ln(sigma_t / alpha_t) = ln(t / (1 - t)) = logit t, so the two
  // families are one distribution; their draws come from different inverses (sigmoid of the
  // normal quantile, safeguarded Newton on z_t) and agree to the Newton iteration's accuracy.
  auto condot = path::make_schedule("condot");
  const auto log_normal = TimeDensity::parse("log-normal:m=0.3,s=0.7");
  const auto logit_normal = TimeDensity::parse("logit-normal:m=0.3,s=0.7");
  auto t = torch::linspace(0.01, 0.99, 50, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(log_normal.density(t, 0, 1, *condot),
                              logit_normal.density(t, 0, 1, *condot), 1e-12, 0));
  auto g1 = make_generator(4), g2 = make_generator(4);
  const auto opt = torch::TensorOptions(torch::kFloat64);
  auto a = log_normal.sample(1000, 0, 1, *condot, g1, opt);
  auto b = logit_normal.sample(1000, 0, 1, *condot, g2, opt);
  // Newton on z_t converges quadratically from the table's bracket; 1e-10 leaves room for
  // the conditioning near the ends, where dt/dz = t (1 - t) is small anyway.
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-10);

  // VE with EDM's range: alpha = 1, so ln sigma_t itself is N(-1.2, 1.2^2), truncated to
  // [ln 0.002, ln 80] = 4.2 and 4.6 standard deviations out (a 1e-5 effect on the moments).
  auto ve = path::make_schedule("ve:sigma_min=0.002,sigma_max=80");
  auto gen = make_generator(5);
  const int64_t n = 200000;
  auto times = TimeDensity::parse("log-normal").sample(n, 0, 1, *ve, gen, opt);
  auto ln_sigma = (*ve)(times).sigma_t.log();
  // Standard errors 1.2 / sqrt(n) = 2.7e-3 for the mean and ~1.9e-3 for the std: 5 of each.
  EXPECT_NEAR(ln_sigma.mean().item<double>(), -1.2, 0.0135);
  EXPECT_NEAR(ln_sigma.std().item<double>(), 1.2, 0.0095);
}

TEST(TimeDensityTest, SpecsReadBackAndBadOnesNameWhatToFix) {
  EXPECT_EQ(TimeDensity::parse("logit-normal").describe(), "logit-normal");
  EXPECT_EQ(TimeDensity::parse("logit-normal:m=0,s=1").describe(), "logit-normal");
  EXPECT_EQ(TimeDensity::parse("logit-normal:s=0.5").describe(), "logit-normal:s=0.5");
  EXPECT_EQ(TimeDensity::parse("log-normal").m, -1.2);
  EXPECT_EQ(TimeDensity::parse("log-normal:m=-0.5").describe(), "log-normal:m=-0.5");
  EXPECT_TRUE(TimeDensity::parse("uniform").is_uniform());
  auto message = [](const std::string& spec) {
    try {
      TimeDensity::parse(spec);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("beta").find("logit-normal, cosine, log-normal"), std::string::npos);
  EXPECT_NE(message("logit-normal:s=-1").find("s must be > 0"), std::string::npos);
  EXPECT_NE(message("cosine:m=1").find("takes no parameters"), std::string::npos);
  EXPECT_NE(message("log-normal:mean=1").find("valid keys: m, s"), std::string::npos);
  // A density with no mass on the range can be neither normalized nor drawn from: an error,
  // not a NaN or a draw piled up at an end.
  auto condot = path::make_schedule("condot");
  auto far = TimeDensity::parse("logit-normal:m=60,s=0.1");
  EXPECT_THROW(far.density(torch::tensor({0.5}, torch::kFloat64), 0.1, 0.2, *condot), Error);
  auto gen = make_generator(1);
  EXPECT_THROW(far.sample(4, 0.1, 0.2, *condot, gen, torch::TensorOptions(torch::kFloat64)), Error);
}
