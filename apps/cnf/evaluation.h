// apps/cnf/evaluation.h — sampling options and the held-out evaluation that several verbs
// share (train, demo, eval, reflow, distill, experiments).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <sstream>
#include <string>

#include "apps/cnf/common.h"
#include "cnf/data/sources.h"
#include "cnf/io/progress.h"
#include "cnf/metrics/distances.h"
#include "cnf/nn/velocity.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

// ------------------------------------------------------------------ shared options

struct EvalArgs {
  int64_t n = 1000;
  std::string method = "euler";
  int64_t steps = 100;
  double rtol = 1e-5, atol = 1e-5;
  int64_t max_steps = 100000;
  SamplerArgs sampler;  // --sampler and its options (sample, eval, train)

  // "euler" for the default ODE sampler, else the sampler's name.
  std::string label() const { return sampler.sampler == "ode" ? method : sampler.sampler; }
  sde::SamplerOptions sampler_options() const {
    return app::sampler_options(sampler, steps, solve_options());
  }

  ode::SolveOptions solve_options() const {
    return ode::SolveOptions::of(method, steps, rtol, atol, max_steps);
  }
};

// `prefix` is "" for sample/eval (--method, --steps, -n) and "eval-" for train/demo,
// where --steps means training steps.
inline void add_eval(CLI::App* sub, EvalArgs& e, const std::string& n_help,
                     const std::string& prefix) {
  sub->add_option(prefix.empty() ? "-n,--n" : "--" + prefix + "n", e.n, n_help)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--" + prefix + "method", e.method,
                  "ODE method: " + ode::tableaus().joined_names())
      ->capture_default_str()
      ->check(names_of(ode::tableaus()));
  sub->add_option("--" + prefix + "steps", e.steps,
                  "Steps from t = 1 to t = 0 (fixed-step ODE methods and the samplers)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--" + prefix + "rtol", e.rtol, "Relative tolerance (bosh3, dopri5, tsit5)")
      ->capture_default_str();
  sub->add_option("--" + prefix + "atol", e.atol, "Absolute tolerance (bosh3, dopri5, tsit5)")
      ->capture_default_str();
  sub->add_option("--" + prefix + "max-steps", e.max_steps,
                  "Adaptive steps (accepted + rejected) before giving up")
      ->capture_default_str();
}

// What held-out comparisons use: two independent halves A and B of held-out data.
// W2(samples, A) is the model's score; W2(B, A) the floor that finite samples allow.
struct Holdout {
  torch::Tensor a, b;
};
inline Holdout halves(const torch::Tensor& holdout) {
  const int64_t m = holdout.size(0) / 2;
  CNF_CHECK(m >= 1, "need at least 2 held-out rows to evaluate, got ", holdout.size(0));
  return {holdout.slice(0, 0, m), holdout.slice(0, m, 2 * m)};
}

struct Evaluation {
  torch::Tensor samples;
  int64_t nfe = 0;
  double w2 = 0, w2_floor = 0, mmd2 = 0, seconds = 0;
};

// `net` predicts `param`; the samples come from the sampler of `e` (the ODE by default).
inline Evaluation evaluate(nn::VelocityFieldImpl& net, path::Param param,
                           const path::Schedule& schedule, const data::Source& prior,
                           const Holdout& h, const EvalArgs& e, uint64_t seed, torch::Device device,
                           const ode::Observer& observer = {}) {
  auto gen = stream_generator(seed, Stream::evaluation);
  auto x_1 = prior.sample(h.a.size(0), gen).to(device);
  auto so = e.sampler_options();
  so.ode.observer = observer;
  auto t0 = std::chrono::steady_clock::now();
  auto r = draw_samples(net, param, schedule, x_1, so, gen);
  Evaluation ev;
  ev.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ev.samples = r.x.to(torch::kCPU);
  ev.nfe = r.nfe;
  check_finite(ev.samples, "generated samples");
  ev.w2 = metrics::w2(ev.samples, h.a);
  ev.w2_floor = metrics::w2(h.b, h.a);
  ev.mmd2 = metrics::mmd2(ev.samples, h.a);
  return ev;
}

// ------------------------------------------------------------------ the studies' recipe

// The training recipe the studies share: `steps` at peak `lr` with a cosine decay, an EMA of
// the weights (`ema_decay`, 0: none), seeded and on `device`.
inline train::TrainOptions study_options(int64_t steps, uint64_t seed, torch::Device device,
                                         double lr = 2e-3, double ema_decay = 0.999) {
  train::TrainOptions o;
  o.steps = steps;
  o.lr = lr;
  o.lr_schedule = train::LrSchedule::cosine;
  o.ema_decay = ema_decay;
  o.seed = seed;
  o.device = device;
  return o;
}

// Trains to the end with a progress bar `label` (shown when `show`, updated every `every`
// steps); `on_step` sees each step's result. Returns the training time in seconds.
inline double train_with_progress(
    train::Trainer& trainer, const std::string& label, bool show, int64_t every = 100,
    const std::function<void(int64_t, const objective::LossResult&)>& on_step = {}) {
  io::Progress progress(trainer.options().steps, label, show);
  auto t0 = std::chrono::steady_clock::now();
  trainer.run([&](int64_t step, const objective::LossResult& r) {
    if (on_step) on_step(step, r);
    if (step % every == 0) progress.update(step);
    return true;
  });
  progress.finish();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The effective options of a verb as key=value lines (config.toml and checkpoints).
inline std::string effective_config(const CLI::App* sub) {
  std::istringstream in(sub->config_to_str(true, false));
  std::string line, out;
  while (std::getline(in, line))
    if (line.rfind("config=", 0) != 0 && line.rfind("json=", 0) != 0) out += line + "\n";
  return out;
}

// Held-out halves of `spec` for the model of checkpoint `c`: the same split seed as
// training, so a table's held-out rows stay unseen; the dimension must match the model's.
inline Holdout checkpoint_holdout(const train::Checkpoint& c, const std::string& ckpt_path,
                                  const std::string& spec, int64_t dim, int64_t n, uint64_t seed) {
  CNF_CHECK(!spec.empty(), "the model in '", ckpt_path, "' names no data set (a TorchScript ",
            "module); pass --data SPEC for the held-out points");
  auto split = data::split_source(spec, dim > 0 ? dim : c.spec.model.dim, 2 * n, 0.1, seed);
  CNF_CHECK(split.holdout.size(1) == c.spec.model.dim, "data '", spec, "' has dimension ",
            split.holdout.size(1), " but the model in '", ckpt_path, "' has ", c.spec.model.dim);
  return halves(split.holdout);
}

}  // namespace cnf::app
