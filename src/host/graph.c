/* graph.c — kernels that message kernels: the graph of routes and topics, launched together.
 *
 * Everything a K2K send needs exists before any kernel of the graph runs a handler: each kernel's
 * K2K inboxes (one MPSC ring per lane) are created while it is launched, before its lanes start
 * (rk__kernel_launch's prepare step), and the routes and topics, which name kernels launched
 * later, are written after every kernel is launched and before any is activated: the lanes read
 * them only in handlers, which run after the activate command, whose release/acquire pair orders
 * these plain writes before the reads. They never change afterwards.
 *
 * Remote nodes (rk_graph_add_remote): a kernel of another process. Here it is a stand-in kernel
 * (graph_remote) that is never launched: its lanes' K2K "inboxes" are the node's outbound rings,
 * one per lane of the remote kernel, which the attached transport (ringkernel/remote.h, the MPI
 * bridge) drains; the lane a send picks (its key, or the sender's lane) is the remote lane. The
 * lanes send to it as to any kernel (rk__k2k_push), so the CPU backend knows nothing of remote
 * routes.
 *
 * Kernels of other runtimes (rk_graph_add_on): one runtime per device, each keeping the
 * prepare-then-launch rule for its device; a node is launched on its own runtime. On a device
 * backend each device (runtime) of the graph has its own copy of the table, whose entries hold
 * addresses valid on that device; an entry of a node whose inboxes are not in that device's
 * memory carries RK_DEV_K2K_SYS (its senders fence at system scope). A node's inboxes are in its
 * own device's memory when every other device whose lanes may write them (routes into it, answers
 * to requests it passed on, topics) reaches it by peer access (ops->dev_peer), and staged in mapped
 * host memory (ops->alloc, ops->dev_mapped) when those writers are all on one other device; a mix
 * without peer access is refused (docs/k2k.md "Between devices"). The CPU backend needs nothing
 * more: host memory is every runtime's. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/params.h"
#include "host/internal.h"
#include "ringkernel/graph.h"
#include "ringkernel/remote.h"

/* An optional hook of the transport t (remote.h): within the size its transport says it has, and
 * set. */
#define TP_HOOK(t, hook) ((t)->size >= offsetof(rk_transport, hook) + sizeof(t)->hook && (t)->hook != NULL)

typedef struct graph_node {
  rk_kernel_desc desc;
  rk_launch_options lo;
  int has_lo;
  uint32_t k2k_cap;
  uint32_t nroutes;
  uint32_t route[RK_GRAPH_MAX_ROUTES];
  uint64_t topics; /* bit t: subscribed to topic t */
  rk_kernel *k;
  rk_runtime *rt; /* the runtime it is launched on (g->rt, or rk_graph_add_on's) */
  uint32_t dev;   /* its index in the graph's runtimes (dev_rt) */
  int staged;     /* device backend: its K2K inboxes in mapped host memory (set at launch) */
  int xwriters;   /* device backend: in its device's memory, written by lanes of another device too
                     (peer access; set at launch): RK_DEV_K2K_XWRITERS in its device's table */
  /* rk_graph_add_remote: the rank and name of the kernel it stands for; k is then the stand-in's */
  int remote;
  uint32_t rank;
  char rname[64];
} graph_node;

/* A remote node's stand-in: what the lanes' K2K sends read of a destination kernel (id, lanes,
 * k2k, lane[].inbox for the wake-up, lane[].status for the deadlock check), nothing more. */
typedef struct graph_remote {
  rk_kernel k;
  rk__lane *lane;         /* k.lanes of them (k.lane), and their statuses */
  rk_lane_status *status;
  uint32_t slot;          /* the rings' slot size */
  /* A device backend: the rings are in memory the lanes address (the backend's alloc, pinned and
   * mapped on CUDA), one block, lane i's at mapped + i * ring_bytes, so that the table entry names
   * them as a local kernel's K2K inboxes (base + lane * stride) and the lanes push into them. */
  int dev;
  uint8_t *mapped;
  size_t mapped_bytes, ring_bytes;
} graph_remote;

struct rk_graph {
  rk_runtime *rt;
  struct rk_graph *next; /* rt->graphs (under rt->lock) */
  uint32_t n;
  int launched;
  uint32_t order[RK_GRAPH_MAX_KERNELS]; /* upstream first (topological; cycles in the order added) */
  graph_node node[RK_GRAPH_MAX_KERNELS];
  /* the runtimes of the graph's kernels, g->rt first (rk_graph_add_on adds others), and on a device
   * backend each one's copy of the table its lanes read (rk_dev_k2k_node per kernel, device
   * memory) */
  rk_runtime *dev_rt[RK_GRAPH_MAX_RUNTIMES];
  uint64_t dev_table[RK_GRAPH_MAX_RUNTIMES];
  size_t dev_table_bytes[RK_GRAPH_MAX_RUNTIMES];
  uint32_t ndev;
  struct rk_graph *next_multi; /* g_multi (under g_multi_lock) while ndev > 1 */
  /* 1 once a destroyer (rk_graph_destroy, or rk_runtime_destroy of any of dev_rt) has claimed the
   * graph (under g_multi_lock): exactly one destroys it; the graph stays on the lists until its
   * destroy is done, and the destroy of another of its runtimes waits for it to leave them */
  int destroying;
  /* the watchdog's device deadlock check follows the graph's kernels while `watch` is 1 (under
   * watch_lock, read); launch sets it and teardown clears it (under the lock, written) before
   * any of them is destroyed */
  uv_rwlock_t watch_lock;
  int watch;
  /* the transport of the remote nodes (remote.h), and whether its start ran */
  const rk_transport *tp;
  void *tp_self;
  int tp_started;
  /* 1 while rk_graph_launch runs the transport's start: the only time rk_graph_remote_shape may
   * reshape a remote node (no handler has run; afterwards the lanes push into its rings) */
  int tp_starting;
  /* lane-driven progress (remote.h, the transport's poll; rk__graph_poll): tp_poll_on is 1 from a
   * successful launch with a transport that has the hook until the gate closes (poll_gate_close,
   * before the transport's stop or its detach); tp_poll_in counts the lanes inside the gate.
   * Atomics, sequentially consistent: a Dekker pair (the lane raises tp_poll_in, then reads
   * tp_poll_on; the closer clears tp_poll_on, then reads tp_poll_in), so a lane either sees the gate
   * closed or is seen inside it and waited for; the lane's release decrement pairs with the closer's
   * acquire read, so its call of the hook (and its reads of tp, tp_self) happen before the closer
   * goes on to stop or forget the transport. */
  uint32_t tp_poll_on, tp_poll_in;
  uint32_t nremote;
};

/* Graphs with kernels on more than one runtime: rk_runtime_destroy of any of those runtimes
 * destroys them (rk__graphs_destroy), not only g->rt's. */
static uv_once_t g_multi_once = UV_ONCE_INIT;
static uv_mutex_t g_multi_lock;
static rk_graph *g_multi;
static void multi_init(void) {
  if (uv_mutex_init(&g_multi_lock) != 0) abort(); /* (as libuv's own once-initialised locks) */
}

static void multi_unlink(rk_graph *g) {
  rk_graph **pg;
  if (g->ndev < 2) return;
  uv_once(&g_multi_once, multi_init);
  uv_mutex_lock(&g_multi_lock);
  for (pg = &g_multi; *pg && *pg != g; pg = &(*pg)->next_multi) {
  }
  if (*pg) *pg = g->next_multi;
  uv_mutex_unlock(&g_multi_lock);
}

int rk_graph_create(rk_runtime *rt, rk_graph **out) {
  rk_graph *g;
  if (out) *out = NULL;
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  if (out == NULL) return rk__fail(rt, RK_EINVAL, "rk_graph_create: NULL argument");
  if ((g = (rk_graph *)rk__calloc(1, sizeof *g)) == NULL)
    return rk__fail(rt, RK_ENOMEM, "rk_graph_create: out of memory");
  g->rt = rt;
  g->dev_rt[0] = rt;
  g->ndev = 1;
  if (uv_rwlock_init(&g->watch_lock) != 0) {
    free(g);
    return rk__fail(rt, RK_ENOMEM, "rk_graph_create: cannot create a lock");
  }
  uv_once(&g_multi_once, multi_init); /* (the claim of a destroyer is under g_multi_lock) */
  /* the graph holds each of its runtimes (dev_rt) until it is freed: a runtime destroyed at the
   * same time as the graph's destroy runs is not freed under it (released by graph_free_refs) */
  __atomic_add_fetch(&rt->refs, 1, __ATOMIC_RELAXED);
  rk__lock(&rt->lock);
  g->next = rt->graphs;
  rt->graphs = g;
  rk__unlock(&rt->lock);
  *out = g;
  return RK_OK;
}

static int check_open(rk_graph *g, const char *what) {
  if (g->launched)
    return rk__fail(g->rt, RK_ESTATE, "%s: the graph is launched (routes, topics and kernels are declared before)",
                    what);
  return RK_OK;
}

/* rk_graph_add and rk_graph_add_on: a kernel launched on rt (g->rt or another runtime). */
static int add_node(rk_graph *g, rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                    uint32_t k2k_capacity, uint32_t *node, const char *what) {
  graph_node *n;
  uint32_t dev;
  int rc;
  if (desc == NULL || node == NULL) return rk__fail(g->rt, RK_EINVAL, "%s: NULL argument", what);
  if ((rc = check_open(g, what)) != RK_OK) return rc;
  if (g->n == RK_GRAPH_MAX_KERNELS)
    return rk__fail(g->rt, RK_ENORESOURCE, "%s: at most %u kernels in a graph", what, RK_GRAPH_MAX_KERNELS);
  if (k2k_capacity == 0) k2k_capacity = RK_K2K_DEFAULT_CAPACITY;
  if (!rk_ring__pow2(k2k_capacity) || k2k_capacity < 2 || k2k_capacity > (1u << 20))
    return rk__fail(g->rt, RK_EINVAL, "%s: k2k_capacity %u is not a power of two in [2, 2^20]", what, k2k_capacity);
  if (opts && opts->size < 2 * sizeof(uint32_t))
    return rk__fail(g->rt, RK_EINVAL, "%s: launch options size not set", what);
  if (desc->size == 0) return rk__fail(g->rt, RK_EINVAL, "%s: descriptor field .size not set", what);
  /* the rule of rk_kernel_launch for structs from a newer header, checked here: the node keeps
   * copies of this library's size, which is what the launch sees */
  {
    char in[96];
    snprintf(in, sizeof in, "%s: descriptor %.48s", what, desc->name ? desc->name : "?");
    if ((rc = rk__newer_struct_check(g->rt, desc, sizeof(rk_kernel_desc), desc->size, in)) != RK_OK) return rc;
    snprintf(in, sizeof in, "%s: launch options", what);
    if (opts && (rc = rk__newer_struct_check(g->rt, opts, sizeof(rk_launch_options), opts->size, in)) != RK_OK)
      return rc;
  }
  for (dev = 0; dev < g->ndev && g->dev_rt[dev] != rt; dev++) {
  }
  if (dev == g->ndev) { /* a new runtime of the graph */
    if (dev == RK_GRAPH_MAX_RUNTIMES)
      return rk__fail(g->rt, RK_ENORESOURCE, "%s: at most %u runtimes in a graph", what, RK_GRAPH_MAX_RUNTIMES);
    g->dev_rt[g->ndev++] = rt;
    __atomic_add_fetch(&rt->refs, 1, __ATOMIC_RELAXED); /* released by graph_free_refs */
    if (g->ndev == 2) { /* destroyed with any of its runtimes from now on */
      uv_once(&g_multi_once, multi_init);
      uv_mutex_lock(&g_multi_lock);
      g->next_multi = g_multi;
      g_multi = g;
      uv_mutex_unlock(&g_multi_lock);
    }
  }
  n = &g->node[g->n];
  memset(n, 0, sizeof *n);
  /* as rk_kernel_launch: a descriptor from an older header is smaller; the rest reads as zero */
  memcpy(&n->desc, desc, desc->size < sizeof n->desc ? desc->size : sizeof n->desc);
  if (desc->size > sizeof n->desc) n->desc.size = sizeof n->desc; /* (its added fields were zero) */
  if (opts) {
    memcpy(&n->lo, opts, opts->size < sizeof n->lo ? opts->size : sizeof n->lo);
    n->lo.size = sizeof n->lo;
    n->has_lo = 1;
  }
  n->k2k_cap = k2k_capacity;
  n->rt = rt;
  n->dev = dev;
  *node = g->n++;
  return RK_OK;
}

