// python/src/flows.cpp — fields, solves and likelihoods for Python: cnf.Field (a TorchScript
// module or a Python callable (x, t) -> v), cnf.solve and cnf.log_likelihood; the options
// they share with cnf.Flow (python/src/flow.cpp).
//
// The GIL is released for all C++ work; a Python callable takes it back only while it runs.
// An exception it raises unwinds through the solver and reaches Python unchanged.
#include <pybind11/stl.h>
#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/ode/solve.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/samplers.h"
#include "common.h"

namespace cnf::python {

density::LikelihoodOptions likelihood_options(const std::string& divergence, int64_t probes,
                                              bool gaussian_probes, const std::string& method,
                                              int64_t steps, double rtol, double atol,
                                              double t_start, bool analytic_ok) {
  density::LikelihoodOptions o;
  o.solve = ode::SolveOptions::of(method, steps, rtol, atol);
  o.divergence.method = density::parse_divergence(divergence);
  // The analytic route exists for cnf's MLP and hollow networks; others use autograd.
  if (o.divergence.method == density::Divergence::analytic && !analytic_ok)
    o.divergence.method = density::Divergence::exact;
  CNF_CHECK(probes >= 1, "probes must be >= 1, got ", probes);
  o.divergence.probes = probes;
  o.divergence.gaussian = gaussian_probes;
  CNF_CHECK(t_start >= 0 && t_start < 1, "t_start must be in [0, 1), got ", t_start);
  o.t_start = t_start;
  return o;
}

std::vector<int64_t> row_shape(const at::Tensor& x) {
  return std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end());
}

namespace {

// ------------------------------------------------------------------------ Field

// A velocity field v_t(x) given from Python: forward(x, t) with x [B, ...] and t [B].
class Field {
 public:
  static std::shared_ptr<Field> from_torchscript(const py::bytes& data, const std::string& name) {
    auto f = std::make_shared<Field>();
    f->kind_ = "torchscript";
    f->name_ = name;
    std::istringstream in(std::string(data), std::ios::binary);
    try {
      f->module_ = torch::jit::load(in);
    } catch (const std::exception& e) {
      std::string why = e.what();
      fail(name, " is not a TorchScript module: ", why.substr(0, why.find('\n')));
    }
    CNF_CHECK(f->module_.find_method("forward").has_value(), name,
              " has no forward method; a field needs forward(x, t) -> v of x's shape");
    f->module_.eval();
    return f;
  }
  static std::shared_ptr<Field> from_callable(py::function fn, const std::string& name) {
    auto f = std::make_shared<Field>();
    f->kind_ = "callable";
    f->name_ = name;
    f->fn_ = std::move(fn);
    return f;
  }
  ~Field() {
    if (fn_) {  // a py::function is released with the GIL held
      py::gil_scoped_acquire gil;
      fn_ = py::function();
    }
  }

  // v = field(x, t), checked: a tensor of x's shape and dtype. Called without the GIL.
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& t) const {
    at::Tensor v;
    if (kind_ == "torchscript") {
      c10::IValue out;
      try {
        out = const_cast<torch::jit::Module&>(module_).forward({x, t});
      } catch (const c10::Error& e) {
        std::string why = e.what_without_backtrace();
        fail(name_, " failed in forward(x, t) with x ", x.sizes(), ", t ", t.sizes(), ": ",
             why.substr(0, why.find('\n')));
      } catch (const std::exception& e) {
        // TorchScript's interpreter errors: a traceback, the cause on the last line.
        std::string why = e.what();
        while (!why.empty() && why.back() == '\n') why.pop_back();
        fail(name_, " failed in forward(x, t) with x ", x.sizes(), " (", x.scalar_type(), "), t ",
             t.sizes(), ": ", why.substr(why.rfind('\n') + 1));
      }
      CNF_CHECK(out.isTensor(), name_, ": forward(x, t) returned ", out.tagKind(),
                ", not a Tensor");
      v = out.toTensor();
    } else {
      py::gil_scoped_acquire gil;
      py::object out = fn_(x, t);  // a Python exception propagates as py::error_already_set
      CNF_CHECK(THPVariable_Check(out.ptr()), name_, " returned ",
                std::string(py::str(py::type::of(out).attr("__name__"))),
                ", not a torch.Tensor; a field maps (x [B, ...], t [B]) to v of x's shape");
      v = out.cast<at::Tensor>();
    }
    CNF_CHECK(v.sizes() == x.sizes(), name_, " returned shape ", v.sizes(), " for x of shape ",
              x.sizes(), "; a field returns one value per coordinate of x");
    CNF_CHECK(v.scalar_type() == x.scalar_type(), name_, " returned ", v.scalar_type(), " for ",
              x.scalar_type(), " x; return the state's dtype");
    return v;
  }
  const std::string& kind() const { return kind_; }
  const std::string& name() const { return name_; }

