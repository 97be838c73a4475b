// ODE engine: tableau validation, empirical convergence order of every tableau, NFE,
// reverse time, observers, and gradients through the solver.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/ode/solve.h"

using namespace cnf;
using ode::State;

namespace {
// y' = A y with A a damped rotation: y(t) = exp(A t) y0 in closed form,
// exp(A t) = e^{-a t} [[cos wt, -sin wt], [sin wt, cos wt]] for A = [[-a, -w], [w, -a]].
constexpr double kA = 0.3, kW = 2.0;
torch::Tensor exact(double t, const torch::Tensor& y0) {
  const double c = std::cos(kW * t), s = std::sin(kW * t), e = std::exp(-kA * t);
  auto m = torch::tensor({{c, -s}, {s, c}}, torch::kFloat64) * e;
  return y0.matmul(m.t());
}
State rotation(double, const State& y) {
  auto a = torch::tensor({{-kA, -kW}, {kW, -kA}}, torch::kFloat64);
  return {y[0].matmul(a.t())};
}
}  // namespace

class TableauTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TableauTest, EmpiricalOrderMatchesNominal) {
  const auto& tab = ode::tableaus().get(GetParam());
  auto y0 = torch::tensor({{1.0, 0.5}, {-0.3, 2.0}}, torch::kFloat64);
  const double T = 2.0;
  std::vector<double> log_h, log_err;
  for (int n : {20, 40, 80, 160}) {
    // Fixed steps for every tableau (embedded pairs included) through the constant controller.
    ode::ConstantController fixed(n);
    auto sol = ode::solve(rotation, {y0}, 0.0, T, tab, fixed);
    const double err = (sol.y[0] - exact(T, y0)).abs().max().item<double>();
    log_h.push_back(std::log(T / n));
    log_err.push_back(std::log(err));
    // FSAL tableaux reuse the last stage of a step as the first of the next.
    const int64_t s = tab.stages();
    EXPECT_EQ(sol.nfe, tab.fsal() ? s + (n - 1) * (s - 1) : n * s);
    EXPECT_EQ(sol.n_accepted, n);
  }
  // Least-squares slope of log error against log step size.
  const double mx = std::accumulate(log_h.begin(), log_h.end(), 0.0) / log_h.size();
  const double my = std::accumulate(log_err.begin(), log_err.end(), 0.0) / log_err.size();
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < log_h.size(); ++i) {
    sxy += (log_h[i] - mx) * (log_err[i] - my);
    sxx += (log_h[i] - mx) * (log_h[i] - mx);
  }
  const double slope = sxy / sxx;
  // Steps 20..160 are in the asymptotic regime for this smooth problem (errors 1e-2..1e-10,
  // above float64 round-off); the fitted slope is within 0.25 of the classical order.
  EXPECT_NEAR(slope, tab.order, 0.25) << GetParam();
}

