// Maximum likelihood through the ODE: the loss and every regularizer against closed forms on
// linear flows, adjoint against backprop gradients, and MLE recovering a Gaussian.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/io/files.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/nn/velocity.h"
#include "cnf/objective/mle.h"
#include "cnf/path/schedule.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

using namespace cnf;

namespace {

// v(x) = A x + b with trainable A [D, D] and b [D] (time-independent).
struct AffineImpl : nn::VelocityFieldImpl {
  explicit AffineImpl(torch::Tensor a, torch::Tensor bias) {
    A = register_parameter("A", a);
    b = register_parameter("b", bias);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
    return torch::matmul(x, A.t()) + b;
  }
  std::vector<int64_t> sample_shape() const override { return {A.size(0)}; }
  torch::Tensor A, b;
};

// A = a I + w J in 2-D: X_t = e^{a t} R(w t) X_0, |v|^2 = (a^2 + w^2) |X_t|^2,
// ||A||_F^2 = 2 (a^2 + w^2), div = 2 a.
torch::Tensor spiral(double a, double w) {
  return torch::tensor({{a, -w}, {w, a}}, torch::kFloat64);
}

// `steps` Adam steps (lr 0.05) of maximum likelihood with the exact divergence and
// dopri5 at rtol = atol = `tol`, prior N(0, I) in 2-D; returns the last loss.
double fit_mle(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
               const torch::Tensor& data, double tol, int steps, at::Generator& gen) {
  data::StandardNormal prior(2);
  objective::MLEOptions o;
  o.divergence.method = density::Divergence::exact;
  o.solve.adaptive.rtol = o.solve.adaptive.atol = tol;
  torch::optim::Adam opt(field.parameters(), torch::optim::AdamOptions(0.05));
  double loss = 0;
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    auto r = objective::mle_loss(field, schedule, prior, data, o, gen);
    r.loss.backward();
    opt.step();
    loss = r.loss.item<double>();
  }
  return loss;
}

}  // namespace

TEST(Mle, LossAndRegularizersMatchClosedFormsOnALinearFlow) {
  const double a = 0.4, w = 1.3;
  AffineImpl field(spiral(a, w), torch::zeros({2}, torch::kFloat64));
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(2);
  auto gen = make_generator(1);
  auto x = torch::randn({64, 2}, gen, torch::kFloat64);
  const double r2 = x.pow(2).sum(1).mean().item<double>();

  objective::MLEOptions o;
  o.solve.adaptive.rtol = o.solve.adaptive.atol = 1e-9;
  o.kinetic = 1.0;
  o.jacobian = 1.0;
  o.steepest = 1.0;
  o.divergence.method = density::Divergence::exact;
  auto r = objective::mle_loss(field, *schedule, prior, x, o, gen);

  // -log rho_0(x) = -log N(e^a R(w) x; 0, I) - 2a = |x|^2 e^{2a} / 2 + log(2 pi) - 2a.
  const double nll = r2 * std::exp(2 * a) / 2 + std::log(2 * M_PI) - 2 * a;
  // int_0^1 (a^2 + w^2) e^{2 a t} |x|^2 dt.
  const double kinetic = (a * a + w * w) * r2 * (std::exp(2 * a) - 1) / (2 * a);
  // The Frobenius norm is constant; one Rademacher probe eps gives |A^T eps|^2 =
  // (a^2 + w^2) |eps|^2 = 2 (a^2 + w^2) exactly, since A A^T = (a^2 + w^2) I.
  const double jacobian = 2 * (a * a + w * w);
  // Model marginals rho_t = N(0, e^{-2a(1-t)} I): grad log rho_1 - grad log rho_t =
  // x (e^{2a(1-t)} - 1), so the integrand is |X_t|^2 ((a + 1 - e^{2a(1-t)})^2 + w^2);
  // Simpson's rule with 2000 panels (error ~1e-13).
  double steepest = 0;
  const int n = 2000;
  for (int i = 0; i <= n; ++i) {
    const double t = static_cast<double>(i) / n;
    const double f =
        std::exp(2 * a * t) * (std::pow(a + 1 - std::exp(2 * a * (1 - t)), 2) + w * w) * r2;
    steepest += f * (i == 0 || i == n ? 1 : (i % 2 ? 4 : 2));
  }
  steepest /= 3.0 * n;
  // dopri5 at 1e-9 in float64: relative errors ~1e-8; 1e-6 leaves margin.
  EXPECT_NEAR(r.diagnostics["nll"].item<double>(), nll, 1e-6 * std::abs(nll));
  EXPECT_NEAR(r.diagnostics["kinetic"].item<double>(), kinetic, 1e-6 * kinetic);
  EXPECT_NEAR(r.diagnostics["jacobian"].item<double>(), jacobian, 1e-6 * jacobian);
  EXPECT_NEAR(r.diagnostics["steepest"].item<double>(), steepest, 1e-6 * steepest);
  EXPECT_NEAR(r.loss.item<double>(), nll + kinetic + jacobian + steepest,
              1e-6 * (nll + kinetic + jacobian + steepest));

  // Hutchinson's divergence of a linear field is exact with Rademacher probes
  // (eps^T A eps = tr A + off-diagonal terms that cancel for A = a I + w J).
  o.divergence.method = density::Divergence::hutchinson;
  o.steepest = 0;
  auto h = objective::mle_loss(field, *schedule, prior, x, o, gen);
  EXPECT_NEAR(h.diagnostics["nll"].item<double>(), nll, 1e-6 * std::abs(nll));
}

