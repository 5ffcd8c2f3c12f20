/* builtins.cu — the built-in kernels' persistent entry points for the CUDA backend, compiled by
 * nvcc from the same dialect source as the CPU backend (src/device/builtins.h) and embedded in
 * librk as a fatbin. */
#include "device/persistent.cuh"
#include "device/builtins.h"

RK_DEFINE_RING_KERNEL(rk_ring_kernel_echo, rk_echo_handler)
RK_DEFINE_RING_KERNEL(rk_ring_kernel_vector_add, rk_vector_add_handler)
RK_DEFINE_RING_KERNEL(rk_ring_kernel_counter, rk_counter_handler)
