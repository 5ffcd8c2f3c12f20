/* messaging.c — sending to kernels and receiving their replies.
 *
 * Send (ARCHITECTURE §3): check the arguments and the declared type, pick the lane (key or
 * round-robin), claim an inbox slot (only after capacity was seen; a full inbox waits or refuses
 * before anything is claimed), build the envelope in the slot, stamp it with a tick of the runtime
 * clock, copy the payload, publish, wake the lane if it is parked.
 *
 * Receive: each lane's outbox has one consumer at a time — whoever holds that lane's drain_lock
 * (an rk_call caller, an rk_recv caller, or the service thread for callbacks). The drainer hands
 * each reply to the rk_call waiter whose request id it names, or else to its own caller (an
 * rk_recv caller, or the callback dispatcher, which copies one reply out and calls the callback
 * with no lock held), or to the kernel's pending list; every reply received merges its stamp into
 * the runtime clock. Nothing is dropped except a reply to an rk_call whose caller gave up (counted,
 * kept as a dead letter). A reply that cannot be queued for want of memory stays in the ring (the
 * drainer backs off; rk_recv can still take it), and waiters' replies behind it are delivered
 * anyway.
 *
 * Waits: every wait here ends at its deadline, and as soon as the kernel faults (RK_ESTATE) or
 * terminates (RK_ECLOSED): rk__kernel_fault and terminate wake the waiters, which re-check.
 *
 * The outbox is memory a lane writes (a device, or a handler that writes past its reservation),
 * so nothing in it is trusted: before each batch the drainer checks the ring's header against the
 * memory launch gave it, and it copies each reply's envelope out of its slot and validates the
 * copy (rk_envelope_validate_reply) before using any of it. A refused reply is counted
 * (replies_invalid) and its payload never delivered; when only its content is wrong (its header's
 * structure is sound, so its correlation id can be believed) whoever would have received it gets
 * an RK_ECORRUPT notice instead, so an rk_call waiting for it returns RK_ECORRUPT at once rather
 * than at its timeout (docs/design-notes.md, "Replies are validated"). */
#include <stdlib.h>
#include <string.h>

#include "host/internal.h"

#define RK_DRAIN_BATCH 64
/* rk_send_batch: slots taken in exclusive state this many items ahead of their fill (8 until issue
 * 16's tenth step; docs/design-notes.md, "throughput.echo, the caller's side") */
#define RK_SEND_AHEAD 24
/* claim / send_on, internal: try once, and on a full inbox return having claimed nothing, counted
 * nothing and said nothing (send_on: RK__SEND_FULL); the caller goes the ordinary way instead
 * (rk_call's fast path). Outside RK_SEND_FLAGS_ALL, so no application flag can carry it. */
#define RK__SEND_TRY 0x80000000u
#define RK__SEND_FULL 1

static inline void add(volatile uint64_t *c, uint64_t n) {
  __atomic_fetch_add(c, n, __ATOMIC_RELAXED); /* host-only statistics counters */
}

/* Is lane ring r (an inbox or an outbox) still the ring launch made? The lanes' rings sit in
 * memory a lane writes (on the GPU, the mapped arena), and every ring operation addresses slots
 * and sequence words through the header's own geometry: a header rewritten since launch would send
 * the host's reads and writes outside the ring. So the host re-checks line 0 before each claim and
 * each drain batch. It compares every geometry word with the value launch wrote, which is stricter
 * than rk_ring_check_mem(r, stride) and implies it (launch sized each ring's stride from
 * rk_ring_memsize of exactly this geometry), and costs half as much: seven loads and compares of a
 * line nobody writes, 1.3 ns against rk_ring_check_mem's 2.7 ns on the reference VM. */
static int lane_ring_ok(const rk_kernel *k, const rk_ring *r, uint64_t capacity, uint32_t mode) {
  return r->magic == RK_RING_MAGIC && r->mode == mode && r->slot_size == k->slot_size && r->capacity == capacity &&
         r->mask == capacity - 1 && r->slots_offset == sizeof(rk_ring) &&
         r->seq_offset == sizeof(rk_ring);
}

/* A counter of the drainer's (rk__lane.rx_*, drain_lock held): one writer at a time, so a relaxed
 * load and store, no locked add (the lock's acquire orders it after the last holder's). */
static inline void rx_add(volatile uint64_t *c, uint64_t n) {
  __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

void rk__latency_add(rk__lane *l, uint64_t ns) {
  /* bucket b: the largest b < RK_LATENCY_BUCKETS with ns >> b != 0 (0 for ns < 2), the index of
   * ns's top bit: one instruction where a loop took up to 2 per bit on every rk_call's reply */
  uint32_t b = ns < 2 ? 0 : 63u - (uint32_t)__builtin_clzll(ns);
  if (b > RK_LATENCY_BUCKETS - 1) b = RK_LATENCY_BUCKETS - 1;
  rx_add(&l->rx_latency_hist[b], 1);
  rx_add(&l->rx_latency_sum_ns, ns);
}

uint64_t rk__received(const rk_kernel *k) {
  uint64_t n = __atomic_load_n(&k->received, __ATOMIC_RELAXED); /* statistics */
  uint32_t i;
  for (i = 0; i < k->lanes; i++) n += __atomic_load_n(&k->lane[i].rx_received, __ATOMIC_RELAXED);
  return n;
}

void rk__latency_read(const rk_kernel *k, uint64_t hist[RK_LATENCY_BUCKETS], uint64_t *sum_ns) {
  uint32_t i, b;
  *sum_ns = 0;
  for (b = 0; b < RK_LATENCY_BUCKETS; b++) hist[b] = 0;
  for (i = 0; i < k->lanes; i++) { /* statistics: relaxed */
    *sum_ns += __atomic_load_n(&k->lane[i].rx_latency_sum_ns, __ATOMIC_RELAXED);
    for (b = 0; b < RK_LATENCY_BUCKETS; b++) hist[b] += __atomic_load_n(&k->lane[i].rx_latency_hist[b], __ATOMIC_RELAXED);
  }
}

/* ---------------------------------------- send ----------------------------------------------- */

/* RK_ESTATE for an operation on a FAULTED kernel, with the fault in the detail. */
static int faulted_fail(rk_kernel *k, const char *what) {
  char why[sizeof k->fault_msg];
  rk__kernel_fault_msg(k, why, sizeof why);
  return rk__fail(k->rt, RK_ESTATE, "%s %s: kernel is FAULTED (%s)", what, k->name, why);
}

static uint64_t add_sat(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

/* A sender's wait for inbox room ends with room (1), or when the kernel closes (RK_ECLOSED) or
 * faults (RK_ESTATE); 0: not yet. Both are announced by waking the inbox's producers. */
typedef struct room_wait {
  rk_kernel *k;
  rk_ring *inbox;
} room_wait;

static int room_ready(void *arg) {
  room_wait *w = (room_wait *)arg;
  uint64_t c = rk_load_relaxed_dev_u64(&w->inbox->claim); /* as rk_ring_mpsc_reserve_n reads it */
  if (c & RK_RING_CLOSED) return RK_ECLOSED;
  if (rk__kernel_faulted(w->k)) return RK_ESTATE;
  /* pairs with the consumer's store-release of head */
  return c - rk_ring_load_acquire_head(w->inbox) < w->inbox->capacity ? 1 : 0;
}

/* A full inbox, reported: when the lane stopped taking messages because its outbox is full, that
 * is what the caller must hear (and what to do about it), not "inbox full". */
static int inbox_full(rk_kernel *k, rk__lane *l, int code, const char *after) {
  uint64_t out = rk_ring_count(l->outbox);
  if (out >= l->outbox->capacity)
    return rk__fail(k->rt, code,
                    "send to %s: lane %u inbox full%s because the lane's OUTBOX is full: %llu replies nobody "
                    "received stop it from taking messages; receive them (rk_recv, rk_recv_start) or send with "
                    "RK_SEND_NO_REPLY", k->name, l->index, after, (unsigned long long)out);
  return rk__fail(k->rt, code, "send to %s: lane %u inbox full%s", k->name, l->index, after);
}

/* with_state: also the kernel's state (terminating, faulted); 0: the arguments only (the later
 * items of an rk_send_batch run, whose first item checked the state: one state check per run). */
static int check_send_x(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                        int with_state) {
  uint32_t i, s;
  if (flags & ~RK_SEND_FLAGS_ALL)
    return rk__fail(k->rt, RK_EINVAL, "send to %s: unknown send flags 0x%x", k->name, flags & ~RK_SEND_FLAGS_ALL);
  if (type == 0) return rk__fail(k->rt, RK_EINVAL, "send to %s: message type 0 is reserved", k->name);
  if (payload == NULL && len > 0) return rk__fail(k->rt, RK_EINVAL, "send to %s: NULL payload with length %u", k->name, len);
  if (len > rk__payload_max(k))
    return rk__fail(k->rt, RK_EMSGSIZE, "send to %s: %u-byte payload exceeds the slot's %u bytes", k->name, len,
                    rk__payload_max(k));
  if (k->desc.types) {
    for (i = 0; i < k->desc.n_types; i++)
      if (k->desc.types[i]->id == type) break;
    if (i == k->desc.n_types)
      return rk__fail(k->rt, RK_EINVAL, "send to %s: message type %u is not one the kernel declares", k->name, type);
    if (len != k->desc.types[i]->size)
      return rk__fail(k->rt, RK_EMSGSIZE, "send to %s: %s is %u bytes, got %u", k->name,
                      k->desc.types[i]->name ? k->desc.types[i]->name : "message", k->desc.types[i]->size, len);
  }
  if (!with_state) return RK_OK;
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (s == RK_STATE_TERMINATING || s == RK_STATE_TERMINATED)
    return rk__fail(k->rt, RK_ECLOSED, "send to %s: kernel is %s", k->name, rk_state_name((rk_lifecycle)s));
  if (rk__kernel_faulted(k)) return faulted_fail(k, "send to");
  return RK_OK;
}

static int check_send(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags) {
  return check_send_x(k, type, payload, len, flags, 1);
}

/* Build an envelope in its slot; stamp is a tick of the runtime clock (send rule), taken by the
 * caller (one clock read and one CAS per claim, however many slots it covers). */
/* (fill_at: dst, node and lane given, read once per batch by rk_send_batch) */
static inline void fill_at(rk_envelope *e, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                           uint64_t id, rk_hlc stamp, uint32_t dst, uint32_t node, uint16_t lane) {
  uint16_t f = (uint16_t)(flags & RK_SEND_NO_REPLY ? RK_ENV_F_NO_REPLY : 0);
  rk_envelope_init(e, type, len, f);
  e->msg_id = id;
  e->src = 0;
  e->dst = dst;
  e->node = node;
  e->lane = lane;
  e->hlc = stamp;
  rk__copy_msg(e + 1, payload, len);
  if (flags & RK_SEND_CHECKSUM) rk_envelope_seal(e, e + 1);
}

static void fill(rk_kernel *k, rk__lane *l, rk_envelope *e, uint32_t type, const void *payload, uint32_t len,
                 uint32_t flags, uint64_t id, rk_hlc stamp) {
  fill_at(e, type, payload, len, flags, id, stamp, k->id, k->rt->node_id, (uint16_t)l->index);
}

/* Claim n (>= 1) slots of lane l's inbox, honouring the backpressure policy: a BLOCK wait lasts
 * the kernel's send timeout from when the inbox was first seen full, and never past `deadline`
 * (an rk_call's own). Returns the count claimed (the caller must publish all) or an error; nothing
 * is claimed on error. */
static int claim(rk_kernel *k, rk__lane *l, uint32_t n, uint32_t flags, uint64_t deadline, uint64_t *pos) {
  uint64_t until = 0, since = 0, now;
  int reject = k->backpressure == RK_BACKPRESSURE_REJECT || (flags & RK_SEND_NOWAIT);
  room_wait w;
  w.k = k;
  w.inbox = l->inbox;
  for (;;) {
    int got, rc;
    if (!lane_ring_ok(k, l->inbox, k->inbox_cap, RK_RING_MPSC)) {
      /* (not faulted now: fault_code stays set after a fault that was recovered from or cleared by
       * a restart, and a damage then went unfaulted) */
      if (!rk__kernel_faulted(k))
        rk__kernel_fault(k, RK_ECORRUPT, "lane %u inbox: ring header damaged (no longer the ring launch made in %zu bytes)",
                         l->index, k->inbox_stride);
      return rk__fail(k->rt, RK_ECORRUPT, "send to %s: lane %u inbox is damaged (kernel FAULTED)", k->name, l->index);
    }
    got = rk_ring_mpsc_reserve_n(l->inbox, n, pos);
    if (got > 0) return got;
    if (got == RK_ECLOSED) return rk__fail(k->rt, RK_ECLOSED, "send to %s: kernel is terminating", k->name);
    if (got < 0) return got;
    if (rk__kernel_faulted(k)) return faulted_fail(k, "send to");
    if (flags & RK__SEND_TRY) return 0;
    if (reject) {
      add(&k->send_rejected, 1);
      return inbox_full(k, l, RK_EAGAIN, "");
    }
    now = rk__now_ns();
    if (until == 0) {
      since = now;
      until = k->send_timeout_ns < 0 ? UINT64_MAX : add_sat(now, (uint64_t)k->send_timeout_ns);
      if (deadline < until) until = deadline;
    }
    if (now >= until) {
      char after[48];
      add(&k->send_timeouts, 1);
      snprintf(after, sizeof after, " for %llu ms", (unsigned long long)((now - since) / 1000000));
      return inbox_full(k, l, RK_ETIMEDOUT, after);
    }
    /* one wait for the whole timeout, ended early by room, a close or a fault */
    rc = rk__ring_wait(l->inbox, 0, room_ready, &w, until == UINT64_MAX ? -1 : (int64_t)(until - now));
    if (rc == RK_ECLOSED) return rk__fail(k->rt, RK_ECLOSED, "send to %s: kernel is terminating", k->name);
    if (rc == RK_ESTATE) return faulted_fail(k, "send to");
  }
}

/* A request (counted in k->sent) went to a kernel whose device lanes cannot wake the loop, with
 * callbacks started: the poller (devpoll.c) may sleep, and a reply is now due. Pairs with the
 * release stores of cb_active in rk_recv_start/rk_recv_stop. */
static inline void devpoll_sent(rk_kernel *k) {
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE) && (k->lane[0].inbox->flags & RK_RING_F_NO_WAKE))
    rk__devpoll_sent(k->rt);
}

