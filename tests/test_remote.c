/* test_remote.c — remote nodes of a graph and the transport seam (ringkernel/remote.h) without
 * MPI: RK_ENOTSUP with no transport, argument checks, and a fake transport driven by the test
 * (the bridge's part: drain a remote node's outbound ring, deliver into a local kernel) that
 * checks what handlers see: RK_EAGAIN when the ring is full, RK_EMSGSIZE above the remote limit,
 * RK_ECLOSED once the route is closed; start, flush and stop each called when they should be.
 * Runs in every sanitizer build (the MPI tests do not: tests/mpi.cmake). White-box in one place
 * (librk.a, host/internal.h): rk__fault_if_running_hook puts a terminate between a transport's
 * deadlock fault and its state check. */
#include "rt_util.h"

#include "host/internal.h"
#include <pthread.h>
#include <ringkernel/remote.h>

#define T_ITEM 401u

typedef struct fake {
  int starts, flushes, stops;
  int fail_start;
  uint32_t remote_node;
  uint32_t shape_lanes, shape_payload; /* start reshapes the remote node when shape_lanes != 0 */
  int shape_rc[3];                     /* start's rk_graph_remote_shape results: bad lanes, a local node, the shape */
  rk_kernel *must_be_done;             /* flush: this local kernel has terminated already */
  int flushed_after;                   /* how many flushes found it terminated */
  rk_graph_node_info remote;
} fake;

static int fake_start(void *self, rk_graph *g) {
  fake *f = (fake *)self;
  f->starts++;
  if (f->fail_start) return rk_transport_fail(g, RK_ETIMEDOUT, "fake: the peers did not answer");
  if (f->shape_lanes) { /* what the peer said of its kernel: only here may the node be reshaped */
    f->shape_rc[0] = rk_graph_remote_shape(g, f->remote_node, 0, f->shape_payload);
    f->shape_rc[1] = rk_graph_remote_shape(g, f->remote_node + 1, f->shape_lanes, f->shape_payload);
    f->shape_rc[2] = rk_graph_remote_shape(g, f->remote_node, f->shape_lanes, f->shape_payload);
  }
  memset(&f->remote, 0, sizeof f->remote);
  f->remote.size = sizeof f->remote;
  assert_int_equal(rk_graph_node(g, f->remote_node, &f->remote), RK_OK);
  return RK_OK;
}
static int fake_flush(void *self, rk_graph *g, uint32_t node, int64_t timeout_ns) {
  fake *f = (fake *)self;
  (void)g;
  (void)timeout_ns;
  assert_int_equal(node, f->remote_node);
  f->flushes++;
  if (f->must_be_done && rk_kernel_state(f->must_be_done) == RK_STATE_TERMINATED) f->flushed_after++;
  return RK_OK;
}
static void fake_stop(void *self, rk_graph *g) {
  (void)g;
  ((fake *)self)->stops++;
}

static const rk_transport fake_ops = {sizeof(rk_transport), "fake", 0, 2, fake_start, fake_flush, fake_stop, NULL, NULL};

static volatile uint64_t g_rc_ok, g_rc_eagain, g_rc_emsgsize, g_rc_eclosed, g_sunk;

static int sender(rk_ctx *ctx, const rk_msg *in) {
  int rc = rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in));
  volatile uint64_t *c = rc == RK_OK ? &g_rc_ok : rc == RK_EAGAIN ? &g_rc_eagain : rc == RK_EMSGSIZE ? &g_rc_emsgsize
                                                                                                      : &g_rc_eclosed;
  __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
  return 0; /* the test counts; no retry */
}

static int sink(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx;
  (void)in;
  __atomic_add_fetch(&g_sunk, 1, __ATOMIC_RELAXED);
  return 0;
}

