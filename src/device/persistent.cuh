/* device/persistent.cuh — the persistent ring-kernel loop and the device half of the kernel dialect.
 *
 * Compiled by nvcc (built-in kernels, src/device/builtins.cu), by NVRTC (handlers supplied as
 * source at run time; this file is embedded into librk as a string) and, as host C++, by the
 * device emulation (src/device/emulation.h) that runs it in the test suite and rk-bench. It
 * includes only ringkernel headers: NVRTC has no system headers.
 *
 * One block is one lane. The design rule is PCIe's: every load of host-mapped memory is a round
 * trip (about a microsecond, more behind an IOMMU) and every system-scope fence waits for the posted
 * stores before it, so the lane counts both and spends about two serial round trips per message
 * when messages come one at a time, a fraction of one when they stream, and one system fence per
 * batch (ARCHITECTURE §8; the emulated device counts them: rk-bench devmodel). How:
 *  - Taking messages. An idle lane's poll is one round: the next batch's sequence words (relaxed,
 *    in flight together) and, last, the head position's word with ld.acquire.sys (and the control
 *    line every few polls). A published head position is taken at once; the other positions it saw
 *    published are acquired by the fence of the batch's publication (the fence-based acquire
 *    pattern), so a burst costs no fence of its own. While messages stream, the lane looks at the
 *    next batch's sequence words during each publication, before its fence: one round, no fence
 *    of its own (rk_dev_poll_ahead).
 *  - The slot copy. The block's threads copy the batch into shared memory with 16-byte
 *    ld.relaxed.sys loads, several per thread in flight before any is stored (one round for the
 *    first RK_DEV_COPY_PREFIX bytes of every slot; a second only for slots whose envelope says the
 *    payload goes further). Only the envelope and its payload are copied, never the unused rest.
 *  - Replies are built in shared memory (rk_reply, rk_reply_reserve point there) and written to the
 *    outbox as whole 64-byte lines by the block's threads (16-byte stores), then published with one
 *    fence per batch: fence.acq_rel.sys, then relaxed stores of the inbox head (the batch's slots
 *    are free), the replies' sequence words, the outbox tail and the counters that changed. The
 *    inbox head is released there, not separately: one fence.
 *  - The kernel clock (device memory) moves by one relaxed CAS per publication, which merges the
 *    batch's received stamps (receive rule) and takes one stamp per reply (send rule): the clock
 *    orders no other data, so no fence (rk_now takes one CAS of its own).
 *  - Counters live in shared memory and are stored with the publication; the heartbeat is stored
 *    at most every RK_DEV_HEARTBEAT_NS (the watchdog needs it to move, not to count).
 *  - The device never read-modify-writes host memory (hostNativeAtomicSupported may be 0); its
 *    own ring indices live in shared memory and are only stored.
 * Physical time is %globaltimer plus the offset the host calibrates into the control block. */
#ifndef RK_DEVICE_PERSISTENT_CUH
#define RK_DEVICE_PERSISTENT_CUH

#include "ringkernel/atomic.h"
#include "ringkernel/buffer.h"
#include "ringkernel/control.h"
#include "ringkernel/envelope.h"
#include "ringkernel/hlc.h"
#include "ringkernel/kernel.h"
#include "ringkernel/message.h"
#include "ringkernel/ring.h"
#include "device/lane_rules.h"
#include "device/params.h"

/* A busy lane reads the control line with every RK_DEV_CONTROL_EVERY-th poll (commands are rare;
 * they wait a few microseconds); a lane that is not consuming, with every poll. */
#define RK_DEV_CONTROL_EVERY 8u
/* Bytes of each slot the first copy round takes at least: the envelope and 64 bytes of payload.
 * More when the last batch's largest message was longer (rk_dev_copy_in). */
#define RK_DEV_COPY_PREFIX 128u
/* 16-byte loads a thread keeps in flight per copy round (registers: 2 x 64 bits each). */
#define RK_DEV_COPY_UNROLL 4
/* A lane idle this long sleeps longer between polls and polls relaxed (an acquire at system scope
 * is LD + CCTL.IVALL, which would empty its SM's L1 for the other blocks on every poll); the message
 * that wakes it costs a fence. 40 round trips of a GPU ping-pong: messages one at a time never find
 * the lane there. (The emulated device, hundreds of times slower, scales it: emulation.h.) */
#ifndef RK_DEV_DEEP_IDLE_NS
#define RK_DEV_DEEP_IDLE_NS 200000ull
#endif
/* K2K batches in a row without a look at the host inbox while it was last seen empty (fairness:
 * the lane loop). */
#define RK_DEV_K2K_STREAK 4u
/* Idle polls before the lane sleeps between polls at all. */
#define RK_DEV_SPIN_POLLS 64u
/* The heartbeat is stored at most this often while the lane works or waits. */
#define RK_DEV_HEARTBEAT_NS 100000ull

/* ---------------------------------------- host-mapped memory -------------------------------- */
/* Every access of the lane to host-mapped memory goes through these, so each says its order and
 * scope (ringkernel/atomic.h spells them) and the emulated device counts it (emulation.h). Four
 * kinds of load: data (relaxed), observations (relaxed on the device, made acquires by a later
 * fence.acq_rel.sys; acquires in the emulation, whose ThreadSanitizer does not model fences),
 * acquires, and 16-byte data loads; stores alike, "publications" being the relaxed stores that
 * follow the fence (releases in the emulation). RK_DEV_ROUND_BEGIN/END mark loads issued back to
 * back, all in flight before any is used: one round trip (the rule in emulation.h). */
#if defined(RK_DEVICE_EMULATION)
#include <stdio.h>  /* rk_dev_copy_out's check of the staged word */
#include <stdlib.h>
#define RK_DEV_ROUND_BEGIN() rk_emu_round_begin()
#define RK_DEV_ROUND_END() rk_emu_round_end()
#define RK_DEV_NOTE(x) (x)
#define RK_DEV_OBS_LD64(p) rk_load_acquire_sys_u64(p)
#define RK_DEV_OBS_LD32(p) rk_load_acquire_sys_u32(p)
#define RK_DEV_PUB_ST64(p, v) rk_store_release_sys_u64(p, v)
#else
#define RK_DEV_ROUND_BEGIN() ((void)0)
#define RK_DEV_ROUND_END() ((void)0)
#define RK_DEV_NOTE(x) ((void)0)
#define RK_DEV_OBS_LD64(p) rk_load_relaxed_sys_u64(p)
#define RK_DEV_OBS_LD32(p) rk_load_relaxed_sys_u32(p)
#define RK_DEV_PUB_ST64(p, v) rk_store_relaxed_sys_u64(p, v)
#endif

RK_INLINE __device__ uint64_t rk_dev_ld(const volatile uint64_t *p) {
  RK_DEV_NOTE(rk_emu_note_load(8, 0));
  return rk_load_relaxed_sys_u64(p);
}
RK_INLINE __device__ uint32_t rk_dev_ld32(const volatile uint32_t *p) {
  RK_DEV_NOTE(rk_emu_note_load(4, 0));
  return rk_load_relaxed_sys_u32(p);
}
RK_INLINE __device__ uint64_t rk_dev_ld_obs(const volatile uint64_t *p) {
  RK_DEV_NOTE(rk_emu_note_load(8, 0));
  return RK_DEV_OBS_LD64(p);
}
RK_INLINE __device__ uint32_t rk_dev_ld32_obs(const volatile uint32_t *p) {
  RK_DEV_NOTE(rk_emu_note_load(4, 0));
  return RK_DEV_OBS_LD32(p);
}
RK_INLINE __device__ uint64_t rk_dev_ld_acq(const volatile uint64_t *p) {
  RK_DEV_NOTE(rk_emu_note_load(8, 1));
  return rk_load_acquire_sys_u64(p);
}
RK_INLINE __device__ uint32_t rk_dev_ld32_acq(const volatile uint32_t *p) {
  RK_DEV_NOTE(rk_emu_note_load(4, 1));
  return rk_load_acquire_sys_u32(p);
}
RK_INLINE __device__ void rk_dev_ld16(const volatile uint64_t *p, uint64_t *a, uint64_t *b) {
  RK_DEV_NOTE(rk_emu_note_load(16, 0));
  rk_load_relaxed_sys_v2u64(p, a, b);
}
RK_INLINE __device__ void rk_dev_st(volatile uint64_t *p, uint64_t v) {
  RK_DEV_NOTE(rk_emu_note_store(8));
  rk_store_relaxed_sys_u64(p, v);
}
RK_INLINE __device__ void rk_dev_st32(volatile uint32_t *p, uint32_t v) {
  RK_DEV_NOTE(rk_emu_note_store(4));
  rk_store_relaxed_sys_u32(p, v);
}
RK_INLINE __device__ void rk_dev_st_pub(volatile uint64_t *p, uint64_t v) {
  RK_DEV_NOTE(rk_emu_note_store(8));
  RK_DEV_PUB_ST64(p, v);
}
RK_INLINE __device__ void rk_dev_st16(volatile uint64_t *p, uint64_t a, uint64_t b) {
  RK_DEV_NOTE(rk_emu_note_store(16));
  rk_store_relaxed_sys_v2u64(p, a, b);
}
/* A store-release at system scope is a fence and a store (MEMBAR.SYS in the SASS): rare paths only
 * (command acknowledgements, the clock answer, the exit). */
RK_INLINE __device__ void rk_dev_st_rel32(volatile uint32_t *p, uint32_t v) {
  RK_DEV_NOTE(rk_emu_note_fence());
  RK_DEV_NOTE(rk_emu_note_store(4));
  rk_store_release_sys_u32(p, v);
}
RK_INLINE __device__ void rk_dev_st_rel(volatile uint64_t *p, uint64_t v) {
  RK_DEV_NOTE(rk_emu_note_fence());
  RK_DEV_NOTE(rk_emu_note_store(8));
  rk_store_release_sys_u64(p, v);
}
RK_INLINE __device__ void rk_dev_fence(void) {
  RK_DEV_NOTE(rk_emu_note_fence());
  rk_fence_acq_rel_sys();
}

/* ---------------------------------------- lane state ---------------------------------------- */

/* Lane counters kept in shared memory (the lane is their only writer) and stored, when changed,
 * with the publication: a load of host memory would be a round trip per update. */
enum {
  RK_DEV_C_MSGS_IN,
  RK_DEV_C_MSGS_OUT,
  RK_DEV_C_INVALID,
  RK_DEV_C_CLOCK_REJECTED,
  RK_DEV_C_HANDLER_ERRORS,
  RK_DEV_C_STALLS,
  RK_DEV_C_K2K_IN,
  RK_DEV_C_K2K_OUT,
  RK_DEV_C_K2K_REFUSED,
  RK_DEV_C_K2K_INVALID,
  RK_DEV_C_K2K_OWED, /* (a count that goes down too: the answers that came back) */
  RK_DEV_C_COUNT
};

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
  uint8_t *stage;         /* shared memory: stage_cap reply slots (outbox positions out_tail + i) */
  uint64_t in_mask;
  uint64_t out_mask;
  uint64_t out_cap;
  uint64_t in_head;       /* next inbox position to take (we are the inbox's only consumer) */
  uint64_t in_released;   /* the inbox head last stored: the host may reuse the slots below it */
  uint64_t out_tail;      /* next outbox position to publish */
  uint64_t out_head;      /* cached view of the host's outbox head */
  uint64_t out_head_seen; /* an observation of it, taken before the fence that acquires it */
  uint64_t drain_to;
  uint64_t next_reply_id;
  uint64_t clock_off;     /* host clock - %globaltimer, reloaded on every newer clock_req */
  uint64_t clock_bound;   /* drift bound for host stamps (us): max_offset_us + the offset's uncertainty */
  uint64_t merge;         /* highest stamp admitted and not yet merged into the kernel clock */
  uint64_t last_work_ns;  /* %globaltimer when the lane last took a message */
  uint64_t beat_ns;       /* %globaltimer of the last heartbeat store */
  uint64_t heartbeat;
  uint64_t in_done;       /* inbox positions handled (or refused): in_done <= in_head */
  uint32_t dirty;         /* counters changed since they were last stored (bit per counter) */
  uint32_t avail;         /* positions from in_head seen published and acquired: take them now */
  uint32_t pend;          /* positions after those seen published; acquired by the next fence */
  uint32_t open;          /* the last look ended on a published word: more may follow */
  uint32_t ctl_seen;      /* the last poll read the control line: ctl_seq and ctl_sig hold it */
  uint32_t ctl_seq;
  uint64_t ctl_sig;
  uint32_t head_seen;     /* out_head_seen is fresh */
  uint32_t ack;
  uint32_t state;
  uint32_t clock_seen;    /* last clock_req applied */
  uint32_t polls;         /* polls, for the control-poll interval */
  uint32_t idle;          /* idle iterations in a row */
  uint32_t prefix;        /* bytes of each slot the next copy's first round takes */
  uint32_t n;             /* messages in the current batch */
  uint32_t staged;        /* replies staged in shared memory, not yet written out */
  uint32_t stage_cap;
  uint32_t exit;
  uint32_t publish;       /* the current flush publishes (and fences) */
  int replied;
  int coll_rc;
  int skip;
  int32_t reserved;       /* staging index of rk_reply_reserve's reply, -1 if none */
  void *coll_ptr;
  rk_msg cur;
  /* K2K (a kernel of a graph): the lane's K2K inbox, an MPSC ring in device memory (L2, never
   * PCIe), consumed like the host inbox; NULL when the kernel is in no graph. */
  rk_ring *kin;
  uint8_t *kin_slots;
  volatile uint64_t *kin_seq;
  uint64_t kin_mask;
  uint64_t kin_head;      /* next K2K position to take */
  uint64_t kin_done;      /* K2K positions handled (or refused): released to the producers */
  uint64_t kin_final;     /* where the lane closed its K2K inbox (kin_closed) */
  uint32_t kin_closed;
  uint32_t kin_batch;     /* the current batch comes from the K2K inbox */
  uint32_t turn;          /* the K2K inbox is looked at first in the next iteration */
  uint32_t streak;        /* K2K batches in a row without a look at the host inbox */
  uint32_t sent;          /* K2K messages the current handler sent */
  uint32_t kpend;         /* K2K messages written, stamped and published by the next rk_dev_flush */
  uint32_t ksys;          /* one of them is for a node with RK_DEV_K2K_SYS: the flush fences at system scope */
  uint32_t kin_sys;       /* this lane's own K2K inbox is not in this device's memory (RK_DEV_K2K_SYS), or lanes of another device write it (RK_DEV_K2K_XWRITERS) */
  uint32_t retry;         /* the batch stopped at a message that runs again later (rk_lane_retry) */
  uint64_t kin_released;  /* the K2K head last stored */
  rk_envelope *kp_env[RK_DEV_K2K_PENDING];        /* pending K2K messages: the slot */
  volatile uint64_t *kp_seq[RK_DEV_K2K_PENDING];  /* its sequence word */
  uint64_t kp_pos[RK_DEV_K2K_PENDING];            /* its position */
  /* The transport inbox (a kernel of a graph with a transport, remote.h; x == 0 otherwise): the
   * MPI bridge's deliveries, an MPSC ring in host-mapped memory that only host threads claim in
   * (docs/mpi.md, "On a device"). Consumed as a second K2K inbox: for a batch of its own its
   * fields trade places with the kin_* ones (rk_dev_x_swap, x_cur), so the K2K code takes, copies,
   * counts and gives it back unchanged; between batches the kin_* fields are the K2K inbox's.
   * The lane never closes it (a host CAS is not atomic with a device one): terminating, nothing
   * owed and the K2K inbox closed, it asks the host to (x_ask) and drains it to the close. */
  rk_ring *x;
  uint8_t *x_slots;
  volatile uint64_t *x_seq;
  volatile uint64_t *x_ask; /* host-mapped word the lane sets to ask the host to close x */
  uint64_t x_mask, x_head, x_done, x_released, x_final;
  uint32_t x_closed, x_sys, x_cur, x_turn, x_asked;
  uint32_t waits_on;      /* (node + 1) << 16 | lane of the full K2K inbox a send found last */
  uint32_t waits_said;    /* the value last stored in the status line's k2k_waits_on */
  uint64_t c[RK_DEV_C_COUNT];
} rk_dev_lane;

