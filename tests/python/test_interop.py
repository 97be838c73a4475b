"""PyTorch interop with real Python (Debian's python3-torch, the same 1.13 release as
LibTorch): cnf's exported modules run in plain PyTorch with nothing of cnf imported, and
modules trained in plain PyTorch in the other time convention run in cnf."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

torch.set_num_threads(1)


def euler(field, x, t0, t1, steps):
    """Fixed-step Euler from t0 to t1 with times t0 + (t1 - t0) k / steps, as cnf's."""
    for k in range(steps):
        t = t0 + (t1 - t0) * k / steps
        h = (t1 - t0) / steps
        x = x + h * field(x, torch.full((x.shape[0],), t, dtype=x.dtype))
    return x


def rk4_with_logp(field, x, t0, t1, steps):
    """Classic RK4 on (x, int div v dt) with the exact divergence by autograd."""

    def f(t, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = field(x, torch.full((x.shape[0],), t, dtype=x.dtype))
            div = torch.zeros(x.shape[0], dtype=x.dtype)
            for i in range(x.shape[1]):
                div = div + torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i]
        return v.detach(), div.detach()

    acc = torch.zeros(x.shape[0], dtype=x.dtype)
    h = (t1 - t0) / steps
    for k in range(steps):
        t = t0 + (t1 - t0) * k / steps
        k1, d1 = f(t, x)
        k2, d2 = f(t + h / 2, x + h / 2 * k1)
        k3, d3 = f(t + h / 2, x + h / 2 * k2)
        k4, d4 = f(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        acc = acc + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    return x, acc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tmp_path_factory.mktemp("trained")


@pytest.mark.parametrize("arch", ["mlp", "hollow"])
def test_exported_flow_runs_in_plain_pytorch_and_matches_cnf_sample(cnf, tmp_path, arch):
    extra = ["--arch", "hollow", "--width", "8", "--depth", "2"] if arch == "hollow" else []
    cnf("train", "--data", "moons", "--steps", 200, "--quiet", "--out", tmp_path / "run", *extra)
    cnf("export", "--ckpt", tmp_path / "run" / "model.pt", "--out", tmp_path / "flow.pt")
    m = torch.jit.load(str(tmp_path / "flow.pt"))
    assert m.time_convention == "data-at-0"
    assert m.predicts == "velocity"
    assert m.schedule == "condot"
    assert list(m.data_shape) == [2]

    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "noise.npy", noise.numpy())
    cnf("sample", "--ckpt", tmp_path / "run" / "model.pt", "--noise", tmp_path / "noise.npy",
        "--method", "euler", "--steps", 20, "--out", tmp_path / "x.npy")
    with torch.no_grad():
        mine = euler(m.forward, noise * m.sigma_1, 1.0, 0.0, 20)
    theirs = torch.from_numpy(np.load(tmp_path / "x.npy"))
    # float32: cnf's fused kernels against PyTorch's ops over 20 steps.
    assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4), (mine - theirs).abs().max()
    # The score helper: finite, and in float64 consistent with the velocity on the OT
    # path (v = -x_t / (1 - t) + ... is not needed: check -sigma * score = E[x_1 | x_t]
    # through the module's own convert).
    m = m.double()
    x, t = noise.double(), torch.full((500,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        score = m.score(x, t)
        x1 = m.convert(m.forward(x, t), x, t, "velocity", "noise")
    assert torch.allclose(-0.5 * score, x1, rtol=1e-12, atol=1e-12)


def test_flow_matching_model_trained_in_pytorch_runs_in_cnf(cnf, tmp_path):
    """A tiny MLP trained with the conditional flow-matching loss in plain PyTorch, in the
    flow_matching convention (noise at s = 0, data at s = 1, x_s = s x_data + (1 - s) noise,
    target x_data - noise), scripted and sampled by cnf with --time data-at-1."""
    g = torch.Generator().manual_seed(1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(),
                                           torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                           torch.nn.Linear(32, 2))

        def forward(self, x, t):
            return self.net(torch.cat([x, t.to(x.dtype).reshape(-1, 1)], 1))

    torch.manual_seed(1)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    for _ in range(300):
        data = centers[torch.randint(0, 2, (256,), generator=g)] + 0.3 * torch.randn(256, 2, generator=g)
        noise = torch.randn(256, 2, generator=g)
        s = torch.rand(256, generator=g)
        xs = s[:, None] * data + (1 - s[:, None]) * noise
        loss = ((net(xs, s) - (data - noise)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    scripted = torch.jit.script(net)
    scripted.save(str(tmp_path / "fm.pt"))

    noise = torch.randn(400, 2, generator=g)
    np.save(tmp_path / "noise.npy", noise.numpy())
    model = ["--model", f"torchscript:{tmp_path / 'fm.pt'}", "--time", "data-at-1", "--model-dim", 2]
    cnf("sample", *model, "--noise", tmp_path / "noise.npy", "--method", "euler", "--steps", 25,
        "--out", tmp_path / "euler.npy")
    with torch.no_grad():
        mine = euler(net, noise, 0.0, 1.0, 25)  # its own convention: noise at 0 -> data at 1
    theirs = torch.from_numpy(np.load(tmp_path / "euler.npy"))
    # float32, the same 25 steps in both (the time grids coincide under s = 1 - t).
    assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-5), (mine - theirs).abs().max()

    # Adaptive dopri5 in cnf against a fine RK4 reference in Python: the same flow map.
    cnf("sample", *model, "--noise", tmp_path / "noise.npy", "--method", "dopri5", "--rtol", 1e-6,
        "--atol", 1e-6, "--out", tmp_path / "dopri5.npy")
    import copy

    ref, _ = rk4_with_logp(copy.deepcopy(net).double(), noise.double(), 0.0, 1.0, 200)
    dopri = torch.from_numpy(np.load(tmp_path / "dopri5.npy")).double()
    # Tolerance 1e-6 on a smooth field; float32 evaluations: 1e-4 absolute.
    assert (dopri - ref).abs().max() < 1e-4

    # Exact log-likelihood: cnf's sample --with-logp (RK4, autograd divergence) against the
    # same integral in Python, from the same noise.
    cnf("sample", *model, "--noise", tmp_path / "noise.npy", "--method", "rk4", "--steps", 40,
        "--with-logp", "--divergence", "exact", "--out", tmp_path / "rk4.npy")
    x, int_div = rk4_with_logp(net, noise, 0.0, 1.0, 40)
    # log rho_data(x) = log N(noise) - int_0^1 div u ds in its convention.
    log_prior = -0.5 * (noise ** 2).sum(1) - np.log(2 * np.pi)
    mine_logp = log_prior - int_div
    theirs_logp = torch.from_numpy(np.load(tmp_path / "rk4_logp.npy")).to(mine_logp.dtype)
    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "rk4.npy")), x, atol=1e-5)
    # float32 sums over 160 evaluations: 1e-5 relative to log-densities of order 1.
    assert torch.allclose(mine_logp, theirs_logp, rtol=1e-5, atol=1e-5), (mine_logp - theirs_logp).abs().max()


