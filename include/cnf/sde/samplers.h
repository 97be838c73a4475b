/// \file
/// cnf/sde/samplers.h — sampling a diffusion (or any affine-path) model: backward SDE,
/// predictor–corrector, probability-flow ODE, DDIM and DPM-Solver.
///
/// The forward SDE dx = f(t) x dt + g(t) dw has the transition N(alpha_t x_0, sigma_t^2 I),
/// f = d log alpha_t / dt, g^2 = d sigma_t^2/dt - 2 f sigma_t^2 (path/affine.h). Its marginals
/// are shared by (Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021)
///   backward SDE           dx = [f x - g^2 grad log q_t(x)] dt + g dw,   run from 1 to 0,
///   probability-flow ODE   dx = [f x - 1/2 g^2 grad log q_t(x)] dt        (= u_t(x)).
/// Time runs data t = 0 -> noise t = 1 (DESIGN.md §1), so every sampler walks t downwards,
/// from t_start to t_end.
///
/// Samplers (registry `samplers()`):
///   ode      the model's velocity through ode::solve (any tableau), by default on [0, 1]
///            exactly like train::generate.
///   pf-ode   f x - 1/2 g^2 score through ode::solve: the same ODE by another route.
///   em       Euler–Maruyama on the backward SDE, coefficients at the step's start.
///   pc       predictor–corrector (Song et al. 2021, alg. 1-5): per step `corrector_steps`
///            Langevin moves x += e s + sqrt(2 e) z with e = 2 r (snr |z| / |s|)^2 (norms
///            averaged over the batch; r = (alpha_t/alpha_s)^2, 1 for VE), then a predictor:
///            "reverse-diffusion" (ancestral: with the exact forward kernel from s to t,
///            x_t = r x_s + G z, r = alpha_t/alpha_s, G^2 = sigma_t^2 - r^2 sigma_s^2, move to
///            the posterior mean E[x_s | x_t] = (x_t + G^2 score)/r (Tweedie's formula) plus
///            G (sigma_s/sigma_t) z, the spread of q(x_s | x_t, x_0) (DDPM's beta-tilde; G/r,
///            the small-step value, explodes for coarse steps where r << 1) or
///            "euler-maruyama".
///   ddim     Song, Meng & Ermon, ICLR 2021, for any affine path: with x0, eps predicted at t,
///            x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,
///            c = eta sigma_s sqrt(1 - exp(-2h)), h = lambda_s - lambda_t. eta = 0 is
///            deterministic (= dpm1), eta = 1 the ancestral posterior of the forward process.
///   dpm1..3  singlestep DPM-Solver (Lu et al., NeurIPS 2022, alg. 1-2 and eq. 3.7) on the
///            noise prediction, orders 1-3 with intermediate points at lambda_t + r h
///            (r = 1/2; r = 1/3, 2/3); 1, 2, 3 evaluations per step.
///   dpm++2m  multistep DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, alg. 2) on the
///            data prediction; one evaluation per step, order 1 on the first step.
///   dpm++2m-sde  its stochastic variant (SDE-DPM-Solver++ with the 2M correction, eta = 1):
///            x_s = (sigma_s/sigma_t) e^-h x_t + alpha_s (1 - e^-2h) D' + sigma_s
///            sqrt(1 - e^-2h) z, D' the data prediction extrapolated as in dpm++2m.
///   euler-a  Euler ancestral (the diffusion libraries' "Euler a"): an Euler step of the ODE
///            in x / alpha and sigma / alpha down to sigma_down, then noise of scale sigma_up
///            (sigma_down^2 + sigma_up^2 = the target's sigma^2; see samplers.cpp).
///   dpm++3m  multistep DPM-Solver++(3M) on the data prediction (k-diffusion's third-order
///            multistep form of Lu et al. 2022): D extrapolated quadratically in lambda from
///            the last three evaluations; order 1 on the first step, 2 on the second.
///   dpm++3m-sde  its stochastic variant with eta = 1 (noise sigma_s sqrt(1 - e^-2h) z).
///   unipc    UniPC (Zhao et al., NeurIPS 2023) with its default B(h) = e^h - 1 ("bh2") on the
///            data prediction: the multistep predictor UniP-2, then the corrector UniC, which
///            reuses the evaluation at the predicted point (no extra NFE) and raises the order
///            to 3; the last step is not corrected (its evaluation would be wasted).
///   deis     DEIS (Zhang & Chen, ICLR 2023), the "tAB" multistep form in rho = sigma/alpha:
///            x / alpha is integrated exactly against the noise prediction interpolated by a
///            polynomial in log rho through the last three evaluations (order 3).
///   heun     EDM's stochastic sampler (Karras et al., NeurIPS 2022, alg. 2) in x / alpha and
///            rho = sigma/alpha: optional churn (raise rho_i to rho^ = (1 + gamma) rho_i by fresh
///            noise, gamma = min(churn / steps, sqrt(2) - 1) where churn_sigma_min <= rho_i <=
///            churn_sigma_max), then a Heun step of dx/drho = (x - D)/rho; 2 evaluations per
///            step. With churn = 0 (the default) it is the probability-flow ODE's Heun in rho.
///
/// Multistep samplers (dpm++2m, dpm++3m and their SDE forms, unipc, deis) with fewer than 15
/// steps lower their order on the last steps (lower_order_final, as the diffusers library
/// does): order min(order, steps - k) at step k, which steadies few-step runs.
/// Dynamic thresholding (Saharia et al., NeurIPS 2022, "Imagen"): with `threshold` = p > 0,
/// every data prediction x0 a grid sampler reads is replaced by clip(x0, -s, s) b / s, s the
/// per-sample p-quantile of |x0| floored at the data bound b (`threshold_bound`, 1 for data in
/// [-1, 1]); the other parameterizations are read from the thresholded x0. It keeps samples of
/// bounded data (images) inside their range where a coarse step overshoots.
/// All exponential-integrator samplers are written in lambda = log(alpha/sigma), so they serve
/// every affine schedule (condot, cosine, VE included), not only VP; their order-1 update is
/// evaluated in the form alpha_s x0 + sigma_s eps, which stays finite when alpha_t -> 0.
///
/// Time grids: `steps` intervals from t_start to t_end, uniform in t (Song et al.'s SDE
/// samplers), uniform in lambda (Lu et al.'s "logSNR" grid; times found by
/// path::time_at_log_snr) or Karras et al.'s rho-spacing (uniform in rho^(1/rho_exp) for
/// rho = sigma/alpha = e^-lambda, rho_exp = 7 by default: dense near the data), or the
/// training timesteps the diffusion libraries pick ("leading", "trailing", "linspace" of
/// diffusers, for discrete schedules such as ddpm-linear; see discrete_times). Spacing::automatic
/// is lambda for ddim/dpm*/unipc/deis, karras for heun, t for em/pc. Because
/// lambda = -inf where alpha = 0 (condot, cosine at t = 1) and +inf where sigma = 0, these
/// samplers run inside path::conversion_range(schedule) by default (condot [1e-3, 0.999],
/// vp [1e-3, 1]); start them from x_start = sigma_{t_start} x_1 (start_scale).
///
/// Every evaluation of the network counts toward the returned NFE; noise comes from the
/// caller's generator (drawn on its device, then moved to x's device).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cnf/core/registry.h"
#include "cnf/nn/velocity.h"
#include "cnf/ode/solve.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"

