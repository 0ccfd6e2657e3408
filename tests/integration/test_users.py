"""Unprivileged users: lxss opens archives and install directories with the caller's
own rights (lxssd never opens a path a user names), and each user sees, exports,
changes and removes only their own distributions, by name or by GUID."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_USERS, Service, busybox_tarball
from mgmt import (
    User,
    assert_fails,
    call,
    guid_of,
    names,
    registered,
    registry_rows,
    rootfs_of,
    shared_dir,
)

A, B = TEST_USERS


@pytest.fixture
def work(test_users: tuple[str, str]) -> Iterator[Path]:
    """A root-owned 0755 directory holding a readable archive."""
    with shared_dir() as directory:
        tarball = busybox_tarball(directory)
        tarball.chmod(0o644)
        yield directory


def nothing_registered(service: Service, user: str, name: str) -> None:
    uid = User.named(user).uid
    assert [r for r in registry_rows(service, name) if r["owner_uid"] == uid] == []


def test_archive_the_user_cannot_read(service: Service, work: Path) -> None:
    secret = work / "secret.tar.gz"
    secret.write_bytes((work / "bb.tar.gz").read_bytes())
    secret.chmod(0o600)
    location = Path(User.named(A).home) / "from-secret"
    result = service.lxss("--import", "secret", str(location), str(secret), user=A)
    assert_fails(result, f"cannot open {secret}", "permission denied")
    nothing_registered(service, A, "secret")
    assert not location.exists()
    # Nor a readable file in a directory the user cannot enter.
    directory = work / "private"
    directory.mkdir(mode=0o700)
    hidden = directory / "bb.tar.gz"
    hidden.write_bytes(secret.read_bytes())
    hidden.chmod(0o644)
    result = service.lxss("--import", "hidden", str(location), str(hidden), user=A)
    assert_fails(result, "permission denied")
    assert not location.exists()


@pytest.mark.parametrize("where", ["below-root-dir", "root-dir", "root-dir-0777"])
def test_install_directory_the_user_cannot_use(service: Service, work: Path, where: str) -> None:
    tarball = work / "bb.tar.gz"
    if where == "below-root-dir":
        location, fragments = work / "sub", ("cannot create", "permission denied")
    else:
        location = work / where
        location.mkdir()
        location.chmod(0o777 if where.endswith("0777") else 0o755)
        fragments = ("permission denied", "not a directory you own")
    result = service.lxss("--import", "nowhere", str(location), str(tarball), user=A)
    assert_fails(result, *fragments)
    nothing_registered(service, A, "nowhere")
    assert not rootfs_of(location).exists()
    if where == "below-root-dir":
        assert not location.exists()
    else:
        assert os.listdir(location) == []
    assert names(service, user=A) == []


def test_user_cannot_install_for_someone_else(service: Service, work: Path) -> None:
    location = Path(User.named(A).home) / "for-b"
    result = service.lxss("--for-user", B, "--import", "theirs", str(location),
                          str(work / "bb.tar.gz"), user=A)  # fmt: skip
    assert_fails(result, "only root may act for another user")
    assert not location.exists()
    for user in (A, B):
        assert names(service, user=user) == []


def test_users_see_only_their_own(service: Service, work: Path) -> None:
    a, b = User.named(A), User.named(B)
    tarball = work / "bb.tar.gz"
    with registered(service, "private", Path(a.home) / "private", tarball, user=A), \
         registered(service, "mine", Path(b.home) / "mine", tarball, user=B):  # fmt: skip
        guid = guid_of(service, "private", user=A)
        assert names(service, user=A) == ["private"]
        assert names(service, user=B) == ["mine"]
        listed = call(service, "EnumerateDistributions", user=B)["parameters"]["distributions"]
        assert [d["name"] for d in listed] == ["mine"]
        before = (rootfs_of(Path(a.home) / "private") / "bin/busybox").stat()
        out = Path(b.home) / "stolen.tar"
        for key in ("private", "PRIVATE", guid, guid.upper(), "{" + guid + "}"):
            for args in (["--export", key, str(out)], ["--export", key, "-"],
                         ["-s", key], ["--set-default", key], ["--unregister", key],
                         ["-t", key]):  # fmt: skip
                assert_fails(service.lxss(*args, user=B), f"no distribution named '{key}'")
            for method, params in (("SetDefaultDistribution", {"distribution": key}),
                                   ("UnregisterDistribution", {"distribution": key}),
                                   ("ConfigureDistribution", {"distribution": key,
                                                              "defaultUid": 0})):  # fmt: skip
                reply = call(service, method, user=B, **params)
                assert reply.get("error") == "io.lxss.Service.DistroNotFound", reply
        assert not out.exists()
        # Asking the service to act for A is root's privilege alone.
        for method in ("EnumerateDistributions", "GetDefaultDistribution", "GetStatus"):
            reply = call(service, method, user=B, forUid=a.uid)
            assert reply.get("error") == "io.lxss.Service.PermissionDenied", reply
        reply = call(service, "UnregisterDistribution", user=B, distribution=guid, forUid=a.uid)
        assert reply.get("error") == "io.lxss.Service.PermissionDenied", reply
        # A's distribution is untouched, and still A's default; root sees it only when asked.
        assert names(service, user=A) == ["private"]
        assert call(service, "GetDefaultDistribution", user=A)["parameters"]["guid"] == guid
        assert (rootfs_of(Path(a.home) / "private") / "bin/busybox").stat() == before
        assert "private" not in names(service)
        assert service.ok("--for-user", A, "-l", "-q").out == "private\n"
        assert_fails(service.lxss("--unregister", guid), "no distribution named")


def test_user_files_stay_out_of_reach_of_other_users(service: Service, work: Path) -> None:
    """The install directory lxss creates is private to its owner; a distribution's
    files belong to the owner's ids, never to another user or to root."""
    a = User.named(A)
    location = Path(a.home) / "owned"
    with registered(service, "owned", location, work / "bb.tar.gz", user=A):
        assert (location.stat().st_uid, location.stat().st_mode & 0o777) == (a.uid, 0o700)
        owners = {p.lstat().st_uid for p in [rootfs_of(location), *rootfs_of(location).rglob("*")]}
        assert owners == {a.uid}, "the busybox tree is all root's, which is A's uid on the host"
    location.rmdir()