TEST_P(TableauTest, ReverseTimeUndoesForward) {
  auto y0 = torch::tensor({{1.0, 0.5}}, torch::kFloat64);
  ode::SolveOptions o;
  o.method = GetParam();
  o.steps = 400;
  o.adaptive.rtol = o.adaptive.atol = 1e-10;  // adaptive pairs: far below the 1e-5 check
  auto fwd = ode::solve(rotation, {y0}, 0.0, 1.0, o);
  auto back = ode::solve(rotation, {fwd.y[0]}, 1.0, 0.0, o);
  // Forward and reverse each err by O(h^p); Euler's p = 1 with h = 1/400 gives ~3e-3.
  const double tol = GetParam() == "euler" ? 1e-2 : 1e-5;
  EXPECT_TRUE(torch::allclose(back.y[0], y0, 0, tol)) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(AllTableaus, TableauTest, ::testing::ValuesIn(ode::tableaus().names()),
                         [](const auto& info) { return info.param; });

TEST(OdeTest, TableauValidationRejectsInconsistentCoefficients) {
  // Row sums must equal c.
  EXPECT_THROW(ode::ButcherTableau("bad", {0.0, 0.5}, {{}, {0.4}}, {0.0, 1.0}, 2), Error);
  // Weights must sum to 1.
  EXPECT_THROW(ode::ButcherTableau("bad", {0.0, 0.5}, {{}, {0.5}}, {0.5, 0.4}, 2), Error);
  // Error weights must sum to 0.
  EXPECT_THROW(ode::ButcherTableau("bad", {0.0, 1.0}, {{}, {1.0}}, {0.5, 0.5}, 2, {0.5, 0.4}, 1),
               Error);
  // Implicit rows are not explicit methods.
  EXPECT_THROW(ode::ButcherTableau("bad", {0.5}, {{0.5}}, {1.0}, 1), Error);
  EXPECT_NO_THROW(
      ode::ButcherTableau("ok", {0.0, 1.0}, {{}, {1.0}}, {0.5, 0.5}, 2, {0.5, -0.5}, 1));
}

TEST(OdeTest, UnknownMethodListsValidNames) {
  try {
    ode::SolveOptions o;
    o.method = "rk45";
    ode::solve(rotation, {torch::ones({1, 2}, torch::kFloat64)}, 0, 1, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("euler, midpoint, heun, rk4"), std::string::npos);
  }
  ode::SolveOptions o;
  o.steps = 0;
  EXPECT_THROW(ode::solve(rotation, {torch::ones({1, 2}, torch::kFloat64)}, 0, 1, o), Error);
}

TEST(OdeTest, ObserverSeesEveryGridTime) {
  std::vector<double> ts;
  ode::SolveOptions o;
  o.method = "midpoint";
  o.steps = 7;
  o.observer = [&](double t, const State&) { ts.push_back(t); };
  ode::solve(rotation, {torch::ones({1, 2}, torch::kFloat64)}, 1.0, 0.0, o);
  ASSERT_EQ(ts.size(), 8u);
  for (int k = 0; k <= 7; ++k) EXPECT_DOUBLE_EQ(ts[k], 1.0 - k / 7.0 + 0.0 * k);
  EXPECT_EQ(ts.back(), 0.0);  // the last grid time is t1 exactly, not an accumulated sum
}

TEST(OdeTest, MultiTensorStateAndBackprop) {
  // y' = -y, z' = y (z integrates y): y(T) = y0 e^{-T}, z(T) = y0 (1 - e^{-T}).
  auto y0 = torch::tensor({1.5}, torch::kFloat64).requires_grad_(true);
  auto f = [](double, const State& s) { return State{-s[0], s[0]}; };
  ode::SolveOptions o;
  o.method = "rk4";
  o.steps = 50;
  auto sol = ode::solve(f, {y0, torch::zeros({1}, torch::kFloat64)}, 0.0, 2.0, o);
  // rk4 with h = 0.04: global error ~ h^4 / 5! ~ 1e-8.
  EXPECT_NEAR(sol.y[0].item<double>(), 1.5 * std::exp(-2.0), 1e-7);
  EXPECT_NEAR(sol.y[1].item<double>(), 1.5 * (1 - std::exp(-2.0)), 1e-7);
  // Backprop through the solver: d y(T) / d y0 = e^{-T} (the map is linear in y0, so the
  // discrete gradient equals the discrete solution's factor, within rk4 error).
  sol.y[0].backward();
  EXPECT_NEAR(y0.grad().item<double>(), std::exp(-2.0), 1e-7);
}

// ----------------------------------------------------------------------- adaptive stepping

class AdaptiveTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AdaptiveTest, MeetsRequestedToleranceOnLinearSystem) {
  auto y0 = torch::tensor({{1.0, 0.5}, {-0.3, 2.0}}, torch::kFloat64);
  double prev_err = 1e9;
  int64_t prev_nfe = 0;
  for (double tol : {1e-4, 1e-6, 1e-8}) {
    ode::SolveOptions o;
    o.method = GetParam();
    o.adaptive.rtol = o.adaptive.atol = tol;
    auto sol = ode::solve(rotation, {y0}, 0.0, 3.0, o);
    const double err = (sol.y[0] - exact(3.0, y0)).abs().max().item<double>();
    // Local error control per step: the global error over t in [0, 3] stays within a
    // small multiple of tol; 30x allows for the accumulation over the steps.
    EXPECT_LT(err, 30 * tol) << GetParam() << " tol " << tol;
    EXPECT_LT(err, prev_err) << GetParam();  // tighter tolerance, smaller error
    EXPECT_GT(sol.nfe, prev_nfe);            // ... bought with more evaluations
    prev_err = err;
    prev_nfe = sol.nfe;
    // NFE bookkeeping: f0, one trial evaluation for the initial step, then s - 1 per
    // attempted step (FSAL).
    const auto& tab = ode::tableaus().get(GetParam());
    EXPECT_EQ(sol.nfe, 2 + (sol.n_accepted + sol.n_rejected) * (tab.stages() - 1));
  }
}

TEST_P(AdaptiveTest, NonlinearScalarOdeInReverseTime) {
  // y' = -2 t y^2 has y(t) = 1 / (1 + t^2); integrate from t = 2 back to t = 0.
  auto f = [](double t, const State& y) { return State{-2.0 * t * y[0] * y[0]}; };
  ode::SolveOptions o;
  o.method = GetParam();
  o.adaptive.rtol = o.adaptive.atol = 1e-8;
  auto sol = ode::solve(f, {torch::full({1}, 0.2, torch::kFloat64)}, 2.0, 0.0, o);
  // The solution grows 5x along the way and local errors of ~tol per step add up over
  // hundreds of bosh3 steps (measured: 38x tol for bosh3; dopri5 and tsit5 stayed within 30x).
  EXPECT_NEAR(sol.y[0].item<double>(), 1.0, 100 * 1e-8) << GetParam();
}

