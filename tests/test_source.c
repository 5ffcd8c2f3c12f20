/* test_source.c — kernels given as source text on the CPU backend (src/host/cc.c): the system C
 * compiler builds them into a cached shared object at launch or with rk_kernel_compile. What is
 * tested: a source kernel replies as a compiled one would, in a process of its own (the disk
 * cache: one compilation for several processes, concurrent ones included); the compile check and
 * its log; refusal, never silence, of a source that does not compile or has no such handler (with
 * a compiled handler beside it too); a missing compiler (RK_ENOTSUP naming it); a compiler whose
 * output does not load; a cache directory that cannot be written; bad arguments. (The built-ins'
 * source twins pass test_builtins' tests: test_source_twins.)
 *
 * Every runtime here uses a cache directory of the test's own, and fake compilers are shell
 * scripts written into it. */
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt_util.h"

static char dir[64]; /* the test's directory: caches and scripts */

typedef struct twice_req {
  int64_t x;
} twice_req;
RK_MESSAGE(twice_req, 700);
typedef struct twice_rep {
  int64_t y;
  uint64_t n; /* messages this kernel has seen (its state) */
} twice_rep;
RK_MESSAGE(twice_rep, 701);

/* A stateful kernel as source: y = 2x, n counts messages; x < 0 is an error reply. */
static const char twice_src[] =
    "typedef struct twice_req { int64_t x; } twice_req;\n"
    "RK_MESSAGE(twice_req, 700);\n"
    "typedef struct twice_rep { int64_t y; uint64_t n; } twice_rep;\n"
    "RK_MESSAGE(twice_rep, 701);\n"
    "RK_HANDLER(twice)(rk_ctx *ctx, const rk_msg *in) {\n"
    "  const twice_req *r = RK_MSG_AS(in, twice_req);\n"
    "  uint64_t *n = RK_CAST(uint64_t *, rk_state(ctx));\n"
    "  twice_rep out;\n"
    "  if (r == 0 || n == 0) return RK_EINVAL;\n"
    "  if (r->x < 0) return RK_ENOENT;\n"
    "  if (rk_thread(ctx) == 0) *n += 1;\n"
    "  rk_sync(ctx);\n"
    "  out.y = 2 * r->x;\n"
    "  out.n = *n;\n"
    "  return rk_reply_typed(ctx, twice_rep, &out);\n"
    "}\n";

static const rk_msg_type *const twice_types[] = {&twice_req_msgtype};

static rk_kernel_desc twice_desc(const char *src, const char *handler) {
  rk_kernel_desc d;
  memset(&d, 0, sizeof d);
  d.size = sizeof d;
  d.name = "twice";
  d.source = src;
  d.source_handler = handler;
  d.state_size = sizeof(uint64_t);
  d.types = twice_types;
  d.n_types = 1;
  d.max_lanes = 1;
  return d;
}

static rk_runtime *create_with(const char *cc, const char *cache) {
  rk_runtime_options o = rt_options();
  o.cc = cc;
  o.cache_dir = cache;
  return rt_create_opts(&o);
}

