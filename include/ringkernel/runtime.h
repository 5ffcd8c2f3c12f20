/** @file ringkernel/runtime.h — the host API: runtimes, ring kernels, messages.
 *
 * A runtime drives one backend (CUDA when a GPU is usable, else CPU worker threads that run the
 * same handlers under the same dispatch rules). A ring kernel is a resident actor: launched once,
 * it keeps its state between messages and polls its lanes' inbound rings. Lifecycle:
 *     launch -> activate <-> deactivate -> terminate        (states in ringkernel/control.h)
 *
 * Threads: unless a function says otherwise, it may be called from any thread, concurrently with
 * any other function on the same runtime or kernel, except the destroy functions (which need the
 * object no longer in use) and rk_runtime_create/destroy with an application loop (loop thread).
 * Errors: every function returns 0 or a negative RK_E* code; rk_runtime_last_error() gives the
 * detail of the calling thread's last failure on that runtime (CUDA or system message included).
 * Waits: a call with a timeout returns by it, plus at most a small documented constant; a call
 * that waits without one returns as soon as what it waits for can no longer happen (the kernel
 * faulted, aborted or terminated). The library never calls application code (log callback,
 * receive callback, state initialiser) while it holds a lock of its own, so that code may call
 * the library back. */
#ifndef RINGKERNEL_RUNTIME_H
#define RINGKERNEL_RUNTIME_H

#include "ringkernel/common.h"
#include "ringkernel/lifecycle.h"
#include "ringkernel/error.h"
#include "ringkernel/hlc.h"
#include "ringkernel/kernel.h"
#include "ringkernel/message.h"

RK_EXTERN_C_BEGIN

#if !defined(__CUDACC_RTC__)

struct uv_loop_s; /* libuv's uv_loop_t; <uv.h> is not needed to use this header */

/** A runtime: one backend, its service loop and its kernels (opaque). */
typedef struct rk_runtime rk_runtime;
/** A launched ring kernel (opaque). */
typedef struct rk_kernel rk_kernel;

/** Which backend runs the kernels. */
typedef enum rk_backend {
  RK_BACKEND_AUTO = 0, /**< CUDA when a usable GPU is found, else CPU (rk_runtime_backend says why) */
  RK_BACKEND_CPU = 1,  /**< persistent worker threads */
  RK_BACKEND_CUDA = 2  /**< persistent CUDA kernels; RK_ENODEV with the reason when unavailable */
} rk_backend;

/** Severity of a log line. */
typedef enum rk_log_level { RK_LOG_ERROR = 0, RK_LOG_WARN = 1, RK_LOG_INFO = 2, RK_LOG_DEBUG = 3 } rk_log_level;
/** Log sink; called from any runtime thread, must be thread-safe. Never called while the library
 *  holds a lock: it may call the library. Each message format logs at most 8 lines per second
 *  per runtime; the next line after a burst says how many were suppressed. */
typedef void (*rk_log_fn)(void *user, rk_log_level level, const char *message);

/** Runtime options. Start from RK_RUNTIME_OPTIONS_INIT; fields may be added at the end. A size
 *  from an older header (smaller) gets the defaults for the fields it lacks; one from a newer
 *  header (larger) is accepted when every byte past this library's fields is zero, and refused
 *  (RK_EINVAL) when one is set: it asks for something this library cannot do. */
typedef struct rk_runtime_options {
  uint32_t size;                /**< sizeof(rk_runtime_options) */
  rk_backend backend;           /**< default RK_BACKEND_AUTO */
  int device;                   /**< CUDA device ordinal (default 0) */
  uint32_t node_id;             /**< HLC node id of the runtime clock; 0: derived from pid and time */
  uint64_t max_offset_us;       /**< HLC drift bound; 0: 500 ms */
  /** Application loop to join; NULL: the runtime runs its own thread. On an application loop the
   *  runtime's handles (its wake-up, its timer, the /metrics server) are unreferenced: they run
   *  whenever the application runs the loop, but uv_run(UV_RUN_DEFAULT) returns once the
   *  application's own handles and requests are done. (libuv runs nothing on a loop with no
   *  referenced handle, not even with UV_RUN_NOWAIT: an application whose loop waits for the
   *  runtime's callbacks alone calls rk_runtime_ref_loop(rt, 1).) */
  struct uv_loop_s *loop;
  rk_log_fn log;                /**< NULL: errors and warnings to stderr */
  void *log_user; /**< passed to log */
  rk_log_level log_level;       /**< default RK_LOG_WARN */
  uint64_t watchdog_interval_ns; /**< heartbeat check period; 0: 50 ms */
  uint64_t watchdog_stall_ns;    /**< a lane with work and no heartbeat for this long faults; 0: 2 s */
  /** How often the service loop re-measures each kernel's clock offset (device %globaltimer
   *  against the host clock: time_source, or CLOCK_REALTIME; on the CPU backend a check of the
   *  exchange). 0: 1 s; UINT64_MAX: only at launch (and no step or disagreement handling).
   *  Checked on the watchdog timer, so never more often than watchdog_interval_ns, except that a
   *  step of the host clock or a refused stamp brings an exchange sooner (docs/cuda-backend.md,
   *  "Steps of the host clock"). */
  uint64_t clock_sync_interval_ns;
  /** Buffer pools (ringkernel/buffer.h), prepared with the runtime: bytes of device memory (0:
   *  64 MiB) and of pinned, mapped host memory (0: 16 MiB). On CUDA both are allocated when the
   *  runtime is created; on the CPU backend at the first buffer of each kind. */
  size_t buffer_device_bytes;
  size_t buffer_host_bytes; /**< pinned host pool bytes (0: 16 MiB) */
  uint32_t max_buffers;         /**< buffers allocated at once, at most (0: 1024; above 2^24:
                                     rk_runtime_create fails with RK_EINVAL) */
  /** Kernels given as source (rk_kernel_desc.source) on the CPU backend: the C compiler to run
   *  (a path, or a name looked up in PATH). NULL: the environment's RK_CC, else "cc". */
  const char *cc;
  /** Where compiled source kernels are cached (shared objects named by a hash of the source, the
   *  compiler, its options and the library version; safe for concurrent processes). NULL: the
   *  environment's RK_CACHE_DIR, else $XDG_CACHE_HOME/ringkernel, else ~/.cache/ringkernel. A
   *  directory that cannot be written is not an error: the kernel is compiled in a temporary one. */
  const char *cache_dir;
  /** Serve the runtime's counters over HTTP for Prometheus: "host:port" to listen on ("127.0.0.1:
   *  9464", "[::1]:9464", "0.0.0.0:9464"; port 0 picks a free one, see rk_runtime_metrics_address).
   *  GET /metrics answers rk_runtime_stats_prometheus's text; the server runs on the runtime's
   *  libuv loop (its own thread, or the application's loop). NULL (default): no endpoint. An
   *  address that does not parse or cannot be bound makes rk_runtime_create fail with RK_EINVAL
   *  (resp. RK_ESYS), the reason in rk_runtime_last_error(NULL) and the log. */
  const char *metrics_listen;
  /** The physical time source of every HLC of the runtime: its own clock and each kernel's
   *  clock (the CPU backend's lanes stamp with their kernel's clock). NULL (default): the host's
   *  CLOCK_REALTIME (rk_realtime_us). Microseconds since the epoch; called from any runtime thread,
   *  so it must be thread-safe. For tests and simulations, e.g. a node whose clock is skewed
   *  (tests/test_mpi.c). The CUDA backend's lanes keep their device timer plus an offset measured
   *  against this source (so they accept the host stamps it makes), again every
   *  clock_sync_interval_ns, and sooner when the source moves against CLOCK_MONOTONIC (a step:
   *  before the next send to the kernel, or on the next watchdog tick). A source that does not run
   *  at CLOCK_MONOTONIC's rate looks like a step once it is 1 ms (plus up to 8 ms of allowed
   *  drift) off: an exchange each time. */
  rk_time_source time_source;
  void *time_user; /**< passed to time_source */
  /** How long rk_kernel_activate and rk_kernel_deactivate wait for every lane to acknowledge the
   *  command. A lane that does not (a handler that runs longer, or a machine so loaded that the
   *  lane's thread is not scheduled) faults the kernel with RK_ETIMEDOUT. 0: 5 s. */
  uint64_t command_timeout_ns;
} rk_runtime_options;

