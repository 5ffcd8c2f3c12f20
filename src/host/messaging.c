/* messaging.c — sending to kernels and receiving their replies.
 *
 * Send (ARCHITECTURE §3): check the arguments and the declared type, pick the lane (key or
 * round-robin), claim an inbox slot (only after capacity was seen; a full inbox waits or refuses
 * before anything is claimed), build the envelope in the slot, stamp it with a tick of the runtime
 * clock, copy the payload, publish, wake the lane if it is parked.
 *
 * Receive: each lane's outbox has one consumer at a time — whoever holds that lane's drain_lock
 * (an rk_call caller, an rk_recv caller, or the service thread for callbacks). The drainer hands
 * each reply to the rk_call waiter whose request id it names, or else to its own caller, the
 * callback, or the kernel's pending list; every reply received merges its stamp into the runtime
 * clock. Nothing is dropped except a reply to an rk_call whose caller gave up (counted).
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
         r->seq_offset == sizeof(rk_ring) + capacity * k->slot_size;
}

void rk__latency_add(rk_kernel *k, uint64_t ns) {
  uint32_t b = 0;
  while (b + 1 < RK_LATENCY_BUCKETS && (ns >> (b + 1)) != 0) b++;
  add(&k->latency_hist[b], 1);
}

/* ---------------------------------------- send ----------------------------------------------- */

static int check_send(rk_kernel *k, uint32_t type, const void *payload, uint32_t len) {
  uint32_t i, s;
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
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (s == RK_STATE_TERMINATING || s == RK_STATE_TERMINATED)
    return rk__fail(k->rt, RK_ECLOSED, "send to %s: kernel is %s", k->name, rk_state_name((rk_lifecycle)s));
  if (__atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) != 0)
    return rk__fail(k->rt, RK_ESTATE, "send to %s: kernel is FAULTED", k->name);
  return RK_OK;
}

/* Build an envelope in its slot; stamp is a tick of the runtime clock (send rule), taken by the
 * caller (one clock read and one CAS per claim, however many slots it covers). */
static void fill(rk_kernel *k, rk__lane *l, rk_envelope *e, uint32_t type, const void *payload, uint32_t len,
                 uint32_t flags, uint64_t id, rk_hlc stamp) {
  uint16_t f = (uint16_t)(flags & RK_SEND_NO_REPLY ? RK_ENV_F_NO_REPLY : 0);
  rk_envelope_init(e, type, len, f);
  e->msg_id = id;
  e->src = 0;
  e->dst = k->id;
  e->node = k->rt->node_id;
  e->lane = (uint16_t)l->index;
  e->hlc = stamp;
  if (len) memcpy(e + 1, payload, len);
  if (flags & RK_SEND_CHECKSUM) rk_envelope_seal(e, e + 1);
}

/* Claim n (>= 1) slots of lane l's inbox, honouring the backpressure policy. Returns the count
 * claimed (the caller must publish all) or an error; nothing is claimed on error. */
