/* test_tsc.c — the time-stamp counter as a clock (src/host/tsc.c, issue 16): whether it is used,
 * its factor against CLOCK_MONOTONIC, the send stamp's CLOCK_REALTIME extrapolated from it (alone
 * and from several threads at once, while its anchors are replaced), and rk_call's latency
 * samples taken with it. Every bound is on the clock's agreement with the kernel's clocks, read
 * here independently; none is on the library's speed. The anchors published and the lane's count
 * of samples timed with the counter say which clock was used. TSan sees atomics only (no race
 * report is possible) and ignores fences: the threads' test checks the readings themselves. Not
 * covered here: the calibration's confirmation of a factor, its reaction to clock jumps and to the
 * kernel dropping the TSC, the fork handler, the writers' race on a stale generation (a window of a
 * few stores: docs/design-notes.md, "An rk_call round trip, eighth step"). STATIC: internal. */
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
 * just after it, to 4 us (the extrapolation's error in tsc.c: the slew's change over 1 ms, the
 * anchor pair's spread, the factor's tolerance, the truncation to whole us; a factor 1 % off is
 * 10 us at an anchor's end). Readings until at least `ms` have passed, 2,000 readings were taken
 * and 10 anchors replaced, bounded by RT_HANG: bounds on CPU time a loaded machine gives the thread
 * would fail spuriously. Returns the readings outside the bound (a worker thread cannot fail_msg:
 * cmocka's jump buffer is the main thread's); *n: readings, *anchors: anchors published meanwhile. */
typedef struct rt_check {
  uint64_t ms, n, bad, anchors, elapsed_ms, first_bad, first_before, first_after;
} rt_check;

static void realtime_check(rt_check *c) {
  uint64_t start = mono_ns(), a0 = rk__tsc_anchors(), now = start;
  int used = rk__tsc_mult() != 0;
  c->n = c->bad = 0;
  while (now - start < c->ms * 1000000u || c->n < 2000 || (used && rk__tsc_anchors() - a0 < 10)) {
    uint64_t before = real_us(), r = rk__tsc_realtime_us(), after = real_us();
    if (r + 4 < before || r > after + 4) {
      if (c->bad++ == 0) {
        c->first_bad = r;
        c->first_before = before;
        c->first_after = after;
      }
    }
    c->n++;
    if ((now = mono_ns()) - start > (uint64_t)RT_HANG) break;
  }
  c->anchors = rk__tsc_anchors() - a0;
  c->elapsed_ms = (now - start) / 1000000u + 1;
}

/* (on the main thread: fail_msg needs cmocka's jump buffer) who: "" or the thread's name */
static void realtime_bounds(const rt_check *c, const char *who) {
  if (c->bad)
    fail_msg("%s%llu of %llu readings more than 4 us outside their brackets, the first %llu us in [%llu, %llu]",
             who, (unsigned long long)c->bad, (unsigned long long)c->n, (unsigned long long)c->first_bad,
             (unsigned long long)c->first_before, (unsigned long long)c->first_after);
}

static void realtime_verdict(const rt_check *c) {
  realtime_bounds(c, "");
  if (rk__tsc_mult() == 0) return;
  /* the counter in use: anchors replaced as they aged (1 ms each), not on every reading (one per
   * reading would be thousands), and the generation never behind where it started (signed) */
  if ((int64_t)c->anchors < 10 || (int64_t)c->anchors > (int64_t)(2 * c->elapsed_ms + 10))
    fail_msg("%lld anchors in %llu ms of %llu readings (about 1 per ms expected)", (long long)c->anchors,
             (unsigned long long)c->elapsed_ms, (unsigned long long)c->n);
}

static void test_tsc_realtime(void **state) {
  rk_runtime *rt = calibrated();
  rt_check c = {30, 0, 0, 0, 0, 0, 0, 0};
  (void)state;
  realtime_check(&c);
  realtime_verdict(&c);
  rk_runtime_destroy(rt);
}

static void *realtime_thread(void *arg) {
  realtime_check((rt_check *)arg);
  return NULL;
}

/* Four threads reading at once while the anchors are replaced under them: every reading still
 * within the bound (a torn anchor would put one off by far more). */
static void test_tsc_realtime_threads(void **state) {
  rk_runtime *rt = calibrated();
  pthread_t t[4];
  rt_check c[4];
  int i;
  (void)state;
  for (i = 0; i < 4; i++) {
    memset(&c[i], 0, sizeof c[i]);
    c[i].ms = 100;
    assert_int_equal(pthread_create(&t[i], NULL, realtime_thread, &c[i]), 0);
  }
  for (i = 0; i < 4; i++) pthread_join(t[i], NULL);
  for (i = 0; i < 4; i++) {
    char who[16];
    snprintf(who, sizeof who, "thread %d: ", i);
    realtime_bounds(&c[i], who);
  }
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
  int used = rk__tsc_mult() != 0;
  (void)state;
  rt_latency_calls(rt, k, 30);
  /* the lane's count of samples timed with the counter (host/internal.h; one lane) */
  assert_int_equal(__atomic_load_n(&k->lane[0].rx_tsc_samples, __ATOMIC_RELAXED), used ? 30 : 0);
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
