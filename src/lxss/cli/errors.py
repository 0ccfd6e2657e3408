"""The lxss command's own failures (not the service's): printed as one line, exit 255."""

from __future__ import annotations

from lxss.errors import LxssError


class CommandError(LxssError):
    """Something the lxss command itself could not do; the message says what and why."""
