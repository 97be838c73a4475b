// apps/cnf/train_report.cpp — the report after `cnf train` / `cnf demo`: the final sampling
// (sharded over the ranks of a group), samples.npy, the plots and metrics.json.
#include "apps/cnf/train_report.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cnf/images.h"
#include "apps/cnf/report.h"
#include "cnf/data/images.h"
#include "cnf/density/density.h"
#include "cnf/io/files.h"
#include "cnf/io/plot.h"
#include "cnf/metrics/distances.h"
#include "cnf/ode/solve.h"

namespace cnf::app {
namespace {

// Samples the trained flow with every rank of `group` transporting its share of the noise
// (its own generator; adaptive solvers choose their steps per rank); rank 0 gathers and
// scores the samples, the other ranks get samples undefined. `rank_nfe` gets each rank's NFE.
Evaluation evaluate_sharded(nn::VelocityFieldImpl& model, path::Param param,
                            const path::Schedule& schedule, const data::Source& prior,
                            const Holdout& h, const TrainArgs& a, torch::Device device,
                            dist::Group& group, const ode::Observer& observer,
                            std::vector<int64_t>& rank_nfe) {
  const int world = group.world_size();
  const bool rank0 = group.rank() == 0;
  const int64_t n = h.a.size(0), per = (n + world - 1) / world;
  auto gen =
      stream_generator(a.common.seed, Stream::evaluation, static_cast<uint64_t>(group.rank()));
  auto x_1 = prior.sample(per, gen).to(device);
  auto so = a.eval.sampler_options();
  if (rank0) so.ode.observer = observer;
  auto s0 = std::chrono::steady_clock::now();
  auto r = draw_samples(model, param, schedule, x_1, so, gen);
  auto all = group.all_gather(r.x.to(torch::kCPU).contiguous()).flatten(0, 1).slice(0, 0, n);
  auto nfe = group.all_gather(torch::tensor({r.nfe}, torch::kLong));
  Evaluation ev;
  ev.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
  if (!rank0) return ev;  // rank 0 writes every output
  for (int64_t k = 0; k < world; ++k) rank_nfe.push_back(nfe[k][0].item<int64_t>());
  ev.nfe = *std::max_element(rank_nfe.begin(), rank_nfe.end());
  ev.samples = all;
  check_finite(ev.samples, "generated samples");
  ev.w2 = metrics::w2(ev.samples, h.a);
  ev.w2_floor = metrics::w2(h.b, h.a);
  ev.mmd2 = metrics::mmd2(ev.samples, h.a);
  return ev;
}

}  // namespace

torch::Tensor model_log_prob(const train::Trainer& trainer, const data::Source& prior,
                             const torch::Tensor& x, uint64_t seed, uint64_t stream) {
  auto field = trainer.ema_velocity();
  density::LikelihoodOptions o;
  o.t_start = trainer.spec().likelihood_start();
  o.divergence.method = field->has_analytic_divergence() ? density::Divergence::analytic
                        : x[0].numel() <= 16             ? density::Divergence::exact
                                                         : density::Divergence::hutchinson;
  auto gen = stream_generator(seed, Stream::evaluation, stream);
  return density::log_likelihood(*field, *trainer.schedule(), prior, x, o, gen).log_prob;
}

namespace {

// The box of the 2-D plots.
constexpr double kPlotLo = -5, kPlotHi = 5;

// Options of a plot over the data plane (x1, x2), `width` x `height` pixels per panel.
io::PlotOptions plane_options(int width, int height) {
  io::PlotOptions po;
  po.width = width;
  po.height = height;
  po.xlabel = "x1";
  po.ylabel = "x2";
  return po;
}

// For 2-D data: the model's exact log-density (density::log_likelihood: dopri5 at rtol = atol
// = 1e-5, exact or analytic divergence, from the spec's likelihood start) at the centres of a
// 100 x 100 grid over the plot box, row 0 at the top; written as density_grid.npy [100, 100]
// and drawn as density.png (log-density, its lowest 12 nats below the peak clipped) beside
// the histogram of the samples on the same grid.
void write_density_map(const TrainArgs& a, const train::Trainer& trainer, const data::Source& prior,
                       torch::Device device, const torch::Tensor& samples) {
  const int64_t g = 100;
  const double cell = (kPlotHi - kPlotLo) / static_cast<double>(g);
  auto centres = torch::linspace(kPlotLo + cell / 2, kPlotHi - cell / 2, g, torch::kFloat32);
  auto yy = centres.flip(0).view({g, 1}).expand({g, g});
  auto xx = centres.view({1, g}).expand({g, g});
  auto grid = torch::stack({xx.reshape({-1}), yy.reshape({-1})}, 1).to(device);
  auto logp = model_log_prob(trainer, prior, grid, a.common.seed, 1)
                  .reshape({g, g})
                  .to(torch::kCPU, torch::kFloat64);
  io::write_npy(a.out + "/density_grid.npy", logp.to(torch::kFloat32));
  const double peak = logp.max().item<double>();
  const io::PlotOptions po = plane_options(520, 480);
  io::heatmaps_png(
      a.out + "/density.png",
      {{logp.clamp_min(peak - 12.0), "model log-density (exact, dopri5 1e-5)",
        "log p(x), clipped 12 nats below the peak"},
       {io::histogram_2d(samples.slice(1, 0, 2), g, kPlotLo, kPlotHi),
        "histogram of " + std::to_string(samples.size(0)) + " samples", "samples per cell"}},
      {kPlotLo, kPlotHi, kPlotLo, kPlotHi}, po);
}

// samples.png (held-out data beside the samples), trajectories.png and sample_density.png (a
// 2-D histogram of the samples) for data of two or more dimensions; a grid for image data.
void write_sample_plots(const TrainArgs& a, const train::FlowSpec& spec, const Holdout& h,
                        const Evaluation& ev, const std::vector<torch::Tensor>& traj) {
  if (data::is_image_spec(spec.data)) {
    write_sample_grid(a.out + "/samples.png", spec, ev.samples);
    return;
  }
  if (ev.samples.size(1) < 2) return;
  auto proj = [](const torch::Tensor& x) { return x.slice(1, 0, 2); };
  io::PlotOptions po = plane_options(500, 500);
  io::panels_png(
      a.out + "/samples.png",
      {{{proj(h.a), {31, 119, 180}, "held-out data"}},
       {{proj(ev.samples), {214, 39, 40}, "samples"}}},
      {"held-out data", "samples (" + a.eval.label() + ", " + std::to_string(ev.nfe) + " NFE)"},
      po);
  po.title = "trajectories t=1 (noise) to t=0 (data)";
  // Only the ODE samplers report their steps to the observer.
  if (!traj.empty())
    io::trajectories_png(a.out + "/trajectories.png", torch::stack(traj).slice(2, 0, 2), po);
  po.title = "sample density (histogram)";
  po.colorbar_label = "samples per cell";
  io::heatmap_png(a.out + "/sample_density.png",
                  io::histogram_2d(proj(ev.samples), 100, kPlotLo, kPlotHi),
                  {kPlotLo, kPlotHi, kPlotLo, kPlotHi}, po);
}

// nfe.png: the NFE of the training solve at each step (mle).
void write_nfe_plot(const std::string& out, const TrainRun& run) {
  if (run.nfe_values.empty()) return;
  io::Line nfe{run.nfe_steps, run.nfe_values, "NFE of the step's solve"};
  nfe.marker = -2;
  nfe.width = 1.2;
  io::ChartOptions o;
  o.title = "Maximum likelihood: NFE of the training solve per step";
  o.xlabel = "step";
  o.ylabel = "NFE (forward solve)";
  io::line_chart_png(out + "/nfe.png", {nfe}, o);
}

// metrics.json of a run.
json train_metrics(const TrainArgs& a, const train::Trainer& trainer, const TrainRun& run,
                   const Evaluation& ev, int world, double param_diff,
                   const std::vector<int64_t>& rank_nfe) {
  const double secs = std::max(run.seconds, 1e-9);
  const auto global_batch = trainer.shards() * a.opt.batch_size;
  json j = {
      {"w2", ev.w2},
      {"w2_floor", ev.w2_floor},
      {"mmd2", ev.mmd2},
      {"nfe", ev.nfe},
      {"method", a.eval.label()},
      {"n_eval", ev.samples.size(0)},
      {"train_seconds", run.seconds},
      {"train_steps", trainer.steps_done()},
      {"steps_per_second", a.opt.steps / secs},
      {"sample_seconds", ev.seconds},
      {"final_loss", run.last_loss},
      {"data", a.spec.data},
      {"prior", a.spec.prior},
      {"schedule", a.spec.schedule},
      {"objective", trainer.spec().objective},
      {"param", trainer.spec().param},
      {"threads", a.common.threads},
      {"world_size", world},
      {"shards", trainer.shards()},
      {"global_batch", global_batch},
      {"samples_per_second", static_cast<double>(global_batch) *
                                 static_cast<double>(trainer.steps_done() - run.first_step) / secs},
      {"allreduce_seconds", run.collective_seconds},
      {"allreduce_share", run.collective_seconds / secs},
      {"rank_param_max_diff", param_diff}};
  if (!rank_nfe.empty()) j["nfe_per_rank"] = rank_nfe;
  if (const auto report = trainer.coupling_report(); !report.empty()) j["coupling_report"] = report;
  if (!run.nfe_values.empty()) {
    j["train_nfe_last"] = run.nfe_values.back();
    j["train_nfe_mean"] = std::accumulate(run.nfe_values.begin(), run.nfe_values.end(), 0.0) /
                          static_cast<double>(run.nfe_values.size());
  }
  return j;
}

void print_train_report(const TrainArgs& a, const train::Trainer& trainer, const TrainRun& run,
                        const Evaluation& ev, bool demo) {
  std::printf("%s %s -> %s, %s path, %lld steps in %.1f s (%.0f steps/s, %d thread%s)\n",
              demo ? "demo:" : "trained", a.spec.prior.c_str(), a.spec.data.c_str(),
              a.spec.schedule.c_str(), static_cast<long long>(trainer.steps_done()), run.seconds,
              a.opt.steps / std::max(run.seconds, 1e-9), a.common.threads,
              a.common.threads == 1 ? "" : "s");
  std::printf(
      "W2(samples, held-out) = %.4f   floor W2(held-out, held-out) = %.4f   "
      "MMD^2 = %.2e   NFE = %lld (%s)\n",
      ev.w2, ev.w2_floor, ev.mmd2, static_cast<long long>(ev.nfe), a.eval.label().c_str());
  if (const auto report = trainer.coupling_report(); !report.empty())
    std::printf("%s\n", report.c_str());
  std::printf(
      "wrote %s/{model.pt, config.toml, samples.npy, metrics.json, train_log.csv, loss.png%s}\n",
      a.out.c_str(),
      data::is_image_spec(a.spec.data) ? ", samples.png (image grid)"
      : ev.samples.size(1) == 2        ? ", samples.png, trajectories.png, density.png, "
                                         "density_grid.npy, sample_density.png"
      : ev.samples.size(1) > 2         ? ", samples.png, trajectories.png, sample_density.png"
                                       : "");
}

}  // namespace

// Samples the trained flow (EMA weights when kept) from t = 1 to 0, scores it against the
// held-out data and writes samples, plots and metrics (rank 0). Returns the exit code.
int evaluate_and_report(const TrainArgs& a, train::Trainer& trainer, const TrainRun& run,
                        const data::DataSplit& split, const data::Source& prior, dist::Group* group,
                        torch::Device device, double param_diff, bool demo) {
  auto model = trainer.ema_model();
  model->eval();
  const auto& schedule = trainer.schedule();
  auto h = halves(split.holdout);
  const int64_t n_traj = std::min<int64_t>(h.a.size(0), 300);
  std::vector<torch::Tensor> traj;
  auto observer = [&](double, const ode::State& y) {
    traj.push_back(y[0].slice(0, 0, n_traj).to(torch::kCPU));
  };
  const auto param = trainer.spec().network_param();
  std::vector<int64_t> rank_nfe;
  const Evaluation ev =
      group ? evaluate_sharded(*model, param, *schedule, prior, h, a, device, *group, observer,
                               rank_nfe)
            : evaluate(*model, param, *schedule, prior, h, a.eval, a.common.seed, device, observer);
  if (group && group->rank() != 0) return 0;  // rank 0 writes every output
  io::write_npy(a.out + "/samples.npy", ev.samples);
  write_sample_plots(a, trainer.spec(), h, ev, traj);
  if (ev.samples.size(1) == 2 && !data::is_image_spec(trainer.spec().data))
    write_density_map(a, trainer, prior, device, ev.samples);
  write_nfe_plot(a.out, run);
  write_loss_plot(a.out);
  const json j =
      train_metrics(a, trainer, run, ev, group ? group->world_size() : 1, param_diff, rank_nfe);
  io::write_text_atomic(a.out + "/metrics.json", j.dump(2) + "\n");
  write_json(a.common.json, j);
  print_train_report(a, trainer, run, ev, demo);
  return 0;
}

}  // namespace cnf::app
