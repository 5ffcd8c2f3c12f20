/** @file ringkernel/buffer.h — bulk data: buffers that kernels read and write in place.
 *
 * A message fits one ring slot (slot_size - 80 bytes of payload). Data larger than that lives in a
 * buffer: a range of one of the runtime's two pools, prepared when the runtime is created (before
 * any kernel is resident: the prepare-then-launch rule), and sub-allocated afterwards without any
 * CUDA allocation call:
 *  - RK_BUFFER_DEVICE: device global memory on CUDA (the data crosses PCIe once, with
 *    rk_buffer_write, and then stays on the device across any number of messages); host memory on
 *    the CPU backend;
 *  - RK_BUFFER_HOST: pinned, mapped host memory (the host reads and writes it in place through
 *    rk_buffer_host_ptr; a GPU lane's every access crosses PCIe).
 * The pools' sizes are runtime options (rk_runtime_options.buffer_device_bytes, buffer_host_bytes,
 * max_buffers). Programs run unchanged on both backends.
 *
 * A message refers to buffers with rk_buf_ref values at the start of its payload, sent with
 * rk_send_refs / rk_call_refs, which name how many there are. The handler turns a reference into a
 * pointer with rk_buffer_get (or rk_buffer_ptr), bounds-checked against the buffer and valid for
 * the rest of the handler, until it replies.
 *
 * Ownership (docs/buffers.md): sending a message with references pins every buffer it names until
 * the kernel's reply to that message reaches the host (a late reply to an rk_call that timed out
 * included), or until the kernel is destroyed without answering. rk_buffer_free of a pinned buffer
 * is refused (RK_ESTATE), never deferred: the caller decides when to try again. Messages with
 * references must want a reply (RK_SEND_NO_REPLY is refused): the reply is how the host learns
 * that the kernel is done with the memory. A handler must finish with buffer memory before it
 * replies. */
#ifndef RINGKERNEL_BUFFER_H
#define RINGKERNEL_BUFFER_H

#include "ringkernel/common.h"
#include "ringkernel/kernel.h"

RK_EXTERN_C_BEGIN

/* Access a reference grants (rk_buf_ref.access) and a handler asks for (rk_buffer_get). */
/** Access of a buffer reference: the kernel reads the range. */
#define RK_BUF_READ 0x1u
/** Access of a buffer reference: the kernel writes the range. */
#define RK_BUF_WRITE 0x2u
/** Access of a buffer reference: the kernel reads and writes the range. */
#define RK_BUF_RW 0x3u

/** A reference to bytes [offset, offset + length) of a buffer, carried in a message payload.
 *  Built on the host with rk_buffer_ref; `msg` is filled by rk_send_refs / rk_call_refs with the
 *  message's id: a reference is only valid in the message that declared it. */
typedef struct rk_buf_ref {
  uint32_t buffer; /**< the buffer's slot in the runtime's table */
  uint32_t gen;    /**< the buffer's generation (unique in the process: a reference to another
                    *   runtime's buffer names none in this one) */
  uint64_t offset; /**< first byte of the range, from the buffer's start */
  uint64_t length; /**< bytes in the range */
  uint64_t msg;    /**< the id of the message that carries it (set by the runtime) */
  uint32_t access; /**< RK_BUF_READ, RK_BUF_WRITE or RK_BUF_RW */
  uint32_t reserved;
} rk_buf_ref;
RK_STATIC_ASSERT(sizeof(rk_buf_ref) == 40, "rk_buf_ref layout");

/** In a handler: the address of ref's bytes, for the access `want` (a subset of ref->access), in
 *  *ptr (NULL on error). Valid until the handler replies or returns. Any thread of the lane (not a
 *  collective). Returns 0, or the code to return (an error reply): RK_ENOENT (no such buffer, or it
 *  was freed), RK_EINVAL (NULL arguments; the reference was not declared by the current message;
 *  `want` is not granted by ref->access), RK_EMSGSIZE (offset + length beyond the buffer). */
RK_DIALECT int rk_buffer_get(rk_ctx *ctx, const rk_buf_ref *ref, uint32_t want, void **ptr);
/** rk_buffer_get's pointer, or NULL on any error. */
RK_DIALECT void *rk_buffer_ptr(rk_ctx *ctx, const rk_buf_ref *ref, uint32_t want);

#if !defined(__CUDACC_RTC__) && !defined(__CUDA_ARCH__)

struct rk_runtime;
struct rk_kernel;
/** A buffer: a range of one of the runtime's pools (opaque). */
typedef struct rk_buffer rk_buffer;

/** Which pool a buffer comes from. */
typedef enum rk_buffer_kind {
  RK_BUFFER_DEVICE = 1, /**< device global memory (CUDA); host memory on the CPU backend */
  RK_BUFFER_HOST = 2    /**< pinned, mapped host memory; rk_buffer_host_ptr addresses it */
} rk_buffer_kind;

