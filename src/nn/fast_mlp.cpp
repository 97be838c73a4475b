#include "cnf/nn/fast_mlp.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <atomic>

#include "cnf/core/error.h"
#include "cnf/nn/velocity.h"
#include "fast_mlp_kernels.h"

namespace cnf::nn::fast {

namespace {

std::atomic<bool> g_enabled{true};

constexpr int64_t kMaxWidth = 256;  // the kernels keep one row of activations on the stack

// What the kernels need besides the tensors.
struct Shape {
  int64_t dim = 0, fourier = 0, width = 0;
  int layers = 0;
  kernel::Act act = kernel::Act::tanh;
};

Shape shape_of(const MLPVelocityImpl& mlp) {
  Shape s;
  s.dim = mlp.options.dim();
  s.fourier = mlp.time_embedding == TimeEmbedding::fourier ? mlp.options.fourier_features() : 0;
  s.width = mlp.options.width();
  s.layers = static_cast<int>(mlp.layers.size());
  s.act = static_cast<kernel::Act>(static_cast<int>(mlp.activation));
  return s;
}

// The time input as one contiguous column of x's dtype: [B] or a single value.
torch::Tensor time_column(const torch::Tensor& t, const torch::Tensor& x) {
  return t.detach().to(x.scalar_type()).reshape({-1}).contiguous();
}

template <class T>
kernel::Net<T> make_net(const Shape& s, const torch::Tensor& freq, torch::TensorList params) {
  kernel::Net<T> net;
  net.dim = s.dim;
  net.fourier = s.fourier;
  net.freq = s.fourier ? freq.data_ptr<T>() : nullptr;
  net.layers = s.layers;
  net.width = s.width;
  net.act = s.act;
  for (int k = 0; k < s.layers; ++k) {
    net.w[k] = params[2 * k].data_ptr<T>();
    net.b[k] = params[2 * k + 1].data_ptr<T>();
  }
  return net;
}

template <class T>
kernel::Rows<T> rows_of(const torch::Tensor& x, const torch::Tensor& t, int64_t begin,
                        int64_t end) {
  kernel::Rows<T> r;
  r.rows = end - begin;
  r.x = x.data_ptr<T>() + begin * x.size(1);
  r.t_stride = t.numel() == 1 ? 0 : 1;
  r.t = t.data_ptr<T>() + begin * r.t_stride;
  return r;
}

// Contiguous, detached parameters in x's dtype (views when they already are).
std::vector<torch::Tensor> kernel_params(torch::TensorList params, const torch::Tensor& x) {
  std::vector<torch::Tensor> p;
  p.reserve(params.size());
  for (const auto& q : params) p.push_back(q.detach().to(x.scalar_type()).contiguous());
  return p;
}

torch::Tensor frequencies_of(const MLPVelocityImpl& mlp, const torch::Tensor& x) {
  if (mlp.time_embedding != TimeEmbedding::fourier) return torch::empty({0}, x.options());
  return mlp.frequencies.detach().to(x.scalar_type()).contiguous();
}

// Rows of the batch per parallel task: whole cache blocks.
int64_t grain(const Shape& s) { return kernel::block_rows(s.width); }

// Forward through the kernels; `saved` ([B, 2 (L-1) width]) is filled when defined.
torch::Tensor run_forward(const Shape& s, const torch::Tensor& x, const torch::Tensor& t,
                          const torch::Tensor& freq, torch::TensorList params,
                          const torch::Tensor& saved) {
  auto out = torch::empty({x.size(0), s.dim}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fast_mlp_forward", [&] {
    const auto net = make_net<scalar_t>(s, freq, params);
    scalar_t* sv = saved.defined() ? saved.data_ptr<scalar_t>() : nullptr;
    const int64_t ld = 2 * (s.layers - 1) * s.width;
    at::parallel_for(0, x.size(0), grain(s), [&](int64_t b, int64_t e) {
      kernel::forward(net, rows_of<scalar_t>(x, t, b, e), out.data_ptr<scalar_t>() + b * s.dim,
                      sv ? sv + b * ld : nullptr);
    });
  });
  return out;
}

// Calls f(begin, end) on LibTorch's intra-op threads over row ranges that start at
// multiples of the cache block (the JVP kernels' saved layout depends on it).
template <class F>
void for_blocks(const Shape& s, int64_t n, const F& f) {
  const int64_t big = kernel::block_rows(s.width), blocks = (n + big - 1) / big;
  at::parallel_for(0, blocks, 1, [&](int64_t b, int64_t e) { f(b * big, std::min(n, e * big)); });
}

// Runs backward(gw, gb, begin, end) over the rows [0, n) with one zeroed gradient
// accumulator per thread (gw[k], gb[k]: layer k's weight and bias gradients) and returns
// the flat sum of the accumulators, parameters in the order of p.
template <class T, class F>
torch::Tensor parameter_gradients(const Shape& s, const std::vector<torch::Tensor>& p, int64_t n,
                                  const F& backward) {
  int64_t total = 0;
  for (const auto& q : p) total += q.numel();
  const int nthreads = at::get_num_threads();
  auto acc = torch::zeros({nthreads, total}, p[0].options());
  for_blocks(s, n, [&](int64_t b, int64_t e) {
    T* a = acc.data_ptr<T>() + at::get_thread_num() * total;
    T* gw[kernel::kMaxLayers];
    T* gb[kernel::kMaxLayers];
    for (int k = 0; k < s.layers; ++k) {
      gw[k] = a;
      a += p[2 * k].numel();
      gb[k] = a;
      a += p[2 * k + 1].numel();
    }
    backward(gw, gb, b, e);
  });
  return nthreads == 1 ? acc[0] : acc.sum(0);
}

// Splits the flat gradient `sum` into out[first_out + i] for the parameters that need it
// (tensor input first_in + i), in each parameter's own shape and dtype.
void hand_out(torch::autograd::AutogradContext* ctx, const torch::Tensor& sum,
              const std::vector<torch::Tensor>& params, size_t first_in,
              torch::autograd::variable_list& out, size_t first_out) {
  int64_t off = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i].numel();
    if (ctx->needs_input_grad(first_in + i))
      out[first_out + i] =
          sum.slice(0, off, off + n).view(params[i].sizes()).to(params[i].scalar_type());
    off += n;
  }
}

