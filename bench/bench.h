/* bench.h — what every rk-bench subcommand shares: options, the result sink (JSON lines or a
 * table), the machine string, timers, percentiles, thread pinning and a start barrier.
 *
 * Adding a subcommand: write bench/<name>.c with `int rk_bench_<name>(const rk_bench_opts *)`,
 * declare it below and add one row to the dispatch table in bench/main.c. Results go through
 * rk_bench_emit() only; names (bench, impl, metric) are compared across runs, so never rename one.
 * See bench/README.md. */
#ifndef RK_BENCH_H
#define RK_BENCH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* gpu_baselines.cu includes this header */
#endif

#define RK_BENCH_MSG_SIZE 64u   /* every ring comparison moves 64-byte messages */
#define RK_BENCH_CAPACITY 1024u /* and every ring has 1024 slots */
#define RK_BENCH_BATCH 32u      /* the batch size of the *.batch impls */

typedef struct rk_bench_opts {
  int json;       /* --json: one JSON object per line on stdout, nothing else there */
  int quick;      /* --quick: short run (smoke test / CI), same names */
  double seconds; /* time budget of one measurement (one impl, one bench) */
  int trials;     /* timed repetitions per throughput measurement (median reported) */
  const char *filter; /* --filter S: run only measurements whose "bench/impl/metric" contains S */
} rk_bench_opts;

/* Nonzero when the measurement named "bench/impl/metric" is selected by --filter (always without
 * one). metric may be NULL ("bench/impl/"). */
int rk_bench_want(const rk_bench_opts *opts, const char *bench, const char *impl,
                  const char *metric);

typedef int (*rk_bench_fn)(const rk_bench_opts *opts);

/* ---- subcommands (one row each in main.c's dispatch table) ---- */
int rk_bench_ring(const rk_bench_opts *opts);
int rk_bench_hlc(const rk_bench_opts *opts);
int rk_bench_rtt(const rk_bench_opts *opts);
int rk_bench_gpu(const rk_bench_opts *opts);
int rk_bench_devmodel(const rk_bench_opts *opts);
int rk_bench_gpuprobe(const rk_bench_opts *opts);
int rk_bench_k2k(const rk_bench_opts *opts);
/* ring.c: measure (and emit) ring.spsc/ringkernel's round trip; returns its rtt_p50_ns (-1: none).
 * For subcommands whose target is stated against it in the same run (k2k). */
double rk_bench_ring_rtt_p50(const rk_bench_opts *opts);
int rk_bench_bulk(const rk_bench_opts *opts);
/* mpi.c: under mpirun -np 2 (rank 0 prints; without MPI in the build, a note) */
int rk_bench_mpi(const rk_bench_opts *opts);

/* ---- results ----
 * rk_bench_emit records one figure. With --json it prints {"bench": ..., "impl": ...,
 * "metric": ..., "value": N, "unit": ..., "n": samples, "machine": ...} at once; otherwise it
 * prints a progress line on stderr and keeps the figure for the table. spread_lo/spread_hi
 * (same unit; NaN when not applicable) are shown in the table only. */
void rk_bench_emit(const char *bench, const char *impl, const char *metric, double value,
                   const char *unit, uint64_t n, double spread_lo, double spread_hi);
/* Table mode: print the table of every figure recorded whose bench name starts with prefix,
 * one block per bench (rows: impls, columns: metrics), then forget them. No-op with --json. */
void rk_bench_table(const char *prefix);
/* Table mode: print "bench metric: num/den = R (target: >= T | <= T) ok|MISSED". target <= 0:
 * informative ratio, no target. higher_better says which way the target points. */
void rk_bench_ratio(const char *bench, const char *metric, const char *num, const char *den,
                    double target, int higher_better);
/* Table mode: a free-form note line on stdout (e.g. pinning, parameters). No-op with --json
 * (then it goes to stderr, so stdout stays pure JSON). */
void rk_bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int rk_bench_json(void);
void rk_bench_set_json(int on);
/* Nonzero if any figure missed its target or a validation failed (exit status of rk-bench). */
int rk_bench_failed(void);
void rk_bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- machine ---- */
/* "CPU model (N cores)" from /proc/cpuinfo and the online CPU count; static storage. */
const char *rk_bench_machine(void);
/* Name another machine on the result lines that follow (e.g. the GPU); NULL or "" restores the CPU. */
void rk_bench_set_machine(const char *machine);

/* 1-minute load average from /proc/loadavg (-1 if unknown): other work on the machine skews
 * every figure, so rk-bench reports it. */
