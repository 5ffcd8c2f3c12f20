/* buffer.c — bulk data (ringkernel/buffer.h): two pools prepared with the runtime, a table of
 * buffers the lanes read, host copies, references in messages and the pins that keep a referenced
 * buffer alive until its message's reply.
 *
 * Memory. Each pool is one block sub-allocated by arena.c. CUDA: the device pool (cudaMalloc), the
 * host pool (cudaHostAlloc, mapped) and the table (cudaMalloc, with a pinned mirror the host
 * writes and the copy stream copies from) are allocated in the CUDA backend's init_job, with its
 * arenas, before anything can be resident (prepare-then-launch); afterwards only arena.c runs.
 * CPU backend: the pools are allocated (malloc) at the first buffer of their kind; the table with
 * the runtime.
 *
 * The table (device/params.h, rk_dev_buffer) is what a lane checks a reference against: the
 * buffer's lanes' address, size and generation. An entry is written when its buffer is allocated
 * (CUDA: copied to the device and waited for before the handle is returned, so a message that
 * names the buffer, published after, finds it), and marked not live when it is freed. While a
 * message that references a buffer is in flight the buffer is pinned: it cannot be freed, so its
 * entry does not change while a handler may read it.
 *
 * Locks: B->lock guards everything here but the table entries' words (atomics: lanes read them
 * without it) and the buffers' bytes. Lock order: a kernel's reply_lock, then B->lock (the drain
 * hook rk__buffers_replied); nothing here takes a kernel lock. Callbacks (rk_copy_fn) run on the
 * loop thread with no lock held. */
#include <stdlib.h>
#include <string.h>

#include "device/params.h"
#include "host/arena.h"
#include "host/internal.h"

#define RK__BUF_ALIGN 256u       /* every buffer starts on this boundary (vector loads, cache lines) */
#define RK__PIN_BUCKETS 256u
#define RK__DEFAULT_DEVICE_POOL (64u << 20)
#define RK__DEFAULT_HOST_POOL (16u << 20)
#define RK__DEFAULT_MAX_BUFFERS 1024u
#define RK__MAX_BUFFERS (1u << 24) /* rk_runtime_options.max_buffers at most */

enum { POOL_DEVICE = 0, POOL_HOST = 1 };

typedef struct pool {
  rk_arena arena;
  uint8_t *host;  /* host address of byte 0 (NULL: not host-addressable: the CUDA device pool) */
  uint8_t *lanes; /* the lanes' address of byte 0 */
  size_t size;
  int ready;
  int owned;      /* malloc'd here (CPU backend): freed with the runtime */
} pool;

struct rk_buffer {
  rk_runtime *rt;
  uint32_t slot, gen;
  rk_buffer_kind kind;
  size_t size, off, bytes; /* bytes: what the arena gave (size rounded up) */
  uint8_t *host;           /* host address, or NULL (CUDA device buffer) */
  uint8_t *lanes;          /* the lanes' address */
  /* under B->lock */
  uint32_t pins;           /* in-flight messages that reference it */
  uint32_t inflight;       /* copies issued and not complete */
  uint32_t cbs;            /* completion callbacks not yet started */
  int copy_err;            /* first failed copy since the last rk_buffer_wait */
};

/* One copy: its completion, then (with a callback) its place in the delivery queue. */
typedef struct copy_rec {
  struct copy_rec *next;
  rk__buffers *B;
  rk_buffer *b;
  rk_copy_fn fn;
  void *user;
  int status;
  int done; /* under B->lock */
} copy_rec;

/* A message in flight with references: the buffers it pinned. */
typedef struct pin_rec {
  struct pin_rec *next;
  rk_kernel *k;
  uint64_t msg_id;
  uint32_t n;
  rk_buffer *bufs[RK_MAX_REFS];
} pin_rec;

struct rk__buffers {
  rk_runtime *rt;
  uv_mutex_t lock;
  uv_cond_t cond;
  int cuda;               /* pools and table prepared by the CUDA backend */
  pool pools[2];
  rk_dev_buffer *table;   /* host view: CPU the table itself; CUDA the pinned mirror */
  rk_dev_buffer *table_lanes; /* what the lanes read (rk_dev_params.buffers) */
  uint32_t nslots;
  rk_buffer **slots;
  uint32_t *gens;
  uint32_t *free_slots, nfree;
  pin_rec *pins[RK__PIN_BUCKETS];
  copy_rec *q_head, *q_tail; /* completions whose callbacks are due */
  uint32_t inflight;         /* copies of every buffer not complete (destroy waits for them) */
};

static size_t round_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

/* ---------------------------------------- runtime hooks -------------------------------------- */

