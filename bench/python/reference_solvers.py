"""ODE solvers written the way a Python user of flow models writes them, in plain PyTorch:
fixed-step Euler and RK4 loops, and dopri5 with the step-size control of the Python ODE
library most flow-matching code uses (torchdiffeq). The benchmarks compare cnf against
these in the same process.

Fields are f(x, t) with x [B, ...] and t [B] (one time per row), as cnf's.
"""
import torch

# Dormand & Prince (1980), RK5(4)7FM: nodes, coefficients, the order-5 weights (the
# solution) and the order-4 weights (the embedded estimate). FSAL: stage 7 is f(y1).
DP_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]
DP_A = [[],
        [1 / 5],
        [3 / 40, 9 / 40],
        [44 / 45, -56 / 15, 32 / 9],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]]
DP_B5 = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
DP_B4 = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
DP_E = [b5 - b4 for b5, b4 in zip(DP_B5, DP_B4)]


def _times(x, t):
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def euler(f, x, t0, t1, steps):
    """Fixed-step Euler with times t0 + (t1 - t0) k / steps. Returns (x(t1), NFE)."""
    h = (t1 - t0) / steps
    for k in range(steps):
        x = x + h * f(x, _times(x, t0 + k * h))
    return x, steps


def rk4(f, x, t0, t1, steps):
    """Classic fixed-step RK4. Returns (x(t1), NFE)."""
    h = (t1 - t0) / steps
    for k in range(steps):
        t = t0 + k * h
        k1 = f(x, _times(x, t))
        k2 = f(x + h / 2 * k1, _times(x, t + h / 2))
        k3 = f(x + h / 2 * k2, _times(x, t + h / 2))
        k4 = f(x + h * k3, _times(x, t + h))
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x, 4 * steps


def _rms(e):
    return float((e ** 2).mean().sqrt())


def dopri5(f, y0, t0, t1, rtol, atol, max_steps=100000):
    """dopri5 with torchdiffeq's control: error norm = RMS over all elements of
    err / (atol + rtol max(|y0|, |y1|)), a step accepted when it is <= 1; the next size is
    h * clamp(0.9 err^(-1/5), dfactor, 10) with dfactor = 1 after an acceptance (an
    accepted step never shrinks the next) and 0.2 after a rejection; the first step by
    Hairer's rule. Steps are cut to land on t1 (torchdiffeq integrates past t1 and
    interpolates: at most one step's difference). Returns (y(t1), NFE)."""
    d = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    y, t = y0, t0
    k1 = f(y, _times(y, t))
    nfe = 1
    # Hairer, Norsett & Wanner I, II.4: h0 from |y0| / |f0|, an Euler trial step for the
    # second derivative, h1 = (0.01 / max(d1, d2))^(1/5).
    sc = atol + rtol * y.abs()
    d0, d1 = _rms(y / sc), _rms(k1 / sc)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    f1 = f(y + d * h0 * k1, _times(y, t + d * h0))
    nfe += 1
    d2 = _rms((f1 - k1) / sc) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    h = min(100 * h0, h1)
    steps = 0
    while d * (t1 - t) > 0:
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"dopri5: max_steps reached at t = {t}")
        h = min(h, abs(t1 - t))
        hs = d * h
        ks = [k1]
        for i in range(1, 7):
            yi = y.clone()
            for a, k in zip(DP_A[i], ks):
                if a != 0.0:
                    yi.add_(k, alpha=hs * a)
            ks.append(f(yi, _times(y, t + DP_C[i] * hs)))
        nfe += 6
        y1 = yi  # the last stage's argument is the order-5 solution
        err = torch.zeros_like(y)
        for e, k in zip(DP_E, ks):
            if e != 0.0:
                err.add_(k, alpha=hs * e)
        en = _rms(err / (atol + rtol * torch.maximum(y.abs(), y1.abs())))
        if en <= 1.0:
            t = t1 if abs(t1 - (t + hs)) < 1e-14 * span else t + hs
            y, k1 = y1, ks[6]
            h *= 10.0 if en == 0 else min(10.0, max(1.0, 0.9 * en ** -0.2))
        else:
            h *= min(10.0, max(0.2, 0.9 * en ** -0.2))
    return y, nfe
