/* test_devemu.c — the CUDA backend's device lane loop, run without a GPU.
 *
 * The device loop (src/device/persistent.cuh) and the built-in handlers are compiled as host C++
 * (src/device/emulation_lanes.cpp, src/device/emulation.h) and driven by an emulated backend here: rings
 * and control block in ordinary memory standing for the pinned, mapped arena; one host thread per
 * block thread; launch parameters built by the same code as the CUDA backend's (rk__dev_params_fill,
 * rk__dev_geometry); the runtime told its backend is CUDA, so the rings carry RK_RING_F_NO_WAKE and
 * the clock exchange applies offsets exactly as with a GPU. The emulated %globaltimer is
 * CLOCK_MONOTONIC, decades away from CLOCK_REALTIME: a lane that stamped without the measured offset
 * would refuse every host stamp as too far ahead (RK_ECLOCK), and a wrong offset shows in the
 * clock statistics.
 *
 * Blocks run with 1 to 4 threads (a barrier of host threads for __syncthreads), so the collective
 * paths (the copy-in, rk_reply's barriers, rk_sync in vector_add and counter) run too. What this
 * cannot show (the GPU suite, test_gpu, does): PCIe timing, the PTX memory model's weaker cases,
 * warps, co-residency, CUDA errors. Links librk.a (internal.h). */
#include "rt_util.h"

#include <ringkernel/remote.h>

#include "device/params.h"
#include "host/internal.h"
#include "inject_util.h"
#include "devemu_util.h"
#include "twin_kernel.h"
#include "twin_check.h"

/* ---------------------------------------- the emulated backend -------------------------------- */

static rk_backend_ops emu_ops;

#define RK_LAUNCH_CLOCK_TRIES_FOR_TEST 4 /* kernel.c RK_LAUNCH_CLOCK_TRIES */

/* The watchdog's stall bound for tests that do not test it: a loaded machine can starve an emulated
 * lane's threads for seconds (3.8 s without a heartbeat at load average 48 under ASan), and the
 * default bound (2 s) then faulted a kernel that was merely not scheduled. */
#define EMU_STALL_NS (60 * RT_SEC)

/* rt's kernels run on the emulated device. The table is filled once: a runtime that a failed test
 * left running (cmocka leaves the test at the failed assertion) reads it from its service loop,
 * and the next test's install must not write it under it (TSan reported that race after the CI
 * failure of stop 25: a second report for one failure). */
static void emu_install(rk_runtime *rt) {
  static int filled; /* (the tests run one after another, on the main thread) */
  if (!filled) emu_backend_install(rt, &emu_ops, emu_simple_start, emu_simple_join);
  else emu_backend_use(rt, &emu_ops);
  filled = 1;
}

/* A runtime whose kernels run on the emulated device (stall_ns: the watchdog's bound, 0 default;
 * tick_ns: the service tick; src: the time source, NULL for CLOCK_REALTIME). */
static rk_runtime *emu_runtime_with(uint64_t clock_sync_ns, uint64_t stall_ns, uint64_t tick_ns, rk_time_source src) {
  rk_runtime_options o = rt_options(); /* CPU backend: no CUDA initialisation */
  rk_runtime *rt;
  o.watchdog_interval_ns = tick_ns;
  o.watchdog_stall_ns = stall_ns;
  o.clock_sync_interval_ns = clock_sync_ns;
  o.time_source = src;
  rt = rt_create_opts(&o);
  emu_install(rt);
  return rt;
}

static rk_runtime *emu_runtime_wd(uint64_t clock_sync_ns, uint64_t stall_ns) {
  return emu_runtime_with(clock_sync_ns, stall_ns, RT_MS, NULL);
}

static rk_runtime *emu_runtime(uint64_t clock_sync_ns) { return emu_runtime_wd(clock_sync_ns, EMU_STALL_NS); }

static void emu_runtime_destroy(rk_runtime *rt) {
  emu_backend_uninstall(rt);
  rk_runtime_destroy(rt);
}

static rk_kernel *emu_launch(rk_runtime *rt, const rk_kernel_desc *d, uint32_t lanes, uint32_t threads, uint32_t inbox,
                             uint32_t outbox) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  lo.lanes = lanes;
  lo.threads_per_lane = threads;
  lo.inbox_capacity = inbox;
  lo.outbox_capacity = outbox;
  lo.launch_timeout_ns = EMU_STALL_NS; /* the lanes' threads check in late on a loaded machine (default 5 s) */
  return rt_launch(rt, d, &lo);
}

/* Terminate (draining everything accepted), destroy, and take the runtime down. */
static void emu_finish(rk_runtime *rt, rk_kernel *k) {
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  rk_kernel_destroy(k);
  emu_runtime_destroy(rt);
}

/* ---------------------------------------- tests ---------------------------------------------- */

static void test_lifecycle(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 2, 3, 0, 0);
  (void)state;
  assert_true(k->lane[0].inbox->flags & RK_RING_F_NO_WAKE);
  assert_int_equal(rk_kernel_deactivate(k), RK_ESTATE);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
  assert_int_equal(rk_kernel_deactivate(k), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_INACTIVE);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
  rk_kernel_destroy(k);
  emu_runtime_destroy(rt);
}

/* Calls through the device loop: payloads back intact, stamps causal (reply after request, the
 * runtime clock after the reply), and none refused by the drift bound (which every one would be,
 * were the lanes stamping with CLOCK_MONOTONIC without the offset). */
static void call_and_stamps(uint32_t lanes, uint32_t threads) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, lanes, threads, 0, 0);
  char req[48], buf[64];
  rk_msg m;
  uint32_t i, n = RT_SANITIZED ? 300 : 2000;
  rk_kernel_counters st;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 0; i < n; i++) {
    rk_hlc before = rk_clock_peek(rk_runtime_clock(rt));
    snprintf(req, sizeof req, "device call %u", i);
    RT_OK(rt, rk_call(k, 9, req, (uint32_t)strlen(req) + 1, &m, buf, sizeof buf, RT_HANG));
    assert_string_equal(buf, req);
    assert_true(m.env.hlc > before);
    assert_true(rk_clock_peek(rk_runtime_clock(rt)) > m.env.hlc);
    /* the device clock is CLOCK_REALTIME's within the drift bound */
    assert_true(rk_hlc_physical(m.env.hlc) <= rk_realtime_us() + 500000);
  }
  st = rt_stats(k);
  assert_int_equal(st.clock_rejected, 0);
  assert_int_equal(st.msgs_in, n);
  assert_int_equal(st.msgs_out, n);
  assert_int_equal(st.received, n);
  emu_finish(rt, k);
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC, the emulated device's offset, read as the midpoint of two
 * CLOCK_REALTIME readings around a CLOCK_MONOTONIC one taken at most 5 us apart (retried: this
 * thread preempted between two readings made the figure off by the whole preemption, a
 * millisecond and more on a loaded machine, against the 20 us of slack the checks allow for the
 * test's own readings). */
static int64_t realtime_minus_monotonic(void) {
  struct timespec a, m, b;
  int64_t ra, rb, mono, best_gap = INT64_MAX, best = 0;
  int i;
  for (i = 0; i < 1000; i++) {
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &b);
    ra = (int64_t)a.tv_sec * 1000000000ll + a.tv_nsec;
    rb = (int64_t)b.tv_sec * 1000000000ll + b.tv_nsec;
    mono = (int64_t)m.tv_sec * 1000000000ll + m.tv_nsec;
    if (rb - ra < best_gap) {
      best_gap = rb - ra;
      best = ra + (rb - ra) / 2 - mono;
    }
    if (best_gap <= 5000) break;
  }
  if (best_gap > 5000)
    fail_msg("no two CLOCK_REALTIME readings within 5 us in 1000 tries (best %lld ns)", (long long)best_gap);
  return best;
}

/* The clock exchange against a device clock that really differs from the host's: every accepted
 * offset is CLOCK_REALTIME - CLOCK_MONOTONIC to within half its window (plus a few microseconds
 * for the test's own reading of it). */
static void test_clock_offset_measured(void **state) {
  rk_runtime *rt = emu_runtime(1000000);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 3, 2, 0, 0);
  uint64_t prev = UINT64_MAX;
  int round;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (round = 0; round < 3; round++) {
    int64_t truth, off, bound;
    rk_kernel_counters st;
    RT_WAIT_STAT_NS(k, clock_syncs, 2 + 2 * round, RT_SYNC_WAIT_NS);
    truth = realtime_minus_monotonic();
    st = rt_stats(k); /* one exchange's figures (read under the clock lock) */
    off = st.clock_offset_ns;
    bound = (int64_t)(st.clock_sync_window_ns / 2) + 20000;
    if (off - truth < -bound || off - truth > bound)
      fail_msg("measured offset %lld ns, CLOCK_REALTIME - CLOCK_MONOTONIC %lld ns (window %llu ns)", (long long)off,
               (long long)truth, (unsigned long long)st.clock_sync_window_ns);
    /* a window over 50 us is accepted only at launch, or narrowing a coarser one in force */
    assert_true(st.clock_sync_window_ns <= 50000 || st.clock_syncs == 1 || st.clock_sync_window_ns <= prev);
    prev = st.clock_sync_window_ns;
  }
  emu_finish(rt, k);
}

/* The calibration a loaded machine made (clock_rejected > 0 in fan-in under load: accepted
 * messages lost): every clock exchange misses (fail point RK__FP_CLOCK: lane 0 answering too late,
 * at launch and in the service loop) and the start took 4 s more (the coarse window widened), so
 * the offset in force is the midpoint of a ~4 s window: the lanes' clock ~2 s behind the host's,
 * four times the 500 ms drift bound. The host's stamps are not ahead at all: every call must be
 * answered, nothing refused (clock_rejected 0), no dead letter. Before the fix (the lanes' bound
 * max_offset_us alone) every one was refused with RK_ECLOCK. A stamp beyond the bound plus twice
 * the uncertainty is still refused. */
