// Tests of exact OT (cnf/ot/emd.h) and sample distances (cnf/metrics/distances.h).
// Everything runs in float64; each tolerance says where its size comes from.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/metrics/distances.h"
#include "cnf/ot/emd.h"

namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = cnf::make_generator(seed);
  return torch::randn(shape, gen, kF64);
}

// Runs `fn` and checks it throws cnf::Error whose message contains `key`.
void expect_error(const std::function<void()>& fn, const std::string& key) {
  try {
    fn();
  } catch (const cnf::Error& e) {
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos)
        << "message '" << e.what() << "' lacks '" << key << "'";
    return;
  }
  ADD_FAILURE() << "expected cnf::Error mentioning '" << key << "'";
}

// Smallest mean cost over all assignments of n points to n points (n! permutations).
double brute_force_assignment(const at::Tensor& cost) {
  const int64_t n = cost.size(0);
  const auto c = cost.accessor<double, 2>();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  double best = INFINITY;
  do {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += c[i][perm[i]];
    best = std::min(best, total / static_cast<double>(n));
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

// Square root of a 2x2 symmetric PSD matrix by the Cayley-Hamilton identity
// sqrt(M) = (M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M)): a route independent of the
// eigendecomposition used by the library.
at::Tensor sqrtm_2x2(const at::Tensor& m) {
  const double s = std::sqrt(torch::det(m).item<double>());
  const double t = std::sqrt(m.trace().item<double>() + 2 * s);
  return (m + s * torch::eye(2, kF64)) / t;
}

// A fixed pair of non-commuting 2-D Gaussians.
struct GaussianPair {
  at::Tensor mu1 = torch::tensor({0.5, -1.0}, kF64);
  at::Tensor mu2 = torch::tensor({-0.3, 2.0}, kF64);
  at::Tensor cov1 = torch::tensor({{2.0, 0.6}, {0.6, 0.5}}, kF64);
  at::Tensor cov2 = torch::tensor({{1.0, -0.4}, {-0.4, 3.0}}, kF64);
  // Linear OT map x -> mu2 + A (x - mu1), A = S1^-1/2 (S1^1/2 S2 S1^1/2)^1/2 S1^-1/2
  // (Knott & Smith 1984), symmetric positive definite.
  at::Tensor map_matrix() const {
    const at::Tensor r1 = sqrtm_2x2(cov1);
    const at::Tensor r1_inv = torch::inverse(r1);
    const at::Tensor mid = sqrtm_2x2(torch::matmul(torch::matmul(r1, cov2), r1));
    return torch::matmul(torch::matmul(r1_inv, mid), r1_inv);
  }
  // Samples of N(mu1, cov1) by a Cholesky factor.
  at::Tensor sample1(int64_t n, uint64_t seed) const {
    const at::Tensor l = torch::linalg_cholesky(cov1);
    return mu1 + torch::matmul(randn({n, 2}, seed), l.t());
  }
};

}  // namespace

// ----------------------------------------------------------------------------- OT

TEST(OtTest, ParseCostAcceptsValidNamesAndListsThemOnError) {
  EXPECT_EQ(cnf::ot::parse_cost("sqeuclidean"), cnf::ot::Cost::sqeuclidean);
  EXPECT_EQ(cnf::ot::parse_cost("euclidean"), cnf::ot::Cost::euclidean);
  expect_error([] { cnf::ot::parse_cost("manhattan"); }, "manhattan");
  expect_error([] { cnf::ot::parse_cost("manhattan"); }, "sqeuclidean, euclidean");
}

TEST(OtTest, CostMatrixMatchesDirectDifferences) {
  const at::Tensor x = randn({7, 3}, 1) + 5.0;  // offset: the centering must absorb it
  const at::Tensor y = randn({5, 3}, 2);
  const at::Tensor direct = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1);
  const at::Tensor sq = cnf::ot::cost_matrix(x, y, cnf::ot::Cost::sqeuclidean);
  const at::Tensor eu = cnf::ot::cost_matrix(x, y, cnf::ot::Cost::euclidean);
  ASSERT_EQ(sq.sizes(), (std::vector<int64_t>{7, 5}));
  EXPECT_EQ(sq.scalar_type(), torch::kFloat64);
  // Entries are O(30); the expanded form loses a few ulps of the centered norms (~10).
  EXPECT_LT((sq - direct).abs().max().item<double>(), 1e-12);
  EXPECT_LT((eu - direct.sqrt()).abs().max().item<double>(), 1e-12);
  // float32 input still gives a float64 matrix.
  EXPECT_EQ(
      cnf::ot::cost_matrix(x.to(torch::kFloat32), y, cnf::ot::Cost::sqeuclidean).scalar_type(),
      torch::kFloat64);
}

