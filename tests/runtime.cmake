# runtime.cmake — tests of the host runtime and the CPU backend, through the public API (white-box
# only where it cannot reach: test_handlers injects corrupt envelopes into a lane's inbox, so it
# links the static library to see host/internal.h). Included by tests/CMakeLists.txt.
# Timeouts are hang guards sized for a 2-core machine under ThreadSanitizer.

rk_add_test(test_lifecycle SOURCES test_lifecycle.c LABELS runtime TIMEOUT 120)
# 300 s (were 120): under TSan on a loaded 2-core machine test_messaging took up to 88 s and
# test_devemu 61 to 87 s, once more than 120 s (a stress loop, load ~80); at load 47, 15 and 46 s.
rk_add_test(test_messaging SOURCES test_messaging.c LABELS runtime TIMEOUT 300)
rk_add_test(test_backpressure SOURCES test_backpressure.c LABELS runtime TIMEOUT 120)
rk_add_test(test_terminate SOURCES test_terminate.c LABELS runtime TIMEOUT 120)
rk_add_test(test_handlers SOURCES test_handlers.c LABELS runtime STATIC TIMEOUT 120)
# STATIC: publishes replies straight into a lane's outbox and damages ring headers (host/internal.h).
rk_add_test(test_replies SOURCES test_replies.c LABELS runtime STATIC TIMEOUT 120)
rk_add_test(test_watchdog SOURCES test_watchdog.c LABELS runtime TIMEOUT 120)
rk_add_test(test_telemetry SOURCES test_telemetry.c LABELS runtime TIMEOUT 120)
rk_add_test(test_clock_sync SOURCES test_clock_sync.c LABELS runtime TIMEOUT 120)
# The TSC as the clock of latency samples and send stamps (src/host/tsc.c; STATIC: internal).
rk_add_test(test_tsc SOURCES test_tsc.c LABELS runtime STATIC TIMEOUT 120)
rk_add_test(test_builtins SOURCES test_builtins.c LABELS runtime TIMEOUT 120)
# The CUDA backend's device loop compiled as host C++ (src/device/emulation.h) and run by host
# threads: its logic is tested on every machine, GPU or not. (#pragma unroll is nvcc's.)
rk_add_test(test_devemu SOURCES test_devemu.c LABELS runtime STATIC TIMEOUT 300) # (300: see test_messaging)
target_link_libraries(test_devemu PRIVATE rk_devemu_twin) # rk_devemu plus an application kernel (below)
# Bulk data (issue 17): buffers, references in messages, vector_add on buffers, on the CPU backend
# and on the emulated device (STATIC + rk_devemu, as test_devemu).
rk_add_test(test_buffers SOURCES test_buffers.c LABELS runtime STATIC TIMEOUT 300)
target_link_libraries(test_buffers PRIVATE rk_devemu)
# Faults, their policies and restarts, and the waits and callbacks around them (issue 11).
rk_add_test(test_faults SOURCES test_faults.c LABELS runtime TIMEOUT 120)
# Failure injection: allocations, thread creations and libuv resources failing one by one (STATIC:
# the fail points are internal).
rk_add_test(test_failpoints SOURCES test_failpoints.c LABELS runtime STATIC TIMEOUT 300)
# Kernels that message kernels: graphs, routes, topics (STATIC: looks at kernel state).
rk_add_test(test_k2k SOURCES test_k2k.c LABELS runtime STATIC TIMEOUT 120)
# Kernels given as source text on the CPU backend (src/host/cc.c): the system C compiler, the
# cache, the compile check and bad input (test_source); and the built-ins' run-time source twins
# passing test_builtins' tests (test_source_twins: test_builtins.c built again).
rk_add_test(test_source SOURCES test_source.c LABELS runtime TIMEOUT 300)
rk_add_test(test_source_twins SOURCES test_builtins.c LABELS runtime TIMEOUT 300)
target_compile_definitions(test_source_twins PRIVATE RK_TEST_SOURCE_TWINS
                           "RK_TEST_BUILTINS_SRC=\"${PROJECT_SOURCE_DIR}/src/device/builtins.h\"")
# One dialect source (twin_kernel.c), built into the test with ringkernel_add_kernels and handed
# to the runtime as source text: both pass twin_check.h.
# The run-time twin's text (twin_kernel.h, then twin_kernel.c) is embedded in the tests that use it
# (twin_source.h), so a binary carried to another machine (test_gpu) has it.
set(_twin_files ${CMAKE_CURRENT_SOURCE_DIR}/twin_kernel.h ${CMAKE_CURRENT_SOURCE_DIR}/twin_kernel.c)
add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/twin_source.h
  COMMAND ${CMAKE_COMMAND} -DOUT=${CMAKE_CURRENT_BINARY_DIR}/twin_source.h -DNAME=rk_test_twin_source
          "-DFILES=${_twin_files}" -P ${CMAKE_CURRENT_SOURCE_DIR}/tools/embed_text.cmake
  DEPENDS ${_twin_files} ${CMAKE_CURRENT_SOURCE_DIR}/tools/embed_text.cmake VERBATIM)
add_custom_target(rk_twin_source DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/twin_source.h)
rk_add_test(test_kernel_twins SOURCES test_kernel_twins.c LABELS runtime TIMEOUT 300)
# test_devemu runs it on the emulated device too: rk_devemu built again with the source compiled
# after the device loop (src/device/emulation_lanes.cpp, RK_EMU_EXTRA_SOURCE), as nvcc compiles it.
# (-Wno-array-bounds: GCC 12 inlines the loop differently with this handler and then takes the
# emulated shared-variable arena for a zero-length array; ASan checks those accesses.)
add_library(rk_devemu_twin STATIC ${PROJECT_SOURCE_DIR}/src/device/emulation_lanes.cpp)
target_include_directories(rk_devemu_twin PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src
                                          PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(rk_devemu_twin PRIVATE "RK_EMU_EXTRA_SOURCE=\"twin_kernel.c\""
                                                  RK_EMU_EXTRA_ENTRY=rk_kernel_tally)
target_compile_options(rk_devemu_twin PRIVATE ${RK_WARNINGS} -Wno-unknown-pragmas -Wno-array-bounds)
target_link_libraries(rk_devemu_twin PUBLIC Threads::Threads)
ringkernel_add_kernels(test_devemu twin_kernel.c)
foreach(t test_kernel_twins test_gpu test_nvrtc test_devemu)
  add_dependencies(${t} rk_twin_source)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_BINARY_DIR})
endforeach()
ringkernel_add_kernels(test_kernel_twins twin_kernel.c)
ringkernel_add_kernels(test_gpu twin_kernel.c)
target_compile_definitions(test_kernel_twins PRIVATE $<$<BOOL:${RK_HAVE_CUDA}>:RK_TEST_HAVE_CUDA>)
