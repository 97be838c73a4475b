/// \file
/// cnf/train/checkpoint.h — a trained flow loaded from a checkpoint, typed once: the network,
/// its velocity field, the schedule and the prior, so that no caller rebuilds them from the
/// spec's text; and the pixels of an image model's samples without its data set.
///
/// The file format ("cnf-checkpoint-1") is a LibTorch archive (zip) holding the flow spec's
/// text, the configuration, the step, the weights (and their EMA), the optimizer state and
/// the generators' states; Trainer::save writes it atomically.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>

#include "cnf/data/sources.h"
#include "cnf/train/flow_spec.h"

namespace cnf::train {

/// A trained flow loaded from a checkpoint: the EMA weights when present. `model` is the
/// velocity field (what ode::solve, generation and likelihoods take); `network` the raw
/// network, predicting spec.network_param() (what sde::sample takes).
struct Checkpoint {
  /// The flow spec it was trained with.
  FlowSpec spec;
  /// The velocity field, in eval mode.
  nn::VelocityField model;
  /// The raw network, predicting spec.network_param(), in eval mode.
  nn::VelocityField network;
  /// The schedule of the path it was trained on (spec.make_schedule(), built once).
  path::SchedulePtr schedule;
  /// The prior x_1 is drawn from (data::make_source(spec.prior, dim)).
  data::SourcePtr prior;
  /// Training steps done.
  int64_t step = 0;
  /// The configuration text save() stored.
  std::string config;
};
/// The flow spec stored in a checkpoint, without loading its weights (e.g. to choose the
/// NetworkFactory that load_checkpoint needs). Errors as load_checkpoint's.
FlowSpec read_flow_spec(const std::string& path);

/// Loads a checkpoint written by Trainer::save (cnf train): the EMA weights when it has them
/// and `ema` is true, else the raw weights. Networks built by a program's own
/// NetworkFactory (arch kCustomArch) need that same factory here.
///
/// Example (examples/sample_checkpoint/main.cpp):
/// \snippet sample_checkpoint/main.cpp load
Checkpoint load_checkpoint(const std::string& path, c10::Device device = c10::Device(c10::kCPU),
                           const NetworkFactory& make_network = {}, bool ema = true);

/// Model-space rows [n, D] of an image model back to pixels in [0, 1] [n, C, H, W], from the
/// spec alone: the layout the trainer records in spec.model (channels, height, width_px) and
/// the transform the data spec names. (A PNG-folder model written before the layout was
/// recorded reads it from the folder.) Throws cnf::Error for a model of point data.
at::Tensor to_pixels(const FlowSpec& spec, const at::Tensor& rows);
/// Fills the typed parts of `c` (schedule, prior) from `c.spec`; load_checkpoint calls it, and
/// so does a loader of flows stored otherwise (interop::import_torchscript).
void type_checkpoint(Checkpoint& c);

}  // namespace cnf::train
