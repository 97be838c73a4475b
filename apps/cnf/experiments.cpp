// cnf experiment <name> — the studies of the source material, reproducible from the CLI.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "cnf/data/sources.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/ode/solve.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

namespace {

// ----------------------------------------------------------------------- nfe-error
//
// Lipman et al. 2023 (sec. 6, fig. 7): flow matching on the OT path gives straighter
// trajectories than on a diffusion path, so a solver reaches a given error with fewer
// function evaluations. For one model per path (same network, data and budget), measure
// the error of each solver against a tight-tolerance reference solve from the same noise.

struct NfeErrorArgs {
  Common common;
  std::string data = "moons";
  std::string schedules = "condot,vp";
  int64_t steps = 5000;
  int64_t n = 1000;
  double reference_tol = 1e-9;
  std::string out = "out/nfe-error";
  bool quiet = false;
};

struct Point {
  std::string schedule, method, setting;
  int64_t nfe;
  double error;
};

// Trains a flow on schedule `name` and measures each ODE method's error against an accurate
// dopri5 solve from the same noise, at 1..128 steps and at tolerances 1e-1..1e-6.
std::vector<Point> measure_schedule(const NfeErrorArgs& a, const std::string& name,
                                    torch::Device device, json& per_schedule) {
  train::FlowSpec spec;
  spec.data = a.data;
  spec.schedule = name;
  auto data_source = data::make_source(a.data);
  // No EMA: the study measures the solver error of the trained weights themselves.
  train::Trainer trainer(spec, study_options(a.steps, a.common.seed, device, 2e-3, 0.0),
                         data_source, data::make_source("normal", data_source->dim()));
  train_with_progress(trainer, "nfe-error: training " + name, !a.quiet);
  trainer.save(a.out + "/" + name + ".pt");
  auto model = trainer.model();
  model->eval();
  const auto& schedule = trainer.schedule();

  auto gen = stream_generator(a.common.seed, Stream::nfe_study);
  auto x_1 = torch::randn({a.n, data_source->dim()}, gen, torch::kFloat32).to(device);
  auto reference = train::generate(
      *model, *schedule, x_1, ode::SolveOptions::of("dopri5", 1, a.reference_tol, a.reference_tol));
  std::vector<Point> points;
  auto add = [&](const std::string& method, const std::string& setting,
                 const ode::SolveOptions& so) {
    auto sol = train::generate(*model, *schedule, x_1, so);
    const double error = (sol.y[0] - reference.y[0]).norm(2, {1}).mean().item<double>();
    points.push_back({name, method, setting, sol.nfe, error});
  };
  for (std::string method : {"euler", "midpoint", "rk4"})
    for (int64_t k : {1, 2, 4, 8, 16, 32, 64, 128})
      add(method, "steps=" + std::to_string(k), ode::SolveOptions::of(method, k, 1e-3, 1e-3));
  for (double tol : {1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6}) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "tol=%.0e", tol);
    add("dopri5", buf, ode::SolveOptions::of("dopri5", 1, tol, tol));
  }
  per_schedule[name] = {{"reference_nfe", reference.nfe}};
  return points;
}

const std::vector<std::string> kNfeMethods = {"euler", "midpoint", "rk4", "dopri5"};

// Prints and returns the NFE each (schedule, method) needs to bring the mean error below
// 1e-1, 1e-2 and 1e-3.
json nfe_summary(const NfeErrorArgs& a, const std::vector<std::string>& schedules,
                 const std::vector<Point>& points) {
  const std::vector<double> thresholds{1e-1, 1e-2, 1e-3};
  std::printf(
      "NFE to reach a mean error below the threshold (vs dopri5 at tol %.0e), %lld points:\n",
      a.reference_tol, static_cast<long long>(a.n));
  std::printf("%-8s %-9s %10s %10s %10s\n", "path", "method", "err<1e-1", "err<1e-2", "err<1e-3");
  json summary = json::array();
  for (const auto& name : schedules)
    for (const auto& method : kNfeMethods) {
      std::printf("%-8s %-9s", name.c_str(), method.c_str());
      json row = {{"schedule", name}, {"method", method}};
      for (double th : thresholds) {
        int64_t best = -1;
        for (const auto& p : points)
          if (p.schedule == name && p.method == method && p.error < th &&
              (best < 0 || p.nfe < best))
            best = p.nfe;
        std::printf(" %10s", best < 0 ? ">max" : std::to_string(best).c_str());
        char key[32];
        std::snprintf(key, sizeof key, "nfe_below_%.0e", th);
        row[key] = best < 0 ? json(nullptr) : json(best);
      }
      std::printf("\n");
      summary.push_back(row);
    }
  return summary;
}

