#include "cnf/metrics/image_quality.h"

#include <torch/torch.h>

#include <fstream>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/io/files.h"

namespace cnf::metrics {

namespace {
// Symmetric PSD square root through eigh; tiny negative eigenvalues (round-off) are cut.
at::Tensor sqrt_psd(const at::Tensor& m) {
  auto [values, vectors] = torch::linalg::eigh(0.5 * (m + m.t()), "L");
  return torch::matmul(vectors * values.clamp_min(0).sqrt().unsqueeze(0), vectors.t());
}

at::Tensor covariance(const at::Tensor& x, const at::Tensor& mean) {
  auto c = x - mean.unsqueeze(0);
  return torch::matmul(c.t(), c) / static_cast<double>(std::max<int64_t>(x.size(0) - 1, 1));
}
}  // namespace

double frechet_distance(const at::Tensor& a_in, const at::Tensor& b_in) {
  CNF_CHECK(a_in.dim() == 2 && b_in.dim() == 2 && a_in.size(1) == b_in.size(1),
            "frechet_distance needs feature matrices [N, F] and [M, F], got ", a_in.sizes(),
            " and ", b_in.sizes());
  CNF_CHECK(a_in.size(0) >= 2 && b_in.size(0) >= 2, "frechet_distance needs >= 2 rows per set");
  auto a = a_in.to(torch::kFloat64).cpu(), b = b_in.to(torch::kFloat64).cpu();
  auto mu_a = a.mean(0), mu_b = b.mean(0);
  auto s_a = covariance(a, mu_a), s_b = covariance(b, mu_b);
  auto root_a = sqrt_psd(s_a);
  auto cross = sqrt_psd(torch::matmul(torch::matmul(root_a, s_b), root_a));
  const double fd =
      (mu_a - mu_b).pow(2).sum().item<double>() + (s_a + s_b - 2 * cross).trace().item<double>();
  return std::max(fd, 0.0);  // round-off can leave -1e-12 for identical sets
}

ImageClassifierImpl::ImageClassifierImpl(int64_t c, int64_t h, int64_t w, int64_t k, int64_t cw,
                                         int64_t f)
    : channels(c), height(h), width(w), classes(k), conv_width(cw), n_features(f) {
  CNF_CHECK(c >= 1 && h >= 1 && w >= 1 && k >= 2 && cw >= 1 && f >= 1,
            "classifier needs a positive image shape, >= 2 classes and positive widths, got ", c,
            "x", h, "x", w, ", ", k, " classes");
  using torch::nn::Conv2dOptions;
  conv1 = register_module("conv1", torch::nn::Conv2d(Conv2dOptions(c, cw, 3).padding(1)));
  conv2 = register_module("conv2",
                          torch::nn::Conv2d(Conv2dOptions(cw, 2 * cw, 3).padding(1).stride(2)));
  conv3 = register_module("conv3",
                          torch::nn::Conv2d(Conv2dOptions(2 * cw, 2 * cw, 3).padding(1).stride(2)));
  fc = register_module("fc", torch::nn::Linear(2 * cw, f));
  head = register_module("head", torch::nn::Linear(f, k));
}

torch::Tensor ImageClassifierImpl::features(const torch::Tensor& pixels) {
  auto x = pixels.reshape({pixels.size(0), channels, height, width}).to(torch::kFloat32);
  x = (x - 0.5) * 2;  // centred inputs train faster
  x = torch::relu(conv1(x));
  x = torch::relu(conv2(x));
  x = torch::relu(conv3(x));
  return torch::relu(fc(x.mean({2, 3})));
}

torch::Tensor ImageClassifierImpl::forward(const torch::Tensor& pixels) {
  return head(features(pixels));
}

ImageClassifier train_classifier(const data::ImageSet& train, const ClassifierOptions& o,
                                 const std::function<void(int64_t, double)>& on_step) {
  CNF_CHECK(train.classes >= 2, "the classifier needs labeled images with >= 2 classes; '",
            train.origin, "' has ", train.classes);
  CNF_CHECK(o.steps >= 1 && o.batch_size >= 1 && o.lr > 0, "classifier options: steps, ",
            "batch_size and lr must be positive, got ", o.steps, ", ", o.batch_size, ", ", o.lr);
  auto gen = make_generator(o.seed);
  torch::manual_seed(o.seed);  // weight initialization draws from the global generator
  ImageClassifier net(train.levels.size(1), train.levels.size(2), train.levels.size(3),
                      train.classes, o.width, o.features);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(o.lr));
  net->train();
  for (int64_t step = 1; step <= o.steps; ++step) {
    auto idx = torch::randint(train.levels.size(0), {o.batch_size}, gen, torch::kLong);
    auto k = train.levels.index_select(0, idx).to(torch::kFloat32);
    auto x = (k + torch::rand(k.sizes(), gen, k.options())) / 256.0;
    auto y = train.labels.index_select(0, idx);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    if (on_step) on_step(step, loss.item<double>());
  }
  net->eval();
  return net;
}

