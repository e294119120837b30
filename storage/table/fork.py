"""Work done in a forked child: a free copy-on-write snapshot of the table at this moment,
running on another core while the server goes on (CSV checkpoints, downloads, the id
migration)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

CAN_FORK = hasattr(os, "fork")
_PR_SET_PDEATHSIG = 1


def fork_snapshot(work: Callable[[], None], keep: int | None = None) -> int:
    """Run `work` in a forked child, which exits 0 when it succeeded; returns its pid. The
    child keeps no inherited descriptor but `keep`."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _become_child(parent, keep)
            work()
            code = 0
        except BaseException as exc:
            print(f"forked table work failed: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    return pid


def _become_child(parent: int, keep: int | None) -> None:
    # Die with the parent and drop every inherited descriptor but `keep` (the DATA_DIR lock,
    # the listening socket, the databases): a server restarted after a crash is never locked
    # out, answered by a dead listener, or raced by a leftover writer.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    limit = os.sysconf("SC_OPEN_MAX")
    if keep is None:
        os.closerange(3, limit)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, limit)


async def exit_code(pid: int) -> int:
    """Wait for the child without holding up the event loop."""
    _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
    return os.waitstatus_to_exitcode(status)
