"""cnf: continuous normalizing flows and flow matching, from Python.

cnf's C++ solvers, optimal transport and likelihoods on PyTorch tensors (the same LibTorch
as Debian's python3-torch: tensors cross without copies; the GIL is released while C++
works). Time runs from data at t = 0 to noise at t = 1 (flow_matching and torchcfm put data
at t = 1: load_torchscript(..., time="data-at-1") converts).

    import cnf
    cnf.ot.exact(x, y).cost                   # exact OT (network simplex / assignment)
    cnf.ot.sinkhorn(x, y, eps=0.05)           # entropic OT: plan, potentials, converged
    sampler = cnf.coupling.PairSampler("exact", seed=0)
    x0, x1 = sampler.pair(x0, x1)             # OT-CFM minibatch pairs
    sol = cnf.solve(field, x, 1.0, 0.0, method="dopri5")   # field: TorchScript or callable
    flow = cnf.load("out/demo/model.pt")      # a checkpoint of `cnf train`
    flow.sample(1000), flow.log_prob(x), flow.score(x, 0.5), flow.velocity(x, 0.5)

Threads: cnf runs on LibTorch's intra-op threads, so torch.set_num_threads(n) sets them.
Errors are cnf.Error (a ValueError and a RuntimeError) with cnf's message.
"""
import atexit as _atexit
import io as _io

import torch as _torch  # loads LibTorch and its Python bindings before the extension

from . import _cnf
from . import coupling, ot
from ._cnf import Error, Field, Flow, Likelihood, Solution, methods, samplers

_atexit.register(_cnf._finish_warm_up)  # the kernels' warm-up thread ends before exit

__version__ = _cnf.__version__
__all__ = ["Error", "Field", "Flow", "Likelihood", "Solution", "coupling", "field",
           "load", "load_torchscript", "log_likelihood", "methods", "ot", "samplers",
           "solve"]


def field(f, name=None):
    """A cnf.Field from a TorchScript module (torch.jit.script/trace), a cnf.Field, or a
    Python callable f(x, t) -> v with x [B, ...] and t [B] (one time per row), such as a
    torch.nn.Module. A TorchScript module runs without the GIL; it is serialized on
    conversion, so convert it once and pass the Field to many solves (weights changed
    later in Python are not seen by that Field). A callable is called as it is."""
    if isinstance(f, Field):
        return f
    if isinstance(f, (_torch.jit.ScriptModule, _torch.jit.ScriptFunction)):
        if isinstance(f, _torch.jit.ScriptFunction):
            raise Error("a TorchScript function is not a module; wrap it in a "
                        "torch.nn.Module with forward(x, t) and torch.jit.script that")
        buf = _io.BytesIO()
        _torch.jit.save(f, buf)
        return Field.from_torchscript(buf.getvalue(), name or f"TorchScript module {f.original_name}")
    if callable(f):  # a Python function or a plain torch.nn.Module (called with the GIL)
        return Field.from_callable(f, name or f"the field {getattr(f, '__name__', type(f).__name__)}")
    raise Error(f"a field is a TorchScript module or a callable (x, t) -> v, got {type(f).__name__}")


def solve(field_, x, t0=1.0, t1=0.0, method="dopri5", rtol=1e-5, atol=1e-5, steps=100,
          save_at=None, max_steps=100000, controller=None):
    """Integrates dx/dt = field(x, t) from t0 to t1 (default: noise at 1 to data at 0).

    method: an adaptive pair (dopri5, tsit5, bosh3, ...) controlled by rtol/atol with the
    RMS error norm over all elements, or a fixed-step one (euler, midpoint, heun, rk4) in
    `steps` steps; cnf.methods() lists them. save_at: times between t0 and t1 whose states
    are returned in Solution.xs (dense output, no extra evaluations). Autograd records the
    solve when x or the field's parameters require grad: sample under torch.no_grad(). controller: settings of the adaptive step-size controller
    by name (safety, beta1, beta2, min_factor, max_factor, first_step; see
    cnf/ode/solve.h AdaptiveOptions), e.g. {"beta2": 0} for an I controller.
    Returns a Solution (x, nfe, n_accepted, n_rejected, ts, xs).
    """
    f = field(field_)
    return _cnf._solve(f, x, float(t0), float(t1), method, int(steps), float(rtol),
                       float(atol), int(max_steps), [float(t) for t in (save_at or [])],
                       {k: float(v) for k, v in (controller or {}).items()})


def log_likelihood(field_, x, schedule="condot", sigma_min=0.0, prior="normal",
                   divergence="exact", probes=1, gaussian_probes=False, method="dopri5",
                   rtol=1e-5, atol=1e-5, steps=100, t_start=0.0, seed=0):
    """log rho_0(x) of data x under the flow of a velocity field (data at t = 0) with the
    prior `prior` at t = 1, by the instantaneous change of variables: integrates x from
    t_start to 1 with d/dt log rho = -div v. divergence: 'exact' (one autograd pass per
    dimension) or 'hutchinson' (`probes` Rademacher or Gaussian probes, fixed through the
    solve; seeded). schedule: the path, for sigma_1 (the prior's scale at t = 1; 1 except
    for VE) and t_start > 0. Returns a Likelihood (log_prob, log_prob_probes, x1, nfe)."""
    f = field(field_)
    return _cnf._log_likelihood(f, x, schedule, float(sigma_min), prior, divergence,
                                int(probes), bool(gaussian_probes), method, int(steps),
                                float(rtol), float(atol), float(t_start), int(seed))


def load(path):
    """The flow in a checkpoint of `cnf train` (EMA weights when it has them), or of a
    fine-tuned TorchScript module. Returns a cnf.Flow."""
    return Flow._load(str(path))


def load_torchscript(module, predicts="velocity", schedule="condot", sigma_min=0.0,
                     time="data-at-0", dim=0, fuse=""):
    """A flow from a TorchScript module (a file, or a scripted module) trained elsewhere:
    forward(x, t) returns `predicts` (velocity, score, data, noise or v) on `schedule`, in the
    time convention `time` ('data-at-0', cnf's, or 'data-at-1' of flow_matching/torchcfm).
    dim: the dimension of one sample (0: the module's data_shape attribute). fuse: an
    activation name to run a plain MLP module by cnf's fused MLP. Returns a cnf.Flow."""
    if isinstance(module, _torch.jit.ScriptModule):
        import os
        import tempfile
        fd, tmp = tempfile.mkstemp(suffix=".pt")
        os.close(fd)
        try:
            _torch.jit.save(module, tmp)
            return Flow._import(tmp, predicts, schedule, float(sigma_min), time, int(dim), fuse)
        finally:
            os.unlink(tmp)
    return Flow._import(str(module), predicts, schedule, float(sigma_min), time, int(dim), fuse)
