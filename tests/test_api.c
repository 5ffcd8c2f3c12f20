/* test_api.c — the C API for callers through the C ABI (issue 14): the options' defaults as
 * functions, struct sizes, message types by name, the application error-code range; and the
 * monitoring outputs (Prometheus text, the /metrics endpoint) when the library has them. */
#include "rt_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

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

/* A struct from a newer header (larger than this library's): accepted when every byte past the
 * library's fields is zero (the newer fields at their defaults), refused with RK_EINVAL when one
 * is set: the same rule for the runtime options, the launch options and the kernel descriptor
 * (the runtime options refused any larger size and accepted a size of 1, which dropped the rest;
 * the other two accepted set fields silently). */
typedef struct newer_runtime_options {
  rk_runtime_options o;
  uint64_t added;
} newer_runtime_options;
typedef struct newer_launch_options {
  rk_launch_options o;
  uint64_t added;
} newer_launch_options;
typedef struct newer_desc {
  rk_kernel_desc d;
  uint64_t added;
} newer_desc;

static void test_newer_structs(void **state) {
  newer_runtime_options ro;
  newer_launch_options lo;
  newer_desc nd;
  rk_runtime *rt = NULL;
  rk_kernel *k = NULL;
  (void)state;
  memset(&ro, 0, sizeof ro);
  ro.o = (rk_runtime_options)RK_RUNTIME_OPTIONS_INIT;
  ro.o.backend = RK_BACKEND_CPU;
  ro.o.size = (uint32_t)sizeof ro;
  ro.added = 1;
  assert_int_equal(rk_runtime_create(&rt, &ro.o), RK_EINVAL);
  assert_null(rt);
  assert_non_null(strstr(rk_runtime_last_error(NULL), "newer header"));
  ro.o.size = 2; /* not even its size field */
  assert_int_equal(rk_runtime_create(&rt, &ro.o), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(NULL), "size is 2"));
  ro.o.size = (uint32_t)sizeof ro;
  ro.added = 0;
  assert_int_equal(rk_runtime_create(&rt, &ro.o), RK_OK);
  assert_int_equal(rk_runtime_backend(rt), RK_BACKEND_CPU);

  memset(&lo, 0, sizeof lo);
  lo.o = (rk_launch_options)RK_LAUNCH_OPTIONS_INIT;
  lo.o.size = (uint32_t)sizeof lo;
  memset(&nd, 0, sizeof nd);
  nd.d = rk_builtin_echo;
  nd.d.size = (uint32_t)sizeof nd;
  nd.added = 7;
  assert_int_equal(rk_kernel_launch(rt, &nd.d, &lo.o, &k), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "newer header"));
  nd.added = 0;
  lo.added = 7;
  assert_int_equal(rk_kernel_launch(rt, &nd.d, &lo.o, &k), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "newer header"));
  assert_null(k);
  lo.added = 0;
  assert_int_equal(rk_kernel_launch(rt, &nd.d, &lo.o, &k), RK_OK);
  assert_non_null(k);
  rk_kernel_destroy(k);
  /* a graph's node: the same rule at rk_graph_add, and the launch takes what was accepted (it used
   * to look at the node's other fields past the copied descriptor) */
  {
    rk_graph *g = NULL;
    uint32_t node;
    assert_int_equal(rk_graph_create(rt, &g), RK_OK);
    nd.added = 7;
    assert_int_equal(rk_graph_add(g, &nd.d, &lo.o, 0, &node), RK_EINVAL);
    assert_non_null(strstr(rk_runtime_last_error(rt), "newer header"));
    nd.added = 0;
    lo.added = 7;
    assert_int_equal(rk_graph_add(g, &nd.d, &lo.o, 0, &node), RK_EINVAL);
    lo.added = 0;
    assert_int_equal(rk_graph_add(g, &nd.d, &lo.o, 0, &node), RK_OK);
    assert_int_equal(rk_graph_launch(g), RK_OK);
    assert_non_null(rk_graph_kernel(g, node));
    assert_int_equal(rk_graph_terminate(g, 10 * 1000000000ll), RK_OK);
    rk_graph_destroy(g);
  }
  rk_runtime_destroy(rt);
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

