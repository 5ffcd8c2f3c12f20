/* devmodel.c — `rk-bench devmodel`: what the CUDA device lane asks of PCIe per message, counted on
 * the emulated device (no GPU needed), and how soon a callback hears of a device reply.
 *
 * The device lane loop (src/device/persistent.cuh) runs as host C++ on the emulated device
 * (src/device/emulation.h), which counts every access it makes to host-mapped memory under the
 * rules written there: serial round trips on the lane's critical path (loads issued together count
 * once), system fences (fence.acq_rel.sys and store-releases at system scope), and the 64-byte
 * lines a reply's write covers. Counted, not timed: the figures say what the code asks of PCIe,
 * and they do not depend on this machine's speed or load (a GPU turns each round into about a
 * microsecond, each fence into a wait for the posted stores before it).
 *
 *   devmodel.echo.batch1   the built-in echo, default geometry (one lane; 32 threads, the CUDA
 *                          default; 256-byte slots), 32-byte requests, one rk_call at a time
 *   devmodel.echo.batch1.p128  the same with 128-byte requests: longer than the first copy round's
 *                          128 bytes (envelope + 64), so the lane's copy grows to the last
 *                          message's length (one round again after the first)
 *   devmodel.echo.batch8   the same kernel, its inbox filled while it is not yet active, then
 *                          drained: messages stream, eight per batch
 *       host_rounds_per_msg        round trips / messages (targets: <= 2.0 at batch 1, <= 0.5 at 8)
 *       sys_fences_per_batch       system fences / batches taken (target <= 1)
 *       host_store_lines_per_reply 64-byte lines the reply writes cover / replies
 *       msgs_per_batch, acquires_per_msg (ld.acquire.sys: no fence, but an L1 invalidate),
 *       deep_wakes (messages found from the deep idle back-off: a fence each)
 *   devmodel.vadd_buf.batch1  the built-in vector_add on three device buffers of 4096 floats
 *                          (rk_call_refs, 128-byte request), default geometry: what a message with
 *                          buffer references costs the lane (same metrics and targets as batch1)
 *   devmodel.k2k.pipeline  three kernels (the emulated device's K2K test kernel, one lane each,
 *                          default geometry): rk_call to the first, passed on twice with
 *                          rk_forward over K2K, answered by the last over K2K to the first, which
 *                          replies to the host; one call at a time. host_rounds_per_msg and
 *                          sys_fences_per_batch summed over the three kernels' lanes, per host
 *                          call and per batch (K2K batches included): the K2K hops (device
 *                          memory) should add no PCIe round and no system fence, so the
 *                          targets are those of devmodel.echo.batch1 per call (<= 2.0 rounds) and
 *                          <= 2 system fences per call (the first stage's two publications:
 *                          its K2K send, which also releases the host inbox, and the reply),
 *                          each + 0.05 for the control line the stages read now and then; the
 *                          K2K-only publications of the other stages fence at device scope
 *   devmodel.callback      latency_p50_ns: from the lane's publication of a reply (its clock read
 *                          right after the sequence-word stores) to the rk_recv_start callback's
 *                          entry, CUDA backend rules (the device cannot wake the service thread),
 *                          one message at a time, the bench waiting on a condition variable
 *                          for each, one thread per lane (target <= 100 000 ns; timed, on this
 *                          machine)
 * impl: ringkernel.cuda.emulated. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ringkernel.h"
#include "device/params.h"
#include "host/internal.h"
#include "device/emulation_backend.h"

#define DM_IMPL "ringkernel.cuda.emulated"
#define DM_PAYLOAD 32u
#define DM_PAYLOAD_MAX 176u /* a 256-byte slot's payload (less the ring's 16 bytes and the envelope) */
#define DM_TYPE 7u
#define DM_TIMEOUT_NS 2000000000ll

static rk_backend_ops g_ops;

/* A runtime whose kernels run on the emulated device; no periodic clock exchange (its rounds are
 * not the messages'). */