static int claim(rk_kernel *k, rk__lane *l, uint32_t n, uint32_t flags, uint64_t *pos) {
  int64_t timeout = k->send_timeout_ns;
  uint64_t start = 0;
  int reject = k->backpressure == RK_BACKPRESSURE_REJECT || (flags & RK_SEND_NOWAIT);
  for (;;) {
    int got;
    if (!lane_ring_ok(k, l->inbox, k->inbox_cap, RK_RING_MPSC)) {
      if (__atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) == 0)
        rk__kernel_fault(k, RK_ECORRUPT, "lane %u inbox: ring header damaged (no longer the ring launch made in %zu bytes)",
                         l->index, k->inbox_stride);
      return rk__fail(k->rt, RK_ECORRUPT, "send to %s: lane %u inbox is damaged (kernel FAULTED)", k->name, l->index);
    }
    got = rk_ring_mpsc_reserve_n(l->inbox, n, pos);
    if (got > 0) return got;
    if (got == RK_ECLOSED) return rk__fail(k->rt, RK_ECLOSED, "send to %s: kernel is terminating", k->name);
    if (got < 0) return got;
    if (reject) {
      add(&k->send_rejected, 1);
      return rk__fail(k->rt, RK_EAGAIN, "send to %s: lane %u inbox full", k->name, l->index);
    }
    if (start == 0) start = rk__now_ns();
    {
      int64_t left = timeout;
      int rc;
      if (timeout >= 0) {
        uint64_t el = rk__now_ns() - start;
        if (el >= (uint64_t)timeout) {
          add(&k->send_timeouts, 1);
          return rk__fail(k->rt, RK_ETIMEDOUT, "send to %s: lane %u inbox full for %lld ms", k->name, l->index,
                          (long long)(timeout / 1000000));
        }
        left = timeout - (int64_t)el;
      }
      rc = rk_ring_wait_writable(l->inbox, left); /* one wait for the whole timeout: not sliced */
      if (rc == RK_ECLOSED) return rk__fail(k->rt, RK_ECLOSED, "send to %s: kernel is terminating", k->name);
    }
  }
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

static int send_on(rk_kernel *k, rk__lane *l, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                   uint64_t id) {
  uint64_t pos;
  rk_hlc stamp;
  int rc = claim(k, l, 1, flags, &pos);
  if (rc < 0) return rc;
  rk_clock_tick(k->rt->clock, &stamp); /* send rule on the runtime clock */
  fill(k, l, (rk_envelope *)rk_ring_slot(l->inbox, pos), type, payload, len, flags, id, stamp);
  rk_ring_mpsc_commit(l->inbox, pos);
  rk_ring_notify_consumer(l->inbox);
  add(&k->sent, 1);
  return RK_OK;
}

static int send_common(rk_kernel *k, int keyed, uint64_t key, uint32_t type, const void *payload, uint32_t len,
                       uint32_t flags, uint64_t *msg_id) {
  uint64_t id;
  int rc;
  if (k == NULL) return RK_EINVAL;
  if ((rc = check_send(k, type, payload, len)) != RK_OK) {
    if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
    return rc;
  }
  id = rk__msg_id(k->rt);
  rc = send_on(k, &k->lane[lane_for(k, keyed, key)], type, payload, len, flags, id);
  if (rc == RK_OK && msg_id) *msg_id = id;
  return rc;
}

int rk_send(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags, uint64_t *msg_id) {
  return send_common(k, 0, 0, type, payload, len, flags, msg_id);
}

int rk_send_key(rk_kernel *k, uint64_t key, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                uint64_t *msg_id) {
  return send_common(k, 1, key, type, payload, len, flags, msg_id);
}

