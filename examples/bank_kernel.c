/* bank_kernel.c — the bank kernel of actors.c, in the kernel dialect: its state, its handler and
 * its definition (RK_KERNEL), written once. ringkernel_add_kernels (examples/CMakeLists.txt)
 * compiles this file with cc into the example (CPU backend) and, when nvcc is there, with nvcc
 * into device code embedded next to it (CUDA backend): the same handler on every backend. */
#include "bank.h"

/* State and handler, in the dialect (no libc, no host calls). */
typedef struct account {
  int64_t balance;
  uint64_t last_seq, ops, refused, violations;
  rk_hlc last_request, last_applied;
  uint32_t lane; /* the lane that owns it (must never change) */
} account;
typedef struct bank_state {
  account acct[ACCOUNTS];
} bank_state;

RK_HANDLER(bank_handler)(rk_ctx *ctx, const rk_msg *in) {
  bank_state *st = RK_CAST(bank_state *, rk_state(ctx)); /* NULL if the descriptor declared no state */
  const bank_op *op = RK_CAST(const bank_op *, rk_msg_payload(in)); /* size checked by the runtime */
  uint32_t type = rk_msg_type_of(in);
  account *a;
  bank_balance out;
  if (st == 0) return RK_ESTATE;                 /* uniform: every thread returns here */
  if (op->account >= ACCOUNTS) return RK_EINVAL; /* becomes an error reply */
  a = &st->acct[op->account];
  if (rk_thread(ctx) == 0) { /* one writer per lane; the lane is the account's only owner */
    rk_hlc now = rk_now(ctx);
    if (op->seq != a->last_seq + 1) a->violations++;                 /* lost or reordered */
    if (a->ops && rk_msg_stamp(in) <= a->last_request) a->violations++; /* stamps must grow */
    if (now <= rk_msg_stamp(in) || now <= a->last_applied) a->violations++;
    if (a->ops && a->lane != rk_lane(ctx)) a->violations++;          /* moved lanes */
    a->lane = rk_lane(ctx);
    a->last_seq = op->seq;
    a->last_request = rk_msg_stamp(in);
    a->last_applied = now;
    a->ops++;
    if (type == bank_deposit_TYPE) {
      a->balance += op->amount;
    } else if (type == bank_withdraw_TYPE) {
      if (a->balance >= op->amount)
        a->balance -= op->amount;
      else
        a->refused++;
    }
  }
  rk_sync(ctx);
  if (type != bank_query_TYPE) return RK_OK; /* deposits and withdrawals are sent without reply */
  out.account = op->account;
  out.lane = a->lane;
  out.balance = a->balance;
  out.ops = a->ops;
  out.refused = a->refused;
  out.violations = a->violations;
  out.request_stamp = rk_msg_stamp(in);
  out.applied_stamp = a->last_applied;
  return rk_reply_typed(ctx, bank_balance, &out);
}

RK_KERNEL(bank, bank_handler,
          .state_size = sizeof(bank_state), /* zeroed at launch: every balance starts at 0 */
          .lanes = BANK_LANES,
          RK_TYPES(&bank_deposit_msgtype, &bank_withdraw_msgtype, &bank_query_msgtype)); /* nothing else */
