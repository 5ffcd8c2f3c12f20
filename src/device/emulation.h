/* device/emulation.h — compile the device lane loop (persistent.cuh) as host C++ for the test
 * suite's and rk-bench's device emulation (src/device/emulation_lanes.cpp): each thread of a block
 * a host thread.
 *
 * The persistent loop, the control-block protocol, the batch reads, the reply staging and flush,
 * the clock exchange and the shutdown are the very code the GPU runs; what is emulated is the
 * hardware: the CUDA keywords, __nanosleep (a yield), %globaltimer (CLOCK_MONOTONIC, deliberately
 * not the host's CLOCK_REALTIME, so stamps are right only if the measured offset is applied),
 * shared memory (a per-block arena its threads share), __syncthreads (a barrier of the block's
 * threads) and the memory: the ordering functions of atomic.h take their host (GCC) forms. What
 * it cannot show: PCIe latencies, the PTX memory model's weaker-than-x86 cases, warps,
 * co-residency. Host C++ only; never in librk.
 *
 * The cost model. Every access the lane makes to host-mapped memory goes through persistent.cuh's
 * rk_dev_ld* / rk_dev_st* / rk_dev_fence, which here also count it (rk_emu_note_*), so the
 * emulated lane says how many PCIe round trips, system fences and line writes a message costs
 * (rk-bench devmodel; docs/cuda-backend.md, "The cost model"). The rules:
 *  - a load of mapped memory is a round trip; loads a thread issues back to back inside a declared
 *    group (RK_DEV_ROUND_BEGIN/END: the code loads them all into registers before it uses any)
 *    share one round, and an acquire load closes the round (the loads after it wait for it), as
 *    does a fence;
 *  - the lane's critical path is thread 0's rounds: thread 0 does every serial read (control line,
 *    sequence words, the outbox head) and takes part in every parallel one (the slot copy, where
 *    it has the most chunks), so the other threads' rounds overlap with its own;
 *  - a system fence is fence.acq_rel.sys, fence.sc.sys, or a store-release at system scope (its SASS
 *    is a MEMBAR.SYS before the store); an acquire load is not (LD + CCTL.IVALL, no MEMBAR) but is
 *    counted apart;
 *  - stores are posted (no round); a reply's line writes are the 64-byte lines its copy to the
 *    outbox covers (a warp storing 16 bytes per thread writes whole lines: one transaction each);
 *  - thread 0 sorts each loop iteration into work (it took messages, or published) or idle (a poll
 *    that found nothing), so idle polling does not count against messages.
 * A counted model, not a measurement: it says what the code asks of PCIe, not what PCIe takes. */
#ifndef RK_DEVICE_EMULATION_H
#define RK_DEVICE_EMULATION_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "device/emulation.h is for a host C++ compiler"
#endif
#ifndef __cplusplus
#error "device/emulation.h needs C++ (persistent.cuh is C++)"
#endif
#ifndef RK_DEVICE_EMULATION
#define RK_DEVICE_EMULATION 1
#endif

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "device/emulation_model.h"

/* The lane's deep-idle threshold, scaled to the emulated device's speed: an emulated lane of 32
 * host threads on a few CPUs answers in milliseconds where a GPU lane answers in microseconds, so
 * with the GPU's 200 us every message of a ping-pong would find it "deep idle", which no message of
 * a GPU ping-pong does, and the counts would describe a lane the GPU never runs. */
#define RK_DEV_DEEP_IDLE_NS 50000000ull

#define __device__
#define __global__
#define __align__(n) alignas(n)

struct rk_emu_dim3 {
  unsigned x, y, z;
};

/* One block: its threads' barrier, its dynamic shared memory and an arena for its shared variables
 * (RK_DEV_SHARED in persistent.cuh), placed by source line, the same for every thread. */
#define RK_EMU_STATIC_BYTES 2048u
#define RK_EMU_MAX_SHARED 8
struct rk_emu_block {
  pthread_barrier_t barrier;
  pthread_mutex_t lock;
  uint8_t *dynamic_smem;
  unsigned n_vars, used;
  int var_line[RK_EMU_MAX_SHARED];
  unsigned var_off[RK_EMU_MAX_SHARED];
  alignas(64) uint8_t statics[RK_EMU_STATIC_BYTES];
};

/* Set by the harness on each thread before it enters the loop. */
static thread_local rk_emu_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1};
static thread_local rk_emu_block *rk_emu_cur_block = 0;

static inline uint8_t *rk_emu_dynamic_smem(void) { return rk_emu_cur_block->dynamic_smem; }

template <typename T>
static T &rk_emu_shared(int line) {
  rk_emu_block *b = rk_emu_cur_block;
  unsigned i, off = 0;
  pthread_mutex_lock(&b->lock);
  for (i = 0; i < b->n_vars && b->var_line[i] != line; i++) {
  }
  if (i == b->n_vars) { /* first thread here: place it (uninitialised, as __shared__ is) */
    off = (b->used + (unsigned)alignof(T) - 1) & ~((unsigned)alignof(T) - 1);
    if (i == RK_EMU_MAX_SHARED || off + sizeof(T) > RK_EMU_STATIC_BYTES) __builtin_trap();
    b->var_line[i] = line;
    b->var_off[i] = off;
    b->used = off + (unsigned)sizeof(T);
    b->n_vars++;
  }
  off = b->var_off[i];
  pthread_mutex_unlock(&b->lock);
  return *reinterpret_cast<T *>(b->statics + off);
}

