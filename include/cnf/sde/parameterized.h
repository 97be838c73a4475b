/// \file
/// cnf/sde/parameterized.h — a network read through what it predicts.
///
/// A network may predict the velocity u_t, the score grad log q_t, the data x_0 or the noise
/// x_1 (DESIGN.md §1). All four are the same model given (alpha_t, sigma_t, d_alpha_t,
/// d_sigma_t), related by path::convert, the one conversion. This header wraps a network so
/// that every consumer sees the parameterization it needs: ode::solve, train::generate and
/// the likelihood routes see a velocity field; the samplers of sde/samplers.h ask for score,
/// x_0 or noise predictions.
///
/// Near the ends of the path some conversions divide by a vanishing alpha_t (noise -> data
/// at t = 1 on the OT path) or sigma_t (data -> noise at t = 0). Whenever the network's
/// parameterization differs from the one asked for, its time is clamped into
/// path::conversion_range(schedule) (e.g. [1e-3, 0.999] on condot): a sampler integrating
/// to t = 0 then reads the prediction of t = 1e-3 on the last 1e-3 of the path, an error of
/// the order of that interval. A network asked for its own parameterization is never
/// clamped, so velocity models behave exactly as before.
#pragma once

#include <torch/types.h>

#include "cnf/nn/velocity.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

namespace cnf::sde {

/// The prediction of `net` (which predicts `param`) at x ([B, ...]) and t ([B]) expressed as
/// `want`, with t clamped into `range` when param != want (see the header comment).
torch::Tensor predict(nn::VelocityFieldImpl& net, path::Param param, const path::Schedule& schedule,
                      const path::TimeRange& range, const torch::Tensor& x, const torch::Tensor& t,
                      path::Param want);

/// `net` (predicting `param`) seen as a network predicting `as` (velocity by default):
///   auto v = std::make_shared<ParameterizedFieldImpl>(net, path::Param::noise, schedule);
/// The wrapped network is a registered submodule, so to(), eval() and parameters() reach it.
class ParameterizedFieldImpl : public nn::VelocityFieldImpl {
 public:
  /// Reads `net` (predicting `param`) as a network predicting `as` on `schedule`; both pointers
  /// are required.
  ParameterizedFieldImpl(nn::VelocityField net, path::Param param, path::SchedulePtr schedule,
                         path::Param as = path::Param::velocity);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return net->sample_shape(); }
  void set_labels(const torch::Tensor& labels) override { net->set_labels(labels); }
  int64_t classes() const override { return net->classes(); }

  /// The wrapped network.
  nn::VelocityField net;
  /// \var param
  /// What the wrapped network predicts.
  /// \var as
  /// What this field returns.
  path::Param param, as;
  /// The schedule of the conversions.
  path::SchedulePtr schedule;
  /// path::conversion_range(schedule): where time is clamped when param != as.
  path::TimeRange range;
};

/// The velocity field of a network predicting `param`: `net` itself for velocity models,
/// a ParameterizedField otherwise.
nn::VelocityField velocity_view(nn::VelocityField net, path::Param param,
                                path::SchedulePtr schedule);

}  // namespace cnf::sde
