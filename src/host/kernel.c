/* kernel.c — launching ring kernels and driving their lifecycle through the control block.
 *
 * Lifecycle commands follow ARCHITECTURE §8: the host writes the command (and, for terminate,
 * each lane's drain target), store-releases cmd_seq, wakes parked lanes, and waits with a timeout
 * until every lane store-released ack_seq == cmd_seq. Terminate first closes every inbox's claim
 * word, so the drain target is final: everything accepted before terminate is processed. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/internal.h"

#define RK_DEFAULT_INBOX 1024u
#define RK_DEFAULT_SLOT 256u
#define RK_WARP_THREADS 32u /* the least a CUDA lane runs with by default */
#define RK_DEFAULT_SEND_TIMEOUT_NS 1000000000ll
#define RK_DEFAULT_LAUNCH_TIMEOUT_NS 5000000000ull
#define RK_COMMAND_TIMEOUT_NS 5000000000ull
#define RK_DEFAULT_CLOCK_SYNC_NS 1000000000ull
#define RK_CLOCK_SYNC_WAIT_NS 200000ull      /* how long the service loop waits for lane 0 */
#define RK_CLOCK_SYNC_MAX_WINDOW_NS 50000ull /* a slower exchange is dropped: error up to 25 us */
#define RK_LAUNCH_CLOCK_TRIES 4              /* exchanges tried at launch before the coarse window */

const char *rk_state_name(rk_lifecycle s) {
  switch (s) {
    case RK_STATE_LAUNCHED: return "LAUNCHED";
    case RK_STATE_ACTIVE: return "ACTIVE";
    case RK_STATE_INACTIVE: return "INACTIVE";
    case RK_STATE_TERMINATING: return "TERMINATING";
    case RK_STATE_TERMINATED: return "TERMINATED";
    case RK_STATE_FAULTED: return "FAULTED";
    default: return "UNKNOWN";
  }
}

static void set_hstate(rk_kernel *k, uint32_t s) { rk_store_release_sys_u32(&k->hstate, s); }

void rk__kernel_fault(rk_kernel *k, int code, const char *fmt, ...) {
  va_list ap;
  int expected = 0;
  char msg[256];
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  uv_mutex_lock(&k->fault_lock); /* its own lock: callers may hold rt->lock or ctl_lock */
  /* The first fault wins; its message is written before the code is published (release). */
  if (__atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) == expected) {
    memcpy(k->fault_msg, msg, sizeof msg);
    __atomic_store_n(&k->fault_code, code, __ATOMIC_RELEASE); /* pairs with rk_kernel_error */
  }
  uv_mutex_unlock(&k->fault_lock);
  rk__log(k->rt, RK_LOG_ERROR, "kernel %s FAULTED: %s", k->name, msg);
}

void rk__kernel_lanes_dead(rk_kernel *k, const char *msg) {
  rk__kernel_fault(k, RK_ECUDA, "%s", msg); /* first: whoever sees the flag reads fault_msg */
  /* release: pairs with lanes_dead()'s acquire; a waiter that sees it gives up on the lanes and
   * reports fault_msg, written before (by this fault, or by an earlier one this fault saw) */
  __atomic_store_n(&k->lanes_dead, 1, __ATOMIC_RELEASE);
}

rk_lifecycle rk_kernel_state(const rk_kernel *k) {
  if (k == NULL) return (rk_lifecycle)0;
  if (__atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) != 0) return RK_STATE_FAULTED;
  return (rk_lifecycle)rk_load_acquire_sys_u32(&k->hstate);
}

int rk_kernel_error(const rk_kernel *k, char *buf, size_t len) {
  int code;
  if (k == NULL) return RK_EINVAL;
  code = __atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE); /* pairs with rk__kernel_fault */
  if (buf && len) {
    if (code)
      snprintf(buf, len, "%s", k->fault_msg);
    else
      buf[0] = '\0';
  }
  return code;
}

uint32_t rk_kernel_id(const rk_kernel *k) { return k ? k->id : 0; }
const char *rk_kernel_name(const rk_kernel *k) { return k ? k->name : NULL; }
uint32_t rk_kernel_lanes(const rk_kernel *k) { return k ? k->lanes : 0; }

/* ---------------------------------------- launch -------------------------------------------- */

static int pick(uint32_t over, uint32_t desc, uint32_t dflt) { return (int)(over ? over : desc ? desc : dflt); }

