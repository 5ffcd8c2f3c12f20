/* bridge.c — the MPI bridge of librk_mpi: K2K envelopes between the graphs of MPI ranks.
 *
 * One thread per bridge owns every MPI call once the graph is launched (rk_graph_launch runs the
 * handshake on the caller's thread before the thread starts; stop joins it before the cleanup
 * calls). Handlers never touch MPI: they fill the remote nodes' outbound rings (graph.c), which
 * this thread drains into per-peer batches sent with MPI_Isend (at most max_inflight per peer);
 * one MPI_Irecv per peer and kind (data, control) is kept posted. Received envelopes go into the
 * local K2K inboxes (rk_graph_deliver); one that finds its inbox full waits in its route's staging
 * queue, which credits bound: a sender has at most `window` messages per route that the receiver
 * has not yet put in the destination's inbox, and the receiver returns credits (cumulative counts,
 * so a lost or repeated credit message cannot skew them) as it delivers. Per-source order: a ring
 * is FIFO, MPI does not overtake between two ranks on one communicator and tag, a route's staged
 * messages go in before any later one of that route.
 *
 * A route is (remote node, lane): each lane of a remote kernel has its own outbound ring here,
 * its own credits and its own staging queue there, so a keyed send reaches the lane its key picks.
 *
 * Wire formats (host byte order: one job, one machine type): a data message is a batch header
 * {u32 n, u32 0} then n records {u32 record bytes, u32 origin rank, u32 destination lane, u32 0,
 * envelope, payload padded to 8}; a batch header {BYE_N, c} with no record is the bye, sent on the
 * data tag so that MPI's non-overtaking rule orders it after every batch sent before it, c the
 * number of control messages (credits and probes) sent to that peer before it (mod 2^32); a
 * control message is {u32 kind, u32 n} then n {u32 kernel id, u32 lane, u64 consumed, u64 refused}
 * (credits: cumulative counts of the route's messages taken off the wire, and of those refused), or
 * a probe of the deadlock detection across ranks: {u32 CTRL_PROBE, u32 n} then {u32 version, u32
 * initiator rank, u32 initiator kernel id, u32 initiator lane, u32 generation, u32 target kernel id,
 * u32 target lane, u32 0} then n hops {u32 rank, u32 kernel id, u32 lane, u32 0, u64 progress}
 * ("Cycles across ranks" below; docs/mpi.md), or owed-answer notices: {u32 CTRL_MOVED, u32 n, u32
 * version, u32 0} then n {u32 origin kernel id on the receiving rank, u32 rank the request went on
 * to, u64 correlation id} (moved_note, take_moved; docs/mpi.md, "Answers owed across a lost peer").
 *
 * The last word (bridge_stop, drain_peer): every bridge that met its peers sends each peer one bye,
 * at its stop or, on its thread, as soon as it receives the peer's, and frees its communicator
 * only once it has taken every message each peer sent on it: the peer's bye (the data tag's last
 * message) and the control messages it counts. A message left unreceived on a freed communicator
 * is not discarded by Open MPI: one that arrives after MPI_Comm_free waits for the next
 * communicator given the same context id (the next bridge's MPI_Comm_dup) and is matched there,
 * out of its sequence; a stale bye made the next bridge close a live peer (docs/mpi.md). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "ringkernel.h"
#include "ringkernel/mpi.h"
#include "ringkernel/remote.h"

#define TAG_HELLO 0x5243
#define TAG_DATA 0x5244
#define TAG_CTRL 0x5245
#define CTRL_CREDIT 1u
#define CTRL_HEARTBEAT 2u
#define CTRL_PROBE 3u
#define CTRL_MOVED 4u
#define BYE_N UINT32_MAX /* a data batch header's n: the bye */
#define REC_HEADER 16u
#define CREDIT_REC 24u
#define MAX_NODES RK_GRAPH_MAX_KERNELS
#define CTRL_BYTES (8u + MAX_NODES * RK_MAX_LANES * CREDIT_REC) /* a credit for every route at most */
#define CREDIT_AGE_NS 1000000u /* owed credits older than this go out even on a busy bridge */
/* The idle bridge (bridge_main): polls while a conversation is live, then waits on its outbound
 * rings' futexes with a timeout (docs/mpi.md, "The bridge's thread"). */
#define LIVE_MIN_NS 20000u   /* the live window: at least this long after the last busy pass */
#define LIVE_MAX_NS 500000u  /* at most; a quiet stretch this long ends a conversation */
#define SPIN_PASSES 64u      /* idle passes that poll without yielding (none after a delivery) */
#define NAP_MIN_NS 20000u    /* the first wait's timeout, doubling up to */
#define NAP_MAX_NS 200000u   /* for the first IDLE_LONG_NS of a quiet stretch, then */
#define IDLE_LONG_NS 10000000u
#define NAP_IDLE_NS 1000000u /* (how late the bridge of a long idle rank sees a peer's message, at most) */
#define WAITV_MAX 128u       /* futex_waitv's limit (FUTEX_WAITV_MAX): more rings nap instead */
/* Lane-driven progress (bridge_poll; docs/mpi.md, "Lane-driven progress"): while a CPU lane runs
 * the passes, the bridge thread sleeps, LANE_HOLD_NS at a time, and runs one full pass (heartbeats,
 * timeouts, everything) each time it wakes; a driver whose last pass is older than LANE_HOLD_NS
 * (busy in a handler, gone) no longer holds it back. */
#define LANE_HOLD_NS 200000u
/* Cycles across ranks (deadlock_scan): a probe's format, and its pace. */
#define PROBE_VERSION 1u
#define PROBE_HEAD 32u
#define PROBE_HOP 24u
#define PROBE_MAX_HOPS 32u
#define PROBE_BYTES (8u + PROBE_HEAD + PROBE_MAX_HOPS * PROBE_HOP)
#define DL_SCAN_NS 10000000u     /* the bridge reads its lanes' wait edges this often */
#define DL_STUCK_NS 100000000u   /* a lane waiting on a remote lane this long is probed for (the local
                                  * checks' RK_K2K_DEADLOCK_NS) */
#define DL_CONFIRM_NS 20000000u  /* the confirming probe leaves this long after the first came back */
#define DL_LOST_NS 200000000u    /* a probe not back by then was dropped on the way: a new one may go */
/* The owed entry follows the request (moved_note, take_moved): a notice to an origin's rank. */
#define MOVED_VERSION 1u
#define MOVED_HEAD 16u  /* {u32 CTRL_MOVED, u32 n, u32 version, u32 0} */
#define MOVED_REC 16u   /* {u32 origin kernel id on the receiving rank, u32 rank it went on to, u64 correlation id} */
#define MOVED_MAX 512u  /* notices per message and queued per peer: a full queue holds the route back */
/* The owed table's bound: requests of this rank's kernels sent to peers whose answer has not come
 * (open entries). A request that would be one more (or, in a job of more than two ranks, one more
 * than half the bound owed from one peer: one slow peer cannot take the whole table) is not sent:
 * it is answered at once with an RK_ENORESOURCE error, dead-lettered on its origin, counted in
 * owed_refused and logged at most once a second (owed_refuse). Its route is not held: the ring is
 * shared with the replies of that rank's kernels, and holding it deadlocked two ranks that forward
 * to each other (review of owed2, finding 1). */
#define OWED_MAX 65536u

typedef struct hello_entry {
  char name[64];
  uint32_t kernel_id, lanes, k2k_capacity, payload_max; /* k2k_capacity: the window granted per lane */
} hello_entry;

typedef struct hello {
  uint32_t n, rank;
  uint32_t batch_bytes, reserved; /* the receive buffers are that big: every rank must agree */
  hello_entry e[MAX_NODES];
} hello;

/* A message staged for a full local inbox (bounded by the route's credits). */
typedef struct staged {
  struct staged *next;
  uint32_t len; /* envelope + payload */
  uint32_t pad; /* data 8-aligned: it is read as an envelope */
  uint8_t data[];
} staged;

/* A route from a peer into a lane of one of our local nodes (receiver side). */
typedef struct route_in {
  uint64_t consumed;      /* delivered, refused or dropped: the credits this route earned back */
  uint64_t credited;      /* consumed as last told to the peer */
  uint64_t refused;       /* of consumed: refused (answered / dead-lettered here), cumulative */
  uint64_t refused_told;  /* refused as last told to the peer */
  staged *head, *tail;    /* waiting for room, in order */
  uint32_t window;        /* what the peer may have outstanding (our inbox capacity, capped) */
} route_in;

/* A lane of one of our remote nodes (sender side). */
typedef struct route_out {
  uint32_t node;          /* graph node */
  uint32_t lane;          /* the remote kernel's lane */
  uint32_t peer;          /* its rank */
  uint32_t local_id;      /* the stand-in's id in local envelopes */
  uint32_t remote_id;     /* the kernel's id on its rank */
  uint32_t window;
  rk_ring *ring;
  rk_ring *hring;         /* a device backend: the host's own ring of the lane (error answers), or NULL */
  uint64_t sent;          /* bridge thread only, published for flush (atomics) */
  volatile uint64_t credited; /* atomics: written by the bridge thread, read by flush */
  volatile uint64_t sent_pub;
  volatile uint64_t refused; /* atomics: the peer's refused count for the route (take_ctrl), read by flush */
  volatile uint64_t refused_here; /* atomics: requests refused here over the owed bound (owed_refuse), not
                                   * sent; written by the bridge thread only, read by flush */
  int stalled;            /* counted a credit stall already (until credit comes) */
  uint32_t held_for;      /* 1 + the rank whose full notice queue holds this route back (moved_note), or 0 */
} route_out;

typedef struct send_buf {
  MPI_Request req;
  uint8_t *data;
  int busy;
} send_buf;

typedef struct peer {
  rk_mpi_peer_state state; /* atomics: the bridge thread writes, anyone reads */
  uint64_t heard_ns;       /* monotonic time of the last message from it */
  uint64_t told_ns;        /* of the last message to it */
  MPI_Request data_req, ctrl_req;
  uint8_t *data_in, *ctrl_in; /* batch_bytes, CTRL_BYTES */
  send_buf *out;           /* max_inflight batches */
  uint8_t *batch;          /* the batch being filled (points into a free send_buf) */
  uint32_t batch_len, batch_n;
  int batch_buf;           /* index of the send_buf batch is in, or -1 */
  route_in *in;            /* b->nin: node i's lane l at b->in_base[i] + l */
  uint8_t *ctrl_out;       /* CTRL_BYTES */
  MPI_Request ctrl_req_out;
  int ctrl_busy;
  uint8_t probe_out[PROBE_BYTES] __attribute__((aligned(8))); /* the probe in flight to it */
  MPI_Request probe_req;
  int probe_busy;
  uint64_t probe_warn_ns;   /* when a malformed probe from it was last logged (bridge thread) */
  uint64_t probe_unlogged;  /* malformed probes from it refused since, not logged */
  uint32_t bye[2];         /* the bye's batch header (TAG_DATA): BYE_N, ctrl_sent */
  MPI_Request bye_req;
  /* the last word (bridge_stop, drain_peer): the bridge thread's, then stop's after the join (no
   * atomics: pthread_join orders the thread's writes before stop's reads) */
  int bye_sent;            /* our bye to it went out (bridge thread, in answer to its bye; or stop) */
  int bye_got;             /* its bye came: nothing follows on the data tag */
  uint32_t ctrl_sent;      /* control messages sent to it (its bye's count of ours is in ctrl_expect) */
  uint32_t ctrl_got;       /* control messages taken from it */
  uint32_t ctrl_expect;    /* what its bye said it sent (valid once bye_got) */
  int settled;             /* what its routes held is counted (peer_down, or stop) */
  uint32_t owed_n;         /* entries of the owed table waiting for an answer from it (not answered) */
  uint8_t *moved_q;        /* MOVED_MAX * MOVED_REC: notices for it not sent yet (moved_n) */
  uint8_t *moved_out;      /* MOVED_HEAD + MOVED_MAX * MOVED_REC: the notices in flight to it */
  uint32_t moved_n;
  MPI_Request moved_req;
  int moved_busy;
  uint64_t moved_warn_ns;  /* when a malformed notice from it was last logged (bridge thread) */
  uint64_t bye_ns;         /* when its bye came (the control messages it counts follow, bounded) */
  uint64_t credit_ns;      /* of the last credit message to it */
  hello h;                 /* its kernels (handshake) */
} peer;

/* A probe (docs/mpi.md, "Cycles across ranks"): the chain of lanes followed so far, hop[0] the
 * initiator. */
typedef struct probe_hop {
  uint32_t rank, id, lane;
  uint64_t progress;
} probe_hop;

typedef struct probe {
  uint32_t init_rank, init_id, init_lane, gen, target_id, target_lane, n;
  probe_hop hop[PROBE_MAX_HOPS];
} probe;

/* The deadlock detection's view of one local lane (bridge thread only): the edge it was last seen
 * waiting on and its progress then, since when, and the probes it initiated. */
typedef struct dl_lane {
  uint32_t to_node, to_lane;
  uint64_t progress, since_ns;
  uint32_t gen;       /* of the last probe it initiated */
  int out;            /* that probe is on its way */
  uint64_t probe_ns;  /* when it left */
  int have_cand;      /* a probe came back round a cycle: its path (hash), generation and time */
  uint64_t cand_hash, cand_ns;
  uint32_t cand_gen;
  int said;           /* faulted its kernel */
} dl_lane;
/* A request of one of this rank's kernels (its origin: rk_forward of a host request) that went to
 * a peer and whose answer has not come back over the bridge (the owed table, bridge thread only).
 * When that peer is lost or closes, or the bridge stops, the bridge answers it with an error
 * (owed_fail) and keeps the entry as answered, so that an answer arriving later (over another
 * peer: a chain of ranks) is dropped instead of delivered twice. Keyed by (origin, correlation
 * id): the correlation id is the host request's msg_id, unique in this rank's runtime; a request
 * forwarded more than once has an entry per forward (its lane owes an answer per forward). */
typedef struct owed_req {
  uint64_t corr;     /* correlation_id */
  uint32_t origin;   /* the origin kernel's id on this rank; 0: an empty slot */
  uint32_t peer;     /* the rank it was last sent to */
  uint32_t from_id;  /* the stand-in of the kernel it was sent to (the error answer's src) */
  uint32_t type;
  uint16_t lane, priority;
  uint32_t answered; /* 1: owed_fail answered it; a later answer is dropped (answers_late) */
} owed_req;

/* The error answer to a refused request that found its origin's inbox full: retried. */
typedef struct answer {
  struct answer *next;
  uint32_t from_id;
  int code;
  rk_envelope e; /* the refused envelope's header (ids already local) */
} answer;

