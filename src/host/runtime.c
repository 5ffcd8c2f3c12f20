/* runtime.c — runtime creation and destruction, backend choice, logging and last-error, and the
 * libuv service loop (watchdog timer, callback delivery through uv_async).
 *
 * (Logging and the per-thread last error live in diag.c.)
 *
 * The service loop runs on the runtime's own thread, or on the application's loop when one is
 * given (then create/destroy are called on that loop's thread, as libuv requires). Lane workers
 * wake it with uv_async_send, which is thread-safe and coalesces. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
/* membarrier(2)'s commands (linux/membarrier.h; an enum there, missing from headers before 4.14):
 * the kernel's ABI values. An older kernel refuses them (EINVAL), and the caller keeps its bound. */
#define RK_MEMBARRIER_CMD_PRIVATE_EXPEDITED (1 << 3)
#define RK_MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#endif

#include "host/internal.h"

#define RK_DEFAULT_WATCHDOG_INTERVAL_NS 50000000ull

struct rk__handles {
  uv_async_t async;
  uv_timer_t timer;
  rk_runtime *rt; /* NULL once the runtime is gone */
  int open;
};

void rk__sleep_ns(uint64_t ns) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ns / 1000000000u);
  ts.tv_nsec = (long)(ns % 1000000000u);
  nanosleep(&ts, NULL);
}

/* A full memory barrier on every running thread of the process (membarrier(2), private expedited;
 * the process registers once, on first use). For the rare side of an asymmetric Dekker pair whose
 * frequent side must not pay a fence (rk_recv_start against outbox_let_go, messaging.c). Returns 0
 * when done, -1 when the system offers no such barrier (not Linux, a kernel before 4.14, or a
 * filter that forbids the call): the caller then keeps the bound it had without it. */
