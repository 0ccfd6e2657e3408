"""Resource limits of the VM spec hold against a hostile distribution (promise 7 of
docs/security.md): a fork bomb and a memory hog in lxsstest-a's distribution are
contained by A's VM cgroup, while the host, lxssd and lxsstest-b's distribution keep
working; the limits cannot be raised from inside, nor past the machine's ceiling.

test_lifetime.py checks the limits themselves on root's distribution (a fork loop, a
600 MB shell variable); this suite attacks them as an unprivileged user.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service
from mgmt import call, spawn_lxss
from run_support import machine_config, wait_until
from security_support import (
    ATTACK,
    ATTACKER,
    OTHER,
    REFUSED,
    UserDistribution,
    attacker_and_victim,
    parse_attempts,
    processes_in_cgroup,
    vm_cgroup,
)

A_NAME, B_NAME = "sec-limits-a", "sec-limits-b"
PIDS = 128
QUICK = 5.0


distributions = attacker_and_victim(A_NAME, B_NAME)


@pytest.fixture
def greedy_user_config(distributions: tuple[UserDistribution, ...]) -> Iterator[None]:
    """A's ~/.lxssconfig asks for far more than the machine allows."""
    a = distributions[0].owner
    path = Path(a.home) / ".lxssconfig"
    path.write_text("[wsl2]\npidsLimit=1000000\nmemory=1TB\nprocessors=64\n")
    os.chown(path, a.uid, a.gid)
    try:
        yield
    finally:
        path.unlink()


def host_still_works(service: Service, b: UserDistribution) -> None:
    """The host forks, lxssd answers root, and B's distribution runs a program quickly."""
    started = time.monotonic()
    for _ in range(20):
        subprocess.run(["true"], check=True, timeout=10)
    assert time.monotonic() - started < QUICK
    assert service.process is not None and service.process.poll() is None, "lxssd died"
    assert "version" in call(service, "GetVersion")["parameters"]
    started = time.monotonic()
    result = b.run("echo fine", timeout=60)
    assert result.returncode == 0 and result.out == "fine\n", result
    assert time.monotonic() - started < QUICK, f"B waited {time.monotonic() - started:.1f} s"


def cgroup_value(path: Path) -> str:
    return path.read_text().strip()


