"""What a distribution finds around it, as in WSL: /tmp on its own disk (kept across stops)
unless its /etc/fstab mounts something there, and as many CPUs as [wsl2] processors says."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Service
from run_support import machine_config, private_distribution, write_wsl_conf


def _mount_types(service: Service, name: str) -> dict[str, str]:
    result = service.ok("-d", name, "-e", "cat", "/proc/self/mountinfo")
    found = {}
    for line in result.out.splitlines():
        fields = line.split()
        found[fields[4]] = fields[fields.index("-") + 1]
    return found


def test_tmp_is_on_the_distributions_disk_and_kept_across_stops(
    service: Service, busybox: str
) -> None:
    assert "/tmp" not in _mount_types(service, busybox)
    service.ok("-d", busybox, "--", "echo kept > /tmp/lxss-kept-across-stops")
    try:
        service.ok("--terminate", busybox)
        assert service.ok("-d", busybox, "-e", "cat", "/tmp/lxss-kept-across-stops").out == (
            "kept\n"
        )
    finally:
        service.ok("-d", busybox, "-e", "rm", "-f", "/tmp/lxss-kept-across-stops")


def test_an_fstab_entry_for_tmp_is_mounted_at_start(service: Service, tmp_path: Path) -> None:
    with private_distribution(service, tmp_path, "fstabtmp") as name:
        # busybox's mount reads /etc/fstab as util-linux's does.
        service.ok("-d", name, "-u", "root", "--",
                   "/bin/busybox --install -s /bin && echo 'tmpfs /tmp tmpfs mode=1777 0 0' "
                   "> /etc/fstab")  # fmt: skip
        service.ok("--terminate", name)
        assert _mount_types(service, name).get("/tmp") == "tmpfs"
        # An entry that cannot be mounted: a warning, and the distribution starts all the same.
        service.ok("-d", name, "-u", "root", "--",
                   "echo 'none /srv/x nosuchfs defaults 0 0' >> /etc/fstab")  # fmt: skip
        service.ok("--terminate", name)
        result = service.ok("-d", name, "--", "echo started")
        assert result.out == "started\n"
        assert result.err.startswith("lxss: warning: mounting /etc/fstab failed: "), result
        assert len(result.err.splitlines()) == 1, result
        # [automount] mountFsTab = false: /etc/fstab is left alone.
        write_wsl_conf(service, name, "[automount]\nmountFsTab = false\n")
        assert "/tmp" not in _mount_types(service, name)


def test_wsl2_processors_is_the_number_of_cpus_programs_see(service: Service, busybox: str) -> None:
    # As in a VM with that many processors: nproc (sched_getaffinity) shows the limit.
    host_cpus = len(os.sched_getaffinity(0))
    assert service.ok("-d", busybox, "-e", "nproc").out == f"{host_cpus}\n"
    with machine_config(service, "[wsl2]\nprocessors=1\n"):
        assert service.ok("-d", busybox, "-e", "nproc").out == "1\n"
        assert service.ok("-d", busybox, "--", "grep Cpus_allowed_list /proc/self/status").out == (
            "Cpus_allowed_list:\t0\n"
        )
    assert service.ok("-d", busybox, "-e", "nproc").out == f"{host_cpus}\n"


def test_the_mount_table_under_mnt_host_is_the_hosts(service: Service, busybox: str) -> None:
    # The host's own mounts show under /mnt/host; lxss's runtime mounts (the VM's scratch
    # directory, the distribution's root) do not. The one exception is /proc: the VM's
    # covers the host's (a user namespace may not unmount that one: it is locked), so that
    # the host's processes stay out of sight.
    with open("/proc/self/mountinfo") as f:
        host = [line.split()[4] for line in f]
    inside = service.ok("-d", busybox, "-e", "cat", "/proc/self/mountinfo").out.splitlines()
    under_host = [line.split()[4] for line in inside if line.split()[4].startswith("/mnt/host")]
    for point in under_host:
        host_point = point.removeprefix("/mnt/host") or "/"
        assert host_point in host, f"{point} is no mount of the host's"
        assert not host_point.startswith((str(service.runtime_dir), str(service.state_dir))), point
    for point in set(under_host) - {"/mnt/host/proc"}:  # stacked no higher than on the host
        host_point = point.removeprefix("/mnt/host") or "/"
        assert under_host.count(point) <= host.count(host_point), point
    assert under_host.count("/mnt/host/proc") == host.count("/proc") + 1
    assert "/mnt/host" in under_host and "/mnt/host/sys" in under_host
    # What shows at /mnt/host/proc is the VM's /proc: no host process (lxssd) in it.
    assert str(service.pid) not in service.ok("-d", busybox, "-e", "ls", "/mnt/host/proc").out
    # `mount` says the same.
    listed = service.ok("-d", busybox, "-e", "mount").out
    assert str(service.runtime_dir) not in listed and str(service.state_dir) not in listed
