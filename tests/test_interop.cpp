// TorchScript export and import (cnf/interop/torchscript.h): every schedule's TorchScript
// form equals the C++ one; exported modules run in plain LibTorch and give cnf's velocity
// and score; imported modules map their time convention and parameterization; bad modules
// fail with errors that name the file.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cctype>
#include <cmath>
#include <filesystem>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/images.h"
#include "cnf/data/sources.h"
#include "cnf/interop/torchscript.h"
#include "cnf/io/files.h"
#include "cnf/nn/unet.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/parameterized.h"
#include "cnf/sde/samplers.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

using namespace cnf;
using cnf_test::contains;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  const auto dir =
      fs::temp_directory_path() / ("cnf-interop-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Max |a - b| / max(1, |b|) over all entries.
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto b64 = b.to(torch::kFloat64);
  return ((a.to(torch::kFloat64) - b64).abs() / b64.abs().clamp_min(1.0)).max().item<double>();
}

// A checkpoint trained for a few steps (weights away from their initialization).
std::string trained(const std::string& dir, const std::string& name, train::FlowSpec spec,
                    const std::string& data = "moons", int64_t dim = 2, double ema = 0.9) {
  train::TrainOptions o;
  o.steps = 30;
  o.batch_size = 64;
  o.ema_decay = ema;
  auto source = data::make_source(data, dim);
  train::Trainer trainer(spec, o, source, data::make_source("normal", source->dim()));
  trainer.run();
  const std::string path = dir + "/" + name + ".pt";
  trainer.save(path);
  return path;
}

torch::Tensor call(torch::jit::Module& m, const std::string& method, const torch::Tensor& x,
                   const torch::Tensor& t) {
  return m.get_method(method)({x, t}).toTensor();
}

}  // namespace

class ScheduleTorchScript : public ::testing::TestWithParam<std::string> {};