/// Sampling diffusion and affine-path models (backward SDE, predictor–corrector,
/// probability-flow ODE, DDIM, DPM-Solver), and networks read through what they predict.
namespace cnf::sde {

/// Time grid of the fixed-grid samplers: uniform in t or in lambda = log(alpha_t / sigma_t);
/// automatic picks per sampler; leading, trailing and linspace pick training timesteps of a
/// discrete schedule as the diffusion libraries do (see discrete_times).
enum class Spacing { automatic, time, lambda, karras, leading, trailing, linspace };
/// "auto", "time", "lambda", "karras", "leading", "trailing" or "linspace".
Spacing parse_spacing(const std::string& name);
/// The spacings by name: auto, time, lambda, karras, leading, trailing, linspace.
const Registry<Spacing>& spacings();
/// Whether `spacing` picks training timesteps (leading, trailing, linspace).
bool is_discrete(Spacing spacing);

/// The predictor step of pc (see the file comment).
enum class PcPredictor { reverse_diffusion, euler_maruyama };
/// "reverse-diffusion" or "euler-maruyama".
PcPredictor parse_pc_predictor(const std::string& name);
/// The predictors by name: reverse-diffusion, euler-maruyama (alias em).
const Registry<PcPredictor>& pc_predictors();

struct SamplerMethod;
struct SamplerOptions;

/// The rows of the built-in samplers (see the file comment).
namespace detail {
extern const SamplerMethod kOde;             ///< ode
extern const SamplerMethod kPfOde;           ///< pf-ode
extern const SamplerMethod kEm;              ///< em
extern const SamplerMethod kPc;              ///< pc
extern const SamplerMethod kDdim;            ///< ddim
extern const SamplerMethod kDpm1;            ///< dpm1
extern const SamplerMethod kDpm2;            ///< dpm2
extern const SamplerMethod kDpm3;            ///< dpm3
extern const SamplerMethod kDpmpp2m;         ///< dpm++2m
extern const SamplerMethod kDpmpp2mSde;      ///< dpm++2m-sde
extern const SamplerMethod kEulerAncestral;  ///< euler-a
extern const SamplerMethod kDpmpp3m;         ///< dpm++3m
extern const SamplerMethod kDpmpp3mSde;      ///< dpm++3m-sde
extern const SamplerMethod kUniPc;           ///< unipc
extern const SamplerMethod kDeis;            ///< deis
extern const SamplerMethod kHeun;            ///< heun
}  // namespace detail

/// A sampler: a handle on its SamplerMethod, compared by identity. The built-in ones are
/// constants (Sampler::dpmpp_2m); samplers() names every registered one.
class Sampler {
 public:
  static const Sampler ode;       ///< the velocity through ode::solve
  static const Sampler pf_ode;    ///< the probability-flow ODE from the score
  static const Sampler em;        ///< Euler–Maruyama on the backward SDE
  static const Sampler pc;        ///< predictor–corrector
  static const Sampler ddim;      ///< DDIM
  static const Sampler dpm1;      ///< DPM-Solver-1
  static const Sampler dpm2;      ///< DPM-Solver-2
  static const Sampler dpm3;      ///< DPM-Solver-3
  static const Sampler dpmpp_2m;  ///< DPM-Solver++(2M)
  /// The sampler described by `method` (which must outlive every use).
  constexpr explicit Sampler(const SamplerMethod* method) : m_(method) {}
  /// Its descriptor.
  const SamplerMethod& method() const { return *m_; }
  /// Its descriptor's fields.
  const SamplerMethod* operator->() const { return m_; }
  /// Same sampler.
  friend bool operator==(Sampler a, Sampler b) { return a.m_ == b.m_; }
  /// Different samplers.
  friend bool operator!=(Sampler a, Sampler b) { return a.m_ != b.m_; }