static void test_clock_coarse_calibration(void **state) {
  rk_runtime *rt;
  rk_kernel *k;
  rk_kernel_counters st;
  int64_t truth, err;
  char req[32], buf[64];
  rk_msg m;
  slot s;
  uint32_t i;
  rk_hlc future;
  (void)state;
  rk__failpoint_arm(RK__FP_CLOCK, 1, 1); /* every exchange from now on misses */
  rk__failpoint_clock_widen(4 * RT_SEC);
  rt = emu_runtime(1000000); /* the service loop tries (and misses) every few milliseconds */
  k = emu_launch(rt, &rk_builtin_echo, 2, 2, 0, 0);
  rk__failpoint_clock_widen(0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_WAIT_STAT(k, clock_sync_misses, RK_LAUNCH_CLOCK_TRIES_FOR_TEST + 2); /* the service loop missed too */
  st = rt_stats(k);
  assert_int_equal(st.clock_syncs, 1); /* the coarse window, nothing better */
  assert_true(st.clock_sync_window_ns >= 4 * RT_SEC);
  truth = realtime_minus_monotonic();
  err = truth - st.clock_offset_ns; /* how far the lanes' clock is behind */
  if (err < 1000 * RT_MS || err > (int64_t)st.clock_sync_window_ns / 2 + 20000)
    fail_msg("offset %lld ns off (window %llu ns): the test needs one beyond the drift bound, within the uncertainty",
             (long long)err, (unsigned long long)st.clock_sync_window_ns);
  for (i = 0; i < 200; i++) {
    snprintf(req, sizeof req, "coarse %u", i);
    RT_OK(rt, rk_call(k, 9, req, (uint32_t)strlen(req) + 1, &m, buf, sizeof buf, RT_HANG));
    assert_int_equal(m.status, RK_OK);
    assert_string_equal(buf, req);
  }
  st = rt_stats(k);
  assert_int_equal(st.clock_rejected, 0);
  assert_int_equal(st.dead_letters, 0);
  assert_int_equal(st.msgs_out, 200);
  /* a stamp really beyond the bound (past max_offset + the whole window: beyond bound + 2 x
   * uncertainty however the lanes' clock errs) is refused */
  future = rk_hlc_make(rk_realtime_us() + 500000 + st.clock_sync_window_ns / 1000 + 100000, 0);
  good_envelope(k, &s, 0x104, 4);
  s.e.hlc = future;
  inject(k, &s);
  assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
  assert_int_equal(m.status, RK_ECLOCK);
  assert_int_equal(m.env.correlation_id, 0x104);
  assert_int_equal(rt_stats(k).clock_rejected, 1);
  assert_true(rk__failpoint_disarm(RK__FP_CLOCK) >= RK_LAUNCH_CLOCK_TRIES_FOR_TEST + 2);
  /* exchanges answer again: the service loop narrows the window (a loaded machine's slow answers
   * too), and the bound follows one measurement later (it covers the previous offset as well) */
  RT_WAIT_STAT_NS(k, clock_syncs, 3, RT_SYNC_WAIT_NS);
  st = rt_stats(k);
  assert_true(st.clock_sync_window_ns < RT_SEC);
  /* relaxed: the service loop writes it (a test's reading, no order needed) */
  assert_true(__atomic_load_n(&k->ctl->host.clock_bound_us, __ATOMIC_RELAXED) < 500000 + 1000000);
  emu_finish(rt, k);
}

static int clock_fail_points_off(void **state) {
  (void)state;
  (void)rk__failpoint_disarm(RK__FP_CLOCK);
  rk__failpoint_clock_widen(0);
  return 0;
}

/* A host clock that is not CLOCK_REALTIME: the runtime's time source, CLOCK_REALTIME plus a skew
 * the test sets (us; changed with a relaxed store: the service loop and the senders read it). */
static int64_t skew_us;

static uint64_t skewed_time(void *user) {
  (void)user;
  return (uint64_t)((int64_t)rk_realtime_us() + __atomic_load_n(&skew_us, __ATOMIC_RELAXED));
}

/* (tick_ns: how soon the service loop sees a step) */
static rk_runtime *skewed_runtime_tick(uint64_t clock_sync_ns, uint64_t tick_ns) {
  return emu_runtime_with(clock_sync_ns, EMU_STALL_NS, tick_ns, skewed_time);
}

static rk_runtime *skewed_runtime(uint64_t clock_sync_ns) { return skewed_runtime_tick(clock_sync_ns, RT_MS); }

/* With the periodic exchange an hour away: wait until the launch's exchanges are over (a coarse
 * calibration is narrowed, a narrowing followed by the exchange that tightens the bound): the
 * window in force 50 us or less and no exchange for 100 ms. Returns the exchanges so far. */
static uint64_t clock_quiet(rk_kernel *k) {
  uint64_t t0 = rt_now_ns(), syncs = UINT64_MAX;
  for (;;) {
    rk_kernel_counters st = rt_stats(k);
    /* relaxed: the service loop writes it; the bound of a 50 us window (kernel.c clock_bound_us) */
    uint64_t bound = rk_load_relaxed_sys_u64(&k->ctl->host.clock_bound_us);
    if (st.clock_sync_window_ns <= 50000 && bound <= RK_HLC_DEFAULT_MAX_OFFSET_US + 27 && st.clock_syncs == syncs)
      return syncs;
    if (rt_now_ns() - t0 > (uint64_t)RT_SYNC_WAIT_NS) fail_msg("the clock exchanges did not settle (window %llu ns)",
                                                        (unsigned long long)st.clock_sync_window_ns);
    syncs = st.clock_syncs;
    usleep(100000);
  }
}

/* An exchange accepted, the host asks the lanes to load the new offset and does not wait: wait until
 * lane 0 (the tests' kernels here have one lane) acknowledged the latest request. */
static void offset_loaded(rk_kernel *k) {
  uint64_t t0 = rt_now_ns();
  /* acquire: pairs with the lane's store-release of clock_ack; relaxed signals: only compared */
  while (rk_load_acquire_sys_u32(&k->lane[0].status->clock_ack) !=
         rk_signals_clock_req(rk_load_relaxed_sys_u64(&k->ctl->host.signals))) {
    if (rt_now_ns() - t0 > (uint64_t)RT_HANG) fail_msg("lane 0 did not load the offset");
    sched_yield();
  }
}

/* The offset in force moved by `by` ns since off0, give or take 100 ms (two exchanges' windows,
 * and the slew of a real clock between them). */
static void offset_moved(rk_kernel *k, int64_t off0, int64_t by) {
  int64_t d = rt_stats(k).clock_offset_ns - off0;
  if (d < by - 100 * RT_MS || d > by + 100 * RT_MS)
    fail_msg("the offset in force moved by %lld ns, not %lld ns", (long long)d, (long long)by);
}

/* n echo calls, every one answered (none refused for its stamp), each reply stamped within the
 * drift bound of the host's clock (its time source) and above the request. */
static void echo_calls(rk_runtime *rt, rk_kernel *k, uint32_t n, const char *tag) {
  char req[48], buf[64];
  rk_msg m;
  uint32_t i;
  for (i = 0; i < n; i++) {
    uint64_t before = skewed_time(NULL);
    snprintf(req, sizeof req, "%s %u", tag, i);
    RT_OK(rt, rk_call(k, 9, req, (uint32_t)strlen(req) + 1, &m, buf, sizeof buf, RT_HANG));
    assert_int_equal(m.status, RK_OK);
    assert_string_equal(buf, req);
    if (rk_hlc_physical(m.env.hlc) + 1000 < before || rk_hlc_physical(m.env.hlc) > skewed_time(NULL) + 500000)
      fail_msg("%s: reply stamped at %llu us, the host clock read %llu us before the call", tag,
               (unsigned long long)rk_hlc_physical(m.env.hlc), (unsigned long long)before);
  }
}

/* The end of a clock test: nothing was refused for its stamp, no dead letter; the skew back to 0. */
static void clock_finish(rk_runtime *rt, rk_kernel *k) {
  rk_kernel_counters st = rt_stats(k);
  assert_int_equal(st.clock_rejected, 0);
  assert_int_equal(st.dead_letters, 0);
  emu_finish(rt, k);
  __atomic_store_n(&skew_us, 0, __ATOMIC_RELAXED);
}

/* The start of a clock test: the skew 0, a runtime whose periodic exchange is an hour away (tick_ns:
 * its service tick), an echo kernel of `lanes` lanes, active, answering 10 calls, and the launch's
 * exchanges over (clock_quiet: *syncs). */
static rk_kernel *clock_start(rk_runtime **rt, uint64_t tick_ns, uint32_t lanes, uint64_t *syncs) {
  rk_kernel *k;
  __atomic_store_n(&skew_us, 0, __ATOMIC_RELAXED);
  *rt = skewed_runtime_tick(3600 * RT_SEC, tick_ns);
  k = emu_launch(*rt, &rk_builtin_echo, lanes, 2, 0, 0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  echo_calls(*rt, k, 10, "before");
  *syncs = clock_quiet(k);
  return k;
}

/* The lanes' clock is calibrated against the runtime's time source, which stamps the host's
 * messages, not against CLOCK_REALTIME: with a source 5 s ahead, the offset measured is the
 * source's, and no host stamp is refused. (Before: calibrated against CLOCK_REALTIME, the lanes
 * refused every call, RK_ECLOCK: the stamps were 5 s ahead of their clock.) */
static void test_clock_time_source(void **state) {
  rk_runtime *rt;
  rk_kernel *k;
  rk_kernel_counters st;
  int64_t truth, bound;
  (void)state;
  __atomic_store_n(&skew_us, 5000000, __ATOMIC_RELAXED);
  rt = skewed_runtime(0);
  k = emu_launch(rt, &rk_builtin_echo, 2, 2, 0, 0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  echo_calls(rt, k, 50, "source");
  st = rt_stats(k);
  truth = realtime_minus_monotonic() + 5 * RT_SEC;
  bound = (int64_t)(st.clock_sync_window_ns / 2) + 20000;
  if (st.clock_offset_ns - truth < -bound || st.clock_offset_ns - truth > bound)
    fail_msg("measured offset %lld ns, the time source minus CLOCK_MONOTONIC %lld ns (window %llu ns)",
             (long long)st.clock_offset_ns, (long long)truth, (unsigned long long)st.clock_sync_window_ns);
  clock_finish(rt, k);
}

/* The host clock steps (NTP, settimeofday, a virtual machine's clock set after a pause: the CI
 * failure of stop 25, test_k2k_pipeline refused with RK_ECLOCK, is the likely case): the service
 * loop sees the host clock move against the monotonic one on its next tick and exchanges at
 * once, though the periodic exchange is an hour away; the lanes then answer calls stamped with the
 * new time. Forward 3 s (beyond the drift bound: every call was refused until the next periodic
 * exchange) and back again (the lanes' own stamps would be 3 s ahead of the host's clock). */
static void test_clock_step_recalibrates(void **state) {
  rk_runtime *rt;
  rk_kernel *k;
  uint64_t syncs;
  int64_t off0;
  (void)state;
  k = clock_start(&rt, RT_MS, 1, &syncs);
  off0 = rt_stats(k).clock_offset_ns;
  __atomic_store_n(&skew_us, 3000000, __ATOMIC_RELAXED);
  RT_WAIT_STAT_NS(k, clock_syncs, syncs + 1, RT_SYNC_WAIT_NS);
  offset_moved(k, off0, 3 * RT_SEC);
  offset_loaded(k);
  echo_calls(rt, k, 20, "ahead");
  syncs = clock_quiet(k);
  __atomic_store_n(&skew_us, 0, __ATOMIC_RELAXED);
  RT_WAIT_STAT_NS(k, clock_syncs, syncs + 1, RT_SYNC_WAIT_NS);
  offset_moved(k, off0, 0);
  /* (no calls now: the runtime clock stays 3 s ahead of the stepped-back time until that catches
   * up, and every receiver, a CPU lane too, refuses its stamps meanwhile: the drift rule) */
  clock_finish(rt, k);
}

/* Calls straight across a step of the host clock, none waiting for anything: none is refused. The
 * first sender after the step sees it (its stamp's reading against the monotonic clock, a branch and
 * a reading per send to a device kernel) and exchanges before its message goes out; a lane about to
 * refuse a host stamp first applies a clock request it has not seen yet. The service tick is 1 s
 * here and the periodic exchange an hour away: nothing else corrects the lanes in time. (Before:
 * the calls after the step refused with RK_ECLOCK until the next tick: CI's failure.) */
static void test_clock_step_no_loss(void **state) {
  rk_runtime *rt;
  rk_kernel *k;
  uint64_t syncs;
  (void)state;
  k = clock_start(&rt, RT_SEC, 3, &syncs); /* (lanes 1 and 2 read the control line only every few polls) */
  __atomic_store_n(&skew_us, 3000000, __ATOMIC_RELAXED);
  echo_calls(rt, k, 50, "across");
  clock_finish(rt, k);
}

/* The lanes' offset goes wrong with no step of the host clock to see (a device timer that jumped,
 * a measurement gone bad: here the test writes an offset 3 s short and has the lanes load it). The
 * first call is refused (RK_ECLOCK: its stamp 3 s ahead of their clock); that refusal makes the
 * service loop exchange on its next tick, though the periodic exchange is an hour away, and the
 * calls after it are answered. (Before: refused until the next periodic exchange.) */
static void test_clock_doubt_recalibrates(void **state) {
  rk_runtime *rt;
  rk_kernel *k;
  rk_kernel_counters st;
  uint64_t off, syncs;
  uint32_t req;
  char buf[64];
  rk_msg m;
  (void)state;
  k = clock_start(&rt, RT_MS, 1, &syncs);
  /* relaxed: the service loop wrote it, and exchanges no more for an hour unless something says so */
  off = rk_load_relaxed_sys_u64(&k->ctl->host.clock_offset_ns);
  rk_store_relaxed_sys_u64(&k->ctl->host.clock_offset_ns, off - 3000000000ull);
  req = rk_signals_clock_req(rk_host_add_fetch_release_u64(&k->ctl->host.signals, RK_SIGNAL_CLOCK_ONE));
  offset_loaded(k); /* (the request the test made) */
  assert_int_equal(rk_load_acquire_sys_u32(&k->lane[0].status->clock_ack), req);
  assert_int_equal(rk_call(k, 9, "late", 5, &m, buf, sizeof buf, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_ECLOCK);
  RT_WAIT_STAT_NS(k, clock_syncs, syncs + 1, RT_SYNC_WAIT_NS);
  offset_loaded(k);
  echo_calls(rt, k, 20, "after");
  st = rt_stats(k);
  assert_int_equal(st.clock_rejected, 1);
  assert_int_equal(st.dead_letters, 1);
  emu_finish(rt, k);
}

/* vector_add splits the elements over the block's threads (rk_thread/rk_threads, rk_sync, the
 * collective reserve/commit): 1, 3 and 4 threads. */
static void vector_add(uint32_t threads) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_vector_add, 1, threads, 0, 0);
  rk_vadd_req req;
  rk_vadd_reply out;
  rk_msg m;
  uint32_t i, round;
  uint64_t last = 0;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (round = 0; round < 50; round++) {
    memset(&req, 0, sizeof req);
    req.n = 1 + round % RK_VADD_MAX;
    for (i = 0; i < req.n; i++) {
      req.a[i] = (float)(round + i);
      req.b[i] = (float)(2 * i) + 0.5f;
    }
    RT_OK(rt, rk_call_typed(k, rk_vadd_req, &req, &m, &out, sizeof out, RT_HANG));
    assert_int_equal(out.n, req.n);
    for (i = 0; i < RK_VADD_MAX; i++) assert_true(out.c[i] == (i < req.n ? req.a[i] + req.b[i] : 0.0f));
    assert_true(out.stamp > last); /* the kernel clock only moves forward */
    assert_true(m.env.hlc > out.stamp);
    last = out.stamp;
  }
  emu_finish(rt, k);
}

/* The counter's state lives in "device memory" and survives deactivate/activate. */
static void test_state_survives(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_counter, 1, 3, 0, 0);
  rk_counter_add add;
  rk_counter_value v;
  rk_msg m;
  int64_t i, want = 0;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 1; i <= 20; i++) {
    add.delta = i;
    want += i;
    RT_OK(rt, rk_call_typed(k, rk_counter_add, &add, &m, &v, sizeof v, RT_HANG));
    assert_int_equal(v.total, want);
    assert_int_equal(v.count, (uint64_t)i);
    if (i % 5 == 0) {
      assert_int_equal(rk_kernel_deactivate(k), RK_OK);
      assert_int_equal(rk_kernel_activate(k), RK_OK);
    }
  }
  emu_finish(rt, k);
}

/* Backpressure through a small inbox, replies through a 4-slot outbox drained by a slow receiver
 * (the lane waits for room: the device stall path), then terminate: everything accepted is
 * processed and answered exactly once. */
typedef struct receiver {
  rk_kernel *k;
  uint32_t n, got, bad;
  uint8_t *seen;
} receiver;

