/* twin_kernel.c — the "tally" test kernel, one dialect source for every way a kernel is built:
 * ringkernel_add_kernels compiles it into test_kernel_twins and test_gpu (cc, and nvcc where the
 * build has CUDA), and the same tests hand its text, after twin_kernel.h's, to the runtime as a
 * source kernel (cc on the CPU backend, NVRTC on CUDA). Both must pass the same checks
 * (twin_check.h). The guard below lets the header's text come first in the run-time source. */
#ifndef TWIN_KERNEL_H
#include "twin_kernel.h"
#endif

typedef struct tally_state {
  int64_t total[TALLY_KEYS];
  uint64_t count[TALLY_KEYS];
} tally_state;

RK_HANDLER(tally_handler)(rk_ctx *ctx, const rk_msg *in) {
  const tally_add *a = RK_MSG_AS(in, tally_add);
  tally_state *st = RK_CAST(tally_state *, rk_state(ctx));
  tally_total *out;
  int64_t before;
  if (a == 0 || st == 0) return RK_EINVAL;
  if (a->key >= TALLY_KEYS) return RK_ENOENT;
  before = st->total[a->key];
  rk_sync(ctx); /* every thread read it before thread 0 writes it */
  if (before + a->amount < 0) return RK_EINVAL;
  out = RK_CAST(tally_total *, rk_reply_reserve(ctx, tally_total_TYPE, (uint32_t)sizeof(tally_total)));
  if (rk_thread(ctx) == 0) {
    st->total[a->key] = before + a->amount;
    st->count[a->key] += 1;
    if (out) {
      out->key = a->key;
      out->lane = rk_lane(ctx);
      out->total = st->total[a->key];
      out->count = st->count[a->key];
      out->stamp = rk_now(ctx);
    }
  }
  if (out == 0) return RK_OK; /* no reply wanted */
  return rk_reply_commit(ctx);
}

RK_KERNEL(tally, tally_handler, .state_size = sizeof(tally_state), .lanes = 2, RK_TYPES(&tally_add_msgtype));
