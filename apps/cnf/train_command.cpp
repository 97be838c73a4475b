// apps/cnf/train_command.cpp — `cnf train` and `cnf demo`: trains a flow, writes the
// checkpoint (also when a step fails or a signal arrives), then samples it and reports W2,
// MMD and plots against held-out data.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "apps/cnf/common.h"
#include "apps/cnf/dist_args.h"
#include "apps/cnf/evaluation.h"
#include "apps/cnf/flow_source.h"
#include "apps/cnf/images.h"
#include "apps/cnf/interrupt.h"
#include "apps/cnf/train_report.h"
#include "apps/cnf/verbs.h"
#include "cnf/data/images.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/io/files.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/io/train_log.h"
#include "cnf/metrics/distances.h"
#include "cnf/objective/score_matching.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

namespace cnf::app {
namespace {

// What is learned: data, prior, path, objective and what the network predicts.
void add_flow_flags(CLI::App* sub, TrainArgs& a) {
  auto& s = a.spec;
  sub->add_option("--data", s.data,
                  "Data rho_0: a toy set (8gaussians, moons, circles, checkerboard, pinwheel, "
                  "2spirals, swissroll, rings), normal, gmm:K, or a .npy/.csv file")
      ->capture_default_str();
  sub->add_option("--prior", s.prior, "Prior rho_1: normal (N(0, I)) or any data spec (bridge)")
      ->capture_default_str();
  sub->add_option("--dim", a.dim, "Dimension for normal and gmm:K data")->capture_default_str();
  sub->add_option("--schedule", s.schedule,
                  "Affine path: " + path::schedules().joined_names() +
                      ", with parameters as name:key=value,... (vp:beta_min=0.1,beta_max=20, "
                      "ve:sigma_min=0.01,sigma_max=50, condot:sigma_min=0.01)")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { path::make_schedule(v); }));
  sub->add_option("--objective", s.objective,
                  "Training objective: fm (flow matching), score (denoising score matching) or "
                  "mle (maximum likelihood through the ODE)")
      ->capture_default_str()
      ->check(parsed_by(train::canonical_objective));
  sub->add_option("--param", s.param,
                  "What the network predicts: " + path::params().joined_names() +
                      " (default: velocity for fm, noise for score)")
      ->check(names_of(path::params()));
  sub->add_option(
         "--weighting", s.weighting,
         "Score-matching weighting lambda(t) (sigma2: noise prediction, likelihood: "
         "g^2, min-snr:gamma=G: Min-SNR-gamma, gamma 5 by default, edm:sigma_data=S: EDM's "
         "lambda, sigma_data 1 by default): " +
             objective::weightings().joined_names())
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { objective::parse_weighting_spec(v); }));
  sub->add_option("--time-sampling", s.time_sampling,
                  "fm/score: density of the training times: uniform, logit-normal:m=0,s=1 "
                  "(Esser et al. 2024), cosine (their CosMap), log-normal:m=-1.2,s=1.2 "
                  "(EDM's ln(sigma_t/alpha_t) ~ N(m, s^2))")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { objective::TimeDensity::parse(v); }));
  sub->add_option("--time-weighting", s.time_weighting,
                  "fm/score: weight the loss over time by one of the --time-sampling densities "
                  "(same expected loss as drawing t from it; uniform: no weight)")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { objective::TimeDensity::parse(v); }));
}

// Maximum likelihood through the ODE: the training solve and the regularizers.
void add_mle_flags(CLI::App* sub, TrainArgs& a) {
  auto& m = a.opt.mle;
  sub->add_option("--mle-divergence", a.mle_divergence,
                  "mle: divergence in training: " + density::divergences().joined_names())
      ->capture_default_str()
      ->check(names_of(density::divergences()));
  sub->add_option("--mle-probes", m.divergence.probes, "mle: Hutchinson probes per solve")
      ->capture_default_str();
  sub->add_flag("--adjoint", m.adjoint, "mle: gradients by the adjoint method (else backprop)");
  sub->add_option("--mle-method", m.solve.method,
                  "mle: ODE method of the training solve: " + ode::tableaus().joined_names())
      ->capture_default_str()
      ->check(names_of(ode::tableaus()));
  sub->add_option("--mle-steps", m.solve.steps, "mle: steps (fixed-step methods)")
      ->capture_default_str();
  sub->add_option("--mle-rtol", m.solve.adaptive.rtol, "mle: rtol of the training solve")
      ->capture_default_str();
  sub->add_option("--mle-atol", m.solve.adaptive.atol, "mle: atol of the training solve")
      ->capture_default_str();
  sub->add_option("--mle-max-steps", m.solve.adaptive.max_steps,
                  "mle: adaptive steps per solve before training stops")
      ->capture_default_str();
  sub->add_option("--kinetic", m.kinetic, "mle: weight of the kinetic energy int ||v||^2 dt")
      ->capture_default_str();
  sub->add_option("--jacobian", m.jacobian,
                  "mle: weight of the Jacobian Frobenius norm int ||grad v||_F^2 dt")
      ->capture_default_str();
  sub->add_option("--steepest", m.steepest,
                  "mle: weight of the steepest-flow regularizer "
                  "int ||v - (grad log rho_1 - grad log rho_t)||^2 dt")
      ->capture_default_str();
}

