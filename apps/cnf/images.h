// apps/cnf/images.h — what the cnf verbs share for image models: pixels of samples, labels
// and classifier-free guidance at sampling time, and `cnf experiment images`.
#pragma once

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "cnf/nn/velocity.h"
#include "cnf/train/flow_spec.h"

namespace cnf::app {

/// Labels [n] for sampling a model with `classes` classes: "" -> none (undefined tensor),
/// "all" -> i mod classes, or one class number. Errors name the bad value.
torch::Tensor sample_labels(const std::string& label, int64_t n, int64_t classes);

/// `net` guided towards `labels` with weight `guidance` (nn::GuidedFieldImpl), or `net`
/// itself when `labels` is undefined.
nn::VelocityField with_labels(nn::VelocityField net, const torch::Tensor& labels, double guidance);

/// Writes a PNG grid of the first `max_images` of `rows` (model space of the image model
/// `spec`; train::to_pixels, without reading the data set).
void write_sample_grid(const std::string& path, const train::FlowSpec& spec,
                       const torch::Tensor& rows, int64_t max_images = 100, int64_t columns = 10);

/// Registers `cnf experiment images` (apps/cnf/images_experiment.cpp); -1 when not chosen.

}  // namespace cnf::app
