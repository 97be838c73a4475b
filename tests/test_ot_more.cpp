// Tests of issue 6 (optimal transport): the assignment solver against the network
// simplex, log-domain Sinkhorn, entropic distances, neural OT (ICNN map, WGAN-GP critic),
// the OT couplings and bridge objective of flow matching, and `cnf ot`.
// Each tolerance says where its size comes from.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/coupling/coupling.h"
#include "cnf/data/sources.h"
#include "cnf/io/files.h"
#include "cnf/metrics/distances.h"
#include "cnf/nn/velocity.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/ot/emd.h"
#include "cnf/ot/neural.h"
#include "cnf/ot/sinkhorn.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

namespace fs = std::filesystem;
using namespace cnf;

namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = make_generator(seed);
  return torch::randn(shape, gen, kF64);
}

void expect_error(const std::function<void()>& fn, const std::string& key) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos)
        << "message '" << e.what() << "' lacks '" << key << "'";
    return;
  }
  ADD_FAILURE() << "expected cnf::Error mentioning '" << key << "'";
}

std::string temp_dir() {
  static const std::string d = [] {
    auto p = fs::path(::testing::TempDir()) / ("cnf_ot_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

at::Tensor uniform(int64_t n) { return torch::full({n}, 1.0 / static_cast<double>(n), kF64); }

}  // namespace

// ------------------------------------------------------------------- exact solvers

TEST(OtExact, AssignmentSolverAgreesWithNetworkSimplex) {
  // Two exact algorithms for the same linear program must reach the same optimum.
  for (int64_t n : {1, 2, 33, 150}) {
    const at::Tensor x = randn({n, 2}, 100 + n);
    const at::Tensor y = randn({n, 2}, 200 + n) * 1.5 + 0.3;
    for (auto cost : {ot::Cost::sqeuclidean, ot::Cost::euclidean}) {
      const auto jv = ot::emd(x, y, cost, ot::ExactSolver::assignment);
      const auto ns = ot::emd(x, y, cost, ot::ExactSolver::network_simplex);
      // Sums of n O(10) costs; the simplex's integer costs are off by 2^-56 relative.
      EXPECT_NEAR(jv.cost, ns.cost, 1e-11) << "n = " << n;
      // Marginals of the permutation plan are exactly 1/n (one entry per row and column).
      EXPECT_TRUE(torch::allclose(jv.plan.sum(0), uniform(n), 0, 1e-15));
      EXPECT_TRUE(torch::allclose(jv.plan.sum(1), uniform(n), 0, 1e-15));
    }
  }
  // The automatic choice for equal uniform sets is the assignment solver's answer.
  const at::Tensor x = randn({40, 3}, 1), y = randn({40, 3}, 2);
  EXPECT_TRUE(
      torch::equal(ot::emd(x, y).assignment,
                   ot::emd(x, y, ot::Cost::sqeuclidean, ot::ExactSolver::assignment).assignment));
}

TEST(OtExact, AssignmentHandlesTiesAndNegativeCosts) {
  // All costs equal: every permutation is optimal; the answer must still be a permutation.
  const at::Tensor perm = ot::assignment(torch::ones({5, 5}, kF64));
  EXPECT_TRUE(torch::equal(std::get<0>(perm.sort()), torch::arange(5, torch::kInt64)));
  // A hand case with negative entries: the anti-diagonal costs -3 in total, the diagonal 0.
  const at::Tensor c = torch::tensor({{0.0, 1.0, -1.0}, {1.0, 0.0, -1.0}, {-1.0, -1.0, 0.0}}, kF64);
  const at::Tensor p = ot::assignment(c);
  EXPECT_DOUBLE_EQ(c.gather(1, p.unsqueeze(1)).sum().item<double>(), -2.0);  // exact small ints
}

TEST(OtExact, ScalarAndSimdAssignmentAgree) {
  // The AVX2 relaxation performs the scalar loop's operations in the same order per column,
  // so the two must return the same permutation (exactly), on spread and clustered sets.
  for (int64_t n : {5, 64, 257}) {
    const at::Tensor x = randn({n, 2}, 300 + n);
    const at::Tensor y = (randn({n, 2}, 400 + n) * 0.05).add_(randn({n, 2}, 500 + n).round());
    const at::Tensor c = ot::cost_matrix(x, y, ot::Cost::sqeuclidean);
    const at::Tensor simd = ot::assignment(c);
    ot::set_assignment_simd(false);
    const at::Tensor scalar = ot::assignment(c);
    ot::set_assignment_simd(true);
    EXPECT_TRUE(torch::equal(simd, scalar)) << "n = " << n;
  }
}

// ------------------------------------------------------------------------ Sinkhorn

TEST(OtSinkhorn, ApproachesExactCostAsEpsilonShrinks) {
  // After each g-update P_eps is the exact entropic optimum between its own row marginal
  // a' and b. With P* a permutation plan, KL(P* | a b^T) = log n, and optimality of P_eps
  // for <C, P> + eps KL gives 0 <= <C, P_eps> - OT <= eps log n, up to the marginal slack
  // |a' - a|_1 * max C.
  const int64_t n = 40;
  const at::Tensor x = randn({n, 2}, 3), y = randn({n, 2}, 4) + 1.0;
  const double exact = ot::emd(x, y).cost;
  const double c_max = ot::cost_matrix(x, y, ot::Cost::sqeuclidean).max().item<double>();
  double previous_gap = INFINITY;
  for (double eps : {1.0, 0.1, 0.03, 0.001}) {
    ot::SinkhornOptions o;
    o.epsilon = eps;
    o.tol = 1e-6;
    o.max_iter = 20000;
    const auto r = ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o);
    std::printf("eps %g: %s, cost %.6f vs exact %.6f\n", eps, r.report().c_str(), r.cost, exact);
    // Sinkhorn needs O(max C / eps) iterations (measured: 90 at eps = 1, 1,130 at 0.1;
    // at 0.03, 20,000 leave a marginal error of 1.3e-6). Below 0.1 we check the bound
    // with the measured slack instead; at eps = 0.001 (costs up to 3e4 eps:
    // exp(-C / eps) underflows to 0, so only the log domain works at all) also stability.
    if (eps >= 0.1) {
      EXPECT_TRUE(r.converged) << r.report();
    }
    ASSERT_TRUE(torch::isfinite(r.plan).all().item<bool>()) << "eps " << eps;
    // Columns are exact after the last g-update (round-off of sums of 40 terms).
    EXPECT_LT((r.plan.sum(0) - uniform(n)).abs().sum().item<double>(), 1e-12);
    const double slack = r.marginal_error * c_max + 1e-9;
    const double gap = r.cost - exact;
    EXPECT_GE(gap, -slack) << "eps " << eps;
    EXPECT_LE(gap, eps * std::log(static_cast<double>(n)) + slack) << "eps " << eps;
    EXPECT_LT(gap, previous_gap) << "eps " << eps;
    previous_gap = gap;
  }
  // At eps = 1e-3 the entropic cost is within eps log n + slack ~ 4e-3 of the exact cost.
  EXPECT_LT(std::abs(previous_gap), 1e-2);
}

TEST(OtSinkhorn, WeightedMarginalsAreSatisfied) {
  const at::Tensor x = randn({6, 2}, 5), y = randn({9, 2}, 6);
  at::Tensor a = torch::rand({6}, make_generator(7), kF64) + 0.1;
  at::Tensor b = torch::rand({9}, make_generator(8), kF64) + 0.1;
  b[3] = 0.0;  // a point without mass takes none
  a = a / a.sum();
  b = b / b.sum();
  ot::SinkhornOptions o;
  o.epsilon = 0.05;
  o.tol = 1e-10;
  const auto r = ot::sinkhorn_weighted(a, b, ot::cost_matrix(x, y, ot::Cost::sqeuclidean), o);
  ASSERT_TRUE(r.converged) << r.report();
  EXPECT_LT((r.plan.sum(1) - a).abs().sum().item<double>(), 1e-10);  // the stopping rule
  EXPECT_LT((r.plan.sum(0) - b).abs().max().item<double>(), 1e-14);  // exact up to round-off
  EXPECT_EQ(r.plan.select(1, 3).abs().max().item<double>(), 0.0);
  // The hand case of the exact solver: keep 0.3 and 0.4 in place, move 0.3 at cost 1. At
  // eps = 0.01 the entropic cost is within eps log 4 ~ 0.014 of it (bound as above with
  // KL(P* | a b^T) <= log(n m)).
  const at::Tensor c = torch::tensor({{0.0, 1.0}, {1.0, 0.0}}, kF64);
  o.epsilon = 0.01;
  const auto h =
      ot::sinkhorn_weighted(torch::tensor({0.3, 0.7}, kF64), torch::tensor({0.6, 0.4}, kF64), c, o);
  EXPECT_NEAR(h.cost, 0.3, 0.01 * std::log(4.0));
  EXPECT_GE(h.cost, 0.3 - 1e-9);
}

TEST(OtSinkhorn, WarmStartTakesFewerIterations) {
  const at::Tensor x = randn({100, 2}, 9), y = randn({100, 2}, 10);
  ot::SinkhornOptions o;
  o.epsilon = 0.2;
  o.tol = 1e-7;
  o.check_every = 1;  // count iterations exactly
  const auto cold = ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o);
  ASSERT_TRUE(cold.converged) << cold.report();
  // A nearby problem (the targets moved by ~1e-3) started from the old potentials.
  const at::Tensor y2 = y + 1e-3 * randn({100, 2}, 11);
  const auto cold2 = ot::sinkhorn(x, y2, ot::Cost::sqeuclidean, o);
  o.f_init = cold.f;
  o.g_init = cold.g;
  const auto warm2 = ot::sinkhorn(x, y2, ot::Cost::sqeuclidean, o);
  ASSERT_TRUE(warm2.converged) << warm2.report();
  EXPECT_LT(warm2.iterations * 2, cold2.iterations)
      << "warm " << warm2.iterations << " vs cold " << cold2.iterations;
  // Same problem, same optimum: the costs agree to the marginal tolerance.
  EXPECT_NEAR(warm2.cost, cold2.cost, 1e-6);
}

