#include "cnf/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <tuple>

#include "archive.h"
#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/core/spec.h"
#include "cnf/data/images.h"
#include "cnf/dist/dist.h"
#include "cnf/io/files.h"
#include "cnf/objective/score_matching.h"
#include "cnf/sde/parameterized.h"
#include "fused_adam.h"

namespace cnf::train {

const Registry<Optimizer>& optimizers() {
  static const Registry<Optimizer> r("optimizer",
                                     {{"adam", Optimizer::adam}, {"adamw", Optimizer::adamw}});
  return r;
}
const Registry<LrSchedule>& lr_schedules() {
  static const Registry<LrSchedule> r("learning-rate schedule", {{"constant", LrSchedule::constant},
                                                                 {"cosine", LrSchedule::cosine},
                                                                 {"linear", LrSchedule::linear}});
  return r;
}
const Registry<CouplingScope>& coupling_scopes() {
  static const Registry<CouplingScope> r(
      "coupling scope", {{"rank", CouplingScope::rank}, {"global", CouplingScope::global}});
  return r;
}

// ------------------------------------------------------------------------ TrainOptions

void TrainOptions::validate() const {
  CNF_CHECK(steps >= 0, "steps must be >= 0, got ", steps);
  CNF_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  CNF_CHECK(lr > 0 && std::isfinite(lr), "lr must be > 0, got ", lr);
  CNF_CHECK(weight_decay >= 0, "weight_decay must be >= 0, got ", weight_decay);
  CNF_CHECK(warmup_steps >= 0, "warmup_steps must be >= 0, got ", warmup_steps);
  CNF_CHECK(grad_clip >= 0, "grad_clip must be >= 0 (0 disables it), got ", grad_clip);
  mle.validate();
  CNF_CHECK(time_grid >= 0, "time_grid must be >= 0 (0: continuous t), got ", time_grid);
  CNF_CHECK(std::isfinite(coupling_eps) && coupling_eps > 0,
            "coupling_eps must be finite and > 0, got ", coupling_eps);
  CNF_CHECK(std::isfinite(bridge_sigma) && bridge_sigma > 0,
            "bridge_sigma must be finite and > 0, got ", bridge_sigma);
  CNF_CHECK(label_dropout >= 0 && label_dropout <= 1,
            "label_dropout must be in [0, 1] (the probability of training without the label), got ",
            label_dropout);
  CNF_CHECK(accumulate >= 1, "accumulate must be >= 1 (micro-batches per step), got ", accumulate);
  CNF_CHECK(ema_decay >= 0 && ema_decay < 1, "ema_decay must be in [0, 1) (0 disables it), got ",
            ema_decay);
}

std::string coupling_warning(const FlowSpec& spec, const TrainOptions& options) {
  const auto name = split_spec(options.coupling, "coupling").name;
  if (name != "exact" && name != "sinkhorn") return {};
  if (path::schedule_name(spec.schedule) == "condot") return {};
  return "coupling " + name + " pairs data and noise by the squared-distance OT plan, " +
         "which makes the conditional paths straight and non-crossing only on the OT path " +
         "(condot); on the curved " + spec.make_schedule()->describe() +
         " path the pairing still trains a valid " +
         "flow, but the straightening OT-CFM promises does not follow";
}

double learning_rate(const TrainOptions& o, int64_t step) {
  double factor = 1.0;
  if (o.warmup_steps > 0 && step < o.warmup_steps)
    factor = static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / span, 0.0, 1.0);
  if (o.lr_schedule == LrSchedule::cosine) factor *= 0.5 * (1.0 + std::cos(M_PI * progress));
  if (o.lr_schedule == LrSchedule::linear) factor *= 1.0 - progress;
  return o.lr * factor;
}

// ----------------------------------------------------------------------------- Trainer

