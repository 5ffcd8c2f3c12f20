#!/usr/bin/env bash
# The Python package's tests (make test-python): a virtual environment in $BUILD-python/venv with
# what the tests need from PyPI (scikit-build-core, pytest, numpy, prometheus_client; installed
# once, then reused with no network), the package built by `pip install ./python` (scikit-build-core
# runs the project's CMake; CPU-only device code here, to keep make test short), then pytest twice:
# on the packaged librk, and on the normal build's librk through RINGKERNEL_LIBRARY. Last, the
# Python quick start must print what the C one prints.
#   scripts/test-python.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$root/$build
out=$build-python
venv=$out/venv
py=$venv/bin/python
mkdir -p "$out"
if [[ ! -x $py ]]; then
  echo "test-python: creating $venv"
  python3 -m venv "$venv"
fi
if ! "$py" -c 'import scikit_build_core, pytest, numpy, prometheus_client' >/dev/null 2>&1; then
  echo "test-python: installing scikit-build-core pytest numpy prometheus_client into $venv (PyPI)"
  "$py" -m pip install -q --disable-pip-version-check scikit-build-core pytest numpy prometheus_client
fi
echo "test-python: pip install ./python"
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall \
  -C cmake.define.RK_CUDA=OFF -C build-dir="$out/wheel" "$root/python"
cd "$out" # not the source tree: the tests import the installed package
env -u RINGKERNEL_LIBRARY RK_CACHE_DIR="$out/cache" "$venv/bin/pytest" -q -p no:cacheprovider "$root/python/tests"
echo "test-python: again on $build/librk.so (RINGKERNEL_LIBRARY)"
RINGKERNEL_LIBRARY="$build/librk.so" RK_CACHE_DIR="$out/cache" "$venv/bin/pytest" -q -p no:cacheprovider "$root/python/tests"
got=$(env -u RINGKERNEL_LIBRARY "$py" "$root/examples/python/quickstart.py")
echo "$got"
[[ $got == *"[5.0, 7.0, 9.0]"* ]] || { echo "test-python: quickstart.py printed the wrong thing" >&2; exit 1; }