static uint32_t lane_for(rk_kernel *k, int keyed, uint64_t key) {
  if (k->lanes == 1) return 0;
  if (keyed) {
    /* splitmix64 finaliser: neighbouring keys spread over lanes */
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebull;
    key ^= key >> 31;
    return (uint32_t)(key % k->lanes);
  }
  return __atomic_fetch_add(&k->rr, 1, __ATOMIC_RELAXED) % k->lanes;
}

/* Returns RK_OK, an error, or (flags with RK__SEND_TRY only) RK__SEND_FULL. *pt_us (may be NULL):
 * the reading of the runtime clock's time source the stamp was taken with. */
static int send_on(rk_kernel *k, rk__lane *l, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                   uint64_t id, uint64_t deadline, uint64_t *pt_us) {
  uint64_t pos, pt;
  rk_hlc stamp;
  int rc = claim(k, l, 1, flags, deadline, &pos);
  if (rc < 0) return rc;
  if (rc == 0) return RK__SEND_FULL; /* RK__SEND_TRY: nothing claimed */
  flags &= ~RK__SEND_TRY;
  /* send rule on the runtime clock: rk_clock_tick, its reading kept for the caller (the
   * counter's extrapolation of CLOCK_REALTIME where it is a clock: rk__send_pt_us, tsc.c) */
  pt = rk__send_pt_us(k->rt);
  rk__clock_guard(k, pt); /* device lanes: their offset still good for this reading? */
  rk__clock_tick_n(k->rt->clock, 1, pt, &stamp);
  if (pt_us) *pt_us = pt;
  fill(k, l, (rk_envelope *)rk_ring_slot(l->inbox, pos), type, payload, len, flags, id, stamp);
  rk_ring_mpsc_commit(l->inbox, pos);
  rk_ring_notify_consumer(l->inbox);
  /* the slot the next send here will most likely fill (no other producer between), taken in
   * exclusive state while the lane works on this one (queue/internal.h) */
  rk__prefetchw_slot(l->inbox, pos + 1);
  add(&k->sent, 1);
  devpoll_sent(k);
  return RK_OK;
}

static int send_common(rk_kernel *k, int keyed, uint64_t key, uint32_t type, const void *payload, uint32_t len,
                       uint32_t flags, uint64_t *msg_id) {
  uint64_t id;
  int rc;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if ((rc = check_send(k, type, payload, len, flags)) != RK_OK) {
    if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
    return rc;
  }
  id = rk__msg_id(k->rt);
  rc = send_on(k, &k->lane[lane_for(k, keyed, key)], type, payload, len, flags, id, UINT64_MAX, NULL);
  if (rc == RK_OK && msg_id) *msg_id = id;
  return rc;
}

int rk__send_id_key(rk_kernel *k, int keyed, uint64_t key, uint32_t type, const void *payload, uint32_t len,
                    uint32_t flags, uint64_t id) {
  int rc;
  if ((rc = check_send(k, type, payload, len, flags)) != RK_OK) {
    if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
    return rc;
  }
  return send_on(k, &k->lane[lane_for(k, keyed, key)], type, payload, len, flags, id, UINT64_MAX, NULL);
}

int rk__send_id(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags, uint64_t id) {
  return rk__send_id_key(k, 0, 0, type, payload, len, flags, id);
}

int rk_send(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags, uint64_t *msg_id) {
  return send_common(k, 0, 0, type, payload, len, flags, msg_id);
}

int rk_send_key(rk_kernel *k, uint64_t key, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                uint64_t *msg_id) {
  return send_common(k, 1, key, type, payload, len, flags, msg_id);
}

/* Fill the n claimed slots from pos with items[0..n), ids from id on, stamps from stamp on.
 * The claimed slots' lines are taken in exclusive state RK_SEND_AHEAD items ahead of their fill:
 * the lane read them on the last lap, and a store that waits for each line in turn stalls the
 * sender once its store buffer is full (issue 16, docs/design-notes.md "throughput.echo"). Only
 * the claimed slots: hints, no effect on correctness. The geometry and the envelope fields common
 * to the run are read once (claim checked the header just now); out of line, so that the loop
 * has the registers to itself (issue 16). */
static __attribute__((noinline)) void fill_run(rk_kernel *k, rk__lane *l, rk_send_item *items, uint32_t n,
                                               uint64_t pos, uint64_t id, rk_hlc stamp) {
  rk__slots g = rk__slots_of(l->inbox);
  uint32_t j;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  /* The envelope written as its eight 64-bit words (fill_at's fields at envelope.h's offsets, which
   * it asserts; envelopes are little-endian everywhere), the four that the run shares computed once:
   * ~25 instructions of each message's ~70 here were separate field stores (issue 16). */
  const uint64_t w0 = (uint64_t)RK_ENVELOPE_MAGIC | (uint64_t)RK_ENVELOPE_VERSION << 32; /* | flags << 48 */
  const uint64_t w4 = (uint64_t)k->id << 32;                 /* src 0, dst */
  const uint64_t w6 = (uint64_t)k->rt->node_id;              /* node, checksum (0 unless sealed) */
  const uint64_t w7 = (uint64_t)(uint16_t)l->index << 16;    /* priority 0, lane, origin 0 */
  const uint64_t zero = 0;                                   /* correlation_id */
#else
  const uint32_t dst = k->id, node = k->rt->node_id;
  const uint16_t lane = (uint16_t)l->index;
#endif
  for (j = 0; j < n && j < RK_SEND_AHEAD; j++) rk__prefetchw_at(&g, pos + j);
  for (j = 0; j < n; j++) {
    rk_send_item *it = &items[j];
    uint8_t *e = rk__slot_msg(&g, pos + j);
    uint64_t msg_id = (id + j) & ~RK__CALL_BIT;
    if (j + RK_SEND_AHEAD < n) rk__prefetchw_at(&g, pos + j + RK_SEND_AHEAD);
    it->msg_id = msg_id;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    {
      uint64_t hlc = stamp + j, w6c = w6, w1 = (uint64_t)it->type | (uint64_t)it->len << 32;
      uint64_t f = it->flags & RK_SEND_NO_REPLY ? RK_ENV_F_NO_REPLY : 0;
      if (it->flags & RK_SEND_CHECKSUM) { /* rk_envelope_seal's two fields, into the words */
        f |= RK_ENV_F_CHECKSUM;
        w6c |= (uint64_t)rk_envelope__crc(it->payload, it->len) << 32;
      }
      f = w0 | f << 48;
      memcpy(e, &f, 8);
      memcpy(e + 8, &w1, 8);
      memcpy(e + 16, &msg_id, 8);
      memcpy(e + 24, &zero, 8);
      memcpy(e + 32, &w4, 8);
      memcpy(e + 40, &hlc, 8);
      memcpy(e + 48, &w6c, 8);
      memcpy(e + 56, &w7, 8);
      rk__copy_msg(e + RK_ENVELOPE_SIZE, it->payload, it->len);
    }
#else
    fill_at((rk_envelope *)(void *)e, it->type, it->payload, it->len, it->flags, msg_id, stamp + j, dst, node, lane);
#endif
  }
}

