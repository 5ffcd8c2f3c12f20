/** @file ringkernel/error.h — error codes: one X-macro table of negative RK_E* values, with their names
 * and messages. 0 is success; every failing public function returns one of these. */
#ifndef RINGKERNEL_ERROR_H
#define RINGKERNEL_ERROR_H

#include "ringkernel/common.h"

/* X(name, value, message) — values are stable ABI: never renumber, only append. */
/** The error table: X(name, value, message) for each RK_E* code. */
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

/** Error codes: 0 or a negative RK_E* value. */
typedef enum rk_error {
  RK_OK = 0,
#define RK__ERR_ENUM(name, value, msg) RK_##name = value,
  RK_ERRNO_MAP(RK__ERR_ENUM)
#undef RK__ERR_ENUM
  RK__ERR_LAST = -18
} rk_error;

/** Application error codes: a handler may return its own error codes, in the range
 *  RK_EAPP(0) .. RK_EAPP(RK_EAPP_MAX) = -1000 .. -66535, which the library never uses. The caller
 *  sees the code in rk_msg.status (rk_call returns RK_EHANDLER), rk_strerror says "application
 *  error N" and rk_err_name "RK_EAPP"; rk_err_app(code) gives N back (-1 outside the range). Codes
 *  between RK__ERR_LAST and RK_EAPP(0) are reserved for the library's future codes. */
#define RK_EAPP_BASE (-1000)
/** The largest application error number (RK_EAPP(RK_EAPP_MAX) = -66535). */
#define RK_EAPP_MAX 65535
/** The code of application error n (0 <= n <= RK_EAPP_MAX): -1000 - n. */
#define RK_EAPP(n) (RK_EAPP_BASE - (int)(n))
/** n for an application error code RK_EAPP(n), else -1. */
RK_INLINE RK_HD int rk_err_app(int err) {
  return err <= RK_EAPP_BASE && err >= RK_EAPP_BASE - RK_EAPP_MAX ? RK_EAPP_BASE - err : -1;
}

#if !defined(__CUDACC_RTC__)
/** Human-readable message for an RK_* code; never NULL ("unknown error" for foreign values,
 *  "application error N" for RK_EAPP(N)). Thread-safe: a static string, or for an application
 *  code a buffer of the calling thread valid until its next rk_strerror. */
RK_API const char *rk_strerror(int err);
/** The code's name ("RK_EINVAL"); "RK_EAPP" for application codes, "RK_UNKNOWN" for foreign
 *  values. Thread-safe. */
RK_API const char *rk_err_name(int err);
#endif

RK_EXTERN_C_END

#endif /* RINGKERNEL_ERROR_H */
