"""What a distribution finds around it, as in WSL: /tmp on its own disk (kept across stops),
unless its /etc/fstab mounts something there."""

from __future__ import annotations

from pathlib import Path

from conftest import Service
from run_support import private_distribution, write_wsl_conf


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
