/* test_replies.c — the host trusts nothing a lane writes into its outbox (issue 11, items 7 and 8):
 * each reply's envelope is validated before any of it is used (rk_envelope_validate_reply); a
 * refused reply is counted (replies_invalid) and its payload never delivered; when its header is
 * sound enough to believe its ids, its receiver gets an RK_ECORRUPT notice at once (an rk_call
 * returns RK_ECORRUPT instead of waiting out its timeout; rk_recv and callbacks get an error reply
 * with no payload); good replies around bad ones are all delivered, once, to the right receiver. A
 * lane ring whose header was rewritten to describe more memory than launch gave it is refused by
 * the send and drain paths (RK_ECORRUPT, kernel FAULTED) instead of being read or written past
 * its end.
 *
 * Corrupt replies come from a handler that writes through its reservation into the envelope in
 * front of it (what a faulty handler or device lane does), or, white-box, from the test publishing
 * into the outbox of a lane that is not consuming (host/internal.h; linked against the static
 * library). Also white-box: what rk_send_batch writes into an inbox, byte for byte. */
#include "rt_util.h"

#include "host/internal.h"

#define SCRIBBLE_TYPE 40u
#define REPLY_TYPE 41u
#define REPLY_LEN 16u

/* Which envelope field the handler damages, and with what. */
enum {
  F_NONE = 0,
  F_LEN,
  F_MAGIC,
  F_RESERVED,
  F_FLAGS,
  F_TYPE,
  F_SRC,
  F_ERROR_CODE,
  F_CHECKSUM,
  F_VERSION,
  F_REPLIES3 /* three replies: good, damaged length, good */
};

typedef struct scribble {
  uint32_t field;
  uint32_t tag;   /* echoed in the payload of good replies */
  uint64_t value; /* the value written into the field */
} scribble;

static void fill_payload(uint8_t *p, uint32_t tag) {
  uint32_t i;
  for (i = 0; i < REPLY_LEN; i++) p[i] = (uint8_t)(tag * 7 + i);
}

/* One reply through rk_reply_reserve; then (thread 0) damage its envelope, which sits right in
 * front of the reserved payload in the slot, before committing it. */
static int reply_damaged(rk_ctx *ctx, const scribble *s, uint32_t field, uint32_t tag) {
  uint8_t *p = (uint8_t *)rk_reply_reserve(ctx, REPLY_TYPE, REPLY_LEN);
  rk_envelope *e;
  if (p == NULL) return RK_EAGAIN;
  e = (rk_envelope *)(void *)(p - RK_ENVELOPE_SIZE);
  fill_payload(p, tag);
  switch (field) {
    case F_LEN: e->payload_len = (uint32_t)s->value; break;
    case F_MAGIC: e->magic = (uint32_t)s->value; break;
    case F_RESERVED: e->origin = (uint32_t)s->value; break;
    case F_FLAGS: e->flags = (uint16_t)s->value; break;
    case F_TYPE: e->type = (uint32_t)s->value; break;
    case F_SRC: e->src = (uint32_t)s->value; break;
    case F_ERROR_CODE: {
      int32_t c = (int32_t)s->value;
      e->flags = (uint16_t)(e->flags | RK_ENV_F_ERROR);
      memcpy(p, &c, sizeof c);
      break;
    }
    case F_CHECKSUM:
      rk_envelope_seal(e, p);
      p[5] ^= 0x10;
      break;
    case F_VERSION: e->version = (uint16_t)s->value; break;
    default: break;
  }
  return rk_reply_commit(ctx);
}

static int scribbler(rk_ctx *ctx, const rk_msg *in) {
  scribble s;
  int rc;
  if (rk_msg_len(in) != sizeof s) return RK_EMSGSIZE;
  memcpy(&s, rk_msg_payload(in), sizeof s);
  if (s.field != F_REPLIES3) return reply_damaged(ctx, &s, s.field, s.tag);
  if ((rc = reply_damaged(ctx, &s, F_NONE, s.tag)) != RK_OK) return rc;
  s.value = 0x40000000u;
  if ((rc = reply_damaged(ctx, &s, F_LEN, s.tag + 1)) != RK_OK) return rc;
  return reply_damaged(ctx, &s, F_NONE, s.tag + 2);
}

static scribble scr(uint32_t field, uint64_t value, uint32_t tag) {
  scribble s;
  memset(&s, 0, sizeof s);
  s.field = field;
  s.value = value;
  s.tag = tag;
  return s;
}

/* A good reply: the right type, length and payload. */
static void expect_good(const rk_msg *m, const uint8_t *buf, uint32_t tag) {
  uint8_t want[REPLY_LEN];
  fill_payload(want, tag);
  assert_false(rk_msg_is_error(m));
  assert_int_equal(m->status, 0);
  assert_int_equal(rk_msg_type_of(m), REPLY_TYPE);
  assert_int_equal(m->len, REPLY_LEN);
  assert_memory_equal(buf, want, REPLY_LEN);
}

/* An RK_ECORRUPT notice for the request with id `id`: no payload, the receiver's buffer untouched. */
static void expect_notice(const rk_msg *m, const uint8_t *buf, size_t buf_len, uint64_t id) {
  size_t i;
  assert_true(rk_msg_is_error(m));
  assert_true(m->env.flags & RK_ENV_F_REPLY);
  assert_int_equal(m->status, RK_ECORRUPT);
  assert_int_equal(m->len, 0);
  assert_null(m->payload);
  assert_int_equal(m->env.payload_len, 0);
  assert_int_equal(m->env.correlation_id, id);
  for (i = 0; i < buf_len; i++) assert_int_equal(buf[i], 0xee);
}

