/* test_buffers.c — bulk data (ringkernel/buffer.h): buffers in the runtime's pools, references in
 * messages, the built-in vector_add on buffers, ownership and lifetime, on the CPU backend and on
 * the emulated device (the CUDA device loop, src/device/persistent.cuh, run as host threads: its
 * rk_buffer_get reads the same table through rk_dev_params.buffers).
 *
 * Every scenario runs on both: round trips of data through buffers (device and host kinds,
 * synchronous and asynchronous copies), vector_add on buffers of any length, refusals (bounds,
 * access, undeclared references, freed buffers, pool exhaustion, bad arguments), pins (a referenced
 * buffer cannot be freed until its reply; a destroyed kernel releases them), several host threads
 * at once, and a kernel keeping a device buffer across thousands of messages. Links librk.a and
 * rk_devemu (the emulated device). */
#include "rt_util.h"

#include "device/params.h"
#include "host/internal.h"
#include "devemu_util.h"

typedef enum { ON_CPU = 0, ON_EMU = 1 } where;
static const char *const where_name[] = {"cpu", "emulated device"};

static rk_backend_ops emu_ops;

static rk_runtime *make_runtime(where w, size_t dev_bytes, size_t host_bytes, uint32_t max_buffers) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  o.buffer_device_bytes = dev_bytes;
  o.buffer_host_bytes = host_bytes;
  o.max_buffers = max_buffers;
  if (w == ON_EMU) o.watchdog_interval_ns = 1000000;
  rt = rt_create_opts(&o);
  if (w == ON_EMU) emu_backend_install(rt, &emu_ops, emu_simple_start, emu_simple_join);
  return rt;
}

static void destroy_runtime(where w, rk_runtime *rt) {
  if (w == ON_EMU) emu_backend_uninstall(rt);
  rk_runtime_destroy(rt);
}

static rk_kernel *launch_vadd(rk_runtime *rt, uint32_t lanes, uint32_t threads) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  lo.lanes = lanes;
  lo.threads_per_lane = threads;
  return rt_launch_active(rt, &rk_builtin_vector_add, &lo);
}

static void finish(rk_kernel *k) {
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  rk_kernel_destroy(k);
}

static rk_buffer *alloc_ok(rk_runtime *rt, rk_buffer_kind kind, size_t size) {
  rk_buffer *b = NULL;
  RT_OK(rt, rk_buffer_alloc(rt, kind, size, &b));
  assert_non_null(b);
  return b;
}

/* One vector_add on buffers: c[0, n) = a + b at element offsets oa, ob, oc. Returns the call's
 * result; *status the error reply's code. */
static int vadd_call(rk_kernel *k, rk_buffer *a, uint64_t oa, rk_buffer *b, uint64_t ob, rk_buffer *c, uint64_t oc,
                     uint64_t n, int32_t *status) {
  rk_vadd_buf_req req;
  rk_vadd_buf_reply rep;
  rk_msg m;
  int rc;
  memset(&req, 0, sizeof req);
  if (rk_buffer_ref(a, oa * 4, n * 4, RK_BUF_READ, &req.a) != RK_OK) return -100;
  if (rk_buffer_ref(b, ob * 4, n * 4, RK_BUF_READ, &req.b) != RK_OK) return -101;
  if (rk_buffer_ref(c, oc * 4, n * 4, RK_BUF_WRITE, &req.c) != RK_OK) return -102;
  req.n = n;
  memset(&rep, 0xff, sizeof rep);
  rc = rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG);
  if (status) *status = m.status;
  if (rc == RK_OK) {
    assert_non_null(RK_MSG_AS(&m, rk_vadd_buf_reply));
    assert_int_equal(rep.n, n);
    assert_int_equal(rep.lane, m.env.lane);
    assert_true(rep.stamp != 0);
  }
  return rc;
}

static float val_a(uint64_t i) { return (float)(i % 1000) * 0.5f; }
static float val_b(uint64_t i) { return (float)(i % 777) - 100.0f; }

