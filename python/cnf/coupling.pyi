# Type stubs of cnf.coupling.
from typing import List, Tuple

import torch

class PairSampler:
    method: str
    description: str
    sigma: float
    report: str
    def __init__(self, method: str = "exact", eps: float = 0.1, sigma: float = 0.5,
                 tol: float = 1e-4, max_iter: int = 2000, max_marginal_error: float = 0.05,
                 seed: int = 0) -> None: ...
    def pair(self, x0: torch.Tensor, x1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]: ...
    def sample_plan(self, x0: torch.Tensor, x1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]: ...

def methods() -> List[str]: ...
