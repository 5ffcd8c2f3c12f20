/* kernel.c — launching ring kernels and driving their lifecycle through the control block.
 *
 * Lifecycle commands follow ARCHITECTURE §8: the host writes the command (and, for terminate,
 * each lane's drain target), store-releases cmd_seq, wakes parked lanes, and waits with a timeout
 * until every lane store-released ack_seq == cmd_seq. Terminate first closes every inbox's claim
 * word, so the drain target is final: everything accepted before terminate is processed.
 *
 * Faults (docs/design-notes.md, "Faults, recovery and restart"): a fault wakes every waiter on the
 * kernel, which then refuses messages and commands but terminate and restart; the kernel's fault
 * policy decides whether it stays FAULTED, recovers when its stalled lane moves again, or is
 * restarted by the service loop. Terminate always ends TERMINATED (the fault stays readable) unless
 * a handler never returns; every wait here has a deadline (terminate: its timeout plus
 * RK__ABORT_GRACE_NS). */
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
#define RK_COMMAND_TIMEOUT_NS 5000000000ull /* rk_runtime_options.command_timeout_ns 0 */
#define RK_DEFAULT_CLOCK_SYNC_NS 1000000000ull
#define RK_CLOCK_SYNC_WAIT_NS 200000ull      /* how long the service loop waits for lane 0 */
#define RK_CLOCK_SYNC_MAX_WINDOW_NS 50000ull /* a slower exchange is dropped: error up to 25 us */
#define RK_CLOCK_SYNC_COARSE_WAIT_NS 2000000ull /* the service loop's wait while a coarser one is in force */
#define RK_CLOCK_SYNC_TIGHTEN_NS 1000000ull /* after a narrowing: the next exchange publishes its narrower bound */
#define RK_CLOCK_SYNC_RETRY_MAX_NS 250000000ull /* a miss or a coarse window: tried again within this */
#define RK_CLOCK_STEP_NS 1000000ull /* the host clock moved this much more than a slew: exchange now */
#define RK_CLOCK_SLEW_MAX_NS 8000000ull /* at most this much of the step allowance is slew (the
                                           * whole allowance under RK_CLOCK_GUARD_NS, internal.h) */
#define RK_CLOCK_DOUBT_GAP_NS 100000000ull /* a doubt after an accepted exchange waits this long */
#define RK_CLOCK_STEP_LOG_NS 10000000000ull /* a step said at most this often */
#define RK_CLOCK_GUARD_WINDOW_NS 10000000ull /* the widest window a sender's exchange takes */
#define RK_CLOCK_GUARD_BACKOFF_NS 20000000ull /* after a sender's exchanges all missed: senders skip */
#define RK_LAUNCH_CLOCK_WAIT_NS 20000000ull  /* a launch exchange's wait (a loaded machine) */
#define RK_LAUNCH_CLOCK_TRIES 4              /* exchanges tried at launch before the coarse window */
#define RK_DEFAULT_DEAD_LETTERS 16u
#define RK_DEFAULT_MAX_RESTARTS 3u
#define RK_DEFAULT_RESTART_BACKOFF_NS 100000000ull

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

static uint64_t add_sat(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

/* Time left until a deadline (rk__now_ns), 0 once it passed. */
static uint64_t left_until(uint64_t deadline) {
  uint64_t now = rk__now_ns();
  return deadline == UINT64_MAX ? UINT64_MAX : deadline > now ? deadline - now : 0;
}

/* Everyone who waits on k learns at once that something changed (a fault, an abort, the end):
 * blocked senders (inbox producers), receivers parked on an outbox, callers asleep on reply_cond.
 * Each re-checks the kernel's state when woken. */
static void wake_waiters(rk_kernel *k) {
  uint32_t i;
  for (i = 0; i < k->lanes; i++) {
    rk_ring_wake_all(k->lane[i].inbox);
    rk_ring_wake_all(k->lane[i].outbox);
  }
  rk__lock(&k->reply_lock);
  uv_cond_broadcast(&k->reply_cond);
  rk__unlock(&k->reply_lock);
}

int rk__kernel_faulted(const rk_kernel *k) { return __atomic_load_n(&k->faulted, __ATOMIC_ACQUIRE); }

/* A test hook (rk__kernel_fault_if_running, before it takes fault_lock): NULL outside tests. */
void (*rk__fault_if_running_hook)(rk_kernel *k);

/* running: record the fault only if k is ACTIVE or TERMINATING when fault_lock is held (a
 * terminate that set TERMINATED clears the fault under fault_lock afterwards: either that clears
 * this fault, or this one sees TERMINATED and is skipped). Returns whether it was recorded. */
static int fault_v(rk_kernel *k, int code, int soft, int running, uint32_t lane, uint64_t heartbeat, const char *fmt,
                   va_list ap) {
  char msg[sizeof k->fault_msg];
  int recorded = 0, skip = 0;
  vsnprintf(msg, sizeof msg, fmt, ap);
  rk__lock(&k->fault_lock); /* its own lock: callers may hold ctl_lock */
  if (running) {
    /* acquire: pairs with set_hstate's release (finish_terminate sets TERMINATED before clear_fault
     * takes fault_lock, so a terminate that cleared before this lock is seen here) */
    uint32_t s = rk_load_acquire_sys_u32(&k->hstate);
    skip = s != RK_STATE_ACTIVE && s != RK_STATE_TERMINATING;
  }
  /* A fault while faulted changes nothing: the first one explains; except a hard fault over a soft
   * one (a watchdog stall), which it replaces: the RECOVER policy clears a soft fault when the lane
   * moves again, and it cleared the hard one it had never recorded (a lane that broke the
   * collective rule, or a K2K deadlock, during a stall: the kernel ran on with a dead lane, or in a
   * deadlock never reported again). The message is written before faulted is published (release),
   * under fault_lock, which readers of the message take. */
  if (!skip && (!__atomic_load_n(&k->faulted, __ATOMIC_RELAXED) || (k->fault_soft && !soft))) { /* under fault_lock */
    memcpy(k->fault_msg, msg, sizeof msg);
    k->fault_soft = soft;
    k->stall_lane = lane;
    k->stall_heartbeat = heartbeat;
    k->fault_ns = rk__now_ns();
    __atomic_store_n(&k->fault_code, code, __ATOMIC_RELEASE);
    __atomic_store_n(&k->faulted, 1, __ATOMIC_RELEASE); /* pairs with rk__kernel_faulted */
    recorded = 1;
  }
  rk__unlock(&k->fault_lock);
  if (skip) return 0;
  if (recorded) {
    __atomic_add_fetch(&k->faults, 1, __ATOMIC_RELAXED); /* statistics */
    wake_waiters(k);
  }
  rk__log(k->rt, RK_LOG_ERROR, "kernel %s FAULTED: %s", k->name, msg);
  return recorded;
}

void rk__kernel_fault(rk_kernel *k, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  (void)fault_v(k, code, 0, 0, 0, 0, fmt, ap);
  va_end(ap);
}

int rk__kernel_fault_if_running(rk_kernel *k, int code, const char *fmt, ...) {
  va_list ap;
  int recorded;
  void (*hook)(rk_kernel *) = __atomic_load_n(&rk__fault_if_running_hook, __ATOMIC_RELAXED); /* set by tests only */
  if (hook) hook(k);
  va_start(ap, fmt);
  recorded = fault_v(k, code, 0, 1, 0, 0, fmt, ap);
  va_end(ap);
  return recorded;
}

void rk__kernel_stall(rk_kernel *k, uint32_t lane, uint64_t heartbeat, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  (void)fault_v(k, RK_ETIMEDOUT, 1, 0, lane, heartbeat, fmt, ap);
  va_end(ap);
}

/* The kernel is no longer FAULTED (recovered, restarted, terminated); the fault stays readable. */
static void clear_fault(rk_kernel *k) {
  rk__lock(&k->fault_lock);
  __atomic_store_n(&k->faulted, 0, __ATOMIC_RELEASE); /* pairs with rk__kernel_faulted */
  rk__unlock(&k->fault_lock);
}

void rk__kernel_fault_msg(rk_kernel *k, char *buf, size_t len) {
  if (len == 0) return;
  rk__lock(&k->fault_lock);
  snprintf(buf, len, "%s", k->fault_msg);
  rk__unlock(&k->fault_lock);
}

void rk__kernel_lanes_dead(rk_kernel *k, const char *msg) {
  rk__kernel_fault(k, RK_ECUDA, "%s", msg); /* first: whoever sees the flag reads fault_msg */
  /* release: pairs with lanes_dead()'s acquire; a waiter that sees it gives up on the lanes and
   * reports fault_msg, written before (by this fault, or by an earlier one this fault saw) */
  __atomic_store_n(&k->lanes_dead, 1, __ATOMIC_RELEASE);
  wake_waiters(k); /* also when an earlier fault had woken them: lanes_dead ends their waits */
}

rk_lifecycle rk_kernel_state(const rk_kernel *k) {
  if (k == NULL) return (rk_lifecycle)0;
  if (rk__kernel_faulted(k)) return RK_STATE_FAULTED;
  return (rk_lifecycle)rk_load_acquire_sys_u32(&k->hstate);
}

int rk_kernel_error(const rk_kernel *k, char *buf, size_t len) {
  rk_kernel *kk = (rk_kernel *)k; /* fault_lock: the message of a kernel that may fault again */
  int code;
  if (k == NULL) return RK_EINVAL;
  rk__lock(&kk->fault_lock);
  code = __atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE); /* pairs with fault_v's release */
  if (buf && len) snprintf(buf, len, "%s", code ? k->fault_msg : "");
  rk__unlock(&kk->fault_lock);
  return code;
}