TEST(Mle, AdjointGradientsEqualBackprop) {
  torch::manual_seed(4);
  auto model = nn::make_model([] {
    nn::ModelSpec s;
    s.dim = 2;
    s.width = 16;
    s.depth = 2;
    s.activation = "tanh";
    return s;
  }());
  model->to(torch::kFloat64);
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(2);
  auto x = torch::randn({32, 2}, make_generator(2), torch::kFloat64);
  objective::MLEOptions o;
  o.solve.adaptive.rtol = o.solve.adaptive.atol = 1e-8;
  o.kinetic = 0.1;
  o.jacobian = 0.1;
  o.steepest = 0.1;
  auto grads = [&](bool adjoint) {
    o.adjoint = adjoint;
    model->zero_grad();
    auto gen = make_generator(3);  // the same Hutchinson probes for both routes
    auto r = objective::mle_loss(*model, *schedule, prior, x, o, gen);
    r.loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : model->parameters()) g.push_back(p.grad().clone().reshape({-1}));
    return std::make_pair(torch::cat(g), r.loss.item<double>());
  };
  auto [g_bp, loss_bp] = grads(false);
  auto [g_adj, loss_adj] = grads(true);
  EXPECT_NEAR(loss_bp, loss_adj, 1e-9 * std::abs(loss_bp));  // the same forward solve
  // Backprop differentiates the discrete solver, the adjoint the continuous ODE: they
  // differ by the solver error, ~1e-7 relative at tolerance 1e-8.
  const double rel = ((g_bp - g_adj).norm() / g_bp.norm()).item<double>();
  EXPECT_LT(rel, 1e-5) << "relative gradient difference " << rel;
  EXPECT_GT(g_bp.norm().item<double>(), 1e-3);  // a gradient worth comparing
}

