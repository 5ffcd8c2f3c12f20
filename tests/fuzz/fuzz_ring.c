/* fuzz_ring.c — libFuzzer target: the ring consumer and producer on memory an attacker wrote.
 *
 * A ring is built in a heap block of exactly mem_size bytes (ASan reports any access past it),
 * either from raw input bytes (header, slots and sequence words all attacker-chosen) or by
 * rk_ring_init with input geometry followed by input patches anywhere in the block (a valid ring
 * a peer then scribbled over), optionally after rewriting line 0 to another geometry with magic,
 * mask and offsets that agree with it (a header that lies about the memory behind it). It is adopted the way a ring from shared memory must be:
 * rk_ring_check_mem(r, mem_size). If the check refuses it, nothing more is done (it must refuse
 * with RK_EINVAL or RK_ECORRUPT). If it accepts, the rest of the input drives consumer and
 * producer operations of ring.h and the host waits of queue.h (timeout 0), interleaved with input
 * writes to the index, parking and sequence words (never to line 0: a rewrite of the geometry
 * after the check is outside what any check can cover, see rk_ring_check_mem). Every access must
 * stay inside the block, whatever the indices and sequence words say.
 *
 * Built with -DFUZZ_RING_HEADER_ONLY the adoption uses rk_ring_check instead, which is what the
 * library offered before issue 11 item 8: libFuzzer then finds the overflow in seconds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringkernel.h>
#include <ringkernel/internals.h>

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "fuzz_ring: %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
      abort();                                                                  \
    }                                                                           \
  } while (0)

#define MAX_MEM (1u << 20)

typedef struct input {
  const uint8_t *p;
  size_t left;
} input;

static uint64_t take(input *in, unsigned bytes) {
  uint64_t v = 0;
  unsigned i;
  for (i = 0; i < bytes && in->left; i++, in->left--) v |= (uint64_t)*in->p++ << (8 * i);
  return v;
}

/* Touch every byte of a message the ring handed out (rk_ring_msg_max of them): a read and a write. */
static void touch(rk_ring *r, void *slot) {
  volatile uint8_t *s = (volatile uint8_t *)slot;
  uint32_t i, n = rk_ring_msg_max(r);
  for (i = 0; i < n; i += 8) s[i] = (uint8_t)(s[i] + 1);
  s[n - 1] = s[0];
}

