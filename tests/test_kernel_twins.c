/* test_kernel_twins.c — one dialect source (twin_kernel.c), two ways to the CPU backend: built
 * into this test by ringkernel_add_kernels (RK_KERNEL: the descriptor `tally`; the fatbin too where
 * the build has CUDA), and handed to the runtime as source text (compiled by cc at launch). Both
 * pass the same checks (twin_check.h), with one and with four threads per lane. */
#include <ftw.h>
#include <unistd.h>

#include "rt_util.h"
#include "twin_kernel.h"
#include "twin_check.h"

static char cache[64];

static void run(const rk_kernel_desc *d, uint32_t threads) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, d, &lo);
  assert_int_equal(rk_kernel_lanes(k), 2);
  twin_check(k, 2, RT_HANG);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  rk_runtime_destroy(rt); /* frees k */
}

static void test_descriptor(void **state) {
  (void)state;
  /* RK_KERNEL filled what the descriptor says, and the device image exactly when nvcc built one */
  assert_int_equal(tally.size, sizeof(rk_kernel_desc));
  assert_string_equal(tally.name, "tally");
  assert_non_null(tally.handler);
  assert_int_equal(tally.state_size, 2 * sizeof(int64_t) * TALLY_KEYS);
  assert_int_equal(tally.lanes, 2);
  assert_int_equal(tally.n_types, 1);
  assert_int_equal(tally.types[0]->id, tally_add_TYPE);
  assert_null(tally.source);
#if defined(RK_TEST_HAVE_CUDA)
  assert_non_null(tally.cuda_image);
  assert_string_equal(tally.cuda_entry, "rk_kernel_tally");
  assert_int_equal(((const unsigned char *)tally.cuda_image)[0], 0x50); /* fatbin magic 0xBA55ED50 */
#else
  assert_null(tally.cuda_image);
  assert_null(tally.cuda_entry);
#endif
}

static void test_compiled(void **state) {
  (void)state;
  run(&tally, 1);
  run(&tally, 4);
}

static void test_source(void **state) {
  rk_kernel_desc d = twin_source_desc();
  (void)state;
  run(&d, 1);
  run(&d, 4);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_descriptor),
      cmocka_unit_test(test_compiled),
      cmocka_unit_test(test_source),
  };
  int rc;
  snprintf(cache, sizeof cache, "/tmp/rk-twins-XXXXXX");
  if (mkdtemp(cache) == NULL || setenv("RK_CACHE_DIR", cache, 1) != 0) return 1;
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  (void)nftw(cache, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  return rc;
}