/* ---------------------------------------- dead letters --------------------------------------- */

void rk__dead_letter(rk_kernel *k, const rk_envelope *e, const void *payload, int reason, const char *why,
                     uint32_t lane) {
  rk_dead_letter *d;
  uint32_t n;
  if (k->dead == NULL) return;
  rk__lock(&k->dead_lock); /* a leaf lock: taken under reply_lock by the drain */
  d = &k->dead[k->dead_total % k->dead_cap];
  d->env = *e;
  d->reason = reason;
  d->lane = lane;
  d->why = why;
  d->time_ns = rk__realtime_ns();
  /* payload_len is whatever the envelope says, trusted or not: never read past the slot */
  n = e->payload_len < rk__payload_max(k) ? e->payload_len : rk__payload_max(k);
  n = payload && n < RK_DEAD_LETTER_PAYLOAD ? n : payload ? RK_DEAD_LETTER_PAYLOAD : 0;
  d->payload_len = n;
  if (n) memcpy(d->payload, payload, n);
  k->dead_total++;
  rk__unlock(&k->dead_lock);
}

int rk_kernel_dead_letters(rk_kernel *k, rk_dead_letter *out, uint32_t max, uint64_t *total) {
  uint64_t first, i, n;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (out == NULL && max > 0) return rk__fail(k->rt, RK_EINVAL, "rk_kernel_dead_letters: NULL buffer");
  rk__lock(&k->dead_lock);
  n = k->dead_total < k->dead_cap ? k->dead_total : k->dead_cap;
  if (n > max) n = max;
  first = k->dead_total - n; /* the n most recent, oldest first */
  for (i = 0; i < n; i++) out[i] = k->dead[(first + i) % k->dead_cap];
  if (total) *total = k->dead_total;
  rk__unlock(&k->dead_lock);
  return (int)n;
}

uint32_t rk_kernel_id(const rk_kernel *k) { return k ? k->id : 0; }
const char *rk_kernel_name(const rk_kernel *k) { return k ? k->name : NULL; }
uint32_t rk_kernel_lanes(const rk_kernel *k) { return k ? k->lanes : 0; }

/* ---------------------------------------- launch -------------------------------------------- */

static int pick(uint32_t over, uint32_t desc, uint32_t dflt) { return (int)(over ? over : desc ? desc : dflt); }

void rk__kernel_free(rk_kernel *k) {
  uint32_t i;
  if (k == NULL) return;
  rk__k2k_free(k); /* its K2K inboxes (graph.c): no sender is left (rk_graph_destroy) */
  rk__buffers_kernel_free(k); /* its messages' buffer pins (buffer.c) */
  rk__tokens_free(k->tokens); /* the tokens of replies never taken (token.c) */
  if (k->lane) {
    for (i = 0; i < k->lanes; i++) {
      free(k->lane[i].threads);
      free(k->lane[i].ctxs);
      free(k->lane[i].scratch);
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
  free(k->dead);
  free(k->cb_buf);
  rk_clock_destroy(k->clock);
  uv_mutex_destroy(&k->ctl_lock);
  uv_mutex_destroy(&k->fault_lock);
  uv_mutex_destroy(&k->clock_lock);
  uv_mutex_destroy(&k->clock_sync_lock);
  uv_mutex_destroy(&k->reply_lock);
  uv_cond_destroy(&k->reply_cond);
  uv_mutex_destroy(&k->cb_lock);
  uv_cond_destroy(&k->cb_cond);
  uv_mutex_destroy(&k->dead_lock);
  free(k);
}

/* A fault ends a wait that cannot succeed while it lasts (launch, restart): its code, or 0. */
static int fault_of(const rk_kernel *k) {
  return rk__kernel_faulted(k) ? __atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) : 0;
}

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
    if (++spins < 64 && !rk__one_cpu()) /* (one CPU: the lanes answer only if this yields) */
      rk_cpu_relax();
    else if (spins < 64)
      rk__wait_yield();
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
  rk__k2k_xin_poll(l->k, l->index); /* a device lane that waits for its transport inbox's close */
  if (rk_load_acquire_sys_u32(&l->status->state) == RK_STATE_TERMINATED) return 1;
  /* A lane draining into a full outbox waits for room, and the one who would make it may be this
   * thread: a terminate from a receive callback (the dispatcher is the outbox's consumer) or from
   * the application's only receiving thread waited forever (or, with a timeout, cut the drain).
   * So a full outbox's replies go to the pending list, in order (rk_recv and the callbacks take
   * them from there first), unless another drainer has the outbox. */
  if (rk_ring_count(l->outbox) >= l->k->outbox_cap && rk__flag_trylock(&l->drain_lock) == 0) {
    (void)rk__drain_lane(l->k, l, NULL, NULL, 0, 0, NULL);
    rk__flag_unlock(&l->drain_lock);
  }
  return 0;
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
  /* release: pairs with the lanes' acquire of cmd, which orders their read of drain_to (written
   * before) after it. cmd_seq's acquire alone does not: a lane that read an earlier command's
   * cmd_seq (say one that timed out while it ran a long handler) may read this cmd and, without
   * this pair, a stale drain_to (on a weakly ordered CPU or over PCIe), and a TERMINATE that
   * drains to 0 leaves accepted messages behind. */
  rk_store_release_sys_u32(&k->ctl->host.cmd, cmd);
  rk_store_release_sys_u32(&k->ctl->host.cmd_seq, seq); /* pairs with the lanes' acquire */
  wake_lanes(k);
  return wait_lanes(k, lane_acked, seq, timeout_ns, 0);
}

/* ---------------------------------------- clock synchronisation ------------------------------ */
/* The host measures the offset between a lane's clock and its own (rk__host_time_ns: the runtime's
 * time source, or CLOCK_REALTIME) by a timed exchange: it
 * reads its clock (r0), bumps the clock request in `signals` (release), and waits for lane 0's
 * clock_ack; lane 0 wrote its own clock (clock_sample_ns) in between, so the sample was taken at
 * some host time in [r0, r1], and offset = midpoint - sample is wrong by at most (r1 - r0) / 2. The device stamps
 * with %globaltimer + offset (src/device/persistent.cuh); the CPU lanes stamp with the host clock
 * and answer anyway, so this code and its arithmetic are exercised on every machine. One writer at
 * a time: launch (before the kernel is published), then whoever holds clock_sync_lock: the service
 * loop, or a sender that saw a step (rk__clock_guard_slow).
 *
 * The offset's uncertainty (half the window of the measurement in force) goes with it: the lanes
 * compare host stamps with their corrected clock, which may be behind the host's by that much, so
 * their drift bound is max_offset_us plus the uncertainty (clock_bound_us in the control line).
 * Without it, a coarse calibration (the whole start's window, seconds on a loaded machine) made
 * lanes refuse host stamps that were not ahead at all (RK_ECLOCK: accepted messages lost). A stamp
 * more than max_offset_us ahead of the host clock may then pass; one more than max_offset_us + 2 x
 * uncertainty ahead never does. docs/cuda-backend.md "Device HLC". */

