#!/usr/bin/env bash
# Pack the GPU checks into .gpu-bundle/ for a GPU machine that can fetch nothing and has no Debian
# packages (the machines the project's `device` tool lends: CUDA toolkit and driver, no libuv, no
# cmocka, no network): the GPU suite (test_gpu), the NVRTC test and rk-bench, built here, with the
# shared libraries they need that such a machine lacks, and run.sh, which runs them there.
#
# With the `device` tool (.gpu-bundle/ is git-ignored, so it travels ONLY when carried):
#   scripts/gpu-bundle.sh [build-dir]          here, no GPU needed (default build-dir: build)
#   run(command="bash .gpu-bundle/run.sh $OUT", carry=[".gpu-bundle"], timeout_s=540)
# Without carry=[".gpu-bundle"] the machine gets no bundle and run.sh does not exist there.
# run.sh stays within about 6 minutes even when every step hangs (per-step limits below), so a
# 15-minute device window holds a rerun; it writes 7 files into $OUT (the tool returns 8 at most):
#   machine.txt   bundle commit and build, nvidia-smi (header, clocks, topology), CPU, kernel,
#                 clocksource, libraries (ldd), the NVRTC found, dmesg NVRM/Xid lines
#   summary.txt   one line per step (result, exit, wall time) and the figures/verdicts, GPU
#                 clocks before and after the benchmark, new dmesg NVRM/Xid lines after each step
#   test_gpu.log  every test_gpu test, each run as its own process with its own time limit
#   test_nvrtc.log, bench_gpu.log (rk-bench --json gpuprobe, then rk-bench --json gpu: notes and
#   verdicts), gpu.jsonl (their JSON lines alone: gpu.probe, rtt.echo, ...), bench_rtt.log
#   (rk-bench --json rtt: the CPU backend on that host), bench_bulk.log (rk-bench --json bulk:
#   vector_add on buffers against a launch and a resident kernel; its lines join gpu.jsonl)
# RK_REQUIRE_GPU=1 is set there (unless the caller set it otherwise): a test or benchmark that
# finds no usable GPU fails instead of skipping. run.sh exits 0 only when every step passed.
# Record figures under bench/results/ with the GPU named (bench/results/README.md).
# scripts/gpu-check.sh does the whole thing (build included) on a GPU machine that has the packages.
#
# Refuses (exit 1) a build that cannot give GPU figures: CUDA device code not built, no sm_90
# SASS in CMAKE_CUDA_ARCHITECTURES (H100/H200), a sanitizer, or a build type other than Release or
# RelWithDebInfo.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
die() { rm -rf .gpu-bundle; echo "gpu-bundle: $*" >&2; exit 1; } # no stale bundle to carry by mistake

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  ./scripts/deps.sh
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRK_CUDA=ON >/dev/null
fi
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" | head -n1; }
type=$(cache CMAKE_BUILD_TYPE)
san=$(cache RK_SANITIZE)
archs=$(cache CMAKE_CUDA_ARCHITECTURES)
nvcc=$(cache CMAKE_CUDA_COMPILER)
fix="configure a GPU build: cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRK_CUDA=ON && scripts/gpu-bundle.sh build-gpu"
[[ "$type" == Release || "$type" == RelWithDebInfo ]] || die "$build is a '$type' build (Release or RelWithDebInfo needed: figures of other builds mean nothing); $fix"
[[ -z "$san" ]] || die "$build is built with sanitizers ($san); $fix"
[[ -n "$nvcc" && "$nvcc" != *NOTFOUND* ]] || die "$build has no CUDA compiler (CUDA device code off); $fix"
[[ ";$archs;" =~ \;90a?(-real)?\; ]] || die "$build's CMAKE_CUDA_ARCHITECTURES='$archs' has no sm_90 SASS (90 or 90-real) for H100/H200; $fix"

