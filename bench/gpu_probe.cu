/* gpu_probe.cu — the device probes of `rk-bench gpuprobe` (bench/gpuprobe.c): what the hardware
 * charges for the operations the device lane's cost model counts (src/device/emulation.h), so the
 * counted rounds and fences can be turned into microseconds on the GPU at hand. One thread of one
 * block times each with %globaltimer:
 *   host_read_ns          a load of pinned mapped host memory (ld.relaxed.sys.u64), each address
 *                         depending on the value before: one PCIe round trip
 *   host_read_x8_ns       eight independent loads issued together, then used: one round of eight
 *   host_read_v2_ns       a 16-byte load (ld.relaxed.sys.v2.u64), dependent as the first
 *   fence_sys_store_ns    a posted store to mapped memory then fence.acq_rel.sys (what a lane's
 *                         publication pays)
 *   fence_sys_idle_ns     fence.acq_rel.sys with nothing outstanding
 *   globaltimer_tick_ns   the smallest step of %globaltimer seen (its resolution)
 * Everything is allocated, launched and freed here, before any ring kernel is resident (the
 * caller runs it first). Built only when CUDA is. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define PROBE_ITERS 2000

static __device__ __forceinline__ uint64_t gtimer(void) {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
static __device__ __forceinline__ uint64_t ld_sys(const volatile uint64_t *p) {
  uint64_t v;
  asm volatile("ld.relaxed.sys.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
static __device__ __forceinline__ void ld_sys_v2(const volatile uint64_t *p, uint64_t *a, uint64_t *b) {
  uint64_t x, y;
  asm volatile("ld.relaxed.sys.v2.u64 {%0, %1}, [%2];" : "=l"(x), "=l"(y) : "l"(p) : "memory");
  *a = x;
  *b = y;
}
static __device__ __forceinline__ void st_sys(volatile uint64_t *p, uint64_t v) {
  asm volatile("st.relaxed.sys.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
static __device__ __forceinline__ void fence_sys(void) { asm volatile("fence.acq_rel.sys;" ::: "memory"); }

/* out[k]: the probes' total ns; out[15]: a sink so nothing is optimised away. The mapped buffer
 * holds zeros, so every dependent address is base + 0: the dependence, not the address, serialises. */
__global__ void rk_bench_probe_kernel(volatile uint64_t *mapped, uint64_t *out, int iters) {
  uint64_t t0, t1, sink = 0, idx = 0, last, best = ~0ull;
  int i;
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  t0 = gtimer();
  for (i = 0; i < iters; i++) idx = ld_sys(mapped + (idx & 7));
  t1 = gtimer();
  out[0] = t1 - t0;
  sink += idx;
  t0 = gtimer();
  for (i = 0; i < iters; i++) {
    uint64_t w[8];
    int j;
#pragma unroll
    for (j = 0; j < 8; j++) w[j] = ld_sys(mapped + ((idx + j) & 15));
#pragma unroll
    for (j = 0; j < 8; j++) idx += w[j];
  }
  t1 = gtimer();
  out[1] = t1 - t0;
  sink += idx;
  t0 = gtimer();
  for (i = 0; i < iters; i++) {
    uint64_t a, b;
    ld_sys_v2(mapped + 2 * (idx & 3), &a, &b);
    idx = a + b;
  }
  t1 = gtimer();
  out[2] = t1 - t0;
  sink += idx;
  t0 = gtimer();
  for (i = 0; i < iters; i++) {
    st_sys(mapped + 16 + (i & 7), (uint64_t)i);
    fence_sys();
  }
  t1 = gtimer();
  out[3] = t1 - t0;
  t0 = gtimer();
  for (i = 0; i < iters; i++) fence_sys();
  t1 = gtimer();
  out[4] = t1 - t0;
  last = gtimer();
  for (i = 0; i < iters * 50 && i < 1000000; i++) {
    uint64_t t = gtimer();
    if (t != last) {
      if (t - last < best) best = t - last;
      last = t;
    }
  }
  out[5] = best;
  out[15] = sink;
}

#define CK(x)                                                      \
  do {                                                             \
    cudaError_t e_ = (x);                                          \
    if (e_ != cudaSuccess) {                                       \
      snprintf(err, errlen, "%s: %s", #x, cudaGetErrorString(e_)); \
      goto out;                                                    \
    }                                                              \
  } while (0)

extern "C" int rk_bench_gpu_probe_raw(int device, rk_bench_gpu_probe *r, char *err, size_t errlen) {
  uint64_t *host = NULL, *dmapped = NULL, *dout = NULL, res[16];
  cudaStream_t s = NULL;
  int rc = -1;
  memset(r, 0, sizeof *r);
  CK(cudaSetDevice(device));
  CK(cudaHostAlloc((void **)&host, 4096, cudaHostAllocMapped | cudaHostAllocPortable));
  memset(host, 0, 4096);
  CK(cudaHostGetDevicePointer((void **)&dmapped, host, 0));
  CK(cudaMalloc((void **)&dout, sizeof res));
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  rk_bench_probe_kernel<<<1, 32, 0, s>>>(dmapped, dout, 100); /* warm: load, clocks up */
  CK(cudaGetLastError());
  CK(cudaStreamSynchronize(s));
  rk_bench_probe_kernel<<<1, 32, 0, s>>>(dmapped, dout, PROBE_ITERS);
  CK(cudaGetLastError());
  CK(cudaMemcpyAsync(res, dout, sizeof res, cudaMemcpyDeviceToHost, s));
  CK(cudaStreamSynchronize(s));
  r->host_read_ns = (double)res[0] / PROBE_ITERS;
  r->host_read_x8_ns = (double)res[1] / PROBE_ITERS;
  r->host_read_v2_ns = (double)res[2] / PROBE_ITERS;
  r->fence_sys_store_ns = (double)res[3] / PROBE_ITERS;
  r->fence_sys_idle_ns = (double)res[4] / PROBE_ITERS;
  r->globaltimer_tick_ns = (double)res[5];
  rc = 0;
out:
  if (s) cudaStreamDestroy(s);
  if (dout) cudaFree(dout);
  if (host) cudaFreeHost(host);
  return rc;
}
