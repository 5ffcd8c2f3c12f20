/* test_k2k.c — kernels that message kernels (CPU backend): routes declared in a graph, sends from
 * handlers, replies from the last stage of a pipeline, fan-in, topics, full inboxes, cycles,
 * causality along a path, and a graph terminate that loses nothing. */
#include "test_util.h"
#include "rt_util.h"
#include "host/internal.h"

#include <pthread.h>

#define T_HOP 300u   /* a message passed along: a running value and the stamps it saw */
#define T_ITEM 301u  /* fan-in item: source kernel, lane, sequence */
#define T_RESULT 302u
#define T_PING 303u

typedef struct hop {
  int64_t value;
  uint32_t hops;
  uint32_t pad;
  rk_hlc seen[4]; /* the stamp each stage received, in order */
} hop;

/* stage: value = value * 2 + 1, the stamp it received appended, then on over route 0; the kernel
 * with no route answers (the last stage), counting in its state. */
static int stage(rk_ctx *ctx, const rk_msg *in) {
  hop h;
  int rc;
  if (rk_msg_len(in) != sizeof h) return RK_EMSGSIZE;
  memcpy(&h, rk_msg_payload(in), sizeof h);
  if (h.hops < 4) h.seen[h.hops] = in->env.hlc;
  h.hops++;
  h.value = h.value * 2 + 1;
  rc = rk_forward(ctx, 0, T_HOP, &h, sizeof h);
  if (rc == RK_EINVAL) { /* no route: the last stage */
    if (rk_thread(ctx) == 0) /* the lanes share the state */
      __atomic_add_fetch((int64_t *)rk_state(ctx), 1, __ATOMIC_RELAXED);
    return rk_reply(ctx, T_RESULT, &h, sizeof h);
  }
  return rc;
}

static rk_kernel_desc desc_of(const char *name, rk_handler_fn fn, size_t state) {
  rk_kernel_desc d = rt_desc(name, fn);
  d.state_size = state;
  return d;
}

/* Two kernels, a -> b (and b -> a with cycle), K2K inboxes of cap_a / cap_b slots (0: default),
 * launched and activated; *a and *b receive their nodes. */
