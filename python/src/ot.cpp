// python/src/ot.cpp — cnf.ot (exact OT by network simplex or the assignment solver, Sinkhorn,
// W1/W2) and cnf.coupling (the OT-CFM / SB-CFM minibatch pair samplers).
#include <pybind11/stl.h>

#include <memory>
#include <mutex>

#include "cnf/core/error.h"
#include "cnf/core/registry.h"
#include "cnf/core/runtime.h"
#include "cnf/coupling/coupling.h"
#include "cnf/metrics/distances.h"
#include "cnf/ot/emd.h"
#include "cnf/ot/sinkhorn.h"
#include "common.h"

namespace cnf::python {
namespace {

// An optional tensor for Python: None when undefined.
py::object maybe(const at::Tensor& t) { return t.defined() ? py::cast(t) : py::none(); }

// x [n, d] and y [m, d] with the same d and dtype (float64 when they differ).
std::pair<at::Tensor, at::Tensor> point_sets(const at::Tensor& x, const at::Tensor& y) {
  auto a = checked(x, "x"), b = checked(y, "y");
  CNF_CHECK(a.size(1) == b.size(1), "x has ", a.size(1), " columns but y has ", b.size(1),
            "; both are [n, d] point sets of the same dimension");
  if (a.scalar_type() != b.scalar_type()) return {a.to(at::kDouble), b.to(at::kDouble)};
  return {a, b};
}

// The weights, or uniform ones over n points when none were given.
at::Tensor or_uniform(const at::Tensor& w, int64_t n) {
  return w.defined() ? w : at::full({n}, 1.0 / static_cast<double>(n), at::kDouble);
}

at::Tensor checked_cost(const at::Tensor& c) {
  auto m = checked(c, "M");
  return m.to(at::kDouble);
}

ot::SinkhornOptions sinkhorn_options(double eps, double tol, int64_t max_iter, bool log_domain,
                                     double eps_scaling, const py::object& f_init,
                                     const py::object& g_init) {
  ot::SinkhornOptions o;
  o.epsilon = eps;
  o.tol = tol;
  o.max_iter = max_iter;
  o.log_domain = log_domain;
  o.eps_scaling = eps_scaling;
  if (!f_init.is_none()) o.f_init = f_init.cast<at::Tensor>().to(at::kDouble).contiguous();
  if (!g_init.is_none()) o.g_init = g_init.cast<at::Tensor>().to(at::kDouble).contiguous();
  o.validate();
  return o;
}

const char* kSinkhornDoc =
    "eps is the entropic regularization in the units of the cost: the plan minimizes\n"
    "<C, P> + eps KL(P | a b^T), whose minimizer equals that of POT's\n"
    "ot.sinkhorn(a, b, M, reg=eps) (<C, P> - reg H(P); the two objectives differ by a\n"
    "constant on the transport polytope). Stops when ||P 1 - a||_1 + ||P^T 1 - b||_1 <= tol\n"
    "or after max_iter iterations (result.converged says which). eps_scaling in (0, 1)\n"
    "starts at the cost range and shrinks eps by that factor (0 disables it); f_init and\n"
    "g_init warm-start from potentials of an earlier solve.";

}  // namespace

void bind_ot(py::module_& m) {
  py::class_<ot::EmdResult>(m, "ExactResult", "An exact optimal transport solution")
      .def_readonly("cost", &ot::EmdResult::cost, "<C, P>: the optimal transport cost")
      .def_readonly("plan", &ot::EmdResult::plan,
                    "[n, m] float64 plan; rows sum to a, columns to b")
      .def_property_readonly(
          "assignment", [](const ot::EmdResult& r) { return maybe(r.assignment); },
          "[n] int64 permutation (x[i] -> y[assignment[i]]) for n == m with uniform weights, "
          "else None")
      .def("__repr__", [](const ot::EmdResult& r) {
        return "ExactResult(cost=" + std::to_string(r.cost) +
               ", n=" + std::to_string(r.plan.size(0)) + ", m=" + std::to_string(r.plan.size(1)) +
               ")";
      });
  py::class_<ot::SinkhornResult>(m, "SinkhornResult", "An entropic optimal transport solution")
      .def_readonly("plan", &ot::SinkhornResult::plan, "[n, m] float64 entropic plan")
      .def_readonly("f", &ot::SinkhornResult::f, "dual potential of x, [n] float64")
      .def_readonly("g", &ot::SinkhornResult::g, "dual potential of y, [m] float64")
      .def_readonly("cost", &ot::SinkhornResult::cost, "<C, P>: transport cost of the plan")
      .def_readonly("marginal_error", &ot::SinkhornResult::marginal_error,
                    "||P 1 - a||_1 + ||P^T 1 - b||_1 at the last check")
      .def_readonly("iterations", &ot::SinkhornResult::iterations,
                    "iterations, those of the epsilon scaling included")
      .def_readonly("converged", &ot::SinkhornResult::converged, "marginal_error <= tol")
      .def_readonly("epsilon", &ot::SinkhornResult::epsilon, "the regularization used")
      .def("__repr__", [](const ot::SinkhornResult& r) { return r.report(); });

  m.def(
      "cost_matrix",
      [](const at::Tensor& x, const at::Tensor& y, const std::string& cost) {
        auto [a, b] = point_sets(x, y);
        const auto c = ot::parse_cost(cost);
        py::gil_scoped_release release;
        return ot::cost_matrix(a, b, c);
      },
      py::arg("x"), py::arg("y"), py::arg("cost") = "sqeuclidean",
      "C[i, j] = ||x_i - y_j||^2 (cost='sqeuclidean') or ||x_i - y_j|| ('euclidean').");
  m.def(
      "exact",
      [](const at::Tensor& x, const at::Tensor& y, const std::string& cost, const py::object& a,
         const py::object& b, const std::string& solver) {
        auto [xs, ys] = point_sets(x, y);
        const auto c = ot::parse_cost(cost);
        auto wa = checked_weights(a, "a", xs.size(0)), wb = checked_weights(b, "b", ys.size(0));
        static const Registry<ot::ExactSolver> solvers(
            "exact OT solver", {{"auto", ot::ExactSolver::automatic},
                                {"network-simplex", ot::ExactSolver::network_simplex},
                                {"assignment", ot::ExactSolver::assignment}});
        const auto s = solvers.get(solver);
        CNF_CHECK(!(wa.defined() || wb.defined()) || s != ot::ExactSolver::assignment,
                  "solver='assignment' needs uniform weights (a = b = None)");
        py::gil_scoped_release release;
        if (!wa.defined() && !wb.defined()) return ot::emd(xs, ys, c, s);
        wa = or_uniform(wa, xs.size(0));
        wb = or_uniform(wb, ys.size(0));
        return ot::emd_weighted(wa, wb, ot::cost_matrix(xs, ys, c));
      },
      py::arg("x"), py::arg("y"), py::arg("cost") = "sqeuclidean", py::arg("a") = py::none(),
      py::arg("b") = py::none(), py::arg("solver") = "auto",
      "Exact OT between the empirical measures of x [n, d] and y [m, d] (weights a, b; "
      "uniform when None). solver: 'auto' (the assignment solver for n == m with uniform "
      "weights, else network simplex), 'network-simplex' or 'assignment'. Returns an "
      "ExactResult (cost, plan, assignment).");
  m.def(
      "emd",
      [](const py::object& a, const py::object& b, const at::Tensor& M) {
        auto c = checked_cost(M);
        auto wa = checked_weights(a, "a", c.size(0)), wb = checked_weights(b, "b", c.size(1));
        wa = or_uniform(wa, c.size(0));
        wb = or_uniform(wb, c.size(1));
        py::gil_scoped_release release;
        return ot::emd_weighted(wa, wb, c);
      },
      py::arg("a"), py::arg("b"), py::arg("M"),
      "Exact OT for weights a [n], b [m] (None: uniform) and a cost matrix M [n, m], by "
      "network simplex (the arguments of POT's ot.emd). Returns an ExactResult.");
  m.def(
      "assignment",
      [](const at::Tensor& M) {
        auto c = checked_cost(M);
        CNF_CHECK(c.size(0) == c.size(1), "M has shape ", c.sizes(),
                  "; the assignment problem needs a square cost matrix");
        py::gil_scoped_release release;
        return ot::assignment(c);
      },
      py::arg("M"),
      "The permutation p minimizing sum_i M[i, p[i]] of a square cost matrix ([n] int64; "
      "scipy.optimize.linear_sum_assignment's column indices).");
  m.def(
      "sinkhorn",
      [](const at::Tensor& x, const at::Tensor& y, double eps, const std::string& cost,
         const py::object& a, const py::object& b, double tol, int64_t max_iter, bool log_domain,
         double eps_scaling, const py::object& f_init, const py::object& g_init) {
        auto [xs, ys] = point_sets(x, y);
        const auto c = ot::parse_cost(cost);
        auto wa = checked_weights(a, "a", xs.size(0)), wb = checked_weights(b, "b", ys.size(0));
        auto o = sinkhorn_options(eps, tol, max_iter, log_domain, eps_scaling, f_init, g_init);
        py::gil_scoped_release release;
        if (!wa.defined() && !wb.defined()) return ot::sinkhorn(xs, ys, c, o);
        wa = or_uniform(wa, xs.size(0));
        wb = or_uniform(wb, ys.size(0));
        return ot::sinkhorn_weighted(wa, wb, ot::cost_matrix(xs, ys, c), o);
      },
      py::arg("x"), py::arg("y"), py::arg("eps") = 0.05, py::arg("cost") = "sqeuclidean",
      py::arg("a") = py::none(), py::arg("b") = py::none(), py::arg("tol") = 1e-6,
      py::arg("max_iter") = 10000, py::arg("log_domain") = false, py::arg("eps_scaling") = 0.5,
      py::arg("f_init") = py::none(), py::arg("g_init") = py::none(),
      (std::string("Entropic OT between the point sets x [n, d] and y [m, d]. ") + kSinkhornDoc)
          .c_str());
  m.def(
      "sinkhorn_weighted",
      [](const py::object& a, const py::object& b, const at::Tensor& M, double eps, double tol,
         int64_t max_iter, bool log_domain, double eps_scaling, const py::object& f_init,
         const py::object& g_init) {
        auto c = checked_cost(M);
        auto wa = checked_weights(a, "a", c.size(0)), wb = checked_weights(b, "b", c.size(1));
        wa = or_uniform(wa, c.size(0));
        wb = or_uniform(wb, c.size(1));
        auto o = sinkhorn_options(eps, tol, max_iter, log_domain, eps_scaling, f_init, g_init);
        py::gil_scoped_release release;
        return ot::sinkhorn_weighted(wa, wb, c, o);
      },
      py::arg("a"), py::arg("b"), py::arg("M"), py::arg("eps") = 0.05, py::arg("tol") = 1e-6,
      py::arg("max_iter") = 10000, py::arg("log_domain") = false, py::arg("eps_scaling") = 0.5,
      py::arg("f_init") = py::none(), py::arg("g_init") = py::none(),
      (std::string("Entropic OT for weights a, b (None: uniform) and a cost matrix M [n, m] "
                   "(the arguments of POT's ot.sinkhorn). ") +
       kSinkhornDoc)
          .c_str());
  m.def(
      "w2",
      [](const at::Tensor& x, const at::Tensor& y) {
        auto [a, b] = point_sets(x, y);
        py::gil_scoped_release release;
        return metrics::w2(a, b);
      },
      py::arg("x"), py::arg("y"),
      "Exact 2-Wasserstein distance between the empirical measures of x and y.");
  m.def(
      "w1",
      [](const at::Tensor& x, const at::Tensor& y) {
        auto [a, b] = point_sets(x, y);
        py::gil_scoped_release release;
        return metrics::w1(a, b);
      },
      py::arg("x"), py::arg("y"),
      "Exact 1-Wasserstein distance (Euclidean ground cost) between x and y.");
}

// ------------------------------------------------------------------------ coupling

namespace {

// A seeded pair sampler over one of cnf's couplings; one generator, guarded (a Python
// user may call it from several threads).
class PairSampler {
 public:
  PairSampler(const std::string& method, double eps, double sigma, double tol, int64_t max_iter,
              double max_marginal_error, uint64_t seed)
      : gen_(make_generator(seed)) {
    coupling::CouplingOptions o;
    o.epsilon = eps;
    o.sigma = sigma;
    o.tol = tol;
    o.max_iter = max_iter;
    o.max_marginal_error = max_marginal_error;
    coupling_ = coupling::make_coupling(method, o);
  }
  std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x0, const at::Tensor& x1) {
    auto a = checked(x0, "x0", 2, true, true), b = checked(x1, "x1", 2, true, true);
    CNF_CHECK(a.sizes().slice(1) == b.sizes().slice(1), "x0 has samples of shape ",
              a.sizes().slice(1), " but x1 of shape ", b.sizes().slice(1),
              "; a coupling pairs samples of one space");
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return coupling_->pair(a, b, gen_);
  }
  const coupling::Coupling& coupling() const { return *coupling_; }

