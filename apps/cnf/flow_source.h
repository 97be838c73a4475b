// apps/cnf/flow_source.h — where a verb's flow comes from: a checkpoint of cnf train
// (--ckpt) or a TorchScript module trained elsewhere (--model torchscript:FILE with what it
// predicts, its schedule and time convention). Both become one train::Checkpoint.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cnf/train/trainer.h"

namespace cnf::app {

struct FlowSource {
  std::string ckpt;
  std::string model;  // torchscript:FILE
  std::string predicts = "velocity";
  std::string schedule = "condot";
  double sigma_min = 0.0;
  std::string time = "data-at-0";
  int64_t dim = 0;
  std::string fuse;  // --model: run a plain MLP module by cnf's fused MLP (its activation)
  std::string sample_schedule;  // read the flow on this path instead (sde/reschedule.h)

  /// What error messages call the flow: the checkpoint or the module's file.
  std::string name() const { return ckpt.empty() ? model : ckpt; }
};

/// --ckpt, or --model torchscript:FILE with --predicts, --schedule, --sigma-min, --time and
/// --model-dim; exactly one of --ckpt and --model is required (checked when parsed).
void add_flow_source(CLI::App* sub, FlowSource& s);

/// Checks every name and value of the source's flags (before any work starts).
void check_flow_source(const FlowSource& s);

/// Loads the flow (checks first).
train::Checkpoint load_flow(const FlowSource& s, c10::Device device);

/// Checks `cnf train --init torchscript:FILE --init-time T` (empty `init`: nothing to check).
void check_init_module(const std::string& init, const std::string& time);

/// The network factory that fine-tunes the module of --init; records it in `spec` (arch
/// "torchscript", module, module_time) so the checkpoint can be loaded again.
train::NetworkFactory init_module_factory(const std::string& init, const std::string& time,
                                          train::FlowSpec& spec, int64_t dim, c10::Device device);

}  // namespace cnf::app