static void run_ops(rk_ring *r, input *in) {
  uint8_t buf[4096 * 2];
  uint32_t slot = r->slot_size, n, len, k, i;
  uint64_t pos, v;
  int ops = 0;
  memset(buf, 0x5a, sizeof buf);
  while (in->left && ops++ < 256) {
    uint8_t op = (uint8_t)take(in, 1);
    len = (uint32_t)take(in, 2) % (slot + 1); /* a length the slot holds; larger ones are refused */
    if (len > sizeof buf / 2) len = sizeof buf / 2;
    n = 1 + (uint32_t)(op >> 4);             /* 1..16 */
    switch (op & 15) {
      case 0: /* consumer: peek in place, read every slot, release */
        k = rk_ring_peek_n(r, n, &pos);
        CHECK(k <= n);
        for (i = 0; i < k; i++) touch(r, rk_ring_slot(r, pos + i));
        if (k) rk_ring_release_n(r, k);
        break;
      case 1:
        (void)rk_ring_pop(r, buf, len);
        break;
      case 2:
        if (len == 0) len = 1;
        if ((size_t)len * n > sizeof buf) n = (uint32_t)(sizeof buf / len);
        (void)rk_ring_pop_n(r, buf, len, n);
        break;
      case 3: /* producer: one copy */
        if (r->mode == RK_RING_MPSC)
          (void)rk_ring_mpsc_push(r, buf, len);
        else
          (void)rk_ring_push(r, buf, len);
        break;
      case 4:
        if (len == 0) len = 1;
        if ((size_t)len * n > sizeof buf) n = (uint32_t)(sizeof buf / len);
        if (r->mode == RK_RING_MPSC)
          (void)rk_ring_mpsc_push_n(r, buf, len, n);
        else
          (void)rk_ring_push_n(r, buf, len, n);
        break;
      case 5: /* producer: reserve in place, fill every slot, publish */
        if (r->mode == RK_RING_MPSC) {
          int got = rk_ring_mpsc_reserve_n(r, n, &pos);
          CHECK(got <= (int)n);
          for (i = 0; got > 0 && i < (uint32_t)got; i++) touch(r, rk_ring_slot(r, pos + i));
          if (got > 0) rk_ring_mpsc_commit_n(r, pos, (uint32_t)got);
        } else {
          k = rk_ring_reserve_n(r, n, &pos);
          CHECK(k <= n);
          for (i = 0; i < k; i++) touch(r, rk_ring_slot(r, pos + i));
          if (k) rk_ring_commit_n(r, k);
        }
        break;
      case 6:
        (void)rk_ring_close(r, &v);
        (void)rk_ring_closed(r, &v);
        break;
      case 7:
        (void)rk_ring_count(r);
        (void)rk_ring_head(r);
        break;
      case 8: /* the host's waits, trying once */
        (void)rk_ring_wait_readable(r, 0);
        (void)rk_ring_wait_writable(r, 0);
        (void)rk_ring_pop_wait(r, buf, len, 0);
        (void)rk_ring_push_wait(r, buf, len, 0);
        break;
      case 9:
        rk_ring_notify_consumer(r);
        rk_ring_notify_producers(r);
        break;
      case 10: /* a peer rewrites an index word */
        v = take(in, 8);
        switch (op >> 6) {
          case 0: r->head = v; break;
          case 1: r->tail = v; break;
          case 2: r->claim = v; break;
          default: r->prod_head = v; break;
        }
        break;
      case 11: /* ... or a sequence word */
        v = take(in, 8);
        *rk_ring__seq(r, take(in, 4)) = v;
        break;
      case 12: /* ... or the parking words (the next notify wakes whatever they say) */
        r->cons_sleeping = (uint32_t)take(in, 1);
        r->prod_sleeping = (uint32_t)take(in, 1);
        break;
      default: /* a whole slot of attacker bytes at a position */
        pos = take(in, 8);
        {
          uint8_t *s = rk_ring_slot(r, pos); /* the word too: it sits just before the message */
          for (i = 0; i < slot && in->left; i++) s[(int)i - (int)RK_RING_MSG_OFFSET] = (uint8_t)take(in, 1);
        }
        break;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input in = {data, size};
  uint8_t how = (uint8_t)take(&in, 1);
  size_t mem_size;
  void *mem = NULL;
  rk_ring *r;
  int rc;
  if (size < 4) return 0;
  if ((how & 1) == 0) {
    /* raw: the block is the input's next bytes, as long as the input says */
    mem_size = (size_t)take(&in, 3) % MAX_MEM;
    if (posix_memalign(&mem, RK_LINE, mem_size ? mem_size : 1) != 0) return 0;
    memset(mem, 0, mem_size);
    {
      size_t n = in.left < mem_size ? in.left : mem_size;
      memcpy(mem, in.p, n);
      in.p += n;
      in.left -= n;
    }
  } else {
    /* a valid ring, then patches */
    uint64_t cap = 1ull << (take(&in, 1) % 9);         /* 1..256 */
    uint32_t slot = 64u * (1u + (uint32_t)take(&in, 1) % 8); /* 64..512 */
    uint32_t mode = (how >> 1) & 1;
    int32_t delta = (int32_t)(int16_t)take(&in, 2);   /* memory beyond (or short of) what it needs */
    size_t need = rk_ring_memsize(cap, slot, mode);
    uint32_t patches, i;
    CHECK(need != 0);
    if (delta < 0 && (size_t)-delta > need) delta = 0;
    mem_size = need + delta;
    if (posix_memalign(&mem, RK_LINE, mem_size ? mem_size : 1) != 0) return 0;
    memset(mem, 0, mem_size);
    rc = rk_ring_init(mem, mem_size, cap, slot, mode);
    if (rc != RK_OK) {
      CHECK(rc == RK_EINVAL && mem_size < need);
      free(mem);
      return 0;
    }
    if ((how & 6) == 6) {
      /* the header lies, self-consistently: another geometry, magic, mask and offsets that agree
       * with it (what a peer that knows the layout writes; rk_ring_check alone cannot tell) */
      rk_ring *h = (rk_ring *)mem;
      uint64_t lcap = 1ull << (take(&in, 1) % 33);
      uint32_t lslot = 64u * (1u + (uint32_t)take(&in, 2) % (RK_RING_MAX_SLOT / 64));
      h->capacity = lcap;
      h->mask = lcap - 1;
      h->slot_size = lslot;
      h->seq_offset = sizeof(rk_ring);
      h->mode = (uint32_t)take(&in, 1) & 1;
    }
    patches = (uint32_t)take(&in, 1) % 8;
    for (i = 0; i < patches && in.left; i++) {
      size_t off = (size_t)take(&in, 3) % mem_size;
      uint64_t v = take(&in, 8);
      size_t j;
      for (j = 0; j < 8 && off + j < mem_size; j++) ((uint8_t *)mem)[off + j] = (uint8_t)(v >> (8 * j));
    }
  }
  r = (rk_ring *)mem;
#if defined(FUZZ_RING_HEADER_ONLY)
  rc = mem_size >= sizeof(rk_ring) ? rk_ring_check(r) : RK_EINVAL;
#else
  rc = rk_ring_check_mem(r, mem_size);
#endif
  if (rc != RK_OK) {
    CHECK(rc == RK_EINVAL || rc == RK_ECORRUPT);
    CHECK(rc != RK_EINVAL || mem_size < sizeof(rk_ring));
    free(mem);
    return 0;
  }
#if !defined(FUZZ_RING_HEADER_ONLY)
  CHECK(rk_ring_memsize(r->capacity, r->slot_size, r->mode) <= mem_size);
#endif
  run_ops(r, &in);
  CHECK(rk_ring_check(r) == RK_OK); /* the operations never write line 0 */
  free(mem);
  return 0;
}
