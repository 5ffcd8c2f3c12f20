/* test_clock_sync.c — the periodic clock exchange between the service loop and lane 0
 * (src/host/kernel.c, rk__clock_sync). On the CPU backend the lane's clock is the host's own
 * CLOCK_REALTIME, so every accepted measurement must satisfy |offset| <= window / 2: lane 0 read its
 * clock after the host's first reading and before its last. An exchange that read a stale sample
 * (one answered earlier) or got the midpoint wrong breaks that bound by far more than a window.
 * The CUDA backend runs the same host code against %globaltimer. */
#include "rt_util.h"

static void assert_offset_bounded(rk_kernel *k) {
  rk_kernel_counters st = rt_stats(k); /* one exchange's offset and window (read under its lock) */
  int64_t off = st.clock_offset_ns, bound = (int64_t)(st.clock_sync_window_ns / 2) + 1;
  if (off < -bound || off > bound)
    fail_msg("clock offset %lld ns outside +-%lld ns (window %llu ns, sync %llu)", (long long)off,
             (long long)bound, (unsigned long long)st.clock_sync_window_ns, (unsigned long long)st.clock_syncs);
}

static rk_runtime_options fast_sync(uint64_t interval_ns) {
  rk_runtime_options o = rt_options();
  o.watchdog_interval_ns = 1000000; /* the exchange is checked on the watchdog timer */
  o.clock_sync_interval_ns = interval_ns;
  return o;
}

/* Launch calibrates with a synchronous exchange once every lane checked in (up to 4 tries, each
 * counted as a miss when dropped), so its window is an exchange's (at most 50 us); only if every
 * try missed is the coarse window of the whole start used. */
static void test_launch_calibrates(void **state) {
  rk_runtime_options o = fast_sync(UINT64_MAX); /* only at launch */
  rk_runtime *rt = rt_create_opts(&o);
  rk_kernel *k = rt_launch(rt, &rk_builtin_echo, NULL);
  rk_kernel_counters st = rt_stats(k);
  uint64_t misses = st.clock_sync_misses;
  (void)state;
  assert_int_equal(st.clock_syncs, 1);
  assert_true(st.clock_sync_window_ns > 0);
  assert_true(misses <= 4);
  if (misses < 4 && st.clock_sync_window_ns > 50000)
    fail_msg("launch calibrated with a %llu ns window after %llu missed exchanges: not an exchange's",
             (unsigned long long)st.clock_sync_window_ns, (unsigned long long)misses);
  assert_offset_bounded(k);
  rt_sleep_ms(30); /* thirty timer ticks: none may start an exchange */
  st = rt_stats(k);
  assert_int_equal(st.clock_syncs, 1);
  assert_int_equal(st.clock_sync_misses, misses);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Exchanges go on in every resident state (lane 0 parked, busy, inactive), each within bound, and
 * stop once the kernel terminated. */
static void test_periodic_in_every_state(void **state) {
  rk_runtime_options o = fast_sync(1000000);
  rk_runtime *rt = rt_create_opts(&o);
  rk_kernel_desc d = rk_builtin_echo;
  rk_kernel *k;
  rk_msg m;
  uint32_t i = 0, x;
  uint64_t n;
  char *json;
  int len;
  (void)state;
  d.lanes = 2;
  k = rt_launch(rt, &d, NULL);
  RT_WAIT_STAT_NS(k, clock_syncs, 4, RT_SYNC_WAIT_NS); /* LAUNCHED: lane 0 parked, woken by the request */
  assert_offset_bounded(k);

  assert_int_equal(rk_kernel_activate(k), RK_OK);
  n = rt_stats(k).clock_syncs;
  for (;;) { /* under traffic: lane 0 answers between batches */
    RT_OK(rt, rk_call(k, 1, &i, sizeof i, &m, &x, sizeof x, RT_HANG));
    assert_int_equal(x, i);
    i++;
    if (rt_stats(k).clock_syncs >= n + 4) break;
    if (i > 50000000u) fail_msg("no clock exchange completed under traffic");
  }
  assert_offset_bounded(k);

  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  n = rt_stats(k).clock_syncs;
  RT_WAIT_STAT_NS(k, clock_syncs, n + 4, RT_SYNC_WAIT_NS);
  assert_offset_bounded(k);

  json = (char *)malloc(1 << 16);
  assert_non_null(json);
  len = rk_runtime_stats_json(rt, json, 1 << 16);
  assert_true(len > 0 && len < (1 << 16));
  assert_non_null(strstr(json, "\"clock\":{\"offset_ns\":"));
  free(json);

  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  n = rt_stats(k).clock_syncs;
  rt_sleep_ms(30);
  assert_int_equal(rt_stats(k).clock_syncs, n); /* no exchange with lanes that exited */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A lane 0 stuck in a handler cannot answer: the exchange is dropped (counted), never waited for,
 * and the next ones succeed once the handler returns. */
static volatile int g_block = 0;

static int blocking_echo(rk_ctx *ctx, const rk_msg *in) {
  if (rk_msg_type_of(in) == 99) {
    while (__atomic_load_n(&g_block, __ATOMIC_ACQUIRE)) rt_sleep_ms(1);
    return RK_OK;
  }
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

static void test_busy_lane_misses(void **state) {
  rk_runtime_options o = fast_sync(1000000);
  rk_runtime *rt = rt_create_opts(&o);
  rk_kernel_desc d = rt_desc("blocker", blocking_echo);
  rk_kernel *k;
  uint64_t n;
  (void)state;
  k = rt_launch_active(rt, &d, NULL);
  RT_WAIT_STAT_NS(k, clock_syncs, 2, RT_SYNC_WAIT_NS);
  __atomic_store_n(&g_block, 1, __ATOMIC_RELEASE);
  RT_OK(rt, rk_send(k, 99, NULL, 0, 0, NULL));
  n = rt_stats(k).clock_sync_misses;
  RT_WAIT_STAT_NS(k, clock_sync_misses, n + 2, RT_SYNC_WAIT_NS);
  __atomic_store_n(&g_block, 0, __ATOMIC_RELEASE);
  n = rt_stats(k).clock_syncs;
  RT_WAIT_STAT_NS(k, clock_syncs, n + 2, RT_SYNC_WAIT_NS);
  assert_offset_bounded(k);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_launch_calibrates),
      cmocka_unit_test(test_periodic_in_every_state),
      cmocka_unit_test(test_busy_lane_misses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
