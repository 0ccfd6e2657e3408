"""Memory: the idle service, and what one more running distribution costs (PSS).

PSS (proportional set size, from /proc/PID/smaps_rollup) charges each shared
page to its sharers in proportion, so sums over processes add up to what the
group really costs. A distribution's cost is found the same way for every
row: the processes that appeared when it started, plus the change in the
manager's own PSS, measured after a short settle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..harness import Figure, Runner
from ..lab import BUSYBOX, Lab
from ..peers.namespaces import UNSHARE_FLAGS
from ..peers.podman import Podman
from ..proc import Background, Unavailable, descendants, run
from .common import PLAIN_ENV, guarded, podman_rows
from .registry import Spec, figure, result

SETTLE = 1.0  # seconds for a just-started group to finish starting up


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (OSError, ValueError):
        return 0  # exited meanwhile, or a kernel thread
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def pss_mib(pids: Iterable[int]) -> float:
    return sum(pss_kib(p) for p in set(pids)) / 1024


def all_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def _started_cost(start: Callable[[], None], manager: Callable[[], list[int]]) -> float:
    """MiB: PSS of processes that start() left behind, plus the manager's growth.

    The manager (lxssd) may share pages with what it starts, so its own PSS is
    taken before and after rather than assumed constant.
    """
    before_mgr = manager()
    base = pss_mib(before_mgr)
    before = all_pids()
    start()
    time.sleep(SETTLE)
    # Only what our own commands left behind: the bench is a child subreaper, so
    # daemons they started (conmon, an lxssd) are its descendants, and other
    # users' processes on a shared machine are not counted.
    ours = set(descendants(os.getpid())) - {os.getpid()}
    return pss_mib(set(manager()) | (ours - before)) - base


def _idle_row(label: str, argv: list[str], log: Path) -> Runner:
    def measure() -> float:
        with Background(argv, log=log, env=PLAIN_ENV) as bg:
            time.sleep(SETTLE)
            if not bg.alive():
                raise Unavailable(f"{label}: exited at once: {bg.log_tail()}")
            return pss_mib(descendants(bg.pid))

    return Runner(label, " ".join(argv), measure)


@figure(
    "mem-lxssd",
    "Idle memory of lxssd (PSS)",
    unit="MiB",
    better="lower",
    what="PSS of lxssd and its children with no distribution running "
    "(after `lxss --shutdown`), against an idle bare interpreter.",
)
def lxssd_idle(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings

    def lxss_row() -> Runner:
        lab.busybox_distro()

        def measure() -> float:
            lab.lxss.must("--shutdown", timeout=120)
            time.sleep(SETTLE)
            pid = lab.lxss.service_pid()
            if pid is None:
                raise Unavailable(
                    "no lxssd is listening on /run/lxss/lxssd.sock after `lxss --shutdown`"
                )
            return pss_mib(descendants(pid))

        return Runner("lxss", "lxssd after lxss --shutdown", measure, subject=True)

    interp = lab.lxss.interpreter
    sleep = "import time; time.sleep(3600)"
    rows = [
        guarded("lxss", "lxssd after lxss --shutdown", lxss_row, subject=True),
        _idle_row(
            "idle bare interpreter (-I -S)", interp.bare("-c", sleep), lab.work / "idle-python.log"
        ),
        _idle_row(
            "idle interpreter with asyncio imported",
            interp.bare("-c", "import asyncio, json, sqlite3; " + sleep),
            lab.work / "idle-python.log",
        ),
    ]
    return result(spec, rows, runs=s.memory_runs, warmup=0)


@figure(
    "mem-distro",
    "Memory per running distribution (PSS)",
    unit="MiB",
    better="lower",
    what="PSS of the processes that appear when an idle distribution (or container) "
    "starts, plus the manager's own growth.",
)
def per_distro(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings

    def lxss_row() -> Runner:
        name = lab.busybox_distro()

        def manager() -> list[int]:
            pid = lab.lxss.service_pid()
            return descendants(pid) if pid else []

        def start() -> None:
            lab.lxss.must("-d", name, "--", "true", timeout=60)

        def measure() -> float:
            return _started_cost(start, manager)

        return Runner(
            "lxss",
            f"lxss -d {name} -- true, then idle",
            measure,
            subject=True,
            prepare=lambda: lab.lxss.terminate(name),
        )

    def podman_row(p: Podman) -> Runner:
        name = f"{p.name}-mem"
        kw = p.spawn_kw()

        def start() -> None:
            run(
                [
                    "podman",
                    "run",
                    "-d",
                    "--name",
                    name,
                    *p.run_opts,
                    p.image,
                    "sleep",
                    "2147483647",
                ],
                timeout=120,
                **kw,
            ).check()

        def measure() -> float:
            try:
                return _started_cost(start, lambda: [])
            finally:
                run(["podman", "rm", "--force", "--time", "0", name], timeout=60, **kw)

        return Runner(p.label.replace("exec", "run -d"), "podman run -d IMAGE sleep", measure)

    def group_row(label: str, argv: list[str], log: str) -> Runner:
        def measure() -> float:
            holder: list[Background] = []

            def start() -> None:
                holder.append(Background(argv, log=lab.work / log, grace=1.0))

            try:
                return _started_cost(start, lambda: [])
            finally:
                for bg in holder:
                    bg.close()

        return Runner(label, " ".join(argv), measure)

    root_cmd = ["sleep", "2147483647"]
    rows = [
        guarded("lxss", f"lxss -d {BUSYBOX} -- true, then idle", lxss_row, subject=True),
        guarded(
            "unshare + chroot",
            "unshare … chroot ROOT sleep",
            lambda: group_row(
                "unshare + chroot + sleep (bare namespaces)",
                [
                    "unshare",
                    *UNSHARE_FLAGS,
                    "--kill-child",
                    "chroot",
                    str(lab.busybox_root()),
                    *root_cmd,
                ],
                "mem-unshare.log",
            ),
        ),
        guarded(
            "systemd-nspawn",
            "systemd-nspawn -D ROOT sleep",
            lambda: group_row(
                "systemd-nspawn + sleep", lab.nspawn().command(*root_cmd), "mem-nspawn.log"
            ),
        ),
    ]
    rows += podman_rows(lab, "podman run -d ({mode})", "podman run -d IMAGE sleep", podman_row)
    return result(
        spec,
        rows,
        runs=s.memory_runs,
        warmup=0,
        notes=["rootless podman's shared pause process is not counted"],
    )