 private:
  const SamplerMethod* m_;
};
inline constexpr Sampler Sampler::ode{&detail::kOde};
inline constexpr Sampler Sampler::pf_ode{&detail::kPfOde};
inline constexpr Sampler Sampler::em{&detail::kEm};
inline constexpr Sampler Sampler::pc{&detail::kPc};
inline constexpr Sampler Sampler::ddim{&detail::kDdim};
inline constexpr Sampler Sampler::dpm1{&detail::kDpm1};
inline constexpr Sampler Sampler::dpm2{&detail::kDpm2};
inline constexpr Sampler Sampler::dpm3{&detail::kDpm3};
inline constexpr Sampler Sampler::dpmpp_2m{&detail::kDpmpp2m};

/// Sampler, time grid and settings of sde::sample; validate() checks them.
struct SamplerOptions {
  /// The sampler; DPM-Solver++(2M) by default.
  Sampler sampler = Sampler::dpmpp_2m;
  /// Steps of the fixed-grid samplers (each costs 1 NFE; dpm2: 2, dpm3: 3; pc: 1 +
  /// corrector_steps). For ode / pf-ode the steps come from `ode`.
  int64_t steps = 20;
  /// \var t_start
  /// Interval; < 0 means the default: [0, 1] for ode, conversion_range for the others.
  /// \var t_end
  /// End of the interval; < 0 means the default.
  double t_start = -1.0, t_end = -1.0;
  /// Time grid: lambda for ddim/dpm*/unipc/deis, karras for heun, t for em/pc by default.
  Spacing spacing = Spacing::automatic;
  /// The exponent of the karras spacing (Karras et al.'s rho; 7 there).
  double rho = 7.0;
  /// N, the training timesteps the discrete spacings pick from (0: the schedule's own N for
  /// ddpm-linear / ddpm-scaled-linear, 1000 for continuous schedules).
  int64_t train_steps = 0;
  /// Multistep samplers lower their order on the last steps of runs under 15 steps.
  bool lower_order_final = true;
  /// \var threshold
  /// Dynamic thresholding's quantile p in (0, 1] (0: off; Imagen uses 0.995).
  /// \var threshold_bound
  /// The data bound b of dynamic thresholding (> 0): 1 for data in [-1, 1].
  double threshold = 0.0, threshold_bound = 1.0;
  /// \var churn
  /// heun's stochastic churn S_churn (>= 0; 0 deterministic; Karras et al. tune 0-80).
  /// \var churn_sigma_min
  /// Churn applies where churn_sigma_min <= sigma/alpha <= churn_sigma_max.
  /// \var churn_sigma_max
  /// Upper end of the churn window.
  /// \var churn_noise
  /// S_noise, the scale of churn's fresh noise (Karras et al. use 1.003-1.007).
  double churn = 0.0, churn_sigma_min = 0.0,
         churn_sigma_max = std::numeric_limits<double>::infinity(), churn_noise = 1.0;
  /// DDIM stochasticity in [0, 1].
  double eta = 0.0;
  /// Predictor–corrector settings (Song et al. 2021 use snr 0.16 for VE, 0.01-0.17 for VP).
  PcPredictor predictor = PcPredictor::reverse_diffusion;
  /// Langevin corrector moves per pc step.
  int64_t corrector_steps = 1;
  /// Signal-to-noise ratio snr of the Langevin step size.
  double snr = 0.16;
  /// SDE samplers (em, pc) return the noise-free mean of their last step (Song et al.'s
  /// "denoise"), which removes the last step's sqrt(dt) g noise.
  bool denoise = true;
  /// Tableau, steps, tolerances and observer of the ode / pf-ode samplers.
  ode::SolveOptions ode;
  /// ode / pf-ode with an adaptive tableau: every row steps on its own (ode::solve_per_row:
  /// its own step size and time, one shared evaluation of the rows still integrating). The
  /// observer sees no step (rows have no common times) and save_at must be empty.
  bool per_row = false;