 private:
  std::string kind_, name_;
  torch::jit::Module module_;
  py::function fn_;
};

// The field as a cnf network (for the likelihood code), borrowing it for one call.
class FieldNetwork : public nn::VelocityFieldImpl {
 public:
  FieldNetwork(const Field& f, std::vector<int64_t> shape) : f_(f), shape_(std::move(shape)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    return f_(x, t);
  }
  std::vector<int64_t> sample_shape() const override { return shape_; }

 private:
  const Field& f_;
  std::vector<int64_t> shape_;
};

// ------------------------------------------------------------------------ solve

struct SolveResult {
  at::Tensor x;  // the state at t1
  int64_t nfe = 0, n_accepted = 0, n_rejected = 0;
  std::vector<double> ts;  // save_at times
  at::Tensor xs;           // [T, B, ...] states at ts (undefined without save_at)
};

// The step-size controller's settings by name (AdaptiveOptions), e.g. {"beta1": 1.0}.
void set_controller(ode::AdaptiveOptions& a, const std::map<std::string, double>& settings) {
  const std::map<std::string, double*> fields = {
      {"safety", &a.safety},         {"beta1", &a.beta1},           {"beta2", &a.beta2},
      {"min_factor", &a.min_factor}, {"max_factor", &a.max_factor}, {"first_step", &a.first_step}};
  for (const auto& [key, value] : settings) {
    auto it = fields.find(key);
    if (it == fields.end()) {
      std::string valid;
      for (const auto& kv : fields) valid += (valid.empty() ? "" : ", ") + kv.first;
      fail("unknown controller setting '", key, "'; valid: ", valid);
    }
    *it->second = value;
  }
  ode::AdaptiveController check(a);  // validates the values
}

SolveResult solve(const Field& f, const at::Tensor& x, double t0, double t1,
                  const std::string& method, int64_t steps, double rtol, double atol,
                  int64_t max_steps, const std::vector<double>& save_at,
                  const std::map<std::string, double>& controller) {
  auto y0 = checked(x, "x", 2, true, /*keep_grad=*/true);
  CNF_CHECK(std::isfinite(t0) && std::isfinite(t1) && t0 != t1, "t0 and t1 must be finite and ",
            "differ, got t0 = ", t0, ", t1 = ", t1);
  auto o = ode::SolveOptions::of(method, steps, rtol, atol, max_steps);
  set_controller(o.adaptive, controller);
  o.save_at = save_at;
  ode::Rhs rhs = [&f](double t, const ode::State& y) {
    return ode::State{f(y[0], at::full({y[0].size(0)}, t, y[0].options()))};
  };
  py::gil_scoped_release release;
  auto sol = ode::solve(rhs, {y0}, t0, t1, o);
  SolveResult r;
  r.x = sol.y[0];
  r.nfe = sol.nfe;
  r.n_accepted = sol.n_accepted;
  r.n_rejected = sol.n_rejected;
  r.ts = sol.ts;
  if (!sol.ys.empty()) {
    std::vector<at::Tensor> states;
    for (const auto& s : sol.ys) states.push_back(s[0]);
    r.xs = at::stack(states);
  }
  return r;
}

}  // namespace