static void test_no_transport(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  uint32_t node = 7;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  assert_int_equal(rk_graph_add_remote(g, 1, "enrich", 0, &node), RK_ENOTSUP);
  assert_non_null(strstr(rk_runtime_last_error(rt), "librk_mpi"));
  assert_int_equal(rk_graph_add_remote(NULL, 1, "enrich", 0, &node), RK_EINVAL);
  assert_int_equal(rk_graph_nodes(g), 0);
  assert_ptr_equal(rk_graph_runtime(g), rt);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

static void test_arguments(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  rk_transport bad = fake_ops;
  rk_kernel_desc d = rt_desc("sender", sender);
  uint32_t node, local;
  rk_graph_node_info info;
  (void)state;
  memset(&f, 0, sizeof f);
  RT_OK(rt, rk_graph_create(rt, &g));
  bad.flush = NULL;
  assert_int_equal(rk_graph_set_transport(g, &bad, &f), RK_EINVAL);
  assert_int_equal(rk_graph_set_transport(NULL, &fake_ops, &f), RK_EINVAL);
  RT_OK(rt, rk_graph_set_transport(g, &fake_ops, &f));
  assert_int_equal(rk_graph_set_transport(g, &fake_ops, &f), RK_ESTATE); /* one at a time */
  assert_int_equal(rk_graph_add_remote(g, 0, "x", 0, &node), RK_EINVAL);  /* this process's own rank */
  assert_int_equal(rk_graph_add_remote(g, 2, "x", 0, &node), RK_EINVAL);  /* not in the communicator */
  assert_int_equal(rk_graph_add_remote(g, 1, "", 0, &node), RK_EINVAL);
  assert_int_equal(rk_graph_add_remote(g, 1, "x", 3, &node), RK_EINVAL);  /* not a power of two */
  assert_int_equal(rk_graph_add_remote(g, 1, NULL, 0, &node), RK_EINVAL);
  assert_int_equal(rk_graph_add_remote(g, 1,
                                       "a-name-of-sixty-four-bytes-is-one-too-long-for-the-node-name-field", 0, &node),
                   RK_EINVAL);
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &local));
  RT_OK(rt, rk_graph_add_remote(g, 1, "enrich", 8, &node));
  assert_int_equal(rk_graph_set_transport(g, &fake_ops, &f), RK_ESTATE); /* remote nodes exist */
  assert_int_equal(rk_graph_connect(g, node, local, NULL), RK_EINVAL);    /* its routes are on its rank */
  assert_int_equal(rk_graph_subscribe(g, node, 3), RK_EINVAL);
  RT_OK(rt, rk_graph_connect(g, local, node, NULL));
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  RT_OK(rt, rk_graph_node(g, node, &info));
  assert_int_equal(info.remote, 1);
  assert_int_equal(info.rank, 1);
  assert_string_equal(info.name, "enrich");
  assert_int_equal(info.k2k_capacity, 8);
  info.size = 4;
  assert_int_equal(rk_graph_node(g, node, &info), RK_EINVAL);
  assert_null(rk_graph_remote_ring(g, node, 0)); /* not launched */
  rk_graph_destroy(g);
  assert_int_equal(f.stops, 1); /* never started, still told the graph is gone */
  assert_int_equal(f.starts, 0);
  rk_runtime_destroy(rt);
}

static void test_failed_start(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  rk_kernel_desc d = rt_desc("sender", sender);
  uint32_t node, local;
  (void)state;
  memset(&f, 0, sizeof f);
  f.fail_start = 1;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &fake_ops, &f));
  RT_OK(rt, rk_graph_add(g, &d, NULL, 0, &local));
  RT_OK(rt, rk_graph_add_remote(g, 1, "enrich", 0, &node));
  RT_OK(rt, rk_graph_connect(g, local, node, NULL));
  assert_int_equal(rk_graph_launch(g), RK_ETIMEDOUT);
  assert_non_null(strstr(rk_runtime_last_error(rt), "did not answer"));
  assert_int_equal(f.starts, 1);
  assert_int_equal(f.stops, 1);
  assert_null(rk_graph_kernel(g, local)); /* nothing stays launched */
  assert_int_equal(rk_graph_launch(g), RK_ENOTSUP); /* the transport is detached */
  rk_graph_destroy(g);
  assert_int_equal(f.stops, 1);
  rk_runtime_destroy(rt);
}

static int sent_n(void *arg) {
  return __atomic_load_n(&g_rc_ok, __ATOMIC_RELAXED) + __atomic_load_n(&g_rc_eagain, __ATOMIC_RELAXED) +
             __atomic_load_n(&g_rc_emsgsize, __ATOMIC_RELAXED) + __atomic_load_n(&g_rc_eclosed, __ATOMIC_RELAXED) >=
         *(uint64_t *)arg;
}
static int sunk_n(void *arg) { return __atomic_load_n(&g_sunk, __ATOMIC_RELAXED) >= *(uint64_t *)arg; }

