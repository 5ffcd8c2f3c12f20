/* device/persistent.cuh — the persistent ring-kernel loop and the device half of the kernel dialect.
 *
 * Compiled by nvcc (built-in kernels, src/device/builtins.cu) and by NVRTC (handlers supplied as
 * source at run time; this file is embedded into librk as a string). It includes only ringkernel
 * headers: NVRTC has no system headers.
 *
 * One block is one lane. Per iteration, thread 0 polls the control block (ld.acquire.sys of
 * cmd_seq) and the inbox (ld.acquire.sys of each slot's sequence word); the block copies up to
 * `batch` slots from host-mapped memory into shared memory with ld.relaxed.sys loads (mapped memory
 * is never read with weak, cacheable loads), synchronises, and thread 0 store-releases the inbox
 * head, freeing the slots for the host before the handlers even run. Every thread of the block
 * runs the handler on each message. Replies are written into the outbox slots (host memory) by the
 * block, then, after a barrier, thread 0 issues fence.acq_rel.sys and stores the outbox slots'
 * sequence words (the ring's per-slot publication, ring.h). The device never read-modify-writes
 * host memory (hostNativeAtomicSupported may be 0): its own ring indices are kept in shared memory
 * and only stored. Idle lanes back off with __nanosleep.
 * The kernel clock is a device-memory word updated with a device-scope CAS; physical time is
 * %globaltimer plus the offset the host calibrates into the control block. */
#ifndef RK_DEVICE_PERSISTENT_CUH
#define RK_DEVICE_PERSISTENT_CUH

#include "ringkernel/atomic.h"
#include "ringkernel/control.h"
#include "ringkernel/envelope.h"
#include "ringkernel/hlc.h"
#include "ringkernel/kernel.h"
#include "ringkernel/message.h"
#include "ringkernel/ring.h"
#include "device/params.h"

/* Batched sequence-word loads. On the GPU: relaxed loads then one fence (the fence-based acquire
 * pattern), so a batch costs one fence. In the host device emulation (src/device/emulation.h): an
 * acquire on every word, which ThreadSanitizer can check (it does not model fences). (The release
 * side is rk_ring__publish_seq in ring.h, split the same way.) */
#if defined(__CUDA_ARCH__)
#define RK_DEV_SEQ_LOAD(p) rk_load_relaxed_sys_u64(p)
#define RK_DEV_SEQ_FENCE() rk_fence_acq_rel_sys()
#else
#define RK_DEV_SEQ_LOAD(p) rk_load_acquire_sys_u64(p)
#define RK_DEV_SEQ_FENCE() ((void)0)
#endif

/* A consuming lane with work polls the control line once per this many loop iterations. */
#define RK_DEV_CONTROL_EVERY 8u

/* Lane state kept in shared memory: written by thread 0, read by all after a barrier. */
typedef struct rk_dev_lane {
  rk_ring *in;
  rk_ring *out;
  rk_lane_status *status;
  /* Ring geometry, read once at start: every read of host-mapped memory is a PCIe round trip. */
  uint8_t *in_slots;
  volatile uint64_t *in_seq;
  uint8_t *out_slots;
  volatile uint64_t *out_seq;
  uint64_t in_mask;
  uint64_t out_mask;
  uint64_t out_cap;
  uint64_t in_head;       /* our consumer index of the inbox (we are its only writer) */
  uint64_t out_tail;      /* our producer index of the outbox */
  uint64_t out_head;      /* cached view of the host's outbox head */
  uint64_t drain_to;
  uint64_t next_reply_id;
  uint64_t clock_off;     /* CLOCK_REALTIME - %globaltimer, reloaded on every new clock_req */
  uint32_t clock_seen;    /* last clock_req applied */
  uint32_t polls;         /* loop iterations, for the control-poll interval */
  /* The lane's counters: it is their only writer, so it keeps them here and only stores them to
   * its status line (a load of host memory would be a PCIe round trip per update). */
  uint64_t c_msgs_in, c_msgs_out, c_heartbeat, c_invalid, c_clock_rejected, c_handler_errors, c_stalls;
  uint32_t ack;
  uint32_t state;
  uint32_t n;             /* messages in the current batch */
  uint32_t out_pending;   /* replies written, not yet published */
  uint32_t exit;
  int replied;
  int coll_rc;
  int skip;
  void *coll_ptr;
  rk_envelope *reserved;
  rk_msg cur;
} rk_dev_lane;