static rk_runtime *dm_runtime(void) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_runtime *rt = NULL;
  o.backend = RK_BACKEND_CPU; /* no CUDA initialisation; the emulated backend replaces it */
  o.clock_sync_interval_ns = UINT64_MAX;
  o.log_level = RK_LOG_ERROR;
  if (rk_runtime_create(&rt, &o) != RK_OK) return NULL;
  emu_backend_install(rt, &g_ops, emu_simple_start, emu_simple_join);
  return rt;
}

static void dm_runtime_destroy(rk_runtime *rt) {
  emu_backend_uninstall(rt);
  rk_runtime_destroy(rt);
}

static rk_kernel *dm_launch(rk_runtime *rt) {
  rk_kernel *k = NULL;
  int rc = rk_kernel_launch(rt, &rk_builtin_echo, NULL, &k); /* default geometry */
  if (rc != RK_OK) rk_bench_fail("devmodel: launch: %s (%s)", rk_err_name(rc), rk_runtime_last_error(rt));
  return k;
}

static double per(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }

static void emit_model(const char *bench, const rk_emu_lane_model *m) {
  rk_bench_emit(bench, DM_IMPL, "host_rounds_per_msg", per(m->rounds, m->msgs), "rounds", m->msgs, NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "sys_fences_per_batch", per(m->fences, m->batches), "fences", m->batches, NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "host_store_lines_per_reply", per(m->reply_lines, m->replies), "lines", m->replies,
                NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "msgs_per_batch", per(m->msgs, m->batches), "msgs", m->batches, NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "acquires_per_msg", per(m->acquires, m->msgs), "acquires", m->msgs, NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "deep_wakes", (double)m->deep_wakes, "msgs", m->msgs, NAN, NAN);
}

/* "verdict: ..." lines, as rk-bench gpu prints them: a target missed fails the run. */
static void verdict(const char *bench, const char *metric, double value, double bound) {
  int ok = value <= bound;
  rk_bench_note("verdict: target=devmodel bench=%s impl=%s metric=%s value=%.3f op=<= bound=%.3f result=%s", bench,
                DM_IMPL, metric, value, bound, ok ? "ok" : "MISSED");
  if (!ok) rk_bench_fail("%s %s: %.3f above the target %.3f", bench, metric, value, bound);
}

static void fill_n(uint8_t *p, uint32_t len, uint32_t i) { rk_bench_pattern(p, len, i); }
static void fill(uint8_t *p, uint32_t i) { fill_n(p, DM_PAYLOAD, i); }

static int check_reply_n(const rk_msg *m, const uint8_t *buf, uint32_t len, uint32_t i) {
  uint8_t want[DM_PAYLOAD_MAX];
  fill_n(want, len, i);
  return m->status == 0 && m->len == len && memcmp(buf, want, len) == 0;
}
static int check_reply(const rk_msg *m, const uint8_t *buf, uint32_t i) { return check_reply_n(m, buf, DM_PAYLOAD, i); }

/* One call at a time: every message finds the lane idle. payload: request bytes (32; 128 for the
 * .p128 variant, whose messages pass the first copy round's 128 bytes). */
static void batch1(const rk_bench_opts *o, const char *bench, uint32_t payload) {
  rk_runtime *rt = dm_runtime();
  rk_kernel *k;
  rk_emu_lane_model m;
  uint32_t i, n = o->quick ? 300 : 2000, warm = 50;
  uint8_t req[DM_PAYLOAD_MAX], buf[DM_PAYLOAD_MAX];
  rk_msg reply;
  if (rt == NULL || (k = dm_launch(rt)) == NULL) goto out_rt;
  if (rk_kernel_activate(k) != RK_OK) rk_bench_fail("%s: activate", bench);
  for (i = 0; i < warm + n; i++) {
    int rc;
    if (i == warm) rk_emu_model_reset();
    fill_n(req, payload, i);
    rc = rk_call(k, DM_TYPE, req, payload, &reply, buf, sizeof buf, DM_TIMEOUT_NS);
    if (rc != RK_OK || !check_reply_n(&reply, buf, payload, i)) {
      rk_bench_fail("%s: call %u: %s", bench, i, rc ? rk_err_name(rc) : "wrong reply");
      break;
    }
  }
  rk_emu_model_read(0, &m);
  rk_bench_note("   %s: %llu messages, %llu batches, %llu rounds, %llu fences, %llu idle polls", bench,
                (unsigned long long)m.msgs, (unsigned long long)m.batches, (unsigned long long)m.rounds,
                (unsigned long long)m.fences, (unsigned long long)m.idle_polls);
  emit_model(bench, &m);
  verdict(bench, "host_rounds_per_msg", per(m.rounds, m.msgs), 2.0);
  verdict(bench, "sys_fences_per_batch", per(m.fences, m.batches), 1.0);
  (void)rk_kernel_terminate(k, DM_TIMEOUT_NS);
  rk_kernel_destroy(k);
out_rt:
  if (rt) dm_runtime_destroy(rt);
}