static void kernel_free(rk_kernel *k) {
  uint32_t i;
  if (k == NULL) return;
  if (k->lane) {
    for (i = 0; i < k->lanes; i++) {
      free(k->lane[i].threads);
      free(k->lane[i].ctxs);
      free(k->lane[i].scratch);
      uv_mutex_destroy(&k->lane[i].drain_lock);
    }
    free(k->lane);
  }
  while (k->pend_head) {
    rk_pending *p = k->pend_head;
    k->pend_head = p->next;
    free(p);
  }
  /* Memory that lanes whose exit was not confirmed may still use is never given back. */
  if (k->ops && !k->shared_kept) {
    k->ops->free(k->rt, k->inbox_mem, k->inbox_stride * k->lanes);
    k->ops->free(k->rt, k->outbox_mem, k->outbox_stride * k->lanes);
    k->ops->free(k->rt, k->ctl_mem, k->ctl_bytes);
  }
  free(k->state);
  rk_clock_destroy(k->clock);
  uv_mutex_destroy(&k->ctl_lock);
  uv_mutex_destroy(&k->fault_lock);
  uv_mutex_destroy(&k->clock_lock);
  uv_mutex_destroy(&k->reply_lock);
  uv_cond_destroy(&k->reply_cond);
  uv_mutex_destroy(&k->cb_lock);
  free(k);
}

/* The fault code (0 if none). Acquire: pairs with rk__kernel_fault's release, so the message
 * written before it can be read after. */
static int fault_of(const rk_kernel *k) { return __atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE); }

/* Dead lanes (a sticky CUDA error): nobody will check in, acknowledge or report TERMINATED.
 * Acquire: pairs with rk__kernel_lanes_dead's release. */
static int lanes_dead(const rk_kernel *k) { return __atomic_load_n(&k->lanes_dead, __ATOMIC_ACQUIRE); }

/* Wait until pred(k, arg) holds for every lane, or the timeout. Spin, then sleep in short steps:
 * lifecycle commands are rare, and their latency is bounded by the lanes' park interval anyway.
 * A fault ends the wait early, returning its code: any fault when any_fault is set (launch: the
 * kernel failed at start), otherwise only dead lanes (RK_ECUDA), which would never answer. */
static int wait_lanes(rk_kernel *k, int (*pred)(rk__lane *, uint32_t), uint32_t arg, uint64_t timeout_ns,
                      int any_fault) {
  uint64_t start = rk__now_ns();
  uint32_t spins = 0, i;
  for (;;) {
    int all = 1, fault;
    for (i = 0; i < k->lanes && all; i++) all = pred(&k->lane[i], arg);
    if (all) return RK_OK;
    if (lanes_dead(k)) return RK_ECUDA;
    fault = fault_of(k);
    if (fault != 0 && any_fault) return fault;
    if (rk__now_ns() - start >= timeout_ns) return RK_ETIMEDOUT;
    if (++spins < 64)
      rk_cpu_relax();
    else
      rk__sleep_ns(spins < 1000 ? 2000 : 50000);
  }
}

static int lane_checked_in(rk__lane *l, uint32_t unused) {
  (void)unused;
  return rk_load_acquire_sys_u32(&l->status->checked_in) != 0; /* pairs with the lane's release */
}
static int lane_acked(rk__lane *l, uint32_t seq) {
  /* pairs with the lane's store-release of ack_seq; an exited lane acknowledges nothing more */
  return rk_load_acquire_sys_u32(&l->status->ack_seq) == seq ||
         rk_load_acquire_sys_u32(&l->status->state) == RK_STATE_TERMINATED;
}
static int lane_terminated(rk__lane *l, uint32_t unused) {
  (void)unused;
  return rk_load_acquire_sys_u32(&l->status->state) == RK_STATE_TERMINATED;
}

/* A parked CPU lane waits on its inbox (as the consumer) or, stalled on a full outbox, on the
 * outbox (as its producer): wake both waits, and nobody else (the outbox's receivers). */
static void wake_lanes(rk_kernel *k) {
  uint32_t i;
  for (i = 0; i < k->lanes; i++) {
    rk_ring_wake_all(k->lane[i].inbox);
    rk_ring_notify_producers(k->lane[i].outbox);
  }
}

/* Write a command, publish it, wake the lanes, wait for every acknowledgement. ctl_lock held. */
static int command(rk_kernel *k, uint32_t cmd, uint64_t timeout_ns) {
  uint32_t seq = ++k->cmd_seq;
  rk_store_relaxed_sys_u32(&k->ctl->host.cmd, cmd);
  rk_store_release_sys_u32(&k->ctl->host.cmd_seq, seq); /* pairs with the lanes' acquire */
  wake_lanes(k);
  return wait_lanes(k, lane_acked, seq, timeout_ns, 0);
}

