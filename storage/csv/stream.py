"""Work on the table done by forked children, so that it neither holds up the event loop
nor waits for it: a download (CSV, or the JSON records of `GET /record/`) made from their
copy-on-write snapshot of the rows and handed over pipes (the event loop only relays the
bytes, to a client or into a file), and files written beside what the server does meanwhile.
Where there is no fork, a copy of the rows is formatted in a worker thread.

Formatting a million rows takes a core a second or more, so the rows are cut into one slice
per core, each formatted by its own child at the same time: the first streams as it goes,
the others hold their bytes until it is their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import chain, pairwise
from pathlib import Path
from typing import Generic, Protocol, TypeVar

if sys.platform != "win32":
    import fcntl

from storage.csv.text import Block, format_block, header_line

Blocks = Callable[[int, int], Iterator[Block]]  # the rows at positions [start, end), as blocks
# The bytes of the rows at positions [start, end); `first`: this slice opens the stream.
Pieces = Callable[[int, int, bool], Iterable[bytes]]
Forker = Callable[[Callable[[], None], int], int]  # runs work in a child keeping one fd: its pid
T = TypeVar("T")
_READ_SIZE = 1 << 20
_PIPE_SIZE = 1 << 20  # fewer, larger reads than the default 64 KiB
_MAX_SLICES = 4
_MIN_SLICE_ROWS = 50_000  # below this a second child costs more than it saves


class ByteStream(Protocol):
    def chunks(self) -> AsyncIterator[bytes]:
        """The bytes, piece by piece; raises `OSError` if they could not be made whole."""
        ...

    async def close(self) -> None:
        """Stop making the bytes if they are still being made, and free what it holds."""
        ...


def _slices(start: int, end: int) -> list[tuple[int, int]]:
    count = max(1, min(os.cpu_count() or 1, _MAX_SLICES, (end - start) // _MIN_SLICE_ROWS))
    return list(pairwise(start + (end - start) * k // count for k in range(count + 1)))


def _write_slice(fd: int, pieces: Iterable[bytes], hold: bool) -> None:
    """In a child: its slice into `fd` (closed after). With `hold`, the whole slice is made
    before the first byte is written, so that it is made while the slices before it stream."""
    if hold:
        pieces = list(pieces)
    with os.fdopen(fd, "wb") as out:
        for piece in pieces:
            out.write(piece)


def _enlarge_pipe(fd: int) -> None:
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # over the system's limit: the default size works too
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


def forked_stream(fork: Forker, start: int, end: int, pieces: Pieces) -> ByteStream:
    """Start the children now (the snapshot is this moment: nothing runs between the forks)
    and return the stream of their bytes: `pieces` of the rows [start, end), slice by slice."""
    stream = ForkedStream()
    try:
        for index, (first, last) in enumerate(_slices(start, end)):
            read_fd, write_fd = os.pipe()
            _enlarge_pipe(write_fd)
            try:
                pid = fork(partial(_write_slice, write_fd, pieces(first, last, index == 0), index > 0), write_fd)
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
            stream.add(pid, read_fd)
    except BaseException:
        stream.kill()
        raise
    return stream


def csv_pieces(header: Sequence[str], blocks: Blocks, escape: bool) -> Pieces:
    """The CSV of the rows (the header with the first slice); with `escape`, text cells are
    formula-escaped."""

    def pieces(start: int, end: int, first: bool) -> Iterable[bytes]:
        body = (format_block(block, escape) for block in blocks(start, end) if block and len(block[0]))
        return chain([header_line(header)], body) if first else body

    return pieces


def forked_csv(fork: Forker, header: Sequence[str], blocks: Blocks, rows: int, escape: bool) -> ByteStream:
    return forked_stream(fork, 0, rows, csv_pieces(header, blocks, escape))


class ForkedStream:
    """The read ends of the children's pipes, read in order, and the children."""

    def __init__(self) -> None:
        self._children: list[tuple[int, int]] = []  # (pid, read fd), not yet reaped
        self._transport: asyncio.ReadTransport | None = None

    def add(self, pid: int, fd: int) -> None:
        self._children.append((pid, fd))

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while self._children:
            pid, fd = self._children[0]
            self._children[0] = (pid, -1)  # the transport owns the fd now
            reader = asyncio.StreamReader(limit=_READ_SIZE, loop=loop)
            self._transport, _ = await loop.connect_read_pipe(
                partial(asyncio.StreamReaderProtocol, reader, loop=loop), os.fdopen(fd, "rb", buffering=0)
            )
            while chunk := await reader.read(_READ_SIZE):
                yield chunk
            self._transport.close()
            self._transport = None
            self._children.pop(0)
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                raise OSError(f"the writer of a download exited with status {code}")

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._children:
            await asyncio.get_running_loop().run_in_executor(None, self.kill)

    def kill(self) -> None:
        """Stop and reap every child not yet reaped: what they were making is not wanted."""
        for pid, fd in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if fd >= 0:
                os.close(fd)
        for pid, _ in self._children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._children = []


