"""The cgroup of a utility VM: where its limits are enforced and how it is killed.

Hosts differ: a pure cgroup2 host has every controller in one tree; a hybrid
host (like the CI machines) binds memory, pids and cpu to v1 hierarchies and
leaves cgroup2 without controllers. lxss enforces limits wherever the
controller lives and uses cgroup2, when mounted, for what only it offers:
`cgroup.kill` (kill every process at once, fork bombs included) and
`cgroup.events` (is anything left?).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

LIMITED_CONTROLLERS: Final = ("memory", "pids", "cpu", "cpuset")
CPU_PERIOD_US: Final = 100_000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    pids: int
    processors: int


@dataclass(frozen=True)
class Layout:
    """Where the hierarchies are mounted on this host."""

    unified: str | None
    v1: dict[str, str]
    v2_controllers: frozenset[str]

    @classmethod
    def detect(cls, mountinfo: str = "/proc/self/mountinfo") -> Layout:
        unified = None
        v1: dict[str, str] = {}
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                separator = fields.index("-")
                mount_point, fstype = fields[4], fields[separator + 1]
                options = fields[separator + 3].split(",")
                if fstype == "cgroup2" and unified is None:
                    unified = mount_point
                elif fstype == "cgroup":
                    for controller in LIMITED_CONTROLLERS:
                        if controller in options:
                            v1.setdefault(controller, mount_point)
        controllers: frozenset[str] = frozenset()
        if unified is not None:
            with (
                contextlib.suppress(OSError),
                open(os.path.join(unified, "cgroup.controllers")) as f,
            ):
                controllers = frozenset(f.read().split())
        return cls(unified, v1, controllers)

    def home_of(self, controller: str) -> str | None:
        """The mount point that enforces *controller* (cgroup2 preferred)."""
        if self.unified is not None and controller in self.v2_controllers:
            return self.unified
        return self.v1.get(controller)

    def hierarchies(self) -> list[str]:
        """Every mount point a VM's processes are placed in (each once)."""
        roots = [self.unified] if self.unified else []
        for controller in LIMITED_CONTROLLERS:
            home = self.home_of(controller)
            if home is not None and home not in roots:
                roots.append(home)
        return roots


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def parse_cpu_list(text: str) -> list[int]:
    """A kernel CPU list ("0-3,8,10-11", see cpuset(7)) as CPU numbers, in order."""
    cpus: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def format_cpu_list(cpus: list[int]) -> str:
    """CPU numbers as a kernel CPU list, each run of consecutive numbers as a range."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _read_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class Cgroup:
    """One cgroup, the same relative path in every hierarchy of the layout."""

    def __init__(self, layout: Layout, relative: str) -> None:
        self.layout = layout
        self.relative = relative.strip("/")

    def __repr__(self) -> str:
        return f"<Cgroup {self.relative}>"

    def paths(self) -> list[str]:
        return [os.path.join(root, self.relative) for root in self.layout.hierarchies()]

    def create(self, limits: Limits) -> None:
        if self.layout.unified is not None:
            self._enable_v2_controllers()
        for path in self.paths():
            os.makedirs(path, exist_ok=True)
        self._limit("memory", "memory.max", "memory.limit_in_bytes", str(limits.memory_bytes))
        self._limit("pids", "pids.max", "pids.max", str(limits.pids))
        quota = limits.processors * CPU_PERIOD_US
        if self.layout.home_of("cpu") == self.layout.unified:
            self._limit("cpu", "cpu.max", "", f"{quota} {CPU_PERIOD_US}")
        else:
            self._limit("cpu", "", "cpu.cfs_quota_us", str(quota))
        self._limit_cpuset(limits.processors)

    def _limit_cpuset(self, processors: int) -> None:
        """Confine the cgroup to *processors* CPUs (the first of those its parent has), so
        that the VM's programs see that many (nproc, sched_getaffinity) as a VM's would.

        A cgroup v1 cpuset starts with no CPUs and no memory nodes, and takes no process
        until it has both: every level below the hierarchy's root gets its parent's first.
        """
        home = self.layout.home_of("cpuset")
        if home is None:
            return
        v2 = home == self.layout.unified
        parent = home
        parts = self.relative.split("/")
        for depth, part in enumerate(parts):
            path = os.path.join(parent, part)
            if depth == len(parts) - 1:
                available = parse_cpu_list(
                    _read(parent, "cpuset.cpus.effective" if v2 else "cpuset.cpus")
                )
                _write(os.path.join(path, "cpuset.cpus"), format_cpu_list(available[:processors]))
            elif not v2 and not _read(path, "cpuset.cpus"):
                _write(os.path.join(path, "cpuset.cpus"), _read(parent, "cpuset.cpus"))
            if not v2 and not _read(path, "cpuset.mems"):
                _write(os.path.join(path, "cpuset.mems"), _read(parent, "cpuset.mems"))
            parent = path

    def _enable_v2_controllers(self) -> None:
        """Let our subtree use the controllers cgroup2 has (each ancestor must enable them)."""
        assert self.layout.unified is not None
        wanted = [c for c in LIMITED_CONTROLLERS if c in self.layout.v2_controllers]
        if not wanted:
            return
        path = self.layout.unified
        for part in self.relative.split("/")[:-1]:
            with contextlib.suppress(OSError):
                _write(
                    os.path.join(path, "cgroup.subtree_control"), " ".join(f"+{c}" for c in wanted)
                )
            path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "cgroup.subtree_control"), " ".join(f"+{c}" for c in wanted))

    def _limit(self, controller: str, v2_file: str, v1_file: str, value: str) -> None:
        home = self.layout.home_of(controller)
        if home is None:
            return
        name = v2_file if home == self.layout.unified else v1_file
        if name:
            _write(os.path.join(home, self.relative, name), value)

    def add(self, pid: int) -> None:
        for path in self.paths():
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths():
            for directory, _, _ in os.walk(path):
                found.update(_read_pids(directory))
        return found

    def kill(self) -> None:
        """SIGKILL every process in the cgroup and its children, at once where cgroup2 can."""
        if self.layout.unified is not None:
            kill_file = os.path.join(self.layout.unified, self.relative, "cgroup.kill")
            if os.path.exists(kill_file):
                _write(kill_file, "1")
                return
        for _ in range(100):  # without cgroup.kill a forking process can outrun one sweep
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def destroy(self, timeout: float = 10.0) -> None:
        """Kill what is left and remove the cgroup (children first) from every hierarchy."""
        self.kill()
        deadline = time.monotonic() + timeout
        for path in self.paths():
            for directory, _, _ in sorted(os.walk(path), key=lambda e: -len(e[0])):
                while True:
                    try:
                        os.rmdir(directory)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        # EBUSY until the last killed process has been reaped.
                        if e.errno != errno.EBUSY or time.monotonic() > deadline:
                            raise
                        time.sleep(0.02)


def remove_root(layout: Layout, root_name: str) -> None:
    """Remove the service's top cgroup in every hierarchy, if nothing is left in it."""
    for hierarchy in layout.hierarchies():
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(hierarchy, root_name))


def stale_groups(layout: Layout, root_name: str) -> list[Cgroup]:
    """The VM cgroups under *root_name* that a previous service left behind."""
    names: set[str] = set()
    for hierarchy in layout.hierarchies():
        with contextlib.suppress(FileNotFoundError):
            names.update(
                entry.name
                for entry in os.scandir(os.path.join(hierarchy, root_name))
                if entry.is_dir()
            )
    return [Cgroup(layout, f"{root_name}/{name}") for name in sorted(names)]
