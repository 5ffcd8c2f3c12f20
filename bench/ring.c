/* ring.c — `rk-bench ring`: ringkernel's rings against Concurrency Kit's ck_ring and a
 * mutex+condvar bounded queue, all moving the same 64-byte struct through 1024 slots.
 *
 *   ring.spsc     ops_per_s   one producer thread -> one consumer thread, on different CPUs
 *                 rtt_p50_ns  ping-pong: thread A pushes into `ping`, thread B pops it and pushes
 *                 rtt_p99_ns  it into `pong`, A pops it; one sample per round trip (rdtsc)
 *                 rtt_mean_ns mean of the round trips at or below p99
 *   ring.mpsc.2p  ops_per_s   2 producer threads -> one consumer
 *   ring.mpsc.4p  ops_per_s   4 producer threads -> one consumer
 *   ring.spsc.msg96 rtt_*   the same ping-pong with 96-byte messages (a 64-byte envelope + rtt.echo's
 *                 32-byte payload: what the library's echo round trip carries) in 128-byte slots
 * impls: ringkernel (rk_ring_push/pop, rk_ring_mpsc_push), ringkernel.batch (push_n/pop_n,
 * mpsc_push_n, batches of 32), ck_ring (CK_RING_PROTOTYPE typed ring: enqueue/dequeue_spsc,
 * enqueue/dequeue_mpsc), mutex (pthread mutex + two condvars);
 * prototypes (issue 16, not library code): proto.seqslot* — ring.h's SPSC ring with the per-slot
 * sequence word moved into the slot itself (see "Prototypes" below); floor (rtt only) — one cache
 * line bounced between the two CPUs, rtt.echo's floor, timed in the same rounds.
 *
 * Fairness: the same message struct and size, the same 1024 slots, the same CPU placement, the
 * same wait policy (consumers spin with one pause per empty poll; producers spin with pause on a
 * full ring, and yield after 64 pauses only when there are more threads than CPUs), the same
 * validation (consumers check every message's sequence number). Each impl's hot loop is compiled
 * separately with its calls inlined (no function pointers in the loops). */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "ringkernel/error.h"
#include "ringkernel/queue.h"
#include "ringkernel/ring.h"

#if defined(RK_HAVE_CK)
#include <ck_ring.h>
#endif

#define ALWAYS static inline __attribute__((always_inline))

/* The message: 64 bytes, one line. `stop` ends the echo thread of the round-trip test. */
struct rkb_msg {
  uint64_t seq;
  uint32_t src;
  uint32_t stop;
  uint8_t payload[48];
};
_Static_assert(sizeof(struct rkb_msg) == RK_BENCH_MSG_SIZE, "64-byte message");
typedef struct rkb_msg rkb_msg;
/* A message buffer for the 96-byte ring.spsc.msg96 kinds (the 64-byte kinds use its first 64). */
#define RKB_MSG96 96u
typedef union rkb_wide {
  rkb_msg m;
  uint8_t b[RKB_MSG96];
} rkb_wide;

#if defined(RK_HAVE_CK)
CK_RING_PROTOTYPE(rkb, rkb_msg)
typedef struct ckq {
  ck_ring_t ring __attribute__((aligned(128)));
  rkb_msg *buf; /* 1024 slots, 128-byte aligned */
} ckq;
#endif

/* ---- the mutex baseline: a bounded ring under one mutex, condvars signalled only when someone
 * waits (the usual efficient form) ---- */
typedef struct mxq {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  uint64_t head, tail;
  uint32_t cap, wait_cons, wait_prod;
  rkb_msg *buf;
} mxq;

