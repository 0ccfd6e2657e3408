"""--install: from a source (a catalog name, a built-in, a file, ...) to a registered
distribution, then its shell; and --manage.

What `lxss --install SOURCE` does is chosen by `INSTALLERS`, a table from the form of SOURCE
to the function that installs it, named as "module:function" so that only the chosen one is
imported (the client stays lean). The first row that matches wins; a SOURCE no row matches
is a name in the distribution catalog (lxss.cli.catalog_install), the way `wsl --install NAME`
reads it, and no SOURCE at all is the catalog's Default. `--from-file FILE` installs a local
image and takes no SOURCE.

An installer gets the SOURCE as typed and an `InstallTarget` (the name, location and version
the user asked for, each None when not given), registers the distribution, and returns the
name it registered. On failure it raises, leaving nothing registered and no partial files.
"""

from __future__ import annotations

import os
import sys

from lxss.cli import manage as commands
from lxss.cli import streams
from lxss.cli.errors import CommandError
from lxss.cli.parse import Launch, Management, UsageError
from lxss.cli.service import connect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Installer = Callable[[str, "InstallTarget"], str]

# (SOURCE as typed: a name, or a prefix ending in "*"; installer; how --help and errors show it)
INSTALLERS: tuple[tuple[str, str, str], ...] = (
    ("busybox", "lxss.cli.install:install_builtin", "busybox"),
    # Container images, in skopeo's transport names (lxss.oci.reference).
    ("docker://*", "lxss.cli.image:install_image", "docker://IMAGE"),
    ("oci:*", "lxss.cli.image:install_image", "oci:DIR[:TAG]"),
    ("oci-archive:*", "lxss.cli.image:install_image", "oci-archive:FILE"),
    ("docker-archive:*", "lxss.cli.image:install_image", "docker-archive:FILE"),
    # Refused with the reason (and what to do instead); not shown as installable.
    ("containers-storage:*", "lxss.cli.image:install_image", ""),
    ("docker-daemon:*", "lxss.cli.image:install_image", ""),
    # Built by the service with debootstrap from the machine's apt mirror.
    ("debian", "lxss.cli.install:install_built", "debian"),
    ("debian:*", "lxss.cli.install:install_built", "debian:SUITE"),
    ("ubuntu", "lxss.cli.install:install_built", "ubuntu"),
    ("ubuntu:*", "lxss.cli.install:install_built", "ubuntu:SUITE"),
)
FROM_FILE = "lxss.cli.install:install_file"  # --from-file FILE
CATALOG = "lxss.cli.catalog_install:install_from_catalog"  # any other SOURCE, and none


class InstallTarget:
    """How the user wants the new distribution registered (None: the installer's default)."""

    __slots__ = ("for_uid", "location", "name", "quiet", "version")

    def __init__(
        self,
        name: str | None,
        location: str | None,
        version: int | None,
        for_uid: int | None,
        quiet: bool = False,
    ) -> None:
        self.name = name
        self.location = location
        self.version = version
        self.for_uid = for_uid
        self.quiet = quiet  # no progress output (-q)

    def register(
        self,
        default_name: str,
        archive: str | None = None,
        builtin: str | None = None,
        stream_fd: int | None = None,
        progress_fd: int | None = None,
        image_names_itself: bool = False,
    ) -> str:
        """Register an archive (a path, opened here as the user), a built-in, or the archive
        read from `stream_fd` (lent: the caller closes it) under the user's name or
        `default_name`; returns the name registered. As an install (not an import) it runs
        the image's first-run setup at its first shell and, on a desktop, adds the shortcut
        its /etc/wsl-distribution.conf asks for. `image_names_itself`: without a name from
        the user, that file's [oobe] defaultName wins over `default_name` (as WSL names a
        `--from-file` install)."""
        extra = {"nameFromImage": True} if image_names_itself and self.name is None else None
        with connect() as client:
            reply = commands.register(client, self.name or default_name, self.version,
                                      self.location, archive=archive, builtin=builtin,
                                      for_uid=self.for_uid, stream_fd=stream_fd, extra=extra,
                                      quiet=self.quiet, first_run=True,
                                      progress_fd=progress_fd)  # fmt: skip
        return self.registered(reply)

    def registered(self, reply: dict[str, Any]) -> str:
        """The name an install's RegisterDistribution *reply* registered, once the desktop
        shortcut it asks for is made (for the user's own distributions only)."""
        name = str(reply["name"])
        if reply.get("shortcut") and self.for_uid is None:
            _make_shortcut(name, reply.get("shortcutIcon"))
        return name


def _matches(pattern: str, source: str) -> bool:
    if pattern.endswith("*"):
        return source.startswith(pattern[:-1])
    return source == pattern


def choose_installer(source: str | None, from_file: bool) -> str:
    """The installer ("module:function") for `source`; pure, for the unit tests."""
    if from_file:
        return FROM_FILE
    if source is not None:
        for pattern, installer, _ in INSTALLERS:
            if _matches(pattern, source):
                return installer
    return CATALOG