struct rk_ctx {
  const rk_dev_params *p;
  rk_dev_lane *L;
  uint8_t *scratch;
  uint32_t lane;
};

/* ---------------------------------------- time and clock ------------------------------------- */

RK_INLINE __device__ uint64_t rk_dev_globaltimer(void) {
#if defined(RK_DEVICE_EMULATION)
  return rk_emu_globaltimer();
#else
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#endif
}

/* Physical microseconds: %globaltimer (ns) + the host-calibrated offset, which the lane keeps in
 * shared memory (reloaded when the host bumps clock_req, rk_dev_poll_control) rather than reading
 * it from host memory, a PCIe round trip, on every stamp. Never clock64(): it is per-SM cycles. */
RK_INLINE __device__ uint64_t rk_dev_physical_us(const rk_dev_lane *L) {
  return (rk_dev_globaltimer() + L->clock_off) / 1000u;
}

RK_INLINE __device__ rk_hlc rk_dev_tick(const rk_dev_params *p, const rk_dev_lane *L) {
  uint64_t pt = rk_dev_physical_us(L), old = rk_load_relaxed_dev_u64(p->clock), next;
  do {
    next = rk_hlc_send(old, pt);
  } while (!rk_cas_acq_rel_dev_u64(p->clock, &old, next)); /* pairs with itself across lanes */
  return next;
}

RK_INLINE __device__ int rk_dev_merge(const rk_dev_params *p, const rk_dev_lane *L, rk_hlc m) {
  uint64_t pt = rk_dev_physical_us(L), old, next;
  if (rk_hlc_too_far_ahead(m, pt, p->max_offset_us)) return RK_ECLOCK; /* the clock does not move */
  old = rk_load_relaxed_dev_u64(p->clock);
  do {
    next = rk_hlc_recv(old, m, pt);
  } while (!rk_cas_acq_rel_dev_u64(p->clock, &old, next));
  return RK_OK;
}

/* Single-writer counter in the lane's status line (mapped): the lane's own copy in shared memory,
 * then a store (posted: it does not wait for PCIe); never an RMW, never a load of host memory.
 * Relaxed: statistics, they publish nothing. */
RK_INLINE __device__ void rk_dev_count(uint64_t *mine, volatile uint64_t *c, uint64_t n) {
  *mine += n;
  rk_store_relaxed_sys_u64(c, *mine);
}

/* ---------------------------------------- replies (thread 0) --------------------------------- */

RK_INLINE __device__ uint8_t *rk_dev_in_slot(const rk_dev_params *p, rk_dev_lane *L, uint64_t pos) {
  return L->in_slots + (size_t)((pos & L->in_mask) * p->slot_size);
}

/* Thread 0: the next reply slot, or NULL when the outbox is full. The host's head is re-read (a
 * PCIe read) only when the cached view says full. */
RK_INLINE __device__ rk_envelope *rk_dev_reply_slot(const rk_dev_params *p, rk_dev_lane *L) {
  uint64_t want = L->out_pending + 1;
  if (L->out_cap - (L->out_tail - L->out_head) < want) {
    L->out_head = rk_ring_load_acquire_head(L->out); /* pairs with the host drainer's release */
    if (L->out_cap - (L->out_tail - L->out_head) < want) return 0;
  }
  return RK_CAST(rk_envelope *, L->out_slots + (size_t)(((L->out_tail + L->out_pending) & L->out_mask) * p->slot_size));
}

