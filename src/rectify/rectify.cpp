#include "cnf/rectify/rectify.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/io/files.h"
#include "cnf/train/flow.h"

namespace cnf::rectify {

namespace fs = std::filesystem;
using json = nlohmann::json;

ode::SolveOptions default_solve() {
  ode::SolveOptions so;
  so.method = "dopri5";
  so.adaptive.rtol = so.adaptive.atol = 1e-5;
  return so;
}

namespace {

std::string chunk_path(const std::string& dir, int64_t k, const char* which) {
  char name[64];
  std::snprintf(name, sizeof name, "chunk_%05lld_%s.npy", static_cast<long long>(k), which);
  return (fs::path(dir) / name).string();
}

// What determines the pairs: two runs with equal manifests produce identical chunks.
json manifest(const PairOptions& o, int64_t dim, const path::Schedule& schedule) {
  return {{"format", "cnf-pairs-1"},
          {"n", o.n},
          {"chunk", o.chunk},
          {"dim", dim},
          {"seed", o.seed},
          {"schedule", schedule.describe()},
          {"method", o.solve.method},
          {"steps", o.solve.steps},
          {"rtol", o.solve.adaptive.rtol},
          {"atol", o.solve.adaptive.atol},
          {"parent", o.parent}};
}

json read_manifest(const std::string& dir) {
  const auto file = (fs::path(dir) / "pairs.json").string();
  try {
    return json::parse(io::read_text(file));
  } catch (const json::exception& e) {
    fail("pairs manifest '", file, "' is not valid JSON (", e.what(),
         "); delete the folder to regenerate the pairs");
  }
}

}  // namespace

data::PairTable generate_pairs(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                               const data::Source& prior, const PairOptions& o,
                               const std::string& dir, const ChunkCallback& on_chunk) {
  CNF_CHECK(o.n >= 1, "the number of pairs must be >= 1, got ", o.n);
  CNF_CHECK(o.chunk >= 1, "the pair chunk size must be >= 1, got ", o.chunk);
  const int64_t chunks = (o.n + o.chunk - 1) / o.chunk;
  const json want = manifest(o, prior.dim(), schedule);
  if (!dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    CNF_CHECK(!ec, "cannot create the pairs folder '", dir, "': ", ec.message());
    const auto file = (fs::path(dir) / "pairs.json").string();
    if (fs::exists(file)) {
      const json have = read_manifest(dir);
      CNF_CHECK(have.is_object(), "'", file,
                "' is not a cnf pairs manifest (a JSON object); "
                "delete the folder to regenerate the pairs");
      for (auto it = want.begin(); it != want.end(); ++it)
        CNF_CHECK(have.contains(it.key()) && have[it.key()] == it.value(), "pairs folder '", dir,
                  "' holds pairs made with ", it.key(), " = ",
                  have.contains(it.key()) ? have[it.key()].dump() : "(missing)", ", not ",
                  it.value().dump(), "; pass the same options to resume, or a new folder");
    } else {
      io::write_text_atomic(file, want.dump(2) + "\n");
    }
  }
  std::vector<at::Tensor> x0s, x1s;
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t rows = std::min(o.chunk, o.n - k * o.chunk);
    at::Tensor x_0, x_1;
    bool reused = false;
    if (!dir.empty() && fs::exists(chunk_path(dir, k, "x0")) &&
        fs::exists(chunk_path(dir, k, "x1"))) {
      x_0 = io::read_npy(chunk_path(dir, k, "x0"));
      x_1 = io::read_npy(chunk_path(dir, k, "x1"));
      CNF_CHECK(x_0.dim() == 2 && x_0.size(0) == rows && x_1.sizes() == x_0.sizes(), "pairs chunk ",
                k, " in '", dir, "' has shape ", x_0.sizes(), " / ", x_1.sizes(), ", expected [",
                rows, ", ", prior.dim(), "]; delete it to regenerate");
      reused = true;
    } else {
      // Each chunk has its own stream, so a resumed run draws exactly the same noise.
      auto gen = make_generator(o.seed * 1000003ULL + static_cast<uint64_t>(k) + 1);
      x_1 = prior.sample(rows, gen);
      auto sol = train::generate(model, schedule, x_1.to(o.device), o.solve);
      x_0 = sol.y[0].to(torch::kCPU, torch::kFloat32);
      check_finite(x_0, "generated pairs (chunk " + std::to_string(k) + ")");
      if (!dir.empty()) {
        // x1 first: a chunk counts as done only once its x0 file exists.
        io::write_npy(chunk_path(dir, k, "x1"), x_1);
        io::write_npy(chunk_path(dir, k, "x0"), x_0);
      }
    }
    x0s.push_back(x_0);
    x1s.push_back(x_1);
    if (on_chunk) on_chunk(k, chunks, reused);
  }
  return data::PairTable(torch::cat(x0s), torch::cat(x1s), dir.empty() ? "generated" : dir);
}

