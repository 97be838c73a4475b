#include "cnf/path/affine.h"

#include <torch/torch.h>

#include "cnf/core/error.h"

namespace cnf::path {

at::Tensor expand_as_batch(const at::Tensor& a, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return a.reshape(shape);
}

PathSample sample_path(const Schedule& schedule, const at::Tensor& x_0, const at::Tensor& x_1,
                       const at::Tensor& t) {
  CNF_CHECK(x_0.sizes() == x_1.sizes(), "x_0 and x_1 must have the same shape, got ",
            x_0.sizes(), " and ", x_1.sizes());
  CNF_CHECK(t.dim() == 1 && t.size(0) == x_0.size(0), "t must have shape [", x_0.size(0),
            "], got ", t.sizes());
  auto s = schedule(t.to(x_0.scalar_type()));
  auto b = [&](const at::Tensor& a) { return expand_as_batch(a, x_0); };
  return {t, b(s.alpha_t) * x_0 + b(s.sigma_t) * x_1, b(s.d_alpha_t) * x_0 + b(s.d_sigma_t) * x_1};
}

Param parse_param(const std::string& name) {
  if (name == "velocity") return Param::velocity;
  if (name == "score") return Param::score;
  if (name == "data") return Param::data;
  if (name == "noise") return Param::noise;
  fail("unknown parameterization '", name, "'; valid names: velocity, score, data, noise");
}

std::string param_name(Param p) {
  switch (p) {
    case Param::velocity: return "velocity";
    case Param::score: return "score";
    case Param::data: return "data";
    case Param::noise: return "noise";
  }
  return "?";
}

at::Tensor convert(const Schedule& schedule, const at::Tensor& pred, Param from, Param to,
                   const at::Tensor& x_t, const at::Tensor& t) {
  if (from == to) return pred;
  auto s = schedule(t.to(x_t.scalar_type()));
  auto b = [&](const at::Tensor& a) { return expand_as_batch(a, x_t); };
  auto alpha = b(s.alpha_t), sigma = b(s.sigma_t), d_alpha = b(s.d_alpha_t),
       d_sigma = b(s.d_sigma_t);
  // Recover (x0_hat, x1_hat) from whichever is given, then express the target.
  at::Tensor x0, x1;
  switch (from) {
    case Param::data:
      x0 = pred;
      x1 = (x_t - alpha * x0) / sigma;
      break;
    case Param::noise:
      x1 = pred;
      x0 = (x_t - sigma * x1) / alpha;
      break;
    case Param::score:
      x1 = -sigma * pred;
      x0 = (x_t - sigma * x1) / alpha;
      break;
    case Param::velocity: {
      // Cramer's rule on [alpha sigma; d_alpha d_sigma] [x0; x1] = [x_t; v].
      auto det = alpha * d_sigma - sigma * d_alpha;
      x0 = (d_sigma * x_t - sigma * pred) / det;
      x1 = (alpha * pred - d_alpha * x_t) / det;
      break;
    }
  }
  switch (to) {
    case Param::data: return x0;
    case Param::noise: return x1;
    case Param::score: return -x1 / sigma;
    case Param::velocity: return d_alpha * x0 + d_sigma * x1;
  }
  return pred;
}

SDECoefficients sde_coefficients(const Schedule& schedule, const at::Tensor& t) {
  auto s = schedule(t);
  auto f = s.d_alpha_t / s.alpha_t;
  auto g2 = 2.0 * s.sigma_t * s.d_sigma_t - 2.0 * f * s.sigma_t * s.sigma_t;
  return {f, torch::sqrt(torch::clamp_min(g2, 0.0))};
}

at::Tensor log_snr(const Schedule& schedule, const at::Tensor& t) {
  auto s = schedule(t);
  return torch::log(s.alpha_t) - torch::log(s.sigma_t);
}

}  // namespace cnf::path