static rk_graph *two_kernels(rk_runtime *rt, const rk_kernel_desc *da, uint32_t cap_a, const rk_kernel_desc *db,
                             uint32_t cap_b, int cycle, uint32_t *a, uint32_t *b) {
  rk_graph *g;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, da, NULL, cap_a, a));
  RT_OK(rt, rk_graph_add(g, db, NULL, cap_b, b));
  RT_OK(rt, rk_graph_connect(g, *a, *b, NULL));
  if (cycle) RT_OK(rt, rk_graph_connect(g, *b, *a, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  return g;
}

static rk_graph *pipeline(rk_runtime *rt, uint32_t lanes, uint32_t threads, uint32_t nstages, uint32_t k2k_cap) {
  rk_graph *g;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  uint32_t i, node, route;
  static const char *names[4] = {"parse", "enrich", "aggregate", "extra"};
  lo.lanes = lanes;
  lo.threads_per_lane = threads;
  RT_OK(rt, rk_graph_create(rt, &g));
  for (i = 0; i < nstages; i++) {
    rk_kernel_desc d = desc_of(names[i], stage, sizeof(int64_t));
    RT_OK(rt, rk_graph_add(g, &d, &lo, k2k_cap, &node));
    assert_int_equal(node, i);
    if (i) {
      RT_OK(rt, rk_graph_connect(g, i - 1, i, &route));
      assert_int_equal(route, 0);
    }
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  return g;
}

/* rk_call on the first stage is answered by the last; the stamps grow along the path. */
static void test_reply_from_last_stage(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g = pipeline(rt, 2, 2, 3, 0);
  rk_kernel *first = rk_graph_kernel(g, 0), *last = rk_graph_kernel(g, 2);
  uint32_t i, n = RT_SANITIZED ? 200 : 2000;
  rk_kernel_counters st;
  (void)state;
  for (i = 0; i < n; i++) {
    hop h, r;
    rk_msg m;
    rk_hlc before = rk_clock_peek(rk_runtime_clock(rt));
    memset(&h, 0, sizeof h);
    h.value = i;
    RT_OK(rt, rk_call(first, T_HOP, &h, sizeof h, &m, &r, sizeof r, RT_HANG));
    assert_int_equal(m.env.type, T_RESULT);
    assert_int_equal(r.hops, 3);
    assert_int_equal(r.value, ((int64_t)i * 2 + 1) * 4 + 3); /* ((2i+1)*2+1)*2+1 */
    assert_true(r.seen[0] > before);  /* the host's send stamp, merged at the first stage */
    assert_true(r.seen[1] > r.seen[0]);
    assert_true(r.seen[2] > r.seen[1]);
    assert_true(m.env.hlc > r.seen[2]); /* the reply, stamped by the first stage after the last */
    assert_true(rk_clock_peek(rk_runtime_clock(rt)) > m.env.hlc);
  }
  st = rt_stats(first);
  assert_int_equal(st.k2k_out, n);      /* n passed on */
  assert_int_equal(st.k2k_in, n);       /* n replies back */
  assert_int_equal(st.msgs_out, n);
  assert_int_equal(st.handler_errors, 0);
  RT_WAIT_STAT(last, k2k_in, n); /* counted when its batch is released, after it answered */
  st = rt_stats(last);
  assert_int_equal(st.k2k_in, n);
  assert_int_equal(st.k2k_out, n); /* the replies */
  assert_int_equal(st.k2k_refused, n); /* its rk_forward found no route (how it knows it is last) */
  assert_int_equal(st.k2k_invalid, 0);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  assert_int_equal(*(int64_t *)last->state, n);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* --------------------------------------------------------------------------------------------- */

typedef struct item {
  uint32_t src, lane, seq, pad;
} item;

#define FAN_SOURCES 3
#define FAN_MAX 4096

typedef struct sink_state {
  uint32_t next[FAN_SOURCES][4]; /* the next sequence expected per source kernel and lane */
  uint32_t got, out_of_order, bad;
} sink_state;

static uint32_t g_source_ids[FAN_SOURCES];

/* source: the host's item goes on to the sink (route 0), stamped with this kernel and lane. */
static int source(rk_ctx *ctx, const rk_msg *in) {
  item it;
  if (rk_msg_len(in) != sizeof it) return RK_EMSGSIZE;
  memcpy(&it, rk_msg_payload(in), sizeof it);
  it.src = rk_self(ctx);
  it.lane = rk_lane(ctx);
  return rk_send_to(ctx, 0, T_ITEM, &it, sizeof it); /* RK_EAGAIN: run again later (the sink's inbox is small) */
}

static int sink(rk_ctx *ctx, const rk_msg *in) {
  sink_state *s = (sink_state *)rk_state(ctx);
  item it;
  uint32_t i;
  if (rk_thread(ctx) != 0) return 0;
  if (rk_msg_len(in) != sizeof it || !(in->env.flags & RK_ENV_F_K2K)) {
    s->bad++;
    return 0;
  }
  memcpy(&it, rk_msg_payload(in), sizeof it);
  for (i = 0; i < FAN_SOURCES && g_source_ids[i] != it.src; i++) {
  }
  if (i == FAN_SOURCES || it.lane >= 4) {
    s->bad++;
    return 0;
  }
  if (it.seq != s->next[i][it.lane]) s->out_of_order++;
  s->next[i][it.lane] = it.seq + 1;
  s->got++;
  return 0;
}

/* Fan-in from three kernels of two lanes each into a sink with a small K2K inbox: nothing lost or
 * duplicated, each source lane's order kept; the graph terminate (upstream first) drains all. */
static void test_fan_in(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel_desc ds = desc_of("source", source, 0), dk = desc_of("sink", sink, sizeof(sink_state));
  uint32_t node[FAN_SOURCES + 1], i, j, n = RT_SANITIZED ? 300 : 3000;
  uint32_t seq[FAN_SOURCES][2];
  sink_state *s;
  (void)state;
  memset(seq, 0, sizeof seq);
  RT_OK(rt, rk_graph_create(rt, &g));
  lo.lanes = 2;
  lo.threads_per_lane = 2;
  /* the sources' inboxes fill (they drain at the sink's pace): the host's sends wait for room, on
   * a loaded machine for longer than the default 1 s */
  lo.send_timeout_ns = RT_HANG;
  for (i = 0; i < FAN_SOURCES; i++) RT_OK(rt, rk_graph_add(g, &ds, &lo, 0, &node[i]));
  lo.lanes = 1;
  RT_OK(rt, rk_graph_add(g, &dk, &lo, 8, &node[FAN_SOURCES]));
  for (i = 0; i < FAN_SOURCES; i++) RT_OK(rt, rk_graph_connect(g, node[i], node[FAN_SOURCES], NULL));
  RT_OK(rt, rk_graph_launch(g));
  for (i = 0; i < FAN_SOURCES; i++) g_source_ids[i] = rk_kernel_id(rk_graph_kernel(g, node[i]));
  RT_OK(rt, rk_graph_activate(g));
  for (j = 0; j < n; j++)
    for (i = 0; i < FAN_SOURCES; i++) {
      item it;
      uint32_t lane = j & 1u; /* keyed: lane = key % 2 */
      memset(&it, 0, sizeof it);
      it.seq = seq[i][lane]++;
      RT_OK(rt, rk_send_key(rk_graph_kernel(g, node[i]), lane, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
    }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  s = (sink_state *)rk_graph_kernel(g, node[FAN_SOURCES])->state;
  assert_int_equal(s->bad, 0);
  assert_int_equal(s->out_of_order, 0);
  assert_int_equal(s->got, n * FAN_SOURCES);
  for (i = 0; i < FAN_SOURCES; i++)
    for (j = 0; j < 2; j++) assert_int_equal(s->next[i][j], seq[i][j]);
  assert_int_equal(rt_stats(rk_graph_kernel(g, node[FAN_SOURCES])).k2k_in, n * FAN_SOURCES);
  rt_graph_no_clock_refusals(g, FAN_SOURCES + 1);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* --------------------------------------------------------------------------------------------- */

/* sender: forwards the host's payload over the route the payload's first word names; answers
 * with the send's result (the host checks each). */
static int sender(rk_ctx *ctx, const rk_msg *in) {
  uint32_t route;
  int32_t rc;
  memcpy(&route, rk_msg_payload(in), sizeof route);
  rc = route == 99 ? rk_publish(ctx, 3, T_ITEM, rk_msg_payload(in), rk_msg_len(in))
                   : rk_send_to(ctx, route, T_ITEM, rk_msg_payload(in), rk_msg_len(in));
  return rk_reply(ctx, T_RESULT, &rc, sizeof rc);
}

typedef struct seen_state {
  uint32_t got, last, out_of_order;
} seen_state;

/* (its state is read by the test while the lane runs: atomics, relaxed; the test waits on them) */
static int counter_sink(rk_ctx *ctx, const rk_msg *in) {
  seen_state *s = (seen_state *)rk_state(ctx);
  uint32_t v[2], got = __atomic_load_n(&s->got, __ATOMIC_RELAXED);
  memcpy(v, rk_msg_payload(in), sizeof v);
  if (got && v[1] != __atomic_load_n(&s->last, __ATOMIC_RELAXED) + 1)
    __atomic_add_fetch(&s->out_of_order, 1, __ATOMIC_RELAXED);
  __atomic_store_n(&s->last, v[1], __ATOMIC_RELAXED);
  __atomic_store_n(&s->got, got + 1, __ATOMIC_RELAXED);
  return 0;
}

#define SEEN(k, field) __atomic_load_n(&((seen_state *)(k)->state)->field, __ATOMIC_RELAXED)

static int32_t send_via(rk_runtime *rt, rk_kernel *k, uint32_t route, uint32_t seq) {
  uint32_t v[2] = {route, seq};
  int32_t rc = 1;
  rk_msg m;
  RT_OK(rt, rk_call(k, T_ITEM, v, sizeof v, &m, &rc, sizeof rc, RT_HANG));
  return rc;
}

/* A full K2K inbox: RK_EAGAIN at once, counted; a retry after the consumer ran succeeds. An
 * unknown route: RK_EINVAL, counted. */
static void test_full_and_unknown(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc dsend = desc_of("sender", sender, 0), dsink = desc_of("sink", counter_sink, sizeof(seen_state));
  uint32_t a, b, i;
  rk_kernel *ka, *kb;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &dsend, NULL, 0, &a));
  RT_OK(rt, rk_graph_add(g, &dsink, NULL, 4, &b));
  RT_OK(rt, rk_graph_connect(g, a, b, NULL));
  RT_OK(rt, rk_graph_launch(g));
  ka = rk_graph_kernel(g, a);
  kb = rk_graph_kernel(g, b);
  RT_OK(rt, rk_kernel_activate(ka)); /* the sink stays inactive: its inbox fills */
  for (i = 0; i < 4; i++) assert_int_equal(send_via(rt, ka, 0, i), RK_OK);
  assert_int_equal(send_via(rt, ka, 0, 4), RK_EAGAIN);
  assert_int_equal(rt_stats(ka).k2k_refused, 1);
  assert_int_equal(send_via(rt, ka, 5, 4), RK_EINVAL); /* no route 5 */
  assert_int_equal(rt_stats(ka).k2k_refused, 2);
  RT_OK(rt, rk_kernel_activate(kb));
  RT_WAIT_STAT(kb, k2k_in, 4);
  assert_int_equal(send_via(rt, ka, 0, 4), RK_OK); /* the retry */
  RT_WAIT_STAT(kb, k2k_in, 5);
  assert_int_equal(SEEN(kb, got), 5);
  assert_int_equal(SEEN(kb, out_of_order), 0);
  assert_int_equal(rt_stats(ka).k2k_out, 5);
  /* a graph member is destroyed with its graph, not alone */
  rk_kernel_destroy(kb);
  assert_int_equal(rk_kernel_state(kb), RK_STATE_ACTIVE);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* Topics: a publisher with two subscribers, one of them slow (inactive, 4-slot inbox): the fast
 * one gets every message in order, the slow one the first 4, the rest counted as its drops; the
 * publisher never blocks. The host publishes too. */
static void test_topics(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc dsend = desc_of("publisher", sender, 0), dsub = desc_of("subscriber", counter_sink, sizeof(seen_state));
  uint32_t p, fast, slow, other, i, n = 50;
  rk_kernel *kp, *kf, *ks;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &dsend, NULL, 0, &p));
  RT_OK(rt, rk_graph_add(g, &dsub, NULL, 64, &fast));
  RT_OK(rt, rk_graph_add(g, &dsub, NULL, 4, &slow));
  RT_OK(rt, rk_graph_add(g, &dsub, NULL, 4, &other)); /* subscribed to another topic */
  RT_OK(rt, rk_graph_subscribe(g, fast, 3));
  RT_OK(rt, rk_graph_subscribe(g, slow, 3));
  RT_OK(rt, rk_graph_subscribe(g, other, 4));
  assert_int_equal(rk_graph_subscribe(g, fast, RK_GRAPH_MAX_TOPICS), RK_EINVAL);
  RT_OK(rt, rk_graph_launch(g));
  kp = rk_graph_kernel(g, p);
  kf = rk_graph_kernel(g, fast);
  ks = rk_graph_kernel(g, slow);
  RT_OK(rt, rk_kernel_activate(kp));
  RT_OK(rt, rk_kernel_activate(kf));
  for (i = 0; i < n; i++) {
    int32_t got = send_via(rt, kp, 99, i);
    assert_int_equal(got, i < 4 ? 2 : 1); /* the slow one's inbox holds 4 */
  }
  RT_WAIT_STAT(kf, k2k_in, n);
  assert_int_equal(SEEN(kf, out_of_order), 0);
  assert_int_equal(rt_stats(ks).k2k_dropped, n - 4);
  assert_int_equal(rt_stats(kf).k2k_dropped, 0);
  assert_int_equal(rt_stats(rk_graph_kernel(g, other)).k2k_in, 0);
  /* the host publishes: the same fan-out */
  {
    uint32_t v[2] = {0, n};
    assert_int_equal(rk_graph_publish(g, 3, T_ITEM, v, sizeof v), 1); /* the slow one is still full */
    assert_int_equal(rk_graph_publish(g, 64, T_ITEM, v, sizeof v), RK_EINVAL);
    assert_int_equal(rk_graph_publish(g, 3, 0, v, sizeof v), RK_EINVAL);
  }
  RT_WAIT_STAT(kf, k2k_in, n + 1);
  assert_int_equal(SEEN(kf, out_of_order), 0);
  RT_OK(rt, rk_kernel_activate(ks));
  RT_WAIT_STAT(ks, k2k_in, 4);
  assert_int_equal(SEEN(ks, out_of_order), 0);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* --------------------------------------------------------------------------------------------- */

/* ping: count down over the route to the other kernel; the one that reaches 0 answers the host's
 * call (made on the first). */
static int ping(rk_ctx *ctx, const rk_msg *in) {
  int64_t v;
  memcpy(&v, rk_msg_payload(in), sizeof v);
  if (v == 0) return rk_reply(ctx, T_RESULT, &v, sizeof v);
  v--;
  return rk_forward(ctx, 0, T_PING, &v, sizeof v);
}

/* A cycle A -> B -> A: a call bounces 2k times between the two and is answered; no deadlock. */
static void test_cycle(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d = desc_of("ping", ping, 0);
  uint32_t a, b, i;
  (void)state;
  g = two_kernels(rt, &d, 0, &d, 0, 1, &a, &b);
  for (i = 0; i < 20; i++) {
    int64_t v = 2 * i + 1, r = -1;
    rk_msg m;
    RT_OK(rt, rk_call(rk_graph_kernel(g, a), T_PING, &v, sizeof v, &m, &r, sizeof r, RT_HANG));
    assert_int_equal(r, 0);
  }
  assert_int_equal(rt_stats(rk_graph_kernel(g, a)).handler_errors, 0);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* The graph API's refusals. */
static void test_graph_refusals(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d = desc_of("ping", ping, 0);
  uint32_t a, b, route;
  (void)state;
  assert_int_equal(rk_graph_create(NULL, &g), RK_EINVAL);
  assert_int_equal(rk_graph_create(rt, NULL), RK_EINVAL);
  RT_OK(rt, rk_graph_create(rt, &g));
  assert_int_equal(rk_graph_launch(g), RK_EINVAL); /* empty */
  assert_int_equal(rk_graph_add(g, NULL, NULL, 0, &a), RK_EINVAL);
  assert_int_equal(rk_graph_add(g, &d, NULL, 3, &a), RK_EINVAL); /* not a power of two */
  assert_non_null(strstr(rk_runtime_last_error(rt), "k2k_capacity"));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &a));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &b));
  assert_int_equal(rk_graph_connect(g, a, a, NULL), RK_EINVAL);
  assert_int_equal(rk_graph_connect(g, a, 7, NULL), RK_EINVAL);
  RT_OK(rt, rk_graph_connect(g, a, b, &route));
  assert_int_equal(rk_graph_connect(g, a, b, NULL), RK_EINVAL); /* exists */
  assert_null(rk_graph_kernel(g, a));                          /* not launched */
  assert_int_equal(rk_graph_activate(g), RK_ESTATE);
  assert_int_equal(rk_graph_terminate(g, RT_HANG), RK_ESTATE);
  RT_OK(rt, rk_graph_launch(g));
  assert_int_equal(rk_graph_launch(g), RK_ESTATE);
  assert_int_equal(rk_graph_connect(g, b, a, NULL), RK_ESTATE); /* resident: no new routes */
  assert_int_equal(rk_graph_add(g, &d, NULL, 0, &a), RK_ESTATE);
  assert_int_equal(rk_graph_subscribe(g, a, 1), RK_ESTATE);
  assert_null(rk_graph_kernel(g, 9));
  {
    int64_t x;
    assert_int_equal(rk_kernel_read_state(rk_graph_kernel(g, a), &x, sizeof x), RK_ESTATE); /* not terminated */
    assert_int_equal(rk_kernel_read_state(NULL, &x, sizeof x), RK_EINVAL);
    assert_int_equal(rk_kernel_read_state(rk_graph_kernel(g, a), NULL, 8), RK_EINVAL);
  }
  rk_graph_destroy(g); /* launched, never activated: terminated and destroyed */
  /* a launch that fails part-way (the second kernel's lanes): nothing stays launched */
  {
    rk_launch_options bad = RK_LAUNCH_OPTIONS_INIT;
    bad.lanes = RK_MAX_LANES + 1;
    RT_OK(rt, rk_graph_create(rt, &g));
    RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &a));
    RT_OK(rt, rk_graph_add(g, &d, &bad, 0, &b));
    RT_OK(rt, rk_graph_connect(g, a, b, NULL));
    RT_OK(rt, rk_graph_subscribe(g, b, 2));
    assert_int_equal(rk_graph_launch(g), RK_EINVAL);
    assert_null(rk_graph_kernel(g, a));
    assert_int_equal(rk_graph_publish(g, 2, T_PING, NULL, 0), RK_ESTATE);
    assert_int_equal(rk_graph_terminate(g, RT_HANG), RK_ESTATE);
    rk_graph_destroy(g);
    d.size = 0;
    RT_OK(rt, rk_graph_create(rt, &g));
    assert_int_equal(rk_graph_add(g, &d, NULL, 0, &a), RK_EINVAL); /* size not set */
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
}