static void test_fake_transport(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  rk_kernel_desc ds = rt_desc("sender", sender), dk = rt_desc("sink", sink);
  uint32_t remote, local, snk, i;
  uint64_t want, pos;
  rk_ring *ring;
  rk_graph_node_info si;
  uint8_t big[32] = {0};
  (void)state;
  memset(&f, 0, sizeof f);
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &fake_ops, &f));
  /* the sink after the remote node: Kahn's order alone (sender, remote, sink) would close the
   * remote node before the sink terminates */
  RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, &local));
  RT_OK(rt, rk_graph_add_remote(g, 1, "enrich", 4, &remote));
  RT_OK(rt, rk_graph_add(g, &dk, NULL, 0, &snk));
  f.remote_node = remote;
  f.shape_lanes = 2; /* the remote kernel: 2 lanes, 16-byte payloads */
  f.shape_payload = 16;
  RT_OK(rt, rk_graph_connect(g, local, remote, NULL));
  RT_OK(rt, rk_graph_launch(g));
  assert_int_equal(f.starts, 1);
  assert_null(rk_graph_kernel(g, remote));
  assert_int_equal(f.shape_rc[0], RK_EINVAL); /* no lanes */
  assert_int_equal(f.shape_rc[1], RK_EINVAL); /* not a remote node (the sink) */
  assert_int_equal(f.shape_rc[2], RK_OK);
  assert_non_null(ring = rk_graph_remote_ring(g, remote, 0));
  assert_non_null(rk_graph_remote_ring(g, remote, 1)); /* the lanes the transport said */
  assert_int_not_equal(f.remote.kernel_id, 0);
  assert_int_equal(f.remote.lanes, 2);
  assert_int_equal(f.remote.payload_max, 16);
  /* after start: the rings may be in use (the bridge drains them, handlers push): refused */
  assert_int_equal(rk_graph_remote_shape(g, remote, 4, 16), RK_ESTATE);
  assert_non_null(strstr(rk_runtime_last_error(rt), "only in the transport's start"));
  assert_ptr_equal(rk_graph_remote_ring(g, remote, 0), ring); /* unchanged */
  assert_null(rk_graph_remote_ring(g, remote, 2));
  RT_OK(rt, rk_graph_activate(g));
  /* 6 sends into a ring of 4 that nobody drains: 4 accepted, 2 RK_EAGAIN */
  for (i = 0; i < 6; i++) RT_OK(rt, rk_send(rk_graph_kernel(g, local), T_ITEM, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  want = 6;
  assert_true(rt_wait_for(sent_n, &want, RT_HANG));
  assert_int_equal(__atomic_load_n(&g_rc_ok, __ATOMIC_RELAXED), 4);
  assert_int_equal(__atomic_load_n(&g_rc_eagain, __ATOMIC_RELAXED), 2);
  RT_OK(rt, rk_send(rk_graph_kernel(g, local), T_ITEM, big, sizeof big, RK_SEND_NO_REPLY, NULL)); /* above 16 */
  want = 7;
  assert_true(rt_wait_for(sent_n, &want, RT_HANG));
  assert_int_equal(__atomic_load_n(&g_rc_emsgsize, __ATOMIC_RELAXED), 1);
  /* the transport's part: drain, and deliver into a local kernel (as if from a peer) */
  memset(&si, 0, sizeof si);
  si.size = sizeof si;
  RT_OK(rt, rk_graph_node(g, snk, &si));
  assert_int_equal(rk_ring_peek_n(ring, 8, &pos), 4);
  for (i = 0; i < 4; i++) {
    rk_envelope e;
    uint32_t v;
    memcpy(&e, rk_ring_slot(ring, pos + i), sizeof e);
    assert_int_equal(e.dst, f.remote.kernel_id);
    assert_true(e.flags & RK_ENV_F_K2K);
    assert_int_equal(e.payload_len, sizeof v);
    memcpy(&v, rk_ring_slot(ring, pos + i) + RK_ENVELOPE_SIZE, sizeof v);
    assert_int_equal(v, i); /* in order */
    e.dst = si.kernel_id;
    RT_OK(rt, rk_graph_deliver(g, snk, 0, &e, &v));
  }
  rk_ring_release_n(ring, 4);
  want = 4;
  assert_true(rt_wait_for(sunk_n, &want, RT_HANG));
  assert_int_equal(rk_graph_deliver(g, remote, 0, (const rk_envelope *)rk_ring_slot(ring, pos), NULL), RK_EINVAL);
  /* the peer is lost: the route closes and sends get RK_ECLOSED at once */
  assert_int_equal(rk_graph_remote_close(g, remote), 0);
  RT_OK(rt, rk_send(rk_graph_kernel(g, local), T_ITEM, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  want = 8;
  assert_true(rt_wait_for(sent_n, &want, RT_HANG));
  assert_int_equal(__atomic_load_n(&g_rc_eclosed, __ATOMIC_RELAXED), 1);
  f.must_be_done = rk_graph_kernel(g, snk);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  assert_int_equal(f.flushes, 1);
  assert_int_equal(f.flushed_after, 1); /* every local kernel drained before the remote node closed */
  assert_int_equal(f.stops, 0);
  rk_graph_destroy(g);
  assert_int_equal(f.stops, 1);
  rk_runtime_destroy(rt);
}

/* A handler that asks to be run again while its remote route is full: the lane retries, and after
 * RK_K2K_DEADLOCK_NS its deadlock check walks the chain of waits into the remote node's stand-in
 * lane. That lane's status was calloc'd, misaligned for rk_lane_status's 128 bytes (UBSan stops
 * the ASan build there: found in mpi_fan_in under load); and a lane waiting on a remote node is no
 * cycle: the kernel must stay ACTIVE. */
static volatile int g_release;
static int retrier(rk_ctx *ctx, const rk_msg *in) {
  int rc = rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in));
  if (rc == RK_EAGAIN && !__atomic_load_n(&g_release, __ATOMIC_ACQUIRE)) {
    __atomic_add_fetch(&g_rc_eagain, 1, __ATOMIC_RELAXED);
    return RK_EAGAIN; /* run me again later */
  }
  __atomic_add_fetch(rc == RK_OK ? &g_rc_ok : &g_rc_eclosed, 1, __ATOMIC_RELAXED);
  return 0;
}
static int retried_enough(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_rc_eagain, __ATOMIC_RELAXED) >= 2000; /* >= 20 000 us of 20 us back-offs */
}

