"""Idle timers (WSL's LifetimeManager): something that is idle ends after a timeout.

A distribution with no relay and no launch under way ends after instanceIdleTimeout; a
utility VM with no distribution after vmIdleTimeout. Each owner keeps one IdleTimer, arms
it when it becomes idle and cancels it when it becomes busy again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleTimer:
    """One pending idle timeout, or none."""

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<IdleTimer {'armed' if self.armed else 'idle'}>"

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def arm(self, timeout_ms: int, fire: Callable[[], None]) -> None:
        """Call *fire* (on the loop) after *timeout_ms*, replacing any timeout pending; a
        negative timeout means never."""
        self.cancel()
        if timeout_ms < 0:
            return

        def fired() -> None:
            self._handle = None
            fire()

        self._handle = asyncio.get_running_loop().call_later(timeout_ms / 1000, fired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
