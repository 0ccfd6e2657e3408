"""The caller's standard streams as a local shell treats them: lxss's own output that cannot
be written is one `lxss:` line and exit 255, and a stream the caller closed stays closed for
lxss (whose sockets never take its number) and for the program."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import LXSS, Result, Service

# Each case runs through sh, which applies the redirections before exec'ing lxss.
REDIRECTIONS = {"full": ">/dev/full", "closed": ">&-"}


def _lxss_redirected(service: Service, redirection: str, *args: str) -> Result:
    proc = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirection}', "sh", *LXSS, *args],
        stdin=subprocess.DEVNULL, capture_output=True, env=service.env, timeout=120,
        check=False, cwd="/",
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("redirection", REDIRECTIONS.values(), ids=REDIRECTIONS.keys())
@pytest.mark.parametrize(
    "args",
    [("--version",), ("--help",), ("--list",), ("--list", "--verbose"), ("--status",),
     ("--set-default-version", "1")],
    ids=["version", "help", "list", "list-verbose", "status", "set-default-version"],
)  # fmt: skip
def test_output_that_cannot_be_written_is_one_line_and_255(
    service: Service, busybox: str, redirection: str, args: tuple[str, ...]
) -> None:
    result = _lxss_redirected(service, redirection, *args)
    assert result.returncode == 255, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lxss: cannot write to standard output"), result
    assert "Traceback" not in result.err


@pytest.mark.parametrize("args", [("--version",), ("--no-such-option",), ("-d", "nosuch", "true")])
def test_lxss_says_nothing_and_exits_255_when_stderr_is_closed_too(
    service: Service, args: tuple[str, ...]
) -> None:
    result = _lxss_redirected(service, ">/dev/full 2>&-", *args)
    assert result.returncode == 255, result
    assert result.stdout == b""


def test_errors_and_warnings_to_a_full_stderr_still_exit_255(service: Service) -> None:
    result = _lxss_redirected(service, "2>/dev/full", "-d", "nosuch", "true")
    assert (result.returncode, result.stderr) == (255, b""), result


# Closed standard streams ----------------------------------------------------------------

# Which of fds 0-2 the program finds open, as its exit status (bit N: fd N is open): the
# streams themselves are what is looked at, so none of them can carry the answer.
PROBE = (
    "c=0; [ -e /proc/self/fd/0 ] && c=$((c+1)); [ -e /proc/self/fd/1 ] && c=$((c+2)); "
    "[ -e /proc/self/fd/2 ] && c=$((c+4)); exit $c"
)


def _open_streams(argv: list[str], redirection: str, env: dict[str, str] | None) -> int:
    proc = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirection}', "sh", *argv], stdin=subprocess.DEVNULL,
        capture_output=True, env=env, timeout=120, check=False, cwd="/",
    )  # fmt: skip
    return proc.returncode


@pytest.mark.parametrize("redirection", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
def test_a_closed_stream_stays_closed_for_the_program(
    service: Service, busybox: str, redirection: str
) -> None:
    local = _open_streams(["sh", "-c", PROBE], redirection, None)
    assert local != 7  # the probe sees what it should
    through_lxss = _open_streams([*LXSS, "-d", busybox, "--", PROBE], redirection, service.env)
    assert through_lxss == local


def test_a_program_writing_to_closed_stdout_gets_ebadf(service: Service, busybox: str) -> None:
    script = 'exec "$@" >&-'
    probe = "echo hello; echo status=$? >&2"
    proc = subprocess.run(
        ["sh", "-c", script, "sh", *LXSS, "-d", busybox, "--", probe],
        stdin=subprocess.DEVNULL, capture_output=True, env=service.env, timeout=120,
        check=False, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc
    assert "Bad file descriptor" in proc.stderr.decode(), proc
    assert "status=1" in proc.stderr.decode(), proc


def test_closed_stdin_does_not_hand_the_program_lxss_sockets(
    service: Service, busybox: str
) -> None:
    # Reading a closed stdin fails at once (EBADF): before, the program read lxss's own
    # control socket there and lxss hung or died.
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *LXSS, "-d", busybox, "--",
         "cat; echo cat=$?"],
        capture_output=True, env=service.env, timeout=120, check=False, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc
    assert proc.stdout.decode().endswith("cat=1\n"), proc


def test_archives_on_closed_standard_streams_are_one_line(
    service: Service, busybox: str, tmp_path: Path
) -> None:
    exported = _lxss_redirected(service, ">&-", "--export", busybox, "-")
    assert (exported.returncode, exported.err) == (
        255, "lxss: cannot write to standard output: it is closed\n"
    ), exported  # fmt: skip
    imported = _lxss_redirected(service, "<&-", "--import", "x", str(tmp_path / "x"), "-")
    assert (imported.returncode, imported.err) == (
        255, "lxss: cannot read an archive from standard input: it is closed\n"
    ), imported  # fmt: skip
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
