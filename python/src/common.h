// python/src/common.h — what the binding files share: argument checks that turn bad tensors
// into cnf::Error (raised in Python as cnf.Error) and the registration functions.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cnf/density/density.h"
#include "cnf/ode/solve.h"

namespace cnf::python {

namespace py = pybind11;

/// A float32 or float64 tensor of points, one per row ([n, d] when `rank` is 2; [n, ...]
/// with at least `rank` dimensions when `at_least`), finite, made contiguous and detached
/// from autograd unless `keep_grad`. Anything else is a cnf::Error naming `name`, its
/// shape or dtype and the fix.
at::Tensor checked(const at::Tensor& x, const char* name, int64_t rank = 2, bool at_least = false,
                   bool keep_grad = false);

/// Optional weights (None -> undefined): a finite non-negative float vector of `n` entries.
at::Tensor checked_weights(const py::object& w, const char* name, int64_t n);

/// Likelihood options of a Python call (divergence by name; `analytic_ok`: the network has
/// the analytic route, else it falls back to the exact one).
density::LikelihoodOptions likelihood_options(const std::string& divergence, int64_t probes,
                                              bool gaussian_probes, const std::string& method,
                                              int64_t steps, double rtol, double atol,
                                              double t_start, bool analytic_ok);
/// The shape of one row of x ([B, ...] -> [...]).
std::vector<int64_t> row_shape(const at::Tensor& x);

void bind_ot(py::module_& m);        // cnf.ot
void bind_coupling(py::module_& m);  // cnf.coupling
void bind_flows(py::module_& m);     // cnf.Field, cnf.solve, cnf.log_likelihood
void bind_flow(py::module_& m);      // cnf.Flow

}  // namespace cnf::python
