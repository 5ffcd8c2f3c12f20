/* device/emulation_lanes.cpp — the device lane loop (src/device/persistent.cuh) and the built-in
 * kernels' handlers (src/device/builtins.h), compiled as host C++ by the device emulation
 * (src/device/emulation.h): the code a GPU runs, run by host threads, with its accesses to
 * host-mapped memory counted (device/emulation_model.h). Built into the rk_devemu library for the
 * test suite (test_devemu, test_cuda_host) and rk-bench (devmodel); never part of librk. */
#include <stdlib.h>
#include <string.h>

#include <string_view>

/* The dialect defines functions a given set of handlers may not use. (#pragma unroll, nvcc's, is
 * silenced by the target's options: GCC cannot silence it from here.) */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "device/emulation.h"

#include "ringkernel/builtins.h"
#include "device/persistent.cuh"

/* The handlers get C++ linkage in a namespace of their own: librk (linked statically by the
 * programs) defines the CPU backend's copies of the same names. */
namespace rk_emu {
#include "device/builtins.h"
}

/* The emulated entry points, one per built-in kernel (RK_BUILTIN_KERNELS), named as on the GPU:
 * internal linkage here (RK_DEFINE_RING_KERNEL under emulation), so no clash with librk's. */
#define EMU_ENTRY(name, h) RK_DEFINE_RING_KERNEL(name, rk_emu::h)
RK_BUILTIN_KERNELS(EMU_ENTRY)

/* Test kernels of the emulated device only (never built for a GPU): handlers that break the
 * dialect's result rules, so the lane's handling of them is tested (test_devemu). Type 1: returns
 * 0 without replying; type 2: returns a positive value; type 3: replies, then returns an error;
 * anything else: echoed. */
namespace rk_emu {
RK_HANDLER(rk_emu_results_handler)(rk_ctx *ctx, const rk_msg *in) {
  switch (rk_msg_type_of(in)) {
    case 1: return 0;
    case 2: return 7;
    case 3: (void)rk_reply(ctx, 3, rk_msg_payload(in), rk_msg_len(in)); return RK_EINVAL;
    default: return rk_reply(ctx, rk_msg_type_of(in), rk_msg_payload(in), rk_msg_len(in));
  }
}

/* A K2K test kernel of the emulated device (test_devemu), its state four 64-bit words:
 *  type 1, payload a uint64 v: a pipeline stage: v + 1 goes on over route 0 (rk_forward), or, in
 *    the last stage (no route: RK_EINVAL), back to the caller as the reply; a full next stage
 *    (RK_EAGAIN) runs the message again later;
 *  type 2, payload (source, seq): sent on over route 0 as type 3 (rk_send_to, retried when full),
 *    then answered with the result;
 *  type 3, payload (source, seq): a sink: counts it (state[0]), adds seq (state[1]), and counts a
 *    seq that is not above the source's last (state[2]; sources 0..7, their last seq in the state
 *    words 8..15); source 7 is a slow subscriber (a busy loop first);
 *  type 4: publishes its payload to topic 0 as type 3 and answers with the number of subscribers
 *    that got it;
 *  type 5: sends to route 7 (none) and answers with the result (RK_EINVAL expected);
 *  type 6, payload (hops left, the stamp of the message before): a ping-pong over route 0 (a
 *    cycle A -> B -> A): counts it (state[3]), counts a stamp not above the one before (state[5]),
 *    and passes it on with one hop less until none is left. */
RK_HANDLER(rk_emu_k2k_handler)(rk_ctx *ctx, const rk_msg *in) {
  uint64_t w[2] = {0, 0};
  uint64_t *st = (uint64_t *)rk_state(ctx);
  int32_t rc;
  if (rk_msg_len(in) >= 8) memcpy(w, rk_msg_payload(in), rk_msg_len(in) >= 16 ? 16 : 8);
  switch (rk_msg_type_of(in)) {
    case 1:
      w[0]++;
      rc = rk_forward(ctx, 0, 1, w, 8);
      if (rc == RK_EINVAL) return rk_reply(ctx, 1, w, 8);
      return rc;
    case 2:
      rc = rk_send_to(ctx, 0, 3, w, 16);
      if (rc == RK_EAGAIN) return rc;
      return rk_reply(ctx, 2, &rc, sizeof rc);
    case 3:
      if (w[0] == 7) { /* the slow subscriber */
        volatile uint64_t spin = 0;
        while (spin < 200000) spin = spin + 1;
      }
      if (rk_thread(ctx) == 0) {
        st[0]++;
        st[1] += w[1];
        if (w[0] < 8) {
          if (w[1] <= st[8 + w[0]]) st[2]++;
          st[8 + w[0]] = w[1];
        }
      }
      return rk_reply(ctx, 3, w, 16); /* (a K2K message without an origin: nothing is sent) */
    case 4:
      rc = rk_publish(ctx, 0, 3, w, 16);
      return rk_reply(ctx, 4, &rc, sizeof rc);
    case 5:
      rc = rk_send_to(ctx, 7, 3, w, 16);
      return rk_reply(ctx, 5, &rc, sizeof rc);
    case 6: {
      uint64_t next[2] = {w[0] - 1, in->env.hlc};
      if (rk_thread(ctx) == 0) {
        st[3]++;
        if (in->env.hlc <= w[1]) st[5]++;
      }
      if (w[0] == 0) return 0;
      rc = rk_send_to(ctx, 0, 6, next, sizeof next);
      return rc == RK_EAGAIN ? rc : 0;
    }
    default:
      return RK_EINVAL;
  }
}
}
RK_DEFINE_RING_KERNEL(rk_emu_kernel_results, rk_emu::rk_emu_results_handler)
RK_DEFINE_RING_KERNEL(rk_emu_kernel_k2k, rk_emu::rk_emu_k2k_handler)

