#include "cnf/ode/adjoint.h"

#include <torch/torch.h>

#include "cnf/core/error.h"

namespace cnf::ode {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the backward pass needs besides tensors; kept alive by the autograd graph.
struct Problem : torch::CustomClassHolder {
  Rhs f;
  SolveOptions options;
  size_t n_state = 0;
  double t0 = 0, t1 = 1;
  int64_t* backward_nfe = nullptr;
};

struct AdjointFunction : torch::autograd::Function<AdjointFunction> {
  // inputs = y0 tensors followed by the parameters.
  // A TensorList (not a std::vector) so that autograd sees each tensor as an input.
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs,
                               c10::intrusive_ptr<Problem> problem, Solution* stats) {
    const auto& p = *problem;
    State y0(inputs.begin(), inputs.begin() + static_cast<long>(p.n_state));
    Solution sol;
    {
      torch::NoGradGuard no_grad;
      sol = solve(p.f, y0, p.t0, p.t1, p.options);
    }
    if (stats != nullptr) *stats = sol;
    ctx->saved_data["problem"] = c10::IValue::make_capsule(problem);
    ctx->saved_data["n_params"] = static_cast<int64_t>(inputs.size() - p.n_state);
    std::vector<at::Tensor> params(inputs.begin() + static_cast<long>(p.n_state), inputs.end());
    ctx->saved_data["params"] = params;
    ctx->saved_data["y1"] = std::vector<at::Tensor>(sol.y.begin(), sol.y.end());
    return sol.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_y1) {
    auto problem =
        c10::static_intrusive_pointer_cast<Problem>(ctx->saved_data["problem"].toCapsule());
    const auto& p = *problem;
    auto params = ctx->saved_data["params"].toTensorVector();
    auto y1 = ctx->saved_data["y1"].toTensorVector();
    const size_t n = p.n_state, m = params.size();

    // Augmented state [y (n), a (n), dL/dtheta (m)], integrated from t1 back to t0.
    State aug;
    for (size_t i = 0; i < n; ++i) aug.push_back(y1[i]);
    for (size_t i = 0; i < n; ++i)
      aug.push_back(grad_y1[i].defined() ? grad_y1[i] : torch::zeros_like(y1[i]));
    for (const auto& q : params) aug.push_back(torch::zeros_like(q));

    Rhs augmented = [&](double t, const State& s) {
      State y_req;
      for (size_t i = 0; i < n; ++i) y_req.push_back(s[i].detach().requires_grad_(true));
      State out;
      torch::AutoGradMode enable(true);
      State fy = p.f(t, y_req);
      std::vector<at::Tensor> wrt(y_req.begin(), y_req.end());
      wrt.insert(wrt.end(), params.begin(), params.end());
      std::vector<at::Tensor> outs, grads_out;
      for (size_t i = 0; i < n; ++i) {
        if (!fy[i].requires_grad()) continue;  // f does not depend on anything differentiable
        outs.push_back(fy[i]);
        grads_out.push_back(s[n + i]);
      }
      std::vector<at::Tensor> vjp(wrt.size());
      if (!outs.empty())
        vjp = torch::autograd::grad(outs, wrt, grads_out, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t i = 0; i < n; ++i) out.push_back(fy[i].detach());
      for (size_t i = 0; i < n + m; ++i) {
        const auto& like = s[n + i];
        out.push_back(vjp[i].defined() ? -vjp[i] : torch::zeros_like(like));
      }
      return out;
    };

    SolveOptions back = p.options;
    back.observer = nullptr;
    back.save_at.clear();
    std::vector<bool> mask;
    for (size_t i = 0; i < n; ++i)
      mask.push_back(p.options.adaptive.error_mask.empty() || p.options.adaptive.error_mask[i]);
    for (size_t i = 0; i < n; ++i) mask.push_back(mask[i]);
    for (size_t i = 0; i < m; ++i) mask.push_back(false);
    back.adaptive.error_mask = mask;
    Solution sol;
    {
      torch::NoGradGuard no_grad;
      sol = solve(augmented, aug, p.t1, p.t0, back);
    }
    if (p.backward_nfe != nullptr) *p.backward_nfe = sol.nfe;

    variable_list grads;
    for (size_t i = 0; i < n + m; ++i) grads.push_back(sol.y[n + i]);
    grads.emplace_back();  // the Problem argument
    grads.emplace_back();  // the stats pointer
    return grads;
  }
};
}  // namespace

State solve_adjoint(const Rhs& f, const State& y0, const std::vector<at::Tensor>& params, double t0,
                    double t1, const SolveOptions& options, Solution* stats,
                    int64_t* backward_nfe) {
  CNF_CHECK(!y0.empty(), "ODE initial state is empty");
  for (size_t i = 0; i < params.size(); ++i)
    CNF_CHECK(params[i].defined(), "adjoint parameter ", i, " is an undefined tensor");
  auto problem = c10::make_intrusive<Problem>();
  problem->f = f;
  problem->options = options;
  problem->n_state = y0.size();
  problem->t0 = t0;
  problem->t1 = t1;
  problem->backward_nfe = backward_nfe;
  variable_list inputs(y0.begin(), y0.end());
  inputs.insert(inputs.end(), params.begin(), params.end());
  return AdjointFunction::apply(at::TensorList(inputs), problem, stats);
}

}  // namespace cnf::ode
