/* device/emulation.h — compile the device lane loop (persistent.cuh) as host C++ for the test
 * suite's device emulation (tests/devemu_lanes.cpp): each thread of a block a host thread.
 *
 * The persistent loop, the control-block protocol, the batch reads, the reply staging and flush,
 * the clock exchange and the shutdown are the very code the GPU runs; what is emulated is the
 * hardware: the CUDA keywords, __nanosleep (a yield), %globaltimer (CLOCK_MONOTONIC, deliberately
 * not the host's CLOCK_REALTIME, so stamps are right only if the measured offset is applied),
 * shared memory (a per-block arena its threads share), __syncthreads (a barrier of the block's
 * threads) and the memory: the ordering functions of atomic.h take their host (GCC) forms. What
 * it cannot show: PCIe latencies, the PTX memory model's weaker-than-x86 cases, warps,
 * co-residency. Host C++ only; never in librk. */
#ifndef RK_DEVICE_EMULATION_H
#define RK_DEVICE_EMULATION_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "device/emulation.h is for a host C++ compiler"
#endif
#ifndef __cplusplus
#error "device/emulation.h needs C++ (persistent.cuh is C++)"
#endif
#ifndef RK_DEVICE_EMULATION
#define RK_DEVICE_EMULATION 1
#endif

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define __device__
#define __global__
#define __align__(n) alignas(n)

struct rk_emu_dim3 {
  unsigned x, y, z;
};

/* One block: its threads' barrier, its dynamic shared memory and an arena for its shared variables
 * (RK_DEV_SHARED in persistent.cuh), placed by source line, the same for every thread. */
#define RK_EMU_STATIC_BYTES 2048u
#define RK_EMU_MAX_SHARED 8
struct rk_emu_block {
  pthread_barrier_t barrier;
  pthread_mutex_t lock;
  uint8_t *dynamic_smem;
  unsigned n_vars, used;
  int var_line[RK_EMU_MAX_SHARED];
  unsigned var_off[RK_EMU_MAX_SHARED];
  alignas(64) uint8_t statics[RK_EMU_STATIC_BYTES];
};

/* Set by the harness on each thread before it enters the loop. */
static thread_local rk_emu_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1};
static thread_local rk_emu_block *rk_emu_cur_block = 0;

static inline uint8_t *rk_emu_dynamic_smem(void) { return rk_emu_cur_block->dynamic_smem; }

template <typename T>
static T &rk_emu_shared(int line) {
  rk_emu_block *b = rk_emu_cur_block;
  unsigned i, off = 0;
  pthread_mutex_lock(&b->lock);
  for (i = 0; i < b->n_vars && b->var_line[i] != line; i++) {
  }
  if (i == b->n_vars) { /* first thread here: place it (uninitialised, as __shared__ is) */
    off = (b->used + (unsigned)alignof(T) - 1) & ~((unsigned)alignof(T) - 1);
    if (i == RK_EMU_MAX_SHARED || off + sizeof(T) > RK_EMU_STATIC_BYTES) __builtin_trap();
    b->var_line[i] = line;
    b->var_off[i] = off;
    b->used = off + (unsigned)sizeof(T);
    b->n_vars++;
  }
  off = b->var_off[i];
  pthread_mutex_unlock(&b->lock);
  return *reinterpret_cast<T *>(b->statics + off);
}

/* A barrier of the block's threads; like __syncthreads it also orders their memory accesses. */
static inline void __syncthreads(void) {
  if (blockDim.x > 1) pthread_barrier_wait(&rk_emu_cur_block->barrier);
}
static inline void __nanosleep(unsigned ns) {
  (void)ns;
  sched_yield();
}
static inline uint64_t rk_emu_globaltimer(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif /* RK_DEVICE_EMULATION_H */
