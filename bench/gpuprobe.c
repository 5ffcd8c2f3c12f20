/* gpuprobe.c — `rk-bench gpuprobe`: the GPU's prices for what the device lane's cost model counts,
 * and three checks of the CUDA backend on real hardware; about 30 s. JSON lines with bench
 * gpu.probe (machine: the GPU), for the GPU bundle's output:
 *   impl device (gpu_probe.cu; one thread, %globaltimer): host_read_ns, host_read_x8_ns,
 *     host_read_v2_ns, fence_sys_store_ns, fence_sys_idle_ns, globaltimer_tick_ns
 *   impl ringkernel.cuda.1thread, ringkernel.cuda.32threads: echo_rtt_p50_ns, echo_rtt_p99_ns
 *     (rk_call round trips on the built-in echo, one lane of 1 or 32 threads)
 *   impl ringkernel.cuda: first_launch_ms (launching counter for the first time in the process while
 *     echo is resident: the lazy-loading hazard the backend's eager loading removes; then one
 *     call to each), first_launch_ok (1 when both answered)
 * Run it in a process of its own (scripts/gpu-bundle.sh does): the first launch must be the
 * process's first. Without a usable GPU it says so and emits gpu.probe/none/device_available = 0
 * (a failure with RK_REQUIRE_GPU=1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ringkernel.h"

#define GP_CALLS 3000
#define GP_TIMEOUT_NS 250000000ll

static int gp_required(void) {
  const char *r = getenv("RK_REQUIRE_GPU");
  return r && strcmp(r, "1") == 0;
}

static void echo_rtt(rk_runtime *rt, uint32_t threads, const char *impl) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  uint64_t *v = (uint64_t *)calloc(GP_CALLS, sizeof *v);
  uint8_t req[32], buf[32];
  rk_msg m;
  int rc, i, n = 0;
  lo.threads_per_lane = threads;
  if (v == NULL || (rc = rk_kernel_launch(rt, &rk_builtin_echo, &lo, &k)) != RK_OK || (rc = rk_kernel_activate(k)) != RK_OK) {
    rk_bench_fail("gpu.probe %s: echo: %s", impl, v ? rk_runtime_last_error(rt) : "out of memory");
    goto out;
  }
  for (i = 0; i < GP_CALLS + 100; i++) {
    uint64_t t0, t1;
    rk_bench_pattern(req, sizeof req, (uint64_t)i);
    t0 = rk_bench_now_ns();
    rc = rk_call(k, 7, req, sizeof req, &m, buf, sizeof buf, GP_TIMEOUT_NS);
    t1 = rk_bench_now_ns();
    if (rc != RK_OK || m.len != sizeof req || memcmp(buf, req, sizeof req) != 0) {
      rk_bench_fail("gpu.probe %s: call %d: %s", impl, i, rc ? rk_err_name(rc) : "wrong reply");
      break;
    }
    if (i >= 100) v[n++] = t1 - t0;
  }
  if (n) {
    rk_bench_emit("gpu.probe", impl, "echo_rtt_p50_ns", (double)rk_bench_quantile_u64(v, (size_t)n, 0.50), "ns",
                  (uint64_t)n, NAN, NAN);
    rk_bench_emit("gpu.probe", impl, "echo_rtt_p99_ns", (double)rk_bench_quantile_u64(v, (size_t)n, 0.99), "ns",
                  (uint64_t)n, NAN, NAN);
  }
out:
  rk_kernel_destroy(k);
  free(v);
}

static void first_launch(rk_runtime *rt) {
  rk_kernel *echo = NULL, *ctr = NULL;
  rk_counter_add a = {3};
  rk_counter_value cv;
  uint32_t x = 5, back = 0;
  rk_msg m;
  uint64_t t0, t1;
  int rc, ok = 0;
  if ((rc = rk_kernel_launch(rt, &rk_builtin_echo, NULL, &echo)) != RK_OK || (rc = rk_kernel_activate(echo)) != RK_OK ||
      (rc = rk_call(echo, 7, &x, sizeof x, &m, &back, sizeof back, GP_TIMEOUT_NS)) != RK_OK) {
    rk_bench_fail("gpu.probe first launch: echo: %s (%s)", rk_err_name(rc), rk_runtime_last_error(rt));
    goto out;
  }
  t0 = rk_bench_now_ns();
  rc = rk_kernel_launch(rt, &rk_builtin_counter, NULL, &ctr);
  if (rc == RK_OK) rc = rk_kernel_activate(ctr);
  if (rc == RK_OK) rc = rk_call_typed(ctr, rk_counter_add, &a, &m, &cv, sizeof cv, GP_TIMEOUT_NS);
  t1 = rk_bench_now_ns();
  x = 6;
  ok = rc == RK_OK && cv.total == 3 && rk_call(echo, 7, &x, sizeof x, &m, &back, sizeof back, GP_TIMEOUT_NS) == RK_OK &&
       back == 6;
  if (rc != RK_OK) rk_bench_fail("gpu.probe first launch: counter: %s (%s)", rk_err_name(rc), rk_runtime_last_error(rt));
  rk_bench_emit("gpu.probe", "ringkernel.cuda", "first_launch_ms", (double)(t1 - t0) / 1e6, "ms", 1, NAN, NAN);
  rk_bench_emit("gpu.probe", "ringkernel.cuda", "first_launch_ok", ok, "bool", 1, NAN, NAN);
out:
  rk_kernel_destroy(ctr);
  rk_kernel_destroy(echo);
}

int rk_bench_gpuprobe(const rk_bench_opts *o) {
  rk_runtime *rt = NULL;
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  int rc;
  (void)o;
  ro.backend = RK_BACKEND_CUDA;
  ro.log_level = RK_LOG_ERROR;
#if defined(RK_BENCH_CUDA)
  {
    rk_bench_gpu_probe r;
    char err[256] = "", gpu[160] = "unknown CUDA GPU", m[320];
    if (rk_bench_gpu_name(0, gpu, sizeof gpu) == 0) { /* a device: the raw probes first, nothing resident */
      snprintf(m, sizeof m, "%s; host %s", gpu, rk_bench_machine());
      rk_bench_set_machine(m);
      if (rk_bench_gpu_probe_raw(0, &r, err, sizeof err) != 0) {
        rk_bench_fail("gpu.probe: %s", err);
      } else {
        rk_bench_emit("gpu.probe", "device", "host_read_ns", r.host_read_ns, "ns", 2000, NAN, NAN);
        rk_bench_emit("gpu.probe", "device", "host_read_x8_ns", r.host_read_x8_ns, "ns", 2000, NAN, NAN);
        rk_bench_emit("gpu.probe", "device", "host_read_v2_ns", r.host_read_v2_ns, "ns", 2000, NAN, NAN);
        rk_bench_emit("gpu.probe", "device", "fence_sys_store_ns", r.fence_sys_store_ns, "ns", 2000, NAN, NAN);
        rk_bench_emit("gpu.probe", "device", "fence_sys_idle_ns", r.fence_sys_idle_ns, "ns", 2000, NAN, NAN);
        rk_bench_emit("gpu.probe", "device", "globaltimer_tick_ns", r.globaltimer_tick_ns, "ns", 1, NAN, NAN);
      }
    }
  }
#endif
  if ((rc = rk_runtime_create(&rt, &ro)) != RK_OK) {
    if (rc == RK_ENODEV && !gp_required()) {
      rk_bench_note("rk-bench gpuprobe: no device (%s): nothing to probe", rk_err_name(rc));
      rk_bench_emit("gpu.probe", "none", "device_available", 0, "bool", 0, NAN, NAN);
      rk_bench_set_machine(NULL);
      return 0;
    }
    rk_bench_fail("rk-bench gpuprobe: the CUDA runtime could not be created: %s", rk_err_name(rc));
    rk_bench_set_machine(NULL);
    return -1;
  }
  rk_bench_note("== gpuprobe: %s", rk_runtime_backend_reason(rt));
  first_launch(rt); /* first: counter's first launch in this process */
  echo_rtt(rt, 1, "ringkernel.cuda.1thread");
  echo_rtt(rt, 32, "ringkernel.cuda.32threads");
  rk_runtime_destroy(rt);
  rk_bench_set_machine(NULL);
  return 0;
}
