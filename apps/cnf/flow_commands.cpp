// apps/cnf/flow_commands.cpp — the verbs that use a trained flow: `cnf sample`, `cnf eval`,
// `cnf nll` (exact log-likelihoods, bits/dim) and `cnf score` (the score along trajectories).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cnf/common.h"
#include "apps/cnf/dist_args.h"
#include "apps/cnf/evaluation.h"
#include "apps/cnf/flow_source.h"
#include "apps/cnf/images.h"
#include "apps/cnf/verbs.h"
#include "cnf/data/images.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/density/image_density.h"
#include "cnf/io/files.h"
#include "cnf/ode/solve.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

namespace cnf::app {
namespace {

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
                  "Divergence route (exact: autograd, analytic: through the layers of an mlp or "
                  "hollow network): " +
                      density::divergences().joined_names())
      ->capture_default_str()
      ->check(names_of(density::divergences()));
  sub->add_option("--probes", d.probes, "Hutchinson probes, fixed through each solve")
      ->capture_default_str();
  sub->add_flag("--gaussian-probes", d.gaussian_probes, "Gaussian instead of Rademacher probes");
}

density::LikelihoodOptions likelihood_options(const EvalArgs& e, const DensityArgs& d,
                                              const train::Checkpoint& c) {
  const nn::VelocityFieldImpl& model = *c.model;
  density::LikelihoodOptions o;
  o.solve = e.solve_options();
  // Start where the network was trained (1e-3 on vp/subvp, the conversion range's start
  // for score models): LikelihoodOptions::t_start.
  o.t_start = c.spec.likelihood_start();
  o.divergence.method = density::parse_divergence(d.divergence);
  // The analytic route exists for the MLP and the hollow network; others fall back to
  // autograd.
  if (o.divergence.method == density::Divergence::analytic && !model.has_analytic_divergence())
    o.divergence.method = density::Divergence::exact;
  o.divergence.probes = d.probes;
  o.divergence.gaussian = d.gaussian_probes;
  return o;
}

// --out of a verb that writes one array: a .npy file.
void check_npy_out(const std::string& out) {
  CNF_CHECK(out.size() > 4 && out.substr(out.size() - 4) == ".npy",
            "--out must name a .npy file, got '", out, "'");
}

