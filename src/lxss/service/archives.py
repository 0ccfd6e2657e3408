"""Running the archive worker (lxss.archive.worker) for imports, exports and removals.

The worker runs with the owner's rights in the owner's user namespace; this
module starts it, maps it, feeds it and turns its report into a result or an
exception. The service never touches a distribution's files itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Final

from lxss.aio import communicate, kill_and_reap
from lxss.archive import busybox, icon
from lxss.bootstrap import bootstrap_argv
from lxss.linux.cgroup import Cgroup, Limits
from lxss.linux.confine import off_loop, start_in
from lxss.linux.subids import Mapping
from lxss.linux.userns import spawn_mapped

log = logging.getLogger(__name__)

MAP_TIMEOUT: Final = 30.0
WORK_TIMEOUT: Final = 6 * 3600.0  # a multi-GB rootfs on a slow disk, but never forever
REMOVE_TIMEOUT: Final = 3600.0


class WorkerFailed(Exception):
    """The worker reported a failure; the message is for the user."""


@dataclass(frozen=True)
class UnpackResult:
    warnings: list[str]
    os_id: str
    os_version_id: str
    is_linux: bool
    default_uid: int | None = None  # an image's User, resolved in its /etc/passwd
    shortcut: bool = True  # /etc/wsl-distribution.conf [shortcut] enabled
    default_name: str | None = None  # /etc/wsl-distribution.conf [oobe] defaultName
    shortcut_icon: dict[str, str] | None = None  # [shortcut] icon: format and base64 data


@dataclass(frozen=True)
class Jail:
    """Who a worker acts as (the owner's id mapping) and the cgroup that bounds it.

    The cgroup matters: a hostile archive can ask tarfile for a huge pax header or
    xz for a huge dictionary, and memory is better refused than exhausted.
    """

    mapping: Mapping
    group: Cgroup
    slots: asyncio.Semaphore  # the owner's workers that may run at once


WORKER_LIMITS: Final = Limits(memory_bytes=1 << 30, pids=64, processors=os.cpu_count() or 1)


async def _run(
    operation: str,
    jail: Jail,
    args: list[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    pass_fds: tuple[int, ...] = (),
    timeout: float = WORK_TIMEOUT,
) -> dict[str, Any]:
    argv = bootstrap_argv("lxss.archive.worker", operation, *args)
    async with jail.slots:
        jail.group.create(WORKER_LIMITS)
        try:
            return await _run_in(jail, operation, argv, stdin, pass_fds, timeout)
        finally:
            await off_loop(jail.group.destroy)


async def _run_in(
    jail: Jail,
    operation: str,
    argv: list[str],
    stdin: int | None,
    pass_fds: tuple[int, ...],
    timeout: float,
) -> dict[str, Any]:
    pending = spawn_mapped(
        argv, pass_fds=pass_fds, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc = await start_in(pending, jail.group, jail.mapping, MAP_TIMEOUT)
    try:
        # On the event loop, not in a thread: an import that stalls for hours (an archive
        # on a pipe nobody writes to) holds a slot of its owner's, nothing anyone shares.
        stdout, stderr = await communicate(proc, timeout)
    except BaseException:
        await kill_and_reap(proc)
        raise
    for line in stderr.decode(errors="replace").splitlines():
        log.debug("archive worker %s: %s", operation, line)
    if proc.returncode == -signal.SIGKILL and _out_of_memory(jail.group):
        log.warning("archive worker %s: killed at its memory limit", operation)
        raise WorkerFailed(
            f"the archive needs more than the {WORKER_LIMITS.memory_bytes >> 20} MiB of memory "
            "an import may use (a compression bomb, or a header claiming gigabytes?)"
        )
    try:
        report: dict[str, Any] = json.loads(stdout.decode() or "null")
    except ValueError:
        report = {}
    if proc.returncode == 0 and isinstance(report, dict) and report.get("ok"):
        return report
    if proc.returncode == 1 and isinstance(report, dict) and "error" in report:
        raise WorkerFailed(str(report["error"]))
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    log.error("archive worker %s crashed (status %s): %s", operation, proc.returncode, tail[0])
    raise WorkerFailed(f"the archive worker failed unexpectedly ({tail[0]})")


def _out_of_memory(group: Cgroup) -> bool:
    """Whether the kernel's OOM killer has killed a process of *group* (v2 or v1 counters)."""
    for path in group.paths():
        for name in ("memory.events", "memory.oom_control"):
            try:
                with open(os.path.join(path, name)) as f:
                    counters = dict(line.split() for line in f if len(line.split()) == 2)
            except OSError:
                continue
            if int(counters.get("oom_kill", "0")) > 0:
                return True
    return False


def _unpack_result(report: dict[str, Any]) -> UnpackResult:
    uid = report.get("defaultUid")
    name = report.get("defaultName")
    return UnpackResult(
        warnings=[str(w) for w in report.get("warnings", [])],
        os_id=str(report.get("osId", "")),
        os_version_id=str(report.get("osVersionId", "")),
        is_linux=bool(report.get("isLinux")),
        default_uid=uid if isinstance(uid, int) and 0 <= uid <= 65535 else None,
        shortcut=bool(report.get("shortcut", True)),
        default_name=name if isinstance(name, str) else None,
        shortcut_icon=_shortcut_icon(report.get("shortcutIcon")),
    )


def _shortcut_icon(value: Any) -> dict[str, str] | None:
    """The worker's icon, passed on only in the shape and size the interface promises."""
    if not isinstance(value, dict):
        return None
    kind, data = value.get("format"), value.get("data")
    if kind not in icon.FORMATS or not isinstance(data, str):
        return None
    if len(data) > (icon.MAX_ICON + 2) // 3 * 4:
        return None
    return {"format": kind, "data": data}


async def unpack_archive(jail: Jail, archive_fd: int, base_path: str) -> UnpackResult:
    """Unpack the archive on *archive_fd* into base_path/rootfs."""
    report = await _run("unpack", jail, ["--base", base_path], stdin=archive_fd)
    return _unpack_result(report)


async def unpack_layers(
    jail: Jail,
    stream_fd: int,
    layers: list[dict[str, Any]],
    image: dict[str, Any] | None,
    base_path: str,
) -> UnpackResult:
    """Apply an image's *layers* (digest and size each, checked by the caller), read in
    order from *stream_fd*, into base_path/rootfs, then its config's defaults (*image*)."""
    args = ["--base", base_path, "--layers", json.dumps(layers), "--image", json.dumps(image or {})]
    report = await _run("unpack", jail, args, stdin=stream_fd)
    return _unpack_result(report)


async def unpack_builtin(jail: Jail, name: str, base_path: str) -> UnpackResult:
    """Unpack a built-in root file system, generated into a pipe by a thread."""
    if name != "busybox":
        raise WorkerFailed(f"there is no built-in distribution called '{name}' (try busybox)")
    if not os.path.exists(busybox.BUSYBOX):
        raise WorkerFailed(
            f"the built-in distribution needs {busybox.BUSYBOX}: apt-get install busybox-static"
        )
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_end, "wb", buffering=1 << 20) as out:
                busybox.write_rootfs(out)
        except BrokenPipeError:
            pass  # the worker failed first and says why
        except BaseException as e:
            errors.append(e)

    producer = threading.Thread(target=produce, name="busybox-rootfs", daemon=True)
    producer.start()
    try:
        report = await _run("unpack", jail, ["--base", base_path], stdin=read_end)
    finally:
        os.close(read_end)
        await off_loop(lambda: producer.join(60.0))  # ends at once: its reader is gone
    if errors:
        raise WorkerFailed(f"building the busybox root file system failed: {errors[0]}")
    return _unpack_result(report)


