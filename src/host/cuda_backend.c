/* cuda_backend.c — the host half of the CUDA backend: persistent kernels on mapped-memory rings.
 *
 * ARCHITECTURE §8 is the contract here. A resident kernel turns ordinary CUDA calls into hangs,
 * so: every CUDA call runs on this runtime's own CUDA thread; the pinned (mapped, portable, never
 * write-combined) and device arenas are allocated, and every built-in kernel image force-loaded,
 * at runtime creation, before any persistent launch; afterwards memory is sub-allocated from the
 * arenas (arena.c), and no allocation, free, memset, module load, NULL-stream command or device
 * synchronisation is issued while a ring kernel is resident on the device — in any runtime of the
 * process, since they all share the device's primary context (the process-wide device use below).
 * A CUDA image (NVRTC or the application's) is loaded once and cached for the runtime's life;
 * a new one is refused with RK_ESTATE while ring kernels are resident. Kernels run on their own
 * non-blocking streams, nothing is enqueued behind them, exit is detected with cudaStreamQuery,
 * and memory is reused only after the kernel really exited: a kernel whose exit cannot be
 * confirmed becomes a zombie that keeps its stream and memory until its stream says it is done.
 * A sticky CUDA error faults every kernel with RK_ECUDA and its message.
 *
 * Rings and control blocks live in the pinned arena: the host uses its addresses, the device the
 * matching addresses from cudaHostGetDevicePointer (same offset). Kernel state and the kernel
 * clock live in the device arena. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/arena.h"
#include "host/internal.h"

/* ---------------------------------------- process-wide device use ---------------------------- */
/* Compiled with or without CUDA (tests/test_cuda_host.c runs it everywhere). Two counters per
 * device: ring kernels resident (launched, exit not yet confirmed) in any runtime of the process,
 * and runtimes preparing (allocating, freeing, loading modules) on the device. Each side enters
 * with a seq_cst RMW of its own counter followed by a seq_cst load of the other's: a Dekker pair,
 * so of two racing entries at least one sees the other (seq_cst's single total order). A preparer
 * that sees resident kernels backs out and refuses; a launcher that sees preparers waits for them
 * to finish (a preparation is short, and no new one starts while its count is raised). Exits are
 * release RMWs: the CUDA calls made inside happen before the other side's seq_cst (acquire)
 * load that reads the lowered count. */
typedef struct device_use {
  uint32_t resident;  /* atomics: see above */
  uint32_t preparing; /* atomics: see above */
} device_use;

static device_use g_device_use[RK__MAX_DEVICES];

int rk__device_prepare_enter(int device, uint32_t *resident) {
  device_use *u;
  uint32_t n;
  if (device < 0 || device >= RK__MAX_DEVICES) return RK_EINVAL;
  u = &g_device_use[device];
  (void)__atomic_add_fetch(&u->preparing, 1, __ATOMIC_SEQ_CST); /* Dekker: own count, then theirs */
  n = __atomic_load_n(&u->resident, __ATOMIC_SEQ_CST);
  if (resident) *resident = n;
  if (n != 0) {
    (void)__atomic_sub_fetch(&u->preparing, 1, __ATOMIC_RELEASE); /* backed out: nothing done */
    return RK_ESTATE;
  }
  return RK_OK;
}

void rk__device_prepare_exit(int device) {
  if (device < 0 || device >= RK__MAX_DEVICES) return;
  /* release: the preparation's calls happen before a launcher's load that sees the count drop */
  (void)__atomic_sub_fetch(&g_device_use[device].preparing, 1, __ATOMIC_RELEASE);
}

int rk__device_resident_enter(int device, uint64_t timeout_ns) {
  device_use *u;
  uint64_t start;
  if (device < 0 || device >= RK__MAX_DEVICES) return RK_EINVAL;
  u = &g_device_use[device];
  (void)__atomic_add_fetch(&u->resident, 1, __ATOMIC_SEQ_CST); /* Dekker: own count, then theirs */
  start = rk__now_ns();
  while (__atomic_load_n(&u->preparing, __ATOMIC_SEQ_CST) != 0) {
    if (rk__now_ns() - start >= timeout_ns) {
      (void)__atomic_sub_fetch(&u->resident, 1, __ATOMIC_RELEASE); /* backed out: nothing launched */
      return RK_ETIMEDOUT;
    }
    rk__sleep_ns(50000);
  }
  return RK_OK;
}

void rk__device_resident_exit(int device) {
  if (device < 0 || device >= RK__MAX_DEVICES) return;
  /* release: the kernel's exit (observed by cudaStreamQuery) happens before a preparer's load */
  (void)__atomic_sub_fetch(&g_device_use[device].resident, 1, __ATOMIC_RELEASE);
}

uint32_t rk__device_resident(int device) {
  if (device < 0 || device >= RK__MAX_DEVICES) return 0;
  return __atomic_load_n(&g_device_use[device].resident, __ATOMIC_ACQUIRE); /* a snapshot, for messages */
}

#if defined(RK_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "device/params.h"

#define RK_CUDA_STREAMS 32
#define RK_CUDA_PINNED_DEFAULT (64u << 20)
#define RK_CUDA_DEVICE_DEFAULT (64u << 20)
#define RK_CUDA_LIBRARIES 32        /* distinct CUDA images loaded by one runtime */
#define RK_CUDA_KERNELS 64          /* (image, entry) pairs resolved by one runtime */
#define RK_CUDA_JOIN_NS 5000000000ull /* how long join waits for the stream to say "exited" */
#define RK_CUDA_COPY_NS 5000000000ull /* how long the initial state copy may take */
#define RK_CUDA_PREPARE_WAIT_NS 5000000000ull /* a launch waits this long for preparations */
/* Per-thread stack (local memory) reserved while preparing. A launch whose kernel needs more than
 * the context has reserved makes the driver grow it, and growing "blocks until all preceding
 * requested tasks are complete" (cuCtxSetLimit): with a ring kernel resident, never. So the limit
 * is set before anything is resident and an image that needs more is refused (the lane loop needs
 * none: tests/test_sass.py). 2 KiB is the default 1 KiB's double: room for handlers' frames. */
#define RK_CUDA_STACK_BYTES 2048u
#define RK_CUDA_CC_MAJOR 7          /* compute capability floor: 7.5 (CUDA 13 has no sm_70) */
#define RK_CUDA_CC_MINOR 5

extern const void *rk__cuda_builtin_entry(const char *name);
extern const char *const rk__cuda_builtin_names[];

typedef struct cuda_kernel {
  struct cuda_kernel *next; /* resident list */
  /* NULL once the kernel is a zombie: its join did not see it exit, the rk_kernel is gone, and
   * only poll_streams still looks after it (never dereferenced again) */
  rk_kernel *k;
  int stream;               /* index into the stream pool */
  const void *func;
  size_t params_off, staging_off, state_off, state_bytes;
  int exited;
} cuda_kernel;

/* A loaded CUDA image (cudaLibraryLoadData) and the kernels resolved in it. Images stay loaded
 * for the runtime's life: NVRTC's cache returns the same image pointer for the same source,
 * options and architecture, and an application's image must stay valid and unchanged while the
 * runtime lives (docs/cuda-backend.md). */
typedef struct cuda_library {
  const void *image;
  cudaLibrary_t lib;
} cuda_library;

typedef struct cuda_entry {
  const void *image;
  char *entry;
  cudaKernel_t kernel;
} cuda_entry;

