/// \file
/// cnf/path/schedule.h — affine probability paths x_t = alpha_t x_0 + sigma_t x_1.
///
/// Time runs from data (t = 0) to noise (t = 1), see shared/DESIGN.md. (Lipman et al.,
/// "Flow Matching for Generative Modeling", ICLR 2023, and the facebookresearch
/// flow_matching library put data at t = 1; t -> 1 - t maps between the two.)
///
/// A schedule returns (alpha_t, sigma_t, d_alpha_t, d_sigma_t). Everything else — the
/// conditional target velocity, the SDE coefficients f and g, the signal-to-noise ratio,
/// conversions between parameterizations — is derived from these four in one place
/// (path/affine.h), never re-derived per schedule.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "cnf/core/registry.h"
#include "cnf/core/spec.h"

/// Affine probability paths x_t = alpha_t x_0 + sigma_t x_1, data at t = 0 and noise at t = 1:
/// schedules and everything derived from them.
namespace cnf::path {

/// alpha_t, sigma_t and their time derivatives, each with the shape of `t`.
struct ScheduleValues {
  /// \var alpha_t
  /// alpha_t, the coefficient of the data x_0.
  /// \var sigma_t
  /// sigma_t, the coefficient of the noise x_1.
  /// \var d_alpha_t
  /// d alpha_t / dt.
  /// \var d_sigma_t
  /// d sigma_t / dt.
  at::Tensor alpha_t, sigma_t, d_alpha_t, d_sigma_t;
};

/// A schedule: alpha_t, sigma_t and their time derivatives as functions of t; everything else
/// is derived from them in path/affine.h. The registry schedules() lists the built-in ones.
class Schedule {
 public:
  virtual ~Schedule() = default;
  /// The four coefficients at times `t` (any shape, floating point).
  virtual ScheduleValues operator()(const at::Tensor& t) const = 0;
  /// The canonical spec: the registry name and the parameters that differ from their
  /// defaults, e.g. "vp:beta_max=10" ("vp" with the defaults); make_schedule reads it back.
  virtual std::string describe() const = 0;
  /// Smallest time at which training and likelihoods may evaluate the path: where
  /// sigma_t -> 0 makes d_sigma_t or the score blow up (VP, VE), it is > 0.
  virtual double t_min() const { return 0.0; }
  /// The same four coefficients as TorchScript statements (export, interop/torchscript.h):
  /// given a Tensor `t`, they assign the Tensors `alpha`, `sigma`, `d_alpha` and `d_sigma`,
  /// one statement per line, without indentation. Every registered schedule has one, and
  /// a generic test compares it with operator().
  virtual std::string torchscript() const = 0;

  /// Convenience for solvers, whose time is a double (float64 arithmetic).
  ScheduleValues at_time(double t) const;
  /// sigma_1: generation starts from sigma_1 * x_1 with x_1 ~ prior (1 except for VE).
  double sigma_1() const;
};

/// A shared, immutable schedule.
using SchedulePtr = std::shared_ptr<const Schedule>;

/// Conditional OT / rectified path: alpha_t = 1 - t, sigma_t = sigma_min + (1 - sigma_min) t.
/// Lipman et al. 2023, eq. (20) under t -> 1 - t; sigma_min = 0 is rectified flow
/// (Liu et al. 2023).
class CondOT final : public Schedule {
 public:
  /// sigma_min in [0, 1).
  explicit CondOT(double sigma_min = 0.0);
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;
  /// sigma_t at t = 0.
  double sigma_min() const { return sigma_min_; }

 private:
  double sigma_min_;
};

/// Variance-preserving path with a linear beta(t) = beta_min + t (beta_max - beta_min):
/// alpha_t = exp(-1/2 int_0^t beta), sigma_t = sqrt(1 - alpha_t^2) (Song et al., ICLR 2021).
class VP final : public Schedule {
 public:
  /// 0 < beta_min <= beta_max.
  explicit VP(double beta_min = 0.1, double beta_max = 20.0);
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;
  double t_min() const override { return 1e-3; }

 private:
  double beta_min_, beta_max_;
};

/// Sub-VP path: alpha_t as VP, sigma_t = 1 - alpha_t^2 (Song et al., ICLR 2021, eq. 34).
class SubVP final : public Schedule {
 public:
  /// 0 < beta_min <= beta_max.
  explicit SubVP(double beta_min = 0.1, double beta_max = 20.0);
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;
  double t_min() const override { return 1e-3; }

 private:
  double beta_min_, beta_max_;
};

/// Variance-exploding path: alpha_t = 1, sigma_t = sigma_min (sigma_max / sigma_min)^t.
/// Note alpha_1 = 1: the prior at t = 1 is N(0, sigma_max^2 I) up to the data's spread.
class VE final : public Schedule {
 public:
  /// 0 < sigma_min < sigma_max.
  explicit VE(double sigma_min = 0.01, double sigma_max = 10.0);
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;

