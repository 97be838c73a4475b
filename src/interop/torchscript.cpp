#include "cnf/interop/torchscript.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../train/archive_check.h"
#include "cnf/core/error.h"
#include "cnf/core/registry.h"
#include "cnf/core/text.h"
#include "cnf/data/images.h"
#include "cnf/io/files.h"
#include "cnf/nn/velocity.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/parameterized.h"
#include "cnf/version.h"

namespace cnf::interop {

namespace {

const Registry<Weights>& weight_choices() {
  static const Registry<Weights> r("weights", {{"ema", Weights::ema}, {"raw", Weights::raw}});
  return r;
}

const Registry<TimeConvention>& time_conventions() {
  static const Registry<TimeConvention> r(
      "time convention",
      {{"data-at-0", TimeConvention::data_at_0}, {"data-at-1", TimeConvention::data_at_1}});
  return r;
}

std::string indent(const std::string& lines, const std::string& pad) {
  std::istringstream in(lines);
  std::string line, out;
  while (std::getline(in, line)) out += pad + line + "\n";
  return out;
}

// The methods every export shares: the schedule's coefficients, path::convert (the same
// Cramer's-rule algebra, statement for statement) and the velocity / score views of the
// network with the time clamp of sde::predict.
std::string flow_methods(const path::Schedule& schedule) {
  std::string s;
  s += "def coefficients(self, t: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:\n";
  s += indent(schedule.torchscript(), "    ");
  s += "    return alpha, sigma, d_alpha, d_sigma\n";
  s += R"(
def _batch(self, a: Tensor, x: Tensor) -> Tensor:
    shape: List[int] = [-1]
    for _ in range(x.dim() - 1):
        shape.append(1)
    return a.reshape(shape)

def convert(self, pred: Tensor, x: Tensor, t: Tensor, source: str, target: str) -> Tensor:
    if source == target:
        return pred
    alpha, sigma, d_alpha, d_sigma = self.coefficients(t.to(x.dtype))
    alpha = self._batch(alpha, x)
    sigma = self._batch(sigma, x)
    d_alpha = self._batch(d_alpha, x)
    d_sigma = self._batch(d_sigma, x)
    x0 = pred
    x1 = pred
    if source == "data":
        x1 = (x - alpha * x0) / sigma
    elif source == "noise":
        x0 = (x - sigma * x1) / alpha
    elif source == "score":
        x1 = -sigma * pred
        x0 = (x - sigma * x1) / alpha
    elif source == "v":
        r = torch.sqrt(alpha * alpha + sigma * sigma)
        x0 = (alpha * x - sigma * r * pred) / (r * r)
        x1 = (sigma * x + alpha * r * pred) / (r * r)
    else:
        det = alpha * d_sigma - sigma * d_alpha
        x0 = (d_sigma * x - sigma * pred) / det
        x1 = (alpha * pred - d_alpha * x) / det
    if target == "data":
        return x0
    if target == "noise":
        return x1
    if target == "score":
        return -x1 / sigma
    if target == "v":
        return (alpha * x1 - sigma * x0) / torch.sqrt(alpha * alpha + sigma * sigma)
    return d_alpha * x0 + d_sigma * x1

def _as(self, x: Tensor, t: Tensor, target: str) -> Tensor:
    if self.predicts == target:
        return self.network(x, t)
    tc = t.clamp(self.t_lo, self.t_hi)
    return self.convert(self.network(x, tc), x, tc, self.predicts, target)

def forward(self, x: Tensor, t: Tensor) -> Tensor:
    return self._as(x, t, "velocity")

def velocity(self, x: Tensor, t: Tensor) -> Tensor:
    return self._as(x, t, "velocity")

def score(self, x: Tensor, t: Tensor) -> Tensor:
    return self._as(x, t, "score")
)";
  return s;
}

// Class-conditional networks: the network with labels (a label < 0 is the null label) and
// classifier-free guidance on its output, (1 + w) out(x | c) - w out(x), as nn::GuidedField;
// then read as a velocity like forward().
std::string guidance_methods() {
  return R"(
def network_guided(self, x: Tensor, t: Tensor, labels: Tensor, guidance: float) -> Tensor:
    cond = self.network_labeled(x, t, labels)
    if guidance == 0.0:
        return cond
    return cond + guidance * (cond - self.network(x, t))

def velocity_guided(self, x: Tensor, t: Tensor, labels: Tensor, guidance: float) -> Tensor:
    if self.predicts == "velocity":
        return self.network_guided(x, t, labels, guidance)
    tc = t.clamp(self.t_lo, self.t_hi)
    return self.convert(self.network_guided(x, tc, labels, guidance), x, tc, self.predicts, "velocity")
)";
}

