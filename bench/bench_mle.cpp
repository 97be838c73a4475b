// One maximum-likelihood training iteration through the ODE (issue: simulation-based CNF
// training): batch 512, MLP 3-64-64-64-2 tanh, dopri5 at rtol = atol = 1e-5, one
// Hutchinson probe; gradients by backprop (arg 0) or the adjoint (arg 1). The network is
// first trained for 30 iterations on 8gaussians so the NFE is that of a training state,
// not of the initialization. Counters: forward NFE per iteration.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "cnf/data/sources.h"
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
  train::Trainer t(spec, o, data::make_source("8gaussians"), data::make_source("normal", 2));
  for (int i = 0; i < 30; ++i) t.step();
  double nfe = 0;
  for (auto _ : state) nfe += t.step().diagnostics.at("nfe").item<double>();
  state.counters["nfe"] = nfe / static_cast<double>(state.iterations());
  state.SetLabel(state.range(0) == 1 ? "adjoint" : "backprop");
}
BENCHMARK(BM_MleIteration)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MinTime(3.0);