int rk__buffers_init(rk_runtime *rt) {
  rk__buffers *B = (rk__buffers *)rk__calloc(1, sizeof *B);
  uint32_t i, n = rt->opts.max_buffers ? rt->opts.max_buffers : RK__DEFAULT_MAX_BUFFERS;
  int rc;
  if (B == NULL) return RK_ENOMEM;
  if (n > RK__MAX_BUFFERS) {
    free(B);
    return RK_EINVAL;
  }
  B->rt = rt;
  B->nslots = n;
  B->slots = (rk_buffer **)rk__calloc(n, sizeof *B->slots);
  B->gens = (uint32_t *)rk__calloc(n, sizeof *B->gens);
  B->free_slots = (uint32_t *)rk__calloc(n, sizeof *B->free_slots);
  if (B->slots == NULL || B->gens == NULL || B->free_slots == NULL) {
    rc = RK_ENOMEM;
    goto fail;
  }
  for (i = 0; i < n; i++) B->free_slots[i] = n - 1 - i; /* slot 0 first */
  B->nfree = n;
  if (rt->backend == RK_BACKEND_CUDA) {
    rk__cuda_buffer_mem mem;
    memset(&mem, 0, sizeof mem);
    if ((rc = rk__cuda_buffer_pools(rt, &mem)) != RK_OK) goto fail;
    B->cuda = 1;
    B->table = mem.table_mirror;
    B->table_lanes = mem.table_dev;
    B->pools[POOL_DEVICE].host = NULL;
    B->pools[POOL_DEVICE].lanes = mem.dev_pool;
    B->pools[POOL_DEVICE].size = mem.dev_bytes;
    B->pools[POOL_HOST].host = mem.host_pool;
    B->pools[POOL_HOST].lanes = mem.host_pool_dev;
    B->pools[POOL_HOST].size = mem.host_bytes;
    for (i = 0; i < 2; i++)
      if (B->pools[i].size) {
        if ((rc = rk__arena_init(&B->pools[i].arena, B->pools[i].size, RK__BUF_ALIGN)) != RK_OK) goto fail;
        B->pools[i].ready = 1;
      }
  } else {
    B->table = (rk_dev_buffer *)rk__calloc(n, sizeof *B->table);
    if (B->table == NULL) {
      rc = RK_ENOMEM;
      goto fail;
    }
    B->table_lanes = B->table;
    B->pools[POOL_DEVICE].size = rt->opts.buffer_device_bytes ? rt->opts.buffer_device_bytes : RK__DEFAULT_DEVICE_POOL;
    B->pools[POOL_HOST].size = rt->opts.buffer_host_bytes ? rt->opts.buffer_host_bytes : RK__DEFAULT_HOST_POOL;
  }
  uv_mutex_init(&B->lock);
  uv_cond_init(&B->cond);
  rt->buffers = B;
  return RK_OK;
fail:
  for (i = 0; i < 2; i++)
    if (B->pools[i].ready) rk__arena_destroy(&B->pools[i].arena);
  if (!B->cuda) free(B->table);
  free(B->slots);
  free(B->gens);
  free(B->free_slots);
  free(B);
  return rc;
}

/* rk_runtime_destroy, after the kernels and the loop: wait for copies still in flight (their memory
 * is about to go), drop undelivered callbacks. The buffers' handles stay until rk__buffers_free:
 * a kernel abandoned with lanes still running releases its pins when its last lane leaves, which
 * may be after this. */
void rk__buffers_shutdown(rk_runtime *rt) {
  rk__buffers *B = rt->buffers;
  if (B == NULL) return;
  rk__lock(&B->lock);
  while (B->inflight) uv_cond_wait(&B->cond, &B->lock);
  while (B->q_head) {
    copy_rec *c = B->q_head;
    B->q_head = c->next;
    free(c);
  }
  B->q_tail = NULL;
  rk__unlock(&B->lock);
}

/* With the runtime's memory (rk__runtime_release): abandoned lanes may have used B until then. */
void rk__buffers_free(rk_runtime *rt) {
  rk__buffers *B = rt->buffers;
  uint32_t i;
  if (B == NULL) return;
  for (i = 0; i < RK__PIN_BUCKETS; i++)
    while (B->pins[i]) {
      pin_rec *p = B->pins[i];
      B->pins[i] = p->next;
      free(p);
    }
  for (i = 0; i < B->nslots; i++) free(B->slots[i]);
  for (i = 0; i < 2; i++) {
    if (B->pools[i].ready) rk__arena_destroy(&B->pools[i].arena);
    if (B->pools[i].owned) free(B->pools[i].host);
  }
  if (!B->cuda) free(B->table);
  free(B->slots);
  free(B->gens);
  free(B->free_slots);
  uv_cond_destroy(&B->cond);
  uv_mutex_destroy(&B->lock);
  free(B);
  rt->buffers = NULL;
}

