/* cpu_backend.c — the CPU backend: persistent worker threads running the dispatch steps the device
 * lane runs (poll inbox -> validate -> merge HLC -> handler -> replies), on ordinary memory, under
 * the rules both loops share (src/device/lane_rules.h); the loop is its own, shaped by caches and
 * futex wake-ups where the device's is shaped by PCIe (docs/design-notes.md).
 *
 * Each lane has 1..n threads. Thread 0 (the leader) owns the lane's end of every ring and its
 * status line: it polls the control block, takes messages, publishes replies. With n > 1 threads
 * the others wait at the lane barrier and run the handler on the leader's message, so handler code
 * written for cooperating GPU threads (rk_thread / rk_threads / rk_sync) is exercised here, under
 * TSan too. Idle lanes spin briefly, yield, then park on the inbox's futex; producers and commands
 * wake them (the Dekker protocol of src/queue/ring_wait.c), so an idle kernel burns no core.
 *
 * Leaving. The leader breaks the lane's barrier when it leaves (terminate, abort, a broken
 * collective), so followers waiting for a collective the others will never reach return and leave
 * too; it reports TERMINATED only once every follower is out of the handler, so a TERMINATED lane
 * can be joined at once. Each barrier arrival names its collective: when the threads of one
 * generation name different ones (a handler that broke the collective rule), the kernel faults
 * with a message that says which, and the lane stops. A lane thread that the host abandoned (its
 * handler never returned) frees the kernel itself when it leaves, last of its lanes' threads. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "device/lane_rules.h"
#include "host/internal.h"
#include "ringkernel/graph.h"

#define RK_LANE_BATCH 64           /* messages taken per inbox index access (rk_send_batch claims runs of up to 64, a drain takes up to 64) */
#define RK_LANE_PARK_NS 20000000   /* parked lanes re-check their control word this often */
#define RK_LANE_RETRY_NS 20000     /* back-off before a handler that returned RK_EAGAIN runs again */
#define RK_LANE_PT_REUSE 64        /* host batches that reuse one clock reading at most (lane_pt) */
/* messages whose lines a batch fetches ahead (process_batch); 8 until issue 16's tenth step, where
 * 24 gave 1.04x in throughput.echo (docs/design-notes.md, "throughput.echo, the caller's side") */
#define RK_LANE_AHEAD 24

/* Single-writer counters (the lane leader writes, anyone reads): a load and a store, never an
 * RMW, because on the device the same words live across PCIe (ARCHITECTURE §4). Readers pair
 * with nothing: counters are statistics. */
static inline void count_add(volatile uint64_t *c, uint64_t n) {
  rk_store_relaxed_sys_u64(c, rk_load_relaxed_sys_u64(c) + n);
}

/* ---------------------------------------- replies -------------------------------------------- */

/* The slot for the next reply of this batch, or NULL when the outbox is full. Replies are
 * staged (reserved) during a batch and published together at its end (rk_ring_commit_n).
 * l->out_room: slots known free from the tail on (the lane is the outbox's only producer, so the
 * count can only be low: the consumer frees more, flush_replies takes off what it publishes). The
 * ring is asked again only when the count runs out, and then for a batch's worth: each message
 * asked twice before (outbox_room, then its reply), ~25 instructions each (issue 16). */
static __attribute__((noinline)) int reply_room(rk__lane *l, uint32_t want) {
  uint64_t pos;
  l->out_room = rk_ring_reserve_n(l->outbox, want + RK_LANE_BATCH, &pos);
  return want <= l->out_room;
}
/* (inline, its ring query out of line: it runs twice per message, outbox_room and reply_put, and
 * the query once per batch; issue 16, fourth step) */
static inline void *reply_slot(rk__lane *l) {
  uint32_t want = l->out_pending + 1;
  if (RK_UNLIKELY(want > l->out_room) && !reply_room(l, want)) return NULL;
  return rk_ring_slot(l->outbox, l->outbox->tail + l->out_pending); /* tail: own word */
}

/* The next id of a message this lane originates (replies, K2K messages): lane + 1 in the top 16
 * bits, a per-lane count below (leader only). */
static uint64_t lane_msg_id(rk__lane *l) { return ((uint64_t)(l->index + 1) << 48) | ++l->next_reply_id; }

static void reply_header(rk__lane *l, rk_envelope *e, const rk_msg *in, uint32_t type, uint32_t len,
                         uint16_t flags) {
  rk_kernel *k = l->k;
  rk_envelope_init(e, type, len, (uint16_t)(RK_ENV_F_REPLY | flags));
  e->msg_id = lane_msg_id(l);
  e->correlation_id = in->env.msg_id;
  e->src = k->id;
  e->dst = in->env.src;
  e->node = k->id;
  e->lane = (uint16_t)l->index;
  e->priority = in->env.priority;
}

/* A reply is complete: into the batch. Its stamp (and its count in msgs_out) come with
 * flush_replies. */
static void reply_publish_staged(rk__lane *l, rk_envelope *e) {
  (void)e;
  l->out_pending++;
  l->replied = 1;
}

static int k2k_reply(rk__lane *l, const rk_msg *in, uint32_t type, uint16_t flags, const void *payload, uint32_t len);

/* (always inline: rk_reply's call of it was ~15 instructions of every echo's ~340 on the lane) */
static inline __attribute__((always_inline)) int reply_put(rk__lane *l, const rk_msg *in, uint32_t type,
                                                            uint16_t flags, const void *payload, uint32_t len) {
  rk_envelope *e;
  if (in->env.flags & RK_ENV_F_NO_REPLY) return RK_OK;
  if (in->env.flags & RK_ENV_F_K2K) return k2k_reply(l, in, type, flags, payload, len);
  if (len > rk__payload_max(l->k)) return RK_EMSGSIZE;
  e = (rk_envelope *)reply_slot(l);
  if (e == NULL) return RK_EAGAIN;
  reply_header(l, e, in, type, len, flags);
  rk__copy_msg(e + 1, payload, len);
  reply_publish_staged(l, e);
  return RK_OK;
}

static void error_reply(rk__lane *l, const rk_msg *in, int code) {
  int32_t c = code;
  if (reply_put(l, in, in->env.type, RK_ENV_F_ERROR, &c, sizeof c) != RK_OK) {
    rk__dead_letter(l->k, &in->env, in->payload, RK_EAGAIN, "error reply dropped: outbox full", l->index);
    rk__log(l->k->rt, RK_LOG_WARN, "kernel %s lane %u: error reply (%s) dropped: outbox full", l->k->name,
            l->index, rk_err_name(code));
  }
}

/* Publish the replies staged in this batch and wake whoever consumes the outbox; room_in (may be
 * NULL): an inbox whose slots this batch released, whose parked senders are to be woken too.
 * pt_us: a reading of the kernel clock's time source taken in this batch after its messages were
 * seen (process_batch), 0 to read one here.
 *
 * The order is the round trip's (issue 16, docs/design-notes.md "Where an rk_call round trip
 * goes"): the replies are published first, and only then does the lane pay for the wake-ups, with
 * one full fence for both Dekker pairs (the outbox's consumer, the inbox's producers) instead of
 * one before the replies and one after them. */
