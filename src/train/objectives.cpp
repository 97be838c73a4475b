#include "cnf/train/objectives.h"

#include "cnf/core/error.h"

namespace cnf::train {

void Objective::check(const data::Source&, const coupling::Coupling&) const {}

double Objective::likelihood_start(const path::Schedule& schedule, path::Param param) const {
  // A velocity network was trained down to the schedule's t_min; a converted one is valid
  // only where the conversion is (below it sde::velocity_view freezes time).
  return param == path::Param::velocity ? schedule.t_min() : path::conversion_range(schedule).lo;
}

namespace {

/// Conditional flow matching (objective/flow_matching.h): any prior, any coupling.
class FlowMatching final : public Objective {
 public:
  std::string name() const override { return "fm"; }
  path::Param default_param() const override { return path::Param::velocity; }
  objective::LossResult loss(const ObjectiveInputs& in, const at::Tensor& x_0,
                             const at::Tensor& x_1, at::Generator& gen) const override {
    objective::FlowMatchingOptions fm;
    fm.schedule = in.schedule;
    fm.time_grid = in.time_grid;
    fm.bridge_sigma = in.bridge_sigma;
    fm.time_sampling = in.time_sampling;
    fm.time_weighting = in.time_weighting;
    return objective::flow_matching_loss(*in.field, {x_0, x_1}, fm, gen);
  }
};

/// Denoising score matching (objective/score_matching.h): its target -x_1 / sigma_t is the
/// score of the Gaussian transition kernel, so x_1 must be N(0, I) noise drawn independently
/// of x_0.
class ScoreMatching final : public Objective {
 public:
  std::string name() const override { return "score"; }
  path::Param default_param() const override { return path::Param::noise; }
  void check(const data::Source& prior, const coupling::Coupling& coupling) const override {
    CNF_CHECK(prior.spec() == "normal", "score matching needs --prior normal (the noise of the ",
              "Gaussian transition kernel), got '", prior.spec(),
              "'; use --objective fm for bridges");
    CNF_CHECK(coupling.keeps_draws(), "score matching needs --coupling independent, got '",
              coupling.name(), "'; couplings pair noise with data, which breaks the ",
              "denoising target -x_1/sigma_t");
  }
  double likelihood_start(const path::Schedule& schedule, path::Param) const override {
    return path::conversion_range(schedule).lo;
  }
  objective::LossResult loss(const ObjectiveInputs& in, const at::Tensor& x_0,
                             const at::Tensor& x_1, at::Generator& gen) const override {
    objective::ScoreMatchingOptions sm;
    sm.schedule = in.schedule;
    sm.param = in.param;
    sm.weighting = in.weighting.kind;
    sm.snr_gamma = in.weighting.gamma;
    sm.sigma_data = in.weighting.sigma_data;
    sm.time_sampling = in.time_sampling;
    sm.time_weighting = in.time_weighting;
    return objective::score_matching_loss(*in.network, {x_0, x_1}, sm, gen);
  }
};

/// Maximum likelihood through the ODE (objective/mle.h): data alone, a prior with a density.
class MaximumLikelihood final : public Objective {
 public:
  std::string name() const override { return "mle"; }
  path::Param default_param() const override { return path::Param::velocity; }
  bool pairs_with_prior() const override { return false; }
  bool draws_times() const override { return false; }
  void check(const data::Source& prior, const coupling::Coupling& coupling) const override {
    CNF_CHECK(prior.has_log_prob(), "maximum likelihood needs a prior with a density (normal ",
              "or gmm:K), got '", prior.spec(), "'");
    CNF_CHECK(coupling.keeps_draws(), "maximum likelihood uses data only; ",
              "--coupling must be independent, got '", coupling.name(), "'");
  }
  // Trained through the ODE from t = 0.
  double likelihood_start(const path::Schedule&, path::Param) const override { return 0.0; }
  objective::LossResult loss(const ObjectiveInputs& in, const at::Tensor& x_0, const at::Tensor&,
                             at::Generator& gen) const override {
    return objective::mle_loss(*in.field, *in.schedule, *in.prior, x_0, *in.mle, gen);
  }
};

}  // namespace

const Registry<const Objective*>& objectives() {
  static const FlowMatching fm;
  static const ScoreMatching score;
  static const MaximumLikelihood mle;
  static const Registry<const Objective*> registry("objective",
                                                   {{"fm", &fm}, {"score", &score}, {"mle", &mle}});
  return registry;
}

std::string canonical_objective(const std::string& name) {
  if (name == "flow-matching") return "fm";
  if (name == "score-matching") return "score";
  objectives().get(name);  // unknown names fail, listing the valid ones
  return name;
}

const Objective& objective_named(const std::string& name) {
  return *objectives().get(canonical_objective(name));
}

}  // namespace cnf::train
