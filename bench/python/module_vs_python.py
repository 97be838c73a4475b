"""cnf's Python module against the plain-Python way, in one process, on the same tensors.

Four workloads, each timed for cnf (`import cnf`) and for what a Python user would write
with Debian's packages (numpy, scipy, torch 1.13, POT 0.8.2 = `import ot`):

  1. exact OT, n points in 2-D        cnf.ot.exact(x, y).cost   vs  ot.dist + ot.emd2
  2. Sinkhorn, eps = 0.05, tol 1e-6   cnf.ot.sinkhorn(x, y, ...) vs  ot.dist + ot.sinkhorn
  3. one OT-CFM training step         cnf.coupling.PairSampler   vs  ot.emd + np.random.choice
                                      (torchcfm's OTPlanSampler), same MLP/loss/Adam
  4. dopri5 over a TorchScript MLP    cnf.solve                  vs  a dopri5 in plain PyTorch

One thread everywhere: OMP/OpenBLAS are pinned to 1 thread before torch is imported and
torch.set_num_threads(1) (cnf runs on LibTorch's intra-op threads, so that pins cnf too).
Every number is the median of `--repeats` timed calls (time.perf_counter) after one
warm-up call; the cnf and Python calls of a workload alternate (A B B A A ...) so that a
load change on a shared machine hits both alike. Ratio = Python time / cnf time (> 1: cnf
is faster).

Extra rows: cnf's exact OT with solver='network-simplex' (POT's algorithm) and, for
n <= 1024, scipy's linear_sum_assignment; Sinkhorn at a fixed iteration count ("same work",
per-iteration cost); --pot-matched: POT at stopThr = tol / sqrt(n) (slow); --sinkhorn-log
(or a failed plain POT Sinkhorn): POT's log-domain Sinkhorn. --quick runs n = 128, 256 with
both of those on. POT's C code prints "RESULT MIGHT BE INACURATE" while the script checks
its default numItermax at n = 4096; that is expected (the table's costs use 1e7).

Usage (Debian's python, the module built into build/python; the full run takes ~5 min on
one core, --quick a few seconds):
    PYTHONPATH=build/python /usr/bin/python3 bench/python/module_vs_python.py [--json out.json]
    PYTHONPATH=build/python /usr/bin/python3 bench/python/module_vs_python.py --quick
"""
import os

# Before torch (and numpy's OpenBLAS) load: their thread pools read these at start-up.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import ot  # noqa: E402  (POT)

import cnf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_solvers as ref_solvers  # noqa: E402

EPS = 0.05          # Sinkhorn regularization (cost units; the cost is the squared distance)
TOL = 1e-6          # Sinkhorn stopping tolerance handed to both libraries (see section 2)
EMD_ITERMAX = 10_000_000  # POT's network simplex iteration cap (its default is 100,000)
SCIPY_MAX_N = 1024  # scipy's linear_sum_assignment row only up to this n (it is O(n^3))


# --------------------------------------------------------------------------- timing

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(fns, repeats, slow_s=2.0):
    """Times each callable of `fns` (name -> fn): one warm-up call each, then `repeats`
    timed rounds in alternating order. When a warm-up call took over `slow_s` seconds the
    rounds are capped at 3. Returns ({name: median s}, {name: [s, ...]}, {name: last
    output}, {name: warm-up s})."""
    warm, out = {}, {}
    for k, fn in fns.items():
        warm[k], out[k] = timed(fn)
    if max(warm.values()) > slow_s:
        repeats = min(repeats, 3)
    times = {k: [] for k in fns}
    order = list(fns)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):
            dt, out[k] = timed(fns[k])
            times[k].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}, times, out, warm


def fmt_s(s):
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


class Report:
    """The table rows, the JSON record and the failed checks."""

    def __init__(self):
        self.rows, self.sections, self.failures = [], {}, []

    def row(self, what, cnf_s, py_s, notes):
        ratio = py_s / cnf_s if cnf_s and py_s else None
        self.rows.append(dict(what=what, cnf_s=cnf_s, python_s=py_s, ratio=ratio, notes=notes))
        print(f"  {what}: cnf {fmt_s(cnf_s)}, Python {fmt_s(py_s)}"
              + (f", ratio {ratio:.2f}" if ratio else "") + f" -- {notes}", flush=True)

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
            print(f"  CHECK FAILED: {what}", flush=True)
        return ok

    def markdown(self):
        lines = ["| what | cnf time | Python time | ratio (Python / cnf) | notes |",
                 "|---|---|---|---|---|"]
        for r in self.rows:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
            what, notes = (s.replace("|", "\\|") for s in (r["what"], r["notes"]))
            lines.append(f"| {what} | {fmt_s(r['cnf_s'])} | {fmt_s(r['python_s'])} | "
                         f"{ratio} | {notes} |")
        return "\n".join(lines)


