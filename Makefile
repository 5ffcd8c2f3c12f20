# The two commands of the README, plus a few conveniences. Everything real is in CMake; this file
# only installs what is missing, configures the build trees and runs them.
#   make run    build and run the flagship example, then actors (its own kernel, built by
#               ringkernel_add_kernels); CPU backend when no GPU is present
#   make test   build and pass every test: normal build, the Python package (pytest in a virtual
#               environment it creates), ASan+UBSan build, TSan build, and the fuzz targets for a
#               few seconds each (clang fuzz build) when clang can build them
#   make bench  build and run every benchmark (rk-bench all)
#   make bench-mpi  rk-bench mpi under mpirun -np 2 (the MPI bridge; needs Open MPI)
#   make docs   the API reference from the headers (Doxygen, into $(BUILD)-docs/html); an
#               undocumented public symbol fails it
#   make plots  the benchmark results (bench/results/*.jsonl) as SVG charts (bench/results/plots)
#   make fuzz   run each libFuzzer target for FUZZ_SECONDS (default 60; docs/testing.md)
#   make soak   the long soak test (10^8 messages; ctest label soak, not part of make test)
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
BUILD   ?= build
CMAKE   ?= cmake
CTEST   ?= ctest
CMAKE_FLAGS ?=
SAN_FLAGS := -DRK_CUDA=OFF -DRK_BUILD_BENCH=OFF -DRK_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Debug
# The fuzz build: clang, ASan+UBSan, coverage instrumentation, the fuzz targets only.
FUZZ_FLAGS := -DRK_FUZZ=ON -DRK_CUDA=OFF -DRK_BUILD_TESTS=OFF -DRK_BUILD_BENCH=OFF -DRK_BUILD_EXAMPLES=OFF \
              -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
FUZZ_SECONDS ?= 60
# Tests with these labels stay out of make test: nosan (sanitizer builds only), soak (make soak).
NOT_IN_TEST := soak

.PHONY: all deps docs plots build run test test-normal test-python test-asan test-tsan test-fuzz fuzz-build fuzz soak bench bench-mpi install clean

all: build

# Install build dependencies with apt-get when missing (fresh machine; runs as root in CI).
deps:
	@./scripts/deps.sh

build: deps
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	$(CMAKE) --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/examples/quickstart
	./$(BUILD)/examples/actors

test: test-normal test-python test-asan test-tsan test-fuzz
	@echo "make test: all builds passed"

test-normal: build
	$(CTEST) --test-dir $(BUILD) --output-on-failure -j $(JOBS) -LE '$(NOT_IN_TEST)'

# The Python package: built with pip (scikit-build-core), tested with pytest in $(BUILD)-python/venv.
test-python: build
	./scripts/test-python.sh $(BUILD)

test-asan: deps
	$(CMAKE) -S . -B $(BUILD)-asan $(SAN_FLAGS) -DRK_SANITIZE=address,undefined >/dev/null
	$(CMAKE) --build $(BUILD)-asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(CTEST) --test-dir $(BUILD)-asan --output-on-failure -j $(JOBS) -LE 'nosan|$(NOT_IN_TEST)'

test-tsan: deps
	$(CMAKE) -S . -B $(BUILD)-tsan $(SAN_FLAGS) -DRK_SANITIZE=thread >/dev/null
	$(CMAKE) --build $(BUILD)-tsan -j $(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  $(CTEST) --test-dir $(BUILD)-tsan --output-on-failure -j $(JOBS) -LE 'nosan|$(NOT_IN_TEST)'

# The fuzz targets, a few seconds each (RK_FUZZ_TEST_SECONDS), when clang's fuzzer runtime is
# there (scripts/deps.sh installs it when it can); skipped with a note otherwise.
test-fuzz: deps
	@if ./scripts/deps.sh --fuzz-ready; then \
	  $(MAKE) --no-print-directory fuzz-build && \
	  $(CTEST) --test-dir $(BUILD)-fuzz --output-on-failure -j $(JOBS) -L fuzz; \
	else echo "make test: clang's fuzzer runtime is missing: fuzz targets skipped"; fi

fuzz-build: deps
	$(CMAKE) -S . -B $(BUILD)-fuzz $(FUZZ_FLAGS) >/dev/null
	$(CMAKE) --build $(BUILD)-fuzz -j $(JOBS)

# Each fuzz target for FUZZ_SECONDS seconds (make fuzz FUZZ_SECONDS=600 for longer runs).
fuzz: fuzz-build
	./tests/fuzz/run.sh $(BUILD)-fuzz $(FUZZ_SECONDS)

# The soak test: release build, ctest label soak (RK_SOAK_MESSAGES overrides the 10^8 messages).
soak: build
	$(CTEST) --test-dir $(BUILD) --output-on-failure -V -L soak

bench: build
	./$(BUILD)/bench/rk-bench all

# rk-bench mpi under mpirun, 2 ranks (docs/mpi.md); the environment lets Open MPI run as root
# (CI), oversubscribed (2 cores), in a container (no single-copy mechanism).
MPI_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
bench-mpi: build
	$(MPI_ENV) mpirun -np 2 --oversubscribe ./$(BUILD)/bench/rk-bench mpi

docs:
	@./scripts/deps.sh --docs
	@mkdir -p $(BUILD)-docs
	RK_DOCS_OUT=$(BUILD)-docs doxygen docs/Doxyfile || { cat $(BUILD)-docs/warnings.log; exit 1; }
	@echo "make docs: $(BUILD)-docs/html/index.html"

plots:
	python3 scripts/plots.py

install: build
	$(CMAKE) --install $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-fuzz $(BUILD)-python $(BUILD)-docs
