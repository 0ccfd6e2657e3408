"""Building blocks shared by the figures: rows that run a command, rows that can't."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..harness import Runner, unavailable
from ..lab import Lab
from ..peers.podman import Podman
from ..proc import Unavailable, short, timed_ms

PLAIN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


def command_row(
    label: str,
    argv: Sequence[str],
    *,
    timeout: float = 60,
    subject: bool = False,
    prepare: Callable[[], None] | None = None,
    spawn: dict[str, Any] | None = None,
) -> Runner:
    """A row whose sample is the wall time of one run of argv, in ms."""
    kw: dict[str, Any] = {"env": PLAIN_ENV, **(spawn or {})}

    def measure() -> float:
        return timed_ms(argv, timeout=timeout, label="", **kw)

    return Runner(label, " ".join(argv), measure, prepare=prepare, subject=subject)


def guarded(
    label: str, command: str, build: Callable[[], Runner], *, subject: bool = False
) -> Runner:
    """build() the row; if its setup is unavailable, a row that says why instead."""
    try:
        return build()
    except Unavailable as exc:
        return unavailable(label, command, str(exc), subject=subject)


def lxss_row(lab: Lab, command: str, build: Callable[[], Runner]) -> Runner:
    """The subject row: lxss, or lxss's own error."""
    return guarded("lxss", command, build, subject=True)


def lxss_cmd(lab: Lab, *args: str) -> list[str]:
    """argv of the lxss command (raises Unavailable when lxss is not found)."""
    return lab.lxss.argv(*args)


def display(argv: Sequence[str]) -> str:
    return short(argv, 100)


def podman_rows(
    lab: Lab, label: str, command: str, build: Callable[[Podman], Runner]
) -> list[Runner]:
    """One row per podman mode (rootful, rootless); label may use {mode}."""
    rows = []
    for rootless in (False, True):

        def make(rootless: bool = rootless) -> Runner:
            return build(lab.podman(rootless=rootless))

        mode = "rootless" if rootless else "rootful"
        rows.append(guarded(label.format(mode=mode), command, make))
    return rows
