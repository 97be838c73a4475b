// python/src/common.h — what the binding files share: argument checks that turn bad tensors
// into cnf::Error (raised in Python as cnf.Error) and the registration functions.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <string>

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

void bind_ot(py::module_& m);        // cnf.ot
void bind_coupling(py::module_& m);  // cnf.coupling
void bind_flows(py::module_& m);     // cnf.Field, cnf.solve, cnf.log_likelihood, cnf.Flow

}  // namespace cnf::python
