"""Desktop entries for installed distributions."""

from __future__ import annotations

from lxss.cli.shortcut import desktop_entry, exec_quote, has_desktop


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
