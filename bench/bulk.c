/* bulk.c — `rk-bench bulk`: vector_add on buffers (ringkernel/buffer.h) against the same loop
 * without a ring kernel.
 *
 *   bulk.vector_add        elems_per_s   n = 2^20 floats, c = a + b, the data already in place:
 *     ringkernel.cpu        rk_call_refs of the built-in vector_add (rk_vadd_buf_req) on the CPU
 *                           backend, one lane of one thread, a, b, c RK_BUFFER_DEVICE buffers
 *                           (host memory on the CPU backend), written once before the clock starts
 *     plain.c               the same loop (the handler's: unit stride) in the calling thread, on
 *                           arrays of the same alignment, one call per iteration
 *     plain.thread          the same loop on a persistent worker thread, handed each iteration and
 *                           waited for (mutex, condition variable): a hand-off without the library
 *     ringkernel.cpu.split, plain.thread.split
 *                           the same two with the calling thread on another CPU than the lane / the
 *                           worker (see "Placement" below)
 *     ringkernel.cpu/plain.c  ratio_paired: the median over the rounds of the two rates' quotient
 *                           in the same round; the CPU target is judged on it
 *     ringkernel.cuda       (GPU) the data in device buffers; one rk_send_refs per lane, each lane
 *                           (a block of 1024 threads) striding over its share, the replies taken
 *                           with rk_recv: the round is done when every lane answered
 *     cuda.launch           (GPU) cudaMemcpy of a and b in, a grid-stride kernel launch, cudaMemcpy
 *                           of c out, per iteration
 *     cuda.resident         (GPU) the data already on the device: only the launch and its
 *                           synchronisation
 *   bulk.vector_add.n1024  elems_per_s   the same with n = 2^10 (a launch's fixed cost dominates;
 *                           one lane for ringkernel.cuda)
 *
 * Interleaving: 5 x --trials rounds, each running every CPU impl once in an order rotated by the
 * round (each for --seconds / rounds), the median of the rounds reported (n = rounds); c is
 * checked, then cleared, after every impl's run. Targets: ringkernel.cpu >= 0.8x plain.c (the paired ratio: the median over the rounds
 * of ringkernel.cpu's rate over plain.c's in the same round); on a GPU, ringkernel.cuda
 * >= 1x cuda.resident at 2^20 and >= 2x at 2^10 ("verdict:" lines, as rk-bench gpu's). Without a
 * usable GPU the GPU part says so and emits bulk.gpu/none/device_available = 0 (RK_REQUIRE_GPU=1
 * makes that a failure). The GPU baselines allocate before any ring kernel is resident and run
 * only while none is (ARCHITECTURE §8), as in gpu.c. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ringkernel.h"

#define BULK_N (1u << 20)
#define BULK_SMALL (1u << 10)
#define BULK_TIMEOUT_NS 10000000000ll
#define BULK_MAX_TRIALS 100
/* The CPU impls run in rounds of --seconds / (--trials * BULK_ROUNDS_PER_TRIAL) each: the host's
 * speed drifts on a scale of seconds (docs/buffers.md, "Performance"), so short rounds, interleaved,
 * give every impl the same share of each phase, and the median is taken over more of them. */
#define BULK_ROUNDS_PER_TRIAL 5
#define BULK_MAX_ROUNDS (BULK_MAX_TRIALS * BULK_ROUNDS_PER_TRIAL)
#define TARGET_CPU 0.8
#define TARGET_GPU_LARGE 1.0
#define TARGET_GPU_SMALL 2.0

static float in_a(uint64_t i) { return (float)(i & 1023) * 0.25f; }
static float in_b(uint64_t i) { return (float)(i % 613) - 7.0f; }

static int check_c(const float *c, uint64_t n, const char *impl) {
  uint64_t i;
  for (i = 0; i < n; i++)
    if (c[i] != in_a(i) + in_b(i)) {
      rk_bench_fail("bulk.vector_add %s: c[%llu] = %g, want %g", impl, (unsigned long long)i, (double)c[i],
                    (double)(in_a(i) + in_b(i)));
      return -1;
    }
  return 0;
}

