/// \file
/// cnf/nn/fast_mlp.h — a fused CPU fast path for the MLP velocity field.
///
/// Small MLPs run thousands of times (every ODE step, every training step) and with
/// LibTorch's kernels their cost is per-op overhead, skinny products and separate passes
/// for bias and activation. The fast path keeps a block of rows in cache through all
/// layers, fusing product, bias and activation per layer (the idea of fully fused MLPs,
/// Müller et al. 2021, tiny-cuda-nn, brought to the CPU), without an autograd graph:
///   - forward (sampling, evaluation);
///   - backward for the parameters and the input (training), as a custom autograd
///     function, so optimizers and losses see ordinary tensors;
///   - the exact divergence tr(dv/dx), carrying the Jacobian through the layers.
/// Products go to oneDNN's sgemm (float) or Eigen (double); activations are Eigen's
/// vectorized functions. Row blocks are split over LibTorch's intra-op threads.
///
/// MLPVelocity chooses it automatically when it applies (CPU tensors of float32/float64,
/// flat [B, dim] input, width <= 256, depth <= 8, a CPU with AVX2 and FMA, and no
/// gradient with respect to x or t requested — input gradients go through it only when
/// called directly). LibTorch's kernels remain the reference path: set_enabled(false)
/// (`cnf --fast-mlp off`) switches the fast path off everywhere.
#pragma once

#include <torch/types.h>

#include <string>
#include <thread>
#include <utility>

namespace cnf::nn {
class MLPVelocityImpl;
}

/// The fused CPU fast path of the MLP velocity field (see the file comment).
namespace cnf::nn::fast {

/// The CPU has the instructions the kernels are compiled for (AVX2, FMA).
bool cpu_supported();

/// Global switch (default on).
void set_enabled(bool on);
/// Whether the global switch is on.
bool enabled();

/// Pays the kernels' one-time start-up ahead: oneDNN sets itself up and generates the code
/// of the forward pass's float product on its first call (~40 ms on this machine, the
/// first solve's cold start). Constructing a Prewarm starts that on a background thread
/// (when the CPU has the fast path), so it overlaps with loading a checkpoint or data;
/// a product that comes first waits for or shares oneDNN's generated code. The destructor
/// waits for the thread: hold the object in main() (the command does) so that the thread
/// ends before exit destroys oneDNN's static state.
class Prewarm {
 public:
  Prewarm();
  ~Prewarm();
  Prewarm(const Prewarm&) = delete;
  Prewarm& operator=(const Prewarm&) = delete;

 private:
  std::thread thread_;
};

/// "" when the fast path can evaluate `mlp` at (x, t); otherwise the reason it cannot.
/// Does not look at the switch or at gradient requirements.
std::string unsupported_reason(const MLPVelocityImpl& mlp, const torch::Tensor& x,
                               const torch::Tensor& t);

/// v_t(x) [B, dim] by the fused kernels. Differentiable in x and in the parameters:
/// the backward pass is fused too; under create_graph (higher derivatives) it is
/// recomputed through LibTorch's ops so that second derivatives stay exact.
torch::Tensor forward(const MLPVelocityImpl& mlp, const torch::Tensor& x, const torch::Tensor& t);

/// v_t(x) and the exact divergence [B], without a graph (nothing may require grad).
std::pair<torch::Tensor, torch::Tensor> forward_with_divergence(const MLPVelocityImpl& mlp,
                                                                const torch::Tensor& x,
                                                                const torch::Tensor& t);

/// v_t(x) and the Jacobian-vector product (dv/dx) u, each [B, dim], by forward mode
/// through the fused kernels (MLPVelocity::forward_with_jvp uses it). Differentiable to
/// first order in x and the parameters (t and u get no gradient).
std::pair<torch::Tensor, torch::Tensor> forward_with_jvp(const MLPVelocityImpl& mlp,
                                                         const torch::Tensor& x,
                                                         const torch::Tensor& t,
                                                         const torch::Tensor& u);

}  // namespace cnf::nn::fast