int rk_graph_add(rk_graph *g, const rk_kernel_desc *desc, const rk_launch_options *opts, uint32_t k2k_capacity,
                 uint32_t *node) {
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  return add_node(g, g->rt, desc, opts, k2k_capacity, node, "rk_graph_add");
}

int rk_graph_add_on(rk_graph *g, rk_runtime *rt, const rk_kernel_desc *desc, const rk_launch_options *opts,
                    uint32_t k2k_capacity, uint32_t *node) {
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if (rt == NULL) return rk__fail(g->rt, RK_EINVAL, "rk_graph_add_on: NULL runtime");
  if (rt == g->rt)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_add_on: the runtime is the graph's own (use rk_graph_add)");
  if (rt->backend != g->rt->backend)
    return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_add_on: the graph's runtime uses the %s backend and this one the %s "
                    "backend: K2K routes join kernels of one backend (host memory on the CPU, device or mapped memory "
                    "on a device)", g->rt->ops->name, rt->ops->name);
  if (rt->backend == RK_BACKEND_CUDA &&
      (rt->ops->dev_alloc == NULL || rt->ops->dev_peer == NULL || rt->ops->dev_mapped == NULL ||
       g->rt->ops->dev_peer == NULL || g->rt->ops->dev_mapped == NULL))
    return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_add_on: the %s backend cannot route K2K messages between devices",
                    rt->ops->name);
  return add_node(g, rt, desc, opts, k2k_capacity, node, "rk_graph_add_on");
}

int rk_graph_connect(rk_graph *g, uint32_t src, uint32_t dst, uint32_t *route) {
  graph_node *n;
  uint32_t i;
  int rc;
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if ((rc = check_open(g, "rk_graph_connect")) != RK_OK) return rc;
  if (src >= g->n || dst >= g->n)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_connect: unknown node %u (the graph has %u)", src >= g->n ? src : dst,
                    g->n);
  if (src == dst) return rk__fail(g->rt, RK_EINVAL, "rk_graph_connect: a route from node %u to itself", src);
  if (g->node[src].remote)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_connect: node %u is remote (rank %u): its routes are declared in its "
                    "own rank's graph", src, g->node[src].rank);
  n = &g->node[src];
  for (i = 0; i < n->nroutes; i++)
    if (n->route[i] == dst)
      return rk__fail(g->rt, RK_EINVAL, "rk_graph_connect: the route %u -> %u exists (route %u)", src, dst, i);
  if (n->nroutes == RK_GRAPH_MAX_ROUTES)
    return rk__fail(g->rt, RK_ENORESOURCE, "rk_graph_connect: at most %u routes out of a kernel", RK_GRAPH_MAX_ROUTES);
  if (route) *route = n->nroutes;
  n->route[n->nroutes++] = dst;
  return RK_OK;
}

int rk_graph_subscribe(rk_graph *g, uint32_t node, uint32_t topic) {
  int rc;
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if ((rc = check_open(g, "rk_graph_subscribe")) != RK_OK) return rc;
  if (node >= g->n) return rk__fail(g->rt, RK_EINVAL, "rk_graph_subscribe: unknown node %u", node);
  if (g->node[node].remote)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_subscribe: node %u is remote: topics do not cross processes", node);
  if (topic >= RK_GRAPH_MAX_TOPICS)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_subscribe: topic %u (topics are 0..%u)", topic,
                    RK_GRAPH_MAX_TOPICS - 1);
  g->node[node].topics |= 1ull << topic;
  return RK_OK;
}

uint32_t rk__graph_order(const rk_graph *g, uint32_t *out, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n && i < g->n; i++) out[i] = g->order[i];
  return g->n;
}

static void topo_order(rk_graph *g);

/* Upstream first: the order of the graph's strongly connected parts over the routes and the
 * topics (a kernel subscribed to topic t counts as downstream of every kernel not subscribed to t:
 * any of them may publish to t, and what it publishes while it drains must find the subscriber
 * still open). A part (a cycle of routes, or kernels tied by topics) is released once every kernel
 * outside it with an edge into it has been; within it, upstream first by the routes alone (topics
 * tie two kernels with different subscriptions both ways), then in the order added. It used to be
 * Kahn's order with every node left over (on a cycle or anywhere behind one) in the order added: a
 * kernel downstream of a cycle could close before the cycle drained into it, losing what it sent. */
static void topo_order(rk_graph *g) {
  uint64_t adj[RK_GRAPH_MAX_KERNELS];   /* bit j of adj[i]: an edge i -> j (routes and topics) */
  uint64_t radj[RK_GRAPH_MAX_KERNELS];  /* routes only */
  uint64_t reach[RK_GRAPH_MAX_KERNELS]; /* bit j: i reaches j */
  uint64_t part[RK_GRAPH_MAX_KERNELS];  /* i's strongly connected part (i included) */
  uint32_t ext[RK_GRAPH_MAX_KERNELS];   /* edges into i from outside its part, from kernels not done */
  uint32_t done[RK_GRAPH_MAX_KERNELS], i, j, u, m = 0, n = g->n;
  int progress = 1;
  memset(adj, 0, sizeof adj);
  memset(radj, 0, sizeof radj);
  memset(ext, 0, sizeof ext);
  memset(done, 0, sizeof done);
  for (i = 0; i < n; i++) {
    for (j = 0; j < g->node[i].nroutes; j++) radj[i] |= 1ull << g->node[i].route[j];
    adj[i] = radj[i];
    for (j = 0; j < n; j++)
      if (j != i && (g->node[j].topics & ~g->node[i].topics) != 0) adj[i] |= 1ull << j;
  }
  for (i = 0; i < n; i++) reach[i] = adj[i];
  for (u = 0; u < n; u++) /* transitive closure (Warshall, on bit rows) */
    for (i = 0; i < n; i++)
      if ((reach[i] >> u) & 1u) reach[i] |= reach[u];
  for (i = 0; i < n; i++) {
    part[i] = 1ull << i;
    for (j = 0; j < n; j++)
      if (((reach[i] >> j) & 1u) && ((reach[j] >> i) & 1u)) part[i] |= 1ull << j;
  }
  for (i = 0; i < n; i++)
    for (j = 0; j < n; j++)
      if (((adj[i] >> j) & 1u) && !((part[j] >> i) & 1u)) ext[j]++;
  while (progress) {
    progress = 0;
    for (i = 0; i < n; i++) {
      uint64_t left;
      int ready = !done[i];
      for (j = 0; j < n && ready; j++)
        if (((part[i] >> j) & 1u) && ext[j] != 0) ready = 0;
      if (!ready) continue;
      /* release the part: by its routes among themselves (Kahn), the rest in the order added */
      left = part[i];
      while (left) {
        uint32_t pick = n;
        for (u = 0; u < n && pick == n; u++) {
          int free_of_routes = (left >> u) & 1u;
          for (j = 0; j < n && free_of_routes; j++)
            if (j != u && ((left >> j) & 1u) && ((radj[j] >> u) & 1u)) free_of_routes = 0;
          if (free_of_routes) pick = u;
        }
        if (pick == n) /* a cycle of routes: the first added */
          for (u = 0; u < n && pick == n; u++)
            if ((left >> u) & 1u) pick = u;
        left &= ~(1ull << pick);
        done[pick] = 1;
        g->order[m++] = pick;
        for (j = 0; j < n; j++)
          if (((adj[pick] >> j) & 1u) && !((part[j] >> pick) & 1u)) ext[j]--;
      }
      progress = 1;
    }
  }
  /* Remote (MPI) nodes last, in the order found: their edges from other ranks (what a peer sends
   * into this rank's kernels, and the answers to what those kernels passed on) are not in this
   * graph, so Kahn's order may put one before a local kernel that still sends through it while it
   * drains (an answer to a request from the remote rank, a forward): terminate closes a remote
   * node's outbound rings, so every local kernel drains first (rk_graph_terminate). */
  for (i = 0, m = 0; i < g->n; i++)
    if (!g->node[g->order[i]].remote) done[m++] = g->order[i];
  for (i = 0; i < g->n; i++)
    if (g->node[g->order[i]].remote) done[m++] = g->order[i];
  memcpy(g->order, done, g->n * sizeof g->order[0]);
}

static void k2k_free(rk_kernel *k) {
  uint32_t i;
  if (k->k2k_dev) { /* a device backend: its K2K inboxes in device memory (or staged in mapped memory) */
    /* lanes whose exit was not confirmed may still use them (and senders with them): kept */
    if (!k->shared_kept) {
      if (k->k2k_staged)
        k->rt->ops->free(k->rt, k->k2k_staged, k->k2k_dev_bytes);
      else
        k->rt->ops->dev_free(k->rt, k->k2k_dev, k->k2k_dev_bytes);
    }
    k->k2k_dev = 0;
    k->k2k_staged = NULL;
  }
  if (k->xin) { /* (kept as the K2K inboxes: a lane whose exit was not confirmed may still read it) */
    if (!k->shared_kept) k->rt->ops->free(k->rt, k->xin, k->xin_bytes);
    k->xin = NULL;
  }
  if (k->k2k == NULL) return;
  for (i = 0; i < k->lanes; i++) rk_ring_destroy(k->k2k[i]);
  free(k->k2k);
  k->k2k = NULL;
}

typedef struct prep_arg {
  rk_graph *g;
  uint32_t node;
} prep_arg;

/* The device address of field `off` of node's entry in device d's copy of g's table. */
static uint64_t table_at(const rk_graph *g, uint32_t d, uint32_t node, size_t off) {
  return g->dev_table[d] + (uint64_t)node * sizeof(rk_dev_k2k_node) + off;
}

/* Two runtimes on one device (the same CUDA device ordinal) share its memory. */
static int same_device(const rk_runtime *a, const rk_runtime *b) { return a == b || a->opts.device == b->opts.device; }

/* A device kernel of a graph with a transport (remote.h): its lanes' transport inboxes, where the
 * transport's deliveries go (rk__k2k_push): MPSC rings of the K2K inbox's capacity in mapped host
 * memory (ops->alloc: zeroed, line-aligned), each followed by a line whose first word the lane
 * sets to ask the host to close the ring (persistent.cuh, rk_dev_x_closing). Only host threads
 * claim in them: the device's lanes claim in the K2K inboxes with device-scope atomics a host CAS
 * is not atomic with, and the host inbox is closed when terminate begins, before the answers the
 * kernel still waits for have come back (docs/mpi.md, "On a device"). */
static int xin_make(rk_kernel *k, uint32_t cap, rk_dev_k2k_node *e) {
  size_t ring = (rk_ring_memsize(cap, k->slot_size, RK_RING_MPSC) + 127u) & ~(size_t)127u;
  size_t stride = ring + RK_LINE, bytes = stride * k->lanes;
  uint32_t i;
  int rc = RK_OK;
  if ((k->xin = (uint8_t *)k->rt->ops->alloc(k->rt, bytes)) == NULL) return RK_ENOMEM;
  for (i = 0; i < k->lanes && rc == RK_OK; i++) rc = rk_ring_init(k->xin + (size_t)i * stride, ring, cap, k->slot_size, RK_RING_MPSC);
  if (rc != RK_OK) {
    k->rt->ops->free(k->rt, k->xin, bytes);
    k->xin = NULL;
    return rc;
  }
  k->xin_stride = stride;
  k->xin_bytes = bytes;
  e->x_base = k->rt->ops->dev_mapped(k->rt, k->xin);
  e->x_stride = stride;
  return RK_OK;
}

