/* test_faults.c — what a fault does (ARCHITECTURE §8; runtime.h, rk_fault_policy), and the hangs
 * around faults found by probing (issue 11):
 * - every waiter on a kernel (rk_call and rk_recv without a timeout, a sender blocked on a full
 *   inbox) returns RK_ESTATE as soon as the kernel faults;
 * - a multi-thread lane whose handler breaks the collective rule faults its kernel with a message
 *   that says so, and terminate returns (it used to hang in pthread_join); the message stays
 *   valid until every thread of the lane is out of the handler;
 * - the application's log and receive callbacks run with no library lock held: a log callback may
 *   call rk_runtime_last_error or lifecycle functions, a receive callback may call rk_recv_stop
 *   and rk_call on its own kernel (each used to deadlock);
 * - fault policies: STOP stays FAULTED, RECOVER clears a stall when the lane moves again, RESTART
 *   restarts with back-off up to its maximum; rk_kernel_restart keeps or re-initialises the state
 *   and delivers nothing twice; terminate ends TERMINATED with the fault still readable;
 * - dead letters: a late reply is kept with its reason.
 * Stalls are made with a handler that waits on a gate the test opens, so teardown is clean. Every
 * wait is bounded (RT_HANG): a hang is reported as a failure, not a ctest timeout. */
#include "rt_util.h"

static int gate_closed;  /* atomics */
static int gate_entered; /* atomics */
static int handled;      /* atomics: messages the gated handler finished */

#define GATED 0xbad

/* rt_item echo; who == GATED waits at the gate first. Counts what it handled. */
static int gated_echo(rk_ctx *ctx, const rk_msg *in) {
  if (rk_msg_type_of(in) == RT_ITEM_TYPE && rk_msg_len(in) == sizeof(rt_item)) {
    rt_item it;
    memcpy(&it, rk_msg_payload(in), sizeof it);
    if (it.who == GATED) {
      __atomic_store_n(&gate_entered, 1, __ATOMIC_RELEASE);
      while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) rt_sleep_ms(1); /* pairs with open_gate */
    }
  }
  if (rk_thread(ctx) == 0) __atomic_add_fetch(&handled, 1, __ATOMIC_RELAXED);
  return rt_item_echo(ctx, in);
}

static void close_gate(void) {
  __atomic_store_n(&gate_entered, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&gate_closed, 1, __ATOMIC_RELEASE);
}
static void open_gate(void) { __atomic_store_n(&gate_closed, 0, __ATOMIC_RELEASE); }
static int entered(void *unused) {
  (void)unused;
  return __atomic_load_n(&gate_entered, __ATOMIC_ACQUIRE);
}
static int is_faulted(void *arg) { return rk_kernel_state((rk_kernel *)arg) == RK_STATE_FAULTED; }
static int is_active(void *arg) { return rk_kernel_state((rk_kernel *)arg) == RK_STATE_ACTIVE; }

static rt_item item(uint32_t who, uint32_t seq) {
  rt_item it;
  memset(&it, 0, sizeof it);
  it.who = who;
  it.seq = seq;
  return it;
}

static int send_item(rk_kernel *k, uint32_t who, uint32_t seq) {
  rt_item it = item(who, seq);
  return rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL);
}

/* The gated message (seq) and `behind` more (who 1, seqs next on) with one rk_send_batch: claimed
 * together, so all are accepted before the lane can be held at the gate. Sent one by one, the
 * watchdog could fault the held lane (the stall bound after it entered the gate) before the test
 * thread, not scheduled meanwhile, sent the ones behind it: RK_ESTATE. */
static void send_gated(rk_runtime *rt, rk_kernel *k, uint32_t seq, uint32_t behind, uint32_t next) {
  rt_item p[8];
  rk_send_item b[8];
  uint32_t i;
  assert_true(behind < 8);
  memset(b, 0, sizeof b);
  for (i = 0; i <= behind; i++) {
    p[i] = i ? item(1, next + i - 1) : item(GATED, seq);
    b[i].type = RT_ITEM_TYPE;
    b[i].len = sizeof p[i];
    b[i].payload = &p[i];
  }
  if (rk_send_batch(k, b, behind + 1) != (int)(behind + 1))
    fail_msg("the gated message and %u behind it: not all accepted (%s)", behind, rk_runtime_last_error(rt));
}

