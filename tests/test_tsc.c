/* test_tsc.c — the time-stamp counter as a clock (src/host/tsc.c, issue 16): whether it is used,
 * its factor against CLOCK_MONOTONIC, the send stamp's CLOCK_REALTIME extrapolated from it (alone
 * and from several threads at once, while its anchors are replaced), and rk_call's latency
 * samples taken with it. Every bound is on the clock's agreement with the kernel's clocks, read
 * here independently; none is on the library's speed. The library's per-thread counts of its uses
 * of the counter (rk__tsc_tl_*) say which clock each reading and sample came from. TSan sees
 * atomics only (no race report is possible) and ignores fences: the threads' test checks the
 * readings themselves. STATIC: rk__tsc_* are internal. */
#include "rt_util.h"

#include "host/internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t real_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The test's own answer to "should the library use the counter here?" (tsc.c's rule: invariant
 * TSC and the kernel keeping time with it), read independently of the library. */
static int tsc_expected(void) {
#if defined(__x86_64__)
  unsigned a, b, c, d;
  char buf[32] = {0};
  FILE *f;
  if (__get_cpuid(0x80000000u, &a, &b, &c, &d) == 0 || a < 0x80000007u) return 0;
  if (__get_cpuid(0x80000007u, &a, &b, &c, &d) == 0 || !(d & (1u << 8))) return 0;
  f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
  if (f == NULL) return 0;
  if (fgets(buf, sizeof buf, f) == NULL) buf[0] = 0;
  fclose(f);
  return strcmp(buf, "tsc\n") == 0 || strcmp(buf, "tsc") == 0;
#else
  return 0;
#endif
}

/* The counter and CLOCK_MONOTONIC read together: retried while a preemption puts more than
 * ~10 us (25,000 ticks at up to 2.5 GHz) between the counter's reads around the clock's. */
static void pair(uint64_t *tsc, uint64_t *ns) {
  int i;
  for (i = 0; i < 1000; i++) {
    uint64_t a = rk__tsc_read(), n = mono_ns(), b = rk__tsc_read();
    if (b >= a && b - a < 25000) {
      *tsc = a + (b - a) / 2;
      *ns = n;
      return;
    }
  }
  fail_msg("1000 readings of the counter and CLOCK_MONOTONIC all split by preemption");
}

/* A runtime whose service loop measures the factor every 5 ms; waits (bounded) for a factor when
 * the counter is to be used. Returns the runtime (the caller destroys it). */
static rk_runtime *calibrated(void) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  uint64_t until = mono_ns() + (uint64_t)RT_HANG;
  o.watchdog_interval_ns = 5000000;
  rt = rt_create_opts(&o);
  if (tsc_expected())
    while (rk__tsc_mult() == 0 && mono_ns() < until) rt_sleep_ms(5);
  return rt;
}

/* Used exactly where the rule says, and then scaled right: a sleep's length by the counter's ticks
 * and the factor agrees with CLOCK_MONOTONIC's to 0.5 % (a factor from a window of 10 ms or more:
 * tsc.c). Elsewhere the factor stays 0 and every latency sample and send stamp reads the clocks. */
static void test_tsc_factor(void **state) {
  rk_runtime *rt = calibrated();
  uint64_t mult = rk__tsc_mult();
  (void)state;
  if (!tsc_expected()) {
    assert_int_equal(mult, 0);
    rk_runtime_destroy(rt);
    return;
  }
  if (mult == 0) fail_msg("no factor within %lld ms although the TSC is invariant and the clocksource", RT_HANG / RT_MS);
  {
    uint64_t t0, n0, t1, n1, by_tsc, by_clock;
    pair(&t0, &n0);
    rt_sleep_ms(50);
    pair(&t1, &n1);
    by_tsc = rk__tsc_ns(t1 - t0, rk__tsc_mult());
    by_clock = n1 - n0;
    /* each pair's two readings within ~10 us of each other (pair): 0.5 % of 50 ms is 250 us */
    if (by_tsc > by_clock + by_clock / 200 || by_tsc + by_clock / 200 < by_clock)
      fail_msg("50 ms by the counter: %llu ns, by CLOCK_MONOTONIC: %llu ns", (unsigned long long)by_tsc,
               (unsigned long long)by_clock);
  }
  rk_runtime_destroy(rt);
}

