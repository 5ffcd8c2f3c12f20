"""ringkernel for Python: GPU-native persistent actors over librk's C ABI (ctypes, no extension).

    import ringkernel as rk

    with rk.Runtime() as rt:                      # CUDA when a GPU is usable, else CPU
        k = rt.launch(rk.builtin("vector_add"))
        k.activate()
        out = k.call(rk.VaddReq(n=3, a=[1, 2, 3], b=[4, 5, 6]), reply_type=rk.VaddReply)
        print(list(out.c[:3]))                    # [5.0, 7.0, 9.0]

Messages are ctypes structures deriving from rk.Message with a type id (_type_id_); kernels come
from the library's built-ins or from source text in the kernel dialect (Runtime.kernel), compiled
at run time by the system C compiler (CPU backend) or NVRTC (CUDA). Timeouts are in seconds
(None: wait as long as it takes). Failures raise a RingKernelError subclass per RK_E* code
(ringkernel.errors). Asynchronous use with asyncio: ringkernel.aio."""

import ctypes
import operator
import weakref
import json
import threading

from . import _lib
from .errors import ApplicationError, RingKernelError, error_class, raise_for  # noqa: F401
from . import errors  # noqa: F401

try:  # NumPy is optional
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None

_L = _lib.lib
__version__ = _L.rk_version_string().decode().split()[0]
LIBRARY_PATH = _lib.LIBRARY_PATH

__all__ = [
    "Runtime",
    "Kernel",
    "KernelDef",
    "Message",
    "Reply",
    "builtin",
    "RingKernelError",
    "ApplicationError",
    "VaddReq",
    "VaddReply",
    "VaddBufReq",
    "VaddBufReply",
    "Buffer",
    "CounterAdd",
    "CounterValue",
    "app_error",
    "library_version",
]


def library_version():
    """The loaded library's version string, e.g. "0.2.0 (cuda)"."""
    return _L.rk_version_string().decode()


def app_error(n):
    """The RK_EAPP(n) code a handler returns for its own error n (0 <= n <= 65535)."""
    return -1000 - _int("n (an application error number)", n, 0, 65535)


# ------------------------------------------------------------------------------------------------
# Integer arguments: ctypes would wrap a value its C type cannot hold (-1 -> 4294967295 in a
# uint32_t), so every integer the binding hands the library is checked first: ValueError naming the
# parameter and its range when it is out of range, TypeError when it is not an integer.

_U32 = 2**32 - 1
_U64 = 2**64 - 1
_I64 = 2**63 - 1
_SIZE_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_size_t)) - 1
_INT_CODES = "bBhHiIlLqQ"  # the _type_ of ctypes' integer types (c_int8 .. c_uint64, c_size_t, ...)


def _int_range(ctype, bits=None):
    """(lowest, highest) value of a ctypes integer type (of a bit field of `bits` bits)."""
    n = bits or 8 * ctypes.sizeof(ctype)
    if ctype(-1).value < 0:
        return -(1 << (n - 1)), (1 << (n - 1)) - 1
    return 0, (1 << n) - 1


