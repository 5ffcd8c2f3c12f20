/* test_ring.c — single-threaded behaviour of the rings of ring.h (and the allocation and argument
 * checks of queue.h): empty, full and wrap-around at capacities 1, 2 and 4 in SPSC and MPSC mode;
 * single and batch copies, in-place reserve/commit and peek/release, MPSC claims; close and the
 * final index; invalid geometry and memory; oversized messages leave the ring unchanged; and, in
 * white-box tests that set the index words directly, indices that wrap past 2^64 and a producers'
 * head cache left more than a lap behind by a preempted producer. */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#include <ringkernel.h>
#include <ringkernel/internals.h>

#include "queue/internal.h" /* rk__copy_msg, rk__slots (static inline) */

static const uint64_t caps[] = {1, 2, 4};
static const uint32_t modes[] = {RK_RING_SPSC, RK_RING_MPSC};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* One push/pop of a 64-bit value through the API that fits the ring's mode. */
static int push_u64(rk_ring *r, uint64_t v) {
  return r->mode == RK_RING_MPSC ? rk_ring_mpsc_push(r, &v, sizeof v) : rk_ring_push(r, &v, sizeof v);
}
static int push_n_u64(rk_ring *r, const uint64_t *v, uint32_t n) {
  return r->mode == RK_RING_MPSC ? rk_ring_mpsc_push_n(r, v, sizeof *v, n)
                                 : rk_ring_push_n(r, v, sizeof *v, n);
}
static uint64_t pop_u64(rk_ring *r) {
  uint64_t v = 0;
  assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_OK);
  return v;
}

static rk_ring *make_ring(uint64_t cap, uint32_t slot, uint32_t mode) {
  rk_ring *r = NULL;
  assert_int_equal(rk_ring_create(&r, cap, slot, mode), RK_OK);
  assert_non_null(r);
  assert_int_equal(rk_ring_check(r), RK_OK);
  return r;
}

/* ------------------------------------ geometry and init -------------------------------------- */

static void test_bad_geometry(void **state) {
  static const struct {
    uint64_t cap;
    uint32_t slot, mode;
  } bad[] = {
      {0, 64, RK_RING_SPSC},   {3, 64, RK_RING_SPSC},    {6, 64, RK_RING_MPSC},
      {12, 64, RK_RING_SPSC},  {1000, 64, RK_RING_MPSC}, {RK_RING_MAX_CAPACITY * 2, 64, RK_RING_SPSC},
      {UINT64_MAX, 64, RK_RING_SPSC}, {4, 32, RK_RING_SPSC}, {4, 32, RK_RING_MPSC},
      {4, 100, RK_RING_SPSC},  {4, 100, RK_RING_MPSC},   {4, 0, RK_RING_SPSC},
      {4, 63, RK_RING_SPSC},   {4, 65, RK_RING_SPSC},    {4, RK_RING_MAX_SLOT + 64, RK_RING_SPSC},
      {4, 64, 2},              {4, 64, 0xffffffffu},     {0, 0, 7},
  };
  size_t i, big = 1 << 16;
  void *mem = rk_test_aligned_alloc(RK_LINE, big);
  rk_ring *r;
  (void)state;
  assert_non_null(mem);
  for (i = 0; i < NELEM(bad); i++) {
    r = (rk_ring *)(uintptr_t)1; /* create must overwrite *out with NULL on failure */
    if (rk_ring_memsize(bad[i].cap, bad[i].slot, bad[i].mode) != 0)
      fail_msg("case %zu: memsize of an invalid geometry is not 0", i);
    assert_int_equal(rk_ring_check_geometry(bad[i].cap, bad[i].slot, bad[i].mode), RK_EINVAL);
    assert_int_equal(rk_ring_init(mem, big, bad[i].cap, bad[i].slot, bad[i].mode), RK_EINVAL);
    assert_int_equal(rk_ring_create(&r, bad[i].cap, bad[i].slot, bad[i].mode), RK_EINVAL);
    assert_null(r);
  }
  assert_int_equal(rk_ring_create(NULL, 4, 64, RK_RING_SPSC), RK_EINVAL);
  free(mem);
}

