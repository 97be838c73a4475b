// cnf/ode/solve.h — explicit Runge–Kutta integration of dy/dt = f(t, y).
//
// Structure after diffrax and boost.odeint: a Butcher tableau is validated data; a
// stepper applies one tableau step and returns (y1, error); a step controller decides
// where the next step ends and whether a step is accepted; an observer sees every
// accepted step; `solve` is the one entry point, for forward (t1 > t0) and reverse
// (t1 < t0) time. Fixed stepping is the ConstantController: grid times are computed as
// t0 + (t1 - t0) k / N, never accumulated.
//
// The state is a list of tensors (e.g. {x, log_det}); every stage is the same linear
// combination applied to each. Gradients flow through the solver by ordinary autograd
// unless the caller disables it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cnf/core/registry.h"

namespace cnf::ode {

using State = std::vector<at::Tensor>;
/// Right-hand side f(t, y); time is a double (DESIGN.md §1).
using Rhs = std::function<State(double t, const State& y)>;

/// An explicit Runge–Kutta method as data. Construction validates it:
/// rows of `a` sum to `c`, sum(b) = 1, sum(b_err) = 0.
struct ButcherTableau {
  ButcherTableau(std::string name, std::vector<double> c, std::vector<std::vector<double>> a,
                 std::vector<double> b, int order, std::vector<double> b_err = {},
                 int error_order = 0);
  std::string name;
  std::vector<double> c;               ///< stage times, c[0] = 0
  std::vector<std::vector<double>> a;  ///< a[i] holds the i coefficients of stage i
  std::vector<double> b;               ///< weights of the solution
  int order;                           ///< classical order of the solution
  std::vector<double> b_err;           ///< b - b_hat of an embedded pair (empty: none)
  int error_order;                     ///< order of the embedded solution (0: none)
  int stages() const { return static_cast<int>(b.size()); }
  bool has_error_estimate() const { return !b_err.empty(); }
};

/// Every tableau cnf offers, by name: euler, midpoint, heun, rk4.
const Registry<ButcherTableau>& tableaus();

/// One step of size dt from (t, y): the new state, the embedded error estimate (empty
/// when the tableau has none) and the number of f evaluations it took.
struct StepResult {
  State y1;
  State error;
  int64_t nfe = 0;
};
StepResult rk_step(const ButcherTableau& tableau, const Rhs& f, double t, const State& y,
                   double dt);

/// Decides where each step ends and whether it is accepted.
class StepController {
 public:
  virtual ~StepController() = default;
  virtual void reset(double t0, double t1) = 0;
  /// End time of the next attempted step, given `accepted` steps so far, at time t.
  virtual double next_time(int64_t accepted, double t) const = 0;
  /// Accept or reject an attempted step (may adapt the controller's internal state).
  virtual bool accept(const StepResult& step, double t, double t_next) = 0;
  /// True when the controller has reached t1 after `accepted` steps at time t.
  virtual bool done(int64_t accepted, double t) const = 0;
};

/// N equal steps between t0 and t1, every step accepted.
class ConstantController final : public StepController {
 public:
  explicit ConstantController(int64_t steps);
  void reset(double t0, double t1) override;
  double next_time(int64_t accepted, double t) const override;
  bool accept(const StepResult&, double, double) override { return true; }
  bool done(int64_t accepted, double) const override { return accepted >= steps_; }

 private:
  int64_t steps_;
  double t0_ = 0, t1_ = 1;
};

/// Sees every accepted step: time and state after the step (also called once at t0).
using Observer = std::function<void(double t, const State& y)>;

struct SolveOptions {
  /// Tableau name (registry `tableaus()`).
  std::string method = "euler";
  /// Number of steps for fixed-step integration.
  int64_t steps = 100;
  /// Optional observer of every accepted step.
  Observer observer;
};

struct Solution {
  State y;                 ///< state at t1
  int64_t nfe = 0;         ///< evaluations of f
  int64_t n_accepted = 0;  ///< accepted steps
  int64_t n_rejected = 0;  ///< rejected steps
};

/// Integrates dy/dt = f(t, y) from t0 to t1 (either direction).
Solution solve(const Rhs& f, const State& y0, double t0, double t1, const SolveOptions& options);

/// Same, with an explicit controller.
Solution solve(const Rhs& f, const State& y0, double t0, double t1, const ButcherTableau& tableau,
               StepController& controller, const Observer& observer = {});

/// f(t, {x}) = {field.forward(x, t * ones[B])} for any velocity field.
template <class Field>
Rhs field_rhs(Field& field) {
  return [&field](double t, const State& y) {
    auto tt = at::full({y[0].size(0)}, t, y[0].options());
    return State{field.forward(y[0], tt)};
  };
}

}  // namespace cnf::ode
