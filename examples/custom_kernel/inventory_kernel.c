/* inventory_kernel.c — the inventory kernel, written once in the kernel dialect: its state, its
 * handler and its definition. Compiled by cc (CPU backend) and by nvcc (CUDA backend) unchanged. */
#include "inventory.h"

/* Persistent state: one record per item. Items are sent keyed by id, so each record is written by
 * the one lane that owns its key, and by thread 0 of that lane only. */
typedef struct inv_item {
  int64_t stock;
  uint64_t updates;
} inv_item;
typedef struct inv_state {
  inv_item item[INV_ITEMS];
} inv_state;

RK_HANDLER(inventory_handler)(rk_ctx *ctx, const rk_msg *in) {
  const inv_update *u = RK_MSG_AS(in, inv_update);     /* NULL when type or size differ */
  inv_state *st = RK_CAST(inv_state *, rk_state(ctx)); /* NULL when state_size is 0 */
  inv_item *it;
  inv_level out;
  int64_t before;
  /* Every thread of the lane takes the same path (the collective rule): each decision below reads
   * only the message, or state that every thread read before anyone wrote it. */
  if (u == 0 || st == 0) return RK_EINVAL;
  if (u->item >= INV_ITEMS) return INV_UNKNOWN_ITEM; /* an error reply, counted; the kernel goes on */
  it = &st->item[u->item];
  before = it->stock;
  rk_sync(ctx); /* every thread has read the stock before thread 0 changes it */
  if (before + u->delta < 0) return INV_NOT_ENOUGH;
  if (rk_thread(ctx) == 0) { /* one writer */
    it->stock = before + u->delta;
    it->updates++;
  }
  rk_sync(ctx); /* ... and every thread sees the change */
  out.item = u->item;
  out.lane = rk_lane(ctx);
  out.stock = it->stock;
  out.updates = it->updates;
  return rk_reply_typed(ctx, inv_level, &out); /* collective: one thread publishes */
}

RK_KERNEL(inventory, inventory_handler,
          .state_size = sizeof(inv_state), /* zeroed at launch */
          .lanes = INV_LANES,
          RK_TYPES(&inv_update_msgtype)); /* anything else is refused by rk_send / rk_call */
