"""A distribution's mount plan (lxss.guest.mounts.distribution_plan), checked as data."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from lxss.guest import mounts
from lxss.guest.mounts import (
    BindFile,
    Directory,
    Mount,
    Propagation,
    Remount,
    RootLayout,
    Symlink,
    distribution_plan,
)
from lxss.linux import syscalls as sc

ROOT = "/var/lib/lxss/0/guid/rootfs"
SAFE_DEVICES = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}


def layout(own_network: bool = False, host_mount: str | None = "/mnt/host") -> RootLayout:
    return RootLayout(
        root=ROOT, shared_dir="/run/lxss/vm/0/shared", own_network=own_network,
        host_mount=host_mount, sys_source="/run/lxss/vm/0/sys" if own_network else "/sys",
    )  # fmt: skip


def _mounts(plan: list[mounts.Operation]) -> dict[str, Mount]:
    found: dict[str, Mount] = {}
    for op in plan:
        if isinstance(op, Mount):
            assert op.target not in found, f"{op.target} mounted twice"
            found[op.target] = op
    return found


def _index(plan: list[mounts.Operation], target: str) -> int:
    return next(i for i, op in enumerate(plan) if isinstance(op, Mount) and op.target == target)


@pytest.mark.parametrize("own_network", [False, True])
@pytest.mark.parametrize("host_mount", ["/mnt/host", None])
def test_every_operation_stays_below_the_root(own_network: bool, host_mount: str | None) -> None:
    for op in distribution_plan(layout(own_network, host_mount)):
        path = {
            Mount: "target", BindFile: "target", Remount: "target", Propagation: "target",
            Symlink: "link", Directory: "path", mounts.Detach: "path",
        }[type(op)]  # fmt: skip
        where = getattr(op, path)
        assert os.path.commonpath([ROOT, where]) == ROOT, op.describe()
        assert op.describe()


def test_the_root_becomes_a_mount_point_first() -> None:
    first = distribution_plan(layout())[0]
    assert isinstance(first, Mount)
    assert (first.source, first.target) == (ROOT, ROOT)
    assert first.flags & sc.MS_BIND and first.flags & sc.MS_REC


def test_wsl_inits_file_systems_are_all_there() -> None:
    found = _mounts(distribution_plan(layout()))
    expected = {
        f"{ROOT}/proc": "proc",
        f"{ROOT}/dev": "tmpfs",
        f"{ROOT}/dev/pts": "devpts",
        f"{ROOT}/dev/shm": "tmpfs",
        f"{ROOT}/run": "tmpfs",
    }
    for target, fstype in expected.items():
        assert target in found, f"no mount on {target}"
        assert found[target].fstype == fstype
    assert f"{ROOT}/sys" in found
    # /tmp stays on the distribution's disk, as in WSL.
    assert f"{ROOT}/tmp" not in found
    assert found[f"{ROOT}/proc"].flags & sc.MS_NOSUID


def test_devpts_is_a_new_instance_of_the_distributions_own() -> None:
    plan = distribution_plan(layout())
    devpts = _mounts(plan)[f"{ROOT}/dev/pts"]
    options = (devpts.data or "").split(",")
    assert "newinstance" in options
    assert "ptmxmode=0666" in options
    assert devpts.flags & sc.MS_NOSUID
    # /dev/ptmx leads to this instance's ptmx, not the host's.
    links = {op.link: op.target for op in plan if isinstance(op, Symlink)}
    assert links[f"{ROOT}/dev/ptmx"] == "pts/ptmx"
    # The host's /dev/ptmx (or /dev/pts) is never bound in.
    for op in plan:
        if isinstance(op, BindFile | Mount):
            assert op.source not in ("/dev/ptmx", "/dev/pts", "/dev"), op.describe()
    assert _index(plan, f"{ROOT}/dev") < _index(plan, f"{ROOT}/dev/pts")


def test_dev_holds_no_device_beyond_the_safe_list() -> None:
    plan = distribution_plan(layout())
    binds = [op for op in plan if isinstance(op, BindFile)]
    assert {op.source for op in binds} == SAFE_DEVICES
    for op in binds:
        assert op.target == f"{ROOT}{op.source}"
    # Nothing else takes its source from the host's /dev.
    for op in plan:
        if isinstance(op, Mount) and op.source and op.source.startswith("/dev"):
            pytest.fail(f"a host device is mounted: {op.describe()}")
    dev = _mounts(plan)[f"{ROOT}/dev"]
    # The /dev tmpfs is mounted before the devices are bound onto it.
    dev_index = plan.index(dev)
    assert all(plan.index(op) > dev_index for op in binds)
    assert dev.flags & sc.MS_NOSUID and dev.flags & sc.MS_NOEXEC


def test_dev_links_of_a_linux_system() -> None:
    links = {op.link: op.target for op in distribution_plan(layout()) if isinstance(op, Symlink)}
    assert links[f"{ROOT}/dev/fd"] == "/proc/self/fd"
    assert links[f"{ROOT}/dev/stdin"] == "/proc/self/fd/0"
    assert links[f"{ROOT}/dev/stdout"] == "/proc/self/fd/1"
    assert links[f"{ROOT}/dev/stderr"] == "/proc/self/fd/2"


def test_run_lock_and_run_user_are_created_after_run() -> None:
    plan = distribution_plan(layout())
    run = _index(plan, f"{ROOT}/run")
    dirs = {op.path: (op.mode, plan.index(op)) for op in plan if isinstance(op, Directory)}
    assert dirs[f"{ROOT}/run/lock"][0] == 0o1777
    assert dirs[f"{ROOT}/run/user"][0] == 0o755
    assert all(index > run for _, index in dirs.values())


def test_sysfs_without_a_network_namespace_is_the_hosts_read_only() -> None:
    plan = distribution_plan(layout(own_network=False))
    sys_mount = _mounts(plan)[f"{ROOT}/sys"]
    assert sys_mount.source == "/sys" and sys_mount.flags & sc.MS_BIND
    remounts = [op for op in plan if isinstance(op, Remount) and op.target == f"{ROOT}/sys"]
    assert len(remounts) == 1
    assert remounts[0].flags & sc.MS_RDONLY and remounts[0].flags & sc.MS_NOSUID
    # Slave before the remount: nothing done inside travels back to the host's /sys.
    slaves = [op for op in plan if isinstance(op, Propagation) and op.target == f"{ROOT}/sys"]
    assert slaves and slaves[0].flags & sc.MS_SLAVE
    assert plan.index(slaves[0]) < plan.index(remounts[0])


def test_sysfs_with_its_own_network_is_the_vms_own_read_only() -> None:
    # mini_init mounts it for the VM's network namespace (a distribution's user namespace
    # may not): the distribution binds it, read-only.
    plan = distribution_plan(layout(own_network=True))
    sys_mount = _mounts(plan)[f"{ROOT}/sys"]
    assert sys_mount.source == "/run/lxss/vm/0/sys" and sys_mount.flags & sc.MS_BIND
    remounts = [op for op in plan if isinstance(op, Remount) and op.target == f"{ROOT}/sys"]
    assert len(remounts) == 1 and remounts[0].flags & sc.MS_RDONLY


def test_host_mount_is_a_slave_bind_of_the_hosts_root() -> None:
    plan = distribution_plan(layout(host_mount="/mnt/host"))
    host = _mounts(plan)[f"{ROOT}/mnt/host"]
    assert host.source == "/" and host.flags & sc.MS_BIND and host.flags & sc.MS_REC
    propagation = [op for op in plan if isinstance(op, Propagation) and op.target == host.target]
    assert len(propagation) == 1
    assert propagation[0].flags & sc.MS_SLAVE and propagation[0].flags & sc.MS_REC
    assert plan.index(propagation[0]) > plan.index(host)


def test_no_host_mount_means_no_view_of_the_host_root() -> None:
    plan = distribution_plan(layout(host_mount=None))
    assert all(not (isinstance(op, Mount) and op.source == "/") for op in plan)


def test_the_vms_shared_directory_appears_at_mnt_wsl() -> None:
    found = _mounts(distribution_plan(layout()))
    shared = found[f"{ROOT}/mnt/wsl"]
    assert shared.source == "/run/lxss/vm/0/shared" and shared.flags & sc.MS_BIND


def test_apply_plan_logs_each_step_before_running_it(tmp_path: Path) -> None:
    events: list[str] = []

    class Step:
        def __init__(self, name: str) -> None:
            self.name = name
            self.target = str(tmp_path / name)

        def describe(self) -> str:
            return f"describe {self.name}"

        def apply(self) -> None:
            events.append(f"apply {self.name}")
            if self.name == "b":
                raise OSError(1, "refused")

    log: list[str] = []
    with pytest.raises(OSError):
        mounts.apply_plan([Step("a"), Step("b"), Step("c")], str(tmp_path), log)
    # The failing step is in the log (so the error can name it); nothing after it ran.
    assert log == ["describe a", "describe b"]
    assert events == ["apply a", "apply b"]


def test_apply_plan_refuses_a_target_under_a_symlink(tmp_path: Path) -> None:
    """Before pivot_root, the distribution's `/mnt -> /etc` would resolve on the host."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "mnt").symlink_to("/etc")
    applied: list[str] = []

    class Step:
        target = str(root / "mnt" / "wsl")

        def describe(self) -> str:
            return "step"

        def apply(self) -> None:
            applied.append("applied")

    with pytest.raises(OSError, match="/mnt is a symlink"):
        mounts.apply_plan([Step()], str(root))
    assert applied == []