// Encodes Shape in the autograd context.
void save_shape(torch::autograd::AutogradContext* ctx, const Shape& s) {
  ctx->saved_data["dim"] = s.dim;
  ctx->saved_data["fourier"] = s.fourier;
  ctx->saved_data["width"] = s.width;
  ctx->saved_data["layers"] = static_cast<int64_t>(s.layers);
  ctx->saved_data["act"] = static_cast<int64_t>(s.act);
}
Shape load_shape(torch::autograd::AutogradContext* ctx) {
  Shape s;
  s.dim = ctx->saved_data["dim"].toInt();
  s.fourier = ctx->saved_data["fourier"].toInt();
  s.width = ctx->saved_data["width"].toInt();
  s.layers = static_cast<int>(ctx->saved_data["layers"].toInt());
  s.act = static_cast<kernel::Act>(ctx->saved_data["act"].toInt());
  return s;
}

// Inputs: x [B, dim], t (detached, x's dtype), frequencies, then (weight, bias) of every
// layer. Output v [B, dim].
struct FusedMLP : public torch::autograd::Function<FusedMLP> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& t, const torch::Tensor& freq, Shape s,
                               torch::TensorList params) {
    auto xc = x.contiguous();
    auto p = kernel_params(params, xc);
    auto saved = torch::empty({x.size(0), 2 * (s.layers - 1) * s.width}, x.options());
    auto out = run_forward(s, xc, t, freq, p, saved);
    save_shape(ctx, s);
    std::vector<torch::Tensor> keep{x, t, freq, saved};
    keep.insert(keep.end(), params.begin(), params.end());
    ctx->save_for_backward(keep);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Shape s = load_shape(ctx);
    auto v = ctx->get_saved_variables();
    const auto& x = v[0];
    const auto& t = v[1];
    const auto& freq = v[2];
    const auto& saved = v[3];
    std::vector<torch::Tensor> params(v.begin() + 4, v.end());
    // Gradients by argument position (x, t, freq, shape, params); needs_input_grad counts
    // tensor inputs only (x, t, freq, params).
    torch::autograd::variable_list out(4 + params.size());
    const bool want_x = ctx->needs_input_grad(0);
    if (torch::GradMode::is_enabled()) {
      // create_graph: the gradient must itself be differentiable, so recompute the
      // forward pass with LibTorch's ops and differentiate that graph.
      auto h = embed_time(x, t, s.fourier ? freq : torch::Tensor());
      auto y = mlp_layers(h, params, static_cast<Activation>(static_cast<int>(s.act)));
      std::vector<torch::Tensor> wrt;
      if (want_x) wrt.push_back(x);
      for (size_t i = 0; i < params.size(); ++i)
        if (ctx->needs_input_grad(3 + i)) wrt.push_back(params[i]);
      auto g = torch::autograd::grad({y}, wrt, {grads[0]}, /*retain_graph=*/true,
                                     /*create_graph=*/true, /*allow_unused=*/true);
      size_t j = 0;
      if (want_x) out[0] = g[j++];
      for (size_t i = 0; i < params.size(); ++i)
        if (ctx->needs_input_grad(3 + i)) out[4 + i] = g[j++];
      return out;
    }
    auto xc = x.detach().contiguous();
    auto go = grads[0].to(x.scalar_type()).contiguous();
    auto p = kernel_params(params, xc);
    auto gx = want_x ? torch::empty_like(xc) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "fast_mlp_backward", [&] {
      const auto net = make_net<scalar_t>(s, freq, p);
      const int64_t ld = 2 * (s.layers - 1) * s.width;
      auto sum = parameter_gradients<scalar_t>(
          s, p, xc.size(0), [&](scalar_t* const* gw, scalar_t* const* gb, int64_t b, int64_t e) {
            kernel::backward(net, rows_of<scalar_t>(xc, t, b, e),
                             saved.data_ptr<scalar_t>() + b * ld,
                             go.data_ptr<scalar_t>() + b * s.dim, gw, gb,
                             want_x ? gx.data_ptr<scalar_t>() + b * s.dim : nullptr);
          });
      hand_out(ctx, sum, params, 3, out, 4);
    });
    if (want_x) out[0] = gx;
    return out;
  }
};