  /// Throws cnf::Error naming the first invalid field.
  void validate() const;
};

/// The network as a sampler reads it: every evaluation counted, the prediction converted to
/// any parameterization (time clamped into path::conversion_range when a conversion happens;
/// sde/parameterized.h).
class Denoiser {
 public:
  /// `net` predicts `param` on `schedule`; both must outlive the Denoiser. `threshold` > 0
  /// turns on dynamic thresholding at that quantile with data bound `bound` (see the file
  /// comment).
  Denoiser(nn::VelocityFieldImpl& net, path::Param param, const path::Schedule& schedule,
           double threshold = 0.0, double bound = 1.0);
  /// One evaluation at (x, t): the input, the time tensor and the raw prediction.
  struct Eval {
    /// \var x
    /// The input.
    /// \var t
    /// The time, one entry per row.
    /// \var pred
    /// The network's output (its own parameterization).
    at::Tensor x, t, pred;
  };
  /// Evaluates the network once at (x, t).
  Eval eval(const at::Tensor& x, double t);
  /// An evaluation read as `want` (no further evaluation), through the thresholded data
  /// prediction when thresholding is on.
  at::Tensor as(const Eval& e, path::Param want) const;
  /// One evaluation read as `want`; the velocity at any t in [0, 1] (sde::predict's rule).
  at::Tensor operator()(const at::Tensor& x, double t, path::Param want);
  /// The velocity at one time per row, `t` [N] (the clamp rule of operator()); one evaluation.
  at::Tensor velocity(const at::Tensor& x, const at::Tensor& t);
  /// Evaluations so far.
  int64_t nfe() const { return nfe_; }
  /// Rows evaluated so far, summed over the evaluations.
  int64_t row_evals() const { return row_evals_; }
  /// The schedule.
  const path::Schedule& schedule() const { return schedule_; }