int rk_send_batch(rk_kernel *k, rk_send_item *items, uint32_t n) {
  uint32_t i = 0;
  int rc = RK_OK;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (items == NULL && n > 0) return rk__fail(k->rt, RK_EINVAL, "rk_send_batch to %s: NULL items", k->name);
  if (n == 0) return 0;
  /* Runs of consecutive items bound for the same lane share one claim. Round-robin items of a run
   * all go to the lane of its first item (ordering within the batch is kept per lane). */
  while (i < n) {
    uint32_t lane_idx = lane_for(k, items[i].flags & RK_SEND_KEYED, items[i].key), run = 1;
    rk__lane *l = &k->lane[lane_idx];
    uint64_t pos;
    int got;
    if ((rc = check_send(k, items[i].type, items[i].payload, items[i].len, items[i].flags)) != RK_OK) {
      if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
      break;
    }
    /* the common case first: items like the run's first, round-robin, which need none of the
     * checks below (issue 16: those were ~20 instructions of every message of a batch) */
    if (!(items[i].flags & RK_SEND_KEYED)) {
      const uint32_t type0 = items[i].type, len0 = items[i].len, flags0 = items[i].flags;
      const uint32_t lim = n - i < 64 ? n - i : 64;
      while (run < lim && items[i + run].type == type0 && items[i + run].len == len0 &&
             items[i + run].flags == flags0 && (len0 == 0 || items[i + run].payload != NULL))
        run++;
    }
    while (i + run < n && run < 64) {
      const rk_send_item *it = &items[i + run];
      if ((it->flags & RK_SEND_KEYED) && lane_for(k, 1, it->key) != lane_idx) break;
      /* one claim honours one backpressure policy: a run does not mix NOWAIT and waiting items */
      if ((it->flags & RK_SEND_NOWAIT) != (items[i].flags & RK_SEND_NOWAIT)) break;
      /* the arguments; the state was checked with the run's first item (a change meanwhile is the
       * same race as one just after the check: the claim still refuses a closed inbox). The check
       * depends only on the type, the length, the flags and whether the payload is NULL: an item
       * that agrees with the run's first (which passed) passes too, without the call (issue 16:
       * ~35 instructions of every message of a batch) */
      if ((it->type != items[i].type || it->len != items[i].len || it->flags != items[i].flags ||
           (it->payload == NULL && it->len > 0)) &&
          check_send_x(k, it->type, it->payload, it->len, it->flags, 0) != RK_OK)
        break;
      run++;
    }
    got = claim(k, l, run, items[i].flags, UINT64_MAX, &pos);
    if (got < 0) {
      rc = got;
      break;
    }
    {
      /* One clock read and one CAS stamp the whole run (send rule, consecutive stamps), and one
       * RMW numbers it (ids as rk__msg_id's, bit 63 clear). */
      rk_hlc stamp;
      uint64_t id = __atomic_add_fetch(&k->rt->next_msg_id, (uint64_t)got, __ATOMIC_RELAXED) - (uint64_t)got + 1;
      uint64_t pt = rk__send_pt_us(k->rt);
      rk__clock_guard(k, pt); /* device lanes: their offset still good for this reading? */
      rk__clock_tick_n(k->rt->clock, (uint32_t)got, pt, &stamp);
      fill_run(k, l, &items[i], (uint32_t)got, pos, id, stamp);
    }
    rk_ring_mpsc_commit_n(l->inbox, pos, (uint32_t)got);
    rk_ring_notify_consumer(l->inbox);
    add(&k->sent, (uint64_t)got);
    devpoll_sent(k);
    i += (uint32_t)got;
  }
  return i > 0 ? (int)i : rc;
}

/* ---------------------------------------- receive -------------------------------------------- */

/* A reply's status: the code an error reply carries, else RK_ECLOCK when its stamp failed the
 * merge into the runtime clock (the reply is still delivered), else 0. e is the validated copy of
 * the envelope, payload its payload in the slot. */
static int32_t reply_status(const rk_envelope *e, const void *payload, int clock_bad) {
  int32_t c = 0;
  if ((e->flags & RK_ENV_F_ERROR) && e->payload_len >= sizeof(int32_t)) memcpy(&c, payload, sizeof c);
  return c == 0 && clock_bad ? RK_ECLOCK : c;
}

/* A device lane refuses an envelope (invalid, or stamped too far ahead) with an error reply, but
 * cannot keep a dead letter (that is host memory it does not manage): the host keeps one when it
 * consumes the reply, once, with the reply's envelope (the refused request's type and id, the
 * code as reason) and no payload. CPU lanes keep their own, with the request itself. A handler of
 * a device kernel that returns RK_ECORRUPT or RK_ECLOCK itself is recorded alike. */
static void device_refusal_slow(rk_kernel *k, const rk_envelope *e, const void *payload, uint32_t lane) {
  int32_t c;
  if (!k->ops->lane_clock_offset || e->payload_len < sizeof c) return;
  memcpy(&c, payload, sizeof c);
  if (c == RK_ECORRUPT)
    rk__dead_letter(k, e, NULL, c, "refused by the device lane: invalid envelope", lane);
  else if (c == RK_ECLOCK) {
    rk__dead_letter(k, e, NULL, c, "refused by the device lane: stamp too far ahead", lane);
    rk__clock_doubt(k); /* a host stamp refused: the lanes' offset may be off (kernel.c) */
  }
}

/* (the test for an error reply inline: a call per reply otherwise, on every drain; issue 16) */
static inline void device_refusal(rk_kernel *k, const rk_envelope *e, const void *payload, uint32_t lane) {
  if (RK_UNLIKELY(e->flags & RK_ENV_F_ERROR)) device_refusal_slow(k, e, payload, lane);
}

static inline __attribute__((always_inline)) void to_msg(const rk_envelope *e, const void *payload, rk_msg *m,
                                                          void *buf, uint32_t buf_len, int clock_bad) {
  uint32_t n = e->payload_len < buf_len ? e->payload_len : buf_len;
  m->env = *e;
  m->len = n;
  m->payload = n ? buf : NULL;
  rk__copy_msg(buf, payload, n);
  m->status = reply_status(e, payload, clock_bad);
}

/* The notice that stands for a refused reply whose ids can be believed: its envelope with no
 * payload, marked an error reply, status RK_ECORRUPT. */
static void to_notice(const rk_envelope *e, rk_msg *m) {
  m->env = *e;
  m->env.payload_len = 0;
  m->env.flags = (uint16_t)(RK_ENV_F_REPLY | RK_ENV_F_ERROR);
  m->env.checksum = 0;
  m->len = 0;
  m->payload = NULL;
  m->status = RK_ECORRUPT;
}

/* Unlock reply_lock, first waking the rk_call callers asleep on reply_cond if this holder handed
 * out a reply (*woke). sleepers is only changed under reply_lock, so the read here is exact. */
static void reply_unlock(rk_kernel *k, int *woke) {
  if (*woke && __atomic_load_n(&k->sleepers, __ATOMIC_RELAXED)) uv_cond_broadcast(&k->reply_cond);
  *woke = 0;
  rk__unlock(&k->reply_lock);
}

/* Merge the stamps of the n valid replies among env[] (chk[i] == RK_ENV_OK) into the runtime clock,
 * with one clock read: normally one merge of the newest stamp (each reply then counts as received:
 * the clock ends above all of them before any is handed out); when that one is refused as too far
 * ahead, each reply is merged on its own and bad[i] marks the refused ones (RK_ECLOCK, delivered
 * all the same). Refused replies are not merged: their stamps mean nothing. Returns 1 when bad[]
 * was filled. */
/* pt_hint: 0, or a reading of the clock's time source taken before the replies were published
 * (rk_call: the one its request was stamped with). An older reading is a valid pt for the merge
 * (the result is still above the stamp and the clock; its physical part only lags until the next
 * reading), but may refuse a good stamp: so a refusal under the hint is retried with a fresh
 * reading before any reply is marked, and nothing is refused that a fresh reading would accept.
 * Saves the clock read (~23 ns) on the way from a reply to the rk_call that waits for it. */
/* Merge stamp h into the runtime clock under the hint's reading, a refusal retried with a fresh
 * one (without the hint: read after the replies were published, so no false refusal). Returns 1
 * when refused under the last reading, which *pt (may be NULL) receives. */
static inline int clock_merge(rk_clock *c, rk_hlc h, uint64_t pt_hint, uint64_t *pt) {
  uint64_t now = pt_hint ? pt_hint : rk_clock_physical_us(c);
  int refused = rk__clock_recv_at(c, h, now, NULL) != RK_OK;
  if (refused && pt_hint) {
    now = rk_clock_physical_us(c);
    refused = rk__clock_recv_at(c, h, now, NULL) != RK_OK;
  }
  if (pt) *pt = now;
  return refused;
}

