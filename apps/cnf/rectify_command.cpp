// cnf reflow / cnf distill / cnf experiment reflow — rectified flow (Liu, Gong & Liu,
// ICLR 2023): retrain a flow on the pairs it produces, distil it into an N-step
// generator, and measure how straight each flow is.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "apps/cnf/flow_source.h"
#include "cnf/interop/torchscript.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/rectify/rectify.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

namespace {

// ------------------------------------------------------------------------- lineage
//
// Which flow produced a checkpoint is recorded as a comment line in its stored config
// (TOML readers skip it): "# cnf-lineage: round=K kind=reflow|distill steps=N parent=P".

struct Lineage {
  int64_t round = 1;  ///< 1: trained by flow matching on independent pairs
  std::string kind = "flow-matching", parent;
  int64_t generator_steps = 0;  ///< distilled N-step generator; 0: a flow
};

Lineage read_lineage(const std::string& config) {
  Lineage l;
  std::istringstream in(config);
  std::string line;
  const std::string tag = "# cnf-lineage:";
  while (std::getline(in, line)) {
    if (line.rfind(tag, 0) != 0) continue;
    std::istringstream fields(line.substr(tag.size()));
    std::string kv;
    while (fields >> kv) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) continue;
      auto key = kv.substr(0, eq), value = kv.substr(eq + 1);
      if (key == "round") l.round = std::stoll(value);
      if (key == "kind") l.kind = value;
      if (key == "steps") l.generator_steps = std::stoll(value);
      if (key == "parent") l.parent = value;
    }
  }
  return l;
}

std::string lineage_line(const Lineage& l) {
  return "# cnf-lineage: round=" + std::to_string(l.round) + " kind=" + l.kind +
         " steps=" + std::to_string(l.generator_steps) + " parent=" + l.parent + "\n";
}

// -------------------------------------------------------------- shared measurements

json straightness_json(const rectify::Straightness& s) {
  return {{"straightness", s.straightness},
          {"straightness_stderr", s.straightness_stderr},
          {"transport_cost", s.transport_cost},
          {"transport_cost_stderr", s.transport_cost_stderr},
          {"path_energy", s.path_energy},
          {"normalized_energy", s.normalized_energy},
          {"adaptive_nfe", s.nfe}};
}

double w2_with(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
               const data::Source& prior, const Holdout& h, const std::string& method,
               int64_t steps, uint64_t seed, torch::Device device) {
  EvalArgs e;
  e.n = h.a.size(0);
  e.method = method;
  e.steps = steps;
  return evaluate(model, path::Param::velocity, schedule, prior, h, e, seed, device).w2;
}

// One model's report: straightness and W2 of one-step Euler and of dopri5 to held-out data.
json report(nn::VelocityFieldImpl& model, const path::Schedule& schedule, const data::Source& prior,
            const Holdout& h, int64_t euler_steps, uint64_t seed, torch::Device device) {
  auto gen = stream_generator(seed, Stream::rectify_report);
  auto x_1 = prior.sample(h.a.size(0), gen).to(device);
  auto s = rectify::straightness(model, schedule, x_1);
  json j = straightness_json(s);
  j["w2_euler"] = w2_with(model, schedule, prior, h, "euler", euler_steps, seed, device);
  j["euler_steps"] = euler_steps;
  j["w2_dopri5"] = w2_with(model, schedule, prior, h, "dopri5", 1, seed, device);
  return j;
}

void plot_trajectories(const std::string& file, nn::VelocityFieldImpl& model,
                       const path::Schedule& schedule, const data::Source& prior, uint64_t seed,
                       torch::Device device, const std::string& title) {
  if (prior.dim() < 2) return;
  auto gen = stream_generator(seed, Stream::rectify_plot);
  auto x_1 = prior.sample(300, gen).to(device);
  ode::SolveOptions so;
  so.method = "rk4";
  so.steps = 50;
  std::vector<torch::Tensor> traj;
  so.observer = [&](double, const ode::State& y) {
    traj.push_back(y[0].slice(1, 0, 2).to(torch::kCPU));
  };
  train::generate(model, schedule, x_1, so);
  io::PlotOptions po;
  po.width = po.height = 500;
  po.title = title;
  io::trajectories_png(file, torch::stack(traj), po);
}