TEST(Mle, ForwardModeJvpAndItsBackwardMatchAutograd) {
  // forward_with_jvp against LibTorch's autograd on the reference forward: the JVP against
  // the full Jacobian times u, and the gradient of L = <g_v, v> + <g_jv, J u> in x and in
  // every parameter against a double backward. float64, so agreement to 1e-10 (relative
  // to the largest entry) means the same formulas, not merely close ones. Both routes: the
  // fused kernels (nn/fast_mlp.h) and LibTorch's ops (`--fast-mlp off`).
  for (bool fused : {true, false}) {
    for (const char* act : {"tanh", "relu", "silu", "selu", "gelu", "softplus"}) {
      for (const char* emb : {"concat", "fourier"}) {
        if (fused && !nn::fast::cpu_supported()) continue;
        torch::manual_seed(11);
        nn::MLPVelocity mlp(
            nn::MLPOptions(3).width(12).depth(3).activation(act).time_embedding(emb));
        mlp->to(torch::kFloat64);
        auto gen = make_generator(5);
        const int64_t b = 7;
        auto x = torch::randn({b, 3}, gen, torch::kFloat64).requires_grad_(true);
        auto t = torch::rand({b}, gen, torch::kFloat64);
        auto u = torch::randn({b, 3}, gen, torch::kFloat64);
        auto gv = torch::randn({b, 3}, gen, torch::kFloat64);
        auto gjv = torch::randn({b, 3}, gen, torch::kFloat64);
        auto scale = [](const torch::Tensor& r) { return r.abs().max().item<double>() + 1e-300; };
        auto close = [&](const torch::Tensor& a, const torch::Tensor& r, const std::string& what) {
          const double err = (a - r).abs().max().item<double>() / scale(r);
          EXPECT_LT(err, 1e-10) << (fused ? "fused " : "libtorch ") << act << " " << emb << " "
                                << what << ": " << err;
        };

        auto v_ref = mlp->reference_forward(x, t);
        // J u by rows of the Jacobian: (J u)_i = sum_j (dv_i/dx_j) u_j.
        std::vector<torch::Tensor> cols;
        for (int64_t i = 0; i < 3; ++i) {
          auto gi = torch::autograd::grad({v_ref.select(1, i).sum()}, {x}, {}, true, true)[0];
          cols.push_back((gi * u).sum(1));
        }
        auto jv_ref = torch::stack(cols, 1);
        auto loss_ref = (gv * v_ref).sum() + (gjv * jv_ref).sum();
        std::vector<torch::Tensor> wrt{x};
        for (auto& p : mlp->parameters()) wrt.push_back(p);
        auto g_ref = torch::autograd::grad({loss_ref}, wrt, {}, false, false, true);

        nn::fast::set_enabled(fused);
        auto [v, jv] = mlp->forward_with_jvp(x, t, u);
        close(v, v_ref, "v");
        close(jv, jv_ref, "J u");
        auto loss = (gv * v).sum() + (gjv * jv).sum();
        auto g = torch::autograd::grad({loss}, wrt, {}, false, false, true);
        nn::fast::set_enabled(true);
        ASSERT_EQ(g.size(), g_ref.size());
        for (size_t k = 0; k < g.size(); ++k) {
          if (!g_ref[k].defined()) continue;  // the Fourier frequencies are a buffer
          ASSERT_TRUE(g[k].defined()) << act << " " << emb << " gradient " << k;
          close(g[k], g_ref[k], "gradient " + std::to_string(k));
        }
      }
    }
  }
}

TEST(Mle, FusedJvpKernelsMatchLibTorchOnManyBlocksAndThreads) {
  // The fused JVP splits the batch into cache blocks (256 rows at width 64) and the blocks
  // over threads; 600 rows make three blocks, the last one partial, on two threads. The
  // LibTorch route (one product per layer on the whole batch) is the reference.
  if (!nn::fast::cpu_supported()) GTEST_SKIP() << "no AVX2/FMA";
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    // float64: the same formulas to rounding (1e-10 relative to the largest entry);
    // float32: products of 64 terms in a different order (oneDNN vs OpenBLAS) differ by a
    // few units of float's 6e-8 per layer, so 1e-4 relative bounds four layers with room.
    const double tol = dtype == torch::kFloat64 ? 1e-10 : 1e-4;
    torch::manual_seed(3);
    nn::MLPVelocity mlp(
        nn::MLPOptions(3).width(64).depth(3).activation("tanh").time_embedding("fourier"));
    mlp->to(dtype);
    auto gen = make_generator(8);
    const int64_t b = 600;
    auto x = torch::randn({b, 3}, gen, torch::kFloat64).to(dtype).requires_grad_(true);
    auto t = torch::rand({b}, gen, torch::kFloat64).to(dtype);
    auto u = torch::randn({b, 3}, gen, torch::kFloat64).to(dtype);
    auto gv = torch::randn({b, 3}, gen, torch::kFloat64).to(dtype);
    auto gjv = torch::randn({b, 3}, gen, torch::kFloat64).to(dtype);
    std::vector<torch::Tensor> wrt{x};
    for (auto& p : mlp->parameters()) wrt.push_back(p);
    auto run = [&](bool fused) {
      nn::fast::set_enabled(fused);
      auto [v, jv] = mlp->forward_with_jvp(x, t, u);
      auto g =
          torch::autograd::grad({(gv * v).sum() + (gjv * jv).sum()}, wrt, {}, false, false, true);
      nn::fast::set_enabled(true);
      g.insert(g.begin(), {v.detach(), jv.detach()});
      return g;
    };
    auto fused = run(true), ref = run(false);
    ASSERT_EQ(fused.size(), ref.size());
    for (size_t k = 0; k < ref.size(); ++k) {
      if (!ref[k].defined()) continue;  // the Fourier frequencies are a buffer
      ASSERT_TRUE(fused[k].defined()) << k;
      const double err =
          ((fused[k] - ref[k]).abs().max() / (ref[k].abs().max() + 1e-300)).item<double>();
      EXPECT_LT(err, tol) << torch::toString(dtype) << " output/gradient " << k << ": " << err;
    }
  }
  at::set_num_threads(threads);
}