double rk_bench_loadavg(void);
/* Interference meter: the share of all CPUs' time that *other* processes used between begin and
 * end, in percent (-1 if unknown). /proc/stat busy time minus this process's own CPU time. */
typedef struct rk_bench_others {
  double busy0, self0;
  uint64_t t0;
  int ok;
} rk_bench_others;
void rk_bench_others_begin(rk_bench_others *o);
double rk_bench_others_end(const rk_bench_others *o);

/* ---- time ---- */
/* CLOCK_MONOTONIC in ns (vDSO; ~20 ns per read). For whole-run timings. */
uint64_t rk_bench_now_ns(void);
/* Cycle counter for per-sample timings (rdtsc on x86, ordered by lfence; clock_gettime elsewhere);
 * rk_bench_ticks_to_ns converts with a calibration against CLOCK_MONOTONIC done on first use. */
static inline uint64_t rk_bench_ticks(void) {
#if defined(__x86_64__) || defined(__i386__)
  uint32_t lo, hi;
  __asm__ __volatile__("lfence\n\trdtsc" : "=a"(lo), "=d"(hi)::"memory");
  return ((uint64_t)hi << 32) | lo;
#else
  return rk_bench_now_ns();
#endif
}
double rk_bench_ticks_per_ns(void);
/* Cost of one rk_bench_ticks() pair in ns (median), included in every per-sample time. */
double rk_bench_ticks_overhead_ns(void);
/* Smallest nonzero step of rk_bench_ticks() in ns (virtual machines may coarsen the TSC). */
double rk_bench_ticks_granularity_ns(void);

/* ---- statistics ---- */
/* Sorts v (n values) in place and returns the value at quantile q (0..1), nearest rank. */
uint64_t rk_bench_quantile_u64(uint64_t *v, size_t n, double q);
/* Median of n doubles (sorts in place); min and max optional. */
double rk_bench_median(double *v, size_t n, double *min, double *max);

/* ---- threads ---- */
/* Number of CPUs this process may run on, and the i-th of them (i modulo the count). */
int rk_bench_ncpus(void);
int rk_bench_cpu(int i);
/* Pin the calling thread to CPU `cpu` (an id from rk_bench_cpu). Returns 0 or an errno. */
int rk_bench_pin(int cpu);
/* Start a thread pinned to cpu (cpu < 0: not pinned); the pin is applied before fn runs.
 * *pinned (may be NULL) receives 1 when the pin took. Returns 0 or an errno. */
int rk_bench_spawn(pthread_t *t, int cpu, void *(*fn)(void *), void *arg, int *pinned);

/* A spinning start barrier: every party arrives, the last one releases everyone at once. */
typedef struct rk_bench_barrier {
  volatile uint32_t arrived;
  uint32_t parties;
} rk_bench_barrier;
void rk_bench_barrier_init(rk_bench_barrier *b, uint32_t parties);
void rk_bench_barrier_wait(rk_bench_barrier *b);

/* Median round trip of one cache line bounced between CPUs 0 and 1 (pinned, acquire/release), in
 * ns, over about `seconds`: the machine's core-to-core floor at that moment. On a virtual machine it
 * moves when the host moves the vCPUs (110 ns vs 250+ ns here), and every ring figure moves with it,
 * so rk-bench prints it before and after the ring measurements. -1 with fewer than 2 CPUs. */
double rk_bench_line_rtt_ns(double seconds);

/* Pause once (the wait policy of every spinning loop in the ring comparisons). */
static inline void rk_bench_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* The floor's payload: RK_BENCH_FLOOR_BYTES after the sequence word, in its line (rtt.echo's
 * RTT_PAYLOAD and ring.spsc's floor line; both check it). */
#define RK_BENCH_FLOOR_BYTES 32u

/* The echo side of the round-trip floor (rtt.echo's floor impl, ring.spsc's floor impl): one line
 * holds a sequence word *seq and RK_BENCH_FLOOR_BYTES at data; the pinger writes a request there
 * and stores an odd seq (release), this reads the bytes (acquire), writes them back as the reply
 * and stores seq + 1. The first request is seq 1; returns when *seq is ~0. Inline, with the size a
 * constant: the floor is the denominator of issue 16's ratios, so its loop must stay the tight one
 * the two copies were (a call with a run-time length would add a memcpy call to it). */