// The value of the `transform=` key of an image spec ("scale" when absent); a logit's
// lambda follows after a colon ("transform=logit:1e-5").
std::string image_transform_name(const std::string& spec) {
  const auto at = spec.find("transform=");
  if (at == std::string::npos) return "scale";
  std::string value;
  std::istringstream parts(spec.substr(at + 10));
  for (std::string part; std::getline(parts, part, ':');) {
    if (!value.empty() && part.find('=') != std::string::npos) break;
    value += (value.empty() ? "" : ":") + part;
  }
  return value;
}

// Model-space rows [B, D] back to pixels in [0, 1] shaped [B, C, H, W] (ImageTransform::inverse).
std::string to_pixels_method(const data::ImageTransform& transform) {
  const std::string lambda = float_literal(transform.lambda);
  std::string s = "\ndef to_pixels(self, y: Tensor) -> Tensor:\n";
  s += "    shape: List[int] = [y.size(0)] + self.image_shape\n";
  if (transform.kind == data::ImageTransform::Kind::scale)
    s += "    return ((y + 1) / 2).clamp(0, 1).reshape(shape)\n";
  else
    s += "    return ((torch.sigmoid(y) - " + lambda + ") / (1 - 2 * " + lambda +
         ")).clamp(0, 1).reshape(shape)\n";
  return s;
}

// A cnf network over a loaded TorchScript module: time mapped into the module's
// convention, the velocity's sign with it, the output's shape checked.
class TorchScriptFieldImpl : public nn::VelocityFieldImpl {
 public:
  // With `fused` (the module converted to cnf's MLP, --fuse) that network runs instead of the
  // module, and its weights are the parameters.
  TorchScriptFieldImpl(torch::jit::Module module, std::vector<int64_t> shape, bool flip_time,
                       bool negate, std::string file, nn::MLPVelocity fused = nullptr)
      : module_(std::move(module)),
        shape_(std::move(shape)),
        flip_time_(flip_time),
        negate_(negate),
        file_(std::move(file)) {
    if (fused) {
      fused_ = register_module("fused", fused);
      return;
    }
    // Registered here too (the same tensors), so cnf's optimizers, checkpoints and
    // to(device) reach the module's weights; trainable whatever flag the file saved.
    for (const auto& p : module_.named_parameters(/*recurse=*/true))
      register_parameter(nn::torchscript_name(p.name), p.value, /*requires_grad=*/true);
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    auto tt = flip_time_ ? 1.0 - t : t;
    if (fused_) {
      auto v = fused_->forward(x, tt);
      return negate_ ? -v : v;
    }
    c10::IValue out;
    try {
      out = module_.forward({x, tt});
    } catch (const std::exception& e) {
      std::string why = e.what();
      fail("TorchScript module '", file_, "' failed in forward(x, t) with x ", x.sizes(), ", t ",
           t.sizes(), ": ", why.substr(0, why.find('\n')));
    }
    CNF_CHECK(out.isTensor(), "TorchScript module '", file_, "': forward(x, t) returned ",
              out.tagKind(), ", not a Tensor; cnf needs the network's output [B, ...] as x");
    auto v = out.toTensor();
    CNF_CHECK(v.sizes() == x.sizes(), "TorchScript module '", file_, "': forward(x, t) returned ",
              v.sizes(), " for x ", x.sizes(), "; it must return one value per coordinate of x");
    return negate_ ? -v : v;
  }
  std::vector<int64_t> sample_shape() const override { return shape_; }

 private:
  nn::MLPVelocity fused_{nullptr};
  torch::jit::Module module_;
  std::vector<int64_t> shape_;
  bool flip_time_, negate_;
  std::string file_;
};

}  // namespace

Weights parse_weights(const std::string& name) { return weight_choices().get(name); }
ExportFormat parse_export_format(const std::string& name) {
  static const Registry<ExportFormat> r(
      "export format",
      {{"torchscript", ExportFormat::torchscript}, {"state-dict", ExportFormat::state_dict}});
  return r.get(name);
}
TimeConvention parse_time_convention(const std::string& name) {
  return time_conventions().get(name);
}

