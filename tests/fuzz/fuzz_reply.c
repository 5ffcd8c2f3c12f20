/* fuzz_reply.c — libFuzzer target: the host's reply path on corrupted outbox slots.
 *
 * One runtime and one kernel (CPU backend, two lanes, launched and never activated, so its lanes
 * never touch their outboxes) live for the whole run. Each input plays the lanes' part: it
 * registers a few rk_call waiters (white-box, as call_common does, each on a lane), publishes up
 * to a ring's worth of replies into each outbox — well-formed replies to a waiter or to rk_recv,
 * well-formed ones with input bytes written over chosen offsets of the slot, or whole slots of
 * input bytes — and then drains everything the way the input picks: through the public
 * rk_recv_batch (which runs rk__drain_lane on each lane and hands the waiters theirs), or first as
 * an rk_call caller does (rk__drain_lane with no buffer: the rest goes to the pending list), or
 * through callbacks (rk_recv_start, then rk__dispatch_callbacks until all is delivered).
 * What must hold, whatever the bytes: nothing is read outside the outbox (ASan); every delivered
 * message is a valid reply (rk_envelope_validate_reply) with len <= its buffer, or an RK_ECORRUPT
 * notice with no payload; every untouched good reply is delivered exactly once, intact, to its
 * own receiver (its waiter, or rk_recv), in order per lane; no waiter is completed from another
 * lane's outbox; and the counters balance: received + late_replies + replies_invalid grew by the
 * number of slots published (notices are counted as refused, not received). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>

#include "host/internal.h"

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "fuzz_reply: %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
      abort();                                                                   \
    }                                                                            \
  } while (0)

#define LANES 2u
#define OUTBOX_CAP 16u
#define SLOT 128u
#define MSG (SLOT - RK_RING_MSG_OFFSET) /* a slot's message: after its sequence word */
#define PAYLOAD_MAX (MSG - RK_ENVELOPE_SIZE)
#define WAITERS 4u
#define REPLY_TYPE 9u

static rk_runtime *rt;
static rk_kernel *k;
static uv_mutex_t rec_lock; /* the callback's records (mode 2) */

static void quiet(void *user, rk_log_level level, const char *message) {
  (void)user;
  (void)level;
  (void)message;
}

static int never(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx;
  (void)in;
  return RK_EINVAL;
}

static void setup(void) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  uv_mutex_init(&rec_lock);
  rk_kernel_desc d;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  o.backend = RK_BACKEND_CPU;
  o.log = quiet;
  CHECK(rk_runtime_create(&rt, &o) == RK_OK);
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "fuzz_reply";
  d.handler = never;
  lo.lanes = LANES;
  lo.outbox_capacity = OUTBOX_CAP;
  lo.inbox_capacity = 4;
  lo.slot_size = SLOT;
  CHECK(rk_kernel_launch(rt, &d, &lo, &k) == RK_OK);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setup();
  return 0;
}

typedef struct input {
  const uint8_t *p;
  size_t left;
} input;

static uint64_t take(input *in, unsigned bytes) {
  uint64_t v = 0;
  unsigned i;
  for (i = 0; i < bytes && in->left; i++, in->left--) v |= (uint64_t)*in->p++ << (8 * i);
  return v;
}

/* What the harness published, per slot. */
typedef struct sent {
  int good;       /* untouched well-formed reply that must be delivered as itself */
  int to_waiter;  /* ... to waiter w (else to rk_recv) */
  uint32_t w;
  uint32_t lane;
  uint64_t corr;
  uint8_t bytes[MSG]; /* the message as published */
  int delivered;
} sent;

static void fill_good(rk_envelope *e, uint32_t lane, uint64_t corr, uint32_t len, uint32_t tag) {
  rk_envelope_init(e, REPLY_TYPE, len, RK_ENV_F_REPLY);
  e->msg_id = ((uint64_t)(lane + 1) << 48) | tag;
  e->correlation_id = corr;
  e->src = rk_kernel_id(k);
  e->node = rk_kernel_id(k);
  e->lane = (uint16_t)lane;
  e->hlc = rk_clock_peek(rk_runtime_clock(rt));
}

static uint64_t next_id = 1;

/* A delivered reply (not a notice) is exactly some published slot of that lane, not yet
 * delivered: its envelope byte for byte, its payload a prefix of the slot's. Returns its index. */
static uint32_t match(sent *s, uint32_t nsent, const rk_msg *m, int lane) {
  uint32_t j;
  for (j = 0; j < nsent; j++) {
    if (s[j].delivered || (lane >= 0 && s[j].lane != (uint32_t)lane)) continue;
    if (memcmp(s[j].bytes, &m->env, RK_ENVELOPE_SIZE) != 0) continue;
    if (m->len && memcmp(s[j].bytes + RK_ENVELOPE_SIZE, m->payload, m->len) != 0) continue;
    s[j].delivered = 1;
    return j;
  }
  fprintf(stderr, "fuzz_reply: a delivered reply matches no published slot\n");
  abort();
}

