"""The VM backends lxss has, by distribution version (the one place that names them).

Each entry is a module with a `backend(context) -> VmBackend` function; a backend that
cannot run on this machine raises `BackendUnavailable` with the reason, and its version
is then refused (VersionNotSupported, with that reason). To add version 2: write
lxss/vm/qemu.py with `backend()`, and add `2: "lxss.vm.qemu"` below.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Final

from lxss.errors import LxssError
from lxss.linux.cgroup import Layout
from lxss.vm.backend import VmBackend

log = logging.getLogger(__name__)

MODULES: Final[dict[int, str]] = {1: "lxss.vm.namespace"}


class BackendUnavailable(LxssError):
    """A backend that cannot run here; the message says why, for the user."""


@dataclass(frozen=True)
class BackendContext:
    """What the service gives every backend."""

    cgroup_layout: Layout
    cgroup_root: str  # the service's cgroup, under which each VM gets its own
    runtime_dir: str  # /run/lxss: per-VM scratch directories go under it
    state_dir: str  # /var/lib/lxss
    host_resolv_conf: str  # where the host's resolvers are read (a NAT VM's DNS proxy)


@dataclass
class Backends:
    """The backends that run here, and why each other version does not."""

    available: dict[int, VmBackend] = field(default_factory=dict)
    unavailable: dict[int, str] = field(default_factory=dict)

    def recover(self) -> None:
        for backend in self.available.values():
            backend.recover()

    def close(self) -> None:
        for backend in self.available.values():
            backend.close()


def load(context: BackendContext, modules: dict[int, str] | None = None) -> Backends:
    found = Backends()
    for version, name in sorted((MODULES if modules is None else modules).items()):
        try:
            backend: VmBackend = importlib.import_module(name).backend(context)
        except BackendUnavailable as e:
            log.info("version %d is not available: %s", version, e)
            found.unavailable[version] = str(e)
            continue
        found.available[version] = backend
    return found
