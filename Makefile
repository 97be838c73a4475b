# cnf: the two commands that set everything up are `make demo` and `make test`.
BUILD ?= build
TYPE  ?= Release
JOBS  ?= 2
OUT   ?= out/demo
# OpenBLAS then starts no thread pool of its own (LibTorch's threads do the work).
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: all setup configure build demo test bench clean format

all: build

setup:
	./scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	./$(BUILD)/cnf demo --out $(OUT)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

bench: build
	./$(BUILD)/cnf_bench

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD)