/** A copy finished: status 0 or an RK_E* code (RK_ECUDA). Called on the runtime's loop thread (the
 *  service thread or the application loop), with no library lock held. */
typedef void (*rk_copy_fn)(rk_buffer *b, int status, void *user);

/** Allocate size bytes (> 0) of a pool. Errors: RK_EINVAL (NULL, size 0, unknown kind), RK_ENOMEM
 *  (the pool has no free range that large, or the buffer table is full: no CUDA call is made, and
 *  nothing changes), RK_ESTATE (CUDA: the pool could not be prepared when the runtime was created).
 *  Contents are unspecified (not zeroed). Any thread. */
RK_API int rk_buffer_alloc(struct rk_runtime *rt, rk_buffer_kind kind, size_t size, rk_buffer **out);
/** Give the buffer back to its pool. NULL is RK_EINVAL. RK_ESTATE (the buffer is kept, still valid)
 *  while a message referring to it awaits its reply, or a copy is in progress (rk_buffer_wait).
 *  After success b is gone: references to it are refused (RK_ENOENT) by senders and handlers. */
RK_API int rk_buffer_free(rk_buffer *b);
/** Copy len bytes from src into the buffer at offset (write) or from it into dst (read). done
 *  NULL: the call returns when the copy is complete. done set: asynchronous (CUDA: on the runtime's
 *  copy stream, allowed while kernels are resident); done(b, status, user) is called once it is
 *  complete, and src/dst must stay valid until then. Errors: RK_EINVAL (NULL, len 0),
 *  RK_EMSGSIZE (offset + len beyond the buffer), RK_ECUDA (the copy could not be issued or
 *  failed). The runtime does not order copies against kernels' use of the buffer: copy while no
 *  message referring to the bytes is in flight. Any thread. */
RK_API int rk_buffer_write(rk_buffer *b, size_t offset, const void *src, size_t len, rk_copy_fn done, void *user);
/** Copy len bytes at offset of the buffer into dst; as rk_buffer_write, the other way. */
RK_API int rk_buffer_read(rk_buffer *b, size_t offset, void *dst, size_t len, rk_copy_fn done, void *user);
/** Wait until every copy of b issued before the call is complete (their callbacks may still be
 *  queued). timeout_ns < 0: forever. Returns 0, RK_ETIMEDOUT, RK_EINVAL, or the first failed
 *  copy's code since the last wait. */
RK_API int rk_buffer_wait(rk_buffer *b, int64_t timeout_ns);
/** Size, kind and runtime of a buffer (0 / 0 / NULL for NULL). */
RK_API size_t rk_buffer_size(const rk_buffer *b);
/** The pool the buffer comes from. */
RK_API rk_buffer_kind rk_buffer_get_kind(const rk_buffer *b);
/** RK_BUFFER_HOST: the host address of its bytes. RK_BUFFER_DEVICE: NULL, on every backend (use
 *  rk_buffer_write / rk_buffer_read, so a program runs unchanged on CUDA). */
RK_API void *rk_buffer_host_ptr(rk_buffer *b);
/** Build a reference to [offset, offset + length) with access RK_BUF_READ/WRITE/RW. Errors:
 *  RK_EINVAL (NULL, bad access), RK_EMSGSIZE (beyond the buffer). */
RK_API int rk_buffer_ref(rk_buffer *b, uint64_t offset, uint64_t length, uint32_t access, rk_buf_ref *out);
/** Bytes free and in use in a pool (either pointer may be NULL). RK_EINVAL for a bad kind. */
RK_API int rk_buffer_pool_usage(struct rk_runtime *rt, rk_buffer_kind kind, size_t *used, size_t *size);

/** Send (call) a message whose payload begins with nrefs rk_buf_ref values (1..RK_MAX_REFS): each
 *  must name a live buffer of the kernel's runtime (else RK_ENOENT, nothing sent); the runtime
 *  stamps them with the message id and pins their buffers until the reply comes back (see the
 *  top of this file). Flags as rk_send, but RK_SEND_NO_REPLY is RK_EINVAL. Other errors: those of
 *  rk_send / rk_call, and RK_EINVAL when the payload is shorter than its references. */
#define RK_MAX_REFS 8u
/** rk_send for a payload that starts with nrefs buffer references (pinned until the reply). */
RK_API int rk_send_refs(struct rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t nrefs,
                        uint32_t flags, uint64_t *msg_id);
/** rk_call for a payload that starts with nrefs buffer references (pinned until the reply). */
RK_API int rk_call_refs(struct rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, uint32_t nrefs,
                        rk_msg *reply, void *buf, uint32_t buf_len, int64_t timeout_ns);

#endif /* host */

RK_EXTERN_C_END

#endif /* RINGKERNEL_BUFFER_H */