RK_INLINE __device__ void rk_dev_reply_header(const rk_dev_params *p, rk_dev_lane *L, rk_envelope *e,
                                              uint32_t type, uint32_t len, uint16_t flags) {
  rk_envelope_init(e, type, len, (uint16_t)(RK_ENV_F_REPLY | flags));
  e->msg_id = ((uint64_t)(blockIdx.x + 1) << 48) | ++L->next_reply_id;
  e->correlation_id = L->cur.env.msg_id;
  e->src = p->kernel_id;
  e->dst = L->cur.env.src;
  e->node = p->kernel_id;
  e->lane = (uint16_t)blockIdx.x;
  e->priority = L->cur.env.priority;
}

RK_INLINE __device__ void rk_dev_reply_staged(const rk_dev_params *p, rk_dev_lane *L, rk_envelope *e) {
  e->hlc = rk_dev_tick(p, L);
  L->out_pending++;
  L->replied = 1;
  rk_dev_count(&L->c_msgs_out, &L->status->msgs_out, 1);
}

RK_INLINE __device__ int rk_dev_reply_put(const rk_dev_params *p, rk_dev_lane *L, uint32_t type, uint16_t flags,
                                          const void *payload, uint32_t len) {
  rk_envelope *e;
  if (L->cur.env.flags & RK_ENV_F_NO_REPLY) return RK_OK;
  if (len > p->slot_size - RK_ENVELOPE_SIZE) return RK_EMSGSIZE;
  e = rk_dev_reply_slot(p, L);
  if (e == 0) return RK_EAGAIN;
  rk_dev_reply_header(p, L, e, type, len, flags);
  rk_ring__copy(e + 1, payload, len);
  rk_dev_reply_staged(p, L, e);
  return RK_OK;
}

/* Publish staged replies: barrier (the block's writes are done and ordered before thread 0's), then
 * thread 0 fences at system scope and stores each reply's sequence word = position + 1 (the release
 * pattern; pairs with the host drainer's load-acquire of the sequence words in rk_ring_peek_n).
 * The tail is the producer's own index, stored for observers only. Ring geometry comes from the
 * lane's cached copy: reading the mapped header again would be a PCIe round trip per word. */
RK_INLINE __device__ void rk_dev_flush(rk_dev_lane *L) {
  __syncthreads();
  if (threadIdx.x == 0 && L->out_pending) {
    rk_ring__publish_seq(L->out_seq, L->out_mask, L->out_tail, L->out_pending);
    L->out_tail += L->out_pending;
    rk_store_relaxed_sys_u64(&L->out->tail, L->out_tail);
    L->out_pending = 0;
  }
  __syncthreads();
}

/* ---------------------------------------- the dialect (device side) -------------------------- */

static __device__ void *rk_state(rk_ctx *ctx) { return ctx->p->state; }
static __device__ void *rk_scratch(rk_ctx *ctx, size_t *size) {
  if (size) *size = ctx->p->scratch_size;
  return ctx->scratch;
}
static __device__ rk_hlc rk_now(rk_ctx *ctx) { return rk_dev_tick(ctx->p, ctx->L); }
static __device__ uint32_t rk_thread(rk_ctx *ctx) { (void)ctx; return threadIdx.x; }
static __device__ uint32_t rk_threads(rk_ctx *ctx) { (void)ctx; return blockDim.x; }
static __device__ void rk_sync(rk_ctx *ctx) { (void)ctx; __syncthreads(); }
static __device__ uint32_t rk_lane(rk_ctx *ctx) { return ctx->lane; }
static __device__ uint32_t rk_lanes(rk_ctx *ctx) { return ctx->p->lanes; }
static __device__ uint32_t rk_self(rk_ctx *ctx) { return ctx->p->kernel_id; }

static __device__ int rk_reply(rk_ctx *ctx, uint32_t type, const void *payload, uint32_t len) {
  __syncthreads();
  if (threadIdx.x == 0)
    ctx->L->coll_rc = (payload == 0 && len > 0) ? RK_EINVAL
                      : ctx->L->reserved         ? RK_ESTATE /* the next slot is the reservation's */
                                                 : rk_dev_reply_put(ctx->p, ctx->L, type, 0, payload, len);
  __syncthreads();
  return ctx->L->coll_rc;
}