typedef struct rk_cuda {
  int device;
  int cc_major, cc_minor;
  int native_atomics;
  int sm_count;
  /* the CUDA thread and its one-job mailbox */
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t cond;
  int (*job)(struct rk_cuda *, void *);
  void *job_arg;
  rk__error *job_err; /* the caller's last-error record: a job's failures are the caller's */
  int job_rc, job_done, stop;
  /* The runtime is gone but kernels still hold what this backend owns: the CUDA thread, detached,
   * reaps (poll_streams) and frees everything once that is safe (reap). Set by a job: read and
   * written by the CUDA thread only, like rt, which is NULL then. */
  int reaping;
  /* arenas (allocated once) */
  uint8_t *pinned_host, *pinned_dev, *dev_base;
  rk_arena pinned, devmem;
  int arenas_ready;
  uv_mutex_t arena_lock;
  cudaStream_t streams[RK_CUDA_STREAMS];
  int stream_used[RK_CUDA_STREAMS];
  cuda_kernel *resident; /* launched kernels and zombies, until their stream says they exited */
  int n_resident;
  cuda_library libs[RK_CUDA_LIBRARIES];
  int n_libs;
  cuda_entry entries[RK_CUDA_KERNELS];
  int n_entries;
  int sticky; /* cudaError_t of a sticky fault, 0 if none */
  size_t stack_bytes; /* the context's per-thread stack limit, set while preparing */
  rk_runtime *rt;
  /* buffers (buffer.c): pools and table, allocated with the arenas; the copy stream */
  uint8_t *buf_dev, *buf_host, *buf_host_dev;
  size_t buf_dev_bytes, buf_host_bytes;
  rk_dev_buffer *buf_table_dev, *buf_table_mirror;
  cudaStream_t copy_stream;
} rk_cuda;

