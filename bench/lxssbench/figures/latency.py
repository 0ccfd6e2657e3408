"""Latency of one command: listing, warm, cold, service stopped, version 2."""

from __future__ import annotations

from ..harness import Figure, Runner
from ..lab import BUSYBOX, Lab
from ..peers.namespaces import bwrap, unshare_chroot
from ..proc import Unavailable
from .common import command_row, guarded, lxss_cmd, podman_rows
from .registry import Spec, figure, result

V2 = "bench-v2"


def _interpreter_rows(lab: Lab) -> list[Runner]:
    """The client floor: the interpreter lxss runs on, started as lxss starts it, and bare."""
    interp = lab.lxss.interpreter
    rows = [
        command_row(
            f"interpreter as lxss starts it ({' '.join(interp.as_lxss())})",
            interp.as_lxss("-c", "pass"),
        )
    ]
    if interp.as_lxss() != interp.bare() and sorted(interp.flags) not in (
        ["-I", "-S"],
        ["-IS"],
        ["-SI"],
    ):
        rows.append(command_row("bare interpreter (-I -S)", interp.bare("-c", "pass")))
    return rows


def _peer_rows(lab: Lab, *cmd: str, cold: bool) -> list[Runner]:
    """The same command through each peer: entering a running container (warm), or
    starting a fresh one (cold)."""
    rows: list[Runner] = []
    if not cold:
        rows.append(
            guarded(
                "nsenter -a (enter running namespaces)",
                "nsenter -t PID -a",
                lambda: command_row(
                    "nsenter -a (enter running namespaces)", lab.holder().nsenter(*cmd)
                ),
            )
        )
    rows.append(
        guarded(
            "unshare + chroot (new namespaces)",
            "unshare … chroot ROOT",
            lambda: command_row(
                "unshare + chroot (new namespaces)", unshare_chroot(lab.busybox_root(), *cmd)
            ),
        )
    )
    rows.append(
        guarded(
            "bwrap (new namespaces)",
            "bwrap --ro-bind ROOT / …",
            lambda: command_row("bwrap (new namespaces)", bwrap(lab.bwrap(), *cmd)),
        )
    )
    if cold:
        rows.append(
            guarded(
                "systemd-nspawn (new container)",
                "systemd-nspawn -D ROOT",
                lambda: command_row("systemd-nspawn (new container)", lab.nspawn().command(*cmd)),
            )
        )
    if cold:
        rows += podman_rows(
            lab,
            "podman run --rm ({mode})",
            "podman run --rm IMAGE",
            lambda p: command_row(
                f"podman run --rm ({p.mode}, {p.runtime})", p.run_rm(*cmd), spawn=p.spawn_kw()
            ),
        )
    else:
        rows += podman_rows(
            lab,
            "podman exec ({mode})",
            "podman exec CONTAINER",
            lambda p: command_row(p.label, p.exec(*cmd), spawn=p.spawn_kw()),
        )
    return rows


def _lxss_true(lab: Lab, name: str, *, prepare: bool = False, stop: bool = False) -> Runner:
    argv = lxss_cmd(lab, "-d", name, "--", "true")

    def terminate() -> None:
        lab.lxss.terminate(name)

    def stop_service() -> None:
        lab.lxss.stop_service()

    before = stop_service if stop else terminate if prepare else None
    return command_row("lxss", argv, subject=True, prepare=before)


