// Likelihoods, divergences and scores against closed forms of linear flows.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/train/trainer.h"

using namespace cnf;

namespace {
const auto f64 = torch::kFloat64;

// v(x) = A x + b: X_1 = e^A x + c with c = A^-1 (e^A - I) b, div v = tr(A). With the prior
// N(0, I) at t = 1, rho_0 = N(mu_0, S_0), mu_0 = -e^-A c, S_0 = e^-A e^-A^T.
class LinearField : public nn::VelocityFieldImpl {
 public:
  LinearField()
      : A(torch::tensor({{-0.5, 0.8}, {-0.3, 0.2}}, f64)), b(torch::tensor({0.3, -0.1}, f64)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
    return x.matmul(A.t()) + b;
  }
  std::vector<int64_t> sample_shape() const override { return {2}; }
  torch::Tensor A, b;
  torch::Tensor expA() const { return torch::matrix_exp(A); }
  torch::Tensor c() const {
    return torch::linalg_solve(A, (expA() - torch::eye(2, f64)).matmul(b.unsqueeze(1))).squeeze(1);
  }
  torch::Tensor mu0() const { return -torch::linalg_solve(expA(), c().unsqueeze(1)).squeeze(1); }
  torch::Tensor S0() const {
    auto inv = torch::linalg_inv(expA());
    return inv.matmul(inv.t());
  }
  torch::Tensor log_rho0(const torch::Tensor& x) const {
    auto x1 = x.matmul(expA().t()) + c();
    return -0.5 * x1.pow(2).sum(1) - std::log(2 * M_PI) + A.trace();
  }
};

density::LikelihoodOptions tight(const std::string& div = "exact") {
  density::LikelihoodOptions o;
  o.solve.adaptive.rtol = o.solve.adaptive.atol = 1e-10;
  o.divergence.method = density::parse_divergence(div);
  return o;
}
}  // namespace

TEST(DensityTest, AnalyticMlpDivergenceEqualsAutograd) {
  for (std::string emb : {"concat", "fourier"})
    for (std::string act : {"tanh", "relu", "silu", "selu", "gelu", "softplus"}) {
      nn::ModelSpec spec;
      spec.dim = 3;
      spec.width = 12;
      spec.depth = 3;
      spec.activation = act;
      spec.time_embedding = emb;
      torch::manual_seed(2);
      auto m = nn::make_model(spec);
      m->to(f64);
      auto x = torch::randn({7, 3}, f64), t = torch::rand({7}, f64);
      density::DivergenceOptions ex, an;
      an.method = density::Divergence::analytic;
      auto [v1, d1] = density::velocity_and_divergence(*m, x, t, ex);
      auto [v2, d2] = density::velocity_and_divergence(*m, x, t, an);
      // Same float64 arithmetic in another order: agreement to ~1e-14 relative.
      EXPECT_TRUE(torch::allclose(d1, d2, 1e-10, 1e-12)) << emb << " " << act;
      EXPECT_TRUE(torch::allclose(v1, v2, 1e-12, 1e-12)) << emb << " " << act;
    }
}

TEST(DensityTest, LinearFlowLogLikelihoodIsExact) {
  LinearField field;
  data::StandardNormal prior(2);
  path::CondOT schedule;
  auto g = make_generator(0);
  auto x = torch::randn({20, 2}, f64);
  auto r = density::log_likelihood(field, schedule, prior, x, tight(), g);
  // dopri5 at 1e-10 on a smooth linear flow: ~1e-9 accuracy.
  EXPECT_TRUE(torch::allclose(r.log_prob, field.log_rho0(x), 0, 1e-7));
  // The closed form is a Gaussian N(mu_0, S_0): an independent check of log_rho0 itself.
  auto d = x - field.mu0();
  auto S = field.S0();
  auto quad = (d.matmul(torch::linalg_inv(S)) * d).sum(1);
  auto gauss = -0.5 * quad - std::log(2 * M_PI) - 0.5 * torch::logdet(S);
  EXPECT_TRUE(torch::allclose(r.log_prob, gauss, 0, 1e-7));
}

TEST(DensityTest, HutchinsonIsUnbiasedWithinStandardErrors) {
  LinearField field;
  data::StandardNormal prior(2);
  path::CondOT schedule;
  auto g = make_generator(1);
  auto x = torch::randn({5, 2}, f64);
  auto o = tight("hutchinson");
  o.divergence.probes = 200;
  auto r = density::log_likelihood(field, schedule, prior, x, o, g);
  auto exact = field.log_rho0(x);
  ASSERT_EQ(r.log_prob_probes.sizes(), (std::vector<int64_t>{200, 5}));
  auto se = r.log_prob_probes.std(0) / std::sqrt(200.0);
  // Each point's mean over 200 probes lies within 4 standard errors of the truth
  // (Rademacher probes: the estimator is unbiased; 4 SE fails with probability < 1e-4).
  EXPECT_TRUE(((r.log_prob - exact).abs() <= 4 * se + 1e-9).all().item<bool>())
      << (r.log_prob - exact) << se;
  EXPECT_GT(se.max().item<double>(), 0);  // the off-diagonal of A makes it random
}