/* The watchdog's stall bound in these tests. Every fault here is made by a gate the test holds, so
 * the bound is how long the test waits for it; but a lane that has work and merely is not
 * scheduled for that long faults too, and a second fault breaks the test (a RECOVER or RESTART
 * kernel faulting again while it works off what the stall left, a call after a restart answered
 * RK_ESTATE). The bounds were 100 to 250 ms; a loaded machine keeps a lane from running longer
 * than that (test_watchdog: 202 and 268 ms at load 81 on 2 cores). 1 s, as test_watchdog's. */
#define FAULT_STALL (1000 * RT_MS)

static rk_runtime *watched_runtime(uint64_t stall_ns) {
  rk_runtime_options o = rt_options();
  o.watchdog_interval_ns = 10 * RT_MS;
  o.watchdog_stall_ns = stall_ns;
  return rt_create_opts(&o);
}

/* A call made in a thread, its result published when it returns. */
typedef struct bg {
  rk_kernel *k;
  int rc;
  int done; /* atomics */
  rt_item got;
  int kind; /* 0 call, 1 recv, 2 send */
  int64_t timeout;
} bg;

static void *bg_main(void *arg) {
  bg *b = (bg *)arg;
  rk_msg m;
  rt_item it = item(7, 70);
  if (b->kind == 0)
    b->rc = rk_call(b->k, RT_ITEM_TYPE, &it, sizeof it, &m, &b->got, sizeof b->got, b->timeout);
  else if (b->kind == 1)
    b->rc = rk_recv(b->k, &m, &b->got, sizeof b->got, b->timeout);
  else
    b->rc = rk_send(b->k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL);
  __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE); /* pairs with bg_done */
  return NULL;
}

static int bg_done(void *arg) { return __atomic_load_n(&((bg *)arg)->done, __ATOMIC_ACQUIRE); }

static void bg_start(bg *b, pthread_t *t, rk_kernel *k, int kind, int64_t timeout) {
  memset(b, 0, sizeof *b);
  b->k = k;
  b->kind = kind;
  b->timeout = timeout;
  assert_int_equal(pthread_create(t, NULL, bg_main, b), 0);
}

/* Join b's thread once it returned; a thread still blocked is a hang: fail (it is left behind). */
static void bg_join(bg *b, pthread_t t, const char *what) {
  if (!rt_wait_for(bg_done, b, RT_HANG)) fail_msg("%s still blocked %lld s after the kernel faulted", what, RT_HANG / RT_SEC);
  pthread_join(t, NULL);
}

/* ---------------------------------------- waiters wake ---------------------------------------- */

/* Callers with no timeout, a receiver with no timeout and a sender blocked on a full inbox all
 * return RK_ESTATE once the watchdog faults the kernel (they used to wait forever, or their whole
 * timeout). Then terminate ends it TERMINATED, the fault still readable. */
