#!/usr/bin/env python3
"""The local error of one DPM-Solver++(3M) step with exact history, for the two weights of its
quadratic term (README, "Diffusion models"): k-diffusion's `- phi_3 d2` and the exact
integral's `- 2 phi_3 d2`. The exponential integrator in the variance-exploding variables,
x~_s = e^-h x~_t + int_0^h e^-(h-u) D(lambda_t + u) du, is integrated by quadrature for
D(lambda) = sin(lambda) + 0.3 lambda^2; the printed slopes are log2 of the error ratios as h
halves (about 3 and 4: local orders of a second- and a third-order method).

Run: python3 scripts/dpmpp3m_local_error.py   (Debian's python3 with python3-scipy)
"""
import math

from scipy.integrate import quad


def data(lam):
    return math.sin(lam) + 0.3 * lam * lam


def exact(x, lam, h):
    integral = quad(lambda u: math.exp(-(h - u)) * data(lam + u), 0, h, epsabs=1e-15,
                    epsrel=1e-15)[0]
    return math.exp(-h) * x + integral


def step(x, lam, h, weight):
    # Equal steps h: the history lies at lam - h and lam - 2h.
    d0, d1, d2 = data(lam), data(lam - h), data(lam - 2 * h)
    out = math.exp(-h) * x - math.expm1(-h) * d0
    a, b = d0 - d1, d1 - d2  # r0 = r1 = 1
    first = a + (a - b) / 2
    second = (a - b) / 2
    phi_2 = math.expm1(-h) / h + 1
    phi_3 = phi_2 / h - 0.5
    return out + phi_2 * first - weight * phi_3 * second


def main():
    hs = [0.04 / 2**k for k in range(5)]
    for weight, name in ((1.0, "k-diffusion's  -phi_3 d2"), (2.0, "exact integral -2 phi_3 d2")):
        errs = [abs(step(1.0, 0.3, h, weight) - exact(1.0, 0.3, h)) for h in hs]
        slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
        print(f"{name}: local error slopes " + ", ".join(f"{s:.2f}" for s in slopes))


if __name__ == "__main__":
    main()
