/* rk-ab — two builds of librk.so side by side in one process: rk_call round trips on the
 * built-in echo kernel (CPU backend), in alternating rounds, A then B then B then A ...
 *
 *   rk-ab A/librk.so B/librk.so [pairs=60] [round_ms=30]
 *
 * Why: on the 2-core VMs the round trip moves by 10-30 % from minute to minute with the host's
 * placement of the two vCPUs (the floor's modes: docs/design-notes.md, "An rk_call round trip,
 * eighth step"), so two builds timed in separate runs, even alternating, differ by more than most
 * changes to the library move them. Here both builds are loaded at once (dlopen, RTLD_LOCAL: each
 * its own runtime, lane thread and globals), and each pair of rounds runs within ~60 ms, so the
 * per-pair ratio B/A sees the same host state; its median over the pairs resolves a few percent.
 *
 * Output: per build the median (min..max) of the rounds' p50 and trimmed mean (the mean of the
 * samples below the round's p90: finer than the timer's ~10 ns step), and the median and
 * quartiles of the per-pair ratios B/A of each; then one JSON line with the same figures and the
 * CPU model. Samples: rdtsc around each rk_call (not ordered: the same for both builds), the
 * first 2 ms of each round not recorded (a lane parked during the other build's round wakes up). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "ringkernel.h"

typedef struct build {
  const char *path;
  int (*create)(rk_runtime **, const rk_runtime_options *);
  int (*launch)(rk_runtime *, const rk_kernel_desc *, const rk_launch_options *, rk_kernel **);
  int (*activate)(rk_kernel *);
  int (*call)(rk_kernel *, uint32_t, const void *, uint32_t, rk_msg *, void *, uint32_t, int64_t);
  const char *(*err_name)(int);
  rk_kernel *k;
  double *p50, *tmean; /* per round */
} build;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t ticks(void) {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return now_ns();
#endif
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}
static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double g_tpn; /* ticks per ns */
#define MAXS (1u << 20)
static uint64_t g_v[MAXS];

static void *sym(void *h, const char *path, const char *name) {
  void *p = dlsym(h, name);
  if (p == NULL) {
    fprintf(stderr, "rk-ab: %s: no symbol %s\n", path, name);
    exit(1);
  }
  return p;
}

static void load(build *b) {
  void *h = dlopen(b->path, RTLD_NOW | RTLD_LOCAL);
  rk_runtime *rt;
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  const rk_kernel_desc *echo;
  int rc;
  if (h == NULL) {
    fprintf(stderr, "rk-ab: %s\n", dlerror());
    exit(1);
  }
  b->create = (int (*)(rk_runtime **, const rk_runtime_options *))sym(h, b->path, "rk_runtime_create");
  b->launch = (int (*)(rk_runtime *, const rk_kernel_desc *, const rk_launch_options *, rk_kernel **))sym(
      h, b->path, "rk_kernel_launch");
  b->activate = (int (*)(rk_kernel *))sym(h, b->path, "rk_kernel_activate");
  b->call = (int (*)(rk_kernel *, uint32_t, const void *, uint32_t, rk_msg *, void *, uint32_t, int64_t))sym(
      h, b->path, "rk_call");
  b->err_name = (const char *(*)(int))sym(h, b->path, "rk_err_name");
  echo = (const rk_kernel_desc *)sym(h, b->path, "rk_builtin_echo");
  o.backend = RK_BACKEND_CPU;
  if ((rc = b->create(&rt, &o)) != 0 || (rc = b->launch(rt, echo, NULL, &b->k)) != 0 || (rc = b->activate(b->k)) != 0) {
    fprintf(stderr, "rk-ab: %s: set-up: %s\n", b->path, b->err_name(rc));
    exit(1);
  }
}

/* One round: rk_call for ms after 2 ms unrecorded; its p50 and trimmed mean (ns). */
static void round_of(build *b, double ms, int r) {
  uint8_t req[32], buf[32];
  rk_msg rep;
  size_t n = 0, i, m;
  uint64_t warm = now_ns() + 2000000, end = warm + (uint64_t)(ms * 1e6), seq = 0;
  double sum = 0;
  for (;;) {
    uint64_t t0, t1, t;
    int rc;
    memcpy(req, &seq, sizeof seq);
    seq++;
    t0 = ticks();
    rc = b->call(b->k, 7, req, sizeof req, &rep, buf, sizeof buf, 1000000000);
    t1 = ticks();
    if (rc != 0 || memcmp(buf, req, sizeof req) != 0) {
      fprintf(stderr, "rk-ab: %s: rk_call: %s\n", b->path, rc ? b->err_name(rc) : "wrong reply");
      exit(1);
    }
    t = now_ns();
    if (t < warm) continue;
    g_v[n++] = t1 - t0;
    if (t > end || n == MAXS) break;
  }
  qsort(g_v, n, sizeof *g_v, cmp_u64);
  m = n * 9 / 10;
  if (m == 0) m = 1;
  for (i = 0; i < m; i++) sum += (double)g_v[i];
  b->p50[r] = (double)g_v[n / 2] / g_tpn;
  b->tmean[r] = sum / (double)m / g_tpn;
}

