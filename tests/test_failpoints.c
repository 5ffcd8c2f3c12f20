/* test_failpoints.c — failure injection (issue 11): the library's allocations, thread creations and
 * libuv resources fail on demand (src/host/failpoint.h), and every failure must give a clean
 * error, leak nothing (ASan's leak check at exit), hang nothing (every operation is timed against
 * RT_HANG) and leave the runtime usable (a kernel launched afterwards answers a call).
 *
 * - the sweep: for each operation (runtime creation with its own loop and with an application
 *   loop, launch, activate, call, rk_recv_start, restart, terminate, kernel and runtime destroy)
 *   and each kind of resource, fail the 1st, 2nd, ... call the operation makes, until the
 *   operation makes no more; the figures (points injected, survived) are printed;
 * - a lane of several threads whose second thread cannot start: launch returns RK_ESYS (it used to
 *   hang: the first thread waited at a barrier sized for all of them);
 * - persistent allocation failure while replies are queued: rk_call still gets its reply, which
 *   sits behind one that cannot be queued, and the log says so a few times, not millions;
 * - uv_async_init failing: the runtime is not created (its result used to be ignored);
 * - the log's rate limit.
 * White-box (host/internal.h, librk.a): the fail points are internal. */
#include "rt_util.h"

#include <uv.h>

#include "host/internal.h"

/* ---------------------------------------- fixture -------------------------------------------- */

typedef struct fixture {
  rk_runtime *rt;
  rk_kernel *k;
  uv_loop_t loop;
  int app_loop;
  int destroyed; /* the operation destroyed what it names */
} fixture;

static int init_state(void *state, size_t size, void *user) {
  (void)user;
  memset(state, 0x5a, size);
  return RK_OK;
}

static rk_kernel_desc rich_desc(void) {
  rk_kernel_desc d = rk_builtin_echo;
  d.lanes = 2;
  d.threads_per_lane = 3;
  d.state_size = 64;
  d.state_init = init_state;
  d.scratch_size = 32;
  return d;
}

static rk_runtime_options fixture_options(fixture *f) {
  rk_runtime_options o = rt_options();
  o.log_level = RK_LOG_ERROR; /* failures are expected: errors only, counted by the sink */
  if (f->app_loop) o.loop = &f->loop;
  return o;
}

static void fixture_runtime(fixture *f) {
  rk_runtime_options o = fixture_options(f);
  f->rt = rt_create_opts(&o);
}

static void fixture_kernel(fixture *f) {
  rk_kernel_desc d = rich_desc();
  fixture_runtime(f);
  f->k = rt_launch(f->rt, &d, NULL);
}

static void fixture_active(fixture *f) {
  fixture_kernel(f);
  assert_int_equal(rk_kernel_activate(f->k), RK_OK);
}

static void fixture_faulted(fixture *f) {
  fixture_active(f);
  rk__kernel_fault(f->k, RK_EHANDLER, "injected for the test");
}

static void fixture_teardown(fixture *f) {
  if (!f->destroyed) {
    rk_kernel_destroy(f->k);
    rk_runtime_destroy(f->rt);
  }
  if (f->app_loop) {
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0); /* the runtime's handles close */
    assert_int_equal(uv_loop_close(&f->loop), 0);          /* and nothing of it is left */
  }
}

/* The runtime is usable: a fresh kernel launches, activates and answers. */
static void check_usable(rk_runtime *rt) {
  rk_kernel *k;
  uint32_t x = 7, y = 0;
  rk_msg m;
  if (rt == NULL) return;
  k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  RT_OK(rt, rk_call(k, 1, &x, sizeof x, &m, &y, sizeof y, RT_HANG));
  assert_int_equal(y, 7);
  rk_kernel_destroy(k);
}

/* ---------------------------------------- operations ----------------------------------------- */

static int op_create(fixture *f) {
  rk_runtime_options o = fixture_options(f);
  return rk_runtime_create(&f->rt, &o);
}

static int op_launch(fixture *f) {
  rk_kernel_desc d = rich_desc();
  return rk_kernel_launch(f->rt, &d, NULL, &f->k);
}

static int op_activate(fixture *f) { return rk_kernel_activate(f->k); }

