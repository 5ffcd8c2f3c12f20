/** @file ringkernel/kernel.h — the kernel dialect: how a ring-kernel handler is written.
 *
 * A handler is written once and compiled by cc for the CPU backend and by nvcc or NVRTC for the
 * CUDA backend, unchanged:
 *
 *     RK_HANDLER(my_echo)(rk_ctx *ctx, const rk_msg *in) {
 *       return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
 *     }
 *
 * All threads of a lane run the handler on the same message (on the CPU a lane has 1..n threads,
 * on the GPU it is a block). Dialect rules:
 *  - rk_sync, rk_reply, rk_reply_reserve and rk_reply_commit are collective: every thread of the
 *    lane calls them, in control flow that is uniform across the lane, and returning from the
 *    handler is part of that flow. On the CPU backend a lane whose threads reach different
 *    collectives (or one returns while the others call rk_reply) faults the kernel with
 *    RK_EHANDLER and a message naming both, and stops; the collectives then return RK_ESTATE
 *    (rk_reply_reserve: NULL) so the handler can finish;
 *  - share data between the lane's threads only through rk_scratch (and the state);
 *  - never spin on RK_EAGAIN: return it. A handler that returns RK_EAGAIN without having replied
 *    or sent anything (rk_send_to / rk_forward found the destination's K2K inbox full) is run
 *    again on the same message a little later (CPU backend: after ~20 µs); the message stays in
 *    its inbox meanwhile, so backpressure reaches the senders and nothing is lost. What the
 *    handler did before that send happens again: send first, or keep it idempotent. So is a
 *    handler of a K2K message that continues a host request (rk_forward) whose error answer (a
 *    negative code, or 0 without a reply) finds the origin's K2K inbox full;
 *  - a handler returns 0 or a negative RK_E* code. A negative code produces an error reply (flag
 *    RK_ENV_F_ERROR, the code in the payload) unless the handler replied already, and is counted;
 *    it never stops the kernel. A positive value, or 0 without a reply to a request that wants one
 *    (a reservation never committed included), would leave the caller waiting: it becomes an
 *    RK_EHANDLER error reply, counted in handler_errors and logged (CPU backend);
 *  - a request sent with RK_SEND_NO_REPLY gets no reply: rk_reply then does nothing and returns 0.
 *
 * Work splitting across the lane's threads:
 *     for (i = rk_thread(ctx); i < n; i += rk_threads(ctx)) out[i] = a[i] + b[i];
 *
 * The kernel itself (name, handler, state, types, geometry) is defined next to its handler with
 * RK_KERNEL (ringkernel/runtime.h); docs/first-kernel.md walks through a complete one.
 */
#ifndef RINGKERNEL_KERNEL_H
#define RINGKERNEL_KERNEL_H

#include "ringkernel/common.h"
#include "ringkernel/error.h"
#include "ringkernel/hlc.h"
#include "ringkernel/message.h"

RK_EXTERN_C_BEGIN

/** The handler's view of its kernel, lane and current message. Opaque. */
typedef struct rk_ctx rk_ctx;

/** A handler: returns 0 or a negative RK_E* code (sent back as an error reply). */
typedef int (*rk_handler_fn)(rk_ctx *ctx, const rk_msg *in);

/** Declare a handler: RK_HANDLER(name)(rk_ctx *ctx, const rk_msg *in) { ... } */
#define RK_HANDLER(name) RK_DEVICE int name

/* The device implementations of these functions come with the CUDA backend's device runtime
 * (src/device/persistent.cuh, compiled into every device program, nvcc or NVRTC); the host ones
 * with the CPU backend in librk. The declarations are the contract for both. Under nvcc and NVRTC
 * they have internal linkage: each device program carries its own copy, and the host half of an
 * nvcc translation unit never emits symbols that would clash with librk's host functions. */
#if defined(__CUDACC__) || defined(__CUDACC_RTC__) || defined(RK_DEVICE_EMULATION)
/* (RK_DEVICE_EMULATION: the test suite compiling the device loop as host C++, src/device/emulation.h) */
#define RK_DIALECT static __device__
#else
/** Linkage of the dialect functions: exported from librk, internal in device code. */
#define RK_DIALECT RK_API
#endif
/** The kernel's persistent state (state_size bytes, kept across deactivate/activate); NULL when
 *  the descriptor declares none (state_size 0), so a handler that uses state declares its size and
 *  checks for NULL before the first use (the library cannot see a handler's needs). */
RK_DIALECT void *rk_state(rk_ctx *ctx);
/** Lane-shared scratch memory (scratch_size bytes of the kernel descriptor); *size may be NULL. */
RK_DIALECT void *rk_scratch(rk_ctx *ctx, size_t *size);
/** A fresh kernel-clock stamp (a local event: strictly greater than any stamp seen so far). */
RK_DIALECT rk_hlc rk_now(rk_ctx *ctx);
/** This thread's index in its lane, and the lane's thread count. */
RK_DIALECT uint32_t rk_thread(rk_ctx *ctx);
/** The lane's thread count. */
RK_DIALECT uint32_t rk_threads(rk_ctx *ctx);
/** Barrier across the lane's threads (collective). */
RK_DIALECT void rk_sync(rk_ctx *ctx);
/** The lane index, the lane count, and this kernel's id. */
RK_DIALECT uint32_t rk_lane(rk_ctx *ctx);
/** The kernel's lane count. */
RK_DIALECT uint32_t rk_lanes(rk_ctx *ctx);
/** This kernel's id. */
RK_DIALECT uint32_t rk_self(rk_ctx *ctx);

