/// \file
/// cnf/ode/per_row.h — adaptive stepping with one step size and one time per row: the rows
/// of a batch integrated as independent solves that share each evaluation of f. A row whose
/// trajectory is easy finishes in few steps and leaves the batch; a hard row no longer sets
/// the step size of all the others.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "cnf/ode/solve.h"

namespace cnf::ode {

/// f(t, y) with one time per row: `t` [M] (the dtype and device of y), `y` [M, ...]; returns
/// dy/dt with y's shape. M is the number of rows still integrating, at most the batch's.
using RowRhs = std::function<at::Tensor(const at::Tensor& t, const at::Tensor& y)>;

/// What solve_per_row returns.
struct RowSolution {
  at::Tensor y;           ///< the state at t1 [N, ...]
  int64_t calls = 0;      ///< evaluations of f (each over the rows still integrating)
  int64_t row_evals = 0;  ///< rows evaluated, summed over calls (a shared step spends N x NFE)
  at::Tensor accepted;    ///< accepted steps of each row, int64 [N]
  at::Tensor rejected;    ///< rejected steps of each row, int64 [N]
  /// Evaluations per row on average, row_evals / N: comparable with a shared-step NFE.
  double nfe_per_row() const;
};

/// Integrates dy/dt = f(t, y) from t0 to t1 (either direction) for every row of `y0`
/// [N, ...] on its own: each row has its own step size and time, chosen by the controller of
/// AdaptiveController (the same initial step rule, error norm, gains and limits in
/// `options`) applied to that row's entries alone. Each call of f evaluates the rows that have
/// not reached t1. With identical rows it takes the steps of ode::solve. The tableau needs an
/// embedded error estimate (bosh3, dopri5, tsit5). Throws cnf::Error naming the row and its
/// time when a row exhausts max_steps or its step underflows, and when the result is not
/// finite.
RowSolution solve_per_row(const RowRhs& f, const at::Tensor& y0, double t0, double t1,
                          const ButcherTableau& tableau, const AdaptiveOptions& options);

}  // namespace cnf::ode