/* A reply queued for rk_recv (the call's drain moves it to the pending list), then a call. */
static int op_call(fixture *f) {
  uint32_t x = 1, y = 0;
  rk_msg m;
  int rc;
  RT_OK(f->rt, rk_send_key(f->k, 9, 1, &x, sizeof x, 0, NULL)); /* the same lane as the call */
  RT_WAIT_STAT(f->k, msgs_out, 1);
  x = 2;
  rc = rk_call_key(f->k, 9, 1, &x, sizeof x, &m, &y, sizeof y, RT_HANG);
  if (rc == RK_OK) assert_int_equal(y, 2);
  RT_OK(f->rt, rk_recv(f->k, &m, &y, sizeof y, RT_HANG)); /* never lost */
  assert_int_equal(y, 1);
  return rc;
}

static void ignore_reply(rk_kernel *k, const rk_msg *m, void *user) {
  (void)k;
  (void)m;
  (void)user;
}

static int op_recv_start(fixture *f) {
  int rc = rk_recv_start(f->k, ignore_reply, NULL);
  if (rc == RK_OK) RT_OK(f->rt, rk_recv_stop(f->k));
  return rc;
}

static int op_restart(fixture *f) {
  int rc = rk_kernel_restart(f->k, RK_RESTART_RESET_STATE);
  if (rc != RK_OK) { /* the kernel stays FAULTED, and a restart without failures works */
    assert_int_equal(rk_kernel_state(f->k), RK_STATE_FAULTED);
    RT_OK(f->rt, rk_kernel_restart(f->k, RK_RESTART_KEEP_STATE));
  }
  return rc;
}

static int op_terminate(fixture *f) { return rk_kernel_terminate(f->k, RT_HANG); }

static int op_destroy_kernel(fixture *f) {
  rk_kernel_destroy(f->k);
  f->k = NULL;
  return RK_OK;
}

static int op_destroy_runtime(fixture *f) {
  rk_runtime_destroy(f->rt);
  f->destroyed = 1;
  return RK_OK;
}

typedef struct scenario {
  const char *name;
  int app_loop;
  void (*setup)(fixture *f);
  int (*op)(fixture *f);
} scenario;

static void no_setup(fixture *f) { (void)f; }

static const scenario scenarios[] = {
    {"create", 0, no_setup, op_create},
    {"create (application loop)", 1, no_setup, op_create},
    {"launch (2 lanes x 3 threads)", 0, fixture_runtime, op_launch},
    {"activate", 0, fixture_kernel, op_activate},
    {"send, call, recv", 0, fixture_active, op_call},
    {"rk_recv_start", 0, fixture_active, op_recv_start},
    {"restart (state re-initialised)", 0, fixture_faulted, op_restart},
    {"terminate", 0, fixture_active, op_terminate},
    {"destroy kernel", 0, fixture_active, op_destroy_kernel},
    {"destroy runtime", 0, fixture_active, op_destroy_runtime},
};

static const char *kind_name[RK__FP_RESOURCES] = {"allocation", "thread creation", "libuv resource"};

/* A clean failure: the codes an operation may return when a resource is refused. */
static int clean_error(int rc) { return rc == RK_OK || rc == RK_ENOMEM || rc == RK_ESYS || rc == RK_ENORESOURCE; }

static void test_sweep(void **state) {
  uint64_t injected = 0, survived = 0;
  size_t s;
  int kind;
  (void)state;
  for (s = 0; s < sizeof scenarios / sizeof scenarios[0]; s++) {
    const scenario *sc = &scenarios[s];
    for (kind = 0; kind < RK__FP_RESOURCES; kind++) {
      uint64_t n, points = 0;
      for (n = 1;; n++) {
        fixture f;
        uint64_t t0, hits;
        int rc;
        memset(&f, 0, sizeof f);
        f.app_loop = sc->app_loop;
        if (f.app_loop) assert_int_equal(uv_loop_init(&f.loop), 0);
        sc->setup(&f);
        rk__failpoint_arm((rk__failpoint)kind, n, 0);
        t0 = rt_now_ns();
        rc = sc->op(&f);
        hits = rk__failpoint_disarm((rk__failpoint)kind);
        if ((int64_t)(rt_now_ns() - t0) > RT_HANG)
          fail_msg("%s: failing %s %llu took longer than %lld s", sc->name, kind_name[kind], (unsigned long long)n,
                   RT_HANG / RT_SEC);
        if (!clean_error(rc))
          fail_msg("%s: failing %s %llu gave %s (%s)", sc->name, kind_name[kind], (unsigned long long)n, rk_err_name(rc),
                   f.rt ? rk_runtime_last_error(f.rt) : "");
        if (hits == 0) { /* the operation made fewer than n such calls: every point was tried */
          fixture_teardown(&f);
          break;
        }
        points++;
        injected++;
        if (sc->op == op_create && rc != RK_OK) assert_null(f.rt);
        if (sc->op == op_launch && rc != RK_OK) assert_null(f.k);
        if (!f.destroyed) check_usable(f.rt);
        fixture_teardown(&f);
        survived++;
      }
      if (points) print_message("  %-32s %-16s %3llu points\n", sc->name, kind_name[kind], (unsigned long long)points);
    }
  }
  print_message("failure injection: %llu points injected, %llu survived (clean error, no hang, runtime usable)\n",
                (unsigned long long)injected, (unsigned long long)survived);
  assert_true(injected >= 40);
  assert_int_equal(survived, injected);
}