rk_dev_buffer *rk__buffers_table(rk_runtime *rt, uint32_t *n) {
  rk__buffers *B = rt->buffers;
  *n = B ? B->nslots : 0;
  return B ? B->table_lanes : NULL;
}

/* The loop thread: deliver due completions, no lock held while a callback runs. */
void rk__buffers_service(rk_runtime *rt) {
  rk__buffers *B = rt->buffers;
  copy_rec *c;
  if (B == NULL) return;
  for (;;) {
    rk__lock(&B->lock);
    if ((c = B->q_head) != NULL) {
      B->q_head = c->next;
      if (B->q_head == NULL) B->q_tail = NULL;
      c->b->cbs--; /* before the callback: it may free the buffer */
    }
    rk__unlock(&B->lock);
    if (c == NULL) return;
    c->fn(c->b, c->status, c->user);
    free(c);
  }
}

/* ---------------------------------------- the table ------------------------------------------ */

/* Write slot i's entry. The lanes read the words with relaxed loads (atomics: a lane may read a
 * slot the host is rewriting when a message names a buffer it does not own; the generation word
 * then refuses it). What a lane may rely on, a live buffer's entry, was written before the handle
 * was returned, hence before any message naming it was published (release) and taken (acquire). */
static void entry_store(rk_dev_buffer *e, uint64_t addr, uint64_t size, uint64_t gen) {
  __atomic_store_n(&e->addr, addr, __ATOMIC_RELAXED);
  __atomic_store_n(&e->size, size, __ATOMIC_RELAXED);
  __atomic_store_n(&e->gen, gen, __ATOMIC_RELAXED);
}

typedef struct sync_done {
  uv_mutex_t lock;
  uv_cond_t cond;
  int done, status;
} sync_done;

static void sync_done_fn(void *arg, int status) {
  sync_done *s = (sync_done *)arg;
  uv_mutex_lock(&s->lock);
  s->done = 1;
  s->status = status;
  uv_cond_broadcast(&s->cond);
  uv_mutex_unlock(&s->lock);
}

/* A table copy nobody waits for completed: the runtime's destroy waits for these too. */
static void entry_done(void *arg, int status) {
  rk__buffers *B = (rk__buffers *)arg;
  (void)status;
  rk__lock(&B->lock);
  B->inflight--;
  uv_cond_broadcast(&B->cond);
  rk__unlock(&B->lock);
}

/* CUDA: copy the mirror's entry i to the device table; wait: until it is there. */
static int entry_push(rk__buffers *B, uint32_t i, int wait) {
  sync_done s;
  int rc;
  if (!B->cuda) return RK_OK;
  if (!wait) {
    rk__lock(&B->lock);
    B->inflight++;
    rk__unlock(&B->lock);
    rc = rk__cuda_copy(B->rt, &B->table_lanes[i], &B->table[i], sizeof B->table[i], entry_done, B);
    if (rc != RK_OK) entry_done(B, rc);
    return rc;
  }
  uv_mutex_init(&s.lock);
  uv_cond_init(&s.cond);
  s.done = 0;
  s.status = 0;
  rc = rk__cuda_copy(B->rt, &B->table_lanes[i], &B->table[i], sizeof B->table[i], sync_done_fn, &s);
  if (rc == RK_OK) {
    uv_mutex_lock(&s.lock);
    while (!s.done) uv_cond_wait(&s.cond, &s.lock);
    uv_mutex_unlock(&s.lock);
    rc = s.status;
  }
  uv_cond_destroy(&s.cond);
  uv_mutex_destroy(&s.lock);
  return rc;
}

/* ---------------------------------------- allocation ----------------------------------------- */

static uint32_t g_buffer_gen; /* the process's last buffer generation (relaxed: only unique) */

static int kind_pool(rk_buffer_kind kind) {
  return kind == RK_BUFFER_DEVICE ? POOL_DEVICE : kind == RK_BUFFER_HOST ? POOL_HOST : -1;
}

/* CPU backend: the pool's block, at its first buffer (under B->lock). */
static int pool_ready(rk__buffers *B, pool *P) {
  int rc;
  if (P->ready) return RK_OK;
  if (B->cuda || P->size == 0) return RK_ESTATE;
  { /* page-aligned, so every buffer is RK__BUF_ALIGN-aligned in memory, not only in the pool */
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, P->size) != 0) return RK_ENOMEM;
    P->host = (uint8_t *)mem;
  }
  if ((rc = rk__arena_init(&P->arena, P->size, RK__BUF_ALIGN)) != RK_OK) {
    free(P->host);
    P->host = NULL;
    return rc;
  }
  P->lanes = P->host;
  P->owned = 1;
  P->ready = 1;
  return RK_OK;
}

