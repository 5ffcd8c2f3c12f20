/* cuda_backend.c — the host half of the CUDA backend: persistent kernels on mapped-memory rings.
 *
 * ARCHITECTURE §8 is the contract here. A resident kernel turns ordinary CUDA calls into hangs,
 * so: every CUDA call runs on this runtime's own CUDA thread; the pinned (mapped, portable, never
 * write-combined) and device arenas are allocated, and every built-in kernel image force-loaded,
 * at runtime creation, before any persistent launch; afterwards memory is sub-allocated from the
 * arenas (arena.c), and no allocation, free, memset, module load, NULL-stream command or device
 * synchronisation is issued while a ring kernel is resident — an NVRTC image that is not loaded
 * yet is refused with RK_ESTATE then. Kernels run on their own non-blocking streams, nothing is
 * enqueued behind them, exit is detected with cudaStreamQuery, and memory is reused only after the
 * kernel really exited. A sticky CUDA error faults every kernel with RK_ECUDA and its message.
 *
 * Rings and control blocks live in the pinned arena: the host uses its addresses, the device the
 * matching addresses from cudaHostGetDevicePointer (same offset). Kernel state and the kernel
 * clock live in the device arena. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/arena.h"
#include "host/internal.h"

#if defined(RK_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "device/params.h"

#define RK_CUDA_STREAMS 32
#define RK_CUDA_PINNED_DEFAULT (64u << 20)
#define RK_CUDA_DEVICE_DEFAULT (64u << 20)

extern const void *rk__cuda_builtin_entry(const char *name);
extern const char *const rk__cuda_builtin_names[];

typedef struct cuda_kernel {
  struct cuda_kernel *next; /* resident list */
  rk_kernel *k;
  int stream;               /* index into the stream pool */
  const void *func;
  size_t params_off, staging_off, state_off, state_bytes;
  int exited;
} cuda_kernel;

typedef struct rk_cuda {
  int device;
  int cc_major, cc_minor;
  int native_atomics;
  /* the CUDA thread and its one-job mailbox */
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t cond;
  int (*job)(struct rk_cuda *, void *);
  void *job_arg;
  int job_rc, job_done, stop;
  /* arenas (allocated once) */
  uint8_t *pinned_host, *pinned_dev, *dev_base;
  rk_arena pinned, devmem;
  uv_mutex_t arena_lock;
  cudaStream_t streams[RK_CUDA_STREAMS];
  int stream_used[RK_CUDA_STREAMS];
  cuda_kernel *resident;
  int n_resident;
  cudaLibrary_t libs[16];
  int n_libs;
  int sticky; /* cudaError_t of a sticky fault, 0 if none */
  rk_runtime *rt;
} rk_cuda;