/* The handler's loop (src/device/builtins.h, one thread: unit stride), out of line so that every
 * call does the whole work. */
__attribute__((noinline)) static void plain_vadd(const float *a, const float *b, float *c, uint64_t n) {
  uint64_t i;
  for (i = 0; i < n; i++) c[i] = a[i] + b[i];
  RK_BENCH_KEEP(c);
}

/* ---------------------------------------- the CPU impls -------------------------------------- */

/* Placement (docs/buffers.md, "Performance"). On the 2-vCPU EPYC VM the comparison was decided by
 * where the scheduler put the two threads, not by the library: a round trip between threads on
 * different vCPUs pays futex wake-ups of a halted vCPU (~50 us each there, against 5-10 us on one
 * vCPU), 8-20% of a 2^20 call, and the loop's own speed switches between ~1.4 and ~2.3 G elems/s
 * with the host's load, within a second. So, when the process may run
 * on two CPUs or more, everything that runs the loop is pinned to one CPU ("L"): the lane (it
 * inherits the affinity of the thread that creates the runtime), plain.c's calling thread and
 * plain.thread's worker; ringkernel.cpu / plain.c is then the library's cost on equal terms. The
 * .split impls keep the lane (and the worker) on L and move the calling thread to another CPU
 * ("O"): what a hand-off across cores costs there, for the library and for a plain worker thread
 * alike. Without two CPUs (or when pinning is refused) the split impls are skipped and the rest
 * runs where the scheduler puts it (said in a note). */
enum { IMPL_RING, IMPL_PLAIN, IMPL_THREAD, IMPL_RING_SPLIT, IMPL_THREAD_SPLIT, N_IMPLS };
static const char *const g_impls[N_IMPLS] = {"ringkernel.cpu", "plain.c", "plain.thread", "ringkernel.cpu.split",
                                             "plain.thread.split"};

static double g_paired = -1; /* bulk.vector_add's paired ratio, for the target line */

typedef struct cpu_side {
  rk_runtime *rt;
  rk_kernel *k;
  rk_buffer *a, *b, *c;
  rk_vadd_buf_req req;
  float *pa, *pb, *pc; /* plain.c's and plain.thread's arrays */
  float *check;
  uint64_t n;
  int pinned;          /* the lane and the worker are on cpu_l */
  int cpu_l, cpu_o;    /* cpu_o < 0: no second CPU */
  cpu_set_t saved;     /* the calling thread's affinity before set-up */
  int saved_ok;
  /* plain.thread: a worker that runs plain_vadd once per request (mutex and condition variable) */
  pthread_t worker;
  int worker_up;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t asked, done;
  int quit;
} cpu_side;

static int ring_once(cpu_side *s) {
  rk_vadd_buf_reply rep;
  rk_msg m;
  int rc = rk_call_refs(s->k, rk_vadd_buf_req_TYPE, &s->req, sizeof s->req, 3, &m, &rep, sizeof rep, BULK_TIMEOUT_NS);
  if (rc != RK_OK) {
    rk_bench_fail("bulk.vector_add ringkernel.cpu: rk_call_refs: %s (%s)", rk_err_name(rc), rk_runtime_last_error(s->rt));
    return -1;
  }
  if (rep.n != s->n) {
    rk_bench_fail("bulk.vector_add ringkernel.cpu: the reply says n = %llu", (unsigned long long)rep.n);
    return -1;
  }
  return 0;
}