struct rk_mpi_bridge {
  rk_transport tp;
  rk_graph *g;
  rk_runtime *rt;
  MPI_Comm comm;
  int comm_ok;
  uint32_t rank, ranks;
  rk_mpi_options o;
  peer *peers;
  route_out *out;          /* every lane of every remote node */
  uint32_t nout;
  struct { uint32_t id, node; } ids[MAX_NODES]; /* our local kernels: id -> node */
  uint32_t nids;
  uint32_t in_base[MAX_NODES], in_lanes[MAX_NODES], nin; /* routes into our nodes, per peer */
  pthread_t thread;
  int thread_on;
  volatile int stop;       /* atomics: the stop request (release by stop, acquire by the thread) */
  int stopped;             /* stop ran (app thread) */
  int started;             /* start succeeded: the peers know us */
  int any_lost;
  int start_tried;         /* bridge_start ran: the peers may have been sent (and may send) messages */
  int met;                 /* the handshake completed: every peer knows this bridge and will say bye */
  int keep_comm;           /* a peer's last messages may still come: the communicator is never freed */
  int waitv_ok;            /* bridge thread: futex_waitv works here (rings_wait) */
  int waitv_private;       /* bridge thread: its rings' memory cannot be keyed shared (EFAULT) */
  hello *hello_out;        /* our hello: MPI may own it until the handshake's sends complete */
  int hello_held;          /* a hello send never completed (start timed out): never freed */
  answer *answers, **answers_tail; /* bridge thread: error answers waiting for room */
  dl_lane *dl;             /* bridge thread: b->nin, indexed as route_in (deadlock_scan) */
  uint64_t dl_scan_ns;
  owed_req *owed_tab;      /* bridge thread: the owed table (open addressing, linear probing) */
  uint32_t owed_cap, owed_used; /* slots (a power of two, or 0), slots in use (answered ones too) */
  uint32_t owed_open, owed_max; /* entries not answered yet; their bound (OWED_MAX; tests: smaller) */
  int owed_nomem;          /* said once: the table could not grow */
  uint64_t owed_warn_ns;   /* bridge thread: when a request over the bound was last logged (owed_refuse) */
  uint64_t owed_unlogged;  /* such requests refused since, not logged */
  volatile int closing;    /* atomics: the graph is being destroyed (bridge_closing), relaxed: a flag that
                            * publishes nothing, the thread only has to see it within a pass or two;
                            * bridge_flush runs in the destroy on the thread that set it */
  int closing_said;        /* bridge thread: closing's answers logged */
  /* Lane-driven progress (bridge_poll). Every pass of the bridge's work (the thread's, or a CPU
   * lane's) runs under pass_lock: the thread takes it per pass, a lane only ever tries it, so the
   * "bridge thread" state above and below is the pass holder's, and every MPI call of a pass is
   * serialised by it (stop's own MPI calls come after it set lanes_off under the lock and joined
   * the thread). */
  pthread_mutex_t pass_lock;
  int lanes_off;           /* under pass_lock: lanes run no pass (the option, or the stop began) */
  uint64_t lw_ns, lw_gap;  /* under pass_lock: the last pass with traffic (anyone's), and the longest
                            * recent quiet stretch between two such passes of a lane (decays): a
                            * lane drives while within twice that (LIVE_MIN_NS..LIVE_MAX_NS) */
  uintptr_t driver;        /* atomics: the lane driving (its token), 0: none. Written under pass_lock;
                            * read (relaxed) by the bridge thread and lanes to decide who backs off: a
                            * hint, nothing is published with it (the lock orders the pass's data) */
  uint64_t drive_ns;       /* atomics, relaxed: when the driver's last pass ran (the same kind of hint) */
  uint32_t drive_wake;     /* atomics: the bridge thread sleeps on it while a lane drives; a driver
                            * that stops bumps it (release) and wakes the thread */
  /* statistics (atomics, relaxed) */
  volatile uint64_t s_sent, s_received, s_delivered, s_batches_sent, s_batches_received, s_credit_stalls, s_staged,
      s_clock_rejected, s_refused, s_dropped, s_unconfirmed, s_heartbeats, s_sleeps, s_woken, s_probes,
      s_probes_refused, s_deadlocks, s_answers_failed, s_answers_late, s_moves_sent, s_moves_taken, s_moves_refused, s_owed_refused,
      s_lane_passes, s_lane_delivered;
  volatile uint32_t s_peers_lost;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void stat_add(volatile uint64_t *c, uint64_t n) { __atomic_add_fetch(c, n, __ATOMIC_RELAXED); } /* statistics */

/* Release: the counters peer_down updated before the state changed (dropped, unconfirmed,
 * peers_lost) are visible to whoever sees the new state with get_state's acquire. */
static void set_state(peer *p, rk_mpi_peer_state s) { __atomic_store_n(&p->state, s, __ATOMIC_RELEASE); }
/* Acquire: pairs with set_state's release (a reader that sees LOST sees its counts). */
static rk_mpi_peer_state get_state(const peer *p) { return __atomic_load_n(&p->state, __ATOMIC_ACQUIRE); }

#define MAX_RANKS 4095u /* (rank + 1) << 20 must fit in 32 bits: rk_mpi_node_id */

uint32_t rk_mpi_node_id(uint32_t rank, uint32_t kernel_id) {
  if (rank >= MAX_RANKS) return 0; /* not representable (rk_mpi_bridge_create refuses such jobs) */
  return ((rank + 1u) << 20) | (kernel_id & 0xFFFFFu);
}

static uint32_t pad8(uint32_t n) { return (n + 7u) & ~7u; }

/* Whether every control message a closed peer's bye counts has been taken (counts mod 2^32): at
 * least that many, since a message its bye did not count (a hand-made one: dev_moved_refused) is
 * taken too; == never matched then, and the close waited peer_timeout_ns for nothing. A real
 * bridge never sends a control message its bye does not count, so with >= the drain can end
 * early (before a counted one came, an uncounted one standing in for it) only in that hand-made
 * case. */
static int ctrl_all_in(const peer *p) { return p->bye_got && (int32_t)(p->ctrl_got - p->ctrl_expect) >= 0; }

static int local_node_of(const rk_mpi_bridge *b, uint32_t id, uint32_t *node) {
  uint32_t i;
  for (i = 0; i < b->nids; i++)
    if (b->ids[i].id == id) {
      *node = b->ids[i].node;
      return 1;
    }
  return 0;
}

static route_out *out_of_local_id(rk_mpi_bridge *b, uint32_t id) {
  uint32_t i;
  for (i = 0; i < b->nout; i++)
    if (b->out[i].local_id == id) return &b->out[i];
  return NULL;
}

/* lane UINT32_MAX: any lane of it (the stand-in's id is the same for all) */
static route_out *out_of_remote(rk_mpi_bridge *b, uint32_t rank, uint32_t remote_id, uint32_t lane) {
  uint32_t i;
  for (i = 0; i < b->nout; i++)
    if (b->out[i].peer == rank && b->out[i].remote_id == remote_id && (lane == UINT32_MAX || b->out[i].lane == lane))
      return &b->out[i];
  return NULL;
}

/* ------------------------------------- answers owed ---------------------------------------- */

/* Whether e continues a request: its origin waits for an answer (as rk_graph_answer_error asks). */
static int wants_answer(const rk_envelope *e) {
  return (e->flags & RK_ENV_F_K2K) && !(e->flags & (RK_ENV_F_REPLY | RK_ENV_F_NO_REPLY)) && e->origin != 0;
}

static uint32_t owed_home(const rk_mpi_bridge *b, uint32_t origin, uint64_t corr) {
  uint64_t h = (corr ^ ((uint64_t)origin << 40)) * 0x9E3779B97F4A7C15ull;
  return (uint32_t)(h >> 32) & (b->owed_cap - 1u);
}

static owed_req *owed_find(rk_mpi_bridge *b, uint32_t origin, uint64_t corr, uint32_t r) {
  /* A request forwarded more than once (docs/k2k.md allows it: its lane owes an answer per
   * forward) has an entry per forward; the one to take: not answered yet and owed from rank r
   * (UINT32_MAX: any), else any not answered, else an answered one (its answer is late). */
  owed_req *open_any = NULL, *answered = NULL;
  uint32_t i;
  if (b->owed_cap == 0) return NULL;
  for (i = owed_home(b, origin, corr);; i = (i + 1u) & (b->owed_cap - 1u)) {
    owed_req *w = &b->owed_tab[i];
    if (w->origin == 0) return open_any ? open_any : answered;
    if (w->origin != origin || w->corr != corr) continue;
    if (!w->answered && (r == UINT32_MAX || w->peer == r)) return w;
    if (!w->answered && open_any == NULL) open_any = w;
    if (w->answered && answered == NULL) answered = w;
  }
}

/* Remove w (backward-shift deletion: the entries after it that probed past it move up). */
static void owed_del(rk_mpi_bridge *b, owed_req *w) {
  uint32_t mask = b->owed_cap - 1u, i = (uint32_t)(w - b->owed_tab), j = i;
  if (!w->answered) {
    if (b->peers[w->peer].owed_n) b->peers[w->peer].owed_n--;
    if (b->owed_open) b->owed_open--;
  }
  for (;;) {
    uint32_t k;
    j = (j + 1u) & mask;
    if (b->owed_tab[j].origin == 0) break;
    k = owed_home(b, b->owed_tab[j].origin, b->owed_tab[j].corr);
    /* j stays where it is when its home is cyclically in (i, j] */
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
    b->owed_tab[i] = b->owed_tab[j];
    i = j;
  }
  memset(&b->owed_tab[i], 0, sizeof b->owed_tab[i]);
  b->owed_used--;
}

/* Room for one more entry: the table doubles at half full. 0: out of memory. */
static int owed_room(rk_mpi_bridge *b) {
  owed_req *old = b->owed_tab, *t;
  uint32_t cap = b->owed_cap ? b->owed_cap * 2u : 64u, i, n = b->owed_cap;
  if ((b->owed_used + 1u) * 2u <= b->owed_cap) return 1;
  if (cap == 0 || (t = (owed_req *)calloc(cap, sizeof *t)) == NULL) return 0;
  b->owed_tab = t;
  b->owed_cap = cap;
  for (i = 0; i < n; i++)
    if (old[i].origin) {
      uint32_t j = owed_home(b, old[i].origin, old[i].corr);
      while (t[j].origin) j = (j + 1u) & (cap - 1u);
      t[j] = old[i];
    }
  free(old);
  return 1;
}

/* A request of local kernel e->origin (ids local) goes to rank `peer`, to stand-in from_id: its
 * answer is owed from there now (a request passed through this rank again: the entry moves). */
static void owed_track(rk_mpi_bridge *b, const rk_envelope *e, uint32_t rank, uint32_t from_id) {
  owed_req *w;
  uint32_t i;
  /* one entry per forward, even of one request: its lane owes one answer per forward (k2k_owed,
   * l->owed), so a lost peer must answer each (a request that came back to this rank took its
   * entry off as it arrived: owed_arrival). So also when an entry of an earlier forward of it was
   * answered already (its peer lost): this forward's answer is owed too, and an arriving answer
   * takes an open entry before an answered one (owed_find). (Before, an answered entry made this
   * return early: this forward was not tracked, its real answer was dropped as late and its lane
   * owed it for good; review of owed2, finding 7.) */
  if (!owed_room(b)) {
    if (!b->owed_nomem)
      rk_transport_log(b->g, RK_LOG_ERROR, "mpi bridge: out of memory: requests sent to other ranks are not all "
                       "tracked; if their rank is lost, their callers wait for their own timeouts");
    b->owed_nomem = 1;
    return;
  }
  for (i = owed_home(b, e->origin, e->correlation_id); b->owed_tab[i].origin; i = (i + 1u) & (b->owed_cap - 1u)) {
  }
  w = &b->owed_tab[i];
  w->origin = e->origin;
  w->corr = e->correlation_id;
  b->owed_used++;
  w->peer = rank;
  w->from_id = from_id;
  w->type = e->type;
  w->lane = e->lane;
  w->priority = e->priority;
  w->answered = 0;
  b->peers[rank].owed_n++;
  b->owed_open++;
}

/* Buffers left to MPI (a send that never completed may still read them): kept for the process's
 * life, reachable from this list, so nothing frees them under MPI and leak checkers see them as
 * held, not lost. */
typedef struct lent_buf {
  struct lent_buf *next;
  void *data;
} lent_buf;
static lent_buf *g_lent;

static void lend_to_mpi(void *data) {
  lent_buf *l;
  if (data == NULL || (l = (lent_buf *)malloc(sizeof *l)) == NULL) return; /* (then simply leaked) */
  l->data = data;
  l->next = __atomic_load_n(&g_lent, __ATOMIC_RELAXED);
  /* release on success: the node's fields are written before it is reachable from g_lent (nobody
   * walks the list, but a reader would need them); relaxed on failure: just the new head */
  while (!__atomic_compare_exchange_n(&g_lent, &l->next, l, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}

/* ---------------------------------------- sending ------------------------------------------ */

/* A free send buffer of peer p for a new batch, or 0 when max_inflight are in flight. */
static int batch_open(rk_mpi_bridge *b, peer *p) {
  uint32_t i;
  if (p->batch_buf >= 0) return 1;
  for (i = 0; i < b->o.max_inflight; i++) {
    send_buf *s = &p->out[i];
    if (s->busy) {
      int done = 0;
      MPI_Test(&s->req, &done, MPI_STATUS_IGNORE);
      if (!done) continue;
      s->busy = 0;
    }
    p->batch_buf = (int)i;
    p->batch = s->data;
    p->batch_len = 8;
    p->batch_n = 0;
    return 1;
  }
  return 0;
}

static int batch_send(rk_mpi_bridge *b, uint32_t r) {
  peer *p = &b->peers[r];
  send_buf *s;
  if (p->batch_buf < 0 || p->batch_n == 0) return 0;
  s = &p->out[p->batch_buf];
  memcpy(p->batch, &p->batch_n, 4);
  memset(p->batch + 4, 0, 4);
  if (MPI_Isend(p->batch, (int)p->batch_len, MPI_BYTE, (int)r, TAG_DATA, b->comm, &s->req) != MPI_SUCCESS) {
    rk_transport_log(b->g, RK_LOG_ERROR, "mpi bridge: MPI_Isend of %u envelopes to rank %u failed", p->batch_n, r);
    return 0; /* the peer will be found silent */
  }
  s->busy = 1;
  stat_add(&b->s_batches_sent, 1);
  stat_add(&b->s_sent, p->batch_n);
  p->batch_buf = -1;
  p->batch_n = 0;
  p->told_ns = now_ns();
  return 1;
}

/* A request of a kernel of rank q->peer (its stand-in q here) goes on from this rank to rank `to`:
 * its origin's rank is told, so that the entry it keeps for the answer follows the request
 * (take_moved). Queued for q->peer (room checked by the caller), sent by moved_send. */
static void moved_note(rk_mpi_bridge *b, const route_out *q, uint32_t to, uint64_t corr) {
  peer *op = &b->peers[q->peer];
  uint8_t *w = op->moved_q + op->moved_n * MOVED_REC;
  memcpy(w, &q->remote_id, 4);
  memcpy(w + 4, &to, 4);
  memcpy(w + 8, &corr, 8);
  op->moved_n++;
}

/* The notices queued for peer r, in one control message (counted in the bye: ctrl_sent), once the
 * last one is out of moved_out. Returns 1 when one went. */
static int moved_send(rk_mpi_bridge *b, uint32_t r) {
  peer *p = &b->peers[r];
  uint32_t head[4] = {CTRL_MOVED, 0, MOVED_VERSION, 0};
  if (p->moved_n == 0) return 0;
  if (p->moved_busy) {
    int done = 0;
    MPI_Test(&p->moved_req, &done, MPI_STATUS_IGNORE);
    if (!done) return 0;
    p->moved_busy = 0;
  }
  head[1] = p->moved_n;
  memcpy(p->moved_out, head, MOVED_HEAD);
  memcpy(p->moved_out + MOVED_HEAD, p->moved_q, p->moved_n * MOVED_REC);
  if (MPI_Isend(p->moved_out, (int)(MOVED_HEAD + p->moved_n * MOVED_REC), MPI_BYTE, (int)r, TAG_CTRL, b->comm,
                &p->moved_req) != MPI_SUCCESS)
    return 0; /* kept: the next pass tries again */
  p->ctrl_sent++; /* counted in our bye, as every control message */
  p->moved_busy = 1;
  stat_add(&b->s_moves_sent, p->moved_n);
  p->moved_n = 0;
  p->told_ns = now_ns();
  return 1;
}

static void answer_refused(rk_mpi_bridge *b, uint32_t from_id, const rk_envelope *e, int code);

/* Whether one more request of this rank's kernels to rank `to` would pass the owed table's bound
 * (OWED_MAX): the whole table, or, with more than one peer, half of it owed from one peer. */
static int owed_over(const rk_mpi_bridge *b, uint32_t to) {
  uint32_t share = b->owed_max / 2u ? b->owed_max / 2u : 1u;
  return b->owed_open >= b->owed_max || (b->ranks > 2 && b->peers[to].owed_n >= share);
}

/* A request of local kernel e->origin (local node onode) over the owed table's bound, on its way to
 * route o: not sent. Answered at once with RK_ENORESOURCE (as a refused request is: answer_refused),
 * dead-lettered on its origin, counted in owed_refused and in the route's refused_here (flush reports
 * it, as a refusal by the peer), logged at most once a second with the count of the ones not
 * logged. Bridge thread. */
static void owed_refuse(rk_mpi_bridge *b, route_out *o, uint32_t onode, const rk_envelope *e) {
  uint64_t t = now_ns();
  stat_add(&b->s_owed_refused, 1); /* before the answer: whoever it reaches sees the count */
  /* counted on the route for flush, which reports it as a refusal. Release, before drain_route
   * releases the slot (as sent_pub): a flush that sees the slot gone (rk_ring_count, acquire) sees
   * it counted here; relaxed load: the bridge thread's own word. */
  __atomic_store_n(&o->refused_here, __atomic_load_n(&o->refused_here, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
  (void)rk_graph_refuse(b->g, onode, e->lane, e, e->payload_len ? (const void *)(e + 1) : NULL, RK_ENORESOURCE,
                        "not sent: the mpi bridge's table of requests waiting for an answer from other ranks is "
                        "full (OWED_MAX)");
  answer_refused(b, o->local_id, e, RK_ENORESOURCE);
  if (b->owed_warn_ns != 0 && t - b->owed_warn_ns < 1000000000ull) {
    b->owed_unlogged++;
    return;
  }
  rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: a request to rank %u not sent: %u requests of this rank's kernels "
                   "wait for an answer from other ranks (%u from rank %u; bound %u): answered with RK_ENORESOURCE "
                   "(%llu more since the last such line; rk_mpi_bridge_stats owed_refused counts them all)",
                   o->peer, b->owed_open, b->peers[o->peer].owed_n, o->peer, b->owed_max,
                   (unsigned long long)b->owed_unlogged);
  b->owed_warn_ns = t;
  b->owed_unlogged = 0;
}

/* The graph is being destroyed (bridge_closing) and route o is out of credits: the requests of
 * this rank's kernels at the head of its ring will not go before the kernels' terminate waits for
 * their answers, so they are answered now with RK_ECLOSED and dropped (counted in answers_failed
 * and dropped), as the stop would (settle_peer), up to the first message that is something else
 * (it waits for credits, in order). Returns how many. Bridge thread. */
static uint32_t closing_shed(rk_mpi_bridge *b, route_out *o, rk_ring *ring) {
  uint32_t n = 0, onode;
  uint64_t pos;
  while (rk_ring_peek_n(ring, 1, &pos)) { /* acquire (inside peek): pairs with the senders' commit */
    const rk_envelope *e = (const rk_envelope *)rk_ring_slot(ring, pos);
    if (!e->origin || out_of_local_id(b, e->origin) || !wants_answer(e) || !local_node_of(b, e->origin, &onode)) break;
    stat_add(&b->s_answers_failed, 1); /* before the answer: as in owed_fail */
    stat_add(&b->s_dropped, 1);
    answer_refused(b, o->local_id, e, RK_ECLOSED);
    rk_ring_release_n(ring, 1); /* release: the slot was read (pairs with the senders' reserve) */
    n++;
  }
  return n;
}

/* Move what route o's outbound ring holds (a device backend: its host ring first, then the
 * lanes' one), as far as credits and a batch allow. A request over the owed table's bound is
 * answered and dropped on the way (owed_refuse); a notice that finds its origin's queue full holds
 * the route (held_for: drainable then lets the thread sleep). */
static uint32_t drain_route(rk_mpi_bridge *b, route_out *o) {
  peer *p = &b->peers[o->peer];
  uint32_t moved = 0;
  int held = 0; /* a notice for an origin's rank found its queue full: the route waits */
  rk_ring *ring = o->hring && rk_ring_count(o->hring) ? o->hring : o->ring;
  if (get_state(p) != RK_MPI_PEER_UP) return 0;
  o->held_for = 0;
  for (;;) {
    uint64_t pos;
    uint64_t credited = __atomic_load_n(&o->credited, __ATOMIC_RELAXED); /* bridge thread's own word */
    uint32_t avail = (uint32_t)(o->window - (o->sent - credited)), n, i, k;
    if (avail == 0) {
      /* (relaxed: the closing field's comment) */
      if (__atomic_load_n(&b->closing, __ATOMIC_RELAXED)) {
        moved += closing_shed(b, o, ring);
        if (ring != o->ring) moved += closing_shed(b, o, o->ring);
      }
      if (!o->stalled && rk_ring_peek_n(ring, 1, &pos)) {
        o->stalled = 1;
        stat_add(&b->s_credit_stalls, 1);
      }
      break;
    }
    /* acquire (inside peek): pairs with the senders' per-slot release (rk__k2k_push's commit) */
    if ((n = rk_ring_peek_n(ring, avail < 64 ? avail : 64, &pos)) == 0) {
      if (ring == o->ring) break;
      ring = o->ring; /* the host ring is empty: the lanes' */
      continue;
    }
    if (!batch_open(b, p)) break;
    for (i = 0, k = 0; i < n; i++) { /* i: slots taken; k: of them, put in the batch */
      rk_envelope *e = (rk_envelope *)rk_ring_slot(ring, pos + i);
      uint32_t len = RK_ENVELOPE_SIZE + e->payload_len, rec = REC_HEADER + pad8(len), origin_rank = b->rank;
      route_out *q = e->origin ? out_of_local_id(b, e->origin) : NULL, *note = NULL;
      uint32_t onode;
      int track = q == NULL && wants_answer(e) && local_node_of(b, e->origin, &onode);
      uint8_t *w;
      rk_envelope *we;
      if (track && owed_over(b, o->peer)) { /* over the owed table's bound: answered, not sent */
        owed_refuse(b, o, onode, e);
        continue;
      }
      if (p->batch_len + rec > b->o.batch_bytes) break;
      /* a request of another rank's kernel that goes on to a third rank: its origin's rank is told
       * (the entry it keeps for the answer follows the request: docs/mpi.md) */
      if (q && q->peer != o->peer && wants_answer(e) && get_state(&b->peers[q->peer]) == RK_MPI_PEER_UP) {
        if (b->peers[q->peer].moved_n == MOVED_MAX) {
          held = 1;
          o->held_for = q->peer + 1u;
          break;
        }
        note = q;
      }
      w = p->batch + p->batch_len;
      memcpy(w, &rec, 4);
      memcpy(w + REC_HEADER, e, len);
      we = (rk_envelope *)(w + REC_HEADER);
      we->dst = o->remote_id;
      if (we->origin) { /* a request continued, or its reply: the origin named on its own rank */
        if (q) {
          origin_rank = q->peer;
          we->origin = q->remote_id;
        } else if (track) {
          owed_track(b, e, o->peer, o->local_id); /* a local kernel is owed its answer from there */
        }
      }
      memcpy(w + 4, &origin_rank, 4);
      memcpy(w + 8, &o->lane, 4);
      memset(w + 12, 0, 4);
      we->node = rk_mpi_node_id(b->rank, we->node);
      p->batch_len += rec;
      p->batch_n++;
      k++;
      if (note) moved_note(b, note, o->peer, e->correlation_id);
    }
    if (i == 0 && held) break;
    if (i == 0) { /* the batch is full: send it and take a new one */
      if (!batch_send(b, o->peer)) break;
      continue;
    }
    o->sent += k;
    if (k) o->stalled = 0;
    /* sent_pub before the slots go back: flush reads the ring's head (acquire, rk_ring_count) and
     * then sent_pub, so a flush that sees these slots gone sees them counted as sent (or refused
     * over the bound: gone, never owed a credit, counted in refused_here, stored before this).
     * Release: pairs with flush's acquire. */
    __atomic_store_n(&o->sent_pub, o->sent, __ATOMIC_RELEASE);
    rk_ring_release_n(ring, i); /* release: the slots were read (pairs with the senders' reserve) */
    moved += i;
    if (held) break; /* (moved_send makes room: the next pass) */
    if (i < n) { /* out of batch room */
      if (!batch_send(b, o->peer)) break;
    }
  }
  return moved;
}

static int ctrl_send(rk_mpi_bridge *b, uint32_t r, uint32_t kind) {
  peer *p = &b->peers[r];
  uint32_t n = 0, i;
  if (p->ctrl_busy) {
    int done = 0;
    MPI_Test(&p->ctrl_req_out, &done, MPI_STATUS_IGNORE);
    if (!done) return 0;
    p->ctrl_busy = 0;
  }
  if (kind == CTRL_CREDIT) {
    uint32_t j;
    for (i = 0; i < b->nids; i++)
      for (j = 0; j < b->in_lanes[b->ids[i].node]; j++) {
        route_in *ri = &p->in[b->in_base[b->ids[i].node] + j];
        uint8_t *w = p->ctrl_out + 8 + n * CREDIT_REC;
        if (ri->consumed == ri->credited && ri->refused == ri->refused_told) continue;
        memcpy(w, &b->ids[i].id, 4);
        memcpy(w + 4, &j, 4);
        memcpy(w + 8, &ri->consumed, 8);
        memcpy(w + 16, &ri->refused, 8);
        n++;
      }
    if (n == 0) return 0;
  }
  memcpy(p->ctrl_out, &kind, 4);
  memcpy(p->ctrl_out + 4, &n, 4);
  if (MPI_Isend(p->ctrl_out, (int)(8 + n * CREDIT_REC), MPI_BYTE, (int)r, TAG_CTRL, b->comm, &p->ctrl_req_out) !=
      MPI_SUCCESS)
    return 0; /* nothing marked as told: the credits go out with the next try */
  p->ctrl_sent++; /* counted in our bye: the peer takes that many before it frees the communicator */
  if (kind == CTRL_CREDIT) { /* sent: what it told (consumed moves on this thread only) */
    uint32_t j;
    for (i = 0; i < b->nids; i++)
      for (j = 0; j < b->in_lanes[b->ids[i].node]; j++) {
        route_in *ri = &p->in[b->in_base[b->ids[i].node] + j];
        ri->credited = ri->consumed;
        ri->refused_told = ri->refused;
      }
    p->credit_ns = now_ns();
  }
  p->ctrl_busy = 1;
  p->told_ns = now_ns();
  if (kind == CTRL_HEARTBEAT) stat_add(&b->s_heartbeats, 1);
  return 1;
}

/* Our bye to peer r, once: the last message of this bridge to it on the communicator (after every
 * batch, on their tag) and the count of the control messages sent to it before. The bridge thread
 * sends it in answer to the peer's bye; stop sends it to the peers that have not had it. */
static void bye_send(rk_mpi_bridge *b, uint32_t r) {
  peer *p = &b->peers[r];
  if (p->bye_sent) return;
  p->bye[0] = BYE_N;
  p->bye[1] = p->ctrl_sent;
  if (MPI_Isend(p->bye, 8, MPI_BYTE, (int)r, TAG_DATA, b->comm, &p->bye_req) != MPI_SUCCESS) {
    p->bye_req = MPI_REQUEST_NULL; /* the peer will not hear it: its stop keeps its communicator */
    return;
  }
  p->bye_sent = 1;
}

/* ---------------------------------------- receiving ---------------------------------------- */

/* Whether an error answer for origin `origin` waits in b->answers: a later one for it queues behind
 * (per-origin order). Bridge thread (or stop, after it). */
static int answers_queued_for(const rk_mpi_bridge *b, uint32_t origin) {
  const answer *a;
  for (a = b->answers; a; a = a->next)
    if (a->e.origin == origin) return 1;
  return 0;
}

/* The error answer to a refused request (rk_graph_answer_error); kept and retried when the
 * origin's inbox is full, or when answers for the same origin wait already (they go first). Bridge
 * thread (or stop, after the thread). */
static void answer_refused(rk_mpi_bridge *b, uint32_t from_id, const rk_envelope *e, int code) {
  int rc;
  answer *a;
  if (!wants_answer(e)) return; /* nothing to answer (not queued: the stop counts what waits) */
  rc = answers_queued_for(b, e->origin) ? RK_EAGAIN : rk_graph_answer_error(b->g, from_id, e, code);
  if (rc != RK_EAGAIN) {
    if (rc != RK_OK)
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: the error answer (%s) to a refused or lost request cannot "
                       "reach its origin (local id %u): %s", rk_err_name(code), e->origin, rk_err_name(rc));
    return;
  }
  if ((a = (answer *)malloc(sizeof *a)) == NULL) {
    rk_transport_log(b->g, RK_LOG_ERROR, "mpi bridge: out of memory: an error answer to a refused request is lost");
    return;
  }
  a->next = NULL;
  a->from_id = from_id;
  a->code = code;
  a->e = *e;
  *b->answers_tail = a;
  b->answers_tail = &a->next;
}

/* The waiting error answers, oldest first, per origin: an origin whose inbox is still full keeps
 * its answers (and its later ones wait behind them, in order), the others' go in (before, the
 * first full origin held up every answer after it, for every origin: head-of-line). */
static uint32_t answers_retry(rk_mpi_bridge *b) {
  uint32_t n = 0, nfull = 0, i, full[MAX_NODES];
  answer **pa = &b->answers;
  while (*pa) {
    answer *a = *pa;
    int rc;
    for (i = 0; i < nfull && full[i] != a->e.origin; i++) {
    }
    if (i < nfull) { /* its origin is full this pass: it waits, in order */
      pa = &a->next;
      continue;
    }
    if ((rc = rk_graph_answer_error(b->g, a->from_id, &a->e, a->code)) == RK_EAGAIN) {
      if (nfull == MAX_NODES) break; /* (origins are local ids: at most MAX_NODES) */
      full[nfull++] = a->e.origin;
      pa = &a->next;
      continue;
    }
    *pa = a->next; /* in, or never (its origin closed: RK_ECLOSED) */
    if (b->answers_tail == &a->next) b->answers_tail = pa;
    free(a);
    n++;
  }
  return n;
}

/* Answer with RK_ECLOSED every request of a local kernel owed from rank r (UINT32_MAX: from any
 * rank) whose answer has not come, as a refusal is answered (answer_refused: into the origin's K2K
 * or transport inbox, retried while full): its peer is lost or closed, or the bridge stops, so the
 * answer cannot come any more. The entries stay, answered: an answer arriving later anyway (over
 * another rank) is dropped (owed_arrival). Returns how many. Bridge thread (or stop, after it). */
static void owed_fail_one(rk_mpi_bridge *b, owed_req *w) {
  rk_envelope e;
  rk_envelope_init(&e, w->type ? w->type : 1u, 0, (uint16_t)RK_ENV_F_K2K);
  e.origin = w->origin;
  e.correlation_id = w->corr;
  e.lane = w->lane;
  e.priority = w->priority;
  e.dst = w->from_id;
  /* counted before the answer goes: whoever the answer reaches (the origin's lane, then the
   * caller: the push's release, the lane's acquire, its reply's release) sees the count */
  stat_add(&b->s_answers_failed, 1);
  answer_refused(b, w->from_id, &e, RK_ECLOSED);
  w->answered = 1;
  if (b->peers[w->peer].owed_n) b->peers[w->peer].owed_n--;
  if (b->owed_open) b->owed_open--;
}

static uint64_t owed_fail(rk_mpi_bridge *b, uint32_t r) {
  uint64_t n = 0;
  uint32_t i;
  for (i = 0; i < b->owed_cap; i++) {
    owed_req *w = &b->owed_tab[i];
    if (w->origin == 0 || w->answered || (r != UINT32_MAX && w->peer != r)) continue;
    owed_fail_one(b, w);
    n++;
  }
  return n;
}

/* A notice from peer r (moved_send): requests of this rank's kernels that r passed on to another
 * rank. Each open entry owed from r for (origin, correlation id) now names that rank; one not
 * found is ignored (its answer came first, or it was answered already); one moved to a rank seen
 * lost or closed already is answered at once (owed_fail_one). A malformed notice (version, size,
 * a rank or kernel id that cannot be) is refused, counted, logged at most once a second per peer. */
static void take_moved(rk_mpi_bridge *b, uint32_t r, const uint8_t *buf, int bytes) {
  peer *p = &b->peers[r];
  uint32_t n = 0, v = 0, i, bad = 0;
  if (bytes >= (int)MOVED_HEAD) {
    memcpy(&n, buf + 4, 4);
    memcpy(&v, buf + 8, 4);
  }
  if (bytes < (int)MOVED_HEAD || v != MOVED_VERSION || n == 0 || n > MOVED_MAX ||
      (uint32_t)bytes != MOVED_HEAD + n * MOVED_REC) {
    bad = 1;
    n = 0;
  }
  for (i = 0; i < n; i++) {
    uint32_t origin, to, node, j;
    uint64_t corr;
    owed_req *w = NULL;
    memcpy(&origin, buf + MOVED_HEAD + i * MOVED_REC, 4);
    memcpy(&to, buf + MOVED_HEAD + i * MOVED_REC + 4, 4);
    memcpy(&corr, buf + MOVED_HEAD + i * MOVED_REC + 8, 8);
    if (origin == 0 || to >= b->ranks || to == b->rank || to == r || !local_node_of(b, origin, &node)) {
      bad++;
      continue;
    }
    for (j = b->owed_cap ? owed_home(b, origin, corr) : 0; b->owed_cap && b->owed_tab[j].origin;
         j = (j + 1u) & (b->owed_cap - 1u))
      if (b->owed_tab[j].origin == origin && b->owed_tab[j].corr == corr && b->owed_tab[j].peer == r &&
          !b->owed_tab[j].answered) {
        w = &b->owed_tab[j];
        break;
      }
    if (w == NULL) continue;
    if (b->peers[r].owed_n) b->peers[r].owed_n--;
    w->peer = to;
    b->peers[to].owed_n++;
    stat_add(&b->s_moves_taken, 1);
    if (get_state(&b->peers[to]) != RK_MPI_PEER_UP) owed_fail_one(b, w); /* (its peer_down has run) */
  }
  if (bad) {
    uint64_t t = now_ns();
    stat_add(&b->s_moves_refused, 1);
    if (t - p->moved_warn_ns > 1000000000u) {
      p->moved_warn_ns = t;
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: a malformed owed-answer notice from rank %u refused (%d bytes, "
                       "version %u, %u records, %u bad)", r, bytes, v, n, bad);
    }
  }
}

/* A received envelope that names a local origin (e->origin, origin_rank this rank): an answer, or
 * the request itself back on this rank, so nothing is owed from a peer for it any more. Returns 1
 * to deliver it; 0 when owed_fail has answered that request already: dropped (its credit earned,
 * dead-lettered on its destination, counted in answers_late), never a second answer. */
static int owed_arrival(rk_mpi_bridge *b, uint32_t r, route_in *ri, uint32_t node, uint32_t lane,
                        const rk_envelope *e) {
  owed_req *w;
  if (!(e->flags & RK_ENV_F_K2K) || e->origin == 0 || (w = owed_find(b, e->origin, e->correlation_id, r)) == NULL)
    return 1;
  if (!w->answered) {
    owed_del(b, w);
    return 1;
  }
  owed_del(b, w);
  stat_add(&b->s_answers_late, 1);
  ri->consumed++;
  rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: %s from rank %u for a request this bridge answered already with "
                   "an error (the rank it was sent to was lost or closed): dropped",
                   (e->flags & RK_ENV_F_REPLY) ? "an answer" : "a request", r);
  (void)rk_graph_refuse(b->g, node, lane, e, e->payload_len ? (const void *)(e + 1) : NULL, RK_ECLOSED,
                        "came after the mpi bridge answered its request with an error (its rank was lost or closed)");
  return 0;
}

/* A message refused on this rank: counted on its route (the sender learns it with the credits),
 * dead-lettered on the destination kernel, and answered when it continues a request. */
static void refuse(rk_mpi_bridge *b, route_in *ri, uint32_t node, uint32_t lane, const rk_envelope *e, int code,
                   const char *why) {
  uint32_t from = 0;
  if (code != RK_ECLOCK) stat_add(&b->s_refused, 1); /* (clock refusals: clock_rejected) */
  if (ri) {
    ri->consumed++;
    ri->refused++;
  }
  if (node != UINT32_MAX) {
    rk_graph_node_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (rk_graph_node(b->g, node, &info) == RK_OK) from = info.kernel_id;
    (void)rk_graph_refuse(b->g, node, lane, e, e->payload_len ? (const void *)(e + 1) : NULL, code, why);
  }
  answer_refused(b, from, e, code);
}

/* An answer for a local origin (a reply: its lane owes its caller the answer and waits for this
 * one; owed_arrival has taken its entry) whose stamp the receive rule refused: refuse() dead-letters
 * it but answers only requests, so the origin's lane would owe the answer for good (its caller and
 * terminate waiting out their timeouts). It is answered in its place with RK_ECLOCK, as a kernel
 * answers what it refuses: from the answering kernel's stand-in (e->src), with the request's
 * correlation id, lane and priority (counted in clock_rejected, not answers_failed). Bridge thread. */
static void answer_clock_refused(rk_mpi_bridge *b, const rk_envelope *e) {
  rk_envelope q;
  if (!(e->flags & RK_ENV_F_K2K) || !(e->flags & RK_ENV_F_REPLY) || e->origin == 0 || e->origin == UINT32_MAX) return;
  q = *e; /* the request it answers, as rk_graph_answer_error wants it */
  q.flags = (uint16_t)((e->flags & ~(RK_ENV_F_REPLY | RK_ENV_F_ERROR | RK_ENV_F_NO_REPLY)) | RK_ENV_F_K2K);
  q.payload_len = 0;
  answer_refused(b, e->src, &q, RK_ECLOCK);
}

/* Into the local inbox, or the route's staging queue. Returns 0 (the inbox is full: stage it), 1
 * (delivered) or 2 (refused: dead-lettered, answered). Either of the last two earns its credit. */
static int deliver(rk_mpi_bridge *b, route_in *ri, uint32_t node, uint32_t lane, rk_envelope *e) {
  int rc = rk_graph_deliver(b->g, node, lane, e, e->payload_len ? (const void *)(e + 1) : NULL);
  if (rc == RK_EAGAIN) return 0;
  if (rc == RK_OK) {
    stat_add(&b->s_delivered, 1);
    ri->consumed++;
    return 1;
  }
  rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: an envelope for local kernel %u refused: %s", e->dst,
                   rk_err_name(rc));
  refuse(b, ri, node, lane, e, rc, "refused by the destination's inbox (mpi bridge)");
  return 2;
}

static void stage(rk_mpi_bridge *b, route_in *ri, const rk_envelope *e) {
  uint32_t len = RK_ENVELOPE_SIZE + e->payload_len;
  staged *s = (staged *)malloc(sizeof *s + len);
  if (s == NULL) { /* cannot happen often: bounded by credits; counted as refused */
    refuse(b, ri, UINT32_MAX, 0, e, RK_ENOMEM, NULL);
    return;
  }
  s->next = NULL;
  s->len = len;
  memcpy(s->data, e, len);
  if (ri->tail)
    ri->tail->next = s;
  else
    ri->head = s;
  ri->tail = s;
  stat_add(&b->s_staged, 1);
}

/* Retry the staged messages of every route; returns how many went in. */
static uint32_t unstage(rk_mpi_bridge *b) {
  uint32_t r, i, j, moved = 0;
  for (r = 0; r < b->ranks; r++)
    for (i = 0; i < b->nids && b->peers[r].in; i++)
      for (j = 0; j < b->in_lanes[b->ids[i].node]; j++) {
      route_in *ri = &b->peers[r].in[b->in_base[b->ids[i].node] + j];
      while (ri->head) {
        staged *s = ri->head;
        if (!deliver(b, ri, b->ids[i].node, j, (rk_envelope *)s->data)) break; /* counts consumed */
        ri->head = s->next;
        if (ri->head == NULL) ri->tail = NULL;
        free(s);
        moved++;
      }
      }
  return moved;
}

/* At stop (after the thread): what the routes staged for a full inbox goes in while there is room,
 * each route in order; a kernel that has terminated refuses it: dead-lettered on it, counted as
 * refused (and in *gone, which the stop logs in one line), dropped, as before (nothing more is
 * received, its sender counts it as unconfirmed; a request among them is not answered, as before:
 * docs/mpi.md, "Not covered"). Returns how many wait still (their inbox full). */
static uint64_t unstage_stop(rk_mpi_bridge *b, uint64_t *gone) {
  uint64_t left = 0;
  uint32_t r, i, j;
  for (r = 0; r < b->ranks; r++)
    for (i = 0; i < b->nids && b->peers[r].in; i++)
      for (j = 0; j < b->in_lanes[b->ids[i].node]; j++) {
        route_in *ri = &b->peers[r].in[b->in_base[b->ids[i].node] + j];
        const staged *w;
        while (ri->head) {
          staged *s = ri->head;
          rk_envelope *e = (rk_envelope *)s->data;
          int rc = rk_graph_deliver(b->g, b->ids[i].node, j, e, e->payload_len ? (const void *)(e + 1) : NULL);
          if (rc == RK_EAGAIN) break;
          stat_add(rc == RK_OK ? &b->s_delivered : &b->s_refused, 1);
          if (rc != RK_OK) {
            (*gone)++;
            (void)rk_graph_refuse(b->g, b->ids[i].node, j, e, e->payload_len ? (const void *)(e + 1) : NULL, rc,
                                  "staged for a full inbox, refused at the mpi bridge's stop");
          }
          ri->head = s->next;
          if (ri->head == NULL) ri->tail = NULL;
          free(s);
        }
        for (w = ri->head; w; w = w->next) left++;
      }
  return left;
}

static void take_record(rk_mpi_bridge *b, uint32_t r, rk_envelope *e, uint32_t origin_rank, uint32_t lane) {
  peer *p = &b->peers[r];
  uint32_t node;
  route_in *ri;
  stat_add(&b->s_received, 1);
  /* the ids of this rank: the origin's stand-in (or our own kernel), the sender's stand-in */
  if (e->origin) {
    if (origin_rank != b->rank) {
      route_out *q = out_of_remote(b, origin_rank, e->origin, UINT32_MAX);
      e->origin = q ? q->local_id : UINT32_MAX; /* no stand-in here: its reply is refused, counted */
    }
  }
  {
    route_out *q = out_of_remote(b, r, e->src, UINT32_MAX);
    e->src = q ? q->local_id : 0;
  }
  if (!local_node_of(b, e->dst, &node)) {
    /* no route here to credit (the sender took dst from our hello: a damaged or foreign message);
     * answered when it continues a request, counted, logged */
    rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: rank %u sent an envelope for kernel id %u, not a kernel of this "
                     "rank's graph", r, e->dst);
    refuse(b, NULL, UINT32_MAX, 0, e, RK_EINVAL, NULL);
    return;
  }
  lane %= b->in_lanes[node];
  ri = &p->in[b->in_base[node] + lane];
  if (origin_rank == b->rank && !owed_arrival(b, r, ri, node, lane, e)) return;
  /* the receive rule on the runtime's clock: a stamp too far ahead is refused (the clock does not
   * move), as a local inbox refuses it: dead-lettered on the destination and answered with
   * RK_ECLOCK (handle_one's refusal); a good one advances the clock before anything sees it */
  if (rk_clock_recv(rk_runtime_clock(b->rt), e->hlc, NULL) == RK_ECLOCK) {
    stat_add(&b->s_clock_rejected, 1);
    rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: an envelope from rank %u refused: its stamp is beyond this "
                     "runtime's maximum clock offset", r);
    refuse(b, ri, node, lane, e, RK_ECLOCK, "stamp too far ahead of the kernel's clock (mpi bridge)");
    if (origin_rank == b->rank) answer_clock_refused(b, e);
    return;
  }
  if (ri->head || !deliver(b, ri, node, lane, e)) stage(b, ri, e);
}

