/** @file ringkernel/control.h — the control block: how the host commands a resident kernel and how the
 * kernel reports back. Shared by the CPU backend (ordinary memory) and the CUDA backend (pinned
 * host-mapped memory), so it is a POD pinned by static asserts.
 *
 * Single writer per word (docs/memory-ordering.md): the host writes only the host line; each lane
 * writes only its own lane line. Nothing ever reads a whole block, changes a field and writes it
 * back. Every command is acknowledged: the host writes the command's argument words, then
 * store-releases cmd_seq; a lane load-acquires cmd_seq, applies the command, then store-releases
 * ack_seq = cmd_seq in its own line; the host waits (with a timeout) until every lane acknowledged.
 *
 * Clock synchronisation (the device's %globaltimer against the host's clock: CLOCK_REALTIME or the runtime's time_source) is a second,
 * lighter exchange that never waits for a lane: the host writes clock_offset_ns, then bumps
 * clock_req in `signals` (release); every lane load-acquires `signals` (the abort bit comes with
 * it: one read) and on a new clock_req reloads the offset it stamps with; lane 0 also writes its
 * clock to clock_sample_ns and store-releases clock_ack = clock_req. The host times the exchange and
 * takes the midpoint (src/host/kernel.c, rk__clock_sync). */
#ifndef RINGKERNEL_CONTROL_H
#define RINGKERNEL_CONTROL_H

#include "ringkernel/common.h"
#include "ringkernel/lifecycle.h"

RK_EXTERN_C_BEGIN

/** Commands written by the host. */
typedef enum rk_command {
  RK_CMD_NONE = 0,
  RK_CMD_ACTIVATE = 1,
  RK_CMD_DEACTIVATE = 2,
  RK_CMD_TERMINATE = 3, /**< drain each lane's inbox to its drain_to index, then exit */
  RK_CMD_SYNC = 4       /**< acknowledge only (state unchanged): the host knows each lane has passed
                             a command after its earlier stores (a staged K2K inbox's close) */
} rk_command;

/** rk_control_host.signals: the abort bit and the clock request counter. */
#define RK_SIGNAL_ABORT 1ull
/** One clock-exchange request in the signals word. */
#define RK_SIGNAL_CLOCK_ONE (1ull << 32)
/** The clock-exchange request count in a signals word. */
RK_INLINE RK_HD uint32_t rk_signals_clock_req(uint64_t signals) { return (uint32_t)(signals >> 32); }

/** Host-written line (one per kernel). */
typedef struct rk_control_host {
  RK_ALIGNAS(128) volatile uint32_t cmd_seq; /**< bumped (store-release) after cmd is written */
  volatile uint32_t cmd;                      /**< rk_command */
  /** RK_SIGNAL_ABORT (bit 0): exit now, drain nothing. Bits 32-63: clock_req, bumped after
   *  clock_offset_ns is written: every lane reloads the offset, lane 0 answers with clock_sample_ns
   *  and clock_ack. One word, so a lane reads both with one load (one PCIe round trip on the
   *  device); host threads update it with read-modify-writes on host memory (the device only loads
   *  it), release order. */
  volatile uint64_t signals;
  volatile uint64_t clock_offset_ns;          /**< device: host clock - %globaltimer (mod 2^64) */
  /** device: the drift bound (us) for host stamps while clock_offset_ns is in force: max_offset_us
   *  plus the offset's uncertainty (half its measurement's window); written with the offset,
   *  reloaded with it */
  volatile uint64_t clock_bound_us;
  uint8_t pad[RK_LINE - 32];
} rk_control_host;