static void test_fault_wakes_waiters(void **state) {
  rk_runtime *rt = watched_runtime(FAULT_STALL);
  rk_kernel_desc d = rt_desc("waited", gated_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  bg call, recv, send;
  pthread_t tc, tr, ts;
  char err[256];
  uint32_t i;
  (void)state;
  lo.inbox_capacity = 8;
  lo.send_timeout_ns = -1; /* a blocked sender waits for room forever */
  /* Every waiter is in place before the kernel is activated: the watchdog's stall clock runs only
   * while the lane is consuming, so nothing here races the fault (the sends used to follow the
   * gated message, inside the stall bound: a test thread not scheduled for 250 ms met RK_ESTATE). */
  k = rt_launch(rt, &d, &lo);
  close_gate();
  RT_OK(rt, send_item(k, GATED, 0));
  for (i = 1; i < 6; i++) RT_OK(rt, send_item(k, 1, i)); /* 6 of 8 slots: the lane holds its batch */
  bg_start(&call, &tc, k, 0, -1); /* the 7th: waits for its reply, forever */
  RT_WAIT_STAT(k, sent, 7);
  RT_OK(rt, send_item(k, 1, 7)); /* full */
  bg_start(&send, &ts, k, 2, 0);   /* blocked: no room, no timeout */
  bg_start(&recv, &tr, k, 1, -1);  /* nothing for it: the replies are the call's and a gated lane's */
  RT_OK(rt, rk_kernel_activate(k));
  assert_true(rt_wait_for(entered, NULL, RT_HANG));
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("the stalled lane did not fault the kernel");
  bg_join(&call, tc, "rk_call(-1)");
  bg_join(&recv, tr, "rk_recv(-1)");
  bg_join(&send, ts, "a blocked rk_send");
  assert_int_equal(call.rc, RK_ESTATE);
  assert_int_equal(recv.rc, RK_ESTATE);
  assert_int_equal(send.rc, RK_ESTATE);
  /* and later calls at once */
  {
    rk_msg m;
    rt_item it = item(1, 99), rep;
    assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, -1), RK_ESTATE);
    assert_non_null(strstr(rk_runtime_last_error(rt), "FAULTED"));
    assert_non_null(strstr(rk_runtime_last_error(rt), "stalled"));
  }
  open_gate();
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK); /* drains the 8 accepted */
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ETIMEDOUT);
  assert_non_null(strstr(err, "stalled"));
  assert_int_equal(rt_stats(k).msgs_in, 8);
  /* Every reply can be received but the abandoned call's, which is discarded, counted, and kept
   * as a dead letter. */
  {
    rk_msg m;
    rt_item rep;
    rk_dead_letter dl[4];
    uint64_t total = 0;
    uint32_t got = 0;
    int rc;
    while ((rc = rk_recv(k, &m, &rep, sizeof rep, RT_HANG)) == RK_OK) got++;
    assert_int_equal(rc, RK_ECLOSED);
    assert_int_equal(got, 7);
    assert_int_equal(rt_stats(k).late_replies, 1);
    assert_int_equal(rk_kernel_dead_letters(k, dl, 4, &total), 1);
    assert_int_equal(total, 1);
    assert_int_equal(dl[0].reason, RK_ETIMEDOUT);
    assert_non_null(strstr(dl[0].why, "late reply"));
    assert_true(dl[0].env.flags & RK_ENV_F_REPLY);
    assert_int_equal(dl[0].payload_len, sizeof(rt_item));
    memcpy(&rep, dl[0].payload, sizeof rep);
    assert_int_equal(rep.seq, 70);
  }
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- collective rule ------------------------------------ */

#define DIVERGE 0xd1

/* A handler that breaks the collective rule on who == DIVERGE: thread 0 returns an error while the
 * other threads call rk_reply. Anything else is echoed by every thread together. */