static int cuda_fail(rk_runtime *rt, cudaError_t e, const char *what) {
  return rk__fail(rt, RK_ECUDA, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* ---------------------------------------- the CUDA thread ------------------------------------ */

/* Poll resident kernels' streams: exits and sticky errors (between jobs, every 20 ms). */
static void poll_streams(rk_cuda *c) {
  cuda_kernel *ck;
  for (ck = c->resident; ck; ck = ck->next) {
    cudaError_t e;
    if (ck->exited) continue;
    e = cudaStreamQuery(c->streams[ck->stream]);
    if (e == cudaSuccess) {
      ck->exited = 1;
    } else if (e != cudaErrorNotReady && !c->sticky) {
      cuda_kernel *all;
      c->sticky = (int)e;
      for (all = c->resident; all; all = all->next)
        rk__kernel_fault(all->k, RK_ECUDA, "CUDA error: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
  }
}

static void cuda_thread_main(void *arg) {
  rk_cuda *c = (rk_cuda *)arg;
  cudaSetDevice(c->device);
  uv_mutex_lock(&c->lock);
  for (;;) {
    while (c->job == NULL && !c->stop) {
      if (uv_cond_timedwait(&c->cond, &c->lock, 20000000ull) == UV_ETIMEDOUT && c->resident) {
        uv_mutex_unlock(&c->lock);
        poll_streams(c);
        uv_mutex_lock(&c->lock);
      }
    }
    if (c->job) {
      int (*fn)(rk_cuda *, void *) = c->job;
      void *a = c->job_arg;
      uv_mutex_unlock(&c->lock);
      c->job_rc = fn(c, a);
      uv_mutex_lock(&c->lock);
      c->job = NULL;
      c->job_done = 1;
      uv_cond_broadcast(&c->cond);
      continue;
    }
    if (c->stop) break;
  }
  uv_mutex_unlock(&c->lock);
}

/* Run fn on the CUDA thread and wait for it. Jobs are serialised. */
static int cuda_run(rk_cuda *c, int (*fn)(rk_cuda *, void *), void *arg) {
  int rc;
  uv_mutex_lock(&c->lock);
  while (c->job != NULL || c->job_done) uv_cond_wait(&c->cond, &c->lock);
  c->job = fn;
  c->job_arg = arg;
  c->job_done = 0;
  uv_cond_broadcast(&c->cond);
  while (!c->job_done) uv_cond_wait(&c->cond, &c->lock);
  rc = c->job_rc;
  c->job_done = 0;
  uv_cond_broadcast(&c->cond);
  uv_mutex_unlock(&c->lock);
  return rc;
}

/* ---------------------------------------- memory --------------------------------------------- */

static void *cuda_alloc(rk_runtime *rt, size_t n) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  size_t off;
  int rc;
  uv_mutex_lock(&c->arena_lock);
  rc = rk__arena_alloc(&c->pinned, n, &off);
  uv_mutex_unlock(&c->arena_lock);
  if (rc != RK_OK) {
    rk__fail(rt, RK_ENOMEM, "pinned arena exhausted (%zu bytes requested, %zu of %zu used)", n, c->pinned.used,
             c->pinned.size);
    return NULL;
  }
  memset(c->pinned_host + off, 0, n);
  return c->pinned_host + off;
}

static void cuda_free(rk_runtime *rt, void *p, size_t n) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  if (p == NULL) return;
  uv_mutex_lock(&c->arena_lock);
  rk__arena_free(&c->pinned, (size_t)((uint8_t *)p - c->pinned_host), n);
  uv_mutex_unlock(&c->arena_lock);
}

static void *dev_of(rk_cuda *c, const void *host) {
  return c->pinned_dev + ((const uint8_t *)host - c->pinned_host);
}
static void *dev_of_cb(void *c, void *host) { return dev_of((rk_cuda *)c, host); }

/* ---------------------------------------- start / join --------------------------------------- */

static int load_image(rk_cuda *c, rk_kernel *k, const void *image, const char *entry, const void **func) {
  cudaLibrary_t lib;
  cudaKernel_t kern;
  cudaError_t e;
  if (c->n_resident > 0)
    return rk__fail(c->rt, RK_ESTATE,
                    "kernel %s: loading a CUDA image while ring kernels are resident could hang (ARCHITECTURE §8); "
                    "launch kernels with their own images before the others, or after terminating them", k->name);
  if (c->n_libs == (int)(sizeof c->libs / sizeof c->libs[0]))
    return rk__fail(c->rt, RK_ENORESOURCE, "kernel %s: too many CUDA images loaded", k->name);
  e = cudaLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0);
  if (e != cudaSuccess) return cuda_fail(c->rt, e, "cudaLibraryLoadData");
  e = cudaLibraryGetKernel(&kern, lib, entry);
  if (e != cudaSuccess) {
    cudaLibraryUnload(lib);
    return cuda_fail(c->rt, e, "cudaLibraryGetKernel");
  }
  {
    struct cudaFuncAttributes attr;
    e = cudaFuncGetAttributes(&attr, (const void *)kern); /* force the load now */
    if (e != cudaSuccess) {
      cudaLibraryUnload(lib);
      return cuda_fail(c->rt, e, "cudaFuncGetAttributes");
    }
  }
  c->libs[c->n_libs++] = lib;
  *func = (const void *)kern;
  return RK_OK;
}

static int start_job(rk_cuda *c, void *arg) {
  rk_kernel *k = (rk_kernel *)arg;
  cuda_kernel *ck;
  rk_dev_params *p;
  uint32_t batch = 1;
  size_t smem, state_bytes;
  cudaError_t e;
  int rc, i;
  void *args[1];
  void *params_dev;

  if (c->sticky) return rk__fail(c->rt, RK_ECUDA, "a previous CUDA error is sticky: %s", cudaGetErrorString((cudaError_t)c->sticky));
  ck = (cuda_kernel *)calloc(1, sizeof *ck);
  if (ck == NULL) return RK_ENOMEM;
  ck->k = k;
  ck->stream = -1;
  /* the kernel's image */
  if (k->desc.cuda_source) {
    const char *img;
    size_t len;
    char arch[16], log[2048];
    if (!k->desc.cuda_handler) {
      rc = rk__fail(c->rt, RK_EINVAL, "kernel %s: cuda_source without cuda_handler", k->name);
      goto fail;
    }
    snprintf(arch, sizeof arch, "sm_%d%d", c->cc_major, c->cc_minor);
    rc = rk__nvrtc_compile(k->desc.cuda_source, k->desc.cuda_handler, "rk_nvrtc_ring_kernel", arch, 1, &img, &len,
                           log, sizeof log);
    if (rc != RK_OK) {
      rc = rk__fail(c->rt, rc, "kernel %s: NVRTC: %s", k->name, log);
      goto fail;
    }
    if ((rc = load_image(c, k, img, "rk_nvrtc_ring_kernel", &ck->func)) != RK_OK) goto fail;
  } else if (k->desc.cuda_image && k->desc.cuda_entry) {
    if ((rc = load_image(c, k, k->desc.cuda_image, k->desc.cuda_entry, &ck->func)) != RK_OK) goto fail;
  } else if (k->desc.cuda_entry && (ck->func = rk__cuda_builtin_entry(k->desc.cuda_entry)) != NULL) {
    /* built in, loaded at runtime creation */
  } else {
    rc = rk__fail(c->rt, RK_ENOTSUP, "kernel %s has no CUDA image, entry or source", k->name);
    goto fail;
  }
  if ((rc = rk__dev_geometry(k, &batch, &smem)) != RK_OK) goto fail;
  for (i = 0; i < RK_CUDA_STREAMS && c->stream_used[i]; i++) {
  }
  if (i == RK_CUDA_STREAMS) {
    rc = rk__fail(c->rt, RK_ENORESOURCE, "kernel %s: all %d streams in use", k->name, RK_CUDA_STREAMS);
    goto fail;
  }
  ck->stream = i;
  c->stream_used[i] = 1;
  /* state (+ the kernel clock word after it) in device memory, initialised from the host copy */
  state_bytes = rk__dev_devmem_bytes(k);
  uv_mutex_lock(&c->arena_lock);
  rc = rk__arena_alloc(&c->devmem, state_bytes, &ck->state_off);
  if (rc == RK_OK && (rc = rk__arena_alloc(&c->pinned, state_bytes + 128, &ck->staging_off)) != RK_OK)
    rk__arena_free(&c->devmem, ck->state_off, state_bytes);
  uv_mutex_unlock(&c->arena_lock);
  if (rc == RK_OK) ck->state_bytes = state_bytes;
  ck->params_off = ck->staging_off + state_bytes; /* the params follow the staging copy */
  if (rc != RK_OK) {
    rc = rk__fail(c->rt, RK_ENOMEM, "kernel %s: CUDA arenas exhausted", k->name);
    goto fail;
  }
  memset(c->pinned_host + ck->staging_off, 0, state_bytes);
  if (k->desc.state_size && k->state) memcpy(c->pinned_host + ck->staging_off, k->state, k->desc.state_size);
  e = cudaMemcpyAsync(c->dev_base + ck->state_off, c->pinned_host + ck->staging_off, state_bytes,
                      cudaMemcpyHostToDevice, c->streams[ck->stream]);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c->streams[ck->stream]); /* our stream: nothing resident on it */
  if (e != cudaSuccess) {
    rc = cuda_fail(c->rt, e, "copying the initial state");
    goto fail;
  }
  /* launch parameters, in mapped memory */
  p = (rk_dev_params *)(c->pinned_host + ck->params_off);
  rk__dev_params_fill(k, p, dev_of_cb, c, c->dev_base + ck->state_off, batch);
  params_dev = dev_of(c, p);
  args[0] = &params_dev;
  {
    dim3 grid = {k->lanes, 1, 1}, block = {k->threads, 1, 1};
    e = cudaLaunchKernel(ck->func, grid, block, args, smem, c->streams[ck->stream]);
  }
  if (e != cudaSuccess) {
    rc = cuda_fail(c->rt, e, "cudaLaunchKernel");
    goto fail;
  }
  ck->next = c->resident;
  c->resident = ck;
  c->n_resident++;
  k->backend_data = ck;
  return RK_OK;
fail:
  if (ck->stream >= 0) c->stream_used[ck->stream] = 0;
  uv_mutex_lock(&c->arena_lock);
  if (ck->state_bytes) {
    rk__arena_free(&c->devmem, ck->state_off, ck->state_bytes);
    rk__arena_free(&c->pinned, ck->staging_off, ck->state_bytes + 128);
  }
  uv_mutex_unlock(&c->arena_lock);
  free(ck);
  return rc;
}