/* ---------------------------------------- clock synchronisation ------------------------------ */
/* The host measures the offset between a lane's clock and CLOCK_REALTIME by a timed exchange: it
 * reads its clock (r0), bumps the clock request in `signals` (release), and waits for lane 0's
 * clock_ack; lane 0 wrote its own clock (clock_sample_ns) in between, so the sample was taken at
 * some host time in [r0, r1], and offset = midpoint - sample is wrong by at most (r1 - r0) / 2. The device stamps
 * with %globaltimer + offset (src/device/persistent.cuh); the CPU lanes stamp with the host clock
 * and answer anyway, so this code and its arithmetic are exercised on every machine. One writer at
 * a time: launch, then the service loop. */

/* Ask every lane to reload the offset, and lane 0 to answer with its clock. Returns the request. */
static uint32_t clock_request(rk_kernel *k) {
  /* release: pairs with the lanes' load-acquire of signals; clock_offset_ns, written before, is
   * what they reload */
  uint32_t req = rk_signals_clock_req(rk_host_add_fetch_release_u64(&k->ctl->host.signals, RK_SIGNAL_CLOCK_ONE));
  if (req == 0) /* 0 is what a lane starts having seen: skip it when the counter wraps */
    req = rk_signals_clock_req(rk_host_add_fetch_release_u64(&k->ctl->host.signals, RK_SIGNAL_CLOCK_ONE));
  if (!(k->lane[0].inbox->flags & RK_RING_F_NO_WAKE)) {
    /* a parked CPU lane 0 answers now: Dekker pair with the fence its wait makes after raising its
     * sleeping flag (ring_wait.c); it waits as the inbox's consumer, or, stalled, as the outbox's
     * producer. Nobody else is woken. */
    rk_ring_notify_consumer(k->lane[0].inbox);
    rk_ring_notify_producers(k->lane[0].outbox);
  }
  return req;
}

/* An exchange that bracketed lane 0's sample between host times r0 <= r1: take the midpoint. */
static void clock_accept(rk_kernel *k, uint64_t r0, uint64_t r1, uint64_t sample) {
  uint64_t off = r0 + (r1 - r0) / 2 - sample; /* modulo 2^64: the device adds it back */
  rk_store_relaxed_sys_u64(&k->ctl->host.clock_offset_ns, off); /* published by clock_request's release */
  uv_mutex_lock(&k->clock_lock); /* statistics, read together by rk_kernel_stats */
  k->clock_offset = (int64_t)off;
  k->clock_window = r1 - r0;
  k->clock_syncs++;
  uv_mutex_unlock(&k->clock_lock);
}

static void clock_miss(rk_kernel *k) {
  uv_mutex_lock(&k->clock_lock);
  k->clock_misses++;
  uv_mutex_unlock(&k->clock_lock);
}

static uint64_t clock_interval(const rk_kernel *k) {
  return k->rt->opts.clock_sync_interval_ns ? k->rt->opts.clock_sync_interval_ns : RK_DEFAULT_CLOCK_SYNC_NS;
}