static int settled_n(void *arg) {
  return __atomic_load_n(&g_rc_ok, __ATOMIC_RELAXED) + __atomic_load_n(&g_rc_eclosed, __ATOMIC_RELAXED) >=
         *(uint64_t *)arg;
}

static int not_waiting(void *arg) {
  rk_graph_wait w;
  memset(&w, 0, sizeof w);
  w.size = sizeof w;
  return rk_graph_lane_wait((rk_graph *)arg, 0, 0, &w) == RK_OK && !w.waiting;
}

/* The graph of the retrier tests, on the fake transport f (cleared here): "retrier" routed to the
 * remote node "enrich" (4 slots; remote_lanes lanes, 16-byte payloads, as f's start says),
 * launched and activated, and 5 messages sent: 4 fill the ring nobody drains, the 5th retries
 * (waited for, hang-checked). *local and *remote receive the nodes' numbers. */
static rk_graph *retrier_graph(rk_runtime *rt, fake *f, uint32_t remote_lanes, uint32_t *local, uint32_t *remote) {
  rk_graph *g;
  rk_kernel_desc ds = rt_desc("retrier", retrier);
  uint32_t i;
  memset(f, 0, sizeof *f);
  g_rc_ok = g_rc_eagain = g_rc_emsgsize = g_rc_eclosed = 0;
  g_release = 0;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &fake_ops, f));
  RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, local));
  RT_OK(rt, rk_graph_add_remote(g, 1, "enrich", 4, remote));
  f->remote_node = *remote;
  f->shape_lanes = remote_lanes;
  f->shape_payload = 16;
  RT_OK(rt, rk_graph_connect(g, *local, *remote, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  for (i = 0; i < 5; i++) RT_OK(rt, rk_send(rk_graph_kernel(g, *local), T_ITEM, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  /* 4 fill the ring nobody drains; the 5th retries for well over RK_K2K_DEADLOCK_NS (100 ms) */
  assert_true(rt_wait_for(retried_enough, NULL, RT_HANG));
  return g;
}

static void retry_round(uint32_t remote_lanes) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  uint32_t remote, local;
  uint64_t want, progress;
  rk_graph_wait w;
  char why[512];
  g = retrier_graph(rt, &f, remote_lanes, &local, &remote);
  rt_sleep_ms(200);
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, local)), RK_STATE_ACTIVE); /* no deadlock fault */
  /* what a transport's deadlock detection reads (another thread than the lane's: TSan): the lane
   * waits on lane 0 of the remote node (its index modulo the remote lanes), its progress still */
  memset(&w, 0, sizeof w);
  w.size = sizeof w;
  RT_OK(rt, rk_graph_lane_wait(g, local, 0, &w));
  assert_int_equal(w.waiting, 1);
  assert_int_equal(w.to_node, remote);
  assert_int_equal(w.to_lane, 0);
  progress = w.progress;
  RT_OK(rt, rk_graph_lane_wait(g, local, 0, &w));
  assert_int_equal(w.progress, progress);
  assert_int_equal(rk_graph_lane_wait(g, remote, 0, &w), RK_EINVAL); /* a remote node: its lanes are elsewhere */
  assert_int_equal(rk_graph_lane_wait(g, local, 1, &w), RK_EINVAL);  /* one lane */
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk_graph_lane_wait: kernel retrier has 1 lanes, not lane 1"));
  assert_int_equal(rk_graph_lane_wait(NULL, local, 0, &w), RK_EINVAL);
  assert_int_equal(rk_graph_lane_wait(g, local, 0, NULL), RK_EINVAL);
  w.size = 4;
  assert_int_equal(rk_graph_lane_wait(g, local, 0, &w), RK_EINVAL);
  __atomic_store_n(&g_release, 1, __ATOMIC_RELEASE);
  want = 5;
  assert_true(rt_wait_for(settled_n, &want, RT_HANG));
  assert_int_equal(__atomic_load_n(&g_rc_ok, __ATOMIC_RELAXED), 4); /* the 5th: refused once released */
  assert_true(rt_wait_for(not_waiting, g, RT_HANG)); /* the retry is over: no edge */
  /* a transport that found a cycle faults the kernel, naming it */
  assert_int_equal(rk_graph_fault_deadlock(g, local, NULL), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk_graph_fault_deadlock: cycle is NULL"));
  assert_int_equal(rk_graph_fault_deadlock(g, remote, "x"), RK_EINVAL);
  assert_int_equal(rk_graph_fault_deadlock(NULL, local, "x"), RK_EINVAL);
  RT_OK(rt,
        rk_graph_fault_deadlock(g, local, "rank 0 retrier lane 0 -> rank 1 enrich lane 0 -> rank 0 retrier lane 0"));
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, local)), RK_STATE_FAULTED);
  assert_int_equal(rk_kernel_error(rk_graph_kernel(g, local), why, sizeof why), RK_EDEADLK);
  assert_non_null(strstr(why, "K2K deadlock across ranks"));
  assert_non_null(strstr(why, "(rank 0 retrier lane 0 -> rank 1 enrich lane 0 -> rank 0 retrier lane 0)"));
  assert_int_equal(rk_graph_fault_deadlock(g, local, "again"), RK_ESTATE); /* faulted: said once */
  assert_non_null(strstr(rk_runtime_last_error(rt), "faulted already"));
  w.size = sizeof w;
  RT_OK(rt, rk_graph_lane_wait(g, local, 0, &w)); /* (faulted for a deadlock: its edges still count) */
  (void)rk_graph_terminate(g, RT_HANG);
  RT_OK(rt, rk_graph_lane_wait(g, local, 0, &w));
  assert_int_equal(w.waiting, 0); /* terminated: no edge */
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}
static void test_retry_on_remote_route(void **state) {
  int round;
  (void)state;
  /* a few shapes: a calloc'd status was 128-byte aligned or not by chance (under ASan, blocks of
   * one status came 128-aligned, of two or three 64- or 128-aligned) */
  for (round = 0; round < 4; round++) retry_round(1 + (uint32_t)round % 3);
}

