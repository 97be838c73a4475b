// Likelihoods, divergences and scores against closed forms of linear flows.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "cli_util.h"
#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/io/files.h"
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

namespace {
// The exact flow-matching field of data N(mu, diag(S)) on an affine path:
// v_t(x) = alpha'_t mu + (alpha'_t alpha_t S + sigma'_t sigma_t) / Sigma_t (x - alpha_t mu),
// Sigma_t = alpha_t^2 S + sigma_t^2 per coordinate (E[alpha' x_0 + sigma' x_1 | x_t]).
class DiagonalGaussianField : public nn::VelocityFieldImpl {
 public:
  DiagonalGaussianField(path::SchedulePtr schedule, torch::Tensor mu, torch::Tensor var)
      : schedule_(std::move(schedule)), mu_(std::move(mu)), var_(std::move(var)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    auto v = (*schedule_)(t.to(f64));
    auto a = v.alpha_t.unsqueeze(1), s = v.sigma_t.unsqueeze(1);
    auto da = v.d_alpha_t.unsqueeze(1), ds = v.d_sigma_t.unsqueeze(1);
    auto cov = a * a * var_ + s * s;
    return da * mu_ + (da * a * var_ + ds * s) / cov * (x - a * mu_);
  }
  std::vector<int64_t> sample_shape() const override { return {mu_.size(0)}; }

  // Sigma_t per coordinate, at a double time.
  torch::Tensor cov(double t) const {
    auto v = schedule_->at_time(t);
    return v.alpha_t.item<double>() * v.alpha_t.item<double>() * var_ +
           v.sigma_t.item<double>() * v.sigma_t.item<double>();
  }
  // The model's log-density of x when the flow starts at s: the field carries the
  // deviation from alpha_t mu as z_t = z_1 sqrt(Sigma_t / Sigma_1) in every coordinate, so the
  // prior N(0, sigma_1^2) at t = 1 arrives at s as N(alpha_s mu - alpha_1 r mu, r^2 sigma_1^2),
  // r = sqrt(Sigma_s / Sigma_1); the model X_s / alpha_s has log-density
  // log rho_s(alpha_s x) + D log alpha_s (LikelihoodOptions::t_start).
  torch::Tensor log_p(const torch::Tensor& x, double s) const {
    const auto e1 = schedule_->at_time(1.0), es = schedule_->at_time(s);
    const double a1 = e1.alpha_t.item<double>(), s1 = e1.sigma_t.item<double>();
    const double as = es.alpha_t.item<double>();
    auto r = (cov(s) / cov(1.0)).sqrt();
    auto mean = as * mu_ - a1 * r * mu_;
    auto var = r * r * s1 * s1;
    auto y = as * x;
    auto log_n = -0.5 * (y - mean).pow(2) / var - 0.5 * torch::log(2 * M_PI * var);
    return log_n.sum(1) + static_cast<double>(x.size(1)) * std::log(as);
  }

 private:
  path::SchedulePtr schedule_;
  torch::Tensor mu_, var_;
};
}  // namespace

// Flow matching on vp and subvp trains on t in [1e-3, 1]: the likelihood starts there and
// equals the closed form of the model X_s / alpha_s, through both solve directions.
TEST(DensityTest, LikelihoodStartsWhereTheModelWasTrained) {
  for (const std::string name : {"vp", "subvp"}) {
    train::FlowSpec spec;
    spec.schedule = name;
    auto schedule = spec.make_schedule();
    const double s = spec.likelihood_start();
    EXPECT_EQ(s, schedule->t_min()) << name;  // fm with a velocity network: the schedule's t_min
    ASSERT_GT(s, 0.0) << name;
    DiagonalGaussianField field(schedule, torch::tensor({0.3, -0.7}, f64),
                                torch::tensor({0.5, 2.0}, f64));
    data::StandardNormal prior(2);
    auto g = make_generator(3);
    auto x = torch::randn({16, 2}, f64);
    auto o = tight();
    o.t_start = s;
    auto r = density::log_likelihood(field, *schedule, prior, x, o, g);
    // dopri5 at 1e-10 on a smooth linear flow: ~1e-9; the start's D log alpha_s is ~-1e-4
    // (vp) and starting at 0 instead shifts it by ~1e-3, both far above 1e-7.
    EXPECT_TRUE(torch::allclose(r.log_prob, field.log_p(x, s), 0, 1e-7))
        << name << "\n"
        << r.log_prob - field.log_p(x, s);
    // Generation with log-density ends at X_s / alpha_s with the same density.
    auto x1 = torch::randn({8, 2}, f64);
    auto smp = density::sample_with_log_prob(field, *schedule, prior, x1, o, g);
    EXPECT_TRUE(torch::allclose(smp.log_prob, field.log_p(smp.x, s), 0, 1e-7)) << name;
  }
  // Score models start at the conversion range (sigma_t >= 1e-3), MLE at 0.
  train::FlowSpec score;
  score.schedule = "condot";
  score.objective = "score";
  EXPECT_NEAR(score.likelihood_start(), 1e-3, 1e-9);  // condot: sigma_t = t
  train::FlowSpec mle;
  mle.objective = "mle";
  EXPECT_EQ(mle.likelihood_start(), 0.0);
  EXPECT_THROW(
      {
        auto o = tight();
        o.t_start = 1.0;
        LinearField f;
        auto g = make_generator(0);
        density::log_likelihood(f, path::CondOT(), data::StandardNormal(2),
                                torch::zeros({1, 2}, f64), o, g);
      },
      Error);
}

