/// \file
/// cnf/train/objectives.h — the training objectives as objects: what each needs from a run
/// (a prior with a density, Gaussian noise, independent pairs), what it allows (couplings,
/// parameterizations), where its trained field is valid, and the loss of one micro-batch.
///
/// The trainer asks these questions instead of branching on the objective's name, so adding
/// an objective is its loss in objective/ plus one class here and its row in objectives().
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "cnf/core/registry.h"
#include "cnf/coupling/coupling.h"
#include "cnf/data/sources.h"
#include "cnf/nn/velocity.h"
#include "cnf/objective/flow_matching.h"
#include "cnf/objective/mle.h"
#include "cnf/objective/score_matching.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

namespace cnf::train {

/// What the loss of one micro-batch reads besides the batch.
struct ObjectiveInputs {
  /// The network as built, predicting `param` (what score matching regresses).
  nn::VelocityFieldImpl* network = nullptr;
  /// The network read as a velocity field (what flow matching and mle train).
  nn::VelocityFieldImpl* field = nullptr;
  /// The path's schedule.
  path::SchedulePtr schedule;
  /// The prior (mle evaluates its density).
  const data::Source* prior = nullptr;
  /// What the network predicts.
  path::Param param = path::Param::velocity;
  /// Score matching's lambda(t) and its parameter.
  objective::WeightingSpec weighting;
  /// The coupling's Brownian-bridge sigma (sb), 0 otherwise.
  double bridge_sigma = 0.0;
  /// Distillation onto an N-step Euler grid (0: continuous times).
  int64_t time_grid = 0;
  /// \var time_sampling
  /// The density fm and score draw times from (objective/time_density.h).
  /// \var time_weighting
  /// The time density fm and score weight their error by.
  objective::TimeDensity time_sampling, time_weighting;
  /// The mle objective's solver, divergence and regularizers.
  const objective::MLEOptions* mle = nullptr;
};

/// A training objective (see the file comment). Instances are stateless singletons held by
/// objectives().
class Objective {
 public:
  virtual ~Objective() = default;
  /// Its registry name (fm, score, mle), as checkpoints store it.
  virtual std::string name() const = 0;
  /// What a network trained by it predicts when the flow spec names no parameterization.
  virtual path::Param default_param() const = 0;
  /// Whether a batch pairs data x_0 with prior draws x_1; false: the loss takes data alone
  /// (x_1 undefined), and no coupling applies.
  virtual bool pairs_with_prior() const { return true; }
  /// Whether the loss draws times (simulation-free losses), so that a time density and a
  /// weighting over time apply; false: it integrates the ODE over all of [0, 1] (mle).
  virtual bool draws_times() const { return true; }
  /// Throws cnf::Error naming the option to change when this run's prior or coupling cannot
  /// train it (called once, before the first step).
  virtual void check(const data::Source& prior, const coupling::Coupling& coupling) const;
  /// The smallest time at which the trained network's velocity field is valid (where
  /// likelihoods start, density::LikelihoodOptions::t_start), for a network predicting
  /// `param` on `schedule`.
  virtual double likelihood_start(const path::Schedule& schedule, path::Param param) const;
  /// The loss of one micro-batch (x_0 data, x_1 paired prior draws or undefined).
  virtual objective::LossResult loss(const ObjectiveInputs& in, const at::Tensor& x_0,
                                     const at::Tensor& x_1, at::Generator& gen) const = 0;
};

/// The objectives by name: fm (conditional flow matching, objective/flow_matching.h),
/// score (denoising score matching, objective/score_matching.h), mle (maximum likelihood
/// through the ODE, objective/mle.h).
const Registry<const Objective*>& objectives();
/// The registry name of `name` or of its alias ("flow-matching", "score-matching"); unknown
/// names fail listing the valid ones.
std::string canonical_objective(const std::string& name);
/// The objective named `name` (aliases accepted).
const Objective& objective_named(const std::string& name);

}  // namespace cnf::train
