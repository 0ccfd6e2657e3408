"""Reaching lxssd, starting it on demand when root asks and nothing answers."""

from __future__ import annotations

import errno
import os
import time

from lxss.api.client import Client, socket_path
from lxss.bootstrap import bootstrap_argv
from lxss.errors import LxssError

START_TIMEOUT = 15.0


class ServiceUnavailable(LxssError):
    """lxssd cannot be reached (or started); the message says why and what to do."""


def lxss_argv() -> list[str]:
    """argv that runs this lxss command again."""
    return bootstrap_argv("lxss.cli.main")


def _start_service() -> None:
    import subprocess  # only on this cold path: it costs ~10 ms to import

    runtime_dir = os.path.dirname(socket_path())
    os.makedirs(runtime_dir, 0o755, exist_ok=True)
    log_file = os.path.join(runtime_dir, "lxssd.log")
    subprocess.Popen(
        bootstrap_argv("lxss.service.main", "--log-file", log_file),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )


def connect(timeout: float = 30.0) -> Client:
    """A connection to lxssd; root starts the service if none is running."""
    try:
        return Client(timeout=timeout)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            raise ServiceUnavailable(
                f"cannot reach lxssd at {socket_path()}: {e.strerror}"
            ) from None
    if os.geteuid() != 0:
        raise ServiceUnavailable(
            "the lxss service is not running; ask root to start it (lxssd, or "
            "systemctl start lxssd.socket)"
        )
    _start_service()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return Client(timeout=timeout)
        except OSError as e:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"started lxssd, but it did not answer within {START_TIMEOUT:.0f} s "
                    f"({e.strerror}); see {os.path.dirname(socket_path())}/lxssd.log"
                ) from None
            time.sleep(0.02)