TEST(Mle, ForwardModeRouteGivesTheAutogradRoutesLossAndGradients) {
  // MLE of an MLP with Hutchinson takes the forward-mode route; `--fast-mlp off` the double
  // backward. e^T J e is the same number either way, so loss and gradients agree to
  // rounding (float64: 1e-9 relative, the solve's adaptive steps being identical), with
  // the kinetic regularizer on and two probes, for backprop and the adjoint.
  torch::manual_seed(4);
  nn::MLPVelocity mlp(nn::MLPOptions(2).width(16).depth(2).activation("tanh"));
  mlp->to(torch::kFloat64);
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(2);
  auto x = torch::randn({32, 2}, make_generator(2), torch::kFloat64);
  objective::MLEOptions o;
  o.solve.adaptive.rtol = o.solve.adaptive.atol = 1e-6;
  o.kinetic = 0.1;
  o.divergence.probes = 2;
  auto run = [&](bool forward_mode, bool adjoint) {
    nn::fast::set_enabled(forward_mode);
    o.adjoint = adjoint;
    mlp->zero_grad();
    auto gen = make_generator(3);
    auto r = objective::mle_loss(*mlp, *schedule, prior, x, o, gen);
    r.loss.backward();
    nn::fast::set_enabled(true);
    std::vector<torch::Tensor> g;
    for (auto& p : mlp->parameters()) g.push_back(p.grad().clone().reshape({-1}));
    return std::make_tuple(torch::cat(g), r.loss.item<double>(),
                           r.diagnostics.at("nfe").item<double>());
  };
  for (bool adjoint : {false, true}) {
    auto [g_fm, loss_fm, nfe_fm] = run(true, adjoint);
    auto [g_ad, loss_ad, nfe_ad] = run(false, adjoint);
    EXPECT_EQ(nfe_fm, nfe_ad);
    EXPECT_NEAR(loss_fm, loss_ad, 1e-9 * std::abs(loss_ad));
    const double rel = ((g_fm - g_ad).norm() / g_ad.norm()).item<double>();
    EXPECT_LT(rel, 1e-9) << (adjoint ? "adjoint" : "backprop");
    EXPECT_GT(g_ad.norm().item<double>(), 1e-3);  // a gradient worth comparing
  }
}

