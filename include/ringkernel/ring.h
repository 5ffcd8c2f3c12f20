/** @file ringkernel/ring.h — lock-free rings that live in any memory, usable from host and device.
 *
 * A ring is a POD header (four 128-byte lines) followed by `capacity` fixed-size slots. Each slot
 * starts with its 64-bit sequence word and 8 reserved bytes; the message follows at
 * RK_RING_MSG_OFFSET (16), so it holds up to slot_size - 16 bytes and the word travels in the same
 * cache line as the message's first 48 bytes (docs/design-notes.md, "The sequence word in the
 * slot"). rk_ring_memsize() + rk_ring_init() place a ring in
 * caller memory: ordinary host memory (CPU backend), pinned host-mapped memory (host<->device) or
 * device global memory (K2K). The structure holds offsets, never pointers, so the host and the
 * device address the same ring through their own base pointers.
 *
 * Ordering (docs/memory-ordering.md; every access below names its pair):
 *  - free-running 64-bit indices, masked on access; capacity is a power of two;
 *  - publication is per slot, in both modes: the producer writes the slot, then store-releases the
 *    slot's sequence word = position + 1; the consumer load-acquires the sequence word, compares it
 *    by signed 64-bit difference (rk_ring_seq_published), reads the slot, then store-releases `head`;
 *    producers load-acquire `head` before they reuse a slot, through a cache refreshed only when it
 *    says full, so a steady stream touches the consumer's line about once per lap, not per message.
 *    The consumer never polls a producer index: the word it waits on sits in the slot it will read,
 *    so the line that tells it a message is there also brings the message's first bytes, and the
 *    producer's own index stays in the producer's cache (docs/design-notes.md, "Per-slot
 *    publication" and "The sequence word in the slot", has the measurements that chose this);
 *  - SPSC: the producer's position is `tail`, its own word (also stored for rk_ring_count and
 *    rk_ring_close); no read-modify-write anywhere;
 *  - MPSC: producers claim a position by compare-and-swap on `claim` only after they have seen free
 *    capacity (claim only what you will publish: every failure happens before the claim). The
 *    consumer never performs a read-modify-write, so a device can consume a ring that host threads
 *    produce into over PCIe, and a host thread can consume a ring a device produces into;
 *  - only loads and stores cross the bus: `claim` and the producers' shared head cache are touched
 *    by producers of one side only.
 * The functions here never block; src/queue adds blocking waits with spin -> yield -> park. */
#ifndef RINGKERNEL_RING_H
#define RINGKERNEL_RING_H

#include "ringkernel/atomic.h"
#include "ringkernel/common.h"
#include "ringkernel/error.h"

RK_EXTERN_C_BEGIN

/** The ring header's magic. */
#define RK_RING_MAGIC 0x474e4952u /* "RING" */
#define RK_RING_SPSC 0u           /**< one producer, one consumer */
#define RK_RING_MPSC 1u           /**< many producers (of one side), one consumer */
#define RK_RING_SLOT_ALIGN 64u    /**< slot sizes are multiples of one 64-byte line */
#define RK_RING_MIN_SLOT 64u      /**< one line: the sequence word and a message of up to 48 bytes (a
                                   *   ring of envelopes needs 128: RK_RING_ENVELOPE_SLOT) */
/** Bytes before a slot's message: its sequence word (0..7) and 8 reserved bytes (8..15, zero).
 *  rk_ring_slot() returns the message's address; a message holds up to slot_size - 16 bytes. */
#define RK_RING_MSG_OFFSET 16u
/** The largest message a slot of slot_size bytes holds. */
#define RK_RING_MSG_MAX(slot_size) ((slot_size) - RK_RING_MSG_OFFSET)
/** The smallest slot that holds an envelope (64 bytes) after its sequence word: a kernel's rings. */
#define RK_RING_ENVELOPE_SLOT 128u
/** The largest slot size of a ring. */
#define RK_RING_MAX_SLOT (1u << 24)
/** The most slots a ring has. */
#define RK_RING_MAX_CAPACITY (1ull << 32)
#define RK_RING_CLOSED (1ull << 63) /**< set in `claim` when the ring is closed to producers */
/* RK_RING_CLOSED is the top bit of `claim`, so positions that pass through `claim` stay below
 * 2^63: an MPSC ring takes at most 2^63 - 1 claims in its life (292 years at 10^9 messages/s; the
 * claim that reached 2^63 would read as a close), and the final index that rk_ring_close and
 * rk_ring_closed report is exact below 2^63. Head, tail and the sequence words are only ever
 * compared by difference, so the SPSC indices and the consumer wrap correctly past 2^64. */
