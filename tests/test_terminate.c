/* test_terminate.c — terminate drains everything accepted before it (ARCHITECTURE §4, §8), from
 * every state and with several lanes; what senders, receivers and callers see around it; abort when
 * the drain times out; and deactivate keeping the kernel's state. */
#include "rt_util.h"

#include <unistd.h>

/* Handler: rt_item echo; an item whose `key` is nonzero first sleeps that many microseconds (a
 * busy kernel), and while `gate` is closed the handler of a gated item waits for it. */
static int gate_closed; /* atomics */
static int gate_entered; /* atomics */

static int slow_echo(rk_ctx *ctx, const rk_msg *in) {
  if (rk_msg_type_of(in) == RT_ITEM_TYPE && rk_msg_len(in) == sizeof(rt_item)) {
    rt_item it;
    memcpy(&it, rk_msg_payload(in), sizeof it);
    if (it.who == 0xbad) { /* gated */
      __atomic_store_n(&gate_entered, 1, __ATOMIC_RELEASE);
      while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) rt_sleep_ms(1); /* pairs with open_gate */
    }
    if (it.key) {
      struct timespec ts = {0, (long)it.key * 1000};
      nanosleep(&ts, NULL);
    }
  }
  return rt_item_echo(ctx, in);
}

static void open_gate(void) { __atomic_store_n(&gate_closed, 0, __ATOMIC_RELEASE); }
static void close_gate(void) {
  __atomic_store_n(&gate_entered, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&gate_closed, 1, __ATOMIC_RELEASE);
}
static int gate_was_entered(void *unused) {
  (void)unused;
  return __atomic_load_n(&gate_entered, __ATOMIC_ACQUIRE);
}

static rt_item item(uint32_t who, uint32_t seq, uint64_t sleep_us) {
  rt_item it;
  memset(&it, 0, sizeof it);
  it.who = who;
  it.seq = seq;
  it.key = sleep_us;
  return it;
}

static int send_item(rk_kernel *k, uint32_t who, uint32_t seq, uint64_t sleep_us) {
  rt_item it = item(who, seq, sleep_us);
  return rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL);
}

/* After terminate: new sends of every kind are refused with RK_ECLOSED. */
static void expect_closed(rk_kernel *k) {
  rt_item it = item(1, 0, 0);
  rk_send_item b;
  rk_msg m;
  memset(&b, 0, sizeof b);
  b.type = RT_ITEM_TYPE;
  b.len = sizeof it;
  b.payload = &it;
  assert_int_equal(rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL), RK_ECLOSED);
  assert_int_equal(rk_send_key(k, 3, RT_ITEM_TYPE, &it, sizeof it, 0, NULL), RK_ECLOSED);
  assert_int_equal(rk_send_batch(k, &b, 1), RK_ECLOSED);
  assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &it, sizeof it, RT_HANG), RK_ECLOSED);
}

/* Receive exactly n replies (any lane order, each seq once), then RK_ECLOSED at once. */
static void expect_drained(rk_runtime *rt, rk_kernel *k, uint32_t n, int ordered) {
  uint32_t i, *seen = (uint32_t *)calloc(n, sizeof *seen);
  rk_msg m;
  rt_item it;
  uint64_t t0;
  assert_non_null(seen);
  for (i = 0; i < n; i++) {
    int rc = rk_recv(k, &m, &it, sizeof it, RT_HANG);
    if (rc != RK_OK) fail_msg("reply %u of %u: %s (%s)", i, n, rk_err_name(rc), rk_runtime_last_error(rt));
    assert_true(it.seq < n);
    if (ordered) assert_int_equal(it.seq, i);
    seen[it.seq]++;
  }
  for (i = 0; i < n; i++) assert_int_equal(seen[i], 1);
  free(seen);
  t0 = rt_now_ns();
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, RT_HANG), RK_ECLOSED); /* not a 10 s wait */
  assert_true(rt_now_ns() - t0 < (uint64_t)RT_HANG / 2);
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 0), RK_ECLOSED);
  {
    rk_msg ms[4];
    rt_item bs[4];
    assert_int_equal(rk_recv_batch(k, ms, bs, sizeof(rt_item), 4, 0), RK_ECLOSED);
  }
}

