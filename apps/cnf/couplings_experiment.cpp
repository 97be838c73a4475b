// cnf experiment couplings — I-CFM, OT-CFM and SB-CFM (Tong et al. 2023): how the pairing
// of data and noise changes sample quality, path energy and solver cost, over several seeds.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/rectify/rectify.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

namespace {

struct CouplingsArgs {
  Common common;
  /// prior:data pairs; time runs from the data (t = 0) to the prior (t = 1).
  std::string tasks = "8gaussians:moons,normal:8gaussians";
  std::string couplings = "independent,exact,sb";
  std::string seeds = "0,1";
  int64_t steps = 2000;
  double bridge_sigma = 0.5;
  int64_t n = 1000;
  std::string out = "out/couplings";
  bool quiet = false;
};

// The flow's trajectories from 300 prior draws (rk4, 50 steps) as a PNG.
void plot_trajectories(const std::string& path, const std::string& title,
                       nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                       const torch::Tensor& x_1) {
  ode::SolveOptions so = ode::SolveOptions::of("rk4", 50, 1e-3, 1e-3);
  std::vector<torch::Tensor> traj;
  so.observer = [&](double, const ode::State& y) { traj.push_back(y[0].to(torch::kCPU)); };
  train::generate(model, schedule, x_1, so);
  io::PlotOptions po;
  po.width = po.height = 450;
  po.title = title;
  io::trajectories_png(path, torch::stack(traj), po);
}

// One run: trains prior -> data with coupling `cname` and seed `seed`, then measures W2 to
// held-out data (dopri5), the path energy and NFE, and training speed. The first seed's run
// also plots its trajectories.
json run_one(const CouplingsArgs& a, const std::string& prior_spec, const std::string& data_spec,
             const std::string& cname, uint64_t seed, bool plot, torch::Device device) {
  train::FlowSpec spec;
  spec.data = data_spec;
  spec.prior = prior_spec;
  train::TrainOptions o = study_options(a.steps, seed, device);
  o.coupling = cname;
  o.bridge_sigma = a.bridge_sigma;
  auto split = data::split_source(data_spec, 2, 2 * a.n, 0.1, seed);
  auto prior = data::make_source(prior_spec, 2);
  train::Trainer trainer(spec, o, split.train, prior);
  const std::string task = prior_spec + ":" + data_spec;
  const double secs = train_with_progress(trainer, "couplings: " + task + " " + cname, !a.quiet);
  auto model = trainer.ema_model();
  model->eval();
  const auto& schedule = trainer.schedule();
  auto h = halves(split.holdout);
  EvalArgs e;
  e.n = h.a.size(0);
  e.method = "dopri5";
  auto ev = evaluate(*model, path::Param::velocity, *schedule, *prior, h, e, seed, device);
  auto gen = stream_generator(seed, Stream::couplings_eval);
  auto st = rectify::straightness(*model, *schedule, prior->sample(a.n, gen).to(device));
  if (plot)
    plot_trajectories(a.out + "/traj_" + prior_spec + "_" + data_spec + "_" + cname + ".png",
                      prior_spec + " -> " + data_spec + ", " + cname, *model, *schedule,
                      prior->sample(300, gen).to(device));
  return {{"task", task},
          {"coupling", cname},
          {"seed", seed},
          {"w2", ev.w2},
          {"w2_floor", ev.w2_floor},
          {"normalized_energy", st.normalized_energy},
          {"straightness", st.straightness},
          {"transport_cost", st.transport_cost},
          {"nfe", st.nfe},
          {"steps_per_second", a.steps / std::max(secs, 1e-9)}};
}

int run_couplings(const CouplingsArgs& a) {
  auto device = setup(a.common);
  make_dir(a.out);
  const auto tasks = split_list(a.tasks, ','), couplings = split_list(a.couplings, ',');
  const auto seeds = parse_seeds(a.seeds);
  CNF_CHECK(!tasks.empty() && !couplings.empty() && !seeds.empty(),
            "--tasks, --couplings and --seeds must not be empty");
  for (const auto& c : couplings) coupling::make_coupling(c);  // unknown names fail early
  for (const auto& task : tasks)
    CNF_CHECK(split_list(task, ':').size() == 2, "a task is prior:data (e.g. normal:moons), got '",
              task, "'");
  std::string table =
      "| prior -> data | coupling | W2 to held-out | normalized path energy | dopri5 NFE | "
      "steps/s |\n|---|---|---|---|---|---|\n";
  json results = json::array();
  for (const auto& task : tasks) {
    auto parts = split_list(task, ':');
    const std::string prior_spec = parts[0], data_spec = parts[1];
    for (const auto& cname : couplings) {
      Stat w2, energy, nfe, speed;
      double floor = 0;
      for (uint64_t seed : seeds) {
        json r = run_one(a, prior_spec, data_spec, cname, seed, seed == seeds.front(), device);
        w2.v.push_back(r["w2"].get<double>());
        floor = r["w2_floor"].get<double>();
        energy.v.push_back(r["normalized_energy"].get<double>());
        nfe.v.push_back(r["nfe"].get<double>());
        speed.v.push_back(r["steps_per_second"].get<double>());
        results.push_back(std::move(r));
      }
      char row[512];
      std::snprintf(row, sizeof row, "| %s -> %s | %s | %s (floor %.3f) | %s | %s | %s |\n",
                    prior_spec.c_str(), data_spec.c_str(), cname.c_str(),
                    w2.fmt("%.3f ± %.3f").c_str(), floor, energy.fmt("%.3f ± %.3f").c_str(),
                    nfe.fmt("%.0f ± %.0f").c_str(), speed.fmt("%.0f ± %.0f").c_str());
      table += row;
      if (!a.quiet) std::fprintf(stderr, "%s", row);
    }
  }
  io::write_text_atomic(a.out + "/couplings.md", table);
  json j = {{"results", results},
            {"steps", a.steps},
            {"bridge_sigma", a.bridge_sigma},
            {"n", a.n},
            {"seeds", seeds}};
  io::write_text_atomic(a.out + "/results.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  std::printf("%s", table.c_str());
  std::printf("wrote %s/{couplings.md, results.json, traj_*.png}\n", a.out.c_str());
  return 0;
}

}  // namespace

std::function<int()> add_couplings_experiment(CLI::App* experiment) {
  auto a = std::make_shared<CouplingsArgs>();
  auto* cmd = experiment->add_subcommand(
      "couplings",
      "I-CFM vs OT-CFM vs SB-CFM: W2, normalized path energy, dopri5 NFE over "
      "seeds (Tong et al. 2023)");
  add_common(cmd, a->common);
  cmd->add_option("--tasks", a->tasks, "Comma-separated prior:data pairs")->capture_default_str();
  cmd->add_option("--couplings", a->couplings,
                  "Comma-separated couplings: " + join_names(coupling::coupling_names()))
      ->capture_default_str()
      ->check(one_of(coupling::coupling_names(), "coupling", true));
  cmd->add_option("--seeds", a->seeds, "Comma-separated seeds")->capture_default_str();
  cmd->add_option("--steps", a->steps, "Training steps per model")->capture_default_str();
  cmd->add_option("--bridge-sigma", a->bridge_sigma, "sigma of the sb coupling")
      ->capture_default_str();
  cmd->add_option("-n,--n", a->n, "Samples and held-out points per evaluation")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Output folder")->capture_default_str();
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  return [cmd, a]() { return cmd->parsed() ? run_couplings(*a) : -1; };
}

}  // namespace cnf::app
