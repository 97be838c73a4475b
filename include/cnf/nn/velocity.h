/// \file
/// cnf/nn/velocity.h — velocity-field networks: v_t(x) = forward(x, t).
///
/// x: [B, ...features], t: [B] (floating point, broadcast inside). Every network of cnf
/// derives from VelocityFieldImpl so solvers, objectives and checkpoints take any of them.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "cnf/core/registry.h"

/// Networks: velocity fields v_t(x) (MLP, hollow network, U-Net, stacks, guidance) and the
/// input-convex networks and critics of neural optimal transport.
namespace cnf::nn {

/// Base of every velocity field, v_t(x) = forward(x, t): the trainer, the solvers, the samplers
/// and the likelihoods take any of them. Derive from it to use a network of your own.
///
/// Example (examples/custom_field/main.cpp):
/// \snippet custom_field/main.cpp field
class VelocityFieldImpl : public torch::nn::Module {
 public:
  /// v_t(x) for x: [B, ...], t: [B].
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) = 0;
  /// Shape of one sample (e.g. {2} or {1, 28, 28}).
  virtual std::vector<int64_t> sample_shape() const = 0;
  /// Class labels [B] (int64) for the next forward passes of a class-conditional network;
  /// a label < 0 means "no class" (the null label of classifier-free guidance), and an
  /// undefined tensor clears them. Unconditional networks accept only an undefined tensor.
  virtual void set_labels(const torch::Tensor& labels);
  /// Number of classes the network is conditioned on (0: unconditional).
  virtual int64_t classes() const { return 0; }
  /// Whether forward_with_divergence gives the exact divergence without autograd's one
  /// backward pass per dimension (the MLP: through its layers; the hollow network: read off
  /// its forward pass). density's `analytic` route needs it.
  virtual bool has_analytic_divergence() const { return false; }
  /// v_t(x) and its exact divergence tr(dv/dx) [B], for networks whose
  /// has_analytic_divergence() is true; the default throws cnf::Error.
  virtual std::pair<torch::Tensor, torch::Tensor> forward_with_divergence(const torch::Tensor& x,
                                                                          const torch::Tensor& t);
  /// This network's forward as TorchScript source, for export (interop/torchscript.h): one or
  /// more method definitions, the main one `def <method>(self, x: Tensor, t: Tensor) ->
  /// Tensor` (helpers are named `<method>_...`). Each parameter or buffer `name` (its key in
  /// named_parameters() / named_buffers()) is read as `self.<torchscript_name(prefix +
  /// name)>`. Empty (the default) when the network has no TorchScript form.
  virtual std::string torchscript(const std::string& method, const std::string& prefix) const {
    return {};
  }
};
/// Shared pointer to a velocity field, as LibTorch holds modules.
using VelocityField = std::shared_ptr<VelocityFieldImpl>;

/// The attribute name an exported TorchScript module gives the parameter or buffer with this
/// dotted name ("block1.layer0.weight" -> "block1__layer0__weight").
std::string torchscript_name(const std::string& dotted);

/// Element-wise activations the MLP offers, by name.
enum class Activation { tanh, relu, silu, selu, gelu, softplus };
/// tanh, relu, silu, selu, gelu or softplus; unknown names list the valid ones.
Activation parse_activation(const std::string& name);
/// The activations by name: tanh, relu, silu, selu, gelu, softplus.
const Registry<Activation>& activations();
/// The name of `a`, as parse_activation reads it.
std::string activation_name(Activation a);
/// act(x), element-wise.
torch::Tensor activate(Activation a, const torch::Tensor& x);
/// The activation applied to the TorchScript expression `expr` (export).
std::string activation_torchscript(Activation a, const std::string& expr);
/// Element-wise derivative of the activation at pre-activation z.
torch::Tensor activate_derivative(Activation a, const torch::Tensor& z);

/// [x, embed(t)]: t appended as one column when `frequencies` is undefined, else the
/// sin and cos of t times each frequency. x: [B, dim], t: [B] or one time.
torch::Tensor embed_time(const torch::Tensor& x, const torch::Tensor& t,
                         const torch::Tensor& frequencies);
