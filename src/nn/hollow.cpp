#include "cnf/nn/hollow.h"

#include <torch/torch.h>

#include <cmath>
#include <string>

#include "cnf/core/error.h"

namespace cnf::nn {

HollowVelocityImpl::HollowVelocityImpl(const HollowOptions& o)
    : options(o), activation(parse_activation(o.activation())) {
  const int64_t d = o.dim(), w = o.width();
  CNF_CHECK(d >= 2,
            "the hollow network needs dim >= 2 (each dimension is conditioned on the others), got ",
            d);
  CNF_CHECK(w >= 1, "hollow network width must be >= 1 (units per dimension), got ", w);
  CNF_CHECK(o.depth() >= 1, "hollow network depth must be >= 1 (conditioner layers), got ",
            o.depth());
  // LibTorch's Linear initialization: uniform in +-1/sqrt(fan_in) for weights and biases.
  auto uniform = [](std::vector<int64_t> shape, int64_t fan_in) {
    const double s = 1.0 / std::sqrt(static_cast<double>(fan_in));
    return torch::empty(shape).uniform_(-s, s);
  };
  w_in = register_parameter("w_in", uniform({d, w, d + 1}, d));  // fan-in: d - 1 coordinates and t
  b_in = register_parameter("b_in", uniform({d, w}, d));
  mask = torch::ones({d, w, d + 1});
  for (int64_t i = 0; i < d; ++i) mask[i].select(1, i).zero_();
  mask = register_buffer("mask", mask);
  for (int64_t k = 1; k < o.depth(); ++k) {
    w_block.push_back(register_parameter("w_block" + std::to_string(k), uniform({d, w, w}, w)));
    b_block.push_back(register_parameter("b_block" + std::to_string(k), uniform({d, w}, w)));
  }
  t_h = register_parameter("t_h", uniform({d, w, w}, w + 2));
  t_x = register_parameter("t_x", uniform({d, w}, w + 2));
  t_t = register_parameter("t_t", uniform({d, w}, w + 2));
  t_b = register_parameter("t_b", uniform({d, w}, w + 2));
  t_w = register_parameter("t_w", uniform({d, w}, w));
  t_e = register_parameter("t_e", uniform({d}, w));
}

torch::Tensor HollowVelocityImpl::run(const torch::Tensor& x, const torch::Tensor& t,
                                      torch::Tensor* div) {
  const int64_t d = options.dim(), w = options.width();
  CNF_CHECK(x.dim() == 2 && x.size(1) == d, "the hollow network takes x [B, ", d, "], got ",
            x.sizes());
  const int64_t b = x.size(0);
  auto tt = t.to(x.scalar_type()).reshape({-1, 1});
  if (tt.size(0) == 1 && b != 1) tt = tt.expand({b, 1});
  CNF_CHECK(tt.size(0) == b, "t must hold one time or one per row (", b, "), got ", t.sizes());
  // Conditioner, kept as [dim, B, width] (one batched product per block-diagonal layer).
  auto w0 = (w_in * mask).to(x.scalar_type()).reshape({d * w, d + 1});
  auto h = torch::addmm(b_in.to(x.scalar_type()).reshape({d * w}), torch::cat({x, tt}, 1),
                        w0.t());                                // [B, d w]
  h = activate(activation, h.view({b, d, w}).transpose(0, 1));  // [d, B, w]
  for (size_t k = 0; k < w_block.size(); ++k)
    h = activate(activation,
                 torch::baddbmm(b_block[k].unsqueeze(1), h, w_block[k].transpose(1, 2)));
  // Transformer: z_i = A_i h_i + a_i x_i + c_i t + b_i.
  auto xd = x.t().unsqueeze(2);  // [d, B, 1]
  auto z = torch::baddbmm(t_b.unsqueeze(1), h, t_h.transpose(1, 2)) + xd * t_x.unsqueeze(1) +
           tt.t().unsqueeze(2) * t_t.unsqueeze(1);  // [d, B, w]
  auto s = activate(activation, z);
  auto v = (s * t_w.unsqueeze(1)).sum(2) + t_e.unsqueeze(1);  // [d, B]
  if (div) {
    // d v_i / d x_i with h_i fixed: sum_k w_ik act'(z_ik) a_ik.
    *div = (activate_derivative(activation, z) * (t_w * t_x).unsqueeze(1)).sum(2).sum(0);
  }
  return v.t();
}

std::string HollowVelocityImpl::torchscript(const std::string& method,
                                            const std::string& prefix) const {
  // run() without the divergence, statement for statement.
  const std::string d = std::to_string(options.dim()), w = std::to_string(options.width());
  auto p = [&](const std::string& name) { return "self." + torchscript_name(prefix + name); };
  auto act = [&](const std::string& e) { return activation_torchscript(activation, e); };
  std::string s = "def " + method + "(self, x: Tensor, t: Tensor) -> Tensor:\n";
  s += "    b = x.size(0)\n    tt = t.to(x.dtype).reshape(-1, 1)\n";
  s += "    if tt.size(0) == 1 and b != 1:\n        tt = tt.expand(b, 1)\n";
  s += "    w0 = (" + p("w_in") + " * " + p("mask") + ").to(x.dtype).reshape(" + d + " * " + w +
       ", " + d + " + 1)\n";
  s += "    h = torch.addmm(" + p("b_in") + ".to(x.dtype).reshape(" + d + " * " + w +
       "), torch.cat([x, tt], 1), w0.t())\n";
  s += "    h = " + act("h.view(b, " + d + ", " + w + ").transpose(0, 1)") + "\n";
  for (size_t k = 0; k < w_block.size(); ++k) {
    const std::string i = std::to_string(k + 1);
    s += "    h = " +
         act("torch.baddbmm(" + p("b_block" + i) + ".unsqueeze(1), h, " + p("w_block" + i) +
             ".transpose(1, 2))") +
         "\n";
  }
  s += "    z = torch.baddbmm(" + p("t_b") + ".unsqueeze(1), h, " + p("t_h") +
       ".transpose(1, 2)) + x.t().unsqueeze(2) * " + p("t_x") + ".unsqueeze(1) + " +
       "tt.t().unsqueeze(2) * " + p("t_t") + ".unsqueeze(1)\n";
  s += "    v = (" + act("z") + " * " + p("t_w") + ".unsqueeze(1)).sum(2) + " + p("t_e") +
       ".unsqueeze(1)\n";
  return s + "    return v.t()\n";
}

torch::Tensor HollowVelocityImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  return run(x, t, nullptr);
}

std::pair<torch::Tensor, torch::Tensor> HollowVelocityImpl::forward_with_divergence(
    const torch::Tensor& x, const torch::Tensor& t) {
  torch::Tensor div;
  auto v = run(x, t, &div);
  return {v, div};
}

}  // namespace cnf::nn
