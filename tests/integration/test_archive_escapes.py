"""Hostile archives: whatever member names and links say, nothing is written outside
the distribution's directory, and a host file is never linked or overwritten.

Each import either succeeds with everything confined to its root (and a warning
for what was skipped) or fails with one line, leaving no registry row and no
directory behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TEST_USERS, Service
from mgmt import (
    User,
    assert_fails,
    member,
    minimal_linux,
    registered,
    registry_rows,
    rootfs_of,
    shared_dir,
    tar_bytes,
)

WATCHED = ("/etc/passwd", "/etc/shadow")


def fingerprint(path: str) -> tuple[int, int, int, int, str]:
    st = os.lstat(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return st.st_nlink, st.st_uid, st.st_gid, st.st_mode, digest


@pytest.fixture
def bait() -> Iterator[Path]:
    """A host directory with a file an escaping archive would want to overwrite or link."""
    with shared_dir("lxss-bait-") as directory:
        (directory / "secret").write_text("host data\n")
        yield directory


@pytest.fixture(params=["root", TEST_USERS[0]])
def owner(request: pytest.FixtureRequest, test_users: tuple[str, str]) -> User:
    return User.named(request.param) if request.param != "root" else User("root", 0, 0, "/root")


def hostile_members(bait: Path, tag: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    depth = "../" * 12
    bait_rel = depth + str(bait).lstrip("/")
    return [
        *minimal_linux(),
        # Plain names that climb out, or start at the host's root.
        (member(f"../{tag}-dotdot"), b"escaped\n"),
        (member(f"{depth}{bait.relative_to('/')}/{tag}-deep-dotdot"), b"escaped\n"),
        (member(f"etc/../../{tag}-mid-dotdot"), b"escaped\n"),
        (member(f"{bait}/{tag}-absolute"), b"confined\n"),
        # A symlink to the root (and to the bait), then members written through it.
        (member("evil", tarfile.SYMTYPE, linkname="/"), None),
        (member(f"evil{bait}/{tag}-through-symlink"), b"confined\n"),
        (member("bait-link", tarfile.SYMTYPE, linkname=str(bait)), None),
        (member("bait-link/secret"), b"overwritten\n"),
        # A symlink climbing with "..", then a write through it.
        (member("up", tarfile.SYMTYPE, linkname=bait_rel), None),
        (member(f"up/{tag}-through-dotdot-link"), b"confined\n"),
        # Hard links to host files, by relative and absolute names and through symlinks.
        (member("hl-passwd", tarfile.LNKTYPE, linkname="../../../../../../etc/passwd"), None),
        (member("hl-shadow", tarfile.LNKTYPE, linkname="/etc/shadow"), None),
        (member("hl-bait", tarfile.LNKTYPE, linkname=f"{bait}/secret"), None),
        (member("hl-via-link", tarfile.LNKTYPE, linkname="bait-link/secret"), None),
        (member("hl-via-evil", tarfile.LNKTYPE, linkname="evil/etc/shadow"), None),
        # ... and a write through a hard link made to a symlink's target.
        (member("hl-then-write", tarfile.LNKTYPE, linkname="evil/etc/os-release"), None),
        (member("hl-then-write"), b"rewritten\n"),
    ]


def test_hostile_archive_is_confined(service: Service, owner: User, bait: Path) -> None:
    tag = f"lxss-escape-{os.getpid()}-{owner.uid}"
    watched = (*WATCHED, str(bait / "secret"))
    before = {path: fingerprint(path) for path in watched}
    host_inodes = {(os.stat(p).st_dev, os.stat(p).st_ino) for p in watched}
    with shared_dir() as work:
        archive = work / "hostile.tar"
        archive.write_bytes(tar_bytes(hostile_members(bait, tag)))
        location = Path(owner.home) / "hostile" if owner.uid else work / "hostile"
        try:
            with registered(service, f"hostile-{owner.uid}", location, archive,
                            user=owner.name) as result:  # fmt: skip
                rootfs = rootfs_of(location)
                warnings = result.err.splitlines()
                assert all(w.startswith("lxss: warning: ") for w in warnings), result.err
                assert any("path contains '..'" in w for w in warnings), result.err
                # Absolute names and writes through symlinks land inside the root.
                inside = rootfs / str(bait).lstrip("/")
                for suffix in ("absolute", "through-symlink", "through-dotdot-link"):
                    assert (inside / f"{tag}-{suffix}").read_text() == "confined\n", suffix
                assert (inside / "secret").read_text() == "overwritten\n"
                assert not any(rootfs.rglob(f"{tag}-*dotdot")), "a '..' member was written"
                for link in ("hl-passwd", "hl-shadow", "hl-bait", "hl-via-link", "hl-via-evil"):
                    path = rootfs / link
                    if os.path.lexists(path):
                        st = os.lstat(path)
                        assert (st.st_dev, st.st_ino) not in host_inodes, link
                # The hard link was replaced, not written through.
                assert (rootfs / "hl-then-write").read_text() == "rewritten\n"
                assert (rootfs / "etc/os-release").read_text() == "ID=minimal\n"
        finally:
            escaped = [
                os.path.join(d, n)
                for d in {"/", str(bait), str(work), str(location.parent), owner.home}
                for n in os.listdir(d)
                if n.startswith(tag)
            ]
            for leftover in escaped:
                os.unlink(leftover)
            if owner.uid:
                os.rmdir(location)
    assert escaped == [], f"files escaped the distribution: {escaped}"
    after = {path: fingerprint(path) for path in watched}
    assert after == before, "a host file was changed or linked"


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    return tar_bytes(list(members))


def _truncated() -> bytes:
    whole = _tar(*minimal_linux(), (member("etc/big"), os.urandom(100_000)))
    return whole[: 3 * 512 + 50_000]


BAD_ARCHIVES: dict[str, tuple[Callable[[], bytes], str]] = {
    # id: (archive bytes, what the one line must say)
    "zero-bytes": (lambda: b"", "the archive is empty"),
    "random": (lambda: os.urandom(4096), "not a tar archive"),
    "not-linux": (lambda: _tar((member("just-a-file"), b"data")), "neither /etc nor /bin/sh"),
    "truncated": (_truncated, "import failed"),
    "corrupt-gzip": (lambda: gzip.compress(_tar(*minimal_linux()))[:-30] + b"\0" * 30,
                     "corrupt"),
}  # fmt: skip


@pytest.mark.parametrize("kind", BAD_ARCHIVES)
def test_refused_archives_leave_nothing(service: Service, tmp_path: Path, kind: str) -> None:
    make, message = BAD_ARCHIVES[kind]
    archive = tmp_path / "bad"
    archive.write_bytes(make())
    location = tmp_path / "install"
    name = f"refused-{kind}"
    line = assert_fails(service.lxss("--import", name, str(location), str(archive)), message)
    assert "Traceback" not in line and "unexpectedly" not in line, line
    assert registry_rows(service, name) == []
    assert not location.exists(), "the directory lxss created is removed again"


ODD_MEMBERS: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    # id: members after a minimal Linux tree; each must be skipped with a warning naming it
    "dangling-parent": [
        (member("dangling", tarfile.SYMTYPE, linkname="/nonexistent/dir"), None),
        (member("dangling/file"), b"x"),
    ],
    "file-parent": [(member("etc/os-release/under-a-file"), b"x")],
    "deep-file-parent": [(member("etc/os-release/a/b/c"), b"x")],
    "looping-parent": [
        (member("loop", tarfile.SYMTYPE, linkname="loop"), None),
        (member("loop/file"), b"x"),
    ],
    "hard-link-to-directory": [(member("etc-again", tarfile.LNKTYPE, linkname="etc"), None)],
}  # fmt: skip


@pytest.mark.parametrize("kind", ODD_MEMBERS)
def test_odd_members_are_skipped_with_a_warning(
    service: Service, tmp_path: Path, kind: str
) -> None:
    """Members tar itself would refuse to create are skipped and named, and the rest of
    the archive is still imported (a later member proves it)."""
    members = [*minimal_linux(), *ODD_MEMBERS[kind], (member("etc/after"), b"after\n")]
    archive = tmp_path / "odd.tar"
    archive.write_bytes(tar_bytes(members))
    skipped = ODD_MEMBERS[kind][-1][0].name
    with registered(service, f"odd-{kind}", tmp_path / "d", archive) as result:
        [warning] = result.err.splitlines()
        assert warning.startswith("lxss: warning: skipped "), warning
        assert f"'{skipped}'" in warning, warning
        rootfs = rootfs_of(tmp_path / "d")
        assert (rootfs / "etc/after").read_text() == "after\n"
        assert (rootfs / "etc/os-release").read_text() == "ID=minimal\n"


def test_warnings_cannot_break_lines_or_drive_the_terminal(
    service: Service, tmp_path: Path
) -> None:
    """Member names come from the archive's author: lxss shows their control characters
    escaped, one warning per line."""
    hostile = "../two\nlines \x1b[2J\x1b]0;title\x07 \u2028end"
    members = [*minimal_linux(), (member(hostile), b"x"), (member("dev/null", tarfile.CHRTYPE),
                                                           None)]  # fmt: skip
    members[-1][0].name = "dev/\x1b[31mred"
    archive = tmp_path / "names.tar"
    archive.write_bytes(tar_bytes(members))
    with registered(service, "escaped-names", tmp_path / "d", archive) as result:
        lines = result.err.splitlines()
        assert len(lines) == 2, result.err
        assert all(line.startswith("lxss: warning: ") for line in lines), result.err
        assert not any(c in result.err for c in "\x1b\x07\u2028"), repr(result.err)
        assert "two\\nlines \\x1b[2J" in lines[0], lines
        assert "dev/\\x1b[31mred" in lines[1], lines