static __device__ void *rk_reply_reserve(rk_ctx *ctx, uint32_t type, uint32_t len) {
  rk_dev_lane *L = ctx->L;
  __syncthreads();
  if (threadIdx.x == 0) {
    rk_envelope *e = 0;
    L->coll_ptr = 0;
    if (!(L->cur.env.flags & RK_ENV_F_NO_REPLY) && len <= ctx->p->slot_size - RK_ENVELOPE_SIZE && L->reserved == 0)
      e = rk_dev_reply_slot(ctx->p, L);
    if (e) {
      rk_dev_reply_header(ctx->p, L, e, type, len, 0);
      L->reserved = e;
      L->coll_ptr = e + 1;
    }
  }
  __syncthreads();
  return L->coll_ptr;
}

static __device__ int rk_reply_commit(rk_ctx *ctx) {
  rk_dev_lane *L = ctx->L;
  __syncthreads();
  if (threadIdx.x == 0) {
    if (L->reserved) {
      rk_dev_reply_staged(ctx->p, L, L->reserved);
      L->reserved = 0;
      L->coll_rc = RK_OK;
    } else {
      L->coll_rc = (L->cur.env.flags & RK_ENV_F_NO_REPLY) ? RK_OK : RK_ESTATE;
    }
  }
  __syncthreads();
  return L->coll_rc;
}

/* ---------------------------------------- the loop ------------------------------------------- */

/* Copy n slots starting at the inbox head from mapped memory into shared memory, the block's
 * threads striding over 8-byte words, with relaxed system-scope loads (ordered after thread 0's
 * acquire of each slot's sequence word by the barrier that preceded this call). */
RK_INLINE __device__ void rk_dev_copy_in(const rk_dev_params *p, rk_dev_lane *L, uint8_t *dst, uint32_t n) {
  uint32_t words = p->slot_size / 8u, i;
  for (i = threadIdx.x; i < n * words; i += blockDim.x) {
    uint32_t s = i / words, w = i % words;
    const volatile uint64_t *src = RK_CAST(const volatile uint64_t *, rk_dev_in_slot(p, L, L->in_head + s)) + w;
    RK_CAST(uint64_t *, dst + (size_t)s * p->slot_size)[w] = rk_load_relaxed_sys_u64(src);
  }
}

/* Thread 0: apply a new command, if any. */
RK_INLINE __device__ void rk_dev_poll_control(const rk_dev_params *p, rk_dev_lane *L) {
  rk_control_host *h = &p->ctl->host;
  uint32_t seq = rk_load_acquire_sys_u32(&h->cmd_seq); /* pairs with the host's release */
  if (seq != L->ack) {
    uint32_t cmd = rk_load_relaxed_sys_u32(&h->cmd);
    if (cmd == RK_CMD_ACTIVATE && (L->state == RK_STATE_LAUNCHED || L->state == RK_STATE_INACTIVE))
      L->state = RK_STATE_ACTIVE;
    else if (cmd == RK_CMD_DEACTIVATE && L->state == RK_STATE_ACTIVE)
      L->state = RK_STATE_INACTIVE;
    else if (cmd == RK_CMD_TERMINATE) {
      L->drain_to = rk_load_relaxed_sys_u64(&rk_control_lane_cmd(p->ctl, blockIdx.x)->drain_to);
      L->state = RK_STATE_TERMINATING;
    }
    rk_store_relaxed_sys_u32(&L->status->state, L->state);
    L->ack = seq;
    rk_store_release_sys_u32(&L->status->ack_seq, seq); /* pairs with the host's acquire */
  }
  {
    /* The abort bit and the clock request in one word, one read. Acquire pairs with the host's
     * release RMWs of signals (clock_request writes clock_offset_ns before). */
    uint64_t w = rk_load_acquire_sys_u64(&h->signals);
    uint32_t req = rk_signals_clock_req(w);
    if (w & RK_SIGNAL_ABORT) L->exit = 1;
    if (req != L->clock_seen) {
      L->clock_seen = req;
      L->clock_off = rk_load_relaxed_sys_u64(&h->clock_offset_ns); /* ordered by the acquire */
      if (blockIdx.x == 0) { /* lane 0 answers: its clock now, then the ack that publishes it */
        rk_store_relaxed_sys_u64(&L->status->clock_sample_ns, rk_dev_globaltimer());
        rk_store_release_sys_u32(&L->status->clock_ack, req); /* pairs with rk__clock_sync's acquire */
      }
    }
  }
}