static void *receive_all(void *arg) {
  receiver *r = (receiver *)arg;
  rk_msg m;
  uint32_t v;
  while (r->got < r->n) {
    int rc = rk_recv(r->k, &m, &v, sizeof v, RT_HANG);
    if (rc != RK_OK || v >= r->n || r->seen[v]++) {
      r->bad++;
      break;
    }
    r->got++;
    if (r->got % 64 == 0) rt_sleep_ms(1); /* let the outbox fill */
  }
  return NULL;
}

static void test_backpressure_stall_and_drain(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 2, 8, 4);
  receiver r;
  pthread_t t;
  uint32_t i;
  rk_kernel_counters st;
  (void)state;
  memset(&r, 0, sizeof r);
  r.k = k;
  r.n = RT_SANITIZED ? 400 : 3000;
  r.seen = (uint8_t *)calloc(r.n, 1);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(pthread_create(&t, NULL, receive_all, &r), 0);
  for (i = 0; i < r.n; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, 0, NULL)); /* BLOCK policy */
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  pthread_join(t, NULL);
  assert_int_equal(r.bad, 0);
  assert_int_equal(r.got, r.n);
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, r.n);
  assert_int_equal(st.msgs_out, r.n);
  assert_true(st.outbox_stalls > 0); /* the 4-slot outbox made the lane wait */
  free(r.seen);
  rk_kernel_destroy(k);
  emu_runtime_destroy(rt);
}

/* A lane stuck in the stall path (a batch of 8 taken, a 4-slot outbox full, nobody receiving):
 * terminate's wait takes the full outbox's replies into the pending list, so the lane drains
 * everything accepted and terminate returns RK_OK; the 20 replies are then received in order,
 * then RK_ECLOSED. (It used to time out and abort, leaving 16 accepted messages unhandled: the
 * only receiver was the thread in terminate.) */
static void test_terminate_drains_stalled_lane(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 2, 64, 4);
  rk_kernel_counters st;
  rk_msg m;
  uint32_t i, v;
  (void)state;
  /* queued before activation, so the lane's first poll takes a whole batch */
  for (i = 0; i < 20; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, 0, NULL));
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_WAIT_STAT(k, outbox_stalls, 1);
  st = rt_stats(k);
  assert_int_equal(st.msgs_out, 4);
  assert_int_equal(st.msgs_in, 4);          /* handled; the rest of the batch is copied, not handled, */
  assert_int_equal(st.inbox_depth[0], 16);  /* so its slots are not given back */
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, 20); /* every accepted message handled */
  assert_int_equal(st.inbox_depth[0], 0);
  for (i = 0; i < 20; i++) {
    RT_OK(rt, rk_recv(k, &m, &v, sizeof v, RT_HANG));
    assert_int_equal(v, i);
  }
  assert_int_equal(rk_recv(k, &m, &v, sizeof v, RT_HANG), RK_ECLOSED);
  rk_kernel_destroy(k);
  emu_runtime_destroy(rt);
}

static void expect_echo(rk_kernel *k, uint32_t want) {
  rk_msg m;
  uint32_t v = ~want;
  assert_int_equal(rk_recv(k, &m, &v, sizeof v, RT_HANG), RK_OK);
  assert_false(rk_msg_is_error(&m));
  assert_int_equal(v, want);
}

static uint32_t lane0_clock_ack(rk_kernel *k) {
  return rk_load_acquire_sys_u32(&k->lane[0].status->clock_ack); /* a test's look: no pairing needed */
}

/* A lane whose outbox is full waits for its receiver, alive, as a CPU lane does: for three
 * watchdog stall bounds, with messages still queued behind its batch, it is not faulted (its
 * heartbeat moves while it waits), lane 0 keeps answering clock requests, a deactivate is
 * acknowledged, and an error reply that falls due meanwhile waits for room instead of being
 * dropped. Then, with the outbox full again, requests sent without reply are still consumed: they
 * need no room. */
static void test_full_outbox_lane_alive(void **state) {
  rk_runtime *rt = emu_runtime_wd(5 * RT_MS, 400 * RT_MS); /* (a loaded machine may not run a lane for 100 ms) */
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 2, 64, 4);
  uint32_t batch = ((emu_device *)k->backend_data)->params.batch, i, ack, taken;
  rk_kernel_counters st;
  slot s;
  (void)state;
  assert_true(batch >= 5 && batch < 14); /* the bad message among those taken, work behind them */
  /* queued before activation: the lane takes the first and, with its publication, sees a batch more */
  for (i = 0; i < 4; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, 0, NULL));
  good_envelope(k, &s, 0x200, 16); /* a bad checksum: answered with RK_ECORRUPT once room is free */
  rk_envelope_seal(&s.e, s.payload);
  s.payload[3] ^= 0x40;
  inject(k, &s);
  for (i = 4; i < 14; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, 0, NULL));
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_WAIT_STAT(k, outbox_stalls, 1);
  ack = lane0_clock_ack(k);
  rt_sleep_ms(1250); /* three stall bounds */
  st = rt_stats(k);
  /* the lane waits inside its batch: the slots it handled went back to the host (and are counted
   * in), the ones it copied but has not handled stay in the inbox until it has (a restart would
   * take them from there) */
  assert_int_equal(st.msgs_in, 4);
  assert_int_equal(st.inbox_depth[0], 15 - 4);           /* the watchdog sees work waiting */
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE); /* yet the lane is not faulted as stalled */
  assert_int_not_equal(lane0_clock_ack(k), ack);        /* it answered clock requests while waiting */
  assert_int_equal(st.msgs_out, 4);
  assert_int_equal(rk_kernel_deactivate(k), RK_OK); /* acknowledged while waiting */
  for (i = 0; i < 4; i++) expect_echo(k, i);
  /* the rest of what was taken is handled after the deactivate, in order; nothing more */
  expect_error_reply(k, 0x200, RK_ECORRUPT);
  for (i = 4;; i++) {
    rk_msg m;
    uint32_t v;
    int rc = rk_recv(k, &m, &v, sizeof v, 300 * RT_MS);
    if (rc == RK_ETIMEDOUT) break;
    RT_OK(rt, rc);
    assert_int_equal(v, i);
  }
  taken = i + 1; /* the echoes, and the bad one among them */
  assert_true(taken >= 5 && taken < 15);
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, taken);
  assert_int_equal(st.inbox_depth[0], 15 - taken);
  assert_int_equal(st.invalid, 1);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (; i < 14; i++) expect_echo(k, i);
  /* the outbox full again; then requests without reply go through */
  for (i = 0; i < 4; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, 0, NULL));
  RT_WAIT_STAT(k, msgs_out, 19);
  for (i = 0; i < 10; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, RK_SEND_NO_REPLY, NULL));
  RT_WAIT_STAT(k, msgs_in, 29);
  assert_int_equal(rt_stats(k).msgs_out, 19);
  for (i = 0; i < 4; i++) expect_echo(k, i);
  emu_finish(rt, k);
}

/* The slot's layout at the device lane: a request of exactly the payload limit (the slot less the
 * ring's 16 bytes and the envelope) is echoed whole, one byte more (or the limit before the word
 * moved into the slot) is refused; then replies of every length through a 4-slot outbox, laps
 * over: each echoed intact, and no slot's sequence word or reserved word changed by the replies'
 * whole-line writes (rk_dev_copy_out). */
static void test_slot_layout(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 2, 0, 4);
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  check_slot_layout(rt, k);
  emu_finish(rt, k);
}

/* Envelopes the device lane must refuse, pushed straight into lane 0's inbox (bypassing rk_send's
 * checks): an untrustworthy header is dropped and counted; a bad body, a wrong destination or a
 * bad checksum is answered with RK_ECORRUPT; a stamp an hour ahead with RK_ECLOCK (the kernel clock
 * does not jump); a handler error with an error reply carrying its code. */
static void test_refusals(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 2, 0, 0);
  rk_kernel *va = emu_launch(rt, &rk_builtin_vector_add, 1, 2, 0, 0);
  rk_kernel_counters st;
  rk_vadd_req req;
  rk_vadd_reply out;
  slot s;
  rk_msg m;
  rk_hlc future = rk_hlc_make(rk_realtime_us() + 3600ull * 1000000ull, 0);
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_kernel_activate(va), RK_OK);
  good_envelope(k, &s, 0x100, 8);
  s.e.magic = 0xdeadbeefu; /* dropped */
  inject(k, &s);
  good_envelope(k, &s, 0x101, 8);
  s.e.payload_len = 4096; /* beyond the slot */
  inject(k, &s);
  good_envelope(k, &s, 0x102, 8);
  s.e.dst = rk_kernel_id(k) + 1000;
  inject(k, &s);
  good_envelope(k, &s, 0x103, 16);
  rk_envelope_seal(&s.e, s.payload);
  s.payload[3] ^= 0x40;
  inject(k, &s);
  good_envelope(k, &s, 0x104, 4);
  s.e.hlc = future;
  inject(k, &s);
  good_envelope(k, &s, 0x105, 16); /* sealed and intact: handled */
  rk_envelope_seal(&s.e, s.payload);
  inject(k, &s);
  expect_error_reply(k, 0x101, RK_ECORRUPT);
  expect_error_reply(k, 0x102, RK_ECORRUPT);
  expect_error_reply(k, 0x103, RK_ECORRUPT);
  {
    uint8_t buf[64];
    assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
    assert_int_equal(m.status, RK_ECLOCK);
    assert_int_equal(m.env.correlation_id, 0x104);
    assert_true(m.env.hlc < future); /* the kernel clock did not move to the bad stamp */
    assert_int_equal(rk_recv(k, &m, buf, sizeof buf, RT_HANG), RK_OK);
    assert_false(rk_msg_is_error(&m));
    assert_int_equal(m.env.correlation_id, 0x105);
    assert_memory_equal(buf, s.payload, 16);
  }
  st = rt_stats(k);
  assert_int_equal(st.invalid, 4);
  assert_int_equal(st.clock_rejected, 1);
  assert_int_equal(st.msgs_in, 6);
  { /* the host keeps a dead letter of each refusal the lane answered (the dropped one: counted only) */
    rk_dead_letter dl[8];
    uint64_t total = 0;
    int i;
    assert_int_equal(rk_kernel_dead_letters(k, dl, 8, &total), 4);
    assert_int_equal(total, 4);
    for (i = 0; i < 4; i++) {
      assert_int_equal(dl[i].env.correlation_id, 0x101 + i);
      assert_int_equal(dl[i].reason, i < 3 ? RK_ECORRUPT : RK_ECLOCK);
      assert_int_equal(dl[i].lane, 0);
      assert_int_equal(dl[i].payload_len, 0);
      assert_non_null(strstr(dl[i].why, "device lane"));
    }
    assert_int_equal(rt_stats(k).dead_letters, 4);
  }
  /* a handler error: vector_add refuses n > RK_VADD_MAX */
  memset(&req, 0, sizeof req);
  req.n = RK_VADD_MAX + 1;
  assert_int_equal(rk_call_typed(va, rk_vadd_req, &req, &m, &out, sizeof out, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EMSGSIZE);
  assert_int_equal(rt_stats(va).handler_errors, 1);
  rk_kernel_destroy(va);
  rk_kernel_destroy(k);
  emu_runtime_destroy(rt);
}

/* The handler's result on the device, as on the CPU: 0 without a reply to a request that wants
 * one, or a positive value, becomes an RK_EHANDLER error reply (the caller does not wait out its
 * timeout), counted; an error after a reply adds nothing; a request sent without reply gets
 * nothing either way. (rk_emu_kernel_results: a test kernel of the emulated device.) */
static int results_cpu(rk_ctx *ctx, const rk_msg *in) { (void)ctx; (void)in; return 0; }

