// The higher-order samplers of the diffusion libraries, on every affine path: DPM-Solver++(3M)
// and its SDE form, UniPC, DEIS and EDM's Heun sampler (samplers.h lists them). Each is
// written in cnf's variables (x, alpha_t, sigma_t, lambda_t = log(alpha_t / sigma_t)); the
// comments give the conversion from the paper's notation. The papers' variance-exploding
// state is x~ = x / alpha with noise level rho = sigma / alpha = e^-lambda, so their updates
// x~_s = F(x~_t) read here x_s = alpha_s F(x_t / alpha_t), multiplied out where alpha_t -> 0
// would otherwise divide by a vanishing number.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>

#include "cnf/core/error.h"
#include "steps.h"

namespace cnf::sde {

using detail::coef;
using detail::Coef;
using detail::noise_like;
using detail::step_order;
using path::Param;

namespace {

// One past evaluation of a multistep sampler: its lambda and the prediction read there.
struct Past {
  double lambda;
  at::Tensor pred;
};

// DPM-Solver++(3M) (Lu et al. 2022, arXiv:2211.01095, multistep, data prediction D), eta = 0
// (ODE) or 1 (SDE, as k-diffusion's sample_dpmpp_3m_sde). In the papers' variables, with
// h = lambda_s - lambda_t, h_eta = (1 + eta) h and u = lambda - lambda_t,
//   x~_s = e^-h_eta x~_t + int_0^h (1 + eta) e^-(1 + eta)(h - u) D(u) du (+ noise),
// and D(u) = D + u D' + u^2 D'' / 2 integrates to (1 - e^-h_eta) D + phi_2 d1 - 2 phi_3 d2,
// where d1 ~ h D' and d2 ~ h^2 D'' / 2 are the divided differences of the last three data
// predictions, phi_2 = (e^-h_eta - 1) / h_eta + 1, phi_3 = phi_2 / h_eta - 1/2. (k-diffusion's
// sample_dpmpp_3m_sde, and the codes that follow it, weight d2 by phi_3: half the integral,
// so their step's local error is O(h^3) and that "3M" converges at order 2: over 16-128 steps
// on the Gaussian test model its fitted slopes were 2.2-2.4, this form's 2.8-4.0;
// SdeSamplerTest.OdeSamplersConvergeAtTheirOrder.) Times alpha_s,
// alpha_s / alpha_t e^-h_eta = (sigma_s / sigma_t) e^-(eta h), finite when alpha_t = 0; the
// noise is alpha_s rho_s sqrt(1 - e^-2 eta h) z = sigma_s sqrt(1 - e^-2 eta h) z.
at::Tensor dpmpp_3m(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                    const SamplerOptions& o, at::Generator& gen, double eta) {
  const auto& schedule = m.schedule();
  const size_t n = ts.size() - 1;
  std::deque<Past> past;  // newest first
  double h_1 = 0.0, h_2 = 0.0;
  for (size_t k = 0; k < n; ++k) {
    const Coef ct = coef(schedule, ts[k]), cs = coef(schedule, ts[k + 1]);
    const double h = cs.lambda - ct.lambda, h_eta = (1.0 + eta) * h;
    auto d = m(x, ts[k], Param::data);
    const int order = step_order(3, k, n, o);
    auto next = (cs.sigma / ct.sigma) * std::exp(-eta * h) * x - cs.alpha * std::expm1(-h_eta) * d;
    const double phi_2 = std::expm1(-h_eta) / h_eta + 1.0;
    if (order == 3) {
      const double r0 = h_1 / h, r1 = h_2 / h;
      auto d1_0 = (d - past[0].pred) / r0, d1_1 = (past[0].pred - past[1].pred) / r1;
      auto d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1));
      auto d2 = (d1_0 - d1_1) / (r0 + r1);
      const double phi_3 = phi_2 / h_eta - 0.5;
      next = next + cs.alpha * (phi_2 * d1 - 2.0 * phi_3 * d2);
    } else if (order == 2) {
      next = next + (cs.alpha * phi_2 * h / h_1) * (d - past[0].pred);
    }
    if (eta > 0)
      next = next + cs.sigma * std::sqrt(-std::expm1(-2.0 * eta * h)) * noise_like(x, gen);
    x = next;
    past.push_front({ct.lambda, d});
    if (past.size() > 2) past.pop_back();
    h_2 = h_1;
    h_1 = h;
  }
  return x;
}

