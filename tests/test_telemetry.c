/* test_telemetry.c — the counters of ARCHITECTURE §10: rk_kernel_stats matches what was done,
 * and rk_runtime_stats_json is valid JSON (checked by a strict recursive-descent validator written
 * here), names every kernel, escapes what it must, and has snprintf semantics. */
#include "rt_util.h"

/* ---------------------------------------- a strict JSON validator ---------------------------- */

/* RFC 8259, strictly: no trailing commas, no leading zeros, no control characters in strings, no
 * single quotes, exactly one value surrounded by optional whitespace. Depth-limited. */
typedef struct jp {
  const char *p;
  int depth;
} jp;

static int j_value(jp *j);

static void j_ws(jp *j) {
  while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r') j->p++;
}

static int j_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static int j_string(jp *j) {
  if (*j->p != '"') return 0;
  j->p++;
  for (;;) {
    unsigned char c = (unsigned char)*j->p;
    if (c == '"') {
      j->p++;
      return 1;
    }
    if (c == 0 || c < 0x20) return 0;
    if (c == '\\') {
      j->p++;
      switch (*j->p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
          j->p++;
          break;
        case 'u':
          if (!j_hex(j->p[1]) || !j_hex(j->p[2]) || !j_hex(j->p[3]) || !j_hex(j->p[4])) return 0;
          j->p += 5;
          break;
        default:
          return 0;
      }
      continue;
    }
    j->p++;
  }
}

static int j_digits(jp *j) {
  const char *s = j->p;
  while (*j->p >= '0' && *j->p <= '9') j->p++;
  return j->p > s;
}

static int j_number(jp *j) {
  if (*j->p == '-') j->p++;
  if (*j->p == '0') {
    j->p++;
  } else if (*j->p >= '1' && *j->p <= '9') {
    j_digits(j);
  } else {
    return 0;
  }
  if (*j->p == '.') {
    j->p++;
    if (!j_digits(j)) return 0;
  }
  if (*j->p == 'e' || *j->p == 'E') {
    j->p++;
    if (*j->p == '+' || *j->p == '-') j->p++;
    if (!j_digits(j)) return 0;
  }
  return 1;
}

static int j_lit(jp *j, const char *w) {
  size_t n = strlen(w);
  if (strncmp(j->p, w, n) != 0) return 0;
  j->p += n;
  return 1;
}

static int j_object(jp *j) {
  j->p++; /* { */
  j_ws(j);
  if (*j->p == '}') {
    j->p++;
    return 1;
  }
  for (;;) {
    j_ws(j);
    if (!j_string(j)) return 0;
    j_ws(j);
    if (*j->p != ':') return 0;
    j->p++;
    if (!j_value(j)) return 0;
    j_ws(j);
    if (*j->p == ',') {
      j->p++;
      continue;
    }
    if (*j->p == '}') {
      j->p++;
      return 1;
    }
    return 0;
  }
}

static int j_array(jp *j) {
  j->p++; /* [ */
  j_ws(j);
  if (*j->p == ']') {
    j->p++;
    return 1;
  }
  for (;;) {
    if (!j_value(j)) return 0;
    j_ws(j);
    if (*j->p == ',') {
      j->p++;
      continue;
    }
    if (*j->p == ']') {
      j->p++;
      return 1;
    }
    return 0;
  }
}

static int j_value(jp *j) {
  int ok;
  j_ws(j);
  if (++j->depth > 64) return 0;
  switch (*j->p) {
    case '{': ok = j_object(j); break;
    case '[': ok = j_array(j); break;
    case '"': ok = j_string(j); break;
    case 't': ok = j_lit(j, "true"); break;
    case 'f': ok = j_lit(j, "false"); break;
    case 'n': ok = j_lit(j, "null"); break;
    default: ok = j_number(j); break;
  }
  j->depth--;
  return ok;
}

static int json_valid(const char *s) {
  jp j;
  j.p = s;
  j.depth = 0;
  if (!j_value(&j)) return 0;
  j_ws(&j);
  return *j.p == '\0';
}

static void test_json_validator(void **state) {
  static const char *good[] = {"{}", "[]", "0", "-1.5e+3", "\"a\\u00e9\\n\"", " {\"a\":[1,2,{\"b\":null}],\"c\":true} ",
                               "[false,\"\",-0,0.25]"};
  static const char *bad[] = {"", "{", "{\"a\":1,}", "[1,]", "01", "1.", "+1", "{'a':1}", "\"\x01\"", "\"\\x\"",
                              "{\"a\" 1}", "[1 2]", "{} {}", "tru", "\"abc", "{\"a\":}", "[\"\\u12g4\"]", ".5"};
  size_t i;
  (void)state;
  for (i = 0; i < sizeof good / sizeof good[0]; i++)
    if (!json_valid(good[i])) fail_msg("validator refused valid %s", good[i]);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (json_valid(bad[i])) fail_msg("validator accepted invalid %s", bad[i]);
}

