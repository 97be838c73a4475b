/// \file
/// cnf/path/affine.h — sampling an affine path and everything derived from a schedule.
///
///   x_t  = alpha_t x_0 + sigma_t x_1                  (x_0 data, x_1 noise)
///   u_t  = d_alpha_t x_0 + d_sigma_t x_1              (conditional target velocity)
///   f(t) = d log alpha_t / dt,  g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2
///   score = -E[x_1 | x_t] / sigma_t
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "cnf/core/registry.h"
#include "cnf/path/schedule.h"

namespace cnf::path {

/// One draw from the conditional path: x_t and its conditional velocity dx_t.
struct PathSample {
  at::Tensor t;     ///< [B]
  at::Tensor x_t;   ///< [B, ...]
  at::Tensor dx_t;  ///< [B, ...] the flow-matching target u_t(x_t | x_0, x_1)
};

/// Broadcasts a per-sample quantity `a` of shape [B] against `like` of shape [B, ...].
at::Tensor expand_as_batch(const at::Tensor& a, const at::Tensor& like);

/// x_t and the target velocity at times `t` ([B]) between data x_0 and noise x_1.
PathSample sample_path(const Schedule& schedule, const at::Tensor& x_0, const at::Tensor& x_1,
                       const at::Tensor& t);

/// What a network predicts. All five are interchangeable given (alpha_t, sigma_t, ...).
///
/// `v` is the v-prediction of Salimans & Ho (ICLR 2022), v = alpha eps - sigma x_0 on a
/// variance-preserving path (not the flow's velocity). On any affine path cnf reads it on the
/// variance-preserving path with the same log-SNR: with r = sqrt(alpha_t^2 + sigma_t^2),
/// a = alpha_t / r, s = sigma_t / r and x^ = x_t / r (so x^ = a x_0 + s x_1, a^2 + s^2 = 1),
///   v = a x_1 - s x_0,   x_0 = a x^ - s v,   x_1 = s x^ + a v.
/// Its target stays bounded (|v| <= |x_0| + |x_1|) at both ends of every path, where the noise
/// prediction (t -> 0) or the data prediction (t -> 1) is ill-conditioned; it is also the
/// EDM preconditioning of Karras et al. (NeurIPS 2022) with sigma_data = 1: their
/// c_skip = a^2, c_out = s, c_in = a in x / alpha, and network output F = -v.
enum class Param { velocity, score, data, noise, v };

/// "velocity", "score", "data" (x_0-prediction), "noise" (x_1 / epsilon-prediction), "v"
/// (v-prediction).
Param parse_param(const std::string& name);
/// The parameterizations by name: velocity, score, data, noise, v.
const Registry<Param>& params();
/// The name of `p`, as parse_param reads it.
std::string param_name(Param p);

/// The one conversion between parameterizations (DESIGN.md §1): reads `pred` as `from`
/// at state `x_t` and time `t` ([B]) and returns it as `to`. Through the pair
/// (x0_hat, x1_hat) solving  [alpha sigma; d_alpha d_sigma] [x0; x1] = [x_t; v].
at::Tensor convert(const Schedule& schedule, const at::Tensor& pred, Param from, Param to,
                   const at::Tensor& x_t, const at::Tensor& t);

/// Drift and diffusion coefficients of the forward SDE dx = f(t) x dt + g(t) dw whose
/// marginals given x_0 are N(alpha_t x_0, sigma_t^2 I).
struct SDECoefficients {
  /// \var f
  /// Drift coefficient f(t) = d log alpha_t / dt.
  /// \var g
  /// Diffusion coefficient g(t) = sqrt(d sigma_t^2 / dt - 2 f(t) sigma_t^2), clamped at 0.
  at::Tensor f, g;
};
/// f(t) and g(t) of the forward SDE at times `t` (any shape).
SDECoefficients sde_coefficients(const Schedule& schedule, const at::Tensor& t);

/// Log signal-to-noise ratio lambda_t = log(alpha_t / sigma_t).
at::Tensor log_snr(const Schedule& schedule, const at::Tensor& t);

/// Forward perturbation: x_t = alpha_t x_0 + sigma_t x_1 with fresh x_1 ~ N(0, I) from
/// `gen`, i.e. one draw of the transition kernel N(alpha_t x_0, sigma_t^2 I) of the forward
/// SDE. Returns {x_t, x_1}.
std::pair<at::Tensor, at::Tensor> perturb(const Schedule& schedule, const at::Tensor& x_0,
                                          const at::Tensor& t, at::Generator& gen);

/// A closed time interval [lo, hi] inside [0, 1].
struct TimeRange {
  /// \var lo
  /// Start of the interval.
  /// \var hi
  /// End of the interval.
  double lo = 0.0, hi = 1.0;
};

/// Where every parameterization converts to every other without dividing by a vanishing
/// alpha_t or sigma_t: lo is the first t >= t_min() with sigma_t >= `floor`, hi the last t
/// with alpha_t >= `floor` (1 when alpha_1 >= floor). E.g. condot (sigma_min = 0):
/// [1e-3, 0.999]; vp, subvp: [1e-3, 1] (t_min, and alpha_1 = 6.6e-3); ve: [0, 1]; cosine:
/// [6.4e-4, 0.99936]. Reading a noise prediction as data at t = 1 on the OT path has no
/// answer (alpha_1 = 0: the noisy state carries no trace of x_0), so conversions clamp their
/// time into this range and fast samplers run inside it. Assumes sigma_t increasing and
/// alpha_t non-increasing, as for every registered schedule.
TimeRange conversion_range(const Schedule& schedule, double floor = 1e-3);

/// lambda_t at one time, in float64.
double log_snr_at(const Schedule& schedule, double t);

/// The time t in `range` with lambda_t = `lambda` (lambda_t strictly decreasing), by
/// Newton's method on dlambda/dt = d_alpha/alpha - d_sigma/sigma safeguarded by bisection;
/// |lambda_t - lambda| <= 1e-12 (1 + |lambda|) or a bracket of width 1e-15. Throws
/// cnf::Error when `lambda` lies outside [lambda(hi), lambda(lo)].
double time_at_log_snr(const Schedule& schedule, double lambda, TimeRange range);

}  // namespace cnf::path
