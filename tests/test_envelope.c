/* test_envelope.c — the 64-byte envelope (init, seal, validation of every kind of corruption and
 * the names of the results), CRC32C (known vectors; the hardware, table and portable paths agree on
 * random lengths, alignments and chained chunks), the error table and the version query.
 * Linked against librk.a so it can reach the internal table path rk__crc32c_table. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

#include <ringkernel.h>

/* Internal (hidden in librk.so): the slicing-by-8 table path, whatever the CPU supports. */
uint32_t rk__crc32c_table(uint32_t crc, const void *data, size_t len);

#define PAYLOAD_MAX 192u

typedef struct {
  rk_envelope env;
  uint8_t payload[PAYLOAD_MAX];
} slot_t;

static void make_message(slot_t *s, uint32_t len) {
  uint32_t i;
  memset(s, 0xa5, sizeof *s); /* garbage first: init must set every field */
  rk_envelope_init(&s->env, 42, len, RK_ENV_F_REPLY);
  s->env.msg_id = 0x1122334455667788ull;
  s->env.correlation_id = 99;
  s->env.src = 3;
  s->env.dst = 7;
  s->env.hlc = rk_hlc_make(1700000000000000ull, 5);
  s->env.node = 12;
  s->env.priority = 1;
  s->env.lane = 2;
  for (i = 0; i < PAYLOAD_MAX; i++) s->payload[i] = (uint8_t)(i * 7 + 1);
  rk_envelope_seal(&s->env, s->payload);
}

static void test_layout(void **state) {
  slot_t s;
  (void)state;
  assert_int_equal(sizeof(rk_envelope), RK_ENVELOPE_SIZE);
  assert_int_equal(offsetof(rk_envelope, hlc), 40);
  assert_int_equal(offsetof(rk_envelope, origin), 60);
  assert_ptr_equal(rk_envelope_payload(&s.env), (void *)s.payload);
  assert_int_equal(offsetof(slot_t, payload), 64);
}

static void test_init_fields(void **state) {
  slot_t s;
  (void)state;
  memset(&s, 0xff, sizeof s);
  rk_envelope_init(&s.env, 9, 17, RK_ENV_F_K2K | RK_ENV_F_NO_REPLY);
  assert_int_equal(s.env.magic, RK_ENVELOPE_MAGIC);
  assert_int_equal(s.env.version, RK_ENVELOPE_VERSION);
  assert_int_equal(s.env.flags, RK_ENV_F_K2K | RK_ENV_F_NO_REPLY);
  assert_int_equal(s.env.type, 9);
  assert_int_equal(s.env.payload_len, 17);
  assert_int_equal(s.env.msg_id, 0);
  assert_int_equal(s.env.correlation_id, 0);
  assert_int_equal(s.env.src, 0);
  assert_int_equal(s.env.dst, 0);
  assert_int_equal(s.env.hlc, 0);
  assert_int_equal(s.env.node, 0);
  assert_int_equal(s.env.checksum, 0);
  assert_int_equal(s.env.priority, 0);
  assert_int_equal(s.env.lane, 0);
  assert_int_equal(s.env.origin, 0);
  /* "RRKV" in memory */
  assert_memory_equal(&s.env.magic, "RRKV", 4);
}

static void test_round_trip(void **state) {
  slot_t s;
  uint32_t len;
  (void)state;
  for (len = 0; len <= PAYLOAD_MAX; len += 13) {
    make_message(&s, len);
    assert_true(s.env.flags & RK_ENV_F_CHECKSUM);
    assert_true(s.env.flags & RK_ENV_F_REPLY);
    assert_int_equal(s.env.checksum, rk_crc32c_portable(0, s.payload, len));
    /* payload right after the envelope, or passed explicitly */
    assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_OK);
    assert_int_equal(rk_envelope_validate(&s.env, s.payload, PAYLOAD_MAX, 7), RK_ENV_OK);
    assert_int_equal(rk_envelope_validate(&s.env, NULL, len, 7), RK_ENV_OK); /* exactly fits */
    assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, UINT32_MAX), RK_ENV_OK);
  }
  /* a separate payload buffer */
  {
    rk_envelope e;
    const char text[] = "hello, ring kernel";
    rk_envelope_init(&e, 1, sizeof text, 0);
    rk_envelope_seal(&e, text);
    assert_int_equal(rk_envelope_validate(&e, text, sizeof text, 0), RK_ENV_OK);
    assert_int_equal(e.checksum, rk_crc32c(0, text, sizeof text));
  }
  /* without the checksum flag the payload is not checked */
  make_message(&s, 64);
  s.env.flags &= (uint16_t)~RK_ENV_F_CHECKSUM;
  s.payload[3] ^= 1;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_OK);
  /* control messages may have type 0 */
  make_message(&s, 8);
  s.env.type = 0;
  s.env.flags |= RK_ENV_F_CONTROL;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_OK);
  /* every known flag is accepted */
  make_message(&s, 8);
  s.env.flags = (uint16_t)RK_ENV_F_KNOWN;
  rk_envelope_seal(&s.env, s.payload);
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_OK);
}

