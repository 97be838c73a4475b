/// \file
/// cnf/train/trainer.h — the training loop: optimizer, EMA of weights, LR schedule,
/// gradient clipping, checkpoints (atomic) and exact resume.
///
/// Exact resume: a checkpoint holds the weights, the EMA weights, the optimizer state, the
/// step and the state of the one generator every random draw of training takes (data,
/// noise, times). A run resumed from step k continues bit for bit as the uninterrupted run
/// would (same thread count; LibTorch's CPU kernels are deterministic at fixed threads).
///
/// Data parallel (issue #11): a step's global batch is S = world_size * accumulate shards of
/// batch_size rows. Shard k draws its data, noise and times from a generator of its own,
/// seeded from (seed, k) (shard 0 from the seed itself, so a one-process run is unchanged).
/// Rank r of a dist::Group computes the gradients of shards r*K .. r*K+K-1 (K = accumulate),
/// summing their backward passes; one bucketed all-reduce sums them over the ranks and the
/// sum is divided by S. So `--nproc 2` and one process with `accumulate = 2` train on the
/// same global batches; they differ only in the order of float32 sums. Checkpoints hold every
/// shard's generator, so a run resumes with the same S on any number of processes.
///
/// Nothing here knows about flags, files other than checkpoints, or progress bars: the
/// caller observes each step through a callback.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <functional>
#include <memory>
#include <string>

#include "cnf/core/registry.h"
#include "cnf/coupling/coupling.h"
#include "cnf/data/pairs.h"
#include "cnf/data/sources.h"
#include "cnf/nn/velocity.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/objective/mle.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"
#include "cnf/train/checkpoint.h"
#include "cnf/train/flow_spec.h"
#include "cnf/train/objectives.h"

namespace cnf::dist {
class Group;
}

namespace cnf::train {

/// The optimizers (registry `optimizers()`): adam (L2 weight decay), adamw (decoupled).
enum class Optimizer { adam, adamw };
/// The optimizers by name: adam, adamw.
const Registry<Optimizer>& optimizers();
/// Learning-rate schedules after the warm-up (registry `lr_schedules()`): constant, cosine
/// (to 0 at the last step), linear (to 0 at the last step).
enum class LrSchedule { constant, cosine, linear };
/// The learning-rate schedules by name: constant, cosine, linear.
const Registry<LrSchedule>& lr_schedules();
/// Where a coupling's plan is solved with several shards (registry `coupling_scopes()`).
enum class CouplingScope { rank, global };
/// The coupling scopes by name: rank, global.
const Registry<CouplingScope>& coupling_scopes();

/// Optimizer, schedule, batches and coupling of a Trainer; validate() checks them.
struct TrainOptions {
  /// Optimization steps (>= 0).
  int64_t steps = 2000;
  /// Rows per shard (micro-batch).
  int64_t batch_size = 256;
  /// The optimizer.
  Optimizer optimizer = Optimizer::adam;
  /// Peak learning rate (> 0).
  double lr = 1e-3;
  /// Weight decay of adam (L2) or adamw (decoupled), >= 0.
  double weight_decay = 0.0;
  /// The learning-rate schedule after the warm-up (cosine and linear reach 0 at `steps`).
  LrSchedule lr_schedule = LrSchedule::constant;
  /// Linear warm-up: step k < warmup_steps uses lr (k + 1) / warmup_steps.
  int64_t warmup_steps = 0;
  /// Maximum global gradient norm; 0 disables clipping.
  double grad_clip = 0.0;
  /// EMA decay of the weights used for sampling; 0 disables the EMA.
  double ema_decay = 0.0;
  /// Class-conditional models (spec.model.classes > 0): probability that a training label is
  /// replaced by the null label, which trains the unconditional field that classifier-free
  /// guidance and likelihoods use.
  double label_dropout = 0.1;
  /// Pairing of data and noise: independent, exact, sinkhorn or sb (coupling/coupling.h).
  std::string coupling = "independent";
  /// When > 0, train only at the N = time_grid times of an N-step Euler sampler
  /// (distillation of a flow into an N-step generator); 0 draws t continuously.
  int64_t time_grid = 0;
  /// Solver, divergence, gradient route and regularizers of the mle objective.
  objective::MLEOptions mle;
  /// epsilon of the sinkhorn coupling (units of squared distance).
  double coupling_eps = 0.1;
  /// sigma of the sb coupling's Brownian bridge (its plan uses epsilon = 2 sigma^2).
  double bridge_sigma = 0.5;
  /// Micro-batches of batch_size per step in this process (gradient accumulation); the
  /// step's gradient is their mean. With a process group, each rank takes `accumulate`
  /// shards of the global batch.
  int64_t accumulate = 1;
  /// Where a coupling's plan is solved: rank (each shard's batch_size rows on their own)
  /// or global (the plan of all S shards' rows, gathered to every rank; each rank solves
  /// the same (S B)^2 plan with a generator shared by the ranks and keeps its rows).
  CouplingScope coupling_scope = CouplingScope::rank;
  /// Seeds every training generator (one per shard) and the weight initialization.
  uint64_t seed = 0;
  /// Device of the networks and the batches.
  c10::Device device = c10::Device(c10::kCPU);

