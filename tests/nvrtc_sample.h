/* nvrtc_sample.h — one handler written in the dialect as a source string, for the NVRTC tests:
 * test_nvrtc compiles it without a GPU, test_gpu runs it on one. It replies to rk_counter_add with
 * rk_counter_value{total = 2 * delta}. */
#ifndef RK_TEST_NVRTC_SAMPLE_H
#define RK_TEST_NVRTC_SAMPLE_H

#define RK_TEST_TWICE_HANDLER "twice"
static const char rk_test_twice_src[] =
    "#include \"ringkernel/kernel.h\"\n"
    "#include \"ringkernel/builtins.h\"\n"
    "RK_HANDLER(twice)(rk_ctx *ctx, const rk_msg *in) {\n"
    "  const rk_counter_add *a = RK_MSG_AS(in, rk_counter_add);\n"
    "  rk_counter_value v;\n"
    "  if (!a) return RK_EINVAL;\n"
    "  v.total = 2 * a->delta; v.count = 1; v.stamp = rk_now(ctx);\n"
    "  return rk_reply_typed(ctx, rk_counter_value, &v);\n"
    "}\n";

#endif