static void path_in(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

/* A shell script in the test's directory. */
static void script(const char *name, const char *body) {
  char p[256];
  FILE *f;
  path_in(p, sizeof p, name);
  f = fopen(p, "w");
  assert_non_null(f);
  fprintf(f, "#!/bin/sh\n%s\n", body);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(chmod(p, 0755), 0);
}

static unsigned count_lines(const char *name) {
  char p[256];
  unsigned n = 0;
  int c;
  FILE *f;
  path_in(p, sizeof p, name);
  if ((f = fopen(p, "r")) == NULL) return 0;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

/* Objects (rk-*.so) and leftovers (tmp-*) in a cache directory. */
static unsigned count_entries(const char *cache, const char *prefix) {
  char cmd[512], out[32] = "";
  FILE *p;
  snprintf(cmd, sizeof cmd, "ls -1 '%s' 2>/dev/null | grep -c '^%s' || true", cache, prefix);
  p = popen(cmd, "r");
  assert_non_null(p);
  if (fgets(out, sizeof out, p) == NULL) out[0] = '\0';
  pclose(p);
  return (unsigned)atoi(out);
}

/* Launch, call twice (2x, and an error reply), terminate. */
static void exercise(rk_runtime *rt, const rk_kernel_desc *d, uint32_t threads) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  twice_req q;
  twice_rep r;
  rk_msg m;
  int i;
  lo.threads_per_lane = threads;
  k = rt_launch_active(rt, d, &lo);
  for (i = 1; i <= 5; i++) {
    q.x = 21 * i;
    RT_OK(rt, rk_call_typed(k, twice_req, &q, &m, &r, sizeof r, RT_HANG));
    assert_non_null(RK_MSG_AS(&m, twice_rep));
    assert_int_equal(r.y, 42 * i);
    assert_int_equal(r.n, (uint64_t)i); /* its state persists across messages */
  }
  q.x = -1;
  assert_int_equal(rk_call_typed(k, twice_req, &q, &m, &r, sizeof r, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_ENOENT);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  rk_kernel_destroy(k);
}

static void test_runs_and_caches(void **state) {
  char cache[256], wrapper[256], body[600];
  rk_runtime *rt;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  char log[4096];
  (void)state;
  path_in(cache, sizeof cache, "cache-runs");
  path_in(wrapper, sizeof wrapper, "counting-cc");
  /* the system compiler, each run counted */
  snprintf(body, sizeof body, "echo run >> '%s/counting-cc.runs'\nexec cc \"$@\"", dir);
  script("counting-cc", body);
  rt = create_with(wrapper, cache);
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_OK);
  assert_int_equal(count_lines("counting-cc.runs"), 1);
  assert_int_equal(count_entries(cache, "rk-"), 1);
  assert_int_equal(count_entries(cache, "tmp-"), 0); /* the private directory is gone */
  exercise(rt, &d, 1);
  exercise(rt, &d, 4); /* the lane's threads share the state through rk_sync */
  assert_int_equal(count_lines("counting-cc.runs"), 1); /* launches found it compiled */
  rk_runtime_destroy(rt);
  /* a new runtime in this process: the process-wide table */
  rt = create_with(wrapper, cache);
  exercise(rt, &d, 2);
  assert_int_equal(count_lines("counting-cc.runs"), 1);
  rk_runtime_destroy(rt);
}

/* Child processes compiling the same new source at once, on an empty cache: every one succeeds,
 * and what they leave is one object. Run from a child of its own so the parent's process-wide
 * table is not involved: `test_source --child CACHE`. */
static int child_main(const char *cache) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_runtime *rt = NULL;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  rk_kernel *k = NULL;
  twice_req q = {5};
  twice_rep r;
  rk_msg m;
  int rc;
  o.backend = RK_BACKEND_CPU;
  o.cache_dir = cache;
  if (rk_runtime_create(&rt, &o) != RK_OK) return 2;
  rc = rk_kernel_launch(rt, &d, NULL, &k);
  if (rc == RK_OK) rc = rk_kernel_activate(k);
  if (rc == RK_OK) rc = rk_call_typed(k, twice_req, &q, &m, &r, sizeof r, RT_HANG);
  if (rc == RK_OK && r.y != 10) rc = RK_EINVAL;
  if (rc != RK_OK) fprintf(stderr, "child: %s: %s\n", rk_err_name(rc), rk_runtime_last_error(rt));
  rk_runtime_destroy(rt);
  return rc == RK_OK ? 0 : 1;
}

static const char *self_exe;

static void test_concurrent_processes(void **state) {
  char cache[256];
  pid_t pid[4];
  int i, st;
  (void)state;
  path_in(cache, sizeof cache, "cache-procs");
  for (i = 0; i < 4; i++) {
    char *argv[] = {(char *)self_exe, (char *)"--child", cache, NULL};
    pid[i] = fork();
    assert_true(pid[i] >= 0);
    if (pid[i] == 0) {
      execv(self_exe, argv);
      _exit(127);
    }
  }
  for (i = 0; i < 4; i++) {
    assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
  }
  assert_int_equal(count_entries(cache, "rk-"), 1);
  assert_int_equal(count_entries(cache, "tmp-"), 0);
}