/* ---------------------------------------- stats ---------------------------------------------- */

/* rt_wait_for predicate: kernel arg's two outboxes hold 6 replies between them (at least) */
static int outbox_holds_6(void *arg) {
  rk_kernel_counters st = rt_stats((rk_kernel *)arg);
  return st.outbox_depth[0] + st.outbox_depth[1] >= 6;
}

static void test_stats_counters(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rk_builtin_echo;
  rk_kernel *k;
  rk_kernel_counters st;
  rk_msg m;
  uint8_t buf[64];
  uint32_t i, x = 5, lane_in = 0;
  uint64_t hist_sum = 0;
  rk_send_item items[4];
  (void)state;
  d.lanes = 2;
  k = rt_launch(rt, &d, NULL);
  st = rt_stats(k);
  assert_int_equal(st.size, sizeof st);
  assert_int_equal(st.state, RK_STATE_LAUNCHED);
  assert_int_equal(st.lanes, 2);
  assert_int_equal(st.sent + st.msgs_in + st.msgs_out + st.received + st.latency_count, 0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);

  for (i = 0; i < 10; i++) RT_OK(rt, rk_send(k, 1, &x, sizeof x, 0, NULL));
  for (i = 0; i < 10; i++) RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  for (i = 0; i < 5; i++) RT_OK(rt, rk_call(k, 2, &x, sizeof x, &m, buf, sizeof buf, RT_HANG));
  for (i = 0; i < 3; i++) RT_OK(rt, rk_send(k, 3, &x, sizeof x, RK_SEND_NO_REPLY, NULL));
  assert_int_equal(rk_send(k, 0, &x, sizeof x, 0, NULL), RK_EINVAL);
  assert_int_equal(rk_send(k, 1, buf, 1000, 0, NULL), RK_EMSGSIZE);
  memset(items, 0, sizeof items);
  for (i = 0; i < 4; i++) {
    items[i].type = 4;
    items[i].len = sizeof x;
    items[i].payload = &x;
  }
  assert_int_equal(rk_send_batch(k, items, 4), 4);
  for (i = 0; i < 4; i++) RT_OK(rt, rk_recv(k, &m, buf, sizeof buf, RT_HANG));
  RT_WAIT_STAT(k, msgs_in, 22);

  st = rt_stats(k);
  assert_int_equal(st.state, RK_STATE_ACTIVE);
  assert_int_equal(st.sent, 22);
  assert_int_equal(st.msgs_in, 22);
  assert_int_equal(st.msgs_out, 19);
  assert_int_equal(st.received, 19);
  assert_int_equal(st.send_invalid, 2);
  assert_int_equal(st.send_rejected, 0);
  assert_int_equal(st.send_timeouts, 0);
  assert_int_equal(st.late_replies, 0);
  assert_int_equal(st.invalid, 0);
  assert_int_equal(st.clock_rejected, 0);
  assert_int_equal(st.handler_errors, 0);
  assert_int_equal(st.outbox_stalls, 0);
  assert_int_equal(st.k2k_in + st.k2k_out, 0);
  assert_int_equal(st.heartbeat_age_ns, 0); /* idle */
  for (i = 0; i < 2; i++) {
    assert_int_equal(st.inbox_depth[i], 0);
    assert_int_equal(st.outbox_depth[i], 0);
  }
  for (i = 2; i < RK_MAX_LANES; i++) lane_in += (uint32_t)(st.inbox_depth[i] + st.outbox_depth[i]);
  assert_int_equal(lane_in, 0);
  /* latency: one sample per rk_call (end to end) */
  assert_int_equal(st.latency_count, 5);
  for (i = 0; i < RK_LATENCY_BUCKETS; i++) hist_sum += st.latency_hist[i];
  assert_int_equal(hist_sum, 5);
  assert_true(st.latency_p50_ns > 0);
  assert_true(st.latency_p50_ns <= st.latency_p99_ns);

  /* depths while messages wait */
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  for (i = 0; i < 6; i++) RT_OK(rt, rk_send(k, 1, &x, sizeof x, 0, NULL));
  st = rt_stats(k);
  assert_int_equal(st.inbox_depth[0] + st.inbox_depth[1], 6);
  assert_int_equal(st.state, RK_STATE_INACTIVE);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_WAIT_STAT(k, msgs_out, 25);
  /* a lane counts its replies just before it publishes them (flush_replies: a caller holding its
   * reply sees the count that includes it), so msgs_out can be seen a few instructions before the
   * last replies are in the outbox (CI, TSan: outbox 3 of 6 read there): wait for the depth too */
  assert_true(rt_wait_for(outbox_holds_6, k, RT_HANG));
  st = rt_stats(k);
  assert_int_equal(st.msgs_out, 25);
  assert_int_equal(st.inbox_depth[0] + st.inbox_depth[1], 0);
  assert_int_equal(st.outbox_depth[0] + st.outbox_depth[1], 6);

  /* stats->size must be set; a program built with an older header (a smaller struct, ending at
   * clock_sync_misses) gets the fields it knows and nothing is written past them */
  st.size = 0;
  /* an earlier failure's detail is not what the refusal reports (it was: a stale message) */
  assert_int_equal(rk_send(k, 0, NULL, 0, 0, NULL), RK_EINVAL); /* type 0 is reserved */
  assert_int_equal(rk_kernel_stats(k, &st), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk_kernel_stats"));
  assert_non_null(strstr(rk_runtime_last_error(rt), "size"));
  assert_int_equal(rk_runtime_stats_json(rt, NULL, 10), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rt), "rk_runtime_stats_json"));
  st.size = (uint32_t)offsetof(rk_kernel_counters, clock_sync_misses);
  assert_int_equal(rk_kernel_stats(k, &st), RK_EINVAL);
  memset(&st, 0xab, sizeof st);
  st.size = (uint32_t)offsetof(rk_kernel_counters, faults);
  assert_int_equal(rk_kernel_stats(k, &st), RK_OK);
  assert_int_equal(st.size, offsetof(rk_kernel_counters, faults));
  assert_int_equal(st.msgs_out, 25);
  assert_int_equal(st.faults, 0xababababababababull); /* untouched */
  st.size = sizeof st;
  assert_int_equal(rk_kernel_stats(k, &st), RK_OK);
  assert_int_equal(st.size, sizeof st);
  assert_int_equal(st.faults, 0);
  assert_int_equal(rk_kernel_stats(NULL, &st), RK_EINVAL);
  assert_int_equal(rk_kernel_stats(k, NULL), RK_EINVAL);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* ---------------------------------------- JSON ----------------------------------------------- */

