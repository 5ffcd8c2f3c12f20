/* test_gpu.c — the GPU suite (ctest label `gpu`): the CPU backend's lifecycle, send/recv/call,
 * backpressure, terminate-drains, state-survives and HLC-ordering checks, run on the CUDA
 * backend; an NVRTC-compiled kernel end to end; co-residency refusal. Exits 77 (skipped) when no
 * usable CUDA device is present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "nvrtc_sample.h"
#include "ringkernel.h"

#define T_NS 2000000000ll
static rk_runtime *rt;

static rk_kernel *launch(const rk_kernel_desc *d, uint32_t lanes, uint32_t threads, uint32_t inbox,
                         rk_backpressure bp) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  lo.lanes = lanes;
  lo.threads_per_lane = threads;
  lo.inbox_capacity = inbox;
  lo.backpressure = bp;
  if (rk_kernel_launch(rt, d, &lo, &k) != RK_OK) fail_msg("launch %s: %s", d->name, rk_runtime_last_error(rt));
  return k;
}

static void lifecycle(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  (void)state;
  assert_int_equal(rk_kernel_state(k), RK_STATE_LAUNCHED);
  assert_int_equal(rk_kernel_deactivate(k), RK_ESTATE);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_terminate(k, T_NS), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
  assert_int_equal(rk_kernel_terminate(k, T_NS), RK_ESTATE);
  rk_kernel_destroy(k);
}

static void call_and_recv(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 2, 64, 0, RK_BACKPRESSURE_DEFAULT);
  char req[40], buf[64];
  rk_msg m;
  uint64_t seen[200] = {0}, ids[200];
  int i, got = 0;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 100; i++) {
    rk_hlc before = rk_clock_peek(rk_runtime_clock(rt));
    snprintf(req, sizeof req, "call %d", i);
    assert_int_equal(rk_call(k, 9, req, (uint32_t)strlen(req) + 1, &m, buf, sizeof buf, T_NS), RK_OK);
    assert_string_equal(buf, req);
    assert_true(m.env.hlc > before); /* reply stamp > request stamp > runtime clock before */
    assert_true(rk_clock_peek(rk_runtime_clock(rt)) > m.env.hlc);
  }
  for (i = 0; i < 200; i++) {
    uint32_t v = (uint32_t)i;
    assert_int_equal(rk_send(k, 9, &v, sizeof v, 0, &ids[i]), RK_OK);
  }
  while (got < 200) {
    uint32_t v;
    assert_int_equal(rk_recv(k, &m, &v, sizeof v, T_NS), RK_OK);
    assert_true(v < 200);
    assert_int_equal(m.env.correlation_id, ids[v]);
    assert_int_equal(seen[v]++, 0); /* exactly once */
    got++;
  }
  rk_kernel_destroy(k);
}

typedef struct caller {
  rk_kernel *k;
  int id, errors;
} caller;

static void caller_main(void *arg) {
  caller *c = (caller *)arg;
  int i;
  for (i = 0; i < 200; i++) {
    uint32_t req[2] = {(uint32_t)c->id, (uint32_t)i}, rep[2];
    rk_msg m;
    if (rk_call(c->k, 9, req, sizeof req, &m, rep, sizeof rep, T_NS) != RK_OK || rep[0] != req[0] || rep[1] != req[1])
      c->errors++;
  }
}

static void concurrent_callers(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 4, 32, 0, RK_BACKPRESSURE_DEFAULT);
  uv_thread_t t[4];
  caller c[4];
  int i;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 4; i++) {
    c[i].k = k;
    c[i].id = i;
    c[i].errors = 0;
    assert_int_equal(uv_thread_create(&t[i], caller_main, &c[i]), 0);
  }
  for (i = 0; i < 4; i++) {
    uv_thread_join(&t[i]);
    assert_int_equal(c[i].errors, 0);
  }
  rk_kernel_destroy(k);
}

static void backpressure_and_terminate_drain(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 1, 32, 64, RK_BACKPRESSURE_REJECT);
  rk_msg m;
  uint32_t i, v, got = 0;
  (void)state;
  for (i = 0; i < 64; i++) assert_int_equal(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_OK); /* not active */
  assert_int_equal(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_EAGAIN);
  assert_int_equal(rk_kernel_terminate(k, T_NS), RK_OK); /* drains all 64 */
  assert_int_equal(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_ECLOSED);
  while (rk_recv(k, &m, &v, sizeof v, T_NS) == RK_OK) {
    assert_int_equal(v, got);
    got++;
  }
  assert_int_equal(got, 64);
  rk_kernel_destroy(k);
}

