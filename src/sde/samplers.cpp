#include "cnf/sde/samplers.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "cnf/core/error.h"
#include "cnf/ode/per_row.h"
#include "cnf/sde/parameterized.h"
#include "steps.h"

namespace cnf::sde {

using detail::coef;
using detail::Coef;
using detail::noise_like;
using path::Param;

namespace {
Registry<Sampler>& sampler_registry() {
  static Registry<Sampler> registry("sampler", {{"ode", Sampler::ode},
                                                {"pf-ode", Sampler::pf_ode},
                                                {"em", Sampler::em},
                                                {"pc", Sampler::pc},
                                                {"ddim", Sampler::ddim},
                                                {"dpm1", Sampler::dpm1},
                                                {"dpm2", Sampler::dpm2},
                                                {"dpm3", Sampler::dpm3},
                                                {"dpm++2m", Sampler::dpmpp_2m},
                                                {"dpm++2m-sde", Sampler(&detail::kDpmpp2mSde)},
                                                {"euler-a", Sampler(&detail::kEulerAncestral)},
                                                {"dpm++3m", Sampler(&detail::kDpmpp3m)},
                                                {"dpm++3m-sde", Sampler(&detail::kDpmpp3mSde)},
                                                {"unipc", Sampler(&detail::kUniPc)},
                                                {"deis", Sampler(&detail::kDeis)},
                                                {"heun", Sampler(&detail::kHeun)}});
  return registry;
}
}  // namespace

const Registry<Sampler>& samplers() { return sampler_registry(); }

void add_sampler(const std::string& name, const SamplerMethod* method) {
  CNF_CHECK(method && method->run && (method->integrates_ode || method->evals_per_step),
            "sampler '", name, "' needs a run function and, unless it integrates an ODE, ",
            "evals_per_step");
  sampler_registry().add(name, Sampler(method));
}

std::string sampler_name(Sampler s) { return samplers().name_of(s); }

const Registry<Spacing>& spacings() {
  static const Registry<Spacing> r("time spacing", {{"auto", Spacing::automatic},
                                                    {"time", Spacing::time},
                                                    {"lambda", Spacing::lambda},
                                                    {"karras", Spacing::karras},
                                                    {"leading", Spacing::leading},
                                                    {"trailing", Spacing::trailing},
                                                    {"linspace", Spacing::linspace}});
  return r;
}
Spacing parse_spacing(const std::string& name) { return spacings().get(name); }

bool is_discrete(Spacing spacing) {
  return spacing == Spacing::leading || spacing == Spacing::trailing ||
         spacing == Spacing::linspace;
}

std::vector<double> discrete_times(const path::Schedule& schedule, int64_t steps, Spacing spacing,
                                   int64_t train_steps) {
  CNF_CHECK(is_discrete(spacing), "discrete_times needs spacing leading, trailing or linspace, ",
            "got ", spacings().name_of(spacing));
  CNF_CHECK(train_steps >= 0, "train_steps must be >= 0 (0: the schedule's own), got ",
            train_steps);
  int64_t n = train_steps;
  if (n == 0) {
    const auto* ddpm = dynamic_cast<const path::DiscreteDDPM*>(&schedule);
    n = ddpm ? ddpm->steps() : 1000;
  }
  CNF_CHECK(steps >= 1 && steps <= n, "the ", spacings().name_of(spacing), " spacing picks ", steps,
            " of ", n, " training timesteps; use 1 to ", n, " steps");
  const double N = static_cast<double>(n), S = static_cast<double>(steps);
  std::vector<double> times;
  for (int64_t j = 0; j < steps; ++j) {
    const double k = static_cast<double>(j);
    double step = 0;  // diffusers' 0-based timestep, largest first
    switch (spacing) {
      case Spacing::linspace:
        // np.linspace(0, N - 1, S).round()[::-1] (np.round: half to even, like nearbyint).
        step = steps == 1 ? 0.0 : std::nearbyint((N - 1) * (S - 1 - k) / (S - 1));
        break;
      case Spacing::leading:
        step = (S - 1 - k) * std::floor(N / S);
        break;
      case Spacing::trailing:
        step = std::nearbyint(N - k * N / S) - 1;
        break;
      default:
        break;
    }
    times.push_back((step + 1) / N);
  }
  return times;
}

const Registry<PcPredictor>& pc_predictors() {
  static const Registry<PcPredictor> r("predictor",
                                       {{"reverse-diffusion", PcPredictor::reverse_diffusion},
                                        {"euler-maruyama", PcPredictor::euler_maruyama}});
  return r;
}
PcPredictor parse_pc_predictor(const std::string& name) {
  return pc_predictors().get(name == "em" ? std::string("euler-maruyama") : name);
}

void SamplerOptions::validate() const {
  CNF_CHECK(steps >= 1, "sampler steps must be >= 1, got ", steps);
  CNF_CHECK(train_steps >= 0, "train_steps must be >= 0 (0: the schedule's own N), got ",
            train_steps);
  CNF_CHECK(eta >= 0 && eta <= 1, "eta must be in [0, 1] (0: deterministic DDIM), got ", eta);
  CNF_CHECK(corrector_steps >= 0, "corrector steps must be >= 0, got ", corrector_steps);
  CNF_CHECK(snr > 0 && std::isfinite(snr), "snr must be > 0 (Song et al. use 0.16), got ", snr);
  CNF_CHECK(t_start < 0 || t_start <= 1, "t_start must be in (0, 1], got ", t_start);
  CNF_CHECK(t_end < 0 || t_end < 1, "t_end must be in [0, 1), got ", t_end);
  CNF_CHECK(rho > 0 && std::isfinite(rho), "the karras spacing's rho must be > 0 (Karras et al. ",
            "use 7), got ", rho);
  CNF_CHECK(threshold >= 0 && threshold <= 1,
            "the thresholding quantile must be in (0, 1] (0: ", "off; Imagen uses 0.995), got ",
            threshold);
  CNF_CHECK(threshold_bound > 0 && std::isfinite(threshold_bound),
            "the thresholding bound must be > 0 (1 for data in [-1, 1]), got ", threshold_bound);
  CNF_CHECK(churn >= 0 && std::isfinite(churn), "churn must be >= 0 (0: deterministic), got ",
            churn);
  CNF_CHECK(churn_noise >= 0 && std::isfinite(churn_noise), "churn noise must be >= 0, got ",
            churn_noise);
  // Per-row stepping integrates the velocity with one time per row (the ode sampler; pf-ode
  // integrates the same ODE through the score) and has no common times to report at.
  CNF_CHECK(!per_row || sampler == Sampler::ode,
            "per-row stepping applies to the ode sampler, not '", sampler_name(sampler),
            "' (ode integrates the same probability-flow ODE as pf-ode)");
  CNF_CHECK(!per_row || ode::tableaus().get(ode.method).has_error_estimate(),
            "per-row stepping needs an adaptive method (bosh3, dopri5, tsit5), not '", ode.method,
            "'");
  CNF_CHECK(!per_row || ode.save_at.empty(),
            "per-row stepping reports no states at save_at times (rows reach each time at their "
            "own step)");
  CNF_CHECK(churn_sigma_min >= 0 && churn_sigma_min <= churn_sigma_max,
            "the churn window needs 0 <= churn_sigma_min <= churn_sigma_max, got [",
            churn_sigma_min, ", ", churn_sigma_max, "]");
}

path::TimeRange sampling_range(const path::Schedule& schedule, const SamplerOptions& o) {
  path::TimeRange r{0.0, 1.0};
  if (!o.sampler->whole_interval) r = path::conversion_range(schedule);
  // TimeRange is {lo, hi}; here lo = t_end, hi = t_start.
  if (o.t_start >= 0)
    r.hi = o.t_start;
  else if (is_discrete(o.spacing) && !o.sampler->integrates_ode)
    r.hi = std::min(r.hi, discrete_times(schedule, o.steps, o.spacing, o.train_steps).front());
  if (o.t_end >= 0) r.lo = o.t_end;
  CNF_CHECK(r.lo < r.hi, "sampling runs from t_start down to t_end, but t_start = ", r.hi,
            " <= t_end = ", r.lo, "; choose t_end < t_start");
  return r;
}

double start_scale(const path::Schedule& schedule, const SamplerOptions& o) {
  return schedule.at_time(sampling_range(schedule, o).hi).sigma_t.item<double>();
}

std::vector<double> time_grid(const path::Schedule& schedule, double t_start, double t_end,
                              int64_t steps, Spacing spacing, double rho, int64_t train_steps) {
  CNF_CHECK(steps >= 1, "a time grid needs steps >= 1, got ", steps);
  CNF_CHECK(t_end < t_start, "a time grid runs from t_start down to t_end < t_start, got ", t_start,
            " -> ", t_end);
  if (is_discrete(spacing)) {
    std::vector<double> ts{t_start};
    for (double t : discrete_times(schedule, steps, spacing, train_steps))
      if (t < ts.back() && t > t_end) ts.push_back(t);
    ts.push_back(t_end);
    return ts;
  }
  std::vector<double> ts(static_cast<size_t>(steps + 1));
  const double n = static_cast<double>(steps);
  if (spacing != Spacing::lambda && spacing != Spacing::karras) {
    for (int64_t k = 0; k <= steps; ++k)
      ts[static_cast<size_t>(k)] = t_start + (t_end - t_start) * static_cast<double>(k) / n;
  } else {
    const double l0 = path::log_snr_at(schedule, t_start), l1 = path::log_snr_at(schedule, t_end);
    CNF_CHECK(std::isfinite(l0) && std::isfinite(l1), "a grid uniform in ",
              spacings().name_of(spacing), " needs finite log-SNR at both ends, but ",
              schedule.describe(), " has lambda = ", l0, " at t = ", t_start, " and ", l1,
              " at t = ", t_end,
              "; keep the interval inside path::conversion_range or use time spacing");
    CNF_CHECK(rho > 0 && std::isfinite(rho), "the karras spacing's rho must be > 0, got ", rho);
    // karras: rho_k = e^-lambda_k uniform in rho^(1/rho_exp) = e^(-lambda / rho_exp).
    const double a = std::exp(-l0 / rho), b = std::exp(-l1 / rho);
    for (int64_t k = 0; k <= steps; ++k) {
      const double f = static_cast<double>(k) / n;
      const double lambda =
          spacing == Spacing::lambda ? l0 + (l1 - l0) * f : -rho * std::log(a + (b - a) * f);
      ts[static_cast<size_t>(k)] = path::time_at_log_snr(schedule, lambda, {t_end, t_start});
    }
  }
  ts.front() = t_start;
  ts.back() = t_end;
  return ts;
}

namespace detail {
Coef coef(const path::Schedule& schedule, double t) {
  auto s = schedule.at_time(t);
  Coef c{s.alpha_t.item<double>(), s.sigma_t.item<double>(), s.d_alpha_t.item<double>(),
         s.d_sigma_t.item<double>(), 0.0};
  c.lambda = std::log(c.alpha) - std::log(c.sigma);
  return c;
}

at::Tensor noise_like(const at::Tensor& x, at::Generator& gen) {
  return torch::randn(x.sizes(), gen, x.options().device(gen.device())).to(x.device());
}

int step_order(int order, size_t k, size_t n, const SamplerOptions& options) {
  int q = std::min(order, static_cast<int>(k) + 1);
  if (options.lower_order_final && n < 15) q = std::min(q, static_cast<int>(n - k));
  return q;
}
}  // namespace detail

namespace {

// Mean over the batch of the per-sample Euclidean norm.
double mean_norm(const at::Tensor& x) {
  return x.reshape({x.size(0), -1}).norm(2, {1}).mean().item<double>();
}

at::Tensor solve_ode(Denoiser& m, const at::Tensor& x, double t0, double t1,
                     const ode::SolveOptions& so, bool probability_flow, bool per_row) {
  const auto& schedule = m.schedule();
  if (per_row) {  // SamplerOptions::validate admits it for the ode sampler only
    ode::RowRhs rhs = [&](const at::Tensor& t, const at::Tensor& y) { return m.velocity(y, t); };
    return ode::solve_per_row(rhs, x, t0, t1, ode::tableaus().get(so.method), so.adaptive).y;
  }
  ode::Rhs rhs;
  if (probability_flow) {
    rhs = [&](double t, const ode::State& y) {
      // f x - 1/2 g^2 score, with f = d_alpha/alpha, g^2 = 2 sigma d_sigma - 2 f sigma^2.
      const Coef c = coef(schedule, t);
      const double f = c.d_alpha / c.alpha;
      const double g2 = 2.0 * c.sigma * c.d_sigma - 2.0 * f * c.sigma * c.sigma;
      return ode::State{f * y[0] - 0.5 * g2 * m(y[0], t, Param::score)};
    };
  } else {
    rhs = [&](double t, const ode::State& y) { return ode::State{m(y[0], t, Param::velocity)}; };
  }
  return ode::solve(rhs, {x}, t0, t1, so).y[0];
}

// Backward SDE and predictor–corrector on a grid uniform in t (or as asked).
at::Tensor sde_sample(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                      const SamplerOptions& o, at::Generator& gen, bool pc) {
  const auto& schedule = m.schedule();
  const bool reverse_diffusion = pc && o.predictor == PcPredictor::reverse_diffusion;
  const size_t n = ts.size() - 1;
  for (size_t k = 0; k < n; ++k) {
    const double t = ts[k], s = ts[k + 1];
    const Coef ct = coef(schedule, t), cs = coef(schedule, s);
    if (pc) {
      // Langevin corrector at time t with the signal-to-noise step rule (Song et al. alg. 5).
      const double r = (ct.alpha / cs.alpha) * (ct.alpha / cs.alpha);
      for (int64_t j = 0; j < o.corrector_steps; ++j) {
        auto score = m(x, t, Param::score);
        auto z = noise_like(x, gen);
        const double ratio = o.snr * mean_norm(z) / std::max(mean_norm(score), 1e-30);
        const double e = 2.0 * r * ratio * ratio;
        x = x + e * score + std::sqrt(2.0 * e) * z;
      }
    }
    auto score = m(x, t, Param::score);
    at::Tensor mean;
    double noise_scale;
    if (reverse_diffusion) {
      const double ratio = ct.alpha / cs.alpha;
      const double G2 = std::max(0.0, ct.sigma * ct.sigma - ratio * ratio * cs.sigma * cs.sigma);
      mean = (x + G2 * score) / ratio;
      noise_scale = std::sqrt(G2) * cs.sigma / ct.sigma;
    } else {
      const double dt = t - s;
      const double f = ct.d_alpha / ct.alpha;
      const double g2 = std::max(0.0, 2.0 * ct.sigma * ct.d_sigma - 2.0 * f * ct.sigma * ct.sigma);
      mean = x - (f * x - g2 * score) * dt;
      noise_scale = std::sqrt(g2 * dt);
    }
    x = (o.denoise && k + 1 == n) ? mean : mean + noise_scale * noise_like(x, gen);
  }
  return x;
}

// DDIM and singlestep DPM-Solver (noise prediction) in lambda.
at::Tensor dpm_singlestep(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                          const SamplerOptions& o, at::Generator& gen, int order, bool ddim) {
  const auto& schedule = m.schedule();
  for (size_t k = 0; k + 1 < ts.size(); ++k) {
    const double t = ts[k], s = ts[k + 1];
    const Coef ct = coef(schedule, t), cs = coef(schedule, s);
    const double h = cs.lambda - ct.lambda;
    auto e = m.eval(x, t);
    auto x0 = m.as(e, Param::data), eps = m.as(e, Param::noise);
    if (ddim && o.eta > 0) {
      const double c = o.eta * cs.sigma * std::sqrt(-std::expm1(-2.0 * h));
      const double keep = std::sqrt(std::max(0.0, cs.sigma * cs.sigma - c * c));
      x = cs.alpha * x0 + keep * eps + c * noise_like(x, gen);
      continue;
    }
    // Order 1: (alpha_s/alpha_t) x_t - sigma_s (e^h - 1) eps = alpha_s x0 + sigma_s eps.
    auto first = cs.alpha * x0 + cs.sigma * eps;
    if (order == 1) {
      x = first;
      continue;
    }
    CNF_CHECK(std::isfinite(ct.lambda) && std::isfinite(cs.lambda), sampler_name(o.sampler),
              " needs finite log-SNR at every step, but lambda = ", ct.lambda, " at t = ", t,
              "; keep t_start where alpha_t > 0 (path::conversion_range)");
    // The point at lambda_t + r h, and its update from (x0, eps) at t.
    auto at_fraction = [&](double r) {
      const double u_t = path::time_at_log_snr(schedule, ct.lambda + r * h, {s, t});
      return std::make_pair(u_t, coef(schedule, u_t));
    };
    if (order == 2) {
      const double r1 = 0.5;
      auto [t1, c1] = at_fraction(r1);
      auto u = c1.alpha * x0 + c1.sigma * eps;
      auto eps1 = m(u, t1, Param::noise);
      x = first - (cs.sigma / (2.0 * r1)) * std::expm1(h) * (eps1 - eps);
    } else {
      const double r1 = 1.0 / 3.0, r2 = 2.0 / 3.0;
      auto [t1, c1] = at_fraction(r1);
      auto [t2, c2] = at_fraction(r2);
      auto u1 = c1.alpha * x0 + c1.sigma * eps;
      auto d1 = m(u1, t1, Param::noise) - eps;
      const double phi_r2 = std::expm1(r2 * h) / (r2 * h) - 1.0;
      auto u2 = c2.alpha * x0 + c2.sigma * eps - (c2.sigma * r2 / r1) * phi_r2 * d1;
      auto d2 = m(u2, t2, Param::noise) - eps;
      const double phi = std::expm1(h) / h - 1.0;
      x = first - (cs.sigma / r2) * phi * d2;
    }
  }
  return x;
}

// Multistep DPM-Solver++(2M) on the data prediction.
at::Tensor dpmpp_2m(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                    const SamplerOptions& o, at::Generator&) {
  const auto& schedule = m.schedule();
  at::Tensor x0_prev;
  double h_prev = 0.0;
  for (size_t k = 0; k + 1 < ts.size(); ++k) {
    const double t = ts[k], s = ts[k + 1];
    const Coef ct = coef(schedule, t), cs = coef(schedule, s);
    const double h = cs.lambda - ct.lambda;
    auto x0 = m(x, t, Param::data);
    at::Tensor d = x0;
    if (detail::step_order(2, k, ts.size() - 1, o) == 2) {
      // Linear extrapolation of x0 in lambda from the last two points (midpoint form).
      const double half_inv_r = 0.5 * h / h_prev;
      d = (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev;
    }
    // sigma_s/sigma_t x_t - alpha_s (e^-h - 1) D; when alpha_t = 0, e^-h = 0 and the
    // first term is sigma_s/sigma_t x_t: finite.
    x = (cs.sigma / ct.sigma) * x - cs.alpha * std::expm1(-h) * d;
    x0_prev = x0;
    h_prev = h;
  }
  return x;
}

// Euler ancestral (k-diffusion's sample_euler_ancestral, after Ho et al. 2020's ancestral
// step), in cnf's variables: with x~ = x / alpha and s~ = sigma / alpha the path is
// x~ = x0 + s~ eps, and each step from t to s moves to s_down = sqrt(s~_s^2 - s_up^2) by one
// Euler step of the ODE dx~/ds~ = (x~ - x0) / s~, then adds s_up z, where
// s_up = min(s~_s, s~_s sqrt(1 - s~_s^2 / s~_t^2)). The result is scaled back by alpha_s.
// Multiplied out this is ddim's update at eta = 1 (s_up alpha_s = c), kept under the name
// the diffusion libraries use; SdeSamplerTest.EulerAncestralIsAncestralDdim checks it.
at::Tensor euler_ancestral(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                           const SamplerOptions&, at::Generator& gen) {
  const auto& schedule = m.schedule();
  for (size_t k = 0; k + 1 < ts.size(); ++k) {
    const Coef ct = coef(schedule, ts[k]), cs = coef(schedule, ts[k + 1]);
    const double st = ct.sigma / ct.alpha, ss = cs.sigma / cs.alpha;
    const double up = std::min(ss, ss * std::sqrt(std::max(0.0, 1.0 - (ss * ss) / (st * st))));
    const double down = std::sqrt(std::max(0.0, ss * ss - up * up));
    auto x0 = m(x, ts[k], Param::data);
    auto xt = x / ct.alpha;
    auto xs = x0 + (down / st) * (xt - x0);  // x~ + (down - s~_t) (x~ - x0) / s~_t
    x = cs.alpha * (xs + up * noise_like(x, gen));
  }
  return x;
}

// DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv:2211.01095, SDE-DPM-Solver++ with the
// multistep midpoint correction of k-diffusion's sample_dpmpp_2m_sde, eta = 1): with
// h = lambda_s - lambda_t and D the data prediction,
//   x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) D
//         + alpha_s (1 - e^{-2h}) (D - D_prev) / (2 r) + sigma_s sqrt(1 - e^{-2h}) z,
// r = h_prev / h (no correction on the first step).
at::Tensor dpmpp_2m_sde(Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                        const SamplerOptions& o, at::Generator& gen) {
  const auto& schedule = m.schedule();
  at::Tensor x0_prev;
  double h_prev = 0.0;
  for (size_t k = 0; k + 1 < ts.size(); ++k) {
    const Coef ct = coef(schedule, ts[k]), cs = coef(schedule, ts[k + 1]);
    const double h = cs.lambda - ct.lambda;
    const double decay = -std::expm1(-2.0 * h);  // 1 - e^{-2h}
    auto x0 = m(x, ts[k], Param::data);
    auto d = x0;
    if (detail::step_order(2, k, ts.size() - 1, o) == 2)
      d = x0 + (0.5 * h / h_prev) * (x0 - x0_prev);
    x = (cs.sigma / ct.sigma) * std::exp(-h) * x + cs.alpha * decay * d +
        cs.sigma * std::sqrt(decay) * noise_like(x, gen);
    x0_prev = x0;
    h_prev = h;
  }
  return x;
}

}  // namespace

Denoiser::Denoiser(nn::VelocityFieldImpl& net, Param param, const path::Schedule& schedule,
                   double threshold, double bound)
    : net_(net),
      param_(param),
      schedule_(schedule),
      range_(path::conversion_range(schedule)),
      threshold_(threshold),
      bound_(bound) {
  CNF_CHECK(threshold >= 0 && threshold <= 1 && bound > 0,
            "dynamic thresholding needs a quantile in [0, 1] and a bound > 0, got ", threshold,
            " and ", bound);
}

Denoiser::Eval Denoiser::eval(const at::Tensor& x, double t) {
  ++nfe_;
  row_evals_ += x.size(0);
  const double tc = param_ == Param::velocity ? t : std::clamp(t, range_.lo, range_.hi);
  auto tt = torch::full({x.size(0)}, tc, x.options());
  return {x, tt, net_.forward(x, tt)};
}

at::Tensor Denoiser::as(const Eval& e, Param want) const {
  if (threshold_ <= 0) return path::convert(schedule_, e.pred, param_, want, e.x, e.t);
  // Dynamic thresholding (Saharia et al. 2022): s = max(quantile_p |x0|, b) per sample,
  // x0 -> clip(x0, -s, s) b / s; the other parameterizations are read from that x0.
  auto x0 = path::convert(schedule_, e.pred, param_, Param::data, e.x, e.t);
  auto flat = x0.reshape({x0.size(0), -1});
  auto s = at::quantile(flat.abs(), threshold_, 1, true).clamp_min(bound_);
  flat = torch::min(torch::max(flat, -s), s) * (bound_ / s);
  return path::convert(schedule_, flat.reshape(x0.sizes()), Param::data, want, e.x, e.t);
}

at::Tensor Denoiser::operator()(const at::Tensor& x, double t, Param want) {
  if (want == Param::velocity && param_ != Param::velocity)
    return velocity(x, torch::full({x.size(0)}, t, x.options()));
  return as(eval(x, t), want);
}

at::Tensor Denoiser::velocity(const at::Tensor& x, const at::Tensor& t) {
  ++nfe_;
  row_evals_ += x.size(0);
  if (param_ == Param::velocity) return net_.forward(x, t);
  // Velocity at any t in [0, 1]: the clamp rule of predict().
  return predict(net_, param_, schedule_, range_, x, t, Param::velocity);
}

namespace detail {
// summary, integrates_ode, stochastic, whole_interval, order, spacing, evals_per_step, run.
const SamplerMethod kOde{
    "the model's velocity through ode::solve (any tableau), on [0, 1] by default",
    true,
    false,
    true,
    0,
    Spacing::time,
    detail::no_evaluations,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator&) { return solve_ode(m, x, ts.front(), ts.back(), o.ode, false, o.per_row); }};
const SamplerMethod kPfOde{
    "f x - 1/2 g^2 score through ode::solve: the same ODE by another route",
    true,
    false,
    false,
    0,
    Spacing::time,
    detail::no_evaluations,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator&) { return solve_ode(m, x, ts.front(), ts.back(), o.ode, true, o.per_row); }};
const SamplerMethod kEm{
    "Euler-Maruyama on the backward SDE",
    false,
    true,
    false,
    1,
    Spacing::time,
    detail::one_evaluation,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return sde_sample(m, std::move(x), ts, o, gen, false); }};