static void flush_replies(rk__lane *l, uint64_t pt_us, rk_ring *room_in) {
  rk_hlc stamp;
  uint32_t i, n = l->out_pending;
  if (n) {
    /* Stamp the batch's replies, in order, with one CAS (send rule): each stamp is later than every
     * stamp the kernel saw before the reply is published (merges, rk_now). The batch's clock
     * reading, not a new one: the merges of this batch used it, so the word is at or above it
     * already and the tick goes on from the word (a reading taken later only moves the physical
     * part forward by the handlers' time; K2K sends stamp the same way, k2k_envelope). Saves a
     * clock read (~23 ns on the EPYC VM) between a request and its reply. */
    rk__clock_tick_n(l->k->clock, n, pt_us ? pt_us : rk_clock_physical_us(l->k->clock), &stamp);
    for (i = 0; i < n; i++) /* tail: the producer's own word, plain read */
      ((rk_envelope *)rk_ring_slot(l->outbox, l->outbox->tail + i))->hlc = stamp + i;
    /* counted as published: just before the commit, so a caller that has its reply sees the count
     * that includes it (tests read msgs_out right after rk_recv). The other way round does not
     * hold: a stats reader can see the count a few instructions before the replies are in the
     * outbox (test_telemetry waits for the outbox depth itself). Counting at staging time made
     * that window a whole batch long. */
    count_add(&l->status->msgs_out, n);
    rk_ring_commit_n(l->outbox, n); /* release: slots before the index */
    l->out_pending = 0;
    l->out_room -= n; /* reply_slot: counted from the tail, which moved on by n */
  }
  if (n == 0 && room_in == NULL) return;
  /* one fence for the outbox's consumer and the inbox's producers: every publication above
   * (sequence words, the inbox's head) precedes it */
  rk__ring_notify2(n ? l->outbox : NULL, room_in);
  /* the slot of the next reply, taken in exclusive state while the lane has nothing else to do
   * (queue/internal.h) */
  if (n) rk__prefetchw_slot(l->outbox, l->outbox->tail);
  /* pairs with the release stores of cb_active in rk_recv_start/rk_recv_stop (any thread) */
  if (n && __atomic_load_n(&l->k->cb_active, __ATOMIC_ACQUIRE)) rk__service_wake(l->k->rt);
}

/* ---------------------------------------- the lane barrier ---------------------------------- */

/* The collectives a barrier arrival can belong to (the rule: every thread of the lane calls the
 * same ones, in the same order). */
enum { SITE_START = 1, SITE_END, SITE_SYNC, SITE_REPLY, SITE_RESERVE, SITE_COMMIT, SITE_SEND };

static const char *site_name(int site) {
  switch (site) {
    case SITE_START: return "the start of a message";
    case SITE_END: return "the end of the handler (it returned)";
    case SITE_SYNC: return "rk_sync";
    case SITE_REPLY: return "rk_reply";
    case SITE_RESERVE: return "rk_reply_reserve";
    case SITE_COMMIT: return "rk_reply_commit";
    case SITE_SEND: return "rk_send_to / rk_forward / rk_publish";
    default: return "?";
  }
}

static int barrier_init(rk__lane_barrier *b, uint32_t n) {
  memset(b, 0, sizeof *b);
  if (uv_mutex_init(&b->lock) != 0) return RK_ESYS;
  if (uv_cond_init(&b->cond) != 0) {
    uv_mutex_destroy(&b->lock);
    return RK_ESYS;
  }
  b->n = n;
  b->ready = 1;
  return RK_OK;
}

static void barrier_destroy(rk__lane_barrier *b) {
  if (!b->ready) return;
  uv_cond_destroy(&b->cond);
  uv_mutex_destroy(&b->lock);
  b->ready = 0;
}

/* Break the barrier: every wait, now and later, returns at once. */
static void barrier_break(rk__lane_barrier *b) {
  uv_mutex_lock(&b->lock); /* a leaf lock, never held while calling anything */
  __atomic_store_n(&b->broken, 1, __ATOMIC_RELAXED); /* atomic for lane_broken's unlocked read */
  uv_cond_broadcast(&b->cond);
  uv_mutex_unlock(&b->lock);
}

/* Wait until all n threads arrived. Returns 0, or -1 when the barrier is broken (the lane is
 * leaving) or this arrival finds the collective rule broken (then the kernel faults, and the
 * barrier is broken for everyone). */
static int lane_barrier(rk__lane *l, uint32_t thread, int site) {
  rk__lane_barrier *b = &l->barrier;
  uint32_t gen;
  int first_site = 0, first_thread = 0;
  uv_mutex_lock(&b->lock);
  if (b->broken) {
    uv_mutex_unlock(&b->lock);
    return -1;
  }
  if (b->arrived == 0) {
    b->site = site;
    b->site_thread = (int)thread;
  } else if (b->site != site) {
    first_site = b->site;
    first_thread = b->site_thread;
    __atomic_store_n(&b->broken, 1, __ATOMIC_RELAXED); /* atomic for lane_broken's unlocked read */
    uv_cond_broadcast(&b->cond);
    uv_mutex_unlock(&b->lock);
    rk__kernel_fault(l->k, RK_EHANDLER,
                     "lane %u broke the collective rule: thread %d reached %s while thread %u reached %s (rk_sync, "
                     "rk_reply, rk_reply_reserve and rk_reply_commit must be called by every thread of the lane, in "
                     "control flow uniform across it)",
                     l->index, first_thread, site_name(first_site), thread, site_name(site));
    return -1;
  }
  if (++b->arrived == b->n) {
    b->arrived = 0;
    b->generation++;
    uv_cond_broadcast(&b->cond);
    uv_mutex_unlock(&b->lock);
    return 0;
  }
  gen = b->generation;
  while (b->generation == gen && !b->broken) uv_cond_wait(&b->cond, &b->lock);
  if (b->generation == gen) { /* broken while waiting */
    uv_mutex_unlock(&b->lock);
    return -1;
  }
  uv_mutex_unlock(&b->lock);
  return 0;
}

/* The lane's barrier is broken: it stops after the current message. */
static int lane_broken(const rk__lane *l) {
  /* relaxed: a hint checked between messages; the barrier itself (under its lock) is exact */
  return l->nthreads > 1 && __atomic_load_n(&l->barrier.broken, __ATOMIC_RELAXED);
}

/* A follower is done with the lane: the leader, leaving, waits for every follower so. */
static void follower_leaves(rk__lane *l) {
  uv_mutex_lock(&l->barrier.lock);
  l->barrier.alive--;
  uv_cond_broadcast(&l->barrier.cond);
  uv_mutex_unlock(&l->barrier.lock);
}

/* The leader waits until every follower has left the lane (the barrier is broken, so each one
 * leaves as soon as its handler returns). */
static void followers_out(rk__lane *l) {
  rk__lane_barrier *b = &l->barrier;
  uv_mutex_lock(&b->lock);
  while (b->alive > 1) uv_cond_wait(&b->cond, &b->lock);
  uv_mutex_unlock(&b->lock);
}

/* ---------------------------------------- the dialect (host side) ---------------------------- */

/* A collective's barrier; 0 or -1 (broken: the collective does nothing and reports RK_ESTATE). */
static inline int lane_sync(rk_ctx *ctx, int site) {
  return ctx->lane->nthreads > 1 ? lane_barrier(ctx->lane, ctx->thread, site) : 0;
}

void *rk_state(rk_ctx *ctx) { return ctx ? ctx->k->state : NULL; }
void *rk_scratch(rk_ctx *ctx, size_t *size) {
  if (size) *size = ctx ? ctx->k->desc.scratch_size : 0;
  return ctx ? ctx->lane->scratch : NULL;
}
rk_hlc rk_now(rk_ctx *ctx) {
  rk_hlc t = 0;
  if (ctx) rk_clock_tick(ctx->k->clock, &t);
  return t;
}
uint32_t rk_thread(rk_ctx *ctx) { return ctx ? ctx->thread : 0; }
uint32_t rk_threads(rk_ctx *ctx) { return ctx ? ctx->lane->nthreads : 1; }
void rk_sync(rk_ctx *ctx) {
  if (ctx) (void)lane_sync(ctx, SITE_SYNC);
}
uint32_t rk_lane(rk_ctx *ctx) { return ctx ? ctx->lane->index : 0; }
uint32_t rk_lanes(rk_ctx *ctx) { return ctx ? ctx->k->lanes : 0; }
uint32_t rk_self(rk_ctx *ctx) { return ctx ? ctx->k->id : 0; }

/* Collective calls: barrier (the lane's writes are done), the leader acts, barrier (its result is
 * visible to all). The barriers order the plain shared fields (coll_rc, coll_ptr). */