static rk_ring *xin_ring(const rk_kernel *k, uint32_t lane) { return (rk_ring *)(k->xin + (size_t)lane * k->xin_stride); }

void rk__k2k_xin_poll(rk_kernel *k, uint32_t lane) {
  rk_ring *r;
  if (k->xin == NULL || lane >= k->lanes) return;
  r = xin_ring(k, lane);
  /* Relaxed (system scope): the lane's word publishes nothing, and the close is a CAS on claim,
   * which the lane reads; what the lane took is accounted by the ring's own head. */
  if (rk_load_relaxed_sys_u64((volatile uint64_t *)((uint8_t *)r + k->xin_stride - RK_LINE)) != 0 &&
      !(rk_load_relaxed_sys_u64(&r->claim) & RK_RING_CLOSED))
    (void)rk_ring_close(r, NULL); /* RK_ECLOSED when another host thread closed it first */
}

/* Every transport inbox of k closed (its lanes have left: later deliveries get RK_ECLOSED). */
static void xin_close(rk_kernel *k) {
  uint32_t i;
  for (i = 0; k->xin && i < k->lanes; i++) (void)rk_ring_close(xin_ring(k, i), NULL); /* RK_ECLOSED: closed already */
}

/* A device backend (CUDA, the emulated device): the kernel's K2K inboxes in device memory, built
 * as ring images in host memory and written there, and its entry in the graph's table, before its
 * lanes start (they read the entry, then their inbox, at start). The entries of the kernels
 * launched after it are written before any is activated: its lanes read them only in handlers. */
static int prepare_dev(rk_kernel *k, prep_arg *a) {
  const rk_backend_ops *ops = k->rt->ops;
  graph_node *gn = &a->g->node[a->node];
  size_t ring = (rk_ring_memsize(gn->k2k_cap, k->slot_size, RK_RING_MPSC) + 127u) & ~(size_t)127u;
  size_t bytes = ring * k->lanes;
  rk_dev_k2k_node e;
  uint8_t *img;
  uint32_t i, d;
  int rc;
  /* the ring images: in mapped host memory itself when staged (written only by lanes of another
   * device without peer access), else built in host memory and copied to the device */
  if (gn->staged)
    img = (uint8_t *)ops->alloc(k->rt, bytes); /* zeroed, line-aligned */
  else if (posix_memalign((void **)&img, RK_LINE, bytes) == 0) /* rings are line-aligned */
    memset(img, 0, bytes);
  else
    img = NULL;
  if (img == NULL && gn->staged)
    return rk__fail(k->rt, RK_ENOMEM, "kernel %s: cannot stage its K2K inboxes (%zu bytes) in mapped host memory",
                    k->name, bytes);
  if (img == NULL) return rk__fail(k->rt, RK_ENOMEM, "kernel %s: cannot build its K2K inboxes", k->name);
  for (i = 0, rc = RK_OK; i < k->lanes && rc == RK_OK; i++)
    rc = rk_ring_init(img + (size_t)i * ring, ring, gn->k2k_cap, k->slot_size, RK_RING_MPSC);
  if (gn->staged) {
    if (rc != RK_OK) {
      ops->free(k->rt, img, bytes);
      return rk__fail(k->rt, rc, "kernel %s: cannot build its K2K inboxes", k->name);
    }
    k->k2k_staged = img;
    k->k2k_dev = ops->dev_mapped(k->rt, img);
  } else {
    if (rc == RK_OK) rc = ops->dev_alloc(k->rt, bytes, &k->k2k_dev);
    if (rc == RK_OK && (rc = ops->dev_write(k->rt, k->k2k_dev, img, bytes)) != RK_OK) {
      ops->dev_free(k->rt, k->k2k_dev, bytes);
      k->k2k_dev = 0;
    }
    free(img);
    if (rc != RK_OK)
      return rk__fail(k->rt, rc, "kernel %s: cannot place its K2K inboxes (%zu bytes) in device memory", k->name,
                      bytes);
  }
  k->k2k_dev_bytes = bytes;
  memset(&e, 0, sizeof e);
  e.k2k_base = k->k2k_dev;
  e.k2k_stride = ring;
  e.topics = gn->topics;
  e.kernel_id = k->id;
  e.lanes = k->lanes;
  e.slot_size = k->slot_size;
  e.k2k_mask = gn->k2k_cap - 1u; /* the rings' geometry (rk_ring_init above) */
  e.k2k_slot = k->slot_size;
  e.nroutes = gn->nroutes;
  for (i = 0; i < gn->nroutes; i++) e.route[i] = (uint8_t)gn->route[i];
  /* a graph with a transport: a peer's kernels may send to this one (even with no remote node here) */
  if (a->g->tp && (rc = xin_make(k, gn->k2k_cap, &e)) != RK_OK) {
    k2k_free(k);
    return rk__fail(k->rt, rc, "kernel %s: cannot make its transport inboxes in mapped host memory", k->name);
  }
  /* its entry in every device's table: the same addresses (device memory of its own device, which
   * a peer addresses alike under unified addressing, or the mapped memory's portable address);
   * RK_DEV_K2K_SYS where they are not that device's memory, RK_DEV_K2K_XWRITERS in its own
   * device's copies when lanes of another device write them there (peer access) */
  for (d = 0; d < a->g->ndev; d++) {
    rk_runtime *drt = a->g->dev_rt[d];
    e.flags = gn->staged || !same_device(drt, k->rt) ? RK_DEV_K2K_SYS : gn->xwriters ? RK_DEV_K2K_XWRITERS : 0u;
    if ((rc = drt->ops->dev_write(drt, table_at(a->g, d, a->node, 0), &e, sizeof e)) != RK_OK) {
      k2k_free(k);
      return rk__fail(k->rt, rc, "kernel %s: cannot write its entry of the graph's table", k->name);
    }
  }
  k->dev_graph = a->g->dev_table[gn->dev];
  k->dev_graph_n = a->g->n;
  k->dev_graph_node = a->node;
  k->k2k_cap = gn->k2k_cap;
  k->graph = a->g;
  return RK_OK;
}

/* rk__kernel_launch's prepare step: the kernel's K2K inboxes, before its lanes start. */
static int prepare(rk_kernel *k, void *arg) {
  prep_arg *a = (prep_arg *)arg;
  uint32_t i;
  int rc;
  if (k->rt->backend == RK_BACKEND_CUDA) return prepare_dev(k, a);
  if ((k->k2k = (rk_ring **)rk__calloc(k->lanes, sizeof *k->k2k)) == NULL)
    return rk__fail(k->rt, RK_ENOMEM, "kernel %s: cannot allocate its K2K inboxes", k->name);
  for (i = 0; i < k->lanes; i++) {
    if ((rc = rk_ring_create(&k->k2k[i], a->g->node[a->node].k2k_cap, k->slot_size, RK_RING_MPSC)) != RK_OK) {
      k2k_free(k);
      return rk__fail(k->rt, rc, "kernel %s: cannot create the K2K inbox of lane %u", k->name, i);
    }
  }
  k->k2k_cap = a->g->node[a->node].k2k_cap;
  k->graph = a->g;
  return RK_OK;
}

/* kept: a device kernel's lanes may still push into the rings (their exit not confirmed): the
 * mapped block is left allocated, as their own K2K inboxes are. */
static void remote_free(rk_kernel *k, int kept) {
  graph_remote *r = (graph_remote *)k; /* k is the first member */
  uint32_t i;
  if (r->dev) {
    if (r->mapped && !kept) r->k.rt->ops->free(r->k.rt, r->mapped, r->mapped_bytes);
    for (i = 0; r->k.k2k_host && i < r->k.lanes; i++) rk_ring_destroy(r->k.k2k_host[i]);
    free(r->k.k2k_host);
  } else {
    for (i = 0; i < r->k.lanes; i++) rk_ring_destroy(r->k.k2k[i]);
  }
  free(r->k.k2k);
  free(r->lane);
  free(r->status);
  free(r);
}

/* The stand-in's lanes: lanes outbound rings (those it has are kept), each with its lane and
 * status. Before any handler runs (launch, then the transport's start). */
static int remote_lanes(graph_remote *r, uint32_t lanes, uint32_t cap) {
  rk_ring **k2k;
  rk__lane *lane;
  rk_lane_status *status;
  uint32_t i;
  int rc;
  uint8_t *mapped = NULL;
  size_t ring = 0;
  if (lanes <= r->k.lanes) return RK_OK;
  if ((k2k = (rk_ring **)rk__calloc(lanes, sizeof *k2k)) == NULL) return RK_ENOMEM;
  if ((lane = (rk__lane *)rk__calloc(lanes, sizeof *lane)) == NULL ||
      /* rk_lane_status is 128-byte aligned (control.h): calloc's 16 bytes made every access to a
       * stand-in lane's status misaligned (UBSan, through the K2K deadlock check's lane_progress) */
      (status = (rk_lane_status *)rk__aligned_alloc(_Alignof(rk_lane_status), (size_t)lanes * sizeof *status)) == NULL) {
    free(k2k);
    free(lane);
    return RK_ENOMEM;
  }
  memset(status, 0, (size_t)lanes * sizeof *status);
  if (r->dev) { /* one new block for every lane (nothing was sent yet: no handler has run) */
    const rk_backend_ops *ops = r->k.rt->ops;
    rk_ring **host;
    ring = (rk_ring_memsize(cap, r->slot, RK_RING_MPSC) + 127u) & ~(size_t)127u;
    if ((host = (rk_ring **)rk__calloc(lanes, sizeof *host)) == NULL ||
        (mapped = (uint8_t *)ops->alloc(r->k.rt, ring * lanes)) == NULL) { /* zeroed, line-aligned */
      free(host);
      free(k2k);
      free(lane);
      free(status);
      return RK_ENOMEM;
    }
    for (i = 0, rc = RK_OK; i < lanes && rc == RK_OK; i++) {
      k2k[i] = (rk_ring *)(mapped + (size_t)i * ring);
      if ((rc = rk_ring_init(k2k[i], ring, cap, r->slot, RK_RING_MPSC)) == RK_OK)
        rc = rk_ring_create(&host[i], cap, r->slot, RK_RING_MPSC);
      lane[i].k = &r->k;
      lane[i].index = i;
      lane[i].inbox = k2k[i];
      lane[i].status = &status[i];
    }
    if (rc != RK_OK) {
      for (i = 0; i < lanes; i++) rk_ring_destroy(host[i]);
      ops->free(r->k.rt, mapped, ring * lanes);
      free(host);
      free(k2k);
      free(lane);
      free(status);
      return rc;
    }
    if (r->mapped) ops->free(r->k.rt, r->mapped, r->mapped_bytes);
    for (i = 0; r->k.k2k_host && i < r->k.lanes; i++) rk_ring_destroy(r->k.k2k_host[i]);
    free(r->k.k2k_host);
    r->k.k2k_host = host;
    r->mapped = mapped;
    r->mapped_bytes = ring * lanes;
    r->ring_bytes = ring;
    goto done;
  }
  for (i = 0; i < lanes; i++) {
    if (i < r->k.lanes)
      k2k[i] = r->k.k2k[i];
    else if ((rc = rk_ring_create(&k2k[i], cap, r->slot, RK_RING_MPSC)) != RK_OK) {
      while (i-- > r->k.lanes) rk_ring_destroy(k2k[i]);
      free(k2k);
      free(lane);
      free(status);
      return rc;
    }
    lane[i].k = &r->k;
    lane[i].index = i;
    lane[i].inbox = k2k[i]; /* rk__k2k_push wakes the lane's inbox: the transport's ring */
    lane[i].status = &status[i];
  }
done:
  free(r->k.k2k);
  free(r->lane);
  free(r->status);
  r->k.k2k = k2k;
  r->lane = r->k.lane = lane;
  r->status = status;
  r->k.lanes = lanes;
  return RK_OK;
}

