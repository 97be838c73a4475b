#include "cnf/objective/flow_matching.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/path/affine.h"

namespace cnf::objective {

LossResult flow_matching_loss(nn::VelocityFieldImpl& field, const Batch& batch,
                              const FlowMatchingOptions& options, at::Generator& gen) {
  CNF_CHECK(options.schedule != nullptr, "flow matching needs a schedule");
  CNF_CHECK(batch.x_0.size(0) > 0, "flow matching needs a non-empty batch");
  const double t_min = options.t_min < 0 ? options.schedule->t_min() : options.t_min;
  CNF_CHECK(t_min < options.t_max && options.t_max <= 1.0, "time range must satisfy ",
            "0 <= t_min < t_max <= 1, got [", t_min, ", ", options.t_max, "]");
  const int64_t b = batch.x_0.size(0);
  CNF_CHECK(options.time_grid >= 0, "time_grid must be >= 0 (0: continuous t), got ",
            options.time_grid);
  CNF_CHECK(options.time_grid == 0 || options.time_sampling.is_uniform(), "time sampling ",
            options.time_sampling.describe(), " cannot be combined with an ", options.time_grid,
            "-step time grid (distillation draws the grid's times)");
  const auto& schedule = *options.schedule;
  auto t = options.time_grid > 0
               ? 1.0 - torch::randint(options.time_grid, {b}, gen, batch.x_0.options()) /
                           static_cast<double>(options.time_grid)
               : options.time_sampling.sample(b, t_min, options.t_max, schedule, gen,
                                              batch.x_0.options());
  CNF_CHECK(std::isfinite(options.bridge_sigma) && options.bridge_sigma >= 0,
            "bridge_sigma must be finite and >= 0 (0: no bridge noise), got ",
            options.bridge_sigma);
  auto s = path::sample_path(schedule, batch.x_0, batch.x_1, t);
  if (options.bridge_sigma > 0) {
    auto z = torch::randn(batch.x_0.sizes(), gen, batch.x_0.options());
    // sqrt(t (1 - t)) is 0 at t = 0 exactly (rand can return 0); the floor keeps the
    // derivative finite there, where the noise it multiplies vanishes anyway.
    auto root = (t * (1 - t)).clamp_min(1e-12).sqrt();
    auto std_t = options.bridge_sigma * root;
    auto d_std_t = options.bridge_sigma * (1 - 2 * t) / (2 * root);
    s.x_t = s.x_t + path::expand_as_batch(std_t, z) * z;
    s.dx_t = s.dx_t + path::expand_as_batch(d_std_t, z) * z;
  }
  auto v = field.forward(s.x_t, t);
  // Mean over the batch of the squared error summed over features.
  auto error = (v - s.dx_t).pow(2).reshape({b, -1}).sum(1);
  if (!options.time_weighting.is_uniform())
    error = error * options.time_weighting.weight(t, t_min, options.t_max, schedule);
  auto loss = error.mean();
  return {loss, {{"loss", loss.detach()}}};
}

}  // namespace cnf::objective