TEST_P(ScheduleTorchScript, EqualsTheCxxCoefficients) {
  // Registry defaults plus non-default parameters where the schedule has them.
  std::vector<path::SchedulePtr> cases{path::make_schedule(GetParam())};
  if (GetParam() == "condot") cases.push_back(std::make_shared<path::CondOT>(0.05));
  if (GetParam() == "vp") cases.push_back(std::make_shared<path::VP>(0.5, 7.0));
  if (GetParam() == "subvp") cases.push_back(std::make_shared<path::SubVP>(0.2, 12.0));
  if (GetParam() == "ve") cases.push_back(std::make_shared<path::VE>(0.002, 80.0));
  auto t = torch::linspace(1e-3, 1.0, 97, torch::kFloat64);
  for (const auto& s : cases) {
    std::string src = "def f(t: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:\n";
    std::istringstream lines(s->torchscript());
    for (std::string line; std::getline(lines, line);) src += "    " + line + "\n";
    src += "    return alpha, sigma, d_alpha, d_sigma\n";
    auto cu = torch::jit::compile(src);
    auto out = cu->run_method("f", t).toTuple()->elements();
    auto v = (*s)(t);
    const std::vector<torch::Tensor> cxx{v.alpha_t, v.sigma_t, v.d_alpha_t, v.d_sigma_t};
    for (size_t k = 0; k < 4; ++k)
      // Same float64 operations in the same order up to literal rounding (17 digits).
      EXPECT_LT(rel_err(out[k].toTensor(), cxx[k]), 1e-13) << s->describe() << " coefficient " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(AllSchedules, ScheduleTorchScript,
                         ::testing::ValuesIn(path::schedules().names()), [](const auto& info) {
                           std::string name;
                           for (char c : info.param)
                             name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(Interop, ExportedNetworksRunInLibTorchAndGiveCnfsVelocity) {
  const auto dir = temp_dir("export");
  struct Case {
    std::string name;
    train::FlowSpec spec;
    std::string data = "moons";
    int64_t dim = 2;
  };
  std::vector<Case> cases;
  {
    Case c{"mlp-selu", {}};
    cases.push_back(c);
    c = {"mlp-fourier-gelu", {}};
    c.spec.model.time_embedding = "fourier";
    c.spec.model.activation = "gelu";
    cases.push_back(c);
    c = {"hollow-tanh", {}, "gmm:3", 3};
    c.spec.model.arch = "hollow";
    c.spec.model.width = 8;
    c.spec.model.depth = 2;
    c.spec.model.activation = "tanh";
    cases.push_back(c);
    c = {"stacked-mlp-softplus", {}};
    c.spec.model.blocks = 3;
    c.spec.model.activation = "softplus";
    cases.push_back(c);
    c = {"score-vp-noise", {}};  // a noise-predicting score model: velocity by conversion
    c.spec.schedule = "vp";
    c.spec.objective = "score";
    c.spec.model.activation = "silu";
    cases.push_back(c);
    c = {"score-ve-v", {}};  // v-prediction: the module's convert reads it (affine.h)
    c.spec.schedule = "ve";
    c.spec.objective = "score";
    c.spec.param = "v";
    cases.push_back(c);
    c = {"fm-subvp-data-relu", {}};
    c.spec.schedule = "subvp";
    c.spec.param = "data";
    c.spec.model.activation = "relu";
    cases.push_back(c);
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto ckpt = trained(dir, c.name, c.spec, c.data, c.dim);
    const auto out = dir + "/" + c.name + ".ts";
    interop::export_torchscript(ckpt, out);
    auto flow = train::load_checkpoint(ckpt);
    auto m = torch::jit::load(out);
    EXPECT_EQ(m.attr("time_convention").toStringRef(), "data-at-0");
    EXPECT_EQ(m.attr("predicts").toStringRef(), flow.spec.param);
    EXPECT_EQ(m.attr("schedule").toStringRef(), flow.spec.schedule);
    EXPECT_EQ(m.attr("data_shape").toIntVector(), std::vector<int64_t>{c.dim});
    at::Generator gen = make_generator(3);
    auto x = torch::randn({257, c.dim}, gen);
    // Times over (0, 1] with each stacked block's boundary hit exactly.
    auto t = torch::rand({257}, gen);
    t.index_put_({torch::indexing::Slice(0, 4)}, torch::tensor({1.0 / 3, 2.0 / 3, 1.0, 0.5}));
    torch::NoGradGuard no_grad;
    // float32: the fused CPU kernels against LibTorch's ops (1e-5: float32 products in a
    // different order, through conversions dividing by det ~ 1e-2 near the ends).
    auto v_cnf = flow.model->forward(x, t);
    EXPECT_LT(rel_err(call(m, "forward", x, t), v_cnf), 1e-5);
    EXPECT_LT(rel_err(call(m, "velocity", x, t), v_cnf), 1e-5);
    EXPECT_LT(rel_err(call(m, "network", x, t), flow.network->forward(x, t)), 1e-5);
    // float64: the same ops in the same order (1e-12: rounding of the two routes' sums).
    flow.network->to(torch::kFloat64);
    m.to(torch::kFloat64);
    auto x64 = x.to(torch::kFloat64), t64 = t.to(torch::kFloat64);
    auto v64 = flow.model->forward(x64, t64);
    EXPECT_LT(rel_err(call(m, "forward", x64, t64), v64), 1e-12);
    auto score = sde::predict(*flow.network, flow.spec.network_param(), *flow.spec.make_schedule(),
                              path::conversion_range(*flow.spec.make_schedule()), x64, t64,
                              path::Param::score);
    EXPECT_LT(rel_err(call(m, "score", x64, t64), score), 1e-12);
  }
  fs::remove_all(dir);
}

TEST(Interop, ExportTakesEmaOrRawWeights) {
  const auto dir = temp_dir("weights");
  const auto ckpt = trained(dir, "m", {}, "moons", 2, 0.5);
  interop::ExportOptions raw;
  raw.weights = interop::Weights::raw;
  interop::export_torchscript(ckpt, dir + "/ema.ts");
  interop::export_torchscript(ckpt, dir + "/raw.ts", raw);
  auto x = torch::randn({16, 2}), t = torch::rand({16});
  auto ema_m = torch::jit::load(dir + "/ema.ts"), raw_m = torch::jit::load(dir + "/raw.ts");
  torch::NoGradGuard no_grad;
  auto ema_flow = train::load_checkpoint(ckpt),
       raw_flow = train::load_checkpoint(ckpt, torch::kCPU, {}, false);
  EXPECT_LT(rel_err(call(ema_m, "forward", x, t), ema_flow.model->forward(x, t)), 1e-5);
  EXPECT_LT(rel_err(call(raw_m, "forward", x, t), raw_flow.model->forward(x, t)), 1e-5);
  // The two weight sets differ after 30 steps with decay 0.5, so the check above can fail.
  EXPECT_GT(
      (call(ema_m, "forward", x, t) - call(raw_m, "forward", x, t)).abs().max().item<double>(),
      1e-4);
  EXPECT_EQ(raw_m.attr("weights").toStringRef(), "raw");
  fs::remove_all(dir);
}

TEST(Interop, ImportedModuleMapsTheDataAtOneConvention) {
  // u(x, s) in the flow_matching convention (data at s = 1): cnf must see
  // v(x, t) = -u(x, 1 - t), and a noise prediction unchanged at s = 1 - t.
  const auto dir = temp_dir("import");
  torch::jit::Module m("__torch__.Field");
  m.register_parameter("a", torch::tensor({0.5f, -2.0f}), false);
  m.define(R"(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    return self.a * x * t.unsqueeze(1) + torch.sin(x)
)");
  m.save(dir + "/field.pt");
  auto x = torch::randn({8, 2}), t = torch::rand({8});
  auto u = [&](const torch::Tensor& s) {
    return torch::tensor({0.5f, -2.0f}) * x * s.unsqueeze(1) + torch::sin(x);
  };
  interop::ImportOptions o;
  o.file = dir + "/field.pt";
  o.dim = 2;
  o.time = interop::TimeConvention::data_at_1;
  auto flow = interop::import_torchscript(o);
  torch::NoGradGuard no_grad;
  EXPECT_LT(rel_err(flow.model->forward(x, t), -u(1.0 - t)), 1e-6);  // float32 rounding
  o.time = interop::TimeConvention::data_at_0;
  EXPECT_LT(rel_err(interop::import_torchscript(o).model->forward(x, t), u(t)), 1e-6);
  o.time = interop::TimeConvention::data_at_1;
  o.predicts = path::Param::noise;
  o.schedule = "vp";
  auto noise = interop::import_torchscript(o);
  EXPECT_LT(rel_err(noise.network->forward(x, t), u(1.0 - t)), 1e-6);
  EXPECT_EQ(noise.spec.network_param(), path::Param::noise);
  // Its parameters are cnf's: an optimizer over network->parameters() would train them.
  EXPECT_EQ(noise.network->parameters().size(), 1u);
  fs::remove_all(dir);
}

TEST(Interop, NoisePredictingModuleSamplesAGaussianWithDpmSolver) {
  // Data N(m, s^2 I) on the VP path: the exact noise prediction is
  // E[x_1 | x_t] = sigma_t (x_t - alpha_t m) / (alpha_t^2 s^2 + sigma_t^2). Written as a
  // plain TorchScript module (with the VP coefficients in its own code) and declared
  // --predicts noise, DPM-Solver++(2M) must reach the data's mean and standard deviation.
  const auto dir = temp_dir("dpm");
  const double m = 1.5, s = 0.5;
  path::VP vp;
  std::string src = "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n";
  std::istringstream lines(vp.torchscript());
  for (std::string line; std::getline(lines, line);) src += "    " + line + "\n";
  src += "    alpha = alpha.unsqueeze(1)\n    sigma = sigma.unsqueeze(1)\n";
  src += "    return sigma * (x - alpha * " + std::to_string(m) + ") / (alpha * alpha * " +
         std::to_string(s * s) + " + sigma * sigma)\n";
  torch::jit::Module mod("__torch__.GaussianNoise");
  mod.define(src);
  mod.save(dir + "/noise.pt");
  interop::ImportOptions o;
  o.file = dir + "/noise.pt";
  o.dim = 2;
  o.predicts = path::Param::noise;
  o.schedule = "vp";
  auto flow = interop::import_torchscript(o);
  sde::SamplerOptions so;
  so.sampler = sde::Sampler::dpmpp_2m;
  so.steps = 25;
  at::Generator gen = make_generator(11);
  const int64_t n = 40000;
  auto x_1 = torch::randn({n, 2}, gen) * sde::start_scale(*flow.spec.make_schedule(), so);
  auto r = sde::sample(*flow.network, flow.spec.network_param(), *flow.spec.make_schedule(), x_1,
                       so, gen);
  // Monte-Carlo standard errors: mean s / sqrt(n) = 2.5e-3, std s / sqrt(2n) = 1.8e-3; 5
  // of them, plus the sampler's and VP's end-point error (alpha_1 = 6.6e-3 keeps 0.7% of
  // the start's scale): 2e-2 on each.
  EXPECT_NEAR(r.x.mean().item<double>(), m, 2e-2);
  EXPECT_NEAR(r.x.std().item<double>(), s, 2e-2);
  fs::remove_all(dir);
}

TEST(Interop, BadModulesAreClearErrors) {
  const auto dir = temp_dir("bad");
  auto save = [&](const std::string& name, const std::string& src) {
    torch::jit::Module m("__torch__.Bad");
    if (!src.empty()) m.define(src);
    m.save(dir + "/" + name);
    return dir + "/" + name;
  };
  auto expect_error = [&](const std::string& file, const std::string& part) {
    interop::ImportOptions o;
    o.file = file;
    o.dim = 2;
    try {
      interop::import_torchscript(o);
      ADD_FAILURE() << file << " imported";
    } catch (const cnf::Error& e) {
      EXPECT_TRUE(contains(e.what(), file) && contains(e.what(), part)) << e.what();
    }
  };
  expect_error(save("none.pt", ""), "has no forward method");
  expect_error(save("arity.pt", "def forward(self, x: Tensor) -> Tensor:\n    return x\n"),
               "cnf needs forward(x, t)");
  expect_error(
      save("shape.pt", "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n    return x[:, :1]\n"),
      "it must return one value per coordinate");
  expect_error(
      save("nan.pt",
           "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n    return x / 0.0 * 0.0\n"),
      "non-finite");
  expect_error(
      save("tuple.pt",
           "def forward(self, x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:\n    return x, x\n"),
      "not a Tensor");
  cnf::io::write_text_atomic(dir + "/text.pt", "not a zip archive");
  expect_error(dir + "/text.pt", "truncated or damaged");
  expect_error(dir + "/missing.pt", "cannot open");
  // The command refuses a malformed --model before any work.
  auto r = cnf_test::run_cnf("sample --model " + dir + "/none.pt --out " + dir + "/x.npy");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "--model must be torchscript:FILE")) << r.output;
  r = cnf_test::run_cnf("sample --model torchscript:" + dir + "/shape.pt --time data-at-2 --out " +
                        dir + "/x.npy");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "data-at-0") && contains(r.output, "data-at-1")) << r.output;
  fs::remove_all(dir);
}

