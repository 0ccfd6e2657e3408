"""Recognising an archive by its first bytes (lxss.archive.formats.detect) and where a
tar member lands (lxss.archive.unpack.member_path)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import subprocess
import tarfile

import pytest

from lxss.archive import formats
from lxss.archive.unpack import member_path


def tar_of(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        info = tarfile.TarInfo("etc/os-release")
        data = b"ID=x\n"
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


PLAIN = tar_of(tarfile.GNU_FORMAT)


def zstd(data: bytes) -> bytes:
    if shutil.which("zstd") is None:
        pytest.fail("zstd is not installed (setup.sh installs it)")
    return subprocess.run(["zstd", "-c", "-q"], input=data, capture_output=True, check=True,
                          timeout=30).stdout  # fmt: skip


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: PLAIN, "tar"),
        (lambda: tar_of(tarfile.USTAR_FORMAT), "tar"),
        (lambda: tar_of(tarfile.PAX_FORMAT), "tar"),
        (lambda: gzip.compress(PLAIN), "gzip"),
        (lambda: lzma.compress(PLAIN, format=lzma.FORMAT_XZ), "xz"),
        (lambda: bz2.compress(PLAIN), "bzip2"),
        (lambda: zstd(PLAIN), "zstd"),
        (lambda: b"", "empty"),
        (lambda: b"\0" * 1024, "unknown"),
        (lambda: b"PK\x03\x04zip", "unknown"),
        (lambda: b"hello world\n" * 50, "unknown"),
        (lambda: lzma.compress(PLAIN, format=lzma.FORMAT_ALONE), "unknown"),  # legacy .lzma
    ],
    ids=["gnu", "ustar", "pax", "gzip", "xz", "bzip2", "zstd", "empty", "zeros", "zip", "text",
         "lzma-alone"],
)  # fmt: skip
def test_detect(make: object, kind: str) -> None:
    data = make()  # type: ignore[operator]
    assert formats.detect(data[: formats.TAR_BLOCK]) == kind


def test_detect_a_v7_tar_by_its_checksum() -> None:
    """Old tars have no "ustar" magic: the header checksum identifies them."""
    header = bytearray(PLAIN[:512])
    header[257:265] = b"\0" * 8
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    assert formats.detect(bytes(header)) == "tar"
    header[0] ^= 1  # the checksum no longer matches
    assert formats.detect(bytes(header)) == "unknown"


def test_detect_short_or_damaged_headers() -> None:
    assert formats.detect(PLAIN[:100]) == "unknown"
    header = bytearray(PLAIN[:512])
    header[257:262] = b"xxxxx"
    header[148:156] = b"garbage!"
    assert formats.detect(bytes(header)) == "unknown"
    assert formats.detect(b"\x1f") == "unknown", "half a gzip magic"


def test_external_tools() -> None:
    assert formats.compress_command("tar") is None
    for export_format in ("tar.gz", "tar.xz", "tar.zst"):
        command = formats.compress_command(export_format)
        assert command is not None and command[0].startswith("/")
    for compression in ("gzip", "xz", "zstd", "bzip2"):
        assert formats.decompress_command(compression)[0].startswith("/")
    assert formats.EXPORT_FORMATS == ("tar", "tar.gz", "tar.xz", "tar.zst")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("etc/passwd", "etc/passwd"),
        ("./etc/passwd", "etc/passwd"),
        ("/etc/passwd", "etc/passwd"),
        ("///etc//passwd/", "etc/passwd"),
        (".", "."),
        ("./", "."),
        ("/", "."),
        ("", "."),
        ("a/./b/.", "a/b"),
        ("...", "..."),
        ("..a/b..", "..a/b.."),
        ("..", None),
        ("../x", None),
        ("a/../b", None),
        ("a/b/..", None),
        ("/../etc/shadow", None),
        ("./../../x", None),
    ],
)
def test_member_path(name: str, path: str | None) -> None:
    assert member_path(name) == path
