/** @file ringkernel/version.h — the library version, at compile time (macros) and at run time
 * (rk_version) so an application can catch a header/library mismatch. CMake reads the numbers
 * below; change them here only. */
#ifndef RINGKERNEL_VERSION_H
#define RINGKERNEL_VERSION_H

#include "ringkernel/common.h"

/** Major version (incompatible changes). */
#define RK_VERSION_MAJOR 0
/** Minor version (before 1.0, an incompatible change bumps it: 0.2 moved the rings' sequence words into the slots). */
#define RK_VERSION_MINOR 2
/** Patch version. */
#define RK_VERSION_PATCH 0
/** The version as one number: major << 16 | minor << 8 | patch. */
#define RK_VERSION_HEX ((RK_VERSION_MAJOR << 16) | (RK_VERSION_MINOR << 8) | RK_VERSION_PATCH)

RK_EXTERN_C_BEGIN
#if !defined(__CUDACC_RTC__)
/** The library's version as RK_VERSION_HEX packs it. Any thread. */
RK_API unsigned rk_version(void);
/** The library's version as "MAJOR.MINOR.PATCH", plus build facts (e.g. "0.1.0 (cuda)"). */
RK_API const char *rk_version_string(void);
#endif
RK_EXTERN_C_END

#endif /* RINGKERNEL_VERSION_H */
