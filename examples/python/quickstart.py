"""The quick start of README.md in Python: vector_add on a ring kernel.

    pip install ./python && python examples/python/quickstart.py      # prints [5.0, 7.0, 9.0]
"""
import ringkernel as rk

with rk.Runtime() as rt:  # backend "auto": CUDA if a GPU is usable, else CPU
    k = rt.launch("vector_add")  # resident, polling, inactive
    k.activate()  # starts consuming
    out = k.call(rk.VaddReq(n=3, a=[1, 2, 3], b=[4, 5, 6]), reply_type=rk.VaddReply, timeout=1.0)
    print(list(out.c[: out.n]))  # [5.0, 7.0, 9.0]; out.stamp is the kernel's clock stamp
    k.terminate(timeout=1.0)  # drain, then exit
