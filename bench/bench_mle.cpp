// One maximum-likelihood training iteration through the ODE (issue: simulation-based CNF
// training): batch 512, MLP 3-64-64-64-2 tanh, dopri5 at rtol = atol = 1e-5, one
// Hutchinson probe; gradients by backprop (arg 0) or the adjoint (arg 1). The network is
// first trained for 30 iterations on 8gaussians so the NFE is that of a training state,
// not of the initialization. Counters: forward NFE per iteration.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "cnf/data/sources.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/train/trainer.h"

using namespace cnf;

static void BM_MleIteration(benchmark::State& state) {
  train::FlowSpec spec;
  spec.model.width = 64;
  spec.model.depth = 3;
  spec.model.activation = "tanh";
  spec.data = "8gaussians";
  spec.objective = "mle";
  train::TrainOptions o;
  o.batch_size = 512;
  o.steps = 1 << 30;
  o.lr = 1e-3;
  o.mle.adjoint = state.range(0) == 1;
  // range(1): 1 = the forward-mode JVP route (default), 0 = double backward (--fast-mlp off).
  nn::fast::set_enabled(state.range(1) == 1);
  train::Trainer t(spec, o, data::make_source("8gaussians"), data::make_source("normal", 2));
  for (int i = 0; i < 30; ++i) t.step();
  double nfe = 0;
  for (auto _ : state) nfe += t.step().diagnostics.at("nfe").item<double>();
  state.counters["nfe"] = nfe / static_cast<double>(state.iterations());
  state.SetLabel(std::string(state.range(0) == 1 ? "adjoint" : "backprop") +
                 (state.range(1) == 1 ? ", forward-mode JVP" : ", double backward"));
  nn::fast::set_enabled(true);
}
BENCHMARK(BM_MleIteration)
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