struct Trainer::State {
  FlowSpec spec;
  TrainOptions opt;
  data::SourcePtr data, prior;
  path::SchedulePtr schedule;
  coupling::CouplingPtr coupling;
  data::PairTablePtr pairs;
  const Objective* objective = nullptr;
  ObjectiveInputs inputs;  // what every micro-batch's loss reads besides the batch
  nn::VelocityField model, ema;
  nn::VelocityField field;  // model read as a velocity field (flow matching trains this)
  std::vector<torch::Tensor> params, ema_params;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  // The generators of this process's shards first_shard .. first_shard + K - 1 of the
  // `shards` per step, and the one shared by all ranks for global coupling plans.
  std::vector<at::Generator> gens;
  at::Generator coupling_gen;
  int64_t shards = 1, first_shard = 0;
  std::shared_ptr<dist::Group> group;
  std::function<bool()> local_stop;
  bool stop = false;
  int64_t step = 0;
  // Class-conditional training: the labeled image source.
  std::shared_ptr<const data::ImageSource> images;
};

namespace {
void set_lr(torch::optim::Optimizer& opt, Optimizer kind, double lr) {
  for (auto& group : opt.param_groups()) {
    if (kind == Optimizer::adamw)
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    else
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  }
}

at::Tensor generator_state(at::Generator gen) {  // a handle: the copy shares the state
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::Tensor(gen.get_state());
}
void set_generator_state(at::Generator& gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Seed of shard k: the run's seed for shard 0 (a one-process run draws what it always did),
// a splitmix64 mix of (seed, k) for the others.
uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t shard_seed(uint64_t seed, int64_t shard) {
  return shard == 0 ? seed : mix64(seed ^ mix64(static_cast<uint64_t>(shard)));
}
constexpr int64_t kCouplingStream = int64_t{1} << 40;  // the global plan's generator

double gradient_norm(const std::vector<torch::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  return at::stack(at::_foreach_norm(grads)).norm().item<double>();
}

// Names the step, what went non-finite and the likeliest cause, judged from the state the
// failed step started from (DESIGN: "stop with a message naming the step and the cause").
std::string divergence_message(int64_t step, const std::string& what, double value,
                               const std::vector<torch::Tensor>& params, const TrainOptions& o) {
  bool weights_finite = true;
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : params)
      weights_finite = weights_finite && torch::isfinite(p).all().item<bool>();
  }
  std::string cause;
  if (!weights_finite)
    cause =
        "the weights themselves are no longer finite (an earlier update overflowed): lower --lr";
  else if (step == 1)
    cause =
        "it fails at the very first step, with the initial weights: the data (or prior) "
        "likely holds extreme values, or the path is singular there (e.g. --sigma-min 0 "
        "with an objective that divides by sigma_t); rescale the data or change the path";
  else if (what == "the gradient norm")
    cause = "exploding gradients: set --grad-clip (e.g. 1) or lower --lr";
  else
    cause =
        "the learning rate is likely too high for this model and data, or a batch hit "
        "outliers: lower --lr, set --grad-clip (e.g. 1), or check the data";
  return detail::concat("training diverged at step ", step, ": ", what, " is ", value,
                        ". Likely cause: ", cause, " (lr = ", learning_rate(o, step - 1),
                        o.grad_clip > 0 ? ", grad_clip = " + std::to_string(o.grad_clip)
                                        : std::string(", no gradient clipping"),
                        ")");
}
}  // namespace