static void *plain_worker(void *arg) {
  cpu_side *s = (cpu_side *)arg;
  uint64_t seen = 0;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (s->asked == seen && !s->quit) pthread_cond_wait(&s->cv, &s->mu);
    if (s->quit) break;
    seen = s->asked;
    pthread_mutex_unlock(&s->mu);
    plain_vadd(s->pa, s->pb, s->pc, s->n);
    pthread_mutex_lock(&s->mu);
    s->done = seen;
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* plain.thread: hand one loop to the worker and wait for it (a call, as rk_call_refs is) */
static void thread_once(cpu_side *s) {
  pthread_mutex_lock(&s->mu);
  s->asked++;
  pthread_cond_broadcast(&s->cv);
  while (s->done != s->asked) pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
}

/* The calling thread on cpu (-1: no change). */
static void place_caller(const cpu_side *s, int cpu) {
  if (s->pinned && cpu >= 0) (void)rk_bench_pin(cpu);
}

/* Run impl for about `seconds`; elements per second, or -1. */
static double cpu_run(cpu_side *s, int impl, double seconds) {
  uint64_t t0, t, iters = 0;
  int ring = impl == IMPL_RING || impl == IMPL_RING_SPLIT;
  place_caller(s, impl == IMPL_RING_SPLIT || impl == IMPL_THREAD_SPLIT ? s->cpu_o : s->cpu_l);
  t0 = rk_bench_now_ns();
  do {
    if (ring) {
      if (ring_once(s) != 0) return -1;
    } else if (impl == IMPL_PLAIN) {
      plain_vadd(s->pa, s->pb, s->pc, s->n);
    } else {
      thread_once(s);
    }
    iters++;
    t = rk_bench_now_ns();
  } while ((double)(t - t0) < seconds * 1e9);
  place_caller(s, s->cpu_l); /* the checks run where the data is */
  /* validated after the clock stopped */
  if (ring) {
    memset(s->check, 0, s->n * 4);
    if (rk_buffer_read(s->c, 0, s->check, s->n * 4, NULL, NULL) != RK_OK || check_c(s->check, s->n, g_impls[impl]))
      return -1;
    memset(s->check, 0, s->n * 4); /* c cleared too: the next run's check covers its own writes */
    if (rk_buffer_write(s->c, 0, s->check, s->n * 4, NULL, NULL) != RK_OK) return -1;
  } else {
    if (check_c(s->pc, s->n, g_impls[impl])) return -1;
    memset(s->pc, 0, s->n * 4); /* the next impl's run must write every element again */
  }
  return (double)iters * (double)s->n / ((double)(t - t0) / 1e9);
}

static int cpu_setup(cpu_side *s, uint64_t n) {
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  uint64_t i;
  int rc;
  memset(s, 0, sizeof *s);
  s->n = n;
  s->cpu_o = -1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  /* Pin the calling thread before the runtime exists: its threads (the lane) inherit the mask. */
  s->saved_ok = pthread_getaffinity_np(pthread_self(), sizeof s->saved, &s->saved) == 0;
  if (s->saved_ok && rk_bench_ncpus() >= 2) {
    s->cpu_l = rk_bench_cpu(0);
    s->cpu_o = rk_bench_cpu(1);
    s->pinned = rk_bench_pin(s->cpu_l) == 0;
    if (!s->pinned) s->cpu_o = -1;
  }
  ro.backend = RK_BACKEND_CPU;
  ro.log_level = RK_LOG_ERROR;
  lo.lanes = 1;
  lo.threads_per_lane = 1;
  if ((rc = rk_runtime_create(&s->rt, &ro)) != RK_OK ||
      (rc = rk_kernel_launch(s->rt, &rk_builtin_vector_add, &lo, &s->k)) != RK_OK ||
      (rc = rk_kernel_activate(s->k)) != RK_OK || (rc = rk_buffer_alloc(s->rt, RK_BUFFER_DEVICE, n * 4, &s->a)) != RK_OK ||
      (rc = rk_buffer_alloc(s->rt, RK_BUFFER_DEVICE, n * 4, &s->b)) != RK_OK ||
      (rc = rk_buffer_alloc(s->rt, RK_BUFFER_DEVICE, n * 4, &s->c)) != RK_OK) {
    rk_bench_fail("bulk: CPU set-up: %s (%s)", rk_err_name(rc), s->rt ? rk_runtime_last_error(s->rt) : "");
    return -1;
  }
  /* plain.c's arrays aligned as the pool's buffers (256 bytes) */
  if (posix_memalign((void **)&s->pa, 256, n * 4) || posix_memalign((void **)&s->pb, 256, n * 4) ||
      posix_memalign((void **)&s->pc, 256, n * 4) || (s->check = (float *)malloc(n * 4)) == NULL) {
    rk_bench_fail("bulk: out of memory");
    return -1;
  }
  for (i = 0; i < n; i++) {
    s->pa[i] = in_a(i);
    s->pb[i] = in_b(i);
    s->pc[i] = 0;
  }
  if (rk_buffer_write(s->a, 0, s->pa, n * 4, NULL, NULL) || rk_buffer_write(s->b, 0, s->pb, n * 4, NULL, NULL) ||
      rk_buffer_write(s->c, 0, s->pc, n * 4, NULL, NULL) ||
      rk_buffer_ref(s->a, 0, n * 4, RK_BUF_READ, &s->req.a) || rk_buffer_ref(s->b, 0, n * 4, RK_BUF_READ, &s->req.b) ||
      rk_buffer_ref(s->c, 0, n * 4, RK_BUF_WRITE, &s->req.c)) {
    rk_bench_fail("bulk: CPU set-up: %s", rk_runtime_last_error(s->rt));
    return -1;
  }
  s->req.n = n;
  if ((rc = rk_bench_spawn(&s->worker, s->pinned ? s->cpu_l : -1, plain_worker, s, NULL)) != 0) {
    rk_bench_fail("bulk: plain.thread's worker: %s", strerror(rc));
    return -1;
  }
  s->worker_up = 1;
  return 0;
}

static void cpu_teardown(cpu_side *s) {
  if (s->worker_up) {
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL);
  }
  if (s->k) rk_kernel_destroy(s->k);
  s->k = NULL;
  if (s->a) rk_buffer_free(s->a);
  if (s->b) rk_buffer_free(s->b);
  if (s->c) rk_buffer_free(s->c);
  rk_runtime_destroy(s->rt);
  free(s->pa);
  free(s->pb);
  free(s->pc);
  free(s->check);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  if (s->saved_ok) (void)pthread_setaffinity_np(pthread_self(), sizeof s->saved, &s->saved);
}