/** The default runtime options (rk_runtime_options_init as a macro). */
#define RK_RUNTIME_OPTIONS_INIT \
  { sizeof(rk_runtime_options), RK_BACKEND_AUTO, 0, 0, 0, NULL, NULL, NULL, RK_LOG_WARN, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 0 }

/** What a full inbox does to a sender. */
typedef enum rk_backpressure {
  RK_BACKPRESSURE_DEFAULT = 0, /**< the descriptor's policy (BLOCK if it says nothing) */
  RK_BACKPRESSURE_BLOCK = 1,   /**< wait up to the send timeout, then RK_ETIMEDOUT */
  RK_BACKPRESSURE_REJECT = 2   /**< return RK_EAGAIN at once */
} rk_backpressure;

/** Initialises a kernel's state at launch: 0, or an RK_E* code (the launch fails). */
typedef int (*rk_state_init_fn)(void *state, size_t size, void *user);

/** A kernel: its handler(s), state and geometry. Built-ins: rk_builtin_echo, ... (below). Fields
 *  may be added at the end (.size says which the caller knows): a descriptor from an older header
 *  (smaller) reads the fields it lacks as zero; one from a newer header (larger) is accepted when
 *  every byte past this library's fields is zero, and refused (RK_EINVAL) when one is set. */
typedef struct rk_kernel_desc {
  uint32_t size;                /**< sizeof(rk_kernel_desc) */
  const char *name;             /**< for telemetry and errors */
  rk_handler_fn handler;        /**< CPU backend handler */
  const void *cuda_image;       /**< CUDA backend: embedded fatbin/cubin/PTX with the kernel
                                     (RK_KERNEL and ringkernel_add_kernels fill it) */
  const char *cuda_entry;       /**< CUDA backend: entry point in cuda_image */
  /** Handler source text in the dialect, compiled at run time for the runtime's backend: NVRTC on
   *  CUDA, the system C compiler (rk_runtime_options.cc) into a cached shared object on the CPU.
   *  It runs on every backend with no handler, image or build system (see rk_kernel_compile).
   *  With `handler` set too, the CPU backend runs `handler` and compiles the source only to check
   *  it. (cuda_source: its former name, still accepted.) */
  union {
    const char *source;
    const char *cuda_source;
  };
  /** Name of the handler function in source. (cuda_handler: its former name.) */
  union {
    const char *source_handler;
    const char *cuda_handler;
  };
  size_t state_size;            /**< bytes of persistent state (zeroed, then state_init) */
  rk_state_init_fn state_init;  /**< optional: initialise the state once at launch */
  void *state_init_user; /**< passed to state_init */
  size_t scratch_size;          /**< lane-shared scratch bytes (rk_scratch) */
  uint32_t lanes;               /**< default lanes (blocks); 0: 1 */
  uint32_t threads_per_lane;    /**< default threads per lane; 0: 1. On CUDA at least a warp (32)
                                     unless the launch options name a count */
  uint32_t inbox_capacity;      /**< slots per lane inbox (power of two); 0: 1024 */
  uint32_t outbox_capacity;     /**< slots per lane outbox (power of two); 0: inbox_capacity */
  uint32_t slot_size;           /**< bytes per slot (multiple of 64, at least 128; 0: 256): the ring's 16-byte
                                 *   sequence word, the 64-byte envelope, the payload (so payloads of up to
                                 *   slot_size - 80 bytes) */
  rk_backpressure backpressure; /**< default BLOCK */
  const rk_msg_type *const *types; /**< accepted message types (NULL: any type, any size) */
  uint32_t n_types; /**< entries in types */
  uint32_t max_lanes;           /**< most lanes the handler supports (e.g. 1 when lanes would share
                                     unsynchronised state); 0: RK_MAX_LANES */
} rk_kernel_desc;

/** What a fault does to a kernel (rk_launch_options.fault_policy). A fault is a lane that stopped
 *  making progress with work waiting (the watchdog's stall), a lane that did not acknowledge a
 *  command, a lane whose threads broke the collective rule (kernel.h), or a CUDA error. In every
 *  policy a fault wakes the kernel's waiters (rk_call, rk_recv, blocked senders: RK_ESTATE), the
 *  kernel refuses new messages and commands but rk_kernel_terminate and rk_kernel_restart, and the
 *  fault stays readable with rk_kernel_error after the kernel recovers, restarts or terminates.
 *  Lanes that can still run keep processing what was accepted (terminate drains it). Hard CUDA
 *  faults (an illegal address, ...) are sticky for the process: no policy recovers from them. */
typedef enum rk_fault_policy {
  RK_FAULT_DEFAULT = 0, /**< RK_FAULT_STOP */
  RK_FAULT_STOP = 1,    /**< FAULTED until rk_kernel_restart or rk_kernel_terminate */
  RK_FAULT_RECOVER = 2, /**< a stalled lane that makes progress again clears its fault (the
                             kernel returns to its state before the fault); other faults stop */
  RK_FAULT_RESTART = 3  /**< the runtime restarts the kernel (rk_kernel_restart with
                             restart_flags) after restart_backoff_ns, doubled for each further
                             restart, at most max_restarts times; then as RK_FAULT_STOP */
} rk_fault_policy;