TEST_P(AdaptiveTest, DenseOutputAtSaveTimes) {
  auto y0 = torch::tensor({{1.0, 0.5}}, torch::kFloat64);
  ode::SolveOptions o;
  o.method = GetParam();
  o.adaptive.rtol = o.adaptive.atol = 1e-9;
  for (int k = 0; k <= 40; ++k) o.save_at.push_back(2.0 * k / 40);
  auto sol = ode::solve(rotation, {y0}, 0.0, 2.0, o);
  ASSERT_EQ(sol.ys.size(), 41u);
  double worst = 0;
  for (size_t i = 0; i < sol.ys.size(); ++i)
    worst = std::max(worst, (sol.ys[i][0] - exact(sol.ts[i], y0)).abs().max().item<double>());
  // Cubic Hermite interpolation errs by h^4/384 times the 4th derivative (~2^4 here); steps
  // at tol 1e-9 are a few hundredths at most, so the interpolation error is below 1e-6.
  EXPECT_LT(worst, 1e-6) << GetParam();
  EXPECT_TRUE(torch::equal(sol.ys.back()[0], sol.y[0]));  // t1 is saved exactly
}

INSTANTIATE_TEST_SUITE_P(AdaptiveTableaus, AdaptiveTest,
                         ::testing::Values("bosh3", "dopri5", "tsit5"),
                         [](const auto& info) { return std::string(info.param); });

TEST(OdeTest, FixedStepSaveAtGridIsExact) {
  auto y0 = torch::tensor({{1.0, 0.5}}, torch::kFloat64);
  ode::SolveOptions o;
  o.method = "rk4";
  o.steps = 10;
  o.save_at = {0.0, 0.5, 1.0};
  std::vector<State> seen;
  o.observer = [&](double t, const State& y) {
    if (t == 0.5) seen.push_back(y);
  };
  auto sol = ode::solve(rotation, {y0}, 0.0, 1.0, o);
  ASSERT_EQ(sol.ys.size(), 3u);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(torch::equal(sol.ys[1][0], seen[0][0]));  // a grid time: no interpolation
  EXPECT_EQ(sol.nfe, 40);                               // and no extra evaluation
}

TEST(OdeTest, BlowUpReportsWhereAndWhy) {
  // y' = y^2, y(0) = 1 blows up at t = 1: the solver must stop with a message, never NaN.
  auto f = [](double, const State& y) { return State{y[0] * y[0]}; };
  ode::SolveOptions o;
  o.method = "dopri5";
  try {
    ode::solve(f, {torch::ones({1}, torch::kFloat64)}, 0.0, 2.0, o);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("t = 0.99") != std::string::npos || m.find("t = 1") != std::string::npos)
        << m;
    EXPECT_TRUE(m.find("underflow") != std::string::npos ||
                m.find("non-finite") != std::string::npos ||
                m.find("max_steps") != std::string::npos)
        << m;
  }
  // Fixed steps straight through the singularity: caught at the end, not returned.
  o.method = "euler";
  o.steps = 100;
  EXPECT_THROW(ode::solve(f, {torch::ones({1}, torch::kFloat64)}, 0.0, 2.0, o), Error);
}

TEST(OdeTest, MaxStepsNamesTheOption) {
  ode::SolveOptions o;
  o.method = "bosh3";
  o.adaptive.rtol = o.adaptive.atol = 1e-12;
  o.adaptive.max_steps = 10;
  try {
    ode::solve(rotation, {torch::ones({1, 2}, torch::kFloat64)}, 0.0, 10.0, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_steps = 10"), std::string::npos) << e.what();
  }
  o.adaptive.rtol = -1;
  EXPECT_THROW(ode::solve(rotation, {torch::ones({1, 2}, torch::kFloat64)}, 0.0, 1.0, o), Error);
}

TEST(OdeTest, ErrorMaskKeepsRidersOutOfStepControl) {
  // x follows the rotation; z integrates a violently oscillating rider. Excluding z from
  // the error norm must leave the step sequence of x unchanged.
  auto y0 = torch::tensor({{1.0, 0.5}}, torch::kFloat64);
  auto f = [](double t, const State& y) {
    return State{rotation(t, {y[0]})[0],
                 torch::full({1}, 1e3 * std::cos(300 * t), torch::kFloat64)};
  };
  ode::SolveOptions o;
  o.method = "dopri5";
  auto alone = ode::solve(rotation, {y0}, 0.0, 2.0, o);
  o.adaptive.error_mask = {true, false};
  auto masked = ode::solve(f, {y0, torch::zeros({1}, torch::kFloat64)}, 0.0, 2.0, o);
  EXPECT_EQ(masked.n_accepted, alone.n_accepted);
  EXPECT_EQ(masked.nfe, alone.nfe);
  o.adaptive.error_mask = {};
  auto steered = ode::solve(f, {y0, torch::zeros({1}, torch::kFloat64)}, 0.0, 2.0, o);
  EXPECT_GT(steered.nfe, 2 * alone.nfe);  // the rider would have forced far smaller steps
}