struct rk_ctx {
  const rk_dev_params *p;
  rk_dev_lane *L;
  uint8_t *scratch;
  uint32_t lane;
};

RK_INLINE __device__ void rk_dev_count(rk_dev_lane *L, int which, uint64_t n) {
  L->c[which] += n;
  L->dirty |= 1u << which;
}

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
 * shared memory (reloaded when the host bumps clock_req) rather than reading it from host memory,
 * a PCIe round trip, on every stamp. Never clock64(): it is per-SM cycles. */
RK_INLINE __device__ uint64_t rk_dev_physical_us(const rk_dev_lane *L) {
  return (rk_dev_globaltimer() + L->clock_off) / 1000u;
}

/* One compare-and-swap on the kernel clock: merge m (receive rule: max with the clock) and take n
 * consecutive stamps (send rule), returning the first; n == 0 only merges. Relaxed at device
 * scope: the clock word orders no other data, and a CAS on one word sees its latest value
 * (coherence), so stamps stay unique and increasing across lanes. */
RK_INLINE __device__ rk_hlc rk_dev_clock_advance(const rk_dev_params *p, const rk_dev_lane *L, rk_hlc m, uint32_t n) {
  uint64_t pt = rk_dev_physical_us(L), old = rk_load_relaxed_dev_u64(p->clock), first;
  do {
    first = rk_hlc_send(rk_hlc__max(old, m), pt);
  } while (!rk_cas_relaxed_dev_u64(p->clock, &old, first + (n ? n - 1 : 0)));
  return first;
}

/* Thread 0: store the heartbeat when it is due (a posted store: no round trip). */
RK_INLINE __device__ void rk_dev_beat(rk_dev_lane *L) {
  uint64_t now = rk_dev_globaltimer();
  if (now - L->beat_ns >= RK_DEV_HEARTBEAT_NS) {
    L->beat_ns = now;
    rk_dev_st(&L->status->heartbeat, ++L->heartbeat);
  }
}

/* Thread 0: store the counters that changed (relaxed: statistics, they publish nothing). Written
 * out counter by counter: an array of their addresses would live in local memory. */
RK_INLINE __device__ void rk_dev_store_counters(rk_dev_lane *L) {
  rk_lane_status *st = L->status;
  if (L->dirty & (1u << RK_DEV_C_MSGS_IN)) rk_dev_st(&st->msgs_in, L->c[RK_DEV_C_MSGS_IN]);
  if (L->dirty & (1u << RK_DEV_C_MSGS_OUT)) rk_dev_st(&st->msgs_out, L->c[RK_DEV_C_MSGS_OUT]);
  if (L->dirty & (1u << RK_DEV_C_INVALID)) rk_dev_st(&st->invalid, L->c[RK_DEV_C_INVALID]);
  if (L->dirty & (1u << RK_DEV_C_CLOCK_REJECTED)) rk_dev_st(&st->clock_rejected, L->c[RK_DEV_C_CLOCK_REJECTED]);
  if (L->dirty & (1u << RK_DEV_C_HANDLER_ERRORS)) rk_dev_st(&st->handler_errors, L->c[RK_DEV_C_HANDLER_ERRORS]);
  if (L->dirty & (1u << RK_DEV_C_STALLS)) rk_dev_st(&st->outbox_stalls, L->c[RK_DEV_C_STALLS]);
  if (L->dirty & (1u << RK_DEV_C_K2K_IN)) rk_dev_st(&st->k2k_in, L->c[RK_DEV_C_K2K_IN]);
  if (L->dirty & (1u << RK_DEV_C_K2K_OUT)) rk_dev_st(&st->k2k_out, L->c[RK_DEV_C_K2K_OUT]);
  if (L->dirty & (1u << RK_DEV_C_K2K_REFUSED)) rk_dev_st(&st->k2k_refused, L->c[RK_DEV_C_K2K_REFUSED]);
  if (L->dirty & (1u << RK_DEV_C_K2K_INVALID)) rk_dev_st(&st->k2k_invalid, L->c[RK_DEV_C_K2K_INVALID]);
  if (L->dirty & (1u << RK_DEV_C_K2K_OWED)) rk_dev_st(&st->k2k_owed, L->c[RK_DEV_C_K2K_OWED]);
  L->dirty = 0;
}

/* Thread 0: the system fence, and what it acquires: positions seen published by relaxed loads
 * before it become available. */
RK_INLINE __device__ void rk_dev_fence_lane(rk_dev_lane *L) {
  rk_dev_fence();
  L->avail += L->pend;
  L->pend = 0;
  if (L->head_seen) { /* the host's outbox head, observed before: acquired now (a refresh since may be newer) */
    if ((int64_t)(L->out_head_seen - L->out_head) > 0) L->out_head = L->out_head_seen;
    L->head_seen = 0;
  }
}

/* ---------------------------------------- control (thread 0) --------------------------------- */

/* Apply what the control line said (ctl_seq, ctl_sig, read relaxed by a poll), after a fence that
 * acquires it: a new command (its words read now, one round) or clock request is applied and
 * acknowledged; the abort bit ends the lane. The host writes cmd, drain_to and clock_offset_ns
 * before its release of cmd_seq / signals. */
/* Is clock request req newer than the one the lane applied? (A lane may apply a request ahead of
 * the control line it polled, rk_dev_clock_reload: an older one seen later is not applied again.) */
RK_INLINE __device__ int rk_dev_clock_newer(uint32_t req, uint32_t seen) { return (int32_t)(req - seen) > 0; }

/* Thread 0: apply clock request req with the offset and bound read after it; lane 0 answers: its
 * clock now, then the ack that publishes it. */
RK_INLINE __device__ void rk_dev_clock_apply(rk_dev_lane *L, uint32_t req, uint64_t off, uint64_t bound) {
  L->clock_seen = req;
  L->clock_off = off;
  L->clock_bound = bound;
  if (blockIdx.x == 0) {
    rk_dev_st(&L->status->clock_sample_ns, rk_dev_globaltimer());
    rk_dev_st_rel32(&L->status->clock_ack, req); /* pairs with rk__clock_sync's acquire */
  }
}

RK_INLINE __device__ void rk_dev_control(const rk_dev_params *p, rk_dev_lane *L, int fenced) {
  rk_control_host *h = &p->ctl->host;
  uint32_t seq = L->ctl_seq, req = rk_signals_clock_req(L->ctl_sig), cmd = 0;
  uint64_t drain = 0, off = 0, bound = 0;
  int clock = rk_dev_clock_newer(req, L->clock_seen);
  L->ctl_seen = 0;
  if (L->ctl_sig & RK_SIGNAL_ABORT) L->exit = 1;
  if (seq == L->ack && !clock) return;
  if (!fenced) rk_dev_fence_lane(L); /* pairs with the host's release of cmd_seq / signals */
  /* cmd with acquire, on its own (a round more per command): pairs with the host's release of cmd
   * (kernel.c command), so drain_to, written before it, is read after it; the fence above acquires
   * the observed cmd_seq's command, but cmd may already be a later one's */
  if (seq != L->ack) cmd = rk_dev_ld32_acq(&h->cmd);
  RK_DEV_ROUND_BEGIN();
  if (seq != L->ack) drain = rk_dev_ld(&rk_control_lane_cmd(p->ctl, blockIdx.x)->drain_to);
  if (clock) {
    off = rk_dev_ld(&h->clock_offset_ns);
    bound = rk_dev_ld(&h->clock_bound_us); /* written with the offset (kernel.c clock_accept) */
  }
  RK_DEV_ROUND_END();
  if (seq != L->ack) {
    uint32_t next = rk_lane_after_command(L->state, cmd); /* the rule both loops share */
    if (next == RK_STATE_ACTIVE && L->state != RK_STATE_ACTIVE)
      L->last_work_ns = rk_dev_globaltimer(); /* freshly active: poll fast, messages are likely */
    if (cmd == RK_CMD_TERMINATE) L->drain_to = drain;
    L->state = next;
    rk_dev_st32(&L->status->state, L->state);
    L->ack = seq;
    rk_dev_st_rel32(&L->status->ack_seq, seq); /* pairs with the host's acquire in command() */
  }
  if (clock) rk_dev_clock_apply(L, req, off, bound);
}

/* Thread 0, about to refuse a host stamp as too far ahead of the lane's clock: a clock request it
 * has not applied yet is applied first (the host exchanges before it sends a message stamped
 * after a step of its clock, rk__clock_guard, and the lane reads the control line only every few
 * polls). Returns 1 when a newer offset was loaded (the caller checks the stamp again). The
 * acquire pairs with the host's release RMW of signals, after the offset and bound it wrote. Only
 * on a refusal: one round more there. */
RK_INLINE __device__ int rk_dev_clock_reload(const rk_dev_params *p, rk_dev_lane *L) {
  rk_control_host *h = &p->ctl->host;
  uint32_t req = rk_signals_clock_req(rk_dev_ld_acq(&h->signals));
  uint64_t off, bound;
  if (!rk_dev_clock_newer(req, L->clock_seen)) return 0;
  RK_DEV_ROUND_BEGIN();
  off = rk_dev_ld(&h->clock_offset_ns);
  bound = rk_dev_ld(&h->clock_bound_us);
  RK_DEV_ROUND_END();
  rk_dev_clock_apply(L, req, off, bound);
  return 1;
}

/* ---------------------------------------- taking messages (thread 0) ------------------------- */

RK_INLINE __device__ int rk_dev_consuming(const rk_dev_lane *L) {
  return L->state == RK_STATE_ACTIVE || L->state == RK_STATE_TERMINATING;
}

/* How many sequence words to look at from position `from`: a batch's worth beyond what is known,
 * within the ring (a position a lap ahead would alias an older slot) and, when terminating,
 * below the drain target. */
RK_INLINE __device__ uint32_t rk_dev_look(const rk_dev_params *p, const rk_dev_lane *L, uint64_t from) {
  uint32_t known = L->avail + L->pend, max = p->batch < RK_DEV_MAX_BATCH ? p->batch : RK_DEV_MAX_BATCH;
  if ((uint64_t)max > L->in_mask + 1) max = (uint32_t)(L->in_mask + 1);
  if (known >= max) return 0;
  max -= known;
  if (L->state == RK_STATE_TERMINATING) {
    if ((int64_t)(L->drain_to - from) <= 0) return 0;
    if (L->drain_to - from < max) max = (uint32_t)(L->drain_to - from);
  }
  return max;
}

/* How many of the positions from + 1, from + 2, ... are published in a row, given a bit per
 * position (bit i: from + i). A value, not an array: the loaded words stay in registers. */
RK_INLINE __device__ uint32_t rk_dev_run(uint32_t bits) {
  uint32_t n = 0;
  while (bits & (2u << n)) n++;
  return n;
}

/* The sequence word of position pos of a ring whose slot 0's word is seq0 (the lane's cached
 * geometry; each slot's first 8 bytes, ring.h) and the most payload a slot holds. */
RK_INLINE __device__ volatile uint64_t *rk_dev_seq(const rk_dev_params *p, const volatile uint64_t *seq0, uint64_t mask,
                                                   uint64_t pos) {
  return rk_ring__seq_at(RK_CAST(volatile uint64_t *, seq0), p->slot_size, mask, pos);
}
/* The most message bytes (envelope and payload) a slot holds, n clamped to it, and the copy's
 * first-round prefix before any message was seen (RK_DEV_COPY_PREFIX, at most a message). */
RK_INLINE __device__ uint32_t rk_dev_msg_max(const rk_dev_params *p) { return RK_RING_MSG_MAX(p->slot_size); }
RK_INLINE __device__ uint32_t rk_dev_msg_clamp(const rk_dev_params *p, uint64_t n) {
  return n > rk_dev_msg_max(p) ? rk_dev_msg_max(p) : (uint32_t)n;
}
RK_INLINE __device__ uint32_t rk_dev_prefix0(const rk_dev_params *p) { return rk_dev_msg_clamp(p, RK_DEV_COPY_PREFIX); }
RK_INLINE __device__ uint32_t rk_dev_payload_max(const rk_dev_params *p) {
  return rk_dev_msg_max(p) - RK_ENVELOPE_SIZE;
}
/* Bytes of an outbox message written when it is `end` bytes long: up to the end of the slot's line
 * that holds its last byte (the message starts RK_RING_MSG_OFFSET bytes into its 64-byte aligned
 * slot), so the host reads whole lines, none of them half stale; never into the next slot. A
 * multiple of 16 (the copy's stores). */
