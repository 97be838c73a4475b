/// \file
/// cnf/density/density.h — exact likelihoods, bits/dim, scores along trajectories, entropy.
///
/// Instantaneous change of variables (Chen et al. 2018; Grathwohl et al., FFJORD, 2019):
///   log rho_0(x) = log rho_1(X_1(x)) + int_0^1 div v_t(X_t(x)) dt,
/// integrated from t = 0 (data) to t = 1 (prior). Divergence by autograd (exact, one pass
/// per dimension), analytically for the MLP (Jacobian carried through the layers) and the
/// hollow network (nn/hollow.h: read off one forward pass), or by
/// Hutchinson's estimator E[eps^T (dv/dx) eps] with K probes held fixed through the solve.
///
/// Instantaneous change of score (the score along a trajectory):
///   d/dt s_t = -(grad v_t)^T s_t - grad(div v_t),   s_t = grad log rho_t(X_t).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

#include "cnf/core/registry.h"
#include "cnf/data/sources.h"
#include "cnf/nn/velocity.h"
#include "cnf/ode/solve.h"
#include "cnf/path/schedule.h"

/// Densities of a flow: exact log-likelihoods by the instantaneous change of variables,
/// scores along trajectories, entropy and bits/dim.
namespace cnf::density {

/// How div v_t is computed: exact (autograd, one pass per dimension), analytic (the MLP's
/// and the hollow network's own routes) or hutchinson (unbiased stochastic estimate).
enum class Divergence { exact, analytic, hutchinson };
/// "exact", "analytic" (mlp and hollow networks) or "hutchinson"; unknown names list the
/// valid ones.
Divergence parse_divergence(const std::string& name);
/// The divergence routes by name: exact, analytic, hutchinson.
const Registry<Divergence>& divergences();
/// The name of `d`, as parse_divergence reads it.
std::string divergence_name(Divergence d);

/// How the divergence is computed inside a likelihood solve.
struct DivergenceOptions {
  /// The estimator; exact by default.
  Divergence method = Divergence::exact;
  /// Hutchinson probes K (fixed through a solve).
  int64_t probes = 1;
  /// Gaussian probes instead of Rademacher (Rademacher has the lower variance).
  bool gaussian = false;
};

/// v_t(x) and its divergence: [B] for exact/analytic, [K, B] (one estimate per probe) for
/// Hutchinson with `probes` [K, B, ...]. `create_graph` keeps the graph of the divergence
/// (needed to differentiate it again: training, the change of score).
std::pair<at::Tensor, at::Tensor> velocity_and_divergence(nn::VelocityFieldImpl& field,
                                                          const at::Tensor& x, const at::Tensor& t,
                                                          const DivergenceOptions& options,
                                                          const at::Tensor& probes = {},
                                                          bool create_graph = false);

/// K probes shaped [K, ...like] (Rademacher +-1 or standard normal).
at::Tensor draw_probes(int64_t k, const at::Tensor& like, bool gaussian, at::Generator& gen);

/// log rho_1(y) of the state y = sigma_1 * x_1 at t = 1 (x_1 ~ prior): the prior's
/// log-density of y / sigma_1 minus D log sigma_1. Throws when the prior has no density.
at::Tensor prior_log_prob(const data::Source& prior, const at::Tensor& y, double sigma_1);

/// The ODE solve and the divergence of a likelihood computation.
struct LikelihoodOptions {
  /// dopri5 at rtol = atol = 1e-5, exact divergence.
  LikelihoodOptions();
  ode::SolveOptions solve;  ///< dopri5 at rtol = atol = 1e-5 by default
  /// The divergence; exact by default.
  DivergenceOptions divergence;
  /// Where the flow begins: the smallest time its network was trained at
  /// (train::FlowSpec::likelihood_start(); 1e-3 on vp and subvp, 0 on the OT path). With
  /// t_start = s > 0 the model of the data is X = X_s / alpha_s, where X_s follows the flow
  /// from the prior at t = 1 down to s; its density is exact:
  ///   log p(x) = log rho_s(alpha_s x) + D log alpha_s,
  /// the data density blurred by N(0, (sigma_s / alpha_s)^2 I), which is what the network
  /// was trained to transport (Song et al. 2021, app. D, evaluate rho_s at the data point;
  /// dividing by alpha_s makes it a normalized density in data coordinates). Below s the
  /// network was never trained, so integrating from 0 would extrapolate it. Must be in [0, 1).
  double t_start = 0.0;
};

/// log rho_0 of a batch and the other end of its trajectory.
struct LikelihoodResult {
  at::Tensor log_prob;         ///< [B] log rho_0 (the mean over probes for Hutchinson)
  at::Tensor log_prob_probes;  ///< [K, B] per-probe estimates (Hutchinson only)
  at::Tensor x;                ///< the other end of the trajectory
  /// Evaluations of the field in the solve.
  int64_t nfe = 0;
};

/// log rho_0(x_0) of data points x_0 under the flow with prior `prior` at t = 1 (scaled by
/// the schedule's sigma_1, as generation starts from sigma_1 * x_1). Integrates from
/// options.t_start (starting at alpha x_0 and adding D log alpha there, see
/// LikelihoodOptions::t_start) to 1.
///
/// Example (examples/sample_checkpoint/main.cpp):
/// \snippet sample_checkpoint/main.cpp likelihood
LikelihoodResult log_likelihood(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                                const data::Source& prior, const at::Tensor& x_0,
                                const LikelihoodOptions& options, at::Generator& gen);

/// Generation with likelihood: transports prior draws x_1 (unscaled) from t = 1 to
/// options.t_start and returns x_0 = X_s / alpha_s and its log-density from the same
/// trajectory (the model of LikelihoodOptions::t_start; s = 0 gives X_0 itself).
LikelihoodResult sample_with_log_prob(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                                      const data::Source& prior, const at::Tensor& x_1,
                                      const LikelihoodOptions& options, at::Generator& gen);

/// The score grad log rho_t at points x (time t in [0, 1)): integrates x from t to 1,
/// takes the prior's score there, and carries it back to t by the change of score with
/// the exact (or analytic) divergence. Returns [B, ...].
at::Tensor score(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                 const data::Source& prior, const at::Tensor& x, double t,
                 const LikelihoodOptions& options);

/// Mean and standard error of a per-sample quantity.
struct Estimate {
  /// \var mean
  /// The mean of the values.
  /// \var stderr
  /// Standard error of the mean: standard deviation / sqrt(n) (0 for one value).
  double mean = 0, stderr = 0;
};
/// Mean and standard error of `values` (flattened, float64; at least one).
Estimate mean_and_stderr(const at::Tensor& values);

/// Entropy H(rho_0) = -E log rho_0, estimated from n samples of the flow (with their
/// exact log-densities from the same trajectories), with its standard error.
Estimate entropy(nn::VelocityFieldImpl& field, const path::Schedule& schedule,
                 const data::Source& prior, int64_t n, const LikelihoodOptions& options,
                 at::Generator& gen);

/// Bits per dimension of discrete data with `bins` levels per dimension, dequantized
/// uniformly to (k + u) / bins in [0, 1]^D: (nll + D log bins) / (D log 2), where nll is
/// the negative log-density (nats) of the dequantized point in [0, 1]^D coordinates.
double bits_per_dim(double nll_nats, int64_t dim, int64_t bins = 256);

/// Uniform dequantization of integer levels k in [0, bins): (k + u) / bins, u ~ U[0, 1).
at::Tensor dequantize(const at::Tensor& levels, int64_t bins, at::Generator& gen);

}  // namespace cnf::density
