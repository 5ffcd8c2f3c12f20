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
} rk_dev_params;

RK_STATIC_ASSERT(sizeof(rk_dev_params) == 104, "rk_dev_params layout");

/* Most threads a lane (a block) may have: kernel.c refuses more; the entry points are compiled for
 * it (__launch_bounds__ in persistent.cuh). */
#define RK_DEV_MAX_THREADS 1024u

/* Most slots a lane takes per inbox access (rk_dev_params.batch is at most this): the lane reads
 * that many sequence words at once, in registers. */
#define RK_DEV_MAX_BATCH 8u

/* Static shared memory the lane loop itself declares (its state and a copy of these parameters),
 * at most; persistent.cuh asserts it. Static plus dynamic shared memory must fit the 48 KiB a block
 * gets without an opt-in attribute, so the host budgets the dynamic part with this subtracted. */
#define RK_DEV_STATIC_SMEM 1024u
/* Shared memory a block gets without cudaFuncSetAttribute (which may synchronise: not used). */
#define RK_DEV_SMEM_LIMIT (48u << 10)

/* Dynamic shared memory a lane needs: the batch copy of its slots, as many slots to stage replies
 * in (a reply is built in shared memory and written out as whole lines), then the scratch. */
RK_INLINE RK_HD size_t rk_dev_smem_size(uint32_t batch, uint32_t slot_size, uint32_t scratch_size) {
  return (size_t)2 * batch * slot_size + ((scratch_size + 15u) & ~15u);
}

#endif
