/* ring_wait.c — host-side ring allocation and blocking waits: spin, then yield, then park.
 *
 * Parking protocol (ARCHITECTURE §4), consumer side:
 *   w = cons_wake; cons_sleeping = 1; full fence; re-check the ring; futex_wait(cons_wake, w)
 * producer side (rk_ring_notify_consumer), after publishing:
 *   full fence; if cons_sleeping: cons_wake++; futex_wake(cons_wake)
 * Either the consumer's re-check sees the publication or the producer sees the flag (both sides
 * fence between their store and their load: a Dekker pair). The futex compares cons_wake with the
 * value read before the flag was raised, so a wake between the re-check and the sleep is not lost.
 * Producers waiting for space use the mirror image with prod_sleeping / prod_wake.
 *
 * Rings whose peer is a device (RK_RING_F_NO_WAKE) cannot use this protocol: no device writes the
 * wake word. Their waits poll instead (wait_polling below). */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "ringkernel/atomic.h"
#include "ringkernel/error.h"
#include "ringkernel/queue.h"
#include "ringkernel/ring.h"
#include "queue/internal.h"

#define RK_SPIN_NS 2000    /* spin about 2 µs (a message in flight), measured in time, not in pauses:
                            * one pause costs from ~5 ns to ~50 ns depending on the CPU (49 ns on the
                            * EPYC VM here, where 256 pauses were 12.5 µs and starved a co-located
                            * producer on a busy single core) */
#define RK_YIELD_ITERS 16  /* then give the core away a few times before sleeping */
/* A thread that was just woken from a park spins this long on its next waits (issue 16). Measured
 * on the EPYC VM with rk-bench rtt's park columns: a round trip in which either side parked cost
 * 57-135 µs (the futex wake of a halted vCPU), and such round trips came in runs of up to 1189 in a
 * row: once one side parks, the other's next message needs a wake-up, during which it exhausts
 * its own 2 µs spin and parks too, and so on. A side just woken is in a conversation: its peer
 * answers within microseconds, so it spins long enough to see that answer, which breaks the run
 * (both sides spinning again). A spin that runs out drops back to the short one: an idle thread
 * pays one long spin per wake-up, not more (docs/design-notes.md, "Parking and the slow mode"). */
#define RK_SPIN_AFTER_WAKE_NS 50000
/* The first polls of a spin without a pause between them (experiment, issue 16: a pause is ~49 ns
 * on the EPYC VM, so a reply that lands during one waits for it to end); 0: a pause before every
 * poll. */
#ifndef RK_SPIN_TIGHT_POLLS
#define RK_SPIN_TIGHT_POLLS 0
#endif
static __thread int tl_woken; /* this thread's last wait ended in a park that was woken */

/* Spinning is useless where the waiter can run on one CPU only (its affinity mask has one CPU, or
 * the machine has one online): what it waits for (another thread) cannot run on that CPU while it
 * spins. mpirun binds each rank to one core on the 2-core machines here, so a rank's lane, its
 * bridge and its host thread share a core, and every 2 µs spin of the lane was 2 µs its bridge
 * waited (docs/mpi.md). (The MPI bridge does not apply it: after a send it waits for its peer,
 * which runs on another CPU; bridge.c.) Such a waiter yields where others pause (the same spin time, then the same
 * yields and park): a yield with nobody else runnable on the CPU returns at once, so it stays as
 * responsive, and a co-located thread runs at once. The mask is read once per thread (its first
 * wait), again after every park (a syscall already; the mask may have changed while it slept) and
 * when the library starts a thread of its own (rk__one_cpu_refresh), never per wait.
 * tl_one_cpu: -1 unknown, 0 several CPUs, 1 one. */
static __thread int tl_one_cpu = -1;
static __thread uint64_t tl_spin_polls, tl_yields; /* this thread's pause-polls and yields in waits (tests) */

/* CPUs online, read once per process (glibc's sysconf reads a /sys file each time: ~10 µs); 0
 * until read. Relaxed: every thread computes the same value, any of them may store it. */
static long g_online;

