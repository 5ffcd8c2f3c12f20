#!/usr/bin/env bash
# On any machine with an NVIDIA GPU: build for this GPU's architecture, run the GPU test suite and
# the GPU benchmarks, and write the results under bench/results/ with the GPU named.
#   scripts/gpu-check.sh [build-dir]          (default build-gpu)
# Exits nonzero if a GPU test fails. Without a GPU it says so and exits 0 (1 if RK_REQUIRE_GPU=1 is
# already set). Once a GPU is found it sets RK_REQUIRE_GPU=1, so a test or benchmark that cannot
# use it fails instead of skipping. Every nvidia-smi call has a time limit (a wedged driver hangs it).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
./scripts/deps.sh || exit 1

smi() { timeout -k 2 15 nvidia-smi "$@"; }
if ! command -v nvidia-smi >/dev/null 2>&1 || ! smi -L >/dev/null 2>&1; then
  if [[ "${RK_REQUIRE_GPU:-}" == 1 ]]; then
    echo "gpu-check: RK_REQUIRE_GPU=1 but no NVIDIA GPU answers (nvidia-smi -L)"
    exit 1
  fi
  echo "gpu-check: no NVIDIA GPU found (nvidia-smi); nothing to do"
  exit 0
fi
export RK_REQUIRE_GPU=1
gpu=$(smi --query-gpu=name --format=csv,noheader | head -n1 | sed 's/^ *//; s/ *$//')
cc=$(smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')
driver=$(smi --query-gpu=driver_version --format=csv,noheader | head -n1 | tr -d ' ')
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
stamp=$(date -u +%Y-%m-%dT%H%MZ)
out=bench/results/gpu-$slug-$stamp
mkdir -p bench/results
echo "gpu-check: $gpu (compute $cc, driver $driver); results in $out.*"

{
  echo "# GPU check: $gpu"
  echo
  echo "- date: $stamp; compute capability $cc; driver $driver; host: $(nproc) CPUs"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
} > "$out.md"

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRK_CUDA=ON \
  "-DCMAKE_CUDA_ARCHITECTURES=${cc}-real;75-virtual" > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$build.build.log" 2>&1 || { tail -50 "$build.build.log"; exit 1; }

# The GPU suite: the CPU backend's tests run again on the CUDA backend (label gpu), plus the rest.
ctest --test-dir "$build" --output-on-failure -L gpu 2>&1 | tee "$out.gpu-tests.log"
gpu_rc=${PIPESTATUS[0]}
ctest --test-dir "$build" --output-on-failure -LE gpu -j "$(nproc)" > "$out.cpu-tests.log" 2>&1
cpu_rc=$?
{
  echo "## Tests"
  echo
  echo "- GPU suite (ctest -L gpu): exit $gpu_rc — $(grep -E 'tests passed|tests failed' "$out.gpu-tests.log" | tail -1)"
  echo "- everything else: exit $cpu_rc — $(grep -E 'tests passed|tests failed' "$out.cpu-tests.log" | tail -1)"
  echo
} >> "$out.md"

# The benchmarks: the GPU ones, and the CPU ones on this host for comparison.
"$build/bench/rk-bench" --json gpu rtt > "$out.jsonl" 2> "$out.bench.log"
bench_rc=$?
{
  echo "## Benchmarks (rk-bench --json gpu rtt; exit $bench_rc)"
  echo
  echo '```'
  cat "$out.jsonl"
  echo '```'
} >> "$out.md"
echo "gpu-check: GPU tests exit $gpu_rc, other tests exit $cpu_rc, benchmarks exit $bench_rc"
[[ $gpu_rc -eq 0 && $cpu_rc -eq 0 ]]
