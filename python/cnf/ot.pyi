# Type stubs of cnf.ot.
from typing import Optional

import torch

class ExactResult:
    cost: float
    plan: torch.Tensor
    assignment: Optional[torch.Tensor]

class SinkhornResult:
    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    cost: float
    marginal_error: float
    iterations: int
    converged: bool
    epsilon: float

def cost_matrix(x: torch.Tensor, y: torch.Tensor, cost: str = "sqeuclidean") -> torch.Tensor: ...
def exact(x: torch.Tensor, y: torch.Tensor, cost: str = "sqeuclidean",
          a: Optional[torch.Tensor] = None, b: Optional[torch.Tensor] = None,
          solver: str = "auto") -> ExactResult: ...
def emd(a: Optional[torch.Tensor], b: Optional[torch.Tensor], M: torch.Tensor) -> ExactResult: ...
def assignment(M: torch.Tensor) -> torch.Tensor: ...
def sinkhorn(x: torch.Tensor, y: torch.Tensor, eps: float = 0.05, cost: str = "sqeuclidean",
             a: Optional[torch.Tensor] = None, b: Optional[torch.Tensor] = None,
             tol: float = 1e-6, max_iter: int = 10000, log_domain: bool = False,
             eps_scaling: float = 0.5, f_init: Optional[torch.Tensor] = None,
             g_init: Optional[torch.Tensor] = None) -> SinkhornResult: ...
def sinkhorn_weighted(a: Optional[torch.Tensor], b: Optional[torch.Tensor], M: torch.Tensor,
                      eps: float = 0.05, tol: float = 1e-6, max_iter: int = 10000,
                      log_domain: bool = False, eps_scaling: float = 0.5,
                      f_init: Optional[torch.Tensor] = None,
                      g_init: Optional[torch.Tensor] = None) -> SinkhornResult: ...
def w1(x: torch.Tensor, y: torch.Tensor) -> float: ...
def w2(x: torch.Tensor, y: torch.Tensor) -> float: ...
