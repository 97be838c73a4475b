/// \file
/// cnf/ode/solve.h — explicit Runge–Kutta integration of dy/dt = f(t, y).
///
/// Structure after diffrax and boost.odeint: a Butcher tableau is validated data; a
/// stepper applies one tableau step and returns (y1, error); a step controller decides
/// where the next step ends and whether a step is accepted; an observer sees every
/// accepted step; `solve` is the one entry point, for forward (t1 > t0) and reverse
/// (t1 < t0) time. Fixed stepping is the ConstantController: grid times are computed as
/// t0 + (t1 - t0) k / N, never accumulated.
///
/// The state is a list of tensors (e.g. {x, log_det}); every stage is the same linear
/// combination applied to each. Gradients flow through the solver by ordinary autograd
/// unless the caller disables it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>  // field_rhs

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cnf/core/registry.h"

/// ODE integration: Butcher tableaux, steppers, step controllers, ode::solve (the one entry
/// point) and the adjoint method.
namespace cnf::ode {

/// The state: a list of tensors (e.g. {x, log_det}), each advanced by the same stage
/// combinations.
using State = std::vector<at::Tensor>;
/// Right-hand side f(t, y); time is a double (DESIGN.md §1).
using Rhs = std::function<State(double t, const State& y)>;

/// An explicit Runge–Kutta method as data. Construction validates it:
/// rows of `a` sum to `c`, sum(b) = 1, sum(b_err) = 0, and a continuous extension (when
/// given) has sum_i b_i(theta) = theta and b_i(1) = b_i.
struct ButcherTableau {
  /// Validates the tableau (see above) and detects FSAL; errors name the tableau and the bad
  /// row or sum.
  ButcherTableau(std::string name, std::vector<double> c, std::vector<std::vector<double>> a,
                 std::vector<double> b, int order, std::vector<double> b_err = {},
                 int error_order = 0, std::vector<std::vector<double>> dense = {},
                 int dense_order = 0);
  /// The registry name, e.g. "dopri5".
  std::string name;
  std::vector<double> c;               ///< stage times, c[0] = 0
  std::vector<std::vector<double>> a;  ///< a[i] holds the i coefficients of stage i
  std::vector<double> b;               ///< weights of the solution
  int order;                           ///< classical order of the solution
  std::vector<double> b_err;           ///< b - b_hat of an embedded pair (empty: none)
  int error_order;                     ///< order of the embedded solution (0: none)
  /// Continuous extension (dense output) inside a step (Hairer, Norsett & Wanner, Solving
  /// ODEs I, sec. II.6): y(t + theta dt) ~ y + dt sum_i b_i(theta) k_i with the polynomial
  /// weights b_i(theta) = sum_q dense[i][q] theta^(q + 1), built from the step's own stages
  /// (no extra evaluations). Empty: `solve` interpolates by cubic Hermite instead.
  std::vector<std::vector<double>> dense;
  int dense_order;  ///< order of the continuous extension (local error O(dt^(dense_order + 1)))
  /// Number of stages s.
  int stages() const { return static_cast<int>(b.size()); }
  /// Whether the tableau has an embedded pair (adaptive stepping).
  bool has_error_estimate() const { return !b_err.empty(); }
  /// Whether the tableau has its own continuous extension (dense output).
  bool has_dense_output() const { return !dense.empty(); }
  /// First-same-as-last: the last stage is f(t + dt, y1), reusable as the next first stage.
  bool fsal() const { return fsal_; }