/** Flag: the other side of this ring never wakes parked host waiters (it is a device, which cannot
 *  make a futex call). Host waits on such a ring poll with short sleeps instead of parking. */
#define RK_RING_F_NO_WAKE 0x1u

/** The ring header: 512 bytes, four lines, each written by one party only. */
typedef struct rk_ring {
  /* line 0: configuration, written once by rk_ring_init, read-only afterwards */
  RK_ALIGNAS(128) uint32_t magic; /**< RK_RING_MAGIC */
  uint32_t mode; /**< RK_RING_SPSC or RK_RING_MPSC */
  uint32_t slot_size; /**< bytes per slot */
  uint32_t flags;        /**< RK_RING_F_* (host-side hints; 0 after rk_ring_init) */
  uint64_t capacity; /**< slots (a power of two) */
  uint64_t mask; /**< capacity - 1 */
  uint64_t slots_offset; /**< bytes from the ring's start to slot 0 */
  uint64_t seq_offset;   /**< bytes from the ring's start to slot 0's sequence word (= slots_offset:
                          *   each slot's first 8 bytes; the words are slot_size bytes apart) */
  uint8_t pad0[RK_LINE - 48];
  /* line 1: producer side */
  volatile uint64_t tail;        /**< SPSC: the producer's index (relaxed store, for observers only) */
  volatile uint64_t claim;       /**< next position to claim (MPSC CAS) | RK_RING_CLOSED */
  volatile uint64_t prod_head;   /**< producers' cached view of `head` (never authoritative) */
  uint8_t pad1[RK_LINE - 24];
  /* line 2: consumer side */
  volatile uint64_t head;        /**< consumed index (store-release by the consumer) */
  uint8_t pad2[RK_LINE - 8];
  /* line 3: host parking words (CPU backend and host waiters only; see src/queue) */
  volatile uint32_t cons_sleeping; /**< consumer parked or about to park (written by the consumer) */
  volatile uint32_t prod_sleeping; /**< number of producers parked or about to park */
  volatile uint32_t cons_wake;     /**< futex word: bumped by producers to wake the consumer */
  volatile uint32_t prod_wake;     /**< futex word: bumped by the consumer to wake producers */
  uint8_t pad3[RK_LINE - 16];
} rk_ring;

RK_STATIC_ASSERT(sizeof(rk_ring) == 4 * RK_LINE, "ring header is four lines");
RK_ASSERT_OFFSET(rk_ring, capacity, 16);
RK_ASSERT_OFFSET(rk_ring, slots_offset, 32);
RK_ASSERT_OFFSET(rk_ring, tail, RK_LINE);
RK_ASSERT_OFFSET(rk_ring, claim, RK_LINE + 8);
RK_ASSERT_OFFSET(rk_ring, head, 2 * RK_LINE);
RK_ASSERT_OFFSET(rk_ring, cons_sleeping, 3 * RK_LINE);

/* ------------------------------------ layout -------------------------------------------------- */

RK_INLINE RK_HD int rk_ring__pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

/** Check a ring geometry. Returns 0 or RK_EINVAL (capacity zero, not a power of two or above
 *  RK_RING_MAX_CAPACITY; slot below RK_RING_MIN_SLOT, not a multiple of 64 or above
 *  RK_RING_MAX_SLOT; unknown mode). */
RK_INLINE RK_HD int rk_ring_check_geometry(uint64_t capacity, uint32_t slot_size, uint32_t mode) {
  if (!rk_ring__pow2(capacity) || capacity > RK_RING_MAX_CAPACITY) return RK_EINVAL;
  if (slot_size < RK_RING_MIN_SLOT || slot_size > RK_RING_MAX_SLOT) return RK_EINVAL;
  if (slot_size % RK_RING_SLOT_ALIGN != 0) return RK_EINVAL;
  if (mode != RK_RING_SPSC && mode != RK_RING_MPSC) return RK_EINVAL;
  return RK_OK;
}

/** Bytes a ring of this geometry needs (header + slots; each slot holds its own sequence word), or
 *  0 if the geometry is invalid (see rk_ring_check_geometry). */
RK_INLINE RK_HD size_t rk_ring_memsize(uint64_t capacity, uint32_t slot_size, uint32_t mode) {
  if (rk_ring_check_geometry(capacity, slot_size, mode) != RK_OK) return 0;
  return sizeof(rk_ring) + (size_t)capacity * slot_size;
}

/** The largest message r's slots hold (slot_size - RK_RING_MSG_OFFSET; 0 for a header whose
 *  slot_size is below that, which no checked header has: every length is then refused). */