int rk_reply(rk_ctx *ctx, uint32_t type, const void *payload, uint32_t len) {
  rk__lane *l;
  if (ctx == NULL) return RK_EINVAL;
  l = ctx->lane;
  if (lane_sync(ctx, SITE_REPLY) != 0) return RK_ESTATE;
  if (ctx->thread == 0) {
    if (payload == NULL && len > 0)
      l->coll_rc = RK_EINVAL;
    else if (l->reserved_slot)
      l->coll_rc = RK_ESTATE; /* the next slot is the reservation's: commit it first */
    else
      l->coll_rc = reply_put(l, l->cur, type, 0, payload, len);
  }
  if (lane_sync(ctx, SITE_REPLY) != 0) return RK_ESTATE;
  return l->coll_rc;
}

int rk_reply_error(rk_ctx *ctx, int32_t code, const void *payload, uint32_t len) {
  rk__lane *l;
  if (ctx == NULL) return RK_EINVAL;
  l = ctx->lane;
  if (lane_sync(ctx, SITE_REPLY) != 0) return RK_ESTATE;
  if (ctx->thread == 0) {
    uint8_t buf[RK_REPLY_ERROR_MAX + sizeof(int32_t)];
    if (code >= 0 || (payload == NULL && len > 0))
      l->coll_rc = RK_EINVAL;
    else if (l->reserved_slot)
      l->coll_rc = RK_ESTATE;
    else if (len > rk__payload_max(l->k) - sizeof code || len > sizeof buf - sizeof code)
      l->coll_rc = (l->cur->env.flags & RK_ENV_F_NO_REPLY) ? RK_OK : RK_EMSGSIZE;
    else {
      memcpy(buf, &code, sizeof code);
      if (len) memcpy(buf + sizeof code, payload, len);
      l->coll_rc = reply_put(l, l->cur, l->cur->env.type, RK_ENV_F_ERROR, buf, (uint32_t)sizeof code + len);
    }
  }
  if (lane_sync(ctx, SITE_REPLY) != 0) return RK_ESTATE;
  return l->coll_rc;
}

void *rk_reply_reserve(rk_ctx *ctx, uint32_t type, uint32_t len) {
  rk__lane *l;
  if (ctx == NULL) return NULL;
  l = ctx->lane;
  if (lane_sync(ctx, SITE_RESERVE) != 0) return NULL;
  if (ctx->thread == 0) {
    rk_envelope *e = NULL;
    l->coll_ptr = NULL;
    if (!(l->cur->env.flags & (RK_ENV_F_NO_REPLY | RK_ENV_F_K2K)) && len <= rk__payload_max(l->k) &&
        l->reserved_slot == NULL)
      e = (rk_envelope *)reply_slot(l);
    if (e) {
      reply_header(l, e, l->cur, type, len, 0);
      l->reserved_slot = e;
      l->coll_ptr = e + 1;
    }
  }
  if (lane_sync(ctx, SITE_RESERVE) != 0) return NULL;
  return l->coll_ptr;
}

int rk_reply_commit(rk_ctx *ctx) {
  rk__lane *l;
  if (ctx == NULL) return RK_EINVAL;
  l = ctx->lane;
  if (lane_sync(ctx, SITE_COMMIT) != 0) return RK_ESTATE;
  if (ctx->thread == 0) {
    if (l->reserved_slot) {
      reply_publish_staged(l, (rk_envelope *)l->reserved_slot);
      l->reserved_slot = NULL;
      l->coll_rc = RK_OK;
    } else {
      l->coll_rc = (l->cur->env.flags & RK_ENV_F_NO_REPLY) ? RK_OK : RK_ESTATE;
    }
  }
  if (lane_sync(ctx, SITE_COMMIT) != 0) return RK_ESTATE;
  return l->coll_rc;
}

/* ---------------------------------------- K2K (the dialect) -------------------------------- */

static rk_ring *k2k_of(const rk__lane *l) { return l->k->k2k ? l->k->k2k[l->index] : NULL; }

/* The fields every K2K envelope from this lane has: kind (flags), ids, the priority of the message
 * it comes from, and the stamp. The batch's clock reading, not a new one: a physical part at or
 * below now only makes the tick use the logical counter (the stamp is still above every stamp the
 * kernel saw), and saves a clock read per send (the K2K hop's cost, bench/k2k.c). */
static void k2k_envelope(rk__lane *l, rk_envelope *e, const rk_kernel *dst, uint32_t type, uint32_t len,
                         uint16_t flags, uint16_t priority) {
  rk_kernel *k = l->k;
  rk_envelope_init(e, type, len, (uint16_t)(RK_ENV_F_K2K | flags));
  e->msg_id = lane_msg_id(l);
  e->src = k->id;
  e->dst = dst->id;
  e->node = k->id;
  e->lane = (uint16_t)l->index;
  e->priority = priority;
  rk__clock_tick_n(l->k->clock, 1, l->pt_us, &e->hlc);
}

/* A K2K message this lane sends. forward: it continues the request being handled (rk_forward: the
 * origin and the request's id travel on, unless that request wants no reply); otherwise it is a
 * new message that wants no reply. */
static void k2k_header(rk__lane *l, rk_envelope *e, const rk_kernel *dst, uint32_t type, uint32_t len, int forward) {
  const rk_envelope *in = &l->cur->env;
  k2k_envelope(l, e, dst, type, len, 0, in->priority);
  if (forward && !(in->flags & RK_ENV_F_NO_REPLY) && !(in->flags & RK_ENV_F_REPLY)) {
    if (in->flags & RK_ENV_F_K2K) { /* passed on again: the origin stays */
      e->origin = in->origin;
      e->correlation_id = in->correlation_id;
      e->lane = in->lane;
    } else { /* a host request: this kernel is the origin, the reply comes back to this lane */
      e->origin = l->k->id;
      e->correlation_id = in->msg_id;
    }
  }
  if (e->origin == 0) e->flags = (uint16_t)(e->flags | RK_ENV_F_NO_REPLY);
}

/* rk_reply to a K2K message that continues a host request: over K2K to the origin's lane, which
 * publishes it in its outbox (handle_one). */
static int k2k_reply(rk__lane *l, const rk_msg *in, uint32_t type, uint16_t flags, const void *payload, uint32_t len) {
  rk_kernel *k = l->k, *origin;
  rk_envelope e;
  uint32_t ol;
  int rc;
  if (in->env.flags & RK_ENV_F_REPLY) return RK_OK; /* a reply is not answered */
  if (k->graph == NULL || (origin = rk__graph_kernel(k->graph, in->env.origin)) == NULL) {
    count_add(&l->status->k2k_refused, 1);
    return RK_EINVAL;
  }
  k2k_envelope(l, &e, origin, type, len, (uint16_t)(RK_ENV_F_REPLY | flags), in->env.priority);
  e.correlation_id = in->env.correlation_id;
  e.lane = in->env.lane;
  e.origin = origin->id;
  ol = in->env.lane % origin->lanes; /* the origin's lane, where the caller waits */
  rc = rk__k2k_push(origin, ol, &e, payload, len);
  if (rc == RK_EAGAIN) l->blocked_on = &origin->lane[ol];
  if (rc == RK_OK) {
    l->replied = 1;
    count_add(&l->status->k2k_out, 1);
  } else {
    count_add(&l->status->k2k_refused, 1);
  }
  return rc;
}

/* The leader's part of rk_send_to / rk_send_to_key (mode 0 / 1), rk_publish (mode 2) and
 * rk_forward / rk_forward_key (mode 3 / 4). */
