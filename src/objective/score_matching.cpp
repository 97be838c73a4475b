#include "cnf/objective/score_matching.h"

#include <torch/torch.h>

#include "cnf/core/error.h"
#include "cnf/core/spec.h"

namespace cnf::objective {

const Registry<Weighting>& weightings() {
  static const Registry<Weighting> r("score-matching weighting",
                                     {{"sigma2", Weighting::sigma2},
                                      {"likelihood", Weighting::likelihood},
                                      {"uniform", Weighting::uniform},
                                      {"min-snr", Weighting::min_snr},
                                      {"edm", Weighting::edm}});
  return r;
}
Weighting parse_weighting(const std::string& name) { return weightings().get(name); }

std::string weighting_name(Weighting w) { return weightings().name_of(w); }

namespace {
// The parameters a weighting's spec takes: min-snr has gamma, edm sigma_data, the others none.
std::vector<SpecParam> weighting_params(Weighting w) {
  if (w == Weighting::min_snr) return {{"gamma", WeightingSpec{}.gamma}};
  if (w == Weighting::edm) return {{"sigma_data", WeightingSpec{}.sigma_data}};
  return {};
}

// The value of the weighting's one parameter, in weighting_params' order.
std::vector<double> weighting_values(const WeightingSpec& w) {
  if (w.kind == Weighting::min_snr) return {w.gamma};
  if (w.kind == Weighting::edm) return {w.sigma_data};
  return {};
}
}  // namespace

WeightingSpec parse_weighting_spec(const std::string& text) {
  const SpecText spec = split_spec(text, "weighting");
  WeightingSpec w;
  w.kind = parse_weighting(spec.name);
  const auto values = spec_values(spec, weighting_params(w.kind), "weighting");
  if (w.kind == Weighting::min_snr) w.gamma = values[0];
  if (w.kind == Weighting::edm) w.sigma_data = values[0];
  CNF_CHECK(w.gamma > 0, "weighting '", text, "': gamma must be > 0 (Hang et al. use 5), got ",
            w.gamma);
  CNF_CHECK(w.sigma_data > 0, "weighting '", text,
            "': sigma_data must be > 0 (the data's standard deviation; EDM uses 0.5 for images "
            "in [-1, 1]), got ",
            w.sigma_data);
  return w;
}

std::string WeightingSpec::describe() const {
  return canonical_spec(weighting_name(kind), weighting_params(kind), weighting_values(*this));
}

LossResult score_matching_loss(nn::VelocityFieldImpl& net, const Batch& batch,
                               const ScoreMatchingOptions& options, at::Generator& gen) {
  CNF_CHECK(options.schedule != nullptr, "score matching needs a schedule");
  CNF_CHECK(batch.x_0.size(0) > 0, "score matching needs a non-empty batch");
  const auto& schedule = *options.schedule;
  const auto range = path::conversion_range(schedule);
  const double t_min = options.t_min < 0 ? range.lo : options.t_min;
  const double t_max = options.t_max < 0 ? range.hi : options.t_max;
  CNF_CHECK(0 <= t_min && t_min < t_max && t_max <= 1, "score matching time range must satisfy ",
            "0 <= t_min < t_max <= 1, got [", t_min, ", ", t_max, "]");
  const int64_t b = batch.x_0.size(0);
  auto t = options.time_sampling.sample(b, t_min, t_max, schedule, gen, batch.x_0.options());
  auto x_t = path::sample_path(schedule, batch.x_0, batch.x_1, t).x_t;
  auto eps =
      path::convert(schedule, net.forward(x_t, t), options.param, path::Param::noise, x_t, t);
  auto mse = (eps - batch.x_1).pow(2).reshape({b, -1}).sum(1);
  at::Tensor weight;  // lambda(t) / sigma_t^2, per sample
  switch (options.weighting) {
    case Weighting::sigma2:
      weight = torch::ones_like(t);
      break;
    case Weighting::likelihood: {
      auto g = path::sde_coefficients(schedule, t).g;
      weight = g * g / schedule(t).sigma_t.pow(2);
      break;
    }
    case Weighting::uniform:
      weight = schedule(t).sigma_t.pow(-2);
      break;
    case Weighting::min_snr: {
      // min(SNR, gamma) / SNR = min(1, gamma / SNR) (see the header).
      auto v = schedule(t);
      auto snr = (v.alpha_t / v.sigma_t).pow(2);
      weight = torch::clamp_max(options.snr_gamma / snr, 1.0);
      break;
    }
    case Weighting::edm: {
      // 1 + sigma^2 / sigma_data^2 with sigma = sigma_t / alpha_t (see the header).
      auto v = schedule(t);
      weight = 1 + (v.sigma_t / (options.sigma_data * v.alpha_t)).pow(2);
      break;
    }
  }
  if (!options.time_weighting.is_uniform())
    weight = weight * options.time_weighting.weight(t, t_min, t_max, schedule);
  auto loss = (weight * mse).mean();
  return {loss, {{"loss", loss.detach()}, {"noise_mse", mse.mean().detach()}}};
}

}  // namespace cnf::objective