void export_torchscript(const std::string& checkpoint, const std::string& out,
                        const ExportOptions& options) {
  const auto flow = train::load_checkpoint(checkpoint, c10::Device(c10::kCPU), {},
                                           options.weights == Weights::ema);
  const auto& net = *flow.network;
  const auto schedule = flow.spec.make_schedule();
  const auto range = path::conversion_range(*schedule);
  if (options.format == ExportFormat::state_dict) {
    c10::Dict<std::string, at::Tensor> tensors;
    nlohmann::json shapes;
    for (const auto& p : net.named_parameters(/*recurse=*/true)) {
      tensors.insert(p.key(), p.value().detach().clone());
      shapes[p.key()] = p.value().sizes().vec();
    }
    for (const auto& b : net.named_buffers(/*recurse=*/true)) {
      tensors.insert(b.key(), b.value().detach().clone());
      shapes[b.key()] = b.value().sizes().vec();
    }
    const auto bytes = torch::pickle_save(c10::IValue(tensors));
    nlohmann::json d = {{"format", "cnf-state-dict-1"},
                        {"cnf_version", CNF_VERSION},
                        {"weights", options.weights == Weights::ema ? "ema" : "raw"},
                        {"time_convention", "data-at-0"},
                        {"schedule", flow.spec.schedule},
                        {"schedule_description", schedule->describe()},
                        {"sigma_min", flow.spec.sigma_min},
                        {"predicts", path::param_name(flow.spec.network_param())},
                        {"data_shape", net.sample_shape()},
                        {"data", flow.spec.data},
                        {"prior", flow.spec.prior},
                        {"sigma_1", schedule->sigma_1()},
                        {"t_lo", range.lo},
                        {"t_hi", range.hi},
                        {"spec", flow.spec.serialize()},
                        {"tensors", shapes}};
    io::write_atomic(out, [&](std::ostream& os) { os.write(bytes.data(), bytes.size()); });
    io::write_text_atomic(out + ".json", d.dump(2) + "\n");
    return;
  }
  const std::string source = net.torchscript("network", "");
  CNF_CHECK(!source.empty(), "checkpoint '", checkpoint, "': the ", flow.spec.model.arch,
            " network has no TorchScript form; use --format state-dict for its weights");
  torch::jit::Module m(c10::QualifiedName("__torch__.cnf.ExportedFlow"));
  for (const auto& p : net.named_parameters(/*recurse=*/true))
    m.register_parameter(nn::torchscript_name(p.key()), p.value().detach().clone(), false);
  for (const auto& b : net.named_buffers(/*recurse=*/true))
    m.register_buffer(nn::torchscript_name(b.key()), b.value().detach().clone());
  auto str = [&](const std::string& name, const std::string& value) {
    m.register_attribute(name, c10::StringType::get(), value);
  };
  auto num = [&](const std::string& name, double value) {
    m.register_attribute(name, c10::FloatType::get(), value);
  };
  str("schedule", flow.spec.schedule);
  str("schedule_description", schedule->describe());
  num("sigma_min", flow.spec.sigma_min);
  str("predicts", path::param_name(flow.spec.network_param()));
  str("time_convention", "data-at-0");
  m.register_attribute("data_shape", c10::ListType::ofInts(),
                       c10::List<int64_t>(net.sample_shape()));
  str("data", flow.spec.data);
  str("prior", flow.spec.prior);
  num("sigma_1", schedule->sigma_1());
  num("t_lo", range.lo);
  num("t_hi", range.hi);
  str("weights", options.weights == Weights::ema ? "ema" : "raw");
  str("cnf_version", CNF_VERSION);
  std::string methods = source + "\n" + flow_methods(*schedule);
  if (net.classes() > 0) {
    m.register_attribute("classes", c10::IntType::get(), net.classes());
    methods += guidance_methods();
  }
  if (data::is_image_spec(flow.spec.data)) {
    const auto transform = data::parse_image_transform(image_transform_name(flow.spec.data));
    str("pixel_transform", transform.name());
    const auto& ms = flow.spec.model;
    m.register_attribute("image_shape", c10::ListType::ofInts(),
                         c10::List<int64_t>({ms.channels, ms.height, ms.width_px}));
    methods += to_pixels_method(transform);
  }
  try {
    m.define(methods);
  } catch (const std::exception& e) {
    fail("checkpoint '", checkpoint, "': TorchScript rejected the exported code (a cnf bug; ",
         "please report it): ", e.what());
  }
  m.eval();
  io::write_atomic(out, [&](std::ostream& os) { m.save(os); });
}