static int send_lead(rk__lane *l, int mode, uint32_t which, uint64_t key, uint32_t type, const void *payload,
                     uint32_t len) {
  rk_kernel *k = l->k, *dst;
  rk_envelope e;
  int rc;
  if ((payload == NULL && len > 0) || type == 0) {
    count_add(&l->status->k2k_refused, 1);
    return RK_EINVAL;
  }
  if (mode == 2) {
    rk_kernel *subs[RK_GRAPH_MAX_KERNELS];
    uint32_t i, n;
    int got = 0;
    if (k->graph == NULL || which >= RK_GRAPH_MAX_TOPICS) {
      count_add(&l->status->k2k_refused, 1);
      return RK_EINVAL;
    }
    n = rk__graph_subscribers(k->graph, which, subs, RK_GRAPH_MAX_KERNELS);
    for (i = 0; i < n; i++) {
      k2k_header(l, &e, subs[i], type, len, 0);
      rc = rk__k2k_push(subs[i], 0, &e, payload, len);
      if (rc == RK_OK) {
        got++;
        l->sent++;
        count_add(&l->status->k2k_out, 1);
      } else if (rc == RK_EAGAIN) {
        __atomic_add_fetch(&subs[i]->k2k_dropped, 1, __ATOMIC_RELAXED); /* statistics */
      } else {
        count_add(&l->status->k2k_refused, 1);
        if (rc == RK_EMSGSIZE) return rc;
      }
    }
    return got;
  }
  if (which >= k->nroutes) {
    count_add(&l->status->k2k_refused, 1);
    return RK_EINVAL;
  }
  dst = k->route[which];
  k2k_header(l, &e, dst, type, len, mode >= 3);
  {
    uint32_t dl = mode == 1 || mode == 4 ? (uint32_t)(key % dst->lanes) : l->index % dst->lanes;
    rc = rk__k2k_push(dst, dl, &e, payload, len);
    if (rc == RK_EAGAIN) l->blocked_on = &dst->lane[dl]; /* for the deadlock check, if it retries */
  }
  if (rc != RK_OK) {
    count_add(&l->status->k2k_refused, 1);
    return rc;
  }
  count_add(&l->status->k2k_out, 1);
  l->sent++;
  if (e.origin) {
    l->replied = 1; /* the duty to answer went on with the message */
    if (e.origin == k->id && !(l->cur->env.flags & RK_ENV_F_K2K)) l->owed++;
  }
  return RK_OK;
}

static int send_collective(rk_ctx *ctx, int mode, uint32_t which, uint64_t key, uint32_t type, const void *payload,
                           uint32_t len) {
  rk__lane *l;
  if (ctx == NULL) return RK_EINVAL;
  l = ctx->lane;
  if (lane_sync(ctx, SITE_SEND) != 0) return RK_ESTATE;
  if (ctx->thread == 0) l->coll_rc = send_lead(l, mode, which, key, type, payload, len);
  if (lane_sync(ctx, SITE_SEND) != 0) return RK_ESTATE;
  return l->coll_rc;
}

int rk_send_to(rk_ctx *ctx, uint32_t route, uint32_t type, const void *payload, uint32_t len) {
  return send_collective(ctx, 0, route, 0, type, payload, len);
}
int rk_send_to_key(rk_ctx *ctx, uint32_t route, uint64_t key, uint32_t type, const void *payload, uint32_t len) {
  return send_collective(ctx, 1, route, key, type, payload, len);
}
int rk_publish(rk_ctx *ctx, uint32_t topic, uint32_t type, const void *payload, uint32_t len) {
  return send_collective(ctx, 2, topic, 0, type, payload, len);
}
int rk_forward(rk_ctx *ctx, uint32_t route, uint32_t type, const void *payload, uint32_t len) {
  return send_collective(ctx, 3, route, 0, type, payload, len);
}
int rk_forward_key(rk_ctx *ctx, uint32_t route, uint64_t key, uint32_t type, const void *payload, uint32_t len) {
  return send_collective(ctx, 4, route, key, type, payload, len);
}

/* A K2K reply to a request this lane passed on: into the outbox (room was checked), as this
 * kernel's reply to the host's request. The receive merge of its stamp happened already, so the
 * stamp it gets at the flush is above the last stage's. */
static void forward_reply(rk__lane *l, const rk_envelope *e) {
  rk_envelope *o = (rk_envelope *)reply_slot(l);
  if (l->owed > 0) l->owed--;
  if (o == NULL) { /* cannot happen: process_batch checked the room */
    rk__dead_letter(l->k, e, e + 1, RK_EAGAIN, "K2K reply dropped: outbox full", l->index);
    return;
  }
  memcpy(o, e, RK_ENVELOPE_SIZE + e->payload_len);
  o->flags = (uint16_t)(e->flags & RK_ENV_F_REPLY_ALLOWED);
  o->origin = 0;
  o->src = l->k->id;
  o->dst = 0;
  o->node = l->k->id;
  o->lane = (uint16_t)l->index;
  o->msg_id = lane_msg_id(l);
  reply_publish_staged(l, o);
}

/* ---------------------------------------- dispatch ------------------------------------------- */

#define RK__NOT_RUN 0x7fffffff /* run_handler: the lane broke up before the handler ran */

static uint64_t signals(const rk__lane *l);

static int run_handler(rk__lane *l, const rk_msg *m) {
  int rc;
  l->cur = m;
  l->replied = 0;
  l->sent = 0;
  l->reserved_slot = NULL;
  if (lane_sync(&l->ctxs[0], SITE_START) != 0) return RK__NOT_RUN; /* followers start on l->cur */
  rc = l->k->desc.handler(&l->ctxs[0], m);
  /* Followers done; or the barrier broke (a broken collective rule): then a follower may still be
   * in the handler, or only now starting it, on m (on the caller's stack) and its payload (an
   * inbox slot the batch releases next). The leader waits until every follower has left before m
   * goes; the followers' collectives return at once, so they leave when their handlers return. */
  if (lane_sync(&l->ctxs[0], SITE_END) != 0 && l->nthreads > 1) followers_out(l);
  l->reserved_slot = NULL; /* a reservation never committed publishes nothing */
  return rc;
}

/* The receive merge of stamp m into the kernel clock at pt_us (handle_one). A host batch may have
 * reused an earlier reading (lane_pt): one that refuses m as too far ahead is not trusted, and the
 * merge is retried with a fresh reading, so nothing is refused that a reading taken after m was
 * seen would accept (the drift check is monotone in pt). */
static int lane_merge(rk__lane *l, rk_hlc m, uint64_t pt_us, int k2k) {
  rk_clock *c = l->k->clock;
  if (rk__clock_recv_at(c, m, pt_us, NULL) == RK_OK) return RK_OK;
  if (k2k) return RK_ECLOCK;
  if (!l->pt_fresh) { /* the batch reused a reading: take one now, for the rest of the batch too */
    l->pt_read = rk_clock_physical_us(c);
    l->pt_age = 0;
    l->pt_fresh = 1;
  }
  /* pt_us is the batch's reading; l->pt_read a fresh one (taken after the batch was seen), newer
   * when an earlier message of the batch was refused under the batch's and took it */
  if (l->pt_read == pt_us) return RK_ECLOCK; /* refused under a fresh reading: refused */
  return rk__clock_recv_at(c, m, l->pt_read, NULL);
}

/* pt_us: a reading of the kernel clock's time source taken after e was seen (process_batch), or
 * for a host batch possibly an earlier one (lane_pt, lane_merge).
 * Returns 0 when e was handled (consumed), -1 when the lane is breaking up before its handler
 * could run (e stays in the inbox). */
