"""The binding's boundary: replies checked against the type asked for, integer arguments checked
against the C types they go into (never wrapped by ctypes), a closed runtime raising StateError."""
import asyncio
import ctypes

import pytest

import ringkernel as rk
from ringkernel import aio, errors

from conftest import ACCOUNT_SOURCE, AccAdd, AccValue


def account(rt):
    return rt.kernel(ACCOUNT_SOURCE, "acc_handler", name="account", types=[AccAdd], state_size=16, max_lanes=1)


def out_of_range(fn, name):
    """fn() raises the binding's own ValueError naming `name` (not a library error after a wrap)."""
    with pytest.raises(ValueError) as ei:
        fn()
    assert not isinstance(ei.value, rk.RingKernelError), ei.value
    assert name in str(ei.value) and ".." in str(ei.value), ei.value
    return ei.value


# -- 1. reply_type / Reply.as_type check the reply's type id, as RK_MSG_AS does


def test_reply_type_of_another_type_id_is_refused(rt):
    with rt.launch(account(rt), activate=True) as k:
        # the kernel answers AccAdd (300) with an AccValue (301); AccAdd is not 16 bytes, so a
        # same-size stand-in shows the type check alone
        class AccAdd2(rk.Message):
            _type_id_ = 302
            _fields_ = [("delta", ctypes.c_int64), ("pad", ctypes.c_int64)]

        assert ctypes.sizeof(AccAdd2) == ctypes.sizeof(AccValue)
        with pytest.raises(errors.InvalidArgumentError) as ei:
            k.call(AccAdd(delta=1), reply_type=AccAdd2, timeout=10)
        e = ei.value
        assert isinstance(e, ValueError) and e.code == -1
        assert "type 301" in e.detail and "AccAdd2" in e.detail and "302" in e.detail
        assert e.reply is not None and e.reply.type == 301 and e.reply.value.total == 1
        with pytest.raises(errors.InvalidArgumentError) as ei:  # a different type and size
            k.call(AccAdd(delta=1), reply_type=AccAdd, timeout=10)
        assert "type 301" in ei.value.detail
        # the right type, and a plain structure of the right size (no type id: size only)
        assert k.call(AccAdd(delta=1), reply_type=AccValue, timeout=10).total == 3

        class Plain(ctypes.Structure):
            _fields_ = [("a", ctypes.c_int64), ("b", ctypes.c_uint64)]

        assert k.call(AccAdd(delta=1), reply_type=Plain, timeout=10).a == 4
        r = k.call(AccAdd(delta=1), timeout=10)
        assert r.as_type(AccValue).count == 5
        with pytest.raises(errors.InvalidArgumentError):
            r.as_type(AccAdd2)
        with pytest.raises(ValueError):  # sizes still checked
            r.as_type(rk.CounterValue)


def test_async_reply_type_of_another_type_id_is_refused(rt):
    class Other(rk.Message):
        _type_id_ = 303
        _fields_ = [("x", ctypes.c_int64), ("y", ctypes.c_int64)]

    k = rt.launch(account(rt), activate=True)

    async def main():
        async with aio.AsyncKernel(k) as ak:
            with pytest.raises(errors.InvalidArgumentError) as ei:
                await ak.call(AccAdd(delta=2), reply_type=Other)
            assert ei.value.reply.type == 301
            assert (await ak.call(AccAdd(delta=2), reply_type=AccValue)).total == 4

    asyncio.run(asyncio.wait_for(main(), 60))


# -- 2. integers out of their C type's range: ValueError naming the parameter and the range


def test_send_and_call_integers_out_of_range(rt):
    with rt.launch("echo", activate=True, lanes=2) as k:
        out_of_range(lambda: k.send(b"x", type_id=-1), "type_id")  # was sent as 4294967295
        out_of_range(lambda: k.send(b"x", type_id=2**32), "type_id")  # was 0: "type 0 is reserved"
        out_of_range(lambda: k.call(b"x", type_id=2**32 + 5), "type_id")
        out_of_range(lambda: k.send(b"x", type_id=5, key=-5), "key")
        out_of_range(lambda: k.send(b"x", type_id=5, key=2**64), "key")
        out_of_range(lambda: k.send(b"x", type_id=5, token=2**64), "token")
        out_of_range(lambda: k.send(b"x", type_id=5, token=-1, key=1), "token")
        out_of_range(lambda: k.call(b"x", type_id=5, key=-1), "key")
        out_of_range(lambda: k.call(b"x", type_id=5, refs=-1), "refs")
        out_of_range(lambda: k.call(b"x", type_id=5, max_size=2**32), "max_size")
        out_of_range(lambda: k.recv(max_size=-1), "max_size")
        out_of_range(lambda: k.call(b"x", type_id=5, timeout=1e300), "timeout")
        out_of_range(lambda: k.recv(timeout=float("inf")), "timeout")
        out_of_range(lambda: k.recv(timeout=float("nan")), "timeout")
        with pytest.raises(TypeError):
            k.send(b"x", type_id=5.0)
        # the ends of the ranges go through
        k.send(b"top", type_id=2**32 - 1, key=2**64 - 1, token=2**64 - 1)
        r = k.recv(timeout=5)
        assert (r.type, r.payload, r.token) == (2**32 - 1, b"top", 2**64 - 1)
        assert k.call(b"y", type_id=5, key=0, timeout=5).payload == b"y"
        assert k.stats()["sent"] == 2  # nothing out of range reached the kernel
        out_of_range(lambda: k.terminate(timeout=2e10), "timeout")


