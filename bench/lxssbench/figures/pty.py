"""A console session: 100 × `uname -a` typed into a shell behind a real pty.

This is the loop of microsoft/WSL#4712 (5.2 s through wsl.exe's console
against 0.083 s over ssh). Each row keeps one session open for the whole
figure; a sample is one loop, from typing it to reading the marker after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from ..harness import Figure, Runner, unavailable
from ..lab import BUSYBOX, Lab
from ..proc import Unavailable
from ..ptysession import PtySession
from .common import PLAIN_ENV
from .registry import Spec, figure, result

LOOP = 'i=0; while [ "$i" -lt 100 ]; do uname -a; i=$((i+1)); done'
TIMEOUT = 120.0


def _session_row(
    stack: contextlib.ExitStack,
    label: str,
    command: str,
    open_session: Callable[[], PtySession],
    *,
    subject: bool = False,
) -> Runner:
    try:
        session = stack.enter_context(open_session())
    except Unavailable as exc:
        return unavailable(label, command, str(exc), subject=subject)
    return Runner(
        label,
        command,
        lambda: session.roundtrip(LOOP, timeout=TIMEOUT, expect=(b"Linux", 100)),
        subject=subject,
    )


@figure(
    "pty",
    "pty echo loop (100 × uname -a)",
    unit="ms",
    better="lower",
    what="An interactive `lxss -d bench-busybox` on a real pty running a 100 × "
    "`uname -a` loop, against the same loop in native pty sessions.",
)
def pty_loop(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    env = {**PLAIN_ENV, "TERM": "dumb"}
    with contextlib.ExitStack() as stack:

        def lxss() -> PtySession:
            argv = lab.lxss.argv("-d", lab.busybox_distro())
            return PtySession(argv, env=lab.lxss.env(term="dumb"), label="lxss")

        def native() -> PtySession:
            return PtySession(["sh"], env=env, label="sh")

        def native_busybox() -> PtySession:
            return PtySession(["busybox", "sh"], env=env, label="busybox sh")

        def nsenter() -> PtySession:
            return PtySession(lab.holder().nsenter("/bin/sh"), env=env, label="nsenter")

        def podman(rootless: bool) -> PtySession:
            p = lab.podman(rootless=rootless)
            kw = p.spawn_kw()
            uid = kw.get("user")
            gid = kw.get("group")
            return PtySession(
                p.exec("sh", stdin=True, tty=True),
                env={**kw["env"], "TERM": "dumb"},
                cwd=kw["cwd"],
                uid=uid,
                gid=gid,
                label=p.label,
            )

        rows = [
            _session_row(stack, "lxss", f"lxss -d {BUSYBOX}", lxss, subject=True),
            _session_row(stack, "native pty, host sh (dash)", "sh", native),
            _session_row(stack, "native pty, busybox sh", "busybox sh", native_busybox),
            _session_row(
                stack,
                "nsenter -a, busybox sh in running namespaces",
                "nsenter -t PID -a /bin/sh",
                nsenter,
            ),
            _session_row(
                stack,
                "podman exec -it (rootful)",
                "podman exec -it CONTAINER sh",
                lambda: podman(False),
            ),
            _session_row(
                stack,
                "podman exec -it (rootless)",
                "podman exec -it CONTAINER sh",
                lambda: podman(True),
            ),
        ]
        return result(spec, rows, runs=s.pty_runs, warmup=1, notes=[f"loop typed: `{LOOP}`"])
