#!/usr/bin/env python3
"""test_sass.py — what the compiled device lane loop does, read from its SASS (no GPU needed).

The device lane's cost is set by the instructions nvcc emits, not by the source: a loop that the
compiler serialises (each load waiting for the one before), an acquire that became a MEMBAR, an
array spilled to local memory. So the test suite disassembles the built-in kernels in librk
(cuobjdump -sass, which needs nvdisasm) and checks the properties of docs/cuda-backend.md
("The device lane, instruction by instruction") that survive compilation:

  1. the inbox slots are copied with 16-byte strong system-scope loads (LD.E.128.STRONG.SYS), at
     least COPY_UNROLL of them issued back to back, before the first shared-memory store that
     follows them (several reads in flight per thread: one PCIe round trip, not one per load);
  2. no read-modify-write at system scope anywhere (ATOM/RED/ATOMG ... .SYS): host-mapped memory
     may not support device atomics (hostNativeAtomicSupported = 0 on most x86 hosts);
  3. (almost) no local memory (LDL/STL) in any lane loop: registers and shared memory only, but for
     at most SPILL_MAX bytes of spill slots (see below);
  4. the kernel clock's compare-and-swap is relaxed at GPU scope (ATOM ... CAS ... STRONG.GPU with
     no MEMBAR ... GPU right before it: an acq_rel CAS would add one, and a CCTL.IVALL);
  5. every lane loop has system fences (MEMBAR ... SYS), so check 4 is not vacuous;
  6. at most 64 registers per thread (cuobjdump -res-usage): a lane of 1024 threads must fit an SM's
     65536 registers, or its launch is refused;
  7. the idle poll is one round: before the acquire of the head position's sequence word (an
     LD...STRONG.SYS followed by CCTL.IVALL), at least POLL_LOADS strong system-scope loads (the
     control line's two words and the batch's other sequence words) are issued with no shared-memory
     store, barrier or fence between them (a loaded value stored to shared memory inside the round
     would serialise it: the store waits for its load, and the next load waits for the store).

Usage: test_sass.py LIBRARY [--tool-dir DIR ...]. Exit 0: all hold; 1: a property failed (the
offending instructions are printed); 77: skipped, the disassembler is not available (printed why;
scripts/deps.sh installs it from NVIDIA's PyPI wheels when the toolkit lacks it).
"""
import os
import re
import shutil
import subprocess
import sys

KERNELS = ["rk_ring_kernel_echo", "rk_ring_kernel_vector_add", "rk_ring_kernel_counter"]
COPY_UNROLL = 4  # RK_DEV_COPY_UNROLL in src/device/persistent.cuh
MAX_REGS = 64    # 65536 registers per SM / RK_DEV_MAX_THREADS
# Spill slots a lane loop may have: since K2K (docs/k2k.md, "On the device") ptxas keeps one 16-byte
# copy value of vector_add's in-flight inbox loads in local memory (2 STL.64 + 2 LDL.64, an L1 hit
# of ~30 cycles under a PCIe round trip of ~1 us); more than this is a register budget broken.
SPILL_MAX = 16
POLL_LOADS = 8   # the control line (2) and at least the 7 other sequence words of a batch of 8, minus 1
SKIP = 77


def find_tools(dirs):
    """cuobjdump and a directory holding nvdisasm (cuobjdump -sass runs nvdisasm)."""
    here = os.path.dirname(os.path.abspath(__file__))
    cands = list(dirs)
    cands += os.environ.get("PATH", "").split(os.pathsep)
    tools = os.path.join(os.path.dirname(here), ".tools", "cuda", "nvidia")
    if os.path.isdir(tools):
        for sub in sorted(os.listdir(tools)):
            cands.append(os.path.join(tools, sub, "bin"))
    cuobjdump = nvdisasm_dir = None
    for d in cands:
        if not d:
            continue
        if cuobjdump is None and os.access(os.path.join(d, "cuobjdump"), os.X_OK):
            cuobjdump = os.path.join(d, "cuobjdump")
        if nvdisasm_dir is None and os.access(os.path.join(d, "nvdisasm"), os.X_OK):
            nvdisasm_dir = d
    return cuobjdump, nvdisasm_dir


