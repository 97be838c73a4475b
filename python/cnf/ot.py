"""Exact and entropic optimal transport between samples (cnf.ot).

exact / emd: network simplex (LEMON) or, for n == m with uniform weights, an assignment
solver; costs equal POT's ot.emd and scipy's linear_sum_assignment. sinkhorn: the plan of
<C, P> + eps KL(P | a b^T), which equals POT's ot.sinkhorn(a, b, M, reg=eps)."""
from ._cnf import ot as _impl

__all__ = ["ExactResult", "SinkhornResult", "assignment", "cost_matrix", "emd", "exact",
           "sinkhorn", "sinkhorn_weighted", "w1", "w2"]
globals().update({n: getattr(_impl, n) for n in __all__})