// The rows of --points (.npy or .csv) as float32, of the flow's dimension.
at::Tensor read_points(const std::string& points, const train::Checkpoint& c,
                       const std::string& flow_name) {
  auto x = io::read_table(points).to(torch::kFloat32);
  CNF_CHECK(x.size(1) == c.spec.model.dim, "points in '", points, "' have dimension ", x.size(1),
            " but the model in '", flow_name, "' has ", c.spec.model.dim);
  return x;
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
  check_npy_out(a.out);
  auto c = load_flow(a.source, device);
  const auto& prior = c.prior;
  auto gen = stream_generator(a.common.seed, Stream::sampling);
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
  CNF_CHECK(a.grid.empty() || images, "--grid needs an image model; '", a.source.name(),
            "' models '", c.spec.data, "'");
  const bool per_row = a.eval.sampler.more.per_row;
  CNF_CHECK(!a.with_logp || !per_row, "--with-logp integrates the log-density alongside with one ",
            "shared step; drop --per-row or --with-logp");
  auto t0 = std::chrono::steady_clock::now();
  ode::Solution sol;
  double nfe_per_row = -1;  // set when the sampler reports it (sde::SampleResult)
  torch::Tensor logp;
  if (a.with_logp) {
    // log rho_0 of each sample from its own trajectory (instantaneous change of variables).
    DensityArgs d;
    d.divergence = a.divergence;
    auto r = density::sample_with_log_prob(*c.model, *c.schedule, *prior, x_1,
                                           likelihood_options(a.eval, d, c), gen);
    sol.y = ode::State{r.x};
    sol.nfe = r.nfe;
    logp = r.log_prob.to(torch::kCPU);
  } else {
    auto net = with_labels(c.network, labels.defined() ? labels.to(device) : labels, a.guidance);
    auto r =
        draw_samples(*net, c.spec.network_param(), *c.schedule, x_1, a.eval.sampler_options(), gen);
    sol.y = ode::State{r.x};
    sol.nfe = r.nfe;
    nfe_per_row = r.nfe_per_row;
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
    write_sample_grid(grid, c.spec, x, 100,
                      labels.defined() && a.label == "all" ? c.spec.model.classes : 10);
    std::printf("wrote a grid of the samples to %s\n", grid.c_str());
  }
  char row_note[64] = "";
  if (per_row) std::snprintf(row_note, sizeof row_note, ", %.1f evaluations per row", nfe_per_row);
  std::printf("wrote %lld samples to %s (%s, NFE %lld%s, %.3f s)\n", static_cast<long long>(n),
              a.out.c_str(), a.eval.label().c_str(), static_cast<long long>(sol.nfe), row_note,
              secs);
  json j{{"n", n}, {"nfe", sol.nfe}, {"method", a.eval.label()}, {"seconds", secs}, {"out", a.out}};
  if (nfe_per_row >= 0) j["nfe_per_row"] = nfe_per_row;
  write_json(a.common.json, j);
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
  const auto& prior = c.prior;
  auto ev = evaluate(*c.network, c.spec.network_param(), *c.schedule, *prior,
                     checkpoint_holdout(c, a.source.name(), spec, a.dim, a.eval.n, a.common.seed),
                     a.eval, a.common.seed, device);
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
  std::string points, out;  // --points: these rows instead of held-out data; --out: log rho_0
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
            split.train->dim(), " pixels but the model in '", a.source.name(), "' has ",
            c.spec.model.dim);
  const int64_t n = std::min(a.eval.n, split.test.levels.size(0));
  const auto& prior = c.prior;
  auto o = likelihood_options(a.eval, a.density, c);
  auto gen = stream_generator(a.common.seed, Stream::likelihood);
  auto t0 = std::chrono::steady_clock::now();
  auto r = density::image_bits_per_dim(*c.model, *c.schedule, *prior, *split.train,
                                       split.test.levels.slice(0, 0, n), a.dequant_samples, o, gen);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "bits/dim = %.4f +- %.4f (n = %lld test images, %lld uniform dequantization "
      "sample%s each, %s, %s divergence, from t = %g, NFE %lld, %.1f s)\n",
      r.bpd.mean, r.bpd.stderr, static_cast<long long>(n),
      static_cast<long long>(a.dequant_samples), a.dequant_samples == 1 ? "" : "s",
      split.train->transform().name().c_str(), a.density.divergence.c_str(), o.t_start,
      static_cast<long long>(r.nfe), secs);
  write_json(a.common.json, {{"bits_per_dim", r.bpd.mean},
                             {"bits_per_dim_stderr", r.bpd.stderr},
                             {"n", n},
                             {"dequantization_samples", a.dequant_samples},
                             {"transform", split.train->transform().name()},
                             {"divergence", a.density.divergence},
                             {"t_start", o.t_start},
                             {"nfe", r.nfe},
                             {"seconds", secs},
                             {"data", spec}});
  return 0;
}

// log rho_0 of the rows of `x` with every rank of `group` integrating its share of the rows
// (its own solver steps and probes); rank 0 gathers them (the other ranks get log_prob
// undefined). `rank_nfe` gets each rank's NFE.
density::LikelihoodResult log_likelihood_sharded(const train::Checkpoint& c,
                                                 const data::Source& prior, const at::Tensor& x,
                                                 const density::LikelihoodOptions& o,
                                                 at::Generator& gen, uint64_t seed,
                                                 dist::Group& group,
                                                 std::vector<int64_t>& rank_nfe) {
  // Rank k integrates rows [k m, (k + 1) m) with its own solver (adaptive steps chosen
  // per rank) and its own probes; rank 0 gathers the log-densities (padded to m rows).
  const int world = group.world_size(), rank = group.rank();
  const int64_t n = x.size(0), m = (n + world - 1) / world;
  const int64_t lo = std::min(n, rank * m), hi = std::min(n, lo + m);
  CNF_CHECK(hi > lo, "-n ", n, " held-out points leave rank ", rank, " of ", world,
            " without rows; use -n >= ", world);
  auto gen_k = rank == 0 ? gen : stream_generator(seed, Stream::likelihood, rank);
  auto mine = density::log_likelihood(*c.model, *c.schedule, prior, x.slice(0, lo, hi), o, gen_k);
  auto pad = [&](const at::Tensor& t) {
    auto out = torch::zeros({m}, torch::kFloat64);
    out.slice(0, 0, hi - lo).copy_(t.to(torch::kCPU, torch::kFloat64).reshape({-1}));
    return out;
  };
  auto all = group.all_gather(pad(mine.log_prob)).reshape({-1}).slice(0, 0, n);
  auto nfe = group.all_gather(torch::tensor({mine.nfe}, torch::kLong));
  density::LikelihoodResult r;
  if (rank != 0) return r;
  for (int k = 0; k < world; ++k) rank_nfe.push_back(nfe[k][0].item<int64_t>());
  r.log_prob = all;
  r.nfe = *std::max_element(rank_nfe.begin(), rank_nfe.end());
  return r;
}