 private:
  double sigma_min_, sigma_max_;
};

/// Cosine path: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2) (variance preserving,
/// trigonometric interpolant; Albergo & Vanden-Eijnden 2023).
class Cosine final : public Schedule {
 public:
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;
};

/// The cosine alpha-bar schedule of improved DDPM (Nichol & Dhariwal 2021, eq. 17) in
/// continuous time: alpha-bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) * pi / 2), so
/// alpha_t = cos(theta_t) / cos(theta_0), theta_t = (t + s) / (1 + s) * pi / 2, and
/// sigma_t = sqrt(1 - alpha_t^2) (variance preserving). Their t/T is cnf's t (data at 0); the
/// offset s (0.008 in the paper) keeps sigma from being tiny near t = 0. The discrete
/// schedule clips beta_t at 0.999 near t = 1; here alpha_1 = 0 exactly, as on condot.
/// (cnf's `cosine` is the trigonometric interpolant alpha = cos(pi t / 2), another path.)
class CosineAlphaBar final : public Schedule {
 public:
  /// 0 <= s < 1.
  explicit CosineAlphaBar(double s = 0.008);
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;
  /// d sigma/dt = -alpha d alpha / sigma diverges at t = 0, where sigma_0 = 0.
  double t_min() const override { return 1e-3; }

 private:
  double s_;
};

/// The discrete beta schedules of DDPM-style models in cnf's continuous time: N training
/// timesteps (1000 by default) with betas beta_1..beta_N, alpha-bar_i = prod_{j<=i} (1 -
/// beta_j), and timestep i (1-based; diffusers' 0-based index i - 1) at cnf time t_i = i / N,
/// so alpha_{t_i} = sqrt(alpha-bar_i) and sigma = sqrt(1 - alpha-bar) (variance preserving).
///   linear          beta_i evenly spaced from beta_start to beta_end (Ho et al. 2020: 1e-4 to
///                   0.02; `ddpm-linear`)
///   scaled-linear   sqrt(beta_i) evenly spaced from sqrt(beta_start) to sqrt(beta_end)
///                   (Stable Diffusion's "scaled_linear": 0.00085 to 0.012;
///                   `ddpm-scaled-linear`). Its alpha_1 = 0.068 is far from 0: the terminal
///                   SNR that Lin et al. (2024) show to be flawed; samplers start from
///                   sigma_1 x_1 regardless, as those models do.
/// Between the timesteps L(t) = log alpha-bar is a cubic Hermite interpolant of the N + 1
/// values L(i/N) with central-difference slopes (one-sided at both ends), so alpha and sigma
/// equal the discrete schedule's exactly at every training timestep and have continuous
/// derivatives in between, which the ODE samplers and likelihoods need. t_min() = 1/N, the
/// first training timestep (sigma = sqrt(beta_1) there).
class DiscreteDDPM final : public Schedule {
 public:
  /// How the betas are spaced.
  enum class Betas { linear, scaled_linear };
  /// 0 < beta_start <= beta_end < 1, 2 <= steps <= 100000 (an integer).
  DiscreteDDPM(Betas betas, double beta_start, double beta_end, double steps);
  ScheduleValues operator()(const at::Tensor& t) const override;
  std::string describe() const override;
  std::string torchscript() const override;
  double t_min() const override { return 1.0 / static_cast<double>(steps_); }
  /// The number N of training timesteps.
  int64_t steps() const { return steps_; }

 private:
  Betas betas_;
  double beta_start_, beta_end_;
  int64_t steps_;
  at::Tensor log_abar_, slope_;  // L(i/N) and dL/dt there, i = 0..N, float64
};

/// A registered schedule: its numeric parameters (keys and defaults, in canonical order) and
/// how to build it from their values.
struct ScheduleKind {
  /// The parameters a spec may set, e.g. beta_min and beta_max of vp.
  std::vector<SpecParam> params;
  /// Builds the schedule from one value per parameter (the constructor checks them).
  SchedulePtr (*make)(const std::vector<double>& values);
};

/// Every schedule cnf offers, by name: condot (sigma_min), vp and subvp (beta_min,
/// beta_max), ve (sigma_min, sigma_max), cosine, cosine-abar (s), ddpm-linear and
/// ddpm-scaled-linear (beta_start, beta_end, steps); then any added by add_schedule.
const Registry<ScheduleKind>& schedules();
/// Registers another schedule under `name` (a new name): its parameters and how to build it.
/// Its class's describe() should return canonical_spec(name, kind.params, values) so that
/// checkpoints round-trip. Call it before any schedule is built from text (registries are
/// not locked), e.g. at the start of main.
void add_schedule(const std::string& name, ScheduleKind kind);

/// Builds a schedule from a spec `name` or `name:key=value,...` (core/spec.h), e.g.
/// "vp:beta_min=0.1,beta_max=20" or "ve:sigma_max=50". `sigma_min` (condot's own flag, kept
/// for checkpoints that store it apart) applies when it is not 0; the spec must not set it too.
/// Unknown names, keys and bad values fail listing the valid ones.
SchedulePtr make_schedule(const std::string& spec, double sigma_min = 0.0);

/// The registry name of a schedule spec ("vp" of "vp:beta_max=10").
std::string schedule_name(const std::string& spec);

}  // namespace cnf::path
