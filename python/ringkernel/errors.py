"""Errors: one RingKernelError subclass per RK_E* code of the library, carrying the code, its
name, the library's message for it and the detail of the failure (rk_runtime_last_error).

The table is read from the library (rk_err_name / rk_strerror over its codes), not mirrored:
codes the library adds later still get a class of their own. Application error codes
(RK_EAPP(n): a handler's own errors) raise ApplicationError with .app_code = n."""

from . import _lib

_L = _lib.lib


class RingKernelError(Exception):
    """A ringkernel call failed. code: the negative RK_E* code; name: "RK_EINVAL", ...;
    detail: the library's description of this failure (may be empty)."""

    code = 0
    name = "RK_UNKNOWN"

    def __init__(self, code=None, detail="", reply=None):
        if code is None:
            code = type(self).code
        self.code = code
        self.name = _L.rk_err_name(code).decode()
        self.strerror = _L.rk_strerror(code).decode()
        self.detail = detail or ""
        self.reply = reply
        msg = "%s: %s" % (self.name, self.strerror)
        if self.detail and self.detail not in ("no error", "no runtime"):
            # the library's detail often starts with the code's name: said once
            shown = self.detail[len(self.name) + 2:] if self.detail.startswith(self.name + ": ") else self.detail
            msg += " (%s)" % shown
        super().__init__(msg)


class ApplicationError(RingKernelError):
    """A handler returned an application error code RK_EAPP(app_code)."""

    @property
    def app_code(self):
        return -1000 - self.code


# Pythonic names for the codes known today; the rest (future codes) are named after the C name.
_NICE = {
    "RK_EINVAL": "InvalidArgumentError",
    "RK_EAGAIN": "AgainError",
    "RK_ETIMEDOUT": "TimeoutError",
    "RK_ENOMEM": "NoMemoryError",
    "RK_ESTATE": "StateError",
    "RK_ENORESOURCE": "NoResourceError",
    "RK_ECLOCK": "ClockError",
    "RK_EMSGSIZE": "MessageSizeError",
    "RK_ECORRUPT": "CorruptError",
    "RK_ECUDA": "CudaError",
    "RK_ENODEV": "NoDeviceError",
    "RK_ENOTSUP": "NotSupportedError",
    "RK_ECLOSED": "ClosedError",
    "RK_EHANDLER": "HandlerError",
    "RK_ENOENT": "NotFoundError",
    "RK_ESYS": "SystemCallError",
}
# Python's own exception each one also is, where one fits (except TimeoutError: ...).
_BUILTIN_BASE = {
    "RK_ETIMEDOUT": TimeoutError,
    "RK_EINVAL": ValueError,
    "RK_ENOMEM": MemoryError,
    "RK_ENOTSUP": NotImplementedError,
}

BY_CODE = {}
__all__ = ["RingKernelError", "ApplicationError", "error_class", "raise_for"]


def _build():
    code = -1
    while True:
        name = _L.rk_err_name(code).decode()
        if name == "RK_UNKNOWN":
            break
        cls_name = _NICE.get(name, name[3:].capitalize() + "Error")
        bases = (RingKernelError,) + ((_BUILTIN_BASE[name],) if name in _BUILTIN_BASE else ())
        cls = type(cls_name, bases, {"code": code, "name": name, "__doc__": _L.rk_strerror(code).decode()})
        cls.__module__ = __name__
        BY_CODE[code] = cls
        globals()[cls_name] = cls
        globals()[name[3:]] = cls  # ringkernel.errors.EINVAL, ...
        __all__.extend([cls_name, name[3:]])
        code -= 1


_build()


def error_class(code):
    """The exception class for an RK_E* code (ApplicationError for RK_EAPP codes)."""
    if -1000 - 65535 <= code <= -1000:
        return ApplicationError
    return BY_CODE.get(code, RingKernelError)


def raise_for(code, detail="", reply=None):
    raise error_class(code)(code, detail, reply)
