#include "cnf/coupling/coupling.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "cnf/core/error.h"
#include "cnf/core/registry.h"
#include "cnf/core/spec.h"
#include "cnf/ot/emd.h"
#include "cnf/ot/sinkhorn.h"

namespace cnf::coupling {

namespace {

void check_batches(const at::Tensor& x_0, const at::Tensor& x_1, const char* who) {
  CNF_CHECK(x_0.dim() >= 1 && x_1.dim() >= 1 && x_0.size(0) > 0 && x_1.size(0) > 0, who,
            " coupling needs non-empty batches, got x_0 ", x_0.sizes(), " and x_1 ", x_1.sizes());
  CNF_CHECK(x_0.numel() / x_0.size(0) == x_1.numel() / x_1.size(0), who,
            " coupling needs samples of equal size, got x_0 ", x_0.sizes(), " and x_1 ",
            x_1.sizes());
}

// Squared Euclidean cost between the flattened samples, [n, m] float64.
at::Tensor batch_cost(const at::Tensor& x_0, const at::Tensor& x_1) {
  return ot::cost_matrix(x_0.detach().reshape({x_0.size(0), -1}),
                         x_1.detach().reshape({x_1.size(0), -1}), ot::Cost::sqeuclidean);
}

// For each row i one column j ~ P[i, :] / sum_j P[i, :]: with uniform rows the pairs
// (i, j) then follow P exactly, and every x_0 appears once.
std::pair<at::Tensor, at::Tensor> sample_rows(const at::Tensor& plan, const at::Tensor& x_0,
                                              const at::Tensor& x_1, at::Generator& gen) {
  const at::Tensor j = torch::multinomial(plan, 1, /*replacement=*/true, gen).view(-1);
  return {x_0, x_1.index_select(0, j.to(x_1.device()))};
}

// A coupling's spec parameters and the CouplingOptions field each one sets.
struct Kind {
  std::vector<SpecParam> params;
  std::vector<double CouplingOptions::*> fields;
  CouplingPtr (*make)(const CouplingOptions&);
};

const Registry<Kind>& couplings() {
  // Parameter defaults are CouplingOptions' defaults, so canonical text omits them.
  static const CouplingOptions d;
  static const Registry<Kind> r(
      "coupling",
      {{"independent",
        {{},
         {},
         [](const CouplingOptions&) { return CouplingPtr(std::make_shared<Independent>()); }}},
       {"exact",
        {{}, {}, [](const CouplingOptions&) { return CouplingPtr(std::make_shared<ExactOT>()); }}},
       {"sinkhorn",
        {{{"eps", d.epsilon}},
         {&CouplingOptions::epsilon},
         [](const CouplingOptions& o) { return CouplingPtr(std::make_shared<EntropicOT>(o)); }}},
       {"sb", {{{"sigma", d.sigma}}, {&CouplingOptions::sigma}, [](const CouplingOptions& o) {
                 return CouplingPtr(std::make_shared<SchrodingerBridge>(o));
               }}}});
  return r;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> ExactOT::pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                                at::Generator& gen) const {
  check_batches(x_0, x_1, "exact");
  const at::Tensor c = batch_cost(x_0, x_1).to(torch::kCPU);
  if (x_0.size(0) == x_1.size(0)) {
    const at::Tensor perm = ot::assignment(c);
    return {x_0, x_1.index_select(0, perm.to(x_1.device()))};
  }
  const int64_t n = c.size(0), m = c.size(1);
  const ot::EmdResult e =
      ot::emd_weighted(torch::full({n}, 1.0 / static_cast<double>(n), torch::kFloat64),
                       torch::full({m}, 1.0 / static_cast<double>(m), torch::kFloat64), c);
  return sample_rows(e.plan, x_0, x_1, gen);
}

EntropicOT::EntropicOT(CouplingOptions options) : options_(options) {
  CNF_CHECK(std::isfinite(options_.epsilon) && options_.epsilon > 0,
            "sinkhorn coupling epsilon must be finite and > 0, got ", options_.epsilon,
            "; use e.g. --coupling-eps 0.1 (units of squared distance)");
  CNF_CHECK(std::isfinite(options_.max_marginal_error) && options_.max_marginal_error >= 0,
            "sinkhorn coupling max_marginal_error must be finite and >= 0, got ",
            options_.max_marginal_error);
}

std::pair<at::Tensor, at::Tensor> EntropicOT::pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                                   at::Generator& gen) const {
  check_batches(x_0, x_1, name().c_str());
  const at::Tensor c = batch_cost(x_0, x_1);
  const int64_t n = c.size(0), m = c.size(1);
  ot::SinkhornOptions so;
  so.epsilon = options_.epsilon;
  so.tol = options_.tol;
  so.max_iter = options_.max_iter;
  const ot::SinkhornResult r =
      ot::sinkhorn_weighted(torch::full({n}, 1.0 / static_cast<double>(n), torch::kFloat64),
                            torch::full({m}, 1.0 / static_cast<double>(m), torch::kFloat64), c, so);
  const at::Tensor plan = r.plan.to(torch::kCPU);
  // Rows are drawn from P[i, :] / (P 1)_i: the pairs' x_1 marginal is
  // q = (1/n) sum_i P[i, :] / (P 1)_i, uniform (1/m) only for a converged plan.
  double err = 0;
  if (!r.converged) {
    const at::Tensor q = (plan / plan.sum(1, true)).mean(0);
    err = (q * static_cast<double>(m) - 1.0).abs().max().item<double>();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.plans;
    if (!r.converged) {
      ++stats_.unconverged;
      stats_.max_marginal_error = std::max(stats_.max_marginal_error, err);
    }
  }
  if (!r.converged)
    CNF_CHECK(err <= options_.max_marginal_error, name(), " coupling: a minibatch plan did not ",
              "converge in ", options_.max_iter, " iterations and its x_1 marginal is off by ",
              100.0 * err, "% (more than ", 100.0 * options_.max_marginal_error,
              "%), which would bias the noise the model learns from; raise the entropic ",
              "epsilon (--coupling-eps, --bridge-sigma; now ", options_.epsilon,
              ") or use --coupling exact");
  // multinomial draws from the generator on its device: sample on the CPU.
  return sample_rows(plan, x_0, x_1, gen);
}

EntropicOT::PlanStats EntropicOT::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::string EntropicOT::report() const {
  const PlanStats s = stats();
  if (s.unconverged == 0) return "";
  std::ostringstream os;
  os << name() << " coupling: " << s.unconverged << " of " << s.plans
     << " minibatch plans did not converge in " << options_.max_iter
     << " iterations (largest x_1 marginal error " << 100.0 * s.max_marginal_error << "%, allowed "
     << 100.0 * options_.max_marginal_error << "%)";
  return os.str();
}

std::string EntropicOT::describe() const {
  return canonical_spec("sinkhorn", couplings().get("sinkhorn").params, {options_.epsilon});
}

namespace {
CouplingOptions sb_options(CouplingOptions o) {
  CNF_CHECK(std::isfinite(o.sigma) && o.sigma > 0, "sb coupling sigma must be finite and > 0, got ",
            o.sigma, "; use e.g. --bridge-sigma 0.5");
  o.epsilon = 2.0 * o.sigma * o.sigma;
  return o;
}
}  // namespace

SchrodingerBridge::SchrodingerBridge(CouplingOptions options)
    : EntropicOT(sb_options(options)), sigma_(options.sigma) {}

std::string SchrodingerBridge::describe() const {
  return canonical_spec("sb", couplings().get("sb").params, {sigma_});
}

CouplingPtr make_coupling(const std::string& spec, const CouplingOptions& options) {
  const SpecText text = split_spec(spec, "coupling");
  const Kind& kind = couplings().get(text.name);
  // The options' values are the fallbacks of the keys the spec leaves out.
  auto params = kind.params;
  for (size_t i = 0; i < params.size(); ++i) params[i].fallback = options.*kind.fields[i];
  const auto values = spec_values(text, params, "coupling");
  CouplingOptions o = options;
  for (size_t i = 0; i < values.size(); ++i) o.*kind.fields[i] = values[i];
  return kind.make(o);
}

std::string canonical_coupling(const std::string& text) {
  // Checkpoints written before couplings were spec text store "sinkhorn(epsilon=0.3)" and
  // "sb(sigma=0.5)".
  const auto open = text.find('(');
  if (open != std::string::npos && text.back() == ')') {
    const auto name = text.substr(0, open);
    auto inner = text.substr(open + 1, text.size() - open - 2);
    if (inner.rfind("epsilon=", 0) == 0) inner = "eps=" + inner.substr(8);
    return make_coupling(name + ":" + inner)->describe();
  }
  return make_coupling(text)->describe();
}
std::vector<std::string> coupling_names() { return couplings().names(); }

}  // namespace cnf::coupling
