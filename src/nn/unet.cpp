#include "cnf/nn/unet.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <numeric>

#include "cnf/core/error.h"
#include "cnf/core/text.h"

namespace cnf::nn {

namespace {
namespace F = torch::nn::functional;

torch::nn::GroupNorm group_norm(int64_t channels, int64_t groups) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::gcd(channels, groups), channels));
}
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2));
}
}  // namespace

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, int64_t emb, int64_t groups) {
  norm1 = register_module("norm1", group_norm(in, groups));
  conv1 = register_module("conv1", conv(in, out, 3));
  emb_proj = register_module("emb_proj", torch::nn::Linear(emb, out));
  norm2 = register_module("norm2", group_norm(out, groups));
  conv2 = register_module("conv2", conv(out, out, 3));
  if (in != out) skip = register_module("skip", conv(in, out, 1));
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& emb) {
  auto h = conv1(torch::silu(norm1(x)));
  h = h + emb_proj(emb).unsqueeze(-1).unsqueeze(-1);
  h = conv2(torch::silu(norm2(h)));
  return (skip ? skip(x) : x) + h;
}

AttentionBlockImpl::AttentionBlockImpl(int64_t channels, int64_t groups) {
  norm = register_module("norm", group_norm(channels, groups));
  qkv = register_module("qkv", conv(channels, 3 * channels, 1));
  proj = register_module("proj", conv(channels, channels, 1));
}

torch::Tensor AttentionBlockImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  auto parts = qkv(norm(x)).reshape({b, 3, c, hw}).unbind(1);
  // Single-head dot-product attention over positions (Vaswani et al. 2017).
  auto weights = torch::softmax(
      torch::bmm(parts[0].transpose(1, 2), parts[1]) / std::sqrt(static_cast<double>(c)),
      -1);                                                                    // [b, hw, hw]
  auto h = torch::bmm(parts[2], weights.transpose(1, 2)).reshape(x.sizes());  // [b, c, h, w]
  return x + proj(h);
}

UNetVelocityImpl::UNetVelocityImpl(const UNetOptions& o) : options(o) {
  CNF_CHECK(o.channels() >= 1 && o.height() >= 1 && o.width() >= 1, "unet image shape must be ",
            "positive, got ", o.channels(), "x", o.height(), "x", o.width());
  CNF_CHECK(o.base() >= 1, "unet base channels (--width) must be >= 1, got ", o.base());
  CNF_CHECK(!o.channel_mult().empty(), "unet channel_mult needs at least one level");
  CNF_CHECK(o.res_blocks() >= 1, "unet res_blocks must be >= 1, got ", o.res_blocks());
  CNF_CHECK(o.classes() >= 0, "unet classes must be >= 0, got ", o.classes());
  CNF_CHECK(o.groups() >= 1, "unet groups must be >= 1, got ", o.groups());
  const int64_t levels = static_cast<int64_t>(o.channel_mult().size());
  CNF_CHECK((std::min(o.height(), o.width()) >> (levels - 1)) >= 1, "unet: ", levels,
            " levels halve a ", o.height(), "x", o.width(),
            " image below one pixel; use fewer channel_mult entries");
  const int64_t emb = 4 * o.base();
  time1 = register_module("time1", torch::nn::Linear(o.base(), emb));
  time2 = register_module("time2", torch::nn::Linear(emb, emb));
  if (o.classes() > 0)
    label_embedding =
        register_module("label_embedding", torch::nn::Embedding(o.classes() + 1, emb));
  conv_in = register_module("conv_in", conv(o.channels(), o.base(), 3));
  int64_t ch = o.base();
  std::vector<int64_t> level_ch;
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t out = o.base() * o.channel_mult()[i];
    for (int64_t r = 0; r < o.res_blocks(); ++r) {
      down->push_back(ResBlock(ch, out, emb, o.groups()));
      ch = out;
    }
    level_ch.push_back(ch);
    if (i + 1 < levels) down_sample->push_back(conv(ch, ch, 3, 2));
  }
  mid1 = register_module("mid1", ResBlock(ch, ch, emb, o.groups()));
  if (o.attention())
    mid_attention = register_module("mid_attention", AttentionBlock(ch, o.groups()));
  mid2 = register_module("mid2", ResBlock(ch, ch, emb, o.groups()));
  for (int64_t i = levels - 1; i >= 0; --i) {
    const int64_t out = level_ch[i];
    for (int64_t r = 0; r < o.res_blocks(); ++r) {
      // Only a level's first block takes the skip connection (forward() concatenates it
      // there); res_blocks > 1 used to give every block the wider input and fail in forward.
      up->push_back(ResBlock(r == 0 ? ch + level_ch[i] : ch, out, emb, o.groups()));
      ch = out;
    }
    if (i > 0) up_sample->push_back(conv(ch, ch, 3));
  }
  register_module("down", down);
  register_module("down_sample", down_sample);
  register_module("up", up);
  register_module("up_sample", up_sample);
  norm_out = register_module("norm_out", group_norm(ch, o.groups()));
  conv_out = register_module("conv_out", conv(ch, o.channels(), 3));
}