static void cpu_measure(const rk_bench_opts *o, const char *bench, uint64_t n) {
  static double v[N_IMPLS][BULK_MAX_ROUNDS];
  int want[N_IMPLS], any = 0, t, j, trials = o->trials < BULK_MAX_TRIALS ? o->trials : BULK_MAX_TRIALS;
  int rounds = trials * BULK_ROUNDS_PER_TRIAL;
  cpu_side s;
  for (j = 0; j < N_IMPLS; j++) any |= want[j] = rk_bench_want(o, bench, g_impls[j], "elems_per_s");
  if (!any) return;
  if (cpu_setup(&s, n) != 0) {
    cpu_teardown(&s);
    return;
  }
  if (s.cpu_o < 0) want[IMPL_RING_SPLIT] = want[IMPL_THREAD_SPLIT] = 0;
  if (s.pinned)
    rk_bench_note("   %s: the lane, plain.c and plain.thread's worker on CPU %d; the .split impls' caller on CPU %d",
                  bench, s.cpu_l, s.cpu_o);
  else
    rk_bench_note("   %s: not pinned (one CPU, or pinning refused): placement as the scheduler chooses; no .split impls",
                  bench);
  /* one untimed round: pages faulted in, caches, the lane and the worker warm */
  for (j = 0; j < N_IMPLS; j++)
    if (want[j] && cpu_run(&s, j, o->seconds / (trials + 1)) < 0) goto out;
  for (t = 0; t < rounds; t++)
    for (j = 0; j < N_IMPLS; j++) {
      int impl = (j + t) % N_IMPLS; /* the order rotates */
      if (want[impl] && (v[impl][t] = cpu_run(&s, impl, o->seconds / rounds)) < 0) goto out;
    }
  /* The paired ratio: ringkernel.cpu over plain.c round by round (runs next to each other in time),
   * then the median. The rates are bimodal on the EPYC VM (~1.4 and ~2.3 G elems/s, the host
   * switching between the two within a second), so the median of each impl alone lands in one mode
   * or the other by chance and their quotient swung from 0.6x to 1.15x between runs; the paired
   * ratio does not (docs/buffers.md, "Performance"). Computed before the medians sort v. */
  if (want[IMPL_RING] && want[IMPL_PLAIN]) {
    static double r[BULK_MAX_ROUNDS];
    double lo, hi, med;
    for (t = 0; t < rounds; t++) r[t] = v[IMPL_RING][t] / v[IMPL_PLAIN][t];
    med = rk_bench_median(r, (size_t)rounds, &lo, &hi);
    rk_bench_emit(bench, "ringkernel.cpu/plain.c", "ratio_paired", med, "x", (uint64_t)rounds, lo, hi);
    if (n == BULK_N) g_paired = med;
  }
  for (j = 0; j < N_IMPLS; j++)
    if (want[j]) {
      double lo, hi, med = rk_bench_median(v[j], (size_t)rounds, &lo, &hi);
      rk_bench_emit(bench, g_impls[j], "elems_per_s", med, "elems/s", (uint64_t)rounds, lo, hi);
    }
out:
  cpu_teardown(&s);
}

