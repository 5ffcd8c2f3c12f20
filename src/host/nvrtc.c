/* nvrtc.c — compiling handler sources at run time with NVRTC, loaded on first use.
 *
 * NVRTC is opened with dlopen the first time a kernel brings CUDA source, so librk loads and runs
 * (CPU backend, built-in kernels) on machines without it. The program NVRTC compiles is
 *     #include "device/persistent.cuh"      (the device loop and the dialect, embedded in librk)
 *     <the handler source>
 *     RK_DEFINE_RING_KERNEL(<entry>, <handler>)
 * with no include path and -default-device (ARCHITECTURE §2): every header it needs is handed to
 * NVRTC from the strings embedded at build time. Results are cached in the process, keyed by the
 * source, handler, entry, architecture and output kind. Compile errors come back as RK_EINVAL with
 * NVRTC's log. No GPU is needed to compile. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "host/internal.h"

/* The few NVRTC entry points used, declared here so no toolkit header is needed to build. */
typedef struct _nvrtcProgram *nvrtcProgram;
typedef int (*nvrtcCreateProgram_t)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                                    const char *const *);
typedef int (*nvrtcCompileProgram_t)(nvrtcProgram, int, const char *const *);
typedef int (*nvrtcDestroyProgram_t)(nvrtcProgram *);
typedef int (*nvrtcGetSize_t)(nvrtcProgram, size_t *);
typedef int (*nvrtcGetData_t)(nvrtcProgram, char *);
typedef const char *(*nvrtcGetErrorString_t)(int);
typedef int (*nvrtcVersion_t)(int *, int *);

static struct {
  void *lib;
  char error[256];
  nvrtcCreateProgram_t create;
  nvrtcCompileProgram_t compile;
  nvrtcDestroyProgram_t destroy;
  nvrtcGetSize_t log_size, ptx_size, cubin_size;
  nvrtcGetData_t log, ptx, cubin;
  nvrtcGetErrorString_t errstr;
  nvrtcVersion_t version;
} nv;
static uv_once_t nv_once = UV_ONCE_INIT;

extern const size_t rk__embedded_count;
extern const char *const rk__embedded_names[];
extern const char *const rk__embedded_sources[];

static void nv_load(void) {
  static const char *candidates[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
                                     "/usr/local/cuda/lib64/libnvrtc.so", NULL};
  const char *env = getenv("RK_NVRTC_LIBRARY");
  int i;
  if (env && *env) nv.lib = dlopen(env, RTLD_NOW | RTLD_LOCAL);
  for (i = 0; !nv.lib && candidates[i]; i++) nv.lib = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
  if (!nv.lib) {
    const char *e = dlerror();
    snprintf(nv.error, sizeof nv.error, "NVRTC not found (%s)", e ? e : "dlopen failed");
    return;
  }
#define SYM(field, name, type)                                                             \
  do {                                                                                     \
    *(void **)&nv.field = dlsym(nv.lib, name);                                             \
    if (!nv.field) {                                                                       \
      snprintf(nv.error, sizeof nv.error, "NVRTC library lacks %s", name);                 \
      dlclose(nv.lib);                                                                     \
      nv.lib = NULL;                                                                       \
      return;                                                                              \
    }                                                                                      \
  } while (0)
  SYM(create, "nvrtcCreateProgram", nvrtcCreateProgram_t);
  SYM(compile, "nvrtcCompileProgram", nvrtcCompileProgram_t);
  SYM(destroy, "nvrtcDestroyProgram", nvrtcDestroyProgram_t);
  SYM(log_size, "nvrtcGetProgramLogSize", nvrtcGetSize_t);
  SYM(log, "nvrtcGetProgramLog", nvrtcGetData_t);
  SYM(ptx_size, "nvrtcGetPTXSize", nvrtcGetSize_t);
  SYM(ptx, "nvrtcGetPTX", nvrtcGetData_t);
  SYM(cubin_size, "nvrtcGetCUBINSize", nvrtcGetSize_t);
  SYM(cubin, "nvrtcGetCUBIN", nvrtcGetData_t);
  SYM(errstr, "nvrtcGetErrorString", nvrtcGetErrorString_t);
  SYM(version, "nvrtcVersion", nvrtcVersion_t);
#undef SYM
}

int rk__nvrtc_available(char *why, size_t len) {
  uv_once(&nv_once, nv_load);
  if (!nv.lib && why && len) snprintf(why, len, "%s", nv.error);
  return nv.lib != NULL;
}

/* ---------------------------------------- cache ---------------------------------------------- */

typedef struct cache_entry {
  struct cache_entry *next;
  uint64_t key;
  char *text; /* the full key text, compared on a hash hit */
  char *image;
  size_t len;
} cache_entry;

