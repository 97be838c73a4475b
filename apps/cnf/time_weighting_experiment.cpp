// The studies of training choices (cnf experiment time-weighting, schedules,
// parameterizations, bridge): one model per (data set, variant, seed) on the same network and
// budget, each measured the same way — sample quality (W2 to held-out data) from an accurate
// dopri5 solve and from Euler at 4, 8 and 16 steps, dopri5's NFE, the exact held-out NLL (and
// the KL to the data where its density is known), the normalized path energy and training
// speed — with the mean and standard deviation over seeds. Networks that predict noise, data,
// score or v are integrated over path::conversion_range (where their conversion is finite),
// velocity networks over [0, 1].
//   time-weighting     flow matching's time density and weighting (uniform, logit-normal,
//                      CosMap, EDM's log-normal; Esser et al. 2024, objective/time_density.h)
//   schedules          the affine paths under flow matching, and score matching where it applies
//   parameterizations  what the network predicts (velocity, noise, data, score, v) under either
//                      loss, on one path
//   bridge             SB-CFM's Brownian-bridge sigma from large to small against OT-CFM (the
//                      sigma -> 0 limit) and independent pairs (Tong et al. 2024)
// Finished runs are appended to runs.jsonl in the output folder and reused by a rerun.
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "cnf/core/spec.h"
#include "cnf/density/density.h"
#include "cnf/io/plot.h"
#include "cnf/objective/time_density.h"
#include "cnf/rectify/rectify.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

