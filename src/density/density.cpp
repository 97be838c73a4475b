#include "cnf/density/density.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/core/registry.h"
#include "cnf/path/affine.h"

namespace cnf::density {

const Registry<Divergence>& divergences() {
  static const Registry<Divergence> r("divergence", {{"exact", Divergence::exact},
                                                     {"analytic", Divergence::analytic},
                                                     {"hutchinson", Divergence::hutchinson}});
  return r;
}
Divergence parse_divergence(const std::string& name) { return divergences().get(name); }
std::string divergence_name(Divergence d) { return divergences().name_of(d); }

LikelihoodOptions::LikelihoodOptions() {
  solve.method = "dopri5";
  solve.adaptive.rtol = solve.adaptive.atol = 1e-5;
}

at::Tensor draw_probes(int64_t k, const at::Tensor& like, bool gaussian, at::Generator& gen) {
  CNF_CHECK(k >= 1, "Hutchinson needs >= 1 probe, got ", k);
  std::vector<int64_t> shape{k};
  for (auto s : like.sizes()) shape.push_back(s);
  if (gaussian) return torch::randn(shape, gen, like.options());
  return torch::randint(2, shape, gen, like.options()) * 2 - 1;
}

std::pair<at::Tensor, at::Tensor> velocity_and_divergence(nn::VelocityFieldImpl& field,
                                                          const at::Tensor& x, const at::Tensor& t,
                                                          const DivergenceOptions& o,
                                                          const at::Tensor& probes,
                                                          bool create_graph) {
  if (o.method == Divergence::analytic) {
    CNF_CHECK(field.has_analytic_divergence(),
              "the analytic divergence exists for the mlp and hollow networks only; use ",
              "--divergence exact or hutchinson");
    auto [v, div] = field.forward_with_divergence(x, t);
    return {create_graph ? v : v.detach(), create_graph ? div : div.detach()};
  }
  torch::AutoGradMode enable(true);
  auto x_req = x.requires_grad() ? x : x.detach().requires_grad_(true);
  auto v = field.forward(x_req, t);
  const int64_t b = x.size(0);
  if (o.method == Divergence::hutchinson) {
    CNF_CHECK(probes.defined() && probes.dim() == x.dim() + 1, "Hutchinson needs probes [K, ",
              x.sizes(), "]");
    std::vector<at::Tensor> est;
    for (int64_t k = 0; k < probes.size(0); ++k) {
      auto e = probes[k];
      auto vjp = torch::autograd::grad({v}, {x_req}, {e}, /*retain_graph=*/true, create_graph)[0];
      est.push_back((vjp * e).reshape({b, -1}).sum(1));
    }
    return {create_graph ? v : v.detach(), torch::stack(est)};
  }
  // Exact: one vector-Jacobian product per dimension, reading the diagonal.
  auto v_flat = v.reshape({b, -1});
  const int64_t d = v_flat.size(1);
  auto div = torch::zeros({b}, x.options());
  for (int64_t i = 0; i < d; ++i) {
    auto g = torch::autograd::grad({v_flat.select(1, i).sum()}, {x_req}, {},
                                   /*retain_graph=*/true, create_graph)[0];
    div = div + g.reshape({b, -1}).select(1, i);
  }
  return {create_graph ? v : v.detach(), div};
}

at::Tensor prior_log_prob(const data::Source& prior, const at::Tensor& y, double s1) {
  CNF_CHECK(prior.has_log_prob(), "prior '", prior.spec(),
            "' has no exact log-density; likelihoods need a prior like normal or gmm:K");
  const int64_t b = y.size(0);
  auto flat = y.reshape({b, -1});
  return prior.log_prob(flat / s1).to(y.scalar_type()) -
         static_cast<double>(flat.size(1)) * std::log(s1);
}

namespace {
// Integrates {x, l} with dl/dt = div between t_from and t_to; l starts at zero, one row
// per probe for Hutchinson.
ode::Solution integrate_with_divergence(nn::VelocityFieldImpl& field, const at::Tensor& x,
                                        double t_from, double t_to, const LikelihoodOptions& o,
                                        at::Generator& gen) {
  const bool hutch = o.divergence.method == Divergence::hutchinson;
  at::Tensor probes;
  if (hutch) probes = draw_probes(o.divergence.probes, x, o.divergence.gaussian, gen);
  const int64_t b = x.size(0);
  auto l0 =
      hutch ? torch::zeros({o.divergence.probes, b}, x.options()) : torch::zeros({b}, x.options());
  ode::Rhs rhs = [&](double t, const ode::State& s) {
    auto tt = torch::full({b}, t, x.options());
    auto [v, div] = velocity_and_divergence(field, s[0], tt, o.divergence, probes);
    return ode::State{v.detach(), div.detach()};
  };
  ode::SolveOptions so = o.solve;
  so.adaptive.error_mask = {true, false};  // the log-density rides along
  torch::NoGradGuard no_grad;
  return ode::solve(rhs, {x, l0}, t_from, t_to, so);
}

LikelihoodResult finish(const at::Tensor& log_prob_all, const at::Tensor& x, int64_t nfe,
                        bool hutch) {
  LikelihoodResult r;
  r.x = x;
  r.nfe = nfe;
  if (hutch) {
    r.log_prob_probes = log_prob_all;
    r.log_prob = log_prob_all.mean(0);
  } else {
    r.log_prob = log_prob_all;
  }
  return r;
}

// alpha at the likelihood's start time t_start (1 at t_start = 0, where the flow meets the
// data itself), checked to be a usable start.
double start_alpha(const path::Schedule& schedule, double t_start) {
  CNF_CHECK(std::isfinite(t_start) && t_start >= 0.0 && t_start < 1.0,
            "likelihood start time must be in [0, 1), got ", t_start);
  if (t_start == 0.0) return 1.0;
  const double a = schedule.at_time(t_start).alpha_t.item<double>();
  CNF_CHECK(std::isfinite(a) && a > 0.0, "alpha of ", schedule.describe(), " at the likelihood ",
            "start time ", t_start, " is ", a, "; start where the signal is not yet gone");
  return a;
}

// D log alpha: the log-determinant of x -> alpha x on [B, ...] points.
double scale_log_det(const at::Tensor& x, double alpha) {
  return static_cast<double>(x.numel() / std::max<int64_t>(x.size(0), 1)) * std::log(alpha);
}
}  // namespace

LikelihoodResult log_likelihood(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                                const data::Source& prior, const at::Tensor& x_0,
                                const LikelihoodOptions& o, at::Generator& gen) {
  CNF_CHECK(x_0.dim() >= 2 && x_0.size(0) >= 1, "log_likelihood needs points [B, ...], got ",
            x_0.sizes());
  const double s = o.t_start, a = start_alpha(schedule, s);
  auto sol = integrate_with_divergence(field, s == 0.0 ? x_0 : x_0 * a, s, 1.0, o, gen);
  auto log_prior = prior_log_prob(prior, sol.y[0], schedule.sigma_1());
  // log p(x) = log rho_1(X_1) + int_s^1 div dt + D log alpha_s (LikelihoodOptions::t_start).
  return finish(log_prior + sol.y[1] + scale_log_det(x_0, a), sol.y[0], sol.nfe,
                o.divergence.method == Divergence::hutchinson);
}

LikelihoodResult sample_with_log_prob(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                                      const data::Source& prior, const at::Tensor& x_1,
                                      const LikelihoodOptions& o, at::Generator& gen) {
  const double s1 = schedule.sigma_1();
  const double s = o.t_start, a = start_alpha(schedule, s);
  auto y = x_1 * s1;
  auto sol = integrate_with_divergence(field, y, 1.0, s, o, gen);
  // Integrating 1 -> s accumulates l(s) = -int_s^1 div dt; x = X_s / alpha_s adds
  // D log alpha_s to the log-density.
  auto r = finish(prior_log_prob(prior, y, s1) - sol.y[1] + scale_log_det(y, a), sol.y[0], sol.nfe,
                  o.divergence.method == Divergence::hutchinson);
  if (s != 0.0) r.x = r.x / a;
  return r;
}

at::Tensor score(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                 const data::Source& prior, const at::Tensor& x, double t,
                 const LikelihoodOptions& o) {
  CNF_CHECK(t >= 0.0 && t < 1.0, "score time must be in [0, 1), got ", t);
  CNF_CHECK(o.divergence.method != Divergence::hutchinson,
            "the change of score needs an exact divergence; use exact or analytic");
  const int64_t b = x.size(0);
  ode::SolveOptions forward = o.solve;
  auto x_1 = [&] {
    torch::NoGradGuard no_grad;
    return ode::solve(ode::field_rhs(field), {x}, t, 1.0, forward).y[0];
  }();
  // The prior's score at X_1, by autograd of its log-density.
  const double s1 = schedule.sigma_1();
  at::Tensor s_1;
  {
    torch::AutoGradMode enable(true);
    auto y = x_1.detach().requires_grad_(true);
    s_1 = torch::autograd::grad({prior_log_prob(prior, y, s1).sum()}, {y})[0];
  }
  ode::Rhs rhs = [&](double tau, const ode::State& s) {
    torch::AutoGradMode enable(true);
    auto x_req = s[0].detach().requires_grad_(true);
    auto tt = torch::full({b}, tau, x.options());
    auto [v, div] = velocity_and_divergence(field, x_req, tt, o.divergence, {},
                                            /*create_graph=*/true);
    // One backward pass gives (grad v)^T s + grad(div v). A divergence that does not
    // depend on x (an affine field) has no graph and contributes nothing.
    std::vector<at::Tensor> outs{v}, seeds{s[1]};
    if (div.requires_grad()) {
      outs.push_back(div);
      seeds.push_back(torch::ones_like(div));
    }
    auto g = torch::autograd::grad(outs, {x_req}, seeds)[0];
    return ode::State{v.detach(), -g.detach()};
  };
  torch::NoGradGuard no_grad;
  auto sol = ode::solve(rhs, {x_1, s_1}, 1.0, t, o.solve);
  return sol.y[1];
}

Estimate mean_and_stderr(const at::Tensor& values) {
  auto v = values.to(torch::kFloat64).reshape({-1});
  CNF_CHECK(v.numel() >= 1, "cannot average an empty set");
  Estimate e;
  e.mean = v.mean().item<double>();
  e.stderr = v.numel() > 1 ? v.std().item<double>() / std::sqrt(static_cast<double>(v.numel())) : 0;
  return e;
}

Estimate entropy(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                 const data::Source& prior, int64_t n, const LikelihoodOptions& o,
                 at::Generator& gen) {
  CNF_CHECK(n >= 2, "entropy needs n >= 2 samples, got ", n);
  auto x_1 = prior.sample(n, gen);
  auto r = sample_with_log_prob(field, schedule, prior, x_1, o, gen);
  return mean_and_stderr(-r.log_prob);
}

double bits_per_dim(double nll_nats, int64_t dim, int64_t bins) {
  CNF_CHECK(dim >= 1 && bins >= 2, "bits_per_dim needs dim >= 1 and bins >= 2");
  const double d = static_cast<double>(dim);
  return (nll_nats + d * std::log(static_cast<double>(bins))) / (d * std::log(2.0));
}

at::Tensor dequantize(const at::Tensor& levels, int64_t bins, at::Generator& gen) {
  CNF_CHECK(bins >= 2, "dequantize needs bins >= 2, got ", bins);
  auto k = levels.to(torch::kFloat32);
  CNF_CHECK(k.numel() == 0 || (k.min().item<double>() >= 0 && k.max().item<double>() < bins),
            "levels must lie in [0, ", bins, ")");
  return (k + torch::rand(k.sizes(), gen, k.options())) / static_cast<double>(bins);
}

}  // namespace cnf::density