/** Per-launch overrides. Zero fields take the descriptor's values. Start from
 *  RK_LAUNCH_OPTIONS_INIT; fields may be added at the end. A size from an older header (smaller)
 *  gets the defaults for the fields it lacks; one from a newer header (larger) is accepted when
 *  every byte past this library's fields is zero, and refused (RK_EINVAL) when one is set. */
typedef struct rk_launch_options {
  uint32_t size; /**< sizeof(rk_launch_options) */
  uint32_t lanes; /**< lanes (blocks) */
  uint32_t threads_per_lane;    /**< taken as given, on every backend (0: the descriptor's) */
  uint32_t inbox_capacity; /**< slots per lane inbox (power of two) */
  uint32_t outbox_capacity; /**< slots per lane outbox (power of two) */
  uint32_t slot_size; /**< bytes per slot, the ring's 16 bytes and the envelope included */
  rk_backpressure backpressure; /**< what a full inbox does to a sender */
  int64_t send_timeout_ns;      /**< BLOCK policy wait; 0: 1 s; negative: forever */
  uint64_t launch_timeout_ns;   /**< lanes must check in within this; 0: 5 s */
  rk_fault_policy fault_policy; /**< default RK_FAULT_STOP */
  uint32_t max_restarts;        /**< RK_FAULT_RESTART: automatic restarts at most; 0: 3 */
  uint64_t restart_backoff_ns;  /**< RK_FAULT_RESTART: wait before the first; 0: 100 ms */
  uint32_t restart_flags;       /**< RK_FAULT_RESTART: RK_RESTART_* flags of automatic restarts */
  uint32_t dead_letters;        /**< dead letters kept (rk_kernel_dead_letters); 0: 16; at most
                                     RK_MAX_DEAD_LETTERS */
} rk_launch_options;

/** The default launch options (rk_launch_options_init as a macro). */
#define RK_LAUNCH_OPTIONS_INIT \
  { sizeof(rk_launch_options), 0, 0, 0, 0, 0, RK_BACKPRESSURE_DEFAULT, 0, 0, RK_FAULT_DEFAULT, 0, 0, 0, 0 }

/** The defaults as functions, for callers that cannot use the macros (other languages through
 *  the C ABI): fill the first `size` bytes of *o with what RK_RUNTIME_OPTIONS_INIT /
 *  RK_LAUNCH_OPTIONS_INIT give and set o->size to the bytes the library knows of them (at most
 *  size), so a caller built against an older, smaller struct is safe. Errors: RK_EINVAL (NULL, or
 *  size below the struct's first field). */
RK_API int rk_runtime_options_init(rk_runtime_options *o, size_t size);
/** rk_runtime_options_init for rk_launch_options. */
RK_API int rk_launch_options_init(rk_launch_options *o, size_t size);
/** sizeof the library's rk_runtime_options / rk_launch_options / rk_kernel_desc / rk_msg /
 *  rk_kernel_counters / rk_envelope / rk_msg_type / rk_buf_ref, by name without the "rk_" prefix ("runtime_options", ...); 0 for an
 *  unknown name. Lets a binding check its mirrored layouts. */
RK_API size_t rk_struct_size(const char *name);

/* ---------------------------------------- runtime -------------------------------------------- */

/** Create a runtime. opts may be NULL (defaults). With RK_BACKEND_AUTO a machine without a usable
 *  GPU gets the CPU backend (rk_runtime_backend_reason says why).
 *  Errors: RK_EINVAL (bad options), RK_ENODEV (CUDA requested, unavailable: no runtime is
 *  returned, so the reason goes to the log), RK_ENOTSUP (hostile CUDA environment:
 *  CUDA_LAUNCH_BLOCKING=1, a display watchdog, compute capability below 7.5), RK_ESTATE (CUDA
 *  requested while ring kernels of another runtime of this process are resident on the device:
 *  creating a runtime allocates and loads modules, which could hang them; create every runtime
 *  first), RK_ENOMEM, RK_ESYS (the service loop, its wake-up handle or its thread could not be
 *  created; the reason goes to the log). With RK_BACKEND_AUTO those CUDA refusals fall back to the CPU
 *  backend instead. With opts->loop set, call from the loop's thread.
 *  CUDA environment: unless the backend is RK_BACKEND_CPU, the first runtime of the process sets
 *  CUDA_DEVICE_MAX_CONNECTIONS=32 and CUDA_MODULE_LOADING=EAGER before the process's first CUDA
 *  call, each only if the application left it unset (eager loading applies to every module of the
 *  process; docs/cuda-backend.md), and the CUDA backend raises cudaLimitStackSize to 2 KiB. */
RK_API int rk_runtime_create(rk_runtime **out, const rk_runtime_options *opts);
/** Terminate every kernel (rk_kernel_destroy: 1 s each, plus the abort grace), stop the service
 *  thread, free everything. Lanes that never stopped (a handler that does not return) are
 *  abandoned: they free their kernel when they leave, and never call the log callback after this
 *  returns. NULL accepted. With an application loop: call from the loop's thread. */
RK_API void rk_runtime_destroy(rk_runtime *rt);
/** With an application loop (rk_runtime_options.loop), whether the runtime's handles keep it
 *  running: ref 1 makes them referenced (uv_run waits for the runtime's callbacks, and does not
 *  return while the runtime exists), 0 unreferenced again (the default). Call from the loop's
 *  thread. Errors: RK_EINVAL (NULL), RK_ENOTSUP (the runtime runs its own loop). */
RK_API int rk_runtime_ref_loop(rk_runtime *rt, int ref);
/** The backend in use (never AUTO), and why it was chosen. */
RK_API rk_backend rk_runtime_backend(const rk_runtime *rt);
/** Why that backend was chosen. */
RK_API const char *rk_runtime_backend_reason(const rk_runtime *rt);
/** Name of a backend ("cpu", "cuda", "auto"). */
RK_API const char *rk_backend_name(rk_backend b);
/** Detail of the calling thread's last failure on this runtime ("no error" when its last call on
 *  the runtime succeeded: every call that returns an RK_E* code clears it when it starts), in a
 *  buffer of the calling thread valid until its next call into the library. Never NULL.
 *  rt NULL: why the calling thread's last rk_runtime_create failed, where it says ("no runtime"
 *  otherwise). */