int rk_buffer_alloc(rk_runtime *rt, rk_buffer_kind kind, size_t size, rk_buffer **out) {
  rk__buffers *B;
  rk_buffer *b;
  pool *P;
  int pi, rc;
  uint32_t slot;
  if (out) *out = NULL;
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  B = rt->buffers;
  if (out == NULL) return rk__fail(rt, RK_EINVAL, "rk_buffer_alloc: NULL out");
  if ((pi = kind_pool(kind)) < 0) return rk__fail(rt, RK_EINVAL, "rk_buffer_alloc: unknown buffer kind %d", (int)kind);
  if (size == 0) return rk__fail(rt, RK_EINVAL, "rk_buffer_alloc: size 0");
  if (B == NULL) return rk__fail(rt, RK_ESTATE, "rk_buffer_alloc: the runtime has no buffer pools");
  if ((b = (rk_buffer *)rk__calloc(1, sizeof *b)) == NULL) return rk__fail(rt, RK_ENOMEM, "rk_buffer_alloc: out of memory");
  P = &B->pools[pi];
  rk__lock(&B->lock);
  if ((rc = pool_ready(B, P)) != RK_OK) {
    rk__unlock(&B->lock);
    free(b);
    if (rc == RK_ESTATE)
      return rk__fail(rt, RK_ESTATE, "rk_buffer_alloc: the %s pool is empty (size 0 or not prepared when the runtime "
                      "was created)", pi == POOL_DEVICE ? "device" : "host");
    if (rc == RK_EINVAL) /* (the arena refuses a pool smaller than its alignment: the option is wrong) */
      return rk__fail(rt, RK_ENOMEM, "rk_buffer_alloc: the %s pool of %zu bytes is too small for any buffer (runtime "
                      "option buffer_%s_bytes: at least %u)", pi == POOL_DEVICE ? "device" : "host", P->size,
                      pi == POOL_DEVICE ? "device" : "host", (unsigned)RK__BUF_ALIGN);
    return rk__fail(rt, rc, "rk_buffer_alloc: cannot allocate the %zu-byte %s pool", P->size,
                    pi == POOL_DEVICE ? "device" : "host");
  }
  if (size > P->size || B->nfree == 0 || rk__arena_alloc(&P->arena, size, &b->off) != RK_OK) {
    size_t used = P->arena.used;
    uint32_t nfree = B->nfree;
    rk__unlock(&B->lock);
    free(b);
    if (nfree == 0)
      return rk__fail(rt, RK_ENOMEM, "rk_buffer_alloc: all %u buffer slots in use (runtime option max_buffers)",
                      B->nslots);
    return rk__fail(rt, RK_ENOMEM, "rk_buffer_alloc: the %s pool has no free range of %zu bytes (%zu of %zu used; "
                    "runtime option buffer_%s_bytes)", pi == POOL_DEVICE ? "device" : "host", size, used, P->size,
                    pi == POOL_DEVICE ? "device" : "host");
  }
  slot = B->free_slots[--B->nfree];
  b->rt = rt;
  b->slot = slot;
  /* Generations are unique in the process, not per slot: a reference carries only slot and
   * generation, and every runtime numbers its slots from 0, so a reference to another runtime's
   * buffer named this runtime's buffer in the same slot (both generation 1) and was accepted.
   * Now it names no live buffer here (RK_ENOENT). 0 is skipped (a wrap after 2^32 allocations). */
  do
    b->gen = __atomic_add_fetch(&g_buffer_gen, 1u, __ATOMIC_RELAXED);
  while (b->gen == 0);
  B->gens[slot] = b->gen;
  b->kind = kind;
  b->size = size;
  b->bytes = round_up(size, RK__BUF_ALIGN);
  b->host = P->host ? P->host + b->off : NULL;
  b->lanes = P->lanes + b->off;
  B->slots[slot] = b;
  entry_store(&B->table[slot], (uint64_t)(uintptr_t)b->lanes, size, ((uint64_t)b->gen << 1) | 1u);
  rk__unlock(&B->lock);
  /* CUDA: the device's table has the entry before anyone can name the buffer */
  if ((rc = entry_push(B, slot, 1)) != RK_OK) {
    rk__lock(&B->lock);
    entry_store(&B->table[slot], 0, 0, (uint64_t)b->gen << 1);
    B->slots[slot] = NULL;
    B->free_slots[B->nfree++] = slot;
    rk__arena_free(&P->arena, b->off, b->bytes);
    rk__unlock(&B->lock);
    free(b);
    return rc; /* rk__cuda_copy said why */
  }
  *out = b;
  return RK_OK;
}

