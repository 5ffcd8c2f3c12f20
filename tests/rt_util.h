/* rt_util.h — helpers shared by the runtime and CPU-backend tests (test_lifecycle, test_messaging,
 * ...): a quiet log sink that counts what the runtime reported, runtime and kernel set-up with
 * checked results, bounded waits on a condition (hang checks, never performance assertions),
 * stats snapshots, and a small echo-like handler family the tests build on.
 *
 * cmocka's prerequisite headers come first (it needs stdarg/stddef/setjmp before cmocka.h). */
#ifndef RK_RT_UTIL_H
#define RK_RT_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the four above first. */
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ringkernel.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define RT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define RT_SANITIZED 1
#endif
#endif
#ifndef RT_SANITIZED
#define RT_SANITIZED 0
#endif

#define RT_MS 1000000ll
#define RT_SEC 1000000000ll
/* Generous bound for anything that should happen "promptly": a hang check, not a timing claim. */
#define RT_HANG (10 * RT_SEC)
/* The watchdog's stall bound in the tests that do not test it (rt_options; the watchdog's own
 * tests set theirs): a loaded machine (load 15 to 66 on 2 cores) can keep a lane that has work from
 * running for seconds, and the default bound (2 s) then faults a kernel that was merely not
 * scheduled (as test_devemu's EMU_STALL_NS says of the emulated lanes). */
#define RT_STALL (60 * RT_SEC)

static inline uint64_t rt_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void rt_sleep_ms(unsigned ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000l;
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* ---------------------------------------- logging -------------------------------------------- */

/* Counts of what the runtime logged, per level; the last error-level message. Tests that provoke
 * failures on purpose keep stderr clean, and some assert that a warning was (or was not) logged. */
typedef struct rt_log {
  pthread_mutex_t lock;
  unsigned count[4];
  char last[512];
  int echo; /* print everything to stderr too (debugging) */
} rt_log;

static inline void rt_log_sink(void *user, rk_log_level level, const char *message) {
  rt_log *l = (rt_log *)user;
  pthread_mutex_lock(&l->lock);
  if ((unsigned)level < 4) l->count[level]++;
  if (level <= RK_LOG_WARN) snprintf(l->last, sizeof l->last, "%s", message);
  if (l->echo) fprintf(stderr, "[rk %d] %s\n", (int)level, message);
  pthread_mutex_unlock(&l->lock);
}

static inline unsigned rt_log_count(rt_log *l, rk_log_level level) {
  unsigned n;
  pthread_mutex_lock(&l->lock);
  n = l->count[level];
  pthread_mutex_unlock(&l->lock);
  return n;
}

/* One log per test executable: runtimes are created and destroyed per test, the sink outlives
 * them. */
static rt_log rt_the_log = {PTHREAD_MUTEX_INITIALIZER, {0, 0, 0, 0}, "", 0};

/* ---------------------------------------- set-up --------------------------------------------- */

static inline rk_runtime_options rt_options(void) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  o.backend = RK_BACKEND_CPU; /* this suite tests the CPU backend, GPU or not */
  o.log = rt_log_sink;
  o.log_user = &rt_the_log;
  o.log_level = RK_LOG_WARN;
  o.watchdog_stall_ns = RT_STALL;
  o.command_timeout_ns = RT_STALL; /* activate/deactivate: the same reason (test_lifecycle tests the option) */
  if (getenv("RT_LOG")) rt_the_log.echo = 1;
  return o;
}

static inline rk_runtime *rt_create_opts(const rk_runtime_options *o) {
  rk_runtime *rt = NULL;
  int rc = rk_runtime_create(&rt, o);
  assert_int_equal(rc, RK_OK);
  assert_non_null(rt);
  return rt;
}

static inline rk_runtime *rt_create(void) {
  rk_runtime_options o = rt_options();
  return rt_create_opts(&o);
}

static inline rk_kernel *rt_launch(rk_runtime *rt, const rk_kernel_desc *d, const rk_launch_options *lo) {
  rk_kernel *k = NULL;
  int rc = rk_kernel_launch(rt, d, lo, &k);
  if (rc != RK_OK) print_error("launch failed: %s: %s\n", rk_err_name(rc), rk_runtime_last_error(rt));
  assert_int_equal(rc, RK_OK);
  assert_non_null(k);
  assert_int_equal(rk_kernel_state(k), RK_STATE_LAUNCHED);
  return k;
}

static inline rk_kernel *rt_launch_active(rk_runtime *rt, const rk_kernel_desc *d, const rk_launch_options *lo) {
  rk_kernel *k = rt_launch(rt, d, lo);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  return k;
}

static inline rk_kernel_counters rt_stats(rk_kernel *k) {
  rk_kernel_counters st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(rk_kernel_stats(k, &st), RK_OK);
  return st;
}