/* The stand-in of remote node i: one lane (the transport gives it the remote kernel's lanes,
 * rk_graph_remote_shape) whose outbound ring has the node's capacity and slots that fit the
 * largest slot of the graph's local kernels (what their handlers can send); the remote kernel's
 * own limit comes with the transport's start too. */
static int remote_make(rk_graph *g, uint32_t i, uint32_t slot) {
  graph_node *n = &g->node[i];
  graph_remote *r;
  int rc;
  if ((r = (graph_remote *)rk__calloc(1, sizeof *r)) == NULL)
    return rk__fail(g->rt, RK_ENOMEM, "rk_graph_launch: remote node %u: out of memory", i);
  r->slot = slot;
  r->k.rt = g->rt; /* (remote_lanes allocates with its backend) */
  r->dev = g->rt->backend == RK_BACKEND_CUDA;
  if ((rc = remote_lanes(r, 1, n->k2k_cap)) != RK_OK) {
    free(r);
    return rk__fail(g->rt, rc, "rk_graph_launch: remote node %u: cannot create its outbound ring", i);
  }
  r->k.rt = g->rt;
  snprintf(r->k.name, sizeof r->k.name, "%.48s@%u", n->rname, n->rank); /* (a name for logs) */
  r->k.id = __atomic_add_fetch(&g->rt->next_kernel_id, 1, __ATOMIC_RELAXED); /* unique in the runtime */
  r->k.slot_size = slot;
  r->k.k2k_cap = n->k2k_cap;
  r->k.graph = g;
  n->k = &r->k;
  return RK_OK;
}

/* A device backend: remote node i's entry in the graph's table, once the transport's start gave it
 * the remote kernel's lanes (before any kernel is activated: the lanes read it only in handlers).
 * Its "inboxes" are the outbound rings in mapped memory, which the lanes push into as into a local
 * kernel's K2K inbox; RK_DEV_K2K_SYS makes a publication that touched them fence and store at
 * system scope, since the bridge reads them from the host. */
static int remote_entry(rk_graph *g, uint32_t i) {
  graph_remote *r = (graph_remote *)g->node[i].k;
  rk_dev_k2k_node e;
  memset(&e, 0, sizeof e);
  e.k2k_base = g->rt->ops->dev_mapped(g->rt, r->mapped);
  e.k2k_stride = r->ring_bytes;
  e.kernel_id = r->k.id;
  e.lanes = r->k.lanes;
  e.slot_size = r->k.slot_size; /* the remote kernel's limit (rk_graph_remote_shape) */
  e.k2k_mask = r->k.k2k_cap - 1u; /* the outbound rings' geometry (remote_lanes) */
  e.k2k_slot = r->slot;
  e.flags = RK_DEV_K2K_SYS;
  return g->rt->ops->dev_write(g->rt, g->dev_table[0] + (uint64_t)i * sizeof e, &e, sizeof e); /* one runtime */
}

/* Close remote node i's outbound rings to senders. A device backend: its table entry's `closed`
 * flag first, which the lanes read before they claim (a store; the host does not take part in the
 * lanes' claim compare-and-swap on a GPU, see docs/mpi.md), then the rings' own close. */
static void remote_close(rk_graph *g, uint32_t i) {
  rk_kernel *k = g->node[i].k;
  uint32_t j;
  if (((graph_remote *)k)->dev && g->dev_table[0])
    (void)g->rt->ops->dev_store64(g->rt, g->dev_table[0] + (uint64_t)i * sizeof(rk_dev_k2k_node) +
                                             offsetof(rk_dev_k2k_node, closed), 1);
  for (j = 0; j < k->lanes; j++) {
    (void)rk_ring_close(k->k2k[j], NULL); /* RK_ECLOSED when closed already */
    if (k->k2k_host) (void)rk_ring_close(k->k2k_host[j], NULL);
  }
}

/* Terminate and destroy the kernels launched so far (a launch that failed part-way). */
static void set_watch(rk_graph *g, int on) {
  uv_rwlock_wrlock(&g->watch_lock); /* waits for a check in progress */
  g->watch = on;
  uv_rwlock_wrunlock(&g->watch_lock);
}

static void unlaunch(rk_graph *g) {
  uint32_t i;
  set_watch(g, 0);
  for (i = 0; i < g->n; i++) {
    if (g->node[i].k == NULL) continue;
    if (g->node[i].remote) {
      remote_free(g->node[i].k, 0); /* (no lane of the graph has run a handler) */
      g->node[i].k = NULL;
      continue;
    }
    (void)rk_kernel_terminate(g->node[i].k, 1000000000); /* never activated: no handler ran */
    rk__kernel_destroy_member(g->node[i].k);
    g->node[i].k = NULL;
  }
}

/* A device backend with kernels on several devices: where each node's K2K inboxes go (see the
 * top of the file). The devices whose lanes may write a node's inboxes: those of the kernels with
 * a route to it, of the kernels downstream of it (answers to what it passed on come back over
 * K2K), and, when it follows a topic, of every kernel. */
static int place_devices(rk_graph *g) {
  uint64_t reach[RK_GRAPH_MAX_KERNELS]; /* bit j of reach[i]: j is downstream of i */
  int peer[RK_GRAPH_MAX_RUNTIMES][RK_GRAPH_MAX_RUNTIMES]; /* -1: not asked yet */
  uint32_t i, j, d, e;
  int changed = 1;
  for (i = 0; i < g->n; i++) g->node[i].staged = g->node[i].xwriters = 0;
  if (g->ndev < 2) return RK_OK;
  for (d = 0; d < RK_GRAPH_MAX_RUNTIMES; d++)
    for (e = 0; e < RK_GRAPH_MAX_RUNTIMES; e++) peer[d][e] = -1;
  for (i = 0; i < g->n; i++) {
    reach[i] = 0;
    for (j = 0; j < g->node[i].nroutes; j++) reach[i] |= 1ull << g->node[i].route[j];
  }
  while (changed) { /* transitive closure (64 nodes at most) */
    changed = 0;
    for (i = 0; i < g->n; i++) {
      uint64_t r = reach[i];
      for (j = 0; j < g->n; j++)
        if ((reach[i] >> j) & 1u) r |= reach[j];
      if (r != reach[i]) reach[i] = r, changed = 1;
    }
  }
  for (i = 0; i < g->n; i++) {
    graph_node *x = &g->node[i];
    uint32_t writers = 0, other = 0, first = RK_GRAPH_MAX_RUNTIMES, all_peer = 1, one_dev = 1, local = 0;
    if (x->remote) continue;
    for (j = 0; j < g->n; j++) {
      int w = 0;
      uint32_t r;
      if (g->node[j].remote) continue;
      for (r = 0; r < g->node[j].nroutes; r++) w |= g->node[j].route[r] == i;
      w |= (int)((reach[i] >> j) & 1u) | (x->topics != 0);
      if (w) writers |= 1u << g->node[j].dev;
    }
    for (d = 0; d < g->ndev; d++) {
      if (!((writers >> d) & 1u)) continue;
      if (same_device(g->dev_rt[d], x->rt)) {
        local = 1;
        continue;
      }
      other |= 1u << d;
      if (first == RK_GRAPH_MAX_RUNTIMES) first = d;
      else if (!same_device(g->dev_rt[d], g->dev_rt[first])) one_dev = 0;
      if (peer[d][x->dev] < 0) peer[d][x->dev] = g->dev_rt[d]->ops->dev_peer(g->dev_rt[d], x->rt) == 1;
      all_peer &= (uint32_t)peer[d][x->dev];
    }
    if (other == 0 || all_peer) { /* in its device's memory (peers write it there) */
      x->xwriters = other != 0;
      continue;
    }
    if (one_dev && !local) {
      x->staged = 1;
      continue;
    }
    {
      char devs[96];
      size_t off = 0;
      for (d = 0; d < g->ndev && off + 12 < sizeof devs; d++)
        if ((writers >> d) & 1u) off += (size_t)snprintf(devs + off, sizeof devs - off, "%s%d", off ? ", " : "",
                                                          g->dev_rt[d]->opts.device);
      return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: node %u (%s, device %d) may be written by the lanes of "
                      "devices %s (routes into it, answers to what it passes on, topics), and not every other one has "
                      "peer access to device %d: without peer access a K2K inbox takes the lanes of one device (staged "
                      "in host memory it is claimed with compare-and-swap, which is not atomic between devices); split "
                      "the route so one device writes it, or use devices with peer access", i,
                      x->desc.name ? x->desc.name : "?", x->rt->opts.device, devs, x->rt->opts.device);
    }
  }
  return RK_OK;
}

/* Kernel ids are numbered per runtime, and the lanes and the host find a graph's kernels by id
 * (the origin of a forwarded request): before each kernel of a graph across runtimes is launched,
 * every runtime's counter is raised to the highest, so the next id is above every id any of them
 * gave, and the graph's kernels (launched one after the other) get distinct ids. Relaxed
 * compare-and-swap: a counter that only grows, ordering nothing. */
static void raise_ids(rk_graph *g) {
  uint32_t d, top = 0;
  if (g->ndev < 2) return;
  for (d = 0; d < g->ndev; d++) {
    uint32_t v = __atomic_load_n(&g->dev_rt[d]->next_kernel_id, __ATOMIC_RELAXED);
    if (v > top) top = v;
  }
  for (d = 0; d < g->ndev; d++) {
    uint32_t v = __atomic_load_n(&g->dev_rt[d]->next_kernel_id, __ATOMIC_RELAXED);
    while (v < top && !__atomic_compare_exchange_n(&g->dev_rt[d]->next_kernel_id, &v, top, 0, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED)) {
    }
  }
}

/* The first failure of a call that goes through the graph's nodes (launch, activate, terminate):
 * its text is kept at once, because the next node's call starts by clearing the thread's last
 * error (rk__error_clear), and a node on another runtime of the graph records it there;
 * graph_first_end reports it as the graph call's own error on g->rt, "<call>: node N (name):
 * <its text>". (Before, rk_graph_terminate could return RK_ETIMEDOUT with rk_runtime_last_error
 * "no error".) */
typedef struct graph_first {
  int rc;
  char msg[400];
} graph_first;

static void graph_first_note(rk_graph *g, graph_first *f, int rc, const rk_runtime *rt, uint32_t node) {
  const graph_node *n = &g->node[node];
  const char *why = rk_runtime_last_error(rt), *code = rk_err_name(rc);
  size_t cl = strlen(code);
  if (rc == RK_OK || f->rc != RK_OK) return;
  f->rc = rc;
  if (strncmp(why, code, cl) == 0 && why[cl] == ':' && why[cl + 1] == ' ') why += cl + 2; /* named once, by rk__fail */
  snprintf(f->msg, sizeof f->msg, "node %u (%s): %s", node, n->remote ? n->rname : n->desc.name ? n->desc.name : "?",
           why);
}

static int graph_first_end(rk_graph *g, const graph_first *f, const char *what) {
  if (f->rc == RK_OK) return RK_OK;
  return rk__fail(g->rt, f->rc, "%s: %s", what, f->msg);
}