cmake --build "$build" -j "$(nproc)" --target rk test_gpu test_nvrtc rk-bench pipeline >/dev/null
for f in "$build/librk.so.0" "$build/bench/rk-bench"; do
  readelf -S "$f" 2>/dev/null | grep -q '\.nv_fatbin' || die "$f holds no device code (.nv_fatbin): CUDA was not enabled in $build; $fix"
done

b=.gpu-bundle
rm -rf "$b"
mkdir -p "$b/bin" "$b/lib"
cp -L "$build/librk.so.0" "$b/lib/"
for t in test_gpu test_nvrtc; do cp "$build/tests/$t" "$b/bin/"; done
cp "$build/bench/rk-bench" "$b/bin/"
cp "$build/examples/pipeline" "$b/bin/" # K2K on the GPU (pipeline --cuda)
# what such a machine lacks: libuv, cmocka (and Concurrency Kit, when rk-bench links it)
for l in $(ldd "$b/bin/"* "$b/lib/librk.so.0" | awk '/libuv|libcmocka|libck/ {print $3}' | sort -u); do cp -L "$l" "$b/lib/"; done
{
  echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "modified tracked files: $(git status --short --untracked-files=no 2>/dev/null | awk '{print $2}' | tr '\n' ' ')"
  echo "bundled: $(date -u +%Y-%m-%dT%H:%MZ) from $build ($type, CUDA architectures $archs)"
  echo "nvcc: $("$nvcc" --version 2>/dev/null | tail -n1)"
  echo "cuda_major: $("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
  echo "cc: $(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt") $(cc -dumpfullversion 2>/dev/null || true)"
} > "$b/BUILD"

cat > "$b/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine: bash .gpu-bundle/run.sh [out-dir] (default $OUT, else gpu-results).
# See scripts/gpu-bundle.sh for what it writes. Every step has a time limit (test_gpu 30 s per
# test and 120 s in all, test_nvrtc 30 s, rk-bench gpuprobe 60 s, rk-bench gpu 90 s, rk-bench bulk 60 s, pipeline --cuda 60 s, rk-bench rtt
# 45 s; nvidia-smi 15 s per call), so the whole run stays within about 7 minutes even when
# everything hangs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-gpu-results}}
mkdir -p "$out"
M=$out/machine.txt
S=$out/summary.txt
: > "$M"
: > "$S"
export RK_REQUIRE_GPU=${RK_REQUIRE_GPU-1}
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
now() { date +%s.%N; }
t_run=$(now)
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "$*" | tee -a "$S"; }

smi_dead=0
smi() { # nvidia-smi with a time limit; after one timeout, no more calls
  if [[ $smi_dead == 1 ]]; then echo "(nvidia-smi skipped: an earlier call timed out)"; return; fi
  if ! command -v nvidia-smi >/dev/null 2>&1; then echo "(nvidia-smi not found)"; return; fi
  timeout -k 2 15 nvidia-smi "$@" 2>&1
  local r=$?
  [[ $r == 124 || $r == 137 ]] && smi_dead=1
  [[ $r == 0 ]] || echo "(nvidia-smi $*: exit $r)"
}
clocks() { smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,pstate,temperature.gpu,power.draw,power.limit --format=csv,noheader; }

dmesg_ok=0
dmesg_seen=0
gpu_dmesg() { dmesg 2>/dev/null | grep -iE 'NVRM|Xid'; }
if dmesg >/dev/null 2>&1; then dmesg_ok=1; dmesg_seen=$(gpu_dmesg | wc -l); fi
dmesg_new() { # NVRM/Xid kernel lines since the last call
  [[ $dmesg_ok == 1 ]] || return 0
  local n; n=$(gpu_dmesg | wc -l)
  if (( n > dmesg_seen )); then
    say "  dmesg (new NVRM/Xid lines):"
    gpu_dmesg | tail -n +"$((dmesg_seen + 1))" | head -n 20 | sed 's/^/    /' | tee -a "$S"
  fi
  dmesg_seen=$n
}

