// cnf/nn/unet.h — a small U-Net velocity field for images, and classifier-free guidance.
//
// The U-Net of DDPM (Ho et al. 2020, app. B), shrunk for CPU runs: a 3x3 input convolution;
// per resolution level `res_blocks` residual blocks (GroupNorm, SiLU, 3x3 convolutions, the
// time embedding added between the two convolutions), then a stride-2 convolution; a middle
// of two residual blocks with optional single-head self-attention at the lowest resolution;
// the mirror image upward with skip connections concatenated; GroupNorm, SiLU and a 3x3
// output convolution. Time enters through sinusoidal features of 1000 t (Vaswani et al.
// 2017) and a two-layer MLP. Inputs may be flat [B, C*H*W] (what data sources give) or
// [B, C, H, W]; the output has the input's shape.
//
// Class conditioning: with classes = K > 0 a learned embedding of K + 1 entries is added to
// the time embedding; entry K is the null label (no class). set_labels() gives the labels of
// the next forward passes; labels < 0, or none set, mean the null label, so an unlabeled call
// (ode::solve, likelihoods) evaluates the unconditional model that label dropout trains
// (classifier-free guidance, Ho & Salimans 2022).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include <vector>

#include "cnf/nn/velocity.h"

namespace cnf::nn {

/// Options of the U-Net, LibTorch style:
///   UNetOptions(1, 14, 14).base(32).channel_mult({1, 2}).res_blocks(1).classes(10)
struct UNetOptions {
  UNetOptions(int64_t channels, int64_t height, int64_t width)
      : channels_(channels), height_(height), width_(width) {}
  /// Image channels and size.
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, height);
  TORCH_ARG(int64_t, width);
  /// Feature channels at the first level; level i has base * channel_mult[i].
  TORCH_ARG(int64_t, base) = 32;
  /// One entry per resolution level; each level after the first halves the resolution.
  TORCH_ARG(std::vector<int64_t>, channel_mult) = std::vector<int64_t>{1, 2};
  /// Residual blocks per level (down and up).
  TORCH_ARG(int64_t, res_blocks) = 1;
  /// Self-attention in the middle (lowest resolution).
  TORCH_ARG(bool, attention) = false;
  /// Number of classes for class conditioning (0: unconditional).
  TORCH_ARG(int64_t, classes) = 0;
  /// GroupNorm groups (reduced to a divisor of each layer's channels).
  TORCH_ARG(int64_t, groups) = 8;
};

class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t emb, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, skip{nullptr};
  torch::nn::Linear emb_proj{nullptr};
};
TORCH_MODULE(ResBlock);

class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(AttentionBlock);

class UNetVelocityImpl : public VelocityFieldImpl {
 public:
  explicit UNetVelocityImpl(const UNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override {
    return {options.channels() * options.height() * options.width()};
  }
  void set_labels(const torch::Tensor& labels) override;
  int64_t classes() const override { return options.classes(); }

  UNetOptions options;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::Linear time1{nullptr}, time2{nullptr};
  torch::nn::Embedding label_embedding{nullptr};
  torch::nn::ModuleList down, down_sample, up, up_sample;
  ResBlock mid1{nullptr}, mid2{nullptr};
  AttentionBlock mid_attention{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};

 private:
  torch::Tensor labels_;
};
TORCH_MODULE(UNetVelocity);

/// Classifier-free guidance (Ho & Salimans 2022) of a class-conditional network:
///   out = (1 + w) net(x, t | c) - w net(x, t | null),
/// w = 0 is the conditional model. Works for any parameterization the network predicts
/// (velocity, noise, score and data are affine in each other at fixed x and t), so wrap the
/// raw network and read the result through sde::velocity_view as usual. `labels` [B] are the
/// classes of the rows the samplers pass (they always pass whole batches).
class GuidedFieldImpl : public VelocityFieldImpl {
 public:
  GuidedFieldImpl(VelocityField net, torch::Tensor labels, double guidance);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return net->sample_shape(); }
  int64_t classes() const override { return net->classes(); }

  VelocityField net;
  torch::Tensor labels;
  double guidance;
};

}  // namespace cnf::nn
