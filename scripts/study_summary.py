#!/usr/bin/env python3
"""Condenses the results.json of a study of training choices (cnf experiment time-weighting,
schedules, parameterizations, bridge) into one markdown table, a row per variant: sample
quality on the 2-D sets (W2 of dopri5 and of 4 Euler steps), the exact KL on the Gaussian
mixtures, dopri5's NFE over all sets, and the normalized path energy and training speed on the
first set, each the mean over seeds (± the standard deviation where the study ran more than
one).

    python3 scripts/study_summary.py out/time-weighting/results.json
"""
import json
import math
import sys


def mean_sd(values):
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def cell(values, digits):
    if not values:
        return "–"
    m, s = mean_sd(values)
    if len(values) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def summarize(study):
    rows = study["results"]
    tasks = []
    for r in rows:
        if r["task"] not in tasks:
            tasks.append(r["task"])
    two_d = [t for t in tasks if not any("kl" in r for r in rows if r["task"] == t)]
    mixtures = [t for t in tasks if t not in two_d]
    header = ["variant"]
    for t in two_d:
        header += [f"{t} W2", f"{t} W2 Euler 4"]
    header += [f"{t} KL" for t in mixtures]
    first = tasks[0]
    header += ["dopri5 NFE (all sets)", f"{first} path energy", f"{first} steps/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in study["variants"]:
        mine = [r for r in rows if r["variant"] == variant]
        cells = [variant]
        for t in two_d:
            cells.append(cell([r["w2"] for r in mine if r["task"] == t], 3))
            cells.append(cell([r["w2_euler4"] for r in mine if r["task"] == t], 3))
        for t in mixtures:
            cells.append(cell([r["kl"] for r in mine if r["task"] == t], 2))
        cells.append(cell([r["nfe"] for r in mine], 0))
        cells.append(cell([r["energy"] for r in mine if r["task"] == first], 2))
        cells.append(cell([r["steps_per_second"] for r in mine if r["task"] == first], 0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: study_summary.py RESULTS_JSON")
    try:
        with open(argv[1]) as f:
            study = json.load(f)
        table = summarize(study)
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"study_summary.py: cannot read the study in '{argv[1]}': {e}")
    sys.stdout.write(table)


if __name__ == "__main__":
    main(sys.argv)
