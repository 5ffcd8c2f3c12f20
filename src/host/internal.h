/* host/internal.h — the runtime's and kernels' internal structures, shared by the host files
 * (runtime.c, kernel.c, messaging.c, cpu_backend.c, telemetry.c). Not installed. */
#ifndef RK_HOST_INTERNAL_H
#define RK_HOST_INTERNAL_H

#include <stdarg.h>
#include <uv.h>

#include "hlc/internal.h"
#include "host/failpoint.h"
#include "queue/internal.h"
#include "ringkernel.h"
#include "ringkernel/internals.h"

/* Bit 63 of a message id marks an rk_call request: a reply to it that finds no waiter is late
 * (its caller timed out) and is discarded and counted, never handed to rk_recv. */
#define RK__CALL_BIT (1ull << 63)

#define RK__LOG_LINE 512   /* longest log line */
#define RK__LOG_LIMITS 16  /* format strings the log's rate limit tracks per runtime */
/* Terminate tells the lanes to abort when its timeout is spent and waits this long for them to
 * leave: terminate returns within its timeout plus this (documented in runtime.h). */
#define RK__ABORT_GRACE_NS 100000000ull

typedef struct rk__lane rk__lane;

/* The CPU backend's barrier of a lane of several threads (cpu_backend.c). Unlike a plain barrier
 * it can be broken: the lane's leader breaks it when it leaves, so threads that wait at a barrier
 * the others will never reach (a handler that broke the collective rule) return and exit instead
 * of hanging the lane's exit. Each arrival names its collective; arrivals of one generation that
 * name different ones are a broken collective rule: the kernel faults, saying which. */
typedef struct rk__lane_barrier {
  uv_mutex_t lock;
  uv_cond_t cond;
  uint32_t n, arrived, generation;
  uint32_t alive;        /* the lane's threads started and not yet done with the lane */
  int broken;            /* every wait returns at once */
  int site, site_thread; /* the collective the first arrival of this generation called, and its thread */
  int ready;             /* lock and cond initialised */
} rk__lane_barrier;
typedef struct rk_waiter rk_waiter;
typedef struct rk_pending rk_pending;

/* Backend operations: how lanes run. The control-block protocol, rings and dispatch rules are
 * shared; a backend only starts the lanes, tells when they exited and releases them. */
typedef struct rk_backend_ops {
  const char *name;
  /* memory that both the host and the lanes address: rings and control blocks (zeroed, 128-byte
   * aligned; host addresses). CPU: the heap. CUDA: the pinned, mapped arena. */
  void *(*alloc)(rk_runtime *rt, size_t n);
  void (*free)(rk_runtime *rt, void *p, size_t n);
  int (*start)(rk_kernel *k);   /* start every lane; lanes check in through the control block */
  /* After every lane reported TERMINATED, or after an abort: reclaim the lanes. RK_OK: their exit
   * is confirmed and the backend's own resources for k are released. RK_ETIMEDOUT: the exit is not
   * confirmed (a kernel that may still run, or whose queued blocks may start later); the backend
   * keeps what it owns for k until it can tell, and the caller keeps k's control block and rings
   * (k->shared_kept), which such lanes may still read and write, for the runtime's life. */
  int (*join)(rk_kernel *k);
  /* the lanes stamp with a clock of their own plus the offset the host measures (CUDA); 0: with
   * the host clock itself (CPU), so a new offset needs no second request to apply it */
  int lane_clock_offset;
  /* May be NULL. The host gives up on k's lanes for good (they did not stop, join will never be
   * called, k and its shared memory are leaked, never freed): the backend stops referring to k
   * and reclaims what it owns for k by itself once the lanes really exit (CUDA: a zombie). */
  void (*abandon)(rk_kernel *k);
  /* rk_kernel_restart can start new lanes on k's rings after join confirmed the old ones exited */
  int restartable;
  /* K2K on a device backend (graph.c): memory the lanes address and the host may not (CUDA: the
   * device arena). NULL on the CPU backend, and where the backend has none (rk_graph_launch then
   * says RK_ENOTSUP). dev_alloc: 128-byte aligned, contents undefined (the caller writes whatever
   * the lanes read), the lanes' address in *addr (any time: no CUDA allocation call); dev_write: n bytes from host memory, done when it returns (allowed
   * while ring kernels are resident); dev_store64 / dev_load64: one word, relaxed, atomic with
   * respect to the lanes' accesses. */
  int (*dev_alloc)(rk_runtime *rt, size_t n, uint64_t *addr);
  void (*dev_free)(rk_runtime *rt, uint64_t addr, size_t n);
  int (*dev_write)(rk_runtime *rt, uint64_t addr, const void *src, size_t n);
  int (*dev_store64)(rk_runtime *rt, uint64_t addr, uint64_t v);
  int (*dev_load64)(rk_runtime *rt, uint64_t addr, uint64_t *v);
  /* K2K between devices of one process (graph.c, rk_graph_add_on). dev_peer: 1 when the lanes of
   * from's device can read, write and compare-and-swap in to's device memory (CUDA:
   * cudaDeviceCanAccessPeer and native peer atomics, then cudaDeviceEnablePeerAccess), 0 when not
   * (the routes are then staged through mapped host memory); called by rk_graph_launch before the
   * graph's kernels are launched. dev_mapped: the lanes' address, valid on every device of the
   * process, of memory from alloc (the pinned, mapped, portable arena). Also where a remote (MPI) node's outbound rings live on a device backend, so that the lanes push
   * into them and the bridge, a host thread, drains them. NULL: not supported. */
  int (*dev_peer)(rk_runtime *from, rk_runtime *to);
  uint64_t (*dev_mapped)(rk_runtime *rt, const void *host);
} rk_backend_ops;

extern const rk_backend_ops rk__cpu_backend;
extern const rk_backend_ops rk__cuda_backend;

/* cuda_backend.c: whether the CUDA backend can be tried for `device` (1) or why not (0, reason
 * written). It makes the process's first CUDA call, so it sets CUDA_DEVICE_MAX_CONNECTIONS first. */