static int cuda_fail(rk_runtime *rt, cudaError_t e, const char *what) {
  return rk__fail(rt, RK_ECUDA, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* ---------------------------------------- kernels' resources ---------------------------------- */

/* Give a kernel's stream and memory back and forget it: its exit is confirmed (its stream is
 * idle, or reports an error: a kernel that faulted runs no more). CUDA thread only. */
static void release_kernel(rk_cuda *c, cuda_kernel *ck) {
  cuda_kernel **pp;
  for (pp = &c->resident; *pp; pp = &(*pp)->next)
    if (*pp == ck) {
      *pp = ck->next;
      c->n_resident--;
      rk__device_resident_exit(c->device);
      break;
    }
  if (ck->stream >= 0) c->stream_used[ck->stream] = 0;
  uv_mutex_lock(&c->arena_lock);
  if (ck->state_bytes) {
    rk__arena_free(&c->devmem, ck->state_off, ck->state_bytes);
    rk__arena_free(&c->pinned, ck->staging_off, ck->state_bytes + 128);
  }
  uv_mutex_unlock(&c->arena_lock);
  free(ck);
}

/* A kernel whose exit could not be confirmed: it keeps its stream and memory (the rk_kernel keeps
 * its control block and rings) until poll_streams sees its stream idle. CUDA thread only. */
static void make_zombie(cuda_kernel *ck) {
  if (ck->k) ck->k->backend_data = NULL;
  ck->k = NULL;
}

/* A sticky error: every live kernel of this runtime faults with it, its lanes dead (zombies have
 * no kernel). */
static void sticky_fault(rk_cuda *c, cudaError_t e) {
  cuda_kernel *ck;
  char msg[200];
  if (c->sticky) return;
  c->sticky = (int)e;
  snprintf(msg, sizeof msg, "CUDA error: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
  for (ck = c->resident; ck; ck = ck->next)
    if (ck->k) rk__kernel_lanes_dead(ck->k, msg);
}

/* ---------------------------------------- the CUDA thread ------------------------------------ */

/* Poll resident kernels' streams (between jobs, every 20 ms): exits, sticky errors, and zombies
 * that finally exited, whose stream and memory are reclaimed then. */
static void poll_streams(rk_cuda *c) {
  cuda_kernel *ck, *next;
  for (ck = c->resident; ck; ck = next) {
    cudaError_t e;
    next = ck->next;
    if (ck->exited) continue;
    e = cudaStreamQuery(c->streams[ck->stream]);
    if (e == cudaErrorNotReady) continue;
    if (e != cudaSuccess) sticky_fault(c, e);
    if (ck->k == NULL) {
      if (c->rt) /* NULL while reaping: the runtime is gone */
        rk__log(c->rt, RK_LOG_WARN, "CUDA backend: a ring kernel whose exit was not confirmed has now exited (%s); "
                "its stream and device memory are reused", e == cudaSuccess ? "stream idle" : cudaGetErrorName(e));
      release_kernel(c, ck);
    } else {
      ck->exited = 1;
    }
  }
}

static void release_device(rk_cuda *c);

/* Reaping (the runtime is gone): once no kernel of this backend is resident and no other
 * runtime's kernel holds the device, free everything, c included. Returns 1 when c is freed. */
static int reap(rk_cuda *c) {
  uint32_t resident = 0;
  if (c->n_resident != 0 || rk__device_prepare_enter(c->device, &resident) != RK_OK) return 0;
  release_device(c);
  rk__device_prepare_exit(c->device);
  uv_mutex_destroy(&c->lock);
  uv_cond_destroy(&c->cond);
  uv_mutex_destroy(&c->arena_lock);
  free(c);
  return 1;
}

static void cuda_thread_main(void *arg) {
  rk_cuda *c = (rk_cuda *)arg;
  /* no cudaSetDevice here: init_job makes the device current only after its checks, so a
   * refused runtime does not initialise (and keep) the device's primary context */
  uv_mutex_lock(&c->lock);
  for (;;) {
    while (c->job == NULL && !c->stop) {
      if (uv_cond_timedwait(&c->cond, &c->lock, 20000000ull) == UV_ETIMEDOUT && (c->resident || c->reaping)) {
        /* Reap only once the caller of reap_job has collected its result (job_done cleared, under
         * the lock): until then it may still wait on c->cond, which reap frees. No job follows
         * reap_job, so after that nobody touches c. Decided under the lock. */
        int may_reap = c->reaping && !c->job_done;
        uv_mutex_unlock(&c->lock);
        poll_streams(c);
        if (may_reap && reap(c)) return; /* detached: nobody joins this thread */
        uv_mutex_lock(&c->lock);
      }
    }
    if (c->job) {
      int (*fn)(rk_cuda *, void *) = c->job;
      void *a = c->job_arg;
      rk__error *prev = rk__error_redirect(c->job_err);
      uv_mutex_unlock(&c->lock);
      c->job_rc = fn(c, a);
      (void)rk__error_redirect(prev);
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
  c->job_err = rk__error_mine();
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

/* ---------------------------------------- images --------------------------------------------- */

/* The kernel `entry` of `image`: from the cache, or loaded now. Loading (cudaLibraryLoadData, and
 * cudaFuncGetAttributes to force the lazy load into the context) may synchronise with running
 * kernels, so a new image or entry is loaded only while no ring kernel is resident on the device
 * in this process (rk__device_prepare_enter), and refused with RK_ESTATE otherwise. */
static int load_image(rk_cuda *c, rk_kernel *k, const void *image, const char *entry, const void **func) {
  cudaLibrary_t lib = NULL;
  cudaKernel_t kern;
  cudaError_t e;
  struct cudaFuncAttributes attr;
  uint32_t resident = 0;
  int i, lib_index = -1, rc;
  char *name;
  for (i = 0; i < c->n_entries; i++)
    if (c->entries[i].image == image && strcmp(c->entries[i].entry, entry) == 0) {
      *func = (const void *)c->entries[i].kernel;
      return RK_OK;
    }
  for (i = 0; i < c->n_libs; i++)
    if (c->libs[i].image == image) lib_index = i;
  if (c->n_entries == RK_CUDA_KERNELS || (lib_index < 0 && c->n_libs == RK_CUDA_LIBRARIES))
    return rk__fail(c->rt, RK_ENORESOURCE,
                    "kernel %s: this runtime already holds %d CUDA images and %d kernels from them, the most it "
                    "keeps (images stay loaded for the runtime's life)", k->name, c->n_libs, c->n_entries);
  if ((name = strdup(entry)) == NULL) return rk__fail(c->rt, RK_ENOMEM, "kernel %s: out of memory", k->name);
  if (rk__device_prepare_enter(c->device, &resident) != RK_OK) {
    free(name);
    return rk__fail(c->rt, RK_ESTATE,
                    "kernel %s: its CUDA image is not loaded yet, and loading one while ring kernels are resident "
                    "(%u on device %d in this process) could hang them (ARCHITECTURE §8); launch kernels with "
                    "their own images before the others, or after terminating them", k->name, resident, c->device);
  }
  if (lib_index >= 0) {
    lib = c->libs[lib_index].lib;
  } else if ((e = cudaLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0)) != cudaSuccess) {
    rc = cuda_fail(c->rt, e, "cudaLibraryLoadData");
    goto out;
  }
  if ((e = cudaLibraryGetKernel(&kern, lib, entry)) != cudaSuccess) {
    rc = cuda_fail(c->rt, e, "cudaLibraryGetKernel");
    goto out;
  }
  if ((e = cudaFuncGetAttributes(&attr, (const void *)kern)) != cudaSuccess) { /* force the load now */
    rc = cuda_fail(c->rt, e, "cudaFuncGetAttributes");
    goto out;
  }
  if (attr.localSizeBytes > c->stack_bytes) {
    rc = rk__fail(c->rt, RK_ENORESOURCE,
                  "kernel %s: its image (entry %s) needs %zu bytes of local memory per thread, more than the %zu "
                  "reserved while preparing: launching it would make the driver grow local memory, which waits "
                  "for the resident ring kernels (ARCHITECTURE §8); use less local memory in the handler "
                  "(large arrays in rk_scratch or the state)", k->name, entry, (size_t)attr.localSizeBytes,
                  c->stack_bytes);
    goto out;
  }
  if (lib_index < 0) {
    c->libs[c->n_libs].image = image;
    c->libs[c->n_libs].lib = lib;
    c->n_libs++;
    lib_index = c->n_libs - 1;
  }
  c->entries[c->n_entries].image = image;
  c->entries[c->n_entries].entry = name;
  c->entries[c->n_entries].kernel = kern;
  c->n_entries++;
  name = NULL;
  *func = (const void *)kern;
  rc = RK_OK;
out:
  if (rc != RK_OK && lib_index < 0 && lib != NULL) cudaLibraryUnload(lib); /* still preparing: allowed */
  rk__device_prepare_exit(c->device);
  free(name);
  return rc;
}

/* The kernel k runs: built in, NVRTC-compiled from its source, or the application's image. */
static int resolve_func(rk_cuda *c, rk_kernel *k, const void **func) {
  if (k->desc.cuda_source) {
    const char *img;
    size_t len;
    char arch[16], log[2048];
    int rc;
    if (!k->desc.source_handler)
      return rk__fail(c->rt, RK_EINVAL, "kernel %s: descriptor field .source without .source_handler", k->name);
    snprintf(arch, sizeof arch, "sm_%d%d", c->cc_major, c->cc_minor);
    rc = rk__nvrtc_compile(k->desc.source, k->desc.source_handler, "rk_nvrtc_ring_kernel", arch, 1, &img, &len,
                           log, sizeof log);
    if (rc != RK_OK) return rk__fail(c->rt, rc, "kernel %s: its source does not compile (NVRTC): %.300s", k->name, log);
    return load_image(c, k, img, "rk_nvrtc_ring_kernel", func);
  }
  if (k->desc.cuda_image && k->desc.cuda_entry) return load_image(c, k, k->desc.cuda_image, k->desc.cuda_entry, func);
  if (k->desc.cuda_entry && (*func = rk__cuda_builtin_entry(k->desc.cuda_entry)) != NULL)
    return RK_OK; /* built in, loaded at runtime creation */
  return rk__fail(c->rt, RK_ENOTSUP, "kernel %s has no CUDA image, entry or source", k->name);
}

/* ---------------------------------------- start / join --------------------------------------- */

/* Refuse a kernel whose blocks could never all be resident at once, even on an idle device: the
 * occupancy calculator's blocks per SM for this block size and dynamic shared memory, times the
 * SMs. (Other resident kernels take SMs too: check-in stays the proof; this catches the hopeless
 * case before it is launched and aborted, with its blocks queued.) The calculator takes a
 * cudaKernel_t for func (cuda_runtime_api.h: \note_cudaKernel_t on
 * cudaOccupancyMaxActiveBlocksPerMultiprocessor; cuda.h on cuOccupancyMaxActiveBlocksPerMultiprocessor:
 * "can also be used with context-less kernel CUkernel ... by casting to CUfunction", and the two
 * types are the same, cuda_runtime_api.h "Interactions between CUkernel and cudaKernel_t"). It is
 * a calculation: no stream, no memory operation, not among the implicitly synchronising calls. */
static int check_occupancy(rk_cuda *c, rk_kernel *k, const void *func, size_t smem) {
  int per_sm = 0;
  uint64_t most;
  cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, func, (int)k->threads, smem);
  if (e != cudaSuccess) return cuda_fail(c->rt, e, "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  most = (uint64_t)per_sm * (uint64_t)c->sm_count;
  if ((uint64_t)k->lanes > most)
    return rk__fail(c->rt, RK_ENORESOURCE,
                    "kernel %s: %u lanes of %u threads (%zu B of dynamic shared memory each) can never all be "
                    "resident on device %d: at most %d per SM x %d SMs = %llu, with nothing else running; use "
                    "fewer lanes, fewer threads per lane or smaller slots", k->name, k->lanes, k->threads, smem,
                    c->device, per_sm, c->sm_count, (unsigned long long)most);
  return RK_OK;
}

/* Wait for the stream to finish the work enqueued on it (the initial state copy; a kernel told to
 * stop), polling: cudaErrorNotReady after timeout_ns, never a hang of this thread (the only one
 * making CUDA calls for the runtime). cudaStreamSynchronize would block without limit. */
static cudaError_t stream_wait(rk_cuda *c, int stream, uint64_t timeout_ns) {
  uint64_t start = rk__now_ns();
  cudaError_t e;
  while ((e = cudaStreamQuery(c->streams[stream])) == cudaErrorNotReady) {
    if (rk__now_ns() - start >= timeout_ns) return cudaErrorNotReady;
    rk__sleep_ns(20000);
  }
  return e;
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
  if (ck == NULL) return rk__fail(c->rt, RK_ENOMEM, "kernel %s: out of memory", k->name);
  ck->k = k;
  ck->stream = -1;
  if ((rc = resolve_func(c, k, &ck->func)) != RK_OK) goto fail;
  if ((rc = rk__dev_geometry(k, &batch, &smem)) != RK_OK) goto fail;
  if ((rc = check_occupancy(c, k, ck->func, smem)) != RK_OK) goto fail;
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
  /* Resident from here (the copy and the kernel run on the device): counted for the process, and
   * on this runtime's list, so a kernel that cannot be confirmed gone stays looked after. */
  if ((rc = rk__device_resident_enter(c->device, RK_CUDA_PREPARE_WAIT_NS)) != RK_OK) {
    rc = rk__fail(c->rt, rc, "kernel %s: another runtime of this process kept preparing device %d for %llu ms",
                  k->name, c->device, (unsigned long long)(RK_CUDA_PREPARE_WAIT_NS / 1000000));
    goto fail;
  }
  ck->next = c->resident;
  c->resident = ck;
  c->n_resident++;
  memset(c->pinned_host + ck->staging_off, 0, state_bytes);
  if (k->desc.state_size && k->state) memcpy(c->pinned_host + ck->staging_off, k->state, k->desc.state_size);
  memcpy(c->pinned_host + ck->staging_off + state_bytes - 128, &k->dev_clock, sizeof k->dev_clock); /* 0 at launch */
  e = cudaMemcpyAsync(c->dev_base + ck->state_off, c->pinned_host + ck->staging_off, state_bytes,
                      cudaMemcpyHostToDevice, c->streams[ck->stream]);
  if (e != cudaSuccess) { /* refused when enqueued: nothing runs */
    rc = cuda_fail(c->rt, e, "cudaMemcpyAsync (the initial state)");
    goto fail;
  }
  e = stream_wait(c, ck->stream, RK_CUDA_COPY_NS); /* our stream: nothing else on it */
  if (e == cudaErrorNotReady) {
    make_zombie(ck); /* the copy may still land in the staging and device memory: keep them */
    return rk__fail(c->rt, RK_ETIMEDOUT, "kernel %s: the initial state copy did not finish within %llu ms", k->name,
                    (unsigned long long)(RK_CUDA_COPY_NS / 1000000));
  }
  if (e != cudaSuccess) { /* an asynchronous error: sticky */
    sticky_fault(c, e);
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
  if (e != cudaSuccess) { /* refused at launch: nothing was enqueued */
    rc = cuda_fail(c->rt, e, "cudaLaunchKernel");
    goto fail;
  }
  k->backend_data = ck;
  return RK_OK;
fail:
  release_kernel(c, ck); /* nothing of it runs: the stream is idle */
  return rc;
}

/* The lanes exited cleanly: bring the state and the kernel clock word back to the host, so a
 * restart (RK_RESTART_RESET_STATE not asked) goes on from the state the old lanes left, as on the
 * CPU backend, and the host copy after terminate is the kernel's final state. The kernel's own
 * stream, idle now: an asynchronous copy, allowed while other ring kernels are resident. A copy
 * that fails or does not finish leaves the host copy as it was (logged). */
static cudaError_t copy_back(rk_cuda *c, rk_kernel *k, cuda_kernel *ck) {
  uint8_t *stage = c->pinned_host + ck->staging_off;
  cudaError_t e = cudaMemcpyAsync(stage, c->dev_base + ck->state_off, ck->state_bytes, cudaMemcpyDeviceToHost,
                                  c->streams[ck->stream]);
  if (e == cudaSuccess) e = stream_wait(c, ck->stream, RK_CUDA_COPY_NS);
  if (e != cudaSuccess) {
    if (e != cudaErrorNotReady) sticky_fault(c, e);
    rk__log(c->rt, RK_LOG_ERROR, "kernel %s: the state could not be copied back from the device (%s); a restart "
            "starts from the state before the launch", k->name, cudaGetErrorString(e));
    return e;
  }
  if (k->desc.state_size && k->state) memcpy(k->state, stage, k->desc.state_size);
  memcpy(&k->dev_clock, stage + ck->state_bytes - 128, sizeof k->dev_clock);
  return cudaSuccess;
}

/* After every lane reported TERMINATED, or an abort: wait until the stream says the kernel really
 * exited, then give its memory and stream back. A kernel that does not exit in time (or whose
 * blocks are still queued behind other kernels) becomes a zombie: it keeps its memory and stream
 * until poll_streams sees it finish, and RK_ETIMEDOUT tells the caller to keep the control block
 * and rings it addresses. An error from the stream means the kernel is gone: exited. */
static int join_job(rk_cuda *c, void *arg) {
  rk_kernel *k = (rk_kernel *)arg;
  cuda_kernel *ck = (cuda_kernel *)k->backend_data;
  cudaError_t e;
  if (ck == NULL) return RK_OK;
  e = ck->exited ? cudaSuccess : stream_wait(c, ck->stream, RK_CUDA_JOIN_NS);
  if (e == cudaErrorNotReady) {
    rk__log(c->rt, RK_LOG_ERROR, "kernel %s: still running (or its blocks still queued) %llu ms after it was told "
            "to stop; its memory and stream are kept until it exits", k->name,
            (unsigned long long)(RK_CUDA_JOIN_NS / 1000000));
    make_zombie(ck);
    return RK_ETIMEDOUT;
  }
  if (e != cudaSuccess)
    sticky_fault(c, e);
  else if (copy_back(c, k, ck) == cudaErrorNotReady) {
    make_zombie(ck); /* the copy may still write the staging memory: keep it */
    return RK_ETIMEDOUT;
  }
  k->backend_data = NULL;
  release_kernel(c, ck);
  return RK_OK;
}

static int cuda_start(rk_kernel *k) { return cuda_run((rk_cuda *)k->rt->backend_data, start_job, k); }

static int cuda_join(rk_kernel *k) { return cuda_run((rk_cuda *)k->rt->backend_data, join_job, k); }

/* The host gave up on k's lanes (rk_kernel_destroy: they did not stop, and k is leaked): forget
 * k; its stream and memory go back when poll_streams sees it exit, at once if it already has. */
static int abandon_job(rk_cuda *c, void *arg) {
  rk_kernel *k = (rk_kernel *)arg;
  cuda_kernel *ck = (cuda_kernel *)k->backend_data;
  if (ck == NULL) return RK_OK;
  if (ck->exited) {
    k->backend_data = NULL;
    release_kernel(c, ck);
  } else {
    make_zombie(ck);
  }
  return RK_OK;
}

static void cuda_abandon(rk_kernel *k) { (void)cuda_run((rk_cuda *)k->rt->backend_data, abandon_job, k); }

/* The device clock (%globaltimer) is calibrated against the runtime's time source (CLOCK_REALTIME
 * by default) by the shared exchange in kernel.c (rk__clock_sync): at check-in, then periodically
 * from the service loop, and at once when the host clock steps. */
static int cuda_dev_alloc(rk_runtime *rt, size_t n, uint64_t *addr);
static void cuda_dev_free(rk_runtime *rt, uint64_t addr, size_t n);
static int cuda_dev_write(rk_runtime *rt, uint64_t addr, const void *src, size_t n);
static int cuda_dev_store64(rk_runtime *rt, uint64_t addr, uint64_t v);
static int cuda_dev_load64(rk_runtime *rt, uint64_t addr, uint64_t *v);
static int cuda_dev_peer(rk_runtime *from, rk_runtime *to);
static uint64_t cuda_dev_mapped(rk_runtime *rt, const void *host);

const rk_backend_ops rk__cuda_backend = {"cuda",         cuda_alloc,      cuda_free,       cuda_start,
                                         cuda_join,      1,               cuda_abandon,    1,
                                         cuda_dev_alloc, cuda_dev_free,   cuda_dev_write,  cuda_dev_store64,
                                         cuda_dev_load64, cuda_dev_peer,  cuda_dev_mapped};

/* ---------------------------------------- probe ---------------------------------------------- */

static uv_once_t g_env_once = UV_ONCE_INIT;

/* The process's CUDA environment, set before its first CUDA call (the probe below) and only where
 * the application left a variable unset: its own value is never overwritten, and in a process
 * that initialised CUDA before, setting one has no effect (docs/cuda-backend.md). Once per process:
 * setenv is not safe against concurrent environment reads, and later runtimes find it set anyway.
 *  - CUDA_DEVICE_MAX_CONNECTIONS=32: the stream pool (32 streams) maps onto this many hardware
 *    queues, 8 by default: streams that share a queue can wait behind a resident kernel's launch.
 *  - CUDA_MODULE_LOADING=EAGER: under the default lazy loading a module is loaded into the context
 *    at its first launch, and loading while a ring kernel is resident is the programming guide's
 *    lazy-loading hazard (it may wait for the resident kernels). The runtime also loads its own
 *    images explicitly while preparing (cudaFuncGetAttributes); eager loading covers the rest of
 *    the process's modules too, the application's own kernels among them. */
static void set_cuda_environment(void) {
  (void)setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 0);
  (void)setenv("CUDA_MODULE_LOADING", "EAGER", 0);
}

static void version_text(int v, char *buf, size_t len) {
  if (v <= 0)
    snprintf(buf, len, "none");
  else
    snprintf(buf, len, "CUDA %d.%d", v / 1000, (v % 1000) / 10);
}

int rk__cuda_probe(int device, char *reason, size_t len) {
  int n = 0;
  cudaError_t e;
  uv_once(&g_env_once, set_cuda_environment);
  e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    int drv = 0, rtv = 0;
    char dtext[32], rtext[32];
    (void)cudaDriverGetVersion(&drv); /* 0 when no driver is installed */
    (void)cudaRuntimeGetVersion(&rtv);
    version_text(drv, dtext, sizeof dtext);
    version_text(rtv, rtext, sizeof rtext);
    if (e == cudaErrorInsufficientDriver)
      snprintf(reason, len, "no usable CUDA driver (cudaGetDeviceCount: %s; driver: %s, this library's runtime: %s)",
               cudaGetErrorString(e), drv > 0 ? dtext : "none installed", rtext);
    else
      snprintf(reason, len, "no usable CUDA driver (cudaGetDeviceCount: %s; driver: %s, runtime: %s)",
               cudaGetErrorString(e), dtext, rtext);
    return 0;
  }
  if (n == 0) {
    snprintf(reason, len, "no CUDA device present");
    return 0;
  }
  if (device < 0 || device >= n) {
    snprintf(reason, len, "CUDA device %d requested, %d present", device, n);
    return 0;
  }
  return 1;
}

/* ---------------------------------------- init / shutdown ------------------------------------ */

typedef struct init_args {
  char *reason;
  size_t len;
  size_t pinned_bytes, device_bytes;
} init_args;

/* Free what the runtime allocated and loaded on the device. Only inside a preparation
 * (rk__device_prepare_enter): cudaFree, cudaFreeHost and cudaLibraryUnload may synchronise with
 * resident kernels. */
static void release_device(rk_cuda *c) {
  int i;
  if (c->copy_stream) cudaStreamDestroy(c->copy_stream);
  if (c->buf_dev) cudaFree(c->buf_dev);
  if (c->buf_table_dev) cudaFree(c->buf_table_dev);
  if (c->buf_host) cudaFreeHost(c->buf_host);
  if (c->buf_table_mirror) cudaFreeHost(c->buf_table_mirror);
  c->copy_stream = NULL;
  c->buf_dev = c->buf_host = c->buf_host_dev = NULL;
  c->buf_table_dev = c->buf_table_mirror = NULL;
  for (i = 0; i < c->n_entries; i++) free(c->entries[i].entry);
  c->n_entries = 0;
  for (i = 0; i < c->n_libs; i++) cudaLibraryUnload(c->libs[i].lib);
  c->n_libs = 0;
  for (i = 0; i < RK_CUDA_STREAMS; i++)
    if (c->streams[i]) cudaStreamDestroy(c->streams[i]);
  memset(c->streams, 0, sizeof c->streams);
  if (c->pinned_host) cudaFreeHost(c->pinned_host);
  if (c->dev_base) cudaFree(c->dev_base);
  c->pinned_host = c->pinned_dev = c->dev_base = NULL;
  if (c->arenas_ready) {
    rk__arena_destroy(&c->pinned);
    rk__arena_destroy(&c->devmem);
    c->arenas_ready = 0;
  }
}

/* Device attributes are read before cudaSetDevice, which initialises the device's primary context:
 * a runtime refused on their grounds leaves no context behind (cudaDeviceGetAttribute names the
 * device and needs no current one). */
static int attribute(rk_cuda *c, enum cudaDeviceAttr attr, int *value, init_args *a, const char *what) {
  cudaError_t e = cudaDeviceGetAttribute(value, attr, c->device);
  if (e != cudaSuccess) {
    snprintf(a->reason, a->len, "device %d: reading %s: %s", c->device, what, cudaGetErrorString(e));
    return RK_ENODEV;
  }
  return RK_OK;
}

static int init_job(rk_cuda *c, void *arg) {
  init_args *a = (init_args *)arg;
  cudaError_t e;
  int v = 0, i, rc;
  uint32_t resident = 0;
  if ((rc = attribute(c, cudaDevAttrKernelExecTimeout, &v, a, "the kernel execution timeout")) != RK_OK) return rc;
  if (v) {
    snprintf(a->reason, a->len, "device %d has a kernel execution timeout (display watchdog): persistent kernels would be killed", c->device);
    return RK_ENOTSUP;
  }
  if ((rc = attribute(c, cudaDevAttrCanMapHostMemory, &v, a, "host mapping")) != RK_OK) return rc;
  if (!v) {
    snprintf(a->reason, a->len, "device %d cannot map host memory", c->device);
    return RK_ENOTSUP;
  }
  if ((rc = attribute(c, cudaDevAttrComputeCapabilityMajor, &c->cc_major, a, "the compute capability")) != RK_OK ||
      (rc = attribute(c, cudaDevAttrComputeCapabilityMinor, &c->cc_minor, a, "the compute capability")) != RK_OK ||
      (rc = attribute(c, cudaDevAttrHostNativeAtomicSupported, &c->native_atomics, a, "host-native atomics")) != RK_OK ||
      (rc = attribute(c, cudaDevAttrMultiProcessorCount, &c->sm_count, a, "the SM count")) != RK_OK)
    return rc;
  if (c->cc_major < RK_CUDA_CC_MAJOR || (c->cc_major == RK_CUDA_CC_MAJOR && c->cc_minor < RK_CUDA_CC_MINOR)) {
    snprintf(a->reason, a->len, "device %d is compute capability %d.%d; ring kernels need %d.%d or newer (CUDA 13 "
             "builds and NVRTC compiles nothing older)", c->device, c->cc_major, c->cc_minor, RK_CUDA_CC_MAJOR,
             RK_CUDA_CC_MINOR);
    return RK_ENOTSUP;
  }
  /* Prepare, then launch: every allocation and image load happens here, once, and only while no
   * ring kernel of any runtime in this process is resident on the device. */
  if (rk__device_prepare_enter(c->device, &resident) != RK_OK) {
    snprintf(a->reason, a->len, "%u ring kernel(s) of another runtime in this process are resident on device %d: "
             "creating a runtime allocates (cudaHostAlloc, cudaMalloc) and loads modules, which may synchronise "
             "with them (ARCHITECTURE §8); create every runtime before launching ring kernels", resident, c->device);
    return RK_ESTATE;
  }
  if ((e = cudaSetDevice(c->device)) != cudaSuccess) {
    snprintf(a->reason, a->len, "cudaSetDevice(%d): %s", c->device, cudaGetErrorString(e));
    rc = RK_ENODEV;
    goto out;
  }
  /* The per-thread stack, reserved now (RK_CUDA_STACK_BYTES); never lowered below what the
   * application or another runtime set. */
  e = cudaDeviceGetLimit(&c->stack_bytes, cudaLimitStackSize);
  if (e == cudaSuccess && c->stack_bytes < RK_CUDA_STACK_BYTES) {
    e = cudaDeviceSetLimit(cudaLimitStackSize, RK_CUDA_STACK_BYTES);
    /* what the driver really reserved: it may round the request (cudaDeviceSetLimit) */
    if (e == cudaSuccess) e = cudaDeviceGetLimit(&c->stack_bytes, cudaLimitStackSize);
  }
  if (e != cudaSuccess) {
    snprintf(a->reason, a->len, "reserving %u bytes of stack per thread (cudaLimitStackSize): %s",
             RK_CUDA_STACK_BYTES, cudaGetErrorString(e));
    rc = RK_ECUDA;
    goto out;
  }
  if ((e = cudaHostAlloc((void **)&c->pinned_host, a->pinned_bytes, cudaHostAllocMapped | cudaHostAllocPortable)) != cudaSuccess ||
      (e = cudaHostGetDevicePointer((void **)&c->pinned_dev, c->pinned_host, 0)) != cudaSuccess ||
      (e = cudaMalloc((void **)&c->dev_base, a->device_bytes)) != cudaSuccess) {
    snprintf(a->reason, a->len, "allocating the CUDA arenas: %s", cudaGetErrorString(e));
    rc = RK_ENOMEM;
    goto out;
  }
  if (rk__arena_init(&c->pinned, a->pinned_bytes, RK_LINE) != RK_OK) {
    snprintf(a->reason, a->len, "arena bookkeeping: out of memory");
    rc = RK_ENOMEM;
    goto out;
  }
  if (rk__arena_init(&c->devmem, a->device_bytes, RK_LINE) != RK_OK) {
    rk__arena_destroy(&c->pinned);
    snprintf(a->reason, a->len, "arena bookkeeping: out of memory");
    rc = RK_ENOMEM;
    goto out;
  }
  c->arenas_ready = 1;
  /* The buffer pools and table (buffer.c), and the copy stream: buffers are sub-allocated from these
   * later, with no CUDA call; copies are enqueued on the stream, which never waits for a ring
   * kernel (non-blocking, and nothing else is enqueued on it). */
  {
    const rk_runtime_options *o = &c->rt->opts;
    size_t nb = o->max_buffers ? o->max_buffers : 1024u;
    c->buf_dev_bytes = o->buffer_device_bytes ? o->buffer_device_bytes : (64u << 20);
    c->buf_host_bytes = o->buffer_host_bytes ? o->buffer_host_bytes : (16u << 20);
    if ((e = cudaMalloc((void **)&c->buf_dev, c->buf_dev_bytes)) != cudaSuccess ||
        (e = cudaHostAlloc((void **)&c->buf_host, c->buf_host_bytes, cudaHostAllocMapped | cudaHostAllocPortable)) != cudaSuccess ||
        (e = cudaHostGetDevicePointer((void **)&c->buf_host_dev, c->buf_host, 0)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->buf_table_dev, nb * sizeof(rk_dev_buffer))) != cudaSuccess ||
        (e = cudaMemset(c->buf_table_dev, 0, nb * sizeof(rk_dev_buffer))) != cudaSuccess ||
        (e = cudaHostAlloc((void **)&c->buf_table_mirror, nb * sizeof(rk_dev_buffer), cudaHostAllocPortable)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaDeviceSynchronize()) != cudaSuccess) {
      snprintf(a->reason, a->len, "allocating the buffer pools (%zu + %zu bytes, runtime options buffer_device_bytes "
               "and buffer_host_bytes): %s", c->buf_dev_bytes, c->buf_host_bytes, cudaGetErrorString(e));
      rc = RK_ENOMEM;
      goto out;
    }
    memset(c->buf_table_mirror, 0, nb * sizeof(rk_dev_buffer));
  }
  for (i = 0; i < RK_CUDA_STREAMS; i++)
    if ((e = cudaStreamCreateWithFlags(&c->streams[i], cudaStreamNonBlocking)) != cudaSuccess) {
      snprintf(a->reason, a->len, "cudaStreamCreateWithFlags: %s", cudaGetErrorString(e));
      rc = RK_ECUDA;
      goto out;
    }
  for (i = 0; rk__cuda_builtin_names[i]; i++) {
    struct cudaFuncAttributes attr;
    if ((e = cudaFuncGetAttributes(&attr, rk__cuda_builtin_entry(rk__cuda_builtin_names[i]))) != cudaSuccess) {
      snprintf(a->reason, a->len, "loading the built-in kernel %s: %s (is this GPU's architecture in "
               "CMAKE_CUDA_ARCHITECTURES?)", rk__cuda_builtin_names[i], cudaGetErrorString(e));
      rc = RK_ECUDA;
      goto out;
    }
    if (attr.localSizeBytes > c->stack_bytes) { /* a library bug: tests/test_sass.py checks for none */
      snprintf(a->reason, a->len, "the built-in kernel %s needs %zu bytes of local memory per thread, more than "
               "the %zu reserved", rk__cuda_builtin_names[i], (size_t)attr.localSizeBytes, c->stack_bytes);
      rc = RK_ENORESOURCE;
      goto out;
    }
  }
  snprintf(a->reason, a->len, "CUDA device %d (compute %d.%d, %d SMs, host-native atomics %s)", c->device,
           c->cc_major, c->cc_minor, c->sm_count, c->native_atomics ? "yes" : "no");
  rc = RK_OK;
out:
  if (rc != RK_OK) release_device(c);
  rk__device_prepare_exit(c->device);
  return rc;
}

/* Release everything, if that is safe: 0 when released; RK_ESTATE when kernels of this runtime
 * (zombies) or of another runtime on the device are still resident: everything is kept then. */
static int shutdown_job(rk_cuda *c, void *arg) {
  uint64_t start = rk__now_ns();
  uint32_t resident = 0;
  cuda_kernel *ck, *next;
  (void)arg;
  /* Every rk_kernel is gone by now (destroyed, joined or abandoned): an entry that still names one
   * is an orphan. Never dereference it: reclaim it if it exited, else it is a zombie. */
  for (ck = c->resident; ck; ck = next) {
    next = ck->next;
    if (ck->k == NULL) continue;
    ck->k = NULL;
    if (ck->exited) release_kernel(c, ck);
  }
  /* zombies that exited meanwhile are reclaimed; give the others a moment */
  while (c->n_resident) {
    poll_streams(c);
    if (c->n_resident == 0 || rk__now_ns() - start > 100000000ull) break;
    rk__sleep_ns(1000000);
  }
  if (c->n_resident) {
    rk__log(c->rt, RK_LOG_ERROR, "CUDA backend: %d ring kernel(s) of this runtime never confirmed their exit; its "
            "device memory, streams and images are kept", c->n_resident);
    return RK_ESTATE;
  }
  if (rk__device_prepare_enter(c->device, &resident) != RK_OK) {
    rk__log(c->rt, RK_LOG_ERROR, "CUDA backend: %u ring kernel(s) of other runtimes are resident on device %d; freeing "
            "now (cudaFree, cudaFreeHost, cudaLibraryUnload) could wait for them, so this runtime's device memory, "
            "streams and images are kept", resident, c->device);
    return RK_ESTATE;
  }
  release_device(c);
  rk__device_prepare_exit(c->device);
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
  rk_cuda *c;
  init_args a;
  int rc;
  const char *clb = getenv("CUDA_LAUNCH_BLOCKING");
  /* refused before any thread or CUDA state exists */
  if (clb && strcmp(clb, "1") == 0) {
    snprintf(reason, len, "CUDA_LAUNCH_BLOCKING=1 serialises every launch: a resident kernel would block all others");
    return RK_ENOTSUP;
  }
  if (rt->opts.device < 0 || rt->opts.device >= RK__MAX_DEVICES) {
    snprintf(reason, len, "CUDA device %d: this build supports devices 0 to %d", rt->opts.device, RK__MAX_DEVICES - 1);
    return RK_ENOTSUP;
  }
  if ((c = (rk_cuda *)calloc(1, sizeof *c)) == NULL) {
    snprintf(reason, len, "out of memory");
    return RK_ENOMEM;
  }
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
  rc = cuda_run(c, init_job, &a); /* cleans up after itself on failure */
  if (rc != RK_OK) {
    stop_thread(c);
    free(c);
    return rc;
  }
  rt->backend_data = c;
  rt->ops = &rk__cuda_backend;
  return RK_OK;
}

int rk__cuda_buffer_pools(rk_runtime *rt, rk__cuda_buffer_mem *out) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  if (c == NULL || c->buf_dev == NULL) return RK_ENOMEM;
  out->dev_pool = c->buf_dev;
  out->dev_bytes = c->buf_dev_bytes;
  out->host_pool = c->buf_host;
  out->host_pool_dev = c->buf_host_dev;
  out->host_bytes = c->buf_host_bytes;
  out->table_dev = c->buf_table_dev;
  out->table_mirror = c->buf_table_mirror;
  return RK_OK;
}

/* ---------------------------------------- K2K memory (graph.c) ------------------------------- */
/* The K2K inboxes and the graph's table live in the device arena (sub-allocated: no CUDA
 * allocation call while kernels are resident) and are written and read through pinned staging
 * memory and the copy stream, asynchronous copies that are allowed while ring kernels are resident
 * (ARCHITECTURE §8), waited for here: graph launch and terminate are not hot paths. */
#define RK_CUDA_K2K_CHUNK ((size_t)1 << 20) /* staging per copy */

/* n bytes between host memory and device address dev (to_dev: host -> device), in chunks. quiet:
 * a failure sets no error message (the statistics' reads: not the caller's error). */
static int k2k_copy(rk_runtime *rt, uint64_t dev, void *host, size_t n, int to_dev, int quiet) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  size_t done = 0, chunk = n < RK_CUDA_K2K_CHUNK ? n : RK_CUDA_K2K_CHUNK;
  uint8_t *stage;
  cudaError_t e = cudaSuccess;
  if (n == 0) return RK_OK;
  if ((stage = (uint8_t *)cuda_alloc(rt, chunk)) == NULL) return RK_ENOMEM;
  /* this thread's current device (the runtime API's per-thread state): no synchronisation */
  if ((e = cudaSetDevice(c->device)) == cudaSuccess) {
    while (done < n && e == cudaSuccess) {
      size_t k = n - done < chunk ? n - done : chunk;
      uint8_t *d = (uint8_t *)(uintptr_t)(dev + done);
      if (to_dev) {
        memcpy(stage, (uint8_t *)host + done, k);
        e = cudaMemcpyAsync(d, stage, k, cudaMemcpyHostToDevice, c->copy_stream);
      } else {
        e = cudaMemcpyAsync(stage, d, k, cudaMemcpyDeviceToHost, c->copy_stream);
      }
      if (e == cudaSuccess) { /* the staging is reused: wait, with a deadline (RK_CUDA_COPY_NS) */
        uint64_t t0 = rk__now_ns();
        while ((e = cudaStreamQuery(c->copy_stream)) == cudaErrorNotReady && rk__now_ns() - t0 < RK_CUDA_COPY_NS)
          rk__sleep_ns(10000);
      }
      if (e == cudaSuccess && !to_dev) memcpy((uint8_t *)host + done, stage, k);
      done += k;
    }
  }
  if (e != cudaSuccess) { /* a copy may still be in flight: its staging is kept (leaked), never reused */
    if (quiet) return RK_ECUDA;
    return cuda_fail(rt, e, "K2K memory copy (the copy stream)");
  }
  cuda_free(rt, stage, chunk);
  return RK_OK;
}

static int cuda_dev_alloc(rk_runtime *rt, size_t n, uint64_t *addr) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  size_t off;
  int rc;
  uv_mutex_lock(&c->arena_lock);
  rc = rk__arena_alloc(&c->devmem, n, &off);
  uv_mutex_unlock(&c->arena_lock);
  if (rc != RK_OK)
    return rk__fail(rt, RK_ENOMEM, "device arena exhausted (%zu bytes for K2K inboxes, %zu of %zu used): give the "
                    "graph's kernels smaller K2K capacities (rk_graph_add)", n, c->devmem.used, c->devmem.size);
  *addr = (uint64_t)(uintptr_t)(c->dev_base + off); /* not zeroed: graph.c writes it all */
  return RK_OK;
}

