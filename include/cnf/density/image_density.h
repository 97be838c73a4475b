/// \file
/// cnf/density/image_density.h — bits/dim of image models with uniform dequantization.
///
/// For integer levels k (bins = 256) the discrete model is P(k) = int_{[0,1)^D} p_x((k + u)/256)
/// du / 256^D, bounded below (Jensen) by E_u log p_x((k + u)/256) - D log 256. Each of the
/// `dequant_samples` draws u gives one estimate; with the transform y = T(x) into model space
/// (data/images.h) log p_x(x) = log rho_0(T(x)) + log|det dT/dx|, where rho_0 comes from the
/// instantaneous change of variables (density.h). The bits/dim reported are
///   bpd(k) = -(mean_u [log rho_0(T(x)) + log|det dT/dx|] - D log 256) / (D log 2),
/// an upper bound on the discrete model's bits/dim (Theis et al. 2016; Ho et al. 2019).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "cnf/data/images.h"
#include "cnf/density/density.h"

namespace cnf::density {

/// Bits/dim of a set of images, with its standard error and cost.
struct ImageBitsPerDim {
  at::Tensor per_image;  ///< [N] bits/dim of each image (mean over dequantization samples)
  Estimate bpd;          ///< mean and standard error over images
  int64_t nfe = 0;       ///< function evaluations of all likelihood solves together
  /// Dequantization draws u per image.
  int64_t dequant_samples = 1;
};

/// Bits/dim of the images `levels` [N, C, H, W] (uint8) under the flow `field` (a velocity
/// field on model space), in batches of `batch` images.
ImageBitsPerDim image_bits_per_dim(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                                   const data::Source& prior, const data::ImageSource& images,
                                   const at::Tensor& levels, int64_t dequant_samples,
                                   const LikelihoodOptions& options, at::Generator& gen,
                                   int64_t batch = 250);

}  // namespace cnf::density