/* Every kind of damage, through rk_call on an active kernel: a damaged reply whose ids can be
 * believed ends the call at once with RK_ECORRUPT; one whose header is damaged wakes no one (the
 * call times out); good calls in between all succeed. */
static void test_call_learns_corrupt_reply(void **state) {
  static const struct {
    uint32_t field;
    uint64_t value;
    int trusted; /* 1: notice (RK_ECORRUPT at once); 0: nobody is told (timeout) */
  } cases[] = {
      {F_LEN, 256 - 64 + 1, 1},      /* one byte beyond the slot's payload */
      {F_LEN, 0x40000000u, 1},       /* the length that crashed rk_call */
      {F_LEN, 0xffffffffu, 1},
      {F_TYPE, 0, 1},                /* type 0 on a reply that is not an error */
      {F_SRC, 12345, 1},             /* from another kernel */
      {F_ERROR_CODE, 7, 1},          /* an error reply without a negative code */
      {F_ERROR_CODE, 0, 1},
      {F_CHECKSUM, 0, 1},
      {F_MAGIC, 0x12345678u, 0},
      {F_VERSION, 2, 0},
      {F_RESERVED, 1, 0},
      {F_FLAGS, 0x8000 | RK_ENV_F_REPLY, 0}, /* a reserved flag bit */
      {F_FLAGS, 0, 0},                        /* not marked a reply */
      {F_FLAGS, RK_ENV_F_REPLY | RK_ENV_F_K2K, 0},
  };
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("scribbler", scribbler);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_kernel_counters st;
  unsigned warnings = rt_log_count(&rt_the_log, RK_LOG_WARN);
  size_t i;
  uint32_t good = 0, trusted = 0;
  (void)state;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    scribble s = scr(cases[i].field, cases[i].value, (uint32_t)i);
    uint8_t buf[4096]; /* larger than a slot: a believed length would have read past the slot */
    rk_msg m;
    int rc;
    uint64_t t0;
    memset(buf, 0xee, sizeof buf);
    t0 = rt_now_ns();
    rc = rk_call(k, SCRIBBLE_TYPE, &s, sizeof s, &m, buf, sizeof buf, cases[i].trusted ? RT_HANG : 100 * RT_MS);
    if (cases[i].trusted) {
      if (rc != RK_ECORRUPT) fail_msg("case %zu: rk_call = %s, want RK_ECORRUPT", i, rk_err_name(rc));
      expect_notice(&m, buf, sizeof buf, m.env.correlation_id);
      assert_true(m.env.correlation_id & (1ull << 63)); /* the call's own id */
      assert_true(rt_now_ns() - t0 < (uint64_t)RT_HANG);
      trusted++;
    } else {
      if (rc != RK_ETIMEDOUT) fail_msg("case %zu: rk_call = %s, want RK_ETIMEDOUT", i, rk_err_name(rc));
      for (size_t j = 0; j < sizeof buf; j++) assert_int_equal(buf[j], 0xee); /* nothing written */
    }
    /* The kernel keeps serving, and a good reply right after is delivered intact. */
    s = scr(F_NONE, 0, 1000 + (uint32_t)i);
    RT_OK(rt, rk_call(k, SCRIBBLE_TYPE, &s, sizeof s, &m, buf, sizeof buf, RT_HANG));
    expect_good(&m, buf, 1000 + (uint32_t)i);
    good++;
  }
  st = rt_stats(k);
  assert_int_equal(st.replies_invalid, sizeof cases / sizeof cases[0]);
  assert_int_equal(st.received, good);
  assert_int_equal(st.late_replies, 0);
  assert_int_equal(st.msgs_out, st.received + st.replies_invalid); /* counters balance */
  assert_int_equal(st.state, RK_STATE_ACTIVE); /* a bad reply does not stop the kernel */
  assert_int_equal(rk_kernel_error(k, NULL, 0), 0);
  /* logged (repeated lines of one format are rate-limited to 8 a second: at least one) */
  assert_true(rt_log_count(&rt_the_log, RK_LOG_WARN) > warnings);
  {
    char json[8192];
    char want[64];
    assert_true(rk_runtime_stats_json(rt, json, sizeof json) > 0);
    snprintf(want, sizeof want, "\"replies_invalid\":%zu", sizeof cases / sizeof cases[0]);
    assert_non_null(strstr(json, want));
  }
  (void)trusted;
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* rk_send + rk_recv: a damaged reply between two good ones (one request, three replies) comes as a
 * notice in its place, in order; the good ones are intact. Then the same through callbacks. */
static rk_msg cb_msgs[8];
static uint8_t cb_bufs[8][REPLY_LEN];
static int cb_count; /* under cb_mutex */
static pthread_mutex_t cb_mutex = PTHREAD_MUTEX_INITIALIZER;

static void collect(rk_kernel *k, const rk_msg *m, void *user) {
  (void)k;
  (void)user;
  pthread_mutex_lock(&cb_mutex);
  if (cb_count < 8) {
    cb_msgs[cb_count] = *m;
    memset(cb_bufs[cb_count], 0xee, REPLY_LEN);
    if (m->len) memcpy(cb_bufs[cb_count], m->payload, m->len < REPLY_LEN ? m->len : REPLY_LEN);
    cb_count++;
  }
  pthread_mutex_unlock(&cb_mutex);
}

static int cb_count_is3(void *arg) {
  int n;
  (void)arg;
  pthread_mutex_lock(&cb_mutex);
  n = cb_count;
  pthread_mutex_unlock(&cb_mutex);
  return n >= 3;
}