static void cuda_dev_free(rk_runtime *rt, uint64_t addr, size_t n) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  if (addr == 0) return;
  uv_mutex_lock(&c->arena_lock);
  rk__arena_free(&c->devmem, (size_t)((uint8_t *)(uintptr_t)addr - c->dev_base), n);
  uv_mutex_unlock(&c->arena_lock);
}

static int cuda_dev_write(rk_runtime *rt, uint64_t addr, const void *src, size_t n) {
  return k2k_copy(rt, addr, (void *)(uintptr_t)src, n, 1, 0);
}

/* One aligned 8-byte word: a copy of 8 bytes is a single store by the copy engine as the lanes see
 * it (the flag `closed` orders nothing; a torn value would still be nonzero). */
static int cuda_dev_store64(rk_runtime *rt, uint64_t addr, uint64_t v) { return k2k_copy(rt, addr, &v, sizeof v, 1, 0); }
static int cuda_dev_load64(rk_runtime *rt, uint64_t addr, uint64_t *v) { return k2k_copy(rt, addr, v, sizeof *v, 0, 1); }

/* K2K between two devices (graph.c): can from's lanes address to's device memory, atomics
 * included? cudaDeviceCanAccessPeer says whether they can reach it at all; an inbox there is
 * claimed with compare-and-swap by the lanes of both devices, which is atomic only where the
 * link carries native peer atomics (NVLink; not plain PCIe peer-to-peer). Then peer access is
 * enabled for from's context, while no ring kernel is resident on from's device (it changes the
 * context's mappings; ARCHITECTURE §8): with kernels resident there the route is staged instead
 * (logged), unless an earlier call enabled it for the pair already (remembered process-wide).
 * 1: peer; 0: staged through mapped host memory. */
