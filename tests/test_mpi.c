/* test_mpi.c — K2K routes between MPI ranks (librk_mpi), run under mpirun: one scenario per run,
 * named by argv[1] (tests/mpi.cmake registers each with its number of ranks and a time limit).
 *
 *   pipeline      parse -> enrich -> aggregate spread over the ranks (2 or 3); rk_call on parse
 *                 is answered by aggregate on the last rank, the reply back over the bridge; the
 *                 stamps grow along the path across ranks
 *   fan_in        ranks 1..n-1 stream to one kernel of rank 0: per-source order, exactly once
 *   backpressure  a tiny remote inbox whose consumer is held: rk_send_to gets RK_EAGAIN on the
 *                 sending rank, what crossed is bounded by the credits, then everything arrives
 *   order         10^6 messages rank 0 -> rank 1: order and exactly-once
 *   keyed         rk_send_to_key over a remote route: every key reaches the remote lane it picks
 *                 (key % lanes of the remote kernel), in order per key
 *   launch        a rank that never launches its graph: rk_graph_launch on the other fails with
 *                 RK_ETIMEDOUT naming it, within start_timeout_ns; a remote node naming a kernel its
 *                 rank does not have fails the launch with RK_EINVAL, saying which; so do ranks
 *                 whose bridges' batch_bytes differ
 *   comm_reuse    a bridge's communicator is freed only once its peers' last messages are in: rank
 *                 0's launch fails after the handshake while rank 1's bridge runs and keeps
 *                 talking to it; then a second pair of bridges (their MPI_Comm_dup gets the same
 *                 context id): a stream from rank 1 to rank 0 arrives whole, no peer closed or lost
 *   arguments     bad arguments to the bridge's functions, and its small queries
 *   hlc_skew      rank 1's clock 200 ms behind: causality holds across the ranks (receive rule);
 *                 then 2 s ahead (beyond the 500 ms maximum offset): rank 0 refuses its stamps
 *   teardown      rank 0 destroys its bridge mid-stream, before its graph: every accepted send is
 *                 counted (sent or dropped), rank 1 receives all that was sent before the bye
 *   refused       a forwarded request whose stamp rank 1 refuses is dead-lettered there and
 *                 answered (RK_ECLOCK): the host's call returns, terminate is prompt and says so
 *   idle          the idle bridge sleeps (its sleeps counter grows while nothing moves, on both
 *                 ranks), and a local send wakes a sleeping bridge through its outbound ring's
 *                 futex (woken) instead of waiting for its timeout; every message arrives, in order
 *   cycle         each rank's kernel sends to the next rank's, the last to rank 0 (2 or 3 ranks),
 *                 32 messages per rank on 2-slot inboxes: the cycle fills and cannot move; the
 *                 bridges' probes find it and every kernel faults with RK_EDEADLK naming it;
 *                 terminate returns
 *   slow_chain    front (0) -> middle (1) -> sink (0), the sink's handler slow: the routes fill, the
 *                 lanes wait long enough to be probed for, and nothing faults (backpressure is no
 *                 cycle)
 *   rank_killed   rank 1 kills itself (SIGKILL) mid-stream: rank 0 sees the peer lost, its sends
 *                 get RK_ECLOSED, terminate and destroy return promptly; rank 0 then leaves
 *                 without MPI_Finalize (Open MPI 4.1 cannot finalize with a dead rank)
 *   owed_lost     rank 0's kernel passed a host call on to rank 1, which dies holding it: the
 *                 bridge answers the call with RK_ECLOSED, the kernel's terminate finishes
 *   owed_closed   the same with rank 1 closing its bridge, rank 0's terminate already waiting
 *   owed_late     three ranks, front -> mid -> back answering front directly; rank 1 closes its
 *                 bridge while back holds the request: rank 1 told rank 0 the request went on to
 *                 rank 2, so the close answers nothing and the caller gets back's real answer
 *   owed_clock, owed_destroy, owed_stopstaged, owed_hol, owed_moved: the owed-answer leftovers
 *                 of the review of issue15-owed (each described at its function)
 *   hello         a peer's handshake with a payload limit no batch can carry (near 2^32):
 *                 the launch refuses it with RK_EINVAL, saying so */
#include "rt_util.h"

#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <ringkernel/mpi.h>

#include "mpi_util.h"

#define T_HOP 300u
#define T_ITEM 301u
#define T_RESULT 302u
#define T_PING 303u
#define T_PONG 304u

static int g_rank, g_size;
static const char *g_scenario;

/* ---------------------------------------- common --------------------------------------------- */

static rk_mpi_bridge *bridge_on(rk_runtime *rt, rk_graph *g, const rk_mpi_options *o) {
  rk_mpi_bridge *b = NULL;
  rk_mpi_options patient = mpi_patient_options(o);
  RT_OK(rt, rk_mpi_bridge_create(g, MPI_COMM_WORLD, &patient, &b));
  assert_non_null(b);
  assert_int_equal(rk_mpi_bridge_rank(b), (uint32_t)g_rank);
  assert_int_equal(rk_mpi_bridge_ranks(b), (uint32_t)g_size);
  return b;
}

/* A new graph *g with its bridge *b (options o; NULL: the defaults), p's two-rank graph on it
 * (mpi_pair_graph_mine: *me is this rank's own kernel). With hold, rank 1's kernel is deactivated
 * once active: it holds what it is sent (a request delivered to it is not answered) until it is
 * activated again. No barrier. */
static void pair_graph_on(rk_runtime *rt, rk_graph **g, rk_mpi_bridge **b, const rk_mpi_options *o, const mpi_pair *p,
                          int hold, uint32_t *me) {
  uint32_t other = 0;
  RT_OK(rt, rk_graph_create(rt, g));
  *b = bridge_on(rt, *g, o);
  mpi_pair_graph_mine(rt, *g, g_rank, p, me, &other);
  if (hold && g_rank == 1) RT_OK(rt, rk_kernel_deactivate(rk_graph_kernel(*g, *me)));
}

/* Upstream ranks first: rank r terminates its graph once ranks < r have (what they sent is in
 * rank r's inboxes by then: their remote nodes' flush waited for the credits). */
static void terminate_in_rank_order(rk_runtime *rt, rk_graph *g) {
  int r;
  for (r = 0; r < g_size; r++) {
    if (r == g_rank) RT_OK(rt, rk_graph_terminate(g, RT_HANG));
    barrier();
  }
}

static void finish(rk_runtime *rt, rk_graph *g, rk_mpi_bridge *b) {
  rk_graph_destroy(g);
  rk_mpi_bridge_destroy(b);
  rk_runtime_destroy(rt);
  barrier();
}

/* ---------------------------------------- pipeline ------------------------------------------- */

typedef struct hop {
  int64_t value;
  uint32_t hops;
  uint32_t ranks; /* bit r: a stage on rank r saw it */
  rk_hlc seen[4];
} hop;

static volatile int64_t g_answered;

static int stage(rk_ctx *ctx, const rk_msg *in) {
  hop h;
  int rc;
  if (rk_msg_len(in) != sizeof h) return RK_EMSGSIZE;
  memcpy(&h, rk_msg_payload(in), sizeof h);
  if (h.hops < 4) h.seen[h.hops] = in->env.hlc;
  h.hops++;
  h.ranks |= 1u << g_rank;
  h.value = h.value * 2 + 1;
  rc = rk_forward(ctx, 0, T_HOP, &h, sizeof h);
  if (rc == RK_EINVAL) { /* no route: the last stage */
    __atomic_add_fetch(&g_answered, 1, __ATOMIC_RELAXED);
    return rk_reply(ctx, T_RESULT, &h, sizeof h);
  }
  return rc;
}

/* Stage s of three runs on rank s * size / 3: with 2 ranks parse and enrich on 0, aggregate on 1;
 * with 3 ranks one each. Every rank that does not hold parse has it as a remote node: the reply
 * of the last stage goes back to it (its origin) over the bridge. */
static void test_pipeline(void **state) {
  static const char *names[3] = {"parse", "enrich", "aggregate"};
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t node[3], s, n = RT_SANITIZED ? 200 : 2000, i;
  int where[3];
  rk_kernel_desc d[3];
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, NULL);
  for (s = 0; s < 3; s++) where[s] = (int)(s * (uint32_t)g_size / 3);
  for (s = 0; s < 3; s++) {
    d[s] = rt_desc(names[s], stage);
    if (where[s] == g_rank)
      RT_OK(rt, rk_graph_add(g, &d[s], NULL, 0, &node[s]));
    else if (s == 0 || where[s - 1] == g_rank) /* the origin, or the next stage of a local one */
      RT_OK(rt, rk_graph_add_remote(g, (uint32_t)where[s], names[s], 0, &node[s]));
    else
      node[s] = UINT32_MAX;
  }
  for (s = 0; s + 1 < 3; s++)
    if (where[s] == g_rank) RT_OK(rt, rk_graph_connect(g, node[s], node[s + 1], NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  barrier(); /* every rank active before the first call */
  if (g_rank == 0) {
    rk_kernel *first = rk_graph_kernel(g, node[0]);
    for (i = 0; i < n; i++) {
      hop h, r;
      rk_msg m;
      rk_hlc before = rk_clock_peek(rk_runtime_clock(rt));
      memset(&h, 0, sizeof h);
      h.value = i;
      RT_OK(rt, rk_call(first, T_HOP, &h, sizeof h, &m, &r, sizeof r, RT_HANG));
      assert_int_equal(m.env.type, T_RESULT);
      assert_int_equal(r.hops, 3);
      assert_int_equal(r.value, ((int64_t)i * 2 + 1) * 4 + 3);
      assert_int_equal(r.ranks, (1u << g_size) - 1); /* it went through every rank */
      assert_true(r.seen[0] > before);
      assert_true(r.seen[1] > r.seen[0]); /* across ranks too: the receive rule */
      assert_true(r.seen[2] > r.seen[1]);
      assert_true(m.env.hlc > r.seen[2]); /* the reply, stamped on rank 0 after the last stage */
    }
  }
  terminate_in_rank_order(rt, g);
  if (where[2] == g_rank) assert_int_equal(__atomic_load_n(&g_answered, __ATOMIC_RELAXED), n);
  {
    rk_mpi_stats st = bridge_stats(b);
    assert_int_equal(st.refused, 0);
    assert_int_equal(st.clock_rejected, 0);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(st.peers_lost, 0);
    assert_int_equal(st.received, st.delivered);
    if (g_rank == 0) assert_int_equal(st.sent, n);
  }
  finish(rt, g, b);
}

/* ---------------------------------------- streams ------------------------------------------ */

typedef struct item {
  uint32_t rank, pad;
  uint64_t seq;
} item;

#define MAX_RANKS 8
static volatile uint64_t g_next[MAX_RANKS]; /* the sink: next sequence expected per source rank */
static volatile uint64_t g_got, g_bad;
static volatile uint64_t g_eagain, g_closed;
static volatile uint64_t g_accepted; /* the source's sends that returned RK_OK */
static volatile int g_gate = 1; /* the sink's handler waits while 0 */
static volatile uint64_t g_kill_after; /* rank_killed: the sink kills its process after this many */

/* The source: each host message becomes one K2K send on route 0. RK_EAGAIN (the route is out of
 * credit and its ring full) is returned as is: the lane runs the message again later. */
static int source(rk_ctx *ctx, const rk_msg *in) {
  int rc = rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in));
  if (rc == RK_OK) __atomic_add_fetch(&g_accepted, 1, __ATOMIC_RELAXED);
  if (rc == RK_EAGAIN) __atomic_add_fetch(&g_eagain, 1, __ATOMIC_RELAXED);
  if (rc == RK_ECLOSED) { /* the route's peer is lost: dropped, counted */
    __atomic_add_fetch(&g_closed, 1, __ATOMIC_RELAXED);
    return 0;
  }
  return rc;
}

static int sink(rk_ctx *ctx, const rk_msg *in) {
  item it;
  (void)ctx;
  while (!__atomic_load_n(&g_gate, __ATOMIC_ACQUIRE)) rt_sleep_ms(1); /* pairs with the opener's release */
  if (rk_msg_len(in) != sizeof it) {
    __atomic_add_fetch(&g_bad, 1, __ATOMIC_RELAXED);
    return 0;
  }
  memcpy(&it, rk_msg_payload(in), sizeof it);
  if (it.rank >= MAX_RANKS || it.seq != g_next[it.rank])
    __atomic_add_fetch(&g_bad, 1, __ATOMIC_RELAXED); /* out of order, lost or twice */
  else
    g_next[it.rank]++; /* one lane: its own word */
  if (__atomic_add_fetch(&g_got, 1, __ATOMIC_RELAXED) == g_kill_after && g_kill_after) kill(getpid(), SIGKILL);
  return 0;
}

typedef struct stream_cfg {
  uint32_t sink_rank;
  uint32_t sink_capacity;   /* its K2K inbox */
  uint32_t source_capacity; /* the remote node's ring on the sources */
  rk_mpi_options o;
} stream_cfg;

typedef struct stream {
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel *src; /* sources only */
} stream;

static stream stream_up(const stream_cfg *c) {
  stream s;
  rk_kernel_desc dsink = rt_desc("sink", sink), dsrc = rt_desc("source", source);
  uint32_t n_sink, n_src;
  memset(&s, 0, sizeof s);
  s.rt = rt_create();
  RT_OK(s.rt, rk_graph_create(s.rt, &s.g));
  s.b = bridge_on(s.rt, s.g, &c->o);
  if ((uint32_t)g_rank == c->sink_rank) {
    RT_OK(s.rt, rk_graph_add(s.g, &dsink, NULL, c->sink_capacity, &n_sink));
  } else {
    rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
    lo.send_timeout_ns = 60 * RT_SEC; /* the host waits for room as long as the stream needs */
    RT_OK(s.rt, rk_graph_add(s.g, &dsrc, &lo, 0, &n_src));
    RT_OK(s.rt, rk_graph_add_remote(s.g, c->sink_rank, "sink", c->source_capacity, &n_sink));
    RT_OK(s.rt, rk_graph_connect(s.g, n_src, n_sink, NULL));
  }
  RT_OK(s.rt, rk_graph_launch(s.g));
  RT_OK(s.rt, rk_graph_activate(s.g));
  if ((uint32_t)g_rank != c->sink_rank) s.src = rk_graph_kernel(s.g, n_src);
  barrier();
  return s;
}