/** Reply to the current message (collective; one thread publishes). Returns 0, RK_EMSGSIZE (len
 *  above the slot's payload), RK_EAGAIN (outbox full: only possible for a second reply), RK_ESTATE
 *  (a reply reserved with rk_reply_reserve is not committed yet: commit it first; or the lane's
 *  threads broke the collective rule). */
RK_DIALECT int rk_reply(rk_ctx *ctx, uint32_t type, const void *payload, uint32_t len);
/** Most bytes of data an error reply carries besides its code (rk_reply_error). */
#define RK_REPLY_ERROR_MAX 1020u
/** Reply to the current message with an error that carries data besides its code (an overdraft's
 *  balance, the field that failed): an error reply (RK_ENV_F_ERROR) of the request's type whose
 *  payload is the int32 code followed by len bytes of payload. The caller sees the code in
 *  rk_msg.status (rk_call returns RK_EHANDLER) and the bytes with rk_msg_error_payload. code is
 *  negative: an RK_E* code or, for the application's own errors, RK_EAPP(n) (ringkernel/error.h).
 *  Collective, like rk_reply; then return the code (or 0) from the handler: it counts as a handler
 *  error, and no second reply is made. Returns 0 (or when the request wants no reply), RK_EINVAL
 *  (code >= 0, payload NULL with len > 0), RK_EMSGSIZE (len above RK_REPLY_ERROR_MAX, or len + 4
 *  above the slot's payload),
 *  RK_EAGAIN, RK_ESTATE as rk_reply. At most RK_REPLY_ERROR_MAX bytes of data (and what the slot
 *  holds). */
RK_DIALECT int rk_reply_error(rk_ctx *ctx, int32_t code, const void *payload, uint32_t len);
/** Reserve a reply of len bytes in the outbox and return where to write it (the same pointer in
 *  every thread), or NULL (no reply wanted, RK_EMSGSIZE/RK_EAGAIN, or a broken collective rule;
 *  always for a K2K message, whose answer goes over K2K: answer those with rk_reply). Collective. */
RK_DIALECT void *rk_reply_reserve(rk_ctx *ctx, uint32_t type, uint32_t len);
/** Publish the reply reserved with rk_reply_reserve (collective: barrier, then one thread
 *  publishes). Returns 0 or RK_ESTATE (nothing was reserved, or a broken collective rule). */
RK_DIALECT int rk_reply_commit(rk_ctx *ctx);

/** Kernel to kernel (ringkernel/graph.h). Send a new message over this kernel's route number
 *  `route` (its routes are numbered from 0 in the order rk_graph_connect declared them) to the lane
 *  of the destination that matches this lane (lane % the destination's lanes), so the messages of
 *  one lane arrive in the order sent. It wants no reply. Collective, like rk_reply; never blocks.
 *  Stamped by this kernel's clock (send rule; the receiver merges it). Returns 0, RK_EAGAIN (the
 *  destination's K2K inbox is full: nothing sent; try later, or return and let backpressure act),
 *  RK_EINVAL (no such route, type 0), RK_ECLOSED (the destination has terminated), RK_EMSGSIZE
 *  (len above the destination's slot payload); refusals are counted in k2k_refused. On the
 *  device the message is published with the lane's next publication (docs/k2k.md). */
RK_DIALECT int rk_send_to(rk_ctx *ctx, uint32_t route, uint32_t type, const void *payload, uint32_t len);
/** rk_send_to, choosing the destination lane by key (key % its lanes) as rk_send_key does. */
RK_DIALECT int rk_send_to_key(rk_ctx *ctx, uint32_t route, uint64_t key, uint32_t type, const void *payload,
                              uint32_t len);
/** Pass the request being handled on over `route`, as a new message (type, payload): the duty to
 *  answer it goes with it. Whichever kernel down the line calls rk_reply (or returns an error)
 *  answers the original request: the reply travels back over K2K to this kernel, which publishes
 *  it in its outbox, where the host's rk_call waits. This lane then owes no reply of its own. A
 *  request that wants no reply is passed on as one that wants none. Results as rk_send_to. */
RK_DIALECT int rk_forward(rk_ctx *ctx, uint32_t route, uint32_t type, const void *payload, uint32_t len);
/** rk_forward, choosing the destination lane by key. */
RK_DIALECT int rk_forward_key(rk_ctx *ctx, uint32_t route, uint64_t key, uint32_t type, const void *payload,
                              uint32_t len);
/** Publish to every kernel subscribed to topic (lane 0 of each): a message that wants no reply.
 *  Per-publisher order holds on every subscriber; a subscriber whose K2K inbox is full misses it
 *  (counted in its k2k_dropped), never blocking the publisher. Collective. Returns how many
 *  subscribers got it (>= 0), or RK_EINVAL (topic out of range, not in a graph), RK_EMSGSIZE. */
RK_DIALECT int rk_publish(rk_ctx *ctx, uint32_t topic, uint32_t type, const void *payload, uint32_t len);

/** Reply with a typed message: sizes are checked at compile time. */
#define rk_reply_typed(ctx, T, ptr) (RK__CHECK_TYPED(T, ptr), rk_reply((ctx), T##_TYPE, (ptr), (uint32_t)sizeof(T)))

RK_EXTERN_C_END

#endif /* RINGKERNEL_KERNEL_H */
