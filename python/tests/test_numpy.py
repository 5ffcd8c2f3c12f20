"""NumPy arrays in and out of message payloads (NumPy is optional for the package)."""
import pytest

import ringkernel as rk

np = pytest.importorskip("numpy")


def test_arrays_in_message_fields(rt):
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)
    with rt.launch("vector_add", activate=True) as k:
        out = k.call(rk.VaddReq(n=16, a=a, b=b), reply_type=rk.VaddReply, timeout=5)
        np.testing.assert_array_equal(out.array("c"), a + b)
        np.testing.assert_array_equal(out.array("c", 4), (a + b)[:4])


def test_array_payload_and_reply_array(rt):
    with rt.launch("echo", activate=True) as k:
        x = np.linspace(0, 1, 20, dtype=np.float64)
        r = k.call(x, type_id=9, timeout=5)
        assert r.type == 9
        np.testing.assert_array_equal(r.array("float64"), x)
        # a non-contiguous view is sent as its values
        y = np.arange(20, dtype=np.int32)[::2]
        np.testing.assert_array_equal(k.call(y, type_id=9, timeout=5).array("int32"), y)