static void test_each_corruption_detected(void **state) {
  slot_t s;
  int bit;
  (void)state;
  make_message(&s, 100);
  s.env.magic ^= 0x100;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_MAGIC);

  make_message(&s, 100);
  s.env.version = 2;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_VERSION);
  s.env.version = 0;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_VERSION);

  /* every reserved flag bit, one at a time */
  for (bit = 0; bit < 16; bit++) {
    uint16_t f = (uint16_t)(1u << bit);
    if (f & RK_ENV_F_KNOWN) continue;
    make_message(&s, 100);
    s.env.flags |= f;
    assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_FLAGS);
  }

  make_message(&s, 100);
  s.env.origin = 1;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_RESERVED);
  s.env.origin = 0x80000000u;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_RESERVED);
  s.env.flags |= RK_ENV_F_K2K; /* a K2K message continuing a host request names its origin */
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_OK);

  make_message(&s, 100);
  assert_int_equal(rk_envelope_validate(&s.env, NULL, 99, 7), RK_ENV_BAD_LENGTH);
  s.env.payload_len = UINT32_MAX;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_LENGTH);

  make_message(&s, 100);
  s.env.type = 0;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_TYPE);

  make_message(&s, 100);
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 8), RK_ENV_BAD_DEST);
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 0), RK_ENV_BAD_DEST);

  /* a single flipped payload bit, anywhere in the payload */
  for (bit = 0; bit < 100 * 8; bit += 37) {
    make_message(&s, 100);
    s.payload[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_CHECKSUM);
  }
  /* bytes beyond payload_len are not covered */
  make_message(&s, 100);
  s.payload[100] ^= 1;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_OK);
  /* a corrupted checksum field */
  make_message(&s, 100);
  s.env.checksum ^= 0x10000;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_CHECKSUM);
  /* an explicit payload pointer is the one checked */
  make_message(&s, 100);
  {
    uint8_t copy[PAYLOAD_MAX];
    memcpy(copy, s.payload, sizeof copy);
    copy[50] ^= 0x40;
    assert_int_equal(rk_envelope_validate(&s.env, copy, PAYLOAD_MAX, 7), RK_ENV_BAD_CHECKSUM);
  }

  /* several corruptions: the first in enum order is reported */
  make_message(&s, 100);
  s.env.magic = 0;
  s.env.version = 9;
  s.env.type = 0;
  s.payload[0] ^= 1;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_MAGIC);
  make_message(&s, 100);
  s.env.origin = 5;
  s.env.dst = 1;
  assert_int_equal(rk_envelope_validate(&s.env, NULL, PAYLOAD_MAX, 7), RK_ENV_BAD_RESERVED);
}

/* A reply as a lane writes it: REPLY flag, src = the kernel, a type; error replies carry a negative
 * int32 code. */
static void make_reply(slot_t *s, uint32_t len, uint16_t flags) {
  make_message(s, len); /* sealed */
  s->env.flags = (uint16_t)(RK_ENV_F_REPLY | flags);
  s->env.checksum = 0;
  s->env.dst = 0; /* back to the host */
}