static void send_items(stream *s, uint64_t from, uint64_t n) {
  uint64_t i;
  for (i = from; i < from + n; i++) {
    item it = {(uint32_t)g_rank, 0, i};
    RT_OK(s->rt, rk_send(s->src, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
  }
}

static int got_all(void *arg) { return __atomic_load_n(&g_got, __ATOMIC_RELAXED) >= *(uint64_t *)arg; }

/* The sources first (their remote node's flush waits until everything is in the sink's inbox),
 * then the sink drains it. */
static void stream_down(stream *s, uint32_t sink_rank) {
  if ((uint32_t)g_rank != sink_rank) RT_OK(s->rt, rk_graph_terminate(s->g, 30 * RT_SEC));
  barrier();
  if ((uint32_t)g_rank == sink_rank) RT_OK(s->rt, rk_graph_terminate(s->g, 30 * RT_SEC));
  barrier();
}

static void check_sink(uint64_t per_source) {
  int r;
  assert_int_equal(__atomic_load_n(&g_bad, __ATOMIC_RELAXED), 0);
  for (r = 0; r < g_size; r++)
    if (r != g_rank) assert_int_equal(g_next[r], per_source);
  assert_int_equal(__atomic_load_n(&g_got, __ATOMIC_RELAXED), per_source * (uint64_t)(g_size - 1));
}

static void test_fan_in(void **state) {
  stream_cfg c = {0, 0, 0, RK_MPI_OPTIONS_INIT};
  uint64_t n = RT_SANITIZED ? 2000 : 50000, want = n * (uint64_t)(g_size - 1);
  stream s;
  (void)state;
  c.sink_capacity = 256;
  s = stream_up(&c);
  if (g_rank != 0) send_items(&s, 0, n);
  if (g_rank == 0) assert_true(rt_wait_for(got_all, &want, 60 * RT_SEC));
  stream_down(&s, 0);
  if (g_rank == 0) {
    rk_mpi_stats st = bridge_stats(s.b);
    check_sink(n);
    assert_int_equal(st.received, want);
    assert_int_equal(st.delivered, want);
  } else {
    rk_mpi_stats st = bridge_stats(s.b);
    assert_int_equal(st.sent, n);
    assert_int_equal(st.dropped, 0);
  }
  finish(s.rt, s.g, s.b);
}

static int saw_eagain(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_eagain, __ATOMIC_RELAXED) > 0;
}

/* Sink inbox of 4 slots, its handler held: at most 4 in the inbox and 4 (the credit window)
 * waiting on rank 1 may cross; the source's ring of 8 fills and its sends get RK_EAGAIN. */
static void test_backpressure(void **state) {
  stream_cfg c = {1, 4, 8, RK_MPI_OPTIONS_INIT};
  uint64_t n = 2000;
  stream s;
  (void)state;
  if (g_rank == 1) __atomic_store_n(&g_gate, 0, __ATOMIC_RELEASE);
  s = stream_up(&c);
  if (g_rank == 0) {
    rk_mpi_stats st;
    send_items(&s, 0, 64); /* the lane retries what finds the route full; the host inbox holds the rest */
    assert_true(rt_wait_for(saw_eagain, NULL, RT_HANG));
    rt_sleep_ms(200); /* time for anything unbounded to show */
    st = bridge_stats(s.b);
    assert_true(st.sent <= 4 + 4); /* the inbox, and one window staged on rank 1 */
    assert_true(st.credit_stalls > 0);
    assert_int_equal(rk_mpi_bridge_peer(s.b, 1), RK_MPI_PEER_UP);
  }
  barrier(); /* rank 0 saw the backpressure: open the gate */
  if (g_rank == 1) {
    rk_mpi_stats st = bridge_stats(s.b);
    assert_true(st.staged > 0);
    assert_true(st.received <= 8);
    __atomic_store_n(&g_gate, 1, __ATOMIC_RELEASE); /* pairs with the sink's acquire */
  }
  if (g_rank == 0) send_items(&s, 64, n - 64);
  if (g_rank == 1) assert_true(rt_wait_for(got_all, &n, 60 * RT_SEC));
  stream_down(&s, 1);
  if (g_rank == 1) check_sink(n);
  finish(s.rt, s.g, s.b);
}

static void test_order(void **state) {
  stream_cfg c = {1, 0, 0, RK_MPI_OPTIONS_INIT};
  uint64_t n = RT_SANITIZED ? 20000 : 1000000, t0;
  stream s;
  (void)state;
  c.sink_capacity = 1024;
  c.source_capacity = 1024;
  s = stream_up(&c);
  if (g_rank == 0) send_items(&s, 0, n);
  t0 = rt_now_ns();
  if (g_rank == 1) assert_true(rt_wait_for(got_all, &n, 120 * RT_SEC));
  stream_down(&s, 1);
  if (g_rank == 1) {
    rk_mpi_stats st = bridge_stats(s.b);
    printf("test_mpi order: %llu messages in order, once each, in %.2f s (%llu batches)\n", (unsigned long long)n,
           (double)(rt_now_ns() - t0) / 1e9, (unsigned long long)st.batches_received);
    check_sink(n);
    assert_int_equal(st.received, n);
    assert_int_equal(st.delivered, n);
  } else {
    rk_mpi_stats st = bridge_stats(s.b);
    assert_int_equal(st.sent, n);
    assert_true(st.batches_sent < n); /* batched */
  }
  finish(s.rt, s.g, s.b);
}

/* ---------------------------------------- idle --------------------------------------------- */

/* Rank 0 sends one message every 3 ms (the bridge's live window is 0.5 ms at most, so it is asleep
 * by then): the sleeps counters grow on both ranks while nothing moves, and rank 0's bridge is
 * woken by the sends (woken; a bridge that only napped would count none: without futex_waitv it
 * naps, see docs/mpi.md). */
static uint64_t g_idle_sleeps, g_idle_sent; /* the counts idle_slept and idle_sent wait for */
static int idle_slept(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sleeps >= g_idle_sleeps; }
static int idle_sent(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= g_idle_sent; }
static void test_idle(void **state) {
  stream_cfg c = {1, 0, 0, RK_MPI_OPTIONS_INIT};
  uint64_t n = 50, i;
  rk_mpi_stats a, z;
  stream s;
  (void)state;
  c.sink_capacity = 64;
  /* the bridge thread's own wake-up by a local send: with lane-driven progress the sending lane,
   * idle right after its send, usually takes the message out of the ring itself first (mpi_lane_drive) */
  c.o.lane_drive = -1;
  s = stream_up(&c);
  a = bridge_stats(s.b);
  /* nothing moves: it sleeps (a polling bridge would count none). Waited for, not timed: 5 sleeps
   * take about 0.5 ms idle, but a bridge thread descheduled for most of a fixed 100 ms on a loaded
   * machine counted fewer (the test failed so; shown with a 30 ms delay injected before each sleep) */
  g_idle_sleeps = a.sleeps + 5;
  assert_true(rt_wait_for(idle_slept, s.b, 30 * RT_SEC));
  barrier();
  if (g_rank == 0)
    for (i = 0; i < n; i++) {
      rt_sleep_ms(3);
      send_items(&s, i, 1);
    }
  if (g_rank == 1) assert_true(rt_wait_for(got_all, &n, 60 * RT_SEC));
  barrier();
  z = bridge_stats(s.b);
  if (g_rank == 0) {
    printf("test_mpi idle: rank 0's bridge slept %llu times, %llu of them ended by a local send\n",
           (unsigned long long)(z.sleeps - a.sleeps), (unsigned long long)z.woken);
    assert_true(z.woken >= 1);
    assert_true(z.woken <= z.sleeps);
    /* the bridge counts a batch as sent after its MPI_Isend returns, and rank 1 may take it before
     * that (vader's eager send has delivered it): rank 1 having all n does not mean sent is n yet
     * (it read 49 with a 30 ms delay injected after the Isend); waited for, then exact */
    g_idle_sent = n;
    assert_true(rt_wait_for(idle_sent, s.b, 30 * RT_SEC));
    assert_int_equal(bridge_stats(s.b).sent, n);
  }
  stream_down(&s, 1);
  if (g_rank == 1) check_sink(n);
  finish(s.rt, s.g, s.b);
}

/* ---------------------------------------- keyed -------------------------------------------- */

#define KEYS 16u
#define SINK_LANES 4u
static uint64_t g_key_next[KEYS]; /* the keyed sink: next sequence + 1 per key, 0 before the first
                                   * (each key's lane's own word) */
static volatile uint64_t g_key_bad, g_key_got;

static int source_keyed(rk_ctx *ctx, const rk_msg *in) {
  item it;
  memcpy(&it, rk_msg_payload(in), sizeof it);
  return rk_send_to_key(ctx, 0, it.seq % KEYS, T_ITEM, &it, sizeof it); /* RK_EAGAIN: run again */
}

static int sink_keyed(rk_ctx *ctx, const rk_msg *in) {
  item it;
  uint64_t key;
  memcpy(&it, rk_msg_payload(in), sizeof it);
  key = it.seq % KEYS;
  /* the lane the key picks; per key, sequences key, key + KEYS, ... in order */
  if (rk_lane(ctx) != key % SINK_LANES || it.seq != (g_key_next[key] ? g_key_next[key] - 1 : key))
    __atomic_add_fetch(&g_key_bad, 1, __ATOMIC_RELAXED);
  g_key_next[key] = it.seq + KEYS + 1;
  __atomic_add_fetch(&g_key_got, 1, __ATOMIC_RELEASE); /* pairs with the waiter's acquire */
  return 0;
}

static int key_got_all(void *arg) { return __atomic_load_n(&g_key_got, __ATOMIC_ACQUIRE) >= *(uint64_t *)arg; }

static void test_keyed(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dsrc = rt_desc("source", source_keyed), dsink = rt_desc("sink", sink_keyed);
  rk_launch_options lo_src = RK_LAUNCH_OPTIONS_INIT, lo_sink = RK_LAUNCH_OPTIONS_INIT;
  mpi_pair p = {&dsrc, &dsink, &lo_src, &lo_sink, 0, 64, 64, 0};
  uint32_t me = 0, other = 0;
  uint64_t i, n = RT_SANITIZED ? 2000 : 20000;
  (void)state;
  lo_src.lanes = 2; /* the source's lanes do not decide: the key does */
  lo_src.send_timeout_ns = 60 * RT_SEC;
  lo_sink.lanes = SINK_LANES;
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, NULL);
  mpi_pair_graph(rt, g, g_rank, &p, &me, &other); /* me: the source, other: the sink */
  barrier();
  if (g_rank == 0) {
    rk_graph_node_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    RT_OK(rt, rk_graph_node(g, other, &info));
    assert_int_equal(info.lanes, SINK_LANES); /* the remote kernel's lanes, learned at launch */
    /* one key per host message, sent in key order from one host thread: the source's two lanes
     * take them round-robin, so order per key holds only if each key stays on one source lane:
     * key % 2 == lane, which rk_send_key gives (the same key, the same lane) */
    for (i = 0; i < n; i++) {
      item it = {0, 0, i};
      RT_OK(rt, rk_send_key(rk_graph_kernel(g, me), i % KEYS, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
    }
  } else {
    assert_true(rt_wait_for(key_got_all, &n, 60 * RT_SEC));
    assert_int_equal(__atomic_load_n(&g_key_bad, __ATOMIC_RELAXED), 0);
  }
  terminate_in_rank_order(rt, g);
  finish(rt, g, b);
}

/* ---------------------------------------- clocks ------------------------------------------- */

static volatile int64_t g_skew_us;

static uint64_t skewed_time(void *user) {
  (void)user;
  return (uint64_t)((int64_t)rk_realtime_us() + __atomic_load_n(&g_skew_us, __ATOMIC_RELAXED));
}

/* A runtime whose clock is skew_us off on rank 1 (skewed_time; relaxed store: written before the
 * runtime that reads it is created, nothing else is published with it), the true time elsewhere. */
static rk_runtime *rt_create_skewed_on_1(int64_t skew_us) {
  rk_runtime_options o = rt_options();
  if (g_rank == 1) {
    __atomic_store_n(&g_skew_us, skew_us, __ATOMIC_RELAXED);
    o.time_source = skewed_time;
  }
  return rt_create_opts(&o);
}

static volatile uint64_t g_pongs, g_causal_bad, g_last_pong, g_node_bad;

/* ping (rank 0): a host message goes out over route 0; a pong coming back carries the stamp its
 * ping had on arrival at rank 1, and must be later (causality across the ranks). */
static int ping(rk_ctx *ctx, const rk_msg *in) {
  if (rk_msg_type_of(in) == T_PONG) {
    rk_hlc ping_stamp;
    memcpy(&ping_stamp, rk_msg_payload(in), sizeof ping_stamp);
    if (!(in->env.hlc > ping_stamp) || !(in->env.hlc > g_last_pong))
      __atomic_add_fetch(&g_causal_bad, 1, __ATOMIC_RELAXED);
    if ((in->env.node >> 20) != 2u) /* rank 1 + 1: the node id says which rank stamped it */
      __atomic_add_fetch(&g_node_bad, 1, __ATOMIC_RELAXED);
    g_last_pong = in->env.hlc;
    __atomic_add_fetch(&g_pongs, 1, __ATOMIC_RELAXED);
    return 0;
  }
  return rk_send_to(ctx, 0, T_PING, rk_msg_payload(in), rk_msg_len(in));
}

static volatile rk_hlc g_last_ping; /* rank 1: the stamp of the last ping as it arrived */

/* pong (rank 1): a ping from rank 0 is answered with the stamp it arrived with; a host message
 * (which makes the lane read rank 1's own, skewed, clock) sends a pong that carries the stamp of
 * the last ping: it happened after that ping arrived, so its stamp must be larger too. */
static int pong(rk_ctx *ctx, const rk_msg *in) {
  rk_hlc h = in->env.hlc;
  if (in->env.flags & RK_ENV_F_K2K)
    __atomic_store_n(&g_last_ping, h, __ATOMIC_RELAXED);
  else
    h = __atomic_load_n(&g_last_ping, __ATOMIC_RELAXED);
  return rk_send_to(ctx, 0, T_PONG, &h, sizeof h);
}

static int pongs_are(void *arg) { return __atomic_load_n(&g_pongs, __ATOMIC_RELAXED) >= *(uint64_t *)arg; }

static void test_hlc_skew(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dping = rt_desc("ping", ping), dpong = rt_desc("pong", pong);
  uint32_t me, other, i, n = 200;
  uint64_t want = n;
  (void)state;
  if (g_rank == 1) {
    __atomic_store_n(&g_skew_us, -200000, __ATOMIC_RELAXED); /* 200 ms behind rank 0 */
    o.time_source = skewed_time;
  }
  rt = rt_create_opts(&o);
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, NULL);
  RT_OK(rt, rk_graph_add(g, g_rank == 0 ? &dping : &dpong, NULL, 0, &me));
  RT_OK(rt, rk_graph_add_remote(g, (uint32_t)(1 - g_rank), g_rank == 0 ? "pong" : "ping", 0, &other));
  RT_OK(rt, rk_graph_connect(g, me, other, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  barrier();
  if (g_rank == 0) { /* phase 1: rank 1 behind; every pong is later than its ping all the same */
    rk_kernel *k = rk_graph_kernel(g, me);
    for (i = 0; i < n; i++) RT_OK(rt, rk_send(k, T_PING, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
    assert_true(rt_wait_for(pongs_are, &want, RT_HANG));
  }
  barrier();
  if (g_rank == 1) { /* pongs stamped from rank 1's own clock, 200 ms behind the pings' */
    rk_kernel *k = rk_graph_kernel(g, me);
    for (i = 0; i < n; i++) RT_OK(rt, rk_send(k, T_PING, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  }
  if (g_rank == 0) {
    want = 2 * (uint64_t)n;
    assert_true(rt_wait_for(pongs_are, &want, RT_HANG));
    assert_int_equal(g_causal_bad, 0);
    assert_int_equal(g_node_bad, 0);
    assert_int_equal(bridge_stats(b).clock_rejected, 0);
  }
  barrier();
  if (g_rank == 1) __atomic_store_n(&g_skew_us, 2000000, __ATOMIC_RELAXED); /* 2 s ahead: beyond 500 ms */
  barrier();
  if (g_rank == 1) { /* phase 2: stamps from rank 1's clock, now 2 s ahead */
    rk_kernel *k = rk_graph_kernel(g, me);
    for (i = 0; i < n; i++) RT_OK(rt, rk_send(k, T_PING, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  }
  if (g_rank == 0) { /* refused here; rank 0's clock does not jump */
    uint64_t t0 = rk_realtime_us();
    for (i = 0; i < 10000 && bridge_stats(b).clock_rejected < n; i++) rt_sleep_ms(1);
    assert_int_equal(bridge_stats(b).clock_rejected, n);
    assert_int_equal(g_pongs, want); /* none delivered */
    assert_true(rk_hlc_physical(rk_clock_peek(rk_runtime_clock(rt))) < t0 + 1000000);
    assert_int_equal(bridge_stats(b).refused, 0); /* (clock refusals are counted apart) */
  }
  barrier();
  /* rank 1's remote node learns of the refusals with the credits: its flush, and so its
   * terminate, says the far side refused what it sent */
  if (g_rank == 0) RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  barrier();
  if (g_rank == 1) {
    assert_int_equal(rk_graph_terminate(g, RT_HANG), RK_ECLOSED);
    assert_non_null(strstr(rk_runtime_last_error(rt), "rank 0 refused 200 of the envelopes"));
  }
  barrier();
  finish(rt, g, b);
}

/* ---------------------------------------- failure ------------------------------------------ */

static void test_launch(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_kernel_desc d = rt_desc("source", source);
  uint32_t me, other;
  uint64_t t0;
  (void)state;
  o.start_timeout_ns = 300 * RT_MS;
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &me));
  if (g_rank == 0) { /* rank 1 never launches: the handshake times out */
    RT_OK(rt, rk_graph_add_remote(g, 1, "sink", 0, &other));
    RT_OK(rt, rk_graph_connect(g, me, other, NULL));
    t0 = rt_now_ns();
    assert_int_equal(rk_graph_launch(g), RK_ETIMEDOUT);
    assert_true(rt_now_ns() - t0 < 5 * (uint64_t)RT_SEC);
    assert_non_null(strstr(rk_runtime_last_error(rt), "not heard from rank(s) 1"));
    assert_null(rk_graph_kernel(g, me)); /* nothing stays launched */
    assert_int_equal(rk_graph_launch(g), RK_ENOTSUP); /* the bridge is detached from the graph */
  }
  rk_graph_destroy(g);
  rk_mpi_bridge_destroy(b);
  barrier();
  /* again, both launching, rank 0 naming a kernel rank 1 does not have */
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &me));
  if (g_rank == 0) RT_OK(rt, rk_graph_add_remote(g, 1, "no-such-kernel", 0, &other));
  if (g_rank == 0) {
    assert_int_equal(rk_graph_launch(g), RK_EINVAL);
    assert_non_null(strstr(rk_runtime_last_error(rt), "has no kernel named \"no-such-kernel\""));
  } else {
    RT_OK(rt, rk_graph_launch(g)); /* its side of the handshake went through */
  }
  /* the bridge first, the graph after: the bridge detaches itself (nothing of it is called again) */
  rk_mpi_bridge_destroy(b);
  rk_graph_destroy(g);
  barrier();
  /* again, the ranks' batch_bytes differing: every rank refuses the launch (a larger batch would be
   * cut by the other's receive buffer) */
  if (g_rank == 1) o.batch_bytes = 65536;
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &me));
  assert_int_equal(rk_graph_launch(g), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "every rank must use the same rk_mpi_options.batch_bytes"));
  rk_graph_destroy(g);
  rk_mpi_bridge_destroy(b);
  rk_runtime_destroy(rt);
  barrier();
}

/* Open MPI hands a message that reaches a communicator after MPI_Comm_free to the next communicator
 * given the same context id, out of its sequence (rk-bench mpi's stream phase hung on a bye of the
 * phase before: docs/mpi.md, "The last word"). Round 1: rank 0 names a kernel rank 1 does not have,
 * so its launch fails after the handshake, while rank 1's launch succeeds and its bridge sends rank
 * 0 a heartbeat every 5 ms; rank 0 destroys its bridge at once, rank 1 200 ms later. Before the fix
 * rank 0 freed its communicator without a word: rank 1's heartbeats and its bye reached it after
 * the free and were matched in round 2's communicator (same context id), where rank 0's bridge took
 * the stale bye for rank 1's and closed a live peer (or lost a batch in the sequence). Now the
 * failed launch says bye, rank 1's bridge answers at once and stops talking, and both take each
 * other's last messages before they free their communicators. Round 2: a stream of n items from
 * rank 1 to rank 0 arrives whole and in order, and neither rank sees the other closed or lost. */
static void test_comm_reuse(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_kernel_desc d = rt_desc("source", source);
  stream_cfg c = {0, 0, 0, RK_MPI_OPTIONS_INIT};
  uint64_t n = RT_SANITIZED ? 5000 : 20000;
  uint32_t me, other;
  rk_mpi_peer_state round1_peer = RK_MPI_PEER_CLOSED;
  stream s;
  (void)state;
  o.heartbeat_ns = 5 * RT_MS;
  o.peer_timeout_ns = 30 * RT_SEC; /* rank 1 must not find rank 0 lost meanwhile (it is not) */
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &me));
  if (g_rank == 0) {
    RT_OK(rt, rk_graph_add_remote(g, 1, "no-such-kernel", 0, &other));
    assert_int_equal(rk_graph_launch(g), RK_EINVAL);
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  } else {
    RT_OK(rt, rk_graph_launch(g));
  }
  barrier(); /* rank 0's bridge is gone */
  if (g_rank == 1) {
    rt_sleep_ms(200); /* its bridge runs on: heartbeats every 5 ms, unless rank 0 said bye */
    round1_peer = rk_mpi_bridge_peer(b, 0); /* (checked after round 2, which shows what it costs) */
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  }
  rk_runtime_destroy(rt);
  barrier();
  /* round 2: rank 1 streams to rank 0 */
  s = stream_up(&c);
  if (g_rank == 1) send_items(&s, 0, n);
  if (g_rank == 0) assert_true(rt_wait_for(got_all, &n, 60 * RT_SEC));
  assert_int_equal(rk_mpi_bridge_peer(s.b, (uint32_t)(1 - g_rank)), RK_MPI_PEER_UP);
  stream_down(&s, 0);
  if (g_rank == 0) {
    check_sink(n);
    assert_int_equal(bridge_stats(s.b).received, n);
  }
  assert_int_equal(bridge_stats(s.b).peers_lost, 0);
  if (g_rank == 1) assert_int_equal(round1_peer, RK_MPI_PEER_CLOSED); /* rank 0's failed launch said bye */
  finish(s.rt, s.g, s.b);
}

