#!/usr/bin/env bash
# Pack the GPU checks into .gpu-bundle/ (git-ignored) for a GPU machine that can fetch nothing and
# has no Debian packages (the machines the project's `device` tool lends): the GPU suite
# (test_gpu), the NVRTC test and rk-bench, built here, with the shared libraries they
# need that such a machine lacks (libuv, cmocka). The default CUDA architectures include SASS for
# sm_90 (H100/H200) and PTX for compute_75 (anything newer JIT-compiles it).
#   scripts/gpu-bundle.sh [build-dir]     here (default: build, as `make` builds it)
#   bash .gpu-bundle/run.sh [out-dir]     on the GPU machine (default: $OUT, else gpu-results)
# run.sh writes the GPU's name, the test logs and rk-bench's JSON lines into out-dir; record them
# under bench/results/ with the GPU named. scripts/gpu-check.sh does the whole thing (build
# included) on a GPU machine that has the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[[ -f "$build/CMakeCache.txt" ]] || { ./scripts/deps.sh; cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null; }
cmake --build "$build" -j "$(nproc)" >/dev/null
grep -q '^CMAKE_CUDA_ARCHITECTURES:.*90' "$build/CMakeCache.txt" || echo "gpu-bundle: warning: $build has no sm_90 code (CPU-only build, or other architectures)"
b=.gpu-bundle
rm -rf "$b"
mkdir -p "$b/bin" "$b/lib"
cp -L "$build/librk.so.0" "$b/lib/"
for t in test_gpu test_nvrtc; do cp "$build/tests/$t" "$b/bin/"; done
cp "$build/bench/rk-bench" "$b/bin/"
for l in $(ldd "$b/bin/test_gpu" "$b/bin/rk-bench" | awk '/libuv|libcmocka/ {print $3}' | sort -u); do cp -L "$l" "$b/lib/"; done
git rev-parse --short HEAD > "$b/COMMIT" 2>/dev/null || echo unknown > "$b/COMMIT"
cat > "$b/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine; see scripts/gpu-bundle.sh. Every step has a time limit, so the whole
# run stays under about 8 minutes even when something hangs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-gpu-results}}
mkdir -p "$out"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVRTC: the toolkit's, else the pip wheel's (the machine's python has it)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import os, nvidia.cuda_nvrtc as m; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null); do
  [[ -d "$d" ]] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
{
  echo "commit: $(cat "$here/COMMIT")"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
  nvidia-smi -q | grep -iE 'Persistence|Compute Mode|Link Gen|Link Width' | sed 's/^ *//' | sort -u
  echo "host: $(nproc) CPUs, $(uname -r)"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
rc=0
step() { # name seconds command...
  local name=$1 secs=$2; shift 2
  echo "== $name"
  timeout -k 5 "$secs" "$@" > "$out/$name.log" 2>&1
  local r=$?
  echo "$name: exit $r" | tee -a "$out/summary.txt"
  tail -n 25 "$out/$name.log"
  [[ $r -eq 0 ]] || rc=1
}
step test_gpu 180 "$here/bin/test_gpu"
step test_nvrtc 60 "$here/bin/test_nvrtc"
step bench_gpu 150 "$here/bin/rk-bench" --json gpu
grep '^{' "$out/bench_gpu.log" > "$out/gpu.jsonl" # the JSON lines alone
step bench_rtt 60 "$here/bin/rk-bench" --json rtt
exit $rc
RUN
chmod +x "$b/run.sh"
du -sh "$b"
echo "gpu-bundle: ready; on the GPU machine: bash $b/run.sh [out-dir]"
