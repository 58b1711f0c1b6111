"""`vla.allocator`: with freed memory kept, a large tensor made again does not fault its pages in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from vla.allocator import keep_freed_memory
applied = keep_freed_memory()
for _ in range(20):  # warm-up: here the heap settled after 7-8 rounds
    torch.ones(16 * 2**20)  # 64 MiB, above glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.ones(16 * 2**20)
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(keep: bool) -> tuple[bool, int]:
    env = dict(os.environ, VLA_KEEP_FREED_MEMORY="1" if keep else "0")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, count = out.stdout.split()
    return applied == "1", int(count)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_kept_memory_is_reused_without_page_faults() -> None:
    applied, kept = faults(keep=True)
    off, default = faults(keep=False)
    assert applied and not off
    pages = 3 * 64 * 2**20 // 4096
    assert default > pages // 2  # glibc's defaults: every 64 MiB tensor is fresh memory
    assert kept < pages // 20