async def pack_tree(jail: Jail, base_path: str, out_fd: int, export_format: str) -> list[str]:
    """Write base_path/rootfs to *out_fd* as *export_format*; returns warnings."""
    args = ["--base", base_path, "--out-fd", str(out_fd), "--format", export_format]
    report = await _run("pack", jail, args, pass_fds=(out_fd,))
    return [str(w) for w in report.get("warnings", [])]


@dataclass(frozen=True)
class Leftovers:
    """What a removal could not delete: how many entries, and the first few with why."""

    failures: int
    named: list[str]


async def remove_tree(jail: Jail, base_path: str, identity: tuple[int, int] | None) -> Leftovers:
    """Delete base_path/rootfs with the owner's rights, if base_path is still the directory
    *identity* names (when known); base_path is its maker's to remove."""
    args = ["--base", base_path]
    if identity is not None:
        args += ["--identity", f"{identity[0]}:{identity[1]}"]
    report = await _run("remove", jail, args, timeout=REMOVE_TIMEOUT)
    return Leftovers(int(report.get("failures", 0)), [str(x) for x in report.get("left", [])])


def _identity_args(flag: str, identity: tuple[int, int]) -> list[str]:
    return [flag, f"{identity[0]}:{identity[1]}"]


async def inspect_tree(jail: Jail, base_path: str, identity: tuple[int, int]) -> UnpackResult:
    """What base_path/rootfs is, read with the owner's rights."""
    args = ["--base", base_path, *_identity_args("--identity", identity)]
    return _unpack_result(await _run("inspect", jail, args))


async def move_tree(
    jail: Jail,
    source: tuple[str, tuple[int, int]],
    target: tuple[str, tuple[int, int]],
) -> bool:
    """Rename source/rootfs into target (each a base path and its identity); False when
    they are on different file systems (nothing was done)."""
    args = ["--base", source[0], *_identity_args("--identity", source[1]), "--to", target[0],
            *_identity_args("--to-identity", target[1])]  # fmt: skip
    return bool((await _run("move", jail, args))["moved"])


async def copy_tree(jails: tuple[Jail, Jail], source: str, target: str) -> list[str]:
    """Copy source/rootfs into target/rootfs (on another file system): a pack worker
    feeding an unpack worker through a pipe, both with the owner's rights (each in a jail
    of its own). Each end is closed as soon as its worker is done, so a failure of either
    ends the other."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)

    async def pack() -> list[str]:
        try:
            return await pack_tree(jails[0], source, write_end, "tar")
        finally:
            os.close(write_end)

    async def unpack() -> UnpackResult:
        try:
            return await unpack_archive(jails[1], read_end, target)
        finally:
            os.close(read_end)

    packed, unpacked = await asyncio.gather(pack(), unpack(), return_exceptions=True)
    for outcome in (packed, unpacked):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(packed, list) and isinstance(unpacked, UnpackResult)
    return [*packed, *unpacked.warnings]
