/* hlc.c — `rk-bench hlc`: the cost of a Hybrid Logical Clock stamp against the bare physical
 * clock read it is built on.
 *
 *   hlc.tick  ns_per_op  ringkernel            rk_clock_tick, one thread
 *                        ringkernel.contended  rk_clock_tick, two threads (different CPUs) on one
 *                                              clock; the time per op as each thread sees it
 *                        clock_gettime         bare clock_gettime(CLOCK_REALTIME), one thread
 *   hlc.recv  ns_per_op  ringkernel / ringkernel.contended: rk_clock_recv of stamps taken from a
 *                        second clock; clock_gettime: the same bare-read figure, repeated here so
 *                        that each bench carries its baseline.
 * Every loop checks that each stamp is larger than the thread's previous one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "ringkernel/error.h"
#include "ringkernel/hlc.h"

enum { OP_TICK, OP_RECV, OP_CLOCK };
#define NPEER 1024 /* received stamps, cycled through */

typedef struct hlc_worker {
  int op;
  rk_clock *clock;
  const rk_hlc *peer; /* NPEER stamps from another clock */
  rk_bench_barrier *start;
  uint64_t n;
  uint64_t t0, t1;
  uint64_t errors;
  uint64_t sink;
} hlc_worker;

static void *hlc_thread(void *arg) {
  hlc_worker *w = arg;
  const uint64_t n = w->n;
  uint64_t i, errors = 0, sink = 0;
  rk_hlc prev = 0, t = 0;
  rk_bench_barrier_wait(w->start);
  w->t0 = rk_bench_now_ns();
  switch (w->op) {
    case OP_TICK:
      for (i = 0; i < n; i++) {
        if (rk_clock_tick(w->clock, &t) != RK_OK || t <= prev) errors++;
        prev = t;
      }
      break;
    case OP_RECV:
      for (i = 0; i < n; i++) {
        if (rk_clock_recv(w->clock, w->peer[i & (NPEER - 1)], &t) != RK_OK || t <= prev) errors++;
        prev = t;
      }
      break;
    default:
      for (i = 0; i < n; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sink += (uint64_t)ts.tv_nsec;
      }
      break;
  }
  w->t1 = rk_bench_now_ns();
  w->errors = errors;
  w->sink = sink + prev;
  return NULL;
}

/* One trial: `threads` threads (1 or 2, on CPUs 0 and 1) each run n ops; returns the mean over the
 * threads of each one's elapsed time / n. */
static double hlc_trial(int op, int threads, rk_clock *clock, const rk_hlc *peer, uint64_t n,
                        int *pinned_all) {
  pthread_t th[2];
  hlc_worker w[2];
  rk_bench_barrier start;
  double sum = 0;
  int i;
  rk_bench_barrier_init(&start, (uint32_t)threads);
  for (i = 0; i < threads; i++) {
    int pinned = 0;
    memset(&w[i], 0, sizeof w[i]);
    w[i].op = op;
    w[i].clock = clock;
    w[i].peer = peer;
    w[i].start = &start;
    w[i].n = n;
    if (rk_bench_spawn(&th[i], rk_bench_cpu(i), hlc_thread, &w[i], &pinned) != 0) {
      fprintf(stderr, "rk-bench: pthread_create failed\n");
      exit(1);
    }
    if (!pinned) *pinned_all = 0;
  }
  for (i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    if (w[i].errors)
      rk_bench_fail("hlc: %llu stamps not increasing or refused", (unsigned long long)w[i].errors);
    sum += (double)(w[i].t1 - w[i].t0) / (double)n;
  }
  return sum / threads;
}

static double measure(const rk_bench_opts *o, int op, int threads, rk_clock *clock,
                      const rk_hlc *peer, double *lo, double *hi, int *pinned_all) {
  double v[100], ns;
  uint64_t n;
  int t;
  /* warm-up + calibration */
  ns = hlc_trial(op, threads, clock, peer, 20000, pinned_all);
  n = (uint64_t)(o->seconds / o->trials * 1e9 / ns);
  if (n < 10000) n = 10000;
  for (t = 0; t < o->trials; t++) v[t] = hlc_trial(op, threads, clock, peer, n, pinned_all);
  return rk_bench_median(v, (size_t)o->trials, lo, hi);
}