int rk__one_cpu_refresh(void) {
  int one = 0;
  long online = __atomic_load_n(&g_online, __ATOMIC_RELAXED);
#if defined(__linux__)
  cpu_set_t set;
  /* pid 0: the calling thread's own mask. A failure (a mask wider than CPU_SETSIZE) says several. */
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) == 1) one = 1;
#endif
#if defined(_SC_NPROCESSORS_ONLN)
  if (online == 0) __atomic_store_n(&g_online, online = sysconf(_SC_NPROCESSORS_ONLN), __ATOMIC_RELAXED);
#endif
  if (online == 1) one = 1;
  tl_one_cpu = one;
  return one;
}

int rk__one_cpu(void) { return tl_one_cpu >= 0 ? tl_one_cpu : rk__one_cpu_refresh(); }

void rk__wait_thread_counts(uint64_t *spin_polls, uint64_t *yields) {
  if (spin_polls) *spin_polls = tl_spin_polls;
  if (yields) *yields = tl_yields;
}

void rk__wait_yield(void) {
  tl_yields++;
  sched_yield();
}

/* Waits on RK_RING_F_NO_WAKE rings (the host waiting for a GPU lane's reply, or for inbox space
 * a GPU lane frees). Nothing can wake a sleeper, so any sleep is paid in full, and a short sleep is
 * not short: nanosleep(5 µs) took 72-81 µs on the VMs here (the default 50 µs timer slack plus
 * wake-up), so the former "spin 2 µs, yield 16 times, then 5 µs sleeps" turned every round trip
 * over ~10 µs into >= 75 µs, where a GPU round trip is 5-20 µs and cudaStreamSynchronize spins.
 * So: poll (pause, a sched_yield every RK_NO_WAKE_YIELD_NS so a co-scheduled thread can run) for
 * RK_NO_WAKE_POLL_NS, 10x a slow GPU round trip; only a reply later than that (a long handler, an
 * idle kernel) sleeps, in intervals that double from RK_NO_WAKE_SLEEP_MIN_NS to
 * RK_NO_WAKE_SLEEP_MAX_NS (below ~50 µs the slack makes them all alike), so the added latency
 * stays within about the time already waited plus the slack.
 * CPU cost: a waiter keeps its core busy for up to 100 µs per wait. A caller that re-enters the
 * wait in slices (messaging.c re-checks its own state every millisecond) passes when the outbox
 * went quiet (rk__ring_wait_readable_slice: the start of the first slice that timed out in a row, reset
 * whenever a slice sees a message): the poll then covers the first 100 µs of an idle stretch, not
 * of every slice, and the first sleep of a slice is half the time waited so far (capped), so a
 * thread blocked in rk_recv on an idle kernel sleeps instead of polling 10% of a core, while a
 * wait right after traffic polls as before. */
#define RK_NO_WAKE_POLL_NS 100000
#define RK_NO_WAKE_YIELD_NS 20000
#define RK_NO_WAKE_SLEEP_MIN_NS 50000
#define RK_NO_WAKE_SLEEP_MAX_NS 500000

int rk_ring_create(rk_ring **out, uint64_t capacity, uint32_t slot_size, uint32_t mode) {
  size_t n;
  void *mem;
  int rc;
  if (out == NULL) return RK_EINVAL;
  *out = NULL;
  n = rk_ring_memsize(capacity, slot_size, mode);
  if (n == 0) return RK_EINVAL;
  n = (n + RK_LINE - 1) & ~(size_t)(RK_LINE - 1);
  mem = aligned_alloc(RK_LINE, n);
  if (mem == NULL) return RK_ENOMEM;
  rc = rk_ring_init(mem, n, capacity, slot_size, mode);
  if (rc != RK_OK) {
    free(mem);
    return rc;
  }
  *out = (rk_ring *)mem;
  return RK_OK;
}

void rk_ring_destroy(rk_ring *r) { free(r); }

uint64_t rk__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Parks (futex waits) and wake-ups (futex wakes) of the whole process, for diagnosis (rk-bench
 * rtt relates slow round trips to them): statistics, relaxed. */
static uint64_t g_parks, g_wakes;

