#!/usr/bin/env python3
"""make_seeds.py — writes the hand-made seed inputs of tests/fuzz/corpus/<target>/.

The seeds are committed; this script is how they were made (rerun it after changing an input
format, then commit the result). It is not part of the build. Each seed is a well-formed input of
the target's format (see the comment at the top of each fuzz_*.c) that reaches deep into the code
at once: valid envelopes and replies, valid rings of several geometries, programs that launch,
activate, send, call, receive and terminate. Inputs libFuzzer found worth keeping (named found-*)
are copied in by hand, never written here.
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = 0x564B5252  # RK_ENVELOPE_MAGIC
F_REPLY, F_ERROR, F_CONTROL, F_K2K, F_CHECKSUM, F_NO_REPLY = 1, 2, 4, 8, 0x10, 0x20


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def envelope(type_, length, flags, msg_id=1, corr=0, src=0, dst=7, hlc=1 << 40, node=3, checksum=0):
    return struct.pack("<IHHIIQQIIQIIHHI", MAGIC, 1, flags, type_, length, msg_id, corr, src, dst, hlc,
                       node, checksum, 0, 0, 0)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def envelope_seeds():
    payload = bytes((i * 7 + 1) & 0xFF for i in range(64))
    # sel (max_payload selector; top bit: skip the id check), expect, slot
    write("envelope", "request", struct.pack("<II", 64, 7) + envelope(5, 16, 0) + payload)
    write("envelope", "request-sealed",
          struct.pack("<II", 64, 7) + envelope(5, 32, F_CHECKSUM, checksum=crc32c(payload[:32])) + payload)
    write("envelope", "reply", struct.pack("<II", 64, 9) + envelope(5, 8, F_REPLY, corr=1 << 63, src=9, dst=0) + payload)
    write("envelope", "error-reply",
          struct.pack("<II", 0x80000040, 0) + envelope(0, 4, F_REPLY | F_ERROR, src=9, dst=0) +
          struct.pack("<i", -22) + payload[4:])
    write("envelope", "control", struct.pack("<II", 0x80000010, 0) + envelope(0, 0, F_CONTROL) + payload[:16])
    write("envelope", "too-long", struct.pack("<II", 16, 7) + envelope(5, 0x40000000, F_REPLY, src=7) + payload[:16])


def ring_header(cap, slot, mode):
    # rk_ring line 0, then three zeroed lines
    # slots_offset 512, seq_offset 512: each slot starts with its sequence word
    line0 = struct.pack("<IIIIQQQQ", 0x474E4952, mode, slot, 0, cap, cap - 1, 512, 512)
    return line0.ljust(128, b"\0") + bytes(384)


def ops(*codes):
    out = b""
    for op, length in codes:
        out += bytes([op]) + struct.pack("<H", length)
    return out


# op low nibble: 0 peek/release, 1 pop, 2 pop_n, 3 push, 4 push_n, 5 reserve/commit, 6 close,
# 7 count, 8 waits, 9 notify; high nibble: n - 1
TRAFFIC = ops((0x33, 8), (0x73, 60), (0x15, 0), (0x00, 0), (0x31, 8), (0x72, 16), (0xF4, 8), (0x08, 8),
              (0x30, 0), (0x09, 0), (0x06, 0), (0x03, 4), (0x07, 0), (0x10, 0))


def ring_seeds():
    for cap, slot, mode in ((1, 64, 0), (4, 128, 1), (8, 64, 0), (16, 192, 1)):
        # each slot: its word (i + 1 - cap: not yet published), 8 reserved bytes, the message
        image = ring_header(cap, slot, mode) + b"".join(
            struct.pack("<QQ", (i + 1 - cap) & (2**64 - 1), 0) + bytes(slot - 16) for i in range(cap))
        size = len(image)
        write("ring", "raw-%d-%d-%s" % (cap, slot, "mpsc" if mode else "spsc"),
              bytes([0]) + size.to_bytes(3, "little") + image + TRAFFIC)
    # init (how bit 0), mode in bit 1; cap log2, slot index, memory delta, patches
    for caplog, slotidx, mode in ((0, 0, 0), (2, 1, 1), (3, 0, 0), (5, 3, 1)):
        write("ring", "init-%d-%d-%d" % (caplog, slotidx, mode),
              bytes([1 | (mode << 1), caplog, slotidx]) + struct.pack("<h", 0) + bytes([0]) + TRAFFIC)
    # memory short of what the geometry needs (init refuses), and more than it needs
    write("ring", "init-short", bytes([1, 2, 1]) + struct.pack("<h", -8) + bytes([0]) + TRAFFIC)
    write("ring", "init-long", bytes([3, 2, 1]) + struct.pack("<h", 4096) + bytes([0]) + TRAFFIC)
    # a lying header (how & 6 == 6): twice the capacity, then the same slots
    write("ring", "lie-double", bytes([7, 2, 1]) + struct.pack("<h", 0) + bytes([3]) + struct.pack("<H", 1) +
          bytes([1]) + bytes([0]) + TRAFFIC)


def reply_seeds():
    # nwait, buf_len, per waiter (lane, buf_len), then per slot: op (lane bit 0, kind bits 1-2,
    # waiter bits 3+), len, [kind 2: count, (offset, value)...] [kind 3: 112 bytes: the message]
    good = bytes([2, 64, 0, 64, 1, 64])
    good += bytes([0x00, 16, 0x09, 8, 0x02, 10, 0x03, 0, 0x08, 4, 0x01, 32])
    write("reply", "good-both-lanes", good)
    bad = bytes([1, 64, 0, 64])
    bad += bytes([0x04, 16, 3, 12, 0xFF, 13, 0x7F, 14, 0x00])  # damaged length
    bad += bytes([0x00, 16])                                  # the waiter's reply
    bad += bytes([0x04, 8, 1, 0, 0x00])                        # damaged magic
    bad += bytes([0x01, 8])                                    # the waiter's reply on the wrong lane
    bad += bytes([0x06, 8]) + envelope(5, 0x40000000, F_REPLY, corr=5, src=1) + bytes(48)
    write("reply", "damaged", bad)
    # the first byte: waiters in bits 0-2, the drain mode in bits 3+ (0 rk_recv, 1 a caller first,
    # 2 callbacks)
    write("reply", "damaged-pending", bytes([bad[0] | 1 << 3]) + bad[1:])
    write("reply", "damaged-callbacks", bytes([bad[0] | 2 << 3]) + bad[1:])
    write("reply", "good-callbacks", bytes([good[0] | 2 << 3]) + good[1:])
    full = bytes([4, 32, 0, 8, 1, 8, 0, 0, 1, 200])
    for i in range(32):
        full += bytes([(i & 1) | ((i % 4) << 3), i * 3 % 65])
    write("reply", "full-outboxes", full)


def api_seeds():
    def launch(slot, handler, lanes=1, threads=0, inbox=2, outbox=2, slotsz=1, bp=0, tmo=2):
        geo = lanes | threads << 2 | inbox << 4 | outbox << 6 | slotsz << 8 | bp << 10 | tmo << 12
        return bytes([slot << 5, 0, handler]) + struct.pack("<H", geo)

    def op(slot, code, arg):
        return bytes([(slot << 5) | code, arg])

    prog = launch(0, 0) + op(0, 1, 0)
    prog += op(0, 5, 3) + op(0, 14, 2) + op(0, 11, 10) + op(0, 12, 9) + op(0, 17, 40)
    prog += op(0, 9, 5) + op(0, 10, 3) + bytes([0x41, 0x22, 0x13]) + op(0, 15, 1)
    prog += op(0, 2, 0) + op(0, 5, 1) + op(0, 1, 0) + op(0, 16, 3) + op(0, 20, 1) + op(0, 21, 64)
    prog += op(0, 3, 20) + op(0, 14, 0) + op(0, 4, 0)
    write("api", "echo-life", prog)
    prog = launch(1, 1, lanes=2) + op(1, 1, 0) + op(1, 18, 0)
    prog += b"".join(op(1, 5, a) for a in (0, 1, 2, 3, 4, 0x11, 0x21)) + op(1, 24, 0)
    prog += op(1, 19, 0) + op(1, 14, 3) + op(1, 13, 4) + op(1, 3, 40)
    write("api", "mixed-callbacks", prog)
    prog = launch(2, 2, lanes=2, threads=3, slotsz=3) + op(2, 1, 0)
    prog += op(2, 11, 50) + op(2, 12, 90) + op(2, 25, 30) + op(2, 2, 0) + op(2, 25, 60) + op(2, 1, 0)
    prog += op(2, 17, 200) + op(2, 22, 0) + op(2, 23, 10)
    write("api", "cooperative", prog)
    prog = launch(0, 3, lanes=3, inbox=0, outbox=0, bp=2) + op(0, 1, 0)
    prog += op(0, 25, 31) + op(0, 11, 4) + op(0, 9, 7) + op(0, 10, 7) + bytes([0x61] * 8)
    prog += launch(1, 0, bp=1, tmo=0) + op(1, 25, 31) + op(1, 1, 0) + op(1, 3, 1) + op(1, 5, 0)
    write("api", "backpressure", prog)


if __name__ == "__main__":
    envelope_seeds()
    ring_seeds()
    reply_seeds()
    api_seeds()