/* rk__fault_if_running_hook: the whole of a terminate runs at the point where a transport's
 * rk_graph_fault_deadlock has decided to fault (as when the bridge's thread is preempted there) */
static rk_graph *g_term_g;
static int g_term_rc = -1;
static void terminate_first(rk_kernel *k) {
  (void)k;
  __atomic_store_n(&g_release, 1, __ATOMIC_RELEASE); /* the retrier lets go: terminate can drain it */
  g_term_rc = rk_graph_terminate(g_term_g, RT_HANG);
}

/* A transport's deadlock fault that lands while a terminate finishes: the kernel stays TERMINATED,
 * not FAULTED after terminate returned (it was: the state was checked before the fault was taken,
 * and rk_graph_destroy then counted the kernel as not stopped and kept the graph: a leak, ASan). */
static void test_fault_deadlock_vs_terminate(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  uint32_t remote, local;
  (void)state;
  g = retrier_graph(rt, &f, 1, &local, &remote); /* retrying on the full route: ACTIVE */
  g_term_g = g;
  g_term_rc = -1;
  __atomic_store_n(&rk__fault_if_running_hook, terminate_first, __ATOMIC_RELAXED);
  assert_int_equal(rk_graph_fault_deadlock(g, local, "rank 0 retrier lane 0 -> rank 1 enrich lane 0"), RK_ESTATE);
  __atomic_store_n(&rk__fault_if_running_hook, NULL, __ATOMIC_RELAXED);
  RT_OK(rt, g_term_rc);
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, local)), RK_STATE_TERMINATED); /* not FAULTED */
  rk_graph_destroy(g); /* frees the graph (ASan: no leak) */
  rk_runtime_destroy(rt);
}

/* A transport's thread reading the wait edges and faulting for a deadlock (as the bridge does every
 * 10 ms) while the user restarts the kernel it faulted, then terminates it: TSan checks the lane
 * edges read against a restart's clearing them; the kernel ends TERMINATED, not FAULTED. */
static rk_graph *g_reader_g;
static int g_reader_stop, g_reader_bad;
static void *edge_reader(void *arg) {
  uint64_t n = 0;
  (void)arg;
  while (!__atomic_load_n(&g_reader_stop, __ATOMIC_ACQUIRE)) {
    rk_graph_wait w;
    int rc;
    memset(&w, 0, sizeof w);
    w.size = sizeof w;
    rc = rk_graph_lane_wait(g_reader_g, 0, 0, &w);
    if (rc != RK_OK) __atomic_add_fetch(&g_reader_bad, 1, __ATOMIC_RELAXED); /* (cmocka asserts: main thread) */
    rc = rk_graph_fault_deadlock(g_reader_g, 0, "rank 0 retrier lane 0 -> rank 1 enrich lane 0");
    if (rc != RK_OK && rc != RK_ESTATE) __atomic_add_fetch(&g_reader_bad, 1, __ATOMIC_RELAXED);
    n++;
  }
  return (void *)(uintptr_t)n;
}