// Solves the p x p system A r = b (p <= 3) by Gaussian elimination with partial pivoting.
std::vector<double> solve_small(std::vector<std::array<double, 3>> a, std::vector<double> b) {
  const size_t p = b.size();
  for (size_t c = 0; c < p; ++c) {
    size_t piv = c;
    for (size_t r = c + 1; r < p; ++r)
      if (std::abs(a[r][c]) > std::abs(a[piv][c])) piv = r;
    std::swap(a[c], a[piv]);
    std::swap(b[c], b[piv]);
    for (size_t r = c + 1; r < p; ++r) {
      const double f = a[r][c] / a[c][c];
      for (size_t j = c; j < p; ++j) a[r][j] -= f * a[c][j];
      b[r] -= f * b[c];
    }
  }
  std::vector<double> x(p);
  for (size_t c = p; c-- > 0;) {
    double s = b[c];
    for (size_t j = c + 1; j < p; ++j) s -= a[c][j] * x[j];
    x[c] = s / a[c][c];
  }
  return x;
}

// One UniPC update (Zhao et al. 2023, alg. 1-2, data prediction, B(h) = e^h - 1 "bh2") from
// the evaluated point t (prediction past[0] at lambda_t) to s, of order p. The earlier points
// past[1..p-1] enter through r_i = (lambda_i - lambda_t) / h and D_i = (pred_i - pred_0) / r_i.
// The predictor (fresh undefined) uses those p - 1 differences with weights a_p (1/2 for p = 2,
// else R a = b on the leading block); the corrector adds the evaluation at the predicted point
// as r = 1 and solves the full p x p system (a = 1/2 for p = 1). In cnf's variables, with
// hh = -h: x_s = (sigma_s / sigma_t) x_t - alpha_s (e^hh - 1) pred_0
//                - alpha_s B(hh) sum_i a_i D_i.
at::Tensor unipc_update(const at::Tensor& x, const Coef& ct, const Coef& cs,
                        const std::deque<Past>& past, const at::Tensor& fresh, int p) {
  const double h = cs.lambda - ct.lambda, hh = -h;
  const double h_phi_1 = std::expm1(hh);
  const double b_h = h_phi_1;  // B(h) = e^hh - 1 ("bh2"; "bh1" would be hh)
  std::vector<double> rks;
  std::vector<at::Tensor> diffs;
  for (int i = 1; i < p; ++i) {
    const double rk = (past[static_cast<size_t>(i)].lambda - ct.lambda) / h;
    rks.push_back(rk);
    diffs.push_back((past[static_cast<size_t>(i)].pred - past[0].pred) / rk);
  }
  rks.push_back(1.0);
  // R[i][j] = r_j^i and b_i = i! phi_{i+1}(hh) / B(hh), with h phi_k by the recurrence
  // h_phi_{k+1} = h_phi_k / hh - 1 / (k+1)!.
  std::vector<std::array<double, 3>> big_r(static_cast<size_t>(p));
  std::vector<double> b(static_cast<size_t>(p));
  double h_phi_k = h_phi_1 / hh - 1.0, factorial = 1.0;
  for (int i = 1; i <= p; ++i) {
    for (int j = 0; j < p; ++j)
      big_r[static_cast<size_t>(i - 1)][static_cast<size_t>(j)] =
          std::pow(rks[static_cast<size_t>(j)], i - 1);
    b[static_cast<size_t>(i - 1)] = h_phi_k * factorial / b_h;
    factorial *= i + 1;
    h_phi_k = h_phi_k / hh - 1.0 / factorial;
  }
  auto out = (cs.sigma / ct.sigma) * x - cs.alpha * h_phi_1 * past[0].pred;
  std::vector<double> a;
  if (!fresh.defined()) {
    if (p == 1) return out;
    if (p == 2) {
      a = {0.5};
    } else {
      std::vector<std::array<double, 3>> lead(big_r.begin(), big_r.end() - 1);
      a = solve_small(lead, std::vector<double>(b.begin(), b.end() - 1));
    }
  } else {
    a = p == 1 ? std::vector<double>{0.5} : solve_small(big_r, b);
    diffs.push_back(fresh - past[0].pred);
  }
  at::Tensor sum = torch::zeros_like(x);
  for (size_t i = 0; i < diffs.size(); ++i) sum = sum + a[i] * diffs[i];
  return out - cs.alpha * b_h * sum;
}