TEST(OtSinkhorn, KernelAndLogDomainRoutesAgree) {
  // The stabilized kernel and log-sum-exp evaluate the same half-steps, so the iterates,
  // the iteration count and the plan agree up to rounding (1e-12 absolute on entries of
  // size ~1/n: a few hundred double operations per entry, each ~1e-16 relative).
  const at::Tensor x = randn({60, 2}, 21), y = randn({60, 2}, 22) * 0.7 + 0.5;
  ot::SinkhornOptions o;
  o.epsilon = 0.05;
  const auto kernel = ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o);
  o.log_domain = true;
  const auto logd = ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o);
  ASSERT_TRUE(kernel.converged) << kernel.report();
  ASSERT_TRUE(logd.converged) << logd.report();
  EXPECT_EQ(kernel.iterations, logd.iterations);
  EXPECT_LT((kernel.plan - logd.plan).abs().max().item<double>(), 1e-12);
  EXPECT_NEAR(kernel.cost, logd.cost, 1e-10);
}

TEST(OtSinkhorn, KernelUnderflowFallsBackToTheLogDomain) {
  // Sets 8 apart: every cost is >= ~40, so at epsilon 0.05 without epsilon scaling
  // exp(-C / eps) <= e^-800 is 0 in double (translation changes no plan, but the cold-start
  // kernel sees the raw costs): K v underflows and the solve must finish in the log domain.
  // It then runs the same half-steps as the log-domain route from the first potentials,
  // so plan and cost agree with it (1e-9: the kernel iterations before the switch and the
  // repair half-steps differ from the log route by rounding, amplified by 1/eps = 20).
  const at::Tensor x = randn({40, 2}, 31), y = randn({40, 2}, 32) + 8.0;
  ASSERT_GT(ot::cost_matrix(x, y, ot::Cost::sqeuclidean).min().item<double>(), 745 * 0.05);
  ot::SinkhornOptions o;
  o.epsilon = 0.05;
  o.eps_scaling = 0;
  o.max_iter = 20000;
  const auto kernel = ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o);
  o.log_domain = true;
  const auto logd = ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o);
  ASSERT_TRUE(kernel.converged) << kernel.report();
  ASSERT_TRUE(logd.converged) << logd.report();
  EXPECT_TRUE(torch::isfinite(kernel.plan).all().item<bool>());
  EXPECT_NEAR(kernel.cost, logd.cost, 1e-9 * logd.cost);
  // Both are within the tolerance of the true marginals.
  EXPECT_LT((kernel.plan.sum(1) - uniform(40)).abs().sum().item<double>(), o.tol);
}

