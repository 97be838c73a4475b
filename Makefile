# cnf: the two commands that set everything up are `make demo` and `make test`.
BUILD ?= build
TYPE  ?= Release
JOBS  ?= 2
OUT   ?= out/demo
PREFIX ?= /usr/local
# OpenBLAS then starts no thread pool of its own (LibTorch's threads do the work).
export OPENBLAS_NUM_THREADS ?= 1

# The sanitizer + fuzzing build (clang, ASan + UBSan, libFuzzer), separate from $(BUILD).
SAN_BUILD    ?= build-san
FUZZ_SECONDS ?= 20
# The fast tests that run instrumented (a ctest regex): files and parsers, fuzz replays,
# crash safety, solvers, paths, data, networks, training and resume, metrics, checkpoint
# errors. The slow statistical studies and CLI end-to-end runs stay in the plain build.
SAN_TESTS ?= ^(IoTest|MemoryTest|ScheduleSpec|CheckpointCompat|CouplingTest|DataSplitTest|IoProgressTest|NpyTest|CsvTest|FuzzRegressions|ReliabilityTest|OdeTest|PathTest|DataTest|NnTest|TrainTest|MetricsTest|FastMlp|ImagesIdx)\.|^(AllTableaus|AdaptiveTableaus|AllSchedules|AllToys)/|^CliTest\.(MissingAndTruncatedCheckpoints|ResumedTrainingEqualsUninterrupted|BadTablesNameFileRowAndColumn)$$|^Rectify\.Pair|^OtExact\.ScalarAndSimdAssignmentAgree$$|^OtSinkhorn\.Kernel|^Mle\.ForwardMode|^Mle\.FusedJvp|^Hollow\.(Divergence|Analytic|Bad)
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
          LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all setup configure build build-cnf build-install python demo test check-format check-layers check-python check-install install package docs bench clean format \
        sanitize-build sanitize fuzz-smoke fuzz

all: build

setup:
	./scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

# The command alone (and the library it links): what `make demo` needs, no tests.
build-cnf: configure
	cmake --build $(BUILD) -j$(JOBS) --target cnf_app

# What `make install` and the package carry: both libraries, the command, the Python module.
build-install: configure
	cmake --build $(BUILD) -j$(JOBS) --target cnf cnf_shared cnf_app cnf_python

# The Python module: $(BUILD)/python/cnf (PYTHONPATH=$(BUILD)/python python3 -c 'import cnf').
python: configure
	cmake --build $(BUILD) -j$(JOBS) --target cnf_python

demo: build-cnf
	./$(BUILD)/cnf demo --out $(OUT)

# Every test: the plain build's ctest, the install / examples / package checks, then the
# sanitizer job and a bounded fuzzing run.
test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	$(MAKE) check-format check-layers docs check-python check-install check-package sanitize fuzz-smoke

# A lower part of the library never includes a higher one (DESIGN.md section 2).
check-layers:
	$(PYTHON) scripts/check_layers.py

# The interop tests in real Python: Debian's own python3 (python3-torch, python3-pytest),
# not a version manager's shim that may come first on PATH.
# The report tests open pages in headless Chromium (installed by setup), required here.
PYTHON ?= /usr/bin/python3
check-python: build
	CNF_BINARY=$(CURDIR)/$(BUILD)/cnf CNF_PYTHON_DIR=$(CURDIR)/$(BUILD)/python OMP_NUM_THREADS=1 \
	  CNF_REQUIRE_BROWSER=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/python

# Installs into a temporary prefix; headers, examples/ and pkg-config build against it only.
check-install: build
	JOBS=$(JOBS) ./scripts/check_install.sh $(BUILD)

# `make install PREFIX=/opt/cnf`: headers, libcnf.so and libcnf.a, the command, the CMake
# package (find_package(cnf)) and cnf.pc.
install: build-install
	cmake --install $(BUILD) --prefix $(PREFIX)

# $(BUILD)/cnf_<version>_amd64.deb
package: build-install
	cd $(BUILD) && cpack -G DEB

check-package: package
	./scripts/check_package.sh $(BUILD)

# The API reference (HTML) from the public headers; an undocumented declaration fails it.
docs: configure
	cmake --build $(BUILD) --target docs

sanitize-build: setup
	cmake -S . -B $(SAN_BUILD) -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCNF_FUZZ=ON -DCNF_BENCH=OFF -DCNF_PYTHON=OFF
	cmake --build $(SAN_BUILD) -j$(JOBS)

# The library and the fast tests under AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize: sanitize-build
	cd $(SAN_BUILD) && $(SAN_ENV) ctest --output-on-failure -j$(JOBS) -R '$(SAN_TESTS)'

# A short bounded fuzzing run of every parser (CI); `make fuzz FUZZ_SECONDS=600` for longer.
fuzz-smoke: sanitize-build
	./scripts/fuzz.sh $(SAN_BUILD) $(FUZZ_SECONDS)

fuzz: fuzz-smoke

bench: build
	./$(BUILD)/cnf_bench

CLANG_FORMAT ?= clang-format-14
format:
	$(CLANG_FORMAT) -i $$(git ls-files '*.h' '*.cpp')

# Every C++ file as .clang-format lays it out (make format fixes what this reports).
check-format:
	$(CLANG_FORMAT) --dry-run --Werror $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
