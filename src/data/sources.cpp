#include "cnf/data/sources.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/images.h"
#include "cnf/data/pairs.h"
#include "cnf/io/files.h"

namespace cnf::data {

namespace {
const auto kF32 = torch::TensorOptions().dtype(torch::kFloat32);
const double kLog2Pi = std::log(2.0 * M_PI);

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

at::Tensor Source::log_prob(const at::Tensor&) const {
  fail("source '", spec(), "' has no exact log-density; use gmm or normal for ground truth");
}

StandardNormal::StandardNormal(int64_t dim) : dim_(dim) {
  CNF_CHECK(dim >= 1, "normal: dim must be >= 1, got ", dim);
}
at::Tensor StandardNormal::sample(int64_t n, at::Generator& gen) const {
  return torch::randn({n, dim_}, gen, kF32);
}
at::Tensor StandardNormal::log_prob(const at::Tensor& x) const {
  return -0.5 * (x.pow(2).sum(-1) + static_cast<double>(dim_) * kLog2Pi);
}

const std::vector<std::string>& toy_names() {
  static const std::vector<std::string> names{"8gaussians", "moons",    "circles",   "checkerboard",
                                              "pinwheel",   "2spirals", "swissroll", "rings"};
  return names;
}

Toy2D::Toy2D(std::string name) : name_(std::move(name)) {
  const auto& names = toy_names();
  if (std::find(names.begin(), names.end(), name_) == names.end()) {
    std::string valid;
    for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
    fail("unknown data set '", name_, "'; valid names: ", valid,
         ", normal, gmm:K, or a path to a .npy/.csv file");
  }
}

at::Tensor Toy2D::sample(int64_t n, at::Generator& gen) const {
  CNF_CHECK(n >= 0, "sample count must be >= 0, got ", n);
  auto u = [&](int64_t m) { return torch::rand({m}, gen, kF32); };
  auto z = [&](std::vector<int64_t> shape) { return torch::randn(shape, gen, kF32); };
  auto label = [&](int64_t k) { return torch::randint(k, {n}, gen, torch::kLong); };
  if (name_ == "8gaussians") {
    // Eight unit-spread modes on a circle of radius 4, scaled by 1/sqrt(2) (FFJORD).
    auto angle = label(8).to(torch::kFloat32) * (2.0 * M_PI / 8.0);
    auto centers = torch::stack({torch::cos(angle), torch::sin(angle)}, 1) * 4.0;
    return (centers + 0.5 * z({n, 2})) / std::sqrt(2.0);
  }
  if (name_ == "moons") {
    auto theta = u(n) * M_PI;
    auto upper = label(2).to(torch::kFloat32).unsqueeze(1);
    auto a = torch::stack({torch::cos(theta), torch::sin(theta)}, 1);
    auto b = torch::stack({1.0 - torch::cos(theta), 0.5 - torch::sin(theta)}, 1);
    auto p = upper * a + (1.0 - upper) * b + 0.1 * z({n, 2});
    return (p - torch::tensor({0.5f, 0.25f})) * 2.0;
  }
  if (name_ == "circles") {
    auto theta = u(n) * (2.0 * M_PI);
    auto radius = 1.5 + 1.5 * label(2).to(torch::kFloat32);
    auto p = torch::stack({torch::cos(theta), torch::sin(theta)}, 1) * radius.unsqueeze(1);
    return p + 0.08 * z({n, 2});
  }
  if (name_ == "checkerboard") {
    auto x1 = u(n) * 4.0 - 2.0;
    auto x2 = u(n) - label(2).to(torch::kFloat32) * 2.0;
    x2 = x2 + torch::remainder(torch::floor(x1), 2.0);
    return torch::stack({x1, x2}, 1) * 2.0;
  }
  if (name_ == "pinwheel") {
    // Five arms; radial and tangential noise, twisted by exp of the radial coordinate.
    const int64_t arms = 5;
    auto k = label(arms).to(torch::kFloat32);
    auto f = z({n, 2}) * torch::tensor({0.3f, 0.05f}) + torch::tensor({1.0f, 0.0f});
    auto angle = k * (2.0 * M_PI / arms) + 0.25 * torch::exp(f.select(1, 0));
    auto c = torch::cos(angle), s = torch::sin(angle);
    auto x = f.select(1, 0) * c - f.select(1, 1) * s;
    auto y = f.select(1, 0) * s + f.select(1, 1) * c;
    return torch::stack({x, y}, 1) * 2.0;
  }
  if (name_ == "2spirals") {
    auto r = torch::sqrt(u(n)) * (3.0 * M_PI);
    auto sign = label(2).to(torch::kFloat32) * 2.0 - 1.0;
    auto p = torch::stack({-torch::cos(r) * r, torch::sin(r) * r}, 1) * sign.unsqueeze(1);
    return p / 3.0 + 0.1 * z({n, 2});
  }
  if (name_ == "swissroll") {
    auto t = 1.5 * M_PI * (1.0 + 2.0 * u(n));
    auto p = torch::stack({t * torch::cos(t), t * torch::sin(t)}, 1);
    return p / 5.0 + 0.1 * z({n, 2});
  }
  // rings: four concentric circles of radii 0.75, 1.5, 2.25, 3.
  auto theta = u(n) * (2.0 * M_PI);
  auto radius = 0.75 * (1.0 + label(4).to(torch::kFloat32));
  auto p = torch::stack({torch::cos(theta), torch::sin(theta)}, 1) * radius.unsqueeze(1);
  return p + 0.08 * z({n, 2});
}

GaussianMixture::GaussianMixture(at::Tensor weights, at::Tensor means, at::Tensor stds,
                                 std::string spec)
    : spec_(std::move(spec)) {
  CNF_CHECK(means.dim() == 2 && means.size(0) >= 1 && means.size(1) >= 1,
            "gmm means must be [K, D] with K, D >= 1, got ", means.sizes());
  CNF_CHECK(weights.dim() == 1 && weights.size(0) == means.size(0), "gmm weights must be [",
            means.size(0), "], got ", weights.sizes());
  CNF_CHECK(stds.sizes() == means.sizes(), "gmm stds must be ", means.sizes(), ", got ",
            stds.sizes());
  weights_ = weights.to(torch::kFloat64);
  means_ = means.to(torch::kFloat64);
  stds_ = stds.to(torch::kFloat64);
  check_finite(weights_, "gmm weights");
  check_finite(means_, "gmm means");
  check_finite(stds_, "gmm stds");
  CNF_CHECK((weights_ > 0).all().item<bool>(), "gmm weights must be > 0");
  CNF_CHECK((stds_ > 0).all().item<bool>(), "gmm stds must be > 0");
  weights_ = weights_ / weights_.sum();
}

at::Tensor GaussianMixture::sample(int64_t n, at::Generator& gen) const {
  auto k = torch::multinomial(weights_, n, /*replacement=*/true, gen);
  auto z = torch::randn({n, dim()}, gen, torch::kFloat64);
  return (means_.index_select(0, k) + stds_.index_select(0, k) * z).to(torch::kFloat32);
}

at::Tensor GaussianMixture::log_prob(const at::Tensor& x) const {
  CNF_CHECK(x.dim() == 2 && x.size(1) == dim(), "gmm log_prob expects [n, ", dim(), "], got ",
            x.sizes());
  auto xd = x.to(torch::kFloat64).unsqueeze(1);  // [n, 1, D]
  auto zk = (xd - means_.unsqueeze(0)) / stds_.unsqueeze(0);
  auto log_norm = -torch::log(stds_).sum(-1) - 0.5 * static_cast<double>(dim()) * kLog2Pi;  // [K]
  auto comp = -0.5 * zk.pow(2).sum(-1) + log_norm.unsqueeze(0) + torch::log(weights_).unsqueeze(0);
  return torch::logsumexp(comp, 1).to(x.scalar_type());
}

Table::Table(at::Tensor rows, std::string spec) : spec_(std::move(spec)) {
  CNF_CHECK(rows.dim() == 2 && rows.size(0) >= 1 && rows.size(1) >= 1, "table '", spec_,
            "' must be a non-empty [N, D] array, got shape ", rows.sizes());
  check_finite(rows, "table '" + spec_ + "'");
  rows_ = rows.to(torch::kFloat32).contiguous();
}

at::Tensor Table::sample(int64_t n, at::Generator& gen) const {
  auto idx = torch::randint(rows_.size(0), {n}, gen, torch::kLong);
  return rows_.index_select(0, idx);
}

PairTable::PairTable(at::Tensor x_0, at::Tensor x_1, std::string origin)
    : origin_(std::move(origin)) {
  CNF_CHECK(x_0.dim() == 2 && x_0.size(0) >= 1 && x_0.size(1) >= 1, "pairs '", origin_,
            "': x_0 must be a non-empty [N, D] array, got shape ", x_0.sizes());
  CNF_CHECK(x_1.sizes() == x_0.sizes(), "pairs '", origin_, "': x_1 has shape ", x_1.sizes(),
            " but x_0 has ", x_0.sizes(), "; each x_0 row needs its own x_1 row");
  check_finite(x_0, "pairs '" + origin_ + "' x_0");
  check_finite(x_1, "pairs '" + origin_ + "' x_1");
  x_0_ = x_0.to(torch::kCPU, torch::kFloat32).contiguous();
  x_1_ = x_1.to(torch::kCPU, torch::kFloat32).contiguous();
}

std::pair<at::Tensor, at::Tensor> PairTable::sample(int64_t n, at::Generator& gen) const {
  auto idx = torch::randint(x_0_.size(0), {n}, gen, torch::kLong);
  return {x_0_.index_select(0, idx), x_1_.index_select(0, idx)};
}

SourcePtr make_source(const std::string& spec, int64_t dim) {
  CNF_CHECK(!spec.empty(), "empty data spec; use a toy name, normal, gmm:K or a .npy/.csv path");
  if (ends_with(spec, ".npy") || ends_with(spec, ".csv"))
    return std::make_shared<Table>(io::read_table(spec), spec);
  if (is_image_spec(spec)) return load_image_spec(spec).train;
  if (spec == "normal") return std::make_shared<StandardNormal>(dim);
  if (spec.rfind("gmm:", 0) == 0) {
    int64_t k = 0;
    try {
      size_t used = 0;
      k = std::stoll(spec.substr(4), &used);
      CNF_CHECK(used == spec.size() - 4, "");
    } catch (const std::exception&) {
      fail("bad gmm spec '", spec, "'; write gmm:K with K the number of components, e.g. gmm:8");
    }
    CNF_CHECK(k >= 1, "gmm needs K >= 1 components, got ", k);
    CNF_CHECK(dim >= 1, "gmm: dim must be >= 1, got ", dim);
    // A fixed stream: the same spec and dim always name the same mixture.
    auto gen = make_generator(0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(k));
    auto means = 3.0 * torch::randn({k, dim}, gen, torch::kFloat64);
    return std::make_shared<GaussianMixture>(torch::ones({k}, torch::kFloat64), means,
                                             torch::full({k, dim}, 0.5, torch::kFloat64), spec);
  }
  return std::make_shared<Toy2D>(spec);
}

DataSplit split_source(const std::string& spec, int64_t dim, int64_t n_holdout,
                       double holdout_fraction, uint64_t seed) {
  if (is_image_spec(spec)) {
    // Images: train on the training file, hold out (dequantized) test images.
    auto split = load_image_spec(spec);
    const int64_t n = std::min<int64_t>(n_holdout, split.test.levels.size(0));
    auto gen = make_generator(seed ^ 0x5bd1e995ULL);
    return {split.train, split.train->to_model(split.test.levels.slice(0, 0, n), gen).first};
  }
  auto source = make_source(spec, dim);
  auto* table = dynamic_cast<const Table*>(source.get());
  if (table == nullptr) {
    // An independent stream for held-out draws: the training stream never sees it.
    auto gen = make_generator(seed ^ 0x5bd1e995ULL);
    return {source, source->sample(n_holdout, gen)};
  }
  CNF_CHECK(holdout_fraction > 0 && holdout_fraction < 1,
            "holdout fraction must be in (0, 1), got ", holdout_fraction);
  const int64_t n = table->rows().size(0);
  const int64_t n_hold = std::max<int64_t>(1, static_cast<int64_t>(n * holdout_fraction));
  CNF_CHECK(n - n_hold >= 1, "table '", spec, "' has ", n,
            " rows: too few to hold out data; provide at least 2 rows");
  auto gen = make_generator(seed ^ 0x5bd1e995ULL);
  auto perm = torch::randperm(n, gen, torch::kLong);
  auto rows = table->rows().index_select(0, perm);
  return {std::make_shared<Table>(rows.slice(0, n_hold), spec), rows.slice(0, 0, n_hold)};
}

}  // namespace cnf::data