TEST(OtSinkhorn, ReportsNonConvergence) {
  ot::SinkhornOptions o;
  o.epsilon = 1e-3;
  o.max_iter = 3;
  const auto r = ot::sinkhorn(randn({30, 2}, 12), randn({30, 2}, 13), ot::Cost::sqeuclidean, o);
  EXPECT_FALSE(r.converged);
  EXPECT_EQ(r.iterations, 3);
  EXPECT_GT(r.marginal_error, o.tol);
  EXPECT_NE(r.report().find("did not converge in 3 iterations"), std::string::npos) << r.report();
  EXPECT_NE(r.report().find("max_iter"), std::string::npos);
}

TEST(OtSinkhorn, EntropicDistancesBracketTheExactOnes) {
  // Translated cloud: W2 = W1 = |s| exactly (see OtTest.TranslationIsTransportedByIdentity).
  // Costs stay below ~4, so eps = 0.05 converges in a few thousand iterations.
  const at::Tensor x = 0.3 * randn({50, 2}, 14);
  const at::Tensor y = x + torch::tensor({0.3, -0.4}, kF64);
  const double s = 0.5;
  const double eps = 0.05;
  const double w2 = metrics::w2_entropic(x, y, eps);
  const double w1 = metrics::w1_entropic(x, y, eps);
  // Entropic costs exceed the exact ones by at most eps log n = 0.2 (cost units), less
  // the marginal slack tol * max C = 1e-6 * ~20.
  EXPECT_GE(w2 * w2, s * s - 1e-4);
  EXPECT_LE(w2 * w2, s * s + eps * std::log(50.0) + 1e-4);
  EXPECT_GE(w1, s - 1e-4);
  EXPECT_LE(w1, s + eps * std::log(50.0) + 1e-4);
}

