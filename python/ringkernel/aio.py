"""asyncio for ringkernel: awaitable calls and an async iterator of replies.

    import asyncio, ringkernel as rk
    from ringkernel import aio

    async def main():
        with rk.Runtime() as rt:
            k = rt.launch("counter", activate=True)
            async with aio.AsyncKernel(k) as ak:
                values = await asyncio.gather(*(ak.call(rk.CounterAdd(delta=1), reply_type=rk.CounterValue)
                                                for _ in range(100)))
                ak.send(rk.CounterAdd(delta=5))
                async for reply in ak.replies():       # replies no call awaits
                    print(reply.value.total)
                    break

Built on the library's receive callbacks (rk_recv_start), not on a polling thread: the runtime's
service thread hands each reply to the event loop (call_soon_threadsafe), where it completes the
future of the call that sent its request (matched by correlation id) or, when none awaits it,
goes to the replies() queue. Sends never block the event loop: they use RK_SEND_NOWAIT and, when
the kernel's inbox is full, retry after a short asyncio.sleep (backpressure without a thread).
While an AsyncKernel is open, Kernel.recv on the same kernel raises StateError (the callbacks
take the replies); Kernel.call still works."""

import asyncio
import ctypes
import threading

from . import _lib
from . import Reply, _L, _key_token, _payload
from .errors import AgainError, RingKernelError, error_class

__all__ = ["AsyncKernel"]

_OPEN = set()  # open AsyncKernels: kept alive while the library may call their callback
_BACKOFF_S = 0.0002  # first wait when the inbox is full; doubles up to _BACKOFF_MAX_S
_BACKOFF_MAX_S = 0.01


class AsyncKernel:
    """A Kernel driven from an asyncio event loop (the running one, or `loop`). Open it with
    `async with` (or call open() from the loop's thread); close() stops the callbacks and fails
    the calls still waiting with ClosedError."""

    def __init__(self, kernel, loop=None, max_size=4096):
        self.kernel = kernel
        self._loop = loop
        self._max = max_size
        self._lock = threading.Lock()  # send + registration vs. the callback's routing
        self._pending = {}  # msg id -> future
        self._queue = None
        self._cb = None
        self._open = False

    # -- lifetime
    def open(self):
        if self._open:
            return self
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._cb = _lib.RECV_CB(self._on_reply)  # kept alive as long as the callbacks run
        rc = _L.rk_recv_start(self.kernel._handle(), self._cb, None)
        if rc != 0:
            self.kernel._check(rc)
        self._open = True
        _OPEN.add(self)
        return self

    def close(self):
        """Stop the callbacks (rk_recv_stop: none runs after it returns); pending calls fail."""
        if not self._open:
            return
        self._open = False
        if self.kernel._k:
            _L.rk_recv_stop(self.kernel._k)
        _OPEN.discard(self)
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error_class(-13)(-13, "the AsyncKernel was closed"))
        self._queue.put_nowait(None)  # ends replies() iterators

    async def __aenter__(self):
        return self.open()

    async def __aexit__(self, *exc):
        self.close()

    # -- the callback: the runtime's loop thread
    def _on_reply(self, k, msg_p, user):
        reply = Reply._from_msg(msg_p.contents, k)
        with self._lock:
            fut = self._pending.pop(reply.correlation_id, None)
        try:
            if fut is not None:
                self._loop.call_soon_threadsafe(_resolve, fut, reply)
            else:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, reply)
        except RuntimeError:  # the event loop is closed: nobody is left to tell
            pass

    # -- messages
    async def _send(self, msg, type_id, key, no_reply, fut, token=None):
        tid, buf, n = _payload(msg, type_id)
        key, token = _key_token(key, token)  # ValueError out of range, as Kernel.send
        flags = _lib.SEND_NOWAIT | (_lib.SEND_NO_REPLY if no_reply else 0)
        wait = _BACKOFF_S
        mid = ctypes.c_uint64()
        while True:
            if not self._open:
                raise error_class(-5)(-5, "the AsyncKernel is not open")
            with self._lock:
                if token is not None:
                    if key is None:
                        rc = _L.rk_send_token(self.kernel._handle(), token, tid, buf, n, flags, ctypes.byref(mid))
                    else:
                        rc = _L.rk_send_key_token(self.kernel._handle(), key, token, tid, buf, n, flags, ctypes.byref(mid))
                elif key is None:
                    rc = _L.rk_send(self.kernel._handle(), tid, buf, n, flags, ctypes.byref(mid))
                else:
                    rc = _L.rk_send_key(self.kernel._handle(), key, tid, buf, n, flags, ctypes.byref(mid))
                if rc == 0 and fut is not None:
                    self._pending[mid.value] = fut  # before the callback can see its reply
            if rc == 0:
                return mid.value
            if rc != AgainError.code:
                self.kernel._check(rc)
            await asyncio.sleep(wait)  # inbox full: let the kernel drain it
            wait = min(wait * 2, _BACKOFF_MAX_S)

    async def send(self, msg, type_id=0, key=None, no_reply=False, token=None):
        """Send without blocking the loop; returns the message id (its reply, unless no_reply,
        comes through replies()/recv(), with .token = token when one was given)."""
        return await self._send(msg, type_id, key, no_reply, None, token)

    async def call(self, msg, type_id=0, reply_type=None, timeout=1.0, key=None):
        """Awaitable request/reply: the reply as reply_type, or a Reply. An error reply raises
        its code's RingKernelError (the Reply in .reply); no reply within timeout seconds raises
        ringkernel.errors.TimeoutError (a late reply then goes to replies())."""
        fut = self._loop.create_future() if self._loop else asyncio.get_running_loop().create_future()
        mid = await self._send(msg, type_id, key, False, fut)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            with self._lock:
                self._pending.pop(mid, None)
            raise error_class(-3)(-3, "async call to %s: no reply within %s s" % (self.kernel.name, timeout)) from None
        if reply.is_error:
            raise error_class(reply.status)(reply.status, "async call to %s: error reply" % self.kernel.name, reply)
        return reply.as_type(reply_type) if reply_type is not None else reply

    async def recv(self, timeout=None):
        """The next reply no call awaits (None waits forever)."""
        r = await asyncio.wait_for(self._queue.get(), timeout)
        if r is None:
            self._queue.put_nowait(None)
            raise error_class(-13)(-13, "the AsyncKernel was closed")
        return r

    async def replies(self):
        """Async iterator over the replies no call awaits, until close()."""
        while True:
            r = await self._queue.get()
            if r is None:
                self._queue.put_nowait(None)  # for other iterators
                return
            yield r

    @property
    def pending(self):
        """Calls awaiting their reply."""
        with self._lock:
            return len(self._pending)


def _resolve(fut, reply):
    if not fut.done():
        fut.set_result(reply)