static uint64_t add_sat(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

/* One exchange with lane 0: accepted (returns 1) when lane 0 answered within a window of at most
 * RK_CLOCK_SYNC_MAX_WINDOW_NS, otherwise counted as a miss (returns 0). */
static int clock_exchange(rk_kernel *k) {
  uint64_t start = rk__now_ns(), r0, r1, t, sample;
  uint32_t req;
  int answered = 0;
  r0 = rk__realtime_ns();
  req = clock_request(k);
  /* Wait for lane 0 on the monotonic clock: spin briefly, then yield, so a lane 0 that shares this
   * CPU can run (the window then says how precise the answer is, and a slow one is dropped). */
  for (;;) {
    /* pairs with lane 0's store-release of clock_ack, after clock_sample_ns */
    if (rk_load_acquire_sys_u32(&k->lane[0].status->clock_ack) == req) {
      answered = 1;
      break;
    }
    t = rk__now_ns() - start;
    if (t >= RK_CLOCK_SYNC_WAIT_NS) break;
    if (t < 10000) rk_cpu_relax();
    else sched_yield();
  }
  r1 = rk__realtime_ns();
  /* r1 < r0: CLOCK_REALTIME stepped back during the exchange; its window means nothing */
  if (answered && r1 >= r0 && r1 - r0 <= RK_CLOCK_SYNC_MAX_WINDOW_NS) {
    sample = rk_load_relaxed_sys_u64(&k->lane[0].status->clock_sample_ns); /* ordered by the acquire */
    clock_accept(k, r0, r1, sample);
    /* Lanes that stamp with offset-corrected clocks (CUDA) apply it now; this answer is not waited
     * for. CPU lanes stamp with the host clock: nothing to apply, nobody to wake. */
    if (k->ops->lane_clock_offset) (void)clock_request(k);
    return 1;
  }
  clock_miss(k);
  return 0;
}

void rk__clock_sync(rk_kernel *k) {
  uint64_t now = rk__now_ns(), iv = clock_interval(k);
  uint32_t s = rk_load_acquire_sys_u32(&k->hstate);
  if (iv == UINT64_MAX || now < k->clock_next_ns) return;
  if (fault_of(k) != 0) return;
  if (s != RK_STATE_LAUNCHED && s != RK_STATE_ACTIVE && s != RK_STATE_INACTIVE) return; /* lanes leaving */
  /* a miss (lane 0 busy in a long handler, or a slow exchange) is tried again sooner */
  k->clock_next_ns = add_sat(now, clock_exchange(k) ? iv : iv / 4);
}

static void abort_lanes(rk_kernel *k) {
  /* release: pairs with the lanes' load-acquire of signals */
  (void)rk_host_fetch_or_release_u64(&k->ctl->host.signals, RK_SIGNAL_ABORT);
  wake_lanes(k);
}

/* Reclaim the lanes through the backend. When it cannot confirm that they exited (a kernel still
 * running, or blocks still queued that will start later and read the abort word), the control
 * block and rings they address stay allocated, with the abort bit set, for the runtime's life. */
static int join_lanes(rk_kernel *k) {
  int rc = k->ops->join(k);
  if (rc != RK_OK) {
    k->shared_kept = 1;
    rk__log(k->rt, RK_LOG_ERROR,
            "kernel %s: the %s backend did not confirm that its lanes exited (%s); its control block and "
            "rings (%zu bytes) are kept for the runtime's life", k->name, k->ops->name, rk_err_name(rc),
            k->ctl_bytes + (k->inbox_stride + k->outbox_stride) * k->lanes);
  }
  return rc;
}

static int check_desc(rk_runtime *rt, const rk_kernel_desc *d) {
  uint32_t i;
  /* Descriptors grow at the end: one compiled against an older header (smaller size, up to
   * n_types) is accepted, and the fields it lacks read as zero. */
  if (d->size < RK_OFFSETOF(rk_kernel_desc, max_lanes))
    return rk__fail(rt, RK_EINVAL, "kernel descriptor: size field not set");
  if (d->types == NULL && d->n_types)
    return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: n_types without types", d->name ? d->name : "?");
  for (i = 0; i < d->n_types; i++)
    if (d->types[i] == NULL || d->types[i]->id == 0)
      return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: message type %u is NULL or has id 0",
                      d->name ? d->name : "?", i);
  return RK_OK;
}

/* The first clock calibration, once every lane checked in. A synchronous exchange, as the service
 * loop's: lanes in LAUNCHED poll the control line on every iteration (a parked CPU lane 0 is
 * woken by the request), so lane 0 answers within microseconds; a few tries, since the first may
 * find a CPU lane 0 still waking up. Only if every try misses, the coarse window of the whole
 * start (from before ops->start to now: NVRTC, image load, state copy, launch) is used, and the
 * service loop's first exchange, due at once, refines it. */
static void calibrate_at_launch(rk_kernel *k, uint64_t t_before) {
  uint64_t iv = clock_interval(k), t_after, sample;
  int tries, synced = 0;
  for (tries = 0; tries < RK_LAUNCH_CLOCK_TRIES && !synced; tries++) synced = clock_exchange(k);
  if (synced) {
    k->clock_next_ns = iv == UINT64_MAX ? UINT64_MAX : add_sat(rk__now_ns(), iv);
    return;
  }
  /* The last clock lane 0 wrote (at check-in, or answering a missed exchange late): taken after
   * t_before and read before t_after, so inside the window either way. Ordered after the acquire
   * of checked_in in wait_lanes. */
  sample = rk_load_relaxed_sys_u64(&k->lane[0].status->clock_sample_ns);
  t_after = rk__realtime_ns();
  if (t_after < t_before) t_after = t_before; /* CLOCK_REALTIME stepped back: the midpoint would wrap */
  clock_accept(k, t_before, t_after, sample);
  (void)clock_request(k); /* every lane loads the offset before any command reaches it */
  k->clock_next_ns = iv == UINT64_MAX ? UINT64_MAX : 0;
}