/* After every lane reported TERMINATED: wait until the stream says the kernel really exited, then
 * give its memory and stream back. A kernel that does not exit keeps its memory (reported). */
static int join_job(rk_cuda *c, void *arg) {
  rk_kernel *k = (rk_kernel *)arg;
  cuda_kernel *ck = (cuda_kernel *)k->backend_data, **pp;
  uint64_t start = rk__now_ns();
  cudaError_t e = cudaErrorNotReady;
  if (ck == NULL) return RK_OK;
  while (!ck->exited && (e = cudaStreamQuery(c->streams[ck->stream])) == cudaErrorNotReady) {
    if (rk__now_ns() - start > 5000000000ull) {
      rk__log(c->rt, RK_LOG_ERROR, "kernel %s: still running 5 s after it reported TERMINATED; memory kept", k->name);
      return RK_ETIMEDOUT;
    }
    rk__sleep_ns(20000);
  }
  if (!ck->exited && e != cudaSuccess && !c->sticky) {
    c->sticky = (int)e;
    rk__kernel_fault(k, RK_ECUDA, "CUDA error: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
  }
  for (pp = &c->resident; *pp; pp = &(*pp)->next)
    if (*pp == ck) {
      *pp = ck->next;
      break;
    }
  c->n_resident--;
  c->stream_used[ck->stream] = 0;
  uv_mutex_lock(&c->arena_lock);
  rk__arena_free(&c->devmem, ck->state_off, ck->state_bytes);
  rk__arena_free(&c->pinned, ck->staging_off, ck->state_bytes + 128);
  uv_mutex_unlock(&c->arena_lock);
  k->backend_data = NULL;
  free(ck);
  return RK_OK;
}

static int cuda_start(rk_kernel *k) { return cuda_run((rk_cuda *)k->rt->backend_data, start_job, k); }

static void cuda_join(rk_kernel *k) { (void)cuda_run((rk_cuda *)k->rt->backend_data, join_job, k); }

/* The device clock (%globaltimer) is calibrated against CLOCK_REALTIME by the shared exchange in
 * kernel.c (rk__clock_sync): at check-in, then periodically from the service loop. */
const rk_backend_ops rk__cuda_backend = {"cuda", cuda_alloc, cuda_free, cuda_start, cuda_join, 1};

/* ---------------------------------------- init / shutdown ------------------------------------ */

typedef struct init_args {
  char *reason;
  size_t len;
  size_t pinned_bytes, device_bytes;
} init_args;

static int init_job(rk_cuda *c, void *arg) {
  init_args *a = (init_args *)arg;
  cudaError_t e;
  int v = 0, i;
  const char *clb = getenv("CUDA_LAUNCH_BLOCKING");
  if (clb && strcmp(clb, "1") == 0) {
    snprintf(a->reason, a->len, "CUDA_LAUNCH_BLOCKING=1 serialises every launch: a resident kernel would block all others");
    return RK_ENOTSUP;
  }
  if ((e = cudaSetDevice(c->device)) != cudaSuccess) {
    snprintf(a->reason, a->len, "cudaSetDevice(%d): %s", c->device, cudaGetErrorString(e));
    return RK_ENODEV;
  }
  cudaDeviceGetAttribute(&v, cudaDevAttrKernelExecTimeout, c->device);
  if (v) {
    snprintf(a->reason, a->len, "device %d has a kernel execution timeout (display watchdog): persistent kernels would be killed", c->device);
    return RK_ENOTSUP;
  }
  cudaDeviceGetAttribute(&v, cudaDevAttrCanMapHostMemory, c->device);
  if (!v) {
    snprintf(a->reason, a->len, "device %d cannot map host memory", c->device);
    return RK_ENOTSUP;
  }
  cudaDeviceGetAttribute(&c->cc_major, cudaDevAttrComputeCapabilityMajor, c->device);
  cudaDeviceGetAttribute(&c->cc_minor, cudaDevAttrComputeCapabilityMinor, c->device);
  cudaDeviceGetAttribute(&c->native_atomics, cudaDevAttrHostNativeAtomicSupported, c->device);
  if (c->cc_major < 7) {
    snprintf(a->reason, a->len, "device %d is compute capability %d.%d; ring kernels need 7.0+ (acquire/release PTX, __nanosleep)",
             c->device, c->cc_major, c->cc_minor);
    return RK_ENOTSUP;
  }
  /* Prepare, then launch: every allocation and image load happens here, once. */
  if ((e = cudaHostAlloc((void **)&c->pinned_host, a->pinned_bytes, cudaHostAllocMapped | cudaHostAllocPortable)) != cudaSuccess ||
      (e = cudaHostGetDevicePointer((void **)&c->pinned_dev, c->pinned_host, 0)) != cudaSuccess ||
      (e = cudaMalloc((void **)&c->dev_base, a->device_bytes)) != cudaSuccess) {
    snprintf(a->reason, a->len, "allocating the CUDA arenas: %s", cudaGetErrorString(e));
    return RK_ENOMEM;
  }
  if (rk__arena_init(&c->pinned, a->pinned_bytes, RK_LINE) != RK_OK || rk__arena_init(&c->devmem, a->device_bytes, RK_LINE) != RK_OK) {
    snprintf(a->reason, a->len, "arena bookkeeping: out of memory");
    return RK_ENOMEM;
  }
  for (i = 0; i < RK_CUDA_STREAMS; i++)
    if ((e = cudaStreamCreateWithFlags(&c->streams[i], cudaStreamNonBlocking)) != cudaSuccess) {
      snprintf(a->reason, a->len, "cudaStreamCreateWithFlags: %s", cudaGetErrorString(e));
      return RK_ECUDA;
    }
  for (i = 0; rk__cuda_builtin_names[i]; i++) {
    struct cudaFuncAttributes attr;
    if ((e = cudaFuncGetAttributes(&attr, rk__cuda_builtin_entry(rk__cuda_builtin_names[i]))) != cudaSuccess) {
      snprintf(a->reason, a->len, "loading the built-in kernel %s: %s (is this GPU's architecture in "
               "CMAKE_CUDA_ARCHITECTURES?)", rk__cuda_builtin_names[i], cudaGetErrorString(e));
      return RK_ECUDA;
    }
  }
  snprintf(a->reason, a->len, "CUDA device %d (compute %d.%d, host-native atomics %s)", c->device, c->cc_major,
           c->cc_minor, c->native_atomics ? "yes" : "no");
  return RK_OK;
}

static int shutdown_job(rk_cuda *c, void *arg) {
  int i;
  (void)arg;
  if (c->n_resident) return RK_ESTATE; /* kernels that never exited: keep their memory */
  for (i = 0; i < c->n_libs; i++) cudaLibraryUnload(c->libs[i]);
  for (i = 0; i < RK_CUDA_STREAMS; i++)
    if (c->streams[i]) cudaStreamDestroy(c->streams[i]);
  if (c->pinned_host) cudaFreeHost(c->pinned_host);
  if (c->dev_base) cudaFree(c->dev_base);
  rk__arena_destroy(&c->pinned);
  rk__arena_destroy(&c->devmem);
  return RK_OK;
}

static void stop_thread(rk_cuda *c) {
  uv_mutex_lock(&c->lock);
  c->stop = 1;
  uv_cond_broadcast(&c->cond);
  uv_mutex_unlock(&c->lock);
  uv_thread_join(&c->thread);
  uv_mutex_destroy(&c->lock);
  uv_cond_destroy(&c->cond);
  uv_mutex_destroy(&c->arena_lock);
}

int rk__cuda_init(rk_runtime *rt, char *reason, size_t len) {
  rk_cuda *c = (rk_cuda *)calloc(1, sizeof *c);
  init_args a;
  int rc;
  if (c == NULL) return RK_ENOMEM;
  c->device = rt->opts.device;
  c->rt = rt;
  uv_mutex_init(&c->lock);
  uv_cond_init(&c->cond);
  uv_mutex_init(&c->arena_lock);
  if (uv_thread_create(&c->thread, cuda_thread_main, c) != 0) {
    uv_mutex_destroy(&c->lock);
    uv_cond_destroy(&c->cond);
    uv_mutex_destroy(&c->arena_lock);
    free(c);
    snprintf(reason, len, "cannot start the CUDA thread");
    return RK_ESYS;
  }
  a.reason = reason;
  a.len = len;
  a.pinned_bytes = RK_CUDA_PINNED_DEFAULT;
  a.device_bytes = RK_CUDA_DEVICE_DEFAULT;
  rc = cuda_run(c, init_job, &a);
  if (rc != RK_OK) {
    (void)cuda_run(c, shutdown_job, NULL);
    stop_thread(c);
    free(c);
    return rc;
  }
  rt->backend_data = c;
  rt->ops = &rk__cuda_backend;
  return RK_OK;
}

void rk__cuda_shutdown(rk_runtime *rt) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  if (c == NULL) return;
  if (cuda_run(c, shutdown_job, NULL) != RK_OK) {
    rk__log(rt, RK_LOG_ERROR, "CUDA backend: kernels still resident at shutdown; device memory kept");
    stop_thread(c);
    return; /* c leaks deliberately: resident kernels may still touch its memory */
  }
  stop_thread(c);
  free(c);
  rt->backend_data = NULL;
}

#else /* !RK_HAVE_CUDA */

int rk__cuda_init(rk_runtime *rt, char *reason, size_t len) {
  (void)rt;
  snprintf(reason, len, "built without CUDA");
  return RK_ENODEV;
}
void rk__cuda_shutdown(rk_runtime *rt) { (void)rt; }

#endif