RK_API const char *rk_runtime_last_error(const rk_runtime *rt);
/** The runtime's HLC (stamps host sends, merges replies). */
RK_API rk_clock *rk_runtime_clock(rk_runtime *rt);
/** Counters of every kernel as JSON into buf (NUL-terminated when len > 0). Returns the length
 *  the full text needs (excluding NUL), like snprintf, or RK_EINVAL. */
RK_API int rk_runtime_stats_json(rk_runtime *rt, char *buf, size_t len);

/** The same counters in Prometheus' text exposition format (version 0.0.4), into buf like
 *  rk_runtime_stats_json (NUL-terminated when len > 0; returns the length the full text needs,
 *  excluding NUL, or RK_EINVAL / RK_ENOMEM). Families: rk_runtime_info (backend, version, node),
 *  rk_runtime_kernels; per kernel, labelled kernel="<name>",id="<id>": every counter of
 *  rk_kernel_counters as rk_kernel_<field>_total, rk_kernel_state (one sample per state, 1 for the
 *  current one), rk_kernel_lanes, rk_kernel_inbox_depth / rk_kernel_outbox_depth (per lane,
 *  label lane), rk_kernel_inbox_capacity, rk_kernel_heartbeat_age_seconds,
 *  rk_kernel_clock_offset_seconds, and the end-to-end latency as the histogram
 *  rk_kernel_latency_seconds (buckets le = 2^(i+1) ns, i < 47, then +Inf). Any thread. */
RK_API int rk_runtime_stats_prometheus(rk_runtime *rt, char *buf, size_t len);
/** The address the runtime's /metrics endpoint listens on ("127.0.0.1:9464"; the port bound when
 *  rk_runtime_options.metrics_listen asked for port 0), into buf like snprintf. Returns the length
 *  needed, RK_EINVAL (NULL rt, buf NULL with len > 0) or RK_ENOENT (no endpoint). */
RK_API int rk_runtime_metrics_address(rk_runtime *rt, char *buf, size_t len);

/* ---------------------------------------- kernels -------------------------------------------- */

/** Launch a kernel: allocate its state, rings and control block, start its lanes and wait until
 *  every lane has checked in. The kernel is resident and RK_STATE_LAUNCHED (not consuming).
 *  opts may be NULL. A descriptor with a source (desc->source) has it compiled first, on every
 *  backend (cached: see rk_kernel_compile). Errors: RK_EINVAL (bad descriptor or geometry: the
 *  message names the field; unknown fault policy or restart flags; a source that does not compile:
 *  the compiler's first errors in the message), RK_ENOMEM, RK_ESYS (a lane thread could not be
 *  created: nothing is left running; or a compiled source could not be loaded), RK_ENORESOURCE
 *  (more lanes than the device can hold at once, or lanes did not check in within the launch
 *  timeout), RK_ENOTSUP (no handler for this backend: no .handler or .source on the CPU, no
 *  .cuda_image/.cuda_entry or .source on CUDA; or a source and no compiler for it), RK_ECUDA (a
 *  CUDA error, or a fault while the lanes checked in), RK_ESTATE (CUDA: a CUDA image not
 *  loaded yet while ring kernels are resident: launch kernels with their own images first),
 *  RK_ETIMEDOUT (CUDA: the initial state copy did not finish). The detail is in
 *  rk_runtime_last_error. */
RK_API int rk_kernel_launch(rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                            rk_kernel **out);
/** Compile the kernel's source (desc->source, handler desc->source_handler) for the runtime's
 *  backend without launching it: the system C compiler on the CPU backend, NVRTC on CUDA. The
 *  result is cached (a later launch of the same source does not compile again). log (may be NULL
 *  when log_len is 0) receives the compiler's output, NUL-terminated and truncated to log_len;
 *  empty when it said nothing or the result came from the cache.
 *  Errors: RK_EINVAL (NULL, a bad descriptor, no source or no handler name, a source that does not
 *  compile or defines no handler of that name: the compiler's first errors are in the message
 *  too), RK_ENOTSUP (no compiler: the message names what was looked for), RK_ENOMEM, RK_ESYS (the
 *  compiler could not be run, or its result could not be loaded). */
RK_API int rk_kernel_compile(rk_runtime *rt, const rk_kernel_desc *desc, char *log, size_t log_len);

/** LAUNCHED or INACTIVE -> ACTIVE. RK_ESTATE otherwise (FAULTED included); RK_ETIMEDOUT if a lane
 *  did not acknowledge within rk_runtime_options.command_timeout_ns (default 5 s; the kernel
 *  faults). */
RK_API int rk_kernel_activate(rk_kernel *k);
/** ACTIVE -> INACTIVE (messages queue up; the state is kept). RK_ESTATE otherwise; RK_ETIMEDOUT
 *  as activate. */
RK_API int rk_kernel_deactivate(rk_kernel *k);
/** Close the kernel to new messages, process everything already accepted, then stop. Replies
 *  produced while draining can still be received (a full outbox's are kept aside while the drain
 *  runs, so nobody need receive meanwhile: it may be called from the only receiving thread or a
 *  receive callback). A FAULTED kernel is terminated too: it ends TERMINATED, its fault still
 *  readable with rk_kernel_error. timeout_ns < 0 waits for the drain however long it takes;
 *  otherwise the call returns within timeout_ns plus 100 ms (the lanes are told to abort when the
 *  timeout is spent and given 100 ms to leave), the wait for another lifecycle call on k
 *  (activate, deactivate, restart) included. A timeout shorter than the lanes' answer on a kernel
 *  outside a graph with nothing left to drain is RK_OK.
 *  Errors: RK_ESTATE (already terminated), RK_ETIMEDOUT (the drain did not finish: the lanes were
 *  aborted, what they had not taken is not processed; or, CUDA, their exit could not be confirmed
 *  and the memory they address is kept for the runtime's life; or a handler did not return even
 *  after the abort: the kernel stays FAULTED, TERMINATING, and a later rk_kernel_terminate waits
 *  for its lanes again, rk_kernel_destroy abandons them; or another lifecycle call held k past
 *  the timeout: nothing was closed), RK_ECUDA (the lanes died with a CUDA
 *  error: terminated without draining), the fault's code (the lanes had stopped on a fault:
 *  terminated without draining what they had not taken). */
RK_API int rk_kernel_terminate(rk_kernel *k, int64_t timeout_ns);
/** Terminate if needed (1 s) and free the kernel; it returns within 1.1 s (an earlier terminate
 *  that timed out: 100 ms). Lanes that do not stop are abandoned: their memory is kept and freed
 *  when they leave (CPU) or when the device says they exited (CUDA). NULL accepted. No other
 *  thread may use k, and not from a callback or handler of k. */
RK_API void rk_kernel_destroy(rk_kernel *k);