def test_bad_module_is_a_clear_error(cnf_binary, tmp_path):
    import subprocess

    class NoTime(torch.nn.Module):
        def forward(self, x):
            return x

    torch.jit.script(NoTime()).save(str(tmp_path / "bad.pt"))
    r = subprocess.run([cnf_binary, "sample", "--model", f"torchscript:{tmp_path / 'bad.pt'}",
                        "--model-dim", "2", "--out", str(tmp_path / "x.npy")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "cnf needs forward(x, t)" in r.stderr and "bad.pt" in r.stderr
    assert not (tmp_path / "x.npy").exists()


def test_state_dict_export_loads_with_torch_load(cnf, tmp_path):
    import json

    cnf("train", "--data", "moons", "--steps", 50, "--quiet", "--out", tmp_path / "run")
    cnf("export", "--ckpt", tmp_path / "run" / "model.pt", "--out", tmp_path / "w.pt",
        "--format", "state-dict", "--weights", "raw")
    tensors = torch.load(str(tmp_path / "w.pt"))
    meta = json.loads((tmp_path / "w.pt.json").read_text())
    assert meta["predicts"] == "velocity" and meta["weights"] == "raw"
    assert set(tensors) == set(meta["tensors"])
    for name, shape in meta["tensors"].items():
        assert list(tensors[name].shape) == shape
    # The same weights as the TorchScript export with raw weights.
    cnf("export", "--ckpt", tmp_path / "run" / "model.pt", "--out", tmp_path / "m.pt", "--weights", "raw")
    m = torch.jit.load(str(tmp_path / "m.pt"))
    for name, value in tensors.items():
        assert torch.equal(getattr(m, name.replace(".", "__")), value)


def test_exported_conditional_unet_runs_in_plain_pytorch(cnf, tmp_path):
    """A small class-conditional U-Net (Fashion-MNIST at 7 x 7, two levels) trained a few
    steps by cnf, exported, and sampled by a Python Euler loop from the same noise as
    `cnf sample`; guidance and the pixel map are there too."""
    cnf("train", "--data", "fashion-mnist:size=7:n=64", "--arch", "unet", "--width", "8",
        "--channel-mult", "1,2", "--classes", "10", "--steps", 3, "--batch-size", 8,
        "--eval-n", 16, "--eval-steps", 2, "--quiet", "--out", tmp_path / "run")
    cnf("export", "--ckpt", tmp_path / "run" / "model.pt", "--out", tmp_path / "u.pt")
    m = torch.jit.load(str(tmp_path / "u.pt"))
    assert m.classes == 10 and list(m.image_shape) == [1, 7, 7] and m.pixel_transform == "scale"
    noise = torch.randn(16, 49, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "noise.npy", noise.numpy())
    cnf("sample", "--ckpt", tmp_path / "run" / "model.pt", "--noise", tmp_path / "noise.npy",
        "--method", "euler", "--steps", 8, "--out", tmp_path / "x.npy")
    with torch.no_grad():
        mine = euler(m.forward, noise * m.sigma_1, 1.0, 0.0, 8)
        labels = torch.arange(16) % 10
        guided = m.velocity_guided(noise, torch.full((16,), 0.5), labels, 1.5)
        pixels = m.to_pixels(mine)
    theirs = torch.from_numpy(np.load(tmp_path / "x.npy"))
    # float32 convolutions in the same order: 1e-4 over 8 steps.
    assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4), (mine - theirs).abs().max()
    assert guided.shape == noise.shape and torch.isfinite(guided).all()
    assert pixels.shape == (16, 1, 7, 7) and pixels.min() >= 0 and pixels.max() <= 1


def test_study_summary_condenses_a_study_into_means_over_seeds(cnf, tmp_path):
    # A tiny two-seed study; the summary's cells are the means over seeds of runs.jsonl's rows,
    # recomputed here from that file (the run log, not results.json the script reads).
    out = tmp_path / "tw"
    cnf("experiment", "time-weighting", "--quiet", "--tasks", "moons,gmm:2@3", "--variant",
        "uniform", "--variant", "logit-normal", "--steps", "30", "-n", "64", "--nll-n", "16",
        "--tol", "1e-3", "--seeds", "0,1", "--out", out)
    script = ROOT / "scripts" / "study_summary.py"
    table = subprocess.run([sys.executable, str(script), str(out / "results.json")],
                           capture_output=True, text=True, check=True).stdout
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["variant", "moons W2", "moons W2 Euler 4", "gmm:2@3 KL"]
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        mine = [r for r in runs if r["variant"] == cells[0]]
        assert len(mine) == 4  # two sets, two seeds
        w2 = [r["w2"] for r in mine if r["task"] == "moons"]
        kl = [r["kl"] for r in mine if r["task"] == "gmm:2@3"]
        # Printed to 3 and 2 decimals: half a unit in the last place.
        assert abs(float(cells[1].split(" ± ")[0]) - sum(w2) / 2) <= 5e-4
        assert abs(float(cells[3].split(" ± ")[0]) - sum(kl) / 2) <= 5e-3
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "missing.json")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "missing.json" in bad.stderr
