/** @file ringkernel/remote.h — the seam between a graph and a transport that carries K2K messages
 * to kernels of other processes (the MPI bridge of librk_mpi, ringkernel/mpi.h; docs/mpi.md).
 *
 * Applications do not use this header: they call rk_graph_add_remote and a bridge's own API. A
 * transport attaches itself to a graph (rk_graph_set_transport) before the graph's nodes are
 * added. Each remote node of the graph (rk_graph_add_remote) is, in this process, one bounded MPSC
 * ring per lane of the remote kernel (its "outbound rings") that the handlers' rk_send_to /
 * rk_forward / K2K replies fill exactly as they fill a local kernel's K2K inboxes, the lane picked
 * the same way (a key, the sender's lane, the origin's lane for a reply); the transport drains them
 * (rk_ring_peek_n / rk_ring_slot / rk_ring_release_n: it is their only consumer) and delivers what
 * it receives from its peers into the local kernels' K2K inboxes with rk_graph_deliver. Every function here may be called
 * from the transport's own thread; none may be called from a handler. */
#ifndef RINGKERNEL_REMOTE_H
#define RINGKERNEL_REMOTE_H

#include "ringkernel/graph.h"
#include "ringkernel/ring.h"

RK_EXTERN_C_BEGIN

#if !defined(__CUDACC_RTC__)
/** What a graph calls on its transport. Each function receives the `self` given to
 *  rk_graph_set_transport. */
typedef struct rk_transport {
  uint32_t size;    /**< sizeof(rk_transport) */
  const char *name; /**< "mpi": said in error messages */
  uint32_t rank;  /**< this process's rank (rk_graph_add_remote refuses it) */
  uint32_t ranks; /**< how many ranks there are (rk_graph_add_remote refuses those beyond) */
  /** rk_graph_launch, once every local kernel is launched (inactive) and every remote node's
   *  outbound ring exists, before any kernel is activated: meet the peers, learn the remote
   *  kernels (rk_graph_remote_shape) and start moving messages. An error fails the launch (the
   *  message in rk_runtime_last_error via rk_transport_fail); stop is then still called. */
  int (*start)(void *self, rk_graph *g);
  /** rk_graph_terminate reaches remote node `node` (every local kernel of the graph has
   *  terminated: remote nodes come last in its order): deliver what its outbound ring holds and what is in flight to it, or give up at
   *  timeout_ns (RK_ETIMEDOUT) or when the peer is lost (RK_ECLOSED). The graph closes the ring
   *  afterwards. */
  int (*flush)(void *self, rk_graph *g, uint32_t node, int64_t timeout_ns);
  /** rk_graph_destroy (before any kernel or ring is freed), or a failed launch: stop using g for
   *  good. Never called twice for one attachment. */
  void (*stop)(void *self, rk_graph *g);
  /** Optional (NULL, or a transport whose size ends before it): rk_graph_destroy of a launched
   *  graph, before it terminates the graph's kernels (the transport still runs, stop comes after):
   *  nothing the transport receives from now on can reach a kernel in time, so it answers at once
   *  the requests of local kernels whose answers it awaits from other processes (a kernel's
   *  terminate waits for what it is owed), and keeps moving what the kernels still send. */
  void (*closing)(void *self, rk_graph *g);
  /** Optional (NULL, or a transport whose size ends before it): progress driven by an idle CPU
   *  lane (docs/mpi.md, "Lane-driven progress"). A CPU lane of the launched graph whose inboxes are
   *  empty calls it from its worker loop, between messages (the runtime's thread, never a handler;
   *  device lanes never call it), and polls its inbox between calls: the transport runs one bounded,
   *  non-blocking pass of its own work (take what the outbound rings hold, send, receive, deliver
   *  into the local inboxes: the caller's own among them) if no other thread is running one, and
   *  returns 1 (call again while the inbox is still empty) or 0 (stop calling: go wait as usual;
   *  the transport's own thread has the work). `lane` identifies the caller (an opaque token);
   *  stop 1: the lane stops driving for now (it goes to sleep: its handler waits for room in a full
   *  K2K destination, between two retries; or it leaves), the transport takes its work back; the
   *  return value is ignored, and the lane may call again later (stop 0) when idle again. Nothing
   *  may depend on a lane calling: the transport keeps its own thread for progress, liveness and
   *  its timeouts. Called until the graph's destroy or rk_graph_set_transport(g, NULL) begins; both
   *  wait for a call in progress to return before they go on. The graph's destroy closes this gate
   *  before it calls stop; a transport that detaches itself stops first (see
   *  rk_graph_set_transport), so lanes may call it after its own stop, until the detach returns:
   *  from its stop on, it must run nothing there and return 0. */
  int (*poll)(void *self, rk_graph *g, const void *lane, int stop);
} rk_transport;

