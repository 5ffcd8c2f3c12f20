/* test_soak.c — the soak test (make soak; ctest label soak, never part of make test).
 *
 * Several host threads drive several kernels through tiny rings for a long time, with random
 * backpressure (REJECT and BLOCK kernels, RK_SEND_NOWAIT sends, batches, calls) and random
 * deactivate/activate of the kernels, then check that nothing was lost, duplicated or reordered
 * and that memory did not grow:
 *   - every accepted message reached its kernel exactly once and in order per key (each handler
 *     checks the sequence number of every key it owns, and at the end its per-key counts equal
 *     what the producers had accepted);
 *   - every reply came back exactly once, in order per key (the receivers check strictly rising
 *     sequence numbers per key and count them against the replies the producers asked for);
 *   - the counters balance: sent = msgs_in = accepted, msgs_out = received (no late, no refused
 *     replies), send_rejected = the RK_EAGAINs the producers saw;
 *   - the resident set after the run is within RSS_SLACK of what it was after the warm-up.
 * It prints messages, replies, duration, rate and RSS before/after. RK_SOAK_MESSAGES sets the
 * number of messages (default 10^8). */
#include "rt_util.h"
#include "test_util.h"

#include <unistd.h>

#define KERNELS 3
#define LANES 2
#define PRODUCERS 3
#define KEYS 48 /* key % PRODUCERS owns it; key -> lane by the library's hash */
#define SOAK_TYPE 11u
#define RSS_SLACK (8ull << 20)

typedef struct soak_msg {
  uint32_t key;
  uint32_t producer;
  uint64_t seq;
} soak_msg;

/* kernel state: the next sequence number expected per key (each key is handled by one lane) */
typedef struct soak_state {
  uint64_t next[KEYS];
} soak_state;

static uint64_t order_errors; /* atomics: a handler saw a sequence number out of order */

static int soak_handler(rk_ctx *ctx, const rk_msg *in) {
  soak_state *st = (soak_state *)rk_state(ctx);
  soak_msg m;
  if (rk_msg_len(in) != sizeof m) {
    __atomic_add_fetch(&order_errors, 1, __ATOMIC_RELAXED);
    return RK_EINVAL;
  }
  memcpy(&m, rk_msg_payload(in), sizeof m);
  if (m.key >= KEYS || m.seq != st->next[m.key]) __atomic_add_fetch(&order_errors, 1, __ATOMIC_RELAXED);
  if (m.key < KEYS) st->next[m.key] = m.seq + 1;
  return rk_reply(ctx, SOAK_TYPE, &m, sizeof m);
}

typedef struct soak {
  rk_runtime *rt;
  rk_kernel *k[KERNELS];
  soak_state *state[KERNELS]; /* each kernel's state (state_init hands it over) */
  uint64_t target;               /* messages to accept in all */
  uint64_t accepted;             /* atomics: accepted so far (all producers) */
  int producers_done;            /* atomics */
  /* per producer, written by it alone, read after the join */
  uint64_t next_seq[KERNELS][KEYS];        /* next sequence number to send, per kernel and key */
  uint64_t replies_wanted[KERNELS][KEYS];  /* replies owed to the receivers */
  uint64_t call_replies[PRODUCERS];
  uint64_t rejected[PRODUCERS][KERNELS];   /* RK_EAGAIN: one per refused send, call or batch */
  uint64_t timeouts[PRODUCERS][KERNELS];   /* RK_ETIMEDOUT (BLOCK kernels), as many */
  uint64_t batches[PRODUCERS];
  /* per kernel, written by its receiver alone */
  int64_t last_reply[KERNELS][KEYS];
  uint64_t replies_got[KERNELS][KEYS];
  uint64_t reply_errors[KERNELS];
  /* chaos */
  uint64_t toggles;
  uint64_t rss_warm, rss_end, warm_at;
  uint64_t t_start, t_end;
} soak;

static soak S;

