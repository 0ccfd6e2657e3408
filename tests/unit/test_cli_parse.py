"""lxss's command line (lxss.cli.parse), which follows wsl.exe's, and the lean import
path every `lxss` start pays for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lxss.cli.launch import _join_command
from lxss.cli.parse import Launch, Management, UsageError, is_guid, parse

SRC = Path(__file__).resolve().parents[2] / "src"


GUID = "0b3c6d3e-5f41-4c2a-9e1d-7a8b9c0d1e2f"


def management(argv: list[str]) -> Management:
    request = parse(argv).request
    assert isinstance(request, Management), request
    return request


def launch(argv: list[str]) -> Launch:
    request = parse(argv).request
    assert isinstance(request, Launch), request
    return request


# Management actions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "action", "args", "options"),
    [
        (["--help"], "help", [], {}),
        (["-h"], "help", [], {}),
        (["--version"], "version", [], {}),
        (["-v"], "version", [], {}),
        (["--status"], "status", [], {}),
        (["--list"], "list", [], {}),
        (["-l", "-v"], "list", [], {"--verbose": True}),
        (["-l", "--verbose", "-q", "--running", "--all"], "list", [],
         {"--verbose": True, "--quiet": True, "--running": True, "--all": True}),
        (["-l", "--quiet"], "list", [], {"--quiet": True}),
        (["--import", "n", "/d", "f.tar"], "import", ["n", "/d", "f.tar"], {}),
        (["--import", "n", "/d", "-"], "import", ["n", "/d", "-"], {}),
        (["--import", "n", "/d", "-", "--version", "2"], "import", ["n", "/d", "-"],
         {"--version": "2"}),
        (["--import", "--version", "1", "n", "/d", "f"], "import", ["n", "/d", "f"],
         {"--version": "1"}),
        (["--export", "n", "out.tar"], "export", ["n", "out.tar"], {}),
        (["--export", "n", "-", "--format", "tar.zst"], "export", ["n", "-"],
         {"--format": "tar.zst"}),
        (["--unregister", "n"], "unregister", ["n"], {}),
        (["--set-default", "n"], "set-default", ["n"], {}),
        (["-s", "n"], "set-default", ["n"], {}),
        (["--setdefault", "n"], "set-default", ["n"], {}),
        (["--set-default-version", "2"], "set-default-version", ["2"], {}),
        (["--terminate", "n"], "terminate", ["n"], {}),
        (["-t", "n"], "terminate", ["n"], {}),
        (["--shutdown"], "shutdown", [], {}),
        (["--shutdown", "--force"], "shutdown", [], {"--force": True}),
        (["--install"], "install", [], {}),
        (["--install", "busybox", "--name", "bb", "--location", "/x", "--version", "1", "-n"],
         "install", ["busybox"],
         {"--name": "bb", "--location": "/x", "--version": "1", "--no-launch": True}),
        (["--install", "-d", "busybox"], "install", [], {"--distribution": "busybox"}),
        (["-d", "Debian", "--install"], "install", [], {"--distribution": "Debian"}),
        (["-d", "Debian", "--install", "-d", "Debian"], "install", [],
         {"--distribution": "Debian"}),
        (["--install", "--from-file", "x.wsl", "--web-download", "-q"], "install", [],
         {"--from-file": "x.wsl", "--web-download": True, "--quiet": True}),
        (["--list", "--online"], "list", [], {"--online": True}),
        (["-l", "-o"], "list", [], {"--online": True}),
        (["--manage", "n", "--set-default-user", "alice"], "manage", ["n"],
         {"--set-default-user": "alice"}),
    ],
)  # fmt: skip
def test_management_actions(
    argv: list[str], action: str, args: list[str], options: dict[str, object]
) -> None:
    request = management(argv)
    assert (request.action, request.args, request.options) == (action, args, options)


def test_leading_options_before_an_action() -> None:
    parsed = parse(["--debug", "--for-user", "alice", "--list", "-q"])
    assert (parsed.debug, parsed.for_user) == (True, "alice")
    assert isinstance(parsed.request, Management) and parsed.request.action == "list"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["-x"], "unknown option '-x'"),
        (["--import", "a", "b"], "--import takes 3 argument(s), got 2"),
        (["--import", "a", "b", "c", "d"], "--import takes 3 argument(s), got 4"),
        (["--import", "a", "b", "c", "--version"], "option --version needs a value"),
        (["--import", "a", "b", "c", "--format", "tar"], "unknown option '--format' for --import"),
        (["--export", "a"], "--export takes 2 argument(s), got 1"),
        (["--export", "a", "f", "--format"], "option --format needs a value"),
        (["--list", "x"], "--list takes 0 argument(s), got 1"),
        (["--list", "--bogus"], "unknown option '--bogus' for --list"),
        (["--install", "a", "b"], "--install takes 0 to 1 argument(s), got 2"),
        (["--unregister"], "--unregister takes 1 argument(s), got 0"),
        (["--status", "x"], "--status takes 0 argument(s), got 1"),
        (["-d", "x", "--list"], "--list cannot be combined with --distribution"),
        (["-d", "x", "-d", "y"], "the distribution is already set"),
        (["-d", "x", "--install", "-d", "y"], "the distribution is already set"),
        (["-d"], "option -d needs a value"),
        (["--distribution-id", "debian"],
         "--distribution-id needs a GUID, not 'debian' (names go to -d)"),
        (["--distribution-id", GUID[:-1]],
         f"--distribution-id needs a GUID, not '{GUID[:-1]}' (names go to -d)"),
        ([GUID, "-d", "x"], "the distribution is already set"),
        (["--for-user"], "option --for-user needs a value"),
        (["--cd"], "option --cd needs a value"),
        (["-e"], "-e needs a command"),
        (["--exec"], "--exec needs a command"),
        (["--shell-type", "fish", "ls"], "--shell-type must be one of standard, login, none"),
        (["--shell-type", "none"], "--shell-type none needs a command"),
    ],
)  # fmt: skip
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(argv)
    assert str(raised.value) == message


def test_install_may_name_its_distribution() -> None:
    """-d is the one leading option an action accepts: `--install -d NAME` is WSL's form."""
    request = management(["--install", "--distribution", "busybox", "--no-launch"])
    assert request.options == {"--distribution": "busybox", "--no-launch": True}