static void test_reply_validation(void **state) {
  slot_t s;
  int32_t code = RK_EINVAL;
  uint8_t copy[PAYLOAD_MAX];
  uint32_t bit;
  (void)state;
  make_reply(&s, 100, 0);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, UINT32_MAX), RK_ENV_OK);
  s.env.dst = 12345; /* dst echoes the request's src: not checked */
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);
  make_reply(&s, PAYLOAD_MAX, 0);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);
  rk_envelope_seal(&s.env, s.payload);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);
  /* an error reply, of type 0 too (a lane answers a type-0 request with one) */
  make_reply(&s, 4, RK_ENV_F_ERROR);
  memcpy(s.payload, &code, sizeof code);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);
  s.env.type = 0;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);

  /* each corruption, in the order of the enum */
  make_reply(&s, 100, 0);
  s.env.magic = 0;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_MAGIC);
  make_reply(&s, 100, 0);
  s.env.version = 0;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_VERSION);
  for (bit = 0; bit < 16; bit++) {
    uint16_t f = (uint16_t)(1u << bit);
    make_reply(&s, 100, 0);
    s.env.flags = (uint16_t)(s.env.flags | f);
    if (f & RK_ENV_F_REPLY_ALLOWED) continue;
    if (rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3) != RK_ENV_BAD_FLAGS)
      fail_msg("flag 0x%x accepted on a reply", f);
  }
  make_reply(&s, 100, 0);
  s.env.flags = 0; /* not a reply */
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_FLAGS);
  s.env.flags = RK_ENV_F_ERROR;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_FLAGS);
  make_reply(&s, 100, 0);
  s.env.origin = 1;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_RESERVED);
  make_reply(&s, 100, 0);
  s.env.payload_len = PAYLOAD_MAX + 1;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_LENGTH);
  s.env.payload_len = 0x40000000u;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_LENGTH);
  s.env.payload_len = UINT32_MAX;
  s.env.flags = (uint16_t)(s.env.flags | RK_ENV_F_CHECKSUM); /* the length is refused before the sum reads */
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_LENGTH);
  make_reply(&s, 100, 0);
  s.env.type = 0;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_TYPE);
  make_reply(&s, 100, 0);
  rk_envelope_seal(&s.env, s.payload);
  s.payload[99] ^= 1;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_CHECKSUM);
  memcpy(copy, s.payload, sizeof copy);
  copy[99] ^= 1; /* a separate payload buffer is the one checked */
  assert_int_equal(rk_envelope_validate_reply(&s.env, copy, PAYLOAD_MAX, 3), RK_ENV_OK);
  make_reply(&s, 100, 0);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 4), RK_ENV_BAD_SOURCE);
  make_reply(&s, 3, RK_ENV_F_ERROR); /* too short for a code */
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_ERROR);
  make_reply(&s, 4, RK_ENV_F_ERROR);
  code = 0;
  memcpy(s.payload, &code, sizeof code);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_ERROR);
  code = 5;
  memcpy(s.payload, &code, sizeof code);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_ERROR);
  code = INT32_MIN;
  memcpy(s.payload, &code, sizeof code);
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_OK);
  /* an unaligned payload buffer is read byte by byte */
  code = RK_ECLOCK;
  memcpy(copy + 1, &code, sizeof code);
  assert_int_equal(rk_envelope_validate_reply(&s.env, copy + 1, PAYLOAD_MAX, 3), RK_ENV_OK);
  /* the first corruption wins: a damaged header is reported as such, whatever else is wrong */
  make_reply(&s, 100, 0);
  s.env.origin = 2;
  s.env.payload_len = 0x40000000u;
  s.env.src = 99;
  assert_int_equal(rk_envelope_validate_reply(&s.env, NULL, PAYLOAD_MAX, 3), RK_ENV_BAD_RESERVED);
  /* the contract the host relies on: the header-damage results come before RK_ENV_BAD_LENGTH */
  assert_true(RK_ENV_BAD_MAGIC < RK_ENV_BAD_LENGTH && RK_ENV_BAD_VERSION < RK_ENV_BAD_LENGTH &&
              RK_ENV_BAD_FLAGS < RK_ENV_BAD_LENGTH && RK_ENV_BAD_RESERVED < RK_ENV_BAD_LENGTH);
  assert_true(RK_ENV_BAD_SOURCE > RK_ENV_BAD_LENGTH && RK_ENV_BAD_ERROR > RK_ENV_BAD_LENGTH);
}

/* The validators' checks written out one by one, in the order of the enum (what they were before
 * the one-word test of the common case, issue 16), to compare the library's against. */