// The network.
void add_network_flags(CLI::App* sub, TrainArgs& a) {
  auto& s = a.spec;
  auto& o = a.opt;
  sub->add_option("--sigma-min", s.sigma_min, "sigma_min of the condot path")
      ->capture_default_str();
  sub->add_option("--arch", s.model.arch,
                  "Velocity network: mlp; hollow (exact divergence for the cost of one forward "
                  "pass); unet for image data")
      ->capture_default_str()
      ->check(one_of(nn::model_names(), "architecture"));
  sub->add_option("--width", s.model.width, "Hidden units per layer (unet: base channels)")
      ->capture_default_str();
  sub->add_option("--channel-mult", s.model.channel_mult,
                  "unet: channel multipliers, one per resolution level")
      ->capture_default_str()
      ->check(parsed_by(nn::parse_channel_mult));
  sub->add_option("--res-blocks", s.model.res_blocks, "unet: residual blocks per level")
      ->capture_default_str();
  sub->add_option("--attention", s.model.attention,
                  "unet: self-attention at the lowest resolution (true/false)")
      ->capture_default_str();
  sub->add_option("--classes", s.model.classes,
                  "Class-conditional model with this many classes (labeled image data; 0: off)")
      ->capture_default_str();
  sub->add_option("--label-dropout", o.label_dropout,
                  "Class-conditional: probability of training a step's label as 'no label' "
                  "(classifier-free guidance)")
      ->capture_default_str();
  sub->add_option("--depth", s.model.depth, "Hidden layers")->capture_default_str();
  sub->add_option("--activation", s.model.activation,
                  "Activation: " + nn::activations().joined_names())
      ->capture_default_str()
      ->check(names_of(nn::activations()));
  sub->add_option("--time-embedding", s.model.time_embedding,
                  "How time enters: " + nn::time_embeddings().joined_names())
      ->capture_default_str()
      ->check(names_of(nn::time_embeddings()));
  sub->add_option("--fourier-features", s.model.fourier_features,
                  "Frequencies of the fourier time embedding")
      ->capture_default_str();
  sub->add_option("--blocks", s.model.blocks,
                  "Stacked networks, block k owning t in [k/K, (k+1)/K) (FFJORD's CNF blocks)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
}

// Optimizer, learning rate, EMA and the pairing of data and noise.
void add_optimizer_flags(CLI::App* sub, TrainArgs& a) {
  auto& o = a.opt;
  sub->add_option("--steps", o.steps, "Optimization steps")->capture_default_str();
  sub->add_option("--batch-size", o.batch_size, "Minibatch size")->capture_default_str();
  add_choice(sub, "--optimizer", o.optimizer, train::optimizers(), "Optimizer");
  sub->add_option("--lr", o.lr, "Learning rate")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "Weight decay")->capture_default_str();
  add_choice(sub, "--lr-schedule", o.lr_schedule, train::lr_schedules(),
             "Learning rate after the warm-up");
  sub->add_option("--warmup-steps", o.warmup_steps, "Linear LR warm-up steps")
      ->capture_default_str();
  sub->add_option("--grad-clip", o.grad_clip, "Max global gradient norm (0: off)")
      ->capture_default_str();
  sub->add_option("--ema-decay", o.ema_decay, "EMA decay of the sampling weights (0: off)")
      ->capture_default_str();
  sub->add_option("--coupling", o.coupling,
                  "Pairing of data and noise, a spec name[:key=value] of " +
                      join_names(coupling::coupling_names()) +
                      ": exact is minibatch OT (OT-CFM), sinkhorn:eps=E the entropic plan, "
                      "sb:sigma=S the Schrodinger bridge (entropic plan at epsilon = 2 sigma^2 "
                      "and Brownian-bridge path); keys left out come from --coupling-eps and "
                      "--bridge-sigma")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { coupling::make_coupling(v); }));
  sub->add_option("--coupling-eps", o.coupling_eps,
                  "Entropic epsilon of --coupling sinkhorn (units of squared distance)")
      ->capture_default_str();
  sub->add_option("--bridge-sigma", o.bridge_sigma, "Brownian-bridge sigma of --coupling sb")
      ->capture_default_str();
}

