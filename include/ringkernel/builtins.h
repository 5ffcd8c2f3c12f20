/** @file ringkernel/builtins.h — message types of the built-in kernels (echo, vector_add, counter),
 * shared by host and device code. */
#ifndef RINGKERNEL_BUILTINS_H
#define RINGKERNEL_BUILTINS_H

#include "ringkernel/buffer.h"
#include "ringkernel/common.h"
#include "ringkernel/message.h"

RK_EXTERN_C_BEGIN

/** Elements of an inline vector_add request (rk_vadd_req). */
#define RK_VADD_MAX 16

/** vector_add request: n <= RK_VADD_MAX elements of a and b. */
typedef struct rk_vadd_req {
  uint32_t n; /**< elements to add (at most RK_VADD_MAX) */
  uint32_t reserved;
  float a[RK_VADD_MAX]; /**< the first operand */
  float b[RK_VADD_MAX]; /**< the second operand */
} rk_vadd_req;
RK_MESSAGE(rk_vadd_req, 100);

/** vector_add reply: c = a + b, and the kernel-clock stamp of the computation. */
typedef struct rk_vadd_reply {
  uint32_t n; /**< elements computed (the request's n) */
  uint32_t lane; /**< the lane that computed it */
  uint64_t stamp; /**< the kernel-clock stamp of the computation */
  float c[RK_VADD_MAX]; /**< c[i] = a[i] + b[i] for i < n, 0 after */
} rk_vadd_reply;
RK_MESSAGE(rk_vadd_reply, 101);

/** vector_add on buffers: c[i] = a[i] + b[i] for i < n (floats), in place in the buffers, n of any
 *  size the buffers hold. The references come first (send with rk_call_refs(k, ..., 3, ...)): a and
 *  b need RK_BUF_READ, c RK_BUF_WRITE, each at least n * 4 bytes long (else RK_EMSGSIZE). The
 *  lane's threads (a block on the GPU) stride over the arrays; the reply comes when c is complete. */
typedef struct rk_vadd_buf_req {
  rk_buf_ref a; /**< the first operand (RK_BUF_READ, n floats) */
  rk_buf_ref b; /**< the second operand (RK_BUF_READ, n floats) */
  rk_buf_ref c; /**< the result (RK_BUF_WRITE, n floats) */
  uint64_t n; /**< elements to add */
} rk_vadd_buf_req;
RK_MESSAGE(rk_vadd_buf_req, 102);

/** vector_add on buffers, reply: the elements computed, the lane, the kernel-clock stamp. */
typedef struct rk_vadd_buf_reply {
  uint64_t n; /**< elements computed */
  uint64_t stamp; /**< the kernel-clock stamp of the computation */
  uint32_t lane; /**< the lane that computed it */
  uint32_t reserved;
} rk_vadd_buf_reply;
RK_MESSAGE(rk_vadd_buf_reply, 103);

/** counter: add delta to the running total of the kernel's state. */
typedef struct rk_counter_add {
  int64_t delta; /**< added to the running total */
} rk_counter_add;
RK_MESSAGE(rk_counter_add, 110);

/** counter reply: the running total after this message, and how many messages it has seen. */
typedef struct rk_counter_value {
  int64_t total; /**< the running total after this message */
  uint64_t count; /**< messages seen, this one included */
  uint64_t stamp; /**< the kernel-clock stamp of the update */
} rk_counter_value;
RK_MESSAGE(rk_counter_value, 111);

/** The counter kernel's persistent state. */
typedef struct rk_counter_state {
  int64_t total; /**< the running total */
  uint64_t count; /**< messages seen */
} rk_counter_state;

RK_EXTERN_C_END

#endif /* RINGKERNEL_BUILTINS_H */
