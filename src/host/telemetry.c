/* telemetry.c — the watchdog and the counters of ARCHITECTURE §10, as a struct and as JSON.
 *
 * The watchdog runs on the service loop's timer, kernel by kernel with no lock held (a fault logs
 * through the application's callback): a lane whose heartbeat has not moved for watchdog_stall_ns
 * while its inbox holds work faults the kernel (RK_ETIMEDOUT, "stalled": a soft fault, which the
 * RK_FAULT_RECOVER policy clears when the lane moves again); an idle parked lane has no work and
 * is never faulted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/internal.h"

#define RK_DEFAULT_WATCHDOG_STALL_NS 2000000000ull

void rk__watchdog_kernel(rk_kernel *k) {
  uint64_t now = rk__now_ns();
  uint64_t stall = k->rt->opts.watchdog_stall_ns ? k->rt->opts.watchdog_stall_ns : RK_DEFAULT_WATCHDOG_STALL_NS;
  uint32_t s = rk_load_acquire_sys_u32(&k->hstate), i;
  int consuming = s == RK_STATE_ACTIVE || s == RK_STATE_TERMINATING;
  if (rk__kernel_faulted(k)) return; /* keeps the age it faulted with */
  if (k->dev_graph && rk__graph_dev_deadlock(k)) return; /* faulted with RK_EDEADLK */
  for (i = 0; i < k->lanes; i++) {
    rk__lane *l = &k->lane[i];
    uint64_t hb = rk_load_relaxed_sys_u64(&l->status->heartbeat); /* statistics: no pairing */
    uint64_t depth = rk_ring_count(l->inbox);
    uint64_t changed = __atomic_load_n(&l->wd_changed_ns, __ATOMIC_RELAXED);
    /* The stall clock runs only while the lane is seen consuming with work: it starts (changed =
     * now) at the first such observation, and restarts whenever the heartbeat moved. Starting it
     * at an earlier idle or inactive observation would fault a lane that has just been given work
     * (or activated) whenever this timer ran late (a slow callback on the loop) or the kernel was
     * inactive longer than the stall bound. changed == 0: no clock (statistics for stats_get). */
    if (!consuming || depth == 0) {
      l->wd_heartbeat = hb;
      __atomic_store_n(&l->wd_changed_ns, 0, __ATOMIC_RELAXED);
      continue;
    }
    if (hb != l->wd_heartbeat || changed == 0) {
      l->wd_heartbeat = hb;
      __atomic_store_n(&l->wd_changed_ns, now, __ATOMIC_RELAXED);
      continue;
    }
    if (now - changed >= stall) {
      rk__kernel_stall(k, i, hb, "lane %u stalled: no heartbeat for %llu ms with %llu messages waiting", i,
                       (unsigned long long)((now - changed) / 1000000), (unsigned long long)depth);
      return;
    }
  }
}

static uint64_t hist_quantile(const uint64_t *h, uint64_t total, double q) {
  uint64_t target = (uint64_t)(q * (double)total + 0.5), acc = 0;
  uint32_t b;
  if (total == 0) return 0;
  if (target == 0) target = 1;
  for (b = 0; b < RK_LATENCY_BUCKETS; b++) {
    acc += h[b];
    if (acc >= target) return (2ull << b) - 1; /* upper bound of bucket b */
  }
  return UINT64_MAX;
}

/* The counters a program built with an older header knows: the struct up to clock_sync_misses. */
#define RK_STATS_MIN_SIZE (RK_OFFSETOF(rk_kernel_counters, clock_sync_misses) + sizeof(uint64_t))

static void stats_fill(rk_kernel *k, rk_kernel_counters *st);

