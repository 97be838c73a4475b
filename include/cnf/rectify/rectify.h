/// \file
/// cnf/rectify/rectify.h — rectified flow: the pairs a flow produces, reflow and
/// distillation on them, and how straight a flow is.
///
/// A trained flow maps noise x_1 ~ rho_1 to X_0 = flow(x_1) ~ rho_0 (approximately). The
/// pairs (X_0, x_1) are a deterministic coupling of the two marginals. Training a new flow
/// by flow matching on those pairs ("reflow", Liu, Gong & Liu, ICLR 2023, sec. 2.2) keeps
/// the marginals, does not increase any convex transport cost E c(X_1 - X_0), and
/// straightens the paths; repeated, it tends to a flow that one Euler step integrates.
/// Distillation trains on the same pairs but only at the N times of an N-step Euler
/// sampler, so that N steps reproduce the flow's map (sec. 2.3).
///
/// Straightness of a flow with trajectories X_t (time runs from data t = 0 to noise t = 1):
///
///   S = E int_0^1 || (X_1 - X_0) - v_t(X_t) ||^2 dt
///     = E int_0^1 || v_t(X_t) ||^2 dt - E || X_1 - X_0 ||^2     (since int v dt = X_1 - X_0)
///
/// i.e. path energy minus transport cost; S = 0 exactly when every path is a straight line
/// run at constant speed. The path energy is integrated as an extra ODE state beside x.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <string>

#include "cnf/data/pairs.h"
#include "cnf/data/sources.h"
#include "cnf/nn/velocity.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"

/// Rectified flow: the pairs a flow produces, reflow and distillation on them, and how
/// straight a flow is.
namespace cnf::rectify {

/// The ODE solve that pair generation and straightness use unless told otherwise:
/// dopri5 at rtol = atol = 1e-5.
ode::SolveOptions default_solve();

/// How generate_pairs draws, solves and stores the pairs.
struct PairOptions {
  int64_t n = 20000;     ///< pairs to generate
  int64_t chunk = 5000;  ///< rows per chunk (one solve, one pair of files)
  /// The ODE solve from noise to data (default_solve()).
  ode::SolveOptions solve = default_solve();
  uint64_t seed = 0;  ///< chunk k draws its noise from a generator seeded by (seed, k)
  /// Device of the solves.
  c10::Device device = c10::Device(c10::kCPU);
  /// Free text stored in the manifest (e.g. the parent checkpoint's path).
  std::string parent;
};

/// Called after each chunk: index, chunk count, whether it was reused from disk.
using ChunkCallback = std::function<void(int64_t chunk, int64_t chunks, bool reused)>;

/// Pairs (X_0 = flow(x_1), x_1) with x_1 ~ prior. With a non-empty `dir`, chunk k is
/// stored as dir/chunk_KKKKK_x0.npy and _x1.npy (written atomically) beside a manifest
/// dir/pairs.json; a later call with the same options reuses the chunks already there
/// (resumable), and one with different options is refused rather than mixing pairs.
data::PairTable generate_pairs(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                               const data::Source& prior, const PairOptions& options,
                               const std::string& dir = "", const ChunkCallback& on_chunk = {});

/// Reads the pairs that generate_pairs stored in `dir` (all chunks must be present).
data::PairTable load_pairs(const std::string& dir);

/// Copies the weights of `from` into `to` (same architecture, else a cnf::Error): the
/// warm start of a reflow or a distillation from the flow that made the pairs.
void copy_weights(nn::VelocityFieldImpl& to, nn::VelocityFieldImpl& from);

/// How straight the trajectories of a flow are (see the file comment).
struct Straightness {
  /// Number of trajectories.
  int64_t n = 0;
  /// \var straightness
  /// S above.
  /// \var transport_cost
  /// E ||X_1 - X_0||^2.
  double straightness = 0, straightness_stderr = 0;      ///< standard error of S
  double transport_cost = 0, transport_cost_stderr = 0;  ///< its standard error
  double path_energy = 0;                                ///< E int ||v_t(X_t)||^2 dt
  /// path_energy / transport_cost >= 1 (Jensen), = 1 for straight constant-speed paths.
  double normalized_energy = 0;
  int64_t nfe = 0;  ///< NFE of the solve (the energy state does not steer the step size)
};

/// Straightness, transport cost and path energy of the flow's trajectories from
/// X_1 = sigma_1 x_1 (x_1: [B, D] prior draws) to X_0.
Straightness straightness(nn::VelocityFieldImpl& model, const path::Schedule& schedule,
                          const at::Tensor& x_1, const ode::SolveOptions& solve = default_solve());

}  // namespace cnf::rectify