def test_the_host_mount_leaves_out_lxss_runtime_mounts() -> None:
    """Right after the host's root is bound and made a slave: the distribution's own root
    and the VM's runtime mounts are detached from the host mount, nothing else."""
    plan = distribution_plan(dataclasses.replace(layout(), vm_mounts=("/run/lxss/vm/0",)))
    kinds = [type(op).__name__ for op in plan[:5]]
    assert kinds == ["Mount", "Mount", "Propagation", "Detach", "Detach"]
    detached = {op.path for op in plan if isinstance(op, mounts.Detach)}
    assert detached == {f"{ROOT}/mnt/host/run/lxss/vm/0", f"{ROOT}/mnt/host{ROOT}"}
    assert not [op for op in distribution_plan(layout(host_mount=None))
                if isinstance(op, mounts.Detach)]  # fmt: skip


def test_detach_takes_off_what_is_stacked_and_stops_when_nothing_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = ["b", "a"]
    calls: list[str] = []

    def umount2(path: str, flags: int = 0) -> None:
        calls.append(path)
        if not stack:
            raise OSError(22, "Invalid argument")
        stack.pop()

    monkeypatch.setattr(sc, "umount2", umount2)
    mounts.Detach("/x").apply()
    assert (stack, calls) == ([], ["/x", "/x", "/x"])