static void take_data(rk_mpi_bridge *b, uint32_t r, const uint8_t *buf, int bytes) {
  uint32_t n, off = 8, i;
  if (bytes < 8) return;
  memcpy(&n, buf, 4);
  if (n == BYE_N) { /* the peer stopped: every batch it sent before is taken (MPI: no overtaking) */
    peer *p = &b->peers[r];
    p->bye_got = 1;
    p->bye_ns = now_ns();
    memcpy(&p->ctrl_expect, buf + 4, 4);
    set_state(p, RK_MPI_PEER_CLOSED); /* (nothing more is sent to it: every send is for UP peers) */
    bye_send(b, r); /* our last word at once: its stop is waiting for it to free its communicator */
    return;
  }
  stat_add(&b->s_batches_received, 1);
  for (i = 0; i < n; i++) {
    uint32_t rec, origin_rank, lane, node;
    rk_envelope *e;
    if (off + REC_HEADER + RK_ENVELOPE_SIZE > (uint32_t)bytes) break;
    memcpy(&rec, buf + off, 4);
    memcpy(&origin_rank, buf + off + 4, 4);
    memcpy(&lane, buf + off + 8, 4);
    e = (rk_envelope *)(buf + off + REC_HEADER);
    if (rec < REC_HEADER + RK_ENVELOPE_SIZE || off + rec > (uint32_t)bytes ||
        e->payload_len > rec - REC_HEADER - RK_ENVELOPE_SIZE) {
      /* its header parses: its route gets the credit back (refused); the rest cannot be found */
      if (local_node_of(b, e->dst, &node)) {
        route_in *ri = &b->peers[r].in[b->in_base[node] + lane % b->in_lanes[node]];
        stat_add(&b->s_received, 1);
        stat_add(&b->s_refused, 1);
        ri->consumed++;
        ri->refused++;
        i++;
      }
      break;
    }
    take_record(b, r, e, origin_rank, lane);
    off += rec;
  }
  if (i < n) {
    stat_add(&b->s_refused, n - i);
    rk_transport_log(b->g, RK_LOG_ERROR, "mpi bridge: a malformed batch from rank %u: %u envelopes dropped (their "
                     "credits cannot be returned)", r, n - i);
  }
}

