/* test_builtins.c — the built-in kernels (echo, vector_add, counter) on the CPU backend, with one
 * thread per lane and with four cooperating threads per lane (the same dialect source the device
 * compiles: rk_thread / rk_threads / rk_sync / rk_reply_reserve / rk_reply_commit), from one caller
 * and from several at once.
 *
 * Built a second time as test_source_twins (RK_TEST_SOURCE_TWINS): the same tests on the built-ins'
 * run-time source twins, descriptors that give no handler but the text of src/device/builtins.h as
 * their source, compiled by the system C compiler at launch (src/host/cc.c) into a cache directory
 * of the test's own. */
#include "rt_util.h"

#if defined(RK_TEST_SOURCE_TWINS)
#include <ftw.h>
#include <unistd.h>

static rk_kernel_desc twin_echo, twin_vector_add, twin_counter;
static char twin_cache[64];
#define BUILTIN(x) (&twin_##x)

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  long n;
  char *buf;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) return NULL;
  buf = (char *)calloc(1, (size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) buf[0] = '\0';
  fclose(f);
  return buf;
}

static void twin(rk_kernel_desc *t, const rk_kernel_desc *b, const char *src, const char *handler) {
  *t = *b;
  t->handler = NULL; /* only the source: compiled by cc at launch */
  t->cuda_entry = NULL;
  t->source = src;
  t->source_handler = handler;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}
#else
#define BUILTIN(x) (&rk_builtin_##x)
#endif

static uint64_t next_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545f4914f6cdd1dull;
}

static void test_descriptors(void **state) {
  (void)state;
  assert_string_equal(rk_builtin_echo.name, "echo");
  assert_string_equal(rk_builtin_vector_add.name, "vector_add");
  assert_string_equal(rk_builtin_counter.name, "counter");
  assert_non_null(rk_builtin_echo.handler);
  assert_null(rk_builtin_echo.types); /* untyped */
  assert_int_equal(rk_builtin_vector_add.n_types, 2);
  assert_int_equal(rk_builtin_vector_add.types[0]->id, rk_vadd_req_TYPE);
  assert_int_equal(rk_builtin_vector_add.types[1]->id, rk_vadd_buf_req_TYPE); /* buffers (test_buffers) */
  assert_int_equal(rk_builtin_counter.n_types, 1);
  assert_int_equal(rk_builtin_counter.types[0]->id, rk_counter_add_TYPE);
  assert_int_equal(rk_builtin_counter.state_size, sizeof(rk_counter_state));
}

/* ---------------------------------------- vector_add ----------------------------------------- */

static void vadd_check(rk_runtime *rt, rk_kernel *k, uint64_t *seed, uint32_t n, uint32_t lanes) {
  rk_vadd_req req;
  rk_vadd_reply out;
  rk_msg m;
  uint32_t i;
  memset(&req, 0, sizeof req);
  memset(&out, 0xff, sizeof out);
  req.n = n;
  for (i = 0; i < RK_VADD_MAX; i++) {
    req.a[i] = (float)(int32_t)(next_rand(seed) % 20001) / 8.0f - 1250.0f;
    req.b[i] = (float)(int32_t)(next_rand(seed) % 20001) / 16.0f;
  }
  RT_OK(rt, rk_call_typed(k, rk_vadd_req, &req, &m, &out, sizeof out, RT_HANG));
  assert_non_null(RK_MSG_AS(&m, rk_vadd_reply));
  assert_int_equal(out.n, n);
  assert_true(out.lane < lanes);
  assert_int_equal(out.lane, m.env.lane);
  for (i = 0; i < RK_VADD_MAX; i++) {
    float want = i < n ? req.a[i] + req.b[i] : 0.0f; /* exact: the same float addition */
    if (out.c[i] != want) fail_msg("n %u: c[%u] = %g, want %g", n, i, (double)out.c[i], (double)want);
  }
  assert_true(out.stamp != 0);
  assert_true(m.env.hlc > out.stamp); /* computed, then replied */
}