static void test_memsize_and_init(void **state) {
  size_t need;
  uint8_t *mem;
  rk_ring *r;
  uint64_t i;
  (void)state;
  /* header and slots: each slot holds its own sequence word */
  assert_int_equal(rk_ring_memsize(1, 64, RK_RING_SPSC), sizeof(rk_ring) + 64);
  assert_int_equal(rk_ring_memsize(1, 64, RK_RING_MPSC), sizeof(rk_ring) + 64);
  assert_int_equal(rk_ring_memsize(4, 128, RK_RING_MPSC), sizeof(rk_ring) + 4 * 128);
  assert_int_equal(rk_ring_memsize(1024, RK_RING_MAX_SLOT, RK_RING_SPSC), sizeof(rk_ring) + 1024ull * RK_RING_MAX_SLOT);
  assert_true(rk_ring_memsize(RK_RING_MAX_CAPACITY, 64, RK_RING_SPSC) != 0); /* the largest */
  assert_int_equal(sizeof(rk_ring), 512);

  need = rk_ring_memsize(8, 128, RK_RING_MPSC);
  mem = (uint8_t *)rk_test_aligned_alloc(RK_LINE, need + RK_LINE);
  assert_non_null(mem);
  /* NULL, misaligned (by a line's half and by a word), too small */
  assert_int_equal(rk_ring_init(NULL, need, 8, 128, RK_RING_MPSC), RK_EINVAL);
  assert_int_equal(rk_ring_init(mem + 64, need, 8, 128, RK_RING_MPSC), RK_EINVAL);
  assert_int_equal(rk_ring_init(mem + 8, need, 8, 128, RK_RING_MPSC), RK_EINVAL);
  assert_int_equal(rk_ring_init(mem, need - 1, 8, 128, RK_RING_MPSC), RK_EINVAL);
  assert_int_equal(rk_ring_init(mem, 0, 8, 128, RK_RING_MPSC), RK_EINVAL);
  /* init over garbage sets every header word */
  memset(mem, 0xee, need + RK_LINE);
  assert_int_equal(rk_ring_init(mem, need, 8, 128, RK_RING_MPSC), RK_OK);
  r = (rk_ring *)mem;
  assert_int_equal(rk_ring_check(r), RK_OK);
  assert_int_equal(r->magic, RK_RING_MAGIC);
  assert_int_equal(r->mode, RK_RING_MPSC);
  assert_int_equal(r->slot_size, 128);
  assert_int_equal(r->flags, 0);
  assert_int_equal(r->capacity, 8);
  assert_int_equal(r->mask, 7);
  assert_int_equal(r->slots_offset, sizeof(rk_ring));
  assert_int_equal(r->seq_offset, sizeof(rk_ring)); /* slot 0's word */
  assert_int_equal(r->head, 0);
  assert_int_equal(r->tail, 0);
  assert_int_equal(r->claim, 0);
  assert_int_equal(r->prod_head, 0);
  assert_int_equal(r->cons_sleeping, 0);
  assert_int_equal(r->prod_sleeping, 0);
  assert_int_equal(rk_ring_count(r), 0);
  assert_int_equal(rk_ring_head(r), 0);
  assert_false(rk_ring_closed(r, NULL));
  /* seq[i] = i + 1 - capacity: "not yet published" for position i */
  for (i = 0; i < 8; i++) assert_int_equal(*rk_ring__seq(r, i), i + 1 - 8);
  /* the word is each slot's first 8 bytes, 8 reserved zero bytes follow, then the message */
  for (i = 0; i < 8; i++) {
    assert_ptr_equal((const void *)rk_ring__seq(r, i), mem + 512 + i * 128);
    assert_int_equal(*(const uint64_t *)(mem + 512 + i * 128 + 8), 0);
  }
  assert_int_equal(rk_ring_msg_max(r), 128 - RK_RING_MSG_OFFSET);
  assert_int_equal(RK_RING_MSG_OFFSET, 16);
  /* message addressing: masked, slot_size apart, 16 bytes into each slot after the header */
  assert_ptr_equal(rk_ring_slot(r, 0), mem + 512 + 16);
  assert_ptr_equal(rk_ring_slot(r, 3), mem + 512 + 3 * 128 + 16);
  assert_ptr_equal(rk_ring_slot(r, 8), rk_ring_slot(r, 0));
  assert_ptr_equal(rk_ring_slot(r, UINT64_MAX), rk_ring_slot(r, 7));
  /* the exact size is enough; SPSC rings publish through sequence words too (the same layout) */
  assert_int_equal(rk_ring_memsize(8, 128, RK_RING_SPSC), rk_ring_memsize(8, 128, RK_RING_MPSC));
  assert_int_equal(rk_ring_memsize(8, 128, RK_RING_SPSC), 512 + 8 * 128);
  assert_int_equal(rk_ring_init(mem, rk_ring_memsize(8, 128, RK_RING_SPSC), 8, 128, RK_RING_SPSC), RK_OK);
  assert_int_equal(r->seq_offset, sizeof(rk_ring));
  for (i = 0; i < 8; i++) assert_int_equal(*rk_ring__seq(r, i), i + 1 - 8);
  assert_int_equal(r->mode, RK_RING_SPSC);

  /* rk_ring_check catches a damaged header */
  r->magic ^= 1;
  assert_int_equal(rk_ring_check(r), RK_ECORRUPT);
  r->magic ^= 1;
  r->mask = 3;
  assert_int_equal(rk_ring_check(r), RK_ECORRUPT);
  r->mask = 7;
  /* the words anywhere but in the slots (the array after the slots of the old layout) */
  r->seq_offset = sizeof(rk_ring) + 8 * 128;
  assert_int_equal(rk_ring_check(r), RK_ECORRUPT);
  r->seq_offset = sizeof(rk_ring);
  r->capacity = 6;
  assert_int_equal(rk_ring_check(r), RK_ECORRUPT);
  assert_int_equal(rk_ring_check(NULL), RK_EINVAL);
  free(mem);
}

/* rk_ring_check_mem: the header checked against the memory it sits in. A header that claims more
 * than the memory holds, however self-consistent, is refused (rk_ring_check alone passes it). */
