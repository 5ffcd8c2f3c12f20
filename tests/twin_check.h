/* twin_check.h — the checks a "tally" kernel (twin_kernel.c) must pass however it was built:
 * keyed adds from the host over several lanes, each key owned by one lane, its tally and count
 * predicted exactly; stamps after the request; both error replies; an add sent without reply then
 * seen by the next one. Include after cmocka.h and twin_kernel.h. Returns nothing: asserts. */
#ifndef TWIN_CHECK_H
#define TWIN_CHECK_H

#include "twin_source.h" /* rk_test_twin_source: twin_kernel.h then twin_kernel.c, embedded */

/* The run-time twin of `tally`: the same descriptor, with the source text instead of the handler
 * and the device image. */
static inline rk_kernel_desc twin_source_desc(void) {
  rk_kernel_desc d = tally;
  d.handler = NULL;
  d.cuda_image = NULL;
  d.cuda_entry = NULL;
  d.name = "tally_source";
  d.source = rk_test_twin_source;
  d.source_handler = "tally_handler";
  return d;
}

/* Drive a launched, active tally kernel k with `lanes` lanes. timeout_ns per call. */
static inline void twin_check(rk_kernel *k, uint32_t lanes, int64_t timeout_ns) {
  int64_t expect[TALLY_KEYS];
  uint64_t count[TALLY_KEYS];
  uint32_t owner[TALLY_KEYS], key;
  tally_add a;
  tally_total t;
  rk_msg m;
  int round, rc;
  memset(expect, 0, sizeof expect);
  memset(count, 0, sizeof count);
  for (round = 0; round < 6; round++)
    for (key = 0; key < TALLY_KEYS; key++) {
      a.key = key;
      a.reserved = 0;
      a.amount = round % 3 == 2 ? -(int64_t)(3 * key + round) : (int64_t)(key + 1);
      memset(&t, 0xff, sizeof t);
      rc = rk_call_key(k, key, tally_add_TYPE, &a, sizeof a, &m, &t, sizeof t, timeout_ns);
      if (expect[key] + a.amount < 0) {
        assert_int_equal(rc, RK_EHANDLER);
        assert_int_equal(m.status, RK_EINVAL);
        continue;
      }
      assert_int_equal(rc, RK_OK);
      assert_non_null(RK_MSG_AS(&m, tally_total));
      expect[key] += a.amount;
      count[key]++;
      assert_int_equal(t.key, key);
      assert_int_equal(t.total, expect[key]);
      assert_int_equal(t.count, count[key]);
      assert_true(t.lane < lanes);
      if (round == 0) owner[key] = t.lane;
      assert_int_equal(t.lane, owner[key]); /* a key stays on its lane */
      assert_true(t.stamp > 0 && m.env.hlc > t.stamp);
    }
  /* unknown key: an error reply, and the kernel goes on */
  a.key = TALLY_KEYS + 3;
  a.amount = 1;
  assert_int_equal(rk_call_key(k, a.key, tally_add_TYPE, &a, sizeof a, &m, &t, sizeof t, timeout_ns), RK_EHANDLER);
  assert_int_equal(m.status, RK_ENOENT);
  /* an add without a reply, then one with: it saw the first */
  a.key = 1;
  a.amount = 1000;
  assert_int_equal(rk_send_key(k, 1, tally_add_TYPE, &a, sizeof a, RK_SEND_NO_REPLY, NULL), RK_OK);
  assert_int_equal(rk_call_key(k, 1, tally_add_TYPE, &a, sizeof a, &m, &t, sizeof t, timeout_ns), RK_OK);
  assert_int_equal(t.total, expect[1] + 2000);
  assert_int_equal(t.count, count[1] + 2);
  /* a wrong type is refused by the host, before the kernel */
  assert_int_equal(rk_call_key(k, 1, tally_total_TYPE, &t, sizeof t, &m, &t, sizeof t, timeout_ns), RK_EINVAL);
}

#endif
