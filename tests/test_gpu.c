/* test_gpu.c — the GPU suite (ctest label `gpu`): the CPU backend's lifecycle, send/recv/call,
 * backpressure, terminate-drains, state-survives and HLC-ordering checks, run on the CUDA
 * backend; an NVRTC-compiled kernel end to end; co-residency refusal; buffers (issue 17); an
 * application's own kernel (tests/twin_kernel.c) both ways: built by ringkernel_add_kernels (its
 * embedded fatbin) and given as source text (NVRTC at launch), each passing the checks of
 * twin_check.h.
 *
 *   test_gpu            every test, one runtime
 *   test_gpu NAME       only the tests NAME matches (cmocka's pattern: * and ?); no match: exit 2
 *   test_gpu --list     the test names, one a line (scripts/gpu-bundle.sh runs each in its own
 *                       process, so a hung test loses only its own result)
 *
 * Exits 77 (skipped) only when rk_runtime_create says RK_ENODEV (no usable device or driver); any
 * other failure to create the CUDA runtime (a built-in kernel that does not load, arenas that
 * cannot be allocated, a hostile environment) is a failure. With RK_REQUIRE_GPU=1 in the
 * environment (scripts/gpu-bundle.sh and scripts/gpu-check.sh set it) a skip is a failure too:
 * on a GPU machine, "skipped" hides a broken setup. The reason is printed either way.
 *
 * Every wait is short (T_NS, 250 ms: a GPU round trip takes microseconds) and loops stop at their
 * first error, so a broken kernel fails its test in seconds. Kernels are tracked and destroyed by
 * the teardown even when an assertion jumps out of a test: a resident kernel left behind would
 * hold SMs and streams and refuse image loads for every later test. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "nvrtc_sample.h"
#include "ringkernel.h"
#include "ringkernel/graph.h"
#include "twin_kernel.h"
#include "twin_check.h"

#define T_NS 250000000ll /* per call, per terminate */
static rk_runtime *rt;

/* ---------------------------------------- log capture ---------------------------------------- */

/* The runtime's log: printed (the logs that come back from a GPU machine are all there is) and the
 * last error kept, for runtime-creation failures, which return no runtime to ask. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_last[512];

static void log_sink(void *user, rk_log_level level, const char *message) {
  (void)user;
  pthread_mutex_lock(&log_lock);
  if (level <= RK_LOG_ERROR) snprintf(log_last, sizeof log_last, "%s", message);
  fprintf(stderr, "[rk %s] %s\n", level <= RK_LOG_ERROR ? "error" : "warn", message);
  pthread_mutex_unlock(&log_lock);
}

/* ---------------------------------------- live kernels --------------------------------------- */

#define MAX_LIVE 32
static rk_kernel *live[MAX_LIVE];

static void track(rk_kernel *k) {
  int i;
  for (i = 0; i < MAX_LIVE; i++)
    if (live[i] == NULL) {
      live[i] = k;
      return;
    }
  fail_msg("more than %d kernels alive", MAX_LIVE);
}

/* Destroy k (terminating it if needed) and forget it. */
static void done(rk_kernel *k) {
  int i;
  for (i = 0; i < MAX_LIVE; i++)
    if (live[i] == k) live[i] = NULL;
  rk_kernel_destroy(k);
}

/* k2k_two_devices: its graph and its second runtime (device 1), taken down by the teardown too */
static rk_graph *two_graph;
static rk_runtime *rt_second;

/* Teardown of every test, run by cmocka after a failure too. */
static int destroy_leftovers(void **state) {
  int i, n = 0;
  (void)state;
  if (two_graph) rk_graph_destroy(two_graph); /* before its runtimes */
  two_graph = NULL;
  if (rt_second) rk_runtime_destroy(rt_second);
  rt_second = NULL;
  for (i = 0; i < MAX_LIVE; i++)
    if (live[i]) {
      rk_kernel_destroy(live[i]);
      live[i] = NULL;
      n++;
    }
  if (n) fprintf(stderr, "teardown: destroyed %d kernel(s) a failed test left resident\n", n);
  return 0;
}

static rk_kernel *launch(const rk_kernel_desc *d, uint32_t lanes, uint32_t threads, uint32_t inbox,
                         rk_backpressure bp) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  int rc;
  lo.lanes = lanes;
  lo.threads_per_lane = threads;
  lo.inbox_capacity = inbox;
  lo.backpressure = bp;
  if ((rc = rk_kernel_launch(rt, d, &lo, &k)) != RK_OK)
    fail_msg("launch %s: %s: %s", d->name, rk_err_name(rc), rk_runtime_last_error(rt));
  track(k);
  return k;
}

