#include "cnf/nn/unet.h"

#include <torch/torch.h>

#include <cmath>
#include <numeric>

#include "cnf/core/error.h"

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
  auto weights = torch::softmax(torch::bmm(parts[0].transpose(1, 2), parts[1]) /
                                    std::sqrt(static_cast<double>(c)),
                                -1);                                    // [b, hw, hw]
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
    label_embedding = register_module("label_embedding", torch::nn::Embedding(o.classes() + 1, emb));
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
  if (o.attention()) mid_attention = register_module("mid_attention", AttentionBlock(ch, o.groups()));
  mid2 = register_module("mid2", ResBlock(ch, ch, emb, o.groups()));
  for (int64_t i = levels - 1; i >= 0; --i) {
    const int64_t out = level_ch[i];
    for (int64_t r = 0; r < o.res_blocks(); ++r) {
      up->push_back(ResBlock(ch + level_ch[i], out, emb, o.groups()));
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
      lab = torch::where(labels_ < 0, torch::full_like(labels_, o.classes()), labels_)
                .to(x.device());
    } else {
      lab = torch::full({b}, o.classes(), torch::TensorOptions().dtype(torch::kLong).device(x.device()));
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

// --------------------------------------------------------------------- guidance

GuidedFieldImpl::GuidedFieldImpl(VelocityField n, torch::Tensor l, double w)
    : net(std::move(n)), labels(std::move(l)), guidance(w) {
  CNF_CHECK(net && net->classes() > 0, "classifier-free guidance needs a class-conditional network");
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
