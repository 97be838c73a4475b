#include "cnf/nn/velocity.h"

#include <torch/torch.h>

#include <cmath>

#include "cnf/core/error.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/nn/hollow.h"
#include "cnf/nn/unet.h"

namespace cnf::nn {

const Registry<Activation>& activations() {
  static const Registry<Activation> r("activation", {{"tanh", Activation::tanh},
                                                     {"relu", Activation::relu},
                                                     {"silu", Activation::silu},
                                                     {"selu", Activation::selu},
                                                     {"gelu", Activation::gelu},
                                                     {"softplus", Activation::softplus}});
  return r;
}
const Registry<TimeEmbedding>& time_embeddings() {
  static const Registry<TimeEmbedding> r(
      "time embedding", {{"concat", TimeEmbedding::concat}, {"fourier", TimeEmbedding::fourier}});
  return r;
}

Activation parse_activation(const std::string& name) { return activations().get(name); }
std::string activation_name(Activation a) { return activations().name_of(a); }
TimeEmbedding parse_time_embedding(const std::string& name) { return time_embeddings().get(name); }
std::string time_embedding_name(TimeEmbedding e) { return time_embeddings().name_of(e); }

torch::Tensor activate(Activation a, const torch::Tensor& x) {
  switch (a) {
    case Activation::tanh:
      return torch::tanh(x);
    case Activation::relu:
      return torch::relu(x);
    case Activation::silu:
      return torch::silu(x);
    case Activation::selu:
      return torch::selu(x);
    case Activation::gelu:
      return torch::gelu(x);
    case Activation::softplus:
      return torch::softplus(x);
  }
  return x;
}

std::pair<torch::Tensor, torch::Tensor> VelocityFieldImpl::forward_with_divergence(
    const torch::Tensor&, const torch::Tensor&) {
  fail("this network has no analytic divergence (the mlp and hollow networks have one); use ",
       "the exact or hutchinson divergence");
}

std::string activation_torchscript(Activation a, const std::string& expr) {
  // aten's names for the ops activate() calls (gelu: exact erf form, as torch::gelu).
  return "torch." + activation_name(a) + "(" + expr + ")";
}

std::string torchscript_name(const std::string& dotted) {
  std::string out;
  for (char c : dotted) out += c == '.' ? std::string("__") : std::string(1, c);
  return out;
}

torch::Tensor activate_derivative(Activation a, const torch::Tensor& z) {
  switch (a) {
    case Activation::tanh:
      return 1 - torch::tanh(z).pow(2);
    case Activation::relu:
      return (z > 0).to(z.scalar_type());
    case Activation::silu: {
      auto s = torch::sigmoid(z);
      return s * (1 + z * (1 - s));
    }
    case Activation::selu: {
      // SELU constants (Klambauer et al. 2017), as LibTorch uses them.
      const double scale = 1.0507009873554804934193349852946,
                   alpha = 1.6732632423543772848170429916717;
      return scale * torch::where(z > 0, torch::ones_like(z), alpha * torch::exp(z));
    }
    case Activation::gelu: {
      // Exact (erf) GELU: Phi(z) + z phi(z).
      auto cdf = 0.5 * (1 + torch::erf(z * M_SQRT1_2));
      auto pdf = torch::exp(-0.5 * z * z) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
      return cdf + z * pdf;
    }
    case Activation::softplus:
      return torch::sigmoid(z);
  }
  return torch::ones_like(z);
}

MLPVelocityImpl::MLPVelocityImpl(const MLPOptions& o)
    : options(o),
      activation(parse_activation(o.activation())),
      time_embedding(parse_time_embedding(o.time_embedding())) {
  CNF_CHECK(o.dim() >= 1, "mlp dim must be >= 1, got ", o.dim());
  CNF_CHECK(o.width() >= 1, "mlp width must be >= 1, got ", o.width());
  CNF_CHECK(o.depth() >= 1, "mlp depth must be >= 1, got ", o.depth());
  int64_t t_dim = 1;
  if (time_embedding == TimeEmbedding::fourier) {
    CNF_CHECK(o.fourier_features() >= 1, "fourier_features must be >= 1, got ",
              o.fourier_features());
    // Frequencies pi * 2^k, k = 0..F-1: resolves features down to 2^-F in time.
    frequencies = register_buffer(
        "frequencies", M_PI * torch::pow(2.0, torch::arange(o.fourier_features(), torch::kFloat)));
    t_dim = 2 * o.fourier_features();
  }
  int64_t in = o.dim() + t_dim;
  for (int64_t k = 0; k <= o.depth(); ++k) {
    int64_t out = k == o.depth() ? o.dim() : o.width();
    layers.push_back(register_module("layer" + std::to_string(k), torch::nn::Linear(in, out)));
    in = out;
  }
}

torch::Tensor embed_time(const torch::Tensor& x, const torch::Tensor& t,
                         const torch::Tensor& frequencies) {
  auto tt = t.to(x.scalar_type()).reshape({-1, 1});
  if (tt.size(0) == 1 && x.size(0) != 1) tt = tt.expand({x.size(0), 1});
  if (!frequencies.defined()) return torch::cat({x, tt}, 1);
  auto phase = tt * frequencies.to(x.scalar_type()).unsqueeze(0);
  return torch::cat({x, torch::sin(phase), torch::cos(phase)}, 1);
}

torch::Tensor mlp_layers(torch::Tensor h, torch::TensorList params, Activation a) {
  const size_t n = params.size() / 2;
  for (size_t k = 0; k < n; ++k) {
    h = torch::nn::functional::linear(h, params[2 * k], params[2 * k + 1]);
    if (k + 1 < n) h = activate(a, h);
  }
  return h;
}

torch::Tensor MLPVelocityImpl::embed_input(const torch::Tensor& x, const torch::Tensor& t) const {
  return embed_time(x, t, time_embedding == TimeEmbedding::fourier ? frequencies : torch::Tensor());
}

std::vector<torch::Tensor> MLPVelocityImpl::layer_parameters() const {
  std::vector<torch::Tensor> p;
  for (const auto& l : layers) {
    p.push_back(l->weight);
    p.push_back(l->bias);
  }
  return p;
}

torch::Tensor MLPVelocityImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  // The fused path computes no input gradients inside a graph (higher derivatives, as in
  // divergence by autograd, would be recomputed); such callers get the reference path.
  const bool input_grad = torch::GradMode::is_enabled() && (x.requires_grad() || t.requires_grad());
  if (fast::enabled() && !input_grad && x.dim() == 2 &&
      fast::unsupported_reason(*this, x, t).empty())
    return fast::forward(*this, x, t);
  return reference_forward(x, t);
}