/** Attach a transport to a graph that has no remote node yet and is not launched (t NULL: detach;
 *  the graph calls nothing of the old one any more, stop included, so a transport detaching
 *  itself stops first). t must outlive the attachment. Errors: RK_EINVAL (g NULL, t->size 0),
 *  RK_ESTATE (launched, or remote nodes added already; or a transport attached and t not NULL). */
RK_API int rk_graph_set_transport(rk_graph *g, const rk_transport *t, void *self);

/** What a node of the graph is (rk_graph_node). */
typedef struct rk_graph_node_info {
  uint32_t size;         /**< sizeof(rk_graph_node_info), set by the caller */
  int remote;            /**< 1: rk_graph_add_remote; 0: a local kernel */
  uint32_t rank;         /**< remote nodes: the rank */
  uint32_t kernel_id;    /**< after launch: the local kernel's id, or the remote node's local id (the
                          *   id local K2K envelopes carry in dst and origin for it) */
  uint32_t lanes;        /**< after launch: lanes (remote nodes: 1 until rk_graph_remote_shape) */
  uint32_t k2k_capacity; /**< slots of each lane's K2K inbox (a device kernel: of its transport inbox
                          *   too, where rk_graph_deliver puts a transport's messages), or of the
                          *   remote node's outbound ring */
  uint32_t payload_max;  /**< after launch: payload bytes one K2K message to the node may carry */
  const char *name;      /**< the kernel's name (remote: the name given); valid for the graph's life */
} rk_graph_node_info;

/** How many nodes the graph has (0 for NULL). */
RK_API uint32_t rk_graph_nodes(const rk_graph *g);
/** Describe node. Errors: RK_EINVAL (NULL, unknown node, out->size too small). */
RK_API int rk_graph_node(const rk_graph *g, uint32_t node, rk_graph_node_info *out);
/** The runtime the graph was created on (NULL for NULL). */
RK_API rk_runtime *rk_graph_runtime(const rk_graph *g);
/** The outbound ring of lane `lane` of remote node `node` after launch (NULL otherwise): the
 *  transport is its only consumer. */
RK_API rk_ring *rk_graph_remote_ring(rk_graph *g, uint32_t node, uint32_t lane);
/** A device backend's remote node: lane `lane`'s second outbound ring, in host memory, which only
 *  host threads push into (rk_graph_answer_error: the transport's own error answers), since the
 *  device's lanes claim in rk_graph_remote_ring's with atomics a host thread's are not atomic with
 *  on a GPU. The transport drains it too, under the same route's credits. NULL on the CPU backend
 *  (the host pushes into rk_graph_remote_ring there) and otherwise as rk_graph_remote_ring. */
RK_API rk_ring *rk_graph_remote_host_ring(rk_graph *g, uint32_t node, uint32_t lane);
/** In start: what the remote kernel is: its lanes (the node gets one outbound ring per lane, so
 *  a keyed send picks the remote lane) and its payload limit (sends of more get RK_EMSGSIZE at
 *  once; never raised above the outbound rings' slot). Errors: RK_EINVAL (lanes 0 or above
 *  RK_MAX_LANES, not a launched remote node), RK_ESTATE (not in the transport's start: the rings
 *  it replaces may be in use by then), RK_ENOMEM. */
RK_API int rk_graph_remote_shape(rk_graph *g, uint32_t node, uint32_t lanes, uint32_t payload_max);
/** The peer of remote node `node` is lost: close its outbound rings (later sends to it get
 *  RK_ECLOSED at once) and return how many messages they (host rings included) still held, which the transport drops
 *  (counting them: they were accepted and will never be delivered). Errors: RK_EINVAL. */
