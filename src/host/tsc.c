/* tsc.c — the time-stamp counter as a clock for rk_call's latency histogram (issue 16).
 *
 * rk_call's fast path ended every call with a clock_gettime(CLOCK_MONOTONIC) for its latency
 * sample, between the reply's arrival and the call's return: ~25-30 ns of a ~330 ns round trip on
 * the 2-core EPYC VM (docs/design-notes.md, "An rk_call round trip, eighth step"), because the vDSO
 * orders its TSC read (LFENCE;RDTSC or RDTSCP) behind every load before it, the reply's included.
 * A plain RDTSC (~10 ns, not ordered) does the same job for a statistic: the sample is the TSC
 * delta between the request's publication and the reply's arrival, scaled to ns by a factor
 * measured against CLOCK_MONOTONIC.
 *
 * Used only when it is sound: an x86-64 CPU whose TSC runs at a constant rate in every state
 * (CPUID 0x80000007 EDX bit 8, "invariant TSC") and a kernel that keeps time with it
 * (current_clocksource "tsc": Linux picks the TSC only when the CPUs' counters are in step, and
 * drops it when they drift apart). Anywhere else, and until the factor is measured, the samples
 * are taken with clock_gettime as before.
 *
 * The factor (ns per tick, 32.32 fixed point) is measured by the service loop (rk__tsc_calibrate,
 * every tick, no lock on any path a call takes) over a window of at least RK_TSC_MIN_WINDOW_NS
 * from an anchor reading, and the anchor moves on every RK_TSC_MAX_WINDOW_NS, so a rate that
 * changes (a VM moved to another host) is followed within that time. A new factor only rescales
 * the samples taken after it: a sample is a difference of two readings of one counter, so the
 * latency never jumps when the factor changes. The factor word is a statistic's scale: relaxed
 * loads and stores, no other data published with it (docs/memory-ordering.md, "Words that are
 * hints"). */
#include <stdio.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "host/internal.h"

#define RK_TSC_MIN_WINDOW_NS 10000000ull   /* 10 ms: a factor from a shorter window is not published */
#define RK_TSC_MAX_WINDOW_NS 10000000000ull /* 10 s: the anchor moves on after this */
#define RK_TSC_PAIR_SPREAD 2000u /* ticks (~1 us): a pair whose two counter reads are further apart is retried */

uint64_t rk__tsc_mult_word; /* ns per tick, 32.32; 0: not measured, or the TSC is not used */

static uv_once_t g_once = UV_ONCE_INIT;
static uv_mutex_t g_lock; /* the anchor: calibrating service loops of several runtimes */
static int g_usable;
static uint64_t g_anchor_tsc, g_anchor_ns;

/* A reading of the counter and of CLOCK_MONOTONIC taken together: the counter read on both sides
 * of clock_gettime, the midpoint kept; retried when a preemption split them. 0 when every try was
 * split. */
static int tsc_pair(uint64_t *tsc, uint64_t *ns) {
  int i;
  for (i = 0; i < 8; i++) {
    uint64_t a = rk__tsc_read(), n = rk__now_ns(), b = rk__tsc_read();
    if (b >= a && b - a < RK_TSC_PAIR_SPREAD) {
      *tsc = a + (b - a) / 2;
      *ns = n;
      return 1;
    }
  }
  return 0;
}

/* Is the kernel keeping time with the TSC? */
static int clocksource_is_tsc(void) {
  char buf[32];
  size_t n;
  FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
  if (f == NULL) return 0;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  return strncmp(buf, "tsc", 3) == 0 && (buf[3] == '\n' || buf[3] == 0);
}

static void tsc_init(void) {
  uv_mutex_init(&g_lock);
#if defined(__x86_64__)
  {
    unsigned a, b, c, d;
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) == 0 || a < 0x80000007u) return;
    if (__get_cpuid(0x80000007u, &a, &b, &c, &d) == 0 || !(d & (1u << 8))) return; /* invariant TSC */
  }
  if (!clocksource_is_tsc()) return;
  if (!tsc_pair(&g_anchor_tsc, &g_anchor_ns)) return;
  g_usable = 1;
#endif
}

void rk__tsc_start(void) { uv_once(&g_once, tsc_init); }

void rk__tsc_calibrate(void) {
  uint64_t t, n, dt, dn, mult;
  rk__tsc_start();
  if (!g_usable) return;
  if (uv_mutex_trylock(&g_lock) != 0) return; /* another runtime's loop is at it */
  if (!tsc_pair(&t, &n) || t <= g_anchor_tsc || n <= g_anchor_ns) {
    uv_mutex_unlock(&g_lock);
    return;
  }
  dt = t - g_anchor_tsc;
  dn = n - g_anchor_ns;
  if (dn >= RK_TSC_MIN_WINDOW_NS) {
    mult = (uint64_t)(((unsigned __int128)dn << 32) / dt);
    /* a counter between 50 MHz and 20 GHz; anything else is not a clock to scale samples by */
    if (mult >= (20ull << 32) / 1000 && mult <= (1000ull << 32) / 50)
      __atomic_store_n(&rk__tsc_mult_word, mult, __ATOMIC_RELAXED); /* a statistic's scale (above) */
    if (dn >= RK_TSC_MAX_WINDOW_NS) {
      g_anchor_tsc = t;
      g_anchor_ns = n;
    }
  }
  uv_mutex_unlock(&g_lock);
}

