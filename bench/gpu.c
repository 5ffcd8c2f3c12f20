/* gpu.c — `rk-bench gpu`: the CUDA backend against a kernel launch per message.
 *
 *   rtt.echo         rtt_p50_ns, rtt_p99_ns   host -> GPU -> host round trip, measured end to end
 *                    on the host (send until the reply is in host memory, never a host store alone):
 *     ringkernel.cuda  rk_call on the built-in echo ring kernel (persistent, mapped-memory rings)
 *     cuda.launch      cudaMemcpyAsync in + cudaLaunchKernel + cudaMemcpyAsync out + synchronize
 *     cuda.graph       the same three operations captured in a CUDA Graph, one graph launch each
 *     cuda.launch.zerocopy  cudaLaunchKernel + synchronize, the kernel reading the request from and
 *                      writing the reply to pinned mapped host memory: no copies (the launch
 *                      baseline closest to the ring's mapped rings)
 *   rtt.echo.sparse  rtt_p50_ns, rtt_p99_ns   ringkernel.cuda, one call per millisecond: the lane
 *                    is in its deep idle back-off when each request arrives (relaxed polls, 2 us
 *                    naps, a fence to wake), and the host's wait starts fresh each time
 *   throughput.echo  msgs_per_s   pipelined echo (rk_send_batch / rk_recv_batch, up to
 *                    GPU_WINDOW messages in flight per lane): impl ringkernel.cuda.1lane and
 *                    ringkernel.cuda.8lane; median of --trials timed trials, each of a fixed
 *                    message count sized to --seconds in all.
 *   k2k.hop          hop_p50_ns, hop_p99_ns   ringkernel.cuda: two kernels ping-pong over K2K
 *                    (bench/kernels/k2k_hop.c), timed inside the first with %globaltimer, the host
 *                    idle; hop = round trip / 2 (issue target on an H100: p50 <= 1 us)
 *   k2k.pipeline     msgs_per_s   ringkernel.cuda: bench/k2k.c's three-stage pipeline, its
 *                    kernels in the dialect (bench/kernels/k2k_hop.c), target >= 5 M msgs/s
 *
 * Fairness. Every impl sends the same GPU_PAYLOAD-byte requests, distinct for every message
 * (rk_bench_pattern), written before the clock starts; every reply is checked after it stops
 * (length, bytes; for the ring also no error flag or status). The calling thread is pinned to one
 * CPU for all impls (the note names it; the runtime's own threads keep every CPU). The round
 * trips are taken in RTT_ROUNDS interleaved rounds, the order rotated each round (baselines then
 * ring, ring then baselines, ...), the percentiles over all rounds' samples; the per-round p50s are
 * noted, so a GPU still at idle clocks in the first round shows. Baselines run only while no ring
 * kernel is resident (a polling ring kernel would load the bus they use): the ring kernel is
 * launched and destroyed around each of its rounds.
 * Throughput replies are checked one by one: length, no error flag, status 0, the payload's bytes
 * (sequence number + pattern), every sequence number exactly once, and per lane in send order
 * (the reply envelope names its lane).
 *
 * Verdicts: lines "verdict: target=h100.* ... result=ok|MISSED" (stdout, or stderr with --json)
 * against the targets stated for an H100: ringkernel.cuda p50 <= 5 us; the fastest launch
 * baseline's p50 (cuda.launch, cuda.graph or cuda.launch.zerocopy) >= 2x ringkernel.cuda p50;
 * ringkernel.cuda.8lane >= 5 M msgs/s. On another GPU they are printed all the same, labelled with
 * the GPU measured. A missed target does not change the exit status. The ring kernels' geometry
 * (lanes, threads per lane, slot size) is printed with the figures: the defaults, as an
 * application gets them.
 *
 * Every line's machine names the GPU. Without a usable GPU (RK_ENODEV) it says so, emits
 * gpu/none/device_available = 0 and succeeds, unless RK_REQUIRE_GPU=1: then that, and any other
 * failure to create the CUDA runtime, fails rk-bench with the reason. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "k2k_hop.h"
#include "ringkernel.h"

#define GPU_PAYLOAD 32u          /* request and reply payload bytes, every impl */
#define GPU_TYPE 7u              /* message type of the echo requests (echo is untyped) */
#define GPU_WINDOW 512u          /* throughput: messages in flight per lane (rings hold 1024) */
#define GPU_BATCH 64u            /* throughput: messages per rk_send_batch / rk_recv_batch */
#define GPU_TIMEOUT_NS 1000000000ll
#define RTT_ROUNDS 3
#define TARGET_P50_NS 5000.0     /* H100 targets */
#define TARGET_VS_LAUNCH 2.0
#define TARGET_8LANE 5e6
#define TARGET_K2K_HOP_NS 1000.0
#define TARGET_K2K_PIPE 5e6

