/* devemu_util.h — the emulated device (src/device/emulation_backend.h) for the tests that drive
 * it: test_devemu and test_cuda_host. Include after rt_util.h, device/params.h and
 * host/internal.h; link librk.a and rk_devemu. */
#ifndef RK_DEVEMU_UTIL_H
#define RK_DEVEMU_UTIL_H

#include "device/emulation_backend.h"

/* emu_device_start, asserting that every block started. */
static inline void emu_device_start_ok(emu_device *d) { assert_int_equal(emu_device_start(d), RK_OK); }

#endif
