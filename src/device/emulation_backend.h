/* device/emulation_backend.h — the emulated device that the test suite (test_devemu,
 * test_cuda_host) and rk-bench (devmodel) drive: the device lane loop (src/device/persistent.cuh)
 * and the built-in handlers compiled as host C++ (src/device/emulation_lanes.cpp,
 * src/device/emulation.h), one host thread per block (each running the block's threads), launch
 * parameters built by the CUDA backend's own code (rk__dev_geometry, rk__dev_params_fill),
 * ordinary memory standing for the mapped arena (a device address is the host address) and for
 * device memory (the state, then the kernel clock word). Host C only, header-only; include after
 * device/params.h and host/internal.h; link librk.a and rk_devemu. Never part of librk. */
#ifndef RK_DEVICE_EMULATION_BACKEND_H
#define RK_DEVICE_EMULATION_BACKEND_H

#include <stdlib.h>
#include <string.h>

#include "device/emulation_model.h"

typedef void (*rk_emu_entry_fn)(const rk_dev_params *);
rk_emu_entry_fn rk_emu_entry(const char *name);
void rk_emu_run_lane(rk_emu_entry_fn entry, const rk_dev_params *p, uint32_t lane, uint32_t threads, uint8_t *smem);

typedef struct emu_device emu_device;

/* One block: a host thread running the lane loop for lane `lane`. */
typedef struct emu_block {
  emu_device *dev;
  uint32_t lane;
  uint8_t *smem; /* its dynamic shared memory */
  uv_thread_t thread;
} emu_block;

/* One launched kernel's device side. */
struct emu_device {
  rk_emu_entry_fn entry;
  rk_dev_params params; /* "mapped memory": written before the blocks start, never again */
  uint8_t *devmem;      /* "device memory": the state, then the kernel clock word */
  size_t smem;          /* dynamic shared memory per block */
  uint32_t lanes, threads, started;
  emu_block block[RK_MAX_LANES];
};

static inline void *emu_same_address(void *ctx, void *host) {
  (void)ctx;
  return host;
}

/* Set up what a launch of k would put on the device (nothing runs yet). RK_ENOTSUP when k's
 * cuda_entry has no emulated stand-in; the geometry's error when the slots do not fit;
 * RK_ENOMEM. */
static inline int emu_device_prepare(emu_device *d, rk_kernel *k) {
  uint32_t batch;
  int rc;
  memset(d, 0, sizeof *d);
  if ((d->entry = rk_emu_entry(k->desc.cuda_entry)) == NULL)
    return rk__fail(k->rt, RK_ENOTSUP, "kernel %s: no emulated device entry", k->name);
  if ((rc = rk__dev_geometry(k, &batch, &d->smem)) != RK_OK) return rc;
  d->devmem = (uint8_t *)rk__cpu_backend.alloc(k->rt, rk__dev_devmem_bytes(k));
  if (d->devmem == NULL) return RK_ENOMEM;
  if (k->desc.state_size && k->state) memcpy(d->devmem, k->state, k->desc.state_size);
  memcpy(d->devmem + rk__dev_devmem_bytes(k) - 128, &k->dev_clock, sizeof k->dev_clock); /* as the CUDA backend */
  rk__dev_params_fill(k, &d->params, emu_same_address, NULL, d->devmem, batch);
  d->lanes = k->lanes;
  d->threads = k->threads;
  return RK_OK;
}

static void emu_block_main(void *arg) {
  emu_block *b = (emu_block *)arg;
  rk_emu_run_lane(b->dev->entry, &b->dev->params, b->lane, b->dev->threads, b->smem);
}

/* Start every block (the GPU scheduling them). RK_ENOMEM / RK_ESYS: the blocks started so far run
 * (emu_device_join takes them down once they exit). */
static inline int emu_device_start(emu_device *d) {
  uint32_t i;
  for (i = 0; i < d->lanes; i++) {
    emu_block *b = &d->block[i];
    b->dev = d;
    b->lane = i;
    b->smem = (uint8_t *)rk__cpu_backend.alloc(NULL, d->smem);
    if (b->smem == NULL) return RK_ENOMEM;
    memset(b->smem, 0xa5, d->smem); /* a GPU's shared memory starts undefined, not zeroed */
    if (uv_thread_create(&b->thread, emu_block_main, b) != 0) {
      rk__cpu_backend.free(NULL, b->smem, 0);
      return RK_ESYS;
    }
    d->started++;
  }
  return RK_OK;
}

/* Wait for the started blocks to exit and free their shared memory. */
static inline void emu_device_join(emu_device *d) {
  uint32_t i;
  for (i = 0; i < d->started; i++) {
    uv_thread_join(&d->block[i].thread);
    rk__cpu_backend.free(NULL, d->block[i].smem, 0);
  }
  d->started = 0;
}

/* After emu_device_join: the state and the kernel clock word back to the host (as the CUDA
 * backend's join), so a restart goes on from them. */
static inline void emu_device_copy_back(emu_device *d, rk_kernel *k) {
  if (k->desc.state_size && k->state) memcpy(k->state, d->devmem, k->desc.state_size);
  memcpy(&k->dev_clock, d->devmem + rk__dev_devmem_bytes(k) - 128, sizeof k->dev_clock);
}