static void cpu_model(char *out, size_t len) {
  char line[256];
  FILE *f = fopen("/proc/cpuinfo", "r");
  snprintf(out, len, "unknown");
  if (f == NULL) return;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *p = strchr(line, ':');
      if (p) {
        p += 1 + (p[1] == ' ');
        p[strcspn(p, "\n\"\\")] = 0;
        snprintf(out, len, "%s", p);
      }
      break;
    }
  }
  fclose(f);
}

/* median, q25, q75 of v[0..n) (sorted in place) */
static void quart(double *v, int n, double *med, double *q25, double *q75) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  *med = v[n / 2];
  *q25 = v[n / 4];
  *q75 = v[(3 * n) / 4];
}

int main(int argc, char **argv) {
  build a, b;
  int pairs, i;
  double ms, *rp, *rt, med, q25, q75, tmed, tq25, tq75, am, bm, atm, btm, lo, hi;
  char cpu[128];
  uint64_t t0, n0;
  if (argc < 3) {
    fprintf(stderr, "usage: rk-ab A/librk.so B/librk.so [pairs=60] [round_ms=30]\n");
    return 2;
  }
  pairs = argc > 3 ? atoi(argv[3]) : 60;
  ms = argc > 4 ? atof(argv[4]) : 30;
  if (pairs < 4 || pairs > 10000 || ms <= 0) {
    fprintf(stderr, "rk-ab: pairs 4..10000, round_ms > 0\n");
    return 2;
  }
  t0 = ticks();
  n0 = now_ns();
  while (now_ns() - n0 < 50000000) {
  }
  g_tpn = (double)(ticks() - t0) / (double)(now_ns() - n0);
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.path = argv[1];
  b.path = argv[2];
  a.p50 = calloc((size_t)pairs, sizeof(double));
  a.tmean = calloc((size_t)pairs, sizeof(double));
  b.p50 = calloc((size_t)pairs, sizeof(double));
  b.tmean = calloc((size_t)pairs, sizeof(double));
  rp = calloc((size_t)pairs, sizeof(double));
  rt = calloc((size_t)pairs, sizeof(double));
  if (!a.p50 || !a.tmean || !b.p50 || !b.tmean || !rp || !rt) return 1;
  load(&a);
  load(&b);
  for (i = 0; i < pairs; i++) { /* ABBA: neither build always goes first */
    if (i & 1) {
      round_of(&b, ms, i);
      round_of(&a, ms, i);
    } else {
      round_of(&a, ms, i);
      round_of(&b, ms, i);
    }
    rp[i] = b.p50[i] / a.p50[i];
    rt[i] = b.tmean[i] / a.tmean[i];
  }
  cpu_model(cpu, sizeof cpu);
  quart(rp, pairs, &med, &q25, &q75);
  quart(rt, pairs, &tmed, &tq25, &tq75);
  quart(a.p50, pairs, &am, &lo, &hi);
  printf("A %s: rtt p50 median %.0f ns (%.0f..%.0f)\n", a.path, am, a.p50[0], a.p50[pairs - 1]);
  quart(b.p50, pairs, &bm, &lo, &hi);
  printf("B %s: rtt p50 median %.0f ns (%.0f..%.0f)\n", b.path, bm, b.p50[0], b.p50[pairs - 1]);
  quart(a.tmean, pairs, &atm, &lo, &hi);
  quart(b.tmean, pairs, &btm, &lo, &hi);
  printf("trimmed means: A %.1f ns, B %.1f ns (medians of the rounds)\n", atm, btm);
  printf("B/A per pair: p50 %.3f (q25 %.3f, q75 %.3f); trimmed mean %.3f (q25 %.3f, q75 %.3f); %d pairs of %.0f ms rounds\n",
         med, q25, q75, tmed, tq25, tq75, pairs, ms);
  printf("{\"bench\": \"ab.rtt.echo\", \"a\": \"%s\", \"b\": \"%s\", \"pairs\": %d, \"round_ms\": %.0f, "
         "\"a_p50_ns\": %.1f, \"b_p50_ns\": %.1f, \"a_tmean_ns\": %.1f, \"b_tmean_ns\": %.1f, "
         "\"ratio_p50\": %.4f, \"ratio_p50_q25\": %.4f, \"ratio_p50_q75\": %.4f, "
         "\"ratio_tmean\": %.4f, \"ratio_tmean_q25\": %.4f, \"ratio_tmean_q75\": %.4f, \"cpu\": \"%s\"}\n",
         a.path, b.path, pairs, ms, am, bm, atm, btm, med, q25, q75, tmed, tq25, tq75, cpu);
  fflush(stdout);
  _exit(0); /* the two runtimes' lanes keep running: no teardown to time or to wait for */
}
