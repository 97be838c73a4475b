/// \file
/// cnf/objective/score_matching.h — denoising score matching on an affine (diffusion) path.
///
///   L(theta) = E_{t, x_0, x_1} lambda(t) || s_theta(x_t, t) + x_1 / sigma_t ||^2,
///   x_t = alpha_t x_0 + sigma_t x_1,  x_1 ~ N(0, I) independent of x_0,
///
/// (Vincent 2011; Song & Ermon 2019; Song et al., ICLR 2021, eq. 7). -x_1/sigma_t is the
/// score of the transition kernel N(alpha_t x_0, sigma_t^2 I); the minimizer is the marginal
/// score grad log q_t. The network may predict any parameterization (`param`): its output is
/// converted by path::convert and the loss is computed in noise units,
///   lambda(t) || s_theta + x_1/sigma_t ||^2 = (lambda(t) / sigma_t^2) || eps_theta - x_1 ||^2.
/// Weightings lambda(t):
///   sigma2      sigma_t^2: the noise-prediction loss || eps_theta - x_1 ||^2 of Ho et al. 2020
///               (the default; with param = noise this is exactly DDPM's "simple" loss).
///   likelihood  g(t)^2: makes the loss bound the KL / negative log-likelihood of the
///               probability flow's SDE (Song, Durkan, Murray & Ermon, NeurIPS 2021, thm. 1).
///               Its variance is large where g^2/sigma^2 is (t -> 0 on VP).
///   uniform     1: the raw score error (large near t = 0, where sigma_t is small).
///   min-snr     min(SNR_t, gamma) in data units, SNR_t = alpha_t^2 / sigma_t^2: the Min-SNR-
///               gamma weighting of Hang et al. (ICCV 2023), which caps the weight of the
///               nearly clean times where every step pulls the network towards the identity.
///               In noise units lambda(t) / sigma_t^2 = min(SNR_t, gamma) / SNR_t, the form
///               the paper gives for noise prediction (gamma = 5 by default:
///               `--weighting min-snr:gamma=5`).
///   edm         EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on the
///               data prediction error (Karras et al. 2022, table 1), with sigma = sigma_t /
///               alpha_t: the data error is sigma^2 times the noise error, so in noise units
///               lambda(t) / sigma_t^2 = 1 + sigma^2 / sigma_data^2 = 1 + 1 / (SNR_t
///               sigma_data^2) (`--weighting edm:sigma_data=0.5`; 1 by default, the scale
///               cnf's v-prediction assumes). Paired with EDM's time density
///               `--time-sampling log-normal` (objective/time_density.h) it is their loss.
/// Times are drawn from U[t_min, t_max], by default path::conversion_range(schedule) (e.g.
/// [1e-3, 1] on VP), where the conversions stay finite; `time_sampling` draws them from
/// another density on that range and `time_weighting` multiplies lambda(t) by one
/// (objective/time_density.h).
#pragma once

#include <ATen/core/Generator.h>

#include <string>

#include "cnf/core/registry.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/path/affine.h"

namespace cnf::objective {

/// The weighting lambda(t) of the loss (see the file comment).
enum class Weighting { sigma2, likelihood, uniform, min_snr, edm };
/// "sigma2", "likelihood", "uniform", "min-snr" or "edm".
Weighting parse_weighting(const std::string& name);
/// The weightings by name: sigma2, likelihood, uniform, min-snr, edm.
const Registry<Weighting>& weightings();
/// The name of `w`, as parse_weighting reads it.
std::string weighting_name(Weighting w);

/// A weighting with its parameter, read from spec text (`sigma2`, `min-snr:gamma=5`).
struct WeightingSpec {
  /// The weighting.
  Weighting kind = Weighting::sigma2;
  /// Min-SNR's cap gamma (> 0).
  double gamma = 5.0;
  /// EDM's data scale sigma_data (> 0); the other weightings take no parameter.
  double sigma_data = 1.0;
  /// The canonical spec text: the name, and its parameter when it differs from the default.
  std::string describe() const;
};
/// Reads spec text; throws cnf::Error naming an unknown weighting, a key the weighting does not
/// take, or a gamma that is not > 0.
WeightingSpec parse_weighting_spec(const std::string& text);

/// Path, parameterization, weighting and times of denoising score matching.
struct ScoreMatchingOptions {
  /// The schedule of the path (required).
  path::SchedulePtr schedule;
  /// What the network predicts.
  path::Param param = path::Param::noise;
  /// The weighting lambda(t); sigma2 by default.
  Weighting weighting = Weighting::sigma2;
  /// The cap gamma of Weighting::min_snr.
  double snr_gamma = 5.0;
  /// The data scale sigma_data of Weighting::edm.
  double sigma_data = 1.0;
  /// The density times are drawn from on [t_min, t_max]; uniform by default.
  TimeDensity time_sampling;
  /// A time density multiplying lambda(t) (objective/time_density.h); uniform: weight 1.
  TimeDensity time_weighting;
  /// \var t_min
  /// Times are drawn from U[t_min, t_max]; < 0 means the conversion range's start.
  /// \var t_max
  /// End of the time range; < 0 means the conversion range's end.
  double t_min = -1.0, t_max = -1.0;
};

/// Denoising score-matching loss of `net` (predicting `options.param`) on `batch`, whose
/// x_1 must be standard normal noise independent of x_0; t drawn from `gen`. Diagnostics:
/// "loss" and "noise_mse" (the unweighted || eps_theta - x_1 ||^2).
LossResult score_matching_loss(nn::VelocityFieldImpl& net, const Batch& batch,
                               const ScoreMatchingOptions& options, at::Generator& gen);

}  // namespace cnf::objective