TEST(OtSinkhorn, SolveDispatchesAndRejectsBadInput) {
  const at::Tensor x = randn({5, 2}, 15), y = randn({5, 2}, 16);
  ot::SolveOptions so;
  EXPECT_TRUE(ot::solve(x, y, so).assignment.defined());
  so.method = ot::parse_method("sinkhorn");
  EXPECT_TRUE(ot::solve(x, y, so).converged);
  expect_error([] { ot::parse_method("greenkhorn"); }, "emd, sinkhorn");

  ot::SinkhornOptions o;
  expect_error(
      [&] {
        ot::sinkhorn(torch::zeros({0, 2}, kF64), y, ot::Cost::sqeuclidean, o);
      },
      "empty");
  expect_error(
      [&] {
        ot::sinkhorn(x, randn({5, 3}, 17), ot::Cost::sqeuclidean, o);
      },
      "same number of features");
  at::Tensor bad = x.clone();
  bad[2][0] = NAN;
  expect_error([&] { ot::sinkhorn(bad, y, ot::Cost::sqeuclidean, o); }, "non-finite");
  const at::Tensor c = torch::ones({2, 2}, kF64);
  expect_error(
      [&] {
        ot::sinkhorn_weighted(torch::tensor({1.2, -0.2}, kF64), uniform(2), c, o);
      },
      "negative");
  for (double eps : {0.0, -1.0, double(NAN)}) {
    o.epsilon = eps;
    expect_error([&] { ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o); }, "epsilon must be");
  }
  o.epsilon = 0.1;
  o.f_init = torch::zeros({4}, kF64);
  expect_error([&] { ot::sinkhorn(x, y, ot::Cost::sqeuclidean, o); }, "one per point");
  expect_error([] { ot::assignment(torch::ones({2, 3}, kF64)); }, "square");
  expect_error(
      [&] {
        ot::emd(x, randn({4, 2}, 18), ot::Cost::sqeuclidean, ot::ExactSolver::assignment);
      },
      "as many points");
}