int rk_buffer_free(rk_buffer *b) {
  rk__buffers *B;
  rk_runtime *rt;
  uint32_t slot;
  if (b == NULL) return RK_EINVAL;
  rt = b->rt;
  B = rt->buffers;
  rk__error_clear(rt);
  rk__lock(&B->lock);
  if (b->pins || b->inflight || b->cbs) {
    uint32_t pins = b->pins, copies = b->inflight + b->cbs;
    rk__unlock(&B->lock);
    if (pins)
      return rk__fail(rt, RK_ESTATE, "rk_buffer_free: %u message(s) referring to the buffer await their reply", pins);
    return rk__fail(rt, RK_ESTATE, "rk_buffer_free: %u cop%s of the buffer not complete (rk_buffer_wait)", copies,
                    copies == 1 ? "y" : "ies");
  }
  slot = b->slot;
  B->slots[slot] = NULL;
  entry_store(&B->table[slot], 0, 0, (uint64_t)b->gen << 1); /* not live */
  rk__arena_free(&B->pools[kind_pool(b->kind)].arena, b->off, b->bytes);
  B->free_slots[B->nfree++] = slot;
  rk__unlock(&B->lock);
  /* No message can name the slot's old generation any more (senders check under the lock, and the
   * pins are gone): the device's copy of the entry may follow later, in stream order. */
  (void)entry_push(B, slot, 0);
  free(b);
  return RK_OK;
}

size_t rk_buffer_size(const rk_buffer *b) { return b ? b->size : 0; }
rk_buffer_kind rk_buffer_get_kind(const rk_buffer *b) { return b ? b->kind : (rk_buffer_kind)0; }
void *rk_buffer_host_ptr(rk_buffer *b) { return b && b->kind == RK_BUFFER_HOST ? b->host : NULL; }

int rk_buffer_pool_usage(rk_runtime *rt, rk_buffer_kind kind, size_t *used, size_t *size) {
  rk__buffers *B;
  int pi;
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  B = rt->buffers;
  if ((pi = kind_pool(kind)) < 0) return rk__fail(rt, RK_EINVAL, "rk_buffer_pool_usage: unknown buffer kind %d", (int)kind);
  if (B == NULL) return rk__fail(rt, RK_ESTATE, "rk_buffer_pool_usage: the runtime has no buffer pools");
  rk__lock(&B->lock);
  if (used) *used = B->pools[pi].ready ? B->pools[pi].arena.used : 0;
  if (size) *size = B->pools[pi].size;
  rk__unlock(&B->lock);
  return RK_OK;
}

int rk_buffer_ref(rk_buffer *b, uint64_t offset, uint64_t length, uint32_t access, rk_buf_ref *out) {
  if (b == NULL) return RK_EINVAL;
  rk__error_clear(b->rt);
  if (out == NULL) return rk__fail(b->rt, RK_EINVAL, "rk_buffer_ref: NULL out");
  if (access == 0 || (access & ~RK_BUF_RW) != 0)
    return rk__fail(b->rt, RK_EINVAL, "rk_buffer_ref: access 0x%x is not RK_BUF_READ, RK_BUF_WRITE or RK_BUF_RW", access);
  if (offset > b->size || length > b->size - offset)
    return rk__fail(b->rt, RK_EMSGSIZE, "rk_buffer_ref: [%llu, +%llu) is beyond the %zu-byte buffer",
                    (unsigned long long)offset, (unsigned long long)length, b->size);
  memset(out, 0, sizeof *out);
  out->buffer = b->slot;
  out->gen = b->gen;
  out->offset = offset;
  out->length = length;
  out->access = access;
  return RK_OK;
}

/* ---------------------------------------- copies --------------------------------------------- */

static void queue_done(rk__buffers *B, copy_rec *c) { /* under B->lock */
  c->next = NULL;
  c->b->cbs++;
  if (B->q_tail)
    B->q_tail->next = c;
  else
    B->q_head = c;
  B->q_tail = c;
}

