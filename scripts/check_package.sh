#!/usr/bin/env bash
# Checks the Debian package that `make package` built: its control fields (name, version =
# the library's, architecture, the Debian packages it depends on) and its file list (the
# command, headers, both libraries, the CMake package, cnf.pc, the Python module, which must
# import from the unpacked package), and that apt can resolve
# its dependencies (a simulated install changes nothing).
# Usage: scripts/check_package.sh BUILD_DIR   (prints "N passed, M failed" last)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: scripts/check_package.sh BUILD_DIR}
version=$(sed -n 's/^#define CNF_VERSION "\(.*\)"$/\1/p' "$build/generated/include/cnf/version.h")
deb="$build/cnf_${version}_amd64.deb"
passed=0 failed=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok     $what"; passed=$((passed + 1));
  else echo "FAILED $what"; failed=$((failed + 1)); fi
}
check "$deb exists" test -s "$deb"
field() { dpkg-deb -f "$deb" "$1" 2>/dev/null; }
files=$(dpkg-deb -c "$deb" 2>/dev/null | awk '{print $6}')
check "Package is cnf" test "$(field Package)" = cnf
check "Version is the library's ($version)" test "$(field Version)" = "$version"
check "Architecture is amd64" test "$(field Architecture)" = amd64
for dep in libtorch-dev libdnnl-dev libtomlplusplus-dev zlib1g-dev libopenblas0-pthread; do
  check "Depends names $dep" grep -qw -- "$dep" <<<"$(field Depends)"
done
for f in ./usr/bin/cnf ./usr/include/cnf/version.h ./usr/include/cnf/train/trainer.h \
         ./usr/include/cnf/ode/solve.h ./usr/lib/libcnf.a "./usr/lib/libcnf.so.$version" \
         ./usr/lib/cmake/cnf/cnfConfig.cmake ./usr/lib/cmake/cnf/cnfConfigVersion.cmake \
         ./usr/lib/cmake/cnf/cnfTargets.cmake ./usr/lib/pkgconfig/cnf.pc; do
  check "holds $f" grep -qxF -- "$f" <<<"$files"
done
check "holds the Python module (cnf/__init__.py, the extension)" bash -c \
  "grep -qxF ./usr/lib/python3/dist-packages/cnf/__init__.py <<<\"\$1\" && grep -q '^\./usr/lib/python3/dist-packages/cnf/_cnf\..*\.so$' <<<\"\$1\"" _ "$files"
check "Recommends python3-torch (the module's PyTorch)" grep -qw python3-torch <<<"$(field Recommends)"
# The packaged module runs as Debian's python3 would find it, from the unpacked tree.
unpacked=$(mktemp -d "${TMPDIR:-/tmp}/cnf-deb.XXXXXX")
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked" 2>/dev/null
check "its Python module imports and runs" env PYTHONPATH="$unpacked/usr/lib/python3/dist-packages" \
  /usr/bin/python3 -c "import torch, cnf; x = torch.randn(8, 2, dtype=torch.float64); assert abs(cnf.ot.exact(x, x + 1).cost - 2) < 1e-9"
check "holds no file outside /usr" bash -c "! grep -v '^\./usr/' <<<\"\$1\" | grep -q ." _ "$files"
check "holds no build-tree path (sources, tests)" bash -c "! grep -qE 'tests/|src/|\.cpp$' <<<\"\$1\"" _ "$files"
if command -v apt-get >/dev/null; then
  check "apt resolves its Depends (simulated install of ./$(basename "$deb"))" \
    apt-get install -s -qq "$PWD/$deb"
fi
echo "package checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