void ImportOptions::validate() const {
  CNF_CHECK(!file.empty(), "the TorchScript module's file is empty; pass torchscript:FILE");
  CNF_CHECK(dim >= 0, "dim must be >= 0 (0: read the module's data_shape), got ", dim);
  path::make_schedule(schedule, sigma_min);  // a bad name or value fails here
  if (!fuse.empty()) nn::parse_activation(fuse);
}

namespace {

// `--fuse ACTIVATION`: reads the module as a plain MLP on [x, t] (its parameters, in order,
// alternate weight [out, in] and bias [out]; equal hidden widths; `activation` between the
// maps) and copies it into cnf's MLP, whose fused CPU kernels then run it. The conversion
// is checked on a probe batch against the module itself.
nn::MLPVelocity fuse_mlp(torch::jit::Module& module, const ImportOptions& o, int64_t dim) {
  std::vector<at::Tensor> p;
  for (const auto& named : module.named_parameters(/*recurse=*/true)) p.push_back(named.value);
  auto refuse = [&](const std::string& why) {
    fail("--fuse: TorchScript module '", o.file, "' is not a plain MLP on [x, t] (", why,
         "); drop --fuse to run it as it is");
  };
  if (p.size() < 4 || p.size() % 2 != 0) refuse(std::to_string(p.size()) + " parameter tensors");
  const int64_t maps = static_cast<int64_t>(p.size()) / 2, width = p[0].size(0);
  for (int64_t k = 0; k < maps; ++k) {
    const auto& w = p[2 * k];
    const auto& b = p[2 * k + 1];
    const int64_t in = k == 0 ? dim + 1 : width, out = k + 1 == maps ? dim : width;
    if (w.dim() != 2 || b.dim() != 1 || w.size(0) != out || w.size(1) != in || b.size(0) != out)
      refuse("map " + std::to_string(k) + " has weight " + c10::str(w.sizes()) + " and bias " +
             c10::str(b.sizes()) + ", expected [" + std::to_string(out) + ", " +
             std::to_string(in) + "] and [" + std::to_string(out) + "]");
  }
  nn::MLPVelocity mlp(nn::MLPOptions(dim).width(width).depth(maps - 1).activation(o.fuse));
  torch::NoGradGuard no_grad;
  for (int64_t k = 0; k < maps; ++k) {
    mlp->layers[k]->weight.copy_(p[2 * k]);
    mlp->layers[k]->bias.copy_(p[2 * k + 1]);
  }
  mlp->to(o.device);
  auto x = torch::randn({64, dim}, torch::TensorOptions().device(o.device));
  auto t = torch::rand({64}, x.options());
  auto want = module.forward({x, t}).toTensor();
  auto got = mlp->reference_forward(x, t);
  // float32 products of the same maps in another order: 1e-4 relative to the output scale.
  const double diff = (got - want).abs().max().item<double>();
  const double scale = 1.0 + want.abs().max().item<double>();
  if (!(diff <= 1e-4 * scale))
    refuse("as an MLP with " + o.fuse + " it differs from the module by " + std::to_string(diff) +
           " on a probe batch");
  return mlp;
}

// Loads, checks and wraps the module (the network of import_torchscript and the factory).
nn::VelocityField make_torchscript_network(const ImportOptions& o) {
  o.validate();
  {
    std::ifstream probe(o.file, std::ios::binary);
    CNF_CHECK(probe.good(), "cannot open TorchScript module '", o.file,
              "': no such file or no permission");
  }
  // Truncated or bit-flipped files get a clear error before LibTorch's importer sees them
  // (it checks no CRC). A module's code is trusted input, like a pickle: cnf runs it.
  train::check_zip_integrity(o.file, "TorchScript module");
  torch::jit::Module module;
  try {
    module = torch::jit::load(o.file, o.device);
  } catch (const std::exception& e) {
    std::string why = e.what();
    fail("'", o.file, "' is not a TorchScript module (torch.jit.save / torch::jit::Module::save ",
         "writes one): ", why.substr(0, why.find('\n')));
  }
  auto method = module.find_method("forward");
  CNF_CHECK(method.has_value(), "TorchScript module '", o.file, "' has no forward method; cnf ",
            "needs forward(x, t) -> output of x's shape");
  const auto& schema = method->function().getSchema();
  // Arguments: self, x, t (a third, optional label argument may follow with a default).
  size_t required = 0;
  for (const auto& a : schema.arguments()) required += a.default_value() ? 0 : 1;
  CNF_CHECK(schema.arguments().size() >= 3 && required <= 3, "TorchScript module '", o.file,
            "' has forward with ", schema.arguments().size() - 1, " argument(s) (", schema,
            "); cnf needs forward(x, t)");
  std::vector<int64_t> shape;
  if (o.dim > 0) {
    shape = {o.dim};
  } else {
    CNF_CHECK(module.hasattr("data_shape"), "TorchScript module '", o.file, "' has no data_shape ",
              "attribute; give the dimension of one sample (ImportOptions::dim; --model-dim on ",
              "the command line)");
    for (auto v : module.attr("data_shape").toIntVector()) shape.push_back(v);
  }
  const bool flip = o.time == TimeConvention::data_at_1;
  nn::MLPVelocity fused{nullptr};
  if (!o.fuse.empty()) {
    CNF_CHECK(shape.size() == 1, "--fuse: the module's samples have shape ", shape,
              "; the fused MLP takes flat [B, dim] rows");
    fused = fuse_mlp(module, o, shape[0]);
  }
  auto net = std::make_shared<TorchScriptFieldImpl>(
      module, shape, flip, flip && o.predicts == path::Param::velocity, o.file, fused);
  // A probe: two rows at two times inside (0, 1), in the module's dtype of choice (float32).
  std::vector<int64_t> probe_shape{2};
  probe_shape.insert(probe_shape.end(), shape.begin(), shape.end());
  torch::NoGradGuard no_grad;
  auto x = torch::randn(probe_shape, torch::TensorOptions().device(o.device));
  auto v = net->forward(x, torch::tensor({0.25, 0.75}, x.options()));
  CNF_CHECK(torch::isfinite(v).all().item<bool>(), "TorchScript module '", o.file,
            "' returned non-finite values (NaN or Inf) on a standard-normal probe batch");
  return net;
}

std::string time_convention_name(TimeConvention t) {
  return t == TimeConvention::data_at_1 ? "data-at-1" : "data-at-0";
}

}  // namespace