void UNetVelocityImpl::set_labels(const torch::Tensor& labels) {
  CNF_CHECK(!labels.defined() || options.classes() > 0, "this unet is not class-conditional; ",
            "train it with --classes K to give it labels");
  CNF_CHECK(!labels.defined() || labels.dim() == 1, "labels must be [B], got ", labels.sizes());
  if (labels.defined())
    CNF_CHECK(labels.numel() == 0 || labels.max().item<int64_t>() < options.classes(), "label ",
              labels.max().item<int64_t>(), " is not one of the ", options.classes(),
              " classes of this network (0..", options.classes() - 1, ")");
  labels_ = labels;
}

torch::Tensor UNetVelocityImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  const auto& o = options;
  const int64_t b = x.size(0);
  CNF_CHECK(x.numel() == b * o.channels() * o.height() * o.width(), "unet for ", o.channels(), "x",
            o.height(), "x", o.width(), " images got input of shape ", x.sizes());
  auto h = x.reshape({b, o.channels(), o.height(), o.width()});
  // Sinusoidal features of 1000 t: DDPM's integer-step scale, so the lowest frequency
  // (1/10000 per step) spans the path and the highest resolves single steps.
  auto tt = t.to(x.scalar_type()).reshape({-1});
  if (tt.size(0) == 1 && b != 1) tt = tt.expand({b});
  const int64_t half = o.base() / 2;
  auto freqs = torch::exp(torch::arange(half, x.options()) *
                          (-std::log(10000.0) / static_cast<double>(std::max<int64_t>(half, 1))));
  auto phase = (1000.0 * tt).unsqueeze(1) * freqs.unsqueeze(0);
  auto temb = torch::cat({torch::sin(phase), torch::cos(phase)}, 1);
  if (temb.size(1) < o.base())
    temb = torch::cat({temb, torch::zeros({b, o.base() - temb.size(1)}, x.options())}, 1);
  auto emb = time2(torch::silu(time1(temb)));
  if (o.classes() > 0) {
    torch::Tensor lab;
    if (labels_.defined()) {
      CNF_CHECK(labels_.size(0) == b, "unet has ", labels_.size(0), " labels for a batch of ", b,
                "; set_labels() must match the batch");
      lab =
          torch::where(labels_ < 0, torch::full_like(labels_, o.classes()), labels_).to(x.device());
    } else {
      lab = torch::full({b}, o.classes(),
                        torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    }
    emb = emb + label_embedding(lab);
  }
  emb = torch::silu(emb);

  h = conv_in(h);
  std::vector<torch::Tensor> skips;
  const int64_t levels = static_cast<int64_t>(o.channel_mult().size());
  size_t block = 0;
  for (int64_t i = 0; i < levels; ++i) {
    for (int64_t r = 0; r < o.res_blocks(); ++r) h = down[block++]->as<ResBlock>()->forward(h, emb);
    skips.push_back(h);
    if (i + 1 < levels) h = down_sample[i]->as<torch::nn::Conv2d>()->forward(h);
  }
  h = mid1(h, emb);
  if (mid_attention) h = mid_attention(h);
  h = mid2(h, emb);
  block = 0;
  size_t ups = 0;
  for (int64_t i = levels - 1; i >= 0; --i) {
    const auto& skip = skips[i];
    if (h.size(2) != skip.size(2) || h.size(3) != skip.size(3)) {
      // Nearest up-sampling to the skip's size (odd sizes such as 7 -> 4 -> 7 included).
      h = F::interpolate(h, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{skip.size(2), skip.size(3)})
                                .mode(torch::kNearest));
      h = up_sample[ups++]->as<torch::nn::Conv2d>()->forward(h);
    }
    for (int64_t r = 0; r < o.res_blocks(); ++r)
      h = up[block++]->as<ResBlock>()->forward(r == 0 ? torch::cat({h, skip}, 1) : h, emb);
  }
  h = conv_out(torch::silu(norm_out(h)));
  return h.reshape(x.sizes());
}