/* A runtime destroyed with a graph on it, messages flowing: the graph goes first, upstream first
 * (the kernels are graph members, which rk_kernel_destroy alone refuses: no hang, no use after
 * free of a K2K inbox under ASan). */
static void test_runtime_destroy_with_graph(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g = pipeline(rt, 2, 1, 3, 8), *empty;
  uint32_t i;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &empty)); /* never used */
  for (i = 0; i < 2000; i++) {
    hop h;
    memset(&h, 0, sizeof h);
    RT_OK(rt, rk_send(rk_graph_kernel(g, 0), T_HOP, &h, sizeof h, RK_SEND_NO_REPLY, NULL));
  }
  rk_kernel_destroy(rk_graph_kernel(g, 1)); /* refused: a member */
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, 1)), RK_STATE_ACTIVE);
  rk_runtime_destroy(rt);
}

/* The graph's terminate drains upstream first: every message the host handed the first stage
 * reaches the last, even with terminate called right after the sends, through K2K inboxes of 4
 * slots (a full one makes the sending handler return RK_EAGAIN and run again later). */
static void test_terminate_drains(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g = pipeline(rt, 2, 1, 3, 4); /* 4-slot K2K inboxes: full often */
  uint32_t i, n = RT_SANITIZED ? 500 : 5000;
  (void)state;
  for (i = 0; i < n; i++) {
    hop h;
    memset(&h, 0, sizeof h);
    RT_OK(rt, rk_send(rk_graph_kernel(g, 0), T_HOP, &h, sizeof h, RK_SEND_NO_REPLY, NULL));
  }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  assert_int_equal(*(int64_t *)rk_graph_kernel(g, 2)->state, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 2)).k2k_in, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 1)).k2k_in, n);
  /* full inboxes made handlers run again (RK_EAGAIN), never an error or a loss */
  assert_int_equal(rt_stats(rk_graph_kernel(g, 0)).handler_errors, 0);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 1)).handler_errors, 0);
  rt_graph_no_clock_refusals(g, 3);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* The same stage given as source text (compiled by the system C compiler at launch): a run-time
 * kernel sends over K2K like a compiled one. The middle of three stages is the source twin. */
