/* ringkernel/error.h — error codes: one X-macro table of negative RK_E* values, with their names
 * and messages. 0 is success; every failing public function returns one of these. */
#ifndef RINGKERNEL_ERROR_H
#define RINGKERNEL_ERROR_H

#include "ringkernel/common.h"

/* X(name, value, message) — values are stable ABI: never renumber, only append. */
#define RK_ERRNO_MAP(X)                                                                        \
  X(EINVAL, -1, "invalid argument")                                                            \
  X(EAGAIN, -2, "resource temporarily unavailable (ring full or empty)")                       \
  X(ETIMEDOUT, -3, "operation timed out")                                                      \
  X(ENOMEM, -4, "out of memory")                                                               \
  X(ESTATE, -5, "operation not allowed in the current state")                                  \
  X(ENORESOURCE, -6, "not enough resources (co-residency, lanes, slots)")                      \
  X(ECLOCK, -7, "clock stamp rejected: too far ahead of local physical time")                  \
  X(EMSGSIZE, -8, "message too large for the slot or buffer")                                  \
  X(ECORRUPT, -9, "corrupt envelope or ring")                                                  \
  X(ECUDA, -10, "CUDA error")                                                                  \
  X(ENODEV, -11, "no such device or backend unavailable")                                      \
  X(ENOTSUP, -12, "operation not supported")                                                   \
  X(ECLOSED, -13, "ring or kernel closed to new messages")                                     \
  X(EHANDLER, -14, "handler returned an error")                                                \
  X(ENOENT, -15, "no such entry")                                                              \
  X(ESYS, -16, "system call failed")                                                           \
  X(EDEADLK, -17, "deadlock: kernels waiting for room in each other's full K2K inboxes")

RK_EXTERN_C_BEGIN

typedef enum rk_error {
  RK_OK = 0,
#define RK__ERR_ENUM(name, value, msg) RK_##name = value,
  RK_ERRNO_MAP(RK__ERR_ENUM)
#undef RK__ERR_ENUM
  RK__ERR_LAST = -18
} rk_error;

#if !defined(__CUDACC_RTC__)
/** Human-readable message for an RK_* code; never NULL ("unknown error" for foreign values).
 *  Thread-safe: returns a static string. */
RK_API const char *rk_strerror(int err);
/** The code's name ("RK_EINVAL"); "RK_UNKNOWN" for foreign values. Thread-safe. */
RK_API const char *rk_err_name(int err);
#endif

RK_EXTERN_C_END

#endif /* RINGKERNEL_ERROR_H */