static void test_handler_results(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel_desc d = rt_desc("results", results_cpu);
  rk_kernel *k;
  rk_msg m;
  uint32_t v = 5, back = 0;
  (void)state;
  d.cuda_entry = "rk_emu_kernel_results";
  k = emu_launch(rt, &d, 1, 2, 0, 0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  assert_int_equal(rk_call(k, 1, &v, sizeof v, &m, &back, sizeof back, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EHANDLER);
  assert_int_equal(rk_call(k, 2, &v, sizeof v, &m, &back, sizeof back, RT_HANG), RK_EHANDLER);
  assert_int_equal(m.status, RK_EHANDLER);
  RT_OK(rt, rk_call(k, 3, &v, sizeof v, &m, &back, sizeof back, RT_HANG)); /* the reply, not the error */
  assert_int_equal(back, 5);
  RT_OK(rt, rk_send(k, 1, &v, sizeof v, RK_SEND_NO_REPLY, NULL)); /* nothing wanted: nothing comes */
  v = 6;
  RT_OK(rt, rk_call(k, 9, &v, sizeof v, &m, &back, sizeof back, RT_HANG));
  assert_int_equal(back, 6);
  assert_int_equal(rt_stats(k).handler_errors, 3);
  assert_int_equal(rt_stats(k).msgs_out, 4);
  emu_finish(rt, k);
}

/* Callbacks on device lanes: the lanes cannot wake the loop, and the loop's timer here runs once a
 * minute, so every reply reaches its callback through the device-reply poller (devpoll.c) or not
 * at all within the hang bound. Two lanes, each reply delivered exactly once, on the loop's thread;
 * stopped callbacks leave later replies to rk_recv. */
typedef struct cb_seen {
  pthread_mutex_t lock;
  uint32_t got, bad;
  uint8_t seen[600];
  pthread_t thread; /* the thread the first callback ran on */
  int threads;      /* distinct threads seen */
} cb_seen;

static void on_echo(rk_kernel *k, const rk_msg *m, void *user) {
  cb_seen *c = (cb_seen *)user;
  uint32_t v;
  (void)k;
  pthread_mutex_lock(&c->lock);
  if (c->got == 0) c->thread = pthread_self();
  if (!pthread_equal(c->thread, pthread_self())) c->threads++;
  if (m->len != sizeof v || m->status != 0) {
    c->bad++;
  } else {
    memcpy(&v, m->payload, sizeof v);
    if (v >= sizeof c->seen || c->seen[v]++) c->bad++;
  }
  c->got++;
  pthread_mutex_unlock(&c->lock);
}

static uint32_t cb_got(cb_seen *c) {
  uint32_t n;
  pthread_mutex_lock(&c->lock);
  n = c->got;
  pthread_mutex_unlock(&c->lock);
  return n;
}

static void test_callbacks_without_timer(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  rk_kernel *k;
  cb_seen c;
  uint32_t i, n = RT_SANITIZED ? 200 : 500, v;
  uint64_t start;
  rk_msg m;
  (void)state;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  o.watchdog_interval_ns = 60 * RT_SEC; /* the loop's timer would deliver nothing within the test */
  o.clock_sync_interval_ns = UINT64_MAX;
  rt = rt_create_opts(&o);
  emu_install(rt);
  k = emu_launch(rt, &rk_builtin_echo, 2, 2, 0, 0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_OK(rt, rk_recv_start(k, on_echo, &c));
  for (i = 0; i < n; i++) {
    RT_OK(rt, rk_send_key(k, i, 5, &i, sizeof i, 0, NULL));
    if (i % 50 == 49) rt_sleep_ms(2); /* gaps: the poller goes back to sleep in between */
  }
  start = rt_now_ns();
  while (cb_got(&c) < n) {
    if ((int64_t)(rt_now_ns() - start) > RT_HANG) fail_msg("%u of %u replies reached the callback", cb_got(&c), n);
    rt_sleep_ms(1);
  }
  assert_int_equal(rk_recv_stop(k), RK_OK);
  assert_int_equal(c.bad, 0);
  assert_int_equal(c.threads, 0); /* every callback on one thread: the loop's */
  assert_false(pthread_equal(c.thread, pthread_self()));
  /* stopped: replies wait for rk_recv */
  v = 7;
  RT_OK(rt, rk_send(k, 5, &v, sizeof v, 0, NULL));
  assert_int_equal(rk_recv(k, &m, &i, sizeof i, RT_HANG), RK_OK);
  assert_int_equal(i, 7);
  assert_int_equal(cb_got(&c), n);
  emu_finish(rt, k);
  pthread_mutex_destroy(&c.lock);
}

/* The device-reply poller goes back to sleep after a request that will never be answered (sent
 * without reply): it polls after a send for a bounded time, not for as long as the counts of sent
 * and received differ. Before, one such send kept it polling a core for good. Counted in passes
 * over the kernels: asleep, it makes one per nap (50-500 us), awake millions a second. */
static void test_poller_sleeps_after_no_reply(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 1, 0, 0);
  cb_seen c;
  uint32_t v = 1;
  uint64_t before, after;
  (void)state;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_OK(rt, rk_recv_start(k, on_echo, &c));
  RT_OK(rt, rk_send(k, 5, &v, sizeof v, RK_SEND_NO_REPLY, NULL));
  rt_sleep_ms(100); /* well past the 5 ms it may poll after a send */
  before = rk__devpoll_scans(rt);
  rt_sleep_ms(300);
  after = rk__devpoll_scans(rt);
  assert_true(after - before < 3000); /* 300 ms of 50-500 us naps: at most 6000 if every nap were 50 us */
  assert_int_equal(rk_recv_stop(k), RK_OK);
  emu_finish(rt, k);
  pthread_mutex_destroy(&c.lock);
}

/* Restart on the device (rk_kernel_restart, RK_FAULT_RESTART): the old lanes stop where the abort
 * finds them: a lane stalled on a full outbox with a batch of 8 taken leaves the messages it did not
 * handle in the inbox (the head it publishes covers only what it handled), and the new lanes take
 * them from there: every message answered exactly once, the counters going on from the old lanes',
 * the stamps above every earlier one. */
static void test_restart_unhandled_stay(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_echo, 1, 2, 64, 4);
  rk_kernel_counters st;
  rk_msg m;
  rk_hlc last = 0;
  uint32_t i, v, n = 20, seen[20];
  (void)state;
  memset(seen, 0, sizeof seen);
  for (i = 0; i < n; i++) RT_OK(rt, rk_send(k, 5, &i, sizeof i, 0, NULL)); /* queued: a whole batch is taken */
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  RT_WAIT_STAT(k, outbox_stalls, 1); /* 4 replies published, the lane waits for room */
  assert_int_equal(rk_kernel_restart(k, RK_RESTART_KEEP_STATE), RK_ESTATE); /* not FAULTED */
  rk__kernel_fault(k, RK_EHANDLER, "injected for the test");
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  RT_OK(rt, rk_kernel_restart(k, RK_RESTART_KEEP_STATE));
  assert_int_equal(rk_kernel_state(k), RK_STATE_ACTIVE);
  for (i = 0; i < n; i++) {
    RT_OK(rt, rk_recv(k, &m, &v, sizeof v, RT_HANG));
    assert_true(v < n);
    seen[v]++;
    assert_true(m.env.hlc > last);
    last = m.env.hlc;
  }
  for (i = 0; i < n; i++) assert_int_equal(seen[i], 1);
  assert_int_equal(rk_recv(k, &m, &v, sizeof v, 20 * RT_MS), RK_ETIMEDOUT); /* nothing twice */
  st = rt_stats(k);
  assert_int_equal(st.msgs_in, n); /* the new lanes count on from the old ones' counts */
  assert_int_equal(st.msgs_out, n);
  assert_int_equal(st.restarts, 1);
  emu_finish(rt, k);
}

/* The counter's device state across restarts: kept (copied back from device memory when the old
 * lanes exit), then re-initialised; the kernel clock goes on above the stamps before. */
static void test_restart_state(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel *k = emu_launch(rt, &rk_builtin_counter, 1, 3, 0, 0);
  rk_counter_add add;
  rk_counter_value v;
  rk_msg m;
  rk_hlc last = 0;
  int64_t i, want = 0;
  (void)state;
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  for (i = 1; i <= 10; i++) {
    add.delta = i;
    want += i;
    RT_OK(rt, rk_call_typed(k, rk_counter_add, &add, &m, &v, sizeof v, RT_HANG));
    last = m.env.hlc;
  }
  assert_int_equal(v.total, want);
  rk__kernel_fault(k, RK_EHANDLER, "injected for the test");
  RT_OK(rt, rk_kernel_restart(k, RK_RESTART_KEEP_STATE));
  add.delta = 1;
  RT_OK(rt, rk_call_typed(k, rk_counter_add, &add, &m, &v, sizeof v, RT_HANG));
  assert_int_equal(v.total, want + 1); /* the state the old lanes left */
  assert_int_equal(v.count, 11);
  assert_true(m.env.hlc > last);
  last = m.env.hlc;
  rk__kernel_fault(k, RK_EHANDLER, "injected for the test");
  RT_OK(rt, rk_kernel_restart(k, RK_RESTART_RESET_STATE));
  RT_OK(rt, rk_call_typed(k, rk_counter_add, &add, &m, &v, sizeof v, RT_HANG));
  assert_int_equal(v.total, 1); /* zeroed */
  assert_int_equal(v.count, 1);
  assert_true(m.env.hlc > last);
  assert_int_equal(rt_stats(k).restarts, 2);
  assert_int_equal(rt_stats(k).msgs_in, 12);
  /* after terminate the host copy is the kernel's final state */
  assert_int_equal(rk_kernel_terminate(k, RT_HANG), RK_OK);
  assert_int_equal(((rk_counter_state *)k->state)->total, 1);
  rk_kernel_destroy(k);
  emu_runtime_destroy(rt);
}

/* ---------------------------------------- K2K on the device ---------------------------------- */
/* rk_emu_kernel_k2k (src/device/emulation_lanes.cpp): the device lane's K2K sends, receives,
 * forwards, publications and answers, run by the emulated device. State: 16 words. */
static int k2k_cpu_stub(rk_ctx *ctx, const rk_msg *in) { (void)ctx; (void)in; return 0; }

static rk_kernel_desc k2k_desc(const char *name) {
  rk_kernel_desc d = rt_desc(name, k2k_cpu_stub);
  d.cuda_entry = "rk_emu_kernel_k2k";
  d.state_size = 16 * sizeof(uint64_t);
  return d;
}

static void k2k_state(rk_kernel *k, uint64_t st[16]) {
  assert_int_equal(rk_kernel_read_state(k, st, 16 * sizeof(uint64_t)), (int)(16 * sizeof(uint64_t)));
}

/* A launched and activated graph of K2K test kernels on the emulated device: kernel i (node i)
 * named spec[i].name, with spec[i].cap K2K slots and spec[i].lanes lanes (0: the defaults); the
 * routes "i>j" in `routes` (route numbers in that order per source); the kernels whose bit is set
 * in `subs` subscribed to topic 0. */
typedef struct k2k_spec {
  const char *name;
  uint32_t cap, lanes;
} k2k_spec;

static rk_graph *k2k_graph(rk_runtime *rt, const k2k_spec *spec, uint32_t n, const char *routes, uint32_t subs) {
  rk_graph *g;
  uint32_t i, node;
  RT_OK(rt, rk_graph_create(rt, &g));
  for (i = 0; i < n; i++) {
    rk_kernel_desc d = k2k_desc(spec[i].name);
    rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
    lo.lanes = spec[i].lanes;
    RT_OK(rt, rk_graph_add(g, &d, spec[i].lanes ? &lo : NULL, spec[i].cap, &node));
    assert_int_equal(node, i);
    if ((subs >> i) & 1u) RT_OK(rt, rk_graph_subscribe(g, i, 0));
  }
  for (; routes && *routes; routes++)
    if (routes[1] == '>') {
      RT_OK(rt, rk_graph_connect(g, (uint32_t)(routes[0] - '0'), (uint32_t)(routes[2] - '0'), NULL));
      routes += 2;
    }
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  return g;
}

/* A three-stage pipeline: the host calls the first stage, each stage passes the request on
 * (rk_forward), the last one answers; the answer comes back over K2K to the first stage's lane and
 * from there to the caller, stamped above everything before. Then the graph terminates upstream
 * first, nothing left behind. */
static void test_k2k_pipeline(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t n0 = 0, n1 = 1, n2 = 2;
  uint32_t i;
  rk_hlc last = 0;
  rk_msg m;
  (void)state;
  g = k2k_graph(rt, (const k2k_spec[]){{"parse", 0, 0}, {"enrich", 0, 0}, {"aggregate", 0, 0}}, 3, "0>1 1>2", 0);
  for (i = 0; i < 200; i++) {
    uint64_t v = i, back = 0;
    RT_OK(rt, rk_call(rk_graph_kernel(g, n0), 1, &v, sizeof v, &m, &back, sizeof back, RT_HANG));
    assert_int_equal(back, i + 3); /* three stages, one each */
    assert_true(m.env.hlc > last);
    last = m.env.hlc;
    if (i == 149) { /* a restart of the first two stages: their lanes' K2K counters go on */
      rk__kernel_fault(rk_graph_kernel(g, n0), RK_EHANDLER, "injected for the test");
      RT_OK(rt, rk_kernel_restart(rk_graph_kernel(g, n0), RK_RESTART_KEEP_STATE));
      rk__kernel_fault(rk_graph_kernel(g, n1), RK_EHANDLER, "injected for the test");
      RT_OK(rt, rk_kernel_restart(rk_graph_kernel(g, n1), RK_RESTART_KEEP_STATE));
      assert_int_equal(rt_stats(rk_graph_kernel(g, n0)).k2k_out, 150);
    }
  }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  assert_int_equal(rt_stats(rk_graph_kernel(g, n0)).k2k_out, 200);
  assert_int_equal(rt_stats(rk_graph_kernel(g, n0)).k2k_in, 200); /* the answers */
  assert_int_equal(rt_stats(rk_graph_kernel(g, n0)).msgs_out, 200);
  assert_int_equal(rt_stats(rk_graph_kernel(g, n1)).k2k_in, 200);
  assert_int_equal(rt_stats(rk_graph_kernel(g, n1)).k2k_out, 200);
  assert_int_equal(rt_stats(rk_graph_kernel(g, n2)).k2k_in, 200);
  assert_int_equal(rt_stats(rk_graph_kernel(g, n2)).k2k_out, 200); /* its answers, over K2K */
  assert_int_equal(rk_graph_kernel(g, n0)->lane[0].status->k2k_owed, 0); /* every answer came back */
  assert_int_equal(rt_stats(rk_graph_kernel(g, n2)).msgs_out, 0);
  rt_graph_no_clock_refusals(g, 3);
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* Fan-in from two kernels of two lanes each into a sink whose K2K inbox has two slots: the senders' rk_send_to find
 * it full (RK_EAGAIN), their handlers ask to run again, and every message arrives exactly once, in
 * order per source; terminate drains the senders first. */
static void test_k2k_fan_in_backpressure(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t a = 0, b = 1, c = 2;
  uint32_t i;
  uint64_t st[16], want = 0;
  const uint32_t n = 200; /* per sender; the terminate below waits up to a minute (a loaded machine) */
  (void)state;
  /* four sources: two kernels of two lanes; a sink whose K2K inbox has two slots */
  g = k2k_graph(rt, (const k2k_spec[]){{"a", 0, 2}, {"b", 0, 2}, {"sink", 2, 0}}, 3, "0>2 1>2", 0);
  for (i = 1; i <= n; i++) { /* source = kernel * 2 + lane (keyed: lane i % 2) */
    uint64_t wa[2] = {i % 2, i}, wb[2] = {2 + i % 2, i};
    RT_OK(rt, rk_send_key(rk_graph_kernel(g, a), i % 2, 2, wa, sizeof wa, RK_SEND_NO_REPLY, NULL));
    RT_OK(rt, rk_send_key(rk_graph_kernel(g, b), i % 2, 2, wb, sizeof wb, RK_SEND_NO_REPLY, NULL));
    want += 2 * (uint64_t)i;
  }
  RT_OK(rt, rk_graph_terminate(g, 6 * RT_HANG));
  k2k_state(rk_graph_kernel(g, c), st);
  assert_int_equal(st[0], 2 * n);  /* every message, once */
  assert_int_equal(st[1], want);   /* no duplicate made up for a loss */
  assert_int_equal(st[2], 0);      /* in order per source */
  assert_int_equal(rt_stats(rk_graph_kernel(g, c)).k2k_in, 2 * n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, a)).k2k_out + rt_stats(rk_graph_kernel(g, b)).k2k_out, 2 * n);
  rt_graph_no_clock_refusals(g, 3); /* a refused host message is one the senders never passed on */
  print_message("K2K sends refused (sink full) and run again: %llu\n",
                (unsigned long long)(rt_stats(rk_graph_kernel(g, a)).k2k_refused +
                                     rt_stats(rk_graph_kernel(g, b)).k2k_refused));
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* Topics: a handler's rk_publish reaches every subscriber (the count it returns), the host's
 * rk_graph_publish too (through the subscribers' host inboxes on a device); a send over a route
 * that does not exist is RK_EINVAL, counted as refused. */
static void test_k2k_publish_and_refusals(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t a = 0, b = 1, c = 2;
  uint64_t w[2] = {3, 1}, st[16];
  int32_t rc = 0;
  rk_msg m;
  (void)state;
  g = k2k_graph(rt, (const k2k_spec[]){{"pub", 0, 0}, {"sub1", 0, 0}, {"sub2", 0, 0}}, 3, "", 6);
  RT_OK(rt, rk_call(rk_graph_kernel(g, a), 4, w, sizeof w, &m, &rc, sizeof rc, RT_HANG));
  assert_int_equal(rc, 2);
  w[1] = 2;
  assert_int_equal(rk_graph_publish(g, 0, 3, w, sizeof w), 2);
  RT_OK(rt, rk_call(rk_graph_kernel(g, a), 5, w, sizeof w, &m, &rc, sizeof rc, RT_HANG));
  assert_int_equal(rc, RK_EINVAL);
  assert_int_equal(rt_stats(rk_graph_kernel(g, a)).k2k_refused, 1);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  k2k_state(rk_graph_kernel(g, b), st);
  assert_int_equal(st[0], 2);
  assert_int_equal(st[1], 3); /* seq 1 (the handler's) and 2 (the host's) */
  k2k_state(rk_graph_kernel(g, c), st);
  assert_int_equal(st[0], 2);
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* A cycle A -> B -> A: a message passed back and forth 100 times, every hop stamped above the one
 * before (HLC along the path), nothing lost, no deadlock. */
static void test_k2k_cycle(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t a = 0, b = 1;
  uint64_t w[2] = {100, 0}, sa[16], sb[16];
  int spins = 0;
  (void)state;
  g = k2k_graph(rt, (const k2k_spec[]){{"ping", 0, 0}, {"pong", 0, 0}}, 2, "0>1 1>0", 0);
  RT_OK(rt, rk_send(rk_graph_kernel(g, a), 6, w, sizeof w, RK_SEND_NO_REPLY, NULL));
  /* 100 hops over K2K, then the last message stops at its receiver */
  while (rt_stats(rk_graph_kernel(g, a)).k2k_in + rt_stats(rk_graph_kernel(g, b)).k2k_in < 100 && spins++ < 10000)
    rk__sleep_ns(1000000);
  assert_int_equal(rt_stats(rk_graph_kernel(g, a)).k2k_in + rt_stats(rk_graph_kernel(g, b)).k2k_in, 100);
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  k2k_state(rk_graph_kernel(g, a), sa);
  k2k_state(rk_graph_kernel(g, b), sb);
  assert_int_equal(sa[3] + sb[3], 101); /* the host's message and 100 hops */
  assert_int_equal(sa[5] + sb[5], 0);   /* every stamp above the one before */
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* Topic fan-out with a slow subscriber whose K2K inbox has two slots: the publisher never waits;
 * the fast subscriber gets every message, the slow one what fit, the rest counted as its drops,
 * and the publisher's counts add up. */
static void test_k2k_slow_subscriber(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t a = 0, b = 1, c = 2;
  uint32_t i;
  uint64_t st[16], got = 0;
  rk_msg m;
  (void)state;
  g = k2k_graph(rt, (const k2k_spec[]){{"pub", 0, 0}, {"fast", 0, 0}, {"slow", 2, 0}}, 3, "", 6);
  for (i = 1; i <= 60; i++) {
    uint64_t w[2] = {7, i}; /* source 7: the sink's busy loop */
    int32_t rc = -1;
    RT_OK(rt, rk_call(rk_graph_kernel(g, a), 4, w, sizeof w, &m, &rc, sizeof rc, RT_HANG));
    assert_true(rc >= 1 && rc <= 2);
    got += (uint64_t)rc;
  }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  k2k_state(rk_graph_kernel(g, b), st);
  assert_int_equal(st[0], 60);
  assert_int_equal(st[2], 0);
  k2k_state(rk_graph_kernel(g, c), st);
  assert_int_equal(st[2], 0); /* what it got, in order */
  assert_int_equal(st[0] + rt_stats(rk_graph_kernel(g, c)).k2k_dropped, 60);
  assert_int_equal(got, 60 + st[0]);
  print_message("slow subscriber: %llu of 60 taken, %llu dropped\n", (unsigned long long)st[0],
                (unsigned long long)rt_stats(rk_graph_kernel(g, c)).k2k_dropped);
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

static int k2k_refused_some(void *k) { return rt_stats((rk_kernel *)k).k2k_refused > 0; }

static int either_faulted(void *g) {
  return rk_kernel_state(rk_graph_kernel((rk_graph *)g, 0)) == RK_STATE_FAULTED ||
         rk_kernel_state(rk_graph_kernel((rk_graph *)g, 1)) == RK_STATE_FAULTED;
}

/* k, whose terminate timed out and aborted its lanes, ends TERMINATED: its lanes heard the abort
 * and leave. A terminate gives them a fixed grace (RK__ABORT_GRACE_NS, 100 ms) and says FAULTED
 * ("lanes still running") when they have not left by then, which on a loaded machine an emulated
 * lane that did hear the abort may not have (not scheduled); a second terminate waits for them
 * again, as test_terminate_drains_stalled_lane's does. Lanes that never hear the abort stay: k stays FAULTED. */
static void terminated_after_abort(rk_kernel *k) {
  if (rk_kernel_state(k) != RK_STATE_TERMINATED) (void)rk_kernel_terminate(k, RT_HANG);
  assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
}

/* A lane whose handler keeps asking to run again (its destination deactivated, two slots full)
 * still hears the host: terminate's drain cannot finish, so it times out and aborts, and the
 * lanes leave (the kernel is TERMINATED, not left running). */
static void test_k2k_retry_hears_abort(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t a = 0, c = 1;
  uint32_t i;
  (void)state;
  g = k2k_graph(rt, (const k2k_spec[]){{"sender", 0, 0}, {"stopped", 2, 0}}, 2, "0>1", 0);
  RT_OK(rt, rk_kernel_deactivate(rk_graph_kernel(g, c)));
  for (i = 1; i <= 8; i++) {
    uint64_t w[2] = {0, i};
    RT_OK(rt, rk_send(rk_graph_kernel(g, a), 2, w, sizeof w, RK_SEND_NO_REPLY, NULL));
  }
  /* two sent, the third retried over and over (polled: a loaded machine may take its time) */
  if (!rt_wait_for(k2k_refused_some, rk_graph_kernel(g, a), 3 * RT_HANG)) fail_msg("no K2K send was refused");
  assert_int_equal(rk_kernel_terminate(rk_graph_kernel(g, a), 200000000), RK_ETIMEDOUT);
  terminated_after_abort(rk_graph_kernel(g, a));
  RT_OK(rt, rk_graph_terminate(g, RT_HANG)); /* the stopped one drains what it got */
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* A cycle A -> B -> A whose two-slot K2K inboxes cannot hold what circulates: each lane retries on
 * the other's full inbox. Never a silent hang: the watchdog sees the cycle (the lanes' k2k_waits_on)
 * make no progress and faults the kernel with RK_EDEADLK naming it; terminate then aborts. */
static void test_k2k_deadlock_detected(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  const uint32_t a = 0, b = 1;
  uint32_t i;
  (void)state;
  g = k2k_graph(rt, (const k2k_spec[]){{"left", 2, 0}, {"right", 2, 0}}, 2, "0>1 1>0", 0);
  for (i = 0; i < 16; i++) { /* 32 ping-pongs of a million hops each: more than the cycle holds */
    uint64_t w[2] = {1000000, 0};
    RT_OK(rt, rk_send(rk_graph_kernel(g, a), 6, w, sizeof w, RK_SEND_NO_REPLY, NULL));
    RT_OK(rt, rk_send(rk_graph_kernel(g, b), 6, w, sizeof w, RK_SEND_NO_REPLY, NULL));
  }
  /* polled against a generous deadline (a loaded machine): a hang fails, a slow detection does not */
  if (!rt_wait_for(either_faulted, g, 3 * RT_HANG)) fail_msg("the K2K deadlock was not detected");
  {
    rk_kernel *f = rk_kernel_state(rk_graph_kernel(g, a)) == RK_STATE_FAULTED ? rk_graph_kernel(g, a)
                                                                             : rk_graph_kernel(g, b);
    char msg[256];
    int code = rk_kernel_error(f, msg, sizeof msg);
    assert_int_equal(code, RK_EDEADLK);
    assert_non_null(strstr(msg, "deadlock"));
    print_message("%s\n", msg);
  }
  (void)rk_graph_terminate(g, 200000000); /* the drains cannot finish: aborted */
  terminated_after_abort(rk_graph_kernel(g, a));
  terminated_after_abort(rk_graph_kernel(g, b));
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* A remote (MPI) node in a graph on the device, with a fake transport in place of the bridge (the
 * test's thread drains and delivers, as the bridge's does): the device lane's rk_send_to pushes into
 * the node's outbound ring (host-mapped memory, RK_DEV_K2K_SYS), which fills (RK_EAGAIN, the message
 * runs again) and is drained by the host in order; what the transport delivers into a device kernel
 * goes through its lanes' transport inboxes (counted in k2k_in), a request from the remote side is answered
 * over K2K into the remote node's ring; once the route closes, rk_send_to says RK_ECLOSED. */
static int dfake_start(void *self, rk_graph *g) {
  return rk_graph_remote_shape(g, *(uint32_t *)self, 2, 64); /* the remote kernel: 2 lanes */
}
static int dfake_flush(void *self, rk_graph *g, uint32_t node, int64_t timeout_ns) {
  (void)self, (void)g, (void)node, (void)timeout_ns;
  return RK_OK;
}
static void dfake_stop(void *self, rk_graph *g) { (void)self, (void)g; }
static const rk_transport dfake_ops = {sizeof(rk_transport), "fake", 0, 2, dfake_start, dfake_flush, dfake_stop, NULL, NULL};

static int ring_holds(void *arg) { return rk_ring_count((rk_ring *)arg) >= 4; }
static int refused_some(void *arg) { return rt_stats((rk_kernel *)arg).k2k_refused > 0; }

static void test_k2k_remote_node(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  rk_kernel_desc ds = k2k_desc("source"), dk = k2k_desc("sink");
  uint32_t src, snk, far, i, got = 0;
  rk_graph_node_info fi, si;
  rk_ring *ring;
  uint64_t st[16], pos = 0, n = 32, last = 0;
  int32_t rc = 0;
  rk_msg m;
  (void)state;
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &dfake_ops, &far));
  RT_OK(rt, rk_graph_add(g, &ds, NULL, 0, &src));
  RT_OK(rt, rk_graph_add(g, &dk, NULL, 0, &snk));
  RT_OK(rt, rk_graph_add_remote(g, 1, "far", 4, &far));
  RT_OK(rt, rk_graph_connect(g, src, far, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  memset(&fi, 0, sizeof fi);
  fi.size = sizeof fi;
  memset(&si, 0, sizeof si);
  si.size = sizeof si;
  RT_OK(rt, rk_graph_node(g, far, &fi));
  RT_OK(rt, rk_graph_node(g, snk, &si));
  assert_int_equal(fi.lanes, 2);
  assert_non_null(ring = rk_graph_remote_ring(g, far, 0)); /* lane 0: the source's lane 0 sends there */
  for (i = 1; i <= n; i++) {
    uint64_t w[2] = {0, i};
    RT_OK(rt, rk_send(rk_graph_kernel(g, src), 2, w, sizeof w, RK_SEND_NO_REPLY, NULL));
  }
  /* nobody drains yet: the ring of 4 fills, the handler's rk_send_to gets RK_EAGAIN and runs again */
  assert_true(rt_wait_for(ring_holds, ring, RT_HANG));
  assert_true(rt_wait_for(refused_some, rk_graph_kernel(g, src), RT_HANG));
  assert_int_equal(rk_ring_count(ring), 4);
  /* the transport's part: drain in order, deliver into the device sink (its transport inbox) */
  for (uint64_t t0 = rt_now_ns(); got < n && rt_now_ns() - t0 < (uint64_t)RT_HANG;) {
    uint32_t k = rk_ring_peek_n(ring, 8, &pos), j;
    for (j = 0; j < k; j++) {
      rk_envelope e;
      uint64_t w[2];
      memcpy(&e, rk_ring_slot(ring, pos + j), sizeof e);
      assert_int_equal(e.dst, fi.kernel_id);
      assert_true(e.flags & RK_ENV_F_K2K);
      assert_int_equal(e.type, 3);
      assert_int_equal(e.payload_len, sizeof w);
      memcpy(w, rk_ring_slot(ring, pos + j) + RK_ENVELOPE_SIZE, sizeof w);
      assert_int_equal(w[1], got + 1); /* in order, each once */
      assert_true(e.hlc > last);       /* stamped by the lane's publication, in order */
      last = e.hlc;
      e.dst = si.kernel_id; /* (a K2K envelope, as the bridge delivers it) */
      while ((rc = rk_graph_deliver(g, snk, 0, &e, w)) == RK_EAGAIN) rk__sleep_ns(100000);
      RT_OK(rt, rc);
      got++;
    }
    if (k) rk_ring_release_n(ring, k);
    else rk__sleep_ns(100000);
  }
  assert_int_equal(got, n);
  /* a request from the remote side (origin: the remote node) into the sink, whose answer goes back
   * over K2K into the remote node's ring of the origin's lane */
  {
    rk_envelope e;
    uint64_t v = 41, back = 0;
    rk_ring *r1 = rk_graph_remote_ring(g, far, 1);
    uint32_t k = 0;
    rk_envelope_init(&e, 1, sizeof v, RK_ENV_F_K2K);
    e.dst = si.kernel_id;
    e.src = e.node = fi.kernel_id;
    e.origin = fi.kernel_id;
    e.correlation_id = 77;
    e.lane = 1;
    RT_OK(rt, rk_clock_tick(rk_runtime_clock(rt), &e.hlc));
    RT_OK(rt, rk_graph_deliver(g, snk, 0, &e, &v));
    for (uint64_t t0 = rt_now_ns(); k == 0 && rt_now_ns() - t0 < (uint64_t)RT_HANG;)
      if ((k = rk_ring_peek_n(r1, 1, &pos)) == 0) rk__sleep_ns(100000);
    assert_int_equal(k, 1);
    memcpy(&e, rk_ring_slot(r1, pos), sizeof e);
    assert_true((e.flags & (RK_ENV_F_K2K | RK_ENV_F_REPLY)) == (RK_ENV_F_K2K | RK_ENV_F_REPLY));
    assert_int_equal(e.correlation_id, 77);
    assert_int_equal(e.origin, fi.kernel_id);
    memcpy(&back, rk_ring_slot(r1, pos) + RK_ENVELOPE_SIZE, sizeof back);
    assert_int_equal(back, 42); /* the stage's v + 1 (no route on: it answered) */
    rk_ring_release_n(r1, 1);
  }
  /* the transport's own error answer to a refused request from the remote side goes into the remote
   * node's host ring, never into the ring the device's lanes claim in */
  {
    rk_envelope e;
    rk_ring *h = rk_graph_remote_host_ring(g, far, 1);
    assert_non_null(h);
    assert_null(rk_graph_remote_host_ring(g, snk, 0)); /* not a remote node */
    rk_envelope_init(&e, 1, 0, RK_ENV_F_K2K);
    e.dst = si.kernel_id;
    e.origin = fi.kernel_id;
    e.correlation_id = 78;
    e.lane = 1;
    RT_OK(rt, rk_graph_answer_error(g, si.kernel_id, &e, RK_ECLOCK));
    assert_int_equal(rk_ring_count(rk_graph_remote_ring(g, far, 1)), 0);
    assert_int_equal(rk_ring_peek_n(h, 4, &pos), 1);
    memcpy(&e, rk_ring_slot(h, pos), sizeof e);
    assert_true((e.flags & (RK_ENV_F_REPLY | RK_ENV_F_ERROR)) == (RK_ENV_F_REPLY | RK_ENV_F_ERROR));
    assert_int_equal(e.correlation_id, 78);
    rk_ring_release_n(h, 1);
  }
  /* the peer is lost: the route closes, the device handler's rk_send_to gets RK_ECLOSED at once */
  assert_int_equal(rk_graph_remote_close(g, far), 0);
  {
    uint64_t w[2] = {0, n + 1};
    RT_OK(rt, rk_call(rk_graph_kernel(g, src), 2, w, sizeof w, &m, &rc, sizeof rc, RT_HANG));
    assert_int_equal(rc, RK_ECLOSED);
  }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  k2k_state(rk_graph_kernel(g, snk), st);
  assert_int_equal(st[0], n);
  assert_int_equal(st[1], n * (n + 1) / 2);
  assert_int_equal(st[2], 0);
  assert_int_equal(rt_stats(rk_graph_kernel(g, snk)).k2k_in, n + 1); /* the stream and the request */
  assert_int_equal(rt_stats(rk_graph_kernel(g, snk)).msgs_in, 0);
  assert_int_equal(rt_stats(rk_graph_kernel(g, snk)).k2k_out, 1);  /* its answer */
  assert_int_equal(rt_stats(rk_graph_kernel(g, src)).k2k_out, n);
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

/* The transport's part of a request the device lane passed on to the remote node: its answer (the
 * remote stage's v + 1), built as the bridge delivers one (origin, correlation and lane kept). */
static int far_answer(rk_graph *g, uint32_t node, uint32_t far_id, const uint8_t *req) {
  rk_envelope e, a;
  uint64_t v;
  memcpy(&e, req, sizeof e);
  memcpy(&v, req + RK_ENVELOPE_SIZE, sizeof v);
  v++;
  rk_envelope_init(&a, 1, sizeof v, (uint16_t)(RK_ENV_F_K2K | RK_ENV_F_REPLY));
  a.src = a.node = far_id;
  a.dst = e.origin;
  a.origin = e.origin;
  a.correlation_id = e.correlation_id;
  a.lane = e.lane;
  (void)rk_clock_tick(rk_runtime_clock(rk_graph_runtime(g)), &a.hlc);
  return rk_graph_deliver(g, node, e.lane, &a, &v);
}

static int ring_has_1(void *arg) { /* published (claimed is not enough: the lane publishes at its flush) */
  uint64_t pos;
  return rk_ring_peek_n((rk_ring *)arg, 1, &pos) >= 1;
}

/* The graph of the remote-answer tests: the device kernel "front" routed to the remote node "far"
 * (4 slots; 2 lanes: dfake_start, whose state is *far), launched and activated. *front and *far
 * receive the nodes' numbers, *fi far's info, *ring far's outbound ring of lane 0. */
static rk_graph *far_graph(rk_runtime *rt, uint32_t *front, uint32_t *far, rk_graph_node_info *fi, rk_ring **ring) {
  rk_graph *g;
  rk_kernel_desc df = k2k_desc("front");
  RT_OK(rt, rk_graph_create(rt, &g));
  RT_OK(rt, rk_graph_set_transport(g, &dfake_ops, far));
  RT_OK(rt, rk_graph_add(g, &df, NULL, 0, front));
  RT_OK(rt, rk_graph_add_remote(g, 1, "far", 4, far));
  RT_OK(rt, rk_graph_connect(g, *front, *far, NULL));
  RT_OK(rt, rk_graph_launch(g));
  RT_OK(rt, rk_graph_activate(g));
  memset(fi, 0, sizeof *fi);
  fi->size = sizeof *fi;
  RT_OK(rt, rk_graph_node(g, *far, fi));
  *ring = rk_graph_remote_ring(g, *far, 0);
  return g;
}

/* A device kernel passed a host request on to a remote node; its terminate begins (the host inbox
 * closes) before the answer comes back: the transport still delivers the answer (into the lane's
 * transport inbox, which stays open while an answer is owed), the lane answers the caller and
 * exits, and terminate returns RK_OK. (Before the transport inbox: the delivery into the closed
 * host inbox got RK_ECLOSED, the owed answer never came, terminate timed out.) */
static void test_k2k_remote_answer_late(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  uint32_t front, far;
  rk_graph_node_info fi;
  rk_ring *ring;
  rk_kernel *k;
  uint64_t v = 10, pos = 0, back = 0;
  rt_terminator t;
  int rc;
  rk_msg m;
  (void)state;
  g = far_graph(rt, &front, &far, &fi, &ring);
  k = rk_graph_kernel(g, front);
  RT_OK(rt, rk_send(k, 1, &v, sizeof v, 0, NULL)); /* a request: its answer is owed to the caller */
  assert_true(rt_wait_for(ring_has_1, ring, RT_HANG));
  assert_int_equal(rk_ring_peek_n(ring, 1, &pos), 1);
  rt_terminate_start(&t, g, NULL, 5 * RT_SEC); /* the answer it waits for comes after it began */
  assert_true(rt_wait_for(emu_host_inbox_closed, k, RT_HANG)); /* terminate has begun */
  rc = far_answer(g, front, fi.kernel_id, rk_ring_slot(ring, pos));
  rk_ring_release_n(ring, 1);
  (void)rt_terminate_join(&t);
  assert_int_equal(rc, RK_OK);   /* the answer was taken, */
  assert_int_equal(t.rc, RK_OK); /* handled, and the lane left */
  RT_OK(rt, rk_recv(k, &m, &back, sizeof back, RT_HANG));
  assert_int_equal(back, v + 2); /* both stages */
  assert_int_equal(rt_stats(k).k2k_in, 1);
  assert_int_equal(rt_stats(k).k2k_out, 1);
  assert_int_equal(rt_stats(k).msgs_in, 1);
  assert_int_equal(rt_stats(k).msgs_out, 1);
  assert_int_equal(k->lane[0].status->k2k_owed, 0);
  /* the lanes have exited: the transport inbox is closed, a later delivery is refused */
  assert_int_equal(far_answer(g, front, fi.kernel_id, rk_ring_slot(ring, pos)), RK_ECLOSED);
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

static int ring_full4(void *arg) { /* four published */
  uint64_t pos;
  return rk_ring_peek_n((rk_ring *)arg, 8, &pos) >= 4;
}
typedef struct k2k_in_want {
  rk_kernel *k;
  uint64_t n;
} k2k_in_want;
static int k2k_in_reached(void *arg) { return rt_stats(((k2k_in_want *)arg)->k).k2k_in >= ((k2k_in_want *)arg)->n; }

/* Answers must not wait behind a host message the lane runs again: host requests passed on to a
 * remote node whose ring (4) is full, the fifth run again (RK_EAGAIN), and the ring's slots go back
 * only once the answers of the first four have been taken (as the bridge's credits wait for the
 * answers on the other rank). The answers are taken meanwhile (the transport inbox, looked at
 * between the host batch's retries); then everything flows: 8 answers, 8 replies, in order. (Before
 * the transport inbox: the answers queued in the host inbox behind the retried request: a deadlock
 * across the ranks that no watchdog saw.) */
static void test_k2k_remote_answers_not_behind_retry(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_graph *g;
  uint32_t front, far, i, got = 0;
  rk_graph_node_info fi;
  rk_ring *ring;
  rk_kernel *k;
  uint64_t pos = 0, n = 8;
  k2k_in_want w;
  (void)state;
  g = far_graph(rt, &front, &far, &fi, &ring);
  k = rk_graph_kernel(g, front);
  for (i = 0; i < n; i++) {
    uint64_t v = 100 * (i + 1);
    RT_OK(rt, rk_send(k, 1, &v, sizeof v, 0, NULL));
  }
  assert_true(rt_wait_for(ring_full4, ring, RT_HANG));
  assert_true(rt_wait_for(refused_some, k, RT_HANG)); /* the fifth runs again */
  /* answer the four, keep their slots until the answers are taken */
  assert_int_equal(rk_ring_peek_n(ring, 8, &pos), 4);
  for (i = 0; i < 4; i++) RT_OK(rt, far_answer(g, front, fi.kernel_id, rk_ring_slot(ring, pos + i)));
  w.k = k;
  w.n = 4;
  assert_true(rt_wait_for(k2k_in_reached, &w, 10 * RT_SEC)); /* not behind the retried request */
  rk_ring_release_n(ring, 4);
  for (uint64_t t0 = rt_now_ns(); got < n - 4 && rt_now_ns() - t0 < (uint64_t)RT_HANG;) {
    uint32_t c = rk_ring_peek_n(ring, 8, &pos), j;
    for (j = 0; j < c; j++) RT_OK(rt, far_answer(g, front, fi.kernel_id, rk_ring_slot(ring, pos + j)));
    if (c) rk_ring_release_n(ring, c);
    else rk__sleep_ns(100000);
    got += c;
  }
  assert_int_equal(got, n - 4);
  for (i = 0; i < n; i++) { /* every caller answered, in order: both stages */
    uint64_t back = 0;
    rk_msg m;
    RT_OK(rt, rk_recv(k, &m, &back, sizeof back, RT_HANG));
    assert_int_equal(back, 100 * (i + 1) + 2);
  }
  RT_OK(rt, rk_graph_terminate(g, RT_HANG));
  assert_int_equal(rt_stats(k).k2k_in, n);
  assert_int_equal(rt_stats(k).k2k_out, n);
  assert_true(rt_stats(k).k2k_refused >= 1); /* the retries (RK_EAGAIN) */
  assert_int_equal(rt_stats(k).msgs_in, n);
  assert_int_equal(rt_stats(k).msgs_out, n);
  assert_int_equal(k->lane[0].status->k2k_owed, 0);
  rk_graph_destroy(g);
  emu_runtime_destroy(rt);
}

static void test_call_and_stamps(void **state) {
  (void)state;
  call_and_stamps(2, 1);
}
static void test_call_and_stamps_threads(void **state) {
  (void)state;
  call_and_stamps(2, 4);
}
static void test_vector_add(void **state) {
  (void)state;
  vector_add(1);
  vector_add(3);
  vector_add(4);
}

/* An application's kernel (tests/twin_kernel.c, compiled after the device loop into this test's
 * emulated device: rk_devemu_twin) on the emulated device: the checks it passes on the CPU backend (test_kernel_twins) and on a GPU. */
static void test_application_kernel(void **state) {
  rk_runtime *rt = emu_runtime(0);
  rk_kernel_desc d = tally;
  rk_kernel *k;
  (void)state;
  d.cuda_entry = "rk_kernel_tally"; /* what RK_KERNEL sets when nvcc built the image */
  k = emu_launch(rt, &d, 2, 3, 0, 0);
  assert_int_equal(rk_kernel_activate(k), RK_OK);
  twin_check(k, 2, RT_HANG);
  emu_finish(rt, k);
}

/* ---------------------------------------- K2K between two devices ---------------------------- */
/* Every two-device test starts with peer access on (cmocka setup), so that a test that fails
 * with it off (its assertion returns before it is restored) does not change the tests after it. */
static int peer_on(void **state) {
  (void)state;
  emu_peer_access = 1;
  return 0;
}

/* Two emulated devices: two runtimes on the emulated device with device ordinals 0 and 1, one
 * graph (on the first) with kernels of both (rk_graph_add_on). emu_peer_access says whether the
 * devices have peer access: on, a route's inboxes are in the destination's device memory and the
 * senders of the other device fence at system scope (RK_DEV_K2K_SYS); off, they are staged in
 * mapped host memory, which the receiving lanes also acquire at system scope. */
static rk_runtime *emu_runtime_dev(int device) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  o.device = device;
  o.watchdog_interval_ns = 1000000;
  o.watchdog_stall_ns = EMU_STALL_NS;
  rt = rt_create_opts(&o);
  emu_install(rt);
  return rt;
}

typedef struct k2k_spec2 {
  const char *name;
  uint32_t cap, lanes, dev;
} k2k_spec2;

/* As k2k_graph, node i on runtime rts[spec[i].dev]; launched (and activated) only when launch. */
static rk_graph *k2k_graph2(rk_runtime **rts, const k2k_spec2 *spec, uint32_t n, const char *routes, int launch) {
  rk_graph *g;
  uint32_t i, node;
  rk_runtime *rt = rts[0];
  RT_OK(rt, rk_graph_create(rt, &g));
  for (i = 0; i < n; i++) {
    rk_kernel_desc d = k2k_desc(spec[i].name);
    rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
    lo.lanes = spec[i].lanes;
    if (spec[i].dev == 0)
      RT_OK(rt, rk_graph_add(g, &d, spec[i].lanes ? &lo : NULL, spec[i].cap, &node));
    else
      RT_OK(rt, rk_graph_add_on(g, rts[spec[i].dev], &d, spec[i].lanes ? &lo : NULL, spec[i].cap, &node));
    assert_int_equal(node, i);
  }
  for (; routes && *routes; routes++)
    if (routes[1] == '>') {
      RT_OK(rt, rk_graph_connect(g, (uint32_t)(routes[0] - '0'), (uint32_t)(routes[2] - '0'), NULL));
      routes += 2;
    }
  if (launch) {
    RT_OK(rt, rk_graph_launch(g));
    RT_OK(rt, rk_graph_activate(g));
  }
  return g;
}

static uint32_t k2k_entry_flags(rk_graph *g, uint32_t in_node_of, uint32_t node) {
  rk_kernel *k = rk_graph_kernel(g, in_node_of);
  return ((const rk_dev_k2k_node *)(uintptr_t)k->dev_graph)[node].flags;
}

/* Requests cross from device 0 to device 1 and are answered there; the answers cross back, to the
 * first stage's lane and its caller. peer: a three-stage pipeline 0 -> 1 -> 0 (forwarded twice,
 * answered by the last stage); staged: two stages 0 -> 1 (without peer access an inbox takes the
 * lanes of one device, and a three-stage one's first stage would get answers from both). Every
 * answer once, stamped above the one before; a restart of the stage on device 1 midway; then
 * terminate upstream first, nothing owed. */
static void k2k_two_devices_pipeline(int peer) {
  rk_runtime *rts[2] = {emu_runtime_dev(0), emu_runtime_dev(1)};
  rk_graph *g;
  uint32_t i, stages = peer ? 3 : 2, n = RT_SANITIZED ? 100 : 300;
  rk_hlc last = 0;
  rk_msg m;
  emu_peer_access = peer;
  g = k2k_graph2(rts, (const k2k_spec2[]){{"parse", 0, 2, 0}, {"enrich", 0, 0, 1}, {"aggregate", 0, 0, 0}}, stages,
                 peer ? "0>1 1>2" : "0>1", 1);
  assert_ptr_equal(rk_graph_kernel(g, 1)->rt, rts[1]);
  /* ids are per runtime: the graph's are distinct all the same (answers find their origin by id) */
  assert_int_not_equal(rk_graph_kernel(g, 0)->id, rk_graph_kernel(g, 1)->id);
  if (stages == 3) assert_int_not_equal(rk_graph_kernel(g, 2)->id, rk_graph_kernel(g, 1)->id);
  /* where the inboxes are: each device's copy of the table says which are not in its memory */
  assert_int_equal(k2k_entry_flags(g, 0, 1), RK_DEV_K2K_SYS);          /* enrich, seen from device 0 */
  /* by itself: staged, or its own with writers on device 0 (XWRITERS: it gives head back at
   * system scope) */
  assert_int_equal(k2k_entry_flags(g, 1, 1), peer ? RK_DEV_K2K_XWRITERS : RK_DEV_K2K_SYS);
  /* parse: staged when no peer; else its own, answered from device 1 too */
  assert_int_equal(k2k_entry_flags(g, 0, 0), peer ? RK_DEV_K2K_XWRITERS : RK_DEV_K2K_SYS);
  assert_int_equal(k2k_entry_flags(g, 1, 0), RK_DEV_K2K_SYS);
  assert_true(peer ? rk_graph_kernel(g, 1)->k2k_staged == NULL : rk_graph_kernel(g, 1)->k2k_staged != NULL);
  for (i = 0; i < n; i++) {
    uint64_t v = i, back = 0;
    RT_OK(rts[0], rk_call(rk_graph_kernel(g, 0), 1, &v, sizeof v, &m, &back, sizeof back, RT_HANG));
    assert_int_equal(back, i + stages); /* one each */
    assert_true(m.env.hlc > last);      /* HLC monotone across the hops and back */
    last = m.env.hlc;
    assert_true(rk_clock_peek(rk_runtime_clock(rts[0])) > m.env.hlc);
    if (i == n / 2) { /* the stage on device 1 restarts; its inbox and counters go on */
      rk__kernel_fault(rk_graph_kernel(g, 1), RK_EHANDLER, "injected for the test");
      RT_OK(rts[1], rk_kernel_restart(rk_graph_kernel(g, 1), RK_RESTART_KEEP_STATE));
    }
  }
  RT_OK(rts[0], rk_graph_terminate(g, RT_HANG));
  assert_int_equal(rt_stats(rk_graph_kernel(g, 0)).k2k_out, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 0)).k2k_in, n); /* the answers, each once */
  assert_int_equal(rt_stats(rk_graph_kernel(g, 0)).msgs_out, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 1)).k2k_in, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 1)).k2k_out, n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, stages - 1)).k2k_in, n);
  assert_int_equal(rk_graph_kernel(g, 0)->lane[0].status->k2k_owed + rk_graph_kernel(g, 0)->lane[1].status->k2k_owed,
                   0);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 1)).clock_rejected, 0);
  rk_graph_destroy(g);
  emu_runtime_destroy(rts[1]);
  emu_runtime_destroy(rts[0]);
  emu_peer_access = 1;
}