/* assert_int_equal with the runtime's detail when a call fails */
#define CHECK(call, want)                                                                              \
  do {                                                                                                \
    int rc_ = (call);                                                                                 \
    if (rc_ != (want))                                                                                \
      fail_msg("%s = %s, expected %s (%s)", #call, rk_err_name(rc_), rk_err_name(want), rk_runtime_last_error(rt)); \
  } while (0)

/* ---------------------------------------- tests ---------------------------------------------- */

static void lifecycle(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  (void)state;
  assert_int_equal(rk_kernel_state(k), RK_STATE_LAUNCHED);
  assert_int_equal(rk_kernel_deactivate(k), RK_ESTATE);
  CHECK(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
  CHECK(rk_kernel_deactivate(k), RK_OK);
  CHECK(rk_kernel_activate(k), RK_OK);
  CHECK(rk_kernel_terminate(k, T_NS), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
  assert_int_equal(rk_kernel_terminate(k, T_NS), RK_ESTATE);
  done(k);
}

static void call_and_recv(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 2, 64, 0, RK_BACKPRESSURE_DEFAULT);
  char req[40], buf[64];
  rk_msg m;
  uint64_t seen[200] = {0}, ids[200];
  int i, got = 0;
  (void)state;
  CHECK(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 100; i++) {
    rk_hlc before = rk_clock_peek(rk_runtime_clock(rt));
    snprintf(req, sizeof req, "call %d", i);
    CHECK(rk_call(k, 9, req, (uint32_t)strlen(req) + 1, &m, buf, sizeof buf, T_NS), RK_OK);
    assert_string_equal(buf, req);
    assert_true(m.env.hlc > before); /* reply stamp > request stamp > runtime clock before */
    assert_true(rk_clock_peek(rk_runtime_clock(rt)) > m.env.hlc);
  }
  for (i = 0; i < 200; i++) {
    uint32_t v = (uint32_t)i;
    CHECK(rk_send(k, 9, &v, sizeof v, 0, &ids[i]), RK_OK);
  }
  while (got < 200) {
    uint32_t v;
    CHECK(rk_recv(k, &m, &v, sizeof v, T_NS), RK_OK);
    assert_int_equal(m.len, sizeof v);
    assert_false(rk_msg_is_error(&m));
    assert_true(v < 200);
    assert_int_equal(m.env.correlation_id, ids[v]);
    assert_int_equal(seen[v]++, 0); /* exactly once */
    got++;
  }
  done(k);
}

typedef struct caller {
  rk_kernel *k;
  int id, calls, rc; /* rc: the first failure (an RK_E* code, or WRONG_REPLY), 0 if none */
} caller;

#define WRONG_REPLY (-1000) /* no RK_E* code has this value */

static void caller_main(void *arg) {
  caller *c = (caller *)arg;
  int i;
  for (i = 0; i < 200; i++) {
    uint32_t req[2] = {(uint32_t)c->id, (uint32_t)i}, rep[2] = {0, 0};
    rk_msg m;
    int rc = rk_call(c->k, 9, req, sizeof req, &m, rep, sizeof rep, T_NS);
    if (rc == RK_OK && (m.len != sizeof rep || rep[0] != req[0] || rep[1] != req[1])) rc = WRONG_REPLY;
    if (rc != RK_OK) { /* stop at the first error: 200 timeouts would take a minute */
      c->rc = rc;
      break;
    }
    c->calls++;
  }
}

static void concurrent_callers(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 4, 32, 0, RK_BACKPRESSURE_DEFAULT);
  uv_thread_t t[4];
  caller c[4];
  int i;
  (void)state;
  CHECK(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 4; i++) {
    c[i].k = k;
    c[i].id = i;
    c[i].calls = 0;
    c[i].rc = 0;
    assert_int_equal(uv_thread_create(&t[i], caller_main, &c[i]), 0);
  }
  for (i = 0; i < 4; i++) uv_thread_join(&t[i]); /* every thread joined before any assertion */
  for (i = 0; i < 4; i++)
    if (c[i].rc != 0)
      fail_msg("caller %d: call %d failed: %s (%s)", i, c[i].calls,
               c[i].rc == WRONG_REPLY ? "wrong reply" : rk_err_name(c[i].rc), rk_runtime_last_error(rt));
  done(k);
}

static void backpressure_and_terminate_drain(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 1, 32, 64, RK_BACKPRESSURE_REJECT);
  rk_msg m;
  uint32_t i, v, got = 0;
  int rc;
  (void)state;
  for (i = 0; i < 64; i++) CHECK(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_OK); /* not active */
  assert_int_equal(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_EAGAIN);
  CHECK(rk_kernel_terminate(k, T_NS), RK_OK); /* drains all 64 */
  assert_int_equal(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_ECLOSED);
  while ((rc = rk_recv(k, &m, &v, sizeof v, T_NS)) == RK_OK) {
    assert_int_equal(v, got);
    got++;
  }
  assert_int_equal(rc, RK_ECLOSED); /* every reply received, not a timeout */
  assert_int_equal(got, 64);
  done(k);
}