def installable() -> str:
    """What can be installed besides the catalog's names, for error messages."""
    return ", ".join(shown for _, _, shown in INSTALLERS if shown)


def _load(installer: str) -> Installer:
    import importlib

    module, function = installer.split(":")
    loaded: Installer = getattr(importlib.import_module(module), function)
    return loaded


def _source(request: Management) -> str | None:
    """The SOURCE argument, also spelled `--install -d NAME` (WSL's form) or, before the
    action, `lxss -d NAME --install`: either way once, or the same twice."""
    given = {str(v) for v in (request.options.get("--distribution"),) if isinstance(v, str)}
    given.update(request.args)
    if len(given) > 1:
        raise UsageError(f"--install was given two distributions: {' and '.join(sorted(given))}")
    return given.pop() if given else None


def install(request: Management, for_uid: int | None) -> int:
    options = request.options
    source = _source(request)
    from_file = options.get("--from-file")
    if isinstance(from_file, str) and source is not None:
        raise UsageError(f"--from-file installs {from_file}; give no distribution name with it")
    location = options.get("--location")
    target = InstallTarget(
        name=str(options["--name"]) if isinstance(options.get("--name"), str) else None,
        location=location if isinstance(location, str) else None,
        version=commands.parse_version(options.get("--version")),
        for_uid=for_uid,
        quiet=bool(options.get("--quiet")),
    )
    # --web-download is WSL's way to skip the Microsoft Store; lxss never uses one.
    installer = choose_installer(source, isinstance(from_file, str))
    name = _load(installer)(from_file if isinstance(from_file, str) else source or "", target)
    commands.out(f"Installed '{name}'. Run it with: lxss -d {name}")
    if options.get("--no-launch"):
        return 0
    from lxss.cli.launch import launch

    streams.flush()
    shell = Launch()
    shell.distribution = name
    return launch(shell, for_uid)


def install_builtin(source: str, target: InstallTarget) -> str:
    """A distribution lxss builds itself from the host's files (busybox)."""
    return target.register(source, builtin=source)


def install_built(source: str, target: InstallTarget) -> str:
    """debian[:SUITE], ubuntu[:SUITE]: built by the service, which reports how the build is
    getting on through a pipe, one line per stage, shown here on stderr (not with -q)."""
    import threading

    read_end, write_end = os.pipe2(os.O_CLOEXEC)

    def show() -> None:
        with open(read_end, "rb", buffering=0) as lines:
            for line in lines:
                if not target.quiet:
                    sys.stderr.write(line.decode(errors="replace"))
                    sys.stderr.flush()

    reader = threading.Thread(target=show, name="progress", daemon=True)
    reader.start()
    try:
        return target.register(source.replace(":", "-"), builtin=source, progress_fd=write_end)
    finally:
        os.close(write_end)
        reader.join(10.0)  # the service has closed its copy: the reader is at its end


def _make_shortcut(name: str, icon: dict[str, str] | None) -> None:
    """The desktop entry of *name*, with the *icon* of a RegisterDistribution reply."""
    from lxss.cli import shortcut

    if not shortcut.has_desktop():
        return
    image = None
    if icon is not None:
        import base64
        import binascii

        try:
            image = (icon["format"], base64.b64decode(icon["data"], validate=True))
        except (binascii.Error, KeyError, TypeError):
            commands.warn([f"the service sent a desktop icon for '{name}' that is not base64"])
    try:
        path = shortcut.create(name, image)
    except OSError as e:
        commands.warn([f"no desktop shortcut for '{name}': {e}"])
        return
    commands.out(f"Added a desktop shortcut: {path}")


def default_name_of_file(path: str) -> str:
    """`--from-file ~/Downloads/Debian-12.wsl` installs as 'Debian-12'."""
    base = os.path.basename(path.rstrip("/")) or "distribution"
    for suffix in (".wsl", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def install_file(source: str, target: InstallTarget) -> str:
    """--from-file FILE: a local .wsl image or rootfs tarball, as --import reads one, named
    (without --name) as its /etc/wsl-distribution.conf suggests, else after the file."""
    if source == "-":
        raise CommandError("--from-file needs a file; to read stdin use: lxss --import NAME DIR -")
    return target.register(default_name_of_file(source), archive=source, image_names_itself=True)


def manage_distribution(request: Management, for_uid: int | None) -> int:
    """--manage NAME --set-default-user USER (the uid is asked of the distribution itself)
    or --move DIR."""
    user = request.options.get("--set-default-user")
    target = request.options.get("--move")
    if isinstance(target, str) and user is None:
        with connect() as client:
            commands.move(client, request.args[0], target, for_uid)
        return 0
    if not isinstance(user, str) or target is not None:
        raise CommandError("--manage needs one of: --set-default-user USER, --move DIR")
    from lxss.cli.launch import lookup_uid

    uid = lookup_uid(request.args[0], user, for_uid)
    with connect() as client:
        client.call(
            "ConfigureDistribution",
            {"distribution": request.args[0], "defaultUid": uid, "forUid": for_uid},
        )
    commands.out(f"'{user}' (uid {uid}) is now the default user of '{request.args[0]}'.")
    return 0