static void fill_ab(rk_runtime *rt, rk_buffer *a, rk_buffer *b, uint64_t n) {
  float *x = (float *)malloc(n * 4), *y = (float *)malloc(n * 4);
  uint64_t i;
  assert_non_null(x);
  assert_non_null(y);
  for (i = 0; i < n; i++) {
    x[i] = val_a(i);
    y[i] = val_b(i);
  }
  RT_OK(rt, rk_buffer_write(a, 0, x, n * 4, NULL, NULL));
  RT_OK(rt, rk_buffer_write(b, 0, y, n * 4, NULL, NULL));
  free(x);
  free(y);
}

static void check_c(rk_runtime *rt, rk_buffer *c, uint64_t off, uint64_t n, uint64_t src_off) {
  float *z = (float *)malloc(n * 4 + 4);
  uint64_t i;
  assert_non_null(z);
  RT_OK(rt, rk_buffer_read(c, off * 4, z, n * 4, NULL, NULL));
  for (i = 0; i < n; i++) {
    float want = val_a(src_off + i) + val_b(src_off + i);
    if (z[i] != want) fail_msg("c[%llu] = %g, want %g", (unsigned long long)i, (double)z[i], (double)want);
  }
  free(z);
}

/* ---------------------------------------- round trips ---------------------------------------- */

static volatile int g_async_done;
static void on_copy(rk_buffer *b, int status, void *user) {
  assert_int_equal(status, RK_OK);
  assert_ptr_equal(user, &g_async_done);
  /* a callback may free its buffer (no copy of it is pending any more) */
  assert_int_equal(rk_buffer_free(b), RK_OK);
  __atomic_store_n(&g_async_done, 1, __ATOMIC_RELEASE);
}
static int async_done(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_async_done, __ATOMIC_ACQUIRE);
}

static void round_trip(where w) {
  rk_runtime *rt = make_runtime(w, 0, 0, 0);
  rk_buffer *d = alloc_ok(rt, RK_BUFFER_DEVICE, 100000), *h = alloc_ok(rt, RK_BUFFER_HOST, 4096), *e;
  uint8_t src[3000], dst[3000];
  size_t i, used = 0, size = 0;
  for (i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 7 + 3);
  assert_int_equal(rk_buffer_size(d), 100000);
  assert_int_equal(rk_buffer_get_kind(d), RK_BUFFER_DEVICE);
  assert_int_equal(rk_buffer_get_kind(h), RK_BUFFER_HOST);
  assert_null(rk_buffer_host_ptr(d)); /* device buffers: copies only, on every backend */
  assert_non_null(rk_buffer_host_ptr(h));
  RT_OK(rt, rk_buffer_pool_usage(rt, RK_BUFFER_DEVICE, &used, &size));
  assert_true(used >= 100000);
  assert_int_equal(size, 64u << 20);
  /* synchronous copies, at an offset, and the last byte */
  RT_OK(rt, rk_buffer_write(d, 97000, src, sizeof src, NULL, NULL));
  memset(dst, 0, sizeof dst);
  RT_OK(rt, rk_buffer_read(d, 97000, dst, sizeof dst, NULL, NULL));
  assert_memory_equal(src, dst, sizeof src);
  /* host buffers: copies and the host pointer see the same bytes */
  RT_OK(rt, rk_buffer_write(h, 1000, src, sizeof src, NULL, NULL));
  assert_memory_equal((uint8_t *)rk_buffer_host_ptr(h) + 1000, src, sizeof src);
  /* bounds and arguments */
  assert_int_equal(rk_buffer_write(d, 97001, src, sizeof src, NULL, NULL), RK_EMSGSIZE);
  assert_int_equal(rk_buffer_read(d, SIZE_MAX, dst, 1, NULL, NULL), RK_EMSGSIZE);
  assert_int_equal(rk_buffer_write(d, 0, NULL, 1, NULL, NULL), RK_EINVAL);
  assert_int_equal(rk_buffer_write(d, 0, src, 0, NULL, NULL), RK_EINVAL);
  assert_int_equal(rk_buffer_write(NULL, 0, src, 1, NULL, NULL), RK_EINVAL);
  assert_int_equal(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, 0, &e), RK_EINVAL);
  assert_null(e);
  assert_int_equal(rk_buffer_alloc(rt, (rk_buffer_kind)7, 10, &e), RK_EINVAL);
  assert_int_equal(rk_buffer_alloc(NULL, RK_BUFFER_DEVICE, 10, &e), RK_EINVAL);
  assert_int_equal(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, 10, NULL), RK_EINVAL);
  assert_int_equal(rk_buffer_free(NULL), RK_EINVAL);
  assert_int_equal(rk_buffer_size(NULL), 0);
  assert_null(rk_buffer_host_ptr(NULL));
  /* an asynchronous copy: completion on the loop thread, then a wait with nothing pending */
  g_async_done = 0;
  e = alloc_ok(rt, RK_BUFFER_DEVICE, sizeof src);
  RT_OK(rt, rk_buffer_write(e, 0, src, sizeof src, on_copy, (void *)&g_async_done));
  assert_true(rt_wait_for(async_done, NULL, RT_HANG));
  RT_OK(rt, rk_buffer_wait(d, 0));
  RT_OK(rt, rk_buffer_free(d));
  RT_OK(rt, rk_buffer_free(h));
  RT_OK(rt, rk_buffer_pool_usage(rt, RK_BUFFER_DEVICE, &used, NULL));
  assert_int_equal(used, 0);
  destroy_runtime(w, rt);
}