/* A CUDA copy completed (the CUDA runtime's callback thread: no CUDA call here). */
static void copy_done(void *arg, int status) {
  copy_rec *c = (copy_rec *)arg;
  rk__buffers *B = c->B;
  int wake = 0;
  rk__lock(&B->lock);
  c->b->inflight--;
  B->inflight--;
  if (status && !c->b->copy_err) c->b->copy_err = status;
  c->status = status;
  c->done = 1;
  if (c->fn) {
    queue_done(B, c);
    wake = 1;
  }
  uv_cond_broadcast(&B->cond);
  rk__unlock(&B->lock);
  if (wake) rk__service_wake(B->rt);
}

static int copy(rk_buffer *b, size_t offset, void *host, size_t len, int to_buffer, rk_copy_fn fn, void *user) {
  rk_runtime *rt;
  rk__buffers *B;
  copy_rec *c;
  int rc;
  const char *what = to_buffer ? "rk_buffer_write" : "rk_buffer_read";
  if (b == NULL) return RK_EINVAL;
  rt = b->rt;
  B = rt->buffers;
  rk__error_clear(rt);
  if (host == NULL || len == 0) return rk__fail(rt, RK_EINVAL, "%s: NULL memory or length 0", what);
  if (offset > b->size || len > b->size - offset)
    return rk__fail(rt, RK_EMSGSIZE, "%s: [%zu, +%zu) is beyond the %zu-byte buffer", what, offset, len, b->size);
  if (b->host) {
    /* host-addressable (the CPU backend, pinned host buffers): the copy is done here */
    if (to_buffer)
      memcpy(b->host + offset, host, len);
    else
      memcpy(host, b->host + offset, len);
    if (fn == NULL) return RK_OK;
    if ((c = (copy_rec *)rk__calloc(1, sizeof *c)) == NULL)
      return rk__fail(rt, RK_ENOMEM, "%s: out of memory for the completion (the copy was made)", what);
    c->B = B;
    c->b = b;
    c->fn = fn;
    c->user = user;
    c->done = 1;
    rk__lock(&B->lock);
    queue_done(B, c);
    rk__unlock(&B->lock);
    rk__service_wake(rt);
    return RK_OK;
  }
  /* CUDA device buffer: the runtime's copy stream */
  if ((c = (copy_rec *)rk__calloc(1, sizeof *c)) == NULL) return rk__fail(rt, RK_ENOMEM, "%s: out of memory", what);
  c->B = B;
  c->b = b;
  c->fn = fn;
  c->user = user;
  rk__lock(&B->lock);
  b->inflight++;
  B->inflight++;
  rk__unlock(&B->lock);
  rc = to_buffer ? rk__cuda_copy(rt, b->lanes + offset, host, len, copy_done, c)
                 : rk__cuda_copy(rt, host, b->lanes + offset, len, copy_done, c);
  if (rc != RK_OK) { /* not issued: nothing will complete it */
    rk__lock(&B->lock);
    b->inflight--;
    B->inflight--;
    uv_cond_broadcast(&B->cond);
    rk__unlock(&B->lock);
    free(c);
    return rc;
  }
  if (fn) return RK_OK; /* c belongs to the completion now */
  rk__lock(&B->lock);
  while (!c->done) uv_cond_wait(&B->cond, &B->lock);
  rc = c->status;
  rk__unlock(&B->lock);
  free(c);
  return rc ? rk__fail(rt, rc, "%s: the copy failed", what) : RK_OK;
}

int rk_buffer_write(rk_buffer *b, size_t offset, const void *src, size_t len, rk_copy_fn done, void *user) {
  return copy(b, offset, (void *)(uintptr_t)src, len, 1, done, user);
}

int rk_buffer_read(rk_buffer *b, size_t offset, void *dst, size_t len, rk_copy_fn done, void *user) {
  return copy(b, offset, dst, len, 0, done, user);
}

int rk_buffer_wait(rk_buffer *b, int64_t timeout_ns) {
  rk__buffers *B;
  uint64_t deadline;
  int rc;
  if (b == NULL) return RK_EINVAL;
  B = b->rt->buffers;
  rk__error_clear(b->rt);
  deadline = timeout_ns < 0 ? UINT64_MAX : rk__now_ns() + (uint64_t)timeout_ns;
  rk__lock(&B->lock);
  while (b->inflight) {
    uint64_t now = rk__now_ns();
    if (deadline != UINT64_MAX && now >= deadline) break;
    if (deadline == UINT64_MAX)
      uv_cond_wait(&B->cond, &B->lock);
    else
      (void)uv_cond_timedwait(&B->cond, &B->lock, deadline - now);
  }
  if (b->inflight) {
    uint32_t n = b->inflight;
    rk__unlock(&B->lock);
    return rk__fail(b->rt, RK_ETIMEDOUT, "rk_buffer_wait: %u cop%s still in progress", n, n == 1 ? "y" : "ies");
  }
  rc = b->copy_err;
  b->copy_err = 0;
  rk__unlock(&B->lock);
  return rc ? rk__fail(b->rt, rc, "rk_buffer_wait: a copy failed") : RK_OK;
}