/* ---------------------------------------- cycles across ranks ------------------------------ */

/* A cycle of kernels whose K2K inboxes are full of messages for the next one cannot move, and
 * the local checks (cpu_backend.c k2k_deadlocked, graph.c rk__graph_dev_deadlock) stop at a remote
 * node's stand-in. Edge chasing (Chandy-Misra-Haas) carries the check across the bridges: a lane
 * that has waited DL_STUCK_NS on a chain that leaves the rank at a remote lane starts a probe; the
 * probe goes to that lane's rank, whose bridge takes it only if its route from the sender into
 * that lane is stuck (it holds staged messages: the lane's inbox is full, the edge that stops the
 * credits), follows the lane's local chain (rk_graph_lane_wait) and passes the probe on where that
 * chain leaves the rank again. A chain that ends (a lane that waits on nothing will make room),
 * loops on one rank without the initiator (the local checks' case), or a route that delivers, ends
 * the probe. Back at the initiator, the path is a cycle; the initiator confirms it with a second
 * probe DL_CONFIRM_NS later that must find the same lanes with the same progress counts (nothing
 * finished anywhere on the cycle in between), and only then faults its kernel with RK_EDEADLK
 * naming the cycle. Every stuck lane of the cycle initiates, so every kernel on it faults (a
 * kernel faulted for a deadlock stays on the cycle: rk_graph_lane_wait). Bounded: a lane has one
 * probe on its way at a time, at most one per DL_SCAN_NS; a peer has one probe send in flight, and
 * a probe that finds it busy is dropped (its initiator tries again). Bridge thread only. */

static int local_id_of_node(const rk_mpi_bridge *b, uint32_t node, uint32_t *id) {
  uint32_t i;
  for (i = 0; i < b->nids; i++)
    if (b->ids[i].node == node) {
      *id = b->ids[i].id;
      return 1;
    }
  return 0;
}

/* Follow the wait edges from local lane (node, lane), adding each lane to pr's path. 1: the chain
 * leaves this rank at remote lane *next; 2: it came back to the initiator (pr is a cycle); 0: it
 * ends here. */
static int chase(rk_mpi_bridge *b, probe *pr, uint32_t node, uint32_t lane, route_out **next) {
  for (;;) {
    rk_graph_wait w;
    uint32_t id, i;
    if (!local_id_of_node(b, node, &id)) return 0;
    for (i = 0; i < pr->n; i++)
      if (pr->hop[i].rank == b->rank && pr->hop[i].id == id && pr->hop[i].lane == lane)
        return i == 0 ? 2 : 0; /* (hop 0 is the initiator; any other: a cycle it only leads into) */
    memset(&w, 0, sizeof w);
    w.size = sizeof w;
    if (rk_graph_lane_wait(b->g, node, lane, &w) != RK_OK || !w.waiting || pr->n == PROBE_MAX_HOPS) return 0;
    pr->hop[pr->n].rank = b->rank;
    pr->hop[pr->n].id = id;
    pr->hop[pr->n].lane = lane;
    pr->hop[pr->n].progress = w.progress;
    pr->n++;
    for (i = 0; i < b->nout; i++)
      if (b->out[i].node == w.to_node && b->out[i].lane == w.to_lane) {
        if (get_state(&b->peers[b->out[i].peer]) != RK_MPI_PEER_UP) return 0; /* closed routes refuse */
        *next = &b->out[i];
        return 1;
      }
    node = w.to_node;
    lane = w.to_lane;
  }
}

/* Send pr on to remote lane `to` (its rank's bridge goes on from there). 0: not sent (the peer's
 * probe send is still in flight: dropped, its initiator tries again). */
static int probe_send(rk_mpi_bridge *b, probe *pr, const route_out *to) {
  peer *p = &b->peers[to->peer];
  uint8_t *w = p->probe_out;
  uint32_t head[8], i, kind = CTRL_PROBE, zero = 0;
  if (get_state(p) != RK_MPI_PEER_UP) return 0;
  if (p->probe_busy) {
    int done = 0;
    MPI_Test(&p->probe_req, &done, MPI_STATUS_IGNORE);
    if (!done) return 0;
    p->probe_busy = 0;
  }
  pr->target_id = to->remote_id;
  pr->target_lane = to->lane;
  head[0] = PROBE_VERSION;
  head[1] = pr->init_rank;
  head[2] = pr->init_id;
  head[3] = pr->init_lane;
  head[4] = pr->gen;
  head[5] = pr->target_id;
  head[6] = pr->target_lane;
  head[7] = 0;
  memcpy(w, &kind, 4);
  memcpy(w + 4, &pr->n, 4);
  memcpy(w + 8, head, PROBE_HEAD);
  for (i = 0; i < pr->n; i++) {
    uint8_t *h = w + 8 + PROBE_HEAD + i * PROBE_HOP;
    memcpy(h, &pr->hop[i].rank, 4);
    memcpy(h + 4, &pr->hop[i].id, 4);
    memcpy(h + 8, &pr->hop[i].lane, 4);
    memcpy(h + 12, &zero, 4);
    memcpy(h + 16, &pr->hop[i].progress, 8);
  }
  if (MPI_Isend(w, (int)(8 + PROBE_HEAD + pr->n * PROBE_HOP), MPI_BYTE, (int)to->peer, TAG_CTRL, b->comm,
                &p->probe_req) != MPI_SUCCESS)
    return 0;
  p->ctrl_sent++; /* a control message too: counted in our bye (the peer takes it before it frees the communicator) */
  p->probe_busy = 1;
  stat_add(&b->s_probes, 1);
  return 1;
}

static const char *kernel_name(rk_mpi_bridge *b, uint32_t rank, uint32_t id) {
  uint32_t i, node;
  if (rank == b->rank) {
    rk_graph_node_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (local_node_of(b, id, &node) && rk_graph_node(b->g, node, &info) == RK_OK && info.name) return info.name;
    return "?";
  }
  for (i = 0; i < b->peers[rank].h.n && i < MAX_NODES; i++)
    if (b->peers[rank].h.e[i].kernel_id == id) return b->peers[rank].h.e[i].name;
  return "?";
}

/* A probe this rank initiated came back round a cycle: the first time a candidate, confirmed by
 * the next one when every lane on it is the same and has finished nothing in between. */
static void probe_closed(rk_mpi_bridge *b, const probe *pr) {
  uint32_t node, i;
  uint64_t hash = 1469598103934665603ull; /* FNV-1a over the path: lanes and progress counts */
  dl_lane *d;
  if (!local_node_of(b, pr->init_id, &node) || pr->init_lane >= b->in_lanes[node]) return;
  d = &b->dl[b->in_base[node] + pr->init_lane];
  if (!d->out || pr->gen != d->gen || d->said) return; /* an older round's, or said */
  d->out = 0;
  for (i = 0; i < pr->n; i++) {
    uint64_t v[4] = {pr->hop[i].rank, pr->hop[i].id, pr->hop[i].lane, pr->hop[i].progress};
    const uint8_t *c = (const uint8_t *)v;
    size_t j;
    for (j = 0; j < sizeof v; j++) hash = (hash ^ c[j]) * 1099511628211ull;
  }
  if (!d->have_cand || d->cand_hash != hash || d->cand_gen == pr->gen) {
    d->have_cand = 1;
    d->cand_hash = hash;
    d->cand_gen = pr->gen;
    d->cand_ns = now_ns();
    return;
  }
  {
    char why[512];
    size_t off = 0;
    for (i = 0; i <= pr->n && off + 1 < sizeof why; i++) {
      const probe_hop *h = &pr->hop[i % pr->n];
      int n = snprintf(why + off, sizeof why - off, "%srank %u %s lane %u", i ? " -> " : "", h->rank,
                       kernel_name(b, h->rank, h->id), h->lane);
      if (n < 0) break;
      off += (size_t)n;
    }
    if (off >= sizeof why) off = sizeof why - 1;
    why[off] = 0;
    d->said = 1;
    if (rk_graph_fault_deadlock(b->g, node, why) == RK_OK) stat_add(&b->s_deadlocks, 1);
  }
}

/* A probe from rank r. What is checked is its format: anything that does not parse as one (its
 * length, version, reserved fields not zero, a rank beyond the job, a path that does not start at
 * its initiator or end at r, a target that is no route from r into one of our lanes) is refused and
 * counted, and logged at most once a second per peer. Its content is otherwise taken as it is: the
 * peers are members of one MPI job, and the initiator compares the other ranks' progress counts
 * as they wrote them. This rank only reads its own lanes. */
static void take_probe(rk_mpi_bridge *b, uint32_t r, const uint8_t *buf, int bytes) {
  probe pr;
  uint32_t head[8], n, i, node;
  route_in *ri;
  route_out *next = NULL;
  const char *bad = NULL;
  memcpy(&n, buf + 4, 4);
  if (n == 0 || n > PROBE_MAX_HOPS || (uint32_t)bytes != 8 + PROBE_HEAD + n * PROBE_HOP) {
    bad = "its length";
    goto refused;
  }
  memcpy(head, buf + 8, PROBE_HEAD);
  if (head[0] != PROBE_VERSION) {
    bad = "its version";
    goto refused;
  }
  if (head[7] != 0) { /* reserved: zero in this version */
    bad = "a reserved field";
    goto refused;
  }
  memset(&pr, 0, sizeof pr);
  pr.init_rank = head[1];
  pr.init_id = head[2];
  pr.init_lane = head[3];
  pr.gen = head[4];
  pr.target_id = head[5];
  pr.target_lane = head[6];
  pr.n = n;
  for (i = 0; i < n; i++) {
    const uint8_t *h = buf + 8 + PROBE_HEAD + i * PROBE_HOP;
    uint32_t rsv;
    memcpy(&pr.hop[i].rank, h, 4);
    memcpy(&pr.hop[i].id, h + 4, 4);
    memcpy(&pr.hop[i].lane, h + 8, 4);
    memcpy(&rsv, h + 12, 4);
    memcpy(&pr.hop[i].progress, h + 16, 8);
    if (pr.hop[i].rank >= b->ranks) {
      bad = "a rank";
      goto refused;
    }
    if (rsv != 0) { /* reserved: zero in this version */
      bad = "a reserved field";
      goto refused;
    }
  }
  if (pr.init_rank >= b->ranks || pr.hop[0].rank != pr.init_rank || pr.hop[0].id != pr.init_id ||
      pr.hop[0].lane != pr.init_lane || pr.hop[n - 1].rank != r) {
    bad = "its path";
    goto refused;
  }
  if (!local_node_of(b, pr.target_id, &node) || pr.target_lane >= b->in_lanes[node] || b->peers[r].in == NULL) {
    bad = "its target";
    goto refused;
  }
  ri = &b->peers[r].in[b->in_base[node] + pr.target_lane];
  if (ri->head == NULL) return; /* the route from r delivers (or waits on MPI): no edge, the probe ends */
  switch (chase(b, &pr, node, pr.target_lane, &next)) {
  case 1:
    (void)probe_send(b, &pr, next);
    break;
  case 2:
    if (pr.init_rank == b->rank) probe_closed(b, &pr);
    break;
  default:
    break;
  }
  return;
refused:
  stat_add(&b->s_probes_refused, 1); /* each one counted; logged at most once a second per peer */
  {
    peer *p = &b->peers[r];
    uint64_t t = now_ns();
    if (p->probe_warn_ns != 0 && t - p->probe_warn_ns < 1000000000ull) {
      p->probe_unlogged++;
      return;
    }
    rk_transport_log(b->g, RK_LOG_WARN,
                     "mpi bridge: a malformed deadlock probe from rank %u refused (%s; %llu more since the last "
                     "such line; rk_mpi_bridge_stats probes_refused counts them all)",
                     r, bad, (unsigned long long)p->probe_unlogged);
    p->probe_warn_ns = t;
    p->probe_unlogged = 0;
  }
}

