"""lxssd: the lxss service (WSL's wslservice), a root daemon serving io.lxss.Service.

    lxssd [--systemd] [--log-file PATH] [--debug]

Started by systemd (socket activation, `--systemd`) or on demand by `lxss`
when root runs it and no service answers. SIGTERM or SIGINT stops every
user's distributions and utility VM, then the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import socket
import sys

from lxss import __version__, sdnotify
from lxss.api.interface import INTERFACE_FILE
from lxss.api.server import Limits, VarlinkServer
from lxss.linux import cgroup
from lxss.service import registry
from lxss.service.handler import ServiceHandler
from lxss.service.registry import Registry
from lxss.service.settings import Settings
from lxss.vm import backends

log = logging.getLogger("lxssd")

USAGE = """\
Usage: lxssd [--systemd] [--log-file PATH] [--debug]

Options:
  --systemd                       take the listening socket from systemd (socket activation)
                                  and report readiness to it
  --log-file PATH                 log to PATH (else stderr, which is the journal under systemd)
  --debug                         log at debug level (LXSS_LOG_LEVEL sets any level)
  -h, --help                      show this help
"""

DESCRIPTOR_LIMIT = 65536
START_TIMEOUT = 60.0  # for the service to become ready, as its foreground parent waits


class _JournalFormatter(logging.Formatter):
    """`<N>` syslog priority prefixes, which journald reads from a service's stderr."""

    _PRIORITY = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
        logging.CRITICAL: 2,
    }  # fmt: skip

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def _configure_logging(debug: bool, log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    elif os.environ.get("JOURNAL_STREAM"):
        handler = logging.StreamHandler()
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("lxssd: %(levelname)s %(name)s: %(message)s"))
    level = os.environ.get("LXSS_LOG_LEVEL", "DEBUG" if debug else "INFO").upper()
    logging.basicConfig(level=level, handlers=[handler])


def _listening_socket(settings: Settings, systemd: bool) -> socket.socket:
    if systemd and os.environ.get("LISTEN_PID") == str(os.getpid()):
        if int(os.environ.get("LISTEN_FDS", "0")) < 1:
            raise RuntimeError("started with --systemd but systemd passed no socket")
        sock = socket.socket(fileno=3)
        sock.set_inheritable(False)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.socket_path)
        # Bound under a tight umask, opened up only once it is ours, then listened on.
        old = os.umask(0o177)
        try:
            sock.bind(settings.socket_path)
        finally:
            os.umask(old)
        os.chmod(settings.socket_path, 0o666)  # every user talks to us; SO_PEERCRED says who
        sock.listen(128)
    sock.setblocking(False)
    return sock


# sd_notify(3)'s socket: systemd's, that of the `lxss` command that started us on demand,
# or our own foreground parent's (see _detach). Taken out of the environment at start, so
# that no process of the service (a utility VM, say) inherits it.
_notify_address: str | None = None


def _notify_systemd(state: str) -> None:
    sdnotify.send(_notify_address, state)


def _has_controlling_terminal() -> bool:
    with open("/proc/self/stat", encoding="ascii") as f:
        return int(f.read().rpartition(") ")[2].split()[4]) != 0  # field 7, tty_nr


def _detach(settings: Settings, log_file: str | None) -> str | None:
    """Leave the terminal we may have been started from, whoever started us; the log
    file to use (None: keep stderr, a file or systemd's journal).

    A terminal kept as our controlling terminal would be every distribution's too: its
    `[boot] command` could push keystrokes into the admin's root shell (TIOCSTI) or read
    what they type. So unless we already lead a session of our own without a terminal (as
    systemd, `lxss` on demand and the test harness start us), we fork: the child starts a
    new session (which has no controlling terminal) and serves; the parent, still in the
    admin's foreground, waits for its READY=1 and exits, saying where the service logs.
    """
    if os.getsid(0) != os.getpid() or _has_controlling_terminal():
        log_file = log_file or os.path.join(settings.runtime_dir, "lxssd.log")
        notify, address = sdnotify.listener()
        pid = os.fork()
        if pid == 0:
            notify.close()
            os.setsid()
            global _notify_address
            _notify_address = address
        else:
            try:
                code = sdnotify.wait_ready(notify, pid, START_TIMEOUT)
            except TimeoutError as e:
                print(f"lxssd: not ready yet ({e}); see {log_file}", file=sys.stderr)
                os._exit(1)
            if code is None:
                print(f"lxssd: serving as pid {pid}; log: {log_file}", file=sys.stderr)
            else:
                print(f"lxssd: stopped as it started; see {log_file}", file=sys.stderr)
            os._exit(code or 0)  # the child's, not ours to unwind: nothing else runs here
    # No standard stream stays on a terminal: stdin is /dev/null, stdout and stderr the log.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    if log_file is None and (os.isatty(1) or os.isatty(2)):
        log_file = os.path.join(settings.runtime_dir, "lxssd.log")
    if log_file is not None:
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    return log_file