int rk_kernel_stats(rk_kernel *k, rk_kernel_counters *out) {
  rk_kernel_counters st;
  uint32_t size;
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (out == NULL || out->size < RK_STATS_MIN_SIZE)
    return rk__fail(k->rt, RK_EINVAL,
                    "rk_kernel_stats on %s: %s (set out->size = sizeof(rk_kernel_counters) first; at least %u)", k->name,
                    out == NULL ? "NULL out" : "out->size too small", (unsigned)RK_STATS_MIN_SIZE);
  size = out->size < sizeof st ? out->size : (uint32_t)sizeof st;
  stats_fill(k, &st);
  memcpy(out, &st, size);
  out->size = size;
  return RK_OK;
}

static void stats_fill(rk_kernel *k, rk_kernel_counters *st) {
  uint32_t i, b;
  uint64_t now = rk__now_ns();
  memset(st, 0, sizeof *st);
  st->size = sizeof *st;
  st->state = rk_kernel_state(k);
  st->lanes = k->lanes;
#define LD(x) __atomic_load_n(&k->x, __ATOMIC_RELAXED)
  st->sent = LD(sent);
  st->send_rejected = LD(send_rejected);
  st->send_timeouts = LD(send_timeouts);
  st->send_invalid = LD(send_invalid);
  st->received = rk__received(k);
  st->late_replies = LD(late_replies);
  st->faults = LD(faults);
  st->recoveries = LD(recoveries);
  st->restarts = LD(restarts);
  st->replies_invalid = LD(replies_invalid);
  st->k2k_dropped = LD(k2k_dropped) + rk__k2k_dev_dropped(k);
#undef LD
  rk__latency_read(k, st->latency_hist, &st->latency_sum_ns);
  for (i = 0; i < k->lanes; i++) {
    rk_lane_status *ls = k->lane[i].status;
    st->msgs_in += rk_load_relaxed_sys_u64(&ls->msgs_in);
    st->msgs_out += rk_load_relaxed_sys_u64(&ls->msgs_out);
    st->invalid += rk_load_relaxed_sys_u64(&ls->invalid);
    st->clock_rejected += rk_load_relaxed_sys_u64(&ls->clock_rejected);
    st->handler_errors += rk_load_relaxed_sys_u64(&ls->handler_errors);
    st->outbox_stalls += rk_load_relaxed_sys_u64(&ls->outbox_stalls);
    st->k2k_in += rk_load_relaxed_sys_u64(&ls->k2k_in);
    st->k2k_out += rk_load_relaxed_sys_u64(&ls->k2k_out);
    st->k2k_refused += rk_load_relaxed_sys_u64(&ls->k2k_refused);
    st->k2k_invalid += rk_load_relaxed_sys_u64(&ls->k2k_invalid);
    st->inbox_depth[i] = rk_ring_count(k->lane[i].inbox);
    st->outbox_depth[i] = rk_ring_count(k->lane[i].outbox);
    {
      uint64_t changed = __atomic_load_n(&k->lane[i].wd_changed_ns, __ATOMIC_RELAXED);
      if (st->inbox_depth[i] && changed && now > changed && now - changed > st->heartbeat_age_ns)
        st->heartbeat_age_ns = now - changed;
    }
  }
  for (b = 0; b < RK_LATENCY_BUCKETS; b++) st->latency_count += st->latency_hist[b];
  st->latency_p50_ns = hist_quantile(st->latency_hist, st->latency_count, 0.50);
  st->latency_p99_ns = hist_quantile(st->latency_hist, st->latency_count, 0.99);
  rk__lock(&k->clock_lock); /* one exchange's figures, not two */
  st->clock_offset_ns = k->clock_offset;
  st->clock_sync_window_ns = k->clock_window;
  st->clock_syncs = k->clock_syncs;
  st->clock_sync_misses = k->clock_misses;
  rk__unlock(&k->clock_lock);
  rk__lock(&k->dead_lock);
  st->dead_letters = k->dead_total;
  rk__unlock(&k->dead_lock);
}

/* snprintf into a moving window; counts what the full text needs even when it does not fit. */
typedef struct jbuf {
  char *p;
  size_t left;
  size_t need;
} jbuf;

