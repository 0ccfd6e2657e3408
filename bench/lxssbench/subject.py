"""lxss itself, driven only through its command line, as a user would.

The bench never imports lxss: it runs the installed ``lxss`` command and
reports what that command printed when it fails. Distributions it creates are
named ``bench-*`` and unregistered at the end; the service is stopped at the
end only if it was not running when the bench started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from .proc import (
    Result,
    Unavailable,
    breaker,
    descendants,
    process_state,
    reap_orphans,
    run,
    wait_until,
)

SOCKET: Final = Path("/run/lxss/lxssd.sock")
REPO: Final = Path(__file__).resolve().parents[2]
PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CANDIDATES: Final = (Path("/usr/local/bin/lxss"), REPO / ".venv/bin/lxss")


@dataclass
class Interpreter:
    """How lxss's Python starts: the shebang's interpreter and its flags."""

    path: str
    flags: list[str]
    note: str = ""

    def as_lxss(self, *code: str) -> list[str]:
        return [self.path, *self.flags, *code]

    def bare(self, *code: str) -> list[str]:
        return [self.path, "-I", "-S", *code]

    def describe(self) -> str:
        text = " ".join([self.path, *self.flags])
        return f"{text} ({self.note})" if self.note else text


def locate(explicit: str | None) -> tuple[Path | None, str]:
    """The lxss command a user would run, or why there is none."""
    if explicit:
        p = Path(explicit)
        return (p, "") if os.access(p, os.X_OK) else (None, f"{explicit} is not executable")
    found = shutil.which("lxss", path=PATH)
    if found:
        return Path(found), ""
    for p in CANDIDATES:
        if os.access(p, os.X_OK):
            return p, ""
    where = ", ".join([PATH.replace(":", ", "), *(str(c.parent) for c in CANDIDATES)])
    return None, f"lxss not found (looked in {where})"


def _real_python(path: str) -> tuple[str, str]:
    """Follow a pyenv-style shim to a real interpreter: never measure a shim."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as f:
            is_elf = f.read(4) == b"\x7fELF"
    except OSError:
        is_elf = False
    if is_elf:
        return path, ""
    fallback = "/usr/bin/python3"
    return fallback, f"{path} is a shim, not an interpreter; measured {fallback} instead"


def interpreter_of(script: Path | None) -> Interpreter:
    """Read the shebang of script (the lxss launcher)."""
    default = str(REPO / ".venv/bin/python3")
    if script is None:
        path, note = _real_python(default)
        return Interpreter(path, [], note or "lxss not found; the project's venv interpreter")
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError as exc:
        return Interpreter(default, [], f"cannot read {script}: {exc.strerror}")
    if not first.startswith(b"#!"):
        return Interpreter(default, [], f"{script} is not a script")
    words = first[2:].decode(errors="replace").split()
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if w != "-S"]
        if words:
            words[0] = shutil.which(words[0], path=PATH) or words[0]
    if not words:
        return Interpreter(default, [], f"{script} has an empty shebang")
    path, note = _real_python(words[0])
    return Interpreter(path, words[1:], note)


