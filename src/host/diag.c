/* diag.c — how the library reports: the log (rate-limited, never called under a library lock) and
 * the per-thread last error.
 *
 * Locks. Every library lock is taken through rk__lock / rk__trylock and released through
 * rk__unlock, which keep a per-thread count of the locks held. A log line produced while the count
 * is nonzero is queued on the thread and handed to the application's log callback when the thread
 * releases its last lock: the application's code never runs under a library lock, so a callback
 * that calls back into the library (rk_runtime_last_error, rk_kernel_state, ...) cannot deadlock.
 *
 * Rate limit. A runaway condition (an allocation failing on every retry, a lane refusing every
 * message) must not flood the log: each format string logs at most RK_LOG_BURST lines per second
 * per runtime; the first line of the next second says how many were suppressed.
 *
 * Last error. rk__fail writes the failure's text to the calling thread's record, naming the
 * runtime; public calls clear it when they start (rk__error_clear), so rk_runtime_last_error
 * reports the calling thread's most recent failure on that runtime and "no error" after a later
 * success. Work done on another thread on the caller's behalf (the CUDA backend's thread) writes to
 * the caller's record through rk__error_redirect. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "host/internal.h"

#define RK_LOG_BURST 8u                     /* lines per format string per window */
#define RK_LOG_WINDOW_NS 1000000000ull      /* the window */
#define RK_LOG_DEFER 8u                     /* lines a thread queues while it holds locks */

typedef struct deferred_line {
  rk_runtime *rt;
  rk_log_level level;
  char msg[RK__LOG_LINE];
} deferred_line;

/* The lines the thread queued while it held a library lock. */
static _Thread_local struct {
  uint32_t n, dropped;
  deferred_line q[RK_LOG_DEFER];
} tls_log;
/* The thread's library locks held, and whether lines are queued (tls_log.n != 0): read on every
 * lock and unlock, so kept apart from the queue. (Not initial-exec TLS, although that would save a
 * __tls_get_addr per access: librk.so is dlopen-ed by the Python binding and by plugins, where an
 * initial-exec variable must fit glibc's small static-TLS surplus or the load fails; review of
 * issue 16.) */
static _Thread_local uint32_t tls_locks;
static _Thread_local uint32_t tls_queued;

static _Thread_local rk__error tls_error;          /* this thread's last failure */
static _Thread_local rk__error *tls_error_target;  /* NULL: tls_error; else a caller's (redirect) */

static uint64_t g_runtime_serial; /* atomics: relaxed, a unique number is all it gives */

uint64_t rk__runtime_serial(void) { return __atomic_add_fetch(&g_runtime_serial, 1, __ATOMIC_RELAXED); }

/* ---------------------------------------- locks ---------------------------------------------- */

static void flush_deferred(void);

void rk__lock(uv_mutex_t *m) {
  uv_mutex_lock(m);
  tls_locks++;
}

int rk__trylock(uv_mutex_t *m) {
  int rc = uv_mutex_trylock(m);
  if (rc == 0) tls_locks++;
  return rc;
}

void rk__unlock(uv_mutex_t *m) {
  assert(tls_locks > 0); /* every rk__unlock pairs with an rk__lock or a successful rk__trylock */
  uv_mutex_unlock(m);
  if (--tls_locks == 0 && tls_queued) flush_deferred();
}

int rk__flag_trylock(volatile int *f) {
  /* a relaxed look first: a held flag costs its would-be taker no locked instruction */
  if (__atomic_load_n(f, __ATOMIC_RELAXED)) return 1;
  /* acquire: pairs with rk__flag_unlock's release, so what the last holder did is visible */
  if (__atomic_exchange_n(f, 1, __ATOMIC_ACQUIRE) != 0) return 1;
  tls_locks++;
  return 0;
}

void rk__flag_unlock(volatile int *f) {
  assert(tls_locks > 0); /* pairs with a successful rk__flag_trylock */
  __atomic_store_n(f, 0, __ATOMIC_RELEASE); /* pairs with rk__flag_trylock's acquire */
  if (--tls_locks == 0 && tls_queued) flush_deferred();
}

/* ---------------------------------------- the log -------------------------------------------- */

static const char *level_name(rk_log_level l) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  return (unsigned)l < 4 ? names[l] : "log";
}

/* Hand one line to the application (or stderr). No library lock is held here. The gate
 * (log_closed, log_active) lets rk_runtime_destroy stop callbacks for good even while lanes it
 * had to abandon may still log: it closes the gate and waits for the callbacks in progress. */
static void deliver(rk_runtime *rt, rk_log_level level, const char *msg) {
  rk_log_fn fn;
  void *user;
  if (!rt->log_ready) { /* a runtime being created: no other thread knows it yet */
    fn = rt->opts.log;
    user = rt->opts.log_user;
  } else {
    uv_mutex_lock(&rt->log_lock); /* internal, never held across the callback */
    if (rt->log_closed) {
      uv_mutex_unlock(&rt->log_lock);
      return;
    }
    rt->log_active++;
    fn = rt->opts.log;
    user = rt->opts.log_user;
    uv_mutex_unlock(&rt->log_lock);
  }
  if (fn)
    fn(user, level, msg);
  else
    fprintf(stderr, "ringkernel %s: %s\n", level_name(level), msg);
  if (rt->log_ready) {
    uv_mutex_lock(&rt->log_lock);
    if (--rt->log_active == 0 && rt->log_closed) uv_cond_broadcast(&rt->log_cond);
    uv_mutex_unlock(&rt->log_lock);
  }
}