# Launching ------------------------------------------------------------------------------


def test_no_arguments_is_a_login_shell_in_the_default() -> None:
    request = launch([])
    assert (request.distribution, request.command, request.exec_mode) == (None, [], False)


@pytest.mark.parametrize(
    ("text", "guid"),
    [(GUID, True), (GUID.upper(), True), ("{" + GUID + "}", True), (GUID.replace("-", ""), False),
     ("{" + GUID, False), (GUID[:-1] + "g", False), ("debian", False), ("", False),
     ("urn:uuid:" + GUID, False)],
)  # fmt: skip
def test_is_guid_reads_guids_as_wsl_does(text: str, guid: bool) -> None:
    assert is_guid(text) is guid


@pytest.mark.parametrize(
    ("argv", "distribution", "cwd", "command"),
    [
        (["~"], None, "~", []),
        (["~", "ls", "-l"], None, "~", ["ls", "-l"]),
        ([GUID], GUID, None, []),
        ([GUID, "~", "-u", "root", "pwd"], GUID, "~", ["pwd"]),
        (["~", GUID], None, "~", [GUID]),  # the GUID comes first or is a command
        (["ls", "~"], None, None, ["ls", "~"]),
        (["--", "~"], None, None, ["~"]),
    ],
)  # fmt: skip
def test_leading_guid_and_tilde(
    argv: list[str], distribution: str | None, cwd: str | None, command: list[str]
) -> None:
    request = launch(argv)
    assert (request.distribution, request.cwd, request.command) == (distribution, cwd, command)


def test_launch_options() -> None:
    request = launch(["-d", "deb", "-u", "root", "--cd", "~", "--shell-type", "login", "make",
                      "-j", "4"])  # fmt: skip
    assert (request.distribution, request.user, request.cwd, request.shell_type) == (
        "deb", "root", "~", "login",
    )  # fmt: skip
    assert request.command == ["make", "-j", "4"]
    assert launch(["--distribution", "x"]).distribution == "x"
    assert launch(["--distribution-id", GUID]).distribution == GUID
    assert launch(["--user", "bob", "id"]).user == "bob"


def test_the_command_ends_option_parsing() -> None:
    """After `--`, `-e` or the first word, everything belongs to the command."""
    assert launch(["--", "--list", "-d", "x"]).command == ["--list", "-d", "x"]
    assert launch(["ls", "--list", "-l"]).command == ["ls", "--list", "-l"]
    request = launch(["-d", "x", "-e", "grep", "-v", "--", "y"])
    assert (request.exec_mode, request.command) == (True, ["grep", "-v", "--", "y"])
    assert launch(["--exec", "true"]).exec_mode
    assert launch(["--"]).command == []


# _join_command --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (["echo hello | wc -c"], "echo hello | wc -c"),
        (["echo", "a  b"], "echo 'a  b'"),
        (["echo", ""], "echo ''"),
        (["echo", "it's here"], "echo 'it'\\''s here'"),
        (["echo", "$HOME", "*", "a|b"], "echo $HOME * a|b"),
        (["printf", "%s\\n", "tab\there", "new\nline"], "printf '%s\\n' 'tab\there' 'new\nline'"),
        ([""], ""),
    ],
)  # fmt: skip
def test_join_command(words: list[str], line: str) -> None:
    assert _join_command(words) == line


def _through_sh(words: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", _join_command(words)], capture_output=True, text=True,
                          check=False, timeout=10)  # fmt: skip


def test_join_command_round_trips_through_sh() -> None:
    words = ["printf", "[%s]", "a  b", "", "tab\tnew\nline", "quote ' inside", "x*y"]
    result = _through_sh(words)
    assert (result.returncode, result.stdout) == (0, "".join(f"[{w}]" for w in words[2:]))


def test_join_command_word_with_a_lone_quote() -> None:
    result = _through_sh(["printf", "[%s]", "it's"])
    assert (result.returncode, result.stdout) == (0, "[it's]")


# The lean import path -------------------------------------------------------------------

HEAVY = ("asyncio", "json.decoder", "re", "typing", "dataclasses", "socket", "sqlite3", "ctypes",
         "subprocess", "argparse", "enum")  # fmt: skip

_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from lxss.cli.main import main
from lxss.cli.parse import parse
import lxss.cli.manage, lxss.cli.service, lxss.api.client, lxss.cli.launch, lxss.cli.install
for argv in (["--import", "a", "/d", "-"], ["-l", "-v"], ["-d", "x", "--", "make"]):
    parse(argv)
exec(sys.argv[3])
print(",".join(m for m in sys.argv[2].split(",") if m in sys.modules))
"""


def _loaded_by_cli(extra: str = "") -> list[str]:
    """Which HEAVY modules a `python -I -S` (lxss's launcher) process holds after importing
    the client and parsing command lines (plus running *extra*)."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROBE, str(SRC), ",".join(HEAVY), extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_cli_does_not_import_heavy_modules() -> None:
    assert _loaded_by_cli() == []


def test_the_import_probe_sees_imports() -> None:
    assert "dataclasses" in _loaded_by_cli("import dataclasses")