TEST(OtTest, OneDimensionalPlanIsSortedMatching) {
  // In 1-D every convex cost is minimized by matching order statistics, so W2^2 and W1
  // are the mean squared / absolute differences of the sorted samples.
  const int64_t n = 60;
  const at::Tensor x = 3.0 * randn({n, 1}, 3) + 1.0;
  const at::Tensor y = randn({n, 1}, 4);
  const at::Tensor xs = std::get<0>(x.view(-1).sort());
  const at::Tensor ys = std::get<0>(y.view(-1).sort());
  const double w2sq_sorted = (xs - ys).pow(2).mean().item<double>();
  const double w1_sorted = (xs - ys).abs().mean().item<double>();

  const cnf::ot::EmdResult r = cnf::ot::emd(x, y);
  // Same sums in a different order with O(10) entries: rounding ~1e-15 relative.
  EXPECT_NEAR(r.cost, w2sq_sorted, 1e-12 * w2sq_sorted);
  EXPECT_NEAR(cnf::metrics::w2(x, y), std::sqrt(w2sq_sorted), 1e-12);
  EXPECT_NEAR(cnf::metrics::w1(x, y), w1_sorted, 1e-12);

  // Samples of a continuous law have no ties, so the optimal map is rank to rank.
  const at::Tensor rank_x = x.view(-1).argsort().argsort();
  const at::Tensor rank_y = y.view(-1).argsort().argsort();
  const at::Tensor mapped_rank = rank_y.index({r.assignment});
  EXPECT_TRUE(torch::equal(mapped_rank, rank_x));
}

TEST(OtTest, TranslationIsTransportedByIdentity) {
  // For y_i = x_i + s, sum_i ||x_i - y_sigma(i)||^2 = sum_i ||x_i - x_sigma(i)||^2 + n|s|^2
  // (the cross term sums s against sum_i x_i - x_sigma(i) = 0), so the identity is the
  // unique optimal assignment for any shift, however large, and W2 = |s|. W1 >= |mean
  // shift| = |s| by Jensen and the identity attains it, so W1 = |s| too.
  const at::Tensor x = randn({50, 2}, 5);
  const at::Tensor shift = torch::tensor({0.7, -1.3}, kF64);
  const at::Tensor y = x + shift;
  const double norm = shift.norm().item<double>();

  const cnf::ot::EmdResult r = cnf::ot::emd(x, y);
  EXPECT_TRUE(torch::equal(r.assignment, torch::arange(50, torch::kInt64)));
  // The plan is 1/n on the diagonal exactly (integer flow n divided by n^2).
  EXPECT_TRUE(torch::equal(r.plan, torch::eye(50, kF64) / 50.0));
  // Costs ~2 computed by the expanded square: a few ulps of O(10) norms.
  EXPECT_NEAR(cnf::metrics::w2(x, y), norm, 1e-12);
  EXPECT_NEAR(cnf::metrics::w1(x, y), norm, 1e-12);
}

TEST(OtTest, DegenerateTiedCostsTerminate) {
  // A lattice against its unit translate has a great many tied optimal plans (every
  // Euclidean plan that moves mass only along +x costs 1). With floating-point costs the
  // network simplex saw round-off-negative reduced costs there and never stopped; the
  // integer costs must finish and still give W1 = W2 = 1 (translation, see above).
  const at::Tensor axis = torch::arange(6, kF64);
  const auto grid = torch::meshgrid({axis, axis}, "ij");
  const at::Tensor x = torch::stack({grid[0].reshape(-1), grid[1].reshape(-1)}, 1);
  const at::Tensor y = x + torch::tensor({1.0, 0.0}, kF64);
  // Costs are small integers; the only error is the 2^-56-relative cost rounding.
  EXPECT_NEAR(cnf::metrics::w1(x, y), 1.0, 1e-12);
  EXPECT_NEAR(cnf::metrics::w2(x, y), 1.0, 1e-12);
}

