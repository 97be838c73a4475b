"""Sampling an imported TorchScript MLP: cnf (`cnf sample --model torchscript:FILE`)
against the same module in a plain PyTorch loop, in one run on one machine.

Workloads (issue #21): 10,000 points x 100 Euler steps; 1,000 points by dopri5 at
rtol = atol = 1e-4 (a textbook Dormand-Prince 5(4) with the RMS error norm and a plain
step-size controller in Python; cnf's own dopri5). Each cnf row runs the module as
imported and, with --fuse selu, converted to cnf's fused MLP. The network: 3-64-64-64-2 SELU with the time
appended as one input, random weights (speed does not depend on training).

Usage: OMP_NUM_THREADS=1 /usr/bin/python3 bench/python/interop_sampling.py [build/cnf]
Prints seconds (best of 3) and the ratios; threads: 1 in both.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

torch.set_num_threads(1)
CNF = sys.argv[1] if len(sys.argv) > 1 else "build/cnf"


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SELU(), torch.nn.Linear(64, 64),
                                       torch.nn.SELU(), torch.nn.Linear(64, 64), torch.nn.SELU(),
                                       torch.nn.Linear(64, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t.to(x.dtype).reshape(-1, 1).expand(x.shape[0], 1)], 1))


def euler(f, x, steps):
    for k in range(steps):
        t = torch.full((x.shape[0],), 1.0 - k / steps)
        x = x - f(x, t) / steps
    return x


# Dormand & Prince (1980) coefficients.
A = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
     [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
     [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
     [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]]
C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]
B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
E = [71 / 57600, 0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]


def dopri5(f, x, t0, t1, tol):
    """Adaptive Dormand-Prince with the RMS norm of err / (atol + rtol max(|y|, |y1|))."""
    t, h, nfe = t0, (t1 - t0) * 0.05, 0
    k1 = f(x, torch.full((x.shape[0],), t)); nfe += 1
    while (t1 - t) * (t1 - t0) > 0:
        if (t + h - t1) * (t1 - t0) > 0:
            h = t1 - t
        ks = [k1]
        for i in range(1, 7):
            xi = x + h * sum(a * k for a, k in zip(A[i], ks))
            ks.append(f(xi, torch.full((x.shape[0],), t + C[i] * h))); nfe += 1
        y1 = x + h * sum(b * k for b, k in zip(B, ks))
        err = h * sum(e * k for e, k in zip(E, ks))
        scale = tol + tol * torch.maximum(x.abs(), y1.abs())
        norm = float(((err / scale) ** 2).mean().sqrt())
        if norm <= 1:
            t, x, k1 = t + h, y1, ks[6]
        h *= min(10.0, max(0.2, 0.9 * (norm + 1e-16) ** -0.2))
    return x, nfe


def best_of(fn, reps=3):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    torch.manual_seed(0)
    model = torch.jit.script(MLP().eval())
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "mlp.pt")
    model.save(path)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

    def cnf_sample(n, *args):
        out = os.path.join(tmp, "x.npy")
        js = os.path.join(tmp, "r.json")
        t0 = time.perf_counter()
        subprocess.run([CNF, "sample", "--model", f"torchscript:{path}", "--model-dim", "2", "-n", str(n),
                        "--threads", "1", "--out", out, "--json", js, *args], check=True,
                       capture_output=True, env=env)
        wall = time.perf_counter() - t0
        r = json.load(open(js))
        return r["seconds"], wall, r["nfe"]

    rows = []
    x = torch.randn(10000, 2)
    with torch.no_grad():
        py, _ = best_of(lambda: euler(model, x, 100))
    runs = [cnf_sample(10000, "--method", "euler", "--steps", "100") for _ in range(3)]
    c_in, c_wall = min(r[0] for r in runs), min(r[1] for r in runs)
    rows.append(("Euler 10,000 x 100", py, c_in, c_wall, 100, runs[0][2]))
    runs = [cnf_sample(10000, "--method", "euler", "--steps", "100", "--fuse", "selu") for _ in range(3)]
    c_in, c_wall = min(r[0] for r in runs), min(r[1] for r in runs)
    rows.append(("Euler 10,000 x 100 --fuse", py, c_in, c_wall, 100, runs[0][2]))
    x = torch.randn(1000, 2)
    with torch.no_grad():
        py, (_, nfe) = best_of(lambda: dopri5(model, x, 1.0, 0.0, 1e-4))
    runs = [cnf_sample(1000, "--method", "dopri5", "--rtol", "1e-4", "--atol", "1e-4") for _ in range(3)]
    c_in, c_wall = min(r[0] for r in runs), min(r[1] for r in runs)
    rows.append(("dopri5 1,000, tol 1e-4", py, c_in, c_wall, nfe, runs[0][2]))
    runs = [cnf_sample(1000, "--method", "dopri5", "--rtol", "1e-4", "--atol", "1e-4", "--fuse", "selu")
            for _ in range(3)]
    c_in, c_wall = min(r[0] for r in runs), min(r[1] for r in runs)
    rows.append(("dopri5 1,000 --fuse", py, c_in, c_wall, nfe, runs[0][2]))
    print(f"{'workload':26s} {'python s':>9s} {'cnf s':>8s} {'cnf proc s':>10s} {'ratio':>6s} {'NFE py/cnf':>11s}")
    for name, p, c, w, n1, n2 in rows:
        print(f"{name:26s} {p:9.3f} {c:8.3f} {w:10.3f} {p / c:6.2f} {n1:>5d}/{n2:<5d}")
    print("ratio = Python loop time / cnf's sampling time (both 1 thread, best of 3; "
          "'cnf proc s' includes process start and loading)")


if __name__ == "__main__":
    main()
