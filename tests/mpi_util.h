/* mpi_util.h — helpers shared by the MPI bridge tests (test_mpi: CPU kernels, test_mpi_dev: kernels
 * on the emulated device), run under mpirun: a barrier that sleeps between its polls, a bridge's
 * stats, the two-rank graph most of their scenarios build, and the answer a closed or lost peer
 * leaves. Include after rt_util.h. */
#ifndef RK_MPI_UTIL_H
#define RK_MPI_UTIL_H

#include <mpi.h>

#include <ringkernel/mpi.h>

/* MPI_Barrier busy-polls (Open MPI): a rank waiting in it would take a core from the ranks that
 * work, on a 2-core machine. This one sleeps between its polls. */
static void barrier(void) {
  MPI_Request r;
  int done = 0;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  for (;;) {
    MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    if (done) return;
    rt_sleep_ms(1);
  }
}

/* The peer timeout of the scenarios that lose no peer (bridge_on in test_mpi.c, test_mpi_dev.c). */
#define MPI_UTIL_PATIENT_NS (30 * RT_SEC)

/* The bridge options of a test scenario: o (NULL: the defaults), with a scenario that names no peer
 * timeout given MPI_UTIL_PATIENT_NS instead of the default 2 s: such a scenario loses no peer. On
 * the loaded 2-core machine a rank's bridge thread went without a pass for 1.6 s (measured at load
 * 60-140), and a live peer was taken for lost (mpi_idle, mpi_comm_reuse, mpi_pipeline_3 failed so;
 * an injected 2.5 s stall of rank 1's bridge thread fails mpi_idle with the default). It also
 * bounds the stop's retries of what finds an inbox full: owed_stopfull and owed_stopstaged let
 * their busy kernel go 300 ms into the stop, which with 2 s left it 1.7 s to run (a release 2.5 s
 * late made its terminate time out). The scenarios that lose a peer on purpose set their own. */
static rk_mpi_options mpi_patient_options(const rk_mpi_options *o) {
  rk_mpi_options patient = RK_MPI_OPTIONS_INIT;
  if (o) patient = *o;
  if (patient.peer_timeout_ns == 0) patient.peer_timeout_ns = MPI_UTIL_PATIENT_NS;
  return patient;
}

static rk_mpi_stats bridge_stats(rk_mpi_bridge *b) {
  rk_mpi_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  assert_int_equal(rk_mpi_bridge_stats(b, &s), RK_OK);
  return s;
}

/* The bridge counts a cycle it found (deadlocks) after the kernel's fault is recorded
 * (probe_closed: rk_graph_fault_deadlock, then the count), so a test that saw the fault waits for
 * the count (mpi_cycle_3 once read 0 there under load). 1 when it came within 10 s. */
static int deadlock_counted_p(void *arg) { return bridge_stats((rk_mpi_bridge *)arg).deadlocks >= 1; }
static int deadlock_counted(rk_mpi_bridge *b) { return rt_wait_for(deadlock_counted_p, b, 10 * RT_SEC); }

/* What the caller of a request finds once the bridge answered it for a closed or lost peer: an
 * error answer with RK_ECLOSED (received on k), and in the bridge's stats one message sent and one
 * answer that failed. Returns the stats for the caller's other checks. */
static rk_mpi_stats recv_closed_answer(rk_runtime *rt, rk_kernel *k, rk_mpi_bridge *b) {
  int32_t code = 0;
  rk_msg m;
  rk_mpi_stats st;
  RT_OK(rt, rk_recv(k, &m, &code, sizeof code, RT_HANG));
  assert_true(rk_msg_is_error(&m));
  assert_int_equal(m.status, RK_ECLOSED);
  st = bridge_stats(b);
  assert_int_equal(st.sent, 1);
  assert_int_equal(st.answers_failed, 1);
  return st;
}

/* The graph of a two-rank scenario: rank 0's kernel `from`, routed (route 0) to rank 1's kernel
 * `to`, which rank 0's graph holds as a remote node (`to`'s name); with `answers`, rank 1's graph
 * holds `from` as a remote node too (where the answers `to` gives go back). Fields left 0 or NULL
 * are the defaults. */
typedef struct mpi_pair {
  const rk_kernel_desc *from, *to;
  const rk_launch_options *from_lo, *to_lo; /* their launch options (NULL: defaults) */
  uint32_t from_slots, to_slots;            /* their K2K inboxes (rk_graph_add's k2k_capacity) */
  uint32_t remote_slots;                    /* rank 0's remote node for `to` (its outbound ring) */
  int answers;                              /* rank 1 adds `from` as a remote node (capacity 0) */
} mpi_pair;

/* Adds p's nodes to g on rank `rank` (0 or 1), connects them, launches and activates the graph.
 * *from and *to receive the nodes' numbers, on both ranks (rank 1's *from only with p->answers;
 * left as it was otherwise). */
static void mpi_pair_graph(rk_runtime *rt, rk_graph *g, int rank, const mpi_pair *p, uint32_t *from, uint32_t *to) {
  if (rank == 0) {
    RT_OK(rt, rk_graph_add(g, p->from, p->from_lo, p->from_slots, from));
    RT_OK(rt, rk_graph_add_remote(g, 1, p->to->name, p->remote_slots, to));
    RT_OK(rt, rk_graph_connect(g, *from, *to, NULL));
  } else {
    RT_OK(rt, rk_graph_add(g, p->to, p->to_lo, p->to_slots, to));
    if (p->answers) RT_OK(rt, rk_graph_add_remote(g, 0, p->from->name, 0, from));
  }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
}

/* mpi_pair_graph for the scenarios that name the nodes by what this rank holds: *mine receives its
 * own kernel's number (p->from on rank 0, p->to on rank 1), *theirs the remote node's (on rank 1
 * only with p->answers; left as it was otherwise). */
static void mpi_pair_graph_mine(rk_runtime *rt, rk_graph *g, int rank, const mpi_pair *p, uint32_t *mine,
                                uint32_t *theirs) {
  if (rank == 0)
    mpi_pair_graph(rt, g, rank, p, mine, theirs);
  else
    mpi_pair_graph(rt, g, rank, p, theirs, mine);
}

#endif /* RK_MPI_UTIL_H */
