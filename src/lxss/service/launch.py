"""A CreateLxProcess request as the runtime sees it: typed, with its descriptors.

The handler turns the Varlink call into a LaunchRequest and LaunchFds (the runtime never
sees the transport); this module turns those into the guest's InitCreateProcess.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from lxss.api import errors
from lxss.protocol import messages as m

STREAM_NAMES: Final = ("stdin", "stdout", "stderr")
MAX_WARNINGS: Final = 50  # a start's warnings passed on to the user; the rest are counted
MAX_WARNING_LENGTH: Final = 1000


@dataclass(frozen=True)
class LaunchRequest:
    """What to run and how (CreateLxProcess's parameters, checked by the Varlink server)."""

    filename: str | None
    command_line: tuple[str, ...]
    environment: tuple[str, ...]
    cwd: str | None
    host_cwd: str | None
    username: str | None
    login_shell: bool
    rows: int
    columns: int
    console_id: int
    closed: tuple[str, ...] = ()

    @classmethod
    def from_parameters(cls, p: Mapping[str, Any]) -> LaunchRequest:
        return cls(
            filename=p.get("filename"),
            command_line=tuple(p["commandLine"]),
            environment=tuple(p["environment"]),
            cwd=p.get("cwd"),
            host_cwd=p.get("hostCwd"),
            username=p.get("username"),
            login_shell=p["shellType"] == "login",
            rows=max(1, min(p["rows"], 0xFFFF)),
            columns=max(1, min(p["columns"], 0xFFFF)),
            console_id=p["consoleId"],
            closed=tuple(p.get("closed") or ()),
        )

    @property
    def interactive_shell(self) -> bool:
        """A shell with no command given (WSL: no filename and no command line)."""
        return self.filename is None and not self.command_line


@dataclass
class LaunchFds:
    """The caller's descriptors for one launch; whoever holds this object owns them."""

    control: int | None = None
    console: int | None = None
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None

    def stream(self, name: str) -> int | None:
        value: int | None = getattr(self, name)
        return value

    def dup(self) -> LaunchFds:
        """Copies of every descriptor (the caller owns them)."""
        return LaunchFds(**{f.name: _dup(getattr(self, f.name)) for f in fields(self)})

    def close(self) -> None:
        """Close every descriptor held (idempotent)."""
        for f in fields(self):
            fd = getattr(self, f.name)
            if fd is not None:
                setattr(self, f.name, None)
                os.close(fd)


def _dup(fd: int | None) -> int | None:
    return None if fd is None else os.dup(fd)


_STREAMS: Final = (
    ("stdin", m.InitCreateProcess.STDIN_CONSOLE, m.InitCreateProcess.STDIN_CLOSED),
    ("stdout", m.InitCreateProcess.STDOUT_CONSOLE, m.InitCreateProcess.STDOUT_CLOSED),
    ("stderr", m.InitCreateProcess.STDERR_CONSOLE, m.InitCreateProcess.STDERR_CLOSED),
)


def stream_flags(fds: LaunchFds, closed: tuple[str, ...]) -> int:
    """InitCreateProcess's stream flags: each stream the caller closed is closed, each other
    one without an fd is served by the console."""
    unknown = set(closed) - set(STREAM_NAMES)
    if unknown:
        raise errors.InvalidArgument(parameter="closed", reason=f"not a stream: {min(unknown)}")
    flags = 0
    for name, console, closed_flag in _STREAMS:
        if name in closed:
            if fds.stream(name) is not None:
                raise errors.InvalidArgument(parameter="closed", reason=f"{name} has an fd")
            flags |= closed_flag
        elif fds.stream(name) is None:
            flags |= console
    return flags


def check_fds(request: LaunchRequest, fds: LaunchFds) -> int:
    """The launch's stream flags, once its descriptors are what they must be (a console fd
    not needed is closed here)."""
    if fds.control is None:
        raise errors.InvalidParameter(parameter="control")
    flags = stream_flags(fds, request.closed)
    if flags & m.InitCreateProcess.CONSOLE_FLAGS and fds.console is None:
        raise errors.InvalidArgument(
            parameter="console", reason="needed for every stream not passed as an fd"
        )
    if not flags & m.InitCreateProcess.CONSOLE_FLAGS and fds.console is not None:
        os.close(fds.console)
        fds.console = None
    return flags


def process_message(
    request: LaunchRequest, flags: int, default_uid: int, name: str
) -> m.InitCreateProcess:
    return m.InitCreateProcess(
        rows=request.rows,
        columns=request.columns,
        flags=flags,
        shell_options=m.InitCreateProcess.SHELL_LOGIN if request.login_shell else 0,
        default_uid=default_uid,
        filename=request.filename,
        cwd=request.cwd,
        username=request.username,
        command_line=request.command_line,
        environment=request.environment,
        distribution_name=name,
        host_cwd=request.host_cwd,
    )


def check_encodable(request: LaunchRequest, flags: int) -> None:
    """Strings the guest framing cannot carry (NUL; a surrogate that is not a byte's
    escape, see the interface file) are the caller's error."""
    try:
        m.encode(process_message(request, flags, 0, ""))
    except ValueError as e:
        raise errors.InvalidArgument(parameter="commandLine", reason=str(e)) from None


def bounded_warnings(warnings: list[str]) -> list[str]:
    """A distribution start's warnings as the user gets them: they come from files the
    distribution's root writes (/etc/wsl.conf), so their number and length are bounded."""
    kept = [w if len(w) <= MAX_WARNING_LENGTH else w[:MAX_WARNING_LENGTH] + "..."
            for w in warnings[:MAX_WARNINGS]]  # fmt: skip
    if len(warnings) > MAX_WARNINGS:
        kept.append(f"... and {len(warnings) - MAX_WARNINGS} more warnings like these")
    return kept
