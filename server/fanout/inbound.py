"""What a client may send before the server has understood it.

A Socket.IO binary packet arrives as a header announcing N attachments, then N frames; the
library buffers them all before looking at the packet, whoever sent it, guests included. The
whole packet (header and attachments) is held to `max_bytes` and at most `MAX_ATTACHMENTS`
attachments, counted as they arrive. A packet the library cannot decode ends the connection
with one short log line, instead of a traceback per frame and a socket left waiting for
attachments that never make sense.
"""

from __future__ import annotations

from typing import Any

MAX_ATTACHMENTS = 16
_BINARY_TYPES = ("5", "6")  # BINARY_EVENT, BINARY_ACK


def announced_attachments(header: str) -> int:
    """The attachment count a binary packet's header announces (`51-[...]`), or -1 when it
    announces none that can be read."""
    digits = header[1:11].split("-", 1)[0]
    return int(digits) if digits.isdigit() else -1


class BinaryBudget:
    """The bytes of each socket's binary packet in progress."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._used: dict[str, int] = {}

    def admit(self, eio_sid: str, data: Any, in_progress: bool) -> str | None:
        """None if `data` may be buffered, else why the connection must end."""
        if in_progress:
            used = self._used.get(eio_sid, 0) + len(data)
            self._used[eio_sid] = used
            return None if used <= self._max_bytes else f"binary packet over {self._max_bytes} bytes"
        if isinstance(data, str) and data[:1] in _BINARY_TYPES:
            count = announced_attachments(data)
            if count > MAX_ATTACHMENTS:
                return f"binary packet announcing {count} attachments (at most {MAX_ATTACHMENTS})"
            self._used[eio_sid] = len(data)
        return None

    def done(self, eio_sid: str) -> None:
        self._used.pop(eio_sid, None)
