"""The download's pure parts (lxss.cli.download): where the cache is, Content-Range, and the
feed to the service that holds the image's tail back until it is verified."""

from __future__ import annotations

import os
import threading

import pytest

from lxss.cli import download
from lxss.cli.download import HOLD, ServiceStopped, _content_range_start, _Feed, cache_directory


def test_the_cache_follows_xdg_then_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/srv/cache")
    monkeypatch.setenv("HOME", "/home/alice")
    assert cache_directory() == "/srv/cache/lxss"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert cache_directory() == "/home/alice/.cache/lxss"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME")
    import pwd

    assert cache_directory() == os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".cache/lxss")


@pytest.mark.parametrize(
    ("value", "start"),
    [("bytes 100-199/200", 100), ("bytes 0-9/*", 0), ("bytes */200", None), ("", None),
     (None, None), ("items 1-2/3", None)],
)  # fmt: skip
def test_content_range_start(value: str | None, start: int | None) -> None:
    assert _content_range_start(value) == start


def _through_feed(data: bytes, step: int, release: bool) -> bytes:
    """What a reader of the feed's pipe gets when `data` is written `step` bytes at a time,
    then released (a verified image) or not (a failed one)."""
    read_end, write_end = os.pipe()
    received = bytearray()

    def read() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    feed = _Feed(write_end)
    for i in range(0, len(data), step):
        feed.write(data[i : i + step])
    if release:
        feed.release()
    feed.close()
    reader.join(30)
    os.close(read_end)
    return bytes(received)


def test_the_feed_holds_the_tail_back_until_released() -> None:
    data = os.urandom(3 * HOLD + 123)
    assert _through_feed(data, 1000, release=True) == data


def test_an_unreleased_feed_never_sends_the_last_bytes() -> None:
    data = os.urandom(2 * HOLD + 5)
    assert _through_feed(data, len(data), release=False) == data[: len(data) - HOLD]
    # A small image: nothing at all until it is verified.
    assert _through_feed(b"x" * (HOLD - 1), 100, release=False) == b""


def test_a_closed_reader_is_service_stopped() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    feed = _Feed(write_end)
    with pytest.raises(ServiceStopped):
        feed.write(b"x" * (HOLD + 1))
    feed.close()


def test_an_unsupported_scheme_is_refused_before_any_connection() -> None:
    with pytest.raises(download.CommandError, match="only file://, http:// and https://"):
        download.open_url("ftp://example.test/x.wsl", "cannot download ftp://example.test/x.wsl")


def _complete_tar_stream(stream: bytes) -> bool:
    """Whether the archive worker's reader would take `stream` as a whole tar archive."""
    import io

    from lxss.archive.unpack import Unpacker, UnpackError

    sink = bytearray()

    class _Check(Unpacker):
        def _extract(self, archive, member):  # type: ignore[no-untyped-def]
            sink.extend(member.name.encode())  # nothing written: only the stream is judged

    try:
        _Check(io.BytesIO(stream)).run()
    except UnpackError:
        return False
    return True


def test_an_unreleased_plain_tar_with_a_long_zero_tail_is_never_complete() -> None:
    """An uncompressed tar written with a large blocking factor ends in more than HOLD zero
    bytes: holding back only the last HOLD bytes would still send its end-of-archive blocks,
    and a download whose hash is wrong would pass for a whole archive."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|") as archive:
        member = tarfile.TarInfo("etc/os-release")
        content = b"ID=tampered\n"
        member.size = len(content)
        archive.addfile(member, io.BytesIO(content))
    data = buffer.getvalue() + bytes(4 * HOLD)  # as `tar -b 512` pads its last record
    assert len(data) - len(data.rstrip(b"\0")) > HOLD  # the case this test is about
    assert _complete_tar_stream(data)
    for step in (len(data), 4096, 1000):
        assert not _complete_tar_stream(_through_feed(data, step, release=False))
        assert _through_feed(data, step, release=True) == data


def test_zero_runs_inside_an_image_are_sent_once_more_follows() -> None:
    data = os.urandom(10) + bytes(5 * HOLD) + os.urandom(HOLD + 7) + bytes(3 * HOLD)
    for step in (len(data), 777, HOLD):
        sent = _through_feed(data, step, release=False)
        assert sent == data[: len(data) - 3 * HOLD - HOLD]
        assert _through_feed(data, step, release=True) == data
