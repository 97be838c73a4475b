// Sinkhorn with a stabilized kernel and a log-domain route (Peyre & Cuturi 2019, §4.4;
// Schmitzer 2019, §3.1) and ot::solve.

#include "cnf/ot/sinkhorn.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "cnf/core/error.h"
#include "cnf/core/memory.h"
#include "cnf/core/runtime.h"

namespace cnf::ot {

namespace {

at::Tensor check_potential(const at::Tensor& p, const char* name, int64_t expected,
                           const at::TensorOptions& like) {
  CNF_CHECK(p.dim() == 1 && p.size(0) == expected, "warm-start potential ", name,
            " must be a 1-D tensor of ", expected, " values (one per point), got shape ", p.sizes(),
            "; pass the ", name, " of a previous solve on sets of the same sizes");
  check_finite(p, std::string("warm-start potential ") + name);
  return p.to(like);
}

// log sum_j exp(m_ij) along `dim`: LibTorch's logsumexp subtracts the maximum first.
at::Tensor lse(const at::Tensor& m, int64_t dim) { return torch::logsumexp(m, {dim}); }

// Scalings u, v beyond exp(+-kAbsorbAbove) are moved into the potentials and the kernel is
// rebuilt, so its entries and the scalings stay far from double's range limits.
constexpr double kAbsorbAbove = 50.0;

}  // namespace

void SinkhornOptions::validate() const {
  CNF_CHECK(std::isfinite(epsilon) && epsilon > 0, "Sinkhorn epsilon must be finite and > 0, got ",
            epsilon, "; use e.g. 0.05 (in cost units), or the exact solver for epsilon -> 0");
  CNF_CHECK(std::isfinite(tol) && tol > 0, "Sinkhorn tol must be finite and > 0, got ", tol,
            "; use e.g. 1e-6 (L1 marginal error)");
  CNF_CHECK(max_iter >= 1, "Sinkhorn max_iter must be >= 1, got ", max_iter);
  CNF_CHECK(check_every >= 1, "Sinkhorn check_every must be >= 1, got ", check_every);
  CNF_CHECK(eps_scaling == 0 || (eps_scaling > 0 && eps_scaling < 1),
            "Sinkhorn eps_scaling must be in (0, 1) or 0 (off), got ", eps_scaling);
  CNF_CHECK(scaling_iters >= 1, "Sinkhorn scaling_iters must be >= 1, got ", scaling_iters);
}

std::string SinkhornResult::report() const {
  std::ostringstream os;
  os.precision(4);
  if (converged) {
    os << "Sinkhorn converged in " << iterations << " iterations (marginal error " << marginal_error
       << " <= tol " << tol << ", epsilon " << epsilon << ")";
  } else {
    os << "Sinkhorn did not converge in " << iterations << " iterations: marginal error "
       << marginal_error << " > tol " << tol << " at epsilon " << epsilon
       << "; raise max_iter, raise epsilon, loosen tol, or warm-start from the potentials of "
          "a larger epsilon";
  }
  return os.str();
}

SinkhornResult sinkhorn_weighted(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cost,
                                 const SinkhornOptions& options) {
  options.validate();
  CNF_CHECK(cost.defined(), "cost is an undefined tensor; pass an [n, m] cost matrix");
  CNF_CHECK(cost.dim() == 2, "cost must be a 2-D [n, m] matrix, got shape ", cost.sizes());
  CNF_CHECK(cost.size(0) > 0 && cost.size(1) > 0, "cost matrix is empty (shape ", cost.sizes(),
            "); OT needs at least one point on each side");
  check_finite(cost, "cost");
  const int64_t n = cost.size(0);
  const int64_t m = cost.size(1);
  const auto opts = cost.options().dtype(torch::kFloat64);
  const at::Tensor w_a = checked_weights(a, "a", n).to(opts);
  const at::Tensor w_b = checked_weights(b, "b", m).to(opts);
  const at::Tensor log_a = w_a.log(), log_b = w_b.log();
  const double eps = options.epsilon;
  const at::Tensor c = cost.to(opts).contiguous();

  // Dual potentials in cost units: P_ij = a_i b_j exp((f_i + g_j - C_ij) / e).
  at::Tensor f = options.f_init.defined() ? check_potential(options.f_init, "f", n, opts)
                                          : torch::zeros({n}, opts);
  at::Tensor g = options.g_init.defined() ? check_potential(options.g_init, "g", m, opts)
                                          : torch::zeros({m}, opts);

  SinkhornResult r;
  r.epsilon = eps;
  r.tol = options.tol;
  r.marginal_error = std::numeric_limits<double>::infinity();

  // The stabilized kernel K_ij = a_i b_j exp((f_i + g_j - C_ij) / e) of the potentials at
  // the last absorption, and scalings u [n], v [m] with P = diag(u) K diag(v).
  double e = 0;
  at::Tensor K, u, v;
  bool log_domain = options.log_domain;  // also set once the kernel route meets an underflow
  auto build = [&](double stage_e) {
    e = stage_e;
    u = torch::ones({n}, opts);
    v = torch::ones({m}, opts);
    if (log_domain) return;
    // In place in one buffer: a fresh [n, m] temporary per pass costs page faults.
    if (!K.defined()) K = large_empty(c.sizes(), c.scalar_type(), c.device());
    // (at::mul_out with a Scalar factor computes into a fresh [n, m] tensor and copies it:
    // 128 MB of page faults per rebuild at n = 4096.)
    K.copy_(c).mul_(-1.0 / e);
    K.add_((f / e + log_a).unsqueeze(1)).add_((g / e + log_b).unsqueeze(0)).exp_();
  };
  // Moves the scalings into the potentials: u = v = 1 afterwards, the plan unchanged.
  auto absorb = [&] {
    if (log_domain) return;
    f = f + e * u.log();
    g = g + e * v.log();
  };
  // One iteration: the two exact half-steps, u = a / (K v) then v = b / (K^T u), which
  // make the row and then the column marginals exact. In the log domain the same
  // half-steps update f and g directly through log-sum-exp (no underflow, ~10x slower).
  auto log_half_steps = [&] {
    const at::Tensor c_e = c * (1.0 / e);
    f = -e * lse((g / e + log_b).unsqueeze(0) - c_e, 1);
    g = -e * lse((f / e + log_a).unsqueeze(1) - c_e, 0);
  };
  auto iterate = [&] {
    if (log_domain) {
      log_half_steps();
    } else {
      u = w_a / torch::mv(K, v);
      v = w_b / torch::mv(K.t(), u);
    }
    ++r.iterations;
  };
  // At a check: the scalings stay finite and moderate, else they are absorbed (kernel
  // rebuilt) or, when K v underflowed to 0, the solve falls back to the log domain from
  // the potentials of the last absorption.
  auto stabilize = [&] {
    if (log_domain) return;
    // LibTorch's max propagates NaN (0 * inf in K^T u), so `big` is finite only if all are.
    const double big = torch::cat({u, v}).log().abs().max().item<double>();
    if (!std::isfinite(big)) {
      // The potentials of the last absorption may belong to a larger epsilon: one pair of
      // log-domain half-steps at e (a repair, not counted) makes the columns exact again.
      log_domain = true;
      build(e);
      log_half_steps();
    } else if (big > kAbsorbAbove) {
      absorb();
      build(e);
    }
  };
  // Row marginal error of the current plan (columns are exact after a v-update).
  auto marginal_error = [&] {
    const at::Tensor row =
        log_domain
            ? lse((f / e + log_a).unsqueeze(1) + (g / e + log_b).unsqueeze(0) - c / e, 1).exp()
            : u * torch::mv(K, v);
    return (row - w_a).abs().sum().item<double>();
  };

  // Epsilon scaling: a few iterations at each of R, q R, ... above epsilon, R the range
  // of the costs (a constant added to C changes no plan).
  if (options.eps_scaling > 0 && !options.f_init.defined()) {
    const double range = (c.max() - c.min()).item<double>();
    // The last iteration is kept for epsilon itself: after its g-update every column of
    // the plan sums to b_j, so the plan is finite even when max_iter is tiny.
    const int64_t budget = options.max_iter - 1;
    for (double s = range; s > eps && r.iterations < budget; s *= options.eps_scaling) {
      build(s);
      for (int64_t k = 0; k < options.scaling_iters && r.iterations < budget; ++k) iterate();
      stabilize();
      absorb();
    }
  }

  build(eps);
  for (int64_t it = 1; r.iterations < options.max_iter; ++it) {
    iterate();
    if (it % options.check_every == 0 || r.iterations == options.max_iter) {
      stabilize();
      r.marginal_error = marginal_error();
      if (r.marginal_error <= options.tol) {
        r.converged = true;
        break;
      }
    }
  }
  CNF_CHECK(std::isfinite(r.marginal_error),
            "Sinkhorn produced a non-finite marginal error at "
            "epsilon ",
            eps,
            "; the cost or weights are degenerate (e.g. all weights on points "
            "with infinite cost)");
  // One [n, m] buffer, filled in place.
  r.plan = large_empty(c.sizes(), c.scalar_type(), c.device());
  if (log_domain) {
    r.plan.copy_(c)
        .mul_(-1.0 / eps)
        .add_((f / eps + log_a).unsqueeze(1))
        .add_((g / eps + log_b).unsqueeze(0))
        .exp_();
  } else {
    at::mul_out(r.plan, K, u.unsqueeze(1)).mul_(v.unsqueeze(0));
    absorb();
  }
  r.f = f;
  r.g = g;
  r.cost = at::dot(r.plan.view({-1}), c.view({-1})).item<double>();  // <C, P>, no temporary
  return r;
}

SinkhornResult sinkhorn(const at::Tensor& x, const at::Tensor& y, Cost cost,
                        const SinkhornOptions& options) {
  options.validate();
  const at::Tensor c = cost_matrix(x, y, cost);
  const int64_t n = c.size(0), m = c.size(1);
  return sinkhorn_weighted(torch::full({n}, 1.0 / static_cast<double>(n), torch::kFloat64),
                           torch::full({m}, 1.0 / static_cast<double>(m), torch::kFloat64), c,
                           options);
}

Method parse_method(const std::string& name) {
  if (name == "emd") return Method::emd;
  if (name == "sinkhorn") return Method::sinkhorn;
  fail("unknown OT method '", name, "'; valid methods are: emd, sinkhorn");
}

Solution solve(const at::Tensor& x, const at::Tensor& y, const SolveOptions& options,
               const at::Tensor& a, const at::Tensor& b) {
  Solution s;
  const bool uniform = !a.defined() && !b.defined();
  if (options.method == Method::emd && uniform) {
    EmdResult e = emd(x, y, options.cost);
    s.cost = e.cost;
    s.plan = e.plan;
    s.assignment = e.assignment;
    return s;
  }
  const at::Tensor c = cost_matrix(x, y, options.cost);
  const int64_t n = c.size(0), m = c.size(1);
  const at::Tensor wa =
      a.defined() ? a : torch::full({n}, 1.0 / static_cast<double>(n), torch::kFloat64);
  const at::Tensor wb =
      b.defined() ? b : torch::full({m}, 1.0 / static_cast<double>(m), torch::kFloat64);
  if (options.method == Method::emd) {
    EmdResult e = emd_weighted(wa, wb, c);
    s.cost = e.cost;
    s.plan = e.plan;
    return s;
  }
  SinkhornResult r = sinkhorn_weighted(wa, wb, c, options.sinkhorn);
  s.cost = r.cost;
  s.plan = r.plan;
  s.converged = r.converged;
  s.iterations = r.iterations;
  s.marginal_error = r.marginal_error;
  s.report = r.report();
  return s;
}

}  // namespace cnf::ot