static int is_notice(const rk_msg *m) {
  return m->status == RK_ECORRUPT && m->len == 0 && m->payload == NULL && m->env.payload_len == 0 &&
         m->env.flags == (RK_ENV_F_REPLY | RK_ENV_F_ERROR);
}

/* Replies handed to the callback (mode 2), copied: the payload lives in the slot only during it. */
typedef struct record {
  rk_msg m;
  uint8_t payload[PAYLOAD_MAX];
} record;
static record recs[LANES * OUTBOX_CAP + 1];
static uint32_t nrecs; /* under rec_lock: the service thread may deliver too */

static void on_reply(rk_kernel *kk, const rk_msg *m, void *user) {
  (void)kk;
  (void)user;
  uv_mutex_lock(&rec_lock);
  CHECK(nrecs < LANES * OUTBOX_CAP);
  CHECK(m->len == m->env.payload_len && m->len <= PAYLOAD_MAX);
  recs[nrecs].m = *m;
  if (m->len) memcpy(recs[nrecs].payload, m->payload, m->len);
  recs[nrecs].m.payload = m->len ? recs[nrecs].payload : NULL;
  nrecs++;
  uv_mutex_unlock(&rec_lock);
}

/* A message rk_recv or the callback delivered (not to a waiter), against what was published. */
static void check_delivered(sent *s, uint32_t nsent, const rk_msg *m, uint32_t buf_len, int64_t *last) {
  uint32_t j;
  CHECK(m->len <= buf_len && m->len <= PAYLOAD_MAX);
  if (is_notice(m)) return; /* stands for a refused slot; the good ones are all checked at the end */
  CHECK(!(m->env.correlation_id & RK__CALL_BIT)); /* never a call's reply */
  CHECK(m->len == (m->env.payload_len < buf_len ? m->env.payload_len : buf_len));
  j = match(s, nsent, m, -1);
  CHECK(rk_envelope_validate_reply((const rk_envelope *)(const void *)s[j].bytes, NULL, PAYLOAD_MAX,
                                   rk_kernel_id(k)) == RK_ENV_OK);
  CHECK((int64_t)j > last[s[j].lane]); /* per lane, in publication order */
  last[s[j].lane] = j;
}