at::Tensor classifier_features(ImageClassifierImpl& c, const at::Tensor& pixels) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < pixels.size(0); i += 500)
    out.push_back(c.features(pixels.slice(0, i, std::min<int64_t>(i + 500, pixels.size(0)))));
  return torch::cat(out);
}

double classifier_accuracy(ImageClassifierImpl& c, const at::Tensor& pixels,
                           const at::Tensor& labels) {
  torch::NoGradGuard no_grad;
  CNF_CHECK(pixels.size(0) == labels.size(0) && pixels.size(0) >= 1,
            "classifier_accuracy needs as many labels as images, got ", pixels.size(0), " and ",
            labels.size(0));
  int64_t right = 0;
  for (int64_t i = 0; i < pixels.size(0); i += 500) {
    const int64_t j = std::min<int64_t>(i + 500, pixels.size(0));
    auto pred = c.forward(pixels.slice(0, i, j)).argmax(1);
    right += (pred == labels.slice(0, i, j).to(pred.device())).sum().item<int64_t>();
  }
  return static_cast<double>(right) / static_cast<double>(pixels.size(0));
}

void save_classifier(ImageClassifierImpl& c, const std::string& path) {
  torch::serialize::OutputArchive ar, weights;
  ar.write("format", c10::IValue(std::string("cnf-classifier-1")));
  ar.write("shape",
           torch::tensor({c.channels, c.height, c.width, c.classes, c.conv_width, c.n_features}));
  c.save(weights);
  ar.write("weights", weights);
  io::write_atomic(path, [&](std::ostream& os) { ar.save_to(os); });
}

ImageClassifier load_classifier(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    CNF_CHECK(probe.good(), "cannot open classifier '", path,
              "'; write one with cnf experiment images --stage classifier");
  }
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(path);
  } catch (const std::exception& e) {
    std::string why = e.what();
    fail("classifier '", path, "' is truncated or not a cnf classifier (",
         why.substr(0, why.find('\n')), ")");
  }
  c10::IValue format;
  CNF_CHECK(ar.try_read("format", format) && format.isString() &&
                format.toStringRef() == "cnf-classifier-1",
            "'", path, "' is not a cnf classifier file (format cnf-classifier-1)");
  at::Tensor shape;
  CNF_CHECK(ar.try_read("shape", shape) && shape.numel() == 6, "classifier '", path,
            "' has no shape record");
  auto s = shape.to(torch::kLong);
  auto v = [&](int i) { return s[i].item<int64_t>(); };
  ImageClassifier c(v(0), v(1), v(2), v(3), v(4), v(5));
  torch::serialize::InputArchive weights;
  CNF_CHECK(ar.try_read("weights", weights), "classifier '", path, "' has no weights");
  c->load(weights);
  c->eval();
  return c;
}

}  // namespace cnf::metrics