void rk__wait_counts(uint64_t *parks, uint64_t *wakes) {
  if (parks) *parks = __atomic_load_n(&g_parks, __ATOMIC_RELAXED);
  if (wakes) *wakes = __atomic_load_n(&g_wakes, __ATOMIC_RELAXED);
}

#if defined(__linux__)
int rk__futex_shared_efault; /* test hook (queue/internal.h); relaxed */

/* A futex operation, shared first: a ring may sit in memory another process maps (queue.h), and a
 * private futex is never matched from that process. A shared futex is keyed by the page, and
 * memory without ordinary pages (a driver's pinned memory, cudaHostAlloc's mapping: VM_PFNMAP)
 * cannot be keyed: the call fails with EFAULT at once, and a wait on it would spin. There the
 * operation is made private, which needs only the address; the same memory gives the same answer
 * to both sides, so its waits and wakes stay of one kind (and such memory is not shared with
 * another process through a file). Measured on the EPYC VM: a shared wake with no waiter costs
 * ~325 ns against ~240 ns private, a parked round trip 32-37 us either way (the halted vCPU's
 * wake-up); a wake is made only for a waiter that raised its flag. */
static long futex_op(volatile uint32_t *word, int op, uint32_t val, const struct timespec *ts) {
  long r;
  if (__atomic_load_n(&rk__futex_shared_efault, __ATOMIC_RELAXED)) {
    r = -1; /* as on memory without pages */
    errno = EFAULT;
  } else {
    r = syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, 0);
  }
  if (r == -1 && errno == EFAULT) r = syscall(SYS_futex, (uint32_t *)word, op | FUTEX_PRIVATE_FLAG, val, ts, NULL, 0);
  return r;
}
#endif

/* Sleep on *word while it still equals `expected`, at most `ns` (ns < 0: forever). */
static void park(volatile uint32_t *word, uint32_t expected, int64_t ns) {
  __atomic_add_fetch(&g_parks, 1, __ATOMIC_RELAXED); /* statistics */
#if defined(__linux__)
  struct timespec ts, *tsp = NULL;
  if (ns >= 0) {
    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    tsp = &ts;
  }
  (void)futex_op(word, FUTEX_WAIT, expected, tsp); /* shared, or private where it cannot be */
#else
  (void)word;
  (void)expected;
  struct timespec ts = {0, ns >= 0 && ns < 50000 ? ns : 50000};
  nanosleep(&ts, NULL);
#endif
}

static void unpark(volatile uint32_t *word, int all) {
  /* RMW on a host-only word: several producers may bump cons_wake at once. */
  __atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
  __atomic_add_fetch(&g_wakes, 1, __ATOMIC_RELAXED); /* statistics */
#if defined(__linux__)
  (void)futex_op(word, FUTEX_WAKE, all ? 0x7fffffff : 1, NULL); /* as park's */
#endif
}

void rk_ring_notify_consumer(rk_ring *r) {
  if (r == NULL) return;
  rk_fence_seq_cst_sys(); /* Dekker pair with the fence in rk__ring_wait (consumer side) */
  if (rk_load_relaxed_sys_u32(&r->cons_sleeping)) unpark(&r->cons_wake, 0);
}

void rk_ring_notify_producers(rk_ring *r) {
  if (r == NULL) return;
  rk_fence_seq_cst_sys(); /* Dekker pair with the fence in rk__ring_wait (producer side) */
  if (rk_load_relaxed_sys_u32(&r->prod_sleeping)) unpark(&r->prod_wake, 1);
}

void rk__ring_notify2(rk_ring *cons, rk_ring *prods) {
  rk_fence_seq_cst_sys(); /* Dekker pairs with the fences in rk__ring_wait (both sides) */
  if (cons && rk_load_relaxed_sys_u32(&cons->cons_sleeping)) unpark(&cons->cons_wake, 0);
  if (prods && rk_load_relaxed_sys_u32(&prods->prod_sleeping)) unpark(&prods->prod_wake, 1);
}

