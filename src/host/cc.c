/* cc.c — kernels given as source text (rk_kernel_desc.source) on the CPU backend.
 *
 * The system C compiler compiles the source into a shared object that is loaded with dlopen; the
 * handler it defines then runs exactly as a compiled-in one. The translation unit is
 *     #include "ringkernel.h"                 (the public headers embedded in librk, as for NVRTC)
 *     <the source>
 *     <glue>: the dialect functions (rk_reply, rk_state, ...) forwarding through a table that
 *             librk hands over at load, and rk__source_bind, which returns the handler
 * so the object needs nothing from the process: it loads the same way whether the application
 * linked librk.so or librk.a, and with RTLD_LOCAL. It is linked with --no-undefined, so a call to
 * anything that is neither the dialect nor libc is a compile error, not a load failure.
 *
 * Objects are cached on disk, named by a hash of the source, the handler name, the compiler, its
 * options and the library version: compiled in a fresh private directory, then renamed into the
 * cache (atomic: concurrent processes each rename a complete object, and every reader sees one).
 * A cache directory that cannot be created or written is no error: the compilation happens in a
 * temporary directory, removed after loading. Loaded objects stay loaded for the process's life
 * (a lane abandoned by rk_runtime_destroy may still be running their code), in a process-wide
 * table keyed by the same hash. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "host/internal.h"
#include "ringkernel/version.h"

extern char **environ;
extern const size_t rk__embedded_count;
extern const char *const rk__embedded_names[];
extern const char *const rk__embedded_sources[];

/* What librk hands a loaded object: the dialect functions. The glue below declares the same
 * struct; `size` guards against a mismatch. */
typedef struct rk__dialect {
  uint32_t size;
  void *(*state)(rk_ctx *);
  void *(*scratch)(rk_ctx *, size_t *);
  rk_hlc (*now)(rk_ctx *);
  uint32_t (*thread)(rk_ctx *);
  uint32_t (*threads)(rk_ctx *);
  void (*sync)(rk_ctx *);
  uint32_t (*lane)(rk_ctx *);
  uint32_t (*lanes)(rk_ctx *);
  uint32_t (*self)(rk_ctx *);
  int (*reply)(rk_ctx *, uint32_t, const void *, uint32_t);
  void *(*reply_reserve)(rk_ctx *, uint32_t, uint32_t);
  int (*reply_commit)(rk_ctx *);
  int (*send_to)(rk_ctx *, uint32_t, uint32_t, const void *, uint32_t);
  int (*send_to_key)(rk_ctx *, uint32_t, uint64_t, uint32_t, const void *, uint32_t);
  int (*forward)(rk_ctx *, uint32_t, uint32_t, const void *, uint32_t);
  int (*forward_key)(rk_ctx *, uint32_t, uint64_t, uint32_t, const void *, uint32_t);
  int (*publish)(rk_ctx *, uint32_t, uint32_t, const void *, uint32_t);
  int (*buffer_get)(rk_ctx *, const rk_buf_ref *, uint32_t, void **);
  void *(*buffer_ptr)(rk_ctx *, const rk_buf_ref *, uint32_t);
  int (*reply_error)(rk_ctx *, int32_t, const void *, uint32_t);
} rk__dialect;

static const rk__dialect dialect = {sizeof(rk__dialect), rk_state,      rk_scratch,     rk_now,       rk_thread,
                                    rk_threads,          rk_sync,       rk_lane,        rk_lanes,     rk_self,
                                    rk_reply,            rk_reply_reserve, rk_reply_commit, rk_send_to,
                                    rk_send_to_key,      rk_forward,    rk_forward_key, rk_publish,   rk_buffer_get,
                                    rk_buffer_ptr,       rk_reply_error};

