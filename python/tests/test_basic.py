"""The Python API over the built-in kernels: runtime, lifecycle, call/send/recv, errors, stats."""
import ctypes
import os
import threading

import pytest

import ringkernel as rk
from ringkernel import errors


def test_library_is_the_packaged_one_or_the_named_one():
    want = os.environ.get("RINGKERNEL_LIBRARY")
    if want:
        assert rk.LIBRARY_PATH == want
    else:
        assert os.path.dirname(rk.LIBRARY_PATH) == os.path.dirname(rk.__file__)
    assert rk.__version__.count(".") == 2
    assert rk.library_version().startswith(rk.__version__)


def test_runtime_backend_and_reason(rt):
    assert rt.backend == "cpu"
    assert "CPU" in rt.backend_reason
    assert "cpu" in repr(rt)


def test_runtime_bad_arguments():
    with pytest.raises(ValueError):
        rk.Runtime(backend="tpu")
    with pytest.raises(TypeError):
        rk.Runtime(backend="cpu", no_such_option=1)
    with pytest.raises(TypeError):  # a C function pointer: not an option from Python
        rk.Runtime(backend="cpu", time_source=1)


def test_runtime_command_timeout_option():
    # rk_runtime_options.command_timeout_ns (its effect is tested in C: test_lifecycle)
    with rk.Runtime(backend="cpu", command_timeout_ns=2 * 10**9) as r:
        k = r.launch("vector_add")
        k.activate()
        k.deactivate()
        assert k.state == "INACTIVE"


def test_cuda_backend_without_gpu_is_nodevice():
    try:
        r = rk.Runtime(backend="cuda")
    except errors.NoDeviceError as e:
        assert e.code == -11 and e.name == "RK_ENODEV"
        assert "RK_BACKEND_CUDA unavailable" in e.detail  # rk_runtime_last_error(NULL)
    else:  # a machine with a GPU
        with r:
            assert r.backend == "cuda"


def test_vector_add_quickstart(rt):
    with rt.launch("vector_add", activate=True) as k:
        assert k.state == "ACTIVE" and k.name == "vector_add" and k.lanes >= 1
        out = k.call(rk.VaddReq(n=3, a=[1, 2, 3], b=[4, 5, 6]), reply_type=rk.VaddReply, timeout=5)
        assert list(out.c[:3]) == [5.0, 7.0, 9.0]
        assert out.n == 3 and out.stamp > 0
        # without reply_type: a Reply whose value is decoded by the registered type id
        r = k.call(rk.VaddReq(n=2, a=[1, 1], b=[2, 2]), timeout=5)
        assert r.type == rk.VaddReply._type_id_ and r.status == 0 and not r.is_error
        assert isinstance(r.value, rk.VaddReply) and list(r.value.c[:2]) == [3.0, 3.0]
        assert r.correlation_id != 0 and r.hlc > 0


def test_type_ids_come_from_the_library():
    assert rk.VaddReq._type_id_ == 100 and rk.VaddReply._type_id_ == 101
    assert rk.CounterAdd._type_id_ == 110 and rk.CounterValue._type_id_ == 111
    assert rk.builtin("vector_add").type_id("rk_vadd_req") == 100
    with pytest.raises(KeyError):
        rk.builtin("vector_add").type_id("nope")
    with pytest.raises(KeyError):
        rk.builtin("no_such_kernel")


def test_lifecycle(rt):
    k = rt.launch("counter")
    assert k.state == "LAUNCHED"
    with pytest.raises(errors.StateError):
        k.deactivate()
    k.activate()
    assert k.call(rk.CounterAdd(delta=5), reply_type=rk.CounterValue).total == 5
    k.deactivate()
    assert k.state == "INACTIVE"
    mid = k.send(rk.CounterAdd(delta=2))  # queued while inactive
    with pytest.raises(errors.TimeoutError):
        k.recv(timeout=0.05)
    k.activate()
    r = k.recv(timeout=5)
    assert r.correlation_id == mid and r.value.total == 7 and r.value.count == 2
    k.terminate(timeout=5)
    assert k.state == "TERMINATED"
    with pytest.raises(errors.ClosedError) as ei:
        k.send(rk.CounterAdd(delta=1))
    assert isinstance(ei.value, rk.RingKernelError) and "counter" in ei.value.detail
    k.close()
    k.close()  # idempotent
    with pytest.raises(rk.RingKernelError):
        k.state