class ThreadedStream:
    """Without fork: parts made from rows copied up front, each in a worker thread."""

    def __init__(self, parts: Sequence[Callable[[], bytes]]) -> None:
        self._parts = parts

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield await asyncio.to_thread(part)

    async def close(self) -> None:
        self._parts = ()


def threaded_csv(header: Sequence[str], blocks: list[Block], escape: bool) -> ByteStream:
    """The CSV of `blocks` (copied from the table now, beside later edits), without fork."""
    parts = [partial(header_line, header)] + [partial(format_block, b, escape) for b in blocks if b and len(b[0])]
    return ThreadedStream(parts)


class Framed:
    """The bytes of `inner` (nothing when None) between `opening` and `closing`."""

    def __init__(self, opening: bytes, inner: ByteStream | None, closing: bytes) -> None:
        self._opening, self._inner, self._closing = opening, inner, closing

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._opening
        if self._inner is not None:
            async for chunk in self._inner.chunks():
                yield chunk
        yield self._closing

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


async def write_stream(stream: ByteStream, path: Path) -> None:
    """A complete CSV file from `stream`, fsynced; the caller renames it into place."""
    try:
        with path.open("wb") as out:
            async for chunk in stream.chunks():
                out.write(chunk)  # into the page cache: no wait on the disk here
            await asyncio.to_thread(os.fsync, out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink on a failure path
        raise
    finally:
        await stream.close()


class ForkedCall(Generic[T]):
    """`work` run now in a forked child, beside whatever the server does meanwhile; its
    (small, picklable) result is collected with `result()`."""

    def __init__(self, fork: Forker, work: Callable[[], T]) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self._pid: int | None = fork(partial(_send_result, write_fd, work), write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._fd = read_fd

    async def result(self) -> T:
        """The child's result; raises `OSError` if it failed."""
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, _read_all, self._fd)
        code = await loop.run_in_executor(None, self._reap)
        if code != 0:
            raise OSError(f"the child exited with status {code}")
        value: T = pickle.loads(data)
        return value

    def _reap(self) -> int:
        pid, self._pid = self._pid, None
        if pid is None:
            return 1
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def stop(self) -> None:
        """Kill the child if it still runs, reap it and close the pipe."""
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._reap()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _send_result(fd: int, work: Callable[[], object]) -> None:
    with os.fdopen(fd, "wb") as out:
        out.write(pickle.dumps(work()))


def _read_all(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as pipe:
        return pipe.read()


class ForkedFile(Generic[T]):
    """A file being written by a forked child, which reports on it when done."""

    def __init__(self, fork: Forker, path: Path, write: Callable[[Path], T]) -> None:
        self.path = path
        self._call = ForkedCall(fork, partial(write, path))

    async def report(self) -> T | None:
        """The child's report, or None if it failed (the caller writes the file itself)."""
        try:
            return await self._call.result()
        except OSError:
            return None

    def discard(self) -> None:
        """Stop the child if it still writes; remove the file unless it was moved away."""
        self._call.stop()
        self.path.unlink(missing_ok=True)