def test_async_send_integers_out_of_range(rt):
    k = rt.launch("echo", activate=True)

    async def main():
        async with aio.AsyncKernel(k) as ak:
            for kw, name in ((dict(key=-1), "key"), (dict(token=2**64), "token"), (dict(type_id=-1), "type_id")):
                with pytest.raises(ValueError) as ei:
                    await ak.send(b"x", **{"type_id": 5, **kw})
                assert name in str(ei.value) and not isinstance(ei.value, rk.RingKernelError)

    asyncio.run(asyncio.wait_for(main(), 60))
    assert k.stats()["sent"] == 0


def test_message_fields_and_type_ids_out_of_range():
    out_of_range(lambda: rk.VaddReq(n=-1), "VaddReq.n")  # was 4294967295
    out_of_range(lambda: rk.CounterAdd(delta=2**63), "CounterAdd.delta")
    m = rk.CounterValue(total=-(2**63), count=2**64 - 1)
    assert (m.total, m.count) == (-(2**63), 2**64 - 1)
    out_of_range(lambda: setattr(m, "count", -1), "CounterValue.count")
    assert m.count == 2**64 - 1

    class Small(rk.Message):
        _type_id_ = 4343
        _fields_ = [("b", ctypes.c_uint8 * 4), ("s", ctypes.c_int16), ("bits", ctypes.c_uint32, 3)]

    out_of_range(lambda: Small(b=[1, 2, 256]), "Small.b[2]")
    out_of_range(lambda: Small(s=40000), "Small.s")
    out_of_range(lambda: Small(bits=8), "Small.bits")
    assert list(Small(b=[255, 0, 7], s=-32768, bits=7).b) == [255, 0, 7, 0]
    with pytest.raises(ValueError):

        class Negative(rk.Message):
            _type_id_ = -1
            _fields_ = [("x", ctypes.c_int)]

    class Floaty(rk.Message):
        _fields_ = [("x", ctypes.c_int)]

    Floaty._type_id_ = -7  # set after the class: checked when sent
    out_of_range(lambda: rk._payload(Floaty(), 0), "_type_id_")


def test_options_and_kernel_geometry_out_of_range(rt, cache_dir):
    out_of_range(lambda: rt.launch("echo", lanes=-1), "lanes")
    out_of_range(lambda: rt.launch("echo", inbox_capacity=2**32), "inbox_capacity")
    out_of_range(lambda: rt.launch("echo", send_timeout=1e12), "send_timeout")
    out_of_range(lambda: rk.Runtime(backend="cpu", cache_dir=cache_dir, watchdog_stall_ns=-1), "watchdog_stall_ns")
    out_of_range(lambda: rk.Runtime(backend="cpu", cache_dir=cache_dir, device=2**31), "device")
    out_of_range(lambda: rt.kernel(ACCOUNT_SOURCE, "acc_handler", state_size=-16), "state_size")
    out_of_range(lambda: rt.kernel(ACCOUNT_SOURCE, "acc_handler", max_lanes=2**32), "max_lanes")
    # launch_timeout None: forever (the uint64_t's maximum, not a wrapped -1)
    with rt.launch("echo", activate=True, launch_timeout=None, send_timeout=None) as k:
        assert k.call(b"ok", type_id=5, timeout=5).payload == b"ok"
    with pytest.raises(ValueError):
        rk.app_error(65536)


def test_buffer_integers_out_of_range(rt):
    out_of_range(lambda: rt.buffer(-1), "size")  # was SIZE_MAX bytes
    with rt.buffer(64) as b, rt.buffer(256, kind="host") as h:
        out_of_range(lambda: b.write(b"x", offset=-1), "offset")
        out_of_range(lambda: b.read(bytearray(4), offset=65), "offset")
        out_of_range(lambda: b.ref(offset=-1), "offset")
        out_of_range(lambda: b.ref(length=-1), "length")
        # a host view never reaches outside the buffer (it used to: a view of any memory)
        out_of_range(lambda: h.host_array(dtype="int32", offset=-8), "offset")
        out_of_range(lambda: h.host_array(dtype="int32", count=65), "count")
        out_of_range(lambda: h.host_array(dtype="int32", offset=8, count=63), "count")
        assert len(h.host_array(dtype="int32", offset=8, count=62)) == 62
        assert len(h.host_array(dtype="uint8", offset=256)) == 0
        with pytest.raises(TypeError):
            b.write(b"x", offset=1.5)
        b.write(b"abcd", offset=60.0)  # a whole float is still a size, as before
        assert bytes(b.read(bytearray(4), offset=60)) == b"abcd"


# -- 3. a closed runtime raises StateError (RK_ESTATE's class), as its kernels and buffers do


def test_closed_runtime_raises_state_error(cache_dir):
    r = rk.Runtime(backend="cpu", cache_dir=cache_dir)
    k = r.launch("echo")
    b = r.buffer(64)
    r.close()
    ops = {
        "launch": lambda: r.launch("echo"),
        "backend": lambda: r.backend,
        "stats": lambda: r.stats(),
        "buffer": lambda: r.buffer(64),
        "compile": lambda: r.compile(r.kernel(ACCOUNT_SOURCE, "acc_handler")),
        "kernel send": lambda: k.send(b"x", type_id=1),
        "buffer write": lambda: b.write(b"x"),
    }
    for what, op in ops.items():
        with pytest.raises(errors.StateError) as ei:
            op()
        assert type(ei.value) is errors.StateError, what
        assert ei.value.code == -5 and ei.value.name == "RK_ESTATE", what
    assert "closed" in repr(r)