static void test_check_mem(void **state) {
  size_t need = rk_ring_memsize(8, 128, RK_RING_SPSC), i;
  uint8_t *mem = (uint8_t *)rk_test_aligned_alloc(RK_LINE, need + RK_LINE);
  rk_ring *r = (rk_ring *)mem;
  (void)state;
  assert_non_null(mem);
  assert_int_equal(rk_ring_init(mem, need, 8, 128, RK_RING_SPSC), RK_OK);
  assert_int_equal(rk_ring_check_mem(r, need), RK_OK);
  assert_int_equal(rk_ring_check_mem(r, need + RK_LINE), RK_OK); /* more memory than needed is fine */
  assert_int_equal(rk_ring_check_mem(r, need - 1), RK_ECORRUPT); /* the last slot's last byte is outside */
  assert_int_equal(rk_ring_check_mem(r, sizeof(rk_ring)), RK_ECORRUPT);
  /* the caller's numbers are wrong: the header is not even read */
  assert_int_equal(rk_ring_check_mem(NULL, need), RK_EINVAL);
  assert_int_equal(rk_ring_check_mem(r, sizeof(rk_ring) - 1), RK_EINVAL);
  assert_int_equal(rk_ring_check_mem(r, 0), RK_EINVAL);
  assert_int_equal(rk_ring_check_mem((const rk_ring *)(mem + 64), need), RK_EINVAL);
  /* everything rk_ring_check refuses */
  r->magic ^= 1;
  assert_int_equal(rk_ring_check_mem(r, need), RK_ECORRUPT);
  r->magic ^= 1;
  r->mask = 3;
  assert_int_equal(rk_ring_check_mem(r, need), RK_ECORRUPT);
  r->mask = 7;

  /* Self-consistent headers that describe more memory than there is: twice the slots, larger
   * slots, both. rk_ring_check cannot tell; rk_ring_check_mem must. */
  {
    static const struct {
      uint64_t cap;
      uint32_t slot;
    } lies[] = {{16, 128}, {8, 192}, {8, 256}, {1ull << 32, 64}, {4, 1u << 24}, {32, 64}};
    for (i = 0; i < NELEM(lies); i++) {
      size_t lie = rk_ring_memsize(lies[i].cap, lies[i].slot, RK_RING_SPSC);
      r->capacity = lies[i].cap;
      r->mask = lies[i].cap - 1;
      r->slot_size = lies[i].slot;
      assert_int_equal(rk_ring_check(r), RK_OK);
      if (lie > need) {
        if (rk_ring_check_mem(r, need) != RK_ECORRUPT) fail_msg("case %zu: a %zu-byte ring passed in %zu bytes", i, lie, need);
      } else {
        assert_int_equal(rk_ring_check_mem(r, need), RK_OK); /* fewer bytes than there are: harmless */
      }
      assert_int_equal(rk_ring_check_mem(r, lie), RK_OK);
    }
  }
  free(mem);
}

static void test_ring_in_caller_memory(void **state) {
  static RK_ALIGNAS(128) uint8_t mem[512 + 4 * 64];
  rk_ring *r = (rk_ring *)mem;
  uint64_t v;
  (void)state;
  assert_int_equal(rk_ring_init(mem, sizeof mem, 4, 64, RK_RING_MPSC), RK_OK);
  assert_int_equal(push_u64(r, 11), RK_OK);
  assert_int_equal(push_u64(r, 12), RK_OK);
  assert_int_equal(pop_u64(r), 11);
  assert_int_equal(pop_u64(r), 12);
  assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_EAGAIN);
}

static void test_bad_arguments_of_waits(void **state) {
  rk_ring *r = make_ring(4, 64, RK_RING_SPSC);
  uint8_t big[65] = {0}; /* 49 bytes is one too many for a 64-byte slot (48 after its word) */
  (void)state;
  assert_int_equal(rk_ring_push_wait(NULL, big, 8, 0), RK_EINVAL);
  assert_int_equal(rk_ring_pop_wait(NULL, big, 8, 0), RK_EINVAL);
  assert_int_equal(rk_ring_wait_readable(NULL, 0), RK_EINVAL);
  assert_int_equal(rk_ring_wait_writable(NULL, 0), RK_EINVAL);
  assert_int_equal(rk_ring_push_wait(r, NULL, 8, 0), RK_EINVAL);
  assert_int_equal(rk_ring_pop_wait(r, NULL, 8, 0), RK_EINVAL);
  assert_int_equal(rk_ring_push_wait(r, big, 49, 0), RK_EMSGSIZE);
  assert_int_equal(rk_ring_pop_wait(r, big, 49, 0), RK_EMSGSIZE);
  assert_int_equal(rk_ring_count(r), 0);
  /* try-once semantics of a zero timeout */
  assert_int_equal(rk_ring_pop_wait(r, big, 8, 0), RK_ETIMEDOUT);
  assert_int_equal(rk_ring_wait_readable(r, 0), RK_ETIMEDOUT);
  assert_int_equal(rk_ring_wait_writable(r, 0), RK_OK);
  assert_int_equal(rk_ring_push_wait(r, big, 0, 0), RK_OK); /* zero-length message */
  assert_int_equal(rk_ring_wait_readable(r, 0), RK_OK);
  /* a damaged ring is refused */
  r->magic = 0;
  assert_int_equal(rk_ring_push_wait(r, big, 8, 0), RK_EINVAL);
  assert_int_equal(rk_ring_pop_wait(r, big, 8, 0), RK_EINVAL);
  r->magic = RK_RING_MAGIC;
  /* NULL is harmless for the wake-ups and destroy */
  rk_ring_notify_consumer(NULL);
  rk_ring_notify_producers(NULL);
  rk_ring_wake_all(NULL);
  rk_ring_destroy(NULL);
  rk_ring_destroy(r);
}

/* ------------------------------------ empty, full, wrap -------------------------------------- */

static void test_empty_full_wrap(void **state) {
  size_t ic, im;
  (void)state;
  for (im = 0; im < NELEM(modes); im++)
    for (ic = 0; ic < NELEM(caps); ic++) {
      uint64_t cap = caps[ic], next_in = 0, next_out = 0, i, lap;
      rk_ring *r = make_ring(cap, 64, modes[im]);
      uint64_t v;
      /* empty */
      assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_EAGAIN);
      assert_null(rk_ring_peek(r));
      /* fill to full */
      for (i = 0; i < cap; i++) assert_int_equal(push_u64(r, next_in++), RK_OK);
      assert_int_equal(rk_ring_count(r), cap);
      assert_int_equal(push_u64(r, 999), RK_EAGAIN);
      assert_int_equal(rk_ring_count(r), cap);
      /* many laps with a varying fill, so every slot is reused at every offset */
      for (lap = 0; lap < 20; lap++) {
        uint64_t out = 1 + lap % cap;
        for (i = 0; i < out; i++) assert_int_equal(pop_u64(r), next_out++);
        assert_int_equal(rk_ring_count(r), cap - out);
        for (i = 0; i < out; i++) assert_int_equal(push_u64(r, next_in++), RK_OK);
        assert_int_equal(push_u64(r, 999), RK_EAGAIN);
      }
      /* drain to empty */
      for (i = 0; i < cap; i++) assert_int_equal(pop_u64(r), next_out++);
      assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_EAGAIN);
      assert_int_equal(rk_ring_count(r), 0);
      assert_int_equal(next_in, next_out);
      assert_int_equal(rk_ring_head(r), next_out);
      /* alternate single push/pop: the simplest wrap */
      for (i = 0; i < 5 * cap + 1; i++) {
        assert_int_equal(push_u64(r, next_in++), RK_OK);
        assert_int_equal(pop_u64(r), next_out++);
      }
      assert_int_equal(rk_ring_count(r), 0);
      rk_ring_destroy(r);
    }
}