const SamplerMethod kPc{
    "predictor-corrector: Langevin corrector moves, then a reverse-diffusion or EM step",
    false,
    true,
    false,
    1,
    Spacing::time,
    [](const SamplerOptions& o) { return 1 + o.corrector_steps; },
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return sde_sample(m, std::move(x), ts, o, gen, true); }};
const SamplerMethod kDdim{
    "DDIM (eta = 0 deterministic, eta = 1 ancestral)",
    false,
    false,  // draws noise only when eta > 0
    false,
    1,
    Spacing::lambda,
    detail::one_evaluation,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return dpm_singlestep(m, std::move(x), ts, o, gen, 1, true); }};
const SamplerMethod kDpm1{
    "DPM-Solver-1 (singlestep, noise prediction)",
    false,
    false,
    false,
    1,
    Spacing::lambda,
    detail::one_evaluation,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return dpm_singlestep(m, std::move(x), ts, o, gen, 1, false); }};
const SamplerMethod kDpm2{
    "DPM-Solver-2 (singlestep, r = 1/2)",
    false,
    false,
    false,
    2,
    Spacing::lambda,
    detail::two_evaluations,
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return dpm_singlestep(m, std::move(x), ts, o, gen, 2, false); }};
const SamplerMethod kDpm3{
    "DPM-Solver-3 (singlestep, r = 1/3, 2/3)",
    false,
    false,
    false,
    3,
    Spacing::lambda,
    [](const SamplerOptions&) { return int64_t{3}; },
    [](Denoiser& m, at::Tensor x, const std::vector<double>& ts, const SamplerOptions& o,
       at::Generator& gen) { return dpm_singlestep(m, std::move(x), ts, o, gen, 3, false); }};
