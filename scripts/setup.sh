#!/usr/bin/env bash
# Installs the Debian 12 packages cnf needs, only those that are missing.
# Idempotent; runs as root (or through sudo when available).
set -euo pipefail

PACKAGES=(
  cmake g++ make ccache pkg-config
  libtorch-dev            # LibTorch 1.13.1 (calls the system libblas.so.3)
  libgloo-dev             # Gloo headers for c10d process groups (cnf train --nproc, multi-host)
  libopenblas0-pthread    # fast BLAS behind libblas.so.3 (25x the reference BLAS)
  liblemon-dev            # network simplex for exact optimal transport
  libtomlplusplus-dev     # TOML config files
  libcli11-dev            # command-line parsing
  nlohmann-json3-dev      # metrics.json and --json output
  libstb-dev              # stb_image(_write) for image data sets and image grids
  libcairo2-dev           # the plots (io/plot.cpp): antialiased lines and real fonts
  fonts-dejavu-core       # the plots' font (any font fontconfig finds would do)
  chromium                # make check-report: the HTML report opened in a real browser
  zlib1g-dev              # gzip-compressed IDX image files
  dataset-fashion-mnist   # Fashion-MNIST (IDX, gzip) for the image flows
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev
  libeigen3-dev           # fused MLP fast path: vectorized activations, float64 products
  libdnnl-dev             # fused MLP fast path: oneDNN sgemm (the library LibTorch links)
  clang-14                # the sanitizer + fuzzing build (make sanitize, make fuzz-smoke)
  libclang-rt-14-dev      # AddressSanitizer, UBSan and libFuzzer runtimes for clang-14
  clang-format-14         # make format / make check-format (.clang-format)
  doxygen                 # make docs: the API reference
  python3 python3-torch   # interop tests: exported modules in plain PyTorch (same 1.13 release)
  python3-pytest          # runs tests/python
  python3-dev pybind11-dev  # the Python module `cnf` (make python)
  python3-scipy python3-pot  # its tests and benchmarks: scipy's assignment, POT's OT solvers
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: missing packages (${missing[*]}) and not root; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