RK_INLINE RK_HD uint32_t rk_ring_msg_max(const rk_ring *r) {
  return r->slot_size > RK_RING_MSG_OFFSET ? RK_RING_MSG_MAX(r->slot_size) : 0;
}
/** The message of position pos: RK_RING_MSG_OFFSET bytes into its slot, rk_ring_msg_max bytes. */
RK_INLINE RK_HD uint8_t *rk_ring_slot(rk_ring *r, uint64_t pos) {
  return RK_CAST(uint8_t *, r) + r->slots_offset + (size_t)((pos & r->mask) * r->slot_size) + RK_RING_MSG_OFFSET;
}
/* The sequence word of position pos, from cached geometry: seq0 is slot 0's word (the ring's start
 * + seq_offset), the words are slot_size bytes apart. A device lane addresses its rings this way
 * without reading the header over PCIe. */
RK_INLINE RK_HD volatile uint64_t *rk_ring__seq_at(volatile uint64_t *seq0, uint32_t slot_size, uint64_t mask,
                                                   uint64_t pos) {
  return RK_CAST(volatile uint64_t *, RK_CAST(volatile uint8_t *, seq0) + (size_t)((pos & mask) * slot_size));
}
RK_INLINE RK_HD volatile uint64_t *rk_ring__seq(rk_ring *r, uint64_t pos) {
  return rk_ring__seq_at(RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, r) + r->seq_offset), r->slot_size, r->mask,
                         pos);
}

/**
 * Initialise a ring in caller memory (host memory, pinned mapped memory or device memory written
 * from the host before use). mem must be 128-byte aligned and at least rk_ring_memsize() bytes.
 * Errors: RK_EINVAL (NULL, misaligned, too small, bad geometry). Not thread-safe: no one may use
 * the ring until init returns and the ring is published to its users.
 */
RK_INLINE int rk_ring_init(void *mem, size_t mem_size, uint64_t capacity, uint32_t slot_size,
                           uint32_t mode) {
  rk_ring *r = RK_CAST(rk_ring *, mem);
  size_t need = rk_ring_memsize(capacity, slot_size, mode);
  uint64_t i;
  uint8_t *b = RK_CAST(uint8_t *, mem);
  if (mem == NULL || need == 0 || mem_size < need) return RK_EINVAL;
  if ((RK_CAST(uintptr_t, mem) & (RK_LINE - 1)) != 0) return RK_EINVAL;
  for (i = 0; i < sizeof(rk_ring); i++) b[i] = 0;
  r->magic = RK_RING_MAGIC;
  r->mode = mode;
  r->slot_size = slot_size;
  r->capacity = capacity;
  r->mask = capacity - 1;
  r->slots_offset = sizeof(rk_ring);
  r->seq_offset = sizeof(rk_ring);
  /* Position p is published when seq == p + 1; before the first lap, seq[i] = i + 1 - capacity
   * (wrapping), which is "not yet" by signed difference for position i. The reserved 8 bytes after
   * each word are zero. */
  for (i = 0; i < capacity; i++) {
    volatile uint64_t *w = rk_ring__seq(r, i);
    w[0] = i + 1 - capacity;
    w[1] = 0;
  }
  return RK_OK;
}

/**
 * Check a ring header on its own: magic, geometry (rk_ring_check_geometry), mask and offsets.
 * It cannot see the memory behind the header: a self-consistent header that claims more slots than
 * were allocated passes, and every operation on that ring then reads and writes past the memory.
 * So this check suffices only for a ring whose memory was sized from the same numbers the header
 * holds (rk_ring_create, or rk_ring_init into rk_ring_memsize() bytes) and that nobody else can
 * write; a ring adopted from memory another party writes (a process, a device) must be checked with
 * rk_ring_check_mem and the size of the memory actually mapped.
 * Returns 0, RK_EINVAL (r NULL) or RK_ECORRUPT. Any thread; reads the configuration line only.
 */
RK_INLINE RK_HD int rk_ring_check(const rk_ring *r) {
  if (r == NULL) return RK_EINVAL;
  if (r->magic != RK_RING_MAGIC) return RK_ECORRUPT;
  if (rk_ring_check_geometry(r->capacity, r->slot_size, r->mode) != RK_OK) return RK_ECORRUPT;
  if (r->mask != r->capacity - 1) return RK_ECORRUPT;
  if (r->slots_offset != sizeof(rk_ring) || r->seq_offset != sizeof(rk_ring))
    return RK_ECORRUPT;
  return RK_OK;
}

