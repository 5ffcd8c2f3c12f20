/* ringkernel/builtins.h — message types of the built-in kernels (echo, vector_add, counter),
 * shared by host and device code. */
#ifndef RINGKERNEL_BUILTINS_H
#define RINGKERNEL_BUILTINS_H

#include "ringkernel/common.h"
#include "ringkernel/message.h"

RK_EXTERN_C_BEGIN

#define RK_VADD_MAX 16

/** vector_add request: n <= RK_VADD_MAX elements of a and b. */
typedef struct rk_vadd_req {
  uint32_t n;
  uint32_t reserved;
  float a[RK_VADD_MAX];
  float b[RK_VADD_MAX];
} rk_vadd_req;
RK_MESSAGE(rk_vadd_req, 100);

/** vector_add reply: c = a + b, and the kernel-clock stamp of the computation. */
typedef struct rk_vadd_reply {
  uint32_t n;
  uint32_t lane;
  uint64_t stamp;
  float c[RK_VADD_MAX];
} rk_vadd_reply;
RK_MESSAGE(rk_vadd_reply, 101);

/** counter: add delta to the running total of the kernel's state. */
typedef struct rk_counter_add {
  int64_t delta;
} rk_counter_add;
RK_MESSAGE(rk_counter_add, 110);

/** counter reply: the running total after this message, and how many messages it has seen. */
typedef struct rk_counter_value {
  int64_t total;
  uint64_t count;
  uint64_t stamp;
} rk_counter_value;
RK_MESSAGE(rk_counter_value, 111);

/** The counter kernel's persistent state. */
typedef struct rk_counter_state {
  int64_t total;
  uint64_t count;
} rk_counter_state;

RK_EXTERN_C_END

#endif /* RINGKERNEL_BUILTINS_H */
