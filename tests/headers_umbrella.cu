/* headers_umbrella.cu — every public header through the umbrella, compiled by nvcc and by NVRTC
 * (ARCHITECTURE §2: the public headers are the common subset of C11, C++17, nvcc and NVRTC). */
#include "ringkernel.h"
#include "ringkernel/internals.h"

extern "C" __global__ void rk_test_umbrella(uint64_t *out) {
  out[0] = rk_hlc_send(out[1], out[2]) + sizeof(rk_envelope) + sizeof(rk_ring);
}
