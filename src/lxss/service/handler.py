"""io.lxss.Service: turns Varlink calls into UserSession operations.

Who the caller is comes from SO_PEERCRED alone. `forUid` lets root act for
another user; for anyone else it is refused (even naming themselves, so a
client never learns to rely on it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import pwd
import stat
from typing import Any

from lxss import __version__
from lxss.api import errors
from lxss.api.server import Call, Replies, paged
from lxss.linux.subids import subordinate_owner
from lxss.service.launch import LaunchFds, LaunchRequest
from lxss.service.owner import Owner
from lxss.service.registry import Registry
from lxss.service.settings import Settings
from lxss.service.user_session import UserSession
from lxss.vm.backends import Backends

_OWNER_CACHE = 65536  # entries: more than a few users' distributions ever connect from


def _check_stream_fd(fd: int, parameter: str, writing: bool) -> None:
    """Refuse a descriptor that cannot be read from (an archive) or written to (an export's
    file, a build's progress), as any Varlink client may send one: a directory, one opened
    for the other direction only, or O_PATH (an answer now, not a worker's crash later)."""
    mode = os.fstat(fd).st_mode
    access = fcntl.fcntl(fd, fcntl.F_GETFL)
    unusable = os.O_RDONLY if writing else os.O_WRONLY
    if stat.S_ISDIR(mode):
        raise errors.InvalidArgument(parameter=parameter, reason="a directory, not a file")
    if access & os.O_ACCMODE == unusable or access & getattr(os, "O_PATH", 0):
        reason = "not open for writing" if writing else "not open for reading"
        raise errors.InvalidArgument(parameter=parameter, reason=reason)


class ServiceHandler:
    def __init__(self, registry: Registry, settings: Settings, backends: Backends) -> None:
        self.registry = registry
        self.settings = settings
        self.backends = backends
        self.sessions: dict[int, UserSession] = {}
        self._owners: dict[int, int] = {}  # peer uid -> owner, while /etc/subuid is unchanged
        self._owners_stamp: tuple[int, int, int] | None = None

    def session_for(self, uid: int) -> UserSession:
        """The one UserSession of *uid* (created on first use, kept for the service's life)."""
        session = self.sessions.get(uid)
        if session is None:
            session = UserSession(Owner.lookup(uid), self.registry, self.settings, self.backends)
            self.sessions[uid] = session
        return session

    def owner_of(self, uid: int) -> int:
        """The host user *uid* belongs to: the owner of the subordinate range holding it,
        else *uid* itself. A distribution's processes run under its owner's subordinate
        ids, and what they use (connections to the service) counts as the owner's."""
        try:
            st = os.stat(self.settings.subuid_file)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._owners_stamp:
            self._owners.clear()
            self._owners_stamp = stamp
        owner = self._owners.get(uid)
        if owner is None:
            owner = uid
            name = subordinate_owner(uid, self.settings.subuid_file) if uid else None
            if name is not None:
                with contextlib.suppress(KeyError, ValueError):
                    owner = int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
            if len(self._owners) >= _OWNER_CACHE:
                self._owners.clear()
            self._owners[uid] = owner
        return owner

    def _check_caller(self, uid: int) -> None:
        """Refuse a caller whose uid is someone's subordinate id.

        Such a uid is a non-root user inside somebody's distribution (reaching the socket
        through /mnt/host): serving it as a user of its own would give each subordinate id
        its own VM, limits and id range, recursively. The distribution's root is its owner,
        and is served as such.
        """
        if uid == 0:
            return
        owner = subordinate_owner(uid, self.settings.subuid_file)
        if owner is not None:
            raise errors.PermissionDenied(
                reason=f"uid {uid} is a subordinate id of {owner}: run lxss as that "
                "distribution's root, or on the host"
            )

    def session(self, call: Call) -> UserSession:
        self._check_caller(call.peer.uid)
        target = call.parameters.get("forUid")
        if target is None:
            return self.session_for(call.peer.uid)
        if call.peer.uid != 0:
            raise errors.PermissionDenied(reason="only root may act for another user")
        if not 0 <= target < 2**32 - 1:
            raise errors.InvalidArgument(parameter="forUid", reason="not a uid")
        return self.session_for(target)

    # Methods (named as in io.lxss.Service.varlink) -----------------------------

    async def GetVersion(self, call: Call) -> dict[str, Any]:
        return {"version": __version__, "kernel": platform.release()}

    async def RegisterDistribution(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        taken = call.take_fds("archive", "location", "progress")
        archive, location, progress = taken["archive"], taken["location"], taken["progress"]
        try:
            if archive is not None:
                _check_stream_fd(archive, "archive", writing=False)
            if progress is not None:
                _check_stream_fd(progress, "progress", writing=True)
            if call.parameters.get("inPlace"):
                if location is None or archive is not None or call.parameters.get("builtin"):
                    raise errors.InvalidArgument(
                        parameter="inPlace", reason="give a location, and no archive"
                    )
                distribution, warnings = await session.register_in_place(
                    call.parameters["name"], call.parameters.get("version"), location
                )
                return {"guid": distribution.guid, "name": distribution.name,
                        "warnings": warnings, "shortcut": False}  # fmt: skip
            distribution, result = await session.register(
                call.parameters["name"],
                call.parameters.get("version"),
                archive,
                call.parameters.get("builtin"),
                location,
                call.parameters.get("layers"),
                call.parameters.get("image"),
                first_run=bool(call.parameters.get("firstRun")),
                progress_fd=progress,
                name_from_image=bool(call.parameters.get("nameFromImage")),
            )
        finally:
            for fd in (archive, location, progress):
                if fd is not None:
                    os.close(fd)
        return {
            "guid": distribution.guid,
            "name": distribution.name,
            "warnings": result.warnings,
            "shortcut": result.shortcut,
            "shortcutIcon": result.shortcut_icon,
        }

    async def UnregisterDistribution(self, call: Call) -> dict[str, Any]:
        warnings = await self.session(call).unregister(call.parameters["distribution"])
        return {"warnings": warnings}

    async def MoveDistribution(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        location = call.take_fd("location")
        if location is None:
            raise errors.InvalidParameter(parameter="location")
        try:
            warnings = await session.move(call.parameters["distribution"], location)
        finally:
            os.close(location)
        return {"warnings": warnings}

    async def EnumerateDistributions(self, call: Call) -> Replies:
        session = self.session(call)
        user = self.registry.user(session.uid)
        rows = self.registry.distributions(session.uid)
        described = [session.describe(d, user.default_distribution) for d in rows]
        return paged(described, "distributions", {"defaultVersion": user.default_version})

    async def GetDefaultDistribution(self, call: Call) -> dict[str, Any]:
        distribution = self.session(call).resolve(None)
        return {"guid": distribution.guid, "name": distribution.name}

    async def SetDefaultDistribution(self, call: Call) -> dict[str, Any]:
        self.session(call).set_default(call.parameters["distribution"])
        return {}

    async def SetDefaultVersion(self, call: Call) -> dict[str, Any]:
        self.session(call).set_default_version(call.parameters["version"])
        return {}

    async def ExportDistribution(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        out = call.take_fd("file")
        if out is None:
            raise errors.InvalidParameter(parameter="file")
        try:
            _check_stream_fd(out, "file", writing=True)
            warnings = await session.export(
                call.parameters["distribution"], out, call.parameters["format"]
            )
        finally:
            os.close(out)
        return {"warnings": warnings}

    async def ConfigureDistribution(self, call: Call) -> dict[str, Any]:
        p = call.parameters
        await self.session(call).configure(p["distribution"], p.get("defaultUid"), p.get("flags"))
        return {}

    async def DebugShell(self, call: Call) -> dict[str, Any]:
        if call.peer.uid != 0:
            raise errors.PermissionDenied(reason="--debug-shell is for root only")
        session = self.session(call)
        fds = call.take_fds("stdin", "stdout", "stderr")
        try:
            stdin, stdout, stderr = fds["stdin"], fds["stdout"], fds["stderr"]
            if stdin is None or stdout is None or stderr is None:
                raise errors.InvalidParameter(parameter="stdin")
            term = call.parameters.get("term")
            code = await session.runtime.debug_shell((stdin, stdout, stderr), term)
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        return {"exitCode": code}

    async def CreateLxProcess(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        distribution = session.resolve(call.parameters.get("distribution"))
        session.ensure_unlocked(distribution)
        request = LaunchRequest.from_parameters(call.parameters)
        fds = LaunchFds(**call.take_fds("control", "console", "stdin", "stdout", "stderr"))
        warnings = await session.runtime.create_process(distribution, request, fds)
        return {"guid": distribution.guid, "name": distribution.name, "warnings": warnings}

    async def TerminateDistribution(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        distribution = session.find(call.parameters["distribution"])
        await session.runtime.terminate(distribution.guid, force=True)
        return {}

    async def Shutdown(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        await session.runtime.shutdown(force=call.parameters["force"])
        return {}

    async def GetStatus(self, call: Call) -> dict[str, Any]:
        session = self.session(call)
        user = self.registry.user(session.uid)
        default = (
            self.registry.get(user.default_distribution) if user.default_distribution else None
        )
        running = [
            d.name
            for d in self.registry.distributions(session.uid)
            if session.state_of(d) == "Running"
        ]
        return {
            "defaultDistribution": default.name if default else None,
            "defaultVersion": user.default_version,
            "vmRunning": session.runtime.vm_running(),
            "running": running,
            "backends": list(session.runtime.backends()),
            "network": session.runtime.network_status(),
        }