int rk_graph_launch(rk_graph *g) {
  uint32_t i, j, d, slot = 0;
  int rc;
  char err[256];
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if ((rc = check_open(g, "rk_graph_launch")) != RK_OK) return rc;
  if (g->n == 0) return rk__fail(g->rt, RK_EINVAL, "rk_graph_launch: the graph has no kernels");
  if (g->nremote && g->tp == NULL)
    return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: the graph has remote nodes and its transport is gone (a "
                    "launch that failed, or the bridge destroyed)");
  if (g->nremote && g->ndev > 1)
    return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: a graph with remote (MPI) nodes spans one runtime; this one "
                    "has kernels on %u (rk_graph_add_on): the lanes of two devices cannot share a remote node's "
                    "outbound rings in host memory (docs/k2k.md)", g->ndev);
  if (g->nremote && g->rt->backend == RK_BACKEND_CUDA && g->rt->ops->dev_mapped == NULL)
    return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: the %s backend cannot place remote nodes' outbound rings in "
                    "memory its lanes and the host both address (create the runtime with RK_BACKEND_CPU)",
                    g->rt->ops->name);
  if (g->rt->backend == RK_BACKEND_CUDA) {
    const rk_backend_ops *ops = g->rt->ops;
    uint32_t t;
    if (ops->dev_alloc == NULL)
      return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: the %s backend cannot place K2K inboxes in device memory "
                      "(create the runtime with RK_BACKEND_CPU)", ops->name);
    /* a lane writes a topic message to every subscriber before its next publication (persistent.cuh) */
    for (t = 0; t < RK_GRAPH_MAX_TOPICS; t++) {
      uint32_t subs = 0;
      for (i = 0; i < g->n; i++) subs += (uint32_t)((g->node[i].topics >> t) & 1u);
      if (subs > RK_DEV_K2K_PENDING)
        return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: topic %u has %u subscribers; on a device at most %u", t,
                        subs, RK_DEV_K2K_PENDING);
    }
    if ((rc = place_devices(g)) != RK_OK) return rc;
    for (d = 0; d < g->ndev; d++) { /* each device's copy of the table */
      rk_runtime *drt = g->dev_rt[d];
      const rk_backend_ops *dops = drt->ops;
      if (dops->dev_alloc == NULL)
        return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_launch: the %s backend cannot place K2K inboxes in device "
                        "memory (create the runtime with RK_BACKEND_CPU)", dops->name);
      if (g->dev_table[d] && g->dev_table_bytes[d] < (size_t)g->n * sizeof(rk_dev_k2k_node)) {
        dops->dev_free(drt, g->dev_table[d], g->dev_table_bytes[d]); /* nodes were added after a failed launch */
        g->dev_table[d] = 0;
      }
      if (g->dev_table[d] == 0) {
        void *zero;
        g->dev_table_bytes[d] = (size_t)g->n * sizeof(rk_dev_k2k_node);
        if ((rc = dops->dev_alloc(drt, g->dev_table_bytes[d], &g->dev_table[d])) != RK_OK)
          return rk__fail(g->rt, rc, "rk_graph_launch: no device memory for the graph's table");
        /* zeroed once (each kernel's prepare then writes its entry): dev_alloc does not zero */
        if ((zero = rk__calloc(1, g->dev_table_bytes[d])) == NULL ||
            (rc = dops->dev_write(drt, g->dev_table[d], zero, g->dev_table_bytes[d])) != RK_OK) {
          free(zero);
          dops->dev_free(drt, g->dev_table[d], g->dev_table_bytes[d]);
          g->dev_table[d] = 0;
          return rk__fail(g->rt, zero ? rc : RK_ENOMEM, "rk_graph_launch: cannot clear the graph's table");
        }
        free(zero);
      }
    }
  }
  for (i = 0; i < g->n; i++) {
    prep_arg a = {g, i};
    graph_node *n = &g->node[i];
    if (n->remote) continue; /* after the local kernels: its slots fit theirs */
    raise_ids(g);
    rc = rk__kernel_launch(n->rt, &n->desc, n->has_lo ? &n->lo : NULL, prepare, &a, &n->k);
    if (rc != RK_OK) {
      graph_first first = {RK_OK, ""};
      graph_first_note(g, &first, rc, n->rt, i);
      unlaunch(g);
      return graph_first_end(g, &first, "rk_graph_launch");
    }
    if (n->k->slot_size > slot) slot = n->k->slot_size;
  }
  if (slot == 0) slot = 256u; /* no local kernel: kernel.c's default slot */
  raise_ids(g);
  for (i = 0; i < g->n; i++)
    if (g->node[i].remote && (rc = remote_make(g, i, slot)) != RK_OK) {
      const char *why = rk_runtime_last_error(g->rt), *name = rk_err_name(rc);
      size_t nl = strlen(name);
      /* (unlaunch's terminates clear it; said again without its code's prefix) */
      snprintf(err, sizeof err, "%s", strncmp(why, name, nl) == 0 && why[nl] == ':' ? why + nl + 2 : why);
      unlaunch(g);
      return rk__fail(g->rt, rc, "%s", err);
    }
  /* the routes, now that every kernel exists (ordered before the handlers by the activation) */
  for (i = 0; i < g->n; i++) {
    rk_kernel *k = g->node[i].k;
    k->nroutes = g->node[i].nroutes;
    for (j = 0; j < k->nroutes; j++) k->route[j] = g->node[g->node[i].route[j]].k;
  }
  topo_order(g);
  g->launched = 1;
  if (g->tp) { /* the transport meets its peers before any handler can send */
    g->tp_started = 1;
    g->tp_starting = 1;
    rc = g->tp->start(g->tp_self, g);
    g->tp_starting = 0;
    if (rc != RK_OK) {
      const char *tname = g->tp->name ? g->tp->name : "?";
      snprintf(err, sizeof err, "%s", rk_runtime_last_error(g->rt));
      g->tp->stop(g->tp_self, g); /* the transport is done with the graph: detached */
      g->tp = NULL;
      g->tp_self = NULL;
      g->tp_started = 0;
      g->launched = 0;
      unlaunch(g);
      return rk__fail(g->rt, rc, "rk_graph_launch: transport %s: %s", tname, err);
    }
    /* a device backend: the remote nodes' entries, now that they have their lanes */
    for (i = 0; i < g->n && g->dev_table[0]; i++)
      if (g->node[i].remote && (rc = remote_entry(g, i)) != RK_OK) {
        g->tp->stop(g->tp_self, g);
        g->tp = NULL;
        g->tp_self = NULL;
        g->tp_started = 0;
        g->launched = 0;
        unlaunch(g);
        return rk__fail(g->rt, rc, "rk_graph_launch: cannot write remote node %u's entry of the graph's table", i);
      }
  }
  /* lanes may drive the transport's progress from now on (rk__graph_poll): every field they read
   * (tp, tp_self) is written; seq_cst (the gate's Dekker pair, field comment) */
  if (g->tp && TP_HOOK(g->tp, poll))
    __atomic_store_n(&g->tp_poll_on, 1, __ATOMIC_SEQ_CST);
  set_watch(g, 1);
  return RK_OK;
}

/* Close the lanes' gate to the transport's poll and wait for the lanes inside it (a pass is
 * bounded: remote.h). Before the transport's stop or detach. */
static void poll_gate_close(rk_graph *g) {
  __atomic_store_n(&g->tp_poll_on, 0, __ATOMIC_SEQ_CST); /* the gate's Dekker pair (field comment) */
  while (__atomic_load_n(&g->tp_poll_in, __ATOMIC_SEQ_CST)) /* (acquire and more: pairs with the lane's release) */
    rk__sleep_ns(10000);
}

int rk__graph_poll(rk_graph *g, const void *lane, int stop) {
  int rc = 0;
  if (g == NULL || !__atomic_load_n(&g->tp_poll_on, __ATOMIC_RELAXED)) return 0; /* (cheap pre-check) */
  __atomic_add_fetch(&g->tp_poll_in, 1, __ATOMIC_SEQ_CST); /* the gate's Dekker pair (field comment) */
  if (__atomic_load_n(&g->tp_poll_on, __ATOMIC_SEQ_CST)) rc = g->tp->poll(g->tp_self, g, lane, stop);
  __atomic_sub_fetch(&g->tp_poll_in, 1, __ATOMIC_RELEASE); /* pairs with poll_gate_close's read */
  return rc;
}

int rk_graph_activate(rk_graph *g) {
  uint32_t i;
  graph_first first = {RK_OK, ""};
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if (!g->launched) return rk__fail(g->rt, RK_ESTATE, "rk_graph_activate: the graph is not launched");
  for (i = g->n; i-- > 0;) { /* downstream first: the first messages find their consumers running */
    rk_kernel *k = g->node[g->order[i]].k;
    if (g->node[g->order[i]].remote || rk_kernel_state(k) == RK_STATE_ACTIVE) continue;
    graph_first_note(g, &first, rk_kernel_activate(k), k->rt, g->order[i]);
  }
  return graph_first_end(g, &first, "rk_graph_activate");
}

rk_kernel *rk_graph_kernel(rk_graph *g, uint32_t node) {
  if (g == NULL || !g->launched || node >= g->n || g->node[node].remote) return NULL;
  return g->node[node].k;
}

int rk_graph_terminate(rk_graph *g, int64_t timeout_ns) {
  uint32_t i;
  graph_first first = {RK_OK, ""};
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if (!g->launched) return rk__fail(g->rt, RK_ESTATE, "rk_graph_terminate: the graph is not launched");
  for (i = 0; i < g->n; i++) {
    rk_kernel *k = g->node[g->order[i]].k;
    rk_lifecycle s;
    if (g->node[g->order[i]].remote) { /* what the kernels upstream sent it goes out, then it closes */
      if (g->tp && g->tp_started) {
        rk__error_clear(g->rt); /* the transport reports through rk_transport_fail, or not at all */
        graph_first_note(g, &first, g->tp->flush(g->tp_self, g, g->order[i], timeout_ns), g->rt, g->order[i]);
      }
      remote_close(g, g->order[i]);
      continue;
    }
    s = rk_kernel_state(k);
    if (s == RK_STATE_TERMINATED) continue;
    graph_first_note(g, &first, rk_kernel_terminate(k, timeout_ns), k->rt, g->order[i]);
  }
  return graph_first_end(g, &first, "rk_graph_terminate");
}

uint32_t rk__graph_subscribers(struct rk_graph *g, uint32_t topic, rk_kernel **out, uint32_t max) {
  uint32_t i, n = 0;
  for (i = 0; i < g->n && n < max; i++)
    if (g->node[i].k && (g->node[i].topics >> topic) & 1u) out[n++] = g->node[i].k;
  return n;
}

rk_kernel *rk__graph_kernel(struct rk_graph *g, uint32_t id) {
  uint32_t i;
  for (i = 0; i < g->n; i++)
    if (g->node[i].k && g->node[i].k->id == id) return g->node[i].k;
  return NULL;
}

int rk__k2k_push(rk_kernel *dst, uint32_t dst_lane, const rk_envelope *e, const void *payload, uint32_t len) {
  rk_ring *r;
  uint64_t pos;
  uint8_t *slot;
  int err;
  if (dst_lane >= dst->lanes) return RK_EINVAL;
  if (dst->k2k == NULL && dst->xin) {
    /* A device kernel (from the host: the transport's deliveries and error answers). Its K2K
     * inbox is claimed by its device's lanes with device-scope atomics the host cannot join: the
     * lane's transport inbox, which only host threads claim in (xin_make). Closed once the lane
     * asked (terminating, nothing owed): RK_ECLOSED then. */
    rk__k2k_xin_poll(dst, dst_lane);
    r = xin_ring(dst, dst_lane);
  } else if (dst->k2k == NULL) {
    return RK_EINVAL;
  } else {
    /* a device graph's remote node: the host's own ring of the lane (its rings in mapped memory are
     * claimed by device lanes, with atomics the host's are not atomic with over PCIe) */
    r = dst->k2k_host ? dst->k2k_host[dst_lane] : dst->k2k[dst_lane];
  }
  if (len > rk__payload_max(dst)) return RK_EMSGSIZE;
  if ((slot = (uint8_t *)rk_ring_mpsc_reserve(r, &pos, &err)) == NULL) return err; /* RK_EAGAIN, RK_ECLOSED */
  memcpy(slot, e, RK_ENVELOPE_SIZE);
  ((rk_envelope *)slot)->payload_len = len;
  if (len) memcpy(slot + RK_ENVELOPE_SIZE, payload, len);
  rk_ring_mpsc_commit(r, pos); /* release: pairs with the lane's acquire of the sequence word */
  /* the destination lane parks on its host inbox's futex; its wait predicate looks at both rings */
  rk_ring_notify_consumer(dst->lane[dst_lane].inbox);
  return RK_OK;
}

