/* hlc/internal.h — host clock operations used inside the library but not public: stamping with a
 * physical time the caller already read, so a batch of messages costs one clock read. */
#ifndef RK_HLC_INTERNAL_H
#define RK_HLC_INTERNAL_H

#include "ringkernel/hlc.h"

/* n (>= 1) send/local-event stamps with one CAS: *first, *first + 1, ..., *first + n - 1 — exactly
 * what n rk_clock_tick calls would return if each read pt_us (a reading of this clock's time
 * source, rk_clock_physical_us, taken by the caller; an older reading only makes the physical part
 * lag, and a reading a little ahead of the source (the host sends' extrapolation from the TSC,
 * src/host/tsc.c: at most ~1 us) only leads it by as much; neither repeats or reorders a stamp).
 * Unique and strictly increasing across threads. */
void rk__clock_tick_n(rk_clock *clock, uint32_t n, uint64_t pt_us, rk_hlc *first);
/* Does the clock read a time source of its own (rk_clock_set_time_source) rather than CLOCK_REALTIME? */
int rk__clock_sourced(const rk_clock *clock);

/* rk_clock_recv with the caller's reading pt_us of the time source. The drift check uses pt_us too,
 * so it must be a reading taken after m was received (an older one could refuse a good stamp).
 * Returns 0 or RK_ECLOCK (the clock does not move); out may be NULL. */
int rk__clock_recv_at(rk_clock *clock, rk_hlc m, uint64_t pt_us, rk_hlc *out);

#endif
