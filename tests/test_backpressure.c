/* test_backpressure.c — what a full ring does (ARCHITECTURE §3, §10): a full inbox is never
 * overwritten; REJECT refuses at once, BLOCK waits up to the send timeout and resumes when the
 * kernel drains; a lane whose outbox is full stops taking input until its replies are received,
 * and no reply is lost. Every refusal is counted. */
#include "rt_util.h"

static int item_echo(rk_ctx *ctx, const rk_msg *in) { return rt_item_echo(ctx, in); }

static rt_item item(uint32_t who, uint32_t seq) {
  rt_item it;
  memset(&it, 0, sizeof it);
  it.who = who;
  it.seq = seq;
  return it;
}

static int send_item(rk_kernel *k, uint32_t who, uint32_t seq, uint32_t flags) {
  rt_item it = item(who, seq);
  return rk_send(k, RT_ITEM_TYPE, &it, sizeof it, flags, NULL);
}

/* Receive exactly n replies of sender `who`, with seqs 0..n-1 in order (one lane), then nothing. */
static void expect_replies_in_order(rk_runtime *rt, rk_kernel *k, uint32_t who, uint32_t n) {
  uint32_t i;
  rk_msg m;
  rt_item it;
  for (i = 0; i < n; i++) {
    int rc = rk_recv(k, &m, &it, sizeof it, RT_HANG);
    if (rc != RK_OK) fail_msg("reply %u of %u: %s (%s)", i, n, rk_err_name(rc), rk_runtime_last_error(rt));
    assert_int_equal(it.who, who);
    assert_int_equal(it.seq, i);
  }
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT);
}

/* ---------------------------------------- REJECT --------------------------------------------- */

static void test_reject_policy(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("reject", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_kernel_counters st;
  uint32_t i;
  uint64_t t0;
  (void)state;
  lo.inbox_capacity = 16;
  lo.backpressure = RK_BACKPRESSURE_REJECT;
  k = rt_launch(rt, &d, &lo); /* not active: nothing drains */
  for (i = 0; i < 16; i++) RT_OK(rt, send_item(k, 1, i, 0));
  t0 = rt_now_ns();
  assert_int_equal(send_item(k, 1, 16, 0), RK_EAGAIN);
  assert_true(rt_now_ns() - t0 < (uint64_t)RT_HANG / 10); /* at once: a hang check only */
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_EAGAIN"));
  {
    rt_item it = item(1, 16);
    rk_send_item b[3];
    rk_msg m;
    memset(b, 0, sizeof b);
    for (i = 0; i < 3; i++) {
      b[i].type = RT_ITEM_TYPE;
      b[i].len = sizeof it;
      b[i].payload = &it;
    }
    assert_int_equal(rk_send_key(k, 5, RT_ITEM_TYPE, &it, sizeof it, 0, NULL), RK_EAGAIN);
    assert_int_equal(rk_send_batch(k, b, 3), RK_EAGAIN);
    assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &it, sizeof it, RT_HANG), RK_EAGAIN);
  }
  st = rt_stats(k);
  assert_int_equal(st.sent, 16);
  assert_int_equal(st.send_rejected, 4);
  assert_int_equal(st.send_timeouts, 0);
  assert_int_equal(st.msgs_in, 0);
  assert_int_equal(st.inbox_depth[0], 16);

  /* Nothing lost, nothing duplicated: every accepted message is processed exactly once. */
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  expect_replies_in_order(rt, k, 1, 16);
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, 16);
  assert_int_equal(st.msgs_out, 16);
  assert_int_equal(st.received, 16);
  /* Room again: accepted. */
  RT_OK(rt, send_item(k, 2, 0, 0));
  expect_replies_in_order(rt, k, 2, 1);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* REJECT on a kernel of several lanes: each lane's inbox fills on its own. */
