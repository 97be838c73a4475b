#include "cnf/ode/per_row.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "cnf/core/error.h"

namespace cnf::ode {

double RowSolution::nfe_per_row() const {
  return y.defined() && y.size(0) > 0 ? static_cast<double>(row_evals) / y.size(0) : 0.0;
}

namespace {

/// [M] per-row step sizes as a tensor broadcastable against [M, ...] states.
at::Tensor per_row(const at::Tensor& h, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return h.to(like.scalar_type()).reshape(shape);
}

/// RMS over each row of v / scale, in float64 [M].
at::Tensor row_rms(const at::Tensor& v, const at::Tensor& scale) {
  return (v / scale).reshape({v.size(0), -1}).to(torch::kFloat64).pow(2).mean(1).sqrt();
}

}  // namespace

RowSolution solve_per_row(const RowRhs& f, const at::Tensor& y0, double t0, double t1,
                          const ButcherTableau& tableau, const AdaptiveOptions& o) {
  CNF_CHECK(tableau.has_error_estimate(), "per-row adaptive stepping needs a tableau with an ",
            "embedded error estimate (bosh3, dopri5, tsit5); '", tableau.name, "' has none");
  CNF_CHECK(y0.defined() && y0.dim() >= 1 && y0.size(0) > 0,
            "per-row stepping needs a state with rows [N, ...], N >= 1");
  CNF_CHECK(o.error_mask.empty(),
            "per-row stepping has one state tensor; error_mask must be "
            "empty");
  AdaptiveController check(o);  // validates the options (tolerances, gains, limits)
  const int64_t n = y0.size(0);
  const double dir = t1 >= t0 ? 1.0 : -1.0, span = std::abs(t1 - t0);
  const double k = tableau.error_order + 1.0;
  const double min_step = o.min_step > 0 ? o.min_step : 1e-12 * span;
  const auto dopt = y0.options().dtype(torch::kFloat64);
  RowSolution out;
  out.accepted = torch::zeros({n}, y0.options().dtype(torch::kLong));
  out.rejected = torch::zeros_like(out.accepted);
  at::Tensor y = y0.clone();
  at::Tensor t = torch::full({n}, t0, dopt);
  auto call = [&](const at::Tensor& tt, const at::Tensor& yy) {
    ++out.calls;
    out.row_evals += yy.size(0);
    return f(tt.to(yy.scalar_type()), yy);
  };
  at::Tensor f0 = call(t, y);
  if (span == 0) {
    out.y = y;
    return out;
  }

  // The initial step of every row by Hairer's rule, as AdaptiveController::init.
  at::Tensor dt;
  if (o.first_step > 0) {
    dt = torch::full({n}, std::min(o.first_step, span), dopt);
  } else {
    const auto scale0 = o.atol + o.rtol * y.abs();
    const auto d0 = row_rms(y, scale0), d1 = row_rms(f0, scale0);
    auto h0 = torch::where((d0 < 1e-5) | (d1 < 1e-5), torch::full_like(d0, 1e-6), 0.01 * d0 / d1)
                  .clamp_max(span);
    const auto f_trial = call(t + dir * h0, y + per_row(dir * h0, y) * f0);
    const auto d2 = row_rms(f_trial - f0, scale0) / h0;
    const auto dmax = torch::maximum(d1, d2);
    const auto h1 =
        torch::where(dmax <= 1e-15, (h0 * 1e-3).clamp_min(1e-6), (0.01 / dmax).pow(1.0 / k));
    dt = torch::minimum(torch::minimum(100 * h0, h1), torch::full_like(h0, span));
  }
  at::Tensor prev_err = torch::ones({n}, dopt);
  at::Tensor attempts = torch::zeros({n}, y0.options().dtype(torch::kLong));
  const int s = tableau.stages();

  for (;;) {
    const at::Tensor active = (t != t1).nonzero().flatten();
    const int64_t m = active.size(0);
    if (m == 0) break;
    const at::Tensor ya = y.index_select(0, active), ta = t.index_select(0, active);
    const at::Tensor dta = dt.index_select(0, active);
    // Land exactly on t1, leaving no sliver under 1% of a step (AdaptiveController::next_time).
    const at::Tensor rem = dir * (t1 - ta);
    const at::Tensor lands = rem - dta <= 0.01 * dta;
    const at::Tensor h = torch::where(lands, rem, dta);  // magnitude
    const at::Tensor hs = dir * h;                       // signed
    const at::Tensor hb = per_row(hs, ya);

    std::vector<at::Tensor> stages{f0.index_select(0, active)};
    for (int i = 1; i < s; ++i) {
      at::Tensor yi = ya;
      for (int j = 0; j < i; ++j)
        if (tableau.a[i][j] != 0) yi = yi + (hb * tableau.a[i][j]) * stages[j];
      stages.push_back(call(ta + tableau.c[i] * hs, yi));
    }
    at::Tensor y1 = ya, err = torch::zeros_like(ya);
    for (int i = 0; i < s; ++i) {
      if (tableau.b[i] != 0) y1 = y1 + (hb * tableau.b[i]) * stages[i];
      if (tableau.b_err[i] != 0) err = err + (hb * tableau.b_err[i]) * stages[i];
    }
    at::Tensor e = row_rms(err, o.atol + o.rtol * torch::maximum(ya.abs(), y1.abs()));
    const at::Tensor finite = torch::isfinite(e);
    const at::Tensor ok = finite & (e <= 1.0);
    e = torch::where(finite, e, torch::ones_like(e));
    // New step sizes: the PI factor after an accepted step, shrinking after a rejected one, as
    // hard as allowed after a non-finite trial.
    const auto ec = e.clamp_min(1e-10);
    const auto grow =
        (o.safety * ec.pow(-o.beta1 / k) * prev_err.index_select(0, active).pow(o.beta2 / k))
            .clamp(o.min_factor, o.max_factor);
    const auto shrink = (o.safety * e.pow(-1.0 / k)).clamp(o.min_factor, 1.0);
    const auto factor =
        torch::where(ok, grow, torch::where(finite, shrink, torch::full_like(e, o.min_factor)));
    const at::Tensor dt_new = h * factor;

    auto att = attempts.index_select(0, active) + 1;
    attempts.index_copy_(0, active, att);
    if (att.max().item<int64_t>() > o.max_steps) {
      const int64_t r = active[att.argmax()].item<int64_t>();
      fail("ODE solve (per row) hit max_steps = ", o.max_steps, " on row ", r,
           " at t = ", t[r].item<double>(), " (integrating from ", t0, " to ", t1,
           "); raise max_steps (--max-steps) or loosen rtol/atol");
    }
    const at::Tensor bad = ~ok & (dt_new < min_step);
    if (bad.any().item<bool>()) {
      const int64_t i = bad.nonzero()[0][0].item<int64_t>();
      fail("ODE step size underflow (per row) on row ", active[i].item<int64_t>(),
           " at t = ", ta[i].item<double>(), ": step ", dt_new[i].item<double>(),
           " < min_step = ", min_step,
           finite[i].item<bool>() ? "" : " after the state became non-finite",
           "; loosen rtol/atol, lower min_step, or check the field");
    }
    dt.index_copy_(0, active, dt_new);

    const at::Tensor acc = ok.nonzero().flatten();
    const at::Tensor rej = (~ok).nonzero().flatten();
    out.rejected.index_add_(0, active.index_select(0, rej),
                            torch::ones({rej.size(0)}, out.rejected.options()));
    if (acc.size(0) == 0) continue;
    const at::Tensor rows = active.index_select(0, acc);
    out.accepted.index_add_(0, rows, torch::ones({rows.size(0)}, out.accepted.options()));
    prev_err.index_copy_(0, rows, ec.index_select(0, acc));
    const at::Tensor t_new = torch::where(lands, torch::full_like(ta, t1), ta + hs);
    const at::Tensor y_acc = y1.index_select(0, acc), t_acc = t_new.index_select(0, acc);
    y.index_copy_(0, rows, y_acc);
    t.index_copy_(0, rows, t_acc);
    // The next first stage: the last stage of an FSAL pair, else one more evaluation.
    f0.index_copy_(0, rows,
                   tableau.fsal() ? stages.back().index_select(0, acc) : call(t_acc, y_acc));
  }
  CNF_CHECK(torch::isfinite(y).all().item<bool>(),
            "ODE solve (per row) produced a non-finite state; the field returns NaN/Inf");
  out.y = y;
  return out;
}

}  // namespace cnf::ode