const SamplerMethod kEulerAncestral{
    "Euler ancestral (Euler step in sigma/alpha, then fresh noise; k-diffusion's euler_a)",
    false,
    true,
    false,
    1,
    Spacing::lambda,
    detail::one_evaluation,
    euler_ancestral};
const SamplerMethod kDpmpp2mSde{"DPM-Solver++(2M) SDE (multistep, data prediction, eta = 1)",
                                false,
                                true,
                                false,
                                1,
                                Spacing::lambda,
                                detail::one_evaluation,
                                dpmpp_2m_sde};
const SamplerMethod kDpmpp2m{"DPM-Solver++(2M) (multistep, data prediction)",
                             false,
                             false,
                             false,
                             2,
                             Spacing::lambda,
                             detail::one_evaluation,
                             dpmpp_2m};
}  // namespace detail

SampleResult sample(nn::VelocityFieldImpl& net, Param param, const path::Schedule& schedule,
                    const at::Tensor& x_start, const SamplerOptions& o, at::Generator& gen) {
  o.validate();
  CNF_CHECK(x_start.dim() >= 1 && x_start.size(0) >= 1,
            "sampling needs a batch of starting points, got shape ", x_start.sizes());
  torch::NoGradGuard no_grad;
  const auto range = sampling_range(schedule, o);
  SampleResult r;
  r.t_start = range.hi;
  r.t_end = range.lo;
  Denoiser m(net, param, schedule, o.threshold, o.threshold_bound);
  const SamplerMethod& method = o.sampler.method();
  std::vector<double> ts{range.hi, range.lo};
  if (!method.integrates_ode)
    ts = time_grid(schedule, range.hi, range.lo, o.steps,
                   o.spacing == Spacing::automatic ? method.spacing : o.spacing, o.rho,
                   o.train_steps);
  r.x = method.run(m, x_start, ts, o, gen);
  r.nfe = m.nfe();
  r.nfe_per_row = static_cast<double>(m.row_evals()) / static_cast<double>(x_start.size(0));
  CNF_CHECK(torch::isfinite(r.x).all().item<bool>(), sampler_name(o.sampler),
            " produced non-finite samples on ", schedule.describe(), " (", o.steps,
            " steps from t = ", range.hi, " to ", range.lo,
            "); more steps, or another sampler, may be needed near the ends of the path");
  return r;
}

}  // namespace cnf::sde