int rk_graph_publish(rk_graph *g, uint32_t topic, uint32_t type, const void *payload, uint32_t len) {
  rk_kernel *subs[RK_GRAPH_MAX_KERNELS];
  uint32_t i, n;
  int got = 0, rc;
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if (!g->launched) return rk__fail(g->rt, RK_ESTATE, "rk_graph_publish: the graph is not launched");
  if (topic >= RK_GRAPH_MAX_TOPICS) return rk__fail(g->rt, RK_EINVAL, "rk_graph_publish: topic %u out of range", topic);
  if (type == 0 || (payload == NULL && len > 0))
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_publish: %s", type == 0 ? "message type 0 is reserved" : "NULL payload");
  n = rk__graph_subscribers(g, topic, subs, RK_GRAPH_MAX_KERNELS);
  for (i = 0; i < n; i++) {
    rk_envelope e;
    rk_envelope_init(&e, type, len, (uint16_t)(RK_ENV_F_K2K | RK_ENV_F_NO_REPLY));
    e.msg_id = rk__msg_id(g->rt);
    e.src = 0;
    e.dst = subs[i]->id;
    e.node = g->rt->node_id;
    if (g->rt->backend == RK_BACKEND_CUDA) {
      /* A device kernel's K2K inbox is in device memory, which the host does not write while its
       * lanes run: the host's topic message goes through the subscriber's host inbox (lane 0, as
       * a K2K publication), as a message that wants no reply; order per publisher holds there. */
      rc = rk_send_key(subs[i], 0, type, payload, len, RK_SEND_NO_REPLY | RK_SEND_NOWAIT, NULL);
      rk__error_clear(g->rt);
    } else {
      if ((rc = rk_clock_tick(rk_runtime_clock(g->rt), &e.hlc)) != RK_OK)
        return rk__fail(g->rt, rc, "rk_graph_publish: clock");
      rc = rk__k2k_push(subs[i], 0, &e, payload, len);
    }
    if (rc == RK_OK)
      got++;
    else if (rc == RK_EAGAIN)
      __atomic_add_fetch(&subs[i]->k2k_dropped, 1, __ATOMIC_RELAXED); /* statistics */
    else if (rc == RK_EMSGSIZE)
      return rk__fail(g->rt, rc, "rk_graph_publish: %u bytes exceed kernel %s's slot payload", len, subs[i]->name);
  }
  return got;
}

/* Claim g for this destroyer (under g_multi_lock): 0 when another one has claimed it already. */
static int graph_claim_locked(rk_graph *g) {
  if (g->destroying) return 0;
  g->destroying = 1;
  return 1;
}

/* The end of a destroy: g leaves its runtime's list and the multi-runtime list (the destroy of
 * another of its runtimes waiting for it goes on), then drops its references on its runtimes
 * (the last one frees a runtime whose rk_runtime_destroy has returned meanwhile). */
static void graph_leave(rk_graph *g) {
  rk_runtime *rts[RK_GRAPH_MAX_RUNTIMES];
  uint32_t i, n = g->ndev;
  rk_graph **pg;
  for (i = 0; i < n; i++) rts[i] = g->dev_rt[i];
  rk__lock(&g->rt->lock);
  for (pg = &g->rt->graphs; *pg && *pg != g; pg = &(*pg)->next) {
  }
  if (*pg) *pg = g->next;
  rk__unlock(&g->rt->lock);
  multi_unlink(g);
  for (i = 0; i < n; i++) rk__runtime_release(rts[i]);
}

static void graph_destroy_claimed(rk_graph *g);

void rk_graph_destroy(rk_graph *g) {
  int mine;
  if (g == NULL) return;
  uv_mutex_lock(&g_multi_lock);
  mine = graph_claim_locked(g);
  uv_mutex_unlock(&g_multi_lock);
  if (!mine) return; /* rk_runtime_destroy of one of its runtimes is destroying it */
  graph_destroy_claimed(g);
}

static void graph_destroy_claimed(rk_graph *g) {
  uint32_t i, stuck = 0;
  int kept = 0;
  set_watch(g, 0); /* no deadlock check follows the kernels any more */
  /* the transport first answers what the kernels await from other processes (those answers
   * cannot come in time: it stops next), so their terminates below do not wait for them */
  if (g->launched && g->tp && g->tp_started && TP_HOOK(g->tp, closing))
    g->tp->closing(g->tp_self, g);
  /* every lane gone before any K2K inbox is freed: upstream first, each draining (1 s each) */
  if (g->launched) (void)rk_graph_terminate(g, 1000000000);
  if (g->tp) { /* the transport stops reading the rings before any is freed (and forgets g) */
    poll_gate_close(g); /* no lane drives it any more (a lane of a stuck kernel may still run) */
    g->tp->stop(g->tp_self, g);
    g->tp = NULL;
    g->tp_started = 0;
  }
  for (i = 0; i < g->n; i++)
    if (g->node[i].k && !g->node[i].remote && rk_kernel_state(g->node[i].k) != RK_STATE_TERMINATED) stuck++;
  if (stuck) {
    /* A handler that has not returned may still send to any kernel of the graph (its routes, its
     * topics: this graph) once it does: nothing it can reach is freed. One stuck kernel is
     * abandoned (freed by its last lane thread), the others and the graph are leaked. Two or more
     * are abandoned and kept (below): a freed one was freed as soon as its own handler returned,
     * and another's handler, returning later, sent into its freed inboxes (a use after free). */
    rk__log(g->rt, RK_LOG_ERROR, "rk_graph_destroy: %u kernel(s) of the graph did not stop (a handler that has not "
            "returned): the graph and its %s are left allocated", stuck, stuck > 1 ? "kernels" : "other kernels");
    for (i = 0; i < g->n; i++) {
      rk_kernel *k = g->node[i].k;
      if (k == NULL || g->node[i].remote) continue; /* a stand-in: left allocated with the graph */
      if (rk_kernel_state(k) == RK_STATE_TERMINATED) {
        rk__kernel_leak(k);
      } else if (stuck > 1) {
        /* abandoned as one alone is (its lane threads detached, the runtime kept while they run),
         * with one reference more that nobody drops: its last lane thread does not free it */
        __atomic_add_fetch(&k->thread_refs, 1, __ATOMIC_RELAXED);
        rk__kernel_destroy_member(k);
      } else {
        rk__kernel_destroy_member(k);
      }
    }
    graph_leave(g); /* (found by no runtime's destroy any more; its memory is kept) */
    return;
  }
  for (i = 0; i < g->n; i++) /* (a lane whose exit was not confirmed may still push into a remote node's rings) */
    if (g->node[i].k && !g->node[i].remote) kept |= g->node[i].k->shared_kept;
  for (i = 0; i < g->n; i++) {
    if (g->node[i].k == NULL) continue;
    if (g->node[i].remote)
      remote_free(g->node[i].k, kept);
    else
      rk__kernel_destroy_member(g->node[i].k); /* K2K inboxes freed with it: no lane is left to send */
    g->node[i].k = NULL;
  }
  /* (a kernel whose lanes' exit was not confirmed may still read the table: kept) */
  for (i = 0; i < g->ndev && !kept; i++)
    if (g->dev_table[i]) g->dev_rt[i]->ops->dev_free(g->dev_rt[i], g->dev_table[i], g->dev_table_bytes[i]);
  graph_leave(g);
  uv_rwlock_destroy(&g->watch_lock);
  free(g);
}

void rk__k2k_free(rk_kernel *k) { k2k_free(k); }

uint64_t rk__k2k_dev_dropped(rk_kernel *k) {
  uint64_t v, sum = 0;
  uint32_t d;
  rk_graph *g = k->graph;
  if (k->k2k_dev == 0 || k->dev_graph == 0 || g == NULL) return 0;
  for (d = 0; d < g->ndev; d++) { /* each device's lanes count in their own copy of the table */
    v = 0;
    if (g->dev_table[d])
      (void)g->dev_rt[d]->ops->dev_load64(g->dev_rt[d], table_at(g, d, k->dev_graph_node,
                                                                 offsetof(rk_dev_k2k_node, dropped)), &v);
    sum += v;
  }
  return sum;
}

void rk__k2k_close(rk_kernel *k) {
  uint32_t i;
  xin_close(k); /* a device kernel of a graph with a transport: the transport's deliveries too */
  if (k->k2k_dev && k->dev_graph && k->graph) { /* a device kernel: the flag its senders read (persistent.cuh), */
    rk_graph *g = k->graph;                         /* in every device's copy of the table */
    uint32_t d;
    for (d = 0; d < g->ndev; d++)
      if (g->dev_table[d])
        (void)g->dev_rt[d]->ops->dev_store64(g->dev_rt[d], table_at(g, d, k->dev_graph_node,
                                                                  offsetof(rk_dev_k2k_node, closed)), 1);
    return;
  }
  if (k->k2k == NULL) return;
  for (i = 0; i < k->lanes; i++) (void)rk_ring_close(k->k2k[i], NULL); /* RK_ECLOSED when closed already */
}

void (*rk__k2k_staged_hook)(rk_kernel *k, int step, uint32_t n);

/* The close of a staged K2K inbox (docs/k2k.md, "between devices"): its lanes' close (a CAS on each
 * ring's claim, from k's device) and its writers' claims (a CAS on the same word, from the one other
 * device they are on) are not atomic with each other on mapped host memory, so a writer's claim
 * could be lost, or slip in after the close's final position uncounted. So the close happens only
 * once no writer can claim: k's lanes, terminating, wait at their close (rk_dev_k2k_may_close) and
 * say so in close_ready; then the host (1) sets `closed` in every other device's copy of k's entry,
 * where the writers read it before they claim, (2) sends every launched kernel of the graph on
 * another device a command that only asks for an acknowledgement (RK_CMD_SYNC): a lane applies a
 * command outside a claim, acquiring it after the host's `closed` store, so a lane that
 * acknowledged it sees `closed` at every later send (RK_ECLOSED), and every claim it made before is
 * ordered before its acknowledgement (store-release), which the host acquires; (3) gives k's lanes
 * the go (RK_DEV_K2K_CLOSE_GO in k's own device's copy): their CAS is then the only one on claim.
 * Each lane waits for the go only once the answers to what it passed on are back (k2k_owed), so a
 * direct rk_kernel_terminate of the kernel refuses nothing it is still owed. rk_kernel_terminate,
 * after the lanes acknowledged TERMINATE (k's ctl_lock held; a writer's is only tried: while another
 * thread's terminate holds it, this waits until that kernel has terminated or the deadline, and
 * does not wait at all when that terminate is itself at this step: two staged kernels that write
 * each other, terminated at once by two threads, would otherwise wait for each other; then the
 * close goes on without that writer, logged). Returns RK_OK (also for a kernel that is not staged), RK_ETIMEDOUT, RK_ECUDA (dead
 * lanes). */
