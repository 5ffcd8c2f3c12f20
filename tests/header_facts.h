/* header_facts.h — layout facts of the public POD types, listed once and evaluated by both the C11
 * and the C++17 compilation of the headers (test_headers.c, test_headers_cxx.cpp): host and device
 * compilers must agree on every offset, or a ring written by one is garbage to the other. */
#ifndef RK_TEST_HEADER_FACTS_H
#define RK_TEST_HEADER_FACTS_H

#include <ringkernel.h>
#include <ringkernel/internals.h>

#if defined(__cplusplus)
#define RK_TEST_ALIGNOF(t) alignof(t)
#else
#define RK_TEST_ALIGNOF(t) _Alignof(t)
#endif

#define RK_HEADER_FACTS(X)                                                                      \
  X(sizeof(rk_envelope)) X(RK_TEST_ALIGNOF(rk_envelope))                                        \
  X(offsetof(rk_envelope, magic)) X(offsetof(rk_envelope, version))                            \
  X(offsetof(rk_envelope, flags)) X(offsetof(rk_envelope, type))                               \
  X(offsetof(rk_envelope, payload_len)) X(offsetof(rk_envelope, msg_id))                       \
  X(offsetof(rk_envelope, correlation_id)) X(offsetof(rk_envelope, src))                       \
  X(offsetof(rk_envelope, dst)) X(offsetof(rk_envelope, hlc)) X(offsetof(rk_envelope, node))   \
  X(offsetof(rk_envelope, checksum)) X(offsetof(rk_envelope, priority))                        \
  X(offsetof(rk_envelope, lane)) X(offsetof(rk_envelope, origin))                            \
  X(sizeof(rk_ring)) X(RK_TEST_ALIGNOF(rk_ring))                                                \
  X(offsetof(rk_ring, magic)) X(offsetof(rk_ring, mode)) X(offsetof(rk_ring, slot_size))       \
  X(offsetof(rk_ring, flags))                                                                   \
  X(offsetof(rk_ring, capacity)) X(offsetof(rk_ring, mask)) X(offsetof(rk_ring, slots_offset)) \
  X(offsetof(rk_ring, seq_offset)) X(offsetof(rk_ring, tail)) X(offsetof(rk_ring, claim))      \
  X(offsetof(rk_ring, prod_head)) X(offsetof(rk_ring, head))                                    \
  X(offsetof(rk_ring, cons_sleeping)) X(offsetof(rk_ring, prod_sleeping))                      \
  X(offsetof(rk_ring, cons_wake)) X(offsetof(rk_ring, prod_wake))                              \
  X(sizeof(rk_hlc)) X(sizeof(rk_error)) X(RK_VERSION_HEX) X(RK_ENV_CHECK_COUNT)                 \
  X(RK_LINE) X(RK_ENVELOPE_MAGIC) X(RK_RING_MAGIC)

#define RK_TEST_FACT_COUNT_ONE(e) +1
enum { RK_TEST_FACT_COUNT = 0 RK_HEADER_FACTS(RK_TEST_FACT_COUNT_ONE) };

#endif /* RK_TEST_HEADER_FACTS_H */