static void test_batches_partial(void **state) {
  size_t im;
  (void)state;
  for (im = 0; im < NELEM(modes); im++) {
    rk_ring *r = make_ring(4, 64, modes[im]);
    uint64_t in[8] = {0, 1, 2, 3, 4, 5, 6, 7}, out[8];
    int k;
    assert_int_equal(push_n_u64(r, in, 0), 0);
    assert_int_equal(push_n_u64(r, in, 3), 3);
    assert_int_equal(push_n_u64(r, in + 3, 5), 1); /* nearly full: a partial batch */
    assert_int_equal(push_n_u64(r, in + 4, 4), 0); /* full */
    assert_int_equal(rk_ring_count(r), 4);
    memset(out, 0xff, sizeof out);
    assert_int_equal(rk_ring_pop_n(r, out, sizeof(uint64_t), 0), 0);
    assert_int_equal(rk_ring_pop_n(r, out, sizeof(uint64_t), 3), 3);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 2);
    assert_int_equal(out[3], UINT64_MAX); /* nothing written beyond the count */
    /* a batch that wraps around the end of the slot array */
    assert_int_equal(push_n_u64(r, in + 4, 4), 3);
    assert_int_equal(rk_ring_pop_n(r, out, sizeof(uint64_t), 8), 4); /* partial: 4 of 8 */
    for (k = 0; k < 4; k++) assert_int_equal(out[k], 3 + (uint64_t)k);
    assert_int_equal(rk_ring_pop_n(r, out, sizeof(uint64_t), 8), 0);
    /* messages of different sizes in a batch layout: 24 bytes apart */
    {
      uint8_t src[3 * 24], dst[3 * 24];
      int i;
      for (i = 0; i < 72; i++) src[i] = (uint8_t)(i + 1);
      k = r->mode == RK_RING_MPSC ? rk_ring_mpsc_push_n(r, src, 24, 3) : rk_ring_push_n(r, src, 24, 3);
      assert_int_equal(k, 3);
      assert_int_equal(rk_ring_pop_n(r, dst, 24, 3), 3);
      assert_memory_equal(src, dst, sizeof src);
    }
    rk_ring_destroy(r);
  }
}

/* ------------------------------------ in place ----------------------------------------------- */

static void test_spsc_reserve_commit_peek_release(void **state) {
  rk_ring *r = make_ring(4, 128, RK_RING_SPSC);
  uint64_t pos = 0, pos2 = 0;
  uint8_t *slot;
  uint32_t k, i;
  (void)state;
  /* reserve: the slot is visible to nobody before commit */
  slot = (uint8_t *)rk_ring_reserve(r);
  assert_non_null(slot);
  assert_ptr_equal(slot, rk_ring_slot(r, 0));
  memset(slot, 0x5a, 112); /* the whole message: rk_ring_msg_max */
  assert_null(rk_ring_peek(r));
  assert_int_equal(rk_ring_count(r), 0);
  rk_ring_commit(r);
  assert_int_equal(rk_ring_count(r), 1);
  /* peek: in place, not consumed until release */
  {
    uint8_t *p = (uint8_t *)rk_ring_peek(r), want[112];
    memset(want, 0x5a, sizeof want);
    assert_ptr_equal(p, slot);
    assert_memory_equal(p, want, 112);
    assert_ptr_equal(rk_ring_peek(r), p); /* peeking twice gives the same message */
    assert_int_equal(rk_ring_count(r), 1);
    rk_ring_release(r);
    assert_int_equal(rk_ring_count(r), 0);
    assert_null(rk_ring_peek(r));
  }
  /* reserve_n: partial when nearly full, 0 when full; commit_n may publish a prefix */
  assert_int_equal(rk_ring_reserve_n(r, 0, &pos), 0);
  k = rk_ring_reserve_n(r, 3, &pos);
  assert_int_equal(k, 3);
  assert_int_equal(pos, 1);
  for (i = 0; i < 3; i++) memset(rk_ring_slot(r, pos + i), (int)(0x10 + i), 112);
  rk_ring_commit_n(r, 2); /* only the first two */
  assert_int_equal(rk_ring_peek_n(r, 4, &pos2), 2);
  assert_int_equal(pos2, 1);
  k = rk_ring_reserve_n(r, 8, &pos); /* the third is still ours, plus one free slot */
  assert_int_equal(k, 2);
  assert_int_equal(pos, 3);
  memset(rk_ring_slot(r, 4), 0x13, 112);
  rk_ring_commit_n(r, 2);
  assert_null(rk_ring_reserve(r)); /* full */
  assert_int_equal(rk_ring_reserve_n(r, 1, &pos), 0);
  /* peek_n / release_n across the wrap */
  assert_int_equal(rk_ring_peek_n(r, 8, &pos2), 4);
  assert_int_equal(pos2, 1);
  for (i = 0; i < 4; i++) assert_int_equal(rk_ring_slot(r, pos2 + i)[111], 0x10 + i);
  rk_ring_release_n(r, 1);
  assert_int_equal(rk_ring_peek_n(r, 8, &pos2), 3);
  assert_int_equal(pos2, 2);
  rk_ring_release_n(r, 3);
  assert_int_equal(rk_ring_peek_n(r, 8, &pos2), 0);
  assert_int_equal(rk_ring_head(r), 5);
  assert_int_equal(rk_ring_reserve_n(r, 8, &pos), 4);
  rk_ring_destroy(r);
}

