/* gpu_baselines.cu — the launch-per-message baselines of `rk-bench gpu`: one cudaLaunchKernel +
 * cudaStreamSynchronize per message, and one CUDA Graph launch per message, each copying the
 * request in and the reply out as a user would (pinned buffers, cudaMemcpyAsync); and the
 * zero-copy launch (mode 2): the kernel reads the request from and writes the reply to pinned,
 * mapped host memory — no copies, a launch and a synchronize — the fastest way a launch per
 * message can go, and the one a ring kernel's mapped rings are closest to. Built only when CUDA is.
 *
 * Everything that allocates or loads a module (buffers, stream, graph, the first launch, which
 * loads the kernel's image under lazy loading) happens in rk_bench_gpu_base_open, before any ring
 * kernel is resident (ARCHITECTURE §8: an allocation or a module load while a persistent kernel
 * runs can hang). rk_bench_gpu_base_run only launches and synchronises on its own non-blocking
 * stream, and gpu.c runs it only while no ring kernel is resident, so a polling ring kernel does
 * not share the bus with the baseline it is compared to. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

__global__ void rk_bench_echo_kernel(const uint8_t *in, uint8_t *out, uint32_t n) {
  for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = in[i];
}

static uint64_t ns_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct rk_bench_gpu_base {
  uint32_t payload;
  uint8_t *h_in, *h_out, *d_in, *d_out;
  uint8_t *z_in, *z_out, *zd_in, *zd_out; /* zero-copy: mapped host buffers and their device addresses */
  uint8_t *want; /* the expected reply, host memory */
  cudaStream_t s;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  uint64_t seq; /* request number: every request's bytes differ, so a stale reply is caught */
};

#define CK(x)                                                              \
  do {                                                                     \
    cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess) {                                               \
      snprintf(err, errlen, "%s: %s", #x, cudaGetErrorString(e_));         \
      goto out;                                                            \
    }                                                                      \
  } while (0)

extern "C" int rk_bench_gpu_name(int device, char *buf, size_t len) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return -1;
  snprintf(buf, len, "%s (cc %d.%d, %d SMs)", p.name, p.major, p.minor, p.multiProcessorCount);
  return 0;
}

static const char *mode_name(int mode) {
  return mode == 2 ? "cuda.launch.zerocopy" : mode == 1 ? "cuda.graph" : "cuda.launch";
}

/* One message through the baseline: copy in, echo, copy out, synchronise. mode 1: as one graph
 * launch; mode 2: a launch reading and writing mapped host memory, no copies. Returns the round
 * trip in ns, 0 on error (err set). The request is written before the clock starts and the reply
 * checked after it stops, as on the ring side. */
static uint64_t one(rk_bench_gpu_base *b, int mode, char *err, size_t errlen) {
  uint64_t t0, t1;
  uint8_t *in = mode == 2 ? b->z_in : b->h_in, *out = mode == 2 ? b->z_out : b->h_out;
  rk_bench_pattern(in, b->payload, b->seq); /* the ring's requests get the same bytes */
  memcpy(b->want, in, b->payload);
  t0 = ns_now();
  if (mode == 1) {
    CK(cudaGraphLaunch(b->ge, b->s));
  } else if (mode == 2) {
    rk_bench_echo_kernel<<<1, 32, 0, b->s>>>(b->zd_in, b->zd_out, b->payload);
    CK(cudaGetLastError());
  } else {
    CK(cudaMemcpyAsync(b->d_in, b->h_in, b->payload, cudaMemcpyHostToDevice, b->s));
    rk_bench_echo_kernel<<<1, 32, 0, b->s>>>(b->d_in, b->d_out, b->payload);
    CK(cudaGetLastError());
    CK(cudaMemcpyAsync(b->h_out, b->d_out, b->payload, cudaMemcpyDeviceToHost, b->s));
  }
  CK(cudaStreamSynchronize(b->s));
  t1 = ns_now();
  b->seq++;
  if (memcmp(out, b->want, b->payload) != 0) {
    snprintf(err, errlen, "%s: request %llu: wrong reply bytes", mode_name(mode), (unsigned long long)(b->seq - 1));
    return 0;
  }
  return t1 - t0 > 0 ? t1 - t0 : 1;
out:
  return 0;
}