static void test_compile_errors_refused(void **state) {
  char cache[256], log[4096];
  rk_runtime *rt;
  rk_kernel *k = NULL;
  rk_kernel_desc d = twice_desc("RK_HANDLER(twice)(rk_ctx *ctx, const rk_msg *in) { return undeclared_name; }",
                                "twice");
  (void)state;
  path_in(cache, sizeof cache, "cache-errors");
  rt = create_with(NULL, cache);
  /* the check: RK_EINVAL, the compiler's log, its first error in the message */
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(log, "undeclared_name"));
  assert_non_null(strstr(rk_runtime_last_error(rt), "does not compile"));
  assert_non_null(strstr(rk_runtime_last_error(rt), "undeclared_name"));
  /* the launch: refused the same way */
  assert_int_equal(rk_kernel_launch(rt, &d, NULL, &k), RK_EINVAL);
  assert_null(k);
  assert_non_null(strstr(rk_runtime_last_error(rt), "undeclared_name"));
  /* with a compiled handler beside it: still refused, never silently ignored */
  d.handler = rk_builtin_echo.handler;
  assert_int_equal(rk_kernel_launch(rt, &d, NULL, &k), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "undeclared_name"));
  /* no handler of that name in a source that compiles */
  d = twice_desc(twice_src, "thrice");
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "defines no handler named 'thrice'"));
  assert_int_equal(rk_kernel_launch(rt, &d, NULL, &k), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "thrice"));
  /* a source that does not compile, with a short handler name that occurs anywhere in the log
   * ("x"): the compile error, not a missing handler (it was reported as "defines no handler") */
  d = twice_desc("this is not C", "x");
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "does not compile"));
  assert_null(strstr(rk_runtime_last_error(rt), "defines no handler"));
  /* and a missing handler with a short name is still reported as missing */
  d = twice_desc(twice_src, "x");
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "defines no handler named 'x'"));
  /* a handler declared but never defined: the object would not load; refused at compile */
  d = twice_desc("int ghost(rk_ctx *ctx, const rk_msg *in);", "ghost");
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "ghost"));
  /* a call to something that is neither the dialect nor libc: a compile error, not a load failure */
  d = twice_desc("int rk_send(void);\nRK_HANDLER(h)(rk_ctx *ctx, const rk_msg *in) { (void)ctx, (void)in; "
                 "return rk_send(); }", "h");
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_non_null(strstr(log, "rk_send"));
  assert_int_equal(count_entries(cache, "tmp-"), 0);
  rk_runtime_destroy(rt);
}

static void test_missing_compiler(void **state) {
  char cache[256];
  rk_runtime *rt;
  rk_kernel *k = NULL;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  (void)state;
  path_in(cache, sizeof cache, "cache-nocc");
  rt = create_with("/nonexistent/bin/cc", cache);
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_ENOTSUP);
  assert_non_null(strstr(rk_runtime_last_error(rt), "/nonexistent/bin/cc"));
  assert_int_equal(rk_kernel_launch(rt, &d, NULL, &k), RK_ENOTSUP);
  assert_null(k);
  /* with a compiled handler beside it: launched (the source's check is logged as skipped) */
  d = twice_desc(twice_src, "twice");
  d.name = "checked";
  d.handler = rk_builtin_echo.handler;
  d.types = NULL;
  d.n_types = 0;
  k = rt_launch(rt, &d, NULL);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
  /* a name looked up in PATH, through the environment */
  assert_int_equal(setenv("RK_CC", "rk-no-such-compiler", 1), 0);
  rt = create_with(NULL, cache);
  d = twice_desc(twice_src, "twice");
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_ENOTSUP);
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk-no-such-compiler"));
  assert_non_null(strstr(rk_runtime_last_error(rt), "RK_CC"));
  assert_int_equal(unsetenv("RK_CC"), 0);
  rk_runtime_destroy(rt);
}