/**
 * Check a ring against the memory it sits in: everything rk_ring_check checks, and that the
 * header, the slots and the sequence words the header describes all lie within the mem_size bytes
 * starting at r. This is the check for a ring adopted from shared memory (mapped from another
 * process, pinned memory a device writes): after it passes, every operation of this header (and of
 * src/queue) addresses only those bytes, whatever the indices and sequence words hold — as long as
 * the configuration line (line 0) is not rewritten afterwards. A party that can rewrite line 0
 * while the ring is in use can always redirect its user; such a user checks once and then works
 * from a private copy of the geometry, or re-checks before each use (the host's send and drain
 * paths re-check the lanes' rings: docs/design-notes.md, "Rings adopted from shared memory").
 * @param r        the ring (its first byte); must be 128-byte aligned
 * @param mem_size bytes of memory that really belong to the ring, starting at r
 * @return 0; RK_EINVAL when r is NULL or misaligned, or mem_size cannot even hold the header (the
 *         caller's numbers are wrong, the header was not read); RK_ECORRUPT when the header is
 *         damaged or describes more memory than mem_size.
 * Any thread; reads the configuration line only.
 */
RK_INLINE RK_HD int rk_ring_check_mem(const rk_ring *r, size_t mem_size) {
  int rc;
  if (r == NULL || (RK_CAST(uintptr_t, r) & (RK_LINE - 1)) != 0) return RK_EINVAL;
  if (mem_size < sizeof(rk_ring)) return RK_EINVAL;
  if ((rc = rk_ring_check(r)) != RK_OK) return rc;
  /* The geometry passed rk_ring_check_geometry, so the product below is at most 2^32 * 2^24
   * and cannot overflow 64 bits; rk_ring_memsize computes exactly this sum. */
  if (rk_ring_memsize(r->capacity, r->slot_size, r->mode) > mem_size) return RK_ECORRUPT;
  return RK_OK;
}

/* Copies within the ring code: memcpy on the host (the compiler inlines fixed sizes), a word loop on
 * the device (no string.h under NVRTC). Messages are 16-byte aligned (64-byte slots, the message at
 * 16); callers' buffers may not be. */
RK_INLINE RK_HD void rk_ring__copy(void *dst, const void *src, size_t len) {
#if defined(__CUDA_ARCH__)
  uint8_t *d = RK_CAST(uint8_t *, dst);
  const uint8_t *s = RK_CAST(const uint8_t *, src);
  size_t i = 0;
  if (((RK_CAST(uintptr_t, d) | RK_CAST(uintptr_t, s)) & 7) == 0)
    for (; i + 8 <= len; i += 8)
      *RK_CAST(uint64_t *, d + i) = *RK_CAST(const uint64_t *, s + i);
  for (; i < len; i++) d[i] = s[i];
#else
  __builtin_memcpy(dst, src, len);
#endif
}

/* Publish positions pos .. pos+k-1 (their messages are written) through their slots' sequence
 * words (seq0: slot 0's word, rk_ring__seq_at): sequence word = position + 1, the store the
 * consumer's load-acquire in rk_ring_peek_n pairs with. On the host a store-release per word (a
 * plain store on x86); on the device one system-scope fence for the batch, then relaxed stores (the
 * PTX release pattern: the fence orders every earlier write of this thread before them). Taking the
 * geometry lets a device lane publish from its cached copy, without reading the header over PCIe.
 * The word changes only here (and in rk_ring_init): message writes start RK_RING_MSG_OFFSET bytes
 * into the slot. (A device lane writes its reply slots as whole lines, the word's 8 bytes with the
 * value they already hold: src/device/persistent.cuh, rk_dev_copy_out.) */
RK_INLINE RK_HD void rk_ring__publish_seq(volatile uint64_t *seq0, uint32_t slot_size, uint64_t mask, uint64_t pos,
                                          uint32_t k) {
  uint32_t i;
#if defined(__CUDA_ARCH__)
  rk_fence_acq_rel_sys();
  for (i = 0; i < k; i++) rk_store_relaxed_sys_u64(rk_ring__seq_at(seq0, slot_size, mask, pos + i), pos + i + 1);
#else
  for (i = 0; i < k; i++) rk_store_release_sys_u64(rk_ring__seq_at(seq0, slot_size, mask, pos + i), pos + i + 1);
#endif
}
RK_INLINE RK_HD void rk_ring__publish(rk_ring *r, uint64_t pos, uint32_t k) {
  rk_ring__publish_seq(rk_ring__seq(r, 0), r->slot_size, r->mask, pos, k);
}

