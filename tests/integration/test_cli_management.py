"""The management commands as a user meets them: names, defaults, the listings,
--status/--version/--help, and how lxss reports its own failures (one line, 255).

Defaults and listings are checked as an unprivileged test user, whose set of
distributions the test controls entirely (root's is shared with other tests).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_USERS, Service, busybox_tarball
from mgmt import (
    User,
    assert_fails,
    call,
    names,
    registry_rows,
    shared_dir,
)

import lxss

USER = TEST_USERS[1]


@pytest.fixture(scope="module")
def tarball(test_users: tuple[str, str]) -> Iterator[Path]:
    with shared_dir() as directory:
        path = busybox_tarball(directory)
        path.chmod(0o644)
        yield path


@pytest.fixture
def home(service: Service, test_users: tuple[str, str]) -> Iterator[Path]:
    """The test user's home, for install locations; the user has no distribution before
    the test, and none after it."""
    assert names(service, user=USER) == [], "left over by an earlier test"
    yield Path(User.named(USER).home)
    assert names(service, user=USER) == [], "the test left a distribution registered"


def imp(service: Service, tarball: Path, home: Path, name: str, user: str = USER) -> None:
    service.ok("--import", name, str(home / f"d-{name}"), str(tarball), user=user)


def unregister(service: Service, name: str, user: str = USER) -> None:
    service.ok("--unregister", name, user=user)


# Names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "Z9", "A-b_c.9", "-", ".", "x" * 256])
def test_valid_names(service: Service, tarball: Path, home: Path, name: str) -> None:
    location = home / "d-valid"
    result = service.ok("--import", name, str(location), str(tarball), user=USER)
    try:
        assert result.out == f"Imported '{name}'.\n"
        assert names(service, user=USER) == [name]
        assert call(service, "GetDefaultDistribution", user=USER)["parameters"]["name"] == name
    finally:
        unregister(service, name)
    assert names(service, user=USER) == []


@pytest.mark.parametrize(
    "name",
    ["", "x" * 257, "has space", "ümlaut", "a/b", "../up", "tab\there", "semi;colon", "star*",
     "new\nline"],
)  # fmt: skip
def test_invalid_names_are_refused(service: Service, tarball: Path, home: Path, name: str) -> None:
    location = home / "d-invalid"
    result = service.lxss("--import", name, str(location), str(tarball), user=USER)
    line = assert_fails(result, "invalid distribution name")
    assert "1 to 256 letters, digits, '.', '_' or '-'" in line
    assert not location.exists(), "lxss removes the directory it created"
    assert [r for r in registry_rows(service) if r["name"] == name] == []
    assert names(service, user=USER) == []


def test_an_option_is_not_a_name(service: Service, tarball: Path, home: Path) -> None:
    result = service.lxss("--import", "-x", str(home / "d-x"), str(tarball), user=USER)
    assert_fails(result, "unknown option '-x'", "(see: lxss --help)")


def test_names_are_unique_per_user_whatever_their_case(
    service: Service, tarball: Path, home: Path
) -> None:
    imp(service, tarball, home, "Dup")
    try:
        [original] = registry_rows(service, "Dup")
        for spelling in ("Dup", "dup", "DUP", "dUp"):
            location = home / f"d-{spelling}-2"
            result = service.lxss("--import", spelling, str(location), str(tarball), user=USER)
            assert_fails(result, f"a distribution named '{spelling}' already exists")
            assert not location.exists()
        assert registry_rows(service, "Dup") == [original]
        assert names(service, user=USER) == ["Dup"]
        # Any spelling finds it.
        assert service.ok("--export", "dUP", "-", user=USER).stdout[257:262] == b"ustar"
        service.ok("-s", "DUP", user=USER)
    finally:
        unregister(service, "dup")
    assert names(service, user=USER) == []
    assert not (home / "d-Dup/distribution").exists()


def test_same_name_for_two_users(service: Service, tarball: Path, home: Path) -> None:
    other = User.named(TEST_USERS[0])
    imp(service, tarball, home, "shared")
    try:
        service.ok("--import", "SHARED", str(Path(other.home) / "d-shared"), str(tarball),
                   user=other.name)  # fmt: skip
        try:
            assert names(service, user=USER) == ["shared"]
            assert names(service, user=other.name) == ["SHARED"]
        finally:
            unregister(service, "shared", user=other.name)
            (Path(other.home) / "d-shared").rmdir()
        assert names(service, user=USER) == ["shared"]
    finally:
        unregister(service, "shared")


# Defaults ----------------------------------------------------------------------------


def listing(service: Service) -> list[str]:
    return service.ok("--list", user=USER).out.splitlines()


def verbose(service: Service) -> list[list[str]]:
    lines = service.ok("-l", "-v", user=USER).out.splitlines()
    header, rows = lines[0], lines[1:]
    assert re.fullmatch(r"  NAME +  STATE +  VERSION", header), header
    width = header.index("STATE") - 4  # "  NAME...  STATE": two marks, two spaces
    parsed = []
    for line in rows:
        assert line[0] in "* " and line[1] == " ", line
        name_column, rest = line[2 : 2 + width], line[2 + width :]
        assert rest.startswith("  "), line
        parsed.append([line[0], name_column.rstrip(), *rest.split()])
    return parsed


def default_name(service: Service) -> str | None:
    reply = call(service, "GetDefaultDistribution", user=USER)
    if "error" in reply:
        assert reply["error"] == "io.lxss.Service.DefaultDistroNotFound", reply
        return None
    return str(reply["parameters"]["name"])


def test_default_distribution_follows_unregistering(
    service: Service, tarball: Path, home: Path
) -> None:
    assert_fails(service.lxss("--list", user=USER), "no distribution is installed")
    assert service.ok("-l", "-q", user=USER).out == ""
    assert "Default distribution: (none)" in service.ok("--status", user=USER).out
    assert default_name(service) is None
    registered = ["first", "second", "a-long-third-name"]
    try:
        for name in registered:
            imp(service, tarball, home, name)
        # The first one installed became the default; the list shows it first, then the
        # others in the order they were registered.
        assert default_name(service) == "first"
        assert listing(service) == ["lxss distributions:", "first (default)", "second",
                                    "a-long-third-name"]  # fmt: skip
        assert verbose(service) == [["*", "first", "Stopped", "1"],
                                    [" ", "second", "Stopped", "1"],
                                    [" ", "a-long-third-name", "Stopped", "1"]]  # fmt: skip
        result = service.ok("--set-default", "a-long-third-name", user=USER)
        assert result.out == "'a-long-third-name' is now the default distribution.\n"
        assert [row[:2] for row in verbose(service)] == [
            ["*", "a-long-third-name"], [" ", "first"], [" ", "second"]
        ]  # fmt: skip
        assert "Default distribution: a-long-third-name" in service.ok("--status",
                                                                       user=USER).out  # fmt: skip
        # Unregistering the default makes the oldest remaining one the default.
        unregister(service, "a-long-third-name")
        registered.remove("a-long-third-name")
        assert default_name(service) == "first"
        assert verbose(service)[0][:2] == ["*", "first"]
        # Unregistering another leaves the default alone.
        unregister(service, "second")
        registered.remove("second")
        assert default_name(service) == "first"
        # GUIDs name distributions too, in any case and with braces.
        guid = registry_rows(service, "first")[0]["guid"]
        service.ok("-s", "{" + guid.upper() + "}", user=USER)
        unregister(service, "first")
        registered.remove("first")
        assert default_name(service) is None
        assert_fails(service.lxss("--list", user=USER), "no distribution is installed")
        assert "Default distribution: (none)" in service.ok("--status", user=USER).out
    finally:
        for name in registered:
            unregister(service, name)


def test_set_default_and_unregister_unknown(service: Service, home: Path) -> None:
    for args in (["-s", "nothing"], ["--set-default", "nothing"], ["--unregister", "nothing"],
                 ["--export", "nothing", "-"], ["-t", "nothing"]):  # fmt: skip
        assert_fails(service.lxss(*args, user=USER), "there is no distribution named 'nothing'")


def test_set_default_version(service: Service, home: Path) -> None:
    status = service.ok("--status", user=USER).out
    available = re.search(r"^Versions available: (.*)$", status, re.M)
    assert available, status
    versions = available.group(1).split(", ")
    assert "1" in versions
    try:
        for version in ("2", "1"):
            result = service.lxss("--set-default-version", version, user=USER)
            reply = call(service, "EnumerateDistributions", user=USER)["parameters"]
            if version in versions:
                assert result.returncode == 0, str(result)
                assert result.out == f"New distributions will use version {version}.\n"
                assert reply["defaultVersion"] == int(version)
                assert f"Default version: {version}" in service.ok("--status", user=USER).out
            else:
                assert_fails(result, f"version {version} cannot be used")
                assert reply["defaultVersion"] != int(version)
        for bad in ("3", "0", "one", ""):
            assert_fails(service.lxss("--set-default-version", bad, user=USER),
                         f"invalid version '{bad}'")  # fmt: skip
    finally:
        service.ok("--set-default-version", "1", user=USER)


# Listing -----------------------------------------------------------------------------


def test_list_options(service: Service, tarball: Path, home: Path) -> None:
    imp(service, tarball, home, "listed")
    try:
        assert names(service, user=USER) == ["listed"]
        assert service.ok("--list", "--quiet", user=USER).out == "listed\n"
        assert service.ok("-l", "--verbose", user=USER).out == service.ok("-l", "-v",
                                                                        user=USER).out  # fmt: skip
        # Nothing runs: --running finds nothing (quietly with -q).
        assert_fails(service.lxss("-l", "--running", user=USER), "no distribution is running")
        assert service.ok("-l", "--running", "-q", user=USER).out == ""
        assert_fails(service.lxss("-l", "-v", "-q", user=USER), "cannot be combined")
        assert "Running distributions: (none)" in service.ok("--status", user=USER).out
    finally:
        unregister(service, "listed")


# Version, help, status ------------------------------------------------------------------


def test_version_and_help(service: Service) -> None:
    for flag in ("--version", "-v"):
        result = service.ok(flag)
        python = ".".join(map(str, sys.version_info[:3]))
        expected = (f"lxss version: {lxss.__version__}\nKernel version: {os.uname().release}\n"
                    f"Python version: {python}\n")  # fmt: skip
        assert (result.out, result.err) == (expected, "")
    for flag in ("--help", "-h"):
        result = service.ok(flag)
        assert result.out.startswith("Usage: lxss ")
        for option in ("--import", "--export", "--format", "--unregister", "--list",
                       "--set-default", "--set-default-version", "--status", "--version",
                       "--running", "-q", "-v"):  # fmt: skip
            assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", result.out), option


def test_status(service: Service, home: Path) -> None:
    out = service.ok("--status", user=USER).out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "Default distribution", "Default version", "Utility VM", "Running distributions",
        "Versions available", out[-1].split(":")[0],
    ]  # fmt: skip
    assert out[-1].startswith(f"lxssd {lxss.__version__} on Linux ")


# Failures: one line, exit 255 -----------------------------------------------------------

USAGE_ERRORS = [
    ["--bogus"],
    ["--import", "a", "b"],
    ["--import", "a", "b", "c", "d"],
    ["--import", "a", "b", "c", "--version"],
    ["--export", "a"],
    ["--export", "a", "f", "--format"],
    ["--export", "a", "f", "--bogus"],
    ["--list", "--bogus"],
    ["--list", "extra"],
    ["-d", "x", "--list"],
    ["--unregister"],
    ["--unregister", "a", "b"],
    ["-s"],
    ["--set-default-version"],
    ["--status", "now"],
    ["--version", "2"],
    ["--shell-type", "bad", "ls"],
    ["-e"],
    ["--for-user"],
    ["--for-user", "no-such-user-here", "-l"],
    ["-d"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a) or "empty")
def test_usage_errors(service: Service, argv: list[str]) -> None:
    assert_fails(service.lxss(*argv), "(see: lxss --help)")


def test_service_unreachable(service: Service, test_users: tuple[str, str]) -> None:
    """An unprivileged user without a service gets one line (root would start one)."""
    with shared_dir() as directory:
        env = {"LXSS_RUNTIME_DIR": str(directory / "nothing-here")}
        assert_fails(service.lxss("--list", user=USER, env=env), "the lxss service is not running")
        directory.joinpath("nothing-here").mkdir(mode=0o700)
        assert_fails(service.lxss("--list", user=USER, env=env), "cannot reach lxssd",
                     "permission denied")  # fmt: skip