TEST(Interop, CommandExportsAndSamplesTheImportedModule) {
  // cnf export, then cnf sample of the export (imported back) from the same noise as cnf
  // sample of the checkpoint: the same points.
  const auto dir = temp_dir("cli");
  const auto ckpt = trained(dir, "m", {});
  auto r = cnf_test::run_cnf("export --ckpt " + ckpt + " --out " + dir + "/m.ts");
  ASSERT_EQ(r.code, 0) << r.output;
  auto noise = torch::randn({64, 2});
  cnf::io::write_npy(dir + "/noise.npy", noise);
  r = cnf_test::run_cnf("sample --ckpt " + ckpt + " --noise " + dir +
                        "/noise.npy --method rk4 --steps 10 --out " + dir + "/a.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  r = cnf_test::run_cnf("sample --model torchscript:" + dir + "/m.ts --noise " + dir +
                        "/noise.npy --method rk4 --steps 10 --out " + dir + "/b.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  // float32: fused kernels vs LibTorch's ops through 40 evaluations.
  EXPECT_LT(rel_err(cnf::io::read_npy(dir + "/b.npy"), cnf::io::read_npy(dir + "/a.npy")), 1e-4);
  r = cnf_test::run_cnf("export --ckpt " + ckpt + " --out " + dir + "/x.ts --weights newest");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "ema") && contains(r.output, "raw")) << r.output;
  fs::remove_all(dir);
}

