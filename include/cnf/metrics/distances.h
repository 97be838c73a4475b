/// \file
/// cnf/metrics/distances.h — sample-based distances between distributions.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

/// Sample-based measures of generative models: Wasserstein distances, MMD and the Fréchet
/// distance of image features.
namespace cnf::metrics {

/// Exact 2-Wasserstein distance between the empirical measures of x [n, d] and
/// y [m, d]: sqrt(min_P sum P_ij ||x_i - y_j||^2), by network simplex.
double w2(const at::Tensor& x, const at::Tensor& y);

/// Exact 1-Wasserstein distance (Euclidean ground cost).
double w1(const at::Tensor& x, const at::Tensor& y);

/// Entropic estimates: the transport cost of the Sinkhorn plan at `epsilon` (cost units;
/// see cnf/ot/sinkhorn.h), square-rooted for W2. They exceed the exact values by
/// O(epsilon log(1/epsilon)) and are smooth in the samples. Throws cnf::Error with the
/// solver's report when Sinkhorn does not reach its marginal tolerance.
double w2_entropic(const at::Tensor& x, const at::Tensor& y, double epsilon);
/// Entropic W1: the Euclidean transport cost of the Sinkhorn plan at `epsilon`.
double w1_entropic(const at::Tensor& x, const at::Tensor& y, double epsilon);

/// Closed-form W2 between N(mu1, cov1) and N(mu2, cov2):
/// ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), square-rooted.
double gaussian_w2(const at::Tensor& mu1, const at::Tensor& cov1, const at::Tensor& mu2,
                   const at::Tensor& cov2);

/// Unbiased squared maximum mean discrepancy with a sum of Gaussian RBF kernels
/// k(x, y) = sum_s exp(-||x - y||^2 / (2 s^2)) (Gretton et al. 2012). An empty
/// `bandwidths` uses the median pairwise distance of the pooled sample times
/// {0.5, 1, 2}.
double mmd2(const at::Tensor& x, const at::Tensor& y, std::vector<double> bandwidths = {});

}  // namespace cnf::metrics