/* Ask every lane to reload the offset, and lane 0 to answer with its clock. Returns the request. */
static uint32_t clock_request(rk_kernel *k) {
  /* release: pairs with the lanes' load-acquire of signals; clock_offset_ns and clock_bound_us,
   * written before, are what they reload */
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

/* The drift bound (us) lanes apply to host stamps while offsets of uncertainty up to unc_ns may be
 * in force: max_offset_us + unc rounded up + 1 us for the two readings' truncation to
 * microseconds; saturating. */
static uint64_t clock_bound_us(uint64_t max_offset_us, uint64_t unc_ns) {
  uint64_t u = unc_ns / 1000 + (unc_ns % 1000 != 0) + 1;
  return max_offset_us > UINT64_MAX - u ? UINT64_MAX : max_offset_us + u;
}

/* The midpoint of two readings a <= b of one clock. */
static uint64_t mid(uint64_t a, uint64_t b) { return a + (b - a) / 2; }

/* The host clock minus the monotonic one (ns, modulo 2^64) into *d, the monotonic reading into
 * *mono: the monotonic clock read between two readings of the host clock, and their midpoint
 * taken. Returns 0 when the two host readings are more than 50 us apart (the thread was preempted
 * between them, or the host clock stepped right then): a reading that may be off by that much. */
static int host_minus_mono(const rk_kernel *k, uint64_t *d, uint64_t *mono) {
  uint64_t a = rk__host_time_ns(k->rt), m = rk__now_ns(), b = rk__host_time_ns(k->rt);
  *d = mid(a, b) - m;
  *mono = m;
  return b - a <= 50000; /* (b < a fails too: a step back) */
}

/* An exchange that bracketed lane 0's sample between host times r0 <= r1: take the midpoint. Its
 * uncertainty is (r1 - r0) / 2, at least half the largest window accepted without narrowing (so
 * that every accepted measurement's bound covers every other such one). The bound published is
 * the larger of this uncertainty and the previous offset's: a lane reloads offset and bound with
 * two loads while the host may be writing the next pair, and may pair the previous offset with
 * this bound (until it sees the next request, one poll later); never a bound too small for the
 * offset it holds. m0 <= m1: monotonic readings around r0 and r1, for the host clock minus the
 * monotonic one (clock_stepped), taken from the exchange's own readings. */
static void clock_accept(rk_kernel *k, uint64_t r0, uint64_t r1, uint64_t m0, uint64_t m1, uint64_t sample) {
  uint64_t off = mid(r0, r1) - sample; /* modulo 2^64: the device adds it back */
  uint64_t mo = k->rt->opts.max_offset_us ? k->rt->opts.max_offset_us : RK_HLC_DEFAULT_MAX_OFFSET_US;
  uint64_t unc = (r1 - r0) / 2 + 1, floor_unc = RK_CLOCK_SYNC_MAX_WINDOW_NS / 2;
  if (unc < floor_unc) unc = floor_unc;
  /* both published by clock_request's release; a lane reloads them together */
  rk_store_relaxed_sys_u64(&k->ctl->host.clock_offset_ns, off);
  k->clock_bound_unc = unc > k->clock_unc ? unc : k->clock_unc; /* (only the one writer reads these) */
  rk_store_relaxed_sys_u64(&k->ctl->host.clock_bound_us, clock_bound_us(mo, k->clock_bound_unc));
  k->clock_unc = unc;
  k->clock_rm_next = mid(r0, r1) - mid(m0, m1); /* published by clock_publish_rm, after the request */
  k->clock_rm_at = mid(m0, m1);
  rk__lock(&k->clock_lock); /* statistics, read together by rk_kernel_stats */
  k->clock_offset = (int64_t)off;
  k->clock_window = r1 - r0;
  k->clock_syncs++;
  rk__unlock(&k->clock_lock);
}

/* What a step of the host clock moves (clock_stepped, rk__clock_guard): the host clock minus the
 * monotonic one, from the accepted exchange's own readings (a step after them is then seen).
 * Release, after clock_request: a sender that loads it with acquire (rk__clock_guard) and finds no
 * step publishes its message after the request that applies the offset measured with it, so a
 * lane that takes the message can find that request (rk_dev_clock_reload). */
static void clock_publish_rm(rk_kernel *k) {
  __atomic_store_n(&k->clock_rm, k->clock_rm_next, __ATOMIC_RELEASE);
  k->clock_guard_after = 0; /* an exchange answered: senders may exchange again at the next step */
}

static void clock_miss(rk_kernel *k) {
  rk__lock(&k->clock_lock);
  k->clock_misses++;
  rk__unlock(&k->clock_lock);
}

static uint64_t clock_interval(const rk_kernel *k) {
  return k->rt->opts.clock_sync_interval_ns ? k->rt->opts.clock_sync_interval_ns : RK_DEFAULT_CLOCK_SYNC_NS;
}

/* An answered exchange not accepted (too slow), kept at launch when it beats the coarse window. */
typedef struct clock_try {
  uint64_t r0, r1, m0, m1, sample;
} clock_try;

/* One exchange with lane 0, waiting up to wait_ns for its answer: accepted (returns 1) when lane 0
 * answered within a window of at most accept_ns, otherwise counted as a miss (returns 0); a slower
 * answer narrower than *best's window replaces it (best may be NULL). The fail point RK__FP_CLOCK
 * makes it miss (a lane 0 that answers too late). */
static int clock_exchange(rk_kernel *k, uint64_t wait_ns, uint64_t accept_ns, clock_try *best) {
  uint64_t start = rk__now_ns(), r0, r1, m1, t, sample;
  uint32_t req;
  int answered = 0, fp = rk__failpoint_hit(RK__FP_CLOCK);
  r0 = rk__host_time_ns(k->rt);
  req = clock_request(k);
  /* Wait for lane 0 on the monotonic clock: spin briefly, then yield, so a lane 0 that shares this
   * CPU can run (the window then says how precise the answer is, and a slow one is dropped). */
  while (!fp) {
    /* pairs with lane 0's store-release of clock_ack, after clock_sample_ns */
    if (rk_load_acquire_sys_u32(&k->lane[0].status->clock_ack) == req) {
      answered = 1;
      break;
    }
    t = rk__now_ns() - start;
    if (t >= wait_ns) break;
    if (t < 10000 && !rk__one_cpu()) rk_cpu_relax(); /* (one CPU: lane 0 runs only if this yields) */
    else sched_yield();
  }
  r1 = rk__host_time_ns(k->rt);
  m1 = rk__now_ns();
  /* r1 < r0: the host clock stepped back during the exchange; its window means nothing */
  if (answered && r1 >= r0) {
    sample = rk_load_relaxed_sys_u64(&k->lane[0].status->clock_sample_ns); /* ordered by the acquire */
    if (r1 - r0 <= accept_ns) {
      clock_accept(k, r0, r1, start, m1, sample);
      /* Lanes that stamp with offset-corrected clocks (CUDA) apply it now; this answer is not
       * waited for. CPU lanes stamp with the host clock: nothing to apply, nobody to wake. */
      if (k->ops->lane_clock_offset) (void)clock_request(k);
      clock_publish_rm(k);
      return 1;
    }
    if (best && r1 - r0 < best->r1 - best->r0) {
      best->r0 = r0;
      best->r1 = r1;
      best->m0 = start;
      best->m1 = m1;
      best->sample = sample;
    }
  }
  clock_miss(k);
  return 0;
}

/* Has the host clock stepped against the monotonic one since the offset in force was measured (an
 * NTP step, settimeofday, a virtual machine's clock set after a pause)? Lanes that stamp with an
 * offset-corrected clock (CUDA) are then off by the step until the next exchange: a step forward
 * beyond the drift bound made them refuse every host stamp (RK_ECLOCK, accepted messages lost) for
 * up to a whole interval (1 s by default). CLOCK_REALTIME and CLOCK_MONOTONIC are slewed alike, so
 * only a step moves their difference; a time_source may drift, so the allowance is
 * RK_CLOCK_STEP_NS plus 500 ppm of the time since the measurement, that part at most
 * RK_CLOCK_SLEW_MAX_NS. *moved: how far (ns). Returns 1 (stepped), 0, or -1 when the reading
 * was split (host_minus_mono). Other kernels' lanes stamp with the host clock itself: nothing to
 * correct (0). Under clock_sync_lock. */
static int clock_stepped(rk_kernel *k, int64_t *moved) {
  uint64_t mono, d, allow;
  if (!k->ops->lane_clock_offset) return 0;
  if (!host_minus_mono(k, &d, &mono)) return -1;
  *moved = (int64_t)(d - k->clock_rm_next);
  allow = (mono - k->clock_rm_at) / 2000;
  allow = RK_CLOCK_STEP_NS + (allow < RK_CLOCK_SLEW_MAX_NS ? allow : RK_CLOCK_SLEW_MAX_NS);
  return *moved < -(int64_t)allow || *moved > (int64_t)allow;
}

void rk__clock_doubt(rk_kernel *k) {
  /* relaxed load and store: a hint that orders nothing (the exchange reads what it needs itself);
   * the load keeps a store off the line while the doubt stands */
  if (k->ops->lane_clock_offset && !__atomic_load_n(&k->clock_doubt, __ATOMIC_RELAXED))
    __atomic_store_n(&k->clock_doubt, 1, __ATOMIC_RELAXED);
}

/* One exchange now, if k's lanes are there to answer (under clock_sync_lock). Returns 1 when one
 * was accepted. urgent (a sender waits, rk__clock_guard_slow): a longer wait for lane 0, and a
 * window up to RK_CLOCK_GUARD_WINDOW_NS taken (its uncertainty goes into the bound, and the
 * service loop narrows it as it narrows a coarse launch calibration). */
static int clock_sync_now(rk_kernel *k, uint64_t now, uint64_t iv, int urgent) {
  uint64_t cur = k->clock_window, retry = iv / 4 < RK_CLOCK_SYNC_RETRY_MAX_NS ? iv / 4 : RK_CLOCK_SYNC_RETRY_MAX_NS;
  uint32_t s = rk_load_acquire_sys_u32(&k->hstate);
  int ok;
  if (rk__kernel_faulted(k)) return 0;
  if (s != RK_STATE_LAUNCHED && s != RK_STATE_ACTIVE && s != RK_STATE_INACTIVE) return 0; /* lanes leaving */
  if (urgent)
    ok = clock_exchange(k, RK_LAUNCH_CLOCK_WAIT_NS, cur > RK_CLOCK_GUARD_WINDOW_NS ? cur - 1 : RK_CLOCK_GUARD_WINDOW_NS, NULL);
  else if (cur <= RK_CLOCK_SYNC_MAX_WINDOW_NS)
    ok = clock_exchange(k, RK_CLOCK_SYNC_WAIT_NS, RK_CLOCK_SYNC_MAX_WINDOW_NS, NULL);
  else /* a coarse calibration in force (a loaded machine): wait a little longer (the service loop
        * does nothing else meanwhile), take any narrower window */
    ok = clock_exchange(k, cur < RK_CLOCK_SYNC_COARSE_WAIT_NS ? cur : RK_CLOCK_SYNC_COARSE_WAIT_NS, cur - 1, NULL);
  /* a miss (lane 0 busy in a long handler, or a slow exchange) is tried again sooner; so is a
   * narrowing that is still coarse (within a quarter interval, at most 250 ms) */
  k->clock_next_ns = add_sat(now, ok && k->clock_window <= RK_CLOCK_SYNC_MAX_WINDOW_NS ? iv : retry);
  /* a narrowing published the previous, wider bound with its offset (clock_accept): the next
   * exchange, soon, publishes the narrow one; until then stamps up to the old bound are admitted
   * (review of clock-calib: a whole interval otherwise) */
  if (ok && k->clock_bound_unc > k->clock_unc && k->clock_next_ns > add_sat(now, RK_CLOCK_SYNC_TIGHTEN_NS))
    k->clock_next_ns = add_sat(now, RK_CLOCK_SYNC_TIGHTEN_NS);
  return ok;
}

/* A step seen (under clock_sync_lock): returns 1 when it is to be said, at most once per
 * RK_CLOCK_STEP_LOG_NS (a time_source that does not run at the monotonic clock's rate is a step
 * on every tick). */
static int clock_step_say(rk_kernel *k, uint64_t now) {
  if (k->clock_step_said != 0 && now - k->clock_step_said < RK_CLOCK_STEP_LOG_NS) return 0;
  k->clock_step_said = now;
  return 1;
}

/* (after clock_sync_lock is released: the log callback is the application's, which may send) */
static void clock_step_log(rk_kernel *k, int64_t moved) {
  rk__log(k->rt, RK_LOG_INFO, "kernel %s: the host clock moved %+lld us against the monotonic clock since the last "
          "clock exchange: exchanging now", k->name, (long long)(moved / 1000));
}

void rk__clock_sync(rk_kernel *k) {
  uint64_t now, iv = clock_interval(k);
  int64_t moved = 0;
  int doubt, due, stepped, say = 0, ok;
  if (iv == UINT64_MAX) return; /* no exchanges at all: the application's choice */
  /* a sender exchanging now (rk__clock_guard_slow): this tick leaves it to them (the service loop
   * serves every kernel; it does not wait) */
  if (rk__trylock(&k->clock_sync_lock) != 0) return;
  now = rk__now_ns();
  /* A doubt (rk__clock_doubt) is acted on once RK_CLOCK_DOUBT_GAP_NS passed since the last exchange
   * a doubt brought (a stamp that is really ahead, a host clock stepped back, keeps raising it: one
   * exchange per gap, not one per tick); it stands until an exchange is accepted. Relaxed: a hint. */
  doubt = __atomic_load_n(&k->clock_doubt, __ATOMIC_RELAXED) && now >= k->clock_doubt_after;
  due = now >= k->clock_next_ns || doubt;
  stepped = !due && clock_stepped(k, &moved) > 0; /* (split: not now) */
  if (due || stepped) {
    if (stepped) say = clock_step_say(k, now);
    ok = clock_sync_now(k, now, iv, 0);
    if (ok && doubt) {
      __atomic_store_n(&k->clock_doubt, 0, __ATOMIC_RELAXED); /* (relaxed: a hint, see above) */
      k->clock_doubt_after = add_sat(now, RK_CLOCK_DOUBT_GAP_NS);
    }
  }
  rk__unlock(&k->clock_sync_lock);
  if (say) clock_step_log(k, moved);
}

/* rk__clock_guard's slow path: the sender's reading says the host clock stepped (or was read
 * apart); if a careful reading agrees (one that a preemption split is taken again; a few splits in
 * a row count as a step), exchange now, before the message goes out, so that the lanes do not
 * refuse its stamp. Up to 4 tries of up to 20 ms each (lane 0 may be busy); when all miss, other
 * senders do not try again for RK_CLOCK_GUARD_BACKOFF_NS (a lane 0 in a long handler cannot answer
 * any of them; the service loop keeps trying every tick). Senders that come meanwhile wait for the
 * lock, then find the step gone. The sender holds the slot it claimed meanwhile: lane 0 answers
 * while it waits for a slot to be published (it polls the control line). A time_source that does
 * not run at the monotonic clock's rate comes here once per RK_CLOCK_GUARD_NS of difference. */
void rk__clock_guard_slow(rk_kernel *k) {
  uint64_t iv = clock_interval(k), now;
  int64_t moved = 0;
  int tries, reads, say = 0, stepped = 0;
  if (iv == UINT64_MAX) return; /* no exchanges at all: the application's choice */
  rk__lock(&k->clock_sync_lock);
  now = rk__now_ns();
  if (now < k->clock_guard_after) goto out;
  for (tries = 0; tries < 4; tries++) {
    for (reads = 0; reads < 8 && (stepped = clock_stepped(k, &moved)) < 0; reads++) continue; /* split: again */
    if (stepped == 0) break; /* a good reading, and no step (8 split ones: taken for a step) */
    if (stepped > 0) say |= clock_step_say(k, now);
    if (clock_sync_now(k, now, iv, 1)) break;
    now = rk__now_ns();
  }
  if (tries == 4) k->clock_guard_after = add_sat(now, RK_CLOCK_GUARD_BACKOFF_NS);
out:
  rk__unlock(&k->clock_sync_lock);
  if (say) clock_step_log(k, moved);
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

int rk__newer_struct_check(rk_runtime *rt, const void *p, size_t known, uint32_t size, const char *what) {
  if (size <= known || rk__struct_tail_zero(p, known, size)) return RK_OK;
  return rk__fail(rt, RK_EINVAL, "%s: .size is %u and fields past this library's %zu bytes are set (built against a "
                  "newer header? this library is %s)", what, size, known, rk_version_string());
}

/* Every refusal names the descriptor field (and launch option) it is about. */
static int check_desc(rk_runtime *rt, const rk_kernel_desc *d) {
  const char *nm = d->name ? d->name : "?";
  uint32_t i;
  int rc;
  char what[96];
  /* Descriptors grow at the end: one compiled against an older header (smaller size, up to
   * n_types) is accepted, and the fields it lacks read as zero. */
  if (d->size < RK_OFFSETOF(rk_kernel_desc, max_lanes))
    return rk__fail(rt, RK_EINVAL, "kernel descriptor: field .size is %u, not sizeof(rk_kernel_desc) (%zu)",
                    d->size, sizeof(rk_kernel_desc));
  /* and one from a newer header: its added fields must be zero (what it asks of them, this library
   * cannot do) */
  snprintf(what, sizeof what, "kernel descriptor %.64s", nm);
  if ((rc = rk__newer_struct_check(rt, d, sizeof(rk_kernel_desc), d->size, what)) != RK_OK) return rc;
  if (d->types == NULL && d->n_types)
    return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: field .n_types is %u but .types is NULL", nm, d->n_types);
  for (i = 0; i < d->n_types; i++)
    if (d->types[i] == NULL || d->types[i]->id == 0)
      return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: field .types[%u] is NULL or has id 0", nm, i);
  if ((unsigned)d->backpressure > RK_BACKPRESSURE_REJECT)
    return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: field .backpressure is %d, not an rk_backpressure", nm,
                    (int)d->backpressure);
  if (d->state_init != NULL && d->state_size == 0)
    return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: field .state_init without .state_size (no state to "
                    "initialise)", nm);
  if (d->source_handler != NULL && d->source == NULL)
    return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: field .source_handler without .source", nm);
  if (d->cuda_image != NULL && d->cuda_entry == NULL)
    return rk__fail(rt, RK_EINVAL, "kernel descriptor %s: field .cuda_image without .cuda_entry", nm);
  return RK_OK;
}

/* The first clock calibration, once every lane checked in. A synchronous exchange, as the service
 * loop's: lanes in LAUNCHED poll the control line on every iteration (a parked CPU lane 0 is
 * woken by the request), so lane 0 answers within microseconds; a few tries, since the first may
 * find a CPU lane 0 still waking up, each waiting up to RK_LAUNCH_CLOCK_WAIT_NS (a loaded
 * machine may not run lane 0 for milliseconds). Only if every try misses, the narrowest answered
 * try, or else the coarse window of the whole start (from before ops->start to now: NVRTC, image
 * load, state copy, launch) is used, with its uncertainty in the lanes' drift bound, and the
 * service loop's first exchange, due at once, refines it. */
static void calibrate_at_launch(rk_kernel *k, uint64_t t_before, uint64_t m_before) {
  uint64_t iv = clock_interval(k), t_after, m_after, sample, widen = rk__failpoint_clock_widen_ns();
  clock_try best = {0, UINT64_MAX, 0, 0, 0};
  int tries, synced = 0;
  for (tries = 0; tries < RK_LAUNCH_CLOCK_TRIES && !synced; tries++)
    synced = clock_exchange(k, RK_LAUNCH_CLOCK_WAIT_NS, RK_CLOCK_SYNC_MAX_WINDOW_NS, &best);
  if (synced) {
    k->clock_next_ns = iv == UINT64_MAX ? UINT64_MAX : add_sat(rk__now_ns(), iv);
    return;
  }
  /* The last clock lane 0 wrote (at check-in, or answering a missed exchange late): taken after
   * t_before and read before t_after, so inside the window either way. Ordered after the acquire
   * of checked_in in wait_lanes. */
  sample = rk_load_relaxed_sys_u64(&k->lane[0].status->clock_sample_ns);
  t_after = rk__host_time_ns(k->rt);
  m_after = rk__now_ns();
  t_before = t_before > widen ? t_before - widen : 0; /* a test's slow start (fail point) */
  m_before = m_before > widen ? m_before - widen : 0;
  if (t_after < t_before) t_after = t_before; /* the host clock stepped back: the midpoint would wrap */
  if (best.r1 - best.r0 < t_after - t_before) /* a slow answer, still narrower than the start */
    clock_accept(k, best.r0, best.r1, best.m0, best.m1, best.sample);
  else
    clock_accept(k, t_before, t_after, m_before, m_after, sample);
  (void)clock_request(k); /* every lane loads the offset before any command reaches it */
  clock_publish_rm(k);
  k->clock_next_ns = iv == UINT64_MAX ? UINT64_MAX : 0;
}

int rk_kernel_launch(rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                     rk_kernel **out) {
  return rk__kernel_launch(rt, desc, opts, NULL, NULL, out);
}

int rk__kernel_launch(rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                      int (*prepare)(rk_kernel *k, void *arg), void *arg, rk_kernel **out) {
  rk_launch_options o = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  rk_handler_fn source_handler = NULL;
  uint32_t i;
  int rc;
  size_t csize;
  uint64_t t_before, m_before;

  if (out) *out = NULL;
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  if (desc == NULL || out == NULL) return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: NULL argument");
  if (opts) {
    if (opts->size < 2 * sizeof(uint32_t))
      return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: launch options size not set");
    if ((rc = rk__newer_struct_check(rt, opts, sizeof o, opts->size, "rk_kernel_launch: launch options")) != RK_OK)
      return rc;
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
  }
  if ((rc = check_desc(rt, desc)) != RK_OK) return rc;
  if (rt->backend == RK_BACKEND_CPU ? (desc->handler == NULL && desc->source == NULL)
                                     : (desc->source == NULL && desc->cuda_entry == NULL))
    return rk__fail(rt, RK_ENOTSUP,
                    "kernel %s has no handler for the %s backend (descriptor fields .handler, .cuda_image with "
                    ".cuda_entry, or .source)", desc->name ? desc->name : "?", rk_backend_name(rt->backend));
  /* CPU: a source is compiled (cached) into the handler. With a compiled handler too, the source is
   * only checked: a source that does not compile is refused on every backend, never ignored; a
   * missing compiler then only costs the check (logged). */
  if (rt->backend == RK_BACKEND_CPU && desc->source != NULL) {
    rc = rk__cc_compile(rt, desc, &source_handler, NULL, 0);
    if (rc == RK_ENOTSUP && desc->handler != NULL) {
      rk__log(rt, RK_LOG_WARN, "kernel %s: its source was not checked (%s); running its compiled handler",
              desc->name ? desc->name : "?", rk_runtime_last_error(rt));
      rk__error_clear(rt);
      source_handler = NULL;
    } else if (rc != RK_OK) {
      return rc;
    }
  }

  if ((unsigned)o.backpressure > RK_BACKPRESSURE_REJECT)
    return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: launch option backpressure is %d, not an rk_backpressure",
                    (int)o.backpressure);
  if ((unsigned)o.fault_policy > RK_FAULT_RESTART)
    return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: unknown fault policy %d", (int)o.fault_policy);
  if (o.restart_flags & ~RK_RESTART_RESET_STATE)
    return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: unknown restart flags 0x%x", o.restart_flags);
  if (o.dead_letters > RK_MAX_DEAD_LETTERS)
    return rk__fail(rt, RK_EINVAL, "rk_kernel_launch: %u dead letters (at most %u)", o.dead_letters,
                    RK_MAX_DEAD_LETTERS);

  k = (rk_kernel *)rk__calloc(1, sizeof *k);
  if (k == NULL) return rk__fail(rt, RK_ENOMEM, "rk_kernel_launch: out of memory");
  k->rt = rt;
  memcpy(&k->desc, desc, desc->size < sizeof k->desc ? desc->size : sizeof k->desc); /* rest: calloc'd zero */
  if (k->desc.handler == NULL) k->desc.handler = source_handler;
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
  k->fault_policy = o.fault_policy ? o.fault_policy : RK_FAULT_STOP;
  k->max_restarts = o.max_restarts ? o.max_restarts : RK_DEFAULT_MAX_RESTARTS;
  k->restart_backoff_ns = o.restart_backoff_ns ? o.restart_backoff_ns : RK_DEFAULT_RESTART_BACKOFF_NS;
  k->restart_flags = o.restart_flags;
  k->dead_cap = o.dead_letters ? o.dead_letters : RK_DEFAULT_DEAD_LETTERS;
  k->thread_refs = 1; /* the host's */
  k->ops = rt->ops;
  uv_mutex_init(&k->ctl_lock);
  uv_mutex_init(&k->fault_lock);
  uv_mutex_init(&k->reply_lock);
  uv_cond_init(&k->reply_cond);
  uv_mutex_init(&k->cb_lock);
  uv_cond_init(&k->cb_cond);
  uv_mutex_init(&k->clock_lock);
  uv_mutex_init(&k->clock_sync_lock);
  uv_mutex_init(&k->dead_lock);

  if (k->lanes == 0 || k->lanes > RK_MAX_LANES || (desc->max_lanes && k->lanes > desc->max_lanes)) {
    rc = rk__fail(rt, RK_EINVAL, "kernel %s: %u lanes (descriptor field .lanes, launch option lanes): 1..%u%s", k->name,
                  k->lanes, desc->max_lanes && desc->max_lanes < RK_MAX_LANES ? desc->max_lanes : RK_MAX_LANES,
                  desc->max_lanes && desc->max_lanes < RK_MAX_LANES ? " (field .max_lanes)" : "");
    goto fail_early;
  }
  if (k->threads == 0 || k->threads > 1024) {
    rc = rk__fail(rt, RK_EINVAL, "kernel %s: %u threads per lane (descriptor field .threads_per_lane, launch option "
                  "threads_per_lane): 1..1024", k->name, k->threads);
    goto fail_early;
  }
  if (k->slot_size < RK_RING_ENVELOPE_SLOT || /* the ring's 16 bytes and an envelope */
      rk_ring_check_geometry(k->inbox_cap, k->slot_size, RK_RING_MPSC) != RK_OK ||
      rk_ring_check_geometry(k->outbox_cap, k->slot_size, RK_RING_SPSC) != RK_OK) {
    rc = rk__fail(rt, RK_EINVAL,
                  "kernel %s: bad ring geometry (fields .inbox_capacity %u and .outbox_capacity %u, or the launch "
                  "options of those names, must be powers of two; .slot_size %u must be a multiple of 64, at least "
                  "128)", k->name, k->inbox_cap, k->outbox_cap, k->slot_size);
    goto fail_early;
  }
  for (i = 0; i < desc->n_types; i++)
    if (desc->types[i]->size > rk__payload_max(k)) {
      rc = rk__fail(rt, RK_EMSGSIZE, "kernel %s: message type %s (field .types[%u], %u bytes) does not fit a %u-byte "
                    "slot (field .slot_size, launch option slot_size)", k->name,
                    desc->types[i]->name ? desc->types[i]->name : "?", i, desc->types[i]->size, k->slot_size);
      goto fail_early;
    }

  k->id = __atomic_add_fetch(&rt->next_kernel_id, 1, __ATOMIC_RELAXED);
  if ((rc = rk_clock_create(&k->clock, k->id, rt->opts.max_offset_us)) != RK_OK) {
    rc = rk__fail(rt, rc, "kernel %s: cannot create its clock", k->name);
    goto fail_early;
  }
  if (rt->opts.time_source) (void)rk_clock_set_time_source(k->clock, rt->opts.time_source, rt->opts.time_user);
  if ((k->dead = (rk_dead_letter *)rk__calloc(k->dead_cap, sizeof *k->dead)) == NULL) {
    rc = rk__fail(rt, RK_ENOMEM, "kernel %s: cannot allocate %u dead letters", k->name, k->dead_cap);
    goto fail_early;
  }
  if (desc->state_size) {
    k->state = rk__calloc(1, desc->state_size);
    if (k->state == NULL) {
      rc = rk__fail(rt, RK_ENOMEM, "kernel %s: cannot allocate %zu bytes of state (field .state_size)", k->name,
                    desc->state_size);
      goto fail_early;
    }
    if (desc->state_init && (rc = desc->state_init(k->state, desc->state_size, desc->state_init_user)) != RK_OK) {
      rc = rk__fail(rt, rc < 0 ? rc : RK_EINVAL, "kernel %s: state initialiser (field .state_init) failed: %d", k->name,
                    rc);
      goto fail_early;
    }
  }
  /* Control block and rings in the backend's shared memory (the heap, or the pinned mapped arena),
   * each kind of ring in one block so a device lane finds its ring at base + lane * stride. */
  csize = rk_control_size(k->lanes);
  k->ctl_bytes = csize;
  k->inbox_stride = (rk_ring_memsize(k->inbox_cap, k->slot_size, RK_RING_MPSC) + RK_LINE - 1) & ~(size_t)(RK_LINE - 1);
  k->outbox_stride = (rk_ring_memsize(k->outbox_cap, k->slot_size, RK_RING_SPSC) + RK_LINE - 1) & ~(size_t)(RK_LINE - 1);
  k->lane = (rk__lane *)rk__calloc(k->lanes, sizeof *k->lane);
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
    l->drain_lock = 0; /* free (rk__flag_trylock) */
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
    if (desc->scratch_size && (l->scratch = rk__calloc(1, desc->scratch_size)) == NULL) {
      rc = rk__fail(rt, RK_ENOMEM, "kernel %s: cannot allocate %zu bytes of scratch (field .scratch_size)", k->name,
                    desc->scratch_size);
      goto fail_early;
    }
  }
  /* what the caller attaches before any lane runs (rk_graph_launch: K2K inboxes and routes) */
  if (prepare && (rc = prepare(k, arg)) != RK_OK) goto fail_early;
  set_hstate(k, RK_STATE_LAUNCHED);

  t_before = rk__host_time_ns(rt);
  m_before = rk__now_ns();
  rc = k->ops->start(k);
  if (rc == RK_OK) {
    /* Co-residency is proven, not computed: every lane must check in (ARCHITECTURE §8). A kernel
     * that faults meanwhile (a CUDA error at start) ends the wait with its own code and message. */
    rc = wait_lanes(k, lane_checked_in, 0, k->launch_timeout_ns, 1);
    if (rc != RK_OK && fault_of(k) != 0) {
      char why[sizeof k->fault_msg];
      rk__kernel_fault_msg(k, why, sizeof why);
      rc = rk__fail(rt, fault_of(k), "kernel %s: faulted while its lanes checked in: %s", k->name, why);
    } else if (rc != RK_OK)
      rc = rk__fail(rt, RK_ENORESOURCE, "kernel %s: not every lane checked in within %llu ms", k->name,
                    (unsigned long long)(k->launch_timeout_ns / 1000000));
    else
      calibrate_at_launch(k, t_before, m_before);
  }
  if (rc != RK_OK) {
    abort_lanes(k);
    (void)join_lanes(k); /* not confirmed: the control block and rings are kept */
    goto fail_early;
  }

  rk__lock(&rt->lock);
  k->next = rt->kernels;
  rt->kernels = k;
  rk__unlock(&rt->lock);
  rk__log(rt, RK_LOG_INFO, "kernel %s (id %u) launched: %u lanes x %u threads, slots %u x %u B", k->name, k->id,
          k->lanes, k->threads, k->inbox_cap, k->slot_size);
  *out = k;
  return RK_OK;