torch::Tensor MLPVelocityImpl::reference_forward(const torch::Tensor& x, const torch::Tensor& t) {
  auto h = embed_input(x.reshape({x.size(0), -1}), t);
  return mlp_layers(h, layer_parameters(), activation).view(x.sizes());
}

std::string MLPVelocityImpl::torchscript(const std::string& method,
                                         const std::string& prefix) const {
  // reference_forward and embed_time, statement for statement.
  auto p = [&](const std::string& name) { return "self." + torchscript_name(prefix + name); };
  std::string s = "def " + method + "(self, x: Tensor, t: Tensor) -> Tensor:\n";
  s += "    tt = t.to(x.dtype).reshape(-1, 1)\n";
  s += "    if tt.size(0) == 1 and x.size(0) != 1:\n        tt = tt.expand(x.size(0), 1)\n";
  s += "    xf = x.reshape(x.size(0), -1)\n";
  if (time_embedding == TimeEmbedding::fourier) {
    s += "    phase = tt * " + p("frequencies") + ".to(x.dtype).unsqueeze(0)\n";
    s += "    h = torch.cat([xf, torch.sin(phase), torch.cos(phase)], 1)\n";
  } else {
    s += "    h = torch.cat([xf, tt], 1)\n";
  }
  for (size_t k = 0; k < layers.size(); ++k) {
    const std::string l = "layer" + std::to_string(k) + ".";
    std::string z = "torch.addmm(" + p(l + "bias") + ", h, " + p(l + "weight") + ".t())";
    s += "    h = " + (k + 1 < layers.size() ? activation_torchscript(activation, z) : z) + "\n";
  }
  return s + "    return h.view(x.size())\n";
}