static const char stage_src[] =
    "typedef struct hop { int64_t value; uint32_t hops; uint32_t pad; rk_hlc seen[4]; } hop;\n"
    "RK_HANDLER(stage_src)(rk_ctx *ctx, const rk_msg *in) {\n"
    "  hop h;\n"
    "  int rc;\n"
    "  if (rk_msg_len(in) != sizeof h) return RK_EMSGSIZE;\n"
    "  memcpy(&h, rk_msg_payload(in), sizeof h);\n"
    "  if (h.hops < 4) h.seen[h.hops] = in->env.hlc;\n"
    "  h.hops++;\n"
    "  h.value = h.value * 2 + 1;\n"
    "  rc = rk_forward(ctx, 0, 300, &h, sizeof h);\n"
    "  return rc;\n"
    "}\n";

static void test_source_stage(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d0 = desc_of("first", stage, 0), d2 = desc_of("last", stage, sizeof(int64_t)), d1;
  uint32_t n[3], i;
  char log[256];
  (void)state;
  memset(&d1, 0, sizeof d1);
  d1.size = sizeof d1;
  d1.name = "middle";
  d1.source = stage_src;
  d1.source_handler = "stage_src";
  if (rk_kernel_compile(rt, &d1, log, sizeof log) == RK_ENOTSUP) { /* no C compiler here */
    rk_runtime_destroy(rt);
    skip();
  }
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &d0, NULL, 0, &n[0]));
  RT_OK(rt, rk_graph_add(g, &d1, NULL, 0, &n[1]));
  RT_OK(rt, rk_graph_add(g, &d2, NULL, 0, &n[2]));
  RT_OK(rt, rk_graph_connect(g, n[0], n[1], NULL));
  RT_OK(rt, rk_graph_connect(g, n[1], n[2], NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  for (i = 0; i < 100; i++) {
    hop h, r;
    rk_msg m;
    memset(&h, 0, sizeof h);
    h.value = i;
    RT_OK(rt, rk_call(rk_graph_kernel(g, n[0]), T_HOP, &h, sizeof h, &m, &r, sizeof r, RT_HANG));
    assert_int_equal(r.hops, 3);
    assert_int_equal(r.value, ((int64_t)i * 2 + 1) * 4 + 3);
    assert_true(r.seen[1] > r.seen[0] && r.seen[2] > r.seen[1]);
  }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  {
    int64_t count = 0;
    assert_int_equal(rk_kernel_read_state(rk_graph_kernel(g, n[2]), &count, sizeof count), (int)sizeof count);
    assert_int_equal(count, 100);
  }
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}


/* ------------------------------------------ review13 ------------------------------------------ */

/* Replies that come back while the first stage's host batch is retrying (RK_EAGAIN: the next
 * stage's K2K inbox full): the first stage must still drain its own K2K inbox, or the last stage,
 * whose rk_reply finds that inbox full, retries too and neither moves (a deadlock). Requests that
 * want replies, through 2-slot K2K inboxes, sent faster than the pipeline answers. */
static void test_retry_does_not_starve_replies(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g = pipeline(rt, 1, 1, 2, 2);
  rk_kernel *first = rk_graph_kernel(g, 0);
  uint32_t i, n = 200, got = 0;
  (void)state;
  for (i = 0; i < n; i++) {
    hop h;
    memset(&h, 0, sizeof h);
    h.value = i;
    RT_OK(rt, rk_send(first, T_HOP, &h, sizeof h, 0, NULL)); /* wants a reply */
  }
  for (got = 0; got < n; got++) {
    rk_msg m;
    hop r;
    int rc = rk_recv(first, &m, &r, sizeof r, 5 * RT_SEC);
    if (rc != RK_OK) break;
    assert_int_equal(m.env.flags & RK_ENV_F_ERROR, 0);
  }
  assert_int_equal(got, n);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* Topics in the graph terminate: a subscriber with no route into it (added first) must not be
 * terminated before the kernels that publish to it have drained, or what they publish while
 * draining is lost (its K2K inbox closed). */
static int slow_publisher(rk_ctx *ctx, const rk_msg *in) {
  rt_sleep_ms(1);
  return rk_publish(ctx, 5, T_ITEM, rk_msg_payload(in), rk_msg_len(in)) == 1 ? 0 : RK_EAGAIN;
}

static void test_terminate_topics_lose_nothing(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc dsub = desc_of("subscriber", counter_sink, sizeof(seen_state)),
                 dpub = desc_of("publisher", slow_publisher, 0);
  uint32_t sub, pub, i, n = 200;
  seen_state s;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &dsub, NULL, 1024, &sub));
  RT_OK(rt, rk_graph_add(g, &dpub, NULL, 0, &pub));
  RT_OK(rt, rk_graph_subscribe(g, sub, 5));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  for (i = 0; i < n; i++) {
    uint32_t v[2] = {0, i};
    RT_OK(rt, rk_send(rk_graph_kernel(g, pub), T_ITEM, v, sizeof v, RK_SEND_NO_REPLY, NULL));
  }
  (void)rk_graph_terminate(g, 5 * RT_SEC);
  assert_int_equal(rk_kernel_read_state(rk_graph_kernel(g, sub), &s, sizeof s), (int)sizeof s);
  assert_int_equal(s.got, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, pub)).handler_errors, 0);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

