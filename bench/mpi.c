/* mpi.c — rk-bench mpi: K2K between kernels on two MPI ranks (the MPI bridge, librk_mpi) against
 * plain MPI on the same bytes, in the same run. Run it under mpirun -np 2; rank 0 prints.
 *
 *   mpi.hop     K2K ping-pong between a kernel of rank 0 and one of rank 1, timed in rank 0's
 *               handler (hop = round trip / 2): impl ringkernel.mpi (the bridge as shipped: it
 *               backs off when idle), ringkernel.mpi.spin (rk_mpi_options.spin = 1); mpi.raw:
 *               MPI_Send/MPI_Recv ping-pong of the same bytes (envelope + payload) between the
 *               two main threads. Metrics hop_p50_ns, hop_p99_ns.
 *               ringkernel.mpi also reports per round trip (both ranks together) the lane parks
 *               (futex waits), the futex wake-ups, the bridge's sleeps and the processes' context
 *               switches (getrusage: voluntary and involuntary, every thread): parks_per_rt,
 *               wakes_per_rt, bridge_sleeps_per_rt, csw_per_rt, and lane_delivered_per_rt (envelopes
 *               the idle lanes' own passes delivered: lane-driven progress, docs/mpi.md).
 *               ringkernel.mpi.nolane: the same with rk_mpi_options.lane_drive = -1 (the bridge
 *               threads alone, as before lane-driven progress), for A/B in one run.
 *   mpi.stream  msgs_per_s: ringkernel.mpi, a kernel of rank 0 sending to one of rank 1 (fed by
 *               rank 0's host), at most 64 envelopes per MPI message; mpi.raw, MPI_Isend/MPI_Irecv
 *               windows of 64 messages of the same bytes. Timed on rank 1, first to last arrival.
 *               ringkernel.mpi.nolane: with lane_drive = -1.
 *   mpi.idle    ringkernel.mpi: what an idle bridge costs, after a conversation, for --seconds:
 *               bridge_cpu_pct (its thread's CPU time, the larger of the two ranks) and
 *               bridge_wakeups_per_s (its timed sleeps, each a wake-up that polls MPI).
 * Payloads are 256 bytes (slots of 384: a 64-byte envelope plus the payload, rounded to 64).
 * Targets (the issue's, for the 2-core machine): hop p50 <= 3x mpi.raw; stream >= 0.5x mpi.raw. */
#include <dirent.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"

#ifndef RK_BENCH_MPI
int rk_bench_mpi(const rk_bench_opts *o) {
  (void)o;
  rk_bench_note("mpi: this rk-bench was built without MPI (CMake found none): skipped");
  return 0;
}
#else
#include <mpi.h>

#include <ringkernel.h>
#include <ringkernel/mpi.h>

#include "queue/internal.h" /* rk__wait_counts */

#define PAYLOAD 256u
#define SLOT 384u
#define WIRE (64u + PAYLOAD) /* the bytes mpi.raw moves per message: envelope + payload */
#define WINDOW 64u
#define T_START 501u
#define T_PING 502u
#define T_ITEM 503u

static int g_rank;

static void nap_us(long us) {
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
}

/* MPI_Barrier spins in Open MPI: a rank waiting in it would take a core from the other's threads. */
static void barrier(void) {
  MPI_Request r;
  int done = 0;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  while (MPI_Test(&r, &done, MPI_STATUS_IGNORE), !done) nap_us(200);
}

