"""Files replaced atomically, and telling one version of a file from another."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsyncedRename(OSError):
    """The rename happened, but fsyncing its directory failed: whether the new name survives
    a crash is unknown, and fsyncing the directory again would prove nothing (after a failed
    fsync the kernel may have dropped what it could not write)."""


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
    """Rename `tmp` (written and fsynced) over `dest` and make the rename durable. An
    `OSError` from the rename changes nothing; an `UnsyncedRename` means `dest` is the new
    file now but may be the old one after a crash."""
    os.replace(tmp, dest)
    try:
        fsync_dir(dest.parent)
    except OSError as exc:
        raise UnsyncedRename(
            exc.errno, f"{dest} replaced, but its directory could not be synced: {exc.strerror}"
        ) from exc


OWNER_ONLY_UMASK = 0o077  # directories 0700, files 0600: the data holds password hashes and secrets


def owner_only(directory: Path) -> None:
    """Create `directory` owner-only, and take group and other access away from everything in
    it that an earlier version left readable (it created files 0644)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _narrow(str(directory))
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            _narrow(os.path.join(root, name))


def _narrow(path: str) -> None:
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