 private:
  coupling::CouplingPtr coupling_;
  at::Generator gen_;
  std::mutex mutex_;
};

}  // namespace

void bind_coupling(py::module_& m) {
  m.def("methods", &coupling::coupling_names, "The coupling names PairSampler accepts.");
  py::class_<PairSampler>(m, "PairSampler",
                          "Pairs a minibatch of data x0 with noise x1 (OT-CFM, Tong et al. "
                          "2023): 'independent', 'exact' (the minibatch OT assignment), "
                          "'sinkhorn' (partners drawn from the entropic plan at eps) or 'sb' "
                          "(Schrodinger-bridge CFM: the entropic plan at eps = 2 sigma^2; add "
                          "the bridge noise sigma sqrt(t (1 - t)) z to the path yourself). "
                          "Costs are squared Euclidean distances of the flattened samples.")
      .def(py::init<const std::string&, double, double, double, int64_t, double, uint64_t>(),
           py::arg("method") = "exact", py::arg("eps") = 0.1, py::arg("sigma") = 0.5,
           py::arg("tol") = 1e-4, py::arg("max_iter") = 2000, py::arg("max_marginal_error") = 0.05,
           py::arg("seed") = 0)
      .def("pair", &PairSampler::pair, py::arg("x0"), py::arg("x1"),
           "Returns (x0, x1) reordered so that the pairs follow the coupling; rows keep their "
           "tensors' dtype. Seeded: the same seed and batches give the same pairs.")
      .def("sample_plan", &PairSampler::pair, py::arg("x0"), py::arg("x1"),
           "The same as pair() (the name torchcfm's OTPlanSampler uses).")
      .def_property_readonly(
          "method", [](const PairSampler& s) { return s.coupling().name(); }, "the coupling's name")
      .def_property_readonly(
          "description", [](const PairSampler& s) { return s.coupling().describe(); },
          "the coupling and its parameters, e.g. 'sb(sigma=0.5)'")
      .def_property_readonly(
          "sigma", [](const PairSampler& s) { return s.coupling().bridge_sigma(); },
          "the Brownian-bridge sigma of 'sb' (0 for the others)")
      .def_property_readonly(
          "report", [](const PairSampler& s) { return s.coupling().report(); },
          "what the entropic plans so far did (e.g. how many did not converge); '' if nothing")
      .def("__repr__",
           [](const PairSampler& s) { return "PairSampler(" + s.coupling().describe() + ")"; });
}

}  // namespace cnf::python