/* Every DL_SCAN_NS: each local lane that waits on the same lane with no progress since
 * DL_STUCK_NS, on a chain that leaves the rank, starts a probe (one on its way at a time; the
 * confirming one DL_CONFIRM_NS after the first came back). */
static void deadlock_scan(rk_mpi_bridge *b, uint64_t t) {
  uint32_t i, l;
  if (b->dl == NULL || t - b->dl_scan_ns < DL_SCAN_NS) return;
  b->dl_scan_ns = t;
  for (i = 0; i < b->nids; i++) {
    uint32_t node = b->ids[i].node;
    for (l = 0; l < b->in_lanes[node]; l++) {
      dl_lane *d = &b->dl[b->in_base[node] + l];
      rk_graph_wait w;
      probe pr;
      route_out *next = NULL;
      memset(&w, 0, sizeof w);
      w.size = sizeof w;
      if (rk_graph_lane_wait(b->g, node, l, &w) != RK_OK || !w.waiting) {
        uint32_t gen = d->gen;
        memset(d, 0, sizeof *d);
        d->gen = gen; /* (a late probe of an old round stays stale) */
        continue;
      }
      if (d->since_ns == 0 || w.to_node != d->to_node || w.to_lane != d->to_lane || w.progress != d->progress) {
        d->to_node = w.to_node;
        d->to_lane = w.to_lane;
        d->progress = w.progress;
        d->since_ns = t;
        d->have_cand = 0;
        d->out = 0;
        d->said = 0;
        continue;
      }
      if (d->said || t - d->since_ns < DL_STUCK_NS) continue;
      if (d->out && t - d->probe_ns < DL_LOST_NS) continue;
      if (d->have_cand && t - d->cand_ns < DL_CONFIRM_NS) continue;
      memset(&pr, 0, sizeof pr);
      pr.init_rank = b->rank;
      pr.init_id = b->ids[i].id;
      pr.init_lane = l;
      pr.gen = ++d->gen;
      d->out = 0;
      if (chase(b, &pr, node, l, &next) != 1) continue; /* a chain within the rank: the local checks' */
      if (probe_send(b, &pr, next)) {
        d->out = 1;
        d->probe_ns = t;
      }
    }
  }
}

/* Returns 1 for credits (traffic), 0 for a heartbeat or anything else (the idle bridge's wake-ups
 * are not a conversation: bridge_main). */
static int take_ctrl(rk_mpi_bridge *b, uint32_t r, const uint8_t *buf, int bytes) {
  uint32_t kind, n, i;
  if (bytes < 8) return 0;
  memcpy(&kind, buf, 4);
  memcpy(&n, buf + 4, 4);
  if (kind == CTRL_PROBE) take_probe(b, r, buf, bytes); /* (not the conversation's traffic either) */
  if (kind == CTRL_MOVED) take_moved(b, r, buf, bytes);
  if (kind != CTRL_CREDIT) return 0;
  for (i = 0; i < n && 8 + (i + 1) * CREDIT_REC <= (uint32_t)bytes; i++) {
    uint32_t id, lane;
    uint64_t consumed, refused;
    route_out *o;
    memcpy(&id, buf + 8 + i * CREDIT_REC, 4);
    memcpy(&lane, buf + 8 + i * CREDIT_REC + 4, 4);
    memcpy(&consumed, buf + 8 + i * CREDIT_REC + 8, 8);
    memcpy(&refused, buf + 8 + i * CREDIT_REC + 16, 8);
    if ((o = out_of_remote(b, r, id, lane)) == NULL) continue;
    /* refused before credited: a flush that sees the credit sees the refusals in it (release,
     * pairs with flush's acquire) */
    if (refused > o->refused) __atomic_store_n(&o->refused, refused, __ATOMIC_RELEASE);
    if (consumed > o->credited && consumed <= o->sent)
      __atomic_store_n(&o->credited, consumed, __ATOMIC_RELEASE); /* flush's acquire pairs with it */
  }
  return 1;
}

static void post_recvs(rk_mpi_bridge *b, uint32_t r) {
  peer *p = &b->peers[r];
  if (p->data_req == MPI_REQUEST_NULL)
    MPI_Irecv(p->data_in, (int)b->o.batch_bytes, MPI_BYTE, (int)r, TAG_DATA, b->comm, &p->data_req);
  if (p->ctrl_req == MPI_REQUEST_NULL)
    MPI_Irecv(p->ctrl_in, (int)CTRL_BYTES, MPI_BYTE, (int)r, TAG_CTRL, b->comm, &p->ctrl_req);
}

static uint32_t poll_peer(rk_mpi_bridge *b, uint32_t r) {
  peer *p = &b->peers[r];
  MPI_Status st;
  int done = 0, bytes = 0;
  uint32_t got = 0;
  /* (MPI_Test of MPI_REQUEST_NULL says done: a receive that could not be posted is no message) */
  if (p->data_req != MPI_REQUEST_NULL) MPI_Test(&p->data_req, &done, &st);
  if (done) {
    MPI_Get_count(&st, MPI_BYTE, &bytes);
    p->heard_ns = now_ns();
    take_data(b, r, p->data_in, bytes);
    p->data_req = MPI_REQUEST_NULL;
    got++;
  }
  done = 0;
  if (p->ctrl_req != MPI_REQUEST_NULL) MPI_Test(&p->ctrl_req, &done, &st);
  if (done) {
    MPI_Get_count(&st, MPI_BYTE, &bytes);
    p->heard_ns = now_ns();
    p->ctrl_req = MPI_REQUEST_NULL;
    p->ctrl_got++; /* (against the count in its bye: drain_peer) */
    got += (uint32_t)take_ctrl(b, r, p->ctrl_in, bytes); /* (a heartbeat is no work) */
  }
  if (get_state(p) == RK_MPI_PEER_UP) post_recvs(b, r);
  return got;
}

/* A peer that said bye: the control messages its bye counts (credits, probes, owed-answer notices)
 * are still taken, so that its notices are in before the entries owed from it are answered
 * (peer_down). Returns 1 when one came. */
static uint32_t poll_closed(rk_mpi_bridge *b, uint32_t r) {
  peer *p = &b->peers[r];
  MPI_Status st;
  int done = 0, bytes = 0;
  if (p->ctrl_req == MPI_REQUEST_NULL &&
      MPI_Irecv(p->ctrl_in, (int)CTRL_BYTES, MPI_BYTE, (int)r, TAG_CTRL, b->comm, &p->ctrl_req) != MPI_SUCCESS)
    return 0;
  if (MPI_Test(&p->ctrl_req, &done, &st) != MPI_SUCCESS || !done) return 0;
  MPI_Get_count(&st, MPI_BYTE, &bytes);
  p->ctrl_req = MPI_REQUEST_NULL;
  p->ctrl_got++;
  (void)take_ctrl(b, r, p->ctrl_in, bytes);
  return 1;
}

/* ---------------------------------------- failure ------------------------------------------ */

/* Close peer r's routes and count what they hold: the rings' residue and the batch not sent are
 * dropped (accepted, never to be sent), what was sent and not credited is unconfirmed (it may or
 * may not have been delivered). A dropped request is answered with RK_ECLOSED, as a refused one
 * (its origin, here or on another rank, waits for the answer; counted in answers_failed); the
 * requests in the batch not sent are in the owed table (owed_fail). Once per peer; on the rings'
 * consumer thread (the bridge thread, or stop after it is joined). */
static void settle_peer(rk_mpi_bridge *b, uint32_t r, uint64_t *dropped, uint64_t *unconfirmed) {
  peer *p = &b->peers[r];
  uint32_t i, j;
  *dropped = *unconfirmed = 0;
  if (p->settled) return;
  p->settled = 1;
  for (i = 0; i < b->nout; i++) {
    route_out *o = &b->out[i];
    uint64_t pos, final = 0, end = now_ns() + 100000000u;
    uint32_t n;
    if (o->peer != r || o->ring == NULL) continue;
    (void)rk_graph_remote_close(b->g, o->node); /* first: no new message gets in behind the count */
    (void)rk_ring_closed(o->ring, &final);      /* every position below it is (or will be) published */
    for (;;) {
      if ((n = rk_ring_peek_n(o->ring, 64, &pos)) > 0) {
        for (j = 0; j < n; j++) { /* (ids local: the stand-in's in dst, the origin's local id) */
          const rk_envelope *e = (const rk_envelope *)rk_ring_slot(o->ring, pos + j);
          if (wants_answer(e)) {
            stat_add(&b->s_answers_failed, 1); /* before the answer: as in owed_fail */
            answer_refused(b, o->local_id, e, RK_ECLOSED);
          }
        }
        rk_ring_release_n(o->ring, n);
        *dropped += n;
        continue;
      }
      if (pos >= final || now_ns() > end) break; /* (a sender between its claim and its publication) */
      sched_yield();
    }
    while (o->hring && (n = rk_ring_peek_n(o->hring, 64, &pos)) > 0) { /* this thread's own pushes */
      rk_ring_release_n(o->hring, n);
      *dropped += n;
    }
    *unconfirmed += o->sent - __atomic_load_n(&o->credited, __ATOMIC_RELAXED); /* this thread's own word */
  }
  if (p->batch_buf >= 0 && p->batch_n) { /* counted in o->sent, never sent */
    *dropped += p->batch_n;
    *unconfirmed -= p->batch_n;
  }
  p->batch_buf = -1;
  p->batch_n = 0;
  stat_add(&b->s_dropped, *dropped);
  stat_add(&b->s_unconfirmed, *unconfirmed);
}

/* Peer r is gone (lost: silent; closed: said bye): its routes close, what they hold is dropped,
 * and the requests of this rank's kernels whose answer it owed are answered with RK_ECLOSED (an
 * answer it sent before its bye has been taken: MPI does not overtake on the data tag). Once per
 * lost peer; for a closed one again while requests sent to it are owed (bridge_main). */
static void peer_down(rk_mpi_bridge *b, uint32_t r, rk_mpi_peer_state why) {
  peer *p = &b->peers[r];
  uint64_t dropped = 0, unconfirmed = 0, failed, before = __atomic_load_n(&b->s_answers_failed, __ATOMIC_RELAXED);
  int first = !p->settled;
  settle_peer(b, r, &dropped, &unconfirmed);
  if (why == RK_MPI_PEER_LOST) {
    b->any_lost = 1;
    __atomic_add_fetch(&b->s_peers_lost, 1, __ATOMIC_RELAXED); /* statistics (published by set_state's release) */
  }
  /* The state before the answers owed: a caller that gets its RK_ECLOSED answer (the push's
   * release, the lane's acquire, its reply's release, the caller's acquire) sees the peer LOST or
   * CLOSED and peers_lost counted. After the counters: whoever sees LOST sees them (release).
   * (Before, the answers went first: mpi_owed_lost once found rank 1 still UP after its answer,
   * the origin's lane driving the bridge's progress and taking the answer at once.) */
  set_state(p, why);
  /* a closed peer: once the control messages its bye counts are in (its notices that requests it
   * passed on went on elsewhere: take_moved), or peer_timeout_ns after the bye at most */
  if (why == RK_MPI_PEER_LOST || ctrl_all_in(p) ||
      (int64_t)(now_ns() - p->bye_ns) > b->o.peer_timeout_ns)
    (void)owed_fail(b, r);
  failed = __atomic_load_n(&b->s_answers_failed, __ATOMIC_RELAXED) - before; /* this thread's own count */
  if (why == RK_MPI_PEER_LOST) {
    rk_transport_log(b->g, RK_LOG_ERROR, "mpi bridge: rank %u is lost (silent for %lld ms): its routes are closed "
                     "(sends get RK_ECLOSED); %llu accepted envelopes dropped, %llu sent and not confirmed; %llu "
                     "requests waiting for an answer from it answered with RK_ECLOSED",
                     r, (long long)(b->o.peer_timeout_ns / 1000000), (unsigned long long)dropped,
                     (unsigned long long)unconfirmed, (unsigned long long)failed);
  } else {
    if (first)
      rk_transport_log(b->g, failed ? RK_LOG_WARN : RK_LOG_INFO, "mpi bridge: rank %u closed its bridge: its routes "
                       "are closed; %llu accepted envelopes dropped, %llu sent and not confirmed; %llu requests "
                       "waiting for an answer from it answered with RK_ECLOSED", r, (unsigned long long)dropped,
                       (unsigned long long)unconfirmed, (unsigned long long)failed);
    else if (failed)
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: rank %u closed its bridge: %llu more requests waiting for an "
                       "answer from it answered with RK_ECLOSED", r, (unsigned long long)failed);
  }
}

/* ---------------------------------------- the thread --------------------------------------- */

/* The graph is being destroyed (bridge_closing): what is owed is answered now. Bridge thread. */
static void closing_answer(rk_mpi_bridge *b) {
  uint32_t r, open = 0;
  uint64_t n;
  for (r = 0; r < b->ranks; r++) open += b->peers[r].owed_n;
  if (open == 0) return;
  n = owed_fail(b, UINT32_MAX);
  if (!b->closing_said && n)
    rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: the graph is destroyed without its terminate: %llu requests of "
                     "this rank's kernels waiting for an answer from another rank answered with RK_ECLOSED (an answer "
                     "that still comes is dropped: answers_late)", (unsigned long long)n);
  b->closing_said = 1;
}

/* Whether drain_route could move something of route o now: a message, credit for it, a send
 * buffer (all max_inflight busy: their completion is an MPI event, seen by polling). */
static int drainable(rk_mpi_bridge *b, route_out *o) {
  peer *p = &b->peers[o->peer];
  uint64_t pos;
  uint32_t i;
  if (get_state(p) != RK_MPI_PEER_UP) return 0;
  if (o->sent - __atomic_load_n(&o->credited, __ATOMIC_RELAXED) >= o->window) return 0; /* own word */
  /* held back by an origin's full notice queue (drain_route): only moved_send's completion, an MPI
   * event seen when the wait times out, frees it (before, the route read as ready and the idle
   * thread spun through rings_wait: review of owed2, finding 2) */
  if (o->held_for && b->peers[o->held_for - 1u].moved_n == MOVED_MAX &&
      get_state(&b->peers[o->held_for - 1u]) == RK_MPI_PEER_UP)
    return 0;
  if (!rk_ring_peek_n(o->ring, 1, &pos)) return 0; /* acquire: pairs with the senders' commit */
  if (p->batch_buf >= 0) return 1;
  for (i = 0; i < b->o.max_inflight; i++)
    if (!p->out[i].busy) return 1;
  return 0;
}

/* Returns 1 when route o's peer is owed a credit message now: a route earned an eighth of its
 * window, or the pass is idle, or credits have been owed for CREDIT_AGE_NS (a busy bridge still
 * returns a small route's last credits). Pass holder. */
static int credits_due(rk_mpi_bridge *b, peer *p, int idle, uint64_t t) {
  uint32_t j;
  for (j = 0; j < b->nin; j++) {
    route_in *ri = &p->in[j];
    uint64_t due = ri->consumed - ri->credited;
    if ((due || ri->refused != ri->refused_told) &&
        (idle || due * 8 >= ri->window || (int64_t)(t - p->credit_ns) > (int64_t)CREDIT_AGE_NS))
      return 1;
  }
  return 0;
}

/* The idle bridge waits at most ns for a local send into one of its outbound rings, on the rings'
 * own consumer parking words (the protocol of src/queue/ring_wait.c, whose consumer side this is:
 * the bridge is the rings' only consumer, and every send's rk_ring_notify_consumer wakes it), all
 * at once with futex_waitv (Linux 5.16); without it, or with more than WAITV_MAX rings, it naps.
 * Called and returns with pass_lock held; the lock is let go for the sleep itself (a lane may run a
 * pass meanwhile: it is then the rings' consumer, under the lock). Returns 1 when a route can be
 * drained afterwards (woken by a send). */
static int rings_wait(rk_mpi_bridge *b, uint64_t ns) {
  uint32_t i, n = 0;
  int ready = 0;
  struct timespec ts;
#if defined(__linux__) && defined(SYS_futex_waitv) && defined(FUTEX_32)
  if (b->waitv_ok && b->nout > 0 && b->nout <= WAITV_MAX) {
    struct futex_waitv w[WAITV_MAX];
    for (i = 0; i < b->nout; i++) {
      rk_ring *r = b->out[i].ring;
      w[n].val = __atomic_load_n(&r->cons_wake, __ATOMIC_ACQUIRE); /* pairs with the producers' release bump */
      w[n].uaddr = (uint64_t)(uintptr_t)&r->cons_wake;
      /* FUTEX2_SIZE_U32, shared (not FUTEX2_PRIVATE): the producers' wake is ring_wait.c's shared
       * FUTEX_WAKE, and a private wait is never matched by a shared wake; private on memory a
       * shared futex cannot key (a driver's pinned memory: EFAULT), where ring_wait.c's wake falls
       * back to private too */
      w[n].flags = FUTEX_32 | (b->waitv_private ? FUTEX_PRIVATE_FLAG : 0);
      w[n].__reserved = 0;
      n++;
      rk_store_relaxed_sys_u32(&r->cons_sleeping, 1); /* single consumer (the pass holder): a flag */
    }
    rk_fence_seq_cst_sys(); /* Dekker pair with the fence in rk_ring_notify_consumer */
    for (i = 0; i < b->nout && !ready; i++) ready = drainable(b, &b->out[i]);
    /* acquire: pairs with stop's release (a stop request ends the wait at its timeout at the latest) */
    if (!ready && !__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += (time_t)(ns / 1000000000u);
      ts.tv_nsec += (long)(ns % 1000000000u);
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_mutex_unlock(&b->pass_lock);
      if (syscall(SYS_futex_waitv, w, n, 0, &ts, CLOCK_MONOTONIC) < 0) {
        if (errno == ENOSYS) b->waitv_ok = 0;
        if (errno == EFAULT && !b->waitv_private) b->waitv_private = 1; /* the next wait is private */
      }
      pthread_mutex_lock(&b->pass_lock);
    }
    for (i = 0; i < b->nout; i++) rk_store_relaxed_sys_u32(&b->out[i].ring->cons_sleeping, 0);
    if (ready) return 1;
    for (i = 0; i < b->nout && !ready; i++) ready = drainable(b, &b->out[i]);
    return ready;
  }
#endif
  (void)n;
  ts.tv_sec = 0;
  ts.tv_nsec = (long)ns;
  pthread_mutex_unlock(&b->pass_lock);
  nanosleep(&ts, NULL);
  pthread_mutex_lock(&b->pass_lock);
  return 0;
}