static void jprintf(jbuf *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jprintf(jbuf *j, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(j->p, j->left, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  j->need += (size_t)n;
  if ((size_t)n < j->left) {
    j->p += n;
    j->left -= (size_t)n;
  } else if (j->left) {
    j->p += j->left - 1;
    j->left = 1;
  }
}

static void jstring(jbuf *j, const char *s) {
  jprintf(j, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      jprintf(j, "\\%c", c);
    else if (c < 0x20)
      jprintf(j, "\\u%04x", c);
    else
      jprintf(j, "%c", c);
  }
  jprintf(j, "\"");
}

static void kernel_json(jbuf *j, rk_kernel *k) {
  rk_kernel_counters st;
  uint32_t i;
  char err[256];
  st.size = sizeof st;
  rk_kernel_stats(k, &st);
  jprintf(j, "{\"id\":%u,\"name\":", k->id);
  jstring(j, k->name);
  jprintf(j, ",\"state\":\"%s\",\"lanes\":%u,\"threads_per_lane\":%u,\"slot_size\":%u,\"inbox_capacity\":%u,"
          "\"outbox_capacity\":%u", rk_state_name(st.state), k->lanes, k->threads, k->slot_size, k->inbox_cap,
          k->outbox_cap);
  if (rk_kernel_error(k, err, sizeof err)) {
    jprintf(j, ",\"error\":");
    jstring(j, err);
  }
  jprintf(j,
          ",\"sent\":%llu,\"send_rejected\":%llu,\"send_timeouts\":%llu,\"send_invalid\":%llu,\"msgs_in\":%llu,"
          "\"msgs_out\":%llu,\"received\":%llu,\"late_replies\":%llu,\"k2k_in\":%llu,\"k2k_out\":%llu,"
          "\"invalid\":%llu,\"clock_rejected\":%llu,\"handler_errors\":%llu,\"outbox_stalls\":%llu,"
          "\"heartbeat_age_ns\":%llu,\"faults\":%llu,\"recoveries\":%llu,\"restarts\":%llu,\"dead_letters\":%llu,"
          "\"replies_invalid\":%llu",
          (unsigned long long)st.sent, (unsigned long long)st.send_rejected, (unsigned long long)st.send_timeouts,
          (unsigned long long)st.send_invalid, (unsigned long long)st.msgs_in, (unsigned long long)st.msgs_out,
          (unsigned long long)st.received, (unsigned long long)st.late_replies, (unsigned long long)st.k2k_in,
          (unsigned long long)st.k2k_out, (unsigned long long)st.invalid, (unsigned long long)st.clock_rejected,
          (unsigned long long)st.handler_errors, (unsigned long long)st.outbox_stalls,
          (unsigned long long)st.heartbeat_age_ns, (unsigned long long)st.faults, (unsigned long long)st.recoveries,
          (unsigned long long)st.restarts, (unsigned long long)st.dead_letters, (unsigned long long)st.replies_invalid);
  jprintf(j, ",\"k2k_refused\":%llu,\"k2k_invalid\":%llu,\"k2k_dropped\":%llu", (unsigned long long)st.k2k_refused,
          (unsigned long long)st.k2k_invalid, (unsigned long long)st.k2k_dropped);
  jprintf(j, ",\"inbox_depth\":[");
  for (i = 0; i < k->lanes; i++) jprintf(j, "%s%llu", i ? "," : "", (unsigned long long)st.inbox_depth[i]);
  jprintf(j, "],\"outbox_depth\":[");
  for (i = 0; i < k->lanes; i++) jprintf(j, "%s%llu", i ? "," : "", (unsigned long long)st.outbox_depth[i]);
  jprintf(j, "],\"latency\":{\"count\":%llu,\"sum_ns\":%llu,\"p50_ns\":%llu,\"p99_ns\":%llu,\"log2_ns_buckets\":[",
          (unsigned long long)st.latency_count, (unsigned long long)st.latency_sum_ns,
          (unsigned long long)st.latency_p50_ns, (unsigned long long)st.latency_p99_ns);
  for (i = 0; i < RK_LATENCY_BUCKETS; i++) jprintf(j, "%s%llu", i ? "," : "", (unsigned long long)st.latency_hist[i]);
  jprintf(j, "]}");
  jprintf(j, ",\"clock\":{\"offset_ns\":%lld,\"window_ns\":%llu,\"syncs\":%llu,\"misses\":%llu}",
          (long long)st.clock_offset_ns, (unsigned long long)st.clock_sync_window_ns,
          (unsigned long long)st.clock_syncs, (unsigned long long)st.clock_sync_misses);
  if (k->desc.types) {
    jprintf(j, ",\"types\":[");
    for (i = 0; i < k->desc.n_types; i++) {
      jprintf(j, "%s{\"id\":%u,\"size\":%u,\"name\":", i ? "," : "", k->desc.types[i]->id, k->desc.types[i]->size);
      jstring(j, k->desc.types[i]->name ? k->desc.types[i]->name : "");
      jprintf(j, "}");
    }
    jprintf(j, "]");
  }
  jprintf(j, "}");
}

int rk_runtime_stats_json(rk_runtime *rt, char *buf, size_t len) {
  jbuf j;
  rk_kernel *k;
  int first = 1;
  if (rt == NULL) return RK_EINVAL;
  rk__error_clear(rt);
  if (buf == NULL && len > 0)
    return rk__fail(rt, RK_EINVAL, "rk_runtime_stats_json: NULL buf with len %zu (len 0 asks for the length only)", len);
  j.p = buf;
  j.left = len;
  j.need = 0;
  if (len) buf[0] = '\0';
  jprintf(&j, "{\"backend\":\"%s\",\"backend_reason\":", rk_backend_name(rt->backend));
  jstring(&j, rt->backend_reason);
  jprintf(&j, ",\"node_id\":%u,\"hlc\":%llu,\"version\":\"%s\",\"kernels\":[", rt->node_id,
          (unsigned long long)rk_clock_peek(rt->clock), rk_version_string());
  rk__lock(&rt->lock);
  for (k = rt->kernels; k; k = k->next) {
    if (!first) jprintf(&j, ",");
    first = 0;
    kernel_json(&j, k);
  }
  rk__unlock(&rt->lock);
  jprintf(&j, "]}");
  return j.need > 0x7fffffff ? RK_ENOMEM : (int)j.need;
}

/* ---------------------------------------- Prometheus ----------------------------------------- */

/* One kernel's figures, copied under the runtime lock so the text is written without it. */
typedef struct prom_kernel {
  rk_kernel_counters st;
  char labels[200]; /* kernel="name",id="N" (escaped) */
  uint32_t inbox_cap;
} prom_kernel;

static void prom_labels(char *out, size_t len, const char *name, uint32_t id) {
  size_t o = 0;
  const char *s;
  o += (size_t)snprintf(out, len, "kernel=\"");
  for (s = name; *s && o + 8 < len; s++) {
    if (*s == '\\' || *s == '"') {
      out[o++] = '\\';
      out[o++] = *s;
    } else if (*s == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    } else {
      out[o++] = *s;
    }
  }
  snprintf(out + o, len - o, "\",id=\"%u\"", id);
}

/* A family header: HELP and TYPE, once per family (the format wants a family's samples together). */
static void prom_family(jbuf *j, const char *name, const char *type, const char *help) {
  jprintf(j, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define PROM_COUNTERS(X)                                                                        \
  X(sent, "Messages accepted by rk_send*")                                                      \
  X(send_rejected, "Sends refused with RK_EAGAIN (inbox full)")                                 \
  X(send_timeouts, "Sends that timed out on a full inbox")                                      \
  X(send_invalid, "Sends refused by argument or type checks")                                   \
  X(msgs_in, "Messages taken by the kernel")                                                    \
  X(msgs_out, "Replies published by the kernel")                                                \
  X(received, "Replies delivered to the host")                                                  \
  X(late_replies, "Replies to callers that had timed out (discarded)")                          \
  X(k2k_in, "Kernel-to-kernel messages taken")                                                  \
  X(k2k_out, "Kernel-to-kernel messages sent")                                                  \
  X(k2k_refused, "Kernel-to-kernel sends refused")                                              \
  X(k2k_invalid, "Kernel-to-kernel envelopes refused")                                          \
  X(k2k_dropped, "Topic messages missed (K2K inbox full)")                                      \
  X(invalid, "Envelopes refused by the kernel")                                                 \
  X(clock_rejected, "Stamps refused by the drift bound")                                        \
  X(handler_errors, "Handler errors (error replies)")                                           \
  X(outbox_stalls, "Times a lane stopped taking input on a full outbox")                        \
  X(clock_syncs, "Accepted clock measurements")                                                 \
  X(clock_sync_misses, "Dropped clock exchanges")                                               \
  X(faults, "Faults raised")                                                                    \
  X(recoveries, "Faults cleared by progress")                                                   \
  X(restarts, "Kernel restarts")                                                                \
  X(dead_letters, "Dead letters recorded")                                                      \
  X(replies_invalid, "Replies the host refused as invalid")

int rk_runtime_stats_prometheus(rk_runtime *rt, char *buf, size_t len) {
  jbuf j;
  rk_kernel *k;
  prom_kernel *pk = NULL;
  size_t n = 0, i, cap = 0;
  uint32_t l, b;
  static const rk_lifecycle states[] = {RK_STATE_LAUNCHED,    RK_STATE_ACTIVE,     RK_STATE_INACTIVE,
                                        RK_STATE_TERMINATING, RK_STATE_TERMINATED, RK_STATE_FAULTED};
  if (rt == NULL || (buf == NULL && len > 0)) return RK_EINVAL;
  rk__error_clear(rt);
  j.p = buf;
  j.left = len;
  j.need = 0;
  if (len) buf[0] = '\0';
  /* the kernels' figures, under the lock (kernel_json does the same), then the text without it */
  for (;;) {
    size_t want = 0;
    rk__lock(&rt->lock);
    for (k = rt->kernels; k; k = k->next) want++;
    if (want <= cap) {
      for (k = rt->kernels; k; k = k->next, n++) {
        pk[n].st.size = sizeof pk[n].st;
        rk_kernel_stats(k, &pk[n].st);
        prom_labels(pk[n].labels, sizeof pk[n].labels, k->name, k->id);
        pk[n].inbox_cap = k->inbox_cap;
      }
      rk__unlock(&rt->lock);
      break;
    }
    rk__unlock(&rt->lock);
    free(pk);
    cap = want + 4;
    if ((pk = (prom_kernel *)rk__malloc(cap * sizeof *pk)) == NULL)
      return rk__fail(rt, RK_ENOMEM, "rk_runtime_stats_prometheus: %zu kernels", cap);
  }

  prom_family(&j, "rk_runtime_info", "gauge", "The runtime: backend, library version and HLC node id");
  jprintf(&j, "rk_runtime_info{backend=\"%s\",version=\"%s\",node=\"%u\"} 1\n", rk_backend_name(rt->backend),
          rk_version_string(), rt->node_id);
  prom_family(&j, "rk_runtime_kernels", "gauge", "Kernels of the runtime");
  jprintf(&j, "rk_runtime_kernels %zu\n", n);
  if (n) {
#define PROM_COUNTER(f, help)                                                                       \
  prom_family(&j, "rk_kernel_" #f "_total", "counter", help);                                      \
  for (i = 0; i < n; i++)                                                                           \
    jprintf(&j, "rk_kernel_" #f "_total{%s} %llu\n", pk[i].labels, (unsigned long long)pk[i].st.f);
    PROM_COUNTERS(PROM_COUNTER)
#undef PROM_COUNTER
    prom_family(&j, "rk_kernel_state", "gauge", "Lifecycle state (1 for the current one)");
    for (i = 0; i < n; i++)
      for (l = 0; l < sizeof states / sizeof states[0]; l++)
        jprintf(&j, "rk_kernel_state{%s,state=\"%s\"} %d\n", pk[i].labels, rk_state_name(states[l]),
                pk[i].st.state == states[l]);
    prom_family(&j, "rk_kernel_lanes", "gauge", "Lanes of the kernel");
    for (i = 0; i < n; i++) jprintf(&j, "rk_kernel_lanes{%s} %u\n", pk[i].labels, pk[i].st.lanes);
    prom_family(&j, "rk_kernel_inbox_capacity", "gauge", "Slots of each lane's inbox");
    for (i = 0; i < n; i++) jprintf(&j, "rk_kernel_inbox_capacity{%s} %u\n", pk[i].labels, pk[i].inbox_cap);
    prom_family(&j, "rk_kernel_inbox_depth", "gauge", "Messages waiting in a lane's inbox");
    for (i = 0; i < n; i++)
      for (l = 0; l < pk[i].st.lanes && l < RK_MAX_LANES; l++)
        jprintf(&j, "rk_kernel_inbox_depth{%s,lane=\"%u\"} %llu\n", pk[i].labels, l,
                (unsigned long long)pk[i].st.inbox_depth[l]);
    prom_family(&j, "rk_kernel_outbox_depth", "gauge", "Replies waiting in a lane's outbox");
    for (i = 0; i < n; i++)
      for (l = 0; l < pk[i].st.lanes && l < RK_MAX_LANES; l++)
        jprintf(&j, "rk_kernel_outbox_depth{%s,lane=\"%u\"} %llu\n", pk[i].labels, l,
                (unsigned long long)pk[i].st.outbox_depth[l]);
    prom_family(&j, "rk_kernel_heartbeat_age_seconds", "gauge", "Oldest heartbeat age of a lane with work");
    for (i = 0; i < n; i++)
      jprintf(&j, "rk_kernel_heartbeat_age_seconds{%s} %.9f\n", pk[i].labels, (double)pk[i].st.heartbeat_age_ns / 1e9);
    prom_family(&j, "rk_kernel_clock_offset_seconds", "gauge", "Host clock minus the lanes' clock");
    for (i = 0; i < n; i++)
      jprintf(&j, "rk_kernel_clock_offset_seconds{%s} %.9f\n", pk[i].labels, (double)pk[i].st.clock_offset_ns / 1e9);
    prom_family(&j, "rk_kernel_latency_seconds", "histogram", "End-to-end latency, host send to host receive");
    for (i = 0; i < n; i++) {
      uint64_t acc = 0;
      for (b = 0; b + 1 < RK_LATENCY_BUCKETS; b++) { /* the last bucket is open-ended: +Inf only */
        acc += pk[i].st.latency_hist[b];
        jprintf(&j, "rk_kernel_latency_seconds_bucket{%s,le=\"%.9g\"} %llu\n", pk[i].labels,
                (double)(2ull << b) / 1e9, (unsigned long long)acc);
      }
      jprintf(&j, "rk_kernel_latency_seconds_bucket{%s,le=\"+Inf\"} %llu\n", pk[i].labels,
              (unsigned long long)pk[i].st.latency_count);
      jprintf(&j, "rk_kernel_latency_seconds_sum{%s} %.9f\n", pk[i].labels, (double)pk[i].st.latency_sum_ns / 1e9);
      jprintf(&j, "rk_kernel_latency_seconds_count{%s} %llu\n", pk[i].labels, (unsigned long long)pk[i].st.latency_count);
    }
  }
  free(pk);
  return j.need > 0x7fffffff ? rk__fail(rt, RK_ENOMEM, "rk_runtime_stats_prometheus: text too long") : (int)j.need;
}
