/* headers_kernel.cu — device code that instantiates the portable ring, HLC, envelope and ordering
 * primitives, compiled by nvcc (tools/check_nvcc.cmake) and by NVRTC (test_headers_nvrtc.c) with no
 * system headers. The checks then look in the PTX for the system-scope acquire loads, release
 * stores and fences: if a device branch fell back to a host builtin, nvcc would delete it (warning
 * #20011-D, an error under -Werror all-warnings) and those instructions would be missing. */
#include "ringkernel/common.h"
#include "ringkernel/atomic.h"
#include "ringkernel/error.h"
#include "ringkernel/hlc.h"
#include "ringkernel/envelope.h"
#include "ringkernel/ring.h"

RK_STATIC_ASSERT(sizeof(rk_envelope) == 64, "envelope is one line on the device too");
RK_STATIC_ASSERT(sizeof(rk_ring) == 4 * RK_LINE, "ring header is four lines on the device too");

/* A consumer lane: pop, validate, merge the clock, reply through an SPSC ring. */
extern "C" __global__ void rk_test_lane(rk_ring *inbox, rk_ring *outbox, volatile uint64_t *clock,
                                        uint64_t pt, uint32_t me, int *result) {
  uint8_t buf[128];
  uint64_t pos = 0, fin = 0;
  uint32_t k;
  int rc = 0;
  rk_envelope *e = RK_CAST(rk_envelope *, buf);
  if (rk_ring_check(inbox) != RK_OK) return;
  k = rk_ring_peek_n(inbox, 4, &pos);
  if (k) {
    rk_envelope *in = RK_CAST(rk_envelope *, rk_ring_slot(inbox, pos));
    if (rk_envelope_validate(in, NULL, rk_ring_msg_max(inbox) - RK_ENVELOPE_SIZE, me) == RK_ENV_OK) {
      uint64_t old = rk_load_acquire_dev_u64(clock), next;
      do {
        next = rk_hlc_recv(old, in->hlc, pt);
      } while (!rk_cas_acq_rel_dev_u64(clock, &old, next));
      rc += rk_hlc_too_far_ahead(in->hlc, pt, RK_HLC_DEFAULT_MAX_OFFSET_US);
    }
    rk_ring_release_n(inbox, k);
  }
  rc += rk_ring_pop(inbox, buf, 96); /* a 128-byte slot holds 112 */
  rc += rk_ring_pop_n(inbox, buf, 16, 4);

  rk_envelope_init(e, 7, 32, RK_ENV_F_REPLY);
  e->hlc = rk_hlc_send(rk_load_relaxed_dev_u64(clock), pt);
  e->node = me;
  rk_envelope_seal(e, e + 1);
  rc += rk_ring_push(outbox, buf, 96);
  rc += rk_ring_push_n(outbox, buf, 32, 2);
  {
    void *slot = rk_ring_reserve(outbox);
    if (slot) {
      rk_ring__copy(slot, buf, 64);
      rk_ring_commit(outbox);
    }
  }
  rc += (int)rk_ring_count(outbox);
  rc += rk_ring_closed(inbox, &fin) ? (int)fin : 0;
  rc += rk_hlc_compare(e->hlc, me, rk_hlc_make(pt, 1), 0);
  rc += (int)rk_crc32c_portable(0, buf, 16);
  *result = rc;
}

/* K2K: many device producers into an MPSC inbox, then close it. */
extern "C" __global__ void rk_test_k2k(rk_ring *inbox, const uint8_t *msg, uint32_t len, int *result) {
  uint64_t pos = 0, fin = 0;
  int err = 0, n = 0;
  void *slot = rk_ring_mpsc_reserve(inbox, &pos, &err);
  if (slot) {
    rk_ring__copy(slot, msg, len);
    rk_ring_mpsc_commit(inbox, pos);
  }
  n += rk_ring_mpsc_push(inbox, msg, len);
  n += rk_ring_mpsc_push_n(inbox, msg, len, 2);
  if (threadIdx.x == 0) n += rk_ring_close(inbox, &fin);
  result[threadIdx.x] = n + err + (int)fin;
}

/* The ordering primitives one by one, at both scopes. */
extern "C" __global__ void rk_test_ordering(volatile uint64_t *w64, volatile uint32_t *w32, uint64_t *out) {
  uint64_t a = rk_load_acquire_sys_u64(w64);
  uint64_t b = rk_load_relaxed_sys_u64(w64 + 1);
  uint32_t c = rk_load_acquire_sys_u32(w32) + rk_load_relaxed_sys_u32(w32 + 1);
  uint64_t expected = a;
  rk_store_relaxed_sys_u64(w64 + 2, b);
  rk_fence_acq_rel_sys();
  rk_store_release_sys_u64(w64 + 3, a + b);
  rk_store_relaxed_sys_u32(w32 + 2, c);
  rk_store_release_sys_u32(w32 + 3, c + 1);
  rk_fence_seq_cst_sys();
  rk_store_release_dev_u64(w64 + 4, rk_load_acquire_dev_u64(w64 + 5));
  rk_store_relaxed_dev_u64(w64 + 6, rk_fetch_add_relaxed_dev_u64(w64 + 7, 1));
  rk_cas_relaxed_dev_u64(w64 + 8, &expected, b);
  rk_fence_acq_rel_dev();
  rk_cpu_relax();
  out[threadIdx.x] = a + b + c + expected;
}
