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
                               int order_, std::vector<double> b_err_, int error_order_)
    : name(std::move(name_)),
      c(std::move(c_)),
      a(std::move(a_)),
      b(std::move(b_)),
      order(order_),
      b_err(std::move(b_err_)),
      error_order(error_order_) {
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
    CNF_CHECK(std::abs(row - c[i]) < kTableauTol, "tableau '", name, "': row ", i,
              " of a sums to ", row, " but c[", i, "] = ", c[i]);
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
}

const Registry<ButcherTableau>& tableaus() {
  static const Registry<ButcherTableau> registry(
      "ODE method",
      {
          {"euler", ButcherTableau("euler", {0.0}, {{}}, {1.0}, 1)},
          {"midpoint", ButcherTableau("midpoint", {0.0, 0.5}, {{}, {0.5}}, {0.0, 1.0}, 2)},
          {"heun", ButcherTableau("heun", {0.0, 1.0}, {{}, {1.0}}, {0.5, 0.5}, 2)},
          {"rk4", ButcherTableau("rk4", {0.0, 0.5, 0.5, 1.0}, {{}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}},
                                 {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}, 4)},
      });
  return registry;
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

StepResult rk_step(const ButcherTableau& tab, const Rhs& f, double t, const State& y, double dt) {
  const int s = tab.stages();
  std::vector<State> k;
  k.reserve(s);
  for (int i = 0; i < s; ++i) {
    State yi = i == 0 ? y : combine(y, dt, tab.a[i], k);
    k.push_back(f(t + tab.c[i] * dt, yi));
    CNF_CHECK(k.back().size() == y.size(), "ODE right-hand side returned ", k.back().size(),
              " tensors for a state of ", y.size());
  }
  StepResult r;
  r.y1 = combine(y, dt, tab.b, k);
  r.nfe = s;
  if (tab.has_error_estimate()) {
    State zero;
    for (const auto& v : y) zero.push_back(torch::zeros_like(v));
    r.error = combine(zero, dt, tab.b_err, k);
  }
  return r;
}

ConstantController::ConstantController(int64_t steps) : steps_(steps) {
  CNF_CHECK(steps >= 1, "the number of steps must be >= 1, got ", steps);
}
void ConstantController::reset(double t0, double t1) {
  t0_ = t0;
  t1_ = t1;
}
double ConstantController::next_time(int64_t accepted, double) const {
  // Grid times from the index, not by accumulating dt (no drift in the last step).
  if (accepted + 1 >= steps_) return t1_;
  return t0_ + (t1_ - t0_) * static_cast<double>(accepted + 1) / static_cast<double>(steps_);
}

Solution solve(const Rhs& f, const State& y0, double t0, double t1, const ButcherTableau& tableau,
               StepController& controller, const Observer& observer) {
  CNF_CHECK(!y0.empty(), "ODE initial state is empty");
  CNF_CHECK(std::isfinite(t0) && std::isfinite(t1), "ODE time span must be finite, got [", t0,
            ", ", t1, "]");
  controller.reset(t0, t1);
  Solution sol;
  sol.y = y0;
  double t = t0;
  if (observer) observer(t, sol.y);
  while (!controller.done(sol.n_accepted, t)) {
    const double t_next = controller.next_time(sol.n_accepted, t);
    auto step = rk_step(tableau, f, t, sol.y, t_next - t);
    sol.nfe += step.nfe;
    if (!controller.accept(step, t, t_next)) {
      ++sol.n_rejected;
      continue;
    }
    ++sol.n_accepted;
    t = t_next;
    sol.y = std::move(step.y1);
    if (observer) observer(t, sol.y);
  }
  return sol;
}

Solution solve(const Rhs& f, const State& y0, double t0, double t1, const SolveOptions& options) {
  const auto& tableau = tableaus().get(options.method);
  ConstantController controller(options.steps);
  return solve(f, y0, t0, t1, tableau, controller, options.observer);
}

}  // namespace cnf::ode