def test_fork_bomb_is_contained(
    service: Service,
    distributions: tuple[UserDistribution, UserDistribution],
    greedy_user_config: None,
) -> None:
    a, b = distributions
    with machine_config(service, f"[wsl2]\npidsLimit={PIDS}\nprocessors=1\n"):
        for user in (ATTACKER, OTHER):
            service.ok("--shutdown", user=user)  # the next VM start reads the configuration
        a.ok("true")
        pids = vm_cgroup(service, a.owner.uid)
        assert cgroup_value(pids / "pids.max") == str(PIDS), "the machine's ceiling was raised"
        cpu = vm_cgroup(service, a.owner.uid, "cpu")
        quota = cpu / "cpu.max" if (cpu / "cpu.max").exists() else cpu / "cpu.cfs_quota_us"
        assert cgroup_value(quota).split()[0] == "100000", "one processor's worth of CPU time"
        bomb = spawn_lxss(service, "-d", A_NAME, "--", "f() { while :; do f & done; }; f",
                          user=ATTACKER, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            refused_forks = pids / "pids.events"
            wait_until(lambda: "max 0" not in cgroup_value(refused_forks), 30,
                       "the fork bomb to reach the pids limit")  # fmt: skip
            for _ in range(3):
                pushing = _refused_forks(refused_forks)
                host_still_works(service, b)
                current = int(cgroup_value(pids / "pids.current"))
                assert current <= PIDS, current
                # The bomb is still at it (forks keep being refused), and every process of
                # A's VM is inside its cgroup (nothing forked its way out).
                assert _refused_forks(refused_forks) > pushing
                assert len(processes_in_cgroup(service, a.owner.uid)) <= PIDS
            started = time.monotonic()
            service.ok("--terminate", A_NAME, user=ATTACKER, timeout=60)
            assert time.monotonic() - started < 15
        finally:
            bomb.kill()
            bomb.wait(30)
        assert a.ok("echo after").out == "after\n"


def test_memory_hog_is_killed_in_its_cgroup(
    service: Service,
    distributions: tuple[UserDistribution, UserDistribution],
    greedy_user_config: None,
) -> None:
    """The machine's memory is a ceiling: A's ~/.lxssconfig asks for 1 TB in vain."""
    a, b = distributions
    with machine_config(service, "[wsl2]\nmemory=256MB\n"):
        for user in (ATTACKER, OTHER):
            service.ok("--shutdown", user=user)
        a.ok("true")
        memory = vm_cgroup(service, a.owner.uid, "memory")
        limit = memory / "memory.max"
        if not limit.exists():
            limit = memory / "memory.limit_in_bytes"
        assert int(cgroup_value(limit)) == 256 << 20
        before = _oom_kills(memory)
        hog = spawn_lxss(
            service, "-d", A_NAME, "--",
            'x=$(head -c 900000000 /dev/zero | tr "\\0" a); echo survived ${#x}',
            user=ATTACKER, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            host_still_works(service, b)
            out, _ = hog.communicate(timeout=120)
        finally:
            if hog.poll() is None:
                hog.kill()
                hog.communicate()
        assert hog.returncode == 137 and b"survived" not in out, (hog.returncode, out)
        assert _oom_kills(memory) > before, "the kill was not the VM cgroup's own"
        host_still_works(service, b)
        assert a.ok("echo after").out == "after\n"


def _refused_forks(events: Path) -> int:
    """pids.events: how many forks the limit has refused so far."""
    return int(cgroup_value(events).split()[1])


def _oom_kills(memory: Path) -> int:
    """How many processes the OOM killer took in this memory cgroup (v2 or v1)."""
    for name in ("memory.events", "memory.oom_control"):
        path = memory / name
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    raise AssertionError(f"no OOM kill counter in {memory}")


def test_limits_cannot_be_changed_from_inside(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """The VM's cgroup (seen through /sys, the host's) is root's: distribution root can
    neither raise its limits, nor leave it for another cgroup, nor mount one of its own
    with controllers."""
    a, _ = distributions
    a.ok("true")
    uid = a.owner.uid
    files = []
    for controller, names in (("pids", ("pids.max",)), ("memory", ("memory.max",
                              "memory.limit_in_bytes", "memory.memsw.limit_in_bytes")),
                              ("cpu", ("cpu.max", "cpu.cfs_quota_us"))):  # fmt: skip
        group = vm_cgroup(service, uid, controller)
        files += [group / name for name in names if (group / name).exists()]
        files += [group / "cgroup.procs", group.parent / "cgroup.procs"]
        files.append(group.parents[1] / "cgroup.procs")  # the hierarchy's root
    files = sorted(set(files))
    before = {path: path.read_text() for path in files if "procs" not in path.name}
    script = "\n".join(f"{ATTACK} write {path}" for path in files)
    script += "\nfor f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > $f; done 2>/dev/null"
    script += f"\n{ATTACK} mount none /mnt cgroup"
    attempts = parse_attempts(a.ok(script).out)
    assert attempts.pop("mount") == ["EPERM"], attempts  # a v1 hierarchy of its own
    assert attempts["write"] and all(r in REFUSED for r in attempts["write"]), attempts
    assert len(attempts["write"]) == len(files)
    assert {path: path.read_text() for path in before} == before
    in_vm = set(processes_in_cgroup(service, uid))
    children = {pid for pid in _host_pids() if _parent(pid) in in_vm}
    assert children <= in_vm, "a process of A's VM left its cgroup"


def _host_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
