/* actors.c — stateful actors on ring kernels: a bank whose accounts live in a kernel's state,
 * spread over its lanes by account id, driven by several host threads at once.
 *
 * What it shows:
 *  - a custom kernel written once in the kernel dialect (bank_kernel.c: RK_HANDLER, RK_KERNEL),
 *    with typed messages (bank.h: RK_MESSAGE), built for every backend by ringkernel_add_kernels;
 *  - actor semantics: rk_send_key / rk_call_key with the account id as key send every operation on
 *    one account to the same lane, so they are applied one at a time, in the order they were sent,
 *    with no lock — each account is owned by exactly one lane;
 *  - per-key order, checked: every operation carries its account's next sequence number and the
 *    kernel counts any gap or reordering; withdrawals are refused on insufficient funds, so a
 *    reordering would also change the balances, which the host predicts exactly;
 *  - HLC causality, checked: request stamp < the kernel's stamp when it applied it < the reply's
 *    stamp < the runtime clock after the reply was received, and one account's stamps only grow.
 * Prints what it did; exits 0 when every check passed, 1 otherwise. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "bank.h"

#define CLIENTS 4          /* host threads; client c owns accounts c, c + CLIENTS, ... */
#define OPS_PER_CLIENT 20000
#define QUERY_EVERY 250    /* every 250th operation of a client is a balance query (rk_call_key) */
#define TIMEOUT_NS 2000000000ll

/* ---- host side ---- */
typedef struct client {
  int id;
  rk_kernel *k;
  rk_runtime *rt;
  int64_t expected[ACCOUNTS]; /* what the balances must be (this client's accounts only) */
  uint64_t seq[ACCOUNTS], refused[ACCOUNTS];
  rk_hlc last_applied[ACCOUNTS];
  uint64_t errors, queries;
  char example[3][160]; /* a few stamp chains to print (client 0) */
  int n_examples;
} client;

static int query(client *c, uint32_t acct, bank_balance *b) {
  bank_op op = {acct, 0, ++c->seq[acct], 0};
  rk_msg reply;
  rk_hlc after;
  int rc = rk_call_key(c->k, acct, bank_query_TYPE, &op, sizeof op, &reply, b, sizeof *b, TIMEOUT_NS);
  if (rc != 0 || RK_MSG_AS(&reply, bank_balance) == NULL) {
    fprintf(stderr, "client %d: query of account %u: %s (%s)\n", c->id, acct, rk_err_name(rc),
            rk_runtime_last_error(c->rt));
    return -1;
  }
  after = rk_clock_peek(rk_runtime_clock(c->rt));
  c->queries++;
  /* causality: request < applied < reply < runtime clock; one account's stamps only grow */
  if (!(b->request_stamp < b->applied_stamp && b->applied_stamp < rk_msg_stamp(&reply) &&
        rk_msg_stamp(&reply) < after && b->applied_stamp > c->last_applied[acct])) {
    fprintf(stderr, "client %d: account %u: stamps out of causal order\n", c->id, acct);
    c->errors++;
  }
  c->last_applied[acct] = b->applied_stamp;
  if (c->n_examples < 3)
    snprintf(c->example[c->n_examples++], sizeof c->example[0],
             "account %2u: request %" PRIu64 ".%04u < applied %" PRIu64 ".%04u < reply %" PRIu64 ".%04u",
             acct, rk_hlc_physical(b->request_stamp), rk_hlc_logical(b->request_stamp),
             rk_hlc_physical(b->applied_stamp), rk_hlc_logical(b->applied_stamp),
             rk_hlc_physical(rk_msg_stamp(&reply)), rk_hlc_logical(rk_msg_stamp(&reply)));
  return 0;
}

