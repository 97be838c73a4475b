// Sample-based distances: exact W1/W2 by network simplex, closed-form Gaussian W2
// (Dowson & Landau 1982; Givens & Shortt 1984), and unbiased MMD^2 (Gretton et al. 2012).

#include "cnf/metrics/distances.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/ot/emd.h"
#include "cnf/ot/sinkhorn.h"

namespace cnf::metrics {

namespace {

// Rows of the kernel matrix are formed this many at a time so that mmd2 on tens of
// thousands of samples needs O(block * m) memory rather than O(n * m).
constexpr int64_t kKernelBlock = 1024;

// The median heuristic looks at most this many pooled points (an evenly strided,
// deterministic subset): the median of ~5e5 pairwise distances is already stable.
constexpr int64_t kMedianPoints = 1000;

// Eigenvalues below zero by round-off are tolerated (and later clamped); clearly
// negative ones mean the matrix is no covariance. 1e-6 relative admits the ~1e-7
// relative round-off of float32 covariances, and no genuinely indefinite matrix a
// caller could mean.
void check_psd(const at::Tensor& evals, const char* name) {
  const double scale = evals.abs().max().item<double>();
  const double min_eval = evals.min().item<double>();
  CNF_CHECK(min_eval >= -1e-6 * scale, name, " is not positive semidefinite (smallest eigenvalue ",
            min_eval, "); pass a covariance matrix, e.g. A A^T or a sample covariance");
}

// Symmetric positive semidefinite square root V diag(sqrt(max(lambda, 0))) V^T.
at::Tensor psd_sqrt(const at::Tensor& s, const char* name) {
  auto [evals, evecs] = torch::linalg_eigh(s);
  check_psd(evals, name);
  const at::Tensor root = evals.clamp_min(0).sqrt();
  return torch::matmul(evecs * root.unsqueeze(0), evecs.t());
}

at::Tensor check_cov(const at::Tensor& cov, const char* name, int64_t d) {
  CNF_CHECK(cov.defined(), name, " is an undefined tensor; pass a [d, d] covariance");
  CNF_CHECK(cov.dim() == 2 && cov.size(0) == d && cov.size(1) == d, name, " must be a [", d, ", ",
            d, "] covariance matching the mean, got shape ", cov.sizes());
  check_finite(cov, name);
  at::Tensor c = cov.to(torch::kFloat64);
  const double asym = (c - c.t()).abs().max().item<double>();
  const double size = c.abs().max().item<double>();
  // 1e-6 relative lets float32 round-off through, which we then symmetrize away.
  CNF_CHECK(asym <= 1e-6 * std::max(size, 1e-300), name,
            " is not symmetric (max |S - S^T| = ", asym,
            "); pass a covariance matrix or symmetrize it with (S + S^T) / 2");
  return 0.5 * (c + c.t());
}

void check_samples(const at::Tensor& p, const char* name) {
  CNF_CHECK(p.defined(), name, " is an undefined tensor; pass a [n, d] tensor of samples");
  CNF_CHECK(p.dim() == 2, name, " must be a 2-D tensor [n, d] of samples, got shape ", p.sizes(),
            "; flatten features with .reshape({n, -1})");
  CNF_CHECK(p.size(1) > 0, name, " has no features (shape ", p.sizes(), ")");
  check_finite(p, name);
}

// Squared distances between rows of a [p, d] and b [q, d] (expanded form, clamped at 0).
at::Tensor sq_dists(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor aa = a.pow(2).sum(1, /*keepdim=*/true);
  const at::Tensor bb = b.pow(2).sum(1, /*keepdim=*/true).t();
  return torch::addmm(aa + bb, a, b.t(), /*beta=*/1, /*alpha=*/-2).clamp_min_(0);
}

// sum_{i,j} k(a_i, b_j) for the multi-bandwidth RBF kernel, leaving out i == j when
// `same` (a and b are the same set), as the unbiased estimator requires.
double kernel_sum(const at::Tensor& a, const at::Tensor& b, const std::vector<double>& inv_2s2,
                  bool same) {
  double total = 0;
  for (int64_t start = 0; start < a.size(0); start += kKernelBlock) {
    const int64_t stop = std::min(start + kKernelBlock, a.size(0));
    const at::Tensor d2 = sq_dists(a.slice(0, start, stop), b);
    at::Tensor k = torch::zeros_like(d2);
    for (double g : inv_2s2) k += torch::exp(-g * d2);
    if (same) {
      // Diagonal entries are exactly k(x, x) = number of bandwidths; zero them rather
      // than trust the clamped expansion to give d2 == 0 there.
      k.diagonal(/*offset=*/start).zero_();
    }
    total += k.sum().item<double>();
  }
  return total;
}

}  // namespace

double w2(const at::Tensor& x, const at::Tensor& y) {
  const double cost = ot::emd(x, y, ot::Cost::sqeuclidean).cost;
  return std::sqrt(std::max(cost, 0.0));
}

double w1(const at::Tensor& x, const at::Tensor& y) {
  return ot::emd(x, y, ot::Cost::euclidean).cost;
}

namespace {
double entropic_cost(const at::Tensor& x, const at::Tensor& y, ot::Cost cost, double epsilon) {
  ot::SinkhornOptions o;
  o.epsilon = epsilon;
  const ot::SinkhornResult r = ot::sinkhorn(x, y, cost, o);
  CNF_CHECK(r.converged, r.report());
  return r.cost;
}
}  // namespace

double w2_entropic(const at::Tensor& x, const at::Tensor& y, double epsilon) {
  return std::sqrt(std::max(entropic_cost(x, y, ot::Cost::sqeuclidean, epsilon), 0.0));
}

double w1_entropic(const at::Tensor& x, const at::Tensor& y, double epsilon) {
  return entropic_cost(x, y, ot::Cost::euclidean, epsilon);
}

double gaussian_w2(const at::Tensor& mu1, const at::Tensor& cov1, const at::Tensor& mu2,
                   const at::Tensor& cov2) {
  CNF_CHECK(mu1.defined() && mu1.dim() == 1 && mu1.size(0) > 0,
            "mu1 must be a non-empty 1-D mean vector [d], got ",
            mu1.defined() ? mu1.sizes() : at::IntArrayRef{});
  CNF_CHECK(mu2.defined() && mu2.dim() == 1, "mu2 must be a 1-D mean vector [d], got ",
            mu2.defined() ? mu2.sizes() : at::IntArrayRef{});
  CNF_CHECK(mu1.size(0) == mu2.size(0), "mu1 and mu2 must have the same dimension, got ",
            mu1.size(0), " and ", mu2.size(0));
  check_finite(mu1, "mu1");
  check_finite(mu2, "mu2");
  const int64_t d = mu1.size(0);
  const at::Tensor s1 = check_cov(cov1, "cov1", d).to(torch::kCPU);
  const at::Tensor s2 = check_cov(cov2, "cov2", d).to(torch::kCPU);

  const at::Tensor dmu =
      mu1.to(torch::kCPU, torch::kFloat64) - mu2.to(torch::kCPU, torch::kFloat64);
  const at::Tensor r1 = psd_sqrt(s1, "cov1");
  check_psd(torch::linalg_eigvalsh(s2), "cov2");
  // tr (S1^1/2 S2 S1^1/2)^1/2: the inner matrix is PSD, symmetrized against round-off.
  at::Tensor inner = torch::matmul(torch::matmul(r1, s2), r1);
  inner = 0.5 * (inner + inner.t());
  const at::Tensor inner_evals = torch::linalg_eigvalsh(inner);
  const double cross = inner_evals.clamp_min(0).sqrt().sum().item<double>();

  const double w2sq = dmu.pow(2).sum().item<double>() + s1.trace().item<double>() +
                      s2.trace().item<double>() - 2 * cross;
  // Round-off can push an (almost) zero distance slightly negative.
  return std::sqrt(std::max(w2sq, 0.0));
}

double mmd2(const at::Tensor& x, const at::Tensor& y, std::vector<double> bandwidths) {
  check_samples(x, "x");
  check_samples(y, "y");
  CNF_CHECK(x.size(1) == y.size(1), "x and y must have the same number of features, got x ",
            x.sizes(), " and y ", y.sizes());
  // The unbiased estimator averages over pairs i != j within each sample.
  CNF_CHECK(x.size(0) >= 2 && y.size(0) >= 2,
            "unbiased MMD needs at least 2 samples on each side, got ", x.size(0), " and ",
            y.size(0));
  const at::Tensor x64 = x.to(torch::kFloat64);
  const at::Tensor y64 = y.to(x64.device(), torch::kFloat64);
  const int64_t n = x64.size(0);
  const int64_t m = y64.size(0);

  if (bandwidths.empty()) {
    // Median heuristic (Gretton et al. 2012, Sec. 8): median pairwise distance of the
    // pooled sample, taken at three scales so one bad guess does not blind the test.
    at::Tensor pooled = torch::cat({x64, y64}, 0);
    if (pooled.size(0) > kMedianPoints) {
      const int64_t step = (pooled.size(0) + kMedianPoints - 1) / kMedianPoints;
      pooled = pooled.slice(0, 0, pooled.size(0), step);
    }
    const int64_t p = pooled.size(0);
    const at::Tensor upper =
        torch::triu_indices(p, p, /*offset=*/1, torch::kLong).to(pooled.device());
    const at::Tensor dist = sq_dists(pooled, pooled).index({upper[0], upper[1]}).sqrt();
    double med = dist.median().item<double>();
    // More than half the pairs coincide: fall back to the largest distance; if even that
    // is 0 every point is the same, the two measures agree and MMD is exactly 0.
    if (med <= 0) med = dist.max().item<double>();
    if (med <= 0) return 0.0;
    bandwidths = {0.5 * med, med, 2.0 * med};
  }
  std::vector<double> inv_2s2;
  for (double s : bandwidths) {
    CNF_CHECK(std::isfinite(s) && s > 0, "MMD bandwidths must be finite and > 0, got ", s);
    inv_2s2.push_back(1.0 / (2.0 * s * s));
  }

  // MMD_u^2 of Gretton et al. 2012, Lemma 6.
  const double kxx = kernel_sum(x64, x64, inv_2s2, true) / (static_cast<double>(n) * (n - 1));
  const double kyy = kernel_sum(y64, y64, inv_2s2, true) / (static_cast<double>(m) * (m - 1));
  const double kxy = kernel_sum(x64, y64, inv_2s2, false) / (static_cast<double>(n) * m);
  return kxx + kyy - 2 * kxy;
}

}  // namespace cnf::metrics