int rk_kernel_launch(rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                     rk_kernel **out) {
  rk_launch_options o = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  uint32_t i;
  int rc;
  size_t csize;
  uint64_t t_before;

  if (out) *out = NULL;
  if (rt == NULL || desc == NULL || out == NULL) return rt ? rk__fail(rt, RK_EINVAL, "rk_kernel_launch: NULL argument") : RK_EINVAL;
  if (opts) {
    if (opts->size < 2 * sizeof(uint32_t))
      return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: launch options size not set");
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
  }
  if ((rc = check_desc(rt, desc)) != RK_OK) return rc;
  if (rt->backend == RK_BACKEND_CPU ? desc->handler == NULL
                                     : (desc->cuda_source == NULL && desc->cuda_entry == NULL))
    return rk__fail(rt, RK_ENOTSUP, "kernel %s has no handler for the %s backend", desc->name ? desc->name : "?",
                    rk_backend_name(rt->backend));

  k = (rk_kernel *)calloc(1, sizeof *k);
  if (k == NULL) return rk__fail(rt, RK_ENOMEM, "rk_kernel_launch: out of memory");
  k->rt = rt;
  memcpy(&k->desc, desc, desc->size < sizeof k->desc ? desc->size : sizeof k->desc); /* rest: calloc'd zero */
  desc = &k->desc;
  snprintf(k->name, sizeof k->name, "%s", desc->name ? desc->name : "kernel");
  k->lanes = (uint32_t)pick(o.lanes, desc->lanes, 1);
  k->threads = (uint32_t)pick(o.threads_per_lane, desc->threads_per_lane, 1);
  /* A GPU lane is a block: fewer than a warp's threads leave the rest of the warp idle and the slot
   * copy with fewer loads in flight (docs/cuda-backend.md). The descriptor's count is the CPU
   * backend's default; on CUDA it is raised to a warp unless the launch asks for a count. */
  if (o.threads_per_lane == 0 && rt->backend == RK_BACKEND_CUDA && k->threads < RK_WARP_THREADS)
    k->threads = RK_WARP_THREADS;
  k->inbox_cap = (uint32_t)pick(o.inbox_capacity, desc->inbox_capacity, RK_DEFAULT_INBOX);
  k->outbox_cap = (uint32_t)pick(o.outbox_capacity, desc->outbox_capacity, k->inbox_cap);
  k->slot_size = (uint32_t)pick(o.slot_size, desc->slot_size, RK_DEFAULT_SLOT);
  k->backpressure = o.backpressure ? o.backpressure : desc->backpressure ? desc->backpressure : RK_BACKPRESSURE_BLOCK;
  k->send_timeout_ns = o.send_timeout_ns ? o.send_timeout_ns : RK_DEFAULT_SEND_TIMEOUT_NS;
  k->launch_timeout_ns = o.launch_timeout_ns ? o.launch_timeout_ns : RK_DEFAULT_LAUNCH_TIMEOUT_NS;
  k->ops = rt->ops;
  uv_mutex_init(&k->ctl_lock);
  uv_mutex_init(&k->fault_lock);
  uv_mutex_init(&k->reply_lock);
  uv_cond_init(&k->reply_cond);
  uv_mutex_init(&k->cb_lock);
  uv_mutex_init(&k->clock_lock);

  if (k->lanes == 0 || k->lanes > (desc->max_lanes ? desc->max_lanes : RK_MAX_LANES)) {
    rc = rk__fail(rt, RK_EINVAL, "kernel %s: %u lanes (1..%u)", k->name, k->lanes,
                  desc->max_lanes ? desc->max_lanes : RK_MAX_LANES);
    goto fail_early;
  }
  if (k->threads == 0 || k->threads > 1024) {
    rc = rk__fail(rt, RK_EINVAL, "kernel %s: %u threads per lane (1..1024)", k->name, k->threads);
    goto fail_early;
  }
  if (rk_ring_check_geometry(k->inbox_cap, k->slot_size, RK_RING_MPSC) != RK_OK ||
      rk_ring_check_geometry(k->outbox_cap, k->slot_size, RK_RING_SPSC) != RK_OK) {
    rc = rk__fail(rt, RK_EINVAL,
                  "kernel %s: bad ring geometry (capacities %u/%u must be powers of two; slot %u must be a "
                  "multiple of 64, at least 64)", k->name, k->inbox_cap, k->outbox_cap, k->slot_size);
    goto fail_early;
  }
  for (i = 0; i < desc->n_types; i++)
    if (desc->types[i]->size > k->slot_size - RK_ENVELOPE_SIZE) {
      rc = rk__fail(rt, RK_EMSGSIZE, "kernel %s: message type %s (%u bytes) does not fit a %u-byte slot",
                    k->name, desc->types[i]->name ? desc->types[i]->name : "?", desc->types[i]->size, k->slot_size);
      goto fail_early;
    }

  k->id = __atomic_add_fetch(&rt->next_kernel_id, 1, __ATOMIC_RELAXED);
  if ((rc = rk_clock_create(&k->clock, k->id, rt->opts.max_offset_us)) != RK_OK) goto fail_early;
  if (desc->state_size) {
    k->state = calloc(1, desc->state_size);
    if (k->state == NULL) {
      rc = rk__fail(rt, RK_ENOMEM, "kernel %s: cannot allocate %zu bytes of state", k->name, desc->state_size);
      goto fail_early;
    }
    if (desc->state_init && (rc = desc->state_init(k->state, desc->state_size, desc->state_init_user)) != RK_OK) {
      rc = rk__fail(rt, rc < 0 ? rc : RK_EINVAL, "kernel %s: state initialiser failed", k->name);
      goto fail_early;
    }
  }
  /* Control block and rings in the backend's shared memory (the heap, or the pinned mapped arena),
   * each kind of ring in one block so a device lane finds its ring at base + lane * stride. */
  csize = rk_control_size(k->lanes);
  k->ctl_bytes = csize;
  k->inbox_stride = (rk_ring_memsize(k->inbox_cap, k->slot_size, RK_RING_MPSC) + RK_LINE - 1) & ~(size_t)(RK_LINE - 1);
  k->outbox_stride = (rk_ring_memsize(k->outbox_cap, k->slot_size, RK_RING_SPSC) + RK_LINE - 1) & ~(size_t)(RK_LINE - 1);
  k->lane = (rk__lane *)calloc(k->lanes, sizeof *k->lane);
  if (k->lane == NULL) {
    rc = rk__fail(rt, RK_ENOMEM, "kernel %s: out of memory", k->name);
    goto fail_early;
  }
  k->ctl_mem = k->ops->alloc(rt, csize);
  k->inbox_mem = k->ctl_mem ? k->ops->alloc(rt, k->inbox_stride * k->lanes) : NULL;
  k->outbox_mem = k->inbox_mem ? k->ops->alloc(rt, k->outbox_stride * k->lanes) : NULL;
  if (k->outbox_mem == NULL) {
    rc = rk__fail(rt, RK_ENOMEM, "kernel %s: cannot allocate its control block and rings (%s backend)", k->name,
                  k->ops->name);
    goto fail_early;
  }
  k->ctl = (rk_control *)k->ctl_mem;
  for (i = 0; i < k->lanes; i++) {
    rk__lane *l = &k->lane[i];
    l->k = k;
    l->index = i;
    l->status = rk_control_lane(k->ctl, k->lanes, i);
    l->cmd = rk_control_lane_cmd(k->ctl, i);
    uv_mutex_init(&l->drain_lock);
    l->inbox = (rk_ring *)((uint8_t *)k->inbox_mem + (size_t)i * k->inbox_stride);
    l->outbox = (rk_ring *)((uint8_t *)k->outbox_mem + (size_t)i * k->outbox_stride);
    if (rk_ring_init(l->inbox, k->inbox_stride, k->inbox_cap, k->slot_size, RK_RING_MPSC) != RK_OK ||
        rk_ring_init(l->outbox, k->outbox_stride, k->outbox_cap, k->slot_size, RK_RING_SPSC) != RK_OK) {
      rc = rk__fail(rt, RK_EINVAL, "kernel %s: cannot initialise the rings of lane %u", k->name, i);
      goto fail_early;
    }
    if (rt->backend == RK_BACKEND_CUDA) { /* the device end of these rings cannot wake host waiters */
      l->inbox->flags |= RK_RING_F_NO_WAKE;
      l->outbox->flags |= RK_RING_F_NO_WAKE;
    }
    if (desc->scratch_size && (l->scratch = calloc(1, desc->scratch_size)) == NULL) {
      rc = rk__fail(rt, RK_ENOMEM, "kernel %s: cannot allocate scratch", k->name);
      goto fail_early;
    }
  }
  set_hstate(k, RK_STATE_LAUNCHED);

  t_before = rk__realtime_ns();
  rc = k->ops->start(k);
  if (rc == RK_OK) {
    /* Co-residency is proven, not computed: every lane must check in (ARCHITECTURE §8). A kernel
     * that faults meanwhile (a CUDA error at start) ends the wait with its own code and message. */
    rc = wait_lanes(k, lane_checked_in, 0, k->launch_timeout_ns, 1);
    if (rc != RK_OK && fault_of(k) != 0)
      rc = rk__fail(rt, fault_of(k), "kernel %s: faulted while its lanes checked in: %s", k->name, k->fault_msg);
    else if (rc != RK_OK)
      rc = rk__fail(rt, RK_ENORESOURCE, "kernel %s: not every lane checked in within %llu ms", k->name,
                    (unsigned long long)(k->launch_timeout_ns / 1000000));
    else
      calibrate_at_launch(k, t_before);
  }
  if (rc != RK_OK) {
    abort_lanes(k);
    (void)join_lanes(k); /* not confirmed: the control block and rings are kept */
    goto fail_early;
  }

  uv_mutex_lock(&rt->lock);
  k->next = rt->kernels;
  rt->kernels = k;
  uv_mutex_unlock(&rt->lock);
  rk__log(rt, RK_LOG_INFO, "kernel %s (id %u) launched: %u lanes x %u threads, slots %u x %u B", k->name, k->id,
          k->lanes, k->threads, k->inbox_cap, k->slot_size);
  *out = k;
  return RK_OK;

fail_early:
  kernel_free(k);
  return rc;
}