static void state_survives_deactivate(void **state) {
  rk_kernel *k = launch(&rk_builtin_counter, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  rk_counter_add a;
  rk_counter_value v;
  rk_msg m;
  uint64_t last = 0;
  (void)state;
  CHECK(rk_kernel_activate(k), RK_OK);
  a.delta = 5;
  CHECK(rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 5);
  last = v.stamp;
  CHECK(rk_kernel_deactivate(k), RK_OK);
  CHECK(rk_kernel_activate(k), RK_OK);
  a.delta = 7;
  CHECK(rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 12);
  assert_int_equal(v.count, 2);
  assert_true(v.stamp > last);
  done(k);
}

static void vector_add_cooperative(void **state) {
  rk_kernel *k = launch(&rk_builtin_vector_add, 1, 4, 0, RK_BACKPRESSURE_DEFAULT);
  rk_vadd_req r;
  rk_vadd_reply out;
  rk_msg m;
  uint32_t i;
  (void)state;
  CHECK(rk_kernel_activate(k), RK_OK);
  memset(&r, 0, sizeof r);
  r.n = RK_VADD_MAX;
  for (i = 0; i < RK_VADD_MAX; i++) {
    r.a[i] = (float)i;
    r.b[i] = 100.0f * (float)i;
  }
  CHECK(rk_call_typed(k, rk_vadd_req, &r, &m, &out, sizeof out, T_NS), RK_OK);
  for (i = 0; i < RK_VADD_MAX; i++) assert_true(out.c[i] == 101.0f * (float)i);
  done(k);
}

/* The NVRTC sample kernel: a handler given as CUDA source, compiled at launch. */
static rk_kernel_desc nvrtc_desc(void) {
  static const rk_msg_type *const types[] = {&rk_counter_add_msgtype};
  rk_kernel_desc d;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "nvrtc_twice";
  d.cuda_source = rk_test_twice_src;
  d.cuda_handler = RK_TEST_TWICE_HANDLER;
  d.types = types;
  d.n_types = 1;
  return d;
}

/* Launch the NVRTC kernel, check one call (twice the delta), destroy it. */
static void nvrtc_round(void) {
  rk_kernel_desc d = nvrtc_desc();
  rk_kernel *k = launch(&d, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  rk_counter_add a;
  rk_counter_value v;
  rk_msg m;
  CHECK(rk_kernel_activate(k), RK_OK);
  a.delta = 21;
  CHECK(rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 42);
  done(k);
}

static void nvrtc_kernel_end_to_end(void **state) {
  (void)state;
  nvrtc_round();
}

/* An image already loaded is launched again while another ring kernel is resident (the runtime
 * caches what it loaded: no module load while resident), and a runtime created on the device
 * while a ring kernel is resident is refused (it would allocate and load modules: ARCHITECTURE
 * §8), with RK_BACKEND_AUTO falling back to the CPU and saying why; once nothing is resident,
 * a second CUDA runtime is created and destroyed normally. */
static void resident_rules(void **state) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_runtime *rt2 = NULL;
  rk_kernel *echo;
  int rc;
  (void)state;
  nvrtc_round(); /* loads the image while nothing is resident */
  echo = launch(&rk_builtin_echo, 1, 32, 0, RK_BACKPRESSURE_DEFAULT);
  nvrtc_round(); /* from the cache, with echo resident */
  o.backend = RK_BACKEND_CUDA;
  o.log = log_sink;
  o.log_level = RK_LOG_ERROR;
  rc = rk_runtime_create(&rt2, &o);
  if (rc == RK_OK) rk_runtime_destroy(rt2);
  assert_int_equal(rc, RK_ESTATE);
  o.backend = RK_BACKEND_AUTO;
  CHECK(rk_runtime_create(&rt2, &o), RK_OK);
  printf("second runtime while resident: %s (%s)\n", rk_backend_name(rk_runtime_backend(rt2)),
         rk_runtime_backend_reason(rt2));
  assert_int_equal(rk_runtime_backend(rt2), RK_BACKEND_CPU);
  assert_non_null(strstr(rk_runtime_backend_reason(rt2), "resident"));
  rk_runtime_destroy(rt2);
  done(echo);
  o.backend = RK_BACKEND_CUDA;
  CHECK(rk_runtime_create(&rt2, &o), RK_OK);
  assert_int_equal(rk_runtime_backend(rt2), RK_BACKEND_CUDA);
  rk_runtime_destroy(rt2);
}

/* With echo resident, counter and vector_add are launched for the first time in the process (run
 * alone, as scripts/gpu-bundle.sh runs each test): under lazy module loading their first launch
 * would load them into the context while a ring kernel runs, which may wait for it. The runtime
 * loads its images while preparing and sets CUDA_MODULE_LOADING=EAGER: both come up at once, and
 * echo keeps answering. */
static void first_launch_while_resident(void **state) {
  rk_kernel *echo = launch(&rk_builtin_echo, 1, 32, 0, RK_BACKPRESSURE_DEFAULT), *ctr, *va;
  rk_counter_add a = {5};
  rk_counter_value v;
  rk_vadd_req req;
  rk_vadd_reply out;
  uint32_t x = 11, back = 0;
  rk_msg m;
  (void)state;
  CHECK(rk_kernel_activate(echo), RK_OK);
  CHECK(rk_call(echo, 9, &x, sizeof x, &m, &back, sizeof back, T_NS), RK_OK);
  ctr = launch(&rk_builtin_counter, 1, 0, 0, RK_BACKPRESSURE_DEFAULT);
  va = launch(&rk_builtin_vector_add, 1, 0, 0, RK_BACKPRESSURE_DEFAULT);
  CHECK(rk_kernel_activate(ctr), RK_OK);
  CHECK(rk_kernel_activate(va), RK_OK);
  CHECK(rk_call_typed(ctr, rk_counter_add, &a, &m, &v, sizeof v, T_NS), RK_OK);
  assert_int_equal(v.total, 5);
  memset(&req, 0, sizeof req);
  req.n = 2;
  req.a[0] = 1.0f;
  req.b[0] = 2.0f;
  req.a[1] = 3.0f;
  req.b[1] = 4.0f;
  CHECK(rk_call_typed(va, rk_vadd_req, &req, &m, &out, sizeof out, T_NS), RK_OK);
  assert_true(out.c[0] == 3.0f && out.c[1] == 7.0f);
  x = 12;
  CHECK(rk_call(echo, 9, &x, sizeof x, &m, &back, sizeof back, T_NS), RK_OK);
  assert_int_equal(back, 12);
  done(va);
  done(ctr);
  done(echo);
}

/* A handler whose frame needs more local memory than the runtime reserved while preparing (2 KiB
 * per thread): launching it while anything is resident would make the driver grow local memory,
 * which waits for resident kernels. Refused at launch with RK_ENORESOURCE, saying so; the runtime
 * stays usable. */
static const char big_frame_src[] =
    "#include \"ringkernel/kernel.h\"\n"
    "RK_HANDLER(big_frame)(rk_ctx *ctx, const rk_msg *in) {\n"
    "  volatile uint32_t a[2048];\n" /* 8 KiB, indexed at run time: local memory */
    "  uint32_t i, s = 0;\n"
    "  for (i = 0; i < 2048; i++) a[i] = i * rk_msg_len(in);\n"
    "  for (i = 0; i < 2048; i += 1 + rk_msg_len(in)) s += a[i];\n"
    "  return rk_reply(ctx, 9, &s, sizeof s);\n"
    "}\n";

static void local_memory_refused(void **state) {
  rk_kernel_desc d;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k = NULL;
  int rc;
  (void)state;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "big_frame";
  d.cuda_source = big_frame_src;
  d.cuda_handler = "big_frame";
  rc = rk_kernel_launch(rt, &d, &lo, &k);
  if (rc == RK_OK) track(k);
  assert_int_equal(rc, RK_ENORESOURCE);
  printf("refused: %s\n", rk_runtime_last_error(rt));
  assert_non_null(strstr(rk_runtime_last_error(rt), "local memory"));
  nvrtc_round(); /* still usable */
}

/* Callbacks on a GPU kernel: every reply reaches the callback, on the loop's thread, through the
 * device-reply poller (devpoll.c): the lanes cannot wake the loop. */
typedef struct gpu_cb {
  pthread_mutex_t lock;
  uint32_t got, bad;
} gpu_cb;

static void gpu_on_reply(rk_kernel *k, const rk_msg *m, void *user) {
  gpu_cb *c = (gpu_cb *)user;
  (void)k;
  pthread_mutex_lock(&c->lock);
  if (m->status != 0 || m->len != sizeof(uint32_t)) c->bad++;
  c->got++;
  pthread_mutex_unlock(&c->lock);
}

static void callbacks_on_device(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 2, 32, 0, RK_BACKPRESSURE_DEFAULT);
  gpu_cb c;
  uint32_t i, got = 0;
  uint64_t start = uv_hrtime();
  (void)state;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  CHECK(rk_kernel_activate(k), RK_OK);
  CHECK(rk_recv_start(k, gpu_on_reply, &c), RK_OK);
  for (i = 0; i < 1000; i++) CHECK(rk_send(k, 9, &i, sizeof i, 0, NULL), RK_OK);
  while (got < 1000 && uv_hrtime() - start < 2 * (uint64_t)T_NS) {
    uv_sleep(1);
    pthread_mutex_lock(&c.lock);
    got = c.got;
    pthread_mutex_unlock(&c.lock);
  }
  CHECK(rk_recv_stop(k), RK_OK);
  assert_int_equal(got, 1000);
  assert_int_equal(c.bad, 0);
  done(k);
  pthread_mutex_destroy(&c.lock);
}