static void test_recv_gets_notice_in_place(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("scribbler", scribbler);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  scribble s = scr(F_REPLIES3, 0, 10);
  uint64_t id;
  uint8_t buf[512];
  rk_msg m;
  rk_kernel_counters st;
  (void)state;
  RT_OK(rt, rk_send(k, SCRIBBLE_TYPE, &s, sizeof s, 0, &id));
  memset(buf, 0xee, sizeof buf);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  assert_int_equal(m.env.correlation_id, id);
  expect_good(&m, buf, 10);
  memset(buf, 0xee, sizeof buf);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  expect_notice(&m, buf, sizeof buf, id);
  memset(buf, 0xee, sizeof buf);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  assert_int_equal(m.env.correlation_id, id);
  expect_good(&m, buf, 12);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 0), RK_EAGAIN);
  st = rt_stats(k);
  assert_int_equal(st.received, 2);
  assert_int_equal(st.replies_invalid, 1);
  assert_int_equal(st.msgs_out, 3);

  /* The pending list keeps the order too: an rk_call on the same lane drains all three first. */
  RT_OK(rt, rk_send(k, SCRIBBLE_TYPE, &s, sizeof s, 0, &id));
  RT_WAIT_STAT(k, msgs_out, 6);
  s = scr(F_NONE, 0, 20);
  RT_OK(rt, rk_call(k, SCRIBBLE_TYPE, &s, sizeof s, &m, buf, sizeof buf, RT_HANG));
  expect_good(&m, buf, 20);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  expect_good(&m, buf, 10);
  memset(buf, 0xee, sizeof buf);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  expect_notice(&m, buf, sizeof buf, id);
  RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  expect_good(&m, buf, 12);
  st = rt_stats(k);
  assert_int_equal(st.received, 5);
  assert_int_equal(st.replies_invalid, 2);

  /* Callbacks */
  cb_count = 0;
  RT_OK(rt, rk_recv_start(k, collect, NULL));
  s = scr(F_REPLIES3, 0, 30);
  RT_OK(rt, rk_send(k, SCRIBBLE_TYPE, &s, sizeof s, 0, &id));
  assert_true(rt_wait_for(cb_count_is3, NULL, RT_HANG));
  RT_OK(rt, rk_recv_stop(k));
  expect_good(&cb_msgs[0], cb_bufs[0], 30);
  assert_true(rk_msg_is_error(&cb_msgs[1]));
  assert_int_equal(cb_msgs[1].status, RK_ECORRUPT);
  assert_int_equal(cb_msgs[1].len, 0);
  assert_null(cb_msgs[1].payload);
  assert_int_equal(cb_msgs[1].env.correlation_id, id);
  expect_good(&cb_msgs[2], cb_bufs[2], 32);
  st = rt_stats(k);
  assert_int_equal(st.received, 7);
  assert_int_equal(st.replies_invalid, 3);
  assert_int_equal(st.msgs_out, st.received + st.replies_invalid);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- white-box: the test writes the outbox ---------------- */

static int never(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx;
  (void)in;
  return RK_EINVAL;
}

/* Publish one reply into lane `lane`'s outbox as its producer would (the kernel is only launched,
 * so its lanes never touch their outboxes). */
static void put_reply(rk_kernel *k, uint32_t lane, const rk_envelope *e, const void *payload, uint32_t n) {
  rk_ring *r = k->lane[lane].outbox;
  uint64_t pos;
  uint8_t *slot;
  assert_int_equal(rk_ring_reserve_n(r, 1, &pos), 1);
  slot = (uint8_t *)rk_ring_slot(r, pos);
  memcpy(slot, e, sizeof *e);
  if (n) memcpy(slot + sizeof *e, payload, n);
  rk_ring_commit_n(r, 1);
  rk_ring_notify_consumer(r);
}

static rk_envelope reply_env(rk_kernel *k, uint32_t lane, uint64_t correlation, uint32_t len) {
  rk_envelope e;
  rk_envelope_init(&e, REPLY_TYPE, len, RK_ENV_F_REPLY);
  e.msg_id = ((uint64_t)(lane + 1) << 48) | 1;
  e.correlation_id = correlation;
  e.src = rk_kernel_id(k);
  e.node = rk_kernel_id(k);
  e.lane = (uint16_t)lane;
  e.hlc = rk_clock_peek(rk_runtime_clock(k->rt));
  return e;
}

typedef struct caller {
  rk_kernel *k;
  uint64_t key;
  int rc;
  rk_msg m;
  uint8_t buf[64];
} caller;

static void *call_thread(void *arg) {
  caller *c = (caller *)arg;
  scribble s = scr(F_NONE, 0, 0);
  memset(c->buf, 0xee, sizeof c->buf);
  int rc = rk_call_key(c->k, c->key, SCRIBBLE_TYPE, &s, sizeof s, &c->m, c->buf, sizeof c->buf, RT_HANG);
  __atomic_store_n(&c->rc, rc, __ATOMIC_RELEASE);
  return NULL;
}

/* The id of the one request waiting in lane `lane`'s inbox, or 0. */
static uint64_t waiting_request(rk_kernel *k, uint32_t lane) {
  uint64_t pos;
  if (rk_ring_peek_n(k->lane[lane].inbox, 1, &pos) != 1) return 0;
  return ((const rk_envelope *)rk_ring_slot(k->lane[lane].inbox, pos))->msg_id;
}

static int request_arrived(void *arg) {
  rk_kernel *k = (rk_kernel *)arg;
  return waiting_request(k, 0) != 0 || waiting_request(k, 1) != 0;
}

/* A reply that names an rk_call sent on another lane is refused, never delivered to that call;
 * the call's real reply, on its own lane, is. */
