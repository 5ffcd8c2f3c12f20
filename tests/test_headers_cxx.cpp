// test_headers_cxx.cpp — the public headers compiled as C++17 (-Wall -Wextra -pedantic -Werror),
// and the inline ring, HLC and envelope code run from C++ so test_headers.c can check that the two
// languages agree on layouts and results, and can pass rings to each other.
#include <ringkernel.h>
#include <ringkernel/internals.h>
#include <ringkernel/atomic.h>
#include <ringkernel/common.h>
#include <ringkernel/envelope.h>
#include <ringkernel/error.h>
#include <ringkernel/hlc.h>
#include <ringkernel/queue.h>
#include <ringkernel/ring.h>
#include <ringkernel/version.h>

#include <cstddef>
#include <cstring>

#include "header_facts.h"

// Layout pins evaluated by the C++ compiler itself, beside the ones in the headers.
static_assert(sizeof(rk_envelope) == 64, "envelope");
static_assert(sizeof(rk_ring) == 4 * RK_LINE, "ring header");
static_assert(alignof(rk_ring) == RK_LINE, "ring alignment");

extern "C" {

size_t rk_cxx_header_facts(size_t *out, size_t n) {
  size_t i = 0;
#define RK_TEST_FACT_STORE(e) \
  if (i < n) out[i] = static_cast<size_t>(e); \
  i++;
  RK_HEADER_FACTS(RK_TEST_FACT_STORE)
#undef RK_TEST_FACT_STORE
  return i;
}

// Push n 64-bit values (first, first+1, ...) with the C++ build of the inline producer code.
int rk_cxx_push_u64(rk_ring *r, uint64_t first, int n) {
  for (int i = 0; i < n; i++) {
    uint64_t v = first + static_cast<uint64_t>(i);
    int rc = r->mode == RK_RING_MPSC ? rk_ring_mpsc_push(r, &v, sizeof v) : rk_ring_push(r, &v, sizeof v);
    if (rc != RK_OK) return rc;
  }
  return RK_OK;
}

int rk_cxx_pop_u64(rk_ring *r, uint64_t *v) { return rk_ring_pop(r, v, sizeof *v); }

// A ring initialised by the C++ build of rk_ring_init in caller memory.
int rk_cxx_ring_init(void *mem, size_t size, uint64_t cap, uint32_t slot, uint32_t mode) {
  return rk_ring_init(mem, size, cap, slot, mode);
}

uint64_t rk_cxx_hlc_send(uint64_t t, uint64_t pt) { return rk_hlc_send(t, pt); }
uint64_t rk_cxx_hlc_recv(uint64_t t, uint64_t m, uint64_t pt) { return rk_hlc_recv(t, m, pt); }
uint32_t rk_cxx_crc32c(uint32_t crc, const void *p, size_t n) { return rk_crc32c_portable(crc, p, n); }

// Build and seal an envelope + payload in a slot, with the C++ build of the envelope code.
void rk_cxx_envelope_make(void *slot, uint32_t type, const void *payload, uint32_t len, uint32_t dst) {
  rk_envelope *e = static_cast<rk_envelope *>(slot);
  rk_envelope_init(e, type, len, RK_ENV_F_REPLY);
  e->dst = dst;
  std::memcpy(rk_envelope_payload(e), payload, len);
  rk_envelope_seal(e, rk_envelope_payload(e));
}

int rk_cxx_envelope_validate(const void *slot, uint32_t max_payload, uint32_t dst) {
  return static_cast<int>(
      rk_envelope_validate(static_cast<const rk_envelope *>(slot), nullptr, max_payload, dst));
}

}  // extern "C"
