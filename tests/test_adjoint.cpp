// Adjoint gradients against backprop through the solver and finite differences (float64).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cnf/nn/velocity.h"
#include "cnf/ode/adjoint.h"
#include "cnf/ode/solve.h"

using namespace cnf;
using ode::State;

namespace {
struct Setup {
  nn::VelocityField field;
  torch::Tensor y0;
};
Setup make_setup() {
  torch::manual_seed(5);
  nn::ModelSpec spec;
  spec.width = 16;
  spec.depth = 2;
  spec.activation = "tanh";
  Setup s{nn::make_model(spec), torch::randn({8, 2}, torch::kFloat64)};
  s.field->to(torch::kFloat64);
  return s;
}
// Loss of the solution: a fixed nonlinear functional.
torch::Tensor loss_of(const torch::Tensor& y1) {
  return (y1.pow(2).sum(1) + y1.select(1, 0)).sum();
}

std::vector<torch::Tensor> grads(const torch::Tensor& loss, const std::vector<torch::Tensor>& wrt) {
  return torch::autograd::grad({loss}, wrt);
}
}  // namespace

class AdjointTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AdjointTest, AgreesWithBackpropThroughTheSolver) {
  auto s = make_setup();
  auto params = s.field->parameters();
  ode::SolveOptions o;
  o.method = GetParam();
  o.steps = 200;
  o.adaptive.rtol = o.adaptive.atol = 1e-10;
  auto rhs = ode::field_rhs(*s.field);

  auto y0 = s.y0.clone().requires_grad_(true);
  auto direct = ode::solve(rhs, {y0}, 1.0, 0.0, o).y[0];
  std::vector<torch::Tensor> wrt{y0};
  wrt.insert(wrt.end(), params.begin(), params.end());
  auto g_direct = grads(loss_of(direct), wrt);

  auto y0b = s.y0.clone().requires_grad_(true);
  int64_t back_nfe = 0;
  auto adj = ode::solve_adjoint(rhs, {y0b}, params, 1.0, 0.0, o, nullptr, &back_nfe)[0];
  EXPECT_TRUE(torch::allclose(adj, direct, 0, 1e-12));  // same forward solve
  std::vector<torch::Tensor> wrt_b{y0b};
  wrt_b.insert(wrt_b.end(), params.begin(), params.end());
  auto g_adj = grads(loss_of(adj), wrt_b);
  EXPECT_GT(back_nfe, 0);
  // Discrete backprop and the continuous adjoint differ by the solver's error: rk4 with 200
  // steps (h^4 ~ 6e-10) and the adaptive pairs at tol 1e-10 agree to ~1e-7 relative.
  for (size_t i = 0; i < g_adj.size(); ++i)
    EXPECT_TRUE(torch::allclose(g_adj[i], g_direct[i], 1e-6, 1e-7))
        << GetParam() << " gradient " << i << " max diff "
        << (g_adj[i] - g_direct[i]).abs().max().item<double>();
}

INSTANTIATE_TEST_SUITE_P(Methods, AdjointTest, ::testing::Values("rk4", "dopri5", "tsit5"),
                         [](const auto& info) { return std::string(info.param); });

TEST(AdjointTest2, MatchesFiniteDifferences) {
  auto s = make_setup();
  auto params = s.field->parameters();
  ode::SolveOptions o;
  o.method = "dopri5";
  o.adaptive.rtol = o.adaptive.atol = 1e-11;
  auto rhs = ode::field_rhs(*s.field);
  auto y1 = ode::solve_adjoint(rhs, {s.y0}, params, 1.0, 0.0, o)[0];
  auto g = grads(loss_of(y1), params);
  // Central differences on a few weights of the first layer: truncation O(eps^2) and
  // solver noise ~1e-11 / eps; eps = 1e-5 gives ~1e-6 absolute accuracy.
  const double eps = 1e-5;
  auto w = params[0];
  for (int64_t k : {0, 7, 20}) {
    double f_plus, f_minus;
    {
      torch::NoGradGuard ng;
      auto flat = w.view(-1);
      const double orig = flat[k].item<double>();
      flat[k].fill_(orig + eps);
      f_plus = loss_of(ode::solve(rhs, {s.y0}, 1.0, 0.0, o).y[0]).item<double>();
      flat[k].fill_(orig - eps);
      f_minus = loss_of(ode::solve(rhs, {s.y0}, 1.0, 0.0, o).y[0]).item<double>();
      flat[k].fill_(orig);
    }
    EXPECT_NEAR(g[0].view(-1)[k].item<double>(), (f_plus - f_minus) / (2 * eps), 1e-5) << k;
  }
}

TEST(AdjointTest2, MultiTensorStateWithRider) {
  // State {x, z} with z' = |x|^2 (an integral riding along): dL/dx0 for L = z(t1) must match
  // backprop; the rider enters the adjoint through a_z.
  auto s = make_setup();
  auto params = s.field->parameters();
  auto base = ode::field_rhs(*s.field);
  ode::Rhs f = [&](double t, const State& y) {
    return State{base(t, {y[0]})[0], y[0].pow(2).sum(1)};
  };
  ode::SolveOptions o;
  o.method = "rk4";
  o.steps = 100;
  auto x0 = s.y0.clone().requires_grad_(true);
  auto z0 = torch::zeros({8}, torch::kFloat64);
  auto direct = ode::solve(f, {x0, z0}, 0.0, 1.0, o).y;
  auto gd = grads(direct[1].sum(), {x0})[0];
  auto x0b = s.y0.clone().requires_grad_(true);
  auto adj = ode::solve_adjoint(f, {x0b, z0}, params, 0.0, 1.0, o);
  auto ga = grads(adj[1].sum(), {x0b})[0];
  // rk4, h = 0.01: discretization gap ~1e-9.
  EXPECT_TRUE(torch::allclose(ga, gd, 1e-6, 1e-7)) << (ga - gd).abs().max().item<double>();
}