static void test_mpsc_reserve_commit(void **state) {
  rk_ring *r = make_ring(4, 64, RK_RING_MPSC);
  uint64_t pos = 0, pos2 = 0, p0 = 0;
  int k, err = 12345;
  uint8_t *slot;
  (void)state;
  k = rk_ring_mpsc_reserve_n(r, 3, &p0);
  assert_int_equal(k, 3);
  assert_int_equal(p0, 0);
  /* claimed but unpublished: counted, invisible to the consumer */
  assert_int_equal(rk_ring_count(r), 3);
  assert_int_equal(rk_ring_peek_n(r, 4, &pos), 0);
  *(uint64_t *)rk_ring_slot(r, 1) = 101;
  *(uint64_t *)rk_ring_slot(r, 2) = 102;
  rk_ring_mpsc_commit_n(r, 1, 2); /* out of order: position 0 is still unpublished */
  assert_int_equal(rk_ring_peek_n(r, 4, &pos), 0);
  assert_null(rk_ring_peek(r));
  *(uint64_t *)rk_ring_slot(r, 0) = 100;
  rk_ring_mpsc_commit(r, 0);
  assert_int_equal(rk_ring_peek_n(r, 4, &pos), 3);
  assert_int_equal(pos, 0);
  assert_int_equal(rk_ring_peek_n(r, 2, &pos), 2);
  /* one free slot: asking for more gets a partial claim; n == 0 means one */
  k = rk_ring_mpsc_reserve_n(r, 5, &pos);
  assert_int_equal(k, 1);
  assert_int_equal(pos, 3);
  assert_int_equal(rk_ring_mpsc_reserve_n(r, 0, &pos2), 0); /* full */
  slot = (uint8_t *)rk_ring_mpsc_reserve(r, &pos2, &err);
  assert_null(slot);
  assert_int_equal(err, RK_EAGAIN);
  assert_null(rk_ring_mpsc_reserve(r, &pos2, NULL));
  *(uint64_t *)rk_ring_slot(r, 3) = 103;
  rk_ring_mpsc_commit_n(r, 3, 1);
  /* consume in place */
  assert_int_equal(*(uint64_t *)rk_ring_peek(r), 100);
  rk_ring_release(r);
  assert_int_equal(pop_u64(r), 101);
  /* single-slot reserve wraps into slot 0 */
  slot = (uint8_t *)rk_ring_mpsc_reserve(r, &pos, &err);
  assert_non_null(slot);
  assert_int_equal(err, RK_OK);
  assert_int_equal(pos, 4);
  assert_ptr_equal(slot, rk_ring_slot(r, 0));
  *(uint64_t *)slot = 104;
  assert_int_equal(rk_ring_mpsc_reserve_n(r, 0, &pos2), 1); /* n == 0 claims one */
  assert_int_equal(pos2, 5);
  *(uint64_t *)rk_ring_slot(r, pos2) = 105;
  rk_ring_mpsc_commit(r, pos2); /* 5 before 4: the consumer stops at 4 */
  assert_int_equal(rk_ring_peek_n(r, 8, &pos), 2); /* 102, 103 */
  assert_int_equal(pop_u64(r), 102);
  assert_int_equal(pop_u64(r), 103);
  assert_int_equal(rk_ring_peek_n(r, 8, &pos), 0);
  rk_ring_mpsc_commit(r, 4);
  assert_int_equal(rk_ring_peek_n(r, 8, &pos), 2);
  assert_int_equal(pop_u64(r), 104);
  assert_int_equal(pop_u64(r), 105);
  assert_int_equal(rk_ring_count(r), 0);
  rk_ring_destroy(r);
}

/* ------------------------------------ close -------------------------------------------------- */

static void test_close(void **state) {
  size_t im;
  (void)state;
  for (im = 0; im < NELEM(modes); im++) {
    rk_ring *r = make_ring(4, 64, modes[im]);
    uint64_t fin = 0, v = 7, pos = 0;
    int err;
    assert_int_equal(push_u64(r, 1), RK_OK);
    assert_int_equal(push_u64(r, 2), RK_OK);
    assert_int_equal(push_u64(r, 3), RK_OK);
    assert_int_equal(pop_u64(r), 1);
    assert_false(rk_ring_closed(r, &fin));
    assert_int_equal(rk_ring_close(r, &fin), RK_OK);
    assert_int_equal(fin, 3);
    assert_true(rk_ring_closed(r, &fin));
    assert_true(rk_ring_closed(r, NULL));
    assert_int_equal(fin, 3);
    /* closing again: RK_ECLOSED, same final index */
    fin = 0;
    assert_int_equal(rk_ring_close(r, &fin), RK_ECLOSED);
    assert_int_equal(fin, 3);
    assert_int_equal(rk_ring_close(r, NULL), RK_ECLOSED);
    /* producers are refused */
    assert_int_equal(push_u64(r, 4), RK_ECLOSED);
    assert_int_equal(push_n_u64(r, &v, 1), RK_ECLOSED);
    assert_int_equal(rk_ring_push_wait(r, &v, sizeof v, 1000000), RK_ECLOSED);
    assert_int_equal(rk_ring_wait_writable(r, 1000000), RK_ECLOSED);
    if (r->mode == RK_RING_MPSC) {
      assert_int_equal(rk_ring_mpsc_reserve_n(r, 1, &pos), RK_ECLOSED);
      assert_null(rk_ring_mpsc_reserve(r, &pos, &err));
      assert_int_equal(err, RK_ECLOSED);
    }
    assert_int_equal(rk_ring_count(r), 2);
    /* the consumer drains what was accepted, then sees the end */
    assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_OK);
    assert_int_equal(v, 2);
    assert_int_equal(rk_ring_wait_readable(r, 0), RK_OK);
    assert_int_equal(pop_u64(r), 3);
    assert_int_equal(rk_ring_head(r), fin);
    assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_EAGAIN);
    assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_ECLOSED);
    assert_int_equal(rk_ring_wait_readable(r, -1), RK_ECLOSED); /* even "forever" returns */
    rk_ring_destroy(r);
  }
  /* an empty ring closed at once */
  {
    rk_ring *r = make_ring(2, 64, RK_RING_SPSC);
    uint64_t fin = 99, v;
    assert_int_equal(rk_ring_close(r, &fin), RK_OK);
    assert_int_equal(fin, 0);
    assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, -1), RK_ECLOSED);
    rk_ring_destroy(r);
  }
}