 private:
  bool fsal_ = false;
};

/// Every tableau cnf offers, by name: euler, midpoint, heun, rk4 (fixed step) and the
/// embedded pairs bosh3 (Bogacki–Shampine 3(2)), dopri5 (Dormand–Prince 5(4)) and tsit5
/// (Tsitouras 5(4)), which `solve` steps adaptively.
const Registry<ButcherTableau>& tableaus();

/// One step of size dt from (t, y): the new state, the embedded error estimate (empty
/// when the tableau has none) and the number of f evaluations it took.
struct StepResult {
  /// The state after the step.
  State y1;
  /// The embedded error estimate (empty when the tableau has none).
  State error;
  State f1;  ///< f(t + dt, y1) when the tableau is FSAL (empty otherwise)
  /// The stages k_1..k_s when the tableau has a continuous extension (empty otherwise).
  std::vector<State> stages;
  /// Evaluations of f the step took.
  int64_t nfe = 0;
};
/// `k0`, when non-null and non-empty, is f(t, y) already known (saves one evaluation).
StepResult rk_step(const ButcherTableau& tableau, const Rhs& f, double t, const State& y, double dt,
                   const State* k0 = nullptr);

/// The tableau's continuous extension at theta in [0, 1] inside a step of size dt from y,
/// given that step's stages (`StepResult::stages`): y + dt sum_i b_i(theta) k_i. The tableau
/// must have one (`has_dense_output()`).
State dense_output(const ButcherTableau& tableau, const State& y, const std::vector<State>& stages,
                   double dt, double theta);

/// Decides where each step ends and whether it is accepted.
class StepController {
 public:
  virtual ~StepController() = default;
  /// Prepares a solve from (t0, y0) with f0 = f(t0, y0) to t1. May evaluate f (initial
  /// step selection) and returns the number of evaluations it spent.
  virtual int64_t init(const Rhs& f, double t0, double t1, const State& y0, const State& f0,
                       const ButcherTableau& tableau) = 0;
  /// Whether init needs f0 (fixed steps do not).
  virtual bool needs_f0() const { return false; }
  /// End time of the next attempted step, given `accepted` steps so far, at time t.
  virtual double next_time(int64_t accepted, double t) const = 0;
  /// Accepts or rejects an attempted step from y (may adapt the step size).
  virtual bool accept(const State& y, const StepResult& step, double t, double t_next) = 0;
  /// True when the controller has reached t1 after `accepted` steps at time t.
  virtual bool done(int64_t accepted, double t) const = 0;
};

/// N equal steps between t0 and t1, every step accepted.
class ConstantController final : public StepController {
 public:
  /// `steps` >= 1 equal steps.
  explicit ConstantController(int64_t steps);
  int64_t init(const Rhs&, double t0, double t1, const State&, const State&,
               const ButcherTableau&) override;
  double next_time(int64_t accepted, double t) const override;
  bool accept(const State&, const StepResult&, double, double) override { return true; }
  bool done(int64_t accepted, double) const override { return accepted >= steps_; }

 private:
  int64_t steps_;
  double t0_ = 0, t1_ = 1;
};

/// Options of the adaptive step-size controller.
struct AdaptiveOptions {
  /// Relative tolerance (> 0).
  double rtol = 1e-5;
  /// Absolute tolerance (> 0).
  double atol = 1e-5;
  /// First step size; 0 selects it by Hairer's rule (Hairer, Norsett & Wanner, Solving
  /// ODEs I, sec. II.4).
  double first_step = 0.0;
  /// Smallest allowed step; 0 means 1e-12 * |t1 - t0|.
  double min_step = 0.0;
  /// Attempted steps (accepted + rejected) before giving up.
  int64_t max_steps = 100000;
  /// Which state tensors enter the error norm (empty: all). Log-density and regularizer
  /// integrals ride along without steering the step size.
  std::vector<bool> error_mask;
  /// Controller gains as multiples of 1/k, k = error_order + 1 (Hairer & Wanner, Solving
  /// ODEs II, sec. IV.2; Soderlind 2002): after an accepted step the size changes by
  /// factor = safety * err^-(beta1/k) * prev^(beta2/k). The default beta2 = 0 is the
  /// elementary (I) controller, as the Python ODE libraries use. Chosen from work-precision
  /// curves (bench/python/work_precision.py: dopri5 on a trained OT-path and a VP model,
  /// 1,000 points): at equal error it needs no more evaluations than the PI gains
  /// (0.7, 0.4), (0.85, 0.2) or (1, 0.3) at most accuracies, while those took 1.2-1.6x the
  /// evaluations at the same tolerance (and were that much more accurate). Set beta2 > 0
  /// for a smoother step sequence on problems with many rejections.
  double safety = 0.9, beta1 = 1.0, beta2 = 0.0;
  /// \var beta1
  /// Exponent of the current error in the PI factor (see safety).
  /// \var beta2
  /// Exponent of the previous accepted error in the PI factor (see safety).
  /// \var min_factor
  /// Smallest factor a step size may shrink by, in (0, 1).
  /// \var max_factor
  /// Largest factor a step size may grow by (> 1).
  double min_factor = 0.2, max_factor = 10.0;
};

/// Error-controlled steps for tableaux with an embedded pair. Error norm: RMS over all
/// (masked-in) entries of err / (atol + rtol * max(|y|, |y1|)); a step is accepted when
/// the norm is <= 1. Throws cnf::Error naming t, the step size and the option to change
/// when the step size underflows `min_step` or `max_steps` is exhausted.
class AdaptiveController final : public StepController {
 public:
  /// Validates `options`; errors name the bad field.
  explicit AdaptiveController(AdaptiveOptions options);
  int64_t init(const Rhs& f, double t0, double t1, const State& y0, const State& f0,
               const ButcherTableau& tableau) override;
  bool needs_f0() const override { return true; }
  double next_time(int64_t accepted, double t) const override;
  bool accept(const State& y, const StepResult& step, double t, double t_next) override;
  bool done(int64_t, double t) const override { return t == t1_; }
  /// The magnitude of the next attempted step.
  double step_size() const { return dt_; }
  /// The RMS norm used for error control (exposed for tests).
  double error_norm(const State& y, const State& y1, const State& err) const;