/* Thread 0: how many published slots can be taken now (sequence words, signed difference).
 * Every load of host-mapped memory is a PCIe round trip (about a microsecond), and an acquire load
 * holds back the loads after it, so this reads in at most two rounds: the first sequence word
 * (acquire; all an idle lane pays per poll), then, if it is published, the next batch - 1 words
 * together (relaxed loads with nothing between them: in flight at once), followed by one
 * system-scope fence that makes them acquires (the PTX fence-based acquire pattern). A word past
 * the published prefix (or a lap behind, when the ring is smaller than the batch) reads as "not
 * yet" by signed difference and ends the batch. */
RK_INLINE __device__ uint32_t rk_dev_ready(const rk_dev_params *p, rk_dev_lane *L, int deep_idle) {
  uint64_t w[RK_DEV_MAX_BATCH], first;
  uint32_t k, i, max = p->batch < RK_DEV_MAX_BATCH ? p->batch : RK_DEV_MAX_BATCH;
  const volatile uint64_t *s0 = L->in_seq + (L->in_head & L->in_mask);
  if (L->state == RK_STATE_TERMINATING && L->drain_to - L->in_head < max) max = (uint32_t)(L->drain_to - L->in_head);
  if (max == 0) return 0;
  /* The first word pairs with the host producers' store-release of each sequence word
   * (rk_ring_mpsc_commit_n). A busy lane load-acquires it: the fastest way to a message. A lane
   * asleep in the idle back-off polls it relaxed and fences only when it is published: an acquire
   * at system scope also invalidates the SM's L1 (CCTL.IVALL in the SASS), which, once per poll
   * of every sleeping lane, would cost the other blocks on that SM their cached data. */
  first = deep_idle ? RK_DEV_SEQ_LOAD(s0) : rk_load_acquire_sys_u64(s0);
  if (!rk_ring_seq_published(first, L->in_head)) return 0;
  if (max == 1) {
    if (deep_idle) RK_DEV_SEQ_FENCE();
    return 1;
  }
#pragma unroll
  for (i = 1; i < RK_DEV_MAX_BATCH; i++)
    if (i < max) w[i] = RK_DEV_SEQ_LOAD(L->in_seq + ((L->in_head + i) & L->in_mask));
  k = 1; /* the published prefix; unrolled with constant indices so w stays in registers */
#pragma unroll
  for (i = 1; i < RK_DEV_MAX_BATCH; i++)
    if (k == i && i < max && rk_ring_seq_published(w[i], L->in_head + i)) k = i + 1;
  /* orders the copy's slot reads after these sequence loads (they saw the producers' releases) */
  if (k > 1 || deep_idle) RK_DEV_SEQ_FENCE();
  return k;
}

/* Thread 0: may message e produce a reply, so that it needs a free outbox slot before it is
 * handled? Everything but a well-formed request sent with RK_SEND_NO_REPLY may: a handler's reply
 * or an error reply. (The CPU lane's rule, outbox_room in cpu_backend.c.) */
RK_INLINE __device__ int rk_dev_needs_room(const rk_envelope *e) {
  return !(e->magic == RK_ENVELOPE_MAGIC && (e->flags & RK_ENV_F_NO_REPLY));
}