TEST(Mle, RecoversAGaussiansMeanAndCovariance) {
  // Data: 4,000 fixed draws of N(m, C). An affine flow can map them exactly to N(0, I), so
  // the MLE optimum reproduces the data's own mean and covariance (no Monte-Carlo error in
  // the comparison: the reference is the empirical moments of these very points).
  auto gen = make_generator(5);
  auto L = torch::tensor({{1.5, 0.0}, {0.8, 0.5}}, torch::kFloat64);
  auto m = torch::tensor({1.0, -2.0}, torch::kFloat64);
  auto data = torch::matmul(torch::randn({4000, 2}, gen, torch::kFloat64), L.t()) + m;
  auto emp_mean = data.mean(0);
  auto centered = data - emp_mean;
  auto emp_cov = torch::matmul(centered.t(), centered) / data.size(0);

  auto field = std::make_shared<AffineImpl>(torch::zeros({2, 2}, torch::kFloat64),
                                            torch::zeros({2}, torch::kFloat64));
  auto schedule = path::make_schedule("condot");
  const double loss = fit_mle(*field, *schedule, data, 1e-7, 400, gen);
  // The flow's rho_0 is Gaussian: pull back N(0, I) exactly through the learned map by
  // transporting its mean (zero) and the basis directions. X_0 = T(X_1) is affine, so
  // mean = T(0) and covariance = J J^T with J = T(e_i) - T(0).
  ode::SolveOptions so;
  so.method = "dopri5";
  so.adaptive.rtol = so.adaptive.atol = 1e-9;
  auto pts = torch::cat({torch::zeros({1, 2}, torch::kFloat64), torch::eye(2, torch::kFloat64)});
  auto mapped = train::generate(*field, *schedule, pts, so).y[0];
  auto mean = mapped[0];
  auto J = (mapped.slice(0, 1, 3) - mean).t();
  auto cov = torch::matmul(J, J.t());
  // The optimum's NLL equals the Gaussian entropy of the empirical covariance:
  // 0.5 log det(2 pi e C). Adam after 400 steps is within ~1e-3 of it (measured).
  const double optimum = 0.5 * std::log(torch::det(2 * M_PI * M_E * emp_cov).item<double>());
  EXPECT_NEAR(loss, optimum, 5e-3);
  EXPECT_LT((mean - emp_mean).abs().max().item<double>(), 0.02) << mean << emp_mean;
  EXPECT_LT((cov - emp_cov).abs().max().item<double>(), 0.03) << cov << emp_cov;
}

TEST(Mle, BadOptionsAreRefused) {
  objective::MLEOptions o;
  o.kinetic = -1;
  EXPECT_THROW(o.validate(), Error);
  o.kinetic = 0;
  o.divergence.method = density::Divergence::analytic;
  EXPECT_THROW(o.validate(), Error);
}

namespace {
// Mean training NFE over the last 30 of 150 MLE steps on 8gaussians.
double late_nfe(double weight) {
  train::FlowSpec spec;
  spec.data = "8gaussians";
  spec.objective = "mle";
  spec.model.width = 32;
  spec.model.depth = 2;
  spec.model.activation = "tanh";
  train::TrainOptions o;
  o.steps = 150;
  o.batch_size = 128;
  o.lr = 5e-3;
  o.seed = 3;
  o.mle.kinetic = o.mle.jacobian = weight;
  train::Trainer t(spec, o, data::make_source("8gaussians"), data::make_source("normal", 2));
  double sum = 0;
  t.run([&](int64_t step, const objective::LossResult& r) {
    if (step > 120) sum += r.diagnostics.at("nfe").item<double>();
    return true;
  });
  return sum / 30;
}
}  // namespace

TEST(Mle, RegularizedFlowNeedsFewerEvaluations) {
  // Kinetic + Jacobian regularization (RNODE) keeps the dynamics simple, so dopri5 takes
  // fewer steps. Measured with these settings: 40.8 NFE unregularized, 31.0 regularized;
  // we require at least a 15% saving.
  const double plain = late_nfe(0.0), regularized = late_nfe(1.0);
  std::printf("late NFE: %.1f unregularized, %.1f regularized\n", plain, regularized);
  EXPECT_LT(regularized, 0.85 * plain) << "NFE " << plain << " -> " << regularized;
}

TEST(Mle, CliTrainsByMaximumLikelihoodAndKeepsTheLastGoodCheckpoint) {
  using cnf_test::contains;
  using cnf_test::run_cnf;
  const std::string dir = ::testing::TempDir() + "/cnf_mle_cli_" + std::to_string(::getpid());
  auto r = run_cnf(
      "train --objective mle --data 8gaussians --steps 20 --width 16 --depth 2 "
      "--activation tanh --batch-size 64 --eval-n 100 --quiet --kinetic 0.01 "
      "--out " +
      dir + "/ok");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/ok/nfe.png"));
  EXPECT_TRUE(contains(io::read_text(dir + "/ok/metrics.json"), "train_nfe_mean"));
  // A solver step limit that cannot be met stops training with the reason and the path of
  // the last good checkpoint (here the initial state, step 0).
  r = run_cnf(
      "train --objective mle --data 8gaussians --steps 20 --width 16 --depth 2 "
      "--batch-size 64 --quiet --mle-max-steps 2 --out " +
      dir + "/fail");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "max")) << r.output;
  EXPECT_TRUE(contains(r.output, "last good state (step 0)")) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/fail/model.pt"));
  r = run_cnf("train --objective mle --mle-divergence analytic --steps 1 --quiet --out " + dir +
              "/bad");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "analytic")) << r.output;
  std::filesystem::remove_all(dir);
}

