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

/* vector_add on buffers: the references checked by every thread (the same answer for all, so the
 * control flow stays uniform), then c = a + b over the lane's threads, a barrier, and the reply. One
 * thread (a CPU lane's default) takes unit stride, which the compiler vectorises; several stride by
 * the lane's thread count (coalesced on a GPU). */
RK_INLINE RK_DEVICE int rk_vector_add_buffers(rk_ctx *ctx, const rk_vadd_buf_req *req) {
  const float *a, *b;
  float *c;
  void *pa, *pb, *pc;
  uint64_t i, n = req->n, t = rk_thread(ctx), nt = rk_threads(ctx);
  int rc;
  rk_vadd_buf_reply r = {0, 0, 0, 0};
  if ((rc = rk_buffer_get(ctx, &req->a, RK_BUF_READ, &pa)) != RK_OK) return rc;
  if ((rc = rk_buffer_get(ctx, &req->b, RK_BUF_READ, &pb)) != RK_OK) return rc;
  if ((rc = rk_buffer_get(ctx, &req->c, RK_BUF_WRITE, &pc)) != RK_OK) return rc;
  if (n > req->a.length / sizeof(float) || n > req->b.length / sizeof(float) || n > req->c.length / sizeof(float))
    return RK_EMSGSIZE;
  a = RK_CAST(const float *, pa);
  b = RK_CAST(const float *, pb);
  c = RK_CAST(float *, pc);
  if (nt == 1) {
    for (i = 0; i < n; i++) c[i] = a[i] + b[i];
  } else {
    for (i = t; i < n; i += nt) c[i] = a[i] + b[i];
  }
  rk_sync(ctx); /* c is complete before the reply is published */
  if (t == 0) {
    r.n = n;
    r.lane = rk_lane(ctx);
    r.stamp = rk_now(ctx);
  }
  return rk_reply_typed(ctx, rk_vadd_buf_reply, &r);
}

/* vector_add: c = a + b, the lane's threads splitting the elements, written in place in the reply
 * slot; stamped with the kernel clock. A rk_vadd_buf_req works on buffers instead. */
RK_HANDLER(rk_vector_add_handler)(rk_ctx *ctx, const rk_msg *in) {
  const rk_vadd_req *req = RK_MSG_AS(in, rk_vadd_req);
  const rk_vadd_buf_req *breq = RK_MSG_AS(in, rk_vadd_buf_req);
  rk_vadd_reply *out;
  uint32_t i, n;
  if (breq != 0) return rk_vector_add_buffers(ctx, breq);
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