/* Bad arguments get clear errors. Every rank makes each call: those that pass the NULL checks
 * reach MPI_Comm_dup (collective), which rk_mpi_bridge_create runs before checking the options. */
static void test_arguments(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b = NULL, *b2 = (rk_mpi_bridge *)&b;
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_mpi_stats st;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  assert_int_equal(rk_mpi_bridge_create(NULL, MPI_COMM_WORLD, NULL, &b), RK_EINVAL);
  assert_int_equal(rk_mpi_bridge_create(g, MPI_COMM_WORLD, NULL, NULL), RK_EINVAL);
  assert_int_equal(rk_mpi_bridge_create(g, MPI_COMM_NULL, NULL, &b2), RK_EINVAL);
  assert_null(b2); /* *out cleared on failure */
  o.size = 1;
  assert_int_equal(rk_mpi_bridge_create(g, MPI_COMM_WORLD, &o, &b), RK_EINVAL);
  o = (rk_mpi_options)RK_MPI_OPTIONS_INIT;
  o.heartbeat_ns = 2 * RT_SEC; /* not below the peer timeout (2 s) */
  assert_int_equal(rk_mpi_bridge_create(g, MPI_COMM_WORLD, &o, &b), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "peer_timeout_ns > heartbeat_ns"));
  o = (rk_mpi_options)RK_MPI_OPTIONS_INIT;
  o.lane_drive = 2; /* -1 off, 0 default, 1 on: nothing else */
  assert_int_equal(rk_mpi_bridge_create(g, MPI_COMM_WORLD, &o, &b), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "lane_drive -1, 0 or 1"));
  o.lane_drive = -2;
  assert_int_equal(rk_mpi_bridge_create(g, MPI_COMM_WORLD, &o, &b), RK_EINVAL);
  b = bridge_on(rt, g, NULL);
  memset(&st, 0, sizeof st);
  assert_int_equal(rk_mpi_bridge_stats(b, &st), RK_EINVAL); /* size not set */
  assert_int_equal(rk_mpi_bridge_stats(NULL, &st), RK_EINVAL);
  st.size = (uint32_t)offsetof(rk_mpi_stats, sleeps) - 1; /* shorter than any rk_mpi_stats */
  assert_int_equal(rk_mpi_bridge_stats(b, &st), RK_EINVAL);
  memset(&st, 0xAB, sizeof st); /* a caller built with the older, shorter rk_mpi_stats */
  st.size = (uint32_t)offsetof(rk_mpi_stats, sleeps);
  assert_int_equal(rk_mpi_bridge_stats(b, &st), RK_OK);
  assert_int_equal(st.size, offsetof(rk_mpi_stats, sleeps));
  assert_int_equal(st.sleeps, 0xABABABABABABABABull); /* beyond its size: untouched */
  assert_int_equal(st.dropped, 0);
  memset(&st, 0xAB, sizeof st); /* one built before answers_failed / answers_late */
  st.size = (uint32_t)offsetof(rk_mpi_stats, answers_failed);
  assert_int_equal(rk_mpi_bridge_stats(b, &st), RK_OK);
  assert_int_equal(st.size, offsetof(rk_mpi_stats, answers_failed));
  assert_int_equal(st.woken, 0); /* within its size: filled */
  assert_int_equal(st.answers_failed, 0xABABABABABABABABull); /* beyond: untouched */
  assert_int_equal(st.answers_late, 0xABABABABABABABABull);
  st = bridge_stats(b);
  assert_int_equal(st.answers_failed, 0);
  assert_int_equal(st.answers_late, 0);
  assert_int_equal(rk_mpi_bridge_peer(b, (uint32_t)g_rank), RK_MPI_PEER_SELF);
  assert_int_equal(rk_mpi_bridge_peer(b, (uint32_t)(1 - g_rank)), RK_MPI_PEER_UP);
  assert_int_equal(rk_mpi_bridge_peer(b, 99), RK_MPI_PEER_LOST);
  assert_int_equal(rk_mpi_bridge_peer(NULL, 0), RK_MPI_PEER_LOST);
  assert_int_equal(rk_mpi_bridge_rank(NULL), 0);
  assert_int_equal(rk_mpi_node_id(0, 5), (1u << 20) | 5u);
  assert_int_equal(rk_mpi_node_id(2, 7), (3u << 20) | 7u);
  assert_int_equal(rk_mpi_node_id(4094, 1), (4095u << 20) | 1u);
  assert_int_equal(rk_mpi_node_id(4095, 1), 0); /* (rank + 1) << 20 would wrap */
  rk_mpi_bridge_destroy(NULL);
  rk_graph_destroy(g); /* never launched: the graph tells the bridge it is gone */
  rk_mpi_bridge_destroy(b);
  rk_runtime_destroy(rt);
  barrier();
}

static int peer_lost(void *arg) {
  return rk_mpi_bridge_peer((rk_mpi_bridge *)arg, 1) == RK_MPI_PEER_LOST;
}

static int saw_closed(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_closed, __ATOMIC_RELAXED) > 0;
}

static void test_rank_killed(void **state) {
  stream_cfg c = {1, 64, 64, RK_MPI_OPTIONS_INIT};
  stream s;
  uint64_t t0, i;
  rk_mpi_stats st;
  (void)state;
  c.o.heartbeat_ns = 20 * RT_MS;
  c.o.peer_timeout_ns = 1 * RT_SEC;
  if (g_rank == 1) g_kill_after = 1000;
  s = stream_up(&c);
  if (g_rank == 1) { /* dies in its sink's handler at the 1000th message */
    for (;;) pause();
  }
  /* rank 0: keep streaming; it must notice within about the peer timeout */
  t0 = rt_now_ns();
  for (i = 0; !peer_lost(s.b) && rt_now_ns() - t0 < 20 * (uint64_t)RT_SEC; i++) {
    item it = {0, 0, i};
    (void)rk_send(s.src, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY | RK_SEND_NOWAIT, NULL);
    if (i % 64 == 0) rt_sleep_ms(1);
  }
  assert_true(peer_lost(s.b));
  /* the route is in its error state: sends are refused at once, visibly */
  for (i = 0; i < 16; i++) {
    item it = {0, 0, i};
    (void)rk_send(s.src, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL);
  }
  assert_true(rt_wait_for(saw_closed, NULL, RT_HANG));
  st = bridge_stats(s.b);
  assert_int_equal(st.peers_lost, 1);
  assert_true(st.sent >= 1000);
  /* nothing hangs: terminate, destroy, and the bridge */
  t0 = rt_now_ns();
  assert_int_equal(rk_graph_terminate(s.g, 2 * RT_SEC), RK_ECLOSED); /* the remote node's flush says why */
  /* the source has terminated: every send it got RK_OK for is counted, sent (then delivered or
   * unconfirmed) or dropped */
  st = bridge_stats(s.b);
  assert_int_equal(__atomic_load_n(&g_accepted, __ATOMIC_RELAXED), st.sent + st.dropped);
  assert_true(st.unconfirmed <= st.sent);
  rk_graph_destroy(s.g);
  rk_mpi_bridge_destroy(s.b);
  rk_runtime_destroy(s.rt);
  assert_true(rt_now_ns() - t0 < 5 * (uint64_t)RT_SEC);
}

