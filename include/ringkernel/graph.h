/** @file ringkernel/graph.h — kernels that message kernels (K2K): routes, topics, launched together.
 *
 * A kernel may send to another kernel only over a route declared before either is launched: no
 * memory may be allocated on a device while a ring kernel is resident, so every K2K inbox exists
 * before the first kernel of the graph starts. The CPU backend follows the same rule, so a program
 * behaves the same everywhere.
 *
 *     rk_graph *g;
 *     uint32_t parse, enrich, agg, route;
 *     rk_graph_create(rt, &g);
 *     rk_graph_add(g, &parse_desc, NULL, 0, &parse);  // 0: K2K inboxes of 1024 slots
 *     rk_graph_add(g, &enrich_desc, NULL, 0, &enrich);
 *     rk_graph_add(g, &agg_desc, NULL, 0, &agg);
 *     rk_graph_connect(g, parse, enrich, &route);   // route 0 of parse
 *     rk_graph_connect(g, enrich, agg, &route);     // route 0 of enrich
 *     rk_graph_launch(g);                           // every kernel resident, checked in
 *     rk_graph_activate(g);
 *     rk_call(rk_graph_kernel(g, parse), ...);      // answered by agg (rk_reply in agg's handler)
 *     rk_graph_terminate(g, timeout);               // upstream first: nothing lost
 *     rk_graph_destroy(g);
 *
 * In a handler, rk_send_to(ctx, route, ...) sends a new message over the kernel's route number
 * `route` (routes are numbered from 0 in the order they were connected), rk_forward(ctx, route,
 * ...) passes the request being handled on with the duty to answer it: whichever kernel down the
 * line calls rk_reply answers the host's rk_call (the reply goes back to the first kernel over
 * K2K, which publishes it in its outbox, where the caller waits); rk_publish(ctx, topic, ...)
 * sends to every kernel subscribed to `topic` (kernel.h).
 *
 * K2K inboxes: one MPSC ring per destination lane (host memory on the CPU backend; device global
 * memory on CUDA, docs/k2k.md "On the device").
 *
 * Several devices: one runtime per device (each owns its device's context and keeps the
 * prepare-then-launch rule for it); rk_graph_add_on adds a kernel of another runtime of the process
 * to the graph, and routes cross devices as any route (docs/k2k.md "Between devices").
 * A lane serves its host inbox and its K2K inbox alternately, a batch of each at most, so neither
 * starves the other (a device lane of a graph with a transport: its transport inbox, where the MPI
 * bridge delivers, takes turns with its K2K inbox on the K2K side; docs/mpi.md "On a device"). */
#ifndef RINGKERNEL_GRAPH_H
#define RINGKERNEL_GRAPH_H

#include "ringkernel/runtime.h"

RK_EXTERN_C_BEGIN

/* The limits are for every compiler; the API is host-only (device code sends with rk_send_to). */
#define RK_GRAPH_MAX_KERNELS 64u /**< kernels in one graph */
#define RK_GRAPH_MAX_ROUTES 16u  /**< routes out of one kernel */
#define RK_GRAPH_MAX_RUNTIMES 8u /**< runtimes (devices) whose kernels one graph joins (rk_graph_add_on) */
#define RK_GRAPH_MAX_TOPICS 64u  /**< topics 0..63 */
#define RK_K2K_DEFAULT_CAPACITY 1024u /**< slots of a K2K inbox (per lane) unless k2k_capacity says */

#if !defined(__CUDACC_RTC__)
/** A graph of kernels: routes and topics between them (opaque). */
typedef struct rk_graph rk_graph;

/** A new, empty graph on rt. Errors: RK_EINVAL (NULL), RK_ENOMEM. */
RK_API int rk_graph_create(rk_runtime *rt, rk_graph **out);
/** Add a kernel (launched by rk_graph_launch with these options; opts may be NULL). *node
 *  receives its number (0, 1, ... in the order added). k2k_capacity: slots of each of its lanes'
 *  K2K inboxes (a power of two; 0: RK_K2K_DEFAULT_CAPACITY). Errors: RK_EINVAL (NULL, a bad
 *  capacity), RK_ENORESOURCE (RK_GRAPH_MAX_KERNELS), RK_ESTATE (launched already). The
 *  descriptor is copied; the strings and init data it points to must outlive the graph. */
