# runtime.cmake — tests of the host runtime and the CPU backend, through the public API (white-box
# only where it cannot reach: test_handlers injects corrupt envelopes into a lane's inbox, so it
# links the static library to see host/internal.h). Included by tests/CMakeLists.txt.
# Timeouts are hang guards sized for a 2-core machine under ThreadSanitizer.

rk_add_test(test_lifecycle SOURCES test_lifecycle.c LABELS runtime TIMEOUT 120)
rk_add_test(test_messaging SOURCES test_messaging.c LABELS runtime TIMEOUT 120)
rk_add_test(test_backpressure SOURCES test_backpressure.c LABELS runtime TIMEOUT 120)
rk_add_test(test_terminate SOURCES test_terminate.c LABELS runtime TIMEOUT 120)
rk_add_test(test_handlers SOURCES test_handlers.c LABELS runtime STATIC TIMEOUT 120)
# STATIC: publishes replies straight into a lane's outbox and damages ring headers (host/internal.h).
rk_add_test(test_replies SOURCES test_replies.c LABELS runtime STATIC TIMEOUT 120)
rk_add_test(test_watchdog SOURCES test_watchdog.c LABELS runtime TIMEOUT 120)
rk_add_test(test_telemetry SOURCES test_telemetry.c LABELS runtime TIMEOUT 120)
rk_add_test(test_clock_sync SOURCES test_clock_sync.c LABELS runtime TIMEOUT 120)
rk_add_test(test_builtins SOURCES test_builtins.c LABELS runtime TIMEOUT 120)
# The CUDA backend's device loop compiled as host C++ (src/device/emulation.h) and run by host
# threads: its logic is tested on every machine, GPU or not. (#pragma unroll is nvcc's.)
rk_add_test(test_devemu SOURCES test_devemu.c LABELS runtime STATIC TIMEOUT 120)
target_link_libraries(test_devemu PRIVATE rk_devemu)
# Faults, their policies and restarts, and the waits and callbacks around them (issue 11).
rk_add_test(test_faults SOURCES test_faults.c LABELS runtime TIMEOUT 120)
# Failure injection: allocations, thread creations and libuv resources failing one by one (STATIC:
# the fail points are internal).
rk_add_test(test_failpoints SOURCES test_failpoints.c LABELS runtime STATIC TIMEOUT 300)
# Kernels given as source text on the CPU backend (src/host/cc.c): the system C compiler, the
# cache, the compile check and bad input (test_source); and the built-ins' run-time source twins
# passing test_builtins' tests (test_source_twins: test_builtins.c built again).
rk_add_test(test_source SOURCES test_source.c LABELS runtime TIMEOUT 300)
rk_add_test(test_source_twins SOURCES test_builtins.c LABELS runtime TIMEOUT 300)
target_compile_definitions(test_source_twins PRIVATE RK_TEST_SOURCE_TWINS
                           "RK_TEST_BUILTINS_SRC=\"${PROJECT_SOURCE_DIR}/src/device/builtins.h\"")
