/* test_hlc.c — the Hybrid Logical Clock: the packed rules of hlc.h against Kulkarni et al.'s rules
 * written out in (l, c) form, logical overflow, accessors and the total order, and the host clock
 * object rk_clock: drift rejection, receive, and uniqueness/monotonicity under many threads,
 * including the library's internal batch stamping (rk__clock_tick_n; linked against librk.a). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#include <ringkernel.h>

#include "hlc/internal.h"

/* ------------------------------ the paper's rules, in (l, c) form ---------------------------- */

typedef struct {
  uint64_t l;
  uint64_t c;
} pair_lc;

static uint64_t max2(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* Send or local event (Kulkarni et al., Fig. 5): l' = max(l, pt); c = l' == l ? c + 1 : 0.
 * *branch receives which case applied (0: l kept, 1: physical time won). */
static pair_lc paper_send(pair_lc t, uint64_t pt, int *branch) {
  pair_lc r;
  r.l = max2(t.l, pt);
  if (r.l == t.l) {
    r.c = t.c + 1;
    *branch = 0;
  } else {
    r.c = 0;
    *branch = 1;
  }
  return r;
}

/* Receive of m: l' = max(l, lm, pt); if l' = l = lm: c = max(c, cm) + 1; elif l' = l: c + 1;
 * elif l' = lm: cm + 1; else 0. */
static pair_lc paper_recv(pair_lc t, pair_lc m, uint64_t pt, int *branch) {
  pair_lc r;
  r.l = max2(max2(t.l, m.l), pt);
  if (r.l == t.l && r.l == m.l) {
    r.c = max2(t.c, m.c) + 1;
    *branch = 0;
  } else if (r.l == t.l) {
    r.c = t.c + 1;
    *branch = 1;
  } else if (r.l == m.l) {
    r.c = m.c + 1;
    *branch = 2;
  } else {
    r.c = 0;
    *branch = 3;
  }
  return r;
}

static rk_hlc pack(pair_lc p) {
  assert_true(p.c <= RK_HLC_LOGICAL_MASK); /* the grid never overflows the logical part */
  return rk_hlc_make(p.l, (uint32_t)p.c);
}

/* Physical values: small, realistic (2024 in µs) and at the top of the 52-bit range. */
static const uint64_t phys_bases[] = {0, 1700000000000000ull, RK_HLC_PHYSICAL_MAX - 5};
static const uint64_t phys_offsets[] = {0, 1, 2, 3, 5};
/* Logical values: max(c, cm) + 1 stays <= 4095, so the paper's rules need no overflow handling. */
static const uint64_t logicals[] = {0, 1, 2, 7, 4094};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void test_send_matches_paper(void **state) {
  size_t b, il, ic, ip;
  unsigned long cases = 0, branches[2] = {0, 0};
  (void)state;
  for (b = 0; b < NELEM(phys_bases); b++)
    for (il = 0; il < NELEM(phys_offsets); il++)
      for (ic = 0; ic < NELEM(logicals); ic++)
        for (ip = 0; ip < NELEM(phys_offsets); ip++) {
          pair_lc t = {phys_bases[b] + phys_offsets[il], logicals[ic]};
          uint64_t pt = phys_bases[b] + phys_offsets[ip];
          int branch;
          pair_lc want = paper_send(t, pt, &branch);
          rk_hlc got = rk_hlc_send(pack(t), pt);
          if (got != pack(want))
            fail_msg("send l=%llu c=%llu pt=%llu: got (%llu,%u) want (%llu,%llu)",
                     (unsigned long long)t.l, (unsigned long long)t.c, (unsigned long long)pt,
                     (unsigned long long)rk_hlc_physical(got), rk_hlc_logical(got),
                     (unsigned long long)want.l, (unsigned long long)want.c);
          assert_true(got > pack(t)); /* strictly after the local stamp */
          branches[branch]++;
          cases++;
        }
  assert_int_equal(cases, NELEM(phys_bases) * NELEM(phys_offsets) * NELEM(logicals) *
                              NELEM(phys_offsets));
  assert_true(branches[0] > 0 && branches[1] > 0); /* both cases of the rule were exercised */
}

static void test_recv_matches_paper(void **state) {
  size_t b, il, ic, iml, imc, ip;
  unsigned long cases = 0, branches[4] = {0, 0, 0, 0};
  (void)state;
  for (b = 0; b < NELEM(phys_bases); b++)
    for (il = 0; il < NELEM(phys_offsets); il++)
      for (ic = 0; ic < NELEM(logicals); ic++)
        for (iml = 0; iml < NELEM(phys_offsets); iml++)
          for (imc = 0; imc < NELEM(logicals); imc++)
            for (ip = 0; ip < NELEM(phys_offsets); ip++) {
              pair_lc t = {phys_bases[b] + phys_offsets[il], logicals[ic]};
              pair_lc m = {phys_bases[b] + phys_offsets[iml], logicals[imc]};
              uint64_t pt = phys_bases[b] + phys_offsets[ip];
              int branch;
              pair_lc want = paper_recv(t, m, pt, &branch);
              rk_hlc got = rk_hlc_recv(pack(t), pack(m), pt);
              if (got != pack(want))
                fail_msg("recv l=%llu c=%llu lm=%llu cm=%llu pt=%llu: got (%llu,%u) want (%llu,%llu)",
                         (unsigned long long)t.l, (unsigned long long)t.c,
                         (unsigned long long)m.l, (unsigned long long)m.c,
                         (unsigned long long)pt, (unsigned long long)rk_hlc_physical(got),
                         rk_hlc_logical(got), (unsigned long long)want.l,
                         (unsigned long long)want.c);
              assert_true(got > pack(t) && got > pack(m)); /* after both events */
              branches[branch]++;
              cases++;
            }
  assert_int_equal(cases, NELEM(phys_bases) * NELEM(phys_offsets) * NELEM(logicals) *
                              NELEM(phys_offsets) * NELEM(logicals) * NELEM(phys_offsets));
  assert_true(branches[0] > 0 && branches[1] > 0 && branches[2] > 0 && branches[3] > 0);
}

/* Packed order equals the lexicographic order of (l, c): comparing stamps is comparing integers. */
static void test_packed_order_is_lexicographic(void **state) {
  size_t a1, a2, b1, b2;
  (void)state;
  for (a1 = 0; a1 < NELEM(phys_offsets); a1++)
    for (a2 = 0; a2 < NELEM(logicals); a2++)
      for (b1 = 0; b1 < NELEM(phys_offsets); b1++)
        for (b2 = 0; b2 < NELEM(logicals); b2++) {
          pair_lc x = {1000 + phys_offsets[a1], logicals[a2]};
          pair_lc y = {1000 + phys_offsets[b1], logicals[b2]};
          int lex = x.l != y.l ? (x.l < y.l ? -1 : 1) : x.c != y.c ? (x.c < y.c ? -1 : 1) : 0;
          assert_int_equal(rk_hlc_compare(pack(x), 9, pack(y), 9), lex);
        }
}

/* ------------------------------ logical overflow --------------------------------------------- */

static void test_logical_overflow_carries(void **state) {
  const uint64_t l = 1700000000000000ull;
  rk_hlc t = rk_hlc_make(l, 4095), r;
  uint32_t i;
  (void)state;
  /* send with physical time at or behind l: the counter carries into the physical part */
  assert_int_equal(rk_hlc_send(t, l), rk_hlc_make(l + 1, 0));
  assert_int_equal(rk_hlc_send(t, l - 100), rk_hlc_make(l + 1, 0));
  assert_int_equal(rk_hlc_send(t, 0), rk_hlc_make(l + 1, 0));
  /* physical time catching up at exactly l+1 gives the same stamp; beyond, physical time wins */
  assert_int_equal(rk_hlc_send(t, l + 1), rk_hlc_make(l + 1, 0));
  assert_int_equal(rk_hlc_send(t, l + 2), rk_hlc_make(l + 2, 0));
  /* receive: local or remote counter at 4095 */
  assert_int_equal(rk_hlc_recv(t, rk_hlc_make(l, 10), l), rk_hlc_make(l + 1, 0));
  assert_int_equal(rk_hlc_recv(rk_hlc_make(l, 3), t, l), rk_hlc_make(l + 1, 0));
  assert_int_equal(rk_hlc_recv(rk_hlc_make(l - 1, 3), t, l - 7), rk_hlc_make(l + 1, 0));
  assert_int_equal(rk_hlc_recv(t, t, l), rk_hlc_make(l + 1, 0));
  /* a frozen physical clock: 4096 sends carry exactly once, and every stamp is larger */
  r = rk_hlc_make(l, 0);
  for (i = 0; i < 4096; i++) {
    rk_hlc n = rk_hlc_send(r, l);
    assert_true(n > r);
    r = n;
  }
  assert_int_equal(r, rk_hlc_make(l + 1, 0));
  for (i = 0; i < 5000; i++) r = rk_hlc_send(r, l);
  assert_int_equal(rk_hlc_physical(r), l + 2);
  assert_int_equal(rk_hlc_logical(r), 5000 - 4096);
}

/* ------------------------------ accessors, order, drift predicate ---------------------------- */

static void test_accessors(void **state) {
  rk_hlc t = rk_hlc_make(123456789ull, 42);
  (void)state;
  assert_int_equal(rk_hlc_physical(t), 123456789ull);
  assert_int_equal(rk_hlc_logical(t), 42);
  assert_int_equal(t, (123456789ull << 12) | 42);
  /* truncation: logical to 12 bits, physical to 52 bits */
  assert_int_equal(rk_hlc_make(5, 4096), rk_hlc_make(5, 0));
  assert_int_equal(rk_hlc_make(5, 4097 + 4096), rk_hlc_make(5, 1));
  assert_int_equal(rk_hlc_physical(rk_hlc_make((1ull << 52) | 7, 1)), 7);
  assert_int_equal(rk_hlc_physical(rk_hlc_make(RK_HLC_PHYSICAL_MAX, 4095)), RK_HLC_PHYSICAL_MAX);
  assert_int_equal(rk_hlc_logical(rk_hlc_make(RK_HLC_PHYSICAL_MAX, 4095)), 4095);
  assert_int_equal(rk_hlc_make(RK_HLC_PHYSICAL_MAX, 4095), UINT64_MAX);
  assert_int_equal(RK_HLC_LOGICAL_BITS + RK_HLC_PHYSICAL_BITS, 64);
  /* send/recv with physical time far ahead jump to (pt, 0) */
  assert_int_equal(rk_hlc_send(t, 999999999ull), rk_hlc_make(999999999ull, 0));
  assert_int_equal(rk_hlc_recv(t, rk_hlc_make(5, 5), 999999999ull), rk_hlc_make(999999999ull, 0));
}

static void test_compare_total_order(void **state) {
  rk_hlc a = rk_hlc_make(100, 1), b = rk_hlc_make(100, 2), c = rk_hlc_make(101, 0);
  (void)state;
  /* stamp first, whatever the node ids */
  assert_int_equal(rk_hlc_compare(a, 9, b, 1), -1);
  assert_int_equal(rk_hlc_compare(b, 1, a, 9), 1);
  assert_int_equal(rk_hlc_compare(b, 7, c, 7), -1);
  assert_int_equal(rk_hlc_compare(c, 0, b, 0xffffffffu), 1);
  /* equal stamps: the node id breaks the tie */
  assert_int_equal(rk_hlc_compare(a, 1, a, 2), -1);
  assert_int_equal(rk_hlc_compare(a, 2, a, 1), 1);
  assert_int_equal(rk_hlc_compare(a, 0, a, 0xffffffffu), -1);
  assert_int_equal(rk_hlc_compare(a, 3, a, 3), 0);
  assert_int_equal(rk_hlc_compare(0, 0, UINT64_MAX, 0), -1);
}

static void test_too_far_ahead(void **state) {
  const uint64_t pt = 1700000000000000ull;
  (void)state;
  assert_false(rk_hlc_too_far_ahead(rk_hlc_make(pt, 4095), pt, 500));
  assert_false(rk_hlc_too_far_ahead(rk_hlc_make(pt + 500, 4095), pt, 500)); /* exactly the bound */
  assert_true(rk_hlc_too_far_ahead(rk_hlc_make(pt + 501, 0), pt, 500));
  assert_false(rk_hlc_too_far_ahead(rk_hlc_make(pt - 1000000, 0), pt, 500)); /* behind: fine */
  assert_false(rk_hlc_too_far_ahead(rk_hlc_make(0, 0), pt, 0));
  assert_true(rk_hlc_too_far_ahead(rk_hlc_make(pt + 1, 0), pt, 0));
}

/* ------------------------------ rk_clock ----------------------------------------------------- */

static uint64_t fake_time(void *user) { return *(const uint64_t *)user; }

static void test_clock_basics(void **state) {
  rk_clock *c = NULL;
  rk_hlc s1, s2;
  uint64_t now;
  (void)state;
  assert_int_equal(rk_clock_create(NULL, 1, 0), RK_EINVAL);
  rk_clock_destroy(NULL);
  assert_int_equal(rk_clock_create(&c, 77, 0), RK_OK);
  assert_non_null(c);
  assert_int_equal(rk_clock_node(c), 77);
  assert_int_equal(rk_clock_node(NULL), 0);
  assert_int_equal(rk_clock_peek(c), 0);
  assert_int_equal(rk_clock_peek(NULL), 0);
  assert_int_equal(rk_clock_tick(NULL, &s1), RK_EINVAL);
  assert_int_equal(rk_clock_tick(c, NULL), RK_EINVAL);
  assert_int_equal(rk_clock_recv(NULL, 1, &s1), RK_EINVAL);
  assert_int_equal(rk_clock_set_time_source(NULL, fake_time, NULL), RK_EINVAL);

  /* default time source: CLOCK_REALTIME in µs (after 2020-01-01, near rk_realtime_us) */
  now = rk_realtime_us();
  assert_true(now > 1577836800000000ull);
  assert_int_equal(rk_clock_tick(c, &s1), RK_OK);
  assert_true(rk_hlc_physical(s1) >= now);
  assert_true(rk_hlc_physical(s1) < now + 10000000ull);
  assert_int_equal(rk_clock_peek(c), s1);
  assert_int_equal(rk_clock_tick(c, &s2), RK_OK);
  assert_true(s2 > s1);
  assert_int_equal(rk_clock_peek(c), s2);
  assert_true(rk_clock_physical_us(c) >= now);
  assert_true(rk_clock_physical_us(NULL) >= now);
  rk_clock_destroy(c);
}

static void test_clock_fake_time_and_regression(void **state) {
  rk_clock *c;
  uint64_t pt = 1000000;
  rk_hlc s;
  (void)state;
  assert_int_equal(rk_clock_create(&c, 1, 0), RK_OK);
  assert_int_equal(rk_clock_set_time_source(c, fake_time, &pt), RK_OK);
  assert_int_equal(rk_clock_physical_us(c), 1000000);
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  assert_int_equal(s, rk_hlc_make(1000000, 0));
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  assert_int_equal(s, rk_hlc_make(1000000, 1));
  /* physical time going backwards never makes the clock go backwards */
  pt = 500;
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  assert_int_equal(s, rk_hlc_make(1000000, 2));
  /* and moving forward resets the counter */
  pt = 2000000;
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  assert_int_equal(s, rk_hlc_make(2000000, 0));
  /* NULL restores the real clock */
  assert_int_equal(rk_clock_set_time_source(c, NULL, &pt), RK_OK);
  assert_true(rk_clock_physical_us(c) > 1577836800000000ull);
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  assert_true(rk_hlc_physical(s) > 1577836800000000ull);
  rk_clock_destroy(c);
}

static void test_clock_drift_rejection(void **state) {
  rk_clock *c;
  uint64_t pt = 1700000000000000ull;
  rk_hlc s, before, out = 12345;
  (void)state;
  assert_int_equal(rk_clock_create(&c, 3, 0), RK_OK); /* default bound: 500 ms */
  assert_int_equal(rk_clock_set_time_source(c, fake_time, &pt), RK_OK);
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  before = rk_clock_peek(c);
  assert_int_equal(before, s);

  /* one microsecond beyond the bound: refused, the clock does not move, *out untouched */
  assert_int_equal(rk_clock_recv(c, rk_hlc_make(pt + RK_HLC_DEFAULT_MAX_OFFSET_US + 1, 0), &out),
                   RK_ECLOCK);
  assert_int_equal(rk_clock_peek(c), before);
  assert_int_equal(out, 12345);
  assert_int_equal(rk_clock_recv(c, UINT64_MAX, NULL), RK_ECLOCK);
  assert_int_equal(rk_clock_peek(c), before);

  /* exactly at the bound: merged, and the result is after the received stamp */
  {
    rk_hlc m = rk_hlc_make(pt + RK_HLC_DEFAULT_MAX_OFFSET_US, 9);
    assert_int_equal(rk_clock_recv(c, m, &out), RK_OK);
    assert_true(out > m);
    assert_int_equal(out, rk_hlc_make(pt + RK_HLC_DEFAULT_MAX_OFFSET_US, 10));
    assert_int_equal(rk_clock_peek(c), out);
  }
  rk_clock_destroy(c);

  /* a custom bound */
  assert_int_equal(rk_clock_create(&c, 4, 1000), RK_OK);
  assert_int_equal(rk_clock_set_time_source(c, fake_time, &pt), RK_OK);
  assert_int_equal(rk_clock_recv(c, rk_hlc_make(pt + 1001, 0), &out), RK_ECLOCK);
  assert_int_equal(rk_clock_peek(c), 0);
  assert_int_equal(rk_clock_recv(c, rk_hlc_make(pt + 1000, 0), &out), RK_OK);
  assert_int_equal(out, rk_hlc_make(pt + 1000, 1));
  assert_int_equal(rk_clock_recv(c, rk_hlc_make(pt + 400, 4095), NULL), RK_OK); /* NULL out */
  assert_int_equal(rk_clock_peek(c), rk_hlc_make(pt + 1000, 2));
  rk_clock_destroy(c);
}

static void test_clock_recv_after_both(void **state) {
  rk_clock *c;
  uint64_t pt = 1700000000000000ull;
  rk_hlc s, out, m;
  int i;
  (void)state;
  assert_int_equal(rk_clock_create(&c, 5, 0), RK_OK);
  assert_int_equal(rk_clock_set_time_source(c, fake_time, &pt), RK_OK);
  for (i = 0; i < 10; i++) assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  /* received stamp behind the local clock */
  m = rk_hlc_make(pt - 10, 4000);
  assert_int_equal(rk_clock_recv(c, m, &out), RK_OK);
  assert_true(out > s && out > m);
  assert_int_equal(out, s + 1);
  /* received stamp ahead (within the bound) */
  s = out;
  m = rk_hlc_make(pt + 20, 4095);
  assert_int_equal(rk_clock_recv(c, m, &out), RK_OK);
  assert_true(out > s && out > m);
  assert_int_equal(out, rk_hlc_make(pt + 21, 0)); /* the counter carried */
  /* a tick afterwards keeps going from the merged stamp */
  assert_int_equal(rk_clock_tick(c, &s), RK_OK);
  assert_int_equal(s, out + 1);
  /* physical time passing the merged stamp takes over */
  pt += 100;
  assert_int_equal(rk_clock_recv(c, rk_hlc_make(pt - 50, 0), &out), RK_OK);
  assert_int_equal(out, rk_hlc_make(pt, 0));
  rk_clock_destroy(c);
}

/* The internal batch form: n stamps with one CAS are exactly what n ticks would return. */
static void test_clock_tick_n(void **state) {
  rk_clock *a, *b;
  uint64_t pt = 1700000000000000ull;
  static const uint32_t counts[] = {1, 2, 5, 4096, 1, 3};
  size_t ic;
  (void)state;
  assert_int_equal(rk_clock_create(&a, 1, 0), RK_OK);
  assert_int_equal(rk_clock_create(&b, 2, 0), RK_OK);
  assert_int_equal(rk_clock_set_time_source(a, fake_time, &pt), RK_OK);
  assert_int_equal(rk_clock_set_time_source(b, fake_time, &pt), RK_OK);
  for (ic = 0; ic < sizeof counts / sizeof counts[0]; ic++) {
    rk_hlc first = 0, s = 0;
    uint32_t i;
    if (ic == 4) pt += 10; /* physical time moves on: the batch starts at (pt, 0) */
    rk__clock_tick_n(a, counts[ic], pt, &first);
    for (i = 0; i < counts[ic]; i++) {
      assert_int_equal(rk_clock_tick(b, &s), RK_OK);
      if (s != first + i) fail_msg("batch %zu stamp %u: tick %llx, batch %llx", ic, i,
                                   (unsigned long long)s, (unsigned long long)(first + i));
    }
    assert_int_equal(rk_clock_peek(a), first + counts[ic] - 1); /* the word holds the last one */
    assert_int_equal(rk_clock_peek(b), rk_clock_peek(a));
  }
  /* across the logical overflow */
  {
    rk_hlc first = 0, m = rk_hlc_make(pt, 4094), out = 0;
    assert_int_equal(rk_clock_recv(a, m, &out), RK_OK); /* the word is now (pt, 4095) */
    assert_int_equal(out, rk_hlc_make(pt, 4095));
    rk__clock_tick_n(a, 3, pt, &first);
    assert_int_equal(first, rk_hlc_make(pt + 1, 0));
    assert_int_equal(rk_clock_peek(a), rk_hlc_make(pt + 1, 2));
  }
  /* recv with the caller's reading of physical time: same drift rule, same merge */
  {
    rk_hlc before = rk_clock_peek(a), out = 0;
    assert_int_equal(rk__clock_recv_at(a, rk_hlc_make(pt + 600000, 0), pt, &out), RK_ECLOCK);
    assert_int_equal(rk_clock_peek(a), before);
    assert_int_equal(rk__clock_recv_at(a, rk_hlc_make(pt + 600000, 0), pt + 200000, &out), RK_OK);
    assert_int_equal(out, rk_hlc_make(pt + 600000, 1));
    assert_int_equal(rk__clock_recv_at(a, 0, pt, NULL), RK_OK);
    assert_int_equal(rk_clock_peek(a), rk_hlc_make(pt + 600000, 2));
  }
  rk_clock_destroy(a);
  rk_clock_destroy(b);
}

/* ------------------------------ many threads, one clock -------------------------------------- */

#define HAMMER_THREADS (RK_TEST_SANITIZED ? 4 : 8)
#define HAMMER_ITERS (RK_TEST_SANITIZED ? 20000 : 100000)

typedef struct {
  rk_clock *clock;
  rk_hlc *stamps;
  int n;
  int errors;       /* calls that failed */
  int not_after_m;  /* recv results not after the received stamp */
} hammer_arg;

static void *hammer(void *p) {
  hammer_arg *a = (hammer_arg *)p;
  int i = 0, op = 0;
  while (i < a->n) {
    rk_hlc s = 0;
    op++;
    if (op % 4 == 3) {
      /* merge the latest stamp of the clock (typically another thread's) as a received one */
      rk_hlc m = rk_clock_peek(a->clock);
      if (rk_clock_recv(a->clock, m, &s) != RK_OK) a->errors++;
      if (s <= m) a->not_after_m++;
    } else if (op % 4 == 1) {
      /* a batch of up to three stamps with one CAS (the library's send path) */
      uint32_t n = a->n - i < 3 ? (uint32_t)(a->n - i) : 3, j;
      rk__clock_tick_n(a->clock, n, rk_clock_physical_us(a->clock), &s);
      for (j = 0; j + 1 < n; j++) a->stamps[i++] = s + j;
      s += n - 1;
    } else if (rk_clock_tick(a->clock, &s) != RK_OK) {
      a->errors++;
    }
    a->stamps[i++] = s;
  }
  return NULL;
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

static void hammer_clock(int frozen) {
  rk_clock *c;
  pthread_t th[8];
  hammer_arg args[8];
  uint64_t pt = 1700000000000000ull;
  int nt = HAMMER_THREADS, per = HAMMER_ITERS, t, i;
  size_t total = (size_t)nt * (size_t)per, k = 0;
  rk_hlc *all = (rk_hlc *)malloc(total * sizeof(rk_hlc));
  rk_hlc maxs = 0;
  assert_non_null(all);
  assert_int_equal(rk_clock_create(&c, 11, 0), RK_OK);
  /* frozen: physical time never moves, so every stamp comes from the counter and its carries */
  if (frozen) assert_int_equal(rk_clock_set_time_source(c, fake_time, &pt), RK_OK);
  for (t = 0; t < nt; t++) {
    args[t].clock = c;
    args[t].n = per;
    args[t].errors = 0;
    args[t].not_after_m = 0;
    args[t].stamps = (rk_hlc *)calloc((size_t)per, sizeof(rk_hlc));
    assert_non_null(args[t].stamps);
    assert_int_equal(pthread_create(&th[t], NULL, hammer, &args[t]), 0);
  }
  for (t = 0; t < nt; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
  for (t = 0; t < nt; t++) {
    assert_int_equal(args[t].errors, 0);
    assert_int_equal(args[t].not_after_m, 0);
    for (i = 1; i < per; i++)
      if (args[t].stamps[i] <= args[t].stamps[i - 1])
        fail_msg("thread %d: stamp %d (%llx) not after stamp %d (%llx)", t, i,
                 (unsigned long long)args[t].stamps[i], i - 1,
                 (unsigned long long)args[t].stamps[i - 1]);
    for (i = 0; i < per; i++) {
      all[k++] = args[t].stamps[i];
      if (args[t].stamps[i] > maxs) maxs = args[t].stamps[i];
    }
    free(args[t].stamps);
  }
  qsort(all, total, sizeof(rk_hlc), cmp_u64);
  for (k = 1; k < total; k++)
    if (all[k] == all[k - 1]) fail_msg("stamp %llx issued twice", (unsigned long long)all[k]);
  assert_int_equal(rk_clock_peek(c), maxs); /* the clock word holds the latest stamp issued */
  if (frozen) {
    /* every stamp is distinct and after (pt, 0): the last one is at least total-1 counts ahead */
    assert_true(all[0] >= rk_hlc_make(pt, 0));
    assert_true(all[total - 1] >= rk_hlc_make(pt, 0) + total - 1);
    assert_true(rk_hlc_physical(all[total - 1]) > pt); /* total > 4096: the counter carried */
  }
  free(all);
  rk_clock_destroy(c);
}

static void test_clock_threads_realtime(void **state) {
  (void)state;
  hammer_clock(0);
}
static void test_clock_threads_frozen(void **state) {
  (void)state;
  hammer_clock(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_send_matches_paper),
      cmocka_unit_test(test_recv_matches_paper),
      cmocka_unit_test(test_packed_order_is_lexicographic),
      cmocka_unit_test(test_logical_overflow_carries),
      cmocka_unit_test(test_accessors),
      cmocka_unit_test(test_compare_total_order),
      cmocka_unit_test(test_too_far_ahead),
      cmocka_unit_test(test_clock_basics),
      cmocka_unit_test(test_clock_fake_time_and_regression),
      cmocka_unit_test(test_clock_drift_rejection),
      cmocka_unit_test(test_clock_recv_after_both),
      cmocka_unit_test(test_clock_tick_n),
      cmocka_unit_test(test_clock_threads_realtime),
      cmocka_unit_test(test_clock_threads_frozen),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