/* ---------------------------------------- the send stamp's reading ------------------------------ */

/* CLOCK_REALTIME extrapolated from the counter (rk__tsc_realtime_us): a reading of both taken
 * together (an anchor) and the counter's ticks since, scaled by the factor above. An anchor older
 * than RK_TSC_REAL_MAX_NS is replaced by the next reader, so the extrapolation runs over at most
 * that long: with the factor measured against CLOCK_MONOTONIC, which NTP slews as it slews
 * CLOCK_REALTIME, the error is the slew's change over that time (at most 500 ppm of 1 ms, 0.5 us)
 * plus the anchor pair's own spread (a few ns); a step of CLOCK_REALTIME (settimeofday, an NTP
 * step) is seen at the next anchor, at most RK_TSC_REAL_MAX_NS late, as a send stamped just before
 * the step would have been.
 *
 * The anchors: four slots, the one in force named by a generation word. A writer (one at a time:
 * g_real_lock, tried, never waited for) fills slot (gen + 1) & 3 and publishes gen + 1 with
 * release; a reader loads gen with acquire, reads slot gen & 3, and loads gen again after an
 * acquire fence: the slot it read is rewritten only for generation gen + 4, which a writer starts
 * after publishing gen + 3, so a second load at most gen + 2 proves the slot whole; otherwise it
 * reads again (docs/memory-ordering.md, "The send stamp's anchors"). */
#define RK_TSC_REAL_MAX_NS 1000000ull /* 1 ms */

typedef struct tsc_anchor {
  uint64_t tsc, real_ns, mult, max_ticks; /* max_ticks: RK_TSC_REAL_MAX_NS in ticks at mult */
} tsc_anchor;

static struct {
  volatile uint64_t gen; /* 0: no anchor yet */
  tsc_anchor a[4];
} g_real __attribute__((aligned(64)));
static volatile int g_real_lock;

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A new anchor from a fresh pair, when no other thread is making one; the fresh reading (us) in
 * either case. */
static uint64_t tsc_reanchor(uint64_t gen, uint64_t mult) {
  uint64_t a, n, b, i;
  if (__atomic_exchange_n(&g_real_lock, 1, __ATOMIC_ACQUIRE) != 0) return rk_realtime_us();
  for (i = 0; i < 4; i++) {
    a = rk__tsc_read();
    n = realtime_ns();
    b = rk__tsc_read();
    if (b >= a && b - a < RK_TSC_PAIR_SPREAD) break;
  }
  if (i < 4) {
    tsc_anchor *s = &g_real.a[(gen + 1) & 3];
    /* relaxed: published by the release store of gen below, read between two loads of gen */
    __atomic_store_n(&s->tsc, a + (b - a) / 2, __ATOMIC_RELAXED);
    __atomic_store_n(&s->real_ns, n, __ATOMIC_RELAXED);
    __atomic_store_n(&s->mult, mult, __ATOMIC_RELAXED);
    __atomic_store_n(&s->max_ticks, (uint64_t)(((unsigned __int128)RK_TSC_REAL_MAX_NS << 32) / mult), __ATOMIC_RELAXED);
    __atomic_store_n(&g_real.gen, gen + 1, __ATOMIC_RELEASE); /* pairs with the readers' acquire */
  } else {
    n = realtime_ns(); /* every pair split by a preemption: no anchor this time */
  }
  __atomic_store_n(&g_real_lock, 0, __ATOMIC_RELEASE);
  return n / 1000u;
}

uint64_t rk__tsc_realtime_us(void) {
  uint64_t mult = rk__tsc_mult(), tries;
  if (mult == 0) return rk_realtime_us(); /* no counter to extrapolate with (yet) */
  for (tries = 0; tries < 4; tries++) {
    uint64_t gen = __atomic_load_n(&g_real.gen, __ATOMIC_ACQUIRE); /* pairs with tsc_reanchor's release */
    const tsc_anchor *s = &g_real.a[gen & 3];
    uint64_t t0 = __atomic_load_n(&s->tsc, __ATOMIC_RELAXED), r0 = __atomic_load_n(&s->real_ns, __ATOMIC_RELAXED);
    uint64_t m = __atomic_load_n(&s->mult, __ATOMIC_RELAXED), max = __atomic_load_n(&s->max_ticks, __ATOMIC_RELAXED);
    uint64_t t;
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the slot's loads before the second load of gen */
    if (__atomic_load_n(&g_real.gen, __ATOMIC_RELAXED) - gen >= 3) continue; /* the slot may be rewritten */
    t = rk__tsc_read();
    if (gen == 0 || t < t0 || t - t0 > max) return tsc_reanchor(gen, mult);
    return (r0 + rk__tsc_ns(t - t0, m)) / 1000u;
  }
  return rk_realtime_us();
}

uint64_t rk__tsc_anchors(void) { return __atomic_load_n(&g_real.gen, __ATOMIC_RELAXED); /* a count */ }