TEST(Interop, UNetTorchScriptEqualsItsForwardWithAndWithoutLabels) {
  // Odd image size (7 -> 4 -> 7: the up-sampling branch), two residual blocks per level,
  // attention, and three classes; weights perturbed away from their zero-ish init.
  for (bool attention : {false, true}) {
    SCOPED_TRACE(attention ? "attention" : "no attention");
    torch::manual_seed(5);
    auto net = std::make_shared<nn::UNetVelocityImpl>(nn::UNetOptions(2, 7, 7)
                                                          .base(8)
                                                          .channel_mult({1, 2})
                                                          .res_blocks(2)
                                                          .attention(attention)
                                                          .classes(3));
    torch::jit::Module m("__torch__.U");
    {
      torch::NoGradGuard no_grad;
      for (auto& p : net->parameters()) p.add_(0.1 * torch::randn_like(p));
    }
    for (const auto& p : net->named_parameters())
      m.register_parameter(nn::torchscript_name(p.key()), p.value().detach(), false);
    for (const auto& b : net->named_buffers())
      m.register_buffer(nn::torchscript_name(b.key()), b.value().detach());
    m.define(net->torchscript("network", ""));
    auto x = torch::randn({5, 98}), t = torch::rand({5});
    auto labels = torch::tensor({0, 1, 2, -1, 1}, torch::kLong);
    torch::NoGradGuard no_grad;
    // float32, the same ops in the same order: 1e-5 for conv/group-norm reductions.
    EXPECT_LT(rel_err(call(m, "network", x, t), net->forward(x, t)), 1e-5);
    net->set_labels(labels);
    auto cond = net->forward(x, t);
    net->set_labels({});
    EXPECT_LT(rel_err(m.get_method("network_labeled")({x, t, labels}).toTensor(), cond), 1e-5);
  }
}

