// cnf benchmarks (Google Benchmark). Run: make bench   (or ./build/cnf_bench)
// One LibTorch thread unless CNF_BENCH_THREADS says otherwise; OpenBLAS held at one.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/metrics/distances.h"
#include "cnf/ode/adjoint.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

using namespace cnf;

namespace {
train::FlowSpec issue_spec() {
  // MLP 3-64-64-64-2 (x and t concatenated), SELU, 8gaussians -> moons.
  train::FlowSpec spec;
  spec.model.width = 64;
  spec.model.depth = 3;
  spec.model.activation = "selu";
  spec.data = "moons";
  spec.prior = "8gaussians";
  return spec;
}
}  // namespace

// Training steps per second: data draws, coupling, loss, backward, Adam, all included.
static void BM_TrainStep(benchmark::State& state) {
  train::TrainOptions o;
  o.batch_size = state.range(0);
  o.steps = 1 << 30;
  train::Trainer t(issue_spec(), o, data::make_source("moons"), data::make_source("8gaussians"));
  for (int i = 0; i < 20; ++i) t.step();  // warm-up: allocator and first-touch
  for (auto _ : state) benchmark::DoNotOptimize(t.step().loss);
  state.SetItemsProcessed(state.iterations());  // items/s = steps/s
}
BENCHMARK(BM_TrainStep)->Arg(256)->Unit(benchmark::kMicrosecond);

// Sampling: n points, 100 Euler steps (no autograd graph).
static void BM_SampleEuler100(benchmark::State& state) {
  torch::manual_seed(0);
  auto model = nn::make_model(issue_spec().model);
  auto schedule = path::make_schedule("condot");
  auto x = torch::randn({state.range(0), 2});
  ode::SolveOptions so;
  so.method = "euler";
  so.steps = 100;
  for (auto _ : state) benchmark::DoNotOptimize(train::generate(*model, *schedule, x, so).y[0]);
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SampleEuler100)->Arg(10000)->Unit(benchmark::kMillisecond);

// The foundation's 2-D model, trained once (3,000 steps, N(0, I) -> moons) for the
// sampling benchmarks below: trained weights, not the initialization, set the cost.
static train::Trainer& trained() {
  static train::Trainer* t = [] {
    auto spec = issue_spec();
    spec.prior = "normal";
    train::TrainOptions o;
    o.steps = 3000;
    o.lr = 2e-3;
    auto* tr = new train::Trainer(spec, o, data::make_source("moons"), data::make_source("normal"));
    tr->run();
    return tr;
  }();
  return *t;
}

static void BM_SampleTrainedEuler100(benchmark::State& state) {
  auto model = trained().model();
  auto schedule = path::make_schedule("condot");
  auto x = torch::randn({state.range(0), 2});
  ode::SolveOptions so;
  so.steps = 100;
  for (auto _ : state) benchmark::DoNotOptimize(train::generate(*model, *schedule, x, so).y[0]);
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SampleTrainedEuler100)->Arg(10000)->Unit(benchmark::kMillisecond);