/* The glue: %s is the handler's name (checked to be an identifier). */
static const char glue_fmt[] =
    "\n#line 1 \"ringkernel-glue\"\n"
    "typedef struct rk__dialect {\n"
    "  uint32_t size;\n"
    "  void *(*state)(rk_ctx *);\n"
    "  void *(*scratch)(rk_ctx *, size_t *);\n"
    "  rk_hlc (*now)(rk_ctx *);\n"
    "  uint32_t (*thread)(rk_ctx *);\n"
    "  uint32_t (*threads)(rk_ctx *);\n"
    "  void (*sync)(rk_ctx *);\n"
    "  uint32_t (*lane)(rk_ctx *);\n"
    "  uint32_t (*lanes)(rk_ctx *);\n"
    "  uint32_t (*self)(rk_ctx *);\n"
    "  int (*reply)(rk_ctx *, uint32_t, const void *, uint32_t);\n"
    "  void *(*reply_reserve)(rk_ctx *, uint32_t, uint32_t);\n"
    "  int (*reply_commit)(rk_ctx *);\n"
    "  int (*send_to)(rk_ctx *, uint32_t, uint32_t, const void *, uint32_t);\n"
    "  int (*send_to_key)(rk_ctx *, uint32_t, uint64_t, uint32_t, const void *, uint32_t);\n"
    "  int (*forward)(rk_ctx *, uint32_t, uint32_t, const void *, uint32_t);\n"
    "  int (*forward_key)(rk_ctx *, uint32_t, uint64_t, uint32_t, const void *, uint32_t);\n"
    "  int (*publish)(rk_ctx *, uint32_t, uint32_t, const void *, uint32_t);\n"
    "  int (*buffer_get)(rk_ctx *, const rk_buf_ref *, uint32_t, void **);\n"
    "  void *(*buffer_ptr)(rk_ctx *, const rk_buf_ref *, uint32_t);\n"
    "  int (*reply_error)(rk_ctx *, int32_t, const void *, uint32_t);\n"
    "} rk__dialect;\n"
    "static const rk__dialect *rk__d;\n"
    "void *rk_state(rk_ctx *c) { return rk__d->state(c); }\n"
    "void *rk_scratch(rk_ctx *c, size_t *n) { return rk__d->scratch(c, n); }\n"
    "rk_hlc rk_now(rk_ctx *c) { return rk__d->now(c); }\n"
    "uint32_t rk_thread(rk_ctx *c) { return rk__d->thread(c); }\n"
    "uint32_t rk_threads(rk_ctx *c) { return rk__d->threads(c); }\n"
    "void rk_sync(rk_ctx *c) { rk__d->sync(c); }\n"
    "uint32_t rk_lane(rk_ctx *c) { return rk__d->lane(c); }\n"
    "uint32_t rk_lanes(rk_ctx *c) { return rk__d->lanes(c); }\n"
    "uint32_t rk_self(rk_ctx *c) { return rk__d->self(c); }\n"
    "int rk_reply(rk_ctx *c, uint32_t t, const void *p, uint32_t n) { return rk__d->reply(c, t, p, n); }\n"
    "void *rk_reply_reserve(rk_ctx *c, uint32_t t, uint32_t n) { return rk__d->reply_reserve(c, t, n); }\n"
    "int rk_reply_commit(rk_ctx *c) { return rk__d->reply_commit(c); }\n"
    "int rk_send_to(rk_ctx *c, uint32_t r, uint32_t t, const void *p, uint32_t n) { return rk__d->send_to(c, r, t, p, n); }\n"
    "int rk_send_to_key(rk_ctx *c, uint32_t r, uint64_t k, uint32_t t, const void *p, uint32_t n) {\n"
    "  return rk__d->send_to_key(c, r, k, t, p, n);\n"
    "}\n"
    "int rk_forward(rk_ctx *c, uint32_t r, uint32_t t, const void *p, uint32_t n) { return rk__d->forward(c, r, t, p, n); }\n"
    "int rk_forward_key(rk_ctx *c, uint32_t r, uint64_t k, uint32_t t, const void *p, uint32_t n) {\n"
    "  return rk__d->forward_key(c, r, k, t, p, n);\n"
    "}\n"
    "int rk_publish(rk_ctx *c, uint32_t o, uint32_t t, const void *p, uint32_t n) { return rk__d->publish(c, o, t, p, n); }\n"
    "int rk_buffer_get(rk_ctx *c, const rk_buf_ref *r, uint32_t w, void **q) { return rk__d->buffer_get(c, r, w, q); }\n"
    "void *rk_buffer_ptr(rk_ctx *c, const rk_buf_ref *r, uint32_t w) { return rk__d->buffer_ptr(c, r, w); }\n"
    "int rk_reply_error(rk_ctx *c, int32_t e, const void *p, uint32_t n) { return rk__d->reply_error(c, e, p, n); }\n"
    "int rk__source_bind(const rk__dialect *d, uint32_t size, rk_handler_fn *out);\n"
    "int rk__source_bind(const rk__dialect *d, uint32_t size, rk_handler_fn *out) {\n"
    "  if (size != sizeof(rk__dialect)) return -1;\n"
    "  rk__d = d;\n"
    "  *out = %s;\n"
    "  return 0;\n"
    "}\n";