RK_API int rk_graph_remote_close(rk_graph *g, uint32_t node);
/** A message from a peer into lane `lane` (modulo its lanes) of local node `node`'s K2K inboxes:
 *  the lane the sender picked. e is a complete envelope (dst, origin already the local ids),
 *  payload e->payload_len bytes. A kernel on a device backend gets it through that lane's transport
 *  inbox, a ring in host-mapped memory that only host threads claim in (its K2K inbox is its
 *  device's lanes' alone), open until the kernel's terminate has drained everything and owes no
 *  answer (docs/mpi.md, "On a device"). Returns RK_OK, RK_EAGAIN (the inbox is full: keep it and
 *  try again later), RK_ECLOSED (the kernel has terminated), RK_EMSGSIZE, RK_EINVAL (not a local
 *  node, not launched). */
RK_API int rk_graph_deliver(rk_graph *g, uint32_t node, uint32_t lane, const rk_envelope *e, const void *payload);
/** A message from a peer that the transport refuses (its stamp is beyond the clock bound, the
 *  destination refused it with RK_ECLOSED / RK_EMSGSIZE, ...): dead-lettered on local node `node`
 *  (lane `lane` modulo its lanes) with reason `code`, as a local inbox's refusal is. Errors:
 *  RK_EINVAL (not a local launched node). */
RK_API int rk_graph_refuse(rk_graph *g, uint32_t node, uint32_t lane, const rk_envelope *e, const void *payload,
                           int code, const char *why);
/** Answer a refused message that continues a request (RK_ENV_F_K2K, an origin, neither a reply nor
 *  RK_ENV_F_NO_REPLY) with an RK_ENV_F_REPLY | RK_ENV_F_ERROR envelope carrying `code` into its
 *  origin's K2K inbox (e->origin: a local id, a kernel or a remote node's stand-in), as a kernel's
 *  handle_one answers what it refuses: the origin's owed answers go down and the host's call is
 *  answered. from_id: the refusing kernel's id (0: none). Returns RK_OK (answered, or nothing to
 *  answer), RK_EAGAIN (the origin's inbox is full: try again later), RK_ECLOSED, RK_EINVAL (no
 *  such origin). */
RK_API int rk_graph_answer_error(rk_graph *g, uint32_t from_id, const rk_envelope *e, int code);
/** What a lane waits on (rk_graph_lane_wait): the edge the K2K deadlock checks follow. */
typedef struct rk_graph_wait {
  uint32_t size;     /**< sizeof(rk_graph_wait), set by the caller */
  int waiting;       /**< 1: the lane runs a message again because its send found the K2K inbox of
                      *   lane to_lane of node to_node full (a remote node: that lane's outbound
                      *   ring, out of credits); 0: it waits on no inbox (or its kernel is not
                      *   running) */
  uint32_t to_node;  /**< the node waited on (a local kernel or a remote node), when waiting */
  uint32_t to_lane;  /**< its lane, when waiting */
  uint64_t progress; /**< messages the lane took, answered or sent so far: a count that only grows;
                      *   the same count read twice means the lane finished nothing in between */
} rk_graph_wait;

/** The wait edge of lane `lane` of local node `node` and its progress, as the library's own K2K
 *  deadlock checks read them (relaxed: a snapshot, to be confirmed by reading it again later).
 *  A transport follows these edges across processes (docs/mpi.md, "Cycles across ranks"). Any
 *  thread while the graph is launched. Errors: RK_EINVAL (NULL, out->size too small, not launched,
 *  not a local node, lane out of range). */
RK_API int rk_graph_lane_wait(rk_graph *g, uint32_t node, uint32_t lane, rk_graph_wait *out);
/** Fault local node `node`'s kernel with RK_EDEADLK: the transport found it on a cycle of lanes
 *  across processes, each waiting for room in the next one's full K2K inbox, none making progress.
 *  `cycle` names the lanes (for the fault message, rk_kernel_error). Errors: RK_EINVAL (NULL, not
 *  launched, not a local node), RK_ESTATE (the kernel is not running: active or terminating; or it is
 *  FAULTED already, for a deadlock or anything else: the first fault explains). The state is
 *  checked when the fault is recorded, so a kernel whose terminate returned is never faulted. */
RK_API int rk_graph_fault_deadlock(rk_graph *g, uint32_t node, const char *cycle);
/** Record a failure of the transport as the calling thread's last error on the graph's runtime
 *  (rk_runtime_last_error) and in its log; returns code. */
RK_API int rk_transport_fail(rk_graph *g, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** A line in the runtime's log (rate-limited like the library's own lines). */
RK_API void rk_transport_log(rk_graph *g, rk_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif /* !__CUDACC_RTC__ */

RK_EXTERN_C_END

#endif /* RINGKERNEL_REMOTE_H */
