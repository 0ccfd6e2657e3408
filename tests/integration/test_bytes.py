"""Bytes that are not UTF-8 (Linux allows any but NUL) in arguments, environment values,
directories and user names, carried exactly through lxss, lxssd and the guest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service
from mgmt import shared_dir
from run_support import private_distribution

# Latin-1 "été", a lone continuation byte and an overlong encoding: none of them UTF-8.
RAW = b"\xe9t\xe9-\x80-\xc0\xaf"
TEXT = os.fsdecode(RAW)  # what Python (and so subprocess) makes of them: surrogate escapes


def test_arguments_are_carried_exactly(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "-e", "printf", "%s|", TEXT, "plain").stdout == (
        RAW + b"|plain|"
    )
    # The shell form: the word reaches $SHELL -c as it was.
    assert service.ok("-d", busybox, "--", "printf", "%s", TEXT).stdout == RAW


def test_environment_values_are_carried_exactly(service: Service, busybox: str) -> None:
    result = service.ok(
        "-d", busybox, "-e", "sh", "-c", 'printf %s "$ODD"', env={"LXSSENV": "ODD", "ODD": TEXT}
    )
    assert result.stdout == RAW


@pytest.fixture
def odd_directory() -> Iterator[Path]:
    directory = Path(os.fsdecode(b"/tmp/lxss-bytes-" + RAW))
    directory.mkdir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_the_host_directory_is_carried_exactly(
    service: Service, busybox: str, odd_directory: Path
) -> None:
    result = service.ok("-d", busybox, "-e", "pwd", cwd=str(odd_directory))
    assert result.stdout == b"/mnt/host" + os.fsencode(odd_directory) + b"\n"
    assert result.stderr == b""


def test_cd_into_a_directory_named_with_bytes(service: Service, busybox: str) -> None:
    inside = "/tmp/" + TEXT
    service.ok("-d", busybox, "-e", "mkdir", "-p", inside)
    try:
        assert service.ok("-d", busybox, "--cd", inside, "-e", "pwd").stdout == (
            b"/tmp/" + RAW + b"\n"
        )
    finally:
        service.ok("-d", busybox, "-e", "rm", "-rf", inside)


def test_a_user_named_with_bytes(service: Service, tmp_path: Path) -> None:
    with private_distribution(service, tmp_path, "oddnames") as name:
        entry = b"\xe9t\xe9:x:1234:1234::/root:/bin/sh\n"
        service.ok("-d", name, "-u", "root", "--", "cat >> /etc/passwd", input=entry)
        result = service.ok("-d", name, "-u", os.fsdecode(b"\xe9t\xe9"), "--", 'printf %s "$USER"')
        assert result.stdout == b"\xe9t\xe9"
        missing = service.lxss("-d", name, "-u", os.fsdecode(b"\xe9x\xe9"), "--", "true")
        assert missing.returncode == 255
        assert missing.err == "lxss: there is no user '\\udce9x\\udce9' in the distribution\n"


def test_a_host_directory_the_distribution_cannot_see_falls_back_home(
    service: Service, busybox: str
) -> None:
    with shared_dir() as directory:  # root's distributions are mapped: a traversable parent
        _falls_back_home(service, busybox, directory)


def _falls_back_home(service: Service, busybox: str, tmp_path: Path) -> None:
    # A directory of a uid the distribution does not map, closed to others: the host's
    # root may be there, the distribution's root may not (as a Windows path WSL cannot
    # translate), so the program starts at home, with a warning.
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    os.chown(hidden, 54321, 54321)
    result = service.ok("-d", busybox, "-e", "pwd", cwd=str(hidden))
    assert result.out == "/root\n"
    assert result.err == (
        f"lxss: warning: cannot enter /mnt/host{hidden}: Permission denied; starting in /root\n"
    )
    # One the distribution cannot even see as a directory: the same, said before the start.
    (hidden / "inner").mkdir()
    result = service.ok("-d", busybox, "-e", "pwd", cwd=str(hidden / "inner"))
    assert result.out == "/root\n"
    assert result.err == (
        f"lxss: warning: cannot enter /mnt/host{hidden}/inner (the host's {hidden}/inner): not a "
        "directory the distribution can see; starting in /root\n"
    )