static int required(void) {
  const char *r = getenv("RK_REQUIRE_GPU");
  return r && strcmp(r, "1") == 0;
}

/* ---------------------------------------- verdicts ------------------------------------------- */

static char g_gpu[160];
static double g_tput_8lane; /* for its verdict, printed with the others */

/* One machine-readable verdict line: "verdict: target=... result=ok|MISSED". */
static void verdict(const char *target, const char *bench, const char *impl, const char *metric, double value,
                    const char *op, double bound) {
  FILE *f = rk_bench_json() ? stderr : stdout; /* like rk_bench_ratio's lines */
  int ok = op[0] == '<' ? value <= bound : value >= bound;
  fprintf(f, "verdict: target=%s bench=%s impl=%s metric=%s value=%.3f op=%s bound=%.3f result=%s gpu=\"%s\"\n", target,
          bench, impl, metric, value, op, bound, ok ? "ok" : "MISSED", g_gpu);
  fflush(f);
}

/* ---------------------------------------- samples -------------------------------------------- */

typedef struct series {
  const char *bench;
  const char *impl;
  uint64_t *v;
  size_t n, cap;
  double round_p50[RTT_ROUNDS];
  int rounds;
} series;

/* Record a round's samples (already at v + n, count got): its p50 for the note. */
static void series_round(series *s, size_t got) {
  uint64_t *tmp;
  double p50 = NAN;
  if (got > 0 && (tmp = (uint64_t *)malloc(got * sizeof *tmp)) != NULL) {
    memcpy(tmp, s->v + s->n, got * sizeof *tmp);
    p50 = (double)rk_bench_quantile_u64(tmp, got, 0.50);
    free(tmp);
  }
  s->round_p50[s->rounds++] = p50;
  s->n += got;
}

static void series_emit(series *s) {
  char rounds[160] = "";
  size_t len = 0;
  int r;
  if (s->n == 0) return;
  for (r = 0; r < s->rounds && len < sizeof rounds; r++)
    len += (size_t)snprintf(rounds + len, sizeof rounds - len, "%s%.0f", r ? " " : "", s->round_p50[r]);
  if (s->rounds > 1) rk_bench_note("   %s %-20s p50 per round (ns): %s", s->bench, s->impl, rounds);
  rk_bench_emit(s->bench, s->impl, "rtt_p50_ns", (double)rk_bench_quantile_u64(s->v, s->n, 0.50), "ns", s->n, NAN,
                NAN);
  rk_bench_emit(s->bench, s->impl, "rtt_p99_ns", (double)rk_bench_quantile_u64(s->v, s->n, 0.99), "ns", s->n, NAN,
                NAN);
}

/* ---------------------------------------- ring kernels --------------------------------------- */

/* A number after "key": in rk_runtime_stats_json's text for kernel k (its first occurrence after
 * the kernel's id), or -1. */
static long json_field(const char *json, uint32_t id, const char *key) {
  char pat[48];
  const char *p;
  snprintf(pat, sizeof pat, "{\"id\":%u,", id);
  if ((p = strstr(json, pat)) == NULL) return -1;
  snprintf(pat, sizeof pat, "\"%s\":", key);
  if ((p = strstr(p, pat)) == NULL) return -1;
  return strtol(p + strlen(pat), NULL, 10);
}

