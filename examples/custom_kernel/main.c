/* main.c — the host side of the custom-kernel example: launches the inventory kernel defined in
 * inventory_kernel.c like a built-in, drives it with typed, keyed requests from the host, checks
 * every reply (error replies included) against what it predicts, and prints the check.
 * Exits 0 when every check holds. */
#include <inttypes.h>
#include <stdio.h>

#include "inventory.h"

#define TIMEOUT_NS 2000000000ll

static int failures;
#define CHECK(cond, ...)                  \
  do {                                    \
    if (!(cond)) {                        \
      fprintf(stderr, "FAILED: " __VA_ARGS__); \
      fprintf(stderr, "\n");              \
      failures++;                         \
    }                                     \
  } while (0)

/* One update, as an rk_call keyed by the item id. Returns rk_call's result; *status is the error
 * reply's code (0 for a normal reply). */
static int update(rk_kernel *k, uint32_t item, int64_t delta, inv_level *out, int *status) {
  inv_update u = {item, 0, delta};
  rk_msg reply;
  int rc = rk_call_key(k, item, inv_update_TYPE, &u, sizeof u, &reply, out, sizeof *out, TIMEOUT_NS);
  *status = reply.status;
  if (rc == RK_OK && RK_MSG_AS(&reply, inv_level) == NULL) return RK_EINVAL; /* not the reply type */
  return rc;
}

int main(void) {
  rk_runtime_options o = RK_RUNTIME_OPTIONS_INIT;
  rk_runtime *rt = NULL;
  rk_kernel *k = NULL;
  int64_t expect[INV_ITEMS] = {0};
  uint32_t owner[INV_ITEMS];
  inv_level lv;
  int rc, status, round;
  uint32_t i;

  if ((rc = rk_runtime_create(&rt, &o)) != RK_OK) {
    fprintf(stderr, "rk_runtime_create: %s\n", rk_err_name(rc));
    return 1;
  }
  if ((rc = rk_kernel_launch(rt, &inventory, NULL, &k)) != RK_OK || (rc = rk_kernel_activate(k)) != RK_OK) {
    fprintf(stderr, "launch: %s (%s)\n", rk_err_name(rc), rk_runtime_last_error(rt));
    rk_runtime_destroy(rt);
    return 1;
  }
  printf("inventory kernel on the %s backend (%s), %u lanes; device code embedded: %s\n",
         rk_backend_name(rk_runtime_backend(rt)), rk_runtime_backend_reason(rt), rk_kernel_lanes(k),
         inventory.cuda_image ? "yes" : "no");

  /* Stock in, stock out: every reply says what the kernel's state must now hold. */
  for (round = 0; round < 20; round++)
    for (i = 0; i < INV_ITEMS; i++) {
      int64_t delta = round % 4 == 3 ? -(int64_t)(i + round) : (int64_t)(i + 1);
      int ok = expect[i] + delta >= 0;
      rc = update(k, i, delta, &lv, &status);
      if (ok) {
        expect[i] += delta;
        CHECK(rc == RK_OK && lv.item == i && lv.stock == expect[i], "item %u: rc %s, stock %" PRId64 " (expected %" PRId64 ")",
              i, rk_err_name(rc), lv.stock, expect[i]);
        if (round == 0) owner[i] = lv.lane;
        CHECK(rc != RK_OK || lv.lane == owner[i], "item %u moved from lane %u to lane %u", i, owner[i], lv.lane);
      } else {
        CHECK(rc == RK_EHANDLER && status == INV_NOT_ENOUGH, "item %u: taking %" PRId64 " of %" PRId64
              ": rc %s status %s (expected an error reply %s)", i, -delta, expect[i], rk_err_name(rc),
              rk_err_name(status), rk_err_name(INV_NOT_ENOUGH));
      }
    }
  /* An unknown item is an error reply, and the kernel goes on. */
  rc = update(k, INV_ITEMS + 7, 1, &lv, &status);
  CHECK(rc == RK_EHANDLER && status == INV_UNKNOWN_ITEM, "unknown item: rc %s status %s", rk_err_name(rc),
        rk_err_name(status));
  rc = update(k, 0, 0, &lv, &status);
  CHECK(rc == RK_OK && lv.stock == expect[0], "after the error reply: rc %s", rk_err_name(rc));

  if ((rc = rk_kernel_terminate(k, TIMEOUT_NS)) != RK_OK) {
    fprintf(stderr, "terminate: %s\n", rk_err_name(rc));
    failures++;
  }
  rk_runtime_destroy(rt); /* frees the kernel too: k is not used after this */
  if (failures) {
    printf("custom_kernel: FAILED (%d checks)\n", failures);
    return 1;
  }
  printf("custom_kernel: ok (%d items, %d updates each, error replies as expected)\n", INV_ITEMS, 20);
  return 0;
}
