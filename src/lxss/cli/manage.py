"""The management commands: --import, --export, --list, --unregister, ...

Files are opened here, with the caller's own rights, and only their
descriptors go to the service (as wsl.exe hands file handles to wslservice):
lxssd never opens a path a user names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from lxss.api.client import Client
from lxss.cli import streams
from lxss.cli.errors import CommandError
from lxss.cli.parse import Management
from lxss.cli.service import registered_distributions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LONG_CALL = 6 * 3600.0  # imports and exports of big trees on slow disks


def out(text: str) -> None:
    streams.write(text + "\n")


def warn(lines: list[str]) -> None:
    """Print the service's or a distribution's warnings, one escaped line each (they may
    come from a distribution's files); LXSS_DISABLE_WARNINGS=1 silences them, as
    WSL_DISABLE_WARNINGS does wsl.exe's."""
    if os.environ.get("LXSS_DISABLE_WARNINGS") == "1":
        return
    from lxss.text import one_line

    for line in lines:
        streams.say(f"lxss: warning: {one_line(line)}\n")


def parse_version(value: str | bool | None) -> int | None:
    """A --version value: 1, 2, or None when not given; CommandError for anything else."""
    if value is None:
        return None
    if value not in ("1", "2"):
        raise CommandError(f"invalid version '{value}': use 1 or 2")
    return int(str(value))


def open_archive(path: str) -> int:
    if path == "-":
        if 0 in streams.CLOSED:
            raise CommandError("cannot read an archive from standard input: it is closed")
        if os.isatty(0):
            raise CommandError("refusing to read an archive from a terminal; pipe one in")
        return os.dup(0)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CommandError(f"cannot open {path}: {e.strerror}") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise CommandError(f"{path} is a directory, not an archive")
    return fd


def _open_location(path: str) -> tuple[int, bool]:
    """Open (creating if needed) the install directory; returns (fd, created)."""
    created = False
    if not os.path.isdir(path):
        try:
            os.makedirs(path, 0o700)  # a distribution's files are its owner's business
            created = True
        except OSError as e:
            raise CommandError(f"cannot create {path}: {e.strerror}") from None
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), created
    except OSError as e:
        raise CommandError(f"cannot open {path}: {e.strerror}") from None


def register(
    client: Client,
    name: str,
    version: int | None,
    location: str | None,
    archive: str | None = None,
    builtin: str | None = None,
    for_uid: int | None = None,
    stream_fd: int | None = None,
    extra: dict[str, Any] | None = None,
    quiet: bool = True,
    first_run: bool = False,
    progress_fd: int | None = None,
) -> dict[str, Any]:
    """RegisterDistribution from the file *archive*, the built-in *builtin*, or the
    descriptor *stream_fd* (lent, the caller closes it) with *extra* parameters. Unless
    *quiet*, an *archive* that is a file shows the unpacking's progress. *first_run*: an
    install, whose first-run setup runs at its first shell (an import's does not).
    *progress_fd* (the write end of a pipe the caller reads) is lent too."""
    fds: list[int] = []
    created = False
    try:
        params: dict[str, Any] = {"name": name, "version": version, "forUid": for_uid}
        params.update(extra or {})
        if first_run:
            params["firstRun"] = True
        if archive is not None:
            fds.append(open_archive(archive))
            params["archive"] = 0
        elif stream_fd is not None:
            fds.append(os.dup(stream_fd))
            params["archive"] = 0
        else:
            params["builtin"] = builtin
        if location is not None:
            location_fd, created = _open_location(location)
            params["location"] = len(fds)
            fds.append(location_fd)
        sent = list(fds)
        if progress_fd is not None:
            params["progress"] = len(sent)
            sent.append(progress_fd)
        if archive is not None:
            from lxss.cli.lent_progress import LentFileProgress

            with LentFileProgress(fds[0], f"Importing {name}", reading=True, quiet=quiet):
                reply = client.call("RegisterDistribution", params, tuple(sent), timeout=LONG_CALL)
        else:
            reply = client.call("RegisterDistribution", params, tuple(sent), timeout=LONG_CALL)
    except BaseException:
        if created:
            try:
                os.rmdir(location or "")
            except OSError:
                pass  # not empty: it is not ours to clear
        raise
    finally:
        for fd in fds:
            os.close(fd)
    warn(reply.get("warnings", []))
    return reply


def import_in_place(
    client: Client, name: str, version: int | None, directory: str, for_uid: int | None
) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise CommandError(f"cannot open {directory}: {e.strerror}") from None
    params = {"name": name, "version": version, "location": 0, "inPlace": True, "forUid": for_uid}
    try:
        client.call("RegisterDistribution", params, (fd,), timeout=LONG_CALL)
    finally:
        os.close(fd)


