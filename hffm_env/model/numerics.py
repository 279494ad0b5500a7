"""Subnormal floats flushed to zero around the package's torch work, on every CPU thread.

Attention's softmax gives probabilities, and its backward pass gradients, far below
float32's smallest normal number (about 1.2e-38). An x86 CPU computes an operation
on such a subnormal number through a slow microcode path: a batched matmul of the
attention backward with subnormals in one operand took 8 ms instead of about 0.4 ms
on an Intel Sapphire Rapids core. Flushing them to zero (the FTZ and DAZ bits) costs
nothing elsewhere.

:func:`flush_denormals` sets those bits for the calling thread *and* for every
thread of torch's OpenMP pool, where the intra-op work runs:
``torch.set_flush_denormal`` alone reaches only the calling thread, and the pool's
threads would keep the slow path. On leaving it puts back the state the calling
thread had, so code outside the package (a policy network, say) runs as it did.

A result can differ from one computed without flushing only where a value would be
subnormal; those values are too small to move a float32 sum of normal numbers, so in
practice the package's trajectories are bit for bit the same (checked in the
tests). Where torch's pool is not OpenMP, or its library cannot be found in the
process, only the calling thread is set (:func:`pool_reachable` says which).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

import torch

# a float32 subnormal: stored as 0 when the calling thread flushes
_SUBNORMAL = 1e-39
_OPENMP_LIBS = ("libgomp", "libiomp5", "libomp")

_lock = threading.Lock()
_pool: dict = {}


def _openmp_library() -> ctypes.CDLL | None:
    """torch's OpenMP runtime as loaded in this process (it exports ``GOMP_parallel``)."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:
        return None
    for path in sorted(paths):
        if os.path.basename(path).startswith(_OPENMP_LIBS):
            lib = ctypes.CDLL(path)
            if hasattr(lib, "GOMP_parallel"):
                return lib
    return None


def _setter():
    """A function ``set(on)`` that sets the flush bits on every thread of torch's
    OpenMP pool (the calling thread included), or None where that pool is out of reach."""
    with _lock:
        if "set" not in _pool:
            lib = _openmp_library()
            if lib is None:
                _pool["set"] = None
            else:
                callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
                want = {"on": False}

                def body(_):  # runs once on each thread of the team
                    torch.set_flush_denormal(want["on"])

                body_c = callback(body)
                lib.GOMP_parallel.argtypes = [callback, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                lib.GOMP_parallel.restype = None

                def set_all(on: bool) -> None:
                    want["on"] = on
                    lib.GOMP_parallel(body_c, None, torch.get_num_threads(), 0)

                _pool["keep"] = (body_c, lib)  # the callback must outlive every call
                _pool["set"] = set_all
        return _pool["set"]


def pool_reachable() -> bool:
    """Whether :func:`flush_denormals` reaches torch's OpenMP threads (else only the calling thread)."""
    return _setter() is not None


def flushing() -> bool:
    """Whether the calling thread flushes subnormals to zero now."""
    return bool(torch.tensor(_SUBNORMAL, dtype=torch.float32) == 0)


def _set(on: bool) -> None:
    set_all = _setter() if torch.get_num_threads() > 1 else None
    if set_all is None:
        torch.set_flush_denormal(on)
    else:
        set_all(on)


def flush_denormals(fn):
    """Decorator: ``fn`` runs with subnormals flushed on the calling thread and torch's
    pool, and the calling thread's previous state is put back on every thread after."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = flushing()
        if before:  # already flushing here (an outer call, or the user's choice)
            return fn(*args, **kwargs)
        _set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _set(False)

    return wrapper