/// The MLP's layers by LibTorch's ops on an embedded input h: `params` holds
/// (weight, bias) of each linear map in order; the activation follows every map but the
/// last. The reference path, shared with the fast path's higher derivatives.
torch::Tensor mlp_layers(torch::Tensor h, torch::TensorList params, Activation a);

/// How time enters the MLP: appended as one input ("concat"), or as sin/cos Fourier
/// features of `fourier_features` log-spaced frequencies ("fourier"; Tancik et al. 2020).
enum class TimeEmbedding { concat, fourier };
/// "concat" or "fourier"; unknown names list the valid ones.
TimeEmbedding parse_time_embedding(const std::string& name);
/// The time embeddings by name: concat, fourier.
const Registry<TimeEmbedding>& time_embeddings();
/// The name of `e`, as parse_time_embedding reads it.
std::string time_embedding_name(TimeEmbedding e);

/// Options of the time-conditioned MLP, LibTorch style:
///   MLPOptions(2).width(64).depth(3).activation("selu")
struct MLPOptions {
  /// An MLP on `dim`-dimensional samples, the other options at their defaults.
  explicit MLPOptions(int64_t dim) : dim_(dim) {}
  /// Sample dimension D (>= 1).
  TORCH_ARG(int64_t, dim);
  /// Hidden units per layer.
  TORCH_ARG(int64_t, width) = 64;
  /// Number of hidden layers (depth 3 means 3 hidden layers, 4 linear maps).
  TORCH_ARG(int64_t, depth) = 3;
  /// Activation name (parse_activation).
  TORCH_ARG(std::string, activation) = "selu";
  /// How time enters: "concat" or "fourier" (parse_time_embedding).
  TORCH_ARG(std::string, time_embedding) = "concat";
  /// Frequencies pi 2^k, k < fourier_features, of the fourier embedding.
  TORCH_ARG(int64_t, fourier_features) = 8;
};

/// Multilayer perceptron [x, embed(t)] -> width x depth -> dim.
class MLPVelocityImpl : public VelocityFieldImpl {
 public:
  /// Builds the depth + 1 linear maps (LibTorch's initialization); throws cnf::Error for a
  /// dim, width or depth < 1 or an unknown name.
  explicit MLPVelocityImpl(const MLPOptions& options);
  /// v_t(x): the fused fast path (nn/fast_mlp.h) where it applies, else reference_forward.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  /// v_t(x) by LibTorch's kernels, with an ordinary autograd graph.
  torch::Tensor reference_forward(const torch::Tensor& x, const torch::Tensor& t);
  std::vector<int64_t> sample_shape() const override { return {options.dim()}; }
  std::string torchscript(const std::string& method, const std::string& prefix) const override;
  /// (weight, bias) of every linear map, in order.
  std::vector<torch::Tensor> layer_parameters() const;
  /// The input fed to the first layer: [x, embed(t)].
  torch::Tensor embed_input(const torch::Tensor& x, const torch::Tensor& t) const;
  /// v_t(x) and its exact divergence tr(dv/dx) [B], by carrying the Jacobian dh/dx
  /// ([B, width, dim]) through the layers: J <- act'(z) * (W J). Costs about `dim`
  /// forward passes of matrix work and no autograd; differentiable like forward().
  /// Fused (nn/fast_mlp.h) when no gradient is needed and the fast path applies.
  std::pair<torch::Tensor, torch::Tensor> forward_with_divergence(const torch::Tensor& x,
                                                                  const torch::Tensor& t) override;
  /// Always: the layers carry the Jacobian.
  bool has_analytic_divergence() const override { return true; }
  /// v_t(x) and the Jacobian-vector product (dv/dx) u [B, dim] for directions u [B, dim],
  /// by forward mode (the tangent rides along the layers: one extra product per layer).
  /// Differentiable to first order in x and the parameters through one custom autograd
  /// node with a hand-written backward, so a loss built from u^T (dv/dx) u (Hutchinson in
  /// maximum likelihood) needs no double backward through LibTorch's graph. Its gradient
  /// cannot be differentiated again (an error says so).
  std::pair<torch::Tensor, torch::Tensor> forward_with_jvp(const torch::Tensor& x,
                                                           const torch::Tensor& t,
                                                           const torch::Tensor& u);