namespace {

// One compared choice: its label (row and resume key) and what it changes in a run.
struct Variant {
  std::string label;
  std::function<void(train::FlowSpec&, train::TrainOptions&)> apply;
};

// A study: its name, the variants' column title and how a variant's text reads.
struct Study {
  std::string name, column, help;
  std::vector<std::string> variants;  // defaults
  std::function<Variant(const std::string&)> parse;
};

struct StudyArgs {
  Common common;
  /// Data sets as SPEC or SPEC@DIM (gmm:8@32: an 8-component mixture in 32 dimensions).
  std::string tasks = "moons,8gaussians,gmm:8@8,gmm:8@32";
  std::vector<std::string> variants;
  std::string seeds = "0,1,2";
  int64_t steps = 3000;
  int64_t n = 1000;
  int64_t nll_n = 500;
  double tol = 1e-5;
  bool quick = false;
  std::string out;
  bool quiet = false;
};

// "A/B" split at the first '/': {A, B}, B empty when there is none.
std::pair<std::string, std::string> split_slash(const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return {text, ""};
  return {text.substr(0, slash), text.substr(slash + 1)};
}

// SAMPLING or SAMPLING/WEIGHTING, each a time-density spec.
Variant time_variant(const std::string& text) {
  const auto [a, b] = split_slash(text);
  const auto sampling = objective::TimeDensity::parse(a);
  const auto weighting = objective::TimeDensity::parse(b.empty() ? "uniform" : b);
  Variant v;
  v.label = weighting.is_uniform() ? sampling.describe()
                                   : sampling.describe() + "/" + weighting.describe();
  v.apply = [sampling, weighting](train::FlowSpec& s, train::TrainOptions&) {
    s.time_sampling = sampling.describe();
    s.time_weighting = weighting.describe();
  };
  return v;
}

// SCHEDULE or SCHEDULE/OBJECTIVE (fm by default; score).
Variant schedule_variant(const std::string& text) {
  const auto [a, b] = split_slash(text);
  const std::string schedule = path::make_schedule(a)->describe();
  const std::string objective = train::canonical_objective(b.empty() ? "fm" : b);
  CNF_CHECK(objective != "mle", "variant '", text, "': the schedules study trains fm or score");
  Variant v;
  v.label = objective == "fm" ? schedule : schedule + "/" + objective;
  v.apply = [schedule, objective](train::FlowSpec& s, train::TrainOptions&) {
    s.schedule = schedule;
    s.objective = objective;
  };
  return v;
}

// OBJECTIVE/PARAM (fm or score; velocity, noise, data, score or v), on the study's path.
Variant param_variant(const std::string& text) {
  const auto [a, b] = split_slash(text);
  const std::string objective = train::canonical_objective(a);
  CNF_CHECK(objective != "mle" && !b.empty(), "variant '", text,
            "' is not OBJECTIVE/PARAM with OBJECTIVE fm or score (e.g. score/noise)");
  const std::string param = path::param_name(path::parse_param(b));
  Variant v;
  v.label = objective + "/" + param;
  v.apply = [objective, param](train::FlowSpec& s, train::TrainOptions&) {
    s.objective = objective;
    s.param = param;
  };
  return v;
}

// independent, exact, or sb:SIGMA (SB-CFM with Brownian-bridge sigma SIGMA > 0).
Variant bridge_variant(const std::string& text) {
  Variant v;
  v.label = text;
  if (text.rfind("sb:", 0) == 0) {
    double sigma = 0;
    try {
      size_t used = 0;
      sigma = std::stod(text.substr(3), &used);
      CNF_CHECK(used == text.size() - 3 && std::isfinite(sigma) && sigma > 0, "bad");
    } catch (const std::exception&) {
      fail("variant '", text, "': sb:SIGMA needs a number SIGMA > 0 (e.g. sb:0.5)");
    }
    v.label = "sb:" + shortest_number(sigma);
    v.apply = [sigma](train::FlowSpec&, train::TrainOptions& o) {
      o.coupling = "sb";
      o.bridge_sigma = sigma;
    };
    return v;
  }
  CNF_CHECK(text == "independent" || text == "exact", "variant '", text,
            "' is not independent, exact or sb:SIGMA");
  v.apply = [text](train::FlowSpec&, train::TrainOptions& o) { o.coupling = text; };
  return v;
}

const std::vector<Study>& studies() {
  static const std::vector<Study> all = {
      {"time-weighting",
       "time sampling / weighting",
       "Flow matching's time density and weighting (uniform, logit-normal, CosMap, EDM's "
       "log-normal; Esser et al. 2024): W2 by solver and NFE, exact NLL/KL, over seeds. A variant "
       "is SAMPLING or SAMPLING/WEIGHTING (time-density specs: uniform, logit-normal:m=0,s=1, "
       "cosine, log-normal:m=-1.2,s=1.2)",
       {"uniform", "logit-normal", "uniform/logit-normal", "cosine", "uniform/cosine",
        "log-normal"},
       time_variant},
      {"schedules",
       "path / objective",
       "The affine paths (condot, cosine, vp, subvp, ve at two settings) under flow matching and "
       "score matching: W2 by solver and NFE, exact NLL/KL, over seeds. A variant is SCHEDULE or "
       "SCHEDULE/score",
       {"condot", "cosine", "vp", "vp:beta_max=10", "subvp", "ve", "ve:sigma_max=50", "cosine-abar",
        "vp/score", "cosine-abar/score", "ve/score"},
       schedule_variant},
      {"parameterizations",
       "objective / network predicts",
       "What the network predicts (velocity, noise, data, score, v) under flow matching and "
       "score matching on one path (--schedule): W2 by solver and NFE, exact NLL/KL, over seeds. "
       "A variant is OBJECTIVE/PARAM",
       {"fm/velocity", "fm/noise", "fm/data", "fm/v", "score/noise", "score/data", "score/score",
        "score/v"},
       param_variant},
      {"bridge",
       "coupling",
       "SB-CFM over its bridge sigma from large to small against OT-CFM (exact, the sigma -> 0 "
       "limit) and independent pairs: W2, path energy, NFE, training cost, over seeds. A variant "
       "is independent, exact or sb:SIGMA",
       {"independent", "sb:2", "sb:1", "sb:0.5", "sb:0.25", "sb:0.1", "exact"},
       bridge_variant},
  };
  return all;
}

struct Task {
  std::string spec;
  int64_t dim = 2;
  std::string label() const { return dim == 2 ? spec : spec + "@" + std::to_string(dim); }
};

Task parse_task(const std::string& text) {
  Task t;
  const auto at = text.find('@');
  t.spec = text.substr(0, at);
  if (at != std::string::npos) {
    try {
      size_t used = 0;
      t.dim = std::stoll(text.substr(at + 1), &used);
      CNF_CHECK(used == text.size() - at - 1 && t.dim > 0, "bad");
    } catch (const std::exception&) {
      fail("--tasks: '", text, "' is not SPEC@DIM with DIM a positive integer");
    }
  }
  data::make_source(t.spec, t.dim);  // an unknown data set fails before any training
  return t;
}

const int64_t kEulerSteps[] = {4, 8, 16};

// The settings a run's figures depend on besides its data, variant and seed.
std::string budget_of(const StudyArgs& a, const std::string& schedule) {
  return "steps=" + std::to_string(a.steps) + ",n=" + std::to_string(a.n) +
         ",nll_n=" + std::to_string(a.nll_n) + ",tol=" + shortest_number(a.tol) +
         (schedule.empty() ? "" : ",schedule=" + schedule);
}

// The run of one (task, variant, seed), evaluated. `schedule` is the study's path (the
// parameterizations study; empty: the default or the variant's).
json run_one(const StudyArgs& a, const std::string& study, const std::string& schedule,
             const Task& task, const Variant& variant, uint64_t seed, torch::Device device) {
  train::FlowSpec spec;
  spec.data = task.spec;
  if (!schedule.empty()) spec.schedule = schedule;
  if (task.dim > 2) spec.model.width = 128;  // the 2-D default (64) is small for 32 dimensions
  auto o = study_options(a.steps, seed, device);
  variant.apply(spec, o);
  auto split = data::split_source(task.spec, task.dim, 2 * a.n, 0.1, seed);
  auto prior = data::make_source("normal", task.dim);
  train::Trainer trainer(spec, o, split.train, prior);
  const double secs = train_with_progress(
      trainer, study + ": " + task.label() + " " + variant.label + " seed " + std::to_string(seed),
      !a.quiet);
  auto net = trainer.ema_model();
  net->eval();
  auto field = trainer.ema_velocity();
  const auto param = trainer.spec().network_param();
  const auto& path = *trainer.schedule();
  auto h = halves(split.holdout);
  EvalArgs e;
  e.n = h.a.size(0);
  e.method = "dopri5";
  e.rtol = e.atol = a.tol;
  if (param != path::Param::velocity) {
    // A converted network is finite only on the conversion range (its noise or data
    // prediction divides by alpha_t or sigma_t): integrate there, from sigma_hi x_1, as the
    // diffusion samplers do; velocity networks run over [0, 1].
    const auto range = path::conversion_range(path);
    e.sampler.t_start = range.hi;
    e.sampler.t_end = range.lo;
  }
  auto accurate = evaluate(*net, param, path, *prior, h, e, seed, device);
  json r = {{"task", task.label()}, {"variant", variant.label},
            {"seed", seed},         {"budget", budget_of(a, schedule)},
            {"w2", accurate.w2},    {"w2_floor", accurate.w2_floor},
            {"nfe", accurate.nfe},  {"steps_per_second", a.steps / std::max(secs, 1e-9)}};
  for (int64_t k : kEulerSteps) {
    e.method = "euler";
    e.steps = k;
    r["w2_euler" + std::to_string(k)] = evaluate(*net, param, path, *prior, h, e, seed, device).w2;
  }
  auto gen = stream_generator(seed, Stream::time_study);
  // Path energy over squared transport cost (1: straight constant-speed paths), dopri5.
  auto x_1 = prior->sample(e.n, gen).to(device);
  r["energy"] =
      rectify::straightness(*field, path, x_1, ode::SolveOptions::of("dopri5", 1, a.tol, a.tol))
          .normalized_energy;
  // The exact held-out NLL (dopri5 at the same tolerance, exact divergence) in nats per point,
  // from where the network was trained (FlowSpec::likelihood_start).
  density::LikelihoodOptions lo;
  lo.solve.adaptive.rtol = lo.solve.adaptive.atol = a.tol;
  lo.t_start = trainer.spec().likelihood_start();
  auto points = h.b.slice(0, 0, std::min(a.nll_n, h.b.size(0)));
  auto ll = density::log_likelihood(*field, path, *prior, points.to(device), lo, gen);
  r["nll"] = -ll.log_prob.mean().item<double>();
  auto truth = data::make_source(task.spec, task.dim);
  if (truth->has_log_prob()) {
    // KL(p_data || p_model) = E_data[log p_data - log p_model], on the same points.
    const double data_nll = -truth->log_prob(points.to(torch::kFloat64)).mean().item<double>();
    r["kl"] = r["nll"].get<double>() - data_nll;
  }
  return r;
}

std::string key_of(const json& r) {
  return r["task"].get<std::string>() + "|" + r["variant"].get<std::string>() + "|" +
         std::to_string(r["seed"].get<uint64_t>()) + "|" + r["budget"].get<std::string>();
}

// The runs a previous invocation finished (one JSON object per line of runs.jsonl); a line
// cut short by an interruption is ignored, and its run repeated.
std::map<std::string, json> finished_runs(const std::string& path) {
  std::map<std::string, json> done;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    try {
      json r = json::parse(line);
      done[key_of(r)] = r;
    } catch (const std::exception&) {
    }
  }
  return done;
}