TEST(OtTest, AssignmentMatchesBruteForce) {
  // 7! = 5040 permutations: an exhaustive search is the independent route.
  const at::Tensor x = randn({7, 3}, 6);
  const at::Tensor y = randn({7, 3}, 7) * 2.0;
  for (auto cost : {cnf::ot::Cost::sqeuclidean, cnf::ot::Cost::euclidean}) {
    const at::Tensor c = cnf::ot::cost_matrix(x, y, cost);
    const cnf::ot::EmdResult r = cnf::ot::emd(x, y, cost);
    const double best = brute_force_assignment(c);
    // Both sum seven O(10) costs in double: 1e-12 is ~100 ulps.
    EXPECT_NEAR(r.cost, best, 1e-12);
    // The returned permutation achieves the returned cost.
    const double perm_cost = c.gather(1, r.assignment.unsqueeze(1)).mean().item<double>();
    EXPECT_NEAR(perm_cost, r.cost, 1e-12);
    EXPECT_TRUE(torch::equal(std::get<0>(r.assignment.sort()), torch::arange(7, torch::kInt64)));
  }
}

TEST(OtTest, UnequalSizesSatisfyMarginals) {
  const int64_t n = 7, m = 5;
  const at::Tensor x = randn({n, 2}, 8);
  const at::Tensor y = randn({m, 2}, 9) + 0.5;
  const cnf::ot::EmdResult r = cnf::ot::emd(x, y);
  ASSERT_EQ(r.plan.sizes(), (std::vector<int64_t>{n, m}));
  EXPECT_FALSE(r.assignment.defined());
  EXPECT_GE(r.plan.min().item<double>(), 0.0);
  // Entries are integers / 35 summed over at most 7 terms: a few ulps of 1/5.
  EXPECT_LT((r.plan.sum(1) - 1.0 / n).abs().max().item<double>(), 1e-15);
  EXPECT_LT((r.plan.sum(0) - 1.0 / m).abs().max().item<double>(), 1e-15);
  const at::Tensor c = cnf::ot::cost_matrix(x, y, cnf::ot::Cost::sqeuclidean);
  EXPECT_NEAR((r.plan * c).sum().item<double>(), r.cost, 1e-13);  // 35 O(1) products
}

TEST(OtTest, UnequalSizesMatchDuplicatedAssignment) {
  // Uniform mass 1/3 on each y_j equals mass 1/6 on two copies of it, so OT from 6 points
  // to 3 is an assignment problem from 6 points to the doubled set: brute-force it.
  const at::Tensor x = randn({6, 2}, 10);
  const at::Tensor y = randn({3, 2}, 11);
  const at::Tensor yy = torch::cat({y, y}, 0);
  const double best =
      brute_force_assignment(cnf::ot::cost_matrix(x, yy, cnf::ot::Cost::sqeuclidean));
  EXPECT_NEAR(cnf::ot::emd(x, y).cost, best, 1e-12);  // sums of six O(10) costs
  EXPECT_NEAR(cnf::ot::emd(x, yy).cost, best, 1e-12);
}

TEST(OtTest, WeightedTwoByTwoHasKnownPlan) {
  // a = (0.3, 0.7), b = (0.6, 0.4), C = [[0, 1], [1, 0]]: keep as much mass in place as
  // the marginals allow (0.3 and 0.4); the remaining 0.3 moves from 2 to 1 at cost 1.
  const at::Tensor a = torch::tensor({0.3, 0.7}, kF64);
  const at::Tensor b = torch::tensor({0.6, 0.4}, kF64);
  const at::Tensor c = torch::tensor({{0.0, 1.0}, {1.0, 0.0}}, kF64);
  const cnf::ot::EmdResult r = cnf::ot::emd_weighted(a, b, c);
  const at::Tensor expected = torch::tensor({{0.3, 0.0}, {0.3, 0.4}}, kF64);
  // Weights are quantized to multiples of 2^-40 ~ 9.1e-13.
  EXPECT_LT((r.plan - expected).abs().max().item<double>(), 2e-12);
  EXPECT_NEAR(r.cost, 0.3, 2e-12);
}