/* ---------------------------------------- the cost model ------------------------------------- */

/* This thread's place in the round rule, and (thread 0) the current loop iteration's counts until
 * it is sorted into work or idle. */
struct rk_emu_thread_model {
  int group;      /* inside RK_DEV_ROUND_BEGIN/END */
  int round_open; /* a round is in flight that further loads of the group join */
  /* the current iteration's counts (thread 0), added to the lane's together when it ends, so a
   * reader (rk-bench devmodel) that resets or reads between two iterations sees whole ones */
  uint64_t it_rounds, it_fences, it_acquires, it_batches, it_msgs, it_replies, it_lines, it_flushes, it_deep;
};
static thread_local rk_emu_thread_model rk_emu_tm = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

static inline rk_emu_lane_model *rk_emu_lm(void) { return &rk_emu_model_lanes[blockIdx.x % RK_EMU_MODEL_LANES]; }
static inline void rk_emu_add(uint64_t *c, uint64_t n) { __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }

static inline void rk_emu_round_begin(void) {
  rk_emu_tm.group = 1;
  rk_emu_tm.round_open = 0;
}
static inline void rk_emu_round_end(void) {
  rk_emu_tm.group = 0;
  rk_emu_tm.round_open = 0;
}
static inline void rk_emu_note_load(unsigned bytes, int acquire) {
  rk_emu_lane_model *m = rk_emu_lm();
  if (!rk_emu_tm.group || !rk_emu_tm.round_open) {
    if (threadIdx.x == 0) rk_emu_tm.it_rounds++;
    rk_emu_tm.round_open = rk_emu_tm.group;
  }
  if (acquire) {
    rk_emu_tm.round_open = 0; /* later loads wait for it */
    if (threadIdx.x == 0) rk_emu_tm.it_acquires++;
  }
  rk_emu_add(&m->loads, 1);
  rk_emu_add(&m->load_bytes, bytes);
}
static inline void rk_emu_note_fence(void) {
  rk_emu_tm.round_open = 0; /* a fence waits for every load before it */
  if (threadIdx.x == 0)
    rk_emu_tm.it_fences++;
  else
    rk_emu_add(&rk_emu_lm()->fences_other, 1);
}
static inline void rk_emu_note_store(unsigned bytes) {
  rk_emu_lane_model *m = rk_emu_lm();
  rk_emu_add(&m->stores, 1);
  rk_emu_add(&m->store_bytes, bytes);
}
/* Thread 0: a loop iteration ends; it was idle (a poll that found nothing) or work. */
static inline void rk_emu_note_iteration(int idle) {
  rk_emu_lane_model *m = rk_emu_lm();
  rk_emu_thread_model *t = &rk_emu_tm;
  if (idle) {
    rk_emu_add(&m->idle_rounds, t->it_rounds);
    rk_emu_add(&m->idle_fences, t->it_fences);
    rk_emu_add(&m->idle_polls, 1);
  } else {
    rk_emu_add(&m->rounds, t->it_rounds);
    rk_emu_add(&m->fences, t->it_fences);
    rk_emu_add(&m->acquires, t->it_acquires);
  }
  rk_emu_add(&m->batches, t->it_batches);
  rk_emu_add(&m->msgs, t->it_msgs);
  rk_emu_add(&m->replies, t->it_replies);
  rk_emu_add(&m->reply_lines, t->it_lines);
  rk_emu_add(&m->flushes, t->it_flushes);
  rk_emu_add(&m->deep_wakes, t->it_deep);
  memset(t, 0, sizeof *t);
}
/* Thread 0: a batch of n messages taken; a publication of r replies covering `lines` lines. */
static inline void rk_emu_note_batch(unsigned n) {
  rk_emu_tm.it_batches++;
  rk_emu_tm.it_msgs += n;
}
static inline void rk_emu_note_replies(unsigned r, unsigned lines) {
  rk_emu_tm.it_replies += r;
  rk_emu_tm.it_lines += lines;
}
static inline uint64_t rk_emu_globaltimer(void);
/* Thread 0: a publication's sequence words are stored (its time: for rk-bench devmodel.callback). */
static inline void rk_emu_note_flush(void) {
  rk_emu_tm.it_flushes++;
  __atomic_store_n(&rk_emu_lm()->last_publish_ns, rk_emu_globaltimer(), __ATOMIC_RELAXED);
}
static inline void rk_emu_note_deep_wake(void) { rk_emu_tm.it_deep++; }

/* ---------------------------------------- the hardware -------------------------------------- */

/* A barrier of the block's threads; like __syncthreads it also orders their memory accesses. */
static inline void __syncthreads(void) {
  rk_emu_tm.round_open = 0;
  if (blockDim.x > 1) pthread_barrier_wait(&rk_emu_cur_block->barrier);
}
static inline void __nanosleep(unsigned ns) {
  (void)ns;
  sched_yield();
}
static inline uint64_t rk_emu_globaltimer(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif /* RK_DEVICE_EMULATION_H */