/* No stamp k received was refused by the drift bound (clock_rejected 0). Every clock in a test
 * that expects no refusal is this host's, so a refusal is a message lost silently: a wrong clock
 * calibration (a device lane's offset), caught here rather than as a missing count. */
static inline void rt_no_clock_refusals(rk_kernel *k) {
  rk_kernel_counters st = rt_stats(k);
  if (st.clock_rejected)
    fail_msg("kernel %u refused %llu stamps as too far ahead (clock offset %lld ns, window %llu ns, %llu syncs, "
             "%llu misses)", rk_kernel_id(k), (unsigned long long)st.clock_rejected, (long long)st.clock_offset_ns,
             (unsigned long long)st.clock_sync_window_ns, (unsigned long long)st.clock_syncs,
             (unsigned long long)st.clock_sync_misses);
}

/* rt_no_clock_refusals for the kernels of graph g's nodes 0 to n - 1. */
static inline void rt_graph_no_clock_refusals(rk_graph *g, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) rt_no_clock_refusals(rk_graph_kernel(g, i));
}

/* Poll pred(arg) every millisecond until it holds or `ns` passed; returns whether it held. */
static inline int rt_wait_for(int (*pred)(void *), void *arg, int64_t ns) {
  uint64_t start = rt_now_ns();
  for (;;) {
    if (pred(arg)) return 1;
    if ((int64_t)(rt_now_ns() - start) >= ns) return pred(arg);
    rt_sleep_ms(1);
  }
}

/* A handler that holds its lane until the test lets it go (a lane that cannot acknowledge a
 * command or finish a terminate): rt_hold_close() before the message is sent, rt_held_entered as
 * the rt_wait_for predicate for "the handler is running", rt_hold_open() to let it return. One
 * gate per test program (its state: rt_hold_state). Atomics: release/acquire pairs between the
 * test's stores and the handler's loads, and back for "entered". */
static inline volatile int *rt_hold_state(void) {
  static volatile int st[2]; /* [0] closed, [1] a handler entered */
  return st;
}
static inline void rt_hold_close(void) {
  __atomic_store_n(&rt_hold_state()[1], 0, __ATOMIC_RELEASE);
  __atomic_store_n(&rt_hold_state()[0], 1, __ATOMIC_RELEASE);
}
static inline void rt_hold_open(void) { __atomic_store_n(&rt_hold_state()[0], 0, __ATOMIC_RELEASE); }
static inline int rt_held_entered(void *arg) {
  (void)arg;
  return __atomic_load_n(&rt_hold_state()[1], __ATOMIC_ACQUIRE);
}
static inline int rt_held(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx, (void)in;
  __atomic_store_n(&rt_hold_state()[1], 1, __ATOMIC_RELEASE);
  while (__atomic_load_n(&rt_hold_state()[0], __ATOMIC_ACQUIRE)) rt_sleep_ms(1);
  return 0;
}

/* A terminate on a thread of its own, for a test that does meanwhile what the terminate waits for:
 * rt_terminate_start runs rk_graph_terminate(g, timeout_ns) when g is not NULL, else
 * rk_kernel_terminate(k, timeout_ns); rt_terminate_join waits for it and returns its result. */
typedef struct rt_terminator {
  rk_graph *g;
  rk_kernel *k;
  int64_t timeout_ns;
  int rc;
  pthread_t th;
} rt_terminator;

static inline void *rt_terminator_run(void *arg) {
  rt_terminator *t = (rt_terminator *)arg;
  t->rc = t->g ? rk_graph_terminate(t->g, t->timeout_ns) : rk_kernel_terminate(t->k, t->timeout_ns);
  return NULL;
}

static inline void rt_terminate_start(rt_terminator *t, rk_graph *g, rk_kernel *k, int64_t timeout_ns) {
  t->g = g;
  t->k = k;
  t->timeout_ns = timeout_ns;
  t->rc = 1;
  assert_int_equal(pthread_create(&t->th, NULL, rt_terminator_run, t), 0);
}

static inline int rt_terminate_join(rt_terminator *t) {
  assert_int_equal(pthread_join(t->th, NULL), 0);
  return t->rc;
}

/* Wait until a stats field reaches at least `want`, failing after `ns` (a hang check). */
#define RT_WAIT_STAT_NS(k, field, want, ns)                                                      \
  do {                                                                                           \
    uint64_t rt_start_ = rt_now_ns();                                                            \
    for (;;) {                                                                                   \
      rk_kernel_counters rt_st_ = rt_stats(k);                                                   \
      if (rt_st_.field >= (uint64_t)(want)) break;                                               \
      if ((int64_t)(rt_now_ns() - rt_start_) > (int64_t)(ns))                                    \
        fail_msg("timed out waiting for %s >= %llu (is %llu)", #field, (unsigned long long)(want), \
                 (unsigned long long)rt_st_.field);                                              \
      rt_sleep_ms(1);                                                                            \
    }                                                                                            \
  } while (0)