// Prints and writes (--json) the NLL of `x`, the Hutchinson spread and bits/dim.
void report_nll(const NllArgs& a, const density::LikelihoodResult& r,
                const density::LikelihoodOptions& o, const at::Tensor& x, const std::string& spec,
                double secs, const std::vector<int64_t>& rank_nfe) {
  auto nll = density::mean_and_stderr(-r.log_prob.to(torch::kCPU));
  // The route that ran (analytic falls back to autograd for networks other than the MLP).
  const std::string route = density::divergence_name(o.divergence.method);
  json j = {{"nll", nll.mean},     {"nll_stderr", nll.stderr}, {"n", x.size(0)},  {"nfe", r.nfe},
            {"divergence", route}, {"method", a.eval.method},  {"seconds", secs}, {"data", spec},
            {"t_start", o.t_start}};
  if (!rank_nfe.empty()) j["nfe_per_rank"] = rank_nfe;
  std::printf(
      "NLL = %.4f +- %.4f nats/sample (n = %lld, %s divergence, %s from t = %g, NFE %lld, "
      "%.2f s)\n",
      nll.mean, nll.stderr, static_cast<long long>(x.size(0)), route.c_str(), a.eval.method.c_str(),
      o.t_start, static_cast<long long>(r.nfe), secs);
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
}

int run_nll(const NllArgs& a) {
  auto device = setup(a.common);
  auto c = load_flow(a.source, device);
  const std::string spec = a.data.empty() ? c.spec.data : a.data;
  auto group = join_group(a.dist);
  if (a.points.empty() && data::is_image_spec(spec)) {
    CNF_CHECK(!group, "cnf nll of an image model runs in one process; drop --nproc/--rank");
    return run_image_nll(a, c, spec, device);
  }
  if (!a.out.empty()) check_npy_out(a.out);
  at::Tensor x;
  if (a.points.empty()) {
    x = checkpoint_holdout(c, a.source.name(), spec, a.dim, a.eval.n, a.common.seed).a;
  } else {
    CNF_CHECK(a.data.empty(), "--points and --data both name the points; drop one");
    x = read_points(a.points, c, a.source.name());
    check_finite(x, "points in '" + a.points + "'");
  }
  auto gen = stream_generator(a.common.seed, Stream::likelihood);
  if (a.bins > 0) x = density::dequantize(x, a.bins, gen);
  const auto& prior = c.prior;
  auto o = likelihood_options(a.eval, a.density, c);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int64_t> rank_nfe;
  const auto r =
      group
          ? log_likelihood_sharded(c, *prior, x.to(device), o, gen, a.common.seed, *group, rank_nfe)
          : density::log_likelihood(*c.model, *c.schedule, *prior, x.to(device), o, gen);
  if (group && group->rank() != 0) return 0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report_nll(a, r, o, x, a.points.empty() ? spec : a.points, secs, rank_nfe);
  if (!a.out.empty()) {
    io::write_npy(a.out, r.log_prob.to(torch::kCPU, torch::kFloat64).reshape({-1}));
    std::printf("wrote log rho_0 of each point to %s\n", a.out.c_str());
  }
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
  check_npy_out(a.out);
  auto c = load_flow(a.source, device);
  auto x = read_points(a.points, c, a.source.name());
  const auto& prior = c.prior;
  auto o = likelihood_options(a.eval, a.density, c);
  auto s = density::score(*c.model, *c.schedule, *prior, x.to(device), a.t, o);
  io::write_npy(a.out, s.to(torch::kCPU));
  std::printf("wrote the score grad log rho_t at t = %g of %lld points to %s\n", a.t,
              static_cast<long long>(x.size(0)), a.out.c_str());
  write_json(a.common.json, {{"n", x.size(0)}, {"t", a.t}, {"out", a.out}});
  return 0;
}