/* Give the device memory back (after emu_device_join). */
static inline void emu_device_release(emu_device *d) {
  rk__cpu_backend.free(NULL, d->devmem, 0);
  d->devmem = NULL;
}

/* "Device memory" for K2K (graph.c): the CPU backend's zeroed, line-aligned memory; a device
 * address is the host address. */
static inline int emu_dev_alloc(rk_runtime *rt, size_t n, uint64_t *addr) {
  void *p = rk__cpu_backend.alloc(rt, n);
  if (p == NULL) return RK_ENOMEM;
  *addr = (uint64_t)(uintptr_t)p;
  return RK_OK;
}
static inline void emu_dev_free(rk_runtime *rt, uint64_t addr, size_t n) {
  rk__cpu_backend.free(rt, (void *)(uintptr_t)addr, n);
}
static inline int emu_dev_write(rk_runtime *rt, uint64_t addr, const void *src, size_t n) {
  (void)rt;
  memcpy((void *)(uintptr_t)addr, src, n);
  return RK_OK;
}
static inline int emu_dev_store64(rk_runtime *rt, uint64_t addr, uint64_t v) {
  (void)rt;
  __atomic_store_n((uint64_t *)(uintptr_t)addr, v, __ATOMIC_RELAXED); /* a flag; orders nothing */
  return RK_OK;
}
static inline int emu_dev_load64(rk_runtime *rt, uint64_t addr, uint64_t *v) {
  (void)rt;
  *v = __atomic_load_n((uint64_t *)(uintptr_t)addr, __ATOMIC_RELAXED); /* statistics */
  return RK_OK;
}

/* Two emulated devices (two runtimes with different rk_runtime_options.device): whether the lanes
 * of one may address the other's device memory, as cudaDeviceCanAccessPeer would say. Tests set
 * it (1: peer routes in the destination's device memory; 0: staged through mapped host memory).
 * On the emulated device all of it is host memory; what changes is where graph.c places a route's
 * inboxes and which fences the lanes issue (RK_DEV_K2K_SYS). */
static int emu_peer_access = 1;
static inline int emu_dev_peer(rk_runtime *from, rk_runtime *to) {
  (void)from;
  (void)to;
  return emu_peer_access;
}
static inline uint64_t emu_dev_mapped(rk_runtime *rt, const void *host) {
  (void)rt;
  return (uint64_t)(uintptr_t)host;
}

/* rt's kernels run with ops, filled by emu_backend_install (for a program that installs the same
 * backend in many runtimes, some perhaps still running: the table is written once). */
static inline void emu_backend_use(rk_runtime *rt, const rk_backend_ops *ops) {
  rt->ops = ops;
  rt->backend = RK_BACKEND_CUDA;
}

/* Make rt's kernels run on the emulated device: *ops becomes the CPU backend's (its allocator:
 * ordinary, zeroed, line-aligned memory stands for the mapped arena) with the given start and
 * join, and lanes that stamp with their own clock plus the measured offset, as on a GPU; rt is
 * told its backend is CUDA, so the rings it creates for kernels carry RK_RING_F_NO_WAKE. Undo with
 * emu_backend_uninstall before rk_runtime_destroy (there is no CUDA to shut down). */
static inline void emu_backend_install(rk_runtime *rt, rk_backend_ops *ops, int (*start)(rk_kernel *),
                                       int (*join)(rk_kernel *)) {
  *ops = rk__cpu_backend;
  ops->name = "cuda-emulated";
  ops->start = start;
  ops->join = join;
  ops->lane_clock_offset = 1;
  ops->abandon = NULL;   /* the CPU backend's reclaims CPU lane threads, which these lanes are not */
  ops->restartable = 1;  /* as the CUDA backend */
  ops->dev_alloc = emu_dev_alloc;
  ops->dev_free = emu_dev_free;
  ops->dev_write = emu_dev_write;
  ops->dev_store64 = emu_dev_store64;
  ops->dev_load64 = emu_dev_load64;
  ops->dev_peer = emu_dev_peer;
  ops->dev_mapped = emu_dev_mapped;
  emu_backend_use(rt, ops);
}

static inline void emu_backend_uninstall(rk_runtime *rt) { rt->backend = RK_BACKEND_CPU; }

/* The simplest emulated backend: start runs the blocks, join waits for them. For programs that
 * need nothing more (test_devemu, rk-bench devmodel). */
static inline int emu_simple_start(rk_kernel *k) {
  emu_device *d = (emu_device *)calloc(1, sizeof *d);
  int rc;
  if (d == NULL) return RK_ENOMEM;
  if ((rc = emu_device_prepare(d, k)) != RK_OK) {
    free(d);
    return rc;
  }
  k->backend_data = d;
  return emu_device_start(d); /* on failure the kernel is aborted and joined */
}

static inline int emu_simple_join(rk_kernel *k) {
  emu_device *d = (emu_device *)k->backend_data;
  if (d == NULL) return RK_OK;
  emu_device_join(d);
  emu_device_copy_back(d, k);
  emu_device_release(d);
  free(d);
  k->backend_data = NULL;
  return RK_OK;
}

#endif /* RK_DEVICE_EMULATION_BACKEND_H */