static rk_envelope_check ref_validate(const rk_envelope *e, const void *payload, uint32_t max, uint32_t dst) {
  if (e->magic != RK_ENVELOPE_MAGIC) return RK_ENV_BAD_MAGIC;
  if (e->version != RK_ENVELOPE_VERSION) return RK_ENV_BAD_VERSION;
  if (e->flags & ~RK_ENV_F_KNOWN) return RK_ENV_BAD_FLAGS;
  if (e->origin != 0 && !(e->flags & RK_ENV_F_K2K)) return RK_ENV_BAD_RESERVED;
  if (e->payload_len > max) return RK_ENV_BAD_LENGTH;
  if (e->type == 0 && !(e->flags & RK_ENV_F_CONTROL)) return RK_ENV_BAD_TYPE;
  if (dst != 0xffffffffu && e->dst != dst) return RK_ENV_BAD_DEST;
  if ((e->flags & RK_ENV_F_CHECKSUM) && rk_envelope__crc(payload, e->payload_len) != e->checksum)
    return RK_ENV_BAD_CHECKSUM;
  return RK_ENV_OK;
}

static rk_envelope_check ref_validate_reply(const rk_envelope *e, const uint8_t *p, uint32_t max, uint32_t src) {
  if (e->magic != RK_ENVELOPE_MAGIC) return RK_ENV_BAD_MAGIC;
  if (e->version != RK_ENVELOPE_VERSION) return RK_ENV_BAD_VERSION;
  if ((e->flags & ~RK_ENV_F_REPLY_ALLOWED) || !(e->flags & RK_ENV_F_REPLY)) return RK_ENV_BAD_FLAGS;
  if (e->origin != 0) return RK_ENV_BAD_RESERVED;
  if (e->payload_len > max) return RK_ENV_BAD_LENGTH;
  if (e->type == 0 && !(e->flags & RK_ENV_F_ERROR)) return RK_ENV_BAD_TYPE;
  if ((e->flags & RK_ENV_F_CHECKSUM) && rk_envelope__crc(p, e->payload_len) != e->checksum) return RK_ENV_BAD_CHECKSUM;
  if (src != 0xffffffffu && e->src != src) return RK_ENV_BAD_SOURCE;
  if (e->flags & RK_ENV_F_ERROR) {
    int32_t c;
    if (e->payload_len < 4) return RK_ENV_BAD_ERROR;
    memcpy(&c, p, sizeof c);
    if (c >= 0) return RK_ENV_BAD_ERROR;
  }
  return RK_ENV_OK;
}

/* xorshift64*: the fields' values, reproducibly */
static uint64_t rnd(uint64_t *x) {
  *x ^= *x >> 12;
  *x ^= *x << 25;
  *x ^= *x >> 27;
  return *x * 0x2545f4914f6cdd1dull;
}

/* A value for a field: mostly the sound one, else one of a few near it, else anything. */
static uint32_t pick(uint64_t *x, uint32_t good, uint32_t other) {
  uint64_t r = rnd(x);
  switch (r % 8) {
    case 0: return (uint32_t)(r >> 32);
    case 1: return other;
    case 2: return good ^ (1u << ((r >> 8) % 32));
    default: return good;
  }
}

/* Both validators agree with the written-out checks on every envelope: every flags word, and 400k
 * envelopes whose fields are sound or damaged at random (the one-word test of the common case must
 * never accept what a check refuses, nor change which corruption is named). */
