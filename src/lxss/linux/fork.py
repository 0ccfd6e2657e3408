"""Forking a helper that talks to its parent over a socket pair (guest roles, single-threaded)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable


def fork_with_socket(child: Callable[[socket.socket], int]) -> tuple[int, socket.socket]:
    """Fork a child that runs *child* on one end of a new Unix stream socket pair and
    leaves with its return code (os._exit: it never returns into the caller's stack);
    (its pid, the parent's end). OSError from fork goes to the caller, both ends closed."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        code = 1
        try:
            ours.close()
            code = child(theirs)
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours
