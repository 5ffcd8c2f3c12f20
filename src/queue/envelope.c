/* envelope.c — host CRC32C (SSE4.2 instruction when present, else slicing-by-8) and the names of
 * envelope validation results. The device uses the bitwise rk_crc32c_portable; all three agree. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "ringkernel/envelope.h"

static uint32_t crc_table[8][256];
static int crc_hw; /* 0 table, 1 SSE4.2; set once by crc_setup */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init_tables(void) {
  uint32_t i, j, c;
  for (i = 0; i < 256; i++) {
    c = i;
    for (j = 0; j < 8; j++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    crc_table[0][i] = c;
  }
  for (i = 0; i < 256; i++)
    for (j = 1; j < 8; j++) crc_table[j][i] = (crc_table[j - 1][i] >> 8) ^ crc_table[0][crc_table[j - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len) {
  crc = ~crc;
  while (len && ((uintptr_t)p & 7)) {
    crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    len--;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= crc;
    crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^ crc_table[5][(w >> 16) & 0xff] ^
          crc_table[4][(w >> 24) & 0xff] ^ crc_table[3][(w >> 32) & 0xff] ^
          crc_table[2][(w >> 40) & 0xff] ^ crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw_sse42(uint32_t crc, const uint8_t *p, size_t len) {
  uint64_t c = (uint32_t)~crc;
  while (len && ((uintptr_t)p & 7)) {
    c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    len--;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  while (len--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
  return ~(uint32_t)c;
}
#endif

/* The tables and the CPU check are computed once; pthread_once orders them before every use. */
static void crc_setup(void) {
  crc_init_tables();
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

uint32_t rk_crc32c(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc_once, crc_setup);
  if (data == NULL || len == 0) return crc;
#if defined(__x86_64__) && defined(__GNUC__)
  if (crc_hw == 1) return crc_hw_sse42(crc, (const uint8_t *)data, len);
#endif
  return crc_sw(crc, (const uint8_t *)data, len);
}

/* For tests: the table path regardless of the CPU, so both paths are checked against each other. */
uint32_t rk__crc32c_table(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc_once, crc_setup);
  if (data == NULL || len == 0) return crc;
  return crc_sw(crc, (const uint8_t *)data, len);
}

const char *rk_envelope_check_name(int check) {
  switch (check) {
    case RK_ENV_OK: return "ok";
    case RK_ENV_BAD_MAGIC: return "bad magic";
    case RK_ENV_BAD_VERSION: return "bad version";
    case RK_ENV_BAD_FLAGS: return "reserved flag bits set, or not the flags of a reply";
    case RK_ENV_BAD_RESERVED: return "origin set on a message that is not kernel-to-kernel";
    case RK_ENV_BAD_LENGTH: return "payload length exceeds slot";
    case RK_ENV_BAD_TYPE: return "message type 0 on a data message";
    case RK_ENV_BAD_DEST: return "wrong destination kernel";
    case RK_ENV_BAD_CHECKSUM: return "payload checksum mismatch";
    case RK_ENV_BAD_SOURCE: return "reply from the wrong kernel";
    case RK_ENV_BAD_ERROR: return "error reply without a negative error code";
    default: return "unknown envelope check";
  }
}