static inline void rk_bench_floor_echo(volatile uint64_t *seq, uint8_t *data) {
  uint64_t expect = 1;
  uint8_t tmp[RK_BENCH_FLOOR_BYTES];
  for (;;) {
    uint64_t v = __atomic_load_n(seq, __ATOMIC_ACQUIRE); /* pairs with the pinger's release */
    if (v == ~0ull) break;
    if (v != expect) {
      rk_bench_relax();
      continue;
    }
    __builtin_memcpy(tmp, data, sizeof tmp); /* read the request, write it back as the reply */
    __builtin_memcpy(data, tmp, sizeof tmp);
    __atomic_store_n(seq, expect + 1, __ATOMIC_RELEASE); /* pairs with the pinger's acquire */
    expect += 2;
  }
}

/* Keep a value alive without a store the compiler could elide. */
#define RK_BENCH_KEEP(x) __asm__ __volatile__("" : : "r"(x) : "memory")

/* n bytes that differ for every request number i (a stale or mixed-up reply does not match). */
static inline void rk_bench_pattern(uint8_t *p, uint32_t n, uint64_t i) {
  uint32_t j;
  for (j = 0; j < n; j++) p[j] = (uint8_t)((i * 0x9e3779b97f4a7c15ull) >> (8 * (j & 7))) ^ (uint8_t)j;
}

/* ---- GPU (built with CUDA only): gpu_baselines.cu ---- */
/* "NVIDIA H100 80GB HBM3 (cc 9.0, 132 SMs)", or -1 when the device cannot be queried. */
int rk_bench_gpu_name(int device, char *buf, size_t len);
/* The launch-per-message baselines. open allocates everything and loads the kernel (call it while
 * no ring kernel is resident); run times one impl (mode 0: cuda.launch, 1: cuda.graph,
 * 2: cuda.launch.zerocopy) for warm_seconds untimed then `seconds`, one sample (ns) per message
 * into v (at most cap), every reply checked; close frees. 0 or -1 (err set). */
typedef struct rk_bench_gpu_base rk_bench_gpu_base;
int rk_bench_gpu_base_open(int device, uint32_t payload, rk_bench_gpu_base **out, char *err, size_t errlen);
int rk_bench_gpu_base_run(rk_bench_gpu_base *b, int mode, double seconds, double warm_seconds, uint64_t *v,
                          size_t cap, size_t *n, char *err, size_t errlen);
void rk_bench_gpu_base_close(rk_bench_gpu_base *b);
/* The raw device probes of `rk-bench gpuprobe` (gpu_probe.cu): ns per operation, one thread. Call
 * while no ring kernel is resident (it allocates). 0 or -1 (err set). */
typedef struct rk_bench_gpu_probe {
  double host_read_ns, host_read_x8_ns, host_read_v2_ns, fence_sys_store_ns, fence_sys_idle_ns, globaltimer_tick_ns;
} rk_bench_gpu_probe;
int rk_bench_gpu_probe_raw(int device, rk_bench_gpu_probe *r, char *err, size_t errlen);
/* The SM count of the device, or -1. */
int rk_bench_gpu_sms(int device);
/* The vector_add baselines of `rk-bench bulk` (gpu_baselines.cu): open allocates a, b, c of n
 * floats on the device and pinned host copies, loads the kernel (call it while no ring kernel is
 * resident); run times mode 0 (cuda.launch: cudaMemcpy a and b in, a grid-stride launch, cudaMemcpy
 * c out) or mode 1 (cuda.resident: the launch and its synchronisation only) for `seconds`, checks
 * c, and gives elements per second in *elems_per_s; close frees. 0 or -1 (err set). */
typedef struct rk_bench_gpu_vadd rk_bench_gpu_vadd;
int rk_bench_gpu_vadd_open(int device, uint64_t n, rk_bench_gpu_vadd **out, char *err, size_t errlen);
int rk_bench_gpu_vadd_run(rk_bench_gpu_vadd *v, int mode, double seconds, double *elems_per_s, char *err, size_t errlen);
void rk_bench_gpu_vadd_close(rk_bench_gpu_vadd *v);

#ifdef __cplusplus
}
#endif

/* k2k.c: the K2K pipeline (k2k.pipeline) on rt's backend with kernels d (parse, enrich, aggregate);
 * the median msgs/s of the trials. 0, or -1 after rk_bench_fail. */
struct rk_runtime;
struct rk_kernel_desc;
int rk_bench_k2k_pipeline(const rk_bench_opts *o, struct rk_runtime *rt, const struct rk_kernel_desc *const d[3],
                          double *median, double *lo, double *hi, int *trials);

#endif /* RK_BENCH_H */
