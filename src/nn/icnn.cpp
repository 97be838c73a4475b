#include "cnf/nn/icnn.h"

#include <torch/torch.h>

#include <string>

#include "cnf/core/error.h"

namespace cnf::nn {

ICNNImpl::ICNNImpl(const ICNNOptions& o) : options(o) {
  CNF_CHECK(o.dim() >= 1, "ICNN dim must be >= 1, got ", o.dim());
  CNF_CHECK(o.width() >= 1, "ICNN width must be >= 1, got ", o.width());
  CNF_CHECK(o.depth() >= 1, "ICNN depth must be >= 1, got ", o.depth());
  for (int64_t k = 0; k < o.depth(); ++k) {
    input_layers.push_back(
        register_module("input" + std::to_string(k), torch::nn::Linear(o.dim(), o.width())));
    if (k > 0) {
      auto w = register_module(
          "hidden" + std::to_string(k),
          torch::nn::Linear(torch::nn::LinearOptions(o.width(), o.width()).bias(false)));
      hidden_layers.push_back(w);
    }
  }
  output = register_module("output",
                           torch::nn::Linear(torch::nn::LinearOptions(o.width(), 1).bias(false)));
  quadratic = register_module(
      "quadratic", torch::nn::Linear(torch::nn::LinearOptions(o.dim(), o.dim()).bias(false)));
  affine = register_module("affine",
                           torch::nn::Linear(torch::nn::LinearOptions(o.dim(), 1).bias(false)));
  torch::NoGradGuard no_grad;
  quadratic->weight.copy_(torch::eye(o.dim()));
  affine->weight.zero_();
  // Small nonnegative hidden weights: the network starts close to its quadratic part.
  for (auto& w : hidden_layers) w->weight.uniform_(0.0, 1.0 / static_cast<double>(o.width()));
  output->weight.uniform_(0.0, 1.0 / static_cast<double>(o.width()));
}

torch::Tensor ICNNImpl::forward(const torch::Tensor& x) {
  torch::Tensor z = torch::softplus(input_layers[0]->forward(x));
  for (size_t k = 1; k < input_layers.size(); ++k)
    z = torch::softplus(hidden_layers[k - 1]->forward(z) + input_layers[k]->forward(x));
  const torch::Tensor q = quadratic->forward(x);
  return output->forward(z).squeeze(1) + 0.5 * q.pow(2).sum(1) + affine->forward(x).squeeze(1);
}

torch::Tensor ICNNImpl::gradient(const torch::Tensor& x, bool create_graph) {
  torch::Tensor xg = x.detach().requires_grad_(true);
  torch::Tensor f = forward(xg).sum();
  return torch::autograd::grad({f}, {xg}, {}, /*retain_graph=*/create_graph, create_graph)[0];
}

void ICNNImpl::clamp_weights() {
  torch::NoGradGuard no_grad;
  for (auto& w : hidden_layers) w->weight.clamp_min_(0.0);
  output->weight.clamp_min_(0.0);
}

CriticImpl::CriticImpl(int64_t dim, int64_t width, int64_t depth) {
  CNF_CHECK(dim >= 1 && width >= 1 && depth >= 1, "critic needs dim, width, depth >= 1, got ", dim,
            ", ", width, ", ", depth);
  int64_t in = dim;
  for (int64_t k = 0; k <= depth; ++k) {
    const int64_t out = k == depth ? 1 : width;
    layers.push_back(register_module("layer" + std::to_string(k), torch::nn::Linear(in, out)));
    in = out;
  }
}

torch::Tensor CriticImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x;
  for (size_t k = 0; k + 1 < layers.size(); ++k) h = torch::silu(layers[k]->forward(h));
  return layers.back()->forward(h).squeeze(1);
}

}  // namespace cnf::nn