# NVRTC (the NVRTC tests and handler compilation dlopen it): the toolkit's, or a pip wheel's —
# CUDA 13 wheels keep it in site-packages/nvidia/cu13/lib/libnvrtc.so.13 (no nvidia.cuda_nvrtc
# module), CUDA 12 wheels in site-packages/nvidia/cuda_nvrtc/lib. The bundle's CUDA major first.
major=$(sed -n 's/^cuda_major: //p' "$here/BUILD")
nvrtc_all=()
sites=$(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
for f in ${RK_NVRTC_LIBRARY:-} \
         $(ldconfig -p 2>/dev/null | awk '$1 ~ /^libnvrtc\.so\.[0-9]+$/ {print $NF}') \
         /usr/local/cuda/lib64/libnvrtc.so.* /usr/local/cuda/lib/libnvrtc.so.* \
         /usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so.* /usr/local/cuda-*/lib64/libnvrtc.so.* \
         /usr/local/cuda-*/lib/libnvrtc.so.*; do
  [[ -f "$f" ]] && nvrtc_all+=("$f")
done
for sp in $sites /usr/local/lib/python3*/dist-packages /usr/lib/python3/dist-packages /opt/*/.venv/lib/python3*/site-packages; do
  for f in "$sp"/nvidia/cu1*/lib/libnvrtc.so.* "$sp"/nvidia/cuda_nvrtc/lib/libnvrtc.so.*; do
    [[ -f "$f" ]] && nvrtc_all+=("$f")
  done
done
nvrtc=""
for f in "${nvrtc_all[@]}"; do [[ "$f" == *libnvrtc.so.${major:-13}* ]] && { nvrtc=$f; break; }; done
[[ -z "$nvrtc" && ${#nvrtc_all[@]} -gt 0 ]] && nvrtc=${nvrtc_all[0]}
if [[ -n "$nvrtc" ]]; then
  export RK_NVRTC_LIBRARY="$nvrtc"
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$nvrtc")" # its libnvrtc-builtins
fi

gpu=$(smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | head -n1)
{
  echo "== bundle"
  cat "$here/BUILD"
  echo "run: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null); RK_REQUIRE_GPU=$RK_REQUIRE_GPU"
  echo
  echo "== nvidia-smi"
  smi
  echo "== nvidia-smi --query-gpu"
  smi --query-gpu=name,pci.bus_id,compute_cap,driver_version,vbios_version,memory.total,persistence_mode,compute_mode,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max --format=csv
  echo "clocks.sm, clocks.mem, clocks.max.sm, pstate, temperature, power.draw, power.limit (idle, before any step):"
  clocks
  smi --query-gpu=clocks_event_reasons.active --format=csv,noheader
  echo "== nvidia-smi topo -m"
  smi topo -m
  echo "== host"
  echo "kernel: $(uname -r); $(nproc) CPUs usable; load: $(cat /proc/loadavg 2>/dev/null)"
  echo "clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null) (available: $(cat /sys/devices/system/clocksource/clocksource0/available_clocksource 2>/dev/null))"
  echo "timer slack of this shell: $(cat /proc/self/timerslack_ns 2>/dev/null) ns"
  lscpu 2>&1 | grep -vE '^(Flags|Vulnerability)' || echo "(lscpu: not available)"
  echo "== environment"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "NVRTC candidates: ${nvrtc_all[*]:-none}"
  echo "NVRTC used: ${nvrtc:-NONE FOUND} (RK_NVRTC_LIBRARY=${RK_NVRTC_LIBRARY:-unset})"
  env | grep -E '^(CUDA_|NVIDIA_)' | sort
  echo "== ldd"
  for f in "$here"/bin/* "$here"/lib/librk.so.0; do echo "-- $(basename "$f")"; ldd "$f" 2>&1; done
  echo "== dmesg NVRM/Xid (before any step)"
  if [[ $dmesg_ok == 1 ]]; then gpu_dmesg | tail -n 20; echo "($dmesg_seen lines)"; else echo "(dmesg not permitted)"; fi
} > "$M" 2>&1
echo "run.sh: bundle $(sed -n 's/^commit: //p' "$here/BUILD"); GPU: $gpu; NVRTC: ${nvrtc:-none found}; RK_REQUIRE_GPU=$RK_REQUIRE_GPU"

fails=0
skips=0
step_result() { # name exit wall -> PASS/SKIP/TIMEOUT/FAIL line; counts failures and skips
  local name=$1 r=$2 wall=$3 what
  case $r in
    0) what=PASS ;;
    77) what="SKIP (no usable device)"; skips=$((skips + 1)) ;; # only without RK_REQUIRE_GPU=1
    124|137) what="TIMEOUT"; fails=$((fails + 1)) ;;
    *) what=FAIL; fails=$((fails + 1)) ;;
  esac
  say "$name: $what (exit $r, ${wall} s)"
}
run_step() { # name seconds log command...: run with a time limit, append to log; sets rc, wall
  local name=$1 limit=$2 log=$3 t0; shift 3
  t0=$(now)
  echo "=== $name (limit ${limit} s) $(date -u +%H:%M:%S)" >> "$log"
  timeout -k 5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  wall=$(secs "$t0")
  [[ $rc == 124 || $rc == 137 ]] && echo "=== $name: killed after ${limit} s" >> "$log"
}
step() { # run_step, then its result line; a failure's last log lines on stdout (the tool's tail)
  run_step "$@"
  step_result "$1" "$rc" "$wall"
  [[ $rc == 0 || $rc == 77 ]] ||
    awk -v h="=== $1 (" 'index($0, h) == 1 { n = 0 } { l[n++] = $0 } END { for (i = (n > 8 ? n - 8 : 0); i < n; i++) print "    | " l[i] }' "$3"
}

# 1. test_gpu: each test in its own process, 30 s each, 120 s in all.
log=$out/test_gpu.log
: > "$log"
t_gpu=$(now)
names=$(timeout 10 "$here/bin/test_gpu" --list 2>>"$log")
[[ -n "$names" ]] || { say "test_gpu: FAIL (test_gpu --list gave no names; see test_gpu.log)"; fails=$((fails + 1)); }
left_out=()
stop=""
for t in $names; do
  remaining=$(awk -v s="$(secs "$t_gpu")" 'BEGIN { printf "%d", 120 - s }')
  [[ -z "$stop" ]] && (( remaining < 5 )) && stop="the 120 s budget is spent" && fails=$((fails + 1))
  if [[ -n "$stop" ]]; then left_out+=("$t"); continue; fi
  step "test_gpu.$t" $(( remaining < 30 ? remaining : 30 )) "$log" "$here/bin/test_gpu" "$t"
  dmesg_new
  # no CUDA runtime (no device, or a broken setup): every other test would say the same
  why=$(tail -n 5 "$log" | grep -E '^(skipped: no usable CUDA device|FAILED: (RK_REQUIRE_GPU=1|the CUDA runtime))' | tail -n1)
  if [[ -n "$why" ]]; then say "  $why"; stop="no CUDA runtime, as above"; fi
done
(( ${#left_out[@]} == 0 )) || say "test_gpu: not run ($stop): ${left_out[*]}"

# 2. test_nvrtc
step test_nvrtc 30 "$out/test_nvrtc.log" "$here/bin/test_nvrtc"
grep -E '^(skipped|FAILED:)|PASSED|FAILED  \]' "$out/test_nvrtc.log" | tail -n 2 | sed 's/^/  /' | tee -a "$S"
dmesg_new

# 3. rk-bench gpuprobe: the hardware's prices for what the device lane's cost model counts, echo at
# 1 vs 32 threads per lane, a first launch while echo is resident. A process of its own: that
# launch must be the process's first. Its lines go to bench_gpu.log and gpu.jsonl too.
say "  clocks before gpu_probe: $(clocks | head -n1)"
run_step gpu_probe 60 "$out/bench_gpu.log" "$here/bin/rk-bench" --json gpuprobe
[[ $rc == 0 ]] && grep -q '"gpu.probe", "impl": "none"' "$out/bench_gpu.log" && rc=77 # probed nothing: a skip
step_result gpu_probe "$rc" "$wall"
grep '^{"bench": "gpu.probe"' "$out/bench_gpu.log" |
  sed -n 's/^{"bench": "\([^"]*\)", "impl": "\([^"]*\)", "metric": "\([^"]*\)", "value": \([^,]*\),.*/  \1 \2 \3 = \4/p' | tee -a "$S"
dmesg_new

# 4. rk-bench gpu, with the GPU's clocks around it
say "  clocks before bench_gpu: $(clocks | head -n1)"
run_step bench_gpu 90 "$out/bench_gpu.log" "$here/bin/rk-bench" --json gpu
grep '^{' "$out/bench_gpu.log" > "$out/gpu.jsonl" # the JSON lines alone
[[ $rc == 0 ]] && grep -q '"device_available"' "$out/gpu.jsonl" && rc=77 # it measured nothing: a skip
step_result bench_gpu "$rc" "$wall"
say "  clocks after bench_gpu:  $(clocks | head -n1)"
grep -v '"gpu.probe"' "$out/gpu.jsonl" |
  sed -n 's/^{"bench": "\([^"]*\)", "impl": "\([^"]*\)", "metric": "\([^"]*\)", "value": \([^,]*\),.*/  \1 \2 \3 = \4/p' | tee -a "$S"
grep -E '^verdict:|FAILED|no device|p50 per round|pinned|geometry' "$out/bench_gpu.log" | sed 's/^/  /' | tee -a "$S"
dmesg_new

# 5. rk-bench bulk: vector_add on buffers, ringkernel.cuda vs cuda.launch / cuda.resident (and the
# CPU impls on this host), 2^20 and 2^10 floats
say "  clocks before bench_bulk: $(clocks | head -n1)"
run_step bench_bulk 60 "$out/bench_bulk.log" "$here/bin/rk-bench" --json bulk
grep '^{' "$out/bench_bulk.log" >> "$out/gpu.jsonl"
step_result bench_bulk "$rc" "$wall"
grep '^{' "$out/bench_bulk.log" |
  sed -n 's/^{"bench": "\([^"]*\)", "impl": "\([^"]*\)", "metric": "\([^"]*\)", "value": \([^,]*\),.*/  \1 \2 \3 = \4/p' | tee -a "$S"
dmesg_new

# 6. K2K on the GPU: the three-stage pipeline example as persistent CUDA kernels (K2K inboxes in
# device memory), its own checks (exactly once, causality, error replies) deciding
step pipeline_cuda 60 "$out/pipeline_cuda.log" "$here/bin/pipeline" --cuda
grep -E '^(pipeline|  |throughput|latency|FAIL|check)' "$out/pipeline_cuda.log" | head -n 12 | sed 's/^/  /' | tee -a "$S"
dmesg_new

# 7. rk-bench rtt: the CPU backend on this host, for comparison
step bench_rtt 45 "$out/bench_rtt.log" "$here/bin/rk-bench" --json rtt
grep -E '^  (ratio|target)|FAILED' "$out/bench_rtt.log" | tee -a "$S"
dmesg_new

if (( fails > 0 )); then verdict="FAIL ($fails failed)"
elif (( skips > 0 )); then verdict="PASS, but $skips step(s) SKIPPED: no GPU was tested"
else verdict=PASS; fi
say "run.sh: $verdict; $(secs "$t_run") s in all; RK_REQUIRE_GPU=$RK_REQUIRE_GPU; files in $out: $(cd "$out" && ls | tr '\n' ' ')"
(( fails == 0 ))
RUN
chmod +x "$b/run.sh"
du -sh "$b"
echo "gpu-bundle: ready ($(sed -n 's/^commit: //p' "$b/BUILD")); with the device tool:"
echo "  run(command=\"bash $b/run.sh \$OUT\", carry=[\"$b\"], timeout_s=540)"