RK_INLINE __device__ uint32_t rk_dev_out_bytes(const rk_dev_params *p, uint32_t end) {
  return rk_dev_msg_clamp(p, ((end + RK_RING_MSG_OFFSET + 63u) & ~63u) - RK_RING_MSG_OFFSET);
}

/* Thread 0, nothing known published (or not consuming: the control line alone): one poll, one round. The control line (when due), the next
 * batch's sequence words after the head's (relaxed), and last the head position's word: with an
 * acquire load, so a message found is taken without a fence, the loads before it still in flight
 * alongside it. A lane in the deep idle back-off reads that word relaxed too and, when it finds a
 * message, fences (the fence-based acquire; once per wake-up). */
RK_INLINE __device__ void rk_dev_poll(const rk_dev_params *p, rk_dev_lane *L, uint64_t now) {
  rk_control_host *h = &p->ctl->host;
  uint64_t w[RK_DEV_MAX_BATCH], w0 = 0, sig = 0, head_seen = 0;
  uint32_t bits = 0, seq = 0;
  int consuming = rk_dev_consuming(L);
  int deep = consuming && now - L->last_work_ns > RK_DEV_DEEP_IDLE_NS;
  uint32_t look = consuming && !L->exit && L->avail == 0 ? rk_dev_look(p, L, L->in_head) : 0, i, more;
  const volatile uint64_t *s = L->in_seq;
  int ctl = !consuming || (deep && blockIdx.x == 0) || (L->polls++ % RK_DEV_CONTROL_EVERY) == 0;
  /* the outbox head, when the cached view is low: acquired by the next fence, used after it */
  int head = look && L->out_cap - (L->out_tail - L->out_head) < 2u * RK_DEV_MAX_BATCH;
  /* Every load into a register first, the shared fields after the round: a store of a loaded value
   * to shared memory inside the round would wait for that load (the asm's memory clobber keeps
   * the store before the next load), serialising the round (seen in the SASS). */
  RK_DEV_ROUND_BEGIN();
  if (ctl) {
    seq = rk_dev_ld32_obs(&h->cmd_seq); /* pairs with the host's release (fence below) */
    sig = rk_dev_ld_obs(&h->signals);
  }
  if (head) head_seen = rk_dev_ld_obs(&L->out->head); /* pairs with the drainer's release (a fence after) */
#pragma unroll
  for (i = 1; i < RK_DEV_MAX_BATCH; i++)
    if (i < look) w[i] = rk_dev_ld_obs(rk_dev_seq(p, s, L->in_mask, L->in_head + i));
  /* pairs with the host producers' store-release of each sequence word (rk_ring_mpsc_commit_n) */
  if (look) {
    const volatile uint64_t *s0 = rk_dev_seq(p, s, L->in_mask, L->in_head);
    w0 = deep ? rk_dev_ld_obs(s0) : rk_dev_ld_acq(s0);
  }
  RK_DEV_ROUND_END();
  if (ctl) {
    L->ctl_seq = seq;
    L->ctl_sig = sig;
    L->ctl_seen = 1;
  }
  if (head) {
    L->out_head_seen = head_seen;
    L->head_seen = 1;
  }
#pragma unroll
  for (i = 1; i < RK_DEV_MAX_BATCH; i++) /* (signed difference: a lap behind reads as "not yet") */
    if (i < look && rk_ring_seq_published(w[i], L->in_head + i)) bits |= 1u << i;
  if (look && rk_ring_seq_published(w0, L->in_head)) {
    more = rk_dev_run(bits);
    L->open = 1 + more == look;
    if (deep) { /* everything seen, the head's word too, is acquired by this fence */
      L->pend = 1 + more;
      rk_dev_fence_lane(L);
      RK_DEV_NOTE(rk_emu_note_deep_wake());
    } else { /* the head's word by its acquire; the rest by the next fence */
      L->avail = 1;
      L->pend = more;
    }
  }
  if (L->ctl_seen) rk_dev_control(p, L, deep && L->avail);
}

/* Thread 0, during a publication, before its fence: when the last look ended on a published word,
 * look at the words after everything known (relaxed), so the publication's fence acquires them
 * and the next batch needs no poll; with it, the control line when due and the outbox head when
 * the cached view is low. One round, no fence of its own; nothing when there is nothing to look
 * at (messages one at a time: the reply goes out without waiting for a look). */
RK_INLINE __device__ void rk_dev_poll_ahead(const rk_dev_params *p, rk_dev_lane *L) {
  rk_control_host *h = &p->ctl->host;
  uint64_t w[RK_DEV_MAX_BATCH], from = L->in_head + L->avail + L->pend;
  uint32_t look = L->open && rk_dev_consuming(L) && !L->exit ? rk_dev_look(p, L, from) : 0, i;
  uint64_t room = L->out_cap - (L->out_tail + L->staged - L->out_head);
  /* the control line when due, if the lane will not poll next (it knows messages); the outbox head
   * when the cached view is low, alongside a look, or alone when the next batch may not fit */
  int ctl = (L->polls++ % RK_DEV_CONTROL_EVERY) == 0 && (look > 0 || L->avail > 0);
  int head = room < 2u * RK_DEV_MAX_BATCH && (look > 0 || ctl || room < RK_DEV_MAX_BATCH);
  uint64_t sig = 0, head_seen = 0;
  uint32_t seq = 0;
  if (look == 0 && !ctl && !head) return;
  RK_DEV_ROUND_BEGIN(); /* registers first, shared fields after (as in rk_dev_poll) */
  if (ctl) {
    seq = rk_dev_ld32_obs(&h->cmd_seq); /* pairs with the host's release (the flush's fence) */
    sig = rk_dev_ld_obs(&h->signals);
  }
  if (head) head_seen = rk_dev_ld_obs(&L->out->head); /* pairs with the drainer's release (the flush's fence) */
#pragma unroll
  for (i = 0; i < RK_DEV_MAX_BATCH; i++)
    if (i < look) w[i] = rk_dev_ld_obs(rk_dev_seq(p, L->in_seq, L->in_mask, from + i));
  RK_DEV_ROUND_END();
  if (ctl) {
    L->ctl_seq = seq;
    L->ctl_sig = sig;
    L->ctl_seen = 1;
  }
  if (head) {
    L->out_head_seen = head_seen;
    L->head_seen = 1;
  }
  if (look) {
    uint32_t bits = 0, k;
#pragma unroll
    for (i = 0; i < RK_DEV_MAX_BATCH; i++)
      if (i < look && rk_ring_seq_published(w[i], from + i)) bits |= 1u << i;
    k = (bits & 1u) ? 1 + rk_dev_run(bits) : 0;
    L->pend += k;
    L->open = k == look;
  }
}

/* All threads: copy `total` 16-byte chunks from mapped memory to shared memory, RK_DEV_COPY_UNROLL
 * chunks per thread per round: each thread loads its chunks into registers, all in flight, before
 * it stores any (tests/test_sass.py holds the compiler to it). from(c) and to(c) place chunk c;
 * the destination is computed again for the store rather than held across the loads (registers:
 * a lane loop of 1024 threads may use at most 64 per thread). */
template <typename From, typename To>
RK_INLINE __device__ void rk_dev_copy_chunks_in(uint32_t total, From from, To to) {
  uint32_t base;
  for (base = threadIdx.x; base < total; base += blockDim.x * RK_DEV_COPY_UNROLL) {
    uint64_t a[RK_DEV_COPY_UNROLL], b[RK_DEV_COPY_UNROLL];
    int u;
    RK_DEV_ROUND_BEGIN();
#pragma unroll
    for (u = 0; u < RK_DEV_COPY_UNROLL; u++) {
      uint32_t c = base + (uint32_t)u * blockDim.x;
      if (c < total) rk_dev_ld16(from(c), &a[u], &b[u]);
    }
    RK_DEV_ROUND_END();
#pragma unroll
    for (u = 0; u < RK_DEV_COPY_UNROLL; u++) {
      uint32_t c = base + (uint32_t)u * blockDim.x;
      if (c < total) {
        uint64_t *d = to(c);
        d[0] = a[u];
        d[1] = b[u];
      }
    }
  }
}

/* c / d for the copy's chunk numbers, with m = 0xffffffff / d + 1 computed once: floor(c * m / 2^32)
 * is exact while c * d < 2^32 (the error c * (m - 2^32 / d) / 2^32 stays below 1 / d); here c is
 * below a batch's chunks and d a slot's, both under 2^12 (the slots fit 48 KiB of shared memory).
 * A division per chunk costs registers the copy's loads in flight need (test_sass.py). */
RK_INLINE __device__ uint32_t rk_dev_div(uint32_t c, uint32_t m) { return (uint32_t)(((uint64_t)c * m) >> 32); }

RK_INLINE __device__ uint8_t *rk_dev_in_slot(const rk_dev_params *p, const rk_dev_lane *L, uint64_t pos) {
  return L->in_slots + (size_t)((pos & L->in_mask) * p->slot_size);
}

/* Bytes of a slot that hold its message: the envelope and payload_len, rounded up to 16, never past
 * the slot (a bad length is refused by validation, from what was copied). */
RK_INLINE __device__ uint32_t rk_dev_msg_bytes(const rk_dev_params *p, const rk_envelope *e) {
  uint64_t n = (uint64_t)RK_ENVELOPE_SIZE + e->payload_len;
  n = (n + 15u) & ~(uint64_t)15u;
  return rk_dev_msg_clamp(p, n);
}

/* All threads: copy the batch's n slots into shared memory: first each slot's first L->prefix
 * bytes (one round), then, only for slots whose envelope says more, the rest of the message (a
 * second round). The prefix is the last batch's largest message, at least RK_DEV_COPY_PREFIX: a
 * stream of long messages costs one round each after the first, a stream of short ones reads
 * little more than their bytes (the lane cannot know a length before its envelope arrives). */
RK_INLINE __device__ void rk_dev_copy_in(const rk_dev_params *p, rk_dev_lane *L, uint8_t *dst, uint32_t n) {
  const uint32_t pre = L->prefix; /* read before the first barrier; thread 0 updates it after */
  const uint32_t cps = pre / 16u;
  const uint32_t inv = 0xffffffffu / cps + 1u; /* rk_dev_div: one division per copy, not per chunk */
  uint32_t extra[RK_DEV_MAX_BATCH], total = 0, s;
  rk_dev_copy_chunks_in(
      n * cps,
      [&](uint32_t c) {
        uint32_t q = rk_dev_div(c, inv);
        return RK_CAST(const volatile uint64_t *, rk_dev_in_slot(p, L, L->in_head + q) + (c - q * cps) * 16u);
      },
      [&](uint32_t c) {
        uint32_t q = rk_dev_div(c, inv);
        return RK_CAST(uint64_t *, dst + (size_t)q * p->slot_size + (c - q * cps) * 16u);
      });
  __syncthreads();
#pragma unroll
  for (s = 0; s < RK_DEV_MAX_BATCH; s++) {
    uint32_t want = s < n ? rk_dev_msg_bytes(p, RK_CAST(const rk_envelope *, dst + (size_t)s * p->slot_size)) : 0;
    extra[s] = want > pre ? (want - pre) / 16u : 0;
    total += extra[s];
    if (threadIdx.x == 0 && s == 0) L->prefix = rk_dev_prefix0(p);
    if (threadIdx.x == 0 && want > L->prefix) L->prefix = want;
  }
  if (total == 0) return; /* uniform: every thread read the same envelopes */
  /* chunk c of the rest: the slot whose share of the total holds it, and the offset in it (a scan
   * with constant indices: extra[] stays in registers) */
  auto place = [&](uint32_t c, uint32_t *slot) {
    uint32_t before = 0, off = 0, k;
#pragma unroll
    for (k = 0; k < RK_DEV_MAX_BATCH; k++) {
      if (c >= before && c < before + extra[k]) {
        *slot = k;
        off = pre + (c - before) * 16u;
      }
      before += extra[k];
    }
    return off;
  };
  rk_dev_copy_chunks_in(
      total,
      [&](uint32_t c) {
        uint32_t slot = 0, off = place(c, &slot);
        return RK_CAST(const volatile uint64_t *, rk_dev_in_slot(p, L, L->in_head + slot) + off);
      },
      [&](uint32_t c) {
        uint32_t slot = 0, off = place(c, &slot);
        return RK_CAST(uint64_t *, dst + (size_t)slot * p->slot_size + off);
      });
  __syncthreads();
}

/* ---------------------------------------- replies -------------------------------------------- */

/* Thread 0: is there outbox room for `want` more replies than are staged? The host's head is
 * re-read (a round trip) only when the cached view says no. */
RK_INLINE __device__ int rk_dev_room(rk_dev_lane *L, uint32_t want) {
  uint64_t need = L->staged + want;
  if (L->out_cap - (L->out_tail - L->out_head) >= need) return 1;
  L->out_head = rk_dev_ld_acq(&L->out->head); /* pairs with the host drainer's release */
  return L->out_cap - (L->out_tail - L->out_head) >= need;
}

/* Staging slot i: an image of outbox slot out_tail + i, the message RK_RING_MSG_OFFSET bytes in
 * (rk_dev_copy_out writes the slot's lines whole from it). */
RK_INLINE __device__ rk_envelope *rk_dev_staged(const rk_dev_params *p, const rk_dev_lane *L, uint32_t i) {
  return RK_CAST(rk_envelope *, L->stage + (size_t)i * p->slot_size + RK_RING_MSG_OFFSET);
}

/* Thread 0: the next staging slot's envelope. Its first 16 bytes get the outbox word's current
 * value and the reserved zero (rk_dev_copy_out says why the word may be written with it). */
RK_INLINE __device__ rk_envelope *rk_dev_stage_next(const rk_dev_params *p, rk_dev_lane *L) {
  uint64_t *w = RK_CAST(uint64_t *, L->stage + (size_t)L->staged * p->slot_size);
  w[0] = L->out_tail + L->staged - L->out_mask; /* position + 1 - capacity: not yet published */
  w[1] = 0;
  return rk_dev_staged(p, L, L->staged);
}

