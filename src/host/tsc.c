/* tsc.c — the time-stamp counter as a clock for rk_call's latency samples and the host send
 * stamp's reading (issue 16, docs/design-notes.md "An rk_call round trip, eighth step").
 *
 * rk_call read clock_gettime three times: CLOCK_REALTIME for the send stamp, CLOCK_MONOTONIC for
 * its deadline and the latency's start (after the request's publication, while the lane works:
 * still read) and CLOCK_MONOTONIC for the latency sample after the reply. The vDSO orders its TSC
 * read (RDTSCP or LFENCE;RDTSC), and the first and the last each cost ~25-30 ns of a ~320 ns round
 * trip on the 2-core EPYC VM, the two together ~9 % (measured with rk-ab). A plain RDTSC (~10 ns,
 * not ordered) does both jobs:
 *
 * - the fast path's latency sample is the counter's delta between the request's publication and
 *   the reply's arrival, scaled to ns by a factor measured against CLOCK_MONOTONIC;
 * - the send stamp's reading is CLOCK_REALTIME extrapolated from an anchor (a reading of both taken
 *   together) at most RK_TSC_REAL_MAX_NS old (rk__tsc_realtime_us, below).
 *
 * Used only when it is sound: an x86-64 CPU whose TSC runs at a constant rate in every state
 * (CPUID 0x80000007 EDX bit 8, "invariant TSC") and a kernel that keeps time with it
 * (current_clocksource "tsc": Linux uses the TSC only while the CPUs' counters agree, and drops it
 * when its watchdog finds them apart; the calibration reads the file again every
 * RK_TSC_MAX_WINDOW_NS and stops using the counter when it no longer says "tsc"). Anywhere else,
 * and until the factor is measured, clock_gettime as before.
 *
 * The factor (ns per tick, 32.32 fixed point) is measured by the service loop (rk__tsc_calibrate,
 * every tick, nothing a call takes waits for it) over a window of at least RK_TSC_MIN_WINDOW_NS
 * from an anchor pair; the anchor moves on every RK_TSC_MAX_WINDOW_NS, so a rate that changes (a
 * VM moved to another host) is followed within that time. A factor more than 0.1 % away from the
 * one in use is published only when a second, independent window agrees with it (a window that
 * spans a jump of either clock must not scale every later sample); a pair in which either clock
 * went backwards starts a new window. A new factor rescales only the samples and readings taken
 * after it: a latency sample is a difference of two readings of one counter, so it never jumps.
 * The factor word is a statistic's scale: relaxed (docs/memory-ordering.md, "The TSC as a
 * clock"). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "host/internal.h"

#if RK__HAVE_TSC
#include <cpuid.h>
#endif

#define RK_TSC_MIN_WINDOW_NS 10000000ull    /* 10 ms: a factor from a shorter window is not used */
#define RK_TSC_MAX_WINDOW_NS 10000000000ull /* 10 s: the anchor moves on, the clocksource is read again */
#define RK_TSC_PAIR_SPREAD 2000u /* ticks (~1 us): a pair whose two counter reads are further apart is retried */

/* ns per tick, 32.32; 0: not measured, or the TSC is not used. Read by every send and call: alone
 * on its line, away from the words written every tick and every millisecond below. */
rk__tsc_line rk__tsc_mult_line __attribute__((aligned(64)));

static uv_once_t g_once = UV_ONCE_INIT;
/* The calibration's state below, taken by the service loops of several runtimes: a library flag,
 * only ever tried (rk__flag_trylock), so a fork child can reset it. */
static volatile int g_lock;
static int g_usable;      /* under g_lock after tsc_init */
static uint64_t g_anchor_tsc, g_anchor_ns; /* 0: no anchor yet */
static uint64_t g_pending;                  /* a factor that differed from the one in use, awaiting a second window */

/* A reading of the counter and of clock `id` taken together: the counter read on both sides of
 * clock_gettime, the midpoint kept (so it is off by at most half of RK_TSC_PAIR_SPREAD); retried
 * when an interruption split them. 0 when every try was split. */
static int tsc_pair(clockid_t id, uint64_t *tsc, uint64_t *ns) {
  int i;
  for (i = 0; i < 8; i++) {
    struct timespec ts;
    uint64_t a = rk__tsc_read(), b;
    clock_gettime(id, &ts);
    b = rk__tsc_read();
    if (b >= a && b - a < RK_TSC_PAIR_SPREAD) {
      *tsc = a + (b - a) / 2;
      *ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
      return 1;
    }
  }
  return 0;
}

/* Is the kernel keeping time with the TSC? 1 yes, 0 no, -1 the file could not be read (no /sys
 * in a sandbox, the process out of descriptors: tsc_init then does not use the counter, and the
 * calibration keeps what it decided before). "e": no descriptor leaks into a program another
 * thread execs meanwhile. */
static int clocksource_is_tsc(void) {
#if RK__HAVE_TSC
  char buf[32];
  size_t n;
  FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
  if (f == NULL) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  return strncmp(buf, "tsc", 3) == 0 && (buf[3] == '\n' || buf[3] == 0);
#else
  return 0;
#endif
}

