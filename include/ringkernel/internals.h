/** @file ringkernel/internals.h — the runtime's internals, for code that needs them: the rings and
 * their host-side waits (ring.h, queue.h), the atomics that every shared word goes through
 * (atomic.h) and the control block (control.h). The device runtime, the test suite and the ring
 * benchmarks include this; an application includes <ringkernel.h>, which leaves them out so that
 * its view stays small and stable (their layouts and functions may change between versions). */
#ifndef RINGKERNEL_INTERNALS_H
#define RINGKERNEL_INTERNALS_H

#include "ringkernel.h"
#include "ringkernel/atomic.h"
#include "ringkernel/ring.h"
#include "ringkernel/queue.h"
#include "ringkernel/control.h"

#endif /* RINGKERNEL_INTERNALS_H */