/* Say the geometry a kernel runs with, from the runtime's own report. */
static void note_geometry(rk_runtime *rt, rk_kernel *k, const char *what) {
  static char json[16384];
  uint32_t id = rk_kernel_id(k);
  if (rk_runtime_stats_json(rt, json, sizeof json) < 0) return;
  rk_bench_note("   %s: echo kernel geometry: %ld lane(s) x %ld threads per lane, %ld-byte slots, inbox %ld, outbox %ld",
                what, json_field(json, id, "lanes"), json_field(json, id, "threads_per_lane"),
                json_field(json, id, "slot_size"), json_field(json, id, "inbox_capacity"),
                json_field(json, id, "outbox_capacity"));
}

static rk_kernel *ring_launch(rk_runtime *rt, uint32_t lanes) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  int rc;
  lo.lanes = lanes;
  if ((rc = rk_kernel_launch(rt, &rk_builtin_echo, &lo, &k)) != 0 || (rc = rk_kernel_activate(k)) != 0) {
    rk_bench_fail("gpu: %u-lane echo kernel: %s (%s)", lanes, rk_err_name(rc), rk_runtime_last_error(rt));
    rk_kernel_destroy(k);
    return NULL;
  }
  return k;
}

/* One round of ringkernel.cuda round trips into s. Returns 0 or -1. */
static int rtt_ring_round(rk_kernel *k, double seconds, double warm_s, series *s, uint64_t *seq) {
  uint8_t req[GPU_PAYLOAD], buf[GPU_PAYLOAD];
  rk_msg reply;
  uint64_t warm = rk_bench_now_ns() + (uint64_t)(warm_s * 1e9), end = warm + (uint64_t)(seconds * 1e9);
  size_t got = 0, room = s->cap - s->n;
  if (room == 0) {
    series_round(s, 0);
    return 0;
  }
  for (;;) {
    uint64_t t0, t1;
    int rc;
    rk_bench_pattern(req, GPU_PAYLOAD, (*seq)++);
    t0 = rk_bench_now_ns();
    rc = rk_call(k, GPU_TYPE, req, sizeof req, &reply, buf, sizeof buf, GPU_TIMEOUT_NS);
    t1 = rk_bench_now_ns();
    if (rc != 0 || reply.len != sizeof req || reply.status != 0 || rk_msg_is_error(&reply) ||
        memcmp(buf, req, sizeof req) != 0) {
      rk_bench_fail("rtt.echo ringkernel.cuda: round trip %llu: %s", (unsigned long long)(*seq - 1),
                    rc ? rk_err_name(rc) : "wrong reply");
      series_round(s, got);
      return -1;
    }
    if (t1 < warm) continue;
    s->v[s->n + got++] = t1 - t0;
    if (got == room || t1 >= end) break;
  }
  series_round(s, got);
  return 0;
}

/* ---------------------------------------- throughput ----------------------------------------- */

typedef struct tput_run {
  rk_kernel *k;
  uint32_t lanes;
  uint64_t target, sent, received, errors;
  uint64_t lane_next[RK_MAX_LANES]; /* the lowest sequence number the lane may still reply with */
  uint8_t *seen;                    /* one byte per sequence number */
  char first_error[160];
} tput_run;