Trainer::Trainer(FlowSpec spec, TrainOptions options, data::SourcePtr data, data::SourcePtr prior,
                 NetworkFactory make_network)
    : s_(std::make_unique<State>()) {
  options.validate();
  CNF_CHECK(data && prior, "trainer needs a data source and a prior");
  CNF_CHECK(data->dim() == prior->dim(), "data '", data->spec(), "' has dimension ", data->dim(),
            " but prior '", prior->spec(), "' has dimension ", prior->dim(),
            "; use sources of equal dimension");
  spec.model.dim = data->dim();
  if (make_network) {
    const auto builtin = nn::model_names();
    if (std::find(builtin.begin(), builtin.end(), spec.model.arch) != builtin.end())
      spec.model.arch = kCustomArch;
  } else
    make_network = nn::make_model;
  spec.objective = canonical_objective(spec.objective);
  spec.param = path::param_name(spec.network_param());
  s_->objective = &spec.training_objective();
  const auto weighting = objective::parse_weighting_spec(spec.weighting);
  spec.weighting = weighting.describe();
  const auto time_sampling = objective::TimeDensity::parse(spec.time_sampling);
  const auto time_weighting = objective::TimeDensity::parse(spec.time_weighting);
  spec.time_sampling = time_sampling.describe();
  spec.time_weighting = time_weighting.describe();
  CNF_CHECK(
      s_->objective->draws_times() || (time_sampling.is_uniform() && time_weighting.is_uniform()),
      "objective ", spec.objective, " integrates the ODE over all times; --time-sampling ",
      spec.time_sampling, " and --time-weighting ", spec.time_weighting,
      " apply to fm and score only (use uniform)");
  CNF_CHECK(options.time_grid == 0 || time_sampling.is_uniform(), "--time-sampling ",
            spec.time_sampling, " cannot be combined with distillation onto a ", options.time_grid,
            "-step time grid, which draws the grid's times");
  coupling::CouplingOptions co;
  co.epsilon = options.coupling_eps;
  co.sigma = options.bridge_sigma;
  s_->coupling = coupling::make_coupling(options.coupling, co);
  s_->objective->check(*prior, *s_->coupling);
  if (auto images = std::dynamic_pointer_cast<const data::ImageSource>(data)) {
    // The pixel layout, which every network of images records (a checkpoint turns samples
    // into pixels without reading the data set again).
    auto shape = images->image_shape();
    spec.model.channels = shape[0];
    spec.model.height = shape[1];
    spec.model.width_px = shape[2];
    if (spec.model.classes > 0) {
      const auto& set = images->images();
      CNF_CHECK(set.classes > 0 && set.labels.min().item<int64_t>() >= 0, "--classes ",
                spec.model.classes, " needs labeled images, but '", data->spec(),
                "' has no labels; use --classes 0");
      CNF_CHECK(set.labels.max().item<int64_t>() < spec.model.classes, "'", data->spec(),
                "' has labels up to ", set.labels.max().item<int64_t>(), " but --classes is ",
                spec.model.classes, "; pass --classes ", set.classes);
      CNF_CHECK(s_->coupling->keeps_draws(), "class-conditional training needs --coupling ",
                "independent (a coupling would re-pair images and labels), got '",
                s_->coupling->name(), "'");
      s_->images = images;
    }
  } else {
    CNF_CHECK(spec.model.arch != "unet", "--arch unet needs an image data set (fashion-mnist or ",
              "png:FOLDER), got '", data->spec(), "'");
    CNF_CHECK(spec.model.classes == 0, "--classes needs a labeled image data set, got '",
              data->spec(), "'");
  }
  s_->spec = spec;
  s_->opt = options;
  s_->data = std::move(data);
  s_->prior = std::move(prior);
  s_->schedule = spec.make_schedule();
  // SB-CFM (Tong et al. 2024): the entropic plan at epsilon = 2 sigma^2 with the Brownian
  // bridge's noise sigma^2 t (1 - t) added to the straight interpolant is the Schrodinger
  // bridge only on that interpolant, x_t = (1 - t) x_0 + t x_1.
  CNF_CHECK(s_->coupling->bridge_sigma() == 0 || s_->schedule->describe() == "condot",
            "coupling sb is a Schrodinger bridge only on the straight path (schedule condot with ",
            "sigma_min 0), got schedule ", s_->schedule->describe(),
            "; use --schedule condot --sigma-min 0, or --coupling exact|sinkhorn on this path");
  s_->gens.push_back(make_generator(options.seed));
  for (int64_t k = 1; k < options.accumulate; ++k)
    s_->gens.push_back(make_generator(shard_seed(options.seed, k)));
  s_->shards = options.accumulate;
  s_->coupling_gen = make_generator(shard_seed(options.seed, kCouplingStream));
  {
    // Weight initialization draws from LibTorch's global generator: seed it from ours.
    torch::manual_seed(options.seed);
    s_->model = build_network(make_network, spec.model);
  }
  s_->model->to(options.device);
  s_->field = spec.velocity_field(s_->model);
  s_->params = s_->model->parameters();
  auto& in = s_->inputs;
  in.network = s_->model.get();
  in.field = s_->field.get();
  in.schedule = s_->schedule;
  in.prior = s_->prior.get();
  in.param = spec.network_param();
  in.weighting = weighting;
  in.bridge_sigma = s_->coupling->bridge_sigma();
  in.time_grid = options.time_grid;
  in.time_sampling = time_sampling;
  in.time_weighting = time_weighting;
  in.mle = &s_->opt.mle;
  if (options.ema_decay > 0) {
    s_->ema = build_network(make_network, spec.model);
    CNF_CHECK(s_->ema->parameters().size() == s_->model->parameters().size(),
              "the network factory built networks with different parameter lists; it must ",
              "build the same architecture on every call (the EMA copy is a second call)");
    s_->ema->to(options.device);
    s_->ema_params = s_->ema->parameters();
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < s_->params.size(); ++i) {
      s_->ema_params[i].copy_(s_->params[i]);
      s_->ema_params[i].set_requires_grad(false);
    }
  }
  if (options.optimizer == Optimizer::adamw)
    s_->optimizer = std::make_unique<FusedAdamW>(
        s_->params, torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay));
  else
    s_->optimizer = std::make_unique<FusedAdam>(
        s_->params, torch::optim::AdamOptions(options.lr).weight_decay(options.weight_decay));
}