/* ---------------------------------------- references and pins -------------------------------- */

static uint32_t pin_bucket(uint64_t id) { return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 56) % RK__PIN_BUCKETS; }

/* Check the nrefs references at the start of payload (a copy the caller may change), stamp them
 * with id and pin their buffers for k. RK_ENOENT (a reference to no live buffer), RK_ENOMEM. */
static int pin_refs(rk_kernel *k, rk_buf_ref *refs, uint32_t nrefs, uint64_t id) {
  rk__buffers *B = k->rt->buffers;
  pin_rec *p;
  uint32_t i, j;
  if (B == NULL) return rk__fail(k->rt, RK_ESTATE, "send to %s: the runtime has no buffer pools", k->name);
  if ((p = (pin_rec *)rk__calloc(1, sizeof *p)) == NULL)
    return rk__fail(k->rt, RK_ENOMEM, "send to %s: out of memory for the buffer pins", k->name);
  p->k = k;
  p->msg_id = id;
  rk__lock(&B->lock);
  for (i = 0; i < nrefs; i++) {
    rk_buffer *b = refs[i].buffer < B->nslots ? B->slots[refs[i].buffer] : NULL;
    if (b == NULL || b->gen != refs[i].gen) {
      rk__unlock(&B->lock);
      free(p);
      return rk__fail(k->rt, RK_ENOENT, "send to %s: reference %u names no live buffer (slot %u, generation %u)",
                      k->name, i, refs[i].buffer, refs[i].gen);
    }
    refs[i].msg = id;
    for (j = 0; j < p->n && p->bufs[j] != b; j++) {
    }
    if (j == p->n) p->bufs[p->n++] = b; /* a buffer named twice is pinned once */
  }
  for (j = 0; j < p->n; j++) p->bufs[j]->pins++;
  i = pin_bucket(id);
  p->next = B->pins[i];
  B->pins[i] = p;
  /* relaxed: the drainer reads it after taking a reply to a message published after this */
  __atomic_add_fetch(&k->buf_pins, 1, __ATOMIC_RELAXED);
  rk__unlock(&B->lock);
  return RK_OK;
}

static void unpin(pin_rec **pp) { /* under the buffers lock */
  pin_rec *p = *pp;
  uint32_t j;
  *pp = p->next;
  for (j = 0; j < p->n; j++) p->bufs[j]->pins--;
  __atomic_sub_fetch(&p->k->buf_pins, 1, __ATOMIC_RELAXED);
  free(p);
}

static void unpin_id(rk_kernel *k, uint64_t id) {
  rk__buffers *B = k->rt->buffers;
  pin_rec **pp;
  if (B == NULL) return;
  rk__lock(&B->lock);
  for (pp = &B->pins[pin_bucket(id)]; *pp; pp = &(*pp)->next)
    if ((*pp)->k == k && (*pp)->msg_id == id) {
      unpin(pp);
      break;
    }
  rk__unlock(&B->lock);
}

/* messaging.c: a reply to message id of k was taken from an outbox (every reply, late ones too;
 * idempotent: a reply seen twice finds its pins gone). Called under k->reply_lock. */
void rk__buffers_replied(rk_kernel *k, uint64_t id) { unpin_id(k, id); }

/* kernel.c: k is being freed: its lanes are gone, so are its messages' pins. A kernel whose lanes'
 * exit was not confirmed (shared_kept) keeps them: they may still use the memory. */
void rk__buffers_kernel_free(rk_kernel *k) {
  rk__buffers *B = k->rt ? k->rt->buffers : NULL;
  uint32_t i;
  if (B == NULL || __atomic_load_n(&k->buf_pins, __ATOMIC_RELAXED) == 0) return;
  rk__lock(&B->lock);
  for (i = 0; i < RK__PIN_BUCKETS; i++) {
    pin_rec **pp = &B->pins[i];
    while (*pp) {
      if ((*pp)->k != k) {
        pp = &(*pp)->next;
      } else if (k->shared_kept) {
        (*pp)->k = NULL; /* never matched again: the buffers stay pinned for the runtime's life */
        pp = &(*pp)->next;
      } else {
        unpin(pp);
      }
    }
  }
  rk__unlock(&B->lock);
}