/* The state's address, for the final check (read after terminate: the lanes have exited). */
static int keep_state(void *state, size_t size, void *user) {
  (void)size;
  *(soak_state **)user = (soak_state *)state;
  return RK_OK;
}

static uint64_t rss_bytes(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return 0;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  fclose(f);
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A failure seen on a worker thread (cmocka can only fail on the test's own thread): say what and
 * where, dump everything the runtime can tell (each kernel's state and fault, the counters as
 * JSON, what was logged), then abort. */
static void soak_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void soak_fail(const char *fmt, ...) {
  static char json[1 << 16];
  va_list ap;
  uint32_t i;
  fprintf(stderr, "soak: FAILED after %.1f s, %llu messages accepted: ", (double)(rt_now_ns() - S.t_start) / 1e9,
          (unsigned long long)__atomic_load_n(&S.accepted, __ATOMIC_RELAXED));
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  for (i = 0; i < KERNELS; i++) {
    char err[256];
    int code = rk_kernel_error(S.k[i], err, sizeof err);
    fprintf(stderr, "soak: kernel %u: %s, fault %s%s%s\n", i, rk_state_name(rk_kernel_state(S.k[i])),
            code ? rk_err_name(code) : "none", code ? ": " : "", code ? err : "");
  }
  if (rk_runtime_stats_json(S.rt, json, sizeof json) >= 0) fprintf(stderr, "soak: stats %s\n", json);
  pthread_mutex_lock(&rt_the_log.lock);
  fprintf(stderr, "soak: logged %u errors, %u warnings; the last: %s\n", rt_the_log.count[RK_LOG_ERROR],
          rt_the_log.count[RK_LOG_WARN], rt_the_log.last);
  pthread_mutex_unlock(&rt_the_log.lock);
  fflush(stderr);
  abort();
}

typedef struct producer_arg {
  uint32_t id;
  uint64_t rng;
} producer_arg;

/* Account for an accepted message for (kernel, key) with sequence seq. */
static void accepted_one(uint32_t kern, uint32_t key, int wants_reply) {
  S.next_seq[kern][key]++;
  if (wants_reply) S.replies_wanted[kern][key]++;
}

static void *producer(void *arg) {
  producer_arg *a = (producer_arg *)arg;
  uint32_t id = a->id;
  uint64_t mine = 0, share = S.target / PRODUCERS + (id < S.target % PRODUCERS ? 1 : 0);
  while (mine < share) {
    uint64_t r = rk_test_rand(&a->rng), added = 0;
    uint32_t kern = (uint32_t)(r % KERNELS);
    uint32_t key = (uint32_t)((r >> 8) % (KEYS / PRODUCERS)) * PRODUCERS + id;
    uint32_t pick = (uint32_t)((r >> 20) % 1000);
    rk_kernel *k = S.k[kern];
    if (pick < 2) { /* a call: its reply goes to this thread, not to the receiver */
      soak_msg m = {key, id, S.next_seq[kern][key]}, back;
      rk_msg rep;
      int rc = rk_call_key(k, key, SOAK_TYPE, &m, sizeof m, &rep, &back, sizeof back, 30 * RT_SEC);
      if (rc == RK_EAGAIN) {
        S.rejected[id][kern]++;
        continue;
      }
      if (rc != RK_OK) soak_fail("producer %u: rk_call = %s (%s)", id, rk_err_name(rc), rk_runtime_last_error(S.rt));
      if (back.seq != m.seq || back.key != key) soak_fail("producer %u: a call got another message's reply", id);
      accepted_one(kern, key, 0);
      S.call_replies[id]++;
      added = 1;
    } else if (pick < 200) { /* a batch of keyed messages, some without reply */
      rk_send_item items[8];
      soak_msg ms[8];
      uint64_t seqs[KEYS];
      uint32_t n = 1 + (uint32_t)((r >> 32) % 8), j;
      int rc;
      if (n > share - mine) n = (uint32_t)(share - mine);
      memcpy(seqs, S.next_seq[kern], sizeof seqs);
      for (j = 0; j < n; j++) {
        uint32_t kk = (uint32_t)((r >> (36 + j)) % (KEYS / PRODUCERS)) * PRODUCERS + id;
        ms[j].key = kk;
        ms[j].producer = id;
        ms[j].seq = seqs[kk]++;
        items[j].type = SOAK_TYPE;
        items[j].len = sizeof ms[j];
        items[j].payload = &ms[j];
        items[j].key = kk;
        items[j].flags = RK_SEND_KEYED | ((r >> (44 + j)) & 1 ? RK_SEND_NO_REPLY : 0) |
                         ((r >> 60) & 1 ? RK_SEND_NOWAIT : 0);
        items[j].msg_id = 0;
      }
      rc = rk_send_batch(k, items, n);
      S.batches[id]++;
      if (rc < 0) {
        if (rc == RK_EAGAIN) S.rejected[id][kern]++;
        else if (rc == RK_ETIMEDOUT) S.timeouts[id][kern]++;
        else soak_fail("producer %u: rk_send_batch = %s", id, rk_err_name(rc));
        continue;
      }
      /* items [0, rc) were accepted, in order; a refused rest counts as one refusal */
      for (j = 0; j < (uint32_t)rc; j++) accepted_one(kern, ms[j].key, !(items[j].flags & RK_SEND_NO_REPLY));
      if ((uint32_t)rc < n) {
        /* the batch stopped at a claim that failed (full: REJECT or NOWAIT, or timed out) */
        if (k == S.k[0] || (items[rc].flags & RK_SEND_NOWAIT)) S.rejected[id][kern]++;
        else S.timeouts[id][kern]++;
      }
      added = (uint64_t)rc;
    } else {
      soak_msg m = {key, id, S.next_seq[kern][key]};
      uint32_t flags = ((r >> 40) & 3) == 0 ? RK_SEND_NO_REPLY : 0;
      int rc;
      if (((r >> 42) & 3) == 0) flags |= RK_SEND_NOWAIT;
      rc = rk_send_key(k, key, SOAK_TYPE, &m, sizeof m, flags, NULL);
      if (rc == RK_EAGAIN) {
        S.rejected[id][kern]++;
        continue;
      }
      if (rc == RK_ETIMEDOUT) {
        S.timeouts[id][kern]++;
        continue;
      }
      if (rc != RK_OK) soak_fail("producer %u: rk_send_key = %s", id, rk_err_name(rc));
      accepted_one(kern, key, !(flags & RK_SEND_NO_REPLY));
      added = 1;
    }
    mine += added;
    {
      uint64_t total = __atomic_add_fetch(&S.accepted, added, __ATOMIC_RELAXED);
      /* the warm-up ends at 5%: rings, pending lists and thread arenas have reached their size */
      if (total >= S.warm_at && total - added < S.warm_at) __atomic_store_n(&S.rss_warm, rss_bytes(), __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

typedef struct receiver_arg {
  uint32_t kern;
} receiver_arg;

static void *receiver(void *arg) {
  uint32_t kern = ((receiver_arg *)arg)->kern;
  rk_kernel *k = S.k[kern];
  rk_msg msgs[16];
  soak_msg bufs[16];
  for (;;) {
    int n = rk_recv_batch(k, msgs, bufs, sizeof bufs[0], 16, 100 * RT_MS), i;
    if (n == RK_ECLOSED) break; /* terminated and every reply received */
    if (n == RK_ETIMEDOUT) continue;
    if (n < 0) soak_fail("receiver %u: rk_recv_batch = %s", kern, rk_err_name(n));
    for (i = 0; i < n; i++) {
      soak_msg *m = &bufs[i];
      if (msgs[i].status != 0 || msgs[i].len != sizeof *m || m->key >= KEYS) {
        S.reply_errors[kern]++;
        continue;
      }
      if ((int64_t)m->seq <= S.last_reply[kern][m->key]) S.reply_errors[kern]++; /* duplicate or reordered */
      S.last_reply[kern][m->key] = (int64_t)m->seq;
      S.replies_got[kern][m->key]++;
    }
  }
  return NULL;
}

/* Deactivate a random kernel for a moment, again and again, until the producers are done. */
static void *chaos(void *arg) {
  uint64_t rng = 0x5eed5eedull;
  (void)arg;
  while (!__atomic_load_n(&S.producers_done, __ATOMIC_ACQUIRE)) {
    uint64_t r = rk_test_rand(&rng);
    rk_kernel *k = S.k[r % KERNELS];
    rt_sleep_ms(1 + (unsigned)((r >> 8) % 5));
    if (rk_kernel_deactivate(k) != RK_OK) soak_fail("chaos: deactivate failed");
    if ((r >> 16) & 1) rt_sleep_ms((unsigned)((r >> 17) % 3));
    if (rk_kernel_activate(k) != RK_OK) soak_fail("chaos: activate failed");
    S.toggles++;
  }
  return NULL;
}

static void test_soak(void **state) {
  rk_runtime *rt = rt_create();
  rk_kernel_desc d = rt_desc("soak", soak_handler);
  pthread_t prod[PRODUCERS], recv[KERNELS], ch;
  producer_arg pa[PRODUCERS];
  receiver_arg ra[KERNELS];
  uint64_t accepted = 0, wanted = 0, got = 0, calls = 0, rejected = 0, timeouts = 0, batches = 0;
  const char *env = getenv("RK_SOAK_MESSAGES");
  uint32_t i, j;
  (void)state;
  memset(&S, 0, sizeof S);
  S.target = env ? strtoull(env, NULL, 10) : 100000000ull;
  if (S.target < 1000) S.target = 1000;
  S.warm_at = S.target / 20;
  for (i = 0; i < KERNELS; i++)
    for (j = 0; j < KEYS; j++) S.last_reply[i][j] = -1;
  S.rt = rt;
  d.state_size = sizeof(soak_state);
  d.state_init = keep_state;
  for (i = 0; i < KERNELS; i++) {
    d.state_init_user = &S.state[i];
    rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
    lo.lanes = LANES;
    /* tiny rings (4/2, 8/4, 16/8 slots): full inboxes and outboxes, stalled lanes and wrapping
     * indices all the time */
    lo.inbox_capacity = 4u << i;
    lo.outbox_capacity = 2u << i;
    lo.slot_size = 128;
    lo.backpressure = i == 0 ? RK_BACKPRESSURE_REJECT : RK_BACKPRESSURE_BLOCK;
    lo.send_timeout_ns = 50 * RT_MS;
    S.k[i] = rt_launch_active(rt, &d, &lo);
  }
  S.t_start = rt_now_ns();
  for (i = 0; i < KERNELS; i++) {
    ra[i].kern = i;
    assert_int_equal(pthread_create(&recv[i], NULL, receiver, &ra[i]), 0);
  }
  for (i = 0; i < PRODUCERS; i++) {
    pa[i].id = i;
    pa[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
    assert_int_equal(pthread_create(&prod[i], NULL, producer, &pa[i]), 0);
  }
  assert_int_equal(pthread_create(&ch, NULL, chaos, NULL), 0);
  for (i = 0; i < PRODUCERS; i++) assert_int_equal(pthread_join(prod[i], NULL), 0);
  __atomic_store_n(&S.producers_done, 1, __ATOMIC_RELEASE);
  assert_int_equal(pthread_join(ch, NULL), 0);
  S.rss_end = rss_bytes();
  for (i = 0; i < KERNELS; i++) RT_OK(rt, rk_kernel_terminate(S.k[i], 60 * RT_SEC));
  for (i = 0; i < KERNELS; i++) assert_int_equal(pthread_join(recv[i], NULL), 0);
  S.t_end = rt_now_ns();

  /* exactly once, in order: the kernels' per-key counts are the producers' */
  assert_int_equal(__atomic_load_n(&order_errors, __ATOMIC_RELAXED), 0);
  for (i = 0; i < KERNELS; i++) {
    /* the state is read after terminate: the lanes have exited */
    const soak_state *st = S.state[i];
    rk_kernel_counters c = rt_stats(S.k[i]);
    uint64_t k_accepted = 0, k_wanted = 0, k_got = 0, k_rejected = 0, k_timeouts = 0;
    for (j = 0; j < KEYS; j++) {
      if (st->next[j] != S.next_seq[i][j])
        fail_msg("kernel %u key %u: handled %llu, accepted %llu", i, j, (unsigned long long)st->next[j],
                 (unsigned long long)S.next_seq[i][j]);
      if (S.replies_got[i][j] != S.replies_wanted[i][j])
        fail_msg("kernel %u key %u: %llu replies, %llu wanted", i, j, (unsigned long long)S.replies_got[i][j],
                 (unsigned long long)S.replies_wanted[i][j]);
      k_accepted += S.next_seq[i][j];
      k_wanted += S.replies_wanted[i][j];
      k_got += S.replies_got[i][j];
    }
    for (j = 0; j < PRODUCERS; j++) {
      k_rejected += S.rejected[j][i];
      k_timeouts += S.timeouts[j][i];
    }
    assert_int_equal(S.reply_errors[i], 0);
    assert_int_equal(c.state, RK_STATE_TERMINATED);
    assert_int_equal(c.sent, k_accepted);
    assert_int_equal(c.msgs_in, c.sent);
    assert_int_equal(c.invalid, 0);
    assert_int_equal(c.handler_errors, 0);
    assert_int_equal(c.late_replies, 0);
    assert_int_equal(c.replies_invalid, 0);
    assert_int_equal(c.msgs_out, c.received);
    assert_int_equal(c.send_rejected, k_rejected); /* one per failed claim, as the producers counted */
    assert_int_equal(c.send_timeouts, k_timeouts);
    accepted += k_accepted;
    wanted += k_wanted;
    got += k_got;
  }
  for (i = 0; i < PRODUCERS; i++) {
    calls += S.call_replies[i];
    batches += S.batches[i];
    for (j = 0; j < KERNELS; j++) {
      rejected += S.rejected[i][j];
      timeouts += S.timeouts[i][j];
    }
  }
  assert_int_equal(accepted, S.target);
  assert_int_equal(got, wanted);
  printf("soak: %llu messages accepted (%llu replies to receivers, %llu calls, %llu batches) by %u kernels x %u "
         "lanes from %u producer threads in %.1f s (%.2f M msgs/s)\n",
         (unsigned long long)accepted, (unsigned long long)got, (unsigned long long)calls,
         (unsigned long long)batches, KERNELS, LANES, PRODUCERS, (double)(S.t_end - S.t_start) / 1e9,
         (double)accepted / ((double)(S.t_end - S.t_start) / 1e9) / 1e6);
  printf("soak: backpressure: %llu refusals (RK_EAGAIN), %llu send timeouts; %llu deactivate/activate cycles\n",
         (unsigned long long)rejected, (unsigned long long)timeouts, (unsigned long long)S.toggles);
  printf("soak: RSS after warm-up (%llu messages) %.1f MiB, at the end %.1f MiB (growth %+.1f MiB, limit %.0f MiB)\n",
         (unsigned long long)S.warm_at, (double)S.rss_warm / 1048576.0, (double)S.rss_end / 1048576.0,
         ((double)S.rss_end - (double)S.rss_warm) / 1048576.0, (double)RSS_SLACK / 1048576.0);
  fflush(stdout);
  assert_true(S.rss_warm > 0);
  assert_true(S.rss_end <= S.rss_warm + RSS_SLACK);
  for (i = 0; i < KERNELS; i++) rk_kernel_destroy(S.k[i]);
  rk_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_soak)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
