/* common.c — rk-bench's shared machinery: result sink (JSON lines / table + ratios), machine
 * string, timers and their calibration, quantiles, CPU pinning and a spinning start barrier. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* The machine named on result lines: the CPU unless a subcommand measures something else (the
 * GPU subcommand names the GPU). */
static char g_machine_override[256];

/* ------------------------------------ results ------------------------------------------------- */

#define MAX_RESULTS 512

typedef struct result {
  char bench[48], impl[40], metric[32], unit[16];
  double value, lo, hi;
  uint64_t n;
  int shown; /* already printed in a table */
} result;

static result g_results[MAX_RESULTS];
static int g_nresults;
static int g_json;
static int g_failed;

int rk_bench_json(void) { return g_json; }
void rk_bench_set_json(int on) { g_json = on; }
int rk_bench_failed(void) { return g_failed; }

void rk_bench_fail(const char *fmt, ...) {
  va_list ap;
  g_failed = 1;
  fprintf(stderr, "rk-bench: FAILED: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void json_number(FILE *f, double v) {
  if (!isfinite(v))
    fputs("null", f);
  else if (fabs(v) >= 1000.0)
    fprintf(f, "%.0f", v);
  else
    fprintf(f, "%.3f", v);
}

void rk_bench_emit(const char *bench, const char *impl, const char *metric, double value,
                   const char *unit, uint64_t n, double lo, double hi) {
  if (g_nresults < MAX_RESULTS) {
    result *r = &g_results[g_nresults++];
    snprintf(r->bench, sizeof r->bench, "%s", bench);
    snprintf(r->impl, sizeof r->impl, "%s", impl);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->value = value;
    r->lo = lo;
    r->hi = hi;
    r->n = n;
    r->shown = 0;
  }
  if (g_json) {
    fputs("{\"bench\": ", stdout);
    json_string(stdout, bench);
    fputs(", \"impl\": ", stdout);
    json_string(stdout, impl);
    fputs(", \"metric\": ", stdout);
    json_string(stdout, metric);
    fputs(", \"value\": ", stdout);
    json_number(stdout, value);
    fputs(", \"unit\": ", stdout);
    json_string(stdout, unit);
    fprintf(stdout, ", \"n\": %llu, \"machine\": ", (unsigned long long)n);
    json_string(stdout, g_machine_override[0] ? g_machine_override : rk_bench_machine());
    fputs("}\n", stdout);
    fflush(stdout);
  } else {
    fprintf(stderr, "  .. %-16s %-22s %-12s %14.2f %s\n", bench, impl, metric, value, unit);
  }
}

/* 123456789 -> "123.5 M"; small values with two decimals. */
static void fmt_value(char *buf, size_t len, double v) {
  if (!isfinite(v))
    snprintf(buf, len, "-");
  else if (fabs(v) >= 1e9)
    snprintf(buf, len, "%.2f G", v / 1e9);
  else if (fabs(v) >= 1e6)
    snprintf(buf, len, "%.2f M", v / 1e6);
  else if (fabs(v) >= 1e4)
    snprintf(buf, len, "%.1f k", v / 1e3);
  else
    snprintf(buf, len, "%.1f", v);
}

void rk_bench_table(const char *prefix) {
  size_t plen = strlen(prefix);
  int i, j, k;
  if (g_json) return;
  for (i = 0; i < g_nresults; i++) {
    const char *bench = g_results[i].bench;
    const char *metrics[8];
    const char *units[8];
    int nm = 0;
    if (g_results[i].shown || strncmp(bench, prefix, plen) != 0) continue;
    /* columns: the metrics of this bench in order of first appearance */
    for (j = i; j < g_nresults; j++) {
      if (strcmp(g_results[j].bench, bench) != 0) continue;
      for (k = 0; k < nm; k++)
        if (strcmp(metrics[k], g_results[j].metric) == 0) break;
      if (k == nm && nm < 8) {
        metrics[nm] = g_results[j].metric;
        units[nm++] = g_results[j].unit;
      }
    }
    printf("\n%s\n  %-22s", bench, "impl");
    for (k = 0; k < nm; k++) {
      char h[64];
      snprintf(h, sizeof h, "%s [%s]", metrics[k], units[k]);
      printf(" %26s", h);
    }
    printf("\n");
    /* rows: impls in order of first appearance */
    for (j = i; j < g_nresults; j++) {
      const char *impl = g_results[j].impl;
      int seen = 0, m;
      if (strcmp(g_results[j].bench, bench) != 0) continue;
      for (m = i; m < j; m++)
        if (strcmp(g_results[m].bench, bench) == 0 && strcmp(g_results[m].impl, impl) == 0)
          seen = 1;
      if (seen) continue;
      printf("  %-22s", impl);
      for (k = 0; k < nm; k++) {
        char cell[64], v[32];
        int found = 0;
        for (m = j; m < g_nresults; m++) {
          result *r = &g_results[m];
          if (strcmp(r->bench, bench) || strcmp(r->impl, impl) || strcmp(r->metric, metrics[k]))
            continue;
          fmt_value(v, sizeof v, r->value);
          if (isfinite(r->lo) && isfinite(r->hi) && r->value != 0) {
            double dev = fmax(r->hi - r->value, r->value - r->lo) / fabs(r->value) * 100.0;
            snprintf(cell, sizeof cell, "%s (±%.1f%%, n=%llu)", v, dev, (unsigned long long)r->n);
          } else {
            snprintf(cell, sizeof cell, "%s (n=%llu)", v, (unsigned long long)r->n);
          }
          r->shown = 1;
          found = 1;
          break;
        }
        printf(" %26s", found ? cell : "-");
      }
      printf("\n");
    }
  }
  fflush(stdout);
}

static const result *find_result(const char *bench, const char *impl, const char *metric) {
  int i;
  for (i = g_nresults - 1; i >= 0; i--)
    if (!strcmp(g_results[i].bench, bench) && !strcmp(g_results[i].impl, impl) &&
        !strcmp(g_results[i].metric, metric))
      return &g_results[i];
  return NULL;
}

void rk_bench_ratio(const char *bench, const char *metric, const char *num, const char *den,
                    double target, int higher_better) {
  const result *a = find_result(bench, num, metric), *b = find_result(bench, den, metric);
  FILE *f = g_json ? stderr : stdout;
  double r;
  if (a == NULL || b == NULL || b->value == 0) return;
  r = a->value / b->value;
  fprintf(f, "  ratio %-12s %-11s %s / %s = %.2fx", bench, metric, num, den, r);
  if (target > 0) {
    int ok = higher_better ? r >= target : r <= target;
    fprintf(f, "   (target %s %.2fx: %s)", higher_better ? ">=" : "<=", target,
            ok ? "ok" : "MISSED");
  }
  fputc('\n', f);
  fflush(f);
}

void rk_bench_note(const char *fmt, ...) {
  va_list ap;
  FILE *f = g_json ? stderr : stdout;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fflush(f);
}

int rk_bench_want(const rk_bench_opts *o, const char *bench, const char *impl, const char *metric) {
  char name[160], pat[160];
  const char *f;
  if (o == NULL || o->filter == NULL || o->filter[0] == 0) return 1;
  snprintf(name, sizeof name, "%s/%s/%s", bench, impl, metric ? metric : "");
  for (f = o->filter; *f;) { /* comma-separated alternatives */
    size_t len = strcspn(f, ",");
    if (len > 0 && len < sizeof pat) {
      memcpy(pat, f, len);
      pat[len] = 0;
      if (strstr(name, pat) != NULL) return 1;
    }
    f += len;
    if (*f == ',') f++;
  }
  return 0;
}

/* ------------------------------------ machine ------------------------------------------------- */

void rk_bench_set_machine(const char *m) {
  snprintf(g_machine_override, sizeof g_machine_override, "%s", m ? m : "");
}

const char *rk_bench_machine(void) {
  static char machine[192];
  char model[128] = "unknown CPU", line[512];
  FILE *f;
  long n;
  if (machine[0]) return machine;
  f = fopen("/proc/cpuinfo", "r");
  if (f) {
    while (fgets(line, sizeof line, f)) {
      /* x86: "model name"; arm64: "CPU part"/"Model" are less useful, "model name" absent */
      if (strncmp(line, "model name", 10) == 0 || strncmp(line, "Model", 5) == 0) {
        char *p = strchr(line, ':');
        size_t len;
        if (!p) continue;
        p++;
        while (isspace((unsigned char)*p)) p++;
        len = strlen(p);
        while (len && isspace((unsigned char)p[len - 1])) p[--len] = 0;
        if (len) {
          snprintf(model, sizeof model, "%s", p);
          break;
        }
      }
    }
    fclose(f);
  }
  n = sysconf(_SC_NPROCESSORS_ONLN);
  snprintf(machine, sizeof machine, "%s (%ld core%s)", model, n, n == 1 ? "" : "s");
  return machine;
}

double rk_bench_loadavg(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
  }
  return l;
}