int rk__k2k_staged_close(rk_kernel *k, uint64_t deadline) {
  rk_graph *g = k->graph;
  uint32_t d, i, me, synced = 0;
  uint64_t ready = 0, off_ready = offsetof(rk_dev_k2k_node, close_ready), off_closed = offsetof(rk_dev_k2k_node, closed);
  int rc;
  if (k->k2k_staged == NULL || k->k2k_dev == 0 || k->dev_graph == 0 || g == NULL) return RK_OK; /* not staged */
  me = g->node[k->dev_graph_node].dev;
  /* (0) every lane at its close, or gone */
  for (;;) {
    uint32_t gone = 0;
    if ((rc = g->dev_rt[me]->ops->dev_load64(g->dev_rt[me], table_at(g, me, k->dev_graph_node, off_ready), &ready)) !=
        RK_OK)
      return rc;
    for (i = 0; i < k->lanes; i++) /* pairs with the lane's store-release of its state */
      gone += rk_load_acquire_sys_u32(&k->lane[i].status->state) == RK_STATE_TERMINATED;
    if (ready + gone >= k->lanes) break;
    if (__atomic_load_n(&k->lanes_dead, __ATOMIC_ACQUIRE)) return RK_ECUDA; /* pairs with rk__kernel_lanes_dead */
    if (rk__now_ns() >= deadline) return RK_ETIMEDOUT;
    rk__sleep_ns(20000);
  }
  if (rk__k2k_staged_hook) rk__k2k_staged_hook(k, 0, (uint32_t)ready);
  /* (1) the writers' devices' flag: their sends get RK_ECLOSED from now on */
  for (d = 0; d < g->ndev; d++)
    if (d != me && g->dev_table[d] &&
        (rc = g->dev_rt[d]->ops->dev_store64(g->dev_rt[d], table_at(g, d, k->dev_graph_node, off_closed), 1)) != RK_OK)
      return rc;
  if (rk__k2k_staged_hook) rk__k2k_staged_hook(k, 1, 0);
  /* (2) every lane that may write it (the graph's kernels on the other devices) past a command */
  __atomic_store_n(&k->staged_syncing, 1, __ATOMIC_RELEASE); /* pairs with rk__kernel_sync's acquire */
  for (i = 0, rc = RK_OK; i < g->n && rc == RK_OK; i++) {
    rk_kernel *w = g->node[i].k;
    if (w == NULL || w == k || g->node[i].remote || g->node[i].dev == me || w->k2k_dev == 0) continue;
    rc = rk__kernel_sync(w, deadline);
    if (rc == RK_EDEADLK) { /* its terminate waits for us: go on without it (a documented limit) */
      rk__log(k->rt, RK_LOG_WARN, "kernel %s: the close of its staged K2K inbox did not wait for kernel %s, which is "
              "being terminated by another thread that waits for this one: a send of %s racing the close may be "
              "lost; terminate them in one thread (rk_graph_terminate) to avoid it", k->name, w->name, w->name);
      rc = RK_OK;
      continue;
    }
    if (rc == RK_OK) synced++;
  }
  __atomic_store_n(&k->staged_syncing, 0, __ATOMIC_RELEASE);
  if (rc != RK_OK) return rc;
  if (rk__k2k_staged_hook) rk__k2k_staged_hook(k, 2, synced);
  /* (3) the go: k's lanes close their inboxes (alone on claim now) and drain them to the close */
  if ((rc = g->dev_rt[me]->ops->dev_store64(g->dev_rt[me], table_at(g, me, k->dev_graph_node, off_closed),
                                            RK_DEV_K2K_CLOSE_GO)) != RK_OK)
    return rc;
  if (rk__k2k_staged_hook) rk__k2k_staged_hook(k, 3, 0);
  return RK_OK;
}

/* rk_runtime_destroy: the graphs of rt and those of other runtimes with kernels on rt
 * (rk_graph_add_on). Each one is claimed under g_multi_lock and destroyed by exactly one thread;
 * one claimed by another thread (rk_runtime_destroy of another of its runtimes, at the same time)
 * is waited for until it has left the lists, so that no kernel of it is left on rt. */
void rk__graphs_destroy(rk_runtime *rt) {
  for (;;) {
    rk_graph *g, *mine = NULL;
    int other = 0, warn = 0;
    uint32_t d;
    uv_once(&g_multi_once, multi_init);
    uv_mutex_lock(&g_multi_lock);
    rk__lock(&rt->lock); /* (g_multi_lock, then a runtime's lock: the only nesting of the two) */
    for (g = rt->graphs; g && mine == NULL; g = g->next) {
      if (graph_claim_locked(g))
        mine = g;
      else
        other = 1;
    }
    rk__unlock(&rt->lock);
    for (g = g_multi; g && mine == NULL; g = g->next_multi) {
      for (d = 1; d < g->ndev && g->dev_rt[d] != rt; d++) {
      }
      if (d == g->ndev) continue;
      if (graph_claim_locked(g)) {
        mine = g;
        warn = 1;
      } else {
        other = 1;
      }
    }
    uv_mutex_unlock(&g_multi_lock);
    if (mine) {
      if (warn)
        rk__log(rt, RK_LOG_WARN, "rk_runtime_destroy: a graph of another runtime has kernels on this one: destroyed "
                "with it");
      graph_destroy_claimed(mine); /* it leaves the lists */
    } else if (other) {
      rk__sleep_ns(1000000); /* another thread destroys it: wait for it to leave the lists */
    } else {
      return;
    }
  }
}

/* ---------------------------------------- remote nodes (remote.h) ---------------------------- */

int rk_graph_add_remote(rk_graph *g, uint32_t rank, const char *name, uint32_t k2k_capacity, uint32_t *node) {
  graph_node *n;
  int rc;
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if (name == NULL || node == NULL) return rk__fail(g->rt, RK_EINVAL, "rk_graph_add_remote: NULL argument");
  if (g->tp == NULL)
    return rk__fail(g->rt, RK_ENOTSUP, "rk_graph_add_remote: no transport is attached to the graph: remote routes need "
                    "librk_mpi's rk_mpi_bridge_create(graph, comm, ...) (ringkernel/mpi.h), which is built only when "
                    "CMake finds MPI (docs/mpi.md)");
  if ((rc = check_open(g, "rk_graph_add_remote")) != RK_OK) return rc;
  if (name[0] == '\0' || strlen(name) >= sizeof n->rname)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_add_remote: the name must have 1 to %zu bytes", sizeof n->rname - 1);
  if (rank >= g->tp->ranks || rank == g->tp->rank)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_add_remote: rank %u is %s (this process is rank %u of %u)", rank,
                    rank == g->tp->rank ? "this process's own" : "not in the transport's communicator", g->tp->rank,
                    g->tp->ranks);
  if (g->n == RK_GRAPH_MAX_KERNELS)
    return rk__fail(g->rt, RK_ENORESOURCE, "rk_graph_add_remote: at most %u kernels in a graph", RK_GRAPH_MAX_KERNELS);
  if (k2k_capacity == 0) k2k_capacity = RK_K2K_DEFAULT_CAPACITY;
  if (!rk_ring__pow2(k2k_capacity) || k2k_capacity < 2 || k2k_capacity > (1u << 20))
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_add_remote: k2k_capacity %u is not a power of two in [2, 2^20]",
                    k2k_capacity);
  n = &g->node[g->n];
  memset(n, 0, sizeof *n);
  n->remote = 1;
  n->rt = g->rt;
  n->rank = rank;
  snprintf(n->rname, sizeof n->rname, "%s", name);
  n->k2k_cap = k2k_capacity;
  g->nremote++;
  *node = g->n++;
  return RK_OK;
}

int rk_graph_set_transport(rk_graph *g, const rk_transport *t, void *self) {
  if (g == NULL) return RK_EINVAL;
  if (t == NULL) { /* detach: the transport stopped itself (remote.h) */
    poll_gate_close(g); /* no lane calls it any more */
    g->tp = NULL;
    g->tp_self = NULL;
    g->tp_started = 0;
    return RK_OK;
  }
  if (t->size == 0 || t->start == NULL || t->flush == NULL || t->stop == NULL)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_set_transport: incomplete rk_transport");
  if (g->launched || g->nremote || g->tp)
    return rk__fail(g->rt, RK_ESTATE, "rk_graph_set_transport: the graph is launched, has remote nodes or a transport");
  g->tp = t;
  g->tp_self = self;
  return RK_OK;
}

uint32_t rk_graph_nodes(const rk_graph *g) { return g ? g->n : 0; }

rk_runtime *rk_graph_runtime(const rk_graph *g) { return g ? g->rt : NULL; }

int rk_graph_node(const rk_graph *g, uint32_t node, rk_graph_node_info *out) {
  const graph_node *n;
  if (g == NULL) return RK_EINVAL;
  rk__error_clear(g->rt);
  if (out == NULL || node >= g->n || out->size < sizeof *out)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_node: %s", out == NULL ? "NULL out"
                    : node >= g->n ? "no such node" : "out->size too small (set it to sizeof(rk_graph_node_info))");
  n = &g->node[node];
  memset(out, 0, sizeof *out);
  out->size = sizeof *out;
  out->remote = n->remote;
  out->rank = n->rank;
  out->name = n->remote ? n->rname : n->desc.name;
  out->k2k_capacity = n->k2k_cap;
  out->lanes = n->remote ? 1 : 0;
  if (n->k) {
    out->kernel_id = n->k->id;
    out->lanes = n->k->lanes;
    out->payload_max = rk__payload_max(n->k);
  }
  return RK_OK;
}

rk_ring *rk_graph_remote_ring(rk_graph *g, uint32_t node, uint32_t lane) {
  if (g == NULL || node >= g->n || !g->node[node].remote || g->node[node].k == NULL ||
      lane >= g->node[node].k->lanes)
    return NULL;
  return g->node[node].k->k2k[lane];
}

rk_ring *rk_graph_remote_host_ring(rk_graph *g, uint32_t node, uint32_t lane) {
  if (rk_graph_remote_ring(g, node, lane) == NULL || g->node[node].k->k2k_host == NULL) return NULL;
  return g->node[node].k->k2k_host[lane];
}

int rk_graph_remote_shape(rk_graph *g, uint32_t node, uint32_t lanes, uint32_t payload_max) {
  graph_remote *r;
  int rc;
  if (rk_graph_remote_ring(g, node, 0) == NULL || lanes == 0 || lanes > RK_MAX_LANES) return RK_EINVAL;
  /* its rings are replaced: only before any handler can push into them, or the bridge drain them */
  if (!g->tp_starting)
    return rk__fail(g->rt, RK_ESTATE, "rk_graph_remote_shape: remote node %u: only in the transport's start, during "
                    "rk_graph_launch (the graph is launched and its rings may be in use)", node);
  r = (graph_remote *)g->node[node].k;
  /* before activation: the lanes read lanes, k2k and slot_size only in handlers (the activation
   * orders these writes before them) */
  if ((rc = remote_lanes(r, lanes, g->node[node].k2k_cap)) != RK_OK)
    return rk__fail(g->rt, rc, "remote node %u: cannot create the outbound rings of its %u lanes", node, lanes);
  /* (not payload_max + RK_ENVELOPE_SIZE + RK_RING_MSG_OFFSET < slot: a payload_max near 2^32 would
   * wrap it to a tiny slot) */
  if (payload_max < RK_RING_MSG_MAX(r->slot) - RK_ENVELOPE_SIZE)
    r->k.slot_size = payload_max + RK_ENVELOPE_SIZE + RK_RING_MSG_OFFSET; /* rk__payload_max: payload_max */
  return RK_OK;
}

int rk_graph_remote_close(rk_graph *g, uint32_t node) {
  uint32_t i;
  uint64_t held = 0;
  if (rk_graph_remote_ring(g, node, 0) == NULL) return RK_EINVAL;
  remote_close(g, node);
  for (i = 0; i < g->node[node].k->lanes; i++) {
    held += rk_ring_count(g->node[node].k->k2k[i]);
    if (g->node[node].k->k2k_host) held += rk_ring_count(g->node[node].k->k2k_host[i]);
  }
  return (int)held;
}

int rk_graph_deliver(rk_graph *g, uint32_t node, uint32_t lane, const rk_envelope *e, const void *payload) {
  rk_kernel *k;
  if (g == NULL || e == NULL || node >= g->n || g->node[node].remote || (k = g->node[node].k) == NULL ||
      (payload == NULL && e->payload_len > 0))
    return RK_EINVAL;
  return rk__k2k_push(k, lane % k->lanes, e, payload, e->payload_len);
}