// ---------------------------------------------------------------- reflow / distill

struct RectifyArgs {
  Common common;
  FlowSource source;  // the parent flow: --ckpt, or --model torchscript:FILE
  std::string data;   // held-out data of the report (default: the parent's)
  std::string out, resume;
  int64_t pairs = 20000, chunk = 5000;
  EvalArgs pair_solve;  // method/rtol/atol/steps of pair generation
  train::TrainOptions opt;
  bool warm_start = true;
  int64_t generator_steps = 1;  // distill only
  int64_t eval_n = 1000;
  bool quiet = false;
};

void add_rectify(CLI::App* sub, RectifyArgs& a, bool distill) {
  add_common(sub, a.common);
  add_flow_source(sub, a.source);
  sub->add_option("--data", a.data,
                  "Held-out data for the report (default: the parent's; needed with --model)");
  sub->parse_complete_callback([&a] { check_flow_source(a.source); });
  sub->add_option("--out", a.out, "Output folder (model.pt, pairs/, metrics.json, plots)")
      ->capture_default_str();
  sub->add_option("--pairs", a.pairs, "Pairs (X_0, x_1) to generate with the flow")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--chunk", a.chunk, "Pairs per chunk file (the unit of resuming)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--pair-method", a.pair_solve.method,
                  "ODE method for the pairs: " + ode::tableaus().joined_names())
      ->capture_default_str()
      ->check(names_of(ode::tableaus()));
  sub->add_option("--pair-steps", a.pair_solve.steps, "Steps (fixed-step pair methods)")
      ->capture_default_str();
  sub->add_option("--pair-rtol", a.pair_solve.rtol, "rtol of adaptive pair methods")
      ->capture_default_str();
  sub->add_option("--pair-atol", a.pair_solve.atol, "atol of adaptive pair methods")
      ->capture_default_str();
  if (distill) {
    sub->add_option("--steps", a.generator_steps,
                    "Euler steps of the distilled generator (1: one-step)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    sub->add_option("--iters", a.opt.steps, "Optimization steps")->capture_default_str();
  } else {
    sub->add_option("--steps", a.opt.steps, "Optimization steps")->capture_default_str();
  }
  sub->add_option("--batch-size", a.opt.batch_size, "Minibatch size")->capture_default_str();
  sub->add_option("--lr", a.opt.lr, "Learning rate")->capture_default_str();
  add_choice(sub, "--lr-schedule", a.opt.lr_schedule, train::lr_schedules(),
             "Learning rate after the warm-up");
  sub->add_option("--ema-decay", a.opt.ema_decay, "EMA decay (0: off)")->capture_default_str();
  sub->add_flag("--warm-start,!--no-warm-start", a.warm_start,
                "Start from the parent's weights (default) or from a fresh initialization");
  sub->add_option("--resume", a.resume, "Resume training from this checkpoint");
  sub->add_option("--eval-n", a.eval_n, "Held-out points and noise draws for the report")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_flag("--quiet", a.quiet, "No progress output");
}

struct RectifyResult {
  nn::VelocityField model;
  json metrics;
};