static char *stats_json(rk_runtime *rt) {
  int n = rk_runtime_stats_json(rt, NULL, 0);
  char *buf;
  assert_true(n > 0);
  buf = (char *)malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(rk_runtime_stats_json(rt, buf, (size_t)n + 1), n);
  assert_int_equal(strlen(buf), (size_t)n);
  if (!json_valid(buf)) fail_msg("invalid JSON: %s", buf);
  return buf;
}

static void test_json(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel *e, *v, *w;
  rk_kernel_desc weird = rk_builtin_echo;
  char *js, small[16];
  int n, i;
  uint32_t x = 1;
  rk_msg m;
  (void)state;
  /* The clocks are measured at launch only: the periodic re-measurement (every 1 s by default)
   * changes each kernel's "clock" figures, and the checks below compare texts taken at different
   * times (on a loaded machine, seconds apart), which must not move while every kernel is idle. */
  o.clock_sync_interval_ns = UINT64_MAX;
  rt = rt_create_opts(&o);

  js = stats_json(rt); /* no kernels */
  assert_non_null(strstr(js, "\"backend\":\"cpu\""));
  assert_non_null(strstr(js, "\"kernels\":[]"));
  free(js);

  e = rt_launch_active(rt, &rk_builtin_echo, NULL);
  v = rt_launch_active(rt, &rk_builtin_vector_add, NULL);
  weird.name = "we\"ird\\name\n\x01"; /* everything a JSON string must escape */
  weird.lanes = 3;
  w = rt_launch(rt, &weird, NULL);
  for (i = 0; i < 7; i++) RT_OK(rt, rk_call(e, 1, &x, sizeof x, &m, &x, sizeof x, RT_HANG));

  js = stats_json(rt);
  assert_non_null(strstr(js, "\"name\":\"echo\""));
  assert_non_null(strstr(js, "\"name\":\"vector_add\""));
  assert_non_null(strstr(js, "we\\\"ird\\\\name\\u000a\\u0001"));
  assert_non_null(strstr(js, "\"name\":\"rk_vadd_req\"")); /* the typed kernel names its types */
  assert_non_null(strstr(js, "\"state\":\"LAUNCHED\""));
  assert_non_null(strstr(js, "\"state\":\"ACTIVE\""));
  assert_non_null(strstr(js, "\"sent\":7,"));
  assert_non_null(strstr(js, "\"received\":7,"));
  assert_non_null(strstr(js, "\"inbox_depth\":[0,0,0]")); /* the 3-lane kernel */
  free(js);

  /* snprintf semantics: the needed length whatever the buffer; always NUL-terminated; the prefix
   * of the full text (nothing moves while every kernel is idle). */
  js = stats_json(rt);
  n = (int)strlen(js);
  memset(small, 'x', sizeof small);
  assert_int_equal(rk_runtime_stats_json(rt, small, sizeof small), n);
  assert_int_equal(small[sizeof small - 1], '\0');
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, js, sizeof small - 1);
  memset(small, 'x', sizeof small);
  assert_int_equal(rk_runtime_stats_json(rt, small, 1), n);
  assert_int_equal(small[0], '\0');
  assert_int_equal(small[1], 'x'); /* nothing past len */
  assert_int_equal(rk_runtime_stats_json(rt, NULL, 0), n);
  {
    char *exact = (char *)malloc((size_t)n); /* one short: the last character is cut for the NUL */
    assert_non_null(exact);
    assert_int_equal(rk_runtime_stats_json(rt, exact, (size_t)n), n);
    assert_int_equal(strlen(exact), (size_t)n - 1);
    assert_memory_equal(exact, js, (size_t)n - 1);
    free(exact);
  }
  assert_int_equal(rk_runtime_stats_json(NULL, small, sizeof small), RK_EINVAL);
  assert_int_equal(rk_runtime_stats_json(rt, NULL, 10), RK_EINVAL);
  free(js);

  /* Kernels leave the JSON when destroyed. */
  rk_kernel_destroy(w);
  rk_kernel_destroy(v);
  js = stats_json(rt);
  assert_null(strstr(js, "vector_add"));
  assert_null(strstr(js, "ird"));
  assert_non_null(strstr(js, "\"name\":\"echo\""));
  free(js);
  rk_kernel_destroy(e);
  rk_runtime_destroy(rt);
}

