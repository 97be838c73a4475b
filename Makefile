# cnf: the two commands that set everything up are `make demo` and `make test`.
BUILD ?= build
TYPE  ?= Release
JOBS  ?= 2
OUT   ?= out/demo
# OpenBLAS then starts no thread pool of its own (LibTorch's threads do the work).
export OPENBLAS_NUM_THREADS ?= 1

# The sanitizer + fuzzing build (clang, ASan + UBSan, libFuzzer), separate from $(BUILD).
SAN_BUILD    ?= build-san
FUZZ_SECONDS ?= 20
# The fast tests that run instrumented (a ctest regex): files and parsers, fuzz replays,
# crash safety, solvers, paths, data, networks, training and resume, metrics, checkpoint
# errors. The slow statistical studies and CLI end-to-end runs stay in the plain build.
SAN_TESTS ?= ^(IoTest|MemoryTest|IoProgressTest|NpyTest|CsvTest|FuzzRegressions|ReliabilityTest|OdeTest|PathTest|DataTest|NnTest|TrainTest|MetricsTest|FastMlp|ImagesIdx)\.|^(AllTableaus|AdaptiveTableaus|AllSchedules|AllToys)/|^CliTest\.(MissingAndTruncatedCheckpoints|ResumedTrainingEqualsUninterrupted|BadTablesNameFileRowAndColumn)$$|^Rectify\.Pair|^OtExact\.ScalarAndSimdAssignmentAgree$$|^OtSinkhorn\.Kernel|^Mle\.ForwardMode|^Mle\.FusedJvp|^Hollow\.(Divergence|Analytic|Bad)
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
          LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all setup configure build demo test bench clean format sanitize-build sanitize fuzz-smoke fuzz

all: build

setup:
	./scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	./$(BUILD)/cnf demo --out $(OUT)

# Every test: the plain build's ctest, then the sanitizer job and a bounded fuzzing run.
test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	$(MAKE) sanitize fuzz-smoke

sanitize-build: setup
	cmake -S . -B $(SAN_BUILD) -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCNF_FUZZ=ON -DCNF_BENCH=OFF
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

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
