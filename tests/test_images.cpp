// Image data, dequantization and bits/dim, the U-Net, guidance, the Fréchet distance and
// the image CLI (issue #9).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/images.h"
#include "cnf/density/image_density.h"
#include "cnf/io/files.h"
#include "cnf/io/image_grid.h"
#include "cnf/metrics/distances.h"
#include "cnf/metrics/image_quality.h"
#include "cnf/nn/unet.h"
#include "cnf/path/schedule.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

namespace fs = std::filesystem;
using namespace cnf;
using cnf_test::contains;
using cnf_test::run_cnf;

namespace {

std::string tmp_dir() {
  static const std::string d = [] {
    auto p = fs::temp_directory_path() / ("cnf_images_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

// An IDX file: magic 0 0 8 ndim, big-endian sizes, then the bytes.
std::vector<unsigned char> idx_bytes(const std::vector<uint32_t>& shape,
                                     const std::vector<unsigned char>& data) {
  std::vector<unsigned char> b{0, 0, 0x08, static_cast<unsigned char>(shape.size())};
  for (auto n : shape)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(n >> s));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_gzip(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cnf::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Two classes of 4x4 images: bright left half (class 0) or bright top half (class 1),
// with some per-image noise in the levels.
data::ImageSet toy_images(int64_t n) {
  auto gen = make_generator(7);
  auto levels = torch::zeros({n, 1, 4, 4}, torch::kFloat32);
  auto labels = torch::arange(n, torch::kLong) % 2;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 2 == 0)
      levels[i].slice(2, 0, 2).fill_(200);
    else
      levels[i].slice(1, 0, 2).fill_(200);
  }
  levels += torch::randint(0, 40, levels.sizes(), gen, torch::kFloat32);
  data::ImageSet s;
  s.levels = levels.clamp(0, 255).to(torch::kUInt8);
  s.labels = labels;
  s.classes = 2;
  s.origin = "toy";
  return s;
}

}  // namespace

// ------------------------------------------------------------------------------ IDX

TEST(ImagesIdx, ParsesShapeAndValuesRawAndGzip) {
  std::vector<unsigned char> data(12);
  for (int i = 0; i < 12; ++i) data[i] = static_cast<unsigned char>(i * 20);
  auto bytes = idx_bytes({2, 2, 3}, data);
  auto t = data::parse_idx(bytes.data(), bytes.size(), "mem");
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(t[1][0][2].item<int64_t>(), 8 * 20);  // row-major: index 1*6 + 0*3 + 2 = 8

  const auto gz = tmp_dir() + "/ok-idx3-ubyte.gz", raw = tmp_dir() + "/ok-idx3-ubyte";
  write_gzip(gz, bytes);
  std::ofstream(raw, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(torch::equal(data::read_idx(gz), t));
  EXPECT_TRUE(torch::equal(data::read_idx(raw), t));
}

TEST(ImagesIdx, CorruptOrTruncatedFilesGiveClearErrors) {
  std::vector<unsigned char> data(12, 7);
  auto good = idx_bytes({2, 2, 3}, data);
  auto parse = [](std::vector<unsigned char> b) {
    return error_of([&] { data::parse_idx(b.data(), b.size(), "f.idx"); });
  };
  auto cut = good;
  cut.pop_back();
  EXPECT_TRUE(contains(parse(cut), "'f.idx' is truncated") &&
              contains(parse(cut), "announces 12 data bytes, the file holds 11"))
      << parse(cut);
  auto longer = good;
  longer.push_back(1);
  EXPECT_TRUE(contains(parse(longer), "too long")) << parse(longer);
  auto magic = good;
  magic[0] = 0x1f;
  EXPECT_TRUE(contains(parse(magic), "bad magic number")) << parse(magic);
  auto type = good;
  type[2] = 0x0D;  // float
  EXPECT_TRUE(contains(parse(type), "data type 0xd is not supported")) << parse(type);
  EXPECT_TRUE(contains(parse({0, 0, 8, 3, 0, 0}), "its header needs 16 bytes")) << parse({0, 0, 8});
  EXPECT_TRUE(contains(parse({0, 0}), "shorter than the 4-byte magic"));
  auto huge = idx_bytes({60000, 60000, 60000}, {});
  EXPECT_TRUE(contains(parse(huge), "corrupt header")) << parse(huge);

  // A gzip file cut in the middle of its stream.
  std::vector<unsigned char> big(20000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<unsigned char>((i * 7919) % 251);
  const auto gz = tmp_dir() + "/cut-idx3-ubyte.gz";
  write_gzip(gz, idx_bytes({20, 1000}, big));
  const auto size = fs::file_size(gz);
  fs::resize_file(gz, size / 2);
  auto msg = error_of([&] { data::read_idx(gz); });
  EXPECT_TRUE(contains(msg, gz) &&
              (contains(msg, "corrupt or truncated gzip") || contains(msg, "is truncated")))
      << msg;
  EXPECT_TRUE(
      contains(error_of([&] { data::read_idx(tmp_dir() + "/missing.gz"); }), "no such file"));
  // Images and labels that disagree in count.
  const auto img = tmp_dir() + "/a-images.gz", lab = tmp_dir() + "/a-labels.gz";
  write_gzip(img, idx_bytes({2, 2, 3}, data));
  write_gzip(lab, idx_bytes({3}, {0, 1, 2}));
  msg = error_of([&] { data::read_idx_images(img, lab); });
  EXPECT_TRUE(contains(msg, "holds 2 images") && contains(msg, "holds 3 labels")) << msg;
}

TEST(ImagesIdx, FashionMnistLoadsWithSubsetsAndDownsampling) {
  // Debian's dataset-fashion-mnist, installed by scripts/setup.sh.
  auto split = data::load_image_spec("fashion-mnist:size=14:classes=0+7:n=500:test=100");
  const auto& train = split.train->images();
  EXPECT_EQ(train.levels.sizes(), (std::vector<int64_t>{500, 1, 14, 14}));
  EXPECT_EQ(split.test.levels.size(0), 100);
  EXPECT_EQ(train.classes, 10);
  EXPECT_TRUE(((train.labels == 0) | (train.labels == 7)).all().item<bool>());
  EXPECT_EQ(split.train->dim(), 196);
  auto msg = error_of([] { data::load_image_spec("fashion-mnist:size=5"); });
  EXPECT_TRUE(contains(msg, "must divide")) << msg;
  msg = error_of([] { data::load_image_spec("fashion-mnist:colour=1"); });
  EXPECT_TRUE(contains(msg, "unknown key 'colour'")) << msg;
}

TEST(ImagesIdx, DownsampleAveragesBlocks) {
  data::ImageSet s;
  s.levels = torch::tensor({0, 10, 20, 30, 1, 1, 1, 1, 5, 5, 7, 7, 5, 5, 7, 7}, torch::kUInt8)
                 .reshape({1, 1, 4, 4});
  s.labels = torch::zeros({1}, torch::kLong);
  auto d = data::downsample(s, 2);
  // Block means: (0+10+1+1)/4 = 3, (20+30+1+1)/4 = 13, 5, 7.
  EXPECT_TRUE(torch::equal(d.levels.flatten(), torch::tensor({3, 13, 5, 7}, torch::kUInt8)));
}

// ------------------------------------------------------- dequantization and bits/dim

TEST(ImagesDensity, TransformsAndBitsPerDimMatchHandComputation) {
  // bits/dim: D = 4, log p_y = -3, scale transform (log det = 4 log 2):
  // bpd = -(-3 + 4 log 2 - 4 log 256) / (4 log 2) = 3 / (4 log 2) + 7.
  auto bpd = data::bits_per_dim(torch::tensor({-3.0}, torch::kFloat64),
                                torch::tensor({4 * std::log(2.0)}, torch::kFloat64), 4);
  EXPECT_NEAR(bpd.item<double>(), 3 / (4 * std::log(2.0)) + 7, 1e-12);  // float64 round-off

  auto x = torch::tensor({{0.1, 0.5, 0.9}}, torch::kFloat64);
  data::ImageTransform scale;
  auto [ys, lds] = scale.forward(x);
  EXPECT_TRUE(torch::allclose(ys, 2 * x - 1));
  EXPECT_NEAR(lds.item<double>(), 3 * std::log(2.0), 1e-12);
  auto logit = data::parse_image_transform("logit:0.05");
  auto [yl, ldl] = logit.forward(x);
  // By hand: s = 0.05 + 0.9 x, y = log(s / (1 - s)), dy/dx = 0.9 / (s (1 - s)).
  double expect = 0;
  for (double xi : {0.1, 0.5, 0.9}) {
    const double s = 0.05 + 0.9 * xi;
    expect += std::log(0.9 / (s * (1 - s)));
  }
  EXPECT_NEAR(ldl.item<double>(), expect, 1e-12);    // float64 round-off
  EXPECT_NEAR(yl[0][1].item<double>(), 0.0, 1e-12);  // logit(0.5) = 0
  EXPECT_TRUE(torch::allclose(logit.inverse(yl), x, 0, 1e-12));
  EXPECT_TRUE(torch::allclose(scale.inverse(ys), x, 0, 1e-12));
  EXPECT_TRUE(contains(error_of([] { data::parse_image_transform("logit:0.7"); }), "(0, 0.5)"));
}

TEST(ImagesDensity, DequantizedPointsStayInTheirBins) {
  data::ImageSource src(toy_images(8), data::ImageTransform{}, "toy");
  auto gen = make_generator(1);
  const auto& levels = src.images().levels;
  auto [y, log_det] = src.to_model(levels, gen);
  auto x = ((y + 1) / 2 * 256).reshape(levels.sizes());  // back to [0, 256)
  auto k = levels.to(torch::kFloat32);
  // float32 keeps (k + u)/256 to ~1e-7 relative; the bin width is 1.
  EXPECT_TRUE((x >= k - 1e-4).all().item<bool>() && (x < k + 1 + 1e-4).all().item<bool>());
  EXPECT_NEAR(log_det[0].item<double>(), 16 * std::log(2.0), 1e-5);
}

namespace {
// v = 0: the flow is the identity, so rho_0 = N(0, I) exactly.
class ZeroField : public nn::VelocityFieldImpl {
 public:
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override { return 0 * x; }
  std::vector<int64_t> sample_shape() const override { return {16}; }
};
}  // namespace

TEST(ImagesDensity, BitsPerDimOfTheIdentityFlowIsTheGaussianOnes) {
  data::ImageSource src(toy_images(6), data::parse_image_transform("logit"), "toy");
  ZeroField field;
  auto schedule = path::make_schedule("condot", 0.0);
  data::StandardNormal prior(16);
  density::LikelihoodOptions lo;
  lo.solve.method = "euler";
  lo.solve.steps = 2;
  auto gen = make_generator(3);
  auto r =
      density::image_bits_per_dim(field, *schedule, prior, src, src.images().levels, 1, lo, gen, 4);
  // The first draw of a generator with the same seed reproduces the dequantization of the
  // first batch (4 images; exact divergence draws nothing).
  auto gen2 = make_generator(3);
  auto [y, log_det] = src.to_model(src.images().levels.slice(0, 0, 4), gen2);
  auto y64 = y.to(torch::kFloat64);
  auto log_p = -0.5 * y64.pow(2).sum(1) - 8 * std::log(2 * M_PI);
  auto expect =
      -(log_p + log_det.to(torch::kFloat64) - 16 * std::log(256.0)) / (16 * std::log(2.0));
  // float32 logit of values near 0 or 1 loses ~1e-6 relative; bits/dim are O(10).
  EXPECT_TRUE(torch::allclose(r.per_image.slice(0, 0, 4), expect, 1e-5, 1e-5))
      << r.per_image << expect;
  EXPECT_EQ(r.dequant_samples, 1);
}

// ------------------------------------------------------------------------------ U-Net

TEST(ImagesUNet, PreservesShapeAndDependsOnTimeAndLabel) {
  torch::manual_seed(0);
  nn::UNetVelocity net(
      nn::UNetOptions(1, 7, 7).base(8).channel_mult({1, 2}).attention(true).classes(3));
  auto x = torch::randn({5, 49});
  auto t = torch::full({5}, 0.2);
  auto v = net->forward(x, t);
  EXPECT_EQ(v.sizes(), x.sizes());
  EXPECT_EQ(net->forward(x.reshape({5, 1, 7, 7}), t).sizes(), (std::vector<int64_t>{5, 1, 7, 7}));
  auto v2 = net->forward(x, torch::full({5}, 0.8));
  // The output moves by O(0.1) between t = 0.2 and 0.8 at initialization; float32 noise is 1e-6.
  EXPECT_GT((v - v2).abs().max().item<double>(), 1e-3);
  net->set_labels(torch::tensor({0, 1, 2, 0, 1}, torch::kLong));
  auto vc = net->forward(x, t);
  EXPECT_GT((vc - v).abs().max().item<double>(), 1e-3);
  net->set_labels(torch::full({5}, -1, torch::kLong));  // -1: the null label = unlabeled
  EXPECT_TRUE(torch::allclose(net->forward(x, t), v));
  net->set_labels({});
  EXPECT_TRUE(contains(error_of([&] { net->set_labels(torch::tensor({5}, torch::kLong)); }),
                       "not one of the 3 classes"));
  EXPECT_TRUE(contains(error_of([&] {
                         net->forward(torch::randn({2, 50}), t.slice(0, 0, 2));
                       }),
                       "unet for 1x7x7"));
  // Guidance: w = 0 is the conditional model; otherwise (1 + w) cond - w uncond.
  auto labels = torch::tensor({2, 1, 0, 2, 1}, torch::kLong);
  nn::GuidedFieldImpl g(net.ptr(), labels, 0.0);
  net->set_labels(labels);
  auto cond = net->forward(x, t);
  net->set_labels({});
  auto uncond = net->forward(x, t);
  EXPECT_TRUE(torch::allclose(g.forward(x, t), cond, 1e-5, 1e-6));
  g.guidance = 2.0;
  // Batched (2B rows) versus separate passes: GroupNorm is per sample, so only round-off.
  EXPECT_TRUE(torch::allclose(g.forward(x, t), 3 * cond - 2 * uncond, 1e-4, 1e-5));
}

TEST(ImagesUNet, CheckpointRoundTripOfAConditionalUNet) {
  train::FlowSpec spec;
  spec.data = "toy";
  spec.model.arch = "unet";
  spec.model.width = 8;
  spec.model.channel_mult = "1,2";
  spec.model.classes = 2;
  train::TrainOptions o;
  o.steps = 2;
  o.batch_size = 8;
  auto src = std::make_shared<data::ImageSource>(toy_images(16), data::ImageTransform{}, "toy");
  train::Trainer trainer(spec, o, src, std::make_shared<data::StandardNormal>(16));
  trainer.run();
  EXPECT_EQ(trainer.spec().model.height, 4);
  const auto path = tmp_dir() + "/unet.pt";
  trainer.save(path);
  auto c = train::load_checkpoint(path);
  EXPECT_EQ(c.spec.serialize(), trainer.spec().serialize());
  EXPECT_EQ(c.network->classes(), 2);
  auto x = torch::randn({3, 16});
  auto t = torch::full({3}, 0.5);
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::allclose(c.network->forward(x, t), trainer.model()->forward(x, t)));
}

TEST(ImagesTrain, AFewStepsOnATinySubsetLowerTheLoss) {
  // 60 steps of flow matching on the OT path, 4x4 toy images, batch 32. The loss is summed
  // over the 16 pixels: ~ E||x_0 - x_1||^2 ~ 20 at first; the two class means come quickly.
  train::FlowSpec spec;
  spec.data = "toy";
  spec.model.arch = "unet";
  spec.model.width = 8;
  spec.model.channel_mult = "1";
  train::TrainOptions o;
  o.steps = 60;
  o.batch_size = 32;
  o.lr = 3e-3;
  auto src = std::make_shared<data::ImageSource>(toy_images(64), data::ImageTransform{}, "toy");
  train::Trainer trainer(spec, o, src, std::make_shared<data::StandardNormal>(16));
  std::vector<double> losses;
  trainer.run([&](int64_t, const objective::LossResult& r) {
    losses.push_back(r.loss.item<double>());
    return true;
  });
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) {
    first += losses[i] / 10;
    last += losses[losses.size() - 1 - i] / 10;
  }
  RecordProperty("first_loss", std::to_string(first));
  RecordProperty("last_loss", std::to_string(last));
  // Means over 10 steps smooth the minibatch noise (~10% per step); measured 19.7 -> 8.7.
  EXPECT_LT(last, 0.8 * first) << first << " -> " << last;
}

// ----------------------------------------------------------------- sample quality

TEST(ImagesQuality, FrechetDistanceIsZeroForASetWithItselfAndGrowsWithNoise) {
  auto gen = make_generator(11);
  auto a =
      torch::randn({400, 6}, gen, torch::kFloat64) * torch::linspace(0.5, 2, 6, torch::kFloat64);
  // Identical sets: the eigendecomposition leaves ~1e-13 on a trace of ~10.
  EXPECT_NEAR(metrics::frechet_distance(a, a), 0.0, 1e-9);
  // A constant shift c keeps the covariance: FD = |c|^2 exactly.
  auto c = torch::tensor({0.5, -1.0, 0.0, 0.0, 2.0, 0.1}, torch::kFloat64);
  EXPECT_NEAR(metrics::frechet_distance(a, a + c), c.pow(2).sum().item<double>(), 1e-8);
  double previous = 0;
  for (double s : {0.1, 0.3, 1.0}) {
    auto noisy = a + s * torch::randn({400, 6}, gen, torch::kFloat64);
    const double fd = metrics::frechet_distance(a, noisy);
    EXPECT_GT(fd, previous) << "noise " << s;
    previous = fd;
  }
}

namespace {
// The Gaussian fitted to rows x [N, F]: sample mean and unbiased covariance, as
// frechet_distance fits them.
std::pair<torch::Tensor, torch::Tensor> fitted_gaussian(const torch::Tensor& x) {
  auto mean = x.mean(0);
  auto c = x - mean;
  return {mean, c.t().mm(c) / static_cast<double>(x.size(0) - 1)};
}
}  // namespace

TEST(ImagesQuality, FrechetDistanceOfNonCommutingCovariancesMatchesClosedForms) {
  // The cross term tr (S_a^1/2 S_b S_a^1/2)^1/2 reduces to tr S_a^1/2 S_b^1/2 only when S_a
  // and S_b commute; every check above uses commuting (or equal) covariances. Here they do
  // not, and two routes that share no code with metrics compute the cross term.
  auto gen = make_generator(23);
  // 2-D. For a 2 x 2 PSD M with eigenvalues l1, l2: (sqrt l1 + sqrt l2)^2 = tr M + 2 sqrt(det M),
  // and M = S_a^1/2 S_b S_a^1/2 has tr M = tr(S_a S_b), det M = det S_a det S_b.
  {
    auto la = torch::tensor({{1.4, 0.0}, {0.6, 0.5}}, torch::kFloat64);
    auto lb = torch::tensor({{0.7, 0.0}, {-0.4, 1.2}}, torch::kFloat64);
    auto a = torch::randn({500, 2}, gen, torch::kFloat64).mm(la.t()) + 1.0;
    auto b = torch::randn({700, 2}, gen, torch::kFloat64).mm(lb.t()) - 0.5;
    auto [mu_a, s_a] = fitted_gaussian(a);
    auto [mu_b, s_b] = fitted_gaussian(b);
    ASSERT_GT((s_a.mm(s_b) - s_b.mm(s_a)).abs().max().item<double>(), 0.3);  // non-commuting
    const double det = s_a.det().item<double>() * s_b.det().item<double>();
    const double cross = std::sqrt(s_a.mm(s_b).trace().item<double>() + 2 * std::sqrt(det));
    const double expected = (mu_a - mu_b).pow(2).sum().item<double>() + s_a.trace().item<double>() +
                            s_b.trace().item<double>() - 2 * cross;
    const double fd = metrics::frechet_distance(a, b);
    // float64 through two symmetric eigendecompositions of O(1) matrices: ~1e-15 relative;
    // 1e-10 leaves room and is 1e6 times smaller than the commuting formula's error below.
    EXPECT_NEAR(fd, expected, 1e-10 * expected);
    // The commuting formula, with the 2 x 2 square root S^1/2 = (S + sqrt(det S) I) /
    // sqrt(tr S + 2 sqrt(det S)), is off by far more than the tolerance.
    auto root = [](const torch::Tensor& s) {
      const double d = std::sqrt(s.det().item<double>());
      return (s + d * torch::eye(2, torch::kFloat64)) / std::sqrt(s.trace().item<double>() + 2 * d);
    };
    const double commuting = (mu_a - mu_b).pow(2).sum().item<double>() +
                             s_a.trace().item<double>() + s_b.trace().item<double>() -
                             2 * root(s_a).mm(root(s_b)).trace().item<double>();
    EXPECT_GT(std::abs(commuting - expected), 1e-4 * expected);
  }
  // 6-D. The eigenvalues of M are those of the (non-symmetric) product S_a S_b, computed by a
  // general eigensolver; and the squared closed-form Gaussian W2 of metrics, tested in
  // test_ot.cpp against rotations and diagonal cases, is the same number.
  {
    auto la = torch::randn({6, 6}, gen, torch::kFloat64) / 2 + torch::eye(6, torch::kFloat64);
    auto lb = torch::randn({6, 6}, gen, torch::kFloat64) / 2 + torch::eye(6, torch::kFloat64);
    auto a = torch::randn({800, 6}, gen, torch::kFloat64).mm(la.t());
    auto b = torch::randn({900, 6}, gen, torch::kFloat64).mm(lb.t()) + 0.3;
    auto [mu_a, s_a] = fitted_gaussian(a);
    auto [mu_b, s_b] = fitted_gaussian(b);
    ASSERT_GT((s_a.mm(s_b) - s_b.mm(s_a)).abs().max().item<double>(), 0.3);
    auto lambda = torch::real(torch::linalg_eigvals(s_a.mm(s_b)));
    ASSERT_GT(lambda.min().item<double>(), 0.0);
    const double expected = (mu_a - mu_b).pow(2).sum().item<double>() + s_a.trace().item<double>() +
                            s_b.trace().item<double>() - 2 * lambda.sqrt().sum().item<double>();
    const double fd = metrics::frechet_distance(a, b);
    // The non-symmetric eigensolver loses up to cond(eigenvectors) * 1e-16 (cond < 1e3 for
    // these well-conditioned covariances): 1e-9 relative.
    EXPECT_NEAR(fd, expected, 1e-9 * expected);
    const double w2 = metrics::gaussian_w2(mu_a, s_a, mu_b, s_b);
    EXPECT_NEAR(fd, w2 * w2, 1e-9 * expected);
  }
}

TEST(ImagesQuality, ClassifierLearnsTheToyClassesAndRoundTrips) {
  metrics::ClassifierOptions co;
  co.steps = 60;
  co.batch_size = 32;
  co.width = 8;
  co.features = 16;
  auto set = toy_images(64);
  auto net = metrics::train_classifier(set, co);
  auto px = set.levels.to(torch::kFloat32).add(0.5).div(256.0);
  const double acc = metrics::classifier_accuracy(*net, px, set.labels);
  RecordProperty("accuracy", std::to_string(acc));
  // The two patterns differ in half of the pixels: separable; measured accuracy 1.0.
  EXPECT_GE(acc, 0.95);
  const auto path = tmp_dir() + "/cls.pt";
  metrics::save_classifier(*net, path);
  auto back = metrics::load_classifier(path);
  EXPECT_TRUE(torch::allclose(metrics::classifier_features(*back, px),
                              metrics::classifier_features(*net, px)));
  std::ofstream(tmp_dir() + "/bad.pt") << "nope";
  EXPECT_TRUE(contains(error_of([&] { metrics::load_classifier(tmp_dir() + "/bad.pt"); }),
                       "not a cnf classifier"));
}

TEST(ImagesIo, GridPngReadsBackAsAPngFolder) {
  const auto folder = tmp_dir() + "/grid";
  fs::create_directories(folder);
  auto px = torch::zeros({3, 1, 2, 2});
  px[1].fill_(1.0);
  io::image_grid_png(folder + "/g.png", px, 2, 2, 1);
  auto set = data::read_png_folder(folder);
  // 2 columns x 2 rows of 4x4 cells with 1-pixel borders: 11 x 11.
  ASSERT_EQ(set.levels.sizes(), (std::vector<int64_t>{1, 1, 11, 11}));
  EXPECT_EQ(set.levels[0][0][1][1].item<int64_t>(), 0);    // image 0
  EXPECT_EQ(set.levels[0][0][1][6].item<int64_t>(), 255);  // image 1
  EXPECT_EQ(set.levels[0][0][0][0].item<int64_t>(), 128);  // border
  EXPECT_TRUE(
      contains(error_of([&] { data::read_png_folder(tmp_dir() + "/nothing"); }), "does not exist"));
}

// ------------------------------------------------------------------------------- CLI

TEST(ImagesCli, TrainSampleNllAndTheStudyAtToySize) {
  const auto out = tmp_dir() + "/cli";
  const std::string data = "fashion-mnist:size=7:classes=0+1:n=200:test=60";
  auto r = run_cnf("train --data " + data +
                   " --arch unet --width 8 --channel-mult 1,2 "
                   "--classes 10 --steps 5 --batch-size 16 --eval-n 20 --eval-steps 4 --quiet "
                   "--out " +
                   out + "/run");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out + "/run/samples.png"));
  r = run_cnf("sample --ckpt " + out +
              "/run/model.pt -n 20 --steps 4 --label all --guidance 1 "
              "--out " +
              out + "/s.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out + "/s.png")) << r.output;
  r = run_cnf("sample --ckpt " + out + "/run/model.pt -n 4 --label 12 --out " + out + "/t.npy");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "--label 12 is not a class")) << r.output;
  r = run_cnf("nll --ckpt " + out +
              "/run/model.pt -n 8 --method rk4 --steps 4 --divergence "
              "hutchinson --dequant-samples 2 --json " +
              out + "/nll.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "bits/dim = ") && contains(r.output, "2 uniform dequantization"))
      << r.output;
  r = run_cnf("train --data moons --arch unet --steps 2 --quiet --out " + out + "/bad");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "--arch unet needs an image data set")) << r.output;

  r = run_cnf("experiment images --data " + data +
              " --width 8 --steps 6 --batch-size 16 "
              "--checkpoint-every 3 --classifier-steps 10 --bpd-n 8 --fd-n 10 --cond-n 4 "
              "--rtol 1e-2 --atol 1e-2 --stage classifier --quiet --out " +
              out + "/study");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out + "/study/classifier.pt"));
  const std::string rest = " --data " + data +
                           " --width 8 --steps 6 --batch-size 16 "
                           "--checkpoint-every 3 --bpd-n 8 --fd-n 10 --cond-n 4 --rtol 1e-2 "
                           "--atol 1e-2 --quiet --out " +
                           out + "/study";
  r = run_cnf("experiment images --stage train --chunk 3" + rest);  // half the budget
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "fm-ot: 3 / 6 steps")) << r.output;
  r = run_cnf("experiment images --stage all" + rest);  // resumes, then evaluates
  ASSERT_EQ(r.code, 0) << r.output;
  auto md = io::read_text(out + "/study/images.md");
  EXPECT_TRUE(contains(md, "| flow matching, OT path |") &&
              contains(md, "| score matching, VP (diffusion) path |"))
      << md;
  EXPECT_TRUE(fs::exists(out + "/study/fm-ot/samples_by_class.png"));
  r = run_cnf("experiment images --methods gan --quiet --out " + out + "/study");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "unknown method 'gan'")) << r.output;
}