static void test_k2k_two_devices_pipeline_peer(void **state) {
  (void)state;
  k2k_two_devices_pipeline(1);
}

static void test_k2k_two_devices_pipeline_staged(void **state) {
  (void)state;
  k2k_two_devices_pipeline(0);
}

/* Fan-in across devices with backpressure: two kernels of two lanes on device 0 send into a sink
 * on device 1 whose K2K inbox has two slots; the senders find it full (RK_EAGAIN) and run again;
 * every message arrives exactly once, in order per source, with and without peer access. */
static void k2k_two_devices_fan_in(int peer) {
  rk_runtime *rts[2] = {emu_runtime_dev(0), emu_runtime_dev(1)};
  rk_graph *g;
  uint32_t i;
  uint64_t st[16], want = 0;
  const uint32_t n = RT_SANITIZED ? 100 : 200;
  emu_peer_access = peer;
  g = k2k_graph2(rts, (const k2k_spec2[]){{"a", 0, 2, 0}, {"b", 0, 2, 0}, {"sink", 2, 0, 1}}, 3, "0>2 1>2", 1);
  assert_true(peer ? rk_graph_kernel(g, 2)->k2k_staged == NULL : rk_graph_kernel(g, 2)->k2k_staged != NULL);
  for (i = 1; i <= n; i++) {
    uint64_t wa[2] = {i % 2, i}, wb[2] = {2 + i % 2, i};
    RT_OK(rts[0], rk_send_key(rk_graph_kernel(g, 0), i % 2, 2, wa, sizeof wa, RK_SEND_NO_REPLY, NULL));
    RT_OK(rts[0], rk_send_key(rk_graph_kernel(g, 1), i % 2, 2, wb, sizeof wb, RK_SEND_NO_REPLY, NULL));
    want += 2 * (uint64_t)i;
  }
  RT_OK(rts[0], rk_graph_terminate(g, 6 * RT_HANG));
  k2k_state(rk_graph_kernel(g, 2), st);
  assert_int_equal(st[0], 2 * n); /* every message, once */
  assert_int_equal(st[1], want);  /* no duplicate made up for a loss */
  assert_int_equal(st[2], 0);     /* in order per source */
  assert_int_equal(rt_stats(rk_graph_kernel(g, 2)).k2k_in, 2 * n);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 0)).k2k_out + rt_stats(rk_graph_kernel(g, 1)).k2k_out, 2 * n);
  rt_graph_no_clock_refusals(g, 3);
  print_message("cross-device K2K sends refused (sink full) and run again: %llu (peer %d)\n",
                (unsigned long long)(rt_stats(rk_graph_kernel(g, 0)).k2k_refused +
                                     rt_stats(rk_graph_kernel(g, 1)).k2k_refused), peer);
  rk_graph_destroy(g);
  emu_runtime_destroy(rts[1]);
  emu_runtime_destroy(rts[0]);
  emu_peer_access = 1;
}