// ---------------------------------------------------------------------- neural OT

TEST(OtNeural, IcnnMapBetweenGaussiansApproachesTheAffineMap) {
  set_threads(1);
  // mu = N(0, I), nu = N(m, S): the Brenier map is T(x) = m + S^{1/2} x (Knott & Smith
  // 1984), and W2^2 = |m|^2 + tr(I + S - 2 S^{1/2}).
  const at::Tensor s_half = torch::tensor({{1.3, 0.4}, {0.4, 0.7}}, kF64);  // SPD
  const at::Tensor m = torch::tensor({1.0, -0.5}, kF64);
  const at::Tensor x = randn({2000, 2}, 19);
  const at::Tensor y = m + torch::matmul(randn({2000, 2}, 20), s_half);
  const double w2_true = metrics::gaussian_w2(torch::zeros({2}, kF64), torch::eye(2, kF64), m,
                                              torch::matmul(s_half, s_half));
  ot::NeuralW2Options o;
  const auto r = ot::neural_w2(x, y, o);
  const at::Tensor x_test = randn({1000, 2}, 21);
  const at::Tensor t_true = m + torch::matmul(x_test, s_half);
  const double err =
      (r.map(x_test).to(torch::kFloat64) - t_true).pow(2).sum(1).mean().item<double>();
  const double scale = (t_true - x_test).pow(2).sum(1).mean().item<double>();  // ~ W2^2
  std::printf("ICNN: map error %.4g relative to %.4g; W2 %.4f vs %.4f\n", err, scale, r.w2,
              w2_true);
  // Sampling error of 2,000 points in 2-D plus optimization error: the map is learned
  // to within a few percent of the displacement it must make (measured 0.7%).
  EXPECT_LT(err, 0.05 * scale);
  // The dual estimate uses n = 2000 samples: its Monte-Carlo error is ~ std / sqrt(n) of
  // second moments of size ~3, about 0.05 in W2^2, plus optimization error (measured
  // 1.296 vs 1.323).
  EXPECT_NEAR(r.w2, w2_true, 0.1);
}

TEST(OtNeural, CriticW1ForShiftedGaussiansApproachesTheShift) {
  set_threads(1);
  // N(0, I) vs N(s, I): W1 = |s| (the linear critic h(x) = <x, s>/|s| attains it, and
  // W1 >= |E x - E y| by Jensen).
  const at::Tensor shift = torch::tensor({1.5, -1.0}, kF64);
  const double w1_true = shift.norm().item<double>();
  const at::Tensor x = randn({2000, 2}, 22) + shift;
  const at::Tensor y = randn({2000, 2}, 23);
  ot::CriticW1Options o;
  const auto r = ot::critic_w1(x, y, o);
  std::printf("critic W1 %.4f (gap %.4f, slope %.4f) vs %.4f\n", r.w1, r.gap, r.slope, w1_true);
  // The raw gap overshoots by the soft penalty's factor 1 + W1 / (2 lambda) = 1.09
  // (measured 1.962); dividing by the mean slope removes it. Monte-Carlo error of
  // the means of 2,000 unit-variance samples ~ 0.03, plus optimization error.
  EXPECT_NEAR(r.gap, w1_true * (1 + w1_true / 20), 0.05 * w1_true);
  EXPECT_NEAR(r.w1, w1_true, 0.05 * w1_true);
}