/* vector_add on device buffers (ringkernel/buffer.h), one rk_call_refs at a time, the default CUDA
 * geometry: a message with three references costs the lane what any 128-byte message does (the
 * buffer table and the buffers are device memory: no PCIe round trip, no system fence). */
static void vadd_buf(const rk_bench_opts *o) {
  const char *bench = "devmodel.vadd_buf.batch1";
  const uint64_t n = 4096;
  rk_runtime *rt = dm_runtime();
  rk_kernel *k = NULL;
  rk_buffer *a = NULL, *b = NULL, *c = NULL;
  rk_emu_lane_model m;
  rk_vadd_buf_req req;
  rk_vadd_buf_reply rep;
  rk_msg reply;
  uint32_t i, msgs = o->quick ? 300 : 2000, warm = 50;
  float *x = (float *)calloc(n, sizeof(float));
  if (rt == NULL || x == NULL) goto out;
  if (rk_kernel_launch(rt, &rk_builtin_vector_add, NULL, &k) != RK_OK || rk_kernel_activate(k) != RK_OK ||
      rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &a) || rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &b) ||
      rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &c) || rk_buffer_write(a, 0, x, n * 4, NULL, NULL) ||
      rk_buffer_write(b, 0, x, n * 4, NULL, NULL)) {
    rk_bench_fail("%s: set-up: %s", bench, rk_runtime_last_error(rt));
    goto out;
  }
  memset(&req, 0, sizeof req);
  (void)rk_buffer_ref(a, 0, n * 4, RK_BUF_READ, &req.a);
  (void)rk_buffer_ref(b, 0, n * 4, RK_BUF_READ, &req.b);
  (void)rk_buffer_ref(c, 0, n * 4, RK_BUF_WRITE, &req.c);
  req.n = n;
  for (i = 0; i < warm + msgs; i++) {
    int rc;
    if (i == warm) rk_emu_model_reset();
    rc = rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &reply, &rep, sizeof rep, DM_TIMEOUT_NS);
    if (rc != RK_OK || rep.n != n) {
      rk_bench_fail("%s: call %u: %s", bench, i, rc ? rk_err_name(rc) : "wrong reply");
      goto out;
    }
  }
  rk_emu_model_read(0, &m);
  rk_bench_note("   %s: %llu messages, %llu batches, %llu rounds, %llu fences (%u threads, n = %llu)", bench,
                (unsigned long long)m.msgs, (unsigned long long)m.batches, (unsigned long long)m.rounds,
                (unsigned long long)m.fences, 32u, (unsigned long long)n);
  emit_model(bench, &m);
  verdict(bench, "host_rounds_per_msg", per(m.rounds, m.msgs), 2.0);
  verdict(bench, "sys_fences_per_batch", per(m.fences, m.batches), 1.0);
out:
  if (k) {
    (void)rk_kernel_terminate(k, DM_TIMEOUT_NS);
    rk_kernel_destroy(k);
  }
  if (a) rk_buffer_free(a);
  if (b) rk_buffer_free(b);
  if (c) rk_buffer_free(c);
  if (rt) dm_runtime_destroy(rt);
  free(x);
}