TEST(DensityTest, SamplingWithLogProbMatchesLikelihood) {
  LinearField field;
  data::StandardNormal prior(2);
  path::CondOT schedule;
  auto g = make_generator(2);
  auto x1 = torch::randn({10, 2}, f64);
  auto s = density::sample_with_log_prob(field, schedule, prior, x1, tight(), g);
  auto l = density::log_likelihood(field, schedule, prior, s.x, tight(), g);
  // Two solves in opposite directions, each ~1e-9 accurate.
  EXPECT_TRUE(torch::allclose(s.log_prob, l.log_prob, 0, 1e-7));
  EXPECT_TRUE(torch::allclose(l.x, x1, 0, 1e-7));
}

TEST(DensityTest, ChangeOfScoreMatchesClosedFormAndFiniteDifferences) {
  LinearField field;
  data::StandardNormal prior(2);
  path::CondOT schedule;
  auto x = torch::randn({6, 2}, f64);
  auto s = density::score(field, schedule, prior, x, 0.0, tight());
  auto closed = -(x - field.mu0()).matmul(torch::linalg_inv(field.S0()));
  // Two 1e-10 solves (to t = 1 and back): 1e-7.
  EXPECT_TRUE(torch::allclose(s, closed, 0, 1e-7)) << s << closed;
  // Independent route: central differences of the log-likelihood (h = 1e-4: truncation
  // ~1e-8 relative to the curvature; solver noise 1e-10 / h ~ 1e-6).
  auto g = make_generator(3);
  const double h = 1e-4;
  for (int i = 0; i < 2; ++i) {
    auto e = torch::zeros({1, 2}, f64);
    e[0][i] = h;
    auto lp = density::log_likelihood(field, schedule, prior, x + e, tight(), g).log_prob;
    auto lm = density::log_likelihood(field, schedule, prior, x - e, tight(), g).log_prob;
    EXPECT_TRUE(torch::allclose((lp - lm) / (2 * h), s.select(1, i), 0, 1e-5));
  }
}

TEST(DensityTest, BitsPerDimByHand) {
  // A uniform density on [0, 1]^D (nll 0) of 256-level data is exactly 8 bits per dimension.
  EXPECT_DOUBLE_EQ(density::bits_per_dim(0.0, 5, 256), 8.0);
  // nll = D log 2 nats shifts it by one bit: (D ln 2 + D ln 256) / (D ln 2) = 9.
  EXPECT_NEAR(density::bits_per_dim(3 * std::log(2.0), 3, 256), 9.0, 1e-12);
  auto g = make_generator(0);
  auto k = torch::tensor({{0, 255}, {7, 128}});
  auto u = density::dequantize(k, 256, g);
  EXPECT_TRUE(((u * 256).floor().to(torch::kLong) == k).all().item<bool>());
  EXPECT_THROW(density::dequantize(torch::tensor({256}), 256, g), Error);
  EXPECT_THROW(density::parse_divergence("trace"), Error);
}

TEST(DensityTest, FlowMatchingNllApproachesTheMixtureEntropy) {
  // A Gaussian mixture in 2-D has an exact density, hence an exact entropy H = -E log p.
  // The model's NLL on samples of p is H + KL(p || q) >= H: it may not go below H by more
  // than Monte-Carlo error, and training should bring it close.
  set_threads(1);
  auto gmm = data::make_source("gmm:3", 2);
  train::FlowSpec spec;
  spec.data = "gmm:3";
  train::TrainOptions o;
  o.steps = 3000;
  o.lr = 2e-3;
  o.lr_schedule = train::LrSchedule::cosine;
  train::Trainer t(spec, o, gmm, data::make_source("normal"));
  t.run();
  auto g = make_generator(4);
  auto x = gmm->sample(400, g);
  density::LikelihoodOptions lo;
  lo.divergence.method = density::Divergence::analytic;
  auto r =
      density::log_likelihood(*t.model(), *spec.make_schedule(), data::StandardNormal(2), x, lo, g);
  // Paired difference log p - log q on the same points: its mean is the KL estimate.
  auto kl = density::mean_and_stderr(gmm->log_prob(x.to(f64)) - r.log_prob.to(f64));
  std::printf("[ measured ] KL(p || q) = %.4f +- %.4f nats, NFE %lld\n", kl.mean, kl.stderr,
              static_cast<long long>(r.nfe));
  EXPECT_GT(kl.mean, -3 * kl.stderr) << "KL " << kl.mean << " +- " << kl.stderr;
  // Documented bound: measured KL 0.027 +- 0.013 nats after 3000 steps; 0.3 nats flags a broken
  // likelihood (a wrong sign of the divergence term alone shifts it by ~2 nats).
  EXPECT_LT(kl.mean, 0.3) << "KL " << kl.mean << " +- " << kl.stderr;
}
