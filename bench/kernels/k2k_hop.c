/* k2k_hop.c — the K2K kernels of `rk-bench gpu`: the ping-pong (k2k.hop, ringkernel.cuda): A sends to B, B
 * answers A, want times, timed inside A with the device's own clock (%globaltimer), so neither
 * PCIe nor the host is in the hop. The kernel dialect, built by ringkernel_add_kernels. */
#include "k2k_hop.h"

#if !defined(__CUDACC__)
#include <time.h>
#endif

static RK_HD uint64_t hop_now_ns(void) {
#if defined(__CUDA_ARCH__)
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#elif defined(__CUDACC__)
  return 0;
#else
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
}

/* A: the host's start sends the first ping; each ping back ends a round trip and, until the
 * wanted number, sends the next. The K2K inboxes hold 1024: a send never finds one full here. */
RK_HANDLER(k2k_hop_a_handler)(rk_ctx *ctx, const rk_msg *in) {
  k2k_hop_state *s = (k2k_hop_state *)rk_state(ctx);
  uint64_t v = 0;
  if (rk_msg_type_of(in) == K2K_HOP_PING) {
    if (rk_thread(ctx) == 0) {
      uint64_t t = hop_now_ns();
      if (s->n < K2K_HOP_SAMPLES) s->rtt_ns[s->n] = t - s->t0;
      s->n++;
    }
    rk_sync(ctx);
    if (s->n >= s->want) return 0;
  } else if (rk_msg_type_of(in) == K2K_HOP_START && rk_msg_len(in) == sizeof(uint64_t)) {
    if (rk_thread(ctx) == 0) {
      s->want = *(const uint64_t *)rk_msg_payload(in);
      s->n = 0;
    }
    rk_sync(ctx);
  } else {
    return RK_EINVAL;
  }
  if (rk_thread(ctx) == 0) s->t0 = hop_now_ns();
  rk_sync(ctx);
  return rk_send_to(ctx, 0, K2K_HOP_PING, &v, sizeof v);
}

/* B: every ping straight back. */
RK_HANDLER(k2k_hop_b_handler)(rk_ctx *ctx, const rk_msg *in) {
  return rk_send_to(ctx, 0, K2K_HOP_PING, rk_msg_payload(in), rk_msg_len(in));
}

RK_KERNEL(k2k_hop_a, k2k_hop_a_handler, .state_size = sizeof(k2k_hop_state));
RK_KERNEL(k2k_hop_b, k2k_hop_b_handler);

/* The pipeline (k2k.pipeline): as bench/k2k.c's CPU handlers. */
RK_HANDLER(k2k_pipe_parse_handler)(rk_ctx *ctx, const rk_msg *in) {
  k2k_pipe_item it;
  if (rk_msg_len(in) != sizeof it) return RK_EMSGSIZE;
  it = *(const k2k_pipe_item *)rk_msg_payload(in);
  it.value = it.value * 3;
  return rk_forward(ctx, 0, K2K_PIPE_ITEM, &it, sizeof it);
}
RK_HANDLER(k2k_pipe_enrich_handler)(rk_ctx *ctx, const rk_msg *in) {
  k2k_pipe_item it = *(const k2k_pipe_item *)rk_msg_payload(in);
  it.value = it.value + 7;
  return rk_forward(ctx, 0, K2K_PIPE_ITEM, &it, sizeof it);
}
RK_HANDLER(k2k_pipe_aggregate_handler)(rk_ctx *ctx, const rk_msg *in) {
  return rk_reply(ctx, K2K_PIPE_RESULT, rk_msg_payload(in), rk_msg_len(in));
}
RK_KERNEL(k2k_pipe_parse, k2k_pipe_parse_handler);
RK_KERNEL(k2k_pipe_enrich, k2k_pipe_enrich_handler);
RK_KERNEL(k2k_pipe_aggregate, k2k_pipe_aggregate_handler);
