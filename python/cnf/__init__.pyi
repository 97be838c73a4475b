# Type stubs of the package cnf (python/cnf/__init__.py and the extension cnf._cnf).
from os import PathLike
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import coupling as coupling
from . import ot as ot

__version__: str

class Error(ValueError, RuntimeError):
    """An error of cnf: bad input or a solve that failed."""

FieldLike = Union["Field", torch.jit.ScriptModule, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

class Field:
    """A velocity field v_t(x) (data at t = 0): x [B, ...], t [B] -> v of x's shape."""
    @staticmethod
    def from_torchscript(data: bytes, name: str = ...) -> Field: ...
    @staticmethod
    def from_callable(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name: str = ...) -> Field: ...
    @property
    def kind(self) -> str: ...
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

class Solution:
    x: torch.Tensor
    nfe: int
    n_accepted: int
    n_rejected: int
    ts: List[float]
    xs: Optional[torch.Tensor]

class Likelihood:
    log_prob: torch.Tensor
    log_prob_probes: Optional[torch.Tensor]
    x1: torch.Tensor
    nfe: int

class Flow:
    """A trained flow: cnf.load(checkpoint) or cnf.load_torchscript(module)."""
    last_nfe: int
    last_nfe_per_row: float
    dim: int
    shape: List[int]
    schedule: str
    predicts: str
    prior: str
    data: str
    step: int
    sigma_1: float
    likelihood_start: float
    spec: str
    def sample(self, n: Optional[int] = None, noise: Optional[torch.Tensor] = None,
               sampler: str = "ode", method: str = "euler", steps: int = 100,
               rtol: float = 1e-5, atol: float = 1e-5, eta: float = 0.0,
               spacing: str = "auto", seed: int = 0, rho: float = 7.0,
               lower_order_final: bool = True, threshold: float = 0.0,
               threshold_bound: float = 1.0, churn: float = 0.0,
               train_steps: int = 0, per_row: bool = False) -> torch.Tensor: ...
    def sample_with_log_prob(self, n: Optional[int] = None, noise: Optional[torch.Tensor] = None,
                             divergence: str = "analytic", probes: int = 1,
                             method: str = "dopri5", steps: int = 100, rtol: float = 1e-5,
                             atol: float = 1e-5, t_start: Optional[float] = None,
                             seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]: ...
    def log_prob(self, x: torch.Tensor, divergence: str = "analytic", probes: int = 1,
                 gaussian_probes: bool = False, method: str = "dopri5", steps: int = 100,
                 rtol: float = 1e-5, atol: float = 1e-5, t_start: Optional[float] = None,
                 seed: int = 0) -> torch.Tensor: ...
    def score(self, x: torch.Tensor, t: float, method: str = "dopri5", rtol: float = 1e-5,
              atol: float = 1e-5) -> torch.Tensor: ...
    def velocity(self, x: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor: ...
    def network(self, x: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor: ...
    def export(self, out: str, weights: str = "ema", format: str = "torchscript") -> None: ...

def field(f: FieldLike, name: Optional[str] = None) -> Field: ...
def solve(field_: FieldLike, x: torch.Tensor, t0: float = 1.0, t1: float = 0.0,
          method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, steps: int = 100,
          save_at: Optional[Sequence[float]] = None, max_steps: int = 100000,
          controller: Optional[Dict[str, float]] = None) -> Solution: ...
def log_likelihood(field_: FieldLike, x: torch.Tensor, schedule: str = "condot",
                   sigma_min: float = 0.0, prior: str = "normal", divergence: str = "exact",
                   probes: int = 1, gaussian_probes: bool = False, method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, steps: int = 100,
                   t_start: float = 0.0, seed: int = 0) -> Likelihood: ...
def load(path: Union[str, PathLike]) -> Flow: ...
def load_torchscript(module: Union[str, PathLike, torch.jit.ScriptModule],
                     predicts: str = "velocity", schedule: str = "condot",
                     sigma_min: float = 0.0, time: str = "data-at-0", dim: int = 0,
                     fuse: str = "") -> Flow: ...
def methods() -> List[str]: ...
def samplers() -> List[str]: ...
