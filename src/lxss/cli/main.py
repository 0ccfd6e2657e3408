"""The lxss command (WSL's wsl.exe).

lxss's own failures print one line, `lxss: <what went wrong>`, on stderr and
exit 255 (as ssh does), so that any other exit status is the Linux program's.
A traceback appears only with --debug.
"""

from __future__ import annotations

import os
import sys

from lxss import __version__
from lxss.cli import streams
from lxss.cli.parse import Launch, Management, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn  # typing itself costs milliseconds at start-up

FAILURE = 255

USAGE = """\
Usage: lxss [GUID] [~] [options] [--] [command ...]

Run a program in a Linux distribution:
  lxss [command ...]              run command with $SHELL -c in the default distribution,
                                  or a login shell when no command is given
  GUID                            (first) use the distribution with this GUID
  ~                               (first, or after GUID) start in the home directory
  -d, --distribution NAME         use this distribution (name or GUID)
  --distribution-id GUID          use the distribution with this GUID
  -u, --user USER                 run as this user
  --cd DIR                        start in DIR (a path inside the distribution, or ~)
  -e, --exec PROGRAM [ARGS ...]   run PROGRAM directly, without a shell
  --shell-type standard|login|none
  --                              everything after this is the command

Manage distributions:
  --install [NAME] [--name NAME] [--location DIR] [--version 1|2] [-n|--no-launch]
          [-q|--quiet] [--web-download]
                                  install NAME from the distribution catalog (none: its
                                  Default) or a built-in (busybox), then start its shell
  --install --from-file FILE [--name NAME] ...
                                  install a local image (.wsl or a rootfs tarball)
  -l, --list -o|--online [-q]     what the catalog offers (/etc/lxss.conf: distributionListUrl)
  --install docker://IMAGE|oci:DIR[:TAG]|oci-archive:FILE|docker-archive:FILE [...]
                                  a container image, pulled as you (its layers, whiteouts)
  --import NAME DIR FILE|- [--version 1|2] [-q|--quiet]
                                  register a distribution from a tar archive (tar, tar.gz,
                                  tar.xz, tar.zst, .wsl) or an OCI/docker image archive,
                                  installed in DIR; - reads stdin
  --import-in-place NAME DIR [--version 1|2]
                                  register the tree already in DIR/rootfs where it is
                                  (DIR yours, mode 0700)
  --export NAME FILE|- [--format tar|tar.gz|tar.xz|tar.zst] [-q|--quiet]
                                  write a distribution's files as an archive; - is stdout;
                                  progress on stderr for a file (none with -q)
  --unregister NAME               stop and delete a distribution and its files
  -l, --list [-v|--verbose] [-q|--quiet] [--running] [--all]
  -s, --set-default NAME
  --set-default-version 1|2
  --manage NAME --set-default-user USER
  --manage NAME --move DIR        move its files into DIR (made if missing)
  -t, --terminate NAME            stop a distribution
  --shutdown [--force]            stop every distribution and the utility VM
  --debug-shell                   (root) a shell in the utility VM, outside every distribution
  --status
  -v, --version
  -h, --help

  --for-user USER                 (root) act on USER's distributions
  --debug                         show tracebacks of lxss's own failures
"""


def fail(message: str) -> int:
    from lxss.text import one_line  # only failures pay for it

    streams.say(f"lxss: {one_line(message)}\n")
    return FAILURE


def version_text() -> str:
    """What `lxss --version` prints: each component lxss runs with on a line of its own, as
    wsl.exe lists its components. (A QEMU line belongs here once version 2 has a backend.)"""
    python = ".".join(str(part) for part in sys.version_info[:3])
    return (
        f"lxss version: {__version__}\n"
        f"Kernel version: {os.uname().release}\n"
        f"Python version: {python}\n"
    )


def _uid_of(user: str | None) -> int | None:
    if user is None:
        return None
    if user.isdigit():
        return int(user)
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise UsageError(f"--for-user: there is no user '{user}'") from None


def _describe_os_error(error: OSError) -> str:
    """One line for an OSError lxss did not expect: the file it concerns, when it has one
    (``/srv/x: Permission denied``), else its message and class."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return f"{reason} ({type(error).__name__})"
    names = str(error.filename)
    if error.filename2 is not None:
        names += f" -> {error.filename2}"
    return f"{names}: {reason}"


def _dispatch(request: Launch | Management, for_uid: int | None) -> int:
    from lxss.cli.service import connect

    if isinstance(request, Launch):
        from lxss.cli.launch import launch

        return launch(request, for_uid)
    if request.action == "help":
        streams.write(USAGE)
        return 0
    if request.action == "version":
        streams.write(version_text())
        return 0
    if request.action == "install":
        from lxss.cli.install import install

        return install(request, for_uid)
    if request.action == "list" and request.options.get("--online"):
        from lxss.cli.catalog_install import list_online

        return list_online(request.options)
    if request.action == "debug-shell":
        from lxss.cli.launch import debug_shell

        return debug_shell(for_uid)
    if request.action == "manage":
        from lxss.cli.install import manage_distribution

        return manage_distribution(request, for_uid)
    from lxss.cli import manage as commands

    with connect() as client:
        return commands.run(client, request, for_uid)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    streams.occupy_standard_fds()
    debug = False  # until parsed: "--debug" may be a word of the user's own command
    try:
        parsed = parse(args)
        debug = parsed.debug
        code = _dispatch(parsed.request, _uid_of(parsed.for_user))
        streams.flush()
        return code
    except streams.OutputError as e:
        return fail(str(e))
    except UsageError as e:
        return fail(f"{e} (see: lxss --help)")
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if debug:
            raise
        # Imported here: only a failure pays for them.
        from lxss.api.errors import VarlinkError
        from lxss.cli.errors import CommandError
        from lxss.cli.messages import describe
        from lxss.cli.service import ServiceUnavailable

        if isinstance(e, VarlinkError):
            return fail(describe(e))
        if isinstance(e, CommandError | ServiceUnavailable):
            return fail(str(e))
        if isinstance(e, OSError):
            return fail(_describe_os_error(e))
        return fail(f"unexpected {type(e).__name__}: {e} (run with --debug for details)")
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            # Said above when it mattered; what is left must not make Python complain at exit.
            streams.discard_stdout()


def run() -> NoReturn:
    """The `lxss` command: main(), then a quick exit.

    By the time main() returns, everything lxss owes the caller is done: the terminal is
    restored, the service's connection closed, the output flushed below. What os._exit
    skips is only the interpreter tearing down its modules and objects, about 2 ms of
    a warm command's 25 (bench/: the `warm` figure).
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream: nothing more can be said on it
    os._exit(code)
