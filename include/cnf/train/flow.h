/// \file
/// cnf/train/flow.h — using a trained flow: transport prior samples to data by the ODE
/// d/dt x = v_t(x) from t = 1 to t = 0 (DESIGN.md §1).
#pragma once

#include <ATen/core/Tensor.h>

#include "cnf/nn/velocity.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"

namespace cnf::train {

/// Starts at sigma_1 * x_1 (x_1 ~ prior; sigma_1 = 1 except for VE paths) and integrates
/// to t = 0 without building an autograd graph. Returns the solution (state {x_0}, NFE).
///
/// Example (examples/train_own_data/main.cpp): RK4 in 20 steps from a checkpoint.
/// \snippet train_own_data/main.cpp sample
ode::Solution generate(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                       const at::Tensor& x_1, const ode::SolveOptions& options);

}  // namespace cnf::train