// UniPC: predictor of order min(2, ...) to each grid point, then, once the network has been
// evaluated there, the corrector of the same order that replaces the predicted state; the
// evaluation is kept for the next step (as at the corrected state: UniPC's reuse).
at::Tensor unipc(Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
                 at::Generator&) {
  const auto& schedule = m.schedule();
  const size_t n = ts.size() - 1;
  std::deque<Past> past;  // newest first
  at::Tensor x_last;
  Coef c_last{};
  int order_last = 0;
  for (size_t k = 0; k < n; ++k) {
    const Coef ct = coef(schedule, ts[k]), cs = coef(schedule, ts[k + 1]);
    auto d = m(x, ts[k], Param::data);
    if (k > 0) x = unipc_update(x_last, c_last, ct, past, d, order_last);
    past.push_front({ct.lambda, d});
    if (past.size() > 3) past.pop_back();
    const int order = step_order(2, k, n, o);
    x_last = x;
    c_last = ct;
    order_last = order;
    x = unipc_update(x, ct, cs, past, at::Tensor(), order);
  }
  return x;
}

// The antiderivative in rho of the Lagrange basis polynomial in L = log rho that is 1 at node
// `b` and 0 at the nodes in `others` (0, 1 or 2 of them), at rho = e^L:
//   no other node:  rho;
//   one (c):        rho (L - c - 1) / (b - c);
//   two (c, d):     rho (L^2 - 2L + 2 - (c + d)(L - 1) + c d) / ((b - c)(b - d)).
double lagrange_integral(double big_l, double b, const std::vector<double>& others) {
  const double rho = std::exp(big_l);
  if (others.empty()) return rho;
  if (others.size() == 1) return rho * (big_l - others[0] - 1.0) / (b - others[0]);
  const double c = others[0], d = others[1];
  return rho * (big_l * big_l - 2.0 * big_l + 2.0 - (c + d) * (big_l - 1.0) + c * d) /
         ((b - c) * (b - d));
}

// DEIS (Zhang & Chen, ICLR 2023), tAB-DEIS in log rho: x~ = x / alpha obeys dx~/drho = eps on
// the probability-flow ODE, so x~_s = x~_t + int_{rho_t}^{rho_s} eps(rho) drho with eps
// replaced by its Lagrange interpolant in log rho through the last `order` noise predictions
// (the diffusers library's "logrho" form). x_s = (alpha_s / alpha_t) x_t + alpha_s sum_j c_j
// eps_j; with one node this is DDIM.
at::Tensor deis(Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
                at::Generator&) {
  const auto& schedule = m.schedule();
  const size_t n = ts.size() - 1;
  std::deque<Past> past;  // newest first; nodes at L = log rho = -lambda
  for (size_t k = 0; k < n; ++k) {
    const Coef ct = coef(schedule, ts[k]), cs = coef(schedule, ts[k + 1]);
    past.push_front({ct.lambda, m(x, ts[k], Param::noise)});
    if (past.size() > 3) past.pop_back();
    const int order = step_order(3, k, n, o);
    at::Tensor next = (cs.alpha / ct.alpha) * x;
    for (int j = 0; j < order; ++j) {
      const double bj = -past[static_cast<size_t>(j)].lambda;
      std::vector<double> others;
      for (int i = 0; i < order; ++i)
        if (i != j) others.push_back(-past[static_cast<size_t>(i)].lambda);
      const double cj =
          lagrange_integral(-cs.lambda, bj, others) - lagrange_integral(-ct.lambda, bj, others);
      next = next + (cs.alpha * cj) * past[static_cast<size_t>(j)].pred;
    }
    x = next;
  }
  return x;
}