static void test_lane_wait_during_restart(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  uint32_t remote, local, round;
  pthread_t th;
  void *reads;
  int rc;
  (void)state;
  g = retrier_graph(rt, &f, 1, &local, &remote);
  g_reader_g = g;
  __atomic_store_n(&g_reader_stop, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g_reader_bad, 0, __ATOMIC_RELAXED);
  assert_int_equal(pthread_create(&th, NULL, edge_reader, NULL), 0);
  for (round = 0; round < 20; round++) {
    rt_sleep_ms(5);
    rc = rk_kernel_restart(rk_graph_kernel(g, local), 0); /* RK_ESTATE when the reader has not faulted it */
    assert_true(rc == RK_OK || rc == RK_ESTATE);
  }
  __atomic_store_n(&g_release, 1, __ATOMIC_RELEASE);
  (void)rk_graph_terminate(g, RT_HANG);
  rt_sleep_ms(20); /* the reader goes on faulting: refused now */
  __atomic_store_n(&g_reader_stop, 1, __ATOMIC_RELEASE);
  assert_int_equal(pthread_join(th, &reads), 0);
  assert_true((uintptr_t)reads > 0);
  assert_int_equal(__atomic_load_n(&g_reader_bad, __ATOMIC_RELAXED), 0);
  assert_int_equal(rk_kernel_state(rk_graph_kernel(g, local)), RK_STATE_TERMINATED);
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* A remote kernel's payload limit near 2^32 (a transport passing on what a peer said) does not
 * wrap the slot size computed from it: payload_max + 64 (now + 80) wrapped to 48, a slot smaller than an
 * envelope, and the node's payload limit to 2^32 - 16. The limit only ever lowers the slot. */
static void test_shape_payload_wrap(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  fake f;
  rk_kernel_desc ds = rt_desc("sender", sender);
  rk_graph_node_info li;
  uint32_t local, remote;
  (void)state;
  memset(&f, 0, sizeof f);
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &fake_ops, &f));
  RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, &local));
  RT_OK(rt, rk_graph_add_remote(g, 1, "enrich", 4, &remote));
  f.remote_node = remote;
  f.shape_lanes = 1;
  f.shape_payload = UINT32_MAX - 15;
  RT_OK(rt, rk_graph_connect(g, local, remote, NULL));
  RT_OK(rt, rk_graph_launch(g));
  assert_int_equal(f.shape_rc[2], RK_OK);
  memset(&li, 0, sizeof li);
  li.size = sizeof li;
  RT_OK(rt, rk_graph_node(g, local, &li));
  /* the outbound ring's slot fits the local kernel's largest message: unchanged */
  assert_int_equal(f.remote.payload_max, li.payload_max);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  rk_graph_destroy(g);
  rk_runtime_destroy(rt);
}

/* Lane-driven progress (remote.h, the transport's poll): a fake transport whose only progress is
 * its poll hook, which idle CPU lanes call between messages. It drains the remote node's outbound
 * ring and delivers what it takes into a local sink, so every message the sender's handler pushes
 * reaches the sink with no thread of the transport and no help from the test. It checks that no
 * call comes from inside a handler, none after the transport's stop, and that two lanes never run
 * it at once (its lock is only tried, as the MPI bridge's). Before the hook, nothing drained the
 * ring: the sender's handler got RK_EAGAIN for good and nothing was sunk. */
typedef struct poll_fake {
  rk_graph *g;
  uint32_t remote, snk, sink_id, remote_id;
  pthread_mutex_t lock;
  uint64_t calls, moved, in_handler, after_stop, busy; /* atomics, relaxed: counters */
  int inside;                                          /* under lock: a pass runs */
  int stopped;                                         /* atomics */
} poll_fake;

static __thread int tl_handler; /* this thread runs a handler of the test */
static poll_fake g_pf;

