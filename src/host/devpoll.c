/* devpoll.c — replies of device lanes reach their callbacks in microseconds, not on a timer.
 *
 * A CPU lane that publishes a reply for a kernel with callbacks started wakes the runtime's loop
 * (rk__service_wake from flush_replies). A device lane cannot: it makes no system calls, and its
 * rings carry RK_RING_F_NO_WAKE. Before this file such replies waited for the loop's 50 ms
 * watchdog timer (49.9 ms mean on the emulated device). Now, while any kernel whose lanes cannot
 * wake the host has callbacks started, a poller thread of the runtime watches those kernels'
 * outboxes and wakes the loop (uv_async_send) when one holds a published reply; the loop
 * dispatches as before, so callbacks still run on the loop's thread (the service thread or the
 * application's loop) and each outbox keeps its one consumer (messaging.c). The poller never
 * consumes: it reads an outbox's head and the sequence word there (load-acquires, read-only).
 *
 * How it waits — the host ring waits' policy (ring_wait.c), extended by what it knows: it polls
 * (pause, a sched_yield every RK_DEVPOLL_YIELD_NS) while a reply is likely — within
 * RK_DEVPOLL_HOT_NS of the last reply it saw, or while requests sent to a served kernel outnumber
 * the replies received (for RK_DEVPOLL_EXPECT_NS after the last send at most: a request sent
 * without reply, or a reply refused or dropped, leaves the counts apart for good) — and otherwise
 * sleeps on a condition variable in intervals that double from 50 us to 500 us. A send to a served
 * kernel while it sleeps wakes it (rk__devpoll_sent: a Dekker pair on `sleeping`, so none is
 * missed). After waking the loop it waits until the loop has taken what it saw (a head moved; at
 * most RK_DEVPOLL_TAKE_NS, then it wakes it again), so one reply is one wake-up. With no kernel to
 * serve it waits on the condition variable until rk__devpoll_kick; the thread is started by the
 * first rk_recv_start on such a kernel (rk__devpoll_start) and stopped by rk_runtime_destroy.
 * CPU cost: a core while replies are expected or just came; while callbacks are started on an
 * idle device kernel, one wake-up per 500 us (docs/cuda-backend.md). */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "host/internal.h"

#define RK_DEVPOLL_HOT_NS 100000ull      /* poll this long after the last reply seen */
#define RK_DEVPOLL_EXPECT_NS 5000000ull  /* and while replies are expected, this long at most */
#define RK_DEVPOLL_YIELD_NS 20000ull     /* while polling, a sched_yield this often */
#define RK_DEVPOLL_SLEEP_MIN_NS 50000ull /* then sleeps, doubling */
#define RK_DEVPOLL_SLEEP_MAX_NS 500000ull
#define RK_DEVPOLL_TAKE_NS 1000000ull    /* after a wake-up, how long to wait for the loop to take it */
#define RK_DEVPOLL_TRACK 8               /* outboxes watched for the loop's take */

struct rk__devpoll {
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t cond;
  int started;       /* under rt->lock */
  int closed;        /* under rt->lock: rk_runtime_destroy stopped it; no new start */
  int stop;          /* under lock */
  uint32_t kicks;    /* under lock */
  uint32_t sleeping; /* atomics: 1 while the poller is (about to be) asleep; see rk__devpoll_sent */
  uint64_t scans;    /* atomics (relaxed): passes over the kernels, for tests (rk__devpoll_scans) */
};

/* Does lane l hold a published reply at its outbox head? Read-only: the head (pairs with the
 * consumer's store-release in rk_ring_release_n) and the sequence word there (pairs with the
 * lane's publication). The word's address comes from the geometry launch gave the ring, not from
 * its header, which sits in memory the device writes: a header rewritten by a lane cannot send
 * this read outside the ring (the drain re-checks the header before it reads a slot). */
static int reply_waiting(rk__lane *l, uint64_t *head) {
  const rk_kernel *k = l->k;
  uint64_t h = rk_ring_head(l->outbox);
  volatile uint64_t *seq0 = (volatile uint64_t *)((uint8_t *)l->outbox + sizeof(rk_ring));
  *head = h;
  return rk_ring_seq_published(rk_load_acquire_sys_u64(rk_ring__seq_at(seq0, k->slot_size, k->outbox_cap - 1, h)), h);
}

/* A kernel the poller serves: callbacks started (pairs with the release stores of cb_active in
 * rk_recv_start/stop) and lanes that cannot wake the host. */
static int served(const rk_kernel *k) {
  return __atomic_load_n(&k->cb_active, __ATOMIC_ACQUIRE) && (k->lane[0].outbox->flags & RK_RING_F_NO_WAKE);
}

