"""Desktop shortcuts for installed distributions (WSL's start-menu entry, the XDG way).

WSL adds a start-menu entry for a distribution it installs unless the image's
/etc/wsl-distribution.conf says `[shortcut] enabled = false`. On Linux that is an XDG
desktop entry, ~/.local/share/applications/lxss-NAME.desktop, which opens a terminal in
the distribution. It is written as the user, only when the user has a desktop
(XDG_CURRENT_DESKTOP, DISPLAY or WAYLAND_DISPLAY set), and removed with the distribution.
"""

from __future__ import annotations

import os
import shutil

from lxss.cli.service import lxss_argv

_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def has_desktop(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ("XDG_CURRENT_DESKTOP", "DISPLAY", "WAYLAND_DISPLAY"))


def path_for(name: str) -> str:
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "applications", f"lxss-{name}.desktop")


def exec_quote(argument: str) -> str:
    """One argument of a desktop entry's Exec key (the Desktop Entry Specification's rules)."""
    escaped = argument.replace("%", "%%")
    if not _RESERVED.intersection(escaped):
        return escaped
    inner = "".join("\\" + c if c in '"`$\\' else c for c in escaped)
    return f'"{inner}"'


def desktop_entry(name: str, argv: list[str]) -> str:
    command = " ".join(exec_quote(arg) for arg in [*argv, "-d", name])
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={name}\n"
        f"Comment=A shell in the lxss distribution {name}\n"
        f"Exec={command}\n"
        "Terminal=true\n"
        "Icon=utilities-terminal\n"
        "Categories=System;TerminalEmulator;\n"
    )


def create(name: str) -> str:
    """Write the entry; its path. OSError when it cannot be written."""
    lxss = shutil.which("lxss")
    path = path_for(name)
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    temporary = path + ".new"
    with open(temporary, "w") as f:
        f.write(desktop_entry(name, [lxss] if lxss else lxss_argv()))
    os.replace(temporary, path)
    return path


def remove(name: str) -> None:
    try:
        os.unlink(path_for(name))
    except FileNotFoundError:
        pass