/* The references of a send: checked, then a copy of the payload stamped with the id. */
static int refs_prepare(rk_kernel *k, const void *payload, uint32_t len, uint32_t nrefs, uint32_t flags,
                        uint8_t *stack, size_t stack_len, uint8_t **copy) {
  if (nrefs == 0 || nrefs > RK_MAX_REFS)
    return rk__fail(k->rt, RK_EINVAL, "send to %s: %u references (1 to %u)", k->name, nrefs, RK_MAX_REFS);
  if (payload == NULL || len < nrefs * (uint32_t)sizeof(rk_buf_ref))
    return rk__fail(k->rt, RK_EINVAL, "send to %s: a %u-byte payload cannot begin with %u references", k->name, len,
                    nrefs);
  if (flags & RK_SEND_NO_REPLY)
    return rk__fail(k->rt, RK_EINVAL, "send to %s: a message with buffer references must want a reply (the reply "
                    "releases the buffers)", k->name);
  *copy = len <= stack_len ? stack : (uint8_t *)rk__malloc(len);
  if (*copy == NULL) return rk__fail(k->rt, RK_ENOMEM, "send to %s: out of memory", k->name);
  memcpy(*copy, payload, len);
  return RK_OK;
}

int rk_send_refs(rk_kernel *k, uint32_t type, const void *payload, uint32_t len, uint32_t nrefs, uint32_t flags,
                 uint64_t *msg_id) {
  uint8_t stack[512], *copy = NULL;
  uint64_t id;
  int rc;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if ((rc = refs_prepare(k, payload, len, nrefs, flags, stack, sizeof stack, &copy)) != RK_OK) return rc;
  id = rk__msg_id(k->rt);
  if ((rc = pin_refs(k, (rk_buf_ref *)(void *)copy, nrefs, id)) == RK_OK) {
    rc = rk__send_id(k, type, copy, len, flags, id);
    if (rc != RK_OK)
      unpin_id(k, id); /* nothing was sent */
    else if (msg_id)
      *msg_id = id;
  }
  if (copy != stack) free(copy);
  return rc;
}

int rk_call_refs(rk_kernel *k, uint32_t type, const void *req, uint32_t req_len, uint32_t nrefs, rk_msg *reply,
                 void *buf, uint32_t buf_len, int64_t timeout_ns) {
  uint8_t stack[512], *copy = NULL;
  uint64_t id;
  int rc, sent = 0;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if ((rc = refs_prepare(k, req, req_len, nrefs, 0, stack, sizeof stack, &copy)) != RK_OK) return rc;
  id = rk__msg_id(k->rt) | RK__CALL_BIT;
  if ((rc = pin_refs(k, (rk_buf_ref *)(void *)copy, nrefs, id)) == RK_OK) {
    rc = rk__call_id(k, type, copy, req_len, reply, buf, buf_len, timeout_ns, id, &sent);
    if (!sent) unpin_id(k, id); /* otherwise its reply, or the kernel's end, releases the pins */
  }
  if (copy != stack) free(copy);
  return rc;
}

/* ---------------------------------------- the dialect (CPU backend) -------------------------- */

/* The lane's check of a reference: its table entry (relaxed loads, as a GPU lane's), the message
 * that declared it, the access and the bounds. */
int rk_buffer_get(rk_ctx *ctx, const rk_buf_ref *ref, uint32_t want, void **ptr) {
  rk__buffers *B;
  const rk_dev_buffer *e;
  uint64_t addr, size, gen;
  if (ptr == NULL) return RK_EINVAL;
  *ptr = NULL;
  if (ctx == NULL || ref == NULL) return RK_EINVAL;
  B = ctx->k->rt->buffers;
  if (B == NULL || ref->buffer >= B->nslots) return RK_ENOENT;
  e = &B->table_lanes[ref->buffer];
  gen = __atomic_load_n(&e->gen, __ATOMIC_RELAXED);
  addr = __atomic_load_n(&e->addr, __ATOMIC_RELAXED);
  size = __atomic_load_n(&e->size, __ATOMIC_RELAXED);
  if (gen != (((uint64_t)ref->gen << 1) | 1u)) return RK_ENOENT;
  if (ctx->lane->cur == NULL || ref->msg != ctx->lane->cur->env.msg_id) return RK_EINVAL;
  if (want == 0 || (want & ~ref->access) != 0 || (ref->access & ~RK_BUF_RW) != 0) return RK_EINVAL;
  if (ref->offset > size || ref->length > size - ref->offset) return RK_EMSGSIZE;
  *ptr = (void *)(uintptr_t)(addr + ref->offset);
  return RK_OK;
}

void *rk_buffer_ptr(rk_ctx *ctx, const rk_buf_ref *ref, uint32_t want) {
  void *p = NULL;
  (void)rk_buffer_get(ctx, ref, want, &p);
  return p;
}