TEST(Mle, StackedBlocksRouteRowsByTime) {
  // Block k of K sees local time K t - k; rows of one batch at different times go to their
  // own blocks (flow matching draws t per row), and t = 1 belongs to the last block.
  torch::manual_seed(4);
  nn::ModelSpec spec;
  spec.blocks = 3;
  spec.activation = "tanh";
  auto field = nn::make_model(spec);
  auto* stack = dynamic_cast<nn::StackedVelocityImpl*>(field.get());
  ASSERT_NE(stack, nullptr);
  ASSERT_EQ(stack->blocks.size(), 3u);
  auto x = torch::randn({5, 2});
  auto t = torch::tensor({0.1f, 0.5f, 0.9f, 1.0f, 1.0f / 3});
  auto v = field->forward(x, t);
  const int blk[] = {0, 1, 2, 2, 1};
  for (int i = 0; i < 5; ++i) {
    const double local = 3 * t[i].item<double>() - blk[i];
    auto want = stack->blocks[blk[i]]->forward(x.slice(0, i, i + 1), torch::full({1}, local));
    // Same network on the same input and time; the row's product may be blocked differently
    // in a batch of 1 than of 5 (float32 rounding only).
    EXPECT_LT((v[i] - want[0]).abs().max().item<double>(), 1e-5) << "row " << i;
  }
  // The blocks are distinct networks: the same row at t = 0.1 and 0.1 + 1/3 differ.
  auto a = field->forward(x.slice(0, 0, 1), torch::full({1}, 0.1f));
  auto b = stack->blocks[1]->forward(x.slice(0, 0, 1), torch::full({1}, 0.3f));
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-3);
  // Spec round trip keeps the stack (old checkpoints without the field read as 1 block).
  train::FlowSpec fs;
  fs.model.blocks = 3;
  EXPECT_EQ(train::FlowSpec::parse(fs.serialize(), "test").model.blocks, 3);
  EXPECT_EQ(train::FlowSpec::parse(train::FlowSpec().serialize(), "test").model.blocks, 1);
  spec.blocks = 0;
  EXPECT_THROW(nn::make_model(spec), cnf::Error);
}

TEST(Mle, StackOfAffineBlocksReachesTheGaussianOptimum) {
  // Two affine blocks compose to an affine map, so MLE through the stack reaches the same
  // optimum as one affine flow: the Gaussian entropy of the data's empirical covariance.
  auto gen = make_generator(6);
  auto L = torch::tensor({{1.2, 0.0}, {-0.6, 0.7}}, torch::kFloat64);
  auto data = torch::matmul(torch::randn({1000, 2}, gen, torch::kFloat64), L.t()) +
              torch::tensor({-1.0, 0.5}, torch::kFloat64);
  auto centered = data - data.mean(0);
  auto emp_cov = torch::matmul(centered.t(), centered) / data.size(0);
  std::vector<nn::VelocityField> blocks;
  for (int k = 0; k < 2; ++k)
    blocks.push_back(std::make_shared<AffineImpl>(torch::zeros({2, 2}, torch::kFloat64),
                                                  torch::zeros({2}, torch::kFloat64)));
  auto field = std::make_shared<nn::StackedVelocityImpl>(blocks);
  auto schedule = path::make_schedule("condot");
  const double loss = fit_mle(*field, *schedule, data, 1e-6, 300, gen);
  const double optimum = 0.5 * std::log(torch::det(2 * M_PI * M_E * emp_cov).item<double>());
  // As for one affine flow: Adam is within ~1e-3 of the optimum after a few hundred steps.
  EXPECT_NEAR(loss, optimum, 5e-3);
  // Both blocks learned (each carries part of the map).
  for (int k = 0; k < 2; ++k)
    EXPECT_GT(std::dynamic_pointer_cast<AffineImpl>(blocks[k])->A.abs().max().item<double>(), 0.05)
        << "block " << k;
}
