/** @file ringkernel/mpi.h — K2K routes between processes over MPI (librk_mpi; docs/mpi.md).
 *
 * A graph's remote node (rk_graph_add_remote: a kernel of another MPI rank, named by rank and
 * kernel name) is reached through a bridge: on each rank a thread of its own moves envelopes
 * between the local K2K rings and MPI with non-blocking sends and receives, a batch per MPI
 * message, a bounded number in flight. Credits carry the backpressure: a remote kernel grants
 * each sending rank at most its K2K inbox capacity of messages not yet in that inbox, so a full
 * remote inbox fills the sender's bounded outbound ring and rk_send_to returns RK_EAGAIN, as it
 * does locally. Stamps travel unchanged and are merged (receive rule) by the receiving runtime,
 * which refuses those beyond its maximum offset; envelope node ids become rank-qualified
 * (rk_mpi_node_id). A peer that stops answering (no message, not even a heartbeat, for
 * peer_timeout_ns) is lost: the routes to it close (sends get RK_ECLOSED), its state and the
 * counters say so, and nothing waits for it: requests passed on to it whose answer had not come
 * are answered by the bridge with an RK_ECLOSED error (answers_failed).
 *
 *     MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
 *     rk_graph_create(rt, &g);
 *     rk_mpi_bridge_create(g, MPI_COMM_WORLD, NULL, &b); // collective over the communicator
 *     rk_graph_add(g, &parse, NULL, 0, &p);
 *     rk_graph_add_remote(g, 1, "enrich", 0, &e);          // kernel "enrich" of rank 1
 *     rk_graph_connect(g, p, e, NULL);
 *     rk_graph_launch(g);                                  // every rank: meets its peers
 *     ...
 *     rk_graph_destroy(g);
 *     rk_mpi_bridge_destroy(b);
 *
 * Link with ringkernel::rk_mpi (librk_mpi.so, built when CMake finds MPI). */
#ifndef RINGKERNEL_MPI_H
#define RINGKERNEL_MPI_H

#include <mpi.h>

#include "ringkernel/remote.h"

RK_EXTERN_C_BEGIN

/** A bridge between one graph and the other ranks of a communicator (opaque). */
typedef struct rk_mpi_bridge rk_mpi_bridge;

/** Bridge options. Start from RK_MPI_OPTIONS_INIT; fields may be added at the end. */
typedef struct rk_mpi_options {
  uint32_t size;            /**< sizeof(rk_mpi_options) */
  uint32_t batch_bytes;     /**< bytes of one MPI message of envelopes, at most (0: 32 KiB; at least
                             *   one slot of the largest kernel); every rank must use the same value
                             *   (checked at launch: RK_EINVAL) */
  uint32_t max_inflight;    /**< MPI sends of batches in flight per peer (0: 4) */
  uint32_t window;          /**< credits per route, at most, both ways: what this rank grants the
                             *   routes into its kernels and takes on its routes to remote ones (0:
                             *   the destination's K2K inbox capacity) */
  int64_t heartbeat_ns;     /**< a peer told nothing for this long gets a heartbeat (0: 50 ms) */
  int64_t peer_timeout_ns;  /**< a peer silent this long is lost (0: 2 s) */
  int64_t start_timeout_ns; /**< rk_graph_launch waits this long for every peer (0: 30 s) */
  /** 1: the bridge thread polls MPI without sleeping or yielding (it keeps a core busy: only
   *  for a bridge with a core of its own). 0 (default): while a conversation is live it polls,
   *  yielding the core between polls (at once after it delivered to a local lane, after 64 polls
   *  otherwise); then it sleeps on its outbound rings (a local send wakes it at once) with
   *  timeouts of 20 us growing to 200 us, and 1 ms once idle for 10 ms, to poll MPI. */
  int spin;
  /** Lane-driven progress (docs/mpi.md, "Lane-driven progress"). 0 (default): an idle CPU lane of
   *  the graph runs the bridge's passes itself while its conversation is live (between messages,
   *  never in a handler), and the bridge thread backs off meanwhile, unless the environment
   *  variable RK_MPI_LANE_DRIVE is 0 (then as -1: for A/B runs); 1: on, whatever the environment
   *  says; -1: off, only the bridge thread does (the behaviour before it). Other values:
   *  RK_EINVAL. */
  int lane_drive;
} rk_mpi_options;

