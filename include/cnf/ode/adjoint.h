/// \file
/// cnf/ode/adjoint.h — gradients of an ODE solution by the adjoint method.
///
/// For y(t1) = y(t0) + int f(t, y; theta) dt and a loss L(y(t1)), the adjoint a = dL/dy
/// obeys da/dt = -a^T df/dy, and dL/dtheta = -int_{t1}^{t0} a^T df/dtheta dt (Pontryagin;
/// Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018, Alg. 1). The
/// forward solve keeps no graph; the backward pass integrates [y, a, dL/dtheta] from t1 back
/// to t0, recomputing y in reverse, so memory does not grow with the number of steps.
///
/// Where plain backprop differentiates the discrete solver exactly, the adjoint
/// differentiates the continuous problem: the two agree up to the solver's error.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "cnf/ode/solve.h"

namespace cnf::ode {

/// Solves like `solve`, returning y(t1) connected to autograd: backward() through it
/// yields gradients for y0 (where it requires grad) and for every tensor in `params`
/// (the parameters `f` closes over) by the adjoint ODE, solved with the same method,
/// steps and tolerances. The backward error norm covers y and a (as masked for y); the
/// parameter integrals ride along outside step control. `stats`, if given, receives the
/// forward solution's NFE and step counts; `backward_nfe` the backward pass's NFE.
State solve_adjoint(const Rhs& f, const State& y0, const std::vector<at::Tensor>& params, double t0,
                    double t1, const SolveOptions& options, Solution* stats = nullptr,
                    int64_t* backward_nfe = nullptr);

}  // namespace cnf::ode
