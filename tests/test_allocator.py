"""The command line keeps freed memory in its process: a block larger than glibc's mmap threshold is then served from
the heap (no mapping of its own) and freeing it returns nothing to the kernel. Checked in a child process, through
glibc's own accounting (mallinfo2), so the test process keeps its allocator as it was."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's (mallopt)")

CHILD = """
import ctypes, json, sys
from embedlab.allocator import allocator, keep_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
before = libc.mallinfo2().hblkhd  # blocks mapped while importing, before the setting
block = libc.malloc(64 << 20)  # 64 MiB, above any mmap threshold glibc would choose
ctypes.memset(block, 1, 64 << 20)
during = libc.mallinfo2()
libc.free(ctypes.c_void_p(block))
after = libc.mallinfo2()
print(json.dumps({"kept": kept, "mapped": during.hblkhd - before, "heap_free_after": after.fordblks, **allocator()}))
"""


def _child(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, setting], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_kept_memory_comes_from_the_heap_and_stays_there():
    defaults, kept = _child("defaults"), _child("kept")
    assert defaults["mapped"] >= 64 << 20 and defaults["memory allocator"] == "glibc malloc, its defaults"
    assert kept["kept"] is True and kept["mapped"] == 0 and kept["heap_free_after"] >= 64 << 20
    assert kept["memory allocator"].startswith("glibc malloc, freed memory kept")


def test_the_command_line_sets_it_and_environment_json_says_so():
    code = (
        "import contextlib; from embedlab import cli, environment\n"
        "with contextlib.suppress(SystemExit): cli.main(['--version'])\n"
        "print(environment.software_versions()['memory allocator'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "freed memory kept" in out.splitlines()[-1]


RELEASE = """
import ctypes, sys
from embedlab.allocator import keep_freed_memory, release_freed_memory

def rss() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) << 10

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
assert keep_freed_memory()
block = libc.malloc(256 << 20)
above = libc.malloc(1 << 20)  # in use above the freed block: the heap's top cannot shrink past it
ctypes.memset(block, 1, 256 << 20)
libc.free(ctypes.c_void_p(block))
freed = rss()
release_freed_memory()
print(freed - rss())
"""


def test_released_memory_leaves_the_process_even_below_the_heaps_top():
    out = subprocess.run([sys.executable, "-c", RELEASE], check=True, capture_output=True, text=True).stdout
    assert int(out) >= 250 << 20