/* The pairs (from, to) whose peer access this process has enabled (bit `to` of g_peer_on[from]),
 * under g_peer_lock: the primary contexts keep it (the library never resets a device), so a later
 * graph finds it without the preparation step, kernels resident on `from` or not. */
static uv_once_t g_peer_once = UV_ONCE_INIT;
static uv_mutex_t g_peer_lock;
static uint64_t g_peer_on[RK__MAX_DEVICES];
static void peer_init(void) {
  if (uv_mutex_init(&g_peer_lock) != 0) abort(); /* (as libuv's own once-initialised locks) */
}

static int peer_known(int from, int to) {
  int on;
  if (from < 0 || from >= RK__MAX_DEVICES || to < 0 || to >= RK__MAX_DEVICES) return 0;
  uv_once(&g_peer_once, peer_init);
  uv_mutex_lock(&g_peer_lock);
  on = (int)((g_peer_on[from] >> to) & 1u);
  uv_mutex_unlock(&g_peer_lock);
  return on;
}

static void peer_remember(int from, int to) {
  if (from < 0 || from >= RK__MAX_DEVICES || to < 0 || to >= RK__MAX_DEVICES) return;
  uv_once(&g_peer_once, peer_init);
  uv_mutex_lock(&g_peer_lock);
  g_peer_on[from] |= 1ull << to;
  uv_mutex_unlock(&g_peer_lock);
}