struct EntropyArgs {
  Common common;
  EvalArgs eval;
  DensityArgs density;
  FlowSource source;
};

// H(rho_0) = -E log rho_0 over n samples of the flow, each with its exact log-density from
// its own trajectory (density::entropy), with the standard error.
int run_entropy(const EntropyArgs& a) {
  auto device = setup(a.common);
  auto c = load_flow(a.source, device);
  const auto& prior = c.prior;
  auto o = likelihood_options(a.eval, a.density, c);
  auto gen = stream_generator(a.common.seed, Stream::likelihood);
  auto t0 = std::chrono::steady_clock::now();
  const auto h = density::entropy(*c.model, *c.schedule, *prior, a.eval.n, o, gen);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string route = density::divergence_name(o.divergence.method);
  std::printf("H = %.4f +- %.4f nats (n = %lld samples, %s divergence, %s from t = %g, %.2f s)\n",
              h.mean, h.stderr, static_cast<long long>(a.eval.n), route.c_str(),
              a.eval.method.c_str(), o.t_start, secs);
  write_json(a.common.json, {{"entropy", h.mean},
                             {"entropy_stderr", h.stderr},
                             {"n", a.eval.n},
                             {"divergence", route},
                             {"method", a.eval.method},
                             {"t_start", o.t_start},
                             {"seconds", secs}});
  return 0;
}

// A verb that integrates a loaded flow with its divergence (nll, score, entropy): its
// arguments with dopri5 by default and the flags every such verb takes.
template <class Args>
std::pair<std::shared_ptr<Args>, CLI::App*> add_density_verb(CLI::App& app, const char* name,
                                                             const char* help,
                                                             const std::string& n_help) {
  auto args = std::make_shared<Args>();
  args->eval.method = "dopri5";
  auto* cmd = app.add_subcommand(name, help);
  add_common(cmd, args->common);
  add_flow_source(cmd, args->source);
  add_eval(cmd, args->eval, n_help, "");
  add_density(cmd, args->density);
  return {args, cmd};
}

CLI::App* add_sample_verb(CLI::App& app, SampleArgs& a) {
  auto* sample_cmd = app.add_subcommand("sample", "Draw samples from a trained flow");
  add_common(sample_cmd, a.common);
  add_flow_source(sample_cmd, a.source);
  sample_cmd->add_option("--noise", a.noise,
                         "Start from these prior draws x_1 (.npy or .csv, [N, dim]; unit scale) "
                         "instead of -n fresh ones");
  sample_cmd->add_option("--out", a.out, "Output .npy file")->required();
  add_eval(sample_cmd, a.eval, "Number of samples", "");
  add_sampler_options(sample_cmd, a.eval.sampler, "");
  sample_cmd->add_flag("--with-logp", a.with_logp,
                       "Also write log rho_0 of each sample (OUT_logp.npy), same trajectory");
  sample_cmd
      ->add_option("--divergence", a.divergence,
                   "Divergence for --with-logp: " + density::divergences().joined_names())
      ->capture_default_str()
      ->check(names_of(density::divergences()));
  sample_cmd->add_option("--label", a.label,
                         "Class-conditional models: a class number, or 'all' (cycles through the "
                         "classes); default: unconditional");
  sample_cmd
      ->add_option("--guidance", a.guidance,
                   "Classifier-free guidance weight w: (1 + w) v(x|c) - w v(x) (0: plain "
                   "conditional)")
      ->capture_default_str();
  sample_cmd->add_option("--grid", a.grid,
                         "Image models: PNG grid of the samples (default: OUT with .png)");
  return sample_cmd;
}

