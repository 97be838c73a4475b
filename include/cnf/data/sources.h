/// \file
/// cnf/data/sources.h — distributions to sample from: 2-D toy sets, Gaussian mixtures with
/// exact log-density, the standard normal prior, and tables of samples read from files.
///
/// Every draw takes an explicit generator (reproducible streams that checkpoints save).
/// Samples are float32 [n, dim] unless a dtype is given.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

/// Data: distributions to sample from (2-D toy sets, Gaussian mixtures, the N(0, I) prior,
/// tables, images) and tables of coupled pairs.
namespace cnf::data {

/// A distribution to draw samples from, rows [n, dim]: the data rho_0 and the prior rho_1
/// are both sources. make_source builds one from a spec string.
class Source {
 public:
  virtual ~Source() = default;
  /// n samples [n, dim] drawn with `gen`.
  virtual at::Tensor sample(int64_t n, at::Generator& gen) const = 0;
  /// Dimension D of one (flattened) sample.
  virtual int64_t dim() const = 0;
  /// The spec string that rebuilds this source with make_source.
  virtual std::string spec() const = 0;
  /// Whether log_prob is the exact log-density.
  virtual bool has_log_prob() const { return false; }
  /// Exact log-density of x [n, dim] (float64 recommended); throws when unknown.
  virtual at::Tensor log_prob(const at::Tensor& x) const;
};
/// A shared, immutable source.
using SourcePtr = std::shared_ptr<const Source>;

/// N(0, I) in `dim` dimensions; the default prior rho_1.
class StandardNormal final : public Source {
 public:
  /// N(0, I) in `dim` >= 1 dimensions.
  explicit StandardNormal(int64_t dim);
  at::Tensor sample(int64_t n, at::Generator& gen) const override;
  int64_t dim() const override { return dim_; }
  std::string spec() const override { return "normal"; }
  bool has_log_prob() const override { return true; }
  at::Tensor log_prob(const at::Tensor& x) const override;

 private:
  int64_t dim_;
};

/// The 2-D toy sets of the CNF literature (FFJORD, Grathwohl et al. 2019; OT-CFM, Tong et
/// al. 2023): 8gaussians, moons, circles, checkerboard, pinwheel, 2spirals, swissroll,
/// rings. Each is scaled to roughly unit-to-few standard deviations.
class Toy2D final : public Source {
 public:
  /// The toy set `name`, one of toy_names(); other names list the valid ones.
  explicit Toy2D(std::string name);
  at::Tensor sample(int64_t n, at::Generator& gen) const override;
  int64_t dim() const override { return 2; }
  std::string spec() const override { return name_; }

 private:
  std::string name_;
};
/// The names of the 2-D toy sets, in the order listed at Toy2D.
const std::vector<std::string>& toy_names();

/// sum_k w_k N(mu_k, diag(s_k^2)) in any dimension, with exact log-density.
class GaussianMixture final : public Source {
 public:
  /// weights [K] (positive, normalized here), means [K, D], stds [K, D] (positive).
  GaussianMixture(at::Tensor weights, at::Tensor means, at::Tensor stds, std::string spec = "gmm");
  at::Tensor sample(int64_t n, at::Generator& gen) const override;
  int64_t dim() const override { return means_.size(1); }
  std::string spec() const override { return spec_; }
  bool has_log_prob() const override { return true; }
  at::Tensor log_prob(const at::Tensor& x) const override;
  /// Mixture weights w [K], float64, normalized.
  const at::Tensor& weights() const { return weights_; }
  /// Component means mu [K, D], float64.
  const at::Tensor& means() const { return means_; }
  /// Component standard deviations s [K, D], float64.
  const at::Tensor& stds() const { return stds_; }

 private:
  at::Tensor weights_, means_, stds_;  // float64
  std::string spec_;
};

/// Rows of a table drawn uniformly with replacement.
class Table final : public Source {
 public:
  /// Rows [N, D], non-empty and finite, stored as float32; `spec` names the table in errors
  /// and is what spec() returns.
  Table(at::Tensor rows, std::string spec);
  at::Tensor sample(int64_t n, at::Generator& gen) const override;
  int64_t dim() const override { return rows_.size(1); }
  std::string spec() const override { return spec_; }
  /// The rows, float32 [N, D].
  const at::Tensor& rows() const { return rows_; }

 private:
  at::Tensor rows_;  // float32 [N, D]
  std::string spec_;
};

/// Builds a source from a spec:
///   a toy name ("moons"), "normal" (N(0, I) in `dim` dimensions),
///   "gmm:K" (K components, means drawn from N(0, 3^2 I) by a fixed seed, std 0.5, in `dim`
///   dimensions), a path ending in .npy or .csv (a Table), or an image spec
///   ("fashion-mnist:size=14", "png:FOLDER"; data/images.h), whose training images it draws.
/// `dim` is used by normal and gmm only. For image specs split_source holds out test images.
SourcePtr make_source(const std::string& spec, int64_t dim = 2);

/// Training and held-out data of one spec. Synthetic sources draw the held-out set from
/// an independent stream; tables are split (rows shuffled by `seed`, `holdout_fraction`
/// held out).
struct DataSplit {
  /// The training source (for a table: the rows not held out).
  SourcePtr train;
  at::Tensor holdout;  ///< float32 [n_holdout, D]
};
/// The training source of `spec` (make_source with `dim`) and a held-out set: for synthetic
/// sources `n_holdout` draws from a stream seeded by `seed`; for tables a `holdout_fraction` in
/// (0, 1) of the rows; for image specs up to `n_holdout` test images in model space.
DataSplit split_source(const std::string& spec, int64_t dim, int64_t n_holdout,
                       double holdout_fraction, uint64_t seed);

}  // namespace cnf::data