/* MPSC: a slot claimed before the close is inside the final index and must still be delivered;
 * the consumer is not told "closed" until it has it. */
static void test_close_with_claimed_slot(void **state) {
  rk_ring *r = make_ring(4, 64, RK_RING_MPSC);
  uint64_t fin = 0, pos = 0, v = 0;
  int err = 0;
  uint64_t *slot;
  (void)state;
  assert_int_equal(push_u64(r, 1), RK_OK);
  slot = (uint64_t *)rk_ring_mpsc_reserve(r, &pos, &err);
  assert_non_null(slot);
  assert_int_equal(pos, 1);
  assert_int_equal(rk_ring_close(r, &fin), RK_OK);
  assert_int_equal(fin, 2); /* includes the claimed position */
  assert_int_equal(pop_u64(r), 1);
  assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_ETIMEDOUT); /* not ECLOSED */
  *slot = 2;
  rk_ring_mpsc_commit(r, pos); /* the claimer publishes after the close */
  assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_OK);
  assert_int_equal(v, 2);
  assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_ECLOSED);
  rk_ring_destroy(r);
}

/* ------------------------------------ oversized messages ------------------------------------- */

static void test_message_too_large(void **state) {
  size_t im;
  (void)state;
  for (im = 0; im < NELEM(modes); im++) {
    rk_ring *r = make_ring(4, 128, modes[im]);
    uint8_t msg[256], out[256], want[112];
    uint64_t c;
    int i;
    for (i = 0; i < 112; i++) want[i] = (uint8_t)(200 - i);
    /* a message of exactly the slot's room (the slot less its 16-byte word) fits */
    assert_int_equal(rk_ring_msg_max(r), 112);
    assert_int_equal(r->mode == RK_RING_MPSC ? rk_ring_mpsc_push(r, want, 112) : rk_ring_push(r, want, 112),
                     RK_OK);
    memset(msg, 0x77, sizeof msg);
    c = rk_ring_count(r);
    assert_int_equal(rk_ring_push(r, msg, 113), RK_EMSGSIZE);
    assert_int_equal(rk_ring_push_n(r, msg, 113, 1), RK_EMSGSIZE);
    assert_int_equal(rk_ring_mpsc_push(r, msg, 113), RK_EMSGSIZE);
    assert_int_equal(rk_ring_mpsc_push_n(r, msg, 113, 1), RK_EMSGSIZE);
    assert_int_equal(rk_ring_push_wait(r, msg, 256, 1000000), RK_EMSGSIZE);
    assert_int_equal(rk_ring_count(r), c);
    /* the consumer refuses to copy more than a slot, and consumes nothing */
    assert_int_equal(rk_ring_pop(r, out, 113), RK_EMSGSIZE);
    assert_int_equal(rk_ring_pop_n(r, out, 113, 1), RK_EMSGSIZE);
    assert_int_equal(rk_ring_pop_wait(r, out, 113, 1000000), RK_EMSGSIZE);
    assert_int_equal(rk_ring_count(r), c);
    /* the next pop yields the previous message intact */
    memset(out, 0, sizeof out);
    assert_int_equal(rk_ring_pop(r, out, 112), RK_OK);
    assert_memory_equal(out, want, 112);
    assert_int_equal(rk_ring_pop(r, out, 112), RK_EAGAIN);
    rk_ring_destroy(r);
  }
}

/* White box: an SPSC producer stopped between its two stores (the slot's sequence word, then its
 * own tail). The consumer may already have taken the message, so head is one past tail for a
 * moment; rk_ring_count must say 0 then, not 2^64 - 1. */
static void test_spsc_count_mid_publish(void **state) {
  rk_ring *r = make_ring(4, 64, RK_RING_SPSC);
  uint64_t v = 42, got = 0, t;
  (void)state;
  t = r->tail;
  memcpy(rk_ring_slot(r, t), &v, sizeof v);
  rk_ring__publish(r, t, 1); /* published; tail not yet stored */
  assert_int_equal(rk_ring_count(r), 0);
  assert_int_equal(pop_u64(r), 42);
  assert_int_equal(rk_ring_head(r), t + 1);
  assert_int_equal(rk_ring_count(r), 0); /* head ahead of tail: clamped */
  rk_store_relaxed_sys_u64(&r->tail, t + 1); /* the producer's second store */
  assert_int_equal(rk_ring_count(r), 0);
  assert_int_equal(rk_ring_pop(r, &got, sizeof got), RK_EAGAIN);
  assert_int_equal(push_u64(r, 7), RK_OK);
  assert_int_equal(rk_ring_count(r), 1);
  rk_ring_destroy(r);
}

/* ------------------------------------ indices near 2^64 (white box) -------------------------- */

/* Move an empty ring's indices to `base`, consistently: both sides' words and caches, the MPSC
 * claim and the sequence words of the positions of the next lap (seq = p + 1 - capacity: not yet). */