  /// Throws cnf::Error naming the first invalid field.
  void validate() const;
};

/// A warning for a valid but doubtful combination, else "": minibatch OT couplings (exact,
/// sinkhorn) straighten paths only on the OT path, so on curved paths (vp, subvp, ve,
/// cosine) the command warns. (The sb coupling off the straight path is an error instead.)
std::string coupling_warning(const FlowSpec& spec, const TrainOptions& options);

/// Learning rate at `step` (0-based) under the options' schedule and warm-up.
double learning_rate(const TrainOptions& options, int64_t step);

/// The training loop (see the file comment): draws and pairs the batches, takes the optimizer
/// steps, keeps the EMA and writes and resumes checkpoints.
///
/// Example with a network of the program's own (examples/custom_field/main.cpp):
/// \snippet custom_field/main.cpp train
class Trainer {
 public:
  /// Trains the network `make_network` builds (default: nn::make_model(spec.model)). With a
  /// factory, an arch naming one of cnf's own networks (nn::model_names()) is recorded as
  /// kCustomArch; another name the caller set (e.g. "torchscript") is kept.
  ///
  /// Example (examples/train_own_data/main.cpp trains, saves, samples and measures W2):
  /// \code
  ///   auto data = std::make_shared<cnf::data::Table>(points, "my-points");  // float32 [N, D]
  ///   auto prior = std::make_shared<cnf::data::StandardNormal>(points.size(1));
  ///   cnf::train::TrainOptions options;
  ///   options.steps = 2000;
  ///   cnf::train::Trainer trainer(cnf::train::FlowSpec{}, options, data, prior);
  ///   trainer.run();
  ///   trainer.save("model.pt");
  /// \endcode
  Trainer(FlowSpec spec, TrainOptions options, data::SourcePtr data, data::SourcePtr prior,
          NetworkFactory make_network = {});
  ~Trainer();

  /// Called after every step with the step count done so far; return false to stop early.
  using StepCallback = std::function<bool(int64_t step, const objective::LossResult&)>;

  /// Trains until `options.steps` steps are done (or the callback stops it). Throws
  /// cnf::Error naming the step when the loss or the gradient becomes NaN/Inf.
  void run(const StepCallback& on_step = {});
  /// Train on these fixed pairs (x_0[i], x_1[i]) instead of independent draws of data
  /// and prior paired by the coupling (reflow, distillation). Dimensions must match.
  void set_pairs(data::PairTablePtr pairs);
  /// One optimization step; returns its loss (the mean over the global batch).
  objective::LossResult step();

  /// Joins a data-parallel group (before resume() and run()): rank 0's weights are broadcast
  /// to every rank, and this process takes shards rank*K .. rank*K+K-1 of the S =
  /// world_size * K shards of each step. From then on step(), save() and
  /// param_max_diff() are collective: every rank must call them in the same order.
  void set_group(std::shared_ptr<dist::Group> group);
  /// Polled before every step's gradient all-reduce; `true` on any rank makes
  /// stop_requested() true on every rank after that same step (so no rank is left waiting
  /// in a collective). Without a group, stop_requested() just calls it.
  void set_stop_check(std::function<bool()> local_stop);
  /// Whether training should stop (see set_stop_check).
  bool stop_requested() const;
  /// Largest |difference| between any rank's weights and rank 0's (collective; 0 without
  /// a group). Data-parallel ranks must hold identical weights.
  double param_max_diff() const;
  /// Global shards per step (world_size * accumulate), and seconds spent in collectives.
  int64_t shards() const;
  /// Seconds spent in collectives (0 without a group).
  double collective_seconds() const;

  /// Writes a checkpoint atomically; `config_text` (the effective configuration) is
  /// stored inside it. With a group, every rank's generators are gathered and only rank 0
  /// writes.
  void save(const std::string& path, const std::string& config_text = "") const;
  /// Restores the state written by save(); the spec and the coupling (with its parameters)
  /// in the file must match this trainer's. Returns "" when the run continues exactly; else
  /// a note saying why it will not (the file has a different number of shards per step, so
  /// the random streams restart; or it was written with another thread count, so fused
  /// float32 sums are grouped differently).
  std::string resume(const std::string& path);

  /// The coupling's line for a training report (coupling::Coupling::report(): e.g. how
  /// many Sinkhorn plans did not converge), "" when it has nothing to say.
  std::string coupling_report() const;
  /// Steps done so far, those before a resume included.
  int64_t steps_done() const;
  /// The flow spec.
  const FlowSpec& spec() const;
  /// The schedule of the path it trains on (built once from the spec).
  const path::SchedulePtr& schedule() const;
  /// The training options.
  const TrainOptions& options() const;
  /// The trained network, and its EMA (the network itself when the EMA is off).
  nn::VelocityField model() const;
  /// The EMA of the network (the network itself when the EMA is off).
  nn::VelocityField ema_model() const;
  /// ema_model() read as a velocity field (spec().velocity_field), for ODE sampling and
  /// likelihoods whatever the network predicts.
  nn::VelocityField ema_velocity() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace cnf::train