static void test_validate_fast_path_agrees(void **state) {
  slot_t s;
  uint64_t x = 0x9e3779b97f4a7c15ull;
  uint32_t i, f, code, checks = 0;
  int32_t neg = RK_EINVAL;
  (void)state;
  for (i = 0; i < 400000u + 65536u * 2; i++) {
    make_message(&s, (uint32_t)(rnd(&x) % 40));
    s.env.flags = i < 65536u * 2 ? (uint16_t)i
                                 : (uint16_t)pick(&x, i & 1 ? RK_ENV_F_REPLY : 0, RK_ENV_F_REPLY | RK_ENV_F_ERROR);
    f = s.env.flags;
    s.env.magic = pick(&x, RK_ENVELOPE_MAGIC, RK_ENVELOPE_MAGIC);
    s.env.version = (uint16_t)pick(&x, RK_ENVELOPE_VERSION, 0);
    s.env.origin = pick(&x, 0, 5);
    s.env.payload_len = pick(&x, s.env.payload_len, 33);
    s.env.type = pick(&x, 7, 0);
    s.env.src = pick(&x, 3, 4);
    s.env.dst = pick(&x, 9, 8);
    if (f & RK_ENV_F_CHECKSUM)
      s.env.checksum =
          rk_envelope__crc(s.payload, s.env.payload_len <= 32 ? s.env.payload_len : 0) ^ (uint32_t)(rnd(&x) % 2);
    if ((f & RK_ENV_F_ERROR) && rnd(&x) % 2) memcpy(s.payload, &neg, sizeof neg);
    code = s.env.payload_len <= 32; /* max 32: lengths past it must be refused before the payload is read */
    assert_int_equal(rk_envelope_validate(&s.env, s.payload, 32, 9), ref_validate(&s.env, s.payload, 32, 9));
    assert_int_equal(rk_envelope_validate(&s.env, s.payload, 32, 0xffffffffu),
                     ref_validate(&s.env, s.payload, 32, 0xffffffffu));
    assert_int_equal(rk_envelope_validate_reply(&s.env, s.payload, 32, 3),
                     ref_validate_reply(&s.env, s.payload, 32, 3));
    assert_int_equal(rk_envelope_validate_reply(&s.env, s.payload, 32, 0xffffffffu),
                     ref_validate_reply(&s.env, s.payload, 32, 0xffffffffu));
    checks += code && rk_envelope_validate_reply(&s.env, s.payload, 32, 3) == RK_ENV_OK;
  }
  assert_true(checks > 1000); /* the sound replies were among them */
}

static void test_check_names(void **state) {
  int i, j;
  const char *unknown = rk_envelope_check_name(RK_ENV_CHECK_COUNT);
  (void)state;
  assert_non_null(unknown);
  assert_non_null(rk_envelope_check_name(-1));
  assert_string_equal(rk_envelope_check_name(-1), unknown);
  assert_string_equal(rk_envelope_check_name(1000), unknown);
  for (i = RK_ENV_OK; i < RK_ENV_CHECK_COUNT; i++) {
    const char *a = rk_envelope_check_name(i);
    assert_non_null(a);
    assert_true(strlen(a) > 0);
    assert_string_not_equal(a, unknown);
    for (j = i + 1; j < RK_ENV_CHECK_COUNT; j++) assert_string_not_equal(a, rk_envelope_check_name(j));
  }
  assert_string_equal(rk_envelope_check_name(RK_ENV_OK), "ok");
}

/* ------------------------------------ CRC32C ------------------------------------------------- */

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);
static const crc_fn crc_impls[] = {rk_crc32c, rk_crc32c_portable, rk__crc32c_table};
static const char *const crc_names[] = {"rk_crc32c", "rk_crc32c_portable", "rk__crc32c_table"};