ALWAYS void mxq_push(mxq *q, const rkb_msg *m) {
  pthread_mutex_lock(&q->mu);
  while (q->tail - q->head == q->cap) {
    q->wait_prod++;
    pthread_cond_wait(&q->not_full, &q->mu);
    q->wait_prod--;
  }
  memcpy(&q->buf[q->tail & (q->cap - 1)], m, sizeof *m);
  q->tail++;
  if (q->wait_cons) pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

ALWAYS void mxq_pop(mxq *q, rkb_msg *m) {
  pthread_mutex_lock(&q->mu);
  while (q->tail == q->head) {
    q->wait_cons++;
    pthread_cond_wait(&q->not_empty, &q->mu);
    q->wait_cons--;
  }
  memcpy(m, &q->buf[q->head & (q->cap - 1)], sizeof *m);
  q->head++;
  if (q->wait_prod) pthread_cond_signal(&q->not_full);
  pthread_mutex_unlock(&q->mu);
}

/* ---- impl kinds: each one gets its own copy of every loop ---- */
enum {
  K_RK,        /* ringkernel, SPSC ring, rk_ring_push / rk_ring_pop */
  K_RKB,       /* ringkernel.batch, SPSC ring, rk_ring_push_n / rk_ring_pop_n */
  K_CK,        /* ck_ring, ck_ring_enqueue_spsc_rkb / ck_ring_dequeue_spsc_rkb */
  K_MX,        /* mutex */
  K_RK_MPSC,   /* ringkernel, MPSC ring, rk_ring_mpsc_push / rk_ring_pop */
  K_RKB_MPSC,  /* ringkernel.batch, MPSC ring, rk_ring_mpsc_push_n / rk_ring_pop_n */
  K_CK_MPSC,   /* ck_ring, ck_ring_enqueue_mpsc_rkb / ck_ring_dequeue_mpsc_rkb */
  K_MX_MPSC,   /* mutex (the same queue; it is MPMC anyway) */
  /* prototypes of issue 16 (ring.spsc, 64-byte messages): the sequence word inside the slot */
  K_PS,        /* proto.seqslot: 128-byte slot, word at 0, message at 8 (spills into line 2) */
  K_PSB,       /* proto.seqslot.batch: the same layout, push_n / pop_n */
  K_PSL,       /* proto.seqslot.line: 64-byte slot, word at 0, message shortened to 56 bytes */
  K_PST,       /* proto.seqslot.tail: 128-byte slot, message at 0, word in the last 8 bytes */
  /* ring.spsc.msg96: 96-byte messages (envelope + echo payload), 128-byte slots, rtt only */
  K_RK96,      /* ringkernel: rk_ring_push / rk_ring_pop, 128-byte slots */
  K_PS96,      /* proto.seqslot: word at 0, message at 8..103 (both lines) */
  K_PST96,     /* proto.seqslot.tail: message at 0..95, word at 120 (line 2: payload tail + word) */
  K_FLOOR,     /* floor: one line bounced between the CPUs (rtt only; no queue) */
  K_COUNT
};
static const char *const k_impl_name[K_COUNT] = {
    "ringkernel", "ringkernel.batch", "ck_ring", "mutex",  /* SPSC */
    "ringkernel", "ringkernel.batch", "ck_ring", "mutex",  /* MPSC: the same names */
    "proto.seqslot", "proto.seqslot.batch", "proto.seqslot.line", "proto.seqslot.tail",
    "ringkernel", "proto.seqslot", "proto.seqslot.tail", /* ring.spsc.msg96 */
    "floor"};
#define K_IS_BATCH(K) ((K) == K_RKB || (K) == K_RKB_MPSC || (K) == K_PSB)
#define K_IS_MPSC(K) ((K) >= K_RK_MPSC && (K) <= K_MX_MPSC)
#define K_IS_PROTO(K) ((K) >= K_PS && (K) <= K_PST96 && (K) != K_RK96)
#define K_IS_96(K) ((K) >= K_RK96 && (K) <= K_PST96)
/* The bench a kind's round trip is reported under. */
static const char *k_rtt_bench(int K) { return K_IS_96(K) ? "ring.spsc.msg96" : "ring.spsc"; }
/* Bytes a kind moves per message. */
#define K_LEN(K) (K_IS_96(K) ? RKB_MSG96 : (K) == K_PSL ? 56u : RK_BENCH_MSG_SIZE)

/* ---- Prototypes (issue 16): ring.h's SPSC ring with the sequence word inside the slot ----
 * Not library code: a measurement of whether moving the per-slot sequence word from ring.h's
 * separate array (8 words per line, after the slots) into the slot's own lines pays, before anyone
 * changed the ring format. ring.h has since taken the word into the slot ([word 0..7][reserved
 * 8..15][message 16..]: `ringkernel` is proto.seqslot's layout with the message 8 bytes later, in
 * 128-byte slots); the prototypes stay as the record of the choice (docs/design-notes.md).
 * Everything but the layout is rk_ring's: the header's lines (producer
 * line: tail, claim, prod_head; consumer line: head; 128-byte lines, as RK_LINE), the producer's
 * cached head refreshed only when it says full, publication by a store-release of the word =
 * position + 1 after the slot is written, the consumer's load-acquire of the word and the signed
 * difference test (rk_ring_seq_published), the store-release of head after the read, the relaxed
 * store of tail, the closed check on the producer's own line; the same calls of the bench loops and
 * the same PAUSE per empty or full poll. The differences: the geometry is a compile-time constant
 * per kind (rk_ring reads slot_size and the offsets from its configuration line, which stays in
 * both caches), and the slots are 128 bytes (64 for .line). Layouts (slot bytes):
 *   proto.seqslot       [word 0..7][message 8..71 | 8..103 for msg96] in 128: the word first, the
 *                       message spilling into the slot's second line (64-byte message) or filling
 *                       both (96) — a ring whose slot is word + envelope + payload
 *   proto.seqslot.line  [word 0..7][message 8..63] in 64: the message shortened to 56 bytes, so
 *                       word and message are one line (the floor's shape; a 56-byte envelope)
 *   proto.seqslot.tail  [message 0..63 | 0..95][... word 120..127] in 128: the envelope stays at
 *                       the slot's start (line-aligned, handed out in place), the word in the
 *                       slot's last 8 bytes — with a 64-byte message alone in the second line, with
 *                       96 bytes next to the payload's tail */
#define P_SLOT(K) ((K) == K_PSL ? 64u : 128u)
#define P_SEQ(K) (((K) == K_PST || (K) == K_PST96) ? 120u : 0u)
#define P_MSG(K) (((K) == K_PST || (K) == K_PST96) ? 0u : 8u)
#define P_CLOSED (1ull << 63) /* RK_RING_CLOSED */
typedef struct pring {
  /* line 0: configuration */
  uint8_t *slots __attribute__((aligned(128))); /* capacity * P_SLOT bytes, 128-byte aligned */
  uint64_t mask;
  /* line 1: producer side */
  volatile uint64_t tail __attribute__((aligned(128))); /* producer's index; relaxed, observers */
  volatile uint64_t claim;                              /* only its closed bit is read */
  volatile uint64_t prod_head;                          /* producer's cache of head */
  /* line 2: consumer side */
  volatile uint64_t head __attribute__((aligned(128))); /* store-release by the consumer */
  uint8_t pad2[120];
} pring;

ALWAYS volatile uint64_t *p_seq(int K, pring *p, uint64_t pos) {
  return (volatile uint64_t *)(p->slots + (size_t)(pos & p->mask) * P_SLOT(K) + P_SEQ(K));
}
ALWAYS uint8_t *p_msg(int K, pring *p, uint64_t pos) {
  return p->slots + (size_t)(pos & p->mask) * P_SLOT(K) + P_MSG(K);
}
/* rk_ring__spsc_free: the acquire pairs with the consumer's store-release of head (p_release). */
ALWAYS uint64_t p_free(pring *p, uint64_t t, uint64_t want) {
  uint64_t h = p->prod_head;
  if (RK_BENCH_CAPACITY - (t - h) < want) {
    h = __atomic_load_n(&p->head, __ATOMIC_ACQUIRE);
    p->prod_head = h;
  }
  return RK_BENCH_CAPACITY - (t - h);
}
/* rk_ring_push / rk_ring_push_n: copy, then publish each word with a store-release (pairs with the
 * consumer's load-acquire in p_peek: the slot's bytes were written before). */
ALWAYS int p_push_n(int K, pring *p, const void *msgs, uint32_t n) {
  uint64_t t = p->tail, avail;
  uint32_t k, i;
  if (p->claim & P_CLOSED) return -1;
  avail = p_free(p, t, n ? n : 1);
  k = (uint32_t)(avail < n ? avail : n);
  for (i = 0; i < k; i++)
    memcpy(p_msg(K, p, t + i), (const uint8_t *)msgs + (size_t)i * K_LEN(K), K_LEN(K));
  for (i = 0; i < k; i++) __atomic_store_n(p_seq(K, p, t + i), t + i + 1, __ATOMIC_RELEASE);
  if (k) __atomic_store_n(&p->tail, t + k, __ATOMIC_RELAXED); /* orders nothing: observers */
  return (int)k;
}
/* rk_ring_peek_n: the acquire pairs with the producer's store-release of the word. */
ALWAYS uint32_t p_peek(int K, pring *p, uint32_t n, uint64_t *pos) {
  uint64_t h = p->head;
  uint32_t k = 0;
  *pos = h;
  while (k < n && (int64_t)(__atomic_load_n(p_seq(K, p, h + k), __ATOMIC_ACQUIRE) - (h + k + 1)) >= 0)
    k++;
  return k;
}
/* rk_ring_release_n: pairs with the producer's load-acquire of head (the slots were read). */
ALWAYS void p_release(pring *p, uint32_t k) { __atomic_store_n(&p->head, p->head + k, __ATOMIC_RELEASE); }
ALWAYS int p_pop_n(int K, pring *p, void *buf, uint32_t n) {
  uint64_t pos;
  uint32_t k = p_peek(K, p, n, &pos), i;
  for (i = 0; i < k; i++) memcpy((uint8_t *)buf + (size_t)i * K_LEN(K), p_msg(K, p, pos + i), K_LEN(K));
  if (k) p_release(p, k);
  return (int)k;
}

static pring *pring_create(int K) {
  pring *p = aligned_alloc(128, sizeof *p);
  uint64_t i;
  if (!p) return NULL;
  memset(p, 0, sizeof *p);
  p->mask = RK_BENCH_CAPACITY - 1;
  p->slots = aligned_alloc(128, (size_t)RK_BENCH_CAPACITY * P_SLOT(K));
  if (!p->slots) {
    free(p);
    return NULL;
  }
  memset(p->slots, 0, (size_t)RK_BENCH_CAPACITY * P_SLOT(K));
  /* rk_ring_init's rule: position i is published when its word is i + 1; before the first lap the
   * word of slot i holds i + 1 - capacity ("not yet" by signed difference) */
  for (i = 0; i < RK_BENCH_CAPACITY; i++) *p_seq(K, p, i) = i + 1 - RK_BENCH_CAPACITY;
  return p;
}
static void pring_destroy(pring *p) {
  if (!p) return;
  free(p->slots);
  free(p);
}

/* ---- floor: rtt.echo's floor (bench/rtt.c), one line (a word + 32 bytes copied in and back),
 * run inside ring.spsc's round-trip rounds so that its figure is from the same minutes ---- */
typedef struct floor_line {
  volatile uint64_t seq __attribute__((aligned(128))); /* odd: request, even: reply, ~0: stop */
  uint8_t data[32];
  uint8_t pad[88];
} floor_line;

typedef struct queue {
  int kind;
  rk_ring *rk;
  pring *pr;       /* prototypes */
  floor_line *fl;  /* floor */
#if defined(RK_HAVE_CK)
  ckq *ck;
#endif
  mxq *mx;
} queue;

static int queue_create(queue *q, int kind) {
  memset(q, 0, sizeof *q);
  q->kind = kind;
  switch (kind) {
    case K_RK:
    case K_RKB:
    case K_RK_MPSC:
    case K_RKB_MPSC: {
      /* 128-byte slots: the slot's 16-byte sequence word and the 64-byte message */
      int rc = rk_ring_create(&q->rk, RK_BENCH_CAPACITY, 128, K_IS_MPSC(kind) ? RK_RING_MPSC : RK_RING_SPSC);
      uint32_t i;
      if (rc != RK_OK) return rc;
      for (i = 0; i < RK_BENCH_CAPACITY; i++) memset(rk_ring_slot(q->rk, i), 0, rk_ring_msg_max(q->rk));
      return 0;
    }
    case K_RK96: {
      int rc = rk_ring_create(&q->rk, RK_BENCH_CAPACITY, 128, RK_RING_SPSC);
      uint32_t i;
      if (rc != RK_OK) return rc;
      for (i = 0; i < RK_BENCH_CAPACITY; i++) memset(rk_ring_slot(q->rk, i), 0, rk_ring_msg_max(q->rk));
      return 0;
    }
    case K_PS:
    case K_PSB:
    case K_PS96:
      q->pr = pring_create(K_PS); /* the same layout, message length aside */
      return q->pr ? 0 : RK_ENOMEM;
    case K_PSL:
      q->pr = pring_create(K_PSL);
      return q->pr ? 0 : RK_ENOMEM;
    case K_PST:
    case K_PST96:
      q->pr = pring_create(K_PST);
      return q->pr ? 0 : RK_ENOMEM;
    case K_FLOOR:
      q->fl = aligned_alloc(128, sizeof *q->fl);
      if (!q->fl) return RK_ENOMEM;
      memset(q->fl, 0, sizeof *q->fl);
      return 0;
#if defined(RK_HAVE_CK)
    case K_CK:
    case K_CK_MPSC:
      q->ck = aligned_alloc(128, sizeof *q->ck);
      if (!q->ck) return RK_ENOMEM;
      memset(q->ck, 0, sizeof *q->ck);
      q->ck->buf = aligned_alloc(128, (size_t)RK_BENCH_CAPACITY * sizeof(rkb_msg));
      if (!q->ck->buf) return RK_ENOMEM;
      memset(q->ck->buf, 0, (size_t)RK_BENCH_CAPACITY * sizeof(rkb_msg));
      ck_ring_init(&q->ck->ring, RK_BENCH_CAPACITY);
      return 0;
#endif
    case K_MX:
    case K_MX_MPSC:
      q->mx = aligned_alloc(128, (sizeof *q->mx + 127) & ~(size_t)127);
      if (!q->mx) return RK_ENOMEM;
      memset(q->mx, 0, sizeof *q->mx);
      pthread_mutex_init(&q->mx->mu, NULL);
      pthread_cond_init(&q->mx->not_empty, NULL);
      pthread_cond_init(&q->mx->not_full, NULL);
      q->mx->cap = RK_BENCH_CAPACITY;
      q->mx->buf = aligned_alloc(128, (size_t)RK_BENCH_CAPACITY * sizeof(rkb_msg));
      if (!q->mx->buf) return RK_ENOMEM;
      memset(q->mx->buf, 0, (size_t)RK_BENCH_CAPACITY * sizeof(rkb_msg));
      return 0;
    default:
      return RK_EINVAL;
  }
}

static void queue_destroy(queue *q) {
  if (q->rk) rk_ring_destroy(q->rk);
  pring_destroy(q->pr);
  free(q->fl);
#if defined(RK_HAVE_CK)
  if (q->ck) {
    free(q->ck->buf);
    free(q->ck);
  }
#endif
  if (q->mx) {
    pthread_mutex_destroy(&q->mx->mu);
    pthread_cond_destroy(&q->mx->not_empty);
    pthread_cond_destroy(&q->mx->not_full);
    free(q->mx->buf);
    free(q->mx);
  }
  memset(q, 0, sizeof *q);
}

/* One message in: 1 on success, 0 when full (the mutex queue waits instead). */
ALWAYS int op_push(int K, queue *q, const rkb_msg *m) {
  switch (K) {
    case K_RK:
      return rk_ring_push(q->rk, m, RK_BENCH_MSG_SIZE) == RK_OK;
    case K_RK96:
      return rk_ring_push(q->rk, m, RKB_MSG96) == RK_OK; /* m points into an rkb_wide */
    case K_PS:
    case K_PSL:
    case K_PST:
    case K_PS96:
    case K_PST96:
      return p_push_n(K, q->pr, m, 1) == 1;
    case K_RK_MPSC:
      return rk_ring_mpsc_push(q->rk, m, RK_BENCH_MSG_SIZE) == RK_OK;
#if defined(RK_HAVE_CK)
    case K_CK:
      return ck_ring_enqueue_spsc_rkb(&q->ck->ring, q->ck->buf, (rkb_msg *)m);
    case K_CK_MPSC:
      return ck_ring_enqueue_mpsc_rkb(&q->ck->ring, q->ck->buf, (rkb_msg *)m);
#endif
    case K_MX:
    case K_MX_MPSC:
      mxq_push(q->mx, m);
      return 1;
    default:
      abort();
  }
}
/* One message out: 1 when one was read, 0 when empty (the mutex queue waits instead). */
ALWAYS int op_pop(int K, queue *q, rkb_msg *m) {
  switch (K) {
    case K_RK:
    case K_RK_MPSC:
      return rk_ring_pop(q->rk, m, RK_BENCH_MSG_SIZE) == RK_OK;
    case K_RK96:
      return rk_ring_pop(q->rk, m, RKB_MSG96) == RK_OK; /* m points into an rkb_wide */
    case K_PS:
    case K_PSL:
    case K_PST:
    case K_PS96:
    case K_PST96:
      return p_pop_n(K, q->pr, m, 1) == 1;
#if defined(RK_HAVE_CK)
    case K_CK:
      return ck_ring_dequeue_spsc_rkb(&q->ck->ring, q->ck->buf, m);
    case K_CK_MPSC:
      return ck_ring_dequeue_mpsc_rkb(&q->ck->ring, q->ck->buf, m);
#endif
    case K_MX:
    case K_MX_MPSC:
      mxq_pop(q->mx, m);
      return 1;
    default:
      abort();
  }
}
/* Batch in/out (ringkernel.batch only): the number moved, 0 when full/empty. */
ALWAYS int op_push_n(int K, queue *q, const rkb_msg *m, uint32_t n) {
  int k = K == K_PSB ? p_push_n(K_PS, q->pr, m, n)
        : K == K_RKB ? rk_ring_push_n(q->rk, m, RK_BENCH_MSG_SIZE, n)
                     : rk_ring_mpsc_push_n(q->rk, m, RK_BENCH_MSG_SIZE, n);
  if (k < 0) abort(); /* RK_ECLOSED / RK_EMSGSIZE cannot happen here */
  return k;
}
ALWAYS int op_pop_n(int K, queue *q, rkb_msg *m, uint32_t n) {
  int k;
  k = K == K_PSB ? p_pop_n(K_PS, q->pr, m, n) : rk_ring_pop_n(q->rk, m, RK_BENCH_MSG_SIZE, n);
  if (k < 0) abort();
  return k;
}

/* Producer back-off on a full ring: pause; when threads outnumber CPUs, yield every 64 pauses so
 * the consumer (or a preempted producer) can run. The same for every impl. */
ALWAYS void wait_full(unsigned *spins, int may_yield) {
  if (may_yield && ++*spins >= 64) {
    *spins = 0;
    sched_yield();
  } else {
    rk_bench_relax();
  }
}

/* ------------------------------------ throughput ---------------------------------------------- */
/* A trial is time-bounded: producers push until the main thread raises `stop`, then each pushes one
 * stop message; the consumer runs until it has seen every producer's stop message (per-producer
 * FIFO: all of that producer's messages came before). Nothing is left in flight, every impl does
 * the same, and a pathological impl cannot stretch a trial past its budget by more than the
 * drain. */
typedef struct ctl {
  volatile uint32_t stop __attribute__((aligned(128))); /* written once by the main thread */
  uint8_t pad[124];
} ctl;

typedef struct worker {
  queue *q;
  rk_bench_barrier *start;
  ctl *ctl;
  uint32_t id;       /* producer id (message src) */
  uint32_t nprod;    /* consumer: number of producers */
  int may_yield;     /* producers: more threads than CPUs */
  uint64_t count;    /* producer: messages pushed; consumer: messages received (stops excluded) */
  uint64_t t0, t1;   /* ns, after the start barrier / after the last message */
  uint64_t errors;   /* consumer: messages out of order or from nowhere */
} worker;

ALWAYS int stopped(const ctl *c) { return __atomic_load_n(&c->stop, __ATOMIC_RELAXED) != 0; }

ALWAYS void producer_body(int K, worker *w) {
  queue *q = w->q;
  uint64_t i = 0;
  unsigned spins = 0;
  rkb_msg m;
  memset(&m, 0, sizeof m);
  m.src = w->id;
  rk_bench_barrier_wait(w->start);
  w->t0 = rk_bench_now_ns();
  if (K_IS_BATCH(K)) {
    rkb_msg msgs[RK_BENCH_BATCH];
    uint32_t j;
    memset(msgs, 0, sizeof msgs);
    for (j = 0; j < RK_BENCH_BATCH; j++) msgs[j].src = w->id;
    while (!stopped(w->ctl)) {
      int k;
      for (j = 0; j < RK_BENCH_BATCH; j++) msgs[j].seq = i + j;
      k = op_push_n(K, q, msgs, RK_BENCH_BATCH);
      if (k > 0) {
        i += (uint64_t)k;
        spins = 0;
      } else {
        wait_full(&spins, w->may_yield);
      }
    }
  } else {
    while (!stopped(w->ctl)) {
      m.seq = i;
      if (op_push(K, q, &m)) {
        i++;
        spins = 0;
      } else {
        wait_full(&spins, w->may_yield);
      }
    }
  }
  w->count = i;
  m.seq = i;
  m.stop = 1;
  if (K_IS_BATCH(K)) {
    while (op_push_n(K, q, &m, 1) != 1) wait_full(&spins, w->may_yield);
  } else {
    while (!op_push(K, q, &m)) wait_full(&spins, w->may_yield);
  }
  w->t1 = rk_bench_now_ns();
}

ALWAYS void consumer_body(int K, worker *w) {
  queue *q = w->q;
  uint64_t got = 0, errors = 0;
  uint64_t expect[8] = {0};
  const uint32_t nprod = w->nprod;
  uint32_t stops = 0;
  rk_bench_barrier_wait(w->start);
  w->t0 = rk_bench_now_ns();
  if (K_IS_BATCH(K)) {
    rkb_msg buf[RK_BENCH_BATCH];
    while (stops < nprod) {
      int k = op_pop_n(K, q, buf, RK_BENCH_BATCH), j;
      if (k == 0) {
        rk_bench_relax();
        continue;
      }
      for (j = 0; j < k; j++) {
        uint32_t s = buf[j].src;
        if (s >= nprod || buf[j].seq != expect[s]) errors++;
        if (s < nprod) expect[s] = buf[j].seq + 1;
        stops += buf[j].stop;
      }
      got += (uint64_t)k;
    }
  } else {
    rkb_msg m;
    while (stops < nprod) {
      if (!op_pop(K, q, &m)) {
        rk_bench_relax();
        continue;
      }
      if (m.src >= nprod || m.seq != expect[m.src]) errors++;
      if (m.src < nprod) expect[m.src] = m.seq + 1;
      stops += m.stop;
      got++;
    }
  }
  w->t1 = rk_bench_now_ns();
  w->count = got - nprod;
  w->errors = errors;
}

/* ------------------------------------ round trip ---------------------------------------------- */

typedef struct rtt_worker {
  queue *ping, *pong;
  rk_bench_barrier *start;
  uint64_t deadline; /* ticks */
  uint64_t *samples; /* ticks per round trip */
  size_t cap, count;
  uint64_t errors;
} rtt_worker;

#define RTT_WARMUP 2000

ALWAYS void ping_body(int K, rtt_worker *w) {
  rkb_wide mw; /* 96 bytes: the msg96 kinds move all of it, the others its first 64 (or 56) */
  rkb_msg buf[RK_BENCH_BATCH];
  uint64_t i;
  size_t k = w->count; /* appends to earlier rounds' samples */
  memset(&mw, 0, sizeof mw);
  rk_bench_barrier_wait(w->start);
  for (i = 0;; i++) {
    uint64_t t0, t1;
    mw.m.seq = i;
    t0 = rk_bench_ticks();
    if (K_IS_BATCH(K)) {
      while (op_push_n(K, w->ping, &mw.m, 1) != 1) rk_bench_relax();
      while (op_pop_n(K, w->pong, buf, RK_BENCH_BATCH) != 1) rk_bench_relax();
      t1 = rk_bench_ticks();
      if (buf[0].seq != i) w->errors++;
    } else {
      rkb_wide r;
      while (!op_push(K, w->ping, &mw.m)) rk_bench_relax();
      while (!op_pop(K, w->pong, &r.m)) rk_bench_relax();
      t1 = rk_bench_ticks();
      if (r.m.seq != i) w->errors++;
    }
    if (i < RTT_WARMUP) continue;
    w->samples[k++] = t1 - t0;
    if (k == w->cap || ((k & 255) == 0 && t1 > w->deadline)) break;
  }
  w->count = k;
  mw.m.stop = 1;
  if (K_IS_BATCH(K)) {
    while (op_push_n(K, w->ping, &mw.m, 1) != 1) rk_bench_relax();
  } else {
    while (!op_push(K, w->ping, &mw.m)) rk_bench_relax();
  }
}

ALWAYS void echo_body(int K, rtt_worker *w) {
  rk_bench_barrier_wait(w->start);
  if (K_IS_BATCH(K)) {
    rkb_msg buf[RK_BENCH_BATCH];
    for (;;) {
      int k = op_pop_n(K, w->ping, buf, RK_BENCH_BATCH), sent = 0;
      if (k == 0) {
        rk_bench_relax();
        continue;
      }
      if (buf[k - 1].stop) break;
      while (sent < k) {
        int s = op_push_n(K, w->pong, buf + sent, (uint32_t)(k - sent));
        if (s == 0) rk_bench_relax();
        sent += s;
      }
    }
  } else {
    rkb_wide m;
    for (;;) {
      while (!op_pop(K, w->ping, &m.m)) rk_bench_relax();
      if (m.m.stop) break;
      while (!op_push(K, w->pong, &m.m)) rk_bench_relax();
    }
  }
}

/* The floor's two sides: rtt.echo's floor (bench/rtt.c rtt_floor / floor_echo), the same loop
 * (the echo's: rk_bench_floor_echo, bench/common.c). */
static void *ping_K_FLOOR(void *a) {
  rtt_worker *w = (rtt_worker *)a;
  floor_line *f = w->ping->fl;
  uint8_t req[32], out[32];
  uint64_t i, seq = 1;
  size_t k = w->count;
  rk_bench_barrier_wait(w->start);
  for (i = 0;; i++) {
    uint64_t t0, t1;
    rk_bench_pattern(req, sizeof req, i);
    t0 = rk_bench_ticks();
    memcpy(f->data, req, sizeof req);
    __atomic_store_n(&f->seq, seq, __ATOMIC_RELEASE); /* pairs with the echo's acquire */
    while (__atomic_load_n(&f->seq, __ATOMIC_ACQUIRE) != seq + 1) rk_bench_relax();
    memcpy(out, f->data, sizeof out);
    t1 = rk_bench_ticks();
    seq += 2;
    if (memcmp(out, req, sizeof req) != 0) w->errors++;
    if (i < RTT_WARMUP) continue;
    w->samples[k++] = t1 - t0;
    if (k == w->cap || ((k & 255) == 0 && t1 > w->deadline)) break;
  }
  w->count = k;
  /* the next round starts from a fresh word: the echo resets its expectation on stop */
  __atomic_store_n(&f->seq, ~0ull, __ATOMIC_RELEASE);
  return NULL;
}
static void *echo_K_FLOOR(void *a) {
  rtt_worker *w = (rtt_worker *)a;
  floor_line *f = w->ping->fl;
  rk_bench_barrier_wait(w->start);
  _Static_assert(sizeof f->data == RK_BENCH_FLOOR_BYTES, "the floor line's payload");
  rk_bench_floor_echo(&f->seq, f->data);
  /* both threads of this round have left the line's protocol (the pinger stored ~0 last, and it
   * is joined before the next round): start the next round at seq 1 */
  __atomic_store_n(&f->seq, 0, __ATOMIC_RELAXED);
  return NULL;
}

/* ---- one thread function per impl and role ---- */
#define DEF_THREADS(K)                                                                            \
  static void *prod_##K(void *a) {                                                                \
    producer_body(K, (worker *)a);                                                                \
    return NULL;                                                                                  \
  }                                                                                               \
  static void *cons_##K(void *a) {                                                                \
    consumer_body(K, (worker *)a);                                                                \
    return NULL;                                                                                  \
  }
