/// \file
/// cnf/data/pairs.h — a table of coupled pairs (x_0[i], x_1[i]) drawn jointly.
///
/// Flow matching usually pairs data and noise by a coupling of independent draws. Some
/// methods train on a fixed joint instead: rectified flow trains on the pairs
/// (X_0, X_1) that the previous flow produces (Liu et al., ICLR 2023), and one-step
/// distillation on the same pairs. Rows are drawn uniformly with replacement, and a
/// row's x_0 always travels with its own x_1.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>

namespace cnf::data {

/// A table of coupled pairs (x_0[i], x_1[i]) drawn by row: the fixed joint that reflow and
/// distillation train on.
class PairTable {
 public:
  /// x_0 and x_1: [N, D] with equal N and D, finite; `origin` names them in errors.
  PairTable(at::Tensor x_0, at::Tensor x_1, std::string origin);
  /// n rows (x_0, x_1), same row indices in both.
  std::pair<at::Tensor, at::Tensor> sample(int64_t n, at::Generator& gen) const;
  /// Number of pairs N.
  int64_t size() const { return x_0_.size(0); }
  /// Dimension D of x_0 and x_1.
  int64_t dim() const { return x_0_.size(1); }
  /// The name of the table in errors.
  const std::string& origin() const { return origin_; }
  /// The x_0 rows, float32 [N, D].
  const at::Tensor& x_0() const { return x_0_; }
  /// The x_1 rows, float32 [N, D].
  const at::Tensor& x_1() const { return x_1_; }

 private:
  at::Tensor x_0_, x_1_;  // float32 [N, D]
  std::string origin_;
};
/// A shared, immutable pair table.
using PairTablePtr = std::shared_ptr<const PairTable>;

}  // namespace cnf::data
