"""Desktop entries for installed distributions."""

from __future__ import annotations

import os
from pathlib import Path

from lxss.archive import icon
from lxss.cli.shortcut import ICON_FORMATS, desktop_entry, exec_quote, has_desktop, string_value


def test_desktop_detection() -> None:
    assert not has_desktop({})
    assert not has_desktop({"DISPLAY": ""})
    assert has_desktop({"WAYLAND_DISPLAY": "wayland-0"})
    assert has_desktop({"XDG_CURRENT_DESKTOP": "GNOME"})


def test_exec_quoting_follows_the_desktop_entry_rules() -> None:
    assert exec_quote("/usr/bin/lxss") == "/usr/bin/lxss"
    assert exec_quote("100%") == "100%%"
    assert exec_quote("a b") == '"a b"'
    assert exec_quote('say "$x"') == '"say \\"\\$x\\""'


def test_entry_opens_a_terminal_in_the_distribution() -> None:
    text = desktop_entry("deb", ["/usr/local/bin/lxss"])
    assert "Exec=/usr/local/bin/lxss -d deb\n" in text
    assert "Terminal=true\n" in text and text.startswith("[Desktop Entry]\n")


def test_entry_names_its_icon() -> None:
    assert "Icon=utilities-terminal\n" in desktop_entry("deb", ["lxss"])
    text = desktop_entry("deb", ["lxss"], "/home/a b/.local/share/icons/lxss-deb.png")
    assert "Icon=/home/a b/.local/share/icons/lxss-deb.png\n" in text
    assert string_value("a\\b\nc") == "a\\\\b\\nc"


def test_the_client_knows_the_formats_the_worker_sends() -> None:
    assert set(ICON_FORMATS) == icon.FORMATS


def test_icons_are_read_by_format_size_and_kind(tmp_path: Path) -> None:
    png = tmp_path / "logo.PNG"
    png.write_bytes(b"\x89PNG data")
    assert icon.read_icon(str(png)) == ("png", b"\x89PNG data")
    assert icon.icon_format("/usr/share/wsl/ubuntu.ico") == "ico"
    big = tmp_path / "big.svg"
    big.write_bytes(b"<" * (icon.MAX_ICON + 1))
    fifo = tmp_path / "fifo.xpm"
    os.mkfifo(fifo)
    (tmp_path / "dir.ico").mkdir()
    cases = {
        str(big): "larger than 1 MiB",
        str(fifo): "not a regular file",
        str(tmp_path / "dir.ico"): "not a regular file",
        str(tmp_path / "missing.png"): "No such file",
        str(tmp_path / "logo.bmp"): "not a PNG, SVG, XPM or ICO file",
        "relative.png": "not an absolute path",
    }
    for path, reason in cases.items():
        found = icon.read_icon(path)
        assert isinstance(found, str) and reason in found, (path, found)
        assert found.endswith("the shortcut has the terminal's icon")