static int handle_one(rk__lane *l, rk_envelope *e, uint64_t pt_us, int k2k) {
  rk_kernel *k = l->k;
  rk_msg m;
  int chk, rc;
  /* (every field: m.env is copied below before any use; no padding in rk_msg) */
  m.payload = NULL;
  m.len = 0;
  m.status = 0;
  chk = rk_envelope_validate(e, NULL, rk__payload_max(k), k->id);
  /* a K2K inbox takes K2K messages only; a host inbox none */
  if (chk == RK_ENV_OK && !(e->flags & RK_ENV_F_K2K) != !k2k) chk = RK_ENV_BAD_FLAGS;
  if (chk != RK_ENV_OK) {
    rk__dead_letter(k, e, e + 1, RK_ECORRUPT, rk_envelope_check_name(chk), l->index); /* (before the count) */
    count_add(k2k ? &l->status->k2k_invalid : &l->status->invalid, 1);
    rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: refused message: %s", k->name, l->index,
            rk_envelope_check_name(chk));
    /* A header that passed magic/version/flag/reserved checks is trustworthy enough to answer. */
    if (rk_lane_refusal_answered(chk)) {
      m.env = *e;
      m.env.payload_len = 0;
      error_reply(l, &m, RK_ECORRUPT);
    }
    return 0;
  }
  m.env = *e;
  m.payload = e->payload_len ? (const void *)(e + 1) : NULL;
  m.len = e->payload_len;
  if (k2k && rk_hlc_physical(e->hlc) > pt_us) l->pt_us = pt_us = rk_hlc_physical(e->hlc); /* see process_batch */
  if (lane_merge(l, e->hlc, pt_us, k2k) == RK_ECLOCK) { /* the kernel clock does not move */
    count_add(&l->status->clock_rejected, 1);
    rk__dead_letter(k, e, e + 1, RK_ECLOCK, "stamp too far ahead of the kernel's clock", l->index);
    error_reply(l, &m, RK_ECLOCK);
    return 0;
  }
  if (k2k && (e->flags & RK_ENV_F_REPLY)) { /* the answer to a request this lane passed on */
    if (e->origin == k->id) {
      forward_reply(l, e);
    } else { /* an answer for another kernel: refused, kept */
      /* the dead letter first: whoever sees the count (test_misrouted_reply) finds it */
      rk__dead_letter(k, e, e + 1, RK_ECORRUPT, "K2K reply for another kernel (origin)", l->index);
      count_add(&l->status->k2k_invalid, 1);
    }
    return 0;
  }
  rc = run_handler(l, &m);
  if (rc == RK__NOT_RUN) return -1;
  /* RK_EAGAIN with nothing replied or sent: the handler found a destination full (rk_send_to,
   * rk_forward) and asks to run again on this message later. It stays in the inbox, the lane backs
   * off and retries it: backpressure reaches the senders instead of a message being lost. */
  if (rk_lane_retry(rc, l->replied, l->sent)) {
    l->retry = 1;
    return -1;
  }
  /* What the handler's result means: the rule both loops share (lane_rules.h). A negative RK_E*
   * code is an error reply; a positive value, or 0 without a reply to a request that wants one,
   * becomes an RK_EHANDLER error reply, counted, and said in the log. */
  /* An error answer that goes back over K2K (the message continues a host request) and finds the
   * origin's K2K inbox full: as for a handler's rk_reply that found it full, the message stays and
   * runs again later; dropped, the host's call would never be answered and the origin's
   * terminate would wait for it (owed). */
  if (!l->replied && (e->flags & RK_ENV_F_K2K) && !(e->flags & RK_ENV_F_NO_REPLY) &&
      (rc < 0 || rk_lane_result_error(rc, l->replied, e->flags) != 0)) {
    int32_t c = rc < 0 ? rc : RK_EHANDLER;
    int src = k2k_reply(l, &m, e->type, RK_ENV_F_ERROR, &c, sizeof c);
    /* (run again only when the handler sent nothing: running it again would send twice) */
    if (src == RK_EAGAIN && l->sent == 0) {
      l->retry = 1;
      return -1;
    }
    if (src != RK_OK) /* the origin is gone (terminated) or unknown: counted in k2k_refused */
      rk__dead_letter(k, e, e + 1, src, "K2K error answer undeliverable", l->index);
    count_add(&l->status->handler_errors, 1);
    if (rc > 0)
      rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: handler returned %d, not 0 or a negative RK_E* code: "
              "counted as an error (RK_EHANDLER)", k->name, l->index, rc);
    else if (rc == 0)
      rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: handler returned 0 without replying to a K2K message (type "
              "%u) that continues a request: RK_EHANDLER error answer sent", k->name, l->index, e->type);
    return 0;
  }
  if (rc < 0) {
    count_add(&l->status->handler_errors, 1);
    if (!l->replied) error_reply(l, &m, rc);
  } else if (rk_lane_result_error(rc, l->replied, e->flags) != 0) {
    count_add(&l->status->handler_errors, 1);
    if (rc > 0)
      rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: handler returned %d, not 0 or a negative RK_E* code: "
              "counted as an error (RK_EHANDLER)", k->name, l->index, rc);
    else
      rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: handler returned 0 without replying to a message (type %u) "
              "that wants a reply: RK_EHANDLER error reply sent", k->name, l->index, e->type);
    if (!l->replied) error_reply(l, &m, RK_EHANDLER);
  }
  return 0;
}

/* Does the outbox have room for the reply this message may produce? */
static int outbox_room(rk__lane *l, const rk_envelope *e) {
  return !rk_lane_needs_room(e) || reply_slot(l) != NULL;
}

/* The reading of the kernel clock's time source a host batch merges and stamps with: the lane's
 * last real reading, reused for up to RK_LANE_PT_REUSE batches, then a fresh one. A reused
 * (older) reading is a valid pt for the receive merge and the send rule: the results are still
 * above every stamp the clock saw, only their physical part can lag, and the requests' own stamps
 * (each taken with a fresh reading by the sender, on the same host clock) carry it forward. A
 * merge that the older reading refuses is retried with a fresh one (lane_merge). So a lane under
 * load reads the clock once per RK_LANE_PT_REUSE batches instead of once per batch: in a round
 * trip that is ~23 ns (EPYC VM) between the request and its reply (issue 16). */
static uint64_t lane_pt(rk__lane *l) {
  if (l->pt_read == 0 || ++l->pt_age >= RK_LANE_PT_REUSE) {
    l->pt_read = rk_clock_physical_us(l->k->clock);
    l->pt_age = 0;
    l->pt_fresh = 1;
  } else {
    l->pt_fresh = 0;
  }
  return l->pt_read;
}

/* Take up to a batch from the inbox. Returns messages consumed (0: none ready). Sets *stalled
 * when a full outbox stopped it (ARCHITECTURE §3: the lane stops taking input). */
static uint32_t process_batch(rk__lane *l, rk_ring *in, int k2k, int *stalled) {
  uint64_t pos;
  uint32_t n = rk_ring_peek_n(in, RK_LANE_BATCH, &pos), i;
  /* One reading for the batch's receive merges: a fresh one, taken after the messages were
   * published (so the drift check cannot refuse a good stamp), or an earlier one reused (lane_pt;
   * a refusal is then retried with a fresh one, lane_merge). */
  /* K2K batches read no clock: on the CPU backend every kernel clock and the runtime's stamp with
   * the one host clock, so a K2K stamp's physical part is a reading of the same source taken
   * before the message was sent: at most now, and a valid pt for the merge (handle_one). A clock
   * read is ~20 ns of a ~170 ns hop (bench/k2k.c). */
  uint64_t pt_us = n ? (k2k ? l->pt_us : lane_pt(l)) : 0;
  l->pt_us = pt_us; /* the handlers' K2K sends stamp with it (k2k_header) */
  *stalled = 0;
  /* The lines of the first RK_LANE_AHEAD messages at once, then each message's lines
   * RK_LANE_AHEAD messages before it is handled; and the reply slots as far ahead in exclusive
   * state (queue/internal.h). Under load every one of these lines comes from the other side's CPU
   * (the sender wrote the request, the receiver read the reply slot on the last lap), and a
   * transfer takes longer than a message's handling: fetched one message ahead, each stalled the
   * lane (issue 16, docs/design-notes.md "throughput.echo"). Hints only. */
  for (i = 0; i < n && i < RK_LANE_AHEAD; i++) {
    rk__prefetch_slot(in, pos + i);
    if (!k2k && l->out_pending + i < l->out_room) rk__prefetchw_slot(l->outbox, l->outbox->tail + l->out_pending + i);
  }
  for (i = 0; i < n; i++) {
    rk_envelope *e = (rk_envelope *)rk_ring_slot(in, pos + i);
    if (i + RK_LANE_AHEAD < n) {
      rk__prefetch_slot(in, pos + i + RK_LANE_AHEAD);
      /* (within the room known free: a slot the receiver still reads is left alone) */
      if (!k2k && l->out_pending + RK_LANE_AHEAD < l->out_room)
        rk__prefetchw_slot(l->outbox, l->outbox->tail + l->out_pending + RK_LANE_AHEAD);
    }
    /* Told to leave (abort, a broken collective): the rest of the batch stays in the inbox, for
     * new lanes after a restart; nothing handled is seen twice. */
    if (i > 0 && ((signals(l) & RK_SIGNAL_ABORT) || lane_broken(l))) break;
    if (!outbox_room(l, e)) {
      *stalled = 1;
      break;
    }
    if (handle_one(l, e, pt_us, k2k) != 0) {
      if (l->retry) *stalled = 2;
      break;
    }
    /* A heartbeat per message, not per batch: a batch of slow messages that keeps making progress
     * must not look like a stall to the watchdog (the inbox is released only after the batch). */
    count_add(&l->status->heartbeat, 1);
  }
  if (i) {
    rk_ring_release_n(in, i); /* release: the slots were read */
    count_add(k2k ? &l->status->k2k_in : &l->status->msgs_in, i);
  }
  /* host senders may sleep waiting for room: flush_replies wakes them after the replies are out,
   * with the replies' fence; K2K senders never wait (RK_EAGAIN), so a K2K inbox needs no wake-up.
   * K2K batches read no clock (above): the flush reads one. */
  flush_replies(l, k2k ? 0 : pt_us, i && !k2k ? in : NULL);
  return i;
}