int rk_send_batch(rk_kernel *k, rk_send_item *items, uint32_t n) {
  uint32_t i = 0, j;
  int rc = RK_OK;
  if (k == NULL || (items == NULL && n > 0)) return RK_EINVAL;
  if (n == 0) return 0;
  /* Runs of consecutive items bound for the same lane share one claim. Round-robin items of a run
   * all go to the lane of its first item (ordering within the batch is kept per lane). */
  while (i < n) {
    uint32_t lane_idx = lane_for(k, items[i].flags & RK_SEND_KEYED, items[i].key), run = 1;
    rk__lane *l = &k->lane[lane_idx];
    uint64_t pos;
    int got;
    if ((rc = check_send(k, items[i].type, items[i].payload, items[i].len)) != RK_OK) {
      if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
      break;
    }
    while (i + run < n && run < 64) {
      const rk_send_item *it = &items[i + run];
      if ((it->flags & RK_SEND_KEYED) && lane_for(k, 1, it->key) != lane_idx) break;
      /* one claim honours one backpressure policy: a run does not mix NOWAIT and waiting items */
      if ((it->flags & RK_SEND_NOWAIT) != (items[i].flags & RK_SEND_NOWAIT)) break;
      if (check_send(k, it->type, it->payload, it->len) != RK_OK) break;
      run++;
    }
    got = claim(k, l, run, items[i].flags, &pos);
    if (got < 0) {
      rc = got;
      break;
    }
    {
      /* One clock read and one CAS stamp the whole run (send rule, consecutive stamps), and one
       * RMW numbers it (ids as rk__msg_id's, bit 63 clear). */
      rk_hlc stamp;
      uint64_t id = __atomic_add_fetch(&k->rt->next_msg_id, (uint64_t)got, __ATOMIC_RELAXED) - (uint64_t)got + 1;
      rk__clock_tick_n(k->rt->clock, (uint32_t)got, rk_clock_physical_us(k->rt->clock), &stamp);
      for (j = 0; j < (uint32_t)got; j++) {
        rk_send_item *it = &items[i + j];
        it->msg_id = (id + j) & ~RK__CALL_BIT;
        fill(k, l, (rk_envelope *)rk_ring_slot(l->inbox, pos + j), it->type, it->payload, it->len, it->flags,
             it->msg_id, stamp + j);
      }
    }
    rk_ring_mpsc_commit_n(l->inbox, pos, (uint32_t)got);
    rk_ring_notify_consumer(l->inbox);
    add(&k->sent, (uint64_t)got);
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

static void to_msg(const rk_envelope *e, const void *payload, rk_msg *m, void *buf, uint32_t buf_len,
                   int clock_bad) {
  uint32_t n = e->payload_len < buf_len ? e->payload_len : buf_len;
  m->env = *e;
  m->len = n;
  m->payload = n ? buf : NULL;
  if (n) memcpy(buf, payload, n);
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
  uv_mutex_unlock(&k->reply_lock);
}

/* Merge the stamps of the n valid replies among env[] (chk[i] == RK_ENV_OK) into the runtime clock,
 * with one clock read: normally one merge of the newest stamp (each reply then counts as received:
 * the clock ends above all of them before any is handed out); when that one is refused as too far
 * ahead, each reply is merged on its own and bad[i] marks the refused ones (RK_ECLOCK, delivered
 * all the same). Refused replies are not merged: their stamps mean nothing. Returns 1 when bad[]
 * was filled. */
static int merge_batch(rk_kernel *k, const rk_envelope *env, const uint8_t *chk, uint32_t n, uint8_t *bad) {
  rk_clock *c = k->rt->clock;
  uint64_t pt = rk_clock_physical_us(c); /* read after the replies were published: no false refusal */
  rk_hlc newest = 0;
  uint32_t i;
  for (i = 0; i < n; i++)
    if (chk[i] == RK_ENV_OK && env[i].hlc > newest) newest = env[i].hlc;
  if (newest == 0 || rk__clock_recv_at(c, newest, pt, NULL) == RK_OK) return 0; /* the drift check is monotone */
  for (i = 0; i < n; i++) bad[i] = chk[i] == RK_ENV_OK && rk__clock_recv_at(c, env[i].hlc, pt, NULL) == RK_ECLOCK;
  return 1;
}

/* The outbox of lane l failed lane_ring_ok (drain_lock held): fault the kernel (its replies can
 * no longer be read) and hand every rk_call waiting on this lane an RK_ECORRUPT notice, so none of
 * them waits for its timeout. */
static void outbox_corrupt(rk_kernel *k, rk__lane *l) {
  rk_waiter *w, **pw;
  int woke = 0;
  if (__atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) == 0) /* once, not at every later drain */
    rk__kernel_fault(k, RK_ECORRUPT, "lane %u outbox: ring header damaged (no longer the ring launch made in %zu bytes)",
                   l->index, k->outbox_stride);
  uv_mutex_lock(&k->reply_lock);
  for (pw = &k->waiters; (w = *pw) != NULL;) {
    if (w->lane != l->index) {
      pw = &w->next;
      continue;
    }
    *pw = w->next;
    memset(&w->out->env, 0, sizeof w->out->env);
    w->out->env.correlation_id = w->id;
    w->out->env.src = k->id;
    w->out->env.lane = (uint16_t)l->index;
    to_notice(&w->out->env, w->out);
    w->corrupt = 1;
    /* pairs with the caller's acquire in call_common: *w->out is written; after this store the
     * drainer never touches w (it lives on the caller's stack) */
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    woke = 1;
  }
  reply_unlock(k, &woke);
}

/* Drain the outbox of lane l (drain_lock held). Each reply goes to its rk_call waiter; else, while
 * fewer than `want` went to the caller and nothing is pending, into direct[*got] (its payload into
 * buf + *got * buf_len); else to the callback; else to the pending list. A refused reply (see the
 * top of this file) goes nowhere, or, when its ids can be believed, goes the same way as an
 * RK_ECORRUPT notice. Per batch of slots: one check of the ring, one copy and validation of each
 * envelope, one clock read and merge (merge_batch), one hold of reply_lock (released around
 * callbacks). Returns the number of replies taken from the ring, or RK_ECORRUPT when the outbox
 * itself is damaged (the kernel is then FAULTED, nothing more is read from it, and the rk_call
 * waiters of this lane have their notices). */
int rk__drain_lane(rk_kernel *k, rk__lane *l, rk_msg *direct, void *buf, uint32_t buf_len, uint32_t want,
                   uint32_t *got, rk_recv_cb cb, void *cb_user) {
  uint64_t pos;
  uint32_t n, i, taken = 0, ndirect = 0;
  int woke = 0;
  if (got) *got = 0;
  if (direct == NULL || got == NULL) want = 0;
  for (;;) {
    rk_envelope env[RK_DRAIN_BATCH]; /* the envelopes, copied out of their slots and validated */
    uint8_t chk[RK_DRAIN_BATCH], bad[RK_DRAIN_BATCH];
    uint64_t now_ns = 0, received = 0, late = 0, invalid = 0;
    const char *why = NULL; /* the first refusal's reason, for the log */
    int any_bad;
    if (!lane_ring_ok(k, l->outbox, k->outbox_cap, RK_RING_SPSC)) {
      outbox_corrupt(k, l);
      if (got) *got = ndirect;
      return RK_ECORRUPT;
    }
    n = rk_ring_peek_n(l->outbox, RK_DRAIN_BATCH, &pos);
    if (n == 0) break;
    /* Copy first, then validate the copy and use only the copy: a lane that rewrote a published
     * slot meanwhile changes payload bytes at worst, never the length the copy was checked with. */
    for (i = 0; i < n; i++) {
      const uint8_t *slot = rk_ring_slot(l->outbox, pos + i);
      memcpy(&env[i], slot, sizeof env[i]);
      chk[i] = (uint8_t)rk_envelope_validate_reply(&env[i], slot + RK_ENVELOPE_SIZE, rk__payload_max(k), k->id);
    }
    any_bad = merge_batch(k, env, chk, n, bad);
    uv_mutex_lock(&k->reply_lock);
    for (i = 0; i < n; i++) {
      const rk_envelope *e = &env[i];
      const void *payload = rk_ring_slot(l->outbox, pos + i) + RK_ENVELOPE_SIZE;
      int clock_bad = any_bad && bad[i], notice = 0;
      rk_waiter *w, **pw;
      if (chk[i] != RK_ENV_OK) {
        invalid++;
        if (why == NULL) why = rk_envelope_check_name(chk[i]);
        if (chk[i] < RK_ENV_BAD_LENGTH) continue; /* a damaged header: its ids mean nothing, no one is told */
        notice = 1;
      }
      for (pw = &k->waiters; (w = *pw) != NULL; pw = &w->next)
        if (w->id == e->correlation_id) break;
      if (w && w->lane != l->index) {
        /* It names an rk_call sent on another lane: a lane answers only its own requests, so its
         * correlation id is damaged. Refused (never delivered to that caller), no one is told. */
        if (!notice) {
          invalid++;
          if (why == NULL) why = "reply names an rk_call sent on another lane";
        }
        continue;
      }
      if (w) {
        *pw = w->next;
        if (notice) {
          to_notice(e, w->out);
          w->corrupt = 1;
        } else {
          to_msg(e, payload, w->out, w->buf, w->buf_len, clock_bad);
          if (now_ns == 0) now_ns = rk__now_ns();
          rk__latency_add(k, now_ns - w->sent_ns);
          add(&k->received, 1); /* before done: a caller's stats after rk_call returns include it */
        }
        /* pairs with the caller's acquire in call_common: *w->out is written; after this store the
         * drainer never touches w (it lives on the caller's stack) */
        __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
        woke = 1;
        continue;
      }
      if (e->correlation_id & RK__CALL_BIT) {
        if (!notice) late++; /* its caller timed out: discard, counted (a refused one: as refused) */
        continue;
      }
      if (ndirect < want && k->pend_head == NULL) {
        rk_msg *m = &direct[ndirect];
        if (notice) {
          to_notice(e, m);
        } else {
          to_msg(e, payload, m, (uint8_t *)buf + (size_t)ndirect * buf_len, buf_len, clock_bad);
          received++;
        }
        if (++ndirect == want) {
          i++;
          break;
        }
        continue;
      }
      if (cb && k->pend_head == NULL) {
        rk_msg m;
        reply_unlock(k, &woke);
        if (notice) {
          to_notice(e, &m);
        } else {
          m.env = *e;
          m.payload = e->payload_len ? payload : NULL;
          m.len = e->payload_len;
          m.status = reply_status(e, payload, clock_bad);
          add(&k->received, 1);
        }
        cb(k, &m, cb_user);
        uv_mutex_lock(&k->reply_lock);
        continue;
      }
      {
        uint32_t len = notice ? 0 : e->payload_len;
        rk_pending *p = (rk_pending *)malloc(sizeof *p + len);
        if (p == NULL) {
          /* Keep the reply in the ring rather than lose it: stop draining here. */
          rk__log(k->rt, RK_LOG_ERROR, "kernel %s: out of memory while queueing a reply", k->name);
          if (notice) invalid--; /* counted again when it is taken */
          break;
        }
        p->next = NULL;
        p->notice = notice;
        if (notice)
          to_notice(e, &p->msg);
        else
          to_msg(e, payload, &p->msg, p->data, len, clock_bad);
        if (k->pend_tail)
          k->pend_tail->next = p;
        else
          k->pend_head = p;
        k->pend_tail = p;
        k->pend_count++;
        woke = 1;
      }
    }
    reply_unlock(k, &woke);
    if (received) add(&k->received, received);
    if (late) add(&k->late_replies, late);
    if (invalid) {
      add(&k->replies_invalid, invalid);
      rk__log(k->rt, RK_LOG_WARN, "kernel %s lane %u: refused %llu corrupt repl%s (first: %s)", k->name, l->index,
              (unsigned long long)invalid, invalid == 1 ? "y" : "ies", why ? why : "?");
    }
    if (i) {
      rk_ring_release_n(l->outbox, i);
      rk_ring_notify_producers(l->outbox); /* a lane stalled on a full outbox resumes */
      taken += i;
    }
    if (i < n || (want && ndirect == want)) break;
  }
  if (got) *got = ndirect;
  return (int)taken;
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

int rk_recv(rk_kernel *k, rk_msg *msg, void *buf, uint32_t buf_len, int64_t timeout_ns) {
  int rc = rk_recv_batch(k, msg, buf, buf_len, 1, timeout_ns);
  return rc > 0 ? RK_OK : rc; /* 0 on success, as the header promises (the batch returns a count) */
}

int rk_recv_batch(rk_kernel *k, rk_msg *msgs, void *bufs, uint32_t buf_len, uint32_t n, int64_t timeout_ns) {
  uint64_t start = 0, idle_since = 0; /* idle_since: when the outbox went quiet, 0 if it has not */
  uint32_t got_total = 0, spins = 0, first_lane;
  int corrupt = 0; /* a lane's outbox was found damaged (rk__drain_lane) */
  if (k == NULL || msgs == NULL || n == 0 || (bufs == NULL && buf_len > 0)) return RK_EINVAL;
  /* pairs with the release stores of cb_active in rk_recv_start/rk_recv_stop (any thread) */
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE))
    return rk__fail(k->rt, RK_ESTATE, "rk_recv on %s: callbacks are started", k->name);
  first_lane = __atomic_fetch_add(&k->rr, 0, __ATOMIC_RELAXED);
  for (;;) {
    uint32_t i;
    /* 1. replies queued by other drainers */
    uv_mutex_lock(&k->reply_lock);
    while (got_total < n && pop_pending(k, &msgs[got_total], (uint8_t *)bufs + (size_t)got_total * buf_len, buf_len))
      got_total++;
    uv_mutex_unlock(&k->reply_lock);
    /* 2. drain lanes directly into the caller's buffers */
    for (i = 0; i < k->lanes && got_total < n; i++) {
      rk__lane *l = &k->lane[(first_lane + i) % k->lanes];
      if (uv_mutex_trylock(&l->drain_lock) != 0) continue;
      {
        uint32_t got = 0;
        if (rk__drain_lane(k, l, &msgs[got_total], (uint8_t *)bufs + (size_t)got_total * buf_len, buf_len,
                           n - got_total, &got, NULL, NULL) == RK_ECORRUPT)
          corrupt = 1;
        got_total += got;
      }
      uv_mutex_unlock(&l->drain_lock);
    }
    if (got_total > 0) return (int)got_total;
    if (corrupt) return rk__fail(k->rt, RK_ECORRUPT, "rk_recv on %s: a lane's outbox is damaged (kernel FAULTED)", k->name);
    /* Before the poll's RK_EAGAIN: a poller must learn that nothing will ever come. */
    if (all_lanes_done(k)) {
      uv_mutex_lock(&k->reply_lock);
      i = k->pend_head == NULL;
      uv_mutex_unlock(&k->reply_lock);
      if (i) return RK_ECLOSED;
    }
    if (timeout_ns == 0) return RK_EAGAIN;
    if (start == 0) start = rk__now_ns();
    if (timeout_ns > 0 && rk__now_ns() - start >= (uint64_t)timeout_ns) return RK_ETIMEDOUT;
    /* 3. wait: on a single-lane kernel park on its outbox (woken by the lane's publish); else
     * back off (spin, yield, short sleeps). */
    if (k->lanes == 1 && uv_mutex_trylock(&k->lane[0].drain_lock) == 0) {
      int64_t left = 1000000; /* re-check pending/terminate at least every ms */
      if (timeout_ns > 0) {
        uint64_t el = rk__now_ns() - start;
        if ((uint64_t)timeout_ns - el < (uint64_t)left) left = (int64_t)((uint64_t)timeout_ns - el);
      }
      (void)rk__ring_wait_readable_slice(k->lane[0].outbox, k->outbox_stride, left, &idle_since);
      uv_mutex_unlock(&k->lane[0].drain_lock);
    } else if (++spins < 256) {
      rk_cpu_relax();
    } else if (spins < 512) {
      sched_yield();
    } else {
      rk__sleep_ns(20000);
    }
  }
}

