"""Keep freed host memory in the process while training on the CPU.

PyTorch's CPU allocator hands every tensor to malloc. glibc serves blocks above its mmap threshold
(at most 32 MiB) with a fresh `mmap` and gives them back with `munmap` when freed, so every
training step maps its activations anew and the kernel zeroes them page by page: measured on the
residual net at batch 1,024 on 2 cores, 178,000 minor page faults per step and a quarter of the
step time (benchmarks/results/heap.md). `retained_heap()` tells glibc to serve everything from its heap
and never trim it while the block runs, so the second step reuses the pages of the first; the
process keeps its peak heap until the block ends, when glibc's defaults come back (freed memory
is returned to the system from the next free on; as after any mallopt call, glibc no longer
adapts its mmap threshold to the sizes it sees).

glibc only: elsewhere (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt(3) parameters and glibc's defaults.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024, _M_MMAP_MAX: 65536}
_RETAINED = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 64 << 20}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None     # musl and others have no mallopt


_depth = 0        # nested blocks: the outermost one sets and restores


@contextmanager
def retained_heap() -> Iterator[bool]:
    """Serve allocations from the heap and never trim it inside the block; yields whether that
    took (False where the C library is not glibc)."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _depth == 0:
        for k, v in _RETAINED.items():
            libc.mallopt(k, v)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            for k, v in _DEFAULTS.items():
                libc.mallopt(k, v)