/* More kernels than the GPU holds at once, each of which fits on its own: the launch that does not
 * fit must be refused by the check-in proof (every lane checks in within the launch timeout), with
 * RK_ENORESOURCE, never hang; the runtime stays usable. Kernels of RK_MAX_LANES lanes x 1024 threads
 * (one block per SM at the built-ins' 40 registers per thread: an H100 holds two such kernels)
 * with small rings, so the pinned arena (64 MiB) is not what runs out; at most CO_MAX launches,
 * fewer than the backend's 32 streams, so the stream pool is not what refuses either. On a GPU with
 * fewer SMs than lanes the first kernel does not fit on its own: the lane count is halved until one
 * does (refused before launch or at check-in, both RK_ENORESOURCE). */
#define CO_MAX 24
static void co_residency_refused(void **state) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *ks[CO_MAX], *k = NULL;
  int n = 0, rc = RK_OK, i;
  char why[512] = "";
  uint32_t v = 5, back = 0;
  rk_msg m;
  (void)state;
  lo.lanes = RK_MAX_LANES;
  lo.threads_per_lane = 1024;
  lo.inbox_capacity = 64;
  lo.outbox_capacity = 64;
  lo.slot_size = 128;
  lo.launch_timeout_ns = 1000000000ull;
  for (;;) { /* the first kernel: one that fits alone */
    rc = rk_kernel_launch(rt, &rk_builtin_echo, &lo, &ks[0]);
    if (rc == RK_OK) break;
    print_message("co-residency: one kernel of %u lanes x 1024 threads refused: %s: %s\n", lo.lanes, rk_err_name(rc),
                  rk_runtime_last_error(rt));
    if (rc != RK_ENORESOURCE || lo.lanes == 1) fail_msg("no kernel fits on its own");
    lo.lanes /= 2;
  }
  track(ks[0]);
  n = 1;
  while (n < CO_MAX && (rc = rk_kernel_launch(rt, &rk_builtin_echo, &lo, &ks[n])) == RK_OK) track(ks[n++]);
  snprintf(why, sizeof why, "%s", rk_runtime_last_error(rt));
  print_message("co-residency: %d kernel(s) of %u lanes x 1024 threads resident; launch %d: %s: %s\n", n, lo.lanes,
                n + 1, rc == RK_OK ? "accepted" : rk_err_name(rc), rc == RK_OK ? "" : why);
  for (i = n - 1; i >= 0; i--) done(ks[i]); /* before any assertion: nothing left resident */
  assert_int_not_equal(rc, RK_OK);        /* CO_MAX kernels resident: the GPU was never full */
  assert_int_equal(rc, RK_ENORESOURCE);   /* never a hang, never another error */
  if (strstr(why, "checked in") == NULL) fail_msg("refused, but not by the check-in proof: %s", why);
  assert_true(n >= 1);
  /* the runtime is still usable: a default kernel launches and answers */
  CHECK(rk_kernel_launch(rt, &rk_builtin_echo, NULL, &k), RK_OK);
  track(k);
  CHECK(rk_kernel_activate(k), RK_OK);
  CHECK(rk_call(k, 9, &v, sizeof v, &m, &back, sizeof back, T_NS), RK_OK);
  assert_int_equal(back, 5);
  done(k);
}