void add_nll_options(CLI::App* cmd, NllArgs& a) {
  cmd->add_option("--data", a.data, "Data spec (default: the model's held-out data)");
  cmd->add_option("--points", a.points,
                  "Points to evaluate (.npy or .csv, [N, dim]; all rows) instead of held-out "
                  "data");
  cmd->add_option("--out", a.out, "Also write log rho_0 of each point (.npy)");
  cmd->add_option("--dim", a.dim, "Dimension for normal/gmm data (default: model's)");
  cmd->add_option("--bins", a.bins,
                  "Data are integer levels 0..bins-1: dequantize uniformly, report bits/dim")
      ->capture_default_str();
  cmd->add_option("--dequant-samples", a.dequant_samples,
                  "Image models: uniform dequantization draws per test image")
      ->capture_default_str();
  add_dist(cmd, a.dist);
}

}  // namespace

Runner add_flow_commands(CLI::App& app) {
  auto sample_args = std::make_shared<SampleArgs>();
  auto* sample_cmd = add_sample_verb(app, *sample_args);

  auto nll = add_density_verb<NllArgs>(
      app, "nll",
      "Exact negative log-likelihood of held-out data (instantaneous change of variables)",
      "Held-out points (image models: test images)");
  auto nll_args = nll.first;
  auto* nll_cmd = nll.second;
  add_nll_options(nll_cmd, *nll_args);

  auto score = add_density_verb<ScoreArgs>(
      app, "score", "The score grad log rho_t at given points (instantaneous change of score)",
      "unused");
  auto score_args = score.first;
  auto* score_cmd = score.second;
  score_cmd->add_option("--points", score_args->points, "Points (.npy or .csv, [N, dim])")
      ->required();
  score_cmd->add_option("--t", score_args->t, "Time in [0, 1)")->capture_default_str();
  score_cmd->add_option("--out", score_args->out, "Output .npy file")->required();

  auto entropy = add_density_verb<EntropyArgs>(
      app, "entropy", "Entropy -E log rho_0 of the flow's samples, with its standard error",
      "Samples");
  auto entropy_args = entropy.first;
  auto* entropy_cmd = entropy.second;

  auto eval_args = std::make_shared<EvalCmdArgs>();
  auto* eval_cmd = app.add_subcommand("eval", "W2 and MMD of a trained flow against held-out data");
  add_common(eval_cmd, eval_args->common);
  add_flow_source(eval_cmd, eval_args->source);
  eval_cmd->add_option("--data", eval_args->data, "Held-out data spec (default: the model's)");
  eval_cmd->add_option("--dim", eval_args->dim, "Dimension for normal/gmm data (default: model's)");
  add_eval(eval_cmd, eval_args->eval, "Samples (W2 against as many held-out points)", "");
  add_sampler_options(eval_cmd, eval_args->eval.sampler, "");

  // The flow-source flags are checked as soon as they are parsed (before any work).
  for (auto [cmd, source] :
       {std::pair{sample_cmd, &sample_args->source}, std::pair{eval_cmd, &eval_args->source},
        std::pair{nll_cmd, &nll_args->source}, std::pair{score_cmd, &score_args->source},
        std::pair{entropy_cmd, &entropy_args->source}})
    cmd->parse_complete_callback([source = source] { check_flow_source(*source); });

  return [=]() -> int {
    if (nll_cmd->parsed() && wants_launch(nll_args->dist))
      return launch_workers(nll_args->dist.nproc, nll_args->dist.dist_timeout + 10.0);
    if (sample_cmd->parsed()) return run_sample(*sample_args);
    if (eval_cmd->parsed()) return run_eval(*eval_args);
    if (nll_cmd->parsed()) return run_nll(*nll_args);
    if (score_cmd->parsed()) return run_score(*score_args);
    if (entropy_cmd->parsed()) return run_entropy(*entropy_args);
    return -1;
  };
}

}  // namespace cnf::app