/* ---------------------------------------- the GPU impls -------------------------------------- */

static int required(void) {
  const char *r = getenv("RK_REQUIRE_GPU");
  return r && strcmp(r, "1") == 0;
}

#if defined(RK_BENCH_CUDA)
static char g_gpu[160];

static void verdict(const char *target, const char *bench, const char *impl, double value, double bound) {
  FILE *f = rk_bench_json() ? stderr : stdout;
  fprintf(f, "verdict: target=%s bench=%s impl=%s metric=elems_per_s value=%.3f op=>= bound=%.3f result=%s gpu=\"%s\"\n",
          target, bench, impl, value, bound, value >= bound ? "ok" : "MISSED", g_gpu);
  fflush(f);
}

/* ringkernel.cuda: lanes messages per round, lane i covering its share of [0, n). */
static double ring_gpu_run(rk_runtime *rt, rk_kernel *k, rk_buffer *a, rk_buffer *b, rk_buffer *c, uint64_t n,
                           uint32_t lanes, double seconds) {
  rk_vadd_buf_req req[RK_MAX_LANES];
  uint64_t per = (n + lanes - 1) / lanes, t0, t, iters = 0;
  uint32_t i, parts = 0;
  for (i = 0; i < lanes && (uint64_t)i * per < n; i++) {
    uint64_t off = (uint64_t)i * per, len = n - off < per ? n - off : per;
    memset(&req[i], 0, sizeof req[i]);
    if (rk_buffer_ref(a, off * 4, len * 4, RK_BUF_READ, &req[i].a) || rk_buffer_ref(b, off * 4, len * 4, RK_BUF_READ, &req[i].b) ||
        rk_buffer_ref(c, off * 4, len * 4, RK_BUF_WRITE, &req[i].c)) {
      rk_bench_fail("bulk ringkernel.cuda: %s", rk_runtime_last_error(rt));
      return -1;
    }
    req[i].n = len;
    parts++;
  }
  t0 = rk_bench_now_ns();
  do {
    for (i = 0; i < parts; i++) /* round robin: message i goes to lane i */
      if (rk_send_refs(k, rk_vadd_buf_req_TYPE, &req[i], sizeof req[i], 3, 0, NULL) != RK_OK) {
        rk_bench_fail("bulk ringkernel.cuda: rk_send_refs: %s", rk_runtime_last_error(rt));
        return -1;
      }
    for (i = 0; i < parts; i++) {
      rk_vadd_buf_reply rep;
      rk_msg m;
      if (rk_recv(k, &m, &rep, sizeof rep, BULK_TIMEOUT_NS) != RK_OK || m.status != 0) {
        rk_bench_fail("bulk ringkernel.cuda: rk_recv: %s (status %d)", rk_runtime_last_error(rt), m.status);
        return -1;
      }
    }
    iters++;
    t = rk_bench_now_ns();
  } while ((double)(t - t0) < seconds * 1e9);
  return (double)iters * (double)n / ((double)(t - t0) / 1e9);
}