/* ---------------------------------------- vector_add ----------------------------------------- */

static void vector_add(where w, uint32_t threads) {
  rk_runtime *rt = make_runtime(w, 0, 0, 0);
  rk_kernel *k = launch_vadd(rt, 2, threads);
  const uint64_t n = w == ON_CPU ? (1u << 20) : (1u << 16);
  rk_buffer *a = alloc_ok(rt, RK_BUFFER_DEVICE, n * 4), *b = alloc_ok(rt, RK_BUFFER_DEVICE, n * 4);
  rk_buffer *c = alloc_ok(rt, RK_BUFFER_DEVICE, n * 4), *hc = alloc_ok(rt, RK_BUFFER_HOST, 4096 * 4);
  static const uint64_t lens[] = {0, 1, 2, 3, 15, 16, 17, 31, 33, 1000, 4093};
  rk_vadd_req inl;
  rk_vadd_reply inl_out;
  rk_msg m;
  int32_t st = 0;
  size_t i;
  fill_ab(rt, a, b, n);
  RT_OK(rt, vadd_call(k, a, 0, b, 0, c, 0, n, &st));
  check_c(rt, c, 0, n, 0);
  /* short and odd lengths, at offsets, into a host buffer too */
  for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    RT_OK(rt, vadd_call(k, a, 5, b, 5, c, 7, lens[i], &st));
    if (lens[i]) check_c(rt, c, 7, lens[i], 5);
    RT_OK(rt, vadd_call(k, a, 0, b, 0, hc, 0, lens[i], &st));
    if (lens[i]) {
      const float *z = (const float *)rk_buffer_host_ptr(hc);
      uint64_t j;
      for (j = 0; j < lens[i]; j++) assert_true(z[j] == val_a(j) + val_b(j));
    }
  }
  /* the 16-float inline request still works on the same kernel */
  memset(&inl, 0, sizeof inl);
  inl.n = 3;
  inl.a[2] = 1.5f;
  inl.b[2] = 2.0f;
  RT_OK(rt, rk_call_typed(k, rk_vadd_req, &inl, &m, &inl_out, sizeof inl_out, RT_HANG));
  assert_true(inl_out.c[2] == 3.5f);
  /* every pin was released by its reply */
  RT_OK(rt, rk_buffer_free(a));
  RT_OK(rt, rk_buffer_free(b));
  RT_OK(rt, rk_buffer_free(c));
  RT_OK(rt, rk_buffer_free(hc));
  finish(k);
  destroy_runtime(w, rt);
}

/* ---------------------------------------- refusals ------------------------------------------- */

