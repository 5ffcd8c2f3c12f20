/* test_cuda_host.c — the host-side rules of the CUDA backend that hold without a GPU.
 *
 * What a GPU would do is played by an emulated backend: the device lane loop compiled as host C++
 * (src/device/emulation_lanes.cpp, as in test_devemu), started when the test says so, and a join that
 * says whether it saw the lanes exit. Shared memory (control block, rings) comes from an
 * allocator that records every live block, standing for the pinned arena. Checked here:
 * - a join that cannot confirm the exit (rk_backend_ops.join returns RK_ETIMEDOUT) leaves the
 *   control block and rings allocated, abort bit set, and blocks that start afterwards (queued
 *   behind other kernels on a GPU) check in, see the abort and exit into that memory: ASan would
 *   report it freed;
 * - dead lanes (a sticky CUDA error, RK_ECUDA) never hang terminate, even with no timeout: the
 *   command is skipped, or its wait ends when the fault arrives, and the lanes are joined;
 * - a fault while lanes check in ends the launch at once with the fault's code and message;
 * - the process-wide device use (resident kernels and preparing runtimes exclude each other);
 * - the CUDA probe sets CUDA_DEVICE_MAX_CONNECTIONS and CUDA_MODULE_LOADING=EAGER, never over the
 *   application's own values, and says which driver and runtime versions it found when it falls
 *   back to the CPU.
 * Links librk.a (host/internal.h). */
#include "rt_util.h"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include "device/params.h"
#include "host/internal.h"
#include "devemu_util.h"

/* ---------------------------------------- the "arena": live blocks ---------------------------- */

#define MAX_BLOCKS 64
static pthread_mutex_t g_blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static void *g_blocks[MAX_BLOCKS];

static void *arena_alloc(rk_runtime *rt, size_t n) {
  void *p = rk__cpu_backend.alloc(rt, n);
  int i;
  if (p == NULL) return NULL;
  pthread_mutex_lock(&g_blocks_lock);
  for (i = 0; i < MAX_BLOCKS && g_blocks[i]; i++) {
  }
  if (i == MAX_BLOCKS) fail_msg("test arena: too many blocks");
  g_blocks[i] = p;
  pthread_mutex_unlock(&g_blocks_lock);
  return p;
}

static void arena_free(rk_runtime *rt, void *p, size_t n) {
  int i;
  if (p == NULL) return;
  pthread_mutex_lock(&g_blocks_lock);
  for (i = 0; i < MAX_BLOCKS && g_blocks[i] != p; i++) {
  }
  if (i == MAX_BLOCKS) fail_msg("test arena: freeing a block it never gave out");
  g_blocks[i] = NULL;
  pthread_mutex_unlock(&g_blocks_lock);
  rk__cpu_backend.free(rt, p, n);
}

static int arena_live(const void *p) {
  int i, live = 0;
  pthread_mutex_lock(&g_blocks_lock);
  for (i = 0; i < MAX_BLOCKS; i++) live += p ? g_blocks[i] == p : g_blocks[i] != NULL;
  pthread_mutex_unlock(&g_blocks_lock);
  return live;
}

/* The arena goes away with its runtime's backend: what was kept is released with it. */
static void arena_release_all(void) {
  int i;
  pthread_mutex_lock(&g_blocks_lock);
  for (i = 0; i < MAX_BLOCKS; i++) {
    rk__cpu_backend.free(NULL, g_blocks[i], 0);
    g_blocks[i] = NULL;
  }
  pthread_mutex_unlock(&g_blocks_lock);
}

/* ---------------------------------------- the emulated device --------------------------------- */

typedef enum { START_LANES, START_QUEUED, START_DEAD, START_FAULTING } start_mode;

typedef struct emu_kernel {
  emu_device dev; /* the lanes (devemu_util.h) */
  rk_kernel *k;   /* NULL once the host let go of it (a join that confirmed nothing) */
  rk_control *ctl; /* what the lanes address, kept for the checks */
  uv_thread_t faulter;
  int faulting;
} emu_kernel;