/* ------------------------------------ SPSC producer ------------------------------------------- */
/* The producers' view of head, in one place: head is written by the consumer, which may be on the
 * other side of PCIe, so it is read at system scope. Pairs with the consumer's store-release of head
 * in rk_ring_release_n: the slots it freed have been read before a producer overwrites them. */
/** The consumer's index, loaded with acquire (what it has released). */
RK_INLINE RK_HD uint64_t rk_ring_load_acquire_head(const rk_ring *r) {
  return rk_load_acquire_sys_u64(&r->head);
}


/** Free slots the (single) producer can fill right now, refreshing its cached head only when the
 *  cache says fewer than `want` are free. */
RK_INLINE RK_HD uint64_t rk_ring__spsc_free(rk_ring *r, uint64_t t, uint64_t want) {
  uint64_t h = r->prod_head; /**< producer-private cache */
  if (r->capacity - (t - h) < want) {
    h = rk_ring_load_acquire_head(r);
    r->prod_head = h;
  }
  return r->capacity - (t - h);
}

/**
 * SPSC: reserve up to n consecutive free slots for in-place filling. Returns the number reserved
 * (0 when full) and the first position in *pos; slot i is rk_ring_slot(r, *pos + i). Publish with
 * rk_ring_commit_n. Single producer only.
 */
RK_INLINE RK_HD uint32_t rk_ring_reserve_n(rk_ring *r, uint32_t n, uint64_t *pos) {
  uint64_t t = r->tail; /**< own word: plain read */
  uint64_t avail = rk_ring__spsc_free(r, t, n ? n : 1);
  *pos = t;
  return (uint32_t)(avail < n ? avail : n);
}
/** SPSC: publish k slots previously reserved. Single producer only. */
RK_INLINE RK_HD void rk_ring_commit_n(rk_ring *r, uint32_t k) {
  uint64_t t = r->tail; /**< own word: plain read */
  rk_ring__publish(r, t, k);
  /* tail orders nothing: the consumer reads the sequence words; observers (rk_ring_count) estimate */
  rk_store_relaxed_sys_u64(&r->tail, t + k);
}
/** SPSC: reserve one slot; returns its address or NULL when the ring is full. */
RK_INLINE RK_HD void *rk_ring_reserve(rk_ring *r) {
  uint64_t pos;
  return rk_ring_reserve_n(r, 1, &pos) ? rk_ring_slot(r, pos) : NULL;
}
/** SPSC producer: publish the slot claimed last. */
RK_INLINE RK_HD void rk_ring_commit(rk_ring *r) { rk_ring_commit_n(r, 1); }

/** SPSC: copy one message of len bytes (len <= rk_ring_msg_max) into the ring.
 *  Returns 0, RK_EAGAIN (full), RK_EMSGSIZE, RK_ECLOSED. Single producer only. */
RK_INLINE RK_HD int rk_ring_push(rk_ring *r, const void *msg, uint32_t len) {
  uint64_t t = r->tail;
  if (RK_UNLIKELY(len > rk_ring_msg_max(r))) return RK_EMSGSIZE;
  if (RK_UNLIKELY(r->claim & RK_RING_CLOSED)) return RK_ECLOSED;
  if (RK_UNLIKELY(rk_ring__spsc_free(r, t, 1) == 0)) return RK_EAGAIN;
  rk_ring__copy(rk_ring_slot(r, t), msg, len);
  rk_ring__publish(r, t, 1);
  rk_store_relaxed_sys_u64(&r->tail, t + 1); /**< own index; see rk_ring_commit_n */
  return RK_OK;
}
/** SPSC: copy up to n messages, each `len` bytes, laid out `len` bytes apart in msgs, then
 *  publish them together (rk_ring_commit_n). Returns the number pushed (0 when full) or RK_EMSGSIZE/RK_ECLOSED. */
RK_INLINE RK_HD int rk_ring_push_n(rk_ring *r, const void *msgs, uint32_t len, uint32_t n) {
  uint64_t pos;
  uint32_t k, i;
  const uint8_t *src = RK_CAST(const uint8_t *, msgs);
  if (RK_UNLIKELY(len > rk_ring_msg_max(r))) return RK_EMSGSIZE;
  if (RK_UNLIKELY(r->claim & RK_RING_CLOSED)) return RK_ECLOSED;
  k = rk_ring_reserve_n(r, n, &pos);
  for (i = 0; i < k; i++) rk_ring__copy(rk_ring_slot(r, pos + i), src + (size_t)i * len, len);
  if (k) rk_ring_commit_n(r, k);
  return (int)k;
}