data::PairTable load_pairs(const std::string& dir) {
  const json m = read_manifest(dir);
  // Field types are checked before use: nlohmann::json would throw its own type errors
  // (found by the pairs fuzz target, tests/fuzz/pairs/).
  CNF_CHECK(m.is_object() && m.contains("format") && m["format"] == "cnf-pairs-1", "'", dir,
            "/pairs.json' is not a cnf pairs manifest (format cnf-pairs-1); delete the folder "
            "to regenerate the pairs");
  auto count = [&](const char* key) {
    CNF_CHECK(m.contains(key) && m[key].is_number_integer(), "'", dir, "/pairs.json': '", key,
              "' must be an integer, got ", m.contains(key) ? m[key].dump() : "nothing",
              "; delete the folder to regenerate the pairs");
    return m[key].get<int64_t>();
  };
  const int64_t n = count("n"), chunk = count("chunk");
  CNF_CHECK(n >= 1 && chunk >= 1, "'", dir, "/pairs.json' has n = ", n, ", chunk = ", chunk);
  const int64_t chunks = n / chunk + (n % chunk != 0);  // (n + chunk - 1) could overflow
  std::vector<at::Tensor> x0s, x1s;
  for (int64_t k = 0; k < chunks; ++k) {
    CNF_CHECK(fs::exists(chunk_path(dir, k, "x0")), "pairs folder '", dir, "' lacks chunk ", k,
              " of ", chunks, "; finish it with cnf reflow --resume");
    x0s.push_back(io::read_npy(chunk_path(dir, k, "x0")));
    x1s.push_back(io::read_npy(chunk_path(dir, k, "x1")));
  }
  return data::PairTable(torch::cat(x0s), torch::cat(x1s), dir);
}

void copy_weights(nn::VelocityFieldImpl& to, nn::VelocityFieldImpl& from) {
  auto dst = to.named_parameters(), src = from.named_parameters();
  CNF_CHECK(dst.size() == src.size(), "warm start: the networks differ (", dst.size(), " vs ",
            src.size(), " parameter tensors); use the parent's architecture");
  torch::NoGradGuard no_grad;
  for (const auto& p : src) {
    auto* q = dst.find(p.key());
    CNF_CHECK(q != nullptr && q->sizes() == p.value().sizes(), "warm start: parameter '", p.key(),
              "' does not fit the new network; use the parent's architecture");
    q->copy_(p.value());
  }
}

Straightness straightness(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                          const at::Tensor& x_1, const ode::SolveOptions& solve) {
  CNF_CHECK(x_1.dim() == 2 && x_1.size(0) >= 2, "straightness needs [B >= 2, D] noise, got ",
            x_1.sizes());
  torch::NoGradGuard no_grad;
  const auto start = x_1 * schedule.sigma_1();
  // State {x, e}: dx/dt = v_t(x), de/dt = ||v_t(x)||^2. Integrated from t = 1 down to 0,
  // e ends at -int_0^1 ||v||^2 dt.
  ode::Rhs rhs = [&model](double t, const ode::State& y) {
    auto tt = at::full({y[0].size(0)}, t, y[0].options());
    auto v = model.forward(y[0], tt);
    return ode::State{v, v.pow(2).reshape({v.size(0), -1}).sum(1)};
  };
  ode::SolveOptions so = solve;
  so.adaptive.error_mask = {true, false};
  auto sol = ode::solve(rhs, {start, torch::zeros({start.size(0)}, start.options())}, 1.0, 0.0, so);
  auto energy = (-sol.y[1]).to(torch::kFloat64);
  auto cost = (start - sol.y[0]).pow(2).reshape({start.size(0), -1}).sum(1).to(torch::kFloat64);
  auto s = energy - cost;
  const double n = static_cast<double>(start.size(0));
  auto se = [n](const at::Tensor& v) { return v.std().item<double>() / std::sqrt(n); };
  Straightness r;
  r.n = start.size(0);
  r.straightness = s.mean().item<double>();
  r.straightness_stderr = se(s);
  r.transport_cost = cost.mean().item<double>();
  r.transport_cost_stderr = se(cost);
  r.path_energy = energy.mean().item<double>();
  r.normalized_energy = r.path_energy / std::max(r.transport_cost, 1e-300);
  r.nfe = sol.nfe;
  return r;
}

}  // namespace cnf::rectify