 private:
  nn::VelocityFieldImpl& net_;
  path::Param param_;
  const path::Schedule& schedule_;
  path::TimeRange range_;
  double threshold_, bound_;
  int64_t nfe_ = 0, row_evals_ = 0;
};

/// What a sampler is: one row of samplers(), the descriptor that sde::sample's dispatch, the
/// `samplers` study and the help read, with the loop that walks its time grid. Adding a
/// sampler is one such value and its row (see samplers.cpp; a test registers its own).
struct SamplerMethod {
  /// One line for help and docs.
  const char* summary = "";
  /// Integrates an ODE through ode::solve (its method, steps and tolerances come from
  /// SamplerOptions::ode); `run` gets the grid {t_start, t_end} only.
  bool integrates_ode = false;
  /// Draws noise from the generator with the default options (ddim only when eta > 0).
  bool stochastic = false;
  /// Runs on [0, 1] by default (the velocity field needs no conversion) instead of
  /// path::conversion_range.
  bool whole_interval = false;
  /// Documented order of convergence in the step size (weak order for the stochastic ones;
  /// for integrates_ode, the tableau's).
  int order = 1;
  /// The grid of Spacing::automatic.
  Spacing spacing = Spacing::lambda;
  /// Network evaluations per grid step under `options` (0 when integrates_ode: the
  /// solver's steps decide).
  int64_t (*evals_per_step)(const SamplerOptions& options) = nullptr;
  /// Walks `x` from ts.front() down to ts.back() (steps + 1 descending times), reading the
  /// network through `model`; returns the state at ts.back().
  at::Tensor (*run)(Denoiser& model, at::Tensor x, const std::vector<double>& ts,
                    const SamplerOptions& options, at::Generator& gen) = nullptr;
};

/// Every registered sampler by name: ode, pf-ode, em, pc, ddim, dpm1, dpm2, dpm3, dpm++2m,
/// dpm++2m-sde, euler-a, dpm++3m, dpm++3m-sde, unipc, deis, heun, then any added by
/// add_sampler.
const Registry<Sampler>& samplers();
/// Registers another sampler under `name` (a new name; `method` must outlive the program).
/// Call it before any sampling starts (registries are not locked), e.g. at the start of main.
void add_sampler(const std::string& name, const SamplerMethod* method);
/// The registry name of `s`.
std::string sampler_name(Sampler s);

/// What sde::sample returns.
struct SampleResult {
  at::Tensor x;     ///< the state at t_end
  int64_t nfe = 0;  ///< network evaluations (calls, over however many rows each)
  /// Rows evaluated per sample on average: equals nfe unless per-row stepping lets finished
  /// rows leave the batch.
  double nfe_per_row = 0;
  /// \var t_start
  /// The time it started from.
  /// \var t_end
  /// The time it ended at.
  double t_start = 1, t_end = 0;
};

/// [t_start, t_end] that `options` resolves to on `schedule` (t_start > t_end). With a
/// discrete spacing and no t_start given, t_start is the first timestep's time (at most the
/// default), as those libraries start there from noise.
path::TimeRange sampling_range(const path::Schedule& schedule, const SamplerOptions& options);

/// sigma_{t_start}: the scale of the prior draws x_start = sigma x_1 (10 for VE at t = 1).
double start_scale(const path::Schedule& schedule, const SamplerOptions& options);

/// The times of the `steps` timesteps that the diffusion libraries' spacings pick from N
/// training timesteps (`train_steps`, 0: as SamplerOptions::train_steps), in the 0-based
/// indexing of diffusers' DDIMScheduler.set_timesteps, descending:
///   linspace  round(linspace(0, N - 1, steps))
///   leading   k * (N // steps), k = 0..steps-1 (starts below N - 1: never at pure noise)
///   trailing  round(N - k N / steps) - 1, k = 0..steps-1 (starts at N - 1)
/// Timestep k is cnf time (k + 1) / N (DiscreteDDPM). Throws unless 1 <= steps <= N.
std::vector<double> discrete_times(const path::Schedule& schedule, int64_t steps, Spacing spacing,
                                   int64_t train_steps = 0);

/// steps + 1 times from t_start down to t_end (endpoints exact), uniform in t, in lambda, or
/// in (sigma/alpha)^(1/rho) (karras). The discrete spacings give discrete_times' times at or
/// below t_start (later ones clamped to it, t_start itself first), then t_end: one step per
/// timestep when t_start is the first timestep's time (sampling_range's default for them).
std::vector<double> time_grid(const path::Schedule& schedule, double t_start, double t_end,
                              int64_t steps, Spacing spacing, double rho = 7.0,
                              int64_t train_steps = 0);

/// Transports x_start (the state at t_start) to t_end with `net`, which predicts `param`.
/// No autograd graph is built.
///
/// Example (examples/sample_checkpoint/main.cpp): DPM-Solver++(2M) on the raw network, then dopri5
/// on the velocity field.
/// \snippet sample_checkpoint/main.cpp samplers
SampleResult sample(nn::VelocityFieldImpl& net, path::Param param, const path::Schedule& schedule,
                    const at::Tensor& x_start, const SamplerOptions& options, at::Generator& gen);

}  // namespace cnf::sde