/* A test's own kernel: RK_EMU_EXTRA_SOURCE names a dialect source that defines it with
 * RK_KERNEL(name, ...), RK_EMU_EXTRA_ENTRY its entry point rk_kernel_<name>. The test suite builds
 * this file a second time with them (tests/runtime.cmake, rk_devemu_twin), so an application's
 * kernel runs on the emulated device compiled as nvcc compiles it: after the device loop. */
#if defined(RK_EMU_EXTRA_SOURCE)
#include "ringkernel.h" /* after the loop: RK_KERNEL then defines the emulated entry point */
namespace rk_emu_extra {
#include RK_EMU_EXTRA_SOURCE
}
#define RK_EMU_STR2(x) #x
#define RK_EMU_STR(x) RK_EMU_STR2(x)
#define EMU_EXTRA_ROW {RK_EMU_STR(RK_EMU_EXTRA_ENTRY), rk_emu_extra::RK_EMU_EXTRA_ENTRY},
#else
#define EMU_EXTRA_ROW
#endif

typedef void (*rk_emu_entry_fn)(const rk_dev_params *);

rk_emu_lane_model rk_emu_model_lanes[RK_EMU_MODEL_LANES];

extern "C" void rk_emu_model_reset(void) {
  for (auto &m : rk_emu_model_lanes) {
    uint64_t *w = reinterpret_cast<uint64_t *>(&m);
    for (size_t i = 0; i < sizeof m / sizeof *w; i++) __atomic_store_n(&w[i], 0, __ATOMIC_RELAXED);
  }
}

extern "C" void rk_emu_model_read(int lane, rk_emu_lane_model *out) {
  int first = lane < 0 ? 0 : lane % RK_EMU_MODEL_LANES, last = lane < 0 ? RK_EMU_MODEL_LANES : first + 1;
  uint64_t *o = reinterpret_cast<uint64_t *>(out);
  memset(out, 0, sizeof *out);
  for (int l = first; l < last; l++) {
    const uint64_t *w = reinterpret_cast<const uint64_t *>(&rk_emu_model_lanes[l]);
    for (size_t i = 0; i < sizeof *out / sizeof *o; i++) o[i] += __atomic_load_n(&w[i], __ATOMIC_RELAXED);
  }
  if (lane >= 0) out->last_publish_ns = __atomic_load_n(&rk_emu_model_lanes[first].last_publish_ns, __ATOMIC_RELAXED);
}

/* The emulated entry point for a built-in kernel's CUDA entry name, or NULL. */
extern "C" rk_emu_entry_fn rk_emu_entry(const char *name) {
#define EMU_ROW(name, h) {#name, name},
  static const struct {
    const char *name;
    rk_emu_entry_fn fn;
  } table[] = {RK_BUILTIN_KERNELS(EMU_ROW) EMU_ROW(rk_emu_kernel_results, -) EMU_ROW(rk_emu_kernel_k2k, -) EMU_EXTRA_ROW};
  for (const auto &e : table)
    if (name && std::string_view(name) == e.name) return e.fn;
  return nullptr;
}

/* Run one lane (block `lane`, `threads` threads) until it exits: thread 0 on the calling thread,
 * the others on threads of their own, joined before returning. */
struct emu_thread {
  rk_emu_entry_fn entry;
  const rk_dev_params *p;
  rk_emu_block *block;
  unsigned lane, thread, threads;
  pthread_t tid;
};

static void *emu_thread_main(void *arg) {
  emu_thread *t = static_cast<emu_thread *>(arg);
  threadIdx = {t->thread, 0, 0};
  blockIdx = {t->lane, 0, 0};
  blockDim = {t->threads, 1, 1};
  rk_emu_cur_block = t->block;
  t->entry(t->p);
  return nullptr;
}

extern "C" void rk_emu_run_lane(rk_emu_entry_fn entry, const rk_dev_params *p, uint32_t lane, uint32_t threads,
                               uint8_t *smem) {
  rk_emu_block *b = new rk_emu_block();
  emu_thread *t = new emu_thread[threads];
  uint32_t i;
  pthread_barrier_init(&b->barrier, nullptr, threads);
  pthread_mutex_init(&b->lock, nullptr);
  b->dynamic_smem = smem;
  for (i = 0; i < threads; i++) t[i] = {entry, p, b, lane, i, threads, pthread_t()};
  for (i = 1; i < threads; i++)
    if (pthread_create(&t[i].tid, nullptr, emu_thread_main, &t[i]) != 0) abort(); /* a test harness */
  emu_thread_main(&t[0]);
  for (i = 1; i < threads; i++) pthread_join(t[i].tid, nullptr);
  pthread_barrier_destroy(&b->barrier);
  pthread_mutex_destroy(&b->lock);
  delete[] t;
  delete b;
}