/* The service loop re-measures the device clock (%globaltimer + offset) against CLOCK_REALTIME:
 * exchanges are accepted (lane 0 answers inside the 50 µs window) and the kernel's stamps never run
 * ahead of the host clock by more than the measurement error. */
static void clock_sync(void **state) {
  rk_kernel *k = launch(&rk_builtin_echo, 2, 32, 0, RK_BACKPRESSURE_DEFAULT);
  rk_kernel_counters st;
  rk_msg m;
  uint32_t v = 1, back = 0;
  int i;
  (void)state;
  CHECK(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < 2000; i++) { /* the suite runs exchanges every 10 ms: expect 4 within 2 s */
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(rk_kernel_stats(k, &st), RK_OK);
    if (st.clock_syncs >= 4) break;
    uv_sleep(1);
  }
  printf("clock: %llu syncs, %llu misses, offset %lld ns, window %llu ns\n", (unsigned long long)st.clock_syncs,
         (unsigned long long)st.clock_sync_misses, (long long)st.clock_offset_ns,
         (unsigned long long)st.clock_sync_window_ns);
  assert_true(st.clock_syncs >= 4);
  assert_true(st.clock_sync_window_ns <= 50000);
  for (i = 0; i < 100; i++) {
    CHECK(rk_call(k, 9, &v, sizeof v, &m, &back, sizeof back, T_NS), RK_OK);
    /* the reply's physical part is the device clock (or a later merged stamp): not in the future */
    assert_true(rk_hlc_physical(m.env.hlc) <= rk_realtime_us() + 100);
  }
  CHECK(rk_kernel_terminate(k, T_NS), RK_OK);
  done(k);
}

