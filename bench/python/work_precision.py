"""Work against precision: error of sampling a trained flow versus NFE and wall time, for
cnf's ODE methods and samplers and for the same solvers written in plain PyTorch, in one
run on the same noise.

Two models (trained here by the `cnf` command unless given): flow matching on the OT path
(the demo's recipe) and on the VP path, both N(0, I) -> moons, a 3-64-64-64-2 SELU MLP.
For each, 1,000 prior draws are transported from t = 1 to t = 0 and compared with a
reference solve (cnf's dopri5 at rtol = atol = 1e-12 over the float64 copy of the
exported module). Error = the largest absolute coordinate error over all points.

- NFE columns: every solver over the same float64 TorchScript field (only the solver
  differs): cnf.solve with dopri5 / tsit5 / bosh3 at tolerances 1e-2 ... 1e-7 and Euler /
  midpoint / RK4 at 2 ... 256 steps; plain PyTorch dopri5 with torchdiffeq's controller and
  Euler / RK4 loops (bench/python/reference_solvers.py).
- Time columns: how each is run in practice, float32: cnf.load(checkpoint).sample (the
  command's code: cnf's fused MLP kernels) against the plain PyTorch solvers over the
  float32 TorchScript module. One thread; the median of --repeats calls.
- On the VP model, also cnf's diffusion samplers (DDIM, DPM-Solver 2/3, DPM-Solver++(2M))
  at 2 ... 64 steps: they solve the same probability-flow ODE.

The table gives, per method, the NFE and the time needed to reach a max error of 1e-1 ...
1e-5, interpolated log-log along its curve ("-" where the curve does not reach it).

Usage:
    PYTHONPATH=build/python /usr/bin/python3 bench/python/work_precision.py \
        [--cnf build/cnf] [--ot-ckpt M.pt] [--vp-ckpt M.pt] [--json out.json] [--quick]
"""
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

import cnf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import reference_solvers as ref  # noqa: E402

ERRORS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]


def run(binary, *args):
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cnf {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}")


def timed(fn, repeats):
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def reach(points, target, key):
    """`key` (NFE or seconds) needed to reach error `target`, interpolated log-log between
    the two points of the curve around it (the curve sorted by NFE)."""
    pts = sorted(points, key=lambda p: p["nfe"])
    for a, b in zip(pts, pts[1:]):
        if a["error"] >= target >= b["error"] and a["error"] > b["error"]:
            w = math.log(a["error"] / target) / math.log(a["error"] / b["error"])
            return math.exp(math.log(a[key]) + w * math.log(b[key] / a[key]))
    if pts and pts[0]["error"] <= target:
        return pts[0][key]
    return None


def study(name, ckpt, binary, work, quick, repeats, sampler_rows):
    module_file = work / f"{name}.pt"
    run(binary, "export", "--ckpt", ckpt, "--out", module_file)
    m32 = torch.jit.load(str(module_file))
    m64 = torch.jit.load(str(module_file)).double()
    f64 = cnf.field(m64)
    flow = cnf.load(ckpt)
    n = 200 if quick else 1000
    x32 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    x64 = x32.double()
    exact = cnf.solve(f64, x64, 1.0, 0.0, rtol=1e-12, atol=1e-12).x

    def err(x):
        return float((x.double() - exact).abs().max())

    tols = [1e-2, 1e-4, 1e-6] if quick else [10 ** (-k / 2) for k in range(4, 15)]
    steps = [2, 8, 32] if quick else [2, 4, 8, 16, 32, 64, 128, 256]
    curves = {}

    def add(label, nfe, error, seconds):
        curves.setdefault(label, []).append({"nfe": nfe, "error": error, "seconds": seconds})

    with torch.no_grad():
        for method in ("dopri5", "tsit5", "bosh3"):
            for tol in tols:
                s = cnf.solve(f64, x64, 1.0, 0.0, method=method, rtol=tol, atol=tol)
                _, sec = timed(lambda: flow.sample(noise=x32, method=method, rtol=tol, atol=tol),
                               repeats)
                add(f"cnf {method}", s.nfe, err(s.x), sec)
        for tol in tols:
            y, nfe = ref.dopri5(m64, x64, 1.0, 0.0, tol, tol)
            _, sec = timed(lambda: ref.dopri5(m32, x32, 1.0, 0.0, tol, tol), repeats)
            add("PyTorch dopri5 (torchdiffeq's control)", nfe, err(y), sec)
        for method in ("euler", "midpoint", "rk4"):
            for k in steps:
                s = cnf.solve(f64, x64, 1.0, 0.0, method=method, steps=k)
                _, sec = timed(lambda: flow.sample(noise=x32, method=method, steps=k), repeats)
                add(f"cnf {method}", s.nfe, err(s.x), sec)
        for label, solver in (("PyTorch euler loop", ref.euler), ("PyTorch rk4 loop", ref.rk4)):
            for k in steps:
                y, nfe = solver(m64, x64, 1.0, 0.0, k)
                _, sec = timed(lambda: solver(m32, x32, 1.0, 0.0, k), repeats)
                add(label, nfe, err(y), sec)
        for sampler in sampler_rows:
            for k in steps:
                if k > 64:
                    continue
                x, sec = timed(lambda: flow.sample(noise=x32, sampler=sampler, steps=k), repeats)
                add(f"cnf {sampler}", flow.last_nfe, err(x), sec)
    return curves


def table(name, curves):
    head = " | ".join(f"{e:g}" for e in ERRORS)
    lines = [f"**{name}**: NFE / milliseconds to reach max error", "",
             f"| method | {head} |", "|---|" + "---|" * len(ERRORS)]
    for label, pts in curves.items():
        cells = []
        for e in ERRORS:
            nfe, sec = reach(pts, e, "nfe"), reach(pts, e, "seconds")
            cells.append("-" if nfe is None else f"{nfe:.0f} / {1e3 * sec:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = pathlib.Path(__file__).resolve().parents[2]
    p.add_argument("--cnf", default=str(root / "build" / "cnf"), help="the cnf binary")
    p.add_argument("--ot-ckpt", help="an OT-path checkpoint (default: trained here)")
    p.add_argument("--vp-ckpt", help="a VP-path checkpoint (default: trained here)")
    p.add_argument("--steps", type=int, default=20000, help="training steps of each model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the curves here")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    a = p.parse_args()
    repeats = 1 if a.quick else a.repeats
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        ckpts = {}
        for name, given, extra in (("ot", a.ot_ckpt, []), ("vp", a.vp_ckpt, ["--schedule", "vp"])):
            if given:
                ckpts[name] = given
                continue
            steps = 500 if a.quick else a.steps
            run(a.cnf, "train", "--data", "moons", "--steps", steps, "--quiet", "--out",
                work / name, *extra)
            ckpts[name] = str(work / name / "model.pt")
        results = {
            "OT path (condot)": study("ot", ckpts["ot"], a.cnf, work, a.quick, repeats, []),
            "VP path": study("vp", ckpts["vp"], a.cnf, work, a.quick, repeats,
                             ["ddim", "dpm2", "dpm3", "dpm++2m"]),
        }
    for name, curves in results.items():
        print(table(name, curves))
        print()
    print(f"cnf {cnf.__version__}, torch {torch.__version__}, 1 thread, "
          f"{time.perf_counter() - t_start:.0f} s")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
