"""Reaching lxssd, starting it on demand when root asks and nothing answers."""

from __future__ import annotations

import errno
import os
import time

from lxss import sdnotify
from lxss.api.client import Client, socket_path
from lxss.bootstrap import bootstrap_argv
from lxss.errors import LxssError

# typing costs ~10 ms to import: the client imports it only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

START_TIMEOUT = 15.0


class ServiceUnavailable(LxssError):
    """lxssd cannot be reached (or started); the message says why and what to do."""


def lxss_argv() -> list[str]:
    """argv that runs this lxss command again."""
    return bootstrap_argv("lxss.cli.main")


def _start_service() -> None:
    """Start lxssd and wait until it says it is ready (or has exited) within START_TIMEOUT
    (if it exited, another lxssd won the race to start, say: the caller's connection
    attempts say which).

    lxssd speaks sd_notify(3) already; the address given to it here is a socket of ours, so
    the wait ends the moment the service listens, with no polling. posix_spawn, not
    subprocess: the subprocess module alone costs ~10 ms to import. In a session of its
    own, without our terminal (lxssd detaches itself anyway).
    """
    runtime_dir = os.path.dirname(socket_path())
    os.makedirs(runtime_dir, 0o755, exist_ok=True)
    log_file = os.path.join(runtime_dir, "lxssd.log")
    notify, address = sdnotify.listener()
    try:
        argv = bootstrap_argv("lxss.service.main", "--log-file", log_file)
        null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        environment = {**os.environ, "NOTIFY_SOCKET": address}
        pid = os.posix_spawn(argv[0], argv, environment, file_actions=null, setsid=True)
        try:
            sdnotify.wait_ready(notify, pid, START_TIMEOUT)
        except TimeoutError:
            pass  # the connection attempts that follow say what is wrong
    finally:
        notify.close()


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
    runtime_dir = os.path.dirname(socket_path())
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return Client(timeout=timeout)
        except OSError as e:
            if not _service_running(runtime_dir):
                raise ServiceUnavailable(
                    f"lxssd stopped as it started; see {runtime_dir}/lxssd.log"
                ) from None
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"started lxssd, but it did not answer within {START_TIMEOUT:.0f} s "
                    f"({e.strerror}); see {runtime_dir}/lxssd.log"
                ) from None
            time.sleep(0.02)


def _service_running(runtime_dir: str) -> bool:
    """Whether some lxssd holds the instance lock: ours, or another that won the race to
    start (ours then exits at once) and has not answered yet."""
    import fcntl  # only on this cold path

    try:
        fd = os.open(os.path.join(runtime_dir, "lxssd.lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def registered_distributions(client: Client, for_uid: int | None) -> list[dict[str, Any]]:
    """Every distribution of the caller (or of *for_uid*), in the order they were
    registered, however many replies they take (EnumerateDistributions with `more`)."""
    replies = client.call_more("EnumerateDistributions", {"forUid": for_uid})
    return [d for reply in replies for d in reply["distributions"]]
