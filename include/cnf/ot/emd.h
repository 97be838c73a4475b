// cnf/ot/emd.h — exact discrete optimal transport by network simplex (LEMON).
//
// Solves min_P <C, P> s.t. P 1 = a, P^T 1 = b, P >= 0 for histograms a, b on point
// sets x [n, d], y [m, d]. The network simplex of LEMON (Kovacs 2015; Bonneel et al.
// 2011 for its use in OT) works on integer supplies, so weights are scaled to integers
// (exactly for uniform weights: a_i = m, b_j = n).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace cnf::ot {

enum class Cost { sqeuclidean, euclidean };
Cost parse_cost(const std::string& name);

/// Pairwise cost matrix [n, m] in float64.
at::Tensor cost_matrix(const at::Tensor& x, const at::Tensor& y, Cost cost);

struct EmdResult {
  double cost = 0;        ///< <C, P>, the optimal transport cost
  at::Tensor plan;        ///< [n, m] float64, rows sum to a, columns to b
  at::Tensor assignment;  ///< [n] int64 when n == m with uniform weights (a permutation)
};

/// Exact OT between uniform empirical measures on x [n, d] and y [m, d].
EmdResult emd(const at::Tensor& x, const at::Tensor& y, Cost cost = Cost::sqeuclidean);

/// Exact OT for a cost matrix [n, m] and weights a [n], b [m] (nonnegative, each summing
/// to 1 within 1e-6; they are renormalized).
EmdResult emd_weighted(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cost);

}  // namespace cnf::ot