/** The default options (as a macro). */
#define RK_MPI_OPTIONS_INIT { sizeof(rk_mpi_options), 0, 0, 0, 0, 0, 0, 0, 0 }

/** A peer's state (rk_mpi_bridge_peer). */
typedef enum rk_mpi_peer_state {
  RK_MPI_PEER_UP = 0,     /**< answering */
  RK_MPI_PEER_CLOSED = 1, /**< its bridge stopped (rk_graph_destroy / rk_mpi_bridge_destroy there) */
  RK_MPI_PEER_LOST = 2,   /**< silent for peer_timeout_ns: dead or unreachable */
  RK_MPI_PEER_SELF = 3    /**< this process */
} rk_mpi_peer_state;

/** The bridge's counters (statistics: each read on its own, relaxed). */
typedef struct rk_mpi_stats {
  uint32_t size;              /**< sizeof(rk_mpi_stats), set by the caller */
  uint32_t peers_lost;        /**< peers lost (timeout) */
  uint64_t sent;              /**< envelopes sent to peers */
  uint64_t received;          /**< envelopes received from peers */
  uint64_t delivered;         /**< received envelopes put in a local K2K inbox */
  uint64_t batches_sent;      /**< MPI messages of envelopes sent */
  uint64_t batches_received;  /**< MPI messages of envelopes received */
  uint64_t credit_stalls;     /**< times a route had messages and no credit */
  uint64_t staged;            /**< received envelopes that waited for room in a full local inbox */
  uint64_t clock_rejected;    /**< received stamps beyond the maximum offset: refused (dead-lettered,
                               *   requests answered with RK_ECLOCK); not in refused */
  uint64_t refused;           /**< received envelopes for a closed or unknown kernel, too large, or
                               *   malformed (dead-lettered where the kernel exists; requests
                               *   answered with the error) */
  uint64_t dropped;           /**< accepted sends never sent: their peer was lost or closed, or
                               *   the bridge stopped, first */
  uint64_t unconfirmed;       /**< sent and not credited when the peer was lost or closed or the
                               *   bridge stopped (maybe delivered) */
  uint64_t heartbeats;        /**< heartbeats sent */
  uint64_t sleeps;            /**< times the idle bridge thread went to sleep (past its live window) */
  uint64_t woken;             /**< of sleeps: those a local send ended early (the rest timed out to
                               *   poll MPI) */
  uint64_t probes;            /**< deadlock probes sent (started here or passed on): cycles of K2K
                               *   routes across ranks (docs/mpi.md, "Cycles across ranks") */
  uint64_t probes_refused;    /**< malformed probes received: refused, never trusted */
  uint64_t deadlocks;         /**< kernels of this rank faulted with RK_EDEADLK for a cycle across
                               *   ranks */
  uint64_t answers_failed;    /**< requests of this rank's kernels (rk_forward of a host request)
                               *   sent to a peer that was then lost or closed, or still in flight
                               *   when the bridge stopped, whose answer had not come: answered here
                               *   with an RK_ECLOSED error, so the origin's caller gets it and its
                               *   terminate does not wait for an answer that cannot come */
  uint64_t answers_late;      /**< answers (or the requests themselves, back on this rank) that
                               *   arrived after answers_failed had answered their request: dropped,
                               *   dead-lettered on the origin kernel (never a second answer) */
  uint64_t moves_sent;        /**< notices sent to an origin's rank that a request of its kernels,
                               *   passed on here, went on to another rank (docs/mpi.md, "Answers
                               *   owed across a lost peer": the entry follows the request) */
  uint64_t moves_taken;       /**< such notices that moved an entry of this rank's owed table to the
                               *   rank the request went on to */
  uint64_t moves_refused;     /**< malformed notices (version, size, ranks, kernel ids): refused */
  uint64_t owed_refused;      /**< requests of this rank's kernels not sent because the owed table
                               *   was full (65536 waiting for an answer from other ranks, or, in a
                               *   job of more than two ranks, half of that from the one peer):
                               *   answered at once with an RK_ENORESOURCE error, dead-lettered on
                               *   their origin (docs/mpi.md, "Answers owed across a lost peer") */
  uint64_t lane_passes;       /**< passes of the bridge run by idle CPU lanes (docs/mpi.md,
                               *   "Lane-driven progress"; 0 with lane_drive -1) */
  uint64_t lane_delivered;    /**< of delivered: envelopes those passes put in local inboxes */
} rk_mpi_stats;