def test_a_tree_without_tmp_gets_one_and_a_tree_with_its_own_keeps_it(tmp_path: Path) -> None:
    """/tmp is the distribution's own (no tmpfs); a bare tree that has none gets a 1777
    directory, and one that has /tmp, as a directory of its own mode or as a symlink, is
    left exactly as it is (the symlink guard is not asked about a path nothing is made at)."""
    operation = mounts.Directory(str(tmp_path / "bare/tmp"), 0o1777, keep_existing=True)
    (tmp_path / "bare").mkdir()
    mounts.apply_plan([operation], str(tmp_path / "bare"))
    assert stat.S_IMODE((tmp_path / "bare/tmp").stat().st_mode) == 0o1777

    (tmp_path / "own/tmp").mkdir(parents=True)
    os.chmod(tmp_path / "own/tmp", 0o700)
    mounts.apply_plan([mounts.Directory(str(tmp_path / "own/tmp"), 0o1777, keep_existing=True)],
                      str(tmp_path / "own"))  # fmt: skip
    assert stat.S_IMODE((tmp_path / "own/tmp").stat().st_mode) == 0o700

    (tmp_path / "linked/var/tmp").mkdir(parents=True)
    (tmp_path / "linked/tmp").symlink_to("var/tmp")
    mounts.apply_plan([mounts.Directory(str(tmp_path / "linked/tmp"), 0o1777, keep_existing=True)],
                      str(tmp_path / "linked"))  # fmt: skip
    assert os.readlink(tmp_path / "linked/tmp") == "var/tmp"


def test_the_plan_gives_tmp_only_when_missing() -> None:
    wanted = [op for op in distribution_plan(layout())
              if isinstance(op, mounts.Directory) and op.path == f"{ROOT}/tmp"]  # fmt: skip
    assert wanted == [mounts.Directory(f"{ROOT}/tmp", 0o1777, keep_existing=True)]
