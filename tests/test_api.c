/* test_api.c — the C API for callers through the C ABI (issue 14): the options' defaults as
 * functions, struct sizes, message types by name, the application error-code range; and the
 * monitoring outputs (Prometheus text, the /metrics endpoint) when the library has them. */
#include "rt_util.h"

static void test_options_init(void **state) {
  rk_runtime_options want = RK_RUNTIME_OPTIONS_INIT, got;
  rk_launch_options lwant = RK_LAUNCH_OPTIONS_INIT, lgot;
  (void)state;
  memset(&got, 0xab, sizeof got);
  assert_int_equal(rk_runtime_options_init(&got, sizeof got), RK_OK);
  assert_memory_equal(&got, &want, sizeof got);
  memset(&lgot, 0xab, sizeof lgot);
  assert_int_equal(rk_launch_options_init(&lgot, sizeof lgot), RK_OK);
  assert_memory_equal(&lgot, &lwant, sizeof lgot);
  /* an older, smaller struct: only its bytes are written, size says so */
  {
    unsigned char small[sizeof(rk_runtime_options) + 8];
    rk_runtime_options *o = (rk_runtime_options *)(void *)small;
    memset(small, 0x5a, sizeof small);
    assert_int_equal(rk_runtime_options_init(o, 16), RK_OK);
    assert_int_equal(o->size, 16);
    assert_int_equal(small[16], 0x5a);
    /* a bigger one (a newer caller): the library's part, size says how much it knows */
    memset(small, 0x5a, sizeof small);
    assert_int_equal(rk_runtime_options_init(o, sizeof small), RK_OK);
    assert_int_equal(o->size, sizeof(rk_runtime_options));
    assert_int_equal(small[sizeof(rk_runtime_options)], 0x5a);
  }
  assert_int_equal(rk_runtime_options_init(NULL, sizeof got), RK_EINVAL);
  assert_int_equal(rk_runtime_options_init(&got, 2), RK_EINVAL);
  assert_int_equal(rk_launch_options_init(NULL, sizeof lgot), RK_EINVAL);
  assert_int_equal(rk_launch_options_init(&lgot, 0), RK_EINVAL);
  /* the defaults from the function create a runtime */
  {
    rk_runtime *rt;
    assert_int_equal(rk_runtime_options_init(&got, sizeof got), RK_OK);
    got.backend = RK_BACKEND_CPU;
    assert_int_equal(rk_runtime_create(&rt, &got), RK_OK);
    rk_runtime_destroy(rt);
  }
}

static void test_struct_sizes(void **state) {
  (void)state;
  assert_int_equal(rk_struct_size("runtime_options"), sizeof(rk_runtime_options));
  assert_int_equal(rk_struct_size("launch_options"), sizeof(rk_launch_options));
  assert_int_equal(rk_struct_size("kernel_desc"), sizeof(rk_kernel_desc));
  assert_int_equal(rk_struct_size("msg"), sizeof(rk_msg));
  assert_int_equal(rk_struct_size("kernel_counters"), sizeof(rk_kernel_counters));
  assert_int_equal(rk_struct_size("envelope"), 64);
  assert_int_equal(rk_struct_size("msg_type"), sizeof(rk_msg_type));
  assert_int_equal(rk_struct_size("nope"), 0);
  assert_int_equal(rk_struct_size(NULL), 0);
}

static void test_msg_type_find(void **state) {
  const rk_msg_type *t;
  (void)state;
  t = rk_msg_type_find(NULL, "rk_vadd_req");
  assert_non_null(t);
  assert_int_equal(t->id, rk_vadd_req_TYPE);
  assert_int_equal(t->size, sizeof(rk_vadd_req));
  t = rk_msg_type_find(NULL, "rk_counter_value");
  assert_non_null(t);
  assert_int_equal(t->id, rk_counter_value_TYPE);
  assert_null(rk_msg_type_find(NULL, "nope"));
  assert_null(rk_msg_type_find(NULL, NULL));
  /* a descriptor's own types; its list only */
  t = rk_msg_type_find(&rk_builtin_counter, "rk_counter_add");
  assert_non_null(t);
  assert_int_equal(t->id, rk_counter_add_TYPE);
  assert_null(rk_msg_type_find(&rk_builtin_counter, "rk_vadd_req"));
  assert_null(rk_msg_type_find(&rk_builtin_echo, "rk_vadd_req")); /* untyped */
}

static void test_app_error_codes(void **state) {
  (void)state;
  assert_int_equal(RK_EAPP(0), -1000);
  assert_int_equal(RK_EAPP(RK_EAPP_MAX), -66535);
  assert_int_equal(rk_err_app(RK_EAPP(42)), 42);
  assert_int_equal(rk_err_app(RK_EAPP(0)), 0);
  assert_int_equal(rk_err_app(RK_EINVAL), -1);
  assert_int_equal(rk_err_app(-999), -1);
  assert_int_equal(rk_err_app(-66536), -1);
  assert_string_equal(rk_strerror(RK_EAPP(42)), "application error 42");
  assert_string_equal(rk_strerror(RK_EAPP(RK_EAPP_MAX)), "application error 65535");
  assert_string_equal(rk_err_name(RK_EAPP(3)), "RK_EAPP");
  assert_string_equal(rk_strerror(-999), "unknown error");
  assert_string_equal(rk_err_name(-66536), "RK_UNKNOWN");
}

/* overdraft: an application error, the kernel carries on */
static int app_err_handler(rk_ctx *ctx, const rk_msg *in) {
  int64_t v;
  if (rk_msg_len(in) != sizeof v) return RK_EINVAL;
  memcpy(&v, rk_msg_payload(in), sizeof v);
  if (v < 0) return RK_EAPP(7);
  return rk_reply(ctx, 1, &v, sizeof v);
}

static void test_app_error_reply(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("appe", app_err_handler);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_msg reply;
  int64_t v = -5, out = 0;
  (void)state;
  assert_int_equal(rk_call(k, 1, &v, sizeof v, &reply, &out, sizeof out, RT_HANG), RK_EHANDLER);
  assert_true(rk_msg_is_error(&reply));
  assert_int_equal(reply.status, RK_EAPP(7));
  assert_int_equal(rk_err_app(reply.status), 7);
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_EAPP"));
  v = 5;
  assert_int_equal(rk_call(k, 1, &v, sizeof v, &reply, &out, sizeof out, RT_HANG), RK_OK);
  assert_int_equal(out, 5);
  assert_int_equal(rt_stats(k).handler_errors, 1);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_init),  cmocka_unit_test(test_struct_sizes),
      cmocka_unit_test(test_msg_type_find), cmocka_unit_test(test_app_error_codes),
      cmocka_unit_test(test_app_error_reply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
