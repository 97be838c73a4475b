// The fused CPU MLP path against LibTorch's kernels (the reference path).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "cnf/data/sources.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/nn/velocity.h"
#include "cnf/train/trainer.h"

using namespace cnf;

namespace {

// Largest |a - b| relative to the largest |b| (1 when b is all zeros).
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a - b).abs().max().item<double>() / scale;
}

// float64 agrees to ~1e-10: the two routes differ only by summation order and by
// Eigen's vs glibc's elementary functions (a few ulp each). float32: Eigen's vectorized
// tanh/exp/erf and oneDNN's sgemm blocking differ from LibTorch's by a few ulp, which a
// few layers of 64-wide sums grow to ~1e-6.
double tol(torch::Dtype d) { return d == torch::kDouble ? 1e-10 : 2e-5; }

struct Case {
  std::string activation, embedding;
  int64_t dim, width, depth;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  // Every activation, both embeddings; widths and depths drawn from a fixed generator.
  torch::manual_seed(7);
  for (const auto* act : {"tanh", "relu", "silu", "selu", "gelu", "softplus"})
    for (const auto* emb : {"concat", "fourier"}) {
      const auto r = torch::randint(1, 1000, {3});
      c.push_back({act, emb, 1 + r[0].item<int64_t>() % 5, 3 + r[1].item<int64_t>() % 90,
                   1 + r[2].item<int64_t>() % 4});
    }
  c.push_back({"tanh", "concat", 2, 256, 8});  // the largest shape the fast path takes
  return c;
}

std::shared_ptr<nn::MLPVelocityImpl> make(const Case& c, torch::Dtype dtype) {
  auto m = std::make_shared<nn::MLPVelocityImpl>(nn::MLPOptions(c.dim)
                                                     .width(c.width)
                                                     .depth(c.depth)
                                                     .activation(c.activation)
                                                     .time_embedding(c.embedding));
  m->to(dtype);
  // Larger weights than the default init, so activations leave their linear range.
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.mul_(2.0);
  return m;
}

std::string name(const Case& c, torch::Dtype d) {
  return c.activation + "/" + c.embedding + " dim " + std::to_string(c.dim) + " width " +
         std::to_string(c.width) + " depth " + std::to_string(c.depth) +
         (d == torch::kDouble ? " f64" : " f32");
}

}  // namespace

TEST(FastMlp, AppliesOnThisMachine) {
  // The CI machine has AVX2/FMA; without them every other test here would compare the
  // reference path with itself.
  ASSERT_TRUE(nn::fast::cpu_supported());
  auto m = make(cases()[0], torch::kFloat);
  auto x = torch::randn({5, cases()[0].dim});
  EXPECT_EQ(nn::fast::unsupported_reason(*m, x, torch::rand({5})), "");
  EXPECT_NE(nn::fast::unsupported_reason(*m, x.to(torch::kDouble), torch::rand({5})), "");
}

TEST(FastMlp, ForwardMatchesLibTorch) {
  for (auto dtype : {torch::kDouble, torch::kFloat})
    for (const auto& c : cases()) {
      auto m = make(c, dtype);
      auto x = torch::randn({300, c.dim}, dtype);  // 300: more than one row block, a tail
      auto t = torch::rand({300}, dtype);
      torch::NoGradGuard g;
      EXPECT_LT(rel_err(nn::fast::forward(*m, x, t), m->reference_forward(x, t)), tol(dtype))
          << name(c, dtype);
      // One time for all rows broadcasts.
      auto t1 = torch::full({1}, 0.3, dtype);
      EXPECT_LT(rel_err(nn::fast::forward(*m, x, t1), m->reference_forward(x, t1)), tol(dtype))
          << name(c, dtype) << " (one time)";
    }
}

// Prewarm starts oneDNN's code generation on another thread; products that run while it
// is still going (ctest runs each test in a fresh process, so this is the first product
// here) must give the same results.
TEST(FastMlp, PrewarmOverlapsWithTheFirstProducts) {
  nn::fast::Prewarm warm;
  for (const auto& c : cases()) {
    auto m = make(c, torch::kFloat);
    auto x = torch::randn({300, c.dim});
    auto t = torch::rand({300});
    auto xi = x.clone().requires_grad_(true);
    nn::fast::forward(*m, xi, t).pow(2).sum().backward();  // all three kinds of product
    auto xr = x.clone().requires_grad_(true);
    m->reference_forward(xr, t).pow(2).sum().backward();
    EXPECT_LT(rel_err(xi.grad(), xr.grad()), tol(torch::kFloat)) << name(c, torch::kFloat);
  }
}