/* ---------------------------------------- lifecycle ------------------------------------------ */

static int transition(rk_kernel *k, uint32_t cmd, const char *what) {
  uint32_t s;
  int rc;
  if (k == NULL) return RK_EINVAL;
  uv_mutex_lock(&k->ctl_lock);
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (__atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) != 0) s = RK_STATE_FAULTED;
  if ((cmd == RK_CMD_ACTIVATE && s != RK_STATE_LAUNCHED && s != RK_STATE_INACTIVE) ||
      (cmd == RK_CMD_DEACTIVATE && s != RK_STATE_ACTIVE)) {
    uv_mutex_unlock(&k->ctl_lock);
    return rk__fail(k->rt, RK_ESTATE, "kernel %s: cannot %s in state %s", k->name, what,
                    rk_state_name((rk_lifecycle)s));
  }
  rc = command(k, cmd, RK_COMMAND_TIMEOUT_NS);
  if (rc == RK_OK)
    set_hstate(k, cmd == RK_CMD_ACTIVATE ? RK_STATE_ACTIVE : RK_STATE_INACTIVE);
  else if (rc == RK_ECUDA) /* the lanes died meanwhile */
    rc = rk__fail(k->rt, rc, "kernel %s: cannot %s: %s", k->name, what, k->fault_msg);
  else
    rk__kernel_fault(k, RK_ETIMEDOUT, "a lane did not acknowledge %s", what);
  uv_mutex_unlock(&k->ctl_lock);
  return rc;
}

