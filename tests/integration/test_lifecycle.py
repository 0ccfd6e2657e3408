"""A distribution's states as lxss shows them and the registry stores them: written
Installing, turned Installed at the end of its import; locked while it is being
imported or exported, whoever asks (the owner, or root acting for the owner, reach
the same UserSession)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_USERS, Service, busybox_tarball
from mgmt import (
    User,
    assert_fails,
    call,
    member,
    minimal_linux,
    registered,
    registry_rows,
    rootfs_of,
    shared_dir,
    spawn_lxss,
    tar_bytes,
    wait_for,
)

OWNER = TEST_USERS[0]


def table(service: Service, *before: str, user: str | None = OWNER) -> dict[str, tuple[str, ...]]:
    """`lxss -l -v` as {name: (default mark, state, version)}."""
    result = service.ok(*before, "--list", "--verbose", user=user)
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "VERSION"], result.out
    rows = {}
    for line in lines[1:]:
        mark, rest = line[:2], line[2:].split()
        assert mark in ("* ", "  "), line
        rows[rest[0]] = (mark.strip(), *rest[1:])
    return rows


@pytest.fixture
def workdir(test_users: tuple[str, str]) -> Iterator[Path]:
    with shared_dir() as path:
        yield path


@pytest.fixture
def owner_home(test_users: tuple[str, str]) -> Iterator[Path]:
    """A directory of the owner's own for install locations, removed afterwards."""
    user = User.named(OWNER)
    path = Path(user.home) / "lifecycle"
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True, timeout=60)


@contextlib.contextmanager
def stalled_import(
    service: Service, name: str, location: Path
) -> Iterator[tuple[subprocess.Popen[bytes], io.BufferedWriter, bytes]]:
    """An import (as the owner) whose archive arrives only when the test writes it."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        proc = spawn_lxss(service, "--import", name, str(location), "-", user=OWNER,
                          stdin=read_end, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)  # fmt: skip
    finally:
        os.close(read_end)
    members = [*minimal_linux(), (member("etc/late"), b"written last\n")]
    archive = tar_bytes(members)
    pipe = open(write_end, "wb")  # noqa: SIM115 - closed below
    try:
        yield proc, pipe, archive
    finally:
        with contextlib.suppress(BrokenPipeError):
            pipe.close()
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_installing_then_installed(service: Service, owner_home: Path) -> None:
    owner = User.named(OWNER)
    location = owner_home / "d"
    with stalled_import(service, "slow", location) as (proc, pipe, archive):
        pipe.write(archive[:1024])  # the first members' headers, not the end
        pipe.flush()
        [row] = wait_for(lambda: registry_rows(service, "slow"), 30, "the row")
        assert (row["state"], row["owner_uid"]) == ("Installing", owner.uid)
        assert table(service) == {"slow": ("", "Installing", "1")}, "not the default yet"
        assert table(service, "--for-user", OWNER, user=None) == table(service)
        # While it is being installed it can be neither used nor changed, by anyone.
        for args in (["--export", "slow", "-"], ["--unregister", "slow"], ["-s", "slow"]):
            assert_fails(service.lxss(*args, user=OWNER), "busy", "Installing")
            assert_fails(service.lxss("--for-user", OWNER, *args), "busy", "Installing")
        again = owner_home / "again"
        for user, extra, spelling in ((OWNER, [], "SLOW"), (None, ["--for-user", OWNER], "Slow")):
            result = service.lxss(*extra, "--import", spelling, str(again), "-", user=user,
                                  input=archive)  # fmt: skip
            assert_fails(result, "already exists")
            assert not again.exists()
        reply = call(service, "GetDefaultDistribution", user=OWNER)
        assert reply["error"] == "io.lxss.Service.DefaultDistroNotFound"
        assert proc.poll() is None, "the import is still waiting for its archive"
        pipe.write(archive[1024:])
        pipe.close()
        proc.wait(60)
        out, err = proc.communicate()
        assert (proc.returncode, out, err) == (0, b"Imported 'slow'.\n", b"")
    try:
        [row] = registry_rows(service, "slow")
        assert row["state"] == "Installed"
        assert table(service) == {"slow": ("*", "Stopped", "1")}
        assert (rootfs_of(location) / "etc/late").read_text() == "written last\n"
        reply = call(service, "GetDefaultDistribution", user=OWNER)
        assert reply["parameters"]["name"] == "slow"
    finally:
        service.ok("--unregister", "slow", user=OWNER)


def test_export_locks_the_distribution_for_owner_and_root(
    service: Service, workdir: Path, owner_home: Path
) -> None:
    """The owner's calls and root's `--for-user` calls meet in one UserSession: both
    see the export that is under way, and neither can remove the distribution meanwhile."""
    archive = busybox_tarball(workdir)
    os.chmod(archive, 0o644)
    with registered(service, "exported", owner_home / "d", archive, user=OWNER):
        exporting = spawn_lxss(service, "--export", "exported", "-", user=OWNER,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            # Nobody reads the pipe yet: the export blocks once it is full.
            wait_for(lambda: table(service)["exported"][1] == "Exporting", 30, "Exporting")
            assert table(service, "--for-user", OWNER, user=None)["exported"][1] == "Exporting"
            assert_fails(service.lxss("--for-user", OWNER, "--unregister", "exported"),
                         "busy", "Exporting")  # fmt: skip
            assert_fails(service.lxss("--unregister", "exported", user=OWNER), "busy")
            assert_fails(service.lxss("--export", "exported", "-", user=OWNER), "busy")
            out, err = exporting.communicate(timeout=60)
        finally:
            if exporting.poll() is None:
                exporting.kill()
                exporting.communicate(timeout=30)
        assert (exporting.returncode, err) == (0, b"")
        with tarfile.open(fileobj=io.BytesIO(out)) as tar:
            assert tar.getmember("./bin/busybox").size == os.path.getsize("/bin/busybox")
        assert table(service)["exported"] == ("*", "Stopped", "1")
