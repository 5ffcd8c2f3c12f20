/* test_handlers.c — what a handler sees and what becomes of what it returns (kernel.h, ARCHITECTURE
 * §3, §6, §7): error replies, typed messages refused at send, invalid envelopes refused by the lane
 * and never handed to the handler, checksummed sends, the HLC drift bound, the handler context, and
 * cooperative handlers on a lane of several threads (rk_thread / rk_threads / rk_sync / rk_scratch).
 *
 * White-box where the public API cannot reach: corrupt envelopes are pushed straight into a lane's
 * inbox (host/internal.h; linked against the static library). */
#include "rt_util.h"

#include "host/internal.h"
#include "inject_util.h"

/* ---------------------------------------- error replies -------------------------------------- */

static int handler_calls; /* atomics: how many messages reached a handler */

/* rt_item: who == 1 -> RK_EINVAL, who == 2 -> RK_ENOENT, who == 3 -> replies, then fails;
 * anything else is echoed. */
static int picky(rk_ctx *ctx, const rk_msg *in) {
  rt_item it;
  int rc;
  if (rk_thread(ctx) == 0) __atomic_add_fetch(&handler_calls, 1, __ATOMIC_RELAXED);
  if (rk_msg_len(in) != sizeof it) return RK_EMSGSIZE;
  memcpy(&it, rk_msg_payload(in), sizeof it);
  if (it.who == 1) return RK_EINVAL;
  if (it.who == 2) return RK_ENOENT;
  rc = rk_reply(ctx, RT_ITEM_TYPE, &it, sizeof it);
  if (it.who == 3) return RK_ECORRUPT; /* already replied: counted, no second (error) reply */
  return rc;
}

static rt_item item(uint32_t who, uint32_t seq) {
  rt_item it;
  memset(&it, 0, sizeof it);
  it.who = who;
  it.seq = seq;
  return it;
}

static void run_handler_errors(uint32_t threads) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("picky", picky);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_kernel_counters st;
  rk_msg m;
  rt_item it, rep;
  int32_t code;
  uint32_t i;
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, &d, &lo);

  it = item(1, 0);
  memset(&rep, 0, sizeof rep);
  assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EINVAL);
  assert_true(rk_msg_is_error(&m));
  assert_true(m.env.flags & RK_ENV_F_REPLY);
  assert_int_equal(rk_msg_type_of(&m), RT_ITEM_TYPE); /* the request's type */
  assert_int_equal(m.len, sizeof(int32_t));             /* the payload is the code */
  memcpy(&code, &rep, sizeof code);
  assert_int_equal(code, RK_EINVAL);
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE); /* a handler error never stops it */

  it = item(2, 1);
  assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_ENOENT);

  /* It keeps serving. */
  for (i = 0; i < 20; i++) {
    it = item(9, i);
    RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
    assert_int_equal(m.status, 0);
    assert_false(rk_msg_is_error(&m));
    assert_int_equal(rep.seq, i);
  }

  /* Replied, then failed: the reply stands, the error is counted, no second reply. */
  it = item(3, 50);
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
  assert_int_equal(rep.seq, 50);

  /* rk_recv delivers error replies with their status (and returns 0: the reply was received). */
  it = item(1, 60);
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, 0, NULL));
  assert_int_equal(rk_recv(k, &m, &rep, sizeof rep, RT_HANG), RK_OK);
  assert_int_equal(m.status, RK_EINVAL);
  assert_true(rk_msg_is_error(&m));
  /* an error on a no-reply message is counted, and still no reply */
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
  /* msgs_in, not handler_errors: a CPU lane counts a handler error as the handler returns and the
   * message as taken only once its batch is released (process_batch), so handler_errors 5 can be
   * read with msgs_in still 24; msgs_in 25 comes after the count of the error */
  RT_WAIT_STAT(k, msgs_in, 25);
  assert_int_equal(rk_recv(k, &m, &rep, sizeof rep, 20 * RT_MS), RK_ETIMEDOUT);

  st = rt_stats(k);
  assert_int_equal(st.handler_errors, 5);
  assert_int_equal(st.msgs_in, 25);
  assert_int_equal(st.msgs_out, 24);
  assert_int_equal(st.invalid, 0);
  assert_int_equal(st.state, RK_STATE_ACTIVE);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* What a handler's result means beyond negative codes: a positive value (no RK_E* code), or 0
 * without a reply to a request that wants one (nothing replied, or a reservation never committed),
 * becomes an RK_EHANDLER error reply, counted; the caller no longer waits out its timeout. */