int rk_kernel_activate(rk_kernel *k) { return transition(k, RK_CMD_ACTIVATE, "activate"); }
int rk_kernel_deactivate(rk_kernel *k) { return transition(k, RK_CMD_DEACTIVATE, "deactivate"); }

/* Every lane has exited, or is dead (ctl_lock held): reclaim the lanes and release blocked
 * senders. The host is done with the kernel either way; when the backend cannot confirm the exit,
 * the memory the lanes address is kept (join_lanes) and RK_ETIMEDOUT returned. */
static int finish_terminate(rk_kernel *k) {
  uint32_t i;
  int rc = join_lanes(k);
  for (i = 0; i < k->lanes; i++) rk_ring_wake_all(k->lane[i].inbox); /* blocked senders: ECLOSED */
  set_hstate(k, RK_STATE_TERMINATED);
  if (rc != RK_OK)
    rc = rk__fail(k->rt, rc, "kernel %s: the lanes' exit was not confirmed; their control block and rings are kept",
                  k->name);
  return rc;
}

/* Receivers waiting for replies that will never come learn it now. */
static void wake_receivers(rk_kernel *k) {
  uv_mutex_lock(&k->reply_lock);
  uv_cond_broadcast(&k->reply_cond);
  uv_mutex_unlock(&k->reply_lock);
}

