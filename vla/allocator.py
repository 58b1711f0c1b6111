"""Keep freed memory in the process, so large tensors stop page-faulting on every allocation (glibc only).

glibc's malloc hands allocations above its mmap threshold (128 KiB, growing to at most 32 MiB) straight to the
kernel and unmaps them on free, and trims the heap top whenever it is free. A tensor of a few MB made and dropped
on every layer is therefore fresh memory every time, and the kernel faults in and zeroes each 4 KiB page again.
On the 2-core VM this project is measured on a fault costs about 9 us: one `smolvla` chunk took 16,900 faults
(about 150 ms of 1.5 s) and one batch-8 training step 452,000 (seconds of a 9 s step). With mmap off and no heap
trimming, the same work takes no faults after the first call: freed blocks are reused from the heap.

The price is that the process keeps its peak heap until it exits instead of giving memory back between steps,
which is the right trade for a training or inference process and the wrong one for a long-lived process whose
peak is rare. It is process-wide, so every library in the process benefits, LeRobot's policies included.
It is opt-in: `VLAPolicy` applies it with `--policy.keep_freed_memory=true`; `VLA_KEEP_FREED_MEMORY=0` turns it
off everywhere.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
_NEVER_TRIM = 2**31 - 1  # the largest int mallopt takes: 2 GiB of free heap top before any trimming

_applied = False


def keep_freed_memory() -> bool:
    """Configure glibc's malloc to reuse freed memory (see the module docstring); True once it is in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get("VLA_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, _NEVER_TRIM) != 1:
        log.warning("glibc's mallopt refused the settings that keep freed memory; allocations stay as they were")
        return False
    _applied = True
    log.debug("glibc malloc: mmap off and heap trimming off (freed memory is reused)")
    return True