static int either_faulted(void *arg) {
  rk_graph *g = (rk_graph *)arg;
  return rk_kernel_state(rk_graph_kernel(g, 0)) == RK_STATE_FAULTED ||
         rk_kernel_state(rk_graph_kernel(g, 1)) == RK_STATE_FAULTED;
}

/* A cycle whose K2K inboxes fill with messages for each other: every lane retries a send into the
 * next one's full inbox, and none can make room. Bounded inboxes cannot resolve that; the library
 * must not hang silently: the lanes find the cycle (each waits on the next, nothing finishes) and
 * fault their kernels with RK_EDEADLK, naming it, so callers learn it; terminate gets out.
 * (review13 found it: 0 of 64 answered, every lane retrying for ever.) */
static void test_cycle_many_in_flight(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d = desc_of("ping", ping, 0);
  uint32_t a, b, i, n = 64;
  char why[512];
  rk_kernel *k;
  rk_msg m;
  int64_t r;
  int rc;
  (void)state;
  g = two_kernels(rt, &d, 2, &d, 2, 1, &a, &b);
  for (i = 0; i < n; i++) {
    int64_t v = 41;
    RT_OK(rt, rk_send(rk_graph_kernel(g, a), T_PING, &v, sizeof v, 0, NULL));
  }
  if (!rt_wait_for(either_faulted, g, RT_HANG)) fail_msg("a deadlocked K2K cycle was not detected");
  k = rk_kernel_state(rk_graph_kernel(g, a)) == RK_STATE_FAULTED ? rk_graph_kernel(g, a) : rk_graph_kernel(g, b);
  assert_int_equal(rk_kernel_error(k, why, sizeof why), RK_EDEADLK);
  assert_non_null(strstr(why, "K2K deadlock"));
  assert_non_null(strstr(why, "ping lane 0 -> ping lane 0"));
  /* the faulted kernel's receivers learn it now, not at their timeout */
  rc = rk_recv(k, &m, &r, sizeof r, RT_HANG);
  while (rc == RK_OK) rc = rk_recv(k, &m, &r, sizeof r, RT_HANG); /* answers that made it out before */
  assert_true(rc == RK_ESTATE || rc == RK_EDEADLK || rc == RK_ECLOSED);
  (void)rk_graph_terminate(g, 200 * RT_MS); /* aborts the retrying lanes */
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* rk_graph_destroy when a kernel's handler does not return in time (terminate times out, the
 * lanes are abandoned): the handler, once it returns to its work, still sends to the next kernel,
 * whose K2K inbox and kernel must not have been freed under it (ASan: heap-use-after-free). */
#define T_SLOW 304u
static int slow_sender(rk_ctx *ctx, const rk_msg *in) {
  uint32_t v[2] = {0, 0};
  (void)in;
  rt_sleep_ms(3000); /* well past the graph destroy's terminate (1 s) and its graces (~1.2 s) */
  (void)rk_send_to(ctx, 0, T_ITEM, v, sizeof v);
  (void)rk_publish(ctx, 1, T_ITEM, v, sizeof v);
  return 0;
}

static rk_graph *g_leaked_graph;

