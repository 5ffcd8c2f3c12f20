/* host/failpoint.h — the library's allocations and thread creations, through fail points.
 *
 * Every heap allocation the host runtime makes (runtime, kernels, rings and control blocks of the
 * CPU backend, clocks, lane arrays, queued replies, dead letters) goes through rk__malloc /
 * rk__calloc / rk__aligned_alloc, every thread it starts through rk__thread_create, and the libuv
 * resources that take file descriptors through rk__uv_loop_init / rk__uv_async_init
 * (host/internal.h). A test arms a fail point to make the Nth call from now fail (once, or from the
 * Nth on) and sweeps N over an operation: each failure must give a clean error, leak nothing, hang
 * nothing and leave the runtime usable (tests/test_failpoints.c). Disarmed, a fail point costs one
 * relaxed load. RK__FP_CLOCK and rk__failpoint_clock_widen are no resources: they reproduce a
 * slow clock calibration without a loaded machine. Process-wide; not for production use
 * (internal, hidden symbols). */
#ifndef RK_HOST_FAILPOINT_H
#define RK_HOST_FAILPOINT_H

#include <stddef.h>
#include <stdint.h>

typedef enum rk__failpoint {
  RK__FP_ALLOC = 0,  /* rk__malloc, rk__calloc, rk__aligned_alloc */
  RK__FP_THREAD = 1, /* rk__thread_create */
  RK__FP_UV = 2,     /* rk__uv_loop_init, rk__uv_async_init: libuv resources (descriptors) */
  RK__FP_RESOURCES = 3, /* the kinds above: resources whose failure must give a clean error */
  RK__FP_CLOCK = 3,  /* a clock exchange (kernel.c) misses, as when lane 0 answers too late */
  RK__FP_KINDS = 4
} rk__failpoint;

/* Arm `kind`: counting from 1 at this call, the nth call fails (persistent != 0: the nth and every
 * later one). nth == 0 disarms. Resets the counts. */
void rk__failpoint_arm(rk__failpoint kind, uint64_t nth, int persistent);
/* Disarm `kind`; returns the number of failures injected since it was armed. */
uint64_t rk__failpoint_disarm(rk__failpoint kind);
/* Calls of `kind` counted since it was armed (0 while disarmed). */
uint64_t rk__failpoint_calls(rk__failpoint kind);
/* Should this call of `kind` fail? Counts it when armed. */
int rk__failpoint_hit(rk__failpoint kind);

/* Widen the coarse window of every launch calibration from now on by ns (0: off): as if the start
 * (ops->start to the lanes' check-in) had taken that much longer, a loaded machine. With
 * RK__FP_CLOCK armed (persistently), the launch and service exchanges all miss and that window's
 * midpoint is the offset in force (tests/test_devemu.c). */
void rk__failpoint_clock_widen(uint64_t ns);
uint64_t rk__failpoint_clock_widen_ns(void);

/* The allocation wrappers (free with free()). rk__aligned_alloc rounds n up to a multiple of
 * align, as aligned_alloc requires. */
void *rk__malloc(size_t n);
void *rk__calloc(size_t count, size_t size);
void *rk__aligned_alloc(size_t align, size_t n);

#endif