static int outboxes_empty(void) {
  int empty;
  if (rk_ring_count(k->lane[0].outbox) || rk_ring_count(k->lane[1].outbox)) return 0;
  uv_mutex_lock(&k->reply_lock);
  empty = k->pend_head == NULL;
  uv_mutex_unlock(&k->reply_lock);
  return empty;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input in = {data, size};
  rk_waiter w[WAITERS];
  rk_msg wout[WAITERS];
  uint8_t wbuf[WAITERS][PAYLOAD_MAX + 8];
  static sent s[LANES * OUTBOX_CAP];
  uint32_t count[LANES] = {0, 0}, nsent = 0, i, j, nwait, mode;
  int64_t last[LANES] = {-1, -1}; /* per lane, the last slot rk_recv delivered: order */
  rk_kernel_counters before, after;
  rk_msg msgs[8];
  uint8_t bufs[8][PAYLOAD_MAX + 8];
  uint32_t buf_len;

  if (size < 2) return 0;
  before.size = sizeof before;
  CHECK(rk_kernel_stats(k, &before) == RK_OK);
  mode = (uint32_t)*in.p >> 3; /* how the host drains: 0 rk_recv, 1 a caller first, 2 callbacks */
  mode %= 3;
  nwait = ((uint32_t)take(&in, 1) & 7) % (WAITERS + 1);
  buf_len = (uint32_t)take(&in, 1) % (PAYLOAD_MAX + 9);
  memset(w, 0, sizeof w);
  memset(wout, 0, sizeof wout);
  uv_mutex_lock(&k->reply_lock);
  for (i = 0; i < nwait; i++) {
    w[i].id = (next_id++) | RK__CALL_BIT;
    w[i].lane = (uint32_t)take(&in, 1) % LANES;
    w[i].out = &wout[i];
    w[i].buf = wbuf[i];
    w[i].buf_len = (uint32_t)take(&in, 1) % (PAYLOAD_MAX + 9);
    w[i].sent_ns = rk__now_ns();
    w[i].next = k->waiters;
    k->waiters = &w[i];
  }
  uv_mutex_unlock(&k->reply_lock);

  /* publish, playing the lanes */
  while (in.left >= 2 && nsent < LANES * OUTBOX_CAP) {
    uint8_t op = (uint8_t)take(&in, 1);
    uint32_t lane = op & 1, kind = (op >> 1) & 3, len;
    rk_ring *r = k->lane[lane].outbox;
    uint64_t pos;
    uint8_t *slot;
    sent *x = &s[nsent];
    if (count[lane] == OUTBOX_CAP) continue;
    CHECK(rk_ring_reserve_n(r, 1, &pos) == 1);
    slot = rk_ring_slot(r, pos);
    memset(x, 0, sizeof *x);
    x->lane = lane;
    len = (uint32_t)take(&in, 1) % (PAYLOAD_MAX + 1);
    if (kind == 0 && nwait) { /* for a waiter (maybe one of the other lane: it must be refused) */
      x->w = (uint32_t)(op >> 3) % nwait;
      x->to_waiter = 1;
      x->corr = w[x->w].id;
    } else {
      x->corr = next_id++; /* for rk_recv */
    }
    fill_good((rk_envelope *)(void *)slot, lane, x->corr, len, nsent);
    for (j = 0; j < len; j++) slot[RK_ENVELOPE_SIZE + j] = (uint8_t)(nsent * 31 + j);
    x->good = !(x->to_waiter && w[x->w].lane != lane);
    if (kind == 2) { /* input bytes over chosen offsets of the slot */
      uint32_t n = 1 + (uint32_t)take(&in, 1) % 8;
      for (j = 0; j < n && in.left; j++) {
        uint32_t off = (uint32_t)take(&in, 1) % MSG;
        slot[off] = (uint8_t)take(&in, 1);
      }
      x->good = 0;
    } else if (kind == 3) { /* a whole slot of input bytes */
      for (j = 0; j < MSG && in.left; j++) slot[j] = (uint8_t)take(&in, 1);
      x->good = 0;
    }
    memcpy(x->bytes, slot, MSG);
    rk_ring_commit_n(r, 1);
    count[lane]++;
    nsent++;
  }

  if (mode == 1) {
    /* an rk_call caller drains first (call_common): everything not for a waiter goes to the
     * pending list, notices included, which rk_recv then empties in order */
    for (i = 0; i < LANES; i++) {
      while (rk__flag_trylock(&k->lane[i].drain_lock) != 0) sched_yield(); /* a flag: tried only */
      int rc = rk__drain_lane(k, &k->lane[i], NULL, NULL, 0, 0, NULL);
      CHECK(rc >= 0 || rc == RK_ECORRUPT); /* RK_ECORRUPT: a damaged outbox header, refused */
      rk__flag_unlock(&k->lane[i].drain_lock);
    }
  }
  if (mode == 2) {
    /* callbacks: the service thread may deliver some itself; this thread dispatches until the
     * outboxes and the pending list are empty */
    nrecs = 0;
    CHECK(rk_recv_start(k, on_reply, NULL) == RK_OK);
    while (!outboxes_empty()) rk__dispatch_callbacks(k);
    CHECK(rk_recv_stop(k) == RK_OK); /* no callback runs after it returns */
    for (i = 0; i < nrecs; i++) check_delivered(s, nsent, &recs[i].m, PAYLOAD_MAX, last);
  }
  /* drain through the public receive until both outboxes (and the pending list) are empty */
  for (;;) {
    int got = rk_recv_batch(k, msgs, bufs, buf_len, 8, 0);
    if (got == RK_EAGAIN) break;
    CHECK(got > 0 && got <= 8);
    for (i = 0; i < (uint32_t)got; i++) check_delivered(s, nsent, &msgs[i], buf_len, last);
  }
  CHECK(outboxes_empty());
  CHECK(rk_ring_count(k->lane[0].outbox) == 0 && rk_ring_count(k->lane[1].outbox) == 0);

  /* the waiters: done iff something for them came from their own lane; never from another */
  uv_mutex_lock(&k->reply_lock);
  for (i = 0; i < nwait; i++) {
    rk_waiter **pw;
    if (__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE)) continue;
    for (pw = &k->waiters; *pw; pw = &(*pw)->next)
      if (*pw == &w[i]) {
        *pw = w[i].next;
        break;
      }
  }
  CHECK(k->waiters == NULL);
  uv_mutex_unlock(&k->reply_lock);
  for (i = 0; i < nwait; i++) {
    int owed = 0;
    for (j = 0; j < nsent; j++)
      if (s[j].good && s[j].to_waiter && s[j].w == i) owed = 1;
    if (!w[i].done) {
      CHECK(!owed);
      continue;
    }
    CHECK(wout[i].env.correlation_id == w[i].id);
    if (w[i].corrupt) {
      CHECK(is_notice(&wout[i]));
      continue;
    }
    CHECK(wout[i].len <= w[i].buf_len);
    j = match(s, nsent, &wout[i], (int)w[i].lane); /* exactly a slot of its own lane */
    CHECK(rk_envelope_validate_reply((const rk_envelope *)(const void *)s[j].bytes, NULL, PAYLOAD_MAX,
                                     rk_kernel_id(k)) == RK_ENV_OK);
  }
  /* every good reply to rk_recv came, as itself */
  for (j = 0; j < nsent; j++)
    if (s[j].good && !s[j].to_waiter) CHECK(s[j].delivered);

  after.size = sizeof after;
  CHECK(rk_kernel_stats(k, &after) == RK_OK);
  CHECK((after.received - before.received) + (after.late_replies - before.late_replies) +
            (after.replies_invalid - before.replies_invalid) ==
        nsent);
  CHECK(rk_kernel_state(k) == RK_STATE_LAUNCHED);
  return 0;
}
