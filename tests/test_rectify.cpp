// Rectified flow: straightness against closed forms, resumable pair generation, the
// distillation time grid, and reflow on a Gaussian (straightens, keeps the marginals,
// does not raise the transport cost), end to end through the CLI as well.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/io/files.h"
#include "cnf/metrics/distances.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/rectify/rectify.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

using namespace cnf;
namespace fs = std::filesystem;

namespace {

// v(x) = w J x, a rotation at angular speed w: paths are circular arcs of radius r = |x|,
// speed w r, so  int ||v||^2 dt = w^2 r^2  and  ||X_1 - X_0||^2 = 2 r^2 (1 - cos w).
struct RotationImpl : nn::VelocityFieldImpl {
  explicit RotationImpl(double w) : w(w) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
    return w * torch::stack({-x.select(1, 1), x.select(1, 0)}, 1);
  }
  std::vector<int64_t> sample_shape() const override { return {2}; }
  double w;
};

// v = c: straight paths, X_0 = X_1 - c.
struct ConstantImpl : nn::VelocityFieldImpl {
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
    return torch::tensor({0.7, -1.3}, x.options()).expand_as(x);
  }
  std::vector<int64_t> sample_shape() const override { return {2}; }
};

// Records the times it is evaluated at.
struct TimeProbeImpl : nn::VelocityFieldImpl {
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    seen = t.clone();
    return torch::zeros_like(x);
  }
  std::vector<int64_t> sample_shape() const override { return {2}; }
  torch::Tensor seen;
};

std::string temp_dir(const std::string& name) {
  auto p = fs::path(::testing::TempDir()) / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

}  // namespace

TEST(Rectify, StraightnessMatchesClosedForms) {
  auto schedule = path::make_schedule("condot");
  auto gen = make_generator(3);
  auto x_1 = torch::randn({500, 2}, gen, torch::kFloat64);
  const double r2 = x_1.pow(2).sum(1).mean().item<double>();  // E r^2 of these very points

  for (double w : {0.5, 2.0}) {
    RotationImpl rot(w);
    auto s = rectify::straightness(rot, *schedule, x_1);
    // dopri5 at rtol = atol = 1e-5 over one unit of time: relative errors ~1e-5; 1e-3 is
    // loose enough for that and far tighter than the quantities (>= 0.1).
    const double energy = w * w * r2, cost = 2 * r2 * (1 - std::cos(w));
    EXPECT_NEAR(s.path_energy, energy, 1e-3 * energy) << "w = " << w;
    EXPECT_NEAR(s.transport_cost, cost, 1e-3 * cost) << "w = " << w;
    EXPECT_NEAR(s.straightness, energy - cost, 1e-3 * energy) << "w = " << w;
    EXPECT_NEAR(s.normalized_energy, w * w / (2 * (1 - std::cos(w))), 1e-3) << "w = " << w;
    EXPECT_GT(s.nfe, 0);
  }
  ConstantImpl c;
  auto s = rectify::straightness(c, *schedule, x_1);
  const double cost = 0.7 * 0.7 + 1.3 * 1.3;
  EXPECT_NEAR(s.transport_cost, cost, 1e-6);  // exact up to rounding: the field is constant
  EXPECT_NEAR(s.straightness, 0.0, 1e-6);
  EXPECT_NEAR(s.normalized_energy, 1.0, 1e-6);
}

TEST(Rectify, PairsAreResumableAndRefuseOtherOptions) {
  const auto dir = temp_dir("cnf_pairs");
  RotationImpl rot(1.0);
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(2);
  rectify::PairOptions o;
  o.n = 500;
  o.chunk = 200;
  o.seed = 5;
  std::vector<bool> reused;
  auto cb = [&](int64_t, int64_t, bool r) { reused.push_back(r); };
  auto first = rectify::generate_pairs(rot, *schedule, prior, o, dir, cb);
  ASSERT_EQ(first.size(), 500);
  EXPECT_EQ(reused, (std::vector<bool>{false, false, false}));
  // X_0 is X_1 turned back by w = 1 radian.
  auto x1 = first.x_1().to(torch::kFloat64), x0 = first.x_0().to(torch::kFloat64);
  const double c = std::cos(1.0), s = std::sin(1.0);
  auto expect = torch::stack(
      {c * x1.select(1, 0) + s * x1.select(1, 1), -s * x1.select(1, 0) + c * x1.select(1, 1)}, 1);
  // float32 state and dopri5 at 1e-5: errors ~1e-5 for |x| ~ 3.
  EXPECT_LT((x0 - expect).abs().max().item<double>(), 1e-3);

  // A lost chunk is regenerated, bit for bit; the others are reused.
  fs::remove(fs::path(dir) / "chunk_00001_x0.npy");
  reused.clear();
  auto second = rectify::generate_pairs(rot, *schedule, prior, o, dir, cb);
  EXPECT_EQ(reused, (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(torch::equal(first.x_0(), second.x_0()));
  EXPECT_TRUE(torch::equal(first.x_1(), second.x_1()));
  auto loaded = rectify::load_pairs(dir);
  EXPECT_TRUE(torch::equal(first.x_0(), loaded.x_0()));

  o.seed = 6;
  try {
    rectify::generate_pairs(rot, *schedule, prior, o, dir);
    FAIL() << "other options must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seed"), std::string::npos) << e.what();
  }
}