extern "C" void rk_bench_gpu_base_close(rk_bench_gpu_base *b) {
  if (b == NULL) return;
  if (b->s) cudaStreamSynchronize(b->s);
  if (b->ge) cudaGraphExecDestroy(b->ge);
  if (b->g) cudaGraphDestroy(b->g);
  if (b->s) cudaStreamDestroy(b->s);
  if (b->d_in) cudaFree(b->d_in);
  if (b->d_out) cudaFree(b->d_out);
  if (b->h_in) cudaFreeHost(b->h_in);
  if (b->h_out) cudaFreeHost(b->h_out);
  if (b->z_in) cudaFreeHost(b->z_in);
  if (b->z_out) cudaFreeHost(b->z_out);
  free(b->want);
  free(b);
}

extern "C" int rk_bench_gpu_base_open(int device, uint32_t payload, rk_bench_gpu_base **out, char *err,
                                      size_t errlen) {
  rk_bench_gpu_base *b = (rk_bench_gpu_base *)calloc(1, sizeof *b);
  int rc = -1, i;
  *out = NULL;
  if (b == NULL || payload == 0 || (b->want = (uint8_t *)malloc(payload)) == NULL) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  b->payload = payload;
  CK(cudaSetDevice(device));
  CK(cudaHostAlloc((void **)&b->h_in, payload, cudaHostAllocDefault));
  CK(cudaHostAlloc((void **)&b->h_out, payload, cudaHostAllocDefault));
  CK(cudaMalloc((void **)&b->d_in, payload));
  CK(cudaMalloc((void **)&b->d_out, payload));
  CK(cudaHostAlloc((void **)&b->z_in, payload, cudaHostAllocMapped));
  CK(cudaHostAlloc((void **)&b->z_out, payload, cudaHostAllocMapped));
  CK(cudaHostGetDevicePointer((void **)&b->zd_in, b->z_in, 0));
  CK(cudaHostGetDevicePointer((void **)&b->zd_out, b->z_out, 0));
  CK(cudaStreamCreateWithFlags(&b->s, cudaStreamNonBlocking));
  CK(cudaStreamBeginCapture(b->s, cudaStreamCaptureModeThreadLocal));
  cudaMemcpyAsync(b->d_in, b->h_in, payload, cudaMemcpyHostToDevice, b->s);
  rk_bench_echo_kernel<<<1, 32, 0, b->s>>>(b->d_in, b->d_out, payload);
  cudaMemcpyAsync(b->h_out, b->d_out, payload, cudaMemcpyDeviceToHost, b->s);
  CK(cudaStreamEndCapture(b->s, &b->g));
  CK(cudaGraphInstantiate(&b->ge, b->g, 0));
  for (i = 0; i < 6; i++) /* load the module and upload the graph now, not in a timed region */
    if (one(b, i % 3, err, errlen) == 0) goto out;
  rc = 0;
  *out = b;
out:
  if (rc != 0) rk_bench_gpu_base_close(b);
  return rc;
}

extern "C" int rk_bench_gpu_base_run(rk_bench_gpu_base *b, int mode, double seconds, double warm_seconds,
                                     uint64_t *v, size_t cap, size_t *n, char *err, size_t errlen) {
  uint64_t warm = ns_now() + (uint64_t)(warm_seconds * 1e9), end = warm + (uint64_t)(seconds * 1e9);
  *n = 0;
  if (cap == 0) return 0;
  for (;;) {
    uint64_t d = one(b, mode, err, errlen), t;
    if (d == 0) return -1;
    t = ns_now();
    if (t < warm) continue;
    v[(*n)++] = d;
    if (*n == cap || t >= end) return 0;
  }
}

/* ---------------------------------------- rk-bench bulk: vector_add ------------------------------ */

extern "C" int rk_bench_gpu_sms(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return -1;
  return v;
}

__global__ void rk_bench_vadd_kernel(const float *a, const float *b, float *c, uint64_t n) {
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    c[i] = a[i] + b[i];
}

struct rk_bench_gpu_vadd {
  uint64_t n;
  float *h_a, *h_b, *h_c; /* pinned host copies */
  float *d_a, *d_b, *d_c;
  cudaStream_t s;
  unsigned blocks;
};

