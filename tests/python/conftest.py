"""Shared fixtures of the Python interop tests: the cnf binary and a scratch folder."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cnf_binary():
    path = pathlib.Path(os.environ.get("CNF_BINARY", ROOT / "build" / "cnf"))
    if not path.exists():
        pytest.fail(f"cnf binary {path} not found: build it (make build) or set CNF_BINARY")
    return str(path)


@pytest.fixture
def cnf(cnf_binary):
    """Runs `cnf ARGS...`; fails the test with cnf's output when it exits non-zero."""

    def run(*args):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        r = subprocess.run([cnf_binary, *map(str, args)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"cnf {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}"
        return r.stdout

    return run


# The Python module: the build's package folder (make python), unless CNF_PYTHON_DIR says
# where else (an installed prefix's dist-packages).
PYTHON_DIR = os.environ.get("CNF_PYTHON_DIR", str(ROOT / "build" / "python"))
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)