static void refusals(where w) {
  rk_runtime *rt = make_runtime(w, 0, 0, 0);
  rk_kernel *k = launch_vadd(rt, 1, w == ON_EMU ? 2 : 1);
  rk_buffer *a = alloc_ok(rt, RK_BUFFER_DEVICE, 4096), *b = alloc_ok(rt, RK_BUFFER_DEVICE, 4096);
  rk_buffer *c = alloc_ok(rt, RK_BUFFER_DEVICE, 2048), *gone = alloc_ok(rt, RK_BUFFER_DEVICE, 4096);
  rk_vadd_buf_req req, saved;
  rk_vadd_buf_reply rep;
  rk_buf_ref r;
  rk_msg m;
  int32_t st = 0;
  uint64_t sent;
  fill_ab(rt, a, b, 1024);
  /* building a reference checks its range and access */
  assert_int_equal(rk_buffer_ref(a, 4000, 97, RK_BUF_READ, &r), RK_EMSGSIZE);
  assert_int_equal(rk_buffer_ref(a, 0, 4096, 0, &r), RK_EINVAL);
  assert_int_equal(rk_buffer_ref(a, 0, 4096, 8, &r), RK_EINVAL);
  assert_int_equal(rk_buffer_ref(a, 0, 4096, RK_BUF_READ, NULL), RK_EINVAL);
  /* n beyond c's reference: the handler refuses it with an error reply */
  memset(&req, 0, sizeof req);
  RT_OK(rt, rk_buffer_ref(a, 0, 4096, RK_BUF_READ, &req.a));
  RT_OK(rt, rk_buffer_ref(b, 0, 4096, RK_BUF_READ, &req.b));
  RT_OK(rt, rk_buffer_ref(c, 0, 2048, RK_BUF_WRITE, &req.c));
  req.n = 1024;
  saved = req;
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  /* a hand-made reference beyond its buffer: refused where the pointer is made */
  req = saved;
  req.n = 512;
  req.c.offset = 1024;
  req.c.length = 2048;
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  req.c.offset = UINT64_MAX - 8; /* no wrap-around */
  req.c.length = 2048;
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  /* access the reference does not grant: a read-only c */
  req = saved;
  req.n = 512;
  req.c.access = RK_BUF_READ;
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EINVAL);
  /* references the message did not declare (a plain call): refused by the handler */
  req = saved;
  req.n = 512;
  assert_int_equal(rk_call_typed(k, rk_vadd_buf_req, &req, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EINVAL);
  /* a freed buffer: its references are refused at the send (nothing is sent) ... */
  RT_OK(rt, rk_buffer_ref(gone, 0, 2048, RK_BUF_READ, &req.a)); /* checked first by the handler */
  RT_OK(rt, rk_buffer_free(gone));
  sent = rt_stats(k).sent;
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG), RK_ENOENT);
  assert_int_equal(rt_stats(k).sent, sent);
  /* ... and by the handler, whatever the message claims */
  req.a.msg = req.b.msg = req.c.msg = 0;
  assert_int_equal(rk_call_typed(k, rk_vadd_buf_req, &req, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_ENOENT);
  req.a.buffer = 1u << 30; /* no such slot */
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG), RK_ENOENT);
  assert_int_equal(rk_call_typed(k, rk_vadd_buf_req, &req, &m, &rep, sizeof rep, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_ENOENT);
  /* send arguments */
  req = saved;
  assert_int_equal(rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, RK_SEND_NO_REPLY, NULL), RK_EINVAL);
  assert_int_equal(rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 0, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, RK_MAX_REFS + 1, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, 40, 2, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send_refs(k, rk_vadd_buf_req_TYPE, NULL, 0, 1, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send_refs(NULL, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, 0, NULL), RK_EINVAL);
  /* a wrong size for the typed kernel: refused by the send, and the pins it took are given back */
  assert_int_equal(rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req - 8, 3, 0, NULL), RK_EMSGSIZE);
  /* a good call still works, and everything can be freed: no pin was left behind */
  req.n = 512;
  RT_OK(rt, rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG));
  check_c(rt, c, 0, 512, 0);
  (void)st;
  RT_OK(rt, rk_buffer_free(a));
  RT_OK(rt, rk_buffer_free(b));
  RT_OK(rt, rk_buffer_free(c));
  finish(k);
  destroy_runtime(w, rt);
}

/* ---------------------------------------- lifetime ------------------------------------------- */

