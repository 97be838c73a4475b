// python/src/module.cpp — the extension module cnf._cnf behind `import cnf`: cnf's exact and
// entropic OT, the OT-CFM pair samplers, ODE solves, likelihoods and trained flows on
// PyTorch tensors (the same LibTorch as Debian's python3-torch, so tensors cross without
// copies). Errors become cnf.Error, a subclass of both ValueError and RuntimeError.
#include <c10/util/Exception.h>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/ot/emd.h"
#include "cnf/version.h"
#include "common.h"

namespace cnf::python {

at::Tensor checked(const at::Tensor& x, const char* name, int64_t rank, bool at_least,
                   bool keep_grad) {
  CNF_CHECK(x.defined(), name, " is an undefined tensor");
  CNF_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, name, " has dtype ",
            x.scalar_type(), "; cnf takes float32 or float64 tensors (convert with ", name,
            ".float() or ", name, ".double())");
  const bool ok = at_least ? x.dim() >= rank : x.dim() == rank;
  CNF_CHECK(ok, name, " has shape ", x.sizes(), "; expected ",
            rank == 2 && !at_least ? "[n, d], one point per row" : "[n, ...], one sample per row",
            x.dim() == 1 ? " (a 1-D tensor of n scalars is x[:, None])" : "");
  CNF_CHECK(x.size(0) > 0, name, " has no rows (shape ", x.sizes(), ")");
  check_finite(x, name);
  auto y = x.contiguous();
  return keep_grad ? y : y.detach();
}

at::Tensor checked_weights(const py::object& w, const char* name, int64_t n) {
  if (w.is_none()) return {};
  auto t = w.cast<at::Tensor>();
  CNF_CHECK(t.is_floating_point(), name, " has dtype ", t.scalar_type(),
            "; weights are a float tensor of ", n, " entries summing to 1");
  return ot::checked_weights(t.detach().contiguous(), name, n);
}

}  // namespace cnf::python

PYBIND11_MODULE(_cnf, m) {
  namespace py = pybind11;
  using namespace cnf::python;
  m.doc() = "cnf's C++ core (use the package `cnf`, which wraps it)";
  m.attr("__version__") = CNF_VERSION;
  // class Error(ValueError, RuntimeError): bad input is a ValueError, a failed solve a
  // RuntimeError; a user catching either (or cnf.Error) catches cnf's errors.
  py::object builtins = py::module_::import("builtins");
  py::object error = builtins.attr("type")(
      "Error", py::make_tuple(builtins.attr("ValueError"), builtins.attr("RuntimeError")),
      py::dict(py::arg("__module__") = "cnf",
               py::arg("__doc__") = "An error of cnf: bad input or a solve that failed. The "
                                    "message says which argument or value and how to fix it."));
  m.attr("Error") = error;
  // The translator outlives no module state: it looks the class up each time (a borrowed
  // handle kept by the module object).
  static PyObject* error_type = error.ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cnf::Error& e) {
      PyErr_SetString(error_type, e.what());
    } catch (const c10::Error& e) {
      // LibTorch's own errors (a shape mismatch inside a TorchScript field, ...).
      PyErr_SetString(error_type, e.what_without_backtrace());
    }
  });
  auto ot = m.def_submodule("ot", "Exact and entropic optimal transport between samples");
  bind_ot(ot);
  auto coupling = m.def_submodule("coupling", "Minibatch couplings of OT-CFM and SB-CFM");
  bind_coupling(coupling);
  bind_flows(m);
  bind_flow(m);
  // oneDNN's one-time start-up of the fused MLP kernels, on a background thread, joined by
  // _finish_warm_up (registered with Python's atexit by the package) before the process
  // destroys oneDNN's static state.
  static cnf::nn::fast::Prewarm* warm = new cnf::nn::fast::Prewarm();
  m.def("_finish_warm_up", [] {
    py::gil_scoped_release release;
    delete warm;
    warm = nullptr;
  });
}