static volatile int g_real_lock; /* below: one anchor writer at a time */

#if RK__HAVE_TSC
/* A child of fork has one thread: a flag some other thread of the parent held stays held in it. */
static void tsc_atfork_child(void) {
  __atomic_store_n(&g_lock, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g_real_lock, 0, __ATOMIC_RELAXED);
}
#endif

static void tsc_init(void) {
#if RK__HAVE_TSC
  {
    unsigned a, b, c, d;
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) == 0 || a < 0x80000007u) return;
    if (__get_cpuid(0x80000007u, &a, &b, &c, &d) == 0 || !(d & (1u << 8))) return; /* invariant TSC */
  }
  if (clocksource_is_tsc() != 1) return;
  (void)pthread_atfork(NULL, NULL, tsc_atfork_child);
  g_usable = 1; /* the first anchor: the first calibration (a pair here could be split) */
#endif
}

void rk__tsc_start(void) { uv_once(&g_once, tsc_init); }

/* factors a and b within 0.1 % of each other */
static int mult_agree(uint64_t a, uint64_t b) {
  uint64_t d = a > b ? a - b : b - a;
  return d <= a / 1000;
}

/* rk__tsc_calibrate's step (g_lock held): a pair of readings against the anchor. */
static void tsc_calibrate_locked(void) {
  uint64_t t, n, dt, dn, mult, cur;
  int restart = 0; /* a new window from this pair: the factor measured so far is not trusted */
  if (!g_usable || !tsc_pair(CLOCK_MONOTONIC, &t, &n)) return;
  if (g_anchor_tsc == 0 || t <= g_anchor_tsc || n <= g_anchor_ns) { /* the first pair, or a clock went back */
    g_anchor_tsc = t;
    g_anchor_ns = n;
    return;
  }
  dt = t - g_anchor_tsc;
  dn = n - g_anchor_ns;
  if (dn < RK_TSC_MIN_WINDOW_NS) return;
  mult = rk__tsc_div(dn, dt);
  cur = rk__tsc_mult();
  /* a counter between 50 MHz and 20 GHz (20 to 0.05 ns per tick); anything else is no clock */
  if (mult >= (1ull << 32) / 20 && mult <= 20ull << 32) {
    if (cur != 0 && mult_agree(cur, mult)) {
      if (mult != cur) __atomic_store_n(&rk__tsc_mult_line.mult, mult, __ATOMIC_RELAXED); /* a scale (above) */
      g_pending = 0;
    } else if (g_pending != 0 && mult_agree(g_pending, mult)) { /* two windows agree: the rate is this */
      __atomic_store_n(&rk__tsc_mult_line.mult, mult, __ATOMIC_RELAXED);
      g_pending = 0;
    } else { /* new, or unlike the last: measure again over a window of its own */
      g_pending = mult;
      restart = 1;
    }
  } else {
    restart = 1; /* a window that gave no clock's rate: start another */
  }
  if (restart || dn >= RK_TSC_MAX_WINDOW_NS) {
    g_anchor_tsc = t;
    g_anchor_ns = n;
    /* the kernel gave up on the counter: so do we, for good (unreadable: no news, as before).
     * Read here only, every RK_TSC_MAX_WINDOW_NS, and only while some runtime's loop runs: until
     * then latency samples may scale a counter the kernel no longer trusts (the send readings stay
     * within their 1 ms anchors) */
    if (clocksource_is_tsc() == 0) {
      g_usable = 0;
      __atomic_store_n(&rk__tsc_mult_line.mult, 0, __ATOMIC_RELAXED);
    }
  }
}

void rk__tsc_calibrate(void) {
  rk__tsc_start();
  if (rk__flag_trylock(&g_lock) != 0) return; /* another runtime's loop is at it */
  tsc_calibrate_locked();
  rk__flag_unlock(&g_lock);
}

/* ---------------------------------------- the send stamp's reading ------------------------------ */

/* CLOCK_REALTIME extrapolated from the counter: an anchor (the counter and CLOCK_REALTIME read
 * together) plus the ticks since, scaled by the factor above. An anchor older than
 * RK_TSC_REAL_MAX_NS is replaced by the next reader, so the extrapolation runs over at most that
 * long: with the factor measured against CLOCK_MONOTONIC, which NTP slews as it slews
 * CLOCK_REALTIME, the error is the slew's change over that time (at most 500 ppm of 1 ms, 0.5 us)
 * plus the anchor pair's spread (at most half of RK_TSC_PAIR_SPREAD, ~0.4 us), either way: a
 * reading can be a little ahead of clock_gettime's as well as behind (the HLC's drift bound is
 * 500 ms by default). A step of CLOCK_REALTIME (settimeofday, an NTP step) is seen at the next
 * anchor, at most RK_TSC_REAL_MAX_NS late, as a send stamped just before the step would have been.
 *
 * The anchors: four slots, the one in force named by a generation word. A writer (one at a time:
 * g_real_lock, tried, never waited for) reads the generation under the lock, fills slot
 * (gen + 1) & 3 with release stores and publishes gen + 1 with release; a reader loads gen with
 * acquire, reads slot gen & 3 with acquire loads, and loads gen again: the slot it read is rewritten only for
 * generation gen + 4, which a writer starts after publishing gen + 3, so a second load of at most
 * gen + 2 proves the slot whole; otherwise it reads again (docs/memory-ordering.md, "The TSC as a
 * clock"). */