static void lifetime(where w) {
  rk_runtime *rt = make_runtime(w, 0, 0, 0);
  rk_kernel *k = launch_vadd(rt, 1, 1);
  rk_buffer *a = alloc_ok(rt, RK_BUFFER_DEVICE, 4096), *c = alloc_ok(rt, RK_BUFFER_DEVICE, 4096);
  rk_vadd_buf_req req;
  rk_vadd_buf_reply rep;
  rk_msg m;
  uint64_t id = 0;
  fill_ab(rt, a, c, 1024);
  memset(&req, 0, sizeof req);
  RT_OK(rt, rk_buffer_ref(a, 0, 4096, RK_BUF_READ, &req.a));
  RT_OK(rt, rk_buffer_ref(a, 0, 4096, RK_BUF_READ, &req.b));
  RT_OK(rt, rk_buffer_ref(c, 0, 4096, RK_BUF_WRITE, &req.c));
  req.n = 1024;
  /* queued on an inactive kernel: in flight, so its buffers are pinned */
  RT_OK(rt, rk_kernel_deactivate(k));
  RT_OK(rt, rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, 0, &id));
  assert_int_equal(rk_buffer_free(a), RK_ESTATE);
  assert_int_equal(rk_buffer_free(c), RK_ESTATE);
  assert_non_null(strstr(rk_runtime_last_error(rt), "await"));
  /* the reply releases them */
  RT_OK(rt, rk_kernel_activate(k));
  RT_OK(rt, rk_recv(k, &m, &rep, sizeof rep, RT_HANG));
  assert_int_equal(m.env.correlation_id, id);
  assert_int_equal(rep.n, 1024);
  RT_OK(rt, rk_buffer_free(c));
  /* an rk_call_refs that timed out keeps its pins until its late reply is drained */
  c = alloc_ok(rt, RK_BUFFER_DEVICE, 4096);
  RT_OK(rt, rk_buffer_ref(c, 0, 4096, RK_BUF_WRITE, &req.c));
  RT_OK(rt, rk_kernel_deactivate(k));
  assert_int_equal(rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, 20 * RT_MS),
                   RK_ETIMEDOUT);
  assert_int_equal(rk_buffer_free(c), RK_ESTATE);
  RT_OK(rt, rk_kernel_activate(k));
  RT_OK(rt, rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG));
  RT_WAIT_STAT(k, late_replies, 1); /* the drain that found this call's reply took the late one first */
  RT_OK(rt, rk_buffer_free(c));
  /* a kernel destroyed before its replies are taken releases its messages' pins */
  c = alloc_ok(rt, RK_BUFFER_DEVICE, 4096);
  RT_OK(rt, rk_buffer_ref(c, 0, 4096, RK_BUF_WRITE, &req.c));
  RT_OK(rt, rk_kernel_deactivate(k));
  RT_OK(rt, rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, 0, NULL));
  RT_OK(rt, rk_send_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, 0, NULL));
  assert_int_equal(rk_buffer_free(a), RK_ESTATE);
  rk_kernel_destroy(k);
  RT_OK(rt, rk_buffer_free(a));
  RT_OK(rt, rk_buffer_free(c));
  /* a runtime destroyed with buffers still allocated frees them */
  (void)alloc_ok(rt, RK_BUFFER_DEVICE, 4096);
  (void)alloc_ok(rt, RK_BUFFER_HOST, 4096);
  destroy_runtime(w, rt);
}

/* ---------------------------------------- exhaustion ----------------------------------------- */