/* CPU time of everyone (from /proc/stat) and of this process (getrusage), in seconds. */
static int cpu_times(double *all_busy, double *self) {
  unsigned long long v[8] = {0};
  struct rusage ru;
  long hz = sysconf(_SC_CLK_TCK);
  FILE *f = fopen("/proc/stat", "r");
  int ok;
  if (!f) return -1;
  ok = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
              &v[5], &v[6], &v[7]) == 8;
  fclose(f);
  if (!ok || hz <= 0 || getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  /* user nice system [idle iowait] irq softirq steal */
  *all_busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
  *self = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
          ru.ru_stime.tv_usec * 1e-6;
  return 0;
}

void rk_bench_others_begin(rk_bench_others *o) {
  o->ok = cpu_times(&o->busy0, &o->self0) == 0;
  o->t0 = rk_bench_now_ns();
}

double rk_bench_others_end(const rk_bench_others *o) {
  double busy, self, wall = (double)(rk_bench_now_ns() - o->t0) * 1e-9, pct;
  if (!o->ok || cpu_times(&busy, &self) != 0 || wall <= 0) return -1;
  pct = ((busy - o->busy0) - (self - o->self0)) / (wall * rk_bench_ncpus()) * 100.0;
  return pct < 0 ? 0 : pct;
}