// The parent's pairs (x_0 = its flow's image of x_1, x_1): generated in chunks under
// OUT/pairs, or reused from there. Sets how many chunks were reused and the seconds taken.
data::PairTable parent_pairs(const RectifyArgs& a, const train::Checkpoint& parent,
                             torch::Device device, int64_t& reused, double& seconds) {
  rectify::PairOptions po;
  po.n = a.pairs;
  po.chunk = a.chunk;
  po.solve = a.pair_solve.solve_options();
  po.seed = a.common.seed;
  po.device = device;
  po.parent = a.source.name();
  io::Progress pbar(a.pairs, "pairs from " + a.source.name(), !a.quiet);
  reused = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto pairs = rectify::generate_pairs(*parent.model, *parent.schedule, *parent.prior, po,
                                       a.out + "/pairs", [&](int64_t k, int64_t, bool was_reused) {
                                         reused += was_reused;
                                         pbar.update(std::min(a.pairs, (k + 1) * a.chunk));
                                       });
  pbar.finish();
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (reused > 0)
    std::fprintf(stderr, "reused %lld chunk(s) already in %s/pairs\n",
                 static_cast<long long>(reused), a.out.c_str());
  return pairs;
}

// Trains to the end with a progress bar, saving `ckpt` every 1000 steps and at the end;
// returns the seconds spent.
double train_child(train::Trainer& trainer, const RectifyArgs& a, bool distill,
                   const std::string& ckpt, const std::string& stored_config) {
  const int64_t steps = trainer.options().steps;
  io::Progress progress(steps, distill ? "distill" : "reflow", !a.quiet);
  auto t1 = std::chrono::steady_clock::now();
  trainer.run([&](int64_t step, const objective::LossResult& r) {
    if (step % 50 == 0 || step == steps) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "loss %.4f", r.loss.item<double>());
      progress.update(step, buf);
    }
    if (step % 1000 == 0) trainer.save(ckpt, stored_config);
    return true;
  });
  progress.finish();
  trainer.save(ckpt, stored_config);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
}

// Pairs from the parent, a new flow trained on them, and the report of both.
RectifyResult run_rectify_once(const RectifyArgs& a, const std::string& config, bool distill,
                               torch::Device device) {
  auto parent = load_flow(a.source, device);
  const std::string& parent_name = a.source.name();
  const Lineage up = read_lineage(parent.config);
  CNF_CHECK(up.generator_steps == 0, "'", parent_name, "' is a distilled ", up.generator_steps,
            "-step generator, not a flow; reflow or distil the flow it came from");
  const auto& schedule = parent.schedule;
  const auto& prior = parent.prior;
  make_dir(a.out);

  int64_t reused = 0;
  double pair_seconds = 0;
  auto pairs = parent_pairs(a, parent, device, reused, pair_seconds);

  train::TrainOptions opt = a.opt;
  opt.seed = a.common.seed;
  opt.device = device;
  opt.time_grid = distill ? a.generator_steps : 0;
  // The new flow is trained by flow matching on the pairs and predicts the velocity,
  // whatever objective and parameterization the parent had.
  train::FlowSpec spec = parent.spec;
  spec.objective = "fm";
  spec.param = "velocity";
  // A fine-tuned or imported PyTorch module begets a child of its own architecture.
  const train::NetworkFactory factory =
      spec.model.arch == "torchscript"
          ? interop::torchscript_factory(interop::import_options(spec, device))
          : train::NetworkFactory{};
  train::Trainer trainer(spec, opt, data::make_source("normal", spec.model.dim), prior, factory);
  trainer.set_pairs(std::make_shared<data::PairTable>(std::move(pairs)));
  const bool same_param = parent.spec.network_param() == path::Param::velocity;
  if (a.warm_start && !same_param && !a.quiet)
    std::fprintf(stderr, "the parent's network predicts %s, not the velocity: no warm start\n",
                 path::param_name(parent.spec.network_param()).c_str());
  if (a.warm_start && same_param) {
    rectify::copy_weights(*trainer.model(), *parent.network);
    rectify::copy_weights(*trainer.ema_model(), *parent.network);
  }
  if (!a.resume.empty()) trainer.resume(a.resume);

  Lineage me;
  me.round = distill ? up.round : up.round + 1;
  me.kind = distill ? "distill" : "reflow";
  me.generator_steps = distill ? a.generator_steps : 0;
  me.parent = parent_name;
  const std::string stored_config = config + lineage_line(me);
  const std::string ckpt = a.out + "/model.pt";
  const double train_seconds = train_child(trainer, a, distill, ckpt, stored_config);

  auto child = trainer.ema_model();
  child->eval();
  auto h = checkpoint_holdout(parent, parent_name, a.data.empty() ? parent.spec.data : a.data, 0,
                              a.eval_n, a.common.seed);
  const int64_t euler_steps = distill ? a.generator_steps : 1;
  json j = {{"kind", me.kind},
            {"round", me.round},
            {"parent", parent_name},
            {"pairs", a.pairs},
            {"pairs_reused_chunks", reused},
            {"pair_seconds", pair_seconds},
            {"train_seconds", train_seconds},
            {"train_steps", trainer.steps_done()},
            {"warm_start", a.warm_start},
            {"w2_floor", metrics::w2(h.b, h.a)},
            {"parent_metrics",
             report(*parent.model, *schedule, *prior, h, euler_steps, a.common.seed, device)}};
  if (distill) {
    // A distilled generator is judged by its N Euler steps; its "flow" is not meaningful.
    j["generator_steps"] = a.generator_steps;
    j["w2_euler"] =
        w2_with(*child, *schedule, *prior, h, "euler", a.generator_steps, a.common.seed, device);
  } else {
    j["metrics"] = report(*child, *schedule, *prior, h, euler_steps, a.common.seed, device);
    plot_trajectories(a.out + "/trajectories.png", *child, *schedule, *prior, a.common.seed, device,
                      "round " + std::to_string(me.round) + " trajectories");
  }
  return {child, j};
}

