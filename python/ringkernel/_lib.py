"""The C ABI of librk through ctypes: loading the library, the structs a caller fills or reads, and
the function prototypes. Nothing here is Pythonic; ringkernel/__init__.py builds the API on it.

The library is the copy inside this package (the wheel built by scikit-build-core puts it next to
this file), or the one named by the environment variable RINGKERNEL_LIBRARY. Struct layouts are
mirrored here and checked against the library at load (rk_struct_size); macro values are not
mirrored: defaults come from rk_runtime_options_init / rk_launch_options_init, message type ids
from rk_msg_type_find, error names and messages from rk_err_name / rk_strerror."""

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_char_p,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _find_library():
    env = os.environ.get("RINGKERNEL_LIBRARY")
    if env:
        return env
    for name in ("librk.so", "librk.dylib"):
        p = os.path.join(_HERE, name)
        if os.path.exists(p):
            return p
    raise ImportError(
        "ringkernel: librk was not found in the package (%s) and RINGKERNEL_LIBRARY is not set; "
        "install the package with `pip install ./python` or point RINGKERNEL_LIBRARY at a librk.so" % _HERE
    )


LIBRARY_PATH = _find_library()
try:
    lib = ctypes.CDLL(LIBRARY_PATH)
except OSError as e:  # pragma: no cover - depends on the machine
    raise ImportError("ringkernel: cannot load %s: %s" % (LIBRARY_PATH, e)) from e


class Envelope(Structure):
    _fields_ = [
        ("magic", c_uint32),
        ("version", c_uint16),
        ("flags", c_uint16),
        ("type", c_uint32),
        ("payload_len", c_uint32),
        ("msg_id", c_uint64),
        ("correlation_id", c_uint64),
        ("src", c_uint32),
        ("dst", c_uint32),
        ("hlc", c_uint64),
        ("node", c_uint32),
        ("checksum", c_uint32),
        ("priority", c_uint16),
        ("lane", c_uint16),
        ("origin", c_uint32),
    ]


class Msg(Structure):
    _fields_ = [("env", Envelope), ("payload", c_void_p), ("len", c_uint32), ("status", c_int32)]


class MsgType(Structure):
    _fields_ = [("id", c_uint32), ("size", c_uint32), ("name", c_char_p)]


LOG_FN = CFUNCTYPE(None, c_void_p, c_int, c_char_p)
RECV_CB = CFUNCTYPE(None, c_void_p, POINTER(Msg), c_void_p)


class RuntimeOptions(Structure):
    _fields_ = [
        ("size", c_uint32),
        ("backend", c_int),
        ("device", c_int),
        ("node_id", c_uint32),
        ("max_offset_us", c_uint64),
        ("loop", c_void_p),
        ("log", c_void_p),
        ("log_user", c_void_p),
        ("log_level", c_int),
        ("watchdog_interval_ns", c_uint64),
        ("watchdog_stall_ns", c_uint64),
        ("clock_sync_interval_ns", c_uint64),
        ("buffer_device_bytes", c_size_t),
        ("buffer_host_bytes", c_size_t),
        ("max_buffers", c_uint32),
        ("cc", c_char_p),
        ("cache_dir", c_char_p),
        ("metrics_listen", c_char_p),
        ("time_source", c_void_p),  # a C function pointer: not settable from Python
        ("time_user", c_void_p),
        ("command_timeout_ns", c_uint64),
    ]


class LaunchOptions(Structure):
    _fields_ = [
        ("size", c_uint32),
        ("lanes", c_uint32),
        ("threads_per_lane", c_uint32),
        ("inbox_capacity", c_uint32),
        ("outbox_capacity", c_uint32),
        ("slot_size", c_uint32),
        ("backpressure", c_int),
        ("send_timeout_ns", c_int64),
        ("launch_timeout_ns", c_uint64),
        ("fault_policy", c_int),
        ("max_restarts", c_uint32),
        ("restart_backoff_ns", c_uint64),
        ("restart_flags", c_uint32),
        ("dead_letters", c_uint32),
    ]


