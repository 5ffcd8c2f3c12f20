/* bank.h — the bank kernel's messages, shared by its dialect source (bank_kernel.c, compiled by cc
 * and by nvcc) and the host code that drives it (actors.c). */
#ifndef RK_EXAMPLE_BANK_H
#define RK_EXAMPLE_BANK_H

#include <ringkernel.h>

#define ACCOUNTS 16
#define BANK_LANES 4

typedef struct bank_op {
  uint32_t account;
  uint32_t reserved;
  uint64_t seq;   /* the account's operation number: 1, 2, 3, ... */
  int64_t amount; /* deposit or withdrawal amount; unused by a query */
} bank_op;
typedef bank_op bank_deposit;
typedef bank_op bank_withdraw;
typedef bank_op bank_query;
RK_MESSAGE(bank_deposit, 200);
RK_MESSAGE(bank_withdraw, 201);
RK_MESSAGE(bank_query, 202);

typedef struct bank_balance {
  uint32_t account, lane;
  int64_t balance;
  uint64_t ops, refused, violations; /* operations applied, withdrawals refused, order violations */
  rk_hlc request_stamp;              /* the query's envelope stamp, as the kernel received it */
  rk_hlc applied_stamp;              /* the kernel clock when it applied the query */
} bank_balance;
RK_MESSAGE(bank_balance, 203);

/* The kernel, defined with RK_KERNEL in bank_kernel.c. */
RK_KERNEL_DECLARE(bank);

#endif
