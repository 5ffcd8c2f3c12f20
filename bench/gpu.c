/* gpu.c — `rk-bench gpu`: the CUDA backend against a kernel launch per message.
 *
 *   rtt.echo         rtt_p50_ns, rtt_p99_ns   host -> GPU -> host round trip, measured end to end
 *                    on the host (send until the reply is in host memory, never a host store alone):
 *     ringkernel.cuda  rk_call on the built-in echo ring kernel (persistent, mapped-memory rings)
 *     cuda.launch      cudaMemcpyAsync in + cudaLaunchKernel + cudaMemcpyAsync out + synchronize
 *     cuda.graph       the same three operations captured in a CUDA Graph, one graph launch each
 *   throughput.echo  msgs_per_s   pipelined echo (rk_send_batch / rk_recv_batch), every reply
 *                    checked: impl ringkernel.cuda.1lane and ringkernel.cuda.8lane.
 * Every line's machine names the GPU. Targets on an H100: p50 <= 5 us and at least 2x lower than
 * cuda.launch; >= 5 M msgs/s with 8 lanes. Without a usable GPU it says so and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ringkernel.h"

#define GPU_PAYLOAD 32u
#define GPU_TYPE 7u
#define GPU_WINDOW 512u
#define GPU_BATCH 64u

#if defined(RK_BENCH_CUDA)
int rk_bench_gpu_name(int device, char *buf, size_t len);
int rk_bench_gpu_baselines(int device, uint32_t payload, double seconds, uint64_t *launch, size_t *n_launch,
                           uint64_t *graph, size_t *n_graph, size_t cap, char *err, size_t errlen);
#endif

static void emit_rtt(const char *impl, uint64_t *v, size_t n) {
  if (n == 0) return;
  rk_bench_emit("rtt.echo", impl, "rtt_p50_ns", (double)rk_bench_quantile_u64(v, n, 0.50), "ns", n, NAN, NAN);
  rk_bench_emit("rtt.echo", impl, "rtt_p99_ns", (double)rk_bench_quantile_u64(v, n, 0.99), "ns", n, NAN, NAN);
}

static int rtt_ring(rk_kernel *k, double seconds, uint64_t *v, size_t cap, size_t *n) {
  uint8_t req[GPU_PAYLOAD], buf[GPU_PAYLOAD];
  rk_msg reply;
  uint64_t warm = rk_bench_now_ns() + (uint64_t)(seconds * 0.1e9), end = warm + (uint64_t)(seconds * 1e9), i = 0;
  *n = 0;
  for (;;) {
    uint64_t t0, t1;
    int rc;
    memset(req, (int)(i & 0xff), sizeof req);
    t0 = rk_bench_now_ns();
    rc = rk_call(k, GPU_TYPE, req, sizeof req, &reply, buf, sizeof buf, 1000000000ll);
    t1 = rk_bench_now_ns();
    if (rc != 0 || reply.len != sizeof req || memcmp(buf, req, sizeof req) != 0) {
      rk_bench_fail("rtt.echo ringkernel.cuda: %s", rc ? rk_err_name(rc) : "wrong reply");
      return -1;
    }
    i++;
    if (t1 < warm) continue;
    v[(*n)++] = t1 - t0;
    if (*n == cap || t1 >= end) return 0;
  }
}

static double tput(rk_kernel *k, double seconds) {
  rk_send_item items[GPU_BATCH];
  uint8_t pay[GPU_BATCH][GPU_PAYLOAD];
  rk_msg msgs[GPU_BATCH];
  static uint8_t bufs[GPU_BATCH][GPU_PAYLOAD];
  uint64_t sent = 0, got = 0, start = rk_bench_now_ns(), end = start + (uint64_t)(seconds * 1e9), t;
  uint32_t i;
  for (i = 0; i < GPU_BATCH; i++) {
    memset(&items[i], 0, sizeof items[i]);
    items[i].type = GPU_TYPE;
    items[i].len = GPU_PAYLOAD;
    items[i].payload = pay[i];
  }
  while ((t = rk_bench_now_ns()) < end || got < sent) {
    if (t < end && sent - got + GPU_BATCH <= GPU_WINDOW) {
      int r = rk_send_batch(k, items, GPU_BATCH);
      if (r > 0) sent += (uint64_t)r;
    }
    {
      int r = rk_recv_batch(k, msgs, bufs, GPU_PAYLOAD, GPU_BATCH, sent > got ? 0 : 0);
      if (r > 0) got += (uint64_t)r;
    }
    if (t > end + 2000000000ull) {
      rk_bench_fail("throughput.echo: %llu replies missing", (unsigned long long)(sent - got));
      break;
    }
  }
  t = rk_bench_now_ns();
  return (double)got / ((double)(t - start) / 1e9);
}

int rk_bench_gpu(const rk_bench_opts *o) {
  rk_runtime *rt = NULL;
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  rk_kernel *k = NULL;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  size_t cap = 1u << 20, n = 0;
  uint64_t *v;
  int rc;
  char err[256] = "";

  ro.backend = RK_BACKEND_CUDA;
  ro.log_level = RK_LOG_ERROR;
#if !defined(RK_BENCH_CUDA)
  rk_bench_note("rk-bench gpu: no device (this rk-bench was built without CUDA)");
  rk_bench_emit("gpu", "none", "device_available", 0, "bool", 0, NAN, NAN);
  (void)ro; (void)rt; (void)k; (void)lo; (void)cap; (void)n; (void)v; (void)rc; (void)err;
  return 0;
#else
  {
    /* Is there a device at all? A runtime on the CUDA backend answers, with the reason. */
    rc = rk_runtime_create(&rt, &ro);
    if (rc != 0) {
      rk_bench_note("rk-bench gpu: no device (%s): nothing to measure", rk_err_name(rc));
      rk_bench_emit("gpu", "none", "device_available", 0, "bool", 0, NAN, NAN);
      return 0;
    }
    rk_runtime_destroy(rt); /* the baselines run with no ring kernel resident */
    rt = NULL;
  }
  {
    char gpu[160], m[256];
    if (rk_bench_gpu_name(0, gpu, sizeof gpu) == 0) {
      snprintf(m, sizeof m, "%s; host %s", gpu, rk_bench_machine());
      rk_bench_set_machine(m); /* every GPU line names the GPU */
    }
  }
  v = (uint64_t *)malloc(2 * cap * sizeof *v);
  if (v == NULL) return -1;
  {
    size_t nl = 0, ng = 0;
    if (rk_bench_gpu_baselines(0, GPU_PAYLOAD, o->seconds, v, &nl, v + cap, &ng, cap, err, sizeof err) != 0) {
      rk_bench_fail("gpu baselines: %s", err);
    } else {
      emit_rtt("cuda.launch", v, nl);
      emit_rtt("cuda.graph", v + cap, ng);
    }
  }
  if ((rc = rk_runtime_create(&rt, &ro)) != 0 || (rc = rk_kernel_launch(rt, &rk_builtin_echo, NULL, &k)) != 0 ||
      (rc = rk_kernel_activate(k)) != 0) {
    rk_bench_fail("ringkernel.cuda setup: %s (%s)", rk_err_name(rc), rt ? rk_runtime_last_error(rt) : "");
    rk_runtime_destroy(rt);
    free(v);
    return -1;
  }
  rk_bench_note("rk-bench gpu: %s", rk_runtime_backend_reason(rt));
  if (rtt_ring(k, o->seconds, v, cap, &n) == 0) emit_rtt("ringkernel.cuda", v, n);
  rk_bench_emit("throughput.echo", "ringkernel.cuda.1lane", "msgs_per_s", tput(k, o->seconds), "msgs/s", 1, NAN, NAN);
  rk_kernel_destroy(k);
  lo.lanes = 8;
  if ((rc = rk_kernel_launch(rt, &rk_builtin_echo, &lo, &k)) == 0 && (rc = rk_kernel_activate(k)) == 0)
    rk_bench_emit("throughput.echo", "ringkernel.cuda.8lane", "msgs_per_s", tput(k, o->seconds), "msgs/s", 1, NAN, NAN);
  else
    rk_bench_fail("8-lane launch: %s (%s)", rk_err_name(rc), rk_runtime_last_error(rt));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
  free(v);
  rk_bench_set_machine(NULL);
  rk_bench_table("rtt.echo");
  rk_bench_table("throughput.echo");
  rk_bench_ratio("rtt.echo", "rtt_p50_ns", "cuda.launch", "ringkernel.cuda", 2.0, 1);
  return 0;
#endif
}