/* Options of every compilation (part of the cache key). */
static const char *const cc_flags[] = {"-std=gnu11", "-O2", "-fPIC", "-shared", "-w",
                                       "-Werror=implicit-function-declaration", "-Wl,--no-undefined"};
#define N_CC_FLAGS (sizeof cc_flags / sizeof cc_flags[0])

typedef struct loaded {
  struct loaded *next;
  char key[33];
  rk_handler_fn handler;
} loaded;

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t lock; /* the table, and compilations (one at a time per process) */
static loaded *table;
static volatile uint64_t compiles;

static void init_once(void) { uv_mutex_init(&lock); }

uint64_t rk__cc_compile_count(void) { return __atomic_load_n(&compiles, __ATOMIC_RELAXED); }

/* ---------------------------------------- helpers -------------------------------------------- */

static uint64_t mix(const char *s, size_t n, uint64_t h, uint64_t prime) {
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * prime;
  return (h ^ 0xff) * prime; /* separator */
}

static int is_identifier(const char *s) {
  const char *p;
  if (s == NULL || !(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) return 0;
  for (p = s; *p; p++)
    if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) return 0;
  return p - s < 256;
}

/* The compiler: a path (must be executable), or a name looked up in PATH. */
static int find_compiler(const char *want, char *path, size_t len) {
  const char *p, *env = getenv("PATH");
  if (strchr(want, '/')) {
    snprintf(path, len, "%s", want);
    return access(path, X_OK) == 0;
  }
  for (p = env ? env : "/usr/local/bin:/usr/bin:/bin"; p && *p;) {
    const char *end = strchr(p, ':');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n > 0 && snprintf(path, len, "%.*s/%s", (int)n, p, want) < (int)len && access(path, X_OK) == 0) return 1;
    p = end ? end + 1 : NULL;
  }
  return 0;
}