TEST(FastMlp, GradientsMatchLibTorch) {
  for (auto dtype : {torch::kDouble, torch::kFloat})
    for (const auto& c : cases()) {
      auto m = make(c, dtype);
      auto x = torch::randn({300, c.dim}, dtype);
      auto t = torch::rand({300}, dtype);
      auto u = torch::randn({300, c.dim}, dtype);
      auto grads = [&](bool fast) {
        auto xi = x.clone().requires_grad_(true);
        auto v = fast ? nn::fast::forward(*m, xi, t) : m->reference_forward(xi, t);
        auto params = m->layer_parameters();
        std::vector<torch::Tensor> wrt{xi};
        wrt.insert(wrt.end(), params.begin(), params.end());
        return torch::autograd::grad({(v * u).sum()}, wrt);
      };
      auto gf = grads(true), gr = grads(false);
      for (size_t i = 0; i < gf.size(); ++i)
        EXPECT_LT(rel_err(gf[i], gr[i]), tol(dtype))
            << name(c, dtype) << (i == 0 ? " input" : " parameter " + std::to_string(i - 1));
    }
}

TEST(FastMlp, DivergenceMatchesAutograd) {
  for (auto dtype : {torch::kDouble, torch::kFloat})
    for (const auto& c : cases()) {
      auto m = make(c, dtype);
      auto x = torch::randn({200, c.dim}, dtype);
      auto t = torch::rand({200}, dtype);
      // Exact divergence by autograd through the reference path, one pass per dimension.
      auto xi = x.clone().requires_grad_(true);
      auto v = m->reference_forward(xi, t);
      auto div = torch::zeros({200}, dtype);
      for (int64_t j = 0; j < c.dim; ++j)
        div += torch::autograd::grad({v.select(1, j).sum()}, {xi}, {}, true)[0].select(1, j);
      torch::NoGradGuard g;
      auto [vf, df] = nn::fast::forward_with_divergence(*m, x, t);
      EXPECT_LT(rel_err(vf, v.detach()), tol(dtype)) << name(c, dtype);
      EXPECT_LT(rel_err(df, div), tol(dtype)) << name(c, dtype) << " divergence";
    }
}

TEST(FastMlp, SecondDerivativesStayExact) {
  // Under create_graph the fused backward recomputes through LibTorch; the gradient of
  // a function of the input gradient must equal the reference path's.
  auto c = Case{"silu", "fourier", 3, 24, 2};
  auto m = make(c, torch::kDouble);
  auto x = torch::randn({50, 3}, torch::kDouble);
  auto t = torch::rand({50}, torch::kDouble);
  auto second = [&](bool fast) {
    auto xi = x.clone().requires_grad_(true);
    auto v = fast ? nn::fast::forward(*m, xi, t) : m->reference_forward(xi, t);
    auto gx = torch::autograd::grad({v.pow(2).sum()}, {xi}, {}, true, true)[0];
    return torch::autograd::grad({gx.pow(2).sum()}, {m->layers[0]->weight})[0];
  };
  EXPECT_LT(rel_err(second(true), second(false)), 1e-10);  // float64, as above
}

TEST(FastMlp, ChosenAutomaticallyAndSwitchable) {
  auto c = Case{"selu", "concat", 2, 16, 2};
  auto m = make(c, torch::kFloat);
  auto x = torch::randn({10, 2});
  auto t = torch::rand({10});
  auto fn = [](const torch::Tensor& y) { return y.grad_fn() ? y.grad_fn()->name() : ""; };
  EXPECT_NE(fn(m->forward(x, t)).find("FusedMLP"), std::string::npos);
  // An input that needs its gradient (divergence by autograd, score) takes the reference.
  EXPECT_EQ(fn(m->forward(x.clone().requires_grad_(true), t)).find("FusedMLP"), std::string::npos);
  nn::fast::set_enabled(false);
  EXPECT_EQ(fn(m->forward(x, t)).find("FusedMLP"), std::string::npos);
  nn::fast::set_enabled(true);
}