/* ---------------------------------------- named failures ------------------------------------- */

/* The second thread of a four-thread lane cannot start: launch returns RK_ESYS at once and frees
 * what it made (it used to hang). Then every other thread position, and the runtime still works. */
static void test_lane_thread_fails(void **state) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = (rk_kernel *)rt;
  uint64_t n;
  (void)state;
  lo.threads_per_lane = 4;
  for (n = 1; n <= 4; n++) {
    uint64_t t0 = rt_now_ns();
    rk__failpoint_arm(RK__FP_THREAD, n, 0);
    assert_int_equal(rk_kernel_launch(rt, &rk_builtin_echo, &lo, &k), RK_ESYS);
    assert_int_equal(rk__failpoint_disarm(RK__FP_THREAD), 1);
    assert_true(rt_now_ns() - t0 < (uint64_t)RT_HANG);
    assert_null(k);
    assert_non_null(strstr(rk_runtime_last_error(rt), "cannot start thread"));
  }
  check_usable(rt);
  rk_runtime_destroy(rt);
}

/* uv_async_init fails (a process out of descriptors, with a libuv that makes its eventfd there):
 * the runtime is not created, and nothing is left on the application's loop. */
static void test_async_init_fails(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt = (rk_runtime *)&o;
  uv_loop_t loop;
  (void)state;
  rk__failpoint_arm(RK__FP_UV, 2, 0); /* its own loop: uv_loop_init, then uv_async_init */
  assert_int_equal(rk_runtime_create(&rt, &o), RK_ESYS);
  assert_int_equal(rk__failpoint_disarm(RK__FP_UV), 1);
  assert_null(rt);
  assert_int_equal(uv_loop_init(&loop), 0);
  o.loop = &loop;
  rk__failpoint_arm(RK__FP_UV, 1, 0); /* the application's loop: uv_async_init only */
  assert_int_equal(rk_runtime_create(&rt, &o), RK_ESYS);
  assert_int_equal(rk__failpoint_disarm(RK__FP_UV), 1);
  assert_null(rt);
  assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
  assert_int_equal(uv_loop_close(&loop), 0); /* no handle of ours is left on it */
}

/* Persistent allocation failure while a reply waits to be queued for rk_recv: a caller whose reply
 * is behind it still gets it; a caller waiting meanwhile backs off instead of spinning, and the
 * log says so a few times, not millions; rk_recv (which needs no allocation) takes the stuck one. */