typedef struct scan {
  int served;    /* kernels served */
  int ready;     /* lanes with a reply waiting */
  int expecting; /* requests sent to a served kernel outnumber the replies received */
  uint64_t sent; /* requests sent to the served kernels, in all (a change: a send since the last scan) */
  int moved;     /* (second pass) a watched head moved: the loop took a reply */
  int n;
  rk_ring *rings[RK_DEVPOLL_TRACK];
  uint64_t heads[RK_DEVPOLL_TRACK];
} scan;

/* Statistics counters, relaxed: an estimate is all "expecting" needs. */
static int expecting(const rk_kernel *k) {
  return __atomic_load_n(&k->sent, __ATOMIC_RELAXED) > rk__received(k) + __atomic_load_n(&k->late_replies, __ATOMIC_RELAXED);
}

static void scan_kernel(rk_kernel *k, void *arg) {
  scan *s = (scan *)arg;
  uint32_t i;
  uint64_t h;
  if (!served(k)) return;
  s->served++;
  if (expecting(k)) s->expecting = 1;
  s->sent += __atomic_load_n(&k->sent, __ATOMIC_RELAXED); /* statistics counter: a change is all it says */
  for (i = 0; i < k->lanes; i++)
    if (reply_waiting(&k->lane[i], &h)) {
      s->ready++;
      if (s->n < RK_DEVPOLL_TRACK) {
        s->rings[s->n] = k->lane[i].outbox;
        s->heads[s->n++] = h;
      }
    }
}

/* The rings are compared by address only inside a pass, where their kernel is pinned. */
static void moved_kernel(rk_kernel *k, void *arg) {
  scan *s = (scan *)arg;
  uint32_t i;
  int j;
  for (i = 0; i < k->lanes; i++)
    for (j = 0; j < s->n; j++)
      if (s->rings[j] == k->lane[i].outbox && rk_ring_head(k->lane[i].outbox) != s->heads[j]) s->moved = 1;
}

/* Sleep on d->cond for ns at most, unless stopped or kicked since `kicks` (lock not held). Returns 1
 * when a kick (a send, a start) ended it. */
static int nap(struct rk__devpoll *d, uint32_t kicks, uint64_t ns) {
  int kicked;
  uv_mutex_lock(&d->lock);
  if (!d->stop && d->kicks == kicks) (void)uv_cond_timedwait(&d->cond, &d->lock, ns);
  kicked = d->kicks != kicks;
  uv_mutex_unlock(&d->lock);
  return kicked;
}

static void poller_main(void *arg) {
  rk_runtime *rt = (rk_runtime *)arg;
  struct rk__devpoll *d = rt->devpoll;
  uint64_t last_reply = rk__now_ns(), last_send = 0, sent_seen = 0, last_yield = 0, sleep_ns = 0, take_wait = 0;
  for (;;) {
    scan s;
    uint64_t now;
    uint32_t kicks;
    uv_mutex_lock(&d->lock);
    if (d->stop) {
      uv_mutex_unlock(&d->lock);
      return;
    }
    kicks = d->kicks;
    uv_mutex_unlock(&d->lock);
    memset(&s, 0, sizeof s);
    rk__for_each_kernel(rt, scan_kernel, &s);
    __atomic_fetch_add(&d->scans, 1, __ATOMIC_RELAXED);
    now = rk__now_ns();
    if (s.sent != sent_seen) { /* a request was sent since the last look: its reply is due */
      sent_seen = s.sent;
      last_send = now;
    }
    if (s.served == 0) { /* nothing to serve: wait for a kick (a callback started) or the stop */
      uv_mutex_lock(&d->lock);
      while (!d->stop && d->kicks == kicks) uv_cond_wait(&d->cond, &d->lock);
      uv_mutex_unlock(&d->lock);
      last_reply = rk__now_ns(); /* a fresh start polls hot */
      continue;
    }
    if (s.ready) {
      last_reply = now;
      sleep_ns = 0;
      rk__service_wake(rt);
      while (!s.moved && rk__now_ns() - now < RK_DEVPOLL_TAKE_NS) {
        sched_yield();
        rk__for_each_kernel(rt, moved_kernel, &s);
      }
      if (s.moved) {
        take_wait = 0;
      } else {
        /* The loop did not take it (an application loop that is not running, a long callback):
         * wake it again, but after a nap that doubles each time (to 10 ms), not in a spin. */
        take_wait = take_wait == 0 ? RK_DEVPOLL_SLEEP_MIN_NS : take_wait * 2;
        if (take_wait > 20 * RK_DEVPOLL_SLEEP_MAX_NS) take_wait = 20 * RK_DEVPOLL_SLEEP_MAX_NS;
        (void)nap(d, kicks, take_wait);
      }
      continue;
    }
    /* Poll while a reply is likely: just after one, or after a send while requests are
     * unanswered — for RK_DEVPOLL_EXPECT_NS from that send at most (a request sent without reply,
     * or a reply refused or dropped, leaves `expecting` set for good). */
    if (now - last_reply < RK_DEVPOLL_HOT_NS || (s.expecting && now - last_send < RK_DEVPOLL_EXPECT_NS)) {
      sleep_ns = 0;
      if (now - last_yield >= RK_DEVPOLL_YIELD_NS) {
        last_yield = now;
        sched_yield();
      } else {
        rk_cpu_relax();
      }
      continue;
    }
    sleep_ns = sleep_ns == 0 ? RK_DEVPOLL_SLEEP_MIN_NS : sleep_ns * 2;
    if (sleep_ns > RK_DEVPOLL_SLEEP_MAX_NS) sleep_ns = RK_DEVPOLL_SLEEP_MAX_NS;
    /* Dekker pair with rk__devpoll_sent: raise `sleeping`, full fence, then look at the served
     * kernels' `sent` again; a sender counts its message, full fence, then reads `sleeping`. One
     * of the two sees the other: a request sent now either keeps the poller awake (its count
     * changed) or wakes it (a kick). */
    __atomic_store_n(&d->sleeping, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memset(&s, 0, sizeof s);
    rk__for_each_kernel(rt, scan_kernel, &s);
    if (s.sent == sent_seen && !s.ready && nap(d, kicks, sleep_ns)) last_send = rk__now_ns(); /* woken by a send */
    __atomic_store_n(&d->sleeping, 0, __ATOMIC_RELAXED);
  }
}

static void kick(struct rk__devpoll *d) {
  uv_mutex_lock(&d->lock);
  d->kicks++;
  uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->lock);
}

