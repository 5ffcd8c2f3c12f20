#!/usr/bin/env bash
# Install the build dependencies from Debian's packages when they are missing. Idempotent: does
# nothing (and needs no network) when everything is already there.
#   scripts/deps.sh               the required packages, then (optional) clang's fuzzer runtime
#   scripts/deps.sh --fuzz-ready  exit 0 when clang can build a libFuzzer target with ASan+UBSan
#   scripts/deps.sh --docs        doxygen, for make docs
set -euo pipefail
fuzz_ready() {
  command -v clang >/dev/null 2>&1 || return 1
  printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' |
    clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1
}
if [[ ${1:-} == --fuzz-ready ]]; then
  fuzz_ready
  exit
fi
# make docs: Doxygen (Debian's doxygen), installed when missing
if [[ ${1:-} == --docs ]]; then
  if ! command -v doxygen >/dev/null; then
    echo "deps: installing doxygen"
    s=""; [[ $(id -u) -ne 0 ]] && s="sudo"
    $s apt-get update -qq && DEBIAN_FRONTEND=noninteractive $s apt-get install -y -qq doxygen
  fi
  exit
fi
sudo_cmd=""
[[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
pc() { pkg-config --exists "$1" 2>/dev/null; }
pc libuv || need+=(libuv1-dev)
pc cmocka || need+=(libcmocka-dev)
pc ck || need+=(libck-dev)
# The MPI bridge (librk_mpi) and its tests under mpirun: Open MPI (CMake's FindMPI finds it)
{ command -v mpicc && command -v mpirun; } >/dev/null 2>&1 || need+=(openmpi-bin libopenmpi-dev)
# The Python package's tests (make test-python) run in a virtual environment: python3 with venv
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  echo "deps: installing ${need[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

# The SASS check (tests/test_sass.py) disassembles the device code with cuobjdump, which runs
# nvdisasm. A full CUDA toolkit has both; where nvcc comes without them, take them from NVIDIA's
# PyPI wheels (the two binaries, no Python code) into .tools/cuda (git-ignored). Without network
# the check is skipped with a message, never failed.
if command -v nvcc >/dev/null; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  nvbin=$(dirname "$(command -v nvcc)")
  if [[ ! -x $nvbin/cuobjdump || ! -x $nvbin/nvdisasm ]] && ! { command -v cuobjdump && command -v nvdisasm; } >/dev/null &&
     [[ ! -x $root/.tools/cuda/nvidia/cu13/bin/nvdisasm ]]; then
    echo "deps: installing cuobjdump and nvdisasm (PyPI wheels) into .tools/cuda"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$root/.tools/cuda" \
      nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37 ||
      echo "deps: could not install them; tests/test_sass.py will be skipped"
  fi
fi

# Optional: clang and its sanitizer and fuzzer runtimes (libclang-rt-dev; on bookworm it brings
# libclang-rt-14-dev, which holds libclang_rt.fuzzer). `make fuzz` needs them; `make test` runs
# the fuzz targets briefly when they are there and says so when they are not.
if ! fuzz_ready; then
  echo "deps: installing clang libclang-rt-dev (libFuzzer, for the fuzz targets)"
  if ! { $sudo_cmd apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq clang libclang-rt-dev; } ||
     ! fuzz_ready; then
    echo "deps: clang's fuzzer runtime is not available: the fuzz targets will be skipped" >&2
  fi
fi