RK_API int rk_graph_add(rk_graph *g, const rk_kernel_desc *desc, const rk_launch_options *opts,
                        uint32_t k2k_capacity, uint32_t *node);
/** Add a kernel launched on another runtime of this process, rt (on a device backend: another
 *  device, rk_runtime_options.device), as rk_graph_add does on the graph's own: routes, topics and
 *  forwarded requests cross between the runtimes as between kernels of one. On a device backend a
 *  route between two devices writes the destination's K2K inboxes in its device's memory when the
 *  source device has peer access to it (native peer atomics), and stages them in pinned, mapped
 *  host memory otherwise; without peer access a kernel's inboxes may be written by the lanes of
 *  one device only (its own or one other), else rk_graph_launch returns RK_ENOTSUP. On the CPU
 *  backend the routes are in host memory as within one runtime. The graph still belongs to its own
 *  runtime (its errors are recorded there); rk_runtime_destroy of rt destroys the graph as well
 *  (logged): destroy the graph first. Errors: RK_EINVAL (NULL, rt is the graph's own runtime, and
 *  as rk_graph_add), RK_ENOTSUP (rt uses another backend than the graph's runtime, e.g. CPU and
 *  CUDA, or a backend that cannot route between devices), RK_ENORESOURCE
 *  (RK_GRAPH_MAX_RUNTIMES, RK_GRAPH_MAX_KERNELS), RK_ESTATE (launched already). */
RK_API int rk_graph_add_on(rk_graph *g, rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                           uint32_t k2k_capacity, uint32_t *node);
/** Add a kernel of another process (an MPI rank): the kernel named `name` in the graph of rank
 *  `rank`, reached through the bridge attached to this graph (librk_mpi: rk_mpi_bridge_create,
 *  ringkernel/mpi.h; docs/mpi.md). *node receives its number, like rk_graph_add's. Such a node
 *  can be the destination of routes (rk_graph_connect(g, local, node, ...)) and the origin that a
 *  forwarded request's reply goes back to; it has no routes of its own here (they are declared on
 *  its rank), subscribes to no topic, and rk_graph_kernel returns NULL for it. Locally it is one
 *  bounded outbound ring of k2k_capacity slots (0: RK_K2K_DEFAULT_CAPACITY) per lane of the remote
 *  kernel (learned at launch; a keyed send picks the remote lane as locally), which the bridge
 *  drains as the remote kernel grants credits: a send that finds it full returns RK_EAGAIN, as a
 *  full local inbox does; once the bridge has lost its peer, RK_ECLOSED. name is copied (at most 63
 *  bytes). Errors: RK_ENOTSUP (no bridge attached to the graph: this build has no MPI, or
 *  rk_mpi_bridge_create was not called; the message says which), RK_EINVAL (NULL, an empty or too
 *  long name, a bad capacity, rank out of the bridge's communicator or this process's own rank),
 *  RK_ENORESOURCE, RK_ESTATE (launched already). */
RK_API int rk_graph_add_remote(rk_graph *g, uint32_t rank, const char *name, uint32_t k2k_capacity, uint32_t *node);
/** Declare the route src -> dst; *route (may be NULL) receives its number among src's routes.
 *  A cycle is allowed, but see docs/k2k.md: handlers that retry RK_EAGAIN wait on each other
 *  round a cycle, which deadlocks once its K2K inboxes are full of messages for each other; the
 *  lanes detect that (about 0.1 s in) and fault their kernels with RK_EDEADLK, naming the cycle,
 *  rather than hang silently. Errors: RK_EINVAL (unknown
 *  node, src == dst, the route exists), RK_ENORESOURCE (RK_GRAPH_MAX_ROUTES), RK_ESTATE
 *  (launched already: routes join kernels before they are resident). */
