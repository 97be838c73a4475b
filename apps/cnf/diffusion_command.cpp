// The diffusion side of the cnf command: sampler flags (cnf sample / eval / train) and
// `cnf experiment samplers` (W2 to held-out data versus NFE for every sampler).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "cnf/core/spec.h"
#include "cnf/data/sources.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/metrics/distances.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

namespace {
// A check that a number lies in [lo, hi] (lo excluded when `open`), saying so in its words.
CLI::Validator number_in(double lo, double hi, bool open, const std::string& note) {
  return parsed_by([=](const std::string& v) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    const bool ok = end != v.c_str() && *end == '\0' && std::isfinite(x) && x <= hi &&
                    (open ? x > lo : x >= lo);
    CNF_CHECK(ok, "'", v, "' must be a number ", open ? "> " : ">= ", lo,
              std::isfinite(hi) ? " and <= " + shortest_number(hi) : std::string(), " (", note,
              ")");
  });
}
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

void add_sampler_options(CLI::App* sub, SamplerArgs& s, const std::string& prefix) {
  const std::string p = "--" + prefix;
  sub->add_option(p + "sampler", s.sampler,
                  "Sampler (ode: the velocity ODE by --method, pf-ode: f x - g^2 score / 2, em: "
                  "backward SDE by Euler-Maruyama, pc: predictor-corrector, dpm*: DPM-Solver; all "
                  "but ode and pf-ode take --steps steps): " +
                      sde::samplers().joined_names())
      ->capture_default_str()
      ->check(names_of(sde::samplers()));
  sub->add_option(p + "eta", s.eta, "DDIM noise: 0 deterministic, 1 ancestral")
      ->capture_default_str()
      ->check(number_in(0, 1, false, "0 deterministic, 1 ancestral"));
  sub->add_option(p + "snr", s.snr, "Signal-to-noise ratio of the pc Langevin corrector")
      ->capture_default_str()
      ->check(number_in(0, kInf, true, "Song et al. use 0.16"));
  sub->add_option(p + "corrector-steps", s.corrector_steps, "Langevin steps per pc step")
      ->capture_default_str()
      ->check(number_in(0, kInf, false, "0: no corrector"));
  sub->add_option(p + "predictor", s.predictor,
                  "pc predictor: " + sde::pc_predictors().joined_names())
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { sde::parse_pc_predictor(v); }));
  sub->add_option(p + "spacing", s.spacing,
                  "Time grid (auto: lambda for ddim/dpm*/unipc/deis, karras for heun, time for "
                  "em/pc): " +
                      sde::spacings().joined_names())
      ->capture_default_str()
      ->check(names_of(sde::spacings()));
  sub->add_option(p + "rho", s.more.rho, "Exponent of the karras spacing (Karras et al.: 7)")
      ->capture_default_str()
      ->check(number_in(0, kInf, true, "Karras et al. use 7"));
  sub->add_option(p + "train-steps", s.more.train_steps,
                  "Training timesteps N the leading/trailing/linspace spacings pick from (0: the "
                  "schedule's own for ddpm-*, else 1000)")
      ->capture_default_str()
      ->check(number_in(0, kInf, false, "0: the schedule's own"));
  sub->add_option(p + "lower-order-final", s.more.lower_order_final,
                  "Multistep samplers lower their order on the last steps of runs under 15 steps")
      ->capture_default_str();
  sub->add_option(p + "threshold", s.more.threshold,
                  "Dynamic thresholding of the data prediction at this quantile of |x0| (0: off; "
                  "Imagen: 0.995)")
      ->capture_default_str()
      ->check(number_in(0, 1, false, "0: off; Imagen uses 0.995"));
  sub->add_option(p + "threshold-bound", s.more.threshold_bound,
                  "The data bound of dynamic thresholding (1 for data in [-1, 1])")
      ->capture_default_str()
      ->check(number_in(0, kInf, true, "1 for data in [-1, 1]"));
  sub->add_option(p + "churn", s.more.churn,
                  "heun: stochastic churn S_churn (0: deterministic; Karras et al. 0-80)")
      ->capture_default_str()
      ->check(number_in(0, kInf, false, "0: deterministic"));
  sub->add_option(p + "churn-sigma-min", s.more.churn_sigma_min,
                  "heun: churn only where sigma/alpha >= this")
      ->capture_default_str()
      ->check(number_in(0, kInf, false, "a sigma/alpha level"));
  sub->add_option(p + "churn-sigma-max", s.more.churn_sigma_max,
                  "heun: churn only where sigma/alpha <= this (default: no limit)")
      ->check(number_in(0, kInf, false, "a sigma/alpha level"));
  sub->add_flag(p + "per-row", s.more.per_row,
                "Adaptive methods with the ode sampler: every row its own step size and time "
                "(finished rows leave the batch); NFE per row is reported beside the calls");
  sub->add_option(p + "churn-noise", s.more.churn_noise,
                  "heun: S_noise, the scale of churn's fresh noise")
      ->capture_default_str()
      ->check(number_in(0, kInf, false, "Karras et al. use 1.003-1.007"));
  sub->add_option(p + "t-start", s.t_start,
                  "Start time (default: 1 for ode, else where alpha_t >= 1e-3)");
  sub->add_option(p + "t-end", s.t_end,
                  "End time (default: 0 for ode, else where sigma_t >= 1e-3)");
}