TEST(Interop, ExportedConditionalImageFlowGuidesAndMapsToPixels) {
  const auto dir = temp_dir("unet");
  train::FlowSpec spec;
  spec.data = "fashion-mnist:size=7:n=64:transform=logit:0.001";
  spec.model.arch = "unet";
  spec.model.width = 8;
  spec.model.channel_mult = "1,2";
  spec.model.classes = 10;
  spec.schedule = "vp";
  spec.objective = "score";
  train::TrainOptions o;
  o.steps = 3;
  o.batch_size = 8;
  auto images = data::make_source(spec.data);
  train::Trainer trainer(spec, o, images, data::make_source("normal", images->dim()));
  trainer.run();
  trainer.save(dir + "/u.pt");
  interop::export_torchscript(dir + "/u.pt", dir + "/u.ts");
  auto m = torch::jit::load(dir + "/u.ts");
  EXPECT_EQ(m.attr("classes").toInt(), 10);
  EXPECT_EQ(m.attr("pixel_transform").toStringRef(), "logit:0.001");
  EXPECT_EQ(m.attr("image_shape").toIntVector(), (std::vector<int64_t>{1, 7, 7}));
  auto flow = train::load_checkpoint(dir + "/u.pt");
  auto x = torch::randn({4, 49}), t = torch::rand({4}) * 0.9 + 0.05;
  auto labels = torch::tensor({3, 7, -1, 0}, torch::kLong);
  torch::NoGradGuard no_grad;
  auto guided = std::make_shared<nn::GuidedFieldImpl>(flow.network, labels, 2.0);
  auto want = sde::velocity_view(guided, flow.spec.network_param(), flow.spec.make_schedule())
                  ->forward(x, t);
  auto got = m.get_method("velocity_guided")({x, t, labels, 2.0}).toTensor();
  // float32 through a noise -> velocity conversion (division by sigma_t >= 0.05): 1e-4.
  EXPECT_LT(rel_err(got, want), 1e-4);
  EXPECT_LT(rel_err(call(m, "forward", x, t), flow.model->forward(x, t)), 1e-4);
  auto source = std::dynamic_pointer_cast<const data::ImageSource>(images);
  ASSERT_TRUE(source);
  EXPECT_LT(rel_err(m.get_method("to_pixels")({x}).toTensor(), source->to_pixels(x)), 1e-6);
  fs::remove_all(dir);
}

