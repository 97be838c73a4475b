// Velocity networks and data sources.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/nn/velocity.h"

using namespace cnf;

TEST(NnTest, MlpShapesAndTimeDependence) {
  for (std::string emb : {"concat", "fourier"}) {
    for (std::string act : {"tanh", "relu", "silu", "selu", "gelu", "softplus"}) {
      nn::ModelSpec spec;
      spec.dim = 3;
      spec.width = 16;
      spec.depth = 2;
      spec.activation = act;
      spec.time_embedding = emb;
      torch::manual_seed(1);
      auto m = nn::make_model(spec);
      auto x = torch::randn({5, 3});
      auto v0 = m->forward(x, torch::zeros({5}));
      auto v1 = m->forward(x, torch::ones({5}));
      EXPECT_EQ(v0.sizes(), x.sizes());
      // A randomly initialized network depends on t: outputs differ by far more than float32 eps.
      EXPECT_GT((v0 - v1).abs().max().item<double>(), 1e-4) << emb << " " << act;
    }
  }
}

TEST(NnTest, MlpParameterCountMatchesLayout) {
  // 3-64-64-64-2 with time concatenated: (3*64+64) + 2*(64*64+64) + (64*2+2).
  nn::ModelSpec spec;
  auto m = nn::make_model(spec);
  EXPECT_EQ(nn::count_parameters(*m), (3 * 64 + 64) + 2 * (64 * 64 + 64) + (64 * 2 + 2));
}

TEST(NnTest, BadOptionsAreRejected) {
  nn::ModelSpec spec;
  spec.activation = "sigmoidish";
  EXPECT_THROW(nn::make_model(spec), Error);
  spec = {};
  spec.width = 0;
  EXPECT_THROW(nn::make_model(spec), Error);
  spec = {};
  spec.arch = "transformer";
  EXPECT_THROW(nn::make_model(spec), Error);
}

class ToyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ToyTest, ShapeFiniteAndReproducible) {
  auto s = data::make_source(GetParam());
  auto g1 = make_generator(7), g2 = make_generator(7), g3 = make_generator(8);
  auto a = s->sample(500, g1), b = s->sample(500, g2), c = s->sample(500, g3);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{500, 2}));
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_TRUE(torch::equal(a, b));   // same seed, same stream
  EXPECT_FALSE(torch::equal(a, c));  // another seed, another draw
  // Every toy set is centred within a few units and spread O(1): a loose sanity bound that
  // catches a broken scaling (e.g. degrees for radians) but not Monte-Carlo noise.
  EXPECT_LT(a.mean(0).abs().max().item<double>(), 1.5);
  const double sd = a.std(0).mean().item<double>();
  EXPECT_GT(sd, 0.5);
  EXPECT_LT(sd, 5.0);
}

INSTANTIATE_TEST_SUITE_P(AllToys, ToyTest, ::testing::ValuesIn(data::toy_names()),
                         [](const auto& info) { return info.param; });

TEST(DataTest, GaussianMixtureDensityIntegratesToOne) {
  // 1-D mixture: trapezoid rule on [-12, 12] with 20001 points; error ~ h^2 f'' ~ 1e-7.
  const auto f64 = torch::kFloat64;  // torch::tensor of doubles is float32 by default
  data::GaussianMixture gmm(torch::tensor({0.3, 0.7}, f64), torch::tensor({{-2.0}, {1.5}}, f64),
                            torch::tensor({{0.5}, {1.2}}, f64));
  auto x = torch::linspace(-12, 12, 20001, torch::kFloat64).unsqueeze(1);
  auto p = torch::exp(gmm.log_prob(x));
  const double mass = torch::trapezoid(p, x.squeeze(1)).item<double>();
  EXPECT_NEAR(mass, 1.0, 1e-6);
  // Closed form at a point: 0.3 N(0; -2, 0.25) + 0.7 N(0; 1.5, 1.44).
  auto pdf = [](double x, double m, double s) {
    return std::exp(-0.5 * (x - m) * (x - m) / (s * s)) / (s * std::sqrt(2 * M_PI));
  };
  const double expect = 0.3 * pdf(0, -2, 0.5) + 0.7 * pdf(0, 1.5, 1.2);
  EXPECT_NEAR(std::exp(gmm.log_prob(torch::zeros({1, 1}, torch::kFloat64)).item<double>()), expect,
              1e-12);
}

TEST(DataTest, GaussianMixtureSamplesHaveTheMixtureMean) {
  data::GaussianMixture gmm(torch::tensor({0.25, 0.75}), torch::tensor({{-4.0, 0.0}, {4.0, 2.0}}),
                            torch::ones({2, 2}));
  auto g = make_generator(3);
  auto x = gmm.sample(40000, g).to(torch::kFloat64);
  // Mean = (2, 1.5); per-coordinate sd <= sqrt(1 + 16) ~ 4.2, so the standard error of the
  // mean over 40000 draws is ~0.02; 0.1 is five standard errors.
  EXPECT_NEAR(x.select(1, 0).mean().item<double>(), 2.0, 0.1);
  EXPECT_NEAR(x.select(1, 1).mean().item<double>(), 1.5, 0.1);
}

TEST(DataTest, StandardNormalLogProb) {
  data::StandardNormal n(3);
  auto x = torch::tensor({{0.0, 1.0, -2.0}}, torch::kFloat64);
  EXPECT_NEAR(n.log_prob(x).item<double>(), -0.5 * (5.0 + 3 * std::log(2 * M_PI)), 1e-12);
}

TEST(DataTest, SpecsAndErrors) {
  EXPECT_EQ(data::make_source("gmm:4", 5)->dim(), 5);
  EXPECT_EQ(data::make_source("normal", 7)->dim(), 7);
  EXPECT_THROW(data::make_source("gmm:x", 2), Error);
  EXPECT_THROW(data::make_source("gmm:0", 2), Error);
  try {
    data::make_source("moon");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("moons"), std::string::npos) << e.what();
  }
  EXPECT_THROW(data::Table(torch::tensor({{1.0, std::nan("")}}, torch::kFloat64), "t"), Error);
}

TEST(DataTest, TableSplitKeepsHeldOutRowsApart) {
  auto rows = torch::arange(100, torch::kFloat32).reshape({50, 2});
  data::Table t(rows, "mem");
  auto g = make_generator(0);
  auto x = t.sample(1000, g);
  // Every drawn row is one of the table's rows: x[:,1] = x[:,0] + 1 and x[:,0] even.
  EXPECT_TRUE(torch::equal(x.select(1, 1), x.select(1, 0) + 1));
}
