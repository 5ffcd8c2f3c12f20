"""Kernels from source text: compiled at run time (CPU backend: the system C compiler)."""
import ctypes
import struct

import pytest

import ringkernel as rk
from ringkernel import errors

from conftest import ACCOUNT_SOURCE, AccAdd, AccValue



def account(rt):
    return rt.kernel(ACCOUNT_SOURCE, "acc_handler", name="account", types=[AccAdd], state_size=16, max_lanes=1)


def test_source_kernel_state_and_typed_replies(rt):
    kd = account(rt)
    assert kd.type_id("AccAdd") == 300
    with rt.launch(kd, activate=True) as k:
        assert k.name == "account"
        v = k.call(AccAdd(delta=10), reply_type=AccValue, timeout=10)
        assert (v.total, v.count) == (10, 1)
        r = k.call(AccAdd(delta=5), timeout=10)
        assert isinstance(r.value, AccValue) and r.value.total == 15


def test_application_error_from_handler(rt):
    with rt.launch(account(rt), activate=True) as k:
        with pytest.raises(rk.ApplicationError) as ei:
            k.call(AccAdd(delta=-1), timeout=10)
        e = ei.value
        assert e.app_code == 7 and e.code == rk.app_error(7) and e.name == "RK_EAPP"
        assert "application error 7" in str(e)
        assert e.reply.is_error and e.reply.status == rk.app_error(7)
        assert e.reply.error_payload == struct.pack("<q", 0)  # the balance
        # the kernel carries on
        assert k.call(AccAdd(delta=1), reply_type=AccValue, timeout=10).total == 1
        with pytest.raises(rk.ApplicationError) as ei:
            k.call(AccAdd(delta=-5), timeout=10)
        assert struct.unpack("<q", ei.value.reply.error_payload) == (1,)
        assert k.stats()["handler_errors"] == 2


def test_typed_kernel_refuses_other_types(rt):
    with rt.launch(account(rt), activate=True) as k:
        with pytest.raises(errors.InvalidArgumentError):
            k.send(rk.VaddReq(n=1))
        with pytest.raises(errors.MessageSizeError):
            k.send(b"\0" * 3, type_id=300)


def test_compile_errors_are_reported(rt):
    bad = rt.kernel("RK_HANDLER(h)(rk_ctx *ctx, const rk_msg *in) { return not_declared; }", "h")
    with pytest.raises(errors.InvalidArgumentError) as ei:
        rt.compile(bad)
    assert "not_declared" in ei.value.detail
    with pytest.raises(errors.InvalidArgumentError) as ei:
        rt.launch(bad)
    assert "not_declared" in ei.value.detail
    missing = rt.kernel(ACCOUNT_SOURCE, "no_such_handler")
    with pytest.raises(errors.InvalidArgumentError):
        rt.launch(missing)


def test_kernel_definition_arguments():
    with pytest.raises(ValueError):
        rk.KernelDef("x")
    with pytest.raises(ValueError):
        rk.KernelDef("x", source="int x;", handler="h", types=[int])