class _Source(Union):
    _fields_ = [("source", c_char_p), ("cuda_source", c_char_p)]


class _SourceHandler(Union):
    _fields_ = [("source_handler", c_char_p), ("cuda_handler", c_char_p)]


class KernelDesc(Structure):
    _anonymous_ = ("_src", "_srch")
    _fields_ = [
        ("size", c_uint32),
        ("name", c_char_p),
        ("handler", c_void_p),
        ("cuda_image", c_void_p),
        ("cuda_entry", c_char_p),
        ("_src", _Source),
        ("_srch", _SourceHandler),
        ("state_size", c_size_t),
        ("state_init", c_void_p),
        ("state_init_user", c_void_p),
        ("scratch_size", c_size_t),
        ("lanes", c_uint32),
        ("threads_per_lane", c_uint32),
        ("inbox_capacity", c_uint32),
        ("outbox_capacity", c_uint32),
        ("slot_size", c_uint32),
        ("backpressure", c_int),
        ("types", POINTER(POINTER(MsgType))),
        ("n_types", c_uint32),
        ("max_lanes", c_uint32),
    ]


def _proto(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


rt_p = c_void_p
k_p = c_void_p
_proto("rk_strerror", c_char_p, c_int)
_proto("rk_err_name", c_char_p, c_int)
_proto("rk_version", ctypes.c_uint)
_proto("rk_version_string", c_char_p)
_proto("rk_struct_size", c_size_t, c_char_p)
_proto("rk_runtime_options_init", c_int, POINTER(RuntimeOptions), c_size_t)
_proto("rk_launch_options_init", c_int, POINTER(LaunchOptions), c_size_t)
_proto("rk_msg_type_find", POINTER(MsgType), POINTER(KernelDesc), c_char_p)
_proto("rk_runtime_create", c_int, POINTER(rt_p), POINTER(RuntimeOptions))
_proto("rk_runtime_destroy", None, rt_p)
_proto("rk_runtime_backend", c_int, rt_p)
_proto("rk_runtime_backend_reason", c_char_p, rt_p)
_proto("rk_backend_name", c_char_p, c_int)
_proto("rk_runtime_last_error", c_char_p, rt_p)
_proto("rk_runtime_stats_json", c_int, rt_p, c_void_p, c_size_t)
_proto("rk_kernel_compile", c_int, rt_p, POINTER(KernelDesc), c_void_p, c_size_t)
_proto("rk_kernel_launch", c_int, rt_p, POINTER(KernelDesc), POINTER(LaunchOptions), POINTER(k_p))
_proto("rk_kernel_activate", c_int, k_p)
_proto("rk_kernel_deactivate", c_int, k_p)
_proto("rk_kernel_terminate", c_int, k_p, c_int64)
_proto("rk_kernel_destroy", None, k_p)
_proto("rk_kernel_restart", c_int, k_p, c_uint32)
_proto("rk_kernel_state", c_int, k_p)
_proto("rk_state_name", c_char_p, c_int)
_proto("rk_kernel_error", c_int, k_p, c_void_p, c_size_t)
_proto("rk_kernel_id", c_uint32, k_p)
_proto("rk_kernel_name", c_char_p, k_p)
_proto("rk_kernel_lanes", c_uint32, k_p)
_proto("rk_send", c_int, k_p, c_uint32, c_void_p, c_uint32, c_uint32, POINTER(c_uint64))
_proto("rk_send_key", c_int, k_p, c_uint64, c_uint32, c_void_p, c_uint32, c_uint32, POINTER(c_uint64))
_proto("rk_recv", c_int, k_p, POINTER(Msg), c_void_p, c_uint32, c_int64)
_proto("rk_call", c_int, k_p, c_uint32, c_void_p, c_uint32, POINTER(Msg), c_void_p, c_uint32, c_int64)
_proto("rk_call_key", c_int, k_p, c_uint64, c_uint32, c_void_p, c_uint32, POINTER(Msg), c_void_p, c_uint32, c_int64)
_proto("rk_recv_start", c_int, k_p, RECV_CB, c_void_p)
_proto("rk_recv_stop", c_int, k_p)

HAVE_TOKENS = hasattr(lib, "rk_send_token")
if HAVE_TOKENS:
    _proto("rk_send_token", c_int, k_p, c_uint64, c_uint32, c_void_p, c_uint32, c_uint32, POINTER(c_uint64))
    _proto("rk_send_key_token", c_int, k_p, c_uint64, c_uint64, c_uint32, c_void_p, c_uint32, c_uint32, POINTER(c_uint64))
    _proto("rk_msg_token", c_int, k_p, POINTER(Msg), POINTER(c_uint64))

HAVE_PROMETHEUS = hasattr(lib, "rk_runtime_stats_prometheus")
if HAVE_PROMETHEUS:
    _proto("rk_runtime_stats_prometheus", c_int, rt_p, c_void_p, c_size_t)
    _proto("rk_runtime_metrics_address", c_int, rt_p, c_void_p, c_size_t)


class BufRef(Structure):
    """rk_buf_ref: a reference to a range of a buffer, carried at the start of a payload."""

    _fields_ = [
        ("buffer", c_uint32),
        ("gen", c_uint32),
        ("offset", c_uint64),
        ("length", c_uint64),
        ("msg", c_uint64),
        ("access", c_uint32),
        ("reserved", c_uint32),
    ]


buf_p = c_void_p
_proto("rk_buffer_alloc", c_int, rt_p, c_int, c_size_t, POINTER(buf_p))
_proto("rk_buffer_free", c_int, buf_p)
_proto("rk_buffer_write", c_int, buf_p, c_size_t, c_void_p, c_size_t, c_void_p, c_void_p)
_proto("rk_buffer_read", c_int, buf_p, c_size_t, c_void_p, c_size_t, c_void_p, c_void_p)
_proto("rk_buffer_size", c_size_t, buf_p)
_proto("rk_buffer_get_kind", c_int, buf_p)
_proto("rk_buffer_host_ptr", c_void_p, buf_p)
_proto("rk_buffer_ref", c_int, buf_p, c_uint64, c_uint64, c_uint32, POINTER(BufRef))
_proto("rk_call_refs", c_int, k_p, c_uint32, c_void_p, c_uint32, c_uint32, POINTER(Msg), c_void_p, c_uint32, c_int64)
_proto("rk_send_refs", c_int, k_p, c_uint32, c_void_p, c_uint32, c_uint32, c_uint32, POINTER(c_uint64))
BUFFER_KINDS = {"device": 1, "host": 2}
BUF_ACCESS = {"r": 0x1, "w": 0x2, "rw": 0x3}


def _check_layouts():
    for name, cls in (
        ("envelope", Envelope),
        ("msg", Msg),
        ("msg_type", MsgType),
        ("kernel_desc", KernelDesc),
        ("launch_options", LaunchOptions),
        ("buf_ref", BufRef),
    ):
        want = lib.rk_struct_size(name.encode())
        if want != ctypes.sizeof(cls):
            raise ImportError(
                "ringkernel: %s is %d bytes in %s but %d in this binding: library and package do not match"
                % (name, want, LIBRARY_PATH, ctypes.sizeof(cls))
            )
    # rk_runtime_options may grow at its end (the size field says how much the library reads)
    want = lib.rk_struct_size(b"runtime_options")
    if want < RuntimeOptions.cache_dir.offset + 8:
        raise ImportError("ringkernel: rk_runtime_options of %s is too small (%d bytes)" % (LIBRARY_PATH, want))


_check_layouts()
# How much of RuntimeOptions the library knows (metrics_listen only where it has it)
RUNTIME_OPTIONS_SIZE = min(ctypes.sizeof(RuntimeOptions), lib.rk_struct_size(b"runtime_options"))

# Send flags: plain values of the ABI (the header's RK_SEND_*), stable like the error codes.
SEND_NO_REPLY = 0x1
SEND_CHECKSUM = 0x2
SEND_NOWAIT = 0x4
# Envelope flags (RK_ENV_F_*), read from replies.
ENV_F_ERROR = 0x2
BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}
