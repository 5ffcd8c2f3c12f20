/* test_util.h — what every cmocka test of ringkernel includes: cmocka's prerequisite headers, a
 * flag for sanitizer builds (stress tests scale themselves down under ASan/TSan), a monotonic clock
 * and a small deterministic random generator so that failures reproduce. */
#ifndef RK_TEST_UTIL_H
#define RK_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the four above first. */
#include <cmocka.h>
#include <stdlib.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define RK_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define RK_TEST_SANITIZED 1
#endif
#endif
#ifndef RK_TEST_SANITIZED
#define RK_TEST_SANITIZED 0
#endif

static inline uint64_t rk_test_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* aligned_alloc wants the size to be a multiple of the alignment (ASan enforces it). */
static inline void *rk_test_aligned_alloc(size_t align, size_t size) {
  return aligned_alloc(align, (size + align - 1) / align * align);
}

/* xorshift64*: deterministic, seeded per test, good enough to pick lengths and values. */
static inline uint64_t rk_test_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dull;
}

#endif /* RK_TEST_UTIL_H */