static void set_indices(rk_ring *r, uint64_t base) {
  uint64_t p;
  r->head = r->tail = r->prod_head = base;
  if (r->mode == RK_RING_MPSC) r->claim = base;
  for (p = base; p != base + r->capacity; p++) *rk_ring__seq(r, p) = p + 1 - r->capacity;
}

static void test_spsc_wrap_2_64(void **state) {
  size_t ic;
  (void)state;
  for (ic = 0; ic < NELEM(caps); ic++) {
    uint64_t cap = caps[ic], base = UINT64_MAX - cap - 1, next_in = 0, next_out = 0, i, pos;
    rk_ring *r = make_ring(cap, 64, RK_RING_SPSC);
    uint64_t batch[8];
    set_indices(r, base);
    assert_int_equal(rk_ring_count(r), 0);
    /* fill across the 2^64 boundary: full is detected by (tail - head) == capacity */
    for (i = 0; i < cap; i++) assert_int_equal(push_u64(r, next_in++), RK_OK);
    assert_int_equal(push_u64(r, 99), RK_EAGAIN);
    assert_int_equal(rk_ring_count(r), cap);
    assert_int_equal(rk_ring_peek_n(r, 8, &pos), cap);
    assert_int_equal(pos, base);
    /* several laps through the boundary, single and batch */
    for (i = 0; i < 4 * cap + 3; i++) {
      assert_int_equal(pop_u64(r), next_out++);
      assert_int_equal(push_u64(r, next_in++), RK_OK);
      assert_int_equal(push_u64(r, 99), RK_EAGAIN);
      assert_int_equal(rk_ring_count(r), cap);
    }
    assert_true(rk_ring_head(r) < base); /* the head has wrapped past zero */
    assert_int_equal(rk_ring_pop_n(r, batch, sizeof(uint64_t), 8), cap);
    for (i = 0; i < cap; i++) assert_int_equal(batch[i], next_out++);
    assert_int_equal(rk_ring_count(r), 0);
    /* a batch that straddles the boundary itself */
    set_indices(r, UINT64_MAX - (cap > 1 ? cap / 2 : 0));
    for (i = 0; i < cap; i++) batch[i] = next_in++;
    assert_int_equal(push_n_u64(r, batch, (uint32_t)cap), cap);
    assert_int_equal(push_n_u64(r, batch, 1), 0);
    memset(batch, 0, sizeof batch);
    assert_int_equal(rk_ring_pop_n(r, batch, sizeof(uint64_t), 8), cap);
    for (i = 0; i < cap; i++) assert_int_equal(batch[i], next_out++);
    /* close at a wrapped index: the final index is exact */
    assert_int_equal(push_u64(r, next_in++), RK_OK);
    {
      uint64_t fin, want = r->tail, v;
      assert_int_equal(rk_ring_close(r, &fin), RK_OK);
      assert_int_equal(fin, want);
      assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_OK);
      assert_int_equal(v, next_out++);
      assert_int_equal(rk_ring_pop_wait(r, &v, sizeof v, 1000000), RK_ECLOSED);
    }
    rk_ring_destroy(r);
  }
}

/* The MPSC consumer across 2^64: positions published out of order by "producers" (commit called
 * directly, as a producer does after its claim), the consumer stops at the first gap, and the
 * sequence words compare by signed difference when p + 1 wraps to 0. (The claim word itself cannot
 * be moved here: its top bit is RK_RING_CLOSED.) */
static void test_mpsc_consumer_wrap_2_64(void **state) {
  const uint64_t cap = 4, base = UINT64_MAX - 2; /* positions ..FD ..FE ..FF 0 1 ... */
  rk_ring *r = make_ring(cap, 64, RK_RING_MPSC);
  uint64_t p, pos = 0, v = 0, lap;
  (void)state;
  set_indices(r, base);
  r->claim = 0; /* not used by the consumer */
  assert_int_equal(rk_ring_peek_n(r, 4, &pos), 0);
  for (lap = 0; lap < 3; lap++) {
    uint64_t first = base + lap * cap;
    /* publish positions first+3, first+1, first+2, then first */
    static const int order[4] = {3, 1, 2, 0};
    int j;
    for (j = 0; j < 4; j++) {
      p = first + (uint64_t)order[j];
      *(uint64_t *)rk_ring_slot(r, p) = p;
      rk_ring_mpsc_commit(r, p);
      assert_int_equal(rk_ring_peek_n(r, 8, &pos), j == 3 ? 4 : 0);
    }
    assert_int_equal(pos, first);
    for (j = 0; j < 4; j++) {
      assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_OK);
      assert_int_equal(v, first + (uint64_t)j);
    }
    /* the slots now hold last lap's sequence values: not ready for this lap's positions */
    assert_int_equal(rk_ring_peek_n(r, 8, &pos), 0);
    assert_int_equal(rk_ring_pop(r, &v, sizeof v), RK_EAGAIN);
  }
  assert_int_equal(rk_ring_head(r), base + 3 * cap);
  rk_ring_destroy(r);
}

/* MPSC producers and consumer together at high indices, well past 2^32 and close to the largest
 * position the claim word can hold. */
static void test_mpsc_high_indices(void **state) {
  size_t ic;
  (void)state;
  for (ic = 0; ic < NELEM(caps); ic++) {
    uint64_t cap = caps[ic], base = RK_RING_CLOSED - 1000, next_in = 0, next_out = 0, i;
    rk_ring *r = make_ring(cap, 64, RK_RING_MPSC);
    set_indices(r, base);
    for (i = 0; i < 60; i++) {
      uint64_t j;
      for (j = 0; j < cap; j++) assert_int_equal(push_u64(r, next_in++), RK_OK);
      assert_int_equal(push_u64(r, 99), RK_EAGAIN);
      assert_int_equal(rk_ring_count(r), cap);
      for (j = 0; j < cap; j++) assert_int_equal(pop_u64(r), next_out++);
    }
    assert_int_equal(rk_ring_head(r), base + 60 * cap);
    assert_false(rk_ring_closed(r, NULL));
    rk_ring_destroy(r);
  }
}

