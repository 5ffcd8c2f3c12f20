#!/usr/bin/env bash
# Install the build dependencies from Debian's packages when they are missing. Idempotent: does
# nothing (and needs no network) when everything is already there.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
pc() { pkg-config --exists "$1" 2>/dev/null; }
pc libuv || need+=(libuv1-dev)
pc cmocka || need+=(libcmocka-dev)
pc ck || need+=(libck-dev)
if ((${#need[@]})); then
  echo "deps: installing ${need[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
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