typedef struct lane_wait {
  rk__lane *l;
  uint32_t ack;
  uint32_t clock_seen;
  int consuming;
} lane_wait;

/* The host's signals word (abort bit, clock request). Acquire: pairs with the host's release RMWs
 * (abort_lanes, clock_request in kernel.c). */
static uint64_t signals(const rk__lane *l) { return rk_load_acquire_sys_u64(&l->k->ctl->host.signals); }

/* Something for the lane in the signals word: abort, or (lane 0 only: the host waits for lane 0's
 * answer alone) a clock request it has not answered. */
static int signalled(const rk__lane *l, uint32_t clock_seen) {
  uint64_t w = signals(l);
  return (w & RK_SIGNAL_ABORT) || (l->index == 0 && rk_signals_clock_req(w) != clock_seen);
}

/* Lane 0 answers a clock request: its clock now (the runtime's time source, as the kernel clock's
 * stamps), then the ack that publishes it. The CPU lanes stamp with the host clock itself, so they
 * apply no offset; the exchange runs anyway, so the host
 * side of the synchronisation (shared with the CUDA backend) is exercised and its measured offset,
 * near zero here, is a check of it. */
static uint32_t answer_clock(rk__lane *l, uint64_t sig, uint32_t seen) {
  uint32_t req = rk_signals_clock_req(sig);
  if (l->index != 0 || req == seen) return seen;
  rk_store_relaxed_sys_u64(&l->status->clock_sample_ns, rk__host_time_ns(l->k->rt));
  rk_store_release_sys_u32(&l->status->clock_ack, req); /* pairs with rk__clock_sync's acquire */
  return req;
}

/* Idle-wait predicate: a command, an abort, or (when consuming) a message. */
static int lane_ready(void *arg) {
  lane_wait *w = (lane_wait *)arg;
  rk_control_host *h = &w->l->k->ctl->host;
  uint64_t pos;
  if (rk_load_acquire_sys_u32(&h->cmd_seq) != w->ack) return 1; /* pairs with the host's release */
  if (signalled(w->l, w->clock_seen)) return 1;
  if (w->consuming && rk_ring_peek_n(w->l->inbox, 1, &pos)) {
    rk__prefetch_slot(w->l->inbox, pos); /* its lines travel while the wait returns (queue/internal.h) */
    return 1;
  }
  /* K2K producers wake the lane through its host inbox's futex (rk__k2k_push) */
  if (w->consuming && k2k_of(w->l) && rk_ring_peek_n(k2k_of(w->l), 1, &pos)) return 1;
  return 0;
}

/* Outbox-full wait predicate: room again, or a command/abort. */
static int outbox_ready(void *arg) {
  lane_wait *w = (lane_wait *)arg;
  rk_control_host *h = &w->l->k->ctl->host;
  uint64_t pos;
  if (rk_load_acquire_sys_u32(&h->cmd_seq) != w->ack) return 1;
  if (signalled(w->l, w->clock_seen)) return 1;
  return rk_ring_reserve_n(w->l->outbox, 1, &pos) > 0;
}

/* Lane-driven progress (docs/mpi.md, "Lane-driven progress"): an idle lane of a graph whose
 * transport has the poll hook (remote.h) runs the transport's bounded passes itself between polls
 * of its inboxes, for as long as the transport says its conversation is live, so that a message
 * for this lane that the pass receives is in its inbox without a handoff to the transport's
 * thread (which shares the lane's core under mpirun's binding). This is the lane's worker loop
 * between messages, never a handler. Returns 1 when the lane has something to do (or its barrier
 * is broken: the worker loop then leaves), 0 to wait as usual. Its first RK_LANE_DRIVE_POLLS
 * passes pause between them, the later ones yield where the lane can run on one CPU only (else
 * they pause too): what a driving lane waits for is the peer rank, on another core, so the one-CPU rule of its waits (yield instead of spinning: ring_wait.c)
 * does not hold for those first passes, as for the bridge thread's own first idle passes
 * (SPIN_PASSES, bridge.c); the yields after them let the rank's other threads (its host feeding a
 * stream) have the core. Measured (docs/mpi.md, "Lane-driven progress"): yielding from the first
 * pass, the hop was 4.4-6.5x raw MPI; pausing the first 64, 1.7-2.9x. */
#define RK_LANE_DRIVE_POLLS 64
static int lane_drive(rk__lane *l, lane_wait *w) {
  uint32_t i;
  for (i = 0;; i++) {
    /* lane_broken: the worker loop checks it (and leaves) only between messages, and a live
     * conversation could keep this loop from returning there (review of lanedrive, finding 4) */
    if (lane_ready(w) || lane_broken(l)) return 1;
    if (!rk__graph_poll(l->k->graph, l, 0)) return lane_ready(w);
    if (i >= RK_LANE_DRIVE_POLLS && rk__one_cpu())
      rk__wait_yield();
    else
      rk_cpu_relax();
  }
}

/* ---------------------------------------- K2K deadlock ------------------------------------- */

#define RK_K2K_DEADLOCK_NS 100000000ull   /* a lane retrying this long looks for a cycle */
#define RK_K2K_DEADLOCK_CONFIRM_NS 2000000 /* and confirms it after this long */

/* Messages a lane has finished (statistics words, single writer: its leader). */
static uint64_t lane_progress(const rk__lane *x) {
  return rk_load_relaxed_sys_u64(&x->status->msgs_in) + rk_load_relaxed_sys_u64(&x->status->k2k_in);
}

/* Is l on a cycle of lanes, each retrying a message whose send found the next one's K2K inbox full,
 * none finishing anything? A bounded inbox cannot break such a cycle: every lane waits for room
 * only the next can make, and the next waits too (a cycle of kernels whose inboxes filled with
 * messages for each other). The chain is read twice, RK_K2K_DEADLOCK_CONFIRM_NS apart: the same
 * lanes waiting on the same lanes, with no message finished anywhere on it, is a deadlock; any
 * change is progress. why receives the cycle. (Lanes of a graph are freed only once every lane of
 * the graph has left or was abandoned: the pointers stay valid while l runs.) */
/* A cycle visits each lane of the graph at most once: up to RK_GRAPH_MAX_KERNELS * RK_MAX_LANES
 * (the chain was capped at RK_GRAPH_MAX_KERNELS: a keyed cycle through two 64-lane kernels was
 * longer, and its lanes retried forever instead of faulting). On the heap: a rare path. */