/* an error reply with data: the balance on an overdraft */
static int overdraft_handler(rk_ctx *ctx, const rk_msg *in) {
  int64_t v, balance = 12;
  int rc;
  if (rk_msg_len(in) != sizeof v) return RK_EINVAL;
  memcpy(&v, rk_msg_payload(in), sizeof v);
  if (v == 1) { /* the argument checks */
    uint8_t big[RK_REPLY_ERROR_MAX + 1];
    memset(big, 0, sizeof big);
    if (rk_reply_error(ctx, 5, &balance, sizeof balance) != RK_EINVAL) return RK_EHANDLER;
    if (rk_reply_error(ctx, RK_EAPP(1), NULL, 3) != RK_EINVAL) return RK_EHANDLER;
    if (rk_reply_error(ctx, RK_EAPP(1), big, sizeof big) != RK_EMSGSIZE) return RK_EHANDLER;
    return rk_reply(ctx, 1, &v, sizeof v);
  }
  if (v > balance) {
    rc = rk_reply_error(ctx, RK_EAPP(9), &balance, sizeof balance);
    return rc ? rc : RK_EAPP(9);
  }
  if (v == 0) return rk_reply_error(ctx, RK_EAPP(2), NULL, 0) ? RK_EHANDLER : RK_EAPP(2); /* code only */
  return rk_reply(ctx, 1, &v, sizeof v);
}

