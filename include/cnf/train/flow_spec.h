/// \file
/// cnf/train/flow_spec.h — what a checkpoint records to rebuild a trained flow: the network,
/// the path, the data and prior specs, the objective and what the network predicts; and the
/// factory that builds the network from it.
#pragma once

#include <functional>
#include <string>

#include "cnf/nn/velocity.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

/// Training: the trainer, checkpoints, and generation with a trained flow.
namespace cnf::train {

class Objective;

/// Everything needed to rebuild a trained flow: network, path, data and prior specs, and
/// what the network predicts. Checkpoints written before `objective`, `param`, `weighting`
/// and the time density existed parse as fm / velocity / sigma2 / uniform.
struct FlowSpec {
  /// The network.
  nn::ModelSpec model;
  /// Schedule name (path::make_schedule).
  std::string schedule = "condot";
  /// sigma_min of condot.
  double sigma_min = 0.0;
  /// Data spec (data::make_source).
  std::string data = "moons";
  /// Prior spec (data::make_source).
  std::string prior = "normal";
  /// Objective: fm, score or mle (canonical_objective accepts the aliases).
  std::string objective = "fm";
  /// What the network predicts: velocity, score, data or noise; empty means the objective's
  /// natural choice (fm: velocity, score: noise). Any of them trains with either objective.
  std::string param;
  /// Score-matching weighting lambda(t) as spec text: sigma2, likelihood, uniform or
  /// min-snr:gamma=G.
  std::string weighting = "sigma2";
  /// \var time_sampling
  /// The density fm and score drew training times from, as spec text
  /// (objective/time_density.h): uniform, logit-normal:m=..,s=.., cosine, log-normal:...
  /// \var time_weighting
  /// The time density their loss was weighted by (uniform: none).
  std::string time_sampling = "uniform", time_weighting = "uniform";
  /// For model.arch "torchscript" (a PyTorch module fine-tuned by cnf, interop/torchscript.h):
  /// the module's file and its time convention, from which the network is rebuilt before
  /// the checkpoint's weights are loaded into it. Empty otherwise.
  std::string module;
  /// The module's time convention (data-at-0 or data-at-1), with `module`.
  std::string module_time;

  /// The spec as key=value lines, as a checkpoint stores it.
  std::string serialize() const;
  /// Reads the lines serialize() writes; missing keys keep their defaults, unknown keys and bad
  /// values fail naming `origin` and the line.
  static FlowSpec parse(const std::string& text, const std::string& origin);
  /// The schedule `schedule` with `sigma_min`.
  path::SchedulePtr make_schedule() const;
  /// `param`, resolved to the objective's default when empty.
  path::Param network_param() const;
  /// The smallest time the network was trained at, where likelihoods start
  /// (density::LikelihoodOptions::t_start; Objective::likelihood_start): 0 for mle; for fm
  /// with a velocity network the schedule's t_min() (1e-3 on vp and subvp, 0 elsewhere); for
  /// score matching and networks predicting noise, data or score, the start of
  /// path::conversion_range (below it the converted field is frozen).
  double likelihood_start() const;
  /// The objective it was trained with (train/objectives.h).
  const Objective& training_objective() const;
  /// `net` (built from `model`) read as a velocity field: itself for velocity models, else a
  /// conversion through path::convert (sde/parameterized.h).
  nn::VelocityField velocity_field(nn::VelocityField net) const;
};

/// Builds the network that a Trainer trains or a checkpoint loads into, from the spec's
/// model description (whose `dim` the trainer sets to the data's). The default is
/// nn::make_model. A program passes its own to train any nn::VelocityFieldImpl it defines
/// (examples/custom_field): the factory is called once for the network and once more for its
/// EMA copy, and must build networks with the same parameters in the same order each time.
using NetworkFactory = std::function<nn::VelocityField(const nn::ModelSpec&)>;

/// The architecture name a FlowSpec records for a network built by a program's own
/// NetworkFactory; such a checkpoint loads only through load_checkpoint(path, device, factory).
inline constexpr const char* kCustomArch = "custom";

/// Calls `make_network` (nn::make_model when empty) for `model` and checks that every
/// parameter and buffer name can be stored in a checkpoint (no Python keyword).
nn::VelocityField build_network(const NetworkFactory& make_network, const nn::ModelSpec& model);

}  // namespace cnf::train
