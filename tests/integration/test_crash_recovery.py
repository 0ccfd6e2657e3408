"""kill -9 of lxssd in the middle of an import: the archive worker dies with it, and
the restarted service removes the half-written distribution (its Installing row and
its files) before it serves anyone."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_USERS, HostState, Service
from mgmt import (
    User,
    assert_fails,
    member,
    names,
    registry_rows,
    spawn_lxss,
    wait_for,
)

PROGRESS_FILES = 8  # files the worker must have written before the kill
MAX_STREAM = 4 << 30  # the writer gives up here (the test kills long before)


class EndlessArchive:
    """Writes a gzip'd tar of random 1 MiB files into a pipe until the reader goes away."""

    def __init__(self, fd: int) -> None:
        self._pipe = open(fd, "wb")  # noqa: SIM115 - closed by the thread, or by close()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def _write(self) -> None:
        import io

        try:
            with tarfile.open(fileobj=self._pipe, mode="w|gz") as archive:
                for info, data in [
                    (member("etc", tarfile.DIRTYPE, mode=0o755), None),
                    (member("etc/os-release"), b"ID=endless\n"),
                    (member("data", tarfile.DIRTYPE, mode=0o755), None),
                ]:
                    if data is not None:
                        info.size = len(data)
                    archive.addfile(info, io.BytesIO(data) if data else None)
                block = os.urandom(1 << 20)
                for i in range(MAX_STREAM >> 20):
                    info = member(f"data/chunk-{i:05d}")
                    info.size = len(block)
                    archive.addfile(info, io.BytesIO(block))
        except (BrokenPipeError, ValueError):
            pass  # the import was killed: what we are here for
        except BaseException as e:
            self.error = e
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    def close(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the archive writer is stuck"
        assert self.error is None, f"the archive writer failed: {self.error!r}"


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of *pid*, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), fields[0], fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every process below *pid*, with its start time (so a reused pid is not mistaken)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            children.setdefault(info[0], []).append(int(entry))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        info = _stat(child)
        if info is not None:
            found[child] = info[2]
            todo.extend(children.get(child, []))
    return found


def alive(processes: dict[int, str]) -> list[int]:
    living = []
    for pid, started in processes.items():
        info = _stat(pid)
        if info is not None and info[2] == started and info[1] != "Z":
            living.append(pid)
    return living


@contextlib.contextmanager
def endless_import(
    service: Service, how: str, owner: User, location: Path | None
) -> Iterator[tuple[subprocess.Popen[bytes] | socket.socket, EndlessArchive]]:
    """Start an import fed by an EndlessArchive; yields the client and the writer."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    client: subprocess.Popen[bytes] | socket.socket
    try:
        if how == "lxss":
            assert location is not None
            client = spawn_lxss(service, "--import", "crashme", str(location), "-",
                                user=owner.name, stdin=read_end, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        else:  # Varlink, without a location: the service's own storage
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(30)
            client.connect(str(service.runtime_dir / "lxssd.sock"))
            message = {"method": "io.lxss.Service.RegisterDistribution",
                       "parameters": {"name": "crashme", "archive": 0}}  # fmt: skip
            socket.send_fds(client, [json.dumps(message).encode() + b"\0"], [read_end])
    finally:
        os.close(read_end)
    writer = EndlessArchive(write_end)
    try:
        yield client, writer
    finally:
        if isinstance(client, socket.socket):
            client.close()
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.wait(30)
            if client.poll() is None:
                client.kill()
                client.wait(10)
            client.communicate()
        writer.close()


@pytest.mark.parametrize(
    ("how", "who"),
    [("lxss", "root"), ("lxss", TEST_USERS[0]), ("varlink", "root")],
    ids=["lxss-root", "lxss-user", "varlink-service-storage"],
)
def test_kill_9_during_import_leaves_nothing_after_restart(
    fresh_service: Service, test_users: tuple[str, str], tmp_path: Path, how: str, who: str
) -> None:
    service = fresh_service
    owner = User.named(who) if who != "root" else User("root", 0, 0, "/root")
    location = None
    if how == "lxss":
        location = Path(owner.home) / "crash-install" if owner.uid else tmp_path / "install"
    try:
        with endless_import(service, how, owner, location) as (client, _writer):
            row = wait_for(lambda: registry_rows(service, "crashme"), 60, "the Installing row")[0]
            assert (row["state"], row["owner_uid"]) == ("Installing", owner.uid)
            rootfs = Path(row["base_path"]) / "rootfs"
            wait_for(
                lambda: (rootfs / "data").is_dir()
                and len(os.listdir(rootfs / "data")) >= PROGRESS_FILES,
                60, "the worker to write files",
            )  # fmt: skip
            workers = descendants(service.pid)
            assert workers, "the import has no worker process"
            service.kill9()
            wait_for(lambda: not alive(workers), 15, f"workers {alive(workers)} to die")
            if isinstance(client, subprocess.Popen):
                _, err = client.communicate(timeout=30)
                assert client.returncode == 255
                assert len(err.decode().splitlines()) == 1, err
                assert err.startswith(b"lxss: ")
        # The row and the tree are still there: only the restart may clean them up.
        assert [r["state"] for r in registry_rows(service, "crashme")] == ["Installing"]
        assert rootfs.is_dir()
        service.start()
        assert registry_rows(service, "crashme") == []
        assert not rootfs.exists()
        if location is None:
            assert not rootfs.parent.exists(), "the service's own base directory is removed"
        assert "crashme" not in names(service, user=None if who == "root" else who)
        assert_fails(service.lxss("--export", "crashme", "-"), "crashme")
        assert HostState.capture(service).cgroups == frozenset(), "stale worker cgroups"
        assert "left Installing" in service.log_text()
        # The name is free again.
        if location is not None:
            retry = service.lxss("--import", "crashme", str(location), str(_tiny(location)),
                                 user=None if who == "root" else who)  # fmt: skip
            assert retry.returncode == 0, str(retry)
            service.ok("--unregister", "crashme", user=None if who == "root" else who)
    finally:
        if location is not None and owner.uid:
            subprocess.run(["rm", "-rf", str(location), str(location.parent / "tiny.tar")],
                           check=False, timeout=60)  # fmt: skip


def _tiny(location: Path) -> Path:
    """A minimal archive beside *location*, readable by its owner."""
    path = location.parent / "tiny.tar"
    with tarfile.open(path, "w") as archive:
        archive.addfile(member("etc", tarfile.DIRTYPE, mode=0o755))
    os.chmod(path, 0o644)
    return path