static void test_k2k_two_devices_fan_in(void **state) {
  (void)state;
  k2k_two_devices_fan_in(1);
  k2k_two_devices_fan_in(0);
}

/* A ping-pong between devices (a cycle: peer access needed): stamps strictly increase along every
 * hop, and every K2K-only publication of a lane that sent to the other device fences at system
 * scope (RK_DEV_K2K_SYS), where the same ping-pong on one device fences at device scope only. */
static uint64_t k2k_ping_pong_fences(int two, uint64_t hops) {
  rk_runtime *rts[2] = {emu_runtime_dev(0), two ? emu_runtime_dev(1) : NULL};
  rk_graph *g;
  uint64_t w[2] = {hops, 0}, sa[16], sb[16], spins = 0;
  rk_emu_lane_model mod;
  g = k2k_graph2(rts, (const k2k_spec2[]){{"ping", 0, 1, 0}, {"pong", 0, 1, (uint32_t)two}}, 2, "0>1 1>0", 1);
  rk_emu_model_reset();
  RT_OK(rts[0], rk_send(rk_graph_kernel(g, 0), 6, w, sizeof w, RK_SEND_NO_REPLY, NULL));
  while (rt_stats(rk_graph_kernel(g, 0)).k2k_in + rt_stats(rk_graph_kernel(g, 1)).k2k_in < hops && spins++ < 100000)
    rk__sleep_ns(1000000);
  rk_emu_model_read(-1, &mod);
  RT_OK(rts[0], rk_graph_terminate(g, RT_HANG));
  k2k_state(rk_graph_kernel(g, 0), sa);
  k2k_state(rk_graph_kernel(g, 1), sb);
  assert_int_equal(sa[3] + sb[3], hops + 1); /* the host's message, then every hop once */
  assert_int_equal(sa[5] + sb[5], 0);        /* each stamp above the one before */
  rk_graph_destroy(g);
  if (two) emu_runtime_destroy(rts[1]);
  emu_runtime_destroy(rts[0]);
  return mod.fences;
}