int rk__process_barrier(void) {
#if defined(__linux__) && defined(SYS_membarrier)
  static int registered; /* 1 registered, -1 unavailable (relaxed: a race only registers twice) */
  int state = __atomic_load_n(&registered, __ATOMIC_RELAXED);
  if (state == 0) {
    state = syscall(SYS_membarrier, RK_MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 ? 1 : -1;
    __atomic_store_n(&registered, state, __ATOMIC_RELAXED);
  }
  if (state == 1 && syscall(SYS_membarrier, RK_MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return 0;
#endif
  return -1;
}

uint64_t rk__realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t rk__host_time_ns(const rk_runtime *rt) {
  uint64_t us;
  if (rt->opts.time_source == NULL) return rk__realtime_ns();
  us = rt->opts.time_source(rt->opts.time_user);
  return us > UINT64_MAX / 1000u ? UINT64_MAX : us * 1000u;
}

const char *rk_backend_name(rk_backend b) {
  switch (b) {
    case RK_BACKEND_AUTO: return "auto";
    case RK_BACKEND_CPU: return "cpu";
    case RK_BACKEND_CUDA: return "cuda";
    default: return "unknown";
  }
}

uint64_t rk__msg_id(rk_runtime *rt) {
  return __atomic_add_fetch(&rt->next_msg_id, 1, __ATOMIC_RELAXED) & ~RK__CALL_BIT;
}

rk_backend rk_runtime_backend(const rk_runtime *rt) { return rt ? rt->backend : RK_BACKEND_AUTO; }
const char *rk_runtime_backend_reason(const rk_runtime *rt) { return rt ? rt->backend_reason : ""; }
rk_clock *rk_runtime_clock(rk_runtime *rt) { return rt ? rt->clock : NULL; }

/* ---------------------------------------- options ------------------------------------------- */

int rk_runtime_options_init(rk_runtime_options *o, size_t size) {
  const rk_runtime_options d = RK_RUNTIME_OPTIONS_INIT;
  if (o == NULL || size < sizeof o->size) return RK_EINVAL;
  if (size > sizeof d) size = sizeof d;
  memcpy(o, &d, size);
  o->size = (uint32_t)size;
  return RK_OK;
}

int rk_launch_options_init(rk_launch_options *o, size_t size) {
  const rk_launch_options d = RK_LAUNCH_OPTIONS_INIT;
  if (o == NULL || size < sizeof o->size) return RK_EINVAL;
  if (size > sizeof d) size = sizeof d;
  memcpy(o, &d, size);
  o->size = (uint32_t)size;
  return RK_OK;
}

size_t rk_struct_size(const char *name) {
  static const struct {
    const char *name;
    size_t size;
  } sizes[] = {{"runtime_options", sizeof(rk_runtime_options)}, {"launch_options", sizeof(rk_launch_options)},
               {"kernel_desc", sizeof(rk_kernel_desc)},         {"msg", sizeof(rk_msg)},
               {"kernel_counters", sizeof(rk_kernel_counters)}, {"envelope", sizeof(rk_envelope)},
               {"msg_type", sizeof(rk_msg_type)},               {"buf_ref", sizeof(rk_buf_ref)}};
  size_t i;
  if (name == NULL) return 0;
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    if (strcmp(sizes[i].name, name) == 0) return sizes[i].size;
  return 0;
}

/* ---------------------------------------- backend choice ------------------------------------- */

/* ---------------------------------------- service loop --------------------------------------- */

/* This thread's passes over kernel lists, innermost first (a pass's fn may start another). */
typedef struct pass {
  rk_kernel **ks;
  size_t n, i; /* ks[i] is being served; ks[i + 1 ..] are pinned, not served yet */
  struct pass *outer;
} pass;
static _Thread_local pass *tl_pass;

/* k is being destroyed on this thread (unlink_kernel, kernel.c): the passes of this thread that
 * pinned k and have not served it yet let it go, so that the destroy's wait for the pins does not
 * wait for this thread itself. Destroying an older kernel from a newer kernel's receive callback
 * (or from the log callback during a watchdog pass) hung the service thread forever: the pass
 * pins its whole snapshot before serving any. */
void rk__for_each_release(rk_kernel *k) {
  pass *p;
  size_t j;
  for (p = tl_pass; p; p = p->outer)
    for (j = p->i + 1; j < p->n; j++)
      if (p->ks[j] == k) {
        p->ks[j] = NULL;
        __atomic_sub_fetch(&k->refs, 1, __ATOMIC_RELEASE); /* pairs with rk_kernel_destroy */
      }
}

/* Run fn over a snapshot of the kernel list; each kernel is pinned by refs while it is used. */
void rk__for_each_kernel(rk_runtime *rt, void (*fn)(rk_kernel *, void *), void *arg) {
  rk_kernel *stack[64], **ks = stack, *k;
  size_t n = 0, cap = sizeof stack / sizeof stack[0], i;
  rk__lock(&rt->lock);
  /* Every kernel, however many: a fixed-size snapshot would never serve the oldest ones. */
  for (k = rt->kernels; k; k = k->next) n++;
  if (n > cap) {
    rk_kernel **big = (rk_kernel **)rk__malloc(n * sizeof *big);
    if (big) { /* (out of memory: serve the first `cap` of them this pass) */
      ks = big;
      cap = n;
    }
  }
  n = 0;
  for (k = rt->kernels; k && n < cap; k = k->next) {
    __atomic_add_fetch(&k->refs, 1, __ATOMIC_ACQUIRE);
    ks[n++] = k;
  }
  rk__unlock(&rt->lock);
  {
    pass me = {ks, n, 0, tl_pass};
    tl_pass = &me;
    for (i = 0; i < n; i++) {
      me.i = i;
      if (ks[i] == NULL) continue; /* destroyed by an earlier fn of this pass: let go then */
      fn(ks[i], arg);
      __atomic_sub_fetch(&ks[i]->refs, 1, __ATOMIC_RELEASE); /* pairs with rk_kernel_destroy */
    }
    tl_pass = me.outer;
  }
  if (ks != stack) free(ks);
}

static void call_plain(rk_kernel *k, void *fn) { (*(void (**)(rk_kernel *))fn)(k); }

static void for_each_kernel(rk_runtime *rt, void (*fn)(rk_kernel *)) { rk__for_each_kernel(rt, call_plain, &fn); }

static void on_close(uv_handle_t *h) {
  struct rk__handles *hs = (struct rk__handles *)h->data;
  if (--hs->open == 0) free(hs);
}

static void close_handles(struct rk__handles *hs) {
  uv_close((uv_handle_t *)&hs->async, on_close);
  uv_close((uv_handle_t *)&hs->timer, on_close);
}

static void on_async(uv_async_t *a) {
  struct rk__handles *hs = (struct rk__handles *)a->data;
  rk_runtime *rt = hs->rt;
  if (rt == NULL) return;
  if (__atomic_load_n(&rt->stopping, __ATOMIC_ACQUIRE) && rt->own_thread) {
    close_handles(hs);
    rk__metrics_close(rt->metrics);
    return;
  }
  for_each_kernel(rt, rk__dispatch_callbacks);
  rk__buffers_service(rt); /* buffer copies' completions (buffer.c) */
}

static void on_timer(uv_timer_t *t) {
  struct rk__handles *hs = (struct rk__handles *)t->data;
  rk_runtime *rt = hs->rt;
  if (rt == NULL) return;
  /* Kernel by kernel, no runtime lock held: a fault logs (the application's callback) */
  for_each_kernel(rt, rk__watchdog_kernel);
  for_each_kernel(rt, rk__kernel_fault_service); /* recoveries and automatic restarts when due */
  for_each_kernel(rt, rk__clock_sync); /* due exchanges only: a few microseconds each */
  for_each_kernel(rt, rk__dispatch_callbacks); /* anything a coalesced wake-up left behind */
  rk__buffers_service(rt);
  rk__tsc_calibrate(); /* the latency samples' scale (tsc.c): a pair of readings, no wait */
}

static void service_main(void *arg) {
  rk_runtime *rt = (rk_runtime *)arg;
  uv_run(rt->loop, UV_RUN_DEFAULT);
}

void rk__service_wake(rk_runtime *rt) {
  if (rt->handles) uv_async_send(&rt->handles->async);
}

int rk_runtime_ref_loop(rk_runtime *rt, int ref) {
  void (*fn)(uv_handle_t *) = ref ? uv_ref : uv_unref;
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  if (rt->own_thread) return rk__fail(rt, RK_ENOTSUP, "rk_runtime_ref_loop: the runtime runs its own loop");
  fn((uv_handle_t *)&rt->handles->async);
  fn((uv_handle_t *)&rt->handles->timer);
  return RK_OK;
}

/* ---------------------------------------- create / destroy ----------------------------------- */

int rk_runtime_create(rk_runtime **out, const rk_runtime_options *opts) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_runtime *rt;
  int rc, cuda_ok, uvrc;
  char reason[320];
  uint64_t interval;

  if (out == NULL) return RK_EINVAL;
  *out = NULL;
  rk__create_error("%s", "");
  if (opts) {
    if (opts->size < sizeof(uint32_t)) {
      rk__create_error("RK_EINVAL: rk_runtime_options.size is %u: set it (RK_RUNTIME_OPTIONS_INIT, "
                       "rk_runtime_options_init)", opts->size);
      return RK_EINVAL;
    }
    if (opts->size > sizeof o && !rk__struct_tail_zero(opts, sizeof o, opts->size)) {
      rk__create_error("RK_EINVAL: rk_runtime_options.size is %u and fields past this library's %zu bytes are set "
                       "(built against a newer header? this library is %s)", opts->size, sizeof o,
                       rk_version_string());
      return RK_EINVAL;
    }
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = sizeof o;
  }
  if (o.backend != RK_BACKEND_AUTO && o.backend != RK_BACKEND_CPU && o.backend != RK_BACKEND_CUDA) {
    rk__create_error("RK_EINVAL: unknown backend %d", (int)o.backend);
    return RK_EINVAL;
  }
  if ((unsigned)o.log_level > RK_LOG_DEBUG) o.log_level = RK_LOG_DEBUG;

  /* 1 when a device is present (rk__cuda_init may still refuse it), else 0 with the reason */
  cuda_ok = o.backend == RK_BACKEND_CPU ? 0 : rk__cuda_probe(o.device, reason, sizeof reason);
  if (o.backend == RK_BACKEND_CUDA && !cuda_ok) {
    rk_runtime tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.opts = o;
    rk__log(&tmp, RK_LOG_ERROR, "RK_BACKEND_CUDA unavailable: %s", reason);
    rk__create_error("RK_ENODEV: RK_BACKEND_CUDA unavailable: %s", reason);
    return RK_ENODEV;
  }

  rt = (rk_runtime *)rk__calloc(1, sizeof *rt);
  if (rt == NULL) return RK_ENOMEM;
  rt->opts = o;
  rt->serial = rk__runtime_serial();
  rk__tsc_start(); /* once per process: is the TSC a clock here, and its first anchor (tsc.c) */
  rt->refs = 1;
  uv_mutex_init(&rt->lock);
  uv_mutex_init(&rt->log_lock);
  uv_cond_init(&rt->log_cond);
  rt->log_ready = 1;
  /* the option strings are the runtime's own copies (the application's may not outlive create) */
  rt->opts.cc = rt->opts.cache_dir = rt->opts.metrics_listen = NULL; /* (metrics_listen: used in create only) */
  if ((o.cc && (rt->opts.cc = strdup(o.cc)) == NULL) || (o.cache_dir && (rt->opts.cache_dir = strdup(o.cache_dir)) == NULL)) {
    rk__runtime_release(rt);
    return RK_ENOMEM;
  }
  rt->backend = RK_BACKEND_CPU;
  rt->ops = &rk__cpu_backend;
  if (cuda_ok) {
    rc = rk__cuda_init(rt, reason, sizeof reason);
    if (rc == RK_OK) {
      rt->backend = RK_BACKEND_CUDA;
      snprintf(rt->backend_reason, sizeof rt->backend_reason, "%s", reason);
    } else if (o.backend == RK_BACKEND_CUDA) {
      rk__log(rt, RK_LOG_ERROR, "RK_BACKEND_CUDA unavailable: %s", reason);
      rk__create_error("%s: RK_BACKEND_CUDA unavailable: %s", rk_err_name(rc), reason);
      rk__runtime_release(rt);
      return rc;
    }
  }
  if (rt->backend == RK_BACKEND_CPU) {
    if (o.backend == RK_BACKEND_CPU)
      snprintf(rt->backend_reason, sizeof rt->backend_reason, "CPU backend requested");
    else
      snprintf(rt->backend_reason, sizeof rt->backend_reason, "CPU backend: %s", reason);
  }
  rt->node_id = o.node_id ? o.node_id : (uint32_t)(((uint32_t)getpid() << 16) ^ (uint32_t)rk_realtime_us()) | 0x80000000u;
  if ((rc = rk_clock_create(&rt->clock, rt->node_id, o.max_offset_us)) != RK_OK) goto fail;
  if (o.time_source) (void)rk_clock_set_time_source(rt->clock, o.time_source, o.time_user);
  /* the buffer pools and table (CUDA: prepared by rk__cuda_init, before anything is resident) */
  if ((rc = rk__buffers_init(rt)) != RK_OK) {
    rk__log(rt, RK_LOG_ERROR, "rk_runtime_create: cannot set up the buffer pools (max_buffers %u): %s",
            o.max_buffers, rk_strerror(rc));
    goto fail;
  }

  rt->handles = (struct rk__handles *)rk__calloc(1, sizeof *rt->handles);
  if (rt->handles == NULL) {
    rc = RK_ENOMEM;
    goto fail;
  }
  rt->handles->rt = rt;
  if (o.loop) {
    rt->loop = (uv_loop_t *)o.loop;
  } else {
    if ((uvrc = rk__uv_loop_init(&rt->own_loop)) != 0) {
      rk__log(rt, RK_LOG_ERROR, "rk_runtime_create: cannot create the service loop: %s", uv_strerror(uvrc));
      rc = RK_ESYS;
      goto fail;
    }
    rt->loop = &rt->own_loop;
    rt->own_thread = 1;
  }
  /* The wake-up handle needs a file descriptor (an eventfd), which a process at its limit lacks:
   * without it nothing could wake the loop, and closing it later would touch a handle libuv never
   * set up. */
  if ((uvrc = rk__uv_async_init(rt->loop, &rt->handles->async, on_async)) != 0) {
    rk__log(rt, RK_LOG_ERROR, "rk_runtime_create: cannot create the service loop's wake-up handle: %s",
            uv_strerror(uvrc));
    if (rt->own_thread) uv_loop_close(rt->loop);
    rc = RK_ESYS;
    goto fail;
  }
  (void)uv_timer_init(rt->loop, &rt->handles->timer); /* cannot fail on an initialised loop */
  rt->handles->async.data = rt->handles;
  rt->handles->timer.data = rt->handles;
  rt->handles->open = 2;
  interval = o.watchdog_interval_ns ? o.watchdog_interval_ns : RK_DEFAULT_WATCHDOG_INTERVAL_NS;
  /* in whole milliseconds, rounded up (not (interval + 999999) / 10^6: it wraps to 0 near 2^64, and
   * a repeat of 0 stops the timer after one tick: no watchdog, restarts or clock sync) */
  interval = interval / 1000000u + (interval % 1000000u != 0);
  uv_timer_start(&rt->handles->timer, on_timer, interval, interval);
  if (o.metrics_listen) {
    char why[256];
    if ((rc = rk__metrics_start(rt, o.metrics_listen, why, sizeof why)) != RK_OK) {
      rk__log(rt, RK_LOG_ERROR, "rk_runtime_create: metrics_listen: %s", why);
      rk__create_error("%s: metrics_listen: %s", rk_err_name(rc), why);
      goto fail_loop;
    }
  }
  if (!rt->own_thread) {
    /* The application's loop: the runtime's handles alone do not keep it running, so uv_run
     * returns when the application's own work is done (they still run whenever it runs). */
    uv_unref((uv_handle_t *)&rt->handles->async);
    uv_unref((uv_handle_t *)&rt->handles->timer);
    rk__metrics_unref(rt->metrics);
  }
  if (rt->own_thread && (uvrc = rk__thread_create(&rt->service, service_main, rt)) != 0) {
    rk__log(rt, RK_LOG_ERROR, "rk_runtime_create: cannot start the service thread: %s", uv_strerror(uvrc));
    rc = RK_ESYS;
    goto fail_loop;
  }
  rk__log(rt, RK_LOG_INFO, "runtime created: %s backend (%s), node %u", rk_backend_name(rt->backend),
          rt->backend_reason, rt->node_id);
  *out = rt;
  return RK_OK;

fail_loop:
  /* the loop's handles are set up: close them (their close callbacks free them); the runtime's
   * own loop runs once to finish that, an application's loop does it when it next runs */
  rt->handles->rt = NULL;
  close_handles(rt->handles);
  rk__metrics_close(rt->metrics);
  rt->metrics = NULL;
  rt->handles = NULL;
  if (rt->own_thread) {
    uv_run(rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(rt->loop);
  }
fail:
  if (rt->backend == RK_BACKEND_CUDA) rk__cuda_shutdown(rt);
  free(rt->handles);
  rk__runtime_release(rt);
  return rc;
}

void rk__runtime_release(rk_runtime *rt) {
  /* acq_rel: the last one to drop sees every other holder's writes before it frees */
  if (__atomic_sub_fetch(&rt->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  rk__devpoll_free(rt);
  rk__buffers_free(rt);
  rk_clock_destroy(rt->clock);
  uv_cond_destroy(&rt->log_cond);
  uv_mutex_destroy(&rt->log_lock);
  uv_mutex_destroy(&rt->lock);
  free((char *)rt->opts.cc);
  free((char *)rt->opts.cache_dir);
  free(rt);
}

void rk_runtime_destroy(rk_runtime *rt) {
  if (rt == NULL) return;
  /* Graphs first: their kernels send to each other, so they are terminated together, upstream
   * first, before any of their K2K inboxes is freed (rk_kernel_destroy refuses a graph member). */
  rk__graphs_destroy(rt);
  for (;;) {
    rk_kernel *k;
    int member;
    rk__lock(&rt->lock);
    k = rt->kernels;
    member = k && k->graph; /* (read under the lock: its graph's destroy may free it) */
    rk__unlock(&rt->lock);
    if (k == NULL) break;
    if (member) { /* a graph's destroy on another thread unlinks it: wait (rk_kernel_destroy refuses it) */
      rk__sleep_ns(1000000);
      continue;
    }
    rk_kernel_destroy(k);
  }
  /* The device-reply poller: after the kernels (it pins each one it reads, and a kernel's destroy
   * waits for that), before the loop's handles close (it wakes the loop through them). */
  rk__devpoll_destroy(rt);
  if (rt->own_thread) {
    __atomic_store_n(&rt->stopping, 1, __ATOMIC_RELEASE);
    uv_async_send(&rt->handles->async);
    uv_thread_join(&rt->service); /* the loop ends once its handles are closed */
    uv_loop_close(rt->loop);
  } else if (rt->handles) {
    /* Application loop: close our handles; their memory is freed by the close callbacks when the
     * application's loop next runs. */
    rt->handles->rt = NULL;
    close_handles(rt->handles);
    rk__metrics_close(rt->metrics);
  }
  /* Copies still in flight finish before their memory goes (their callbacks are not called). */
  rk__buffers_shutdown(rt);
  if (rt->backend == RK_BACKEND_CUDA) rk__cuda_shutdown(rt);
  /* Lanes that were abandoned (a handler that never returned) keep rt until they leave: they may
   * still try to log, and must not reach the application once it is told the runtime is gone. */
  rk__log_close(rt);
  rk__runtime_release(rt);
}