#define DEF_RTT_THREADS(K)                                                                        \
  static void *ping_##K(void *a) {                                                                \
    ping_body(K, (rtt_worker *)a);                                                                \
    return NULL;                                                                                  \
  }                                                                                               \
  static void *echo_##K(void *a) {                                                                \
    echo_body(K, (rtt_worker *)a);                                                                \
    return NULL;                                                                                  \
  }
DEF_THREADS(K_RK)
DEF_THREADS(K_RKB)
DEF_THREADS(K_MX)
DEF_THREADS(K_RK_MPSC)
DEF_THREADS(K_RKB_MPSC)
DEF_THREADS(K_MX_MPSC)
DEF_RTT_THREADS(K_RK)
DEF_RTT_THREADS(K_RKB)
DEF_RTT_THREADS(K_MX)
DEF_THREADS(K_PS)
DEF_THREADS(K_PSB)
DEF_THREADS(K_PSL)
DEF_THREADS(K_PST)
DEF_RTT_THREADS(K_PS)
DEF_RTT_THREADS(K_PSB)
DEF_RTT_THREADS(K_PSL)
DEF_RTT_THREADS(K_PST)
DEF_RTT_THREADS(K_RK96)
DEF_RTT_THREADS(K_PS96)
DEF_RTT_THREADS(K_PST96)
#if defined(RK_HAVE_CK)
DEF_THREADS(K_CK)
DEF_THREADS(K_CK_MPSC)
DEF_RTT_THREADS(K_CK)
#endif