static struct {
  start_mode mode;
  int confirm;       /* join confirms the exit */
  int joins;         /* joins called */
  emu_kernel *kept;  /* the kernel a join did not confirm (the backend's zombie) */
} g_dev;

static void emu_kernel_free(emu_kernel *ek) {
  emu_device_release(&ek->dev);
  free(ek);
}

/* A sticky CUDA error, as the CUDA thread's stream poll reports it, 20 ms into the launch. */
static void faulter_main(void *arg) {
  emu_kernel *ek = (emu_kernel *)arg;
  rt_sleep_ms(20);
  rk__kernel_lanes_dead(ek->k, "CUDA error: an illegal memory access was encountered (cudaErrorIllegalAddress)");
}

static int emu_start(rk_kernel *k) {
  emu_kernel *ek = (emu_kernel *)calloc(1, sizeof *ek);
  uint32_t i;
  int rc;
  assert_non_null(ek);
  if ((rc = emu_device_prepare(&ek->dev, k)) != RK_OK) {
    free(ek);
    return rc;
  }
  ek->k = k;
  ek->ctl = k->ctl;
  k->backend_data = ek;
  switch (g_dev.mode) {
    case START_LANES: emu_device_start_ok(&ek->dev); break;
    case START_QUEUED: break; /* every SM busy: the blocks wait */
    case START_DEAD:          /* the lanes checked in, then a sticky error ended them */
      for (i = 0; i < k->lanes; i++) {
        rk_lane_status *st = rk_control_lane(k->ctl, k->lanes, i);
        rk_store_relaxed_sys_u64(&st->clock_sample_ns, rk__realtime_ns());
        rk_store_release_sys_u32(&st->checked_in, 1); /* pairs with launch's acquire */
      }
      break;
    case START_FAULTING:
      ek->faulting = 1;
      assert_int_equal(uv_thread_create(&ek->faulter, faulter_main, ek), 0);
      break;
  }
  return RK_OK;
}

static int emu_join(rk_kernel *k) {
  emu_kernel *ek = (emu_kernel *)k->backend_data;
  g_dev.joins++;
  if (ek == NULL) return RK_OK;
  if (ek->faulting) uv_thread_join(&ek->faulter);
  k->backend_data = NULL;
  ek->k = NULL;
  if (!g_dev.confirm) { /* a zombie: the backend keeps what it owns */
    g_dev.kept = ek;
    return RK_ETIMEDOUT;
  }
  emu_device_join(&ek->dev);
  emu_kernel_free(ek);
  return RK_OK;
}

static rk_backend_ops emu_ops;

static rk_runtime *emu_runtime(start_mode mode, int confirm) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  o.watchdog_interval_ns = 1000000;
  o.watchdog_stall_ns = 60 * RT_SEC; /* dead lanes are the subject here, not stalls */
  rt = rt_create_opts(&o);
  memset(&g_dev, 0, sizeof g_dev);
  g_dev.mode = mode;
  g_dev.confirm = confirm;
  emu_backend_install(rt, &emu_ops, emu_start, emu_join);
  emu_ops.alloc = arena_alloc; /* records every live block */
  emu_ops.free = arena_free;
  return rt;
}

static void emu_runtime_destroy(rk_runtime *rt) {
  emu_backend_uninstall(rt);
  rk_runtime_destroy(rt);
  arena_release_all();
}

static int last_log_has(const char *what) {
  int has;
  pthread_mutex_lock(&rt_the_log.lock);
  has = strstr(rt_the_log.last, what) != NULL;
  pthread_mutex_unlock(&rt_the_log.lock);
  return has;
}

static int launch(rk_runtime *rt, uint32_t lanes, uint64_t launch_timeout_ns, rk_kernel **k) {
  rk_launch_options lo = RK_LAUNCH_OPTIONS_INIT;
  lo.lanes = lanes;
  lo.threads_per_lane = 2;
  lo.launch_timeout_ns = launch_timeout_ns;
  return rk_kernel_launch(rt, &rk_builtin_echo, &lo, k);
}

/* ---------------------------------------- tests ---------------------------------------------- */

