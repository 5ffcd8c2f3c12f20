/* main.c — rk-bench: every benchmark of the project in one program, one subcommand each.
 *
 *   rk-bench [--json] [--quick] [--seconds S] [--trials N] <subcommand>... | all | list
 *
 * The dispatch table below is the only list of subcommands; `all` runs them in this order.
 * A subcommand appears here only once it is implemented. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct rk_bench_cmd {
  const char *name;
  rk_bench_fn fn;
  const char *help;
} rk_bench_cmd;

static const rk_bench_cmd k_cmds[] = {
    {"ring", rk_bench_ring,
     "SPSC throughput + ping-pong round trip, MPSC 2/4 producers: ringkernel vs ck_ring vs mutex"},
    {"hlc", rk_bench_hlc, "HLC tick/recv ns per op, single and contended, vs bare clock_gettime"},
    {"rtt", rk_bench_rtt, "CPU-backend round trip (rk_call echo) vs condvar, uv_queue_work, cache-line floor; pipelined echo msgs/s"},
    {"gpu", rk_bench_gpu, "CUDA backend round trip vs a launch / a graph per message; 1- and 8-lane echo msgs/s (no device: says so)"},
    {"gpuprobe", rk_bench_gpuprobe,
     "GPU: mapped-memory read round trip, MEMBAR.SYS, %globaltimer tick, echo at 1 vs 32 threads, a first launch while resident"},
    {"bulk", rk_bench_bulk,
     "vector_add on buffers, 2^20 and 2^10 floats: ringkernel.cpu vs plain.c; GPU: ringkernel.cuda vs cuda.launch, cuda.resident"},
    {"k2k", rk_bench_k2k,
     "kernel-to-kernel hop (ping-pong over K2K, timed in the kernels) vs the plain ring round trip; 3-stage pipeline msgs/s"},
    {"mpi", rk_bench_mpi,
     "K2K hop and stream between kernels on two MPI ranks (the bridge) vs plain MPI on the same bytes; under mpirun -np 2"},
    {"devmodel", rk_bench_devmodel,
     "the device lane's PCIe round trips, fences and line writes per message, counted on the emulated device; callback latency"},
};
#define NCMDS (sizeof k_cmds / sizeof k_cmds[0])

static void usage(FILE *f) {
  size_t i;
  fprintf(f,
          "usage: rk-bench [options] <subcommand>...\n"
          "subcommands:\n");
  for (i = 0; i < NCMDS; i++) fprintf(f, "  %-8s %s\n", k_cmds[i].name, k_cmds[i].help);
  fprintf(f,
          "  %-8s run every subcommand above\n"
          "  %-8s print the subcommand names\n"
          "options:\n"
          "  --json         one JSON object per line on stdout: {\"bench\", \"impl\", \"metric\",\n"
          "                 \"value\", \"unit\", \"n\", \"machine\"}; notes go to stderr\n"
          "  --quick        short run (about 0.1 s per measurement, 3 trials)\n"
          "  --seconds S    time budget of one measurement (default 1.0)\n"
          "  --trials N     timed repetitions per throughput figure (default 10; median reported)\n"
          "  --filter S     run only the measurements whose \"bench/impl/metric\" contains S\n"
          "                 (comma-separated alternatives: ring.spsc/ck_ring,/rtt,hlc.tick)\n",
          "all", "list");
}

static const rk_bench_cmd *find_cmd(const char *name) {
  size_t i;
  for (i = 0; i < NCMDS; i++)
    if (strcmp(k_cmds[i].name, name) == 0) return &k_cmds[i];
  return NULL;
}

int main(int argc, char **argv) {
  rk_bench_opts opts = {0, 0, 1.0, 10, NULL};
  const rk_bench_cmd *todo[64];
  int ntodo = 0, i, rc = 0, seconds_set = 0, trials_set = 0;
  size_t c;

  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--json")) {
      opts.json = 1;
    } else if (!strcmp(a, "--quick")) {
      opts.quick = 1;
    } else if (!strcmp(a, "--seconds") && i + 1 < argc) {
      opts.seconds = atof(argv[++i]);
      seconds_set = 1;
      if (!(opts.seconds > 0)) {
        fprintf(stderr, "rk-bench: --seconds needs a positive number\n");
        return 2;
      }
    } else if (!strcmp(a, "--trials") && i + 1 < argc) {
      opts.trials = atoi(argv[++i]);
      trials_set = 1;
      if (opts.trials < 1 || opts.trials > 100) {
        fprintf(stderr, "rk-bench: --trials needs 1..100\n");
        return 2;
      }
    } else if (!strcmp(a, "--filter") && i + 1 < argc) {
      opts.filter = argv[++i];
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "list")) {
      for (c = 0; c < NCMDS; c++) printf("%s\n", k_cmds[c].name);
      return 0;
    } else if (!strcmp(a, "all")) {
      for (c = 0; c < NCMDS && ntodo < 64; c++) todo[ntodo++] = &k_cmds[c];
    } else if (a[0] != '-' && find_cmd(a) != NULL) {
      if (ntodo < 64) todo[ntodo++] = find_cmd(a);
    } else {
      fprintf(stderr, "rk-bench: unknown argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (ntodo == 0) {
    usage(stderr);
    return 2;
  }
  if (opts.quick) {
    if (!seconds_set) opts.seconds = 0.1;
    if (!trials_set) opts.trials = 3;
  }
  rk_bench_set_json(opts.json);
  rk_bench_note("rk-bench: machine: %s; %.2f s per measurement, %d trials%s; load average %.2f",
                rk_bench_machine(), opts.seconds, opts.trials, opts.quick ? " (--quick)" : "",
                rk_bench_loadavg());
  for (i = 0; i < ntodo; i++) {
    rk_bench_others others;
    double busy;
    int r;
    rk_bench_others_begin(&others);
    r = todo[i]->fn(&opts);
    busy = rk_bench_others_end(&others);
    if (busy >= 0)
      rk_bench_note("   [%s] other processes used %.1f%% of the CPUs meanwhile%s", todo[i]->name,
                    busy,
                    busy > 5.0 ? ": figures skewed, rerun on an idle machine" : "");
    if (r != 0) {
      fprintf(stderr, "rk-bench: %s failed (%d)\n", todo[i]->name, r);
      rc = 1;
    }
  }
  rk_bench_note("\nrk-bench: done; load average %.2f", rk_bench_loadavg());
  if (rk_bench_failed()) rc = 1;
  return rc;
}