static int merge_batch(rk_kernel *k, const rk_envelope *env, const uint8_t *chk, uint32_t n, uint8_t *bad,
                       uint64_t pt_hint) {
  rk_clock *c = k->rt->clock;
  uint64_t pt;
  rk_hlc newest = 0;
  uint32_t i;
  for (i = 0; i < n; i++)
    if (chk[i] == RK_ENV_OK && env[i].hlc > newest) newest = env[i].hlc;
  if (newest == 0 || !clock_merge(c, newest, pt_hint, &pt)) return 0; /* the drift check is monotone */
  for (i = 0; i < n; i++) bad[i] = chk[i] == RK_ENV_OK && rk__clock_recv_at(c, env[i].hlc, pt, NULL) == RK_ECLOCK;
  return 1;
}

/* A notice to rk_call waiter w of lane l that the outbox is damaged. */
static void corrupt_notice(rk_kernel *k, rk__lane *l, rk_waiter *w) {
  memset(&w->out->env, 0, sizeof w->out->env);
  w->out->env.correlation_id = w->id;
  w->out->env.src = k->id;
  w->out->env.lane = (uint16_t)l->index;
  to_notice(&w->out->env, w->out);
  w->corrupt = 1;
  /* pairs with the caller's acquire in call_common: *w->out is written; after this store the
   * drainer never touches w (it lives on the caller's stack) */
  __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
}

/* The outbox of lane l failed lane_ring_ok (drain_lock held): fault the kernel (its replies can
 * no longer be read) and hand every rk_call waiting on this lane an RK_ECORRUPT notice, so none of
 * them waits for its timeout: those on the list, and self (the drainer's own, on no list; may be
 * NULL). */
static void outbox_corrupt(rk_kernel *k, rk__lane *l, rk_waiter *self) {
  rk_waiter *w, **pw;
  int woke = 0;
  if (!rk__kernel_faulted(k)) /* once, not at every later drain (not fault_code: it outlives a restart) */
    rk__kernel_fault(k, RK_ECORRUPT, "lane %u outbox: ring header damaged (no longer the ring launch made in %zu bytes)",
                   l->index, k->outbox_stride);
  if (self) corrupt_notice(k, l, self);
  rk__lock(&k->reply_lock);
  for (pw = &k->waiters; (w = *pw) != NULL;) {
    if (w->lane != l->index) {
      pw = &w->next;
      continue;
    }
    *pw = w->next;
    corrupt_notice(k, l, w);
    woke = 1;
  }
  reply_unlock(k, &woke);
}

/* Is id the rk_call on its fast path on a lane of k other than l? (A reply naming no waiter.) */
static int fast_call_elsewhere(const rk_kernel *k, const rk__lane *l, uint64_t id) {
  uint32_t i;
  for (i = 0; i < k->lanes; i++)
    if (i != l->index && __atomic_load_n(&k->lane[i].fast_call, __ATOMIC_RELAXED) == id) return 1; /* see fast_call */
  return 0;
}

/* drain_lane's common case for a receive (issue 16: the throughput path): the replies at the front
 * of the batch that drain_lane would hand straight to the caller, taken without its per-reply
 * routing. Each envelope is copied out of its slot once, into the caller's rk_msg, validated there,
 * and only that copy is used (drain_lane's rule); the entry of a reply it does not take is zeroed
 * (rk_recv_batch: entries past the count returned are unspecified). Takes replies [0, cnt) of the n
 * published from pos, cnt <= want, and stops before the first one that drain_lane must route:
 * refused by validation, or naming an rk_call (RK__CALL_BIT: a waiter, a fast-path caller, or a
 * late reply; every waiter's id carries the bit, so no other reply can be a waiter's). Nothing is
 * routed to the pending list, so nothing is taken while it is not empty: its replies come first
 * (checked under reply_lock; a reply another lane's drainer queues just after is not ordered with
 * this lane's, as if this drain had run a moment earlier, and this lane's own are queued only under
 * its drain_lock, which the caller holds). The caller (drain_lane) has checked: no rk_call of its
 * own (self), no buffer pins (their release needs the general drain), nothing delivered ahead.
 * Stamps: merge_batch's rule, one merge of the newest, each reply on its own when that is refused
 * (RK_ECLOCK, delivered all the same). *stopped: set when it left a published reply within the
 * caller's count to the general drain (or took nothing because of the pending list): drain_lane
 * then does the rest of this drain itself. Returns cnt; the caller releases the slots. Out of line:
 * inlined, its loop shared drain_lane's registers and spilled to the stack. */
static __attribute__((noinline)) uint32_t drain_direct(rk_kernel *k, rk__lane *l, uint64_t pos, uint32_t n,
                                                       rk_msg *direct, uint8_t *buf, uint32_t buf_len, uint32_t want,
                                                       uint32_t max_payload, int *stopped) {
  rk_clock *c = k->rt->clock;
  rk_hlc newest = 0;
  uint64_t pt;
  uint32_t i, cnt, self_id = k->id; /* (read once: the stores into direct[] might alias k) */
  rk__slots g = rk__slots_of(l->outbox); /* (drain_lane checked the header just now) */
  int pending;
  if (n > want) n = want;
  rk__lock(&k->reply_lock);
  pending = k->pend_head != NULL;
  rk__unlock(&k->reply_lock);
  if (pending) {
    *stopped = 1;
    return 0;
  }
  for (cnt = 0; cnt < n; cnt++) {
    const uint8_t *slot = rk__slot_msg(&g, pos + cnt);
    const uint8_t *payload = slot + RK_ENVELOPE_SIZE;
    uint8_t *dst = buf + (size_t)cnt * buf_len;
    rk_msg *m = &direct[cnt];
    uint32_t len;
    /* (the copy in the caller's rk_msg itself: a local copy moved on was ~11 instructions a reply) */
    memcpy(&m->env, slot, sizeof m->env);
    if (rk_envelope_validate_reply(&m->env, payload, max_payload, self_id) != RK_ENV_OK ||
        (m->env.correlation_id & RK__CALL_BIT)) {
      /* not taken: the caller's entry gets no bytes of it (another caller's, or damaged) */
      memset(&m->env, 0, sizeof m->env);
      *stopped = 1;
      break; /* drain_lane's, from here */
    }
    if (m->env.hlc > newest) newest = m->env.hlc;
    len = m->env.payload_len < buf_len ? m->env.payload_len : buf_len;
    m->len = len;
    m->payload = len ? dst : NULL;
    rk__copy_msg(dst, payload, len);
    m->status = reply_status(&m->env, payload, 0);
    device_refusal(k, &m->env, payload, l->index);
  }
  if (newest != 0 && clock_merge(c, newest, 0, &pt)) { /* merge_batch's rule (pt_hint 0: no false refusal) */
    rk__clock_doubt(k);
    for (i = 0; i < cnt; i++)
      if (rk__clock_recv_at(c, direct[i].env.hlc, pt, NULL) == RK_ECLOCK && direct[i].status == 0)
        direct[i].status = RK_ECLOCK; /* delivered all the same (reply_status) */
  }
  if (cnt) rx_add(&l->rx_received, cnt);
  return cnt;
}

/* Drain the outbox of lane l (drain_lock held). Each reply goes to its rk_call waiter; else, while
 * fewer than `want` went to the caller and nothing is pending, into direct[*got] (its payload into
 * buf + *got * buf_len); else to the pending list. A refused reply (see the top of this file) goes
 * nowhere, or, when its ids can be believed, goes the same way as an RK_ECORRUPT notice. Per batch
 * of slots: one check of the ring, one copy and validation of each envelope, one clock read and
 * merge (merge_batch), one hold of reply_lock. (A receive's replies at the front of a batch go
 * through drain_direct instead, with the same per-batch costs; where it stops, the rest of the
 * drain comes here, and a reply it stopped at is validated here once more.) A reply the pending
 * list cannot take (no memory) stops the drain there (l->drain_blocked): it stays in the ring, and
 * only waiters' and late replies behind it are taken, out of order (l->drain_ahead). Returns the
 * number of slots released, or RK_ECORRUPT when the outbox itself is damaged (the kernel is then
 * FAULTED, nothing more is read from it, and the rk_call waiters of this lane have their notices).
 *
 * self (may be NULL): the drainer's own rk_call waiter, which is on no list (rk_call's fast path:
 * it holds drain_lock from before its send, so no one else can take its reply). Its reply is
 * delivered like any waiter's, but without reply_lock when nothing else in the batch needs it
 * (buffer pins, other waiters, the pending list), and the drain stops once it has it and the
 * batch took everything that was published (later replies are the next drainer's, as they would
 * be had they come a moment later; with callbacks on, the drain goes on as before, since their
 * dispatcher leaves the outbox to whoever holds drain_lock). pt_hint: merge_batch's. */