static void test_destroy_with_stuck_handler(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc ds = desc_of("stuck", slow_sender, 0), dk = desc_of("sink", counter_sink, sizeof(seen_state));
  uint32_t a, b;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, &a));
  RT_OK(rt, rk_graph_add(g, &dk, NULL, 0, &b));
  RT_OK(rt, rk_graph_connect(g, a, b, NULL));
  RT_OK(rt, rk_graph_subscribe(g, b, 1));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  RT_OK(rt, rk_send(rk_graph_kernel(g, a), T_SLOW, NULL, 0, RK_SEND_NO_REPLY, NULL));
  rt_sleep_ms(50); /* the handler is running */
  g_leaked_graph = g; /* left allocated by the destroy (its kernel is stuck): still reachable for LSan */
  rk_graph_destroy(g);
  rt_sleep_ms(2500); /* the handler returns to its sends (ASan/TSan: nothing it reaches is freed) */
  rk_runtime_destroy(rt);
}

/* Two kernels stuck at the destroy: the one whose handler returns first was freed by its last
 * lane thread (abandoned) while the other's handler, returning later, sent into its K2K inbox
 * (ASan: heap-use-after-free). With two or more stuck, every kernel is left allocated. */
static int slow_quiet(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx;
  (void)in;
  rt_sleep_ms(3000); /* past the destroy's terminate and graces; returns first */
  return 0;
}
static int slower_sender(rk_ctx *ctx, const rk_msg *in) {
  uint32_t v[2] = {0, 0};
  (void)in;
  rt_sleep_ms(3600); /* returns after the other one did */
  (void)rk_send_to(ctx, 0, T_ITEM, v, sizeof v);
  return 0;
}

static rk_graph *g_leaked_graph2;

static void test_destroy_with_two_stuck_handlers(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d1 = desc_of("stuck first", slow_quiet, 0), d2 = desc_of("stuck later", slower_sender, 0);
  uint32_t x1, x2;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &d1, NULL, 0, &x1));
  RT_OK(rt, rk_graph_add(g, &d2, NULL, 0, &x2));
  RT_OK(rt, rk_graph_connect(g, x2, x1, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  RT_OK(rt, rk_send(rk_graph_kernel(g, x1), T_SLOW, NULL, 0, RK_SEND_NO_REPLY, NULL));
  RT_OK(rt, rk_send(rk_graph_kernel(g, x2), T_SLOW, NULL, 0, RK_SEND_NO_REPLY, NULL));
  rt_sleep_ms(50); /* both handlers are running */
  g_leaked_graph2 = g; /* left allocated by the destroy: still reachable for LSan */
  rk_graph_destroy(g);
  rt_sleep_ms(2000); /* both handlers return, the later one sends to the first one's kernel */
  rk_runtime_destroy(rt);
}

/* An error answer (a handler's negative code) to a forwarded request travels back over K2K like
 * a reply: when the origin's K2K inbox is full at that moment it must not be dropped, or the
 * host's call never gets an answer and the origin's terminate waits for it (owed). */
static int refuse(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx;
  (void)in;
  return RK_EINVAL;
}

static void test_error_answers_not_lost(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d0 = desc_of("first", stage, 0), d1 = desc_of("refuser", refuse, 0);
  uint32_t a, b, i, n = 300, got, errors = 0;
  (void)state;
  /* the answers come back through 2 slots */
  g = two_kernels(rt, &d0, 2, &d1, 256, 0, &a, &b);
  for (i = 0; i < n; i++) {
    hop h;
    memset(&h, 0, sizeof h);
    RT_OK(rt, rk_send(rk_graph_kernel(g, a), T_HOP, &h, sizeof h, 0, NULL));
  }
  for (got = 0; got < n; got++) {
    rk_msg m;
    int32_t code = 0;
    int rc = rk_recv(rk_graph_kernel(g, a), &m, &code, sizeof code, RT_HANG); /* a lost one never comes */
    if (rc != RK_OK) {
      rk_kernel_counters sa = rt_stats(rk_graph_kernel(g, a)), sb = rt_stats(rk_graph_kernel(g, b));
      fail_msg("answer %u of %u: rk_recv = %s (%s); first: %s, msgs_in %llu, k2k_out %llu, k2k_in %llu, msgs_out "
               "%llu, k2k_refused %llu, inbox %llu; refuser: %s, k2k_in %llu, k2k_out %llu, k2k_refused %llu, "
               "handler_errors %llu", got, n, rk_err_name(rc), rk_runtime_last_error(rt), rk_state_name(sa.state),
               (unsigned long long)sa.msgs_in, (unsigned long long)sa.k2k_out, (unsigned long long)sa.k2k_in,
               (unsigned long long)sa.msgs_out, (unsigned long long)sa.k2k_refused,
               (unsigned long long)sa.inbox_depth[0], rk_state_name(sb.state), (unsigned long long)sb.k2k_in,
               (unsigned long long)sb.k2k_out, (unsigned long long)sb.k2k_refused,
               (unsigned long long)sb.handler_errors);
    }
    if ((m.env.flags & RK_ENV_F_ERROR) && code == RK_EINVAL) errors++;
  }
  assert_int_equal(got, n);
  assert_int_equal(errors, n);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG)); /* nothing owed is missing (a missing one: RK_ETIMEDOUT) */
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* A restart of the first stage while a request it passed on is still being answered downstream:
 * the lane still owes that answer (the request is alive), so its terminate must wait for it and
 * publish it, not close its K2K inbox at once (the answer refused: RK_ECLOSED, the call lost). */
static int slow_answer(rk_ctx *ctx, const rk_msg *in) {
  rt_sleep_ms(600); /* the restart and the terminate happen meanwhile */
  return rk_reply(ctx, T_RESULT, rk_msg_payload(in), rk_msg_len(in));
}