/* ------------------------------------ MPSC producers ------------------------------------------ */

/* (defined below) */
RK_INLINE RK_HD int rk_ring__mpsc_reserve_n(rk_ring *r, uint32_t n, uint64_t *pos, int sys);
RK_INLINE RK_HD int rk_ring__mpsc_reserve_cap(rk_ring *r, uint64_t capacity, uint32_t n, uint64_t *pos, int sys);
/**
 * MPSC: claim up to n consecutive positions. Capacity is checked first and the claim is a single
 * compare-and-swap, so nothing is claimed that cannot be published. On success returns the number
 * claimed (>= 1) with the first position in *pos: the caller MUST fill and publish every one of them
 * with rk_ring_mpsc_commit_n (an unpublished claim wedges the consumer). Returns 0 when full,
 * RK_ECLOSED when closed. Any number of producer threads of one side.
 */
RK_INLINE RK_HD int rk_ring_mpsc_reserve_n(rk_ring *r, uint32_t n, uint64_t *pos) {
  return rk_ring__mpsc_reserve_n(r, n, pos, 0);
}
/* rk_ring_mpsc_reserve_n; sys: the producers' cached head (prod_head) is loaded and stored at
 * system scope as head is, for a ring whose producers are on several devices (K2K between devices,
 * RK_DEV_K2K_SYS: a .gpu access does not synchronise with another device's). The claim's
 * compare-and-swap stays at device scope (no system-scope read-modify-write: test_sass.py). */
RK_INLINE RK_HD int rk_ring__mpsc_reserve_n(rk_ring *r, uint32_t n, uint64_t *pos, int sys) {
  return rk_ring__mpsc_reserve_cap(r, r->capacity, n, pos, sys);
}
/* rk_ring__mpsc_reserve_n with the ring's capacity from the caller's copy of its geometry: a device
 * lane pushing into a ring in host-mapped memory (or a peer's) reads no header field with a weak
 * load (ARCHITECTURE §4; persistent.cuh rk_dev_k2k_push). capacity MUST be the ring's. */
RK_INLINE RK_HD int rk_ring__mpsc_reserve_cap(rk_ring *r, uint64_t capacity, uint32_t n, uint64_t *pos, int sys) {
  /* claim: relaxed — ordering with the consumer comes from the head acquire and seq release. */
  uint64_t c = rk_load_relaxed_dev_u64(&r->claim);
  uint64_t h, free_slots, k;
  if (n == 0) n = 1;
  for (;;) {
    if (c & RK_RING_CLOSED) return RK_ECLOSED;
    /* pairs with the store-release of prod_head below (by whichever producer refreshed it), which
     * carries the consumer's release of head transitively. */
    h = sys ? rk_load_acquire_sys_u64(&r->prod_head) : rk_load_acquire_dev_u64(&r->prod_head);
    /* Refresh when the cache shows too little room, or shows nonsense: a producer preempted between
     * reading head and storing it below leaves prod_head behind, possibly by more than a lap; then
     * capacity - (c - h) wraps to a huge count that would never call for a refresh and every
     * producer would report "full" forever. */
    if (c - h > capacity || capacity - (c - h) < n) {
      h = rk_ring_load_acquire_head(r); /**< pairs with the consumer's release of head */
      if (sys)
        rk_store_release_sys_u64(&r->prod_head, h);
      else
        rk_store_release_dev_u64(&r->prod_head, h);
    }
    free_slots = capacity - (c - h);
    if (free_slots == 0 || free_slots > capacity) {
      /* full, or our view of claim is older than head (another producer raced ahead): re-read */
      uint64_t c2 = rk_load_relaxed_dev_u64(&r->claim);
      if (c2 == c) return 0;
      c = c2;
      continue;
    }
    k = free_slots < n ? free_slots : n;
    if (rk_cas_relaxed_dev_u64(&r->claim, &c, c + k)) break;
    /* c now holds the current claim word; loop re-checks closed and capacity */
  }
  *pos = c;
  return (int)k;
}
/** MPSC: publish k claimed positions starting at pos (the slots must be filled). */
RK_INLINE RK_HD void rk_ring_mpsc_commit_n(rk_ring *r, uint64_t pos, uint32_t k) {
  rk_ring__publish(r, pos, k); /**< pairs with the consumer's load-acquire of each sequence word */
}
/** MPSC: claim one slot; returns its address (and position in *pos) or NULL with *err set to
 *  RK_EAGAIN (full) or RK_ECLOSED. Publish with rk_ring_mpsc_commit(r, *pos). */
