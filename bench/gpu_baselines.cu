/* gpu_baselines.cu — the launch-per-message baselines of `rk-bench gpu`: one cudaLaunchKernel +
 * cudaStreamSynchronize per message, and one CUDA Graph launch per message, each copying the
 * request in and the reply out as a user would (pinned buffers, cudaMemcpyAsync). Built only
 * when CUDA is. Run before any ring kernel is resident (ARCHITECTURE §8). */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

__global__ void rk_bench_echo_kernel(const uint8_t *in, uint8_t *out, uint32_t n) {
  for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = in[i];
}

static uint64_t ns_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define CK(x)                                                              \
  do {                                                                     \
    cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess) {                                               \
      snprintf(err, errlen, "%s: %s", #x, cudaGetErrorString(e_));         \
      goto out;                                                            \
    }                                                                      \
  } while (0)

/* "NVIDIA H100 80GB HBM3 (cc 9.0)" for the device, or -1. */
extern "C" int rk_bench_gpu_name(int device, char *buf, size_t len) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return -1;
  snprintf(buf, len, "%s (cc %d.%d)", p.name, p.major, p.minor);
  return 0;
}

/* Fills launch[] and graph[] with per-message round trips (ns). Returns 0 or -1 (err set). */
extern "C" int rk_bench_gpu_baselines(int device, uint32_t payload, double seconds, uint64_t *launch, size_t *n_launch,
                                      uint64_t *graph, size_t *n_graph, size_t cap, char *err, size_t errlen) {
  uint8_t *h_in = 0, *h_out = 0, *d_in = 0, *d_out = 0;
  cudaStream_t s = 0;
  cudaGraph_t g = 0;
  cudaGraphExec_t ge = 0;
  int rc = -1, pass;
  *n_launch = *n_graph = 0;
  CK(cudaSetDevice(device));
  CK(cudaHostAlloc((void **)&h_in, payload, cudaHostAllocDefault));
  CK(cudaHostAlloc((void **)&h_out, payload, cudaHostAllocDefault));
  CK(cudaMalloc((void **)&d_in, payload));
  CK(cudaMalloc((void **)&d_out, payload));
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cudaMemcpyAsync(d_in, h_in, payload, cudaMemcpyHostToDevice, s);
  rk_bench_echo_kernel<<<1, 32, 0, s>>>(d_in, d_out, payload);
  cudaMemcpyAsync(h_out, d_out, payload, cudaMemcpyDeviceToHost, s);
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (pass = 0; pass < 2; pass++) {
    uint64_t warm = ns_now() + (uint64_t)(seconds * 0.1e9), end = warm + (uint64_t)(seconds * 1e9), i = 0;
    uint64_t *v = pass == 0 ? launch : graph;
    size_t *n = pass == 0 ? n_launch : n_graph;
    for (;;) {
      uint64_t t0 = ns_now(), t1;
      memset(h_in, (int)(i & 0xff), payload);
      if (pass == 0) {
        CK(cudaMemcpyAsync(d_in, h_in, payload, cudaMemcpyHostToDevice, s));
        rk_bench_echo_kernel<<<1, 32, 0, s>>>(d_in, d_out, payload);
        CK(cudaGetLastError());
        CK(cudaMemcpyAsync(h_out, d_out, payload, cudaMemcpyDeviceToHost, s));
      } else {
        CK(cudaGraphLaunch(ge, s));
      }
      CK(cudaStreamSynchronize(s));
      t1 = ns_now();
      if (h_out[0] != (uint8_t)(i & 0xff) || h_out[payload - 1] != (uint8_t)(i & 0xff)) {
        snprintf(err, errlen, "baseline echo returned wrong bytes");
        goto out;
      }
      i++;
      if (t1 < warm) continue;
      v[(*n)++] = t1 - t0;
      if (*n == cap || t1 >= end) break;
    }
  }
  rc = 0;
out:
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  if (s) cudaStreamDestroy(s);
  if (d_in) cudaFree(d_in);
  if (d_out) cudaFree(d_out);
  if (h_in) cudaFreeHost(h_in);
  if (h_out) cudaFreeHost(h_out);
  return rc;
}
