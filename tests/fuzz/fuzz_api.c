/* fuzz_api.c — libFuzzer target: random sequences of public calls on the CPU backend.
 *
 * Each input is a program: a runtime is created, then every byte pair is one call on one of three
 * kernel slots — launch (handler, lanes, threads, ring sizes, slot size, backpressure and send
 * timeout from the input), activate, deactivate, terminate, destroy, send / send_key / send_batch
 * (random type, flags and size, over the slot too), call / call_key (random buffer sizes), recv /
 * recv_batch, recv_start / recv_stop, stats and stats JSON into random buffer sizes, last error —
 * then everything is destroyed. Every result must be one of the codes the header documents for
 * that call, every received message must fit the buffer it was given, and at the end of a
 * kernel's life the counters must balance. ASan+UBSan (and LeakSanitizer at each input's end)
 * watch the rest; libFuzzer's -timeout (run.sh: 10 s) catches a call that hangs.
 *
 * Known hangs it is kept away from (issue 11, items 1-6, another engineer's): every wait has a
 * finite timeout of at most 200 ms (a waiter on a FAULTED kernel may wait all of it), rk_recv_stop
 * is never called from a callback, handlers never break the collective rule, and nothing makes a
 * lane stall long enough for the watchdog (2 s) to fault it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ringkernel.h>
#include <ringkernel/ring.h> /* RK_RING_MSG_OFFSET: a slot's room for the envelope and payload */

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "fuzz_api: %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
      abort();                                                                \
    }                                                                         \
  } while (0)
/* rc is one of the listed codes */
#define ONE_OF(rc, ...) CHECK(one_of((rc), (const int[]){__VA_ARGS__, 1}))

static int one_of(int rc, const int *codes) {
  for (; *codes != 1; codes++)
    if (rc == *codes) return 1;
  fprintf(stderr, "fuzz_api: unexpected %s (%d)\n", rk_err_name(rc), rc);
  return 0;
}

#define SLOTS 3
#define MS 1000000ll

typedef struct input {
  const uint8_t *p;
  size_t left;
} input;

static uint32_t take(input *in, unsigned bytes) {
  uint32_t v = 0;
  unsigned i;
  for (i = 0; i < bytes && in->left; i++, in->left--) v |= (uint32_t)*in->p++ << (8 * i);
  return v;
}

static void quiet(void *user, rk_log_level level, const char *message) {
  (void)user;
  (void)level;
  (void)message;
}

/* ---------------------------------------- handlers ------------------------------------------- */

