/* host/arena.h — a first-fit sub-allocator over one pre-allocated block.
 *
 * The CUDA backend allocates its pinned and device arenas once, before the first persistent
 * kernel is resident (cudaHostAlloc and cudaMalloc may synchronise with a running kernel:
 * ARCHITECTURE §8), and sub-allocates from them afterwards. Offsets, not pointers, so one arena
 * serves the host and device views of mapped memory. Not thread-safe: the caller locks. */
#ifndef RK_HOST_ARENA_H
#define RK_HOST_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct rk_arena_block rk_arena_block;

typedef struct rk_arena {
  size_t size;
  size_t align;
  size_t used;
  rk_arena_block *free_list; /* sorted by offset, coalesced */
} rk_arena;

/* align must be a power of two. Returns 0 or RK_ENOMEM / RK_EINVAL. */
int rk__arena_init(rk_arena *a, size_t size, size_t align);
void rk__arena_destroy(rk_arena *a);
/* Allocate n bytes (rounded up to align): *offset receives the block's offset. RK_ENOMEM when no
 * free range is large enough. */
int rk__arena_alloc(rk_arena *a, size_t n, size_t *offset);
/* Return a block: offset and n exactly as allocated. */
void rk__arena_free(rk_arena *a, size_t offset, size_t n);

#endif