def _raise_descriptor_limit() -> None:
    """At least DESCRIPTOR_LIMIT open files (or the hard limit, where that cannot be raised:
    a container without CAP_SYS_RESOURCE), however we were started (systemd's unit says so
    too; a root shell's limit is often 1024): each client connection, VM and launch holds
    some, and a service out of them refuses everyone. Our children do not keep it
    (lxss.vm.nsboot lowers the soft limit again for distributions)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= DESCRIPTOR_LIMIT:
        return
    for wanted in ((DESCRIPTOR_LIMIT, max(hard, DESCRIPTOR_LIMIT)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, wanted)
            break
        except (OSError, ValueError) as e:
            error = e
    else:
        log.warning("cannot raise the open file limit from %d: %s", soft, error)
        return
    if wanted[0] < DESCRIPTOR_LIMIT:
        log.warning("open file limit %d (the hard limit; %d wanted)", wanted[0], DESCRIPTOR_LIMIT)


def _acquire_instance_lock(settings: Settings) -> int:
    fd = os.open(settings.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit("lxssd: another lxssd is already running") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def _recover(handler: ServiceHandler, db: Registry) -> None:
    for state in (registry.INSTALLING, registry.UNINSTALLING):
        for distribution in db.all_in_state(state):
            await handler.session_for(distribution.owner_uid).recover(distribution)


async def serve(settings: Settings, systemd: bool) -> None:
    os.makedirs(settings.state_dir, 0o755, exist_ok=True)
    db = Registry(settings.registry_path)
    os.chmod(settings.registry_path, 0o600)
    context = backends.BackendContext(
        cgroup_layout=cgroup.Layout.detect(),
        cgroup_root=settings.cgroup_name,
        runtime_dir=settings.runtime_dir,
        state_dir=settings.state_dir,
        host_resolv_conf=settings.host_resolv_conf,
    )
    vm_backends = backends.load(context)
    handler = ServiceHandler(db, settings, vm_backends)
    vm_backends.recover()
    await _recover(handler, db)
    with open(INTERFACE_FILE, encoding="utf-8") as f:
        interface = f.read()
    timeout = settings.connection_timeout
    limits = Limits(idle_timeout=timeout, message_timeout=timeout / 2)
    server = VarlinkServer(interface, handler, "lxss", "lxssd", __version__, limits)
    server.owner_of = handler.owner_of
    listener = _listening_socket(settings, systemd)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = loop.create_task(server.serve(listener))
    log.info("lxssd %s serving on %s", __version__, settings.socket_path)
    _notify_systemd("READY=1")
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        _notify_systemd("STOPPING=1")
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        for session in list(handler.sessions.values()):
            with contextlib.suppress(Exception):
                await session.runtime.shutdown(force=False)
        vm_backends.close()
        listener.close()
        if not systemd:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(settings.socket_path)
        db.close()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    systemd = debug = False
    log_file = None
    while args:
        arg = args.pop(0)
        if arg == "--systemd":
            systemd = True
        elif arg == "--debug":
            debug = True
        elif arg == "--log-file" and args:
            log_file = args.pop(0)
        elif arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        else:
            sys.stderr.write(f"lxssd: unknown argument {arg!r}\n{USAGE}")
            return 2
    if os.geteuid() != 0:
        print("lxssd: must run as root (it starts each user's distributions)", file=sys.stderr)
        return 1
    global _notify_address
    _notify_address = os.environ.pop("NOTIFY_SOCKET", None)
    os.umask(0o022)
    os.chdir("/")  # a daemon holds no directory busy (`lxss` may start us from anywhere)
    settings = Settings.from_environment()
    os.makedirs(settings.runtime_dir, 0o755, exist_ok=True)
    log_file = _detach(settings, log_file)
    _configure_logging(debug, log_file)
    _raise_descriptor_limit()
    lock = _acquire_instance_lock(settings)
    try:
        asyncio.run(serve(settings, systemd))
    except Exception:
        # Said in the log, which is where `lxss` (or systemd) sends whoever asks why.
        log.exception("lxssd cannot serve")
        return 1
    finally:
        os.close(lock)
    return 0
