/** @file ringkernel/envelope.h — the fixed 64-byte message envelope shared by host, device and network.
 *
 * Every message in every ring starts with this envelope, followed by its inline payload in the same
 * slot. The layout is a POD pinned by static asserts under every compiler that includes this header
 * (cc, c++, nvcc, NVRTC). Validation names each kind of corruption precisely; a message that fails
 * it is counted and refused, never handed to a handler. The payload checksum is CRC32C (Castagnoli),
 * optional per message (RK_ENV_F_CHECKSUM). */
#ifndef RINGKERNEL_ENVELOPE_H
#define RINGKERNEL_ENVELOPE_H

#include "ringkernel/common.h"

RK_EXTERN_C_BEGIN

/** The envelope's magic ("RRKV" little-endian). */
#define RK_ENVELOPE_MAGIC 0x564b5252u /* "RRKV" little-endian: 'R','R','K','V' */
/** The envelope layout version. */
#define RK_ENVELOPE_VERSION 1u
/** Bytes of an envelope: one 64-byte line. */
#define RK_ENVELOPE_SIZE 64u

/* Flags (16 bits; bits not listed here are reserved and must be zero). */
#define RK_ENV_F_REPLY 0x0001u    /**< a reply; correlation_id names the request */
#define RK_ENV_F_ERROR 0x0002u    /**< an error reply; payload starts with an int32 RK_E* code */
#define RK_ENV_F_CONTROL 0x0004u  /**< a control message for the runtime, not a handler */
#define RK_ENV_F_K2K 0x0008u      /**< sent by a kernel to a kernel */
#define RK_ENV_F_CHECKSUM 0x0010u /**< checksum holds the payload's CRC32C */
#define RK_ENV_F_NO_REPLY 0x0020u /**< the sender wants no reply */
/** Every envelope flag defined; other bits are reserved. */
#define RK_ENV_F_KNOWN 0x003fu

/** The envelope: 64 bytes, one cache line. Every field's offset is pinned below. */
typedef struct rk_envelope {
  RK_ALIGNAS(8) uint32_t magic; /**<  0 RK_ENVELOPE_MAGIC */
  uint16_t version;        /**<  4 RK_ENVELOPE_VERSION */
  uint16_t flags;          /**<  6 RK_ENV_F_* */
  uint32_t type;           /**<  8 message type id (application-defined, 0 reserved) */
  uint32_t payload_len;    /**< 12 bytes of inline payload following the envelope */
  uint64_t msg_id;         /**< 16 sender-unique message id */
  uint64_t correlation_id; /**< 24 for replies: the request's msg_id */
  uint32_t src;            /**< 32 source kernel id (0 = host) */
  uint32_t dst;            /**< 36 destination kernel id (0 = host) */
  uint64_t hlc;            /**< 40 HLC stamp (rk_hlc) taken at send */
  uint32_t node;           /**< 48 node id of the clock that stamped hlc */
  uint32_t checksum;       /**< 52 CRC32C of the payload when RK_ENV_F_CHECKSUM */
  uint16_t priority;       /**< 56 0 = normal */
  uint16_t lane;           /**< 58 lane the message travelled on (informational); K2K messages that
                            *    continue a host request (origin != 0): the origin's lane */
  uint32_t origin;         /**< 60 K2K messages only: the kernel that took the host request this
                            *    message continues (it sends the reply), correlation_id its id;
                            *    0 on every other message */
} rk_envelope;

RK_STATIC_ASSERT(sizeof(rk_envelope) == 64, "envelope is one 64-byte line");
RK_ASSERT_OFFSET(rk_envelope, magic, 0);
RK_ASSERT_OFFSET(rk_envelope, version, 4);
RK_ASSERT_OFFSET(rk_envelope, flags, 6);
RK_ASSERT_OFFSET(rk_envelope, type, 8);
RK_ASSERT_OFFSET(rk_envelope, payload_len, 12);
RK_ASSERT_OFFSET(rk_envelope, msg_id, 16);
RK_ASSERT_OFFSET(rk_envelope, correlation_id, 24);
RK_ASSERT_OFFSET(rk_envelope, src, 32);
RK_ASSERT_OFFSET(rk_envelope, dst, 36);
RK_ASSERT_OFFSET(rk_envelope, hlc, 40);
RK_ASSERT_OFFSET(rk_envelope, node, 48);
RK_ASSERT_OFFSET(rk_envelope, checksum, 52);
RK_ASSERT_OFFSET(rk_envelope, priority, 56);
RK_ASSERT_OFFSET(rk_envelope, lane, 58);
RK_ASSERT_OFFSET(rk_envelope, origin, 60);