/* Each extrapolated reading lies between precise CLOCK_REALTIME readings taken just before and
 * just after it, to 2 us (the extrapolation's error bound in tsc.c is 0.5 us plus the truncation
 * to whole us), over 30 ms: about 30 anchors replaced on the way. */
static uint64_t realtime_check(uint64_t ms, uint64_t *anchors) {
  uint64_t n = 0, end = mono_ns() + ms * 1000000u, x0 = rk__tsc_tl_extrapolated, x;
  int used = rk__tsc_mult() != 0;
  while (mono_ns() < end) {
    uint64_t before = real_us(), r = rk__tsc_realtime_us(), after = real_us();
    if (r + 2 < before || r > after + 2)
      fail_msg("reading %llu: %llu us, outside [%llu, %llu] us by more than 2 us", (unsigned long long)n,
               (unsigned long long)r, (unsigned long long)before, (unsigned long long)after);
    n++;
  }
  /* the counter in use: nearly every reading extrapolated (a new anchor every 1 ms is a fresh
   * clock_gettime; and where a preemption split the anchor's pair, more); else none */
  x = rk__tsc_tl_extrapolated - x0;
  if (used && x < n * 9 / 10)
    fail_msg("%llu of %llu readings extrapolated from the counter", (unsigned long long)x, (unsigned long long)n);
  if (!used) assert_int_equal(x, 0);
  if (anchors) *anchors = rk__tsc_anchors();
  return n;
}

static void test_tsc_realtime(void **state) {
  rk_runtime *rt = calibrated();
  uint64_t a0 = rk__tsc_anchors(), a1 = 0, n;
  (void)state;
  n = realtime_check(30, &a1);
  assert_true(n > 1000);
  /* the counter in use: anchors replaced as they aged (1 ms each), not on every reading, and the
   * generation never going back */
  if (rk__tsc_mult() != 0 && ((int64_t)(a1 - a0) < 5 || (int64_t)(a1 - a0) > 70))
    fail_msg("%lld anchors in 30 ms of readings (1 per ms expected)", (long long)(a1 - a0));
  rk_runtime_destroy(rt);
}

static void *realtime_thread(void *arg) {
  (void)arg;
  (void)realtime_check(100, NULL);
  return NULL;
}

/* Four threads reading at once while the anchors are replaced under them: every reading still
 * within the bound (a torn anchor would put one off by far more). */
static void test_tsc_realtime_threads(void **state) {
  rk_runtime *rt = calibrated();
  pthread_t t[4];
  int i;
  (void)state;
  for (i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, realtime_thread, NULL), 0);
  for (i = 0; i < 4; i++) pthread_join(t[i], NULL);
  rk_runtime_destroy(rt);
}

/* rk_call's latency samples when the counter is their clock (the fast path's start and end,
 * drain_own): rt_latency_calls' bounds (each call's handler sleeps 2 ms; a factor off by 2x either
 * way, or ticks counted from the wrong reading, fails them), and every sample taken with the
 * counter where it is in use (each call finds the outbox free: its fast path), none elsewhere. */
static void test_tsc_latency(void **state) {
  rk_runtime *rt = calibrated();
  rk_kernel_desc d = rt_desc("sleepy", rt_sleepy_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  uint64_t s0 = rk__tsc_tl_samples;
  int used = rk__tsc_mult() != 0;
  (void)state;
  rt_latency_calls(rt, k, 30);
  assert_int_equal(rk__tsc_tl_samples - s0, used ? 30 : 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tsc_factor),
      cmocka_unit_test(test_tsc_realtime),
      cmocka_unit_test(test_tsc_realtime_threads),
      cmocka_unit_test(test_tsc_latency),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
