"""What machine the numbers came from: CPU, memory, kernel, storage, versions."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from .proc import run


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    res = run(argv, timeout=20, capture=True)
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0].strip() if text else f"unknown ({res.why()})"


def _cpuinfo() -> tuple[str, str]:
    model, hypervisor = "unknown", "none"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and " hypervisor" in line:
                hypervisor = "yes"
    except OSError:
        pass
    if hypervisor == "yes" and shutil.which("lscpu"):
        for line in run(["lscpu"], timeout=10, capture=True).stdout.splitlines():
            if line.startswith("Hypervisor vendor:"):
                hypervisor = line.split(":", 1)[1].strip()
    return model, hypervisor


def _meminfo_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def _cgroups() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2 (unified)"
    if Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        ctl = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().split()
        return "v1 + v2 (hybrid)" + (f"; on v2: {' '.join(ctl)}" if ctl else "")
    return "v1"


def _storage(path: str) -> str:
    res = run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", path], timeout=10, capture=True)
    return res.stdout.strip() or "unknown"


def describe(python: str, lxss_path: str | None, lxss_interpreter: str) -> dict[str, str]:
    """An ordered description of this machine and the tools measured on it."""
    model, hypervisor = _cpuinfo()
    repo = Path(__file__).resolve().parents[2]
    commit = (
        run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"], timeout=10, capture=True
        ).stdout.strip()
        or "unknown"
    )
    return {
        "CPU": f"{model}, {os.cpu_count()} logical CPUs, hypervisor: {hypervisor}",
        "Memory": _meminfo_gib(),
        "OS": _os_release(),
        "Kernel": platform.release(),
        "cgroups": _cgroups(),
        "Storage (work dir)": _storage("/var/tmp"),
        "Bench Python": _first_line([python, "-VV"]),
        "lxss": f"{lxss_path or 'not found'} (repo at {commit})",
        "lxss interpreter": lxss_interpreter,
        "podman": _first_line(["podman", "--version"]),
        "conmon": _first_line(["conmon", "--version"]),
        "crun": _first_line(["crun", "--version"]),
        "runc": _first_line(["runc", "--version"]),
        "systemd-nspawn": _first_line(["systemd-nspawn", "--version"]),
        "bwrap": _first_line(["bwrap", "--version"]),
        "util-linux": _first_line(["unshare", "--version"]),
        "busybox": _first_line(["busybox"]),
        "tar": _first_line(["tar", "--version"]),
    }
