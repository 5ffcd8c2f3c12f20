/* builtins.cu — the built-in kernels' persistent entry points for the CUDA backend, compiled by
 * nvcc from the same dialect source as the CPU backend (src/device/builtins.h) and embedded in
 * librk as a fatbin. */
#include "device/persistent.cuh"
#include "device/builtins.h"

RK_BUILTIN_KERNELS(RK_DEFINE_RING_KERNEL)

#define RK__ENTRY_ROW(name, h) {#name, (const void *)name},
#define RK__NAME_ROW(name, h) #name,

/* Host-side lookup of the built-in entry points, for cudaLaunchKernel / cudaFuncGetAttributes. */
extern "C" const void *rk__cuda_builtin_entry(const char *name) {
  struct {
    const char *name;
    const void *fn;
  } table[] = {RK_BUILTIN_KERNELS(RK__ENTRY_ROW)};
  unsigned i;
  if (name == 0) return 0;
  for (i = 0; i < sizeof table / sizeof table[0]; i++) {
    const char *a = table[i].name, *b = name;
    while (*a && *a == *b) a++, b++;
    if (*a == *b) return table[i].fn;
  }
  return 0;
}

extern "C" const char *const rk__cuda_builtin_names[] = {RK_BUILTIN_KERNELS(RK__NAME_ROW) 0};