static int drain_lane(rk_kernel *k, rk__lane *l, rk_msg *direct, void *buf, uint32_t buf_len, uint32_t want,
                      uint32_t *got, rk_waiter *self, uint64_t pt_hint) {
  uint64_t pos;
  uint32_t n, i, taken = 0, ndirect = 0, max_payload = rk__payload_max(k);
  int woke = 0, self_done = 0, queued = 0; /* queued: a reply went to the pending list */
  int direct_ok = 1, stopped = 0;             /* drain_direct: still to be tried; it stopped */
  if (got) *got = 0;
  if (direct == NULL || got == NULL) want = 0;
  l->drain_blocked = 0;
  for (;;) {
    rk_envelope env[RK_DRAIN_BATCH]; /* the envelopes, copied out of their slots and validated */
    uint8_t chk[RK_DRAIN_BATCH], bad[RK_DRAIN_BATCH];
    uint64_t now_ns = 0, received = 0, late = 0, invalid = 0;
    const char *why = NULL; /* the first refusal's reason, for the log */
    uint32_t stop;
    int any_bad, blocked = 0, locked = 0;
    if (!lane_ring_ok(k, l->outbox, k->outbox_cap, RK_RING_SPSC)) {
      outbox_corrupt(k, l, self_done ? NULL : self); /* a delivered reply stays delivered */
      if (got) *got = ndirect;
      return RK_ECORRUPT;
    }
    n = rk_ring_peek_n(l->outbox, RK_DRAIN_BATCH, &pos);
    if (n == 0) break;
    stop = n; /* slots [0, stop) are consumed, in order, and released */
    {
      rk__slots g = rk__slots_of(l->outbox); /* all their lines at once */
      for (i = 0; i < n; i++) rk__prefetch_at(&g, pos + i);
    }
    /* A receive's replies, straight to the caller (drain_direct): the front of the batch it takes
     * is consumed, and the rest, from the first reply it leaves, goes the way below next round.
     * (relaxed pins: see below) */
    if (direct_ok && self == NULL && ndirect < want && l->drain_ahead == 0 &&
        !__atomic_load_n(&k->buf_pins, __ATOMIC_RELAXED)) {
      uint32_t cnt = drain_direct(k, l, pos, n, &direct[ndirect], (uint8_t *)buf + (size_t)ndirect * buf_len,
                                  buf_len, want - ndirect, max_payload, &stopped);
      if (stopped) direct_ok = 0; /* the rest of this drain is the general way's */
      if (cnt > 0) {
        ndirect += cnt;
        rk_ring_release_n(l->outbox, cnt);
        rk_ring_notify_producers(l->outbox); /* a lane stalled on a full outbox resumes */
        taken += cnt;
        if (ndirect == want) break;
        continue;
      }
    }
    /* Copy first, then validate the copy and use only the copy: a lane that rewrote a published
     * slot meanwhile changes payload bytes at worst, never the length the copy was checked with. */
    for (i = 0; i < n; i++) {
      const uint8_t *slot = rk_ring_slot(l->outbox, pos + i);
      memcpy(&env[i], slot, sizeof env[i]);
      chk[i] = (uint8_t)rk_envelope_validate_reply(&env[i], slot + RK_ENVELOPE_SIZE, max_payload, k->id);
    }
    any_bad = merge_batch(k, env, chk, n, bad, pt_hint);
    if (any_bad) rk__clock_doubt(k); /* a reply stamped too far ahead: the same doubt */
    for (i = 0; i < n; i++) {
      const rk_envelope *e = &env[i];
      const void *payload = rk_ring_slot(l->outbox, pos + i) + RK_ENVELOPE_SIZE;
      int clock_bad = any_bad && bad[i], notice = 0, is_self;
      uint64_t bit = 1ull << i; /* RK_DRAIN_BATCH is 64 */
      uint32_t pins;
      rk_waiter *w, **pw;
      if (l->drain_ahead & bit) continue; /* delivered out of order by an earlier drain */
      /* A refused reply is counted in replies_invalid where it is taken from the ring (a notice:
       * where the notice is handed on), never where it stays, behind a reply that could not be
       * queued. */
      if (chk[i] != RK_ENV_OK) {
        if (why == NULL) why = rk_envelope_check_name(chk[i]);
        if (chk[i] < RK_ENV_BAD_LENGTH) { /* a damaged header: its ids mean nothing, no one is told */
          invalid++;
          if (blocked) l->drain_ahead |= bit;
          continue;
        }
        notice = 1;
      }
      /* Relaxed: the pins were counted before the request was published, and this reply was taken
       * after the lane took that request. */
      pins = __atomic_load_n(&k->buf_pins, __ATOMIC_RELAXED);
      /* (once: a second reply naming the call, from a handler that replied twice, is late) */
      is_self = self != NULL && !self_done && e->correlation_id == self->id;
      if (!locked && (pins || !is_self)) { /* reply_lock: the waiters, the pending list, the pins */
        rk__lock(&k->reply_lock);
        locked = 1;
      }
      /* Its message's buffer pins, if any (buffer.c; under reply_lock) */
      if (pins) rk__buffers_replied(k, e->correlation_id);
      pw = NULL;
      if (is_self)
        w = self; /* on no list */
      else
        for (pw = &k->waiters; (w = *pw) != NULL; pw = &w->next)
          if (w->id == e->correlation_id) break;
      if (w && w->lane != l->index) {
        /* It names an rk_call sent on another lane: a lane answers only its own requests, so its
         * correlation id is damaged. Refused (never delivered to that caller), no one is told. */
        invalid++;
        if (why == NULL) why = "reply names an rk_call sent on another lane";
        if (blocked) l->drain_ahead |= bit;
        continue;
      }
      if (w) {
        if (pw) *pw = w->next;
        if (notice) {
          to_notice(e, w->out);
          w->corrupt = 1;
          invalid++;
        } else {
          to_msg(e, payload, w->out, w->buf, w->buf_len, clock_bad);
          device_refusal(k, e, payload, l->index);
          if (now_ns == 0) now_ns = rk__now_ns();
          rk__latency_add(l, now_ns - w->sent_ns);
          rx_add(&l->rx_received, 1); /* before done: a caller's stats after rk_call returns include it */
        }
        /* pairs with the caller's acquire in call_common: *w->out is written; after this store the
         * drainer never touches w (it lives on the caller's stack) */
        __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
        if (w == self)
          self_done = 1; /* the drainer itself: no one to wake */
        else
          woke = 1;
        if (blocked) l->drain_ahead |= bit;
        continue;
      }
      if ((e->correlation_id & RK__CALL_BIT) && fast_call_elsewhere(k, l, e->correlation_id)) {
        /* It names the rk_call another lane's drainer waits for on its fast path (on no list): as
         * for a waiter of another lane above, refused */
        invalid++;
        if (why == NULL) why = "reply names an rk_call sent on another lane";
        if (blocked) l->drain_ahead |= bit;
        continue;
      }
      if (e->correlation_id & RK__CALL_BIT) {
        if (!notice) { /* its caller timed out: discard, counted, kept as a dead letter */
          late++;
          rk__dead_letter(k, e, payload, RK_ETIMEDOUT, "late reply: its rk_call caller had given up", l->index);
        } else {
          invalid++;
        }
        if (blocked) l->drain_ahead |= bit;
        continue;
      }
      if (blocked) continue; /* stays, in order, behind the one that could not be queued */
      if (ndirect < want && k->pend_head == NULL) {
        rk_msg *m = &direct[ndirect];
        if (notice) {
          to_notice(e, m);
          invalid++;
        } else {
          to_msg(e, payload, m, (uint8_t *)buf + (size_t)ndirect * buf_len, buf_len, clock_bad);
          device_refusal(k, e, payload, l->index);
          received++;
        }
        if (++ndirect == want) {
          stop = i + 1;
          break;
        }
        continue;
      }
      {
        uint32_t len = notice ? 0 : e->payload_len;
        rk_pending *p = (rk_pending *)rk__malloc(sizeof *p + len);
        if (p == NULL) {
          /* Keep the reply in the ring rather than lose it: the ring is consumed in order, so the
           * drain stops here; rk_recv can still take it (no allocation on that path). */
          rk__log(k->rt, RK_LOG_ERROR, "kernel %s: out of memory while queueing a reply; it stays in lane %u's "
                  "outbox until memory is available or rk_recv takes it", k->name, l->index);
          blocked = 1;
          stop = i;
          continue;
        }
        p->next = NULL;
        p->notice = notice;
        invalid += (uint64_t)notice;
        if (notice)
          to_notice(e, &p->msg);
        else {
          to_msg(e, payload, &p->msg, p->data, len, clock_bad);
          device_refusal(k, e, payload, l->index);
        }
        if (k->pend_tail)
          k->pend_tail->next = p;
        else
          k->pend_head = p;
        k->pend_tail = p;
        k->pend_count++;
        woke = 1;
        queued = 1;
      }
    }
    if (locked) reply_unlock(k, &woke);
    if (received) rx_add(&l->rx_received, received);
    if (late) add(&k->late_replies, late);
    if (invalid) {
      add(&k->replies_invalid, invalid);
      rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: refused %llu corrupt repl%s (first: %s)", k->name, l->index,
              (unsigned long long)invalid, invalid == 1 ? "y" : "ies", why ? why : "?");
    }
    if (stop) {
      rk_ring_release_n(l->outbox, stop);
      rk_ring_notify_producers(l->outbox); /* a lane stalled on a full outbox resumes */
      taken += stop;
      l->drain_ahead = stop >= 64 ? 0 : l->drain_ahead >> stop;
    }
    if (blocked) {
      l->drain_blocked = 1;
      break;
    }
    /* The drainer's own reply in, and everything published at the peek taken: later replies are
     * the next drainer's, unless callbacks are on: their dispatcher, finding drain_lock taken,
     * leaves the outbox to us (pairs with the release stores of cb_active) */
    if (stop < n || (want && ndirect == want) ||
        (self_done && n < RK_DRAIN_BATCH && !__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE)))
      break;
  }
  /* Replies queued for the callbacks by a drainer other than their dispatcher (an rk_call holding
   * drain_lock): the dispatcher, which found the lock taken and left, must be told, or they wait
   * for the service timer (issue 16, N1). The dispatcher itself only queues while it has pending
   * replies to deliver anyway: the extra wake-up finds nothing. (acquire: pairs with the release
   * stores of cb_active) */
  if (queued && __atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE)) rk__service_wake(k->rt);
  if (got) *got = ndirect;
  return (int)taken;
}

int rk__drain_lane(rk_kernel *k, rk__lane *l, rk_msg *direct, void *buf, uint32_t buf_len, uint32_t want,
                   uint32_t *got) {
  return drain_lane(k, l, direct, buf, buf_len, want, got, NULL, 0);
}

/* rk_call's fast path (drain_lock held, w on no list) when the first reply in the outbox is w's
 * own and is sound: drain_lane's work for exactly that case, without its batch arrays and loops
 * (issue 16: ~450 instructions of the round trip were drain_lane's for one reply). The same
 * steps in the same order: the ring's header checked, the envelope copied and the copy validated,
 * the stamp merged (merge_batch), the reply delivered (to_msg, device_refusal, latency, received,
 * done), the slot released and a stalled lane woken. Replies published behind it are the next
 * drainer's, as drain_lane leaves them to it when it has the drainer's own. Returns 1 when it
 * delivered; 0, having changed nothing, in every other case (another reply first, a refused one,
 * buffer pins, replies delivered ahead, callbacks on, a damaged header): drain_lane then does it. */
