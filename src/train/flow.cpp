#include "cnf/train/flow.h"

#include <torch/torch.h>

namespace cnf::train {

ode::Solution generate(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                       const at::Tensor& x_1, const ode::SolveOptions& options) {
  torch::NoGradGuard no_grad;
  auto rhs = ode::field_rhs(model);
  return ode::solve(rhs, {x_1 * schedule.sigma_1()}, 1.0, 0.0, options);
}

}  // namespace cnf::train