// Inputs: x [B, dim], t (detached, x's dtype), frequencies, the direction u [B, dim], then
// (weight, bias) of every layer. Outputs v and (dv/dx) u, each [B, dim]. First order
// only: the backward pass is not itself differentiable.
struct FusedJvp : public torch::autograd::Function<FusedJvp> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& x, const torch::Tensor& t,
                                                const torch::Tensor& freq, const torch::Tensor& u,
                                                Shape s, torch::TensorList params) {
    auto xc = x.contiguous();
    auto uc = u.detach().to(x.scalar_type()).contiguous();
    auto p = kernel_params(params, xc);
    auto saved =
        torch::empty({x.size(0) * kernel::jvp_saved_per_row(s.layers, s.width)}, x.options());
    auto [v, jv] = run_jvp(s, xc, t, freq, uc, p, saved);
    save_shape(ctx, s);
    std::vector<torch::Tensor> keep{x, t, freq, uc, saved};
    keep.insert(keep.end(), params.begin(), params.end());
    ctx->save_for_backward(keep);
    return {v, jv};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    CNF_CHECK(!torch::GradMode::is_enabled(),
              "second derivatives through MLPVelocity::forward_with_jvp are not implemented; "
              "differentiate forward() with create_graph instead");
    const Shape s = load_shape(ctx);
    auto v = ctx->get_saved_variables();
    const auto& x = v[0];
    const auto& t = v[1];
    const auto& freq = v[2];
    const auto& u = v[3];
    const auto& saved = v[4];
    std::vector<torch::Tensor> params(v.begin() + 5, v.end());
    // Gradients by argument position (x, t, freq, u, shape, params); needs_input_grad
    // counts tensor inputs only (x, t, freq, u, params).
    torch::autograd::variable_list out(5 + params.size());
    const bool want_x = ctx->needs_input_grad(0);
    auto xc = x.detach().contiguous();
    auto prep = [&](const torch::Tensor& g) {
      return g.defined() ? g.to(x.scalar_type()).contiguous() : g;
    };
    auto gv = prep(grads[0]), gjv = prep(grads[1]);
    auto p = kernel_params(params, xc);
    auto gx = want_x ? torch::empty_like(xc) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "fast_mlp_jvp_backward", [&] {
      const auto net = make_net<scalar_t>(s, freq, p);
      const int64_t ld = kernel::jvp_saved_per_row(s.layers, s.width), d = s.dim;
      auto rows = [&](const torch::Tensor& g, int64_t b) {
        return g.defined() ? g.data_ptr<scalar_t>() + b * d : nullptr;
      };
      auto sum = parameter_gradients<scalar_t>(
          s, p, xc.size(0), [&](scalar_t* const* gw, scalar_t* const* gb, int64_t b, int64_t e) {
            kernel::jvp_backward(net, rows_of<scalar_t>(xc, t, b, e),
                                 u.data_ptr<scalar_t>() + b * d,
                                 saved.data_ptr<scalar_t>() + b * ld, rows(gv, b), rows(gjv, b), gw,
                                 gb, want_x ? gx.data_ptr<scalar_t>() + b * d : nullptr);
          });
      hand_out(ctx, sum, params, 4, out, 5);
    });
    if (want_x) out[0] = gx;
    return out;
  }

  // v and J u through the kernels, `saved` filled when defined.
  static std::pair<torch::Tensor, torch::Tensor> run_jvp(
      const Shape& s, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& freq,
      const torch::Tensor& u, torch::TensorList params, const torch::Tensor& saved) {
    auto v = torch::empty({x.size(0), s.dim}, x.options());
    auto jv = torch::empty_like(v);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fast_mlp_jvp", [&] {
      const auto net = make_net<scalar_t>(s, freq, params);
      const int64_t ld = kernel::jvp_saved_per_row(s.layers, s.width), d = s.dim;
      scalar_t* sv = saved.defined() ? saved.data_ptr<scalar_t>() : nullptr;
      for_blocks(s, x.size(0), [&](int64_t b, int64_t e) {
        kernel::jvp_forward(net, rows_of<scalar_t>(x, t, b, e), u.data_ptr<scalar_t>() + b * d,
                            v.data_ptr<scalar_t>() + b * d, jv.data_ptr<scalar_t>() + b * d,
                            sv ? sv + b * ld : nullptr);
      });
    });
    return {v, jv};
  }
};
}  // namespace

