// src/sde/steps.h — what the samplers' loops share (internal to the library): schedule values
// at one time in float64, noise drawn on the generator's device, and the order of a multistep
// sampler's step.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>

#include "cnf/path/schedule.h"
#include "cnf/sde/samplers.h"

namespace cnf::sde::detail {

/// Schedule values at one time, in float64, with lambda = log(alpha / sigma).
struct Coef {
  double alpha, sigma, d_alpha, d_sigma, lambda;
};
/// The coefficients at t.
Coef coef(const path::Schedule& schedule, double t);

/// Standard normal noise shaped like x, drawn on the generator's device and moved to x's.
at::Tensor noise_like(const at::Tensor& x, at::Generator& gen);

/// The order of step k (0-based) of n for a multistep method of order `order`: at most k + 1
/// (the evaluations it has so far), and, with lower_order_final on a run under 15 steps, at most
/// n - k (the diffusers library's rule: first order on the last step, second on the one before).
int step_order(int order, size_t k, size_t n, const SamplerOptions& options);

/// SamplerMethod::evals_per_step of the samplers with a fixed cost: none (the ODE samplers,
/// whose solver decides), one or two network evaluations per grid step.
inline int64_t no_evaluations(const SamplerOptions&) { return 0; }
/// One evaluation per step.
inline int64_t one_evaluation(const SamplerOptions&) { return 1; }
/// Two evaluations per step.
inline int64_t two_evaluations(const SamplerOptions&) { return 2; }

}  // namespace cnf::sde::detail