int rk_graph_refuse(rk_graph *g, uint32_t node, uint32_t lane, const rk_envelope *e, const void *payload, int code,
                    const char *why) {
  rk_kernel *k;
  if (g == NULL || e == NULL || node >= g->n || g->node[node].remote || (k = g->node[node].k) == NULL) return RK_EINVAL;
  rk__dead_letter(k, e, e->payload_len ? payload : NULL, code, why ? why : "refused by the transport", lane % k->lanes);
  return RK_OK;
}

int rk_graph_answer_error(rk_graph *g, uint32_t from_id, const rk_envelope *e, int code) {
  rk_kernel *origin;
  rk_envelope a;
  int32_t c = code < 0 ? code : RK_EINVAL;
  if (g == NULL || e == NULL) return RK_EINVAL;
  /* only a message that continues a request wants an answer (as handle_one's error_reply) */
  if (!(e->flags & RK_ENV_F_K2K) || (e->flags & (RK_ENV_F_REPLY | RK_ENV_F_NO_REPLY)) || e->origin == 0) return RK_OK;
  if ((origin = rk__graph_kernel(g, e->origin)) == NULL) return RK_EINVAL;
  rk_envelope_init(&a, e->type ? e->type : 1u, sizeof c, (uint16_t)(RK_ENV_F_K2K | RK_ENV_F_REPLY | RK_ENV_F_ERROR));
  a.src = from_id;
  a.dst = origin->id;
  a.node = from_id;
  a.origin = origin->id;
  a.correlation_id = e->correlation_id;
  a.lane = e->lane;
  a.priority = e->priority;
  (void)rk_clock_tick(rk_runtime_clock(g->rt), &a.hlc);
  return rk__k2k_push(origin, e->lane % origin->lanes, &a, &c, sizeof c);
}

/* The wait edge of one lane, for a transport's deadlock detection across processes (remote.h;
 * docs/mpi.md, "Cycles across ranks"): the words the local checks follow (a CPU lane's waits_on,
 * a device lane's k2k_waits_on) and its progress counters, all read relaxed: statistics and hints,
 * which the transport confirms by reading them again later (no progress in between), as the local
 * checks do. Any thread while the graph is launched (its kernels and stand-ins live until the
 * transport's stop, which rk_graph_destroy calls first). */
int rk_graph_lane_wait(rk_graph *g, uint32_t node, uint32_t lane, rk_graph_wait *out) {
  rk_kernel *k;
  rk__lane *l;
  rk_lifecycle s;
  const rk_lane_status *st;
  uint32_t j;
  if (g == NULL) return RK_EINVAL;
  if (out == NULL || out->size < sizeof *out)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_lane_wait: out is NULL or out->size below sizeof(rk_graph_wait)");
  if (!g->launched || node >= g->n || g->node[node].remote || (k = g->node[node].k) == NULL)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_lane_wait: node %u is not a local kernel of a launched graph", node);
  if (lane >= k->lanes)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_lane_wait: kernel %s has %u lanes, not lane %u", k->name, k->lanes,
                    lane);
  memset(out, 0, sizeof *out);
  out->size = sizeof *out;
  l = &k->lane[lane];
  st = l->status;
  out->progress = rk_load_relaxed_sys_u64(&st->msgs_in) + rk_load_relaxed_sys_u64(&st->msgs_out) +
                  rk_load_relaxed_sys_u64(&st->k2k_in) + rk_load_relaxed_sys_u64(&st->k2k_out);
  /* A kernel faulted for a deadlock keeps its lanes retrying (the checks fault, terminate aborts):
   * still on the cycle, so the other kernels of a cycle across ranks learn it too. Any other fault,
   * or a kernel not running: no edge. Acquire (hstate, fault_code): pair with the host's release
   * stores of a state and of a fault (kernel.c). */
  s = (rk_lifecycle)rk_load_acquire_sys_u32(&k->hstate);
  if (rk__kernel_faulted(k) && __atomic_load_n(&k->fault_code, __ATOMIC_ACQUIRE) != RK_EDEADLK) return RK_OK;
  if (s != RK_STATE_ACTIVE && s != RK_STATE_TERMINATING) return RK_OK; /* its lanes take nothing: no edge */
  if (k->dev_graph) { /* a device lane: (node + 1) << 16 | lane, 0 when it does not retry */
    uint32_t w = rk_load_relaxed_sys_u32(&st->k2k_waits_on);
    if (w == 0 || (w >> 16) - 1 >= g->n || g->node[(w >> 16) - 1].k == NULL ||
        (w & 0xffffu) >= g->node[(w >> 16) - 1].k->lanes)
      return RK_OK;
    out->to_node = (w >> 16) - 1;
    out->to_lane = w & 0xffffu;
    out->waiting = 1;
    return RK_OK;
  }
  {
    /* relaxed: a hint, as in cpu_backend.c's k2k_deadlocked (the lane publishes it while it retries) */
    rk__lane *x = __atomic_load_n(&l->waits_on, __ATOMIC_RELAXED);
    if (x == NULL) return RK_OK;
    for (j = 0; j < g->n; j++)
      if (g->node[j].k == x->k && x->index < x->k->lanes) {
        out->to_node = j;
        out->to_lane = x->index;
        out->waiting = 1;
        break;
      }
  }
  return RK_OK;
}

int rk_graph_fault_deadlock(rk_graph *g, uint32_t node, const char *cycle) {
  rk_kernel *k;
  if (g == NULL) return RK_EINVAL;
  if (cycle == NULL) return rk__fail(g->rt, RK_EINVAL, "rk_graph_fault_deadlock: cycle is NULL");
  if (!g->launched || node >= g->n || g->node[node].remote || (k = g->node[node].k) == NULL)
    return rk__fail(g->rt, RK_EINVAL, "rk_graph_fault_deadlock: node %u is not a local kernel of a launched graph",
                    node);
  /* The state is checked and the fault recorded under fault_lock: a terminate finishing between
   * a check here and the fault would leave the terminated kernel FAULTED (FAULTED already: said once) */
  if (!rk__kernel_fault_if_running(k, RK_EDEADLK,
                                   "K2K deadlock across ranks: a cycle of lanes each waiting for room in the next "
                                   "one's full K2K inbox or route (%s); give the cycle's inboxes room for the "
                                   "messages it holds", cycle))
    return rk__fail(g->rt, RK_ESTATE, "rk_graph_fault_deadlock: kernel %s is not running (active or terminating), "
                    "or it is faulted already", k->name);
  return RK_OK;
}

int rk_transport_fail(rk_graph *g, int code, const char *fmt, ...) {
  char msg[RK__LOG_LINE];
  va_list ap;
  if (g == NULL || fmt == NULL) return code;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return rk__fail(g->rt, code, "%s", msg);
}

void rk_transport_log(rk_graph *g, rk_log_level level, const char *fmt, ...) {
  char msg[RK__LOG_LINE];
  va_list ap;
  if (g == NULL || fmt == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  rk__log(g->rt, level, "%s", msg);
}

/* ---------------------------------------- device K2K deadlock -------------------------------- */

/* A device lane that retries a message because a K2K inbox is full says which one in its status
 * line (k2k_waits_on: node + 1 << 16 | lane, persistent.cuh); the watchdog follows those words from
 * each lane of k. A chain that comes back to where it started is a cycle of lanes each waiting for
 * room the next one would make only by taking a message; with no progress on the chain (messages
 * taken, sent or answered) for RK_DEV_K2K_DEADLOCK_NS the kernel faults with RK_EDEADLK, naming
 * the cycle, as the CPU lanes do (cpu_backend.c) — never a silent hang. Relaxed loads: statistics
 * and hints, confirmed over time. Watchdog thread only (dl_* fields). */
#define RK_DEV_K2K_DEADLOCK_NS 100000000ull

static uint64_t dev_lane_progress(const rk__lane *l) {
  const rk_lane_status *st = l->status;
  return rk_load_relaxed_sys_u64(&st->msgs_in) + rk_load_relaxed_sys_u64(&st->msgs_out) +
         rk_load_relaxed_sys_u64(&st->k2k_in) + rk_load_relaxed_sys_u64(&st->k2k_out);
}

/* A kernel whose lanes run and take messages: a lane that left keeps its last k2k_waits_on. */
static int dev_running(rk_kernel *k) {
  rk_lifecycle s = rk_kernel_state(k);
  return s == RK_STATE_ACTIVE || s == RK_STATE_TERMINATING;
}

int rk__graph_dev_deadlock(rk_kernel *k) {
  rk_graph *g = k->graph; /* (k is held by the watchdog's reference: g outlives it) */
  rk__lane **chain;
  uint32_t i;
  int rc = 0;
  if (g == NULL || !dev_running(k)) return 0;
  if (uv_rwlock_tryrdlock(&g->watch_lock) != 0) return 0; /* being launched or torn down: next time */
  if (!g->watch) {
    uv_rwlock_rdunlock(&g->watch_lock);
    return 0;
  }
  /* a cycle visits each lane of the graph at most once (capped at RK_GRAPH_MAX_KERNELS, a cycle
   * through many lanes of a few kernels went unseen): on the heap, a watchdog pass's path */
  chain = (rk__lane **)malloc((size_t)RK_GRAPH_MAX_KERNELS * RK_MAX_LANES * sizeof *chain);
  if (chain == NULL) {
    uv_rwlock_rdunlock(&g->watch_lock);
    return 0; /* (no memory: the next pass) */
  }
  for (i = 0; i < k->lanes && rc == 0; i++) {
    rk__lane *start = &k->lane[i], *x = start;
    uint64_t progress = 0, now;
    uint32_t n = 0, j;
    int cycle = 0;
    for (;;) {
      uint32_t w = rk_load_relaxed_sys_u32(&x->status->k2k_waits_on), node, lane;
      rk_kernel *nk;
      if (w == 0 || n == (uint32_t)RK_GRAPH_MAX_KERNELS * RK_MAX_LANES) break;
      chain[n++] = x;
      progress += dev_lane_progress(x);
      node = (w >> 16) - 1;
      lane = w & 0xffffu;
      if (node >= g->n || (nk = g->node[node].k) == NULL || g->node[node].remote || lane >= nk->lanes ||
          !dev_running(nk))
        break;
      x = &nk->lane[lane];
      if (x == start) {
        cycle = 1;
        break;
      }
      for (j = 1; j < n; j++) /* a cycle that start only leads into: its own lanes will say */
        if (chain[j] == x) break;
      if (j < n) break;
    }
    if (!cycle) {
      start->dl_since_ns = 0;
      continue;
    }
    now = rk__now_ns();
    if (start->dl_since_ns == 0 || start->dl_progress != progress) { /* first seen, or it moved */
      start->dl_since_ns = now;
      start->dl_progress = progress;
      continue;
    }
    if (now - start->dl_since_ns >= RK_DEV_K2K_DEADLOCK_NS) {
      char why[256];
      size_t off = 0;
      for (j = 0; j <= n && off + 1 < sizeof why; j++) {
        int w = snprintf(why + off, sizeof why - off, "%s%s lane %u", j ? " -> " : "", chain[j % n]->k->name,
                         chain[j % n]->index);
        if (w < 0) break;
        off += (size_t)w;
      }
      /* checked and recorded under fault_lock: a terminate finishing since dev_running leaves no fault */
      rc = rk__kernel_fault_if_running(k, RK_EDEADLK, "K2K deadlock on the device: a cycle of lanes each waiting for "
                                       "room in the next one's full K2K inbox (%s); give the cycle's inboxes room for "
                                       "the messages it holds", why);
      if (rc == 0) break; /* not running (or faulted already): nothing more to say */
    }
  }
  uv_rwlock_rdunlock(&g->watch_lock);
  free(chain);
  return rc;
}