void rk_ring_wake_all(rk_ring *r) {
  if (r == NULL) return;
  rk_fence_seq_cst_sys();
  unpark(&r->cons_wake, 1);
  unpark(&r->prod_wake, 1);
}

/* Readiness predicates. They return 1 ready, 0 not yet, or a negative error. */

/* The consumer's wait reads a sequence word through the header's geometry on every poll. With the
 * ring's real size known (mem_size != 0: the host's own lane rings) each poll re-checks the header
 * against it first (rk_ring_check_mem, a few loads of a line nobody writes), so a header rewritten
 * during a long wait ends it with RK_ECORRUPT instead of sending the next read past the ring. */
typedef struct consumer_view {
  rk_ring *r;
  size_t mem_size; /* 0: unknown (public waits: the caller vouched for the memory) */
} consumer_view;

static int consumer_ready(void *arg) {
  consumer_view *v = (consumer_view *)arg;
  rk_ring *r = v->r;
  uint64_t pos, fin;
  if (v->mem_size && rk_ring_check_mem(r, v->mem_size) != RK_OK) return RK_ECORRUPT;
  if (rk_ring_peek_n(r, 1, &pos)) {
    rk__prefetch_slot(r, pos); /* its lines travel while the wait returns (queue/internal.h) */
    return 1;
  }
  if (rk_ring_closed(r, &fin) && rk_ring_head(r) >= fin) return RK_ECLOSED;
  return 0;
}

static int producer_ready(void *arg) {
  rk_ring *r = (rk_ring *)arg;
  uint64_t t, h;
  uint64_t c = rk_load_relaxed_dev_u64(&r->claim);
  if (c & RK_RING_CLOSED) return RK_ECLOSED;
  /* pairs with the consumer's release of head */
  h = rk_ring_load_acquire_head(r);
  t = r->mode == RK_RING_SPSC ? r->tail : c;
  return t - h < r->capacity ? 1 : 0;
}

/* The wait on a ring whose peer cannot wake us (RK_RING_F_NO_WAKE): poll, then sleep in growing
 * intervals; see RK_NO_WAKE_POLL_NS. No sleeping flag is raised: nobody would act on it. `since`:
 * when the caller's whole wait began (rk__now_ns), 0 for now. */
static int wait_polling(int (*ready)(void *), void *arg, int64_t timeout_ns, uint64_t since) {
  uint64_t start = rk__now_ns(), now = start, next_yield = start + RK_NO_WAKE_YIELD_NS;
  uint64_t deadline = timeout_ns > 0 ? start + (uint64_t)timeout_ns : UINT64_MAX;
  uint64_t begun = since != 0 && since <= start ? since : start;
  long nap = RK_NO_WAKE_SLEEP_MIN_NS;
  int i, rc;
  for (i = 1;; i++) {
    rk_cpu_relax();
    if ((rc = ready(arg)) != 0) return rc < 0 ? rc : RK_OK;
    if ((i & 7) != 0) continue; /* a clock read per 8 pauses */
    now = rk__now_ns();
    if (now >= deadline) return RK_ETIMEDOUT;
    if (now - begun >= RK_NO_WAKE_POLL_NS) break;
    if (now >= next_yield) {
      sched_yield();
      next_yield = now + RK_NO_WAKE_YIELD_NS;
    }
  }
  if ((now - begun) / 2 > (uint64_t)nap) /* a long wait: the first nap grows with it */
    nap = (now - begun) / 2 < RK_NO_WAKE_SLEEP_MAX_NS ? (long)((now - begun) / 2) : RK_NO_WAKE_SLEEP_MAX_NS;
  for (;;) {
    struct timespec ts = {0, nap};
    if (deadline != UINT64_MAX && deadline - now < (uint64_t)nap) ts.tv_nsec = (long)(deadline - now);
    nanosleep(&ts, NULL);
    if ((rc = ready(arg)) != 0) return rc < 0 ? rc : RK_OK;
    now = rk__now_ns();
    if (now >= deadline) return RK_ETIMEDOUT;
    if (nap < RK_NO_WAKE_SLEEP_MAX_NS) nap = nap * 2 < RK_NO_WAKE_SLEEP_MAX_NS ? nap * 2 : RK_NO_WAKE_SLEEP_MAX_NS;
  }
}

