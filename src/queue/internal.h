/* queue/internal.h — ring helpers shared inside the library but not public. */
#ifndef RK_QUEUE_INTERNAL_H
#define RK_QUEUE_INTERNAL_H

#include <string.h>

#include "ringkernel/ring.h"

/* Spin, yield, then park on the ring's consumer (consumer != 0) or producer wake word until
 * ready(arg) returns nonzero (returned as 0 when positive, as is when negative) or timeout_ns
 * passes (RK_ETIMEDOUT; < 0 forever, 0 checks once). Wakers: rk_ring_notify_consumer,
 * rk_ring_notify_producers, rk_ring_wake_all. The Dekker protocol is described in ring_wait.c. */
int rk__ring_wait(rk_ring *r, int consumer, int (*ready)(void *), void *arg, int64_t timeout_ns);
/* rk_ring_wait_readable for a caller that waits in slices (re-entering to re-check its own state).
 * *idle_since (rk__now_ns; 0 to begin) carries the idle stretch from slice to slice: set when a
 * slice times out, cleared when one sees a message. Only waits on RK_RING_F_NO_WAKE rings use it
 * (they poll at the start of an idle stretch only, and their naps grow with it: ring_wait.c).
 * mem_size: the bytes that really belong to the ring (0: unknown); when given, the header is
 * checked against it on entry and before every poll (RK_ECORRUPT when it no longer fits;
 * RK_EINVAL when r or idle_since is unusable). A slice ends after its first park that finds
 * nothing: RK_EAGAIN (woken with the ring still empty, e.g. by rk_ring_wake_all on a fault) or
 * RK_ETIMEDOUT, so the caller learns of a fault or a terminate at once, not at the slice's end. */
int rk__ring_wait_readable_slice(rk_ring *r, size_t mem_size, int64_t timeout_ns, uint64_t *idle_since);

/* ring_wait.c, tests only: nonzero makes every shared futex call fail as on memory without
 * ordinary pages (EFAULT), so that its private fallback runs (Linux). */
extern int rk__futex_shared_efault;

/* rk_ring_notify_consumer(cons) and rk_ring_notify_producers(prods) with one full fence for both
 * Dekker pairs (either ring may be NULL), for a caller that publishes on two rings: every
 * publication it is to announce must precede the call. The CPU lane uses it for its replies
 * (outbox) and the room it made (inbox). */
void rk__ring_notify2(rk_ring *cons, rk_ring *prods);

/* A ring's slot geometry read once (after the caller checked the header), for a loop over many
 * slots: rk_ring_slot reads three header fields per call, again after every store into a slot
 * (which the compiler must assume may alias the header). rk__slot_msg(&g, pos) is
 * rk_ring_slot(r, pos) for the header the geometry was read from. */
typedef struct rk__slots {
  uint8_t *msg0; /* slot 0's message */
  uint64_t mask;
  uint32_t size;
} rk__slots;
static inline rk__slots rk__slots_of(rk_ring *r) {
  rk__slots g;
  g.msg0 = rk_ring_slot(r, 0);
  g.mask = r->mask;
  g.size = r->slot_size;
  return g;
}
static inline uint8_t *rk__slot_msg(const rk__slots *g, uint64_t pos) {
  return g->msg0 + (size_t)((pos & g->mask) * g->size);
}

/* Cache hints for a slot's first two lines (its sequence word with the message's first 48 bytes,
 * and the next 64: an envelope and 32 payload bytes need both; pos's message starts at p), issued
 * where a thread knows which slot it will touch next (issue 16, docs/design-notes.md "Where an
 * rk_call round trip goes"). Read: a consumer that has just seen position pos published fetches
 * both lines at once, so their transfers from the producer's core overlap instead of following
 * one another (the envelope is read first, the payload only after validation). Write: a producer
 * that is about to wait takes the lines of the slot it will fill next in exclusive state, so the
 * next publication does not wait behind the invalidation of the consumer's copies from the last
 * lap. Hints only: no effect on correctness or ordering. */
