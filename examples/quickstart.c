/* quickstart.c — the seed's quick start in C: create a runtime, launch the built-in vector_add
 * ring kernel, activate it, call it once, print the result and the HLC stamps; then add two
 * vectors of a million floats held in buffers (docs/buffers.md); terminate.
 * Runs on the CUDA backend when a GPU is usable, else on the CPU backend (it says which). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringkernel.h>

#define CHECK(call)                                                                       \
  do {                                                                                    \
    int rc_ = (call);                                                                     \
    if (rc_ < 0) {                                                                        \
      fprintf(stderr, "%s failed: %s (%s)\n", #call, rk_err_name(rc_), rk_strerror(rc_)); \
      if (rt) fprintf(stderr, "  detail: %s\n", rk_runtime_last_error(rt));               \
      return 1;                                                                           \
    }                                                                                     \
  } while (0)

static void print_stamp(const char *what, rk_hlc t, uint32_t node) {
  printf("  %-22s physical %" PRIu64 " us, logical %u, node %u\n", what, rk_hlc_physical(t), rk_hlc_logical(t), node);
}

int main(void) {
  rk_runtime *rt = NULL;
  rk_kernel *k = NULL;
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_vadd_req req;
  rk_vadd_reply out;
  rk_msg reply;
  rk_kernel_counters st;
  uint32_t i;

  if (rk_version() != RK_VERSION_HEX) {
    fprintf(stderr, "header/library version mismatch: %s\n", rk_version_string());
    return 1;
  }
  CHECK(rk_runtime_create(&rt, &o));
  printf("ringkernel %s, backend: %s (%s)\n", rk_version_string(), rk_backend_name(rk_runtime_backend(rt)),
         rk_runtime_backend_reason(rt));

  CHECK(rk_kernel_launch(rt, &rk_builtin_vector_add, NULL, &k)); /* resident, polling, inactive */
  CHECK(rk_kernel_activate(k));                                   /* starts consuming */

  memset(&req, 0, sizeof req);
  req.n = 3;
  for (i = 0; i < 3; i++) {
    req.a[i] = (float)(i + 1);
    req.b[i] = (float)(i + 4);
  }
  CHECK(rk_call_typed(k, rk_vadd_req, &req, &reply, &out, sizeof out, 1000000000 /* 1 s */));
  {
    const rk_vadd_reply *r = RK_MSG_AS(&reply, rk_vadd_reply);
    if (r == NULL) {
      fprintf(stderr, "unexpected reply type %u\n", rk_msg_type_of(&reply));
      return 1;
    }
    printf("vector_add([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) = [");
    for (i = 0; i < r->n; i++) printf("%s%.1f", i ? ", " : "", r->c[i]);
    printf("]\n");
    printf("HLC stamps (computation < reply < runtime clock after receiving it):\n");
    print_stamp("kernel computation", r->stamp, reply.env.node);
    print_stamp("reply envelope", reply.env.hlc, reply.env.node);
    print_stamp("runtime clock now", rk_clock_peek(rk_runtime_clock(rt)), rk_clock_node(rk_runtime_clock(rt)));
  }

  /* A million floats: too many for a message, so they live in buffers (device memory on a GPU,
   * written once), and the message carries references to them. */
  {
    const uint64_t n = 1u << 20;
    rk_buffer *a = NULL, *b = NULL, *c = NULL;
    rk_vadd_buf_req breq;
    rk_vadd_buf_reply bout;
    float *x = (float *)malloc(n * sizeof(float)), *y = (float *)malloc(n * sizeof(float));
    uint64_t j;
    if (x == NULL || y == NULL) return 1;
    for (j = 0; j < n; j++) {
      x[j] = (float)j;
      y[j] = 0.5f;
    }
    CHECK(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * sizeof(float), &a));
    CHECK(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * sizeof(float), &b));
    CHECK(rk_buffer_alloc(rt, RK_BUFFER_DEVICE, n * sizeof(float), &c));
    CHECK(rk_buffer_write(a, 0, x, n * sizeof(float), NULL, NULL));
    CHECK(rk_buffer_write(b, 0, y, n * sizeof(float), NULL, NULL));
    memset(&breq, 0, sizeof breq);
    CHECK(rk_buffer_ref(a, 0, n * sizeof(float), RK_BUF_READ, &breq.a));
    CHECK(rk_buffer_ref(b, 0, n * sizeof(float), RK_BUF_READ, &breq.b));
    CHECK(rk_buffer_ref(c, 0, n * sizeof(float), RK_BUF_WRITE, &breq.c));
    breq.n = n;
    CHECK(rk_call_refs(k, rk_vadd_buf_req_TYPE, &breq, sizeof breq, 3, &reply, &bout, sizeof bout, 1000000000));
    CHECK(rk_buffer_read(c, 0, y, n * sizeof(float), NULL, NULL));
    for (j = 0; j < n; j++)
      if (y[j] != (float)j + 0.5f) {
        fprintf(stderr, "buffers: c[%" PRIu64 "] = %g, want %g\n", j, (double)y[j], (double)j + 0.5);
        return 1;
      }
    printf("vector_add on buffers: %" PRIu64 " floats, c[%" PRIu64 "] = %.1f (lane %u)\n", bout.n, n - 1,
           (double)y[n - 1], bout.lane);
    CHECK(rk_buffer_free(a)); /* the reply released them */
    CHECK(rk_buffer_free(b));
    CHECK(rk_buffer_free(c));
    free(x);
    free(y);
  }

  st.size = sizeof st;
  CHECK(rk_kernel_stats(k, &st));
  printf("stats: sent %" PRIu64 ", processed %" PRIu64 ", replies %" PRIu64 ", received %" PRIu64
         ", handler errors %" PRIu64 ", round trip p50 <= %" PRIu64 " ns\n",
         st.sent, st.msgs_in, st.msgs_out, st.received, st.handler_errors, st.latency_p50_ns);

  CHECK(rk_kernel_terminate(k, 1000000000)); /* drain, then exit */
  printf("kernel %s: %s\n", rk_kernel_name(k), rk_state_name(rk_kernel_state(k)));
  rk_runtime_destroy(rt);
  return 0;
}
