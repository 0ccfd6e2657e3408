"""The lxss command's own failures and warnings (lxss.cli.main, .launch, .install), and the
small shared pieces the client starts with (lxss.bootstrap, lxss.errors, lxss.text)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lxss
from lxss import bootstrap
from lxss.cli import launch as launch_module
from lxss.cli import main as cli_main
from lxss.cli.parse import Launch
from lxss.errors import LxssError
from lxss.protocol import control

SRC = Path(__file__).resolve().parents[2] / "src"


def _failing_dispatch(error: BaseException) -> Any:
    def dispatch(*args: object) -> int:
        raise error

    return dispatch


# --debug ----------------------------------------------------------------------------------


def test_debug_in_the_users_command_is_not_lxss_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main, "_dispatch", _failing_dispatch(RuntimeError("boom")))
    assert cli_main.main(["--", "make", "--debug"]) == 255
    assert "unexpected RuntimeError: boom" in capsys.readouterr().err
    assert cli_main.main(["-e", "tool", "--debug"]) == 255


def test_lxss_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "_dispatch", _failing_dispatch(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cli_main.main(["--debug", "--", "make"])


# OSError messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(13, "Permission denied", "/srv/x"), "lxss: /srv/x: Permission denied"),
        (OSError(18, "Invalid cross-device link", "/a", None, "/b"),
         "lxss: /a -> /b: Invalid cross-device link"),
        (ConnectionResetError(104, "Connection reset by peer"),
         "lxss: Connection reset by peer (ConnectionResetError)"),
        (PermissionError(13, "Permission denied", "/srv/\x1b[2J"),
         "lxss: /srv/\\x1b[2J: Permission denied"),
    ],
)  # fmt: skip
def test_os_errors_name_their_file(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: OSError,
    line: str,
) -> None:
    monkeypatch.setattr(cli_main, "_dispatch", _failing_dispatch(error))
    assert cli_main.main(["-l"]) == 255
    assert capsys.readouterr().err == line + "\n"


# Warnings of a launch ---------------------------------------------------------------------


class _Client:
    """Answers CreateLxProcess with warnings, and the program's exit (0) on its control socket."""

    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings

    def call(self, method: str, params: dict[str, Any], fds: tuple[int, ...], **_: Any) -> Any:
        assert method == "CreateLxProcess"
        os.write(fds[params["control"]], control.Writer().exit_status(0))
        return {"warnings": self.warnings}

    def close(self) -> None:
        pass


def test_launch_warnings_are_escaped_like_every_other_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LXSS_DISABLE_WARNINGS", raising=False)
    monkeypatch.setattr(os, "isatty", lambda fd: False)  # pipes: no terminal to set up
    warnings = ["\x1b]0;owned\x07 /etc/wsl.conf:1", "two\nlines"]
    monkeypatch.setattr(launch_module, "connect", lambda: _Client(warnings))
    assert launch_module.launch(Launch(), None) == 0
    assert capsys.readouterr().err == (
        "lxss: warning: \\x1b]0;owned\\x07 /etc/wsl.conf:1\nlxss: warning: two\\nlines\n"
    )
    monkeypatch.setenv("LXSS_DISABLE_WARNINGS", "1")
    assert launch_module.launch(Launch(), None) == 0
    assert capsys.readouterr().err == ""


# Names ------------------------------------------------------------------------------------


def test_install_and_manage_names() -> None:
    from lxss.cli import install, manage
    from lxss.cli.errors import CommandError

    assert callable(install.manage_distribution)
    assert (manage.parse_version(None), manage.parse_version("2")) == (None, 2)
    with pytest.raises(CommandError, match="invalid version '3'"):
        manage.parse_version("3")


# Shared pieces ----------------------------------------------------------------------------


def test_lxss_errors_root_every_error_class() -> None:
    from lxss.archive.unpack import UnpackError
    from lxss.cli.errors import CommandError
    from lxss.cli.parse import UsageError
    from lxss.cli.service import ServiceUnavailable
    from lxss.guest.process import PlanError

    for cls in (CommandError, UsageError, UnpackError, PlanError, control.ControlError,
                ServiceUnavailable):  # fmt: skip
        assert issubclass(cls, LxssError), cls
    assert issubclass(control.ControlError, ValueError)


@pytest.mark.parametrize("module", ["errors", "text"])
def test_the_clients_shared_modules_import_nothing(module: str) -> None:
    tree = ast.parse((SRC / "lxss" / f"{module}.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def test_bootstrap_argv_runs_a_module(tmp_path: Path) -> None:
    argv = bootstrap.bootstrap_argv("lxss.cli.main", "--version")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                            cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")})  # fmt: skip
    assert (result.returncode, result.stdout) == (0, cli_main.version_text())
    assert result.stdout.startswith(f"lxss version: {lxss.__version__}\n")


def test_one_bootstrap_for_client_and_service() -> None:
    from lxss.cli.service import lxss_argv
    from lxss.linux import userns

    assert not hasattr(userns, "python_argv")  # the service uses lxss.bootstrap directly
    assert lxss_argv() == bootstrap.bootstrap_argv("lxss.cli.main")


# The quick exit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "stdout", "stderr"),
    [
        (["--version"], 0, cli_main.version_text(), ""),
        (["--no-such-option"], 255, "", "lxss: "),
    ],
)
def test_run_flushes_what_was_written_and_exits_with_mains_code(
    argv: list[str], code: int, stdout: str, stderr: str
) -> None:
    """run() ends with os._exit, which flushes nothing: output to a pipe (block-buffered)
    must still all arrive, and the exit status be main()'s."""
    script = "import sys; from lxss.cli.main import run; sys.argv[1:] = sys.argv[2:]; run()"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(SRC)!r}); {script}",
         "lxss", *argv],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == code
    assert done.stdout == stdout
    assert done.stderr.startswith(stderr)