int run_rectify(const RectifyArgs& a, const CLI::App* sub, bool distill) {
  auto device = setup(a.common);
  const std::string config = effective_config(sub);
  make_dir(a.out);
  io::write_text_atomic(a.out + "/config.toml", config);
  auto r = run_rectify_once(a, config, distill, device);
  io::write_text_atomic(a.out + "/metrics.json", r.metrics.dump(2) + "\n");
  write_json(a.common.json, r.metrics);
  const auto& pm = r.metrics["parent_metrics"];
  if (distill) {
    std::printf(
        "distilled %s into a %lld-step generator: W2 %.4f (parent with %lld Euler "
        "step(s): %.4f, dopri5: %.4f, floor %.4f)\n",
        a.source.name().c_str(), static_cast<long long>(a.generator_steps),
        r.metrics["w2_euler"].get<double>(), static_cast<long long>(a.generator_steps),
        pm["w2_euler"].get<double>(), pm["w2_dopri5"].get<double>(),
        r.metrics["w2_floor"].get<double>());
  } else {
    const auto& m = r.metrics["metrics"];
    std::printf(
        "round %lld: straightness %.4f -> %.4f, transport cost %.4f -> %.4f, "
        "adaptive NFE %lld -> %lld\n",
        static_cast<long long>(r.metrics["round"].get<int64_t>()), pm["straightness"].get<double>(),
        m["straightness"].get<double>(), pm["transport_cost"].get<double>(),
        m["transport_cost"].get<double>(),
        static_cast<long long>(pm["adaptive_nfe"].get<int64_t>()),
        static_cast<long long>(m["adaptive_nfe"].get<int64_t>()));
    std::printf("W2 to held-out: one Euler step %.4f -> %.4f, dopri5 %.4f -> %.4f (floor %.4f)\n",
                pm["w2_euler"].get<double>(), m["w2_euler"].get<double>(),
                pm["w2_dopri5"].get<double>(), m["w2_dopri5"].get<double>(),
                r.metrics["w2_floor"].get<double>());
  }
  std::printf("wrote %s/{model.pt, config.toml, metrics.json, pairs/%s}\n", a.out.c_str(),
              distill ? "" : ", trajectories.png");
  return 0;
}