static int pf_start(void *self, rk_graph *g) {
  poll_fake *f = (poll_fake *)self;
  rk_graph_node_info ri, si;
  memset(&ri, 0, sizeof ri);
  ri.size = sizeof ri;
  si = ri;
  assert_int_equal(rk_graph_node(g, f->remote, &ri), RK_OK);
  assert_int_equal(rk_graph_node(g, f->snk, &si), RK_OK);
  f->remote_id = ri.kernel_id;
  f->sink_id = si.kernel_id;
  return RK_OK;
}
static int pf_flush(void *self, rk_graph *g, uint32_t node, int64_t timeout_ns) {
  (void)self, (void)g, (void)node, (void)timeout_ns;
  return RK_OK;
}
static void pf_stop(void *self, rk_graph *g) {
  (void)g;
  __atomic_store_n(&((poll_fake *)self)->stopped, 1, __ATOMIC_SEQ_CST);
}
static int pf_poll(void *self, rk_graph *g, const void *lane, int stop) {
  poll_fake *f = (poll_fake *)self;
  rk_ring *ring;
  uint64_t pos;
  uint32_t n, i, moved = 0;
  __atomic_add_fetch(&f->calls, 1, __ATOMIC_RELAXED);
  if (tl_handler) __atomic_add_fetch(&f->in_handler, 1, __ATOMIC_RELAXED);
  if (__atomic_load_n(&f->stopped, __ATOMIC_SEQ_CST)) __atomic_add_fetch(&f->after_stop, 1, __ATOMIC_RELAXED);
  if (lane == NULL || stop) return 0;
  if (pthread_mutex_trylock(&f->lock) != 0) return 0;
  if (f->inside) __atomic_add_fetch(&f->busy, 1, __ATOMIC_RELAXED); /* (never: the lock) */
  f->inside = 1;
  ring = rk_graph_remote_ring(g, f->remote, 0);
  if ((n = rk_ring_peek_n(ring, 16, &pos)) > 0) {
    for (i = 0; i < n; i++) {
      rk_envelope e;
      const uint8_t *slot = (const uint8_t *)rk_ring_slot(ring, pos + i);
      memcpy(&e, slot, sizeof e);
      e.dst = f->sink_id;
      if (rk_graph_deliver(g, f->snk, 0, &e, slot + RK_ENVELOPE_SIZE) != RK_OK) break; /* the sink's inbox is full */
    }
    rk_ring_release_n(ring, i);
    moved = i;
    __atomic_add_fetch(&f->moved, moved, __ATOMIC_RELAXED);
  }
  f->inside = 0;
  pthread_mutex_unlock(&f->lock);
  return moved > 0; /* keep polling while there was something */
}
static const rk_transport pf_ops = {sizeof(rk_transport), "pollfake", 0, 2, pf_start, pf_flush, pf_stop, NULL, pf_poll};

static int pf_sender(rk_ctx *ctx, const rk_msg *in) {
  int rc;
  tl_handler = 1;
  rc = rk_send_to(ctx, 0, T_ITEM, rk_msg_payload(in), rk_msg_len(in)); /* RK_EAGAIN: run again later */
  tl_handler = 0;
  return rc;
}
static int pf_sink(rk_ctx *ctx, const rk_msg *in) {
  tl_handler = 1;
  sink(ctx, in);
  tl_handler = 0;
  return 0;
}