/* ---------------------------------------- teardown ----------------------------------------- */

/* The bridge's summary line when it stops (the counters are freed with it). */
static volatile uint64_t g_stop_sent, g_stop_dropped, g_stop_unconfirmed;
static volatile int g_stop_seen;

static void stop_log(void *user, rk_log_level level, const char *msg) {
  unsigned long long s, d, u;
  (void)user;
  (void)level;
  if (sscanf(msg, "mpi bridge: stopped: %llu envelopes sent, %llu accepted and never sent (dropped), %llu", &s, &d,
             &u) == 3) {
    g_stop_sent = s;
    g_stop_dropped = d;
    g_stop_unconfirmed = u;
    __atomic_store_n(&g_stop_seen, 1, __ATOMIC_RELEASE); /* the three above before it (one thread reads) */
  }
}

static int peer0_closed(void *arg) { return rk_mpi_bridge_peer((rk_mpi_bridge *)arg, 0) == RK_MPI_PEER_CLOSED; }

/* Rank 0 streams to rank 1's sink as fast as it can and destroys its bridge mid-stream, before its
 * graph. Every envelope the source's sends accepted is counted on rank 0, as sent or dropped; the
 * bye goes after the data, so rank 1 receives every envelope rank 0 sent before it sees rank 0
 * closed; and what rank 1 did not credit is counted as unconfirmed. */
static void test_teardown(void **state) {
  rk_runtime_options ro = rt_options();
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dsink = rt_desc("sink", sink), dsrc = rt_desc("source", source);
  uint32_t me, other;
  uint64_t i, n = RT_SANITIZED ? 50000 : 300000, counts[4];
  (void)state;
  ro.log = stop_log;
  ro.log_level = RK_LOG_INFO;
  rt = rt_create_opts(&ro);
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, NULL);
  if (g_rank == 0) {
    RT_OK(rt, rk_graph_add(g, &dsrc, NULL, 0, &me));
    RT_OK(rt, rk_graph_add_remote(g, 1, "sink", 4096, &other));
    RT_OK(rt, rk_graph_connect(g, me, other, NULL));
  } else {
    RT_OK(rt, rk_graph_add(g, &dsink, NULL, 4096, &me));
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  barrier();
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    for (i = 0; i < n; i++) {
      item it = {0, 0, i};
      while (rk_send(k, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY | RK_SEND_NOWAIT, NULL) == RK_EAGAIN) sched_yield();
    }
    rk_mpi_bridge_destroy(b); /* mid-stream: the source's lane is still sending */
    assert_true(__atomic_load_n(&g_stop_seen, __ATOMIC_ACQUIRE));
    rk_graph_destroy(g);      /* the source's handlers are done: g_accepted is final */
    counts[0] = __atomic_load_n(&g_accepted, __ATOMIC_RELAXED);
    counts[1] = g_stop_sent;
    counts[2] = g_stop_dropped;
    counts[3] = g_stop_unconfirmed;
    fprintf(stderr, "teardown: rank 0 accepted %llu, sent %llu, dropped %llu, unconfirmed %llu\n",
            (unsigned long long)counts[0], (unsigned long long)counts[1], (unsigned long long)counts[2],
            (unsigned long long)counts[3]);
    assert_int_equal(counts[0], counts[1] + counts[2]); /* nothing accepted goes uncounted */
    assert_true(counts[3] <= counts[1]);
    MPI_Send(counts, 4, MPI_UINT64_T, 1, 77, MPI_COMM_WORLD);
  } else {
    rk_mpi_stats st;
    /* not MPI_Recv: it busy-polls for the whole stream, on this rank's core (mpirun binds each
     * rank to one), and starved the sink's lane and bridge until both ranks declared the other
     * lost (seen 1 run in 6 on the loaded 2-core machine, before the bridge's issue-15 changes too) */
    MPI_Request rq;
    int done = 0;
    MPI_Irecv(counts, 4, MPI_UINT64_T, 0, 77, MPI_COMM_WORLD, &rq);
    for (;;) {
      MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
      if (done) break;
      rt_sleep_ms(1);
    }
    assert_true(rt_wait_for(peer0_closed, b, RT_HANG));
    st = bridge_stats(b);
    fprintf(stderr, "teardown: rank 1 received %llu, delivered %llu, refused %llu\n", (unsigned long long)st.received,
            (unsigned long long)st.delivered, (unsigned long long)st.refused);
    assert_int_equal(st.received, counts[1]); /* every batch sent arrived before the bye */
    /* what rank 0 counted as confirmed was delivered here */
    assert_true(st.delivered + st.refused >= counts[1] - counts[3]);
    RT_OK(rt, rk_graph_terminate(g, RT_HANG));
    assert_int_equal(__atomic_load_n(&g_bad, __ATOMIC_RELAXED), 0); /* in order, none twice */
    assert_int_equal(__atomic_load_n(&g_got, __ATOMIC_RELAXED), st.delivered);
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* ---------------------------------------- refusals ----------------------------------------- */

static int front(rk_ctx *ctx, const rk_msg *in) { return rk_forward(ctx, 0, T_HOP, rk_msg_payload(in), rk_msg_len(in)); }
static int back(rk_ctx *ctx, const rk_msg *in) { return rk_reply(ctx, T_RESULT, rk_msg_payload(in), rk_msg_len(in)); }

/* A request forwarded from rank 0 to rank 1 whose stamp rank 1 refuses (rank 1's clock 2 s behind:
 * rank 0's stamps are beyond its 500 ms maximum offset): dead-lettered on the destination, and
 * answered with RK_ECLOCK, so rank 0's host call gets the error instead of waiting out its
 * timeout and rank 0's terminate does not wait for answers it is owed; rank 0's remote node then
 * reports the refusals (flush). */
static void test_refused(void **state) {
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dfront = rt_desc("front", front), dback = rt_desc("back", back);
  /* rank 1 has rank 0's front as a remote node: the origin, where answers go */
  mpi_pair p = {&dfront, &dback, NULL, NULL, 0, 0, 0, 1};
  uint32_t me, i;
  (void)state;
  rt = rt_create_skewed_on_1(-2000000);
  pair_graph_on(rt, &g, &b, NULL, &p, 0, &me);
  barrier();
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    for (i = 0; i < 3; i++) {
      rk_msg m;
      uint64_t t0 = rt_now_ns(), v = i;
      char r[8];
      assert_int_equal(rk_call(k, T_HOP, &v, sizeof v, &m, r, sizeof r, 10 * RT_SEC), RK_EHANDLER);
      assert_int_equal(m.status, RK_ECLOCK);
      assert_true(rt_now_ns() - t0 < 5 * (uint64_t)RT_SEC);
    }
    assert_int_equal(bridge_stats(b).received, 3); /* the answers */
  }
  barrier();
  if (g_rank == 1) {
    rk_kernel_counters kc;
    rk_mpi_stats st = bridge_stats(b);
    assert_int_equal(st.clock_rejected, 3);
    memset(&kc, 0, sizeof kc);
    kc.size = sizeof kc;
    RT_OK(rt, rk_kernel_stats(rk_graph_kernel(g, me), &kc));
    assert_int_equal(kc.dead_letters, 3);
  }
  barrier();
  if (g_rank == 0) { /* nothing owed: prompt; the remote node says rank 1 refused what it sent */
    uint64_t t0 = rt_now_ns();
    assert_int_equal(rk_graph_terminate(g, 10 * RT_SEC), RK_ECLOSED);
    assert_non_null(strstr(rk_runtime_last_error(rt), "rank 1 refused 3 of the envelopes"));
    assert_true(rt_now_ns() - t0 < 5 * (uint64_t)RT_SEC);
  }
  barrier();
  if (g_rank == 1) RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  barrier();
  finish(rt, g, b);
}

/* A peer whose handshake says its kernel takes payloads of 2^32 - 16 bytes (more than a batch can
 * carry; near 2^32 it wrapped the remote node's slot size): rank 0's launch refuses it with
 * RK_EINVAL, saying so. Rank 1 is that peer: no bridge, its side of the handshake by hand (the
 * hello's layout as bridge.c has it). */
typedef struct fake_hello_entry {
  char name[64];
  uint32_t kernel_id, lanes, k2k_capacity, payload_max;
} fake_hello_entry;
typedef struct fake_hello {
  uint32_t n, rank, batch_bytes, reserved;
  fake_hello_entry e[RK_GRAPH_MAX_KERNELS];
} fake_hello;

static void test_hello(void **state) {
  (void)state;
  if (g_rank == 0) {
    rk_runtime *rt = rt_create();
    rk_graph *g;
    rk_mpi_bridge *b;
    rk_kernel_desc d = rt_desc("source", source);
    uint32_t me, other;
    RT_OK(rt, rk_graph_create(rt, &g));
    b = bridge_on(rt, g, NULL); /* (MPI_Comm_dup: rank 1 duplicates too) */
    RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &me));
    RT_OK(rt, rk_graph_add_remote(g, 1, "sink", 0, &other));
    RT_OK(rt, rk_graph_connect(g, me, other, NULL));
    assert_int_equal(rk_graph_launch(g), RK_EINVAL);
    assert_non_null(strstr(rk_runtime_last_error(rt), "rank 1's handshake is malformed: kernel \"sink\""));
    assert_null(rk_graph_kernel(g, me)); /* nothing stays launched */
    rk_graph_destroy(g);
    barrier();
    rk_mpi_bridge_destroy(b); /* (MPI_Comm_free, with rank 1's) */
    rk_runtime_destroy(rt);
  } else {
    MPI_Comm dup;
    MPI_Request rq[2];
    int done = 0;
    fake_hello *in = (fake_hello *)calloc(1, sizeof *in), *out = (fake_hello *)calloc(1, sizeof *out);
    assert_non_null(in);
    assert_non_null(out);
    assert_int_equal(MPI_Comm_dup(MPI_COMM_WORLD, &dup), MPI_SUCCESS);
    out->n = 1;
    out->rank = 1;
    out->batch_bytes = 32768; /* the default: this check passes */
    snprintf(out->e[0].name, sizeof out->e[0].name, "sink");
    out->e[0].kernel_id = 1;
    out->e[0].lanes = 1;
    out->e[0].k2k_capacity = 64;
    out->e[0].payload_max = UINT32_MAX - 15;
    MPI_Irecv(in, (int)sizeof *in, MPI_BYTE, 0, 0x5243, dup, &rq[0]); /* TAG_HELLO */
    MPI_Isend(out, (int)sizeof *out, MPI_BYTE, 0, 0x5243, dup, &rq[1]);
    while (!done) { /* (not MPI_Waitall: it busy-polls) */
      MPI_Testall(2, rq, &done, MPI_STATUSES_IGNORE);
      if (!done) rt_sleep_ms(1);
    }
    assert_int_equal(in->rank, 0);
    barrier();
    MPI_Comm_free(&dup);
    free(in);
    free(out);
  }
  barrier();
}

/* ---------------------------------------- answers owed ------------------------------------- */

static int delivered_1(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).delivered >= 1; }

/* rank 0: front -> remote back (rank 1); rank 1: back, held (deactivated: a request delivered to
 * it is never answered), front as a remote node (the origin). */
static void owed_graph(rk_runtime *rt, rk_graph **g, rk_mpi_bridge **b, const rk_mpi_options *o, uint32_t *me) {
  rk_kernel_desc dfront = rt_desc("front", front), dback = rt_desc("back", back);
  mpi_pair p = {&dfront, &dback, NULL, NULL, 0, 0, 0, 1};
  pair_graph_on(rt, g, b, o, &p, 1, me);
  barrier();
}

/* Rank 0's CPU kernel passes a host call on to rank 1 (rk_forward: its lane owes the caller the
 * answer), and rank 1 dies (SIGKILL) with the request in its held kernel's inbox. The answer can
 * never come: rank 0's bridge, finding rank 1 lost, answers the request with RK_ECLOSED, so the
 * call returns that error (within about the peer timeout, not its own 20 s), the lane owes nothing,
 * and its terminate (30 s allowed) finishes; the graph's terminate says the route is broken.
 * Before, the call waited its 20 s out (RK_ETIMEDOUT) and the terminate its 30 s. */
static void test_owed_lost(void **state) {
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel *k;
  rk_mpi_stats st;
  rk_msg m;
  uint32_t me;
  uint64_t v = 9;
  char r[8];
  (void)state;
  o.heartbeat_ns = 20 * RT_MS;
  /* not 1 s: on the loaded 2-core machine a rank starved that long was taken for lost before the
   * request crossed (the test then never saw it sent) */
  o.peer_timeout_ns = 3 * RT_SEC;
  owed_graph(rt, &g, &b, &o, &me);
  if (g_rank == 1) { /* takes the request into its held kernel's inbox, then dies */
    (void)rt_wait_for(delivered_1, b, 60 * RT_SEC);
    kill(getpid(), SIGKILL);
    for (;;) pause();
  }
  k = rk_graph_kernel(g, me);
  assert_int_equal(rk_call(k, T_HOP, &v, sizeof v, &m, r, sizeof r, 20 * RT_SEC), RK_EHANDLER);
  assert_int_equal(m.status, RK_ECLOSED); /* the bridge's answer: the route to rank 1 is closed */
  assert_int_equal(rk_mpi_bridge_peer(b, 1), RK_MPI_PEER_LOST);
  st = bridge_stats(b);
  assert_int_equal(st.sent, 1);
  assert_int_equal(st.answers_failed, 1);
  assert_int_equal(st.answers_late, 0);
  assert_int_equal(st.peers_lost, 1);
  RT_OK(rt, rk_kernel_terminate(k, 30 * RT_SEC)); /* nothing owed: its K2K inbox closes */
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_graph_terminate(g, 30 * RT_SEC), RK_ECLOSED); /* the remote node's flush: rank 1 lost */
  rk_graph_destroy(g);
  rk_mpi_bridge_destroy(b);
  rk_runtime_destroy(rt);
}