int rk_bench_hlc(const rk_bench_opts *o) {
  rk_clock *clock = NULL, *peer_clock = NULL;
  rk_hlc peer[NPEER];
  double lo, hi, bare = 0, bare_lo = 0, bare_hi = 0, v;
  int i, pinned_all = 1;
  int contended = rk_bench_ncpus() >= 2;
  if (rk_clock_create(&clock, 1, 0) != RK_OK || rk_clock_create(&peer_clock, 2, 0) != RK_OK) {
    rk_bench_fail("hlc: rk_clock_create failed");
    return 1;
  }
  for (i = 0; i < NPEER; i++) rk_clock_tick(peer_clock, &peer[i]);

  rk_bench_note("\n== hlc: single-thread figures on CPU %d; contended: 2 threads on CPUs %d and "
                "%d, one clock",
                rk_bench_cpu(0), rk_bench_cpu(0), rk_bench_cpu(1));
  if (rk_bench_want(o, "hlc.tick", "clock_gettime", "ns_per_op") ||
      rk_bench_want(o, "hlc.recv", "clock_gettime", "ns_per_op"))
    bare = measure(o, OP_CLOCK, 1, clock, peer, &bare_lo, &bare_hi, &pinned_all);

  if (rk_bench_want(o, "hlc.tick", "ringkernel", "ns_per_op")) {
    v = measure(o, OP_TICK, 1, clock, peer, &lo, &hi, &pinned_all);
    rk_bench_emit("hlc.tick", "ringkernel", "ns_per_op", v, "ns", (uint64_t)o->trials, lo, hi);
  }
  if (contended && rk_bench_want(o, "hlc.tick", "ringkernel.contended", "ns_per_op")) {
    v = measure(o, OP_TICK, 2, clock, peer, &lo, &hi, &pinned_all);
    rk_bench_emit("hlc.tick", "ringkernel.contended", "ns_per_op", v, "ns", (uint64_t)o->trials,
                  lo, hi);
  }
  if (rk_bench_want(o, "hlc.tick", "clock_gettime", "ns_per_op"))
    rk_bench_emit("hlc.tick", "clock_gettime", "ns_per_op", bare, "ns", (uint64_t)o->trials,
                  bare_lo, bare_hi);

  /* fresh stamps for recv: the peer clock's stamps lie a little behind the local clock, as a
   * message's stamp does */
  for (i = 0; i < NPEER; i++) rk_clock_tick(peer_clock, &peer[i]);
  if (rk_bench_want(o, "hlc.recv", "ringkernel", "ns_per_op")) {
    v = measure(o, OP_RECV, 1, clock, peer, &lo, &hi, &pinned_all);
    rk_bench_emit("hlc.recv", "ringkernel", "ns_per_op", v, "ns", (uint64_t)o->trials, lo, hi);
  }
  if (contended && rk_bench_want(o, "hlc.recv", "ringkernel.contended", "ns_per_op")) {
    v = measure(o, OP_RECV, 2, clock, peer, &lo, &hi, &pinned_all);
    rk_bench_emit("hlc.recv", "ringkernel.contended", "ns_per_op", v, "ns", (uint64_t)o->trials,
                  lo, hi);
  }
  if (rk_bench_want(o, "hlc.recv", "clock_gettime", "ns_per_op"))
    rk_bench_emit("hlc.recv", "clock_gettime", "ns_per_op", bare, "ns", (uint64_t)o->trials,
                  bare_lo, bare_hi);

  rk_bench_note("   threads pinned: %s", pinned_all ? "yes" : "NO (pinning failed)");
  rk_bench_table("hlc.");
  if (!rk_bench_json()) printf("\n");
  rk_bench_ratio("hlc.tick", "ns_per_op", "ringkernel", "clock_gettime", 1.5, 0);
  rk_bench_ratio("hlc.recv", "ns_per_op", "ringkernel", "clock_gettime", 0, 0);
  rk_bench_ratio("hlc.tick", "ns_per_op", "ringkernel.contended", "ringkernel", 0, 0);
  rk_clock_destroy(clock);
  rk_clock_destroy(peer_clock);
  return 0;
}