TEST(DensityTest, EntropyOfALinearFlowIsTheGaussianEntropy) {
  // rho_0 = N(mu_0, S_0) for the linear field: H = 1/2 log det(2 pi e S_0). -log rho_0(X) is
  // 1/2 chi^2_2 plus a constant, whose variance is D/2 = 1, so the standard error at n is
  // 1/sqrt(n).
  LinearField field;
  const double exact = 0.5 * torch::logdet(2 * M_PI * std::exp(1.0) * field.S0()).item<double>();
  // The prior draws float32 points: the field follows (dopri5 at 1e-5 is ~1e-5 accurate,
  // far below the Monte-Carlo error).
  field.A = field.A.to(torch::kFloat32);
  field.b = field.b.to(torch::kFloat32);
  data::StandardNormal prior(2);
  path::CondOT schedule;
  auto g = make_generator(5);
  const int64_t n = 4000;
  density::LikelihoodOptions o;
  auto h = density::entropy(field, schedule, prior, n, o, g);
  // 4 standard errors: fails by chance with probability < 1e-4; a sign error in the
  // divergence term moves H by 2 |tr A| = 0.6 (~40 standard errors).
  EXPECT_NEAR(h.mean, exact, 4 * h.stderr) << "H " << h.mean << " +- " << h.stderr;
  // The reported standard error is that of 1/2 chi^2_2: 1/sqrt(n) within 10% (the sample
  // standard deviation of 4000 draws of an exponential is within ~5% of 1).
  EXPECT_NEAR(h.stderr * std::sqrt(static_cast<double>(n)), 1.0, 0.1);
}

TEST(DensityCliTest, NllAndEntropyStartWhereTheModelWasTrained) {
  using cnf_test::contains;
  using cnf_test::run_cnf;
  const std::string dir = ::testing::TempDir() + "/cnf_entropy_cli_" + std::to_string(::getpid());
  auto r = run_cnf(
      "train --schedule vp --width 16 --depth 2 --data 8gaussians --steps 30 --eval-n 100 "
      "--quiet --out " +
      dir);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cnf("nll --ckpt " + dir + "/model.pt -n 50 --method rk4 --steps 8");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "from t = 0.001")) << r.output;  // vp trains on [1e-3, 1]
  r = run_cnf("entropy --ckpt " + dir + "/model.pt -n 50 --method rk4 --steps 8 --json " + dir +
              "/h.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "H = ")) << r.output;
  EXPECT_TRUE(contains(io::read_text(dir + "/h.json"), "\"entropy_stderr\"")) << r.output;
  r = run_cnf("entropy --ckpt " + dir + "/model.pt -n 1");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "n >= 2")) << r.output;
  // nll --points: the rows of a file, each one's log rho_0 written with --out; the same
  // points give the same values as held-out rows would (one computation), and bad files
  // are named.
  io::write_npy(dir + "/pts.npy", torch::randn({20, 2}));
  r = run_cnf("nll --ckpt " + dir + "/model.pt --points " + dir + "/pts.npy --out " + dir +
              "/lp.npy --method rk4 --steps 8");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto lp = io::read_npy(dir + "/lp.npy");
  EXPECT_EQ(lp.sizes(), at::IntArrayRef({20})) << r.output;
  EXPECT_TRUE(torch::isfinite(lp).all().item<bool>());
  io::write_npy(dir + "/pts3.npy", torch::randn({20, 3}));
  r = run_cnf("nll --ckpt " + dir + "/model.pt --points " + dir + "/pts3.npy");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "pts3.npy' have dimension 3")) << r.output;
  r = run_cnf("nll --ckpt " + dir + "/model.pt --points " + dir + "/pts.npy --out " + dir +
              "/lp.txt");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "--out must name a .npy file")) << r.output;
  std::filesystem::remove_all(dir);
}