train::NetworkFactory torchscript_factory(const ImportOptions& options) {
  options.validate();
  return [options](const nn::ModelSpec&) { return make_torchscript_network(options); };
}

train::Checkpoint import_torchscript(const ImportOptions& o) {
  train::Checkpoint c;
  c.network = make_torchscript_network(o);
  c.spec.model.arch = "torchscript";
  int64_t dim = 1;
  for (auto s : c.network->sample_shape()) dim *= s;
  c.spec.model.dim = dim;
  c.spec.module = std::filesystem::absolute(o.file).string();
  c.spec.module_time = time_convention_name(o.time);
  c.spec.schedule = o.schedule;
  c.spec.sigma_min = o.sigma_min;
  c.spec.data = "";
  c.spec.prior = "normal";
  c.spec.param = path::param_name(o.predicts);
  c.spec.objective = o.predicts == path::Param::velocity ? "fm" : "score";
  c.network->eval();
  c.model = c.spec.velocity_field(c.network);
  c.model->eval();
  c.config = "model = \"torchscript:" + o.file + "\"\n";
  train::type_checkpoint(c);
  return c;
}

ImportOptions import_options(const train::FlowSpec& spec, c10::Device device) {
  CNF_CHECK(spec.model.arch == "torchscript" && !spec.module.empty(), "the flow spec names no ",
            "TorchScript module (arch ", spec.model.arch, ")");
  ImportOptions o;
  o.file = spec.module;
  o.predicts = spec.network_param();
  o.schedule = spec.schedule;
  o.sigma_min = spec.sigma_min;
  o.time = parse_time_convention(spec.module_time);
  o.dim = spec.model.dim;
  o.device = device;
  return o;
}

train::Checkpoint load_flow(const std::string& checkpoint, c10::Device device) {
  const auto spec = train::read_flow_spec(checkpoint);
  if (spec.model.arch != "torchscript") return train::load_checkpoint(checkpoint, device);
  return train::load_checkpoint(checkpoint, device,
                                torchscript_factory(import_options(spec, device)));
}

}  // namespace cnf::interop
