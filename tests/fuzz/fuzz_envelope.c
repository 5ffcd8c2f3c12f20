/* fuzz_envelope.c — libFuzzer target: envelope validation on arbitrary bytes.
 *
 * Input: max_payload selector (u32), expected id (u32), then a slot: a 64-byte envelope and the
 * payload bytes that follow it. The slot is copied into a heap block of exactly 64 + max_payload
 * bytes, so ASan reports any read past what the slot holds. Both validations run (request:
 * rk_envelope_validate, reply: rk_envelope_validate_reply) and every result must agree with the
 * rules it stands for: an accepted envelope has the right magic, version and flags, a zero
 * origin word (K2K only), a length within the slot, a legal type, the expected ids and, when sealed, a
 * checksum that the three CRC32C implementations (instruction, table, portable) all compute. The
 * three implementations are also compared on every payload, split at an input-chosen point to
 * exercise chaining. A broken rule aborts (a crash to libFuzzer). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringkernel.h>

uint32_t rk__crc32c_table(uint32_t crc, const void *data, size_t len);

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "fuzz_envelope: %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
      abort();                                                                      \
    }                                                                               \
  } while (0)

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void check_crc(const uint8_t *p, size_t len, size_t split) {
  uint32_t hw = rk_crc32c(0, p, len), tab = rk__crc32c_table(0, p, len), port = rk_crc32c_portable(0, p, len);
  CHECK(hw == tab && tab == port);
  if (split > len) split = len;
  CHECK(rk_crc32c(rk_crc32c(0, p, split), p + split, len - split) == hw);
  CHECK(rk__crc32c_table(rk_crc32c_portable(0, p, split), p + split, len - split) == hw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint32_t sel, expect, max_payload;
  size_t avail;
  uint8_t *slot;
  const rk_envelope *e;
  rk_envelope_check req, rep;
  if (size < 8 + RK_ENVELOPE_SIZE) return 0;
  sel = le32(data);
  expect = le32(data + 4);
  avail = size - 8 - RK_ENVELOPE_SIZE;
  /* what the slot can hold never exceeds what is there: the validators' contract */
  max_payload = (uint32_t)(sel % (avail + 1));
  slot = (uint8_t *)malloc(RK_ENVELOPE_SIZE + max_payload);
  CHECK(slot != NULL);
  memcpy(slot, data + 8, RK_ENVELOPE_SIZE + max_payload);
  e = (const rk_envelope *)(const void *)slot;

  if (sel & 0x80000000u) expect = UINT32_MAX; /* "skip the id check" half of the time */
  req = rk_envelope_validate(e, NULL, max_payload, expect);
  rep = rk_envelope_validate_reply(e, NULL, max_payload, expect);
  CHECK((int)req >= 0 && req < RK_ENV_CHECK_COUNT && req != RK_ENV_BAD_SOURCE && req != RK_ENV_BAD_ERROR);
  CHECK((int)rep >= 0 && rep < RK_ENV_CHECK_COUNT && rep != RK_ENV_BAD_DEST);
  CHECK(strcmp(rk_envelope_check_name(req), rk_envelope_check_name(RK_ENV_CHECK_COUNT)) != 0);
  CHECK(strcmp(rk_envelope_check_name(rep), rk_envelope_check_name(RK_ENV_CHECK_COUNT)) != 0);
  /* the header-damage results are the same for both, and come first */
  if ((req != RK_ENV_OK && req < RK_ENV_BAD_LENGTH) || (rep != RK_ENV_OK && rep < RK_ENV_BAD_LENGTH)) {
    CHECK(e->magic != RK_ENVELOPE_MAGIC || e->version != RK_ENVELOPE_VERSION ||
          (e->origin != 0 && !(e->flags & RK_ENV_F_K2K)) || (rep == RK_ENV_BAD_RESERVED && e->origin != 0) ||
          (e->flags & ~RK_ENV_F_KNOWN) || rep == RK_ENV_BAD_FLAGS);
  }
  if (req == RK_ENV_OK) {
    CHECK(e->magic == RK_ENVELOPE_MAGIC && e->version == RK_ENVELOPE_VERSION);
    CHECK((e->flags & ~RK_ENV_F_KNOWN) == 0 && (e->origin == 0 || (e->flags & RK_ENV_F_K2K)));
    CHECK(e->payload_len <= max_payload);
    CHECK(e->type != 0 || (e->flags & RK_ENV_F_CONTROL));
    CHECK(expect == UINT32_MAX || e->dst == expect);
  }
  if (rep == RK_ENV_OK) {
    CHECK(e->magic == RK_ENVELOPE_MAGIC && e->version == RK_ENVELOPE_VERSION && e->origin == 0);
    CHECK((e->flags & RK_ENV_F_REPLY) && (e->flags & ~RK_ENV_F_REPLY_ALLOWED) == 0);
    CHECK(e->payload_len <= max_payload);
    CHECK(e->type != 0 || (e->flags & RK_ENV_F_ERROR));
    CHECK(expect == UINT32_MAX || e->src == expect);
    if (e->flags & RK_ENV_F_ERROR) CHECK(e->payload_len >= 4 && (int32_t)le32(slot + RK_ENVELOPE_SIZE) < 0);
    /* a reply the host accepts is a well-formed envelope, but for the destination and type 0 */
    {
      rk_envelope_check r2 = rk_envelope_validate(e, NULL, max_payload, UINT32_MAX);
      CHECK(r2 == RK_ENV_OK || (r2 == RK_ENV_BAD_TYPE && e->type == 0));
    }
  }
  if ((req == RK_ENV_OK || rep == RK_ENV_OK) && (e->flags & RK_ENV_F_CHECKSUM)) {
    CHECK(rk_crc32c_portable(0, slot + RK_ENVELOPE_SIZE, e->payload_len) == e->checksum);
  }
  /* validation is pure: the same answer twice, and with the payload passed separately */
  CHECK(rk_envelope_validate(e, slot + RK_ENVELOPE_SIZE, max_payload, expect) == req);
  CHECK(rk_envelope_validate_reply(e, slot + RK_ENVELOPE_SIZE, max_payload, expect) == rep);
  check_crc(slot + RK_ENVELOPE_SIZE, max_payload, sel >> 16);
  free(slot);
  return 0;
}
