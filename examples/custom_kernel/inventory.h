/* inventory.h — the inventory kernel's messages, shared by its dialect source (inventory_kernel.c)
 * and the host code (main.c). One declaration of each message type serves both. */
#ifndef INVENTORY_H
#define INVENTORY_H

#include <ringkernel.h>

#define INV_ITEMS 64 /* item ids 0 .. INV_ITEMS - 1 */
#define INV_LANES 4

/* Request: change an item's stock by delta (a negative delta takes stock out). */
typedef struct inv_update {
  uint32_t item;
  uint32_t reserved;
  int64_t delta;
} inv_update;
RK_MESSAGE(inv_update, 500);

/* Reply: the item's stock after the update, how many updates it has seen, and the lane that owns
 * it (an item is sent with its id as the key, so one lane owns it and sees its updates in order). */
typedef struct inv_level {
  uint32_t item;
  uint32_t lane;
  int64_t stock;
  uint64_t updates;
} inv_level;
RK_MESSAGE(inv_level, 501);

/* Error replies (rk_call returns RK_EHANDLER, the code in reply.status): */
#define INV_UNKNOWN_ITEM RK_ENOENT /* item id out of range */
#define INV_NOT_ENOUGH RK_EINVAL   /* the update would take the stock below zero: nothing changed */

RK_KERNEL_DECLARE(inventory);

#endif
