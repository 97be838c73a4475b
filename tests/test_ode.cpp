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
    ode::SolveOptions o;
    o.method = GetParam();
    o.steps = n;
    auto sol = ode::solve(rotation, {y0}, 0.0, T, o);
    const double err = (sol.y[0] - exact(T, y0)).abs().max().item<double>();
    log_h.push_back(std::log(T / n));
    log_err.push_back(std::log(err));
    EXPECT_EQ(sol.nfe, static_cast<int64_t>(n) * tab.stages());
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
  EXPECT_NO_THROW(ode::ButcherTableau("ok", {0.0, 1.0}, {{}, {1.0}}, {0.5, 0.5}, 2,
                                      {0.5, -0.5}, 1));
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