/* The inbox filled while the kernel is not active, then drained: messages stream. */
static void batch8(const rk_bench_opts *o) {
  const char *bench = "devmodel.echo.batch8";
  rk_runtime *rt = dm_runtime();
  rk_kernel *k = NULL;
  rk_emu_lane_model m, sum;
  uint32_t fills = o->quick ? 1 : 4, f, i, cap = 1024;
  rk_send_item *items = (rk_send_item *)calloc(cap, sizeof *items);
  uint8_t *reqs = (uint8_t *)malloc((size_t)cap * DM_PAYLOAD), *bufs = (uint8_t *)malloc((size_t)cap * DM_PAYLOAD);
  rk_msg *msgs = (rk_msg *)calloc(cap, sizeof *msgs);
  memset(&sum, 0, sizeof sum);
  if (rt == NULL || items == NULL || reqs == NULL || bufs == NULL || msgs == NULL) {
    rk_bench_fail("%s: out of memory", bench);
    goto out;
  }
  for (f = 0; f < fills; f++) {
    uint32_t got = 0, j;
    if ((k = dm_launch(rt)) == NULL) goto out;
    for (i = 0; i < cap; i++) {
      fill(reqs + (size_t)i * DM_PAYLOAD, i);
      items[i].type = DM_TYPE;
      items[i].payload = reqs + (size_t)i * DM_PAYLOAD;
      items[i].len = DM_PAYLOAD;
      items[i].flags = 0;
    }
    for (i = 0; i < cap;) { /* queued while LAUNCHED: the lane does not consume yet */
      int r = rk_send_batch(k, items + i, cap - i);
      if (r <= 0) {
        rk_bench_fail("%s: send: %s", bench, rk_err_name(r));
        goto out;
      }
      i += (uint32_t)r;
    }
    rk_emu_model_reset();
    if (rk_kernel_activate(k) != RK_OK) rk_bench_fail("%s: activate", bench);
    while (got < cap) {
      int r = rk_recv_batch(k, msgs, bufs, DM_PAYLOAD, cap - got, DM_TIMEOUT_NS);
      if (r <= 0) {
        rk_bench_fail("%s: receive: %s after %u replies", bench, rk_err_name(r), got);
        goto out;
      }
      for (j = 0; j < (uint32_t)r; j++)
        if (!check_reply(&msgs[j], bufs + (size_t)j * DM_PAYLOAD, got + j)) { /* one lane: in order */
          rk_bench_fail("%s: reply %u is wrong", bench, got + j);
          goto out;
        }
      got += (uint32_t)r;
    }
    rk_emu_model_read(0, &m);
    {
      uint64_t *a = (uint64_t *)&sum, *b = (uint64_t *)&m;
      for (j = 0; j < sizeof m / sizeof *a; j++) a[j] += b[j];
    }
    (void)rk_kernel_terminate(k, DM_TIMEOUT_NS);
    rk_kernel_destroy(k);
    k = NULL;
  }
  rk_bench_note("   %s: %llu messages, %llu batches, %llu rounds, %llu fences", bench, (unsigned long long)sum.msgs,
                (unsigned long long)sum.batches, (unsigned long long)sum.rounds, (unsigned long long)sum.fences);
  emit_model(bench, &sum);
  verdict(bench, "host_rounds_per_msg", per(sum.rounds, sum.msgs), 0.5);
  verdict(bench, "sys_fences_per_batch", per(sum.fences, sum.batches), 1.0);
out:
  if (k) {
    (void)rk_kernel_terminate(k, DM_TIMEOUT_NS);
    rk_kernel_destroy(k);
  }
  if (rt) dm_runtime_destroy(rt);
  free(items);
  free(reqs);
  free(bufs);
  free(msgs);
}

typedef struct cb_state {
  pthread_mutex_t lock; /* the fields below; the bench waits on `cond`, as an application would */
  pthread_cond_t cond;
  uint32_t count;
  uint64_t entered_ns, published_ns;
  uint32_t bad;
} cb_state;