int rk__cuda_probe(int device, char *reason, size_t len);
/* cuda_backend.c: set up the CUDA backend on rt (rt->ops, rt->backend_data) or say why not. */
int rk__cuda_init(rk_runtime *rt, char *reason, size_t len);
void rk__cuda_shutdown(rk_runtime *rt);

/* cuda_backend.c: the process-wide use of one device, shared by every runtime on it (the
 * "nothing while resident" rule of ARCHITECTURE §8 is per device and process, not per runtime:
 * every runtime on a device shares its primary context). A runtime that allocates, frees or loads
 * modules on the device (creation, a new CUDA image, shutdown) is "preparing"; a ring kernel that
 * is launched, and until its exit is confirmed, is "resident". The two exclude each other:
 * rk__device_prepare_enter fails (returning how many kernels are resident) while any is, and
 * rk__device_resident_enter waits for preparations in progress to end (RK_ETIMEDOUT after
 * timeout_ns). Devices 0 .. RK__MAX_DEVICES - 1; RK_EINVAL beyond. Compiled with or without CUDA,
 * so the protocol is tested on every machine (test_device_use). */
#define RK__MAX_DEVICES 64
int rk__device_prepare_enter(int device, uint32_t *resident);
void rk__device_prepare_exit(int device);
int rk__device_resident_enter(int device, uint64_t timeout_ns);
void rk__device_resident_exit(int device);
uint32_t rk__device_resident(int device);

/* A thread's view while it runs a handler (the opaque rk_ctx of kernel.h). */
struct rk_ctx {
  rk_kernel *k;
  rk__lane *lane;
  uint32_t thread;
};

struct rk__lane {
  rk_kernel *k;
  uint32_t index;
  rk_ring *inbox;  /* MPSC: host threads produce, the lane consumes */
  rk_ring *outbox; /* SPSC: the lane produces replies, one host drainer at a time consumes */
  rk_lane_status *status;
  rk_lane_command *cmd;
  /* held by whoever consumes the outbox (ARCHITECTURE §3). Alone on its line(s): the consumer locks
   * and unlocks it on every drain, and must not invalidate the fields around it, which the lane's
   * worker reads or writes on every message (the lane array is not line-aligned, hence whole-line
   * pads rather than an alignment). */
  char drain_pad_before[RK_LINE];
  /* Only ever tried, never waited for: a flag (rk__flag_trylock / rk__flag_unlock; atomics, their
   * acquire and release order what one holder did before the next), not a mutex: one locked
   * instruction to take it and none to drop it, where the mutex cost two library calls each way
   * (issue 16). */
  volatile int drain_lock;
  /* The last drain stopped at a reply it could not queue (no memory): the reply stays in the
   * outbox (rk_recv can still take it); callers back off instead of spinning on it. Replies behind
   * it that belong to rk_call waiters are delivered anyway, out of order: drain_ahead bit i marks
   * the slot at head + i as delivered, to be skipped and released in order later. Under drain_lock,
   * and inside its pads with it: every drain writes drain_blocked, and the fields after the pad
   * (threads, ctxs, nthreads) are read by the lane's worker on every message (issue 16: here they
   * shared a line, one more line changing hands on every rk_call). */
  int drain_blocked;
  uint64_t drain_ahead;
  /* The rk_call that holds drain_lock for its whole call (its fast path, messaging.c), its waiter
   * on no list: its id, 0 when none. Written by that caller; read by drainers of the other lanes
   * to tell a reply that names it on the wrong lane (refused) from a late one. Atomics, relaxed:
   * a drainer that sees such a reply took it after the request was published, which the store
   * precedes. */
  volatile uint64_t fast_call;
  /* The host's receive counters of this lane's replies, kept by whoever drains its outbox
   * (drain_lock held: one writer at a time, each holder's stores ordered before the next holder's
   * by the lock's release and acquire), so a plain load and store instead of a locked add: three
   * locked instructions fewer between an rk_call's reply and its return (issue 16). Atomics,
   * relaxed: rk_kernel_stats and the device poller read them on any thread and add them to the
   * kernel's own (rk__received, rk__latency_read). rx_received: replies delivered by a drain (to
   * an rk_call, or to an rk_recv caller or the callback dispatcher directly); rx_latency_*: the
   * rk_call latency histogram and its sum, every sample of which a drain takes. */
  volatile uint64_t rx_received;
  volatile uint64_t rx_tsc_samples; /* of rx_latency_*: the samples timed with the TSC (tsc.c; tests) */
  volatile uint64_t rx_latency_sum_ns;
  volatile uint64_t rx_latency_hist[RK_LATENCY_BUCKETS];
  char drain_pad_after[RK_LINE];
  /* worker side (CPU backend) */
  uv_thread_t *threads;
  struct rk_ctx *ctxs;
  uint32_t nthreads;
  uint32_t started;
  rk__lane_barrier barrier; /* rk_sync and the collectives, when nthreads > 1 */
  void *scratch;
  /* the message the lane's threads are working on (written by thread 0 before a barrier) */
  const rk_msg *cur;
  /* reply staging (thread 0): reserved, uncommitted slots of the outbox */
  uint32_t out_pending;
  uint32_t out_room;    /* outbox slots known free from its tail on (reply_slot) */
  void *reserved_slot;  /* rk_reply_reserve's slot, until rk_reply_commit */
  int replied;          /* a reply was produced (or the duty passed on over K2K) for the current message */
  /* K2K (leader only): requests this lane passed on from the host, less K2K replies it forwarded
   * to its outbox; a terminating lane stays until the answers are back (or its deadline) */
  int64_t owed;
  uint32_t sent;        /* K2K messages the current message's handler sent (retry rule) */
  uint64_t pt_us;       /* the current batch's reading of the kernel clock's time source */
  /* host batches (leader only): the last real reading of that source, how many batches have
   * reused it, and whether the current batch read it afresh (cpu_backend.c, lane_pt) */
  uint64_t pt_read;
  uint32_t pt_age;
  int pt_fresh;
  int retry;            /* the handler asked to run again on the message later (RK_EAGAIN) */
  /* K2K deadlock check (cpu_backend.c): the lane whose full K2K inbox a send of this lane's found
   * full (leader only), published in waits_on while the lane retries (other lanes' deadlock checks
   * read it: atomics, relaxed: a snapshot confirmed twice); since when it retries; whether it
   * faulted the kernel for a deadlock already. */
  struct rk__lane *blocked_on;
  struct rk__lane *volatile waits_on;
  uint64_t retry_since_ns;
  int deadlock_said;
  int k2k_closed;       /* the lane closed its K2K inbox (terminating) at position k2k_final */
  uint64_t k2k_final;
  int coll_rc;          /* result broadcast by collective calls */
  void *coll_ptr;
  uint64_t next_reply_id;
  /* watchdog (service thread only) */
  uint64_t wd_heartbeat;
  uint64_t dl_since_ns, dl_progress; /* device K2K deadlock check (graph.c, watchdog thread only) */
  volatile uint64_t wd_changed_ns; /* atomics: read by rk_kernel_stats on any thread */
};

