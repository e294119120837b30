"""Failed logins counted per username and per client address over a sliding minute, for REST
and sockets together (one object per server), so neither a reconnect nor a switch of
transport starts the count again.

An attempt takes its place in both counts before the password is checked: attempts in flight
count as failures, so a burst of concurrent guesses cannot all slip in under the limit. A
success, or an attempt that fails for another reason (storage down), gives its places back; a
wrong password keeps them until they are a minute old."""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from protocol.errors import RateLimited

WINDOW_S = 60.0
_SWEEP_FLOOR = 1024  # keys held before stale ones are swept out


@dataclass(frozen=True)
class Attempt:
    """The places one login attempt holds; give them back with `LoginThrottle.release`."""

    keys: tuple[str, ...]
    at: float


class LoginThrottle:
    def __init__(self, limit: int, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._sweep_at = _SWEEP_FLOOR

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    def begin(self, username: str, address: str | None) -> Attempt:
        """Count an attempt for `username` from `address` (None: unknown, not counted), or
        raise `RateLimited` when either is at the limit; nothing is counted then."""
        now = self._clock()
        if not self.enabled:
            return Attempt((), now)
        keys = ("user:" + username,) + (("addr:" + address,) if address else ())
        wait = max(self._wait(key, now) for key in keys)
        if wait > 0:
            raise RateLimited(
                f"too many failed logins; try again in {math.ceil(wait)} s",
                retry_after=math.ceil(wait * 1000) / 1000,
            )
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > self._sweep_at:
            self._sweep(now)
        return Attempt(keys, now)

    def release(self, attempt: Attempt) -> None:
        """The attempt was not a failed login: it no longer counts."""
        for key in attempt.keys:
            stamps = self._failures.get(key)
            if stamps is None:
                continue
            with contextlib.suppress(ValueError):  # already aged out
                stamps.remove(attempt.at)
            if not stamps:
                del self._failures[key]

    def _wait(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        stamps = self._failures.get(key)
        if stamps is None:
            return 0.0
        while stamps and stamps[0] <= now - self._window_s:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return 0.0
        if len(stamps) < self._limit:
            return 0.0
        return stamps[-self._limit] + self._window_s - now

    def _sweep(self, now: float) -> None:
        """Drop keys with nothing left in the window, so usernames that were tried once and
        never again do not pile up."""
        for key in [k for k, stamps in self._failures.items() if stamps[-1] <= now - self._window_s]:
            del self._failures[key]
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(self._failures))

    def tracked(self) -> int:
        """Usernames and addresses with failures held (for tests and metrics)."""
        return len(self._failures)