/* Wait until a stats field reaches at least `want` (hang-checked). */
#define RT_WAIT_STAT(k, field, want) RT_WAIT_STAT_NS(k, field, want, RT_HANG)

/* The bound for waiting on accepted clock exchanges (clock_syncs). One is accepted only when lane 0
 * answers within 50 us; on a loaded machine most miss (2 accepted in 10 s under ASan at load average
 * 30-48; none in 10 s under TSan at load ~21), so the wait is generous (RT_WAIT_STAT's 10 s were
 * not): a hang still fails, a slow machine does not. */
#define RT_SYNC_WAIT_NS (12 * RT_HANG)

/* Assert an RK_* result with the runtime's detail on failure. */
#define RT_OK(rt, call)                                                                      \
  do {                                                                                       \
    int rt_rc_ = (call);                                                                     \
    if (rt_rc_ < 0)                                                                          \
      fail_msg("%s = %s (%s)", #call, rk_err_name(rt_rc_), rk_runtime_last_error(rt));       \
  } while (0)

/* The payload of the test messages most tests exchange: who sent it and its sequence. */
typedef struct rt_item {
  uint32_t who;
  uint32_t seq;
  uint64_t key;
  uint64_t stamp; /* filled by some handlers: the request's HLC stamp as the kernel saw it */
  uint32_t lane;  /* filled by some handlers: the lane that handled it */
  uint32_t thread_mask;
} rt_item;

#define RT_ITEM_TYPE 7u

static inline rk_kernel_desc rt_desc(const char *name, rk_handler_fn fn) {
  rk_kernel_desc d;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = name;
  d.handler = fn;
  return d;
}

/* rt_item echo that fills in the request's stamp and the lane (the handler is the kernel's view of
 * the message). Any other payload is echoed unchanged. */
static inline int rt_item_echo(rk_ctx *ctx, const rk_msg *in) {
  if (rk_msg_type_of(in) == RT_ITEM_TYPE && rk_msg_len(in) == sizeof(rt_item)) {
    rt_item it;
    memcpy(&it, rk_msg_payload(in), sizeof it);
    it.stamp = rk_msg_stamp(in);
    it.lane = rk_lane(ctx);
    return rk_reply(ctx, RT_ITEM_TYPE, &it, sizeof it);
  }
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

/* The latency histogram's check (test_telemetry's test_latency_clock, test_tsc's test_tsc_latency):
 * a kernel of rt_sleepy_echo, whose handler sleeps 2 ms before it echoes, and n rk_calls on it:
 * every sample must land at 2^20 ns (1.05 ms) or above, and their sum lie between n * 2 ms and the
 * calls' own elapsed time by CLOCK_MONOTONIC plus 1 %. A latency clock off by 2x either way, or a
 * reading taken outside the call, fails it. A lower bound from the handler's own sleep and an
 * upper bound from the test's clock, never a bound on the library's speed. */
static inline int rt_sleepy_echo(rk_ctx *ctx, const rk_msg *in) {
  struct timespec ts = {0, 2000000};
  while (nanosleep(&ts, &ts) != 0) {
  }
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

static inline void rt_latency_calls(rk_runtime *rt, rk_kernel *k, uint32_t n) {
  rk_kernel_counters st;
  uint32_t i, x;
  uint64_t t0, t1;
  struct timespec ts;
  rk_msg m;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  t0 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  for (i = 0; i < n; i++) RT_OK(rt, rk_call(k, 1, &i, sizeof i, &m, &x, sizeof x, RT_HANG));
  clock_gettime(CLOCK_MONOTONIC, &ts);
  t1 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  st = rt_stats(k);
  assert_int_equal(st.latency_count, n);
  for (i = 0; i < 20; i++)
    if (st.latency_hist[i] != 0) fail_msg("%llu samples below 2^20 ns in bucket %u", (unsigned long long)st.latency_hist[i], i);
  if (st.latency_sum_ns < (uint64_t)n * 2000000u)
    fail_msg("latency sum %llu ns below %u calls of a 2 ms handler", (unsigned long long)st.latency_sum_ns, n);
  if (st.latency_sum_ns > (t1 - t0) + (t1 - t0) / 100)
    fail_msg("latency sum %llu ns exceeds the calls' elapsed %llu ns", (unsigned long long)st.latency_sum_ns,
             (unsigned long long)(t1 - t0));
}

#endif /* RK_RT_UTIL_H */
