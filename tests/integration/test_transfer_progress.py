"""Progress of imports and exports on a terminal: stderr on a real pty, the real lxss and
lxssd. The shared reporter (lxss.cli.progress) has its own unit tests for the drawing; these
show that an import's and an export's bytes reach it, and that nothing is drawn with -q or
when stderr is not a terminal."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import termios
from pathlib import Path

from conftest import Service, busybox_tarball
from mgmt import spawn_lxss


def on_terminal(service: Service, *args: str) -> tuple[int, str]:
    """Run lxss with stderr on a pty (stdin and stdout elsewhere); its exit status and what
    the terminal received."""
    primary, secondary = os.openpty()
    # 100 columns: a pty starts with none, where the line would have no room for its label.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        process = spawn_lxss(service, *args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=secondary)  # fmt: skip
        os.close(secondary)
        secondary = -1
        received = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: every end of the pty's other side is closed
                    raise
                break
            if not chunk:
                break
            received += chunk
        return process.wait(timeout=300), received.decode(errors="replace")
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)


def test_import_and_export_draw_progress_on_a_terminal(service: Service, tmp_path: Path) -> None:
    tarball = busybox_tarball(tmp_path)
    size = tarball.stat().st_size
    code, drawn = on_terminal(service, "--import", "prog", str(tmp_path / "d"), str(tarball))
    try:
        assert code == 0, drawn
        assert "\rImporting prog" in drawn and "\x1b[K" in drawn, repr(drawn)
        last = drawn.rstrip("\r\n").split("\r")[-1]
        assert "100%" in last, repr(last)
        assert last.count("/") >= 1  # "done / total"
        assert f"{size / 1024:.1f} KiB" in last or "MiB" in last, repr(last)

        out = tmp_path / "out.tar.gz"
        code, drawn = on_terminal(service, "--export", "prog", str(out))
        assert code == 0, drawn
        assert "\rExporting prog" in drawn, repr(drawn)
        assert out.stat().st_size > 0

        code, drawn = on_terminal(service, "--export", "prog", str(tmp_path / "q.tar"), "-q")
        assert (code, drawn) == (0, "")
        piped = service.ok("--export", "prog", str(tmp_path / "piped.tar"))
        assert piped.err == "", "no progress when stderr is not a terminal"
    finally:
        service.ok("--unregister", "prog")


def test_quiet_import_draws_nothing(service: Service, tmp_path: Path) -> None:
    tarball = busybox_tarball(tmp_path)
    code, drawn = on_terminal(service, "--import", "quiet", str(tmp_path / "d"), str(tarball),
                              "--quiet")  # fmt: skip
    try:
        assert (code, drawn) == (0, "")
    finally:
        service.ok("--unregister", "quiet")
