/* k2k_hop.h — the K2K kernels of `rk-bench gpu` (the ping-pong and the pipeline) (bench/kernels/k2k_hop.c, built by
 * ringkernel_add_kernels: cc, and nvcc for the device), shared with bench/gpu.c. */
#ifndef RK_BENCH_K2K_HOP_H
#define RK_BENCH_K2K_HOP_H

#include <ringkernel.h>

#define K2K_HOP_START 601u   /* host -> A (no reply): payload uint64 round trips wanted */
#define K2K_HOP_PING 602u    /* A <-> B over K2K */
#define K2K_HOP_SAMPLES 8192u

/* A's state: round-trip times (ns, the device's %globaltimer; CLOCK_MONOTONIC on the CPU), the
 * first K2K_HOP_SAMPLES of them, written by A's thread 0 only. */
typedef struct k2k_hop_state {
  uint64_t want, n, t0;
  uint64_t rtt_ns[K2K_HOP_SAMPLES];
} k2k_hop_state;

RK_KERNEL_DECLARE(k2k_hop_a);
RK_KERNEL_DECLARE(k2k_hop_b);

/* k2k.pipeline, ringkernel.cuda: the three stages of bench/k2k.c's pipeline in the dialect
 * (parse: value * 3, enrich: + 7, both rk_forward; aggregate: the answer to the host). */
#define K2K_PIPE_ITEM 503u
#define K2K_PIPE_RESULT 504u
typedef struct k2k_pipe_item {
  uint64_t seq;
  int64_t value;
} k2k_pipe_item;
RK_KERNEL_DECLARE(k2k_pipe_parse);
RK_KERNEL_DECLARE(k2k_pipe_enrich);
RK_KERNEL_DECLARE(k2k_pipe_aggregate);

#endif
