#include "cnf/sde/parameterized.h"

#include <torch/torch.h>

#include "cnf/core/error.h"

namespace cnf::sde {

torch::Tensor predict(nn::VelocityFieldImpl& net, path::Param param, const path::Schedule& schedule,
                      const path::TimeRange& range, const torch::Tensor& x, const torch::Tensor& t,
                      path::Param want) {
  if (param == want) return net.forward(x, t);
  auto tc = t.clamp(range.lo, range.hi);
  return path::convert(schedule, net.forward(x, tc), param, want, x, tc);
}

ParameterizedFieldImpl::ParameterizedFieldImpl(nn::VelocityField net_, path::Param param_,
                                               path::SchedulePtr schedule_, path::Param as_)
    : net(std::move(net_)), param(param_), as(as_), schedule(std::move(schedule_)) {
  CNF_CHECK(net != nullptr && schedule != nullptr,
            "a parameterized field needs a network and a schedule");
  range = path::conversion_range(*schedule);
  register_module("net", net);
}

torch::Tensor ParameterizedFieldImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  return predict(*net, param, *schedule, range, x, t, as);
}

nn::VelocityField velocity_view(nn::VelocityField net, path::Param param,
                                path::SchedulePtr schedule) {
  if (param == path::Param::velocity) return net;
  return std::make_shared<ParameterizedFieldImpl>(std::move(net), param, std::move(schedule));
}

}  // namespace cnf::sde