/* Spin, yield, park until ready(arg) != 0 or the timeout. `consumer` selects which flag to raise
 * and which wake word to sleep on. since_ns: when the caller's idle stretch began (wait_polling;
 * device rings only), 0 for now. once: return RK_EAGAIN after the first park that ends with
 * nothing ready (woken, or its time up), so that a caller whose wait ends on more than the ring
 * (a fault, a terminate: kernel.c wake_waiters bumps the wake word) re-checks at once instead of
 * sleeping again until the timeout. */
static int ring_wait(rk_ring *r, int consumer, int (*ready)(void *), void *arg, int64_t timeout_ns,
                     uint64_t since_ns, int once) {
  uint64_t start = 0, deadline = 0, spin;
  int i, rc, clamped = 0;
  volatile uint32_t *sleeping = consumer ? &r->cons_sleeping : &r->prod_sleeping;
  volatile uint32_t *wake = consumer ? &r->cons_wake : &r->prod_wake;

  if ((rc = ready(arg)) != 0) return rc < 0 ? rc : RK_OK;
  if (timeout_ns == 0) return RK_ETIMEDOUT;
  if (r->flags & RK_RING_F_NO_WAKE) return wait_polling(ready, arg, timeout_ns, since_ns);
  start = rk__now_ns();
  spin = tl_woken ? RK_SPIN_AFTER_WAKE_NS : RK_SPIN_NS;
  /* The timeout bounds every phase: a spin longer than it would overshoot a short timeout by up to
   * the spin (50 µs after a wake-up), the yields by whole time slices on a loaded CPU. */
  if (timeout_ns > 0) {
    deadline = start + (uint64_t)timeout_ns;
    if ((uint64_t)timeout_ns < spin) {
      spin = (uint64_t)timeout_ns;
      clamped = 1;
    }
  }
  if (rk__one_cpu()) { /* one CPU: yield where the spin would pause (tl_one_cpu above) */
    do {
      rk__wait_yield();
      if ((rc = ready(arg)) != 0) return rc < 0 ? rc : RK_OK;
    } while (rk__now_ns() - start < spin);
  } else {
    for (i = 1;; i++) {
      if (i > RK_SPIN_TIGHT_POLLS) rk_cpu_relax();
      if ((rc = ready(arg)) != 0) {
        tl_spin_polls += (uint64_t)i;
        return rc < 0 ? rc : RK_OK;
      }
      if ((i & 7) == 0 && rk__now_ns() - start >= spin) break; /* a clock read per 8 pauses */
    }
    tl_spin_polls += (uint64_t)i;
  }
  if (!clamped) tl_woken = 0; /* the spin ran out: no conversation (any more); a timeout shorter
                                * than the spin says nothing of the conversation */
  for (i = 0; i < RK_YIELD_ITERS; i++) {
    if (timeout_ns > 0 && rk__now_ns() >= deadline) return RK_ETIMEDOUT;
    rk__wait_yield();
    if ((rc = ready(arg)) != 0) return rc < 0 ? rc : RK_OK;
  }
  for (;;) {
    int64_t left = -1;
    uint32_t w;
    if (timeout_ns > 0) {
      uint64_t now = rk__now_ns();
      if (now >= deadline) return RK_ETIMEDOUT;
      left = (int64_t)(deadline - now);
    }
    w = __atomic_load_n(wake, __ATOMIC_ACQUIRE); /* pairs with unpark's release increment */
    if (consumer)
      rk_store_relaxed_sys_u32(sleeping, 1); /* single consumer: a flag */
    else
      __atomic_fetch_add(sleeping, 1, __ATOMIC_RELAXED); /* producers: a count */
    rk_fence_seq_cst_sys(); /* Dekker pair with the fence in rk_ring_notify_* */
    rc = ready(arg);
    if (rc == 0) {
      park(wake, w, left);
      (void)rk__one_cpu_refresh(); /* asleep a while: the mask may have changed (a syscall after one) */
    }
    if (consumer)
      rk_store_relaxed_sys_u32(sleeping, 0);
    else
      __atomic_fetch_sub(sleeping, 1, __ATOMIC_RELAXED);
    if (rc == 0 && (rc = ready(arg)) > 0) tl_woken = 1; /* woken into a conversation */
    if (rc != 0) return rc < 0 ? rc : RK_OK;
    if (once) return timeout_ns > 0 && rk__now_ns() >= deadline ? RK_ETIMEDOUT : RK_EAGAIN;
  }
}

