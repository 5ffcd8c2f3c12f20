/** @file ringkernel/queue.h — host-side ring helpers: allocation, and blocking waits that spin, then
 * yield, then park, with a timeout.
 *
 * The inline operations in ring.h never block and never wake anyone. Host threads that want to wait
 * use the functions here. Parking (docs/memory-ordering.md): a producer publishes, issues a full
 * fence, then reads the consumer's sleeping flag; a consumer sets its flag, issues a full fence,
 * then re-checks the ring. With both fences no wake-up is lost (a lost one would only be hidden by
 * a timeout). A producer that uses the raw push functions of ring.h on a ring whose consumer may
 * park must call rk_ring_notify_consumer() after publishing (one call covers a whole batch).
 *
 * The functions here check the ring they are given with rk_ring_check, which sees the header
 * alone: a ring adopted from memory another party writes (shared memory of another process,
 * memory a device writes) must first pass rk_ring_check_mem with the size actually mapped, and its
 * configuration line must not change while these functions use it (ring.h, rk_ring_check_mem).
 *
 * Timeouts are in nanoseconds: a negative timeout waits forever, 0 tries once.
 * Parking uses the ring's own words (line 3 of the header) and, on Linux, futexes; it is a host
 * facility: device pollers back off with __nanosleep instead. */
#ifndef RINGKERNEL_QUEUE_H
#define RINGKERNEL_QUEUE_H

#include "ringkernel/common.h"
#include "ringkernel/ring.h"

RK_EXTERN_C_BEGIN

#if !defined(__CUDACC_RTC__)
/** Allocate (128-byte aligned) and initialise a ring. Errors: RK_EINVAL (NULL out, bad geometry),
 *  RK_ENOMEM. Any thread. */
RK_API int rk_ring_create(rk_ring **out, uint64_t capacity, uint32_t slot_size, uint32_t mode);
/** Free a ring made by rk_ring_create (NULL accepted). No thread may be using or waiting on it. */
RK_API void rk_ring_destroy(rk_ring *r);

/** After publishing with a raw push: wake the consumer if it is parked. Producer threads. */
RK_API void rk_ring_notify_consumer(rk_ring *r);
/** After releasing slots with a raw pop/release: wake producers parked for space. Consumer. */
RK_API void rk_ring_notify_producers(rk_ring *r);
/** Wake every waiter (used after rk_ring_close so parked producers see RK_ECLOSED). Any thread. */
RK_API void rk_ring_wake_all(rk_ring *r);

/** Consumer: wait until a message is ready. Returns 0, RK_ETIMEDOUT, RK_ECLOSED (closed and fully
 *  drained), RK_EINVAL. */
RK_API int rk_ring_wait_readable(rk_ring *r, int64_t timeout_ns);
/** Producer: wait until a slot is free. Returns 0, RK_ETIMEDOUT, RK_ECLOSED, RK_EINVAL. */
RK_API int rk_ring_wait_writable(rk_ring *r, int64_t timeout_ns);

/** Push one message (SPSC or MPSC by the ring's mode), waiting for space up to timeout_ns, and
 *  wake the consumer. Returns 0, RK_ETIMEDOUT (nothing was claimed), RK_ECLOSED, RK_EMSGSIZE,
 *  RK_EINVAL. SPSC: the single producer; MPSC: any producer thread. */
RK_API int rk_ring_push_wait(rk_ring *r, const void *msg, uint32_t len, int64_t timeout_ns);
/** Pop one message (its first len bytes), waiting up to timeout_ns, and wake parked producers.
 *  Returns 0, RK_ETIMEDOUT, RK_ECLOSED (closed and drained), RK_EMSGSIZE, RK_EINVAL. Consumer. */
RK_API int rk_ring_pop_wait(rk_ring *r, void *buf, uint32_t len, int64_t timeout_ns);
#endif

RK_EXTERN_C_END

#endif /* RINGKERNEL_QUEUE_H */