// EDM's sampler (Karras et al. 2022, alg. 2) with sigma_EDM = rho = sigma / alpha, x_EDM =
// x~ = x / alpha and t_{i+1} the next grid time: churn raises rho_i to rho^ by fresh noise
// (x~^ = x~ + sqrt(rho^2 - rho_i^2) S_noise z keeps x~ on the marginal of rho^), then
// d = (x~^ - D(x~^, rho^)) / rho^, an Euler step to rho_{i+1}, and Heun's correction with d'
// there. rho^ stays at or below rho at the top of path::conversion_range (the Denoiser's
// clamp), so the network is read where it was trained.
at::Tensor edm_heun(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                    const SamplerOptions& o, at::Generator& gen) {
  const auto& schedule = m.schedule();
  const size_t n = ts.size() - 1;
  const double t_top = std::max(ts.front(), path::conversion_range(schedule).hi);
  const double lambda_top = path::log_snr_at(schedule, t_top);
  for (size_t k = 0; k < n; ++k) {
    const Coef ct = coef(schedule, ts[k]), cs = coef(schedule, ts[k + 1]);
    const double rho_i = std::exp(-ct.lambda), rho_next = std::exp(-cs.lambda);
    double gamma = 0.0;
    if (o.churn > 0 && rho_i >= o.churn_sigma_min && rho_i <= o.churn_sigma_max)
      gamma = std::min(o.churn / static_cast<double>(n), std::sqrt(2.0) - 1.0);
    // Cap rho^ at the top of the range: lambda^ >= lambda_top.
    const double lambda_hat = std::max(ct.lambda - std::log1p(gamma), lambda_top);
    double t_hat = ts[k];
    auto xt = x / ct.alpha;  // x~ at rho_i
    double rho_hat = rho_i;
    if (lambda_hat < ct.lambda) {
      t_hat = path::time_at_log_snr(schedule, lambda_hat, {ts[k], t_top});
      rho_hat = std::exp(-lambda_hat);
      xt = xt + std::sqrt(rho_hat * rho_hat - rho_i * rho_i) * o.churn_noise * noise_like(x, gen);
    }
    const double a_hat = coef(schedule, t_hat).alpha;
    auto d = (xt - m(a_hat * xt, t_hat, Param::data)) / rho_hat;
    auto euler = xt + (rho_next - rho_hat) * d;
    auto d2 = (euler - m(cs.alpha * euler, ts[k + 1], Param::data)) / rho_next;
    x = cs.alpha * (xt + (0.5 * (rho_next - rho_hat)) * (d + d2));
  }
  return x;
}

}  // namespace

namespace detail {
// summary, integrates_ode, stochastic, whole_interval, order, spacing, evals_per_step, run.
const SamplerMethod kDpmpp3m{
    "DPM-Solver++(3M) (multistep, data prediction)",
    false,
    false,
    false,
    3,
    Spacing::lambda,
    one_evaluation,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return dpmpp_3m(m, std::move(x), ts, o, gen, 0.0); }};
const SamplerMethod kDpmpp3mSde{
    "DPM-Solver++(3M) SDE (multistep, data prediction, eta = 1)",
    false,
    true,
    false,
    1,
    Spacing::lambda,
    one_evaluation,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return dpmpp_3m(m, std::move(x), ts, o, gen, 1.0); }};
const SamplerMethod kUniPc{"UniPC (bh2; predictor UniP-2 with the corrector UniC: order 3)",
                           false,
                           false,
                           false,
                           3,
                           Spacing::lambda,
                           one_evaluation,
                           unipc};
const SamplerMethod kDeis{"DEIS (tAB-DEIS, order 3, Lagrange in log sigma/alpha)",
                          false,
                          false,
                          false,
                          3,
                          Spacing::lambda,
                          one_evaluation,
                          deis};
const SamplerMethod kHeun{"EDM's Heun sampler (Karras et al. 2022) with optional churn",
                          false,
                          false,  // draws noise only when churn > 0
                          false,
                          2,
                          Spacing::karras,
                          two_evaluations,
                          edm_heun};
}  // namespace detail

}  // namespace cnf::sde
