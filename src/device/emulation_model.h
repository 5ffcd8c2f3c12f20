/* device/emulation_model.h — the counters of the emulated device's cost model (emulation.h), as C,
 * so the test suite and rk-bench read them: per lane (block), what the lane loop asked of
 * host-mapped memory. Host only; never in librk. The counters live in emulation_lanes.cpp. */
#ifndef RK_DEVICE_EMULATION_MODEL_H
#define RK_DEVICE_EMULATION_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RK_EMU_MODEL_LANES 64

/* One lane's counts since the last rk_emu_model_reset. Thread 0's (the critical path): rounds,
 * fences, acquires of work iterations; idle_*: of iterations whose poll found nothing. All
 * threads: loads, stores and their bytes; fences_other (fences of threads but 0: none by design). */
typedef struct rk_emu_lane_model {
  uint64_t rounds;       /* serial round trips to host memory in work iterations (thread 0) */
  uint64_t fences;       /* system fences in work iterations (thread 0) */
  uint64_t acquires;     /* acquire loads at system scope in work iterations (thread 0) */
  uint64_t idle_rounds, idle_fences, idle_polls;
  uint64_t batches, msgs; /* batches taken from the inbox and their messages */
  uint64_t flushes;       /* publications (flushes that published replies or released the inbox) */
  uint64_t replies, reply_lines; /* replies written to the outbox and the 64-byte lines they cover */
  uint64_t deep_wakes;    /* messages found by a poll from the deep idle back-off */
  uint64_t loads, load_bytes, stores, store_bytes, fences_other;
  uint64_t last_publish_ns; /* CLOCK_MONOTONIC of the lane's latest publication (not summed) */
} rk_emu_lane_model;

/* The counters, one per block index (modulo RK_EMU_MODEL_LANES). */
extern rk_emu_lane_model rk_emu_model_lanes[RK_EMU_MODEL_LANES];

/* Zero every lane's counters (call while no emulated lane runs, or accept a torn snapshot). */
void rk_emu_model_reset(void);
/* A snapshot of lane `lane`'s counters; with lane < 0, the sum over all lanes. */
void rk_emu_model_read(int lane, rk_emu_lane_model *out);

#ifdef __cplusplus
}
#endif

#endif /* RK_DEVICE_EMULATION_MODEL_H */