TEST(Rectify, PairTableRejectsBadInput) {
  EXPECT_THROW(data::PairTable(torch::zeros({4, 2}), torch::zeros({3, 2}), "t"), Error);
  EXPECT_THROW(data::PairTable(torch::zeros({0, 2}), torch::zeros({0, 2}), "t"), Error);
  auto bad = torch::zeros({4, 2});
  bad[2][1] = std::nan("");
  EXPECT_THROW(data::PairTable(bad, torch::zeros({4, 2}), "t"), Error);
  // Rows travel together.
  auto a = torch::arange(10, torch::kFloat32).reshape({5, 2});
  data::PairTable table(a, -a, "t");
  auto gen = make_generator(1);
  auto [x0, x1] = table.sample(64, gen);
  EXPECT_TRUE(torch::equal(x0, -x1));
}

TEST(Rectify, TimeGridDrawsTheEulerTimes) {
  TimeProbeImpl probe;
  objective::FlowMatchingOptions o;
  o.schedule = path::make_schedule("condot");
  o.time_grid = 4;
  auto gen = make_generator(2);
  objective::flow_matching_loss(probe, {torch::zeros({256, 2}), torch::zeros({256, 2})}, o, gen);
  std::set<double> times;
  for (int64_t i = 0; i < 256; ++i) times.insert(probe.seen[i].item<double>());
  // All four Euler times of a 4-step sampler from t = 1, and nothing else (the chance
  // that 256 draws miss one of the four is 4 (3/4)^256 ~ 1e-32).
  EXPECT_EQ(times, (std::set<double>{0.25, 0.5, 0.75, 1.0}));
}

// Data N(m, diag(s^2)) with s = (0.3, 2): the 1-rectified flow from N(0, I) has curved
// paths (each coordinate moves along a(t) z + (1 - t) m with a(t) = sqrt((1-t)^2 s^2 + t^2),
// not linear in t). Its pairs are an affine map x_0 = m + s x_1, so the flow trained on
// them is straight (Liu et al. 2023, sec. 3: one reflow suffices for this coupling).
TEST(Rectify, ReflowStraightensAGaussianFlowAndKeepsItsMarginals) {
  torch::manual_seed(0);
  auto data = std::make_shared<data::GaussianMixture>(torch::ones({1}, torch::kFloat64),
                                                      torch::tensor({{1.0, -1.0}}, torch::kFloat64),
                                                      torch::tensor({{0.3, 2.0}}, torch::kFloat64));
  auto prior = std::make_shared<data::StandardNormal>(2);
  train::FlowSpec spec;
  spec.model.width = 64;
  spec.model.depth = 2;
  train::TrainOptions o;
  o.steps = 1500;
  o.lr = 3e-3;
  o.lr_schedule = train::LrSchedule::cosine;
  o.seed = 1;
  auto schedule = spec.make_schedule();
  auto gen = make_generator(9);
  auto x_1 = torch::randn({2000, 2}, gen);
  auto truth = data->sample(2000, gen);

  train::Trainer first(spec, o, data, prior);
  first.run();
  auto flow1 = first.model();
  flow1->eval();
  auto s1 = rectify::straightness(*flow1, *schedule, x_1);

  rectify::PairOptions po;
  po.n = 20000;
  po.chunk = 20000;
  auto pairs = rectify::generate_pairs(*flow1, *schedule, *prior, po);
  train::Trainer second(spec, o, data, prior);
  second.set_pairs(std::make_shared<data::PairTable>(pairs));
  rectify::copy_weights(*second.model(), *flow1);
  second.run();
  auto flow2 = second.model();
  flow2->eval();
  auto s2 = rectify::straightness(*flow2, *schedule, x_1);

  // The exact 1-rectified flow has straightness sum_d int a_d'(t)^2 dt - (1 - s_d)^2 =
  // 0.99 for these s (quadrature); the 1500-step network reaches 0.80 of it. Measured
  // here: S1 = 0.80, S2 = 0.0003 (per-sample Monte-Carlo error ~3%).
  EXPECT_GT(s1.straightness, 0.5);
  EXPECT_LT(s2.straightness, 0.25 * s1.straightness);
  EXPECT_LT(s2.straightness, 0.03);
  // Transport cost does not increase (reflow is a coupling with no larger convex cost);
  // the same noise x_1 in both, so 3 standard errors of the cost is a generous margin.
  EXPECT_LT(s2.transport_cost, s1.transport_cost + 3 * s1.transport_cost_stderr);

  // Marginals: W2 of both flows' samples to fresh data, 2000 points each, is mostly
  // finite-sample noise (measured: 0.124 before, 0.120 after); the reflowed flow may lose
  // at most 0.05 to the errors of its pairs and its training.
  ode::SolveOptions so = rectify::default_solve();
  auto w2_1 = metrics::w2(train::generate(*flow1, *schedule, x_1, so).y[0], truth);
  auto w2_2 = metrics::w2(train::generate(*flow2, *schedule, x_1, so).y[0], truth);
  EXPECT_LT(w2_2, w2_1 + 0.05) << "W2 before " << w2_1 << ", after " << w2_2;

  // One Euler step of the straight flow is nearly as good as its adaptive solve (measured
  // 0.121 vs 0.120); one Euler step of the first flow is far worse (1.62).
  so.method = "euler";
  so.steps = 1;
  auto w2_1_euler = metrics::w2(train::generate(*flow1, *schedule, x_1, so).y[0], truth);
  auto w2_2_euler = metrics::w2(train::generate(*flow2, *schedule, x_1, so).y[0], truth);
  EXPECT_LT(w2_2_euler, w2_2 + 0.05);
  EXPECT_LT(w2_2_euler, 0.5 * w2_1_euler)
      << "one-step W2 before " << w2_1_euler << ", after " << w2_2_euler;
  std::printf("S %.4f -> %.4f, cost %.4f -> %.4f, W2 %.4f -> %.4f, 1-step W2 %.4f -> %.4f\n",
              s1.straightness, s2.straightness, s1.transport_cost, s2.transport_cost, w2_1, w2_2,
              w2_1_euler, w2_2_euler);
}