def test_send_recv_many_and_keys(rt):
    with rt.launch("echo", activate=True, lanes=2) as k:
        ids = [k.send(b"msg%d" % i, type_id=7, key=i % 2) for i in range(50)]
        got = {}
        for _ in ids:
            r = k.recv(timeout=5)
            got[r.correlation_id] = r.payload
        assert sorted(got) == sorted(ids)
        assert got[ids[3]] == b"msg3"
        with pytest.raises(errors.AgainError):
            k.recv(timeout=0)
        st = k.stats()
        assert st["sent"] == 50 and st["received"] == 50 and st["state"] == "ACTIVE"
        assert st["lanes"] == 2 and len(st["inbox_depth"]) == 2


def test_errors_map_codes_and_details(rt):
    with rt.launch("vector_add", activate=True) as k:
        with pytest.raises(errors.InvalidArgumentError) as ei:
            k.send(b"zz", type_id=999)
        e = ei.value
        assert isinstance(e, ValueError) and e.code == -1 and e.name == "RK_EINVAL"
        assert "999" in e.detail and "invalid argument" in str(e)
        assert str(e).count("RK_EINVAL") == 1, str(e)  # the detail's own prefix is not repeated
        with pytest.raises(errors.MessageSizeError):
            k.send(b"short", type_id=rk.VaddReq._type_id_)
        with pytest.raises(ValueError):
            k.call(rk.VaddReq(n=1), timeout=0)
        with pytest.raises(ValueError):
            rk.VaddReq(a=list(range(17)))
    # every code of the library has its class, with the library's text
    assert errors.EINVAL is errors.InvalidArgumentError
    assert issubclass(errors.TimeoutError, TimeoutError)
    for code, cls in errors.BY_CODE.items():
        assert cls.code == code and issubclass(cls, rk.RingKernelError)
    assert len(errors.BY_CODE) >= 16
    assert rk.error_class(rk.app_error(3)) is rk.ApplicationError


def test_handler_error_reply_raises_the_code(rt):
    # vector_add refuses n > 16 with an error reply (RK_EMSGSIZE): the call raises its code's
    # class, the error reply in .reply
    with rt.launch("vector_add", activate=True) as k:
        with pytest.raises(errors.MessageSizeError) as ei:
            k.call(rk.VaddReq(n=40), timeout=5)
        assert ei.value.reply is not None and ei.value.reply.is_error and ei.value.reply.status == -8
        assert "error reply" in ei.value.detail


def test_concurrent_callers_from_threads(rt):
    with rt.launch("counter", activate=True) as k:
        errs = []

        def worker():
            try:
                for _ in range(100):
                    k.call(rk.CounterAdd(delta=1), reply_type=rk.CounterValue, timeout=10)
            except Exception as e:  # pragma: no cover - reported below
                errs.append(e)

        ts = [threading.Thread(target=worker) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errs
        assert k.call(rk.CounterAdd(delta=0), reply_type=rk.CounterValue).total == 400


def test_runtime_stats_and_close(cache_dir):
    r = rk.Runtime(backend="cpu", cache_dir=cache_dir)
    k = r.launch("echo", activate=True)
    s = r.stats()
    assert s["backend"] == "cpu" and [x["name"] for x in s["kernels"]] == ["echo"]
    r.close()
    r.close()
    with pytest.raises(rk.RingKernelError):
        r.backend
    with pytest.raises(rk.RingKernelError):
        k.send(b"x", type_id=1)


def test_message_declaration():
    class Deposit(rk.Message):
        _type_id_ = 4242
        _fields_ = [("account", ctypes.c_uint64), ("amount", ctypes.c_int64)]

    d = Deposit(account=3, amount=-5)
    assert d.to_dict() == {"account": 3, "amount": -5}
    assert rk.Message._registry[4242] is Deposit
    with pytest.raises(ValueError):

        class Bad(rk.Message):
            _type_id_ = 2**32
            _fields_ = [("x", ctypes.c_int)]


def test_tokens_come_back_with_replies(rt):
    with rt.launch("echo", activate=True, lanes=2) as k:
        for i in range(40):
            k.send(b"%d" % i, type_id=6, token=(1 << 63) | i, key=i if i % 2 else None)
        plain = k.send(b"plain", type_id=6)
        seen = {}
        for _ in range(41):
            r = k.recv(timeout=5)
            seen[r.payload] = r.token
        assert all(seen[b"%d" % i] == (1 << 63) | i for i in range(40))
        assert seen[b"plain"] is None and plain != 0
