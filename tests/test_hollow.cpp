// The hollow network (nn/hollow.h): exact divergence read off one forward pass.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/nn/hollow.h"
#include "cnf/path/schedule.h"
#include "tests/cli_util.h"

namespace {

using namespace cnf;

nn::HollowVelocity random_hollow(int64_t dim, int64_t depth, const char* act) {
  torch::manual_seed(7);
  nn::HollowVelocity net(nn::HollowOptions(dim).width(6).depth(depth).activation(act));
  net->to(torch::kFloat64);
  return net;
}

TEST(Hollow, DivergenceEqualsTheTraceOfTheFullJacobian) {
  // The analytic divergence assumes block i of the conditioner never sees x_i. Against
  // the trace of the Jacobian by autograd (dim vector-Jacobian products through the whole
  // network): without the mask the conditioner's dh_i/dx_i terms would be missing and the
  // two would differ by O(1). float64, so 1e-10 relative means the same number.
  for (const char* act : {"tanh", "softplus", "silu"}) {
    for (int64_t depth : {1, 3}) {
      auto net = random_hollow(5, depth, act);
      auto gen = make_generator(3);
      auto x = torch::randn({9, 5}, gen, torch::kFloat64);
      auto t = torch::rand({9}, gen, torch::kFloat64);
      auto [v, div] = net->forward_with_divergence(x, t);
      EXPECT_TRUE(torch::allclose(v, net->forward(x, t), 0, 0)) << "same v both ways";
      density::DivergenceOptions exact;
      exact.method = density::Divergence::exact;
      auto ref = density::velocity_and_divergence(*net, x, t, exact, {}, false).second;
      const double err = ((div - ref).abs().max() / ref.abs().max()).item<double>();
      EXPECT_LT(err, 1e-10) << act << " depth " << depth;
      // The off-diagonal Jacobian is not zero: the conditioner does couple the coordinates.
      auto xr = x.clone().requires_grad_(true);
      auto g = torch::autograd::grad({net->forward(xr, t).select(1, 0).sum()}, {xr})[0];
      EXPECT_GT(g.slice(1, 1).abs().max().item<double>(), 1e-3);
    }
  }
}

TEST(Hollow, AnalyticLikelihoodEqualsTheAutogradRoute) {
  // The same solve with the divergence by the hollow route or by autograd: the ODE's state
  // is identical, so the log-densities agree to rounding (float64, fixed rk4 steps).
  auto net = random_hollow(4, 2, "tanh");
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(4);
  auto gen = make_generator(1);
  auto x = torch::randn({50, 4}, gen, torch::kFloat64);
  density::LikelihoodOptions o;
  o.solve.method = "rk4";
  o.solve.steps = 8;
  o.divergence.method = density::Divergence::analytic;
  auto a = density::log_likelihood(*net, *schedule, prior, x, o, gen).log_prob;
  o.divergence.method = density::Divergence::exact;
  auto e = density::log_likelihood(*net, *schedule, prior, x, o, gen).log_prob;
  EXPECT_LT((a - e).abs().max().item<double>(), 1e-9);
  EXPECT_GT(a.std().item<double>(), 1e-2);  // points with different densities
}

TEST(Hollow, BadOptionsAreRefused) {
  EXPECT_THROW(nn::HollowVelocity(nn::HollowOptions(1)), Error);
  EXPECT_THROW(nn::HollowVelocity(nn::HollowOptions(3).width(0)), Error);
  EXPECT_THROW(nn::HollowVelocity(nn::HollowOptions(3).depth(0)), Error);
  nn::HollowVelocity net(nn::HollowOptions(3));
  EXPECT_THROW(net->forward(torch::randn({4, 2}), torch::rand({4})), Error);
  nn::ModelSpec spec;
  spec.arch = "hollow";
  spec.time_embedding = "fourier";
  EXPECT_THROW(nn::make_model(spec), Error);
}

TEST(Hollow, CliTrainsAndMeasuresTheLikelihoodAnalytically) {
  using cnf_test::contains;
  using cnf_test::run_cnf;
  const std::string dir = ::testing::TempDir() + "/cnf_hollow_cli_" + std::to_string(::getpid());
  auto r = run_cnf(
      "train --arch hollow --width 8 --depth 2 --activation tanh --data 8gaussians --steps 30 "
      "--eval-n 100 --quiet --out " +
      dir);
  ASSERT_EQ(r.code, 0) << r.output;
  // The checkpoint rebuilds the hollow network, and nll takes the analytic route.
  r = run_cnf("nll --ckpt " + dir +
              "/model.pt -n 100 --method rk4 --steps 4 --divergence analytic --json " + dir +
              "/nll.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "analytic")) << r.output;
  std::filesystem::remove_all(dir);
}

}  // namespace