/* Thread 0: validate e and merge its stamp into the kernel clock. L->skip = 0: run the handler;
 * 1: refused (and answered with an error reply when its header is trustworthy enough). The caller
 * made sure a reply fits, so an error reply is never dropped. */
RK_INLINE __device__ void rk_dev_admit(const rk_dev_params *p, rk_dev_lane *L, const rk_envelope *e) {
  int chk = rk_envelope_validate(e, 0, p->slot_size - RK_ENVELOPE_SIZE, p->kernel_id);
  L->skip = 1;
  if (chk != RK_ENV_OK) {
    rk_dev_count(&L->c_invalid, &L->status->invalid, 1);
    if (chk >= RK_ENV_BAD_LENGTH) {
      int32_t c = RK_ECORRUPT;
      L->cur.env.payload_len = 0;
      (void)rk_dev_reply_put(p, L, e->type, RK_ENV_F_ERROR, &c, sizeof c);
    }
  } else if (rk_dev_merge(p, L, e->hlc) != RK_OK) {
    int32_t c = RK_ECLOCK;
    rk_dev_count(&L->c_clock_rejected, &L->status->clock_rejected, 1);
    (void)rk_dev_reply_put(p, L, e->type, RK_ENV_F_ERROR, &c, sizeof c);
  } else {
    L->skip = 0;
  }
}

/* Thread 0, outbox full (replies staged so far already published): wait until the host takes
 * replies. The lane stays alive while it waits, as a CPU lane does: it applies commands (a
 * deactivate or terminate is acknowledged, not timed out), lane 0 answers clock requests, and the
 * heartbeat moves (a lane waiting for its receiver is not stalled: the watchdog must not fault
 * it). Returns 1 when a reply fits again, 0 when the abort bit ended the wait (L->exit). */
RK_INLINE __device__ int rk_dev_wait_room(const rk_dev_params *p, rk_dev_lane *L) {
  for (;;) {
    if (rk_dev_reply_slot(p, L) != 0) return 1;
    rk_dev_poll_control(p, L);
    if (L->exit) return 0;
    rk_dev_count(&L->c_heartbeat, &L->status->heartbeat, 1);
    __nanosleep(1000);
  }
}

/* The launch parameters as the lane copies them: 64-bit words. */
typedef union rk_dev_params_words {
  rk_dev_params p;
  uint64_t w[sizeof(rk_dev_params) / 8];
} rk_dev_params_words;

RK_STATIC_ASSERT(sizeof(rk_dev_lane) + sizeof(rk_dev_params_words) <= RK_DEV_STATIC_SMEM, "static shared memory budget");
RK_STATIC_ASSERT(sizeof(rk_dev_params) % 8 == 0, "params are copied in 64-bit words");

/* A block's shared variable. (Emulation: a per-block arena shared by the block's host threads.) */
#if defined(RK_DEVICE_EMULATION)
#define RK_DEV_SHARED(type, name) type &name = rk_emu_shared<type>(__LINE__)
#else
#define RK_DEV_SHARED(type, name) __shared__ type name
#endif

