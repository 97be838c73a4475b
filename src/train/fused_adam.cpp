#include "fused_adam.h"

#include <torch/torch.h>

#include <cmath>

namespace cnf::train {

namespace {

struct Update {
  double beta1, beta2, bias1, bias2, lr, eps, weight_decay;
  bool decoupled;  // AdamW
};

// One pass: m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
// p <- p - lr / bias1 * m / (sqrt(v) / sqrt(bias2) + eps), with L2 (Adam) or decoupled
// (AdamW) weight decay.
template <class T>
void update(T* p, const T* g, T* m, T* v, int64_t n, const Update& u) {
  const T b1 = T(u.beta1), b2 = T(u.beta2), c1 = T(1 - u.beta1), c2 = T(1 - u.beta2);
  const T wd = T(u.weight_decay), decay = T(1 - u.lr * u.weight_decay);
  const T step = T(u.lr / u.bias1), root2 = T(std::sqrt(u.bias2)), eps = T(u.eps);
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i];
    if (!u.decoupled && u.weight_decay != 0) gi += wd * p[i];
    if (u.decoupled && u.weight_decay != 0) p[i] *= decay;
    m[i] = m[i] * b1 + c1 * gi;
    v[i] = v[i] * b2 + c2 * gi * gi;
    p[i] -= step * (m[i] / (std::sqrt(v[i]) / root2 + eps));
  }
}

bool fusable(const torch::Tensor& p) {
  return p.device().is_cpu() && p.is_contiguous() && p.grad().is_contiguous() &&
         (p.scalar_type() == torch::kFloat || p.scalar_type() == torch::kDouble) &&
         p.grad().scalar_type() == p.scalar_type() && !p.grad().is_sparse();
}

// The body shared by Adam and AdamW: State/Options are LibTorch's types.
template <class State, class Options, class Map>
bool fused_step(std::vector<torch::optim::OptimizerParamGroup>& groups, Map& state,
                bool decoupled) {
  for (auto& group : groups)
    for (auto& p : group.params())
      if (p.grad().defined() && (!fusable(p) || static_cast<Options&>(group.options()).amsgrad()))
        return false;  // the base class handles it all
  torch::NoGradGuard no_grad;
  for (auto& group : groups) {
    auto& o = static_cast<Options&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state.find(key);
      if (it == state.end()) {
        auto s = std::make_unique<State>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<State&>(*it->second);
      s.step(s.step() + 1);
      Update u;
      u.beta1 = std::get<0>(o.betas());
      u.beta2 = std::get<1>(o.betas());
      u.bias1 = 1 - std::pow(u.beta1, s.step());
      u.bias2 = 1 - std::pow(u.beta2, s.step());
      u.lr = o.lr();
      u.eps = o.eps();
      u.weight_decay = o.weight_decay();
      u.decoupled = decoupled;
      AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fused_adam", [&] {
        update<scalar_t>(p.data_ptr<scalar_t>(), p.grad().data_ptr<scalar_t>(),
                         s.exp_avg().template data_ptr<scalar_t>(),
                         s.exp_avg_sq().template data_ptr<scalar_t>(), p.numel(), u);
      });
    }
  }
  return true;
}

torch::Tensor closure_loss(const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) return {};
  torch::AutoGradMode enable_grad(true);
  return closure();
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  auto loss = closure_loss(closure);
  if (!fused_step<torch::optim::AdamParamState, torch::optim::AdamOptions>(param_groups_, state_,
                                                                           false))
    torch::optim::Adam::step(nullptr);
  return loss;
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  auto loss = closure_loss(closure);
  if (!fused_step<torch::optim::AdamWParamState, torch::optim::AdamWOptions>(param_groups_, state_,
                                                                             true))
    torch::optim::AdamW::step(nullptr);
  return loss;
}

}  // namespace cnf::train