static int call_common(rk_kernel *k, int keyed, uint64_t key, uint32_t type, const void *req, uint32_t req_len,
                       rk_msg *reply, void *buf, uint32_t buf_len, int64_t timeout_ns) {
  rk_waiter w, **pw;
  rk__lane *l;
  uint64_t start, idle_since = 0; /* idle_since: when the outbox went quiet, 0 if it has not */
  int rc;
  if (k == NULL || reply == NULL || (buf == NULL && buf_len > 0)) return RK_EINVAL;
  if ((rc = check_send(k, type, req, req_len)) != RK_OK) {
    if (rc != RK_ECLOSED && rc != RK_ESTATE) add(&k->send_invalid, 1);
    return rc;
  }
  memset(&w, 0, sizeof w);
  w.id = rk__msg_id(k->rt) | RK__CALL_BIT;
  w.out = reply;
  w.buf = buf;
  w.buf_len = buf_len;
  l = &k->lane[lane_for(k, keyed, key)];
  w.lane = l->index; /* only this lane's replies may name it (rk__drain_lane) */
  /* Register before sending: the reply may arrive before send_on returns. */
  uv_mutex_lock(&k->reply_lock);
  w.next = k->waiters;
  k->waiters = &w;
  uv_mutex_unlock(&k->reply_lock);
  start = w.sent_ns = rk__now_ns();
  rc = send_on(k, l, type, req, req_len, 0, w.id);
  if (rc == RK_OK) {
    int first = 1; /* the first pass follows the send at once: no clock read for the timeout yet */
    for (;;) {
      /* pairs with the drainer's release store of done: *reply is complete */
      if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) break;
      if (!first && timeout_ns >= 0 && rk__now_ns() - start >= (uint64_t)timeout_ns) {
        rc = RK_ETIMEDOUT;
        break;
      }
      if (uv_mutex_trylock(&l->drain_lock) == 0) {
        /* We are this outbox's consumer: drain (delivering to every waiter), then park on it. */
        for (;;) {
          int64_t left = 1000000;
          rk__drain_lane(k, l, NULL, NULL, 0, 0, NULL, NULL, NULL);
          if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) break; /* pairs with the drainer's release */
          if (timeout_ns >= 0) {
            uint64_t el = first ? 0 : rk__now_ns() - start;
            if (el >= (uint64_t)timeout_ns) break;
            if ((uint64_t)timeout_ns - el < (uint64_t)left) left = (int64_t)((uint64_t)timeout_ns - el);
          }
          first = 0;
          if (rk__ring_wait_readable_slice(l->outbox, k->outbox_stride, left, &idle_since) == RK_ECLOSED) {
            rk__drain_lane(k, l, NULL, NULL, 0, 0, NULL, NULL, NULL);
            break;
          }
        }
        uv_mutex_unlock(&l->drain_lock);
        /* Hand the outbox over: callers of this lane asleep on reply_cond retry the lock. One about
         * to sleep is not counted yet and retries after its timed wait (200 us) at worst. */
        if (__atomic_load_n(&k->sleepers, __ATOMIC_RELAXED)) {
          uv_mutex_lock(&k->reply_lock);
          uv_cond_broadcast(&k->reply_cond);
          uv_mutex_unlock(&k->reply_lock);
        }
        if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) break; /* pairs with the drainer's release */
        if (rk_load_acquire_sys_u32(&k->hstate) == RK_STATE_TERMINATED && rk_ring_closed(l->outbox, NULL) &&
            rk_ring_count(l->outbox) == 0) {
          rc = RK_ECLOSED; /* the lane exited without answering (aborted) */
          break;
        }
      } else {
        /* Someone else drains this outbox and will hand us our reply (done is set under
         * reply_lock, and the drainer broadcasts when it sees sleepers). */
        uv_mutex_lock(&k->reply_lock);
        if (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) {
          __atomic_add_fetch(&k->sleepers, 1, __ATOMIC_RELAXED); /* ordered by reply_lock */
          uv_cond_timedwait(&k->reply_cond, &k->reply_lock, 200000);
          __atomic_sub_fetch(&k->sleepers, 1, __ATOMIC_RELAXED);
        }
        uv_mutex_unlock(&k->reply_lock);
      }
      first = 0;
    }
  }
  /* Leave the waiter list (a late reply then finds no waiter and is counted, not delivered). A
   * waiter marked done was unlinked by its drainer, which no longer touches it. */
  if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) { /* pairs with the drainer's release */
    rc = RK_OK;
  } else {
    uv_mutex_lock(&k->reply_lock);
    for (pw = &k->waiters; *pw; pw = &(*pw)->next)
      if (*pw == &w) {
        *pw = w.next;
        break;
      }
    if (__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) rc = RK_OK; /* delivered at the deadline */
    uv_mutex_unlock(&k->reply_lock);
  }
  if (rc == RK_OK && w.corrupt) /* written before done's release, read after its acquire */
    rc = rk__fail(k->rt, RK_ECORRUPT, "call to %s: the reply was corrupt and refused (replies_invalid)", k->name);
  else if (rc == RK_OK && (reply->env.flags & RK_ENV_F_ERROR))
    rc = RK_EHANDLER;
  if (rc == RK_ETIMEDOUT) rk__fail(k->rt, RK_ETIMEDOUT, "call to %s: no reply within %lld us", k->name,
                                   (long long)(timeout_ns / 1000));
  return rc;
}