static void test_k2k_two_devices_ping_pong(void **state) {
  uint64_t hops = 200, one, two;
  (void)state;
  emu_peer_access = 1;
  one = k2k_ping_pong_fences(0, hops);
  two = k2k_ping_pong_fences(1, hops);
  print_message("system fences in work iterations, %llu hops: one device %llu, two devices %llu\n",
                (unsigned long long)hops, (unsigned long long)one, (unsigned long long)two);
  assert_true(two >= hops);   /* one per hop at least: each hop's publication crosses devices */
  assert_true(one < hops / 4); /* (the host message's publication and control: a few) */
}

/* The close of a staged sink while the other device's kernel keeps sending (rk_kernel_terminate
 * of the sink alone, not upstream first). The close's CAS and the writers' claims come from two
 * devices, which mapped memory does not make atomic with each other; on the emulated device every
 * CAS is atomic, so what is checked is the protocol (graph.c rk__k2k_staged_close): its steps in
 * order (every lane waiting at its close, not closed yet; the writers' flag; the writer kernel past
 * a command; the go), no claim between the writers' acknowledgement and the close (the close's
 * final position is the claim seen then), and the accounting: every call answered RK_OK was
 * delivered once, the others refused (RK_ECLOSED), none lost. */
typedef struct staged_close_rec {
  rk_kernel *sink;
  int steps[8];
  uint32_t n[8], nsteps;
  uint64_t claim[8]; /* the sink's ring's claim word at each step */
} staged_close_rec;
static staged_close_rec g_staged;

