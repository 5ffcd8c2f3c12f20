/** @file ringkernel/lifecycle.h — a kernel's lifecycle states and its most lanes: the part of the
 * control block (ringkernel/control.h, an internal of the runtime) that the application API uses. */
#ifndef RINGKERNEL_LIFECYCLE_H
#define RINGKERNEL_LIFECYCLE_H

#include "ringkernel/common.h"

RK_EXTERN_C_BEGIN

/** Kernel (and lane) states. */
typedef enum rk_lifecycle {
  RK_STATE_LAUNCHED = 1,    /**< resident, polling only its control word */
  RK_STATE_ACTIVE = 2,      /**< consuming messages */
  RK_STATE_INACTIVE = 3,    /**< resident, not consuming; state kept */
  RK_STATE_TERMINATING = 4, /**< draining what was accepted, then exiting */
  RK_STATE_TERMINATED = 5,  /**< exited; replies already produced can still be received */
  RK_STATE_FAULTED = 6      /**< an error or a stalled heartbeat; see rk_kernel_error */
} rk_lifecycle;

/** Most lanes a kernel has. */
#define RK_MAX_LANES 64

RK_EXTERN_C_END

#endif /* RINGKERNEL_LIFECYCLE_H */