int rk_call(rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply, void *buf,
            uint32_t buf_len, int64_t timeout_ns) {
  return call_common(k, 0, 0, type, req, req_len, reply, buf, buf_len, timeout_ns);
}

int rk_call_key(rk_kernel *k, uint64_t key, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply,
                void *buf, uint32_t buf_len, int64_t timeout_ns) {
  return call_common(k, 1, key, type, req, req_len, reply, buf, buf_len, timeout_ns);
}

/* ---------------------------------------- callbacks ------------------------------------------ */

int rk_recv_start(rk_kernel *k, rk_recv_cb cb, void *user) {
  if (k == NULL || cb == NULL) return RK_EINVAL;
  uv_mutex_lock(&k->cb_lock);
  if (k->cb_active) {
    uv_mutex_unlock(&k->cb_lock);
    return rk__fail(k->rt, RK_ESTATE, "rk_recv_start on %s: already started", k->name);
  }
  k->cb = cb;
  k->cb_user = user;
  __atomic_store_n(&k->cb_active, 1, __ATOMIC_RELEASE); /* lanes read it to wake the service */
  uv_mutex_unlock(&k->cb_lock);
  rk__service_wake(k->rt);
  return RK_OK;
}

int rk_recv_stop(rk_kernel *k) {
  if (k == NULL) return RK_EINVAL;
  uv_mutex_lock(&k->cb_lock); /* the service thread holds it while it dispatches */
  if (!k->cb_active) {
    uv_mutex_unlock(&k->cb_lock);
    return rk__fail(k->rt, RK_ESTATE, "rk_recv_stop on %s: not started", k->name);
  }
  __atomic_store_n(&k->cb_active, 0, __ATOMIC_RELEASE);
  k->cb = NULL;
  k->cb_user = NULL;
  uv_mutex_unlock(&k->cb_lock);
  return RK_OK;
}

