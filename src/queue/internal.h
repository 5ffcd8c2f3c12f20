/* queue/internal.h — ring helpers shared inside the library but not public. */
#ifndef RK_QUEUE_INTERNAL_H
#define RK_QUEUE_INTERNAL_H

#include "ringkernel/ring.h"

/* Spin, yield, then park on the ring's consumer (consumer != 0) or producer wake word until
 * ready(arg) returns nonzero (returned as 0 when positive, as is when negative) or timeout_ns
 * passes (RK_ETIMEDOUT; < 0 forever, 0 checks once). Wakers: rk_ring_notify_consumer,
 * rk_ring_notify_producers, rk_ring_wake_all. The Dekker protocol is described in ring_wait.c. */
int rk__ring_wait(rk_ring *r, int consumer, int (*ready)(void *), void *arg, int64_t timeout_ns);

/* Monotonic nanoseconds (timeouts and back-off only; never for HLC). */
uint64_t rk__now_ns(void);

#endif