static int cuda_dev_peer(rk_runtime *from, rk_runtime *to) {
  rk_cuda *a = (rk_cuda *)from->backend_data, *b = (rk_cuda *)to->backend_data;
  int can = 0, atomics = 0, ok = 0;
  uint32_t resident = 0;
  cudaError_t e;
  if (a == NULL || b == NULL) return 0;
  if (a->device == b->device) return 1;
  if (peer_known(a->device, b->device)) return 1; /* enabled for an earlier graph: no preparation */
  if (cudaDeviceCanAccessPeer(&can, a->device, b->device) != cudaSuccess || !can ||
      cudaDeviceGetP2PAttribute(&atomics, cudaDevP2PAttrNativeAtomicSupported, a->device, b->device) != cudaSuccess ||
      !atomics) {
    (void)cudaGetLastError();
    return 0;
  }
  if (rk__device_prepare_enter(a->device, &resident) != RK_OK) {
    rk__log(from, RK_LOG_WARN, "K2K routes from device %d to device %d are staged through host memory: peer access "
            "is not enabled while %u ring kernel(s) are resident on device %d", a->device, b->device, resident,
            a->device);
    return 0;
  }
  if ((e = cudaSetDevice(a->device)) == cudaSuccess) e = cudaDeviceEnablePeerAccess(b->device, 0);
  if (e == cudaErrorPeerAccessAlreadyEnabled) e = cudaSuccess;
  (void)cudaGetLastError(); /* (not sticky: cleared) */
  ok = e == cudaSuccess;
  if (ok) peer_remember(a->device, b->device);
  rk__device_prepare_exit(a->device);
  if (!ok)
    rk__log(from, RK_LOG_WARN, "K2K routes from device %d to device %d are staged through host memory: "
            "cudaDeviceEnablePeerAccess: %s", a->device, b->device, cudaGetErrorName(e));
  return ok;
}