typedef void *(*thread_fn)(void *);
static thread_fn k_prod[K_COUNT], k_cons[K_COUNT], k_ping[K_COUNT], k_echo[K_COUNT];

static void init_tables(void) {
  k_prod[K_RK] = prod_K_RK, k_cons[K_RK] = cons_K_RK;
  k_prod[K_RKB] = prod_K_RKB, k_cons[K_RKB] = cons_K_RKB;
  k_prod[K_MX] = prod_K_MX, k_cons[K_MX] = cons_K_MX;
  k_prod[K_RK_MPSC] = prod_K_RK_MPSC, k_cons[K_RK_MPSC] = cons_K_RK_MPSC;
  k_prod[K_RKB_MPSC] = prod_K_RKB_MPSC, k_cons[K_RKB_MPSC] = cons_K_RKB_MPSC;
  k_prod[K_MX_MPSC] = prod_K_MX_MPSC, k_cons[K_MX_MPSC] = cons_K_MX_MPSC;
  k_ping[K_RK] = ping_K_RK, k_echo[K_RK] = echo_K_RK;
  k_ping[K_RKB] = ping_K_RKB, k_echo[K_RKB] = echo_K_RKB;
  k_ping[K_MX] = ping_K_MX, k_echo[K_MX] = echo_K_MX;
  k_prod[K_PS] = prod_K_PS, k_cons[K_PS] = cons_K_PS;
  k_prod[K_PSB] = prod_K_PSB, k_cons[K_PSB] = cons_K_PSB;
  k_prod[K_PSL] = prod_K_PSL, k_cons[K_PSL] = cons_K_PSL;
  k_prod[K_PST] = prod_K_PST, k_cons[K_PST] = cons_K_PST;
  k_ping[K_PS] = ping_K_PS, k_echo[K_PS] = echo_K_PS;
  k_ping[K_PSB] = ping_K_PSB, k_echo[K_PSB] = echo_K_PSB;
  k_ping[K_PSL] = ping_K_PSL, k_echo[K_PSL] = echo_K_PSL;
  k_ping[K_PST] = ping_K_PST, k_echo[K_PST] = echo_K_PST;
  k_ping[K_RK96] = ping_K_RK96, k_echo[K_RK96] = echo_K_RK96;
  k_ping[K_PS96] = ping_K_PS96, k_echo[K_PS96] = echo_K_PS96;
  k_ping[K_PST96] = ping_K_PST96, k_echo[K_PST96] = echo_K_PST96;
  k_ping[K_FLOOR] = ping_K_FLOOR, k_echo[K_FLOOR] = echo_K_FLOOR;
#if defined(RK_HAVE_CK)
  k_prod[K_CK] = prod_K_CK, k_cons[K_CK] = cons_K_CK;
  k_prod[K_CK_MPSC] = prod_K_CK_MPSC, k_cons[K_CK_MPSC] = cons_K_CK_MPSC;
  k_ping[K_CK] = ping_K_CK, k_echo[K_CK] = echo_K_CK;
#endif
}