TEST(OtTest, WeightedWithUniformWeightsMatchesEmd) {
  const at::Tensor x = randn({6, 2}, 12);
  const at::Tensor y = randn({4, 2}, 13);
  const at::Tensor c = cnf::ot::cost_matrix(x, y, cnf::ot::Cost::sqeuclidean);
  const cnf::ot::EmdResult u = cnf::ot::emd(x, y);
  const cnf::ot::EmdResult w =
      cnf::ot::emd_weighted(torch::full({6}, 1.0 / 6, kF64), torch::full({4}, 0.25, kF64), c);
  // 1/6 is not a multiple of 2^-40: each plan entry moves by <= ~1e-12, and the cost by
  // <= (number of entries) * max C * 1e-12 ~ 24 * 20 * 1e-12.
  EXPECT_NEAR(w.cost, u.cost, 1e-9);
  EXPECT_LT((w.plan.sum(1) - 1.0 / 6).abs().max().item<double>(), 1e-11);
  EXPECT_LT((w.plan.sum(0) - 0.25).abs().max().item<double>(), 1e-11);
}

TEST(OtTest, WeightedAllowsZeroWeights) {
  // A point with no mass must receive no flow, whatever its cost.
  const at::Tensor a = torch::tensor({0.5, 0.0, 0.5}, kF64);
  const at::Tensor b = torch::tensor({1.0}, kF64);
  const at::Tensor c = torch::tensor({{2.0}, {-5.0}, {4.0}}, kF64);
  const cnf::ot::EmdResult r = cnf::ot::emd_weighted(a, b, c);
  EXPECT_EQ(r.plan[1][0].item<double>(), 0.0);
  EXPECT_NEAR(r.cost, 3.0, 1e-11);  // 0.5*2 + 0.5*4; quantization 2^-40 per weight
}

TEST(OtTest, GaussianOptimalMapIsRecoveredOnSamples) {
  // T(x) = mu2 + A (x - mu1) with A symmetric positive definite is the gradient of a
  // strictly convex function, so its graph is strictly cyclically monotone (Rockafellar
  // 1966): matching each x_i to T(x_i) is the unique optimal assignment.
  const GaussianPair g;
  const at::Tensor x = g.sample1(40, 14);
  const at::Tensor y = g.mu2 + torch::matmul(x - g.mu1, g.map_matrix().t());
  const at::Tensor perm = torch::randperm(40, cnf::make_generator(15), torch::kInt64);
  const cnf::ot::EmdResult r = cnf::ot::emd(x, y.index({perm}));
  // y[perm[k]] is T(x_perm[k]); the optimal match of x_i is position k with perm[k] = i.
  EXPECT_TRUE(torch::equal(perm.index({r.assignment}), torch::arange(40, torch::kInt64)));
}