#define RK_RESTART_KEEP_STATE 0x0u  /**< the new lanes continue with the state as it is */
#define RK_RESTART_RESET_STATE 0x1u /**< zero the state and run the descriptor's state_init again */
/** Restart a FAULTED kernel (a soft fault: a stall, a missed acknowledgement, a broken collective
 *  rule): tell its lanes to stop, wait until they have left (up to the launch timeout), start new
 *  lanes on the same rings and return the kernel to its state before the fault (LAUNCHED, ACTIVE
 *  or INACTIVE); the new lanes' check-in and their first acknowledgement wait up to the launch
 *  timeout each, so restart returns within three launch timeouts (15 s by default). Nothing is delivered twice: messages the old lanes took are not seen again,
 *  messages still queued are processed by the new lanes. The fault stays readable
 *  (rk_kernel_error). flags: RK_RESTART_KEEP_STATE or RK_RESTART_RESET_STATE (the state
 *  initialiser runs on the calling thread, before any lock is taken).
 *  Errors: RK_EINVAL (NULL, unknown flags), RK_ESTATE (not FAULTED, or terminating/terminated),
 *  RK_ETIMEDOUT (the old lanes did not leave: a handler that has not returned; the kernel stays
 *  FAULTED and restart may be tried again), RK_ECUDA (a hard CUDA fault, sticky for the process:
 *  terminate the kernel), RK_ENOTSUP (a backend that cannot start lanes again; both built-in ones can),
 *  RK_ENOMEM / RK_ESYS (the new lanes could not start: the kernel stays FAULTED), RK_ENORESOURCE
 *  (the new lanes did not check in within the launch timeout: the kernel stays FAULTED), or the
 *  state initialiser's error. Any thread but a handler's of k. */
RK_API int rk_kernel_restart(rk_kernel *k, uint32_t flags);
/** Current state (the worst lane's: FAULTED wins). 0 for NULL. */
RK_API rk_lifecycle rk_kernel_state(const rk_kernel *k);
/** Copy the kernel's persistent state (at most len bytes) into buf, as its lanes left it: once the
 *  kernel is TERMINATED (on CUDA the state is copied back from the device when its lanes exit).
 *  Returns the bytes copied (0 when state_size is 0), or RK_EINVAL (NULL k, buf NULL with len > 0),
 *  RK_ESTATE (not TERMINATED: the lanes may still change it). */
RK_API int rk_kernel_read_state(rk_kernel *k, void *buf, size_t len);
/** Name of a state ("ACTIVE", ...). */
RK_API const char *rk_state_name(rk_lifecycle s);
/** The kernel's last fault: returns its RK_E* code (0 if it never faulted) and copies its message
 *  into buf (len may be 0). The fault stays readable after the kernel recovered, restarted or
 *  terminated; rk_kernel_state says whether it is FAULTED now. */
RK_API int rk_kernel_error(const rk_kernel *k, char *buf, size_t len);
/** The kernel's id (its HLC node id and envelope dst), name and lane count. */
RK_API uint32_t rk_kernel_id(const rk_kernel *k);
/** The kernel's name (the descriptor's). */
RK_API const char *rk_kernel_name(const rk_kernel *k);
/** The kernel's lane count. */
RK_API uint32_t rk_kernel_lanes(const rk_kernel *k);

/* ---------------------------------------- messages ------------------------------------------- */

/* Send flags. */
#define RK_SEND_NO_REPLY 0x1u /**< the kernel produces no reply */
#define RK_SEND_CHECKSUM 0x2u /**< seal the payload with CRC32C; the kernel verifies it */
#define RK_SEND_NOWAIT 0x4u   /**< REJECT policy for this send: RK_EAGAIN when the inbox is full */
#define RK_SEND_KEYED 0x8u    /**< (rk_send_item) route by key: same key -> same lane -> ordered */
#define RK_SEND_FLAGS_ALL 0xfu /**< every flag above: any other bit is refused (RK_EINVAL) */

/** Send one message to the kernel, round-robin over its lanes. *msg_id (may be NULL) receives the
 *  message id that its reply's correlation id will carry.
 *  Errors: RK_EINVAL (NULL, type 0, payload NULL with len > 0, type not declared by a typed
 *  kernel, a flag not in RK_SEND_FLAGS_ALL), RK_EMSGSIZE (len above the slot's payload, or not
 *  the declared size of the type), RK_EAGAIN (full, REJECT policy or RK_SEND_NOWAIT),
 *  RK_ETIMEDOUT (full for the whole send timeout, BLOCK policy), RK_ECLOSED
 *  (terminating/terminated), RK_ESTATE (faulted, before or while the send waited for room),
 *  RK_ECORRUPT (the lane's inbox header was found rewritten since launch: the kernel is now
 *  FAULTED with RK_ECORRUPT).
 *  When the inbox is full because the lane stopped on a full outbox, the error's detail says so
 *  (receive the replies with rk_recv, or send with RK_SEND_NO_REPLY).
 *  A failed send has claimed nothing: the kernel never sees it. */
RK_API int rk_send(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                   uint64_t *msg_id);
/** Send with a lane key: messages with the same key go to the same lane, in order. */
RK_API int rk_send_key(rk_kernel *k, uint64_t key, uint32_t type, const void *payload, uint32_t len,
                       uint32_t flags, uint64_t *msg_id);

/** rk_send with a caller-chosen 64-bit token (like io_uring's user_data): the token comes back
 *  with the reply, so an asynchronous client correlates by its own value instead of racing the
 *  library's message id (a reply can reach a receive callback before rk_send returns the id).
 *  Take it with rk_recv_token, or with rk_msg_token in a receive callback or after rk_recv or
 *  rk_recv_batch: each reply's token is handed out once. The envelope has no room for it: the
 *  host keeps (message id, token) per kernel from before the send until the token is taken, or
 *  the kernel is destroyed (so a reply received without taking its token keeps a 16-byte entry
 *  until then). A request sent with RK_SEND_NO_REPLY keeps nothing. Errors: as rk_send, and
 *  RK_ENOMEM (the table could not grow). Any thread. */
RK_API int rk_send_token(rk_kernel *k, uint64_t token, uint32_t type, const void *payload, uint32_t len,
                         uint32_t flags, uint64_t *msg_id);
/** rk_send_token with a lane key (rk_send_key's routing). */
RK_API int rk_send_key_token(rk_kernel *k, uint64_t key, uint64_t token, uint32_t type, const void *payload,
                             uint32_t len, uint32_t flags, uint64_t *msg_id);
/** The token of a reply whose request went with rk_send_token: returns 1 and *token (may be NULL)
 *  the first time it is asked, 0 (and *token 0) for a reply whose request had none or whose token
 *  was already taken, RK_EINVAL (NULL k or reply). Any thread; in a receive callback too. */