/* The same with rank 1 closing its bridge (rk_mpi_bridge_destroy: its bye) while rank 0's kernel
 * owes its caller the answer to a request rank 1 holds, and rank 0's terminate already waiting
 * for it: the bridge answers the request with RK_ECLOSED when the bye comes, the terminate
 * finishes (RK_OK), and the caller receives the error. Before, the terminate waited its 30 s out
 * (RK_ETIMEDOUT) and no answer came. */
static void test_owed_closed(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t me;
  (void)state;
  owed_graph(rt, &g, &b, NULL, &me);
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    uint64_t v = 11;
    rt_terminator t;
    int rc;
    rk_mpi_stats st;
    RT_OK(rt, rk_send(k, T_HOP, &v, sizeof v, 0, NULL)); /* a request: its answer is owed to this thread */
    rt_terminate_start(&t, NULL, k, 30 * RT_SEC); /* waits for the answer */
    barrier(); /* rank 1 has the request and closes its bridge */
    assert_int_equal(rt_terminate_join(&t), RK_OK);
    assert_int_equal(rk_mpi_bridge_peer(b, 1), RK_MPI_PEER_CLOSED);
    st = recv_closed_answer(rt, k, b);
    assert_int_equal(st.peers_lost, 0);
    /* the remote node's flush: RK_OK, or RK_ECLOSED if rank 1 closed before it returned the
     * request's credit (then unconfirmed) */
    rc = rk_graph_terminate(g, 30 * RT_SEC);
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  } else {
    assert_true(rt_wait_for(delivered_1, b, RT_HANG));
    barrier();
    rk_mpi_bridge_destroy(b); /* before the graph: the bye goes out, the held request is never answered */
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* A word from one rank to another on MPI_COMM_WORLD (MPI_Recv busy-polls: this one sleeps). */
static void signal_to(int rank, int tag) {
  int one = 1;
  MPI_Send(&one, 1, MPI_INT, rank, tag, MPI_COMM_WORLD);
}
static void wait_signal(int rank, int tag) {
  MPI_Request rq;
  int v = 0, done = 0;
  MPI_Irecv(&v, 1, MPI_INT, rank, tag, MPI_COMM_WORLD, &rq);
  for (;;) {
    MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
    if (done) return;
    rt_sleep_ms(1);
  }
}
static int sent_1(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= 1; }
static int peer1_closed(void *arg) { return rk_mpi_bridge_peer((rk_mpi_bridge *)arg, 1) == RK_MPI_PEER_CLOSED; }

/* (what a rank saw, when a wait of owed_late fails) */
static int owed_late_wait(int (*pred)(void *), rk_mpi_bridge *b, rk_kernel *k) {
  rk_mpi_stats st;
  rk_kernel_counters kc;
  if (rt_wait_for(pred, b, 60 * RT_SEC)) return 1;
  st = bridge_stats(b);
  kc = rt_stats(k);
  fprintf(stderr, "owed_late: rank %d: peers %d %d %d, sent %llu received %llu delivered %llu refused %llu failed %llu "
          "late %llu; kernel %s k2k_in %llu k2k_out %llu k2k_refused %llu\n", g_rank, rk_mpi_bridge_peer(b, 0),
          rk_mpi_bridge_peer(b, 1), rk_mpi_bridge_peer(b, 2), (unsigned long long)st.sent,
          (unsigned long long)st.received, (unsigned long long)st.delivered, (unsigned long long)st.refused,
          (unsigned long long)st.answers_failed, (unsigned long long)st.answers_late, rk_state_name(rk_kernel_state(k)),
          (unsigned long long)kc.k2k_in, (unsigned long long)kc.k2k_out, (unsigned long long)kc.k2k_refused);
  return 0;
}

/* The three-rank chain of test_owed_late and test_owed_moved: front (rank 0) -> mid (rank 1) ->
 * back (rank 2, deactivated: it holds what it gets), back answering front directly (its route to
 * front's stand-in), mid naming front as the origin of what it passes on. Launched, activated,
 * every rank past a barrier. Returns the bridge; *gp the graph, *mep this rank's kernel. */
static rk_mpi_bridge *chain3_graph(rk_runtime *rt, rk_graph **gp, uint32_t *mep) {
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dfront = rt_desc("front", front), dmid = rt_desc("mid", front), dback = rt_desc("back", back);
  uint32_t me, n_front, n_mid, n_back;
  o.peer_timeout_ns = 5 * RT_SEC; /* (nobody dies here: no rank is to be taken for lost) */
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  if (g_rank == 0) {
    RT_OK(rt, rk_graph_add(g, &dfront, NULL, 0, &me));
    RT_OK(rt, rk_graph_add_remote(g, 1, "mid", 0, &n_mid));
    RT_OK(rt, rk_graph_connect(g, me, n_mid, NULL));
  } else if (g_rank == 1) {
    RT_OK(rt, rk_graph_add(g, &dmid, NULL, 0, &me));
    RT_OK(rt, rk_graph_add_remote(g, 2, "back", 0, &n_back));
    RT_OK(rt, rk_graph_add_remote(g, 0, "front", 0, &n_front)); /* the origin of what it passes on */
    RT_OK(rt, rk_graph_connect(g, me, n_back, NULL));
  } else {
    RT_OK(rt, rk_graph_add(g, &dback, NULL, 0, &me));
    RT_OK(rt, rk_graph_add_remote(g, 0, "front", 0, &n_front)); /* where its answers go */
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  if (g_rank == 2) RT_OK(rt, rk_kernel_deactivate(rk_graph_kernel(g, me)));
  barrier();
  *gp = g;
  *mep = me;
  return b;
}

/* Three ranks: front (rank 0) -> mid (rank 1) -> back (rank 2), back answering front directly.
 * Rank 1 closes its bridge once back (held) has the request. Rank 1's bridge told rank 0 that the
 * request went on to rank 2 (moves), so rank 0's entry is owed from rank 2 now and rank 1's close
 * answers nothing: back, let go after the close, answers front over rank 2's bridge and the
 * caller gets that real answer. (Before the entry followed the request, rank 0's bridge answered
 * the caller with RK_ECLOSED at rank 1's close and dropped back's answer as late: review of
 * issue15-owed, finding 2, the reverse case.) (Rank 1 closes rather than dies: with a dead rank,
 * Open MPI 4.1 without ULFM did not always keep the two others talking: 2 of 7 runs under load
 * failed, and the one that printed what it saw had ranks 0 and 2 each taking the other for
 * lost.) */
static void test_owed_late(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t me;
  int rc;
  (void)state;
  b = chain3_graph(rt, &g, &me);
  if (g_rank == 1) { /* closes its bridge once back has the request */
    wait_signal(2, 88);
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  } else if (g_rank == 2) {
    assert_true(owed_late_wait(delivered_1, b, rk_graph_kernel(g, me)));
    signal_to(1, 88);
    wait_signal(0, 89); /* rank 0's caller has the bridge's answer */
    RT_OK(rt, rk_kernel_activate(rk_graph_kernel(g, me))); /* back answers front, on rank 0 */
    assert_true(owed_late_wait(sent_1, b, rk_graph_kernel(g, me)));
    wait_signal(0, 90); /* rank 0 has it */
    rc = rk_graph_terminate(g, 30 * RT_SEC);
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
  } else {
    rk_kernel *k = rk_graph_kernel(g, me);
    rk_kernel_counters kc;
    rk_mpi_stats st;
    rk_msg m;
    uint64_t v = 5, got = 0;
    char r[8];
    RT_OK(rt, rk_send(k, T_HOP, &v, sizeof v, 0, NULL)); /* a request: front owes this thread the answer */
    assert_true(owed_late_wait(peer1_closed, b, k));
    signal_to(2, 89); /* rank 1 is closed: back answers now */
    RT_OK(rt, rk_recv(k, &m, &got, sizeof got, 20 * RT_SEC));
    assert_false(rk_msg_is_error(&m)); /* back's answer, not the bridge's */
    assert_int_equal(got, 5);
    signal_to(2, 90);
    st = bridge_stats(b);
    assert_int_equal(st.moves_taken, 1);
    assert_int_equal(st.answers_failed, 0);
    assert_int_equal(st.answers_late, 0);
    assert_true(rt_wait_for(delivered_1, b, 30 * RT_SEC)); /* (counted after the push: may trail the reply) */
    RT_OK(rt, rk_kernel_terminate(k, 30 * RT_SEC));
    kc = rt_stats(k);
    assert_int_equal(kc.k2k_in, 1);       /* one answer: back's */
    assert_int_equal(kc.msgs_out, 1);     /* one reply to the caller */
    assert_int_equal(kc.dead_letters, 0);
    assert_int_equal(rk_recv(k, &m, r, sizeof r, 0), RK_ECLOSED); /* nothing more for the caller */
    rc = rk_graph_terminate(g, 30 * RT_SEC); /* (the route to rank 1: closed, maybe unconfirmed) */
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
  }
  if (g_rank != 1) {
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* ---------------------------------------- cycles across ranks -------------------------------- */

static volatile uint64_t g_bounced;

/* Every message goes on to route 0, for ever; a full route: run it again later (RK_EAGAIN). */
static int bounce(rk_ctx *ctx, const rk_msg *in) {
  int rc = rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in));
  if (rc == RK_OK) __atomic_add_fetch(&g_bounced, 1, __ATOMIC_RELAXED);
  return rc;
}

static int faulted(void *arg) { return rk_kernel_state((rk_kernel *)arg) == RK_STATE_FAULTED; }

/* The cycle tests' bridge: a peer is lost after 5 s of silence instead of 2 (a loaded machine,
 * lanes spinning on full routes: a 2 s timeout lost peers that were only slow) */
static rk_mpi_bridge *bridge_patient(rk_runtime *rt, rk_graph *g) {
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  o.peer_timeout_ns = 5 * (int64_t)RT_SEC;
  return bridge_on(rt, g, &o);
}

/* Each rank's kernel sends to the next rank's ("ping" on rank 0, "pong" on 1, "pang" on 2, the
 * last back to rank 0): a cycle across the ranks, inboxes and remote rings of 2 slots, 32 messages
 * per rank bouncing on it: once every inbox, ring and credit window on the cycle is full, no lane
 * can move. Each rank's local check stops at the stand-in of the next rank's kernel; the bridges'
 * probes follow the cycle across (with 3 ranks through a rank that only passes them on), and
 * every kernel faults with RK_EDEADLK naming the whole cycle. Terminate then returns on every
 * rank. (Without the probes every lane retries for ever: the wait for the fault fails.) */
static void test_cycle(void **state) {
  static const char *names[3] = {"ping", "pong", "pang"};
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc d = rt_desc(names[g_rank], bounce);
  uint32_t me, other, i, next = (uint32_t)(g_rank + 1) % (uint32_t)g_size;
  rk_kernel *k;
  char why[512], want[192];
  size_t off = 0;
  rk_mpi_stats st;
  uint64_t t0;
  (void)state;
  assert_true(g_size <= 3);
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_patient(rt, g);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 2, &me));
  RT_OK(rt, rk_graph_add_remote(g, next, names[next], 2, &other));
  RT_OK(rt, rk_graph_connect(g, me, other, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  k = rk_graph_kernel(g, me);
  barrier();
  for (i = 0; i < 32; i++) { /* far more than the cycle's inboxes, rings and windows hold */
    item it = {(uint32_t)g_rank, 0, i};
    RT_OK(rt, rk_send(k, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
  }
  t0 = rt_now_ns();
  if (!rt_wait_for(faulted, k, 60 * RT_SEC)) fail_msg("rank %d: a K2K cycle across ranks was not detected", g_rank);
  printf("test_mpi: rank %d: the cycle's fault came %.0f ms after the sends (information, not asserted)\n", g_rank,
         (double)(rt_now_ns() - t0) / 1e6);
  assert_int_equal(rk_kernel_error(k, why, sizeof why), RK_EDEADLK);
  assert_non_null(strstr(why, "K2K deadlock across ranks"));
  for (i = 0; i <= (uint32_t)g_size; i++) { /* this rank's lane, round the ranks, back to it */
    uint32_t r = ((uint32_t)g_rank + i) % (uint32_t)g_size;
    off += (size_t)snprintf(want + off, sizeof want - off, "%srank %u %s lane 0", i ? " -> " : "", r, names[r]);
  }
  if (strstr(why, want) == NULL) fail_msg("rank %d: the fault does not name the cycle (%s): %s", g_rank, want, why);
  assert_true(deadlock_counted(b));
  st = bridge_stats(b);
  assert_true(st.probes >= 2); /* a candidate and its confirmation, at least */
  assert_int_equal(st.deadlocks, 1);
  assert_int_equal(st.probes_refused, 0);
  barrier(); /* all faulted: terminate all at once (a cycle has no upstream) */
  /* its lanes retry until terminate's deadline aborts them (as for a local cycle); the other ranks'
   * kernels terminated too, so the routes refuse what is left on them (RK_ECLOSED) */
  (void)rk_graph_terminate(g, 1 * RT_SEC);
  barrier();
  finish(rt, g, b);
}

static volatile uint64_t g_slow_got;

static int slow_sink(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx;
  (void)in;
  rt_sleep_ms(200); /* longer than the wait a lane needs to start a probe (100 ms) */
  __atomic_add_fetch(&g_slow_got, 1, __ATOMIC_RELAXED);
  return 0;
}

static int slow_got_all(void *arg) { return __atomic_load_n(&g_slow_got, __ATOMIC_RELAXED) >= *(uint64_t *)arg; }

/* Backpressure is no cycle: "front" (rank 0) -> "middle" (rank 1) -> "sink" (rank 0), whose handler
 * sleeps 200 ms a message, every inbox and ring of 2 slots, 24 messages (the chain holds about
 * 14). front's and middle's routes fill, and their lanes wait with no progress for longer than
 * the 100 ms that starts a probe, so both bridges send probes along the chain (rank 1 passes
 * front's on to rank 0), and each ends at the sink, whose lane waits on nothing: no kernel
 * faults, everything arrives. */
static void test_slow_chain(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dfront = rt_desc("front", bounce), dmid = rt_desc("middle", bounce),
                 dsink = rt_desc("sink", slow_sink);
  uint32_t nf, nm, ns;
  uint64_t n = 24;
  rk_mpi_stats st;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_patient(rt, g);
  if (g_rank == 0) {
    RT_OK(rt, rk_graph_add(g, &dfront, NULL, 2, &nf));
    RT_OK(rt, rk_graph_add(g, &dsink, NULL, 2, &ns));
    RT_OK(rt, rk_graph_add_remote(g, 1, "middle", 2, &nm));
    RT_OK(rt, rk_graph_connect(g, nf, nm, NULL));
  } else {
    RT_OK(rt, rk_graph_add(g, &dmid, NULL, 2, &nm));
    RT_OK(rt, rk_graph_add_remote(g, 0, "sink", 2, &ns));
    RT_OK(rt, rk_graph_connect(g, nm, ns, NULL));
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  barrier();
  if (g_rank == 0) {
    uint64_t i;
    for (i = 0; i < n; i++) {
      item it = {0, 0, i};
      RT_OK(rt, rk_send(rk_graph_kernel(g, nf), T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
    }
    assert_true(rt_wait_for(slow_got_all, &n, 100 * RT_SEC)); /* 24 x 200 ms, on a loaded machine */
    assert_int_equal(rk_kernel_state(rk_graph_kernel(g, nf)), RK_STATE_ACTIVE);
    assert_int_equal(rk_kernel_state(rk_graph_kernel(g, ns)), RK_STATE_ACTIVE);
  }
  barrier();
  st = bridge_stats(b);
  assert_true(st.probes > 0); /* the lanes did wait long enough to be probed for */
  assert_int_equal(st.deadlocks, 0);
  assert_int_equal(st.probes_refused, 0);
  if (g_rank == 1) assert_int_equal(rk_kernel_state(rk_graph_kernel(g, nm)), RK_STATE_ACTIVE);
  terminate_in_rank_order(rt, g); /* (rank 0's front first; rank 1's middle has nothing left for the sink) */
  finish(rt, g, b);
}

static volatile int g_circ_stop, g_spin_stop;
#define SLACK_N 5    /* messages per rank: fewer than a hop's inbox, ring and credit window hold */
#define SLACK_SPIN 8 /* threads per rank spinning on the CPU (the machine has 2 cores) */

/* bounce, until g_circ_stop: then each message is dropped, and the cycle drains */
static int circulate(rk_ctx *ctx, const rk_msg *in) {
  int rc;
  if (__atomic_load_n(&g_circ_stop, __ATOMIC_ACQUIRE)) return 0;
  rc = rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in));
  if (rc == RK_EAGAIN) return rc; /* the route is full: again later */
  if (rc == RK_OK) __atomic_add_fetch(&g_bounced, 1, __ATOMIC_RELAXED);
  return 0;
}

static void *spinner(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&g_spin_stop, __ATOMIC_RELAXED)) { /* relaxed: a stop flag, nothing published */
  }
  return NULL;
}

/* A cycle below its capacity is no deadlock: the test_cycle ring of ranks with SLACK_N messages per
 * rank (fewer than its inboxes, rings and credit windows of 2 slots hold), and SLACK_SPIN threads
 * per rank spinning on the CPU for the whole run, so lanes and bridges are descheduled while their
 * routes are full and lanes wait long enough to be probed for. For 3 s: no kernel faults, no
 * deadlock is counted, and messages keep moving (more bounced in the last 1.5 s). Checked: with
 * the confirming probe round removed (one round back at the initiator faults) both the 2- and the
 * 3-rank runs fail; with the "messages staged" check removed (take_probe) the 2-rank run fails. */
static void test_cycle_slack(void **state) {
  static const char *names[3] = {"ping", "pong", "pang"};
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc d = rt_desc(names[g_rank], circulate);
  uint32_t me, other, i, next = (uint32_t)(g_rank + 1) % (uint32_t)g_size;
  pthread_t spin[SLACK_SPIN];
  rk_kernel *k;
  rk_mpi_stats st;
  uint64_t t0, mid = 0, end;
  int faulted_once = 0;
  (void)state;
  assert_true(g_size <= 3);
  __atomic_store_n(&g_circ_stop, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g_spin_stop, 0, __ATOMIC_RELAXED);
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_patient(rt, g);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 2, &me));
  RT_OK(rt, rk_graph_add_remote(g, next, names[next], 2, &other));
  RT_OK(rt, rk_graph_connect(g, me, other, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  k = rk_graph_kernel(g, me);
  barrier();
  for (i = 0; i < SLACK_SPIN; i++) assert_int_equal(pthread_create(&spin[i], NULL, spinner, NULL), 0);
  for (i = 0; i < SLACK_N; i++) {
    item it = {(uint32_t)g_rank, 0, i};
    RT_OK(rt, rk_send(k, T_ITEM, &it, sizeof it, RK_SEND_NO_REPLY, NULL));
  }
  t0 = rt_now_ns();
  while (rt_now_ns() - t0 < 3 * (uint64_t)RT_SEC) {
    if (rk_kernel_state(k) == RK_STATE_FAULTED) faulted_once = 1;
    rt_sleep_ms(5);
  }
  /* still moving: another round of the cycle's messages bounced here after the 3 s (bounded wait:
   * the spinners still run; on a loaded machine a second can pass with nothing bounced) */
  mid = __atomic_load_n(&g_bounced, __ATOMIC_RELAXED);
  t0 = rt_now_ns();
  while ((end = __atomic_load_n(&g_bounced, __ATOMIC_RELAXED)) < mid + SLACK_N &&
         rt_now_ns() - t0 < 30 * (uint64_t)RT_SEC) {
    if (rk_kernel_state(k) == RK_STATE_FAULTED) faulted_once = 1;
    rt_sleep_ms(5);
  }
  __atomic_store_n(&g_spin_stop, 1, __ATOMIC_RELAXED);
  for (i = 0; i < SLACK_SPIN; i++) assert_int_equal(pthread_join(spin[i], NULL), 0);
  st = bridge_stats(b);
  printf("test_mpi: rank %d: %llu bounced, %llu probes (information, not asserted)\n", g_rank,
         (unsigned long long)end, (unsigned long long)st.probes);
  if (faulted_once || rk_kernel_state(k) != RK_STATE_ACTIVE) {
    char why[512];
    why[0] = 0;
    (void)rk_kernel_error(k, why, sizeof why);
    fail_msg("rank %d: a cycle below its capacity faulted: %s", g_rank, why);
  }
  assert_int_equal(st.deadlocks, 0);
  assert_int_equal(st.probes_refused, 0);
  assert_true(end >= mid + SLACK_N); /* still moving */
  barrier();
  __atomic_store_n(&g_circ_stop, 1, __ATOMIC_RELEASE); /* the cycle drains: each message dropped */
  rt_sleep_ms(200);
  barrier();
  /* all at once (a cycle has no upstream): what is still on a route to a terminated kernel is
   * refused (RK_ECLOSED), as in test_cycle */
  (void)rk_graph_terminate(g, 1 * RT_SEC);
  barrier();
  finish(rt, g, b);
}

/* A kernel that forwards one host request twice to rank 1 (docs/k2k.md allows it: its lane owes
 * two answers); rank 1 holds both and closes its bridge: rank 0's bridge answers both with
 * RK_ECLOSED and the terminate finishes. (With one owed entry per request, one answer was made up,
 * the lane kept owing the other and terminate timed out: review of issue15-owed, finding 1.) */
static int front2(rk_ctx *ctx, const rk_msg *in) {
  int rc = rk_forward(ctx, 0, T_HOP, rk_msg_payload(in), rk_msg_len(in));
  if (rc != RK_OK) return rc;
  return rk_forward(ctx, 0, T_HOP, rk_msg_payload(in), rk_msg_len(in));
}
static int delivered_2(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).delivered >= 2; }
static void test_owed_twice(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dfront = rt_desc("front", front2), dback = rt_desc("back", back);
  mpi_pair p = {&dfront, &dback, NULL, NULL, 0, 0, 0, 1};
  uint32_t me;
  (void)state;
  pair_graph_on(rt, &g, &b, NULL, &p, 1, &me); /* rank 1's back holds what it gets */
  barrier();
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    uint64_t v = 11;
    RT_OK(rt, rk_send(k, T_HOP, &v, sizeof v, 0, NULL));
    barrier(); /* rank 1 has both: it closes its bridge now */
    RT_OK(rt, rk_kernel_terminate(k, 30 * RT_SEC)); /* both answers made up: nothing owed */
    assert_int_equal(bridge_stats(b).answers_failed, 2);
    RT_OK(rt, rk_graph_terminate(g, RT_HANG));
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  } else {
    assert_true(rt_wait_for(delivered_2, b, RT_HANG));
    barrier();
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* Rank 0's bridge is destroyed before its graph (supported) while kernel fa (K2K inbox of 4 slots)
 * owes 8 answers and is busy in a handler: stop answers all 8, 4 fit, and the other 4 are retried
 * until fa runs again and takes them, so fa's terminate finishes. (Stop tried once and dropped the
 * rest: the terminate timed out: review of issue15-owed, finding 3.) */
#define T_BLOCK 777u
static volatile int g_hol_in, g_hol_release;
static int front_hol(rk_ctx *ctx, const rk_msg *in) {
  if (in->env.type == T_BLOCK) {
    __atomic_store_n(&g_hol_in, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&g_hol_release, __ATOMIC_SEQ_CST)) rt_sleep_ms(1);
    return 0;
  }
  return rk_forward(ctx, 0, T_HOP, rk_msg_payload(in), rk_msg_len(in));
}
static int hol_in(void *arg) { (void)arg; return __atomic_load_n(&g_hol_in, __ATOMIC_SEQ_CST); }
static int delivered_8(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).delivered >= 8; }
static int sent_8(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= 8; }
/* Rank 0's fa (ka) passes 8 host requests on to rank 1 (its lane owes their answers) and, once the
 * bridge sent them all, is made busy in a handler (T_BLOCK: until g_hol_release). */