int rk_kernel_terminate(rk_kernel *k, int64_t timeout_ns) {
  uint32_t s, i;
  int rc;
  uint64_t t = timeout_ns < 0 ? UINT64_MAX : (uint64_t)timeout_ns;
  if (k == NULL) return RK_EINVAL;
  uv_mutex_lock(&k->ctl_lock);
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (s == RK_STATE_TERMINATED || s == RK_STATE_TERMINATING) {
    uv_mutex_unlock(&k->ctl_lock);
    return rk__fail(k->rt, RK_ESTATE, "kernel %s: already %s", k->name, rk_state_name((rk_lifecycle)s));
  }
  set_hstate(k, RK_STATE_TERMINATING);
  /* Close every inbox: the claim word's final value is the drain target, so everything accepted
   * before this point will be processed and nothing after it can be accepted. */
  for (i = 0; i < k->lanes; i++) {
    uint64_t fin = 0;
    rk_ring_close(k->lane[i].inbox, &fin);
    rk_store_relaxed_sys_u64(&k->lane[i].cmd->drain_to, fin); /* published by cmd_seq's release */
  }
  /* Dead lanes (a sticky CUDA error, before or during the command) acknowledge nothing: join them
   * directly (their stream reports the error, which counts as exited). */
  rc = lanes_dead(k) ? RK_ECUDA : command(k, RK_CMD_TERMINATE, t);
  if (rc == RK_OK) rc = wait_lanes(k, lane_terminated, 0, t, 0);
  if (rc != RK_OK && rc != RK_ECUDA) {
    abort_lanes(k);
    rc = wait_lanes(k, lane_terminated, 0, 1000000000ull, 0);
    if (rc != RK_OK && rc != RK_ECUDA) {
      /* A handler that never returns: its thread cannot be joined. Keep everything allocated. */
      rk__kernel_fault(k, RK_ETIMEDOUT, "terminate: lanes still running after abort");
      uv_mutex_unlock(&k->ctl_lock);
      return rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: terminate timed out; lanes still running", k->name);
    }
    rc = rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: terminate timed out before the inbox drained; aborted", k->name);
  }
  if (rc == RK_ECUDA) /* terminated, but what the inboxes held was never processed */
    rc = rk__fail(k->rt, RK_ECUDA, "kernel %s: lanes dead after a CUDA error (first fault: %s); terminated without "
                  "draining", k->name, k->fault_msg);
  if (finish_terminate(k) != RK_OK) rc = RK_ETIMEDOUT;
  uv_mutex_unlock(&k->ctl_lock);
  wake_receivers(k);
  return rc;
}

void rk_kernel_destroy(rk_kernel *k) {
  rk_runtime *rt;
  rk_kernel **pp;
  uint32_t s;
  if (k == NULL) return;
  rt = k->rt;
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE)) rk_recv_stop(k); /* pairs with rk_recv_start */
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (s == RK_STATE_TERMINATING) {
    /* An earlier terminate timed out with a lane still inside its handler and told the lanes to
     * abort; they exit when the handler returns. Give them the same 1 s, then reclaim them. */
    uv_mutex_lock(&k->ctl_lock);
    if (rk_load_acquire_sys_u32(&k->hstate) == RK_STATE_TERMINATING) {
      int rc = wait_lanes(k, lane_terminated, 0, 1000000000ull, 0);
      if (rc == RK_OK || rc == RK_ECUDA) (void)finish_terminate(k); /* exited, or dead */
    }
    uv_mutex_unlock(&k->ctl_lock);
    wake_receivers(k);
  } else if (s != RK_STATE_TERMINATED) {
    (void)rk_kernel_terminate(k, 1000000000ll);
  }
  if (rk_load_acquire_sys_u32(&k->hstate) != RK_STATE_TERMINATED) {
    rk__log(rt, RK_LOG_ERROR, "kernel %s: lanes did not stop; its memory is kept", k->name);
    if (k->ops->abandon) k->ops->abandon(k); /* the backend reclaims its part once they exit */
    uv_mutex_lock(&rt->lock);
    for (pp = &rt->kernels; *pp; pp = &(*pp)->next)
      if (*pp == k) {
        *pp = k->next;
        break;
      }
    uv_mutex_unlock(&rt->lock);
    return;
  }
  uv_mutex_lock(&rt->lock);
  for (pp = &rt->kernels; *pp; pp = &(*pp)->next)
    if (*pp == k) {
      *pp = k->next;
      break;
    }
  uv_mutex_unlock(&rt->lock);
  /* The service thread may be in a pass over this kernel: wait for it to leave. */
  while (__atomic_load_n(&k->refs, __ATOMIC_ACQUIRE) != 0) rk__sleep_ns(50000);
  kernel_free(k);
}