struct rk_waiter {
  uint64_t id;
  rk_msg *out;
  void *buf;
  uint32_t buf_len;
  uint32_t lane; /* the lane the request went to: only its outbox may answer */
  int done; /* atomics: stored (release) by the drainer, under reply_lock, after *out is written */
  int corrupt; /* *out is an RK_ECORRUPT notice for a refused reply (written before done) */
  uint64_t sent_ns;
  uint64_t sent_tsc; /* the fast path's latency start (tsc.c), with sent_mult its scale; 0: none */
  uint64_t sent_mult;
  rk_waiter *next;
};

struct rk_pending {
  rk_pending *next;
  int notice; /* an RK_ECORRUPT notice for a refused reply: counted in replies_invalid, not received */
  rk_msg msg;
  uint8_t data[]; /* payload copy */
};

struct rk_kernel {
  rk_runtime *rt;
  rk_kernel *next; /* runtime's list, under rt->lock */
  rk_kernel_desc desc;
  char name[64];
  uint32_t id;
  uint32_t lanes, threads, inbox_cap, outbox_cap, slot_size;
  rk_backpressure backpressure;
  int64_t send_timeout_ns;
  uint64_t launch_timeout_ns;
  const rk_backend_ops *ops;

  rk_control *ctl;
  void *ctl_mem;
  size_t ctl_bytes;
  void *inbox_mem, *outbox_mem; /* every lane's ring in one block each: lane i at base + i * stride */
  size_t inbox_stride, outbox_stride;
  void *backend_data;
  /* the backend did not confirm the lanes' exit (rk_backend_ops.join): the control block and rings
   * are never freed (they stay allocated for the runtime's life, abort bit set) */
  int shared_kept;
  rk__lane *lane;
  void *state;
  /* CUDA backends: the kernel clock word the lanes left in device memory (copied back with the
   * state when they exit), where new lanes start it after a restart: their stamps go on above it */
  uint64_t dev_clock;
  rk_clock *clock; /* the kernel clock (node id = kernel id) */

  uv_mutex_t ctl_lock;   /* serialises lifecycle commands */
  uv_mutex_t fault_lock; /* fault_msg, and faults against each other */
  uint32_t cmd_seq;    /* last command sequence written (under ctl_lock) */
  volatile uint32_t hstate; /* host view: rk_lifecycle (atomics) */
  /* Faults. `faulted`: the kernel is FAULTED now (it refuses messages and commands but terminate
   * and restart), cleared when it recovers, restarts or terminates. fault_code/fault_msg: the last
   * fault, readable for the kernel's life (rk_kernel_error). A fault while faulted changes neither
   * (the first fault is the one that explains). */
  volatile int faulted;
  volatile int fault_code;
  volatile uint64_t faults;   /* faults raised (atomics, statistics) */
  int fault_soft;             /* the fault is a stall the lane may recover from (under fault_lock) */
  uint32_t stall_lane;        /* with fault_soft: the lane and its heartbeat when it stalled */
  uint64_t stall_heartbeat;
  uint64_t fault_ns;          /* monotonic time of the last fault (under fault_lock) */
  /* fault policy (rk_launch_options) and automatic restarts (service thread) */
  rk_fault_policy fault_policy;
  uint32_t max_restarts, restart_flags;
  uint64_t restart_backoff_ns;
  volatile uint64_t restarts, recoveries; /* atomics, statistics */
  uint32_t auto_restarts;     /* automatic restarts since the launch (under ctl_lock) */
  /* K2K (graph.c), set by rk_graph_launch before the lanes start and never changed while they
   * run: each lane's K2K inbox (MPSC; NULL: the kernel is in no graph), the kernels at the end of
   * its routes, its graph (topics), and topic messages it missed (its inbox full; atomics). */
  rk_ring **k2k;
  /* a remote node's stand-in on a device backend: per lane, a ring in host memory that only host
   * threads push into (the transport's own error answers: rk_graph_answer_error), which the
   * transport drains beside k2k, whose producers are device lanes (graph.c, remote.h); else NULL */
  rk_ring **k2k_host;
  uint32_t k2k_cap;
  uint32_t nroutes;
  rk_kernel *route[16];
  struct rk_graph *graph;
  volatile uint64_t k2k_dropped;
  /* K2K on a device backend (graph.c): the kernel's K2K inboxes in device memory (0: none; their
   * stride is in its entry of the graph's table) and that table, which the lanes read */
  uint64_t k2k_dev;
  size_t k2k_dev_bytes;
  void *k2k_staged; /* k2k_dev staged in mapped host memory (ops->alloc; its lanes' address is k2k_dev) */
  /* a device kernel of a graph with a transport (remote.h): per lane, its transport inbox (an MPSC
   * ring at xin + i * xin_stride in mapped host memory, ops->alloc), which only host threads claim
   * in (the transport's deliveries, rk__k2k_push), and after it a line with the word the lane sets
   * to ask the host to close it (graph.c, persistent.cuh); NULL otherwise */
  uint8_t *xin;
  size_t xin_stride, xin_bytes;
  uint64_t dev_graph;
  uint32_t dev_graph_n, dev_graph_node;
  /* dead letters: the last dead_cap messages the kernel refused or the host discarded */
  uv_mutex_t dead_lock;
  rk_dead_letter *dead;
  uint32_t dead_cap;
  uint64_t dead_total;        /* recorded, ever (under dead_lock) */
  /* CPU backend: 1 (the host's reference) + the lane threads that may still touch k. The host
   * drops its reference only when it abandons lanes that did not stop (rk_kernel_destroy); then
   * whoever drops the last frees k. Atomics. */
  volatile uint32_t thread_refs;

