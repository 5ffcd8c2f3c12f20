/* arena.c — first-fit sub-allocation with coalescing free ranges (see arena.h). */
#include <stdlib.h>

#include "host/arena.h"
#include "ringkernel/error.h"

struct rk_arena_block {
  rk_arena_block *next;
  size_t offset;
  size_t size;
};

static size_t round_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

int rk__arena_init(rk_arena *a, size_t size, size_t align) {
  if (a == NULL || align == 0 || (align & (align - 1)) != 0 || size < align) return RK_EINVAL;
  a->size = size & ~(align - 1);
  a->align = align;
  a->used = 0;
  a->free_list = (rk_arena_block *)malloc(sizeof *a->free_list);
  if (a->free_list == NULL) return RK_ENOMEM;
  a->free_list->next = NULL;
  a->free_list->offset = 0;
  a->free_list->size = a->size;
  return RK_OK;
}

void rk__arena_destroy(rk_arena *a) {
  while (a && a->free_list) {
    rk_arena_block *b = a->free_list;
    a->free_list = b->next;
    free(b);
  }
}

int rk__arena_alloc(rk_arena *a, size_t n, size_t *offset) {
  rk_arena_block **pb, *b;
  if (a == NULL || offset == NULL || n == 0) return RK_EINVAL;
  n = round_up(n, a->align);
  for (pb = &a->free_list; (b = *pb) != NULL; pb = &b->next) {
    if (b->size < n) continue;
    *offset = b->offset;
    b->offset += n;
    b->size -= n;
    if (b->size == 0) {
      *pb = b->next;
      free(b);
    }
    a->used += n;
    return RK_OK;
  }
  return RK_ENOMEM;
}

void rk__arena_free(rk_arena *a, size_t offset, size_t n) {
  rk_arena_block **pb, *b, *prev = NULL, *nb;
  if (a == NULL || n == 0) return;
  n = round_up(n, a->align);
  for (pb = &a->free_list; (b = *pb) != NULL && b->offset < offset; pb = &b->next) prev = b;
  a->used -= n;
  /* merge with the previous range, the next one, or both */
  if (prev && prev->offset + prev->size == offset) {
    prev->size += n;
    if (b && offset + n == b->offset) {
      prev->size += b->size;
      prev->next = b->next;
      free(b);
    }
    return;
  }
  if (b && offset + n == b->offset) {
    b->offset = offset;
    b->size += n;
    return;
  }
  nb = (rk_arena_block *)malloc(sizeof *nb);
  if (nb == NULL) {
    /* Losing a free range leaks arena space, never memory safety: it stays counted in used, so
     * the pool's usage shows it (it did not: used went down for a range no allocation can get) */
    a->used += n;
    return;
  }
  nb->offset = offset;
  nb->size = n;
  nb->next = b;
  *pb = nb;
}
