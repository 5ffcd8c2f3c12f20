/* device/params.h — what the host hands a persistent kernel at launch (one POD, shared by the
 * host half of the CUDA backend and the device loop; compiled by cc, nvcc and NVRTC).
 *
 * Every pointer is a device address: rings and the control block in pinned host-mapped memory
 * (cudaHostGetDevicePointer), state and the kernel clock in device memory. Rings of lane i live at
 * base + i * stride. */
#ifndef RK_DEVICE_PARAMS_H
#define RK_DEVICE_PARAMS_H

#include "ringkernel/common.h"
#include "ringkernel/control.h"
#include "ringkernel/ring.h"

/* One entry of the runtime's buffer table (ringkernel/buffer.h) as the lanes read it: device memory
 * on CUDA (written by the runtime's copy stream before the buffer's handle is returned), host
 * memory on the CPU backend and the emulated device. 64-bit words only: the lanes read them with
 * relaxed device-scope loads (L2 on a GPU, never a stale L1 line). */
typedef struct rk_dev_buffer {
  uint64_t addr;     /* the lanes' address of the buffer's first byte */
  uint64_t size;     /* bytes */
  uint64_t gen;      /* the slot's generation << 1, | 1 while the buffer is allocated */
  uint64_t reserved;
} rk_dev_buffer;

/* One kernel of a graph as the lanes of the graph's kernels see it (graph.c writes the table before
 * the first of them is launched; afterwards only `closed` (the host) and `dropped` (the lanes)
 * change): where its K2K inboxes are, and what it may send to. Device memory on CUDA, host memory
 * on the emulated device; 128 bytes. Lane i's K2K inbox (an MPSC rk_ring) is at
 * k2k_base + i * k2k_stride: device memory for a local kernel; for a remote (MPI) node, its
 * outbound rings in pinned host-mapped memory, which the host bridge drains (flags has
 * RK_DEV_K2K_SYS; written once the bridge's handshake gave the remote kernel's lanes, before any
 * kernel is activated). */
typedef struct rk_dev_k2k_node {
  uint64_t k2k_base;          /* the lanes' address of lane 0's K2K inbox */
  uint64_t k2k_stride;
  uint64_t topics;            /* bit t: subscribed to topic t */
  volatile uint64_t closed;   /* nonzero: the kernel terminated (written by the host): sends get RK_ECLOSED;
                                 RK_DEV_K2K_CLOSE_GO in a staged node's own device's copy: its lanes may close
                                 their K2K inboxes (persistent.cuh rk_dev_k2k_may_close) */
  volatile uint64_t dropped;  /* topic messages it missed, its inbox full (relaxed device-scope adds) */
  uint32_t kernel_id;
  uint32_t lanes;
  uint32_t slot_size;
  uint32_t nroutes;
  uint32_t flags;             /* RK_DEV_K2K_SYS, RK_DEV_K2K_XWRITERS */
  uint8_t route[16];          /* node (index in the table) at the end of route r */
  uint32_t pad0;
  /* a staged node, in its own device's copy: its lanes ready to close their K2K inbox (each adds 1
   * once, relaxed, device scope; read by the host: rk__k2k_staged_close) */
  volatile uint64_t close_ready;
  /* a graph with a transport (remote.h, the MPI bridge): lane i's transport inbox (an MPSC rk_ring in host-mapped
   * memory, which only host threads claim in: the MPI bridge's deliveries) at x_base + i * x_stride,
   * its last line the word the lane sets to ask the host to close it; 0 otherwise */
  uint64_t x_base;
  uint64_t x_stride;
  /* the K2K inboxes' geometry (every lane's is the same): their capacity - 1 and slot size, which
   * rk_dev_k2k_push takes from here, in the table's device memory, and not from the rings' headers,
   * which may be in host-mapped memory or a peer's (ARCHITECTURE §4: no weak loads there). The slot
   * size is the ring's; slot_size above is the destination's message limit, which a remote kernel's
   * payload limit can make smaller (graph.c remote_entry). */
  uint32_t k2k_mask; /* (32 bits: a K2K capacity is at most 2^20, graph.c add_node; and 64 cost the
                        vector_add lane a spill, test_sass) */
  uint32_t k2k_slot;
  uint8_t pad[16];
} rk_dev_k2k_node;