TEST(Interop, StateDictExportLoadsItsNamedTensors) {
  const auto dir = temp_dir("state");
  const auto ckpt = trained(dir, "m", {});
  interop::ExportOptions o;
  o.format = interop::ExportFormat::state_dict;
  interop::export_torchscript(ckpt, dir + "/w.pt", o);
  const auto bytes = cnf::io::read_text(dir + "/w.pt");
  auto dict = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
  auto flow = train::load_checkpoint(ckpt);
  int64_t n = 0;
  for (const auto& p : flow.network->named_parameters()) {
    ASSERT_TRUE(dict.contains(p.key())) << p.key();
    EXPECT_TRUE(torch::equal(dict.at(p.key()).toTensor(), p.value())) << p.key();
    ++n;
  }
  EXPECT_EQ(static_cast<int64_t>(dict.size()), n);
  const auto json = cnf::io::read_text(dir + "/w.pt.json");
  EXPECT_TRUE(contains(json, "\"predicts\": \"velocity\"") && contains(json, "layer0.weight"))
      << json;
  fs::remove_all(dir);
}

namespace {
// A small TorchScript MLP u(x, s) with data at s = 1 (flow_matching's convention), its
// weights as module parameters: what a PyTorch user hands to cnf.
std::string pytorch_style_module(const std::string& path) {
  torch::manual_seed(21);
  torch::jit::Module m("__torch__.TinyFlow");
  m.register_parameter("w1", torch::randn({32, 3}) * 0.5, false);
  m.register_parameter("b1", torch::zeros({32}), false);
  m.register_parameter("w2", torch::randn({2, 32}) * 0.2, false);
  m.register_parameter("b2", torch::zeros({2}), false);
  m.define(R"(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    h = torch.tanh(torch.addmm(self.b1, torch.cat([x, t.to(x.dtype).reshape(-1, 1)], 1), self.w1.t()))
    return torch.addmm(self.b2, h, self.w2.t())
)");
  m.save(path);
  return path;
}

double json_number(const std::string& file, const std::string& key) {
  const auto text = cnf::io::read_text(file);
  const auto at = text.find("\"" + key + "\":");
  EXPECT_NE(at, std::string::npos) << key << " in " << text;
  return std::stod(text.substr(at + key.size() + 3));
}
}  // namespace