static void on_reply(rk_kernel *k, const rk_msg *m, void *user) {
  cb_state *s = (cb_state *)user;
  rk_emu_lane_model lm;
  uint64_t now = rk_bench_now_ns(); /* CLOCK_MONOTONIC, the emulated %globaltimer */
  (void)k;
  rk_emu_model_read(0, &lm);
  pthread_mutex_lock(&s->lock);
  if (m->status != 0 || m->len != DM_PAYLOAD) s->bad++;
  s->entered_ns = now;
  s->published_ns = lm.last_publish_ns;
  s->count++;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

static void callback(const rk_bench_opts *o) {
  const char *bench = "devmodel.callback";
  rk_runtime *rt = dm_runtime();
  rk_kernel *k;
  cb_state s;
  uint32_t i, n = o->quick ? 30 : 200;
  uint64_t *v = (uint64_t *)calloc(n, sizeof *v), budget_end;
  size_t got = 0;
  uint8_t req[DM_PAYLOAD];
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.lock, NULL);
  pthread_cond_init(&s.cond, NULL);
  /* One thread per lane: the lane's geometry does not enter this path (publication to callback),
   * and 32 emulated threads would take the machine's CPUs from the threads it does measure. */
  lo.threads_per_lane = 1;
  if (rt == NULL || v == NULL || rk_kernel_launch(rt, &rk_builtin_echo, &lo, &k) != RK_OK) {
    rk_bench_fail("%s: launch", bench);
    goto out_rt;
  }
  if (rk_kernel_activate(k) != RK_OK || rk_recv_start(k, on_reply, &s) != RK_OK) {
    rk_bench_fail("%s: activate / rk_recv_start", bench);
    goto out;
  }
  /* at most ~5 s: before the service loop polled device outboxes, each took up to a 50 ms tick */
  budget_end = rk_bench_now_ns() + 5000000000ull;
  for (i = 0; i < n && rk_bench_now_ns() < budget_end; i++) {
    uint64_t start = rk_bench_now_ns();
    fill(req, i);
    if (rk_send(k, DM_TYPE, req, DM_PAYLOAD, 0, NULL) != RK_OK) {
      rk_bench_fail("%s: send %u", bench, i);
      break;
    }
    pthread_mutex_lock(&s.lock);
    while (s.count == i && rk_bench_now_ns() - start < (uint64_t)DM_TIMEOUT_NS) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 10000000;
      if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
      pthread_cond_timedwait(&s.cond, &s.lock, &ts);
    }
    if (s.count != i + 1) {
      pthread_mutex_unlock(&s.lock);
      rk_bench_fail("%s: no callback for message %u", bench, i);
      break;
    }
    if (i >= 3) v[got++] = s.entered_ns - s.published_ns; /* the first few warm the loop up */
    pthread_mutex_unlock(&s.lock);
  }
  if (got) {
    uint64_t p50 = rk_bench_quantile_u64(v, got, 0.50), p99 = rk_bench_quantile_u64(v, got, 0.99);
    rk_bench_emit(bench, DM_IMPL, "latency_p50_ns", (double)p50, "ns", got, NAN, NAN);
    rk_bench_emit(bench, DM_IMPL, "latency_p99_ns", (double)p99, "ns", got, NAN, NAN);
    verdict(bench, "latency_p50_ns", (double)p50, 100000.0);
  }
  if (s.bad) rk_bench_fail("%s: %u wrong replies", bench, s.bad);
  (void)rk_recv_stop(k);
out:
  (void)rk_kernel_terminate(k, DM_TIMEOUT_NS);
  rk_kernel_destroy(k);
out_rt:
  if (rt) dm_runtime_destroy(rt);
  pthread_cond_destroy(&s.cond);
  pthread_mutex_destroy(&s.lock);
  free(v);
}

/* A three-stage K2K pipeline on the emulated device, one call at a time. */
static int k2k_stub(rk_ctx *ctx, const rk_msg *in) { (void)ctx; (void)in; return 0; }

