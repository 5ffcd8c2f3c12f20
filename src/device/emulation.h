/* device/emulation.h — compile the device lane loop (persistent.cuh) as host C++ for the test
 * suite's device emulation (tests/devemu_lanes.cpp): each lane a host thread, one thread per block.
 *
 * The persistent loop, the control-block protocol, the batch reads, the reply staging and flush,
 * the clock exchange and the shutdown are the very code the GPU runs; what is emulated is the
 * hardware: the CUDA keywords, one thread per block (so __syncthreads is a no-op), __nanosleep (a
 * yield), %globaltimer (CLOCK_MONOTONIC, deliberately not the host's CLOCK_REALTIME, so stamps are
 * right only if the measured offset is applied) and the memory: the ordering functions of atomic.h
 * take their host (GCC) forms. What it cannot show: PCIe latencies, the PTX memory model's
 * weaker-than-x86 cases, several threads per block, co-residency. Host C++ only; never in librk. */
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

#include <sched.h>
#include <stdint.h>
#include <time.h>

#define __device__
#define __global__
#define __shared__ static thread_local
#define __align__(n) alignas(n)

struct rk_emu_dim3 {
  unsigned x, y, z;
};
/* Set by the harness on each lane thread before it enters the loop. */
static thread_local rk_emu_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1};
static thread_local uint8_t *rk_emu_dynamic_smem = 0;

static inline void __syncthreads(void) {} /* one thread per block */
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
