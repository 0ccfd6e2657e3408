"""Hostile archives for --import, imported by an unprivileged user (promise 4 of
docs/security.md): each is refused with one clear line or confined to the new
distribution's root, with no file written outside it and no registry row left behind.

test_archive_escapes.py covers names that climb out, absolute names, writes through
symlinks and hard links to host files; this suite adds what it does not: a directory
replaced by a symlink and symlink chains as parents, device nodes, 1 TiB sparse
members, compression bombs (stopped by the free-space check and the worker's memory
limit), and truncated or corrupt streams of every compression.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Result, Service, busybox_tarball
from mgmt import (
    User,
    assert_fails,
    member,
    minimal_linux,
    registry_rows,
    rootfs_of,
    shared_dir,
    tar_bytes,
)
from security_support import ATTACKER

GIB = 1 << 30


@pytest.fixture
def owner(test_users: tuple[str, str]) -> User:
    return User.named(ATTACKER)


@pytest.fixture
def work() -> Iterator[Path]:
    """Where the archives are written: readable by the importing user."""
    with shared_dir("lxss-archives-") as directory:
        yield directory


@pytest.fixture
def bait() -> Iterator[Path]:
    """A host directory an escaping member would write into."""
    with shared_dir("lxss-bait-") as directory:
        (directory / "secret").write_text("host data\n")
        yield directory


def import_as(service: Service, owner: User, name: str, location: Path, archive: Path) -> Result:
    archive.chmod(0o644)
    return service.lxss("--import", name, str(location), str(archive), user=owner.name)


def assert_refused_cleanly(
    service: Service, result: Result, name: str, location: Path, *fragments: str
) -> str:
    """One line naming the problem (never an internal failure), no row, no directory."""
    line = assert_fails(result, *fragments)
    assert "Traceback" not in line and "unexpectedly" not in line, line
    assert registry_rows(service, name) == [], f"a registry row was left for {name}"
    assert not location.exists(), f"{location} was left behind"
    return line


@contextlib.contextmanager
def unregistered_after(service: Service, owner: User, name: str) -> Iterator[None]:
    try:
        yield
    finally:
        result = service.lxss("--unregister", name, user=owner.name, timeout=120)
        assert result.returncode == 0, result
        assert registry_rows(service, name) == []


def fingerprint(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p): (p.lstat().st_ino, p.lstat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(directory.rglob("*"))
    }


# Links as parents ------------------------------------------------------------------------


def test_symlinked_parents_are_confined(
    service: Service, owner: User, work: Path, bait: Path
) -> None:
    tag = f"lxss-parent-{os.getpid()}"
    before = fingerprint(bait)
    members = [
        *minimal_linux(),
        # The host directory's path exists inside too: a link to it resolves there.
        (member(str(bait), tarfile.DIRTYPE, mode=0o755), None),
        # A directory, then a symlink of the same name to a host directory, then a file
        # "in" it: the classic way past an extractor that checks each name once.
        (member("d", tarfile.DIRTYPE, mode=0o755), None),
        (member("d", tarfile.SYMTYPE, linkname=str(bait)), None),
        (member(f"d/{tag}-replaced-dir"), b"confined\n"),
        # A chain of symlinks ending at the host directory.
        (member("c1", tarfile.SYMTYPE, linkname="c2"), None),
        (member("c2", tarfile.SYMTYPE, linkname="c3"), None),
        (member("c3", tarfile.SYMTYPE, linkname=str(bait)), None),
        (member(f"c1/{tag}-chain"), b"confined\n"),
        (member("c1/secret"), b"overwritten\n"),
        # A nested parent that climbs above the root.
        (member("a/b", tarfile.SYMTYPE, linkname="../../../../../.."), None),
        (member(f"a/b{bait}/{tag}-above-root"), b"confined\n"),
        # A hard link whose target's parent is a symlink to the host directory.
        (member(f"{tag}-hard", tarfile.LNKTYPE, linkname="c1/secret"), None),
    ]
    archive = work / "parents.tar"
    archive.write_bytes(tar_bytes(members))
    location = Path(owner.home) / "sec-parents"
    result = import_as(service, owner, "sec-parents", location, archive)
    assert result.returncode == 0, result
    with unregistered_after(service, owner, "sec-parents"):
        rootfs = rootfs_of(location)
        inside = rootfs / str(bait).lstrip("/")
        for name in ("replaced-dir", "chain", "above-root"):
            assert (inside / f"{tag}-{name}").read_text() == "confined\n", name
        assert (inside / "secret").read_text() == "overwritten\n"
        hard = rootfs / f"{tag}-hard"
        assert hard.read_text() == "overwritten\n" and hard.stat().st_ino != os.stat(
            bait / "secret"
        ).st_ino  # fmt: skip
    assert fingerprint(bait) == before, "the host directory changed"
    assert not [p for p in Path(owner.home).rglob(f"{tag}*")], "a file landed in the home"


def test_an_install_location_below_a_symlink_to_a_root_directory(
    service: Service, owner: User, work: Path
) -> None:
    """The caller's own symlink in the path of the install location leads where the
    caller may not write: refused, nothing created there."""
    link = Path(owner.home) / "sec-to-etc"
    link.symlink_to("/etc")
    os.chown(link, owner.uid, owner.gid, follow_symlinks=False)
    try:
        before = set(os.listdir("/etc"))
        archive = busybox_tarball(work)
        result = import_as(service, owner, "sec-via-link", link / "sec-via-link", archive)
        assert_refused_cleanly(service, result, "sec-via-link", link / "sec-via-link",
                               "permission denied")  # fmt: skip
        assert set(os.listdir("/etc")) == before
    finally:
        link.unlink()


# Device nodes ------------------------------------------------------------------------------


def test_device_nodes_are_skipped(service: Service, owner: User, work: Path) -> None:
    root = os.stat("/")
    disk = member("dev/disk", tarfile.BLKTYPE)
    disk.devmajor, disk.devminor = os.major(root.st_dev), os.minor(root.st_dev)
    mem = member("dev/mem", tarfile.CHRTYPE)
    mem.devmajor, mem.devminor = 1, 1
    kmsg = member("kmsg", tarfile.CHRTYPE)
    kmsg.devmajor, kmsg.devminor = 1, 11
    members = [
        *minimal_linux(),
        (member("dev", tarfile.DIRTYPE, mode=0o755), None),
        (disk, None),
        (mem, None),
        (kmsg, None),
        (member("dev/disk-again", tarfile.LNKTYPE, linkname="dev/disk"), None),
        (member("dev/fifo", tarfile.FIFOTYPE), None),
    ]
    archive = work / "devices.tar"
    archive.write_bytes(tar_bytes(members))
    location = Path(owner.home) / "sec-devices"
    result = import_as(service, owner, "sec-devices", location, archive)
    assert result.returncode == 0, result
    with unregistered_after(service, owner, "sec-devices"):
        warnings = result.err.splitlines()
        assert any("3 device node(s) skipped" in line for line in warnings), result.err
        assert any("'dev/disk-again'" in line for line in warnings), result.err
        rootfs = rootfs_of(location)
        kinds = {str(p.relative_to(rootfs)): p.lstat().st_mode for p in rootfs.rglob("*")}
        assert not [p for p, mode in kinds.items() if stat.S_ISBLK(mode) or stat.S_ISCHR(mode)]
        assert stat.S_ISFIFO(kinds["dev/fifo"])
        assert not {"dev/disk", "dev/mem", "kmsg", "dev/disk-again"} & set(kinds)


# Huge members -----------------------------------------------------------------------------


def _sparse_archive(work: Path, options: list[str]) -> Path:
    """A root file system with a 1 TiB sparse file holding 4 KiB of data, by GNU tar."""
    root = work / "sparse-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=sparse\n")
    with open(root / "huge", "wb") as f:
        f.truncate(1 << 40)
        f.seek(1 << 39)
        f.write(b"x" * 4096)
    archive = work / "sparse.tar.gz"
    subprocess.run(["tar", "-C", str(root), "--sparse", *options, "-czf", str(archive), "."],
                   check=True, timeout=60)  # fmt: skip
    return archive


def _lying_sparse_map(work: Path) -> Path:
    """A pax (GNU 1.0) sparse member whose map puts its data 1 TiB past its stated size."""
    info = member("./GNUSparseFile.0/lying")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": "lying", "GNU.sparse.realsize": "100"}  # fmt: skip
    data = b"1\n1099511627776\n10\n".ljust(512, b"\0") + b"x" * 10
    archive = work / "lying.tar"
    archive.write_bytes(tar_bytes([*minimal_linux(), (info, data)]))
    return archive


SPARSE: dict[str, Callable[[Path], Path]] = {
    "gnu": lambda work: _sparse_archive(work, ["--format=gnu"]),
    "pax-1.0": lambda work: _sparse_archive(work, ["--format=pax", "--sparse-version=1.0"]),
    "lying-map": _lying_sparse_map,
}


@pytest.mark.parametrize("kind", SPARSE)
def test_one_tebibyte_sparse_members(service: Service, owner: User, work: Path, kind: str) -> None:
    """Refused (larger than the free space, or a map past the member's end), or else
    unpacked as sparse as it came: never 1 TiB written."""
    archive = SPARSE[kind](work)
    location = Path(owner.home) / f"sec-sparse-{kind}"
    result = import_as(service, owner, f"sec-sparse-{kind}", location, archive)
    if result.returncode != 0:
        line = assert_refused_cleanly(service, result, f"sec-sparse-{kind}", location)
        assert "bytes free" in line or "truncated" in line, line
        return
    with unregistered_after(service, owner, f"sec-sparse-{kind}"):
        for path in rootfs_of(location).rglob("*"):
            assert path.lstat().st_blocks * 512 < 64 << 20, f"{path} takes real space"


# Compression bombs -------------------------------------------------------------------------


def _compress(data: bytes, kind: str) -> bytes:
    command = {"zstd": ["zstd", "-q", "-c"], "xz": ["xz", "-0", "-c"]}[kind]
    return subprocess.run(command, input=data, capture_output=True, check=True, timeout=120).stdout


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.GNU_FORMAT)


def _members(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """Members as tar blocks, without the end-of-archive blocks (more may follow)."""
    out = b""
    for info, data in members:
        info.size = len(data or b"")
        out += _header(info) + (data or b"").ljust(-(-info.size // 512) * 512, b"\0")
    return out


def bomb(kind: str, member_size: int, members: int, present: int) -> bytes:
    """A compressed tar of a minimal Linux tree and *members* members of *member_size*
    zeros each, of which only the first *present* bytes of data are in the stream.

    The data is one compressed 64 MiB block of zeros, repeated: concatenated frames are
    one valid stream for zstd and xz alike, so 20 GiB stay a few hundred kB."""
    chunk = 64 << 20
    zeros = _compress(bytes(chunk), kind)
    out = io.BytesIO()
    out.write(_compress(_members(minimal_linux()), kind))
    for i in range(members):
        info = member(f"zeros-{i:04d}")
        info.size = member_size
        out.write(_compress(_header(info), kind))
        if present < member_size:
            out.write(zeros * (present // chunk))
            return out.getvalue()  # cut short, inside this member
        out.write(zeros * (member_size // chunk))
        present -= member_size
    out.write(_compress(bytes(1024), kind))  # the end-of-archive blocks
    return out.getvalue()


@pytest.fixture
def small_disk(owner: User) -> Iterator[Path]:
    """A 512 MiB tmpfs the importing user owns: the disk a bomb would fill."""
    with shared_dir("lxss-small-disk-") as directory:
        mount_point = directory / "disk"
        mount_point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size=512m,mode=0700,uid={owner.uid},gid={owner.gid}", "lxss-bomb",
                        str(mount_point)], check=True, timeout=30)  # fmt: skip
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], check=True, timeout=30)


@pytest.mark.parametrize("kind", ["zstd", "xz"])
def test_a_compression_bomb_with_one_huge_member(
    service: Service, owner: User, work: Path, kind: str
) -> None:
    """1 TiB of zeros in one member (1 GiB of it in the stream, a few kB compressed):
    refused at its header by the free-space check, before anything is written."""
    archive = work / f"bomb.tar.{kind}"
    archive.write_bytes(bomb(kind, 1 << 40, 1, GIB))
    assert archive.stat().st_size < 1 << 20
    location = Path(owner.home) / f"sec-bomb-{kind}"
    result = import_as(service, owner, f"sec-bomb-{kind}", location, archive)
    line = assert_refused_cleanly(service, result, f"sec-bomb-{kind}", location)
    assert "'zeros-0000' is 1099511627776 bytes" in line and "bytes free" in line, line


@pytest.mark.parametrize("kind", ["zstd", "xz"])
def test_a_compression_bomb_of_many_members_fills_no_disk(
    service: Service, owner: User, work: Path, small_disk: Path, kind: str
) -> None:
    """20 GiB of zeros as 320 members of 64 MiB, installed on a 512 MiB disk: each member
    fits, together they would not. The free-space check stops the import with a reserve
    left, and the failed import removes what it wrote."""
    archive = work / f"bomb.tar.{kind}"
    archive.write_bytes(bomb(kind, 64 << 20, 320, 20 * GIB))
    location = small_disk / "sec-bomb"
    result = import_as(service, owner, f"sec-bomb-many-{kind}", location, archive)
    line = assert_refused_cleanly(service, result, f"sec-bomb-many-{kind}", location)
    assert "bytes free on the target file system" in line, line
    assert os.listdir(small_disk) == []


def test_a_pax_header_bomb_is_stopped_by_the_workers_memory_limit(
    service: Service, owner: User, work: Path
) -> None:
    """A pax extended header that says it is 4 GiB long (1.5 GiB of zeros present, a few
    kB as zstd): tarfile reads a header whole, so the worker would need gigabytes; its
    cgroup allows 1 GiB, and the import says so."""
    header = member("././@PaxHeader", tarfile.XHDTYPE)
    header.size = 4 * GIB
    data = _compress(_members(minimal_linux()) + _header(header), "zstd")
    data += _compress(bytes(64 << 20), "zstd") * 24
    archive = work / "pax-bomb.tar.zst"
    archive.write_bytes(data)
    location = Path(owner.home) / "sec-pax-bomb"
    result = import_as(service, owner, "sec-pax-bomb", location, archive)
    line = assert_refused_cleanly(service, result, "sec-pax-bomb", location)
    assert "needs more than the 1024 MiB of memory an import may use" in line, line
    assert service.process is not None and service.process.poll() is None


# Truncated and corrupt streams ---------------------------------------------------------------

COMPRESSORS = {"gz": ["gzip", "-c"], "xz": ["xz", "-0", "-c"], "zst": ["zstd", "-q", "-c"],
               "bz2": ["bzip2", "-c"]}  # fmt: skip


def _plain(work: Path) -> bytes:
    root_tar = work / "plain.tar"
    tarball = busybox_tarball(work)
    root_tar.write_bytes(gzip.decompress(tarball.read_bytes()))
    return root_tar.read_bytes()


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) * 3 // 5]
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def _tar_offsets(data: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [info.offset for info in archive.getmembers()]


def _corrupt_last_header(data: bytes) -> bytes:
    last = _tar_offsets(data)[-1]
    return data[:last] + b"\xff" * 100 + data[last + 100 :]


def _cut_in_a_member(data: bytes) -> bytes:
    return _damage(data, "truncated")


def _cut_at_last_header(data: bytes) -> bytes:
    return data[: _tar_offsets(data)[-1]]


DAMAGED = [f"{fmt}-{how}" for fmt in COMPRESSORS for how in ("truncated", "corrupt")] + [
    "tar-corrupt-header", "tar-cut-at-a-header", "tar-cut-in-a-member",
]  # fmt: skip


@pytest.mark.parametrize("kind", DAMAGED)
def test_truncated_and_corrupt_streams_are_refused(
    service: Service, owner: User, work: Path, kind: str
) -> None:
    plain = _plain(work)
    fmt, _, how = kind.partition("-")
    if fmt == "tar":
        damage = {"corrupt-header": _corrupt_last_header, "cut-at-a-header": _cut_at_last_header,
                  "cut-in-a-member": _cut_in_a_member}[how]  # fmt: skip
        data = damage(plain)
    else:
        compressed = subprocess.run(COMPRESSORS[fmt], input=plain, capture_output=True,
                                    check=True, timeout=60).stdout  # fmt: skip
        data = _damage(compressed, how)
    archive = work / f"damaged.{kind}"
    archive.write_bytes(data)
    name = f"sec-{kind}"
    location = Path(owner.home) / name
    line = assert_refused_cleanly(
        service, import_as(service, owner, name, location, archive), name, location
    )
    assert any(word in line for word in ("corrupt", "truncated", "not a valid tar")), line