TEST(Rectify, CliReflowDistillAndResume) {
  using cnf_test::contains;
  using cnf_test::run_cnf;
  const auto dir = temp_dir("cnf_reflow_cli");
  auto r = run_cnf(
      "train --data 8gaussians --steps 300 --width 32 --depth 2 --eval-n 200 --quiet "
      "--out " +
      dir + "/base");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string reflow = "reflow --ckpt " + dir +
                             "/base/model.pt --pairs 1000 --chunk 400 "
                             "--steps 200 --eval-n 200 --quiet --out " +
                             dir + "/r2";
  r = run_cnf(reflow + " --json " + dir + "/r2.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "round 2: straightness")) << r.output;
  EXPECT_TRUE(fs::exists(dir + "/r2/model.pt"));
  EXPECT_TRUE(fs::exists(dir + "/r2/pairs/chunk_00002_x0.npy"));
  auto metrics = io::read_text(dir + "/r2.json");
  EXPECT_TRUE(contains(metrics, "\"round\": 2")) << metrics;
  // The checkpoint records which flow produced it.
  auto ckpt = train::load_checkpoint(dir + "/r2/model.pt");
  EXPECT_TRUE(contains(ckpt.config, "kind=reflow")) << ckpt.config;
  EXPECT_TRUE(contains(ckpt.config, "parent=" + dir + "/base/model.pt")) << ckpt.config;

  // Running again reuses the stored pairs; other pair options are refused.
  r = run_cnf(reflow);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "reused 3 chunk(s)")) << r.output;
  r = run_cnf(reflow + " --seed 4");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "seed")) << r.output;

  // Round 3 from round 2, then a 2-step distillation of round 3.
  r = run_cnf("reflow --ckpt " + dir +
              "/r2/model.pt --pairs 500 --steps 100 --eval-n 100 "
              "--quiet --out " +
              dir + "/r3 --json " + dir + "/r3.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(io::read_text(dir + "/r3.json"), "\"round\": 3"));
  r = run_cnf("distill --ckpt " + dir +
              "/r3/model.pt --steps 2 --iters 100 --pairs 500 "
              "--eval-n 100 --quiet --out " +
              dir + "/d");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "2-step generator")) << r.output;
  // A distilled generator is not a flow to rectify.
  r = run_cnf("reflow --ckpt " + dir + "/d/model.pt --quiet --out " + dir + "/bad");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "distilled")) << r.output;
  r = run_cnf("reflow --ckpt " + dir + "/missing.pt --out " + dir + "/bad");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "missing.pt")) << r.output;
}