Trainer::~Trainer() = default;

namespace {
// The rows of one shard: (x_0, x_1) drawn from its generator (labels ride along for
// class-conditional models).
struct Micro {
  at::Tensor a, b, labels;
};
}  // namespace

objective::LossResult Trainer::step() {
  auto& s = *s_;
  const auto& o = s.opt;
  const int64_t K = static_cast<int64_t>(s.gens.size());
  std::vector<Micro> micro(K);
  const bool draws_prior = s.objective->pairs_with_prior();
  const bool global_plan =
      o.coupling_scope == CouplingScope::global && !s.pairs && draws_prior && !s.images;
  for (int64_t j = 0; j < K; ++j) {
    auto& gen = s.gens[j];
    auto& m = micro[j];
    if (s.pairs) {
      std::tie(m.a, m.b) = s.pairs->sample(o.batch_size, gen);
      m.a = m.a.to(o.device);
      m.b = m.b.to(o.device);
    } else if (!draws_prior) {
      m.a = s.data->sample(o.batch_size, gen).to(o.device);  // e.g. mle: data only
    } else if (s.images) {
      // Class-conditional: labels ride along; a fraction label_dropout is replaced by the
      // null label so the same network also learns the unconditional field (Ho & Salimans
      // 2022).
      auto [x_0, labels] = s.images->sample_labeled(o.batch_size, gen);
      auto drop = torch::rand({o.batch_size}, gen) < o.label_dropout;
      m.labels = torch::where(drop, torch::full_like(labels, -1), labels).to(o.device);
      m.a = x_0.to(o.device);
      m.b = s.prior->sample(o.batch_size, gen).to(o.device);
    } else {
      auto x_0 = s.data->sample(o.batch_size, gen).to(o.device);
      auto x_1 = s.prior->sample(o.batch_size, gen).to(o.device);
      if (global_plan) {
        m.a = x_0;
        m.b = x_1;
      } else {
        std::tie(m.a, m.b) = s.coupling->pair(x_0, x_1, gen);
      }
    }
  }
  if (global_plan) {
    // The plan of the whole global batch (S shards in shard order), the same on every rank;
    // each rank keeps its shards' rows. Cost: every rank solves an (S B) x (S B) plan.
    std::vector<at::Tensor> x_0, x_1;
    for (auto& m : micro) {
      x_0.push_back(m.a);
      x_1.push_back(m.b);
    }
    auto all_0 = torch::cat(x_0), all_1 = torch::cat(x_1);
    if (s.group) {
      all_0 = s.group->all_gather(all_0).flatten(0, 1);
      all_1 = s.group->all_gather(all_1).flatten(0, 1);
    }
    auto [a, b] = s.coupling->pair(all_0, all_1, s.coupling_gen);
    for (int64_t j = 0; j < K; ++j) {
      const int64_t row = (s.first_shard + j) * o.batch_size;
      micro[j].a = a.slice(0, row, row + o.batch_size);
      micro[j].b = b.slice(0, row, row + o.batch_size);
    }
  }
  s.optimizer->zero_grad();
  objective::LossResult result;
  double loss_sum = 0;
  for (int64_t j = 0; j < K; ++j) {
    auto& gen = s.gens[j];
    const auto& m = micro[j];
    if (m.labels.defined()) s.model->set_labels(m.labels);
    auto r = s.objective->loss(s.inputs, m.a, m.b, gen);
    if (s.images) s.model->set_labels({});
    const double loss = r.loss.item<double>();
    // Without a group the loss is checked before its backward pass; with one, after the
    // all-reduce, so that every rank stops on the same step.
    if (!s.group && !std::isfinite(loss))
      fail(divergence_message(s.step + 1, "the loss", loss, s.params, o));
    // Backward passes of the micro-batches add up in .grad; the sum is divided by S below.
    r.loss.backward();
    loss_sum += loss;
    if (j == 0) result = std::move(r);
  }
  double loss = loss_sum;
  if (s.group) {
    // One bucketed all-reduce carries the gradients, the loss and the stop flag.
    std::vector<at::Tensor> buffers;
    for (auto& p : s.params) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      buffers.push_back(p.grad());
    }
    const bool stop_here = s.local_stop && s.local_stop();
    auto scalars = torch::tensor({loss_sum, stop_here ? 1.0 : 0.0},
                                 torch::dtype(s.params.front().scalar_type()).device(o.device));
    buffers.push_back(scalars);
    s.group->all_reduce_sum(buffers);
    auto host = scalars.to(torch::kCPU, torch::kFloat64);
    loss = host[0].item<double>();
    s.stop = host[1].item<double>() > 0;
  }
  if (s.shards > 1) {
    torch::NoGradGuard no_grad;
    loss /= static_cast<double>(s.shards);
    for (auto& p : s.params)
      if (p.grad().defined()) p.grad().div_(static_cast<double>(s.shards));
  }
  if (s.group && !std::isfinite(loss))
    fail(divergence_message(s.step + 1, "the loss (mean over the ranks)", loss, s.params, o));
  if (s.shards > 1) result.loss = torch::tensor(loss);
  // Checked on every step, clipped or not: one non-finite gradient would turn every weight
  // into NaN through the optimizer, and the "last good" checkpoint with it.
  const double norm = o.grad_clip > 0 ? torch::nn::utils::clip_grad_norm_(s.params, o.grad_clip)
                                      : gradient_norm(s.params);
  if (!std::isfinite(norm))
    fail(divergence_message(s.step + 1, "the gradient norm", norm, s.params, o), " (the loss was ",
         loss, ")");
  // The norm before clipping (what the training log records).
  result.diagnostics["grad_norm"] = torch::tensor(norm);
  set_lr(*s.optimizer, o.optimizer, learning_rate(o, s.step));
  s.optimizer->step();
  if (s.ema) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < s.params.size(); ++i)
      s.ema_params[i].mul_(o.ema_decay).add_(s.params[i], 1.0 - o.ema_decay);
  }
  ++s.step;
  return result;
}