std::pair<torch::Tensor, torch::Tensor> MLPVelocityImpl::forward_with_divergence(
    const torch::Tensor& x, const torch::Tensor& t) {
  CNF_CHECK(x.dim() == 2, "analytic divergence needs flat inputs [B, dim], got ", x.sizes());
  const bool graph = torch::GradMode::is_enabled() &&
                     (x.requires_grad() || t.requires_grad() || layers[0]->weight.requires_grad());
  if (fast::enabled() && !graph && fast::unsupported_reason(*this, x, t).empty())
    return fast::forward_with_divergence(*this, x, t);
  auto h = embed_input(x, t);
  const int64_t b = x.size(0), d = options.dim();
  // The transposed Jacobian (dh/dx)^T is kept as [B, d, width] so that each layer is one
  // [B*d, in] x [in, out] product instead of B small ones.
  torch::Tensor jac_t;
  const auto n = layers.size();
  for (size_t k = 0; k < n; ++k) {
    const auto& w = layers[k]->weight;  // [out, in]
    auto z = layers[k]->forward(h);
    // dz_1/dx is the x-block of the first weight matrix, the same for every row.
    torch::Tensor dz_t =
        k == 0 ? w.slice(1, 0, d).t().unsqueeze(0).expand({b, d, w.size(0)})
               : torch::matmul(jac_t.reshape({b * d, -1}), w.t()).reshape({b, d, w.size(0)});
    if (k + 1 == n) return {z, dz_t.diagonal(0, 1, 2).sum(-1)};
    jac_t = activate_derivative(activation, z).unsqueeze(1) * dz_t;
    h = activate(activation, z);
  }
  return {h, torch::zeros({b}, x.options())};
}

StackedVelocityImpl::StackedVelocityImpl(std::vector<VelocityField> b) : blocks(std::move(b)) {
  CNF_CHECK(!blocks.empty(), "a stack needs at least one block");
  for (size_t k = 0; k < blocks.size(); ++k) {
    CNF_CHECK(blocks[k] != nullptr, "stack block ", k, " is null");
    CNF_CHECK(blocks[k]->sample_shape() == blocks[0]->sample_shape(), "stack block ", k,
              " has sample shape ", blocks[k]->sample_shape(), " but block 0 has ",
              blocks[0]->sample_shape());
    register_module("block" + std::to_string(k), blocks[k]);
  }
}

void StackedVelocityImpl::set_labels(const torch::Tensor& labels) {
  labels_ = labels;
  for (auto& b : blocks) b->set_labels(labels);
}

torch::Tensor StackedVelocityImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  auto tt = t.reshape({-1});
  if (tt.size(0) == 1 && x.size(0) != 1) tt = tt.expand({x.size(0)});
  // Block of each row: floor(K t), with t = 1 in the last block.
  auto idx = (tt.to(torch::kDouble) * n).floor().clamp(0, n - 1).to(torch::kLong);
  auto local = tt * static_cast<double>(n) - idx.to(tt.scalar_type());
  const int64_t first = idx.min().item<int64_t>(), last = idx.max().item<int64_t>();
  if (first == last) return blocks[first]->forward(x, local);  // ODE solves: one block
  torch::Tensor out = torch::zeros_like(x);
  for (int64_t k = first; k <= last; ++k) {
    auto rows = (idx == k).nonzero().reshape({-1});
    if (rows.numel() == 0) continue;
    if (labels_.defined()) blocks[k]->set_labels(labels_.index_select(0, rows));
    auto vk = blocks[k]->forward(x.index_select(0, rows), local.index_select(0, rows));
    if (labels_.defined()) blocks[k]->set_labels(labels_);
    out = out.index_copy(0, rows, vk);  // out of place: differentiable in every block
  }
  return out;
}