sde::SamplerOptions sampler_options(const SamplerArgs& s, int64_t steps,
                                    const ode::SolveOptions& solve) {
  sde::SamplerOptions o = s.more;
  o.sampler = sde::samplers().get(s.sampler);
  o.steps = steps;
  o.eta = s.eta;
  o.snr = s.snr;
  o.corrector_steps = s.corrector_steps;
  o.predictor = sde::parse_pc_predictor(s.predictor);
  o.spacing = sde::parse_spacing(s.spacing);
  o.t_start = s.t_start;
  o.t_end = s.t_end;
  o.ode = solve;
  o.validate();
  return o;
}

sde::SampleResult draw_samples(nn::VelocityFieldImpl& net, path::Param param,
                               const path::Schedule& schedule, const at::Tensor& x_1,
                               const sde::SamplerOptions& options, at::Generator& gen) {
  return sde::sample(net, param, schedule, x_1 * sde::start_scale(schedule, options), options, gen);
}

// ------------------------------------------------------------------------ samplers
//
// Song et al. 2021 and Lu et al. 2022: on one trained diffusion model, ODE samplers reach
// good samples in 10-20 steps, SDE samplers need hundreds. W2 to held-out data versus NFE
// for every sampler on the same model and the same prior draws.

namespace {

struct SamplersArgs {
  Common common;
  std::string data = "moons";
  std::string schedule = "vp";
  std::string objective = "score";
  std::string param;
  std::string ckpt;
  int64_t train_steps = 5000;
  int64_t n = 1000;
  std::string steps = "4,8,16,32,64,128,256,512";
  int64_t max_nfe = 1100;
  std::string out = "out/samplers";
  bool quiet = false;
};

std::vector<int64_t> parse_steps(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) {
      try {
        out.push_back(std::stoll(item));
      } catch (const std::logic_error&) {
        fail("--steps must be a comma-separated list of integers, got '", text, "'");
      }
      CNF_CHECK(out.back() >= 1, "--steps entries must be >= 1, got ", out.back());
    }
  CNF_CHECK(!out.empty(), "--steps is empty; give e.g. 4,8,16");
  return out;
}

// The model the study samples: --ckpt, or one trained here on --data/--schedule.
train::Checkpoint samplers_model(const SamplersArgs& a, torch::Device device) {
  if (!a.ckpt.empty()) return train::load_checkpoint(a.ckpt, device);
  train::FlowSpec spec;
  spec.data = a.data;
  spec.schedule = a.schedule;
  spec.objective = a.objective;
  spec.param = a.param;
  auto source = data::make_source(a.data);
  train::Trainer trainer(spec, study_options(a.train_steps, a.common.seed, device), source,
                         data::make_source("normal", source->dim()));
  train_with_progress(trainer, "samplers: training", !a.quiet);
  trainer.save(a.out + "/model.pt");
  return train::load_checkpoint(a.out + "/model.pt", device);
}

struct SamplerRow {
  std::string sampler;
  int64_t steps, nfe;
  double w2, seconds;
};

