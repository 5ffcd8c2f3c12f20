/* test_messaging.c — sending to ring kernels and receiving their replies (ARCHITECTURE §3):
 * rk_call round trips, rk_send + rk_recv, keyed ordering over several lanes, batches, concurrent
 * callers each getting exactly their own reply, no-reply sends, asynchronous receive on the service
 * thread, argument checks, and the HLC stamps along the way (§5). */
#include "rt_util.h"

#include <uv.h>

static int item_echo(rk_ctx *ctx, const rk_msg *in) { return rt_item_echo(ctx, in); }

static rk_kernel_desc item_desc(uint32_t lanes) {
  rk_kernel_desc d = rt_desc("item_echo", item_echo);
  d.lanes = lanes;
  return d;
}

static rt_item item(uint32_t who, uint32_t seq, uint64_t key) {
  rt_item it;
  memset(&it, 0, sizeof it);
  it.who = who;
  it.seq = seq;
  it.key = key;
  return it;
}

/* ---------------------------------------- call ----------------------------------------------- */

static void test_call_echo(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  uint8_t req[176], buf[256];
  uint32_t lens[] = {0, 1, 7, 64, 100, 175, 176}; /* 176 = 256-byte slot - 16 (its word) - 64 (envelope) */
  size_t i;
  rk_msg m;
  (void)state;
  for (i = 0; i < sizeof req; i++) req[i] = (uint8_t)(i * 7 + 3);
  for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    memset(buf, 0xee, sizeof buf);
    memset(&m, 0, sizeof m);
    RT_OK(rt, rk_call(k, 42, req, lens[i], &m, buf, sizeof buf, RT_HANG));
    assert_int_equal(m.status, 0);
    assert_int_equal(rk_msg_type_of(&m), 42);
    assert_int_equal(rk_msg_len(&m), lens[i]);
    assert_int_equal(m.env.payload_len, lens[i]);
    assert_true(m.env.flags & RK_ENV_F_REPLY);
    assert_false(rk_msg_is_error(&m));
    assert_int_equal(m.env.src, rk_kernel_id(k));
    assert_int_equal(m.env.dst, 0); /* to the host */
    if (lens[i]) {
      assert_ptr_equal(m.payload, buf);
      assert_memory_equal(buf, req, lens[i]);
    } else {
      assert_null(m.payload);
    }
    if (buf[lens[i]] != 0xee) fail_msg("len %u: byte past the payload written", lens[i]);
  }
  /* A payload larger than the caller's buffer is truncated, and the call says so (RK_EMSGSIZE):
   * the reply was received all the same, and the envelope tells the full size. */
  memset(buf, 0xee, sizeof buf);
  assert_int_equal(rk_call(k, 42, req, 100, &m, buf, 10, RT_HANG), RK_EMSGSIZE);
  assert_non_null(strstr(rk_runtime_last_error(rt), "100-byte reply"));
  assert_int_equal(m.len, 10);
  assert_int_equal(m.env.payload_len, 100);
  assert_int_equal(m.status, 0);
  assert_memory_equal(buf, req, 10);
  assert_int_equal(buf[10], 0xee);
  /* rk_call_key: the same, routed by key. */
  RT_OK(rt, rk_call_key(k, 12345, 43, req, 5, &m, buf, sizeof buf, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 43);
  assert_memory_equal(buf, req, 5);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_call_timeout(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch(rt, &rk_builtin_echo, NULL); /* never activated: nothing answers */
  uint8_t x = 1, buf[8];
  rk_msg m;
  rk_kernel_counters st;
  uint64_t t0 = rt_now_ns();
  (void)state;
  assert_int_equal(rk_call(k, 1, &x, 1, &m, buf, sizeof buf, 30 * RT_MS), RK_ETIMEDOUT);
  assert_true(rt_now_ns() - t0 >= 25 * (uint64_t)RT_MS);
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_ETIMEDOUT"));
  /* The late reply is discarded and counted, never handed to rk_recv. */
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_OK(rt, rk_call(k, 2, &x, 1, &m, buf, sizeof buf, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 2);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  st = rt_stats(k);
  assert_int_equal(st.late_replies, 1);
  assert_int_equal(st.received, 1);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* rk_call with timeout 0 could never succeed, yet its request used to be sent and run: it is
 * refused (RK_EINVAL) before anything is sent. */
static void test_call_timeout_zero(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  uint8_t x = 1, buf[8];
  rk_msg m;
  (void)state;
  assert_int_equal(rk_call(k, 1, &x, 1, &m, buf, sizeof buf, 0), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "timeout 0"));
  assert_int_equal(rk_call_key(k, 5, 1, &x, 1, &m, buf, sizeof buf, 0), RK_EINVAL);
  assert_int_equal(rt_stats(k).sent, 0);
  RT_OK(rt, rk_call(k, 1, &x, 1, &m, buf, sizeof buf, RT_HANG)); /* the kernel saw only this one */
  assert_int_equal(rt_stats(k).msgs_in, 1);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Send flags the library does not know are refused, not silently ignored. */
static void test_unknown_send_flags(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  uint8_t x = 1, buf[8];
  rk_send_item items[2];
  rk_msg m;
  (void)state;
  assert_int_equal(rk_send(k, 1, &x, 1, 0x100, NULL), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "unknown send flags 0x100"));
  assert_int_equal(rk_send_key(k, 3, 1, &x, 1, 0x80000000u, NULL), RK_EINVAL);
  memset(items, 0, sizeof items);
  items[0].type = items[1].type = 1;
  items[0].len = items[1].len = 1;
  items[0].payload = items[1].payload = &x;
  items[1].flags = 0x10;
  assert_int_equal(rk_send_batch(k, items, 2), 1); /* the first is accepted; the batch stops at the second */
  assert_non_null(strstr(rk_runtime_last_error(rt), "unknown send flags 0x10"));
  assert_int_equal(rk_send_batch(k, &items[1], 1), RK_EINVAL);
  RT_OK(rt, rk_send(k, 1, &x, 1, RK_SEND_FLAGS_ALL & ~(uint32_t)RK_SEND_NOWAIT, NULL)); /* every known flag */
  assert_int_equal(rt_stats(k).sent, 2);
  assert_int_equal(rt_stats(k).send_invalid, 4);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG)); /* the batch's; the other was NO_REPLY */
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- send / recv ---------------------------------------- */

static void test_send_recv(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  enum { N = 100 };
  uint64_t ids[N];
  uint32_t i, v;
  rk_msg m;
  uint8_t buf[64];
  (void)state;
  for (i = 0; i < N; i++) {
    v = i * 3 + 1;
    ids[i] = 0;
    RT_OK(rt, rk_send(k, 5, &v, sizeof v, 0, &ids[i]));
    assert_true(ids[i] != 0);
    if (i) assert_true(ids[i] != ids[i - 1]);
  }
  /* One lane: replies come back in order, each naming its request. */
  for (i = 0; i < N; i++) {
    assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK); /* 0, not a count */
    assert_int_equal(m.env.correlation_id, ids[i]);
    assert_int_equal(m.len, sizeof v);
    memcpy(&v, buf, sizeof v);
    assert_int_equal(v, i * 3 + 1);
  }
  /* Nothing more: poll and timed receive. */
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 0), RK_EAGAIN);
  {
    uint64_t t0 = rt_now_ns();
    assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
    assert_true(rt_now_ns() - t0 >= 15 * (uint64_t)RT_MS);
  }
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_send_key_order(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(4);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  enum { KEYS = 8, PER = 50 };
  uint32_t next[KEYS], lane_of[KEYS], i, j, lanes_used = 0;
  rk_msg m;
  rt_item it;
  (void)state;
  for (i = 0; i < KEYS; i++) {
    next[i] = 0;
    lane_of[i] = UINT32_MAX;
  }
  for (j = 0; j < PER; j++)
    for (i = 0; i < KEYS; i++) {
      it = item(i, j, 1000 + i * 7919);
      RT_OK(rt, rk_send_key(k, it.key, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
    }
  for (j = 0; j < KEYS * PER; j++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_int_equal(m.len, sizeof it);
    assert_true(it.who < KEYS);
    /* same key -> same lane -> in order */
    assert_int_equal(it.seq, next[it.who]);
    next[it.who]++;
    if (lane_of[it.who] == UINT32_MAX) {
      lane_of[it.who] = it.lane;
      lanes_used |= 1u << it.lane;
    }
    assert_int_equal(it.lane, lane_of[it.who]);
    assert_int_equal(m.env.lane, it.lane);
  }
  for (i = 0; i < KEYS; i++) assert_int_equal(next[i], PER);
  assert_true(__builtin_popcount(lanes_used) > 1); /* keys spread over lanes */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_send_batch(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(4);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  enum { N = 40 };
  rk_send_item items[N];
  rt_item payloads[N], it;
  uint32_t seen[N], i, next_keyed[3] = {0, 0, 0};
  rk_msg m;
  rk_kernel_counters st;
  int rc;
  (void)state;
  for (i = 0; i < N; i++) {
    /* every third item keyed (three keys), the rest round-robin */
    payloads[i] = item(i % 3 == 0 ? (i / 3) % 3 : 100, i, 77 + (i / 3) % 3);
    memset(&items[i], 0, sizeof items[i]);
    items[i].type = RT_ITEM_TYPE;
    items[i].len = sizeof(rt_item);
    items[i].payload = &payloads[i];
    items[i].key = payloads[i].key;
    items[i].flags = i % 3 == 0 ? RK_SEND_KEYED : 0;
    seen[i] = 0;
  }
  rc = rk_send_batch(k, items, N);
  assert_int_equal(rc, N);
  for (i = 0; i < N; i++) assert_true(items[i].msg_id != 0);
  for (i = 0; i < N; i++) {
    uint32_t j;
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_true(it.seq < N);
    assert_int_equal(m.env.correlation_id, items[it.seq].msg_id);
    seen[it.seq]++;
    if (it.who < 3) { /* keyed: in order per key */
      for (j = next_keyed[it.who]; j < N; j++)
        if (j % 3 == 0 && (j / 3) % 3 == it.who) break;
      assert_int_equal(it.seq, j);
      next_keyed[it.who] = j + 1;
    }
  }
  for (i = 0; i < N; i++) assert_int_equal(seen[i], 1);

  /* The first failure stops the batch: items before it are sent, in order; it and after are not. */
  items[5].type = 0;
  rc = rk_send_batch(k, items, N);
  assert_int_equal(rc, 5);
  for (i = 0; i < 5; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_true(it.seq < 5);
  }
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT);
  /* Failing at the first item returns the error. */
  assert_int_equal(rk_send_batch(k, &items[5], 3), RK_EINVAL);
  items[5].type = RT_ITEM_TYPE;
  items[6].len = 100000;
  assert_int_equal(rk_send_batch(k, &items[6], 3), RK_EMSGSIZE);
  assert_int_equal(rk_send_batch(k, items, 0), 0);
  assert_int_equal(rk_send_batch(k, NULL, 1), RK_EINVAL);
  assert_int_equal(rk_send_batch(NULL, items, 1), RK_EINVAL);
  st = rt_stats(k);
  assert_int_equal(st.sent, N + 5);
  assert_true(st.send_invalid >= 3);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_recv_batch(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(2);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  enum { N = 50, B = 8 };
  rk_msg msgs[B];
  rt_item bufs[B];
  uint32_t got = 0, seen[N], i;
  (void)state;
  memset(seen, 0, sizeof seen);
  for (i = 0; i < N; i++) {
    rt_item it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  while (got < N) {
    int n = rk_recv_batch(k, msgs, bufs, sizeof(rt_item), B, RT_HANG);
    if (n < 0) fail_msg("rk_recv_batch: %s", rk_err_name(n));
    assert_true(n >= 1 && n <= B);
    for (i = 0; i < (uint32_t)n; i++) {
      assert_ptr_equal(msgs[i].payload, &bufs[i]);
      assert_int_equal(msgs[i].len, sizeof(rt_item));
      assert_true(bufs[i].seq < N);
      seen[bufs[i].seq]++;
    }
    got += (uint32_t)n;
  }
  assert_int_equal(got, N);
  for (i = 0; i < N; i++) assert_int_equal(seen[i], 1);
  assert_int_equal(rk_recv_batch(k, msgs, bufs, sizeof(rt_item), B, 0), RK_EAGAIN);
  assert_int_equal(rk_recv_batch(k, msgs, bufs, sizeof(rt_item), 0, 0), RK_EINVAL);
  assert_int_equal(rk_recv_batch(k, NULL, bufs, sizeof(rt_item), 1, 0), RK_EINVAL);
  assert_int_equal(rk_recv_batch(k, msgs, NULL, sizeof(rt_item), 1, 0), RK_EINVAL);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- concurrency ---------------------------------------- */

typedef struct caller {
  rk_kernel *k;
  uint32_t who, n;
  int keyed;
  int failures;
  char why[160];
} caller;

static void *call_loop(void *arg) {
  caller *c = (caller *)arg;
  uint32_t i;
  for (i = 0; i < c->n && !c->failures; i++) {
    rt_item req = item(c->who, i, c->who), rep;
    rk_msg m;
    int rc;
    memset(&rep, 0, sizeof rep);
    rc = c->keyed ? rk_call_key(c->k, req.key, RT_ITEM_TYPE, &req, sizeof req, &m, &rep, sizeof rep, RT_HANG)
                  : rk_call(c->k, RT_ITEM_TYPE, &req, sizeof req, &m, &rep, sizeof rep, RT_HANG);
    if (rc != RK_OK || m.len != sizeof rep || rep.who != c->who || rep.seq != i ||
        rk_msg_type_of(&m) != RT_ITEM_TYPE) {
      c->failures++;
      snprintf(c->why, sizeof c->why, "caller %u call %u: rc %s, len %u, got who %u seq %u", c->who, i,
               rk_err_name(rc), m.len, rep.who, rep.seq);
    }
  }
  return NULL;
}

static void test_concurrent_calls(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(3);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  enum { T = 6 };
  uint32_t per = RT_SANITIZED ? 150 : 500, i;
  pthread_t th[T];
  caller c[T];
  rk_kernel_counters st;
  (void)state;
  for (i = 0; i < T; i++) {
    memset(&c[i], 0, sizeof c[i]);
    c[i].k = k;
    c[i].who = i;
    c[i].n = per;
    c[i].keyed = i % 2;
    assert_int_equal(pthread_create(&th[i], NULL, call_loop, &c[i]), 0);
  }
  for (i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    if (c[i].failures) fail_msg("%s", c[i].why);
  }
  st = rt_stats(k);
  assert_int_equal(st.sent, T * per);
  assert_int_equal(st.msgs_in, T * per);
  assert_int_equal(st.msgs_out, T * per);
  assert_int_equal(st.received, T * per);
  assert_int_equal(st.late_replies, 0);
  assert_int_equal(st.latency_count, T * per);
  rt_no_clock_refusals(k);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* rk_call callers and an rk_send/rk_recv thread on the same lanes: the receiver gets exactly the
 * replies to its own sends (never a caller's), the callers exactly theirs. */
typedef struct sender {
  rk_kernel *k;
  uint32_t n;
  int failures;
  char why[160];
} sender;

static void *send_recv_loop(void *arg) {
  sender *s = (sender *)arg;
  uint32_t sent = 0, got = 0, next = 0;
  while (got < s->n && !s->failures) {
    rk_msg m;
    rt_item it;
    int rc;
    /* keep up to 16 in flight */
    while (sent < s->n && sent - got < 16) {
      it = item(999, sent, 0);
      rc = rk_send(s->k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL);
      if (rc != RK_OK) {
        s->failures++;
        snprintf(s->why, sizeof s->why, "send %u: %s", sent, rk_err_name(rc));
        return NULL;
      }
      sent++;
    }
    rc = rk_recv(s->k, &m, &it, sizeof it, RT_HANG);
    if (rc != RK_OK || it.who != 999 || it.seq != next) {
      s->failures++;
      snprintf(s->why, sizeof s->why, "recv %u: rc %s who %u seq %u", got, rk_err_name(rc), it.who, it.seq);
      return NULL;
    }
    next++;
    got++;
  }
  return NULL;
}

static void test_calls_and_recv_mixed(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(1); /* one lane: the recv stream is ordered */
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  enum { T = 3 };
  uint32_t per = RT_SANITIZED ? 100 : 400, i;
  pthread_t th[T], ts;
  caller c[T];
  sender s;
  (void)state;
  memset(&s, 0, sizeof s);
  s.k = k;
  s.n = per * 2;
  assert_int_equal(pthread_create(&ts, NULL, send_recv_loop, &s), 0);
  for (i = 0; i < T; i++) {
    memset(&c[i], 0, sizeof c[i]);
    c[i].k = k;
    c[i].who = i;
    c[i].n = per;
    assert_int_equal(pthread_create(&th[i], NULL, call_loop, &c[i]), 0);
  }
  for (i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    if (c[i].failures) fail_msg("%s", c[i].why);
  }
  pthread_join(ts, NULL);
  if (s.failures) fail_msg("%s", s.why);
  {
    rk_msg m;
    rt_item it;
    assert_int_equal(rk_recv(k, &m, &it, sizeof it, 0), RK_EAGAIN);
  }
  rt_no_clock_refusals(k);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* The CPU lane reuses a clock reading across host batches (cpu_backend.c, lane_pt). A stamp that
 * an old reading refuses as too far ahead is merged again with a fresh reading, and so is every
 * later message of the same batch: the second of a batch was once refused under the batch's old
 * reading after the first had taken the fresh one (issue 16). A fake time source makes the old
 * reading 2 s old, four times the default drift bound. */
static uint64_t g_fake_us;
static uint64_t fake_time_us(void *user) {
  (void)user;
  return __atomic_load_n(&g_fake_us, __ATOMIC_RELAXED);
}

static void test_lane_reused_reading_refreshed(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel *k;
  rk_msg m;
  uint8_t x = 1, buf[8];
  int i;
  (void)state;
  __atomic_store_n(&g_fake_us, rk_realtime_us(), __ATOMIC_RELAXED);
  o.time_source = fake_time_us;
  rt = rt_create_opts(&o);
  k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  RT_OK(rt, rk_call(k, 1, &x, 1, &m, buf, sizeof buf, RT_HANG)); /* the lane reads the time: T */
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  __atomic_store_n(&g_fake_us, __atomic_load_n(&g_fake_us, __ATOMIC_RELAXED) + 2000000, __ATOMIC_RELAXED);
  for (i = 0; i < 4; i++) RT_OK(rt, rk_send(k, 1, &x, 1, 0, NULL)); /* stamped T + 2 s */
  assert_int_equal(rk_kernel_activate(k), RK_OK); /* one batch of four, its reading T reused */
  for (i = 0; i < 4; i++) {
    RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
    assert_false(m.env.flags & RK_ENV_F_ERROR);
    assert_int_equal(m.status, 0);
  }
  assert_int_equal(rt_stats(k).clock_rejected, 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- no reply ------------------------------------------- */

static void test_no_reply(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  rk_kernel *c = rt_launch_active(rt, &rk_builtin_counter, NULL);
  rk_kernel_desc vd = rk_builtin_vector_add;
  rk_kernel *v;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel_counters st;
  rk_msg m;
  uint8_t buf[256];
  uint32_t i, x = 7;
  (void)state;
  lo.threads_per_lane = 2; /* the reserve/commit path with a cooperating lane */
  v = rt_launch_active(rt, &vd, &lo);
  for (i = 0; i < 10; i++) RT_OK(rt, rk_send(k, 3, &x, sizeof x, RK_SEND_NO_REPLY, NULL));
  {
    rk_counter_add a = {2};
    rk_vadd_req r;
    memset(&r, 0, sizeof r);
    r.n = 4;
    for (i = 0; i < 5; i++) {
      RT_OK(rt, rk_send_typed(c, rk_counter_add, &a, RK_SEND_NO_REPLY, NULL));
      RT_OK(rt, rk_send_typed(v, rk_vadd_req, &r, RK_SEND_NO_REPLY, NULL));
    }
  }
  RT_WAIT_STAT(k, msgs_in, 10);
  RT_WAIT_STAT(c, msgs_in, 5);
  RT_WAIT_STAT(v, msgs_in, 5);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 30 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(rk_recv(c, &m, buf, sizeof buf, 0), RK_EAGAIN);
  assert_int_equal(rk_recv(v, &m, buf, sizeof buf, 0), RK_EAGAIN);
  st = rt_stats(k);
  assert_int_equal(st.sent, 10);
  assert_int_equal(st.msgs_in, 10);
  assert_int_equal(st.msgs_out, 0);
  assert_int_equal(st.received, 0);
  assert_int_equal(rt_stats(c).msgs_out, 0);
  assert_int_equal(rt_stats(v).msgs_out, 0);
  /* The counter still counted them: state changed, no reply. */
  {
    rk_counter_add a = {0};
    rk_counter_value cv;
    RT_OK(rt, rk_call_typed(c, rk_counter_add, &a, &m, &cv, sizeof cv, RT_HANG));
    assert_int_equal(cv.total, 10);
    assert_int_equal(cv.count, 6);
  }
  /* A normal send still gets exactly its reply. */
  RT_OK(rt, rk_send(k, 4, &x, sizeof x, 0, NULL));
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 4);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 0), RK_EAGAIN);
  rk_kernel_destroy(v);
  rk_kernel_destroy(c);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- callbacks ------------------------------------------ */

typedef struct cb_state {
  pthread_mutex_t lock;
  uint32_t count;
  uint32_t seen[1024];
  uint32_t bad;
  pthread_t first_thread;
  int have_thread;
  int other_thread;
  rk_kernel *k;
} cb_state;

static void on_reply(rk_kernel *k, const rk_msg *m, void *user) {
  cb_state *s = (cb_state *)user;
  rt_item it;
  pthread_mutex_lock(&s->lock);
  if (k != s->k || m->len != sizeof it || m->payload == NULL) {
    s->bad++;
  } else {
    memcpy(&it, m->payload, sizeof it);
    if (it.seq < 1024) s->seen[it.seq]++;
    else s->bad++;
  }
  if (!s->have_thread) {
    s->first_thread = pthread_self();
    s->have_thread = 1;
  } else if (!pthread_equal(s->first_thread, pthread_self())) {
    s->other_thread++;
  }
  s->count++;
  pthread_mutex_unlock(&s->lock);
}

static uint32_t cb_count(cb_state *s) {
  uint32_t n;
  pthread_mutex_lock(&s->lock);
  n = s->count;
  pthread_mutex_unlock(&s->lock);
  return n;
}

static int cb_reached(void *arg) {
  cb_state *s = (cb_state *)arg;
  return cb_count(s) >= s->seen[1023]; /* seen[1023] holds the target (never a real seq here) */
}

static void wait_cb(cb_state *s, uint32_t n) {
  pthread_mutex_lock(&s->lock);
  s->seen[1023] = n;
  pthread_mutex_unlock(&s->lock);
  if (!rt_wait_for(cb_reached, s, RT_HANG)) fail_msg("callbacks: %u of %u", cb_count(s), n);
  pthread_mutex_lock(&s->lock);
  s->seen[1023] = 0;
  pthread_mutex_unlock(&s->lock);
}

static void run_callbacks(uint32_t lanes) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(lanes);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  static cb_state s;
  enum { N = 300 };
  uint32_t i;
  rk_msg m;
  rt_item it;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.lock, NULL);
  s.k = k;
  assert_int_equal(rk_recv_start(k, NULL, &s), RK_EINVAL);
  assert_int_equal(rk_recv_stop(k), RK_ESTATE); /* not started */
  RT_OK(rt, rk_recv_start(k, on_reply, &s));
  assert_int_equal(rk_recv_start(k, on_reply, &s), RK_ESTATE); /* already started */
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 0), RK_ESTATE);
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 10 * RT_MS), RK_ESTATE);
  {
    rk_msg ms[2];
    rt_item bs[2];
    assert_int_equal(rk_recv_batch(k, ms, bs, sizeof(rt_item), 2, 0), RK_ESTATE);
  }
  for (i = 0; i < N; i++) {
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
    if (i % 50 == 25) { /* calls in between: their replies go to the caller, not the callback */
      rt_item req = item(2, 5000 + i, 0), rep;
      RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &req, sizeof req, &m, &rep, sizeof rep, RT_HANG));
      assert_int_equal(rep.seq, 5000 + i);
    }
  }
  wait_cb(&s, N);
  rt_sleep_ms(20);
  assert_int_equal(cb_count(&s), N); /* not one more */
  pthread_mutex_lock(&s.lock);
  for (i = 0; i < N; i++) assert_int_equal(s.seen[i], 1);
  assert_int_equal(s.bad, 0);
  assert_int_equal(s.other_thread, 0);
  assert_true(s.have_thread);
  /* on the runtime's service thread, not this one */
  assert_false(pthread_equal(s.first_thread, pthread_self()));
  pthread_mutex_unlock(&s.lock);

  RT_OK(rt, rk_recv_stop(k));
  assert_int_equal(rk_recv_stop(k), RK_ESTATE);
  /* After stop: rk_recv works again and the callback sees nothing more. */
  for (i = 0; i < 5; i++) {
    it = item(3, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  for (i = 0; i < 5; i++) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    assert_int_equal(it.who, 3);
  }
  assert_int_equal(cb_count(&s), N);
  assert_int_equal(rt_stats(k).received, N + N / 50 + 5);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
  pthread_mutex_destroy(&s.lock);
}

static void test_callbacks_one_lane(void **state) {
  (void)state;
  run_callbacks(1);
}
static void test_callbacks_four_lanes(void **state) {
  (void)state;
  run_callbacks(4);
}

/* Replies that were queued before rk_recv_start (drained by a caller into the pending list, or
 * still in the outbox) are delivered to the callback once it starts. */
static void test_callbacks_get_queued_replies(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(1);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  static cb_state s;
  uint32_t i;
  rk_msg m;
  rt_item it, rep;
  (void)state;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.lock, NULL);
  s.k = k;
  for (i = 0; i < 10; i++) {
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  /* This call drains the outbox: the ten replies before its own go to the pending list. */
  it = item(2, 100, 0);
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
  assert_int_equal(rep.seq, 100);
  for (i = 10; i < 15; i++) { /* and a few left in the outbox */
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  RT_WAIT_STAT(k, msgs_out, 16);
  RT_OK(rt, rk_recv_start(k, on_reply, &s));
  wait_cb(&s, 15);
  pthread_mutex_lock(&s.lock);
  for (i = 0; i < 15; i++) assert_int_equal(s.seen[i], 1);
  pthread_mutex_unlock(&s.lock);
  RT_OK(rt, rk_recv_stop(k));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
  pthread_mutex_destroy(&s.lock);
}

/* rk_recv_stop from another thread while callbacks are running: after it returns, no callback is
 * running and none runs later. */
typedef struct slow_cb {
  int in_cb;    /* atomics */
  int calls;    /* atomics */
  int overlap;  /* atomics: a callback ran after stop returned */
  int stopped;  /* atomics */
} slow_cb;

static void on_reply_slow(rk_kernel *k, const rk_msg *m, void *user) {
  slow_cb *s = (slow_cb *)user;
  (void)k;
  (void)m;
  __atomic_store_n(&s->in_cb, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&s->stopped, __ATOMIC_SEQ_CST)) __atomic_add_fetch(&s->overlap, 1, __ATOMIC_SEQ_CST);
  rt_sleep_ms(1);
  __atomic_add_fetch(&s->calls, 1, __ATOMIC_SEQ_CST);
  __atomic_store_n(&s->in_cb, 0, __ATOMIC_SEQ_CST);
}

static int some_calls(void *arg) { return __atomic_load_n(&((slow_cb *)arg)->calls, __ATOMIC_SEQ_CST) >= 5; }

static void test_recv_stop_while_running(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(2);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  slow_cb s;
  uint32_t i, calls, received;
  rt_item it;
  rk_msg m;
  (void)state;
  memset(&s, 0, sizeof s);
  RT_OK(rt, rk_recv_start(k, on_reply_slow, &s));
  for (i = 0; i < 200; i++) {
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  assert_true(rt_wait_for(some_calls, &s, RT_HANG));
  RT_OK(rt, rk_recv_stop(k)); /* while the service thread is delivering */
  __atomic_store_n(&s.stopped, 1, __ATOMIC_SEQ_CST);
  assert_int_equal(__atomic_load_n(&s.in_cb, __ATOMIC_SEQ_CST), 0);
  calls = (uint32_t)__atomic_load_n(&s.calls, __ATOMIC_SEQ_CST);
  rt_sleep_ms(50);
  assert_int_equal(__atomic_load_n(&s.calls, __ATOMIC_SEQ_CST), calls);
  assert_int_equal(__atomic_load_n(&s.overlap, __ATOMIC_SEQ_CST), 0);
  /* The rest are not lost: rk_recv gets exactly them. */
  received = calls;
  while (received < 200) {
    RT_OK(rt, rk_recv(k, &m, &it, sizeof it, RT_HANG));
    received++;
  }
  assert_int_equal(rk_recv(k, &m, &it, sizeof it, 20 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(rt_stats(k).received, 200);
  /* destroy with callbacks started again: it stops them itself */
  RT_OK(rt, rk_recv_start(k, on_reply_slow, &s));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Replies produced while terminate drains are delivered to the callback. */
static void test_callbacks_through_terminate(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(1);
  rk_kernel *k = rt_launch(rt, &d, NULL); /* never activated: terminate does all the work */
  static cb_state s;
  uint32_t i;
  rt_item it;
  (void)state;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.lock, NULL);
  s.k = k;
  RT_OK(rt, rk_recv_start(k, on_reply, &s));
  for (i = 0; i < 40; i++) {
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  wait_cb(&s, 40);
  pthread_mutex_lock(&s.lock);
  for (i = 0; i < 40; i++) assert_int_equal(s.seen[i], 1);
  pthread_mutex_unlock(&s.lock);
  RT_OK(rt, rk_recv_stop(k));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
  pthread_mutex_destroy(&s.lock);
}

/* The service loop serves every kernel of the runtime, however many. */
static void test_callbacks_many_kernels(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(1);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  enum { MANY = 300 };
  rk_kernel **ks = (rk_kernel **)calloc(MANY, sizeof *ks);
  static cb_state s;
  uint32_t i;
  rt_item it;
  (void)state;
  assert_non_null(ks);
  lo.inbox_capacity = 4;
  lo.slot_size = 128;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.lock, NULL);
  for (i = 0; i < MANY; i++) ks[i] = rt_launch_active(rt, &d, &lo);
  /* the first and the last launched, and one in the middle */
  for (i = 0; i < MANY; i += MANY / 2 - 1) {
    s.k = ks[i];
    memset(s.seen, 0, sizeof s.seen);
    RT_OK(rt, rk_recv_start(ks[i], on_reply, &s));
    it = item(1, i, 0);
    RT_OK(rt, rk_send(ks[i], RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
    wait_cb(&s, 1 + (i ? i / (MANY / 2 - 1) : 0));
    RT_OK(rt, rk_recv_stop(ks[i]));
  }
  pthread_mutex_lock(&s.lock);
  assert_int_equal(s.bad, 0);
  pthread_mutex_unlock(&s.lock);
  for (i = 0; i < MANY; i++) rk_kernel_destroy(ks[i]);
  free(ks);
  rk_runtime_destroy(rt);
  pthread_mutex_destroy(&s.lock);
}

/* Several threads receiving from the same kernel: every reply goes to exactly one of them. */
typedef struct receiver {
  rk_kernel *k;
  uint32_t *seen; /* atomics */
  uint32_t n;
  uint32_t got;
  int *remaining; /* atomics */
  int failures;
} receiver;

static void *recv_loop(void *arg) {
  receiver *r = (receiver *)arg;
  while (__atomic_load_n(r->remaining, __ATOMIC_ACQUIRE) > 0) {
    rk_msg ms[4];
    rt_item its[4];
    int i, n = (r->got & 1) ? rk_recv_batch(r->k, ms, its, sizeof(rt_item), 4, 5 * RT_MS)
                            : (rk_recv(r->k, ms, its, sizeof(rt_item), 5 * RT_MS) == RK_OK ? 1 : RK_ETIMEDOUT);
    if (n == RK_ETIMEDOUT) continue;
    if (n < 0) {
      r->failures++;
      break;
    }
    for (i = 0; i < n; i++) {
      if (its[i].seq >= r->n) r->failures++;
      else __atomic_add_fetch(&r->seen[its[i].seq], 1, __ATOMIC_RELAXED);
    }
    r->got += (uint32_t)n;
    __atomic_sub_fetch(r->remaining, n, __ATOMIC_RELEASE);
  }
  return NULL;
}

static void test_concurrent_receivers(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(2);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  enum { R = 3 };
  uint32_t n = RT_SANITIZED ? 1000 : 4000, i, total = 0;
  uint32_t *seen = (uint32_t *)calloc(n, sizeof *seen);
  int remaining = (int)n;
  receiver r[R];
  pthread_t th[R];
  (void)state;
  assert_non_null(seen);
  for (i = 0; i < R; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].k = k;
    r[i].seen = seen;
    r[i].n = n;
    r[i].remaining = &remaining;
    assert_int_equal(pthread_create(&th[i], NULL, recv_loop, &r[i]), 0);
  }
  for (i = 0; i < n; i++) {
    rt_item it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  for (i = 0; i < R; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(r[i].failures, 0);
    total += r[i].got;
  }
  assert_int_equal(total, n);
  for (i = 0; i < n; i++) assert_int_equal(seen[i], 1);
  free(seen);
  rt_no_clock_refusals(k);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A runtime joining the application's libuv loop: callbacks and the watchdog run when, and on the
 * thread where, the application runs its loop; destroy leaves the loop closable. */
static void test_application_loop(void **state) {
  uv_loop_t loop;
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel *k;
  rk_kernel_desc d = item_desc(1);
  static cb_state s;
  uint32_t i;
  rt_item it;
  uint64_t t0;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  o.loop = &loop;
  rt = rt_create_opts(&o);
  /* the runtime's handles are unreferenced: alone they do not keep the loop running */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  /* this loop has nothing else: the application asks for them to keep it running */
  RT_OK(rt, rk_runtime_ref_loop(rt, 1));
  k = rt_launch_active(rt, &d, NULL);
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.lock, NULL);
  s.k = k;
  RT_OK(rt, rk_recv_start(k, on_reply, &s));
  for (i = 0; i < 20; i++) {
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  RT_WAIT_STAT(k, msgs_out, 20);
  assert_int_equal(cb_count(&s), 0); /* nothing runs while the application does not run its loop */
  t0 = rt_now_ns();
  while (cb_count(&s) < 20) {
    if (rt_now_ns() - t0 > (uint64_t)RT_HANG) fail_msg("callbacks on the application loop: %u of 20", cb_count(&s));
    uv_run(&loop, UV_RUN_NOWAIT);
    rt_sleep_ms(1);
  }
  pthread_mutex_lock(&s.lock);
  assert_true(pthread_equal(s.first_thread, pthread_self())); /* on the loop's thread: this one */
  assert_int_equal(s.other_thread, 0);
  for (i = 0; i < 20; i++) assert_int_equal(s.seen[i], 1);
  pthread_mutex_unlock(&s.lock);
  RT_OK(rt, rk_recv_stop(k));
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* the runtime's handles close and go */
  assert_int_equal(uv_loop_close(&loop), 0);
  pthread_mutex_destroy(&s.lock);
}

/* ---------------------------------------- arguments ------------------------------------------ */

static void test_bad_arguments(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  uint8_t big[300], buf[16];
  rk_msg m;
  rk_kernel_counters st;
  (void)state;
  memset(big, 1, sizeof big);
  assert_int_equal(rk_send(NULL, 1, big, 1, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send(k, 0, big, 1, 0, NULL), RK_EINVAL); /* type 0 is reserved */
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_EINVAL"));
  assert_int_equal(rk_send(k, 1, NULL, 4, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send(k, 1, big, 177, 0, NULL), RK_EMSGSIZE); /* slot payload is 176 */
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_EMSGSIZE"));
  assert_int_equal(rk_send_key(k, 1, 0, big, 1, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_call(k, 1, big, 1, NULL, buf, sizeof buf, 0), RK_EINVAL);
  assert_int_equal(rk_call(k, 1, big, 1, &m, NULL, 4, 0), RK_EINVAL);
  assert_int_equal(rk_call(k, 1, big, 300, &m, buf, sizeof buf, RT_HANG), RK_EMSGSIZE);
  assert_int_equal(rk_call(NULL, 1, big, 1, &m, buf, sizeof buf, 0), RK_EINVAL);
  assert_int_equal(rk_recv(NULL, &m, buf, sizeof buf, 0), RK_EINVAL);
  assert_int_equal(rk_recv(k, NULL, buf, sizeof buf, 0), RK_EINVAL);
  assert_int_equal(rk_recv(k, &m, NULL, 4, 0), RK_EINVAL);
  assert_int_equal(rk_recv_start(NULL, NULL, NULL), RK_EINVAL);
  assert_int_equal(rk_recv_stop(NULL), RK_EINVAL);
  assert_int_equal(rk_kernel_stats(NULL, NULL), RK_EINVAL);
  /* NULL payload with length 0 is a valid empty message */
  RT_OK(rt, rk_call(k, 9, NULL, 0, &m, NULL, 0, RT_HANG));
  assert_int_equal(m.len, 0);
  assert_null(m.payload);
  st = rt_stats(k);
  assert_int_equal(st.sent, 1);
  assert_int_equal(st.msgs_in, 1);
  assert_int_equal(st.send_invalid, 5);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- HLC ------------------------------------------------ */

static void test_hlc_stamps(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = item_desc(2);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_kernel *c = rt_launch_active(rt, &rk_builtin_counter, NULL);
  rk_clock *clk = rk_runtime_clock(rt);
  rk_msg m;
  rt_item it, rep;
  rk_hlc prev_reply = 0, prev_value = 0;
  uint32_t i;
  (void)state;
  for (i = 0; i < 50; i++) {
    rk_hlc before = rk_clock_peek(clk);
    it = item(1, i, 0);
    RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
    /* the request was stamped by a tick of the runtime clock */
    assert_true(rep.stamp > before);
    /* the reply, by the kernel clock after merging the request */
    assert_true(m.env.hlc > rep.stamp);
    assert_int_equal(m.env.node, rk_kernel_id(k));
    /* receiving merged the reply into the runtime clock */
    assert_true(rk_clock_peek(clk) > m.env.hlc);
    assert_true(m.env.hlc > prev_reply);
    prev_reply = m.env.hlc;
  }
  /* Sent and received with rk_send/rk_recv too. */
  for (i = 0; i < 20; i++) {
    it = item(1, i, 0);
    RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  }
  for (i = 0; i < 20; i++) {
    RT_OK(rt, rk_recv(k, &m, &rep, sizeof rep, RT_HANG));
    assert_true(m.env.hlc > rep.stamp);
    assert_true(rk_clock_peek(clk) > m.env.hlc);
  }
  /* The counter: reply stamps and the stamps of its computation strictly increase. */
  prev_reply = 0;
  for (i = 0; i < 50; i++) {
    rk_counter_add a = {1};
    rk_counter_value v;
    RT_OK(rt, rk_call_typed(c, rk_counter_add, &a, &m, &v, sizeof v, RT_HANG));
    assert_true(m.env.hlc > prev_reply);
    assert_true(v.stamp > prev_value);
    assert_true(m.env.hlc > v.stamp); /* computed, then replied */
    assert_true(rk_clock_peek(clk) > m.env.hlc);
    prev_reply = m.env.hlc;
    prev_value = v.stamp;
  }
  rk_kernel_destroy(c);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_call_echo),
      cmocka_unit_test(test_call_timeout),
      cmocka_unit_test(test_call_timeout_zero),
      cmocka_unit_test(test_unknown_send_flags),
      cmocka_unit_test(test_send_recv),
      cmocka_unit_test(test_send_key_order),
      cmocka_unit_test(test_send_batch),
      cmocka_unit_test(test_recv_batch),
      cmocka_unit_test(test_concurrent_calls),
      cmocka_unit_test(test_calls_and_recv_mixed),
      cmocka_unit_test(test_lane_reused_reading_refreshed),
      cmocka_unit_test(test_no_reply),
      cmocka_unit_test(test_callbacks_one_lane),
      cmocka_unit_test(test_callbacks_four_lanes),
      cmocka_unit_test(test_callbacks_get_queued_replies),
      cmocka_unit_test(test_recv_stop_while_running),
      cmocka_unit_test(test_callbacks_through_terminate),
      cmocka_unit_test(test_callbacks_many_kernels),
      cmocka_unit_test(test_concurrent_receivers),
      cmocka_unit_test(test_application_loop),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_hlc_stamps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