def sass_of(cuobjdump, nvdisasm_dir, lib, kernel):
    env = dict(os.environ)
    env["PATH"] = nvdisasm_dir + os.pathsep + env.get("PATH", "")
    out = subprocess.run([cuobjdump, "-sass", "-fun", kernel, lib], env=env, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError("cuobjdump failed for %s: %s" % (kernel, out.stderr.strip()))
    ins = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            ins.append((m.group(1), m.group(2)))
    if not ins:
        raise RuntimeError("no SASS for %s in %s (is sm_90 among the built architectures?)" % (kernel, lib))
    return ins


def registers_of(cuobjdump, nvdisasm_dir, lib, kernel):
    env = dict(os.environ)
    env["PATH"] = nvdisasm_dir + os.pathsep + env.get("PATH", "")
    out = subprocess.run([cuobjdump, "-res-usage", "-fun", kernel, lib], env=env, capture_output=True, text=True,
                         timeout=300)
    m = re.search(r"REG:(\d+)", out.stdout)
    return int(m.group(1)) if m else None


def opcode(text):
    """The opcode of an instruction, without its predicate: '@!P1 LD.E.128.STRONG.SYS R16, ...' ->
    'LD.E.128.STRONG.SYS'."""
    parts = text.split()
    if parts and parts[0].startswith("@"):
        parts = parts[1:]
    return parts[0] if parts else ""


def check_kernel(kernel, ins, copy_required):
    problems = []
    ops = [opcode(t) for _, t in ins]
    # 1. back-to-back 16-byte strong-sys loads before the first shared store after them
    if copy_required:
        best = 0
        i = 0
        while i < len(ops):
            if ops[i] == "LD.E.128.STRONG.SYS":
                run, j = 0, i
                while j < len(ops) and not ops[j].startswith("STS") and not ops[j].startswith("BAR"):
                    if ops[j] == "LD.E.128.STRONG.SYS":
                        run += 1
                    j += 1
                best = max(best, run)
                i = j
            else:
                i += 1
        if best < COPY_UNROLL:
            problems.append("slot copy: at most %d LD.E.128.STRONG.SYS in flight before a shared store (want >= %d)"
                            % (best, COPY_UNROLL))
        if any(o.startswith("LD.E.64.STRONG.SYS") for o in ops) and best == 0:
            problems.append("slot copy: 8-byte strong-sys loads and no 16-byte ones")
    # 2. no system-scope read-modify-write
    for addr, t in ins:
        o = opcode(t)
        if re.match(r"(ATOM|ATOMG|RED|REDG|ATOMS)\b", o.split(".")[0]) and ".SYS" in o:
            problems.append("system-scope RMW at %s: %s" % (addr, t))
    # 3. (almost) no local memory: at most SPILL_MAX bytes of spill slots
    spill = {}
    for addr, t in ins:
        o = opcode(t)
        if o.startswith("STL"):
            m = re.search(r"\[R1(?:\+(0x[0-9a-f]+))?\]", t)
            width = 16 if ".128" in o else 8 if ".64" in o else 4
            spill[int(m.group(1), 16) if m and m.group(1) else 0] = width
    if sum(spill.values()) > SPILL_MAX:
        for addr, t in ins:
            o = opcode(t)
            if o.startswith("LDL") or o.startswith("STL"):
                problems.append("local memory at %s: %s" % (addr, t))
        problems.append("%d bytes of local memory (at most %d)" % (sum(spill.values()), SPILL_MAX))
    # 4. relaxed GPU-scope CAS on the clock
    cas = [t for _, t in ins if opcode(t).startswith("ATOM") and "CAS" in opcode(t)]
    if not cas:
        problems.append("no compare-and-swap found (the kernel clock)")
    for t in cas:
        if ".STRONG.GPU" not in opcode(t):
            problems.append("clock CAS not at GPU scope: %s" % t)
    # (a fence right before a CAS is an acq_rel CAS; the K2K paths' own GPU-scope fences, the
    # acquire of a K2K batch and the shared ring's release of its producers' head cache, are not
    # next to one)
    for idx, (addr, t) in enumerate(ins):
        o = opcode(t)
        if o.startswith("MEMBAR") and o.endswith(".GPU"):
            nxt = [opcode(x) for _, x in ins[idx + 1:idx + 3]]
            if any(n.startswith("ATOM") and "CAS" in n for n in nxt):
                problems.append("GPU-scope fence before a CAS at %s (an acq_rel CAS): %s" % (addr, t))
    # 7. the idle poll's loads in flight together before the head word's acquire
    best_poll = 0
    for idx, o in enumerate(ops):
        if o != "CCTL.IVALL":
            continue
        n, j = 0, idx - 1
        while j >= 0 and not (ops[j].startswith("STS") or ops[j].startswith("BAR") or ops[j].startswith("MEMBAR")):
            if ops[j].startswith("LD") and "STRONG.SYS" in ops[j]:
                n += 1
            j -= 1
        best_poll = max(best_poll, n)
    if best_poll < POLL_LOADS + 1:
        problems.append("idle poll: at most %d strong-sys loads in flight up to the head word's acquire (want >= %d): "
                        "a round serialised" % (best_poll, POLL_LOADS + 1))
    # 5. system fences exist
    if not any(o.startswith("MEMBAR") and o.endswith(".SYS") for o in ops):
        problems.append("no MEMBAR.*.SYS at all: the publication fence is missing")
    return problems


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    lib = argv[1]
    dirs = []
    i = 2
    while i < len(argv):
        if argv[i] == "--tool-dir" and i + 1 < len(argv):
            dirs.append(argv[i + 1])
            i += 2
        else:
            print("test_sass: unknown argument %s" % argv[i])
            return 2
    cuobjdump, nvdisasm_dir = find_tools(dirs)
    if cuobjdump is None or nvdisasm_dir is None:
        print("test_sass: SKIPPED: cuobjdump and nvdisasm not found (not in the CUDA toolkit, PATH or .tools/cuda; "
              "scripts/deps.sh installs them from the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels)")
        return SKIP
    print("test_sass: %s with %s" % (lib, cuobjdump))
    failed = 0
    for k in KERNELS:
        try:
            ins = sass_of(cuobjdump, nvdisasm_dir, lib, k)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print("test_sass: %s: %s" % (k, e))
            failed += 1
            continue
        problems = check_kernel(k, ins, True)
        regs = registers_of(cuobjdump, nvdisasm_dir, lib, k)
        if regs is None:
            problems.append("no register count from cuobjdump -res-usage")
        elif regs > MAX_REGS:
            problems.append("%d registers per thread: a 1024-thread lane needs at most %d" % (regs, MAX_REGS))
        counts = {}
        for _, t in ins:
            o = opcode(t)
            for key in ("LD.E.128.STRONG.SYS", "ST.E.128.STRONG.SYS", "MEMBAR", "CCTL.IVALL", "BAR.SYNC"):
                if o.startswith(key):
                    counts[key] = counts.get(key, 0) + 1
        print("  %-28s %5d instructions, %s registers; %s" % (k, len(ins), regs,
                                                          ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
        for p in problems:
            print("  FAIL %s: %s" % (k, p))
        failed += len(problems)
    print("test_sass: %s" % ("all properties hold" if failed == 0 else "%d problem(s)" % failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
