"""asyncio: awaitable calls and the async iterator of replies, on the library's callbacks."""
import asyncio
import ctypes
import threading

import pytest

import ringkernel as rk
from ringkernel import aio, errors

from conftest import ACCOUNT_SOURCE, AccAdd, AccValue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_many_concurrent_awaits(rt):
    k = rt.launch("counter", activate=True, inbox_capacity=8)  # small: sends meet a full inbox

    async def main():
        async with aio.AsyncKernel(k) as ak:
            vals = await asyncio.gather(*(ak.call(rk.CounterAdd(delta=1), reply_type=rk.CounterValue, timeout=20)
                                          for _ in range(300)))
            assert ak.pending == 0
            return vals

    vals = run(main())
    assert sorted(v.total for v in vals) == list(range(1, 301))
    assert k.stats()["received"] == 300


def test_callbacks_come_from_the_runtime_not_a_python_thread(rt):
    k = rt.launch("echo", activate=True)
    before = threading.active_count()

    async def main():
        async with aio.AsyncKernel(k) as ak:
            r = await ak.call(b"hello", type_id=3)
            assert r.payload == b"hello" and r.type == 3
            assert threading.active_count() == before  # no polling thread of ours

    run(main())


def test_replies_iterator_gets_unclaimed_replies(rt):
    k = rt.launch("echo", activate=True, lanes=2)

    async def main():
        async with aio.AsyncKernel(k) as ak:
            ids = [await ak.send(b"m%d" % i, type_id=4, key=i) for i in range(20)]
            got = {}
            async for r in ak.replies():
                got[r.correlation_id] = r.payload
                if len(got) == 20:
                    break
            assert sorted(got) == sorted(ids) and got[ids[5]] == b"m5"
            # a call in between plain sends gets its own reply, the send's goes to recv()
            sid = await ak.send(b"plain", type_id=4)
            r = await ak.call(b"called", type_id=4)
            assert r.payload == b"called"
            r2 = await ak.recv(timeout=10)
            assert r2.correlation_id == sid and r2.payload == b"plain"
            # while open, the blocking recv is refused (the callbacks take the replies)
            with pytest.raises(errors.StateError):
                k.recv(timeout=0)

    run(main())



def test_errors_timeouts_and_close(rt):
    kd = rt.kernel(ACCOUNT_SOURCE, "acc_handler", name="account", types=[AccAdd], state_size=16, max_lanes=1)
    k = rt.launch(kd, activate=True)

    async def main():
        ak = aio.AsyncKernel(k)
        ak.open()
        assert (await ak.call(AccAdd(delta=3), reply_type=AccValue)).total == 3
        with pytest.raises(rk.ApplicationError) as ei:
            await ak.call(AccAdd(delta=-10))
        assert ei.value.app_code == 7 and ei.value.reply.status == rk.app_error(7)
        with pytest.raises(errors.InvalidArgumentError):
            await ak.call(rk.VaddReq(n=1))  # a type the kernel does not declare: refused at send
        k.deactivate()  # nothing is answered while inactive
        with pytest.raises(errors.TimeoutError):
            await ak.call(AccAdd(delta=1), timeout=0.05)
        waiting = asyncio.ensure_future(ak.call(AccAdd(delta=1), timeout=30))
        await asyncio.sleep(0.02)
        ak.close()
        with pytest.raises(errors.ClosedError):
            await waiting
        with pytest.raises(errors.StateError):
            await ak.send(AccAdd(delta=1))
        k.activate()
        # the blocking API works again once the callbacks stopped
        first = k.recv(timeout=10)  # the timed-out call's late reply
        assert first.value.total == 4

    run(main())


def test_async_tokens(rt):
    k = rt.launch("echo", activate=True)

    async def main():
        async with aio.AsyncKernel(k) as ak:
            for i in range(30):
                await ak.send(b"t%d" % i, type_id=2, token=1000 + i)
            got = {}
            async for r in ak.replies():
                got[r.token] = r.payload
                if len(got) == 30:
                    break
            assert got == {1000 + i: b"t%d" % i for i in range(30)}

    run(main())