static void run_drain(int how, uint32_t lanes, uint32_t n) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("drain", slow_echo);
  rk_kernel *k;
  rk_kernel_counters st;
  uint32_t i;
  d.lanes = lanes;
  k = rt_launch(rt, &d, NULL);
  if (how >= 1) assert_int_equal(rk_kernel_activate(k), RK_OK);
  if (how == 1) assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  /* how 0: never activated; 1: deactivated; 2: active and busy (each message takes 0.5 ms) */
  for (i = 0; i < n; i++) RT_OK(rt, send_item(k, 1, i, how == 2 ? 500 : 0));
  assert_int_equal(rk_kernel_terminate(k, 30 * RT_SEC), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  st = rt_stats(k);
  assert_int_equal(st.sent, n);
  assert_int_equal(st.msgs_in, n);
  assert_int_equal(st.msgs_out, n);
  expect_closed(k);
  expect_drained(rt, k, n, lanes == 1);
  st = rt_stats(k);
  assert_int_equal(st.received, n);
  assert_int_equal(st.state, RK_STATE_TERMINATED);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_drain_never_activated(void **state) {
  (void)state;
  run_drain(0, 1, 100);
}
static void test_drain_deactivated(void **state) {
  (void)state;
  run_drain(1, 1, 300);
}
static void test_drain_busy(void **state) {
  (void)state;
  run_drain(2, 1, 100);
}
static void test_drain_lanes(void **state) {
  (void)state;
  run_drain(1, 4, 400);
  run_drain(2, 3, 90);
}

/* ---------------------------------------- around terminate ----------------------------------- */

typedef struct waiter {
  rk_kernel *k;
  int rc;
  rt_item got;
  uint64_t ns;
} waiter;

static void *recv_waiter(void *arg) {
  waiter *w = (waiter *)arg;
  rk_msg m;
  uint64_t t0 = rt_now_ns();
  w->rc = rk_recv(w->k, &m, &w->got, sizeof w->got, 30 * RT_SEC);
  w->ns = rt_now_ns() - t0;
  return NULL;
}

static void *call_waiter(void *arg) {
  waiter *w = (waiter *)arg;
  rk_msg m;
  rt_item it = item(7, 77, 0);
  w->rc = rk_call(w->k, RT_ITEM_TYPE, &it, sizeof it, &m, &w->got, sizeof w->got, 30 * RT_SEC);
  return NULL;
}

static void *send_waiter(void *arg) {
  waiter *w = (waiter *)arg;
  w->rc = send_item(w->k, 1, 8, 0);
  return NULL;
}

/* A receiver waiting when terminate comes learns RK_ECLOSED (not its 30 s timeout). */
static void test_terminate_wakes_receiver(void **state) {
  rk_runtime *rt = rt_create();
  uint32_t lanes;
  (void)state;
  for (lanes = 1; lanes <= 2; lanes++) {
    rk_kernel_desc d = rt_desc("recv", slow_echo);
    rk_kernel *k;
    waiter w;
    pthread_t t;
    d.lanes = lanes;
    k = rt_launch_active(rt, &d, NULL);
    memset(&w, 0, sizeof w);
    w.k = k;
    assert_int_equal(pthread_create(&t, NULL, recv_waiter, &w), 0);
    rt_sleep_ms(30);
    assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, RK_ECLOSED);
    assert_true(w.ns < 20 * (uint64_t)RT_SEC);
    rk_kernel_destroy(k);
  }
  rk_runtime_destroy(rt);
}