TEST(Interop, TrainInitFineTunesAPyTorchModuleAndReflowTakesIt) {
  const auto dir = temp_dir("init");
  const auto module = pytorch_style_module(dir + "/tiny.pt");
  const auto before = cnf::io::read_text(module);
  const std::string common = " --data moons --seed 1 --eval-n 500 --quiet";
  auto r = cnf_test::run_cnf("eval --model torchscript:" + module +
                             " --time data-at-1 --model-dim 2 --data moons -n 500 --json " + dir +
                             "/before.json");
  ASSERT_EQ(r.code, 0) << r.output;
  r = cnf_test::run_cnf("train --init torchscript:" + module +
                        " --init-time data-at-1 --steps 400 --lr 3e-3" + common + " --out " + dir +
                        "/ft");
  ASSERT_EQ(r.code, 0) << r.output;
  // Fine-tuning by cnf's flow matching moves the module's random field towards the data:
  // W2 to held-out points drops (measured 0.70 -> 0.40 at these seeds; 0.7x leaves room
  // for other BLAS summation orders).
  const double w2_before = json_number(dir + "/before.json", "w2");
  const double w2_after = json_number(dir + "/ft/metrics.json", "w2");
  EXPECT_LT(w2_after, 0.7 * w2_before) << w2_before << " -> " << w2_after;
  EXPECT_EQ(cnf::io::read_text(module), before) << "the module file itself must stay as it was";
  auto spec = train::read_flow_spec(dir + "/ft/model.pt");
  EXPECT_EQ(spec.model.arch, "torchscript");
  EXPECT_EQ(spec.module_time, "data-at-1");
  // Every verb loads the fine-tuned checkpoint (the module rebuilt, then its tuned weights).
  r = cnf_test::run_cnf("eval --ckpt " + dir + "/ft/model.pt -n 500 --json " + dir + "/again.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NEAR(json_number(dir + "/again.json", "w2"), w2_after, 0.1);  // other noise draws
  // Reflow of the imported module: pairs from it, a child of the same architecture.
  r = cnf_test::run_cnf("reflow --model torchscript:" + dir +
                        "/ft/../tiny.pt --time data-at-1 --model-dim 2 --data moons "
                        "--pairs 400 --chunk 200 --steps 50 --eval-n 200 --quiet --out " +
                        dir + "/rf");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(train::read_flow_spec(dir + "/rf/model.pt").model.arch, "torchscript");
  r = cnf_test::run_cnf("train --init " + module + " --out " + dir + "/bad");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "--init must be torchscript:FILE")) << r.output;
  fs::remove_all(dir);
}

TEST(Interop, FuseRunsAPlainMlpModuleByCnfsKernelsAndRefusesAMismatch) {
  const auto dir = temp_dir("fuse");
  torch::manual_seed(4);
  torch::jit::Module m("__torch__.Plain");
  const std::vector<std::pair<int64_t, int64_t>> maps{{16, 3}, {16, 16}, {2, 16}};
  for (size_t k = 0; k < maps.size(); ++k) {
    m.register_parameter("w" + std::to_string(k),
                         torch::randn({maps[k].first, maps[k].second}) * 0.4, false);
    m.register_parameter("b" + std::to_string(k), torch::randn({maps[k].first}) * 0.1, false);
  }
  m.define(R"(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    h = torch.cat([x, t.to(x.dtype).reshape(-1, 1)], 1)
    h = torch.selu(torch.addmm(self.b0, h, self.w0.t()))
    h = torch.selu(torch.addmm(self.b1, h, self.w1.t()))
    return torch.addmm(self.b2, h, self.w2.t())
)");
  m.save(dir + "/plain.pt");
  interop::ImportOptions o;
  o.file = dir + "/plain.pt";
  o.dim = 2;
  o.time = interop::TimeConvention::data_at_1;
  auto plain = interop::import_torchscript(o);
  o.fuse = "selu";
  auto fused = interop::import_torchscript(o);
  auto x = torch::randn({300, 2}), t = torch::rand({300});
  torch::NoGradGuard no_grad;
  // float32: the fused kernels against LibTorch's ops, same maps (1e-5 relative).
  EXPECT_LT(rel_err(fused.model->forward(x, t), plain.model->forward(x, t)), 1e-5);
  EXPECT_EQ(fused.network->parameters().size(), 6u);
  o.fuse = "tanh";  // the wrong activation: the probe batch tells
  try {
    interop::import_torchscript(o);
    ADD_FAILURE() << "a tanh reading of a selu MLP was accepted";
  } catch (const cnf::Error& e) {
    EXPECT_TRUE(contains(e.what(), "is not a plain MLP") && contains(e.what(), "differs"))
        << e.what();
  }
  fs::remove_all(dir);
}
