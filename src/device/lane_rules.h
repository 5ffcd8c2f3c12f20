/* device/lane_rules.h — the dispatch rules every lane follows, written once for both loops: the
 * CPU lane (src/host/cpu_backend.c) and the device lane (src/device/persistent.cuh, compiled by
 * nvcc, NVRTC and the emulation). The two loops are separate because each is shaped by what its
 * memory costs (docs/design-notes.md, "One dispatch loop or two"); what a message, a command or a
 * handler's result *means* must not differ between them, so it lives here. Pure functions of
 * their arguments, compiled by cc, c++, nvcc and NVRTC (embedded in librk for NVRTC). */
#ifndef RK_DEVICE_LANE_RULES_H
#define RK_DEVICE_LANE_RULES_H

#include "ringkernel/common.h"
#include "ringkernel/control.h"
#include "ringkernel/envelope.h"
#include "ringkernel/error.h"

/* The state a lane in `state` moves to on command `cmd` (unchanged when the command does not apply
 * to it: activating an active lane, deactivating one that is not active). Every command is
 * acknowledged whatever it did; a terminate always applies (its drain target comes with it). */
RK_INLINE RK_HD uint32_t rk_lane_after_command(uint32_t state, uint32_t cmd) {
  if (cmd == RK_CMD_ACTIVATE && (state == RK_STATE_LAUNCHED || state == RK_STATE_INACTIVE)) return RK_STATE_ACTIVE;
  if (cmd == RK_CMD_DEACTIVATE && state == RK_STATE_ACTIVE) return RK_STATE_INACTIVE;
  if (cmd == RK_CMD_TERMINATE) return RK_STATE_TERMINATING;
  return state;
}

/* May message e produce a reply, so that it needs room for one in the outbox before it is
 * handled? Everything but a well-formed request sent with RK_SEND_NO_REPLY may: a handler's reply
 * or an error reply. A lane stops taking input rather than drop a reply (ARCHITECTURE §3). */
RK_INLINE RK_HD int rk_lane_needs_room(const rk_envelope *e) {
  return !(e->magic == RK_ENVELOPE_MAGIC && (e->flags & RK_ENV_F_NO_REPLY));
}

/* A refused envelope (rk_envelope_validate's result chk != RK_ENV_OK): is its header trustworthy
 * enough (magic, version, flags and origin word sound) to answer with an RK_ECORRUPT error
 * reply? Otherwise it is only counted: its ids mean nothing. */
RK_INLINE RK_HD int rk_lane_refusal_answered(int chk) { return chk >= RK_ENV_BAD_LENGTH; }

/* What a handler's result means (kernel.h): 0 when nothing more is owed; otherwise the code of
 * the error reply owed (when the handler has not replied) and counted as a handler error: its own
 * negative RK_E* code, or RK_EHANDLER for a positive value (no RK_E* code) or for 0 without a
 * reply to a request that wants one (its caller would wait out its timeout). */
RK_INLINE RK_HD int rk_lane_result_error(int rc, int replied, uint16_t env_flags) {
  if (rc < 0) return rc;
  if (rc > 0 || (!replied && !(env_flags & RK_ENV_F_NO_REPLY))) return RK_EHANDLER;
  return 0;
}

/* Does a handler's result ask to run again later on the same message? RK_EAGAIN with nothing
 * replied and nothing sent over K2K: a destination was full (rk_send_to, rk_forward), and the
 * message stays in its inbox so the backpressure reaches its senders instead of it being lost. */
RK_INLINE RK_HD int rk_lane_retry(int rc, int replied, uint32_t sent) {
  return rc == RK_EAGAIN && !replied && sent == 0;
}

#endif /* RK_DEVICE_LANE_RULES_H */