static uv_mutex_t cache_lock;
static uv_once_t cache_once = UV_ONCE_INIT;
static cache_entry *cache;
static volatile uint64_t compiles; /* NVRTC invocations (cache misses) */

static void cache_init(void) { uv_mutex_init(&cache_lock); }

static uint64_t fnv1a(const char *s, uint64_t h) {
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return (h ^ 0xff) * 0x100000001b3ull; /* separator, so ("ab","c") != ("a","bc") */
}

uint64_t rk__nvrtc_compile_count(void) { return __atomic_load_n(&compiles, __ATOMIC_RELAXED); }

/* ---------------------------------------- compile -------------------------------------------- */

int rk__nvrtc_compile(const char *source, const char *handler, const char *entry, const char *arch, int cubin,
                      const char **image, size_t *image_len, char *log, size_t log_len) {
  char *prog_text = NULL, *key_text = NULL, *img = NULL, opt_arch[64];
  const char *opts[4];
  nvrtcProgram prog = NULL;
  uint64_t key;
  size_t n;
  int rc, r;
  cache_entry *e;

  if (log && log_len) log[0] = '\0';
  if (!source || !handler || !entry || !arch || !image || !image_len) return RK_EINVAL;
  if (!rk__nvrtc_available(log, log_len)) return RK_ENOTSUP;
  uv_once(&cache_once, cache_init);

  n = strlen(source) + strlen(handler) + strlen(entry) + strlen(arch) + 16;
  key_text = (char *)malloc(n);
  if (!key_text) return RK_ENOMEM;
  snprintf(key_text, n, "%s\n%s\n%s\n%s\n%d", source, handler, entry, arch, cubin);
  key = fnv1a(key_text, 0xcbf29ce484222325ull);
  uv_mutex_lock(&cache_lock);
  for (e = cache; e; e = e->next)
    if (e->key == key && strcmp(e->text, key_text) == 0) break;
  uv_mutex_unlock(&cache_lock);
  if (e) {
    free(key_text);
    *image = e->image;
    *image_len = e->len;
    return RK_OK;
  }

  n = strlen(source) + 2 * strlen(entry) + strlen(handler) + 128;
  prog_text = (char *)malloc(n);
  if (!prog_text) {
    free(key_text);
    return RK_ENOMEM;
  }
  snprintf(prog_text, n, "#include \"device/persistent.cuh\"\n#line 1 \"handler.cu\"\n%s\nRK_DEFINE_RING_KERNEL(%s, %s)\n",
           source, entry, handler);
  snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", arch);
  opts[0] = "-default-device";
  opts[1] = "-std=c++17";
  opts[2] = opt_arch;
  opts[3] = "-DRK_NVRTC=1";

  rc = RK_ECUDA;
  r = nv.create(&prog, prog_text, "ringkernel_program.cu", (int)rk__embedded_count, rk__embedded_sources,
                rk__embedded_names);
  if (r != 0) {
    if (log && log_len) snprintf(log, log_len, "nvrtcCreateProgram: %s", nv.errstr(r));
    goto out;
  }
  __atomic_fetch_add(&compiles, 1, __ATOMIC_RELAXED);
  r = nv.compile(prog, 4, opts);
  if (log && log_len) {
    size_t ls = 0;
    if (nv.log_size(prog, &ls) == 0 && ls > 1) {
      char *full = (char *)malloc(ls);
      if (full && nv.log(prog, full) == 0) snprintf(log, log_len, "%s", full);
      free(full);
    }
  }
  if (r != 0) {
    if (log && log_len && log[0] == '\0') snprintf(log, log_len, "nvrtcCompileProgram: %s", nv.errstr(r));
    rc = RK_EINVAL; /* the source does not compile: a bad descriptor, as on the CPU backend */
    goto out;
  }
  if ((cubin ? nv.cubin_size : nv.ptx_size)(prog, &n) != 0 || n == 0) goto out;
  img = (char *)malloc(n);
  if (!img) {
    rc = RK_ENOMEM;
    goto out;
  }
  if ((cubin ? nv.cubin : nv.ptx)(prog, img) != 0) goto out;
  e = (cache_entry *)malloc(sizeof *e);
  if (!e) {
    rc = RK_ENOMEM;
    goto out;
  }
  e->key = key;
  e->text = key_text;
  e->image = img;
  e->len = n;
  uv_mutex_lock(&cache_lock);
  e->next = cache;
  cache = e;
  uv_mutex_unlock(&cache_lock);
  key_text = NULL;
  *image = img;
  *image_len = n;
  img = NULL;
  rc = RK_OK;
out:
  if (prog) nv.destroy(&prog);
  free(prog_text);
  free(key_text);
  free(img);
  return rc;
}