TEST(OtNeural, RejectsBadInput) {
  const at::Tensor x = randn({10, 2}, 24);
  expect_error([&] { ot::neural_w2(torch::zeros({0, 2}, kF64), x); }, "empty");
  expect_error([&] { ot::critic_w1(x, randn({10, 3}, 25)); }, "same number of features");
  ot::NeuralW2Options o;
  o.lr = -1;
  expect_error([&] { ot::neural_w2(x, x, o); }, "lr must be > 0");
  ot::CriticW1Options c;
  c.gp_weight = 0;
  expect_error([&] { ot::critic_w1(x, x, c); }, "gp_weight");
}

// ---------------------------------------------------------------------- couplings

TEST(OtCoupling, ExactCouplingMinimizesTransportCost) {
  const int64_t b = 256;
  at::Generator gen = make_generator(26);
  const at::Tensor x_0 = data::make_source("moons")->sample(b, gen);
  const at::Tensor x_1 = torch::randn({b, 2}, gen);
  auto cost = [](const std::pair<at::Tensor, at::Tensor>& p) {
    return (p.first - p.second).pow(2).sum(1).mean().item<double>();
  };
  const auto ind = coupling::make_coupling("independent")->pair(x_0, x_1, gen);
  const auto ex = coupling::make_coupling("exact")->pair(x_0, x_1, gen);
  coupling::CouplingOptions co;
  co.epsilon = 0.05;
  const auto sk = coupling::make_coupling("sinkhorn", co)->pair(x_0, x_1, gen);
  // The exact pairing is a permutation of x_1 and attains the exact OT cost (float32 data).
  EXPECT_TRUE(torch::equal(std::get<0>(ex.second.sum(1).sort()), std::get<0>(x_1.sum(1).sort())));
  EXPECT_NEAR(cost(ex), ot::emd(x_0, x_1).cost, 1e-5);
  std::printf("pair cost: independent %.3f, sinkhorn %.3f, exact %.3f\n", cost(ind), cost(sk),
              cost(ex));
  // Measured: independent 6.49, sinkhorn (eps 0.05) 1.09, exact 1.06. Independent pairs
  // cost E|x_0 - x_1|^2; OT pairs of a 256-point batch in 2-D far less. Sinkhorn's random
  // pairs cost more than the exact ones (by up to eps log b = 0.28 in expectation, plus
  // sampling noise) and far less than independent ones.
  EXPECT_LT(cost(ex), 0.5 * cost(ind));
  EXPECT_GT(cost(sk), cost(ex));
  EXPECT_LT(cost(sk), 0.6 * cost(ind));
  // Every coupling keeps x_0 in place.
  EXPECT_TRUE(torch::equal(ex.first, x_0) && torch::equal(sk.first, x_0));

  EXPECT_EQ(coupling::make_coupling("sb", co)->bridge_sigma(), co.sigma);
  EXPECT_EQ(coupling::make_coupling("sb", co)->describe(), "sb");  // sigma 0.5: the default
  expect_error([] { coupling::make_coupling("ot"); }, "independent, exact, sinkhorn, sb");
  // Spec text: a key the spec sets overrides the options, the canonical text round-trips, and
  // the forms checkpoints stored before (name(key=value)) read as the same coupling.
  EXPECT_EQ(coupling::make_coupling("sb:sigma=0.3", co)->bridge_sigma(), 0.3);
  EXPECT_EQ(coupling::make_coupling("sinkhorn:eps=0.05", co)->describe(), "sinkhorn:eps=0.05");
  EXPECT_EQ(coupling::make_coupling("sinkhorn:eps=0.1")->describe(), "sinkhorn");
  EXPECT_EQ(coupling::canonical_coupling("sinkhorn(epsilon=0.3)"), "sinkhorn:eps=0.3");
  EXPECT_EQ(coupling::canonical_coupling("sb(sigma=0.5)"), "sb");
  EXPECT_EQ(coupling::canonical_coupling("exact"), "exact");
  expect_error([] { coupling::make_coupling("sinkhorn:sigma=1"); }, "eps");
  expect_error([] { coupling::make_coupling("exact:eps=1"); }, "exact");
  co.epsilon = 0;
  expect_error([&] { coupling::make_coupling("sinkhorn", co); }, "--coupling-eps");
  co.sigma = -1;
  expect_error([&] { coupling::make_coupling("sb", co); }, "--bridge-sigma");
}