static void exhaustion(where w) {
  rk_runtime *rt = make_runtime(w, 1u << 20, 64u << 10, 4), *bad = NULL;
  rk_runtime_options o = rt_options();
  rk_buffer *b[4], *x = NULL;
  size_t used = 0, size = 0;
  int i;
  b[0] = alloc_ok(rt, RK_BUFFER_DEVICE, 1u << 20); /* the whole pool */
  assert_int_equal(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, 1, &x), RK_ENOMEM);
  assert_null(x);
  assert_non_null(strstr(rk_runtime_last_error(rt), "buffer_device_bytes"));
  assert_int_equal(rk_buffer_alloc(rt, RK_BUFFER_HOST, (64u << 10) + 1, &x), RK_ENOMEM);
  RT_OK(rt, rk_buffer_free(b[0]));
  /* freed ranges coalesce: the whole pool again */
  for (i = 0; i < 4; i++) b[i] = alloc_ok(rt, RK_BUFFER_DEVICE, 256u << 10);
  assert_int_equal(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, 1, &x), RK_ENOMEM);
  RT_OK(rt, rk_buffer_free(b[1]));
  RT_OK(rt, rk_buffer_free(b[2]));
  x = alloc_ok(rt, RK_BUFFER_DEVICE, 512u << 10);
  RT_OK(rt, rk_buffer_free(x));
  b[1] = alloc_ok(rt, RK_BUFFER_HOST, 100);
  b[2] = alloc_ok(rt, RK_BUFFER_HOST, 100);
  /* the table holds max_buffers */
  assert_int_equal(rk_buffer_alloc(rt, RK_BUFFER_HOST, 100, &x), RK_ENOMEM);
  assert_non_null(strstr(rk_runtime_last_error(rt), "max_buffers"));
  RT_OK(rt, rk_buffer_pool_usage(rt, RK_BUFFER_HOST, &used, &size));
  assert_int_equal(size, 64u << 10);
  assert_int_equal(used, 512);
  assert_int_equal(rk_buffer_pool_usage(rt, (rk_buffer_kind)0, &used, &size), RK_EINVAL);
  for (i = 0; i < 4; i++) RT_OK(rt, rk_buffer_free(b[i]));
  x = alloc_ok(rt, RK_BUFFER_HOST, 64u << 10);
  RT_OK(rt, rk_buffer_free(x));
  destroy_runtime(w, rt);
  /* a table beyond 2^24 entries is a bad option */
  o.max_buffers = (1u << 24) + 1;
  assert_int_equal(rk_runtime_create(&bad, &o), RK_EINVAL);
  assert_null(bad);
}

/* ---------------------------------------- several host threads ------------------------------- */

typedef struct worker {
  rk_runtime *rt;
  rk_kernel *k;
  uint32_t index, rounds;
  int failed;
} worker;

static void *worker_main(void *arg) {
  worker *wk = (worker *)arg;
  uint32_t r;
  const uint64_t n = 3000 + wk->index * 17;
  float *x = (float *)malloc(n * 4), *y = (float *)malloc(n * 4), *z = (float *)malloc(n * 4);
  for (r = 0; r < wk->rounds && !wk->failed; r++) {
    rk_buffer *a = NULL, *b = NULL, *c = NULL;
    rk_vadd_buf_req req;
    rk_vadd_buf_reply rep;
    rk_msg m;
    uint64_t i;
    for (i = 0; i < n; i++) {
      x[i] = (float)(wk->index * 1000 + r);
      y[i] = (float)i;
    }
    if (rk_buffer_alloc(wk->rt, RK_BUFFER_DEVICE, n * 4, &a) || rk_buffer_alloc(wk->rt, RK_BUFFER_DEVICE, n * 4, &b) ||
        rk_buffer_alloc(wk->rt, r % 2 ? RK_BUFFER_HOST : RK_BUFFER_DEVICE, n * 4, &c) ||
        rk_buffer_write(a, 0, x, n * 4, NULL, NULL) || rk_buffer_write(b, 0, y, n * 4, NULL, NULL)) {
      wk->failed = 1;
      break;
    }
    memset(&req, 0, sizeof req);
    if (rk_buffer_ref(a, 0, n * 4, RK_BUF_READ, &req.a) || rk_buffer_ref(b, 0, n * 4, RK_BUF_READ, &req.b) ||
        rk_buffer_ref(c, 0, n * 4, RK_BUF_RW, &req.c))
      wk->failed = 2;
    req.n = n;
    if (!wk->failed && rk_call_refs(wk->k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG))
      wk->failed = 3;
    if (!wk->failed && rk_buffer_read(c, 0, z, n * 4, NULL, NULL)) wk->failed = 4;
    for (i = 0; i < n && !wk->failed; i++)
      if (z[i] != x[i] + y[i]) wk->failed = 5;
    if (rk_buffer_free(a) || rk_buffer_free(b) || rk_buffer_free(c)) wk->failed = 6;
  }
  free(x);
  free(y);
  free(z);
  return NULL;
}