static inline void rk__prefetch_at(const rk__slots *g, uint64_t pos) {
  const uint8_t *p = rk__slot_msg(g, pos);
  __builtin_prefetch(p, 0, 3);
  if (g->size > 64) __builtin_prefetch(p + 64, 0, 3);
}
static inline void rk__prefetchw_at(const rk__slots *g, uint64_t pos) {
  const uint8_t *p = rk__slot_msg(g, pos);
#if defined(__x86_64__)
  /* PREFETCHW (3DNow!/PRFCHW: AMD, Intel since Broadwell; an older Intel CPU runs it as a NOP),
   * written out because GCC emits it only under -mprfchw */
  __asm__ __volatile__("prefetchw %0" : : "m"(*(const volatile uint8_t *)p));
  if (g->size > 64) __asm__ __volatile__("prefetchw %0" : : "m"(*(const volatile uint8_t *)(p + 64)));
#else
  __builtin_prefetch(p, 1, 3);
  if (g->size > 64) __builtin_prefetch(p + 64, 1, 3);
#endif
}

/* (the same from the ring's header) */
static inline void rk__prefetch_slot(rk_ring *r, uint64_t pos) {
  rk__slots g = rk__slots_of(r);
  rk__prefetch_at(&g, pos);
}
static inline void rk__prefetchw_slot(rk_ring *r, uint64_t pos) {
  rk__slots g = rk__slots_of(r);
  rk__prefetchw_at(&g, pos);
}

/* memcpy(dst, src, n) for the message paths' payloads, which are short (tens of bytes): up to 64
 * bytes inline, with two to four overlapping loads and stores, without the call into the C
 * library, whose register saves around it cost about as much as the copy (issue 16: two such
 * copies of a 32-byte payload were ~45 of the caller's ~280 instructions per message in
 * throughput.echo). dst and src must not overlap. */
typedef struct rk__b16 {
  uint64_t a, b;
} rk__b16;
static inline void rk__copy_msg(void *dst, const void *src, uint32_t n) {
  uint8_t *d = (uint8_t *)dst;
  const uint8_t *s = (const uint8_t *)src;
  if (n >= 16) {
    rk__b16 x, y, u, v;
    if (n > 64) {
      memcpy(d, s, n);
      return;
    }
    memcpy(&x, s, 16);
    memcpy(&y, s + n - 16, 16);
    if (n > 32) { /* [0, 32) and [n - 32, n) cover [0, n) */
      memcpy(&u, s + 16, 16);
      memcpy(&v, s + n - 32, 16);
      memcpy(d + 16, &u, 16);
      memcpy(d + n - 32, &v, 16);
    }
    memcpy(d, &x, 16);
    memcpy(d + n - 16, &y, 16);
  } else if (n >= 8) {
    uint64_t x, y;
    memcpy(&x, s, 8);
    memcpy(&y, s + n - 8, 8);
    memcpy(d, &x, 8);
    memcpy(d + n - 8, &y, 8);
  } else if (n >= 4) {
    uint32_t x, y;
    memcpy(&x, s, 4);
    memcpy(&y, s + n - 4, 4);
    memcpy(d, &x, 4);
    memcpy(d + n - 4, &y, 4);
  } else if (n) {
    uint8_t x = s[0], y = s[n / 2], z = s[n - 1];
    d[0] = x;
    d[n / 2] = y;
    d[n - 1] = z;
  }
}

/* The process's parks (futex waits) and wake-ups (futex wakes) so far, for diagnosis (rk-bench
 * rtt); either pointer may be NULL. */
void rk__wait_counts(uint64_t *parks, uint64_t *wakes);

/* Whether the calling thread can run on one CPU only (its affinity mask has one CPU, or one CPU is
 * online): then spinning in a wait only delays the thread it waits for, and the library's waits
 * yield where they would pause (ring_wait.c; docs/design-notes.md, "Parking and the slow mode").
 * rk__one_cpu reads the thread's cached answer (the mask is read at its first call in a thread);
 * rk__one_cpu_refresh reads the mask again (thread start, after a park) and returns the answer. */
int rk__one_cpu(void);
int rk__one_cpu_refresh(void);
/* sched_yield, counted in this thread's yields (rk__wait_thread_counts). */
void rk__wait_yield(void);
/* The calling thread's polls with a pause between them (spins) and yields in the ring waits so
 * far, for tests of the policy above; either pointer may be NULL. */
void rk__wait_thread_counts(uint64_t *spin_polls, uint64_t *yields);

/* Monotonic nanoseconds (timeouts and back-off only; never for HLC). */
uint64_t rk__now_ns(void);

#endif