/** A bridge for graph g over the ranks of comm (which the bridge duplicates; every rank of comm
 *  calls this, as MPI_Comm_dup is collective). Call it right after rk_graph_create, before the
 *  graph's nodes are added; every rank then adds its kernels, its remote nodes and routes, and
 *  launches its graph: rk_graph_launch waits (start_timeout_ns at most) until every rank of comm
 *  has launched its own and learns the remote kernels by name. MPI must be initialised with
 *  MPI_THREAD_MULTIPLE (the bridge thread calls MPI while the application may). opts may be NULL.
 *  Errors: RK_EINVAL (NULL, bad options, MPI_COMM_NULL), RK_ENOTSUP (MPI not initialised or not
 *  MPI_THREAD_MULTIPLE, more than 4095 ranks), RK_ESTATE (the graph is launched, has remote nodes or a transport),
 *  RK_ENOMEM, RK_ESYS (an MPI call failed); the detail in rk_runtime_last_error. */
RK_API int rk_mpi_bridge_create(rk_graph *g, MPI_Comm comm, const rk_mpi_options *opts, rk_mpi_bridge **out);
/** Stop and free the bridge (NULL accepted): after rk_graph_destroy, or before it (the bridge
 *  then detaches itself: the graph's remote nodes are closed to senders). Before MPI_Finalize.
 *  What was not delivered by then is counted (dropped, unconfirmed) and logged in one line; the
 *  counters go with the bridge. The stop (here, or in rk_graph_destroy) says bye to every peer
 *  and takes each peer's last messages, its bye included (a peer whose bridge runs answers at
 *  once), before the duplicated communicator is freed: peer_timeout_ns at most, after which the
 *  communicator is kept, not freed (docs/mpi.md, "The last word"). Buffers MPI may still own (a
 *  lost peer, a send that never completed) are kept for the process's life. */
RK_API void rk_mpi_bridge_destroy(rk_mpi_bridge *b);
/** The counters. out->size may be that of an older rk_mpi_stats (without sleeps and woken, or
 *  without the probe counters, or without answers_failed and answers_late, or without the moves
 *  counters and owed_refused, or without lane_passes and lane_delivered): only that much is filled. Errors: RK_EINVAL (NULL, out->size too small). Any thread. */
RK_API int rk_mpi_bridge_stats(rk_mpi_bridge *b, rk_mpi_stats *out);
/** The state of rank `rank` as this bridge sees it (RK_MPI_PEER_LOST for an unknown rank). Any
 *  thread. */
RK_API rk_mpi_peer_state rk_mpi_bridge_peer(rk_mpi_bridge *b, uint32_t rank);
/** This process's rank in the bridge's communicator, and how many ranks it has. */
RK_API uint32_t rk_mpi_bridge_rank(const rk_mpi_bridge *b);
RK_API uint32_t rk_mpi_bridge_ranks(const rk_mpi_bridge *b); /**< ranks in the communicator */
/** The node id that envelopes from kernel kernel_id of rank `rank` carry once they crossed a
 *  bridge: rank + 1 in the top 12 bits, the kernel id below, so (stamp, node) orders every
 *  message of the job totally and without ties. 0 for a rank of 4095 or more (not representable). */
RK_API uint32_t rk_mpi_node_id(uint32_t rank, uint32_t kernel_id);

RK_EXTERN_C_END

#endif /* RINGKERNEL_MPI_H */
