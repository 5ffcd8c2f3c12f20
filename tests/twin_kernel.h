/* twin_kernel.h — messages of the "tally" test kernel (twin_kernel.c), shared by the kernel source
 * and the tests that drive it (test_kernel_twins on the CPU, test_gpu on a GPU). */
#ifndef TWIN_KERNEL_H
#define TWIN_KERNEL_H

#include "ringkernel.h"

#define TALLY_KEYS 32

/* Add amount to key's tally. */
typedef struct tally_add {
  uint32_t key;
  uint32_t reserved;
  int64_t amount;
} tally_add;
RK_MESSAGE(tally_add, 610);

/* The key's tally after the add, how many adds it has had, the lane that owns the key, and the
 * kernel's stamp when it applied the add. */
typedef struct tally_total {
  uint32_t key;
  uint32_t lane;
  int64_t total;
  uint64_t count;
  uint64_t stamp;
} tally_total;
RK_MESSAGE(tally_total, 611);

/* Error replies: RK_ENOENT (key >= TALLY_KEYS), RK_EINVAL (a tally would go below zero). */

RK_KERNEL_DECLARE(tally);

#endif