template <int (*Handler)(rk_ctx *, const rk_msg *)>
__device__ void rk_dev_lane_main(const rk_dev_params *p_mapped) {
#if defined(RK_DEVICE_EMULATION)
  uint8_t *rk_smem = rk_emu_dynamic_smem();
#else
  extern __shared__ __align__(16) uint8_t rk_smem[];
#endif
  RK_DEV_SHARED(rk_dev_lane, L);
  RK_DEV_SHARED(rk_dev_params_words, P);
  const rk_dev_params *p = &P.p;
  rk_ctx ctx;
  uint32_t idle = 0, w;
  /* The parameters live in host-mapped memory, written before the launch and never again: one
   * copy into shared memory (relaxed system-scope loads, spread over the threads), so the loop's
   * reads of them never cross PCIe. */
  for (w = threadIdx.x; w < sizeof(rk_dev_params) / 8; w += blockDim.x)
    P.w[w] = rk_load_relaxed_sys_u64(RK_CAST(const volatile uint64_t *, p_mapped) + w);
  __syncthreads();
  ctx.p = p;
  ctx.L = &L;
  ctx.lane = blockIdx.x;
  ctx.scratch = rk_smem + (size_t)p->batch * p->slot_size;
  if (threadIdx.x == 0) {
    L.in = RK_CAST(rk_ring *, p->inbox_base + (size_t)blockIdx.x * p->inbox_stride);
    L.out = RK_CAST(rk_ring *, p->outbox_base + (size_t)blockIdx.x * p->outbox_stride);
    L.status = rk_control_lane(p->ctl, p->lanes, blockIdx.x);
    /* The configuration line is written before launch and never again: relaxed loads, once. */
    L.in_slots = RK_CAST(uint8_t *, L.in) + rk_load_relaxed_sys_u64(&L.in->slots_offset);
    L.in_seq = RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, L.in) + rk_load_relaxed_sys_u64(&L.in->seq_offset));
    L.in_mask = rk_load_relaxed_sys_u64(&L.in->mask);
    L.out_slots = RK_CAST(uint8_t *, L.out) + rk_load_relaxed_sys_u64(&L.out->slots_offset);
    L.out_seq = RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, L.out) + rk_load_relaxed_sys_u64(&L.out->seq_offset));
    L.out_mask = rk_load_relaxed_sys_u64(&L.out->mask);
    L.out_cap = L.out_mask + 1;
    L.in_head = rk_load_relaxed_sys_u64(&L.in->head);
    L.out_tail = rk_load_relaxed_sys_u64(&L.out->tail);
    L.out_head = rk_ring_load_acquire_head(L.out);
    L.next_reply_id = 0;
    L.ack = 0;
    L.clock_seen = 0; /* the host bumps clock_req to 1 with the launch calibration */
    L.clock_off = 0;
    L.polls = 0;
    /* a lane starts once per kernel, on a zeroed status line */
    L.c_msgs_in = L.c_msgs_out = L.c_heartbeat = L.c_invalid = L.c_clock_rejected = 0;
    L.c_handler_errors = L.c_stalls = 0;
    L.state = RK_STATE_LAUNCHED;
    L.out_pending = 0;
    L.exit = 0;
    L.reserved = 0;
    rk_store_relaxed_sys_u32(&L.status->state, L.state);
    rk_store_relaxed_sys_u64(&L.status->clock_sample_ns, rk_dev_globaltimer()); /* clock calibration */
    rk_store_release_sys_u32(&L.status->checked_in, 1); /* co-residency proof; pairs with the host */
  }
  __syncthreads();
  for (;;) {
    if (threadIdx.x == 0) {
      int consuming = L.state == RK_STATE_ACTIVE || L.state == RK_STATE_TERMINATING;
      L.n = 0;
      /* The control line costs two PCIe reads. A consuming lane reads it every
       * RK_DEV_CONTROL_EVERY iterations (commands are rare and wait microseconds at most); a lane
       * that is not consuming reads it on every iteration, and so does lane 0 once it has been idle
       * a while (it sleeps between polls anyway, and it must answer clock requests promptly). */
      if (!consuming || (idle > 64 && blockIdx.x == 0) || (L.polls++ % RK_DEV_CONTROL_EVERY) == 0)
        rk_dev_poll_control(p, &L);
      /* Taken whether or not the outbox has room: a message that may reply waits for room in the
       * batch loop (rk_dev_wait_room), one sent without reply needs none. */
      if (!L.exit && (L.state == RK_STATE_ACTIVE || L.state == RK_STATE_TERMINATING)) {
        if (L.state == RK_STATE_TERMINATING && (int64_t)(L.in_head - L.drain_to) >= 0) L.exit = 1; /* drained */
        else L.n = rk_dev_ready(p, &L, idle > 64);
      }
    }
    __syncthreads();
    if (L.exit) break;
    if (L.n == 0) {
      /* Every thread has read L.exit and L.n before thread 0 writes the next round's: without
       * this barrier a lagging warp could read the next round's L.n and run one barrier ahead of
       * the block from then on. (The busy path ends with rk_dev_flush's barrier.) */
      __syncthreads();
      if (threadIdx.x == 0 && ++idle > 64) __nanosleep(idle < 4096 ? 256 : 2000);
      continue;
    }
    idle = 0;
    rk_dev_copy_in(p, &L, rk_smem, L.n);
    __syncthreads();
    if (threadIdx.x == 0) {
      L.in_head += L.n;
      rk_store_release_sys_u64(&L.in->head, L.in_head); /* slots copied: the host may reuse them */
      rk_dev_count(&L.c_msgs_in, &L.status->msgs_in, L.n);
    }
    /* The batch's slots are copied and released: every message is handled (or refused), none is
     * given back. A message that may reply waits for outbox room first; a deactivate that arrives
     * meanwhile takes effect after the batch. */
    for (uint32_t i = 0; i < L.n; i++) {
      rk_envelope *e = RK_CAST(rk_envelope *, rk_smem + (size_t)i * p->slot_size);
      if (threadIdx.x == 0) {
        L.replied = 0;
        L.reserved = 0;
        L.cur.env = *e;
        L.cur.payload = e->payload_len ? RK_CAST(const void *, e + 1) : 0;
        L.cur.len = e->payload_len;
        L.cur.status = 0;
        if (L.exit)
          L.skip = 1; /* aborted while waiting for room: the rest of the batch is dropped */
        else if (rk_dev_needs_room(e) && rk_dev_reply_slot(p, &L) == 0)
          L.skip = 2; /* the outbox is full: publish, then wait for room (below) */
        else
          rk_dev_admit(p, &L, e);
      }
      __syncthreads();
      if (L.skip == 2) {
        rk_dev_flush(&L);
        if (threadIdx.x == 0) {
          rk_dev_count(&L.c_stalls, &L.status->outbox_stalls, 1);
          if (rk_dev_wait_room(p, &L))
            rk_dev_admit(p, &L, e);
          else
            L.skip = 1;
        }
        __syncthreads();
      }
      if (L.skip == 0) {
        int rc = Handler(&ctx, &L.cur);
        if (threadIdx.x == 0) {
          L.reserved = 0; /* a reservation never committed publishes nothing */
          if (rc < 0) {
            int32_t c = rc;
            rk_dev_count(&L.c_handler_errors, &L.status->handler_errors, 1);
            if (!L.replied) rk_dev_reply_put(p, &L, L.cur.env.type, RK_ENV_F_ERROR, &c, sizeof c);
          }
        }
      }
      /* A heartbeat per message, not per batch: a batch of slow messages that keeps making
       * progress is not a stall (the watchdog, telemetry.c). A posted store. */
      if (threadIdx.x == 0) rk_dev_count(&L.c_heartbeat, &L.status->heartbeat, 1);
      __syncthreads();
    }
    rk_dev_flush(&L);
  }
  /* Exit: publish what is staged, close the outbox (a store: the device never RMWs host memory),
   * then report TERMINATED (pairs with the host's acquire before it reclaims memory). */
  rk_dev_flush(&L);
  if (threadIdx.x == 0) {
    rk_store_release_sys_u64(&L.out->claim, L.out_tail | RK_RING_CLOSED);
    rk_store_release_sys_u32(&L.status->state, RK_STATE_TERMINATED);
  }
}

/* Define an extern "C" persistent kernel entry point `name` running handler `h`. (Emulation: a
 * host function of internal linkage; librk's own entry points keep the names.) */
#if defined(RK_DEVICE_EMULATION)
#define RK_DEFINE_RING_KERNEL(name, h) \
  static void name(const rk_dev_params *p) { rk_dev_lane_main<h>(p); }
#else
#define RK_DEFINE_RING_KERNEL(name, h) \
  extern "C" __global__ void name(const rk_dev_params *p) { rk_dev_lane_main<h>(p); }
#endif

#endif /* RK_DEVICE_PERSISTENT_CUH */
