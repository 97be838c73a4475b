// Couplings against the plans they claim to sample: the pair frequencies of the entropic
// couplings (sinkhorn, sb) on a small fixed batch follow the entropic OT plan at their epsilon,
// and sb's epsilon is 2 sigma^2 (Tong et al. 2024, "Simulation-free Schrodinger bridges via
// score and flow matching", section 3).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "cnf/core/runtime.h"
#include "cnf/coupling/coupling.h"

using namespace cnf;

namespace {

// A 4 x 4 batch in 2-D with distinct x_1 rows and squared distances in [0.02, 1.06].
torch::Tensor batch_x0() {
  return torch::tensor({{0.0, 0.0}, {0.6, 0.0}, {0.0, 0.6}, {0.6, 0.6}}, torch::kFloat64);
}
torch::Tensor batch_x1() {
  return torch::tensor({{0.1, 0.2}, {0.7, -0.1}, {-0.2, 0.5}, {0.5, 0.9}}, torch::kFloat64);
}

// The entropic plan min <C, P> + eps KL(P | a b^T) with uniform marginals (Cuturi 2013), by
// plain Sinkhorn scalings P = diag(u) K diag(v), K = exp(-C / eps), written here so that it
// is an independent route from cnf::ot. Converged to 1e-14 in the row marginals.
torch::Tensor entropic_plan(const torch::Tensor& x_0, const torch::Tensor& x_1, double eps) {
  auto cost = (x_0.unsqueeze(1) - x_1.unsqueeze(0)).pow(2).sum(-1);
  auto k = torch::exp(-cost / eps);
  const int64_t n = x_0.size(0), m = x_1.size(0);
  auto a = torch::full({n}, 1.0 / n, torch::kFloat64),
       b = torch::full({m}, 1.0 / m, torch::kFloat64);
  auto u = torch::ones({n}, torch::kFloat64), v = torch::ones({m}, torch::kFloat64);
  for (int it = 0; it < 100000; ++it) {
    u = a / k.mv(v);
    v = b / k.t().mv(u);
    auto plan = u.unsqueeze(1) * k * v.unsqueeze(0);
    if ((plan.sum(1) - a).abs().sum().item<double>() < 1e-14) break;
  }
  return u.unsqueeze(1) * k * v.unsqueeze(0);
}

// counts[i][j]: how often row i of x_0 was paired with x_1[j] over `draws` calls.
torch::Tensor pair_counts(const coupling::Coupling& c, int64_t draws, uint64_t seed) {
  auto x_0 = batch_x0(), x_1 = batch_x1();
  auto gen = make_generator(seed);
  auto counts = torch::zeros({4, 4}, torch::kFloat64);
  for (int64_t k = 0; k < draws; ++k) {
    auto [p0, p1] = c.pair(x_0, x_1, gen);
    EXPECT_TRUE(torch::equal(p0, x_0));  // each x_0 keeps its place
    // Which x_1 row each partner is: the rows are distinct, so the nearest is exact.
    auto j = torch::cdist(p1, x_1).argmin(1);
    EXPECT_EQ(torch::cdist(p1, x_1).amin(1).max().item<double>(), 0.0);
    counts.index_put_({torch::arange(4), j}, counts.index({torch::arange(4), j}) + 1);
  }
  return counts;
}

// Pearson's statistic of the counts against rows drawn from P[i, :] / sum_j P[i, :]. Each row
// is an independent multinomial of `draws` trials over 4 cells (3 degrees of freedom), so the
// sum over the 4 rows is chi-square with 12 degrees of freedom asymptotically. Also returns
// the smallest expected count (the approximation wants every one >= 5).
std::pair<double, double> chi_square(const torch::Tensor& counts, const torch::Tensor& plan) {
  const double draws = counts.sum(1)[0].item<double>();
  auto expected = draws * plan / plan.sum(1, true);
  const double stat = ((counts - expected).pow(2) / expected).sum().item<double>();
  return {stat, expected.min().item<double>()};
}

// The 99.9% quantile of chi-square with 12 degrees of freedom (Abramowitz & Stegun, table
// 26.8): a correct coupling fails the check with probability 1e-3 (fixed seeds: never).
constexpr double kChi2Df12Q999 = 32.909;
constexpr int64_t kDraws = 4000;

}  // namespace

TEST(CouplingTest, SinkhornPairFrequenciesFollowTheEntropicPlan) {
  coupling::CouplingOptions o;
  o.epsilon = 0.3;
  o.tol = 1e-10;  // the plan to 1e-10: its bias on the counts is far below their noise
  auto c = coupling::make_coupling("sinkhorn", o);
  EXPECT_EQ(c->describe(), "sinkhorn:eps=0.3");
  auto counts = pair_counts(*c, kDraws, 1);
  auto [stat, min_expected] = chi_square(counts, entropic_plan(batch_x0(), batch_x1(), 0.3));
  std::printf("[ measured ] sinkhorn eps 0.3: chi-square %.2f (df 12), min expected count %.0f\n",
              stat, min_expected);
  EXPECT_GE(min_expected, 5.0);
  EXPECT_LT(stat, kChi2Df12Q999);
  // The check sees the epsilon: the same counts against the plan at 0.6 are rejected.
  auto [other, unused] = chi_square(counts, entropic_plan(batch_x0(), batch_x1(), 0.6));
  (void)unused;
  EXPECT_GT(other, kChi2Df12Q999) << "the statistic cannot tell eps 0.3 from 0.6";
}

TEST(CouplingTest, SchrodingerBridgePairsFollowTheEntropicPlanAtTwoSigmaSquared) {
  for (double sigma : {0.5, 0.35}) {
    coupling::CouplingOptions o;
    o.sigma = sigma;
    o.epsilon = 0.05;  // ignored by sb: its epsilon is 2 sigma^2
    o.tol = 1e-10;
    auto c = coupling::make_coupling("sb", o);
    EXPECT_DOUBLE_EQ(c->bridge_sigma(), sigma);
    auto counts = pair_counts(*c, kDraws, 2);
    const double eps = 2 * sigma * sigma;
    auto [stat, min_expected] = chi_square(counts, entropic_plan(batch_x0(), batch_x1(), eps));
    // What a wrong formula would give: sigma^2, (2 sigma)^2, and the sinkhorn epsilon left
    // in the options.
    double fewest = 1e300;
    for (double wrong : {sigma * sigma, 4 * sigma * sigma, o.epsilon}) {
      fewest =
          std::min(fewest, chi_square(counts, entropic_plan(batch_x0(), batch_x1(), wrong)).first);
    }
    std::printf(
        "[ measured ] sb sigma %.2f: chi-square %.2f at eps = 2 sigma^2, >= %.0f at the "
        "alternatives; min expected count %.0f\n",
        sigma, stat, fewest, min_expected);
    EXPECT_GE(min_expected, 5.0) << sigma;
    EXPECT_LT(stat, kChi2Df12Q999) << sigma;
    EXPECT_GT(fewest, kChi2Df12Q999) << sigma;
  }
}