  /* The lanes are dead (a sticky CUDA error ended the context's kernels): nothing acknowledges a
   * command any more, so waits stop and terminate only joins. Its own flag, not the fault code:
   * the first fault wins the code, and a kernel faulted before (a stall, a missed command) can
   * die later. Set with rk__kernel_lanes_dead. */
  volatile int lanes_dead;
  /* 1 while its terminate waits for the writers of its staged K2K inbox (rk__k2k_staged_close step
   * 2): a terminate of one of those writers, itself waiting for this kernel, does not wait for it
   * (rk__kernel_sync). Atomic (acquire / release). */
  int staged_syncing;
  char fault_msg[256]; /* written once, before fault_code is published (release) */

  /* host-side counters (many writers: atomic adds) */
  volatile uint64_t sent, send_rejected, send_timeouts, send_invalid, received, late_replies;
  volatile uint64_t replies_invalid; /* replies refused by the host (rk__drain_lane) */
  volatile uint32_t rr;
  /* (the rk_call latency histogram and the replies drains delivered are counted per lane, under
   * drain_lock: rk__lane.rx_*; `received` here counts the replies taken from the pending list) */
  struct rk__tokens *volatile tokens; /* token.c: set once (CAS) at the first rk_send_token */

  /* reply demultiplexing */
  uv_mutex_t reply_lock;
  uv_cond_t reply_cond;
  rk_waiter *waiters;
  uint32_t sleepers; /* rk_call callers in uv_cond_timedwait on reply_cond (written under reply_lock,
                      * atomics: read without it to skip a needless broadcast) */
  rk_pending *pend_head, *pend_tail;
  uint64_t pend_count;

  /* asynchronous receive: cb, cb_user, cb_running and cb_thread under cb_lock, which is never held
   * while a callback runs; cb_running: a dispatcher (on cb_thread) is delivering, cb_cond is
   * broadcast when it stops */
  uv_mutex_t cb_lock;
  uv_cond_t cb_cond;
  rk_recv_cb cb;
  void *cb_user;
  int cb_running;
  uv_thread_t cb_thread;
  void *cb_buf; /* the dispatcher's copy of the reply it delivers (a slot's payload) */
  volatile int cb_active;
  volatile int refs; /* service-thread passes in progress */

  /* clock synchronisation: driven by launch, then by whoever holds clock_sync_lock (the service
   * loop, or a sender that saw a step: rk__clock_guard_slow) */
  uint64_t clock_next_ns;    /* monotonic time of the next exchange */
  uint64_t clock_unc;        /* uncertainty (ns) of the offset last published (kernel.c clock_accept) */
  uint64_t clock_bound_unc;  /* uncertainty (ns) in the bound last published: >= clock_unc (clock_accept) */
  uv_mutex_t clock_sync_lock; /* one exchanger at a time: the service loop, or a sender (rk__clock_guard);
                              * held for the fields above from clock_next_ns, and these: */
  uint64_t clock_rm;         /* host time minus monotonic time (ns) when the offset in force was accepted
                              * (also read without the lock, with acquire, by rk__clock_guard) */
  uint64_t clock_rm_next;    /* the same, accepted and not yet published (kernel.c clock_publish_rm) */
  uint64_t clock_rm_at;      /* monotonic time of that reading */
  uint64_t clock_guard_after; /* monotonic time before which senders do not exchange (all missed) */
  uint64_t clock_step_said;  /* monotonic time a step was last logged (0: never) */
  uint64_t clock_doubt_after; /* monotonic time before which a doubt waits (kernel.c rk__clock_sync) */
  uint32_t clock_doubt;      /* 1: exchange soon (rk__clock_doubt; any thread, relaxed: a hint) */
  uv_mutex_t clock_lock;     /* the statistics below, read together by rk_kernel_stats */
  int64_t clock_offset;
  uint64_t clock_window, clock_syncs, clock_misses;

  /* messages with buffer references in flight (buffer.c; atomics): the drain looks their pins up
   * only when some are */
  volatile uint32_t buf_pins;
};

struct rk_runtime {
  rk_runtime_options opts;
  rk_backend backend;
  const rk_backend_ops *ops;
  void *backend_data;
  char backend_reason[400];
  rk_clock *clock;
  uint32_t node_id;
  volatile uint64_t next_msg_id;
  volatile uint32_t next_kernel_id;

  uv_mutex_t lock; /* kernels list */
  rk_kernel *kernels;
  struct rk_graph *graphs; /* graph.c: the graphs created on rt (under lock); destroyed with it */
  uint64_t serial; /* process-unique: a thread's last error names its runtime by it */

  /* the log (diag.c): rate limit and gate, under log_lock, never held across the callback */
  uv_mutex_t log_lock;
  uv_cond_t log_cond;
  int log_ready, log_closed;
  uint32_t log_active;
  struct rk__log_limit {
    const char *fmt;
    uint64_t window_ns;
    uint32_t lines;
    uint64_t suppressed;
  } log_limit[RK__LOG_LIMITS];
  /* 1 (the application's) + kernels abandoned with lanes that may still run and use rt; whoever
   * drops the last frees it (rk__runtime_release). Atomics. */
  volatile uint32_t refs;

  /* service loop */
  uv_loop_t own_loop;
  uv_loop_t *loop;
  int own_thread;
  uv_thread_t service;
  struct rk__handles *handles; /* freed by their close callbacks */
  struct rk__metrics *metrics;  /* the /metrics endpoint (metrics.c), or NULL; freed by its close */
  volatile int stopping;
  /* the poller that wakes the loop for device replies with callbacks (devpoll.c); set under lock
   * before the first such callback is started, freed by rk_runtime_destroy */
  struct rk__devpoll *devpoll;
  /* buffers (buffer.c): pools, table, pins; set at creation, freed with the runtime's memory */
  struct rk__buffers *buffers;
};