bool cpu_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

Prewarm::Prewarm() {
  if (cpu_supported()) thread_ = std::thread(kernel::warm_up_gemm);
}

Prewarm::~Prewarm() {
  if (thread_.joinable()) thread_.join();
}

void set_enabled(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }

std::string unsupported_reason(const MLPVelocityImpl& mlp, const torch::Tensor& x,
                               const torch::Tensor& t) {
  if (!cpu_supported()) return "this CPU lacks AVX2/FMA";
  if (!x.device().is_cpu()) return "x is not on the CPU";
  if (x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kDouble)
    return "x is neither float32 nor float64";
  if (x.dim() != 2 || x.size(1) != mlp.options.dim()) return "x is not [B, dim]";
  if (t.numel() != 1 && t.numel() != x.size(0)) return "t is neither one time nor one per row";
  if (mlp.options.width() > kMaxWidth) return "width above 256";
  if (static_cast<int>(mlp.layers.size()) > kernel::kMaxLayers) return "depth above 8";
  for (const auto& l : mlp.layers)
    if (!l->weight.device().is_cpu() || l->weight.scalar_type() != x.scalar_type())
      return "parameters are not on the CPU in x's dtype";
  return "";
}

torch::Tensor forward(const MLPVelocityImpl& mlp, const torch::Tensor& x, const torch::Tensor& t) {
  const auto why = unsupported_reason(mlp, x, t);
  CNF_CHECK(why.empty(), "the fast MLP path does not apply: ", why);
  const Shape s = shape_of(mlp);
  auto tc = time_column(t, x);
  auto freq = frequencies_of(mlp, x);
  auto params = mlp.layer_parameters();
  bool needs_grad = x.requires_grad();
  for (const auto& p : params) needs_grad = needs_grad || p.requires_grad();
  // As a TensorList (not a vector) so that autograd sees every parameter as an input.
  if (torch::GradMode::is_enabled() && needs_grad)
    return FusedMLP::apply(x, tc, freq, s, torch::TensorList(params));
  auto xc = x.contiguous();
  return run_forward(s, xc, tc, freq, kernel_params(params, xc), torch::Tensor());
}