/* A lane drives (bridge_poll): its last pass within LANE_HOLD_NS. (Relaxed: hints, field comments.) */
static int lane_driving(rk_mpi_bridge *b, uint64_t t) {
  return __atomic_load_n(&b->driver, __ATOMIC_RELAXED) != 0 &&
         (int64_t)(t - __atomic_load_n(&b->drive_ns, __ATOMIC_RELAXED)) < (int64_t)LANE_HOLD_NS;
}

/* The bridge thread backs off while a lane drives: it sleeps on drive_wake, LANE_HOLD_NS at most
 * (a driver that stops wakes it at once). */
static void drive_backoff(rk_mpi_bridge *b) {
  uint32_t w = __atomic_load_n(&b->drive_wake, __ATOMIC_ACQUIRE); /* pairs with drive_stop's release bump */
  if (!lane_driving(b, now_ns())) return; /* (re-read after w: a stop before this is seen here) */
#if defined(__linux__)
  {
    struct timespec ts = {0, (long)LANE_HOLD_NS};
    syscall(SYS_futex, &b->drive_wake, FUTEX_WAIT_PRIVATE, w, &ts, NULL, 0);
  }
#else
  {
    struct timespec ts = {0, (long)LANE_HOLD_NS};
    (void)w;
    nanosleep(&ts, NULL);
  }
#endif
}

/* The driving lane `me` stops (it goes to wait, or leaves): the bridge thread takes the work back
 * now. (No lock needed: driver and drive_wake are atomics; relaxed CAS: a hint, field comment.) */
static void drive_stop(rk_mpi_bridge *b, uintptr_t me) {
  uintptr_t want = me;
  if (!__atomic_compare_exchange_n(&b->driver, &want, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  __atomic_add_fetch(&b->drive_wake, 1, __ATOMIC_RELEASE); /* pairs with drive_backoff's acquire */
#if defined(__linux__)
  syscall(SYS_futex, &b->drive_wake, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#endif
}

/* The conversation's part of a pass, the thread's (bridge_main) and a lane's (lane_pass) alike,
 * under pass_lock: take what the outbound rings hold into batches and send them (and the notices
 * of requests passed on), test the posted receives and deliver what came, retry staged messages
 * and waiting error answers. The thread (closed 1) also reads what a closed peer's bye still
 * counts (poll_closed). *delivered: the envelopes this pass delivered into local inboxes. Returns
 * the work done (0: idle). */
static uint32_t pass_traffic(rk_mpi_bridge *b, int closed, uint64_t *delivered) {
  uint32_t work = 0, r, i;
  uint64_t before = __atomic_load_n(&b->s_delivered, __ATOMIC_RELAXED); /* (under the lock: this pass's count) */
  for (i = 0; i < b->nout; i++) work += drain_route(b, &b->out[i]);
  for (r = 0; r < b->ranks; r++)
    if (r != b->rank && get_state(&b->peers[r]) == RK_MPI_PEER_UP) work += batch_send(b, r) + moved_send(b, r);
  for (r = 0; r < b->ranks; r++) {
    rk_mpi_peer_state st = r == b->rank ? RK_MPI_PEER_SELF : get_state(&b->peers[r]);
    if (st == RK_MPI_PEER_UP)
      work += poll_peer(b, r);
    else if (closed && st == RK_MPI_PEER_CLOSED && b->peers[r].bye_got && !ctrl_all_in(&b->peers[r]))
      work += poll_closed(b, r);
  }
  work += unstage(b);
  *delivered = __atomic_load_n(&b->s_delivered, __ATOMIC_RELAXED) - before; /* (answers_retry delivers none) */
  work += answers_retry(b);
  return work;
}

/* A lane's pass (bridge_poll), under pass_lock: the conversation's part of the thread's pass —
 * take what the outbound rings hold into batches (as far as credits and max_inflight sends allow)
 * and send them, test the posted receives (one data and one control message per peer at most)
 * and deliver what came, retry staged messages and waiting error answers, return due credits.
 * Non-blocking: MPI_Isend / MPI_Test only, a full inbox is staged, nothing waits. Bounded: at most
 * `window` envelopes per route and max_inflight batches per peer are copied out, one batch
 * (batch_bytes) and one control message per peer are taken in. Left to the thread (its next pass,
 * within LANE_HOLD_NS): heartbeats, a silent peer's loss, a closed peer's routes, the closing
 * answers, the deadlock scan. Returns the work done (0: idle). */
static uint32_t lane_pass(rk_mpi_bridge *b, uint64_t t) {
  uint32_t work, r;
  uint64_t delivered;
  work = pass_traffic(b, 0, &delivered);
  stat_add(&b->s_lane_delivered, delivered);
  for (r = 0; r < b->ranks; r++) {
    peer *p = &b->peers[r];
    if (r != b->rank && get_state(p) == RK_MPI_PEER_UP && credits_due(b, p, work == 0, t))
      (void)ctrl_send(b, r, CTRL_CREDIT);
  }
  return work;
}

/* The transport's poll (remote.h): a CPU lane of the graph, idle between messages, runs one pass
 * if nobody else is running one and no other lane drives, and keeps driving while its conversation
 * is live (a pass with traffic, its own or the thread's, within twice the longest recent quiet
 * stretch between a lane's busy passes, LIVE_MIN_NS to LIVE_MAX_NS: the thread's own rule). It never
 * waits for the lock: a lane that finds it taken calls again (if it drives) or goes to wait. */
static int bridge_poll(void *self, rk_graph *g, const void *lane, int stop) {
  rk_mpi_bridge *b = (rk_mpi_bridge *)self;
  uintptr_t me = (uintptr_t)lane, d = __atomic_load_n(&b->driver, __ATOMIC_RELAXED); /* a hint */
  uint64_t t, live;
  uint32_t work;
  int keep;
  (void)g;
  if (lane == NULL) return 0;
  if (stop) { /* the lane leaves */
    drive_stop(b, me);
    return 0;
  }
  if (d != 0 && d != me && lane_driving(b, now_ns())) return 0; /* another lane drives */
  if (pthread_mutex_trylock(&b->pass_lock) != 0) return d == me; /* a pass runs: the driver polls on */
  if (b->lanes_off) {
    pthread_mutex_unlock(&b->pass_lock);
    drive_stop(b, me);
    return 0;
  }
  __atomic_store_n(&b->driver, me, __ATOMIC_RELAXED); /* a hint (field comment) */
  /* Read under the lock: a reading from before the trylock could predate the end of a pass with
   * traffic (the thread's: bridge_main sets lw_ns under this lock), leaving lw_ns later than it;
   * the differences below are signed all the same (review of lanedrive, finding 1: t - lw_ns
   * wrapped and a live conversation's lane stopped driving). */
  t = now_ns();
  work = lane_pass(b, t);
  stat_add(&b->s_lane_passes, 1);
  if (work) {
    int64_t gap = (int64_t)(t - b->lw_ns);
    if (gap >= 0 && gap < (int64_t)LIVE_MAX_NS && (uint64_t)gap > b->lw_gap) b->lw_gap = (uint64_t)gap;
    b->lw_gap -= b->lw_gap >> 4;
    b->lw_ns = t;
  }
  live = 2 * b->lw_gap;
  if (live < LIVE_MIN_NS) live = LIVE_MIN_NS;
  if (live > LIVE_MAX_NS) live = LIVE_MAX_NS;
  keep = (int64_t)(t - b->lw_ns) < (int64_t)live;
  if (keep)
    __atomic_store_n(&b->drive_ns, now_ns(), __ATOMIC_RELAXED); /* a hint (field comment) */
  pthread_mutex_unlock(&b->pass_lock);
  if (!keep) drive_stop(b, me); /* the conversation is over: the thread waits for the next one */
  return keep;
}

static void *bridge_main(void *arg) {
  rk_mpi_bridge *b = (rk_mpi_bridge *)arg;
  uint32_t idle = 0, r;
  uint64_t last_check = now_ns(), last_work = last_check, gap_max = 0, nap = NAP_MIN_NS;
  int lanes_fed = 0; /* the last busy pass delivered into a local inbox: its lane has work */
  pthread_mutex_lock(&b->pass_lock); /* a pass at a time (the field's comment): let go between passes */
  /* acquire: pairs with stop's release store */
  while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
    uint32_t work, traffic;
    uint64_t t, delivered;
    work = pass_traffic(b, 1, &delivered);
    if (__atomic_load_n(&b->closing, __ATOMIC_RELAXED)) closing_answer(b); /* (relaxed: the field's comment) */
    traffic = work; /* (the credits and heartbeats below are not the conversation's messages) */
    t = now_ns();
    for (r = 0; r < b->ranks; r++) {
      peer *p = &b->peers[r];
      if (r == b->rank || get_state(p) != RK_MPI_PEER_UP) continue;
      if (credits_due(b, p, idle > 0, t)) work += (uint32_t)ctrl_send(b, r, CTRL_CREDIT);
      /* signed: told_ns / heard_ns may be later than t (set by ctrl_send and poll_peer after it) */
      if ((int64_t)(t - p->told_ns) > b->o.heartbeat_ns) (void)ctrl_send(b, r, CTRL_HEARTBEAT);
      if ((int64_t)(t - p->heard_ns) > b->o.peer_timeout_ns) peer_down(b, r, RK_MPI_PEER_LOST);
    }
    deadlock_scan(b, t); /* cycles across ranks */
    /* a peer that said bye (take_data): close its routes here, on the rings' consumer thread */
    if (t - last_check > 1000000) {
      last_check = t;
      for (r = 0; r < b->ranks; r++) {
        uint32_t j;
        if (r == b->rank || get_state(&b->peers[r]) != RK_MPI_PEER_CLOSED) continue;
        if (b->peers[r].owed_n) { /* (its rings may have been closed by the graph's terminate) */
          peer_down(b, r, RK_MPI_PEER_CLOSED);
          continue;
        }
        for (j = 0; j < b->nout; j++)
          if (b->out[j].peer == r && !rk_ring_closed(b->out[j].ring, NULL)) {
            peer_down(b, r, RK_MPI_PEER_CLOSED);
            break;
          }
      }
    }
    if (traffic) b->lw_ns = t; /* a lane that goes idle now is in this conversation (bridge_poll) */
    if (work) {
      if (idle) { /* the first busy pass after a quiet stretch: how long the peer took */
        uint64_t gap = t - last_work;
        if (gap < LIVE_MAX_NS && gap > gap_max) gap_max = gap;
      }
      gap_max -= gap_max >> 4; /* forgets an old long gap over a few dozen busy passes */
      last_work = t;
      if (delivered)
        lanes_fed = 1;
      else if (traffic) /* (a pass that only returned credits leaves it) */
        lanes_fed = 0;
      idle = 0;
      nap = NAP_MIN_NS;
      pthread_mutex_unlock(&b->pass_lock); /* (a lane's pass may run between two of the thread's) */
      pthread_mutex_lock(&b->pass_lock);
      continue;
    }
    idle++;
    if (b->o.spin) {
      pthread_mutex_unlock(&b->pass_lock);
      pthread_mutex_lock(&b->pass_lock);
      continue;
    }
    /* A CPU lane drives (bridge_poll): back off, so as not to take the core from it (under mpirun's
     * binding it is this thread's core), waking every LANE_HOLD_NS for a full pass; its driver
     * stopping wakes it at once. */
    if (lane_driving(b, t)) {
      pthread_mutex_unlock(&b->pass_lock);
      drive_backoff(b);
      pthread_mutex_lock(&b->pass_lock);
      last_work = now_ns(); /* (the conversation the lane drove: live on from here) */
      continue;
    }
    /* Idle. While a conversation is live, poll: a peer's next message can only be seen by
     * polling MPI (its shared-memory transport wakes nobody), and a bridge that sleeps in a
     * conversation pays a wake-up per message (tens of microseconds on these VMs). Live: work
     * within the live window, twice the longest recent quiet stretch between two busy passes
     * (gap_max, which decays), LIVE_MIN_NS to LIVE_MAX_NS; so the bridge polls about as long as
     * its peers have been taking to answer, and a stretch longer than LIVE_MAX_NS ends the
     * conversation. After a pass that delivered into a local inbox every idle pass yields: the
     * lane that just got work shares this core (mpirun binds a rank to one core on 2 cores) and
     * runs at once; otherwise the first SPIN_PASSES idle passes poll without yielding (a stream's
     * next batch or ring slots come within them: fewer switches), the rest yield. (The library's
     * rule for a thread that can run on one CPU only, yield instead of spinning, src/queue/
     * ring_wait.c, does not apply here: after a send the bridge waits for its peer, which runs on
     * another CPU; yielding then only handed the core to its lane, itself yielding in its wait,
     * and the answer was seen a context switch late: measured, docs/mpi.md.) After the window, it
     * sleeps on the outbound rings' futexes (a local send wakes it at once) with a timeout of
     * NAP_MIN_NS doubling to NAP_MAX_NS, and NAP_IDLE_NS once quiet for IDLE_LONG_NS, when MPI is
     * polled again: a message that a peer sends to an idle rank waits that long at most, and a
     * long idle bridge wakes about 1000 times a second (rk-bench mpi's mpi.idle). */
    {
      uint64_t quiet = t - last_work, live = 2 * gap_max;
      if (live < LIVE_MIN_NS) live = LIVE_MIN_NS;
      if (live > LIVE_MAX_NS) live = LIVE_MAX_NS;
      if (quiet < live) {
        pthread_mutex_unlock(&b->pass_lock);
        if (lanes_fed || idle > SPIN_PASSES) sched_yield();
        pthread_mutex_lock(&b->pass_lock);
        continue;
      }
    }
    stat_add(&b->s_sleeps, 1);
    if (rings_wait(b, t - last_work < IDLE_LONG_NS ? nap : NAP_IDLE_NS)) stat_add(&b->s_woken, 1);
    if (nap < NAP_MAX_NS) nap = nap * 2 < NAP_MAX_NS ? nap * 2 : NAP_MAX_NS;
  }
  pthread_mutex_unlock(&b->pass_lock);
  return NULL;
}

/* ---------------------------------------- transport ---------------------------------------- */

static int wait_all(MPI_Request *reqs, int n, int64_t timeout_ns) {
  uint64_t end = now_ns() + (uint64_t)timeout_ns;
  for (;;) {
    int done = 0;
    if (MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) return RK_ESYS;
    if (done) return RK_OK;
    if (now_ns() > end) return RK_ETIMEDOUT;
    {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL);
    }
  }
}

static int bridge_start(void *self, rk_graph *g) {
  rk_mpi_bridge *b = (rk_mpi_bridge *)self;
  hello *mine;
  MPI_Request *reqs;
  uint32_t i, r, nreq = 0, max_slot = 0, nrem = 0, total = 0;
  int rc = RK_OK;
  rk_graph_node_info info;
  struct {
    uint32_t node, rank, local_id, remote_id, lanes, window;
  } rem[MAX_NODES];
  /* our hello lives as long as the bridge: MPI may own it until its sends complete, which a
   * handshake that timed out never sees (a send cannot be cancelled reliably) */
  b->start_tried = 1; /* from here on the peers may hear from this bridge, and it from them */
  if ((mine = b->hello_out) == NULL && (mine = b->hello_out = (hello *)calloc(1, sizeof *mine)) == NULL)
    return rk_transport_fail(g, RK_ENOMEM, "mpi bridge: out of memory");
  if ((reqs = (MPI_Request *)calloc(2u * b->ranks, sizeof *reqs)) == NULL)
    return rk_transport_fail(g, RK_ENOMEM, "mpi bridge: out of memory");
  memset(mine, 0, sizeof *mine);
  mine->rank = b->rank;
  mine->batch_bytes = b->o.batch_bytes;
  b->nids = 0;
  b->nout = 0;
  b->nin = 0;
  for (i = 0; i < rk_graph_nodes(g); i++) {
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (rk_graph_node(g, i, &info) != RK_OK) continue;
    if (info.payload_max + RK_ENVELOPE_SIZE > max_slot) max_slot = info.payload_max + RK_ENVELOPE_SIZE;
    if (info.remote) {
      rem[nrem].node = i;
      rem[nrem].rank = info.rank;
      rem[nrem++].local_id = info.kernel_id;
      continue;
    }
    b->in_base[i] = b->nin;
    b->in_lanes[i] = info.lanes;
    b->nin += info.lanes;
    hello_entry *e = &mine->e[mine->n++];
    snprintf(e->name, sizeof e->name, "%s", info.name ? info.name : "");
    e->kernel_id = info.kernel_id;
    e->lanes = info.lanes;
    /* the window this rank grants each route into the kernel: its inbox capacity, capped by our
     * rk_mpi_options.window (the sender caps it by its own too) */
    e->k2k_capacity = b->o.window && b->o.window < info.k2k_capacity ? b->o.window : info.k2k_capacity;
    e->payload_max = info.payload_max;
    b->ids[b->nids].id = info.kernel_id;
    b->ids[b->nids++].node = i;
  }
  if (REC_HEADER + 8 + max_slot > b->o.batch_bytes) {
    rc = rk_transport_fail(g, RK_EINVAL, "mpi bridge: batch_bytes %u cannot hold one %u-byte message", b->o.batch_bytes,
                           max_slot);
    goto out;
  }
  /* meet every peer: our kernels for theirs (every rank launches its graph) */
  for (r = 0; r < b->ranks; r++) {
    if (r == b->rank) continue;
    reqs[nreq] = reqs[nreq + 1] = MPI_REQUEST_NULL; /* receive at an even slot, send at the odd one after */
    nreq += 2;
    if (MPI_Irecv(&b->peers[r].h, (int)sizeof(hello), MPI_BYTE, (int)r, TAG_HELLO, b->comm, &reqs[nreq - 2]) !=
            MPI_SUCCESS ||
        MPI_Isend(mine, (int)sizeof(hello), MPI_BYTE, (int)r, TAG_HELLO, b->comm, &reqs[nreq - 1]) != MPI_SUCCESS) {
      rc = rk_transport_fail(g, RK_ESYS, "mpi bridge: MPI_Irecv/MPI_Isend of the handshake with rank %u failed", r);
      goto cancel;
    }
  }
  if ((rc = wait_all(reqs, (int)nreq, b->o.start_timeout_ns)) != RK_OK) {
    char who[256] = "";
    size_t off = 0;
    for (r = 0; r < b->ranks; r++)
      if (r != b->rank && b->peers[r].h.rank != r && off + 12 < sizeof who)
        off += (size_t)snprintf(who + off, sizeof who - off, "%s%u", off ? ", " : "", r);
    rc = rk_transport_fail(g, rc, "mpi bridge: %s waiting %lld ms for the other ranks' graphs (rk_graph_launch on "
                           "every rank of the communicator); not heard from rank(s) %s",
                           rc == RK_ETIMEDOUT ? "timed out" : "MPI failed", (long long)(b->o.start_timeout_ns / 1000000),
                           who[0] ? who : "?");
    goto cancel;
  }
  b->met = 1; /* every peer has our hello: each will say bye, and expects ours (bridge_stop) */
  /* every rank's receive buffers are batch_bytes long: a larger batch would be cut (MPI_ERR_TRUNCATE) */
  for (r = 0; r < b->ranks; r++)
    if (r != b->rank && b->peers[r].h.batch_bytes != b->o.batch_bytes) {
      rc = rk_transport_fail(g, RK_EINVAL, "mpi bridge: rank %u's bridge has batch_bytes %u, this rank's %u: every "
                             "rank must use the same rk_mpi_options.batch_bytes", r, b->peers[r].h.batch_bytes,
                             b->o.batch_bytes);
      goto out;
    }
  /* our remote nodes, by name on their ranks: their ids, lanes, inboxes and payload limits */
  for (i = 0; i < nrem; i++) {
    hello *h = &b->peers[rem[i].rank].h;
    uint32_t j, k;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    (void)rk_graph_node(g, rem[i].node, &info);
    for (j = 0; j < h->n && j < MAX_NODES; j++)
      if (strncmp(h->e[j].name, info.name, sizeof h->e[j].name) == 0) break;
    if (j == h->n || j == MAX_NODES) {
      rc = rk_transport_fail(g, RK_EINVAL, "mpi bridge: rank %u's graph has no kernel named \"%s\" (remote node %u)",
                             rem[i].rank, info.name, rem[i].node);
      goto out;
    }
    for (k = 0; k < i; k++)
      if (rem[k].rank == rem[i].rank && rem[k].remote_id == h->e[j].kernel_id) {
        rc = rk_transport_fail(g, RK_EINVAL, "mpi bridge: kernel \"%s\" of rank %u is added twice as a remote node",
                               info.name, rem[i].rank);
        goto out;
      }
    /* what the peer said of its kernel: a slot of it must fit a batch (every rank's batches are
     * batch_bytes, checked above, and the peer checked its slots against them), so a payload_max
     * beyond is a malformed hello (near 2^32 it would wrap the slot size computed from it) */
    if (h->e[j].payload_max > b->o.batch_bytes - REC_HEADER - 8u - RK_ENVELOPE_SIZE) {
      rc = rk_transport_fail(g, RK_EINVAL, "mpi bridge: rank %u's handshake is malformed: kernel \"%s\" has a payload "
                             "limit of %u bytes, more than a %u-byte batch can carry: the peer is refused",
                             rem[i].rank, info.name, h->e[j].payload_max, b->o.batch_bytes);
      goto out;
    }
    rem[i].remote_id = h->e[j].kernel_id;
    rem[i].lanes = h->e[j].lanes ? h->e[j].lanes : 1;
    /* credits: what one lane's remote inbox holds (rk_mpi_options.window caps it) */
    rem[i].window = h->e[j].k2k_capacity;
    if (b->o.window && b->o.window < rem[i].window) rem[i].window = b->o.window;
    if ((rc = rk_graph_remote_shape(g, rem[i].node, rem[i].lanes, h->e[j].payload_max)) != RK_OK) goto out;
    total += rem[i].lanes;
  }
  if (total && (b->out = (route_out *)calloc(total, sizeof *b->out)) == NULL) {
    rc = rk_transport_fail(g, RK_ENOMEM, "mpi bridge: out of memory");
    goto out;
  }
  for (i = 0; i < nrem; i++) {
    uint32_t l;
    for (l = 0; l < rem[i].lanes; l++) {
      route_out *o = &b->out[b->nout++];
      o->node = rem[i].node;
      o->lane = l;
      o->peer = rem[i].rank;
      o->local_id = rem[i].local_id;
      o->remote_id = rem[i].remote_id;
      o->window = rem[i].window;
      o->ring = rk_graph_remote_ring(g, rem[i].node, l);
      o->hring = rk_graph_remote_host_ring(g, rem[i].node, l);
    }
  }
  /* the routes into our kernels: each peer may have up to our inbox capacity outstanding per lane */
  for (r = 0; r < b->ranks; r++) {
    peer *p = &b->peers[r];
    if (r == b->rank) continue;
    if (b->nin && (p->in = (route_in *)calloc(b->nin, sizeof *p->in)) == NULL) {
      rc = rk_transport_fail(g, RK_ENOMEM, "mpi bridge: out of memory");
      goto out;
    }
    for (i = 0; i < b->nids; i++) {
      uint32_t l, node = b->ids[i].node;
      memset(&info, 0, sizeof info);
      info.size = sizeof info;
      (void)rk_graph_node(g, node, &info);
      for (l = 0; l < b->in_lanes[node]; l++)
        p->in[b->in_base[node] + l].window =
            b->o.window && b->o.window < info.k2k_capacity ? b->o.window : info.k2k_capacity;
    }
  }
  free(b->dl); /* (a launch that failed after this, and a second one) */
  b->dl = NULL;
  if (b->nin && (b->dl = (dl_lane *)calloc(b->nin, sizeof *b->dl)) == NULL) {
    rc = rk_transport_fail(g, RK_ENOMEM, "mpi bridge: out of memory");
    goto out;
  }
  for (r = 0; r < b->ranks; r++) {
    if (r == b->rank) continue;
    b->peers[r].heard_ns = b->peers[r].told_ns = now_ns();
    post_recvs(b, r);
  }
  __atomic_store_n(&b->stop, 0, __ATOMIC_RELAXED); /* before the thread exists */
  b->waitv_ok = 1;
  if (pthread_create(&b->thread, NULL, bridge_main, b) != 0) {
    rc = rk_transport_fail(g, RK_ESYS, "mpi bridge: cannot start its thread");
    goto out;
  }
  (void)pthread_setname_np(b->thread, "rk-mpi-bridge"); /* (ps, top, rk-bench mpi's idle cost) */
  b->thread_on = 1;
  b->started = 1;
  goto out;
cancel:
  /* receives (even slots): cancelled and completed, so their buffers (peers[].h) may go; sends
   * (odd slots): let go, the hello they read is kept (b->hello_out) and, if one never completed,
   * never freed */
  for (i = 0; i < nreq; i++)
    if (reqs[i] != MPI_REQUEST_NULL) {
      if (i % 2 == 0) {
        MPI_Cancel(&reqs[i]);
        MPI_Wait(&reqs[i], MPI_STATUS_IGNORE);
      } else {
        MPI_Request_free(&reqs[i]);
        b->hello_held = 1;
      }
    }
out:
  free(reqs);
  return rc;
}

static int bridge_flush(void *self, rk_graph *g, uint32_t node, int64_t timeout_ns) {
  rk_mpi_bridge *b = (rk_mpi_bridge *)self;
  uint64_t end = now_ns() + (uint64_t)(timeout_ns > 0 ? timeout_ns : 1000000000);
  uint32_t i, to = UINT32_MAX;
  for (i = 0; i < b->nout; i++)
    if (b->out[i].node == node) to = b->out[i].peer;
  if (to == UINT32_MAX || !b->thread_on) return RK_OK;
  for (;;) {
    rk_mpi_peer_state s = get_state(&b->peers[to]);
    uint64_t pending = 0, refused = 0, here = 0;
    for (i = 0; i < b->nout; i++) { /* every lane of the node */
      route_out *o = &b->out[i];
      if (o->node != node) continue;
      /* in this order: the ring's head (acquire), then sent_pub (acquire, pairs with drain_route's
       * release store made before the head moved), then credited (pairs with take_ctrl's release):
       * an envelope taken from the ring is counted in sent_pub, one counted in sent_pub and not yet
       * credited is pending; nothing is missed between the three reads */
      uint64_t held = rk_ring_count(o->ring) + (o->hring ? rk_ring_count(o->hring) : 0);
      uint64_t sent = __atomic_load_n(&o->sent_pub, __ATOMIC_ACQUIRE);
      uint64_t credited = __atomic_load_n(&o->credited, __ATOMIC_ACQUIRE);
      pending += held + (credited > sent ? 1 : sent - credited); /* ahead: sent moved meanwhile, look again */
      /* acquire: pairs with take_ctrl's release (stored before the credit that carried it) */
      refused += __atomic_load_n(&o->refused, __ATOMIC_ACQUIRE);
      /* acquire: pairs with owed_refuse's release (stored before the slot went back); read after
       * the ring's head, as sent_pub */
      here += __atomic_load_n(&o->refused_here, __ATOMIC_ACQUIRE);
    }
    if (pending == 0 && here)
      return rk_transport_fail(g, RK_ECLOSED, "mpi bridge: %llu envelopes for remote node %u (rank %u) refused: %llu "
                               "here, not sent (the table of requests waiting for an answer was full: answered "
                               "with RK_ENORESOURCE; rk_mpi_bridge_stats owed_refused), %llu by rank %u (its "
                               "rk_mpi_bridge_stats refused / clock_rejected)", (unsigned long long)(refused + here),
                               node, to, (unsigned long long)here, (unsigned long long)refused, to);
    if (pending == 0 && refused)
      return rk_transport_fail(g, RK_ECLOSED, "mpi bridge: rank %u refused %llu of the envelopes sent to remote node "
                               "%u (dead-lettered there; requests answered with the error): see its "
                               "rk_mpi_bridge_stats refused / clock_rejected", to, (unsigned long long)refused, node);
    if (pending == 0 && s != RK_MPI_PEER_LOST) return RK_OK;
    if (s != RK_MPI_PEER_UP) /* lost: what it held is dropped or unconfirmed (counted); closed early: dropped */
      return rk_transport_fail(g, RK_ECLOSED, "mpi bridge: the route to rank %u is broken: the rank is %s (see "
                               "rk_mpi_bridge_stats: dropped, unconfirmed)", to,
                               s == RK_MPI_PEER_LOST ? "lost" : "closed");
    /* The graph is being destroyed (bridge_closing: its terminate flushes each remote node): no wait
     * for credits, which a stalled peer may never return (before, 1 s per such node in every
     * destroy). RK_ECLOSED, the route's close: the destroy ignores the result, and what is not
     * confirmed is counted by the stop that follows (unconfirmed, dropped; requests answered).
     * Relaxed: the closing field's comment. */
    if (__atomic_load_n(&b->closing, __ATOMIC_RELAXED))
      return rk_transport_fail(g, RK_ECLOSED, "mpi bridge: route to rank %u: %llu envelopes not confirmed when the "
                               "graph is destroyed: not waited for (the stop counts them: rk_mpi_bridge_stats "
                               "unconfirmed, dropped)", to, (unsigned long long)pending);
    if (now_ns() > end)
      return rk_transport_fail(g, RK_ETIMEDOUT, "mpi bridge: route to rank %u: %llu envelopes not confirmed in time",
                               to, (unsigned long long)pending);
    {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL);
    }
  }
}

