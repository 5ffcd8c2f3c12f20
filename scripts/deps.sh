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