static void run_vector_add(uint32_t threads, uint32_t lanes) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  uint64_t seed = 0x1234567ull + threads * 31 + lanes;
  uint32_t i;
  rk_vadd_req req;
  rk_vadd_reply out;
  rk_msg m;
  lo.threads_per_lane = threads;
  lo.lanes = lanes;
  k = rt_launch_active(rt, BUILTIN(vector_add), &lo);
  for (i = 0; i <= RK_VADD_MAX; i++) vadd_check(rt, k, &seed, i, lanes); /* every length */
  for (i = 0; i < 100; i++) vadd_check(rt, k, &seed, (uint32_t)(next_rand(&seed) % (RK_VADD_MAX + 1)), lanes);
  /* n beyond the arrays: the handler refuses it with an error reply */
  memset(&req, 0, sizeof req);
  req.n = RK_VADD_MAX + 1;
  assert_int_equal(rk_call_typed(k, rk_vadd_req, &req, &m, &out, sizeof out, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  assert_int_equal(rt_stats(k).handler_errors, 1);
  /* and goes on */
  vadd_check(rt, k, &seed, 3, lanes);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_vector_add_1_thread(void **state) {
  (void)state;
  run_vector_add(1, 1);
}
static void test_vector_add_4_threads(void **state) {
  (void)state;
  run_vector_add(4, 1);
  run_vector_add(4, 2);
}

/* Several callers at once on a cooperative vector_add (the lane barriers under contention). */
typedef struct vcaller {
  rk_runtime *rt;
  rk_kernel *k;
  uint64_t seed;
  uint32_t n, lanes;
  int failures;
} vcaller;

static void *vadd_loop(void *arg) {
  vcaller *c = (vcaller *)arg;
  uint32_t i, j;
  for (i = 0; i < c->n; i++) {
    rk_vadd_req req;
    rk_vadd_reply out;
    rk_msg m;
    memset(&req, 0, sizeof req);
    req.n = (uint32_t)(next_rand(&c->seed) % (RK_VADD_MAX + 1));
    for (j = 0; j < req.n; j++) {
      req.a[j] = (float)(next_rand(&c->seed) % 1000);
      req.b[j] = (float)j;
    }
    if (rk_call_typed(c->k, rk_vadd_req, &req, &m, &out, sizeof out, RT_HANG) != RK_OK || out.n != req.n) {
      c->failures++;
      continue;
    }
    for (j = 0; j < RK_VADD_MAX; j++)
      if (out.c[j] != (j < req.n ? req.a[j] + req.b[j] : 0.0f)) c->failures++;
  }
  return NULL;
}

static void test_vector_add_concurrent(void **state) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  enum { T = 4 };
  pthread_t th[T];
  vcaller c[T];
  uint32_t i, per = RT_SANITIZED ? 100 : 400;
  (void)state;
  lo.threads_per_lane = 4;
  lo.lanes = 2;
  k = rt_launch_active(rt, BUILTIN(vector_add), &lo);
  for (i = 0; i < T; i++) {
    c[i].rt = rt;
    c[i].k = k;
    c[i].seed = 0xabcdefull * (i + 1);
    c[i].n = per;
    c[i].lanes = 2;
    c[i].failures = 0;
    assert_int_equal(pthread_create(&th[i], NULL, vadd_loop, &c[i]), 0);
  }
  for (i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(c[i].failures, 0);
  }
  assert_int_equal(rt_stats(k).msgs_out, T * per);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- counter -------------------------------------------- */

static void run_counter(uint32_t threads) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  uint64_t seed = 77 + threads;
  int64_t total = 0;
  uint32_t i;
  rk_msg m;
  rk_counter_value v;
  rk_hlc prev = 0;
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, BUILTIN(counter), &lo);
  for (i = 0; i < 200; i++) {
    rk_counter_add a;
    a.delta = (int64_t)(next_rand(&seed) % 2001) - 1000;
    total += a.delta;
    RT_OK(rt, rk_call_typed(k, rk_counter_add, &a, &m, &v, sizeof v, RT_HANG));
    assert_non_null(RK_MSG_AS(&m, rk_counter_value));
    assert_int_equal(v.total, total);
    assert_int_equal(v.count, i + 1);
    assert_true(v.stamp > prev);
    prev = v.stamp;
  }
  /* pipelined: sends then receives, in order on the one lane */
  for (i = 0; i < 50; i++) {
    rk_counter_add a = {3};
    RT_OK(rt, rk_send_typed(k, rk_counter_add, &a, 0, NULL));
  }
  for (i = 0; i < 50; i++) {
    RT_OK(rt, rk_recv(k, &m, &v, sizeof v, RT_HANG));
    total += 3;
    assert_int_equal(v.total, total);
    assert_int_equal(v.count, 201 + i);
  }
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

static void test_counter_1_thread(void **state) {
  (void)state;
  run_counter(1);
}
static void test_counter_4_threads(void **state) {
  (void)state;
  run_counter(4);
}

/* ---------------------------------------- echo ----------------------------------------------- */

static void run_echo(uint32_t threads, uint32_t lanes) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  uint8_t req[176], rep[176]; /* a 256-byte slot's payload */
  uint32_t i, len;
  rk_msg m;
  lo.threads_per_lane = threads;
  lo.lanes = lanes;
  k = rt_launch_active(rt, BUILTIN(echo), &lo);
  for (i = 0; i < 100; i++) {
    len = (i * 37) % 177;
    memset(req, (int)i, sizeof req);
    req[0] = (uint8_t)len;
    RT_OK(rt, rk_call(k, 1000 + i, req, len, &m, rep, sizeof rep, RT_HANG));
    assert_int_equal(rk_msg_type_of(&m), 1000 + i);
    assert_int_equal(m.len, len);
    if (len) assert_memory_equal(rep, req, len);
  }
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* max_lanes: the counter's one running total is not shared across lanes; a descriptor from an
 * older header (no max_lanes field) is still accepted. */
static void test_max_lanes(void **state) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel_desc old = rk_builtin_echo;
  rk_kernel *k = NULL;
  (void)state;
  lo.lanes = 2;
  assert_int_equal(rk_kernel_launch(rt, BUILTIN(counter), &lo, &k), RK_EINVAL);
  assert_null(k);
  assert_non_null(strstr(rk_runtime_last_error(rt), "lanes"));
  lo.lanes = 1;
  assert_int_equal(rk_kernel_launch(rt, BUILTIN(counter), &lo, &k), RK_OK);
  rk_kernel_destroy(k);
  old.size = (uint32_t)RK_OFFSETOF(rk_kernel_desc, max_lanes);
  lo.lanes = 3;
  assert_int_equal(rk_kernel_launch(rt, &old, &lo, &k), RK_OK);
  assert_int_equal(rk_kernel_lanes(k), 3);
  rk_kernel_destroy(k);
  old.size = (uint32_t)RK_OFFSETOF(rk_kernel_desc, n_types); /* too old: no n_types */
  assert_int_equal(rk_kernel_launch(rt, &old, &lo, &k), RK_EINVAL);
  rk_runtime_destroy(rt);
}