TEST(ImagesCli, SampleGridOfAnImageModelNeedsNoDataSet) {
  // An MLP trained on a PNG folder records its pixel layout: after the folder is gone, the
  // checkpoint alone turns samples into pixels, exactly as the data set's own source does.
  const auto out = tmp_dir() + "/nodata";
  const auto folder = out + "/pngs";
  fs::create_directories(folder);
  auto set = toy_images(40);  // 4 held out: two halves of 2 for the final MMD
  for (int64_t i = 0; i < 40; ++i)
    io::image_grid_png(folder + "/img" + std::to_string(100 + i) + ".png",
                       set.levels.slice(0, i, i + 1).to(torch::kFloat32) / 255.0, 1, 1, 0);
  const std::string data = "png:" + folder + ":transform=logit";
  auto source = data::load_image_spec(data).train;
  auto r = run_cnf("train --data " + data +
                   " --width 16 --depth 2 --steps 3 --batch-size 8 --eval-n 4 --eval-steps 2 "
                   "--quiet --out " +
                   out + "/run");
  ASSERT_EQ(r.code, 0) << r.output;
  fs::rename(folder, out + "/moved");
  r = run_cnf("sample --ckpt " + out + "/run/model.pt -n 6 --steps 2 --out " + out + "/s.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out + "/s.png")) << r.output;
  auto c = train::load_checkpoint(out + "/run/model.pt");
  auto rows = torch::randn({5, 16}, torch::kFloat32);
  // Both routes apply the same float32 logit inverse to the same rows: equal bit for bit.
  EXPECT_TRUE(torch::equal(train::to_pixels(c.spec, rows), source->to_pixels(rows)));
  EXPECT_THROW(train::to_pixels(c.spec, torch::zeros({2, 15})), Error);  // not 1x4x4 images
}

TEST(ImagesUNet, UpPathBlocksAfterTheFirstDoNotExpectTheSkipChannels) {
  // Regression: with res_blocks > 1 every block of a level's up path was built for the
  // skip connection's extra channels, which forward() adds to the first block only, so
  // the network failed on its first forward pass (GroupNorm's channel check).
  for (int64_t blocks : {2, 3}) {
    nn::UNetVelocityImpl net(
        nn::UNetOptions(1, 8, 8).base(8).channel_mult({1, 2}).res_blocks(blocks));
    auto x = torch::randn({2, 64});
    torch::NoGradGuard ng;
    EXPECT_EQ(net.forward(x, torch::full({2}, 0.3)).sizes(), x.sizes()) << blocks << " blocks";
  }
}