void Trainer::set_group(std::shared_ptr<dist::Group> group) {
  CNF_CHECK(group, "set_group needs a group");
  auto& s = *s_;
  const int64_t K = s.opt.accumulate;
  s.group = std::move(group);
  // Every rank must train the same model on the same global batch: compare a fingerprint of
  // what the ranks must agree on (FNV-1a of the text) before the first collective on weights.
  const auto& o = s.opt;
  const std::string agreed = detail::concat(
      s.spec.serialize(), "|", o.batch_size, "|", o.accumulate, "|", o.seed, "|",
      optimizers().name_of(o.optimizer), "|", o.lr, "|", lr_schedules().name_of(o.lr_schedule), "|",
      o.steps, "|", o.warmup_steps, "|", o.weight_decay, "|", o.grad_clip, "|", o.ema_decay, "|",
      s.coupling->describe(), "|", coupling_scopes().name_of(o.coupling_scope), "|", o.time_grid,
      "|", o.label_dropout, "|", s.params.size());
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : agreed) h = (h ^ ch) * 1099511628211ull;
  auto all = s.group->all_gather(torch::tensor({static_cast<int64_t>(h)}, torch::kLong));
  for (int64_t r = 1; r < all.size(0); ++r)
    CNF_CHECK(all[r][0].item<int64_t>() == all[0][0].item<int64_t>(), "rank ", r,
              " was started with other training options than rank 0 (model, data, seed, "
              "batch size, accumulate, optimizer, schedule or coupling differ); start every "
              "rank with the same options");
  s.shards = static_cast<int64_t>(s.group->world_size()) * K;
  s.first_shard = static_cast<int64_t>(s.group->rank()) * K;
  s.gens.clear();
  for (int64_t j = 0; j < K; ++j)
    s.gens.push_back(make_generator(shard_seed(s.opt.seed, s.first_shard + j)));
  // Every rank starts from rank 0's weights (they agree already when the seeds do; the
  // broadcast makes it so whatever the seeds).
  s.group->broadcast(s.params);
  if (s.ema) s.group->broadcast(s.ema_params);
}