#define RK_K2K_CHAIN_MAX ((uint32_t)RK_GRAPH_MAX_KERNELS * RK_MAX_LANES)
static int k2k_deadlocked(rk__lane *l, char *why, size_t len) {
  rk__lane **chain = (rk__lane **)malloc(RK_K2K_CHAIN_MAX * sizeof *chain);
  uint64_t *prog = (uint64_t *)malloc(RK_K2K_CHAIN_MAX * sizeof *prog);
  uint32_t n = 0, i;
  size_t off = 0;
  rk__lane *x = l;
  int found = 0;
  if (chain == NULL || prog == NULL) goto out; /* (no memory: looked at again later) */
  do {
    if (n == RK_K2K_CHAIN_MAX) goto out;
    chain[n] = x;
    prog[n++] = lane_progress(x);
    x = __atomic_load_n(&x->waits_on, __ATOMIC_RELAXED);
    if (x == NULL) goto out; /* someone on the chain is not waiting: it will make room */
    for (i = 1; i < n; i++)
      if (chain[i] == x) goto out; /* a cycle that l only leads into: its own lanes will say */
  } while (x != l);
  rk__sleep_ns(RK_K2K_DEADLOCK_CONFIRM_NS);
  for (i = 0; i < n; i++)
    if (__atomic_load_n(&chain[i]->waits_on, __ATOMIC_RELAXED) != chain[(i + 1) % n] ||
        lane_progress(chain[i]) != prog[i])
      goto out;
  for (i = 0; i <= n && off + 1 < len; i++) {
    int w = snprintf(why + off, len - off, "%s%s lane %u", i ? " -> " : "", chain[i % n]->k->name, chain[i % n]->index);
    if (w < 0) break;
    off += (size_t)w;
  }
  found = 1;
out:
  free(chain);
  free(prog);
  return found;
}

static void follower_main(struct rk_ctx *ctx) {
  rk__lane *l = ctx->lane;
  for (;;) {
    if (lane_barrier(l, ctx->thread, SITE_START) != 0) break; /* the leader has set l->cur, or left */
    (void)l->k->desc.handler(ctx, l->cur);
    (void)lane_barrier(l, ctx->thread, SITE_END); /* broken: the next start says so */
  }
  follower_leaves(l);
}

static void lane_main(void *arg) {
  struct rk_ctx *ctx = (struct rk_ctx *)arg;
  rk__lane *l = ctx->lane;
  rk_kernel *k = l->k;
  rk_control_host *h = &k->ctl->host;
  rk_lane_status *st = l->status;
  uint32_t ack = 0, state = RK_STATE_LAUNCHED, clock_seen = 0;
  uint64_t drain_to = 0;
  int was_stalled = 0;

  if (ctx->thread != 0) {
    follower_main(ctx);
    rk__cpu_thread_done(k);
    return;
  }
  (void)rk__one_cpu_refresh(); /* its waits yield instead of spinning on one CPU (ring_wait.c) */
  rk_store_relaxed_sys_u32(&st->state, state);
  rk_store_relaxed_sys_u64(&st->clock_sample_ns, rk__host_time_ns(k->rt)); /* launch calibration */
  rk_store_release_sys_u32(&st->checked_in, 1); /* pairs with the host's acquire in launch */

  for (;;) {
    uint32_t seq = rk_load_acquire_sys_u32(&h->cmd_seq); /* pairs with the host's release */
    uint32_t got = 0;
    int stalled = 0;
    if (seq != ack) {
      /* acquire: pairs with the host's release of cmd (kernel.c command), for drain_to below: this
       * may be a later command than seq's */
      uint32_t cmd = rk_load_acquire_sys_u32(&h->cmd);
      if (cmd == RK_CMD_TERMINATE)
        drain_to = rk_load_relaxed_sys_u64(&l->cmd->drain_to); /* ordered by cmd's acquire */
      state = rk_lane_after_command(state, cmd); /* the rule both loops share (lane_rules.h) */
      rk_store_relaxed_sys_u32(&st->state, state);
      ack = seq;
      rk_store_release_sys_u32(&st->ack_seq, ack); /* pairs with the host's acquire in command() */
    }
    {
      uint64_t sig = signals(l);
      if (sig & RK_SIGNAL_ABORT) break;
      if (lane_broken(l)) break; /* a broken collective rule: the kernel faulted */
      clock_seen = answer_clock(l, sig, clock_seen);
    }
    if (state == RK_STATE_ACTIVE || state == RK_STATE_TERMINATING) {
      rk_ring *kin = k2k_of(l);
      int s_host = 0, s_k2k = 0;
      /* Fair: a batch (at most RK_LANE_BATCH) from the host inbox, then one from the K2K inbox.
       * A host message that is to run again (RK_EAGAIN: a K2K destination full) does not hold up
       * the K2K inbox: the replies to what this lane passed on come back there, and the kernel
       * that is to send them may be the one whose full inbox the host message waits on. */
      /* the edge for the K2K deadlock check is this pass's own (a handler that asks to run again
       * for its own reason after an earlier full send must not publish that old edge: a false
       * RK_EDEADLK when the lane it named retries into this one) */
      l->blocked_on = NULL;
      got = process_batch(l, l->inbox, 0, &s_host); /* beats the heartbeat per message */
      if (kin && s_host != 1) got += process_batch(l, kin, 1, &s_k2k);
      stalled = (s_host == 1 || s_k2k == 1) ? 1 : (s_host || s_k2k) ? 2 : 0;
      l->retry = 0; /* said in stalled */
      if (state == RK_STATE_TERMINATING && (int64_t)(l->inbox->head - drain_to) >= 0) { /* host inbox drained */
        if (kin == NULL) break;
        /* Then the K2K inbox: once the answers to what this lane passed on are back, it closes to
         * senders and is drained to the close (upstream kernels are terminated first:
         * rk_graph_terminate), so nothing accepted is lost. */
        if (!l->k2k_closed && l->owed <= 0) {
          (void)rk_ring_close(kin, &l->k2k_final);
          l->k2k_closed = 1;
        }
        if (l->k2k_closed && (int64_t)(rk_ring_head(kin) - l->k2k_final) >= 0) break;
      }
    }
    if (stalled == 2) { /* a handler asked to be run again later (a K2K destination was full) */
      uint64_t now = rk__now_ns();
      rk_store_relaxed_sys_u64(&st->heartbeat, rk_load_relaxed_sys_u64(&st->heartbeat) + 1); /* not a stall */
      if (l->blocked_on != __atomic_load_n(&l->waits_on, __ATOMIC_RELAXED)) {
        __atomic_store_n(&l->waits_on, l->blocked_on, __ATOMIC_RELAXED); /* read by other lanes' checks */
        l->retry_since_ns = now;
      } else if (l->retry_since_ns == 0) {
        l->retry_since_ns = now;
      } else if (!l->deadlock_said && now - l->retry_since_ns > RK_K2K_DEADLOCK_NS) {
        char why[256];
        if (k2k_deadlocked(l, why, sizeof why)) {
          /* Never a silent hang: the kernel faults (callers, receivers and senders learn it now);
           * terminate (which aborts the lanes) or restart (state kept) get out of it. */
          l->deadlock_said = 1;
          rk__kernel_fault(k, RK_EDEADLK, "K2K deadlock: a cycle of lanes each waiting for room in the next one's "
                           "full K2K inbox (%s); give the cycle's inboxes room for the messages it holds", why);
        } else {
          l->retry_since_ns = now; /* look again later */
        }
      }
      /* a pass of the graph's transport first (lane-driven progress: it may take what waits in a
       * full outbound ring, or bring the credits it waits for) */
      if (k->graph) { /* and, sleeping, it drives no more: the transport's thread takes over now */
        (void)rk__graph_poll(k->graph, l, 0);
        (void)rk__graph_poll(k->graph, l, 1);
      }
      rk__sleep_ns(RK_LANE_RETRY_NS);
      continue;
    }
    if (l->retry_since_ns) { /* the retry is over */
      __atomic_store_n(&l->waits_on, NULL, __ATOMIC_RELAXED);
      l->retry_since_ns = 0;
    }
    if (stalled) {
      lane_wait w = {l, ack, clock_seen, 0};
      if (!was_stalled) count_add(&st->outbox_stalls, 1);
      was_stalled = 1;
      rk_store_relaxed_sys_u64(&st->heartbeat, rk_load_relaxed_sys_u64(&st->heartbeat) + 1);
      (void)rk__ring_wait(l->outbox, 0, outbox_ready, &w, RK_LANE_PARK_NS);
      continue;
    }
    was_stalled = 0;
    if (got) continue;
    {
      lane_wait w = {l, ack, clock_seen, state == RK_STATE_ACTIVE || state == RK_STATE_TERMINATING};
      if (w.consuming && k->graph && lane_drive(l, &w)) continue;
      (void)rk__ring_wait(l->inbox, 1, lane_ready, &w, RK_LANE_PARK_NS);
    }
  }
  if (k->graph) (void)rk__graph_poll(k->graph, l, 1); /* this lane drives the transport no more */

  /* No more replies from this lane: close the outbox so receivers can tell "drained" apart from
   * "not yet", and wake them. */
  flush_replies(l, 0, NULL);
  rk_ring_close(l->outbox, NULL);
  rk_ring_wake_all(l->outbox);
  if (l->nthreads > 1) {
    /* Release the followers wherever they wait, and wait until each is out of the handler: then
     * TERMINATED means the lane runs no application code any more. */
    barrier_break(&l->barrier);
    followers_out(l);
  }
  rk_store_release_sys_u32(&st->state, RK_STATE_TERMINATED); /* pairs with the host's acquire */
  rk_ring_wake_all(l->inbox);
  rk__cpu_thread_done(k);
}