static void flush_deferred(void) {
  /* Pop one line at a time: the callback may call into the library, take locks and queue more. */
  while (tls_log.n && tls_locks == 0) {
    deferred_line line = tls_log.q[0];
    uint32_t dropped = tls_log.dropped;
    tls_log.n--;
    tls_queued = tls_log.n != 0;
    memmove(&tls_log.q[0], &tls_log.q[1], tls_log.n * sizeof tls_log.q[0]);
    tls_log.dropped = 0;
    deliver(line.rt, line.level, line.msg);
    if (dropped) {
      char note[96];
      snprintf(note, sizeof note, "%u log lines dropped (queued while a library lock was held)", dropped);
      deliver(line.rt, RK_LOG_WARN, note);
    }
  }
}

/* Rate limit: may this line of format fmt be logged? *suppressed receives the count of lines of
 * the same format suppressed before it (to be mentioned). */
static int rate_ok(rk_runtime *rt, const char *fmt, uint64_t *suppressed) {
  uint64_t now = rk__now_ns();
  struct rk__log_limit *e = NULL, *oldest = &rt->log_limit[0];
  uint32_t i;
  int ok;
  *suppressed = 0;
  if (!rt->log_ready) return 1;
  uv_mutex_lock(&rt->log_lock);
  for (i = 0; i < RK__LOG_LIMITS; i++) {
    if (rt->log_limit[i].fmt == fmt) {
      e = &rt->log_limit[i];
      break;
    }
    if (rt->log_limit[i].window_ns < oldest->window_ns) oldest = &rt->log_limit[i];
  }
  if (e == NULL) { /* a new format: take the least recently windowed entry */
    e = oldest;
    e->fmt = fmt;
    e->window_ns = now;
    e->lines = 0;
    e->suppressed = 0;
  }
  if (now - e->window_ns >= RK_LOG_WINDOW_NS) {
    e->window_ns = now;
    e->lines = 0;
  }
  ok = e->lines < RK_LOG_BURST;
  if (ok) {
    e->lines++;
    *suppressed = e->suppressed;
    e->suppressed = 0;
  } else {
    e->suppressed++;
  }
  uv_mutex_unlock(&rt->log_lock);
  return ok;
}

/* Format and log a line; `key` (a format string) names the line for the rate limit. */
static void vlog_keyed(rk_runtime *rt, rk_log_level level, const char *key, const char *fmt, va_list ap) {
  char msg[RK__LOG_LINE];
  uint64_t suppressed;
  int n;
  if (rt == NULL || level > rt->opts.log_level) return;
  if (!rate_ok(rt, key, &suppressed)) return;
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  if (suppressed && n >= 0 && (size_t)n < sizeof msg)
    snprintf(msg + n, sizeof msg - (size_t)n, " [%llu similar lines suppressed]", (unsigned long long)suppressed);
  if (tls_locks == 0) {
    deliver(rt, level, msg);
    return;
  }
  if (tls_log.n == RK_LOG_DEFER) { /* keep the first lines: they say what went wrong first */
    tls_log.dropped++;
    return;
  }
  tls_log.q[tls_log.n].rt = rt;
  tls_log.q[tls_log.n].level = level;
  memcpy(tls_log.q[tls_log.n].msg, msg, sizeof msg);
  tls_log.n++;
  tls_queued = 1;
}

static void log_keyed(rk_runtime *rt, rk_log_level level, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog_keyed(rt, level, key, fmt, ap);
  va_end(ap);
}

void rk__log(rk_runtime *rt, rk_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog_keyed(rt, level, fmt, fmt, ap);
  va_end(ap);
}

void rk__log_close(rk_runtime *rt) {
  if (!rt->log_ready) return;
  uv_mutex_lock(&rt->log_lock);
  rt->log_closed = 1;
  while (rt->log_active) uv_cond_wait(&rt->log_cond, &rt->log_lock);
  uv_mutex_unlock(&rt->log_lock);
}

/* ---------------------------------------- last error ----------------------------------------- */

static rk__error *error_target(void) { return tls_error_target ? tls_error_target : &tls_error; }

rk__error *rk__error_redirect(rk__error *to) {
  rk__error *prev = tls_error_target;
  tls_error_target = to;
  return prev;
}

rk__error *rk__error_mine(void) { return error_target(); }

void rk__error_clear(const rk_runtime *rt) {
  rk__error *e = error_target();
  /* one load on the hot path when there is nothing to clear */
  if (e->msg[0] != '\0' || e->serial != rt->serial) {
    e->serial = rt->serial;
    e->msg[0] = '\0';
  }
}

int rk__fail(rk_runtime *rt, int code, const char *fmt, ...) {
  va_list ap;
  char msg[400];
  rk__error *e = error_target();
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  e->serial = rt->serial;
  snprintf(e->msg, sizeof e->msg, "%s: %s", rk_err_name(code), msg);
  log_keyed(rt, RK_LOG_DEBUG, fmt, "%s: %s", rk_err_name(code), msg); /* rate-limited per call site */
  return code;
}

static _Thread_local char tls_create_error[400]; /* why this thread's last rk_runtime_create failed */

void rk__create_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tls_create_error, sizeof tls_create_error, fmt, ap);
  va_end(ap);
}

const char *rk_runtime_last_error(const rk_runtime *rt) {
  if (rt == NULL) return tls_create_error[0] ? tls_create_error : "no runtime";
  if (tls_error.serial != rt->serial || tls_error.msg[0] == '\0') return "no error";
  return tls_error.msg;
}