// Mean error against NFE on log axes: one color and marker per method, one dash per schedule.
void plot_nfe_error(const NfeErrorArgs& a, const std::vector<std::string>& schedules,
                    const std::vector<Point>& points) {
  std::vector<io::Line> lines;
  for (size_t si = 0; si < schedules.size(); ++si)
    for (size_t mi = 0; mi < kNfeMethods.size(); ++mi) {
      io::Line l;
      for (const auto& p : points)
        if (p.schedule == schedules[si] && p.method == kNfeMethods[mi]) {
          l.x.push_back(static_cast<double>(p.nfe));
          l.y.push_back(p.error);
        }
      l.label = schedules[si] + " " + kNfeMethods[mi];
      l.color = static_cast<int>(mi);
      l.marker = static_cast<int>(mi);
      l.dash = static_cast<int>(si % 4);
      lines.push_back(std::move(l));
    }
  io::ChartOptions o;
  o.title = "Solver error vs NFE (" + a.data + ")";
  o.xlabel = "NFE (network evaluations per sample)";
  o.ylabel = "mean error to the reference solve";
  o.xscale = io::Scale::log2;
  o.yscale = io::Scale::log10;
  io::line_chart_png(a.out + "/nfe_error.png", lines, o);
}

int run_nfe_error(const NfeErrorArgs& a) {
  auto device = setup(a.common);
  make_dir(a.out);
  auto schedules = split_list(a.schedules);
  CNF_CHECK(!schedules.empty(), "--schedules is empty; give e.g. condot,vp");
  for (const auto& s : schedules) path::make_schedule(s);  // unknown names fail before training
  CNF_CHECK(a.n >= 1 && a.steps >= 1, "--n and --steps must be >= 1");

  std::vector<Point> points;
  json per_schedule = json::object();
  for (const auto& name : schedules) {
    auto mine = measure_schedule(a, name, device, per_schedule);
    points.insert(points.end(), mine.begin(), mine.end());
  }
  std::string csv = "schedule,method,setting,nfe,error\n";
  for (const auto& p : points) {
    char line[256];
    std::snprintf(line, sizeof line, "%s,%s,%s,%lld,%.6e\n", p.schedule.c_str(), p.method.c_str(),
                  p.setting.c_str(), static_cast<long long>(p.nfe), p.error);
    csv += line;
  }
  io::write_text_atomic(a.out + "/nfe_error.csv", csv);
  const json summary = nfe_summary(a, schedules, points);
  plot_nfe_error(a, schedules, points);

  json j = {{"data", a.data},     {"train_steps", a.steps},
            {"n", a.n},           {"reference_tol", a.reference_tol},
            {"summary", summary}, {"models", per_schedule}};
  io::write_text_atomic(a.out + "/results.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  std::printf("wrote %s/{nfe_error.csv, nfe_error.png, results.json, <path>.pt}\n", a.out.c_str());
  return 0;
}

}  // namespace

std::function<int()> add_experiments(CLI::App* experiment) {
  auto args = std::make_shared<NfeErrorArgs>();
  auto* cmd = experiment->add_subcommand(
      "nfe-error",
      "Error vs NFE of euler/midpoint/rk4/dopri5 for flow matching on the OT path and on a "
      "diffusion path (Lipman et al. 2023, fig. 7)");
  add_common(cmd, args->common);
  cmd->add_option("--data", args->data, "Data set")->capture_default_str();
  cmd->add_option("--schedules", args->schedules,
                  "Comma-separated paths to compare: " + path::schedules().joined_names())
      ->capture_default_str()
      ->check(list_of(path::schedules()));
  cmd->add_option("--steps", args->steps, "Training steps per model")->capture_default_str();
  cmd->add_option("-n,--n", args->n, "Noise samples transported per solve")->capture_default_str();
  cmd->add_option("--reference-tol", args->reference_tol, "rtol = atol of the reference dopri5")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output folder")->capture_default_str();
  cmd->add_flag("--quiet", args->quiet, "No progress output");
  auto samplers = add_sampler_experiment(experiment);
  return [cmd, args, samplers]() { return cmd->parsed() ? run_nfe_error(*args) : samplers(); };
}

}  // namespace cnf::app