static void gpu_measure_n(const rk_bench_opts *o, rk_runtime *rt, const char *bench, uint64_t n, uint32_t lanes) {
  rk_bench_gpu_vadd *base = NULL;
  rk_buffer *a = NULL, *b = NULL, *c = NULL;
  rk_kernel *k = NULL;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  float *h = (float *)malloc(n * 4);
  char err[256] = "";
  double v[3] = {-1, -1, -1};
  uint64_t i;
  int rc;
  if (h == NULL) return;
  for (i = 0; i < n; i++) h[i] = in_a(i);
  /* every allocation first: the baselines' memory, the buffers (pool sub-allocations) */
  if (rk_bench_gpu_vadd_open(0, n, &base, err, sizeof err) != 0) rk_bench_fail("bulk baselines: %s", err);
  if ((rc = rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &a)) || (rc = rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &b)) ||
      (rc = rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &c)) || (rc = rk_buffer_write(a, 0, h, n * 4, NULL, NULL))) {
    rk_bench_fail("bulk ringkernel.cuda: %s", rk_runtime_last_error(rt));
    goto out;
  }
  for (i = 0; i < n; i++) h[i] = in_b(i);
  if (rk_buffer_write(b, 0, h, n * 4, NULL, NULL)) goto out;
  /* the baselines, while no ring kernel is resident */
  if (base) {
    if (rk_bench_gpu_vadd_run(base, 0, o->seconds, &v[1], err, sizeof err) != 0 ||
        rk_bench_gpu_vadd_run(base, 1, o->seconds, &v[2], err, sizeof err) != 0)
      rk_bench_fail("bulk baselines: %s", err);
  }
  /* the ring kernel: launched, measured, destroyed */
  lo.lanes = lanes;
  lo.threads_per_lane = 1024;
  while ((rc = rk_kernel_launch(rt, &rk_builtin_vector_add, &lo, &k)) == RK_ENORESOURCE && lo.lanes > 1) lo.lanes /= 2;
  if (rc != RK_OK || (rc = rk_kernel_activate(k)) != RK_OK) {
    rk_bench_fail("bulk ringkernel.cuda: launch: %s (%s)", rk_err_name(rc), rk_runtime_last_error(rt));
    goto out;
  }
  rk_bench_note("   %s: ringkernel.cuda with %u lanes x 1024 threads", bench, lo.lanes);
  (void)ring_gpu_run(rt, k, a, b, c, n, lo.lanes, o->seconds / 10); /* warm */
  v[0] = ring_gpu_run(rt, k, a, b, c, n, lo.lanes, o->seconds);
  rk_kernel_destroy(k);
  k = NULL;
  if (rk_buffer_read(c, 0, h, n * 4, NULL, NULL) == RK_OK) (void)check_c(h, n, "ringkernel.cuda");
  if (v[0] > 0) rk_bench_emit(bench, "ringkernel.cuda", "elems_per_s", v[0], "elems/s", 1, NAN, NAN);
  if (v[1] > 0) rk_bench_emit(bench, "cuda.launch", "elems_per_s", v[1], "elems/s", 1, NAN, NAN);
  if (v[2] > 0) rk_bench_emit(bench, "cuda.resident", "elems_per_s", v[2], "elems/s", 1, NAN, NAN);
  if (v[0] > 0 && v[2] > 0)
    verdict(n == BULK_N ? "h100.bulk_large" : "h100.bulk_small", bench, "ringkernel.cuda/cuda.resident", v[0] / v[2],
            n == BULK_N ? TARGET_GPU_LARGE : TARGET_GPU_SMALL);
out:
  if (k) rk_kernel_destroy(k);
  if (a) rk_buffer_free(a);
  if (b) rk_buffer_free(b);
  if (c) rk_buffer_free(c);
  rk_bench_gpu_vadd_close(base);
  free(h);
}
#endif

static char g_log_last[512];
static void log_sink(void *user, rk_log_level level, const char *message) {
  (void)user;
  (void)level;
  snprintf(g_log_last, sizeof g_log_last, "%s", message); /* only while the runtime is created */
}

