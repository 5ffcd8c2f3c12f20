# The two commands of the README, plus a few conveniences. Everything real is in CMake; this file
# only installs what is missing, configures the build trees and runs them.
#   make run    build and run the flagship example (CPU backend when no GPU is present)
#   make test   build and pass every test: normal build, ASan+UBSan build, TSan build
#   make bench  build and run every benchmark (rk-bench all)
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
BUILD   ?= build
CMAKE   ?= cmake
CTEST   ?= ctest
CMAKE_FLAGS ?=
SAN_FLAGS := -DRK_CUDA=OFF -DRK_BUILD_BENCH=OFF -DRK_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Debug

.PHONY: all deps build run test test-normal test-asan test-tsan bench install clean

all: build

# Install build dependencies with apt-get when missing (fresh machine; runs as root in CI).
deps:
	@./scripts/deps.sh

build: deps
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	$(CMAKE) --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/examples/quickstart

test: test-normal test-asan test-tsan
	@echo "make test: all three builds passed"

test-normal: build
	$(CTEST) --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan: deps
	$(CMAKE) -S . -B $(BUILD)-asan $(SAN_FLAGS) -DRK_SANITIZE=address,undefined >/dev/null
	$(CMAKE) --build $(BUILD)-asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(CTEST) --test-dir $(BUILD)-asan --output-on-failure -j $(JOBS) -LE nosan

test-tsan: deps
	$(CMAKE) -S . -B $(BUILD)-tsan $(SAN_FLAGS) -DRK_SANITIZE=thread >/dev/null
	$(CMAKE) --build $(BUILD)-tsan -j $(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  $(CTEST) --test-dir $(BUILD)-tsan --output-on-failure -j $(JOBS) -LE nosan

bench: build
	./$(BUILD)/bench/rk-bench all

install: build
	$(CMAKE) --install $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan
