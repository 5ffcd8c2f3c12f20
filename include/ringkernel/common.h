/** @file ringkernel/common.h — the one place where the portability macros and fixed-width types live.
 *
 * Every public header is the common subset of C11, C++17, nvcc and NVRTC. This
 * header supplies what that subset lacks: RK_HD (host+device), RK_INLINE, RK_STATIC_ASSERT,
 * RK_ALIGNAS, RK_OFFSETOF, the export macro RK_API, and, under NVRTC (which has no system headers),
 * a small block of fixed-width typedefs. */
#ifndef RINGKERNEL_COMMON_H
#define RINGKERNEL_COMMON_H

#if defined(__CUDACC_RTC__)
/* NVRTC: no stdint.h/stddef.h unless the toolkit is on an include path, which a machine with only a
 * driver lacks. These match the LP64 definitions of the host ABI, so layouts agree. */
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef unsigned long size_t;
typedef unsigned long uintptr_t;
#ifndef NULL
#define NULL 0
#endif
#else
#include <stddef.h>
#include <stdint.h>
#endif

/* RK_HD marks functions compiled for host and device. Empty under a plain host compiler. */
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RK_HD __host__ __device__
#define RK_DEVICE __device__
#else
/** Marks functions compiled for host and device (empty under a host compiler). */
#define RK_HD
/** Marks device functions (empty under a host compiler). */
#define RK_DEVICE
#endif

/* RK_INLINE: header-only functions. `static inline` is valid C11, C++17 and CUDA C++; nvcc honours
 * __forceinline__ for device code, which keeps the hot ring paths free of calls. */
#if defined(__CUDA_ARCH__)
#define RK_INLINE static __forceinline__
#elif defined(__GNUC__)
#define RK_INLINE static inline __attribute__((always_inline))
#else
/** Header-only functions: static inline (force-inlined on the device). */
#define RK_INLINE static inline
#endif

/* C11's _Static_assert and _Alignas are rejected by g++ and nvcc; C++ spells them differently. */
#if defined(__cplusplus)
#define RK_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#define RK_ALIGNAS(n) alignas(n)
#else
/** Compile-time assertion, in C11 and C++ alike. */
#define RK_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
/** Alignment specifier, in C11 and C++ alike. */
#define RK_ALIGNAS(n) _Alignas(n)
#endif

/* Layout pins. gcc, clang and nvcc (both passes) understand __builtin_offsetof; NVRTC has neither
 * it nor offsetof (checked with NVRTC 13.0: "type name is not allowed"), so under NVRTC only the
 * sizeof pins remain — the same headers are pinned member by member by cc, c++ and nvcc at build
 * time, and NVRTC compiles the identical text. */
/** offsetof that every compiler of the headers understands. */
#define RK_OFFSETOF(type, member) __builtin_offsetof(type, member)
#if defined(__CUDACC_RTC__)
#define RK_ASSERT_OFFSET(type, member, offset)
#else
/** Pins a struct member's offset at compile time. */
#define RK_ASSERT_OFFSET(type, member, offset) \
  RK_STATIC_ASSERT(RK_OFFSETOF(type, member) == (offset), #type "." #member " offset")
#endif

/* Casts that are valid in C and C++ alike (no implicit void * conversion in C++). */
/** A cast valid in C and C++ alike. */
#define RK_CAST(type, expr) ((type)(expr))

#if defined(__GNUC__) || defined(__clang__)
#define RK_LIKELY(x) __builtin_expect(!!(x), 1)
#define RK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
/** Branch hint: x is usually true. */
#define RK_LIKELY(x) (x)
/** Branch hint: x is usually false. */
#define RK_UNLIKELY(x) (x)
#endif

/* Export macro: the library is built with -fvisibility=hidden; public functions carry RK_API. */
#if defined(__CUDACC_RTC__)
#define RK_API
#elif defined(_WIN32)
#if defined(RK_BUILDING_LIBRARY) && !defined(RK_STATIC)
#define RK_API __declspec(dllexport)
#elif !defined(RK_STATIC)
#define RK_API __declspec(dllimport)
#else
#define RK_API
#endif
#elif defined(__GNUC__)
#define RK_API __attribute__((visibility("default")))
#else
/** Marks the library's exported functions (the library is built with hidden visibility). */
#define RK_API
#endif

#if defined(__cplusplus)
#define RK_EXTERN_C_BEGIN extern "C" {
#define RK_EXTERN_C_END }
#else
/** Opens extern "C" under C++. */
#define RK_EXTERN_C_BEGIN
/** Closes extern "C" under C++. */
#define RK_EXTERN_C_END
#endif

/* The line size used for padding shared words: 128 bytes is the GPU's L2 line and two x86 lines
 * (the adjacent-line prefetcher pulls pairs), so producer and consumer words never share one. */
/** Padding unit for shared words: the GPU's L2 line, two x86 lines. */
#define RK_LINE 128

#endif /* RINGKERNEL_COMMON_H */
