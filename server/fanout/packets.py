"""Socket.IO packets whose binary check walks the data once.

Every ack and broadcast is checked for binary parts before it is encoded; the library's check
builds a list at every level of the data and folds it, which costs about as much as the JSON
encoding itself. This one answers the same (bytes or bytearray anywhere in lists and dicts)
with one pass that stops at the first binary part.
"""

from __future__ import annotations

from typing import Any

from socketio import packet as sio_packet

_BINARY = (bytes, bytearray)


class Packet(sio_packet.Packet):  # type: ignore[misc]
    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        pending = [data]
        while pending:
            item = pending.pop()
            if isinstance(item, _BINARY):
                return True
            if isinstance(item, list):
                pending.extend(item)
            elif isinstance(item, dict):
                pending.extend(item.values())
        return False
