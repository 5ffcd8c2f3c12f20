/* pipeline.c — a stream pipeline of ring kernels that message each other (K2K): parse -> enrich ->
 * aggregate, fed by the host, answered by the last stage.
 *
 * What it shows:
 *  - a graph (rk_graph): three kernels and two routes declared before anything is resident, then
 *    launched and activated together;
 *  - rk_forward: each stage passes the request on with the duty to answer it, so the host's
 *    request sent to `parse` is answered by `aggregate` (the reply comes back over K2K to `parse`,
 *    which publishes it where the host receives);
 *  - keyed routing end to end: every reading of one sensor reaches the same aggregate lane
 *    (rk_forward_key), which owns that sensor's running totals in the kernel's persistent state;
 *  - error replies from inside a pipeline: a malformed reading is refused by `parse` with RK_EINVAL;
 *  - HLC causality along the path, checked on every reply: the stamp each stage received grows
 *    from stage to stage, and the reply's stamp is above the last.
 * Prints throughput and end-to-end latency (p50/p99); exits 0 when every check passed, 1 otherwise.
 * The CPU backend by default; `pipeline --cuda` runs the same kernels as persistent CUDA kernels
 * (K2K inboxes in device memory; exit 77 when there is no usable GPU). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline.h"

#define LANES 2
#define MESSAGES 200000
#define BAD_EVERY 10007 /* every 10007th reading is malformed on purpose */
#define WINDOW 512      /* readings in flight at most */
#define TIMEOUT_NS 2000000000ll

/* ---- host ---- */
static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int32_t reading_value(uint64_t seq) { return (int32_t)((seq * 2654435761u) % 2001) - 1000; }
static uint32_t reading_sensor(uint64_t seq) { return (uint32_t)((seq * 40503u) % SENSORS); }
static int is_bad(uint64_t seq) { return seq % BAD_EVERY == BAD_EVERY - 1; }

