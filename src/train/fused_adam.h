// Adam and AdamW whose update runs as one pass over each parameter's elements.
//
// LibTorch's Adam::step issues about eight tensor operations per parameter tensor; for the
// small networks cnf trains (eight parameter tensors, ~9,000 scalars) that per-op overhead
// costs more than the network itself. These subclasses keep LibTorch's parameter groups,
// options and state objects (AdamParamState / AdamWParamState), so checkpoints written by
// either load in the other, and only replace step() for contiguous CPU float32/float64
// parameters (anything else goes through the base class). The update is Kingma & Ba
// (2015) with bias correction, as LibTorch computes it; AdamW decays weights decoupled
// (Loshchilov & Hutter 2019).
#pragma once

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

namespace cnf::train {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace cnf::train