static void test_unloadable_object(void **state) {
  char cache[256], cc[256];
  rk_runtime *rt;
  rk_kernel *k = NULL;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  (void)state;
  path_in(cache, sizeof cache, "cache-garbage");
  path_in(cc, sizeof cc, "garbage-cc");
  /* a "compiler" that succeeds and writes something that is not a shared object to -o */
  script("garbage-cc", "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then echo garbage > \"$2\"; fi; shift; done");
  rt = create_with(cc, cache);
  assert_int_equal(rk_kernel_launch(rt, &d, NULL, &k), RK_ESYS);
  assert_null(k);
  assert_non_null(strstr(rk_runtime_last_error(rt), "could not be loaded"));
  rk_runtime_destroy(rt);
}

static void test_cache_not_writable(void **state) {
  char file[256], cache[300];
  rk_runtime *rt;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  FILE *f;
  (void)state;
  /* a cache "directory" under a regular file can never be created (root or not) */
  path_in(file, sizeof file, "a-file");
  f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);
  snprintf(cache, sizeof cache, "%s/cache", file);
  d.name = "uncached"; /* a source not compiled yet in this process */
  d.source = "/* uncached */\n" "RK_HANDLER(h)(rk_ctx *ctx, const rk_msg *in) { return rk_reply(ctx, 1, 0, 0); }";
  d.source_handler = "h";
  d.types = NULL;
  d.n_types = 0;
  rt = create_with(NULL, cache);
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_OK);
  {
    rk_kernel *k = rt_launch_active(rt, &d, NULL);
    rk_msg m;
    char buf[8];
    RT_OK(rt, rk_call(k, 9, NULL, 0, &m, buf, sizeof buf, RT_HANG));
    assert_int_equal(m.env.type, 1);
    rk_kernel_destroy(k);
  }
  rk_runtime_destroy(rt);
}

/* The runtime keeps its own copies of the option strings: the application's may go at once. */
static void test_option_strings_copied(void **state) {
  char *cache = (char *)malloc(256), *cc = strdup("cc");
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  (void)state;
  assert_non_null(cache);
  assert_non_null(cc);
  path_in(cache, 256, "cache-copied");
  o.cc = cc;
  o.cache_dir = cache;
  rt = rt_create_opts(&o);
  memset(cache, 'x', 255); /* (ASan: a use after free below would be reported) */
  free(cache);
  free(cc);
  d.name = "copied";
  d.source = "/* copied */\n" "RK_HANDLER(h)(rk_ctx *ctx, const rk_msg *in) { return rk_reply(ctx, 1, 0, 0); }";
  d.source_handler = "h";
  d.types = NULL;
  d.n_types = 0;
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_OK);
  rk_runtime_destroy(rt);
  {
    char p[256];
    path_in(p, sizeof p, "cache-copied");
    assert_int_equal(count_entries(p, "rk-"), 1); /* compiled into the copy's directory */
  }
}

static void test_bad_arguments(void **state) {
  char cache[256], log[64];
  rk_runtime *rt;
  rk_kernel_desc d = twice_desc(twice_src, "twice");
  (void)state;
  path_in(cache, sizeof cache, "cache-args");
  rt = create_with(NULL, cache);
  assert_int_equal(rk_kernel_compile(NULL, &d, NULL, 0), RK_EINVAL);
  assert_int_equal(rk_kernel_compile(rt, NULL, NULL, 0), RK_EINVAL);
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 10), RK_EINVAL);
  d.source = NULL;
  strcpy(log, "x");
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_EINVAL);
  assert_string_equal(log, "");
  assert_non_null(strstr(rk_runtime_last_error(rt), ".source"));
  d = twice_desc(twice_src, NULL);
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), ".source_handler"));
  d = twice_desc(twice_src, "twice; void evil(void)");
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "not a C identifier"));
  d = twice_desc(twice_src, "twice");
  d.size = 8;
  assert_int_equal(rk_kernel_compile(rt, &d, NULL, 0), RK_EINVAL);
  /* the former field names still work */
  d = twice_desc(NULL, NULL);
  d.cuda_source = twice_src;
  d.cuda_handler = "twice";
  assert_int_equal(rk_kernel_compile(rt, &d, log, sizeof log), RK_OK);
  rk_runtime_destroy(rt);
}