int rk__devpoll_start(rk_runtime *rt) {
  struct rk__devpoll *d;
  int rc = RK_OK;
  uv_mutex_lock(&rt->lock);
  d = rt->devpoll;
  if (d == NULL) {
    d = (struct rk__devpoll *)rk__calloc(1, sizeof *d);
    if (d == NULL) {
      uv_mutex_unlock(&rt->lock);
      return rk__fail(rt, RK_ENOMEM, "rk_recv_start: out of memory");
    }
    uv_mutex_init(&d->lock);
    uv_cond_init(&d->cond);
    rt->devpoll = d;
  }
  if (d->closed) {
    uv_mutex_unlock(&rt->lock);
    return rk__fail(rt, RK_ESTATE, "rk_recv_start: the runtime is being destroyed");
  }
  if (!d->started) {
    if (rk__thread_create(&d->thread, poller_main, rt) != 0)
      rc = RK_ESYS;
    else
      d->started = 1;
  }
  uv_mutex_unlock(&rt->lock);
  if (rc != RK_OK) return rk__fail(rt, rc, "rk_recv_start: cannot start the device-reply poller thread");
  return RK_OK;
}

void rk__devpoll_kick(rk_runtime *rt) {
  if (rt->devpoll) kick(rt->devpoll);
}

void rk__devpoll_sent(rk_runtime *rt) {
  struct rk__devpoll *d = rt->devpoll; /* set before any served kernel exists (rk_recv_start) */
  if (d == NULL) return;
  /* Dekker pair with the poller's sleep: the caller counted its message (k->sent) before this */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&d->sleeping, __ATOMIC_RELAXED)) kick(d);
}

void rk__devpoll_destroy(rk_runtime *rt) {
  struct rk__devpoll *d;
  int started;
  rk__lock(&rt->lock);
  d = rt->devpoll;
  if (d) {
    started = d->started;
    d->closed = 1;
  }
  rk__unlock(&rt->lock);
  if (d == NULL) return;
  if (started) {
    uv_mutex_lock(&d->lock);
    d->stop = 1;
    uv_cond_signal(&d->cond);
    uv_mutex_unlock(&d->lock);
    uv_thread_join(&d->thread);
  }
  /* d stays allocated (closed) until the runtime is freed: a sender that saw a served kernel may
   * still read it (rk__devpoll_sent); the kernels are gone, so none can start again */
  d->started = 0;
}

uint64_t rk__devpoll_scans(rk_runtime *rt) {
  struct rk__devpoll *d = rt->devpoll;
  return d ? __atomic_load_n(&d->scans, __ATOMIC_RELAXED) : 0;
}

void rk__devpoll_free(rk_runtime *rt) {
  struct rk__devpoll *d = rt->devpoll;
  if (d == NULL) return;
  uv_mutex_destroy(&d->lock);
  uv_cond_destroy(&d->cond);
  free(d);
  rt->devpoll = NULL;
}
