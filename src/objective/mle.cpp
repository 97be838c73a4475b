#include "cnf/objective/mle.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/ode/adjoint.h"

namespace cnf::objective {

MLEOptions::MLEOptions() {
  solve.method = "dopri5";
  solve.adaptive.rtol = solve.adaptive.atol = 1e-5;
  divergence.method = density::Divergence::hutchinson;
  divergence.probes = 1;
}

void MLEOptions::validate() const {
  CNF_CHECK(kinetic >= 0 && std::isfinite(kinetic), "kinetic weight must be >= 0, got ", kinetic);
  CNF_CHECK(jacobian >= 0 && std::isfinite(jacobian), "jacobian weight must be >= 0, got ",
            jacobian);
  CNF_CHECK(steepest >= 0 && std::isfinite(steepest), "steepest weight must be >= 0, got ",
            steepest);
  CNF_CHECK(divergence.probes >= 1, "Hutchinson probes must be >= 1, got ", divergence.probes);
  CNF_CHECK(divergence.method != density::Divergence::analytic,
            "MLE training differentiates the divergence: use exact or hutchinson, not analytic");
}

namespace {

at::Tensor row_sum(const at::Tensor& x) { return x.reshape({x.size(0), -1}).sum(1); }

// Runs the solve by backprop (graph through every stage) or by the adjoint method.
ode::State integrate(const ode::Rhs& f, const ode::State& y0, double t0, double t1,
                     const ode::SolveOptions& so, bool adjoint,
                     const std::vector<at::Tensor>& params, int64_t& nfe) {
  if (adjoint) {
    ode::Solution stats;
    auto y = ode::solve_adjoint(f, y0, params, t0, t1, so, &stats);
    nfe = stats.nfe;
    return y;
  }
  auto sol = ode::solve(f, y0, t0, t1, so);
  nfe = sol.nfe;
  return sol.y;
}

}  // namespace

LossResult mle_loss(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                    const data::Source& prior, const at::Tensor& x_0, const MLEOptions& o,
                    at::Generator& gen) {
  o.validate();
  CNF_CHECK(x_0.dim() >= 2 && x_0.size(0) >= 1, "MLE needs data [B, ...], got ", x_0.sizes());
  const int64_t b = x_0.size(0);
  const bool hutch = o.divergence.method == density::Divergence::hutchinson;
  const bool kin = o.kinetic > 0, jac = o.jacobian > 0;
  // Probes are held fixed through the solve (a continuous estimator, FFJORD sec. 3.1). The
  // Jacobian norm reuses the Hutchinson probe, or draws one when the divergence is exact.
  at::Tensor probes;
  if (hutch) probes = density::draw_probes(o.divergence.probes, x_0, o.divergence.gaussian, gen);
  at::Tensor jac_probe;
  if (jac) jac_probe = hutch ? probes[0] : density::draw_probes(1, x_0, false, gen)[0];

  // State {x, l = int div, [k = int ||v||^2], [j = int ||eps^T grad v||^2]}.
  // The right-hand sides capture by value: the adjoint calls them again during backward(),
  // after this function has returned. `field` and `prior` must outlive the backward pass.
  const density::DivergenceOptions div_options = o.divergence;
  // An MLP field takes the forward-mode route (nn/velocity.h forward_with_jvp): the same
  // estimate e^T (dv/dx) e, differentiated by one hand-written backward instead of a
  // double backward through LibTorch's graph. `--fast-mlp off` keeps the autograd route.
  auto* mlp = hutch && nn::fast::enabled() ? dynamic_cast<nn::MLPVelocityImpl*>(&field) : nullptr;
  ode::Rhs rhs = [=, &field](double t, const ode::State& y) {
    // Without grad mode (the adjoint's forward pass) the derivatives are computed locally
    // and returned detached; with it (backprop, the adjoint's backward pass) the graph is
    // kept so that the loss can be differentiated.
    const bool keep = at::GradMode::is_enabled();
    torch::AutoGradMode enable(true);
    auto x = y[0].requires_grad() ? y[0] : y[0].detach().requires_grad_(true);
    auto tt = torch::full({b}, t, x.options());
    at::Tensor v, div, jnorm;
    if (mlp) {
      // All K probes in one call on K stacked copies of the batch.
      const int64_t k = probes.size(0);
      auto u = probes.reshape({k * b, -1});
      auto [vk, jv] = k == 1 ? mlp->forward_with_jvp(x, tt, u)
                             : mlp->forward_with_jvp(x.repeat({k, 1}), tt.repeat({k}), u);
      v = vk.slice(0, 0, b);
      div = row_sum(jv * u).view({k, b}).mean(0);
      // ||(dv/dx) e||^2 estimates ||dv/dx||_F^2 as ||e^T dv/dx||^2 does (both have mean
      // tr(J^T J) for probes with identity covariance).
      if (jac) jnorm = row_sum(jv.slice(0, 0, b).pow(2));
    } else if (hutch) {
      v = field.forward(x, tt);
      std::vector<at::Tensor> est;
      for (int64_t k = 0; k < probes.size(0); ++k) {
        auto e = probes[k];
        auto vjp = torch::autograd::grad({v}, {x}, {e}, /*retain_graph=*/true,
                                         /*create_graph=*/true)[0];
        est.push_back(row_sum(vjp * e));
        if (jac && k == 0) jnorm = row_sum(vjp.pow(2));
      }
      div = torch::stack(est).mean(0);
    } else {
      v = field.forward(x, tt);
      div = density::velocity_and_divergence(field, x, tt, div_options, {},
                                             /*create_graph=*/true)
                .second;
      if (jac) {
        auto vjp = torch::autograd::grad({v}, {x}, {jac_probe}, /*retain_graph=*/true,
                                         /*create_graph=*/true)[0];
        jnorm = row_sum(vjp.pow(2));
      }
    }
    ode::State out{v, div};
    if (kin) out.push_back(row_sum(v.pow(2)));
    if (jac) out.push_back(jnorm);
    if (!keep)
      for (auto& z : out) z = z.detach();
    return out;
  };

  ode::State y0{x_0, torch::zeros({b}, x_0.options())};
  if (kin) y0.push_back(torch::zeros({b}, x_0.options()));
  if (jac) y0.push_back(torch::zeros({b}, x_0.options()));
  ode::SolveOptions so = o.solve;
  so.adaptive.error_mask.assign(y0.size(), false);
  so.adaptive.error_mask[0] = true;  // the integrals ride along outside step control
  const auto params = field.parameters();
  int64_t nfe = 0;
  auto y1 = integrate(rhs, y0, 0.0, 1.0, so, o.adjoint, params, nfe);

  const double s1 = schedule.sigma_1();
  auto log_prob = density::prior_log_prob(prior, y1[0], s1) + y1[1];
  auto nll = -log_prob.mean();
  auto loss = nll;
  LossResult r;
  r.diagnostics["nll"] = nll.detach();
  r.diagnostics["nfe"] = torch::tensor(static_cast<double>(nfe));
  size_t next = 2;
  if (kin) {
    auto rk = y1[next++].mean();
    loss = loss + o.kinetic * rk;
    r.diagnostics["kinetic"] = rk.detach();
  }
  if (jac) {
    auto rj = y1[next++].mean();
    loss = loss + o.jacobian * rj;
    r.diagnostics["jacobian"] = rj.detach();
  }

  if (o.steepest > 0) {
    // Second solve, t = 1 -> 0 from X_1: {x, s = grad log rho_t(x), q}, with
    //   ds/dt = -(grad v)^T s - grad(div v)   (exact divergence),
    //   dq/dt = ||v - (grad log rho_1(x) - s)||^2, so R_S = -q(0).
    // s_1 = grad log rho_1(X_1), kept differentiable in X_1.
    auto x_1 = y1[0].requires_grad() ? y1[0] : y1[0].detach().requires_grad_(true);
    auto s_1 = torch::autograd::grad({density::prior_log_prob(prior, x_1, s1).sum()}, {x_1}, {},
                                     /*retain_graph=*/true, /*create_graph=*/true)[0];
    density::DivergenceOptions exact;
    exact.method = density::Divergence::exact;
    ode::Rhs score_rhs = [=, &field, &prior](double t, const ode::State& y) {
      const bool keep = at::GradMode::is_enabled();
      torch::AutoGradMode enable(true);
      auto x = y[0].requires_grad() ? y[0] : y[0].detach().requires_grad_(true);
      auto tt = torch::full({b}, t, x.options());
      auto [v, div] = density::velocity_and_divergence(field, x, tt, exact, {},
                                                       /*create_graph=*/true);
      std::vector<at::Tensor> outs{v}, seeds{y[1]};
      if (div.requires_grad()) {
        outs.push_back(div);
        seeds.push_back(torch::ones_like(div));
      }
      auto g = torch::autograd::grad(outs, {x}, seeds, /*retain_graph=*/true,
                                     /*create_graph=*/true)[0];
      auto prior_score = torch::autograd::grad({density::prior_log_prob(prior, x, s1).sum()}, {x},
                                               {}, /*retain_graph=*/true,
                                               /*create_graph=*/true)[0];
      auto q = row_sum((v - (prior_score - y[1])).pow(2));
      ode::State out{v, -g, q};
      if (!keep)
        for (auto& z : out) z = z.detach();
      return out;
    };
    ode::SolveOptions back = o.solve;
    back.adaptive.error_mask = {true, true, false};
    // The score solve starts where the likelihood solve ended: X_1 carries its graph
    // (backprop) or its adjoint connection, so R_S is differentiated through both.
    int64_t nfe_score = 0;
    auto ys = integrate(score_rhs, {x_1, s_1, torch::zeros({b}, x_0.options())}, 1.0, 0.0, back,
                        o.adjoint, params, nfe_score);
    auto rs = (-ys.back()).mean();
    loss = loss + o.steepest * rs;
    r.diagnostics["steepest"] = rs.detach();
    r.diagnostics["nfe_score"] = torch::tensor(static_cast<double>(nfe_score));
  }
  r.loss = loss;
  r.diagnostics["loss"] = loss.detach();
  return r;
}

}  // namespace cnf::objective
