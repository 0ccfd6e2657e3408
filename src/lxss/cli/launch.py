"""Running a program in a distribution: the client end of stdio, terminal and control.

Streams that are pipes or files are handed to the program itself (their fds
travel to it with SCM_RIGHTS): nothing is copied, the program reads and writes
at the kernel's speed. Streams that are terminals are served by a pty inside
the distribution; this process copies between it (over the "console" socket)
and the caller's terminal, which it puts in raw mode so that ^C, ^Z and
friends reach the program's line discipline, and restores on every way out.

The control socket carries window-size changes and forwarded signals to the
relay, and the program's exit status back (WSL's ExitStatus, echoed as an
acknowledgement). If this process is killed, a program on pipes keeps running
(the distribution stays up while it does, as in WSL); a program on a pty gets
SIGHUP, as when a terminal closes.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal would import enum: ~2 ms
import _socket
import fcntl
import os
import termios
import time

from lxss import readiness
from lxss.api import wire
from lxss.cli import interop, streams
from lxss.cli.errors import CommandError
from lxss.cli.manage import warn
from lxss.cli.parse import Launch
from lxss.cli.service import connect, lxss_argv
from lxss.protocol import control
from lxss.text import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FAILURE = 255
FORWARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)
CREATE_TIMEOUT = 180.0  # a version 2 VM boots under TCG in tens of seconds
DRAIN_TIMEOUT = 5.0
PASSED_ENVIRONMENT = ("TERM", "COLORTERM")


class LaunchError(CommandError):
    pass


def _window_size(fd: int) -> tuple[int, int]:
    try:
        raw = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return 24, 80
    rows, columns = int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[2:4], "little")
    return (rows or 24), (columns or 80)


def _join_command(words: list[str]) -> str:
    """One shell command line from argv words (WSL passes its raw command line).

    A single word is the command text itself. With several, words holding
    blanks, quotes or backslashes (or empty ones) are single-quoted, so
    `lxss -- echo "a  b"` keeps its spaces and `lxss -- echo "it's"` its quote,
    while `$VAR`, `|`, `*` and friends stay for the shell.
    """
    if len(words) == 1:
        return words[0]
    quoted = []
    for word in words:
        if word == "" or any(c in word for c in " \t\n'\"\\"):
            quoted.append("'" + word.replace("'", "'\\''") + "'")
        else:
            quoted.append(word)
    return " ".join(quoted)


# The kernel's limit for one argv or environment string (MAX_ARG_STRLEN, 32 pages).
MAX_ARG_STRLEN = 32 * os.sysconf("SC_PAGE_SIZE")
POINTER_SIZE = 8  # the kernel counts a pointer per string as well


def _check_argument_list(command_line: list[str], environment: list[str]) -> None:
    """Refuse, before anything starts, an argument list the distribution's exec would refuse
    (E2BIG): a string over MAX_ARG_STRLEN (the shell form joins its words into one), or
    strings over ARG_MAX all told, or a call larger than lxssd accepts."""
    total = 0
    for word in (*command_line, *environment):
        size = len(os.fsencode(word)) + 1
        if size > MAX_ARG_STRLEN:
            raise LaunchError(
                f"the argument list is too long: one argument is {size - 1} bytes, and Linux "
                f"takes at most {MAX_ARG_STRLEN - 1} (a shell command line counts as one)"
            )
        total += size + POINTER_SIZE
    limit = os.sysconf("SC_ARG_MAX")
    if total > limit:
        raise LaunchError(
            f"the argument list is too long: {total} bytes, and Linux takes at most {limit}"
        )
    if total > wire.MAX_MESSAGE // 6:  # JSON writes a byte in 6 at most: else it fits
        encoded = len(wire.dumps({"commandLine": command_line, "environment": environment}))
        if encoded > wire.MAX_MESSAGE - 65536:  # room for the call's other parameters
            raise LaunchError(
                f"the argument list is too long: {encoded} bytes as a call to lxssd, which "
                f"takes at most {wire.MAX_MESSAGE - 65536}"
            )


def _environment() -> list[str]:
    """TERM and friends, LXSSENV, and what LXSSENV sends into the distribution (its /p and
    /l translation is the guest's: only the guest knows where the host is mounted)."""
    names = list(PASSED_ENVIRONMENT)
    listed = os.environ.get("LXSSENV")
    if listed is not None:
        names.append("LXSSENV")
        for item in listed.split(":"):
            name, _, flags = item.partition("/")
            only_host = "w" in flags and "u" not in flags
            if name and name not in names and not only_host and not flags.strip("plwu"):
                names.append(name)
    passed = [f"{n}={os.environ[n]}" for n in names if n in os.environ]
    # For [interop] appendWindowsPath: the relay makes host-NAME shims of it (never exported).
    return [*passed, f"LXSS_HOST_PATH={os.environ.get('PATH', os.defpath)}"]


def _parameters(request: Launch, ttys: list[bool], for_uid: int | None) -> dict[str, Any]:
    words = request.command
    filename: str | None = None
    if request.exec_mode or (request.shell_type == "none" and words):
        filename, command_line, shell_type = words[0], words, "none"
    elif words:
        command_line, shell_type = [_join_command(words)], request.shell_type or "standard"
    else:
        command_line, shell_type = [], request.shell_type or "login"
    try:
        host_cwd: str | None = os.getcwd()
    except OSError:
        host_cwd = None
    _check_argument_list(command_line, environment := _environment())
    if request.cwd is not None and not request.cwd.startswith(("/", "~")):
        raise LaunchError(f"--cd {request.cwd}: give an absolute path in the distribution, or ~")
    rows, columns = 24, 80
    for fd, is_tty in enumerate(ttys):
        if is_tty:
            rows, columns = _window_size(fd)
            break
    return {
        "distribution": request.distribution,
        "filename": filename,
        "commandLine": command_line,
        "cwd": request.cwd,
        "hostCwd": host_cwd,
        "username": request.user,
        "shellType": shell_type,
        "environment": environment,
        "rows": rows,
        "columns": columns,
        "consoleId": os.getsid(0),
        "forUid": for_uid,
    }


class _Terminal:
    """The caller's terminal in raw mode; restore() puts it back as it was."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)
        raw = termios.tcgetattr(fd)
        # cfmakeraw(3), spelled out: the tty module would cost an import.
        raw[0] &= ~(
            termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
            | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
        )  # fmt: skip
        raw[1] &= ~termios.OPOST
        raw[2] &= ~(termios.CSIZE | termios.PARENB)
        raw[2] |= termios.CS8
        raw[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        raw[6][termios.VMIN] = 1
        raw[6][termios.VTIME] = 0
        # TCSANOW, not TCSAFLUSH: keys typed or pasted while the program was starting are
        # the program's (ssh keeps them too); a flush would throw them away.
        termios.tcsetattr(fd, termios.TCSANOW, raw)

    def restore(self) -> None:
        # TCSADRAIN: what the program wrote is shown first; what was typed meanwhile stays
        # for the caller's shell.
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class _Signals:
    """Signals as bytes on a pipe, read by the event loop (a handler only records)."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = _signal.set_wakeup_fd(self.write_fd)
        self._saved = {sig: _signal.signal(sig, self._record) for sig in signals}

    @staticmethod
    def _record(signum: int, frame: object) -> None:
        pass  # the wakeup fd already carries the signal number

    def pending(self) -> list[int]:
        try:
            return list(os.read(self.read_fd, 64))
        except BlockingIOError:
            return []

    def close(self) -> None:
        for sig, handler in self._saved.items():
            _signal.signal(sig, handler)
        _signal.set_wakeup_fd(self._previous)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            readiness.ready((), (fd,))


class _Session:
    """The event loop of one launched program."""

    def __init__(self, ttys: list[bool], control_sock: Any, console_sock: Any | None) -> None:
        self.ttys = ttys
        self.control = control_sock
        self.console = console_sock
        self.reader = control.Reader()
        self.writer = control.Writer()
        self.exit_code: int | None = None
        self.console_open = console_sock is not None
        self.stdin_open = console_sock is not None and ttys[0]
        self.output_fd = 1 if ttys[1] else 2
        self.fds: list[int] = []  # received on the control channel, not yet used

    def send(self, frame: bytes) -> None:
        try:
            self.control.sendall(frame)
        except OSError:
            pass  # the relay is gone; its exit status (or absence) decides

    def on_signal(self, signum: int) -> None:
        if signum == _signal.SIGWINCH:
            fd = next(i for i, t in enumerate(self.ttys) if t)
            self.send(self.writer.window_size(*_window_size(fd)))
        else:
            self.send(self.writer.signal(signum))

    def on_control(self) -> bool:
        data, fds = interop.receive(self.control)
        self.fds += fds
        if not data:
            return False
        try:
            codes = self.reader.feed(data)
        except control.ControlError as e:
            raise LaunchError(f"the relay sent a malformed control message ({e})") from None
        for code in codes:
            self.exit_code = code
            self.send(self.writer.exit_status(code))  # the acknowledgement WSL's relay waits for
        # Each InteropConnection came with its connection (the first of the fds received).
        interop.reap()
        while self.reader.connections and self.fds:
            frame = self.reader.connections.pop(0)
            interop.serve_connection(self.fds.pop(0), control.interop_host_mount(frame))
        self.reader.connections.clear()
        return True

    def on_console(self) -> None:
        assert self.console is not None
        data = self.console.recv(65536)
        if not data:
            self.console_open = False
            return
        _write_all(self.output_fd, data)

    def on_stdin(self) -> None:
        assert self.console is not None
        data = os.read(0, 65536)
        if not data:
            self.stdin_open = False
            self.console.shutdown(_socket.SHUT_WR)
            return
        self.console.sendall(data)

    def run(self, signals: _Signals) -> int:
        control_open = True
        deadline: float | None = None
        while True:
            if self.exit_code is not None and not self.console_open:
                return self.exit_code
            if not control_open and self.exit_code is None:
                raise LaunchError("the distribution stopped before the program's exit status came")
            watch = [signals.read_fd]
            if control_open:
                watch.append(self.control.fileno())
            if self.console_open and self.console is not None:
                watch.append(self.console.fileno())
            if self.stdin_open and self.exit_code is None:
                watch.append(0)
            timeout = None
            if self.exit_code is not None:
                # The program is done; what is left of its output is on its way.
                deadline = deadline or time.monotonic() + DRAIN_TIMEOUT
                timeout = max(0.0, deadline - time.monotonic())
                if timeout == 0.0:
                    return self.exit_code
            try:
                ready, _ = readiness.ready(watch, (), timeout)
            except InterruptedError:
                continue
            for fd in ready:
                if fd == signals.read_fd:
                    for signum in signals.pending():
                        self.on_signal(signum)
                elif fd == 0:
                    self.on_stdin()
                elif self.console is not None and fd == self.console.fileno():
                    self.on_console()
                elif fd == self.control.fileno() and not self.on_control():
                    control_open = False


def launch(request: Launch, for_uid: int | None) -> int:
    ttys = [os.isatty(fd) for fd in (0, 1, 2)]
    console = any(ttys)
    params = _parameters(request, ttys, for_uid)
    family, kind = _socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC
    control_sock, control_remote = _socket.socketpair(family, kind)
    console_sock = console_remote = None
    fds = [control_remote.fileno()]
    params["control"] = 0
    if console:
        console_sock, console_remote = _socket.socketpair(family, kind)
        params["console"] = len(fds)
        fds.append(console_remote.fileno())
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        if fd in streams.CLOSED:
            params.setdefault("closed", []).append(name)
        elif not ttys[fd]:
            params[name] = len(fds)
            fds.append(fd)
    client = connect()
    terminal = None
    signals = None
    # lxss-host, before the program can start: the client may be killed at any moment after.
    guardian = interop.start_guardian(control_sock.fileno())
    try:
        reply = client.call("CreateLxProcess", params, tuple(fds), timeout=CREATE_TIMEOUT)
        control_remote.close()
        if console_remote is not None:
            console_remote.close()
        warn(reply.get("warnings", []))
        wanted = FORWARDED_SIGNALS + ((_signal.SIGWINCH,) if console else ())
        signals = _Signals(wanted)
        if ttys[0]:
            terminal = _Terminal(0)
        return _Session(ttys, control_sock, console_sock).run(signals)
    except LaunchError as e:
        streams.say(f"lxss: {one_line(str(e))}\n")
        return FAILURE
    finally:
        if terminal is not None:
            terminal.restore()
        if signals is not None:
            signals.close()
        if guardian is not None:
            os.close(guardian)
        control_sock.close()
        if console_sock is not None:
            console_sock.close()
        client.close()


def debug_shell(for_uid: int | None) -> int:
    """--debug-shell: a shell in the utility VM, outside every distribution, on this
    terminal (root only, as in WSL); its exit status."""
    if os.geteuid() != 0:
        raise LaunchError(
            "--debug-shell is for root only: it opens a shell in the utility VM, outside "
            "every distribution (run it as root, with --for-user USER for another's VM)"
        )
    if streams.CLOSED:
        raise LaunchError("--debug-shell needs stdin, stdout and stderr open")
    params = {"stdin": 0, "stdout": 1, "stderr": 2, "term": os.environ.get("TERM"),
              "forUid": for_uid}  # fmt: skip
    # The shell has the terminal; ^C and ^\ typed there must not end this call (and so it).
    saved = {sig: _signal.signal(sig, _signal.SIG_IGN) for sig in (_signal.SIGINT, _signal.SIGQUIT)}
    try:
        with connect() as client:
            reply = client.call("DebugShell", params, (0, 1, 2), timeout=None)
    finally:
        for sig, handler in saved.items():
            _signal.signal(sig, handler)
    return int(reply["exitCode"])


def lookup_uid(distribution: str, user: str, for_uid: int | None) -> int:
    """The uid of *user* in *distribution*, asked of the distribution itself (`id -u`)."""
    import subprocess

    owner = ["--for-user", str(for_uid)] if for_uid is not None else []
    argv = [*lxss_argv(), *owner, "-d", distribution, "-u", "root", "-e", "id", "-u", "--", user]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        detail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise LaunchError(f"cannot find user '{user}' in '{distribution}': {detail[0]}")
    return int(result.stdout.strip())
