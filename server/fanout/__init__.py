"""Direct fan-out: broadcasts written once as websocket frames to every idle websocket.

`FanoutServer(client_manager=DirectManager())` is a python-socketio `AsyncServer` whose
broadcasts and acks skip the per-recipient task and queue hop when a socket is idle, and go
through the socket's own Engine.IO queue whenever writing directly could reorder.
"""

from server.fanout.manager import DirectManager, FanoutServer, check_support

__all__ = ["DirectManager", "FanoutServer", "check_support"]
