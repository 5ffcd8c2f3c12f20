/* inject_util.h — white-box helpers for tests that push envelopes straight into a lane's inbox,
 * bypassing rk_send's checks (test_handlers on the CPU backend, test_devemu on the emulated
 * device). Include after rt_util.h and host/internal.h. */
#ifndef RK_INJECT_UTIL_H
#define RK_INJECT_UTIL_H

/* A message of the default slot size (256 bytes less the ring's 16): envelope + payload. */
typedef struct slot {
  rk_envelope e;
  uint8_t payload[176];
} slot;

/* A well-formed request envelope for kernel k, as rk_send would build it (minus the seal). */
static inline void good_envelope(rk_kernel *k, slot *s, uint64_t id, uint32_t len) {
  uint32_t i;
  memset(s, 0, sizeof *s);
  rk_envelope_init(&s->e, 5, len, 0);
  s->e.msg_id = id;
  s->e.dst = rk_kernel_id(k);
  s->e.hlc = rk_clock_peek(rk_runtime_clock(k->rt));
  for (i = 0; i < len; i++) s->payload[i] = (uint8_t)(i + id);
}

/* Push a slot into lane 0's inbox and wake the lane (a no-op for a device lane, which polls). */
static inline void inject(rk_kernel *k, const slot *s) {
  rk__lane *l = &k->lane[0];
  assert_int_equal(rk_ring_mpsc_push(l->inbox, s, (uint32_t)sizeof *s), RK_OK);
  rk_ring_notify_consumer(l->inbox);
}

/* The next reply is the error reply `code` to the request with id `id`. */
static inline void expect_error_reply(rk_kernel *k, uint64_t id, int code) {
  rk_msg m;
  uint8_t buf[256];
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
  assert_true(rk_msg_is_error(&m));
  assert_int_equal(m.status, code);
  assert_int_equal(m.env.correlation_id, id);
}

/* The payload limit of k (echo, default 256-byte slot, lane 0 idle) at the lane: a request of
 * exactly rk__payload_max bytes (the slot less the ring's 16 and the envelope) is echoed whole;
 * one byte more, or the limit of the layout before the word moved into the slot (slot - 64), is
 * refused with RK_ECORRUPT (validation, whatever rk_send would have said). */
static inline void check_payload_limit(rk_kernel *k) {
  uint32_t max = rk__payload_max(k);
  uint8_t buf[256];
  slot s;
  rk_msg m;
  assert_int_equal(max, sizeof s.payload);
  good_envelope(k, &s, 0x300, max);
  inject(k, &s);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
  assert_false(rk_msg_is_error(&m));
  assert_int_equal(m.env.correlation_id, 0x300);
  assert_int_equal(m.len, max);
  assert_memory_equal(buf, s.payload, max);
  good_envelope(k, &s, 0x301, 8);
  s.e.payload_len = max + 1;
  inject(k, &s);
  expect_error_reply(k, 0x301, RK_ECORRUPT);
  good_envelope(k, &s, 0x302, 8);
  s.e.payload_len = k->slot_size - RK_ENVELOPE_SIZE;
  inject(k, &s);
  expect_error_reply(k, 0x302, RK_ECORRUPT);
}
#define CHECK_PAYLOAD_LIMIT_REPLIES 3 /* the replies check_payload_limit receives */

/* Lane 0's outbox after its first n replies were received and nothing more was asked of it: each
 * slot's sequence word holds the last position published in it + 1 (or rk_ring_init's value: no
 * lap reached it), and its reserved word is still zero. Replies are written from the message's
 * start (CPU lane) or as whole lines whose first 16 bytes repeat the word's current value (device
 * lane): neither may change them. (n, not the ring's tail: the lane stores its tail after the
 * words, so a received reply's word is final before the tail says so.) */
static inline void check_outbox_words(rk_kernel *k, uint64_t n) {
  rk_ring *r = k->lane[0].outbox;
  uint64_t cap = r->capacity, t = n, i;
  for (i = 0; i < cap; i++) {
    const volatile uint64_t *w = rk_ring__seq(r, i);
    uint64_t want = t > i ? i + (t - 1 - i) / cap * cap + 1 : i + 1 - cap;
    if (w[0] != want || w[1] != 0)
      fail_msg("outbox slot %llu: word %llu, reserved %llu (want %llu, 0; tail %llu)", (unsigned long long)i,
               (unsigned long long)w[0], (unsigned long long)w[1], (unsigned long long)want, (unsigned long long)t);
  }
}

/* test_slot_layout's body (CPU lane and emulated device): the payload limit, then rk_call with
 * every payload length up to it, each echoed intact, the outbox's words and reserved words checked
 * after each reply (k: echo, its lane 0 idle, a small outbox so the replies lap it). */
static inline void check_slot_layout(rk_runtime *rt, rk_kernel *k) {
  uint8_t req[256], rep[256];
  uint32_t len, j;
  rk_msg m;
  check_payload_limit(k);
  for (len = 0; len <= rk__payload_max(k); len++) {
    for (j = 0; j < len; j++) req[j] = (uint8_t)(len * 7 + j);
    RT_OK(rt, rk_call(k, 9, req, len, &m, rep, sizeof rep, RT_HANG));
    assert_int_equal(m.len, len);
    if (len) assert_memory_equal(rep, req, len);
    check_outbox_words(k, CHECK_PAYLOAD_LIMIT_REPLIES + len + 1);
  }
}

#endif
