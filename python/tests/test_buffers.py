"""NumPy arrays in and out through buffers: a million floats added by the built-in vector_add,
copied once into the buffer and once out, never through a message; refusals; host views."""
import ctypes

import pytest

import ringkernel as rk

np = pytest.importorskip("numpy")


def test_vector_add_a_million_floats(rt):
    n = 1 << 20
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.25, dtype=np.float32)
    with rt.launch("vector_add", activate=True) as k, rt.buffer(n * 4) as ba, rt.buffer(n * 4) as bb, \
            rt.buffer(n * 4) as bc:
        ba.write(a)
        bb.write(b)
        req = rk.VaddBufReq(a=ba.ref(access="r"), b=bb.ref(access="r"), c=bc.ref(access="w"), n=n)
        out = k.call(req, refs=3, reply_type=rk.VaddBufReply, timeout=10)
        assert out.n == n
        c = np.empty(n, dtype=np.float32)
        assert bc.read(c) is c  # filled in place: the one copy out of the buffer
        np.testing.assert_array_equal(c, a + b)
        # a slice of it, into a new array
        np.testing.assert_array_equal(bc.read(count=10, offset=4 * 100), (a + b)[100:110])


def test_state_on_the_device_across_messages(rt):
    """The same buffers used by many messages: written once, the data stays in place."""
    n = 4096
    a = np.ones(n, dtype=np.float32)
    with rt.launch("vector_add", activate=True) as k, rt.buffer(n * 4) as ba, rt.buffer(n * 4) as bc:
        ba.write(a)
        bc.write(np.zeros(n, dtype=np.float32))
        for _ in range(50):  # c = a + c, in place: c counts the messages
            req = rk.VaddBufReq(a=ba.ref(access="r"), b=bc.ref(access="r"), c=bc.ref(access="w"), n=n)
            k.call(req, refs=3, reply_type=rk.VaddBufReply, timeout=10)
        np.testing.assert_array_equal(bc.read(), np.full(n, 50, dtype=np.float32))


def test_refusals(rt):
    with rt.launch("vector_add", activate=True) as k, rt.buffer(64) as small, rt.buffer(1024) as big:
        # a reference beyond the buffer is refused when it is made
        with pytest.raises(rk.RingKernelError):
            small.ref(offset=32, length=64)
        # n larger than the references: the kernel answers with an error reply (RK_EMSGSIZE)
        req = rk.VaddBufReq(a=small.ref(access="r"), b=small.ref(access="r"), c=big.ref(access="w"), n=1000)
        with pytest.raises(rk.RingKernelError) as e:
            k.call(req, refs=3, timeout=10)
        assert e.value.code == -8  # RK_EMSGSIZE
        # access not granted: the kernel writes c, which is referenced read-only
        req = rk.VaddBufReq(a=small.ref(access="r"), b=small.ref(access="r"), c=big.ref(access="r"), n=16)
        with pytest.raises(rk.RingKernelError):
            k.call(req, refs=3, timeout=10)
    with pytest.raises(ValueError):
        rt.buffer(64, kind="gpu")
    b = rt.buffer(64)
    b.free()
    with pytest.raises(ValueError):
        b.write(b"x")
    with pytest.raises(ValueError):  # a read-only destination
        rt.buffer(16).read(np.zeros(4, dtype=np.float32)[::2])


def test_host_buffer_view(rt):
    with rt.buffer(256, kind="host") as h:
        v = h.host_array(dtype="int32")
        v[:] = np.arange(64, dtype=np.int32)
        np.testing.assert_array_equal(h.read(dtype="int32"), np.arange(64, dtype=np.int32))
        h.write(np.full(64, 7, dtype=np.int32))
        assert int(v[10]) == 7  # the view is the buffer's memory
    with rt.buffer(64) as d, pytest.raises(ValueError):
        d.host_array()


def test_bytes_in_and_out(rt):
    with rt.buffer(32) as b:
        b.write(b"hello, buffers!!")
        out = bytearray(16)
        assert b.read(out) is out
        assert bytes(out) == b"hello, buffers!!"
        assert ctypes.sizeof(rk.VaddBufReq) == 3 * 40 + 8


def test_buffer_after_runtime_closed(cache_dir):
    """A buffer dies with its runtime: using it afterwards raises StateError, never crashes."""
    r = rk.Runtime(backend="cpu", cache_dir=cache_dir)
    b = r.buffer(64)
    h = r.buffer(64, kind="host")
    r.close()
    for op in (lambda: b.read(bytearray(4)), lambda: b.write(b"1234"), lambda: b.ref(), lambda: h.host_array()):
        with pytest.raises(rk.RingKernelError) as e:
            op()
        assert e.value.code == -5  # RK_ESTATE
    b.free()  # a no-op: it went with the runtime
