"""Version 2's stdio pipe throughput, over the stream multiplexer (lxss.protocol.mux)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..harness import Figure
from ..lab import BUSYBOX, Lab
from .common import PLAIN_ENV, guarded, lxss_cmd
from .latency import V2, _v2
from .registry import Spec, figure, result
from .throughput import pipe_row

BENCH = Path(__file__).resolve().parents[2]  # so that `-m lxssbench.muxcat` resolves


@figure(
    "v2-pipe",
    "Version 2: stdio pipe throughput over the multiplexer",
    unit="MB/s",
    better="higher",
    what="`head -c N /dev/zero | … cat >/dev/null` with cat's stdin and stdout carried "
    "by version 2's multiplexer: both of its ends joined by a socket pair (no VM: "
    "`lxssbench.muxcat`), and through QEMU; against version 1 and plain `cat`.",
)
def v2_pipe(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    n = s.pipe_bytes
    muxcat = [sys.executable, "-m", "lxssbench.muxcat"]
    rows = [
        pipe_row(
            "lxss mux, host loop (no VM)",
            muxcat,
            n,
            subject=True,
            spawn={"env": {**PLAIN_ENV, "PYTHONPATH": str(BENCH)}},
        ),
        guarded(
            "lxss, version 2 (QEMU)",
            f"… | lxss -d {V2} -- cat",
            lambda: pipe_row(
                "lxss, version 2 (QEMU)", lxss_cmd(lab, "-d", _v2(lab), "--", "cat"), n
            ),
        ),
        guarded(
            "lxss, version 1 (namespaces)",
            f"… | lxss -d {BUSYBOX} -- cat",
            lambda: pipe_row(
                "lxss, version 1 (namespaces)",
                lxss_cmd(lab, "-d", lab.busybox_distro(), "--", "cat"),
                n,
            ),
        ),
        pipe_row("plain cat (host)", ["cat"], n),
    ]
    return result(spec, rows, runs=s.pipe_runs, warmup=1, notes=[f"N = {n} bytes"])