TEST(OtTest, RejectsBadInputs) {
  const at::Tensor x = randn({4, 2}, 16);
  const auto sq = cnf::ot::Cost::sqeuclidean;
  expect_error([&] { cnf::ot::emd(torch::zeros({0, 2}, kF64), x); }, "empty");
  expect_error([&] { cnf::ot::emd(x, torch::zeros({0, 2}, kF64)); }, "empty");
  expect_error([&] { cnf::ot::emd(x, randn({4, 3}, 17)); }, "same number of features");
  expect_error([&] { cnf::ot::emd(x.view(-1), x); }, "2-D");
  expect_error([&] { cnf::ot::cost_matrix(x, randn({2, 2, 2}, 18), sq); }, "2-D");
  at::Tensor bad = x.clone();
  bad[1][1] = NAN;
  expect_error([&] { cnf::ot::emd(bad, x); }, "non-finite");
  bad[1][1] = INFINITY;
  expect_error([&] { cnf::ot::emd(x, bad); }, "non-finite");

  const at::Tensor c = torch::ones({2, 3}, kF64);
  const at::Tensor a = torch::tensor({0.5, 0.5}, kF64);
  const at::Tensor b = torch::full({3}, 1.0 / 3, kF64);
  EXPECT_NO_THROW(cnf::ot::emd_weighted(a, b, c));
  expect_error([&] { cnf::ot::emd_weighted(torch::tensor({1.5, -0.5}, kF64), b, c); }, "negative");
  expect_error([&] { cnf::ot::emd_weighted(torch::tensor({0.5, 0.6}, kF64), b, c); }, "sum to 1");
  expect_error([&] { cnf::ot::emd_weighted(b, b, c); }, "one weight per point");
  expect_error([&] { cnf::ot::emd_weighted(a, b, torch::ones({6}, kF64)); }, "2-D");
  expect_error([&] { cnf::ot::emd_weighted(a, b, torch::ones({0, 3}, kF64)); }, "empty");
  at::Tensor c_bad = c.clone();
  c_bad[0][2] = NAN;
  expect_error([&] { cnf::ot::emd_weighted(a, b, c_bad); }, "non-finite");
}

// ------------------------------------------------------------------------- metrics

TEST(MetricsTest, GaussianW2DiagonalClosedForm) {
  // Commuting (diagonal) covariances: W2^2 = |mu1 - mu2|^2 + sum_k (sqrt a_k - sqrt b_k)^2.
  const at::Tensor mu1 = torch::tensor({1.0, 2.0, -1.0}, kF64);
  const at::Tensor mu2 = torch::tensor({0.0, 0.5, 1.0}, kF64);
  const at::Tensor a = torch::tensor({1.0, 4.0, 0.25}, kF64);
  const at::Tensor b = torch::tensor({9.0, 1.0, 1.0}, kF64);
  const double expected = std::sqrt((mu1 - mu2).pow(2).sum().item<double>() +
                                    (a.sqrt() - b.sqrt()).pow(2).sum().item<double>());
  // Eigendecompositions of exactly diagonal matrices are exact to a few ulps.
  EXPECT_NEAR(cnf::metrics::gaussian_w2(mu1, torch::diag(a), mu2, torch::diag(b)), expected, 1e-12);
  // A common rotation leaves the distance unchanged (W2 is rotation invariant).
  const double th = 0.4;
  const at::Tensor rot = torch::tensor(
      {{std::cos(th), -std::sin(th), 0.0}, {std::sin(th), std::cos(th), 0.0}, {0.0, 0.0, 1.0}},
      kF64);
  const at::Tensor ra = torch::matmul(torch::matmul(rot, torch::diag(a)), rot.t());
  const at::Tensor rb = torch::matmul(torch::matmul(rot, torch::diag(b)), rot.t());
  // Rotated inputs carry ~1e-16 relative round-off, amplified by sqrt near eigenvalue 0.25.
  EXPECT_NEAR(cnf::metrics::gaussian_w2(torch::matmul(rot, mu1), ra, torch::matmul(rot, mu2), rb),
              expected, 1e-10);
}

TEST(MetricsTest, GaussianW2NonCommutingTwoByTwo) {
  // For 2x2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), and det M = det S1 det S2.
  const GaussianPair g;
  const double cross = std::sqrt(
      torch::matmul(g.cov1, g.cov2).trace().item<double>() +
      2 * std::sqrt(torch::det(g.cov1).item<double>() * torch::det(g.cov2).item<double>()));
  const double expected =
      std::sqrt((g.mu1 - g.mu2).pow(2).sum().item<double>() + g.cov1.trace().item<double>() +
                g.cov2.trace().item<double>() - 2 * cross);
  const double got = cnf::metrics::gaussian_w2(g.mu1, g.cov1, g.mu2, g.cov2);
  // Two float64 routes through O(1) matrices: agreement to ~1e-14, 1e-12 leaves margin.
  EXPECT_NEAR(got, expected, 1e-12);
  EXPECT_NEAR(cnf::metrics::gaussian_w2(g.mu2, g.cov2, g.mu1, g.cov1), got, 1e-12);  // symmetric
  // Equal laws: W2^2 is round-off (~1e-15) and its square root ~3e-8, hence 1e-7.
  EXPECT_NEAR(cnf::metrics::gaussian_w2(g.mu1, g.cov1, g.mu1, g.cov1), 0.0, 1e-7);
  // Equal covariances: only the means differ (same round-off, now under a sqrt of O(10)).
  EXPECT_NEAR(cnf::metrics::gaussian_w2(g.mu1, g.cov2, g.mu2, g.cov2),
              (g.mu1 - g.mu2).norm().item<double>(), 1e-7);
}