/* ---------------------------------------- main ----------------------------------------------- */

/* Buffers on the GPU (docs/buffers.md): device and host buffers allocated while a kernel is
 * resident (no CUDA allocation: pool sub-allocations), copies on the copy stream, vector_add on
 * 2^20 floats in device memory, a device buffer kept across many messages, and the refusals. */
static void buffers_on_device(void **state) {
  const uint64_t n = 1u << 20;
  rk_kernel *k = launch(&rk_builtin_vector_add, 2, 256, 0, RK_BACKPRESSURE_DEFAULT);
  rk_buffer *a = NULL, *b = NULL, *c = NULL, *h = NULL;
  float *x = (float *)malloc(n * 4), *y = (float *)malloc(n * 4);
  rk_vadd_buf_req req;
  rk_vadd_buf_reply rep;
  rk_msg m;
  uint64_t i;
  uint32_t j;
  (void)state;
  assert_non_null(x);
  assert_non_null(y);
  CHECK(rk_kernel_activate(k), RK_OK);
  /* resident now: everything below must work without a CUDA allocation */
  CHECK(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &a), RK_OK);
  CHECK(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &b), RK_OK);
  CHECK(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * 4, &c), RK_OK);
  CHECK(rk_buffer_alloc(rt, RK_BUFFER_HOST, 4096 * 4, &h), RK_OK);
  assert_null(rk_buffer_host_ptr(a));
  assert_non_null(rk_buffer_host_ptr(h));
  for (i = 0; i < n; i++) {
    x[i] = (float)(i % 1000);
    y[i] = (float)(i % 7) - 3.0f;
  }
  CHECK(rk_buffer_write(a, 0, x, n * 4, NULL, NULL), RK_OK);
  CHECK(rk_buffer_write(b, 0, y, n * 4, NULL, NULL), RK_OK);
  memset(&req, 0, sizeof req);
  CHECK(rk_buffer_ref(a, 0, n * 4, RK_BUF_READ, &req.a), RK_OK);
  CHECK(rk_buffer_ref(b, 0, n * 4, RK_BUF_READ, &req.b), RK_OK);
  CHECK(rk_buffer_ref(c, 0, n * 4, RK_BUF_WRITE, &req.c), RK_OK);
  req.n = n;
  CHECK(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, T_NS), RK_OK);
  assert_int_equal(rep.n, n);
  memset(y, 0, n * 4);
  CHECK(rk_buffer_read(c, 0, y, n * 4, NULL, NULL), RK_OK);
  for (i = 0; i < n; i++)
    if (y[i] != (float)(i % 1000) + (float)(i % 7) - 3.0f) fail_msg("c[%llu] = %g", (unsigned long long)i, (double)y[i]);
  /* into a mapped host buffer: the result is readable in place */
  CHECK(rk_buffer_ref(h, 0, 4096 * 4, RK_BUF_WRITE, &req.c), RK_OK);
  req.n = 4096;
  CHECK(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, T_NS), RK_OK);
  for (i = 0; i < 4096; i++) assert_true(((const float *)rk_buffer_host_ptr(h))[i] == (float)(i % 1000) + (float)(i % 7) - 3.0f);
  /* c += a, 1000 times, the data never leaving the device */
  memset(y, 0, n * 4);
  CHECK(rk_buffer_write(c, 0, y, 4096 * 4, NULL, NULL), RK_OK);
  CHECK(rk_buffer_ref(a, 0, 4096 * 4, RK_BUF_READ, &req.a), RK_OK);
  CHECK(rk_buffer_ref(c, 0, 4096 * 4, RK_BUF_READ, &req.b), RK_OK);
  CHECK(rk_buffer_ref(c, 0, 4096 * 4, RK_BUF_WRITE, &req.c), RK_OK);
  for (j = 0; j < 1000; j++) CHECK(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, T_NS), RK_OK);
  CHECK(rk_buffer_read(c, 0, y, 4096 * 4, NULL, NULL), RK_OK);
  for (i = 0; i < 4096; i++) assert_true(y[i] == (float)(i % 1000) * 1000.0f);
  /* refusals: out of range (error reply), undeclared, freed */
  req.c.length = (uint64_t)n * 8;
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, T_NS), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  CHECK(rk_buffer_ref(c, 0, 4096 * 4, RK_BUF_WRITE, &req.c), RK_OK);
  assert_int_equal(rk_call_typed(k, rk_vadd_buf_req, &req, &m, &rep, sizeof rep, T_NS), RK_EHANDLER);
  assert_int_equal(m.status, RK_EINVAL);
  CHECK(rk_buffer_free(b), RK_OK);
  b = NULL;
  CHECK(rk_buffer_free(h), RK_OK);
  h = NULL;
  CHECK(rk_kernel_terminate(k, T_NS), RK_OK);
  done(k);
  CHECK(rk_buffer_free(a), RK_OK);
  CHECK(rk_buffer_free(c), RK_OK);
  free(x);
  free(y);
}

