"""Real disk faults for the tests: `fsync_fault.c`, an LD_PRELOAD shim compiled here with gcc,
makes fsync/fdatasync fail with EIO for the files whose path matches a pattern, while a
control file exists. A server started with `FsyncFault.settings()` carries it; the test turns
the fault on and off as it goes, and reads back which calls were made and which failed."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("fsync_fault.c")


def build_shim(directory: Path) -> Path:
    """The shim compiled into `directory`. Skipped without gcc on a developer's machine, an
    error in CI, where these tests must run."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if os.environ.get("CI"):
            pytest.fail("gcc is not on PATH, so the fsync fault shim cannot be built (CI is set, so this is an error)")
        pytest.skip("gcc is not on PATH: the fsync fault shim (tests/faults/fsync_fault.c) cannot be built")
    shim = directory / "fsync_fault.so"
    done = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(shim), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"the fsync fault shim did not build:\n{done.stderr}"
    return shim


@dataclass(frozen=True)
class SyncCall:
    function: str  # fsync or fdatasync
    failed: bool
    path: str


@dataclass(frozen=True)
class FsyncFault:
    shim: Path
    pattern: str  # fnmatch(3) on the path of the descriptor; `*` matches `/` too
    control: Path
    log: Path

    @classmethod
    def build(cls, directory: Path, pattern: str) -> FsyncFault:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(build_shim(directory), pattern, directory / "fault-on", directory / "fsync-calls.log")

    def settings(self) -> dict[str, str]:
        """Environment for the server under test (applied after the harness's filter)."""
        return {
            "LD_PRELOAD": str(self.shim),
            "FSYNC_FAULT_PATTERN": self.pattern,
            "FSYNC_FAULT_CONTROL": str(self.control),
            "FSYNC_FAULT_LOG": str(self.log),
        }

    def on(self) -> None:
        self.control.touch()

    def off(self) -> None:
        self.control.unlink(missing_ok=True)

    def calls(self) -> list[SyncCall]:
        """Every call on a matching path so far, oldest first."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            function, outcome, path = line.split(" ", 2)
            found.append(SyncCall(function, outcome == "eio", path))
        return found

    def failed(self) -> list[str]:
        return [call.path for call in self.calls() if call.failed]

    @staticmethod
    def loaded_in(pid: int) -> bool:
        """Whether the process maps a library of this name (the preload took)."""
        try:
            return "fsync_fault.so" in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return False
