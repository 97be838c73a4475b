// apps/cnf/common.h — options and helpers shared by the verbs of the cnf command.
#pragma once

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/cnf/verbs.h"
#include "cnf/core/error.h"
#include "cnf/core/registry.h"
#include "cnf/core/runtime.h"
#include "cnf/core/streams.h"
#include "cnf/io/files.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/sde/samplers.h"

namespace cnf::app {

using json = nlohmann::json;

// ------------------------------------------------------------------ names at the edge
// Every name a flag takes is checked while the flags are parsed, before any work starts,
// against the registry that turns it into a value; errors and help list the registry's names.

/// A check that `reg` knows the value (empty: the option's unset state, allowed).
template <class T>
CLI::Validator names_of(const Registry<T>& reg) {
  return CLI::Validator(
      [&reg](std::string& v) -> std::string {
        if (v.empty() || reg.contains(v)) return {};
        return "unknown " + reg.kind() + " '" + v + "'; valid names: " + reg.joined_names();
      },
      "", "names");
}

/// A check that runs a library parser on the value; its error (which lists the valid names
/// or says what is wrong) becomes the flag's.
inline CLI::Validator parsed_by(std::function<void(const std::string&)> parse) {
  return CLI::Validator(
      [parse = std::move(parse)](std::string& v) -> std::string {
        if (v.empty()) return {};
        try {
          parse(v);
        } catch (const std::exception& e) {
          return e.what();
        }
        return {};
      },
      "", "parsed");
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

/// A check of a comma-separated list whose every item `reg` must know.
template <class T>
CLI::Validator list_of(const Registry<T>& reg) {
  return parsed_by([&reg](const std::string& v) {
    for (const auto& item : split_list(v)) reg.get(item);
  });
}

/// A check that the value (with `list`: every item of a comma-separated list) is one of
/// `names`, for the choices of a verb that have no registry of their own.
inline CLI::Validator one_of(std::vector<std::string> names, std::string kind, bool list = false) {
  return parsed_by([names = std::move(names), kind = std::move(kind), list](const std::string& v) {
    for (const auto& item : list ? split_list(v) : std::vector<std::string>{v}) {
      std::string valid;
      for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
      CNF_CHECK(std::find(names.begin(), names.end(), item) != names.end(), "unknown ", kind, " '",
                item, "'; valid names: ", valid);
    }
  });
}

/// `names` joined by ", ", as help texts list them.
inline std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

/// Binds `flag` to an enum through its registry: the help lists the names and shows the
/// current value as the default; an unknown name fails at parse time.
template <class T>
CLI::Option* add_choice(CLI::App* sub, const std::string& flag, T& value, const Registry<T>& reg,
                        const std::string& help) {
  return sub
      ->add_option_function<std::string>(
          flag, [&value, &reg](const std::string& name) { value = reg.get(name); },
          help + ": " + reg.joined_names())
      ->default_str(reg.name_of(value))
      ->check(names_of(reg));
}

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
  sub->add_option("--device", c.device, "cpu, cuda or cuda:N")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { parse_device(v); }));
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

/// A study's --seeds: comma-separated non-negative integers.
inline std::vector<uint64_t> parse_seeds(const std::string& text) {
  std::vector<uint64_t> seeds;
  for (const auto& s : split_list(text, ',')) {
    try {
      CNF_CHECK(s.find('-') == std::string::npos, "negative");
      seeds.push_back(std::stoull(s));
    } catch (const std::exception&) {
      fail("--seeds must be comma-separated integers >= 0, got '", s, "'");
    }
  }
  return seeds;
}

/// Values of one quantity over a study's seeds, printed as mean and standard deviation.
struct Stat {
  std::vector<double> v;
  /// The mean.
  double mean() const {
    double m = 0;
    for (double x : v) m += x / v.size();
    return m;
  }
  /// The sample standard deviation (0 for fewer than two values).
  double sd() const {
    const double m = mean();
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return v.size() > 1 ? std::sqrt(s / (v.size() - 1)) : 0;
  }
  /// printf format `f` with the mean and the standard deviation, e.g. "%.3f ± %.3f".
  std::string fmt(const char* f) const {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, mean(), sd());
    return buf;
  }
};

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
  /// The library's settings of the options below (karras rho, lower_order_final,
  /// thresholding, heun's churn), kept at their defaults until a flag sets them.
  sde::SamplerOptions more;
};
void add_sampler_options(CLI::App* sub, SamplerArgs& s, const std::string& prefix);

/// Library options from the flags; `steps` and `solve` are the shared --steps / --method.
sde::SamplerOptions sampler_options(const SamplerArgs& s, int64_t steps,
                                    const ode::SolveOptions& solve);

/// Transports prior draws x_1 (unit scale) to data with `net` (predicting `param`): scales
/// them by sigma at the sampler's start time and calls sde::sample.
sde::SampleResult draw_samples(nn::VelocityFieldImpl& net, path::Param param,
                               const path::Schedule& schedule, const at::Tensor& x_1,
                               const sde::SamplerOptions& options, at::Generator& gen);

}  // namespace cnf::app