/* After the bridge's thread is gone: take what peer r still sends on this communicator, until its
 * bye (the data tag's last message: MPI's non-overtaking rule puts every batch it sent before it)
 * and as many control messages as its bye counts, so that none is left unreceived when the
 * communicator is freed (the header comment, "The last word"). Batches that come now are
 * discarded: this bridge is stopping (their sender counts them as sent and not confirmed).
 * Returns 1 when all came, 0 at `end` (or when MPI fails). */
static int drain_peer(rk_mpi_bridge *b, uint32_t r, uint64_t end) {
  peer *p = &b->peers[r];
  for (;;) {
    MPI_Status st;
    int done = 0, got = 0;
    if (ctrl_all_in(p)) return 1;
    if (!p->bye_got) {
      if (p->data_req == MPI_REQUEST_NULL &&
          MPI_Irecv(p->data_in, (int)b->o.batch_bytes, MPI_BYTE, (int)r, TAG_DATA, b->comm, &p->data_req) != MPI_SUCCESS)
        return 0;
      if (MPI_Test(&p->data_req, &done, &st) != MPI_SUCCESS) return 0;
      if (done) {
        int bytes = 0;
        uint32_t n = 0;
        MPI_Get_count(&st, MPI_BYTE, &bytes);
        p->data_req = MPI_REQUEST_NULL;
        if (bytes >= 8) memcpy(&n, p->data_in, 4);
        if (n == BYE_N) {
          p->bye_got = 1;
          memcpy(&p->ctrl_expect, p->data_in + 4, 4);
        }
        got = 1;
      }
    }
    done = 0;
    if (!ctrl_all_in(p)) {
      if (p->ctrl_req == MPI_REQUEST_NULL &&
          MPI_Irecv(p->ctrl_in, (int)CTRL_BYTES, MPI_BYTE, (int)r, TAG_CTRL, b->comm, &p->ctrl_req) != MPI_SUCCESS)
        return 0;
      if (MPI_Test(&p->ctrl_req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return 0;
      if (done) {
        p->ctrl_req = MPI_REQUEST_NULL;
        p->ctrl_got++;
        got = 1;
      }
    }
    if (!got) {
      struct timespec ts = {0, 50000};
      if (now_ns() > end) return 0;
      nanosleep(&ts, NULL);
    }
  }
}

/* Cancel a posted receive and wait for it to complete (cancelled, or a message that had matched
 * already: its transfer ends), so its buffer can be freed; a receive that does not complete within
 * 200 ms (a lost peer in the middle of a transfer) is let go and the bridge's buffers are kept. */
static void recv_cancel(rk_mpi_bridge *b, peer *p, MPI_Request *req) {
  uint64_t end = now_ns() + (get_state(p) == RK_MPI_PEER_LOST ? 0u : 200000000u);
  int done = 0;
  if (*req == MPI_REQUEST_NULL) return;
  MPI_Cancel(req);
  do MPI_Test(req, &done, MPI_STATUS_IGNORE);
  while (!done && now_ns() < end);
  if (!done) {
    MPI_Request_free(req);
    b->any_lost = 1;
  }
  *req = MPI_REQUEST_NULL;
}

/* A send of the bridge's at its stop: tested until it completes, for wait_ns at most; one that
 * does not (a lost peer) is let go (MPI_Request_free) and 0 returned: its buffer may still be
 * read by MPI, so the caller keeps it. */
static int send_finish(MPI_Request *req, uint64_t wait_ns) {
  uint64_t end = now_ns() + wait_ns;
  int done = 0;
  do MPI_Test(req, &done, MPI_STATUS_IGNORE);
  while (!done && now_ns() < end);
  if (!done) MPI_Request_free(req);
  return done;
}

/* rk_graph_destroy, before the kernels' terminate (remote.h): the bridge thread answers every
 * request still owed an answer from a peer with RK_ECLOSED at its next pass, and the ones forwarded
 * from now on as soon as they go (bridge_main), so the terminates do not wait for answers the stop
 * that follows would make up too late for them (review of issue15-owed, finding 7). What the
 * kernels send meanwhile still goes out. App thread. */
static void bridge_closing(void *self, rk_graph *g) {
  rk_mpi_bridge *b = (rk_mpi_bridge *)self;
  (void)g;
  if (!b->thread_on) return; /* (stop answers them) */
  __atomic_store_n(&b->closing, 1, __ATOMIC_RELAXED); /* a flag, nothing published with it (field comment) */
}

/* The bridge stops for good: its thread, then MPI's requests (on this thread: the bridge's own
 * thread is gone), then a bye to the peers still up. */
static void bridge_stop(void *self, rk_graph *g) {
  rk_mpi_bridge *b = (rk_mpi_bridge *)self;
  uint32_t r, i;
  uint64_t dropped = 0, unconfirmed = 0, drain_end;
  (void)g;
  if (b->stopped) {
    b->g = NULL;
    return;
  }
  b->stopped = 1;
  /* no lane runs a pass from now on (bridge_poll): the MPI calls below are this thread's alone */
  pthread_mutex_lock(&b->pass_lock);
  b->lanes_off = 1;
  pthread_mutex_unlock(&b->pass_lock);
  if (b->thread_on) {
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE); /* pairs with the thread's acquire */
    pthread_join(b->thread, NULL);
    b->thread_on = 0;
  }
  drain_end = now_ns() + (uint64_t)b->o.peer_timeout_ns;
  /* a launch that did not meet every peer: a peer may still send its hello (or more) later */
  if (b->start_tried && !b->met) b->keep_comm = 1;
  for (r = 0; r < b->ranks; r++) { /* first every bye, so that no peer waits on another's drain */
    peer *p = &b->peers[r];
    rk_mpi_peer_state st = get_state(p);
    if (r == b->rank) continue;
    if (b->met && st != RK_MPI_PEER_LOST) {
      /* the open batch goes out, then the bye on the same tag: the peer takes every batch before
       * it sees the bye (MPI does not overtake on one communicator and tag); a peer that said bye
       * first has ours already (the thread answered it), unless the thread stopped before */
      if (st == RK_MPI_PEER_UP && b->started) {
        (void)batch_send(b, r);
        /* the owed-answer notices queued for it before the bye (which counts them) */
        if (p->moved_n && p->moved_busy) {
          if (!send_finish(&p->moved_req, 200000000u)) b->any_lost = 1; /* (moved_out is MPI's: kept) */
          else p->moved_busy = 0;
        }
        if (!p->moved_busy) (void)moved_send(b, r);
        /* the credits it earned here and not yet returned (the thread may not have had its pass
         * since the last delivery): a peer that then flushes its route to this rank (its graph's
         * terminate) counts what was taken as confirmed, not as broken by this close (before, a
         * stop right after a delivery made the peer's rk_graph_terminate return RK_ECLOSED "route
         * ... closed" under load: mpi_owed_twice) */
        if (p->ctrl_busy) {
          if (!send_finish(&p->ctrl_req_out, 200000000u)) b->any_lost = 1; /* (ctrl_out is MPI's: kept) */
          else p->ctrl_busy = 0;
        }
        if (!p->ctrl_busy) (void)ctrl_send(b, r, CTRL_CREDIT);
      }
      bye_send(b, r);
    }
    if (b->started) { /* what the routes still hold: dropped; sent and not credited: unconfirmed */
      uint64_t d = 0, u = 0;
      settle_peer(b, r, &d, &u);
      dropped += d;
      unconfirmed += u;
    }
  }
  for (r = 0; r < b->ranks; r++) {
    peer *p = &b->peers[r];
    uint64_t wait_ns;
    if (r == b->rank) continue;
    /* the peer's last messages, before the communicator may go (drain_peer): a peer whose bridge
     * runs answers our bye at once, one that stops sends its own; a lost one never will */
    if (b->met && get_state(p) != RK_MPI_PEER_LOST && !drain_peer(b, r, drain_end)) {
      b->keep_comm = 1;
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: rank %u did not say bye within %lld ms of this bridge's stop "
                       "(its bridge's thread is blocked, or the rank is gone): this bridge's communicator is kept, "
                       "not freed, so that its late messages cannot reach a later communicator", r,
                       (long long)(b->o.peer_timeout_ns / 1000000));
    }
    /* receives: cancelled (supported for receives), then completed before their buffers go */
    recv_cancel(b, p, &p->data_req);
    recv_cancel(b, p, &p->ctrl_req);
    /* sends: finished, or let go (a lost peer): the bye is part of the bridge, kept with it */
    if (p->bye_req != MPI_REQUEST_NULL && !send_finish(&p->bye_req, 200000000u))
      b->any_lost = 1; /* the bridge is not freed under MPI */
    wait_ns = get_state(p) == RK_MPI_PEER_UP ? 200000000u : 0u;
    for (i = 0; i < b->o.max_inflight; i++)
      if (p->out[i].busy) {
        if (!send_finish(&p->out[i].req, wait_ns)) {
          lend_to_mpi(p->out[i].data); /* MPI still owns the buffer: kept */
          p->out[i].data = NULL;
        }
        p->out[i].busy = 0;
      }
    /* ctrl_out and probe_out are part of the bridge: the bridge is not freed under MPI */
    if (p->ctrl_busy && !send_finish(&p->ctrl_req_out, wait_ns)) b->any_lost = 1;
    p->ctrl_busy = 0;
    if (p->probe_busy && !send_finish(&p->probe_req, wait_ns)) b->any_lost = 1;
    p->probe_busy = 0;
    if (p->moved_busy && p->moved_req != MPI_REQUEST_NULL && !send_finish(&p->moved_req, wait_ns)) b->any_lost = 1;
    p->moved_busy = 0;
  }
  if (b->started) {
    /* nothing more will be received: the requests still owed an answer from a peer get the error
     * now (a kernel still running, the graph destroyed before its terminate, or the bridge before
     * the graph: its terminate must not wait for them) */
    uint64_t failed = owed_fail(b, UINT32_MAX), left = 0, staged_left = 0, staged_gone = 0,
             end = now_ns() + (uint64_t)b->o.peer_timeout_ns;
    answer *a;
    /* an origin whose inbox is full (its handler busy) takes them once it runs again: retried until
     * they are all in, or for peer_timeout_ns at most (its terminate would wait for them); so are
     * the messages staged for a full inbox (real answers among them: their entries are gone, the
     * origin's terminate waits for them too) */
    for (;;) {
      struct timespec nap = {0, 200000};
      (void)answers_retry(b);
      staged_left = unstage_stop(b, &staged_gone);
      if ((b->answers == NULL && staged_left == 0) || now_ns() >= end) break;
      nanosleep(&nap, NULL);
    }
    for (a = b->answers; a; a = a->next) left++;
    if (failed || left)
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: stopped with %llu requests of this rank's kernels waiting for "
                       "an answer from another rank: answered with RK_ECLOSED; %llu error answers found their origin's "
                       "inbox full for peer_timeout_ns and are dropped", (unsigned long long)failed, (unsigned long long)left);
    if (staged_gone)
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: stopped with %llu received envelopes staged for a full inbox "
                       "whose kernel then refused them (terminated): dropped, dead-lettered on it (refused)",
                       (unsigned long long)staged_gone);
    if (staged_left)
      rk_transport_log(b->g, RK_LOG_WARN, "mpi bridge: stopped with %llu received envelopes whose destination's inbox "
                       "stayed full for peer_timeout_ns: dropped (refused)", (unsigned long long)staged_left);
  }
  for (r = 0; r < b->ranks; r++) { /* staged still: dropped, counted as refused */
    peer *p = &b->peers[r];
    staged *s;
    if (r == b->rank || p->in == NULL) continue;
    for (i = 0; i < b->nin; i++)
      while ((s = p->in[i].head) != NULL) {
        p->in[i].head = s->next;
        free(s);
        stat_add(&b->s_refused, 1);
      }
    memset(p->in, 0, b->nin * sizeof *p->in);
  }
  while (b->answers) { /* error answers that never found room (their refusals are counted) */
    answer *a = b->answers;
    b->answers = a->next;
    free(a);
  }
  b->answers_tail = &b->answers;
  if (b->started) /* (the format is the same at both levels: tests read it) */
    rk_transport_log(b->g, dropped || unconfirmed ? RK_LOG_WARN : RK_LOG_INFO,
                     "mpi bridge: stopped: %llu envelopes sent, %llu accepted and never sent (dropped), %llu sent "
                     "and not confirmed by their rank (unconfirmed)%s",
                     (unsigned long long)__atomic_load_n(&b->s_sent, __ATOMIC_RELAXED), (unsigned long long)dropped,
                     (unsigned long long)unconfirmed,
                     dropped || unconfirmed ? ": terminate the graph before the bridge stops to deliver them" : "");
  b->g = NULL; /* the graph calls nothing more and may be freed next (remote.h) */
}