static void fa_owes_8_busy(rk_runtime *rt, rk_kernel *ka, rk_mpi_bridge *b) {
  uint64_t v = 11;
  int i;
  for (i = 0; i < 8; i++) RT_OK(rt, rk_send(ka, T_HOP, &v, sizeof v, 0, NULL));
  assert_true(rt_wait_for(sent_8, b, 30 * RT_SEC));
  RT_OK(rt, rk_send(ka, T_BLOCK, &v, sizeof v, RK_SEND_NO_REPLY, NULL));
  assert_true(rt_wait_for(hol_in, NULL, 30 * RT_SEC));
}
static void *release_later(void *arg) {
  (void)arg;
  rt_sleep_ms(300); /* stop is retrying by then */
  __atomic_store_n(&g_hol_release, 1, __ATOMIC_SEQ_CST);
  return NULL;
}
static void test_owed_stopfull(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc da = rt_desc("fa", front_hol), dback = rt_desc("back", back);
  mpi_pair p = {&da, &dback, NULL, NULL, 4, 0, 0, 1};
  uint32_t a = 0;
  (void)state;
  pair_graph_on(rt, &g, &b, NULL, &p, 1, &a); /* a: fa on rank 0; rank 1's back holds what it gets */
  barrier();
  if (g_rank == 0) {
    rk_kernel *ka = rk_graph_kernel(g, a);
    pthread_t t;
    fa_owes_8_busy(rt, ka, b); /* fa is busy: its inbox fills */
    barrier();
    assert_int_equal(pthread_create(&t, NULL, release_later, NULL), 0);
    rk_mpi_bridge_destroy(b); /* before the graph: stop answers what is owed */
    assert_int_equal(pthread_join(t, NULL), 0);
    RT_OK(rt, rk_kernel_terminate(ka, 30 * RT_SEC)); /* every answer in: nothing owed */
    barrier();
    RT_OK(rt, rk_graph_terminate(g, RT_HANG));
    rk_graph_destroy(g);
  } else {
    assert_true(rt_wait_for(delivered_8, b, 30 * RT_SEC));
    barrier();
    barrier();
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* ---------------------------------------- answers owed (owed2) ----------------------------- */

/* An answer whose stamp the origin's rank refuses: rank 1's clock 2 s ahead (beyond rank 0's
 * 500 ms maximum offset), so back's reply to front's forwarded request is refused on rank 0
 * (clock_rejected, dead-lettered on front). The bridge answers the request in its place with
 * RK_ECLOCK, as a kernel answers what it refuses: the host's call gets that error and front's
 * terminate owes nothing. Before, the reply's owed entry went with the refusal and nothing
 * answered: the call waited out its 20 s (RK_ETIMEDOUT) and the terminate its own timeout
 * (review of issue15-owed, finding 4). */
static void test_owed_clock(void **state) {
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dfront = rt_desc("front", front), dback = rt_desc("back", back);
  mpi_pair p = {&dfront, &dback, NULL, NULL, 0, 0, 0, 1};
  uint32_t me;
  int rc;
  (void)state;
  rt = rt_create_skewed_on_1(2000000); /* 2 s ahead of rank 0 */
  pair_graph_on(rt, &g, &b, NULL, &p, 0, &me);
  if (g_rank == 1) { /* a host call: back's lane reads its (skewed) clock, its K2K stamps follow it */
    rk_msg m;
    uint64_t v = 1;
    char r[8];
    RT_OK(rt, rk_call(rk_graph_kernel(g, me), T_HOP, &v, sizeof v, &m, r, sizeof r, RT_HANG));
  }
  barrier();
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    rk_kernel_counters kc;
    rk_mpi_stats st;
    rk_msg m;
    uint64_t v = 7;
    char r[8];
    assert_int_equal(rk_call(k, T_HOP, &v, sizeof v, &m, r, sizeof r, 20 * RT_SEC), RK_EHANDLER);
    assert_int_equal(m.status, RK_ECLOCK); /* the bridge's answer in place of the refused reply */
    st = bridge_stats(b);
    assert_int_equal(st.received, 1);
    assert_int_equal(st.clock_rejected, 1);
    assert_int_equal(st.delivered, 0);
    assert_int_equal(st.answers_failed, 0); /* (RK_ECLOSED answers only) */
    RT_OK(rt, rk_kernel_terminate(k, 30 * RT_SEC)); /* nothing owed */
    kc = rt_stats(k);
    assert_int_equal(kc.dead_letters, 1); /* the refused reply */
    assert_int_equal(kc.k2k_in, 1);       /* one answer: the bridge's */
    RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  }
  barrier();
  if (g_rank == 1) { /* its remote node learns with the credits that rank 0 refused the reply */
    rc = rk_graph_terminate(g, RT_HANG);
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
  }
  barrier();
  finish(rt, g, b);
}

/* rk_graph_destroy without rk_graph_terminate while front owes its caller the answer to a request
 * rank 1 holds: the destroy's transport hook (closing) has the bridge answer it with RK_ECLOSED
 * before the kernels' terminate, so front's terminate (1 s inside the destroy) finds nothing owed.
 * Before, the bridge answered only at its stop, after the kernels' terminate: front's timed out
 * ("terminate timed out", logged at debug level) and the bridge's late answer found its inbox
 * closed (review of issue15-owed, finding 7). */
static volatile int g_term_timeout, g_unreachable;
static void destroy_log(void *user, rk_log_level level, const char *msg) {
  (void)user;
  (void)level;
  if (strstr(msg, "terminate timed out")) __atomic_store_n(&g_term_timeout, 1, __ATOMIC_RELAXED);
  if (strstr(msg, "cannot reach its origin")) __atomic_store_n(&g_unreachable, 1, __ATOMIC_RELAXED);
}
static void test_owed_destroy(void **state) {
  rk_runtime_options ro = rt_options();
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t me;
  (void)state;
  ro.log = destroy_log;
  ro.log_level = RK_LOG_DEBUG;
  rt = rt_create_opts(&ro);
  owed_graph(rt, &g, &b, NULL, &me);
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    uint64_t v = 13;
    rk_mpi_stats st;
    RT_OK(rt, rk_send(k, T_HOP, &v, sizeof v, 0, NULL)); /* a request: front owes this thread the answer */
    barrier(); /* rank 1 holds it */
    rk_graph_destroy(g); /* no terminate first */
    st = bridge_stats(b);
    assert_int_equal(st.sent, 1);
    assert_int_equal(st.answers_failed, 1);
    assert_false(__atomic_load_n(&g_term_timeout, __ATOMIC_RELAXED));
    assert_false(__atomic_load_n(&g_unreachable, __ATOMIC_RELAXED));
    rk_mpi_bridge_destroy(b);
    barrier();
  } else {
    assert_true(rt_wait_for(delivered_1, b, RT_HANG));
    barrier();
    barrier(); /* rank 0 is done */
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* Real answers staged at the stop: fa (K2K inbox of 4 slots) passes 8 host requests on to rank 1
 * and is then busy in a handler; back answers all 8: 4 fill fa's inbox, 4 wait in the bridge's
 * staging queue (their owed entries gone: they arrived). Rank 0's bridge is destroyed before its
 * graph; fa is let go 300 ms later. The stop delivers the staged answers once fa makes room, so
 * fa's terminate finds nothing owed. Before, the stop dropped them (counted as refused) and fa
 * owed 4 answers: its terminate timed out (review of issue15-owed, finding 7). */
static int staged_4(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).staged >= 4; }
static void test_owed_stopstaged(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc da = rt_desc("fa", front_hol), dback = rt_desc("back", back);
  mpi_pair p = {&da, &dback, NULL, NULL, 4, 0, 0, 1}; /* rank 1 has fa as a remote node: where its answers go */
  uint32_t a;
  (void)state;
  pair_graph_on(rt, &g, &b, NULL, &p, 1, &a); /* rank 1's back held until fa is busy */
  barrier();
  if (g_rank == 0) {
    rk_kernel *ka = rk_graph_kernel(g, a);
    pthread_t t;
    fa_owes_8_busy(rt, ka, b); /* fa is busy */
    barrier(); /* back answers now */
    assert_true(rt_wait_for(staged_4, b, 30 * RT_SEC)); /* 4 in fa's inbox, 4 staged */
    assert_int_equal(pthread_create(&t, NULL, release_later, NULL), 0);
    rk_mpi_bridge_destroy(b); /* before the graph: the stop delivers the staged answers */
    assert_int_equal(pthread_join(t, NULL), 0);
    RT_OK(rt, rk_kernel_terminate(ka, 10 * RT_SEC)); /* all 8 answers in: nothing owed */
    assert_int_equal(rt_stats(ka).k2k_in, 8);
    barrier();
    RT_OK(rt, rk_graph_terminate(g, RT_HANG));
    rk_graph_destroy(g);
  } else {
    assert_true(rt_wait_for(delivered_8, b, 30 * RT_SEC));
    barrier();
    RT_OK(rt, rk_kernel_activate(rk_graph_kernel(g, a)));
    barrier();
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* Head-of-line across origins (three ranks): fa and fb (K2K inboxes of 4 slots) pass host requests
 * on, fa 8 to rank 1, fb 5 to rank 2, and both are then busy in a handler. Rank 1 closes its
 * bridge: rank 0's bridge answers fa's 8 with RK_ECLOSED, 4 go in, 4 wait for room; then rank 2
 * closes: fb's 5 answered, 4 go in, 1 waits. fb is let go (fa is not): its waiting answer must go
 * in although fa's inbox stays full, and fb's terminate finds nothing owed. Before, the waiting
 * answers kept one order across all origins: fb's waited behind fa's, and fb's terminate timed
 * out (review of issue15-owed, finding 5). */
static volatile int g_holb_in, g_holb_release;
static int front_holb(rk_ctx *ctx, const rk_msg *in) {
  if (in->env.type == T_BLOCK) {
    __atomic_store_n(&g_holb_in, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&g_holb_release, __ATOMIC_SEQ_CST)) rt_sleep_ms(1);
    return 0;
  }
  return rk_forward(ctx, 0, T_HOP, rk_msg_payload(in), rk_msg_len(in));
}
static int holb_in(void *arg) { (void)arg; return __atomic_load_n(&g_holb_in, __ATOMIC_SEQ_CST); }
static int sent_13(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= 13; }
static int delivered_5(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).delivered >= 5; }
static int failed_8(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).answers_failed >= 8; }
static int failed_13(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).answers_failed >= 13; }
static void test_owed_hol(void **state) {
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc da = rt_desc("fa", front_hol), db = rt_desc("fb", front_holb), dback = rt_desc("back", back);
  uint32_t a, fb, n1, n2;
  (void)state;
  o.peer_timeout_ns = 5 * RT_SEC; /* (nobody dies here: no rank is to be taken for lost) */
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  if (g_rank == 0) {
    RT_OK(rt, rk_graph_add(g, &da, NULL, 4, &a));
    RT_OK(rt, rk_graph_add(g, &db, NULL, 4, &fb));
    RT_OK(rt, rk_graph_add_remote(g, 1, "back", 0, &n1));
    RT_OK(rt, rk_graph_add_remote(g, 2, "back", 0, &n2));
    RT_OK(rt, rk_graph_connect(g, a, n1, NULL));
    RT_OK(rt, rk_graph_connect(g, fb, n2, NULL));
  } else {
    RT_OK(rt, rk_graph_add(g, &dback, NULL, 0, &a));
    RT_OK(rt, rk_graph_add_remote(g, 0, g_rank == 1 ? "fa" : "fb", 0, &n1)); /* the origin */
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  if (g_rank != 0) RT_OK(rt, rk_kernel_deactivate(rk_graph_kernel(g, a))); /* holds what it gets */
  barrier();
  if (g_rank == 0) {
    rk_kernel *ka = rk_graph_kernel(g, a), *kb = rk_graph_kernel(g, fb);
    uint64_t v = 11;
    int i, rc;
    for (i = 0; i < 8; i++) RT_OK(rt, rk_send(ka, T_HOP, &v, sizeof v, 0, NULL));
    for (i = 0; i < 5; i++) RT_OK(rt, rk_send(kb, T_HOP, &v, sizeof v, 0, NULL));
    assert_true(rt_wait_for(sent_13, b, 30 * RT_SEC));
    RT_OK(rt, rk_send(ka, T_BLOCK, &v, sizeof v, RK_SEND_NO_REPLY, NULL));
    RT_OK(rt, rk_send(kb, T_BLOCK, &v, sizeof v, RK_SEND_NO_REPLY, NULL));
    assert_true(rt_wait_for(hol_in, NULL, 30 * RT_SEC));
    assert_true(rt_wait_for(holb_in, NULL, 30 * RT_SEC));
    barrier(); /* both held: rank 1 closes */
    assert_true(rt_wait_for(failed_8, b, 30 * RT_SEC)); /* fa's 8: 4 in, 4 waiting */
    signal_to(2, 91);                                    /* rank 2 closes */
    assert_true(rt_wait_for(failed_13, b, 30 * RT_SEC)); /* fb's 5: 4 in, 1 waiting */
    __atomic_store_n(&g_holb_release, 1, __ATOMIC_SEQ_CST);
    RT_OK(rt, rk_kernel_terminate(kb, 10 * RT_SEC)); /* fb's last answer in although fa is full */
    assert_int_equal(rt_stats(kb).k2k_in, 5);
    __atomic_store_n(&g_hol_release, 1, __ATOMIC_SEQ_CST);
    RT_OK(rt, rk_kernel_terminate(ka, 30 * RT_SEC));
    assert_int_equal(rt_stats(ka).k2k_in, 8);
    rc = rk_graph_terminate(g, 30 * RT_SEC); /* (the routes: closed, maybe unconfirmed) */
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  } else {
    assert_true(rt_wait_for(g_rank == 1 ? delivered_8 : delivered_5, b, 30 * RT_SEC));
    barrier();
    if (g_rank == 2) wait_signal(0, 91);
    rk_mpi_bridge_destroy(b); /* before the graph: the bye goes out, the held requests are never answered */
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* Two hops (three ranks): front (rank 0) -> mid (rank 1) -> back (rank 2, held), back to answer
 * front directly. Rank 1's bridge tells rank 0 that front's request went on to rank 2 (moves_sent
 * there, moves_taken here); rank 2 then closes its bridge while rank 1 lives: rank 0's bridge
 * answers the caller with RK_ECLOSED. Before, rank 0's entry named rank 1, which lives, and
 * rank 1's bridge tracked no request of another rank's kernel: nobody answered, the call waited
 * its 20 s out (RK_ETIMEDOUT) (review of issue15-owed, finding 2). */
static int moves_1(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).moves_sent >= 1; }
static void test_owed_moved(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t me;
  int rc;
  (void)state;
  b = chain3_graph(rt, &g, &me);
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    rk_mpi_stats st;
    rk_msg m;
    uint64_t v = 5;
    char r[8];
    assert_int_equal(rk_call(k, T_HOP, &v, sizeof v, &m, r, sizeof r, 20 * RT_SEC), RK_EHANDLER);
    assert_int_equal(m.status, RK_ECLOSED); /* rank 2 closed: the bridge's answer */
    assert_int_equal(rk_mpi_bridge_peer(b, 2), RK_MPI_PEER_CLOSED);
    assert_int_equal(rk_mpi_bridge_peer(b, 1), RK_MPI_PEER_UP);
    st = bridge_stats(b);
    assert_int_equal(st.moves_taken, 1);
    assert_int_equal(st.moves_refused, 0);
    assert_int_equal(st.answers_failed, 1);
    RT_OK(rt, rk_kernel_terminate(k, 30 * RT_SEC)); /* nothing owed */
  } else if (g_rank == 1) {
    assert_true(rt_wait_for(moves_1, b, 30 * RT_SEC));
    assert_int_equal(bridge_stats(b).moves_sent, 1);
  } else {
    assert_true(rt_wait_for(delivered_1, b, 30 * RT_SEC));
    rk_mpi_bridge_destroy(b); /* before the graph: the bye goes out, the held request is never answered */
    rk_graph_destroy(g);
  }
  barrier();
  if (g_rank != 2) {
    rc = rk_graph_terminate(g, 30 * RT_SEC); /* (routes to rank 2: closed, maybe unconfirmed) */
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* Requests held in the outbound ring behind the route's credit window when the graph is destroyed
 * without its terminate (review of owed2, finding 3): window 2, rank 1's kernel (inbox 2) holds
 * what it gets, rank 0's front forwards 8 host requests; only the first ones go, the rest wait in
 * the ring. The closing hook answers the requests owed from the peer and those waiting at the head
 * of the stalled ring (RK_ECLOSED, not sent), so front's terminate inside the destroy does not time
 * out and every error answer reaches front. Before: the ring's requests were answered only at the
 * stop, after the terminate timed out ("terminate timed out", the answers "cannot reach its
 * origin"). */
static int sent_2(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= 2; }
static void test_owed_stalled(void **state) {
  rk_runtime_options ro = rt_options();
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_runtime *rt;
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t me;
  (void)state;
  o.window = 2;
  ro.log = destroy_log;
  ro.log_level = RK_LOG_DEBUG;
  __atomic_store_n(&g_term_timeout, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g_unreachable, 0, __ATOMIC_RELAXED);
  rt = rt_create_opts(&ro);
  {
    rk_kernel_desc dfront = rt_desc("front", front), dback = rt_desc("back", back);
    mpi_pair p = {&dfront, &dback, NULL, NULL, 0, 2, 0, 1}; /* back: an inbox of 2 */
    pair_graph_on(rt, &g, &b, &o, &p, 1, &me);
    barrier();
  }
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    uint64_t v = 13;
    int i;
    rk_mpi_stats st;
    uint64_t t0;
    for (i = 0; i < 8; i++) RT_OK(rt, rk_send(k, T_HOP, &v, sizeof v, 0, NULL));
    assert_true(rt_wait_for(sent_2, b, 30 * RT_SEC));
    barrier(); /* rank 1 holds what came */
    t0 = rt_now_ns();
    rk_graph_destroy(g); /* no terminate first */
    /* A hang check with a wide margin, not a speed test: the destroy's terminate flushes the remote
     * node, whose credits rank 1 never returns; the flush no longer waits for them once the graph
     * is closing (review of owed2, second review, finding 2). Before, it waited its whole 1 s
     * (measured 1.002 s; 0.001 s after). */
    assert_true(rt_now_ns() - t0 < 500 * (uint64_t)RT_MS);
    st = bridge_stats(b);
    assert_true(st.sent < 8); /* some waited in the ring behind the window */
    assert_int_equal(st.answers_failed, 8);
    assert_false(__atomic_load_n(&g_term_timeout, __ATOMIC_RELAXED));
    assert_false(__atomic_load_n(&g_unreachable, __ATOMIC_RELAXED));
    rk_mpi_bridge_destroy(b);
    barrier();
  } else {
    assert_true(rt_wait_for(delivered_1, b, RT_HANG));
    barrier();
    barrier(); /* rank 0 is done */
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* The closing hook mid-stream while the peer answers normally (review of owed2, finding 5): rank 0
 * forwards 600 host requests, the hook fires after 301; what is owed then and what is forwarded
 * after is answered with RK_ECLOSED, and the real answers that still come are dropped (answers_late
 * >= 1): every forward is answered exactly once (k2k_in == k2k_out). Rank 1 answers each request
 * 300 us after it came (back_slow), so requests are still owed whenever the bridge answers what
 * is owed after the hook: with an instant peer, a loaded machine (ctest -j2, the 2-core CI)
 * sometimes let every answer in before each of the bridge's passes, nothing was ever owed there,
 * and answers_failed stayed 0 (failed in 2 of ~30 fresh-clone runs). */
static int back_slow(rk_ctx *ctx, const rk_msg *in) {
  struct timespec ts = {0, 300000};
  nanosleep(&ts, NULL);
  return rk_reply(ctx, T_RESULT, rk_msg_payload(in), rk_msg_len(in));
}
static int stream_settled(void *arg) {
  rk_mpi_stats st = bridge_stats((rk_mpi_bridge *)arg);
  return st.delivered + st.answers_late == st.sent;
}
static void test_owed_closing_stream(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  uint32_t me;
  (void)state;
  {
    rk_kernel_desc dfront = rt_desc("front", front), dback = rt_desc("back", back_slow);
    mpi_pair p = {&dfront, &dback, NULL, NULL, 0, 0, 0, 1};
    pair_graph_on(rt, &g, &b, NULL, &p, 0, &me);
    barrier();
  }
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    uint64_t v = 13;
    int i;
    rk_kernel_counters kc;
    rk_mpi_stats st;
    for (i = 0; i < 600; i++) {
      (void)rk_send(k, T_HOP, &v, sizeof v, RK_SEND_NOWAIT, NULL);
      if (i == 300) {
        while (bridge_stats(b).delivered < 150) rt_sleep_ms(0);
        ((rk_transport *)b)->closing(b, g);
      }
    }
    RT_OK(rt, rk_kernel_terminate(k, 20 * RT_SEC));
    assert_true(rt_wait_for(stream_settled, b, 30 * RT_SEC)); /* every request sent got its one answer */
    kc = rt_stats(k);
    st = bridge_stats(b);
    assert_true(st.answers_failed >= 1);
    assert_true(st.answers_late >= 1);
    assert_int_equal(kc.k2k_in, kc.k2k_out); /* no double answer, none missing */
    assert_int_equal(kc.msgs_out, kc.msgs_in);
    barrier();
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  } else {
    barrier();
    rk_mpi_bridge_destroy(b);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* A request forwarded twice, to two ranks, whose first forward's entry is answered (its rank closed)
 * before the second forward leaves (review of owed2, finding 7). Rank 0's again0 forwards a host
 * request to rank 1 (held there) and to rank 2, whose route is out of credits (window 1, rank 2's
 * 2-slot inbox full of 3 earlier requests, one staged), so the second forward waits in rank 0's
 * ring. Rank 1 closes: the first forward is answered with RK_ECLOSED. Rank 2 then runs: the second
 * forward goes, is tracked, and its real answer reaches the caller. Before, owed_track returned
 * early on the answered entry: the second forward was not tracked, its real answer was dropped as
 * late (answers_late) and the lane owed it for good (its rk_recv timed out). */
#define T_FILL 303u
static int again0(rk_ctx *ctx, const rk_msg *in) {
  int rc;
  if (in->env.type == T_FILL) return rk_forward(ctx, 1, T_HOP, rk_msg_payload(in), rk_msg_len(in));
  if ((rc = rk_forward(ctx, 0, T_HOP, rk_msg_payload(in), rk_msg_len(in))) != RK_OK) return rc;
  return rk_forward(ctx, 1, T_HOP, rk_msg_payload(in), rk_msg_len(in));
}
static int sent_3(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= 3; }
static int sent_4(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).sent >= 4; }
static int staged_1(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).staged >= 1; }
static void test_owed_again(void **state) {
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_kernel_desc dfront = rt_desc("again0", again0), dback = rt_desc("back", back);
  uint32_t me, n1, n2, n0;
  (void)state;
  o.window = 1;
  o.peer_timeout_ns = 5 * RT_SEC; /* (nobody dies here) */
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  if (g_rank == 0) {
    RT_OK(rt, rk_graph_add(g, &dfront, NULL, 0, &me));
    RT_OK(rt, rk_graph_add_remote(g, 1, "back", 0, &n1));
    RT_OK(rt, rk_graph_add_remote(g, 2, "back", 0, &n2));
    RT_OK(rt, rk_graph_connect(g, me, n1, NULL)); /* route 0 */
    RT_OK(rt, rk_graph_connect(g, me, n2, NULL)); /* route 1 */
  } else {
    RT_OK(rt, rk_graph_add(g, &dback, NULL, 2, &me));
    RT_OK(rt, rk_graph_add_remote(g, 0, "again0", 0, &n0)); /* where its answers go */
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  if (g_rank != 0) RT_OK(rt, rk_kernel_deactivate(rk_graph_kernel(g, me)));
  barrier();
  if (g_rank == 0) {
    rk_kernel *k = rk_graph_kernel(g, me);
    uint64_t v = 7, got;
    int i, real = 0;
    rk_msg m;
    for (i = 0; i < 3; i++) RT_OK(rt, rk_send(k, T_FILL, &v, sizeof v, 0, NULL));
    assert_true(rt_wait_for(sent_3, b, 30 * RT_SEC));
    barrier(); /* rank 2: 2 in its kernel's inbox, 1 staged (no credit): the route to it is stalled */
    RT_OK(rt, rk_send(k, T_HOP, &v, sizeof v, 0, NULL));
    assert_true(rt_wait_for(sent_4, b, 30 * RT_SEC)); /* the forward to rank 1 */
    barrier(); /* rank 1 holds it; the forward to rank 2 waits in the ring */
    RT_OK(rt, rk_recv(k, &m, &got, sizeof got, 20 * RT_SEC)); /* rank 1 closed: the bridge's answer */
    assert_true(rk_msg_is_error(&m));
    assert_int_equal(m.status, RK_ECLOSED);
    assert_int_equal(bridge_stats(b).answers_failed, 1);
    barrier(); /* rank 2 runs now */
    for (i = 0; i < 4; i++) { /* the 3 fills' answers and the second forward's */
      RT_OK(rt, rk_recv(k, &m, &got, sizeof got, 20 * RT_SEC));
      if (!rk_msg_is_error(&m)) real++;
    }
    assert_int_equal(real, 4);
    assert_int_equal(bridge_stats(b).answers_late, 0);
    RT_OK(rt, rk_kernel_terminate(k, 30 * RT_SEC)); /* nothing owed */
  } else if (g_rank == 1) {
    barrier();
    assert_true(rt_wait_for(delivered_1, b, 30 * RT_SEC));
    barrier();
    rk_mpi_bridge_destroy(b); /* before the graph: the bye goes out, the held request is never answered */
    rk_graph_destroy(g);
    barrier();
  } else {
    assert_true(rt_wait_for(staged_1, b, 30 * RT_SEC));
    barrier();
    barrier();
    barrier();
    RT_OK(rt, rk_kernel_activate(rk_graph_kernel(g, me)));
  }
  barrier();
  if (g_rank != 1) {
    int rc = rk_graph_terminate(g, 30 * RT_SEC); /* (routes to rank 1: closed) */
    assert_true(rc == RK_OK || rc == RK_ECLOSED);
    rk_graph_destroy(g);
    rk_mpi_bridge_destroy(b);
  }
  rk_runtime_destroy(rt);
  barrier();
}

/* ---------------------------------------- lane-driven progress ----------------------------- */

static uint64_t g_pp_left;  /* pp_ping's lane: round trips still to go */
static volatile int g_pp_done; /* atomics: the lane sets it, the host reads */

/* A K2K ping-pong between pp_ping on rank 0 and pp_pong on rank 1 (rk-bench mpi's mpi.hop): the
 * host message starts it, each pong sends the next ping (one message in flight: no RK_EAGAIN). */
static int pp_ping(rk_ctx *ctx, const rk_msg *in) {
  uint64_t v = 0;
  if (rk_msg_type_of(in) == T_PONG && --g_pp_left == 0) {
    __atomic_store_n(&g_pp_done, 1, __ATOMIC_RELEASE); /* pairs with pp_done's acquire */
    return 0;
  }
  return rk_send_to(ctx, 0, T_PING, &v, sizeof v);
}

static int pp_pong(rk_ctx *ctx, const rk_msg *in) { return rk_send_to(ctx, 0, T_PONG, rk_msg_payload(in), rk_msg_len(in)); }

static int pp_done(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_pp_done, __ATOMIC_ACQUIRE);
}

static rk_mpi_stats lane_pingpong(int lane_drive, uint64_t n) {
  rk_kernel_desc dping = rt_desc("pp_ping", pp_ping), dpong = rt_desc("pp_pong", pp_pong);
  rk_mpi_options o = RK_MPI_OPTIONS_INIT;
  rk_runtime *rt = rt_create();
  rk_graph *g;
  rk_mpi_bridge *b;
  rk_mpi_stats st;
  uint32_t me, other;
  uint64_t zero = 0;
  o.lane_drive = lane_drive;
  RT_OK(rt, rk_graph_create(rt, &g));
  b = bridge_on(rt, g, &o);
  RT_OK(rt, rk_graph_add(g, g_rank == 0 ? &dping : &dpong, NULL, 0, &me));
  RT_OK(rt, rk_graph_add_remote(g, (uint32_t)(1 - g_rank), g_rank == 0 ? "pp_pong" : "pp_ping", 0, &other));
  RT_OK(rt, rk_graph_connect(g, me, other, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  barrier();
  if (g_rank == 0) {
    g_pp_left = n;
    __atomic_store_n(&g_pp_done, 0, __ATOMIC_RELAXED);
    RT_OK(rt, rk_send(rk_graph_kernel(g, me), T_ITEM, &zero, sizeof zero, RK_SEND_NO_REPLY, NULL));
    assert_true(rt_wait_for(pp_done, NULL, 60 * RT_SEC));
  }
  barrier();
  st = bridge_stats(b);
  terminate_in_rank_order(rt, g);
  finish(rt, g, b);
  return st;
}

/* Idle CPU lanes run the bridge's passes themselves (docs/mpi.md, "Lane-driven progress"): in a
 * ping-pong each rank's lane, waiting for the answer to what it just sent, receives it itself and
 * delivers it into its own inbox. Counted, not timed: lane_passes and lane_delivered (0 before the
 * feature, and with lane_drive -1); every envelope is delivered either way. lane_drive 1 turns it
 * on whatever RK_MPI_LANE_DRIVE says: the run sets it to 0 (an A/B run of the suite sets it so),
 * so the test passes in such a run too. */
static void test_lane_drive(void **state) {
  uint64_t n = RT_SANITIZED ? 500 : 2000; /* (a few ms per round trip at load 50: well in its limit) */
  rk_mpi_stats on, off;
  const char *env = getenv("RK_MPI_LANE_DRIVE");
  char *was = env ? strdup(env) : NULL;
  (void)state;
  assert_true(env == NULL || was != NULL);
  /* (rk_mpi_bridge_create reads it on this thread; no other thread of the test reads the environment) */
  assert_int_equal(setenv("RK_MPI_LANE_DRIVE", "0", 1), 0);
  on = lane_pingpong(1, n);
  if (was) {
    assert_int_equal(setenv("RK_MPI_LANE_DRIVE", was, 1), 0);
    free(was);
  } else {
    assert_int_equal(unsetenv("RK_MPI_LANE_DRIVE"), 0);
  }
  printf("test_mpi lane_drive: rank %d: %llu lane passes, %llu of %llu envelopes delivered by them\n", g_rank,
         (unsigned long long)on.lane_passes, (unsigned long long)on.lane_delivered, (unsigned long long)on.delivered);
  assert_int_equal(on.delivered, n);
  assert_int_equal(on.received, n);
  assert_true(on.lane_passes > 0);
  assert_true(on.lane_delivered > 0);
  assert_true(on.lane_delivered <= on.delivered);
  assert_int_equal(on.peers_lost, 0);
  off = lane_pingpong(-1, n);
  assert_int_equal(off.delivered, n);
  assert_int_equal(off.lane_passes, 0);
  assert_int_equal(off.lane_delivered, 0);
}

/* ---------------------------------------- main --------------------------------------------- */

int main(int argc, char **argv) {
  int provided = 0, rc;
  const struct CMUnitTest all[] = {
      cmocka_unit_test(test_pipeline),    cmocka_unit_test(test_fan_in), cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_order),       cmocka_unit_test(test_hlc_skew), cmocka_unit_test(test_rank_killed),
      cmocka_unit_test(test_keyed),       cmocka_unit_test(test_launch),     cmocka_unit_test(test_arguments),
      cmocka_unit_test(test_comm_reuse),
      cmocka_unit_test(test_teardown),    cmocka_unit_test(test_refused),  cmocka_unit_test(test_idle),
      cmocka_unit_test(test_owed_lost),   cmocka_unit_test(test_owed_closed), cmocka_unit_test(test_hello),
      cmocka_unit_test(test_owed_late),   cmocka_unit_test(test_owed_twice), cmocka_unit_test(test_owed_stopfull),
      cmocka_unit_test(test_cycle),       cmocka_unit_test(test_slow_chain),
      cmocka_unit_test(test_cycle_slack),
      cmocka_unit_test(test_owed_clock),  cmocka_unit_test(test_owed_destroy), cmocka_unit_test(test_owed_stopstaged),
      cmocka_unit_test(test_owed_hol),    cmocka_unit_test(test_owed_moved),
      cmocka_unit_test(test_owed_stalled), cmocka_unit_test(test_owed_closing_stream),
      cmocka_unit_test(test_owed_again),  cmocka_unit_test(test_lane_drive),
  };
  int killed;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS || provided != MPI_THREAD_MULTIPLE) {
    fprintf(stderr, "test_mpi: MPI_THREAD_MULTIPLE not provided\n");
    return 1;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_scenario = argc > 1 ? argv[1] : "";
  {
    char filter[64];
    snprintf(filter, sizeof filter, "test_%s", g_scenario);
    cmocka_set_test_filter(filter);
  }
  rc = cmocka_run_group_tests_name(g_scenario, all, NULL, NULL);
  killed = strcmp(g_scenario, "rank_killed") == 0 || strcmp(g_scenario, "owed_lost") == 0; /* rank 1 dies */
  if (rc != 0 && !killed) /* the other ranks may wait for this one: end the job */
    MPI_Abort(MPI_COMM_WORLD, 1);
  if (killed) {
    /* Open MPI 4.1 cannot finalize with a dead rank: rank 0 says it survived and leaves. */
    if (rc == 0 && g_rank == 0) printf("test_mpi: rank 0 survived the loss of rank 1\n");
    fflush(stdout);
    _exit(rc ? 1 : 0);
  }
  MPI_Finalize();
  return rc ? 1 : 0;
}
