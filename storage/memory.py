"""Handing memory the table no longer uses back to the operating system.

A load makes and drops hundreds of megabytes of temporaries (the parser's text and
arrays); with glibc's defaults much of that stays in the process: after the first large
frees it raises its mmap and trim thresholds (to 32 and 64 MiB), so later large blocks
come from the heap and their pages are kept when freed. At a million rows that is about
90 MB of RSS.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Above glibc's starting 128 KiB: the parser's many mid-sized buffers keep being reused
# from the heap (mapping each afresh doubles the page faults of a load, a quarter more at
# 1 MiB), while the big lists and arrays get mappings of their own. Same RSS as 128 KiB.
_LARGE = 1 << 20


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def return_large_frees() -> None:
    """Fix glibc's mmap and trim thresholds: large blocks get mappings of their own and go
    back to the OS when freed, and the heap top is trimmed, however large the blocks freed
    before (setting them turns off glibc's raising them). A no-op elsewhere."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _LARGE)
            libc.mallopt(_M_TRIM_THRESHOLD, _LARGE)


def release_free_memory() -> None:
    """Return the free pages inside glibc's heap to the OS (the thresholds above only cover
    blocks at its top and large ones). A no-op elsewhere."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.malloc_trim(0)