std::pair<torch::Tensor, torch::Tensor> forward_with_divergence(const MLPVelocityImpl& mlp,
                                                                const torch::Tensor& x,
                                                                const torch::Tensor& t) {
  const auto why = unsupported_reason(mlp, x, t);
  CNF_CHECK(why.empty(), "the fast MLP path does not apply: ", why);
  torch::NoGradGuard no_grad;
  const Shape s = shape_of(mlp);
  auto xc = x.contiguous();
  auto tc = time_column(t, x);
  auto freq = frequencies_of(mlp, x);
  auto p = kernel_params(mlp.layer_parameters(), xc);
  auto out = torch::empty({x.size(0), s.dim}, x.options());
  auto div = torch::empty({x.size(0)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fast_mlp_divergence", [&] {
    const auto net = make_net<scalar_t>(s, freq, p);
    at::parallel_for(0, x.size(0), grain(s), [&](int64_t b, int64_t e) {
      kernel::divergence(net, rows_of<scalar_t>(xc, tc, b, e), out.data_ptr<scalar_t>() + b * s.dim,
                         div.data_ptr<scalar_t>() + b);
    });
  });
  return {out, div};
}

}  // namespace cnf::nn::fast

namespace cnf::nn::fast {

std::pair<torch::Tensor, torch::Tensor> forward_with_jvp(const MLPVelocityImpl& mlp,
                                                         const torch::Tensor& x,
                                                         const torch::Tensor& t,
                                                         const torch::Tensor& u) {
  const auto why = unsupported_reason(mlp, x, t);
  CNF_CHECK(why.empty(), "the fast MLP path does not apply: ", why);
  CNF_CHECK(u.sizes() == x.sizes(), "forward_with_jvp: the direction must have the shape of x ",
            x.sizes(), ", got ", u.sizes());
  const Shape s = shape_of(mlp);
  auto tc = time_column(t, x);
  auto freq = frequencies_of(mlp, x);
  auto params = mlp.layer_parameters();
  bool needs_grad = x.requires_grad();
  for (const auto& p : params) needs_grad = needs_grad || p.requires_grad();
  if (torch::GradMode::is_enabled() && needs_grad) {
    auto out = FusedJvp::apply(x, tc, freq, u, s, torch::TensorList(params));
    return {out[0], out[1]};
  }
  auto xc = x.contiguous();
  return FusedJvp::run_jvp(s, xc, tc, freq, u.detach().to(x.scalar_type()).contiguous(),
                           kernel_params(params, xc), torch::Tensor());
}

}  // namespace cnf::nn::fast