static void test_reply_from_wrong_lane_refused(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  caller c;
  pthread_t t;
  uint64_t id;
  uint32_t lane, other;
  rk_envelope e;
  uint8_t payload[REPLY_LEN];
  rk_kernel_counters st;
  (void)state;
  lo.lanes = 2;
  k = rt_launch(rt, &d, &lo); /* never activated: the requests stay in the inboxes */
  memset(&c, 0, sizeof c);
  c.k = k;
  c.key = 77;
  c.rc = 1;
  assert_int_equal(pthread_create(&t, NULL, call_thread, &c), 0);
  assert_true(rt_wait_for(request_arrived, k, RT_HANG));
  lane = waiting_request(k, 0) ? 0 : 1;
  other = 1 - lane;
  id = waiting_request(k, lane);
  assert_true(id & (1ull << 63));

  fill_payload(payload, 5);
  e = reply_env(k, other, id, REPLY_LEN);
  put_reply(k, other, &e, payload, REPLY_LEN);
  {
    /* The caller drains only its own lane; a receiver drains the other one and must refuse it
     * (neither deliver it to the caller, nor take it itself). */
    rk_msg m;
    uint8_t buf[64];
    assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  }
  st = rt_stats(k);
  assert_int_equal(st.replies_invalid, 1);
  assert_int_equal(st.received, 0);
  assert_int_equal(__atomic_load_n(&c.rc, __ATOMIC_ACQUIRE), 1); /* still waiting */

  e = reply_env(k, lane, id, REPLY_LEN);
  put_reply(k, lane, &e, payload, REPLY_LEN);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(c.rc, RK_OK);
  expect_good(&c.m, c.buf, 5);
  assert_int_equal(c.m.env.lane, lane);
  st = rt_stats(k);
  assert_int_equal(st.received, 1);
  assert_int_equal(st.replies_invalid, 1);
  assert_int_equal(st.late_replies, 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Make r's header claim twice the capacity, self-consistently (magic, mask and offsets agree), as
 * a lane that scribbled over line 0 could: rk_ring_check alone cannot tell. Returns the old
 * capacity. */
static uint64_t inflate(rk_ring *r) {
  uint64_t cap = r->capacity;
  r->capacity = cap * 2;
  r->mask = cap * 2 - 1;
  assert_int_equal(rk_ring_check(r), RK_OK);
  return cap;
}

static void deflate(rk_ring *r, uint64_t cap) {
  r->capacity = cap;
  r->mask = cap - 1;
}

/* An outbox whose header claims more than launch allocated: the drain refuses to read it (before
 * the fix it read sequence words and slots past the ring's memory, and the call waited out its
 * timeout), a call is told at once, rk_recv says RK_ECORRUPT, and the kernel is FAULTED with
 * RK_ECORRUPT. (The header is damaged before the call, not during it: a rewrite racing with the
 * host's reads is what the re-checks narrow but cannot close, see docs/design-notes.md.) */
static void test_outbox_header_beyond_memory(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  scribble s = scr(F_NONE, 0, 0);
  uint8_t buf[64];
  rk_msg m;
  uint64_t cap;
  char err[256];
  (void)state;
  lo.outbox_capacity = 4;
  k = rt_launch(rt, &d, &lo);
  cap = inflate(k->lane[0].outbox);
  memset(buf, 0xee, sizeof buf);
  assert_int_equal(rk_call(k, SCRIBBLE_TYPE, &s, sizeof s, &m, buf, sizeof buf, 2 * RT_SEC), RK_ECORRUPT);
  assert_int_equal(m.status, RK_ECORRUPT);
  assert_int_equal(m.len, 0);
  assert_true(rk_msg_is_error(&m));
  assert_int_equal(buf[0], 0xee);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 0), RK_ECORRUPT);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 50 * RT_MS), RK_ECORRUPT);
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ECORRUPT);
  assert_non_null(strstr(err, "outbox"));
  assert_int_equal(rt_stats(k).received, 0);
  deflate(k->lane[0].outbox, cap); /* so that terminate's own drain is sound again */
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* An inbox whose header claims more than launch allocated: a send refuses to claim in it (before
 * the fix it wrote the slot at the header's word, past the ring's memory) and faults the kernel. */
