/// \file
/// cnf/objective/flow_matching.h — conditional flow matching on an affine path.
///
///   L(theta) = E_{t,(x_0, x_1) ~ coupling} ||v_theta(x_t, t) - (d_alpha_t x_0 + d_sigma_t x_1)||^2
///
/// with t ~ U[t_min, 1] by default (Lipman et al., ICLR 2023, eq. 9 / 23; Albergo & Vanden-Eijnden
/// 2023; Liu et al. 2023 for the rectified (condot, sigma_min = 0) case). Its minimizer is
/// the marginal velocity u_t(x) = E[d_alpha_t x_0 + d_sigma_t x_1 | x_t = x]. Other time
/// densities (logit-normal, ...) and weightings over time: objective/time_density.h; they
/// change how the error is spread over t, not the minimizer.
///
/// Bridge noise (SB-CFM, Tong et al. 2024, eq. for the Brownian-bridge path): with
/// bridge_sigma = s > 0 the conditional path gets independent Gaussian noise z,
///   x_t = alpha_t x_0 + sigma_t x_1 + s sqrt(t (1 - t)) z,
///   u_t = d_alpha_t x_0 + d_sigma_t x_1 + s (1 - 2 t) / (2 sqrt(t (1 - t))) z,
/// the velocity of that Gaussian path (mean derivative plus d std / dt times z). On the
/// condot path with an entropic coupling at epsilon = 2 s^2 this is the Brownian bridge of
/// the Schrodinger bridge; the path is symmetric in t -> 1 - t, so data at t = 0 changes
/// nothing. s = 0 (the default) draws nothing extra and leaves the loss as it was.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "cnf/nn/velocity.h"
#include "cnf/objective/time_density.h"
#include "cnf/path/schedule.h"

/// Training losses: conditional flow matching, denoising score matching and maximum
/// likelihood through the ODE.
namespace cnf::objective {

/// A training minibatch: data x_0 and noise (or prior samples) x_1, already coupled.
struct Batch {
  /// \var x_0
  /// Data x_0 [B, ...].
  /// \var x_1
  /// Noise or prior samples x_1 [B, ...]; row i is the partner of x_0[i].
  at::Tensor x_0, x_1;
};

/// A scalar loss and named diagnostics (detached tensors; read them only when logging).
struct LossResult {
  /// The scalar loss, with its autograd graph.
  at::Tensor loss;
  /// Named diagnostics, detached.
  std::map<std::string, at::Tensor> diagnostics;
};

/// The path and the time distribution of conditional flow matching.
struct FlowMatchingOptions {
  /// The schedule of the path (required).
  path::SchedulePtr schedule;
  /// Times are drawn from U[t_min, t_max]; t_min < 0 means "the schedule's t_min()".
  double t_min = -1.0;
  /// Upper end of the time range (<= 1).
  double t_max = 1.0;
  /// When > 0, t is drawn uniformly from the N = time_grid times {1, 1 - 1/N, ..., 1/N}
  /// at which an N-step Euler sampler evaluates the field (N-step distillation, Liu et
  /// al. 2023, sec. 2.3); t_min and t_max are then unused.
  int64_t time_grid = 0;
  /// sigma of the Brownian-bridge noise added to the path (0: none), see above.
  double bridge_sigma = 0.0;
  /// The density t is drawn from on [t_min, t_max] (objective/time_density.h); uniform by
  /// default. Must be uniform with time_grid.
  TimeDensity time_sampling;
  /// A time density the squared error is weighted by, (t_max - t_min) pi(t) (mean 1 under
  /// uniform times); uniform (weight 1) by default.
  TimeDensity time_weighting;
};

/// Conditional flow-matching loss of `field` on `batch`; t drawn from `gen`.
LossResult flow_matching_loss(nn::VelocityFieldImpl& field, const Batch& batch,
                              const FlowMatchingOptions& options, at::Generator& gen);

}  // namespace cnf::objective
