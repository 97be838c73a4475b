// cnf — the command line. Thin: parses flags and config files, builds options, calls the
// library, prints results to stdout and progress to stderr (DESIGN.md §5).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <numeric>
#include <cstdio>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "apps/cnf/flow_source.h"
#include "apps/cnf/images.h"
#include "cnf/data/images.h"
#include "cnf/density/image_density.h"
#include "apps/cnf/interrupt.h"
#include "apps/cnf/launch.h"
#include "cnf/dist/dist.h"
#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/io/config.h"
#include "cnf/io/files.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/metrics/distances.h"
#include "cnf/nn/hollow.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"
#include "cnf/version.h"

using namespace cnf;
using json = nlohmann::json;
using namespace cnf::app;

namespace {

// ------------------------------------------------------------------ data parallel

// --nproc local workers, or one rank of a group on several hosts (flags, else the
// RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT environment).
struct DistArgs {
  int nproc = 1;
  int rank = -1, world_size = 0, master_port = 0;
  std::string master_addr;
  double dist_timeout = 60.0;
};

void add_dist(CLI::App* sub, DistArgs& d) {
  sub->add_option("--nproc", d.nproc,
                  "Data-parallel worker processes on this host (Gloo on 127.0.0.1)")
      ->capture_default_str();
  sub->add_option("--rank", d.rank, "This process's rank in a group on several hosts "
                                    "(default: $RANK)");
  sub->add_option("--world-size", d.world_size,
                  "Processes in the group (default: $WORLD_SIZE, else 1)");
  sub->add_option("--master-addr", d.master_addr,
                  "Host of rank 0, which serves the TCP store (default: $MASTER_ADDR, else "
                  "127.0.0.1)");
  sub->add_option("--master-port", d.master_port,
                  "Port of rank 0's TCP store (default: $MASTER_PORT, else 29500)");
  sub->add_option("--dist-timeout", d.dist_timeout,
                  "Seconds a rank waits for the others (store connection and every "
                  "collective) before it stops with an error")
      ->capture_default_str();
}

void check_dist(const DistArgs& d) {
  CNF_CHECK(d.nproc >= 1, "--nproc must be >= 1, got ", d.nproc);
  CNF_CHECK(launched_worker() || d.nproc == 1 || (d.rank < 0 && d.world_size == 0),
            "--nproc starts the ranks itself; drop --rank/--world-size (those join a group "
            "started on several hosts)");
}

// True when this invocation should start `nproc` local workers instead of working.
bool wants_launch(const DistArgs& d) {
  if (launched_worker() || d.nproc == 1) return false;
  check_dist(d);
  return true;
}

// The group this run joins, or none (one process).
std::shared_ptr<dist::Group> join_group(const DistArgs& d) {
  dist::GroupOptions go;
  const bool from_env = dist::options_from_env(go);
  if (d.rank >= 0) go.rank = d.rank;
  if (d.world_size > 0) go.world_size = d.world_size;
  if (!d.master_addr.empty()) go.master_addr = d.master_addr;
  if (d.master_port > 0) go.master_port = d.master_port;
  go.timeout_seconds = d.dist_timeout;
  check_dist(d);
  if (!from_env && d.rank < 0 && d.world_size == 0) return nullptr;
  go.validate();
  if (go.world_size == 1) return nullptr;
  return std::make_shared<dist::Group>(go);
}

// --------------------------------------------------------------------- train / demo

struct TrainArgs {
  Common common;
  train::FlowSpec spec;
  train::TrainOptions opt;
  EvalArgs eval;
  int64_t dim = 2;
  std::string out = "out/train";
  std::string resume;
  std::string init, init_time = "data-at-0";  // --init torchscript:FILE (fine-tuning)
  int64_t checkpoint_every = 0;
  std::string mle_divergence = "hutchinson";
  bool quiet = false;
  DistArgs dist;  // train only
};

void add_train(CLI::App* sub, TrainArgs& a) {
  add_common(sub, a.common);
  auto& s = a.spec;
  auto& o = a.opt;
  sub->add_option("--data", s.data,
                  "Data rho_0: a toy set (8gaussians, moons, circles, checkerboard, pinwheel, "
                  "2spirals, swissroll, rings), normal, gmm:K, or a .npy/.csv file")
      ->capture_default_str();
  sub->add_option("--prior", s.prior, "Prior rho_1: normal (N(0, I)) or any data spec (bridge)")
      ->capture_default_str();
  sub->add_option("--dim", a.dim, "Dimension for normal and gmm:K data")->capture_default_str();
  sub->add_option("--schedule", s.schedule, "Affine path: " + path::schedules().joined_names())
      ->capture_default_str();
  sub->add_option("--objective", s.objective,
                  "Training objective: fm (flow matching), score (denoising score matching) or "
                  "mle (maximum likelihood through the ODE)")
      ->capture_default_str();
  sub->add_option("--param", s.param,
                  "What the network predicts: velocity, score, data or noise (default: velocity "
                  "for fm, noise for score)");
  sub->add_option("--weighting", s.weighting,
                  "Score-matching weighting: sigma2 (noise prediction), likelihood (g^2) or "
                  "uniform")
      ->capture_default_str();
  auto& m = o.mle;
  sub->add_option("--mle-divergence", a.mle_divergence,
                  "mle: divergence in training, hutchinson or exact")
      ->capture_default_str();
  sub->add_option("--mle-probes", m.divergence.probes, "mle: Hutchinson probes per solve")
      ->capture_default_str();
  sub->add_flag("--adjoint", m.adjoint, "mle: gradients by the adjoint method (else backprop)");
  sub->add_option("--mle-method", m.solve.method, "mle: ODE method of the training solve")
      ->capture_default_str();
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
  sub->add_option("--sigma-min", s.sigma_min, "sigma_min of the condot path")
      ->capture_default_str();
  sub->add_option("--arch", s.model.arch, "Velocity network: mlp; hollow (exact divergence for the cost of one forward pass); unet for image data")
      ->capture_default_str();
  sub->add_option("--width", s.model.width, "Hidden units per layer (unet: base channels)")
      ->capture_default_str();
  sub->add_option("--channel-mult", s.model.channel_mult,
                  "unet: channel multipliers, one per resolution level")
      ->capture_default_str();
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
                  "tanh, relu, silu, selu, gelu or softplus")
      ->capture_default_str();
  sub->add_option("--time-embedding", s.model.time_embedding, "concat or fourier")
      ->capture_default_str();
  sub->add_option("--fourier-features", s.model.fourier_features,
                  "Frequencies of the fourier time embedding")
      ->capture_default_str();
  sub->add_option("--blocks", s.model.blocks,
                  "Stacked networks, block k owning t in [k/K, (k+1)/K) (FFJORD's CNF blocks)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--steps", o.steps, "Optimization steps")->capture_default_str();
  sub->add_option("--batch-size", o.batch_size, "Minibatch size")->capture_default_str();
  sub->add_option("--optimizer", o.optimizer, "adam or adamw")->capture_default_str();
  sub->add_option("--lr", o.lr, "Learning rate")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "Weight decay")->capture_default_str();
  sub->add_option("--lr-schedule", o.lr_schedule, "constant, cosine or linear")
      ->capture_default_str();
  sub->add_option("--warmup-steps", o.warmup_steps, "Linear LR warm-up steps")
      ->capture_default_str();
  sub->add_option("--grad-clip", o.grad_clip, "Max global gradient norm (0: off)")
      ->capture_default_str();
  sub->add_option("--ema-decay", o.ema_decay, "EMA decay of the sampling weights (0: off)")
      ->capture_default_str();
  sub->add_option("--coupling", o.coupling,
                  "Pairing of data and noise: independent, exact (minibatch OT, OT-CFM), "
                  "sinkhorn (entropic plan), sb (Schrodinger bridge: entropic plan at "
                  "epsilon = 2 sigma^2 and Brownian-bridge path)")
      ->capture_default_str();
  sub->add_option("--coupling-eps", o.coupling_eps,
                  "Entropic epsilon of --coupling sinkhorn (units of squared distance)")
      ->capture_default_str();
  sub->add_option("--bridge-sigma", o.bridge_sigma, "Brownian-bridge sigma of --coupling sb")
      ->capture_default_str();
  sub->add_option("--out", a.out, "Output folder (checkpoint, config, samples, plots, metrics)")
      ->capture_default_str();
  sub->add_option("--resume", a.resume, "Resume from this checkpoint (exact continuation)");
  sub->add_option("--init", a.init,
                  "Fine-tune a PyTorch-trained network instead of a new one: torchscript:FILE "
                  "(forward(x, t); --param says what it predicts, --schedule its path)");
  sub->add_option("--init-time", a.init_time,
                  "--init: the module's time convention, data-at-0 or data-at-1")
      ->capture_default_str();
  sub->parse_complete_callback([&a] { check_init_module(a.init, a.init_time); });
  sub->add_option("--checkpoint-every", a.checkpoint_every,
                  "Also write the checkpoint every N steps (0: only at the end)")
      ->capture_default_str();
  add_eval(sub, a.eval, "Samples for the final evaluation (W2 against as many held-out points)",
           "eval-");
  add_sampler_options(sub, a.eval.sampler, "eval-");
  sub->add_flag("--quiet", a.quiet, "No progress output");
  sub->add_option("--accumulate", o.accumulate,
                  "Micro-batches of --batch-size per step (gradient accumulation); with N "
                  "processes the global batch is N x accumulate x batch-size")
      ->capture_default_str();
  sub->add_option("--coupling-scope", o.coupling_scope,
                  "rank: each micro-batch is coupled on its own; global: one plan for the "
                  "whole global batch, gathered to every rank (each solves the (N B)^2 plan)")
      ->capture_default_str();
  add_dist(sub, a.dist);
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
  const int world = group ? group->world_size() : 1;
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
  int64_t saved_step = trainer.steps_done();
  const int64_t first_step = saved_step;
  trainer.set_stop_check([] { return StopSignals::stop_signal() != 0; });
  const double collective_before = trainer.collective_seconds();

  io::Progress progress(opt.steps, demo ? "demo: training" : "train", !a.quiet && rank0);
  double last_loss = 0;
  std::vector<double> nfe_steps, nfe_values;  // mle: the NFE of each step's solve
  auto t0 = std::chrono::steady_clock::now();
  // Only the training loop turns SIGINT/SIGTERM into "save and stop"; later they kill.
  auto stop_signals = std::make_unique<StopSignals>();
  bool save_failed = false;
  try {
    trainer.run([&](int64_t step, const objective::LossResult& r) {
      auto nfe = r.diagnostics.find("nfe");
      if (nfe != r.diagnostics.end()) {
        nfe_steps.push_back(static_cast<double>(step));
        nfe_values.push_back(nfe->second.item<double>());
      }
      if (step % 50 == 0 || step == opt.steps) {
        last_loss = r.loss.item<double>();
        char buf[64];
        if (nfe_values.empty())
          std::snprintf(buf, sizeof buf, "loss %.4f", last_loss);
        else
          std::snprintf(buf, sizeof buf, "loss %.4f NFE %.0f", last_loss, nfe_values.back());
        progress.update(step, buf);
      }
      if (a.checkpoint_every > 0 && step % a.checkpoint_every == 0) {
        try {
          trainer.save(ckpt, config);
        } catch (const Error& e) {
          save_failed = true;
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
    // With a group, saving is a collective that a dead or diverged peer cannot join: the
    // last checkpoint (written atomically by rank 0) is the last good state.
    if (group)
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
  const double train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double collective_seconds = trainer.collective_seconds() - collective_before;
  progress.finish();
  trainer.save(ckpt, config);
  stop_signals.reset();
  // Data-parallel ranks apply the same averaged gradients, so their weights must agree bit
  // for bit; anything else is a bug worth stopping for.
  const double param_diff = trainer.param_max_diff();
  CNF_CHECK(param_diff == 0.0, "the ranks' weights diverged (largest difference ", param_diff,
            " after step ", trainer.steps_done(), "); the checkpoint holds rank 0's weights");
  if (group && trainer.stop_requested()) {
    if (rank0)
      std::fprintf(stderr,
                   "cnf: a stop signal reached a rank: all %d ranks stopped after step %lld of "
                   "%lld; the checkpoint is saved in %s. Continue with the same options and "
                   "--resume %s\n",
                   world, static_cast<long long>(trainer.steps_done()),
                   static_cast<long long>(opt.steps), ckpt.c_str(), ckpt.c_str());
    const int sig = StopSignals::stop_signal();
    return 128 + (sig != 0 ? sig : SIGTERM);
  }
  if (const int sig = StopSignals::stop_signal()) {
    std::fprintf(stderr,
                 "cnf: %s received: stopped after step %lld of %lld; the checkpoint is saved in "
                 "%s. Continue with the same options and --resume %s\n",
                 signal_name(sig), static_cast<long long>(trainer.steps_done()),
                 static_cast<long long>(opt.steps), ckpt.c_str(), ckpt.c_str());
    return 128 + sig;
  }

  // Evaluate the EMA weights (or the weights) by sampling the ODE from t = 1 to 0.
  auto model = trainer.ema_model();
  model->eval();
  auto schedule = a.spec.make_schedule();
  auto h = halves(split.holdout);
  const int64_t n_traj = std::min<int64_t>(h.a.size(0), 300);
  std::vector<torch::Tensor> traj;
  auto observer = [&](double, const ode::State& y) {
    traj.push_back(y[0].slice(0, 0, n_traj).to(torch::kCPU));
  };
  Evaluation ev;
  std::vector<int64_t> rank_nfe;
  if (!group) {
    ev = evaluate(*model, trainer.spec().network_param(), *schedule, *prior, h, a.eval,
                  a.common.seed, device, observer);
  } else {
    // Each rank transports its share of the noise (its own generator; adaptive solvers
    // choose their steps per rank), rank 0 gathers the samples and scores them.
    const int64_t n = h.a.size(0), per = (n + world - 1) / world;
    auto gen = make_generator(a.common.seed + 1 + 1000003ull * static_cast<uint64_t>(group->rank()));
    auto x_1 = prior->sample(per, gen).to(device);
    auto so = a.eval.sampler_options();
    if (rank0) so.ode.observer = observer;
    auto s0 = std::chrono::steady_clock::now();
    auto r = draw_samples(*model, trainer.spec().network_param(), *schedule, x_1, so, gen);
    auto all = group->all_gather(r.x.to(torch::kCPU).contiguous()).flatten(0, 1).slice(0, 0, n);
    auto nfe = group->all_gather(torch::tensor({r.nfe}, torch::kLong));
    ev.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
    if (!rank0) return 0;  // rank 0 writes every output
    for (int64_t k = 0; k < world; ++k) rank_nfe.push_back(nfe[k][0].item<int64_t>());
    ev.nfe = *std::max_element(rank_nfe.begin(), rank_nfe.end());
    ev.samples = all;
    check_finite(ev.samples, "generated samples");
    ev.w2 = metrics::w2(ev.samples, h.a);
    ev.w2_floor = metrics::w2(h.b, h.a);
    ev.mmd2 = metrics::mmd2(ev.samples, h.a);
  }
  io::write_npy(a.out + "/samples.npy", ev.samples);
  const bool images = data::is_image_spec(a.spec.data);
  if (images) write_sample_grid(a.out + "/samples.png", a.spec.data, ev.samples);
  if (ev.samples.size(1) >= 2 && !images) {
    auto proj = [](const torch::Tensor& x) { return x.slice(1, 0, 2); };
    io::PlotOptions po;
    po.width = 500;
    po.height = 500;
    io::panels_png(a.out + "/samples.png",
                   {{{proj(h.a), {31, 119, 180}, "held-out data"}},
                    {{proj(ev.samples), {214, 39, 40}, "samples"}}},
                   {"held-out data", "samples (" + a.eval.label() + ", " +
                                         std::to_string(ev.nfe) + " NFE)"},
                   po);
    po.title = "trajectories t=1 (noise) to t=0 (data)";
    // Only the ODE samplers report their steps to the observer.
    if (!traj.empty())
      io::trajectories_png(a.out + "/trajectories.png", torch::stack(traj).slice(2, 0, 2), po);
    // 2-D histogram of the samples as a density heat map.
    const int bins = 100;
    auto xy = proj(ev.samples).to(torch::kFloat64);
    const double lo = -5, hi = 5;
    auto idx = ((xy - lo) / (hi - lo) * bins).floor().to(torch::kLong).clamp(0, bins - 1);
    auto flat = (bins - 1 - idx.select(1, 1)) * bins + idx.select(1, 0);
    auto hist = torch::bincount(flat, {}, bins * bins).to(torch::kFloat64).reshape({bins, bins});
    po.title = "sample density (histogram)";
    io::heatmap_png(a.out + "/density.png", hist, {lo, hi, lo, hi}, po);
  }

  if (!nfe_values.empty()) {
    auto steps_t = torch::tensor(nfe_steps, torch::kFloat64);
    auto nfe_t = torch::tensor(nfe_values, torch::kFloat64);
    io::PlotOptions po;
    po.title = "NFE of the training solve per step";
    po.point_radius = 1;
    po.alpha = 0.8;
    io::scatter_png(a.out + "/nfe.png", {{torch::stack({steps_t, nfe_t}, 1), {31, 119, 180}, "NFE"}},
                    po);
  }
  json j = {{"w2", ev.w2},
            {"w2_floor", ev.w2_floor},
            {"mmd2", ev.mmd2},
            {"nfe", ev.nfe},
            {"method", a.eval.label()},
            {"n_eval", ev.samples.size(0)},
            {"train_seconds", train_seconds},
            {"train_steps", trainer.steps_done()},
            {"steps_per_second", opt.steps / std::max(train_seconds, 1e-9)},
            {"sample_seconds", ev.seconds},
            {"final_loss", last_loss},
            {"data", a.spec.data},
            {"prior", a.spec.prior},
            {"schedule", a.spec.schedule},
            {"objective", trainer.spec().objective},
            {"param", trainer.spec().param},
            {"threads", a.common.threads},
            {"world_size", world},
            {"shards", trainer.shards()},
            {"global_batch", trainer.shards() * opt.batch_size},
            {"samples_per_second",
             static_cast<double>(trainer.shards() * opt.batch_size) *
                 static_cast<double>(trainer.steps_done() - first_step) /
                 std::max(train_seconds, 1e-9)},
            {"allreduce_seconds", collective_seconds},
            {"allreduce_share", collective_seconds / std::max(train_seconds, 1e-9)},
            {"rank_param_max_diff", param_diff}};
  if (!rank_nfe.empty()) j["nfe_per_rank"] = rank_nfe;
  if (!nfe_values.empty()) {
    j["train_nfe_last"] = nfe_values.back();
    j["train_nfe_mean"] =
        std::accumulate(nfe_values.begin(), nfe_values.end(), 0.0) / nfe_values.size();
  }
  io::write_text_atomic(a.out + "/metrics.json", j.dump(2) + "\n");
  write_json(a.common.json, j);

  std::printf("%s %s -> %s, %s path, %lld steps in %.1f s (%.0f steps/s, %d thread%s)\n",
              demo ? "demo:" : "trained", a.spec.prior.c_str(), a.spec.data.c_str(),
              a.spec.schedule.c_str(), static_cast<long long>(trainer.steps_done()),
              train_seconds, opt.steps / std::max(train_seconds, 1e-9), a.common.threads,
              a.common.threads == 1 ? "" : "s");
  std::printf("W2(samples, held-out) = %.4f   floor W2(held-out, held-out) = %.4f   "
              "MMD^2 = %.2e   NFE = %lld (%s)\n",
              ev.w2, ev.w2_floor, ev.mmd2, static_cast<long long>(ev.nfe), a.eval.label().c_str());
  std::printf("wrote %s/{model.pt, config.toml, samples.npy, metrics.json%s}\n", a.out.c_str(),
              images                    ? ", samples.png (image grid)"
              : ev.samples.size(1) >= 2 ? ", samples.png, trajectories.png, density.png"
                                        : "");
  return 0;
}

struct DensityArgs {
  // Both exact. With the fused fast path the analytic route is the faster one (10,000 2-D
  // points, dopri5 1e-5: 0.46 s vs 1.25 s by autograd); networks other than the MLP fall
  // back to autograd.
  std::string divergence = "analytic";
  int64_t probes = 1;
  bool gaussian_probes = false;
};

void add_density(CLI::App* sub, DensityArgs& d) {
  sub->add_option("--divergence", d.divergence,
                  "exact (autograd), analytic (mlp: Jacobian through the layers) or hutchinson")
      ->capture_default_str();
  sub->add_option("--probes", d.probes, "Hutchinson probes, fixed through each solve")
      ->capture_default_str();
  sub->add_flag("--gaussian-probes", d.gaussian_probes, "Gaussian instead of Rademacher probes");
}

density::LikelihoodOptions likelihood_options(const EvalArgs& e, const DensityArgs& d,
                                              const nn::VelocityFieldImpl& model) {
  density::LikelihoodOptions o;
  o.solve = e.solve_options();
  o.divergence.method = density::parse_divergence(d.divergence);
  // The analytic route exists for the MLP and the hollow network; others fall back to
  // autograd.
  if (o.divergence.method == density::Divergence::analytic &&
      dynamic_cast<const nn::MLPVelocityImpl*>(&model) == nullptr &&
      dynamic_cast<const nn::HollowVelocityImpl*>(&model) == nullptr)
    o.divergence.method = density::Divergence::exact;
  o.divergence.probes = d.probes;
  o.divergence.gaussian = d.gaussian_probes;
  return o;
}

// ------------------------------------------------------------------ sample / eval

struct SampleArgs {
  Common common;
  EvalArgs eval;
  FlowSource source;
  std::string out, noise;
  bool with_logp = false;
  std::string divergence = "exact";
  std::string label, grid;
  double guidance = 0.0;
};

int run_sample(const SampleArgs& a) {
  auto device = setup(a.common);
  CNF_CHECK(a.out.size() > 4 && a.out.substr(a.out.size() - 4) == ".npy",
            "--out must name a .npy file, got '", a.out, "'");
  auto c = load_flow(a.source, device);
  auto prior = data::make_source(c.spec.prior, c.spec.model.dim);
  auto gen = make_generator(a.common.seed);
  torch::Tensor x_1;
  if (a.noise.empty()) {
    x_1 = prior->sample(a.eval.n, gen).to(device);
  } else {
    // Given prior draws (e.g. to compare with another tool from the same noise).
    x_1 = io::read_table(a.noise).to(torch::kFloat32);
    CNF_CHECK(x_1.size(1) == c.spec.model.dim, "--noise '", a.noise, "' has ", x_1.size(1),
              " columns but the model has dimension ", c.spec.model.dim);
    x_1 = x_1.to(device);
  }
  const int64_t n = x_1.size(0);
  CNF_CHECK(!a.with_logp || a.eval.sampler.sampler == "ode", "--with-logp integrates the ODE ",
            "and cannot follow --sampler ", a.eval.sampler.sampler, "; drop one of the two");
  auto labels = sample_labels(a.label, n, c.spec.model.classes);
  CNF_CHECK(!a.with_logp || !labels.defined(), "--with-logp gives the unconditional density; ",
            "drop --label");
  const bool images = data::is_image_spec(c.spec.data);
  CNF_CHECK(a.grid.empty() || images, "--grid needs an image model; '", a.source.name(), "' models '",
            c.spec.data, "'");
  auto t0 = std::chrono::steady_clock::now();
  ode::Solution sol;
  torch::Tensor logp;
  if (a.with_logp) {
    // log rho_0 of each sample from its own trajectory (instantaneous change of variables).
    DensityArgs d;
    d.divergence = a.divergence;
    auto r = density::sample_with_log_prob(*c.model, *c.spec.make_schedule(), *prior, x_1,
                                           likelihood_options(a.eval, d, *c.model), gen);
    sol.y = ode::State{r.x};
    sol.nfe = r.nfe;
    logp = r.log_prob.to(torch::kCPU);
  } else {
    auto net = with_labels(c.network, labels.defined() ? labels.to(device) : labels, a.guidance);
    auto r = draw_samples(*net, c.spec.network_param(), *c.spec.make_schedule(), x_1,
                          a.eval.sampler_options(), gen);
    sol.y = ode::State{r.x};
    sol.nfe = r.nfe;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto x = sol.y[0].to(torch::kCPU);
  check_finite(x, "generated samples");
  if (logp.defined()) {
    const std::string logp_path = a.out.substr(0, a.out.size() - 4) + "_logp.npy";
    io::write_npy(logp_path, logp);
    std::printf("wrote log rho_0 of each sample to %s\n", logp_path.c_str());
  }
  io::write_npy(a.out, x);
  if (images) {
    // Image models also get a grid of (the first 100) samples as a PNG.
    const std::string grid = a.grid.empty() ? a.out.substr(0, a.out.size() - 4) + ".png" : a.grid;
    write_sample_grid(grid, c.spec.data, x, 100,
                      labels.defined() && a.label == "all" ? c.spec.model.classes : 10);
    std::printf("wrote a grid of the samples to %s\n", grid.c_str());
  }
  std::printf("wrote %lld samples to %s (%s, NFE %lld, %.3f s)\n",
              static_cast<long long>(n), a.out.c_str(), a.eval.label().c_str(),
              static_cast<long long>(sol.nfe), secs);
  write_json(a.common.json, {{"n", n}, {"nfe", sol.nfe}, {"method", a.eval.label()},
                             {"seconds", secs}, {"out", a.out}});
  return 0;
}

struct EvalCmdArgs {
  Common common;
  EvalArgs eval;
  FlowSource source;
  std::string data;
  int64_t dim = 0;
};

int run_eval(const EvalCmdArgs& a) {
  auto device = setup(a.common);
  auto c = load_flow(a.source, device);
  const std::string spec = a.data.empty() ? c.spec.data : a.data;
  auto prior = data::make_source(c.spec.prior, c.spec.model.dim);
  auto ev = evaluate(*c.network, c.spec.network_param(), *c.spec.make_schedule(), *prior,
                     checkpoint_holdout(c, a.source.name(), spec, a.dim, a.eval.n, a.common.seed), a.eval,
                     a.common.seed, device);
  std::printf("W2 = %.4f  W2 floor = %.4f  MMD^2 = %.3e  NFE = %lld  (n = %lld, %s)\n", ev.w2,
              ev.w2_floor, ev.mmd2, static_cast<long long>(ev.nfe),
              static_cast<long long>(ev.samples.size(0)), a.eval.label().c_str());
  write_json(a.common.json, {{"w2", ev.w2},
                             {"w2_floor", ev.w2_floor},
                             {"mmd2", ev.mmd2},
                             {"nfe", ev.nfe},
                             {"n", ev.samples.size(0)},
                             {"method", a.eval.label()},
                             {"data", spec}});
  return 0;
}

// ------------------------------------------------------------- nll / score / logp

struct NllArgs {
  Common common;
  EvalArgs eval;
  DensityArgs density;
  FlowSource source;
  std::string data;
  int64_t dim = 0;
  int64_t bins = 0;
  int64_t dequant_samples = 1;
  DistArgs dist;
};

// Image models: bits/dim of test images with uniform dequantization and the transform's
// log-determinant (density/image_density.h).
int run_image_nll(const NllArgs& a, const train::Checkpoint& c, const std::string& spec,
                  torch::Device device) {
  auto split = data::load_image_spec(spec);
  CNF_CHECK(split.train->dim() == c.spec.model.dim, "images of '", spec, "' have ",
            split.train->dim(), " pixels but the model in '", a.source.name(), "' has ", c.spec.model.dim);
  const int64_t n = std::min(a.eval.n, split.test.levels.size(0));
  auto prior = data::make_source(c.spec.prior, c.spec.model.dim);
  auto o = likelihood_options(a.eval, a.density, *c.model);
  auto gen = make_generator(a.common.seed + 3);
  auto t0 = std::chrono::steady_clock::now();
  auto r = density::image_bits_per_dim(*c.model, *c.spec.make_schedule(), *prior, *split.train,
                                       split.test.levels.slice(0, 0, n), a.dequant_samples, o, gen);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("bits/dim = %.4f +- %.4f (n = %lld test images, %lld uniform dequantization "
              "sample%s each, %s, %s divergence, NFE %lld, %.1f s)\n",
              r.bpd.mean, r.bpd.stderr, static_cast<long long>(n),
              static_cast<long long>(a.dequant_samples), a.dequant_samples == 1 ? "" : "s",
              split.train->transform().name().c_str(), a.density.divergence.c_str(),
              static_cast<long long>(r.nfe), secs);
  write_json(a.common.json, {{"bits_per_dim", r.bpd.mean},
                             {"bits_per_dim_stderr", r.bpd.stderr},
                             {"n", n},
                             {"dequantization_samples", a.dequant_samples},
                             {"transform", split.train->transform().name()},
                             {"divergence", a.density.divergence},
                             {"nfe", r.nfe},
                             {"seconds", secs},
                             {"data", spec}});
  return 0;
}

int run_nll(const NllArgs& a) {
  auto device = setup(a.common);
  auto c = load_flow(a.source, device);
  const std::string spec = a.data.empty() ? c.spec.data : a.data;
  auto group = join_group(a.dist);
  if (data::is_image_spec(spec)) {
    CNF_CHECK(!group, "cnf nll of an image model runs in one process; drop --nproc/--rank");
    return run_image_nll(a, c, spec, device);
  }
  auto x = checkpoint_holdout(c, a.source.name(), spec, a.dim, a.eval.n, a.common.seed).a;
  auto gen = make_generator(a.common.seed + 3);
  if (a.bins > 0) x = density::dequantize(x, a.bins, gen);
  auto prior = data::make_source(c.spec.prior, c.spec.model.dim);
  auto o = likelihood_options(a.eval, a.density, *c.model);
  auto t0 = std::chrono::steady_clock::now();
  density::LikelihoodResult r;
  std::vector<int64_t> rank_nfe;
  if (!group) {
    r = density::log_likelihood(*c.model, *c.spec.make_schedule(), *prior, x.to(device), o, gen);
  } else {
    // Rank k integrates rows [k m, (k + 1) m) with its own solver (adaptive steps chosen
    // per rank) and its own probes; rank 0 gathers the log-densities (padded to m rows).
    const int world = group->world_size(), rank = group->rank();
    const int64_t n = x.size(0), m = (n + world - 1) / world;
    const int64_t lo = std::min(n, rank * m), hi = std::min(n, lo + m);
    CNF_CHECK(hi > lo, "-n ", n, " held-out points leave rank ", rank, " of ", world,
              " without rows; use -n >= ", world);
    auto gen_k = rank == 0 ? gen : make_generator(a.common.seed + 3 + 1000003ull * rank);
    auto mine = density::log_likelihood(*c.model, *c.spec.make_schedule(), *prior,
                                        x.slice(0, lo, hi).to(device), o, gen_k);
    auto pad = [&](const at::Tensor& t) {
      auto out = torch::zeros({m}, torch::kFloat64);
      out.slice(0, 0, hi - lo).copy_(t.to(torch::kCPU, torch::kFloat64).reshape({-1}));
      return out;
    };
    auto all = group->all_gather(pad(mine.log_prob)).reshape({-1}).slice(0, 0, n);
    auto nfe = group->all_gather(torch::tensor({mine.nfe}, torch::kLong));
    if (rank != 0) return 0;
    for (int k = 0; k < world; ++k) rank_nfe.push_back(nfe[k][0].item<int64_t>());
    r.log_prob = all;
    r.nfe = *std::max_element(rank_nfe.begin(), rank_nfe.end());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto nll = density::mean_and_stderr(-r.log_prob.to(torch::kCPU));
  // The route that ran (analytic falls back to autograd for networks other than the MLP).
  const std::string route = o.divergence.method == density::Divergence::analytic ? "analytic"
                            : o.divergence.method == density::Divergence::exact  ? "exact"
                                                                                 : "hutchinson";
  json j = {{"nll", nll.mean},         {"nll_stderr", nll.stderr},
            {"n", x.size(0)},          {"nfe", r.nfe},
            {"divergence", route},     {"method", a.eval.method},
            {"seconds", secs},         {"data", spec}};
  if (!rank_nfe.empty()) j["nfe_per_rank"] = rank_nfe;
  std::printf("NLL = %.4f +- %.4f nats/sample (n = %lld, %s divergence, %s, NFE %lld, %.2f s)\n",
              nll.mean, nll.stderr, static_cast<long long>(x.size(0)),
              route.c_str(), a.eval.method.c_str(), static_cast<long long>(r.nfe), secs);
  if (r.log_prob_probes.defined()) {
    // Spread over probes of the mean NLL: the Hutchinson part of the uncertainty.
    auto per_probe = -r.log_prob_probes.to(torch::kCPU).mean(1);
    auto probe_se = density::mean_and_stderr(per_probe);
    j["probes"] = a.density.probes;
    j["nll_probe_stderr"] = probe_se.stderr;
    std::printf("Hutchinson: %lld probes, standard error over probes %.4f\n",
                static_cast<long long>(a.density.probes), probe_se.stderr);
  }
  if (a.bins > 0) {
    const double bpd = density::bits_per_dim(nll.mean, x.size(1), a.bins);
    j["bits_per_dim"] = bpd;
    j["dequantization_samples"] = 1;
    std::printf("bits/dim = %.4f (%lld levels, 1 uniform dequantization sample per point)\n", bpd,
                static_cast<long long>(a.bins));
  }
  write_json(a.common.json, j);
  return 0;
}

struct ScoreArgs {
  Common common;
  EvalArgs eval;
  DensityArgs density;
  FlowSource source;
  std::string points, out;
  double t = 0.0;
};

int run_score(const ScoreArgs& a) {
  auto device = setup(a.common);
  CNF_CHECK(a.out.size() > 4 && a.out.substr(a.out.size() - 4) == ".npy",
            "--out must name a .npy file, got '", a.out, "'");
  auto c = load_flow(a.source, device);
  auto x = io::read_table(a.points).to(torch::kFloat32);
  CNF_CHECK(x.size(1) == c.spec.model.dim, "points in '", a.points, "' have dimension ",
            x.size(1), " but the model in '", a.source.name(), "' has ", c.spec.model.dim);
  auto prior = data::make_source(c.spec.prior, c.spec.model.dim);
  auto o = likelihood_options(a.eval, a.density, *c.model);
  auto s = density::score(*c.model, *c.spec.make_schedule(), *prior, x.to(device), a.t, o);
  io::write_npy(a.out, s.to(torch::kCPU));
  std::printf("wrote the score grad log rho_t at t = %g of %lld points to %s\n", a.t,
              static_cast<long long>(x.size(0)), a.out.c_str());
  write_json(a.common.json, {{"n", x.size(0)}, {"t", a.t}, {"out", a.out}});
  return 0;
}

// ------------------------------------------------------------------- config files

// Places the config file's entries (as --key=value) before the command line's own
// arguments, so that with TakeLast a flag given on the command line wins.
std::vector<std::string> expand_config(const std::vector<std::string>& args, CLI::App& app) {
  if (args.size() < 2) return args;
  std::string path;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) path = args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) path = args[i].substr(9);
  }
  if (path.empty()) return args;
  CLI::App* sub = nullptr;
  for (auto* s : app.get_subcommands({}))
    if (s->get_name() == args[1]) sub = s;
  CNF_CHECK(sub != nullptr, "--config needs a verb first, e.g. cnf train --config ", path);
  size_t verb_words = 2;  // "cnf train", or "cnf experiment nfe-error"
  if (args.size() > 2)
    for (auto* s : sub->get_subcommands({}))
      if (s->get_name() == args[2]) {
        sub = s;
        verb_words = 3;
      }
  std::vector<std::string> out(args.begin(), args.begin() + static_cast<long>(verb_words));
  for (const auto& e : io::read_config(path)) {
    // An empty string is every option's unset state; "--key=" would swallow the next word.
    if (e.key == "config" || e.value.empty()) continue;
    if (sub->get_option_no_throw("--" + e.key) == nullptr) {
      std::string valid;
      for (const auto* o : sub->get_options())
        if (!o->get_lnames().empty() && o->get_lnames()[0] != "help")
          valid += (valid.empty() ? "" : ", ") + o->get_lnames()[0];
      fail("config file '", path, "' line ", e.line, ": '", e.key, "' is not an option of cnf ",
           args[1], "; valid keys: ", valid);
    }
    out.push_back("--" + e.key + "=" + e.value);
  }
  out.insert(out.end(), args.begin() + static_cast<long>(verb_words), args.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cnf: continuous normalizing flows and flow matching.\n"
      "Time runs from data (t = 0) to noise (t = 1); sampling integrates dx/dt = v_t(x) "
      "from 1 to 0."};
  app.set_version_flag("--version", "cnf " CNF_VERSION);
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  TrainArgs train_args;
  auto* train_cmd = app.add_subcommand(
      "train", "Train a velocity field by flow matching (or a diffusion model by score matching)");
  add_train(train_cmd, train_args);

  TrainArgs demo_args;
  demo_args.out = "out/demo";
  demo_args.spec.data = "moons";
  demo_args.opt.steps = 20000;
  demo_args.opt.lr = 2e-3;
  demo_args.opt.lr_schedule = "cosine";
  demo_args.opt.ema_decay = 0.999;
  demo_args.eval.n = 1000;
  auto* demo_cmd = app.add_subcommand(
      "demo", "The main job: flow matching on the OT path on a 2-D toy set, then samples, "
              "plots and W2 to held-out data");
  add_train(demo_cmd, demo_args);

  SampleArgs sample_args;
  auto* sample_cmd = app.add_subcommand("sample", "Draw samples from a trained flow");
  add_common(sample_cmd, sample_args.common);
  add_flow_source(sample_cmd, sample_args.source);
  sample_cmd->add_option("--noise", sample_args.noise,
                         "Start from these prior draws x_1 (.npy or .csv, [N, dim]; unit scale) "
                         "instead of -n fresh ones");
  sample_cmd->add_option("--out", sample_args.out, "Output .npy file")->required();
  add_eval(sample_cmd, sample_args.eval, "Number of samples", "");
  add_sampler_options(sample_cmd, sample_args.eval.sampler, "");
  sample_cmd->add_flag("--with-logp", sample_args.with_logp,
                       "Also write log rho_0 of each sample (OUT_logp.npy), same trajectory");
  sample_cmd->add_option("--divergence", sample_args.divergence,
                         "Divergence for --with-logp: exact, analytic or hutchinson")
      ->capture_default_str();
  sample_cmd->add_option("--label", sample_args.label,
                         "Class-conditional models: a class number, or 'all' (cycles through the "
                         "classes); default: unconditional");
  sample_cmd->add_option("--guidance", sample_args.guidance,
                         "Classifier-free guidance weight w: (1 + w) v(x|c) - w v(x) (0: plain "
                         "conditional)")
      ->capture_default_str();
  sample_cmd->add_option("--grid", sample_args.grid,
                         "Image models: PNG grid of the samples (default: OUT with .png)");

  NllArgs nll_args;
  nll_args.eval.method = "dopri5";
  auto* nll_cmd = app.add_subcommand(
      "nll", "Exact negative log-likelihood of held-out data (instantaneous change of variables)");
  add_common(nll_cmd, nll_args.common);
  add_flow_source(nll_cmd, nll_args.source);
  nll_cmd->add_option("--data", nll_args.data, "Data spec (default: the model's held-out data)");
  nll_cmd->add_option("--dim", nll_args.dim, "Dimension for normal/gmm data (default: model's)");
  nll_cmd->add_option("--bins", nll_args.bins,
                      "Data are integer levels 0..bins-1: dequantize uniformly, report bits/dim")
      ->capture_default_str();
  nll_cmd->add_option("--dequant-samples", nll_args.dequant_samples,
                      "Image models: uniform dequantization draws per test image")
      ->capture_default_str();
  add_eval(nll_cmd, nll_args.eval, "Held-out points (image models: test images)", "");
  add_density(nll_cmd, nll_args.density);
  add_dist(nll_cmd, nll_args.dist);

  ScoreArgs score_args;
  score_args.eval.method = "dopri5";
  auto* score_cmd = app.add_subcommand(
      "score", "The score grad log rho_t at given points (instantaneous change of score)");
  add_common(score_cmd, score_args.common);
  add_flow_source(score_cmd, score_args.source);
  score_cmd->add_option("--points", score_args.points, "Points (.npy or .csv, [N, dim])")
      ->required();
  score_cmd->add_option("--t", score_args.t, "Time in [0, 1)")->capture_default_str();
  score_cmd->add_option("--out", score_args.out, "Output .npy file")->required();
  add_eval(score_cmd, score_args.eval, "unused", "");
  add_density(score_cmd, score_args.density);

  EvalCmdArgs eval_args;
  auto* eval_cmd = app.add_subcommand("eval", "W2 and MMD of a trained flow against held-out data");
  add_common(eval_cmd, eval_args.common);
  add_flow_source(eval_cmd, eval_args.source);
  eval_cmd->add_option("--data", eval_args.data, "Held-out data spec (default: the model's)");
  eval_cmd->add_option("--dim", eval_args.dim, "Dimension for normal/gmm data (default: model's)");
  add_eval(eval_cmd, eval_args.eval, "Samples (W2 against as many held-out points)", "");
  add_sampler_options(eval_cmd, eval_args.eval.sampler, "");

  auto* experiment_cmd =
      app.add_subcommand("experiment", "Reproducible studies comparing the methods");
  experiment_cmd->require_subcommand(1);
  auto run_experiment = cnf::app::add_experiments(experiment_cmd);
  auto run_rectify = cnf::app::add_rectify_commands(app, experiment_cmd);
  auto run_mle_study = cnf::app::add_mle_experiment(experiment_cmd);
  auto run_couplings_study = cnf::app::add_couplings_experiment(experiment_cmd);
  auto run_images_study = cnf::app::add_images_experiment(experiment_cmd);

  auto run_ot = cnf::app::add_ot_command(app);
  auto run_export = cnf::app::add_export_command(app);
  // The flow-source flags are checked as soon as they are parsed (before any work).
  for (auto [cmd, source] : {std::pair{sample_cmd, &sample_args.source},
                             std::pair{eval_cmd, &eval_args.source},
                             std::pair{nll_cmd, &nll_args.source},
                             std::pair{score_cmd, &score_args.source}})
    cmd->parse_complete_callback([source = source] { check_flow_source(*source); });

  try {
    std::vector<std::string> args(argv, argv + argc);
    args = expand_config(args, app);
    std::vector<const char*> cargs;
    for (const auto& s : args) cargs.push_back(s.c_str());
    try {
      app.parse(static_cast<int>(cargs.size()), cargs.data());
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (train_cmd->parsed() && wants_launch(train_args.dist))
      return launch_local(train_args.dist.nproc, argv, train_args.dist.dist_timeout + 10.0);
    if (nll_cmd->parsed() && wants_launch(nll_args.dist))
      return launch_local(nll_args.dist.nproc, argv, nll_args.dist.dist_timeout + 10.0);
    if (train_cmd->parsed()) return run_train(train_args, train_cmd, false);
    if (demo_cmd->parsed()) return run_train(demo_args, demo_cmd, true);
    if (sample_cmd->parsed()) return run_sample(sample_args);
    if (eval_cmd->parsed()) return run_eval(eval_args);
    if (nll_cmd->parsed()) return run_nll(nll_args);
    if (score_cmd->parsed()) return run_score(score_args);
    if (const int rc = run_rectify(); rc >= 0) return rc;
    if (const int rc = run_mle_study(); rc >= 0) return rc;
    if (const int rc = run_couplings_study(); rc >= 0) return rc;
    if (const int rc = run_images_study(); rc >= 0) return rc;
    if (experiment_cmd->parsed()) return run_experiment();
    if (int code = run_ot(); code >= 0) return code;
    if (int code = run_export(); code >= 0) return code;
  } catch (const Error& e) {
    std::fprintf(stderr, "cnf: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "cnf: error inside LibTorch: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnf: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