#define RK_DEV_K2K_XWRITERS 2u /* in the node's own device's copy: its inboxes are in this device's memory and lanes of another device (peer access) write them: its lanes observe them and give their head back at system scope */
#define RK_DEV_K2K_CLOSE_GO 2u /* closed's value that lets a staged node's lanes close (the host's go) */
#define RK_DEV_K2K_SYS 1u /* the node's inboxes are not in this device's memory (host-mapped or a peer's): a publication that touched them fences at system scope */

RK_STATIC_ASSERT(sizeof(rk_dev_k2k_node) == 128, "rk_dev_k2k_node layout");
RK_ASSERT_OFFSET(rk_dev_k2k_node, close_ready, 80);
RK_ASSERT_OFFSET(rk_dev_k2k_node, x_base, 88);

typedef struct rk_dev_params {
  rk_control *ctl;          /* mapped: host line, lane command lines, lane status lines */
  uint8_t *inbox_base;      /* mapped: lane i's MPSC inbox at inbox_base + i * inbox_stride */
  uint8_t *outbox_base;     /* mapped: lane i's SPSC outbox */
  uint64_t inbox_stride;
  uint64_t outbox_stride;
  void *state;              /* device memory, state_size bytes */
  uint64_t *clock;          /* device memory: the kernel's packed HLC word */
  uint64_t max_offset_us;   /* drift bound for received stamps */
  uint64_t state_size;
  uint32_t lanes;
  uint32_t kernel_id;
  uint32_t slot_size;
  uint32_t batch;           /* slots copied to shared memory per inbox access */
  uint32_t scratch_size;    /* bytes of lane scratch after the batch in dynamic shared memory */
  uint32_t nbuffers;        /* entries of the buffer table */
  rk_dev_buffer *buffers;   /* the runtime's buffer table (see rk_dev_buffer) */
  rk_dev_k2k_node *graph;   /* K2K: the graph's table (NULL: the kernel is in no graph) */
  uint32_t graph_n;         /* entries of the table */
  uint32_t graph_node;      /* this kernel's entry */
} rk_dev_params;

RK_STATIC_ASSERT(sizeof(rk_dev_params) == 120, "rk_dev_params layout");

/* Most threads a lane (a block) may have: kernel.c refuses more; the entry points are compiled for
 * it (__launch_bounds__ in persistent.cuh). */
#define RK_DEV_MAX_THREADS 1024u

/* K2K messages a lane writes before its next publication stamps and publishes them (a handler
 * that sends more publishes first: rk_dev_send_collective); also the most subscribers a topic may
 * have on the device (graph.c refuses more at launch). */
#define RK_DEV_K2K_PENDING 16u

/* Most slots a lane takes per inbox access (rk_dev_params.batch is at most this): the lane reads
 * that many sequence words at once, in registers. */
#define RK_DEV_MAX_BATCH 8u

/* Static shared memory the lane loop itself declares (its state and a copy of these parameters),
 * at most; persistent.cuh asserts it. Static plus dynamic shared memory must fit the 48 KiB a block
 * gets without an opt-in attribute, so the host budgets the dynamic part with this subtracted. */
#define RK_DEV_STATIC_SMEM 1536u
/* Shared memory a block gets without cudaFuncSetAttribute (which may synchronise: not used). */
#define RK_DEV_SMEM_LIMIT (48u << 10)

/* Dynamic shared memory a lane needs: the batch copy of its slots, as many slots to stage replies
 * in (a reply is built in shared memory and written out as whole lines), then the scratch. */
RK_INLINE RK_HD size_t rk_dev_smem_size(uint32_t batch, uint32_t slot_size, uint32_t scratch_size) {
  return (size_t)2 * batch * slot_size + ((scratch_size + 15u) & ~15u);
}

#endif