/* cmocka's test-filter pattern: '*' any run, '?' any one character, nothing else special. */
static int pattern_matches(const char *p, const char *s) {
  if (*p == 0) return *s == 0;
  if (*p == '*') return pattern_matches(p + 1, s) || (*s && pattern_matches(p, s + 1));
  return *s && (*p == '?' || *p == *s) && pattern_matches(p + 1, s + 1);
}

/* The application's own kernel, built with ringkernel_add_kernels: its fatbin, loaded at launch. */
static void custom_kernel_compiled(void **state) {
  rk_kernel *k;
  (void)state;
  if (tally.cuda_image == NULL) fail_msg("tally has no device image: this build had no nvcc");
  assert_string_equal(tally.cuda_entry, "rk_kernel_tally");
  k = launch(&tally, 0, 0, 0, RK_BACKPRESSURE_DEFAULT);
  assert_int_equal(rk_kernel_lanes(k), 2);
  CHECK(rk_kernel_activate(k), RK_OK);
  twin_check(k, 2, T_NS);
  CHECK(rk_kernel_terminate(k, T_NS), RK_OK);
  done(k);
}

/* The same kernel as source text: rk_kernel_compile (NVRTC for this device), then launched; a
 * source that does not compile is refused with NVRTC's error, at the check and at launch. */
static void custom_kernel_source(void **state) {
  rk_kernel_desc d = twin_source_desc(), bad = twin_source_desc();
  rk_kernel *k = NULL;
  char log[4096];
  (void)state;
  CHECK(rk_kernel_compile(rt, &d, log, sizeof log), RK_OK);
  k = launch(&d, 0, 0, 0, RK_BACKPRESSURE_DEFAULT);
  CHECK(rk_kernel_activate(k), RK_OK);
  twin_check(k, 2, T_NS);
  CHECK(rk_kernel_terminate(k, T_NS), RK_OK);
  done(k);
  bad.source = "RK_HANDLER(tally_handler)(rk_ctx *ctx, const rk_msg *in) { return undeclared_name; }";
  CHECK(rk_kernel_compile(rt, &bad, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(log, "undeclared_name"));
  k = NULL;
  CHECK(rk_kernel_launch(rt, &bad, NULL, &k), RK_EINVAL);
  assert_null(k);
  assert_non_null(strstr(rk_runtime_last_error(rt), "undeclared_name"));
}

/* K2K between two GPUs (rk_graph_add_on): a three-stage pipeline with its middle stage on device
 * 1, each stage NVRTC-compiled from source; every request forwarded twice across the devices and
 * answered by the last stage, once, stamps increasing. Skipped (with the reason) when device 1
 * cannot be used: one GPU. Peer access or staging is the library's choice (docs/k2k.md): with
 * peer access the pipeline runs as it is; without, 0 -> 1 -> 0 is refused (RK_ENOTSUP, its first
 * stage would be written by both devices), and the test runs the two-stage 0 -> 1 instead. */
static const char k2k_stage_source[] =
    "RK_HANDLER(stage_handler)(rk_ctx *ctx, const rk_msg *in) {\n"
    "  uint64_t w = 0;\n"
    "  if (rk_msg_len(in) >= 8) w = *(const uint64_t *)rk_msg_payload(in);\n"
    "  w = w + 1;\n"
    "  int rc = rk_forward(ctx, 0, 1, &w, sizeof w);\n"
    "  if (rc == RK_EINVAL) return rk_reply(ctx, 1, &w, sizeof w);\n"
    "  return rc;\n"
    "}\n";

static void k2k_two_devices(void **state) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_kernel_desc d;
  uint32_t node, i, stages = 3;
  rk_hlc last = 0;
  char log[4096];
  int rc;
  (void)state;
  o.backend = RK_BACKEND_CUDA;
  o.device = 1;
  o.log_level = RK_LOG_WARN;
  o.log = log_sink;
  if ((rc = rk_runtime_create(&rt_second, &o)) != RK_OK) {
    rt_second = NULL;
    print_message("skipped: no second CUDA device (device 1: %s): K2K between two GPUs needs two\n", rk_err_name(rc));
    skip();
  }
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "stage";
  d.source = k2k_stage_source;
  d.source_handler = "stage_handler";
  CHECK(rk_kernel_compile(rt, &d, log, sizeof log), RK_OK);
  CHECK(rk_kernel_compile(rt_second, &d, log, sizeof log), RK_OK);
  for (;;) {
    CHECK(rk_graph_create(rt, &two_graph), RK_OK);
    d.name = "stage0";
    CHECK(rk_graph_add(two_graph, &d, NULL, 0, &node), RK_OK);
    d.name = "stage1";
    CHECK(rk_graph_add_on(two_graph, rt_second, &d, NULL, 0, &node), RK_OK);
    CHECK(rk_graph_connect(two_graph, 0, 1, NULL), RK_OK);
    if (stages == 3) {
      d.name = "stage2";
      CHECK(rk_graph_add(two_graph, &d, NULL, 0, &node), RK_OK);
      CHECK(rk_graph_connect(two_graph, 1, 2, NULL), RK_OK);
    }
    rc = rk_graph_launch(two_graph);
    if (rc == RK_ENOTSUP && stages == 3) { /* no peer access between the two: the staged path */
      print_message("no peer access (%s): the two-stage pipeline, staged\n", rk_runtime_last_error(rt));
      rk_graph_destroy(two_graph);
      two_graph = NULL;
      stages = 2;
      continue;
    }
    CHECK(rc, RK_OK);
    break;
  }
  CHECK(rk_graph_activate(two_graph), RK_OK);
  for (i = 0; i < 1000; i++) {
    uint64_t v = i, back = 0;
    rk_msg m;
    CHECK(rk_call(rk_graph_kernel(two_graph, 0), 1, &v, sizeof v, &m, &back, sizeof back, T_NS), RK_OK);
    assert_int_equal(back, i + stages);
    assert_true(m.env.hlc > last);
    last = m.env.hlc;
  }
  CHECK(rk_graph_terminate(two_graph, T_NS), RK_OK);
  rk_graph_destroy(two_graph);
  two_graph = NULL;
  rk_runtime_destroy(rt_second);
  rt_second = NULL;
}

