/* test_headers_nvrtc.c — the public headers compiled at run time by NVRTC, the way a kernel source
 * string is compiled on a machine with only a driver: -default-device, no include paths at all,
 * the headers handed over as named in-memory headers ("ringkernel/common.h", ...). Checks that the
 * PTX holds the system-scope acquire loads, release stores and fences of the ordering primitives,
 * that ptxas (inside NVRTC) accepts the inline PTX for sm_90, that every public header compiles
 * through the umbrella, and — as controls — that a kernel without fences has none in its PTX and
 * that a header missing from the list is not found (nothing leaks in from an include path).
 * NVRTC is loaded with dlopen; where it cannot be loaded the test is skipped (exit 77). */
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#ifndef RK_TEST_INCLUDE_DIR
#error "RK_TEST_INCLUDE_DIR must name the public include directory"
#endif

typedef int nvrtc_result; /* nvrtcResult; 0 is NVRTC_SUCCESS */
typedef struct nvrtc_program *nvrtc_program;

static struct {
  void *lib;
  nvrtc_result (*version)(int *, int *);
  nvrtc_result (*create)(nvrtc_program *, const char *, const char *, int, const char *const *,
                         const char *const *);
  nvrtc_result (*compile)(nvrtc_program, int, const char *const *);
  nvrtc_result (*ptx_size)(nvrtc_program, size_t *);
  nvrtc_result (*ptx)(nvrtc_program, char *);
  nvrtc_result (*cubin_size)(nvrtc_program, size_t *);
  nvrtc_result (*log_size)(nvrtc_program, size_t *);
  nvrtc_result (*log)(nvrtc_program, char *);
  nvrtc_result (*destroy)(nvrtc_program *);
  const char *(*error_string)(nvrtc_result);
} nv;

/* The headers, as NVRTC sees them: names and texts. */
#define MAX_HEADERS 64
static const char *header_names[MAX_HEADERS];
static char *header_texts[MAX_HEADERS];
static int nheaders;

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  long n;
  char *s;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  s = (char *)malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  if (s) s[n] = '\0';
  fclose(f);
  return s;
}

static void add_header(const char *name, const char *path) {
  char *text = read_file(path);
  if (text == NULL || nheaders == MAX_HEADERS) {
    fprintf(stderr, "cannot read header %s\n", path);
    exit(1);
  }
  header_names[nheaders] = strdup(name);
  header_texts[nheaders] = text;
  nheaders++;
}

static void load_headers(void) {
  char path[4096], name[512];
  DIR *d;
  struct dirent *de;
  snprintf(path, sizeof path, "%s/ringkernel.h", RK_TEST_INCLUDE_DIR);
  add_header("ringkernel.h", path);
  snprintf(path, sizeof path, "%s/ringkernel", RK_TEST_INCLUDE_DIR);
  d = opendir(path);
  if (d == NULL) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(1);
  }
  while ((de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    if (n < 3 || strcmp(de->d_name + n - 2, ".h") != 0) continue;
    snprintf(name, sizeof name, "ringkernel/%s", de->d_name);
    snprintf(path, sizeof path, "%s/ringkernel/%s", RK_TEST_INCLUDE_DIR, de->d_name);
    add_header(name, path);
  }
  closedir(d);
}

static void free_headers(void) {
  int i;
  for (i = 0; i < nheaders; i++) {
    free((void *)header_names[i]);
    free(header_texts[i]);
  }
}

static int load_nvrtc(void) {
  static const char *const names[] = {
#ifdef RK_TEST_NVRTC_DIR
      RK_TEST_NVRTC_DIR "/libnvrtc.so", RK_TEST_NVRTC_DIR "/libnvrtc.so.13",
      RK_TEST_NVRTC_DIR "/libnvrtc.so.12",
#endif
      "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"};
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0] && nv.lib == NULL; i++)
    nv.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (nv.lib == NULL) return 0;
#define SYM(field, name)                                                       \
  if ((*(void **)&nv.field = dlsym(nv.lib, name)) == NULL) {                   \
    fprintf(stderr, "libnvrtc lacks %s\n", name);                              \
    return 0;                                                                  \
  }
  SYM(version, "nvrtcVersion");
  SYM(create, "nvrtcCreateProgram");
  SYM(compile, "nvrtcCompileProgram");
  SYM(ptx_size, "nvrtcGetPTXSize");
  SYM(ptx, "nvrtcGetPTX");
  SYM(cubin_size, "nvrtcGetCUBINSize");
  SYM(log_size, "nvrtcGetProgramLogSize");
  SYM(log, "nvrtcGetProgramLog");
  SYM(destroy, "nvrtcDestroyProgram");
  SYM(error_string, "nvrtcGetErrorString");
#undef SYM
  return 1;
}

/* Compile src with the given headers and options. Returns 0 and the PTX (caller frees) and
 * *cubin_size, or the NVRTC error with the log in *log (caller frees). */
typedef struct {
  nvrtc_result rc;
  char *ptx;
  size_t cubin;
  char *log;
} compiled;