static void test_reject_lanes(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("reject4", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_kernel_counters st;
  uint32_t i, accepted = 0, seen[64];
  rk_msg m;
  rt_item it;
  (void)state;
  d.backpressure = RK_BACKPRESSURE_REJECT; /* from the descriptor this time */
  lo.lanes = 4;
  lo.inbox_capacity = 8;
  k = rt_launch(rt, &d, &lo);
  for (i = 0; i < 64; i++) {
    int rc = send_item(k, 1, i, 0);
    if (rc == RK_OK)
      accepted++;
    else
      assert_int_equal(rc, RK_EAGAIN);
  }
  assert_int_equal(accepted, 32); /* round-robin fills 4 x 8 before any lane refuses */
  st = rt_stats(k);
  assert_int_equal(st.send_rejected, 32);
  for (i = 0; i < 4; i++) assert_int_equal(st.inbox_depth[i], 8);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  memset(seen, 0, sizeof seen);
  for (i = 0; i < 32; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_true(it.seq < 32);
    seen[it.seq]++;
  }
  for (i = 0; i < 32; i++) assert_int_equal(seen[i], 1);
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* RK_SEND_NOWAIT: REJECT for one send on a BLOCK kernel. */
static void test_nowait_flag(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("nowait", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  uint32_t i;
  uint64_t t0;
  (void)state;
  lo.inbox_capacity = 4;
  lo.send_timeout_ns = 10 * RT_SEC; /* a blocking send would hang the test */
  k = rt_launch(rt, &d, &lo);
  for (i = 0; i < 4; i++) RT_OK(rt, send_item(k, 1, i, RK_SEND_NOWAIT));
  t0 = rt_now_ns();
  assert_int_equal(send_item(k, 1, 4, RK_SEND_NOWAIT), RK_EAGAIN);
  assert_true(rt_now_ns() - t0 < (uint64_t)RT_SEC);
  assert_int_equal(rt_stats(k).send_rejected, 1);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  expect_replies_in_order(rt, k, 1, 4);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- BLOCK ---------------------------------------------- */

static void test_block_timeout(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("block", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_kernel_counters st;
  uint32_t i;
  uint64_t t0, dt;
  (void)state;
  lo.inbox_capacity = 8;
  lo.send_timeout_ns = 100 * RT_MS;
  k = rt_launch(rt, &d, &lo);
  for (i = 0; i < 8; i++) RT_OK(rt, send_item(k, 1, i, 0));
  t0 = rt_now_ns();
  assert_int_equal(send_item(k, 1, 8, 0), RK_ETIMEDOUT);
  dt = rt_now_ns() - t0;
  /* about the timeout: not before it, and not hanging */
  if (dt < 90 * (uint64_t)RT_MS || dt > (uint64_t)RT_HANG)
    fail_msg("blocked send returned after %llu ms (timeout 100 ms)", (unsigned long long)(dt / 1000000));
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_ETIMEDOUT"));
  /* an rk_call whose request never got in says so (it said "no reply within", as if it had been
   * sent and not answered) */
  {
    rk_msg m;
    rt_item it = item(1, 9), rep;
    assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, 20 * RT_MS), RK_ETIMEDOUT);
    assert_null(strstr(rk_runtime_last_error(rt), "no reply"));
    assert_non_null(strstr(rk_runtime_last_error(rt), "full"));
  }
  st = rt_stats(k);
  assert_int_equal(st.send_timeouts, 2);
  assert_int_equal(st.send_rejected, 0);
  assert_int_equal(st.sent, 8);
  assert_int_equal(st.msgs_in, 0);
  /* The timed-out send claimed nothing: exactly the 8 accepted are processed. */
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  expect_replies_in_order(rt, k, 1, 8);
  assert_int_equal(rt_stats(k).msgs_in, 8);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

typedef struct blocked {
  rk_kernel *k;
  uint32_t who, first, n;
  int rc;
  int done; /* atomics */
} blocked;

static void *blocked_send(void *arg) {
  blocked *b = (blocked *)arg;
  uint32_t i;
  int rc = RK_OK;
  for (i = 0; i < b->n && rc == RK_OK; i++) rc = send_item(b->k, b->who, b->first + i, 0);
  b->rc = rc;
  __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE); /* pairs with the test's acquire */
  return NULL;
}

static void test_block_unblocks_on_activate(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("block2", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_kernel_counters st;
  enum { T = 3, PER = 20 };
  blocked b[T];
  pthread_t th[T];
  uint32_t i, next[T + 1];
  rk_msg m;
  rt_item it;
  (void)state;
  lo.inbox_capacity = 8;
  lo.outbox_capacity = 128; /* replies wait for us; the inbox is the bottleneck */
  lo.send_timeout_ns = 20 * RT_SEC;
  k = rt_launch(rt, &d, &lo);
  for (i = 0; i < 8; i++) RT_OK(rt, send_item(k, T, i, 0));
  for (i = 0; i < T; i++) {
    b[i].k = k;
    b[i].who = i;
    b[i].first = 0;
    b[i].n = PER;
    b[i].rc = 1;
    b[i].done = 0;
    assert_int_equal(pthread_create(&th[i], NULL, blocked_send, &b[i]), 0);
  }
  rt_sleep_ms(50);
  for (i = 0; i < T; i++) assert_int_equal(__atomic_load_n(&b[i].done, __ATOMIC_ACQUIRE), 0); /* still blocked */
  assert_int_equal(rt_stats(k).sent, 8);
  assert_int_equal(rk_kernel_activate(k), RK_OK); /* the lane drains; the senders get through */
  for (i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(b[i].rc, RK_OK);
  }
  /* Every message once; each sender's in its own order. */
  memset(next, 0, sizeof next);
  for (i = 0; i < 8 + T * PER; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_true(it.who <= T);
    assert_int_equal(it.seq, next[it.who]);
    next[it.who]++;
  }
  assert_int_equal(next[T], 8);
  for (i = 0; i < T; i++) assert_int_equal(next[i], PER);
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT);
  st = rt_stats(k);
  assert_int_equal(st.send_timeouts, 0);
  assert_int_equal(st.sent, 8 + T * PER);
  assert_int_equal(st.msgs_in, 8 + T * PER);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A batch larger than the room left: the items that fit are accepted (in order), the first that
 * does not fit ends the batch after the policy's wait; the count says how many went. */
static void test_batch_partial(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("partial", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_send_item items[12];
  rt_item p[12];
  uint32_t i, pol;
  uint64_t t0;
  (void)state;
  for (pol = 0; pol < 2; pol++) {
    lo.inbox_capacity = 8;
    lo.send_timeout_ns = 50 * RT_MS;
    lo.backpressure = pol ? RK_BACKPRESSURE_REJECT : RK_BACKPRESSURE_BLOCK;
    k = rt_launch(rt, &d, &lo);
    for (i = 0; i < 12; i++) {
      p[i] = item(1, i);
      memset(&items[i], 0, sizeof items[i]);
      items[i].type = RT_ITEM_TYPE;
      items[i].len = sizeof p[i];
      items[i].payload = &p[i];
    }
    t0 = rt_now_ns();
    assert_int_equal(rk_send_batch(k, items, 12), 8);
    if (!pol) assert_true(rt_now_ns() - t0 >= 40 * (uint64_t)RT_MS); /* BLOCK waited */
    assert_int_equal(rt_stats(k).sent, 8);
    assert_int_equal(pol ? rt_stats(k).send_rejected : rt_stats(k).send_timeouts, 1);
    for (i = 0; i < 8; i++) assert_true(items[i].msg_id != 0);
    /* full from the start: the error itself */
    assert_int_equal(rk_send_batch(k, &items[8], 4), pol ? RK_EAGAIN : RK_ETIMEDOUT);
    assert_int_equal(rk_kernel_activate(k), RK_OK);
    expect_replies_in_order(rt, k, 1, 8);
    rk_kernel_destroy(k);
  }
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- outbox full ---------------------------------------- */

static int depth_is(void *arg) {
  rk_kernel *k = (rk_kernel *)arg;
  rk_kernel_counters st = rt_stats(k);
  return st.outbox_stalls > 0 && st.msgs_in == 4 && st.outbox_depth[0] == 4;
}

static void test_outbox_full_stalls_lane(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("stall", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_kernel_counters st;
  uint32_t i;
  (void)state;
  lo.inbox_capacity = 64;
  lo.outbox_capacity = 4;
  k = rt_launch_active(rt, &d, &lo);
  for (i = 0; i < 32; i++) RT_OK(rt, send_item(k, 1, i, 0));
  /* Nobody receives: the lane fills its outbox, then stops taking input. */
  if (!rt_wait_for(depth_is, k, RT_HANG)) {
    st = rt_stats(k);
    fail_msg("no outbox stall: stalls %llu, msgs_in %llu, outbox depth %llu", (unsigned long long)st.outbox_stalls,
             (unsigned long long)st.msgs_in, (unsigned long long)st.outbox_depth[0]);
  }
  rt_sleep_ms(50);
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, 4); /* still stopped */
  assert_int_equal(st.msgs_out, 4);
  assert_int_equal(st.inbox_depth[0], 28);
  assert_int_equal(st.outbox_depth[0], 4);
  assert_true(st.outbox_stalls >= 1);
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  /* A sender refused now hears why: not "inbox full", but the outbox, and what to do about it. */
  for (i = 32; i < 68; i++) RT_OK(rt, send_item(k, 1, i, 0)); /* 28 + 36: the inbox is full */
  assert_int_equal(send_item(k, 1, 68, RK_SEND_NOWAIT), RK_EAGAIN);
  {
    const char *e = rk_runtime_last_error(rt);
    if (strstr(e, "OUTBOX is full") == NULL || strstr(e, "rk_recv") == NULL || strstr(e, "RK_SEND_NO_REPLY") == NULL)
      fail_msg("a full outbox is not named: %s", e);
  }
  /* Receiving makes room: the lane resumes, and every reply arrives, in order. */
  expect_replies_in_order(rt, k, 1, 68);
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, 68);
  assert_int_equal(st.msgs_out, 68);
  assert_int_equal(st.received, 68);
  assert_int_equal(st.invalid, 0);
  assert_int_equal(st.handler_errors, 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A full outbox also slows rk_call callers rather than losing their replies: calls from several
 * threads through a 2-slot outbox all complete. */
typedef struct caller {
  rk_kernel *k;
  uint32_t who, n;
  int failures;
} caller;

static void *call_loop(void *arg) {
  caller *c = (caller *)arg;
  uint32_t i;
  for (i = 0; i < c->n; i++) {
    rt_item req = item(c->who, i), rep;
    rk_msg m;
    if (rk_call(c->k, RT_ITEM_TYPE, &req, sizeof req, &m, &rep, sizeof rep, RT_HANG) != RK_OK || rep.who != c->who ||
        rep.seq != i)
      c->failures++;
  }
  return NULL;
}

static void test_small_outbox_calls(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("small", item_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  enum { T = 4 };
  pthread_t th[T];
  caller c[T];
  uint32_t i, per = RT_SANITIZED ? 100 : 300;
  (void)state;
  lo.inbox_capacity = 4;
  lo.outbox_capacity = 2;
  k = rt_launch_active(rt, &d, &lo);
  for (i = 0; i < T; i++) {
    c[i].k = k;
    c[i].who = i;
    c[i].n = per;
    c[i].failures = 0;
    assert_int_equal(pthread_create(&th[i], NULL, call_loop, &c[i]), 0);
  }
  for (i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(c[i].failures, 0);
  }
  assert_int_equal(rt_stats(k).received, T * per);
  assert_int_equal(rt_stats(k).late_replies, 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reject_policy),
      cmocka_unit_test(test_reject_lanes),
      cmocka_unit_test(test_nowait_flag),
      cmocka_unit_test(test_block_timeout),
      cmocka_unit_test(test_block_unblocks_on_activate),
      cmocka_unit_test(test_batch_partial),
      cmocka_unit_test(test_outbox_full_stalls_lane),
      cmocka_unit_test(test_small_outbox_calls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