RK_API int rk_msg_token(rk_kernel *k, const rk_msg *reply, uint64_t *token);
/** rk_recv, then rk_msg_token on what it received: *token (may be NULL) is the reply's token, 0
 *  when it has none. Returns what rk_recv returns. */
RK_API int rk_recv_token(rk_kernel *k, rk_msg *msg, void *buf, uint32_t buf_len, int64_t timeout_ns,
                         uint64_t *token);

/** One message of a batch. */
typedef struct rk_send_item {
  uint32_t type; /**< message type id */
  uint32_t len; /**< payload bytes */
  const void *payload; /**< the payload */
  uint64_t key;    /**< used with RK_SEND_KEYED in flags */
  uint32_t flags;  /**< RK_SEND_* for this item */
  uint64_t msg_id; /**< out: the message id */
} rk_send_item;

/** Send up to n messages, claiming ring slots in groups (one claim per lane run). Returns the
 *  number sent (items [0, ret) were accepted, in order) or a negative error when none was. The
 *  first failure stops the batch. */
RK_API int rk_send_batch(rk_kernel *k, rk_send_item *items, uint32_t n);

/** Receive the next reply not claimed by an rk_call waiter, from any lane. The payload is copied
 *  into buf (truncated to buf_len: msg->len says what was copied). timeout_ns: < 0 forever, 0 poll.
 *  Errors: RK_EINVAL, RK_ETIMEDOUT (nothing arrived), RK_EAGAIN (timeout 0 and nothing ready),
 *  RK_ECLOSED (terminated and every reply received), RK_ESTATE (callbacks are started; or the
 *  kernel is FAULTED and no reply is ready: a waiting rk_recv returns as soon as it faults),
 *  RK_ECORRUPT (nothing received and a lane's outbox header was found damaged: the kernel is
 *  FAULTED). Replies with a failed HLC merge are still delivered (status RK_ECLOCK). A reply the
 *  host refused (rk_envelope_validate_reply failed; counted in replies_invalid) is never delivered
 *  with its payload: when its header was sound enough to trust its ids (a check result from
 *  RK_ENV_BAD_LENGTH on) a notice comes in its place, an error reply (rk_msg_is_error) with status
 *  RK_ECORRUPT, no payload and the refused envelope's ids (correlation_id names the request);
 *  otherwise nothing comes. On an error *msg and buf hold nothing to use (they may have been
 *  written). */
RK_API int rk_recv(rk_kernel *k, rk_msg *msg, void *buf, uint32_t buf_len, int64_t timeout_ns);
/** Receive up to n replies at once: msgs[i].payload points into bufs + i * buf_len. Returns the
 *  number received (>= 1) or an error as rk_recv. The entries from the count returned on, and all
 *  of them on an error, hold nothing to use (they may have been written). */
RK_API int rk_recv_batch(rk_kernel *k, rk_msg *msgs, void *bufs, uint32_t buf_len, uint32_t n,
                         int64_t timeout_ns);

/** Request/reply: send, then wait for the reply whose correlation id is this request's id.
 *  Concurrent callers each get their own reply. timeout_ns bounds the whole call, the wait for
 *  inbox room included; < 0 waits as long as the kernel can still answer; 0 is RK_EINVAL (a call
 *  cannot complete without waiting, and would leave its request to run unanswered).
 *  Returns 0, RK_EMSGSIZE (the reply is longer than buf_len: it was received, reply->len bytes
 *  copied, reply->env.payload_len is its length), RK_EHANDLER (an error reply: its code in
 *  reply->status), RK_ETIMEDOUT (no reply in time; a late reply is then discarded, counted and
 *  kept as a dead letter), RK_ESTATE (the kernel faulted while the call waited: its reply, should
 *  it come, is discarded), RK_ECLOSED (terminated without answering), RK_ECORRUPT (the reply came
 *  and was refused as corrupt, see rk_recv: reply is the notice, len 0; or the lane's outbox header
 *  was found damaged and the kernel FAULTED: no reply can come), RK_EINVAL, or any rk_send error.
 *  A refused reply whose header is too damaged to name its request wakes no one: the call then
 *  ends at its timeout (replies_invalid counts it). */
RK_API int rk_call(rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, rk_msg *reply,
                   void *buf, uint32_t buf_len, int64_t timeout_ns);
/** rk_call routed by key, as rk_send_key. */
RK_API int rk_call_key(rk_kernel *k, uint64_t key, uint32_t type, const void *req, uint32_t req_len,
                       rk_msg *reply, void *buf, uint32_t buf_len, int64_t timeout_ns);

/** Asynchronous receive: replies not claimed by rk_call are delivered to cb on the runtime's loop
 *  thread (the service thread, or the application loop), one at a time, with no library lock
 *  held: the callback may call the library (rk_recv_stop included). msg->payload is valid during
 *  the call. While started, rk_recv on this kernel returns RK_ESTATE.
 *  Errors: RK_EINVAL, RK_ESTATE (already started), RK_ENOMEM. */
typedef void (*rk_recv_cb)(rk_kernel *k, const rk_msg *msg, void *user);
/** Start delivering the kernel's unclaimed replies to cb (see above). */
RK_API int rk_recv_start(rk_kernel *k, rk_recv_cb cb, void *user);
/** Stop callbacks: after it returns no callback is running or will run. From inside the
 *  kernel's own callback it returns at once, and no callback runs after the current one returns.
 *  Errors: RK_EINVAL, RK_ESTATE (not started). */
RK_API int rk_recv_stop(rk_kernel *k);

