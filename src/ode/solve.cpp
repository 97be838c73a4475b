#include "cnf/ode/solve.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"

namespace cnf::ode {

namespace {
// Coefficients built from exact rationals agree with their stated sums to ~1e-16.
constexpr double kTableauTol = 1e-12;
}  // namespace

ButcherTableau::ButcherTableau(std::string name_, std::vector<double> c_,
                               std::vector<std::vector<double>> a_, std::vector<double> b_,
                               int order_, std::vector<double> b_err_, int error_order_,
                               std::vector<std::vector<double>> dense_, int dense_order_)
    : name(std::move(name_)),
      c(std::move(c_)),
      a(std::move(a_)),
      b(std::move(b_)),
      order(order_),
      b_err(std::move(b_err_)),
      error_order(error_order_),
      dense(std::move(dense_)),
      dense_order(dense_order_) {
  const size_t s = b.size();
  CNF_CHECK(s >= 1, "tableau '", name, "' has no stages");
  CNF_CHECK(c.size() == s && a.size() == s, "tableau '", name, "': c has ", c.size(), " and a has ",
            a.size(), " rows, but b has ", s, " stages");
  CNF_CHECK(order >= 1, "tableau '", name, "': order must be >= 1, got ", order);
  for (size_t i = 0; i < s; ++i) {
    CNF_CHECK(a[i].size() == i, "tableau '", name, "': row ", i, " of a must have ", i,
              " entries (explicit method), got ", a[i].size());
    double row = 0;
    for (double v : a[i]) row += v;
    CNF_CHECK(std::abs(row - c[i]) < kTableauTol, "tableau '", name, "': row ", i, " of a sums to ",
              row, " but c[", i, "] = ", c[i]);
  }
  double sb = 0;
  for (double v : b) sb += v;
  CNF_CHECK(std::abs(sb - 1.0) < kTableauTol, "tableau '", name, "': b sums to ", sb,
            ", must be 1");
  if (!b_err.empty()) {
    CNF_CHECK(b_err.size() == s, "tableau '", name, "': b_err has ", b_err.size(),
              " entries, expected ", s);
    double se = 0;
    for (double v : b_err) se += v;
    CNF_CHECK(std::abs(se) < kTableauTol, "tableau '", name, "': b_err sums to ", se,
              ", must be 0");
    CNF_CHECK(error_order >= 1, "tableau '", name, "': an embedded pair needs error_order >= 1");
  }
  if (!dense.empty()) {
    // A continuous extension must reproduce y' = 1 for every theta (sum_i b_i(theta) = theta)
    // and join the step's solution at its end (b_i(1) = b_i).
    CNF_CHECK(dense.size() == s, "tableau '", name, "': dense output has ", dense.size(),
              " rows, expected ", s);
    const size_t degree = dense[0].size();
    CNF_CHECK(degree >= 1, "tableau '", name, "': dense output rows are empty");
    for (size_t q = 0; q < degree; ++q) {
      double sum = 0;
      for (size_t i = 0; i < s; ++i) {
        CNF_CHECK(dense[i].size() == degree, "tableau '", name, "': dense output row ", i, " has ",
                  dense[i].size(), " coefficients, row 0 has ", degree);
        sum += dense[i][q];
      }
      CNF_CHECK(std::abs(sum - (q == 0 ? 1.0 : 0.0)) < kTableauTol, "tableau '", name,
                "': the dense output weights of theta^", q + 1, " sum to ", sum, ", must be ",
                q == 0 ? 1 : 0);
    }
    for (size_t i = 0; i < s; ++i) {
      double at_one = 0;
      for (double v : dense[i]) at_one += v;
      CNF_CHECK(std::abs(at_one - b[i]) < kTableauTol, "tableau '", name, "': dense output weight ",
                i, " is ", at_one, " at theta = 1 but b[", i, "] = ", b[i]);
    }
    CNF_CHECK(dense_order >= 1, "tableau '", name, "': a dense output needs dense_order >= 1");
  }
  // FSAL: the last stage is evaluated at (t + dt, y1).
  fsal_ = s >= 2 && c.back() == 1.0 && b.back() == 0.0;
  for (size_t j = 0; fsal_ && j + 1 < s; ++j) fsal_ = a.back()[j] == b[j];
}

namespace {
// y + dt * sum_j w_j k_j, skipping zero weights (saves a multiply-add per zero).
State combine(const State& y, double dt, const std::vector<double>& w,
              const std::vector<State>& k) {
  State out = y;
  for (size_t n = 0; n < y.size(); ++n) {
    for (size_t j = 0; j < w.size(); ++j)
      if (w[j] != 0.0) out[n] = out[n] + (dt * w[j]) * k[j][n];
  }
  return out;
}
}  // namespace

StepResult rk_step(const ButcherTableau& tab, const Rhs& f, double t, const State& y, double dt,
                   const State* k0) {
  const int s = tab.stages();
  std::vector<State> k;
  k.reserve(s);
  StepResult r;
  for (int i = 0; i < s; ++i) {
    if (i == 0 && k0 != nullptr && !k0->empty()) {
      k.push_back(*k0);
      continue;
    }
    State yi = i == 0 ? y : combine(y, dt, tab.a[i], k);
    k.push_back(f(t + tab.c[i] * dt, yi));
    ++r.nfe;
    CNF_CHECK(k.back().size() == y.size(), "ODE right-hand side returned ", k.back().size(),
              " tensors for a state of ", y.size());
  }
  r.y1 = combine(y, dt, tab.b, k);
  if (tab.fsal()) r.f1 = k.back();
  if (tab.has_error_estimate()) {
    State zero;
    for (const auto& v : y) zero.push_back(torch::zeros_like(v));
    r.error = combine(zero, dt, tab.b_err, k);
  }
  if (tab.has_dense_output()) r.stages = std::move(k);
  return r;
}

State dense_output(const ButcherTableau& tab, const State& y, const std::vector<State>& stages,
                   double dt, double theta) {
  CNF_CHECK(tab.has_dense_output(), "tableau '", tab.name, "' has no continuous extension");
  CNF_CHECK(stages.size() == static_cast<size_t>(tab.stages()), "dense output of '", tab.name,
            "' needs its ", tab.stages(), " stages, got ", stages.size());
  // b_i(theta) = sum_q dense[i][q] theta^(q + 1), by Horner's rule.
  std::vector<double> w(tab.dense.size());
  for (size_t i = 0; i < w.size(); ++i) {
    double p = 0;
    for (size_t q = tab.dense[i].size(); q-- > 0;) p = (p + tab.dense[i][q]) * theta;
    w[i] = p;
  }
  return combine(y, dt, w, stages);
}

ConstantController::ConstantController(int64_t steps) : steps_(steps) {
  CNF_CHECK(steps >= 1, "the number of steps must be >= 1, got ", steps);
}
int64_t ConstantController::init(const Rhs&, double t0, double t1, const State&, const State&,
                                 const ButcherTableau&) {
  t0_ = t0;
  t1_ = t1;
  return 0;
}
double ConstantController::next_time(int64_t accepted, double) const {
  // Grid times from the index, not by accumulating dt (no drift in the last step).
  if (accepted + 1 >= steps_) return t1_;
  return t0_ + (t1_ - t0_) * static_cast<double>(accepted + 1) / static_cast<double>(steps_);
}

AdaptiveController::AdaptiveController(AdaptiveOptions o) : o_(std::move(o)) {
  CNF_CHECK(o_.rtol > 0 && std::isfinite(o_.rtol), "rtol must be > 0, got ", o_.rtol);
  CNF_CHECK(o_.atol > 0 && std::isfinite(o_.atol), "atol must be > 0, got ", o_.atol);
  CNF_CHECK(o_.first_step >= 0, "first_step must be >= 0 (0: automatic), got ", o_.first_step);
  CNF_CHECK(o_.min_step >= 0, "min_step must be >= 0 (0: automatic), got ", o_.min_step);
  CNF_CHECK(o_.max_steps >= 1, "max_steps must be >= 1, got ", o_.max_steps);
  CNF_CHECK(o_.safety > 0 && o_.safety <= 1, "safety must be in (0, 1], got ", o_.safety);
  CNF_CHECK(o_.min_factor > 0 && o_.min_factor < 1 && o_.max_factor > 1,
            "need 0 < min_factor < 1 < max_factor, got ", o_.min_factor, " and ", o_.max_factor);
}

double AdaptiveController::error_norm(const State& y, const State& y1, const State& err) const {
  double sum = 0;
  int64_t count = 0;
  for (size_t n = 0; n < err.size(); ++n) {
    if (!o_.error_mask.empty() && !o_.error_mask[n]) continue;
    auto scale = o_.atol + o_.rtol * torch::maximum(y[n].abs(), y1[n].abs());
    sum += (err[n] / scale).pow(2).sum().item<double>();
    count += err[n].numel();
  }
  return count == 0 ? 0.0 : std::sqrt(sum / static_cast<double>(count));
}

int64_t AdaptiveController::init(const Rhs& f, double t0, double t1, const State& y0,
                                 const State& f0, const ButcherTableau& tableau) {
  CNF_CHECK(tableau.has_error_estimate(), "adaptive stepping needs a tableau with an embedded ",
            "error estimate (bosh3, dopri5, tsit5); '", tableau.name, "' has none");
  CNF_CHECK(o_.error_mask.empty() || o_.error_mask.size() == y0.size(), "error_mask has ",
            o_.error_mask.size(), " entries for a state of ", y0.size(), " tensors");
  t0_ = t0;
  t1_ = t1;
  error_order_ = tableau.error_order;
  attempts_ = 0;
  prev_err_ = 1.0;
  const double span = std::abs(t1 - t0);
  min_step_ = o_.min_step > 0 ? o_.min_step : 1e-12 * span;
  if (o_.first_step > 0) {
    dt_ = std::min(o_.first_step, span);
    return 0;
  }
  // Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4 ("starting step size"):
  // h0 from |y0| / |f0|, one explicit Euler trial step to estimate the second derivative,
  // h1 = (0.01 / max(d1, d2))^(1 / (order + 1)), h = min(100 h0, h1).
  const double dir = t1 >= t0 ? 1.0 : -1.0;
  State zero;
  for (const auto& v : y0) zero.push_back(torch::zeros_like(v));
  const double d0 = error_norm(zero, y0, y0);
  const double d1 = error_norm(zero, y0, f0);
  double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  h0 = std::min(h0, span);
  State y_trial;
  for (size_t n = 0; n < y0.size(); ++n) y_trial.push_back(y0[n] + (dir * h0) * f0[n]);
  State f_trial = f(t0 + dir * h0, y_trial);
  State df;
  for (size_t n = 0; n < y0.size(); ++n) df.push_back(f_trial[n] - f0[n]);
  const double d2 = error_norm(zero, y0, df) / h0;
  const double h1 = std::max(d1, d2) <= 1e-15
                        ? std::max(1e-6, h0 * 1e-3)
                        : std::pow(0.01 / std::max(d1, d2), 1.0 / (error_order_ + 1.0));
  dt_ = std::min({100 * h0, h1, span});
  return 1;
}

double AdaptiveController::next_time(int64_t, double t) const {
  const double dir = t1_ >= t0_ ? 1.0 : -1.0;
  const double t_next = t + dir * dt_;
  // Land exactly on t1 (and do not leave a sliver of < 1% of a step behind).
  if (dir * (t1_ - t_next) <= 0.01 * dt_) return t1_;
  return t_next;
}

bool AdaptiveController::accept(const State& y, const StepResult& step, double t, double t_next) {
  ++attempts_;
  const double h = std::abs(t_next - t);
  double err = error_norm(y, step.y1, step.error);
  const double k = error_order_ + 1.0;
  CNF_CHECK(attempts_ <= o_.max_steps, "ODE solve hit max_steps = ", o_.max_steps, " at t = ", t,
            " (integrating from ", t0_, " to ", t1_, ", step size ", h,
            "); raise max_steps (--max-steps) or loosen rtol/atol");
  if (!std::isfinite(err)) {
    // A non-finite trial (overflow, NaN in the field) shrinks the step as hard as allowed.
    dt_ = h * o_.min_factor;
    CNF_CHECK(dt_ >= min_step_, "ODE solve failed at t = ", t, ": the state became non-finite ",
              "even with step size ", h, "; the velocity field returns NaN/Inf there");
    return false;
  }
  if (err <= 1.0) {
    // PI control (Gustafsson; Hairer & Wanner II, IV.2): uses the previous accepted error.
    err = std::max(err, 1e-10);
    double factor = o_.safety * std::pow(err, -o_.beta1 / k) * std::pow(prev_err_, o_.beta2 / k);
    factor = std::clamp(factor, o_.min_factor, o_.max_factor);
    prev_err_ = err;
    dt_ = h * factor;
    return true;
  }
  double factor = std::max(o_.min_factor, o_.safety * std::pow(err, -1.0 / k));
  dt_ = h * std::min(1.0, factor);
  CNF_CHECK(dt_ >= min_step_, "ODE step size underflow at t = ", t, ": step ", dt_,
            " < min_step = ", min_step_, " while the error norm is ", err, " (rtol = ", o_.rtol,
            ", atol = ", o_.atol,
            "); loosen rtol/atol, lower min_step, or check the field for stiffness");
  return false;
}

namespace {
// Cubic Hermite interpolation on [t, t + h] from (y0, f0) and (y1, f1), theta in [0, 1].
State hermite(const State& y0, const State& f0, const State& y1, const State& f1, double h,
              double theta) {
  const double t2 = theta * theta, t3 = t2 * theta;
  const double h00 = 2 * t3 - 3 * t2 + 1, h10 = t3 - 2 * t2 + theta, h01 = -2 * t3 + 3 * t2,
               h11 = t3 - t2;
  State out;
  for (size_t n = 0; n < y0.size(); ++n)
    out.push_back(h00 * y0[n] + (h10 * h) * f0[n] + h01 * y1[n] + (h11 * h) * f1[n]);
  return out;
}
}  // namespace

SolveOptions SolveOptions::of(const std::string& method, int64_t steps, double rtol, double atol,
                              int64_t max_steps) {
  tableaus().get(method);  // an unknown name lists the valid ones
  CNF_CHECK(steps >= 1, "steps must be >= 1, got ", steps);
  CNF_CHECK(rtol > 0 && atol > 0, "rtol and atol must be > 0, got rtol = ", rtol,
            ", atol = ", atol);
  CNF_CHECK(max_steps >= 1, "max_steps must be >= 1, got ", max_steps);
  SolveOptions o;
  o.method = method;
  o.steps = steps;
  o.adaptive.rtol = rtol;
  o.adaptive.atol = atol;
  o.adaptive.max_steps = max_steps;
  return o;
}

Solution solve(const Rhs& f, const State& y0, double t0, double t1, const ButcherTableau& tableau,
               StepController& controller, const Observer& observer,
               const std::vector<double>& save_at) {
  CNF_CHECK(!y0.empty(), "ODE initial state is empty");
  CNF_CHECK(std::isfinite(t0) && std::isfinite(t1), "ODE time span must be finite, got [", t0, ", ",
            t1, "]");
  const double dir = t1 >= t0 ? 1.0 : -1.0;
  for (size_t i = 0; i < save_at.size(); ++i) {
    CNF_CHECK(dir * (save_at[i] - t0) >= 0 && dir * (t1 - save_at[i]) >= 0, "save_at time ",
              save_at[i], " is outside the integration interval [", t0, ", ", t1, "]");
    CNF_CHECK(i == 0 || dir * (save_at[i] - save_at[i - 1]) >= 0,
              "save_at times must be ordered from t0 to t1; ", save_at[i], " follows ",
              save_at[i - 1]);
  }
  Solution sol;
  sol.y = y0;
  State k0;  // f(t, y) at the current point when known (FSAL or initial step selection)
  if (controller.needs_f0()) {
    k0 = f(t0, y0);
    ++sol.nfe;
  }
  sol.nfe += controller.init(f, t0, t1, y0, k0, tableau);
  double t = t0;
  size_t next_save = 0;
  auto save_exact = [&](double at, const State& y) {
    while (next_save < save_at.size() && save_at[next_save] == at) {
      sol.ts.push_back(at);
      sol.ys.push_back(y);
      ++next_save;
    }
  };
  save_exact(t0, y0);
  if (observer) observer(t, sol.y);
  while (!controller.done(sol.n_accepted, t)) {
    const double t_next = controller.next_time(sol.n_accepted, t);
    auto step = rk_step(tableau, f, t, sol.y, t_next - t, k0.empty() ? nullptr : &k0);
    sol.nfe += step.nfe;
    if (!controller.accept(sol.y, step, t, t_next)) {
      ++sol.n_rejected;  // k0 = f(t, y) stays valid for the retry
      continue;
    }
    ++sol.n_accepted;
    // Dense output for save times strictly inside (t, t_next): the tableau's continuous
    // extension from the step's stages, or cubic Hermite from f at both ends.
    if (next_save < save_at.size() && dir * (t_next - save_at[next_save]) > 0) {
      const double h = t_next - t;
      if (tableau.has_dense_output()) {
        while (next_save < save_at.size() && dir * (t_next - save_at[next_save]) > 0) {
          sol.ts.push_back(save_at[next_save]);
          sol.ys.push_back(
              dense_output(tableau, sol.y, step.stages, h, (save_at[next_save] - t) / h));
          ++next_save;
        }
      } else {
        State f0 = k0.empty() ? f(t, sol.y) : k0;
        State f1 = step.f1.empty() ? f(t_next, step.y1) : step.f1;
        sol.nfe += (k0.empty() ? 1 : 0) + (step.f1.empty() ? 1 : 0);
        while (next_save < save_at.size() && dir * (t_next - save_at[next_save]) > 0) {
          sol.ts.push_back(save_at[next_save]);
          sol.ys.push_back(hermite(sol.y, f0, step.y1, f1, h, (save_at[next_save] - t) / h));
          ++next_save;
        }
      }
    }
    t = t_next;
    sol.y = std::move(step.y1);
    k0 = std::move(step.f1);
    save_exact(t, sol.y);
    if (observer) observer(t, sol.y);
  }
  for (size_t n = 0; n < sol.y.size(); ++n)
    CNF_CHECK(torch::isfinite(sol.y[n]).all().item<bool>(), "ODE solution at t = ", t1,
              " is not finite (state tensor ", n, "); the velocity field diverged or the step ",
              "is too large: use more steps, an adaptive method, or check the model");
  return sol;
}

Solution solve(const Rhs& f, const State& y0, double t0, double t1, const SolveOptions& options) {
  const auto& tableau = tableaus().get(options.method);
  if (tableau.has_error_estimate()) {
    AdaptiveController controller(options.adaptive);
    return solve(f, y0, t0, t1, tableau, controller, options.observer, options.save_at);
  }
  ConstantController controller(options.steps);
  return solve(f, y0, t0, t1, tableau, controller, options.observer, options.save_at);
}

}  // namespace cnf::ode
