"""Parsing lxss's command line, which follows wsl.exe's.

Leading options are read one by one; the first argument that is not an option
(or `--`, or the value of `-e`) ends them and the rest is the command. A
management option (`--import`, `--list`, ...) takes the rest of the line as
its own arguments. Hand-written on purpose: argparse costs more to import
than the whole client may spend on start-up.
"""

from __future__ import annotations

from lxss.errors import LxssError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class UsageError(LxssError):
    """The command line is wrong; the message says how."""


class Launch:
    """Run a program in a distribution (no management option given)."""

    __slots__ = ("command", "cwd", "distribution", "exec_mode", "shell_type", "user")

    def __init__(self) -> None:
        self.distribution: str | None = None
        self.user: str | None = None
        self.cwd: str | None = None
        self.exec_mode = False
        self.shell_type: str | None = None
        self.command: list[str] = []


class Management:
    """A management action: `action` names it, `args` are its positional arguments."""

    __slots__ = ("action", "args", "options")

    def __init__(self, action: str, args: list[str], options: dict[str, str | bool]) -> None:
        self.action = action
        self.args = args
        self.options = options


class Parsed:
    __slots__ = ("debug", "for_user", "request")

    def __init__(self, request: Launch | Management, for_user: str | None, debug: bool) -> None:
        self.request = request
        self.for_user = for_user
        self.debug = debug


# action: (option spellings, positional count (min, max), flags, options taking a value)
_ACTIONS: dict[str, tuple[tuple[str, ...], tuple[int, int], set[str], set[str]]] = {
    "help": (("--help", "-h"), (0, 0), set(), set()),
    "version": (("--version", "-v"), (0, 0), set(), set()),
    "status": (("--status",), (0, 0), set(), set()),
    "list": (
        ("--list", "-l"),
        (0, 0),
        {"--verbose", "-v", "--quiet", "-q", "--running", "--all", "--online", "-o"},
        set(),
    ),
    "import": (("--import",), (3, 3), {"--quiet", "-q"}, {"--version"}),
    "import-in-place": (("--import-in-place",), (2, 2), set(), {"--version"}),
    "export": (("--export",), (2, 2), {"--quiet", "-q"}, {"--format"}),
    "install": (
        ("--install",),
        (0, 1),
        {"--no-launch", "-n", "--web-download", "--quiet", "-q"},
        {"--name", "--location", "--version", "-d", "--distribution", "--from-file"},
    ),
    "unregister": (("--unregister",), (1, 1), set(), set()),
    "set-default": (("--set-default", "-s", "--setdefault"), (1, 1), set(), set()),
    "set-default-version": (("--set-default-version",), (1, 1), set(), set()),
    "terminate": (("--terminate", "-t"), (1, 1), set(), set()),
    "shutdown": (("--shutdown",), (0, 0), {"--force"}, set()),
    "debug-shell": (("--debug-shell",), (0, 0), set(), set()),
    "manage": (("--manage",), (1, 1), set(), {"--set-default-user", "--move"}),
}
_ACTION_BY_OPTION = {
    spelling: name for name, (spellings, *_) in _ACTIONS.items() for spelling in spellings
}

_CANONICAL = {
    "-v": "--verbose",
    "-q": "--quiet",
    "-n": "--no-launch",
    "-d": "--distribution",
    "-o": "--online",
}
SHELL_TYPES = ("standard", "login", "none")

# The options of a launch that take a value, spelling -> what the value is. Together with
# _ACTIONS this is the whole command line: the parser reads it, and so do the generated
# shell completions and man page (lxss.packaging).
LAUNCH_VALUED: dict[str, str | tuple[str, ...]] = {
    "-d": "distribution",
    "--distribution": "distribution",
    "--distribution-id": "guid",
    "-u": "user",
    "--user": "user",
    "--cd": "directory",
    "--shell-type": SHELL_TYPES,
    "--for-user": "host-user",
}
LAUNCH_FLAGS = ("--debug",)
EXEC_OPTIONS = ("-e", "--exec")  # what follows is the program and its arguments
COMMAND_STARTERS = ("--", *EXEC_OPTIONS)  # what follows is the command

# What an action's value or positional argument is, where a completion can offer something:
# "distribution" (a registered one), "catalog" (an installable name), "host-user", "user"
# (inside the distribution), "file", "directory", or a tuple of choices. Anything not listed
# is free text. Keyed by (action, option) for options, (action, index) for positionals.
VALUE_KINDS: dict[tuple[str, str | int], str | tuple[str, ...]] = {
    ("import", 0): "name",
    ("import", 1): "directory",
    ("import", 2): "file",
    ("import", "--version"): ("1", "2"),
    ("export", 0): "distribution",
    ("export", 1): "file",
    ("export", "--format"): ("tar", "tar.gz", "tar.xz", "tar.zst"),
    ("install", 0): "catalog",
    ("install", "--location"): "directory",
    ("install", "--version"): ("1", "2"),
    ("install", "--from-file"): "file",
    ("install", "--distribution"): "catalog",
    ("install", "-d"): "catalog",
    ("unregister", 0): "distribution",
    ("set-default", 0): "distribution",
    ("set-default-version", 0): ("1", "2"),
    ("terminate", 0): "distribution",
    ("manage", 0): "distribution",
    ("manage", "--set-default-user"): "user",
    ("manage", "--move"): "directory",
    ("import-in-place", 0): "name",
    ("import-in-place", 1): "directory",
    ("import-in-place", "--version"): ("1", "2"),
}