/* Typed helpers: sizes checked at compile time (and by the runtime). */
/** rk_send of a typed message T (sizes checked at compile time). */
#define rk_send_typed(k, T, ptr, flags, id) \
  (RK__CHECK_TYPED(T, ptr), rk_send((k), T##_TYPE, (ptr), (uint32_t)sizeof(T), (flags), (id)))
/** rk_call with a typed request T (sizes checked at compile time). */
#define rk_call_typed(k, T, ptr, reply, buf, buf_len, timeout) \
  (RK__CHECK_TYPED(T, ptr), rk_call((k), T##_TYPE, (ptr), (uint32_t)sizeof(T), (reply), (buf), (buf_len), (timeout)))
/* ...with a lane key (rk_send_key / rk_call_key): same key, same lane, in order. */
/** rk_send_key of a typed message T. */
#define rk_send_key_typed(k, key, T, ptr, flags, id) \
  (RK__CHECK_TYPED(T, ptr), rk_send_key((k), (key), T##_TYPE, (ptr), (uint32_t)sizeof(T), (flags), (id)))
/** rk_call_key with a typed request T. */
#define rk_call_key_typed(k, key, T, ptr, reply, buf, buf_len, timeout)                                  \
  (RK__CHECK_TYPED(T, ptr), rk_call_key((k), (key), T##_TYPE, (ptr), (uint32_t)sizeof(T), (reply), (buf), \
                                        (buf_len), (timeout)))

/* ---------------------------------------- telemetry ------------------------------------------ */

#define RK_LATENCY_BUCKETS 48 /**< bucket i counts latencies in [2^i, 2^(i+1)) ns */

/** Counters of one kernel. Lane counters are summed; depths are per lane. */
typedef struct rk_kernel_counters {
  uint32_t size;              /**< set by the caller to sizeof(rk_kernel_counters) */
  rk_lifecycle state; /**< lifecycle state */
  uint32_t lanes; /**< lanes of the kernel */
  uint64_t sent;              /**< accepted by rk_send* */
  uint64_t send_rejected;     /**< RK_EAGAIN from a full inbox */
  uint64_t send_timeouts;     /**< RK_ETIMEDOUT from a full inbox */
  uint64_t send_invalid;      /**< refused by argument or type checks */
  uint64_t msgs_in;           /**< taken by the kernel */
  uint64_t msgs_out;          /**< replies published by the kernel */
  uint64_t received;          /**< replies delivered to the host (call, recv, callbacks) */
  uint64_t late_replies;      /**< replies to rk_call waiters that had timed out (discarded) */
  uint64_t k2k_in;            /**< K2K messages taken from the kernel's K2K inboxes */
  uint64_t k2k_out;           /**< K2K messages (and K2K replies) its lanes sent */
  uint64_t k2k_refused;       /**< its K2K sends refused: destination full or gone, or no route */
  uint64_t k2k_invalid;       /**< K2K envelopes it refused (validation) */
  uint64_t k2k_dropped;       /**< topic messages it missed: its K2K inbox was full */
  uint64_t invalid;           /**< envelopes refused by the kernel */
  uint64_t clock_rejected;    /**< stamps refused by the drift bound */
  uint64_t handler_errors; /**< handler errors (error replies) */
  uint64_t outbox_stalls;     /**< the lane stopped taking input because its outbox was full */
  uint64_t heartbeat_age_ns;  /**< oldest lane heartbeat age (0 while idle lanes are parked) */
  uint64_t inbox_depth[RK_MAX_LANES]; /**< messages waiting in each lane's inbox */
  uint64_t outbox_depth[RK_MAX_LANES]; /**< replies waiting in each lane's outbox */
  uint64_t latency_count;     /**< samples in the histogram (end to end, host send -> host receive) */
  uint64_t latency_hist[RK_LATENCY_BUCKETS]; /**< latency histogram (RK_LATENCY_BUCKETS log2 buckets) */
  uint64_t latency_p50_ns;     /**< median latency, from the histogram (a bucket upper bound) */
  uint64_t latency_p99_ns;     /**< 99th percentile latency, from the histogram (a bucket upper bound) */
  /* Clock synchronisation (runtime option clock_sync_interval_ns). */
  int64_t clock_offset_ns;     /**< last accepted measurement: host clock (time_source) - lane clock
                                    (the CUDA lanes stamp with %globaltimer + this; CPU: about 0) */
  uint64_t clock_sync_window_ns; /**< round trip of that measurement; its error is at most half */
  uint64_t clock_syncs;        /**< accepted measurements (the one at launch included) */
  uint64_t clock_sync_misses;  /**< exchanges dropped: no answer in time, or too slow to be precise */
  /* Faults (rk_fault_policy). */
  uint64_t faults;             /**< faults raised */
  uint64_t recoveries;         /**< faults cleared by a lane that made progress again (RK_FAULT_RECOVER) */
  uint64_t restarts;           /**< restarts (rk_kernel_restart or automatic) */
  uint64_t dead_letters;       /**< dead letters recorded (rk_kernel_dead_letters) */
  /** Replies the host refused: their envelope failed rk_envelope_validate_reply, or named an
   *  rk_call sent on another lane. Their payload is never delivered; when their ids could be
   *  believed, an RK_ECORRUPT notice went in their place (see rk_call, rk_recv). Balance:
   *  msgs_out = received + late_replies + replies_invalid + what is still queued. */
  uint64_t replies_invalid;
  uint64_t latency_sum_ns;     /**< the latency samples of the histogram, summed (ns) */
} rk_kernel_counters;

/** Snapshot a kernel's counters. stats->size must be set: a smaller size (a program built with an
 *  older header) gets the fields it knows. Errors: RK_EINVAL (NULL, size below the fields up to
 *  clock_sync_misses).
 *
 *  The fields are read one by one while the lanes run, so one snapshot is not a single instant
 *  across fields: a counter is current as of its own read. The orders that do hold: a reply is
 *  counted in msgs_out before it can be taken from the outbox, and in received (and the latency
 *  histogram) before the rk_call or rk_recv that takes it returns. So msgs_out may already include
 *  replies that outbox_depth does not show yet; wait for the quantity you mean to assert on. */
RK_API int rk_kernel_stats(rk_kernel *k, rk_kernel_counters *stats);

/* ---------------------------------------- dead letters --------------------------------------- */

#define RK_DEAD_LETTER_PAYLOAD 64 /**< payload bytes a dead letter keeps */
#define RK_MAX_DEAD_LETTERS 65536u /**< most dead letters a kernel keeps (rk_launch_options) */

/** A message the kernel refused, or a reply the host discarded, with the reason. */
typedef struct rk_dead_letter {
  rk_envelope env;      /**< the envelope as it was refused or discarded */
  int32_t reason;       /**< RK_ECORRUPT (invalid envelope), RK_ECLOCK (stamp too far ahead),
                             RK_ETIMEDOUT (a reply whose rk_call caller had given up),
                             RK_EAGAIN (an error reply that found the outbox full) */
  uint32_t lane;        /**< the lane that refused it or whose outbox held it */
  const char *why;      /**< static text: "bad magic", "late reply", ... */
  uint64_t time_ns;     /**< CLOCK_REALTIME when it was recorded */
  uint32_t payload_len; /**< payload bytes kept below (at most RK_DEAD_LETTER_PAYLOAD) */
  uint8_t payload[RK_DEAD_LETTER_PAYLOAD]; /**< the first payload_len bytes of its payload */
} rk_dead_letter;

/** Copy the kernel's most recent dead letters, oldest first, up to max (the launch option
 *  dead_letters says how many are kept), into out; *total (may be NULL) receives how many were
 *  recorded in the kernel's life. Returns the number copied, or RK_EINVAL (NULL k, or out NULL
 *  with max > 0). Any thread. A CUDA lane answers an envelope it refuses with an error reply
 *  (when the envelope is sound enough to answer); the host records that dead letter when it takes
 *  the reply: the reply's envelope (the request's type and id), without the request's payload.
 *  Host-side dead letters (late replies) are recorded on every backend. */
RK_API int rk_kernel_dead_letters(rk_kernel *k, rk_dead_letter *out, uint32_t max, uint64_t *total);

/* ---------------------------------------- message types ------------------------------------- */

/** A message type by name, for callers that cannot see RK_MESSAGE's constants (T\#\#_TYPE): among
 *  the types desc declares, or, desc NULL, the built-in kernels' types ("rk_vadd_req", ...).
 *  NULL when there is none of that name (or name is NULL). Any thread. */
RK_API const rk_msg_type *rk_msg_type_find(const rk_kernel_desc *desc, const char *name);

/* ---------------------------------------- built-in kernels ----------------------------------- */

/** echo: replies with the request's type and payload. Untyped. */
RK_API extern const rk_kernel_desc rk_builtin_echo;
/** vector_add: rk_vadd_req in, rk_vadd_reply out (sum and the kernel's stamp). */
RK_API extern const rk_kernel_desc rk_builtin_vector_add;
/** counter: stateful; rk_counter_add in, rk_counter_value out (running total, messages seen).
 *  One lane (its state is one running total): launching it with more lanes is RK_EINVAL. */
RK_API extern const rk_kernel_desc rk_builtin_counter;

/* ---------------------------------------- kernel definitions -------------------------------- */

/** Define a kernel in a dialect source file, next to its handler:
 *
 *      RK_KERNEL(bank, bank_handler, .state_size = sizeof(bank_state), .lanes = 4,
 *                RK_TYPES(&bank_deposit_msgtype, &bank_query_msgtype));
 *
 *  The first argument names the descriptor (a `const rk_kernel_desc` the host code launches; its
 *  .name is the same text), the second is the handler; any further arguments are designated
 *  initialisers of rk_kernel_desc fields (state_size, state_init, lanes, max_lanes, ...). Compiled
 *  by the C compiler it defines the descriptor; compiled by nvcc (ringkernel_add_kernels does this
 *  with the device runtime, giving a fatbin) it defines the CUDA entry point rk_kernel_<name>
 *  instead. When the C compilation is told where that fatbin is (RK_KERNEL_FATBIN, a string
 *  literal: the CMake function sets it), the fatbin is embedded in the object and the descriptor's
 *  cuda_image and cuda_entry point to it; otherwise they stay NULL and the kernel runs on the CPU
 *  backend only. Kernel source files are C (or CUDA under nvcc), not C++.
 *  Other files see the descriptor through RK_KERNEL_DECLARE(bank); (C and C++). */
#if defined(__CUDACC__)
#if defined(RK_DEFINE_RING_KERNEL)
#define RK_KERNEL(kname, ...) RK_DEFINE_RING_KERNEL(rk_kernel_##kname, RK__FIRST(__VA_ARGS__))
#else /* nvcc without the device runtime (a .cu that only shares the file): nothing to define */
#define RK_KERNEL(name, ...) RK_STATIC_ASSERT(1, #name)
#endif
#define RK_TYPES(...)
#elif defined(__cplusplus) && defined(RK_DEFINE_RING_KERNEL)
/* the device loop compiled as host C++ (the test suite's emulated device): the entry point */
#define RK_KERNEL(kname, ...) RK_DEFINE_RING_KERNEL(rk_kernel_##kname, RK__FIRST(__VA_ARGS__))
#define RK_TYPES(...)
#elif defined(__cplusplus)
#define RK_KERNEL(kname, ...) static_assert(false, "RK_KERNEL: compile kernel source files as C (or CUDA)")
#define RK_TYPES(...)
#else
#if defined(RK_KERNEL_FATBIN)
/* The fatbin, once per object however many kernels it defines, in .nv_fatbin (where cuobjdump
 * looks for device code); a local symbol, so objects of one program never clash. */
#define RK__KERNEL_IMAGE_DECL                                                                     \
  __asm__(".ifndef rk__kernel_fatbin\n.pushsection .nv_fatbin,\"a\"\n.balign 16\nrk__kernel_fatbin:\n"   \
          ".incbin \"" RK_KERNEL_FATBIN "\"\n.byte 0\n.popsection\n.endif\n");                      \
  extern const unsigned char rk__kernel_fatbin[] __attribute__((visibility("hidden")));
#define RK__KERNEL_IMAGE ((const void *)rk__kernel_fatbin)
#define RK__KERNEL_ENTRY(kname) "rk_kernel_" #kname
#else
#define RK__KERNEL_IMAGE_DECL
#define RK__KERNEL_IMAGE NULL
#define RK__KERNEL_ENTRY(kname) NULL
#endif
/** Defines a kernel next to its handler (see above). */
#define RK_KERNEL(kname, ...)                                                                     \
  RK__KERNEL_IMAGE_DECL                                                                           \
  const rk_kernel_desc kname = {.size = sizeof(rk_kernel_desc), .name = #kname, .cuda_image = RK__KERNEL_IMAGE, \
                                .cuda_entry = RK__KERNEL_ENTRY(kname), .handler = __VA_ARGS__}
/** The accepted message types of an RK_KERNEL: RK_TYPES(&a_msgtype, &b_msgtype) sets .types and
 *  .n_types. */
#define RK_TYPES(...)                                                          \
  .types = (const rk_msg_type *const[]){__VA_ARGS__},                         \
  .n_types = (uint32_t)(sizeof((const rk_msg_type *const[]){__VA_ARGS__}) / sizeof(const rk_msg_type *))
#endif
#define RK__FIRST(...) RK__FIRST_(__VA_ARGS__, ~)
#define RK__FIRST_(a, ...) a

/** Declare a kernel defined with RK_KERNEL in another file: RK_KERNEL_DECLARE(bank); */
#if defined(__cplusplus)
#define RK_KERNEL_DECLARE(name) extern "C" const rk_kernel_desc name
#else
#define RK_KERNEL_DECLARE(name) extern const rk_kernel_desc name
#endif

#else /* __CUDACC_RTC__: a source compiled at run time defines its handler only */
#define RK_KERNEL(name, ...) static_assert(1, #name)
#define RK_KERNEL_DECLARE(name) static_assert(1, #name)
#define RK_TYPES(...)
#endif /* !__CUDACC_RTC__ */

RK_EXTERN_C_END

#endif /* RINGKERNEL_RUNTIME_H */