// Outputs, resuming, fine-tuning, the final evaluation and data parallelism.
void add_run_flags(CLI::App* sub, TrainArgs& a) {
  auto& o = a.opt;
  sub->add_option("--out", a.out, "Output folder (checkpoint, config, samples, plots, metrics)")
      ->capture_default_str();
  sub->add_option("--resume", a.resume, "Resume from this checkpoint (exact continuation)");
  sub->add_option("--init", a.init,
                  "Fine-tune a PyTorch-trained network instead of a new one: torchscript:FILE "
                  "(forward(x, t); --param says what it predicts, --schedule its path)");
  sub->add_option("--init-time", a.init_time,
                  "--init: the module's time convention, data-at-0 or data-at-1")
      ->capture_default_str();
  // Every value is checked once the flags are parsed: a bad one fails before the process
  // group, the data or the output folder are touched.
  sub->parse_complete_callback([&a] {
    check_init_module(a.init, a.init_time);
    train::TrainOptions opt = a.opt;
    opt.mle.divergence.method = density::parse_divergence(a.mle_divergence);
    opt.validate();
  });
  sub->add_option("--checkpoint-every", a.checkpoint_every,
                  "Also write the checkpoint every N steps (0: only at the end)")
      ->capture_default_str();
  sub->add_option("--log-every", a.log_every,
                  "Append a row (step, loss, lr, grad_norm, steps/s and the objective's terms, "
                  "each averaged over the interval) to OUT/train_log.csv and train_log.jsonl "
                  "every N steps (0: about 200 rows per run)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--eval-every", a.eval_every,
                  "Every N steps also sample the flow (EMA weights when kept) as the final "
                  "evaluation does and log W2, MMD^2, NFE and NLL against held-out data "
                  "(eval_w2, eval_mmd2, eval_nfe and eval_nll in the training log; 0: only at "
                  "the end)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--eval-nll-n", a.eval_nll_n,
                  "Held-out points of eval_nll (mean negative log-likelihood in nats, dopri5 "
                  "at 1e-5) at each --eval-every evaluation; 0: no likelihood")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_eval(sub, a.eval, "Samples for the final evaluation (W2 against as many held-out points)",
           "eval-");
  add_sampler_options(sub, a.eval.sampler, "eval-");
  sub->add_flag("--quiet", a.quiet, "No progress output");
  sub->add_option("--accumulate", o.accumulate,
                  "Micro-batches of --batch-size per step (gradient accumulation); with N "
                  "processes the global batch is N x accumulate x batch-size")
      ->capture_default_str();
  add_choice(sub, "--coupling-scope", o.coupling_scope, train::coupling_scopes(),
             "Where a coupling's plan is solved (rank: each micro-batch on its own; global: one "
             "plan for the whole global batch, gathered to every rank, each solving the (N B)^2 "
             "plan)");
  add_dist(sub, a.dist);
}

void add_train(CLI::App* sub, TrainArgs& a) {
  add_common(sub, a.common);
  add_flow_flags(sub, a);
  add_mle_flags(sub, a);
  add_network_flags(sub, a);
  add_optimizer_flags(sub, a);
  add_run_flags(sub, a);
}

// The crash-save policy after a failed step (`e`): keep the last good state in `ckpt` and say
// where it is. Never returns.
[[noreturn]] void fail_after_step(const Error& e, train::Trainer& trainer, bool grouped, bool rank0,
                                  const std::string& ckpt, const std::string& config,
                                  int64_t saved_step) {
  // With a group, saving is a collective that a dead or diverged peer cannot join: the
  // last checkpoint (written atomically by rank 0) is the last good state.
  if (grouped)
    fail(e.what(), "\nthe last good state (step ", saved_step, ") is saved in ", ckpt,
         rank0 ? "" : " on rank 0's host", "; resume from it with --resume");
  // A failed step never updates the weights (the trainer checks loss and gradient before
  // the optimizer), so what it holds is the last good state: keep it, then stop.
  // Weights that overflowed are not worth a checkpoint: the previous one stays.
  if (trainer.steps_done() != saved_step && weights_finite(*trainer.model())) {
    try {
      trainer.save(ckpt, config);
      saved_step = trainer.steps_done();
    } catch (const Error& save_error) {
      fail(e.what(), "\nsaving the last good state failed too (", save_error.what(),
           "); the checkpoint of step ", saved_step, " in ", ckpt, " is intact");
    }
  }
  fail(e.what(), "\nthe last good state (step ", saved_step, ") is saved in ", ckpt,
       "; resume from it with --resume after changing the options");
}