/* ------------------------------------ placement ----------------------------------------------- */
/* Consumer (and echo thread) on the second CPU, producers on the others, round robin; with two
 * CPUs every producer shares CPU 0. */
static int g_all_pinned;

static int cpu_consumer(void) { return rk_bench_ncpus() >= 2 ? rk_bench_cpu(1) : rk_bench_cpu(0); }
static int cpu_producer(uint32_t p) {
  int n = rk_bench_ncpus();
  int idx;
  if (n < 2) return rk_bench_cpu(0);
  idx = (int)(p % (uint32_t)(n - 1)); /* indices 0, 2, 3, ..., n-1 */
  return rk_bench_cpu(idx == 0 ? 0 : idx + 1);
}

static void spawn_or_die(pthread_t *t, int cpu, thread_fn fn, void *arg) {
  int pinned = 0;
  int rc = rk_bench_spawn(t, cpu, fn, arg, &pinned);
  if (rc != 0) {
    fprintf(stderr, "rk-bench: pthread_create: %s\n", strerror(rc));
    exit(1);
  }
  if (!pinned) g_all_pinned = 0;
}

static void sleep_s(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* One throughput trial of about `secs`: nprod producers, one consumer. Returns messages/s as the
 * consumer saw them (first poll to last message, the drain included). */
static double tput_trial(int K, queue *q, uint32_t nprod, double secs) {
  pthread_t tc, tp[8];
  worker wc, wp[8];
  rk_bench_barrier start;
  ctl *c = aligned_alloc(128, sizeof *c);
  uint64_t pushed = 0;
  uint32_t p;
  int may_yield = (int)nprod + 1 > rk_bench_ncpus();
  if (!c) abort();
  memset(c, 0, sizeof *c);
  rk_bench_barrier_init(&start, nprod + 2); /* + the main thread, which times the trial */
  memset(&wc, 0, sizeof wc);
  wc.q = q;
  wc.start = &start;
  wc.ctl = c;
  wc.nprod = nprod;
  spawn_or_die(&tc, cpu_consumer(), k_cons[K], &wc);
  for (p = 0; p < nprod; p++) {
    memset(&wp[p], 0, sizeof wp[p]);
    wp[p].q = q;
    wp[p].start = &start;
    wp[p].ctl = c;
    wp[p].id = p;
    wp[p].may_yield = may_yield;
    spawn_or_die(&tp[p], cpu_producer(p), k_prod[K], &wp[p]);
  }
  rk_bench_barrier_wait(&start);
  sleep_s(secs);
  __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
  for (p = 0; p < nprod; p++) {
    pthread_join(tp[p], NULL);
    pushed += wp[p].count;
  }
  pthread_join(tc, NULL);
  free(c);
  if (wc.errors)
    rk_bench_fail("%s: %llu messages out of order", k_impl_name[K], (unsigned long long)wc.errors);
  if (wc.count != pushed)
    rk_bench_fail("%s: %llu messages pushed, %llu received", k_impl_name[K],
                  (unsigned long long)pushed, (unsigned long long)wc.count);
  return (double)wc.count * 1e9 / (double)(wc.t1 - wc.t0);
}

/* Throughput of several impls, interleaved: trial t runs every impl once, in an order rotated by
 * t, so that a burst of outside load hits every impl alike instead of one impl's whole series. */
static void measure_tput(const rk_bench_opts *o, const char *bench, const int *kinds, int nk,
                         uint32_t nprod) {
  queue q[K_COUNT];
  double v[K_COUNT][100], lo, hi, med, per_trial = o->seconds / o->trials;
  int want[K_COUNT], i, t;
  for (i = 0; i < nk; i++) {
    want[i] = rk_bench_want(o, bench, k_impl_name[kinds[i]], "ops_per_s");
    if (want[i] && queue_create(&q[i], kinds[i]) != 0) {
      rk_bench_fail("%s: cannot create the queue", k_impl_name[kinds[i]]);
      want[i] = 0;
    }
  }
  /* warm-up: faults the slots in, wakes the CPUs up */
  for (i = 0; i < nk; i++)
    if (want[i]) (void)tput_trial(kinds[i], &q[i], nprod, per_trial < 0.05 ? per_trial : 0.05);
  for (t = 0; t < o->trials; t++)
    for (i = 0; i < nk; i++) {
      int x = (i + t) % nk;
      if (want[x]) v[x][t] = tput_trial(kinds[x], &q[x], nprod, per_trial);
    }
  for (i = 0; i < nk; i++) {
    if (!want[i]) continue;
    med = rk_bench_median(v[i], (size_t)o->trials, &lo, &hi);
    rk_bench_emit(bench, k_impl_name[kinds[i]], "ops_per_s", med, "ops/s", (uint64_t)o->trials,
                  lo, hi);
    queue_destroy(&q[i]);
  }
}

static double g_rk_rtt_p50 = -1; /* the last ringkernel ring.spsc rtt_p50_ns measured */

/* Round trips of several impls, interleaved the same way: `rounds` rounds, each giving every impl
 * budget/rounds of ping-pong; the percentiles are over all of an impl's samples. */
static void measure_rtt(const rk_bench_opts *o, const int *kinds, int nk) {
  queue ping[K_COUNT], pong[K_COUNT];
  rtt_worker w[K_COUNT];
  int want[K_COUNT], i, r, rounds = o->trials;
  double tpn = rk_bench_ticks_per_ns(), per_round = o->seconds / rounds;
  size_t cap;
  /* room for one sample per 50 ns of budget, at most 4 M; touched now, not in the timed loop */
  cap = (size_t)(o->seconds * 1e9 / 50.0);
  if (cap > (4u << 20)) cap = 4u << 20;
  if (cap < 4096) cap = 4096;
  for (i = 0; i < nk; i++) {
    memset(&w[i], 0, sizeof w[i]);
    want[i] = rk_bench_want(o, k_rtt_bench(kinds[i]), k_impl_name[kinds[i]], "rtt");
    if (!want[i]) continue;
    /* the floor's one line is `ping`'s; its `pong` is unused */
    if (queue_create(&ping[i], kinds[i]) != 0 || queue_create(&pong[i], kinds[i]) != 0 ||
        (w[i].samples = malloc(cap * sizeof *w[i].samples)) == NULL) {
      rk_bench_fail("%s: cannot create the queues", k_impl_name[kinds[i]]);
      want[i] = 0;
      continue;
    }
    memset(w[i].samples, 0, cap * sizeof *w[i].samples);
    w[i].cap = cap;
    w[i].ping = &ping[i];
    w[i].pong = &pong[i];
  }
  for (r = 0; r < rounds; r++)
    for (i = 0; i < nk; i++) {
      int x = (i + r) % nk;
      rk_bench_barrier start;
      pthread_t ta, tb;
      if (!want[x] || w[x].count == w[x].cap) continue;
      rk_bench_barrier_init(&start, 2);
      w[x].start = &start;
      w[x].deadline = rk_bench_ticks() + (uint64_t)(per_round * 1e9 * tpn);
      spawn_or_die(&tb, cpu_consumer(), k_echo[kinds[x]], &w[x]);
      spawn_or_die(&ta, cpu_producer(0), k_ping[kinds[x]], &w[x]);
      pthread_join(ta, NULL);
      pthread_join(tb, NULL);
    }
  for (i = 0; i < nk; i++) {
    if (!want[i]) continue;
    if (w[i].errors)
      rk_bench_fail("%s: %llu round trips returned the wrong message", k_impl_name[kinds[i]],
                    (unsigned long long)w[i].errors);
    if (w[i].count > 0) {
      uint64_t q99 = rk_bench_quantile_u64(w[i].samples, w[i].count, 0.99); /* sorts */
      double p50 = (double)rk_bench_quantile_u64(w[i].samples, w[i].count, 0.50) / tpn;
      double p99 = (double)q99 / tpn, sum = 0;
      size_t k, kept = 0;
      /* mean of the samples at or below p99: finer than the timer's granularity (the quantisation
       * error averages out), without the preemption outliers of the last percent */
      for (k = 0; k < w[i].count && w[i].samples[k] <= q99; k++, kept++)
        sum += (double)w[i].samples[k];
      const char *bench = k_rtt_bench(kinds[i]);
      if (kinds[i] == K_RK) g_rk_rtt_p50 = p50;
      rk_bench_emit(bench, k_impl_name[kinds[i]], "rtt_p50_ns", p50, "ns", w[i].count, NAN, NAN);
      rk_bench_emit(bench, k_impl_name[kinds[i]], "rtt_p99_ns", p99, "ns", w[i].count, NAN, NAN);
      rk_bench_emit(bench, k_impl_name[kinds[i]], "rtt_mean_ns", sum / (double)kept / tpn, "ns",
                    kept, NAN, NAN);
    }
    free(w[i].samples);
    queue_destroy(&ping[i]);
    queue_destroy(&pong[i]);
  }
}

double rk_bench_ring_rtt_p50(const rk_bench_opts *o) {
  static const int rk_only[] = {K_RK};
  rk_bench_opts all = *o;
  init_tables();
  all.filter = NULL; /* the reference figure, whatever the caller's filter */
  g_rk_rtt_p50 = -1;
  measure_rtt(&all, rk_only, 1);
  return g_rk_rtt_p50;
}

int rk_bench_ring(const rk_bench_opts *o) {
  static const int spsc[] = {K_RK, K_RKB,
#if defined(RK_HAVE_CK)
                             K_CK,
#endif
                             K_MX, K_PS, K_PSB, K_PSL, K_PST};
  /* the round trips: ring.spsc's impls, ring.spsc.msg96's and the floor, all in the same rounds */
  static const int rtt[] = {K_RK, K_RKB,
#if defined(RK_HAVE_CK)
                            K_CK,
#endif
                            K_MX, K_PS, K_PSB, K_PSL, K_PST, K_RK96, K_PS96, K_PST96, K_FLOOR};
  static const int mpsc[] = {K_RK_MPSC, K_RKB_MPSC,
#if defined(RK_HAVE_CK)
                             K_CK_MPSC,
#endif
                             K_MX_MPSC};
  static const uint32_t nprods[] = {2, 4};
  size_t j;
  int ncpu = rk_bench_ncpus();
  init_tables();
  g_all_pinned = 1;
  (void)rk_bench_ticks_per_ns(); /* calibrate before any thread runs */
  rk_bench_note("\n== ring: %u-byte messages, %u slots, batch %u; consumers spin (pause), "
                "producers spin on full (+ yield when threads > CPUs)",
                RK_BENCH_MSG_SIZE, RK_BENCH_CAPACITY, RK_BENCH_BATCH);
  rk_bench_note("   placement: consumer/echo on CPU %d, producers/ping on CPU %d%s; %d CPUs usable",
                cpu_consumer(), cpu_producer(0),
                ncpu > 2 ? " and the others round robin" : " (all producers share it)", ncpu);
  rk_bench_note("   round trip timed with %s (%.3f ticks/ns, %.1f ns granularity, %.1f ns timer "
                "overhead per sample, included)",
#if defined(__x86_64__) || defined(__i386__)
                "lfence+rdtsc",
#else
                "clock_gettime(CLOCK_MONOTONIC)",
#endif
                rk_bench_ticks_per_ns(), rk_bench_ticks_granularity_ns(),
                rk_bench_ticks_overhead_ns());
#if !defined(RK_HAVE_CK)
  rk_bench_note("   Concurrency Kit not found at build time: no ck_ring baseline");
#endif
  rk_bench_note("   core-to-core floor (one cache line, CPU %d <-> CPU %d) before: %.0f ns round trip",
                rk_bench_cpu(0), rk_bench_cpu(1), rk_bench_line_rtt_ns(0.05));
  measure_tput(o, "ring.spsc", spsc, (int)(sizeof spsc / sizeof spsc[0]), 1);
  measure_rtt(o, rtt, (int)(sizeof rtt / sizeof rtt[0]));
  for (j = 0; j < sizeof nprods / sizeof nprods[0]; j++) {
    char bench[32];
    snprintf(bench, sizeof bench, "ring.mpsc.%up", nprods[j]);
    measure_tput(o, bench, mpsc, (int)(sizeof mpsc / sizeof mpsc[0]), nprods[j]);
  }
  rk_bench_note("   core-to-core floor after: %.0f ns round trip (if it moved, the host moved the "
                "vCPUs during the run)",
                rk_bench_line_rtt_ns(0.05));
  rk_bench_note("   threads pinned: %s", g_all_pinned ? "yes" : "NO (pinning failed somewhere)");
  rk_bench_table("ring.");
  if (!rk_bench_json()) printf("\n");
  rk_bench_ratio("ring.spsc", "ops_per_s", "ringkernel", "ck_ring", 1.25, 1);
  rk_bench_ratio("ring.spsc", "ops_per_s", "ringkernel.batch", "ck_ring", 3.0, 1);
  rk_bench_ratio("ring.spsc", "ops_per_s", "ringkernel", "mutex", 0, 1);
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "ringkernel", "ck_ring", 1.0, 0);
  rk_bench_ratio("ring.spsc", "rtt_p99_ns", "ringkernel", "ck_ring", 1.0, 0);
  rk_bench_ratio("ring.spsc", "rtt_mean_ns", "ringkernel", "ck_ring", 0, 0);
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "ringkernel", "mutex", 0, 0);
  /* issue 16's prototypes: informative, no target (docs/design-notes.md, "The sequence word in
   * the slot, measured") */
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "ringkernel", "floor", 0, 0);
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "proto.seqslot", "floor", 0, 0);
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "proto.seqslot.line", "floor", 0, 0);
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "proto.seqslot.tail", "floor", 0, 0);
  rk_bench_ratio("ring.spsc", "rtt_p50_ns", "proto.seqslot", "ringkernel", 0, 0);
  rk_bench_ratio("ring.spsc", "rtt_mean_ns", "proto.seqslot", "ringkernel", 0, 0);
  rk_bench_ratio("ring.spsc", "ops_per_s", "proto.seqslot", "ck_ring", 0, 1);
  rk_bench_ratio("ring.spsc", "ops_per_s", "proto.seqslot.batch", "ck_ring", 0, 1);
  rk_bench_ratio("ring.spsc", "ops_per_s", "proto.seqslot.line", "ck_ring", 0, 1);
  rk_bench_ratio("ring.spsc", "ops_per_s", "proto.seqslot.tail", "ck_ring", 0, 1);
  rk_bench_ratio("ring.spsc.msg96", "rtt_p50_ns", "proto.seqslot", "ringkernel", 0, 0);
  rk_bench_ratio("ring.spsc.msg96", "rtt_p50_ns", "proto.seqslot.tail", "ringkernel", 0, 0);
  for (j = 0; j < sizeof nprods / sizeof nprods[0]; j++) {
    char bench[32];
    snprintf(bench, sizeof bench, "ring.mpsc.%up", nprods[j]);
    rk_bench_ratio(bench, "ops_per_s", "ringkernel", "ck_ring", 0, 1);
    rk_bench_ratio(bench, "ops_per_s", "ringkernel.batch", "ck_ring", 0, 1);
    rk_bench_ratio(bench, "ops_per_s", "ringkernel", "mutex", 0, 1);
  }
  return 0;
}
