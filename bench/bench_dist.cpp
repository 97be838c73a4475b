// Gradient all-reduce between two ranks on loopback (issue #11): rank 1 runs on a thread of
// the benchmark process, rank 0 is timed. The gradients of the 2-D MLP and of the image
// U-Net, once bucketed (dist::Group's few flat buffers) and once one message per tensor.
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <unistd.h>

#include <thread>

#include "cnf/dist/dist.h"
#include "cnf/nn/velocity.h"

using namespace cnf;

namespace {

std::vector<at::Tensor> gradients_of(bool unet) {
  nn::ModelSpec spec;  // the default MLP 3-64-64-64-2 of cnf train
  if (unet) {          // README "Images": fashion-mnist:size=14, --width 32 --channel-mult 1,2
    spec.arch = "unet";
    spec.width = 32;
    spec.height = spec.width_px = 14;
    spec.dim = 14 * 14;
  }
  std::vector<at::Tensor> grads;
  for (const auto& p : nn::make_model(spec)->parameters()) grads.push_back(torch::randn_like(p));
  return grads;
}

constexpr int kIterations = 200;

void all_reduce(dist::Group& g, std::vector<at::Tensor>& grads, bool bucketed) {
  if (bucketed) {
    g.all_reduce_sum(grads);
    return;
  }
  for (auto& t : grads) {
    std::vector<at::Tensor> one{t};
    g.all_reduce_sum(one);
  }
}
}  // namespace

// Args: {0: MLP, 1: U-Net} x {0: one message per tensor, 1: bucketed}.
static void BM_GradAllReduce2Ranks(benchmark::State& state) {
  const bool unet = state.range(0) == 1, bucketed = state.range(1) == 1;
  dist::GroupOptions o;
  o.world_size = 2;
  o.master_port = cnf::dist::free_loopback_port();
  o.timeout_seconds = 30;
  std::thread peer([o, unet, bucketed] {
    auto po = o;
    po.rank = 1;
    dist::Group g(po);
    auto grads = gradients_of(unet);
    for (int i = 0; i < kIterations + 5; ++i) all_reduce(g, grads, bucketed);
  });
  dist::Group g(o);
  auto grads = gradients_of(unet);
  int64_t bytes = 0, tensors = static_cast<int64_t>(grads.size());
  for (const auto& t : grads) bytes += t.numel() * 4;
  for (int i = 0; i < 5; ++i) all_reduce(g, grads, bucketed);
  const int64_t messages_before = g.messages();
  for (auto _ : state) all_reduce(g, grads, bucketed);
  state.counters["tensors"] = static_cast<double>(tensors);
  state.counters["KB"] = static_cast<double>(bytes) / 1024.0;
  state.counters["messages"] =
      static_cast<double>(g.messages() - messages_before) / static_cast<double>(kIterations);
  peer.join();
}
BENCHMARK(BM_GradAllReduce2Ranks)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->Iterations(kIterations)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