TEST(FastMlp, ThreadCountChangesOnlyRounding) {
  auto c = Case{"tanh", "concat", 2, 64, 3};
  auto m = make(c, torch::kDouble);
  auto x = torch::randn({3000, 2}, torch::kDouble);
  auto t = torch::rand({3000}, torch::kDouble);
  auto run = [&](int threads) {
    at::set_num_threads(threads);
    auto xi = x.clone().requires_grad_(true);
    auto v = nn::fast::forward(*m, xi, t);
    auto g = torch::autograd::grad({v.sum()}, {m->layers[1]->weight})[0];
    torch::NoGradGuard ng;
    auto d = nn::fast::forward_with_divergence(*m, x, t).second;
    at::set_num_threads(1);
    return std::make_tuple(v.detach(), g, d);
  };
  auto [v1, g1, d1] = run(1);
  auto [v2, g2, d2] = run(2);
  // Rows are independent: identical results. Parameter gradients are summed per thread
  // and then across threads: reassociation only (float64, 3,000 terms: ~1e-13).
  EXPECT_LT(rel_err(v2, v1), 1e-14);
  EXPECT_LT(rel_err(d2, d1), 1e-14);
  EXPECT_LT(rel_err(g2, g1), 1e-12);
}

TEST(FastMlp, TrainingLossCurveMatchesReference) {
  auto curve = [](bool fast) {
    nn::fast::set_enabled(fast);
    train::FlowSpec spec;
    spec.data = "moons";
    spec.prior = "normal";
    train::TrainOptions o;
    o.steps = 40;
    o.batch_size = 256;
    train::Trainer tr(spec, o, data::make_source("moons"), data::make_source("normal"));
    std::vector<double> losses;
    for (int i = 0; i < o.steps; ++i) losses.push_back(tr.step().loss.item<double>());
    nn::fast::set_enabled(true);
    return losses;
  };
  auto a = curve(true), b = curve(false);
  // float32: per-step differences of ~1e-7 relative in the gradients pass through Adam,
  // whose update direction g / sqrt(v) is insensitive to them; after 40 steps the
  // losses still agree to ~1e-5 relative (1e-4 leaves a margin).
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], 1e-4 * std::abs(b[i])) << "step " << i;
}

#include "src/train/fused_adam.h"

TEST(FastMlp, FusedAdamMatchesLibTorchAdam) {
  // Same updates as LibTorch's Adam and AdamW (L2 and decoupled weight decay) over a few
  // steps of a quadratic loss, float64: only the order of a few roundings differs.
  for (bool decoupled : {false, true}) {
    torch::manual_seed(3);
    auto a = torch::randn({7, 5}, torch::kDouble).requires_grad_(true);
    auto b = a.detach().clone().requires_grad_(true);
    const auto start = a.detach().clone();
    auto target = torch::randn({7, 5}, torch::kDouble);
    std::unique_ptr<torch::optim::Optimizer> fused, ref;
    if (decoupled) {
      fused = std::make_unique<train::FusedAdamW>(
          std::vector<torch::Tensor>{a}, torch::optim::AdamWOptions(0.05).weight_decay(0.1));
      ref = std::make_unique<torch::optim::AdamW>(
          std::vector<torch::Tensor>{b}, torch::optim::AdamWOptions(0.05).weight_decay(0.1));
    } else {
      fused = std::make_unique<train::FusedAdam>(std::vector<torch::Tensor>{a},
                                                 torch::optim::AdamOptions(0.05).weight_decay(0.1));
      ref = std::make_unique<torch::optim::Adam>(std::vector<torch::Tensor>{b},
                                                 torch::optim::AdamOptions(0.05).weight_decay(0.1));
    }
    for (int step = 0; step < 20; ++step) {
      for (auto* opt : {fused.get(), ref.get()}) opt->zero_grad();
      (a - target).pow(2).sum().backward();
      (b - target).pow(2).sum().backward();
      fused->step();
      ref->step();
    }
    EXPECT_LT(rel_err(a.detach(), b.detach()), 1e-12) << (decoupled ? "AdamW" : "Adam");
    // 20 steps of ~lr = 0.05 each moved the parameters (the comparison is not between
    // two untouched tensors).
    EXPECT_GT((a.detach() - start).abs().max().item<double>(), 0.5);
  }
}
