/* failpoint.c — fail points for the library's allocations and thread creations (failpoint.h).
 *
 * The counters are process-wide atomics: the runtime's own threads (service loop, lanes) allocate
 * too, and their calls count like the caller's. They are test instruments, not synchronisation:
 * relaxed order throughout (a test arms, runs the operation, and disarms on one thread; the calls
 * it counts happen inside that operation or are ordered by the operation's own locks and joins). */
#include <stdlib.h>

#include "host/failpoint.h"
#include "host/internal.h"

static int fp_any;                     /* any fail point armed: the fast path's only load */
static uint64_t fp_nth[RK__FP_KINDS];  /* 0: disarmed */
static int fp_persistent[RK__FP_KINDS];
static uint64_t fp_calls[RK__FP_KINDS];
static uint64_t fp_hits[RK__FP_KINDS];
static uint64_t fp_clock_widen;        /* ns; read by launches on any thread */

void rk__failpoint_arm(rk__failpoint kind, uint64_t nth, int persistent) {
  int i, any = 0;
  if ((unsigned)kind >= RK__FP_KINDS) return;
  __atomic_store_n(&fp_calls[kind], 0, __ATOMIC_RELAXED);
  __atomic_store_n(&fp_hits[kind], 0, __ATOMIC_RELAXED);
  __atomic_store_n(&fp_persistent[kind], persistent, __ATOMIC_RELAXED);
  __atomic_store_n(&fp_nth[kind], nth, __ATOMIC_RELAXED);
  for (i = 0; i < RK__FP_KINDS; i++) any |= __atomic_load_n(&fp_nth[i], __ATOMIC_RELAXED) != 0;
  __atomic_store_n(&fp_any, any, __ATOMIC_RELAXED);
}

uint64_t rk__failpoint_disarm(rk__failpoint kind) {
  uint64_t hits;
  if ((unsigned)kind >= RK__FP_KINDS) return 0;
  hits = __atomic_load_n(&fp_hits[kind], __ATOMIC_RELAXED);
  rk__failpoint_arm(kind, 0, 0);
  return hits;
}

uint64_t rk__failpoint_calls(rk__failpoint kind) {
  return (unsigned)kind < RK__FP_KINDS ? __atomic_load_n(&fp_calls[kind], __ATOMIC_RELAXED) : 0;
}

int rk__failpoint_hit(rk__failpoint kind) {
  uint64_t n, nth;
  if (!__atomic_load_n(&fp_any, __ATOMIC_RELAXED)) return 0;
  nth = __atomic_load_n(&fp_nth[kind], __ATOMIC_RELAXED);
  if (nth == 0) return 0;
  n = __atomic_add_fetch(&fp_calls[kind], 1, __ATOMIC_RELAXED);
  if (n == nth || (n > nth && __atomic_load_n(&fp_persistent[kind], __ATOMIC_RELAXED))) {
    __atomic_add_fetch(&fp_hits[kind], 1, __ATOMIC_RELAXED);
    return 1;
  }
  return 0;
}

void rk__failpoint_clock_widen(uint64_t ns) { __atomic_store_n(&fp_clock_widen, ns, __ATOMIC_RELAXED); }

uint64_t rk__failpoint_clock_widen_ns(void) { return __atomic_load_n(&fp_clock_widen, __ATOMIC_RELAXED); }

void *rk__malloc(size_t n) { return rk__failpoint_hit(RK__FP_ALLOC) ? NULL : malloc(n); }

void *rk__calloc(size_t count, size_t size) { return rk__failpoint_hit(RK__FP_ALLOC) ? NULL : calloc(count, size); }

void *rk__aligned_alloc(size_t align, size_t n) {
  if (rk__failpoint_hit(RK__FP_ALLOC)) return NULL;
  return aligned_alloc(align, (n + align - 1) / align * align);
}

int rk__uv_loop_init(uv_loop_t *loop) { return rk__failpoint_hit(RK__FP_UV) ? UV_EMFILE : uv_loop_init(loop); }

int rk__uv_async_init(uv_loop_t *loop, uv_async_t *async, uv_async_cb cb) {
  /* what libuv says when it cannot make the eventfd (libuv 1.44 makes one with the loop; others
   * may make it here) */
  return rk__failpoint_hit(RK__FP_UV) ? UV_EMFILE : uv_async_init(loop, async, cb);
}

int rk__thread_create(uv_thread_t *t, void (*fn)(void *), void *arg) {
  if (rk__failpoint_hit(RK__FP_THREAD)) return UV_EAGAIN; /* what pthread_create says at a limit */
  return uv_thread_create(t, fn, arg);
}