def _int(name, value, lo, hi, coerce=False):
    """value as an int in lo .. hi, else ValueError (out of range) or TypeError (not an integer),
    naming the parameter. coerce: accept what int() accepts (e.g. 4096.0), as sizes always did."""
    try:
        if coerce and not isinstance(value, (str, bytes)):
            v = int(value)
            if v != value:  # 2.5: no silent truncation either
                raise ValueError
        else:
            v = operator.index(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError("%s must be an integer, not %r" % (name, value)) from None
    if not lo <= v <= hi:
        raise ValueError("%s must be in %d .. %d, not %d" % (name, lo, hi, v))
    return v


def _type_id(name, value):
    return _int(name, value, 1, _U32)  # uint32_t; 0 is reserved


def _u64(name, value):
    return _int(name, value, 0, _U64)


def _set_field(struct, field, value, what):
    """struct.field = value, an integer field's value checked against its C type first."""
    for f in type(struct)._fields_:
        if f[0] == field:
            ctype = f[1]
            if isinstance(getattr(ctype, "_type_", None), str) and ctype._type_ in _INT_CODES:
                lo, hi = _int_range(ctype, f[2] if len(f) > 2 else None)
                value = _int("%s %s" % (what, field), value, lo, hi)
            break
    setattr(struct, field, value)


def _ns(timeout, name="timeout"):
    """Seconds (float) -> the library's nanoseconds (an int64_t); None (or < 0) -> forever (-1)."""
    if timeout is None:
        return -1
    try:
        if timeout < 0:
            return -1
        ns = int(round(timeout * 1e9))
    except TypeError:
        raise TypeError("%s must be a number of seconds or None, not %r" % (name, timeout)) from None
    except (ValueError, OverflowError):  # NaN, infinity
        ns = None
    if ns is None or ns > _I64:
        raise ValueError("%s must be in 0 .. %d seconds (or None: no limit), not %r" % (name, _I64 // 10**9, timeout))
    return ns


# ------------------------------------------------------------------------------------------------
# Messages


class Message(ctypes.Structure):
    """Base of message types: a ctypes structure with the message's type id.

        class Deposit(rk.Message):
            _type_id_ = 200
            _fields_ = [("account", ctypes.c_uint64), ("amount", ctypes.c_int64)]

    Fields that are arrays accept any sequence or NumPy array (shorter ones fill the front), and
    Message.array(name) returns one as a NumPy array. Classes register themselves by type id, so
    replies of a known type come back decoded (Reply.value). Integer fields refuse values their C
    type cannot hold (ValueError), where ctypes alone would wrap them (-1 -> 4294967295)."""

    _type_id_ = 0
    _registry = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        tid = cls.__dict__.get("_type_id_")
        if tid is not None and (tid or not isinstance(tid, int)):
            tid = _type_id("%s._type_id_" % cls.__name__, tid)
            Message._registry[tid] = cls

    @classmethod
    def _int_fields(cls):
        """{field name: (lowest, highest, is_array)} of the class's integer fields and integer
        arrays (their elements' range), computed once per class."""
        got = cls.__dict__.get("_rk_int_fields")
        if got is None:
            got = {}
            for c in reversed(cls.__mro__):
                for f in c.__dict__.get("_fields_", ()) if issubclass(c, ctypes.Structure) else ():
                    t, is_array = f[1], False
                    while isinstance(t, type) and issubclass(t, ctypes.Array):
                        t, is_array = t._type_, True
                    if isinstance(getattr(t, "_type_", None), str) and t._type_ in _INT_CODES:
                        got[f[0]] = _int_range(t, f[2] if len(f) > 2 else None) + (is_array,)
            cls._rk_int_fields = got
        return got

    def __setattr__(self, name, value):
        r = type(self)._int_fields().get(name)
        if r is not None and not r[2]:
            value = _int("%s.%s" % (type(self).__name__, name), value, r[0], r[1])
        super().__setattr__(name, value)

    def __init__(self, **fields):
        super().__init__()
        for name, value in fields.items():
            cur = getattr(self, name)
            if isinstance(cur, ctypes.Array):
                if _np is not None and isinstance(value, _np.ndarray):
                    value = value.ravel().tolist()
                value = list(value)
                if len(value) > len(cur):
                    raise ValueError("%s.%s holds %d elements, not %d" % (type(self).__name__, name, len(cur), len(value)))
                r = type(self)._int_fields().get(name)
                if r is not None:
                    value = [_int("%s.%s[%d]" % (type(self).__name__, name, i), v, r[0], r[1]) for i, v in enumerate(value)]
                cur[: len(value)] = value
            else:
                setattr(self, name, value)

    def array(self, name, n=None):
        """The array field `name` as a NumPy array (a copy), its first n elements when n is given."""
        if _np is None:
            raise RuntimeError("NumPy is not installed")
        a = _np.ctypeslib.as_array(getattr(self, name)).copy()
        return a if n is None else a[:n]

    def to_dict(self):
        out = {}
        for f in self._fields_:
            v = getattr(self, f[0])
            out[f[0]] = list(v) if isinstance(v, ctypes.Array) else v
        return out

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self.to_dict().items()))


def _builtin_type(cls, name):
    t = _L.rk_msg_type_find(None, name.encode())
    if not t:
        raise ImportError("ringkernel: the library has no message type %s" % name)
    if t.contents.size != ctypes.sizeof(cls):
        raise ImportError("ringkernel: %s is %d bytes in the library, %d here" % (name, t.contents.size, ctypes.sizeof(cls)))
    cls._type_id_ = t.contents.id
    Message._registry[cls._type_id_] = cls
    return cls


class VaddReq(Message):
    """vector_add request: n <= 16 elements of a and b."""

    _fields_ = [("n", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("a", ctypes.c_float * 16), ("b", ctypes.c_float * 16)]


class VaddReply(Message):
    """vector_add reply: c = a + b, the lane and the kernel-clock stamp."""

    _fields_ = [("n", ctypes.c_uint32), ("lane", ctypes.c_uint32), ("stamp", ctypes.c_uint64), ("c", ctypes.c_float * 16)]


class CounterAdd(Message):
    _fields_ = [("delta", ctypes.c_int64)]


class CounterValue(Message):
    _fields_ = [("total", ctypes.c_int64), ("count", ctypes.c_uint64), ("stamp", ctypes.c_uint64)]


class VaddBufReq(Message):
    """vector_add on buffers: c = a + b for n floats of any size; a, b, c are buffer references
    (Buffer.ref). Send it with Kernel.call(..., refs=3)."""

    _fields_ = [("a", _lib.BufRef), ("b", _lib.BufRef), ("c", _lib.BufRef), ("n", ctypes.c_uint64)]


class VaddBufReply(Message):
    """vector_add on buffers, reply: the elements computed, the kernel-clock stamp, the lane."""

    _fields_ = [("n", ctypes.c_uint64), ("stamp", ctypes.c_uint64), ("lane", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


_builtin_type(VaddBufReq, "rk_vadd_buf_req")
_builtin_type(VaddBufReply, "rk_vadd_buf_reply")
_builtin_type(VaddReq, "rk_vadd_req")
_builtin_type(VaddReply, "rk_vadd_reply")
_builtin_type(CounterAdd, "rk_counter_add")
_builtin_type(CounterValue, "rk_counter_value")


def _key_token(key, token):
    """A send's key and token (each None or a uint64_t), checked."""
    return (None if key is None else _u64("key", key)), (None if token is None else _u64("token", token))


def _payload(msg, type_id):
    """(type id, ctypes buffer or None, length) of what a send takes: a Message; bytes-like or a
    NumPy array with type_id; or None (an empty payload) with type_id."""
    if type_id:
        type_id = _type_id("type_id", type_id)
    if isinstance(msg, Message):
        tid = type_id or type(msg)._type_id_
        if not tid:
            raise ValueError("%s has no _type_id_: declare one or pass type_id" % type(msg).__name__)
        return _type_id("%s._type_id_" % type(msg).__name__, tid), ctypes.byref(msg), ctypes.sizeof(msg)
    if not type_id:
        raise ValueError("a raw payload needs type_id")
    if msg is None:
        return type_id, None, 0
    if _np is not None and isinstance(msg, _np.ndarray):
        msg = _np.ascontiguousarray(msg).tobytes()
    data = bytes(memoryview(msg).cast("B"))
    buf = ctypes.create_string_buffer(data, len(data))
    return type_id, buf, len(data)


class Reply:
    """A reply: its envelope facts, its payload (bytes) and, when its type id belongs to a
    declared Message class, .value (that structure). status is 0 or the code of an error reply."""

    __slots__ = ("type", "payload", "status", "msg_id", "correlation_id", "hlc", "lane", "src", "is_error", "truncated",
                 "token")

    def __init__(self, m, data, token=None):
        e = m.env
        self.type = e.type
        self.payload = data
        self.status = m.status
        self.msg_id = e.msg_id
        self.correlation_id = e.correlation_id
        self.hlc = e.hlc
        self.lane = e.lane
        self.src = e.src
        self.is_error = bool(e.flags & _lib.ENV_F_ERROR)
        self.truncated = e.payload_len > m.len
        self.token = token  # the request's token (Kernel.send(token=...)), else None

    @classmethod
    def _from_msg(cls, m, k=None):
        """A Reply from an rk_msg; with the kernel handle k, its token taken (rk_msg_token)."""
        data = ctypes.string_at(m.payload, m.len) if m.len else b""
        token = None
        if k and _lib.HAVE_TOKENS:
            v = ctypes.c_uint64()
            if _L.rk_msg_token(k, ctypes.byref(m), ctypes.byref(v)) == 1:
                token = v.value
        return cls(m, data, token)

    def as_type(self, cls):
        """The payload as a cls structure, checked as RK_MSG_AS checks it: errors.InvalidArgumentError
        (a ValueError; the Reply in .reply) when cls has a type id (_type_id_) other than the
        reply's, or when the sizes differ (a truncated reply included)."""
        tid = getattr(cls, "_type_id_", 0)
        if tid and self.type != tid:
            raise errors.InvalidArgumentError(
                detail="reply of type %d is not a %s (type %d)" % (self.type, cls.__name__, tid), reply=self)
        if self.truncated or len(self.payload) != ctypes.sizeof(cls):
            raise errors.InvalidArgumentError(
                detail="reply of %d bytes%s is not a %s (%d bytes)" % (
                    len(self.payload), " (truncated)" if self.truncated else "", cls.__name__, ctypes.sizeof(cls)),
                reply=self)
        return cls.from_buffer_copy(self.payload)

    @property
    def value(self):
        """The payload decoded as the Message class registered for its type id (else the bytes)."""
        cls = Message._registry.get(self.type)
        if cls is not None and not self.is_error and len(self.payload) == ctypes.sizeof(cls):
            return cls.from_buffer_copy(self.payload)
        return self.payload

    @property
    def error_payload(self):
        """An error reply's bytes after its code (the handler's detail, e.g. a balance)."""
        return self.payload[4:] if self.is_error else b""

    def array(self, dtype="float32", offset=0, count=-1):
        """The payload (from offset bytes on) as a NumPy array of dtype."""
        if _np is None:
            raise RuntimeError("NumPy is not installed")
        return _np.frombuffer(self.payload, dtype=dtype, count=count, offset=offset).copy()

    def __repr__(self):
        return "Reply(type=%d, status=%d, msg_id=%d, correlation_id=%d, %d bytes)" % (
            self.type,
            self.status,
            self.msg_id,
            self.correlation_id,
            len(self.payload),
        )


# ------------------------------------------------------------------------------------------------
# Kernels


class KernelDef:
    """A kernel descriptor: a built-in (builtin("echo")) or one defined by source text.

    source: the handler in the kernel dialect (docs/kernel-dialect.md), a translation unit of its
    own; handler: the name of the handler function in it; types: the Message classes it accepts
    (None: any type and size); state_size: bytes of persistent state; lanes, threads_per_lane,
    max_lanes, inbox_capacity, slot_size: its geometry (0: the library's defaults)."""

    def __init__(self, name, source=None, handler=None, types=None, state_size=0, lanes=0, threads_per_lane=0,
                 max_lanes=0, inbox_capacity=0, outbox_capacity=0, slot_size=0, scratch_size=0, _desc=None):
        self.name = name
        self.types = list(types) if types else []
        if _desc is not None:  # a library descriptor (built-in): used as it is
            self._desc = _desc
            self._keep = ()
            return
        if not source or not handler:
            raise ValueError("a kernel needs source and handler (or use builtin(name))")
        d = _lib.KernelDesc()
        d.size = ctypes.sizeof(d)
        self._keep = [name.encode(), source.encode(), handler.encode()]
        d.name, d.source, d.source_handler = self._keep
        for field, value in (("state_size", state_size), ("scratch_size", scratch_size), ("lanes", lanes),
                             ("threads_per_lane", threads_per_lane), ("max_lanes", max_lanes),
                             ("inbox_capacity", inbox_capacity), ("outbox_capacity", outbox_capacity),
                             ("slot_size", slot_size)):
            _set_field(d, field, value, "kernel")
        if self.types:
            mts = []
            for cls in self.types:
                if not (isinstance(cls, type) and issubclass(cls, Message) and cls._type_id_):
                    raise ValueError("types are Message classes with a _type_id_, not %r" % (cls,))
                nm = cls.__name__.encode()
                self._keep.append(nm)
                mts.append(_lib.MsgType(_type_id("%s._type_id_" % cls.__name__, cls._type_id_), ctypes.sizeof(cls), nm))
            arr_t = _lib.MsgType * len(mts)
            store = arr_t(*mts)
            ptrs = (ctypes.POINTER(_lib.MsgType) * len(mts))(*[ctypes.pointer(store[i]) for i in range(len(mts))])
            self._keep += [store, ptrs]
            d.types = ctypes.cast(ptrs, ctypes.POINTER(ctypes.POINTER(_lib.MsgType)))
            d.n_types = len(mts)
        self._desc = d

    def type_id(self, name):
        """The id of the message type `name` this kernel declares (rk_msg_type_find)."""
        t = _L.rk_msg_type_find(ctypes.byref(self._desc), name.encode())
        if not t:
            raise KeyError(name)
        return t.contents.id

    def __repr__(self):
        return "KernelDef(%r)" % self.name


_BUILTINS = {}


def builtin(name):
    """A built-in kernel of the library: "echo", "vector_add" or "counter"."""
    if name not in _BUILTINS:
        try:
            desc = _lib.KernelDesc.in_dll(_L, "rk_builtin_" + name)
        except ValueError:
            raise KeyError("no built-in kernel %r (echo, vector_add, counter)" % name) from None
        _BUILTINS[name] = KernelDef(name, _desc=desc)
    return _BUILTINS[name]


def _contiguous(data, writable):
    """(address, bytes, keepalive) of a C-contiguous NumPy array or a bytes-like object, without
    copying it."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - NumPy is optional
        np = None
    if np is not None and isinstance(data, np.ndarray):
        if not data.flags["C_CONTIGUOUS"]:
            raise ValueError("the array must be C-contiguous (np.ascontiguousarray)")
        if writable and not data.flags["WRITEABLE"]:
            raise ValueError("the array is read-only")
        return data.ctypes.data, data.nbytes, data
    mv = memoryview(data)
    if not mv.contiguous:
        raise ValueError("the buffer must be contiguous")
    if writable and mv.readonly:
        raise ValueError("the buffer is read-only")
    if mv.readonly:  # bytes: its address without a copy
        c = ctypes.c_char_p(bytes(mv)) if not isinstance(data, bytes) else ctypes.c_char_p(data)
        return ctypes.cast(c, ctypes.c_void_p).value, mv.nbytes, c
    arr = (ctypes.c_char * mv.nbytes).from_buffer(mv)
    return ctypes.addressof(arr), mv.nbytes, arr


class Buffer:
    """A range of one of the runtime's buffer pools (rk_buffer): bulk data a kernel reads and
    writes in place. kind "device" (device memory on CUDA, host memory on the CPU backend) or
    "host" (pinned, mapped host memory, viewable without a copy: host_array()). write() and read()
    copy between the buffer and a NumPy array (or any bytes-like object) directly, with no
    intermediate copy; ref() makes the reference a message carries (Kernel.call(..., refs=N)).
    A buffer named by a message awaiting its reply cannot be freed (StateError); a buffer dies with
    its runtime (using it afterwards raises StateError)."""

    def __init__(self, runtime, size, kind="device"):
        if kind not in _lib.BUFFER_KINDS:
            raise ValueError("kind must be 'device' or 'host'")
        self.runtime = runtime
        size = _int("size", size, 0, _SIZE_MAX, coerce=True)
        h = ctypes.c_void_p()
        rc = _L.rk_buffer_alloc(runtime._handle(), _lib.BUFFER_KINDS[kind], size, ctypes.byref(h))
        if rc != 0:
            runtime._fail(rc, "rk_buffer_alloc")
        self._b = h
        self.kind = kind
        self.size = int(_L.rk_buffer_size(h))
        with runtime._lock:
            runtime._buffers.add(self)

    def _handle(self):
        if not self._b:
            if self.runtime._rt is None:
                raise error_class(-5)(-5, "the buffer's runtime is closed (its buffers went with it)")
            raise ValueError("the buffer is freed")
        return self._b

    def _check(self, rc, what):
        if rc != 0:
            self.runtime._fail(rc, what)

    def _offset(self, offset):
        """offset (bytes) checked: 0 .. the buffer's size."""
        return _int("offset", offset, 0, self.size, coerce=True)

    def write(self, data, offset=0):
        """Copy data (a NumPy array or bytes-like) into the buffer at offset; waits until done."""
        offset = self._offset(offset)
        addr, n, keep = _contiguous(data, writable=False)
        self._check(_L.rk_buffer_write(self._handle(), offset, addr, n, None, None), "rk_buffer_write")
        del keep

    def read(self, out=None, dtype="float32", count=None, offset=0):
        """Copy from the buffer at offset into out (a writable NumPy array or bytearray, filled in
        place and returned), or into a new NumPy array of count elements of dtype (default: as many
        as fit from offset to the end)."""
        offset = self._offset(offset)
        if out is None:
            try:
                import numpy as np
            except ImportError:
                raise ImportError("Buffer.read() without `out` returns a NumPy array: install numpy, or pass "
                                  "a writable bytes-like object as out (e.g. bytearray(n))") from None

            dt = np.dtype(dtype)
            if count is None:
                count = (self.size - offset) // dt.itemsize
            out = np.empty(_int("count", count, 0, (self.size - offset) // dt.itemsize, coerce=True), dtype=dt)
        addr, n, keep = _contiguous(out, writable=True)
        self._check(_L.rk_buffer_read(self._handle(), offset, addr, n, None, None), "rk_buffer_read")
        del keep
        return out

    def host_array(self, dtype="float32", count=None, offset=0):
        """A NumPy view of a "host" buffer's memory (no copy): writes land in the buffer. The view
        is valid only while the buffer is: after free() (or the runtime's close) it points at memory
        the pool may give to another buffer, or at nothing: drop it first."""
        import numpy as np

        p = _L.rk_buffer_host_ptr(self._handle())
        if not p:
            raise ValueError("only a 'host' buffer has a host view (use write/read for 'device')")
        dt = np.dtype(dtype)
        offset = self._offset(offset)
        fit = (self.size - offset) // dt.itemsize  # never a view beyond the buffer
        count = fit if count is None else _int("count", count, 0, fit, coerce=True)
        raw = (ctypes.c_char * (count * dt.itemsize)).from_address(p + offset)
        arr = np.frombuffer(raw, dtype=dt, count=count)
        return arr

    def ref(self, offset=0, length=None, access="rw"):
        """The reference to [offset, offset + length) (default: to the end) with access "r", "w"
        or "rw", for a message's payload."""
        if access not in _lib.BUF_ACCESS:
            raise ValueError("access must be 'r', 'w' or 'rw'")
        offset = _int("offset", offset, 0, _U64, coerce=True)
        if length is None:
            length = max(self.size - offset, 0)  # beyond the end: the library refuses it
        length = _int("length", length, 0, _U64, coerce=True)
        r = _lib.BufRef()
        self._check(_L.rk_buffer_ref(self._handle(), offset, length, _lib.BUF_ACCESS[access], ctypes.byref(r)),
                    "rk_buffer_ref")
        return r

    def free(self):
        """Give the memory back (refused while a message naming it awaits its reply)."""
        if self._b:
            self._check(_L.rk_buffer_free(self._b), "rk_buffer_free")
            self._b = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def __repr__(self):
        return "Buffer(%s, %d bytes%s)" % (self.kind, self.size, "" if self._b else ", freed")


class Runtime:
    """A ringkernel runtime (rk_runtime_create): one backend, its service thread, its kernels.

    backend: "auto" (CUDA when a usable GPU is found, else CPU), "cpu" or "cuda" (NoDeviceError
    when there is none). cc / cache_dir: the C compiler and cache of source kernels on the CPU
    backend. metrics_listen: "host:port" of an HTTP /metrics endpoint (Prometheus), off by
    default. Other keyword arguments set rk_runtime_options fields of the same name. A context
    manager: leaving it destroys the runtime and its kernels."""

    def __init__(self, backend="auto", device=0, cc=None, cache_dir=None, metrics_listen=None, **options):
        if backend not in _lib.BACKENDS:
            raise ValueError("backend is one of %s" % ", ".join(_lib.BACKENDS))
        o = _lib.RuntimeOptions()
        _L.rk_runtime_options_init(ctypes.byref(o), ctypes.sizeof(o))
        o.backend = _lib.BACKENDS[backend]
        _set_field(o, "device", device, "runtime option")
        self._keep = []
        for field, value in (("cc", cc), ("cache_dir", cache_dir), ("metrics_listen", metrics_listen)):
            if value is not None:
                if field == "metrics_listen" and o.size < _lib.RuntimeOptions.metrics_listen.offset + 8:
                    raise _lib_missing("metrics_listen")
                b = value.encode()
                self._keep.append(b)
                setattr(o, field, b)
        for field, value in options.items():
            if field not in dict(_lib.RuntimeOptions._fields_) or field in (
                "size", "loop", "log", "log_user", "time_source", "time_user"
            ):
                raise TypeError("unknown runtime option %r" % field)
            f = getattr(_lib.RuntimeOptions, field)
            if o.size < f.offset + f.size:  # an older librk: the field is not there
                raise _lib_missing(field)
            _set_field(o, field, value, "runtime option")
        self._rt = ctypes.c_void_p()
        rc = _L.rk_runtime_create(ctypes.byref(self._rt), ctypes.byref(o))
        if rc != 0:
            raise_for(rc, _L.rk_runtime_last_error(None).decode())
        self._kernels = []
        self._buffers = weakref.WeakSet()  # live Buffers: forgotten when the runtime closes
        self._lock = threading.Lock()

    # -- lifetime
    def close(self):
        """Destroy the runtime (its kernels first). Idempotent."""
        with self._lock:
            rt, self._rt = self._rt, None
            kernels, self._kernels = self._kernels, []
            buffers, self._buffers = list(self._buffers), weakref.WeakSet()
        if rt:
            for k in kernels:
                k._forget()
            for b in buffers:  # the pools go with the runtime
                b._b = None
            _L.rk_runtime_destroy(rt)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _handle(self):
        if not self._rt:
            raise error_class(-5)(-5, "the runtime is closed")  # StateError, as for kernels and buffers
        return self._rt

    def _fail(self, rc, what=""):
        detail = _L.rk_runtime_last_error(self._rt).decode() if self._rt else ""
        raise_for(rc, detail or what)

    # -- facts
    @property
    def backend(self):
        """"cpu" or "cuda"."""
        return _L.rk_backend_name(_L.rk_runtime_backend(self._handle())).decode()

    @property
    def backend_reason(self):
        """Why that backend was chosen (e.g. "CPU backend: no CUDA device")."""
        return _L.rk_runtime_backend_reason(self._handle()).decode()

    def _text(self, fn):
        rt = self._handle()
        n = fn(rt, None, 0)
        if n < 0:
            self._fail(n)
        while True:
            buf = ctypes.create_string_buffer(n + 1)
            m = fn(rt, buf, n + 1)
            if m < 0:
                self._fail(m)
            if m <= n:
                return buf.value.decode()
            n = m  # a kernel appeared in between: again, bigger

    def stats(self):
        """The runtime's and every kernel's counters (rk_runtime_stats_json), as a dict."""
        return json.loads(self._text(_L.rk_runtime_stats_json))

    def prometheus(self):
        """The same counters in Prometheus' text exposition format (rk_runtime_stats_prometheus)."""
        if not _lib.HAVE_PROMETHEUS:
            raise _lib_missing("rk_runtime_stats_prometheus")
        return self._text(_L.rk_runtime_stats_prometheus)

    @property
    def metrics_address(self):
        """"host:port" the /metrics endpoint listens on (None without one)."""
        if not _lib.HAVE_PROMETHEUS:
            return None
        buf = ctypes.create_string_buffer(128)
        rc = _L.rk_runtime_metrics_address(self._handle(), buf, len(buf))
        return buf.value.decode() if rc > 0 else None

    @property
    def metrics_url(self):
        """The endpoint's URL, "http://host:port/metrics" (None without one)."""
        a = self.metrics_address
        return "http://%s/metrics" % a if a else None

    # -- kernels
    def buffer(self, size, kind="device"):
        """A new Buffer of size bytes from the "device" or "host" pool."""
        return Buffer(self, size, kind)

    def compile(self, kdef):
        """Compile a source kernel now (launch would), raising InvalidArgumentError with the
        compiler's log when it does not compile. Returns the log (warnings)."""
        log = ctypes.create_string_buffer(16384)
        rc = _L.rk_kernel_compile(self._handle(), ctypes.byref(kdef._desc), log, len(log))
        if rc != 0:
            raise_for(rc, log.value.decode(errors="replace") or _L.rk_runtime_last_error(self._rt).decode())
        return log.value.decode(errors="replace")

    def kernel(self, source, handler, name=None, **kw):
        """A KernelDef from dialect source text (see KernelDef), not launched yet."""
        return KernelDef(name or handler, source=source, handler=handler, **kw)

    def launch(self, kdef, activate=False, **launch_options):
        """Launch a kernel (rk_kernel_launch): resident, LAUNCHED (not consuming) unless
        activate=True. kdef: a KernelDef, or the name of a built-in. launch_options: fields of
        rk_launch_options (lanes, threads_per_lane, inbox_capacity, slot_size, send_timeout
        (seconds), fault_policy, ...)."""
        if isinstance(kdef, str):
            kdef = builtin(kdef)
        o = _lib.LaunchOptions()
        _L.rk_launch_options_init(ctypes.byref(o), ctypes.sizeof(o))
        for field, value in launch_options.items():
            if field == "send_timeout":
                o.send_timeout_ns = _ns(value, "send_timeout")  # negative: forever
            elif field == "launch_timeout":
                ns = _ns(value, "launch_timeout")
                o.launch_timeout_ns = _U64 if ns < 0 else ns  # a uint64_t: forever is its maximum
            elif field in dict(_lib.LaunchOptions._fields_) and field != "size":
                _set_field(o, field, value, "launch option")
            else:
                raise TypeError("unknown launch option %r" % field)
        kp = ctypes.c_void_p()
        rc = _L.rk_kernel_launch(self._handle(), ctypes.byref(kdef._desc), ctypes.byref(o), ctypes.byref(kp))
        if rc != 0:
            self._fail(rc)
        k = Kernel(self, kp, kdef)
        with self._lock:
            self._kernels.append(k)
        if activate:
            k.activate()
        return k

    def __repr__(self):
        return "Runtime(backend=%r)" % (self.backend if self._rt else "closed")


def _lib_missing(what):
    return NotImplementedError("the loaded librk (%s) has no %s" % (LIBRARY_PATH, what))


class Kernel:
    """A launched ring kernel (rk_kernel). Lifecycle: activate <-> deactivate, terminate, destroy
    (close). A context manager: leaving it terminates and destroys the kernel."""

    def __init__(self, runtime, handle, kdef):
        self.runtime = runtime
        self._k = handle
        self.definition = kdef
        self._recv_size = 4096

    # -- lifetime
    def _forget(self):
        self._k = None  # the runtime destroys it

    def _handle(self):
        if not self._k:
            raise error_class(-5)(-5, "the kernel is destroyed")
        return self._k

    def _check(self, rc, reply=None):
        if rc < 0:
            detail = _L.rk_runtime_last_error(self.runtime._rt).decode() if self.runtime._rt else ""
            raise_for(rc, detail, reply)
        return rc

    def activate(self):
        self._check(_L.rk_kernel_activate(self._handle()))
        return self

    def deactivate(self):
        self._check(_L.rk_kernel_deactivate(self._handle()))
        return self

    def terminate(self, timeout=1.0):
        """Close to new messages, drain what was accepted, stop (rk_kernel_terminate)."""
        self._check(_L.rk_kernel_terminate(self._handle(), _ns(timeout)))

    def restart(self, reset_state=False):
        self._check(_L.rk_kernel_restart(self._handle(), 1 if reset_state else 0))

    def close(self):
        """Terminate if needed and free the kernel (rk_kernel_destroy). Idempotent."""
        rt = self.runtime
        with rt._lock:
            k, self._k = self._k, None
            if self in rt._kernels:
                rt._kernels.remove(self)
        if k:
            _L.rk_kernel_destroy(k)

    destroy = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- facts
    @property
    def state(self):
        """"LAUNCHED", "ACTIVE", "INACTIVE", "TERMINATING", "TERMINATED" or "FAULTED"."""
        return _L.rk_state_name(_L.rk_kernel_state(self._handle())).decode()

    @property
    def id(self):
        return _L.rk_kernel_id(self._handle())

    @property
    def name(self):
        return _L.rk_kernel_name(self._handle()).decode()

    @property
    def lanes(self):
        return _L.rk_kernel_lanes(self._handle())

    @property
    def error(self):
        """(code, message) of the kernel's last fault; (0, "") when it never faulted."""
        buf = ctypes.create_string_buffer(512)
        rc = _L.rk_kernel_error(self._handle(), buf, len(buf))
        return rc, buf.value.decode(errors="replace")

    def stats(self):
        """This kernel's counters as a dict (the kernel's entry of Runtime.stats())."""
        kid = self.id
        for k in self.runtime.stats()["kernels"]:
            if k["id"] == kid:
                return k
        raise error_class(-15)(-15, "kernel %d not in the runtime's stats" % kid)

    # -- messages
    def send(self, msg, type_id=0, key=None, no_reply=False, nowait=False, checksum=False, token=None):
        """Send a message (a Message, or bytes / a NumPy array with type_id); returns its id,
        which the reply's correlation_id carries. key: route by key (same key, same lane, in
        order). nowait: AgainError at once when the inbox is full. token: a 64-bit value of the
        caller's that comes back as the reply's .token (rk_send_token)."""
        tid, buf, n = _payload(msg, type_id)
        key, token = _key_token(key, token)
        flags = (_lib.SEND_NO_REPLY if no_reply else 0) | (_lib.SEND_NOWAIT if nowait else 0)
        flags |= _lib.SEND_CHECKSUM if checksum else 0
        mid = ctypes.c_uint64()
        if token is not None:
            if not _lib.HAVE_TOKENS:
                raise _lib_missing("rk_send_token")
            if key is None:
                rc = _L.rk_send_token(self._handle(), token, tid, buf, n, flags, ctypes.byref(mid))
            else:
                rc = _L.rk_send_key_token(self._handle(), key, token, tid, buf, n, flags, ctypes.byref(mid))
        elif key is None:
            rc = _L.rk_send(self._handle(), tid, buf, n, flags, ctypes.byref(mid))
        else:
            rc = _L.rk_send_key(self._handle(), key, tid, buf, n, flags, ctypes.byref(mid))
        self._check(rc)
        return mid.value

    def recv(self, timeout=1.0, max_size=None):
        """The next reply not claimed by a call (rk_recv), as a Reply. timeout 0 polls
        (AgainError when none is ready); None waits as long as replies can come."""
        size = _int("max_size", max_size, 1, _U32) if max_size else self._recv_size
        ns = _ns(timeout)
        buf = ctypes.create_string_buffer(size)
        m = _lib.Msg()
        self._check(_L.rk_recv(self._handle(), ctypes.byref(m), buf, size, ns))
        return Reply._from_msg(m, self._k)

    def call(self, msg, type_id=0, reply_type=None, timeout=1.0, key=None, max_size=None, refs=0):
        """Request/reply (rk_call): send msg, wait for its reply. Returns the reply as reply_type
        when given, else a Reply. refs=N: the payload starts with N buffer references
        (Buffer.ref), pinned until the reply (rk_call_refs). An error reply raises the
        RingKernelError subclass of its code
        (an application code: ApplicationError), the Reply in .reply."""
        tid, buf, n = _payload(msg, type_id)
        key, _ = _key_token(key, None)
        refs = _int("refs", refs, 0, _U32, coerce=True) if refs else 0
        size = _int("max_size", max_size, 1, _U32) if max_size else (
            ctypes.sizeof(reply_type) if reply_type else self._recv_size)
        size = max(size, 64)
        if timeout is not None and timeout == 0:
            raise ValueError("a call cannot complete without waiting: give it a timeout > 0 (or None)")
        ns = _ns(timeout)
        out = ctypes.create_string_buffer(size)
        m = _lib.Msg()
        if refs:
            if key is not None:
                raise ValueError("a call with buffer references goes by round robin (no key)")
            rc = _L.rk_call_refs(self._handle(), tid, buf, n, refs, ctypes.byref(m), out, size, ns)
        elif key is None:
            rc = _L.rk_call(self._handle(), tid, buf, n, ctypes.byref(m), out, size, ns)
        else:
            rc = _L.rk_call_key(self._handle(), key, tid, buf, n, ctypes.byref(m), out, size, ns)
        if rc == -14:  # RK_EHANDLER: the error reply's own code
            reply = Reply._from_msg(m)
            detail = _L.rk_runtime_last_error(self.runtime._rt).decode()
            raise_for(m.status, detail, reply)
        self._check(rc)
        reply = Reply._from_msg(m)
        if reply_type is not None:
            return reply.as_type(reply_type)
        return reply

    def __repr__(self):
        return "Kernel(%r, %s)" % (self.definition.name, self.state if self._k else "destroyed")