/* Thread 0: the next staging slot's envelope, header filled (stamped at publication). */
RK_INLINE __device__ rk_envelope *rk_dev_stage_header(const rk_dev_params *p, rk_dev_lane *L, uint32_t type,
                                                      uint32_t len, uint16_t flags) {
  rk_envelope *e = rk_dev_stage_next(p, L);
  rk_envelope_init(e, type, len, (uint16_t)(RK_ENV_F_REPLY | flags));
  e->msg_id = ((uint64_t)(blockIdx.x + 1) << 48) | ++L->next_reply_id;
  e->correlation_id = L->cur.env.msg_id;
  e->src = p->kernel_id;
  e->dst = L->cur.env.src;
  e->node = p->kernel_id;
  e->lane = (uint16_t)blockIdx.x;
  e->priority = L->cur.env.priority;
  return e;
}

/* Thread 0: a staged reply is complete: zero what of its last line lies past the payload (lines go
 * out whole: rk_dev_out_bytes), count it. Staged messages are 16-byte aligned: 8-byte stores, a
 * masked one for a partial word. */
RK_INLINE __device__ void rk_dev_stage_done(const rk_dev_params *p, rk_dev_lane *L, rk_envelope *e) {
  uint32_t end = RK_ENVELOPE_SIZE + e->payload_len, line_end = rk_dev_out_bytes(p, end), i;
  uint64_t *w = RK_CAST(uint64_t *, e);
  if (end & 7u) w[end / 8u] &= (1ull << (8u * (end & 7u))) - 1u; /* little-endian: keep the low bytes */
  for (i = (end + 7u) / 8u; i < line_end / 8u; i++) w[i] = 0;
  L->staged++;
  L->replied = 1;
  rk_dev_count(L, RK_DEV_C_MSGS_OUT, 1);
}

/* Thread 0: copy a reply's payload into its staging slot (16-byte aligned): by 8- or 4-byte words
 * when the source allows, bytes only for a misaligned source or the tail. */
RK_INLINE __device__ void rk_dev_copy_payload(void *dst, const void *src, uint32_t len) {
  uint8_t *d = RK_CAST(uint8_t *, dst);
  const uint8_t *s = RK_CAST(const uint8_t *, src);
  uint32_t i = 0;
  if ((RK_CAST(uintptr_t, s) & 7u) == 0)
    for (; i + 8u <= len; i += 8u) *RK_CAST(uint64_t *, d + i) = *RK_CAST(const uint64_t *, s + i);
  else if ((RK_CAST(uintptr_t, s) & 3u) == 0)
    for (; i + 4u <= len; i += 4u) *RK_CAST(uint32_t *, d + i) = *RK_CAST(const uint32_t *, s + i);
  for (; i < len; i++) d[i] = s[i];
}

/* ---------------------------------------- K2K (thread 0) ------------------------------------- */
/* K2K inboxes live in device memory (CUDA: the device arena; the emulated device: host memory), so
 * every access here is at device scope: an L2 access, never a PCIe round trip, and not counted by
 * the emulated device's model (which counts host-mapped memory). The ring is the one every other
 * queue uses (ringkernel/ring.h): producers claim with its MPSC claim (capacity first, one
 * compare-and-swap at device scope), write the slot in place, then store-release the slot's
 * sequence word at device scope (.gpu: both sides are lanes of one device). */

/* Thread 0 at lane start: an inbox ring's messages, sequence words, mask and head, as relaxed loads
 * in one round (written before the launch, or by the old lanes, whose exit the host confirmed).
 * At system scope, as the ring may be in host-mapped memory (a staged K2K inbox, the transport
 * inbox), where weak loads are not made; the head at the scope it is given back at (sys). */
RK_INLINE __device__ void rk_dev_inbox_open(rk_ring *r, int sys, uint8_t **slots, volatile uint64_t **seq,
                                            uint64_t *mask, uint64_t *head) {
  uint64_t so, qo;
  RK_DEV_ROUND_BEGIN();
  so = rk_dev_ld(&r->slots_offset);
  qo = rk_dev_ld(&r->seq_offset);
  *mask = rk_dev_ld(&r->mask);
  *head = sys ? rk_dev_ld(&r->head) : rk_load_relaxed_dev_u64(&r->head);
  RK_DEV_ROUND_END();
  *slots = RK_CAST(uint8_t *, r) + so + RK_RING_MSG_OFFSET; /* messages: past each slot's word */
  *seq = RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, r) + qo);
}

RK_INLINE __device__ rk_ring *rk_dev_k2k_ring(const rk_dev_k2k_node *d, uint32_t lane) {
  return RK_CAST(rk_ring *, RK_CAST(uintptr_t, d->k2k_base + (uint64_t)lane * d->k2k_stride));
}

/* Thread 0: one K2K message into lane `lane` of node d's K2K inbox, built in place: the header from
 * the current message (forward: the request's origin and id travel on; reply: the answer to a
 * request passed on, for the origin's lane), `code` first when has_code (an error answer), then
 * len bytes of payload. The lane's next publication stamps it (send rule) and publishes it.
 * Returns RK_OK, RK_EAGAIN (full, or no room to keep it pending), RK_ECLOSED (the kernel
 * terminated), RK_EMSGSIZE. */
RK_INLINE __device__ int rk_dev_k2k_push(const rk_dev_params *p, rk_dev_lane *L, const rk_dev_k2k_node *d,
                                         uint32_t lane, uint32_t type, uint16_t flags, int forward, int has_code,
                                         int32_t code, const void *payload, uint32_t len) {
  const rk_envelope *in = &L->cur.env;
  uint32_t total = len + (has_code ? (uint32_t)sizeof(int32_t) : 0u);
  uint64_t correlation = 0;
  uint32_t mask = d->k2k_mask, origin = 0;
  uint16_t eflags = (uint16_t)(RK_ENV_F_K2K | flags), elane = (uint16_t)blockIdx.x;
  volatile uint64_t *seq;
  rk_ring *r;
  rk_envelope *e;
  uint64_t pos;
  int k;
  if (total > RK_RING_MSG_MAX(d->slot_size) - RK_ENVELOPE_SIZE) return RK_EMSGSIZE;
  if (L->kpend == RK_DEV_K2K_PENDING) return RK_EAGAIN;
  if (rk_load_relaxed_dev_u64(&d->closed)) return RK_ECLOSED; /* the host's flag; the drain's close is in claim */
  r = rk_dev_k2k_ring(d, lane);
#if defined(RK_DEVICE_EMULATION)
  /* the emulated device checks the table's copy of the geometry against the ring's own header */
  if (r->mask != mask || r->capacity != (uint64_t)mask + 1u || r->slot_size != d->k2k_slot || r->slots_offset != sizeof(rk_ring) ||
      r->seq_offset != sizeof(rk_ring)) {
    fprintf(stderr, "rk_dev_k2k_push: kernel %u's K2K geometry (mask %u, slot %u) is not its ring's\n",
            d->kernel_id, mask, d->k2k_slot);
    abort();
  }
#endif
  /* Nothing of the ring is read but its claim, cached head and head, with atomic loads: its
   * geometry is the table's (device memory), since the ring may be in host-mapped memory or a
   * peer's, where weak loads are not made (ARCHITECTURE §4). A node whose inboxes other devices'
   * lanes also write: the cached head at system scope. */
  k = rk_ring__mpsc_reserve_cap(r, (uint64_t)mask + 1u, 1, &pos, (int)(d->flags & RK_DEV_K2K_SYS));
  if (k <= 0) return k == 0 ? RK_EAGAIN : k;
  seq = rk_ring__seq_at(RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, r) + sizeof(rk_ring)), d->k2k_slot, mask, pos);
  e = RK_CAST(rk_envelope *, RK_CAST(uintptr_t, seq) + RK_RING_MSG_OFFSET);
  /* The header's fields are decided first and then written, none read back from the slot. */
  if (flags & RK_ENV_F_REPLY) { /* back to the origin's lane, where the caller waits */
    origin = d->kernel_id;
    correlation = in->correlation_id;
    elane = in->lane;
  } else if (forward && !(in->flags & (RK_ENV_F_NO_REPLY | RK_ENV_F_REPLY))) {
    if (in->flags & RK_ENV_F_K2K) { /* passed on again: the origin stays */
      origin = in->origin;
      correlation = in->correlation_id;
      elane = in->lane;
    } else { /* a host request: this kernel is the origin, the answer comes back to this lane */
      origin = p->kernel_id;
      correlation = in->msg_id;
    }
  }
  if (origin == 0) eflags = (uint16_t)(eflags | RK_ENV_F_NO_REPLY);
  rk_envelope_init(e, type, total, eflags);
  e->msg_id = ((uint64_t)(blockIdx.x + 1) << 48) | ++L->next_reply_id;
  e->correlation_id = correlation;
  e->src = p->kernel_id;
  e->dst = d->kernel_id;
  e->node = p->kernel_id;
  e->priority = in->priority;
  e->lane = elane;
  e->origin = origin;
  if (has_code) *RK_CAST(int32_t *, e + 1) = code;
  rk_dev_copy_payload(RK_CAST(uint8_t *, e + 1) + (has_code ? sizeof(int32_t) : 0u), payload, len);
  /* Stamped and published with the lane's next publication (rk_dev_flush): one clock CAS and one
   * fence for the batch's replies and K2K messages together. (The caller made sure kpend has room.) */
  L->kp_env[L->kpend] = e;
  L->kp_seq[L->kpend] = seq;
  L->kp_pos[L->kpend] = pos;
  L->kpend++;
  if (d->flags & RK_DEV_K2K_SYS) L->ksys = 1; /* its inbox is host-mapped or a peer's: system scope */
  return RK_OK;
}

/* Thread 0: the answer to the current K2K message, which continues a host request: over K2K to
 * the origin's lane, which puts it in its outbox. A reply is not answered; an origin not in the
 * graph is RK_EINVAL. Counted as sent, or refused. */
RK_INLINE __device__ int rk_dev_k2k_reply(const rk_dev_params *p, rk_dev_lane *L, uint32_t type, uint16_t flags,
                                          int has_code, int32_t code, const void *payload, uint32_t len) {
  const rk_dev_k2k_node *g = p->graph, *o = 0;
  uint32_t j;
  int rc;
  if (L->cur.env.flags & (RK_ENV_F_NO_REPLY | RK_ENV_F_REPLY)) return RK_OK;
  for (j = 0; g && j < p->graph_n; j++)
    if (g[j].kernel_id == L->cur.env.origin) o = g + j;
  rc = o ? rk_dev_k2k_push(p, L, o, L->cur.env.lane % o->lanes, type, (uint16_t)(RK_ENV_F_REPLY | flags), 0,
                           has_code, code, payload, len)
         : RK_EINVAL;
  if (rc == RK_EAGAIN) L->waits_on = ((uint32_t)(o - g) + 1u) << 16 | (L->cur.env.lane % o->lanes);
  if (rc == RK_OK) {
    L->replied = 1;
    rk_dev_count(L, RK_DEV_C_K2K_OUT, 1);
  } else {
    rk_dev_count(L, RK_DEV_C_K2K_REFUSED, 1);
  }
  return rc;
}

/* Thread 0: rk_send_to / rk_send_to_key (mode 0 / 1), rk_publish (2), rk_forward / rk_forward_key
 * (3 / 4), as the CPU lane's send_lead. */
RK_INLINE __device__ int rk_dev_send_lead(const rk_dev_params *p, rk_dev_lane *L, int mode, uint32_t which,
                                          uint64_t key, uint32_t type, const void *payload, uint32_t len) {
  const rk_dev_k2k_node *g = p->graph, *d;
  uint32_t j, lane;
  int rc, got = 0, fwd;
  if (g == 0 || type == 0 || (payload == 0 && len > 0) || (mode == 2 && which >= 64u) ||
      (mode != 2 && which >= g[p->graph_node].nroutes)) {
    rk_dev_count(L, RK_DEV_C_K2K_REFUSED, 1);
    return RK_EINVAL;
  }
  if (mode == 2) { /* every subscriber's lane 0; a full one counts a drop for that subscriber only */
    for (j = 0; j < p->graph_n; j++) {
      if (!((g[j].topics >> which) & 1u)) continue;
      rc = rk_dev_k2k_push(p, L, g + j, 0, type, 0, 0, 0, 0, payload, len);
      if (rc == RK_OK) {
        got++;
        L->sent++;
        rk_dev_count(L, RK_DEV_C_K2K_OUT, 1);
      } else if (rc == RK_EAGAIN) {
        (void)rk_fetch_add_relaxed_dev_u64(RK_CAST(volatile uint64_t *, &g[j].dropped), 1); /* statistics */
      } else {
        rk_dev_count(L, RK_DEV_C_K2K_REFUSED, 1);
        if (rc == RK_EMSGSIZE) return rc;
      }
    }
    return got;
  }
  d = g + g[p->graph_node].route[which];
  lane = (mode == 1 || mode == 4) ? (uint32_t)(key % d->lanes) : blockIdx.x % d->lanes;
  fwd = mode >= 3 && !(L->cur.env.flags & (RK_ENV_F_NO_REPLY | RK_ENV_F_REPLY));
  rc = rk_dev_k2k_push(p, L, d, lane, type, 0, mode >= 3, 0, 0, payload, len);
  if (rc == RK_EAGAIN) L->waits_on = ((uint32_t)(d - g) + 1u) << 16 | lane; /* for the deadlock check */
  if (rc != RK_OK) {
    rk_dev_count(L, RK_DEV_C_K2K_REFUSED, 1);
    return rc;
  }
  rk_dev_count(L, RK_DEV_C_K2K_OUT, 1);
  L->sent++;
  if (fwd) {
    L->replied = 1; /* the duty to answer went on with the message */
    if (!(L->cur.env.flags & RK_ENV_F_K2K)) rk_dev_count(L, RK_DEV_C_K2K_OWED, 1);
  }
  return RK_OK;
}

/* Thread 0: how many K2K positions from kin_head are published (at most a batch, and when the
 * inbox is closed, below the close). The sequence words are loaded relaxed, all in flight, and the
 * ones found published acquired by one fence at device scope (pairs with the producers'
 * store-release in rk_dev_k2k_push). (Emulated: acquire loads, as rk_dev_poll's observations.) */