/** Result of rk_envelope_validate: each kind of corruption has its own value. */
typedef enum rk_envelope_check {
  RK_ENV_OK = 0,
  RK_ENV_BAD_MAGIC = 1,     /**< magic is not RK_ENVELOPE_MAGIC */
  RK_ENV_BAD_VERSION = 2,   /**< version is not RK_ENVELOPE_VERSION */
  RK_ENV_BAD_FLAGS = 3,     /**< a reserved flag bit is set (replies: or flags no reply carries) */
  RK_ENV_BAD_RESERVED = 4,  /**< origin is not zero on a message that is not K2K */
  RK_ENV_BAD_LENGTH = 5,    /**< payload_len exceeds what the slot can hold */
  RK_ENV_BAD_TYPE = 6,      /**< type 0 on a non-control message */
  RK_ENV_BAD_DEST = 7,      /**< dst is not the kernel that received it */
  RK_ENV_BAD_CHECKSUM = 8,  /**< RK_ENV_F_CHECKSUM set and the payload's CRC32C differs */
  RK_ENV_BAD_SOURCE = 9,    /**< (replies) src is not the kernel whose outbox held the reply */
  RK_ENV_BAD_ERROR = 10,    /**< (replies) RK_ENV_F_ERROR without a negative int32 RK_E* code */
  RK_ENV_CHECK_COUNT = 11
} rk_envelope_check;
/* The order is a contract: results below RK_ENV_BAD_LENGTH say the header itself is damaged (its
 * ids and fields mean nothing), results from RK_ENV_BAD_LENGTH on say the header's structure is
 * sound and only its content is wrong, so its ids (msg_id, correlation_id) can be used to answer
 * or to notify (docs/design-notes.md, "Replies are validated"). */

/** The flags a reply may carry; RK_ENV_F_REPLY is required among them. */
#define RK_ENV_F_REPLY_ALLOWED (RK_ENV_F_REPLY | RK_ENV_F_ERROR | RK_ENV_F_CHECKSUM)

/* ------------------------------------ CRC32C ------------------------------------------------- */

/** CRC32C (Castagnoli, reflected, init and final xor ~0), bitwise: portable to device code.
 *  `crc` is a previous result (0 to start), so chunks can be chained. */