static void tput_error(tput_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tput_error(tput_run *r, const char *fmt, ...) {
  va_list ap;
  if (r->errors++ > 0) return; /* the first one is reported */
  va_start(ap, fmt);
  vsnprintf(r->first_error, sizeof r->first_error, fmt, ap);
  va_end(ap);
}

/* Payload of message seq: the number, then the pattern. */
static void tput_fill(uint8_t *p, uint64_t seq) {
  rk_bench_pattern(p, GPU_PAYLOAD, seq);
  memcpy(p, &seq, sizeof seq);
}

static int tput_send(tput_run *r, uint32_t n) {
  static uint8_t pay[GPU_BATCH][GPU_PAYLOAD];
  static rk_send_item items[GPU_BATCH];
  uint32_t j;
  int got;
  for (j = 0; j < n; j++) {
    tput_fill(pay[j], r->sent + j);
    memset(&items[j], 0, sizeof items[j]);
    items[j].type = GPU_TYPE;
    items[j].len = GPU_PAYLOAD;
    items[j].payload = pay[j];
  }
  got = rk_send_batch(r->k, items, n);
  if (got < 0) {
    tput_error(r, "rk_send_batch failed after %llu messages: %s", (unsigned long long)r->sent, rk_err_name(got));
    return got;
  }
  r->sent += (uint64_t)got;
  return got;
}

static int tput_recv(tput_run *r, int64_t timeout_ns) {
  static rk_msg msgs[GPU_BATCH];
  static uint8_t bufs[GPU_BATCH][GPU_PAYLOAD];
  uint8_t want[GPU_PAYLOAD];
  int got = rk_recv_batch(r->k, msgs, bufs, GPU_PAYLOAD, GPU_BATCH, timeout_ns), j;
  if (got == RK_EAGAIN || got == RK_ETIMEDOUT) return 0;
  if (got < 0) {
    tput_error(r, "rk_recv_batch failed after %llu replies: %s", (unsigned long long)r->received, rk_err_name(got));
    return got;
  }
  for (j = 0; j < got; j++) {
    const rk_msg *m = &msgs[j];
    uint64_t seq = 0;
    uint32_t lane = m->env.lane;
    if (m->len != GPU_PAYLOAD || rk_msg_is_error(m) || m->status != 0) {
      tput_error(r, "reply %llu: length %u, error flag %d, status %s", (unsigned long long)(r->received + (uint64_t)j),
                 m->len, rk_msg_is_error(m), m->status ? rk_err_name(m->status) : "0");
      continue;
    }
    memcpy(&seq, bufs[j], sizeof seq);
    tput_fill(want, seq);
    if (seq >= r->sent || memcmp(bufs[j], want, GPU_PAYLOAD) != 0) {
      tput_error(r, "reply %llu: the payload of message %llu, never sent or corrupt",
                 (unsigned long long)(r->received + (uint64_t)j), (unsigned long long)seq);
    } else if (r->seen[seq]++) {
      tput_error(r, "message %llu replied to twice", (unsigned long long)seq);
    } else if (lane >= r->lanes || seq < r->lane_next[lane]) {
      tput_error(r, "message %llu out of order on lane %u (%u lanes)", (unsigned long long)seq, lane, r->lanes);
    } else {
      r->lane_next[lane] = seq + 1;
    }
  }
  r->received += (uint64_t)got;
  return got;
}

/* One trial of n messages: up to GPU_WINDOW x lanes in flight, one thread alternating a send batch
 * and a receive batch. Returns msgs/s, or 0 on failure (reported). */
static double tput_trial(rk_kernel *k, uint32_t lanes, uint64_t n, const char *impl) {
  tput_run r;
  uint64_t window = (uint64_t)GPU_WINDOW * lanes, t0, t1, last_progress;
  memset(&r, 0, sizeof r);
  r.k = k;
  r.lanes = lanes;
  r.target = n;
  if ((r.seen = (uint8_t *)calloc(n, 1)) == NULL) {
    rk_bench_fail("throughput.echo %s: out of memory", impl);
    return 0;
  }
  t0 = last_progress = rk_bench_now_ns();
  while (r.received < n && r.errors == 0) {
    uint64_t inflight = r.sent - r.received, left = n - r.sent, room = window - inflight;
    uint32_t m = (uint32_t)(room < GPU_BATCH ? room : GPU_BATCH);
    int full;
    if (m > left) m = (uint32_t)left;
    if ((m >= GPU_BATCH / 2 || (m > 0 && left < GPU_BATCH)) && tput_send(&r, m) < 0) break;
    /* poll while there is room to send; wait when the window is full or everything is sent */
    full = r.sent - r.received >= window - GPU_BATCH / 2 || r.sent == n;
    if (tput_recv(&r, full ? GPU_TIMEOUT_NS : 0) > 0) {
      last_progress = rk_bench_now_ns();
    } else if (full && rk_bench_now_ns() - last_progress > 2 * (uint64_t)GPU_TIMEOUT_NS) {
      tput_error(&r, "no reply for 2 s: %llu of %llu replies missing", (unsigned long long)(r.sent - r.received),
                 (unsigned long long)r.sent);
      break;
    }
  }
  t1 = rk_bench_now_ns();
  free(r.seen);
  if (r.errors || r.received != n) {
    rk_bench_fail("throughput.echo %s: %llu of %llu replies, %llu wrong; first: %s", impl,
                  (unsigned long long)r.received, (unsigned long long)n, (unsigned long long)r.errors,
                  r.first_error[0] ? r.first_error : "-");
    return 0;
  }
  return (double)n * 1e9 / (double)(t1 - t0);
}

static void tput_measure(const rk_bench_opts *o, rk_runtime *rt, uint32_t lanes, const char *impl) {
  double v[100], rate, lo, hi;
  uint64_t n;
  int t;
  rk_kernel *k;
  if (!rk_bench_want(o, "throughput.echo", impl, "msgs_per_s")) return;
  if ((k = ring_launch(rt, lanes)) == NULL) return;
  rate = tput_trial(k, lanes, 1u << 16, impl); /* warm-up and sizing */
  if (rate > 0) {
    n = (uint64_t)(rate * o->seconds / o->trials);
    if (n < 16384) n = 16384;
    for (t = 0; t < o->trials && rate > 0; t++) rate = v[t] = tput_trial(k, lanes, n, impl);
    if (rate > 0) {
      double med = rk_bench_median(v, (size_t)o->trials, &lo, &hi);
      rk_bench_note("   throughput.echo %s: %d trials of %llu messages, %u in flight at most", impl, o->trials,
                    (unsigned long long)n, GPU_WINDOW * lanes);
      rk_bench_emit("throughput.echo", impl, "msgs_per_s", med, "msgs/s", (uint64_t)o->trials, lo, hi);
      if (lanes == 8) g_tput_8lane = med;
    }
  }
  rk_kernel_destroy(k);
}

/* ---------------------------------------- entry ---------------------------------------------- */

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_log_last[512];

static void log_sink(void *user, rk_log_level level, const char *message) {
  (void)user;
  pthread_mutex_lock(&g_log_lock);
  if (level <= RK_LOG_ERROR) snprintf(g_log_last, sizeof g_log_last, "%s", message);
  fprintf(stderr, "rk-bench gpu: [ringkernel] %s\n", message);
  pthread_mutex_unlock(&g_log_lock);
}

/* The round trips: RTT_ROUNDS rounds, each running the baselines (base; NULL: none) and the ring
 * in turn. */
static void run_rtt(const rk_bench_opts *o, rk_runtime *rt, series *s, rk_bench_gpu_base *base) {
#if defined(RK_BENCH_CUDA)
  char err[256] = "";
#endif
  double per = o->seconds / RTT_ROUNDS, warm = per * 0.1 < 0.02 ? 0.02 : per * 0.1;
  uint64_t seq = 0;
  int r, i, want[4], noted = 0;
  for (i = 0; i < 4; i++) want[i] = rk_bench_want(o, "rtt.echo", s[i].impl, NULL) && (i == 0 || base != NULL);
#if defined(RK_BENCH_CUDA)
  /* untimed: bring the GPU out of its idle clocks before the first round */
  if (base) {
    size_t n = 0;
    if (rk_bench_gpu_base_run(base, 0, 0.2, 0, s[1].v, s[1].cap, &n, err, sizeof err) != 0) {
      rk_bench_fail("gpu baselines: %s", err);
      want[1] = want[2] = 0;
    }
  }
#endif
  for (r = 0; r < RTT_ROUNDS && (want[0] || want[1] || want[2] || want[3]); r++) {
    int part;
    for (part = 0; part < 2; part++) {
      int ring_part = (part + r) % 2 == 1; /* round 0: baselines first; round 1: ring first; ... */
      if (ring_part && want[0]) {
        rk_kernel *k = ring_launch(rt, 1);
        if (k == NULL) {
          want[0] = 0;
          continue;
        }
        if (!noted++) note_geometry(rt, k, "rtt.echo ringkernel.cuda");
        if (rtt_ring_round(k, per, warm, &s[0], &seq) != 0) want[0] = 0;
        rk_kernel_destroy(k); /* nothing resident while the baselines run */
      } else if (!ring_part) {
        int g;
        for (g = 0; g < 3; g++) { /* mode g: cuda.launch, cuda.graph, cuda.launch.zerocopy */
          size_t got = 0;
          if (!want[1 + g]) continue;
#if defined(RK_BENCH_CUDA)
          if (rk_bench_gpu_base_run(base, g, per, warm, s[1 + g].v + s[1 + g].n, s[1 + g].cap - s[1 + g].n, &got, err,
                                    sizeof err) != 0) {
            rk_bench_fail("rtt.echo %s: %s", s[1 + g].impl, err);
            want[1 + g] = 0;
          }
#endif
          series_round(&s[1 + g], got);
        }
      }
    }
  }
  for (i = 0; i < 4; i++)
    if (want[i]) series_emit(&s[i]);
}

/* rtt.echo.sparse: one call a millisecond (a nanosleep between calls), so every request finds the
 * lane asleep in its deep idle back-off. */
static void run_sparse(const rk_bench_opts *o, rk_runtime *rt, series *s) {
  uint8_t req[GPU_PAYLOAD], buf[GPU_PAYLOAD];
  rk_msg reply;
  rk_kernel *k;
  uint64_t seq = 1ull << 40, end;
  size_t n = 0;
  if (!rk_bench_want(o, s->bench, s->impl, NULL) || (k = ring_launch(rt, 1)) == NULL) return;
  note_geometry(rt, k, "rtt.echo.sparse ringkernel.cuda");
  end = rk_bench_now_ns() + (uint64_t)(o->seconds * 1e9);
  while (n < s->cap && rk_bench_now_ns() < end) {
    struct timespec ts = {0, 1000000};
    uint64_t t0, t1;
    int rc;
    nanosleep(&ts, NULL);
    rk_bench_pattern(req, GPU_PAYLOAD, seq++);
    t0 = rk_bench_now_ns();
    rc = rk_call(k, GPU_TYPE, req, sizeof req, &reply, buf, sizeof buf, GPU_TIMEOUT_NS);
    t1 = rk_bench_now_ns();
    if (rc != 0 || reply.len != sizeof req || reply.status != 0 || memcmp(buf, req, sizeof req) != 0) {
      rk_bench_fail("%s %s: call %zu: %s", s->bench, s->impl, n, rc ? rk_err_name(rc) : "wrong reply");
      break;
    }
    if (seq > (1ull << 40) + 3) s->v[n++] = t1 - t0; /* the first few warm the path up */
  }
  rk_kernel_destroy(k);
  series_round(s, n);
  s->n = n;
  series_emit(s);
}

/* k2k.hop, ringkernel.cuda: two kernels ping-pong over K2K (bench/kernels/k2k_hop.c), timed inside
 * the first with %globaltimer, the host idle (it polls A's K2K counter, then reads A's state after
 * terminate); hop = round trip / 2. */
static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void run_k2k_hop(const rk_bench_opts *o, rk_runtime *rt) {
  rk_graph *g = NULL;
  uint32_t na, nb;
  uint64_t want = o->quick ? 2000 : K2K_HOP_SAMPLES, warm = 200, spins = 0, n;
  static k2k_hop_state st;
  rk_kernel *a;
  if (!rk_bench_want(o, "k2k.hop", "ringkernel.cuda", NULL)) return;
  if (rk_graph_create(rt, &g) != RK_OK || rk_graph_add(g, &k2k_hop_a, NULL, 0, &na) != RK_OK ||
      rk_graph_add(g, &k2k_hop_b, NULL, 0, &nb) != RK_OK || rk_graph_connect(g, na, nb, NULL) != RK_OK ||
      rk_graph_connect(g, nb, na, NULL) != RK_OK || rk_graph_launch(g) != RK_OK || rk_graph_activate(g) != RK_OK) {
    rk_bench_fail("k2k.hop ringkernel.cuda: graph: %s", rk_runtime_last_error(rt));
    rk_graph_destroy(g);
    return;
  }
  a = rk_graph_kernel(g, na);
  if (rk_send(a, K2K_HOP_START, &want, sizeof want, RK_SEND_NO_REPLY, NULL) != RK_OK) {
    rk_bench_fail("k2k.hop ringkernel.cuda: start: %s", rk_runtime_last_error(rt));
  } else {
    rk_kernel_counters c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    do { /* every ping back is a K2K message A takes */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
      if (rk_kernel_stats(a, &c) != RK_OK) break;
    } while (c.k2k_in < want && ++spins < 20000);
    if (c.k2k_in < want) rk_bench_fail("k2k.hop ringkernel.cuda: %llu of %llu round trips in 20 s",
                                       (unsigned long long)c.k2k_in, (unsigned long long)want);
  }
  (void)rk_graph_terminate(g, 2000000000);
  if (rk_kernel_read_state(a, &st, sizeof st) == (int)sizeof st && st.n >= want) {
    n = (want < K2K_HOP_SAMPLES ? want : K2K_HOP_SAMPLES) - warm;
    qsort(st.rtt_ns + warm, n, sizeof st.rtt_ns[0], cmp_u64);
    rk_bench_emit("k2k.hop", "ringkernel.cuda", "hop_p50_ns", (double)st.rtt_ns[warm + n / 2] / 2.0, "ns", n, NAN, NAN);
    rk_bench_emit("k2k.hop", "ringkernel.cuda", "hop_p99_ns", (double)st.rtt_ns[warm + n * 99 / 100] / 2.0, "ns", n,
                  NAN, NAN);
    verdict("h100.k2k_hop", "k2k.hop", "ringkernel.cuda", "hop_p50_ns", (double)st.rtt_ns[warm + n / 2] / 2.0, "<=",
            TARGET_K2K_HOP_NS);
  } else {
    rk_bench_fail("k2k.hop ringkernel.cuda: no samples read back (%s)", rk_runtime_last_error(rt));
  }
  rk_graph_destroy(g);
}

int rk_bench_gpu(const rk_bench_opts *o) {
  rk_runtime *rt = NULL;
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  series s[5];
  rk_bench_gpu_base *base = NULL;
  size_t cap = (size_t)(o->seconds * 1e9 / 1000.0) + 4096, i; /* one sample per us of budget at most */
  cpu_set_t saved;
  int rc, cpu, pinned, have_saved;
  char m[320];

  ro.backend = RK_BACKEND_CUDA;
  ro.log_level = RK_LOG_ERROR;
  ro.log = log_sink;
  if ((rc = rk_runtime_create(&rt, &ro)) != 0) {
    pthread_mutex_lock(&g_log_lock);
    if (rc == RK_ENODEV && !required()) {
      rk_bench_note("rk-bench gpu: no device (%s: %s): nothing to measure", rk_err_name(rc), g_log_last);
      rk_bench_emit("gpu", "none", "device_available", 0, "bool", 0, NAN, NAN);
      rc = 0;
    } else {
      rk_bench_fail("rk-bench gpu: the CUDA runtime could not be created%s: %s (%s)",
                    rc == RK_ENODEV ? " and RK_REQUIRE_GPU=1" : "", rk_err_name(rc), g_log_last);
      rc = -1;
    }
    pthread_mutex_unlock(&g_log_lock);
    return rc;
  }
#if defined(RK_BENCH_CUDA)
  if (rk_bench_gpu_name(0, g_gpu, sizeof g_gpu) != 0)
#endif
    snprintf(g_gpu, sizeof g_gpu, "unknown CUDA GPU");
  snprintf(m, sizeof m, "%s; host %s", g_gpu, rk_bench_machine());
  rk_bench_set_machine(m); /* every GPU line names the GPU */
  rk_bench_note("\n== gpu: %s; %s", g_gpu, rk_runtime_backend_reason(rt));

#if defined(RK_BENCH_CUDA)
  /* The baselines' buffers, stream, graph and module: before any ring kernel is resident, and
   * before the pin below (threads CUDA starts for them keep every CPU). */
  if (rk_bench_want(o, "rtt.echo", "cuda.launch", NULL) || rk_bench_want(o, "rtt.echo", "cuda.graph", NULL) ||
      rk_bench_want(o, "rtt.echo", "cuda.launch.zerocopy", NULL)) {
    char err[256] = "";
    if (rk_bench_gpu_base_open(0, GPU_PAYLOAD, &base, err, sizeof err) != 0) rk_bench_fail("gpu baselines: %s", err);
  }
#endif
  /* The caller on one CPU for every impl; pinned after the runtime started its threads, which
   * inherit the creator's affinity and keep every CPU. */
  cpu = rk_bench_cpu(rk_bench_ncpus() > 2 ? 2 : rk_bench_ncpus() - 1);
  have_saved = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
  pinned = rk_bench_pin(cpu);
  if (pinned == 0)
    rk_bench_note("   caller pinned to CPU %d (of %d usable) for every impl; %u-byte payloads; %d interleaved rounds",
                  cpu, rk_bench_ncpus(), GPU_PAYLOAD, RTT_ROUNDS);
  else
    rk_bench_note("   caller NOT pinned (CPU %d: %s); %u-byte payloads; %d interleaved rounds", cpu, strerror(pinned),
                  GPU_PAYLOAD, RTT_ROUNDS);

  memset(s, 0, sizeof s);
  s[0].impl = "ringkernel.cuda";
  s[1].impl = "cuda.launch";
  s[2].impl = "cuda.graph";
  s[3].impl = "cuda.launch.zerocopy";
  s[4].impl = "ringkernel.cuda";
  for (i = 0; i < 5; i++) {
    s[i].bench = i == 4 ? "rtt.echo.sparse" : "rtt.echo";
    s[i].cap = cap;
    if ((s[i].v = (uint64_t *)malloc(cap * sizeof *s[i].v)) == NULL) {
      rk_bench_fail("gpu: out of memory");
      goto out;
    }
    memset(s[i].v, 0, cap * sizeof *s[i].v); /* touched now, not in a timed loop */
  }
  g_tput_8lane = 0;
  run_rtt(o, rt, s, base);
  run_sparse(o, rt, &s[4]);
  tput_measure(o, rt, 1, "ringkernel.cuda.1lane");
  tput_measure(o, rt, 8, "ringkernel.cuda.8lane");
  run_k2k_hop(o, rt);
  if (rk_bench_want(o, "k2k.pipeline", "ringkernel.cuda", "msgs_per_s")) {
    const rk_kernel_desc *const d[3] = {&k2k_pipe_parse, &k2k_pipe_enrich, &k2k_pipe_aggregate};
    double med, lo, hi;
    int trials;
    if (rk_bench_k2k_pipeline(o, rt, d, &med, &lo, &hi, &trials) == 0) {
      rk_bench_emit("k2k.pipeline", "ringkernel.cuda", "msgs_per_s", med, "msgs/s", (uint64_t)trials, lo, hi);
      verdict("h100.k2k_pipeline", "k2k.pipeline", "ringkernel.cuda", "msgs_per_s", med, ">=", TARGET_K2K_PIPE);
    }
  }

  rk_bench_table("rtt.echo");
  rk_bench_table("throughput.echo");
  rk_bench_ratio("rtt.echo", "rtt_p50_ns", "cuda.launch", "ringkernel.cuda", TARGET_VS_LAUNCH, 1);
  rk_bench_ratio("rtt.echo", "rtt_p50_ns", "cuda.launch.zerocopy", "ringkernel.cuda", TARGET_VS_LAUNCH, 1);
  rk_bench_note("   verdicts: targets stated for an H100; measured on %s", g_gpu);
  if (s[0].n > 0) {
    double p50 = (double)rk_bench_quantile_u64(s[0].v, s[0].n, 0.50), fastest = 0;
    const char *which = NULL;
    verdict("h100.rtt_p50", "rtt.echo", "ringkernel.cuda", "rtt_p50_ns", p50, "<=", TARGET_P50_NS);
    for (i = 1; i <= 3; i++) /* the faster of the launch baselines */
      if (s[i].n > 0) {
        double b = (double)rk_bench_quantile_u64(s[i].v, s[i].n, 0.50);
        if (which == NULL || b < fastest) {
          fastest = b;
          which = s[i].impl;
        }
      }
    if (which) {
      char impl[96];
      snprintf(impl, sizeof impl, "%s/ringkernel.cuda", which);
      verdict("h100.rtt_vs_launch", "rtt.echo", impl, "rtt_p50_ns", fastest / p50, ">=", TARGET_VS_LAUNCH);
    }
  }
  if (g_tput_8lane > 0)
    verdict("h100.tput_8lane", "throughput.echo", "ringkernel.cuda.8lane", "msgs_per_s", g_tput_8lane, ">=", TARGET_8LANE);
out:
#if defined(RK_BENCH_CUDA)
  rk_bench_gpu_base_close(base);
#endif
  for (i = 0; i < 5; i++) free(s[i].v);
  if (have_saved) (void)pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  rk_bench_set_machine(NULL);
  rk_runtime_destroy(rt);
  return 0;
}