TEST(MetricsTest, GaussianW2IsTheCostOfTheOptimalMap) {
  // E |X - T(X)|^2 = W2^2 for the linear OT map T, estimated by Monte Carlo. Unlike the
  // empirical W2 of two independent samples (biased upward), this estimate is unbiased,
  // so it is held to 5 of its own standard errors.
  const GaussianPair g;
  const int64_t n = 20000;
  const at::Tensor x = g.sample1(n, 19);
  const at::Tensor tx = g.mu2 + torch::matmul(x - g.mu1, g.map_matrix().t());
  const at::Tensor sq = (x - tx).pow(2).sum(1);
  const double mean = sq.mean().item<double>();
  const double se = sq.std().item<double>() / std::sqrt(static_cast<double>(n));
  const double w2 = cnf::metrics::gaussian_w2(g.mu1, g.cov1, g.mu2, g.cov2);
  EXPECT_NEAR(mean, w2 * w2, 5 * se);
}

TEST(MetricsTest, GaussianW2RejectsBadInputs) {
  const at::Tensor mu = torch::zeros({2}, kF64);
  const at::Tensor eye = torch::eye(2, kF64);
  expect_error(
      [&] {
        cnf::metrics::gaussian_w2(mu, torch::diag(torch::tensor({1.0, -1.0}, kF64)), mu, eye);
      },
      "positive semidefinite");
  expect_error(
      [&] {
        cnf::metrics::gaussian_w2(mu, eye, mu, torch::diag(torch::tensor({-1.0, 1.0}, kF64)));
      },
      "positive semidefinite");
  expect_error(
      [&] {
        cnf::metrics::gaussian_w2(mu, torch::tensor({{1.0, 0.5}, {0.0, 1.0}}, kF64), mu, eye);
      },
      "symmetric");
  expect_error([&] { cnf::metrics::gaussian_w2(mu, torch::eye(3, kF64), mu, eye); }, "[2, 2]");
  expect_error([&] { cnf::metrics::gaussian_w2(mu, eye, torch::zeros({3}, kF64), eye); },
               "same dimension");
  expect_error([&] { cnf::metrics::gaussian_w2(torch::full({2}, NAN, kF64), eye, mu, eye); },
               "non-finite");
  // A rank-deficient covariance (a degenerate Gaussian) is allowed.
  EXPECT_NO_THROW(
      cnf::metrics::gaussian_w2(mu, torch::diag(torch::tensor({1.0, 0.0}, kF64)), mu, eye));
}

TEST(MetricsTest, Mmd2MatchesHandComputation) {
  // x = {0, 1}, y = {0, 2}, one bandwidth s = 1, k(u, v) = exp(-(u - v)^2 / 2):
  //   mean_{i != j} k(x_i, x_j) = e^-1/2,  mean_{i != j} k(y_i, y_j) = e^-2,
  //   mean k(x_i, y_j) = (1 + e^-2 + 2 e^-1/2) / 4,
  // so MMD_u^2 = (e^-2 - 1) / 2 (negative: the unbiased estimator can be).
  const at::Tensor x = torch::tensor({{0.0}, {1.0}}, kF64);
  const at::Tensor y = torch::tensor({{0.0}, {2.0}}, kF64);
  const double expected = 0.5 * (std::exp(-2.0) - 1.0);
  EXPECT_NEAR(cnf::metrics::mmd2(x, y, {1.0}), expected, 1e-15);  // four O(1) terms
  // Median heuristic: pooled pairwise distances {1, 0, 2, 1, 1, 2} have median 1, so the
  // bandwidths are {0.5, 1, 2}.
  EXPECT_NEAR(cnf::metrics::mmd2(x, y), cnf::metrics::mmd2(x, y, {0.5, 1.0, 2.0}), 1e-15);
  // A sum of kernels gives the sum of the MMDs.
  EXPECT_NEAR(cnf::metrics::mmd2(x, y, {1.0, 3.0}),
              cnf::metrics::mmd2(x, y, {1.0}) + cnf::metrics::mmd2(x, y, {3.0}), 1e-15);
}