/* Service thread: deliver queued and new replies of k to its callback. */
void rk__dispatch_callbacks(rk_kernel *k) {
  uint32_t i;
  uv_mutex_lock(&k->cb_lock);
  if (k->cb_active && k->cb) {
    /* replies parked on the pending list first, in order */
    for (;;) {
      rk_pending *p;
      uv_mutex_lock(&k->reply_lock);
      p = k->pend_head;
      if (p) {
        k->pend_head = p->next;
        if (k->pend_head == NULL) k->pend_tail = NULL;
        k->pend_count--;
      }
      uv_mutex_unlock(&k->reply_lock);
      if (p == NULL) break;
      p->msg.payload = p->msg.len ? p->data : NULL;
      if (!p->notice) add(&k->received, 1); /* a notice was counted as refused (replies_invalid) */
      k->cb(k, &p->msg, k->cb_user);
      free(p);
    }
    for (i = 0; i < k->lanes; i++) {
      rk__lane *l = &k->lane[i];
      if (uv_mutex_trylock(&l->drain_lock) != 0) continue;
      rk__drain_lane(k, l, NULL, NULL, 0, 0, NULL, k->cb, k->cb_user);
      uv_mutex_unlock(&l->drain_lock);
    }
  }
  uv_mutex_unlock(&k->cb_lock);
}