static void test_restart_keeps_owed(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d0 = desc_of("first", stage, 0), d1 = desc_of("slow", slow_answer, 0);
  uint32_t a, b;
  rk_kernel *ka;
  hop h;
  rk_msg m;
  hop r;
  (void)state;
  g = two_kernels(rt, &d0, 0, &d1, 0, 0, &a, &b);
  ka = rk_graph_kernel(g, a);
  memset(&h, 0, sizeof h);
  RT_OK(rt, rk_send(ka, T_HOP, &h, sizeof h, 0, NULL));
  RT_WAIT_STAT(ka, k2k_out, 1); /* passed on: the slow stage is answering it */
  rk__kernel_fault(ka, RK_EHANDLER, "test: a fault to restart from");
  RT_OK(rt, rk_kernel_restart(ka, 0));
  /* hang checks (not 3 s and 1 s: at load 50 on 2 cores the terminate took longer than 3 s) */
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  RT_OK(rt, rk_recv(ka, &m, &r, sizeof r, RT_HANG)); /* the answer was published */
  assert_int_equal(m.env.type, T_RESULT);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* A kernel whose terminate timed out (its handler still running) takes no more K2K messages:
 * sends to it get RK_ECLOSED (counted), rather than being queued for no one. */
static void test_send_to_timed_out_kernel(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc dsend = desc_of("sender", sender, 0), dheld = desc_of("held", rt_held, 0);
  uint32_t a, b;
  rk_kernel *kb;
  (void)state;
  g = two_kernels(rt, &dsend, 0, &dheld, 0, 0, &a, &b);
  kb = rk_graph_kernel(g, b);
  rt_hold_close();
  assert_int_equal(send_via(rt, rk_graph_kernel(g, a), 0, 1), RK_OK); /* b's handler now holds */
  if (!rt_wait_for(rt_held_entered, NULL, RT_HANG)) fail_msg("the held handler never ran");
  assert_int_equal(rk_kernel_terminate(kb, 50 * RT_MS), RK_ETIMEDOUT); /* lanes still running */
  assert_int_equal(send_via(rt, rk_graph_kernel(g, a), 0, 2), RK_ECLOSED);
  assert_true(rt_stats(rk_graph_kernel(g, a)).k2k_refused >= 1);
  rt_hold_open();
  RT_OK(rt, rk_kernel_terminate(kb, RT_HANG)); /* the handler returned: the lanes leave */
  assert_int_equal(send_via(rt, rk_graph_kernel(g, a), 0, 3), RK_ECLOSED);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* rk_graph_terminate reports the first kernel's failure with its text: the kernels after it start
 * their own terminate by clearing the thread's last error, which left the graph's RK_ETIMEDOUT
 * with rk_runtime_last_error "no error" (seen in an MPI test under load). The held handler
 * (rt_held) does not return until the test lets it: the first kernel's terminate times out, the sink's succeeds. */
static void test_terminate_keeps_first_error(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc ds = desc_of("held", rt_held, 0), dk = desc_of("sink", counter_sink, sizeof(seen_state));
  uint32_t a, b;
  int rc;
  (void)state;
  rt_hold_close();
  g = two_kernels(rt, &ds, 0, &dk, 0, 0, &a, &b);
  RT_OK(rt, rk_send(rk_graph_kernel(g, a), T_SLOW, NULL, 0, RK_SEND_NO_REPLY, NULL));
  assert_true(rt_wait_for(rt_held_entered, NULL, RT_HANG)); /* the handler is running */
  /* 1 s: the held kernel's times out (whatever the bound), the sink's does not. Each kernel's
   * terminate has the whole bound (rk_graph_terminate); the sink's lane must leave within it plus
   * the abort grace, and at 100 ms a loaded machine may not have run it by then (FAULTED). */
  rc = rk_graph_terminate(g, RT_SEC);
  assert_int_equal(rc, RK_ETIMEDOUT);
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, b)), RK_STATE_TERMINATED); /* went on after it */
  assert_non_null(strstr(rk_runtime_last_error(rt), "terminate timed out"));
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk_graph_terminate: node 0 (held)"));
  rt_hold_open();
  RT_OK(rt, rk_graph_terminate(g, RT_HANG)); /* the lanes leave now */
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, a)), RK_STATE_TERMINATED);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* A K2K reply whose origin is another kernel (a damaged or misrouted envelope): refused, counted
 * in k2k_invalid, kept as a dead letter; the lane goes on. */