void Trainer::set_stop_check(std::function<bool()> local_stop) {
  s_->local_stop = std::move(local_stop);
}

bool Trainer::stop_requested() const {
  if (s_->group) return s_->stop;
  return s_->local_stop && s_->local_stop();
}

double Trainer::param_max_diff() const {
  const auto& s = *s_;
  if (!s.group) return 0.0;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flat;
  for (const auto& p : s.params) flat.push_back(p.detach().reshape({-1}).to(torch::kFloat64));
  auto mine = torch::cat(flat);
  std::vector<at::Tensor> root{mine.clone()};
  s.group->broadcast(root);
  auto diff = (mine - root[0]).abs().max().reshape({1});
  return s.group->all_gather(diff).max().item<double>();
}

int64_t Trainer::shards() const { return s_->shards; }
double Trainer::collective_seconds() const {
  return s_->group ? s_->group->collective_seconds() : 0.0;
}

void Trainer::set_pairs(data::PairTablePtr pairs) {
  CNF_CHECK(pairs, "set_pairs needs a pair table");
  CNF_CHECK(pairs->dim() == s_->spec.model.dim, "pairs '", pairs->origin(), "' have dimension ",
            pairs->dim(), " but the model has ", s_->spec.model.dim);
  s_->pairs = std::move(pairs);
}

void Trainer::run(const StepCallback& on_step) {
  s_->model->train();
  while (s_->step < s_->opt.steps) {
    auto r = step();
    if (on_step && !on_step(s_->step, r)) break;
  }
}

void Trainer::save(const std::string& path, const std::string& config_text) const {
  const auto& s = *s_;
  torch::serialize::OutputArchive ar;
  ar.write("format", c10::IValue(std::string("cnf-checkpoint-1")));
  ar.write("spec", c10::IValue(s.spec.serialize()));
  ar.write("config", c10::IValue(config_text));
  ar.write("coupling", c10::IValue(s.coupling->describe()));
  ar.write("step", c10::IValue(s.step));
  // Fused float32 reductions sum in per-thread blocks: a resume is bit-exact only at the same
  // thread count, so the count is kept to say so.
  ar.write("threads", c10::IValue(static_cast<int64_t>(at::get_num_threads())));
  // Every shard's generator, in shard order (gathered from the ranks); "rng" alone is
  // shard 0's, as one-process checkpoints always stored it.
  std::vector<at::Tensor> mine;
  for (const auto& g : s.gens) mine.push_back(generator_state(g));
  auto states = torch::stack(mine);
  if (s.group) states = s.group->all_gather(states).flatten(0, 1);
  if (s.group && s.group->rank() != 0) return;
  ar.write("rng", states[0].clone());
  if (s.shards > 1) ar.write("rng_shards", states);
  if (s.opt.coupling_scope == CouplingScope::global)
    ar.write("coupling_rng", generator_state(s.coupling_gen));
  torch::serialize::OutputArchive model_ar, opt_ar;
  s.model->save(model_ar);
  ar.write("model", model_ar);
  if (s.ema) {
    torch::serialize::OutputArchive ema_ar;
    s.ema->save(ema_ar);
    ar.write("ema", ema_ar);
  }
  s.optimizer->save(opt_ar);
  ar.write("optimizer", opt_ar);
  io::write_atomic(path, [&](std::ostream& os) { ar.save_to(os); });
}

