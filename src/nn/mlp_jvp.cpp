// MLPVelocity::forward_with_jvp: the velocity and a Jacobian-vector product by forward
// mode, with a hand-written first-order backward (one autograd node per call).
//
// Per hidden layer, with z = W h + b and the tangent zd = W hd:
//   h' = act(z),  hd' = act'(z) * zd.
// Reverse pass, from the adjoints (a, ad) of (z, zd) of a layer to those of the layer below:
//   grad W = a^T h + ad^T hd,  grad b = sum a,
//   (ah, ahd) = (a W, ad W)                      adjoints of (h, hd)
//   ad_below = act'(z_below) * ahd
//   a_below  = act'(z_below) * ah + act''(z_below) * zd_below * ahd.
// The act'' term is what LibTorch's double backward computes through a graph of the
// vector-Jacobian product; here it is a handful of tensor ops per layer.
#include <torch/torch.h>

#include "cnf/core/error.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/nn/velocity.h"
#include "fast_mlp_kernels.h"

namespace cnf::nn {
namespace {

// act''(z) (act' is activate_derivative in velocity.cpp).
torch::Tensor activation_second_derivative(Activation a, const torch::Tensor& z) {
  switch (a) {
    case Activation::tanh: {
      auto h = torch::tanh(z);
      return -2 * h * (1 - h * h);
    }
    case Activation::relu:
      return torch::zeros_like(z);
    case Activation::silu: {
      auto s = torch::sigmoid(z);
      return s * (1 - s) * (2 + z * (1 - 2 * s));
    }
    case Activation::selu: {
      const double scale = 1.0507009873554804934193349852946,
                   alpha = 1.6732632423543772848170429916717;
      return torch::where(z > 0, torch::zeros_like(z),
                          scale * alpha * torch::exp(torch::clamp_max(z, 0)));
    }
    case Activation::gelu: {
      auto pdf = torch::exp(-0.5 * z * z) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
      return pdf * (2 - z * z);
    }
    case Activation::softplus: {
      auto s = torch::sigmoid(z);
      return s * (1 - s);
    }
  }
  fail("unhandled activation enum value ", static_cast<int>(a));
}

// act(z) and act'(z): by the fused kernels' vectorized activations on a CPU with AVX2
// (LibTorch's tanh costs ~10x more per value), else by LibTorch.
std::pair<torch::Tensor, torch::Tensor> activate_with_derivative(Activation a,
                                                                 const torch::Tensor& z) {
  if (z.device().is_cpu() && z.is_contiguous() && fast::cpu_supported() &&
      (z.scalar_type() == torch::kFloat || z.scalar_type() == torch::kDouble)) {
    auto h = z.clone();
    auto s1 = torch::empty_like(z);
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "activate_with_derivative", [&] {
      fast::kernel::activate_array<scalar_t>(static_cast<fast::kernel::Act>(static_cast<int>(a)),
                                             h.data_ptr<scalar_t>(), s1.data_ptr<scalar_t>(),
                                             z.numel());
    });
    return {h, s1};
  }
  return {activate(a, z), activate_derivative(a, z)};
}

// Values and tangents travel stacked as one [2B, width] matrix H = [h; hd], so each layer
// is one product H W^T (and backward one A^T H and one A W) instead of two: for these
// skinny products the per-call packing costs as much as the arithmetic.
struct MlpJvp : public torch::autograd::Function<MlpJvp> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& h0, const torch::Tensor& u0,
                                                int64_t act, torch::TensorList params) {
    const auto a = static_cast<Activation>(act);
    const size_t layers = params.size() / 2;
    const int64_t b = h0.size(0);
    std::vector<torch::Tensor> keep(params.begin(), params.end());  // then H, Z, act'(z)
    torch::Tensor H = torch::cat({h0, u0.to(h0.scalar_type())}, 0);
    for (size_t k = 0; k < layers; ++k) {
      auto Z = torch::mm(H, params[2 * k].t());  // [z - b; zd]
      Z.slice(0, 0, b).add_(params[2 * k + 1]);
      keep.push_back(H);
      if (k + 1 == layers) {
        ctx->saved_data["act"] = act;
        ctx->save_for_backward(keep);
        return {Z.slice(0, 0, b), Z.slice(0, b)};
      }
      auto [h, s1] = activate_with_derivative(a, Z.slice(0, 0, b));
      keep.push_back(Z);
      keep.push_back(s1);
      H = torch::cat({h, s1 * Z.slice(0, b)}, 0);
    }
    fail("forward_with_jvp needs at least one layer");
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    CNF_CHECK(!torch::GradMode::is_enabled(),
              "second derivatives through MLPVelocity::forward_with_jvp are not implemented; "
              "differentiate forward() with create_graph instead");
    const auto act = static_cast<Activation>(ctx->saved_data["act"].toInt());
    auto saved = ctx->get_saved_variables();
    // Layout: params (2 per layer), then per layer H (and Z, act'(z) below the last one).
    const size_t layers = (saved.size() + 2) / 5;
    std::vector<torch::Tensor> params(saved.begin(), saved.begin() + 2 * layers);
    auto at = [&](size_t k, size_t i) -> const torch::Tensor& {
      return saved[2 * layers + 3 * k + i];
    };
    const int64_t b = at(0, 0).size(0) / 2, out_dim = params[2 * (layers - 1)].size(0);
    const auto opts = at(0, 0).options();
    // A = [a; ad], the adjoints of [z; zd] of the current layer.
    torch::Tensor A = torch::cat({grads[0].defined() ? grads[0] : torch::zeros({b, out_dim}, opts),
                                  grads[1].defined() ? grads[1] : torch::zeros({b, out_dim}, opts)},
                                 0);
    // Gradients by argument position (h0, u0, act, params...); needs_input_grad counts the
    // tensor inputs only (h0, u0, params...).
    torch::autograd::variable_list out(3 + params.size());
    for (size_t k = layers; k-- > 0;) {
      const auto& w = params[2 * k];
      const auto& H = at(k, 0);
      if (ctx->needs_input_grad(2 + 2 * k)) out[3 + 2 * k] = torch::mm(A.t(), H);
      if (ctx->needs_input_grad(3 + 2 * k)) out[4 + 2 * k] = A.slice(0, 0, b).sum(0);
      if (k == 0) {
        if (ctx->needs_input_grad(0)) out[0] = torch::mm(A.slice(0, 0, b), w);
        break;
      }
      auto AH = torch::mm(A, w);  // [ah; ahd], adjoints of [h; hd]
      auto ah = AH.slice(0, 0, b), ahd = AH.slice(0, b);
      const auto& Z = at(k - 1, 1);
      const auto& s1 = at(k - 1, 2);
      // act'' of tanh follows from act = h (the top of H) and act'.
      auto s2 = act == Activation::tanh ? -2 * H.slice(0, 0, b) * s1
                                        : activation_second_derivative(act, Z.slice(0, 0, b));
      A = torch::cat({s1 * ah + s2 * Z.slice(0, b) * ahd, s1 * ahd}, 0);
    }
    return out;
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> MLPVelocityImpl::forward_with_jvp(const torch::Tensor& x,
                                                                          const torch::Tensor& t,
                                                                          const torch::Tensor& u) {
  CNF_CHECK(x.dim() == 2 && x.size(1) == options.dim(), "forward_with_jvp needs x [B, ",
            options.dim(), "], got ", x.sizes());
  CNF_CHECK(u.sizes() == x.sizes(), "forward_with_jvp: the direction must have the shape of x ",
            x.sizes(), ", got ", u.sizes());
  // The fused kernels (nn/fast_mlp.h) when they apply; they give t no gradient.
  const bool t_grad = torch::GradMode::is_enabled() && t.requires_grad();
  if (fast::enabled() && !t_grad && fast::unsupported_reason(*this, x, t).empty())
    return fast::forward_with_jvp(*this, x, t, u);
  auto h0 = embed_input(x, t);
  const int64_t extra = h0.size(1) - x.size(1);
  // The direction moves x only: the time features get a zero tangent.
  auto u0 =
      extra > 0
          ? torch::cat({u.to(h0.scalar_type()), torch::zeros({x.size(0), extra}, h0.options())}, 1)
          : u.to(h0.scalar_type());
  const auto params = layer_parameters();
  // As a TensorList (not the vector) so that autograd sees the parameters as inputs.
  auto out = MlpJvp::apply(h0, u0, static_cast<int64_t>(activation), torch::TensorList(params));
  return {out[0], out[1]};
}

}  // namespace cnf::nn