/** Lane-written line (one per lane). Counters are single-writer: the lane. */
typedef struct rk_lane_status {
  RK_ALIGNAS(128) volatile uint32_t ack_seq; /**< last cmd_seq applied (store-release) */
  volatile uint32_t state;                    /**< rk_lifecycle of this lane */
  volatile uint64_t heartbeat;                /**< bumped on every loop iteration with work */
  volatile int32_t error;                     /**< RK_E* of a fault, 0 otherwise */
  volatile uint32_t checked_in;               /**< 1 once the lane runs (co-residency proof) */
  volatile uint64_t msgs_in;                  /**< messages taken from the inbox */
  volatile uint64_t msgs_out;                 /**< replies published */
  volatile uint64_t invalid;                  /**< envelopes refused by validation */
  volatile uint64_t clock_rejected;           /**< stamps refused by the drift bound */
  volatile uint64_t handler_errors;           /**< handlers that returned an error */
  volatile uint64_t outbox_stalls;            /**< times the lane stopped taking input: outbox full */
  volatile uint64_t k2k_in;                   /**< K2K messages taken from the lane's K2K inbox */
  volatile uint64_t k2k_out;                  /**< K2K messages the lane sent (and K2K replies) */
  volatile uint64_t clock_sample_ns;          /**< the lane's clock (device: %globaltimer) at check-in
                                                   and when it answered clock_req (lane 0) */
  volatile uint32_t clock_ack;                /**< last clock_req answered (store-release, lane 0) */
  volatile uint32_t k2k_waits_on;             /**< device lanes: (node + 1) << 16 | lane of the K2K inbox
                                                   the lane retries on (full), 0 when it does not (the
                                                   host's K2K deadlock check, graph.c) */
  volatile uint64_t k2k_refused;              /**< K2K sends refused: destination full or gone, no route */
  volatile uint64_t k2k_invalid;              /**< K2K envelopes refused by validation */
  volatile uint64_t k2k_owed;                 /**< device lanes: host requests passed on (rk_forward) whose
                                                   answers have not come back (kept across a restart) */
} rk_lane_status;

/** Per-lane host-written drain target for terminate (the inbox's final producer index). */
typedef struct rk_lane_command {
  RK_ALIGNAS(128) volatile uint64_t drain_to; /**< terminate: the inbox position the lane drains to before it exits */
  uint8_t pad[RK_LINE - 8];
} rk_lane_command;

RK_STATIC_ASSERT(sizeof(rk_control_host) == RK_LINE, "host control line");
RK_STATIC_ASSERT(sizeof(rk_lane_status) == RK_LINE, "lane status line");
RK_STATIC_ASSERT(sizeof(rk_lane_command) == RK_LINE, "lane command line");
RK_ASSERT_OFFSET(rk_control_host, signals, 8);
RK_ASSERT_OFFSET(rk_control_host, clock_offset_ns, 16);
RK_ASSERT_OFFSET(rk_control_host, clock_bound_us, 24);
RK_ASSERT_OFFSET(rk_lane_status, heartbeat, 8);
RK_ASSERT_OFFSET(rk_lane_status, msgs_in, 24);
RK_ASSERT_OFFSET(rk_lane_status, k2k_out, 80);
RK_ASSERT_OFFSET(rk_lane_status, clock_sample_ns, 88);
RK_ASSERT_OFFSET(rk_lane_status, clock_ack, 96);

/** The whole control block of a kernel with n lanes: one host line, then n lane command lines,
 *  then n lane status lines. rk_control_size(n) bytes. */
typedef struct rk_control {
  rk_control_host host; /**< the host's line: commands and signals to every lane */
  /* followed by rk_lane_command[lanes] then rk_lane_status[lanes] */
} rk_control;

/** Bytes of a control block for `lanes` lanes. */
RK_INLINE RK_HD size_t rk_control_size(uint32_t lanes) {
  return sizeof(rk_control_host) + (size_t)lanes * (sizeof(rk_lane_command) + sizeof(rk_lane_status));
}
/** Lane `lane`'s command line in a control block. */
RK_INLINE RK_HD rk_lane_command *rk_control_lane_cmd(rk_control *c, uint32_t lane) {
  return RK_CAST(rk_lane_command *, RK_CAST(uint8_t *, c) + sizeof(rk_control_host)) + lane;
}
/** Lane `lane`'s status line in a control block of `lanes` lanes. */
RK_INLINE RK_HD rk_lane_status *rk_control_lane(rk_control *c, uint32_t lanes, uint32_t lane) {
  return RK_CAST(rk_lane_status *, RK_CAST(uint8_t *, c) + sizeof(rk_control_host) +
                                      (size_t)lanes * sizeof(rk_lane_command)) + lane;
}

RK_EXTERN_C_END

#endif /* RINGKERNEL_CONTROL_H */