 private:
  AdaptiveOptions o_;
  double t0_ = 0, t1_ = 1, dt_ = 0, min_step_ = 0, prev_err_ = 1;
  int error_order_ = 1;
  int64_t attempts_ = 0;
};

/// Sees every accepted step: time and state after the step (also called once at t0).
using Observer = std::function<void(double t, const State& y)>;

/// How ode::solve integrates: tableau, steps or tolerances, output times, observer.
struct SolveOptions {
  /// Tableau name (registry `tableaus()`). Tableaux with an embedded error estimate
  /// (bosh3, dopri5, tsit5) step adaptively; the others take `steps` equal steps.
  std::string method = "euler";
  /// Number of steps for fixed-step integration.
  int64_t steps = 100;
  /// Tolerances and limits of adaptive stepping.
  AdaptiveOptions adaptive;
  /// Times (between t0 and t1, in the direction of integration) at which to report the
  /// state (exact at step ends). Inside a step: the tableau's own continuous extension where
  /// it has one (dopri5, tsit5: order 4, from the step's stages), else cubic Hermite
  /// interpolation of (y, f) at the step's ends (order 3).
  std::vector<double> save_at;
  /// Optional observer of every accepted step.
  Observer observer;

  /// The options of a method with `steps` fixed steps or the tolerances and step limit of
  /// adaptive stepping, checked: an unknown method lists the valid ones, and steps,
  /// tolerances and max_steps must be positive (errors name the field).
  static SolveOptions of(const std::string& method, int64_t steps, double rtol, double atol,
                         int64_t max_steps = 100000);
};

/// What ode::solve returns: the final state, the states at save_at, and the counts.
struct Solution {
  State y;                 ///< state at t1
  std::vector<double> ts;  ///< the save_at times
  std::vector<State> ys;   ///< states at the save_at times
  int64_t nfe = 0;         ///< evaluations of f
  int64_t n_accepted = 0;  ///< accepted steps
  int64_t n_rejected = 0;  ///< rejected steps
};

/// Integrates dy/dt = f(t, y) from t0 to t1 (either direction). Throws cnf::Error when
/// the final state is not finite (never returns NaN silently).
///
/// Example (RK4 in 20 steps from noise at t = 1 to data at t = 0, through train::generate):
/// \snippet train_own_data/main.cpp sample
Solution solve(const Rhs& f, const State& y0, double t0, double t1, const SolveOptions& options);

/// Same, with an explicit tableau and controller.
Solution solve(const Rhs& f, const State& y0, double t0, double t1, const ButcherTableau& tableau,
               StepController& controller, const Observer& observer = {},
               const std::vector<double>& save_at = {});

/// f(t, {x}) = {field.forward(x, t * ones[B])} for any velocity field.
template <class Field>
Rhs field_rhs(Field& field) {
  return [&field](double t, const State& y) {
    auto tt = at::full({y[0].size(0)}, t, y[0].options());
    return State{field.forward(y[0], tt)};
  };
}

}  // namespace cnf::ode
