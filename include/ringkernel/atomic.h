/** @file ringkernel/atomic.h — the only place where memory order and scope are spelled.
 *
 * Every atomic access in ringkernel goes through one of these functions, whose name says its order
 * and scope. Scope:
 *   _sys  — visible across host and device (mapped host memory shared over PCIe/NVLink).
 *   _dev  — visible within the device (K2K inboxes and clocks in device global memory). On the host
 *           there is only one scope, so _dev and _sys compile to the same GCC atomics there.
 * Host code uses GCC/C11 __atomic builtins. Device code uses inline PTX (ld.acquire.sys,
 * st.release.sys, fence.acq_rel.sys, atom.*.gpu) selected with __CUDA_ARCH__ — never __CUDACC__:
 * an RK_HD function whose device pass reached a host builtin would be deleted silently by nvcc
 * (warning #20011-D), taking its acquire load with it. CUDA sources are built with
 * -Werror all-warnings so that can never pass unnoticed.
 *
 * Rules (docs/memory-ordering.md): no read-modify-write across PCIe — the _sys family has loads, stores and
 * fences only; RMW exists at _dev scope (device memory) and, as rk_host_*, for host threads on host
 * memory that the device at most loads (never writes). Never mix scopes on one object. Each call
 * site names the access it pairs with. */
#ifndef RINGKERNEL_ATOMIC_H
#define RINGKERNEL_ATOMIC_H

#include "ringkernel/common.h"