fail_early:
  rk__kernel_free(k);
  return rc;
}

int rk_kernel_compile(rk_runtime *rt, const rk_kernel_desc *desc, char *log, size_t log_len) {
  rk_handler_fn fn;
  int rc;
  if (log && log_len) log[0] = '\0';
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  if (desc == NULL) return rk__fail(rt, RK_EINVAL, "rk_kernel_compile: NULL descriptor");
  if (log == NULL && log_len > 0) return rk__fail(rt, RK_EINVAL, "rk_kernel_compile: NULL log with log_len > 0");
  if ((rc = check_desc(rt, desc)) != RK_OK) return rc;
  if (desc->source == NULL)
    return rk__fail(rt, RK_EINVAL, "kernel %s: nothing to compile (descriptor field .source is NULL)",
                    desc->name ? desc->name : "?");
  if (desc->source_handler == NULL)
    return rk__fail(rt, RK_EINVAL, "kernel %s: descriptor field .source without .source_handler",
                    desc->name ? desc->name : "?");
  if (rt->backend == RK_BACKEND_CUDA) return rk__cuda_compile(rt, desc, log, log_len);
  return rk__cc_compile(rt, desc, &fn, log, log_len);
}

/* ---------------------------------------- lifecycle ------------------------------------------ */

static int transition(rk_kernel *k, uint32_t cmd, const char *what) {
  uint32_t s;
  int rc;
  uint64_t timeout;
  char why[sizeof k->fault_msg];
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  rk__lock(&k->ctl_lock);
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (rk__kernel_faulted(k)) s = RK_STATE_FAULTED;
  if ((cmd == RK_CMD_ACTIVATE && s != RK_STATE_LAUNCHED && s != RK_STATE_INACTIVE) ||
      (cmd == RK_CMD_DEACTIVATE && s != RK_STATE_ACTIVE)) {
    rc = rk__fail(k->rt, RK_ESTATE, "kernel %s: cannot %s in state %s", k->name, what, rk_state_name((rk_lifecycle)s));
    rk__unlock(&k->ctl_lock);
    return rc;
  }
  timeout = k->rt->opts.command_timeout_ns ? k->rt->opts.command_timeout_ns : RK_COMMAND_TIMEOUT_NS;
  rc = command(k, cmd, timeout);
  if (rc == RK_OK) {
    set_hstate(k, cmd == RK_CMD_ACTIVATE ? RK_STATE_ACTIVE : RK_STATE_INACTIVE);
  } else if (rc == RK_ECUDA) { /* the lanes died meanwhile */
    rk__kernel_fault_msg(k, why, sizeof why);
    rc = rk__fail(k->rt, rc, "kernel %s: cannot %s: %s", k->name, what, why);
  } else {
    rk__kernel_fault(k, RK_ETIMEDOUT, "a lane did not acknowledge %s within %llu ms", what,
                     (unsigned long long)(timeout / 1000000));
    rc = rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: a lane did not acknowledge %s within %llu ms (rk_runtime_options "
                  "command_timeout_ns)", k->name, what, (unsigned long long)(timeout / 1000000));
  }
  rk__unlock(&k->ctl_lock);
  return rc;
}

int rk_kernel_activate(rk_kernel *k) { return transition(k, RK_CMD_ACTIVATE, "activate"); }
int rk_kernel_deactivate(rk_kernel *k) { return transition(k, RK_CMD_DEACTIVATE, "deactivate"); }

/* Every lane has exited, or is dead (ctl_lock held): reclaim the lanes and release blocked
 * senders. The host is done with the kernel either way: it is TERMINATED, no longer FAULTED (its
 * fault stays readable). When the backend cannot confirm the exit, the memory the lanes address is
 * kept (join_lanes) and RK_ETIMEDOUT returned. */
static int finish_terminate(rk_kernel *k) {
  uint32_t i;
  int rc = join_lanes(k);
  for (i = 0; i < k->lanes; i++) rk_ring_wake_all(k->lane[i].inbox); /* blocked senders: ECLOSED */
  rk__k2k_close(k); /* K2K senders too (a lane that drained closed its own already) */
  set_hstate(k, RK_STATE_TERMINATED);
  clear_fault(k);
  if (rc != RK_OK)
    rc = rk__fail(k->rt, rc, "kernel %s: the lanes' exit was not confirmed; their control block and rings are kept",
                  k->name);
  return rc;
}

/* Messages accepted before terminate that no lane took: lanes that had stopped on a fault (a
 * broken collective rule) left them. After every lane reported TERMINATED. */