static void test_misrouted_reply(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_kernel_desc d = desc_of("ping", ping, 0);
  uint32_t a, b;
  rk_kernel *k;
  rk_envelope e;
  rk_dead_letter dl[2];
  uint64_t total = 0;
  (void)state;
  g = two_kernels(rt, &d, 0, &d, 0, 0, &a, &b);
  k = rk_graph_kernel(g, a);
  rk_envelope_init(&e, T_RESULT, 0, (uint16_t)(RK_ENV_F_K2K | RK_ENV_F_REPLY));
  e.src = rk_kernel_id(rk_graph_kernel(g, b));
  e.dst = rk_kernel_id(k);
  e.origin = rk_kernel_id(k) + 100; /* not a's */
  e.correlation_id = 42;
  RT_OK(rt, rk__k2k_push(k, 0, &e, NULL, 0));
  RT_WAIT_STAT(k, k2k_invalid, 1);
  assert_int_equal(rk_kernel_dead_letters(k, dl, 2, &total), 1);
  assert_int_equal(dl[0].reason, RK_ECORRUPT);
  assert_int_equal(dl[0].env.correlation_id, 42);
  assert_int_equal(rt_stats(k).msgs_out, 0); /* nothing reached the host */
  { /* and the kernel still works (0: a answers itself) */
    int64_t v = 0, r = -1;
    rk_msg m;
    RT_OK(rt, rk_call(k, T_PING, &v, sizeof v, &m, &r, sizeof r, RT_HANG));
    assert_int_equal(r, 0);
  }
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* A graph across two CPU runtimes of one process (rk_graph_add_on): the pipeline's middle stage on
 * the second runtime; every request answered by the last stage once, stamps growing along the path
 * across the runtimes; the second runtime's destroy takes the graph with it. */
static void test_two_runtimes(void **state) {
  rk_runtime *rt = rt_create(), *rt2 = rt_create();
  rk_graph *g;
  rk_kernel_desc d0 = desc_of("parse", stage, sizeof(int64_t)), d1 = desc_of("enrich", stage, sizeof(int64_t)),
                 d2 = desc_of("aggregate", stage, sizeof(int64_t));
  uint32_t i, node, n = RT_SANITIZED ? 200 : 2000;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &d0, NULL, 0, &node));
  assert_int_equal(rk_graph_add_on(g, rt, &d1, NULL, 0, &node), RK_EINVAL); /* its own runtime */
  assert_int_equal(rk_graph_add_on(g, NULL, &d1, NULL, 0, &node), RK_EINVAL);
  RT_OK(rt, rk_graph_add_on(g, rt2, &d1, NULL, 0, &node));
  assert_int_equal(node, 1);
  RT_OK(rt, rk_graph_add(g, &d2, NULL, 0, &node));
  RT_OK(rt, rk_graph_connect(g, 0, 1, NULL));
  RT_OK(rt, rk_graph_connect(g, 1, 2, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  assert_ptr_equal(rk_graph_kernel(g, 1)->rt, rt2);
  assert_int_not_equal(rk_graph_kernel(g, 1)->id, rk_graph_kernel(g, 0)->id); /* ids: per runtime, distinct here */
  assert_int_not_equal(rk_graph_kernel(g, 1)->id, rk_graph_kernel(g, 2)->id);
  for (i = 0; i < n; i++) {
    hop h, r;
    rk_msg m;
    rk_hlc before = rk_clock_peek(rk_runtime_clock(rt));
    memset(&h, 0, sizeof h);
    h.value = i;
    RT_OK(rt, rk_call(rk_graph_kernel(g, 0), T_HOP, &h, sizeof h, &m, &r, sizeof r, RT_HANG));
    assert_int_equal(r.hops, 3);
    assert_int_equal(r.value, ((int64_t)i * 2 + 1) * 4 + 3);
    assert_true(r.seen[0] > before);
    assert_true(r.seen[1] > r.seen[0]); /* merged by the stage on the other runtime */
    assert_true(r.seen[2] > r.seen[1]); /* and back */
    assert_true(m.env.hlc > r.seen[2]);
  }
  assert_int_equal(rt_stats(rk_graph_kernel(g, 1)).k2k_in, n);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  assert_int_equal(*(int64_t *)rk_graph_kernel(g, 2)->state, n);
  rk_runtime_destroy(rt2); /* destroys the graph, which has a kernel on it (logged) */
  assert_null(rt->graphs);
  assert_null(rt->kernels);
  rk_runtime_destroy(rt);
}

/* Both runtimes of a two-runtime graph destroyed at once, each from its own thread (review of
 * issue 15: the graph's destroy on one thread used the other runtime after that one was freed,
 * and both threads could destroy the graph). Exactly one destroys it; the other waits for it. */
static volatile int cd_go;
static void *cd_destroy(void *arg) {
  while (!__atomic_load_n(&cd_go, __ATOMIC_ACQUIRE)) {
  }
  rk_runtime_destroy((rk_runtime *)arg);
  return NULL;
}
static void test_concurrent_runtime_destroy(void **state) {
  int it;
  (void)state;
  for (it = 0; it < 20; it++) {
    rk_runtime *rt = rt_create(), *rt2 = rt_create();
    rk_graph *g;
    rk_kernel_desc d0 = desc_of("parse", stage, sizeof(int64_t)), d1 = desc_of("enrich", stage, sizeof(int64_t));
    uint32_t node;
    pthread_t t1, t2;
    RT_OK(rt, rk_graph_create(rt, &g));
    RT_OK(rt, rk_graph_add(g, &d0, NULL, 0, &node));
    RT_OK(rt, rk_graph_add_on(g, rt2, &d1, NULL, 0, &node));
    RT_OK(rt, rk_graph_connect(g, 0, 1, NULL));
    RT_OK(rt, rk_graph_connect(g, 1, 0, NULL));
    RT_OK(rt, rk_graph_launch(g));
    RT_OK(rt, rk_graph_activate(g));
    __atomic_store_n(&cd_go, 0, __ATOMIC_RELAXED);
    /* (the order of the two threads' starts alternates) */
    assert_int_equal(pthread_create(&t1, NULL, cd_destroy, it & 1 ? rt2 : rt), 0);
    assert_int_equal(pthread_create(&t2, NULL, cd_destroy, it & 1 ? rt : rt2), 0);
    __atomic_store_n(&cd_go, 1, __ATOMIC_RELEASE);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
  }
}

/* Position of node x in the graph's terminate order. */
static uint32_t order_pos(const rk_graph *g, uint32_t x) {
  uint32_t ord[16], n = rk__graph_order(g, ord, 16), i;
  for (i = 0; i < n && i < 16; i++)
    if (ord[i] == x) return i;
  fail_msg("node %u is not in the order", x);
  return 0;
}

/* The terminate order, upstream first, with cycles: a kernel downstream of a cycle closes after
 * the cycle (it came first when added first: what the cycle sent it while draining was lost),
 * and topic subscriptions (which tie two kernels with different topics both ways) do not
 * override a route: a pipeline a -> b added b first closes a, then b. */
static void test_terminate_order_with_cycles(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("n", rk_builtin_echo.handler);
  rk_graph *g;
  uint32_t a, b, c, x, y;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &c)); /* downstream, added first */
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &a));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &b));
  RT_OK(rt, rk_graph_connect(g, a, b, NULL));
  RT_OK(rt, rk_graph_connect(g, b, a, NULL));
  RT_OK(rt, rk_graph_connect(g, a, c, NULL));
  RT_OK(rt, rk_graph_launch(g));
  assert_true(order_pos(g, a) < order_pos(g, c));
  assert_true(order_pos(g, b) < order_pos(g, c));
  assert_int_equal(rk_graph_terminate(g, RT_HANG), RK_OK);
  rk_graph_destroy(g);
  /* topics: x{topic 1} -> y{topic 2}, y added first */
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &y));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &x));
  RT_OK(rt, rk_graph_subscribe(g, x, 1));
  RT_OK(rt, rk_graph_subscribe(g, y, 2));
  RT_OK(rt, rk_graph_connect(g, x, y, NULL));
  RT_OK(rt, rk_graph_launch(g));
  assert_true(order_pos(g, x) < order_pos(g, y));
  assert_int_equal(rk_graph_terminate(g, RT_HANG), RK_OK);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reply_from_last_stage),
      cmocka_unit_test(test_two_runtimes),
      cmocka_unit_test(test_terminate_order_with_cycles),
      cmocka_unit_test(test_concurrent_runtime_destroy),
      cmocka_unit_test(test_fan_in),
      cmocka_unit_test(test_full_and_unknown),
      cmocka_unit_test(test_topics),
      cmocka_unit_test(test_cycle),
      cmocka_unit_test(test_graph_refusals),
      cmocka_unit_test(test_terminate_drains),
      cmocka_unit_test(test_source_stage),
      cmocka_unit_test(test_retry_does_not_starve_replies),
      cmocka_unit_test(test_terminate_topics_lose_nothing),
      cmocka_unit_test(test_runtime_destroy_with_graph),
      cmocka_unit_test(test_cycle_many_in_flight),
      cmocka_unit_test(test_destroy_with_stuck_handler),
      cmocka_unit_test(test_destroy_with_two_stuck_handlers),
      cmocka_unit_test(test_terminate_keeps_first_error),
      cmocka_unit_test(test_error_answers_not_lost),
      cmocka_unit_test(test_restart_keeps_owed),
      cmocka_unit_test(test_send_to_timed_out_kernel),
      cmocka_unit_test(test_misrouted_reply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