static void test_crc_known_vectors(void **state) {
  uint8_t buf[32];
  size_t f;
  int i;
  (void)state;
  for (f = 0; f < 3; f++) {
    crc_fn crc = crc_impls[f];
    /* the CRC-32C check value, and the iSCSI vectors of RFC 3720 B.4 */
    if (crc(0, "123456789", 9) != 0xE3069283u) fail_msg("%s check value", crc_names[f]);
    memset(buf, 0, sizeof buf);
    assert_int_equal(crc(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    assert_int_equal(crc(0, buf, 32), 0x62A8AB43u);
    for (i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    assert_int_equal(crc(0, buf, 32), 0x46DD794Eu);
    for (i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    assert_int_equal(crc(0, buf, 32), 0x113FDB5Cu);
    /* empty input leaves the running value alone */
    assert_int_equal(crc(0, buf, 0), 0);
    assert_int_equal(crc(0x12345678u, buf, 0), 0x12345678u);
  }
  assert_int_equal(rk_crc32c(0x1234u, NULL, 0), 0x1234u);
  assert_int_equal(rk__crc32c_table(0x1234u, NULL, 0), 0x1234u);
}

static void test_crc_paths_agree(void **state) {
  enum { N = 4096 + 64 };
  static uint8_t buf[N];
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  int round;
  size_t i;
  (void)state;
  for (i = 0; i < N; i++) buf[i] = (uint8_t)rk_test_rand(&seed);
  for (round = 0; round < 3000; round++) {
    size_t off = (size_t)(rk_test_rand(&seed) % 16);
    size_t len = round < 200 ? (size_t)round : (size_t)(rk_test_rand(&seed) % 4096);
    uint32_t init = round % 3 == 0 ? 0 : (uint32_t)rk_test_rand(&seed);
    uint32_t want = rk_crc32c_portable(init, buf + off, len);
    uint32_t hw = rk_crc32c(init, buf + off, len);
    uint32_t tab = rk__crc32c_table(init, buf + off, len);
    if (hw != want || tab != want)
      fail_msg("off %zu len %zu init %08x: portable %08x, rk_crc32c %08x, table %08x", off, len,
               init, want, hw, tab);
    /* chaining: the CRC of a whole equals the CRC of its second part seeded with the first's */
    if (len > 0) {
      size_t cut = (size_t)(rk_test_rand(&seed) % (len + 1));
      size_t f;
      for (f = 0; f < 3; f++) {
        uint32_t a = crc_impls[f](init, buf + off, cut);
        uint32_t b = crc_impls[f](a, buf + off + cut, len - cut);
        if (b != want) fail_msg("%s chained at %zu of %zu: %08x != %08x", crc_names[f], cut, len, b, want);
      }
      /* mixed: start with one path, continue with another */
      assert_int_equal(rk__crc32c_table(rk_crc32c(init, buf + off, cut), buf + off + cut, len - cut),
                       want);
    }
  }
}

/* ------------------------------------ errors and version ------------------------------------- */

static void test_error_table(void **state) {
  int count = 0, expect_value = -1, i, j;
  const char *names[32];
  const char *msgs[32];
  (void)state;
  assert_string_equal(rk_err_name(RK_OK), "RK_OK");
  assert_string_equal(rk_strerror(RK_OK), "success");
#define CHECK_CODE(name, value, msg)                                  \
  assert_int_equal(RK_##name, value);                                 \
  assert_int_equal(value, expect_value);                              \
  assert_string_equal(rk_err_name(value), "RK_" #name);               \
  assert_string_equal(rk_strerror(value), msg);                       \
  assert_string_not_equal(rk_strerror(value), rk_strerror(-1000));    \
  names[count] = rk_err_name(value);                                  \
  msgs[count] = rk_strerror(value);                                   \
  count++;                                                            \
  expect_value--;
  RK_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE
  assert_int_equal(count, 17);
  assert_int_equal(RK__ERR_LAST, expect_value); /* the sentinel is right after the last code */
  for (i = 0; i < count; i++)
    for (j = i + 1; j < count; j++) {
      assert_string_not_equal(names[i], names[j]);
      assert_string_not_equal(msgs[i], msgs[j]);
    }
  /* foreign values */
  {
    const int unknown[] = {RK__ERR_LAST, 1, 2, -100, 1000, INT_MIN, INT_MAX};
    for (i = 0; i < (int)(sizeof unknown / sizeof unknown[0]); i++) {
      assert_non_null(rk_strerror(unknown[i]));
      assert_string_equal(rk_strerror(unknown[i]), "unknown error");
      assert_string_equal(rk_err_name(unknown[i]), "RK_UNKNOWN");
    }
  }
}

static void test_version(void **state) {
  char want[64];
  const char *s = rk_version_string();
  size_t n;
  (void)state;
  assert_int_equal(rk_version(), RK_VERSION_HEX);
  assert_int_equal(rk_version(), (RK_VERSION_MAJOR << 16) | (RK_VERSION_MINOR << 8) | RK_VERSION_PATCH);
  assert_int_equal(rk_version() >> 16, RK_VERSION_MAJOR);
  assert_int_equal((rk_version() >> 8) & 0xff, RK_VERSION_MINOR);
  assert_int_equal(rk_version() & 0xff, RK_VERSION_PATCH);
  assert_non_null(s);
  n = (size_t)snprintf(want, sizeof want, "%d.%d.%d", RK_VERSION_MAJOR, RK_VERSION_MINOR,
                       RK_VERSION_PATCH);
  assert_true(strlen(s) >= n);
  assert_memory_equal(s, want, n);
  assert_true(s[n] == '\0' || s[n] == ' '); /* "0.1.0" or "0.1.0 (cpu)": not "0.1.01" */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_init_fields),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_each_corruption_detected),
      cmocka_unit_test(test_reply_validation),
      cmocka_unit_test(test_validate_fast_path_agrees),
      cmocka_unit_test(test_check_names),
      cmocka_unit_test(test_crc_known_vectors),
      cmocka_unit_test(test_crc_paths_agree),
      cmocka_unit_test(test_error_table),
      cmocka_unit_test(test_version),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
