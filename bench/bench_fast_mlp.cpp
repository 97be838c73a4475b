// The fused CPU MLP path side by side with LibTorch's kernels (issue: a fused CPU fast
// path). MLP 3-64-64-64-2 (x and t concatenated). Args: activation (0 selu, 1 tanh),
// fast path (1 on, 0 off), LibTorch threads.
//   ./build/cnf_bench --benchmark_filter=FastMlp
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "cnf/data/sources.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/nn/velocity.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"

using namespace cnf;

namespace {

const char* act_name(int64_t a) { return a == 0 ? "selu" : "tanh"; }

train::FlowSpec spec_for(int64_t act) {
  train::FlowSpec spec;
  spec.model.width = 64;
  spec.model.depth = 3;
  spec.model.activation = act_name(act);
  spec.data = "moons";
  spec.prior = "normal";
  return spec;
}

// Sets the switch and threads for one benchmark; restores the defaults afterwards.
struct Setting {
  Setting(benchmark::State& state) {
    nn::fast::set_enabled(state.range(1) == 1);
    at::set_num_threads(static_cast<int>(state.range(2)));
    label = std::string(act_name(state.range(0))) + (state.range(1) ? " fused" : " libtorch") +
            " threads=" + std::to_string(state.range(2));
    state.SetLabel(label);
  }
  std::string label;
  ~Setting() {
    nn::fast::set_enabled(true);
    at::set_num_threads(1);
  }
};

}  // namespace

// 100 Euler steps carrying 10,000 points from the prior to data (no autograd graph).
static void BM_FastMlpEuler100(benchmark::State& state) {
  Setting setting(state);
  torch::manual_seed(0);
  auto model = nn::make_model(spec_for(state.range(0)).model);
  auto schedule = path::make_schedule("condot");
  auto x = torch::randn({10000, 2});
  ode::SolveOptions so;
  so.method = "euler";
  so.steps = 100;
  for (auto _ : state) benchmark::DoNotOptimize(train::generate(*model, *schedule, x, so).y[0]);
}
BENCHMARK(BM_FastMlpEuler100)
    ->ArgsProduct({{0, 1}, {0, 1}, {1}})
    ->Args({0, 1, 2})
    ->Args({0, 0, 2})
    ->Unit(benchmark::kMillisecond);

// Conditional flow matching training steps at batch 256 (data, path, loss, backward, Adam).
static void BM_FastMlpTrainStep(benchmark::State& state) {
  Setting setting(state);
  train::TrainOptions o;
  o.batch_size = 256;
  o.steps = 1 << 30;
  auto spec = spec_for(state.range(0));
  train::Trainer t(spec, o, data::make_source("moons"), data::make_source("normal"));
  for (int i = 0; i < 20; ++i) t.step();  // warm-up: allocator and first-touch
  for (auto _ : state) benchmark::DoNotOptimize(t.step().loss);
  state.SetItemsProcessed(state.iterations());  // items/s = steps/s
}
BENCHMARK(BM_FastMlpTrainStep)->ArgsProduct({{0, 1}, {0, 1}, {1}})->Unit(benchmark::kMicrosecond);

// One forward pass (arg 3 = 0) or the exact divergence with the forward pass (arg 3 = 1)
// of the 2-D model at 10,000 points.
static void BM_FastMlpDivergence(benchmark::State& state) {
  Setting setting(state);
  torch::manual_seed(0);
  auto model = nn::MLPVelocity(nn::MLPOptions(2).activation(act_name(state.range(0))));
  auto x = torch::randn({10000, 2});
  auto t = torch::rand({10000});
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    if (state.range(3) == 1)
      benchmark::DoNotOptimize(model->forward_with_divergence(x, t).second);
    else
      benchmark::DoNotOptimize(model->forward(x, t));
  }
  state.SetLabel(setting.label + (state.range(3) ? " divergence" : " forward"));
}
BENCHMARK(BM_FastMlpDivergence)
    ->ArgsProduct({{0, 1}, {0, 1}, {1}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);
