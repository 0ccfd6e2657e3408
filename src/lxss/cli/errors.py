"""The lxss command's own failures (not the service's): printed as one line, exit 255."""

from __future__ import annotations


class CommandError(Exception):
    """Something the lxss command itself could not do; the message says what and why."""
