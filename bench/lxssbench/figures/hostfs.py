"""Host files seen from inside: one big read and a metadata walk, through /mnt/host.

Every row runs the same busybox shell line (`dd if=F of=/dev/null bs=1M`, `du
-s D >/dev/null`, each repeated) so that only the path to the files differs: native on
the host, a bind mount in bwrap and podman, /mnt/host in lxss. The files were
just written, so reads come from the page cache: this measures the
file-system path, not the disk. dd, not cat: busybox cat hands the file to
/dev/null with sendfile, which copies nothing and so reads nothing.

A sample includes starting the command (the `warm` figure says what that
costs), so the work is repeated inside the one command until a native run
takes about a second in full mode, which keeps that start-up a small share.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from ..harness import Figure, Runner
from ..lab import BUSYBOX, HostData, Lab
from ..peers.namespaces import bwrap
from .common import command_row, guarded, lxss_cmd, podman_rows
from .registry import Spec, figure, result

MNT_HOST = "/mnt/host"
BIND = "/mnt"  # where bwrap and podman mount the host data (exists in the busybox tree)


def _repeat(times: int, command: str) -> str:
    """A shell line running command `times` times (POSIX sh and busybox ash alike)."""
    if times == 1:
        return command
    return f'i=0; while [ "$i" -lt {times} ]; do {command}; i=$((i+1)); done'


def _rows(
    lab: Lab,
    line: Callable[[str], str],
    pick: Callable[[HostData], str],
    unit_of: Callable[[float], float],
) -> list[Runner]:
    """line(path) is the shell line; pick(data) is the host path it reads."""
    data = lab.host_data()
    host_path = pick(data)
    inside = host_path.replace(str(data.top), BIND, 1)
    busybox = shutil.which("busybox") or "/bin/busybox"

    def row(
        label: str, argv: list[str], *, subject: bool = False, spawn: dict[str, Any] | None = None
    ) -> Runner:
        r = command_row(label, argv, subject=subject, timeout=600, spawn=spawn)
        ms = r.measure
        r.measure = lambda: unit_of(ms())
        return r

    rows = [
        guarded(
            "lxss",
            f"lxss -d {BUSYBOX} -- sh -c '{line(MNT_HOST + host_path)}'",
            lambda: row(
                "lxss",
                lxss_cmd(
                    lab, "-d", lab.busybox_distro(), "--", "sh", "-c", line(MNT_HOST + host_path)
                ),
                subject=True,
            ),
            subject=True,
        ),
        row("native (host, busybox sh)", [busybox, "sh", "-c", line(host_path)]),
        guarded(
            "bwrap bind mount",
            "bwrap --ro-bind DATA /data …",
            lambda: row(
                "bwrap, bind mount",
                bwrap(lab.bwrap(), "sh", "-c", line(inside), binds=((data.top, BIND),)),
            ),
        ),
    ]
    rows += podman_rows(
        lab,
        "podman exec ({mode}), bind mount",
        "podman exec CONTAINER sh",
        lambda p: row(
            p.label + ", bind mount", p.exec("sh", "-c", line(inside)), spawn=p.spawn_kw()
        ),
    )
    return rows


@figure(
    "hostfs-read",
    "Host file read through /mnt/host",
    unit="MB/s",
    better="higher",
    what="`dd` of one host file (page cache warm) to /dev/null inside the "
    "distribution, through /mnt/host, against native and bind mounts.",
)
def read(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    times = s.read_repeat
    mb = times * s.read_bytes / 1e6
    rows = _rows(
        lab,
        lambda p: _repeat(times, f"dd if={p} of=/dev/null bs=1M 2>/dev/null"),
        lambda d: str(d.big),
        lambda ms: mb / (ms / 1000),
    )
    return result(
        spec,
        rows,
        runs=s.hostfs_runs,
        warmup=1,
        notes=[
            f"a {s.read_bytes >> 20} MiB file read {times} times per sample, "
            "including starting the command"
        ],
    )


@figure(
    "hostfs-walk",
    "Host metadata walk through /mnt/host",
    unit="ms",
    better="lower",
    what="`du -s` over a host tree of small files inside the distribution, through "
    "/mnt/host, against native and bind mounts.",
)
def walk(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    times = s.walk_repeat
    rows = _rows(
        lab,
        lambda p: _repeat(times, f"du -s {p} >/dev/null"),
        lambda d: str(d.tree),
        lambda ms: ms,
    )
    return result(
        spec,
        rows,
        runs=s.hostfs_runs,
        warmup=1,
        notes=[
            f"{s.tree_files} files in {s.tree_files // 100} directories, walked "
            f"{times} times per sample, including starting the command"
        ],
    )