typedef struct host {
  rk_kernel *parse;
  volatile uint64_t received; /* replies taken (receiver -> sender window; atomics) */
  uint64_t *lat;              /* end-to-end ns per good reading */
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
      fprintf(stderr, "pipeline: rk_recv: %s\n", rk_strerror(rc));
      h->errors++;
      break;
    }
    n++;
    __atomic_store_n(&h->received, n, __ATOMIC_RELEASE); /* pairs with the sender's acquire */
    if (rk_msg_is_error(&m)) {
      if (m.status == RK_EINVAL) h->bad_replies++;
      else h->errors++;
      continue;
    }
    if (s.seq >= MESSAGES || h->seen[s.seq]++) {
      h->dup++;
      continue;
    }
    /* causality along the path: host send < parse < enrich < aggregate < reply */
    if (!(s.seen[0] < s.seen[1] && s.seen[1] < s.seen[2] && s.seen[2] < m.env.hlc)) h->causality++;
    h->lat[h->good++] = t - s.sent_ns;
  }
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int cuda = argc > 1 && strcmp(argv[1], "--cuda") == 0;
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_runtime *rt;
  rk_graph *g;
  const rk_kernel_desc *d[3] = {&parse, &enrich, &aggregate};
  uint32_t node[3], i, failures = 0;
  static host h;
  pthread_t t;
  uint64_t seq, t0, t1, bad_sent = 0;
  int64_t want_total[SENSORS];
  uint64_t want_count[SENSORS];
  static totals tot_copy;
  const totals *tot = &tot_copy;

  ro.backend = cuda ? RK_BACKEND_CUDA : RK_BACKEND_CPU;
  if (rk_runtime_create(&rt, &ro) != RK_OK) {
    fprintf(stderr, "pipeline: runtime: %s\n", rk_runtime_last_error(NULL));
    return cuda ? 77 : 1; /* --cuda without a usable GPU: a skip */
  }
  lo.lanes = LANES;
  if (rk_graph_create(rt, &g) != RK_OK) return 1;
  for (i = 0; i < 3; i++)
    if (rk_graph_add(g, d[i], &lo, 0, &node[i]) != RK_OK) goto fail;
  if (rk_graph_connect(g, node[0], node[1], NULL) != RK_OK || rk_graph_connect(g, node[1], node[2], NULL) != RK_OK ||
      rk_graph_launch(g) != RK_OK || rk_graph_activate(g) != RK_OK)
    goto fail;

  h.parse = rk_graph_kernel(g, node[0]);
  h.lat = (uint64_t *)calloc(MESSAGES, sizeof *h.lat);
  h.seen = (uint8_t *)calloc(MESSAGES, 1);
  if (h.lat == NULL || h.seen == NULL || pthread_create(&t, NULL, receiver, &h) != 0) return 1;
  memset(want_total, 0, sizeof want_total);
  memset(want_count, 0, sizeof want_count);
  t0 = now_ns();
  for (seq = 0; seq < MESSAGES; seq++) {
    reading r;
    uint32_t sensor = reading_sensor(seq);
    int32_t v = reading_value(seq);
    memset(&r, 0, sizeof r);
    r.seq = seq;
    if (is_bad(seq)) {
      snprintf(r.text, sizeof r.text, "s%u:%d", sensor, v); /* ':' instead of '=' */
      bad_sent++;
    } else {
      snprintf(r.text, sizeof r.text, "s%u=%d", sensor, v);
      want_total[sensor] += (int64_t)v * PIPELINE_GAIN(sensor) + PIPELINE_OFFSET(sensor);
      want_count[sensor]++;
    }
    while (seq - __atomic_load_n(&h.received, __ATOMIC_ACQUIRE) >= WINDOW) {
    }
    r.sent_ns = now_ns();
    if (rk_send_typed(h.parse, reading, &r, 0, NULL) != RK_OK) {
      fprintf(stderr, "pipeline: send: %s\n", rk_runtime_last_error(rt));
      failures++;
      break;
    }
  }
  pthread_join(t, NULL);
  t1 = now_ns();
  if (rk_graph_terminate(g, TIMEOUT_NS) != RK_OK) failures++;

  /* checks */
  if (rk_kernel_read_state(rk_graph_kernel(g, node[2]), &tot_copy, sizeof tot_copy) != (int)sizeof tot_copy) {
    fprintf(stderr, "pipeline: %s\n", rk_runtime_last_error(rt));
    failures++;
  }
  for (i = 0; i < SENSORS; i++)
    if (tot->total[i] != want_total[i] || tot->count[i] != want_count[i]) failures++;
  if (tot->misrouted) failures++;
  if (h.errors || h.dup || h.causality || h.bad_replies != bad_sent || h.good != MESSAGES - bad_sent) failures++;

  qsort(h.lat, h.good, sizeof *h.lat, cmp_u64);
  printf("pipeline: parse -> enrich -> aggregate, %u lanes each, %s backend\n", LANES, cuda ? "CUDA" : "CPU");
  printf("  %" PRIu64 " readings in %.3f s: %.2f M readings/s end to end\n", (uint64_t)MESSAGES,
         (double)(t1 - t0) / 1e9, (double)MESSAGES / ((double)(t1 - t0) / 1e9) / 1e6);
  if (h.good)
    printf("  latency (send -> reply received, %u in flight at most): p50 %.1f us, p99 %.1f us\n", WINDOW,
           (double)h.lat[h.good / 2] / 1e3, (double)h.lat[h.good * 99 / 100] / 1e3);
  printf("  replies: %" PRIu64 " summaries, %" PRIu64 " RK_EINVAL for %" PRIu64 " malformed readings, %" PRIu64
         " duplicates, %" PRIu64 " errors\n", h.good, h.bad_replies, bad_sent, h.dup, h.errors);
  printf("  causality: %" PRIu64 " replies whose stamps did not grow along parse < enrich < aggregate < reply\n",
         h.causality);
  printf("  totals: %s (%u sensors, each owned by one aggregate lane)\n",
         failures ? "MISMATCH" : "every sensor's total and count as the host predicted", SENSORS);
  printf("%s\n", failures ? "pipeline: FAILED" : "pipeline: all checks passed");
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
  free(h.lat);
  free(h.seen);
  return failures ? 1 : 0;
fail:
  fprintf(stderr, "pipeline: %s\n", rk_runtime_last_error(rt));
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
  return 1;
}