RK_INLINE RK_HD uint32_t rk_crc32c_portable(uint32_t crc, const void *data, size_t len) {
  const uint8_t *p = RK_CAST(const uint8_t *, data);
  size_t i;
  int k;
  crc = ~crc;
  for (i = 0; i < len; i++) {
    crc ^= p[i];
    for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

#if !defined(__CUDACC_RTC__)
/** CRC32C on the host: the SSE4.2 crc32 instruction when the CPU has it, else slicing-by-8.
 *  Same result as rk_crc32c_portable. Thread-safe. */
RK_API uint32_t rk_crc32c(uint32_t crc, const void *data, size_t len);
/** Name of a validation result ("bad magic", ...). Thread-safe. */
RK_API const char *rk_envelope_check_name(int check);
#endif

RK_INLINE RK_HD uint32_t rk_envelope__crc(const void *payload, uint32_t len) {
#if defined(__CUDA_ARCH__)
  return rk_crc32c_portable(0, payload, len);
#else
  return rk_crc32c(0, payload, len);
#endif
}

/** Fill the envelope's fixed fields (magic, version, zeroed reserved words). */
RK_INLINE RK_HD void rk_envelope_init(rk_envelope *e, uint32_t type, uint32_t payload_len,
                                      uint16_t flags) {
  e->magic = RK_ENVELOPE_MAGIC;
  e->version = (uint16_t)RK_ENVELOPE_VERSION;
  e->flags = flags;
  e->type = type;
  e->payload_len = payload_len;
  e->msg_id = 0;
  e->correlation_id = 0;
  e->src = 0;
  e->dst = 0;
  e->hlc = 0;
  e->node = 0;
  e->checksum = 0;
  e->priority = 0;
  e->lane = 0;
  e->origin = 0;
}

/** Set RK_ENV_F_CHECKSUM and the checksum of the payload_len bytes at payload. */
RK_INLINE RK_HD void rk_envelope_seal(rk_envelope *e, const void *payload) {
  e->flags = (uint16_t)(e->flags | RK_ENV_F_CHECKSUM);
  e->checksum = rk_envelope__crc(payload, e->payload_len);
}

/** The payload that follows an envelope in its slot. */
RK_INLINE RK_HD void *rk_envelope_payload(rk_envelope *e) { return RK_CAST(void *, e + 1); }

/**
 * Validate an envelope and its payload.
 * @param e            the envelope (payload_len bytes of payload follow it unless `payload` says)
 * @param payload      the payload (NULL: the bytes right after the envelope)
 * @param max_payload  the most payload the slot can hold
 * @param expected_dst the receiving kernel's id, or UINT32_MAX to skip the destination check
 * @return RK_ENV_OK or the first corruption found, in the order of the enum.
 */
RK_INLINE RK_HD rk_envelope_check rk_envelope_validate(const rk_envelope *e, const void *payload,
                                                       uint32_t max_payload, uint32_t expected_dst) {
  /* The common case first: a sound message, not checksummed and with no origin, its magic and
   * version compared as one word (one load where the compiler merges them). Whatever passes it
   * passes every check below; anything else goes through them, which name the first corruption. */
  if ((RK_CAST(uint64_t, e->magic) | RK_CAST(uint64_t, e->version) << 32) ==
          (RK_CAST(uint64_t, RK_ENVELOPE_MAGIC) | RK_CAST(uint64_t, RK_ENVELOPE_VERSION) << 32) &&
      !(e->flags & ~(RK_ENV_F_KNOWN & ~RK_ENV_F_CHECKSUM)) && e->origin == 0 && e->payload_len <= max_payload &&
      e->type != 0 && (expected_dst == 0xffffffffu || e->dst == expected_dst))
    return RK_ENV_OK;
  if (e->magic != RK_ENVELOPE_MAGIC) return RK_ENV_BAD_MAGIC;
  if (e->version != RK_ENVELOPE_VERSION) return RK_ENV_BAD_VERSION;
  if (e->flags & ~RK_ENV_F_KNOWN) return RK_ENV_BAD_FLAGS;
  if (e->origin != 0 && !(e->flags & RK_ENV_F_K2K)) return RK_ENV_BAD_RESERVED;
  if (e->payload_len > max_payload) return RK_ENV_BAD_LENGTH;
  if (e->type == 0 && !(e->flags & RK_ENV_F_CONTROL)) return RK_ENV_BAD_TYPE;
  if (expected_dst != 0xffffffffu && e->dst != expected_dst) return RK_ENV_BAD_DEST;
  if (e->flags & RK_ENV_F_CHECKSUM) {
    const void *p = payload ? payload : RK_CAST(const void *, e + 1);
    if (rk_envelope__crc(p, e->payload_len) != e->checksum) return RK_ENV_BAD_CHECKSUM;
  }
  return RK_ENV_OK;
}

/* (internal) rk_envelope_validate_reply's common case: a sound reply that is neither an error reply
 * nor checksummed (flags exactly RK_ENV_F_REPLY), with the magic, the version and the flags compared
 * as one 64-bit word (one load where the compiler merges them). Nonzero: the reply passes every
 * check of rk_envelope_validate_reply; 0: those checks decide. */
RK_INLINE RK_HD int rk_envelope__reply_plain(const rk_envelope *e, uint32_t max_payload, uint32_t expected_src) {
  return (RK_CAST(uint64_t, e->magic) | RK_CAST(uint64_t, e->version) << 32 | RK_CAST(uint64_t, e->flags) << 48) ==
             (RK_CAST(uint64_t, RK_ENVELOPE_MAGIC) | RK_CAST(uint64_t, RK_ENVELOPE_VERSION) << 32 |
              RK_CAST(uint64_t, RK_ENV_F_REPLY) << 48) &&
         e->origin == 0 && e->payload_len <= max_payload && e->type != 0 &&
         (expected_src == 0xffffffffu || e->src == expected_src);
}

/**
 * Validate a reply taken from a kernel's outbox, before anything of it is used: a lane (a device,
 * a handler that writes past its reservation) may have written anything there.
 * Checks, in the order of the enum: magic, version, flags (no reserved bit; RK_ENV_F_REPLY set and
 * nothing outside RK_ENV_F_REPLY_ALLOWED: RK_ENV_BAD_FLAGS), origin (0), payload_len within
 * max_payload, type (0 only on an error reply: a lane answers a request whose type was 0 with an
 * error reply of that type), the checksum when flagged, src == expected_src, and that an error
 * reply carries at least 4 payload bytes holding a negative code. The destination is not checked:
 * a reply's dst echoes its request's src, which the lane never vetted.
 * @param e            the envelope (payload_len bytes of payload follow it unless `payload` says)
 * @param payload      the payload (NULL: the bytes right after the envelope); read only after the
 *                     length passed, and only payload_len bytes of it
 * @param max_payload  the most payload the slot can hold (rk_ring_msg_max - RK_ENVELOPE_SIZE: the
 *                     slot less its sequence word and the envelope)
 * @param expected_src the id of the kernel whose outbox held the reply, or UINT32_MAX to skip
 * @return RK_ENV_OK or the first corruption found. Any thread; pure.
 */
RK_INLINE RK_HD rk_envelope_check rk_envelope_validate_reply(const rk_envelope *e, const void *payload,
                                                             uint32_t max_payload, uint32_t expected_src) {
  const uint8_t *p = RK_CAST(const uint8_t *, payload ? payload : RK_CAST(const void *, e + 1));
  /* the common case first; anything else goes through the checks, which name the first corruption */
  if (rk_envelope__reply_plain(e, max_payload, expected_src)) return RK_ENV_OK;
  if (e->magic != RK_ENVELOPE_MAGIC) return RK_ENV_BAD_MAGIC;
  if (e->version != RK_ENVELOPE_VERSION) return RK_ENV_BAD_VERSION;
  if ((e->flags & ~RK_ENV_F_REPLY_ALLOWED) || !(e->flags & RK_ENV_F_REPLY)) return RK_ENV_BAD_FLAGS;
  if (e->origin != 0) return RK_ENV_BAD_RESERVED;
  if (e->payload_len > max_payload) return RK_ENV_BAD_LENGTH;
  if (e->type == 0 && !(e->flags & RK_ENV_F_ERROR)) return RK_ENV_BAD_TYPE;
  if ((e->flags & RK_ENV_F_CHECKSUM) && rk_envelope__crc(p, e->payload_len) != e->checksum)
    return RK_ENV_BAD_CHECKSUM;
  if (expected_src != 0xffffffffu && e->src != expected_src) return RK_ENV_BAD_SOURCE;
  if (e->flags & RK_ENV_F_ERROR) {
    /* byte by byte: `payload` may be unaligned; envelopes are little-endian on every side */
    uint32_t c;
    if (e->payload_len < 4) return RK_ENV_BAD_ERROR;
    c = RK_CAST(uint32_t, p[0]) | RK_CAST(uint32_t, p[1]) << 8 | RK_CAST(uint32_t, p[2]) << 16 |
        RK_CAST(uint32_t, p[3]) << 24;
    if ((c & 0x80000000u) == 0) return RK_ENV_BAD_ERROR; /* RK_E* codes are negative */
  }
  return RK_ENV_OK;
}

RK_EXTERN_C_END

#endif /* RINGKERNEL_ENVELOPE_H */