static void staged_hook(rk_kernel *k, int step, uint32_t n) {
  if (k != g_staged.sink || g_staged.nsteps == 8) return;
  g_staged.steps[g_staged.nsteps] = step;
  g_staged.n[g_staged.nsteps] = n;
  g_staged.claim[g_staged.nsteps++] = rk_load_relaxed_sys_u64(&((rk_ring *)k->k2k_staged)->claim);
}

typedef struct staged_feeder {
  rk_runtime *rt;
  rk_kernel *src;
  int stop;                          /* main -> feeder (relaxed: a flag, polled) */
  uint64_t calls, ok, closed, other; /* feeder's, read after the join (or relaxed while running) */
} staged_feeder;

static void *staged_feed(void *arg) {
  staged_feeder *f = (staged_feeder *)arg;
  uint64_t i = 1;
  while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
    uint64_t w[2] = {0, i};
    int32_t rc = -1;
    rk_msg m;
    if (rk_call(f->src, 2, w, sizeof w, &m, &rc, sizeof rc, RT_HANG) != RK_OK) {
      __atomic_add_fetch(&f->other, 1, __ATOMIC_RELAXED);
      break;
    }
    __atomic_add_fetch(&f->calls, 1, __ATOMIC_RELAXED);
    if (rc == RK_OK) {
      __atomic_add_fetch(&f->ok, 1, __ATOMIC_RELAXED);
      i++; /* (the sink counts a seq not above the last: only delivered ones move it) */
    } else if (rc == RK_ECLOSED) {
      __atomic_add_fetch(&f->closed, 1, __ATOMIC_RELAXED);
    } else {
      __atomic_add_fetch(&f->other, 1, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

static void test_k2k_two_devices_staged_close(void **state) {
  rk_runtime *rts[2] = {emu_runtime_dev(0), emu_runtime_dev(1)};
  rk_graph *g;
  rk_kernel *sink;
  staged_feeder f;
  pthread_t th;
  uint64_t st[16], spins = 0, fin;
  const uint64_t before = RT_SANITIZED ? 50 : 200;
  (void)state;
  emu_peer_access = 0;
  g = k2k_graph2(rts, (const k2k_spec2[]){{"src", 0, 1, 0}, {"sink", 8, 1, 1}}, 2, "0>1", 1);
  sink = rk_graph_kernel(g, 1);
  assert_non_null(sink->k2k_staged); /* staged */
  memset(&g_staged, 0, sizeof g_staged);
  g_staged.sink = sink;
  rk__k2k_staged_hook = staged_hook;
  memset(&f, 0, sizeof f);
  f.rt = rts[0];
  f.src = rk_graph_kernel(g, 0);
  assert_int_equal(pthread_create(&th, NULL, staged_feed, &f), 0);
  while (__atomic_load_n(&f.ok, __ATOMIC_RELAXED) < before && spins++ < 100000) rk__sleep_ns(100000);
  RT_OK(rts[1], rk_kernel_terminate(sink, RT_HANG)); /* the sink alone, its writer still sending */
  spins = 0;
  while (__atomic_load_n(&f.closed, __ATOMIC_RELAXED) < 10 && spins++ < 100000) rk__sleep_ns(100000);
  __atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
  assert_int_equal(pthread_join(th, NULL), 0);
  rk__k2k_staged_hook = NULL;
  RT_OK(rts[0], rk_graph_terminate(g, RT_HANG));
  /* the steps, in order, once each */
  assert_int_equal(g_staged.nsteps, 4);
  assert_int_equal(g_staged.steps[0], 0);
  assert_int_equal(g_staged.n[0], 1); /* its one lane ready to close */
  assert_int_equal(g_staged.steps[1], 1);
  assert_int_equal(g_staged.steps[2], 2);
  assert_int_equal(g_staged.n[2], 1); /* the writer kernel acknowledged */
  assert_int_equal(g_staged.steps[3], 3);
  /* the lane waited for the go: not closed before it */
  assert_false(g_staged.claim[0] & RK_RING_CLOSED);
  assert_false(g_staged.claim[2] & RK_RING_CLOSED);
  /* closed where the claim stood once the writer had acknowledged: no claim after it */
  assert_true(rk_ring_closed((rk_ring *)sink->k2k_staged, &fin));
  assert_int_equal(fin, g_staged.claim[2]);
  /* every call answered: delivered once (OK) or refused (RK_ECLOSED), nothing lost */
  assert_int_equal(f.other, 0);
  assert_true(f.ok >= before);
  assert_true(f.closed >= 10);
  assert_int_equal(f.calls, f.ok + f.closed);
  k2k_state(sink, st);
  assert_int_equal(st[0], f.ok); /* delivered: each accepted send once */
  assert_int_equal(st[2], 0);    /* in order */
  assert_int_equal(rt_stats(sink).k2k_in, f.ok);
  assert_int_equal(rt_stats(rk_graph_kernel(g, 0)).k2k_out, f.ok);
  assert_int_equal(fin, f.ok); /* the close's final position: exactly the accepted sends */
  print_message("staged close under load: %llu delivered, %llu refused after the close\n",
                (unsigned long long)f.ok, (unsigned long long)f.closed);
  rk_graph_destroy(g);
  emu_runtime_destroy(rts[1]);
  emu_runtime_destroy(rts[0]);
  emu_peer_access = 1;
}

/* Argument errors, a mix without peer access refused, and a launch that fails on the second
 * device leaving nothing launched on either. */
static void test_k2k_two_devices_errors(void **state) {
  rk_runtime *rts[2];
  emu_peer_access = 1; /* (whatever a failed test before left) */
  rts[0] = emu_runtime_dev(0);
  rts[1] = emu_runtime_dev(1);
  rk_runtime *cpu = rt_create();
  rk_graph *g;
  rk_kernel_desc d = k2k_desc("x"), bad = k2k_desc("bad");
  uint32_t node;
  (void)state;
  RT_OK(rts[0], rk_graph_create(rts[0], &g));
  assert_int_equal(rk_graph_add_on(NULL, rts[1], &d, NULL, 0, &node), RK_EINVAL);
  assert_int_equal(rk_graph_add_on(g, NULL, &d, NULL, 0, &node), RK_EINVAL);
  assert_int_equal(rk_graph_add_on(g, rts[0], &d, NULL, 0, &node), RK_EINVAL);
  assert_non_null(strstr(rk_runtime_last_error(rts[0]), "own"));
  assert_int_equal(rk_graph_add_on(g, rts[1], NULL, NULL, 0, &node), RK_EINVAL);
  assert_int_equal(rk_graph_add_on(g, rts[1], &d, NULL, 3, &node), RK_EINVAL); /* capacity */
  assert_int_equal(rk_graph_add_on(g, cpu, &d, NULL, 0, &node), RK_ENOTSUP);  /* CPU with a device */
  assert_non_null(strstr(rk_runtime_last_error(rts[0]), "backend"));
  rk_graph_destroy(g);
  /* answers from both devices into a kernel without peer access: refused before anything launches */
  emu_peer_access = 0;
  g = k2k_graph2(rts, (const k2k_spec2[]){{"p", 0, 0, 0}, {"q", 0, 0, 1}, {"r", 0, 0, 0}}, 3, "0>1 1>2", 0);
  assert_int_equal(rk_graph_launch(g), RK_ENOTSUP);
  assert_non_null(strstr(rk_runtime_last_error(rts[0]), "peer access"));
  assert_null(rts[0]->kernels);
  assert_null(rts[1]->kernels);
  rk_graph_destroy(g);
  emu_peer_access = 1;
  /* the second device's kernel cannot launch (no emulated entry): nothing stays launched */
  bad.cuda_entry = "rk_no_such_entry";
  RT_OK(rts[0], rk_graph_create(rts[0], &g));
  RT_OK(rts[0], rk_graph_add(g, &d, NULL, 0, &node));
  RT_OK(rts[0], rk_graph_add_on(g, rts[1], &bad, NULL, 0, &node));
  RT_OK(rts[0], rk_graph_connect(g, 0, 1, NULL));
  assert_int_not_equal(rk_graph_launch(g), RK_OK);
  /* the graph is not left launched, and no kernel of it is left on either runtime (the first
   * device's kernel, launched before the second failed, was destroyed) */
  assert_int_equal(rk_graph_publish(g, 0, 1, NULL, 0), RK_ESTATE);
  assert_null(rts[0]->kernels);
  assert_null(rts[1]->kernels);
  rk_graph_destroy(g);
  /* a remote (MPI) node in a graph across devices: refused before anything launches */
  {
    uint32_t far = 0;
    RT_OK(rts[0], rk_graph_create(rts[0], &g));
    RT_OK(rts[0], rk_graph_set_transport(g, &dfake_ops, &far));
    RT_OK(rts[0], rk_graph_add(g, &d, NULL, 0, &node));
    RT_OK(rts[0], rk_graph_add_on(g, rts[1], &d, NULL, 0, &node));
    RT_OK(rts[0], rk_graph_add_remote(g, 1, "far", 4, &far));
    RT_OK(rts[0], rk_graph_connect(g, 1, far, NULL));
    assert_int_equal(rk_graph_launch(g), RK_ENOTSUP);
    assert_non_null(strstr(rk_runtime_last_error(rts[0]), "remote"));
    assert_null(rts[0]->kernels);
    assert_null(rts[1]->kernels);
    rk_graph_destroy(g);
  }
  /* a launched graph across devices: add_on refused; the other runtime's destroy takes the graph */
  g = k2k_graph2(rts, (const k2k_spec2[]){{"s", 0, 0, 0}, {"t", 0, 0, 1}}, 2, "0>1", 1);
  assert_int_equal(rk_graph_add_on(g, rts[1], &d, NULL, 0, &node), RK_ESTATE);
  emu_runtime_destroy(rts[1]); /* destroys g (logged) */
  assert_null(rts[0]->graphs);
  assert_null(rts[0]->kernels);
  rk_runtime_destroy(cpu);
  emu_runtime_destroy(rts[0]);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lifecycle),
      cmocka_unit_test(test_call_and_stamps),
      cmocka_unit_test(test_call_and_stamps_threads),
      cmocka_unit_test(test_clock_offset_measured),
      cmocka_unit_test(test_vector_add),
      cmocka_unit_test(test_slot_layout),
      cmocka_unit_test(test_state_survives),
      cmocka_unit_test(test_backpressure_stall_and_drain),
      cmocka_unit_test(test_terminate_drains_stalled_lane),
      cmocka_unit_test(test_full_outbox_lane_alive),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_callbacks_without_timer),
      cmocka_unit_test(test_handler_results),
      cmocka_unit_test(test_poller_sleeps_after_no_reply),
      cmocka_unit_test(test_restart_unhandled_stay),
      cmocka_unit_test(test_restart_state),
      cmocka_unit_test(test_k2k_pipeline),
      cmocka_unit_test(test_k2k_fan_in_backpressure),
      cmocka_unit_test_teardown(test_clock_coarse_calibration, clock_fail_points_off),
      cmocka_unit_test(test_clock_time_source),
      cmocka_unit_test(test_clock_step_recalibrates),
      cmocka_unit_test(test_clock_doubt_recalibrates),
      cmocka_unit_test(test_clock_step_no_loss),
      cmocka_unit_test(test_k2k_publish_and_refusals),
      cmocka_unit_test(test_k2k_cycle),
      cmocka_unit_test(test_k2k_slow_subscriber),
      cmocka_unit_test(test_k2k_retry_hears_abort),
      cmocka_unit_test(test_k2k_deadlock_detected),
      cmocka_unit_test_setup(test_k2k_two_devices_pipeline_peer, peer_on),
      cmocka_unit_test_setup(test_k2k_two_devices_pipeline_staged, peer_on),
      cmocka_unit_test_setup(test_k2k_two_devices_fan_in, peer_on),
      cmocka_unit_test_setup(test_k2k_two_devices_ping_pong, peer_on),
      cmocka_unit_test_setup(test_k2k_two_devices_errors, peer_on),
      cmocka_unit_test_setup(test_k2k_two_devices_staged_close, peer_on),
      cmocka_unit_test_setup(test_k2k_remote_node, peer_on),
      cmocka_unit_test_setup(test_k2k_remote_answer_late, peer_on),
      cmocka_unit_test_setup(test_k2k_remote_answers_not_behind_retry, peer_on),
      cmocka_unit_test(test_application_kernel),
  };
  if (argc > 1) cmocka_set_test_filter(argv[1]); /* one test (or a pattern), when iterating */
  return cmocka_run_group_tests(tests, NULL, NULL);
}
