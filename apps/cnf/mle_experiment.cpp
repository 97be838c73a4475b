// cnf experiment mle — simulation-based training (maximum likelihood through the ODE, with
// and without transport regularizers) against flow matching on the same network: test NLL,
// NFE and wall time on 2-D sets (FFJORD, Grathwohl et al. 2019; RNODE, Finlay et al. 2020).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "cnf/density/density.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

namespace {

struct MleExperimentArgs {
  Common common;
  std::string data = "checkerboard,8gaussians,pinwheel,2spirals";
  std::string methods = "mle,mle+reg,mle+steepest,fm";
  int64_t mle_steps = 500;
  int64_t fm_steps = 5000;
  int64_t batch_size = 256;
  double reg = 0.01;  // weight of kinetic and Jacobian (mle+reg) and of steepest
  int64_t n = 2000;
  std::string out = "out/mle";
  bool quiet = false;
};

// exp(log rho_0) of the flow on an 80 x 80 grid over [-4, 4]^2, as a heat map.
void plot_density(const std::string& path, const std::string& title, nn::VelocityFieldImpl& model,
                  const path::Schedule& schedule, const data::Source& prior,
                  const density::LikelihoodOptions& lo, at::Generator& gen, torch::Device device) {
  const int g = 80;
  auto lin = torch::linspace(-4, 4, g, torch::kFloat32);
  auto yy = lin.flip(0).view({g, 1}).expand({g, g});
  auto xx = lin.view({1, g}).expand({g, g});
  auto grid = torch::stack({xx.reshape({-1}), yy.reshape({-1})}, 1).to(device);
  auto dens = density::log_likelihood(model, schedule, prior, grid, lo, gen)
                  .log_prob.exp()
                  .reshape({g, g})
                  .to(torch::kCPU);
  io::PlotOptions po;
  po.width = po.height = 400;
  po.title = title;
  io::heatmap_png(path, dens, {-4, 4, -4, 4}, po);
}

// Trains `method` on `set` and measures it: test NLL (exact divergence, dopri5 1e-5), the
// training NFE of its last 10 steps, dopri5's NFE to sample 1,000 points, training time; writes
// the checkpoint and the density map. Returns the result row (printed into the table by the
// caller).
json run_one(const MleExperimentArgs& a, const std::string& set, const std::string& method,
             const data::DataSplit& split, const data::SourcePtr& prior, torch::Device device) {
  train::FlowSpec spec;
  spec.data = set;
  spec.model.width = 64;
  spec.model.depth = 3;
  spec.model.activation = "tanh";
  spec.objective = method == "fm" ? "fm" : "mle";
  train::TrainOptions o = study_options(method == "fm" ? a.fm_steps : a.mle_steps, a.common.seed,
                                        device, method == "fm" ? 2e-3 : 3e-3, 0.0);
  o.batch_size = a.batch_size;
  if (method == "mle+reg") o.mle.kinetic = o.mle.jacobian = a.reg;
  if (method == "mle+steepest") o.mle.steepest = a.reg;
  train::Trainer trainer(spec, o, split.train, prior);
  std::vector<double> nfes;
  const double seconds = train_with_progress(trainer, "mle study: " + set + " " + method, !a.quiet,
                                             10, [&](int64_t, const objective::LossResult& r) {
                                               auto it = r.diagnostics.find("nfe");
                                               if (it != r.diagnostics.end())
                                                 nfes.push_back(it->second.item<double>());
                                             });
  const std::string tag = set + "_" +
                          (method == "mle+reg"        ? "mle-reg"
                           : method == "mle+steepest" ? "mle-steepest"
                                                      : method);
  trainer.save(a.out + "/" + tag + ".pt");
  auto model = trainer.model();
  model->eval();
  const auto& schedule = trainer.schedule();

  density::LikelihoodOptions lo;
  lo.divergence.method = density::Divergence::exact;
  auto gen = stream_generator(a.common.seed, Stream::likelihood);
  auto ll = density::log_likelihood(*model, *schedule, *prior, split.holdout.to(device), lo, gen);
  auto nll = density::mean_and_stderr(-ll.log_prob);
  auto x_1 = prior->sample(1000, gen).to(device);
  const int64_t sample_nfe =
      train::generate(*model, *schedule, x_1, ode::SolveOptions::of("dopri5", 1, 1e-5, 1e-5)).nfe;
  double train_nfe = 0;
  const size_t last = std::min<size_t>(10, nfes.size());
  for (size_t i = nfes.size() - last; i < nfes.size(); ++i) train_nfe += nfes[i] / last;
  plot_density(a.out + "/density_" + tag + ".png", set + ", " + method, *model, *schedule, *prior,
               lo, gen, device);
  return {{"data", set},
          {"method", method},
          {"nll", nll.mean},
          {"nll_stderr", nll.stderr},
          {"train_nfe_last10", nfes.empty() ? json(nullptr) : json(train_nfe)},
          {"sample_nfe", sample_nfe},
          {"train_seconds", seconds},
          {"steps", o.steps}};
}

int run_mle_experiment(const MleExperimentArgs& a) {
  auto device = setup(a.common);
  make_dir(a.out);
  const auto sets = split_list(a.data), methods = split_list(a.methods);
  CNF_CHECK(!sets.empty() && !methods.empty(), "--data and --methods must not be empty");
  for (const auto& m : methods)
    CNF_CHECK(m == "mle" || m == "mle+reg" || m == "mle+steepest" || m == "fm", "unknown method '",
              m, "'; valid: mle, mle+reg, mle+steepest, fm");
  std::string table =
      "| data | method | test NLL (nats) | train NFE (last 10 steps) | sampling NFE (dopri5) | "
      "train time |\n|---|---|---|---|---|---|\n";
  json results = json::array();
  for (const auto& set : sets) {
    auto split = data::split_source(set, 2, a.n, 0.1, a.common.seed);
    auto prior = data::make_source("normal", 2);
    for (const auto& method : methods) {
      const json r = run_one(a, set, method, split, prior, device);
      char row[512];
      std::snprintf(
          row, sizeof row, "| %s | %s | %.3f ± %.3f | %s | %lld | %.0f s (%lld steps) |\n",
          set.c_str(), method.c_str(), r["nll"].get<double>(), r["nll_stderr"].get<double>(),
          r["train_nfe_last10"].is_null()
              ? "–"
              : std::to_string(static_cast<int>(r["train_nfe_last10"].get<double>())).c_str(),
          static_cast<long long>(r["sample_nfe"].get<int64_t>()), r["train_seconds"].get<double>(),
          static_cast<long long>(r["steps"].get<int64_t>()));
      table += row;
      results.push_back(r);
      if (!a.quiet) std::fprintf(stderr, "%s", row);
    }
  }
  io::write_text_atomic(a.out + "/mle.md", table);
  json j = {{"results", results},     {"mle_steps", a.mle_steps},
            {"fm_steps", a.fm_steps}, {"batch_size", a.batch_size},
            {"reg", a.reg},           {"n_test", a.n}};
  io::write_text_atomic(a.out + "/results.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  std::printf("%s", table.c_str());
  std::printf("wrote %s/{mle.md, results.json, density_*.png, *.pt}\n", a.out.c_str());
  return 0;
}

}  // namespace

std::function<int()> add_mle_experiment(CLI::App* experiment) {
  auto a = std::make_shared<MleExperimentArgs>();
  auto* cmd = experiment->add_subcommand(
      "mle",
      "Maximum likelihood (plain, kinetic + Jacobian, steepest flow) vs flow matching: "
      "test NLL, NFE, wall time on 2-D sets");
  add_common(cmd, a->common);
  cmd->add_option("--data", a->data, "Comma-separated 2-D sets")->capture_default_str();
  cmd->add_option("--methods", a->methods, "Comma-separated: mle, mle+reg, mle+steepest, fm")
      ->capture_default_str()
      ->check(one_of({"mle", "mle+reg", "mle+steepest", "fm"}, "method", true));
  cmd->add_option("--mle-steps", a->mle_steps, "Training steps of the MLE models")
      ->capture_default_str();
  cmd->add_option("--fm-steps", a->fm_steps, "Training steps of flow matching")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->batch_size, "Minibatch size")->capture_default_str();
  cmd->add_option("--reg", a->reg, "Regularizer weight (kinetic = jacobian = steepest)")
      ->capture_default_str();
  cmd->add_option("-n,--n", a->n, "Held-out points for the test NLL")->capture_default_str();
  cmd->add_option("--out", a->out, "Output folder")->capture_default_str();
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  return [cmd, a]() { return cmd->parsed() ? run_mle_experiment(*a) : -1; };
}

}  // namespace cnf::app