// Every registered sampler (and DDIM once more at eta = 1) at each step count within the
// NFE budget, from the same noise x_1: W2 to the held-out points and wall time.
std::vector<SamplerRow> sweep_samplers(const SamplersArgs& a, const train::Checkpoint& c,
                                       const torch::Tensor& x_1, const torch::Tensor& held) {
  std::vector<std::pair<std::string, double>> kinds;
  for (const auto& name : sde::samplers().names()) {
    kinds.emplace_back(name, 0.0);
    if (name == "ddim") kinds.emplace_back(name, 1.0);
  }
  std::vector<SamplerRow> rows;
  for (const auto& [name, eta] : kinds) {
    const std::string label = eta > 0 ? name + "(eta=1)" : name;
    for (int64_t k : parse_steps(a.steps)) {
      SamplerArgs sa;
      sa.sampler = name;
      sa.eta = eta;
      auto opt = sampler_options(sa, k, ode::SolveOptions::of("euler", k, 1e-3, 1e-3));
      // The descriptor's cost; the ODE samplers here take k Euler steps of one evaluation.
      const auto& method = opt.sampler.method();
      const int64_t per_step = method.integrates_ode ? 1 : method.evals_per_step(opt);
      if (k * per_step > a.max_nfe) continue;
      auto gen = stream_generator(a.common.seed, Stream::sampler_noise);
      auto t0 = std::chrono::steady_clock::now();
      sde::SampleResult r;
      try {
        r = draw_samples(*c.network, c.spec.network_param(), *c.schedule, x_1, opt, gen);
      } catch (const Error& e) {
        std::fprintf(stderr, "samplers: %s at %lld steps failed: %s\n", label.c_str(),
                     static_cast<long long>(k), e.what());
        continue;
      }
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rows.push_back({label, k, r.nfe, metrics::w2(r.x.to(torch::kCPU), held), secs});
      if (!a.quiet)
        std::fprintf(stderr, "samplers: %-12s steps %4lld  NFE %4lld  W2 %.4f\n", label.c_str(),
                     static_cast<long long>(k), static_cast<long long>(r.nfe), rows.back().w2);
    }
  }
  return rows;
}

std::vector<std::string> row_labels(const std::vector<SamplerRow>& rows) {
  std::vector<std::string> labels;
  for (const auto& r : rows)
    if (std::find(labels.begin(), labels.end(), r.sampler) == labels.end())
      labels.push_back(r.sampler);
  return labels;
}

// Per sampler, W2 of its largest run within each NFE budget (what the budget buys): printed
// and returned.
json budget_table(const std::vector<SamplerRow>& rows) {
  const std::vector<int64_t> budgets = {10, 20, 50, 100, 200, 500, 1000};
  std::printf("%-13s", "sampler");
  for (auto b : budgets) std::printf(" %7s", ("<=" + std::to_string(b)).c_str());
  std::printf("\n");
  json table = json::array();
  for (const auto& label : row_labels(rows)) {
    std::printf("%-13s", label.c_str());
    json row = {{"sampler", label}};
    for (auto b : budgets) {
      double best = -1;
      int64_t best_nfe = -1;
      for (const auto& r : rows)
        if (r.sampler == label && r.nfe <= b && r.nfe > best_nfe) {
          best = r.w2;
          best_nfe = r.nfe;
        }
      if (best < 0)
        std::printf(" %7s", "-");
      else
        std::printf(" %7.4f", best);
      row["nfe<=" + std::to_string(b)] = best < 0 ? json(nullptr) : json(best);
    }
    std::printf("\n");
    table.push_back(row);
  }
  return table;
}

// W2 against NFE on log axes, one line per sampler (distinct color, marker and dash), with
// the finite-sample floor (W2 between two held-out sets) as a reference line.
void plot_samplers(const std::string& path, const std::string& title,
                   const std::vector<SamplerRow>& rows, double floor) {
  std::vector<io::Line> lines;
  for (const auto& label : row_labels(rows)) {
    io::Line l;
    for (const auto& r : rows)
      if (r.sampler == label) {
        l.x.push_back(static_cast<double>(r.nfe));
        l.y.push_back(r.w2);
      }
    l.label = label;
    l.dash = static_cast<int>(lines.size() / 10);
    lines.push_back(std::move(l));
  }
  io::ChartOptions o;
  o.width = 960;  // sixteen samplers: room for the lines and the legend
  o.height = 600;
  o.title = title;
  o.xlabel = "NFE (network evaluations per sample)";
  o.ylabel = "W2 to held-out data";
  o.xscale = io::Scale::log2;
  o.yscale = io::Scale::log10;
  o.references = {{floor, "W2 floor (two held-out sets)"}};
  io::line_chart_png(path, lines, o);
}