void bind_flows(py::module_& m) {
  py::class_<Field, std::shared_ptr<Field>>(
      m, "Field",
      "A velocity field v_t(x) for cnf's solvers, in cnf's time convention (data at t = 0, "
      "noise at t = 1): a TorchScript module with forward(x, t) or a Python callable "
      "f(x, t) -> v, with x [B, ...] and t [B] (one time per row).")
      .def_static("from_torchscript", &Field::from_torchscript, py::arg("data"),
                  py::arg("name") = "TorchScript module",
                  "A field from a module's bytes (torch.jit.save to a buffer).")
      .def_static("from_callable", &Field::from_callable, py::arg("fn"),
                  py::arg("name") = "the field",
                  "A field calling fn(x, t) with the GIL held; its autograd graph is kept "
                  "(the exact divergence differentiates through it).")
      .def_property_readonly("kind", &Field::kind, "'torchscript' or 'callable'")
      .def("__call__", [](const Field& f, const at::Tensor& x, const at::Tensor& t) {
        py::gil_scoped_release release;
        return f(x, t);
      });

  py::class_<SolveResult>(m, "Solution", "The result of cnf.solve")
      .def_readonly("x", &SolveResult::x, "the state at t1")
      .def_readonly("nfe", &SolveResult::nfe, "evaluations of the field")
      .def_readonly("n_accepted", &SolveResult::n_accepted, "accepted steps")
      .def_readonly("n_rejected", &SolveResult::n_rejected, "rejected steps (adaptive methods)")
      .def_readonly("ts", &SolveResult::ts, "the save_at times")
      .def_property_readonly(
          "xs", [](const SolveResult& r) { return r.xs.defined() ? py::cast(r.xs) : py::none(); },
          "[T, B, ...] states at the save_at times (None without save_at)")
      .def("__repr__", [](const SolveResult& r) {
        return "Solution(nfe=" + std::to_string(r.nfe) +
               ", accepted=" + std::to_string(r.n_accepted) +
               ", rejected=" + std::to_string(r.n_rejected) + ")";
      });
  m.def("_solve", &solve, py::arg("field"), py::arg("x"), py::arg("t0"), py::arg("t1"),
        py::arg("method"), py::arg("steps"), py::arg("rtol"), py::arg("atol"), py::arg("max_steps"),
        py::arg("save_at"), py::arg("controller"));
  m.def(
      "methods", [] { return ode::tableaus().names(); }, "The ODE methods cnf.solve accepts.");
  m.def(
      "samplers", [] { return sde::samplers().names(); }, "The samplers Flow.sample accepts.");

  py::class_<density::LikelihoodResult>(m, "Likelihood", "The result of cnf.log_likelihood")
      .def_readonly("log_prob", &density::LikelihoodResult::log_prob,
                    "[B] log rho_0(x) (the mean over probes for Hutchinson)")
      .def_property_readonly(
          "log_prob_probes",
          [](const density::LikelihoodResult& r) {
            return r.log_prob_probes.defined() ? py::cast(r.log_prob_probes) : py::none();
          },
          "[K, B] per-probe estimates (Hutchinson), else None")
      .def_readonly("x1", &density::LikelihoodResult::x, "the other end of each trajectory")
      .def_readonly("nfe", &density::LikelihoodResult::nfe, "evaluations of the field");
  m.def(
      "_log_likelihood",
      [](const Field& f, const at::Tensor& x, const std::string& schedule, double sigma_min,
         const std::string& prior, const std::string& divergence, int64_t probes,
         bool gaussian_probes, const std::string& method, int64_t steps, double rtol, double atol,
         double t_start, uint64_t seed) {
        auto pts = checked(x, "x", 2, true);
        auto sched = path::make_schedule(schedule, sigma_min);
        auto source = data::make_source(prior, pts[0].numel());
        auto o = likelihood_options(divergence, probes, gaussian_probes, method, steps, rtol, atol,
                                    t_start, false);
        auto gen = make_generator(seed);
        FieldNetwork net(f, row_shape(pts));
        py::gil_scoped_release release;
        return density::log_likelihood(net, *sched, *source, pts, o, gen);
      },
      py::arg("field"), py::arg("x"), py::arg("schedule"), py::arg("sigma_min"), py::arg("prior"),
      py::arg("divergence"), py::arg("probes"), py::arg("gaussian_probes"), py::arg("method"),
      py::arg("steps"), py::arg("rtol"), py::arg("atol"), py::arg("t_start"), py::arg("seed"));
}

}  // namespace cnf::python
