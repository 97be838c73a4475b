/// \file
/// cnf/ot/sinkhorn.h — entropic optimal transport by Sinkhorn iterations in the log domain,
/// and ot::solve, the one entry point for exact and entropic OT between point sets.
///
/// Entropic OT (Cuturi 2013; Peyre & Cuturi 2019, "Computational Optimal Transport", §4):
///   min_P <C, P> + epsilon KL(P | a b^T)   s.t. P 1 = a, P^T 1 = b,
/// whose solution is P_ij = a_i b_j exp((f_i + g_j - C_ij) / epsilon) for dual potentials
/// f, g. Sinkhorn alternates the two exact half-steps (Peyre & Cuturi, Remark 4.23):
///   f_i = -epsilon log sum_j b_j exp((g_j - C_ij) / epsilon)
///   g_j = -epsilon log sum_i a_i exp((f_i - C_ij) / epsilon)
/// After a g-update the column marginals hold exactly; the iteration stops when the row
/// marginal error ||P 1 - a||_1 falls below `tol`.
///
/// How the half-steps are evaluated (Schmitzer 2019, "Stabilized sparse scaling algorithms
/// for entropy regularized transport problems", §3.1, absorption): the potentials of the
/// last absorption are folded into a kernel K_ij = a_i b_j exp((f_i + g_j - C_ij) / epsilon),
/// and the iterations only update scalings u = a / (K v), v = b / (K^T u) (two
/// matrix-vector products, P = diag(u) K diag(v)). When the scalings leave exp(+-50) they
/// are absorbed into f, g and K is rebuilt, so neither K nor u, v approach double's range.
/// Should K v still underflow to 0 (a cold start at an epsilon far below the cost range),
/// the solve continues in the log domain, with log-sum-exp over the [n, m] matrix, from the
/// potentials of the last absorption; `log_domain` asks for that route from the start.
///
/// Epsilon scaling (Kosowsky & Yuille 1994; Schmitzer 2019, §3.2): Sinkhorn needs
/// O(max C / epsilon) iterations, so a cold start at small epsilon is slow. With
/// eps_scaling = q in (0, 1) the solver first runs a few iterations at epsilon_k = R, q R,
/// q^2 R, ... > epsilon (R = max C - min C), each warm-starting the next, then iterates at epsilon
/// to the tolerance. The potentials are in cost units, so they carry over between stages.
///
/// Everything runs in float64 on the device of the inputs (a GPU tensor runs on the GPU).
/// <C, P_epsilon> -> the exact OT cost as epsilon -> 0, with a bias O(epsilon log(1/epsilon)).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "cnf/ot/emd.h"

/// Discrete optimal transport between point sets: exact (network simplex, assignment),
/// entropic (Sinkhorn) and neural (ICNN, critic) estimates; ot::solve is the entry point.
namespace cnf::ot {

/// Regularization, stopping rule, epsilon scaling and warm start of Sinkhorn; validate()
/// checks them.
struct SinkhornOptions {
  /// Entropic regularization epsilon > 0, in the units of the cost.
  double epsilon = 0.05;
  /// Stop when the L1 marginal error ||P 1 - a||_1 + ||P^T 1 - b||_1 <= tol (> 0).
  double tol = 1e-6;
  /// Iterations (each one f- and one g-update) before giving up; >= 1.
  int64_t max_iter = 10000;
  /// The marginal error is measured every `check_every` iterations (it costs as much as a
  /// half-step, and on a GPU it synchronizes).
  int64_t check_every = 10;
  /// Epsilon-scaling factor q in (0, 1), or 0 for none; skipped on a warm start.
  double eps_scaling = 0.5;
  /// Iterations at each intermediate epsilon of the scaling (>= 1).
  int64_t scaling_iters = 10;
  /// Run every half-step in the log domain (log-sum-exp over the [n, m] matrix, ~10x
  /// slower) instead of the stabilized kernel; both give the same iterates.
  bool log_domain = false;
  /// Warm start: initial dual potentials f [n] and g [m] (e.g. from a previous solve with
  /// a larger epsilon or nearby points). Undefined tensors start from zero; g is
  /// recomputed by the first iteration, so only f matters.
  at::Tensor f_init, g_init;
  /// \var g_init
  /// Initial potential g [m]; see f_init.

