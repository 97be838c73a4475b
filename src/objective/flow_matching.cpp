#include "cnf/objective/flow_matching.h"

#include <torch/torch.h>

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
  auto t = options.time_grid > 0
               ? 1.0 - torch::randint(options.time_grid, {b}, gen, batch.x_0.options()) /
                           static_cast<double>(options.time_grid)
               : t_min + (options.t_max - t_min) * torch::rand({b}, gen, batch.x_0.options());
  auto s = path::sample_path(*options.schedule, batch.x_0, batch.x_1, t);
  auto v = field.forward(s.x_t, t);
  // Mean over the batch of the squared error summed over features.
  auto loss = (v - s.dx_t).pow(2).reshape({b, -1}).sum(1).mean();
  return {loss, {{"loss", loss.detach()}}};
}

}  // namespace cnf::objective
