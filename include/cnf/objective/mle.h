/// \file
/// cnf/objective/mle.h — maximum likelihood through the ODE (simulation-based CNF training).
///
///   L(theta) = -E log rho_0(x) + lambda_K R_K + lambda_J R_J + lambda_S R_S,
///   log rho_0(x) = log rho_1(X_1) + int_0^1 div v_t(X_t) dt      (FFJORD, Grathwohl et al.
///                                                               2019; Chen et al. 2018)
///
/// integrating the data x = X_0 from t = 0 to the prior at t = 1. The regularizers ride
/// along as extra ODE states that do not steer the step size:
///   R_K = E int_0^1 ||v_t(X_t)||^2 dt                     kinetic energy (RNODE, Finlay et
///   R_J = E int_0^1 ||grad v_t(X_t)||_F^2 dt              al. 2020; Frobenius norm by
///                                                         Hutchinson, E ||eps^T grad v||^2)
///   R_S = E int_0^1 ||v_t - (grad log rho_1 - grad log rho_t)||^2 (X_t) dt
/// R_S pulls the flow toward the steepest descent of KL(rho_t || rho_1) in the Wasserstein
/// geometry, whose velocity is grad log rho_1 - grad log rho_t. The score grad log rho_t
/// along the trajectory comes from the instantaneous change of score, integrated back
/// from s_1 = grad log rho_1(X_1) at t = 1 in a second solve (exact divergence).
/// Source: the idea, pulling a CNF toward the steepest (Wasserstein gradient) flow of the KL
/// so that it reaches its target faster, is the ascent regularization of Chen, Ding,
/// Karayiannidis & Bjorkman (ICLR 2023, "Learning continuous normalizing flows for faster
/// convergence to target distribution via ascent regularizations"); JKO-iFlow (Xu, Cheng &
/// Xie, NeurIPS 2023) follows the same gradient flow by block-wise JKO steps (KL plus a W2
/// proximal term) and has no such penalty. This exact form of R_S (the squared gap to that
/// velocity over t in [0, 1], in cnf's time convention) is cnf's own formulation, not checked
/// term by term against theirs.
///
/// Gradients: backprop through the solver's operations, or the adjoint method
/// (ode::solve_adjoint), which keeps no graph of the forward solve.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/nn/velocity.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"

namespace cnf::objective {

/// Solver, divergence, gradient route and regularizer weights of maximum likelihood.
struct MLEOptions {
  /// dopri5 at rtol = atol = 1e-5, Hutchinson with one Rademacher probe.
  MLEOptions();
  /// dopri5 at rtol = atol = 1e-5 by default.
  ode::SolveOptions solve;
  /// Hutchinson with one Rademacher probe by default (FFJORD's training estimator).
  density::DivergenceOptions divergence;
  /// Gradients by the adjoint method instead of backprop through the solver.
  bool adjoint = false;
  double kinetic = 0.0;   ///< lambda_K
  double jacobian = 0.0;  ///< lambda_J
  double steepest = 0.0;  ///< lambda_S
  /// Throws cnf::Error naming the first bad field.
  void validate() const;
};

/// The MLE loss of a minibatch of data x_0 ([B, D]) under the flow from the prior (scaled
/// by the schedule's sigma_1). Diagnostics (detached): nll, kinetic, jacobian, steepest
/// (the unweighted regularizer values, when on), nfe (forward solve), nfe_score (the
/// change-of-score solve of R_S).
LossResult mle_loss(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                    const data::Source& prior, const at::Tensor& x_0, const MLEOptions& options,
                    at::Generator& gen);

}  // namespace cnf::objective