static int divergent(rk_ctx *ctx, const rk_msg *in) {
  rt_item it;
  if (rk_msg_len(in) == sizeof it) {
    memcpy(&it, rk_msg_payload(in), sizeof it);
    if (it.who == DIVERGE && rk_thread(ctx) == 0) return RK_EINVAL;
  }
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

typedef struct term_bg {
  rk_kernel *k;
  int64_t timeout;
  int rc;
  int done; /* atomics */
} term_bg;

static void *term_main(void *arg) {
  term_bg *t = (term_bg *)arg;
  t->rc = rk_kernel_terminate(t->k, t->timeout);
  __atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
  return NULL;
}
static int term_done(void *arg) { return __atomic_load_n(&((term_bg *)arg)->done, __ATOMIC_ACQUIRE); }

/* terminate(k, timeout) in a thread; fails the test if it does not return in RT_HANG. */
static int bounded_terminate(rk_kernel *k, int64_t timeout) {
  term_bg t;
  pthread_t th;
  memset(&t, 0, sizeof t);
  t.k = k;
  t.timeout = timeout;
  assert_int_equal(pthread_create(&th, NULL, term_main, &t), 0);
  if (!rt_wait_for(term_done, &t, RT_HANG)) fail_msg("rk_kernel_terminate hangs");
  pthread_join(th, NULL);
  return t.rc;
}

static void test_broken_collective(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("divergent", divergent);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rt_item it = item(1, 1), rep;
  rk_msg m;
  char err[512];
  (void)state;
  lo.threads_per_lane = 4;
  k = rt_launch_active(rt, &d, &lo);
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG)); /* well-formed: fine */
  assert_int_equal(rep.seq, 1);
  it = item(DIVERGE, 2);
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("a broken collective rule went unnoticed");
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_EHANDLER);
  if (strstr(err, "collective rule") == NULL || strstr(err, "rk_reply") == NULL || strstr(err, "lane 0") == NULL)
    fail_msg("the fault does not say what went wrong: %s", err);
  /* The lane stopped; restart brings it back with all its threads. */
  RT_OK(rt, rk_kernel_restart(k, RK_RESTART_KEEP_STATE));
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  it = item(1, 3);
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
  assert_int_equal(rep.seq, 3);
  /* Broken again, then terminated: it returns (it used to hang in pthread_join) */
  it = item(DIVERGE, 4);
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("a broken collective rule went unnoticed");
  RT_OK(rt, bounded_terminate(k, RT_SEC));
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_EHANDLER);
  assert_int_equal(rt_stats(k).restarts, 1);
  assert_int_equal(rt_stats(k).faults, 2);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A follower still in the handler when the rule breaks. who == DIVERGE: thread 0 returns an error,
 * the middle threads call rk_reply (the rule broken), the last thread sleeps 200 ms first and only
 * then reads the message. The leader must not let the message go (the rk_msg on its stack, the
 * inbox slot its payload is in) before that thread is out of the handler: it used to release the
 * slot and leave the frame at once (seen by ASan in CI as a read of another thread's stack). */
static int late_seq;  /* atomics: what the late thread read, after its sleep */
static int late_done; /* atomics */

static int late_follower(rk_ctx *ctx, const rk_msg *in) {
  rt_item it;
  if (rk_msg_len(in) != sizeof it) return RK_EINVAL;
  if (rk_thread(ctx) + 1 == rk_threads(ctx)) {
    rt_sleep_ms(200);
    memcpy(&it, rk_msg_payload(in), sizeof it);
    __atomic_store_n(&late_seq, (int)it.seq, __ATOMIC_RELAXED);
    __atomic_store_n(&late_done, 1, __ATOMIC_RELEASE);
    return 0;
  }
  memcpy(&it, rk_msg_payload(in), sizeof it);
  if (it.who == DIVERGE && rk_thread(ctx) == 0) return RK_EINVAL;
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

static int one_taken(void *arg) { return rt_stats((rk_kernel *)arg).msgs_in >= 1; }

static void test_broken_collective_late_follower(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("late_follower", late_follower);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rt_item it = item(DIVERGE, 41);
  (void)state;
  __atomic_store_n(&late_done, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&late_seq, 0, __ATOMIC_RELAXED);
  lo.threads_per_lane = 4;
  k = rt_launch_active(rt, &d, &lo);
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("a broken collective rule went unnoticed");
  /* The message is released (counted in msgs_in) only once the late thread is done with it. */
  if (!rt_wait_for(one_taken, k, RT_HANG)) fail_msg("the lane never released the message");
  assert_int_equal(__atomic_load_n(&late_done, __ATOMIC_ACQUIRE), 1);
  assert_int_equal(__atomic_load_n(&late_seq, __ATOMIC_RELAXED), 41);
  RT_OK(rt, bounded_terminate(k, RT_SEC));
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- callbacks under no lock ----------------------------- */

static rk_runtime *g_rt;     /* for the reentrant log callback */
static rk_kernel *g_k;
static int g_log_calls;      /* atomics */
static int g_log_activate;   /* atomics: what rk_kernel_activate returned inside the callback */

/* A log callback that calls the library back, as an application's may. */
static void reentrant_log(void *user, rk_log_level level, const char *message) {
  rk_runtime *rt = __atomic_load_n(&g_rt, __ATOMIC_ACQUIRE);
  rk_kernel *k = __atomic_load_n(&g_k, __ATOMIC_ACQUIRE);
  rt_log_sink(user, level, message);
  if (rt == NULL || k == NULL || level != RK_LOG_ERROR || strstr(message, "FAULTED") == NULL) return;
  (void)rk_runtime_last_error(rt);
  (void)rk_kernel_state(k);
  (void)rk_kernel_error(k, NULL, 0);
  __atomic_store_n(&g_log_activate, rk_kernel_activate(k), __ATOMIC_RELAXED); /* takes the kernel's lock */
  __atomic_add_fetch(&g_log_calls, 1, __ATOMIC_RELEASE);
}

static int log_called(void *unused) {
  (void)unused;
  return __atomic_load_n(&g_log_calls, __ATOMIC_ACQUIRE) > 0;
}

/* The watchdog's fault is logged from the service thread (it used to be under the runtime lock,
 * which rk_runtime_last_error takes); terminate's "lanes still running" fault is raised under the
 * kernel's lifecycle lock, which rk_kernel_activate takes. Both callbacks return. */
static void test_log_callback_calls_back(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel_desc d = rt_desc("logged", gated_echo);
  rk_kernel *k;
  (void)state;
  o.watchdog_interval_ns = 10 * RT_MS;
  o.watchdog_stall_ns = FAULT_STALL;
  o.log = reentrant_log;
  rt = rt_create_opts(&o);
  k = rt_launch_active(rt, &d, NULL);
  __atomic_store_n(&g_log_calls, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g_rt, rt, __ATOMIC_RELEASE);
  __atomic_store_n(&g_k, k, __ATOMIC_RELEASE);
  close_gate();
  send_gated(rt, k, 0, 1, 1); /* work waiting: a stall */
  if (!rt_wait_for(log_called, NULL, RT_HANG)) fail_msg("the log callback never returned (deadlock)");
  assert_int_equal(__atomic_load_n(&g_log_activate, __ATOMIC_RELAXED), RK_ESTATE); /* FAULTED */
  assert_int_equal(rk_send(k, 1, "x", 1, 0, NULL), RK_ESTATE); /* a failure on this thread: no deadlock */

  /* terminate gives up on the held lane; its "lanes still running" line is logged once the
   * kernel's lock is released, so the callback's rk_kernel_activate does not deadlock */
  __atomic_store_n(&g_log_calls, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g_log_activate, 0, __ATOMIC_RELAXED);
  assert_int_equal(bounded_terminate(k, 20 * RT_MS), RK_ETIMEDOUT);
  assert_true(log_called(NULL));
  assert_int_equal(__atomic_load_n(&g_log_activate, __ATOMIC_RELAXED), RK_ESTATE);
  __atomic_store_n(&g_k, NULL, __ATOMIC_RELEASE);
  __atomic_store_n(&g_rt, NULL, __ATOMIC_RELEASE);
  open_gate();
  RT_OK(rt, rk_kernel_terminate(k, RT_HANG));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A receive callback that calls back into its own kernel: rk_call (it used to wait out its
 * timeout: the dispatcher held the outbox's drain lock) and rk_recv_stop (it used to deadlock on
 * the callback lock the dispatcher held). */
typedef struct cb_back {
  int calls;   /* atomics */
  int done;    /* atomics */
  int call_rc, stop_rc;
  rt_item call_rep;
} cb_back;

static void on_reply_call_back(rk_kernel *k, const rk_msg *m, void *user) {
  cb_back *s = (cb_back *)user;
  rk_msg r;
  rt_item it = item(3, 33);
  (void)m;
  if (__atomic_add_fetch(&s->calls, 1, __ATOMIC_RELAXED) != 1) return;
  s->call_rc = rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &r, &s->call_rep, sizeof s->call_rep, 5 * RT_SEC);
  s->stop_rc = rk_recv_stop(k); /* inside its own callback: no callback after this one */
  __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
}

static int cb_back_done(void *arg) { return __atomic_load_n(&((cb_back *)arg)->done, __ATOMIC_ACQUIRE); }

static void test_callback_calls_back(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("called back", gated_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  cb_back s;
  rk_msg m;
  rt_item it;
  uint32_t i, seen = 0;
  (void)state;
  memset(&s, 0, sizeof s);
  RT_OK(rt, rk_recv_start(k, on_reply_call_back, &s));
  for (i = 0; i < 5; i++) RT_OK(rt, send_item(k, 1, i));
  if (!rt_wait_for(cb_back_done, &s, RT_HANG)) fail_msg("the callback never returned (deadlock)");
  assert_int_equal(s.call_rc, RK_OK);
  assert_int_equal(s.call_rep.seq, 33);
  assert_int_equal(s.stop_rc, RK_OK);
  /* stopped: rk_recv works again, and gets exactly the replies the callback did not */
  for (i = 0; i < 4; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    seen |= 1u << it.seq;
  }
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(__atomic_load_n(&s.calls, __ATOMIC_RELAXED), 1);
  assert_int_equal(__builtin_popcount(seen), 4);
  assert_int_equal(rk_recv_stop(k), RK_ESTATE);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A receive callback of one kernel destroys another, older kernel (the header allows it: only its
 * own kernel may not be destroyed from its callback). The service thread's pass pins every
 * kernel of its snapshot before serving any, and the destroy waited for those pins: forever, on
 * the thread that held them. */
typedef struct cb_destroy {
  rk_kernel *victim;
  int done; /* atomics */
} cb_destroy;

static void on_reply_destroy_other(rk_kernel *k, const rk_msg *m, void *user) {
  cb_destroy *s = (cb_destroy *)user;
  (void)k;
  (void)m;
  if (s->victim) {
    rk_kernel_destroy(s->victim);
    s->victim = NULL;
    __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
  }
}

static int cb_destroy_done(void *arg) { return __atomic_load_n(&((cb_destroy *)arg)->done, __ATOMIC_ACQUIRE); }

static void test_callback_destroys_other_kernel(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("older", gated_echo), e = rt_desc("newer", gated_echo);
  rk_kernel *older = rt_launch_active(rt, &d, NULL), *newer = rt_launch_active(rt, &e, NULL);
  cb_destroy s = {older, 0};
  (void)state;
  RT_OK(rt, rk_recv_start(newer, on_reply_destroy_other, &s));
  RT_OK(rt, send_item(newer, 1, 0));
  if (!rt_wait_for(cb_destroy_done, &s, RT_HANG)) fail_msg("the callback's rk_kernel_destroy never returned");
  /* the service thread goes on: the newer kernel's callbacks still come */
  RT_OK(rt, send_item(newer, 1, 1));
  RT_WAIT_STAT(newer, msgs_out, 2);
  assert_int_equal(rk_recv_stop(newer), RK_OK);
  rk_kernel_destroy(newer);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- fault policies -------------------------------------- */

static int handled_at_least(void *arg) {
  return __atomic_load_n(&handled, __ATOMIC_RELAXED) >= *(const int *)arg;
}

/* Stall a kernel's only lane at the gate (with work behind it) until the watchdog faults it. */
static void stall(rk_runtime *rt, rk_kernel *k, uint32_t seq) {
  close_gate();
  send_gated(rt, k, seq, 1, seq + 1);
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("the stalled lane did not fault the kernel");
}

static void run_policy(rk_fault_policy policy) {
  rk_runtime *rt = watched_runtime(FAULT_STALL);
  rk_kernel_desc d = rt_desc("policy", gated_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  rt_item it = item(1, 9), rep;
  char err[256];
  int want;
  lo.fault_policy = policy;
  k = rt_launch_active(rt, &d, &lo);
  __atomic_store_n(&handled, 0, __ATOMIC_RELAXED);
  stall(rt, k, 0);
  open_gate(); /* the handler was merely slow: the lane makes progress again */
  want = 2;
  assert_true(rt_wait_for(handled_at_least, &want, RT_HANG));
  if (policy == RK_FAULT_RECOVER) {
    if (!rt_wait_for(is_active, k, RT_HANG)) fail_msg("RECOVER: the kernel did not recover");
    RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
    assert_int_equal(rt_stats(k).recoveries, 1);
  } else {
    rt_sleep_ms(100); /* ten watchdog ticks: STOP stays FAULTED */
    assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
    assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG), RK_ESTATE);
    assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
    assert_int_equal(rt_stats(k).recoveries, 0);
  }
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ETIMEDOUT); /* readable either way */
  assert_non_null(strstr(err, "stalled"));
  assert_int_equal(rt_stats(k).faults, 1);
  RT_OK(rt, rk_kernel_terminate(k, RT_HANG));
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_error(k, NULL, 0), RK_ETIMEDOUT);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_policy_stop(void **state) {
  (void)state;
  run_policy(RK_FAULT_STOP);
  run_policy(RK_FAULT_DEFAULT);
}

static void test_policy_recover(void **state) {
  (void)state;
  run_policy(RK_FAULT_RECOVER);
}

/* ---------------------------------------- restart -------------------------------------------- */

typedef struct counter_state {
  int64_t total;
} counter_state;

static int g_inits; /* atomics */

static int counter_init(void *state, size_t size, void *user) {
  (void)user;
  assert_int_equal(size, sizeof(counter_state));
  ((counter_state *)state)->total = 1000;
  __atomic_add_fetch(&g_inits, 1, __ATOMIC_RELAXED);
  return RK_OK;
}

/* gated_echo that also adds the item's seq to a running total, returned in the reply's key. */
static int counting(rk_ctx *ctx, const rk_msg *in) {
  counter_state *st = (counter_state *)rk_state(ctx);
  rt_item it;
  if (rk_msg_len(in) != sizeof it) return RK_EMSGSIZE;
  memcpy(&it, rk_msg_payload(in), sizeof it);
  if (it.who == GATED) {
    __atomic_store_n(&gate_entered, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) rt_sleep_ms(1);
  }
  __atomic_add_fetch(&handled, 1, __ATOMIC_RELAXED);
  st->total += it.seq;
  it.key = (uint64_t)st->total;
  return rk_reply(ctx, RT_ITEM_TYPE, &it, sizeof it);
}

static int64_t add(rk_runtime *rt, rk_kernel *k, uint32_t n) {
  rk_msg m;
  rt_item it = item(1, n), rep;
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
  return (int64_t)rep.key;
}

/* rk_kernel_restart: refused unless FAULTED; waits (up to the launch timeout) for old lanes that
 * are still inside a handler and says so; then starts new lanes that process what the old ones
 * left, each message once, with the state kept or re-initialised. */
static void test_restart(void **state) {
  rk_runtime *rt = watched_runtime(FAULT_STALL);
  rk_kernel_desc d = rt_desc("restarted", counting);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  rt_item rep;
  uint32_t i, seen = 0;
  (void)state;
  d.state_size = sizeof(counter_state);
  d.state_init = counter_init;
  /* restart's wait for the old lanes (and the new ones' check-in): long enough for a released
   * handler to return and its lane to leave on a loaded machine (the same 50 ms wait timed out at
   * load average 30 in test_failpoints); a held handler still makes it time out */
  lo.launch_timeout_ns = 2 * RT_SEC;
  __atomic_store_n(&g_inits, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&handled, 0, __ATOMIC_RELAXED);
  k = rt_launch_active(rt, &d, &lo);
  assert_int_equal(rk_kernel_restart(k, 0), RK_ESTATE); /* not FAULTED */
  assert_int_equal(rk_kernel_restart(k, 0x80), RK_EINVAL);
  assert_int_equal(rk_kernel_restart(NULL, 0), RK_EINVAL);
  assert_int_equal(add(rt, k, 5), 1005);

  /* a stall with three messages behind it */
  close_gate();
  send_gated(rt, k, 0, 3, 1);
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("no stall fault");
  assert_int_equal(rk_kernel_restart(k, RK_RESTART_KEEP_STATE), RK_ETIMEDOUT); /* the handler holds it */
  assert_non_null(strstr(rk_runtime_last_error(rt), "did not leave"));
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  open_gate(); /* the old lane finishes the gated message, sees the abort, leaves the rest */
  RT_OK(rt, rk_kernel_restart(k, RK_RESTART_KEEP_STATE));
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  assert_non_null(strstr(rk_runtime_last_error(rt), "no error")); /* cleared by the success */
  for (i = 0; i < 4; i++) {
    RT_OK(rt, rk_recv(k, &m, &rep, sizeof rep, RT_HANG));
    seen |= 1u << rep.seq;
  }
  assert_int_equal(seen, 0xf);                    /* the gated one and the three behind it, */
  assert_int_equal(rk_recv(k, &m, &rep, sizeof rep, 20 * RT_MS), RK_ETIMEDOUT); /* once each */
  assert_int_equal(__atomic_load_n(&handled, __ATOMIC_RELAXED), 5);
  assert_int_equal(add(rt, k, 4), 1015); /* 1005 + 0 + 1 + 2 + 3 + 4: the state was kept */
  assert_int_equal(__atomic_load_n(&g_inits, __ATOMIC_RELAXED), 1);

  /* again, re-initialising the state (the initialiser runs again) */
  close_gate();
  send_gated(rt, k, 0, 1, 0);
  if (!rt_wait_for(is_faulted, k, RT_HANG)) fail_msg("no stall fault");
  open_gate();
  RT_OK(rt, rk_kernel_restart(k, RK_RESTART_RESET_STATE));
  assert_int_equal(__atomic_load_n(&g_inits, __ATOMIC_RELAXED), 2);
  for (i = 0; i < 2; i++) RT_OK(rt, rk_recv(k, &m, &rep, sizeof rep, RT_HANG));
  assert_int_equal(add(rt, k, 7), 1007);
  assert_int_equal(rt_stats(k).restarts, 2);
  assert_int_equal(rk_kernel_error(k, NULL, 0), RK_ETIMEDOUT); /* the last fault, still readable */
  RT_OK(rt, rk_kernel_terminate(k, RT_HANG));
  assert_int_equal(rk_kernel_restart(k, 0), RK_ESTATE); /* TERMINATED */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static int restarts_at_least(void *arg) {
  void **a = (void **)arg;
  return rt_stats((rk_kernel *)a[0]).restarts >= (uint64_t)(uintptr_t)a[1] && is_active(a[0]);
}

/* RK_FAULT_RESTART: the runtime restarts the kernel after the back-off, at most max_restarts
 * times; then it stays FAULTED. */
static void test_auto_restart(void **state) {
  rk_runtime *rt = watched_runtime(FAULT_STALL);
  rk_kernel_desc d = rt_desc("phoenix", gated_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  rt_item it = item(1, 5), rep;
  uint32_t round;
  (void)state;
  lo.fault_policy = RK_FAULT_RESTART;
  lo.max_restarts = 2;
  lo.restart_backoff_ns = 20 * RT_MS;
  k = rt_launch_active(rt, &d, &lo);
  for (round = 1; round <= 3; round++) {
    void *arg[2];
    arg[0] = k;
    arg[1] = (void *)(uintptr_t)round;
    stall(rt, k, 10 * round);
    open_gate();
    if (round <= 2) {
      if (!rt_wait_for(restarts_at_least, arg, RT_HANG)) fail_msg("automatic restart %u did not happen", round);
      RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
    } else {
      rt_sleep_ms(300); /* past its back-off (80 ms): no third restart */
      assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
      assert_int_equal(rt_stats(k).restarts, 2);
    }
  }
  assert_int_equal(rt_stats(k).faults, 3);
  RT_OK(rt, rk_kernel_terminate(k, RT_HANG));
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fault_wakes_waiters),
      cmocka_unit_test(test_broken_collective),
      cmocka_unit_test(test_broken_collective_late_follower),
      cmocka_unit_test(test_log_callback_calls_back),
      cmocka_unit_test(test_callback_calls_back),
      cmocka_unit_test(test_callback_destroys_other_kernel),
      cmocka_unit_test(test_policy_stop),
      cmocka_unit_test(test_policy_recover),
      cmocka_unit_test(test_restart),
      cmocka_unit_test(test_auto_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
