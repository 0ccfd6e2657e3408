"""Figures from publications and issue trackers, with their sources.

These were not measured by this bench, on other machines, by other people,
with other methods; they are listed beside our figures for orientation and
never mixed into our tables or ratios. Numbers and sources are as collected
in the project's peer digest (/work/shared/reference/peers.md, sections 1–7
and "(b) Performance anchors"); the original source is cited for each. The
"earlier lxss measurement" rows come from the project's own feasibility study
(/work/shared/reference/feasibility.md) and peers.md section 8, on a machine
of the CI kind, in earlier runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Published:
    what: str
    value: str
    source: str
    kind: str = "published"  # or "earlier lxss measurement"


EARLIER: Final = "earlier lxss measurement"

PUBLISHED: Final[dict[str, list[Published]]] = {
    "list": [
        Published(
            "`toolbox list`, two containers (power-saver)", "2–5 s", "containers/toolbox#1027"
        ),
        Published(
            "`lxc list` / `lxc info` on a busy host", "3–5 s / 1.4–2.6 s", "canonical/lxd#4594"
        ),
        Published(
            "`/usr/bin/python3 -S -c pass` (CPython 3.11), hyperfine",
            "10.6 ms",
            "peers.md §8",
            EARLIER,
        ),
        Published("`python3 -I -c 'import asyncio'`, hyperfine", "87.8 ms", "peers.md §8", EARLIER),
    ],
    "warm": [
        Published(
            "`distrobox enter bench -- whoami` (hyperfine, 100 runs)",
            "395.6 ms ± 10.5 ms",
            "89luca89/distrobox docs/README.md",
        ),
        Published(
            "`distrobox-enter -- whoami`, v1, 2015 2-core laptop",
            "~362 ms",
            "89luca89/distrobox, older docs/README.md",
        ),
        Published("`toolbox run true`", "1.009 s", "containers/toolbox#1070"),
        Published("`podman exec fedora-toolbox-36 true`", "0.257 s", "containers/toolbox#1070"),
        Published("`docker exec`", "~0.4 s", "jessfraz/dockerfiles#497"),
        Published("`nsenter -t PID -m -u -p true`, hyperfine", "2.9 ms", "peers.md §8", EARLIER),
    ],
    "cold": [
        Published(
            "WSL2 cold start, typical user reports",
            "3–4 s; 5–6 s; ~10 s",
            "microsoft/WSL#8751, #6534, #6765",
        ),
        Published("WSL2 cold start, pathological", "40–90 s", "microsoft/WSL#8569, #10456, #10243"),
        Published("Colima start", "27.8 s", "abiosoft/colima#301"),
        Published("Lima start", "23 s", "lima-vm/lima#858"),
        Published(
            "`docker run --rm busybox true`", "0.5 s (8-core i7) to 6.7 s (Atom)", "moby/moby#38077"
        ),
        Published("`docker run --rm … echo hi`", "1.18 s", "jessfraz/dockerfiles#497"),
        Published(
            "`unshare -m -u -p -f --mount-proc true`, hyperfine", "1.9 ms", "peers.md §8", EARLIER
        ),
    ],
    "first": [
        Published("WSL2 first bring-up on a GitHub-hosted runner", "≈35 s", "xroche/httrack#1535"),
    ],
    "seq": [
        Published(
            "500 process spawns inside WSL2 (not through wsl.exe)",
            "~500/s (~1 s)",
            "xroche/httrack#1535",
        ),
        Published(
            "same under MSYS on windows-2022 / windows-2025", "~71/s / ~18/s", "xroche/httrack#1535"
        ),
    ],
    "par8": [],
    "pipe": [
        Published("`dd | dd`, 64 KiB pipes, 2 GiB", "970 MB/s", "feasibility.md §6", EARLIER),
        Published(
            "one-stage relay, Python splice, 1 MiB pipes", "3662 MB/s", "feasibility.md §6", EARLIER
        ),
        Published(
            "virtio-serial guest→host under TCG", "414–442 MB/s", "feasibility.md §3.4", EARLIER
        ),
    ],
    "pty": [
        Published("100 × `uname -a` in a wsl.exe console", "5.2 s", "microsoft/WSL#4712"),
        Published("same loop over ssh", "0.083 s", "microsoft/WSL#4712"),
    ],
    "import": [],
    "export": [],
    "export-gz": [],
    "hostfs-read": [
        Published(
            "\\\\wsl.localhost read-all of a 3 000-file tree, warm",
            "2 856 ms vs 39 ms native (≈73×)",
            "microsoft/WSL#41480",
        ),
        Published(
            "Multipass sshfs mount vs in-VM disk",
            "29–37 MB/s vs 966 MB/s",
            "canonical/multipass#99, #1759",
        ),
        Published("`\\\\wsl$` bulk read", "5.8–7 MB/s", "microsoft/WSL#4220"),
    ],
    "hostfs-walk": [
        Published(
            "\\\\wsl.localhost walk of a 3 000-file tree, warm",
            "104 ms vs 4 ms native (≈26×)",
            "microsoft/WSL#41480",
        ),
        Published(
            "`git status` on /mnt/c (9p) vs git.exe",
            "15 s vs 0.3 s",
            "comment in microsoft/WSL#4197",
        ),
        Published(
            "kernel-tree `git diff`, 9p vs virtiofs (virtme-ng)",
            "283.8 s vs 1.174 s",
            "arighi/virtme-ng#9",
        ),
    ],
    "mem-lxssd": [
        Published(
            "Firecracker VMM memory overhead (1 vCPU, 128 MiB guest)",
            "≤ 5 MiB",
            "firecracker-microvm/firecracker SPECIFICATION.md",
        ),
    ],
    "mem-distro": [
        Published("WSL2 utility VM after start", "~700 MB", "microsoft/WSL#8414"),
        Published(
            "WSL2 VM after heavy work, drop_caches and compaction", "2.2 GB", "microsoft/WSL#8414"
        ),
    ],
    "v2-boot": [
        Published(
            "Firecracker, InstanceStart to guest /sbin/init",
            "≤ 125 ms",
            "firecracker-microvm/firecracker SPECIFICATION.md",
        ),
        Published(
            "Cloud Hypervisor `boot_time_ms`, CI mean (pmem)",
            "166.8 ms (79.3 ms)",
            "cloud-hypervisor/cloud-hypervisor#3794",
        ),
        Published(
            "Cloud Hypervisor boot, developer machine",
            "86.7 ms",
            "cloud-hypervisor/cloud-hypervisor#3832",
        ),
        Published(
            "virtme-ng `vng --exec 'uname -r'` (Rust init)",
            "0.906 s",
            "arighi/virtme-ng virtme_ng_init/README.md",
        ),
        Published(
            "libkrun, host socket ready / first vsock round trip",
            "343 ms / 373–425 ms",
            "containers/libkrun examples/vsock-latency/README.md",
        ),
        Published("vmtest, 9p kernel boot + `echo test`", "1.316 s ± 0.087 s", "danobi/vmtest#88"),
        Published(
            "QEMU TCG microvm, PVH vmlinux, to init marker",
            "2.00 s",
            "feasibility.md §3.2",
            EARLIER,
        ),
        Published("QEMU TCG, to a Python agent over 9p", "4.47 s", "feasibility.md §4", EARLIER),
    ],
    "v2-run": [
        Published(
            "libkrun warm vsock round trip",
            "0.22–0.28 ms",
            "containers/libkrun examples/vsock-latency/README.md",
        ),
        Published(
            "warm `bash` in an ext4 distro image under QEMU TCG",
            "0.09 s",
            "feasibility.md §3.4",
            EARLIER,
        ),
    ],
}
