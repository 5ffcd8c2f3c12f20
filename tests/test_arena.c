/* test_arena.c — the sub-allocator behind the CUDA backend's pinned and device arenas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "host/arena.h"
#include "ringkernel/error.h"

static void alloc_free_coalesce(void **state) {
  rk_arena a;
  size_t o1, o2, o3, o4;
  (void)state;
  assert_int_equal(rk__arena_init(&a, 1024, 128), RK_OK);
  assert_int_equal(rk__arena_alloc(&a, 100, &o1), RK_OK); /* rounded to 128 */
  assert_int_equal(rk__arena_alloc(&a, 256, &o2), RK_OK);
  assert_int_equal(rk__arena_alloc(&a, 128, &o3), RK_OK);
  assert_int_equal(o1, 0);
  assert_int_equal(o2, 128);
  assert_int_equal(o3, 384);
  assert_int_equal(a.used, 512);
  assert_int_equal(rk__arena_alloc(&a, 1024, &o4), RK_ENOMEM); /* only 512 left */
  rk__arena_free(&a, o2, 256);
  assert_int_equal(rk__arena_alloc(&a, 200, &o4), RK_OK); /* first fit reuses the hole */
  assert_int_equal(o4, 128);
  rk__arena_free(&a, o1, 100);
  rk__arena_free(&a, o4, 200);
  rk__arena_free(&a, o3, 128);
  assert_int_equal(a.used, 0);
  /* everything coalesced back into one range: the whole arena is allocatable again */
  assert_int_equal(rk__arena_alloc(&a, 1024, &o1), RK_OK);
  assert_int_equal(o1, 0);
  rk__arena_free(&a, o1, 1024);
  rk__arena_destroy(&a);
}

static void random_pattern_never_overlaps(void **state) {
  enum { N = 64 };
  rk_arena a;
  size_t off[N], len[N];
  int live[N] = {0}, i, round;
  unsigned char *mem = calloc(1, 1 << 16);
  (void)state;
  assert_non_null(mem);
  assert_int_equal(rk__arena_init(&a, 1 << 16, 64), RK_OK);
  srand(7);
  for (round = 0; round < 5000; round++) {
    i = rand() % N;
    if (live[i]) {
      size_t j;
      for (j = 0; j < len[i]; j++) assert_int_equal(mem[off[i] + j], (unsigned char)i); /* nobody overwrote */
      memset(mem + off[i], 0, len[i]);
      rk__arena_free(&a, off[i], len[i]);
      live[i] = 0;
    } else {
      len[i] = 1 + (size_t)(rand() % 2000);
      if (rk__arena_alloc(&a, len[i], &off[i]) == RK_OK) {
        size_t j;
        assert_true(off[i] % 64 == 0);
        assert_true(off[i] + len[i] <= (1u << 16));
        for (j = 0; j < len[i]; j++) assert_int_equal(mem[off[i] + j], 0); /* was free */
        memset(mem + off[i], i, len[i]);
        live[i] = 1;
      }
    }
  }
  for (i = 0; i < N; i++)
    if (live[i]) rk__arena_free(&a, off[i], len[i]);
  assert_int_equal(a.used, 0);
  rk__arena_destroy(&a);
  free(mem);
}

static void bad_arguments(void **state) {
  rk_arena a;
  size_t o;
  (void)state;
  assert_int_equal(rk__arena_init(&a, 1024, 100), RK_EINVAL); /* not a power of two */
  assert_int_equal(rk__arena_init(&a, 64, 128), RK_EINVAL);   /* smaller than one unit */
  assert_int_equal(rk__arena_init(NULL, 1024, 128), RK_EINVAL);
  assert_int_equal(rk__arena_init(&a, 1024, 128), RK_OK);
  assert_int_equal(rk__arena_alloc(&a, 0, &o), RK_EINVAL);
  assert_int_equal(rk__arena_alloc(&a, 8, NULL), RK_EINVAL);
  rk__arena_destroy(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(alloc_free_coalesce),
      cmocka_unit_test(random_pattern_never_overlaps),
      cmocka_unit_test(bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