RK_API int rk_graph_connect(rk_graph *g, uint32_t src, uint32_t dst, uint32_t *route);
/** Subscribe a kernel to a topic (0..RK_GRAPH_MAX_TOPICS-1). Errors: RK_EINVAL, RK_ESTATE. */
RK_API int rk_graph_subscribe(rk_graph *g, uint32_t node, uint32_t topic);
/** Launch every kernel of the graph (each LAUNCHED, inactive, checked in, on its own runtime)
 *  with its K2K inboxes. On an error nothing of the graph stays launched. Errors: those of
 *  rk_kernel_launch, RK_ESTATE (launched already), RK_ENOTSUP (on a device: a topic with more than
 *  16 subscribers, a kernel whose inboxes lanes of two devices would write without peer access
 *  (rk_graph_add_on), remote nodes in a graph that spans more than one runtime, or remote nodes on
 *  a backend that cannot map host memory for its lanes; the CUDA backend and the emulated device
 *  can: docs/mpi.md, "On a device"). */
RK_API int rk_graph_launch(rk_graph *g);
/** Activate every kernel, downstream ones first. Errors: RK_ESTATE (not launched), or the first
 *  kernel's error (the others are still activated; rk_runtime_last_error on the graph's runtime
 *  names that node and gives its kernel's error text). */
RK_API int rk_graph_activate(rk_graph *g);
/** The launched kernel of node (NULL before launch or for an unknown node). */
RK_API rk_kernel *rk_graph_kernel(rk_graph *g, uint32_t node);
/** Terminate every kernel, upstream first (a kernel is terminated once every kernel with a route
 *  to it has been, and a kernel subscribed to a topic once every kernel not subscribed to that
 *  topic has been; kernels on a cycle in the order added; remote nodes last, after every local
 *  kernel: their flush and close), each draining its host inbox and its K2K inbox (a device
 *  kernel: its transport inbox too, open until it owes no answer), so what a terminated kernel
 *  sent on is drained by the kernels after it. timeout_ns is per kernel. Returns the first error
 *  (every kernel is still terminated); rk_runtime_last_error on the graph's runtime then names
 *  that node and gives its error text (a kernel's terminate, or the transport's flush). */
RK_API int rk_graph_terminate(rk_graph *g, int64_t timeout_ns);
/** Host publish: the message goes to the K2K inbox of every kernel subscribed to topic (lane 0
 *  of each), in order per publisher; a subscriber whose inbox is full misses it (counted in its
 *  k2k_dropped). Returns how many subscribers got it, or RK_EINVAL / RK_ESTATE (the graph is not
 *  launched; before activation the messages wait in the inboxes) / RK_EMSGSIZE (the subscribers
 *  before the one whose slot is too small got it). Any thread. */
RK_API int rk_graph_publish(rk_graph *g, uint32_t topic, uint32_t type, const void *payload, uint32_t len);
/** Destroy the graph and its kernels: terminates them (upstream first, 1 s each) if they are not
 *  yet, then destroys each. A graph's kernels are destroyed only with it (rk_kernel_destroy on one
 *  is refused and logged: the others may still send to it). When a kernel does not stop (a
 *  handler that has not returned), it is abandoned as rk_kernel_destroy does and the graph's other
 *  kernels are left allocated, since that handler may still send to them (logged).
 *  rk_runtime_destroy destroys the graphs left on the runtime first; the handle is invalid
 *  afterwards. A graph across runtimes (rk_graph_add_on) holds each of its runtimes until it is
 *  freed, and is destroyed by exactly one caller: when rk_runtime_destroy runs on two of its
 *  runtimes at once (two threads), one destroys the graph and the other waits until that is done
 *  before it destroys the rest of its runtime. rk_graph_destroy(g) at the same time as
 *  rk_runtime_destroy of one of g's runtimes is not supported (g may be freed under it). */
RK_API void rk_graph_destroy(rk_graph *g);
#endif /* !__CUDACC_RTC__ */

RK_EXTERN_C_END

#endif /* RINGKERNEL_GRAPH_H */