static int threads_now(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* The CPUs this thread may run on (its affinity: mpirun binds each rank to one core by default). */
static int cpus_now(void) {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
}

/* CPU time (ns) of this process's bridge thread (named rk-mpi-bridge), from its schedstat; 0 when
 * it cannot be found. */
static uint64_t bridge_cpu_ns(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  uint64_t ns = 0;
  if (d == NULL) return 0;
  while ((e = readdir(d)) != NULL) {
    char path[300], comm[32] = "";
    FILE *f;
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    if ((f = fopen(path, "r")) == NULL) continue;
    if (fgets(comm, sizeof comm, f) == NULL) comm[0] = 0;
    fclose(f);
    if (strncmp(comm, "rk-mpi-bridge", 13) != 0) continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
    if ((f = fopen(path, "r")) == NULL) continue;
    if (fscanf(f, "%llu", (unsigned long long *)&ns) != 1) ns = 0;
    fclose(f);
  }
  closedir(d);
  return ns;
}

/* ---------------------------------------- raw MPI ------------------------------------------- */

static int raw_hop(uint64_t n, uint64_t *samples) {
  static char buf[WIRE];
  uint64_t i;
  for (i = 0; i < n; i++) {
    if (g_rank == 0) {
      uint64_t t0 = rk_bench_now_ns();
      MPI_Send(buf, WIRE, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
      MPI_Recv(buf, WIRE, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      samples[i] = rk_bench_now_ns() - t0;
    } else {
      MPI_Recv(buf, WIRE, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buf, WIRE, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
    }
  }
  return 0;
}

/* msgs/s measured on rank 1 (first to last arrival), returned on rank 0 */
static double raw_stream(uint64_t n) {
  static char buf[WINDOW][WIRE];
  MPI_Request req[WINDOW];
  uint64_t i, t0 = 0;
  double rate = 0;
  for (i = 0; i < n; i += WINDOW) {
    uint32_t j, k = (uint32_t)(n - i < WINDOW ? n - i : WINDOW);
    for (j = 0; j < k; j++) {
      if (g_rank == 0)
        MPI_Isend(buf[j], WIRE, MPI_BYTE, 1, 2, MPI_COMM_WORLD, &req[j]);
      else
        MPI_Irecv(buf[j], WIRE, MPI_BYTE, 0, 2, MPI_COMM_WORLD, &req[j]);
    }
    MPI_Waitall((int)k, req, MPI_STATUSES_IGNORE);
    if (g_rank == 1 && i == 0) t0 = rk_bench_now_ns();
  }
  if (g_rank == 1) {
    rate = (double)(n - WINDOW) / ((double)(rk_bench_now_ns() - t0) / 1e9);
    MPI_Send(&rate, 1, MPI_DOUBLE, 0, 3, MPI_COMM_WORLD);
  } else {
    MPI_Recv(&rate, 1, MPI_DOUBLE, 1, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  return rate;
}

/* ---------------------------------------- ringkernel ---------------------------------------- */

typedef struct hop_state {
  uint64_t *samples, cap, n, n_all, t0, deadline, warm_until; /* n_all: round trips, warm-up too */
  volatile uint32_t done; /* atomics: A's lane writes, the host reads */
} hop_state;

static hop_state g_hop;
static volatile uint64_t g_got, g_first_ns, g_last_ns; /* the stream's sink (one lane) */

static int hop_a(rk_ctx *ctx, const rk_msg *in) {
  hop_state *s = &g_hop;
  uint64_t now = rk_bench_now_ns();
  static uint8_t payload[PAYLOAD];
  if (rk_msg_type_of(in) == T_PING) {
    s->n_all++;
    if (now >= s->warm_until) s->samples[s->n++] = now - s->t0;
    if (s->n == s->cap || now >= s->deadline) {
      __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE); /* pairs with the host's acquire */
      return 0;
    }
  }
  s->t0 = rk_bench_now_ns();
  return rk_send_to(ctx, 0, T_PING, payload, PAYLOAD);
}

static int hop_b(rk_ctx *ctx, const rk_msg *in) { return rk_send_to(ctx, 0, T_PING, rk_msg_payload(in), rk_msg_len(in)); }

static int source(rk_ctx *ctx, const rk_msg *in) {
  return rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in)); /* RK_EAGAIN: run again */
}

static int sink(rk_ctx *ctx, const rk_msg *in) {
  uint64_t now = rk_bench_now_ns();
  (void)ctx;
  (void)in;
  if (g_got == 0) g_first_ns = now;
  g_last_ns = now;
  __atomic_store_n(&g_got, g_got + 1, __ATOMIC_RELEASE); /* one lane writes; the host reads */
  return 0;
}

static rk_kernel_desc kdesc(const char *name, rk_handler_fn fn) {
  rk_kernel_desc d;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = name;
  d.handler = fn;
  return d;
}

typedef struct rk_side {
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel *mine;
} rk_side;

/* Rank 0 runs kernel a0 with a route to rank 1's a1 (and, with back, a1 has one to a0). */
static int side_up(rk_side *s, const rk_kernel_desc *d0, const rk_kernel_desc *d1, int back, const rk_mpi_options *mo) {
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  uint32_t me, other;
  const rk_kernel_desc *mine = g_rank == 0 ? d0 : d1;
  memset(s, 0, sizeof *s);
  ro.backend = RK_BACKEND_CPU;
  lo.slot_size = SLOT;
  lo.send_timeout_ns = -1;
  if (rk_runtime_create(&s->rt, &ro) != RK_OK || rk_graph_create(s->rt, &s->g) != RK_OK ||
      rk_mpi_bridge_create(s->g, MPI_COMM_WORLD, mo, &s->b) != RK_OK ||
      rk_graph_add(s->g, mine, &lo, 0, &me) != RK_OK ||
      rk_graph_add_remote(s->g, (uint32_t)(1 - g_rank), (g_rank == 0 ? d1 : d0)->name, 0, &other) != RK_OK ||
      ((g_rank == 0 || back) && rk_graph_connect(s->g, me, other, NULL) != RK_OK) || rk_graph_launch(s->g) != RK_OK ||
      rk_graph_activate(s->g) != RK_OK) {
    rk_bench_fail("mpi: rank %d: setup: %s", g_rank, s->rt ? rk_runtime_last_error(s->rt) : "no runtime");
    return -1;
  }
  s->mine = rk_graph_kernel(s->g, me);
  barrier();
  return 0;
}

static void side_down(rk_side *s) {
  int r;
  for (r = 0; r < 2; r++) {
    if (r == g_rank && s->g) (void)rk_graph_terminate(s->g, 5000000000ll);
    barrier();
  }
  rk_graph_destroy(s->g);
  rk_mpi_bridge_destroy(s->b);
  rk_runtime_destroy(s->rt);
}

/* What one round trip cost in wake-ups (both ranks together): lane parks (futex waits) and
 * wake-ups of the whole process, and the bridge's sleeps. */
typedef struct hop_counts {
  double parks, wakes, sleeps, csw; /* csw: context switches of the processes (voluntary + not) */
  double lane_delivered;            /* envelopes the lanes' own passes delivered (lane-driven progress) */
} hop_counts;

/* The process's context switches so far, voluntary and involuntary (every thread: getrusage). */
static uint64_t csw_now(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

static int rk_hop(const rk_bench_opts *o, int spin, int lane_drive, double *p50, double *p99, uint64_t *n, int *threads,
                  hop_counts *hc) {
  rk_kernel_desc da = kdesc("hop_a", hop_a), db = kdesc("hop_b", hop_b);
  rk_mpi_options mo = RK_MPI_OPTIONS_INIT;
  rk_side s;
  uint64_t zero = 0, c0[5], c1[5], sum[5] = {0, 0, 0, 0, 0}, rts = 0;
  rk_mpi_stats ms;
  mo.spin = spin;
  mo.lane_drive = lane_drive;
  memset(&g_hop, 0, sizeof g_hop);
  g_hop.cap = (uint64_t)(o->seconds * 1e9 / 1000.0) + 1024;
  if ((g_hop.samples = (uint64_t *)calloc(g_hop.cap, sizeof *g_hop.samples)) == NULL) return -1;
  if (side_up(&s, &da, &db, 1, &mo) != 0) {
    side_down(&s);
    return -1;
  }
  *threads = threads_now();
  memset(&ms, 0, sizeof ms);
  ms.size = sizeof ms;
  rk__wait_counts(&c0[0], &c0[1]);
  c0[2] = rk_mpi_bridge_stats(s.b, &ms) == RK_OK ? ms.sleeps : 0;
  c0[4] = ms.lane_delivered;
  c0[3] = csw_now();
  if (g_rank == 0) {
    g_hop.warm_until = rk_bench_now_ns() + (uint64_t)(0.1 * o->seconds * 1e9);
    g_hop.deadline = g_hop.warm_until + (uint64_t)(o->seconds * 1e9);
    if (rk_send(s.mine, T_START, &zero, sizeof zero, RK_SEND_NO_REPLY, NULL) != RK_OK)
      rk_bench_fail("mpi.hop: start: %s", rk_runtime_last_error(s.rt));
    else
      while (!__atomic_load_n(&g_hop.done, __ATOMIC_ACQUIRE)) nap_us(5000);
    *n = g_hop.n;
    if (g_hop.n) {
      *p50 = (double)rk_bench_quantile_u64(g_hop.samples, g_hop.n, 0.50) / 2.0;
      *p99 = (double)rk_bench_quantile_u64(g_hop.samples, g_hop.n, 0.99) / 2.0;
    }
  }
  barrier(); /* both ranks count the same stretch (rank 1 waited in the barrier, asleep) */
  rk__wait_counts(&c1[0], &c1[1]);
  c1[2] = rk_mpi_bridge_stats(s.b, &ms) == RK_OK ? ms.sleeps : 0;
  c1[4] = ms.lane_delivered;
  c1[3] = csw_now();
  {
    uint64_t mine[5] = {c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2], c1[3] - c0[3], c1[4] - c0[4]};
    MPI_Reduce(mine, sum, 5, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  }
  rts = g_hop.n_all;
  if (g_rank == 0 && rts && hc) {
    hc->parks = (double)sum[0] / (double)rts;
    hc->wakes = (double)sum[1] / (double)rts;
    hc->sleeps = (double)sum[2] / (double)rts;
    hc->csw = (double)sum[3] / (double)rts;
    hc->lane_delivered = (double)sum[4] / (double)rts;
  }
  side_down(&s);
  free(g_hop.samples);
  return 0;
}

/* The idle bridge's cost: after a short conversation (so the bridge has a live window to leave),
 * nothing for `secs`: CPU time of each rank's bridge thread in percent of the time, and its sleeps
 * per second (each is a wake-up: a timeout that polls MPI). Rank 0 gets the larger of the two. */
static int rk_idle(const rk_bench_opts *o, double *cpu_pct, double *sleeps_per_s) {
  rk_kernel_desc da = kdesc("hop_a", hop_a), db = kdesc("hop_b", hop_b);
  rk_mpi_options mo = RK_MPI_OPTIONS_INIT;
  rk_mpi_stats ms;
  rk_side s;
  uint64_t zero = 0, cpu0, cpu1, t0, t1, sl0, sl1;
  double secs = o->seconds, mine[2], worst[2] = {0, 0};
  memset(&g_hop, 0, sizeof g_hop);
  g_hop.cap = 1024;
  if ((g_hop.samples = (uint64_t *)calloc(g_hop.cap, sizeof *g_hop.samples)) == NULL) return -1;
  if (side_up(&s, &da, &db, 1, &mo) != 0) {
    side_down(&s);
    free(g_hop.samples);
    return -1;
  }
  if (g_rank == 0) { /* 1000 round trips, then silence */
    g_hop.deadline = rk_bench_now_ns() + 10000000000ull;
    if (rk_send(s.mine, T_START, &zero, sizeof zero, RK_SEND_NO_REPLY, NULL) != RK_OK)
      rk_bench_fail("mpi.idle: start: %s", rk_runtime_last_error(s.rt));
    else
      while (!__atomic_load_n(&g_hop.done, __ATOMIC_ACQUIRE)) nap_us(1000);
  }
  barrier();
  nap_us(100000); /* past the live window (at most 0.5 ms) and the first, shorter timeouts */
  memset(&ms, 0, sizeof ms);
  ms.size = sizeof ms;
  cpu0 = bridge_cpu_ns();
  sl0 = rk_mpi_bridge_stats(s.b, &ms) == RK_OK ? ms.sleeps : 0;
  t0 = rk_bench_now_ns();
  while (rk_bench_now_ns() - t0 < (uint64_t)(secs * 1e9)) nap_us(10000);
  cpu1 = bridge_cpu_ns();
  sl1 = rk_mpi_bridge_stats(s.b, &ms) == RK_OK ? ms.sleeps : 0;
  t1 = rk_bench_now_ns();
  mine[0] = cpu0 && cpu1 > cpu0 ? 100.0 * (double)(cpu1 - cpu0) / (double)(t1 - t0) : NAN;
  mine[1] = (double)(sl1 - sl0) / ((double)(t1 - t0) / 1e9);
  MPI_Reduce(mine, worst, 2, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  *cpu_pct = worst[0];
  *sleeps_per_s = worst[1];
  side_down(&s);
  free(g_hop.samples);
  return 0;
}

static double rk_stream(uint64_t n, int lane_drive, int *threads) {
  rk_kernel_desc ds = kdesc("source", source), dk = kdesc("sink", sink);
  rk_mpi_options mo = RK_MPI_OPTIONS_INIT;
  rk_side s;
  double rate = 0;
  static uint8_t payload[WINDOW][PAYLOAD];
  mo.batch_bytes = 8 + WINDOW * (16 + 64 + PAYLOAD); /* at most 64 envelopes per MPI message, as mpi.raw */
  mo.lane_drive = lane_drive;
  __atomic_store_n(&g_got, 0, __ATOMIC_RELAXED);
  if (side_up(&s, &ds, &dk, 0, &mo) != 0) {
    side_down(&s);
    return 0;
  }
  *threads = threads_now();
  if (g_rank == 0) {
    rk_send_item items[WINDOW];
    uint64_t i;
    uint32_t j;
    for (j = 0; j < WINDOW; j++) {
      memset(&items[j], 0, sizeof items[j]);
      items[j].type = T_ITEM;
      items[j].payload = payload[j];
      items[j].len = PAYLOAD;
      items[j].flags = RK_SEND_NO_REPLY;
    }
    for (i = 0; i < n;) {
      uint32_t m = (uint32_t)(n - i < WINDOW ? n - i : WINDOW);
      int k = rk_send_batch(s.mine, items, m);
      if (k == RK_EAGAIN || k == RK_ETIMEDOUT) k = 0;
      if (k < 0) {
        rk_bench_fail("mpi.stream: rk_send_batch: %s", rk_runtime_last_error(s.rt));
        break;
      }
      i += (uint64_t)k;
      if ((uint32_t)k < m) nap_us(20); /* the inbox is full: the stream is ahead of the bridge */
    }
    { /* not MPI_Recv: it busy-polls on this rank's one core (mpirun binds it), where the source's
       * lane and the bridge still have the stream's tail to move; starved, they went silent for 2
       * s and the ranks declared each other lost (a hung run, seen 3 times in 6) */
      MPI_Request rq;
      int done = 0;
      MPI_Irecv(&rate, 1, MPI_DOUBLE, 1, 4, MPI_COMM_WORLD, &rq);
      while (MPI_Test(&rq, &done, MPI_STATUS_IGNORE), !done) nap_us(1000);
    }
  } else {
    uint64_t end = rk_bench_now_ns() + 120000000000ull;
    while (__atomic_load_n(&g_got, __ATOMIC_ACQUIRE) < n && rk_bench_now_ns() < end) nap_us(1000);
    rate = g_got > 1 && g_last_ns > g_first_ns ? (double)(g_got - 1) / ((double)(g_last_ns - g_first_ns) / 1e9) : 0;
    if (g_got < n) rate = 0; /* lost messages: no figure */
    MPI_Send(&rate, 1, MPI_DOUBLE, 0, 4, MPI_COMM_WORLD);
  }
  side_down(&s);
  return rate;
}

int rk_bench_mpi(const rk_bench_opts *o) {
  int inited = 0, provided = 0, size = 0, threads = 0, threads_stream = 0;
  uint64_t n_hop = o->quick ? 5000 : 50000, n_stream = o->quick ? 100000 : 1000000, *samples, n = 0;
  double p50 = NAN, p99 = NAN, raw50, raw99, raw_rate, rk_rate, load = rk_bench_loadavg(), idle_cpu = NAN,
         idle_sleeps = NAN;
  hop_counts hc = {NAN, NAN, NAN, NAN, NAN};
  (void)raw50, (void)raw99, (void)raw_rate, (void)rk_rate;
  MPI_Initialized(&inited);
  if (!inited && getenv("OMPI_COMM_WORLD_SIZE") == NULL && getenv("PMIX_RANK") == NULL && getenv("PMI_SIZE") == NULL) {
    /* not started by mpirun (rk-bench all): MPI_Init as a singleton would need root's consent */
    rk_bench_note("mpi: not started by mpirun: skipped (mpirun -np 2 rk-bench mpi)");
    return 0;
  }
  if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) return 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (g_rank == 0) rk_bench_note("mpi: run it under mpirun -np 2 (this job has %d rank(s)): skipped", size);
    MPI_Finalize();
    return 0;
  }
  if (g_rank != 0) rk_bench_set_json(1); /* rank 1 prints nothing on stdout */
  /* --filter: both ranks see the same arguments, so they skip the same measurements */
  if (rk_bench_want(o, "mpi.hop", "mpi.raw", NULL)) {
    if ((samples = (uint64_t *)calloc(n_hop, sizeof *samples)) == NULL) return 1;
    raw_hop(n_hop / 10, samples); /* warm-up */
    raw_hop(n_hop, samples);
    raw50 = (double)rk_bench_quantile_u64(samples, n_hop, 0.50) / 2.0;
    raw99 = (double)rk_bench_quantile_u64(samples, n_hop, 0.99) / 2.0;
    free(samples);
    if (g_rank == 0) {
      rk_bench_emit("mpi.hop", "mpi.raw", "hop_p50_ns", raw50, "ns", n_hop, NAN, NAN);
      rk_bench_emit("mpi.hop", "mpi.raw", "hop_p99_ns", raw99, "ns", n_hop, NAN, NAN);
    }
  }
  if (rk_bench_want(o, "mpi.stream", "mpi.raw", NULL)) {
    raw_rate = raw_stream(n_stream);
    if (g_rank == 0) rk_bench_emit("mpi.stream", "mpi.raw", "msgs_per_s", raw_rate, "msgs/s", n_stream, NAN, NAN);
  }
  if (rk_bench_want(o, "mpi.hop", "ringkernel.mpi", NULL) && rk_hop(o, 0, 0, &p50, &p99, &n, &threads, &hc) == 0 &&
      g_rank == 0 && n) {
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "hop_p50_ns", p50, "ns", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "hop_p99_ns", p99, "ns", n, NAN, NAN);
    /* per round trip, both ranks together: lane parks, futex wake-ups, bridge sleeps */
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "parks_per_rt", hc.parks, "", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "wakes_per_rt", hc.wakes, "", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "bridge_sleeps_per_rt", hc.sleeps, "", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "csw_per_rt", hc.csw, "", n, NAN, NAN);
    /* envelopes the idle lanes' own passes delivered, per round trip (2 when every one was) */
    rk_bench_emit("mpi.hop", "ringkernel.mpi", "lane_delivered_per_rt", hc.lane_delivered, "", n, NAN, NAN);
  }
  n = 0;
  /* lane-driven progress off (rk_mpi_options.lane_drive -1): the bridge threads alone, as before */
  if (rk_bench_want(o, "mpi.hop", "ringkernel.mpi.nolane", NULL) &&
      rk_hop(o, 0, -1, &p50, &p99, &n, &threads, &hc) == 0 && g_rank == 0 && n) {
    rk_bench_emit("mpi.hop", "ringkernel.mpi.nolane", "hop_p50_ns", p50, "ns", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi.nolane", "hop_p99_ns", p99, "ns", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi.nolane", "csw_per_rt", hc.csw, "", n, NAN, NAN);
  }
  n = 0;
  if (rk_bench_want(o, "mpi.hop", "ringkernel.mpi.spin", NULL) && rk_hop(o, 1, 0, &p50, &p99, &n, &threads, NULL) == 0 &&
      g_rank == 0 && n) {
    rk_bench_emit("mpi.hop", "ringkernel.mpi.spin", "hop_p50_ns", p50, "ns", n, NAN, NAN);
    rk_bench_emit("mpi.hop", "ringkernel.mpi.spin", "hop_p99_ns", p99, "ns", n, NAN, NAN);
  }
  if (rk_bench_want(o, "mpi.stream", "ringkernel.mpi", NULL)) {
    rk_rate = rk_stream(n_stream, 0, &threads_stream);
    if (g_rank == 0) rk_bench_emit("mpi.stream", "ringkernel.mpi", "msgs_per_s", rk_rate, "msgs/s", n_stream, NAN, NAN);
  }
  if (rk_bench_want(o, "mpi.stream", "ringkernel.mpi.nolane", NULL)) {
    double r = rk_stream(n_stream, -1, &threads_stream);
    if (g_rank == 0) rk_bench_emit("mpi.stream", "ringkernel.mpi.nolane", "msgs_per_s", r, "msgs/s", n_stream, NAN, NAN);
  }
  if (rk_bench_want(o, "mpi.idle", "ringkernel.mpi", NULL) && rk_idle(o, &idle_cpu, &idle_sleeps) == 0 && g_rank == 0) {
    rk_bench_emit("mpi.idle", "ringkernel.mpi", "bridge_cpu_pct", idle_cpu, "%", 1, NAN, NAN);
    rk_bench_emit("mpi.idle", "ringkernel.mpi", "bridge_wakeups_per_s", idle_sleeps, "1/s", 1, NAN, NAN);
  }
  {
    int counts[6] = {0, 0, 0, 0, 0, 0}, mine[3] = {threads, threads_stream, cpus_now()};
    MPI_Gather(mine, 3, MPI_INT, counts, 3, MPI_INT, 0, MPI_COMM_WORLD);
    if (g_rank == 0) {
      rk_bench_note("mpi: threads per rank (main, runtime service, 1 lane, bridge, Open MPI's 2): hop %d and %d, "
                    "stream %d and %d", counts[0], counts[3], counts[1], counts[4]);
      rk_bench_note("mpi: CPUs each rank may run on (its affinity): %d and %d%s", counts[2], counts[5],
                    counts[2] == 1 && counts[5] == 1
                        ? " (mpirun's default binding: a rank's lane, bridge and host thread share one core, and "
                          "their waits yield instead of spinning: docs/mpi.md)"
                        : "");
      rk_bench_note("mpi: 2 ranks on %s; load average %.2f at the start (the machine is shared: figures move with "
                    "the other work; the interference meter counts the other rank as another process)",
                    rk_bench_machine(), load);
      rk_bench_table("mpi.");
      rk_bench_ratio("mpi.hop", "hop_p50_ns", "ringkernel.mpi", "mpi.raw", 3.0, 0);
      rk_bench_ratio("mpi.stream", "msgs_per_s", "ringkernel.mpi", "mpi.raw", 0.5, 1);
    }
  }
  if (!inited) MPI_Finalize();
  return 0;
}
#endif
