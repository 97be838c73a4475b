#!/usr/bin/env python3
"""Fails when a part of the library includes a part above it (DESIGN.md section 2).

Each part (include/cnf/<part>/ and src/<part>/) may include only the parts listed for it
below. The table is DESIGN.md's "depends on" column plus the edges it implies; every edge
beyond the table is named with its reason. The library never includes apps/ or python/.
Usage: scripts/check_layers.py [ROOT]   (ROOT: the source tree, default: this checkout)
"""
import os
import re
import sys
import tempfile

# part -> the parts it may include (core is always allowed).
ALLOWED = {
    "core": set(),
    # io reads and writes files (NPY, CSV, TOML, PNG): a base every part may use.
    "io": set(),
    "nn": set(),
    "path": set(),
    "ode": set(),
    "dist": set(),
    # data reads its tables through io.
    "data": {"io"},
    # neural OT maps are networks (ICNN, critic) from nn.
    "ot": {"nn"},
    # the samplers integrate networks on a path with the ODE solvers.
    "sde": {"path", "ode", "nn"},
    "coupling": {"ot", "ode"},
    # likelihoods need the prior's density (data), the network (nn) and the path (path).
    "density": {"ode", "data", "nn", "path"},
    "objective": {"path", "coupling", "ode", "density", "data", "nn"},
    "metrics": {"ot", "density", "data", "io"},
    "train": {"nn", "path", "ode", "sde", "ot", "coupling", "objective", "density", "metrics",
              "data", "dist", "io"},
    # DESIGN.md: rectify samples through train today.
    "rectify": {"train", "nn", "path", "ode", "sde", "coupling", "data", "io", "metrics"},
    "interop": {"nn", "path", "train", "sde", "data", "io"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')


def part_includes(root, part):
    """(file, line number, included part) of every cnf/ or apps/ include of `part`."""
    for top in (os.path.join(root, "include", "cnf", part), os.path.join(root, "src", part)):
        for folder, _, files in os.walk(top):
            for name in sorted(files):
                if not name.endswith((".h", ".hpp", ".cpp", ".cc")):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for number, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = m.group(1)
                        if target.startswith(("apps/", "python/")):
                            yield path, number, target.split("/")[0]
                        elif target.startswith("cnf/") and target.count("/") >= 2:
                            yield path, number, target.split("/")[1]


def violations(root):
    parts = sorted(os.listdir(os.path.join(root, "include", "cnf")))
    out = []
    for part in parts:
        if not os.path.isdir(os.path.join(root, "include", "cnf", part)):
            continue
        if part not in ALLOWED:
            out.append(f"part '{part}' is not in scripts/check_layers.py's table: add it with "
                       "the parts it may include")
            continue
        for path, number, used in part_includes(root, part):
            if used in (part, "core") or used in ALLOWED[part]:
                continue
            out.append(f"{os.path.relpath(path, root)}:{number}: {part} includes {used}, which "
                       f"it may not (allowed: {', '.join(sorted(ALLOWED[part] | {'core'}))})")
    return out


def acyclic():
    """The table itself points one way: no part reaches itself through allowed includes."""
    for start in ALLOWED:
        seen, todo = set(), list(ALLOWED[start])
        while todo:
            part = todo.pop()
            assert part != start, f"the layering table has a cycle through '{start}'"
            if part not in seen:
                seen.add(part)
                todo.extend(ALLOWED.get(part, ()))


def self_test():
    """The check must be able to fail: a core header that includes train/ is caught."""
    with tempfile.TemporaryDirectory() as root:
        for part in ("core", "train"):
            os.makedirs(os.path.join(root, "include", "cnf", part))
        with open(os.path.join(root, "include", "cnf", "core", "bad.h"), "w") as f:
            f.write('#include "cnf/train/trainer.h"\n')
        found = violations(root)
        assert len(found) == 1 and "core includes train" in found[0], found


def main():
    acyclic()
    self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))
    found = violations(root)
    for v in found:
        print(v, file=sys.stderr)
    if found:
        print(f"check_layers: {len(found)} include(s) against the layering", file=sys.stderr)
        return 1
    print("check_layers: every part includes only the parts below it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