def _peer_pid(path: Path) -> int | None:
    """Pid of whoever listens on the service socket (SO_PEERCRED), if anyone."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(2.0)
    try:
        s.connect(str(path))
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", creds)
        return int(pid)
    except OSError:
        return None
    finally:
        s.close()


def _systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


class Lxss:
    """The lxss command, the service behind it, and the bench's distributions."""

    def __init__(self, path: Path | None, why_missing: str, work: Path) -> None:
        self.path = path
        self.why_missing = why_missing
        self.interpreter = interpreter_of(path)
        self.work = work
        self._distros: dict[str, str | None] = {}  # name -> None (ok) or why not
        self._created: list[str] = []
        if path is not None:
            breaker(str(path))

    @property
    def found(self) -> bool:
        return self.path is not None

    def argv(self, *args: str) -> list[str]:
        if self.path is None:
            raise Unavailable(self.why_missing)
        return [str(self.path), *args]

    def env(self, term: str | None = None) -> dict[str, str]:
        env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}
        if term:
            env["TERM"] = term
        return env

    def run(
        self,
        *args: str,
        timeout: float,
        stdin: int | IO[bytes] | None = None,
        capture: bool = False,
    ) -> Result:
        kw = {"stdin": stdin} if stdin is not None else {}
        return run(self.argv(*args), timeout=timeout, env=self.env(), capture=capture, **kw)  # type: ignore[arg-type]

    def must(self, *args: str, timeout: float) -> Result:
        res = self.run(*args, timeout=timeout)
        if not res.ok:
            raise Unavailable(f"`lxss {' '.join(args)}`: {res.why()}")
        return res

    # Distributions -------------------------------------------------------

    def distro(
        self, name: str, *, tarball: Path, builtin: str | None = None, version: int | None = None
    ) -> str:
        """Make sure the bench distribution `name` exists; its name, or Unavailable.

        A failure is remembered, so each figure reports the same first error
        instead of retrying a broken install dozens of times.
        """
        if name in self._distros:
            why = self._distros[name]
            if why is not None:
                raise Unavailable(why)
            return name
        try:
            self._create(name, tarball, builtin, version)
        except Unavailable as exc:
            self._distros[name] = str(exc)
            raise
        self._distros[name] = None
        return name

    def _create(self, name: str, tarball: Path, builtin: str | None, version: int | None) -> None:
        self.argv()  # raises if lxss is missing
        self.run("--unregister", name, timeout=120)  # a leftover from a killed run
        errors: list[str] = []
        if builtin:
            for extra in (["--no-launch"], []):
                args = ["--install", builtin, "--name", name, *extra]
                res = self.run(*args, timeout=600)
                if res.ok:
                    self._created.append(name)
                    return
                errors.append(f"`lxss {' '.join(args)}`: {res.why()}")
        where = self.work / "distros" / name
        where.mkdir(parents=True, exist_ok=True)
        args = ["--import", name, str(where), str(tarball)]
        if version is not None:
            args += ["--version", str(version)]
        res = self.run(*args, timeout=900)
        if res.ok:
            self._created.append(name)
            return
        shown = " ".join(args).replace(str(where), "DIR").replace(str(tarball), "TARBALL")
        errors.append(f"`lxss {shown}`: {res.why()}")
        # Identical errors (lxss cannot start at all) are said once.
        reasons = {e.split("`: ", 1)[1] for e in errors}
        raise Unavailable(errors[-1] if len(reasons) == 1 else "; ".join(errors))

    def track(self, name: str) -> None:
        """A bench distribution created outside distro(): unregister it at the end."""
        if name not in self._created:
            self._created.append(name)

    def unregister(self, name: str) -> None:
        if name in self._created:
            self.run("--unregister", name, timeout=300)
            self._created.remove(name)
        self._distros.pop(name, None)
        shutil.rmtree(self.work / "distros" / name, ignore_errors=True)

    def terminate(self, name: str) -> None:
        self.must("--terminate", name, timeout=120)

    # The service ---------------------------------------------------------

    def service_pid(self) -> int | None:
        return _peer_pid(SOCKET)

    def stop_service(self) -> None:
        """Stop lxssd so that the next command finds no service running.

        Only a service under systemd, or one the bench's own commands started,
        is stopped; an lxssd someone else started is not the bench's to kill.
        The bench is a child subreaper, so an lxssd that `lxss` started on
        demand is the bench's descendant however it daemonized.
        """
        if self.path is None:
            raise Unavailable(self.why_missing)
        if _systemd():
            res = run(["systemctl", "stop", "lxssd.service"], timeout=60, capture=True)
            if not res.ok:
                raise Unavailable(f"systemctl stop lxssd.service: {res.why()}")
            return
        pid = self.service_pid()
        if pid is None:
            return
        if not _ours(pid):
            raise Unavailable(
                f"lxssd (pid {pid}) was not started by the bench and is not "
                "under systemd; the bench does not stop a service it did not "
                "start (stop it first to measure this figure)"
            )
        self.run("--shutdown", timeout=60)
        _stop_pid(pid)

    def close(self) -> None:
        """Unregister every bench distribution; stop the service if the bench started it
        (under systemd, socket activation stops nothing: the unit stays as it was)."""
        if self.path is None:
            return
        for name in list(self._created):
            self.unregister(name)
        pid = self.service_pid()
        if pid is not None and not _systemd() and _ours(pid):
            _stop_pid(pid)


def _ours(pid: int) -> bool:
    return pid != os.getpid() and pid in descendants(os.getpid())


def _stop_pid(pid: int) -> None:
    """SIGTERM, a bounded wait, SIGKILL; reaped if it was reparented to the bench."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break

        def gone() -> bool:
            reap_orphans()
            return process_state(pid) in (None, "Z")

        if wait_until(gone, timeout=grace):
            break
    reap_orphans()