/* The pinned arena is allocated mapped and portable: with unified addressing its device address
 * (cudaHostGetDevicePointer) is valid on every device of the process. */
static uint64_t cuda_dev_mapped(rk_runtime *rt, const void *host) {
  return (uint64_t)(uintptr_t)dev_of((rk_cuda *)rt->backend_data, host);
}

typedef struct copy_done_arg {
  void (*done)(void *arg, int status);
  void *arg;
} copy_done_arg;

/* The CUDA runtime's callback thread: no CUDA call may be made here. */
static void CUDART_CB copy_host_fn(void *p) {
  copy_done_arg a = *(copy_done_arg *)p;
  free(p);
  a.done(a.arg, RK_OK);
}

int rk__cuda_copy(rk_runtime *rt, void *dst, const void *src, size_t n, void (*done)(void *arg, int status), void *arg) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  copy_done_arg *d = NULL;
  cudaError_t e;
  if (c == NULL || c->copy_stream == NULL) return rk__fail(rt, RK_ESTATE, "buffer copy: no copy stream");
  if (done && (d = (copy_done_arg *)malloc(sizeof *d)) == NULL) return rk__fail(rt, RK_ENOMEM, "buffer copy: out of memory");
  /* this thread's current device (the runtime API's per-thread state): no synchronisation */
  if ((e = cudaSetDevice(c->device)) != cudaSuccess ||
      (e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, c->copy_stream)) != cudaSuccess) {
    free(d);
    return cuda_fail(rt, e, "buffer copy (cudaMemcpyAsync on the copy stream)");
  }
  if (d == NULL) return RK_OK;
  d->done = done;
  d->arg = arg;
  if ((e = cudaLaunchHostFunc(c->copy_stream, copy_host_fn, d)) != cudaSuccess) {
    /* the copy is enqueued but its completion cannot be reported: wait for it here */
    free(d);
    (void)cudaStreamSynchronize(c->copy_stream);
    done(arg, RK_OK);
    return RK_OK;
  }
  return RK_OK;
}

