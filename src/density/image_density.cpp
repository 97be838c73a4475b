#include "cnf/density/image_density.h"

#include <torch/torch.h>

#include "cnf/core/error.h"

namespace cnf::density {

ImageBitsPerDim image_bits_per_dim(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                                   const data::Source& prior, const data::ImageSource& images,
                                   const at::Tensor& levels, int64_t dequant_samples,
                                   const LikelihoodOptions& options, at::Generator& gen,
                                   int64_t batch) {
  CNF_CHECK(dequant_samples >= 1, "dequantization samples must be >= 1, got ", dequant_samples);
  CNF_CHECK(batch >= 1, "batch must be >= 1, got ", batch);
  CNF_CHECK(levels.dim() == 4 && levels.size(0) >= 1, "bits/dim needs images [N, C, H, W], got ",
            levels.sizes());
  const int64_t n = levels.size(0), d = images.dim();
  CNF_CHECK(levels[0].numel() == d, "images of ", levels[0].numel(), " pixels do not fit the ",
            "model's ", d, " dimensions");
  auto device =
      field.parameters().empty() ? torch::Device(torch::kCPU) : field.parameters().front().device();
  ImageBitsPerDim out;
  out.dequant_samples = dequant_samples;
  auto log_p_x = torch::zeros({n}, torch::kFloat64);
  for (int64_t s = 0; s < dequant_samples; ++s) {
    for (int64_t i = 0; i < n; i += batch) {
      const int64_t j = std::min(i + batch, n);
      auto [y, log_det] = images.to_model(levels.slice(0, i, j), gen);
      auto r = log_likelihood(field, schedule, prior, y.to(device), options, gen);
      out.nfe += r.nfe;
      log_p_x.slice(0, i, j) +=
          (r.log_prob.to(torch::kCPU, torch::kFloat64) + log_det.to(torch::kFloat64)) /
          static_cast<double>(dequant_samples);
    }
  }
  // bits_per_dim takes log p_y and the log-det separately; here they are already summed.
  out.per_image = data::bits_per_dim(log_p_x, torch::zeros_like(log_p_x), d);
  out.bpd = mean_and_stderr(out.per_image);
  return out;
}

}  // namespace cnf::density