// ------------------------------------------------------------ experiment reflow

struct ReflowExperimentArgs {
  Common common;
  std::string data = "8gaussians";
  int64_t rounds = 3;
  int64_t steps = 10000;
  int64_t distill_steps = 5000;
  int64_t pairs = 20000;
  int64_t n = 1000;
  std::string out = "out/reflow";
  bool quiet = false;
};

// What run_rectify_once needs for one step of the study: the flow in `ckpt`, reflowed or
// distilled (into a one-step generator) into `out`.
RectifyArgs study_step(const ReflowExperimentArgs& a, const std::string& ckpt,
                       const std::string& out, const train::TrainOptions& o, bool distill) {
  RectifyArgs r;
  r.common = a.common;
  r.source.ckpt = ckpt;
  r.out = out;
  r.pairs = a.pairs;
  r.pair_solve.method = "dopri5";
  r.opt = o;
  if (distill) {
    r.opt.steps = a.distill_steps;
    r.generator_steps = 1;
  }
  r.eval_n = a.n;
  r.quiet = a.quiet;
  return r;
}

// The table row of one round's report.
std::string reflow_row(int64_t k, const json& j) {
  char buf[512];
  std::snprintf(
      buf, sizeof buf, "| %lld | %.2e ± %.1e | %.3f ± %.3f | %.4f | %lld | %.3f | %.3f | %.3f |\n",
      static_cast<long long>(k), j["straightness"].get<double>(),
      j["straightness_stderr"].get<double>(), j["transport_cost"].get<double>(),
      j["transport_cost_stderr"].get<double>(), j["normalized_energy"].get<double>(),
      static_cast<long long>(j["adaptive_nfe"].get<int64_t>()), j["w2_euler"].get<double>(),
      j["w2_distilled_1step"].get<double>(), j["w2_dopri5"].get<double>());
  return buf;
}

int run_reflow_experiment(const ReflowExperimentArgs& a) {
  auto device = setup(a.common);
  CNF_CHECK(a.rounds >= 1 && a.rounds <= 10, "--rounds must be in 1..10, got ", a.rounds);
  make_dir(a.out);
  // Round 1: flow matching on independent pairs (the 1-rectified flow).
  train::FlowSpec spec;
  spec.data = a.data;
  train::TrainOptions o = study_options(a.steps, a.common.seed, device);
  auto split = data::split_source(a.data, 2, 2 * a.n, 0.1, a.common.seed);
  auto prior = data::make_source("normal", split.train->dim());
  std::string ckpt = a.out + "/round1/model.pt";
  {
    make_dir(a.out + "/round1");
    train::Trainer trainer(spec, o, split.train, prior);
    train_with_progress(trainer, "reflow: round 1 (flow matching)", !a.quiet);
    trainer.save(ckpt, lineage_line(Lineage{}));
  }
  auto h = halves(split.holdout);
  const double floor = metrics::w2(h.b, h.a);
  auto schedule = spec.make_schedule();

  json rounds = json::array();
  std::string table =
      "| round | straightness | transport cost | path energy / cost | dopri5 NFE | W2 1 Euler "
      "step | W2 distilled 1 step | W2 dopri5 |\n|---|---|---|---|---|---|---|---|\n";
  for (int64_t k = 1; k <= a.rounds; ++k) {
    const std::string dir = a.out + "/round" + std::to_string(k);
    json j;
    if (k > 1) {  // reflow the previous round; its result already holds this round's report
      auto res = run_rectify_once(study_step(a, ckpt, dir, o, false), "", false, device);
      io::write_text_atomic(dir + "/metrics.json", res.metrics.dump(2) + "\n");
      ckpt = dir + "/model.pt";
      j = res.metrics["metrics"];
    }
    auto flow = train::load_checkpoint(ckpt, device);
    if (k == 1) j = report(*flow.model, *schedule, *prior, h, 1, a.common.seed, device);
    j["round"] = k;
    plot_trajectories(dir + "/trajectories.png", *flow.model, *schedule, *prior, a.common.seed,
                      device, "round " + std::to_string(k) + " trajectories");
    // Distil this round's flow into a one-step generator.
    auto dist = run_rectify_once(study_step(a, ckpt, dir + "/distill1", o, true), "", true, device);
    io::write_text_atomic(dir + "/distill1/metrics.json", dist.metrics.dump(2) + "\n");
    j["w2_distilled_1step"] = dist.metrics["w2_euler"];
    rounds.push_back(j);
    table += reflow_row(k, j);
  }
  char floor_line[128];
  std::snprintf(floor_line, sizeof floor_line,
                "\nW2 floor (held-out vs held-out, %lld points): %.3f\n",
                static_cast<long long>(h.a.size(0)), floor);
  table += floor_line;
  io::write_text_atomic(a.out + "/reflow.md", table);
  json j = {{"data", a.data},   {"steps", a.steps}, {"distill_steps", a.distill_steps},
            {"pairs", a.pairs}, {"n", a.n},         {"w2_floor", floor},
            {"rounds", rounds}};
  io::write_text_atomic(a.out + "/results.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  std::printf("%s", table.c_str());
  std::printf(
      "wrote %s/{reflow.md, results.json, roundK/{model.pt, trajectories.png, "
      "distill1/}}\n",
      a.out.c_str());
  return 0;
}

}  // namespace