static void k2k_pipeline(const rk_bench_opts *o) {
  const char *bench = "devmodel.k2k.pipeline";
  rk_runtime *rt = dm_runtime();
  rk_kernel_desc d[3];
  static const char *const names[3] = {"parse", "enrich", "aggregate"};
  rk_graph *g = NULL;
  uint32_t node[3], i, n = o->quick ? 300 : 2000, warm = 50;
  rk_emu_lane_model m;
  rk_msg reply;
  if (rt == NULL) return;
  for (i = 0; i < 3; i++) {
    memset(&d[i], 0, sizeof d[i]);
    d[i].size = sizeof d[i];
    d[i].name = names[i];
    d[i].handler = k2k_stub;
    d[i].cuda_entry = "rk_emu_kernel_k2k";
    d[i].state_size = 16 * sizeof(uint64_t);
  }
  if (rk_graph_create(rt, &g) != RK_OK) goto out;
  for (i = 0; i < 3; i++)
    if (rk_graph_add(g, &d[i], NULL, 0, &node[i]) != RK_OK) goto fail;
  if (rk_graph_connect(g, node[0], node[1], NULL) != RK_OK || rk_graph_connect(g, node[1], node[2], NULL) != RK_OK ||
      rk_graph_launch(g) != RK_OK || rk_graph_activate(g) != RK_OK)
    goto fail;
  for (i = 0; i < warm + n; i++) {
    uint64_t v = i, back = 0;
    int rc;
    if (i == warm) rk_emu_model_reset();
    rc = rk_call(rk_graph_kernel(g, node[0]), 1, &v, sizeof v, &reply, &back, sizeof back, DM_TIMEOUT_NS);
    if (rc != RK_OK || back != (uint64_t)i + 3) {
      rk_bench_fail("%s: call %u: %s", bench, i, rc ? rk_err_name(rc) : "wrong reply");
      break;
    }
  }
  rk_emu_model_read(-1, &m); /* all lanes: the three kernels' lane 0 */
  rk_bench_note("   %s: %u calls, %llu batches (host and K2K), %llu rounds, %llu system fences, %llu idle polls", bench,
                n, (unsigned long long)m.batches, (unsigned long long)m.rounds, (unsigned long long)m.fences,
                (unsigned long long)m.idle_polls);
  rk_bench_emit(bench, DM_IMPL, "host_rounds_per_msg", per(m.rounds, n), "rounds", n, NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "sys_fences_per_msg", per(m.fences, n), "fences", n, NAN, NAN);
  rk_bench_emit(bench, DM_IMPL, "batches_per_msg", per(m.batches, n), "batches", n, NAN, NAN);
  /* (2.0 as echo's, plus the control line read now and then by the stages' publications) */
  verdict(bench, "host_rounds_per_msg", per(m.rounds, n), 2.05);
  verdict(bench, "sys_fences_per_msg", per(m.fences, n), 2.05);
  (void)rk_graph_terminate(g, DM_TIMEOUT_NS);
  rk_graph_destroy(g);
  goto out;
fail:
  rk_bench_fail("%s: graph: %s", bench, rk_runtime_last_error(rt));
  rk_graph_destroy(g);
out:
  dm_runtime_destroy(rt);
}

int rk_bench_devmodel(const rk_bench_opts *o) {
  rk_bench_note("devmodel: the device lane loop on the emulated device (counted: not a GPU measurement)");
  if (rk_bench_want(o, "devmodel.echo.batch1", DM_IMPL, NULL)) batch1(o, "devmodel.echo.batch1", DM_PAYLOAD);
  if (rk_bench_want(o, "devmodel.echo.batch1.p128", DM_IMPL, NULL)) batch1(o, "devmodel.echo.batch1.p128", 128);
  if (rk_bench_want(o, "devmodel.echo.batch8", DM_IMPL, NULL)) batch8(o);
  if (rk_bench_want(o, "devmodel.vadd_buf.batch1", DM_IMPL, NULL)) vadd_buf(o);
  if (rk_bench_want(o, "devmodel.k2k.pipeline", DM_IMPL, NULL)) k2k_pipeline(o);
  if (rk_bench_want(o, "devmodel.callback", DM_IMPL, NULL)) callback(o);
  rk_bench_table("devmodel");
  return 0;
}
