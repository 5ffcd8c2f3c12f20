/** @file ringkernel/hlc.h — Hybrid Logical Clock timestamps: the packed 64-bit form and its pure rules.
 *
 * A timestamp is one uint64_t: physical microseconds since the Unix epoch in the high 52 bits (good
 * until about 2112) and a logical counter in the low 12 bits. Comparing two stamps is comparing two
 * integers; a node id (carried beside the stamp, e.g. in the envelope) breaks ties for a total
 * order. In this packing Kulkarni et al.'s send and receive rules are integer maxima
 * (pt: physical time):
 *     send / local event:  t' = max(t + 1, pt << 12)
 *     receive of m:        t' = max(t + 1, m + 1, pt << 12)
 * A logical overflow carries into the physical part, so a clock issuing more than 4096 stamps per
 * microsecond runs ahead of real time by (excess stamps)/4096 µs; it never repeats a stamp.
 *
 * These functions are pure and RK_HD: the host clock object (rk_clock, below) and the device kernel
 * clock apply exactly the same arithmetic. */
#ifndef RINGKERNEL_HLC_H
#define RINGKERNEL_HLC_H

#include "ringkernel/common.h"

RK_EXTERN_C_BEGIN

/** An HLC stamp: physical microseconds above a logical counter. */
typedef uint64_t rk_hlc;

/** Bits of an HLC stamp that hold the logical counter. */
#define RK_HLC_LOGICAL_BITS 12u
/** The logical counter's bits. */
#define RK_HLC_LOGICAL_MASK 0xfffull
/** Bits of an HLC stamp that hold physical time (microseconds). */
#define RK_HLC_PHYSICAL_BITS 52u
/** The largest physical time a stamp holds. */
#define RK_HLC_PHYSICAL_MAX ((1ull << 52) - 1)
/** Default maximum offset accepted for a received stamp: 500 ms (as CockroachDB). */
#define RK_HLC_DEFAULT_MAX_OFFSET_US 500000ull

/** Physical part (microseconds since the Unix epoch). */
RK_INLINE RK_HD uint64_t rk_hlc_physical(rk_hlc t) { return t >> RK_HLC_LOGICAL_BITS; }
/** Logical part (0..4095). */
RK_INLINE RK_HD uint32_t rk_hlc_logical(rk_hlc t) { return (uint32_t)(t & RK_HLC_LOGICAL_MASK); }
/** Pack a physical time (µs, truncated to 52 bits) and a logical counter (truncated to 12 bits). */
RK_INLINE RK_HD rk_hlc rk_hlc_make(uint64_t physical_us, uint32_t logical) {
  return ((physical_us & RK_HLC_PHYSICAL_MAX) << RK_HLC_LOGICAL_BITS) |
         ((uint64_t)logical & RK_HLC_LOGICAL_MASK);
}
RK_INLINE RK_HD rk_hlc rk_hlc__max(rk_hlc a, rk_hlc b) { return a > b ? a : b; }

/** Send or local event: the stamp that follows t when physical time reads pt_us. */
RK_INLINE RK_HD rk_hlc rk_hlc_send(rk_hlc t, uint64_t pt_us) {
  return rk_hlc__max(t + 1, rk_hlc_make(pt_us, 0));
}
/** Receive of stamp m: the stamp that follows t and m when physical time reads pt_us. */
RK_INLINE RK_HD rk_hlc rk_hlc_recv(rk_hlc t, rk_hlc m, uint64_t pt_us) {
  return rk_hlc__max(rk_hlc__max(t, m) + 1, rk_hlc_make(pt_us, 0));
}
/** Total order: compare stamps, then node ids. Returns -1, 0 or 1. */
RK_INLINE RK_HD int rk_hlc_compare(rk_hlc a, uint32_t node_a, rk_hlc b, uint32_t node_b) {
  if (a != b) return a < b ? -1 : 1;
  if (node_a != node_b) return node_a < node_b ? -1 : 1;
  return 0;
}
/** Nonzero when m's physical part is more than max_offset_us ahead of pt_us (drift policy). */
RK_INLINE RK_HD int rk_hlc_too_far_ahead(rk_hlc m, uint64_t pt_us, uint64_t max_offset_us) {
  uint64_t mp = rk_hlc_physical(m);
  return mp > pt_us && mp - pt_us > max_offset_us;
}

#if !defined(__CUDACC_RTC__)
/* ------------------------------ host clock object -------------------------------------------- */

/** A host HLC: one packed clock word updated with a single CAS, a node id, and a drift bound.
 *  All functions on a clock are thread-safe; stamps from one clock are unique and strictly
 *  increasing across all threads. */
typedef struct rk_clock rk_clock;

/** Physical time source: microseconds since the Unix epoch. The default reads
 *  clock_gettime(CLOCK_REALTIME). Tests and simulations may install their own. */
typedef uint64_t (*rk_time_source)(void *user);

/** Create a clock. max_offset_us == 0 selects RK_HLC_DEFAULT_MAX_OFFSET_US.
 *  Errors: RK_EINVAL (out NULL), RK_ENOMEM. Any thread. */
RK_API int rk_clock_create(rk_clock **out, uint32_t node_id, uint64_t max_offset_us);
/** Destroy a clock (NULL is accepted). No other thread may use it concurrently. */
RK_API void rk_clock_destroy(rk_clock *clock);
/** Install a physical time source (NULL restores the default). Not concurrent with stamping. */
RK_API int rk_clock_set_time_source(rk_clock *clock, rk_time_source fn, void *user);
/** The clock's node id, or 0 for NULL. */
RK_API uint32_t rk_clock_node(const rk_clock *clock);
/** Stamp a send or local event. Errors: RK_EINVAL (NULL argument). Thread-safe. */
RK_API int rk_clock_tick(rk_clock *clock, rk_hlc *out);
/** Merge a received stamp and return the new local stamp in *out (may be NULL).
 *  Errors: RK_EINVAL; RK_ECLOCK when m's physical part is more than max_offset ahead of local
 *  physical time — the clock does not move. Thread-safe. */
RK_API int rk_clock_recv(rk_clock *clock, rk_hlc m, rk_hlc *out);
/** The last stamp issued or merged (no tick). 0 for NULL. Thread-safe. */
RK_API rk_hlc rk_clock_peek(const rk_clock *clock);
/** Current physical time as the clock sees it (µs since the epoch). */
RK_API uint64_t rk_clock_physical_us(const rk_clock *clock);
/** The default time source: CLOCK_REALTIME in microseconds. Thread-safe. */
RK_API uint64_t rk_realtime_us(void);
#endif

RK_EXTERN_C_END

#endif /* RINGKERNEL_HLC_H */