#if defined(RK_DEVICE_EMULATION) /* (ThreadSanitizer does not model fences: acquires and releases) */
#define RK_DEV_K2K_OBS(q) rk_load_acquire_dev_u64(q)
#define RK_DEV_K2K_OBS_SYS(q) rk_load_acquire_sys_u64(q)
#define RK_DEV_K2K_PUB(q, v) rk_store_release_dev_u64(q, v)
#define RK_DEV_K2K_PUB_SYS(q, v) rk_store_release_sys_u64(q, v)
#else
#define RK_DEV_K2K_OBS(q) rk_load_relaxed_dev_u64(q)
#define RK_DEV_K2K_OBS_SYS(q) rk_load_relaxed_sys_u64(q)
#define RK_DEV_K2K_PUB(q, v) rk_store_relaxed_dev_u64(q, v)
#define RK_DEV_K2K_PUB_SYS(q, v) rk_store_relaxed_sys_u64(q, v)
#endif
RK_INLINE __device__ uint32_t rk_dev_k2k_take(const rk_dev_params *p, rk_dev_lane *L) {
  uint64_t w[RK_DEV_MAX_BATCH];
  uint32_t max = p->batch < RK_DEV_MAX_BATCH ? p->batch : RK_DEV_MAX_BATCH, bits = 0, i, n;
  if ((uint64_t)max > L->kin_mask + 1) max = (uint32_t)(L->kin_mask + 1);
  if (L->kin_closed) {
    if ((int64_t)(L->kin_final - L->kin_head) <= 0) return 0;
    if (L->kin_final - L->kin_head < max) max = (uint32_t)(L->kin_final - L->kin_head);
  }
#pragma unroll
  for (i = 0; i < RK_DEV_MAX_BATCH; i++)
    if (i < max)
      w[i] = L->kin_sys ? RK_DEV_K2K_OBS_SYS(rk_dev_seq(p, L->kin_seq, L->kin_mask, L->kin_head + i))
                        : RK_DEV_K2K_OBS(rk_dev_seq(p, L->kin_seq, L->kin_mask, L->kin_head + i));
#pragma unroll
  for (i = 0; i < RK_DEV_MAX_BATCH; i++)
    if (i < max && rk_ring_seq_published(w[i], L->kin_head + i)) bits |= 1u << i;
  n = (bits & 1u) ? 1 + rk_dev_run(bits) : 0;
  /* an inbox staged in host memory (its producers on another device): observed and acquired at
   * system scope; one in this device's memory at device scope */
  if (n && L->kin_sys) rk_dev_fence();
  else if (n) rk_fence_acq_rel_dev();
  return n;
}

/* All threads: copy the K2K batch's n messages (envelope and payload, in 8-byte words) into shared
 * memory. Relaxed device-scope loads (L2: never a stale L1 line), after thread 0's acquire and a
 * barrier. */
RK_INLINE __device__ void rk_dev_k2k_copy_in(const rk_dev_params *p, const rk_dev_lane *L, uint8_t *dst, uint32_t n) {
  uint32_t s, c;
  for (s = 0; s < n; s++) {
    const volatile uint64_t *src = RK_CAST(const volatile uint64_t *,
                                           L->kin_slots + (size_t)(((L->kin_head + s) & L->kin_mask) * p->slot_size));
    uint64_t w1 = rk_load_relaxed_dev_u64(src + 1); /* type (low half), payload_len (high half) */
    uint64_t bytes = (uint64_t)RK_ENVELOPE_SIZE + (w1 >> 32);
    uint32_t words;
    bytes = (bytes + 15u) & ~(uint64_t)15u;
    words = rk_dev_msg_clamp(p, bytes) / 8u;
    for (c = threadIdx.x; c < words; c += blockDim.x)
      RK_CAST(uint64_t *, dst + (size_t)s * p->slot_size)[c] = rk_load_relaxed_dev_u64(src + c);
  }
  __syncthreads();
}

/* Thread 0, terminating, the host inbox drained and every request passed on answered: may the lane
 * close its K2K inbox now? Yes, unless the inbox is staged (in mapped host memory, written only by
 * lanes of one other device without peer access: RK_DEV_K2K_SYS in this device's own copy of its
 * entry). Then the close's CAS on claim and the writers' claim CAS come from two devices, and
 * atomics on mapped memory are not atomic between devices (docs/k2k.md): the lane says it is ready
 * (close_ready, once per lane: kin_final holds RK_DEV_K2K_READY until the close) and waits for the
 * host's go (closed == RK_DEV_K2K_CLOSE_GO in this copy), which the host gives once it has set the
 * writers' devices' closed flag and every writer lane has acknowledged a command after it
 * (rk__k2k_staged_close, graph.c): from then on no writer claims, and this lane's CAS is alone.
 * Off the hot path: evaluated only at the close, once the other conditions hold. */
#define RK_DEV_K2K_READY (~0ull)
RK_INLINE __device__ int rk_dev_k2k_may_close(const rk_dev_params *p, rk_dev_lane *L) {
  const rk_dev_k2k_node *me = p->graph + p->graph_node;
  if (!(me->flags & RK_DEV_K2K_SYS)) return 1; /* in device memory: its writers' CAS is atomic with ours */
  /* relaxed: the go is ordered before this lane's CAS by the system fence below */
  if (rk_load_relaxed_dev_u64(&me->closed) == RK_DEV_K2K_CLOSE_GO) {
    rk_dev_fence(); /* acquires the host's go, and with it the writers' last claims (their acks) */
    return 1;
  }
  if (L->kin_final != RK_DEV_K2K_READY) { /* once per lane; a relaxed device-scope add, counted */
    L->kin_final = RK_DEV_K2K_READY;
#if defined(RK_DEVICE_EMULATION)
    (void)rk_fetch_add_relaxed_dev_u64(RK_CAST(volatile uint64_t *, &me->close_ready), 1);
#else
    /* in the global state space: the table is device memory, and through a generic address ptxas
     * adds a shared-memory variant, a CAS loop (ATOMS.CAST) that test_sass's clock-CAS rule flags */
    asm volatile("red.relaxed.gpu.global.add.u64 [%0], %1;" ::"l"(__cvta_generic_to_global(RK_CAST(const void *, RK_CAST(uintptr_t, &me->close_ready)))),
                 "l"(1ull) : "memory");
#endif
  }
  return 0;
}

/* Thread 0, terminating, the host inbox drained and every request passed on answered: close the K2K
 * inbox to senders (the ring's close: a compare-and-swap on claim at device scope; later sends get
 * RK_ECLOSED) and drain it to the close. Upstream kernels were terminated first
 * (rk_graph_terminate), so nothing accepted is lost. */
RK_INLINE __device__ void rk_dev_k2k_close(rk_dev_lane *L) {
  /* Relaxed: the close publishes nothing; the positions below it are acquired one by one from
   * their sequence words as they are taken. (rk_ring_close's acq_rel CAS would be a MEMBAR.GPU.) */
  uint64_t c = rk_load_relaxed_dev_u64(&L->kin->claim);
  while (!(c & RK_RING_CLOSED) && !rk_cas_relaxed_dev_u64(&L->kin->claim, &c, c | RK_RING_CLOSED)) {
  }
  L->kin_final = c & ~RK_RING_CLOSED;
  L->kin_closed = 1;
}

/* Thread 0: the transport inbox and the K2K inbox trade places (shared memory; at a batch's
 * start, and back after its publication, when both inboxes' heads are given back). */
#define RK_DEV_XSWAP(a, b, T) \
  do {                        \
    T t_ = (a);               \
    (a) = (b);                \
    (b) = t_;                 \
  } while (0)
RK_INLINE __device__ void rk_dev_x_swap(rk_dev_lane *L) {
  RK_DEV_XSWAP(L->kin, L->x, rk_ring *);
  RK_DEV_XSWAP(L->kin_slots, L->x_slots, uint8_t *);
  RK_DEV_XSWAP(L->kin_seq, L->x_seq, volatile uint64_t *);
  RK_DEV_XSWAP(L->kin_mask, L->x_mask, uint64_t);
  RK_DEV_XSWAP(L->kin_head, L->x_head, uint64_t);
  RK_DEV_XSWAP(L->kin_done, L->x_done, uint64_t);
  RK_DEV_XSWAP(L->kin_released, L->x_released, uint64_t);
  RK_DEV_XSWAP(L->kin_final, L->x_final, uint64_t);
  RK_DEV_XSWAP(L->kin_closed, L->x_closed, uint32_t);
  RK_DEV_XSWAP(L->kin_sys, L->x_sys, uint32_t);
  L->x_cur ^= 1u;
}

/* Thread 0: the next K2K batch, from the K2K inbox or the transport inbox, the two in turn (a
 * batch from one, then the other looked at first). A batch from the transport inbox leaves it in
 * the kin_* fields (x_cur) until the batch is published. */
RK_INLINE __device__ uint32_t rk_dev_k2k_next(const rk_dev_params *p, rk_dev_lane *L) {
  uint32_t n, i;
  if (L->x == 0) return rk_dev_k2k_take(p, L);
  for (i = 0; i < 2; i++) {
    L->x_turn ^= 1u;
    if (L->x_turn) rk_dev_x_swap(L);
    if ((n = rk_dev_k2k_take(p, L)) != 0) return n;
    if (L->x_turn) rk_dev_x_swap(L);
  }
  return 0;
}

/* Thread 0, once the K2K inbox is closed (terminating, the host inbox drained, nothing owed: no
 * answer is still on its way): ask the host to close the transport inbox (a posted store; the
 * host closes it with its own CAS when a delivery or the terminate's wait sees the word, graph.c
 * rk__k2k_xin_poll), then look for the close on its claim word. Relaxed at system scope: the close
 * publishes nothing; the positions below it are acquired one by one as they are taken. */
RK_INLINE __device__ void rk_dev_x_closing(rk_dev_lane *L) {
  uint64_t c;
  if (!L->x_asked) {
    L->x_asked = 1;
    rk_dev_st(L->x_ask, 1);
  }
  c = rk_load_relaxed_sys_u64(&L->x->claim);
  if (c & RK_RING_CLOSED) {
    L->x_final = c & ~RK_RING_CLOSED;
    L->x_closed = 1;
  }
}

/* Thread 0: stage a reply. The caller made sure there is staging and outbox room for the first
 * reply of a message; a second one finds the outbox full (RK_EAGAIN) or no staging room
 * (rk_reply flushed first). */
RK_INLINE __device__ int rk_dev_reply_put(const rk_dev_params *p, rk_dev_lane *L, uint32_t type, uint16_t flags,
                                          const void *payload, uint32_t len) {
  rk_envelope *e;
  if (L->cur.env.flags & RK_ENV_F_NO_REPLY) return RK_OK;
  if (L->cur.env.flags & RK_ENV_F_K2K) return rk_dev_k2k_reply(p, L, type, flags, 0, 0, payload, len);
  if (len > rk_dev_payload_max(p)) return RK_EMSGSIZE;
  if (L->staged == L->stage_cap || !rk_dev_room(L, 1)) return RK_EAGAIN;
  e = rk_dev_stage_header(p, L, type, len, flags);
  rk_dev_copy_payload(e + 1, payload, len);
  rk_dev_stage_done(p, L, e);
  return RK_OK;
}

/* Thread 0: stage an error reply carrying `code` (the payload an int32, written in place: a local
 * passed by address would live in local memory). */
RK_INLINE __device__ int rk_dev_reply_error(const rk_dev_params *p, rk_dev_lane *L, uint32_t type, int32_t code) {
  rk_envelope *e;
  if (L->cur.env.flags & RK_ENV_F_NO_REPLY) return RK_OK;
  if (L->cur.env.flags & RK_ENV_F_K2K) return rk_dev_k2k_reply(p, L, type, RK_ENV_F_ERROR, 1, code, 0, 0);
  if (L->staged == L->stage_cap || !rk_dev_room(L, 1)) return RK_EAGAIN;
  e = rk_dev_stage_header(p, L, type, (uint32_t)sizeof(int32_t), RK_ENV_F_ERROR);
  *RK_CAST(int32_t *, e + 1) = code;
  rk_dev_stage_done(p, L, e);
  return RK_OK;
}

/* All threads: write the staged replies into their outbox slots as whole 64-byte lines (ARCHITECTURE
 * §8: no partial line crosses PCIe), from the staging slots' images, 16 bytes per thread per store
 * (a warp writes 512 bytes per store instruction). Posted stores: no round. A slot's first 16 bytes
 * are its sequence word and a reserved zero word; the store that covers them writes the word's
 * current value, not a new one (rk_dev_stage_next): position pos's word holds pos + 1 - capacity
 * until its publication (the last lap's, or rk_ring_init's), this lane is the outbox's only
 * producer, and positions from out_tail on are unpublished (the room check keeps them within a lap
 * of it; the flush stores out_tail after the words it published), so the host's load-acquire of
 * the word reads the same value before and after this store. The new value is stored only after
 * the fence (rk_dev_flush), by thread 0, after its own store of the old one if it made it (the
 * same thread's stores to one word stay in order) or after the barrier that ends this copy. */
RK_INLINE __device__ void rk_dev_copy_out(const rk_dev_params *p, rk_dev_lane *L) {
  uint32_t chunks[RK_DEV_MAX_BATCH], total = 0, i, c;
#pragma unroll
  for (i = 0; i < RK_DEV_MAX_BATCH; i++) { /* constant indices: chunks[] stays in registers */
    uint32_t end = i < L->staged ? RK_ENVELOPE_SIZE + rk_dev_staged(p, L, i)->payload_len : 0;
    chunks[i] = i < L->staged ? (RK_RING_MSG_OFFSET + rk_dev_out_bytes(p, end)) / 16u : 0; /* whole lines */
    total += chunks[i];
  }
  for (c = threadIdx.x; c < total; c += blockDim.x) {
    uint32_t r = 0, k = 0, before = 0;
    const uint64_t *src;
#pragma unroll
    for (i = 0; i < RK_DEV_MAX_BATCH; i++) {
      if (c >= before && c < before + chunks[i]) {
        r = i;
        k = c - before;
      }
      before += chunks[i];
    }
    src = RK_CAST(const uint64_t *, L->stage + (size_t)r * p->slot_size + k * 16u);
#if defined(RK_DEVICE_EMULATION)
    /* the emulated device checks the argument above on every reply: the staged word is the
     * outbox word's current value, unpublished for this position, and the reserved word zero */
    if (k == 0) {
      uint64_t cur = rk_load_relaxed_sys_u64(
          RK_CAST(volatile uint64_t *, L->out_slots + (size_t)(((L->out_tail + r) & L->out_mask) * p->slot_size)));
      if (src[0] != cur || rk_ring_seq_published(src[0], L->out_tail + r) || src[1] != 0) {
        fprintf(stderr, "rk_dev_copy_out: staged word %llu/%llu, outbox word %llu, position %llu\n",
                (unsigned long long)src[0], (unsigned long long)src[1], (unsigned long long)cur,
                (unsigned long long)(L->out_tail + r));
        abort();
      }
    }
#endif
    rk_dev_st16(RK_CAST(volatile uint64_t *, L->out_slots + (size_t)(((L->out_tail + r) & L->out_mask) * p->slot_size) +
                                              k * 16u),
                src[0], src[1]);
  }
  RK_DEV_NOTE(threadIdx.x == 0 ? rk_emu_note_replies(L->staged, total / 4u) : (void)0);
}

