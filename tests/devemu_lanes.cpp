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

/* Run one lane (block `lane`, `threads` threads) until it exits: thread 0 on the calling thread,
 * the others on threads of their own, joined before returning. */
struct emu_thread {
  rk_emu_entry_fn entry;
  const rk_dev_params *p;
  rk_emu_block *block;
  unsigned lane, thread, threads;
  pthread_t tid;
};

static void *emu_thread_main(void *arg) {
  emu_thread *t = static_cast<emu_thread *>(arg);
  threadIdx = {t->thread, 0, 0};
  blockIdx = {t->lane, 0, 0};
  blockDim = {t->threads, 1, 1};
  rk_emu_cur_block = t->block;
  t->entry(t->p);
  return nullptr;
}

extern "C" int rk_emu_run_lane(rk_emu_entry_fn entry, const rk_dev_params *p, uint32_t lane, uint32_t threads,
                               uint8_t *smem) {
  rk_emu_block *b = new rk_emu_block();
  emu_thread *t = new emu_thread[threads];
  uint32_t i, started = 1;
  int rc = 0;
  pthread_barrier_init(&b->barrier, nullptr, threads);
  pthread_mutex_init(&b->lock, nullptr);
  b->dynamic_smem = smem;
  for (i = 0; i < threads; i++) t[i] = {entry, p, b, lane, i, threads, pthread_t()};
  for (i = 1; i < threads; i++, started++)
    if (pthread_create(&t[i].tid, nullptr, emu_thread_main, &t[i]) != 0) break;
  if (started == threads) emu_thread_main(&t[0]);
  else rc = -1; /* cannot happen in the tests; the started threads would wait at the barrier */
  for (i = 1; i < started; i++) pthread_join(t[i].tid, nullptr);
  pthread_barrier_destroy(&b->barrier);
  pthread_mutex_destroy(&b->lock);
  delete[] t;
  delete b;
  return rc;
}
