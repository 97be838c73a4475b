#include "cnf/sde/reschedule.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "cnf/core/error.h"

namespace cnf::sde {

RescheduledFieldImpl::RescheduledFieldImpl(nn::VelocityField net_, path::Param param_,
                                           path::SchedulePtr from_, path::SchedulePtr to_,
                                           path::Param as_)
    : net(std::move(net_)), param(param_), as(as_), from(std::move(from_)), to(std::move(to_)) {
  CNF_CHECK(net != nullptr && from != nullptr && to != nullptr,
            "a rescheduled field needs a network and both schedules");
  range_from_ = path::conversion_range(*from);
  range_to_ = path::conversion_range(*to);
  lambda_lo_ = path::log_snr_at(*from, range_from_.hi);
  lambda_hi_ = path::log_snr_at(*from, range_from_.lo);
  register_module("net", net);
}

std::pair<double, double> RescheduledFieldImpl::match(double t) const {
  const double tb = std::clamp(t, range_to_.lo, range_to_.hi);
  const double lambda = std::clamp(path::log_snr_at(*to, tb), lambda_lo_, lambda_hi_);
  const double ta = path::time_at_log_snr(*from, lambda, range_from_);
  const auto vb = to->at_time(tb), va = from->at_time(ta);
  const double ab = vb.alpha_t.item<double>(), sb = vb.sigma_t.item<double>();
  const double aa = va.alpha_t.item<double>(), sa = va.sigma_t.item<double>();
  return {ta, std::sqrt((ab * ab + sb * sb) / (aa * aa + sa * sa))};
}

torch::Tensor RescheduledFieldImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  CNF_CHECK(t.dim() == 1 && t.size(0) == x.size(0), "t must have shape [", x.size(0), "], got ",
            t.sizes());
  // Solvers pass one time for the whole batch: match each distinct time once.
  auto times = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double* tp = times.data_ptr<double>();
  const auto n = static_cast<size_t>(t.size(0));
  std::vector<double> ta(n), scale(n), tb(n);
  std::map<double, std::pair<double, double>> seen;
  for (size_t i = 0; i < n; ++i) {
    auto it = seen.find(tp[i]);
    if (it == seen.end()) it = seen.emplace(tp[i], match(tp[i])).first;
    ta[i] = it->second.first;
    scale[i] = it->second.second;
    tb[i] = std::clamp(tp[i], range_to_.lo, range_to_.hi);
  }
  auto opts = x.options();
  auto ta_t = torch::tensor(ta, torch::kFloat64).to(opts);
  auto tb_t = torch::tensor(tb, torch::kFloat64).to(opts);
  auto c = path::expand_as_batch(torch::tensor(scale, torch::kFloat64).to(opts), x);
  auto xa = x / c;
  auto x0 = path::convert(*from, net->forward(xa, ta_t), param, path::Param::data, xa, ta_t);
  return path::convert(*to, x0, path::Param::data, as, x, tb_t);
}

}  // namespace cnf::sde