// Runs the training loop with progress output and periodic checkpoints; SIGINT/SIGTERM
// during the loop mean "save and stop". Returns what it measured.
// The training log (io::TrainLog): every `every` steps (and at the last), one row of the
// interval's means of the loss and the objective's terms, with the learning rate and steps/s.
// With an evaluation (every `eval_every` steps and at the last), those steps get a row too,
// with its figures; the other rows leave those columns empty (every row has them, so the
// CSV header holds them from the first row on).
using StepEvaluation = std::function<std::map<std::string, double>()>;

// --eval-every's likelihood: the mean negative log-likelihood (nats per point) of the first
// --eval-nll-n held-out points under the current flow (model_log_prob, evaluation stream 2).
double held_out_nll(const train::Trainer& trainer, const data::Source& prior, const Holdout& h,
                    const TrainArgs& a, torch::Device device) {
  const int64_t m = std::min<int64_t>(a.eval_nll_n, h.a.size(0));
  return -model_log_prob(trainer, prior, h.a.slice(0, 0, m).to(device), a.common.seed, 2)
              .to(torch::kFloat64)
              .mean()
              .item<double>();
}

class IntervalLog {
 public:
  IntervalLog(const std::string& folder, int64_t resume_step, int64_t every, int64_t eval_every = 0,
              StepEvaluation evaluate = {})
      : log_(folder, resume_step),
        every_(every),
        eval_every_(eval_every),
        evaluate_(std::move(evaluate)),
        t_(std::chrono::steady_clock::now()) {}
  void add(int64_t step, const objective::LossResult& r, double lr, bool last) {
    sums_["loss"] += r.loss.item<double>();
    // The objectives repeat the loss among their diagnostics; it is counted once.
    for (const auto& [name, value] : r.diagnostics)
      if (value.numel() == 1 && name != "loss") sums_[name] += value.item<double>();
    ++count_;
    const bool eval_now = evaluate_ && (step % eval_every_ == 0 || last);
    if (step % every_ != 0 && !last && !eval_now) return;
    // Steps/s of the training alone: the clock stops before an evaluation.
    const auto now = std::chrono::steady_clock::now();
    std::map<std::string, double> row;
    if (evaluate_) {
      for (const char* name : {"eval_w2", "eval_mmd2", "eval_nfe", "eval_nll"})
        row[name] = std::numeric_limits<double>::quiet_NaN();
      if (eval_now)
        for (const auto& [name, value] : evaluate_()) row[name] = value;
    }
    for (const auto& [name, sum] : sums_) row[name] = sum / static_cast<double>(count_);
    row["step"] = static_cast<double>(step);
    row["lr"] = lr;
    row["steps_per_second"] = static_cast<double>(count_) /
                              std::max(1e-9, std::chrono::duration<double>(now - t_).count());
    log_.append(row);
    sums_.clear();
    count_ = 0;
    t_ = std::chrono::steady_clock::now();
  }

 private:
  io::TrainLog log_;
  int64_t every_, eval_every_;
  StepEvaluation evaluate_;
  std::chrono::steady_clock::time_point t_;
  std::map<std::string, double> sums_;
  int64_t count_ = 0;
};

