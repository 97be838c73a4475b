// apps/cnf/common.h — options and helpers shared by the verbs of the cnf command.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/io/files.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/sde/samplers.h"

namespace cnf::app {

using json = nlohmann::json;

struct Common {
  uint64_t seed = 0;
  int threads = 1;
  std::string device = "cpu";
  std::string json;
  std::string config;
  std::string fast_mlp = "on";
};

inline void add_common(CLI::App* sub, Common& c) {
  sub->add_option("--config", c.config, "TOML file of options (flags given here override it)");
  sub->add_option("--seed", c.seed, "Random seed")->capture_default_str();
  sub->add_option("--threads", c.threads, "LibTorch threads (OpenBLAS is held at 1)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--device", c.device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--json", c.json, "Write the command's figures to this JSON file");
  sub->add_option("--fast-mlp", c.fast_mlp,
                  "Fused CPU kernels for MLP velocity fields where they apply (off: LibTorch's)")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
}

inline torch::Device setup(const Common& c) {
  set_threads(c.threads);
  seed_global(c.seed);
  nn::fast::set_enabled(c.fast_mlp == "on");
  return parse_device(c.device);
}

inline void write_json(const std::string& path, const json& j) {
  if (!path.empty()) io::write_text_atomic(path, j.dump(2) + "\n");
}

inline void make_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  CNF_CHECK(!ec, "cannot create output folder '", dir, "': ", ec.message(),
            "; choose a writable --out");
  // Leftovers of a run killed mid-write; the files they were replacing are intact.
  io::remove_stale_temp_files(dir);
}

/// False when any weight of `m` is NaN or Inf (a checkpoint of it would be useless).
inline bool weights_finite(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (const auto& p : m.parameters())
    if (!torch::isfinite(p).all().item<bool>()) return false;
  return true;
}

/// Items of a `sep`-separated list option ("condot, vp"), spaces dropped, empty items skipped.
inline std::vector<std::string> split_list(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

/// Registers `cnf experiment <name>` subcommands; returns a runner that executes the
/// parsed one (or returns -1 when none was chosen).
std::function<int()> add_experiments(CLI::App* experiment);

/// Registers `cnf reflow`, `cnf distill` and `cnf experiment reflow`; the runner returns -1
/// when none of them was chosen.
std::function<int()> add_rectify_commands(CLI::App& app, CLI::App* experiment);

/// Registers `cnf experiment mle` (apps/cnf/mle_experiment.cpp); -1 when not chosen.
std::function<int()> add_mle_experiment(CLI::App* experiment);

/// Registers `cnf experiment couplings` (apps/cnf/couplings_experiment.cpp).
std::function<int()> add_couplings_experiment(CLI::App* experiment);

// --------------------------------------------------------------- diffusion samplers
// (apps/cnf/diffusion_command.cpp)

/// The sampler flags of sample / eval / train: --sampler, --eta, --snr, --corrector-steps,
/// --predictor, --spacing, --t-start, --t-end (with `prefix`, e.g. "eval-").
struct SamplerArgs {
  std::string sampler = "ode";
  double eta = 0.0;
  double snr = 0.16;
  int64_t corrector_steps = 1;
  std::string predictor = "reverse-diffusion";
  std::string spacing = "auto";
  double t_start = -1.0, t_end = -1.0;
};
void add_sampler_options(CLI::App* sub, SamplerArgs& s, const std::string& prefix);

/// Library options from the flags; `steps` and `solve` are the shared --steps / --method.
sde::SamplerOptions sampler_options(const SamplerArgs& s, int64_t steps,
                                    const ode::SolveOptions& solve);

/// Registers `cnf experiment samplers`; returns its runner (-1 when not chosen).
std::function<int()> add_sampler_experiment(CLI::App* experiment);

/// Transports prior draws x_1 (unit scale) to data with `net` (predicting `param`): scales
/// them by sigma at the sampler's start time and calls sde::sample.
sde::SampleResult draw_samples(nn::VelocityFieldImpl& net, path::Param param,
                               const path::Schedule& schedule, const at::Tensor& x_1,
                               const sde::SamplerOptions& options, at::Generator& gen);

/// Registers `cnf ot`; returns a runner that executes it when parsed (-1 otherwise).
std::function<int()> add_ot_command(CLI::App& app);
/// Registers `cnf export` (apps/cnf/interop_command.cpp); -1 when not chosen.
std::function<int()> add_export_command(CLI::App& app);

}  // namespace cnf::app