std::string UNetVelocityImpl::torchscript(const std::string& method,
                                          const std::string& prefix) const {
  // forward(), statement for statement, with helpers for the residual and attention blocks.
  const auto& o = options;
  auto p = [&](const std::string& name) { return "self." + torchscript_name(prefix + name); };
  auto gn = [&](const std::string& in, const std::string& name, const torch::nn::GroupNorm& n) {
    return "torch.group_norm(" + in + ", " + std::to_string(n->options.num_groups()) + ", " +
           p(name + ".weight") + ", " + p(name + ".bias") + ", " + float_literal(n->options.eps()) +
           ")";
  };
  auto cv = [&](const std::string& in, const std::string& name, const torch::nn::Conv2d& c) {
    const auto& co = c->options;
    const std::string stride = std::to_string((*co.stride())[0]);
    const std::string pad = std::to_string((*c10::get<torch::ExpandingArray<2>>(co.padding()))[0]);
    return "torch.conv2d(" + in + ", " + p(name + ".weight") + ", " + p(name + ".bias") + ", [" +
           stride + ", " + stride + "], [" + pad + ", " + pad + "])";
  };
  auto conv_at = [](const torch::nn::ModuleList& list, size_t i) {
    return torch::nn::Conv2d(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(list->ptr(i)));
  };
  auto res_at = [](const torch::nn::ModuleList& list, size_t i) -> const ResBlockImpl& {
    return *std::dynamic_pointer_cast<ResBlockImpl>(list->ptr(i));
  };
  auto lin = [&](const std::string& in, const std::string& name) {
    return "torch.addmm(" + p(name + ".bias") + ", " + in + ", " + p(name + ".weight") + ".t())";
  };
  auto res = [&](const std::string& in, const std::string& name, const ResBlockImpl& r) {
    std::string s =
        "    hr = " +
        cv("torch.silu(" + gn(in, name + ".norm1", r.norm1) + ")", name + ".conv1", r.conv1) + "\n";
    s += "    hr = hr + " + lin("emb", name + ".emb_proj") + ".unsqueeze(-1).unsqueeze(-1)\n";
    s += "    hr = " +
         cv("torch.silu(" + gn("hr", name + ".norm2", r.norm2) + ")", name + ".conv2", r.conv2) +
         "\n";
    s += "    h = " + (r.skip ? cv(in, name + ".skip", r.skip) : in) + " + hr\n";
    return s;
  };
  const std::string labeled = o.classes() > 0 ? method + "_labeled" : method;
  std::string s = "def " + labeled + "(self, x: Tensor, t: Tensor" +
                  (o.classes() > 0 ? ", labels: Tensor" : "") + ") -> Tensor:\n";
  const std::string C = std::to_string(o.channels()), H = std::to_string(o.height()),
                    W = std::to_string(o.width()), base = std::to_string(o.base());
  const int64_t half = o.base() / 2;
  s += "    b = x.size(0)\n    h = x.reshape(b, " + C + ", " + H + ", " + W + ")\n";
  s += "    tt = t.to(x.dtype).reshape(-1)\n";
  s += "    if tt.size(0) == 1 and b != 1:\n        tt = tt.expand(b)\n";
  s += "    freqs = torch.exp(torch.arange(" + std::to_string(half) +
       ", dtype=x.dtype, device=x.device) * " +
       float_literal(-std::log(10000.0) / static_cast<double>(std::max<int64_t>(half, 1))) + ")\n";
  s += "    phase = (1000.0 * tt).unsqueeze(1) * freqs.unsqueeze(0)\n";
  s += "    temb = torch.cat([torch.sin(phase), torch.cos(phase)], 1)\n";
  if (2 * half < o.base())
    s += "    temb = torch.cat([temb, torch.zeros([b, " + std::to_string(o.base() - 2 * half) +
         "], dtype=x.dtype, device=x.device)], 1)\n";
  s += "    emb = " + lin("torch.silu(" + lin("temb", "time1") + ")", "time2") + "\n";
  if (o.classes() > 0) {
    s += "    lab = torch.where(labels < 0, torch.full_like(labels, " +
         std::to_string(o.classes()) + "), labels).to(x.device)\n";
    s += "    emb = emb + torch.embedding(" + p("label_embedding.weight") + ", lab)\n";
  }
  s += "    emb = torch.silu(emb)\n";
  s += "    h = " + cv("h", "conv_in", conv_in) + "\n";
  const int64_t levels = static_cast<int64_t>(o.channel_mult().size());
  size_t block = 0;
  for (int64_t i = 0; i < levels; ++i) {
    for (int64_t r = 0; r < o.res_blocks(); ++r, ++block)
      s += res("h", "down." + std::to_string(block), res_at(down, block));
    s += "    skip" + std::to_string(i) + " = h\n";
    if (i + 1 < levels)
      s += "    h = " + cv("h", "down_sample." + std::to_string(i), conv_at(down_sample, i)) + "\n";
  }
  s += res("h", "mid1", *mid1);
  if (mid_attention) {
    const int64_t c = mid_attention->qkv->options.in_channels();
    s += "    c = h.size(1)\n    hw = h.size(2) * h.size(3)\n";
    s += "    qkv = " +
         cv(gn("h", "mid_attention.norm", mid_attention->norm), "mid_attention.qkv",
            mid_attention->qkv) +
         ".reshape(b, 3, c, hw)\n";
    s += "    q = qkv[:, 0]\n    k = qkv[:, 1]\n    v = qkv[:, 2]\n";
    s += "    att = torch.softmax(torch.bmm(q.transpose(1, 2), k) / " +
         float_literal(std::sqrt(static_cast<double>(c))) + ", -1)\n";
    s += "    ha = torch.bmm(v, att.transpose(1, 2)).reshape(h.size())\n";
    s += "    h = h + " + cv("ha", "mid_attention.proj", mid_attention->proj) + "\n";
  }
  s += res("h", "mid2", *mid2);
  block = 0;
  size_t ups = 0;
  // Spatial sizes of the levels, as the C++ forward meets them: an up-sampling happens
  // exactly where a level's size differs from the one below it.
  std::vector<std::pair<int64_t, int64_t>> size{{o.height(), o.width()}};
  for (int64_t i = 1; i < levels; ++i)
    size.push_back({(size.back().first - 1) / 2 + 1, (size.back().second - 1) / 2 + 1});
  for (int64_t i = levels - 1; i >= 0; --i) {
    const std::string skip = "skip" + std::to_string(i);
    if (i + 1 < levels && size[i] != size[i + 1]) {
      s += "    h = torch.upsample_nearest2d(h, [" + std::to_string(size[i].first) + ", " +
           std::to_string(size[i].second) + "], None, None)\n";
      s += "    h = " + cv("h", "up_sample." + std::to_string(ups), conv_at(up_sample, ups)) + "\n";
      ++ups;
    }
    for (int64_t r = 0; r < o.res_blocks(); ++r, ++block)
      s += res(r == 0 ? "torch.cat([h, " + skip + "], 1)" : "h", "up." + std::to_string(block),
               res_at(up, block));
  }
  s += "    h = " + cv("torch.silu(" + gn("h", "norm_out", norm_out) + ")", "conv_out", conv_out) +
       "\n";
  s += "    return h.reshape(x.size())\n";
  if (o.classes() > 0)
    s += "\ndef " + method + "(self, x: Tensor, t: Tensor) -> Tensor:\n    return self." + labeled +
         "(x, t, torch.full([x.size(0)], -1, dtype=" +
         std::to_string(static_cast<int>(c10::ScalarType::Long)) + ", device=x.device))\n";
  return s;
}

