// Optimal-transport benchmarks (issue 6). Random points uniform in [0, 1]^2, one thread
// (bench_main.cpp sets it). Run: ./build/cnf_bench --benchmark_filter='Ot'
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "cnf/core/runtime.h"
#include "cnf/coupling/coupling.h"
#include "cnf/data/sources.h"
#include "cnf/ot/emd.h"
#include "cnf/ot/sinkhorn.h"
#include "cnf/train/trainer.h"

using namespace cnf;

namespace {
std::pair<at::Tensor, at::Tensor> uniform_points(int64_t n) {
  auto g = make_generator(0);
  auto a = torch::rand({n, 2}, g, torch::kFloat64);
  auto b = torch::rand({n, 2}, g, torch::kFloat64);
  return {a, b};
}
}  // namespace

// Exact OT of n uniform points to n (automatic solver: the assignment solver). The cost
// matrix is included, as a user of ot::emd pays for it.
static void BM_OtExact(benchmark::State& state) {
  auto [a, b] = uniform_points(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(ot::emd(a, b).cost);
}
BENCHMARK(BM_OtExact)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);

// The same problems by LEMON's network simplex, for comparison.
static void BM_OtExactNetworkSimplex(benchmark::State& state) {
  auto [a, b] = uniform_points(state.range(0));
  for (auto _ : state)
    benchmark::DoNotOptimize(
        ot::emd(a, b, ot::Cost::sqeuclidean, ot::ExactSolver::network_simplex).cost);
}
BENCHMARK(BM_OtExactNetworkSimplex)->Arg(1024)->Unit(benchmark::kMillisecond);

// Log-domain Sinkhorn, epsilon = 0.05, stopping at L1 marginal error 1e-6 (checked every
// 10 iterations); float64.
static void BM_OtSinkhorn(benchmark::State& state) {
  auto [a, b] = uniform_points(state.range(0));
  ot::SinkhornOptions o;
  o.epsilon = 0.05;
  int64_t iterations = 0;
  for (auto _ : state) {
    auto r = ot::sinkhorn(a, b, ot::Cost::sqeuclidean, o);
    iterations = r.iterations;
    benchmark::DoNotOptimize(r.cost);
  }
  state.counters["iterations"] = static_cast<double>(iterations);
}
BENCHMARK(BM_OtSinkhorn)->Arg(1024)->Unit(benchmark::kMillisecond);

// OT-CFM training steps per second at batch 256 on the foundation's 2-D model
// (3-64-64-64-2 SELU MLP, 8gaussians -> moons), next to BM_TrainStep's independent coupling.
static void BM_OtTrainStepCoupling(benchmark::State& state) {
  train::FlowSpec spec;
  spec.model.width = 64;
  spec.model.depth = 3;
  spec.model.activation = "selu";
  spec.data = "moons";
  spec.prior = "8gaussians";
  train::TrainOptions o;
  o.batch_size = 256;
  o.steps = 1 << 30;
  o.coupling = state.range(0) == 0 ? "exact" : (state.range(0) == 1 ? "sinkhorn" : "sb");
  train::Trainer t(spec, o, data::make_source("moons"), data::make_source("8gaussians"));
  for (int i = 0; i < 20; ++i) t.step();
  for (auto _ : state) benchmark::DoNotOptimize(t.step().loss);
  state.SetItemsProcessed(state.iterations());  // items/s = steps/s
  state.SetLabel(o.coupling);
}
BENCHMARK(BM_OtTrainStepCoupling)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