static int drain_own(rk_kernel *k, rk__lane *l, rk_waiter *w, uint64_t pt_hint) {
  rk_envelope env;
  const uint8_t *slot;
  uint64_t pos;
  uint8_t chk;
  int bad = 0;
  /* relaxed: as in drain_lane (pins counted before the request was published); acquire: pairs with
   * the release stores of cb_active */
  if (l->drain_ahead || __atomic_load_n(&k->buf_pins, __ATOMIC_RELAXED) ||
      __atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE))
    return 0;
  /* its own reply alone in the outbox (review of issue 16): replies behind it belong to other
   * callers, whom drain_lane delivers and wakes under reply_lock; taken here, they would wait for a
   * wake-up that outbox_let_go can miss (a caller between its failed try and its sleepers count) */
  if (!lane_ring_ok(k, l->outbox, k->outbox_cap, RK_RING_SPSC) || rk_ring_peek_n(l->outbox, 2, &pos) != 1) return 0;
  slot = rk_ring_slot(l->outbox, pos);
  memcpy(&env, slot, sizeof env); /* copy first, then validate and use only the copy (drain_lane) */
  if (env.correlation_id != w->id) return 0;
  chk = (uint8_t)rk_envelope_validate_reply(&env, slot + RK_ENVELOPE_SIZE, rk__payload_max(k), k->id);
  if (chk != RK_ENV_OK) return 0;
  /* merge_batch's rule for one sound reply, without its loops and arrays (issue 16): refused
   * (RK_ECLOCK, still delivered) only if the retry refuses too; a zero stamp is not merged */
  bad = env.hlc != 0 && clock_merge(k->rt->clock, env.hlc, pt_hint, NULL);
  if (RK_UNLIKELY(bad)) rk__clock_doubt(k);
  l->drain_blocked = 0;
  to_msg(&env, slot + RK_ENVELOPE_SIZE, w->out, w->buf, w->buf_len, bad);
  device_refusal(k, &env, slot + RK_ENVELOPE_SIZE, l->index);
  /* the counter where the fast path started it (tsc.c): ~10 ns, not the ~25-30 of an ordered
   * clock_gettime waiting for the reply's loads before the call can return (issue 16) */
  if (w->sent_tsc != 0) {
    uint64_t t = rk__tsc_read();
    rk__latency_add(l, t > w->sent_tsc ? rk__tsc_ns(t - w->sent_tsc, w->sent_mult) : 0);
    rx_add(&l->rx_tsc_samples, 1);
  } else {
    rk__latency_add(l, rk__now_ns() - w->sent_ns);
  }
  rx_add(&l->rx_received, 1); /* before done: a caller's stats after rk_call returns include it */
  /* pairs with the caller's acquire in call_common (the caller itself here): *w->out is written */
  __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
  rk_ring_release_n(l->outbox, 1);
  rk_ring_notify_producers(l->outbox); /* a lane stalled on a full outbox resumes */
  return 1;
}

/* Pop the oldest pending reply into m (reply_lock held). */
static int pop_pending(rk_kernel *k, rk_msg *m, void *buf, uint32_t buf_len) {
  rk_pending *p = k->pend_head;
  uint32_t n;
  if (p == NULL) return 0;
  k->pend_head = p->next;
  if (k->pend_head == NULL) k->pend_tail = NULL;
  k->pend_count--;
  n = p->msg.len < buf_len ? p->msg.len : buf_len;
  *m = p->msg;
  m->len = n;
  m->payload = n ? buf : NULL;
  if (n) memcpy(buf, p->data, n);
  if (!p->notice) add(&k->received, 1); /* a notice was counted as refused (replies_invalid) */
  free(p);
  return 1;
}

/* Terminated and every outbox empty: no reply will ever come. Read-only (no drain lock). */
static int all_lanes_done(rk_kernel *k) {
  uint32_t i;
  if (rk_load_acquire_sys_u32(&k->hstate) != RK_STATE_TERMINATED) return 0;
  for (i = 0; i < k->lanes; i++)
    if (rk_ring_count(k->lane[i].outbox) != 0) return 0;
  return 1;
}

static void outbox_let_go(rk_kernel *k, rk__lane *l);

int rk_recv(rk_kernel *k, rk_msg *msg, void *buf, uint32_t buf_len, int64_t timeout_ns) {
  int rc = rk_recv_batch(k, msg, buf, buf_len, 1, timeout_ns);
  return rc > 0 ? RK_OK : rc; /* 0 on success, as the header promises (the batch returns a count) */
}

int rk_recv_batch(rk_kernel *k, rk_msg *msgs, void *bufs, uint32_t buf_len, uint32_t n, int64_t timeout_ns) {
  uint64_t start = 0, idle_since = 0; /* idle_since: when the outbox went quiet, 0 if it has not */
  uint32_t got_total = 0, spins = 0, first_lane;
  int corrupt = 0; /* a lane's outbox was found damaged (rk__drain_lane) */
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (msgs == NULL || n == 0 || (bufs == NULL && buf_len > 0))
    return rk__fail(k->rt, RK_EINVAL, "rk_recv on %s: NULL message or buffer, or n == 0", k->name);
  /* pairs with the release stores of cb_active in rk_recv_start/rk_recv_stop (any thread) */
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE))
    return rk__fail(k->rt, RK_ESTATE, "rk_recv on %s: callbacks are started", k->name);
  first_lane = __atomic_fetch_add(&k->rr, 0, __ATOMIC_RELAXED);
  for (;;) {
    uint32_t i;
    int blocked = 0;
    /* 1. replies queued by other drainers */
    rk__lock(&k->reply_lock);
    while (got_total < n && pop_pending(k, &msgs[got_total], (uint8_t *)bufs + (size_t)got_total * buf_len, buf_len))
      got_total++;
    rk__unlock(&k->reply_lock);
    /* 2. drain lanes directly into the caller's buffers */
    for (i = 0; i < k->lanes && got_total < n; i++) {
      rk__lane *l = &k->lane[(first_lane + i) % k->lanes];
      if (rk__flag_trylock(&l->drain_lock) != 0) continue;
      {
        uint32_t got = 0;
        if (rk__drain_lane(k, l, &msgs[got_total], (uint8_t *)bufs + (size_t)got_total * buf_len, buf_len,
                           n - got_total, &got) == RK_ECORRUPT)
          corrupt = 1;
        got_total += got;
        blocked |= l->drain_blocked;
      }
      outbox_let_go(k, l); /* an rk_call asleep for the lock retries it (its reply may come next) */
    }
    if (got_total > 0) return (int)got_total;
    if (corrupt) return rk__fail(k->rt, RK_ECORRUPT, "rk_recv on %s: a lane's outbox is damaged (kernel FAULTED)", k->name);
    /* Before the poll's RK_EAGAIN: a poller must learn that nothing will ever come. */
    if (all_lanes_done(k)) {
      rk__lock(&k->reply_lock);
      i = k->pend_head == NULL;
      rk__unlock(&k->reply_lock);
      if (i) return rk__fail(k->rt, RK_ECLOSED, "rk_recv on %s: terminated, every reply received", k->name);
    }
    /* Nothing ready on a FAULTED kernel: say so now, not at the timeout (terminate and restart
     * are the ways on). */
    if (rk__kernel_faulted(k)) return faulted_fail(k, "rk_recv on");
    if (timeout_ns == 0) return RK_EAGAIN;
    if (start == 0) start = rk__now_ns();
    if (timeout_ns > 0 && rk__now_ns() - start >= (uint64_t)timeout_ns)
      return rk__fail(k->rt, RK_ETIMEDOUT, "rk_recv on %s: nothing within %lld us", k->name,
                      (long long)(timeout_ns / 1000));
    /* 3. wait: on a single-lane kernel park on its outbox (woken by the lane's publish); else
     * back off (spin, yield, short sleeps). A drain that could not queue a reply (no memory)
     * leaves the ring non-empty: back off rather than spin on it. */
    if (blocked) {
      uint64_t nap = 1000000, el = rk__now_ns() - start;
      if (timeout_ns > 0 && (uint64_t)timeout_ns - el < nap) nap = (uint64_t)timeout_ns - el;
      rk__sleep_ns(nap);
    } else if (k->lanes == 1 && rk__flag_trylock(&k->lane[0].drain_lock) == 0) {
      int64_t left = 1000000; /* re-check pending/terminate/fault at least every ms */
      if (timeout_ns > 0) {
        uint64_t el = rk__now_ns() - start;
        if ((uint64_t)timeout_ns - el < (uint64_t)left) left = (int64_t)((uint64_t)timeout_ns - el);
      }
      int wrc = rk__ring_wait_readable_slice(k->lane[0].outbox, k->outbox_stride, left, &idle_since);
      outbox_let_go(k, &k->lane[0]); /* an rk_call asleep for the lock retries it */
      /* The lane closed its outbox and it is drained: the kernel is TERMINATED within moments
       * (all_lanes_done above ends the receive then); until then the wait would return at once */
      if (wrc == RK_ECLOSED) rk__sleep_ns(left < 20000 ? (uint64_t)left : 20000);
    } else if (++spins < 256 && !rk__one_cpu()) { /* (one CPU: a spin only delays the lanes; yield) */
      rk_cpu_relax();
    } else if (spins < 512) {
      sched_yield();
    } else {
      rk__sleep_ns(20000);
    }
  }
}

/* Let go of lane l's outbox (drain_lock held) and hand it over: callers of this lane asleep on
 * reply_cond retry the lock. One about to sleep is not counted yet and retries after its timed
 * wait (200 us) at worst.
 *
 * With callbacks on, the callback dispatcher leaves an outbox whose drain_lock it finds taken to
 * the holder (rk__dispatch_callbacks), and the lane's wake-up for a reply published while an
 * rk_call held the lock is spent then. A reply that the holder did not take (published after its
 * last look) would wait for the service timer (the watchdog interval, 50 ms by default; issue 16,
 * N1): so after letting go the holder looks at the outbox once more and wakes the service loop
 * when anything is in it. Dekker pair with the dispatcher: holder: store drain_lock = 0, fence,
 * read the outbox; dispatcher (after the lane's publication and wake-up): fence, read drain_lock.
 * Either the dispatcher finds the lock free, or the holder sees the reply. (Replies the holder took
 * for the pending list wake the loop in drain_lane.) */