/* A producer that reads head, is preempted, and later stores its (now old) value into the shared
 * head cache leaves prod_head behind — by more than a lap if the others went on meanwhile. The
 * next producer must notice the cache is useless and re-read head, not report "full" forever. */
static void test_mpsc_stale_head_cache(void **state) {
  rk_ring *r = make_ring(4, 64, RK_RING_MPSC);
  uint64_t i, pos = 0, next_in = 0, next_out = 0;
  (void)state;
  for (i = 0; i < 8; i++) assert_int_equal(push_u64(r, next_in++), i < 4 ? RK_OK : RK_EAGAIN);
  next_in = 4;
  for (i = 0; i < 4; i++) assert_int_equal(pop_u64(r), next_out++);
  for (i = 0; i < 4; i++) assert_int_equal(push_u64(r, next_in++), RK_OK);
  for (i = 0; i < 4; i++) assert_int_equal(pop_u64(r), next_out++);
  assert_int_equal(r->claim, 8);
  assert_int_equal(rk_ring_head(r), 8);
  r->prod_head = 0; /* the preempted producer's late store: two laps behind claim */
  assert_int_equal(rk_ring_count(r), 0);
  assert_int_equal(rk_ring_wait_writable(r, 0), RK_OK);
  assert_int_equal(push_u64(r, next_in++), RK_OK); /* the ring is empty: must not be "full" */
  assert_int_equal(rk_ring_mpsc_reserve_n(r, 8, &pos), 3);
  assert_int_equal(pos, 9);
  rk_ring_mpsc_commit_n(r, pos, 3);
  assert_int_equal(pop_u64(r), next_out++);
  /* also from a cache exactly one position more than a lap behind */
  r->prod_head = r->head - 1 - r->capacity;
  assert_int_equal(rk_ring_count(r), 3);
  assert_int_equal(push_u64(r, next_in), RK_OK);
  assert_int_equal(push_u64(r, 99), RK_EAGAIN); /* and really full now */
  rk_ring_destroy(r);
}

/* The message paths' inline copy (issue 16): every length 0..200 (the inline cases up to 64, the
 * C library beyond), from and to every alignment 0..15, copies exactly n bytes: the bytes before
 * and after the destination's n are untouched; and it reads and writes nothing outside its n
 * bytes (heap blocks of exactly n, checked by the sanitizer builds). */
static void test_copy_msg(void **state) {
  uint8_t src[256], dst[256 + 64];
  uint32_t n, so, d0, i;
  (void)state;
  for (i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 37 + 11);
  for (n = 0; n <= 200; n++)
    for (so = 0; so < 16; so++)
      for (d0 = 0; d0 < 16; d0++) {
        const uint32_t at = 16 + d0; /* guard bytes in front */
        memset(dst, 0xcc, sizeof dst);
        rk__copy_msg(dst + at, src + so, n);
        for (i = 0; i < at; i++) assert_int_equal(dst[i], 0xcc);
        assert_memory_equal(dst + at, src + so, n);
        for (i = at + n; i < sizeof dst; i++) assert_int_equal(dst[i], 0xcc);
      }
  /* from and to blocks of exactly n bytes: under the sanitizers (ASan) a byte read or written past
   * either end fails the test */
  for (n = 1; n <= 200; n++) {
    uint8_t *from = (uint8_t *)malloc(n), *to = (uint8_t *)malloc(n);
    assert_non_null(from);
    assert_non_null(to);
    memcpy(from, src, n);
    rk__copy_msg(to, from, n);
    assert_memory_equal(to, src, n);
    free(from);
    free(to);
  }
}

/* The cached slot geometry addresses what rk_ring_slot addresses, over laps and for slot sizes
 * of one line and more (the prefetches' second line). */
static void test_slot_geometry(void **state) {
  static const uint32_t slots[] = {64, 128, 256};
  uint32_t s;
  uint64_t pos;
  (void)state;
  for (s = 0; s < 3; s++) {
    rk_ring *r = make_ring(8, slots[s], RK_RING_SPSC);
    rk__slots g = rk__slots_of(r);
    assert_int_equal(g.size, slots[s]);
    for (pos = 0; pos < 40; pos++) {
      assert_ptr_equal(rk__slot_msg(&g, pos), rk_ring_slot(r, pos));
      rk__prefetch_at(&g, pos); /* hints: must not fault on any slot */
      rk__prefetchw_at(&g, pos);
    }
    rk_ring_destroy(r);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_geometry),
      cmocka_unit_test(test_memsize_and_init),
      cmocka_unit_test(test_check_mem),
      cmocka_unit_test(test_ring_in_caller_memory),
      cmocka_unit_test(test_bad_arguments_of_waits),
      cmocka_unit_test(test_empty_full_wrap),
      cmocka_unit_test(test_batches_partial),
      cmocka_unit_test(test_spsc_reserve_commit_peek_release),
      cmocka_unit_test(test_mpsc_reserve_commit),
      cmocka_unit_test(test_close),
      cmocka_unit_test(test_close_with_claimed_slot),
      cmocka_unit_test(test_message_too_large),
      cmocka_unit_test(test_spsc_count_mid_publish),
      cmocka_unit_test(test_spsc_wrap_2_64),
      cmocka_unit_test(test_mpsc_consumer_wrap_2_64),
      cmocka_unit_test(test_mpsc_high_indices),
      cmocka_unit_test(test_mpsc_stale_head_cache),
      cmocka_unit_test(test_copy_msg),
      cmocka_unit_test(test_slot_geometry),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