  /// The options it was built with.
  MLPOptions options;
  /// The activation act.
  Activation activation;
  /// How time enters.
  TimeEmbedding time_embedding;
  /// The depth + 1 linear maps, in order.
  std::vector<torch::nn::Linear> layers;
  /// Buffer [fourier_features] of the frequencies pi 2^k (undefined for concat).
  torch::Tensor frequencies;  // buffer, fourier embedding only
};
/// Module holder (shared pointer) of MLPVelocityImpl.
TORCH_MODULE(MLPVelocity);

/// K velocity fields in sequence: stacked CNF blocks (FFJORD, Grathwohl et al. 2019). Block
/// k owns the time slice [k/K, (k+1)/K) (the last one includes t = 1) and sees its local
/// time s = K t - k in [0, 1], so one ODE solve over [0, 1] composes K flows and their
/// log-determinants add up in the likelihood. Rows with different times are routed to their
/// blocks. The field may jump at t = k/K; adaptive solvers meet those times by step control.
class StackedVelocityImpl : public VelocityFieldImpl {
 public:
  /// Stacks `blocks` (at least one, all with the same sample shape) as submodules.
  explicit StackedVelocityImpl(std::vector<VelocityField> blocks);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return blocks.front()->sample_shape(); }
  /// Labels go to every block (class-conditional blocks).
  void set_labels(const torch::Tensor& labels) override;
  int64_t classes() const override { return blocks.front()->classes(); }
  std::string torchscript(const std::string& method, const std::string& prefix) const override;

  /// The K blocks; block k owns [k/K, (k+1)/K).
  std::vector<VelocityField> blocks;

 private:
  torch::Tensor labels_;  // [B] of the batch, split with the rows when they are routed
};
/// Module holder (shared pointer) of StackedVelocityImpl.
TORCH_MODULE(StackedVelocity);

/// Generic description of a velocity-field network, as read from flags or a checkpoint.
struct ModelSpec {
  /// Architecture: mlp, hollow or unet (make_model); train::kCustomArch for a network built by
  /// a program's own factory.
  std::string arch = "mlp";
  /// Sample dimension D (the trainer sets it to the data's).
  int64_t dim = 2;
  /// Hidden units per layer (hollow: per dimension; unet: base channels).
  int64_t width = 64;
  /// Hidden layers (hollow: conditioner layers).
  int64_t depth = 3;
  /// Activation name (parse_activation).
  std::string activation = "selu";
  /// How time enters the MLP: "concat" or "fourier".
  std::string time_embedding = "concat";
  /// Frequencies of the fourier time embedding.
  int64_t fourier_features = 8;
  /// Stacked blocks of this network (StackedVelocityImpl); 1: a single network.
  int64_t blocks = 1;
  /// \var channels
  /// unet (nn/unet.h): image channels C (the base channels are `width`).
  /// \var height
  /// unet: image height H.
  /// \var width_px
  /// unet: image width W.
  int64_t channels = 1, height = 0, width_px = 0;
  /// unet: channel multiplier of each resolution level, e.g. "1,2" (parse_channel_mult).
  std::string channel_mult = "1,2";
  /// unet: residual blocks per level.
  int64_t res_blocks = 1;
  /// unet: self-attention in the middle.
  bool attention = false;
  /// unet: number of classes for class conditioning (0: none).
  int64_t classes = 0;
};

/// Builds the network named by `spec.arch` (mlp, hollow, unet), a stack of spec.blocks of them
/// when spec.blocks > 1 (StackedVelocityImpl). Unknown names list the valid ones.
VelocityField make_model(const ModelSpec& spec);
/// "1,2,2" -> {1, 2, 2} (the unet's channel multipliers); errors name the bad item.
std::vector<int64_t> parse_channel_mult(const std::string& text);
/// The architectures make_model builds: mlp, hollow, unet.
std::vector<std::string> model_names();

/// Number of trainable scalars.
int64_t count_parameters(const torch::nn::Module& m);

}  // namespace cnf::nn
