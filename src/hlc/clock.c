/* clock.c — the host Hybrid Logical Clock object: one packed word, one CAS per stamp.
 *
 * The arithmetic is the pure rk_hlc_send/rk_hlc_recv of hlc.h, shared with the device. Uniqueness
 * and monotonicity across threads come from updating the whole packed word with one CAS: two
 * threads can never both install the same successor. */
#include <stdlib.h>
#include <time.h>

#include "ringkernel/atomic.h"
#include "ringkernel/error.h"
#include "ringkernel/hlc.h"
#include "hlc/internal.h"
#include "host/failpoint.h" /* the library's allocations go through its fail points */

struct rk_clock {
  /* The clock word alone on its line: every stamp from every thread CASes it. */
  RK_ALIGNAS(RK_LINE) volatile uint64_t word;
  uint8_t pad[RK_LINE - sizeof(uint64_t)];
  uint32_t node;
  uint64_t max_offset_us;
  rk_time_source time_fn; /* NULL: rk_realtime_us */
  void *time_user;
};

uint64_t rk_realtime_us(void) {
  struct timespec ts;
  /* CLOCK_REALTIME via the vDSO: no system call on Linux with a TSC clocksource. */
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t clock_now(const rk_clock *c) {
  return c->time_fn ? c->time_fn(c->time_user) : rk_realtime_us();
}

int rk_clock_create(rk_clock **out, uint32_t node_id, uint64_t max_offset_us) {
  rk_clock *c;
  if (out == NULL) return RK_EINVAL;
  *out = NULL;
  c = (rk_clock *)rk__aligned_alloc(RK_LINE, sizeof *c);
  if (c == NULL) return RK_ENOMEM;
  c->word = 0;
  c->node = node_id;
  c->max_offset_us = max_offset_us ? max_offset_us : RK_HLC_DEFAULT_MAX_OFFSET_US;
  c->time_fn = NULL;
  c->time_user = NULL;
  *out = c;
  return RK_OK;
}

void rk_clock_destroy(rk_clock *c) { free(c); }

int rk_clock_set_time_source(rk_clock *c, rk_time_source fn, void *user) {
  if (c == NULL) return RK_EINVAL;
  c->time_fn = fn;
  c->time_user = fn ? user : NULL;
  return RK_OK;
}

uint32_t rk_clock_node(const rk_clock *c) { return c ? c->node : 0; }

int rk__clock_sourced(const rk_clock *c) { return c->time_fn != NULL; }

uint64_t rk_clock_physical_us(const rk_clock *c) { return c ? clock_now(c) : rk_realtime_us(); }

int rk_clock_tick(rk_clock *c, rk_hlc *out) {
  uint64_t pt, old, next;
  if (c == NULL || out == NULL) return RK_EINVAL;
  pt = clock_now(c);
  old = rk_load_relaxed_dev_u64(&c->word); /* refreshed by the CAS on failure */
  do {
    next = rk_hlc_send(old, pt);
    /* acq_rel: a stamp taken after another thread's stamp (in happens-before) is larger, and the
     * stamp carries the causality of everything the stamping thread saw. Pairs with itself. */
  } while (!rk_cas_acq_rel_dev_u64(&c->word, &old, next));
  *out = next;
  return RK_OK;
}

int rk_clock_recv(rk_clock *c, rk_hlc m, rk_hlc *out) {
  if (c == NULL) return RK_EINVAL;
  return rk__clock_recv_at(c, m, clock_now(c), out);
}

int rk__clock_recv_at(rk_clock *c, rk_hlc m, uint64_t pt, rk_hlc *out) {
  uint64_t old, next;
  if (rk_hlc_too_far_ahead(m, pt, c->max_offset_us)) return RK_ECLOCK; /* the clock does not move */
  old = rk_load_relaxed_dev_u64(&c->word);
  do {
    next = rk_hlc_recv(old, m, pt);
  } while (!rk_cas_acq_rel_dev_u64(&c->word, &old, next)); /* pairs with itself, as in tick */
  if (out) *out = next;
  return RK_OK;
}

void rk__clock_tick_n(rk_clock *c, uint32_t n, uint64_t pt, rk_hlc *first) {
  uint64_t old, next;
  old = rk_load_relaxed_dev_u64(&c->word);
  do {
    next = rk_hlc_send(old, pt); /* the first stamp; the word advances to the last one */
  } while (!rk_cas_acq_rel_dev_u64(&c->word, &old, next + (n - 1))); /* pairs with itself, as in tick */
  *first = next;
}

rk_hlc rk_clock_peek(const rk_clock *c) {
  return c ? rk_load_acquire_dev_u64(&c->word) : 0; /* pairs with the CAS in tick/recv */
}