/* echo: the request back (rk_reply refuses nothing it can hold) */
static int h_echo(rk_ctx *ctx, const rk_msg *in) {
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

/* by the first payload byte: fail, reply twice, reply through a reservation, or stay silent */
static int h_mixed(rk_ctx *ctx, const rk_msg *in) {
  const uint8_t *p = (const uint8_t *)rk_msg_payload(in);
  uint8_t b = rk_msg_len(in) ? p[0] : 0;
  int rc;
  switch (b % 6) {
    case 0: return RK_EINVAL;
    case 1:
      if ((rc = rk_reply(ctx, 3, p, rk_msg_len(in))) != RK_OK) return rc;
      return rk_reply(ctx, 4, NULL, 0);
    case 2: {
      uint8_t *r = (uint8_t *)rk_reply_reserve(ctx, 5, rk_msg_len(in));
      if (r == NULL) return RK_EAGAIN;
      if (rk_thread(ctx) == 0 && rk_msg_len(in)) memcpy(r, p, rk_msg_len(in));
      return rk_reply_commit(ctx);
    }
    case 3: return 0; /* no reply at all */
    case 4: return 1; /* a positive return (issue 11 lists what it should become) */
    default: return h_echo(ctx, in);
  }
}

/* cooperative: every thread of the lane adds its part, then one collective reply */
static int h_coop(rk_ctx *ctx, const rk_msg *in) {
  size_t sz;
  uint32_t *scratch = (uint32_t *)rk_scratch(ctx, &sz);
  uint32_t t = rk_thread(ctx), n = rk_threads(ctx), i, sum = 0;
  const uint8_t *p = (const uint8_t *)rk_msg_payload(in);
  if (scratch == NULL || sz < 64 * sizeof *scratch || n > 64) return rk_reply(ctx, 1, NULL, 0);
  scratch[t] = 0;
  for (i = t; i < rk_msg_len(in); i += n) scratch[t] += p[i];
  rk_sync(ctx);
  for (i = 0; i < n; i++) sum += scratch[i];
  rk_sync(ctx);
  return rk_reply(ctx, 2, &sum, sizeof sum);
}

/* stateful counter over all lanes' messages (lane-local index avoids a race) */
static int h_slowish(rk_ctx *ctx, const rk_msg *in) {
  struct timespec ts = {0, 20000}; /* 20 us: lets inboxes and outboxes fill */
  (void)in;
  nanosleep(&ts, NULL);
  return rk_reply(ctx, 6, NULL, 0);
}

static const rk_handler_fn handlers[] = {h_echo, h_mixed, h_coop, h_slowish};

/* ---------------------------------------- callbacks ------------------------------------------ */

static uint64_t cb_calls; /* atomics */

static void on_reply(rk_kernel *k, const rk_msg *m, void *user) {
  (void)k;
  (void)user;
  CHECK(m->len == m->env.payload_len);
  CHECK(m->len == 0 || m->payload != NULL);
  __atomic_add_fetch(&cb_calls, 1, __ATOMIC_RELAXED);
}

/* ---------------------------------------- the program ---------------------------------------- */

typedef struct slot {
  rk_kernel *k;
  uint32_t slot_size;
  int cb;      /* recv_start is in effect */
  int aborted; /* a terminate timed out: the lanes were told to abort, messages may be left */
} slot;

static void check_msg(const rk_msg *m, uint32_t buf_len) {
  CHECK(m->len <= buf_len);
  CHECK(m->len <= m->env.payload_len);
  CHECK(m->len == 0 || m->payload != NULL);
  CHECK(m->env.magic == RK_ENVELOPE_MAGIC);
  CHECK(m->env.flags & RK_ENV_F_REPLY);
}

/* End of a kernel's life: terminate while callbacks take the replies (a lane stalled on a full
 * outbox could not drain its inbox otherwise), stop them, receive what is left, check that the
 * counters balance, destroy. */
static void finish(slot *s) {
  rk_kernel_counters st;
  int rc;
  if (s->k == NULL) return;
  if (!s->cb) ONE_OF(rk_recv_start(s->k, on_reply, NULL), RK_OK);
  s->cb = 1;
  rc = rk_kernel_terminate(s->k, 200 * MS);
  ONE_OF(rc, RK_OK, RK_ESTATE, RK_ETIMEDOUT);
  if (rc == RK_ETIMEDOUT) s->aborted = 1;
  ONE_OF(rk_recv_stop(s->k), RK_OK);
  s->cb = 0;
  if (rc == RK_OK || rc == RK_ESTATE) {
    uint8_t buf[64];
    rk_msg m;
    int r;
    while ((r = rk_recv(s->k, &m, buf, sizeof buf, 0)) == RK_OK) check_msg(&m, sizeof buf);
    ONE_OF(r, RK_ECLOSED, RK_EAGAIN);
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(rk_kernel_stats(s->k, &st) == RK_OK);
    if (st.state == RK_STATE_TERMINATED && !s->aborted && r == RK_ECLOSED) {
      /* everything accepted was taken, every reply is accounted for */
      CHECK(st.sent == st.msgs_in);
      CHECK(st.msgs_out == st.received + st.late_replies + st.replies_invalid);
      CHECK(st.replies_invalid == 0); /* the lanes here write only good replies */
    }
  }
  rk_kernel_destroy(s->k);
  memset(s, 0, sizeof *s);
}

static void launch(rk_runtime *rt, slot *s, input *in) {
  rk_kernel_desc d;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  uint32_t h = take(in, 1), geo = take(in, 2), rc;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "fuzz";
  d.handler = handlers[h % 4];
  d.scratch_size = 64 * sizeof(uint32_t);
  lo.lanes = 1 + (geo & 3) % 3;                                 /* 1..3 */
  lo.threads_per_lane = (h % 4) == 2 ? 1 + ((geo >> 2) & 3) : 1; /* several only for the collective handler */
  lo.inbox_capacity = 1u << ((geo >> 4) & 3);                  /* 1..8 */
  lo.outbox_capacity = 1u << ((geo >> 6) & 3);
  lo.slot_size = 64u * (2 + ((geo >> 8) & 3));                 /* 128..320 */
  lo.backpressure = (rk_backpressure)((geo >> 10) % 3);
  lo.send_timeout_ns = (int64_t)(1 + ((geo >> 12) & 7)) * MS;   /* BLOCK waits 1..8 ms */
  if (((geo >> 15) & 1) && (h & 0x80)) lo.slot_size = 100;       /* an invalid geometry now and then */
  rc = (uint32_t)rk_kernel_launch(rt, &d, &lo, &s->k);
  if ((int)rc != RK_OK) {
    ONE_OF((int)rc, RK_EINVAL);
    s->k = NULL;
    return;
  }
  s->slot_size = lo.slot_size;
  s->cb = 0;
  s->aborted = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input in = {data, size};
  rk_runtime *rt = NULL;
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  slot slots[SLOTS];
  uint8_t payload[600], buf[600];
  int ops = 0, i;
  memset(slots, 0, sizeof slots);
  for (i = 0; i < (int)sizeof payload; i++) payload[i] = (uint8_t)(i * 13);
  o.backend = RK_BACKEND_CPU;
  o.log = quiet;
  CHECK(rk_runtime_create(&rt, &o) == RK_OK);
  while (in.left >= 2 && ops++ < 64) {
    uint32_t op = take(&in, 1), arg = take(&in, 1);
    slot *s = &slots[(op >> 5) % SLOTS];
    rk_kernel *k = s->k;
    uint32_t len = (arg * 3) % (s->slot_size + 16);     /* sometimes over the slot */
    uint32_t type = (arg & 0x40) ? 0 : 1 + (arg & 7);    /* type 0 now and then */
    uint32_t flags = (arg >> 4) & 0x7;                     /* NO_REPLY, CHECKSUM, NOWAIT */
    uint32_t buf_len = (arg * 7) % sizeof buf;
    int64_t timeout = (int64_t)(arg % 5) * MS;           /* 0..4 ms */
    rk_msg m;
    int rc;
    if ((op & 31) != 0 && k == NULL) continue;           /* everything but launch needs a kernel */
    switch (op & 31) {
      case 0:
        if (k) finish(s);
        launch(rt, s, &in);
        break;
      case 1: ONE_OF(rk_kernel_activate(k), RK_OK, RK_ESTATE); break;
      case 2: ONE_OF(rk_kernel_deactivate(k), RK_OK, RK_ESTATE); break;
      case 3:
        if (s->cb) { /* a terminate while callbacks run is allowed; keep it simple: stop first */
          ONE_OF(rk_recv_stop(k), RK_OK);
          s->cb = 0;
        }
        rc = rk_kernel_terminate(k, (int64_t)(1 + arg % 50) * MS);
        ONE_OF(rc, RK_OK, RK_ESTATE, RK_ETIMEDOUT);
        if (rc == RK_ETIMEDOUT) s->aborted = 1;
        break;
      case 4: finish(s); break;
      case 5: case 6: case 7: case 8:
        rc = rk_send(k, type, payload, len, flags, NULL);
        ONE_OF(rc, RK_OK, RK_EINVAL, RK_EMSGSIZE, RK_EAGAIN, RK_ETIMEDOUT, RK_ECLOSED, RK_ESTATE);
        break;
      case 9:
        rc = rk_send_key(k, arg, type, payload, len, flags, NULL);
        ONE_OF(rc, RK_OK, RK_EINVAL, RK_EMSGSIZE, RK_EAGAIN, RK_ETIMEDOUT, RK_ECLOSED, RK_ESTATE);
        break;
      case 10: {
        rk_send_item items[8];
        uint32_t n = 1 + arg % 8, j;
        memset(items, 0, sizeof items);
        for (j = 0; j < n; j++) {
          uint32_t b = take(&in, 1);
          items[j].type = (b & 0x80) ? 0 : 1 + (b & 3);
          items[j].len = (b * 5) % (s->slot_size + 8);
          items[j].payload = payload;
          items[j].key = b & 3;
          items[j].flags = (b & 0x40 ? RK_SEND_KEYED : 0) | (b & 0x20 ? RK_SEND_NOWAIT : 0) |
                           (b & 0x10 ? RK_SEND_NO_REPLY : 0);
        }
        rc = rk_send_batch(k, items, n);
        if (rc < 0) ONE_OF(rc, RK_EINVAL, RK_EMSGSIZE, RK_EAGAIN, RK_ETIMEDOUT, RK_ECLOSED, RK_ESTATE);
        else CHECK(rc >= 1 && (uint32_t)rc <= n);
        break;
      }
      case 11: case 12: case 13:
        memset(&m, 0, sizeof m);
        rc = (op & 1) ? rk_call(k, type, payload, len, &m, buf, buf_len, timeout)
                      : rk_call_key(k, arg, type, payload, len, &m, buf, buf_len, timeout);
        ONE_OF(rc, RK_OK, RK_EHANDLER, RK_ETIMEDOUT, RK_EINVAL, RK_EMSGSIZE, RK_EAGAIN, RK_ECLOSED, RK_ESTATE);
        if (rc == RK_OK || rc == RK_EHANDLER) check_msg(&m, buf_len);
        break;
      case 14: case 15: case 16:
        memset(&m, 0, sizeof m);
        rc = rk_recv(k, &m, buf, buf_len, timeout);
        if (s->cb) ONE_OF(rc, RK_ESTATE);
        else ONE_OF(rc, RK_OK, RK_ETIMEDOUT, RK_EAGAIN, RK_ECLOSED);
        if (rc == RK_OK) check_msg(&m, buf_len);
        break;
      case 17: {
        rk_msg ms[4];
        uint32_t bl = buf_len / 4, n = 1 + arg % 4, j;
        rc = rk_recv_batch(k, ms, buf, bl, n, timeout);
        if (s->cb) ONE_OF(rc, RK_ESTATE);
        else if (rc < 0) ONE_OF(rc, RK_ETIMEDOUT, RK_EAGAIN, RK_ECLOSED);
        else CHECK(rc >= 1 && (uint32_t)rc <= n);
        for (j = 0; rc > 0 && j < (uint32_t)rc; j++) {
          check_msg(&ms[j], bl);
          CHECK(ms[j].len == 0 || ms[j].payload == buf + (size_t)j * bl);
        }
        break;
      }
      case 18:
        rc = rk_recv_start(k, on_reply, NULL);
        ONE_OF(rc, RK_OK, RK_ESTATE);
        CHECK((rc == RK_OK) == !s->cb);
        s->cb = 1;
        break;
      case 19:
        rc = rk_recv_stop(k);
        ONE_OF(rc, RK_OK, RK_ESTATE);
        CHECK((rc == RK_OK) == s->cb);
        s->cb = 0;
        break;
      case 20: {
        rk_kernel_counters st;
        memset(&st, 0, sizeof st);
        st.size = (arg & 1) ? sizeof st : (uint32_t)(arg % sizeof st);
        rc = rk_kernel_stats(k, &st);
        if (st.size < sizeof st && rc != RK_OK) ONE_OF(rc, RK_EINVAL);
        else {
          CHECK(rc == RK_OK);
          CHECK(st.received <= st.msgs_out && st.msgs_in <= st.sent);
        }
        break;
      }
      case 21: {
        char *j = (char *)malloc(1 + arg * 8);
        CHECK(j != NULL);
        rc = rk_runtime_stats_json(rt, j, arg * 8);
        CHECK(rc >= 0);
        if (arg) CHECK(strlen(j) < arg * 8 && (size_t)strlen(j) <= (size_t)rc);
        free(j);
        break;
      }
      case 22: CHECK(rk_runtime_last_error(rt) != NULL); break;
      case 23: {
        char e[64];
        rc = rk_kernel_error(k, e, arg % sizeof e);
        CHECK(rc <= 0);
        break;
      }
      case 24:
        (void)rk_kernel_state(k);
        CHECK(rk_kernel_lanes(k) >= 1 && rk_kernel_lanes(k) <= 3);
        break;
      case 25: /* misuse: NULL objects and buffers, counts of zero; all refused, nothing sent */
        ONE_OF(rk_send(NULL, 1, payload, 1, 0, NULL), RK_EINVAL);
        ONE_OF(rk_send(k, 1, NULL, 1 + arg, 0, NULL), RK_EINVAL, RK_ECLOSED, RK_ESTATE);
        ONE_OF(rk_call(k, 1, payload, 1, NULL, buf, 1, MS), RK_EINVAL);
        ONE_OF(rk_call(k, 1, payload, 1, &m, NULL, 1 + arg, MS), RK_EINVAL);
        ONE_OF(rk_recv(k, NULL, buf, 1, 0), RK_EINVAL, RK_ESTATE);
        ONE_OF(rk_recv(k, &m, NULL, 1 + arg, 0), RK_EINVAL, RK_ESTATE);
        ONE_OF(rk_recv_batch(k, &m, buf, 1, 0, 0), RK_EINVAL, RK_ESTATE);
        ONE_OF(rk_send_batch(k, NULL, 1 + arg), RK_EINVAL);
        CHECK(rk_send_batch(k, NULL, 0) == 0);
        ONE_OF(rk_recv_start(k, NULL, NULL), RK_EINVAL);
        ONE_OF(rk_kernel_stats(k, NULL), RK_EINVAL);
        ONE_OF(rk_runtime_stats_json(NULL, (char *)buf, 1), RK_EINVAL);
        ONE_OF(rk_kernel_activate(NULL), RK_EINVAL);
        CHECK(rk_kernel_state(NULL) == 0);
        break;
      default: { /* a burst of no-reply sends: fill the rings */
        uint32_t j;
        for (j = 0; j < 1 + arg % 32; j++)
          ONE_OF(rk_send(k, 1, payload, len % (s->slot_size - RK_RING_MSG_OFFSET - RK_ENVELOPE_SIZE + 1),
                         RK_SEND_NO_REPLY | RK_SEND_NOWAIT, NULL), RK_OK,
                 RK_EAGAIN, RK_ECLOSED, RK_ESTATE);
        break;
      }
    }
  }
  for (i = 0; i < SLOTS; i++) finish(&slots[i]);
  rk_runtime_destroy(rt);
  return 0;
}
