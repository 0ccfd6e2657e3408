"""UserSession: everything the service does for one uid (WSL's LxssUserSessionImpl).

One object per uid for the service's lifetime. It owns the user's live state —
distributions locked by a long operation, the utility VM and the running
instances — while the registry holds what persists. Long operations (import,
export, unregister) lock their distribution (Installing, Exporting,
Uninstalling) so nothing else can start or change it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxss.api import errors
from lxss.archive.formats import EXPORT_FORMATS
from lxss.linux.subids import Mapping, ensure_mapping
from lxss.oci import layer_stream
from lxss.service import archives, registry
from lxss.service.registry import Distribution, Registry
from lxss.service.settings import Settings
from lxss.vm.cgroup import Cgroup, Layout

if TYPE_CHECKING:
    from lxss.service.runtime import Runtime

log = logging.getLogger(__name__)

MAX_WORKERS = 4
EXPORTING = "Exporting"
RUNNING = "Running"
STOPPED = "Stopped"


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    name: str
    home: str

    @classmethod
    def lookup(cls, uid: int) -> Owner:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, uid, str(uid), "/")
        return cls(uid, entry.pw_gid, entry.pw_name, entry.pw_dir)


class UserSession:
    def __init__(self, owner: Owner, registry: Registry, settings: Settings) -> None:
        self.owner = owner
        self.uid = owner.uid
        self.registry = registry
        self.settings = settings
        self.locked: dict[str, str] = {}
        self._mapping: Mapping | None = None
        self._workers = 0
        # Each worker may use 1 GiB: a few at a time per user keeps one user from taking
        # the machine's memory with parallel imports; the others wait their turn.
        self._worker_slots = asyncio.Semaphore(MAX_WORKERS)
        self._lock = asyncio.Lock()
        self.runtime: Runtime | None = None  # set by the service: the VM and instances

    def __repr__(self) -> str:
        return f"<UserSession uid={self.uid} locked={self.locked}>"

    # Helpers -------------------------------------------------------------------

    def mapping(self) -> Mapping:
        if self._mapping is None:
            self._mapping = ensure_mapping(
                self.owner.uid,
                self.owner.gid,
                self.owner.name,
                self.settings.subid_lock_path,
                self.settings.subuid_file,
                self.settings.subgid_file,
            )
        return self._mapping

    def jail(self) -> archives.Jail:
        """Identity and cgroup for one archive worker of this user."""
        self._workers += 1
        name = f"{self.settings.cgroup_name}/worker-{self.uid}-{self._workers}"
        return archives.Jail(self.mapping(), Cgroup(Layout.detect(), name), self._worker_slots)

    def find(self, name_or_guid: str) -> Distribution:
        distribution = self.registry.find(self.uid, name_or_guid)
        if distribution is None:
            raise errors.DistroNotFound(distribution=name_or_guid)
        return distribution

    def resolve(self, name_or_guid: str | None) -> Distribution:
        """A named distribution, or the default one when *name_or_guid* is None."""
        if name_or_guid is not None:
            return self.find(name_or_guid)
        guid = self.registry.user(self.uid).default_distribution
        distribution = self.registry.get(guid) if guid else None
        if distribution is None or distribution.state != registry.INSTALLED:
            raise errors.DefaultDistroNotFound()
        return distribution

    def state_of(self, distribution: Distribution) -> str:
        if distribution.guid in self.locked:
            return self.locked[distribution.guid]
        if distribution.state != registry.INSTALLED:
            return distribution.state
        if self.runtime is not None and self.runtime.is_running(distribution.guid):
            return RUNNING
        return STOPPED

    def ensure_unlocked(self, distribution: Distribution) -> None:
        state = self.locked.get(distribution.guid)
        if state is None and distribution.state != registry.INSTALLED:
            state = distribution.state
        if state is not None:
            raise errors.InvalidState(distribution=distribution.name, state=state)

    async def _stop_instance(self, distribution: Distribution) -> None:
        if self.runtime is not None:
            await self.runtime.terminate(distribution.guid, force=True)

    # Registration --------------------------------------------------------------

    def _prepare_location(self, guid: str, location_fd: int | None) -> tuple[str, bool]:
        """The base path for a new distribution and whether the service manages it."""
        if location_fd is None:
            return self._make_managed_base(guid), True
        st = os.fstat(location_fd)
        if not stat.S_ISDIR(st.st_mode):
            raise errors.InvalidArgument(parameter="location", reason="not a directory")
        base = os.readlink(f"/proc/self/fd/{location_fd}")
        if st.st_uid != self.uid:
            raise errors.PermissionDenied(reason=f"{base} is not a directory you own")
        in_use = self.registry.base_path_in_use(base)
        if in_use is not None:
            raise errors.InstallLocationInUse(path=base)
        return base, False

    def _make_managed_base(self, guid: str) -> str:
        """Create state_dir/<uid>/<guid>, the user's own, for a distribution without a location.

        The per-user directory belongs to root (0711): its owner may pass through it to
        their distributions but can neither list nor change it, so nothing can be swapped
        in between our mkdir and chown (which, besides, act through a directory fd and
        never follow a symlink).
        """
        storage = self.settings.storage_dir(self.uid)
        os.makedirs(self.settings.state_dir, 0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(storage, 0o711)
        storage_fd = os.open(storage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(storage_fd)
            if st.st_uid != 0 or stat.S_IMODE(st.st_mode) != 0o711:
                os.fchown(storage_fd, 0, 0)  # from before this layout: the user owned it
                os.fchmod(storage_fd, 0o711)
            os.mkdir(guid, 0o700, dir_fd=storage_fd)
            os.chown(guid, self.owner.uid, self.owner.gid, dir_fd=storage_fd, follow_symlinks=False)
        finally:
            os.close(storage_fd)
        return os.path.join(storage, guid)

    async def register(
        self,
        name: str,
        version: int | None,
        archive_fd: int | None,
        builtin: str | None,
        location_fd: int | None,
        layers: list[dict[str, Any]] | None = None,
        image: dict[str, Any] | None = None,
    ) -> tuple[Distribution, list[str]]:
        if not registry.valid_name(name):
            raise errors.InvalidDistributionName(name=name)
        if (archive_fd is None) == (builtin is None):
            raise errors.InvalidArgument(parameter="archive", reason="give an archive or a builtin")
        if layers is not None or image is not None:
            problem = layer_stream.check(layers, image)
            if problem is not None or archive_fd is None:
                raise errors.InvalidArgument(
                    parameter="layers", reason=problem or "layers come with an archive fd"
                )
        version = version or self.registry.user(self.uid).default_version
        self.check_version(version)
        async with self._lock:
            if self.registry.find(self.uid, name) is not None:
                raise errors.DistroNameAlreadyExists(name=name)
            guid = registry.new_guid()
            base, managed = self._prepare_location(guid, location_fd)
            record = registry.new_distribution(name, self.uid, base, managed, version, guid)
            try:
                self.registry.begin_install(record)
            except registry.NameTaken:
                if managed:
                    os.rmdir(base)
                raise errors.DistroNameAlreadyExists(name=name) from None
            self.locked[guid] = registry.INSTALLING
        try:
            jail = self.jail()
            if archive_fd is not None and layers is not None:
                result = await archives.unpack_layers(
                    jail, archive_fd, layers, image, base, location_fd
                )
            elif archive_fd is not None:
                result = await archives.unpack_archive(jail, archive_fd, base, location_fd)
            else:
                assert builtin is not None
                result = await archives.unpack_builtin(jail, builtin, base, location_fd)
            if not result.is_linux:
                raise errors.NotALinuxDistribution()
            if result.default_uid is not None:
                self.registry.configure(guid, result.default_uid, None)
            self.registry.finish_install(guid, result.os_id, result.os_version_id)
        except BaseException as e:
            await self._discard(record)
            if isinstance(e, archives.WorkerFailed):
                raise errors.ImportFailed(reason=str(e)) from None
            raise
        finally:
            self.locked.pop(guid, None)
        log.info("uid %d: registered %s (%s) at %s", self.uid, name, guid, base)
        installed = self.registry.get(guid)
        assert installed is not None
        return installed, result.warnings

    async def _discard(self, record: Distribution) -> None:
        """Undo a failed registration: its files, then its row. A failure to remove the
        files leaves the row Installing, so the next start of the service retries."""
        try:
            await self._remove_files(record)
        except Exception as e:
            log.error("uid %d: cannot clean up %s: %s", self.uid, record.base_path, e)
            return
        self.registry.remove(record.guid)

    async def _remove_files(self, distribution: Distribution) -> None:
        """Delete a distribution's tree (with the owner's rights, in the archive worker),
        then, if the service made it, its now empty base directory."""
        await archives.remove_tree(self.jail(), distribution.base_path)
        if distribution.managed_base:
            # In root's per-user directory: ours to remove (rmdir never follows a link).
            storage, name = os.path.split(distribution.base_path)
            try:
                storage_fd = os.open(storage, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                os.rmdir(name, dir_fd=storage_fd)
            except FileNotFoundError:
                pass
            finally:
                os.close(storage_fd)

    def check_version(self, version: int) -> None:
        if version not in (1, 2):
            raise errors.InvalidArgument(parameter="version", reason="must be 1 or 2")
        backends = self.runtime.backends() if self.runtime is not None else ("1",)
        if str(version) not in backends:
            raise errors.VersionNotSupported(
                version=version,
                reason="this lxss has no QEMU backend yet; use version 1",
            )

    async def unregister(self, name_or_guid: str) -> None:
        async with self._lock:
            distribution = self.find(name_or_guid)
            if distribution.guid in self.locked:
                raise errors.InvalidState(
                    distribution=distribution.name, state=self.locked[distribution.guid]
                )
            self.locked[distribution.guid] = registry.UNINSTALLING
        try:
            await self._stop_instance(distribution)
            self.registry.set_state(distribution.guid, registry.UNINSTALLING)
            try:
                await self._remove_files(distribution)
            except (archives.WorkerFailed, OSError) as e:
                self.registry.set_state(distribution.guid, registry.INSTALLED)
                raise errors.InternalError(reason=f"cannot remove its files: {e}") from None
            self.registry.remove(distribution.guid)
        finally:
            self.locked.pop(distribution.guid, None)
        log.info("uid %d: unregistered %s", self.uid, distribution.name)

    # Defaults and configuration ------------------------------------------------

    def set_default(self, name_or_guid: str) -> None:
        distribution = self.find(name_or_guid)
        self.ensure_unlocked(distribution)
        self.registry.set_default(self.uid, distribution.guid)

    def set_default_version(self, version: int) -> None:
        self.check_version(version)
        self.registry.set_default_version(self.uid, version)

    async def configure(
        self, name_or_guid: str, default_uid: int | None, flags: int | None
    ) -> None:
        distribution = self.find(name_or_guid)
        self.ensure_unlocked(distribution)
        if default_uid is not None and not 0 <= default_uid < 65536:
            raise errors.InvalidArgument(parameter="defaultUid", reason="must be 0..65535")
        self.registry.configure(distribution.guid, default_uid, flags)
        await self._stop_instance(distribution)

    # Export --------------------------------------------------------------------

    async def export(self, name_or_guid: str, out_fd: int, export_format: str) -> list[str]:
        if export_format not in EXPORT_FORMATS:
            raise errors.InvalidArgument(
                parameter="format", reason=f"must be one of {', '.join(EXPORT_FORMATS)}"
            )
        async with self._lock:
            distribution = self.find(name_or_guid)
            self.ensure_unlocked(distribution)
            self.locked[distribution.guid] = EXPORTING
        try:
            # As WSL does: the tree must not change while it is being written.
            await self._stop_instance(distribution)
            return await archives.pack_tree(
                self.jail(), distribution.base_path, out_fd, export_format
            )
        except archives.WorkerFailed as e:
            raise errors.ExportFailed(reason=str(e)) from None
        finally:
            self.locked.pop(distribution.guid, None)

    # Start-up recovery ---------------------------------------------------------

    async def recover(self, distribution: Distribution) -> None:
        """Finish what a crashed service left: an Installing or Uninstalling row and its files."""
        log.warning(
            "uid %d: removing %s left %s by an interrupted operation",
            self.uid,
            distribution.name,
            distribution.state,
        )
        await self._discard(distribution)

    def describe(self, distribution: Distribution) -> dict[str, Any]:
        default = self.registry.user(self.uid).default_distribution
        return {
            "guid": distribution.guid,
            "name": distribution.name,
            "state": self.state_of(distribution),
            "version": distribution.version,
            "isDefault": distribution.guid == default,
            "basePath": distribution.base_path,
            "defaultUid": distribution.default_uid,
            "flags": distribution.flags,
            "osId": distribution.os_id,
            "osVersionId": distribution.os_version_id,
            "created": distribution.created,
        }