extern "C" void rk_bench_gpu_vadd_close(rk_bench_gpu_vadd *v) {
  if (v == NULL) return;
  if (v->s) cudaStreamDestroy(v->s);
  cudaFree(v->d_a);
  cudaFree(v->d_b);
  cudaFree(v->d_c);
  cudaFreeHost(v->h_a);
  cudaFreeHost(v->h_b);
  cudaFreeHost(v->h_c);
  free(v);
}

extern "C" int rk_bench_gpu_vadd_open(int device, uint64_t n, rk_bench_gpu_vadd **out, char *err, size_t errlen) {
  rk_bench_gpu_vadd *v = (rk_bench_gpu_vadd *)calloc(1, sizeof *v);
  int sms = rk_bench_gpu_sms(device);
  uint64_t i;
  *out = NULL;
  if (v == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  v->n = n;
  /* enough blocks of 256 threads to cover n, at most 8 per SM (the grid-stride loop does the rest) */
  v->blocks = (unsigned)((n + 255) / 256);
  if (sms > 0 && v->blocks > (unsigned)sms * 8) v->blocks = (unsigned)sms * 8;
  CK(cudaSetDevice(device));
  CK(cudaStreamCreateWithFlags(&v->s, cudaStreamNonBlocking));
  CK(cudaMallocHost((void **)&v->h_a, n * 4));
  CK(cudaMallocHost((void **)&v->h_b, n * 4));
  CK(cudaMallocHost((void **)&v->h_c, n * 4));
  CK(cudaMalloc((void **)&v->d_a, n * 4));
  CK(cudaMalloc((void **)&v->d_b, n * 4));
  CK(cudaMalloc((void **)&v->d_c, n * 4));
  for (i = 0; i < n; i++) {
    v->h_a[i] = (float)(i & 1023) * 0.25f;
    v->h_b[i] = (float)(i % 613) - 7.0f;
  }
  CK(cudaMemcpyAsync(v->d_a, v->h_a, n * 4, cudaMemcpyHostToDevice, v->s));
  CK(cudaMemcpyAsync(v->d_b, v->h_b, n * 4, cudaMemcpyHostToDevice, v->s));
  /* the first launch loads the module: now, not while a ring kernel is resident */
  rk_bench_vadd_kernel<<<v->blocks, 256, 0, v->s>>>(v->d_a, v->d_b, v->d_c, n);
  CK(cudaGetLastError());
  CK(cudaStreamSynchronize(v->s));
  *out = v;
  return 0;
out:
  rk_bench_gpu_vadd_close(v);
  return -1;
}

extern "C" int rk_bench_gpu_vadd_run(rk_bench_gpu_vadd *v, int mode, double seconds, double *elems_per_s, char *err,
                                     size_t errlen) {
  uint64_t t0 = ns_now(), t, iters = 0, i;
  *elems_per_s = -1;
  do {
    if (mode == 0) {
      CK(cudaMemcpyAsync(v->d_a, v->h_a, v->n * 4, cudaMemcpyHostToDevice, v->s));
      CK(cudaMemcpyAsync(v->d_b, v->h_b, v->n * 4, cudaMemcpyHostToDevice, v->s));
    }
    rk_bench_vadd_kernel<<<v->blocks, 256, 0, v->s>>>(v->d_a, v->d_b, v->d_c, v->n);
    CK(cudaGetLastError());
    if (mode == 0) CK(cudaMemcpyAsync(v->h_c, v->d_c, v->n * 4, cudaMemcpyDeviceToHost, v->s));
    CK(cudaStreamSynchronize(v->s));
    iters++;
    t = ns_now();
  } while ((double)(t - t0) < seconds * 1e9);
  if (mode != 0) CK(cudaMemcpy(v->h_c, v->d_c, v->n * 4, cudaMemcpyDeviceToHost));
  for (i = 0; i < v->n; i++)
    if (v->h_c[i] != v->h_a[i] + v->h_b[i]) {
      snprintf(err, errlen, "%s: c[%llu] = %g, want %g", mode == 0 ? "cuda.launch" : "cuda.resident",
               (unsigned long long)i, (double)v->h_c[i], (double)(v->h_a[i] + v->h_b[i]));
      return -1;
    }
  *elems_per_s = (double)iters * (double)v->n / ((double)(t - t0) / 1e9);
  return 0;
out:
  return -1;
}
