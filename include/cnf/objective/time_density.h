/// \file
/// cnf/objective/time_density.h — densities over training times: which t a simulation-free
/// loss draws (`--time-sampling`) and how it weights each t (`--time-weighting`).
///
/// Flow matching and score matching average a per-time loss L(t) over t. Drawing t from a
/// density pi and weighting uniformly drawn times by pi give the same expected loss,
///   E_{t ~ pi} L(t) = E_{t ~ U[lo, hi]} (hi - lo) pi(t) L(t),
/// with different variance; Esser et al. (ICML 2024, sec. 3.1) discuss the two as one
/// choice. Every density here lives on (0, 1), in cnf's time (data at t = 0, noise at t = 1),
/// and is truncated to the loss's time range [lo, hi] exactly: with F its cumulative
/// distribution function, a draw is t = F^{-1}(u), u ~ U[F(lo), F(hi)], and the density on
/// [lo, hi] is F'(t) / (F(hi) - F(lo)).
///
///   uniform          pi(t) = 1: the default of every loss.
///   logit-normal     logit(t) ~ N(m, s^2) (Esser et al. 2024, eq. 19: "rf/lognorm(m, s)";
///                    m = 0, s = 1 by default, their best setting). With m = 0 it puts the
///                    most weight at t = 1/2, where the OT path's velocity target is hardest.
///   cosine           t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U[0, 1] (their "CosMap", eq. 21):
///                    on the OT path (condot) it gives the log-SNR of the cosine schedule
///                    under uniform time; pi(t) = 2 / (pi (1 - 2 t + 2 t^2)).
///   log-normal       ln(sigma_t / alpha_t) ~ N(m, s^2): the noise level sigma = sigma_t /
///                    alpha_t of EDM (Karras et al. 2022, table 1: ln sigma ~ N(P_mean,
///                    P_std^2), P_mean = -1.2, P_std = 1.2, the defaults here), read on the
///                    loss's path through its log-SNR; on condot (sigma_min = 0) ln(sigma_t /
///                    alpha_t) = logit(t), so there it equals logit-normal with the same m, s.
///                    Its density depends on the schedule:
///                    pi(t) = phi((z_t - m) / s) / s * dz_t/dt, z_t = ln(sigma_t / alpha_t).
///
/// Spec text: `logit-normal:m=0,s=1`, `log-normal:m=-1.2,s=1.2`, `cosine`, `uniform`.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "cnf/core/registry.h"
#include "cnf/path/schedule.h"

namespace cnf::objective {

/// The families of time densities (see the file comment).
enum class TimeDensityKind { uniform, logit_normal, cosine, log_normal };
/// The families by name: uniform, logit-normal, cosine, log-normal.
const Registry<TimeDensityKind>& time_densities();

/// A density over training times, read from spec text (see the file comment).
struct TimeDensity {
  /// The family.
  TimeDensityKind kind = TimeDensityKind::uniform;
  /// \var m
  /// Location of logit-normal (logit t) and log-normal (ln sigma_t / alpha_t).
  /// \var s
  /// Scale (> 0) of logit-normal and log-normal.
  double m = 0.0, s = 1.0;

  /// Reads spec text; throws cnf::Error naming an unknown family (listing the valid ones), a
  /// key the family does not take, or a scale that is not > 0. Defaults: logit-normal m = 0,
  /// s = 1; log-normal m = -1.2, s = 1.2 (EDM).
  static TimeDensity parse(const std::string& text);
  /// The canonical spec text (the name, and the parameters that differ from the family's
  /// defaults), which parse reads back to an equal density.
  std::string describe() const;
  /// Whether this is the uniform density (nothing to draw or weight specially).
  bool is_uniform() const { return kind == TimeDensityKind::uniform; }

  /// The cumulative distribution function F(t) of the untruncated density on (0, 1), at times
  /// `t` (float64 result). `schedule` is read by log-normal only.
  at::Tensor cdf(const at::Tensor& t, const path::Schedule& schedule) const;
  /// The density of the distribution truncated to [lo, hi] at times `t` in [lo, hi] (float64
  /// result; 0 where the untruncated density vanishes, e.g. logit-normal at t = 0 or 1).
  at::Tensor density(const at::Tensor& t, double lo, double hi,
                     const path::Schedule& schedule) const;
  /// `n` times drawn from the distribution truncated to [lo, hi] (0 <= lo < hi <= 1), by
  /// inverting its distribution function, with the dtype and device of `options`. log-normal
  /// inverts ln(sigma_t / alpha_t) by safeguarded Newton steps on `schedule`.
  at::Tensor sample(int64_t n, double lo, double hi, const path::Schedule& schedule,
                    at::Generator& gen, const at::TensorOptions& options) const;
  /// The weight (hi - lo) * density(t) a loss with uniform times multiplies by to average as
  /// if t were drawn from this density (mean 1 under U[lo, hi]), with the dtype of `t`.
  at::Tensor weight(const at::Tensor& t, double lo, double hi,
                    const path::Schedule& schedule) const;
};

}  // namespace cnf::objective