static void outbox_let_go(rk_kernel *k, rk__lane *l) {
  rk__flag_unlock(&l->drain_lock);
  /* acquire: pairs with the release stores of cb_active in rk_recv_start/rk_recv_stop. No fence
   * between the unlock and this load (every rk_call comes here): rk_recv_start, rare, puts a
   * barrier on every thread instead (rk__process_barrier) */
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE)) {
    rk_fence_seq_cst_sys(); /* the Dekker pair above (the dispatcher's fence) */
    if (rk_ring_count(l->outbox) != 0) rk__service_wake(k->rt);
  }
  if (__atomic_load_n(&k->sleepers, __ATOMIC_RELAXED)) { /* exact under reply_lock; a hint here */
    rk__lock(&k->reply_lock);
    uv_cond_broadcast(&k->reply_cond);
    rk__unlock(&k->reply_lock);
  }
}

/* rk_call's fast path, right after its request is published (drain_lock held, so this caller is
 * the outbox's consumer): poll the sequence word of the outbox's first unconsumed slot, where its
 * reply lands unless other replies are ahead of it, for up to RK_CALL_SPIN_POLLS polls (a pause
 * each: ~3 us on the EPYC VM; 16 polls measured no better in window 1 of issue 16's third step,
 * docs/design-notes.md), and take its lines at once when it is published. Returns 1 when something was published there, 0 otherwise (the ordinary
 * wait follows, spin, yield, park, with its re-checks). The wait's generic steps (a predicate
 * through a function pointer, the ring's header re-checked before every poll, its return through
 * three calls) lay between the reply's publication and drain_own (issue 16). The header is checked
 * once, here, and the word's address computed from it: a header rewritten during the poll cannot
 * redirect it, and drain_own checks the header again before it reads the slot. */
#ifndef RK_CALL_SPIN_POLLS
#define RK_CALL_SPIN_POLLS 64
#endif
static int reply_spin(rk_kernel *k, rk__lane *l) {
  rk_ring *r = l->outbox;
  volatile uint64_t *seq;
  uint64_t head;
  uint32_t i;
  if (!lane_ring_ok(k, r, k->outbox_cap, RK_RING_SPSC)) return 0;
  int one = rk__one_cpu(); /* one CPU: the lane cannot answer while this thread spins; yield */
  head = r->head; /* the consumer's own word (drain_lock held): plain read */
  seq = rk_ring__seq(r, head);
  for (i = 0; i < RK_CALL_SPIN_POLLS; i++) {
    /* pairs with the lane's release of the sequence word (rk_ring__publish): the slot is written */
    if (rk_ring_seq_published(rk_load_acquire_sys_u64(seq), head)) {
      rk__prefetch_slot(r, head); /* envelope and payload lines together (queue/internal.h) */
      return 1;
    }
    if (one) {
      if (i == 2) break; /* a few yields: the lane runs in the first; then the ordinary wait */
      rk__wait_yield();
    } else {
      rk_cpu_relax();
    }
  }
  return 0;
}

/* Put waiter w on k's list, where drainers look for it. */
static void waiter_register(rk_kernel *k, rk_waiter *w) {
  rk__lock(&k->reply_lock);
  w->next = k->waiters;
  k->waiters = w;
  rk__unlock(&k->reply_lock);
}

/* id: 0 takes a fresh one; *sent (may be NULL): set to 1 once the request is published.
 *
 * The fast path (issue 16, docs/design-notes.md "Where an rk_call round trip goes"): when the lane's
 * drain_lock is free, the caller takes it before sending and keeps it until its reply is in, so no
 * one else can take that reply, and the waiter goes on no list: no reply_lock on the way out or
 * back (drain_lane delivers to it directly). The send then only tries once (RK__SEND_TRY): a full
 * inbox sends the call the ordinary way, since waiting for room while holding the outbox could
 * wait for itself (a lane stalled on its full outbox takes no input). The call's clock reading for
 * its deadline and latency is taken after the request is published, while the lane works on it;
 * the deadline is counted from there (later than the call's start by the send's own ~100 ns).
 * If the caller must let go of drain_lock before its reply is in (deadline, fault, the lane
 * closing), it registers first, under the lock still, and goes on as the ordinary path. */
static int call_common(rk_kernel *k, int keyed, uint64_t key, uint32_t type, const void *req, uint32_t req_len,
                       rk_msg *reply, void *buf, uint32_t buf_len, int64_t timeout_ns, uint64_t id, int *sent) {
  rk_waiter w, **pw;
  rk__lane *l;
  uint64_t deadline, pt = 0, idle_since = 0; /* idle_since: when the outbox went quiet, 0 if it has not */
  int rc, own = 0, registered = 0; /* own: this call holds l->drain_lock; registered: w is on the list */
  int published = 0;                /* the request was sent */
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (reply == NULL || (buf == NULL && buf_len > 0))
    return rk__fail(k->rt, RK_EINVAL, "call to %s: NULL reply or buffer", k->name);
  if (timeout_ns == 0)
    return rk__fail(k->rt, RK_EINVAL, "call to %s: timeout 0: a call cannot complete without waiting for its "
                    "reply (poll with rk_send and rk_recv instead)", k->name);
  if ((rc = check_send(k, type, req, req_len, 0)) != RK_OK) {
    if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
    return rc;
  }
  /* every field (the stores a memset call did, ~30 instructions before the request's publication) */
  w.done = 0;
  w.corrupt = 0;
  w.sent_ns = 0;
  w.sent_tsc = 0;
  w.next = NULL;
  w.id = id ? id : rk__msg_id(k->rt) | RK__CALL_BIT;
  w.out = reply;
  w.buf = buf;
  w.buf_len = buf_len;
  l = &k->lane[lane_for(k, keyed, key)];
  w.lane = l->index; /* only this lane's replies may name it (rk__drain_lane) */
  rc = RK__SEND_FULL;
  if (rk__flag_trylock(&l->drain_lock) == 0) {
    own = 1;
    /* before the request is published: a drainer that sees a reply naming it sees this (fast_call) */
    __atomic_store_n(&l->fast_call, w.id, __ATOMIC_RELAXED);
    rc = send_on(k, l, type, req, req_len, RK__SEND_TRY, w.id, UINT64_MAX, &pt);
    if (rc == RK_OK) {
      w.sent_ns = rk__now_ns(); /* the lane is working on the request meanwhile */
      if ((w.sent_mult = rk__tsc_mult()) != 0) w.sent_tsc = rk__tsc_read(); /* the latency's start (drain_own) */
    } else { /* full (the ordinary way then), or an error: nothing was sent */
      own = 0;
      __atomic_store_n(&l->fast_call, 0, __ATOMIC_RELAXED);
      outbox_let_go(k, l);
    }
  }
  if (rc == RK__SEND_FULL) {
    /* Register before sending: the reply may arrive before send_on returns. */
    waiter_register(k, &w);
    registered = 1;
    w.sent_ns = rk__now_ns();
    pt = 0;
    /* One deadline for the whole call: a wait for inbox room spends it too. */
    deadline = timeout_ns < 0 ? UINT64_MAX : add_sat(w.sent_ns, (uint64_t)timeout_ns);
    rc = send_on(k, l, type, req, req_len, 0, w.id, deadline, NULL);
  } else {
    deadline = timeout_ns < 0 ? UINT64_MAX : add_sat(w.sent_ns, (uint64_t)timeout_ns);
  }
  if (rc == RK_OK && sent) *sent = 1;
  published = rc == RK_OK; /* (a send that timed out waiting for room keeps send_on's message) */
  if (rc == RK_OK && own && reply_spin(k, l) && drain_own(k, l, &w, pt)) {
    /* answered during the fast path's first poll: let go of the outbox as the loop below does */
    __atomic_store_n(&l->fast_call, 0, __ATOMIC_RELAXED); /* answered */
    outbox_let_go(k, l);
    own = 0;
  }
  if (rc == RK_OK) {
    int first = 1; /* the first pass follows the send at once: no clock read for the timeout yet */
    int closed = 0; /* the last wait found the outbox closed and drained */
    for (;;) {
      /* pairs with the drainer's release store of done: *reply is complete */
      if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) break;
      if (!first && rk__now_ns() >= deadline) {
        rc = RK_ETIMEDOUT;
        break;
      }
      if (!first && rk__kernel_faulted(k)) {
        rc = RK_ESTATE; /* unless the reply came meanwhile: checked when leaving the waiter list */
        break;
      }
      if (own || rk__flag_trylock(&l->drain_lock) == 0) {
        /* We are this outbox's consumer: drain (delivering to every waiter), then park on it. */
        own = 0;
        for (;;) {
          int64_t left = 1000000; /* re-check the deadline, faults and terminate at least every ms */
          uint64_t now;
          /* (the fast path's first pass follows its send at once: its reply cannot be there yet,
           * and the wait below returns at once if it is) */
          if (registered)
            drain_lane(k, l, NULL, NULL, 0, 0, NULL, NULL, 0);
          else if (!first && !drain_own(k, l, &w, pt))
            drain_lane(k, l, NULL, NULL, 0, 0, NULL, &w, pt);
          if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) break; /* pairs with the drainer's release */
          if (rk__kernel_faulted(k)) break;
          if (deadline != UINT64_MAX) {
            now = first ? w.sent_ns : rk__now_ns();
            if (now >= deadline) break;
            if (deadline - now < (uint64_t)left) left = (int64_t)(deadline - now);
          }
          /* a reply ahead of ours could not be queued by the drain this pass ran (the first pass
           * runs none: the flag would be an earlier drainer's): do not spin on it */
          if (!first && l->drain_blocked) {
            first = 0;
            rk__sleep_ns((uint64_t)left);
            continue;
          }
          first = 0;
          if (rk__ring_wait_readable_slice(l->outbox, k->outbox_stride, left, &idle_since) == RK_ECLOSED) {
            drain_lane(k, l, NULL, NULL, 0, 0, NULL, registered ? NULL : &w, pt);
            closed = 1;
            break;
          }
        }
        /* Letting go of the outbox without the reply: from now on another drainer may take it, so
         * the waiter goes on the list first (drain_lock still held: no reply can slip by). */
        if (!registered && !__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) { /* pairs with the drainer's release */
          waiter_register(k, &w);
          registered = 1;
        }
        __atomic_store_n(&l->fast_call, 0, __ATOMIC_RELAXED); /* on the list now, or answered */
        outbox_let_go(k, l);
        if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) break; /* pairs with the drainer's release */
        if (rk_load_acquire_sys_u32(&k->hstate) == RK_STATE_TERMINATED && rk_ring_closed(l->outbox, NULL) &&
            rk_ring_count(l->outbox) == 0) {
          rc = RK_ECLOSED; /* the lane exited without answering (aborted) */
          break;
        }
        if (closed) { /* the lane closed its outbox, TERMINATED follows within moments: do not spin */
          uint64_t now = rk__now_ns();
          closed = 0;
          if (now < deadline) rk__sleep_ns(deadline - now < 20000 ? deadline - now : 20000);
        }
      } else {
        /* Someone else drains this outbox and will hand us our reply (done is set under
         * reply_lock, and the drainer broadcasts when it sees sleepers; a fault broadcasts too). */
        rk__lock(&k->reply_lock);
        if (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE) && !rk__kernel_faulted(k)) {
          __atomic_add_fetch(&k->sleepers, 1, __ATOMIC_RELAXED); /* ordered by reply_lock */
          uv_cond_timedwait(&k->reply_cond, &k->reply_lock, 200000);
          __atomic_sub_fetch(&k->sleepers, 1, __ATOMIC_RELAXED);
        }
        rk__unlock(&k->reply_lock);
      }
      first = 0;
    }
  }
  /* Leave the waiter list (a late reply then finds no waiter and is counted, not delivered). A
   * waiter marked done was unlinked by its drainer, which no longer touches it. */
  if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) { /* pairs with the drainer's release */
    rc = RK_OK;
  } else {
    rk__lock(&k->reply_lock);
    for (pw = &k->waiters; *pw; pw = &(*pw)->next)
      if (*pw == &w) {
        *pw = w.next;
        break;
      }
    if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) rc = RK_OK; /* delivered at the deadline */
    rk__unlock(&k->reply_lock);
  }
  if (rc == RK_OK && w.corrupt) { /* written before done's release, read after its acquire */
    rc = rk__fail(k->rt, RK_ECORRUPT, "call to %s: the reply was corrupt and refused (replies_invalid)", k->name);
  } else if (rc == RK_OK && (reply->env.flags & RK_ENV_F_ERROR)) {
    rc = rk__fail(k->rt, RK_EHANDLER, "call to %s: error reply %s", k->name, rk_err_name(reply->status));
  } else if (rc == RK_OK && reply->env.payload_len > reply->len) {
    rc = rk__fail(k->rt, RK_EMSGSIZE, "call to %s: the %u-byte reply was cut to the buffer's %u bytes", k->name,
                  reply->env.payload_len, buf_len);
  } else if (rc == RK_ETIMEDOUT && published) {
    uint32_t s = rk_load_acquire_sys_u32(&k->hstate); /* for the message only */
    rk__fail(k->rt, RK_ETIMEDOUT, "call to %s: no reply within %lld us%s", k->name, (long long)(timeout_ns / 1000),
             s == RK_STATE_LAUNCHED || s == RK_STATE_INACTIVE
                 ? " (the kernel is not active: rk_kernel_activate it; messages wait in its inbox until then)"
                 : "");
  } else if (rc == RK_ESTATE) {
    rc = faulted_fail(k, "call to");
  } else if (rc == RK_ECLOSED) {
    rk__fail(k->rt, RK_ECLOSED, "call to %s: the kernel terminated without answering", k->name);
  }
  return rc;
}