static int mkdirs(const char *dir) {
  char buf[4096];
  char *p;
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return -1;
  for (p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  return mkdir(buf, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  (void)remove(path);
  return 0;
}
static void rm_tree(const char *dir) { (void)nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS); }

static int write_file(const char *path, const char *a, const char *b, const char *c) {
  FILE *f = fopen(path, "w");
  int ok;
  if (f == NULL) return -1;
  ok = fputs(a, f) >= 0 && (!b || fputs(b, f) >= 0) && (!c || fputs(c, f) >= 0);
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* The embedded public headers under dir/include (names "ringkernel/x.h", "device/x.h", ...). */
static int write_headers(const char *dir) {
  char path[4200];
  size_t i;
  for (i = 0; i < rk__embedded_count; i++) {
    char *slash;
    snprintf(path, sizeof path, "%s/include/%s", dir, rk__embedded_names[i]);
    slash = strrchr(path, '/');
    *slash = '\0';
    if (mkdirs(path) != 0) return -1;
    *slash = '/';
    if (write_file(path, rk__embedded_sources[i], NULL, NULL) != 0) return -1;
  }
  return 0;
}

static void read_log(const char *path, char *log, size_t log_len) {
  FILE *f;
  size_t n;
  if (log == NULL || log_len == 0) return;
  log[0] = '\0';
  if ((f = fopen(path, "r")) == NULL) return;
  n = fread(log, 1, log_len - 1, f);
  log[n] = '\0';
  fclose(f);
}

/* Does the compiler's log report an error anywhere but in the glue ("ringkernel-glue:LINE:COL:
 * error: ...", the file name its #line directive gives it): in the application's source
 * ("source:..."), or in a header the source includes? */
static int error_outside_glue(const char *log) {
  const char *p = log;
  while (p && *p) {
    const char *eol = strchr(p, '\n');
    size_t n = eol ? (size_t)(eol - p) : strlen(p);
    const char *e = strstr(p, " error:");
    if (e && e < p + n && strncmp(p, "ringkernel-glue:", 16) != 0) return 1;
    p = eol ? eol + 1 : NULL;
  }
  return 0;
}

/* Does `name` occur in log as a whole identifier (not inside a longer one)? */
static int mentions_identifier(const char *log, const char *name) {
  size_t n = strlen(name);
  const char *p = log;
#define RK_IDCHAR(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9') || (c) == '_')
  if (n == 0) return 0;
  while ((p = strstr(p, name)) != NULL) {
    if ((p == log || !RK_IDCHAR(p[-1])) && !RK_IDCHAR(p[n])) return 1;
    p++;
  }
#undef RK_IDCHAR
  return 0;
}

/* The compiler's first error lines (for the refusal's message), at most `len` bytes. */
static void first_errors(const char *log, char *out, size_t len) {
  const char *p = log;
  size_t used = 0;
  int lines = 0;
  out[0] = '\0';
  while (p && *p && lines < 3 && used + 1 < len) {
    const char *end = strchr(p, '\n');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if ((memmem(p, n, "error", 5) != NULL && memmem(p, n, "collect2", 8) == NULL) ||
        memmem(p, n, "undefined reference", 19) != NULL) {
      int w = snprintf(out + used, len - used, "%s%.*s", lines ? " | " : "", (int)n, p);
      if (w < 0) break;
      used += (size_t)w < len - used ? (size_t)w : len - used - 1;
      lines++;
    }
    p = end ? end + 1 : NULL;
  }
  if (lines == 0) snprintf(out, len, "%.*s", (int)(len - 1), log);
}

/* Run argv with stdout and stderr to log_path; its exit status, or -1. */
static int run(char *const argv[], const char *log_path) {
  posix_spawn_file_actions_t fa;
  pid_t pid;
  int st = 0, rc;
  if (posix_spawn_file_actions_init(&fa) != 0) return -1;
  rc = posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (rc == 0) rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *cache_dir_of(rk_runtime *rt, char *buf, size_t len) {
  const char *d = rt->opts.cache_dir, *e;
  if (d && *d) return d;
  if ((e = getenv("RK_CACHE_DIR")) && *e) return e;
  if ((e = getenv("XDG_CACHE_HOME")) && *e && snprintf(buf, len, "%s/ringkernel", e) < (int)len) return buf;
  if ((e = getenv("HOME")) && *e && snprintf(buf, len, "%s/.cache/ringkernel", e) < (int)len) return buf;
  return NULL;
}

/* Load obj and bind its handler. */
static int load(rk_runtime *rt, const char *kname, const char *obj, const char *handler, rk_handler_fn *out) {
  int (*bind)(const rk__dialect *, uint32_t, rk_handler_fn *);
  void *h = dlopen(obj, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    return rk__fail(rt, RK_ESYS, "kernel %s: its compiled source could not be loaded: %s", kname, e ? e : "dlopen failed");
  }
  *(void **)&bind = dlsym(h, "rk__source_bind");
  if (bind == NULL || bind(&dialect, sizeof dialect, out) != 0 || *out == NULL) {
    dlclose(h);
    return rk__fail(rt, RK_ESYS, "kernel %s: %s is not a ringkernel source object of this version (handler %s)",
                    kname, obj, handler);
  }
  return RK_OK; /* the handle stays open for the process's life */
}

/* ---------------------------------------- compile -------------------------------------------- */

int rk__cc_compile(rk_runtime *rt, const rk_kernel_desc *d, rk_handler_fn *out, char *log, size_t log_len) {
  const char *kname = d->name ? d->name : "kernel", *want, *cache;
  char cc[4096], cbuf[4096], key[33], tmp[4200], obj[4300], src[4300], logp[4300], incl[4300], first[300];
  char *glue = NULL, *argv[N_CC_FLAGS + 8];
  uint64_t h1, h2;
  size_t i, n;
  int rc, persist = 0, st, note = 0;
  loaded *e;

  if (log && log_len) log[0] = '\0';
  *out = NULL;
  tmp[0] = '\0';
  if (d->source == NULL) return rk__fail(rt, RK_EINVAL, "kernel %s: no source (descriptor field .source)", kname);
  if (!is_identifier(d->source_handler))
    return rk__fail(rt, RK_EINVAL, "kernel %s: descriptor field .source_handler %s%s%s is not a C identifier", kname,
                    d->source_handler ? "'" : "", d->source_handler ? d->source_handler : "(NULL)",
                    d->source_handler ? "'" : "");
  want = rt->opts.cc && *rt->opts.cc ? rt->opts.cc : getenv("RK_CC") && *getenv("RK_CC") ? getenv("RK_CC") : "cc";
  if (!find_compiler(want, cc, sizeof cc))
    return rk__fail(rt, RK_ENOTSUP,
                    "kernel %s: its source needs a C compiler on the CPU backend, and '%s' (%s) was not found%s%s; "
                    "install one or name it with RK_CC or the runtime option cc", kname, want,
                    rt->opts.cc && *rt->opts.cc ? "runtime option cc" : getenv("RK_CC") && *getenv("RK_CC") ? "RK_CC" : "default",
                    strchr(want, '/') ? "" : " in PATH=", strchr(want, '/') ? "" : (getenv("PATH") ? getenv("PATH") : ""));

  /* the key: library version, compiler, options, handler, source */
  h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
#define KEY(s)                                                \
  do {                                                        \
    h1 = mix((s), strlen(s), h1, 0x100000001b3ull);           \
    h2 = mix((s), strlen(s), h2, 0x00000100000001b3ull * 3u); \
  } while (0)
  KEY(rk_version_string());
  KEY(cc);
  for (i = 0; i < N_CC_FLAGS; i++) KEY(cc_flags[i]);
  KEY(d->source_handler);
  KEY(d->source);
  KEY(glue_fmt);
  for (i = 0; i < rk__embedded_count; i++) KEY(rk__embedded_sources[i]);
#undef KEY
  snprintf(key, sizeof key, "%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);

  uv_once(&once, init_once);
  uv_mutex_lock(&lock);
  for (e = table; e; e = e->next)
    if (strcmp(e->key, key) == 0) break;
  if (e) {
    *out = e->handler;
    uv_mutex_unlock(&lock);
    return RK_OK;
  }

  /* On disk already (another runtime, process or run)? */
  cache = cache_dir_of(rt, cbuf, sizeof cbuf);
  if (cache && mkdirs(cache) == 0 && snprintf(obj, sizeof obj, "%s/rk-%s.so", cache, key) < (int)sizeof obj &&
      access(obj, R_OK) == 0) {
    if (load(rt, kname, obj, d->source_handler, out) == RK_OK) goto remember;
    rk__error_clear(rt); /* damaged: compile again, and replace it */
  }
  /* A private directory: in the cache (then renamed into it), else a temporary one. */
  if (cache && snprintf(tmp, sizeof tmp, "%s/tmp-XXXXXX", cache) < (int)sizeof tmp && mkdtemp(tmp) != NULL) {
    persist = 1;
  } else {
    const char *t = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/rk-cc-XXXXXX", t && *t ? t : "/tmp");
    if (mkdtemp(tmp) == NULL) {
      uv_mutex_unlock(&lock);
      return rk__fail(rt, RK_ESYS, "kernel %s: cannot create a directory to compile its source in (%s: %s)", kname,
                      tmp, strerror(errno));
    }
    note = 1; /* logged once the lock is released */
  }
  snprintf(src, sizeof src, "%s/%s.c", tmp, is_identifier(kname) ? kname : "kernel");
  snprintf(logp, sizeof logp, "%s/log.txt", tmp);
  snprintf(incl, sizeof incl, "-I%s/include", tmp);
  n = sizeof glue_fmt + strlen(d->source_handler) + 1;
  if ((glue = (char *)malloc(n)) == NULL) {
    rc = rk__fail(rt, RK_ENOMEM, "kernel %s: out of memory", kname);
    goto out;
  }
  snprintf(glue, n, glue_fmt, d->source_handler);
  if (write_headers(tmp) != 0 ||
      write_file(src, "#include \"ringkernel.h\"\n#line 1 \"source\"\n", d->source, glue) != 0) {
    rc = rk__fail(rt, RK_ESYS, "kernel %s: cannot write its source to %s: %s", kname, tmp, strerror(errno));
    goto out;
  }
  {
    char objtmp[4300];
    snprintf(objtmp, sizeof objtmp, "%s/kernel.so", tmp);
    i = 0;
    argv[i++] = cc;
    for (n = 0; n < N_CC_FLAGS; n++) argv[i++] = (char *)cc_flags[n];
    argv[i++] = incl;
    argv[i++] = (char *)"-o";
    argv[i++] = objtmp;
    argv[i++] = src;
    argv[i] = NULL;
    __atomic_fetch_add(&compiles, 1, __ATOMIC_RELAXED);
    st = run(argv, logp);
    read_log(logp, log, log_len);
    if (st != 0) {
      char full[4096], handler_ref[300];
      read_log(logp, full, sizeof full);
      snprintf(handler_ref, sizeof handler_ref, "`%s'", d->source_handler);
      if (st < 0) {
        rc = rk__fail(rt, RK_ESYS, "kernel %s: could not run the C compiler %s", kname, cc);
      } else if ((strstr(full, "ringkernel-glue") && !error_outside_glue(full) &&
                  mentions_identifier(full, d->source_handler)) ||
                 (strstr(full, "undefined reference to") && strstr(full, handler_ref))) {
        /* (the glue names the handler; a source that does not compile breaks the glue too, and a
         * short handler name occurs in any log: only a log whose errors are all in the glue, naming
         * the handler as a whole identifier, says the handler is missing) */
        first_errors(full, first, sizeof first);
        rc = rk__fail(rt, RK_EINVAL, "kernel %s: the source defines no handler named '%s' (descriptor field "
                      ".source_handler): %s", kname, d->source_handler, first);
      } else {
        first_errors(full, first, sizeof first);
        rc = rk__fail(rt, RK_EINVAL, "kernel %s: its source does not compile (%s): %s", kname, cc, first);
      }
      goto out;
    }
    if (persist) {
      if (rename(objtmp, obj) != 0) {
        rc = rk__fail(rt, RK_ESYS, "kernel %s: cannot move its compiled source into %s: %s", kname, cache, strerror(errno));
        goto out;
      }
    } else {
      snprintf(obj, sizeof obj, "%s", objtmp);
    }
  }
  if ((rc = load(rt, kname, obj, d->source_handler, out)) != RK_OK) goto out;

remember:
  if ((e = (loaded *)calloc(1, sizeof *e)) != NULL) { /* without it: loaded again next time */
    memcpy(e->key, key, sizeof key);
    e->handler = *out;
    e->next = table;
    table = e;
  }
  rc = RK_OK;
out:
  uv_mutex_unlock(&lock);
  if (note)
    rk__log(rt, RK_LOG_INFO, "kernel %s: cache directory %s not writable: compiled in %s", kname,
            cache ? cache : "(none)", tmp);
  free(glue);
  if (tmp[0]) rm_tree(tmp); /* the private directory goes; a loaded object stays mapped */
  return rc;
}
