/* device/builtins.h — the built-in kernels, written once in the kernel dialect (kernel.h).
 *
 * This file is compiled by cc for the CPU backend (src/host/builtins.c includes it) and by nvcc for
 * the CUDA backend, unchanged: it uses only the dialect and the shared message types. */
#ifndef RK_DEVICE_BUILTINS_H
#define RK_DEVICE_BUILTINS_H

#include "ringkernel/builtins.h"
#include "ringkernel/kernel.h"

/* The built-in kernels' device entry points and their handlers, listed once: X(entry, handler).
 * builtins.cu defines the CUDA entry points and their name table from it, the test suite's device
 * emulation (src/device/emulation_lanes.cpp) its host stand-ins. The entry names are the descriptors'
 * cuda_entry (src/host/builtins.c). */
#define RK_BUILTIN_KERNELS(X)                         \
  X(rk_ring_kernel_echo, rk_echo_handler)             \
  X(rk_ring_kernel_vector_add, rk_vector_add_handler) \
  X(rk_ring_kernel_counter, rk_counter_handler)

/* echo: the request back, same type and payload. */
RK_HANDLER(rk_echo_handler)(rk_ctx *ctx, const rk_msg *in) {
  return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
}

/* vector_add: c = a + b, the lane's threads splitting the elements, written in place in the reply
 * slot; stamped with the kernel clock. */
RK_HANDLER(rk_vector_add_handler)(rk_ctx *ctx, const rk_msg *in) {
  const rk_vadd_req *req = RK_MSG_AS(in, rk_vadd_req);
  rk_vadd_reply *out;
  uint32_t i, n;
  if (req == 0) return RK_EINVAL;
  if (req->n > RK_VADD_MAX) return RK_EMSGSIZE;
  n = req->n;
  out = RK_CAST(rk_vadd_reply *, rk_reply_reserve(ctx, rk_vadd_reply_TYPE, (uint32_t)sizeof(rk_vadd_reply)));
  if (out == 0) return RK_OK; /* no reply wanted (or none possible: counted by the runtime) */
  for (i = rk_thread(ctx); i < RK_VADD_MAX; i += rk_threads(ctx)) out->c[i] = i < n ? req->a[i] + req->b[i] : 0.0f;
  rk_sync(ctx);
  if (rk_thread(ctx) == 0) {
    out->n = n;
    out->lane = rk_lane(ctx);
    out->stamp = rk_now(ctx);
  }
  return rk_reply_commit(ctx);
}

/* counter: a running total in the kernel's persistent state (one lane: max_lanes 1, so one
 * writer). Thread 0 does the whole update and fills the reply; rk_reply publishes thread 0's
 * payload, so the other threads neither read the state nor take a stamp (every rk_now is a
 * compare-and-swap on the kernel clock: one per thread per message would be wasted contention). */
RK_HANDLER(rk_counter_handler)(rk_ctx *ctx, const rk_msg *in) {
  const rk_counter_add *add = RK_MSG_AS(in, rk_counter_add);
  rk_counter_state *st = RK_CAST(rk_counter_state *, rk_state(ctx));
  rk_counter_value v = {0, 0, 0};
  if (add == 0 || st == 0) return RK_EINVAL; /* st: NULL if a copy of the descriptor dropped state_size */
  if (rk_thread(ctx) == 0) {
    st->total += add->delta;
    st->count += 1;
    v.total = st->total;
    v.count = st->count;
    v.stamp = rk_now(ctx);
  }
  return rk_reply_typed(ctx, rk_counter_value, &v);
}

#endif
