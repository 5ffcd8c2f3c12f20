# Tests of the CUDA backend's host-side pieces that need no GPU (NVRTC glue). NVRTC is a closed
# library loaded with dlopen; under the sanitizers its internals are not ours to check, so the
# test is labelled nosan.
rk_add_test(test_nvrtc SOURCES test_nvrtc.c STATIC LABELS nosan TIMEOUT 300)
rk_add_test(test_arena SOURCES test_arena.c STATIC TIMEOUT 60)
# The GPU suite: skipped (77) without a device. Every wait in it is 250 ms at most and a failed
# test stops at its first error, so a healthy GPU runs it in seconds and a broken one fails it well
# inside this limit. `test_gpu NAME` runs one test (scripts/gpu-bundle.sh runs each on its own).
rk_add_test(test_gpu SOURCES test_gpu.c LABELS gpu nosan TIMEOUT 150)
