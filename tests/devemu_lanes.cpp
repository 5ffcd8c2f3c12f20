/* devemu_lanes.cpp — the device lane loop (src/device/persistent.cuh) and the built-in kernels'
 * handlers (src/device/builtins.h), compiled as host C++ by the device emulation
 * (src/device/emulation.h) for test_devemu.c: the code a GPU runs, run by host threads. */
#include <string_view>

/* The dialect defines functions a given set of handlers may not use. (#pragma unroll, nvcc's, is
 * silenced in tests/runtime.cmake: GCC cannot silence it from here.) */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "device/emulation.h"

#include "ringkernel/builtins.h"
#include "device/persistent.cuh"

/* The handlers get C++ linkage in a namespace of their own: librk (linked statically by the test)
 * defines the CPU backend's copies of the same names. */
namespace rk_emu {
#include "device/builtins.h"
}

RK_DEFINE_RING_KERNEL(emu_echo, rk_emu::rk_echo_handler)
RK_DEFINE_RING_KERNEL(emu_vector_add, rk_emu::rk_vector_add_handler)
RK_DEFINE_RING_KERNEL(emu_counter, rk_emu::rk_counter_handler)

typedef void (*rk_emu_entry_fn)(const rk_dev_params *);

/* The emulated entry point for a built-in kernel's CUDA entry name, or NULL. */
extern "C" rk_emu_entry_fn rk_emu_entry(const char *name) {
  static const struct {
    const char *name;
    rk_emu_entry_fn fn;
  } table[] = {{"rk_ring_kernel_echo", emu_echo},
               {"rk_ring_kernel_vector_add", emu_vector_add},
               {"rk_ring_kernel_counter", emu_counter}};
  for (const auto &e : table)
    if (name && std::string_view(name) == e.name) return e.fn;
  return nullptr;
}

/* Run one lane (block `lane`, one thread) on the calling thread until it exits. */
extern "C" void rk_emu_run_lane(rk_emu_entry_fn entry, const rk_dev_params *p, uint32_t lane, uint8_t *smem) {
  threadIdx = {0, 0, 0};
  blockIdx = {lane, 0, 0};
  blockDim = {1, 1, 1};
  rk_emu_dynamic_smem = smem;
  entry(p);
}
