"""Files replaced atomically, and telling one version of a file from another."""

from __future__ import annotations

import os
from pathlib import Path


def fingerprint(path: Path) -> str | None:
    """Identity of one version of a file; `os.replace` keeps it, an edit changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(tmp: Path, dest: Path) -> None:
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