std::string Trainer::resume(const std::string& path) {
  auto& s = *s_;
  auto ar = open_archive(path);
  // Compared in canonical form, so checkpoints from before a spec field existed still match.
  auto stored = FlowSpec::parse(read_string(ar, "spec", path), path).serialize();
  CNF_CHECK(stored == s.spec.serialize(), "checkpoint '", path,
            "' was trained with a different model/path/data spec:\n", stored,
            "use the same options to resume, or start a new run");
  // Checkpoints from before couplings were stored used the independent coupling.
  c10::IValue stored_coupling;
  const std::string coupling = coupling::canonical_coupling(
      ar.try_read("coupling", stored_coupling) && stored_coupling.isString()
          ? stored_coupling.toStringRef()
          : std::string("independent"));
  CNF_CHECK(coupling == s.coupling->describe(), "checkpoint '", path,
            "' was trained with the coupling ", coupling, " but this run uses ",
            s.coupling->describe(), "; pass the same --coupling (e.g. --coupling ", coupling,
            ") to resume");
  load_module(ar, "model", *s.model, path);
  if (s.ema) load_module(ar, "ema", *s.ema, path);
  torch::serialize::InputArchive opt_ar;
  CNF_CHECK(ar.try_read("optimizer", opt_ar), "checkpoint '", path, "' has no optimizer state");
  s.optimizer->load(opt_ar);
  c10::IValue step;
  CNF_CHECK(ar.try_read("step", step) && step.isInt(), "checkpoint '", path, "' has no step");
  s.step = step.toInt();
  at::Tensor rng, shards;
  CNF_CHECK(ar.try_read("rng", rng), "checkpoint '", path, "' has no generator state");
  if (!ar.try_read("rng_shards", shards)) shards = rng.unsqueeze(0);
  at::Tensor coupling_rng;
  if (s.opt.coupling_scope == CouplingScope::global && ar.try_read("coupling_rng", coupling_rng))
    set_generator_state(s.coupling_gen, coupling_rng);
  // Checkpoints from before the thread count was stored say nothing about it.
  c10::IValue stored_threads;
  std::string threads_note;
  if (ar.try_read("threads", stored_threads) && stored_threads.isInt() &&
      stored_threads.toInt() != at::get_num_threads())
    threads_note = detail::concat(
        "checkpoint '", path, "' was written with ", stored_threads.toInt(),
        " thread(s), this run has ", at::get_num_threads(),
        ": training continues, but float32 sums over threads are grouped differently, so the "
        "run is not bit-identical to an uninterrupted one (resume with --threads ",
        stored_threads.toInt(), " for that)");
  if (shards.size(0) == s.shards) {
    for (size_t j = 0; j < s.gens.size(); ++j)
      set_generator_state(s.gens[j], shards[s.first_shard + static_cast<int64_t>(j)].clone());
    return threads_note;
  }
  // Another split of the global batch: the weights and optimizer continue, the random
  // streams restart from seeds that depend on the step (not a replay of step 0's draws).
  for (size_t j = 0; j < s.gens.size(); ++j) {
    const int64_t shard = s.first_shard + static_cast<int64_t>(j);
    s.gens[j] =
        make_generator(shard_seed(mix64(s.opt.seed ^ static_cast<uint64_t>(s.step)), shard));
  }
  return detail::concat("checkpoint '", path, "' was written with ", shards.size(0),
                        " shard(s) per step (processes x --accumulate), this run has ", s.shards,
                        ": weights and optimizer continue from step ", s.step,
                        ", the random streams of data, noise and times restart",
                        threads_note.empty() ? "" : "; ", threads_note);
}

std::string Trainer::coupling_report() const { return s_->coupling->report(); }
int64_t Trainer::steps_done() const { return s_->step; }
const FlowSpec& Trainer::spec() const { return s_->spec; }
const path::SchedulePtr& Trainer::schedule() const { return s_->schedule; }
const TrainOptions& Trainer::options() const { return s_->opt; }
nn::VelocityField Trainer::model() const { return s_->model; }
nn::VelocityField Trainer::ema_model() const { return s_->ema ? s_->ema : s_->model; }
nn::VelocityField Trainer::ema_velocity() const { return s_->spec.velocity_field(ema_model()); }

}  // namespace cnf::train