def point_sets(n, seed):
    """x ~ N(0, I), y ~ N(0, I) + 1 in 2-D, float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64) + 1.0
    return x, y


# --------------------------------------------------------------------------- 1. exact OT

def section_exact(rep, sizes, repeats):
    print("1. exact OT", flush=True)
    out = []
    for n in sizes:
        x, y = point_sets(n, seed=n)
        xn, yn = x.numpy(), y.numpy()  # views of the same memory, no copies

        # cnf: builds the squared-Euclidean cost matrix inside and solves; 'auto' picks
        # the assignment solver for n == m with uniform weights.
        def run_cnf():
            return cnf.ot.exact(x, y).cost

        # cnf, forcing its network simplex (the algorithm POT runs).
        def run_cnf_ns():
            return cnf.ot.exact(x, y, solver="network-simplex").cost

        # POT as a Python user writes it: the cost matrix by ot.dist (squared Euclidean,
        # float64 [n, n]) + uniform weights + ot.emd2 (network simplex, 1 thread). The
        # iteration cap is raised: POT's default (100,000) stops early at n = 4096.
        def run_pot():
            M = ot.dist(xn, yn)
            a, b = ot.unif(n), ot.unif(n)
            return float(ot.emd2(a, b, M, numItermax=EMD_ITERMAX))

        fns = {"cnf": run_cnf, "cnf_ns": run_cnf_ns, "pot": run_pot}

        # scipy's Hungarian-type solver on the same cost matrix (small n only).
        def run_scipy():
            M = ot.dist(xn, yn)
            r, c = scipy.optimize.linear_sum_assignment(M)
            return float(M[r, c].mean())

        if n <= SCIPY_MAX_N:
            fns["scipy"] = run_scipy
        med, times, res, warm = bench(fns, repeats)

        # POT with its default numItermax, once, untimed: does it reach the optimum?
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            pot_default = float(ot.emd2(ot.unif(n), ot.unif(n), ot.dist(xn, yn)))
        default_warn = [str(m.message).split("\n")[0] for m in w]
        default_rel = abs(pot_default - res["cnf"]) / abs(res["cnf"])

        rel = {k: abs(res[k] - res["cnf"]) / abs(res["cnf"]) for k in res}
        for k, r in rel.items():
            rep.check(r <= 1e-9, f"exact OT n={n}: cost of {k} {res[k]!r} vs cnf {res['cnf']!r} "
                                 f"(relative {r:.1e} > 1e-9)")
        rep.row(f"exact OT n={n}: cnf.ot.exact vs ot.dist+ot.emd2", med["cnf"], med["pot"],
                f"costs {res['cnf']:.12g} / {res['pot']:.12g}, rel. diff {rel['pot']:.1e}; "
                f"cnf 'auto' = its assignment solver (n == m, uniform); POT time includes ot.dist and "
                f"numItermax={EMD_ITERMAX:.0e}")
        rep.row(f"exact OT n={n}: cnf solver='network-simplex' vs POT", med["cnf_ns"], med["pot"],
                f"cost rel. diff {rel['cnf_ns']:.1e}; auto/network-simplex time "
                f"{med['cnf'] / med['cnf_ns']:.2f}")
        if "scipy" in med:
            rep.row(f"exact OT n={n}: cnf.ot.exact vs ot.dist+scipy linear_sum_assignment",
                    med["cnf"], med["scipy"], f"cost rel. diff {rel['scipy']:.1e}")
        note = (f"POT default numItermax=100000: cost rel. error {default_rel:.1e}"
                + (f", warned: {default_warn[0]!r}" if default_warn else ", no warning"))
        print(f"  {note}", flush=True)
        out.append(dict(n=n, median_s=med, times_s=times, warmup_s=warm, cost=res,
                        rel_diff=rel, pot_default_itermax_cost=pot_default,
                        pot_default_itermax_rel_err=default_rel,
                        pot_default_itermax_warnings=default_warn))
    rep.sections["exact"] = out


# --------------------------------------------------------------------------- 2. Sinkhorn
#
# What the two stopping tolerances mean (both check every 10 iterations):
#  * cnf (src/ot/sinkhorn.cpp): one iteration = f-update (rows exact) then g-update
#    (columns exact). It stops when ||P 1 - a||_1 + ||P^T 1 - b||_1 <= tol; after the
#    g-update the column term is 0 up to rounding, so it is the L1 norm of the ROW
#    marginal error. It also runs epsilon scaling by default (eps_scaling=0.5: 10
#    iterations at each of R, R/2, R/4, ... > eps, R = max C - min C), and
#    result.iterations counts those too.
#  * POT 0.8.2 (ot/bregman.py, sinkhorn_knopp and sinkhorn_log): one iteration =
#    v = b / K^T u (columns exact) then u = a / K v (rows exact). At ii % 10 == 0 it
#    computes err = ||P^T 1 - b||_2, the L2 (Euclidean) norm of the COLUMN marginal error,
#    and stops when err < stopThr. log['niter'] is the 0-based loop index of the last
#    iteration, so it ran niter + 1 iterations. It starts cold at reg (no scaling).
# So at the same number 1e-6, POT's test is looser: ||r||_2 <= ||r||_1 <= sqrt(n) ||r||_2,
# and POT's plan ends with an L1 error up to sqrt(n) times cnf's (in practice ~4-25x here;
# the rows print both plans' L1 errors). Both minimize <C, P> + eps KL(P | a b^T) (= POT's
# <C, P> - reg H(P) up to a constant), so the plans agree to within what the tolerances
# allow. Two more comparisons:
#  * "same work": both run exactly K iterations from a cold start (cnf: eps_scaling=0,
#    tol=1e-300, max_iter=K; POT: stopThr=0, numItermax=K; both still check every 10
#    iterations), for K = 10 (~ the set-up: cost matrix, kernel, plan) and K = 10 + SAME_K;
#    the difference / SAME_K is the time of one iteration (two [n, n] mat-vecs). The set-up
#    is noisy here: fresh [n, n] buffers are paid in page faults, and whether the kernel
#    hands out huge pages varies from call to call.
#  * --pot-matched: POT with stopThr = tol / sqrt(n), which guarantees cnf's L1 bound
#    (||r||_1 <= sqrt(n) ||r||_2 < tol). It overshoots by far (the error concentrates on
#    few columns, so POT ends with an L1 error ~30x below tol after ~20x the iterations at
#    n = 4096: 140 s a call), hence one call, off by default.

SAME_K = 200


def marginal_l1(P, a, b):
    """(L1 row error, L1 column error) of a plan P [n, m] against a [n], b [m]."""
    return float(np.abs(P.sum(1) - a).sum()), float(np.abs(P.sum(0) - b).sum())


def section_sinkhorn(rep, sizes, repeats, force_log, pot_matched, same_k):
    print("2. Sinkhorn", flush=True)
    out = []
    for n in sizes:
        x, y = point_sets(n, seed=n)
        xn, yn = x.numpy(), y.numpy()
        a, b = ot.unif(n), ot.unif(n)

        # cnf: cost matrix + epsilon-scaled stabilized Sinkhorn + the plan, all in C++.
        def cnf_run(**kw):
            return lambda: cnf.ot.sinkhorn(x, y, eps=EPS, **kw)

        # POT: ot.dist (cost matrix) + ot.sinkhorn (Sinkhorn-Knopp on K = exp(-M / reg)),
        # returning the plan; warnings (non-convergence, underflow) are recorded.
        def pot(stop_thr, method="sinkhorn", itermax=100000):
            def run():
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    M = ot.dist(xn, yn)
                    P, log = ot.sinkhorn(ot.unif(n), ot.unif(n), M, reg=EPS, stopThr=stop_thr,
                                         numItermax=itermax, log=True, method=method)
                return P, log, [str(m.message) for m in w]
            return run

        med, times, res, warm = bench({"cnf": cnf_run(tol=TOL), "pot": pot(TOL)}, repeats)
        r = res["cnf"]
        Pc = r.plan.numpy()
        M = ot.dist(xn, yn)
        stages = 0
        s = float(M.max() - M.min())
        while s > EPS:  # cnf's epsilon-scaling stages (10 iterations each)
            stages, s = stages + 1, s * 0.5
        rec = dict(n=n, median_s=med, times_s=times, warmup_s=warm,
                   cnf=dict(iterations=r.iterations, converged=r.converged,
                            marginal_error=r.marginal_error, cost=r.cost,
                            l1_rows_cols=marginal_l1(Pc, a, b),
                            eps_scaling_iterations=10 * stages, report=repr(r)))
        rep.check(r.converged, f"Sinkhorn n={n}: cnf did not converge: {r!r}")
        cnf_note = (f"cnf {r.iterations} it ({10 * stages} of them eps-scaling), "
                    f"L1 rows+cols {sum(rec['cnf']['l1_rows_cols']):.1e}")

        def pot_record(key, P, log, warns, thr):
            iters = int(log["niter"]) + 1
            d = float(np.abs(P - Pc).max())
            rec[key] = dict(stopThr=thr, iterations=iters, last_err_l2=float(log["err"][-1]),
                            warnings=warns, cost=float((P * M).sum()),
                            l1_rows_cols=marginal_l1(P, a, b), max_abs_diff_vs_cnf=d)
            return iters, d

        P, log, warns = res["pot"]
        ok = bool(np.all(np.isfinite(P))) and not warns
        rep.check(ok, f"Sinkhorn n={n}: POT stopThr={TOL:g} failed: {warns}")
        iters, d = pot_record("pot", P, log, warns, TOL)
        rep.row(f"Sinkhorn n={n}, eps={EPS}: cnf.ot.sinkhorn(tol={TOL:g}) vs ot.dist+"
                f"ot.sinkhorn(stopThr={TOL:g})", med["cnf"], med["pot"],
                f"{cnf_note}; POT {iters} it, L1 rows+cols "
                f"{sum(rec['pot']['l1_rows_cols']):.1e}; max|P_cnf-P_pot| {d:.1e} "
                f"(max P {Pc.max():.1e})" + ("" if ok else f"; POT warned: {warns}"))

        # Same work: exactly 10 and 10 + same_k iterations, cold start, no early stop.
        if same_k:
            fixed, k0 = {}, 10
            for k in (k0, k0 + same_k):
                fixed[f"cnf_{k}"] = cnf_run(tol=1e-300, max_iter=k, eps_scaling=0)
                fixed[f"pot_{k}"] = pot(0.0, itermax=k)
            fmed, ftimes, fres, fwarm = bench(fixed, repeats)
            k1 = k0 + same_k
            assert fres[f"cnf_{k1}"].iterations == k1 and fres[f"pot_{k1}"][1]["niter"] + 1 == k1
            per_c = (fmed[f"cnf_{k1}"] - fmed[f"cnf_{k0}"]) / same_k
            per_p = (fmed[f"pot_{k1}"] - fmed[f"pot_{k0}"]) / same_k
            rec["same_work"] = dict(median_s=fmed, times_s=ftimes, warmup_s=fwarm,
                                    per_iteration_s=dict(cnf=per_c, pot=per_p))
            rep.row(f"Sinkhorn n={n}, same work: set-up + {k0} iterations, no early stop",
                    fmed[f"cnf_{k0}"], fmed[f"pot_{k0}"],
                    "cnf: cost matrix, checks, kernel, plan, <C,P>; POT: ot.dist, exp(-M/reg), "
                    "plan")
            rep.row(f"Sinkhorn n={n}, same work: {same_k} more iterations (time difference)",
                    per_c * same_k, per_p * same_k,
                    f"{per_c * 1e3:.2f} vs {per_p * 1e3:.2f} ms per iteration (two [n, n] "
                    f"mat-vecs; the marginal check every 10)"
                    + ("; below 0: set-up noise exceeds the iterations' time"
                       if min(per_c, per_p) <= 0 else ""))

        if pot_matched:
            matched = TOL / math.sqrt(n)
            dt, (P, log, warns) = timed(pot(matched))
            iters, d = pot_record("pot_matched", P, log, warns, matched)
            rep.row(f"Sinkhorn n={n}: cnf (tol={TOL:g}) vs ot.sinkhorn(stopThr=tol/sqrt(n)="
                    f"{matched:.2g}), one call", med["cnf"], dt,
                    f"POT {iters} it, L1 rows+cols {sum(rec['pot_matched']['l1_rows_cols']):.1e};"
                    f" max|P_cnf-P_pot| {d:.1e}" + (f"; POT warned: {warns}" if warns else ""))

        # The log-domain route, when plain Sinkhorn-Knopp under/overflowed (or when asked):
        # one call, no warm-up (it is ~10-15x slower than the kernel route).
        if not ok or force_log:
            dt, (P, log, warns) = timed(pot(TOL, method="sinkhorn_log"))
            iters, d = pot_record("pot_log", P, log, warns, TOL)
            rec["pot_log"]["seconds"] = dt
            rep.row(f"Sinkhorn n={n}: cnf vs ot.sinkhorn(method='sinkhorn_log', "
                    f"stopThr={TOL:g}), one call", med["cnf"], dt,
                    f"POT {iters} it; max|P_cnf-P_pot| {d:.1e}"
                    + (f"; POT warned: {warns}" if warns else ""))
        out.append(rec)
    rep.sections["sinkhorn"] = out


# --------------------------------------------------------------------------- 3. OT-CFM step

class MLP(torch.nn.Module):
    """3-64-64-64-2 SELU MLP; input [x, t] (x [B, 2], t [B])."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 64), torch.nn.SELU(), torch.nn.Linear(64, 64), torch.nn.SELU(),
            torch.nn.Linear(64, 64), torch.nn.SELU(), torch.nn.Linear(64, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


def two_moons(n, gen):
    """Two interleaved half circles (sklearn's make_moons, noise 0.05), centred, x2."""
    theta = torch.rand(n, generator=gen) * math.pi
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    which = torch.randint(0, 2, (n, 1), generator=gen).bool()
    x = torch.where(which, upper, lower) + 0.05 * torch.randn(n, 2, generator=gen)
    return 2.0 * (x - torch.tensor([0.5, 0.25]))


def pair_pot(x0, x1):
    """torchcfm's OTPlanSampler(method='exact').sample_plan: POT's exact plan on the
    squared torch.cdist cost, then n pairs drawn with replacement from the flattened plan
    (np.random.choice, numpy's global generator)."""
    n, m = x0.shape[0], x1.shape[0]
    a, b = ot.unif(n), ot.unif(m)
    M = torch.cdist(x0, x1) ** 2
    plan = ot.emd(a, b, M.detach().cpu().numpy())  # POT converts M to float64
    p = plan.flatten()
    p = p / p.sum()
    choices = np.random.choice(n * m, p=p, size=n, replace=True)
    i, j = np.divmod(choices, m)
    return x0[i], x1[j]


def train_step(model, opt, pair, gen, batch):
    """One OT-CFM step: data x0, noise x1, minibatch OT pairing, x_t on the straight line,
    loss = mean over the batch of ||v(x_t, t) - (x1 - x0)||^2, backward, Adam step."""
    x0 = two_moons(batch, gen)
    x1 = torch.randn(batch, 2, generator=gen)
    x0, x1 = pair(x0, x1)
    t = torch.rand(batch, generator=gen)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    loss = (model(xt, t) - (x1 - x0)).pow(2).sum(1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def section_train(rep, batch, steps, repeats):
    print("3. OT-CFM training step", flush=True)
    torch.manual_seed(0)
    np.random.seed(0)
    base = MLP()
    sampler = cnf.coupling.PairSampler("exact", seed=0)
    variants = {}
    for key, pair in (("cnf", sampler.pair), ("pot", pair_pot)):
        model = copy.deepcopy(base)  # the same initial weights for both
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)  # the same data and noise stream for both
        variants[key] = (model, opt, pair, gen)

    # A "call" is `steps` consecutive steps; the time includes drawing the batch, the
    # pairing, forward, backward and Adam (and loss.item() once at the end).
    def block(key):
        model, opt, pair, gen = variants[key]

        def run():
            for _ in range(steps):
                loss = train_step(model, opt, pair, gen, batch)
            return float(loss)
        return run

    med, times, res, warm = bench({"cnf": block("cnf"), "pot": block("pot")}, repeats)
    rep.row(f"OT-CFM step, batch {batch} (MLP 3-64x3-2 SELU, Adam): PairSampler('exact') "
            f"vs ot.emd + np.random.choice", med["cnf"] / steps, med["pot"] / steps,
            f"{steps / med['cnf']:.0f} vs {steps / med['pot']:.0f} steps/s; last loss "
            f"{res['cnf']:.3f} / {res['pot']:.3f}")

    # The pairing alone, on one fixed batch; a call is `k` pairings (each float32 [B, 2]).
    g = torch.Generator().manual_seed(2)
    x0, x1 = two_moons(batch, g), torch.randn(batch, 2, generator=g)
    k = max(1, steps)

    def pairs(fn):
        def run():
            for _ in range(k):
                r = fn(x0, x1)
            return r
        return run

    pmed, ptimes, pres, pwarm = bench({"cnf": pairs(sampler.pair), "pot": pairs(pair_pot)},
                                      repeats)
    # Quality of the pairs: mean squared distance (float64) and how many distinct pairs.
    (a0, a1), (b0, b1) = pres["cnf"], pres["pot"]
    cost_cnf = float((a0.double() - a1.double()).pow(2).sum(1).mean())
    cost_pot = float((b0.double() - b1.double()).pow(2).sum(1).mean())
    x0_cnf_same = bool(torch.equal(a0, x0))
    _, i_pot = torch.unique(b0, dim=0, return_inverse=True)
    unique_pot = int(torch.unique(i_pot).numel())
    rep.check(x0_cnf_same, "PairSampler('exact').pair changed x0 (expected x0 unchanged)")
    rep.row(f"OT-CFM pairing alone, batch {batch}", pmed["cnf"] / k, pmed["pot"] / k,
            f"cnf: assignment, a permutation of x1 (mean |x0-x1|^2 {cost_cnf:.4f}); POT/torchcfm: "
            f"cdist + ot.emd + np.random.choice over {batch}x{batch} entries, {unique_pot}/"
            f"{batch} distinct x0 rows (mean |x0-x1|^2 {cost_pot:.4f})")
    rep.sections["train"] = dict(batch=batch, steps_per_call=steps, median_s=med, times_s=times,
                                 warmup_s=warm, steps_per_s={k_: steps / v for k_, v in med.items()},
                                 last_loss=res, pairing_median_s={k_: v / k for k_, v in pmed.items()},
                                 pairing_times_s=ptimes, pair_cost=dict(cnf=cost_cnf, pot=cost_pot),
                                 pot_distinct_x0=unique_pot)


# --------------------------------------------------------------------------- 4. dopri5

# The reference: dopri5 in plain PyTorch with torchdiffeq's step-size control
# (bench/python/reference_solvers.py), over the same scripted module.

def section_ode(rep, n_points, repeats):
    print("4. dopri5 over a TorchScript MLP", flush=True)
    torch.manual_seed(3)
    # float64: the tight reference at rtol = atol = 1e-9 is below float32's resolution.
    module = torch.jit.script(MLP().double().eval())
    field = cnf.field(module)  # converted once (serialized into cnf), outside the timing
    x = torch.randn(n_points, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    tol = 1e-5

    # Both timings: the whole solve from t = 1 to t = 0, under torch.no_grad() (the
    # module's parameters require grad; without no_grad cnf records the autograd graph
    # through them, as plain PyTorch would).
    def run_cnf():
        with torch.no_grad():
            return cnf.solve(field, x, 1.0, 0.0, method="dopri5", rtol=tol, atol=tol)

    def run_py():
        with torch.no_grad():
            return ref_solvers.dopri5(module, x, 1.0, 0.0, tol, tol)

    med, times, res, warm = bench({"cnf": run_cnf, "py": run_py}, repeats)
    sol, (y_py, nfe_py) = res["cnf"], res["py"]
    with torch.no_grad():
        t_ref, ref = timed(lambda: cnf.solve(field, x, 1.0, 0.0, method="dopri5",
                                             rtol=1e-9, atol=1e-9))
        t_ref_py, (ref_py, nfe_ref_py) = timed(lambda: ref_solvers.dopri5(module, x, 1.0, 0.0,
                                                                          1e-9, 1e-9))
    d_both = float((sol.x - y_py).abs().max())
    d_cnf = float((sol.x - ref.x).abs().max())
    d_py = float((y_py - ref.x).abs().max())
    d_refs = float((ref.x - ref_py).abs().max())
    # Two controllers at 1e-9: each ~1e-6 from the exact flow on this SELU field (its kink
    # limits the order), so they agree to well below 1e-4.
    rep.check(d_refs < 1e-4, f"dopri5 references at 1e-9 differ by {d_refs:.1e}")
    rep.row(f"dopri5 rtol=atol={tol:g}, {n_points} points, t 1->0 (TorchScript MLP, float64): "
            f"cnf.solve vs dopri5 in PyTorch", med["cnf"], med["py"],
            f"NFE {sol.nfe} ({sol.n_accepted} acc/{sol.n_rejected} rej) vs {nfe_py}; "
            f"max|cnf-py| {d_both:.1e}; vs 1e-9 reference: cnf "
            f"{d_cnf:.1e}, py {d_py:.1e}; per NFE {med['cnf'] / sol.nfe * 1e3:.2f} vs "
            f"{med['py'] / nfe_py * 1e3:.2f} ms")
    rep.row(f"dopri5 rtol=atol=1e-9 reference (one call each, after the warm-up above)", t_ref,
            t_ref_py, f"NFE {ref.nfe} vs {nfe_ref_py}; max|cnf-py| {d_refs:.1e}")
    rep.sections["ode"] = dict(points=n_points, tol=tol, median_s=med, times_s=times,
                               warmup_s=warm, nfe=dict(cnf=sol.nfe, py=nfe_py),
                               accepted=dict(cnf=sol.n_accepted), rejected=dict(cnf=sol.n_rejected),
                               max_abs_diff=dict(cnf_vs_py=d_both, cnf_vs_ref=d_cnf,
                                                 py_vs_ref=d_py, ref_cnf_vs_ref_py=d_refs),
                               reference=dict(cnf_s=t_ref, py_s=t_ref_py, nfe_cnf=ref.nfe,
                                              nfe_py=nfe_ref_py))


# --------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and 1 repeat (a smoke test of a few seconds); also runs the "
                        "--pot-matched and --sinkhorn-log rows")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per measurement after the warm-up (default 5; 3 when a "
                        "call takes over 2 s; 1 with --quick)")
    p.add_argument("--sinkhorn-log", action="store_true",
                   help="also run POT's sinkhorn_log even when plain Sinkhorn succeeds")
    p.add_argument("--pot-matched", action="store_true",
                   help="also run POT at stopThr = tol / sqrt(n) once (slow: ~140 s at n=4096)")
    p.add_argument("--skip", default="",
                   help="comma-separated sections to skip: exact,sinkhorn,train,ode")
    args = p.parse_args()
    if args.quick:
        sizes, batch, steps, points, repeats, same_k = [128, 256], 256, 5, 200, 1, 100
    else:
        sizes, batch, steps, points, repeats = [1024, 4096], 256, 100, 1000, args.repeats
        same_k = SAME_K
    skip = {s for s in args.skip.split(",") if s}

    meta = dict(argv=sys.argv, quick=args.quick, repeats=repeats, threads=torch.get_num_threads(),
                python=platform.python_version(), cnf=cnf.__version__, torch=torch.__version__,
                numpy=np.__version__, scipy=scipy.__version__, pot=ot.__version__,
                machine=platform.machine(), cpus=os.cpu_count(), loadavg_start=os.getloadavg())
    print(f"cnf {cnf.__version__}, torch {torch.__version__}, POT {ot.__version__}, numpy "
          f"{np.__version__}, scipy {scipy.__version__}; threads {torch.get_num_threads()}; "
          f"load average {meta['loadavg_start'][0]:.2f}", flush=True)
    rep = Report()
    t_start = time.perf_counter()
    if "exact" not in skip:
        section_exact(rep, sizes, repeats)
    if "sinkhorn" not in skip:
        section_sinkhorn(rep, sizes, repeats, force_log=args.sinkhorn_log or args.quick,
                         pot_matched=args.pot_matched or args.quick, same_k=same_k)
    if "train" not in skip:
        section_train(rep, batch, steps, repeats)
    if "ode" not in skip:
        section_ode(rep, points, repeats)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["loadavg_end"] = os.getloadavg()

    print()
    print(rep.markdown())
    print(f"\nratio = Python time / cnf time; medians of {repeats} calls after one warm-up; "
          f"1 thread; total {meta['wall_s']:.0f} s; load average {meta['loadavg_start'][0]:.2f}"
          f" -> {meta['loadavg_end'][0]:.2f}")
    if rep.failures:
        print("\nFAILED CHECKS:\n  " + "\n  ".join(rep.failures))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(meta=meta, rows=rep.rows, sections=rep.sections,
                           failures=rep.failures), fh, indent=1, default=str)
        print(f"wrote {args.json}")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