TrainRun train_with_checkpoints(train::Trainer& trainer, const TrainArgs& a, bool demo, bool rank0,
                                bool grouped, const std::string& ckpt, const std::string& config,
                                const StepEvaluation& evaluate = {}) {
  TrainRun run;
  int64_t saved_step = trainer.steps_done();
  run.first_step = saved_step;
  trainer.set_stop_check([] { return StopSignals::stop_signal() != 0; });
  const double collective_before = trainer.collective_seconds();
  const int64_t steps = a.opt.steps;
  io::Progress progress(steps, demo ? "demo: training" : "train", !a.quiet && rank0);
  // Rank 0 keeps the log; a resumed run continues it after the checkpoint's step.
  std::unique_ptr<IntervalLog> train_log;
  if (rank0)
    train_log = std::make_unique<IntervalLog>(
        a.out, a.resume.empty() ? -1 : trainer.steps_done(),
        a.log_every > 0 ? a.log_every : std::max<int64_t>(1, steps / 200), a.eval_every, evaluate);
  auto t0 = std::chrono::steady_clock::now();
  bool save_failed = false;
  try {
    trainer.run([&](int64_t step, const objective::LossResult& r) {
      if (train_log) train_log->add(step, r, train::learning_rate(a.opt, step - 1), step == steps);
      auto nfe = r.diagnostics.find("nfe");
      if (nfe != r.diagnostics.end()) {
        run.nfe_steps.push_back(static_cast<double>(step));
        run.nfe_values.push_back(nfe->second.item<double>());
      }
      if (step % 50 == 0 || step == steps) {
        run.last_loss = r.loss.item<double>();
        char buf[64];
        if (run.nfe_values.empty())
          std::snprintf(buf, sizeof buf, "loss %.4f", run.last_loss);
        else
          std::snprintf(buf, sizeof buf, "loss %.4f NFE %.0f", run.last_loss,
                        run.nfe_values.back());
        progress.update(step, buf);
      }
      if (a.checkpoint_every > 0 && step % a.checkpoint_every == 0) {
        try {
          trainer.save(ckpt, config);
        } catch (const Error& e) {
          save_failed = true;
          // With a group the save gathers every shard's generator, so a peer that died or
          // hung fails it; alone, only the file system can (room, permission).
          if (grouped)
            fail(e.what(), "\nthe last good state (step ", saved_step, ") is saved in ", ckpt,
                 rank0 ? "" : " on rank 0's host", "; resume from it with --resume");
          fail(e.what(), "\nthe checkpoint of step ", saved_step, " in ", ckpt,
               " is intact; resume from it with --resume ", ckpt, " once the folder has room");
        }
        saved_step = step;
      }
      return !trainer.stop_requested();
    });
  } catch (const Error& e) {
    progress.finish();
    if (save_failed) throw;
    fail_after_step(e, trainer, grouped, rank0, ckpt, config, saved_step);
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.collective_seconds = trainer.collective_seconds() - collective_before;
  progress.finish();
  return run;
}

// After a stop signal: says how to continue and returns the exit code (128 + signal), or
// -1 when no signal stopped the run.
int stopped_by_signal(const train::Trainer& trainer, const TrainArgs& a, const dist::Group* group,
                      const std::string& ckpt) {
  const auto steps = static_cast<long long>(a.opt.steps);
  const auto done = static_cast<long long>(trainer.steps_done());
  if (group && trainer.stop_requested()) {
    if (group->rank() == 0)
      std::fprintf(stderr,
                   "cnf: a stop signal reached a rank: all %d ranks stopped after step %lld of "
                   "%lld; the checkpoint is saved in %s. Continue with the same options and "
                   "--resume %s\n",
                   group->world_size(), done, steps, ckpt.c_str(), ckpt.c_str());
    const int sig = StopSignals::stop_signal();
    return 128 + (sig != 0 ? sig : SIGTERM);
  }
  if (const int sig = StopSignals::stop_signal()) {
    std::fprintf(stderr,
                 "cnf: %s received: stopped after step %lld of %lld; the checkpoint is saved in "
                 "%s. Continue with the same options and --resume %s\n",
                 signal_name(sig), done, steps, ckpt.c_str(), ckpt.c_str());
    return 128 + sig;
  }
  return -1;
}

int run_train(const TrainArgs& a, const CLI::App* sub, bool demo) {
  auto device = setup(a.common);
  train::TrainOptions opt = a.opt;
  opt.seed = a.common.seed;
  opt.device = device;
  opt.mle.divergence.method = density::parse_divergence(a.mle_divergence);
  opt.validate();
  CNF_CHECK(!demo || (a.dist.nproc == 1 && a.dist.rank < 0 && a.dist.world_size == 0),
            "cnf demo runs in one process; use cnf train --nproc N for data-parallel training");
  // Validated before the group is joined: a bad value fails on its own rank at once.
  auto group = demo ? nullptr : join_group(a.dist);
  const bool rank0 = !group || group->rank() == 0;
  const std::string config = effective_config(sub);
  if (rank0) {
    make_dir(a.out);
    io::write_text_atomic(a.out + "/config.toml", config);
  }
  auto split = data::split_source(a.spec.data, a.dim, 2 * a.eval.n, 0.1, a.common.seed);
  auto prior = data::make_source(a.spec.prior, split.train->dim());
  train::FlowSpec spec = a.spec;
  train::NetworkFactory factory;
  if (!a.init.empty())
    factory = init_module_factory(a.init, a.init_time, spec, split.train->dim(), device);
  train::Trainer trainer(spec, opt, split.train, prior, factory);
  if (const auto warning = train::coupling_warning(a.spec, opt); !warning.empty() && rank0)
    std::fprintf(stderr, "cnf: warning: %s\n", warning.c_str());
  if (group) trainer.set_group(group);
  const std::string ckpt = a.out + "/model.pt";
  if (!a.resume.empty()) {
    const std::string note = trainer.resume(a.resume);
    if (!note.empty() && rank0) std::fprintf(stderr, "cnf: note: %s\n", note.c_str());
  }
  // Write the checkpoint once before training: a folder without room or permission for it
  // fails now, not after hours of training. (With a group: collective, rank 0 writes.)
  trainer.save(ckpt, config);
  // Only the training loop turns SIGINT/SIGTERM into "save and stop"; later they kill.
  auto stop_signals = std::make_unique<StopSignals>();
  // --eval-every: rank 0 samples the current flow from the same noise each time (the final
  // evaluation's stream and settings), so the rows compare like with like.
  StepEvaluation evaluate_now;
  if (a.eval_every > 0)
    evaluate_now = [&, holdout = halves(split.holdout), schedule = trainer.schedule()] {
      torch::NoGradGuard no_grad;
      auto model = trainer.ema_model();
      const bool training = model->is_training();
      model->eval();
      const auto ev = evaluate(*model, trainer.spec().network_param(), *schedule, *prior, holdout,
                               a.eval, a.common.seed, device);
      if (training) model->train();
      std::map<std::string, double> row{
          {"eval_w2", ev.w2}, {"eval_mmd2", ev.mmd2}, {"eval_nfe", static_cast<double>(ev.nfe)}};
      if (a.eval_nll_n > 0) row["eval_nll"] = held_out_nll(trainer, *prior, holdout, a, device);
      return row;
    };
  const TrainRun run =
      train_with_checkpoints(trainer, a, demo, rank0, group != nullptr, ckpt, config, evaluate_now);
  trainer.save(ckpt, config);
  stop_signals.reset();
  // Data-parallel ranks apply the same averaged gradients, so their weights must agree bit
  // for bit; anything else is a bug worth stopping for.
  const double param_diff = trainer.param_max_diff();
  CNF_CHECK(param_diff == 0.0, "the ranks' weights diverged (largest difference ", param_diff,
            " after step ", trainer.steps_done(), "); the checkpoint holds rank 0's weights");
  if (const int rc = stopped_by_signal(trainer, a, group.get(), ckpt); rc >= 0) return rc;
  return evaluate_and_report(a, trainer, run, split, *prior, group.get(), device, param_diff, demo);
}

}  // namespace

