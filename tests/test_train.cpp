// Training loop: exact resume, LR schedules, checkpoint errors, and one small
// end-to-end training that must reach a documented W2 bound.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/metrics/distances.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/path/schedule.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

using namespace cnf;
namespace fs = std::filesystem;

namespace {
std::string temp_path(const std::string& name) {
  auto dir = fs::path(::testing::TempDir()) / ("cnf_train_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

train::Trainer make_trainer(int64_t steps, uint64_t seed = 3) {
  train::FlowSpec spec;
  spec.model.width = 32;
  spec.model.depth = 2;
  spec.data = "8gaussians";
  train::TrainOptions o;
  o.steps = steps;
  o.batch_size = 64;
  o.lr_schedule = train::LrSchedule::cosine;
  o.warmup_steps = 5;
  o.ema_decay = 0.9;
  o.grad_clip = 5.0;
  o.seed = seed;
  return train::Trainer(spec, o, data::make_source("8gaussians"), data::make_source("normal"));
}

void expect_same_weights(const nn::VelocityField& a, const nn::VelocityField& b) {
  auto pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "tensor " << i;
}
}  // namespace

TEST(TrainTest, ResumeEqualsUninterruptedRun) {
  set_threads(1);  // bit-for-bit equality holds at a fixed thread count
  auto full = make_trainer(40);
  full.run();

  auto first = make_trainer(40);
  first.run([](int64_t step, const auto&) { return step < 17; });  // stop after 17 steps
  ASSERT_EQ(first.steps_done(), 17);
  const auto ckpt = temp_path("resume.pt");
  first.save(ckpt, "steps=40\n");

  auto second = make_trainer(40, /*seed=*/999);  // the seed must come from the checkpoint's rng
  second.resume(ckpt);
  EXPECT_EQ(second.steps_done(), 17);
  second.run();
  EXPECT_EQ(second.steps_done(), 40);
  expect_same_weights(full.model(), second.model());
  expect_same_weights(full.ema_model(), second.ema_model());

  // A trainer that does not resume differs (the test can fail).
  auto other = make_trainer(40, 999);
  other.run();
  EXPECT_FALSE(torch::equal(other.model()->parameters()[0], full.model()->parameters()[0]));
}

TEST(TrainTest, LearningRateSchedules) {
  train::TrainOptions o;
  o.lr = 1.0;
  o.steps = 110;
  o.warmup_steps = 10;
  o.lr_schedule = train::LrSchedule::cosine;
  EXPECT_DOUBLE_EQ(train::learning_rate(o, 0), 0.1);     // warm-up: (step + 1) / warmup
  EXPECT_DOUBLE_EQ(train::learning_rate(o, 10), 1.0);    // cosine starts at lr
  EXPECT_NEAR(train::learning_rate(o, 60), 0.5, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(train::learning_rate(o, 110), 0.0, 1e-12);
  o.lr_schedule = train::LrSchedule::linear;
  EXPECT_NEAR(train::learning_rate(o, 35), 0.75, 1e-12);
  o.lr_schedule = train::LrSchedule::constant;
  EXPECT_DOUBLE_EQ(train::learning_rate(o, 100), 1.0);
  // Names are parsed where they enter; an unknown one fails listing the valid ones.
  EXPECT_THROW(train::lr_schedules().get("exponential"), Error);
  o.lr_schedule = train::LrSchedule::constant;
  o.ema_decay = 1.0;
  EXPECT_THROW(o.validate(), Error);
}

TEST(TrainTest, CheckpointErrorsNameTheFile) {
  const auto missing = temp_path("nope.pt");
  try {
    train::load_checkpoint(missing);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  // A truncated checkpoint (half of a real one) is reported, not crashed on.
  auto t = make_trainer(3);
  t.run();
  const auto good = temp_path("good.pt"), cut = temp_path("cut.pt");
  t.save(good);
  {
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  try {
    train::load_checkpoint(cut);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  // Resuming with another spec is refused.
  train::FlowSpec spec;
  spec.model.width = 16;
  spec.data = "8gaussians";
  train::Trainer other(spec, {}, data::make_source("8gaussians"), data::make_source("normal"));
  EXPECT_THROW(other.resume(good), Error);
  // Loading for sampling rebuilds the same network.
  auto c = train::load_checkpoint(good);
  EXPECT_EQ(c.spec.model.width, 32);
  EXPECT_EQ(c.step, 3);
  expect_same_weights(c.model, t.ema_model());
}

TEST(TrainTest, MismatchedPriorDimensionIsRefused) {
  train::FlowSpec spec;
  EXPECT_THROW(train::Trainer(spec, {}, data::make_source("moons"), data::make_source("normal", 3)),
               Error);
}

TEST(TrainTest, EndToEndFlowMatchingReachesW2Bound) {
  // Flow matching on the OT path, N(0, I) -> 8gaussians, 1500 steps of batch 256.
  set_threads(1);
  train::FlowSpec spec;
  spec.data = "8gaussians";
  train::TrainOptions o;
  o.steps = 1500;
  o.lr = 2e-3;
  o.lr_schedule = train::LrSchedule::cosine;
  o.seed = 1;
  auto data_source = data::make_source("8gaussians");
  train::Trainer t(spec, o, data_source, data::make_source("normal"));
  t.run();
  auto g = make_generator(11);
  auto held_a = data_source->sample(800, g), held_b = data_source->sample(800, g);
  ode::SolveOptions so;
  so.method = "midpoint";
  so.steps = 50;
  auto x = train::generate(*t.model(), *spec.make_schedule(), torch::randn({800, 2}, g), so).y[0];
  const double w2 = metrics::w2(x, held_a), floor = metrics::w2(held_b, held_a);
  std::printf("[ measured ] W2 = %.4f, finite-sample floor = %.4f\n", w2, floor);
  // Documented bound. Measured here: this test W2 = 0.48 (floor of 800-point draws 0.34);
  // the same training from the CLI with seeds 1..3 gives 0.38-0.48, while an untrained
  // network (1 step) scores 1.53. 0.6 separates the two with room for platform rounding.
  EXPECT_LT(w2, 0.6) << "floor " << floor;
  // The floor is deterministic here (fixed generator); it guards the held-out draws.
  EXPECT_LT(floor, 0.4);
}

TEST(TrainObjectives, EachStatesWhatItNeedsAndTheTrainerAsksIt) {
  // What each objective refuses, asked through the Trainer (which no longer knows the
  // objectives' names): score matching needs N(0, I) noise drawn independently, mle a prior
  // with a density and no coupling; flow matching takes any prior and any coupling.
  auto error_of = [](const std::string& objective, const std::string& prior,
                     const std::string& coupling) -> std::string {
    train::FlowSpec spec;
    spec.objective = objective;
    train::TrainOptions o;
    o.coupling = coupling;
    try {
      train::Trainer(spec, o, data::make_source("moons"), data::make_source(prior, 2));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("score", "8gaussians", "independent").find("--prior normal"),
            std::string::npos);
  EXPECT_NE(error_of("score", "normal", "exact").find("--coupling independent, got 'exact'"),
            std::string::npos);
  EXPECT_NE(error_of("mle", "moons", "independent").find("prior with a density"),
            std::string::npos);
  EXPECT_NE(error_of("mle", "normal", "sinkhorn").find("got 'sinkhorn'"), std::string::npos);
  EXPECT_EQ(error_of("fm", "8gaussians", "exact"), "");
  EXPECT_EQ(error_of("score", "normal", "independent"), "");
  EXPECT_EQ(error_of("mle", "normal", "independent"), "");

  // Every row: its name is its registry key (what checkpoints store), aliases resolve, and
  // the flow spec's defaults come from the object.
  for (const auto& [name, objective] : train::objectives().entries()) {
    EXPECT_EQ(objective->name(), name);
    train::FlowSpec spec;
    spec.objective = name;
    EXPECT_EQ(spec.network_param(), objective->default_param()) << name;
    EXPECT_EQ(&spec.training_objective(), objective) << name;
  }
  EXPECT_EQ(train::canonical_objective("score-matching"), "score");
  EXPECT_EQ(&train::objective_named("flow-matching"), train::objectives().get("fm"));
  EXPECT_THROW(train::objective_named("gan"), Error);

  // One step of each trains from the pairs (or data alone) the objective asked for.
  for (const auto& name : train::objectives().names()) {
    train::FlowSpec spec;
    spec.objective = name;
    spec.model.width = 16;
    train::TrainOptions o;
    o.steps = 1;
    o.batch_size = 32;
    o.mle.solve.method = "rk4";
    o.mle.solve.steps = 2;
    train::Trainer t(spec, o, data::make_source("moons"), data::make_source("normal"));
    EXPECT_TRUE(std::isfinite(t.step().loss.item<double>())) << name;
  }
}

TEST(TrainCheckpoint, LoadsItsScheduleAndPriorOnce) {
  // A checkpoint's typed parts are what its spec names, built once at load: the schedule
  // with its parameters and the prior of the model's dimension.
  train::FlowSpec spec;
  spec.schedule = "vp:beta_min=0.2,beta_max=12";
  spec.model.width = 16;
  spec.data = "moons";
  train::TrainOptions o;
  o.steps = 1;
  train::Trainer t(spec, o, data::make_source("moons"), data::make_source("normal"));
  const auto path = temp_path("typed.pt");
  t.save(path);
  auto c = train::load_checkpoint(path);
  ASSERT_TRUE(c.schedule && c.prior);
  EXPECT_EQ(c.schedule->describe(), t.schedule()->describe());
  EXPECT_EQ(c.schedule->describe(), path::make_schedule(spec.schedule)->describe());
  EXPECT_EQ(c.prior->spec(), "normal");
  EXPECT_EQ(c.prior->dim(), 2);
  EXPECT_THROW(train::to_pixels(c.spec, torch::zeros({1, 2})), Error);  // not an image model
}

TEST(TrainTest, SchrodingerBridgeCouplingIsRefusedOffTheStraightPath) {
  // SB-CFM's bridge noise rides on the straight interpolant: vp, or condot with a
  // sigma_min > 0, are refused naming the schedule; condot with sigma_min 0 trains.
  train::TrainOptions o;
  o.coupling = "sb";
  for (auto [schedule, sigma_min] : {std::pair{"vp", 0.0}, std::pair{"condot", 0.01}}) {
    train::FlowSpec spec;
    spec.schedule = schedule;
    spec.sigma_min = sigma_min;
    try {
      train::Trainer(spec, o, data::make_source("moons"), data::make_source("normal"));
      ADD_FAILURE() << schedule << " accepted sb";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("Schrodinger bridge only on the straight path"),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(schedule), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(train::Trainer({}, o, data::make_source("moons"), data::make_source("normal")));
  // Minibatch OT on a curved path: allowed, with a warning for the command to print.
  train::FlowSpec vp;
  vp.schedule = "vp";
  o.coupling = "exact";
  EXPECT_NE(train::coupling_warning(vp, o).find("curved vp path"), std::string::npos);
  EXPECT_EQ(train::coupling_warning({}, o), "");
  o.coupling = "independent";
  EXPECT_EQ(train::coupling_warning(vp, o), "");
}

namespace {
// A network of a program's own with a submodule named after a Python keyword.
struct KeywordNamedField : nn::VelocityFieldImpl {
  KeywordNamedField() { lin = register_module("in", torch::nn::Linear(3, 2)); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    return lin(torch::cat({x, t.reshape({-1, 1})}, 1));
  }
  std::vector<int64_t> sample_shape() const override { return {2}; }
  torch::nn::Linear lin{nullptr};
};
}  // namespace

TEST(TrainTest, NetworkFactoryNamesAKeywordSubmoduleThatCheckpointsCannotStore) {
  // Regression (examples/custom_field): a submodule named "in" trained and saved, but the
  // checkpoint never loaded again (TorchScript's parser: "expected ident but found 'in'").
  train::NetworkFactory factory = [](const nn::ModelSpec&) {
    return std::make_shared<KeywordNamedField>();
  };
  try {
    train::Trainer({}, {}, data::make_source("moons"), data::make_source("normal"), factory);
    ADD_FAILURE() << "a network with a submodule named 'in' was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("named 'in'"), std::string::npos) << e.what();
  }
}

TEST(TrainTest, ResumeAtAnotherThreadCountSaysItIsNotExact) {
  set_threads(1);
  auto first = make_trainer(10);
  first.run([](int64_t step, const auto&) { return step < 3; });
  const auto ckpt = temp_path("threads.pt");
  first.save(ckpt);
  auto same = make_trainer(10);
  EXPECT_EQ(same.resume(ckpt), "");  // same threads, same shards: continues exactly
  set_threads(2);
  auto other = make_trainer(10);
  const std::string note = other.resume(ckpt);
  set_threads(1);
  EXPECT_NE(note.find("1 thread(s), this run has 2"), std::string::npos) << note;
  EXPECT_NE(note.find("--threads 1"), std::string::npos) << note;
  EXPECT_EQ(other.steps_done(), 3);  // the weights still continue
}

TEST(TrainTest, UnconvergedSinkhornPlansAreCountedOrRefused) {
  auto gen = make_generator(2);
  auto x0 = data::make_source("8gaussians")->sample(64, gen);
  auto x1 = torch::randn({64, 2}, gen);
  coupling::CouplingOptions o;
  o.epsilon = 0.1;
  auto converged = std::make_shared<coupling::EntropicOT>(o);
  converged->pair(x0, x1, gen);
  EXPECT_EQ(converged->stats().plans, 1);
  EXPECT_EQ(converged->stats().unconverged, 0);
  EXPECT_EQ(converged->report(), "");
  // Two iterations at a small epsilon cannot converge: the plan is counted...
  o.epsilon = 0.01;
  o.max_iter = 2;
  o.max_marginal_error = 1e9;
  auto loose = std::make_shared<coupling::EntropicOT>(o);
  loose->pair(x0, x1, gen);
  loose->pair(x0, x1, gen);
  EXPECT_EQ(loose->stats().unconverged, 2);
  EXPECT_GT(loose->stats().max_marginal_error, 1e-3);  // far from uniform after 2 iterations
  EXPECT_NE(loose->report().find("2 of 2 minibatch plans did not converge"), std::string::npos)
      << loose->report();
  // ... or refused past the allowed marginal error, naming what to change.
  o.max_marginal_error = 1e-3;
  auto strict = std::make_shared<coupling::EntropicOT>(o);
  try {
    strict->pair(x0, x1, gen);
    ADD_FAILURE() << "an unconverged plan past the threshold must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--coupling-eps"), std::string::npos) << e.what();
  }
}

TEST(TrainCheckpoint, StoresItsTimeDensitiesAndResumeChecksThem) {
  // --time-sampling and --time-weighting are training choices of fm and score: stored in
  // canonical form, read back, and a resume with other ones is refused; mle draws no times.
  train::FlowSpec spec;
  spec.model.width = 16;
  spec.time_sampling = "logit-normal:m=0,s=0.5";
  spec.time_weighting = "cosine";
  train::TrainOptions o;
  o.steps = 2;
  o.batch_size = 32;
  train::Trainer t(spec, o, data::make_source("moons"), data::make_source("normal"));
  EXPECT_TRUE(std::isfinite(t.step().loss.item<double>()));
  const auto path = temp_path("time_density.pt");
  t.save(path);
  auto c = train::load_checkpoint(path);
  EXPECT_EQ(c.spec.time_sampling, "logit-normal:s=0.5");
  EXPECT_EQ(c.spec.time_weighting, "cosine");
  train::FlowSpec uniform = spec;
  uniform.time_sampling = uniform.time_weighting = "uniform";
  train::Trainer other(uniform, o, data::make_source("moons"), data::make_source("normal"));
  try {
    other.resume(path);
    ADD_FAILURE() << "a resume with another time density was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("time_sampling=logit-normal:s=0.5"), std::string::npos)
        << e.what();
  }
  // A checkpoint of a uniform run does not mention the time density (older readers load it).
  other.save(temp_path("uniform.pt"));
  const auto text = train::load_checkpoint(temp_path("uniform.pt")).spec.serialize();
  EXPECT_EQ(text.find("time_sampling"), std::string::npos) << text;
  EXPECT_EQ(text.find("time_weighting"), std::string::npos) << text;
  train::FlowSpec mle = spec;
  mle.objective = "mle";
  try {
    train::Trainer(mle, o, data::make_source("moons"), data::make_source("normal"));
    ADD_FAILURE() << "mle accepted a time density";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("apply to fm and score only"), std::string::npos)
        << e.what();
  }
}

TEST(TrainTest, FlowMatchingWeightsEachDrawByTheTimeDensity) {
  // With --time-weighting cosine the loss is the mean of (1 - 0) pi(t) ||v - u||^2 over the
  // uniform draws, pi(t) = 2 / (pi (1 - 2 t + 2 t^2)) (Esser et al.'s CosMap): recomputed here
  // from the same generator's draws with a network that returns zero, so ||v - u||^2 is
  // ||u||^2 = ||x_1 - x_0||^2 on condot.
  struct Zero : nn::VelocityFieldImpl {
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
      return torch::zeros_like(x);
    }
    std::vector<int64_t> sample_shape() const override { return {2}; }
  } zero;
  auto g = make_generator(2);
  auto x_0 = torch::randn({64, 2}, g, torch::kFloat64),
       x_1 = torch::randn({64, 2}, g, torch::kFloat64);
  objective::FlowMatchingOptions fm;
  fm.schedule = path::make_schedule("condot");
  fm.time_weighting = objective::TimeDensity::parse("cosine");
  auto g1 = make_generator(8), g2 = make_generator(8);
  const double loss = objective::flow_matching_loss(zero, {x_0, x_1}, fm, g1).loss.item<double>();
  auto t = torch::rand({64}, g2, torch::kFloat64);
  auto pi = 2.0 / (M_PI * (1 - 2 * t + 2 * t * t));
  const double want = (pi * (x_1 - x_0).pow(2).sum(1)).mean().item<double>();
  // The same float64 arithmetic up to reassociation.
  EXPECT_NEAR(loss, want, 1e-12 * want);
}
