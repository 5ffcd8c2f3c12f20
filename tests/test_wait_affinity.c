/* test_wait_affinity.c — the waits' rule for a thread that can run on one CPU only (ring_wait.c,
 * docs/design-notes.md "Parking and the slow mode"): such a thread yields where it would pause,
 * since the thread it waits for could not run while it spins. Checked through the thread's own
 * counts of pause-polls and yields (rk__wait_thread_counts), not through time: on several CPUs a
 * wait that times out spins; pinned to one CPU it never pauses and yields instead; the mask is read
 * at a thread's first wait, and again after a park. And two threads pinned to the same CPU still
 * pass messages both ways through blocking waits (each wait yields the CPU to the other).
 * STATIC: the counts and rk__one_cpu are internal. Skipped (77) where the process has one CPU. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include "test_util.h"

#include <ringkernel.h>
#include <ringkernel/queue.h>
#include "queue/internal.h"

static cpu_set_t g_all; /* the process's mask at start */
static int g_first_cpu;

static void pin_self(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
}

static void unpin_self(void) { assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof g_all, &g_all), 0); }

/* One wait on an empty ring that times out; the pause-polls and yields it made. */
static void wait_empty(rk_ring *r, int64_t ns, uint64_t *spins, uint64_t *yields) {
  uint64_t s0, y0, s1, y1;
  rk__wait_thread_counts(&s0, &y0);
  assert_int_equal(rk_ring_wait_readable(r, ns), RK_ETIMEDOUT);
  rk__wait_thread_counts(&s1, &y1);
  *spins = s1 - s0;
  *yields = y1 - y0;
}

static void test_spin_or_yield(void **state) {
  rk_ring *r = NULL;
  uint64_t spins, yields;
  (void)state;
  assert_int_equal(rk_ring_create(&r, 4, 64, RK_RING_SPSC), RK_OK);
  unpin_self();
  assert_int_equal(rk__one_cpu_refresh(), 0);
  wait_empty(r, 200000, &spins, &yields);
  assert_true(spins > 0); /* several CPUs: the wait spins first */
  pin_self(g_first_cpu);
  assert_int_equal(rk__one_cpu_refresh(), 1);
  assert_int_equal(rk__one_cpu(), 1);
  wait_empty(r, 200000, &spins, &yields);
  assert_int_equal(spins, 0); /* one CPU: not one pause */
  assert_true(yields > 0);
  /* the mask changes while the thread is pinned; it is read again after the next park (a wait of
   * 20 ms runs through its yields and parks until its timeout; on a loaded machine the yields may
   * take the whole timeout, so waits are repeated until one parked), not before */
  unpin_self();
  assert_int_equal(rk__one_cpu(), 1); /* (cached: no syscall per wait) */
  {
    uint64_t p0, p1;
    int tries = 0;
    rk__wait_counts(&p0, NULL);
    do {
      wait_empty(r, 20000000, &spins, &yields);
      assert_int_equal(spins, 0); /* still the cached answer until the park */
      rk__wait_counts(&p1, NULL);
    } while (p1 == p0 && ++tries < 100);
    assert_true(p1 > p0);
  }
  assert_int_equal(rk__one_cpu(), 0); /* re-read after the park */
  wait_empty(r, 200000, &spins, &yields);
  assert_true(spins > 0);
  rk_ring_destroy(r);
}

/* A thread pinned before its first wait: the first wait reads the mask. */
static void *first_wait_pinned(void *arg) {
  rk_ring *r = (rk_ring *)arg;
  uint64_t *out = malloc(2 * sizeof *out);
  pin_self(g_first_cpu);
  wait_empty(r, 200000, &out[0], &out[1]);
  return out;
}

static void test_first_wait_reads_mask(void **state) {
  rk_ring *r = NULL;
  pthread_t th;
  void *res;
  uint64_t *c;
  (void)state;
  assert_int_equal(rk_ring_create(&r, 4, 64, RK_RING_SPSC), RK_OK);
  assert_int_equal(pthread_create(&th, NULL, first_wait_pinned, r), 0);
  assert_int_equal(pthread_join(th, &res), 0);
  c = (uint64_t *)res;
  assert_int_equal(c[0], 0);
  assert_true(c[1] > 0);
  free(c);
  rk_ring_destroy(r);
}

/* Ping-pong between two threads pinned to the same CPU, through blocking waits on two rings. */
typedef struct pp {
  rk_ring *a, *b;
  uint32_t n;
} pp;

static void *pong(void *arg) {
  pp *p = (pp *)arg;
  uint32_t i;
  uint64_t v;
  pin_self(g_first_cpu);
  for (i = 0; i < p->n; i++) {
    if (rk_ring_pop_wait(p->a, &v, sizeof v, -1) != RK_OK) return (void *)1;
    v++;
    if (rk_ring_push_wait(p->b, &v, sizeof v, -1) != RK_OK) return (void *)1;
  }
  return NULL;
}

static void test_pinned_ping_pong(void **state) {
  pp p = {NULL, NULL, 2000};
  pthread_t th;
  void *res;
  uint32_t i;
  uint64_t v, s0, s1;
  (void)state;
  assert_int_equal(rk_ring_create(&p.a, 4, 64, RK_RING_SPSC), RK_OK);
  assert_int_equal(rk_ring_create(&p.b, 4, 64, RK_RING_SPSC), RK_OK);
  pin_self(g_first_cpu);
  assert_int_equal(rk__one_cpu_refresh(), 1);
  rk__wait_thread_counts(&s0, NULL);
  assert_int_equal(pthread_create(&th, NULL, pong, &p), 0);
  for (i = 0; i < p.n; i++) {
    v = i;
    assert_int_equal(rk_ring_push_wait(p.a, &v, sizeof v, -1), RK_OK);
    assert_int_equal(rk_ring_pop_wait(p.b, &v, sizeof v, -1), RK_OK);
    assert_int_equal(v, (uint64_t)i + 1);
  }
  assert_int_equal(pthread_join(th, &res), 0);
  assert_null(res);
  rk__wait_thread_counts(&s1, NULL);
  assert_int_equal(s1 - s0, 0); /* every wait yielded, none paused */
  unpin_self();
  rk_ring_destroy(p.a);
  rk_ring_destroy(p.b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spin_or_yield),
      cmocka_unit_test(test_first_wait_reads_mask),
      cmocka_unit_test(test_pinned_ping_pong),
  };
  int i;
  if (sched_getaffinity(0, sizeof g_all, &g_all) != 0 || CPU_COUNT(&g_all) < 2) {
    printf("test_wait_affinity: skipped: the process can run on one CPU only (the rule is then always on)\n");
    return 77;
  }
  for (i = 0; i < CPU_SETSIZE && !CPU_ISSET(i, &g_all); i++) {
  }
  g_first_cpu = i;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