RK_INLINE RK_HD void *rk_ring_mpsc_reserve(rk_ring *r, uint64_t *pos, int *err) {
  int k = rk_ring_mpsc_reserve_n(r, 1, pos);
  if (k == 1) {
    if (err) *err = RK_OK;
    return rk_ring_slot(r, *pos);
  }
  if (err) *err = k == 0 ? RK_EAGAIN : k;
  return NULL;
}
/** MPSC producer: publish the slot claimed at pos. */
RK_INLINE RK_HD void rk_ring_mpsc_commit(rk_ring *r, uint64_t pos) { rk_ring_mpsc_commit_n(r, pos, 1); }

/** MPSC: copy one message in. Returns 0, RK_EAGAIN, RK_EMSGSIZE, RK_ECLOSED. Thread-safe among
 *  producers of one side. */
RK_INLINE RK_HD int rk_ring_mpsc_push(rk_ring *r, const void *msg, uint32_t len) {
  uint64_t pos;
  int k;
  if (RK_UNLIKELY(len > rk_ring_msg_max(r))) return RK_EMSGSIZE;
  k = rk_ring_mpsc_reserve_n(r, 1, &pos);
  if (k <= 0) return k == 0 ? RK_EAGAIN : k;
  rk_ring__copy(rk_ring_slot(r, pos), msg, len);
  rk_ring_mpsc_commit_n(r, pos, 1);
  return RK_OK;
}
/** MPSC: copy up to n messages of len bytes with one claim. Returns the number pushed or an error. */
RK_INLINE RK_HD int rk_ring_mpsc_push_n(rk_ring *r, const void *msgs, uint32_t len, uint32_t n) {
  uint64_t pos;
  int k, i;
  const uint8_t *src = RK_CAST(const uint8_t *, msgs);
  if (RK_UNLIKELY(len > rk_ring_msg_max(r))) return RK_EMSGSIZE;
  if (n == 0) return 0;
  k = rk_ring_mpsc_reserve_n(r, n, &pos);
  if (k <= 0) return k;
  for (i = 0; i < k; i++) rk_ring__copy(rk_ring_slot(r, pos + i), src + (size_t)i * len, len);
  rk_ring_mpsc_commit_n(r, pos, (uint32_t)k);
  return k;
}

/* ------------------------------------ consumer ------------------------------------------------ */
/** Is position pos published, given its slot's sequence word? Position p is published when
 *  seq == p + 1; earlier laps leave smaller values. Compared by signed 64-bit difference, so the
 *  rule holds across the wrap of the free-running indices. The one place this rule is written:
 *  the host consumer (rk_ring_peek_n) and the device lane loop both call it. */
RK_INLINE RK_HD int rk_ring_seq_published(uint64_t seq, uint64_t pos) {
  return (int64_t)(seq - (pos + 1)) >= 0;
}


/**
 * Consumer: find up to n consecutive published slots starting at the head, without consuming
 * them. Returns the number ready (0 when empty) and the first position in *pos; read them in place
 * with rk_ring_slot and hand them back with rk_ring_release_n. Works for SPSC and MPSC rings.
 * Single consumer only.
 */
RK_INLINE RK_HD uint32_t rk_ring_peek_n(rk_ring *r, uint32_t n, uint64_t *pos) {
  uint64_t h = r->head; /**< own word: plain read */
  uint32_t k = 0;
  /* the geometry read once: each acquire load below would make the compiler read it again */
  volatile uint64_t *seq0 = rk_ring__seq(r, 0);
  uint64_t mask = r->mask;
  uint32_t slot_size = r->slot_size;
  *pos = h;
  /* pairs with the producer's publication (rk_ring__publish): the slot was written before. */
  while (k < n && rk_ring_seq_published(rk_load_acquire_sys_u64(rk_ring__seq_at(seq0, slot_size, mask, h + k)), h + k))
    k++;
  return k;
}
/** Consumer: hand back k slots read since rk_ring_peek_n. */
RK_INLINE RK_HD void rk_ring_release_n(rk_ring *r, uint32_t k) {
  /* pairs with the producers' load-acquire of head: the slots have been read before reuse. */
  rk_store_release_sys_u64(&r->head, r->head + k);
}
/** Consumer: the next published slot, or NULL when empty. Release it with rk_ring_release. */
RK_INLINE RK_HD void *rk_ring_peek(rk_ring *r) {
  uint64_t pos;
  return rk_ring_peek_n(r, 1, &pos) ? rk_ring_slot(r, pos) : NULL;
}
/** Consumer: release the slot taken last. */
RK_INLINE RK_HD void rk_ring_release(rk_ring *r) { rk_ring_release_n(r, 1); }