static int sloppy(rk_ctx *ctx, const rk_msg *in) {
  rt_item it;
  if (rk_msg_len(in) != sizeof it) return RK_EMSGSIZE;
  memcpy(&it, rk_msg_payload(in), sizeof it);
  switch (it.who) {
    case 1: return 5; /* positive */
    case 2: return 0; /* forgot to reply */
    case 3: (void)rk_reply_reserve(ctx, RT_ITEM_TYPE, sizeof it); return 0; /* never committed */
    case 4: (void)rk_reply(ctx, RT_ITEM_TYPE, &it, sizeof it); return 7; /* replied, then positive */
    default: return rk_reply(ctx, RT_ITEM_TYPE, &it, sizeof it);
  }
}

static void run_handler_results(uint32_t threads) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("sloppy", sloppy);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  rt_item it, rep;
  uint32_t who;
  unsigned warnings = rt_log_count(&rt_the_log, RK_LOG_WARN);
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, &d, &lo);
  for (who = 1; who <= 3; who++) {
    it = item(who, who);
    assert_int_equal(rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, 5 * RT_SEC), RK_EHANDLER);
    assert_int_equal(m.status, RK_EHANDLER);
    assert_true(rk_msg_is_error(&m));
  }
  it = item(4, 4);
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG)); /* its reply stands */
  assert_int_equal(rep.seq, 4);
  it = item(2, 5); /* no reply wanted: returning 0 without one is right */
  RT_OK(rt, rk_send(k, RT_ITEM_TYPE, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
  it = item(9, 6);
  RT_OK(rt, rk_call(k, RT_ITEM_TYPE, &it, sizeof it, &m, &rep, sizeof rep, RT_HANG));
  assert_int_equal(rt_stats(k).handler_errors, 4);
  assert_int_equal(rt_stats(k).msgs_in, 6);
  assert_true(rt_log_count(&rt_the_log, RK_LOG_WARN) >= warnings + 4);
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_handler_results(void **state) {
  (void)state;
  run_handler_results(1);
  run_handler_results(3);
}

static void test_handler_errors(void **state) {
  (void)state;
  run_handler_errors(1);
  run_handler_errors(4);
}

/* ---------------------------------------- typed messages ------------------------------------- */

static void test_typed_refused_at_send(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *v = rt_launch_active(rt, &rk_builtin_vector_add, NULL);
  rk_kernel *c = rt_launch_active(rt, &rk_builtin_counter, NULL);
  rk_vadd_req req;
  rk_vadd_reply out;
  rk_counter_add add = {4};
  rk_counter_value val;
  rk_kernel_counters st;
  rk_msg m;
  uint8_t junk[256];
  (void)state;
  memset(&req, 0, sizeof req);
  memset(junk, 0, sizeof junk);
  req.n = 2;
  req.a[0] = 1.5f;
  req.b[0] = 2.0f;
  req.a[1] = -1.0f;
  req.b[1] = 0.25f;

  /* wrong type: RK_EINVAL; wrong size of the right type: RK_EMSGSIZE */
  assert_int_equal(rk_send(v, rk_vadd_reply_TYPE, &req, sizeof req, 0, NULL), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_EINVAL"));
  assert_int_equal(rk_send(v, rk_vadd_req_TYPE, &req, sizeof req - 4, 0, NULL), RK_EMSGSIZE);
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk_vadd_req"));
  assert_int_equal(rk_send(v, rk_vadd_req_TYPE, junk, 8, 0, NULL), RK_EMSGSIZE);
  assert_int_equal(rk_send_key(v, 1, 999, junk, 8, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_call(v, rk_vadd_req_TYPE, &req, 4, &m, &out, sizeof out, RT_HANG), RK_EMSGSIZE);
  {
    rk_send_item b;
    memset(&b, 0, sizeof b);
    b.type = rk_counter_add_TYPE;
    b.len = sizeof add;
    b.payload = &add;
    assert_int_equal(rk_send_batch(v, &b, 1), RK_EINVAL);
  }
  assert_int_equal(rk_send(c, rk_counter_add_TYPE, &add, 4, 0, NULL), RK_EMSGSIZE);
  assert_int_equal(rk_send(c, rk_counter_value_TYPE, &val, sizeof val, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send(c, rk_vadd_req_TYPE, &req, sizeof req, 0, NULL), RK_EINVAL);

  /* counted, never delivered */
  rt_sleep_ms(20);
  st = rt_stats(v);
  assert_int_equal(st.send_invalid, 6);
  assert_int_equal(st.sent, 0);
  assert_int_equal(st.msgs_in, 0);
  assert_int_equal(rk_recv(v, &m, &out, sizeof out, 0), RK_EAGAIN);
  st = rt_stats(c);
  assert_int_equal(st.send_invalid, 3);
  assert_int_equal(st.msgs_in, 0);

  /* the right type and size go through */
  RT_OK(rt, rk_call_typed(v, rk_vadd_req, &req, &m, &out, sizeof out, RT_HANG));
  assert_non_null(RK_MSG_AS(&m, rk_vadd_reply));
  assert_null(RK_MSG_AS(&m, rk_vadd_req));
  assert_null(RK_MSG_AS(&m, rk_counter_value));
  assert_true(out.c[0] == 3.5f && out.c[1] == -0.75f);
  RT_OK(rt, rk_call_typed(c, rk_counter_add, &add, &m, &val, sizeof val, RT_HANG));
  assert_int_equal(val.total, 4);
  assert_int_equal(rt_stats(v).msgs_in, 1);
  assert_int_equal(rt_stats(c).msgs_in, 1);
  rk_kernel_destroy(c);
  rk_kernel_destroy(v);
  rk_runtime_destroy(rt);
}

static void test_msg_as(void **state) {
  rk_msg m;
  rk_counter_value v;
  (void)state;
  memset(&m, 0, sizeof m);
  memset(&v, 0, sizeof v);
  m.env.type = rk_counter_value_TYPE;
  m.payload = &v;
  m.len = sizeof v;
  assert_ptr_equal(RK_MSG_AS(&m, rk_counter_value), &v);
  assert_null(RK_MSG_AS(&m, rk_counter_add)); /* type differs */
  m.len = sizeof v - 1;
  assert_null(RK_MSG_AS(&m, rk_counter_value)); /* length differs (a truncated receive) */
  m.len = sizeof v;
  m.env.type = rk_vadd_reply_TYPE;
  assert_null(RK_MSG_AS(&m, rk_counter_value));
  assert_int_equal(rk_vadd_req_msgtype.id, rk_vadd_req_TYPE);
  assert_int_equal(rk_vadd_req_msgtype.size, sizeof(rk_vadd_req));
  assert_string_equal(rk_vadd_req_msgtype.name, "rk_vadd_req");
}

/* A custom kernel declaring two types: both accepted with their sizes, nothing else. */
typedef struct ping { uint32_t x; } ping;
RK_MESSAGE(ping, 300);
typedef struct pong { uint64_t y, z; } pong;
RK_MESSAGE(pong, 301);

static int ping_pong(rk_ctx *ctx, const rk_msg *in) {
  const ping *p = RK_MSG_AS(in, ping);
  const pong *q = RK_MSG_AS(in, pong);
  pong r;
  if (p) {
    r.y = p->x;
    r.z = 1;
    return rk_reply_typed(ctx, pong, &r);
  }
  if (q) {
    r.y = q->y + q->z;
    r.z = 2;
    return rk_reply_typed(ctx, pong, &r);
  }
  return RK_EINVAL; /* never reached: the runtime refuses other types at send */
}

static void test_custom_typed_kernel(void **state) {
  static const rk_msg_type *const types[] = {&ping_msgtype, &pong_msgtype};
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("pingpong", ping_pong);
  rk_kernel *k;
  ping p = {41};
  pong q = {5, 6}, r;
  rk_msg m;
  (void)state;
  d.types = types;
  d.n_types = 2;
  k = rt_launch_active(rt, &d, NULL);
  RT_OK(rt, rk_call_typed(k, ping, &p, &m, &r, sizeof r, RT_HANG));
  assert_int_equal(r.y, 41);
  assert_int_equal(r.z, 1);
  RT_OK(rt, rk_call_typed(k, pong, &q, &m, &r, sizeof r, RT_HANG));
  assert_int_equal(r.y, 11);
  assert_int_equal(r.z, 2);
  assert_int_equal(rk_send(k, ping_TYPE, &q, sizeof q, 0, NULL), RK_EMSGSIZE);
  assert_int_equal(rk_send(k, 302, &q, sizeof q, 0, NULL), RK_EINVAL);
  assert_int_equal(rt_stats(k).handler_errors, 0);
  assert_int_equal(rt_stats(k).send_invalid, 2);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- invalid envelopes ---------------------------------- */

/* Counts every message it sees, then echoes. */
static int counting_echo(rk_ctx *ctx, const rk_msg *in) {
  __atomic_add_fetch(&handler_calls, 1, __ATOMIC_RELAXED);
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

/* The slot's layout at the CPU lane: the payload limit (check_payload_limit), then replies of every
 * length through a 4-slot outbox, laps over, each echoed intact, no slot's sequence word or
 * reserved word changed by the replies written in place. */
static void test_slot_layout(void **state) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  (void)state;
  lo.outbox_capacity = 4;
  k = rt_launch_active(rt, &rk_builtin_echo, &lo);
  check_slot_layout(rt, k);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_invalid_envelopes(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("strict", counting_echo);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_dead_letter dl[8];
  uint64_t total = 0;
  rk_kernel *k;
  rk_kernel_counters st;
  slot s;
  rk_msg m;
  uint8_t buf[256];
  uint64_t answered[8];
  uint32_t n_answered = 0, i, injected = 0;
  unsigned warnings = rt_log_count(&rt_the_log, RK_LOG_WARN);
  (void)state;
  __atomic_store_n(&handler_calls, 0, __ATOMIC_RELAXED);
  lo.dead_letters = 6; /* the last six refused messages are kept */
  k = rt_launch_active(rt, &d, &lo);

  /* Corrupt headers the lane cannot trust: refused silently (counted). */
  good_envelope(k, &s, 0x100, 8);
  s.e.magic = 0xdeadbeefu;
  inject(k, &s), injected++;
  good_envelope(k, &s, 0x101, 8);
  s.e.version = 9;
  inject(k, &s), injected++;
  good_envelope(k, &s, 0x102, 8);
  s.e.flags = 0x8000;
  inject(k, &s), injected++;
  good_envelope(k, &s, 0x103, 8);
  s.e.origin = 1;
  inject(k, &s), injected++;
  /* Trustworthy headers with a bad body: refused, and answered with an RK_ECORRUPT error reply. */
  good_envelope(k, &s, 0x104, 8);
  s.e.payload_len = 4096; /* beyond the slot */
  inject(k, &s), injected++, answered[n_answered++] = 0x104;
  good_envelope(k, &s, 0x105, 8);
  s.e.type = 0;
  inject(k, &s), injected++, answered[n_answered++] = 0x105;
  good_envelope(k, &s, 0x106, 8);
  s.e.dst = rk_kernel_id(k) + 1000; /* wrong destination */
  inject(k, &s), injected++, answered[n_answered++] = 0x106;
  good_envelope(k, &s, 0x107, 16);
  rk_envelope_seal(&s.e, s.payload);
  s.payload[3] ^= 0x40; /* bad checksum */
  inject(k, &s), injected++, answered[n_answered++] = 0x107;

  RT_WAIT_STAT(k, invalid, injected);
  for (i = 0; i < n_answered; i++) expect_error_reply(k, answered[i], RK_ECORRUPT);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  st = rt_stats(k);
  assert_int_equal(st.invalid, injected);
  assert_int_equal(st.msgs_in, injected); /* taken from the inbox ... */
  assert_int_equal(__atomic_load_n(&handler_calls, __ATOMIC_RELAXED), 0); /* ... never handed over */
  assert_int_equal(st.handler_errors, 0);
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  assert_true(rt_log_count(&rt_the_log, RK_LOG_WARN) >= warnings + injected); /* each one reported */
  /* ... and kept as dead letters with the reason: the six most recent, oldest first */
  assert_int_equal(rt_stats(k).dead_letters, injected);
  assert_int_equal(rk_kernel_dead_letters(k, dl, 8, &total), 6);
  assert_int_equal(total, injected);
  for (i = 0; i < 6; i++) {
    assert_int_equal(dl[i].env.msg_id, 0x102 + i);
    assert_int_equal(dl[i].reason, RK_ECORRUPT);
    assert_int_equal(dl[i].lane, 0);
    assert_string_equal(dl[i].why, rk_envelope_check_name(RK_ENV_BAD_FLAGS + (int)i));
    assert_true(dl[i].time_ns > 0);
  }
  assert_int_equal(dl[2].payload_len, RK_DEAD_LETTER_PAYLOAD); /* payload_len 4096: cut to what is kept */
  assert_int_equal(dl[5].payload_len, 16);
  assert_memory_equal(dl[5].payload, s.payload, 16);
  assert_int_equal(rk_kernel_dead_letters(k, dl, 2, NULL), 2); /* the two most recent */
  assert_int_equal(dl[0].env.msg_id, 0x106);
  assert_int_equal(dl[1].env.msg_id, 0x107);
  assert_int_equal(rk_kernel_dead_letters(k, NULL, 0, &total), 0);
  assert_int_equal(rk_kernel_dead_letters(k, NULL, 1, NULL), RK_EINVAL);
  assert_int_equal(rk_kernel_dead_letters(NULL, dl, 1, NULL), RK_EINVAL);

  /* A correct envelope pushed the same way, sealed, is handled: the injection path is sound. */
  good_envelope(k, &s, 0x200, 16);
  rk_envelope_seal(&s.e, s.payload);
  inject(k, &s);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
  assert_false(rk_msg_is_error(&m));
  assert_int_equal(m.env.correlation_id, 0x200);
  assert_memory_equal(buf, s.payload, 16);
  assert_int_equal(__atomic_load_n(&handler_calls, __ATOMIC_RELAXED), 1);

  /* RK_SEND_CHECKSUM through the API: sealed, verified, delivered. */
  for (i = 0; i < 20; i++) {
    uint8_t req[100], rep[100];
    memset(req, (int)i, sizeof req);
    RT_OK(rt, rk_call(k, 6, req, sizeof req, &m, rep, sizeof rep, RT_HANG));
    assert_memory_equal(rep, req, sizeof req);
    RT_OK(rt, rk_send(k, 6, req, (uint32_t)i, RK_SEND_CHECKSUM, NULL));
    RT_OK(rt, rk_recv(k, &m, rep, sizeof rep, RT_HANG));
    assert_int_equal(m.status, 0);
    assert_int_equal(m.len, i);
  }
  st = rt_stats(k);
  assert_int_equal(st.invalid, injected);
  assert_int_equal(__atomic_load_n(&handler_calls, __ATOMIC_RELAXED), 41);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* A request stamped far ahead of physical time breaks the drift bound: refused, counted, answered
 * with RK_ECLOCK, never handled; the kernel clock does not jump. */
static void test_clock_drift_refused(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("drift", counting_echo);
  rk_kernel *k;
  slot s;
  rk_msg m;
  uint8_t buf[64];
  rk_hlc future;
  (void)state;
  __atomic_store_n(&handler_calls, 0, __ATOMIC_RELAXED);
  k = rt_launch_active(rt, &d, NULL);
  future = rk_hlc_make(rk_realtime_us() + 3600ull * 1000000ull, 0); /* one hour ahead */
  good_envelope(k, &s, 0x300, 4);
  s.e.hlc = future;
  inject(k, &s);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
  assert_true(rk_msg_is_error(&m));
  assert_int_equal(m.status, RK_ECLOCK);
  assert_int_equal(m.env.correlation_id, 0x300);
  assert_true(m.env.hlc < future); /* the kernel clock did not move to the bad stamp */
  assert_int_equal(rt_stats(k).clock_rejected, 1);
  assert_int_equal(rt_stats(k).invalid, 0);
  assert_int_equal(__atomic_load_n(&handler_calls, __ATOMIC_RELAXED), 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- context -------------------------------------------- */

typedef struct info {
  uint32_t lane, lanes, self, threads;
  uint64_t now;
  uint64_t state_seen; /* per-kernel state counter: shared by the lanes */
  uint64_t scratch_size;
} info;

static int info_handler(rk_ctx *ctx, const rk_msg *in) {
  info r;
  size_t ss = 0;
  uint64_t *st = (uint64_t *)rk_state(ctx);
  (void)in;
  memset(&r, 0, sizeof r);
  r.lane = rk_lane(ctx);
  r.lanes = rk_lanes(ctx);
  r.self = rk_self(ctx);
  r.threads = rk_threads(ctx);
  r.now = rk_now(ctx);
  (void)rk_scratch(ctx, &ss);
  r.scratch_size = ss;
  r.state_seen = __atomic_add_fetch(st, 1, __ATOMIC_RELAXED); /* lanes run concurrently */
  return rk_reply(ctx, 1, &r, sizeof r);
}

static int init_state(void *state, size_t size, void *user) {
  assert_int_equal(size, sizeof(uint64_t));
  *(uint64_t *)state = *(uint64_t *)user;
  return 0;
}

static void test_handler_context(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("info", info_handler);
  rk_kernel *k;
  uint64_t start = 1000;
  uint32_t i, lanes_seen = 0;
  rk_msg m;
  info r;
  (void)state;
  d.lanes = 3;
  d.state_size = sizeof(uint64_t);
  d.state_init = init_state;
  d.state_init_user = &start;
  d.scratch_size = 96;
  k = rt_launch_active(rt, &d, NULL);
  for (i = 0; i < 30; i++) {
    RT_OK(rt, rk_call(k, 1, &i, sizeof i, &m, &r, sizeof r, RT_HANG));
    assert_true(r.lane < 3);
    assert_int_equal(r.lane, m.env.lane);
    lanes_seen |= 1u << r.lane;
    assert_int_equal(r.lanes, 3);
    assert_int_equal(r.self, rk_kernel_id(k));
    assert_int_equal(r.threads, 1);
    assert_int_equal(r.scratch_size, 96);
    assert_int_equal(r.state_seen, start + i + 1); /* initialised once, kept */
    assert_true(m.env.hlc > r.now);
  }
  assert_int_equal(lanes_seen, 7); /* round-robin reached every lane */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static int failing_init(void *state, size_t size, void *user) {
  (void)state;
  (void)size;
  (void)user;
  return RK_ENOENT;
}

static void test_state_init_failure(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("badinit", info_handler);
  rk_kernel *k = NULL;
  (void)state;
  d.state_size = 8;
  d.state_init = failing_init;
  assert_int_equal(rk_kernel_launch(rt, &d, NULL, &k), RK_ENOENT);
  assert_null(k);
  assert_true(strlen(rk_runtime_last_error(rt)) > 0);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- replies: several, reserve/commit ------------------ */

/* Replies twice (a reserved reply, then an ordinary one), reporting in the payloads what the
 * dialect calls returned: rk_reply_commit without a reservation, a second reservation before the
 * commit, and the commit itself. */
static int multi_reply(rk_ctx *ctx, const rk_msg *in) {
  int32_t r[4] = {0, 0, 0, 0};
  void *p1, *p2;
  (void)in;
  r[0] = rk_reply_commit(ctx); /* nothing reserved: RK_ESTATE */
  p1 = rk_reply_reserve(ctx, 2, sizeof r);
  p2 = rk_reply_reserve(ctx, 2, sizeof r); /* second reservation before the commit: NULL */
  r[1] = p1 != NULL;
  r[2] = p2 == NULL;
  if (p1) {
    if (rk_thread(ctx) == 0) memcpy(p1, r, sizeof r);
    r[3] = rk_reply_commit(ctx);
  }
  /* a second, ordinary reply: it needs a second outbox slot */
  return rk_reply(ctx, 3, r, sizeof r);
}

static void run_multi_reply(uint32_t threads) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("multi", multi_reply);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_msg m;
  int32_t r[4];
  uint64_t id;
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, &d, &lo);
  /* rk_send: both replies come back, both naming the request */
  RT_OK(rt, rk_send(k, 1, NULL, 0, 0, &id));
  RT_OK(rt, rk_recv(k, &m, r, sizeof r, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 2);
  assert_int_equal(m.env.correlation_id, id);
  assert_int_equal(r[0], RK_ESTATE);
  assert_int_equal(r[1], 1);
  assert_int_equal(r[2], 1);
  RT_OK(rt, rk_recv(k, &m, r, sizeof r, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 3);
  assert_int_equal(m.env.correlation_id, id);
  assert_int_equal(r[3], RK_OK);
  /* rk_call: the first reply answers the call; the second finds no waiter: counted as late */
  RT_OK(rt, rk_call(k, 1, NULL, 0, &m, r, sizeof r, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 2);
  RT_WAIT_STAT(k, msgs_out, 4);
  assert_int_equal(rk_recv(k, &m, r, sizeof r, 20 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(rt_stats(k).late_replies, 1);
  assert_int_equal(rt_stats(k).handler_errors, 0);
  rk_kernel_destroy(k);

  /* A one-slot outbox: the lane takes the message only with room for one reply; the second
   * reply finds the outbox full: rk_reply says RK_EAGAIN, the handler returns it (counted), and
   * no error reply is added to the one that was made. */
  lo.outbox_capacity = 1;
  k = rt_launch_active(rt, &d, &lo);
  RT_OK(rt, rk_send(k, 1, NULL, 0, 0, &id));
  RT_WAIT_STAT(k, handler_errors, 1);
  RT_OK(rt, rk_recv(k, &m, r, sizeof r, RT_HANG));
  assert_int_equal(rk_msg_type_of(&m), 2);
  assert_false(rk_msg_is_error(&m));
  assert_int_equal(rk_recv(k, &m, r, sizeof r, 20 * RT_MS), RK_ETIMEDOUT);
  assert_int_equal(rt_stats(k).msgs_out, 1);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_multiple_replies(void **state) {
  (void)state;
  run_multi_reply(1);
  run_multi_reply(4);
}

/* rk_reply while a reservation is outstanding must not write into the reserved slot (nor publish
 * a slot nobody wrote): it is refused with RK_ESTATE, and the reserved reply goes out intact. */
static int interleaved(rk_ctx *ctx, const rk_msg *in) {
  uint64_t *p = (uint64_t *)rk_reply_reserve(ctx, 2, sizeof(uint64_t));
  int32_t rc;
  (void)in;
  if (p == NULL) return RK_EAGAIN;
  if (rk_thread(ctx) == 0) *p = 0xaaaaaaaaaaaaaaaaull;
  rc = rk_reply(ctx, 3, "BBBBBBBB", 8);
  if (rk_thread(ctx) == 0 && rc != RK_OK) *p = (uint64_t)(uint32_t)-rc; /* report what it said */
  return rk_reply_commit(ctx);
}

static void test_reply_during_reservation(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("interleaved", interleaved);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  uint32_t threads;
  (void)state;
  for (threads = 1; threads <= 4; threads += 3) {
    rk_kernel *k;
    rk_msg m;
    uint64_t v = 0;
    lo.threads_per_lane = threads;
    k = rt_launch_active(rt, &d, &lo);
    RT_OK(rt, rk_send(k, 1, NULL, 0, 0, NULL));
    RT_OK(rt, rk_recv(k, &m, &v, sizeof v, RT_HANG));
    assert_int_equal(m.env.magic, RK_ENVELOPE_MAGIC);
    assert_int_equal(rk_msg_type_of(&m), 2);
    assert_int_equal(v, (uint64_t)(uint32_t)-RK_ESTATE);
    assert_int_equal(rk_recv(k, &m, &v, sizeof v, 20 * RT_MS), RK_ETIMEDOUT); /* nothing else */
    assert_int_equal(rt_stats(k).msgs_out, 1);
    rk_kernel_destroy(k);
  }
  rk_runtime_destroy(rt);
}

/* A handler given an oversized reply gets RK_EMSGSIZE from rk_reply; returning it makes an error
 * reply. */
static int oversized(rk_ctx *ctx, const rk_msg *in) {
  static const uint8_t big[512] = {0};
  (void)in;
  return rk_reply(ctx, 1, big, sizeof big);
}

static void test_oversized_reply(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("oversized", oversized);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_msg m;
  uint8_t buf[16];
  (void)state;
  assert_int_equal(rk_call(k, 1, NULL, 0, &m, buf, sizeof buf, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  assert_int_equal(rt_stats(k).handler_errors, 1);
  assert_int_equal(rk_kernel_terminate(k, -1), RK_OK); /* a negative timeout waits as long as needed */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- cooperative lanes ---------------------------------- */

#define PSUM_MAX 40
#define PSUM_TYPE 20u

typedef struct psum_scratch {
  uint64_t partial[64];
  uint32_t present[64];
  struct {
    uint64_t sum;
    uint32_t threads;
    uint32_t mask;
  } result;
} psum_scratch;

/* A parallel sum: thread t adds elements t, t+T, ... into its own scratch slot; after the barrier
 * thread 0 reduces; after another barrier every thread makes the (collective) reply. */
static int psum(rk_ctx *ctx, const rk_msg *in) {
  psum_scratch *s = (psum_scratch *)rk_scratch(ctx, NULL);
  const uint32_t *a = (const uint32_t *)rk_msg_payload(in);
  uint32_t n = rk_msg_len(in) / (uint32_t)sizeof(uint32_t), t = rk_thread(ctx), T = rk_threads(ctx), i;
  uint64_t acc = 0;
  for (i = t; i < n; i += T) acc += a[i];
  s->partial[t] = acc;
  s->present[t] = 1;
  rk_sync(ctx);
  if (t == 0) {
    s->result.sum = 0;
    s->result.mask = 0;
    for (i = 0; i < T; i++) {
      s->result.sum += s->partial[i];
      if (s->present[i]) s->result.mask |= 1u << i;
    }
    s->result.threads = T;
  }
  rk_sync(ctx);
  {
    int rc = rk_reply(ctx, PSUM_TYPE, &s->result, sizeof s->result);
    /* present[] is reset only after every thread has passed the reply's barriers */
    s->present[t] = 0;
    return rc;
  }
}

static void run_psum(uint32_t threads, uint32_t lanes) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("psum", psum);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  uint32_t a[PSUM_MAX], i, n, round;
  uint64_t seed = 0x9e3779b97f4a7c15ull ^ threads, want;
  struct {
    uint64_t sum;
    uint32_t threads;
    uint32_t mask;
  } r;
  rk_msg m;
  d.scratch_size = sizeof(psum_scratch);
  lo.threads_per_lane = threads;
  lo.lanes = lanes;
  k = rt_launch_active(rt, &d, &lo);
  for (round = 0; round < 200; round++) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    n = (uint32_t)(seed % (PSUM_MAX + 1));
    want = 0;
    for (i = 0; i < n; i++) {
      a[i] = (uint32_t)(seed >> (i % 32)) ^ (i * 2654435761u);
      want += a[i];
    }
    RT_OK(rt, rk_call(k, PSUM_TYPE, n ? a : NULL, n * (uint32_t)sizeof(uint32_t), &m, &r, sizeof r, RT_HANG));
    assert_int_equal(m.len, sizeof r);
    assert_int_equal(r.sum, want);
    assert_int_equal(r.threads, threads);
    assert_int_equal(r.mask, (1u << threads) - 1);
  }
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_cooperative_sum(void **state) {
  (void)state;
  run_psum(1, 1);
  run_psum(4, 1);
  run_psum(4, 2);
  run_psum(3, 1); /* a count that does not divide the work */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handler_errors),
      cmocka_unit_test(test_handler_results),
      cmocka_unit_test(test_typed_refused_at_send),
      cmocka_unit_test(test_msg_as),
      cmocka_unit_test(test_custom_typed_kernel),
      cmocka_unit_test(test_slot_layout),
      cmocka_unit_test(test_invalid_envelopes),
      cmocka_unit_test(test_clock_drift_refused),
      cmocka_unit_test(test_handler_context),
      cmocka_unit_test(test_state_init_failure),
      cmocka_unit_test(test_multiple_replies),
      cmocka_unit_test(test_oversized_reply),
      cmocka_unit_test(test_reply_during_reservation),
      cmocka_unit_test(test_cooperative_sum),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