/* All threads (collective): publish. Thread 0 stamps the staged replies with one clock CAS (which
 * also merges the stamps admitted since the last one) and, when the lane looks ahead, reads the
 * next sequence words (rk_dev_poll_ahead); the block writes the replies out as whole lines; then
 * thread 0 issues the batch's one fence.acq_rel.sys — it releases the reply lines and the copied
 * inbox slots, and acquires what the look-ahead saw — and stores the inbox head, the replies'
 * sequence words (position + 1: the host drainer's load-acquire in rk_ring_peek_n pairs with this
 * fence), its outbox tail (for observers) and the counters that changed. Nothing to publish and
 * nothing to acquire: no fence. */
RK_INLINE __device__ void rk_dev_flush(const rk_dev_params *p, rk_dev_lane *L) {
  __syncthreads(); /* staged replies complete */
  if (threadIdx.x == 0) {
    uint32_t i;
    if (L->staged || L->merge || L->kpend) { /* replies first, then the K2K messages, in order */
      rk_hlc first = rk_dev_clock_advance(p, L, L->merge, L->staged + L->kpend);
      L->merge = 0;
      for (i = 0; i < L->staged; i++) rk_dev_staged(p, L, i)->hlc = first + i;
      for (i = 0; i < L->kpend; i++) L->kp_env[i]->hlc = first + L->staged + i;
    }
    /* anything to release (replies, K2K messages, copied inbox slots) or to acquire (positions
     * seen published) */
    L->publish = L->staged != 0 || L->in_released != L->in_done || L->pend != 0 || L->kpend != 0 ||
                 L->kin_released != L->kin_done;
    if (L->publish) rk_dev_poll_ahead(p, L);
  }
  __syncthreads();
  rk_dev_copy_out(p, L);
  __syncthreads(); /* every thread's reply lines are written (CTA order, made cumulative by the fence) */
  if (threadIdx.x == 0 && L->publish) {
    uint32_t i;
    /* The counters before the fence: posted stores it orders before the replies' sequence words,
     * so a caller that has its reply sees the counts that include it (stats right after rk_call). */
    if (L->dirty) rk_dev_store_counters(L);
    /* Nothing of host memory to publish or acquire (a K2K-only publication: K2K messages sent,
     * K2K slots given back): a device-scope fence orders the device-memory writes before their
     * publication, and the hop waits for no posted PCIe store (a .sys fence would). */
    /* A K2K message for a node whose inboxes are not in this device's memory (RK_DEV_K2K_SYS:
     * host-mapped, or a peer device's) is seen by lanes of another device: the system-scope
     * fence, as for a host-bound publication (docs/memory-ordering.md). So is a K2K head given
     * back in an inbox of this lane's that is not in its device's memory. */
    if (L->staged || L->in_released != L->in_done || L->pend || L->head_seen || L->ctl_seen || L->ksys ||
        (L->kin_sys && L->kin_released != L->kin_done))
      rk_dev_fence_lane(L);
    else
      rk_fence_acq_rel_dev();
    if (L->in_released != L->in_done) {
      L->in_released = L->in_done;
      /* after the fence: the slots were read (by the block: the barrier before); pairs with the
       * producers' load-acquire of head */
      rk_dev_st_pub(&L->in->head, L->in_done);
    }
    for (i = 0; i < L->staged; i++)
      rk_dev_st_pub(rk_dev_seq(p, L->out_seq, L->out_mask, L->out_tail + i), L->out_tail + i + 1);
    /* K2K (device memory), after the same fence: the messages' sequence words (pair with the
     * consumer's acquire, rk_dev_k2k_take) and the K2K inbox head (pairs with the producers'
     * acquire of head in rk_ring_mpsc_reserve_n: the slots were copied) */
    /* (a batch with a message for a node read by another device: every sequence word of it at
     * system scope, after the system fence above) */
    for (i = 0; i < L->kpend; i++)
      if (L->ksys)
        RK_DEV_K2K_PUB_SYS(L->kp_seq[i], L->kp_pos[i] + 1);
      else
        RK_DEV_K2K_PUB(L->kp_seq[i], L->kp_pos[i] + 1);
    L->kpend = 0;
    L->ksys = 0;
    if (L->kin_released != L->kin_done) {
      L->kin_released = L->kin_done;
      if (L->kin_sys) /* producers on another device read it (staged, or peers: XWRITERS) */
        RK_DEV_K2K_PUB_SYS(&L->kin->head, L->kin_done);
      else
        RK_DEV_K2K_PUB(&L->kin->head, L->kin_done);
    }
    L->out_tail += L->staged;
    L->staged = 0;
    rk_dev_st(&L->out->tail, L->out_tail); /* the producer's own index, for observers only */
    L->last_work_ns = rk_dev_globaltimer(); /* idle time counts from the end of the work */
    rk_dev_beat(L);
    RK_DEV_NOTE(rk_emu_note_flush());
    if (L->ctl_seen) rk_dev_control(p, L, 1);
  }
  if (threadIdx.x == 0 && L->dirty) rk_dev_store_counters(L);
  __syncthreads();
}

/* ---------------------------------------- the dialect (device side) -------------------------- */

static __device__ void *rk_state(rk_ctx *ctx) { return ctx->p->state; }
static __device__ void *rk_scratch(rk_ctx *ctx, size_t *size) {
  if (size) *size = ctx->p->scratch_size;
  return ctx->scratch;
}
/* A local event after the current message's receipt: the merge folded into the tick's CAS. */
static __device__ rk_hlc rk_now(rk_ctx *ctx) { return rk_dev_clock_advance(ctx->p, ctx->L, ctx->L->merge, 1); }
static __device__ uint32_t rk_thread(rk_ctx *ctx) { (void)ctx; return threadIdx.x; }
static __device__ uint32_t rk_threads(rk_ctx *ctx) { (void)ctx; return blockDim.x; }
static __device__ void rk_sync(rk_ctx *ctx) { (void)ctx; __syncthreads(); }
static __device__ uint32_t rk_lane(rk_ctx *ctx) { return ctx->lane; }
static __device__ uint32_t rk_lanes(rk_ctx *ctx) { return ctx->p->lanes; }
static __device__ uint32_t rk_self(rk_ctx *ctx) { return ctx->p->kernel_id; }

/* K2K (docs/k2k.md): collective like rk_reply; thread 0 sends (rk_dev_send_lead). A handler never
 * waits on another kernel: a full destination is RK_EAGAIN at once. */
RK_INLINE __device__ int rk_dev_send_collective(rk_ctx *ctx, int mode, uint32_t which, uint64_t key, uint32_t type,
                                                const void *payload, uint32_t len) {
  rk_dev_lane *L = ctx->L;
  /* room for what this call may write: one message, or one per subscriber (at most
   * RK_DEV_K2K_PENDING); kpend was last written by thread 0 before a barrier: uniform */
  int full = L->kpend + (mode == 2 ? RK_DEV_K2K_PENDING : 1u) > RK_DEV_K2K_PENDING && L->kpend > 0;
  /* A flush publishes the staged replies and would take an open host reply reservation's slot
   * with them (the handler still writes into it): under a reservation such a send is refused. */
  int refuse = full && L->reserved >= 0;
  __syncthreads();
  if (refuse) return RK_EAGAIN;
  if (full) rk_dev_flush(ctx->p, L);
  if (threadIdx.x == 0) L->coll_rc = rk_dev_send_lead(ctx->p, L, mode, which, key, type, payload, len);
  __syncthreads();
  return L->coll_rc;
}
static __device__ int rk_send_to(rk_ctx *ctx, uint32_t route, uint32_t type, const void *payload, uint32_t len) {
  return rk_dev_send_collective(ctx, 0, route, 0, type, payload, len);
}
static __device__ int rk_send_to_key(rk_ctx *ctx, uint32_t route, uint64_t key, uint32_t type, const void *payload,
                                     uint32_t len) {
  return rk_dev_send_collective(ctx, 1, route, key, type, payload, len);
}
static __device__ int rk_forward(rk_ctx *ctx, uint32_t route, uint32_t type, const void *payload, uint32_t len) {
  return rk_dev_send_collective(ctx, 3, route, 0, type, payload, len);
}
static __device__ int rk_forward_key(rk_ctx *ctx, uint32_t route, uint64_t key, uint32_t type, const void *payload,
                                     uint32_t len) {
  return rk_dev_send_collective(ctx, 4, route, key, type, payload, len);
}
static __device__ int rk_publish(rk_ctx *ctx, uint32_t topic, uint32_t type, const void *payload, uint32_t len) {
  return rk_dev_send_collective(ctx, 2, topic, 0, type, payload, len);
}

/* Buffers (ringkernel/buffer.h): the reference's entry in the buffer table, which is device memory
 * on a GPU (three relaxed device-scope loads, in flight together: L2, never PCIe), then the checks
 * the CPU backend makes (src/host/buffer.c, rk_buffer_get). Any thread, not a collective. */
static __device__ int rk_buffer_get(rk_ctx *ctx, const rk_buf_ref *ref, uint32_t want, void **ptr) {
  const rk_dev_params *p = ctx->p;
  const rk_dev_buffer *e;
  uint64_t addr, size, gen;
  if (ptr == 0) return RK_EINVAL;
  *ptr = 0;
  if (ref == 0) return RK_EINVAL;
  if (ref->buffer >= p->nbuffers || p->buffers == 0) return RK_ENOENT;
  e = p->buffers + ref->buffer;
  gen = rk_load_relaxed_dev_u64(&e->gen);
  addr = rk_load_relaxed_dev_u64(&e->addr);
  size = rk_load_relaxed_dev_u64(&e->size);
  if (gen != ((RK_CAST(uint64_t, ref->gen) << 1) | 1u)) return RK_ENOENT;
  if (ref->msg != ctx->L->cur.env.msg_id) return RK_EINVAL; /* declared by another message */
  if (want == 0 || (want & ~ref->access) != 0 || (ref->access & ~RK_BUF_RW) != 0) return RK_EINVAL;
  if (ref->offset > size || ref->length > size - ref->offset) return RK_EMSGSIZE;
  *ptr = RK_CAST(void *, RK_CAST(uintptr_t, addr + ref->offset));
  return RK_OK;
}
static __device__ void *rk_buffer_ptr(rk_ctx *ctx, const rk_buf_ref *ref, uint32_t want) {
  void *q = 0;
  (void)rk_buffer_get(ctx, ref, want, &q);
  return q;
}

/* Must a reply collective publish first? The staging is full (a second reply of a host message),
 * or, for a K2K message (answered over K2K), no pending K2K slot is left. Read before the
 * collective's barrier: thread 0 last wrote staged and kpend before the previous one (uniform). */
RK_INLINE __device__ int rk_dev_reply_full(const rk_dev_lane *L) {
  if (L->cur.env.flags & RK_ENV_F_NO_REPLY) return 0;
  if (L->cur.env.flags & RK_ENV_F_K2K) return L->kpend == RK_DEV_K2K_PENDING;
  return L->staged == L->stage_cap;
}

/* Collective. The staging area is full only for a second reply of a message (room for the first
 * is made before the handler runs); then the block publishes first. `full` is read before the
 * barrier: thread 0 last wrote `staged` before the previous barrier, so every thread sees the same
 * value and takes the same branch. */
static __device__ int rk_reply(rk_ctx *ctx, uint32_t type, const void *payload, uint32_t len) {
  rk_dev_lane *L = ctx->L;
  int full = rk_dev_reply_full(L);
  __syncthreads();
  if (full) rk_dev_flush(ctx->p, L);
  if (threadIdx.x == 0)
    L->coll_rc = (payload == 0 && len > 0) ? RK_EINVAL
                 : L->reserved >= 0        ? RK_ESTATE /* the next slot is the reservation's */
                                           : rk_dev_reply_put(ctx->p, L, type, 0, payload, len);
  __syncthreads();
  return L->coll_rc;
}

/* Collective, as rk_reply: an error reply of the request's type, the code then the data. */
static __device__ int rk_reply_error(rk_ctx *ctx, int32_t code, const void *payload, uint32_t len) {
  rk_dev_lane *L = ctx->L;
  int full = rk_dev_reply_full(L); /* as in rk_reply */
  __syncthreads();
  if (full) rk_dev_flush(ctx->p, L);
  if (threadIdx.x == 0) {
    if (code >= 0 || (payload == 0 && len > 0)) {
      L->coll_rc = RK_EINVAL;
    } else if (L->reserved >= 0) {
      L->coll_rc = RK_ESTATE;
    } else if (L->cur.env.flags & RK_ENV_F_NO_REPLY) {
      L->coll_rc = RK_OK;
    } else if (len > RK_REPLY_ERROR_MAX || len > rk_dev_payload_max(ctx->p) - (uint32_t)sizeof(int32_t)) {
      L->coll_rc = RK_EMSGSIZE;
    } else if (L->cur.env.flags & RK_ENV_F_K2K) {
      L->coll_rc = rk_dev_k2k_reply(ctx->p, L, L->cur.env.type, RK_ENV_F_ERROR, 1, code, payload, len);
    } else if (L->staged == L->stage_cap || !rk_dev_room(L, 1)) {
      L->coll_rc = RK_EAGAIN;
    } else {
      rk_envelope *e = rk_dev_stage_header(ctx->p, L, L->cur.env.type, len + (uint32_t)sizeof(int32_t), RK_ENV_F_ERROR);
      *RK_CAST(int32_t *, e + 1) = code;
      rk_dev_copy_payload(RK_CAST(uint8_t *, e + 1) + sizeof(int32_t), payload, len);
      rk_dev_stage_done(ctx->p, L, e);
      L->coll_rc = RK_OK;
    }
  }
  __syncthreads();
  return L->coll_rc;
}