#define T(f) cmocka_unit_test_teardown(f, destroy_leftovers)

int main(int argc, char **argv) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  const char *require = getenv("RK_REQUIRE_GPU");
  int required = require && strcmp(require, "1") == 0, rc;
  size_t i, matched = 0;
  const struct CMUnitTest tests[] = {
      T(lifecycle),
      T(call_and_recv),
      T(concurrent_callers),
      T(backpressure_and_terminate_drain),
      T(state_survives_deactivate),
      T(vector_add_cooperative),
      T(nvrtc_kernel_end_to_end),
      T(resident_rules),
      T(co_residency_refused),
      T(clock_sync),
      T(first_launch_while_resident),
      T(local_memory_refused),
      T(callbacks_on_device),
      T(buffers_on_device),
      T(custom_kernel_compiled),
      T(custom_kernel_source),
      T(k2k_two_devices),
  };
  const size_t n_tests = sizeof tests / sizeof tests[0];

  if (argc > 2 || (argc == 2 && (argv[1][0] == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
    fprintf(stderr, "usage: test_gpu [--list | NAME-PATTERN]\n");
    return 2;
  }
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (i = 0; i < n_tests; i++) printf("%s\n", tests[i].name);
    return 0;
  }
  if (argc == 2) {
    for (i = 0; i < n_tests; i++) matched += pattern_matches(argv[1], tests[i].name);
    if (matched == 0) {
      fprintf(stderr, "test_gpu: no test matches '%s' (test_gpu --list names them)\n", argv[1]);
      return 2;
    }
    cmocka_set_test_filter(argv[1]);
  }

  o.backend = RK_BACKEND_CUDA;
  o.log_level = RK_LOG_ERROR;
  o.log = log_sink;
  o.watchdog_interval_ns = 10000000; /* clock exchanges every 10 ms, for clock_sync */
  o.clock_sync_interval_ns = 10000000;
  if ((rc = rk_runtime_create(&rt, &o)) != RK_OK) {
    pthread_mutex_lock(&log_lock);
    if (rc != RK_ENODEV) {
      printf("FAILED: the CUDA runtime could not be created: %s (%s)\n", rk_err_name(rc), log_last);
      pthread_mutex_unlock(&log_lock);
      return 1;
    }
    if (required) {
      printf("FAILED: RK_REQUIRE_GPU=1 but no usable CUDA device: %s (%s)\n", rk_err_name(rc), log_last);
      pthread_mutex_unlock(&log_lock);
      return 1;
    }
    printf("skipped: no usable CUDA device: %s (%s)\n", rk_err_name(rc), log_last);
    pthread_mutex_unlock(&log_lock);
    return 77;
  }
  printf("backend: %s\n", rk_runtime_backend_reason(rt));
  fflush(stdout);
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  (void)destroy_leftovers(NULL);
  rk_runtime_destroy(rt);
  return rc;
}