int run_study(const Study& study, StudyArgs a, const std::string& schedule) {
  if (a.quick) {
    a.steps = 60;
    a.n = 128;
    a.nll_n = 32;
    a.tol = 1e-3;
    a.seeds = "0";
  }
  auto device = setup(a.common);
  std::vector<Task> tasks;
  for (const auto& t : split_list(a.tasks, ',')) tasks.push_back(parse_task(t));
  std::vector<Variant> variants;
  for (const auto& v : a.variants.empty() ? study.variants : a.variants)
    variants.push_back(study.parse(v));
  const auto seeds = parse_seeds(a.seeds);
  CNF_CHECK(!tasks.empty() && !seeds.empty(), "--tasks and --seeds must not be empty");
  CNF_CHECK(a.steps > 0 && a.n >= 4 && a.nll_n > 0 && a.tol > 0,
            "--steps, --nll-n and --tol must be > 0 and -n at least 4");
  make_dir(a.out);
  const std::string log_path = a.out + "/runs.jsonl";
  auto done = finished_runs(log_path);
  const size_t total = tasks.size() * variants.size() * seeds.size();
  size_t reused = 0;
  std::ofstream log(log_path, std::ios::app);
  CNF_CHECK(log.good(), "cannot append to '", log_path, "'; choose a writable --out");

  std::string table = "| data | " + study.column +
                      " | W2 dopri5 (floor) | W2 Euler 4 | W2 Euler 8 | W2 Euler 16 | dopri5 NFE "
                      "| NLL (nats) | KL | path energy | steps/s |\n"
                      "|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::string csv =
      "task,variant,seed,w2,w2_floor,w2_euler4,w2_euler8,w2_euler16,nfe,nll,kl,energy,"
      "steps_per_second\n";
  json results = json::array();
  for (const auto& task : tasks) {
    std::vector<io::Line> lines;
    double floor_sum = 0;
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      const auto& variant = variants[vi];
      std::map<std::string, Stat> stats;
      double floor = 0;
      for (uint64_t seed : seeds) {
        json r = {{"task", task.label()},
                  {"variant", variant.label},
                  {"seed", seed},
                  {"budget", budget_of(a, schedule)}};
        const auto it = done.find(key_of(r));
        if (it != done.end()) {
          r = it->second;
          ++reused;
        } else {
          r = run_one(a, study.name, schedule, task, variant, seed, device);
          log << r.dump() << "\n" << std::flush;
        }
        for (const char* k : {"w2", "w2_euler4", "w2_euler8", "w2_euler16", "nfe", "nll", "kl",
                              "energy", "steps_per_second"})
          if (r.contains(k)) stats[k].v.push_back(r[k].get<double>());
        floor = r["w2_floor"].get<double>();
        std::string line = task.label() + "," + variant.label + "," + std::to_string(seed);
        for (const char* k : {"w2", "w2_floor", "w2_euler4", "w2_euler8", "w2_euler16", "nfe",
                              "nll", "kl", "energy", "steps_per_second"})
          line += "," + (r.contains(k) ? shortest_number(r[k].get<double>()) : std::string());
        csv += line + "\n";
        results.push_back(std::move(r));
      }
      const auto kl = stats.count("kl") ? stats["kl"].fmt("%.3f ± %.3f") : std::string("–");
      char row[1024];
      std::snprintf(
          row, sizeof row, "| %s | %s | %s (%.3f) | %s | %s | %s | %s | %s | %s | %s | %s |\n",
          task.label().c_str(), variant.label.c_str(), stats["w2"].fmt("%.3f ± %.3f").c_str(),
          floor, stats["w2_euler4"].fmt("%.3f ± %.3f").c_str(),
          stats["w2_euler8"].fmt("%.3f ± %.3f").c_str(),
          stats["w2_euler16"].fmt("%.3f ± %.3f").c_str(), stats["nfe"].fmt("%.0f ± %.0f").c_str(),
          stats["nll"].fmt("%.3f ± %.3f").c_str(), kl.c_str(),
          stats["energy"].fmt("%.3f ± %.3f").c_str(),
          stats["steps_per_second"].fmt("%.0f ± %.0f").c_str());
      table += row;
      if (!a.quiet) std::fprintf(stderr, "%s", row);
      // W2 against NFE: Euler at 4, 8, 16 steps as a line, the accurate solve (dopri5) as a
      // square of the same color.
      io::Line euler, accurate;
      for (int64_t k : kEulerSteps) {
        euler.x.push_back(static_cast<double>(k));
        euler.y.push_back(stats["w2_euler" + std::to_string(k)].mean());
      }
      euler.label = variant.label;
      euler.color = accurate.color = static_cast<int>(vi);
      euler.marker = 0;
      euler.dash = static_cast<int>(vi / 10);
      accurate.x = {stats["nfe"].mean()};
      accurate.y = {stats["w2"].mean()};
      accurate.marker = 1;
      lines.push_back(std::move(euler));
      lines.push_back(std::move(accurate));
      floor_sum += floor;
    }
    io::ChartOptions po;
    double lo = INFINITY, hi = 0;
    for (const auto& l : lines)
      for (double v : l.y)
        if (std::isfinite(v) && v > 0) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
    // W2 from 0, so that gaps read as ratios; on a log axis when a variant fails by orders of
    // magnitude (it would flatten the others into the floor).
    if (hi > 20 * lo)
      po.yscale = io::Scale::log10;
    else
      po.range[2] = 0;
    po.xscale = io::Scale::log2;
    po.title = task.label() + ": W2 vs NFE (lines: Euler 4/8/16 steps; squares: dopri5)";
    po.xlabel = "NFE (network evaluations per sample)";
    po.ylabel = "W2 to held-out data (mean of seeds)";
    po.references = {{floor_sum / static_cast<double>(variants.size()), "W2 floor"}};
    std::string file = task.label();
    for (auto& ch : file)
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    io::line_chart_png(a.out + "/w2_vs_nfe_" + file + ".png", lines, po);
  }
  io::write_text_atomic(a.out + "/" + study.name + ".md", table);
  io::write_text_atomic(a.out + "/results.csv", csv);
  std::vector<std::string> labels;
  for (const auto& v : variants) labels.push_back(v.label);
  json j = {{"study", study.name}, {"results", results}, {"steps", a.steps}, {"n", a.n},
            {"nll_n", a.nll_n},    {"tol", a.tol},       {"seeds", seeds},   {"tasks", a.tasks},
            {"variants", labels}};
  if (!schedule.empty()) j["schedule"] = schedule;
  io::write_text_atomic(a.out + "/results.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  std::printf("%s", table.c_str());
  std::printf("%zu of %zu runs reused from %s\n", reused, total, log_path.c_str());
  std::printf("wrote %s/{%s.md, results.json, results.csv, w2_vs_nfe_*.png}\n", a.out.c_str(),
              study.name.c_str());
  return 0;
}

}  // namespace