/** Consumer: copy the next message's first len bytes (len <= rk_ring_msg_max) out and consume it.
 *  Returns 0, RK_EAGAIN (empty) or RK_EMSGSIZE. */
RK_INLINE RK_HD int rk_ring_pop(rk_ring *r, void *buf, uint32_t len) {
  uint64_t pos;
  if (RK_UNLIKELY(len > rk_ring_msg_max(r))) return RK_EMSGSIZE;
  if (!rk_ring_peek_n(r, 1, &pos)) return RK_EAGAIN;
  rk_ring__copy(buf, rk_ring_slot(r, pos), len);
  rk_ring_release_n(r, 1);
  return RK_OK;
}
/** Consumer: copy out up to n messages of len bytes each into buf (len bytes apart), releasing
 *  them with one index publication. Returns the number popped (0 when empty) or RK_EMSGSIZE. */
RK_INLINE RK_HD int rk_ring_pop_n(rk_ring *r, void *buf, uint32_t len, uint32_t n) {
  uint64_t pos;
  uint32_t k, i;
  uint8_t *dst = RK_CAST(uint8_t *, buf);
  if (RK_UNLIKELY(len > rk_ring_msg_max(r))) return RK_EMSGSIZE;
  k = rk_ring_peek_n(r, n, &pos);
  for (i = 0; i < k; i++) rk_ring__copy(dst + (size_t)i * len, rk_ring_slot(r, pos + i), len);
  if (k) rk_ring_release_n(r, k);
  return (int)k;
}

/* ------------------------------------ state --------------------------------------------------- */

/** Messages published or claimed and not yet consumed: exact when neither side runs, an estimate
 *  (low or high by what is in flight) while they do, never negative. */
RK_INLINE RK_HD uint64_t rk_ring_count(const rk_ring *r) {
  uint64_t h = rk_load_acquire_sys_u64(&r->head);
  uint64_t t = r->mode == RK_RING_SPSC ? rk_load_relaxed_sys_u64(&r->tail)
                                       : (rk_load_relaxed_dev_u64(&r->claim) & ~RK_RING_CLOSED);
  /* SPSC: the consumer may take a slot (its sequence word is published) before the producer
   * stores its tail, so head can be ahead of the tail read here for a moment. */
  return (int64_t)(t - h) < 0 ? 0 : t - h;
}

/**
 * Close the ring to producers and return the final producer index in *final_pos: every position
 * below it was (MPSC: claimed and will be) published; a consumer that drains to it has lost
 * nothing. Later pushes return RK_ECLOSED. MPSC: any producer-side thread; SPSC: the producer.
 * Returns 0, or RK_ECLOSED if it was already closed (*final_pos is still set).
 */
RK_INLINE RK_HD int rk_ring_close(rk_ring *r, uint64_t *final_pos) {
  uint64_t c = rk_load_relaxed_dev_u64(&r->claim);
  if (r->mode == RK_RING_SPSC) {
    if (c & RK_RING_CLOSED) {
      if (final_pos) *final_pos = c & ~RK_RING_CLOSED;
      return RK_ECLOSED;
    }
    c = r->tail;
    /* pairs with rk_ring_closed's acquire: every slot below c (its sequence word) is published
     * before the close is seen */
    rk_store_release_dev_u64(&r->claim, c | RK_RING_CLOSED);
    if (final_pos) *final_pos = c;
    return RK_OK;
  }
  for (;;) {
    if (c & RK_RING_CLOSED) {
      if (final_pos) *final_pos = c & ~RK_RING_CLOSED;
      return RK_ECLOSED;
    }
    if (rk_cas_acq_rel_dev_u64(&r->claim, &c, c | RK_RING_CLOSED)) break;
  }
  if (final_pos) *final_pos = c;
  return RK_OK;
}
/** Nonzero when the ring is closed; *final_pos (may be NULL) receives the final index. */
RK_INLINE RK_HD int rk_ring_closed(const rk_ring *r, uint64_t *final_pos) {
  uint64_t c = rk_load_acquire_dev_u64(&r->claim); /**< pairs with rk_ring_close */
  if (final_pos) *final_pos = c & ~RK_RING_CLOSED;
  return (c & RK_RING_CLOSED) != 0;
}
/** The consumer's head (next position it will read). */
RK_INLINE RK_HD uint64_t rk_ring_head(const rk_ring *r) { return rk_load_acquire_sys_u64(&r->head); }

RK_EXTERN_C_END

#endif /* RINGKERNEL_RING_H */