/* Runs first: before this executable's first CUDA probe. The application's value of
 * CUDA_DEVICE_MAX_CONNECTIONS is never overwritten; a CPU fallback for want of a driver names the
 * driver and runtime versions it found. (Without CUDA in the build there is nothing to probe.) */
/* The probe's first call in a process sets CUDA_DEVICE_MAX_CONNECTIONS to 32 and
 * CUDA_MODULE_LOADING to EAGER when the application left them unset. Checked in a child process:
 * in this one the probe's once-only step runs with the application's own values set (below).
 * Exit 0: both set (or built without CUDA: nothing to set), 1: one not set, 2: another value. */
static int probe_sets_connections(void) {
  pid_t pid = fork();
  int status = 0;
  assert_true(pid >= 0);
  if (pid == 0) {
    char reason[400];
    const char *v, *l;
    (void)unsetenv("CUDA_DEVICE_MAX_CONNECTIONS");
    (void)unsetenv("CUDA_MODULE_LOADING");
    (void)rk__cuda_probe(0, reason, sizeof reason);
    if (strstr(reason, "built without CUDA")) _exit(0);
    v = getenv("CUDA_DEVICE_MAX_CONNECTIONS");
    l = getenv("CUDA_MODULE_LOADING");
    _exit(v == NULL || l == NULL ? 1 : strcmp(v, "32") == 0 && strcmp(l, "EAGER") == 0 ? 0 : 2);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static void test_probe(void **state) {
  rk_runtime_options o = rt_options();
  rk_runtime *rt;
  const char *reason, *v;
  (void)state;
  assert_int_equal(probe_sets_connections(), 0);
  assert_int_equal(setenv("CUDA_DEVICE_MAX_CONNECTIONS", "5", 1), 0);
  assert_int_equal(setenv("CUDA_MODULE_LOADING", "LAZY", 1), 0);
  o.backend = RK_BACKEND_AUTO;
  rt = rt_create_opts(&o);
  reason = rk_runtime_backend_reason(rt);
  v = getenv("CUDA_DEVICE_MAX_CONNECTIONS");
  assert_non_null(v);
  assert_string_equal(v, "5");
  v = getenv("CUDA_MODULE_LOADING"); /* the application's choice, even against eager loading */
  assert_non_null(v);
  assert_string_equal(v, "LAZY");
  if (strstr(reason, "no usable CUDA driver")) {
    assert_int_equal(rk_runtime_backend(rt), RK_BACKEND_CPU);
    assert_non_null(strstr(reason, "driver: "));
    assert_non_null(strstr(reason, "runtime: CUDA "));
  }
  rk_runtime_destroy(rt);
}

/* Blocks that were never scheduled: the launch times out, aborts, and the backend cannot confirm
 * the exit. The control block and rings stay allocated, the abort bit set; when the blocks start
 * after all, they check in, see the abort and exit, writing only memory that is still there. */
static void test_queued_blocks_keep_memory(void **state) {
  rk_runtime *rt = emu_runtime(START_QUEUED, 0);
  rk_kernel *k = (rk_kernel *)1;
  unsigned errors = rt_log_count(&rt_the_log, RK_LOG_ERROR);
  emu_kernel *ek;
  uint32_t i;
  (void)state;
  assert_int_equal(launch(rt, 2, 30 * RT_MS, &k), RK_ENORESOURCE);
  assert_null(k);
  assert_non_null(strstr(rk_runtime_last_error(rt), "not every lane checked in"));
  assert_int_equal(g_dev.joins, 1);
  ek = g_dev.kept;
  assert_non_null(ek);
  /* kept and reported: the control block, the inboxes and the outboxes */
  assert_int_equal(arena_live(NULL), 3);
  assert_int_equal(arena_live(ek->ctl), 1);
  assert_int_equal(arena_live(ek->dev.params.inbox_base), 1);
  assert_int_equal(arena_live(ek->dev.params.outbox_base), 1);
  assert_true(rt_log_count(&rt_the_log, RK_LOG_ERROR) > errors);
  assert_true(last_log_has("did not confirm"));
  assert_true(rk_load_acquire_sys_u64(&ek->ctl->host.signals) & RK_SIGNAL_ABORT);

  /* the queued blocks start now */
  emu_device_start_ok(&ek->dev);
  emu_device_join(&ek->dev);
  for (i = 0; i < ek->dev.lanes; i++) {
    rk_lane_status *st = rk_control_lane(ek->ctl, ek->dev.lanes, i);
    assert_int_equal(rk_load_acquire_sys_u32(&st->checked_in), 1);
    assert_int_equal(rk_load_acquire_sys_u32(&st->state), RK_STATE_TERMINATED);
    assert_int_equal(rk_load_acquire_sys_u64(&st->msgs_in), 0);
  }
  emu_kernel_free(ek);
  emu_runtime_destroy(rt);
}

/* A kernel that terminated (every lane said so) but whose exit the backend cannot confirm:
 * terminate says so (RK_ETIMEDOUT), the kernel is TERMINATED and can be destroyed, and its control
 * block and rings stay allocated until the backend (here: the runtime) goes. A confirmed join
 * frees them with the kernel. */
static void test_unconfirmed_terminate(void **state) {
  int confirm;
  (void)state;
  for (confirm = 0; confirm < 2; confirm++) {
    rk_runtime *rt = emu_runtime(START_LANES, confirm);
    rk_kernel *k = NULL;
    char req[] = "last words", buf[32];
    rk_msg m;
    RT_OK(rt, launch(rt, 2, 0, &k));
    RT_OK(rt, rk_kernel_activate(k));
    RT_OK(rt, rk_call(k, 9, req, sizeof req, &m, buf, sizeof buf, RT_HANG));
    assert_string_equal(buf, req);
    assert_int_equal(arena_live(NULL), 3);
    assert_int_equal(rk_kernel_terminate(k, RT_HANG), confirm ? RK_OK : RK_ETIMEDOUT);
    assert_int_equal(rk_kernel_state(k), RK_STATE_TERMINATED);
    if (!confirm) assert_non_null(strstr(rk_runtime_last_error(rt), "not confirmed"));
    rk_kernel_destroy(k);
    assert_int_equal(arena_live(NULL), confirm ? 0 : 3);
    if (!confirm) { /* the zombie's lanes did exit: the backend lets go of them with the runtime */
      emu_device_join(&g_dev.kept->dev);
      emu_kernel_free(g_dev.kept);
    }
    emu_runtime_destroy(rt);
  }
}

typedef struct fault_later {
  rk_kernel *k;
  unsigned ms;
} fault_later;

static void fault_later_main(void *arg) {
  fault_later *f = (fault_later *)arg;
  rt_sleep_ms(f->ms);
  rk__kernel_lanes_dead(f->k, "CUDA error: unspecified launch failure (cudaErrorLaunchFailure)");
}

/* Dead lanes acknowledge nothing: terminate with no timeout returns once the fault is known —
 * whether it was known before (no command is written at all) or arrives while terminate waits,
 * and also when the kernel had faulted for another reason first (the watchdog's stall: the first
 * fault keeps the code, the lanes are dead all the same) — joins the lanes and reports the fault;
 * nothing of the kernel is kept. */
static void test_terminate_dead_lanes(void **state) {
  int mode;
  (void)state;
  for (mode = 0; mode < 4; mode++) { /* the lanes die before or during terminate; faulted first or not */
    int during = mode & 1, earlier = (mode & 2) != 0;
    rk_runtime *rt = emu_runtime(START_DEAD, 1);
    rk_kernel *k = NULL;
    fault_later f;
    uv_thread_t th;
    uint32_t seq;
    uint64_t t0;
    char msg[256];
    RT_OK(rt, launch(rt, 3, 0, &k));
    f.k = k;
    f.ms = during ? 50 : 0;
    if (earlier) rk__kernel_fault(k, RK_ETIMEDOUT, "lane 0 stalled: no heartbeat for 2000 ms with 3 messages waiting");
    if (during) {
      assert_int_equal(uv_thread_create(&th, fault_later_main, &f), 0);
    } else {
      fault_later_main(&f);
      assert_int_equal(rk_kernel_activate(k), RK_ESTATE);
    }
    seq = rk_load_acquire_sys_u32(&k->ctl->host.cmd_seq);
    t0 = rt_now_ns();
    assert_int_equal(rk_kernel_terminate(k, -1), RK_ECUDA);
    assert_true(rt_now_ns() - t0 < 5 * (uint64_t)RT_SEC);
    if (during) uv_thread_join(&th);
    assert_int_equal(rk_load_acquire_sys_u32(&k->ctl->host.cmd_seq), during ? seq + 1 : seq);
    assert_non_null(strstr(rk_runtime_last_error(rt), "lanes dead"));
    assert_int_equal(g_dev.joins, 1);
    assert_int_equal(rk_kernel_error(k, msg, sizeof msg), earlier ? RK_ETIMEDOUT : RK_ECUDA); /* the first fault */
    assert_non_null(strstr(msg, earlier ? "stalled" : "cudaErrorLaunchFailure"));
    assert_int_equal(rk_kernel_terminate(k, -1), RK_ESTATE); /* TERMINATED */
    rk_kernel_destroy(k);
    assert_int_equal(arena_live(NULL), 0);
    emu_runtime_destroy(rt);
  }
}

/* The host gives up on lanes that never stop (no fault, no acknowledgement, no exit):
 * terminate times out and aborts, destroy waits once more, then leaks the kernel, keeping its
 * memory, and hands it to the backend's abandon op (the CUDA backend turns it into a zombie it
 * reclaims when the lanes exit) — never to join, which would wait on lanes that may run on. */
static rk_kernel *g_abandoned; /* leaked by design; a global keeps it reachable for LeakSanitizer */

static void emu_abandon(rk_kernel *k) {
  g_dev.kept = (emu_kernel *)k->backend_data;
  k->backend_data = NULL;
  g_abandoned = k;
}

static void test_abandon_lanes_that_never_stop(void **state) {
  rk_runtime *rt = emu_runtime(START_DEAD, 1); /* checked in, then silent; but no fault */
  rk_kernel *k = NULL;
  (void)state;
  emu_ops.abandon = emu_abandon;
  RT_OK(rt, launch(rt, 2, 0, &k));
  assert_int_equal(rk_kernel_terminate(k, 50 * RT_MS), RK_ETIMEDOUT);
  assert_non_null(strstr(rk_runtime_last_error(rt), "still running"));
  assert_int_equal(rk_kernel_state(k), RK_STATE_FAULTED);
  rk_kernel_destroy(k);
  assert_ptr_equal(g_abandoned, k);
  assert_non_null(g_dev.kept);
  assert_int_equal(g_dev.joins, 0);       /* never joined */
  assert_int_equal(arena_live(NULL), 3);  /* control block and rings kept */
  assert_true(last_log_has("did not stop"));
  emu_kernel_free(g_dev.kept);
  emu_runtime_destroy(rt);
}

/* A kernel that faults while its lanes check in: launch returns the fault's code and message at
 * once, not RK_ENORESOURCE after the whole launch timeout. */
static void test_fault_at_check_in(void **state) {
  rk_runtime *rt = emu_runtime(START_FAULTING, 1);
  rk_kernel *k = NULL;
  uint64_t t0 = rt_now_ns();
  (void)state;
  assert_int_equal(launch(rt, 2, 20 * RT_SEC, &k), RK_ECUDA);
  assert_true(rt_now_ns() - t0 < 10 * (uint64_t)RT_SEC);
  assert_null(k);
  assert_non_null(strstr(rk_runtime_last_error(rt), "cudaErrorIllegalAddress"));
  assert_int_equal(g_dev.joins, 1);
  assert_int_equal(arena_live(NULL), 0);
  emu_runtime_destroy(rt);
}

/* The process-wide device use: a runtime may prepare (allocate, load, free) only while no ring
 * kernel is resident on the device, and a launch waits out preparations in progress. */
static void test_device_use_rules(void **state) {
  uint32_t n = 99;
  (void)state;
  assert_int_equal(rk__device_prepare_enter(-1, &n), RK_EINVAL);
  assert_int_equal(rk__device_prepare_enter(RK__MAX_DEVICES, &n), RK_EINVAL);
  assert_int_equal(rk__device_resident_enter(RK__MAX_DEVICES, 0), RK_EINVAL);
  assert_int_equal(rk__device_prepare_enter(3, &n), RK_OK);
  assert_int_equal(n, 0);
  assert_int_equal(rk__device_resident_enter(3, 2 * RT_MS), RK_ETIMEDOUT); /* a preparation in progress */
  assert_int_equal(rk__device_resident(3), 0);                             /* backed out */
  rk__device_prepare_exit(3);
  assert_int_equal(rk__device_resident_enter(3, 0), RK_OK);
  assert_int_equal(rk__device_resident_enter(3, 0), RK_OK);
  assert_int_equal(rk__device_resident(3), 2);
  assert_int_equal(rk__device_prepare_enter(3, &n), RK_ESTATE);
  assert_int_equal(n, 2);
  assert_int_equal(rk__device_prepare_enter(4, &n), RK_OK); /* per device */
  rk__device_prepare_exit(4);
  rk__device_resident_exit(3);
  rk__device_resident_exit(3);
  assert_int_equal(rk__device_prepare_enter(3, &n), RK_OK);
  rk__device_prepare_exit(3);
}

/* Two threads race, one preparing, one launching, over and over: never both inside at once. */
static int g_inside_prepare, g_inside_resident, g_overlaps, g_launcher_done;
static uint32_t g_prepared, g_launched;

#define RACE_ROUNDS 20000

static void race_preparer(void *arg) {
  (void)arg;
  /* a test's flags: seq_cst, the simplest to reason about */
  while (!__atomic_load_n(&g_launcher_done, __ATOMIC_SEQ_CST)) {
    if (rk__device_prepare_enter(5, NULL) != RK_OK) continue;
    __atomic_store_n(&g_inside_prepare, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g_inside_resident, __ATOMIC_SEQ_CST)) __atomic_add_fetch(&g_overlaps, 1, __ATOMIC_RELAXED);
    g_prepared++;
    __atomic_store_n(&g_inside_prepare, 0, __ATOMIC_SEQ_CST);
    rk__device_prepare_exit(5);
  }
}

static void race_launcher(void *arg) {
  int i;
  (void)arg;
  for (i = 0; i < RACE_ROUNDS; i++) {
    if (rk__device_resident_enter(5, RT_HANG) != RK_OK) fail_msg("a launch waited out a preparation for 10 s");
    __atomic_store_n(&g_inside_resident, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g_inside_prepare, __ATOMIC_SEQ_CST)) __atomic_add_fetch(&g_overlaps, 1, __ATOMIC_RELAXED);
    g_launched++;
    __atomic_store_n(&g_inside_resident, 0, __ATOMIC_SEQ_CST);
    rk__device_resident_exit(5);
    if ((i & 15) == 0) sched_yield(); /* a window for the preparer */
  }
  __atomic_store_n(&g_launcher_done, 1, __ATOMIC_SEQ_CST);
}

static void test_device_use_race(void **state) {
  uv_thread_t a, b;
  (void)state;
  assert_int_equal(uv_thread_create(&a, race_preparer, NULL), 0);
  assert_int_equal(uv_thread_create(&b, race_launcher, NULL), 0);
  uv_thread_join(&a);
  uv_thread_join(&b);
  assert_int_equal(g_overlaps, 0);
  assert_int_equal(g_launched, RACE_ROUNDS);
  assert_int_equal(rk__device_resident(5), 0);
  print_message("device use race: %u preparations between %u launches, none overlapping\n", g_prepared, g_launched);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_probe),
      cmocka_unit_test(test_queued_blocks_keep_memory),
      cmocka_unit_test(test_unconfirmed_terminate),
      cmocka_unit_test(test_terminate_dead_lanes),
      cmocka_unit_test(test_fault_at_check_in),
      cmocka_unit_test(test_abandon_lanes_that_never_stop),
      cmocka_unit_test(test_device_use_rules),
      cmocka_unit_test(test_device_use_race),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
