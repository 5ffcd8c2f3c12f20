"""Fixtures of the Python tests: a CPU runtime whose source kernels compile into a private cache."""
import ctypes
import os

import pytest

import ringkernel as rk


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("rk-cache"))


@pytest.fixture
def rt(cache_dir):
    backend = os.environ.get("RK_TEST_BACKEND", "cpu")
    with rk.Runtime(backend=backend, cache_dir=cache_dir) as r:
        yield r


ACCOUNT_SOURCE = r"""
typedef struct acc_add { int64_t delta; } acc_add;
RK_MESSAGE(acc_add, 300);
typedef struct acc_value { int64_t total; uint64_t count; } acc_value;
RK_MESSAGE(acc_value, 301);
typedef struct acc_state { int64_t total; uint64_t count; } acc_state;

RK_HANDLER(acc_handler)(rk_ctx *ctx, const rk_msg *in) {
  acc_state *s = (acc_state *)rk_state(ctx);
  const acc_add *a = RK_MSG_AS(in, acc_add);
  acc_value v;
  if (s == NULL) return RK_ESTATE;
  if (a == NULL) return RK_EINVAL;
  if (s->total + a->delta < 0) { /* overdraft: application error 7, with the balance */
    int64_t balance = s->total;
    int rc = rk_reply_error(ctx, RK_EAPP(7), &balance, sizeof balance);
    return rc ? rc : RK_EAPP(7);
  }
  s->total += a->delta;
  s->count++;
  v.total = s->total;
  v.count = s->count;
  return rk_reply_typed(ctx, acc_value, &v);
}
"""


class AccAdd(rk.Message):
    """The account kernel's request (ACCOUNT_SOURCE's acc_add)."""

    _type_id_ = 300
    _fields_ = [("delta", ctypes.c_int64)]


class AccValue(rk.Message):
    """The account kernel's reply (ACCOUNT_SOURCE's acc_value)."""

    _type_id_ = 301
    _fields_ = [("total", ctypes.c_int64), ("count", ctypes.c_uint64)]
