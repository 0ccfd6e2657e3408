"""Running children: bounded waits, every child reaped, failures as one line.

Every command the bench runs goes through :func:`run` (measured or not), and
every long-lived helper through :class:`Background`. Both start the child in a
process group of its own so that a timeout can kill the whole group, and both
write the child's stderr to a file rather than a pipe: a daemon that inherits
the pipe (``lxss`` starting ``lxssd`` on demand, say) would otherwise keep us
waiting for an EOF that never comes.

The bench also makes itself a child subreaper, so that grandchildren which
daemonize (conmon, podman's pause process, an lxssd started on demand) are
reparented to us instead of to a pid 1 that may never reap them;
:func:`reap_orphans` collects the ones that have exited.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Pids of children some Background (or caller) owns; reap_orphans leaves them alone.
_owned: set[int] = set()

# Programs that, once one run has timed out, are not run again: a hung lxss
# would otherwise cost every later figure a full timeout per sample.
_breakers: dict[str, str | None] = {}


def breaker(program: str) -> None:
    """Stop running program for the rest of the bench after its first timeout."""
    _breakers.setdefault(program, None)


class Unavailable(Exception):
    """A measurement cannot be made; the message says why, in one line."""


def reap_orphans() -> list[int]:
    """Reap exited children that nobody owns (reparented grandchildren).

    Only zombies not in the owned set are waited for, so this never steals the
    exit status of a Popen that someone will still wait for.
    """
    reaped: list[int] = []
    me = os.getpid()
    try:
        tids = os.listdir(f"/proc/{me}/task")
    except OSError:
        return reaped
    children: set[int] = set()
    for tid in tids:
        try:
            children.update(
                int(p) for p in Path(f"/proc/{me}/task/{tid}/children").read_text().split()
            )
        except OSError:
            continue
    for pid in children - _owned:
        if process_state(pid) == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
            except ChildProcessError:
                pass  # already reaped by whoever started it
    return reaped


def unowned_children() -> list[tuple[int, str]]:
    """Live children of the bench that nobody owns: (pid, command line)."""
    out = []
    me = os.getpid()
    for tid in os.listdir(f"/proc/{me}/task"):
        try:
            pids = Path(f"/proc/{me}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for p in pids:
            pid = int(p)
            if pid not in _owned and process_state(pid) not in ("Z", None):
                out.append((pid, cmdline(pid)))
    return out


def process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
            .strip()
        )
    except OSError:
        return "?"


def last_line(text: str, limit: int = 240) -> str:
    """The line of a program's stderr that says what went wrong (usually the last)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class Result:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed_ns: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """One line saying how the command failed, for a "not available" cell."""
        what = last_line(self.stderr)
        if self.returncode < 0:
            status = f"killed by signal {-self.returncode}"
        else:
            status = f"exit status {self.returncode}"
        return f"{what} ({status})" if what else status

    def check(self, label: str | None = None) -> Result:
        """Raise Unavailable unless the command succeeded.

        The reason is prefixed with label, or with the command when label is
        None; a row whose command is shown beside it passes "" (no prefix).
        """
        if not self.ok:
            prefix = short(self.argv) if label is None else label
            raise Unavailable(f"{prefix}: {self.why()}" if prefix else self.why())
        return self


def short(argv: Sequence[str], limit: int = 80) -> str:
    text = " ".join(argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wait_exact(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for proc to exit, waking the moment it does; its exit status.

    Popen.wait(timeout) polls, sleeping 0.5, 1, 2, … up to 50 ms between
    polls, so a time measured around it lands on that grid (1.5, 3.5, 7.5,
    15.5, 31.5, 63.5, 113.5 ms …) and can be off by half. A pidfd becomes
    readable exactly when the child exits. Raises TimeoutExpired.
    """
    if proc.returncode is not None:
        return proc.returncode  # already reaped (by poll()): its pid may be gone
    fd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> Result:
    """Run argv to completion within timeout; never raises for a failing command.

    The elapsed time covers only start to reap, not the temporary files.
    On timeout the whole process group is killed and the result says so.
    """
    tripped = _breakers.get(argv[0])
    if tripped:
        return Result(argv, -9, "", f"not run: {tripped}", 0)
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        started = time.perf_counter_ns()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=out if capture else stdout,
                stderr=err,
                env=env,
                cwd=cwd,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
                # A group, not a session: commands typed in one terminal share its
                # session, and lxss keeps one session leader per caller's session.
                process_group=0,
            )
        except OSError as exc:
            return Result(argv, 127, "", f"{argv[0]}: {exc.strerror}", 0)
        try:
            rc = wait_exact(proc, timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait(timeout=30)
            if argv[0] in _breakers:
                _breakers[argv[0]] = f"`{short(argv)}` timed out after {timeout:g} s earlier"
            return Result(argv, -9, "", f"timed out after {timeout:g} s", 0)
        except BaseException:
            _kill_group(proc)
            proc.wait(timeout=30)
            raise
        elapsed = time.perf_counter_ns() - started
        err.seek(0)
        out.seek(0)
        return Result(
            argv,
            rc,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            elapsed,
        )


def must(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> str:
    """Run a setup command; return its stdout or raise Unavailable with its error."""
    res = run(argv, timeout=timeout, capture=True, env=env, cwd=cwd, user=user, group=group)
    res.check()
    return res.stdout


class Background:
    """A long-lived helper child, owned by a ``with`` block.

    On exit the child's process group gets SIGTERM, then SIGKILL after
    ``grace`` seconds, and the child is always reaped.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        grace: float = 5.0,
        new_session: bool = True,
        **kw: object,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log
        self.grace = grace
        self._log = open(log, "ab")  # noqa: SIM115 - closed in close()
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                start_new_session=new_session,
                **kw,
            )  # type: ignore[call-overload]
        except BaseException:
            self._log.close()
            raise
        _owned.add(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        try:
            return last_line(self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 30.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass  # exited between poll and kill
                except PermissionError:
                    self.proc.send_signal(sig)  # not a group leader we may signal
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        _owned.discard(self.proc.pid)
        self._log.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<Background pid={self.proc.pid} {state} {short(self.argv)}>"


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out.extend(int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """pid and every live descendant of it."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen.extend(c for c in children_of(seen[i]) if c not in seen)
        i += 1
    return seen


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def timed_ms(
    argv: Sequence[str],
    *,
    timeout: float,
    label: str | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> float:
    """Wall time of one successful run of argv, in ms; a failure raises Unavailable."""
    res = run(
        argv, timeout=timeout, stdin=stdin, stdout=stdout, env=env, cwd=cwd, user=user, group=group
    )
    res.check(label)
    return res.elapsed_ns / 1e6