@figure(
    "list",
    "`lxss -l -v` latency",
    unit="ms",
    better="lower",
    what="Listing the distributions, service running: all client start-up and one "
    "round trip to lxssd.",
)
def list_latency(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    try:
        lab.busybox_distro()  # so there is something to list
    except Unavailable:
        pass  # the list row below reports lxss's own error
    rows = [
        guarded(
            "lxss",
            "lxss -l -v",
            lambda: command_row("lxss", lxss_cmd(lab, "-l", "-v"), subject=True),
            subject=True,
        )
    ]
    rows += _interpreter_rows(lab)
    return result(spec, rows, runs=s.runs, warmup=s.warmup)


@figure(
    "warm",
    "Warm command latency",
    unit="ms",
    better="lower",
    what="`lxss -d bench-busybox -- true` with the distribution already running, "
    "against entering a running container and creating fresh namespaces.",
)
def warm(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    rows = [
        guarded(
            "lxss",
            f"lxss -d {BUSYBOX} -- true",
            lambda: _lxss_true(lab, lab.busybox_distro()),
            subject=True,
        ),
        command_row("true (the harness's own spawn floor)", ["true"]),
        *_interpreter_rows(lab)[-1:],
        *_peer_rows(lab, "true", cold=False),
    ]
    return result(spec, rows, runs=s.runs, warmup=s.warmup)


@figure(
    "cold",
    "Cold start of a stopped distribution",
    unit="ms",
    better="lower",
    what="`lxss --terminate bench-busybox` (untimed), then `lxss -d bench-busybox -- "
    "true`, against starting a fresh container or namespace set.",
)
def cold(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    rows = [
        guarded(
            "lxss",
            f"lxss -d {BUSYBOX} -- true (after --terminate)",
            lambda: _lxss_true(lab, lab.busybox_distro(), prepare=True),
            subject=True,
        ),
        *_peer_rows(lab, "true", cold=True),
    ]
    return result(spec, rows, runs=s.cold_runs, warmup=1)


@figure(
    "first",
    "First command with the service stopped",
    unit="ms",
    better="lower",
    what="lxssd stopped (untimed), then `lxss -d bench-busybox -- true`: the service "
    "starts on demand, then the distribution.",
)
def first(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    peers = [
        r
        for r in _peer_rows(lab, "true", cold=True)
        if r.label.startswith(("systemd-nspawn", "podman run --rm (rootful"))
    ]
    rows = [
        guarded(
            "lxss",
            f"lxss -d {BUSYBOX} -- true (lxssd stopped)",
            lambda: _lxss_true(lab, lab.busybox_distro(), stop=True),
            subject=True,
        ),
        *_interpreter_rows(lab)[-1:],
        *peers,
    ]
    return result(spec, rows, runs=s.cold_runs, warmup=1)


def _v2(lab: Lab) -> str:
    return lab.lxss.distro(V2, tarball=lab.busybox_tarball(), version=2)


@figure(
    "v2-boot",
    "Version 2: cold start (VM boot to first command)",
    unit="ms",
    better="lower",
    what="A version 2 (QEMU) distribution terminated, then `lxss -d bench-v2 -- true`, "
    "against version 1 doing the same in the same run.",
)
def v2_boot(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    rows = [
        guarded(
            "lxss",
            f"lxss -d {V2} -- true (after --terminate)",
            lambda: _lxss_true(lab, _v2(lab), prepare=True),
            subject=True,
        ),
        guarded(
            "lxss, version 1 (namespaces)",
            f"lxss -d {BUSYBOX} -- true",
            lambda: _relabel(
                _lxss_true(lab, lab.busybox_distro(), prepare=True), "lxss, version 1 (namespaces)"
            ),
        ),
        *_peer_rows(lab, "true", cold=True)[:1],
    ]
    return result(spec, rows, runs=max(3, s.cold_runs // 3), warmup=1)


@figure(
    "v2-run",
    "Version 2: warm command latency",
    unit="ms",
    better="lower",
    what="`lxss -d bench-v2 -- true` with the VM running, against version 1 and "
    "entering running namespaces.",
)
def v2_run(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    rows = [
        guarded("lxss", f"lxss -d {V2} -- true", lambda: _lxss_true(lab, _v2(lab)), subject=True),
        guarded(
            "lxss, version 1 (namespaces)",
            f"lxss -d {BUSYBOX} -- true",
            lambda: _relabel(_lxss_true(lab, lab.busybox_distro()), "lxss, version 1 (namespaces)"),
        ),
        *_peer_rows(lab, "true", cold=False)[:1],
    ]
    return result(spec, rows, runs=s.runs, warmup=s.warmup)


def _relabel(runner: Runner, label: str) -> Runner:
    runner.label, runner.subject = label, False
    return runner
