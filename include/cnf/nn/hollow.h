/// \file
/// cnf/nn/hollow.h — a velocity field whose exact divergence costs one forward pass.
///
/// HollowNet (Chen & Duvenaud 2019, "Neural networks with cheap differential operators"):
/// each output dimension i is v_i = tau_i(x_i, h_i, t), where the conditioner
/// h_i = c_i(x_{-i}, t) sees every coordinate but x_i. Then dv_i/dx_i = d tau_i/dx_i with
/// h_i held fixed, so the divergence tr(dv/dx) is exact and needs no Jacobian: for the
/// one-hidden-layer transformer used here it is sum_i sum_k w_ik act'(z_ik) a_ik, read off
/// the forward pass. An MLP's exact divergence needs `dim` Jacobian-vector products (the
/// analytic route carries dim Jacobian rows through the layers); this one costs what one
/// forward pass costs at any dimension.
///
/// Layout: the conditioner has `dim` blocks of `width` hidden units. Its first layer is
/// dense over [x, t] with the weight from x_i into block i masked to zero; its further
/// `depth - 1` layers are block diagonal (block i reads block i only), so block i never sees
/// x_i. The transformer of dimension i: z_i = A_i h_i + a_i x_i + c_i t + b_i (width units),
/// v_i = w_i . act(z_i) + e_i. Cost per point: (dim width)(dim + 1) for the first layer and
/// dim width^2 per further layer and for the transformer.
#pragma once

#include <torch/types.h>

#include <utility>
#include <vector>

#include "cnf/nn/velocity.h"

namespace cnf::nn {

/// Options: HollowOptions(16).width(16).depth(2).activation("tanh").
struct HollowOptions {
  /// A hollow network on `dim`-dimensional samples, the other options at their defaults.
  explicit HollowOptions(int64_t dim) : dim_(dim) {}
  /// Sample dimension D (>= 2).
  TORCH_ARG(int64_t, dim);
  /// Hidden units per dimension block (conditioner and transformer).
  TORCH_ARG(int64_t, width) = 16;
  /// Conditioner layers (>= 1: the masked one, then block-diagonal ones).
  TORCH_ARG(int64_t, depth) = 2;
  /// Activation act of conditioner and transformer (parse_activation).
  TORCH_ARG(std::string, activation) = "tanh";
};

/// HollowNet velocity field (see the file comment): its exact divergence costs one forward pass.
class HollowVelocityImpl : public VelocityFieldImpl {
 public:
  /// Builds the parameters (LibTorch's Linear initialization); dim >= 2, width and depth >= 1.
  explicit HollowVelocityImpl(const HollowOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return {options.dim()}; }
  std::string torchscript(const std::string& method, const std::string& prefix) const override;
  /// v_t(x) [B, dim] and its exact divergence [B], from one forward pass (differentiable).
  std::pair<torch::Tensor, torch::Tensor> forward_with_divergence(const torch::Tensor& x,
                                                                  const torch::Tensor& t) override;
  /// Always: the divergence is read off the forward pass.
  bool has_analytic_divergence() const override { return true; }

  /// The options it was built with.
  HollowOptions options;
  /// The activation act.
  Activation activation;
  /// \var w_in
  /// First conditioner layer's weights [dim, width, dim + 1] over [x, t], used as w_in * mask.
  /// \var b_in
  /// First conditioner layer's biases [dim, width].
  torch::Tensor w_in, b_in;  // [dim, width, dim + 1], [dim, width]: masked first layer
  /// Buffer [dim, width, dim + 1]: 0 where block i meets x_i, 1 elsewhere.
  torch::Tensor mask;  // [dim, width, dim + 1] buffer: 0 where block i meets x_i
  /// \var w_block
  /// Weights [dim, width, width] of the block-diagonal conditioner layers 2 .. depth.
  /// \var b_block
  /// Their biases [dim, width].
  std::vector<torch::Tensor> w_block, b_block;  // [dim, width, width], [dim, width]
  /// \var t_h
  /// Transformer A_i [dim, width, width], applied to h_i.
  /// \var t_x
  /// Transformer a_i [dim, width], applied to x_i.
  /// \var t_t
  /// Transformer c_i [dim, width], applied to t.
  /// \var t_b
  /// Transformer b_i [dim, width].
  torch::Tensor t_h, t_x, t_t, t_b;  // transformer: [dim, width, width], [dim, width] x3
  /// \var t_w
  /// Output weights w_i [dim, width]: v_i = w_i . act(z_i) + e_i.
  /// \var t_e
  /// Output biases e_i [dim].
  torch::Tensor t_w, t_e;  // [dim, width], [dim]

 private:
  // v and, when `div` is not null, the divergence.
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& t, torch::Tensor* div);
};
/// Module holder (shared pointer) of HollowVelocityImpl.
TORCH_MODULE(HollowVelocity);

}  // namespace cnf::nn
