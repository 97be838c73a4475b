// Neural OT: the ICNN minimax of Makkuva et al. 2020 and the WGAN-GP critic.

#include "cnf/ot/neural.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"

namespace cnf::ot {

namespace {

// Validated float32 copies of the two sample sets on x's device.
std::pair<at::Tensor, at::Tensor> check_samples(const at::Tensor& x, const at::Tensor& y) {
  for (const auto& [p, name] : {std::pair<const at::Tensor&, const char*>{x, "x"}, {y, "y"}}) {
    CNF_CHECK(p.defined() && p.dim() == 2, name, " must be a 2-D tensor [n, d] of samples, got ",
              p.defined() ? p.sizes() : at::IntArrayRef{}, "; reshape it with .reshape({n, -1})");
    CNF_CHECK(p.size(0) > 0 && p.size(1) > 0, name, " is empty (shape ", p.sizes(),
              "); neural OT needs samples on each side");
    check_finite(p, name);
  }
  CNF_CHECK(x.size(1) == y.size(1), "x and y must have the same number of features, got x ",
            x.sizes(), " and y ", y.sizes());
  const auto opts = x.options().dtype(torch::kFloat32);
  return {x.to(opts), y.to(opts)};
}

at::Tensor minibatch(const at::Tensor& p, int64_t b, at::Generator& gen) {
  const at::Tensor idx =
      torch::randint(p.size(0), {b}, gen, torch::TensorOptions().dtype(torch::kLong));
  return p.index_select(0, idx.to(p.device()));
}

void check_common(int64_t width, int64_t depth, int64_t steps, int64_t batch, double lr,
                  const char* who) {
  CNF_CHECK(width >= 1, who, " width must be >= 1, got ", width);
  CNF_CHECK(depth >= 1, who, " depth must be >= 1, got ", depth);
  CNF_CHECK(steps >= 1, who, " steps must be >= 1, got ", steps);
  CNF_CHECK(batch >= 1, who, " batch_size must be >= 1, got ", batch);
  CNF_CHECK(std::isfinite(lr) && lr > 0, who, " lr must be > 0, got ", lr);
}

// <grad g(x), x> - f(grad g(x)): the inner objective whose max over g is f*(x).
at::Tensor conjugate_term(nn::ICNNImpl& f, nn::ICNNImpl& g, const at::Tensor& x,
                          bool create_graph) {
  const at::Tensor t = g.gradient(x, create_graph);
  return (t * x).sum(1) - f.forward(create_graph ? t : t.detach());
}

}  // namespace

void NeuralW2Options::validate() const {
  check_common(width, depth, steps, batch_size, lr, "neural W2");
  CNF_CHECK(inner_steps >= 1, "neural W2 inner_steps must be >= 1, got ", inner_steps);
}

void CriticW1Options::validate() const {
  check_common(width, depth, steps, batch_size, lr, "critic W1");
  CNF_CHECK(std::isfinite(gp_weight) && gp_weight > 0, "critic W1 gp_weight must be > 0, got ",
            gp_weight, "; the usual value is 10");
}

at::Tensor NeuralW2Result::map(const at::Tensor& x) const {
  return g.ptr()->gradient(x.to(torch::kFloat32), false).detach();
}
at::Tensor NeuralW2Result::inverse_map(const at::Tensor& y) const {
  return f.ptr()->gradient(y.to(torch::kFloat32), false).detach();
}

NeuralW2Result neural_w2(const at::Tensor& x_in, const at::Tensor& y_in, const NeuralW2Options& o) {
  o.validate();
  auto [x, y] = check_samples(x_in, y_in);
  at::Generator gen = make_generator(o.seed);
  const int64_t d = x.size(1);
  NeuralW2Result r;
  {
    // Weight initialization draws from LibTorch's global generator: seed it from ours.
    torch::manual_seed(o.seed);
    r.f = nn::ICNN(nn::ICNNOptions(d).width(o.width).depth(o.depth));
    r.g = nn::ICNN(nn::ICNNOptions(d).width(o.width).depth(o.depth));
  }
  r.f->to(x.device());
  r.g->to(x.device());
  torch::optim::Adam opt_f(r.f->parameters(), torch::optim::AdamOptions(o.lr).betas({0.5, 0.9}));
  torch::optim::Adam opt_g(r.g->parameters(), torch::optim::AdamOptions(o.lr).betas({0.5, 0.9}));
  for (int64_t step = 0; step < o.steps; ++step) {
    for (int64_t k = 0; k < o.inner_steps; ++k) {
      // Ascent in g: maximize E_mu [<grad g(x), x> - f(grad g(x))].
      const at::Tensor xb = minibatch(x, o.batch_size, gen);
      opt_g.zero_grad();
      const at::Tensor loss_g = -conjugate_term(*r.f, *r.g, xb, true).mean();
      loss_g.backward();
      opt_g.step();
      r.g->clamp_weights();
    }
    // Descent in f: minimize E_nu f(y) - E_mu f(grad g(x)) (grad g held fixed).
    const at::Tensor xb = minibatch(x, o.batch_size, gen);
    const at::Tensor yb = minibatch(y, o.batch_size, gen);
    opt_f.zero_grad();
    const at::Tensor t = r.g->gradient(xb, false).detach();
    const at::Tensor loss_f = r.f->forward(yb).mean() - r.f->forward(t).mean();
    CNF_CHECK(std::isfinite(loss_f.item<double>()), "neural W2 diverged at step ", step + 1,
              "; lower lr (now ", o.lr, ") or standardize the samples");
    loss_f.backward();
    opt_f.step();
    r.f->clamp_weights();
  }
  const at::Tensor t = r.g->gradient(x, false).detach();
  const double j = r.f->forward(y).mean().item<double>() +
                   ((t * x).sum(1) - r.f->forward(t)).mean().item<double>();
  const double second_moments =
      x.pow(2).sum(1).mean().item<double>() + y.pow(2).sum(1).mean().item<double>();
  // The dual estimate can dip below 0 by Monte-Carlo and optimization error.
  r.w2 = std::sqrt(std::max(second_moments - 2.0 * j, 0.0));
  r.map_cost = (x - t).pow(2).sum(1).mean().item<double>();
  return r;
}

CriticW1Result critic_w1(const at::Tensor& x_in, const at::Tensor& y_in, const CriticW1Options& o) {
  o.validate();
  auto [x, y] = check_samples(x_in, y_in);
  at::Generator gen = make_generator(o.seed);
  CriticW1Result r;
  {
    torch::manual_seed(o.seed);
    r.critic = nn::Critic(x.size(1), o.width, o.depth);
  }
  r.critic->to(x.device());
  // Betas (0.5, 0.9) as in Gulrajani et al. 2017.
  torch::optim::Adam opt(r.critic->parameters(), torch::optim::AdamOptions(o.lr).betas({0.5, 0.9}));
  for (int64_t step = 0; step < o.steps; ++step) {
    const at::Tensor xb = minibatch(x, o.batch_size, gen);
    const at::Tensor yb = minibatch(y, o.batch_size, gen);
    const at::Tensor u = torch::rand({o.batch_size, 1}, gen, x.options());
    const at::Tensor x_hat = (u * xb + (1 - u) * yb).detach().requires_grad_(true);
    const at::Tensor h_hat = r.critic->forward(x_hat);
    const at::Tensor grad = torch::autograd::grad({h_hat.sum()}, {x_hat}, {}, /*retain_graph=*/true,
                                                  /*create_graph=*/true)[0];
    const at::Tensor penalty = (grad.norm(2, 1) - 1).pow(2).mean();
    const at::Tensor gap = r.critic->forward(xb).mean() - r.critic->forward(yb).mean();
    const at::Tensor loss = -gap + o.gp_weight * penalty;
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  // The mean slope where the penalty acts: interpolates of random pairs, as many as the
  // larger set.
  const int64_t k = std::max(x.size(0), y.size(0));
  const at::Tensor xs = minibatch(x, k, gen), ys = minibatch(y, k, gen);
  const at::Tensor u = torch::rand({k, 1}, gen, x.options());
  const at::Tensor probe = (u * xs + (1 - u) * ys).detach().requires_grad_(true);
  const at::Tensor grad = torch::autograd::grad({r.critic->forward(probe).sum()}, {probe})[0];
  r.slope = grad.norm(2, 1).mean().item<double>();
  CNF_CHECK(r.slope > 0, "critic W1: the trained critic is flat (mean slope ", r.slope,
            "); train longer (steps) or raise lr");
  torch::NoGradGuard no_grad;
  r.gap = (r.critic->forward(x).mean() - r.critic->forward(y).mean()).item<double>();
  r.w1 = r.gap / r.slope;
  return r;
}

}  // namespace cnf::ot