  /// Sets `epsilon`; returns *this for chaining.
  SinkhornOptions& set_epsilon(double e) {
    epsilon = e;
    return *this;
  }
  /// Sets `tol`; returns *this for chaining.
  SinkhornOptions& set_tol(double t) {
    tol = t;
    return *this;
  }
  /// Sets `max_iter`; returns *this for chaining.
  SinkhornOptions& set_max_iter(int64_t k) {
    max_iter = k;
    return *this;
  }
  /// Throws cnf::Error naming the first invalid field and how to fix it.
  void validate() const;
};

/// The entropic plan, its dual potentials and how the iteration ended.
struct SinkhornResult {
  at::Tensor plan;  ///< [n, m] float64 on the input's device
  /// \var f
  /// Dual potential f [n] (feed to f_init to warm start).
  at::Tensor f, g;            ///< dual potentials [n], [m] (feed to f_init/g_init to warm start)
  double cost = 0;            ///< <C, P>, the transport cost of the entropic plan
  double marginal_error = 0;  ///< ||P 1 - a||_1 + ||P^T 1 - b||_1 at the last check
  int64_t iterations = 0;     ///< all iterations, those of the epsilon scaling included
  bool converged = false;     ///< marginal_error <= tol
  /// \var epsilon
  /// The epsilon of the final iterations.
  /// \var tol
  /// The tolerance it ran to.
  double epsilon = 0, tol = 0;
  /// One line: converged after k iterations, or why not and what to change.
  std::string report() const;
};

/// Sinkhorn for a cost matrix [n, m] and weights a [n], b [m] (nonnegative, summing to 1
/// within 1e-6). Does not throw when max_iter is reached: check `converged` / report().
SinkhornResult sinkhorn_weighted(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cost,
                                 const SinkhornOptions& options = {});

/// Sinkhorn between the uniform empirical measures on x [n, d] and y [m, d].
SinkhornResult sinkhorn(const at::Tensor& x, const at::Tensor& y, Cost cost = Cost::sqeuclidean,
                        const SinkhornOptions& options = {});

// --------------------------------------------------------------------------- ot::solve

/// Which solver ot::solve uses: exact (emd) or entropic (sinkhorn).
enum class Method { emd, sinkhorn };
/// "emd" or "sinkhorn"; an unknown name lists the valid ones.
Method parse_method(const std::string& name);

/// Solver and ground cost of ot::solve.
struct SolveOptions {
  /// The solver; exact by default.
  Method method = Method::emd;
  /// The ground cost; squared Euclidean by default.
  Cost cost = Cost::sqeuclidean;
  SinkhornOptions sinkhorn;  ///< used when method == sinkhorn
};

/// What either solver returns; the Sinkhorn fields are left at their defaults for EMD.
struct Solution {
  /// <C, P>, the transport cost of the plan.
  double cost = 0;
  at::Tensor plan;        ///< [n, m] float64
  at::Tensor assignment;  ///< [n] int64: EMD with uniform weights and n == m only
  /// Whether Sinkhorn reached its tolerance (always true for EMD).
  bool converged = true;
  /// Sinkhorn iterations (0 for EMD).
  int64_t iterations = 0;
  /// Sinkhorn's L1 marginal error at the last check (0 for EMD).
  double marginal_error = 0;
  std::string report;  ///< Sinkhorn's report(); empty for EMD
};

/// OT between x [n, d] and y [m, d] with weights a [n], b [m] (undefined: uniform).
///
/// Example (examples/optimal_transport/main.cpp): the exact plan, then an entropic one.
/// \snippet optimal_transport/main.cpp exact
/// \snippet optimal_transport/main.cpp sinkhorn
Solution solve(const at::Tensor& x, const at::Tensor& y, const SolveOptions& options,
               const at::Tensor& a = {}, const at::Tensor& b = {});

}  // namespace cnf::ot