/* Shared with the CPU backend's lane workers (internal.h). */
int rk__ring_wait(rk_ring *r, int consumer, int (*ready)(void *), void *arg, int64_t timeout_ns) {
  return ring_wait(r, consumer, ready, arg, timeout_ns, 0, 0);
}

int rk_ring_wait_readable(rk_ring *r, int64_t timeout_ns) {
  consumer_view v = {r, 0};
  if (rk_ring_check(r) != RK_OK) return RK_EINVAL;
  return rk__ring_wait(r, 1, consumer_ready, &v, timeout_ns);
}

int rk_ring_wait_writable(rk_ring *r, int64_t timeout_ns) {
  if (rk_ring_check(r) != RK_OK) return RK_EINVAL;
  return rk__ring_wait(r, 0, producer_ready, r, timeout_ns);
}

int rk__ring_wait_readable_slice(rk_ring *r, size_t mem_size, int64_t timeout_ns, uint64_t *idle_since) {
  consumer_view v = {r, mem_size};
  int rc;
  if (idle_since == NULL) return RK_EINVAL;
  if ((rc = mem_size ? rk_ring_check_mem(r, mem_size) : rk_ring_check(r)) != RK_OK) return rc;
  rc = ring_wait(r, 1, consumer_ready, &v, timeout_ns, *idle_since, 1);
  if (rc == RK_EAGAIN) return rc; /* parked and woken with nothing in the ring: the caller re-checks */
  if (rc != RK_ETIMEDOUT)
    *idle_since = 0; /* a message (or the end): the next wait polls afresh */
  else if (*idle_since == 0 && timeout_ns > 0)
    *idle_since = rk__now_ns() - (uint64_t)timeout_ns; /* when this slice began */
  return rc;
}

int rk_ring_push_wait(rk_ring *r, const void *msg, uint32_t len, int64_t timeout_ns) {
  uint64_t start = 0;
  int rc;
  if (rk_ring_check(r) != RK_OK || (msg == NULL && len > 0)) return RK_EINVAL;
  if (len > rk_ring_msg_max(r)) return RK_EMSGSIZE;
  for (;;) {
    rc = r->mode == RK_RING_MPSC ? rk_ring_mpsc_push(r, msg, len) : rk_ring_push(r, msg, len);
    if (rc == RK_OK) {
      rk_ring_notify_consumer(r);
      return RK_OK;
    }
    if (rc != RK_EAGAIN) return rc;
    /* Full: nothing was claimed (the claim happens only after capacity is seen), so waiting or
     * timing out here loses and wedges nothing. */
    if (timeout_ns > 0 && start == 0) start = rk__now_ns();
    {
      int64_t left = timeout_ns;
      if (timeout_ns > 0) {
        uint64_t el = rk__now_ns() - start;
        if (el >= (uint64_t)timeout_ns) return RK_ETIMEDOUT;
        left = timeout_ns - (int64_t)el;
      }
      rc = rk_ring_wait_writable(r, left);
      if (rc != RK_OK) return rc;
    }
  }
}

int rk_ring_pop_wait(rk_ring *r, void *buf, uint32_t len, int64_t timeout_ns) {
  int rc;
  if (rk_ring_check(r) != RK_OK || (buf == NULL && len > 0)) return RK_EINVAL;
  if (len > rk_ring_msg_max(r)) return RK_EMSGSIZE;
  rc = rk_ring_wait_readable(r, timeout_ns);
  if (rc != RK_OK) return rc;
  rc = rk_ring_pop(r, buf, len);
  if (rc == RK_OK) rk_ring_notify_producers(r);
  return rc;
}