static void concurrent(where w) {
  rk_runtime *rt = make_runtime(w, 0, 0, 0);
  rk_kernel *k = launch_vadd(rt, 2, w == ON_EMU ? 2 : 1);
  worker wk[4];
  pthread_t t[4];
  uint32_t i;
  size_t used = 1;
  for (i = 0; i < 4; i++) {
    wk[i].rt = rt;
    wk[i].k = k;
    wk[i].index = i;
    wk[i].rounds = w == ON_EMU ? 20 : 50;
    wk[i].failed = 0;
    assert_int_equal(pthread_create(&t[i], NULL, worker_main, &wk[i]), 0);
  }
  for (i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    if (wk[i].failed) fail_msg("worker %u failed at step %d: %s", i, wk[i].failed, rk_runtime_last_error(rt));
  }
  RT_OK(rt, rk_buffer_pool_usage(rt, RK_BUFFER_DEVICE, &used, NULL));
  assert_int_equal(used, 0);
  finish(k);
  destroy_runtime(w, rt);
}

/* ---------------------------------------- state that stays ----------------------------------- */

/* c += a, message after message, on a buffer that is written once and read once: the kernel keeps
 * the data across thousands of messages, and only the final result crosses back. */
static void resident_state(where w) {
  rk_runtime *rt = make_runtime(w, 0, 0, 0);
  rk_kernel *k = launch_vadd(rt, 1, w == ON_EMU ? 2 : 1);
  const uint64_t n = 4096;
  const uint32_t msgs = w == ON_EMU ? 1000 : 3000;
  rk_buffer *a = alloc_ok(rt, RK_BUFFER_DEVICE, n * 4), *c = alloc_ok(rt, RK_BUFFER_DEVICE, n * 4);
  float *x = (float *)malloc(n * 4);
  rk_vadd_buf_req req;
  rk_vadd_buf_reply rep;
  rk_msg m;
  uint64_t i;
  uint32_t j;
  assert_non_null(x);
  for (i = 0; i < n; i++) x[i] = (float)(i % 8);
  RT_OK(rt, rk_buffer_write(a, 0, x, n * 4, NULL, NULL));
  memset(x, 0, n * 4);
  RT_OK(rt, rk_buffer_write(c, 0, x, n * 4, NULL, NULL));
  memset(&req, 0, sizeof req);
  RT_OK(rt, rk_buffer_ref(a, 0, n * 4, RK_BUF_READ, &req.a));
  RT_OK(rt, rk_buffer_ref(c, 0, n * 4, RK_BUF_READ, &req.b));
  RT_OK(rt, rk_buffer_ref(c, 0, n * 4, RK_BUF_WRITE, &req.c));
  req.n = n;
  for (j = 0; j < msgs; j++)
    RT_OK(rt, rk_call_refs(k, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, &m, &rep, sizeof rep, RT_HANG));
  RT_OK(rt, rk_buffer_read(c, 0, x, n * 4, NULL, NULL));
  for (i = 0; i < n; i++)
    if (x[i] != (float)(i % 8) * (float)msgs) fail_msg("c[%llu] = %g after %u messages", (unsigned long long)i, (double)x[i], msgs);
  assert_int_equal(rt_stats(k).handler_errors, 0);
  free(x);
  RT_OK(rt, rk_buffer_free(a));
  RT_OK(rt, rk_buffer_free(c));
  finish(k);
  destroy_runtime(w, rt);
}

/* ---------------------------------------- a handler of its own ------------------------------- */

/* The dialect on the CPU backend: rk_buffer_ptr in a handler written for the application. */
typedef struct sum_req {
  rk_buf_ref data;
} sum_req;
static int sum_handler(rk_ctx *ctx, const rk_msg *in) {
  const sum_req *q = (const sum_req *)rk_msg_payload(in);
  const uint32_t *p;
  uint64_t s = 0, i;
  int rc;
  void *v;
  if (rk_msg_len(in) != sizeof *q) return RK_EINVAL;
  if ((rc = rk_buffer_get(ctx, &q->data, RK_BUF_READ, &v)) != RK_OK) return rc;
  p = (const uint32_t *)v;
  for (i = 0; i < q->data.length / 4; i++) s += p[i];
  assert_null(rk_buffer_ptr(ctx, &q->data, RK_BUF_WRITE)); /* not granted */
  assert_null(rk_buffer_ptr(ctx, NULL, RK_BUF_READ));
  assert_int_equal(rk_buffer_get(ctx, &q->data, RK_BUF_READ, NULL), RK_EINVAL);
  return rk_reply(ctx, 9, &s, sizeof s);
}

