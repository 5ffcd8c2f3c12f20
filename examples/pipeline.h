/* pipeline.h — the messages of the pipeline's kernels, shared by their dialect source
 * (pipeline_kernels.c, compiled by cc and, through ringkernel_add_kernels, by nvcc) and the host
 * program that drives them (pipeline.c). */
#ifndef RK_EXAMPLE_PIPELINE_H
#define RK_EXAMPLE_PIPELINE_H

#include <ringkernel.h>

#define SENSORS 64

/* ---- messages ---- */
typedef struct reading { /* host -> parse: "s<sensor>=<value>" */
  uint64_t seq;
  uint64_t sent_ns; /* host CLOCK_MONOTONIC at send, for the end-to-end latency */
  char text[32];
} reading;
typedef struct sample { /* parse -> enrich -> aggregate */
  uint64_t seq, sent_ns;
  uint32_t sensor;
  int32_t value;
  int64_t calibrated;
  rk_hlc seen[3]; /* the stamp each stage received */
} sample;
typedef struct summary { /* aggregate -> host */
  uint64_t seq, sent_ns;
  uint32_t sensor, lane;
  int64_t total; /* the sensor's running total after this reading */
  uint64_t count;
  rk_hlc seen[3];
} summary;
RK_MESSAGE(reading, 400);
RK_MESSAGE(sample, 401);
RK_MESSAGE(summary, 402);

/* aggregate's state: per sensor, owned by the lane its key maps to */
typedef struct totals {
  int64_t total[SENSORS];
  uint64_t count[SENSORS];
  uint32_t owner[SENSORS]; /* lane + 1 that owns the sensor: must never change */
  uint64_t misrouted;
} totals;

/* the calibration enrich applies (its state, set up by its initialiser) */
#define PIPELINE_GAIN(sensor) (1 + (int32_t)((sensor) % 3))
#define PIPELINE_OFFSET(sensor) ((int32_t)(sensor) - 10)

/* The kernels, defined with RK_KERNEL in pipeline_kernels.c. */
RK_KERNEL_DECLARE(parse);
RK_KERNEL_DECLARE(enrich);
RK_KERNEL_DECLARE(aggregate);

#endif