/* Release what cpu_start set up for a lane's threads (they have all left). */
static void lane_release(rk__lane *l) {
  barrier_destroy(&l->barrier);
  free(l->threads);
  free(l->ctxs);
  l->threads = NULL;
  l->ctxs = NULL;
  l->started = 0;
}

void rk__cpu_thread_done(rk_kernel *k) {
  rk_runtime *rt;
  uint32_t i;
  /* acq_rel: the last to drop sees everything the others did to k before it frees k */
  if (__atomic_sub_fetch(&k->thread_refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  /* Last: k was abandoned by the host (cpu_abandon dropped its reference) and every lane thread
   * has left. Nobody else refers to k: free it, and let go of the runtime it kept. */
  rt = k->rt;
  for (i = 0; i < k->lanes; i++) lane_release(&k->lane[i]);
  rk__kernel_free(k);
  rk__runtime_release(rt);
}

static int cpu_start(rk_kernel *k) {
  uint32_t i, t;
  int rc;
  for (i = 0; i < k->lanes; i++) {
    rk__lane *l = &k->lane[i];
    l->nthreads = k->threads;
    l->started = 0;
    l->out_pending = 0;
    l->out_room = 0; /* reply_slot asks the ring */
    l->reserved_slot = NULL;
    /* l->owed is kept (zero at launch: calloc): after a restart the answers to requests the old
     * lanes passed on are still on their way back, and a terminate waits for them */
    l->blocked_on = NULL; /* the K2K deadlock check starts afresh (a restart) */
    l->pt_read = 0;       /* the first host batch reads the clock */
    /* relaxed atomic: other lanes' checks and a transport's (rk_graph_lane_wait, the MPI bridge's
     * thread) may read it at any time, the restart included */
    __atomic_store_n(&l->waits_on, NULL, __ATOMIC_RELAXED);
    l->retry_since_ns = 0;
    l->deadlock_said = 0;
    l->threads = (uv_thread_t *)rk__calloc(l->nthreads, sizeof *l->threads);
    l->ctxs = (struct rk_ctx *)rk__calloc(l->nthreads, sizeof *l->ctxs);
    if (l->threads == NULL || l->ctxs == NULL)
      return rk__fail(k->rt, RK_ENOMEM, "kernel %s: cannot allocate the threads of lane %u", k->name, i);
    if ((rc = barrier_init(&l->barrier, l->nthreads)) != RK_OK)
      return rk__fail(k->rt, rc, "kernel %s: cannot create the barrier of lane %u", k->name, i);
    for (t = 0; t < l->nthreads; t++) {
      l->ctxs[t].k = k;
      l->ctxs[t].lane = l;
      l->ctxs[t].thread = t;
    }
    for (t = 0; t < l->nthreads; t++) {
      int uvrc;
      /* Counted before the thread exists, so the leader, leaving, waits for exactly the threads
       * that were started; a thread that could not be created is uncounted. */
      uv_mutex_lock(&l->barrier.lock);
      l->barrier.alive++;
      uv_mutex_unlock(&l->barrier.lock);
      __atomic_add_fetch(&k->thread_refs, 1, __ATOMIC_RELAXED); /* ordered by the thread's creation */
      if ((uvrc = rk__thread_create(&l->threads[t], lane_main, &l->ctxs[t])) != 0) {
        __atomic_sub_fetch(&k->thread_refs, 1, __ATOMIC_RELAXED);
        uv_mutex_lock(&l->barrier.lock); /* the leader may be running */
        l->barrier.alive--;
        uv_cond_broadcast(&l->barrier.cond);
        uv_mutex_unlock(&l->barrier.lock);
        /* The lane is incomplete: its barrier can never fill. Broken, it lets a leader that took a
         * message already (a restart into ACTIVE) return without running the handler (the
         * message stays queued); the threads already started are told to leave through the abort
         * word by the caller. */
        barrier_break(&l->barrier);
        return rk__fail(k->rt, RK_ESYS, "kernel %s: cannot start thread %u of lane %u: %s", k->name, t, i,
                        uv_strerror(uvrc));
      }
      l->started++;
    }
  }
  return RK_OK;
}

/* uv_thread_join returns once a thread exited: the exit is always confirmed. Called after every
 * lane reported TERMINATED (its threads are leaving) or after an abort at launch. */
static int cpu_join(rk_kernel *k) {
  uint32_t i, t;
  for (i = 0; i < k->lanes; i++) {
    rk__lane *l = &k->lane[i];
    for (t = 0; t < l->started; t++) uv_thread_join(&l->threads[t]);
    lane_release(l);
  }
  return RK_OK;
}

/* The host gives up on k's lanes (a handler that never returned): the threads are detached, and
 * the last of them to leave frees k (rk__cpu_thread_done), keeping the runtime alive until then.
 * Threads that have left already are joined (their resources go back). */
static void cpu_abandon(rk_kernel *k) {
  uint32_t i, t;
  __atomic_add_fetch(&k->rt->refs, 1, __ATOMIC_RELAXED); /* dropped by the last lane thread */
  for (i = 0; i < k->lanes; i++) {
    rk__lane *l = &k->lane[i];
    for (t = 0; t < l->started; t++) (void)pthread_detach(l->threads[t]); /* uv_thread_t is pthread_t */
  }
  rk__cpu_thread_done(k); /* the host's reference */
}

/* Shared memory of the CPU backend is the heap: rings and control blocks, zeroed, line-aligned. */
static void *cpu_alloc(rk_runtime *rt, size_t n) {
  void *p;
  n = (n + RK_LINE - 1) & ~(size_t)(RK_LINE - 1);
  p = rk__aligned_alloc(RK_LINE, n);
  if (p == NULL) {
    rk__fail(rt, RK_ENOMEM, "out of memory (%zu bytes)", n);
    return NULL;
  }
  memset(p, 0, n);
  return p;
}

static void cpu_free(rk_runtime *rt, void *p, size_t n) {
  (void)rt;
  (void)n;
  free(p);
}

const rk_backend_ops rk__cpu_backend = {"cpu", cpu_alloc, cpu_free, cpu_start, cpu_join, 0, cpu_abandon, 1, NULL, NULL, NULL, NULL, NULL,
                                        NULL, NULL};