#if defined(__CUDA_ARCH__)
/* ------------------------------- device: inline PTX ------------------------------------------ */
RK_INLINE RK_HD uint64_t rk_load_relaxed_sys_u64(const volatile uint64_t *p) {
  uint64_t v;
  asm volatile("ld.relaxed.sys.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
RK_INLINE RK_HD uint64_t rk_load_acquire_sys_u64(const volatile uint64_t *p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
RK_INLINE RK_HD void rk_store_relaxed_sys_u64(volatile uint64_t *p, uint64_t v) {
  asm volatile("st.relaxed.sys.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
RK_INLINE RK_HD void rk_store_release_sys_u64(volatile uint64_t *p, uint64_t v) {
  asm volatile("st.release.sys.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
RK_INLINE RK_HD uint32_t rk_load_relaxed_sys_u32(const volatile uint32_t *p) {
  uint32_t v;
  asm volatile("ld.relaxed.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
RK_INLINE RK_HD uint32_t rk_load_acquire_sys_u32(const volatile uint32_t *p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
RK_INLINE RK_HD void rk_store_relaxed_sys_u32(volatile uint32_t *p, uint32_t v) {
  asm volatile("st.relaxed.sys.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
RK_INLINE RK_HD void rk_store_release_sys_u32(volatile uint32_t *p, uint32_t v) {
  asm volatile("st.release.sys.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/* 16 bytes as two 64-bit words in one access (ld/st .v2.u64: one 128-bit transaction, 16-byte
 * aligned): the device lane moves slots and reads the control line with these. Each 64-bit half is
 * single-copy atomic; the pair is not. Relaxed: data whose order comes from a fence or an acquire
 * around them. */
RK_INLINE RK_HD void rk_load_relaxed_sys_v2u64(const volatile uint64_t *p, uint64_t *a, uint64_t *b) {
  uint64_t x, y;
  asm volatile("ld.relaxed.sys.v2.u64 {%0, %1}, [%2];" : "=l"(x), "=l"(y) : "l"(p) : "memory");
  *a = x;
  *b = y;
}
RK_INLINE RK_HD void rk_store_relaxed_sys_v2u64(volatile uint64_t *p, uint64_t a, uint64_t b) {
  asm volatile("st.relaxed.sys.v2.u64 [%0], {%1, %2};" ::"l"(p), "l"(a), "l"(b) : "memory");
}
RK_INLINE RK_HD void rk_fence_acq_rel_sys(void) { asm volatile("fence.acq_rel.sys;" ::: "memory"); }
RK_INLINE RK_HD void rk_fence_seq_cst_sys(void) { asm volatile("fence.sc.sys;" ::: "memory"); }

RK_INLINE RK_HD uint64_t rk_load_relaxed_dev_u64(const volatile uint64_t *p) {
  uint64_t v;
  asm volatile("ld.relaxed.gpu.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
RK_INLINE RK_HD uint64_t rk_load_acquire_dev_u64(const volatile uint64_t *p) {
  uint64_t v;
  asm volatile("ld.acquire.gpu.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
RK_INLINE RK_HD void rk_store_relaxed_dev_u64(volatile uint64_t *p, uint64_t v) {
  asm volatile("st.relaxed.gpu.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
RK_INLINE RK_HD void rk_store_release_dev_u64(volatile uint64_t *p, uint64_t v) {
  asm volatile("st.release.gpu.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
/* Compare-and-swap, device scope, acq_rel on success; returns 1 on success, else 0 and *expected
 * receives the current value. */
RK_INLINE RK_HD int rk_cas_acq_rel_dev_u64(volatile uint64_t *p, uint64_t *expected, uint64_t desired) {
  uint64_t old;
  asm volatile("atom.acq_rel.gpu.cas.b64 %0, [%1], %2, %3;"
               : "=l"(old)
               : "l"(p), "l"(*expected), "l"(desired)
               : "memory");
  if (old == *expected) return 1;
  *expected = old;
  return 0;
}
RK_INLINE RK_HD int rk_cas_relaxed_dev_u64(volatile uint64_t *p, uint64_t *expected, uint64_t desired) {
  uint64_t old;
  asm volatile("atom.relaxed.gpu.cas.b64 %0, [%1], %2, %3;"
               : "=l"(old)
               : "l"(p), "l"(*expected), "l"(desired)
               : "memory");
  if (old == *expected) return 1;
  *expected = old;
  return 0;
}
RK_INLINE RK_HD uint64_t rk_fetch_add_relaxed_dev_u64(volatile uint64_t *p, uint64_t v) {
  uint64_t old;
  asm volatile("atom.relaxed.gpu.add.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
  return old;
}
RK_INLINE RK_HD void rk_fence_acq_rel_dev(void) { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
/* Back-off for pollers: a short sleep lets other warps of the SM issue (sm_70+). */
RK_INLINE RK_HD void rk_cpu_relax(void) { __nanosleep(32); }

#else
/* ------------------------------- host: GCC/C11 atomics --------------------------------------- */
#define RK__LD(p, mo) __atomic_load_n((p), (mo))
#define RK__ST(p, v, mo) __atomic_store_n((p), (v), (mo))
/** @name Atomic accesses */
/** @{ */
/** rk_<load|store|cas|fetch_add|fence>_<order>_<scope>_<type>: one access of that memory order at
 *  that scope (sys: host and device see it; dev: the device's threads), the same meaning in the
 *  device (PTX) and host (GCC atomics) forms; rk_host_*: host-only RMWs on words devices only load;
 *  rk_cpu_relax: a poller's back-off. docs/memory-ordering.md lists every pairing. */
RK_INLINE RK_HD uint64_t rk_load_relaxed_sys_u64(const volatile uint64_t *p) {
  return RK__LD(p, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD uint64_t rk_load_acquire_sys_u64(const volatile uint64_t *p) {
  return RK__LD(p, __ATOMIC_ACQUIRE);
}
RK_INLINE RK_HD void rk_store_relaxed_sys_u64(volatile uint64_t *p, uint64_t v) {
  RK__ST(p, v, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD void rk_store_release_sys_u64(volatile uint64_t *p, uint64_t v) {
  RK__ST(p, v, __ATOMIC_RELEASE);
}
RK_INLINE RK_HD uint32_t rk_load_relaxed_sys_u32(const volatile uint32_t *p) {
  return RK__LD(p, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD uint32_t rk_load_acquire_sys_u32(const volatile uint32_t *p) {
  return RK__LD(p, __ATOMIC_ACQUIRE);
}
RK_INLINE RK_HD void rk_store_relaxed_sys_u32(volatile uint32_t *p, uint32_t v) {
  RK__ST(p, v, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD void rk_store_release_sys_u32(volatile uint32_t *p, uint32_t v) {
  RK__ST(p, v, __ATOMIC_RELEASE);
}
/* The host has no 16-byte atomic access that is not a lock or an RMW: two 64-bit relaxed accesses,
 * which is all the device forms promise (each half single-copy atomic). */
RK_INLINE RK_HD void rk_load_relaxed_sys_v2u64(const volatile uint64_t *p, uint64_t *a, uint64_t *b) {
  *a = RK__LD(p, __ATOMIC_RELAXED);
  *b = RK__LD(p + 1, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD void rk_store_relaxed_sys_v2u64(volatile uint64_t *p, uint64_t a, uint64_t b) {
  RK__ST(p, a, __ATOMIC_RELAXED);
  RK__ST(p + 1, b, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD void rk_fence_acq_rel_sys(void) { __atomic_thread_fence(__ATOMIC_ACQ_REL); }
RK_INLINE RK_HD void rk_fence_seq_cst_sys(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

RK_INLINE RK_HD uint64_t rk_load_relaxed_dev_u64(const volatile uint64_t *p) {
  return RK__LD(p, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD uint64_t rk_load_acquire_dev_u64(const volatile uint64_t *p) {
  return RK__LD(p, __ATOMIC_ACQUIRE);
}
RK_INLINE RK_HD void rk_store_relaxed_dev_u64(volatile uint64_t *p, uint64_t v) {
  RK__ST(p, v, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD void rk_store_release_dev_u64(volatile uint64_t *p, uint64_t v) {
  RK__ST(p, v, __ATOMIC_RELEASE);
}
RK_INLINE RK_HD int rk_cas_acq_rel_dev_u64(volatile uint64_t *p, uint64_t *expected, uint64_t desired) {
  return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
RK_INLINE RK_HD int rk_cas_relaxed_dev_u64(volatile uint64_t *p, uint64_t *expected, uint64_t desired) {
  return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD uint64_t rk_fetch_add_relaxed_dev_u64(volatile uint64_t *p, uint64_t v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
RK_INLINE RK_HD void rk_fence_acq_rel_dev(void) { __atomic_thread_fence(__ATOMIC_ACQ_REL); }
/* Host threads only, on host memory that device code may load with _sys loads but never writes:
 * the RMW is atomic among host threads, and a device load sees the word before or after it. */
RK_INLINE uint64_t rk_host_fetch_or_release_u64(volatile uint64_t *p, uint64_t v) {
  return __atomic_fetch_or(p, v, __ATOMIC_RELEASE);
}
RK_INLINE uint64_t rk_host_add_fetch_release_u64(volatile uint64_t *p, uint64_t v) {
  return __atomic_add_fetch(p, v, __ATOMIC_RELEASE);
}
RK_INLINE uint64_t rk_host_fetch_and_release_u64(volatile uint64_t *p, uint64_t v) {
  return __atomic_fetch_and(p, v, __ATOMIC_RELEASE);
}
RK_INLINE RK_HD void rk_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}
/** @} */
#undef RK__LD
#undef RK__ST
#endif

#endif /* RINGKERNEL_ATOMIC_H */
