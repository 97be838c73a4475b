// cnf export, and the --model torchscript:FILE source of sample / eval / nll / score
// (cnf/interop/torchscript.h).
#include <cstdio>
#include <filesystem>

#include "apps/cnf/common.h"
#include "apps/cnf/flow_source.h"
#include "cnf/interop/torchscript.h"
#include "cnf/nn/velocity.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/parameterized.h"
#include "cnf/sde/reschedule.h"

namespace cnf::app {

namespace {
const std::string kTorchScript = "torchscript:";
}

void add_flow_source(CLI::App* sub, FlowSource& s) {
  auto* ckpt = sub->add_option("--ckpt", s.ckpt, "Checkpoint written by cnf train");
  auto* model = sub->add_option(
      "--model", s.model,
      "A PyTorch-trained network instead of --ckpt: torchscript:FILE, any TorchScript module "
      "with forward(x, t)");
  ckpt->excludes(model);
  sub->add_option("--predicts", s.predicts,
                  "--model: what its forward returns: velocity, noise, data or score")
      ->capture_default_str();
  sub->add_option("--schedule", s.schedule,
                  "--model: the path it was trained on: " + path::schedules().joined_names() +
                      " (with parameters: name:key=value,...)")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { path::make_schedule(v); }));
  sub->add_option("--sigma-min", s.sigma_min, "--model: condot's sigma_min")->capture_default_str();
  sub->add_option("--time", s.time,
                  "--model: its time convention: data-at-0 (cnf's) or data-at-1 (flow_matching, "
                  "torchcfm; cnf maps t -> 1 - t)")
      ->capture_default_str();
  sub->add_option("--model-dim", s.dim,
                  "--model: dimension of one sample (default: the module's data_shape attribute)")
      ->capture_default_str();
  sub->add_option("--fuse", s.fuse,
                  "--model: a plain MLP on [x, t] with this activation (tanh, relu, silu, selu, "
                  "gelu, softplus) runs as cnf's fused MLP (checked against the module)");
  sub->add_option("--sample-schedule", s.sample_schedule,
                  "Read the flow on another path (same log-SNR family up to a time change and "
                  "a scale, e.g. a vp model on condot): " +
                      path::schedules().joined_names())
      ->check(parsed_by([](const std::string& v) { path::make_schedule(v); }));
}

namespace {
// --sample-schedule: the flow's network read as a data prediction on path `spec`
// (sde/reschedule.h); its velocity field, schedule and spec follow.
train::Checkpoint on_path(train::Checkpoint c, const std::string& spec) {
  auto to = path::make_schedule(spec);
  auto net = std::make_shared<sde::RescheduledFieldImpl>(c.network, c.spec.network_param(),
                                                         c.schedule, to, path::Param::data);
  c.network = net;
  c.model = sde::velocity_view(net, path::Param::data, to);
  c.schedule = to;
  c.spec.schedule = to->describe();
  c.spec.param = path::param_name(path::Param::data);
  return c;
}
}  // namespace

void check_flow_source(const FlowSource& s) {
  CNF_CHECK(!s.ckpt.empty() || !s.model.empty(),
            "name the flow: --ckpt FILE (cnf train's checkpoint) or --model torchscript:FILE");
  if (s.model.empty()) return;
  CNF_CHECK(s.model.rfind(kTorchScript, 0) == 0 && s.model.size() > kTorchScript.size(),
            "--model must be torchscript:FILE, got '", s.model, "'");
  path::parse_param(s.predicts);
  interop::parse_time_convention(s.time);
  path::make_schedule(s.schedule, s.sigma_min);
  CNF_CHECK(s.dim >= 0, "--model-dim must be >= 0, got ", s.dim);
  if (!s.fuse.empty()) nn::parse_activation(s.fuse);
}

train::Checkpoint load_flow(const FlowSource& s, c10::Device device) {
  check_flow_source(s);
  if (!s.sample_schedule.empty()) {
    FlowSource plain = s;
    plain.sample_schedule.clear();
    return on_path(load_flow(plain, device), s.sample_schedule);
  }
  if (s.model.empty()) return interop::load_flow(s.ckpt, device);
  interop::ImportOptions o;
  o.file = s.model.substr(kTorchScript.size());
  o.predicts = path::parse_param(s.predicts);
  o.schedule = s.schedule;
  o.sigma_min = s.sigma_min;
  o.time = interop::parse_time_convention(s.time);
  o.dim = s.dim;
  o.device = device;
  o.fuse = s.fuse;
  return interop::import_torchscript(o);
}

void check_init_module(const std::string& init, const std::string& time) {
  if (init.empty()) return;
  CNF_CHECK(init.rfind(kTorchScript, 0) == 0 && init.size() > kTorchScript.size(),
            "--init must be torchscript:FILE, got '", init, "'");
  interop::parse_time_convention(time);
}

train::NetworkFactory init_module_factory(const std::string& init, const std::string& time,
                                          train::FlowSpec& spec, int64_t dim, c10::Device device) {
  check_init_module(init, time);
  interop::ImportOptions o;
  // Absolute: the checkpoint names the module, and may be loaded from another folder.
  o.file = std::filesystem::absolute(init.substr(kTorchScript.size())).string();
  o.predicts = spec.network_param();
  o.schedule = spec.schedule;
  o.sigma_min = spec.sigma_min;
  o.time = interop::parse_time_convention(time);
  o.dim = dim;
  o.device = device;
  auto factory = interop::torchscript_factory(o);
  spec.model.arch = "torchscript";
  spec.module = o.file;
  spec.module_time = time;
  return factory;
}

namespace {

struct ExportArgs {
  Common common;
  std::string ckpt, out;
  std::string weights = "ema";
  std::string format = "torchscript";
};

int run_export(const ExportArgs& a) {
  setup(a.common);
  interop::ExportOptions o;
  o.weights = interop::parse_weights(a.weights);
  o.format = interop::parse_export_format(a.format);
  interop::export_torchscript(a.ckpt, a.out, o);
  if (o.format == interop::ExportFormat::torchscript)
    std::printf(
        "wrote a TorchScript module of %s (%s weights) to %s: forward(x, t) is the "
        "velocity with data at t = 0\n",
        a.ckpt.c_str(), a.weights.c_str(), a.out.c_str());
  else
    std::printf("wrote the %s weights of %s to %s (torch.load) and their description to %s.json\n",
                a.weights.c_str(), a.ckpt.c_str(), a.out.c_str(), a.out.c_str());
  write_json(a.common.json,
             {{"ckpt", a.ckpt}, {"out", a.out}, {"weights", a.weights}, {"format", a.format}});
  return 0;
}

}  // namespace

std::function<int()> add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd =
      app.add_subcommand("export",
                         "Write a trained flow as a TorchScript module that plain PyTorch can run "
                         "(torch.jit.load): forward(x, t) = velocity, data at t = 0");
  add_common(cmd, args->common);
  cmd->add_option("--ckpt", args->ckpt, "Checkpoint written by cnf train")->required();
  cmd->add_option("--out", args->out, "Output TorchScript file (.pt)")->required();
  cmd->add_option("--weights", args->weights, "ema (the EMA when the checkpoint has one) or raw")
      ->capture_default_str();
  cmd->add_option("--format", args->format,
                  "torchscript (a module with forward) or state-dict (torch.load-able tensors "
                  "plus OUT.json)")
      ->capture_default_str();
  cmd->parse_complete_callback([args] {
    interop::parse_weights(args->weights);
    interop::parse_export_format(args->format);
  });
  return [cmd, args]() -> int { return cmd->parsed() ? run_export(*args) : -1; };
}

}  // namespace cnf::app