static uint64_t undrained(rk_kernel *k) {
  uint64_t n = 0;
  uint32_t i;
  for (i = 0; i < k->lanes; i++) {
    uint64_t to = rk_load_relaxed_sys_u64(&k->lane[i].cmd->drain_to); /* our own word */
    uint64_t head = rk_ring_head(k->lane[i].inbox); /* acquire: pairs with the lane's release */
    if ((int64_t)(to - head) > 0) n += to - head;
  }
  return n;
}

int rk__kernel_sync(rk_kernel *w, uint64_t deadline) {
  int rc;
  for (;;) {
    uint32_t s = rk_load_acquire_sys_u32(&w->hstate);
    if (s == RK_STATE_TERMINATED || lanes_dead(w)) return RK_OK; /* its lanes write nothing any more */
    if (rk__trylock(&w->ctl_lock) == 0) break;
    /* its terminate holds the lock and waits to synchronise with kernels of our device: two staged
     * kernels writing each other, terminated at once by two threads; neither waits (acquire: pairs
     * with the release that raised the flag) */
    if (__atomic_load_n(&w->staged_syncing, __ATOMIC_ACQUIRE)) return RK_EDEADLK;
    if (rk__now_ns() >= deadline) return RK_ETIMEDOUT;
    rk__sleep_ns(20000);
  }
  rc = rk_load_acquire_sys_u32(&w->hstate) == RK_STATE_TERMINATED || lanes_dead(w)
           ? RK_OK
           : command(w, RK_CMD_SYNC, left_until(deadline));
  rk__unlock(&w->ctl_lock);
  return rc == RK_ECUDA ? RK_OK : rc; /* (dead lanes: as above) */
}

/* A terminate that gave up on lanes still running (TERMINATING, aborted) is called again: wait
 * for them once more, until the deadline. ctl_lock held. */
static int terminate_again(rk_kernel *k, uint64_t deadline) {
  int rc = wait_lanes(k, lane_terminated, 0, left_until(deadline), 0);
  if (rc != RK_OK && rc != RK_ECUDA)
    return rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: terminate timed out; lanes still running (a handler that "
                    "does not return)", k->name);
  rc = finish_terminate(k);
  return rc;
}