static compiled compile_with(const char *src, int nh, const char *const *texts, const char *const *names,
                             int nopt, const char *const *opts) {
  compiled out = {0, NULL, 0, NULL};
  nvrtc_program prog;
  size_t n = 0;
  out.rc = nv.create(&prog, src, "rk_headers_test.cu", nh, texts, names);
  if (out.rc != 0) return out;
  out.rc = nv.compile(prog, nopt, opts);
  if (nv.log_size(prog, &n) == 0 && n > 1) {
    out.log = (char *)malloc(n);
    if (out.log) nv.log(prog, out.log);
  }
  if (out.rc == 0) {
    nv.ptx_size(prog, &n);
    out.ptx = (char *)malloc(n);
    if (out.ptx) nv.ptx(prog, out.ptx);
    if (nv.cubin_size(prog, &out.cubin) != 0) out.cubin = 0;
  }
  nv.destroy(&prog);
  return out;
}

static compiled compile_src(const char *src, const char *arch) {
  const char *opts[] = {"-default-device", "-std=c++17", arch};
  return compile_with(src, nheaders, (const char *const *)header_texts, header_names, 3, opts);
}

static void release(compiled *c) {
  free(c->ptx);
  free(c->log);
}

static void expect_ok(const compiled *c, const char *what) {
  if (c->rc != 0)
    fail_msg("NVRTC %s: %s\n%s", what, nv.error_string(c->rc), c->log ? c->log : "(no log)");
  assert_non_null(c->ptx);
}

static const char *const ordering_needles[] = {
    ".entry rk_test_lane", ".entry rk_test_k2k", ".entry rk_test_ordering", "ld.acquire.sys.u64",
    "ld.acquire.sys.u32",  "st.release.sys.u64", "st.release.sys.u32",      "ld.relaxed.sys",
    "st.relaxed.sys",      "fence.acq_rel.sys",  "fence.sc.sys",            "ld.acquire.gpu.u64",
    "st.release.gpu.u64",  "atom.acq_rel.gpu.cas.b64", "fence.acq_rel.gpu"};

static void test_kernel_ptx_has_ordering(void **state) {
  char *src = read_file(RK_TEST_KERNEL_SRC);
  compiled c;
  size_t i;
  (void)state;
  assert_non_null(src);
  c = compile_src(src, "-arch=compute_75");
  expect_ok(&c, "kernel for compute_75");
  for (i = 0; i < sizeof ordering_needles / sizeof ordering_needles[0]; i++)
    if (strstr(c.ptx, ordering_needles[i]) == NULL)
      fail_msg("PTX lacks '%s': an ordering primitive was lost in device code", ordering_needles[i]);
  release(&c);
  free(src);
}

static void test_kernel_cubin_sm90(void **state) {
  char *src = read_file(RK_TEST_KERNEL_SRC);
  compiled c;
  (void)state;
  assert_non_null(src);
  c = compile_src(src, "-arch=sm_90");
  expect_ok(&c, "kernel for sm_90");
  assert_true(c.cubin > 0); /* ptxas inside NVRTC accepted the inline PTX */
  release(&c);
  free(src);
}

static void test_umbrella_compiles(void **state) {
  char *src = read_file(RK_TEST_UMBRELLA_SRC);
  compiled c;
  (void)state;
  assert_non_null(src);
  c = compile_src(src, "-arch=compute_75");
  expect_ok(&c, "umbrella header");
  assert_non_null(strstr(c.ptx, ".entry rk_test_umbrella"));
  release(&c);
  free(src);
}

/* Controls: the checks above can fail. */
static void test_controls(void **state) {
  const char *no_fence =
      "#include \"ringkernel/ring.h\"\n"
      "extern \"C\" __global__ void k(rk_ring *r, int *o) { o[0] = (int)r->slot_size; }\n";
  const char *only_ring[1];
  const char *only_ring_name[1] = {"ringkernel/ring.h"};
  const char *opts[] = {"-default-device", "-arch=compute_75"};
  compiled c;
  int i;
  (void)state;
  /* a kernel that uses no ordering primitive has none of their instructions */
  c = compile_src(no_fence, "-arch=compute_75");
  expect_ok(&c, "control kernel");
  assert_null(strstr(c.ptx, "fence.acq_rel.sys"));
  assert_null(strstr(c.ptx, "st.release.sys"));
  release(&c);
  /* ring.h alone, without the headers it includes: NVRTC must not find them anywhere else */
  only_ring[0] = NULL;
  for (i = 0; i < nheaders; i++)
    if (strcmp(header_names[i], "ringkernel/ring.h") == 0) only_ring[0] = header_texts[i];
  assert_non_null(only_ring[0]);
  c = compile_with(no_fence, 1, only_ring, only_ring_name, 2, opts);
  assert_int_not_equal(c.rc, 0);
  if (c.log) assert_non_null(strstr(c.log, "ringkernel/"));
  release(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kernel_ptx_has_ordering),
      cmocka_unit_test(test_kernel_cubin_sm90),
      cmocka_unit_test(test_umbrella_compiles),
      cmocka_unit_test(test_controls),
  };
  int major = 0, minor = 0, rc;
  if (!load_nvrtc()) {
    printf("NVRTC not available: skipped\n");
    return 77;
  }
  nv.version(&major, &minor);
  printf("NVRTC %d.%d\n", major, minor);
  load_headers();
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  free_headers();
  dlclose(nv.lib);
  return rc;
}