/* diag.c: library locks (every lock of the runtime and its kernels): a log line produced while the
 * thread holds one is delivered when it releases its last, so the application's log callback
 * never runs under a library lock. */
void rk__lock(uv_mutex_t *m);
int rk__trylock(uv_mutex_t *m); /* 0 when taken */
void rk__unlock(uv_mutex_t *m);
/* A library lock that is only ever tried (rk__lane.drain_lock): 0 when taken; counted as the
 * mutexes are (log lines are deferred while it is held). */
int rk__flag_trylock(volatile int *f);
void rk__flag_unlock(volatile int *f);
/* diag.c: log a line (rate-limited per format string: RK_LOG_BURST per second), and record a
 * failure as the calling thread's last error on rt (returns code). */
void rk__log(rk_runtime *rt, rk_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int rk__fail(rk_runtime *rt, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* diag.c: no more log callbacks for rt; waits for those in progress. */
void rk__log_close(rk_runtime *rt);
uint64_t rk__runtime_serial(void);
/* diag.c: a thread's last error. rk__error_clear starts a public call on rt (a success leaves no
 * error behind). rk__error_redirect makes this thread's failures land in another thread's record
 * (a worker thread running a job for a caller that waits for it); returns the previous target. */
typedef struct rk__error {
  uint64_t serial;
  char msg[512];
} rk__error;
void rk__error_clear(const rk_runtime *rt);
rk__error *rk__error_mine(void);
rk__error *rk__error_redirect(rk__error *to);

/* failpoint.c: uv_thread_create, uv_loop_init and uv_async_init through their fail points. */
int rk__thread_create(uv_thread_t *t, void (*fn)(void *), void *arg);
int rk__uv_loop_init(uv_loop_t *loop);
int rk__uv_async_init(uv_loop_t *loop, uv_async_t *async, uv_async_cb cb);

/* runtime.c */
void rk__service_wake(rk_runtime *rt);
/* runtime.c: drop a reference to rt (rk_runtime.refs); the last frees it. */
void rk__runtime_release(rk_runtime *rt);
/* The /metrics endpoint (metrics.c), on the loop's thread: start (RK_EINVAL: bad address; RK_ESYS:
 * cannot listen; why says which; rt->metrics is set whenever something must be closed), close
 * (closes the server and its connections; memory goes in their close callbacks), unref (an
 * application's loop: the server alone does not keep it running). */
typedef struct rk__metrics rk__metrics;
int rk__metrics_start(rk_runtime *rt, const char *listen, char *why, size_t why_len);
void rk__metrics_close(rk__metrics *m);
void rk__metrics_unref(rk__metrics *m);
/* Why the calling thread's rk_runtime_create failed (rk_runtime_last_error(NULL)); clear at its start. */
void rk__create_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t rk__msg_id(rk_runtime *rt);

/* runtime.c: run fn(k, arg) over a snapshot of rt's kernels, each pinned (refs) while it runs. */
void rk__for_each_kernel(rk_runtime *rt, void (*fn)(rk_kernel *k, void *arg), void *arg);

/* devpoll.c: replies of kernels whose lanes cannot wake the host (RK_RING_F_NO_WAKE) reach their
 * callbacks through a poller thread that wakes the loop. start: the thread runs (before such a
 * kernel's callbacks are started; RK_ENOMEM/RK_ESYS); kick: a served kernel appeared; sent: a
 * request was sent to a served kernel (after it was counted in k->sent); destroy: stop (after the
 * kernels, before the loop's handles close; no start after it); free: with the runtime. */
int rk__devpoll_start(rk_runtime *rt);
void rk__devpoll_kick(rk_runtime *rt);
void rk__devpoll_sent(rk_runtime *rt);
void rk__devpoll_destroy(rk_runtime *rt);
void rk__devpoll_free(rk_runtime *rt); /* with the runtime's memory (rk__runtime_release) */
uint64_t rk__devpoll_scans(rk_runtime *rt); /* passes the poller made (tests: is it asleep?) */

/* A struct the application passes with its size (options, descriptors) from a newer header, larger
 * than this library's: accepted only when every byte past the fields this library knows is zero
 * (the newer fields at their defaults); a nonzero one asks for something this library lacks. */
static inline int rk__struct_tail_zero(const void *p, size_t known, size_t given) {
  const unsigned char *b = (const unsigned char *)p;
  for (; known < given; known++)
    if (b[known] != 0) return 0;
  return 1;
}
/* kernel.c: that rule for a launch's struct of `size` bytes at p (this library's: `known`): RK_OK,
 * or RK_EINVAL with rk__fail's message, which names `what` (the call and the struct). */
int rk__newer_struct_check(rk_runtime *rt, const void *p, size_t known, uint32_t size, const char *what);

/* runtime.c: k is being destroyed on this thread: this thread's passes over kernel lists
 * (rk__for_each_kernel) that pinned it and have not served it yet let it go. */
void rk__for_each_release(rk_kernel *k);

/* runtime.c: sleep at least ns nanoseconds (back-off only). */
void rk__sleep_ns(uint64_t ns);
/* runtime.c: a full memory barrier on every running thread of the process (membarrier); 0, or -1
 * when the system has none. */
int rk__process_barrier(void);
/* runtime.c: CLOCK_REALTIME in nanoseconds. */
uint64_t rk__realtime_ns(void);
/* runtime.c: the physical time of rt's clocks in nanoseconds: its time_source (microseconds, times
 * 1000) when it has one, else CLOCK_REALTIME. What the lanes' clocks are calibrated against: the
 * host stamps they check are read from it (kernel.c "clock synchronisation"). */
uint64_t rk__host_time_ns(const rk_runtime *rt);

/* kernel.c: fault k (the first fault while not faulted is recorded; see rk_kernel) and wake every
 * waiter on it: callers, receivers, blocked senders learn RK_ESTATE. soft: a stall the lane may
 * recover from (lane, its heartbeat when it stalled). Any thread, any locks but fault_lock held
 * (the log line is deferred until the caller's locks are released). */
void rk__kernel_fault(rk_kernel *k, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* kernel.c: rk__kernel_fault, recorded only if k is ACTIVE or TERMINATING, checked under fault_lock
 * (a check before the call races a terminate finishing: TERMINATED, then the fault cleared, then a
 * late fault would leave the terminated kernel FAULTED). Returns 1 when this fault was recorded, 0
 * when k was not running or already faulted. rk__fault_if_running_hook (tests only): called first. */
int rk__kernel_fault_if_running(rk_kernel *k, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
extern void (*rk__fault_if_running_hook)(rk_kernel *k);
/* kernel.c: rk_kernel_launch, with prepare(k, arg) called once k's rings and lanes exist, before
 * any lane starts (an error from it fails the launch, everything freed). */
int rk__kernel_launch(rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                      int (*prepare)(rk_kernel *k, void *arg), void *arg, rk_kernel **out);
/* graph.c: a K2K message from the host or a lane (lane: the sender's, NULL for the host) into
 * lane dst_lane of dst's K2K inbox. Returns RK_OK, RK_EAGAIN (full), RK_ECLOSED (dst drained and
 * left), RK_EMSGSIZE. *e is filled except payload (copied from payload, len bytes). */
int rk__k2k_push(rk_kernel *dst, uint32_t dst_lane, const rk_envelope *e, const void *payload, uint32_t len);
/* graph.c: the graph's kernels subscribed to topic (< RK_GRAPH_MAX_TOPICS), at most max, into out;
 * returns how many. */
uint32_t rk__graph_subscribers(struct rk_graph *g, uint32_t topic, rk_kernel **out, uint32_t max);
/* graph.c: the graph's kernel with this id (the origin of a forwarded request), or NULL. */
rk_kernel *rk__graph_kernel(struct rk_graph *g, uint32_t id);
/* graph.c, tests: the terminate order (upstream first) computed by rk_graph_launch: up to n node
 * indices into out; returns the graph's node count. */
uint32_t rk__graph_order(const struct rk_graph *g, uint32_t *out, uint32_t n);
/* graph.c: an idle CPU lane drives the graph's transport (remote.h, its poll hook; docs/mpi.md,
 * "Lane-driven progress"): 1 keep polling, 0 go wait (no hook, the gate closed, or the transport
 * says so). From the lane's worker loop only, never a handler. */
int rk__graph_poll(struct rk_graph *g, const void *lane, int stop);
/* graph.c: destroy every graph of rt and its kernels (rk_runtime_destroy, before the kernels). */
void rk__graphs_destroy(rk_runtime *rt);
/* kernel.c: rk_kernel_destroy without its refusal of a graph's kernel (rk_graph_destroy); and
 * the kernel taken out of the runtime, never freed (rk_graph_destroy, lanes of the graph stuck). */
void rk__kernel_destroy_member(rk_kernel *k);
void rk__kernel_leak(rk_kernel *k);
/* graph.c: close k's K2K inboxes, and a device kernel's transport inboxes, to senders (its lanes
 * have left, or are abandoned by a terminate that timed out): later sends get RK_ECLOSED instead
 * of being queued for no one. */
void rk__k2k_close(rk_kernel *k);
/* graph.c: rk_kernel_terminate of a device kernel whose K2K inboxes are staged in mapped host
 * memory (its writers on another device without peer access): let its lanes close them only once
 * every writer lane has seen the closed flag (steps in graph.c). RK_OK when not staged. */
int rk__k2k_staged_close(rk_kernel *k, uint64_t deadline);
/* Tests: called at each step of rk__k2k_staged_close (0: every lane ready to close, n of them
 * counted; 1: the writers' devices' closed flag set; 2: n writer kernels acknowledged a command;
 * 3: the go given). NULL: none. */
extern void (*rk__k2k_staged_hook)(rk_kernel *k, int step, uint32_t n);
/* kernel.c: a command that only asks w's lanes for an acknowledgement (RK_CMD_SYNC), for a caller
 * that needs every lane of w past a command after its own stores (rk__k2k_staged_close). w's
 * ctl_lock is only tried: while another thread holds it (a terminate of w), it waits until w has
 * terminated (nothing to synchronise) or the deadline. RK_OK also for a terminated kernel or dead
 * lanes (neither writes); RK_ETIMEDOUT. */
int rk__kernel_sync(rk_kernel *w, uint64_t deadline);
/* (A w whose own terminate is waiting to synchronise with the caller's kernel (staged_syncing) is
 * not waited for: RK_EDEADLK, and the caller goes on without it; see rk__k2k_staged_close.) */
/* A device kernel's transport inboxes (rk_kernel.xin): close lane l's when its lane asked
 * (terminating, nothing owed); rk__k2k_close closes every one of them. No-op for other kernels. */
void rk__k2k_xin_poll(rk_kernel *k, uint32_t lane);
/* graph.c: free k's K2K inboxes (rk__kernel_free). */
void rk__k2k_free(rk_kernel *k);
/* graph.c: topic messages a device kernel missed (counted by the publishing lanes in the graph's
 * table); 0 for a kernel in no graph or on the CPU backend. */
uint64_t rk__k2k_dev_dropped(rk_kernel *k);
/* graph.c, the watchdog: a device kernel's lanes in a cycle of lanes each retrying on the next
 * one's full K2K inbox, with no progress for RK_K2K_DEADLOCK_NS: faults it with RK_EDEADLK (1). */
int rk__graph_dev_deadlock(rk_kernel *k);
void rk__kernel_stall(rk_kernel *k, uint32_t lane, uint64_t heartbeat, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Is k FAULTED now? Acquire: pairs with rk__kernel_fault's release; fault_code and fault_msg are
 * then readable (fault_msg under fault_lock: a recovered kernel can fault again). */
int rk__kernel_faulted(const rk_kernel *k);
/* The last fault's message, copied under fault_lock. */
void rk__kernel_fault_msg(rk_kernel *k, char *buf, size_t len);
/* The watchdog's view of a faulted kernel (service thread): recover a soft fault whose lane
 * heartbeats again (RK_FAULT_RECOVER), or restart it when due (RK_FAULT_RESTART). */
void rk__kernel_fault_service(rk_kernel *k);
/* Record a dead letter of k: the envelope (and up to RK_DEAD_LETTER_PAYLOAD payload bytes), why
 * (an RK_E* code and a static string), the lane. Any thread. */
void rk__dead_letter(rk_kernel *k, const rk_envelope *e, const void *payload, int reason, const char *why,
                     uint32_t lane);
/* Free k and what it owns (nothing may use it any more). */
void rk__kernel_free(rk_kernel *k);
/* The kernel's lanes died (a sticky CUDA error): mark them dead, and fault the kernel with
 * RK_ECUDA and msg (if it has no fault yet). Any thread. */
void rk__kernel_lanes_dead(rk_kernel *k, const char *msg);
int rk__drain_lane(rk_kernel *k, rk__lane *l, rk_msg *direct, void *buf, uint32_t buf_len, uint32_t want,
                   uint32_t *got);
void rk__latency_add(rk__lane *l, uint64_t ns); /* drain_lock of l held */

/* tsc.c: the time-stamp counter as the clock of rk_call's latency samples and of the send stamp's
 * reading (issue 16). rk__tsc_mult is the factor (ns per tick, 32.32) or 0 when clock_gettime is
 * to be used (no invariant TSC, the kernel not keeping time with it, not measured yet, or not
 * x86-64); the service loop measures it (rk__tsc_calibrate); rk__tsc_start decides once per
 * process whether the counter may be used (rk_runtime_create). */
#if defined(__x86_64__) && defined(__SIZEOF_INT128__)
#define RK__HAVE_TSC 1
#else
#define RK__HAVE_TSC 0
#endif
typedef struct rk__tsc_line {
  uint64_t mult;
  char pad[56]; /* alone on its line (tsc.c) */
} rk__tsc_line;
extern rk__tsc_line rk__tsc_mult_line;
void rk__tsc_start(void);
void rk__tsc_calibrate(void);
static inline uint64_t rk__tsc_mult(void) {
  return __atomic_load_n(&rk__tsc_mult_line.mult, __ATOMIC_RELAXED); /* a statistic's scale (tsc.c) */
}
/* The counter: RDTSC, not ordered against the loads before it (the point: tsc.c). 0 where there
 * is none (rk__tsc_mult is 0 there too). */
static inline uint64_t rk__tsc_read(void) {
#if RK__HAVE_TSC
  return __builtin_ia32_rdtsc();
#else
  return 0;
#endif
}
/* ticks * mult >> 32 (ns); num << 32 / den (a factor). Without a counter (RK__HAVE_TSC 0) the
 * factor is always 0 and neither is reached: 0. */
static inline uint64_t rk__tsc_ns(uint64_t ticks, uint64_t mult) {
#if RK__HAVE_TSC
  return (uint64_t)(((unsigned __int128)ticks * mult) >> 32);
#else
  (void)ticks;
  (void)mult;
  return 0;
#endif
}
static inline uint64_t rk__tsc_div(uint64_t num, uint64_t den) {
#if RK__HAVE_TSC
  return (uint64_t)(((unsigned __int128)num << 32) / den);
#else
  (void)num;
  (void)den;
  return 0;
#endif
}
/* CLOCK_REALTIME in us, extrapolated from the counter between anchors at most 1 ms apart (tsc.c;
 * rk_realtime_us itself where the counter is not used). */
uint64_t rk__tsc_realtime_us(void);
uint64_t rk__tsc_anchors(void); /* anchors published so far (diagnosis, tests) */
/* The reading a host send stamps with: the runtime clock's own time source when it has one, else
 * the extrapolated CLOCK_REALTIME (~10 ns where clock_gettime is ~25-30: issue 16). */
static inline uint64_t rk__send_pt_us(rk_runtime *rt) {
  return rk__clock_sourced(rt->clock) ? rk_clock_physical_us(rt->clock) : rk__tsc_realtime_us();
}
/* messaging.c: the replies received in all (k->received and every lane's rx_received), and the
 * latency histogram and its sum summed over the lanes (relaxed reads: statistics) */
uint64_t rk__received(const rk_kernel *k);
void rk__latency_read(const rk_kernel *k, uint64_t hist[RK_LATENCY_BUCKETS], uint64_t *sum_ns);
void rk__dispatch_callbacks(rk_kernel *k);

/* telemetry.c: the watchdog's look at one kernel (service loop, through for_each_kernel: no lock
 * is held, so faulting may log). */
void rk__watchdog_kernel(rk_kernel *k);
/* device_params.c (CUDA backend and the test suite's device emulation): the batch and dynamic
 * shared memory of k's lanes (RK_EINVAL when a slot does not fit); the device memory a kernel needs
 * (its state, 128-byte aligned, then a line holding the kernel clock word); and the lanes'
 * parameter block, given that device memory; dev() maps an address in the mapped arena to the
 * lanes' address for it. */
struct rk_dev_params;
int rk__dev_geometry(const rk_kernel *k, uint32_t *batch, size_t *smem);
size_t rk__dev_devmem_bytes(const rk_kernel *k);
void rk__dev_params_fill(const rk_kernel *k, struct rk_dev_params *p, void *(*dev)(void *ctx, void *host), void *ctx,
                         uint8_t *devmem, uint32_t batch);
/* kernel.c: one clock exchange with the kernel's lane 0 when it is due (service loop). */
void rk__clock_sync(rk_kernel *k);
/* kernel.c: k's stamps disagree with the host clock beyond the drift bound (a device lane refused a
 * host stamp, or a reply's stamp was refused): if its lanes stamp with an offset-corrected clock,
 * the service loop exchanges on its next tick. Any thread; cheap (a relaxed store). */
void rk__clock_doubt(rk_kernel *k);
/* kernel.c: rk__clock_guard's slow path (a step of the host clock: exchange before sending). */
void rk__clock_guard_slow(rk_kernel *k);
/* A sender to k, its stamp read from the time source at pt_us: when k's lanes stamp with an
 * offset-corrected clock (CUDA) and the host clock moved against the monotonic one since that
 * offset was measured (a step), exchange now, so that the lanes do not refuse the stamp (kernel.c
 * "clock synchronisation"). A branch for other kernels; for these one monotonic reading. */
#define RK_CLOCK_GUARD_NS 10000000ll
static inline void rk__clock_guard(rk_kernel *k, uint64_t pt_us) {
  int64_t moved;
  if (RK_LIKELY(!k->ops->lane_clock_offset)) return;
  /* acquire: pairs with clock_publish_rm's release, after the clock request that applies the
   * offset measured with it: a message sent after finding no step is published after that request
   * (a lane about to refuse its stamp finds it, rk_dev_clock_reload). A plain load on x86. */
  moved = (int64_t)(pt_us * 1000u - rk__now_ns() - __atomic_load_n(&k->clock_rm, __ATOMIC_ACQUIRE));
  if (RK_UNLIKELY(moved > RK_CLOCK_GUARD_NS || moved < -RK_CLOCK_GUARD_NS)) rk__clock_guard_slow(k);
}

/* nvrtc.c: compile handler source (+ the embedded device runtime) into a ring kernel `entry` for
 * `arch` ("compute_75" -> PTX, "sm_90" with cubin != 0 -> CUBIN). The image is owned by the
 * process-wide cache and stays valid for the life of the process. Errors: RK_EINVAL (bad
 * arguments, or a compile error: NVRTC's log in log), RK_ENOTSUP (no NVRTC; reason in log),
 * RK_ECUDA (NVRTC failed otherwise), RK_ENOMEM. */
int rk__nvrtc_available(char *why, size_t len);
int rk__nvrtc_compile(const char *source, const char *handler, const char *entry, const char *arch, int cubin,
                      const char **image, size_t *image_len, char *log, size_t log_len);
uint64_t rk__nvrtc_compile_count(void);

/* buffer.c: the runtime's buffers (ringkernel/buffer.h). init: with the runtime, after the backend
 * (CUDA: the pools rk__cuda_buffer_pools prepared); shutdown: rk_runtime_destroy, after the kernels
 * and the loop (waits for copies in flight); free: with the runtime's memory. service: the loop
 * thread delivers copy completions. table: what the lanes read (rk_dev_params.buffers).
 * replied: a reply to message id of k was taken (releases its pins; under k->reply_lock).
 * kernel_free: k is being freed (its messages' pins go, unless its lanes' exit is unconfirmed). */
typedef struct rk__buffers rk__buffers;
struct rk_dev_buffer;
int rk__buffers_init(rk_runtime *rt);
void rk__buffers_shutdown(rk_runtime *rt);
void rk__buffers_free(rk_runtime *rt);
void rk__buffers_service(rk_runtime *rt);
struct rk_dev_buffer *rk__buffers_table(rk_runtime *rt, uint32_t *n);
void rk__buffers_replied(rk_kernel *k, uint64_t id);
void rk__buffers_kernel_free(rk_kernel *k);
/* cuda_backend.c: the buffer pools and table init_job prepared (addresses of the device, of the
 * pinned host pool and its device view, of the table and its pinned mirror). RK_ENOMEM when they
 * could not be allocated. */
typedef struct rk__cuda_buffer_mem {
  uint8_t *dev_pool;
  size_t dev_bytes;
  uint8_t *host_pool, *host_pool_dev;
  size_t host_bytes;
  struct rk_dev_buffer *table_dev, *table_mirror;
} rk__cuda_buffer_mem;
int rk__cuda_buffer_pools(rk_runtime *rt, rk__cuda_buffer_mem *out);
/* cuda_backend.c: cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault) on the runtime's copy stream,
 * then done(arg, status) from the CUDA runtime's callback thread once it completed (done may be
 * NULL). Any thread; allowed while ring kernels are resident (no allocation, no synchronisation).
 * RK_ECUDA (reason recorded) when it could not be issued: done is then never called. */
int rk__cuda_copy(rk_runtime *rt, void *dst, const void *src, size_t n, void (*done)(void *arg, int status), void *arg);
/* messaging.c: a send, and a call, with an id the caller chose (rk__msg_id; | RK__CALL_BIT for a
 * call): buffer.c stamps it into the message's references first. *sent: the request was published. */
int rk__send_id(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags, uint64_t id);
/* rk__send_id, routed by key when keyed (rk_send_key's lane choice). */
int rk__send_id_key(rk_kernel *k, int keyed, uint64_t key, uint32_t type, const void *payload, uint32_t len,
                    uint32_t flags, uint64_t id);
/* The callers' tokens of a kernel's messages in flight (token.c): freed with the kernel. */
struct rk__tokens;
void rk__tokens_free(struct rk__tokens *t);
int rk__call_id(rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply, void *buf,
                uint32_t buf_len, int64_t timeout_ns, uint64_t id, int *sent);
/* cuda_backend.c: rk_kernel_compile on the CUDA backend (rt's device architecture). */
int rk__cuda_compile(rk_runtime *rt, const rk_kernel_desc *d, char *log, size_t log_len);
/* cc.c: the handler of d->source compiled by the system C compiler and loaded (cached on disk and
 * in the process; the object stays loaded for the process's life). log receives the compiler's
 * output. Errors (with rk__fail's message): RK_EINVAL (no source, a handler name that is not an
 * identifier, a compile error or no such handler: the first errors in the message), RK_ENOTSUP (no
 * compiler), RK_ENOMEM, RK_ESYS (the compiler could not run, the object could not be loaded). */
int rk__cc_compile(rk_runtime *rt, const rk_kernel_desc *d, rk_handler_fn *out, char *log, size_t log_len);
uint64_t rk__cc_compile_count(void);

/* cpu_backend.c */
/* The payload bytes a slot of k's rings holds: the slot less the ring's 16 bytes (its sequence
 * word) and the envelope (inline: on every message's path) */
static inline uint32_t rk__payload_max(const rk_kernel *k) {
  return RK_RING_MSG_MAX(k->slot_size) - RK_ENVELOPE_SIZE;
}
/* cpu_backend.c: a lane thread of k is done with it (drops its thread_refs reference). */
void rk__cpu_thread_done(rk_kernel *k);

#endif