static void test_persistent_alloc_failure(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  uint32_t x, y = 0;
  unsigned errors;
  rk_msg m;
  (void)state;
  x = 1;
  RT_OK(rt, rk_send(k, 1, &x, sizeof x, 0, NULL)); /* a reply for rk_recv, not yet received */
  RT_WAIT_STAT(k, msgs_out, 1);
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  errors = rt_log_count(&rt_the_log, RK_LOG_ERROR);
  rk__failpoint_arm(RK__FP_ALLOC, 1, 1); /* every allocation from now on fails */
  /* This call's request waits (inactive): its caller drains the outbox over and over, and each
   * time the reply for rk_recv cannot be queued. */
  x = 2;
  assert_int_equal(rk_call(k, 1, &x, sizeof x, &m, &y, sizeof y, 300 * RT_MS), RK_ETIMEDOUT);
  assert_true(rt_log_count(&rt_the_log, RK_LOG_ERROR) - errors <= 10); /* rate-limited */
  assert_true(rt_log_count(&rt_the_log, RK_LOG_ERROR) - errors >= 1);  /* but said */
  /* Active again: the late reply and this call's are behind the stuck one, and both are taken. */
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  x = 3;
  RT_OK(rt, rk_call(k, 1, &x, sizeof x, &m, &y, sizeof y, RT_HANG));
  assert_int_equal(y, 3);
  RT_OK(rt, rk_recv(k, &m, &y, sizeof y, RT_HANG)); /* the stuck reply, with no allocation */
  assert_int_equal(y, 1);
  assert_true(rk__failpoint_disarm(RK__FP_ALLOC) >= 1);
  assert_int_equal(rk_recv(k, &m, &y, sizeof y, 20 * RT_MS), RK_ETIMEDOUT); /* nothing twice */
  assert_int_equal(rt_stats(k).late_replies, 1);
  x = 4;
  RT_OK(rt, rk_call(k, 1, &x, sizeof x, &m, &y, sizeof y, RT_HANG));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A restart into ACTIVE with messages queued, whose last lane of three threads cannot be completed: the
 * leaders may take a message before the failure is known, and must not wait at a barrier for a
 * thread that does not exist (restart would hang joining it). The message stays queued, a later
 * restart processes everything, each message once. */
static int g_gate;    /* atomics: 1 holds the handler of who == 0xbad */
static int g_entered; /* atomics: it is inside */

static int held_echo(rk_ctx *ctx, const rk_msg *in) {
  rt_item it;
  if (rk_msg_len(in) == sizeof it) {
    memcpy(&it, rk_msg_payload(in), sizeof it);
    if (it.who == 0xbad && rk_thread(ctx) == 0) __atomic_store_n(&g_entered, 1, __ATOMIC_RELEASE);
    if (it.who == 0xbad && rk_thread(ctx) == 0)
      while (__atomic_load_n(&g_gate, __ATOMIC_ACQUIRE)) rt_sleep_ms(1); /* pairs with the test */
  }
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

typedef struct restart_bg {
  rk_kernel *k;
  int rc, done; /* done: atomics */
} restart_bg;

static void *restart_main(void *arg) {
  restart_bg *r = (restart_bg *)arg;
  r->rc = rk_kernel_restart(r->k, RK_RESTART_KEEP_STATE);
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
  return NULL;
}
static int restart_done(void *arg) { return __atomic_load_n(&((restart_bg *)arg)->done, __ATOMIC_ACQUIRE); }
static int held_entered(void *unused) {
  (void)unused;
  return __atomic_load_n(&g_entered, __ATOMIC_ACQUIRE);
}

static void test_restart_thread_fails_with_queue(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("held", held_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  restart_bg r;
  pthread_t t;
  rt_item it;
  rk_msg m;
  uint32_t i, seen = 0;
  uint64_t launch_timeout;
  (void)state;
  lo.lanes = 4;
  lo.threads_per_lane = 3;
  k = rt_launch_active(rt, &d, &lo);
  /* restart's wait for the old lanes, short; the launch itself keeps the default (12 threads
   * under a sanitizer on a loaded machine may need more than 50 ms to check in) */
  launch_timeout = k->launch_timeout_ns;
  k->launch_timeout_ns = 50 * RT_MS;
  __atomic_store_n(&g_gate, 1, __ATOMIC_RELEASE);
  memset(&it, 0, sizeof it);
  it.who = 0xbad;
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL)); /* round-robin: lane 0 */
  assert_true(rt_wait_for(held_entered, NULL, RT_HANG));
  for (i = 1; i <= 4; i++) { /* lanes 1, 2, 3, 0 */
    it.who = 1;
    it.seq = i;
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  rk__kernel_fault(k, RK_EHANDLER, "injected for the test");
  assert_int_equal(rk_kernel_restart(k, 0), RK_ETIMEDOUT); /* held: the abort is now set */
  __atomic_store_n(&g_gate, 0, __ATOMIC_RELEASE);        /* the old lane finishes it and leaves */
  /* the next restart waits for that lane to leave: a generous bound again (under load, 50 ms were
   * too short once: the restart timed out before creating a thread, and the fail point never hit) */
  k->launch_timeout_ns = launch_timeout;
  memset(&r, 0, sizeof r);
  r.k = k;
  rk__failpoint_arm(RK__FP_THREAD, 12, 0); /* the last lane's last thread: the others run by then */
  assert_int_equal(pthread_create(&t, NULL, restart_main, &r), 0);
  if (!rt_wait_for(restart_done, &r, RT_HANG)) fail_msg("restart hangs when a lane thread cannot start");
  pthread_join(t, NULL);
  assert_int_equal(rk__failpoint_disarm(RK__FP_THREAD), 1);
  assert_int_equal(r.rc, RK_ESYS);
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  RT_OK(rt, rk_kernel_restart(k, 0));
  for (i = 0; i < 5; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    seen |= 1u << it.seq;
  }
  assert_int_equal(seen, 0x1f); /* the held one (seq 0) and the four behind it */
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT); /* once each */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* The log's rate limit: a line repeated in a loop reaches the application 8 times a second; the
 * first line of the next second says how many were suppressed. Other lines are not affected. */
static void test_log_rate_limit(void **state) {
  rk_runtime *rt = rt_create();
  unsigned errors = rt_log_count(&rt_the_log, RK_LOG_ERROR), n;
  uint64_t t0;
  int i;
  (void)state;
  /* The window is 1 s from the burst's first line: a burst that took longer (this thread not
   * scheduled for a second, the whole machine stalled) starts a second window and lets 8 more
   * through. Counted only when it did not (the first 8 always go, whatever the time). */
  t0 = rt_now_ns();
  for (i = 0; i < 1000; i++) rk__log(rt, RK_LOG_ERROR, "the same trouble, again (%d)", i);
  n = rt_log_count(&rt_the_log, RK_LOG_ERROR) - errors;
  if (rt_now_ns() - t0 < 900 * (uint64_t)RT_MS) assert_int_equal(n, 8);
  else assert_true(n >= 8 && n < 1000);
  rk__log(rt, RK_LOG_ERROR, "another trouble");
  assert_int_equal(rt_log_count(&rt_the_log, RK_LOG_ERROR) - errors, n + 1);
  errors += n - 8; /* as if the burst had fitted its window */
  rt_sleep_ms(1100);
  rk__log(rt, RK_LOG_ERROR, "the same trouble, again (%d)", i);
  assert_int_equal(rt_log_count(&rt_the_log, RK_LOG_ERROR) - errors, 10);
  pthread_mutex_lock(&rt_the_log.lock);
  /* (a burst split over two windows said part of its count with the second window's first line) */
  assert_non_null(strstr(rt_the_log.last, n == 8 ? "[992 similar lines suppressed]" : "similar lines suppressed]"));
  pthread_mutex_unlock(&rt_the_log.lock);
  rk_runtime_destroy(rt);
}

/* A hard fault during a soft one (a watchdog stall) replaces it: the RECOVER policy clears a
 * stall once its lane moves again, and it cleared the hard fault it had never recorded (the
 * kernel went on ACTIVE with, say, a lane that broke the collective rule). Injected here: the
 * stall names a heartbeat the lane is not at (so RECOVER would clear it at the next tick), then a
 * hard fault. */
static void test_hard_fault_over_stall(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("recovering", rk_builtin_echo.handler);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  char err[256];
  (void)state;
  lo.fault_policy = RK_FAULT_RECOVER;
  k = rt_launch_active(rt, &d, &lo);
  rk__kernel_stall(k, 0, UINT64_MAX, "test: lane 0 stalled");
  rk__kernel_fault(k, RK_EDEADLK, "test: a hard fault during the stall");
  rt_sleep_ms(200); /* several service ticks (50 ms): RECOVER would have cleared the stall */
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_EDEADLK);
  assert_non_null(strstr(err, "hard fault"));
  assert_int_equal(rt_stats(k).recoveries, 0);
  RT_OK(rt, rk_kernel_terminate(k, RT_HANG));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lane_thread_fails),
      cmocka_unit_test(test_async_init_fails),
      cmocka_unit_test(test_persistent_alloc_failure),
      cmocka_unit_test(test_log_rate_limit),
      cmocka_unit_test(test_restart_thread_fails_with_queue),
      cmocka_unit_test(test_hard_fault_over_stall),
      cmocka_unit_test(test_sweep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
