"""Interop: a host program run from inside a distribution (lxss-host-exec), per call and
for bulk stdio."""

from __future__ import annotations

import shlex

from ..harness import Figure, Runner
from ..lab import BUSYBOX, Lab
from ..proc import timed_ms
from .common import PLAIN_ENV, guarded, lxss_cmd
from .registry import Spec, figure, result
from .throughput import pipe_row

CALLS = 20  # per sample: one lxss launch shared by this many calls from inside


def _loop(command: str) -> str:
    return f"i=0; while [ $i -lt {CALLS} ]; do {command}; i=$((i+1)); done"


def _per_call(label: str, argv: list[str], *, subject: bool = False) -> Runner:
    """A row whose sample is the wall time of *argv* (a loop of CALLS calls) / CALLS."""

    def measure() -> float:
        return timed_ms(argv, timeout=120, label="", env=PLAIN_ENV) / CALLS

    return Runner(label, " ".join(argv), measure, subject=subject)


@figure(
    "interop",
    "Interop latency: a host `true` from inside",
    unit="ms",
    better="lower",
    what=f"`lxss-host-exec true` called {CALLS} times in one session inside bench-busybox, "
    "per call, against the same loop of the distribution's own `true` (the loop and the "
    "launch, shared), of the host's `true`, and of `nsenter -a true` into running "
    "namespaces (crossing a namespace boundary with root's privilege).",
)
def interop(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings

    def inside(command: str) -> list[str]:
        return lxss_cmd(lab, "-d", lab.busybox_distro(), "--", _loop(command))

    rows = [
        guarded(
            "lxss",
            f"lxss -d {BUSYBOX} -- '{_loop('lxss-host-exec true')}'",
            lambda: _per_call("lxss", inside("lxss-host-exec true"), subject=True),
            subject=True,
        ),
        guarded(
            "true inside (loop and launch floor)",
            f"lxss -d {BUSYBOX} -- '{_loop('true')}'",
            lambda: _per_call("true inside (loop and launch floor)", inside("/bin/true")),
        ),
        _per_call("true on the host", ["sh", "-c", _loop("/bin/true")]),
        guarded(
            "nsenter -a true",
            "nsenter -t PID -a true",
            lambda: _per_call(
                "nsenter -a true (root, into running namespaces)",
                ["sh", "-c", _loop(shlex.join(lab.holder().nsenter("true")))],
            ),
        ),
    ]
    return result(spec, rows, runs=s.runs, warmup=s.warmup, notes=[f"{CALLS} calls per sample"])


@figure(
    "interop-pipe",
    "Interop stdio throughput",
    unit="MB/s",
    better="higher",
    what="`head -c N /dev/zero | lxss -d bench-busybox -- lxss-host-exec cat >/dev/null`: the "
    "host's `cat` gets the caller's pipe itself; against `lxss -- cat` and plain `cat`.",
)
def interop_pipe(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    n = s.pipe_bytes

    def through(*command: str) -> list[str]:
        return lxss_cmd(lab, "-d", lab.busybox_distro(), "--", *command)

    rows = [
        guarded(
            "lxss",
            f"… | lxss -d {BUSYBOX} -- lxss-host-exec cat",
            lambda: pipe_row("lxss", through("lxss-host-exec", "cat"), n, subject=True),
            subject=True,
        ),
        guarded(
            "lxss -- cat",
            f"… | lxss -d {BUSYBOX} -- cat",
            lambda: pipe_row("lxss -- cat (inside)", through("cat"), n),
        ),
        pipe_row("plain cat (host)", ["cat"], n),
    ]
    return result(spec, rows, runs=s.pipe_runs, warmup=1, notes=[f"N = {n >> 20} MiB per sample"])