static void gpu_measure(const rk_bench_opts *o) {
  rk_runtime *rt = NULL;
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  char m[320];
  int rc;
  if (!rk_bench_want(o, "bulk.vector_add", "ringkernel.cuda", NULL) && !rk_bench_want(o, "bulk.vector_add", "cuda.", NULL))
    return;
  ro.backend = RK_BACKEND_CUDA;
  ro.log_level = RK_LOG_ERROR;
  ro.log = log_sink;
  ro.buffer_device_bytes = (size_t)16 * BULK_N; /* a, b, c of 2^20 floats, and room */
  if ((rc = rk_runtime_create(&rt, &ro)) != RK_OK) {
    if (rc == RK_ENODEV && !required()) {
      rk_bench_note("rk-bench bulk: no GPU (%s: %s): the GPU impls are skipped", rk_err_name(rc), g_log_last);
      rk_bench_emit("bulk.gpu", "none", "device_available", 0, "bool", 0, NAN, NAN);
    } else {
      rk_bench_fail("rk-bench bulk: the CUDA runtime could not be created: %s (%s)", rk_err_name(rc), g_log_last);
    }
    return;
  }
#if defined(RK_BENCH_CUDA)
  {
    int sms = rk_bench_gpu_sms(0);
    uint32_t lanes = sms > 0 ? (uint32_t)(sms < RK_MAX_LANES ? sms : RK_MAX_LANES) : 8;
    if (rk_bench_gpu_name(0, g_gpu, sizeof g_gpu) != 0) snprintf(g_gpu, sizeof g_gpu, "unknown CUDA GPU");
    snprintf(m, sizeof m, "%s; host %s", g_gpu, rk_bench_machine());
    rk_bench_set_machine(m);
    rk_bench_note("\n== bulk (GPU): %s", g_gpu);
    gpu_measure_n(o, rt, "bulk.vector_add", BULK_N, lanes);
    gpu_measure_n(o, rt, "bulk.vector_add.n1024", BULK_SMALL, 1);
    rk_bench_table("bulk.vector_add");
    rk_bench_set_machine(NULL);
  }
#else
  (void)m;
  rk_bench_note("rk-bench bulk: built without CUDA: the GPU impls are skipped");
#endif
  rk_runtime_destroy(rt);
}

/* The target, on the paired ratio: a line as rk_bench_ratio's (stdout in table mode, stderr with
 * --json, where the figure itself is the ratio_paired record). */
static void paired_verdict(const char *bench, double target) {
  FILE *f = rk_bench_json() ? stderr : stdout;
  if (g_paired < 0) return;
  fprintf(f, "  ratio %-12s ratio_paired ringkernel.cpu / plain.c (median of the rounds) = %.2fx   (target >= %.2fx: %s)\n",
          bench, g_paired, target, g_paired >= target ? "ok" : "MISSED");
  fflush(f);
}

int rk_bench_bulk(const rk_bench_opts *o) {
  rk_bench_note("\n== bulk: vector_add on buffers, n = 2^20 and 2^10 floats; %s", rk_bench_machine());
  cpu_measure(o, "bulk.vector_add", BULK_N);
  cpu_measure(o, "bulk.vector_add.n1024", BULK_SMALL);
  rk_bench_table("bulk.vector_add");
  paired_verdict("bulk.vector_add", TARGET_CPU);
  rk_bench_ratio("bulk.vector_add", "elems_per_s", "ringkernel.cpu", "plain.c", 0, 1);
  rk_bench_ratio("bulk.vector_add", "elems_per_s", "ringkernel.cpu", "plain.thread", 0, 1);
  rk_bench_ratio("bulk.vector_add", "elems_per_s", "ringkernel.cpu.split", "plain.thread.split", 0, 1);
  rk_bench_ratio("bulk.vector_add", "elems_per_s", "ringkernel.cpu.split", "plain.c", 0, 1);
  rk_bench_ratio("bulk.vector_add.n1024", "elems_per_s", "ringkernel.cpu", "plain.c", 0, 1);
  rk_bench_ratio("bulk.vector_add.n1024", "elems_per_s", "ringkernel.cpu", "plain.thread", 0, 1);
  gpu_measure(o);
  return 0;
}
