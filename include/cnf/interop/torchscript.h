/// \file
/// cnf/interop/torchscript.h — flows across the PyTorch boundary (DESIGN.md §6).
///
/// Export: a trained flow becomes a TorchScript module that plain PyTorch
/// (`torch.jit.load`) and plain LibTorch run with nothing of cnf installed. Its `forward(x,
/// t)` is the velocity v_t(x) in cnf's time convention (data at t = 0, noise at t = 1),
/// whatever the network predicts; attributes say what a user needs to know (schedule,
/// what the network predicts, time convention, data shape, prior, weights).
///
/// Import: any TorchScript module with `forward(x, t)` stands in for a cnf network. It
/// declares what it predicts and its time convention; for `data-at-1` (the convention of
/// facebookresearch/flow_matching and torchcfm, Lipman et al. 2023) cnf evaluates it at
/// s = 1 - t, and a velocity changes sign (dx/dt = -dx/ds); noise, data and score
/// predictions do not. Other parameterizations reach the samplers through path::convert.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "cnf/path/affine.h"
#include "cnf/train/checkpoint.h"

/// PyTorch interop: TorchScript export of cnf's flows and import of PyTorch-trained ones.
namespace cnf::interop {

/// Which weights an export carries.
enum class Weights {
  ema,  ///< the EMA of the weights when the checkpoint has one (else the raw weights)
  raw   ///< the weights as last optimized
};
/// "ema" or "raw"; an unknown name lists the valid ones.
Weights parse_weights(const std::string& name);

/// What an export writes.
enum class ExportFormat {
  torchscript,  ///< a TorchScript module (forward, velocity, score, network, coefficients)
  state_dict    ///< a torch.load-able dict of named tensors, plus OUT.json describing the flow
};
/// "torchscript" or "state-dict"; an unknown name lists the valid ones.
ExportFormat parse_export_format(const std::string& name);

/// Options of export_torchscript().
struct ExportOptions {
  Weights weights = Weights::ema;                   ///< which weights go into the export
  ExportFormat format = ExportFormat::torchscript;  ///< module, or tensors and a description
};

/// Writes (atomically) a TorchScript module for the flow in the checkpoint at `checkpoint`:
///   - `forward(x, t)` and `velocity(x, t)`: v_t(x) with data at t = 0, x: [B, ...], t: [B];
///   - `score(x, t)`: grad log rho_t(x) read off the network through the schedule
///     (path::convert), at t clamped into the conversion range (`t_lo`, `t_hi`);
///   - `network(x, t)`: the raw network output (what `predicts` says);
///   - `coefficients(t)`: (alpha_t, sigma_t, d_alpha_t, d_sigma_t) of the schedule;
///   - attributes `schedule` (spec text), `schedule_description`, `sigma_min`, `predicts`,
///     `time_convention` ("data-at-0"), `data_shape`, `data`, `prior`, `sigma_1` (sampling
///     starts from sigma_1 * N(0, I)), `t_lo`, `t_hi`, `weights`, `cnf_version`.
/// With ExportFormat::state_dict, `out` is instead a dict {parameter or buffer name:
/// tensor} that Python's torch.load reads (names as in the network's named_parameters()),
/// and `out`.json holds the same attributes plus the network's spec (arch, widths, ...).
/// Throws cnf::Error naming the architecture when its network has no TorchScript form.
void export_torchscript(const std::string& checkpoint, const std::string& out,
                        const ExportOptions& options = {});

/// How a module's time relates to cnf's.
enum class TimeConvention {
  data_at_0,  ///< cnf's own: data at t = 0, noise at t = 1
  data_at_1   ///< flow_matching / torchcfm: data at t = 1 (cnf maps t -> 1 - t)
};
/// "data-at-0" or "data-at-1"; an unknown name lists the valid ones.
TimeConvention parse_time_convention(const std::string& name);

/// What import_torchscript() needs to know about a module.
struct ImportOptions {
  std::string file;                                 ///< the TorchScript file (.pt)
  path::Param predicts = path::Param::velocity;     ///< what its forward returns
  std::string schedule = "condot";                  ///< the path it was trained on (spec)
  double sigma_min = 0.0;                           ///< condot's sigma_min
  TimeConvention time = TimeConvention::data_at_0;  ///< its time convention
  /// Dimension of one sample; 0 reads the module's `data_shape` attribute (modules that
  /// cnf exported have one).
  int64_t dim = 0;
  c10::Device device = c10::Device(c10::kCPU);  ///< where it runs
  /// Non-empty: an activation name (tanh, relu, silu, selu, gelu, softplus). The module is
  /// read as a plain MLP on [x, t] with that activation (parameters in order: weight, bias
  /// of each linear map; equal hidden widths) and run by cnf's own MLP and its fused CPU
  /// kernels; the conversion must reproduce the module on a probe batch or it is refused.
  std::string fuse;

  /// Throws cnf::Error naming the first invalid field.
  void validate() const;
};

/// Loads a TorchScript module as a flow every verb can use like a checkpoint: `network` is
/// the module (in cnf's time convention, its parameters trainable), `model` its velocity
/// field, `spec` names the schedule, what it predicts and a N(0, I) prior. The module is
/// checked on a probe batch: a missing or non-callable `forward(x, t)`, a wrong output
/// shape or a non-finite output is an error naming the file.
train::Checkpoint import_torchscript(const ImportOptions& options);

/// A factory (train::NetworkFactory) that loads the module anew on every call, so a Trainer
/// fine-tunes it with any cnf objective (`cnf train --init torchscript:FILE`); the trainer
/// records it as arch "torchscript" with FlowSpec::module and FlowSpec::module_time.
train::NetworkFactory torchscript_factory(const ImportOptions& options);

/// The import options a flow spec of arch "torchscript" records (FlowSpec::module,
/// module_time, schedule, what it predicts, dim), on `device`.
ImportOptions import_options(const train::FlowSpec& spec, c10::Device device);

/// Loads any checkpoint of cnf train, also one of a fine-tuned TorchScript module (whose
/// module file must still exist where its spec says).
train::Checkpoint load_flow(const std::string& checkpoint,
                            c10::Device device = c10::Device(c10::kCPU));

}  // namespace cnf::interop