static __device__ void *rk_reply_reserve(rk_ctx *ctx, uint32_t type, uint32_t len) {
  rk_dev_lane *L = ctx->L;
  int full = L->staged == L->stage_cap && !(L->cur.env.flags & RK_ENV_F_NO_REPLY); /* as in rk_reply */
  __syncthreads();
  if (full) rk_dev_flush(ctx->p, L);
  if (threadIdx.x == 0) {
    L->coll_ptr = 0;
    /* (NULL for a K2K message, whose answer goes over K2K: answered with rk_reply, as on the CPU) */
    if (!(L->cur.env.flags & (RK_ENV_F_NO_REPLY | RK_ENV_F_K2K)) && len <= rk_dev_payload_max(ctx->p) &&
        L->reserved < 0 && L->staged < L->stage_cap && rk_dev_room(L, 1)) {
      rk_envelope *e = rk_dev_stage_header(ctx->p, L, type, len, 0);
      L->reserved = (int32_t)L->staged;
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
    if (L->reserved >= 0) {
      rk_dev_stage_done(ctx->p, L, rk_dev_staged(ctx->p, L, (uint32_t)L->reserved));
      L->reserved = -1;
      L->coll_rc = RK_OK;
    } else {
      L->coll_rc = (L->cur.env.flags & RK_ENV_F_NO_REPLY) ? RK_OK : RK_ESTATE;
    }
  }
  __syncthreads();
  return L->coll_rc;
}

/* ---------------------------------------- the loop ------------------------------------------- */

/* Thread 0: a K2K answer to a request this lane passed on (rk_forward): into the outbox as this
 * kernel's reply to the host's request (room was made: rk_dev_prepare). Its stamp, merged already,
 * is exceeded by the one it gets at the publication. */
RK_INLINE __device__ void rk_dev_k2k_answer(const rk_dev_params *p, rk_dev_lane *L, const rk_envelope *e) {
  rk_envelope *o = rk_dev_stage_next(p, L);
  if ((int64_t)L->c[RK_DEV_C_K2K_OWED] > 0) rk_dev_count(L, RK_DEV_C_K2K_OWED, ~0ull); /* - 1 */
  rk_dev_copy_payload(o, e, RK_ENVELOPE_SIZE + e->payload_len); /* validated: within the slot */
  o->flags = (uint16_t)(e->flags & RK_ENV_F_REPLY_ALLOWED);
  o->origin = 0;
  o->src = p->kernel_id;
  o->dst = 0;
  o->node = p->kernel_id;
  o->lane = (uint16_t)blockIdx.x;
  o->msg_id = ((uint64_t)(blockIdx.x + 1) << 48) | ++L->next_reply_id;
  rk_dev_stage_done(p, L, o);
}

/* Thread 0: validate e and check its stamp against the drift bound; an admitted stamp is merged
 * into the kernel clock with the next CAS (rk_now, or the publication). L->skip = 0: run the
 * handler; 1: refused (and answered with an error reply when its header is trustworthy enough).
 * The caller made sure a reply fits, so an error reply is never dropped. */
RK_INLINE __device__ void rk_dev_admit(const rk_dev_params *p, rk_dev_lane *L, const rk_envelope *e) {
  int chk = rk_envelope_validate(e, 0, rk_dev_payload_max(p), p->kernel_id);
  /* a K2K inbox (the transport inbox too) takes K2K messages only, a host inbox none (as the CPU lane) */
  if (chk == RK_ENV_OK && !(e->flags & RK_ENV_F_K2K) != !L->kin_batch) chk = RK_ENV_BAD_FLAGS;
  L->skip = 1;
  if (chk != RK_ENV_OK) {
    rk_dev_count(L, L->kin_batch ? RK_DEV_C_K2K_INVALID : RK_DEV_C_INVALID, 1);
    if (!L->kin_batch) L->cur.env.flags = (uint16_t)(L->cur.env.flags & ~RK_ENV_F_K2K); /* answered in the outbox */
    if (rk_lane_refusal_answered(chk)) {
      L->cur.env.payload_len = 0;
      (void)rk_dev_reply_error(p, L, e->type, RK_ECORRUPT);
    }
  } else if (!L->kin_batch && rk_hlc_too_far_ahead(e->hlc, rk_dev_physical_us(L), L->clock_bound) &&
             (!rk_dev_clock_reload(p, L) || rk_hlc_too_far_ahead(e->hlc, rk_dev_physical_us(L), L->clock_bound))) {
    /* (not for K2K messages: stamped by kernels of this device, whose clocks share %globaltimer,
     * or, from a remote rank (the transport inbox), checked by the bridge against the runtime's
     * bound already; a refused answer could not be answered in turn, and its origin would wait
     * for it) */
    rk_dev_count(L, RK_DEV_C_CLOCK_REJECTED, 1); /* the clock does not move */
    (void)rk_dev_reply_error(p, L, e->type, RK_ECLOCK);
  } else {
    if (e->hlc > L->merge) L->merge = e->hlc;
    L->skip = 0;
    if (L->kin_batch && (e->flags & RK_ENV_F_REPLY)) { /* the answer to a request this lane passed on */
      L->skip = 1;
      if (e->origin == p->kernel_id)
        rk_dev_k2k_answer(p, L, e);
      else /* an answer for another kernel: refused */
        rk_dev_count(L, RK_DEV_C_K2K_INVALID, 1);
    }
  }
}

/* Thread 0, outbox full (what was staged is published): wait until the host takes replies. The
 * lane stays alive while it waits, as a CPU lane does: it applies commands (a deactivate or
 * terminate is acknowledged, not timed out), lane 0 answers clock requests, and the heartbeat
 * moves (a lane waiting for its receiver is not stalled: the watchdog must not fault it). Returns
 * 1 when a reply fits again, 0 when the abort bit ended the wait (L->exit). */
RK_INLINE __device__ int rk_dev_wait_room(const rk_dev_params *p, rk_dev_lane *L) {
  rk_control_host *h = &p->ctl->host;
  for (;;) {
    uint64_t head, sig;
    uint32_t seq;
    RK_DEV_ROUND_BEGIN(); /* registers first, shared fields after (as in rk_dev_poll) */
    seq = rk_dev_ld32_obs(&h->cmd_seq); /* pairs with the host's release */
    sig = rk_dev_ld_obs(&h->signals);
    head = rk_dev_ld_acq(&L->out->head); /* pairs with the host drainer's release */
    RK_DEV_ROUND_END();
    L->ctl_seq = seq;
    L->ctl_sig = sig;
    L->ctl_seen = 1;
    rk_dev_control(p, L, 0);
    if (L->exit) return 0;
    L->out_head = head;
    if (L->out_cap - (L->out_tail - L->out_head) >= 1) return 1;
    rk_dev_beat(L);
    rk_dev_store_counters(L);
    __nanosleep(1000);
  }
}

/* Thread 0: read the control line now (one round) and apply it: a lane that retries a message
 * takes its batch again without polling, and must still hear a deactivate, a terminate or the
 * abort. */
RK_INLINE __device__ void rk_dev_poll_control(const rk_dev_params *p, rk_dev_lane *L) {
  rk_control_host *h = &p->ctl->host;
  uint64_t sig;
  uint32_t seq;
  RK_DEV_ROUND_BEGIN(); /* registers first, shared fields after (as in rk_dev_poll) */
  seq = rk_dev_ld32_obs(&h->cmd_seq); /* pairs with the host's release (rk_dev_control fences) */
  sig = rk_dev_ld_obs(&h->signals);
  RK_DEV_ROUND_END();
  L->ctl_seq = seq;
  L->ctl_sig = sig;
  L->ctl_seen = 1;
  rk_dev_control(p, L, 0);
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
#define RK_DEV_ITERATION(idle) (threadIdx.x == 0 ? rk_emu_note_iteration(idle) : (void)0)
#else
#define RK_DEV_SHARED(type, name) __shared__ type name
#define RK_DEV_ITERATION(idle) ((void)0)
#endif

/* Does message e need outbox room before it is handled? A K2K message's answers travel over K2K;
 * only an answer coming back (a reply) goes to the outbox. */
RK_INLINE __device__ int rk_dev_needs_room(const rk_dev_lane *L, const rk_envelope *e) {
  return L->kin_batch ? (e->flags & RK_ENV_F_REPLY) != 0 : rk_lane_needs_room(e);
}

/* Thread 0: prepare message i of the batch (e, in shared memory): L->skip = 0 handle, 1 refused, 2
 * publish first (no staging or outbox room for its reply), then admit, 3 aborted (left in the
 * inbox: the publication releases only the positions handled or refused, L->in_done). */
RK_INLINE __device__ void rk_dev_prepare(const rk_dev_params *p, rk_dev_lane *L, const rk_envelope *e) {
  L->replied = 0;
  L->sent = 0;
  L->reserved = -1;
  L->cur.env = *e;
  L->cur.payload = e->payload_len ? RK_CAST(const void *, e + 1) : 0;
  L->cur.len = e->payload_len;
  L->cur.status = 0;
  if (L->exit)
    L->skip = 3; /* aborted: the rest of the batch stays in the inbox (not released: a restart takes it) */
  else if ((rk_dev_needs_room(L, e) && (L->staged == L->stage_cap || !rk_dev_room(L, 1))) ||
           L->kpend == RK_DEV_K2K_PENDING) /* (a K2K answer it may owe waits for the publication) */
    L->skip = 2;
  else
    rk_dev_admit(p, L, e);
}

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
  uint32_t w;
  /* The parameters live in host-mapped memory, written before the launch and never again: one
   * copy into shared memory (relaxed loads spread over the threads, one round), so the loop's
   * reads of them never cross PCIe. */
  RK_DEV_ROUND_BEGIN();
  for (w = threadIdx.x; w < sizeof(rk_dev_params) / 8; w += blockDim.x)
    P.w[w] = rk_dev_ld(RK_CAST(const volatile uint64_t *, p_mapped) + w);
  RK_DEV_ROUND_END();
  __syncthreads();
  ctx.p = p;
  ctx.L = &L;
  ctx.lane = blockIdx.x;
  /* dynamic shared memory: the batch's copied slots, the reply staging, the scratch */
  ctx.scratch = rk_smem + (size_t)2 * p->batch * p->slot_size;
  if (threadIdx.x == 0) {
    uint64_t in_so, in_qo, in_mask, out_so, out_qo, out_mask, in_head, out_tail, out_head;
    L.in = RK_CAST(rk_ring *, p->inbox_base + (size_t)blockIdx.x * p->inbox_stride);
    L.out = RK_CAST(rk_ring *, p->outbox_base + (size_t)blockIdx.x * p->outbox_stride);
    L.status = rk_control_lane(p->ctl, p->lanes, blockIdx.x);
    /* The configuration lines are written before launch and never again: relaxed, one round. */
    RK_DEV_ROUND_BEGIN();
    in_so = rk_dev_ld(&L.in->slots_offset);
    in_qo = rk_dev_ld(&L.in->seq_offset);
    in_mask = rk_dev_ld(&L.in->mask);
    out_so = rk_dev_ld(&L.out->slots_offset);
    out_qo = rk_dev_ld(&L.out->seq_offset);
    out_mask = rk_dev_ld(&L.out->mask);
    in_head = rk_dev_ld(&L.in->head);
    out_tail = rk_dev_ld(&L.out->tail);
    /* acquire (the round's last load): pairs with the host drainer's release of head, so that its
     * reads of the slots it gave back come before this lane's writes into them (a restart's lanes
     * start while the host drains) */
    out_head = rk_dev_ld_acq(&L.out->head);
    RK_DEV_ROUND_END();
    L.in_slots = RK_CAST(uint8_t *, L.in) + in_so + RK_RING_MSG_OFFSET; /* messages: past each slot's word */
    L.in_seq = RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, L.in) + in_qo);
    L.in_mask = in_mask;
    L.out_slots = RK_CAST(uint8_t *, L.out) + out_so; /* whole slots: rk_dev_copy_out */
    L.out_seq = RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, L.out) + out_qo);
    L.out_mask = out_mask;
    L.out_cap = out_mask + 1;
    L.in_head = L.in_done = L.in_released = in_head;
    L.out_tail = out_tail;
    L.out_head = out_head;
    L.stage = rk_smem + (size_t)p->batch * p->slot_size;
    L.prefix = rk_dev_prefix0(p);
    L.stage_cap = p->batch;
    L.next_reply_id = 0;
    L.ack = 0;
    L.clock_off = 0;
    L.clock_bound = p->max_offset_us; /* until the first clock_req: its offset's bound */
    L.merge = 0;
    L.polls = 0;
    L.idle = 0;
    L.dirty = 0;
    /* A second round, once per lane start (the first one's values are stored: registers stay under
     * the 64 the launch bounds allow): the counters and the heartbeat go on from what the status
     * line holds, zeros at launch, after a restart what the lanes before counted. Relaxed: written
     * by the host before the launch, or by the old lanes, whose exit the host confirmed before it
     * started these. */
    RK_DEV_ROUND_BEGIN();
    L.c[RK_DEV_C_MSGS_IN] = rk_dev_ld(&L.status->msgs_in);
    L.c[RK_DEV_C_MSGS_OUT] = rk_dev_ld(&L.status->msgs_out);
    L.c[RK_DEV_C_INVALID] = rk_dev_ld(&L.status->invalid);
    L.c[RK_DEV_C_CLOCK_REJECTED] = rk_dev_ld(&L.status->clock_rejected);
    L.c[RK_DEV_C_HANDLER_ERRORS] = rk_dev_ld(&L.status->handler_errors);
    L.c[RK_DEV_C_STALLS] = rk_dev_ld(&L.status->outbox_stalls);
    L.heartbeat = rk_dev_ld(&L.status->heartbeat);
    /* one before the request in force (0 at launch: the first is 1), so that a restart's lanes
     * apply it however far the counter went (rk_dev_clock_newer). Relaxed: only compared; the
     * control poll acquires what it applies */
    L.clock_seen = rk_signals_clock_req(rk_dev_ld(&p->ctl->host.signals));
    RK_DEV_ROUND_END();
    if (L.clock_seen != 0) L.clock_seen--;
    L.c[RK_DEV_C_K2K_IN] = L.c[RK_DEV_C_K2K_OUT] = L.c[RK_DEV_C_K2K_REFUSED] = L.c[RK_DEV_C_K2K_INVALID] = 0;
    L.c[RK_DEV_C_K2K_OWED] = 0;
    if (p->graph) { /* a third round for a kernel of a graph: its K2K counters go on too */
      RK_DEV_ROUND_BEGIN();
      L.c[RK_DEV_C_K2K_IN] = rk_dev_ld(&L.status->k2k_in);
      L.c[RK_DEV_C_K2K_OUT] = rk_dev_ld(&L.status->k2k_out);
      L.c[RK_DEV_C_K2K_REFUSED] = rk_dev_ld(&L.status->k2k_refused);
      L.c[RK_DEV_C_K2K_INVALID] = rk_dev_ld(&L.status->k2k_invalid);
      L.c[RK_DEV_C_K2K_OWED] = rk_dev_ld(&L.status->k2k_owed); /* answers still owed (kept across a restart) */
      RK_DEV_ROUND_END();
    }
    L.avail = L.pend = L.open = 0;
    L.ctl_seen = L.head_seen = 0;
    L.kin = 0;
    L.kin_closed = L.kin_batch = L.turn = L.streak = L.kpend = L.ksys = L.kin_sys = 0;
    L.kin_final = 0; /* (not RK_DEV_K2K_READY: this lane has not said it is ready to close) */
    L.x = 0;
    L.x_closed = L.x_cur = L.x_turn = L.x_asked = 0;
    L.waits_on = L.waits_said = 0;
    if (p->graph) rk_dev_st32(&L.status->k2k_waits_on, 0); /* (a restart: the old lanes' word) */
    if (p->graph) { /* the K2K inbox (device memory, written before the launch): where the old lanes left it */
      rk_ring *r = rk_dev_k2k_ring(p->graph + p->graph_node, blockIdx.x);
      uint64_t head;
      /* staged in host memory, or written by lanes of another device over peer access (graph.c):
       * observed and acquired, and its head given back, at system scope */
      L.kin_sys = (p->graph[p->graph_node].flags & (RK_DEV_K2K_SYS | RK_DEV_K2K_XWRITERS)) != 0;
      L.kin = r;
      rk_dev_inbox_open(r, L.kin_sys, &L.kin_slots, &L.kin_seq, &L.kin_mask, &head);
      L.kin_head = L.kin_done = L.kin_released = head;
      if (p->graph[p->graph_node].x_base) { /* the transport inbox: host-mapped, host producers only */
        r = RK_CAST(rk_ring *, p->graph[p->graph_node].x_base + (size_t)blockIdx.x * p->graph[p->graph_node].x_stride);
        L.x = r;
        rk_dev_inbox_open(r, 1, &L.x_slots, &L.x_seq, &L.x_mask, &head); /* host-mapped */
        L.x_ask = RK_CAST(volatile uint64_t *, RK_CAST(uint8_t *, r) + p->graph[p->graph_node].x_stride - RK_LINE);
        L.x_head = L.x_done = L.x_released = head;
        L.x_final = 0;
        L.x_sys = 1; /* observed, and its head given back, at system scope */
      }
    }
    L.state = RK_STATE_LAUNCHED;
    L.staged = 0;
    L.exit = 0;
    L.reserved = -1;
    L.last_work_ns = L.beat_ns = rk_dev_globaltimer();
    rk_dev_st32(&L.status->state, L.state);
    rk_dev_st(&L.status->clock_sample_ns, rk_dev_globaltimer()); /* clock calibration */
    rk_dev_st_rel32(&L.status->checked_in, 1); /* co-residency proof; pairs with the host */
  }
  RK_DEV_ITERATION(1);
  __syncthreads();
  for (;;) {
    if (threadIdx.x == 0) {
      uint64_t now = rk_dev_globaltimer();
      L.n = 0;
      L.kin_batch = 0;
      L.retry = 0;
      /* Fair between the host inbox and the K2K inbox: after a host batch the K2K inbox is looked at
       * first; after a K2K batch the host inbox, except that while the host inbox was last seen
       * empty up to RK_DEV_K2K_STREAK K2K batches follow one another without a poll of it (a poll
       * is a PCIe round trip; the K2K look an L2 access). A host message waits at most that many
       * K2K batches to be seen, then the two alternate batch by batch. */
      /* Terminating, the host inbox drained and every request passed on answered: close the K2K
       * inbox at once (not only once it is found empty: a cycle may keep it busy), then drain it
       * to the close. Upstream kernels were terminated first (rk_graph_terminate). */
      if (L.kin && !L.kin_closed && (int64_t)L.c[RK_DEV_C_K2K_OWED] <= 0 && L.state == RK_STATE_TERMINATING &&
          L.avail == 0 &&
          (int64_t)(L.in_head - L.drain_to) >= 0 && (!L.kin_sys || rk_dev_k2k_may_close(p, &L)))
        rk_dev_k2k_close(&L);
      /* the transport inbox stays open until then: an answer still owed may come through it */
      if (L.x && L.kin_closed && !L.x_closed) rk_dev_x_closing(&L);
      if (L.kin && L.turn && !L.exit && rk_dev_consuming(&L) && (L.n = rk_dev_k2k_next(p, &L)) != 0) {
        L.kin_batch = 1;
      } else {
        /* a lane that is not consuming polls the control line alone, whatever it knows of the inbox */
        if (!L.exit && (L.avail == 0 || !rk_dev_consuming(&L))) rk_dev_poll(p, &L, now);
        if (!L.exit && rk_dev_consuming(&L)) {
          if (L.avail)
            L.n = L.avail < p->batch ? L.avail : p->batch;
          else if (L.kin && (L.n = rk_dev_k2k_next(p, &L)) != 0)
            L.kin_batch = 1;
          else if (L.state == RK_STATE_TERMINATING && (int64_t)(L.in_head - L.drain_to) >= 0) { /* host inbox drained */
            if (L.kin == 0 || (L.kin_closed && (int64_t)(L.kin_head - L.kin_final) >= 0 &&
                               (L.x == 0 || (L.x_closed && (int64_t)(L.x_head - L.x_final) >= 0))))
              L.exit = 1; /* drained (the K2K inbox closed above, once nothing passed on is owed;
                           * the transport inbox closed by the host when asked) */
          }
        }
      }
      if (L.n && L.kin_batch) {
        L.turn = L.avail == 0 && ++L.streak < RK_DEV_K2K_STREAK;
        if (!L.turn) L.streak = 0;
      } else { /* after a host batch, or idle: the K2K inbox first (a message that arrives while
                * the lane idles is taken without a host poll before it) */
        L.turn = 1;
        L.streak = 0;
      }
    }
    __syncthreads();
    if (L.exit) break;
    if (L.n == 0) {
      /* Every thread has read L.exit and L.n before thread 0 writes the next round's: without
       * this barrier a lagging warp could read the next round's L.n and run one barrier ahead of
       * the block from then on. (The busy path ends with rk_dev_flush's barrier.) */
      __syncthreads();
      if (threadIdx.x == 0) {
        RK_DEV_ITERATION(1);
        if (++L.idle > RK_DEV_SPIN_POLLS)
          __nanosleep(rk_dev_globaltimer() - L.last_work_ns > RK_DEV_DEEP_IDLE_NS ? 2000 : 256);
      }
      continue;
    }
    if (L.kin_batch)
      rk_dev_k2k_copy_in(p, &L, rk_smem, L.n);
    else
      rk_dev_copy_in(p, &L, rk_smem, L.n);
    if (threadIdx.x == 0) {
      if (L.kin_batch) {
        L.kin_head += L.n; /* released after the batch (up to kin_done) */
      } else {
        L.in_head += L.n; /* released to the host by the publication (rk_dev_flush) */
        L.avail -= L.n;
      }
      L.idle = 0;
      L.last_work_ns = rk_dev_globaltimer();
      RK_DEV_NOTE(rk_emu_note_batch(L.n));
    }
    /* The batch's slots are copied: every message is handled (or refused), none is given back. A
     * message that may reply waits for staging and outbox room first; a deactivate that arrives
     * meanwhile takes effect after the batch. */
    for (uint32_t i = 0; i < L.n; i++) {
      rk_envelope *e = RK_CAST(rk_envelope *, rk_smem + (size_t)i * p->slot_size);
      if (threadIdx.x == 0) rk_dev_prepare(p, &L, e);
      __syncthreads();
      if (L.skip == 2) {
        rk_dev_flush(p, &L); /* publishes what is staged and the pending K2K messages */
        if (threadIdx.x == 0) {
          if (!rk_dev_needs_room(&L, e) || rk_dev_room(&L, 1)) {
            rk_dev_admit(p, &L, e);
          } else {
            rk_dev_count(&L, RK_DEV_C_STALLS, 1);
            if (rk_dev_wait_room(p, &L))
              rk_dev_admit(p, &L, e);
            else
              L.skip = 3; /* aborted while waiting for room */
          }
        }
        __syncthreads();
      }
      if (L.skip == 0) {
        int rc = Handler(&ctx, &L.cur);
        /* An error answer over K2K needs a pending slot: publish first when none is left (kpend is
         * uniform: thread 0 last wrote it before a barrier). */
        if (L.kpend == RK_DEV_K2K_PENDING && (L.cur.env.flags & RK_ENV_F_K2K)) rk_dev_flush(p, &L);
        if (threadIdx.x == 0) {
          if (L.reserved >= 0) L.reserved = -1; /* a reservation never committed publishes nothing */
          /* What the handler's result means: the rules both loops share (lane_rules.h): run again
           * later (a K2K destination was full, nothing sent), or an error answer owed. L.skip is
           * not written here: a warp that has not yet read it for this message may still be on
           * its way to the handler (the handler need not have a barrier); L.retry is read only
           * after the message's last barrier. */
          int owed = rk_lane_result_error(rc, L.replied, L.cur.env.flags);
          if (rk_lane_retry(rc, L.replied, L.sent))
            L.retry = 1;
          else if (owed && !L.replied && rk_dev_reply_error(p, &L, L.cur.env.type, owed) == RK_EAGAIN &&
                   (L.cur.env.flags & RK_ENV_F_K2K) && L.sent == 0)
            L.retry = 1; /* the answer goes back over K2K and the origin's inbox is full: run again later
                          * (only when the handler sent nothing: running it again would send twice) */
          else if (owed)
            rk_dev_count(&L, RK_DEV_C_HANDLER_ERRORS, 1);
        }
      }
      /* A heartbeat while a batch of slow messages makes progress: it is not a stall (the
       * watchdog, telemetry.c). A posted store, at most every RK_DEV_HEARTBEAT_NS. */
      if (threadIdx.x == 0) {
        if (L.skip < 3 && !L.retry) { /* handled or refused: its slot may go back to the host; counted
                                       * in (a message an abort left is counted by the lanes of a
                                       * restart, once) */
          if (L.kin_batch) {
            L.kin_done++;
            rk_dev_count(&L, RK_DEV_C_K2K_IN, 1);
          } else {
            L.in_done++;
            rk_dev_count(&L, RK_DEV_C_MSGS_IN, 1);
          }
        }
        rk_dev_beat(&L);
      }
      __syncthreads();
      if (L.retry) break; /* uniform: read after the barrier; cleared only at the next batch */
    }
    if (threadIdx.x == 0) {
      /* Run again later: the message and the rest of the batch stay in their inbox, taken again
       * by a later iteration (the other inbox is looked at in between: fairness above). */
      if (L.kin_batch) {
        if (L.retry) L.kin_head = L.kin_done; /* (kin_done is released by the publication) */
      } else if (L.retry) {
        L.avail += (uint32_t)(L.in_head - L.in_done);
        L.in_head = L.in_done;
      }
      { /* what this lane waits on, for the host's K2K deadlock check (graph.c); a posted store */
        uint32_t w = L.retry ? L.waits_on : 0;
        if (w != L.waits_said) rk_dev_st32(&L.status->k2k_waits_on, L.waits_said = w);
      }
    }
    rk_dev_flush(p, &L);
    /* a transport inbox batch is published (its head given back): the K2K inbox's fields again */
    if (threadIdx.x == 0 && L.x_cur) rk_dev_x_swap(&L);
    if (threadIdx.x == 0 && L.retry) { /* backpressure: back off; the lane is not stalled */
      rk_dev_st(&L.status->heartbeat, ++L.heartbeat);
      rk_dev_poll_control(p, &L); /* the batch is taken again next without a poll: commands and the abort still count */
      __nanosleep(2000);
    }
    RK_DEV_ITERATION(0);
  }
  /* Exit: publish what is staged, close the outbox (a store: the device never RMWs host memory),
   * then report TERMINATED (pairs with the host's acquire before it reclaims memory). */
  rk_dev_flush(p, &L);
  if (threadIdx.x == 0) {
    rk_dev_st_rel(&L.out->claim, L.out_tail | RK_RING_CLOSED);
    rk_dev_st_rel32(&L.status->state, RK_STATE_TERMINATED);
  }
  RK_DEV_ITERATION(1);
}

/* Define an extern "C" persistent kernel entry point `name` running handler `h`. (Emulation: a
 * host function of internal linkage; librk's own entry points keep the names.) */
#if defined(RK_DEVICE_EMULATION)
#define RK_DEFINE_RING_KERNEL(name, h) \
  static void name(const rk_dev_params *p) { rk_dev_lane_main<h>(p); }
#else
/* __launch_bounds__: a lane may have up to RK_DEV_MAX_THREADS threads, so the compiler must keep the
 * loop within 65536 / RK_DEV_MAX_THREADS = 64 registers per thread (a block that needs more than
 * an SM has is refused at launch); tests/test_sass.py would see a spill as local memory. */
#define RK_DEFINE_RING_KERNEL(name, h) \
  extern "C" __global__ void __launch_bounds__(RK_DEV_MAX_THREADS) name(const rk_dev_params *p) { rk_dev_lane_main<h>(p); }
#endif

#endif /* RK_DEVICE_PERSISTENT_CUH */
