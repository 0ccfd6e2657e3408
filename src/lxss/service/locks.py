"""The distributions a long operation holds (WSL's per-distribution lock states).

An import, export, move or unregister holds its distribution in a state of its own
(Installing, Exporting, Moving, Uninstalling) until it is over: nothing else may start or
change it meanwhile. The user session takes and releases these; the runtime only asks.
One table per user, given to both, so neither needs the other to ask.
"""

from __future__ import annotations

from lxss.api import errors
from lxss.service import registry
from lxss.service.registry import Distribution


class DistributionLocks:
    """One user's held distributions: GUID -> the state the holder shows."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<DistributionLocks {self._held}>"

    def held(self) -> bool:
        """True while any distribution is held (the utility VM then stays up)."""
        return bool(self._held)

    def state(self, guid: str) -> str | None:
        """The state *guid* is held in, or None."""
        return self._held.get(guid)

    def hold(self, guid: str, state: str) -> None:
        """Hold *guid* in *state* (the caller has checked, under its own lock, that nobody
        holds it)."""
        self._held[guid] = state

    def release(self, guid: str) -> None:
        self._held.pop(guid, None)

    def ensure_unlocked(self, distribution: Distribution) -> None:
        """InvalidState unless *distribution* is installed and held by nobody."""
        state = self._held.get(distribution.guid)
        if state is None and distribution.state != registry.INSTALLED:
            state = distribution.state
        if state is not None:
            raise errors.InvalidState(distribution=distribution.name, state=state)
