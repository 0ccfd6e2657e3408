"""What the security suite (tests/integration/test_security_*.py) found, pinned where it
can be without root: the registry's files are private from their creation, values from a
distribution's /etc/os-release are bounded, and a tar stream must end where tar says."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lxss.archive.unpack import Unpacker, UnpackError
from lxss.service.registry import (
    MAX_OS_RELEASE_FIELD,
    Registry,
    new_distribution,
    new_guid,
    os_release_field,
)


def test_registry_files_are_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    old = os.umask(0o022)
    try:
        db = Registry(str(path))
        guid = new_guid()
        db.begin_install(new_distribution("secret-name", 1000, "/x", False, 1, guid))
        files = sorted(tmp_path.glob("registry.sqlite*"))
        assert {p.name for p in files} >= {"registry.sqlite", "registry.sqlite-wal"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: 0o600 for p in files
        }
        db.close()
    finally:
        os.umask(old)


def test_registry_narrows_files_an_older_service_left_open(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    Registry(str(path)).close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").touch()
        os.chmod(f"{path}{suffix}", 0o644)
    Registry(str(path)).close()
    for p in tmp_path.glob("registry.sqlite*"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("debian", "debian"),
        ("12.5", "12.5"),
        ("x" * 3_000_000, "x" * MAX_OS_RELEASE_FIELD),
        ("1\x1b[2J\x07\u202e", "1[2J"),
        ("\x00" * 1000 + "ok", ""),
        ("", ""),
    ],
)
def test_os_release_values_are_bounded_and_printable(value: str, stored: str) -> None:
    assert os_release_field(value) == stored


def _tar(count: int = 3) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for i in range(count):
            info = tarfile.TarInfo(f"file-{i}")
            info.uid, info.gid = os.getuid(), os.getgid()  # unpackable without root
            data = f"content {i}\n".encode()
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _offsets(data: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [info.offset for info in archive.getmembers()]


def _unpack(data: bytes, where: Path) -> int:
    where.mkdir()
    cwd = os.getcwd()
    os.chdir(where)
    try:
        return Unpacker(io.BytesIO(data)).run().files
    finally:
        os.chdir(cwd)


def test_a_whole_archive_unpacks(tmp_path: Path) -> None:
    assert _unpack(_tar(), tmp_path / "whole") == 3


def test_a_corrupt_header_after_the_first_is_refused(tmp_path: Path) -> None:
    """tarfile would take it for the end and import the members before it."""
    data = _tar()
    last = _offsets(data)[-1]
    damaged = data[:last] + b"\xff" * 100 + data[last + 100 :]
    with pytest.raises(UnpackError, match="corrupt header"):
        _unpack(damaged, tmp_path / "corrupt")


def test_an_archive_cut_at_a_member_boundary_is_refused(tmp_path: Path) -> None:
    data = _tar()
    with pytest.raises(UnpackError, match="truncated"):
        _unpack(data[: _offsets(data)[-1]], tmp_path / "cut")
