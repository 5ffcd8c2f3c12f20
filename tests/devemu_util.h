/* devemu_util.h — the emulated device (src/device/emulation_backend.h) for the tests that drive
 * it: test_devemu, test_cuda_host and test_mpi_dev. Include after rt_util.h, device/params.h and
 * host/internal.h; link librk.a and rk_devemu. */
#ifndef RK_DEVEMU_UTIL_H
#define RK_DEVEMU_UTIL_H

#include "device/emulation_backend.h"

/* emu_device_start, asserting that every block started. */
static inline void emu_device_start_ok(emu_device *d) { assert_int_equal(emu_device_start(d), RK_OK); }

/* Whether the host inbox of lane 0 of kernel arg (an rk_kernel *) is closed: its terminate has
 * begun (an rt_wait_for predicate). Acquire, system scope: the ring's claim word is shared with the
 * device lane, and the close stores the flag with release; only the flag is looked at. */
static inline int emu_host_inbox_closed(void *arg) {
  return (rk_load_acquire_sys_u64(&((rk_kernel *)arg)->lane[0].inbox->claim) & RK_RING_CLOSED) != 0;
}

#endif