/* ------------------------------------ time ---------------------------------------------------- */

uint64_t rk_bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double g_ticks_per_ns;

double rk_bench_ticks_per_ns(void) {
  uint64_t t0, t1, c0, c1;
  if (g_ticks_per_ns > 0) return g_ticks_per_ns;
  /* 30 ms against CLOCK_MONOTONIC: the TSC is invariant on every x86 we target (constant_tsc). */
  t0 = rk_bench_now_ns();
  c0 = rk_bench_ticks();
  do t1 = rk_bench_now_ns();
  while (t1 - t0 < 30000000ull);
  c1 = rk_bench_ticks();
  g_ticks_per_ns = (double)(c1 - c0) / (double)(t1 - t0);
  if (!(g_ticks_per_ns > 0)) g_ticks_per_ns = 1.0;
  return g_ticks_per_ns;
}

double rk_bench_ticks_granularity_ns(void) {
  uint64_t best = UINT64_MAX;
  int i;
  for (i = 0; i < 4096; i++) {
    uint64_t a = rk_bench_ticks(), b;
    do b = rk_bench_ticks();
    while (b == a);
    if (b - a < best) best = b - a;
  }
  return (double)best / rk_bench_ticks_per_ns();
}

double rk_bench_ticks_overhead_ns(void) {
  static double overhead = -1;
  enum { N = 4096 };
  static uint64_t d[N];
  int i;
  if (overhead >= 0) return overhead;
  for (i = 0; i < N; i++) {
    uint64_t a = rk_bench_ticks();
    uint64_t b = rk_bench_ticks();
    d[i] = b - a;
  }
  overhead = (double)rk_bench_quantile_u64(d, N, 0.5) / rk_bench_ticks_per_ns();
  return overhead;
}

/* ------------------------------------ statistics ---------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

uint64_t rk_bench_quantile_u64(uint64_t *v, size_t n, double q) {
  size_t idx;
  if (n == 0) return 0;
  qsort(v, n, sizeof *v, cmp_u64);
  idx = (size_t)ceil(q * (double)n);
  idx = idx == 0 ? 0 : idx - 1; /* nearest rank */
  if (idx >= n) idx = n - 1;
  return v[idx];
}