int run_samplers(const SamplersArgs& a) {
  auto device = setup(a.common);
  make_dir(a.out);
  parse_steps(a.steps);  // a bad list fails before training
  const train::Checkpoint c = samplers_model(a, device);
  auto split = data::split_source(c.spec.data, c.spec.model.dim, 2 * a.n, 0.1, a.common.seed);
  auto held_a = split.holdout.slice(0, 0, a.n), held_b = split.holdout.slice(0, a.n, 2 * a.n);
  const double floor = metrics::w2(held_b, held_a);
  auto prior_gen = stream_generator(a.common.seed, Stream::evaluation);
  auto x_1 = torch::randn({a.n, c.spec.model.dim}, prior_gen).to(device);
  const auto rows = sweep_samplers(a, c, x_1, held_a);

  std::string csv = "sampler,steps,nfe,w2,seconds\n";
  for (const auto& r : rows) {
    char line[160];
    std::snprintf(line, sizeof line, "%s,%lld,%lld,%.6f,%.4f\n", r.sampler.c_str(),
                  static_cast<long long>(r.steps), static_cast<long long>(r.nfe), r.w2, r.seconds);
    csv += line;
  }
  io::write_text_atomic(a.out + "/samplers.csv", csv);
  std::printf(
      "W2 to %lld held-out points (floor %.4f) of %s %s/%s, largest run within an NFE "
      "budget:\n",
      static_cast<long long>(a.n), floor, c.spec.data.c_str(), c.spec.schedule.c_str(),
      c.spec.param.c_str());
  const json table = budget_table(rows);
  plot_samplers(
      a.out + "/samplers.png",
      "Samplers: W2 vs NFE (" + c.spec.data + ", " + c.spec.schedule + "/" + c.spec.param + ")",
      rows, floor);

  json j = {{"data", c.spec.data},   {"schedule", c.spec.schedule},
            {"param", c.spec.param}, {"n", a.n},
            {"w2_floor", floor},     {"table", table}};
  io::write_text_atomic(a.out + "/results.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  std::printf("wrote %s/{samplers.csv, samplers.png, results.json%s}\n", a.out.c_str(),
              a.ckpt.empty() ? ", model.pt" : "");
  return 0;
}

}  // namespace

std::function<int()> add_sampler_experiment(CLI::App* experiment) {
  auto args = std::make_shared<SamplersArgs>();
  auto* cmd = experiment->add_subcommand(
      "samplers",
      "W2 to held-out data vs NFE of every sampler (ODE, SDE, DDIM, DPM-Solver) on "
      "one trained diffusion model");
  add_common(cmd, args->common);
  cmd->add_option("--data", args->data, "Data set")->capture_default_str();
  cmd->add_option("--schedule", args->schedule, "Path of the trained model")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { path::make_schedule(v); }));
  cmd->add_option("--objective", args->objective, "fm or score")
      ->capture_default_str()
      ->check(one_of({"fm", "score"}, "objective"));
  cmd->add_option(
         "--param", args->param,
         "What the trained network predicts (default: noise for score, velocity for fm): " +
             path::params().joined_names())
      ->check(names_of(path::params()));
  cmd->add_option("--ckpt", args->ckpt, "Use this checkpoint instead of training one");
  cmd->add_option("--train-steps", args->train_steps, "Training steps")->capture_default_str();
  cmd->add_option("-n,--n", args->n, "Samples (W2 against as many held-out points)")
      ->capture_default_str();
  cmd->add_option("--steps", args->steps, "Comma-separated step counts per sampler")
      ->capture_default_str();
  cmd->add_option("--max-nfe", args->max_nfe, "Skip runs above this many evaluations")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output folder")->capture_default_str();
  cmd->add_flag("--quiet", args->quiet, "No progress output");
  return [cmd, args]() { return cmd->parsed() ? run_samplers(*args) : -1; };
}

}  // namespace cnf::app
