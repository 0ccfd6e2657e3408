"""Starting a helper process inside a user namespace that maps a distribution's owner.

The kernel lets only a process *outside* a new user namespace (with CAP_SETUID
there) write a map with more than the caller's own id, so entering one takes a
handshake (see user_namespaces(7), "Defining user and group ID mappings"):

1. the service starts the helper with two pipes;
2. the helper calls unshare(CLONE_NEWUSER) and writes b"U";
3. the service writes /proc/PID/uid_map and gid_map, then writes b"M";
4. the helper switches to uid/gid 0 of the namespace — the owner on the host.

From then on the helper has full capabilities over the owner's mapped ids and
none over anything else: whatever it does, the owner could have done.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Final

from lxss import readiness
from lxss.linux import syscalls
from lxss.linux.subids import Mapping

SYNC_ENV: Final = "LXSS_USERNS_SYNC"
PARENT_ENV: Final = "LXSS_PARENT_PID"
READY: Final = b"U"
MAPPED: Final = b"M"

# The service's spawners (service/archives.py, vm/namespace.py) still import it from here;
# lxss.bootstrap is its one home.


def die_with_parent() -> None:
    """SIGKILL this process when the service that started it dies.

    The getppid() check closes the race where the parent died before prctl.
    """
    syscalls.set_pdeathsig(signal.SIGKILL)
    expected = os.environ.get(PARENT_ENV)
    if expected is not None and os.getppid() != int(expected):
        os._exit(1)


def _wait_readable(fd: int, timeout: float, what: str) -> bytes:
    if not readiness.readable(fd, timeout):
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
    return os.read(fd, 1)


def enter_user_namespace(timeout: float = 30.0) -> None:
    """Helper side of the handshake: become root of a namespace mapped by our parent.

    Needs a single-threaded caller (unshare(CLONE_NEWUSER) refuses otherwise).
    """
    sync = os.environ.pop(SYNC_ENV, None)
    if sync is None:
        raise RuntimeError(f"{SYNC_ENV} is not set: not started by spawn_mapped()")
    ready_fd, go_fd = (int(part) for part in sync.split(","))
    os.setgroups([])
    syscalls.unshare(syscalls.CLONE_NEWUSER)
    os.write(ready_fd, READY)
    os.close(ready_fd)
    if _wait_readable(go_fd, timeout, "the service to write our id maps") != MAPPED:
        raise RuntimeError("the service did not map our user namespace")
    os.close(go_fd)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # N.B. Changing our effective ids on the host (any owner but root) clears the
    # parent-death signal (prctl(2), PR_SET_PDEATHSIG): arm it again.
    die_with_parent()


def write_id_maps(pid: int, mapping: Mapping) -> None:
    """Service side: write *pid*'s maps; each file must be written in one write(2)."""
    for name, text in (("uid_map", mapping.uid.proc_text()), ("gid_map", mapping.gid.proc_text())):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


class PendingHelper:
    """A started helper whose user namespace is not mapped yet.

    Call :meth:`finish` once :meth:`fileno` is readable (or at once, blocking);
    on any failure the helper is killed and reaped before the error propagates.
    """

    def __init__(self, proc: subprocess.Popen[bytes], ready_fd: int, go_fd: int) -> None:
        self.proc = proc
        self._ready_fd = ready_fd
        self._go_fd = go_fd

    def fileno(self) -> int:
        return self._ready_fd

    def finish(self, mapping: Mapping, timeout: float = 30.0) -> subprocess.Popen[bytes]:
        try:
            token = _wait_readable(self._ready_fd, timeout, "a helper to enter its namespace")
            if token != READY:
                code = self.proc.wait(timeout=timeout)
                raise ChildProcessError(f"helper exited ({code}) before entering its namespace")
            write_id_maps(self.proc.pid, mapping)
            os.write(self._go_fd, MAPPED)
        except BaseException:
            self.abort()
            raise
        finally:
            self._close()
        return self.proc

    def map_ready(self, mapping: Mapping) -> subprocess.Popen[bytes]:
        """`finish` for a caller that has seen `fileno()` readable: reads the helper's word
        and maps it, never waiting. On failure (the helper ended instead: ChildProcessError)
        the helper is left for the caller to kill and reap, as an event loop must (see
        lxss.linux.confine.start_in), and this object's descriptors are closed."""
        try:
            if os.read(self._ready_fd, 1) != READY:
                raise ChildProcessError("the helper exited before entering its namespace")
            write_id_maps(self.proc.pid, mapping)
            os.write(self._go_fd, MAPPED)
        finally:
            self._close()
        return self.proc

    def close(self) -> None:
        """Close the handshake's descriptors (idempotent); the helper is the caller's."""
        self._close()

    def abort(self) -> None:
        self._close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _close(self) -> None:
        for fd in (self._ready_fd, self._go_fd):
            if fd >= 0:
                os.close(fd)
        self._ready_fd = self._go_fd = -1


def spawn_mapped(
    argv: list[str],
    *,
    pass_fds: tuple[int, ...] = (),
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = None,
    stderr: int | None = None,
    env: dict[str, str] | None = None,
) -> PendingHelper:
    """Start *argv* (which must call :func:`enter_user_namespace`) for mapping later.

    Call this from the thread that will outlive the helper: the helper's
    parent-death signal follows the thread that forked it.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    child_env = dict(env or {})
    child_env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    child_env[SYNC_ENV] = f"{ready_w},{go_r}"
    child_env[PARENT_ENV] = str(os.getpid())
    try:
        proc = subprocess.Popen(
            argv,
            pass_fds=(*pass_fds, ready_w, go_r),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=child_env,
            cwd="/",
            # A session of its own, so no terminal of the service's can ever be a
            # distribution's: the helper and all it starts have no controlling terminal.
            start_new_session=True,
        )
    except BaseException:
        for fd in (ready_r, go_w):
            os.close(fd)
        raise
    finally:
        os.close(ready_w)
        os.close(go_r)
    return PendingHelper(proc, ready_r, go_w)
