"""What a launched process gets: its user, argv, environment and working directory.

WSL's CreateProcessParseCommon and CreateProcessCommon, as a pure function of
the request and the distribution's configuration, so the session leader can
refuse a bad request (a missing user) before forking a relay, and tests can
check every rule without a distribution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from lxss.config import lxssenv
from lxss.errors import LxssError
from lxss.guest.users import User, UserDatabase

# WSL's exit code for "user not found" (EX_NOUSER), reused as a launch result.
USER_NOT_FOUND: Final = 67
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the caller's environment may not override: identity comes from the distribution.
RESERVED: Final = frozenset(
    {"HOME", "USER", "LOGNAME", "SHELL", "LXSS_DISTRO_NAME", "LXSS_INTEROP", "LXSS_HOST_PATH"}
)
# The client's PATH travels as this variable, for [interop] appendWindowsPath; it is the
# relay's, never the program's.
HOST_PATH_VARIABLE: Final = "LXSS_HOST_PATH"


class PlanError(LxssError):
    """The request cannot run; *code* is the result the session leader answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Request:
    """The parts of an InitCreateProcess that decide what runs."""

    filename: str | None
    command_line: list[str]
    cwd: str | None
    host_cwd: str | None
    username: str | None
    login_shell: bool
    default_uid: int
    environment: list[str]
    distribution_name: str


@dataclass(frozen=True)
class Context:
    """The distribution's side: its users, /etc/wsl.conf and where the host is mounted."""

    users: UserDatabase
    conf_default_user: str | None
    hostname: str
    host_mount: str | None
    umask: int = 0o022
    lang: str = "C.UTF-8"
    interop: bool = False  # [interop] enabled, and the tools are there
    append_host_path: bool = False  # [interop] appendWindowsPath (appendHostPath)


@dataclass(frozen=True)
class Plan:
    user: User
    groups: list[int]
    executable: str
    argv: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    umask: int = 0o022
    warnings: tuple[str, ...] = ()  # for the program's stderr, before it starts
    interop: bool = False  # the relay serves an interop socket (and sets LXSS_INTEROP)
    host_mount: str | None = None  # where the host's root is, for the interop server
    host_path: str | None = None  # the owner's PATH, for the host-NAME shims


def choose_user(request: Request, context: Context) -> User:
    """-u USER, else wsl.conf's [user] default, else the registered default uid, else root."""
    if request.username:
        user = context.users.lookup(request.username)
        if user is None:
            raise PlanError(USER_NOT_FOUND, f"there is no user '{request.username}'")
        return user
    if context.conf_default_user:
        user = context.users.lookup(context.conf_default_user)
        if user is not None:
            return user
    user = context.users.by_uid(request.default_uid)
    return (
        user if user is not None else context.users.by_uid(0) or User("root", 0, 0, "/", "/bin/sh")
    )


def _shell(user: User) -> str:
    return user.shell if user.shell and os.path.isfile(user.shell) else "/bin/sh"


def _expand_home(path: str, home: str) -> str:
    if path == "~":
        return home
    if path.startswith("~/"):
        return os.path.join(home, path[2:])
    return path


def choose_cwd(request: Request, context: Context, user: User) -> tuple[str, str | None]:
    """--cd (a distribution path or ~), else the caller's host directory through the
    host mount when it is reachable, else the user's home; with a warning when the host
    directory cannot be reached through the mount (WSL's "Failed to translate")."""
    if request.cwd:
        return _expand_home(request.cwd, user.home), None
    if request.host_cwd and context.host_mount:
        translated = context.host_mount.rstrip("/") + request.host_cwd
        if os.path.isdir(translated):
            return translated, None
        return user.home, (
            f"cannot enter {translated} (the host's {request.host_cwd}): not a directory "
            f"the distribution can see; starting in {user.home}"
        )
    return user.home, None


def build_environment(request: Request, context: Context, user: User, shell: str) -> dict[str, str]:
    environment = {
        "PATH": DEFAULT_PATH,
        "LANG": context.lang,
        "TERM": "xterm-256color",
        "HOSTTYPE": os.uname().machine,
        "NAME": context.hostname,
    }
    caller = {}
    for entry in request.environment:
        name, sep, value = entry.partition("=")
        if sep and name and name not in RESERVED:
            caller[name] = value
    environment.update(caller)
    # LXSSENV's /p and /l: host paths become the distribution's (under the host mount).
    environment.update(lxssenv.translate(caller, "to_distribution", context.host_mount))
    environment.update(
        HOME=user.home,
        USER=user.name,
        LOGNAME=user.name,
        SHELL=shell,
        LXSS_DISTRO_NAME=request.distribution_name,
    )
    return environment


def plan(request: Request, context: Context) -> Plan:
    """Everything the relay needs to exec the program; PlanError if it cannot run."""
    user = choose_user(request, context)
    shell = _shell(user)
    if request.filename is not None:
        if not request.command_line:
            raise PlanError(22, "an exec request needs an argv")
        executable, argv = request.filename, list(request.command_line)
    else:
        argv0 = "-" + os.path.basename(shell) if request.login_shell else shell
        if not request.command_line:
            argv = [argv0]
        elif len(request.command_line) == 1:
            argv = [argv0, "-c", request.command_line[0]]
        else:
            raise PlanError(22, "a shell command is one string")
        executable = shell
    cwd, warning = choose_cwd(request, context, user)
    return Plan(
        user=user,
        groups=context.users.supplementary_groups(user),
        executable=executable,
        argv=argv,
        environment=build_environment(request, context, user, shell),
        cwd=cwd,
        umask=context.umask,
        warnings=(warning,) if warning else (),
        interop=context.interop,
        host_mount=context.host_mount,
        host_path=_host_path(request, context),
    )


def _host_path(request: Request, context: Context) -> str | None:
    if not (context.interop and context.append_host_path and context.host_mount):
        return None
    prefix = HOST_PATH_VARIABLE + "="
    return next((e[len(prefix) :] for e in request.environment if e.startswith(prefix)), None)