int rk_kernel_terminate(rk_kernel *k, int64_t timeout_ns) {
  uint32_t s, i;
  int rc;
  uint64_t deadline, left;
  char why[sizeof k->fault_msg];
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  /* One deadline for the whole call: the command's acknowledgement and the drain share it. */
  deadline = timeout_ns < 0 ? UINT64_MAX : add_sat(rk__now_ns(), (uint64_t)timeout_ns);
  /* ctl_lock within the deadline too: an activate or deactivate waiting for a lane inside a long
   * handler, or a restart, may hold it for seconds (the wait for it was not bounded) */
  if (deadline == UINT64_MAX) {
    rk__lock(&k->ctl_lock);
  } else {
    uint32_t tries = 0;
    while (rk__trylock(&k->ctl_lock) != 0) {
      if (rk__now_ns() >= deadline)
        return rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: terminate timed out waiting for another lifecycle call on "
                        "it (activate, deactivate, restart, terminate) to finish; nothing was closed", k->name);
      if (++tries < 64 && !rk__one_cpu())
        rk_cpu_relax();
      else
        rk__sleep_ns(tries < 1000 ? 20000 : 200000);
    }
  }
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (s == RK_STATE_TERMINATED) {
    rc = rk__fail(k->rt, RK_ESTATE, "kernel %s: already %s", k->name, rk_state_name((rk_lifecycle)s));
    rk__unlock(&k->ctl_lock);
    return rc;
  }
  if (s == RK_STATE_TERMINATING) {
    rc = terminate_again(k, deadline);
    rk__unlock(&k->ctl_lock);
    wake_waiters(k);
    return rc;
  }
  set_hstate(k, RK_STATE_TERMINATING);
  /* Close every inbox: the claim word's final value is the drain target, so everything accepted
   * before this point will be processed and nothing after it can be accepted. */
  for (i = 0; i < k->lanes; i++) {
    uint64_t fin = 0;
    rk_ring_close(k->lane[i].inbox, &fin);
    rk_store_relaxed_sys_u64(&k->lane[i].cmd->drain_to, fin); /* published by cmd's release (command) */
  }
  /* Dead lanes (a sticky CUDA error, before or during the command) acknowledge nothing: join them
   * directly (their stream reports the error, which counts as exited). */
  rc = lanes_dead(k) ? RK_ECUDA : command(k, RK_CMD_TERMINATE, left_until(deadline));
  if (rc == RK_OK) rc = rk__k2k_staged_close(k, deadline); /* a staged K2K inbox: its close waits for its writers */
  if (rc == RK_OK) rc = wait_lanes(k, lane_terminated, 0, left_until(deadline), 0);
  if (rc != RK_OK && rc != RK_ECUDA) {
    /* The timeout is spent: abort, and give the lanes a short, fixed grace to leave. */
    abort_lanes(k);
    rc = wait_lanes(k, lane_terminated, 0, RK__ABORT_GRACE_NS, 0);
    if (rc != RK_OK && rc != RK_ECUDA) {
      /* A handler that does not return: its thread cannot be joined. Keep everything allocated;
       * a later terminate waits again, destroy abandons the lanes. */
      rk__kernel_fault(k, RK_ETIMEDOUT, "terminate: lanes still running %llu ms after the abort",
                       (unsigned long long)(RK__ABORT_GRACE_NS / 1000000));
      rc = rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: terminate timed out; lanes still running", k->name);
      rk__k2k_close(k); /* nothing sent to it now would be handled */
      rk__unlock(&k->ctl_lock);
      wake_waiters(k);
      return rc;
    }
    /* Left: only when something was (a timeout of 0, or one shorter than the lanes' answer, on a
     * kernel with nothing to drain was reported as a drain cut short). A K2K inbox is not counted
     * by undrained(): a graph's kernel is reported as before. */
    if (rc == RK_OK && (undrained(k) != 0 || k->graph != NULL)) {
      left = timeout_ns < 0 ? 0 : (uint64_t)timeout_ns;
      rc = rk__fail(k->rt, RK_ETIMEDOUT, "kernel %s: terminate timed out after %llu ms before the inbox drained; "
                    "aborted", k->name, (unsigned long long)(left / 1000000));
    }
  }
  if (rc == RK_ECUDA) { /* terminated, but what the inboxes held was never processed */
    rk__kernel_fault_msg(k, why, sizeof why);
    rc = rk__fail(k->rt, RK_ECUDA, "kernel %s: lanes dead after a CUDA error (first fault: %s); terminated without "
                  "draining", k->name, why);
  } else if (rc == RK_OK && undrained(k) != 0) {
    int code = __atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE);
    rk__kernel_fault_msg(k, why, sizeof why);
    rc = rk__fail(k->rt, code ? code : RK_ESTATE, "kernel %s: terminated without processing %llu accepted "
                  "messages: its lanes had stopped (%s)", k->name, (unsigned long long)undrained(k), why);
  }
  if (finish_terminate(k) != RK_OK) rc = RK_ETIMEDOUT;
  rk__unlock(&k->ctl_lock);
  wake_waiters(k);
  return rc;
}

/* The host gives up on k's lanes (they did not stop): k leaves the runtime's list and is leaked
 * to its lanes; the backend reclaims it when they leave (CPU: the last lane thread frees it; CUDA:
 * a zombie). */
static void abandon(rk_kernel *k) {
  rk_runtime *rt = k->rt;
  rk__log(rt, RK_LOG_ERROR, "kernel %s: lanes did not stop; abandoned (its memory is kept until they leave)",
          k->name);
  if (k->ops->abandon) k->ops->abandon(k);
}

static void unlink_kernel(rk_kernel *k) {
  rk_runtime *rt = k->rt;
  rk_kernel **pp;
  rk__lock(&rt->lock);
  for (pp = &rt->kernels; *pp; pp = &(*pp)->next)
    if (*pp == k) {
      *pp = k->next;
      break;
    }
  rk__unlock(&rt->lock);
  /* The service thread may be in a pass over this kernel: wait for it to leave. When this is the
   * service thread (a callback of another kernel), its own passes let k go first. */
  rk__for_each_release(k);
  while (__atomic_load_n(&k->refs, __ATOMIC_ACQUIRE) != 0) rk__sleep_ns(50000); /* pairs with for_each_kernel */
}

void rk_kernel_destroy(rk_kernel *k) {
  if (k == NULL) return;
  if (k->graph) { /* other kernels of the graph may still send to its K2K inboxes */
    rk__log(k->rt, RK_LOG_ERROR, "rk_kernel_destroy: kernel %s belongs to a graph: rk_graph_destroy destroys it",
            k->name);
    return;
  }
  rk__kernel_destroy_member(k);
}

/* A graph's kernel leaves the runtime without being freed: rk_graph_destroy, when lanes of the
 * graph that did not stop may still send to it (its K2K inboxes, its fields). */
void rk__kernel_leak(rk_kernel *k) {
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE)) rk_recv_stop(k); /* pairs with rk_recv_start */
  unlink_kernel(k);
}

void rk__kernel_destroy_member(rk_kernel *k) {
  uint32_t s;
  if (__atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE)) rk_recv_stop(k); /* pairs with rk_recv_start */
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (s == RK_STATE_TERMINATING) {
    /* An earlier terminate timed out with a lane still inside its handler and told the lanes to
     * abort; they exit when the handler returns. Its timeout was spent: one more grace, then the
     * lanes are abandoned. */
    rk__lock(&k->ctl_lock);
    if (rk_load_acquire_sys_u32(&k->hstate) == RK_STATE_TERMINATING) {
      int rc = wait_lanes(k, lane_terminated, 0, RK__ABORT_GRACE_NS, 0);
      if (rc == RK_OK || rc == RK_ECUDA) (void)finish_terminate(k); /* exited, or dead */
    }
    rk__unlock(&k->ctl_lock);
    wake_waiters(k);
  } else if (s != RK_STATE_TERMINATED) {
    (void)rk_kernel_terminate(k, 1000000000ll);
  }
  unlink_kernel(k);
  if (rk_load_acquire_sys_u32(&k->hstate) != RK_STATE_TERMINATED) {
    abandon(k);
    return;
  }
  rk__kernel_free(k);
}

/* ---------------------------------------- restart -------------------------------------------- */

/* A fresh state for a restart that asked for one: zeroed, then the descriptor's initialiser (the
 * application's code: called with no lock held). *out NULL when the kernel has no state. */
static int fresh_state(rk_kernel *k, void **out) {
  void *st;
  int rc;
  *out = NULL;
  if (k->desc.state_size == 0) return RK_OK;
  if ((st = rk__calloc(1, k->desc.state_size)) == NULL)
    return rk__fail(k->rt, RK_ENOMEM, "kernel %s: cannot allocate %zu bytes of state", k->name, k->desc.state_size);
  if (k->desc.state_init && (rc = k->desc.state_init(st, k->desc.state_size, k->desc.state_init_user)) != RK_OK) {
    free(st);
    return rk__fail(k->rt, rc < 0 ? rc : RK_EINVAL, "kernel %s: state initialiser failed", k->name);
  }
  *out = st;
  return RK_OK;
}

/* Restart k's lanes (ctl_lock held): abort the old ones, wait up to wait_ns for them to leave,
 * join them, reset what the new lanes start from, start them, wait for them to check in and to
 * take the kernel back to its state before the fault. new_state (may be NULL) replaces the state. */