// dopri5 at rtol = atol = 1e-4: time per function evaluation is the figure of interest.
static void BM_SampleTrainedDopri5(benchmark::State& state) {
  auto model = trained().model();
  auto schedule = path::make_schedule("condot");
  auto x = torch::randn({state.range(0), 2});
  ode::SolveOptions so;
  so.method = "dopri5";
  so.adaptive.rtol = so.adaptive.atol = 1e-4;
  int64_t nfe = 0;
  for (auto _ : state) {
    auto sol = train::generate(*model, *schedule, x, so);
    nfe = sol.nfe;
    benchmark::DoNotOptimize(sol.y[0]);
  }
  state.counters["nfe"] = static_cast<double>(nfe);
  state.counters["us_per_nfe"] =
      benchmark::Counter(static_cast<double>(nfe) * state.iterations() / 1e6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_SampleTrainedDopri5)->Arg(1000)->Unit(benchmark::kMillisecond);

// NLL of 10,000 2-D points with the trained model, dopri5 at rtol = atol = 1e-5, per
// divergence route (0 exact, 1 analytic, 2 Hutchinson with one probe).
static void BM_NllTrained2D(benchmark::State& state) {
  auto model = trained().model();
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(2);
  auto g = make_generator(0);
  auto x = data::make_source("moons")->sample(10000, g);
  density::LikelihoodOptions o;
  o.divergence.method = static_cast<density::Divergence>(state.range(0));
  int64_t nfe = 0;
  for (auto _ : state) {
    auto r = density::log_likelihood(*model, *schedule, prior, x, o, g);
    nfe = r.nfe;
  }
  state.counters["nfe"] = static_cast<double>(nfe);
}
BENCHMARK(BM_NllTrained2D)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// Cost of the divergence routes against dimension: rk4, 10 fixed steps, 2,000 points of
// a gmm:4 in `dim` dimensions, a freshly initialized network. Args: route, dim.
static void nll_by_dim(benchmark::State& state, nn::ModelSpec spec) {
  const int64_t dim = state.range(1);
  spec.dim = dim;
  torch::manual_seed(0);
  auto model = nn::make_model(spec);
  auto schedule = path::make_schedule("condot");
  data::StandardNormal prior(dim);
  auto g = make_generator(0);
  auto x = data::make_source("gmm:4", dim)->sample(2000, g);
  density::LikelihoodOptions o;
  o.solve.method = "rk4";
  o.solve.steps = 10;
  o.divergence.method = static_cast<density::Divergence>(state.range(0));
  for (auto _ : state)
    benchmark::DoNotOptimize(density::log_likelihood(*model, *schedule, prior, x, o, g).log_prob);
}

// The default 64-wide MLP.
static void BM_NllRouteByDim(benchmark::State& state) { nll_by_dim(state, nn::ModelSpec()); }
BENCHMARK(BM_NllRouteByDim)->ArgsProduct({{0, 1, 2}, {2, 16, 64}})->Unit(benchmark::kMillisecond);

// The hollow network (nn/hollow.h; 16 units per dimension block, two conditioner layers),
// whose exact divergence is read off the forward pass.
static void BM_NllHollowByDim(benchmark::State& state) {
  nn::ModelSpec spec;
  spec.arch = "hollow";
  spec.width = 16;
  spec.depth = 2;
  spec.activation = "tanh";
  nll_by_dim(state, spec);
}
BENCHMARK(BM_NllHollowByDim)
    ->ArgsProduct({{1, 2}, {2, 16, 64}})
    ->Args({0, 2})
    ->Args({0, 16})  // autograd at dim 64 takes ~45 s
    ->Unit(benchmark::kMillisecond);

// Exact W2 by network simplex between two n-point clouds.
static void BM_ExactW2(benchmark::State& state) {
  auto g = make_generator(0);
  auto a = torch::randn({state.range(0), 2}, g, torch::kFloat32);
  auto b = torch::randn({state.range(0), 2}, g, torch::kFloat32);
  for (auto _ : state) benchmark::DoNotOptimize(metrics::w2(a, b));
}
BENCHMARK(BM_ExactW2)->Arg(500)->Arg(1000)->Unit(benchmark::kMillisecond);

// Peak resident memory of this process in MiB (VmHWM).
static double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

// cnf_bench --adjoint-memory STEPS adjoint|backprop: one loss gradient through an rk4
// solve of 2,000 points with the 3-64-64-64-2 MLP; prints the process's peak RSS.
static int adjoint_memory(int64_t steps, const std::string& mode) {
  torch::manual_seed(0);
  auto model = nn::make_model(issue_spec().model);
  auto x = torch::randn({2000, 2});
  ode::SolveOptions so;
  so.method = "rk4";
  so.steps = steps;
  auto rhs = ode::field_rhs(*model);
  ode::State y = mode == "adjoint" ? ode::solve_adjoint(rhs, {x}, model->parameters(), 1.0, 0.0, so)
                                   : ode::solve(rhs, {x}, 1.0, 0.0, so).y;
  y[0].pow(2).sum().backward();
  std::printf("%s steps=%lld peak_rss_mib=%.1f grad_norm=%.6g\n", mode.c_str(),
              static_cast<long long>(steps), peak_rss_mib(),
              model->parameters()[0].grad().norm().item<double>());
  return 0;
}

int main(int argc, char** argv) {
  const char* env = std::getenv("CNF_BENCH_THREADS");
  set_threads(env ? std::atoi(env) : 1);
  if (argc == 4 && std::string(argv[1]) == "--adjoint-memory")
    return adjoint_memory(std::atoll(argv[2]), argv[3]);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