namespace {
// v = 0 everywhere: the flow-matching loss is then E |u_t|^2 of the target alone.
class ZeroField : public nn::VelocityFieldImpl {
 public:
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
    return torch::zeros_like(x);
  }
  std::vector<int64_t> sample_shape() const override { return {2}; }
};
}  // namespace

TEST(OtCoupling, BridgeNoiseTargetHasTheBrownianBridgeVelocity) {
  // With x_0 = x_1 = 0 the SB-CFM target is u_t = sigma (1 - 2t) / (2 sqrt(t(1-t))) z,
  // so with v = 0 the loss is d sigma^2 E_t[(1 - 2t)^2 / (4 t (1 - t))] for t ~ U[a, b].
  const double sigma = 0.7, a = 0.2, b = 0.8;
  ZeroField field;
  objective::FlowMatchingOptions o;
  o.schedule = path::make_schedule("condot");
  o.t_min = a;
  o.t_max = b;
  o.bridge_sigma = sigma;
  at::Generator gen = make_generator(27);
  const int64_t n = 200000;
  const at::Tensor zeros = torch::zeros({n, 2}, kF64);
  const double loss =
      objective::flow_matching_loss(field, {zeros, zeros}, o, gen).loss.item<double>();
  // Midpoint rule with 10^5 cells for the time average (error ~1e-10).
  double integral = 0;
  const int cells = 100000;
  for (int k = 0; k < cells; ++k) {
    const double t = a + (b - a) * (k + 0.5) / cells;
    integral += (1 - 2 * t) * (1 - 2 * t) / (4 * t * (1 - t));
  }
  const double expected = 2 * sigma * sigma * integral / cells;
  // Monte-Carlo: the per-sample loss has relative std ~2 here, so the mean of 2e5 has a
  // relative standard error ~0.5%; 3% is six standard errors.
  EXPECT_NEAR(loss, expected, 0.03 * expected);
  // Without bridge noise the target is exactly 0.
  o.bridge_sigma = 0;
  EXPECT_EQ(objective::flow_matching_loss(field, {zeros, zeros}, o, gen).loss.item<double>(), 0.0);
}

TEST(OtCoupling, SbTrainingResumesBitForBitAndRefusesAnotherCoupling) {
  set_threads(1);
  auto make = [](const std::string& coupling, double sigma) {
    train::FlowSpec spec;
    spec.model.width = 16;
    spec.model.depth = 2;
    train::TrainOptions o;
    o.steps = 12;
    o.batch_size = 32;
    o.coupling = coupling;
    o.bridge_sigma = sigma;
    return train::Trainer(spec, o, data::make_source("moons"), data::make_source("normal"));
  };
  auto full = make("sb", 0.3);
  full.run();
  auto first = make("sb", 0.3);
  first.run([](int64_t step, const auto&) { return step < 5; });
  const std::string ckpt = temp_dir() + "/sb.pt";
  first.save(ckpt);
  auto second = make("sb", 0.3);
  second.resume(ckpt);
  second.run();
  auto pa = full.model()->parameters(), pb = second.model()->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;
  // The sampled pairs and bridge noise matter: independent coupling trains differently.
  auto ind = make("independent", 0.3);
  ind.run();
  EXPECT_FALSE(torch::equal(ind.model()->parameters()[0], pa[0]));
  auto other = make("sb", 0.4);
  expect_error([&] { other.resume(ckpt); }, "sb:sigma=0.3");
  auto exact = make("exact", 0.3);
  expect_error([&] { exact.resume(ckpt); }, "--coupling sb:sigma=0.3");
}

// ----------------------------------------------------------------------------- CLI

using cnf_test::contains;
using cnf_test::run_cnf;