def move(client: Client, name: str, directory: str, for_uid: int | None) -> None:
    """--manage NAME --move DIR: DIR is made (0700) if missing, and removed again if the
    move fails."""
    fd, created = _open_location(directory)
    try:
        reply = client.call("MoveDistribution", {"distribution": name, "location": 0,
                            "forUid": for_uid}, (fd,), timeout=LONG_CALL)  # fmt: skip
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    finally:
        os.close(fd)
    warn(reply.get("warnings", []))
    out(f"Moved '{name}' to {directory}.")


def _export_format(path: str, given: str | bool | None) -> str:
    if isinstance(given, str):
        return given
    for suffixes, name in (
        ((".tar.gz", ".tgz", ".wsl"), "tar.gz"),
        ((".tar.xz", ".txz"), "tar.xz"),
        ((".tar.zst", ".tzst"), "tar.zst"),
    ):
        if path.endswith(suffixes):
            return name
    return "tar"


class _Output:
    """The export's destination, opened as a shell's `>` would open it: through symbolic
    links, and straight into a FIFO or a device. A regular file (new or replaced) stays
    invisible until :meth:`commit`: an O_TMPFILE linked into place at the end, so a failed
    export leaves no partial file behind. Everything after the first step acts on the
    directory opened then, never on its path again: a parent swapped for a link while an
    export runs (root writing into a user's directory) is not followed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._temp: str | None = None
        self._dir_fd: int | None = None
        target = os.path.realpath(path)  # as `>` follows links, dangling ones included
        try:
            st: os.stat_result | None = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise CommandError(f"cannot write {path}: {e.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise CommandError(f"{path} is a directory; name a file to write")
        if st is not None and not stat.S_ISREG(st.st_mode):
            try:  # a FIFO, a terminal, a device: written in place, as `>` does
                self.fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CommandError(f"cannot write {path}: {e.strerror}") from None
            return
        directory, self._name = os.path.split(target)
        try:
            self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise CommandError(f"cannot write in {directory}: {e.strerror}") from None
        mode = 0o644 if st is None else stat.S_IMODE(st.st_mode)
        try:
            self.fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, mode,
                              dir_fd=self._dir_fd)  # fmt: skip
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE
                self.close()
                raise CommandError(f"cannot write in {directory}: {e.strerror}") from None
            self._temp = f".{self._name}.lxss-{os.getpid()}"
            try:
                self.fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                  mode, dir_fd=self._dir_fd)  # fmt: skip
            except OSError as e2:
                self._temp = None
                self.close()
                raise CommandError(f"cannot write in {directory}: {e2.strerror}") from None
        if st is not None:
            with contextlib.suppress(OSError):  # keep the replaced file's mode, as `>` does
                os.fchmod(self.fd, mode)

    def commit(self) -> None:
        if self._dir_fd is None:
            return  # written in place
        if self._temp is None:
            temp = f"{self._name}.lxss-{os.getpid()}"
            # linkat(AT_SYMLINK_FOLLOW) through /proc/self/fd gives an O_TMPFILE a name
            # (see open(2)); os.link only passes that flag when given a directory fd.
            proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(str(self.fd), temp, src_dir_fd=proc_fd, dst_dir_fd=self._dir_fd,
                        follow_symlinks=True)  # fmt: skip
            finally:
                os.close(proc_fd)
            self._temp = temp
        os.replace(self._temp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._temp = None

    def discard(self) -> None:
        if self._temp is not None and self._dir_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp, dir_fd=self._dir_fd)

    def close(self) -> None:
        if hasattr(self, "fd"):
            os.close(self.fd)
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def export(
    client: Client,
    name: str,
    path: str,
    fmt: str | bool | None,
    for_uid: int | None,
    quiet: bool = False,
) -> None:
    export_format = _export_format(path, fmt)
    params = {"distribution": name, "file": 0, "format": export_format, "forUid": for_uid}
    if path == "-":
        if 1 in streams.CLOSED:
            raise CommandError("cannot write to standard output: it is closed")
        if os.isatty(1):
            raise CommandError("refusing to write an archive to a terminal; redirect stdout")
        reply = client.call("ExportDistribution", params, (1,), timeout=LONG_CALL)
        warn(reply.get("warnings", []))
        return
    output = _Output(path)
    try:
        from lxss.cli.lent_progress import LentFileProgress

        with LentFileProgress(output.fd, f"Exporting {name}", reading=False, quiet=quiet):
            reply = client.call("ExportDistribution", params, (output.fd,), timeout=LONG_CALL)
        output.commit()
    except BaseException:
        output.discard()
        raise
    finally:
        output.close()
    warn(reply.get("warnings", []))
    out(f"Exported '{name}' to {path} ({export_format}).")


def list_distributions(client: Client, options: dict[str, str | bool], for_uid: int | None) -> int:
    verbose, quiet, running_only = (
        bool(options.get("--verbose")),
        bool(options.get("--quiet")),
        bool(options.get("--running")),
    )
    if verbose and quiet:
        raise CommandError("--verbose and --quiet cannot be combined")
    distributions = registered_distributions(client, for_uid)
    # The default first, then in the order they were registered (as WSL lists them).
    distributions.sort(key=lambda d: not d["isDefault"])
    if running_only:
        distributions = [d for d in distributions if d["state"] == "Running"]
    if not distributions:
        if quiet:
            return 0
        if running_only:
            raise CommandError("no distribution is running")
        raise CommandError("no distribution is installed; install one with: lxss --install busybox")
    if quiet:
        for d in distributions:
            out(d["name"])
    elif verbose:
        width = max(len("NAME"), *(len(d["name"]) for d in distributions))
        out(f"  {'NAME':<{width}}  {'STATE':<12}  VERSION")
        for d in distributions:
            mark = "*" if d["isDefault"] else " "
            out(f"{mark} {d['name']:<{width}}  {d['state']:<12}  {d['version']}")
    else:
        out("lxss distributions:")
        for d in distributions:
            out(f"{d['name']} (default)" if d["isDefault"] else d["name"])
    return 0


def status(client: Client, for_uid: int | None) -> int:
    reply = client.call("GetStatus", {"forUid": for_uid})
    version = client.call("GetVersion", {})
    default = reply.get("defaultDistribution")
    out(f"Default distribution: {default if default else '(none)'}")
    out(f"Default version: {reply['defaultVersion']}")
    out(f"Utility VM: {'running' if reply['vmRunning'] else 'stopped'}")
    running = reply.get("running") or []
    out(f"Running distributions: {', '.join(running) if running else '(none)'}")
    out(f"Versions available: {', '.join(reply.get('backends') or [])}")
    _network_status(reply.get("network") or {})
    out(f"lxssd {version['version']} on Linux {version['kernel']}")
    return 0


def _network_status(network: dict[str, object]) -> None:
    if not network.get("mode"):
        return
    line = f"Networking mode: {network['mode']}"
    if network.get("network"):
        line += f" ({network['network']}: host {network['gateway']}, VM {network['address']})"
    out(line)
    forwarded = network.get("forwardedPorts")
    if isinstance(forwarded, list):
        out(f"Forwarded ports: {', '.join(map(str, forwarded)) if forwarded else '(none)'}")
    refused_ports = network.get("refusedPorts")
    for refused in refused_ports if isinstance(refused_ports, list) else []:
        out(f"Not forwarded: {refused}")


def _registered_name(client: Client, name_or_guid: str, for_uid: int | None) -> str:
    """The name a distribution is registered under (the user may give another case or its
    GUID), for what lxss keeps beside it by name, such as its desktop shortcut."""
    key = name_or_guid.strip("{}").lower()
    for d in registered_distributions(client, for_uid):
        if key in (str(d["name"]).lower(), str(d["guid"]).lower()):
            return str(d["name"])
    return name_or_guid


def run(client: Client, request: Management, for_uid: int | None) -> int:
    """Carry out a management action other than help, version and install."""
    action, args, options = request.action, request.args, request.options
    if action == "list":
        return list_distributions(client, options, for_uid)
    if action == "status":
        return status(client, for_uid)
    if action == "import":
        name, location, archive = args
        version = parse_version(options.get("--version"))
        from lxss.cli.image import import_archive, sniff_image_archive

        kind = sniff_image_archive(archive)
        if kind is not None:  # a container image archive, not a root file system's tar
            import_archive(client, kind, archive, name, version, location, for_uid)
        else:
            quiet = bool(options.get("--quiet"))
            register(client, name, version, location, archive=archive, for_uid=for_uid,
                     quiet=quiet)  # fmt: skip
        out(f"Imported '{name}'.")
    elif action == "import-in-place":
        name, directory = args
        import_in_place(client, name, parse_version(options.get("--version")), directory, for_uid)
        out(f"Registered '{name}' in place at {directory}.")
    elif action == "export":
        export(client, args[0], args[1], options.get("--format"), for_uid,
               quiet=bool(options.get("--quiet")))  # fmt: skip
    elif action == "unregister":
        name = _registered_name(client, args[0], for_uid)
        reply = client.call("UnregisterDistribution", {"distribution": args[0],
                            "forUid": for_uid}, timeout=LONG_CALL)  # fmt: skip
        warn(reply.get("warnings", []))
        if for_uid is None:
            from lxss.cli import shortcut

            shortcut.remove(name)
        out(f"Unregistered '{args[0]}'.")
    elif action == "set-default":
        client.call("SetDefaultDistribution", {"distribution": args[0], "forUid": for_uid})
        out(f"'{args[0]}' is now the default distribution.")
    elif action == "set-default-version":
        version = parse_version(args[0])
        client.call("SetDefaultVersion", {"version": version, "forUid": for_uid})
        out(f"New distributions will use version {version}.")
    elif action == "terminate":
        client.call("TerminateDistribution", {"distribution": args[0], "forUid": for_uid},
                    timeout=120.0)  # fmt: skip
    elif action == "shutdown":
        client.call("Shutdown", {"force": bool(options.get("--force")), "forUid": for_uid},
                    timeout=120.0)  # fmt: skip
    else:
        raise CommandError(f"{action} is not available yet")
    return 0