#define RK_TSC_REAL_MAX_NS 1000000ull /* 1 ms */

typedef struct tsc_anchor {
  uint64_t tsc, real_ns, mult, max_ticks; /* max_ticks: RK_TSC_REAL_MAX_NS in ticks at mult */
} tsc_anchor;

static struct {
  volatile uint64_t gen; /* 0: no anchor yet */
  tsc_anchor a[4];
} g_real __attribute__((aligned(64)));

/* A new anchor from a fresh pair unless another thread is making one or has just made one; a
 * fresh reading (us) in every case. seen: the generation the caller found stale. */
static uint64_t tsc_reanchor(uint64_t seen, uint64_t mult) {
  uint64_t t, n, gen;
  /* (a relaxed look first, inside: senders that find a writer at work do not fight over its line) */
  if (rk__flag_trylock(&g_real_lock) != 0) return rk_realtime_us();
  gen = __atomic_load_n(&g_real.gen, __ATOMIC_RELAXED); /* the writers' own word: under the lock */
  if (gen != seen || !tsc_pair(CLOCK_REALTIME, &t, &n)) {
    /* replaced meanwhile (another sender found it stale too), or every pair split: no anchor */
    rk__flag_unlock(&g_real_lock);
    return rk_realtime_us();
  }
  {
    tsc_anchor *s = &g_real.a[(gen + 1) & 3];
    /* release: a reader whose acquire load sees one of these sees the generations published
     * before them too (the lock orders the last writer's publication before this one's stores), so
     * its second load of gen tells it the slot was being rewritten (the seqlock's order without
     * fences, which TSan does not model; plain stores on x86) */
    __atomic_store_n(&s->tsc, t, __ATOMIC_RELEASE);
    __atomic_store_n(&s->real_ns, n, __ATOMIC_RELEASE);
    __atomic_store_n(&s->mult, mult, __ATOMIC_RELEASE);
    __atomic_store_n(&s->max_ticks, rk__tsc_div(RK_TSC_REAL_MAX_NS, mult), __ATOMIC_RELEASE);
    __atomic_store_n(&g_real.gen, gen + 1, __ATOMIC_RELEASE); /* pairs with the readers' acquire */
  }
  rk__flag_unlock(&g_real_lock); /* (its release pairs with the next writer's acquire) */
  return n / 1000u;
}

uint64_t rk__tsc_realtime_us(void) {
  uint64_t mult = rk__tsc_mult(), tries;
  if (mult == 0) return rk_realtime_us(); /* no counter to extrapolate with (yet) */
  for (tries = 0; tries < 4; tries++) {
    uint64_t gen = __atomic_load_n(&g_real.gen, __ATOMIC_ACQUIRE); /* pairs with tsc_reanchor's release */
    const tsc_anchor *s = &g_real.a[gen & 3];
    /* acquire: pairs with the writer's release stores of the slot (and orders the second load of
     * gen after these); plain loads on x86 */
    uint64_t t0 = __atomic_load_n(&s->tsc, __ATOMIC_ACQUIRE), r0 = __atomic_load_n(&s->real_ns, __ATOMIC_ACQUIRE);
    uint64_t m = __atomic_load_n(&s->mult, __ATOMIC_ACQUIRE), max = __atomic_load_n(&s->max_ticks, __ATOMIC_ACQUIRE);
    uint64_t t;
    if (__atomic_load_n(&g_real.gen, __ATOMIC_RELAXED) - gen >= 3) continue; /* the slot may be rewritten */
    t = rk__tsc_read();
    if (gen == 0) return tsc_reanchor(gen, mult);
    /* RDTSC is not ordered after the loads above: read just after another CPU's anchor, it can
     * come out a little before the anchor's own reading; that is the anchor's time (within
     * ~1 us: max / 1024; further is a counter of another CPU out of step, or a stale look) */
    if (t < t0) {
      if (t0 - t > max / 1024) return tsc_reanchor(gen, mult);
      t = t0;
    }
    if (t - t0 > max) {
      /* aged: a newer anchor may be in already (read it), or a writer at work (its anchor is due:
       * extrapolate up to twice the age meanwhile rather than read the clock), or replace it */
      if (__atomic_load_n(&g_real.gen, __ATOMIC_ACQUIRE) != gen) continue;
      if (t - t0 > 2 * max || __atomic_load_n(&g_real_lock, __ATOMIC_RELAXED) == 0) return tsc_reanchor(gen, mult);
    }
    return (r0 + rk__tsc_ns(t - t0, m)) / 1000u;
  }
  return rk_realtime_us();
}

uint64_t rk__tsc_anchors(void) { return __atomic_load_n(&g_real.gen, __ATOMIC_RELAXED); /* a count */ }
