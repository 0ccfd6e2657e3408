"""Desktop shortcuts for installed distributions (WSL's start-menu entry, the XDG way).

WSL adds a start-menu entry for a distribution it installs unless the image's
/etc/wsl-distribution.conf says `[shortcut] enabled = false`. On Linux that is an XDG
desktop entry, ~/.local/share/applications/lxss-NAME.desktop, which opens a terminal in
the distribution. It is written as the user, only when the user has a desktop
(XDG_CURRENT_DESKTOP, DISPLAY or WAYLAND_DISPLAY set), and removed with the distribution.
The icon `[shortcut] icon` names (read from the image by the service: lxss.archive.icon)
is kept beside it as ~/.local/share/icons/lxss-NAME.EXT, as WSL keeps a copy of it beside
the distribution, and removed with it too; without one the entry shows the terminal's icon.
"""

from __future__ import annotations

import os
import shutil

from lxss.cli.service import lxss_argv

_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def has_desktop(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ("XDG_CURRENT_DESKTOP", "DISPLAY", "WAYLAND_DISPLAY"))


ICON_FORMATS = ("png", "svg", "xpm", "ico")  # lxss.archive.icon.FORMATS
DEFAULT_ICON = "utilities-terminal"


def _data_home() -> str:
    return os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")


def path_for(name: str) -> str:
    return os.path.join(_data_home(), "applications", f"lxss-{name}.desktop")


def icon_path_for(name: str, kind: str) -> str:
    return os.path.join(_data_home(), "icons", f"lxss-{name}.{kind}")


def exec_quote(argument: str) -> str:
    """One argument of a desktop entry's Exec key (the Desktop Entry Specification's rules)."""
    escaped = argument.replace("%", "%%")
    if not _RESERVED.intersection(escaped):
        return escaped
    inner = "".join("\\" + c if c in '"`$\\' else c for c in escaped)
    return f'"{inner}"'


def string_value(text: str) -> str:
    """A desktop entry's string value, with the specification's escapes."""
    escapes = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return "".join(escapes.get(c, c) for c in text)


def desktop_entry(name: str, argv: list[str], icon: str = DEFAULT_ICON) -> str:
    command = " ".join(exec_quote(arg) for arg in [*argv, "-d", name])
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={name}\n"
        f"Comment=A shell in the lxss distribution {name}\n"
        f"Exec={command}\n"
        "Terminal=true\n"
        f"Icon={string_value(icon)}\n"
        "Categories=System;TerminalEmulator;\n"
    )


def create(name: str, icon: tuple[str, bytes] | None = None) -> str:
    """Write the entry, and *icon* (format, content) when given; the entry's path. OSError
    when they cannot be written."""
    lxss = shutil.which("lxss")
    path = path_for(name)
    _remove_icons(name)  # an earlier distribution of this name may have had another
    shown = DEFAULT_ICON
    if icon is not None and icon[0] in ICON_FORMATS:
        shown = icon_path_for(name, icon[0])
        _write(shown, icon[1], 0o644)
    _write(path, desktop_entry(name, [lxss] if lxss else lxss_argv(), shown).encode(), 0o644)
    return path


def _write(path: str, content: bytes, mode: int) -> None:
    """Replace *path* whole (a desktop never reads half a file)."""
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    temporary = path + ".new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with open(fd, "wb") as f:
        f.write(content)
    os.replace(temporary, path)


def _remove_icons(name: str) -> None:
    for kind in ICON_FORMATS:
        try:
            os.unlink(icon_path_for(name, kind))
        except FileNotFoundError:
            pass


def remove(name: str) -> None:
    try:
        os.unlink(path_for(name))
    except FileNotFoundError:
        pass
    _remove_icons(name)