static void test_echo_threads(void **state) {
  (void)state;
  run_echo(1, 1);
  run_echo(4, 1);
  run_echo(2, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_descriptors),
      cmocka_unit_test(test_vector_add_1_thread),
      cmocka_unit_test(test_vector_add_4_threads),
      cmocka_unit_test(test_vector_add_concurrent),
      cmocka_unit_test(test_counter_1_thread),
      cmocka_unit_test(test_counter_4_threads),
      cmocka_unit_test(test_echo_threads),
      cmocka_unit_test(test_max_lanes),
  };
#if defined(RK_TEST_SOURCE_TWINS)
  char *src = read_text(RK_TEST_BUILTINS_SRC);
  int rc;
  if (src == NULL || strstr(src, "rk_counter_handler") == NULL) {
    fprintf(stderr, "cannot read %s\n", RK_TEST_BUILTINS_SRC);
    return 1;
  }
  snprintf(twin_cache, sizeof twin_cache, "/tmp/rk-twins-XXXXXX");
  if (mkdtemp(twin_cache) == NULL || setenv("RK_CACHE_DIR", twin_cache, 1) != 0) return 1;
  twin(&twin_echo, &rk_builtin_echo, src, "rk_echo_handler");
  twin(&twin_vector_add, &rk_builtin_vector_add, src, "rk_vector_add_handler");
  twin(&twin_counter, &rk_builtin_counter, src, "rk_counter_handler");
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  (void)nftw(twin_cache, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(src);
  return rc;
#else
  return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
