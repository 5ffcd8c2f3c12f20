/** @file ringkernel/message.h — messages as handlers and receivers see them, and typed message
 * declarations shared by host and device code.
 *
 * A message type is declared once, for host and device, with its struct, id and name:
 *
 *     typedef struct vadd_req { uint32_t n; float a[16], b[16]; } vadd_req;
 *     RK_MESSAGE(vadd_req, 100);
 *
 * which defines the constant vadd_req_TYPE (= 100) and, on the host, the descriptor
 * vadd_req_msgtype ({100, sizeof(vadd_req), "vadd_req"}) that kernel descriptors list so the
 * runtime can refuse a wrong type or size (RK_EINVAL / RK_EMSGSIZE, counted, never delivered) and
 * telemetry can name types. The typed helpers (rk_send_typed, rk_call_typed, rk_reply_typed,
 * RK_MSG_AS) check the payload size at compile time where they can; the runtime checks it always. */
#ifndef RINGKERNEL_MESSAGE_H
#define RINGKERNEL_MESSAGE_H

#include "ringkernel/common.h"
#include "ringkernel/envelope.h"

RK_EXTERN_C_BEGIN

/** A message: a copy of its envelope and a view of its payload.
 *  In a handler the payload points into the ring slot (valid until the handler returns; 16-byte
 *  aligned: 80 bytes into a 64-byte aligned slot); from rk_recv / rk_call it points into the
 *  caller's buffer. */
typedef struct rk_msg {
  rk_envelope env;     /**< the envelope as received */
  const void *payload; /**< payload bytes (NULL when len is 0) */
  uint32_t len;        /**< payload bytes available at payload (<= env.payload_len if truncated) */
  int32_t status;      /**< replies: 0, or the RK_E* code carried by an error reply */
} rk_msg;

/** A message type descriptor: id, exact payload size, name (for telemetry and errors). */
typedef struct rk_msg_type {
  uint32_t id; /**< the type id (nonzero) */
  uint32_t size; /**< the exact payload size */
  const char *name; /**< the name, for errors and telemetry */
} rk_msg_type;

/** The message's payload (NULL when it has none). */
RK_INLINE RK_HD const void *rk_msg_payload(const rk_msg *m) { return m->payload; }
/** Payload bytes available at rk_msg_payload. */
RK_INLINE RK_HD uint32_t rk_msg_len(const rk_msg *m) { return m->len; }
/** The message's type id. */
RK_INLINE RK_HD uint32_t rk_msg_type_of(const rk_msg *m) { return m->env.type; }
/** The message's id. */
RK_INLINE RK_HD uint64_t rk_msg_id(const rk_msg *m) { return m->env.msg_id; }
/** The message's HLC stamp. */
RK_INLINE RK_HD uint64_t rk_msg_stamp(const rk_msg *m) { return m->env.hlc; }
/** Nonzero for an error reply (its code in rk_msg.status). */
RK_INLINE RK_HD int rk_msg_is_error(const rk_msg *m) { return (m->env.flags & RK_ENV_F_ERROR) != 0; }

/** An error reply's data after its code (rk_reply_error): a pointer into the payload and *len its
 *  bytes; NULL (and *len 0) when the message is no error reply or carries nothing but the code.
 *  len may be NULL. */
RK_INLINE RK_HD const void *rk_msg_error_payload(const rk_msg *m, uint32_t *len) {
  if (len) *len = 0;
  if (!rk_msg_is_error(m) || m->len <= 4 || m->payload == 0) return 0;
  if (len) *len = m->len - 4;
  return RK_CAST(const unsigned char *, m->payload) + 4;
}

/** Declare a message type T (a struct typedef already in scope) with a nonzero numeric id. */
#if defined(__CUDACC_RTC__) || defined(__CUDA_ARCH__)
#define RK_MESSAGE(T, ID) enum { T##_TYPE = (ID) }
#else
#define RK_MESSAGE(T, ID)                                                     \
  enum { T##_TYPE = (ID) };                                                   \
  RK_STATIC_ASSERT((ID) != 0, "message type id 0 is reserved");              \
  static const rk_msg_type T##_msgtype __attribute__((unused)) = {(ID), (uint32_t)sizeof(T), #T}
#endif

/** Compile-time check that expression `ptr` points to a T (sizes must agree). */
#define RK__CHECK_TYPED(T, ptr) ((void)sizeof(char[sizeof(*(ptr)) == sizeof(T) ? 1 : -1]))

/** In a handler or after a receive: the payload as a const T*, or NULL when the message is not a
 *  T (type id or length differ). */
#define RK_MSG_AS(msg, T) \
  ((rk_msg_type_of(msg) == (uint32_t)T##_TYPE && rk_msg_len(msg) == sizeof(T)) ? RK_CAST(const T *, rk_msg_payload(msg)) : RK_CAST(const T *, 0))

RK_EXTERN_C_END

#endif /* RINGKERNEL_MESSAGE_H */