/* Stats and JSON read concurrently with traffic (TSan checks the reads). */
typedef struct reader {
  rk_runtime *rt;
  rk_kernel *k;
  int stop; /* atomics */
  int bad;
  unsigned rounds;
} reader;

static void *read_loop(void *arg) {
  reader *r = (reader *)arg;
  char buf[32768];
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    rk_kernel_counters st;
    int n;
    st.size = sizeof st;
    /* received is read before msgs_out, and a reply is counted out before it can be received */
    if (rk_kernel_stats(r->k, &st) != RK_OK || st.received > st.msgs_out) r->bad++;
    n = rk_runtime_stats_json(r->rt, buf, sizeof buf);
    if (n <= 0 || n >= (int)sizeof buf || !json_valid(buf)) r->bad++;
    r->rounds++;
  }
  return NULL;
}

static void test_stats_under_traffic(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rk_builtin_echo;
  rk_kernel *k;
  reader r;
  pthread_t t;
  uint32_t i, n = RT_SANITIZED ? 500 : 3000;
  rk_msg m;
  uint32_t x;
  (void)state;
  d.lanes = 2;
  k = rt_launch_active(rt, &d, NULL);
  memset(&r, 0, sizeof r);
  r.rt = rt;
  r.k = k;
  assert_int_equal(pthread_create(&t, NULL, read_loop, &r), 0);
  for (i = 0; i < n; i++) RT_OK(rt, rk_call(k, 1, &i, sizeof i, &m, &x, sizeof x, RT_HANG));
  __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
  pthread_join(t, NULL);
  assert_int_equal(r.bad, 0);
  assert_true(r.rounds > 0);
  assert_int_equal(rt_stats(k).received, n);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

/* The latency histogram's samples, with whatever clock the library uses here (rt_latency_calls;
 * test_tsc checks the TSC's samples themselves). Checked with the RDTSCP clock of issue 16's fourth
 * step, since dropped: docs/design-notes.md. */
static void test_latency_clock(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("sleepy", rt_sleepy_echo);
  rk_kernel *k = rt_launch_active(rt, &d, NULL);
  (void)state;
  rt_latency_calls(rt, k, 80);
  rk_kernel_destroy(k);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_validator),
      cmocka_unit_test(test_stats_counters),
      cmocka_unit_test(test_json),
      cmocka_unit_test(test_stats_under_traffic),
      cmocka_unit_test(test_latency_clock),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
