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

#endif