std::function<int()> add_training_studies(CLI::App* experiment) {
  std::vector<std::function<int()>> runners;
  for (const auto& study : studies()) {
    auto a = std::make_shared<StudyArgs>();
    a->out = "out/" + study.name;
    auto schedule = std::make_shared<std::string>();
    auto* cmd = experiment->add_subcommand(study.name, study.help);
    add_common(cmd, a->common);
    cmd->add_option("--tasks", a->tasks,
                    "Comma-separated data sets, SPEC or SPEC@DIM (gmm:8@32: 32 dimensions)")
        ->capture_default_str();
    const auto parse = study.parse;
    std::string defaults;
    for (const auto& v : study.variants) defaults += (defaults.empty() ? "" : " ") + v;
    cmd->add_option("--variant", a->variants,
                    "A compared choice (see above); repeat the flag for each. Default: " + defaults)
        ->check(parsed_by([parse](const std::string& v) { parse(v); }));
    if (study.name == "parameterizations") {
      *schedule = "vp";
      cmd->add_option("--schedule", *schedule, "The path every variant trains on")
          ->capture_default_str()
          ->check(parsed_by([](const std::string& v) { path::make_schedule(v); }));
    }
    cmd->add_option("--seeds", a->seeds, "Comma-separated seeds")->capture_default_str();
    cmd->add_option("--steps", a->steps, "Training steps per model")->capture_default_str();
    cmd->add_option("-n,--n", a->n, "Samples and held-out points per W2")->capture_default_str();
    cmd->add_option("--nll-n", a->nll_n, "Held-out points of the exact NLL")->capture_default_str();
    cmd->add_option("--tol", a->tol, "rtol = atol of dopri5 (samples, NLL, path energy)")
        ->capture_default_str();
    cmd->add_flag("--quick", a->quick,
                  "Seconds-long smoke run: 60 steps, 128 points, one seed, tolerance 1e-3");
    cmd->add_option("--out", a->out,
                    "Output folder; finished runs in its runs.jsonl are reused (resume)")
        ->capture_default_str();
    cmd->add_flag("--quiet", a->quiet, "No progress output");
    runners.push_back([cmd, a, schedule, &study]() {
      return cmd->parsed() ? run_study(study, *a, *schedule) : -1;
    });
  }
  return [runners]() {
    for (const auto& run : runners)
      if (const int rc = run(); rc >= 0) return rc;
    return -1;
  };
}

}  // namespace cnf::app
