/* pipeline_kernels.c — the pipeline's three kernels in the kernel dialect: parse -> enrich ->
 * aggregate, each passing the request on with rk_forward_key (keyed by sensor) so the last stage
 * answers the host. Built by ringkernel_add_kernels into the example (cc, and nvcc when present);
 * `pipeline --cuda` runs them as persistent CUDA kernels (docs/k2k.md, "On the device"). */
#include "pipeline.h"

RK_HANDLER(parse_handler)(rk_ctx *ctx, const rk_msg *in) {
  const reading *r = RK_MSG_AS(in, reading);
  sample s = {0}; /* (the dialect has no libc: initialisers and assignments, not memset/memcpy) */
  uint32_t i = 1, sensor = 0, digits = 0;
  int32_t value = 0, neg = 0;
  if (r == 0 || r->text[0] != 's') return RK_EINVAL;
  while (i < sizeof r->text && r->text[i] >= '0' && r->text[i] <= '9') sensor = sensor * 10 + (uint32_t)(r->text[i++] - '0'), digits++;
  if (digits == 0 || sensor >= SENSORS || i >= sizeof r->text || r->text[i++] != '=') return RK_EINVAL;
  if (r->text[i] == '-') neg = 1, i++;
  for (digits = 0; i < sizeof r->text && r->text[i] >= '0' && r->text[i] <= '9'; i++, digits++) value = value * 10 + (r->text[i] - '0');
  if (digits == 0 || (i < sizeof r->text && r->text[i] != 0)) return RK_EINVAL;
  s.seq = r->seq;
  s.sent_ns = r->sent_ns;
  s.sensor = sensor;
  s.value = neg ? -value : value;
  s.seen[0] = in->env.hlc;
  return rk_forward_key(ctx, 0, sensor, sample_TYPE, &s, sizeof s); /* RK_EAGAIN: run again later */
}

typedef struct calibration {
  int32_t gain[SENSORS], offset[SENSORS];
} calibration;

/* enrich's state initialiser: host code, run once at launch (not compiled for the device) */
#if !defined(__CUDACC__)
static int calibration_init(void *state, size_t size, void *user) {
  calibration *c = (calibration *)state;
  uint32_t i;
  (void)size, (void)user;
  for (i = 0; i < SENSORS; i++) {
    c->gain[i] = PIPELINE_GAIN(i);
    c->offset[i] = PIPELINE_OFFSET(i);
  }
  return 0;
}
#endif

RK_HANDLER(enrich_handler)(rk_ctx *ctx, const rk_msg *in) {
  const calibration *c = (const calibration *)rk_state(ctx);
  const sample *p = RK_MSG_AS(in, sample);
  sample s;
  if (p == 0) return RK_EMSGSIZE;
  if (c == 0) return RK_ESTATE; /* the descriptor declared no state */
  s = *p;
  s.calibrated = (int64_t)s.value * c->gain[s.sensor] + c->offset[s.sensor];
  s.seen[1] = in->env.hlc;
  return rk_forward_key(ctx, 0, s.sensor, sample_TYPE, &s, sizeof s);
}

RK_HANDLER(aggregate_handler)(rk_ctx *ctx, const rk_msg *in) {
  totals *t = (totals *)rk_state(ctx);
  const sample *p = RK_MSG_AS(in, sample);
  summary out = {0};
  sample s;
  if (p == 0) return RK_EMSGSIZE;
  if (t == 0) return RK_ESTATE;
  s = *p;
  /* the sensor's lane owns its slot: keyed routing sends all of its readings here, in order */
  if (t->owner[s.sensor] == 0) t->owner[s.sensor] = rk_lane(ctx) + 1;
  if (t->owner[s.sensor] != rk_lane(ctx) + 1) t->misrouted++;
  t->total[s.sensor] += s.calibrated;
  t->count[s.sensor]++;
  out.seq = s.seq;
  out.sent_ns = s.sent_ns;
  out.sensor = s.sensor;
  out.lane = rk_lane(ctx);
  out.total = t->total[s.sensor];
  out.count = t->count[s.sensor];
  out.seen[0] = s.seen[0];
  out.seen[1] = s.seen[1];
  out.seen[2] = in->env.hlc;
  return rk_reply_typed(ctx, summary, &out);
}


RK_KERNEL(parse, parse_handler, .lanes = 2, RK_TYPES(&reading_msgtype));
RK_KERNEL(enrich, enrich_handler, .lanes = 2, .state_size = sizeof(calibration), .state_init = calibration_init);
RK_KERNEL(aggregate, aggregate_handler, .lanes = 2, .state_size = sizeof(totals));