static int restart_locked(rk_kernel *k, void *new_state, uint64_t wait_ns) {
  uint32_t s = rk_load_acquire_sys_u32(&k->hstate), i, seq;
  int rc;
  if (!rk__kernel_faulted(k) || s == RK_STATE_TERMINATING || s == RK_STATE_TERMINATED)
    return rk__fail(k->rt, RK_ESTATE, "kernel %s: cannot restart in state %s", k->name,
                    rk_state_name(rk_kernel_state(k)));
  if (lanes_dead(k))
    return rk__fail(k->rt, RK_ECUDA, "kernel %s: a hard CUDA fault is sticky for the process: terminate the kernel",
                    k->name);
  if (!k->ops->restartable)
    return rk__fail(k->rt, RK_ENOTSUP, "kernel %s: the %s backend cannot restart lanes", k->name, k->ops->name);
  abort_lanes(k);
  rc = wait_lanes(k, lane_terminated, 0, wait_ns, 0);
  if (rc != RK_OK)
    return rk__fail(k->rt, rc == RK_ECUDA ? RK_ECUDA : RK_ETIMEDOUT,
                    "kernel %s: restart: the old lanes did not leave (a handler that has not returned)", k->name);
  if ((rc = join_lanes(k)) != RK_OK) return rk__fail(k->rt, rc, "kernel %s: restart: the old lanes' exit was not confirmed", k->name);
  /* Nothing runs on k's rings now: the host may write the lanes' words. The inboxes keep what the
   * old lanes did not take (their head is where the new lanes start: nothing is delivered twice);
   * the outboxes, closed by the old lanes when they left, open again. The command the new lanes
   * apply first takes them to the kernel's state. */
  if (new_state) memcpy(k->state, new_state, k->desc.state_size);
  for (i = 0; i < k->lanes; i++) {
    rk__lane *l = &k->lane[i];
    rk_store_release_dev_u64(&l->outbox->claim, 0); /* ordered before the new lanes by their creation */
    /* (state stays TERMINATED until a new lane writes its own, before it checks in: a lane that
     * could not be started is not waited for by the next attempt) */
    rk_store_relaxed_sys_u32(&l->status->checked_in, 0);
    __atomic_store_n(&l->wd_changed_ns, 0, __ATOMIC_RELAXED); /* the watchdog's stall clock starts afresh */
  }
  s = rk_load_acquire_sys_u32(&k->hstate);
  seq = ++k->cmd_seq;
  rk_store_release_sys_u32(&k->ctl->host.cmd, s == RK_STATE_ACTIVE ? RK_CMD_ACTIVATE : RK_CMD_NONE);
  rk_store_release_sys_u32(&k->ctl->host.cmd_seq, seq); /* pairs with the lanes' acquire */
  (void)rk_host_fetch_and_release_u64(&k->ctl->host.signals, ~RK_SIGNAL_ABORT); /* pairs with the lanes' acquire */
  rc = k->ops->start(k);
  if (rc == RK_OK) rc = wait_lanes(k, lane_checked_in, 0, k->launch_timeout_ns, 0);
  if (rc == RK_OK) rc = wait_lanes(k, lane_acked, seq, k->launch_timeout_ns, 0);
  if (rc != RK_OK) {
    char why[256]; /* the start's own detail (a thread that could not be made, its errno), kept */
    snprintf(why, sizeof why, "%s",
             rc == RK_ETIMEDOUT ? "they did not check in within the launch timeout" : rk_runtime_last_error(k->rt));
    abort_lanes(k);
    (void)join_lanes(k);
    return rk__fail(k->rt, rc == RK_ETIMEDOUT ? RK_ENORESOURCE : rc,
                    "kernel %s: restart: the new lanes did not start (%s); the kernel stays FAULTED", k->name, why);
  }
  __atomic_add_fetch(&k->restarts, 1, __ATOMIC_RELAXED); /* statistics */
  clear_fault(k);
  wake_lanes(k);
  rk__log(k->rt, RK_LOG_WARN, "kernel %s restarted (%s)", k->name, rk_state_name((rk_lifecycle)s));
  return RK_OK;
}

int rk_kernel_read_state(rk_kernel *k, void *buf, size_t len) {
  size_t n;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (buf == NULL && len > 0) return rk__fail(k->rt, RK_EINVAL, "rk_kernel_read_state: NULL buffer");
  /* acquire: pairs with finish_terminate's release of the state, after the lanes were joined */
  if (rk_load_acquire_sys_u32(&k->hstate) != RK_STATE_TERMINATED)
    return rk__fail(k->rt, RK_ESTATE, "kernel %s: its state is read once it is TERMINATED (now %s)", k->name,
                    rk_state_name(rk_kernel_state(k)));
  n = k->desc.state_size < len ? k->desc.state_size : len;
  if (n) memcpy(buf, k->state, n);
  if (n > INT32_MAX) n = INT32_MAX;
  return (int)n;
}

int rk_kernel_restart(rk_kernel *k, uint32_t flags) {
  void *st = NULL;
  int rc;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (flags & ~RK_RESTART_RESET_STATE) return rk__fail(k->rt, RK_EINVAL, "rk_kernel_restart: unknown flags 0x%x", flags);
  if (!rk__kernel_faulted(k))
    return rk__fail(k->rt, RK_ESTATE, "kernel %s: cannot restart in state %s", k->name,
                    rk_state_name(rk_kernel_state(k)));
  if ((flags & RK_RESTART_RESET_STATE) && (rc = fresh_state(k, &st)) != RK_OK) return rc;
  rk__lock(&k->ctl_lock);
  rc = restart_locked(k, st, k->launch_timeout_ns);
  rk__unlock(&k->ctl_lock);
  free(st);
  return rc;
}

void rk__kernel_fault_service(rk_kernel *k) {
  uint64_t now, due;
  uint32_t n, s;
  void *st = NULL;
  if (!rk__kernel_faulted(k)) return;
  if (k->fault_policy == RK_FAULT_RECOVER) {
    /* A stall the lane recovers from: its heartbeat moved since the watchdog faulted it. */
    int recovered = 0;
    rk__lock(&k->fault_lock);
    if (k->fault_soft && __atomic_load_n(&k->faulted, __ATOMIC_RELAXED) &&
        rk_load_relaxed_sys_u64(&k->lane[k->stall_lane].status->heartbeat) != k->stall_heartbeat) {
      __atomic_store_n(&k->faulted, 0, __ATOMIC_RELEASE); /* pairs with rk__kernel_faulted */
      recovered = 1;
    }
    rk__unlock(&k->fault_lock);
    if (recovered) {
      __atomic_add_fetch(&k->recoveries, 1, __ATOMIC_RELAXED); /* statistics */
      for (n = 0; n < k->lanes; n++) __atomic_store_n(&k->lane[n].wd_changed_ns, 0, __ATOMIC_RELAXED);
      rk__log(k->rt, RK_LOG_WARN, "kernel %s recovered: its stalled lane made progress again", k->name);
    }
    return;
  }
  if (k->fault_policy != RK_FAULT_RESTART || lanes_dead(k)) return;
  /* Automatic restart, due restart_backoff_ns << (restarts so far) after the fault. Never blocks
   * the loop: a terminate in progress holds ctl_lock (try later); lanes that have not left yet
   * (a handler still running) are waited for on later ticks, not here. */
  rk__lock(&k->fault_lock);
  due = add_sat(k->fault_ns, k->auto_restarts < 63 && k->restart_backoff_ns <= UINT64_MAX >> k->auto_restarts
                                ? k->restart_backoff_ns << k->auto_restarts
                                : UINT64_MAX); /* (saturating: a large max_restarts) */
  rk__unlock(&k->fault_lock);
  now = rk__now_ns();
  if (k->auto_restarts >= k->max_restarts || now < due) return;
  /* The abort under ctl_lock (tried: never blocks the loop), after the state is checked there: a
   * terminate or an rk_kernel_restart of another thread holds it while it runs, and an abort
   * between a check outside the lock and its own lanes' start hit those new lanes (a restart
   * reported RK_OK with no lane running, a terminate's drain was cut short). */
  if (rk__trylock(&k->ctl_lock) != 0) return; /* a lifecycle call has it: the next tick */
  s = rk_load_acquire_sys_u32(&k->hstate);
  if (!rk__kernel_faulted(k) || s == RK_STATE_TERMINATING || s == RK_STATE_TERMINATED) {
    rk__unlock(&k->ctl_lock); /* restarted meanwhile, or terminate has it */
    return;
  }
  abort_lanes(k); /* idempotent: lanes leave as soon as their handlers return */
  n = wait_lanes(k, lane_terminated, 0, 0, 0) == RK_OK;
  rk__unlock(&k->ctl_lock);
  if (!n) return;
  /* (the state initialiser is the application's code: not under a lock of the library's) */
  if ((k->restart_flags & RK_RESTART_RESET_STATE) && fresh_state(k, &st) != RK_OK) return;
  if (rk__trylock(&k->ctl_lock) == 0) {
    s = rk_load_acquire_sys_u32(&k->hstate);
    /* still faulted, not terminating, and no lane started since (a restart of another thread in
     * between cleared the fault; its lanes are not TERMINATED) */
    if (rk__kernel_faulted(k) && s != RK_STATE_TERMINATING && s != RK_STATE_TERMINATED &&
        wait_lanes(k, lane_terminated, 0, 0, 0) == RK_OK) {
      k->auto_restarts++;
      if (restart_locked(k, st, 0) != RK_OK)
        rk__log(k->rt, RK_LOG_ERROR, "kernel %s: automatic restart %u of %u failed: %s", k->name, k->auto_restarts,
                k->max_restarts, rk_runtime_last_error(k->rt));
    }
    rk__unlock(&k->ctl_lock);
  }
  free(st);
}