/* Shutdown could not free everything: the CUDA thread becomes the reaper (it alone touches c
 * from now on; rt is about to be freed). */
static int reap_job(rk_cuda *c, void *arg) {
  (void)arg;
  c->rt = NULL;
  c->reaping = 1;
  return RK_OK;
}

void rk__cuda_shutdown(rk_runtime *rt) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  if (c == NULL) return;
  if (cuda_run(c, shutdown_job, NULL) != RK_OK) {
    /* Kernels still hold what c owns (logged by shutdown_job): zombies of this runtime, or other
     * runtimes' kernels on the device, while which nothing may be freed. Rather than keep it all,
     * and this runtime's share of the device's resident count, for the process's life, the CUDA
     * thread stays on, detached, reaps the zombies as they exit and frees everything once that is
     * safe (reap). uv_thread_t is a pthread_t on every platform this library builds for. */
    (void)pthread_detach(c->thread); /* before the job: once it ran, c may be freed at any time */
    (void)cuda_run(c, reap_job, NULL);
    rt->backend_data = NULL;
    return;
  }
  stop_thread(c);
  free(c);
  rt->backend_data = NULL;
}

/* rk_kernel_compile on the CUDA backend: NVRTC for the runtime's device (cached, as a launch). */
int rk__cuda_compile(rk_runtime *rt, const rk_kernel_desc *d, char *log, size_t log_len) {
  rk_cuda *c = (rk_cuda *)rt->backend_data;
  const char *img;
  size_t len;
  char arch[16];
  int rc;
  snprintf(arch, sizeof arch, "sm_%d%d", c->cc_major, c->cc_minor);
  rc = rk__nvrtc_compile(d->source, d->source_handler, "rk_nvrtc_ring_kernel", arch, 1, &img, &len, log, log_len);
  if (rc == RK_OK) return RK_OK;
  return rk__fail(rt, rc, "kernel %s: %s (NVRTC): %.300s", d->name ? d->name : "kernel",
                  rc == RK_EINVAL ? "its source does not compile" : "cannot compile its source", log ? log : "");
}

#else /* !RK_HAVE_CUDA */

int rk__cuda_compile(rk_runtime *rt, const rk_kernel_desc *d, char *log, size_t log_len) {
  (void)d, (void)log, (void)log_len;
  return rk__fail(rt, RK_ENOTSUP, "built without CUDA");
}

int rk__cuda_probe(int device, char *reason, size_t len) {
  (void)device;
  snprintf(reason, len, "built without CUDA");
  return 0;
}
int rk__cuda_init(rk_runtime *rt, char *reason, size_t len) {
  (void)rt;
  snprintf(reason, len, "built without CUDA");
  return RK_ENODEV;
}
void rk__cuda_shutdown(rk_runtime *rt) { (void)rt; }
int rk__cuda_buffer_pools(rk_runtime *rt, rk__cuda_buffer_mem *out) {
  (void)rt;
  (void)out;
  return RK_ENODEV;
}
int rk__cuda_copy(rk_runtime *rt, void *dst, const void *src, size_t n, void (*done)(void *arg, int status), void *arg) {
  (void)dst;
  (void)src;
  (void)n;
  (void)done;
  (void)arg;
  return rk__fail(rt, RK_ENODEV, "built without CUDA");
}

#endif
