"""Throughput: commands per second through the CLI, and bytes through stdio."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..harness import Figure, Runner
from ..lab import BUSYBOX, Lab
from ..peers.namespaces import unshare_chroot
from ..proc import Unavailable, run, wait_exact
from .common import PLAIN_ENV, guarded, lxss_cmd, podman_rows
from .registry import Spec, figure, result

WORKERS = 8


def rate_row(
    label: str,
    argv: Sequence[str],
    *,
    batch: int,
    workers: int,
    subject: bool = False,
    spawn: dict[str, Any] | None = None,
) -> Runner:
    """A row whose sample is batch runs of argv (workers at a time), in commands/s."""
    kw: dict[str, Any] = {"env": PLAIN_ENV, **(spawn or {})}

    def one(_: int) -> None:
        run(argv, timeout=120, **kw).check("")

    def measure() -> float:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            start = time.perf_counter_ns()
            list(pool.map(one, range(batch)))  # re-raises the first failure
            seconds = (time.perf_counter_ns() - start) / 1e9
        return batch / seconds

    return Runner(label, " ".join(argv), measure, subject=subject)


def _rate_rows(lab: Lab, *, batch: int, workers: int) -> list[Runner]:
    def lxss() -> Runner:
        return rate_row(
            "lxss",
            lxss_cmd(lab, "-d", lab.busybox_distro(), "--", "true"),
            batch=batch,
            workers=workers,
            subject=True,
        )

    rows = [
        guarded("lxss", f"lxss -d {BUSYBOX} -- true", lxss, subject=True),
        guarded(
            "nsenter -a",
            "nsenter -t PID -a true",
            lambda: rate_row(
                "nsenter -a (enter running namespaces)",
                lab.holder().nsenter("true"),
                batch=batch,
                workers=workers,
            ),
        ),
        guarded(
            "unshare + chroot",
            "unshare … chroot ROOT true",
            lambda: rate_row(
                "unshare + chroot (new namespaces)",
                unshare_chroot(lab.busybox_root(), "true"),
                batch=batch,
                workers=workers,
            ),
        ),
    ]
    rows += podman_rows(
        lab,
        "podman exec ({mode})",
        "podman exec CONTAINER true",
        lambda p: rate_row(
            p.label, p.exec("true"), batch=batch, workers=workers, spawn=p.spawn_kw()
        ),
    )
    return rows


@figure(
    "seq",
    "Command throughput, sequential",
    unit="cmd/s",
    better="higher",
    what="Back-to-back `lxss -d bench-busybox -- true`, one at a time.",
)
def sequential(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    rows = _rate_rows(lab, batch=s.batch, workers=1)
    return result(
        spec, rows, runs=s.batch_runs, warmup=1, notes=[f"one sample = {s.batch} commands"]
    )


@figure(
    "par8",
    "Command throughput, 8 in parallel",
    unit="cmd/s",
    better="higher",
    what=f"`lxss -d bench-busybox -- true` from {WORKERS} concurrent clients.",
)
def parallel(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    batch = max(2 * s.batch, WORKERS)
    rows = _rate_rows(lab, batch=batch, workers=WORKERS)
    return result(
        spec,
        rows,
        runs=s.batch_runs,
        warmup=1,
        notes=[f"one sample = {batch} commands, {WORKERS} at a time"],
    )


def pipe_row(
    label: str,
    consumer: Sequence[str],
    nbytes: int,
    *,
    subject: bool = False,
    spawn: dict[str, Any] | None = None,
) -> Runner:
    """A row whose sample is `head -c N /dev/zero | consumer >/dev/null`, in MB/s."""
    kw: dict[str, Any] = {"env": PLAIN_ENV, **(spawn or {})}
    timeout = max(120.0, nbytes / 20e6)  # even a slow relay gets 20 MB/s of patience

    def measure() -> float:
        start = time.perf_counter_ns()
        head = subprocess.Popen(
            ["head", "-c", str(nbytes), "/dev/zero"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert head.stdout is not None
            res = run(consumer, stdin=head.stdout, timeout=timeout, **kw)
            head.stdout.close()
        finally:
            if head.poll() is None:
                head.kill()
            wait_exact(head, 30)
        seconds = (time.perf_counter_ns() - start) / 1e9
        res.check("")
        if head.returncode != 0:
            raise Unavailable(f"the reader stopped early (head exited {head.returncode})")
        return nbytes / 1e6 / seconds

    return Runner(
        label,
        f"head -c {nbytes} /dev/zero | {' '.join(consumer)} >/dev/null",
        measure,
        subject=subject,
    )


@figure(
    "pipe",
    "stdio pipe throughput",
    unit="MB/s",
    better="higher",
    what="`head -c N /dev/zero | lxss -d bench-busybox -- cat >/dev/null` against the "
    "same pipeline through plain `cat` and through peers.",
)
def pipe(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    n = s.pipe_bytes
    rows = [
        guarded(
            "lxss",
            f"… | lxss -d {BUSYBOX} -- cat",
            lambda: pipe_row(
                "lxss", lxss_cmd(lab, "-d", lab.busybox_distro(), "--", "cat"), n, subject=True
            ),
            subject=True,
        ),
        pipe_row("plain cat (host)", ["cat"], n),
        guarded(
            "nsenter -a cat",
            "nsenter -t PID -a cat",
            lambda: pipe_row("nsenter -a cat (running namespaces)", lab.holder().nsenter("cat"), n),
        ),
    ]
    rows += podman_rows(
        lab,
        "podman exec -i ({mode})",
        "podman exec -i CONTAINER cat",
        lambda p: pipe_row(
            p.label.replace("exec", "exec -i"), p.exec("cat", stdin=True), n, spawn=p.spawn_kw()
        ),
    )
    return result(spec, rows, runs=s.pipe_runs, warmup=1, notes=[f"N = {n >> 20} MiB per sample"])