int rk__call_id(rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply, void *buf,
                uint32_t buf_len, int64_t timeout_ns, uint64_t id, int *sent) {
  return call_common(k, 0, 0, type, req, req_len, reply, buf, buf_len, timeout_ns, id, sent);
}

int rk_call(rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply, void *buf,
            uint32_t buf_len, int64_t timeout_ns) {
  return call_common(k, 0, 0, type, req, req_len, reply, buf, buf_len, timeout_ns, 0, NULL);
}

int rk_call_key(rk_kernel *k, uint64_t key, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply,
                void *buf, uint32_t buf_len, int64_t timeout_ns) {
  return call_common(k, 1, key, type, req, req_len, reply, buf, buf_len, timeout_ns, 0, NULL);
}

/* ---------------------------------------- callbacks ------------------------------------------ */

int rk_recv_start(rk_kernel *k, rk_recv_cb cb, void *user) {
  int rc = RK_OK;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (cb == NULL) return rk__fail(k->rt, RK_EINVAL, "rk_recv_start on %s: NULL callback", k->name);
  rk__lock(&k->cb_lock);
  if (k->cb_active) {
    rc = rk__fail(k->rt, RK_ESTATE, "rk_recv_start on %s: already started", k->name);
  } else if (k->cb_buf == NULL && (k->cb_buf = rk__malloc(rk__payload_max(k))) == NULL) {
    rc = rk__fail(k->rt, RK_ENOMEM, "rk_recv_start on %s: out of memory", k->name);
  } else if ((k->lane[0].outbox->flags & RK_RING_F_NO_WAKE) && (rc = rk__devpoll_start(k->rt)) != RK_OK) {
    /* lanes that cannot wake the loop (a device): the poller thread watches their outboxes; it runs
     * before the callbacks are started, so a sender that sees cb_active finds it */
  } else {
    k->cb = cb;
    k->cb_user = user;
    __atomic_store_n(&k->cb_active, 1, __ATOMIC_RELEASE); /* lanes and senders read it to wake the loop */
  }
  rk__unlock(&k->cb_lock);
  if (rc == RK_OK) {
    /* An outbox holder that lets go now (outbox_let_go: unlock, then a fence-free load of
     * cb_active) could read cb_active still 0 while the dispatcher's first pass finds its lock
     * still taken: a reply published meanwhile would wait for the service timer (50 ms). A barrier
     * on every thread between this store and the wake-up closes that: either the holder's unlock
     * is visible to the dispatcher, or its load comes after the barrier and sees 1. Without
     * membarrier that one-time bound stays. */
    (void)rk__process_barrier();
    rk__devpoll_kick(k->rt);
    rk__service_wake(k->rt);
  }
  return rc;
}

int rk_recv_stop(rk_kernel *k) {
  uv_thread_t self = uv_thread_self();
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  rk__lock(&k->cb_lock);
  if (!k->cb_active) {
    rk__unlock(&k->cb_lock);
    return rk__fail(k->rt, RK_ESTATE, "rk_recv_stop on %s: not started", k->name);
  }
  __atomic_store_n(&k->cb_active, 0, __ATOMIC_RELEASE);
  k->cb = NULL;
  k->cb_user = NULL;
  /* A dispatcher delivering now checks before each callback and stops. From inside the callback
   * (the dispatcher's own thread) waiting for it would wait for ourselves: it stops when we return. */
  if (!(k->cb_running && uv_thread_equal(&k->cb_thread, &self)))
    while (k->cb_running) uv_cond_wait(&k->cb_cond, &k->cb_lock);
  rk__unlock(&k->cb_lock);
  return RK_OK;
}

/* The callback to call next, or 0 when callbacks were stopped (cb_lock: start and stop may run on
 * any thread, and between two callbacks). */
static int current_cb(rk_kernel *k, rk_recv_cb *cb, void **user) {
  int on;
  rk__lock(&k->cb_lock);
  on = k->cb_active && k->cb != NULL;
  *cb = k->cb;
  *user = k->cb_user;
  rk__unlock(&k->cb_lock);
  return on;
}

/* Service loop: deliver k's queued and new replies to its callback, one at a time, each copied
 * out of the ring (or the pending list) into cb_buf first, so the callback runs with no library
 * lock held: it may call rk_recv_stop, rk_send, rk_call, ... on k. */
void rk__dispatch_callbacks(rk_kernel *k) {
  rk_recv_cb cb;
  void *user;
  rk_msg m;
  uint32_t i, max = rk__payload_max(k);
  int progress;
  rk__lock(&k->cb_lock);
  if (!k->cb_active || k->cb_running) { /* one dispatcher at a time */
    rk__unlock(&k->cb_lock);
    return;
  }
  k->cb_running = 1;
  k->cb_thread = uv_thread_self();
  rk__unlock(&k->cb_lock);
  do {
    progress = 0;
    /* replies parked on the pending list first, in order */
    for (;;) {
      int got;
      if (!current_cb(k, &cb, &user)) goto out;
      rk__lock(&k->reply_lock);
      got = pop_pending(k, &m, k->cb_buf, max);
      rk__unlock(&k->reply_lock);
      if (!got) break;
      cb(k, &m, user);
      progress = 1;
    }
    for (i = 0; i < k->lanes; i++) {
      rk__lane *l = &k->lane[i];
      for (;;) {
        uint32_t got = 0;
        if (!current_cb(k, &cb, &user)) goto out;
        /* the Dekker pair of outbox_let_go: the lane published and woke us before this fence; a
         * holder that lets go after our look below sees the reply and wakes us again */
        rk_fence_seq_cst_sys();
        if (rk__flag_trylock(&l->drain_lock) != 0) break; /* a caller drains it, and hands us the rest */
        if (rk__drain_lane(k, l, &m, k->cb_buf, max, 1, &got) > 0 && !got) progress = 1; /* to pending */
        rk__flag_unlock(&l->drain_lock);
        if (!got) break;
        cb(k, &m, user);
        progress = 1;
      }
    }
  } while (progress);
out:
  rk__lock(&k->cb_lock);
  k->cb_running = 0;
  uv_cond_broadcast(&k->cb_cond);
  rk__unlock(&k->cb_lock);
}