static void test_inbox_header_beyond_memory(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_ring *in;
  uint64_t cap, i;
  char err[256];
  (void)state;
  lo.inbox_capacity = 2;
  k = rt_launch(rt, &d, &lo);
  in = k->lane[0].inbox;
  cap = inflate(in);
  /* Past the real capacity the claims would land beyond the memory. */
  for (i = 0; i < 2 * cap; i++) {
    int rc = rk_send(k, 1, "x", 1, RK_SEND_NOWAIT, NULL);
    if (rc == RK_ECORRUPT) break;
    fail_msg("send %llu to a damaged inbox = %s", (unsigned long long)i, rk_err_name(rc));
  }
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  assert_int_equal(rk_kernel_error(k, err, sizeof err), RK_ECORRUPT);
  assert_non_null(strstr(err, "inbox"));
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_ECORRUPT"));
  assert_int_equal(rt_stats(k).sent, 0);
  deflate(in, cap);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- rk_call's fast path (issue 16) ----------------------- */

/* The id of the n-th request (0: the oldest) waiting in lane `lane`'s inbox, or 0. */
static uint64_t nth_request(rk_kernel *k, uint32_t lane, uint32_t n) {
  uint64_t pos;
  if ((uint32_t)rk_ring_peek_n(k->lane[lane].inbox, n + 1, &pos) != n + 1) return 0;
  return ((const rk_envelope *)rk_ring_slot(k->lane[lane].inbox, pos + n))->msg_id;
}

typedef struct nth_wait {
  rk_kernel *k;
  uint32_t lane, n;
} nth_wait;

static int nth_arrived(void *arg) {
  nth_wait *w = (nth_wait *)arg;
  return nth_request(w->k, w->lane, w->n) != 0;
}

/* Wait (hang-checked) for the n-th request of lane `lane` and return its id. */
static uint64_t wait_request(rk_kernel *k, uint32_t lane, uint32_t n) {
  nth_wait w;
  w.k = k;
  w.lane = lane;
  w.n = n;
  assert_true(rt_wait_for(nth_arrived, &w, RT_HANG));
  return nth_request(k, lane, n);
}

static void put_good(rk_kernel *k, uint32_t lane, uint64_t correlation, uint32_t tag) {
  uint8_t payload[REPLY_LEN];
  rk_envelope e = reply_env(k, lane, correlation, REPLY_LEN);
  fill_payload(payload, tag);
  put_reply(k, lane, &e, payload, REPLY_LEN);
}

/* As call_thread, with rk_call: round-robin lanes. */
static void *call_rr_thread(void *arg) {
  caller *c = (caller *)arg;
  scribble s = scr(F_NONE, 0, 0);
  memset(c->buf, 0xee, sizeof c->buf);
  int rc = rk_call(c->k, SCRIBBLE_TYPE, &s, sizeof s, &c->m, c->buf, sizeof c->buf, RT_HANG);
  __atomic_store_n(&c->rc, rc, __ATOMIC_RELEASE);
  return NULL;
}

static void start_caller(pthread_t *t, caller *c, rk_kernel *k, uint64_t key) {
  memset(c, 0, sizeof *c);
  c->k = k;
  c->key = key;
  c->rc = 1;
  assert_int_equal(pthread_create(t, NULL, call_rr_thread, c), 0);
}

static void join_good(pthread_t t, caller *c, uint32_t tag) {
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(c->rc, RK_OK);
  expect_good(&c->m, c->buf, tag);
}

/* An rk_call that timed out (its caller held the outbox on the fast path all along), whose reply
 * comes later: the late reply is counted and kept as a dead letter, never delivered to a later
 * call, whether it is alone in the outbox when the next call starts or in front of that call's own
 * reply; nothing is left queued. */
static void test_call_timeout_late_reply(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_kernel *k = rt_launch(rt, &d, NULL); /* never activated: the test answers for the lane */
  scribble s = scr(F_NONE, 0, 0);
  rk_msg m;
  uint8_t buf[64];
  uint64_t id1, id2, id3, total = 0;
  caller c;
  pthread_t t;
  rk_kernel_counters st;
  rk_dead_letter dl[4];
  int i;
  (void)state;
  /* 1. a call times out; the lane never answered it */
  assert_int_equal(rk_call(k, SCRIBBLE_TYPE, &s, sizeof s, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  id1 = nth_request(k, 0, 0);
  assert_true(id1 & RK__CALL_BIT);
  assert_int_equal(k->lane[0].fast_call, 0); /* the fast path let go */
  /* 2. its reply comes, alone, before the next call: that call gets only its own */
  put_good(k, 0, id1, 1);
  start_caller(&t, &c, k, 0);
  id2 = wait_request(k, 0, 1);
  assert_true(id2 != id1);
  put_good(k, 0, id2, 2);
  join_good(t, &c, 2);
  st = rt_stats(k);
  assert_int_equal(st.received, 1);
  assert_int_equal(st.late_replies, 1);
  assert_int_equal(st.replies_invalid, 0);
  /* 3. a second call times out; its reply comes in front of the next call's */
  assert_int_equal(rk_call(k, SCRIBBLE_TYPE, &s, sizeof s, &m, buf, sizeof buf, 20 * RT_MS), RK_ETIMEDOUT);
  start_caller(&t, &c, k, 0);
  id3 = wait_request(k, 0, 3);
  put_good(k, 0, nth_request(k, 0, 2), 3); /* the one that timed out */
  put_good(k, 0, id3, 4);
  join_good(t, &c, 4);
  st = rt_stats(k);
  assert_int_equal(st.received, 2);
  assert_int_equal(st.late_replies, 2);
  assert_int_equal(st.replies_invalid, 0);
  assert_int_equal(st.dead_letters, 2);
  /* the late replies are the dead letters, with their payloads; nothing else is queued */
  assert_int_equal(rk_kernel_dead_letters(k, dl, 4, &total), 2);
  assert_int_equal(total, 2);
  for (i = 0; i < 2; i++) {
    uint8_t want[REPLY_LEN];
    fill_payload(want, (uint32_t)(1 + 2 * i));
    assert_int_equal(dl[i].reason, RK_ETIMEDOUT);
    assert_int_equal(dl[i].env.correlation_id, i == 0 ? id1 : nth_request(k, 0, 2));
    assert_int_equal(dl[i].payload_len, REPLY_LEN);
    assert_memory_equal(dl[i].payload, want, REPLY_LEN);
  }
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, 0), RK_EAGAIN);
  assert_int_equal(rk_ring_count(k->lane[0].outbox), 0);
  assert_int_equal(k->pend_count, 0);
  assert_null(k->waiters);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* rk_recv_batch takes the replies at the front of a batch straight into the caller's rk_msg array
 * (drain_direct, issue 16) and leaves the rest, from the first one it must route, to the general
 * drain. Both ways must agree: order, payloads, statuses (an error reply's code, RK_ECLOCK for a
 * stamp too far ahead, delivered all the same), a damaged reply refused and counted, a late rk_call
 * reply kept as a dead letter, the receive's count honoured. The outbox holds, in order: good 1,
 * good 2 stamped 10 s ahead, an error reply, a checksummed good 5, a late rk_call reply, a damaged
 * magic, a checksummed reply whose checksum is wrong (a notice), good 3 stamped ahead, good 4. */
static void put_ahead(rk_kernel *k, uint64_t correlation, uint32_t tag) {
  uint8_t payload[REPLY_LEN];
  rk_envelope e = reply_env(k, 0, correlation, REPLY_LEN);
  rk_hlc now = 0;
  assert_int_equal(rk_clock_tick(rk_runtime_clock(k->rt), &now), RK_OK);
  e.hlc = rk_hlc_make(rk_hlc_physical(now) + 10000000u, 0); /* 10 s ahead: beyond the drift bound */
  fill_payload(payload, tag);
  put_reply(k, 0, &e, payload, REPLY_LEN);
}

static void test_recv_batch_mixed(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_kernel *k = rt_launch(rt, &d, NULL); /* never activated: the test answers for the lane */
  rk_msg m[16];
  uint8_t bufs[16][REPLY_LEN];
  uint8_t payload[8], want[REPLY_LEN];
  int32_t code = RK_EINVAL;
  rk_envelope e;
  rk_kernel_counters st;
  rk_dead_letter dl[2];
  uint64_t total = 0;
  int got;
  (void)state;
  put_good(k, 0, 11, 1);
  put_ahead(k, 12, 2);
  e = reply_env(k, 0, 13, sizeof payload); /* an error reply: its code first */
  e.flags = (uint16_t)(RK_ENV_F_REPLY | RK_ENV_F_ERROR);
  memset(payload, 0, sizeof payload);
  memcpy(payload, &code, sizeof code);
  put_reply(k, 0, &e, payload, sizeof payload);
  e = reply_env(k, 0, 18, REPLY_LEN); /* checksummed, sound */
  fill_payload(want, 5);
  rk_envelope_seal(&e, want);
  put_reply(k, 0, &e, want, REPLY_LEN);
  put_good(k, 0, RK__CALL_BIT | 15, 98); /* an rk_call's, whose caller is gone: late */
  e = reply_env(k, 0, 14, REPLY_LEN);
  e.magic ^= 1u; /* damaged: refused, no one told */
  fill_payload(bufs[0], 99);
  put_reply(k, 0, &e, bufs[0], REPLY_LEN);
  e = reply_env(k, 0, 19, REPLY_LEN); /* checksummed, the checksum wrong: refused, a notice */
  rk_envelope_seal(&e, want);
  e.checksum ^= 1u;
  put_reply(k, 0, &e, want, REPLY_LEN);
  put_ahead(k, 16, 3);
  put_good(k, 0, 17, 4);

  /* a receive of 2 takes 2, however many are published */
  memset(m, 0, sizeof m);
  got = rk_recv_batch(k, m, bufs, REPLY_LEN, 2, RT_HANG);
  assert_int_equal(got, 2);
  assert_int_equal(m[0].env.correlation_id, 11);
  expect_good(&m[0], bufs[0], 1);
  assert_int_equal(m[1].env.correlation_id, 12);
  assert_int_equal(m[1].status, RK_ECLOCK); /* delivered, marked */
  assert_int_equal(m[1].len, REPLY_LEN);
  assert_ptr_equal(m[1].payload, bufs[1]);
  fill_payload(want, 2);
  assert_memory_equal(bufs[1], want, REPLY_LEN);
  assert_int_equal(rk_ring_count(k->lane[0].outbox), 7);

  /* the rest: the error reply, then the general drain's share */
  memset(m, 0, sizeof m);
  got = rk_recv_batch(k, m, bufs, REPLY_LEN, 16, RT_HANG);
  assert_int_equal(got, 5); /* one receive: the direct part stops at the late reply, the drain goes on */
  assert_int_equal(m[0].env.correlation_id, 13);
  assert_true(rk_msg_is_error(&m[0]));
  assert_int_equal(m[0].status, RK_EINVAL);
  assert_int_equal(m[0].len, 8);
  assert_int_equal(m[1].env.correlation_id, 18);
  expect_good(&m[1], bufs[1], 5);
  expect_notice(&m[2], bufs[2], 0, 19);
  assert_int_equal(m[3].env.correlation_id, 16);
  assert_int_equal(m[3].status, RK_ECLOCK);
  assert_int_equal(m[4].env.correlation_id, 17);
  expect_good(&m[4], bufs[4], 4);
  assert_int_equal(rk_recv(k, &m[0], bufs[0], REPLY_LEN, 0), RK_EAGAIN);
  assert_int_equal(rk_ring_count(k->lane[0].outbox), 0);

  st = rt_stats(k);
  assert_int_equal(st.received, 6);
  assert_int_equal(st.replies_invalid, 2);
  assert_int_equal(st.late_replies, 1);
  assert_int_equal(rk_kernel_dead_letters(k, dl, 2, &total), 1);
  assert_int_equal(dl[0].env.correlation_id, RK__CALL_BIT | 15);
  assert_int_equal(k->pend_count, 0);

  /* A receive that takes nothing leaves no byte of a refused reply in the caller's entry: here a
   * damaged one alone, then one that names an rk_call (another caller's, late here) */
  e = reply_env(k, 0, 20, REPLY_LEN);
  e.version = 7;
  put_reply(k, 0, &e, bufs[0], REPLY_LEN);
  put_good(k, 0, RK__CALL_BIT | 21, 97);
  memset(&m[0], 0xee, sizeof m[0]);
  assert_int_equal(rk_recv(k, &m[0], bufs[0], REPLY_LEN, 0), RK_EAGAIN);
  assert_int_equal(m[0].env.magic == RK_ENVELOPE_MAGIC, 0);
  assert_int_equal(rk_ring_count(k->lane[0].outbox), 0);
  st = rt_stats(k);
  assert_int_equal(st.replies_invalid, 3);
  assert_int_equal(st.late_replies, 2);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* What rk_send_batch writes into a lane's inbox (fill_run writes each envelope as whole words,
 * issue 16): byte for byte the envelope rk_envelope_init and the send's fields make (flags: only
 * RK_ENV_F_NO_REPLY of the send flags, RK_ENV_F_CHECKSUM with the checksum when asked; src 0, dst
 * the kernel, the runtime's node, the lane it went to, stamps in send order, the ids handed back),
 * then the payload, for payloads of 0 to 64 bytes, on a kernel of two lanes. Items come in runs of
 * four alike (one claim each, to one lane: the run detection's common case) and the runs differ. An
 * item with a NULL payload and a length inside such a run stops the batch there (RK_EINVAL for it;
 * those before it sent). */
static void test_send_batch_envelopes(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_kernel *k;
  static const uint32_t lens[] = {0, 1, 7, 16, 31, 32, 33, 64};
  static const uint32_t flags[] = {0, RK_SEND_NO_REPLY, RK_SEND_CHECKSUM, RK_SEND_NO_REPLY | RK_SEND_CHECKSUM};
  enum { N = 64, RUN = 4 };
  rk_send_item items[N];
  uint8_t payloads[N][64];
  uint32_t i, j, lane, seen = 0;
  uint64_t pos;
  (void)state;
  d.lanes = 2;
  k = rt_launch(rt, &d, NULL); /* never activated: the inboxes keep what was sent */
  for (i = 0; i < N; i++) {
    uint32_t r = i / RUN; /* the run: its items alike, runs unlike */
    for (j = 0; j < 64; j++) payloads[i][j] = (uint8_t)(i * 31 + j);
    memset(&items[i], 0, sizeof items[i]);
    items[i].type = SCRIBBLE_TYPE + r % 3;
    items[i].len = lens[r % 8];
    items[i].payload = items[i].len ? payloads[i] : NULL;
    items[i].flags = flags[(r / 2) % 4];
  }
  assert_int_equal(rk_send_batch(k, items, N), N);
  for (lane = 0; lane < 2; lane++) {
    rk_ring *in = k->lane[lane].inbox;
    uint32_t got = rk_ring_peek_n(in, N + 1, &pos);
    for (j = 0; j < got; j++) {
      const uint8_t *slot = rk_ring_slot(in, pos + j);
      rk_envelope want, env;
      memcpy(&env, slot, sizeof env);
      for (i = 0; i < N && items[i].msg_id != env.msg_id; i++) {
      }
      assert_true(i < N); /* an id handed back */
      rk_envelope_init(&want, items[i].type, items[i].len,
                       (uint16_t)(items[i].flags & RK_SEND_NO_REPLY ? RK_ENV_F_NO_REPLY : 0));
      want.msg_id = items[i].msg_id;
      want.dst = rk_kernel_id(k);
      want.node = k->rt->node_id;
      want.lane = (uint16_t)lane;
      want.hlc = env.hlc;
      if (items[i].flags & RK_SEND_CHECKSUM) rk_envelope_seal(&want, payloads[i]);
      assert_memory_equal(&env, &want, sizeof want);
      assert_memory_equal(slot + RK_ENVELOPE_SIZE, payloads[i], items[i].len);
      assert_int_equal(rk_envelope_validate(&env, slot + RK_ENVELOPE_SIZE, rk__payload_max(k), rk_kernel_id(k)),
                       RK_ENV_OK);
      assert_false(items[i].msg_id & RK__CALL_BIT);
      if (j > 0) { /* in send order on its lane: stamps and ids */
        rk_envelope prev;
        memcpy(&prev, rk_ring_slot(in, pos + j - 1), sizeof prev);
        assert_true(env.hlc > prev.hlc);
        assert_true(env.msg_id > prev.msg_id);
      }
      if (j % RUN) { /* a run went to one lane, whole */
        rk_envelope prev;
        memcpy(&prev, rk_ring_slot(in, pos + j - 1), sizeof prev);
        assert_int_equal(env.msg_id, prev.msg_id + 1);
        assert_int_equal(env.hlc, prev.hlc + 1);
      }
    }
    rk_ring_release_n(in, got);
    seen += got;
  }
  assert_int_equal(seen, N);
  /* a NULL payload with a length, third of a run of four: two sent, then RK_EINVAL for it */
  items[2].payload = NULL;
  items[0].len = items[1].len = items[2].len = items[3].len = 8;
  items[0].payload = payloads[0];
  items[1].payload = payloads[1];
  items[3].payload = payloads[3];
  assert_int_equal(rk_send_batch(k, items, 4), 2);
  assert_int_equal(rk_send_batch(k, &items[2], 2), RK_EINVAL);
  assert_int_equal(rk_ring_peek_n(k->lane[0].inbox, 8, &pos) + rk_ring_peek_n(k->lane[1].inbox, 8, &pos), 2);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* Which lane holds request id (hang-checked wait for it to arrive), and its index there. */
typedef struct find_req {
  rk_kernel *k;
  uint32_t seen; /* requests already placed */
} find_req;

/* Requests published (not only claimed) in lane `lane`'s inbox (never consumed: inactive kernel). */
static uint32_t published(rk_kernel *k, uint32_t lane) {
  uint64_t pos;
  return rk_ring_peek_n(k->lane[lane].inbox, 64, &pos);
}

static int total_arrived(void *arg) {
  find_req *f = (find_req *)arg;
  return published(f->k, 0) + published(f->k, 1) > f->seen;
}

/* Calls from several threads to a two-lane kernel: each gets its own reply, whether it is the
 * outbox's drainer (the fast path) or asleep behind it, and whether its reply is alone in the
 * outbox, first, or behind another caller's. */
static void test_calls_across_lanes(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  caller c[6];
  pthread_t t[6];
  uint64_t id[6];
  uint32_t lane[6], i, round;
  rk_kernel_counters st;
  find_req f;
  (void)state;
  lo.lanes = 2;
  k = rt_launch(rt, &d, &lo);
  f.k = k;
  for (round = 0; round < 2; round++) {
    uint32_t base = round * 3, on[2][3], non[2] = {0, 0}, x, y, holder, sleeper;
    /* three callers, started one at a time (round-robin lanes): two share a lane */
    for (i = base; i < base + 3; i++) {
      uint32_t l0 = published(k, 0);
      f.seen = i;
      start_caller(&t[i], &c[i], k, 0);
      assert_true(rt_wait_for(total_arrived, &f, RT_HANG));
      lane[i] = published(k, 0) > l0 ? 0 : 1;
      id[i] = nth_request(k, lane[i], published(k, lane[i]) - 1);
      assert_true(id[i] & RK__CALL_BIT);
      on[lane[i]][non[lane[i]]++] = i;
    }
    x = non[0] == 2 ? 0 : 1; /* the lane with two callers */
    y = 1 - x;
    assert_int_equal(non[x], 2);
    /* the first caller on lane x holds its outbox (fast path); the second sleeps behind it */
    holder = on[x][0];
    sleeper = on[x][1];
    assert_int_equal(k->lane[x].fast_call, id[holder]);
    /* round 0: the holder's reply behind the sleeper's; round 1: in front of it */
    if (round == 0) {
      put_good(k, x, id[sleeper], 10 + sleeper);
      put_good(k, x, id[holder], 10 + holder);
    } else {
      put_good(k, x, id[holder], 10 + holder);
      put_good(k, x, id[sleeper], 10 + sleeper);
    }
    put_good(k, y, id[on[y][0]], 10 + on[y][0]); /* alone in its outbox */
    for (i = base; i < base + 3; i++) {
      join_good(t[i], &c[i], 10 + i);
      assert_int_equal(c[i].m.env.correlation_id, id[i]);
      assert_int_equal(c[i].m.env.lane, lane[i]);
    }
    /* the lanes' inboxes still hold the requests (never consumed): count them as placed */
  }
  st = rt_stats(k);
  assert_int_equal(st.received, 6);
  assert_int_equal(st.late_replies, 0);
  assert_int_equal(st.replies_invalid, 0);
  assert_int_equal(rk_ring_count(k->lane[0].outbox) + rk_ring_count(k->lane[1].outbox), 0);
  assert_null(k->waiters);
  assert_int_equal(k->lane[0].fast_call, 0);
  assert_int_equal(k->lane[1].fast_call, 0);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

typedef struct cb_hits {
  int n;
  uint32_t tag_ok;
} cb_hits;

static void counting_cb(rk_kernel *k, const rk_msg *m, void *user) {
  cb_hits *c = (cb_hits *)user;
  uint8_t want[REPLY_LEN];
  (void)k;
  fill_payload(want, 7);
  if (m->len == REPLY_LEN && memcmp(m->payload, want, REPLY_LEN) == 0) __atomic_store_n(&c->tag_ok, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&c->n, 1, __ATOMIC_RELEASE);
}

static int cb_ran(void *arg) { return __atomic_load_n(&((cb_hits *)arg)->n, __ATOMIC_ACQUIRE) > 0; }

/* N1 (issue 16): with callbacks on, an rk_call that holds the outbox takes the replies meant for
 * the callbacks into the pending list (their dispatcher found drain_lock taken and left: the
 * lane's wake-up for them is spent). Their callback must run without waiting for the service
 * timer, here an hour away. Before the fix it ran only at the timer (the test timed out). */
static void test_callback_reply_taken_by_call(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel_desc d = rt_desc("inactive", never);
  rk_kernel *k;
  cb_hits cc;
  caller c;
  pthread_t t;
  uint64_t id;
  (void)state;
  o.watchdog_interval_ns = 3600ull * 1000000000ull; /* the timer never fires during the test */
  rt = rt_create_opts(&o);
  k = rt_launch(rt, &d, NULL);
  memset(&cc, 0, sizeof cc);
  start_caller(&t, &c, k, 0);
  id = wait_request(k, 0, 0);
  /* the caller holds lane 0's outbox (fast path: nothing else drains it); callbacks start now,
   * their dispatcher finding drain_lock taken */
  assert_int_equal(k->lane[0].fast_call, id);
  assert_int_equal(rk_recv_start(k, counting_cb, &cc), RK_OK);
  /* a reply for the callbacks (no rk_call names it), then the call's own; published as the lane
   * does, without the service wake-up (spent on a dispatcher that found drain_lock taken) */
  put_good(k, 0, 12345, 7);
  put_good(k, 0, id, 8);
  join_good(t, &c, 8);
  assert_true(rt_wait_for(cb_ran, &cc, RT_HANG));
  assert_int_equal(__atomic_load_n(&cc.n, __ATOMIC_ACQUIRE), 1);
  assert_int_equal(__atomic_load_n(&cc.tag_ok, __ATOMIC_RELAXED), 1);
  assert_int_equal(rk_recv_stop(k), RK_OK);
  assert_int_equal(rt_stats(k).received, 2);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_call_learns_corrupt_reply),
      cmocka_unit_test(test_recv_gets_notice_in_place),
      cmocka_unit_test(test_reply_from_wrong_lane_refused),
      cmocka_unit_test(test_outbox_header_beyond_memory),
      cmocka_unit_test(test_inbox_header_beyond_memory),
      cmocka_unit_test(test_call_timeout_late_reply),
      cmocka_unit_test(test_recv_batch_mixed),
      cmocka_unit_test(test_send_batch_envelopes),
      cmocka_unit_test(test_calls_across_lanes),
      cmocka_unit_test(test_callback_reply_taken_by_call),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