static void test_own_handler(void **state) {
  rk_runtime *rt = make_runtime(ON_CPU, 0, 0, 0);
  rk_kernel_desc d = rt_desc("sum", sum_handler);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_buffer *b = alloc_ok(rt, RK_BUFFER_HOST, 400);
  uint32_t *p = (uint32_t *)rk_buffer_host_ptr(b), i;
  sum_req q;
  uint64_t s = 0;
  rk_msg m;
  (void)state;
  for (i = 0; i < 100; i++) p[i] = i;
  RT_OK(rt, rk_buffer_ref(b, 40, 360, RK_BUF_READ, &q.data));
  RT_OK(rt, rk_call_refs(k, 8, &q, sizeof q, 1, &m, &s, sizeof s, RT_HANG));
  assert_int_equal(s, 4950 - 45);
  RT_OK(rt, rk_buffer_free(b));
  finish(k);
  destroy_runtime(ON_CPU, rt);
}

/* ---------------------------------------- the suite ------------------------------------------ */

#define BOTH(name, body)                                    \
  static void test_##name##_cpu(void **state) {             \
    (void)state;                                            \
    body(ON_CPU);                                           \
  }                                                         \
  static void test_##name##_emu(void **state) {             \
    (void)state;                                            \
    body(ON_EMU);                                           \
  }

static void vector_add_both(where w) {
  vector_add(w, 1);
  vector_add(w, w == ON_EMU ? 3 : 4);
}

BOTH(round_trip, round_trip)
BOTH(vector_add, vector_add_both)
BOTH(refusals, refusals)
BOTH(lifetime, lifetime)
BOTH(exhaustion, exhaustion)
BOTH(concurrent, concurrent)
BOTH(resident_state, resident_state)

/* A reference to a buffer of another runtime, sent to a kernel of this one: RK_ENOENT (a reference
 * is a slot and a generation, and both runtimes' first buffers were slot 0, generation 1: this
 * runtime's buffer was pinned and used instead, silently). */
static void test_ref_from_another_runtime(void **state) {
  rk_runtime *rt0 = make_runtime(ON_CPU, 0, 0, 0), *rt1 = make_runtime(ON_CPU, 0, 0, 0);
  rk_kernel *k1 = launch_vadd(rt1, 1, 1);
  rk_buffer *b0 = alloc_ok(rt0, RK_BUFFER_DEVICE, 4096), *b1 = alloc_ok(rt1, RK_BUFFER_DEVICE, 4096);
  rk_vadd_buf_req req;
  (void)state;
  (void)b1; /* rt1's buffer in the same slot */
  memset(&req, 0, sizeof req);
  RT_OK(rt0, rk_buffer_ref(b0, 0, 4096, RK_BUF_READ, &req.a));
  RT_OK(rt0, rk_buffer_ref(b0, 0, 4096, RK_BUF_READ, &req.b));
  RT_OK(rt0, rk_buffer_ref(b0, 0, 4096, RK_BUF_WRITE, &req.c));
  req.n = 16;
  assert_int_equal(rk_send_refs(k1, rk_vadd_buf_req_TYPE, &req, sizeof req, 3, 0, NULL), RK_ENOENT);
  assert_non_null(strstr(rk_runtime_last_error(rt1), "no live buffer"));
  rk_kernel_destroy(k1);
  rk_runtime_destroy(rt1);
  rk_runtime_destroy(rt0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_cpu),     cmocka_unit_test(test_round_trip_emu),
      cmocka_unit_test(test_vector_add_cpu),     cmocka_unit_test(test_vector_add_emu),
      cmocka_unit_test(test_refusals_cpu),       cmocka_unit_test(test_refusals_emu),
      cmocka_unit_test(test_ref_from_another_runtime),
      cmocka_unit_test(test_lifetime_cpu),       cmocka_unit_test(test_lifetime_emu),
      cmocka_unit_test(test_exhaustion_cpu),     cmocka_unit_test(test_exhaustion_emu),
      cmocka_unit_test(test_concurrent_cpu),     cmocka_unit_test(test_concurrent_emu),
      cmocka_unit_test(test_resident_state_cpu), cmocka_unit_test(test_resident_state_emu),
      cmocka_unit_test(test_own_handler),
  };
  (void)where_name;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
