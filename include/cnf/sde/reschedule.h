/// \file
/// cnf/sde/reschedule.h — a network trained on one affine path read on another.
///
/// Affine paths x_t = alpha_t x_0 + sigma_t x_1 with the same range of log-SNR
/// lambda = log(alpha / sigma) are one family up to a change of time and a scale (Kingma,
/// Salimans, Poole & Ho, "Variational Diffusion Models", NeurIPS 2021, sec. 5.1): the state
/// x on path B at time t is c x_A with x_A on path A at the time t_A where
/// lambda_A(t_A) = lambda_B(t), c = sqrt(alpha_B^2 + sigma_B^2) / sqrt(alpha_A^2 + sigma_A^2)
/// (= alpha_B / alpha_A = sigma_B / sigma_A). The data prediction is the same on both,
/// E[x_0 | x_B = x] = E[x_0 | x_A = x / c], so a network trained on A serves B:
///   D_B(x, t) = D_A(x / c, t_A),
/// read as any parameterization of B (path::convert). Its probability-flow ODE on B is A's
/// reparameterized, so an exact solve transports the same prior draws to the same samples;
/// a solver's steps differ, and so do its errors — e.g. a VP-trained model sampled along the
/// straighter OT path (`cnf sample --sample-schedule condot`).
///
/// Times of B whose lambda lies outside A's range on path::conversion_range(A) use A's nearest
/// end (lambda_condot -> -inf at t = 1, while VP's stops at -5.0): there the network is read
/// at the noisiest (or cleanest) time it was trained on.
#pragma once

#include <torch/types.h>

#include <vector>

#include "cnf/nn/velocity.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

namespace cnf::sde {

/// `net`, predicting `param` on path `from`, read as a network predicting `as` on path `to`
/// (see the file comment).
class RescheduledFieldImpl : public nn::VelocityFieldImpl {
 public:
  /// All pointers are required.
  RescheduledFieldImpl(nn::VelocityField net, path::Param param, path::SchedulePtr from,
                       path::SchedulePtr to, path::Param as = path::Param::velocity);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return net->sample_shape(); }
  void set_labels(const torch::Tensor& labels) override { net->set_labels(labels); }
  int64_t classes() const override { return net->classes(); }

  /// The time t_A on `from` and the scale c that match time `t` on `to` (t is clamped into
  /// path::conversion_range(to) first).
  std::pair<double, double> match(double t) const;

  /// The wrapped network.
  nn::VelocityField net;
  /// \var param
  /// What the wrapped network predicts.
  /// \var as
  /// What this field returns.
  path::Param param, as;
  /// \var from
  /// The path the network was trained on.
  /// \var to
  /// The path it is read on.
  path::SchedulePtr from, to;

 private:
  path::TimeRange range_from_, range_to_;
  double lambda_lo_, lambda_hi_;  // lambda_from at range_from_.hi and .lo
};

}  // namespace cnf::sde