Runner add_train_commands(CLI::App& app) {
  auto train_args = std::make_shared<TrainArgs>();
  auto* train_cmd = app.add_subcommand(
      "train", "Train a velocity field by flow matching (or a diffusion model by score matching)");
  add_train(train_cmd, *train_args);

  // The main job of the README: its defaults differ from train's.
  auto demo_args = std::make_shared<TrainArgs>();
  demo_args->out = "out/demo";
  demo_args->spec.data = "moons";
  demo_args->opt.steps = 20000;
  demo_args->opt.lr = 2e-3;
  demo_args->opt.lr_schedule = train::LrSchedule::cosine;
  demo_args->opt.ema_decay = 0.999;
  demo_args->eval.n = 1000;
  auto* demo_cmd = app.add_subcommand(
      "demo",
      "The main job: flow matching on the OT path on a 2-D toy set, then samples, "
      "plots and W2 to held-out data");
  add_train(demo_cmd, *demo_args);

  return [=]() -> int {
    if (train_cmd->parsed()) {
      if (wants_launch(train_args->dist))
        return launch_workers(train_args->dist.nproc, train_args->dist.dist_timeout + 10.0);
      return run_train(*train_args, train_cmd, false);
    }
    if (demo_cmd->parsed()) return run_train(*demo_args, demo_cmd, true);
    return -1;
  };
}

}  // namespace cnf::app
