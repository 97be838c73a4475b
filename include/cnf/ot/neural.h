/// \file
/// cnf/ot/neural.h — neural estimates of W2 (with a transport map) and W1 from samples.
///
/// W2 by input-convex networks (Makkuva, Taghvaei, Oh & Lee 2020, "Optimal transport
/// mapping via input convex neural networks", Thm. 3.3). For source samples x ~ mu and
/// target samples y ~ nu,
///   1/2 W2^2(mu, nu) = 1/2 E|x|^2 + 1/2 E|y|^2 - min_{f convex} max_{g convex} J(f, g),
///   J(f, g) = E_nu f(y) + E_mu [ <grad g(x), x> - f(grad g(x)) ],
/// since max_g of the bracket is f*(x), the convex conjugate (Fenchel-Young, attained at
/// grad g = grad f*). At the saddle point grad g is the optimal (Brenier) map mu -> nu
/// and grad f its inverse. g takes `inner_steps` ascent steps per descent step of f;
/// convexity is kept by projecting the nonnegative weights after every step.
///
/// W1 by a critic (Kantorovich-Rubinstein: W1 = sup_{Lip(h) <= 1} E_mu h - E_nu h) with the
/// gradient penalty of WGAN-GP (Gulrajani et al. 2017): maximize
///   E_mu h(x) - E_nu h(y) - lambda E (|grad h(x_hat)| - 1)^2,  x_hat = u x + (1 - u) y.
/// The penalty is soft: for two shifted Gaussians the optimal critic is linear with slope
/// 1 + W1 / (2 lambda), and its raw gap overshoots W1 by that factor. The reported W1
/// divides the gap by the mean slope |grad h| over interpolates between the two sets (where
/// the penalty acts), which removes that overshoot in the linear case.
///
/// Both train with Adam on minibatches drawn (with replacement) from the given samples,
/// on the device of x, and report the estimate on all the samples.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "cnf/nn/icnn.h"

namespace cnf::ot {

/// Networks and training of neural_w2.
struct NeuralW2Options {
  /// Hidden units of the ICNNs f and g.
  int64_t width = 32;
  /// Hidden layers of f and g.
  int64_t depth = 2;
  /// Descent steps of f; g takes `inner_steps` ascent steps before each.
  int64_t steps = 500;
  /// Ascent steps of g per descent step of f (>= 1).
  int64_t inner_steps = 3;
  /// Samples per minibatch, drawn with replacement.
  int64_t batch_size = 256;
  /// Adam learning rate.
  double lr = 1e-2;
  /// Seeds the minibatches and the weight initialization.
  uint64_t seed = 0;
  /// Throws cnf::Error naming the first invalid field.
  void validate() const;
};

/// The trained ICNNs of neural_w2, the W2 estimate and the learned maps.
struct NeuralW2Result {
  /// \var f
  /// The ICNN f; grad f is the inverse map (target -> source).
  /// \var g
  /// The ICNN g; grad g is the transport map (source -> target).
  nn::ICNN f{nullptr}, g{nullptr};
  /// sqrt of the dual estimate E|x|^2 + E|y|^2 - 2 J(f, g) on all samples.
  double w2 = 0;
  /// E |x - grad g(x)|^2 on the source samples: the cost of the learned map (>= W2^2 up to
  /// the error of its push-forward).
  double map_cost = 0;
  /// The learned transport map grad g (source -> target); not under NoGradGuard.
  at::Tensor map(const at::Tensor& x) const;
  /// Its inverse grad f (target -> source).
  at::Tensor inverse_map(const at::Tensor& y) const;
};

/// Neural W2 between source samples x [n, d] and target samples y [m, d].
NeuralW2Result neural_w2(const at::Tensor& x, const at::Tensor& y,
                         const NeuralW2Options& options = {});

/// Network and training of critic_w1.
struct CriticW1Options {
  /// Hidden units of the critic.
  int64_t width = 64;
  /// Hidden layers of the critic.
  int64_t depth = 2;
  /// Adam steps.
  int64_t steps = 1000;
  /// Samples per minibatch, drawn with replacement.
  int64_t batch_size = 256;
  /// Adam learning rate.
  double lr = 2e-3;
  /// Gradient-penalty weight lambda (Gulrajani et al. use 10).
  double gp_weight = 10.0;
  /// Seeds the minibatches and the weight initialization.
  uint64_t seed = 0;
  /// Throws cnf::Error naming the first invalid field.
  void validate() const;
};

/// The trained critic of critic_w1 and the W1 estimate.
struct CriticW1Result {
  /// The trained critic h.
  nn::Critic critic{nullptr};
  /// The gap divided by the mean slope, see above.
  double w1 = 0;
  /// E_mu h - E_nu h on all samples (the raw WGAN-GP estimate).
  double gap = 0;
  /// Mean |grad h| over interpolates of random pairs of the two sets.
  double slope = 0;
};

/// Critic estimate of W1 between x [n, d] and y [m, d].
CriticW1Result critic_w1(const at::Tensor& x, const at::Tensor& y,
                         const CriticW1Options& options = {});

}  // namespace cnf::ot