static void *client_main(void *arg) {
  client *c = (client *)arg;
  uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)(c->id + 1);
  int i;
  for (i = 0; i < OPS_PER_CLIENT; i++) {
    uint32_t acct, r;
    bank_balance b;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64 */
    r = (uint32_t)(rng >> 32);
    acct = (uint32_t)c->id + CLIENTS * (r % (ACCOUNTS / CLIENTS));
    if (i % QUERY_EVERY == QUERY_EVERY - 1) {
      /* Sent after every earlier operation on the account, on the same lane: sees all of them. */
      if (query(c, acct, &b) != 0) return NULL;
      if (b.balance != c->expected[acct] || b.refused != c->refused[acct] || b.violations != 0) {
        fprintf(stderr, "client %d: account %u: balance %" PRId64 " (expected %" PRId64 "), %" PRIu64
                " violations\n", c->id, acct, b.balance, c->expected[acct], b.violations);
        c->errors++;
      }
    } else {
      bank_op op = {acct, 0, ++c->seq[acct], 1 + (int64_t)(r % 100)};
      int deposit = (r >> 8) % 2 == 0, rc;
      if (deposit)
        c->expected[acct] += op.amount;
      else if (c->expected[acct] >= op.amount)
        c->expected[acct] -= op.amount;
      else
        c->refused[acct]++;
      rc = rk_send_key(c->k, acct, deposit ? bank_deposit_TYPE : bank_withdraw_TYPE, &op, sizeof op,
                       RK_SEND_NO_REPLY, NULL);
      if (rc != 0) {
        fprintf(stderr, "client %d: send: %s\n", c->id, rk_err_name(rc));
        c->errors++;
        return NULL;
      }
    }
  }
  return NULL;
}

int main(void) {
  rk_runtime_options ro = RK_RUNTIME_OPTIONS_INIT;
  rk_runtime *rt = NULL;
  rk_kernel *k = NULL;
  static client clients[CLIENTS];
  pthread_t th[CLIENTS];
  uint64_t errors = 0, ops = 0, queries = 0;
  int64_t total = 0, total_expected = 0;
  int rc, i;
  uint32_t a;

  /* backend AUTO: the CUDA backend runs the device build of the handler when a GPU is usable */
  if ((rc = rk_runtime_create(&rt, &ro)) != 0 || (rc = rk_kernel_launch(rt, &bank, NULL, &k)) != 0 ||
      (rc = rk_kernel_activate(k)) != 0) {
    fprintf(stderr, "setup failed: %s (%s)\n", rk_err_name(rc), rt ? rk_runtime_last_error(rt) : "");
    rk_runtime_destroy(rt);
    return 1;
  }
  printf("bank kernel on the %s backend: %u lanes, %d accounts; %d client threads x %d operations (deposits and\n"
         "withdrawals with rk_send_key, a balance query with rk_call_key every %d)\n",
         rk_backend_name(rk_runtime_backend(rt)), rk_kernel_lanes(k), ACCOUNTS, CLIENTS, OPS_PER_CLIENT, QUERY_EVERY);

  for (i = 0; i < CLIENTS; i++) {
    clients[i].id = i;
    clients[i].k = k;
    clients[i].rt = rt;
    if (pthread_create(&th[i], NULL, client_main, &clients[i]) != 0) return 1;
  }
  for (i = 0; i < CLIENTS; i++) pthread_join(th[i], NULL);

  printf("\naccount lane    ops  refused   balance  expected\n");
  for (a = 0; a < ACCOUNTS; a++) {
    client *c = &clients[a % CLIENTS];
    bank_balance b;
    if (query(c, a, &b) != 0) return 1;
    /* the final query is the account's op too: ops = sends + queries of its owner */
    if (b.balance != c->expected[a] || b.ops != c->seq[a] || b.refused != c->refused[a] || b.violations) c->errors++;
    printf("%7u %4u %6" PRIu64 " %8" PRIu64 " %9" PRId64 " %9" PRId64 "%s\n", a, b.lane, b.ops, b.refused, b.balance,
           c->expected[a], b.violations ? "  ORDER VIOLATED" : "");
    total += b.balance;
    total_expected += c->expected[a];
    ops += b.ops;
  }
  printf("total balance %" PRId64 " (expected %" PRId64 ")\n", total, total_expected);

  printf("\nHLC stamps (physical us.logical) of a few balance queries, client 0:\n");
  for (i = 0; i < clients[0].n_examples; i++) printf("  %s\n", clients[0].example[i]);
  for (i = 0; i < CLIENTS; i++) {
    errors += clients[i].errors;
    queries += clients[i].queries;
  }

  if ((rc = rk_kernel_terminate(k, TIMEOUT_NS)) != 0) {
    fprintf(stderr, "terminate: %s\n", rk_err_name(rc));
    errors++;
  }
  rk_runtime_destroy(rt);
  if (errors || total != total_expected) {
    printf("\nFAILED: %" PRIu64 " checks failed\n", errors);
    return 1;
  }
  printf("\nok: %" PRIu64 " operations applied in per-account order, %" PRIu64
         " replies each stamped after its request\n", ops, queries);
  return 0;
}
