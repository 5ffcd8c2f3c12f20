/* distributed_pipeline.c — the pipeline of pipeline.c (parse -> enrich -> aggregate) split over
 * two MPI ranks: parse and enrich on rank 0, aggregate on rank 1, the route enrich -> aggregate
 * carried by the MPI bridge (librk_mpi, docs/mpi.md).
 *
 *     mpirun -np 2 ./distributed_pipeline      (as root: --allow-run-as-root; 2 cores: --oversubscribe)
 *
 * What it shows:
 *  - the same kernels and handlers as the one-process pipeline (pipeline_kernels.c): only the
 *    graph changes: rank 0 names aggregate as (rank 1, "aggregate") with rk_graph_add_remote, and
 *    rank 1 names parse as (rank 0, "parse"), the origin its replies go back to;
 *  - rk_call-style answers across ranks: the host of rank 0 sends readings to parse, aggregate on
 *    rank 1 answers each one, and the answer comes back over the bridge to parse's outbox;
 *  - causality across ranks, checked on every reply: host send < parse < enrich (rank 0) <
 *    aggregate (rank 1) < reply (rank 0): the receiving runtime merges every stamp;
 *  - termination upstream first across ranks: rank 0 terminates (its remote node waits until
 *    everything it sent is in aggregate's inbox), then rank 1.
 *  - keyed routing across ranks: enrich's rk_forward_key reaches the aggregate lane (on rank 1)
 *    that the sensor's key picks, which owns that sensor's totals (checked: no sensor changes lane).
 * Exits 0 on both ranks when every check passed. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <dirent.h>
#include <inttypes.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ringkernel/mpi.h>

#include "pipeline.h"

#define MESSAGES 100000
#define BAD_EVERY 10007
#define WINDOW 256
#define TIMEOUT_NS 5000000000ll

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int32_t reading_value(uint64_t seq) { return (int32_t)((seq * 2654435761u) % 2001) - 1000; }
static uint32_t reading_sensor(uint64_t seq) { return (uint32_t)((seq * 40503u) % SENSORS); }
static int is_bad(uint64_t seq) { return seq % BAD_EVERY == BAD_EVERY - 1; }

/* MPI_Barrier spins (Open MPI): this one sleeps between polls, leaving the cores to the kernels. */
static void barrier(void) {
  MPI_Request r;
  int done = 0;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  while (MPI_Test(&r, &done, MPI_STATUS_IGNORE), !done) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static int threads_of_this_process(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

typedef struct host {
  rk_kernel *parse;
  volatile uint64_t received; /* atomics: receiver -> sender window */
  uint64_t *lat;
  uint8_t *seen;
  uint64_t good, bad_replies, errors, causality, dup;
} host;

static void *receiver(void *arg) {
  host *h = (host *)arg;
  uint64_t n = 0;
  while (n < MESSAGES) {
    summary s;
    rk_msg m;
    int rc = rk_recv(h->parse, &m, &s, sizeof s, TIMEOUT_NS);
    uint64_t t = now_ns();
    if (rc != RK_OK) {
      fprintf(stderr, "distributed_pipeline: rk_recv: %s\n", rk_strerror(rc));
      h->errors++;
      break;
    }
    n++;
    __atomic_store_n(&h->received, n, __ATOMIC_RELEASE); /* pairs with the sender's acquire */
    if (rk_msg_is_error(&m)) {
      if (m.status == RK_EINVAL)
        h->bad_replies++;
      else
        h->errors++;
      continue;
    }
    if (s.seq >= MESSAGES || h->seen[s.seq]++) {
      h->dup++;
      continue;
    }
    /* host send < parse < enrich (rank 0) < aggregate (rank 1) < reply (rank 0) */
    if (!(s.seen[0] < s.seen[1] && s.seen[1] < s.seen[2] && s.seen[2] < m.env.hlc)) h->causality++;
    h->lat[h->good++] = t - s.sent_ns;
  }
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* rank 0: the host and the first two stages */
static uint32_t run_rank0(rk_runtime *rt, rk_graph *g, uint32_t parse_node) {
  static host h;
  pthread_t t;
  uint64_t seq, t0, t1, bad_sent = 0;
  uint32_t failures = 0;
  h.parse = rk_graph_kernel(g, parse_node);
  h.lat = (uint64_t *)calloc(MESSAGES, sizeof *h.lat);
  h.seen = (uint8_t *)calloc(MESSAGES, 1);
  if (h.lat == NULL || h.seen == NULL || pthread_create(&t, NULL, receiver, &h) != 0) return 1;
  t0 = now_ns();
  for (seq = 0; seq < MESSAGES; seq++) {
    reading r;
    uint32_t sensor = reading_sensor(seq);
    int32_t v = reading_value(seq);
    memset(&r, 0, sizeof r);
    r.seq = seq;
    if (is_bad(seq)) {
      snprintf(r.text, sizeof r.text, "s%u:%d", sensor, v);
      bad_sent++;
    } else {
      snprintf(r.text, sizeof r.text, "s%u=%d", sensor, v);
    }
    while (seq - __atomic_load_n(&h.received, __ATOMIC_ACQUIRE) >= WINDOW) {
      struct timespec ts = {0, 20000};
      nanosleep(&ts, NULL); /* 2 cores: leave them to the lanes and the bridge */
    }
    r.sent_ns = now_ns();
    if (rk_send_typed(h.parse, reading, &r, 0, NULL) != RK_OK) {
      fprintf(stderr, "distributed_pipeline: send: %s\n", rk_runtime_last_error(rt));
      failures++;
      break;
    }
  }
  pthread_join(t, NULL);
  t1 = now_ns();
  if (h.errors || h.dup || h.causality || h.bad_replies != bad_sent || h.good != MESSAGES - bad_sent) failures++;
  qsort(h.lat, h.good, sizeof *h.lat, cmp_u64);
  printf("distributed_pipeline: parse -> enrich on rank 0, aggregate on rank 1 (MPI bridge)\n");
  printf("  %" PRIu64 " readings in %.3f s: %.3f M readings/s end to end\n", (uint64_t)MESSAGES,
         (double)(t1 - t0) / 1e9, (double)MESSAGES / ((double)(t1 - t0) / 1e9) / 1e6);
  if (h.good)
    printf("  latency (send -> reply received, %u in flight at most): p50 %.1f us, p99 %.1f us\n", WINDOW,
           (double)h.lat[h.good / 2] / 1e3, (double)h.lat[h.good * 99 / 100] / 1e3);
  printf("  replies: %" PRIu64 " summaries, %" PRIu64 " RK_EINVAL for %" PRIu64 " malformed readings, %" PRIu64
         " duplicates, %" PRIu64 " errors\n", h.good, h.bad_replies, bad_sent, h.dup, h.errors);
  printf("  causality across ranks: %" PRIu64 " replies whose stamps did not grow along parse < enrich < "
         "aggregate (rank 1) < reply\n", h.causality);
  free(h.lat);
  free(h.seen);
  return failures;
}

/* rank 1: aggregate's totals, checked against the prediction once rank 0 has terminated */
static uint32_t check_rank1(rk_runtime *rt, rk_graph *g, uint32_t agg_node) {
  static totals tot;
  int64_t want_total[SENSORS];
  uint64_t want_count[SENSORS], seq;
  uint32_t i, failures = 0;
  memset(want_total, 0, sizeof want_total);
  memset(want_count, 0, sizeof want_count);
  for (seq = 0; seq < MESSAGES; seq++) {
    uint32_t sensor = reading_sensor(seq);
    if (is_bad(seq)) continue;
    want_total[sensor] += (int64_t)reading_value(seq) * PIPELINE_GAIN(sensor) + PIPELINE_OFFSET(sensor);
    want_count[sensor]++;
  }
  if (rk_kernel_read_state(rk_graph_kernel(g, agg_node), &tot, sizeof tot) != (int)sizeof tot) {
    fprintf(stderr, "distributed_pipeline: %s\n", rk_runtime_last_error(rt));
    return 1;
  }
  for (i = 0; i < SENSORS; i++)
    if (tot.total[i] != want_total[i] || tot.count[i] != want_count[i]) failures++;
  if (tot.misrouted) failures++;
  printf("  totals on rank 1: %s (%u sensors, each owned by one of aggregate's 2 lanes: %llu misrouted)\n",
         failures ? "MISMATCH" : "every sensor's total and count as predicted", SENSORS,
         (unsigned long long)tot.misrouted);
  return failures;
}

int main(int argc, char **argv) {
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_runtime *rt = NULL;
  rk_graph *g = NULL;
  rk_mpi_bridge *b = NULL;
  rk_mpi_stats st;
  int provided = 0, rank = 0, size = 0, rc = RK_OK, r, nthreads = 0;
  uint32_t parse_node = 0, enrich_node = 0, agg_node = 0, failures = 0, all = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS ||
      provided != MPI_THREAD_MULTIPLE) {
    fprintf(stderr, "distributed_pipeline: MPI without MPI_THREAD_MULTIPLE\n");
    return 1;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (rank == 0) fprintf(stderr, "distributed_pipeline: run it with mpirun -np 2\n");
    MPI_Finalize();
    return 1;
  }
  ro.backend = RK_BACKEND_CPU;
  if (rk_runtime_create(&rt, &ro) != RK_OK) {
    fprintf(stderr, "distributed_pipeline: runtime: %s\n", rk_runtime_last_error(NULL));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if ((rc = rk_graph_create(rt, &g)) != RK_OK || (rc = rk_mpi_bridge_create(g, MPI_COMM_WORLD, NULL, &b)) != RK_OK)
    goto fail;
  if (rank == 0) { /* parse -> enrich -> (rank 1, aggregate) */
    lo.lanes = 2;
    if ((rc = rk_graph_add(g, &parse, &lo, 0, &parse_node)) != RK_OK ||
        (rc = rk_graph_add(g, &enrich, &lo, 0, &enrich_node)) != RK_OK ||
        (rc = rk_graph_add_remote(g, 1, "aggregate", 0, &agg_node)) != RK_OK ||
        (rc = rk_graph_connect(g, parse_node, enrich_node, NULL)) != RK_OK ||
        (rc = rk_graph_connect(g, enrich_node, agg_node, NULL)) != RK_OK)
      goto fail;
  } else { /* aggregate; parse of rank 0 is where its answers go */
    lo.lanes = 2;
    if ((rc = rk_graph_add(g, &aggregate, &lo, 0, &agg_node)) != RK_OK ||
        (rc = rk_graph_add_remote(g, 0, "parse", 0, &parse_node)) != RK_OK)
      goto fail;
  }
  if ((rc = rk_graph_launch(g)) != RK_OK || (rc = rk_graph_activate(g)) != RK_OK) goto fail;
  barrier(); /* both graphs active */
  nthreads = threads_of_this_process(); /* every lane running */
  if (rank == 0) failures += run_rank0(rt, g, parse_node);
  for (r = 0; r < size; r++) { /* upstream first: rank 0, then rank 1 */
    if (r == rank && rk_graph_terminate(g, TIMEOUT_NS) != RK_OK) {
      fprintf(stderr, "distributed_pipeline: rank %d: terminate: %s\n", rank, rk_runtime_last_error(rt));
      failures++;
    }
    barrier();
  }
  if (rank == 1) failures += check_rank1(rt, g, agg_node);
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  (void)rk_mpi_bridge_stats(b, &st);
  printf("  rank %d: %d threads while running (main, runtime service, lanes, bridge, Open MPI's 2); bridge: %" PRIu64
         " sent in %" PRIu64 " batches, %" PRIu64 " received, %" PRIu64 " credit stalls, %" PRIu64 " staged\n",
         rank, nthreads, st.sent, st.batches_sent, st.received, st.credit_stalls, st.staged);
  fflush(stdout);
  rk_graph_destroy(g);
  rk_mpi_bridge_destroy(b);
  rk_runtime_destroy(rt);
  MPI_Allreduce(&failures, &all, 1, MPI_UNSIGNED, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%s\n", all ? "distributed_pipeline: FAILED" : "distributed_pipeline: all checks passed");
  MPI_Finalize();
  return all ? 1 : 0;
fail:
  fprintf(stderr, "distributed_pipeline: rank %d: %s: %s\n", rank, rk_err_name(rc), rk_runtime_last_error(rt));
  rk_graph_destroy(g);
  rk_mpi_bridge_destroy(b);
  rk_runtime_destroy(rt);
  MPI_Abort(MPI_COMM_WORLD, 1);
  return 1;
}