TEST(OtCli, OtCommandEndToEnd) {
  const std::string d = temp_dir();
  const at::Tensor a = randn({64, 2}, 28);
  io::write_npy(d + "/a.npy", a);
  io::write_npy(d + "/b.npy", a + torch::tensor({3.0, 4.0}, kF64));  // W2^2 = 25, W1 = 5
  io::write_npy(d + "/c3.npy", randn({10, 3}, 29));

  auto r = run_cnf("ot --a " + d + "/a.npy --b " + d + "/b.npy --assignment " + d +
                   "/s.npy --plan " + d + "/p.npy --json " + d + "/ot.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "OT cost (emd, sqeuclidean) = 25")) << r.output;
  EXPECT_TRUE(torch::equal(io::read_npy(d + "/s.npy"), torch::arange(64, torch::kInt64)));
  EXPECT_EQ(io::read_npy(d + "/p.npy").sizes(), (std::vector<int64_t>{64, 64}));
  EXPECT_TRUE(contains(io::read_text(d + "/ot.json"), "\"cost\": 25"));

  r = run_cnf("ot --a " + d + "/a.npy --b " + d +
              "/b.npy --method sinkhorn --eps 0.01 "
              "--cost euclidean --json " +
              d + "/sk.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "Sinkhorn converged")) << r.output;
  EXPECT_TRUE(contains(io::read_text(d + "/sk.json"), "\"converged\": true"));
  // --log-domain runs the same half-steps by log-sum-exp: same iterations, same cost (to
  // rounding: 1e-9 relative).
  r = run_cnf("ot --a " + d + "/a.npy --b " + d +
              "/b.npy --method sinkhorn --eps 0.01 "
              "--cost euclidean --log-domain --json " +
              d + "/sk_log.json");
  ASSERT_EQ(r.code, 0) << r.output;
  {
    const auto kernel = nlohmann::json::parse(io::read_text(d + "/sk.json"));
    const auto logd = nlohmann::json::parse(io::read_text(d + "/sk_log.json"));
    EXPECT_EQ(kernel.at("iterations"), logd.at("iterations"));
    EXPECT_NEAR(kernel.at("cost").get<double>(), logd.at("cost").get<double>(),
                1e-9 * std::abs(logd.at("cost").get<double>()));
  }

  // Errors: mismatched dimensions, a bad method, eps <= 0, non-convergence.
  r = run_cnf("ot --a " + d + "/a.npy --b " + d + "/c3.npy");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "same space")) << r.output;
  r = run_cnf("ot --a " + d + "/a.npy --b " + d + "/b.npy --method lp");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "emd, sinkhorn")) << r.output;
  r = run_cnf("ot --a " + d + "/a.npy --b " + d + "/b.npy --method sinkhorn --eps 0");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "epsilon must be")) << r.output;
  r = run_cnf("ot --a " + d + "/a.npy --b " + d +
              "/b.npy --method sinkhorn --eps 1e-4 "
              "--max-iter 2");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "did not converge")) << r.output;
}

TEST(OtCli, TrainAcceptsOtCouplings) {
  const std::string d = temp_dir();
  const std::string common = " --steps 5 --batch-size 32 --width 16 --depth 1 --eval-n 20 --quiet";
  auto r = run_cnf("train --coupling exact --out " + d + "/ex" + common);
  EXPECT_EQ(r.code, 0) << r.output;
  r = run_cnf("train --coupling sb --bridge-sigma 0.4 --out " + d + "/sb" + common);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(io::read_text(d + "/sb/config.toml"), "bridge-sigma=0.4"));
  r = run_cnf("train --coupling sinkhorn --coupling-eps -1 --out " + d + "/bad" + common);
  EXPECT_TRUE(r.code == 1 && contains(r.output, "coupling_eps must be")) << r.output;
  // Resuming the sb run with another sigma is refused.
  r = run_cnf("train --coupling sb --bridge-sigma 0.5 --resume " + d + "/sb/model.pt --out " + d +
              "/sb2" + common);
  EXPECT_TRUE(r.code == 1 && contains(r.output, "coupling sb:sigma=0.4")) << r.output;
}