/* ---------------------------------------- public API --------------------------------------- */

int rk_mpi_bridge_create(rk_graph *g, MPI_Comm comm, const rk_mpi_options *opts, rk_mpi_bridge **out) {
  rk_mpi_bridge *b;
  int inited = 0, finalized = 0, level = 0, rank = 0, size = 0, rc;
  uint32_t r, i;
  MPI_Comm dup = MPI_COMM_NULL;
  if (out) *out = NULL;
  if (g == NULL) return RK_EINVAL;
  if (out == NULL || comm == MPI_COMM_NULL) return rk_transport_fail(g, RK_EINVAL, "rk_mpi_bridge_create: %s",
                                                                     out ? "MPI_COMM_NULL" : "NULL argument");
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (!inited || finalized)
    return rk_transport_fail(g, RK_ENOTSUP, "rk_mpi_bridge_create: MPI is %s", finalized ? "finalized" : "not initialised");
  MPI_Query_thread(&level);
  if (level != MPI_THREAD_MULTIPLE)
    return rk_transport_fail(g, RK_ENOTSUP, "rk_mpi_bridge_create: MPI was initialised without MPI_THREAD_MULTIPLE "
                             "(the bridge's thread calls MPI while the application's threads may): use "
                             "MPI_Init_thread(..., MPI_THREAD_MULTIPLE, &provided)");
  /* the collective MPI_Comm_dup first: a rank that then fails here (bad options, no memory) does
   * not leave the others waiting in it */
  if (MPI_Comm_dup(comm, &dup) != MPI_SUCCESS)
    return rk_transport_fail(g, RK_ESYS, "rk_mpi_bridge_create: MPI_Comm_dup failed");
  if (opts && (opts->size < 2 * sizeof(uint32_t) || opts->size > sizeof(rk_mpi_options))) {
    MPI_Comm_free(&dup);
    return rk_transport_fail(g, RK_EINVAL, "rk_mpi_bridge_create: options size %u", opts->size);
  }
  if ((b = (rk_mpi_bridge *)calloc(1, sizeof *b)) == NULL) {
    MPI_Comm_free(&dup);
    return rk_transport_fail(g, RK_ENOMEM, "rk_mpi_bridge_create: out of memory");
  }
  b->comm = dup;
  b->comm_ok = 1;
  pthread_mutex_init(&b->pass_lock, NULL); /* (default attributes: nothing to destroy on the error paths) */
  b->answers_tail = &b->answers;
  b->owed_max = OWED_MAX;
  b->o = (rk_mpi_options)RK_MPI_OPTIONS_INIT;
  if (opts) memcpy(&b->o, opts, opts->size);
  b->o.size = sizeof b->o;
  if (b->o.batch_bytes == 0) b->o.batch_bytes = 32768;
  if (b->o.max_inflight == 0) b->o.max_inflight = 4;
  if (b->o.heartbeat_ns <= 0) b->o.heartbeat_ns = 50000000;
  if (b->o.peer_timeout_ns <= 0) b->o.peer_timeout_ns = 2000000000;
  if (b->o.start_timeout_ns <= 0) b->o.start_timeout_ns = 30000000000ll;
  if (b->o.batch_bytes < 256 || b->o.batch_bytes > (64u << 20) || b->o.max_inflight > 64 ||
      b->o.peer_timeout_ns <= b->o.heartbeat_ns || b->o.lane_drive < -1 || b->o.lane_drive > 1) {
    MPI_Comm_free(&b->comm);
    free(b);
    return rk_transport_fail(g, RK_EINVAL, "rk_mpi_bridge_create: batch_bytes in [256, 64 MiB], max_inflight <= 64, "
                             "peer_timeout_ns > heartbeat_ns and lane_drive -1, 0 or 1");
  }
  if (b->o.lane_drive == 0) { /* A/B runs without lane-driven progress: RK_MPI_LANE_DRIVE=0 (rk_mpi_options.lane_drive; 1: on whatever it says) */
    const char *env = getenv("RK_MPI_LANE_DRIVE");
    if (env && env[0] == '0' && env[1] == '\0') b->o.lane_drive = -1;
  }
  MPI_Comm_set_errhandler(b->comm, MPI_ERRORS_RETURN); /* a failed call is an error code, not an abort */
  MPI_Comm_rank(b->comm, &rank);
  MPI_Comm_size(b->comm, &size);
  b->rank = (uint32_t)rank;
  b->ranks = (uint32_t)size;
  if (b->ranks > MAX_RANKS) { /* every rank sees the same size: all refuse */
    MPI_Comm_free(&b->comm);
    free(b);
    return rk_transport_fail(g, RK_ENOTSUP, "rk_mpi_bridge_create: %u ranks: at most %u (node ids, rk_mpi_node_id)",
                             (uint32_t)size, MAX_RANKS);
  }
  b->g = g;
  b->rt = rk_graph_runtime(g);
  if ((b->peers = (peer *)calloc(b->ranks, sizeof *b->peers)) == NULL) goto nomem;
  for (r = 0; r < b->ranks; r++) {
    peer *p = &b->peers[r];
    p->state = r == b->rank ? RK_MPI_PEER_SELF : RK_MPI_PEER_UP;
    p->data_req = p->ctrl_req = p->probe_req = p->bye_req = p->moved_req = MPI_REQUEST_NULL;
    p->batch_buf = -1;
    p->h.rank = UINT32_MAX;
    if (r == b->rank) continue;
    if ((p->data_in = (uint8_t *)malloc(b->o.batch_bytes)) == NULL || (p->ctrl_in = (uint8_t *)malloc(CTRL_BYTES)) == NULL ||
        (p->ctrl_out = (uint8_t *)malloc(CTRL_BYTES)) == NULL ||
        (p->moved_q = (uint8_t *)malloc(MOVED_MAX * MOVED_REC)) == NULL ||
        (p->moved_out = (uint8_t *)malloc(MOVED_HEAD + MOVED_MAX * MOVED_REC)) == NULL ||
        (p->out = (send_buf *)calloc(b->o.max_inflight, sizeof *p->out)) == NULL)
      goto nomem;
    for (i = 0; i < b->o.max_inflight; i++)
      if ((p->out[i].data = (uint8_t *)malloc(b->o.batch_bytes)) == NULL) goto nomem;
  }
  b->tp.size = sizeof b->tp;
  b->tp.name = "mpi";
  b->tp.rank = b->rank;
  b->tp.ranks = b->ranks;
  b->tp.start = bridge_start;
  b->tp.flush = bridge_flush;
  b->tp.stop = bridge_stop;
  b->tp.closing = bridge_closing;
  b->tp.poll = b->o.lane_drive < 0 ? NULL : bridge_poll; /* lane-driven progress unless turned off */
  if ((rc = rk_graph_set_transport(g, &b->tp, b)) != RK_OK) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", rk_runtime_last_error(b->rt));
    b->g = NULL;
    rk_mpi_bridge_destroy(b);
    return rk_transport_fail(g, rc, "rk_mpi_bridge_create: %s", msg);
  }
  *out = b;
  return RK_OK;
nomem:
  b->g = NULL;
  rk_mpi_bridge_destroy(b);
  return rk_transport_fail(g, RK_ENOMEM, "rk_mpi_bridge_create: out of memory");
}

void rk_mpi_bridge_destroy(rk_mpi_bridge *b) {
  uint32_t r, i;
  int finalized = 0;
  if (b == NULL) return;
  if (b->g) { /* still attached: stop, close the remote nodes, detach */
    rk_graph *g = b->g;
    bridge_stop(b, g);
    for (i = 0; i < b->nout; i++) { /* (stop counted and emptied them: anything still here is dropped) */
      int held = b->out[i].lane == 0 ? rk_graph_remote_close(g, b->out[i].node) : 0; /* once per node */
      if (held > 0) stat_add(&b->s_dropped, (uint64_t)held);
    }
    (void)rk_graph_set_transport(g, NULL, NULL);
  }
  MPI_Finalized(&finalized);
  /* a lost peer never answers; a peer that did not say bye may still send (bridge_stop): a message
   * that reached a freed communicator would be handed to the next one with its context id */
  if (b->comm_ok && !finalized && !b->any_lost && !b->keep_comm) MPI_Comm_free(&b->comm);
  if (b->any_lost) { /* buffers MPI may still own for the lost peer: the bridge is kept, whole */
    lend_to_mpi(b);
    return;
  }
  if (!b->hello_held) /* else a handshake send that never completed may read it: kept */
    free(b->hello_out);
  else
    lend_to_mpi(b->hello_out);
  while (b->answers) {
    answer *a = b->answers;
    b->answers = a->next;
    free(a);
  }
  if (b->peers)
    for (r = 0; r < b->ranks; r++) {
      peer *p = &b->peers[r];
      free(p->data_in);
      free(p->ctrl_in);
      free(p->ctrl_out);
      free(p->moved_q);
      free(p->moved_out);
      free(p->in);
      if (p->out)
        for (i = 0; i < b->o.max_inflight; i++) free(p->out[i].data);
      free(p->out);
    }
  free(b->peers);
  free(b->out);
  free(b->dl);
  free(b->owed_tab);
  pthread_mutex_destroy(&b->pass_lock);
  free(b);
}

/* Tests only (tests/test_mpi_dev.c dev_probe_refused, which compiles this file in: hand-made
 * control messages to a peer's bridge); not in the header, not exported (hidden visibility). */
MPI_Comm rk__mpi_bridge_comm(rk_mpi_bridge *b);
MPI_Comm rk__mpi_bridge_comm(rk_mpi_bridge *b) { return b ? b->comm : MPI_COMM_NULL; }
/* Tests only (test_mpi_dev.c dev_owed_bound): a smaller bound of the owed table; before the launch
 * (the bridge thread reads it: its creation orders this write before). */
void rk__mpi_bridge_owed_max(rk_mpi_bridge *b, uint32_t n);
void rk__mpi_bridge_owed_max(rk_mpi_bridge *b, uint32_t n) {
  if (b && n) b->owed_max = n;
}

int rk_mpi_bridge_stats(rk_mpi_bridge *b, rk_mpi_stats *out) {
  rk_mpi_stats s;
  uint32_t size;
  /* callers built before sleeps / woken were added pass the shorter size: they get what it holds */
  if (b == NULL || out == NULL || out->size < offsetof(rk_mpi_stats, sleeps)) return RK_EINVAL;
  size = out->size < sizeof s ? out->size : (uint32_t)sizeof s;
  memset(&s, 0, sizeof s);
  s.size = size;
#define RK__RD(f) __atomic_load_n(&b->s_##f, __ATOMIC_RELAXED) /* statistics */
  s.peers_lost = RK__RD(peers_lost);
  s.sent = RK__RD(sent);
  s.received = RK__RD(received);
  s.delivered = RK__RD(delivered);
  s.batches_sent = RK__RD(batches_sent);
  s.batches_received = RK__RD(batches_received);
  s.credit_stalls = RK__RD(credit_stalls);
  s.staged = RK__RD(staged);
  s.clock_rejected = RK__RD(clock_rejected);
  s.refused = RK__RD(refused);
  s.dropped = RK__RD(dropped);
  s.unconfirmed = RK__RD(unconfirmed);
  s.heartbeats = RK__RD(heartbeats);
  s.sleeps = RK__RD(sleeps);
  s.woken = RK__RD(woken);
  s.probes = RK__RD(probes);
  s.probes_refused = RK__RD(probes_refused);
  s.deadlocks = RK__RD(deadlocks);
  s.answers_failed = RK__RD(answers_failed);
  s.answers_late = RK__RD(answers_late);
  s.moves_sent = RK__RD(moves_sent);
  s.moves_taken = RK__RD(moves_taken);
  s.moves_refused = RK__RD(moves_refused);
  s.owed_refused = RK__RD(owed_refused);
  s.lane_passes = RK__RD(lane_passes);
  s.lane_delivered = RK__RD(lane_delivered);
#undef RK__RD
  memcpy(out, &s, size);
  return RK_OK;
}

rk_mpi_peer_state rk_mpi_bridge_peer(rk_mpi_bridge *b, uint32_t rank) {
  if (b == NULL || rank >= b->ranks) return RK_MPI_PEER_LOST;
  return get_state(&b->peers[rank]);
}

uint32_t rk_mpi_bridge_rank(const rk_mpi_bridge *b) { return b ? b->rank : 0; }
uint32_t rk_mpi_bridge_ranks(const rk_mpi_bridge *b) { return b ? b->ranks : 0; }