std::string StackedVelocityImpl::torchscript(const std::string& method,
                                             const std::string& prefix) const {
  // forward's routing: block floor(K t) (t = 1 in the last) at local time K t - k.
  const int64_t n = static_cast<int64_t>(blocks.size());
  std::string s;
  for (int64_t k = 0; k < n; ++k) {
    const std::string block = blocks[k]->torchscript(method + "_block" + std::to_string(k),
                                                     prefix + "block" + std::to_string(k) + ".");
    if (block.empty()) return {};
    s += block;
  }
  s += "def " + method + "(self, x: Tensor, t: Tensor) -> Tensor:\n";
  s += "    tt = t.reshape(-1)\n";
  s += "    if tt.size(0) == 1 and x.size(0) != 1:\n        tt = tt.expand(x.size(0))\n";
  // TorchScript compiled from C++ resolves no torch.<dtype> names: dtypes by their codes.
  const std::string f64 = std::to_string(static_cast<int>(c10::ScalarType::Double));
  const std::string i64 = std::to_string(static_cast<int>(c10::ScalarType::Long));
  s += "    idx = (tt.to(" + f64 + ") * " + std::to_string(n) + ").floor().clamp(0, " +
       std::to_string(n - 1) + ").to(" + i64 + ")\n";
  s += "    local = tt * " + std::to_string(n) + ".0 - idx.to(tt.dtype)\n";
  s += "    out = torch.zeros_like(x)\n";
  for (int64_t k = 0; k < n; ++k) {
    s += "    rows = (idx == " + std::to_string(k) + ").nonzero().reshape(-1)\n";
    s += "    if rows.numel() > 0:\n        out = out.index_copy(0, rows, self." + method +
         "_block" + std::to_string(k) + "(x.index_select(0, rows), local.index_select(0, rows)))\n";
  }
  return s + "    return out\n";
}

void VelocityFieldImpl::set_labels(const torch::Tensor& labels) {
  CNF_CHECK(!labels.defined(), "this network is not class-conditional; train it with --classes K ",
            "(an image data set with labels and --arch unet) to give it labels");
}

std::vector<int64_t> parse_channel_mult(const std::string& text) {
  std::vector<int64_t> out;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',' || c == '+') {
      if (cur.empty()) continue;
      try {
        size_t used = 0;
        out.push_back(std::stoll(cur, &used));
        CNF_CHECK(used == cur.size() && out.back() >= 1, "");
      } catch (const std::exception&) {
        fail("channel_mult '", text, "': '", cur, "' is not a positive integer; write e.g. 1,2");
      }
      cur.clear();
    } else if (c != ' ') {
      cur += c;
    }
  }
  CNF_CHECK(!out.empty(), "channel_mult '", text, "' is empty; write e.g. 1,2");
  return out;
}

VelocityField make_model(const ModelSpec& spec) {
  CNF_CHECK(spec.blocks >= 1, "blocks must be >= 1 (the number of stacked networks), got ",
            spec.blocks);
  if (spec.blocks > 1) {
    ModelSpec one = spec;
    one.blocks = 1;
    std::vector<VelocityField> b;
    for (int64_t k = 0; k < spec.blocks; ++k) b.push_back(make_model(one));
    return std::make_shared<StackedVelocityImpl>(std::move(b));
  }
  if (spec.arch == "unet") {
    CNF_CHECK(spec.channels >= 1 && spec.height >= 1 && spec.width_px >= 1 &&
                  spec.channels * spec.height * spec.width_px == spec.dim,
              "unet needs an image data set (its shape C x H x W must give dim ", spec.dim,
              ", got ", spec.channels, "x", spec.height, "x", spec.width_px,
              "); use --data fashion-mnist or png:FOLDER");
    return std::make_shared<UNetVelocityImpl>(
        UNetOptions(spec.channels, spec.height, spec.width_px)
            .base(spec.width)
            .channel_mult(parse_channel_mult(spec.channel_mult))
            .res_blocks(spec.res_blocks)
            .attention(spec.attention)
            .classes(spec.classes));
  }
  if (spec.arch == "mlp")
    return std::make_shared<MLPVelocityImpl>(MLPOptions(spec.dim)
                                                 .width(spec.width)
                                                 .depth(spec.depth)
                                                 .activation(spec.activation)
                                                 .time_embedding(spec.time_embedding)
                                                 .fourier_features(spec.fourier_features));
  if (spec.arch == "hollow") {
    CNF_CHECK(spec.time_embedding == "concat",
              "the hollow network takes time as one input; drop --time-embedding ",
              spec.time_embedding, " (or use --arch mlp)");
    return std::make_shared<HollowVelocityImpl>(
        HollowOptions(spec.dim).width(spec.width).depth(spec.depth).activation(spec.activation));
  }
  CNF_CHECK(spec.arch != "custom", "this network was built by a program's own network factory ",
            "(arch=custom); only that program can rebuild it: pass the factory to ",
            "train::load_checkpoint");
  fail("unknown model architecture '", spec.arch, "'; valid names: mlp, hollow, unet");
}

std::vector<std::string> model_names() { return {"mlp", "hollow", "unet"}; }

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace cnf::nn
