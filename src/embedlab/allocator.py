"""Freed memory stays in the process while a command runs.

glibc's malloc gives each block above its mmap threshold (which it moves, up to 32 MiB) a mapping of its own and hands
the pages back to the kernel when the block is freed. A fine-tuning step allocates and frees activations of that size
every time (EfficientNet-Lite1's expanded maps at 112 px and batch 64 are 77 MB each), so every step faulted the same
pages in again, and in a virtual machine a page fault is dear. With every block served from the heap and up to 1 GiB
of free memory kept at its top, a step reuses the pages of the one before: `python bench/vision_malloc.py` measures the
training step and the extraction with and without (docs/performance.md).

The process is the command's own, so the command line sets it at start (``cli.main``); the Python API leaves the
caller's process as it is.
"""

from __future__ import annotations

import ctypes
import platform

#: mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: Free memory kept at the heap's top for the next allocation instead of being returned to the kernel.
KEEP_BYTES = 1 << 30

_kept = False  # keep_freed_memory took effect in this process
_state = {"memory allocator": "glibc malloc, its defaults" if platform.libc_ver()[0] == "glibc" else "not glibc"}


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and keep up to ``KEEP_BYTES`` of freed memory there; False (and nothing
    changed) where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)):
        return False
    _state["memory allocator"] = f"glibc malloc, freed memory kept (M_MMAP_MAX 0, M_TRIM_THRESHOLD {KEEP_BYTES})"
    global _kept
    _kept = True
    return True


def release_freed_memory() -> None:
    """Hand the free pages of glibc's heap back to the kernel (``malloc_trim``) where ``keep_freed_memory`` keeps them:
    a runner calls it between steps, so one step's freed memory is not resident under the next step's peak (at
    ML-32M's shape 2A frees 1.4 GB that stayed: the movie study peaked at 4.2-4.6 GiB, 3.5 GiB with it)."""
    if _kept:
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def allocator() -> dict[str, str]:
    """How this process allocates memory, as environment.json records it."""
    return dict(_state)