/* An rk_call to an inactive kernel is accepted; terminate drains it, so the caller gets its reply. */
static void test_terminate_answers_pending_call(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("call", slow_echo);
  rk_kernel *k = rt_launch(rt, &d, NULL);
  waiter w;
  pthread_t t;
  (void)state;
  memset(&w, 0, sizeof w);
  w.k = k;
  assert_int_equal(pthread_create(&t, NULL, call_waiter, &w), 0);
  RT_WAIT_STAT(k, sent, 1);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, RK_OK);
  assert_int_equal(w.got.seq, 77);
  assert_int_equal(rt_stats(k).late_replies, 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A sender blocked on a full inbox learns RK_ECLOSED when the kernel terminates; the messages
 * accepted before are all processed. */
static void test_terminate_releases_blocked_sender(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("blocked", slow_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  waiter w;
  pthread_t t;
  uint32_t i;
  (void)state;
  lo.inbox_capacity = 8;
  lo.send_timeout_ns = 30 * RT_SEC;
  k = rt_launch(rt, &d, &lo);
  for (i = 0; i < 8; i++) RT_OK(rt, send_item(k, 1, i, 0));
  memset(&w, 0, sizeof w);
  w.k = k;
  assert_int_equal(pthread_create(&t, NULL, send_waiter, &w), 0);
  rt_sleep_ms(30);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, RK_ECLOSED);
  assert_int_equal(rt_stats(k).sent, 8);
  expect_drained(rt, k, 8, 1);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Senders racing with terminate: every send that returned 0 is processed and answered, every other
 * one returned RK_ECLOSED. */
typedef struct racer {
  rk_kernel *k;
  uint32_t who, accepted;
  int other;
} racer;

static void *race_send(void *arg) {
  racer *r = (racer *)arg;
  uint32_t i;
  for (i = 0; i < 100000; i++) {
    int rc = send_item(r->k, r->who, r->accepted, 0);
    if (rc == RK_OK)
      r->accepted++;
    else {
      if (rc != RK_ECLOSED) r->other = rc;
      break;
    }
    if (r->accepted >= 300) rt_sleep_ms(1); /* stay within the outbox */
  }
  return NULL;
}

static void test_terminate_races_senders(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("race", slow_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  enum { T = 3 };
  racer r[T];
  pthread_t t[T];
  uint32_t i, total = 0, next[T];
  rk_msg m;
  rt_item it;
  (void)state;
  lo.inbox_capacity = 4096;
  lo.outbox_capacity = 8192;
  k = rt_launch_active(rt, &d, &lo);
  for (i = 0; i < T; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].k = k;
    r[i].who = i;
    assert_int_equal(pthread_create(&t[i], NULL, race_send, &r[i]), 0);
  }
  rt_sleep_ms(20);
  assert_int_equal(rk_kernel_terminate(k, 30 * RT_SEC), RK_OK);
  for (i = 0; i < T; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(r[i].other, 0);
    total += r[i].accepted;
    next[i] = 0;
  }
  assert_int_equal(rt_stats(k).sent, total);
  for (i = 0; i < total; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_true(it.who < T);
    assert_int_equal(it.seq, next[it.who]);
    next[it.who]++;
  }
  for (i = 0; i < T; i++) assert_int_equal(next[i], r[i].accepted);
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, RT_HANG), RK_ECLOSED);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- abort ---------------------------------------------- */

/* The drain cannot finish in time (a handler holds the lane): terminate aborts the lanes, waits
 * its short grace, and says RK_ETIMEDOUT; with the handler still inside, the kernel is FAULTED and
 * still TERMINATING, and a caller whose request is queued behind learns it at once. Once the
 * handler returns, a second terminate finds the lanes gone: TERMINATED. What was not processed is
 * gone, what was replied can still be received. */
static void test_terminate_timeout_aborts(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("abort", slow_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_msg m;
  rt_item it;
  uint32_t i;
  uint64_t t0;
  waiter w;
  pthread_t t;
  char err[256];
  (void)state;
  RT_OK(rt, send_item(k, 1, 0, 0));
  RT_WAIT_STAT(k, msgs_out, 1);
  close_gate();
  RT_OK(rt, send_item(k, 0xbad, 1, 0)); /* holds the lane until the gate opens */
  /* queued behind the gated one, after the lane took it: they are not in its batch */
  assert_true(rt_wait_for(gate_was_entered, NULL, RT_HANG));
  for (i = 2; i < 10; i++) RT_OK(rt, send_item(k, 1, i, 0));
  /* and a caller whose request is queued behind them: it must learn that no reply will come */
  memset(&w, 0, sizeof w);
  w.k = k;
  assert_int_equal(pthread_create(&t, NULL, call_waiter, &w), 0);
  RT_WAIT_STAT(k, sent, 11);
  t0 = rt_now_ns();
  assert_int_equal(rk_kernel_terminate(k, 50 * RT_MS), RK_ETIMEDOUT);
  assert_true(rt_now_ns() - t0 < (uint64_t)RT_HANG);
  assert_non_null(strstr(rk_runtime_last_error(rt), "still running"));
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ETIMEDOUT);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, RK_ESTATE); /* woken by the fault, not its 30 s timeout */
  assert_true(rt_now_ns() - t0 < (uint64_t)RT_HANG);
  assert_int_equal(rk_send(k, 1, "x", 1, 0, NULL), RK_ECLOSED);

  open_gate();
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK); /* the lanes leave: joined now */
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ETIMEDOUT); /* still readable */
  RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
  assert_int_equal(it.seq, 0);
  /* the gated message was finished and answered; the lane then saw the abort and left the rest */
  RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
  assert_int_equal(it.seq, 1);
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, RT_HANG), RK_ECLOSED);
  assert_int_equal(rt_stats(k).msgs_in, 2);
  assert_int_equal(rt_stats(k).sent, 11);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_ESTATE);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* terminate with a timeout of 0 (or one shorter than the lanes' answer) on a kernel with nothing
 * to drain: the lanes are aborted, and nothing was left, so RK_OK (it said "timed out before the
 * inbox drained"). With accepted messages left it is still RK_ETIMEDOUT. */
static void test_terminate_zero_timeout_idle(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("idle", slow_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  (void)state;
  RT_OK(rt, send_item(k, 1, 0, 0));
  RT_WAIT_STAT(k, msgs_out, 1); /* processed: nothing left in the inbox */
  assert_int_equal(rk_kernel_terminate(k, 0), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  rk_kernel_destroy(k);
  /* a lane held by its handler, a message behind it: RK_ETIMEDOUT, as before */
  k = rt_launch_active(rt, &d, NULL);
  close_gate();
  RT_OK(rt, send_item(k, 0xbad, 0, 0));
  assert_true(rt_wait_for(gate_was_entered, NULL, RT_HANG));
  RT_OK(rt, send_item(k, 1, 1, 0));
  assert_int_equal(rk_kernel_terminate(k, 0), RK_ETIMEDOUT);
  open_gate();
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* terminate from the only thread that receives, with more replies to come than the outbox holds:
 * the lane's drain waited for room that only this thread could make (forever with no timeout;
 * with one, the drain was cut and accepted messages were lost). Now the full outbox's replies go
 * to the pending list during the drain, in order, and are all received afterwards. */
static void test_terminate_drains_past_full_outbox(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("backlog", slow_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  rt_item it;
  uint32_t i;
  (void)state;
  lo.inbox_capacity = 64;
  lo.outbox_capacity = 8;
  k = rt_launch(rt, &d, &lo); /* not activated: everything waits in the inbox */
  for (i = 0; i < 40; i++) RT_OK(rt, send_item(k, 1, i, 0));
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK); /* drains all 40 */
  assert_int_equal(rt_stats(k).msgs_in, 40);
  for (i = 0; i < 40; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_int_equal(it.seq, i); /* in order */
  }
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, RT_HANG), RK_ECLOSED);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

typedef struct deactivator {
  rk_kernel *k;
  int rc;
} deactivator;

static void *deactivate_main(void *arg) {
  deactivator *a = (deactivator *)arg;
  a->rc = rk_kernel_deactivate(a->k); /* waits for the lane, inside its handler (command timeout) */
  return NULL;
}

/* terminate's timeout bounds its wait for another lifecycle call holding the kernel: a deactivate
 * waiting for a lane inside a long handler (up to the command timeout, 5 s) made
 * terminate(50 ms) return after it. Now RK_ETIMEDOUT within the timeout, nothing closed; a later
 * terminate drains. */
static void test_terminate_bounded_by_other_lifecycle_call(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("held", slow_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  deactivator a;
  pthread_t t;
  uint64_t t0, took;
  (void)state;
  close_gate();
  RT_OK(rt, send_item(k, 0xbad, 0, 0));
  assert_true(rt_wait_for(gate_was_entered, NULL, RT_HANG));
  a.k = k;
  a.rc = 1;
  assert_int_equal(pthread_create(&t, NULL, deactivate_main, &a), 0);
  usleep(50000); /* (it holds the kernel's lifecycle lock now) */
  t0 = rt_now_ns();
  assert_int_equal(rk_kernel_terminate(k, 50 * RT_MS), RK_ETIMEDOUT);
  took = rt_now_ns() - t0;
  print_message("terminate(50 ms) beside a deactivate waiting for a handler: %llu ms\n",
                (unsigned long long)(took / 1000000));
  assert_non_null(strstr(rk_runtime_last_error(rt), "another lifecycle call"));
  assert_true(took < 1000 * (uint64_t)RT_MS); /* (was the deactivate's 5 s command timeout) */
  assert_int_equal(rk_send(k, 1, "x", 1, 0, NULL), RK_OK); /* nothing was closed */
  open_gate();
  pthread_join(t, NULL);
  assert_int_equal(a.rc, RK_OK);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Timeouts do not add up: terminate(100 ms) on a lane held by its handler returns within its
 * timeout plus the abort grace (100 ms), not a further second; the destroy that follows waits one
 * more grace, not a further second. Bounds with a wide margin for a loaded machine: the old code
 * took 1.1 s and 1.0 s. */
static void test_terminate_timeouts_do_not_add_up(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("held", slow_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  uint64_t t0, t_term, t_destroy;
  (void)state;
  close_gate();
  RT_OK(rt, send_item(k, 0xbad, 0, 0));
  assert_true(rt_wait_for(gate_was_entered, NULL, RT_HANG));
  t0 = rt_now_ns();
  assert_int_equal(rk_kernel_terminate(k, 100 * RT_MS), RK_ETIMEDOUT);
  t_term = rt_now_ns() - t0;
  t0 = rt_now_ns();
  rk_kernel_destroy(k); /* the handler still holds the lane: abandoned, freed when it leaves */
  t_destroy = rt_now_ns() - t0;
  open_gate();
  rk_runtime_destroy(rt);
  print_message("terminate(100 ms) took %llu ms, destroy %llu ms\n", (unsigned long long)(t_term / 1000000),
                (unsigned long long)(t_destroy / 1000000));
  assert_true(t_term >= 100 * (uint64_t)RT_MS);
  assert_true(t_term < 900 * (uint64_t)RT_MS);
  assert_true(t_destroy < 900 * (uint64_t)RT_MS);
}

/* A handler that outlives terminate and its abort grace: terminate returns RK_ETIMEDOUT with the
 * lanes still running and the kernel FAULTED. Once the handler returns, rk_kernel_destroy can
 * reclaim the kernel (ASan checks nothing leaks). */
static void test_terminate_stuck_handler_then_destroy(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("stuck", slow_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  char err[256];
  (void)state;
  close_gate();
  RT_OK(rt, send_item(k, 0xbad, 0, 0));
  RT_OK(rt, send_item(k, 1, 1, 0));
  assert_true(rt_wait_for(gate_was_entered, NULL, RT_HANG));
  assert_int_equal(rk_kernel_terminate(k, 50 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ETIMEDOUT);
  assert_true(strlen(err) > 0);
  assert_int_equal(rk_send(k, 1, "x", 1, 0, NULL), RK_ECLOSED);
  open_gate();
  rk_kernel_destroy(k); /* the lanes exit now (aborted): joined and freed */
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- deactivate keeps state ----------------------------- */

static int64_t counter_add(rk_runtime *rt, rk_kernel *k, int64_t delta, uint64_t *count) {
  rk_counter_add a;
  rk_counter_value v;
  rk_msg m;
  a.delta = delta;
  RT_OK(rt, rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, RT_HANG));
  if (count) *count = v.count;
  return v.total;
}

static void run_deactivate_keeps_state(uint32_t threads) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  rk_counter_value v;
  rk_counter_add a = {10};
  uint64_t count;
  uint32_t i;
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, &rk_builtin_counter, &lo);
  assert_int_equal(counter_add(rt, k, 5, NULL), 5);
  assert_int_equal(counter_add(rt, k, 7, NULL), 12);
  assert_int_equal(counter_add(rt, k, -2, &count), 10);
  assert_int_equal(count, 3);
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  /* queued while inactive: no replies until activated */
  for (i = 0; i < 3; i++) RT_OK(rt, rk_send_typed(k, rk_counter_add, &a, 0, NULL));
  assert_int_equal(rk_recv(k, &m, &v, sizeof v, 30 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(rt_stats(k).msgs_in, 3);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 3; i++) {
    RT_OK(rt, rk_recv(k, &m, &v, sizeof v, RT_HANG));
    assert_non_null(RK_MSG_AS(&m, rk_counter_value));
    assert_int_equal(v.total, 10 + 10 * (int64_t)(i + 1));
    assert_int_equal(v.count, 4 + i);
  }
  assert_int_equal(counter_add(rt, k, 1, &count), 41); /* the running total continues */
  assert_int_equal(count, 7);
  /* and across another round trip through INACTIVE */
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(counter_add(rt, k, 1, &count), 42);
  assert_int_equal(count, 8);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_deactivate_keeps_state(void **state) {
  (void)state;
  run_deactivate_keeps_state(1);
  run_deactivate_keeps_state(4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_drain_never_activated),
      cmocka_unit_test(test_drain_deactivated),
      cmocka_unit_test(test_drain_busy),
      cmocka_unit_test(test_drain_lanes),
      cmocka_unit_test(test_terminate_wakes_receiver),
      cmocka_unit_test(test_terminate_answers_pending_call),
      cmocka_unit_test(test_terminate_releases_blocked_sender),
      cmocka_unit_test(test_terminate_races_senders),
      cmocka_unit_test(test_terminate_timeout_aborts),
      cmocka_unit_test(test_terminate_timeouts_do_not_add_up),
      cmocka_unit_test(test_terminate_zero_timeout_idle),
      cmocka_unit_test(test_terminate_drains_past_full_outbox),
      cmocka_unit_test(test_terminate_bounded_by_other_lifecycle_call),
      cmocka_unit_test(test_terminate_stuck_handler_then_destroy),
      cmocka_unit_test(test_deactivate_keeps_state),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
