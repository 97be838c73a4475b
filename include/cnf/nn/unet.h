/// \file
/// cnf/nn/unet.h — a small U-Net velocity field for images, and classifier-free guidance.
///
/// The U-Net of DDPM (Ho et al. 2020, app. B), shrunk for CPU runs: a 3x3 input convolution;
/// per resolution level `res_blocks` residual blocks (GroupNorm, SiLU, 3x3 convolutions, the
/// time embedding added between the two convolutions), then a stride-2 convolution; a middle
/// of two residual blocks with optional single-head self-attention at the lowest resolution;
/// the mirror image upward with skip connections concatenated; GroupNorm, SiLU and a 3x3
/// output convolution. Time enters through sinusoidal features of 1000 t (Vaswani et al.
/// 2017) and a two-layer MLP. Inputs may be flat [B, C*H*W] (what data sources give) or
/// [B, C, H, W]; the output has the input's shape.
///
/// Class conditioning: with classes = K > 0 a learned embedding of K + 1 entries is added to
/// the time embedding; entry K is the null label (no class). set_labels() gives the labels of
/// the next forward passes; labels < 0, or none set, mean the null label, so an unlabeled call
/// (ode::solve, likelihoods) evaluates the unconditional model that label dropout trains
/// (classifier-free guidance, Ho & Salimans 2022).
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
  /// A U-Net for `channels` x `height` x `width` images, the other options at their defaults.
  UNetOptions(int64_t channels, int64_t height, int64_t width)
      : channels_(channels), height_(height), width_(width) {}
  /// Image channels and size.
  TORCH_ARG(int64_t, channels);
  /// Image height H.
  TORCH_ARG(int64_t, height);
  /// Image width W.
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

/// Residual block of the U-Net: GroupNorm, SiLU, 3x3 convolution, plus the projected embedding,
/// GroupNorm, SiLU, 3x3 convolution; a 1x1 convolution on the skip when the channels change.
class ResBlockImpl : public torch::nn::Module {
 public:
  /// `in` -> `out` channels, an embedding of width `emb`, GroupNorm with `groups` groups (reduced
  /// to a divisor of the channels).
  ResBlockImpl(int64_t in, int64_t out, int64_t emb, int64_t groups);
  /// x [B, in, H, W] and the embedding emb [B, emb] -> [B, out, H, W].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb);
  /// \var norm1
  /// GroupNorm before the first convolution.
  /// \var norm2
  /// GroupNorm before the second convolution.
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  /// \var conv1
  /// 3x3 convolution in -> out.
  /// \var conv2
  /// 3x3 convolution out -> out.
  /// \var skip
  /// 1x1 convolution of the skip when in != out (empty otherwise).
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, skip{nullptr};
  /// Projection of the embedding to `out` channels.
  torch::nn::Linear emb_proj{nullptr};
};
/// Module holder (shared pointer) of ResBlockImpl.
TORCH_MODULE(ResBlock);

/// Single-head self-attention over the positions of a feature map (Vaswani et al. 2017), with
/// a residual connection.
class AttentionBlockImpl : public torch::nn::Module {
 public:
  /// On `channels` channels, GroupNorm with `groups` groups.
  AttentionBlockImpl(int64_t channels, int64_t groups);
  /// x + proj(attention(norm(x))) for x [B, C, H, W].
  torch::Tensor forward(const torch::Tensor& x);
  /// GroupNorm of the input.
  torch::nn::GroupNorm norm{nullptr};
  /// \var qkv
  /// 1x1 convolution to queries, keys and values (3 C channels).
  /// \var proj
  /// 1x1 output projection.
  torch::nn::Conv2d qkv{nullptr}, proj{nullptr};
};
/// Module holder (shared pointer) of AttentionBlockImpl.
TORCH_MODULE(AttentionBlock);

/// The U-Net velocity field (see the file comment).
class UNetVelocityImpl : public VelocityFieldImpl {
 public:
  /// Builds the network; throws cnf::Error for a non-positive shape, base, res_blocks or
  /// groups, negative classes, or levels that halve the image below one pixel.
  explicit UNetVelocityImpl(const UNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override {
    return {options.channels() * options.height() * options.width()};
  }
  void set_labels(const torch::Tensor& labels) override;
  int64_t classes() const override { return options.classes(); }
  /// Also defines `<method>_labeled(x, t, labels)` for class-conditional networks (a label
  /// < 0 is the null label); `<method>(x, t)` is the unconditional field.
  std::string torchscript(const std::string& method, const std::string& prefix) const override;

  /// The options it was built with.
  UNetOptions options;
  /// \var conv_in
  /// 3x3 input convolution C -> base.
  /// \var conv_out
  /// 3x3 output convolution to C channels.
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  /// \var time1
  /// Time MLP, first layer: base sinusoidal features -> 4 base.
  /// \var time2
  /// Time MLP, second layer: 4 base -> 4 base.
  torch::nn::Linear time1{nullptr}, time2{nullptr};
  /// classes + 1 label embeddings, the last one the null label (only when classes > 0).
  torch::nn::Embedding label_embedding{nullptr};
  /// \var down
  /// Residual blocks of the downward path, res_blocks per level.
  /// \var down_sample
  /// Stride-2 3x3 convolutions between levels, downward.
  /// \var up
  /// Residual blocks of the upward path; each level's first one takes the skip.
  /// \var up_sample
  /// 3x3 convolutions after nearest up-sampling between levels, upward.
  torch::nn::ModuleList down, down_sample, up, up_sample;
  /// \var mid1
  /// First middle residual block.
  /// \var mid2
  /// Second middle residual block.
  ResBlock mid1{nullptr}, mid2{nullptr};
  /// Middle self-attention (only with attention()).
  AttentionBlock mid_attention{nullptr};
  /// GroupNorm before the output convolution.
  torch::nn::GroupNorm norm_out{nullptr};

 private:
  torch::Tensor labels_;
};
/// Module holder (shared pointer) of UNetVelocityImpl.
TORCH_MODULE(UNetVelocity);

/// Classifier-free guidance (Ho & Salimans 2022) of a class-conditional network:
///   out = (1 + w) net(x, t | c) - w net(x, t | null),
/// w = 0 is the conditional model. Works for any parameterization the network predicts
/// (velocity, noise, score and data are affine in each other at fixed x and t), so wrap the
/// raw network and read the result through sde::velocity_view as usual. `labels` [B] are the
/// classes of the rows the samplers pass (they always pass whole batches).
class GuidedFieldImpl : public VelocityFieldImpl {
 public:
  /// Guides the class-conditional `net` toward `labels` [B] with a finite weight w = `guidance`.
  GuidedFieldImpl(VelocityField net, torch::Tensor labels, double guidance);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return net->sample_shape(); }
  int64_t classes() const override { return net->classes(); }

  /// The class-conditional network.
  VelocityField net;
  /// The class of each row [B].
  torch::Tensor labels;
  /// The guidance weight w (0: the conditional model).
  double guidance;
};

}  // namespace cnf::nn
