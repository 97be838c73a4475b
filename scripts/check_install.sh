#!/usr/bin/env bash
# Checks cnf as a library other programs build on (the README's "Use cnf from C++"):
#  1. `cmake --install` into a temporary prefix;
#  2. every installed public header compiles on its own (one translation unit per header);
#  3. every project in examples/ configures, builds and runs out of tree against the
#     installed CMake package only (find_package(cnf)); one program builds by pkg-config;
#  4. `cnf --version` equals the package version;
#  5. the Python module imports from the prefix and runs.
# Usage: scripts/check_install.sh BUILD_DIR   (prints "N passed, M failed" last)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:?usage: scripts/check_install.sh BUILD_DIR}
jobs=${JOBS:-2}
work=$(mktemp -d "${TMPDIR:-/tmp}/cnf-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
passed=0 failed=0
step() {  # step NAME COMMAND...: runs the command with its output in a log, prints the result
  local name=$1; shift
  local log="$work/$(echo "$name" | tr -c 'a-zA-Z0-9_' '_').log"
  if "$@" >"$log" 2>&1; then
    echo "ok     $name"; passed=$((passed + 1))
  else
    echo "FAILED $name (log follows)"; tail -n 40 "$log"; failed=$((failed + 1))
  fi
}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

step "install into a temporary prefix" cmake --install "$build" --prefix "$prefix"
version=$(sed -n 's/^#define CNF_VERSION "\(.*\)"$/\1/p' "$prefix/include/cnf/version.h")
step "cnf --version prints the package version ($version)" \
  bash -c "[ \"\$('$prefix/bin/cnf' --version)\" = 'cnf $version' ]"

# One translation unit per installed header, built against the installed package only.
hdr=$work/headers
mkdir -p "$hdr"
{
  echo 'cmake_minimum_required(VERSION 3.18)'
  echo 'project(cnf_header_check LANGUAGES CXX)'
  echo 'find_package(cnf 0.2 CONFIG REQUIRED)'
  echo 'add_library(headers OBJECT'
  (cd "$prefix/include" && find cnf -name '*.h' | sort) | while read -r h; do
    src="$hdr/$(echo "$h" | tr '/.' '__').cpp"
    printf '#include <%s>\n#include <%s>  // twice: the include guard holds\n' "$h" "$h" >"$src"
    echo "  $src"
  done
  echo ')'
  echo 'target_link_libraries(headers PRIVATE cnf::cnf)'
  echo 'target_compile_options(headers PRIVATE -Wall -Wextra -Werror -Wno-unused-parameter)'
} >"$hdr/CMakeLists.txt"
step "every public header compiles on its own" bash -c \
  "cmake -S '$hdr' -B '$hdr/build' -DCMAKE_PREFIX_PATH='$prefix' ${launcher[*]} && cmake --build '$hdr/build' -j$jobs -- -k"

for ex in examples/*/; do
  name=$(basename "$ex")
  step "example $name builds against the installed package" bash -c \
    "cmake -S '$ex' -B '$work/ex-$name' -DCMAKE_PREFIX_PATH='$prefix' ${launcher[*]} && cmake --build '$work/ex-$name' -j$jobs"
done
# Small sizes: each runs in seconds. train_own_data's checkpoint feeds sample_checkpoint.
step "example train_own_data runs" bash -c "cd '$work' && ./ex-train_own_data/train_own_data ring.pt 1500"
step "example sample_checkpoint runs on its checkpoint" bash -c "cd '$work' && ./ex-sample_checkpoint/sample_checkpoint ring.pt"
step "example optimal_transport runs" bash -c "cd '$work' && ./ex-optimal_transport/optimal_transport 256"
step "example custom_field runs" bash -c "cd '$work' && ./ex-custom_field/custom_field 1500"

# pkg-config: the shared library and LibTorch's flags, no CMake.
cat >"$work/pc.cpp" <<'CPP'
#include <cnf/ot/emd.h>
#include <cnf/version.h>
#include <torch/torch.h>
#include <cstdio>
int main() {
  auto x = torch::randn({16, 2}, torch::kFloat64);
  auto r = cnf::ot::emd(x, x + 1.0);
  std::printf("cnf %s: cost %.6f\n", CNF_VERSION, r.cost);  // every point moves by (1, 1)
  return r.cost > 1.999999 && r.cost < 2.000001 ? 0 : 1;
}
CPP
step "a program builds by pkg-config and runs" bash -c \
  "export PKG_CONFIG_PATH='$prefix/lib/pkgconfig'; g++ '$work/pc.cpp' -o '$work/pc' \$(pkg-config --cflags --libs cnf) -Wl,-rpath,'$prefix/lib' && '$work/pc'"

# The Python module, installed under PREFIX/lib/python3.X/dist-packages (on Debian's default
# sys.path for PREFIX=/usr/local): imports from there and solves an exact OT problem.
pyver=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ -d "$build/python/cnf" ]; then
  step "the Python module imports from the prefix and runs" env \
    PYTHONPATH="$prefix/lib/python$pyver/dist-packages" /usr/bin/python3 -c "
import torch, cnf
assert cnf.__file__.startswith('$prefix'), cnf.__file__
x = torch.randn(16, 2, dtype=torch.float64)
r = cnf.ot.exact(x, x + 1)
assert abs(r.cost - 2) < 1e-9 and cnf.__version__ == '$version', (r.cost, cnf.__version__)
print('cnf', cnf.__version__, 'from', cnf.__file__)"
fi

echo "install checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