static void test_lane_poll(void **state) {
  rk_runtime *rt = rt_create();
  rk_graph *g;
  poll_fake *f = &g_pf;
  rk_kernel_desc ds = rt_desc("sender", pf_sender), dk = rt_desc("sink", pf_sink);
  uint32_t local, i;
  uint64_t n = 2000, want;
  (void)state;
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->lock, NULL);
  __atomic_store_n(&g_sunk, 0, __ATOMIC_RELAXED);
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &pf_ops, f));
  RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, &local));
  RT_OK(rt, rk_graph_add_remote(g, 1, "far", 8, &f->remote)); /* an 8-slot outbound ring: it fills */
  RT_OK(rt, rk_graph_add(g, &dk, NULL, 0, &f->snk));
  RT_OK(rt, rk_graph_connect(g, local, f->remote, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  for (i = 0; i < n; i++) RT_OK(rt, rk_send(rk_graph_kernel(g, local), T_ITEM, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  want = n;
  assert_true(rt_wait_for(sunk_n, &want, RT_HANG)); /* the lanes moved every one */
  assert_int_equal(__atomic_load_n(&f->moved, __ATOMIC_RELAXED), n);
  assert_true(__atomic_load_n(&f->calls, __ATOMIC_RELAXED) > 0);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  rk_graph_destroy(g);
  assert_int_equal(__atomic_load_n(&f->stopped, __ATOMIC_SEQ_CST), 1);
  assert_int_equal(__atomic_load_n(&f->in_handler, __ATOMIC_RELAXED), 0);
  assert_int_equal(__atomic_load_n(&f->after_stop, __ATOMIC_RELAXED), 0);
  assert_int_equal(__atomic_load_n(&f->busy, __ATOMIC_RELAXED), 0);
  rk_runtime_destroy(rt);
  pthread_mutex_destroy(&f->lock);
}

/* The gate (graph.c, poll_gate_close): lanes calling the hook while the transport detaches. Every
 * lane of three kernels (7 lanes) is idle and calls it over and over (it says the conversation is
 * live, and spends 100 us in each call), so some are inside when rk_graph_set_transport(g, NULL)
 * runs: the detach must wait for them (none inside once it returned) and no call may begin after
 * it (the lanes keep running, idle). test_lane_poll's after_stop / in_handler checks cannot catch a
 * gate that does not wait (its lanes are terminated before the destroy); this one does: without
 * the wait, calls are still inside (or read the transport the detach cleared) after it returned.
 * Review of lanedrive (its test_rv_gate). */
typedef struct gate_fake {
  uint64_t calls, after; /* atomics, relaxed: counters */
  int inside;            /* atomics, seq_cst: calls in progress */
  int detached;          /* atomics, seq_cst: set by the test once the detach returned */
} gate_fake;
static gate_fake g_gf;
static int gf_poll(void *self, rk_graph *g, const void *lane, int stop) {
  struct timespec ts = {0, 100000};
  (void)self, (void)g, (void)lane;
  __atomic_add_fetch(&g_gf.inside, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_gf.detached, __ATOMIC_SEQ_CST)) __atomic_add_fetch(&g_gf.after, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&g_gf.calls, 1, __ATOMIC_RELAXED);
  if (!stop) nanosleep(&ts, NULL); /* a pass that takes a while: lanes are inside when the gate closes */
  __atomic_sub_fetch(&g_gf.inside, 1, __ATOMIC_SEQ_CST);
  return !stop; /* live: call again */
}
static const rk_transport gf_ops = {sizeof(rk_transport), "gatefake", 0, 2, pf_start, pf_flush, pf_stop, NULL, gf_poll};
static int gf_idle(rk_ctx *ctx, const rk_msg *in) {
  (void)ctx, (void)in;
  return 0;
}
static int gf_called(void *arg) { return __atomic_load_n(&g_gf.calls, __ATOMIC_RELAXED) >= *(uint64_t *)arg; }

static void test_poll_gate_detach(void **state) {
  int round, inside_at_close = 0;
  (void)state;
  for (round = 0; round < 20; round++) {
    rk_runtime *rt = rt_create();
    rk_graph *g;
    poll_fake *f = &g_pf;
    rk_kernel_desc ds = rt_desc("sender", pf_sender), di = rt_desc("idle", gf_idle);
    rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
    uint32_t local, idle;
    uint64_t want = 20;
    memset(f, 0, sizeof *f);
    memset(&g_gf, 0, sizeof g_gf); /* (no lane runs: the last round's graph is destroyed) */
    pthread_mutex_init(&f->lock, NULL);
    lo.lanes = 3;
    RT_OK(rt, rk_graph_create(rt, &g));
    RT_OK(rt, rk_graph_set_transport(g, &gf_ops, f));
    RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, &local));
    RT_OK(rt, rk_graph_add_remote(g, 1, "far", 8, &f->remote));
    RT_OK(rt, rk_graph_add(g, &di, &lo, 0, &idle));
    RT_OK(rt, rk_graph_add(g, &di, &lo, 0, &f->snk));
    RT_OK(rt, rk_graph_connect(g, local, f->remote, NULL));
    RT_OK(rt, rk_graph_launch(g));
    RT_OK(rt, rk_graph_activate(g));
    assert_true(rt_wait_for(gf_called, &want, RT_HANG)); /* the lanes are calling it */
    RT_OK(rt, rk_graph_set_transport(g, NULL, NULL));
    inside_at_close += __atomic_load_n(&g_gf.inside, __ATOMIC_SEQ_CST);
    __atomic_store_n(&g_gf.detached, 1, __ATOMIC_SEQ_CST);
    rt_sleep_ms(20); /* the lanes run on, idle: a call that got through now would be counted */
    assert_int_equal(__atomic_load_n(&g_gf.after, __ATOMIC_RELAXED), 0);
    assert_int_equal(__atomic_load_n(&g_gf.inside, __ATOMIC_SEQ_CST), 0);
    RT_OK(rt, rk_graph_terminate(g, RT_HANG));
    rk_graph_destroy(g);
    rk_runtime_destroy(rt);
    assert_int_equal(__atomic_load_n(&g_gf.after, __ATOMIC_RELAXED), 0); /* (the lanes' last, leaving calls too) */
    pthread_mutex_destroy(&f->lock);
  }
  assert_int_equal(inside_at_close, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shape_payload_wrap),
      cmocka_unit_test(test_no_transport),
      cmocka_unit_test(test_arguments),
      cmocka_unit_test(test_failed_start),
      cmocka_unit_test(test_fake_transport),
      cmocka_unit_test(test_retry_on_remote_route),
      cmocka_unit_test(test_fault_deadlock_vs_terminate),
      cmocka_unit_test(test_lane_wait_during_restart),
      cmocka_unit_test(test_lane_poll),
      cmocka_unit_test(test_poll_gate_detach),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
