/// \file
/// cnf/nn/icnn.h — networks for neural optimal transport: an input-convex network (ICNN)
/// whose gradient is a transport map, and a scalar critic for the Kantorovich-Rubinstein
/// dual of W1. Trained by cnf/ot/neural.h.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <vector>

namespace cnf::nn {

/// ICNN options:  ICNNOptions(2).width(64).depth(2)
struct ICNNOptions {
  /// An ICNN on `dim`-dimensional inputs, the other options at their defaults.
  explicit ICNNOptions(int64_t dim) : dim_(dim) {}
  /// Input dimension (>= 1).
  TORCH_ARG(int64_t, dim);
  /// Hidden units per layer.
  TORCH_ARG(int64_t, width) = 64;
  /// Hidden layers (>= 1).
  TORCH_ARG(int64_t, depth) = 2;
};

/// Input-convex neural network (Amos, Xu & Kolter 2017; Makkuva et al. 2020):
///   z_1     = softplus(A_0 x + b_0)
///   z_{k+1} = softplus(W_k z_k + A_k x + b_k)                      k = 1 .. depth - 1
///   F(x)    = w^T z_depth + 1/2 ||L x||^2 + c^T x
/// Softplus is convex and nondecreasing, so F is convex in x whenever every W_k and w is
/// elementwise nonnegative (clamp_weights() projects them there after an optimizer step).
/// The quadratic term (L initialized to I, so grad F starts as the identity map) lets an
/// affine transport map be represented exactly, as in the quadratic layers of Makkuva et
/// al. and Korotin et al. 2021 (W2GN).
class ICNNImpl : public torch::nn::Module {
 public:
  /// Builds the layers with L = I and c = 0, so grad F starts near the identity map; dim, width
  /// and depth must be >= 1.
  explicit ICNNImpl(const ICNNOptions& options);
  /// F(x) for x [B, dim]: [B].
  torch::Tensor forward(const torch::Tensor& x);
  /// grad F(x) [B, dim] by autograd; `create_graph` keeps it differentiable in the weights.
  torch::Tensor gradient(const torch::Tensor& x, bool create_graph);
  /// Projects the weights that must be nonnegative onto W >= 0.
  void clamp_weights();

  /// The options it was built with.
  ICNNOptions options;
  /// A_k, b_k (x -> layer k), k = 0 .. depth - 1.
  std::vector<torch::nn::Linear> input_layers;  // A_k, b_k (x -> layer k)
  /// W_k (no bias, kept nonnegative), k = 1 .. depth - 1.
  std::vector<torch::nn::Linear> hidden_layers;  // W_k (no bias), nonnegative
  /// w (no bias, kept nonnegative).
  torch::nn::Linear output{nullptr};  // w (no bias), nonnegative
  /// L (no bias), initialized to I.
  torch::nn::Linear quadratic{nullptr};  // L (no bias)
  /// c (no bias), initialized to 0.
  torch::nn::Linear affine{nullptr};  // c (no bias)
};
/// Module holder (shared pointer) of ICNNImpl.
TORCH_MODULE(ICNN);

/// Scalar critic h(x): an MLP dim -> width x depth -> 1 with SiLU activations (smooth,
/// so the gradient penalty of WGAN-GP has a gradient).
class CriticImpl : public torch::nn::Module {
 public:
  /// A critic on `dim` inputs with `depth` hidden SiLU layers of `width` units (all >= 1).
  CriticImpl(int64_t dim, int64_t width = 64, int64_t depth = 2);
  /// h(x) for x [B, dim]: [B].
  torch::Tensor forward(const torch::Tensor& x);

  /// The depth + 1 linear maps, in order.
  std::vector<torch::nn::Linear> layers;
};
/// Module holder (shared pointer) of CriticImpl.
TORCH_MODULE(Critic);

}  // namespace cnf::nn
