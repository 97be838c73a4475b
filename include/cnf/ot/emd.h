/// \file
/// cnf/ot/emd.h — exact discrete optimal transport by network simplex (LEMON).
///
/// Solves min_P <C, P> s.t. P 1 = a, P^T 1 = b, P >= 0 for histograms a, b on point
/// sets x [n, d], y [m, d]. The network simplex of LEMON (Kovacs 2015; Bonneel et al.
/// 2011 for its use in OT) works on integer supplies, so weights are scaled to integers
/// (exactly for uniform weights: a_i = m, b_j = n).
///
/// Uniform marginals on equal-size sets are an assignment problem: the optimal plan is a
/// permutation matrix / n (Birkhoff-von Neumann). emd() then uses a dedicated shortest
/// augmenting path solver (Jonker & Volgenant 1987), much faster than the network simplex
/// on dense n x n problems; both are exact and the tests check one against the other.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace cnf::ot {

/// Ground cost c(x, y): squared Euclidean ||x - y||^2 or Euclidean ||x - y||.
enum class Cost { sqeuclidean, euclidean };
/// "sqeuclidean" or "euclidean"; an unknown name lists the valid ones.
Cost parse_cost(const std::string& name);

/// Validates a weight vector for `expected` points (1-D, finite, nonnegative, summing to
/// 1 within 1e-6) and returns it renormalized as float64 on the CPU. Errors name `name`.
at::Tensor checked_weights(const at::Tensor& w, const char* name, int64_t expected);

/// Pairwise cost matrix [n, m] in float64.
at::Tensor cost_matrix(const at::Tensor& x, const at::Tensor& y, Cost cost);

/// An exact transport plan and its cost.
struct EmdResult {
  double cost = 0;        ///< <C, P>, the optimal transport cost
  at::Tensor plan;        ///< [n, m] float64, rows sum to a, columns to b
  at::Tensor assignment;  ///< [n] int64 when n == m with uniform weights (a permutation)
};

/// Which exact solver emd() uses. `automatic` picks `assignment` when n == m (uniform
/// weights) and `network_simplex` otherwise; `assignment` requires n == m.
enum class ExactSolver { automatic, network_simplex, assignment };

/// Exact OT between uniform empirical measures on x [n, d] and y [m, d].
EmdResult emd(const at::Tensor& x, const at::Tensor& y, Cost cost = Cost::sqeuclidean,
              ExactSolver solver = ExactSolver::automatic);

/// Optimal assignment for a square cost matrix [n, n]: the permutation sigma [n] (int64)
/// minimizing sum_i C[i, sigma(i)], by Dijkstra shortest augmenting paths on reduced costs
/// with dual potentials (Jonker & Volgenant 1987, "A shortest augmenting path algorithm
/// for dense and sparse linear assignment problems"). O(n^3) worst case; on random point
/// clouds the paths stay short. Exact in floating point up to the rounding of the duals.
at::Tensor assignment(const at::Tensor& cost);

/// The assignment solver relaxes four columns per instruction with AVX2 when the CPU has
/// it; false forces its portable scalar loop (same operations, same answer: for tests).
void set_assignment_simd(bool enabled);

/// Exact OT for a cost matrix [n, m] and weights a [n], b [m] (nonnegative, each summing
/// to 1 within 1e-6; they are renormalized).
EmdResult emd_weighted(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cost);

}  // namespace cnf::ot