// --------------------------------------------------------------------- guidance

GuidedFieldImpl::GuidedFieldImpl(VelocityField n, torch::Tensor l, double w)
    : net(std::move(n)), labels(std::move(l)), guidance(w) {
  CNF_CHECK(net && net->classes() > 0,
            "classifier-free guidance needs a class-conditional network");
  CNF_CHECK(std::isfinite(guidance), "guidance weight must be finite, got ", guidance);
  register_module("net", net);
}

torch::Tensor GuidedFieldImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  const int64_t b = x.size(0);
  CNF_CHECK(labels.defined() && labels.size(0) == b, "guided field has ",
            labels.defined() ? labels.size(0) : 0, " labels for a batch of ", b);
  if (guidance == 0) {
    net->set_labels(labels);
    auto out = net->forward(x, t);
    net->set_labels({});
    return out;
  }
  // Both passes in one batch: conditional rows first, then the same rows with no label.
  auto tt = t.reshape({-1});
  if (tt.size(0) == 1 && b != 1) tt = tt.expand({b});
  net->set_labels(torch::cat({labels, torch::full_like(labels, -1)}));
  auto both = net->forward(torch::cat({x, x}), torch::cat({tt, tt}));
  net->set_labels({});
  auto cond = both.slice(0, 0, b), uncond = both.slice(0, b);
  return cond + guidance * (cond - uncond);
}

}  // namespace cnf::nn