static void test_error_reply_payload(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("overdraft", overdraft_handler);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  rk_msg reply;
  int64_t v = 100, buf[4], bal;
  uint32_t n = 99;
  const void *p;
  (void)state;
  assert_int_equal(rk_call(k, 1, &v, sizeof v, &reply, buf, sizeof buf, RT_HANG), RK_EHANDLER);
  assert_true(rk_msg_is_error(&reply));
  assert_int_equal(reply.status, RK_EAPP(9));
  assert_int_equal(reply.len, 4 + sizeof bal);
  p = rk_msg_error_payload(&reply, &n);
  assert_non_null(p);
  assert_int_equal(n, sizeof bal);
  memcpy(&bal, p, sizeof bal);
  assert_int_equal(bal, 12);
  /* code only: no data */
  v = 0;
  assert_int_equal(rk_call(k, 1, &v, sizeof v, &reply, buf, sizeof buf, RT_HANG), RK_EHANDLER);
  assert_int_equal(reply.status, RK_EAPP(2));
  assert_null(rk_msg_error_payload(&reply, &n));
  assert_int_equal(n, 0);
  /* refused arguments, then a normal reply; one error counted per error reply */
  v = 1;
  RT_OK(rt, rk_call(k, 1, &v, sizeof v, &reply, buf, sizeof buf, RT_HANG));
  assert_null(rk_msg_error_payload(&reply, NULL));
  /* no reply wanted: nothing comes, and nothing breaks */
  v = 100;
  RT_OK(rt, rk_send(k, 1, &v, sizeof v, RK_SEND_NO_REPLY, NULL));
  v = 5;
  RT_OK(rt, rk_call(k, 1, &v, sizeof v, &reply, buf, sizeof buf, RT_HANG));
  assert_int_equal(buf[0], 5);
  assert_int_equal(rt_stats(k).handler_errors, 3);
  rk_runtime_destroy(rt);
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

static void test_typed_keyed_helpers(void **state) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  rk_counter_add add = {3};
  rk_counter_value v;
  rk_msg reply;
  uint64_t id = 0;
  (void)state;
  lo.lanes = 1;
  k = rt_launch_active(rt, &rk_builtin_counter, &lo);
  RT_OK(rt, rk_call_key_typed(k, 42, rk_counter_add, &add, &reply, &v, sizeof v, RT_HANG));
  assert_int_equal(v.total, 3);
  RT_OK(rt, rk_send_key_typed(k, 42, rk_counter_add, &add, 0, &id));
  assert_int_not_equal(id, 0);
  RT_OK(rt, rk_recv(k, &reply, &v, sizeof v, RT_HANG));
  assert_int_equal(reply.env.correlation_id, id);
  assert_int_equal(v.total, 6);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- tokens --------------------------------------------- */

#define TOK_THREADS 3
#define TOK_PER_THREAD 3000

typedef struct tok_sender {
  rk_kernel *k;
  uint32_t who;
  int rc;
} tok_sender;

/* Each message carries (who, seq) in its payload and who << 32 | seq as its token. */
static void *tok_send_loop(void *arg) {
  tok_sender *s = (tok_sender *)arg;
  uint32_t i, p[2];
  for (i = 0; i < TOK_PER_THREAD; i++) {
    p[0] = s->who;
    p[1] = i;
    if (i % 2)
      s->rc = rk_send_token(s->k, ((uint64_t)s->who << 32) | i, 5, p, sizeof p, 0, NULL);
    else
      s->rc = rk_send_key_token(s->k, i, ((uint64_t)s->who << 32) | i, 5, p, sizeof p, 0, NULL);
    if (s->rc != RK_OK) break;
  }
  return NULL;
}

typedef struct tok_cb {
  pthread_mutex_t lock;
  unsigned got, bad;
} tok_cb;

static void tok_on_reply(rk_kernel *k, const rk_msg *msg, void *user) {
  tok_cb *c = (tok_cb *)user;
  uint64_t tok = 0;
  uint32_t p[2];
  int found = rk_msg_token(k, msg, &tok);
  memcpy(p, msg->payload, sizeof p);
  pthread_mutex_lock(&c->lock);
  if (found != 1 || tok != (((uint64_t)p[0] << 32) | p[1]) || rk_msg_token(k, msg, &tok) != 0) c->bad++;
  c->got++;
  pthread_mutex_unlock(&c->lock);
}

static unsigned tok_got(tok_cb *c) {
  unsigned n;
  pthread_mutex_lock(&c->lock);
  n = c->got;
  pthread_mutex_unlock(&c->lock);
  return n;
}

static void test_tokens(void **state) {
  rk_runtime *rt = rt_create();
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  rk_kernel *k;
  tok_sender s[TOK_THREADS];
  pthread_t th[TOK_THREADS];
  rk_msg m;
  uint32_t p[2], i, n = 0;
  uint64_t tok, id;
  static tok_cb cb;
  (void)state;
  lo.lanes = 2;
  lo.inbox_capacity = 64; /* senders meet a full inbox: the table sees sends that wait */
  k = rt_launch_active(rt, &rk_builtin_echo, &lo);
  /* senders on three threads, one receiver here: every reply's token is its sender's */
  for (i = 0; i < TOK_THREADS; i++) {
    s[i].k = k;
    s[i].who = i + 1;
    s[i].rc = 0;
    assert_int_equal(pthread_create(&th[i], NULL, tok_send_loop, &s[i]), 0);
  }
  while (n < TOK_THREADS * TOK_PER_THREAD) {
    RT_OK(rt, rk_recv_token(k, &m, p, sizeof p, RT_HANG, &tok));
    assert_int_equal(tok, ((uint64_t)p[0] << 32) | p[1]);
    assert_int_equal(rk_msg_token(k, &m, &tok), 0); /* handed out once */
    assert_int_equal(tok, 0);
    n++;
  }
  for (i = 0; i < TOK_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(s[i].rc, RK_OK);
  }
  /* a plain send's reply has no token; a token of 0 is a token */
  p[0] = 9;
  p[1] = 9;
  RT_OK(rt, rk_send(k, 5, p, sizeof p, 0, NULL));
  tok = 77;
  RT_OK(rt, rk_recv_token(k, &m, p, sizeof p, RT_HANG, &tok));
  assert_int_equal(tok, 0);
  assert_int_equal(rk_msg_token(k, &m, NULL), 0);
  RT_OK(rt, rk_send_token(k, 0, 5, p, sizeof p, 0, &id));
  RT_OK(rt, rk_recv(k, &m, p, sizeof p, RT_HANG));
  assert_int_equal(m.env.correlation_id, id);
  assert_int_equal(rk_msg_token(k, &m, &tok), 1);
  assert_int_equal(tok, 0);
  /* in a receive callback */
  memset(&cb, 0, sizeof cb);
  pthread_mutex_init(&cb.lock, NULL);
  RT_OK(rt, rk_recv_start(k, tok_on_reply, &cb));
  for (i = 0; i < 500; i++) {
    p[0] = 4;
    p[1] = i;
    RT_OK(rt, rk_send_token(k, (4ull << 32) | i, 5, p, sizeof p, 0, NULL));
  }
  {
    uint64_t t0 = rt_now_ns();
    while (tok_got(&cb) < 500) {
      if ((int64_t)(rt_now_ns() - t0) > RT_HANG) fail_msg("callbacks: %u of 500", tok_got(&cb));
      rt_sleep_ms(1);
    }
  }
  RT_OK(rt, rk_recv_stop(k));
  assert_int_equal(cb.bad, 0);
  pthread_mutex_destroy(&cb.lock);
  /* refused sends keep nothing; no-reply sends keep nothing; bad arguments */
  assert_int_equal(rk_send_token(k, 1, 0, p, sizeof p, 0, NULL), RK_EINVAL);
  RT_OK(rt, rk_send_token(k, 1, 5, p, sizeof p, RK_SEND_NO_REPLY, NULL));
  assert_int_equal(rk_send_token(NULL, 1, 5, p, sizeof p, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_msg_token(NULL, &m, &tok), RK_EINVAL);
  assert_int_equal(rk_msg_token(k, NULL, &tok), RK_EINVAL);
  /* a token never taken is freed with the kernel (ASan checks) */
  RT_OK(rt, rk_send_token(k, 123, 5, p, sizeof p, 0, NULL));
  RT_WAIT_STAT(k, msgs_out, (uint64_t)TOK_THREADS * TOK_PER_THREAD + 503); /* 2 + 500 + this one (no-reply sends have none) */
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- Prometheus ----------------------------------------- */

static void test_prometheus_text(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  rk_kernel *k2 = rt_launch(rt, &rk_builtin_counter, NULL);
  char *buf, small[16], want[160];
  rk_msg reply;
  uint32_t x = 1, y, i;
  int need, got;
  (void)state;
  for (i = 0; i < 5; i++) RT_OK(rt, rk_call(k, 3, &x, sizeof x, &reply, &y, sizeof y, RT_HANG));
  need = rk_runtime_stats_prometheus(rt, NULL, 0);
  assert_true(need > 0);
  buf = (char *)malloc((size_t)need + 1);
  got = rk_runtime_stats_prometheus(rt, buf, (size_t)need + 1);
  assert_int_equal(got, need);
  assert_int_equal(strlen(buf), (size_t)got);
  assert_non_null(strstr(buf, "# TYPE rk_runtime_info gauge\nrk_runtime_info{backend=\"cpu\""));
  assert_non_null(strstr(buf, "rk_runtime_kernels 2\n"));
  snprintf(want, sizeof want, "rk_kernel_sent_total{kernel=\"echo\",id=\"%u\"} 5\n", rk_kernel_id(k));
  assert_non_null(strstr(buf, want));
  snprintf(want, sizeof want, "rk_kernel_received_total{kernel=\"echo\",id=\"%u\"} 5\n", rk_kernel_id(k));
  assert_non_null(strstr(buf, want));
  snprintf(want, sizeof want, "rk_kernel_state{kernel=\"counter\",id=\"%u\",state=\"LAUNCHED\"} 1\n", rk_kernel_id(k2));
  assert_non_null(strstr(buf, want));
  snprintf(want, sizeof want, "rk_kernel_state{kernel=\"counter\",id=\"%u\",state=\"ACTIVE\"} 0\n", rk_kernel_id(k2));
  assert_non_null(strstr(buf, want));
  snprintf(want, sizeof want, "rk_kernel_latency_seconds_count{kernel=\"echo\",id=\"%u\"} 5\n", rk_kernel_id(k));
  assert_non_null(strstr(buf, want));
  snprintf(want, sizeof want, "rk_kernel_latency_seconds_bucket{kernel=\"echo\",id=\"%u\",le=\"+Inf\"} 5\n",
           rk_kernel_id(k));
  assert_non_null(strstr(buf, want));
  snprintf(want, sizeof want, "rk_kernel_inbox_depth{kernel=\"echo\",id=\"%u\",lane=\"0\"} 0\n", rk_kernel_id(k));
  assert_non_null(strstr(buf, want));
  assert_non_null(strstr(buf, "# TYPE rk_kernel_latency_seconds histogram\n"));
  /* one HELP/TYPE per family, even with two kernels */
  {
    const char *p = buf;
    int n = 0;
    while ((p = strstr(p, "# TYPE rk_kernel_sent_total counter")) != NULL) {
      n++;
      p++;
    }
    assert_int_equal(n, 1);
  }
  /* the sum: 5 samples, each at least 1 ns and under a minute */
  assert_true(rt_stats(k).latency_sum_ns >= 5);
  /* like snprintf: a short buffer gets a NUL-terminated prefix, the full length is returned */
  assert_int_equal(rk_runtime_stats_prometheus(rt, small, sizeof small), need);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_int_equal(rk_runtime_stats_prometheus(NULL, buf, 10), RK_EINVAL);
  assert_int_equal(rk_runtime_stats_prometheus(rt, NULL, 10), RK_EINVAL);
  free(buf);
  rk_runtime_destroy(rt);
}

/* A GET over a plain TCP socket; the response (head and body) into out. Returns its length. */
static int http_get(const char *addr, const char *path, char *out, size_t len) {
  char host[64], req[256];
  const char *colon = strrchr(addr, ':');
  struct sockaddr_in sa;
  size_t n = 0;
  ssize_t r;
  int fd;
  memset(&sa, 0, sizeof sa);
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
  fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: test_api\r\n\r\n", path, addr);
  if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
    close(fd);
    return -1;
  }
  while (n + 1 < len && (r = read(fd, out + n, len - 1 - n)) > 0) n += (size_t)r;
  out[n] = '\0';
  close(fd);
  return (int)n;
}

typedef struct scraper {
  char addr[80];
  int ok, bad;
} scraper;

static void *scrape_loop(void *arg) {
  scraper *s = (scraper *)arg;
  static _Thread_local char resp[1 << 17];
  int i;
  for (i = 0; i < 30; i++) {
    if (http_get(s->addr, "/metrics", resp, sizeof resp) > 0 && strstr(resp, "HTTP/1.1 200 OK\r\n") == resp &&
        strstr(resp, "rk_kernel_sent_total{kernel=\"echo\""))
      __atomic_add_fetch(&s->ok, 1, __ATOMIC_RELAXED);
    else
      __atomic_add_fetch(&s->bad, 1, __ATOMIC_RELAXED); /* (read by the loop's thread meanwhile) */
  }
  return NULL;
}

static void test_metrics_endpoint(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel *k;
  char addr[80], resp[1 << 16];
  pthread_t th[3];
  scraper sc[3];
  rk_msg reply;
  uint32_t x = 1, y, i;
  (void)state;
  o.metrics_listen = "127.0.0.1:0";
  rt = rt_create_opts(&o);
  assert_true(rk_runtime_metrics_address(rt, addr, sizeof addr) > 0);
  assert_non_null(strstr(addr, "127.0.0.1:"));
  assert_int_not_equal(atoi(strrchr(addr, ':') + 1), 0);
  k = rt_launch_active(rt, &rk_builtin_echo, NULL);
  RT_OK(rt, rk_call(k, 3, &x, sizeof x, &reply, &y, sizeof y, RT_HANG));
  assert_true(http_get(addr, "/metrics", resp, sizeof resp) > 0);
  assert_non_null(strstr(resp, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
  assert_non_null(strstr(resp, "rk_kernel_sent_total{kernel=\"echo\""));
  assert_true(http_get(addr, "/other", resp, sizeof resp) > 0);
  assert_non_null(strstr(resp, "HTTP/1.1 404 "));
  /* concurrent scrapes while messages flow */
  for (i = 0; i < 3; i++) {
    memset(&sc[i], 0, sizeof sc[i]);
    snprintf(sc[i].addr, sizeof sc[i].addr, "%s", addr);
    assert_int_equal(pthread_create(&th[i], NULL, scrape_loop, &sc[i]), 0);
  }
  for (i = 0; i < 2000; i++) RT_OK(rt, rk_call(k, 3, &x, sizeof x, &reply, &y, sizeof y, RT_HANG));
  for (i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(sc[i].bad, 0);
    assert_int_equal(sc[i].ok, 30);
  }
  /* a half-sent request is still open when the runtime goes: destroy closes it */
  {
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(write(fd, "GET /met", 8), 8);
    rt_sleep_ms(20);
    rk_runtime_destroy(rt);
    close(fd);
  }
  /* the port is free again */
  o.metrics_listen = addr;
  rt = rt_create_opts(&o);
  rk_runtime_destroy(rt);
}

static void test_metrics_bad_addresses(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt = NULL, *rt2;
  char addr[80];
  unsigned errs = rt_log_count(&rt_the_log, RK_LOG_ERROR);
  static const char *bad[] = {"nonsense", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", "example.com:80",
                              "[::1", ":"};
  size_t i;
  (void)state;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o.metrics_listen = bad[i];
    assert_int_equal(rk_runtime_create(&rt, &o), RK_EINVAL);
    assert_null(rt);
    assert_non_null(strstr(rk_runtime_last_error(NULL), "metrics_listen"));
  }
  assert_true(rt_log_count(&rt_the_log, RK_LOG_ERROR) >= errs + i);
  /* in use: RK_ESYS, the reason named */
  o.metrics_listen = "127.0.0.1:0";
  rt2 = rt_create_opts(&o);
  assert_true(rk_runtime_metrics_address(rt2, addr, sizeof addr) > 0);
  o.metrics_listen = addr;
  assert_int_equal(rk_runtime_create(&rt, &o), RK_ESYS);
  assert_non_null(strstr(rk_runtime_last_error(NULL), "cannot listen"));
  rk_runtime_destroy(rt2);
  /* other create failures say why too */
  o.metrics_listen = NULL;
  o.backend = (rk_backend)7;
  assert_int_equal(rk_runtime_create(&rt, &o), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(NULL), "unknown backend 7"));
  o.backend = RK_BACKEND_CPU;
  /* no endpoint */
  o.metrics_listen = NULL;
  rt = rt_create_opts(&o);
  assert_int_equal(rk_runtime_metrics_address(rt, addr, sizeof addr), RK_ENOENT);
  assert_int_equal(rk_runtime_metrics_address(NULL, addr, sizeof addr), RK_EINVAL);
  assert_int_equal(rk_runtime_ref_loop(rt, 1), RK_ENOTSUP); /* its own loop */
  assert_int_equal(rk_runtime_ref_loop(NULL, 1), RK_EINVAL);
  rk_runtime_destroy(rt);
  /* the thread's create error stays until its next create */
  assert_string_equal(rk_runtime_last_error(NULL), "no runtime");
}

/* On an application loop: the runtime's handles do not keep uv_run going, the endpoint serves
 * while the application runs the loop, and destroy leaves the loop closable. */
static void test_metrics_on_application_loop(void **state) {
  uv_loop_t loop;
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  char addr[80];
  pthread_t th;
  scraper sc;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  o.loop = &loop;
  o.metrics_listen = "127.0.0.1:0";
  rt = rt_create_opts(&o);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns at once: nothing of the application's */
  assert_true(rk_runtime_metrics_address(rt, addr, sizeof addr) > 0);
  rk_kernel_destroy(rt_launch_active(rt, &rk_builtin_echo, NULL));
  rk_kernel_destroy(rt_launch_active(rt, &rk_builtin_echo, NULL));
  {
    rk_kernel *k = rt_launch_active(rt, &rk_builtin_echo, NULL);
    (void)k;
  }
  memset(&sc, 0, sizeof sc);
  snprintf(sc.addr, sizeof sc.addr, "%s", addr);
  RT_OK(rt, rk_runtime_ref_loop(rt, 1));
  assert_int_equal(pthread_create(&th, NULL, scrape_loop, &sc), 0);
  while (__atomic_load_n(&sc.ok, __ATOMIC_RELAXED) + __atomic_load_n(&sc.bad, __ATOMIC_RELAXED) < 30)
    uv_run(&loop, UV_RUN_NOWAIT);
  pthread_join(th, NULL);
  assert_int_equal(sc.ok, 30);
  RT_OK(rt, rk_runtime_ref_loop(rt, 0));
  rk_runtime_destroy(rt);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_init),  cmocka_unit_test(test_struct_sizes),
      cmocka_unit_test(test_newer_structs),
      cmocka_unit_test(test_msg_type_find), cmocka_unit_test(test_app_error_codes),
      cmocka_unit_test(test_app_error_reply),
      cmocka_unit_test(test_error_reply_payload), cmocka_unit_test(test_prometheus_text),
      cmocka_unit_test(test_typed_keyed_helpers), cmocka_unit_test(test_tokens),
      cmocka_unit_test(test_metrics_endpoint), cmocka_unit_test(test_metrics_bad_addresses),
      cmocka_unit_test(test_metrics_on_application_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
