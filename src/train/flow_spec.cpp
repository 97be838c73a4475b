#include "cnf/train/flow_spec.h"

#include <torch/torch.h>

#include <set>
#include <sstream>

#include "cnf/core/error.h"
#include "cnf/sde/parameterized.h"
#include "cnf/train/objectives.h"

namespace cnf::train {

const Objective& FlowSpec::training_objective() const { return objective_named(objective); }

path::Param FlowSpec::network_param() const {
  if (!param.empty()) return path::parse_param(param);
  return training_objective().default_param();
}

double FlowSpec::likelihood_start() const {
  return training_objective().likelihood_start(*make_schedule(), network_param());
}

nn::VelocityField FlowSpec::velocity_field(nn::VelocityField net) const {
  return sde::velocity_view(std::move(net), network_param(), make_schedule());
}

std::string FlowSpec::serialize() const {
  std::ostringstream os;
  os.precision(17);
  os << "arch=" << model.arch << "\ndim=" << model.dim << "\nwidth=" << model.width
     << "\ndepth=" << model.depth << "\nactivation=" << model.activation
     << "\ntime_embedding=" << model.time_embedding
     << "\nfourier_features=" << model.fourier_features << "\nschedule=" << schedule
     << "\nsigma_min=" << sigma_min << "\ndata=" << data << "\nprior=" << prior << "\n";
  os << "objective=" << canonical_objective(objective)
     << "\nparam=" << path::param_name(network_param()) << "\nweighting=" << weighting << "\n";
  // Written only when a run chose them, so that other runs' checkpoints read as before.
  if (time_sampling != "uniform") os << "time_sampling=" << time_sampling << "\n";
  if (time_weighting != "uniform") os << "time_weighting=" << time_weighting << "\n";
  if (model.blocks > 1) os << "blocks=" << model.blocks << "\n";
  // The pixel layout of image models (every unet; other networks of images since it was
  // recorded for them too).
  if (model.arch == "unet" || model.height > 0)
    os << "channels=" << model.channels << "\nheight=" << model.height
       << "\nwidth_px=" << model.width_px << "\n";
  if (model.arch == "unet")
    os << "channel_mult=" << model.channel_mult << "\nres_blocks=" << model.res_blocks
       << "\nattention=" << (model.attention ? 1 : 0) << "\n";
  if (model.classes > 0) os << "classes=" << model.classes << "\n";
  if (!module.empty()) os << "module=" << module << "\nmodule_time=" << module_time << "\n";
  return os.str();
}

FlowSpec FlowSpec::parse(const std::string& text, const std::string& origin) {
  FlowSpec s;
  std::istringstream is(text);
  std::string line;
  int lineno = 0;
  while (std::getline(is, line)) {
    ++lineno;
    if (line.empty()) continue;
    auto eq = line.find('=');
    CNF_CHECK(eq != std::string::npos, origin, ": flow spec line ", lineno, " '", line,
              "' is not key=value");
    auto key = line.substr(0, eq), value = line.substr(eq + 1);
    try {
      if (key == "arch")
        s.model.arch = value;
      else if (key == "dim")
        s.model.dim = std::stoll(value);
      else if (key == "width")
        s.model.width = std::stoll(value);
      else if (key == "depth")
        s.model.depth = std::stoll(value);
      else if (key == "activation")
        s.model.activation = value;
      else if (key == "time_embedding")
        s.model.time_embedding = value;
      else if (key == "fourier_features")
        s.model.fourier_features = std::stoll(value);
      else if (key == "schedule")
        s.schedule = value;
      else if (key == "sigma_min")
        s.sigma_min = std::stod(value);
      else if (key == "data")
        s.data = value;
      else if (key == "prior")
        s.prior = value;
      else if (key == "objective")
        s.objective = value;
      else if (key == "param")
        s.param = value;
      else if (key == "weighting")
        s.weighting = value;
      else if (key == "time_sampling")
        s.time_sampling = value;
      else if (key == "time_weighting")
        s.time_weighting = value;
      else if (key == "blocks")
        s.model.blocks = std::stoll(value);
      else if (key == "channels")
        s.model.channels = std::stoll(value);
      else if (key == "height")
        s.model.height = std::stoll(value);
      else if (key == "width_px")
        s.model.width_px = std::stoll(value);
      else if (key == "channel_mult")
        s.model.channel_mult = value;
      else if (key == "res_blocks")
        s.model.res_blocks = std::stoll(value);
      else if (key == "attention")
        s.model.attention = std::stoll(value) != 0;
      else if (key == "classes")
        s.model.classes = std::stoll(value);
      else if (key == "module")
        s.module = value;
      else if (key == "module_time")
        s.module_time = value;
      else
        fail(origin, ": unknown flow spec field '", key, "' on line ", lineno);
    } catch (const std::logic_error&) {
      fail(origin, ": flow spec field '", key, "' has a bad value '", value, "'");
    }
  }
  return s;
}

path::SchedulePtr FlowSpec::make_schedule() const {
  return path::make_schedule(schedule, sigma_min);
}

nn::VelocityField build_network(const NetworkFactory& make_network, const nn::ModelSpec& model) {
  auto net = make_network ? make_network(model) : nn::make_model(model);
  CNF_CHECK(net != nullptr, "the network factory returned no network (a null pointer)");
  // Checkpoints store the network as a TorchScript module, whose attribute names may not be
  // Python keywords: a submodule named "in" saves but never loads again.
  static const std::set<std::string> keywords{
      "False", "None",     "True",  "and",    "as",   "assert", "async",  "await",    "break",
      "class", "continue", "def",   "del",    "elif", "else",   "except", "finally",  "for",
      "from",  "global",   "if",    "import", "in",   "is",     "lambda", "nonlocal", "not",
      "or",    "pass",     "raise", "return", "try",  "while",  "with",   "yield"};
  auto check = [&](const std::string& dotted) {
    std::istringstream parts(dotted);
    for (std::string part; std::getline(parts, part, '.');)
      CNF_CHECK(!keywords.count(part), "the network has a parameter or submodule named '", part,
                "' (in '", dotted, "'), a Python keyword that checkpoints cannot store; rename it ",
                "where the network registers it");
  };
  for (const auto& p : net->named_parameters()) check(p.key());
  for (const auto& b : net->named_buffers()) check(b.key());
  return net;
}

}  // namespace cnf::train