static void state_survives_deactivate(void **state) {
  rk_kernel *k = launch(&rk_builtin_counter, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  rk_counter_add a;
  rk_counter_value v;
  rk_msg m;
  uint64_t last = 0;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  a.delta = 5;
  assert_int_equal(rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 5);
  last = v.stamp;
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  a.delta = 7;
  assert_int_equal(rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 12);
  assert_int_equal(v.count, 2);
  assert_true(v.stamp > last);
  rk_kernel_destroy(k);
}

static void vector_add_cooperative(void **state) {
  rk_kernel *k = launch(&rk_builtin_vector_add, 1, 4, 0, RK_BACKPRESSURE_DEFAULT);
  rk_vadd_req r;
  rk_vadd_reply out;
  rk_msg m;
  uint32_t i;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  memset(&r, 0, sizeof r);
  r.n = RK_VADD_MAX;
  for (i = 0; i < RK_VADD_MAX; i++) {
    r.a[i] = (float)i;
    r.b[i] = 100.0f * (float)i;
  }
  assert_int_equal(rk_call_typed(k, rk_vadd_req, &r, &m, &out, sizeof out, T_NS), RK_OK);
  for (i = 0; i < RK_VADD_MAX; i++) assert_true(out.c[i] == 101.0f * (float)i);
  rk_kernel_destroy(k);
}

static void nvrtc_kernel_end_to_end(void **state) {
  rk_kernel_desc d;
  rk_kernel *k;
  rk_counter_add a;
  rk_counter_value v;
  rk_msg m;
  static const rk_msg_type *const types[] = {&rk_counter_add_msgtype};
  (void)state;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "nvrtc_twice";
  d.cuda_source = rk_test_twice_src;
  d.cuda_handler = RK_TEST_TWICE_HANDLER;
  d.types = types;
  d.n_types = 1;
  k = launch(&d, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  a.delta = 21;
  assert_int_equal(rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 42);
  rk_kernel_destroy(k);
}

static void co_residency_refused(void **state) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  (void)state;
  lo.lanes = 64; /* at most RK_MAX_LANES per kernel: exhaust residency with several kernels */
  lo.threads_per_lane = 1024;
  lo.launch_timeout_ns = 2000000000ull;
  {
    rk_kernel *ks[64];
    int n = 0, rc = RK_OK;
    while (n < 64 && (rc = rk_kernel_launch(rt, &rk_builtin_echo, &lo, &ks[n])) == RK_OK) n++;
    assert_int_equal(rc, RK_ENORESOURCE); /* never a hang */
    while (n > 0) rk_kernel_destroy(ks[--n]);
  }
  /* the runtime is still usable */
  assert_int_equal(rk_kernel_launch(rt, &rk_builtin_echo, NULL, &k), RK_OK);
  rk_kernel_destroy(k);
}

/* The service loop re-measures the device clock (%globaltimer + offset) against CLOCK_REALTIME:
 * exchanges are accepted (lane 0 answers inside the 50 µs window) and the kernel's stamps never run
 * ahead of the host clock by more than the measurement error. */
static void clock_sync(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 2, 32, 0, RK_BACKPRESSURE_DEFAULT);
  rk_kernel_counters st;
  rk_msg m;
  uint32_t v = 1, back = 0;
  int i;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 2000; i++) { /* the suite runs exchanges every 10 ms: expect 4 within 2 s */
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    assert_int_equal(rk_kernel_stats(k, &st), RK_OK);
    if (st.clock_syncs >= 4) break;
    uv_sleep(1);
  }
  printf("clock: %llu syncs, %llu misses, offset %lld ns, window %llu ns\n", (unsigned long long)st.clock_syncs,
         (unsigned long long)st.clock_sync_misses, (long long)st.clock_offset_ns,
         (unsigned long long)st.clock_sync_window_ns);
  assert_true(st.clock_syncs >= 4);
  assert_true(st.clock_sync_window_ns <= 50000);
  for (i = 0; i < 100; i++) {
    assert_int_equal(rk_call(k, 9, &v, sizeof v, &m, &back, sizeof back, T_NS), RK_OK);
    /* the reply's physical part is the device clock (or a later merged stamp): not in the future */
    assert_true(rk_hlc_physical(m.env.hlc) <= rk_realtime_us() + 100);
  }
  assert_int_equal(rk_kernel_terminate(k, T_NS), RK_OK);
  rk_kernel_destroy(k);
}

int main(void) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  int rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lifecycle),
      cmocka_unit_test(call_and_recv),
      cmocka_unit_test(concurrent_callers),
      cmocka_unit_test(backpressure_and_terminate_drain),
      cmocka_unit_test(state_survives_deactivate),
      cmocka_unit_test(vector_add_cooperative),
      cmocka_unit_test(nvrtc_kernel_end_to_end),
      cmocka_unit_test(co_residency_refused),
      cmocka_unit_test(clock_sync),
  };
  o.backend = RK_BACKEND_CUDA;
  o.log_level = RK_LOG_ERROR;
  o.watchdog_interval_ns = 10000000;   /* clock exchanges every 10 ms, for clock_sync */
  o.clock_sync_interval_ns = 10000000;
  if ((rc = rk_runtime_create(&rt, &o)) != RK_OK) {
    printf("skipped: no usable CUDA device (%s)\n", rk_err_name(rc));
    return 77;
  }
  printf("backend: %s\n", rk_runtime_backend_reason(rt));
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  rk_runtime_destroy(rt);
  return rc;
}
