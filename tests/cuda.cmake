# Tests of the CUDA backend's host-side pieces that need no GPU (NVRTC glue). NVRTC is a closed
# library loaded with dlopen; under the sanitizers its internals are not ours to check, so the
# test is labelled nosan.
rk_add_test(test_nvrtc SOURCES test_nvrtc.c STATIC LABELS nosan TIMEOUT 300)
rk_add_test(test_arena SOURCES test_arena.c STATIC TIMEOUT 60)
# The GPU suite: skipped (77) without a device. Every wait in it is 250 ms at most and a failed
# test stops at its first error, so a healthy GPU runs it in seconds and a broken one fails it well
# inside this limit. `test_gpu NAME` runs one test (scripts/gpu-bundle.sh runs each on its own).
rk_add_test(test_gpu SOURCES test_gpu.c LABELS gpu nosan TIMEOUT 150)
# The device lane's SASS (tests/test_sass.py): 16-byte loads in flight before any shared store, no
# system-scope RMW, no local memory, a relaxed clock CAS. Wherever nvcc built the device code; it
# needs cuobjdump and nvdisasm (the toolkit's, or the PyPI wheels scripts/deps.sh installs into
# .tools/cuda) and skips (77) with a message when neither is there.
if(RK_HAVE_CUDA)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    add_test(NAME test_sass COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_sass.py
                                    $<TARGET_FILE:rk> --tool-dir ${CUDAToolkit_BIN_DIR})
    set_tests_properties(test_sass PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS cuda)
  endif()
endif()