/* Every refused descriptor field is named in the refusal (the descriptor is the echo built-in with
 * one field broken at a time). */
static void refuse_naming(rk_runtime *rt, const rk_kernel_desc *d, const rk_launch_options *lo, int want,
                          const char *field) {
  rk_kernel *k = NULL;
  int rc = rk_kernel_launch(rt, d, lo, &k);
  if (rc != want || strstr(rk_runtime_last_error(rt), field) == NULL)
    fail_msg("expected %s naming %s, got %s: %s", rk_err_name(want), field, rk_err_name(rc), rk_runtime_last_error(rt));
  assert_null(k);
}

static int init_nothing(void *st, size_t n, void *user) {
  (void)st, (void)n, (void)user;
  return 0;
}

static void test_descriptor_fields_named(void **state) {
  char cache[256];
  rk_runtime *rt;
  rk_kernel_desc d;
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  static const rk_msg_type *const null_type[] = {NULL};
  static const rk_msg_type big = {9, 4096, "big"};
  static const rk_msg_type *const big_type[] = {&big};
  (void)state;
  path_in(cache, sizeof cache, "cache-fields");
  rt = create_with(NULL, cache);
#define BROKEN(stmt, want, field)   \
  do {                              \
    d = rk_builtin_echo;            \
    stmt;                           \
    refuse_naming(rt, &d, NULL, want, field); \
  } while (0)
  BROKEN(d.size = 0, RK_EINVAL, ".size");
  BROKEN(d.n_types = 2, RK_EINVAL, ".n_types");
  BROKEN((d.types = null_type, d.n_types = 1), RK_EINVAL, ".types[0]");
  BROKEN((d.types = big_type, d.n_types = 1), RK_EMSGSIZE, ".slot_size");
  BROKEN(d.backpressure = (rk_backpressure)9, RK_EINVAL, ".backpressure");
  BROKEN(d.state_init = init_nothing, RK_EINVAL, ".state_init");
  BROKEN(d.lanes = RK_MAX_LANES + 1, RK_EINVAL, ".lanes");
  BROKEN((d.lanes = 2, d.max_lanes = 1), RK_EINVAL, ".max_lanes");
  /* a .max_lanes above RK_MAX_LANES does not lift the library's own limit */
  BROKEN((d.max_lanes = 1000, d.lanes = RK_MAX_LANES + 1), RK_EINVAL, ".lanes");
  BROKEN(d.threads_per_lane = 2000, RK_EINVAL, ".threads_per_lane");
  BROKEN(d.inbox_capacity = 1000, RK_EINVAL, ".inbox_capacity");
  BROKEN(d.slot_size = 100, RK_EINVAL, ".slot_size");
  BROKEN((d.cuda_image = "x", d.cuda_entry = NULL), RK_EINVAL, ".cuda_image");
  BROKEN(d.source_handler = "h", RK_EINVAL, ".source_handler");
  BROKEN(d.handler = NULL, RK_ENOTSUP, ".handler");
#undef BROKEN
  /* launch options are named too */
  d = rk_builtin_echo;
  lo.backpressure = (rk_backpressure)7;
  refuse_naming(rt, &d, &lo, RK_EINVAL, "backpressure");
  rk_runtime_destroy(rt);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_runs_and_caches),       cmocka_unit_test(test_concurrent_processes),
      cmocka_unit_test(test_compile_errors_refused), cmocka_unit_test(test_missing_compiler),
      cmocka_unit_test(test_unloadable_object),     cmocka_unit_test(test_cache_not_writable),
      cmocka_unit_test(test_bad_arguments),        cmocka_unit_test(test_descriptor_fields_named),
      cmocka_unit_test(test_option_strings_copied),
  };
  int rc;
  if (argc == 3 && strcmp(argv[1], "--child") == 0) return child_main(argv[2]);
  self_exe = argv[0];
  snprintf(dir, sizeof dir, "/tmp/rk-source-XXXXXX");
  if (mkdtemp(dir) == NULL) return 1;
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  (void)nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  return rc;
}
