/* test_nvrtc.c — the NVRTC glue compiles a handler written in the dialect, together with the
 * embedded device runtime, into a persistent ring kernel; no GPU is needed. Skipped (77) when
 * NVRTC cannot be loaded, unless RK_REQUIRE_GPU=1 (set by scripts/gpu-bundle.sh's run.sh and
 * scripts/gpu-check.sh): then that is a failure, with the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "host/internal.h"
#include "nvrtc_sample.h"
#include "twin_source.h"

static const char *handler_src = rk_test_twice_src;

static void compiles_to_ptx_with_entry_and_ordering(void **state) {
  const char *img = NULL;
  size_t len = 0;
  char log[4096];
  (void)state;
  assert_int_equal(rk__nvrtc_compile(handler_src, "twice", "rk_test_entry", "compute_75", 0, &img, &len, log, sizeof log),
                   RK_OK);
  assert_non_null(img);
  assert_true(len > 100);
  assert_non_null(strstr(img, ".entry rk_test_entry("));
  assert_non_null(strstr(img, "ld.acquire.sys"));
  assert_non_null(strstr(img, "st.release.sys"));
  assert_non_null(strstr(img, "fence.acq_rel.sys"));
  assert_non_null(strstr(img, "%globaltimer"));
}

static void compiles_to_cubin_for_hopper(void **state) {
  const char *img = NULL;
  size_t len = 0;
  char log[4096];
  (void)state;
  assert_int_equal(rk__nvrtc_compile(handler_src, "twice", "rk_test_entry", "sm_90", 1, &img, &len, log, sizeof log),
                   RK_OK);
  assert_true(len > 4);
  assert_memory_equal(img, "\x7f" "ELF", 4);
}

static void cache_returns_the_same_image(void **state) {
  const char *a = NULL, *b = NULL;
  size_t la = 0, lb = 0;
  uint64_t before;
  (void)state;
  assert_int_equal(rk__nvrtc_compile(handler_src, "twice", "rk_cached", "compute_75", 0, &a, &la, NULL, 0), RK_OK);
  before = rk__nvrtc_compile_count();
  assert_int_equal(rk__nvrtc_compile(handler_src, "twice", "rk_cached", "compute_75", 0, &b, &lb, NULL, 0), RK_OK);
  assert_int_equal(rk__nvrtc_compile_count(), before); /* no second compilation */
  assert_ptr_equal(a, b);
  assert_int_equal(la, lb);
  /* a different entry name is a different program */
  assert_int_equal(rk__nvrtc_compile(handler_src, "twice", "rk_other", "compute_75", 0, &b, &lb, NULL, 0), RK_OK);
  assert_int_equal(rk__nvrtc_compile_count(), before + 1);
  assert_ptr_not_equal(a, b);
}

static void compile_error_returns_einval_with_log(void **state) {
  const char *img = NULL;
  size_t len = 0;
  char log[4096];
  (void)state;
  assert_int_equal(rk__nvrtc_compile("RK_HANDLER(bad)(rk_ctx *ctx, const rk_msg *in) { return undeclared_name; }",
                                     "bad", "rk_bad", "compute_75", 0, &img, &len, log, sizeof log),
                   RK_EINVAL);
  assert_null(img);
  assert_non_null(strstr(log, "undeclared_name"));
}

/* An application's kernel source as it is written for ringkernel_add_kernels (tests/twin_kernel.c
 * with its header: RK_KERNEL, RK_TYPES and RK_KERNEL_DECLARE in it, <ringkernel.h> included) also
 * compiles as a run-time source: what test_gpu's custom_kernel_source launches. */
static void application_kernel_source_compiles(void **state) {
  const char *img = NULL;
  size_t len = 0;
  char log[4096];
  (void)state;
  if (rk__nvrtc_compile(rk_test_twin_source, "tally_handler", "rk_twin_entry", "sm_90", 1, &img, &len, log,
                        sizeof log) != RK_OK)
    fail_msg("NVRTC: %s", log);
  assert_true(len > 4);
  assert_memory_equal(img, "\x7f" "ELF", 4);
}

static void bad_arguments(void **state) {
  const char *img = NULL;
  size_t len = 0;
  (void)state;
  assert_int_equal(rk__nvrtc_compile(NULL, "h", "e", "compute_75", 0, &img, &len, NULL, 0), RK_EINVAL);
  assert_int_equal(rk__nvrtc_compile("x", NULL, "e", "compute_75", 0, &img, &len, NULL, 0), RK_EINVAL);
  assert_int_equal(rk__nvrtc_compile("x", "h", "e", "compute_75", 0, NULL, &len, NULL, 0), RK_EINVAL);
}

int main(void) {
  char why[256];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(compiles_to_ptx_with_entry_and_ordering),
      cmocka_unit_test(compiles_to_cubin_for_hopper),
      cmocka_unit_test(cache_returns_the_same_image),
      cmocka_unit_test(compile_error_returns_einval_with_log),
      cmocka_unit_test(application_kernel_source_compiles),
      cmocka_unit_test(bad_arguments),
  };
  if (!rk__nvrtc_available(why, sizeof why)) {
    const char *require = getenv("RK_REQUIRE_GPU");
    if (require && strcmp(require, "1") == 0) { /* a GPU machine: NVRTC missing is a broken setup */
      printf("FAILED: RK_REQUIRE_GPU=1 but NVRTC cannot be loaded: %s (RK_NVRTC_LIBRARY=%s)\n", why,
             getenv("RK_NVRTC_LIBRARY") ? getenv("RK_NVRTC_LIBRARY") : "unset");
      return 1;
    }
    printf("skipped: %s\n", why);
    return 77;
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
