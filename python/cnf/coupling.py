"""Minibatch couplings for conditional flow matching (cnf.coupling): OT-CFM's exact plan,
entropic plans and Schrodinger-bridge CFM, as a seeded pair sampler a plain PyTorch
training loop calls once per batch:

    sampler = cnf.coupling.PairSampler("exact", seed=0)
    x0, x1 = sampler.pair(x0, x1)   # then x_t = (1 - t) x0 + t x1, target x1 - x0
"""
from ._cnf import coupling as _impl

__all__ = ["PairSampler", "methods"]
globals().update({n: getattr(_impl, n) for n in __all__})