double rk_bench_median(double *v, size_t n, double *min, double *max) {
  if (n == 0) return NAN;
  qsort(v, n, sizeof *v, cmp_double);
  if (min) *min = v[0];
  if (max) *max = v[n - 1];
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ------------------------------------ threads ------------------------------------------------- */

static int g_cpus[1024];
static int g_ncpus = -1;

static void init_cpus(void) {
  cpu_set_t set;
  int i;
  g_ncpus = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (i = 0; i < CPU_SETSIZE && g_ncpus < 1024; i++)
      if (CPU_ISSET(i, &set)) g_cpus[g_ncpus++] = i;
  }
  if (g_ncpus == 0) { /* unknown: pretend CPU 0 only (pinning will just fail) */
    g_cpus[0] = 0;
    g_ncpus = 1;
  }
}

int rk_bench_ncpus(void) {
  if (g_ncpus < 0) init_cpus();
  return g_ncpus;
}

int rk_bench_cpu(int i) {
  int n = rk_bench_ncpus();
  return g_cpus[((i % n) + n) % n];
}

int rk_bench_pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int rk_bench_spawn(pthread_t *t, int cpu, void *(*fn)(void *), void *arg, int *pinned) {
  pthread_attr_t attr;
  int rc;
  if (pinned) *pinned = 0;
  if (cpu >= 0 && pthread_attr_init(&attr) == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    rc = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
    if (rc == 0) rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc == 0) {
      if (pinned) *pinned = 1;
      return 0;
    }
  }
  return pthread_create(t, NULL, fn, arg);
}

typedef struct line_pp {
  volatile uint64_t word __attribute__((aligned(128)));
  uint8_t pad[120];
  volatile uint32_t ready;
} line_pp;

static void *line_echo(void *arg) {
  line_pp *l = arg;
  uint64_t last = 0, v;
  __atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE);
  for (;;) {
    while ((v = __atomic_load_n(&l->word, __ATOMIC_ACQUIRE)) == last || (v & 1) == 0)
      rk_bench_relax();
    if (v == UINT64_MAX) return NULL; /* odd too: the stop word */
    __atomic_store_n(&l->word, v + 1, __ATOMIC_RELEASE); /* odd -> even: the reply */
    last = v + 1;
  }
}

double rk_bench_line_rtt_ns(double seconds) {
  enum { MAXS = 1 << 16 };
  static uint64_t d[MAXS];
  line_pp *l;
  pthread_t t;
  uint64_t v = 0, end;
  size_t n = 0;
  int pinned;
  double r;
  if (rk_bench_ncpus() < 2) return -1;
  l = aligned_alloc(128, sizeof *l);
  if (l == NULL) return -1;
  memset(l, 0, sizeof *l);
  if (rk_bench_spawn(&t, rk_bench_cpu(1), line_echo, l, &pinned) != 0) {
    free(l);
    return -1;
  }
  rk_bench_pin(rk_bench_cpu(0));
  while (!__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE)) rk_bench_relax();
  end = rk_bench_now_ns() + (uint64_t)(seconds * 1e9);
  while (n < MAXS && ((n & 255) != 0 || rk_bench_now_ns() < end)) {
    uint64_t t0 = rk_bench_ticks(), t1;
    __atomic_store_n(&l->word, v + 1, __ATOMIC_RELEASE); /* odd: the request */
    while (__atomic_load_n(&l->word, __ATOMIC_ACQUIRE) != v + 2) rk_bench_relax();
    t1 = rk_bench_ticks();
    v += 2;
    d[n++] = t1 - t0;
  }
  __atomic_store_n(&l->word, UINT64_MAX, __ATOMIC_RELEASE);
  pthread_join(t, NULL);
  free(l);
  { /* unpin the calling thread again */
    cpu_set_t set;
    int i;
    CPU_ZERO(&set);
    for (i = 0; i < rk_bench_ncpus(); i++) CPU_SET(rk_bench_cpu(i), &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
  r = (double)rk_bench_quantile_u64(d, n, 0.5) / rk_bench_ticks_per_ns();
  return r;
}

void rk_bench_barrier_init(rk_bench_barrier *b, uint32_t parties) {
  b->arrived = 0;
  b->parties = parties;
}

void rk_bench_barrier_wait(rk_bench_barrier *b) {
  uint32_t n = __atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL);
  /* oversubscribed runs (more threads than CPUs) must yield or the last arrival may never run */
  unsigned spins = 0;
  while (n < b->parties) {
    if (++spins > 256) {
      sched_yield();
      spins = 0;
    } else {
      rk_bench_relax();
    }
    n = __atomic_load_n(&b->arrived, __ATOMIC_ACQUIRE);
  }
}
