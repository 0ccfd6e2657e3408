"""Each figure as a function returning measurements; SPECS lists them in report order."""

from __future__ import annotations

# Imported for their @figure registrations; ORDER below is the report's order.
from . import (  # noqa: F401
    archive,
    hostfs,
    image,
    install,
    interop,
    latency,
    memory,
    muxpipe,
    network,
    pty,
    throughput,
    vm2,
)  # fmt: skip
from .registry import SPECS, Spec, run_figure

ORDER = (
    "list",
    "warm",
    "cold",
    "first",
    "seq",
    "par8",
    "pipe",
    "net-tcp",
    "net-connect",
    "pty",
    "interop",
    "interop-pipe",
    "import",
    "export",
    "export-gz",
    "install-catalog",
    "oci-install",
    "hostfs-read",
    "hostfs-walk",
    "mem-lxssd",
    "mem-distro",
    "v2-boot",
    "v2-run",
    "v2-vm-boot",
    "v2-vm-memory",
    "v2-pipe",
)
assert set(ORDER) == set(SPECS), set(ORDER) ^ set(SPECS)

__all__ = ["ORDER", "SPECS", "Spec", "run_figure"]