def actions() -> dict[str, tuple[tuple[str, ...], tuple[int, int], set[str], set[str]]]:
    """The management actions: name -> (spellings, (least, most) positionals, flags, options
    taking a value). For the generated completions and man page; the parser reads it too."""
    return _ACTIONS


def _management(action: str, argv: list[str]) -> Management:
    _, (least, most), flags, valued = _ACTIONS[action]
    args: list[str] = []
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in flags:
            options[_CANONICAL.get(arg, arg)] = True
        elif arg in valued:
            if i + 1 >= len(argv):
                raise UsageError(f"option {arg} needs a value")
            options[_CANONICAL.get(arg, arg)] = argv[i + 1]
            i += 1
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r} for {_ACTIONS[action][0][0]}")
        else:
            args.append(arg)
        i += 1
    if not least <= len(args) <= most:
        expected = str(least) if least == most else f"{least} to {most}"
        raise UsageError(f"{_ACTIONS[action][0][0]} takes {expected} argument(s), got {len(args)}")
    return Management(action, args, options)


_HEX = frozenset("0123456789abcdefABCDEF")


def is_guid(text: str) -> bool:
    """Whether *text* is a GUID as wsl.exe reads one: 8-4-4-4-12 hex digits, bare or in
    braces (uuid would cost the client an import for this)."""
    if len(text) == 38 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    groups = text.split("-")
    return [len(g) for g in groups] == [8, 4, 4, 4, 12] and all(set(g) <= _HEX for g in groups)


def _leading_words(argv: list[str], launch: Launch) -> int:
    """wsl.exe's two leading words, in this order, each optional: a distribution's GUID
    (selects it, as --distribution-id does) and `~` (start in the home directory, as
    --cd ~). Returns how many words they took."""
    taken = 0
    if argv and is_guid(argv[0]):
        launch.distribution = argv[0]
        taken = 1
    if len(argv) > taken and argv[taken] == "~":
        launch.cwd = "~"
        taken += 1
    return taken


def _needs_value(argv: list[str], i: int) -> str:
    if i + 1 >= len(argv):
        raise UsageError(f"option {argv[i]} needs a value")
    return argv[i + 1]


def parse(argv: list[str]) -> Parsed:
    """Parse lxss's arguments (without argv[0]); raises UsageError."""
    launch = Launch()
    for_user: str | None = None
    debug = False
    i = 0
    setters: dict[str, Callable[[str], None]] = {}

    def set_distribution(value: str) -> None:
        if launch.distribution is not None:
            raise UsageError("the distribution is already set")
        launch.distribution = value

    def set_distribution_id(value: str) -> None:
        if not is_guid(value):
            raise UsageError(f"--distribution-id needs a GUID, not '{value}' (names go to -d)")
        set_distribution(value)

    def set_shell_type(value: str) -> None:
        if value not in SHELL_TYPES:
            raise UsageError(f"--shell-type must be one of {', '.join(SHELL_TYPES)}")
        launch.shell_type = value

    def set_for_user(value: str) -> None:
        nonlocal for_user
        for_user = value

    i = _leading_words(argv, launch)
    setters = {
        "-d": set_distribution,
        "--distribution": set_distribution,
        "--distribution-id": set_distribution_id,
        "-u": lambda v: setattr(launch, "user", v),
        "--user": lambda v: setattr(launch, "user", v),
        "--cd": lambda v: setattr(launch, "cwd", v),
        "--shell-type": set_shell_type,
        "--for-user": set_for_user,
    }
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            launch.command = argv[i + 1 :]
            break
        if arg in EXEC_OPTIONS:
            launch.exec_mode = True
            launch.command = argv[i + 1 :]
            if not launch.command:
                raise UsageError(f"{arg} needs a command")
            break
        if arg in LAUNCH_VALUED:
            setters[arg](_needs_value(argv, i))
            i += 2
            continue
        if arg == "--debug":
            debug = True
            i += 1
            continue
        action = _ACTION_BY_OPTION.get(arg)
        if action is not None:
            if launch.distribution is not None and action != "install":
                raise UsageError(f"{arg} cannot be combined with --distribution")
            request = _management(action, argv[i + 1 :])
            # `lxss -d NAME --install` means `--install NAME`, as it reads.
            chosen = launch.distribution
            if (
                chosen is not None
                and request.options.setdefault("--distribution", chosen) != chosen
            ):
                raise UsageError("the distribution is already set")
            return Parsed(request, for_user, debug)
        if arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}")
        launch.command = argv[i:]
        break
    if launch.shell_type == "none" and not launch.command:
        raise UsageError("--shell-type none needs a command")
    return Parsed(launch, for_user, debug)