std::function<int()> add_rectify_commands(CLI::App& app, CLI::App* experiment) {
  auto reflow = std::make_shared<RectifyArgs>();
  reflow->out = "out/reflow-round";
  reflow->opt.steps = 5000;
  reflow->opt.lr = 1e-3;
  reflow->opt.lr_schedule = train::LrSchedule::cosine;
  reflow->opt.ema_decay = 0.999;
  reflow->pair_solve.method = "dopri5";
  auto* reflow_cmd = app.add_subcommand(
      "reflow", "Rectify a flow: train a new flow on the (X_0, x_1) pairs it produces");
  add_rectify(reflow_cmd, *reflow, false);

  auto distill = std::make_shared<RectifyArgs>(*reflow);
  distill->out = "out/distill";
  auto* distill_cmd = app.add_subcommand(
      "distill", "Distil a flow into an N-step Euler generator trained on its pairs");
  add_rectify(distill_cmd, *distill, true);

  auto exp = std::make_shared<ReflowExperimentArgs>();
  auto* exp_cmd = experiment->add_subcommand(
      "reflow",
      "Straightness, transport cost and one-step W2 across reflow rounds, with and "
      "without distillation (Liu et al. 2023)");
  add_common(exp_cmd, exp->common);
  exp_cmd->add_option("--data", exp->data, "2-D data set")->capture_default_str();
  exp_cmd->add_option("--rounds", exp->rounds, "Rectified flows 1..R")->capture_default_str();
  exp_cmd->add_option("--steps", exp->steps, "Training steps per round")->capture_default_str();
  exp_cmd->add_option("--distill-steps", exp->distill_steps, "Training steps per distillation")
      ->capture_default_str();
  exp_cmd->add_option("--pairs", exp->pairs, "Pairs per reflow/distillation")
      ->capture_default_str();
  exp_cmd->add_option("-n,--n", exp->n, "Held-out points and noise draws for the metrics")
      ->capture_default_str();
  exp_cmd->add_option("--out", exp->out, "Output folder")->capture_default_str();
  exp_cmd->add_flag("--quiet", exp->quiet, "No progress output");

  return [=]() {
    if (reflow_cmd->parsed()) return run_rectify(*reflow, reflow_cmd, false);
    if (distill_cmd->parsed()) return run_rectify(*distill, distill_cmd, true);
    if (exp_cmd->parsed()) return run_reflow_experiment(*exp);
    return -1;
  };
}

}  // namespace cnf::app