TEST(MetricsTest, Mmd2BlockedSumsMatchFullMatrices) {
  // Sizes above the 1024-row block exercise the diagonal removal in later blocks.
  const at::Tensor x = randn({1500, 2}, 20);
  const at::Tensor y = randn({1100, 2}, 21) + 0.2;
  const double s = 0.8;
  auto k = [&](const at::Tensor& a, const at::Tensor& b) {
    return torch::exp(-(a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1) / (2 * s * s));
  };
  const double n = 1500, m = 1100;
  const double kxx = (k(x, x).sum().item<double>() - n) / (n * (n - 1));
  const double kyy = (k(y, y).sum().item<double>() - m) / (m * (m - 1));
  const double expected = kxx + kyy - 2 * k(x, y).mean().item<double>();
  // Sums of ~2e6 terms in O(1): rounding ~1e-13 relative to the O(1) parts.
  EXPECT_NEAR(cnf::metrics::mmd2(x, y, {s}), expected, 1e-12);
}

TEST(MetricsTest, Mmd2IsUnbiasedUnderTheNullAndDetectsAShift) {
  // Identical laws: MMD_u^2 has mean exactly 0. Over R independent replicas its sample
  // mean is held to 4 standard errors estimated from the replicas themselves (fixed seeds,
  // so this is deterministic; 4 sigma leaves room for the seed choice).
  const int R = 30;
  const int64_t n = 100;
  std::vector<double> null_values;
  for (int r = 0; r < R; ++r)
    null_values.push_back(
        cnf::metrics::mmd2(randn({n, 2}, 100 + 2 * r), randn({n, 2}, 101 + 2 * r)));
  const at::Tensor v = torch::tensor(null_values, kF64);
  const double mean = v.mean().item<double>();
  const double sd = v.std().item<double>();
  EXPECT_LT(std::abs(mean), 4 * sd / std::sqrt(static_cast<double>(R)));
  // Each single null value is O(1/n) small: a unit shift must stand far above them
  // (the null spread is ~1e-2 here; a unit shift gives MMD^2 ~ 0.5).
  const double shifted = cnf::metrics::mmd2(randn({n, 2}, 200), randn({n, 2}, 201) + 1.0);
  EXPECT_GT(shifted, v.max().item<double>() + 10 * sd);
}

TEST(MetricsTest, Mmd2RejectsBadInputs) {
  const at::Tensor x = randn({5, 2}, 22);
  expect_error([&] { cnf::metrics::mmd2(x, x, {1.0, 0.0}); }, "bandwidths");
  expect_error([&] { cnf::metrics::mmd2(x, x, {-1.0}); }, "bandwidths");
  expect_error([&] { cnf::metrics::mmd2(x.slice(0, 0, 1), x); }, "at least 2");
  expect_error([&] { cnf::metrics::mmd2(x, randn({5, 3}, 23)); }, "same number of features");
  expect_error([&] { cnf::metrics::mmd2(x.view(-1), x); }, "2-D");
}

TEST(MetricsTest, W2AndW1RejectBadInputs) {
  const at::Tensor x = randn({4, 2}, 24);
  expect_error([&] { cnf::metrics::w2(x, torch::zeros({0, 2}, kF64)); }, "empty");
  expect_error([&] { cnf::metrics::w1(x, randn({4, 1}, 25)); }, "same number of features");
}
