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
import stat
from dataclasses import replace
from typing import Any

from lxss.api import errors
from lxss.archive.formats import EXPORT_FORMATS
from lxss.linux.cgroup import Cgroup, Layout
from lxss.oci import layer_stream
from lxss.service import archives, builders, locations, quotas, registry
from lxss.service.locations import Identity, registered_identity
from lxss.service.locks import DistributionLocks
from lxss.service.owner import Owner, OwnerIds
from lxss.service.registry import Distribution, Registry
from lxss.service.runtime import Runtime
from lxss.service.settings import Settings
from lxss.vm.backends import Backends

log = logging.getLogger(__name__)

MAX_WORKERS = 4
EXPORTING = "Exporting"
MOVING = "Moving"
RUNNING = "Running"
STOPPED = "Stopped"


class UserSession:
    def __init__(self, owner: Owner, registry: Registry, settings: Settings,
                 backends: Backends) -> None:  # fmt: skip
        self.owner = owner
        self.uid = owner.uid
        self.registry = registry
        self.settings = settings
        self.ids = OwnerIds(owner, settings)
        self.locks = DistributionLocks()
        self.runtime = Runtime(self.ids, registry, self.locks, settings, backends)
        self._workers = 0
        # Each worker may use 1 GiB: a few at a time per user keeps one user from taking
        # the machine's memory with parallel imports; the others wait their turn.
        self._worker_slots = asyncio.Semaphore(MAX_WORKERS)
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<UserSession uid={self.uid} {self.locks!r}>"

    # Helpers -------------------------------------------------------------------

    def jail(self) -> archives.Jail:
        """Identity and cgroup for one archive worker of this user."""
        self._workers += 1
        name = f"{self.settings.cgroup_name}/worker-{self.uid}-{self._workers}"
        return archives.Jail(self.ids.mapping(), Cgroup(Layout.detect(), name), self._worker_slots)

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
        held = self.locks.state(distribution.guid)
        if held is not None:
            return held
        if distribution.state != registry.INSTALLED:
            return distribution.state
        if self.runtime.is_running(distribution.guid):
            return RUNNING
        return STOPPED

    def ensure_unlocked(self, distribution: Distribution) -> None:
        self.locks.ensure_unlocked(distribution)

    async def _stop_instance(self, distribution: Distribution) -> None:
        await self.runtime.terminate(distribution.guid, force=True)

    # Registration --------------------------------------------------------------

    def _prepare_location(self, guid: str, location_fd: int | None) -> tuple[str, Identity]:
        """Make the new distribution's base directory (lxss.service.locations says why it
        is always lxssd's own); its path and identity."""
        if location_fd is None:
            return self._make_managed_base(guid)
        st = os.fstat(location_fd)
        if not stat.S_ISDIR(st.st_mode):
            raise errors.InvalidArgument(parameter="location", reason="not a directory")
        if st.st_uid != self.uid:
            shown = os.readlink(f"/proc/self/fd/{location_fd}")
            raise errors.PermissionDenied(reason=f"{shown} is not a directory you own")
        try:
            location = locations.host_path_of(location_fd, self.uid)
        except locations.LocationError as e:
            raise errors.PermissionDenied(reason=str(e)) from None
        base = os.path.join(location, locations.LEVEL)
        for path in (location, base):  # a distribution registered before lxssd made LEVEL
            if self.registry.base_path_in_use(path) is not None:
                raise errors.InstallLocationInUse(path=location)
        try:
            identity = locations.make_base(
                location_fd, locations.LEVEL, self.owner.uid, self.owner.gid
            )
        except FileExistsError:
            raise errors.ImportFailed(
                reason=f"{location} already holds '{locations.LEVEL}' (another distribution's"
                " files?); it was left as it is: choose another location"
            ) from None
        except OSError as e:
            raise errors.ImportFailed(reason=f"cannot create {base}: {e.strerror}") from None
        return base, identity

    def _make_managed_base(self, guid: str) -> tuple[str, Identity]:
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
            identity = locations.make_base(storage_fd, guid, self.owner.uid, self.owner.gid)
        finally:
            os.close(storage_fd)
        return os.path.join(storage, guid), identity

    async def register(
        self,
        name: str,
        version: int | None,
        archive_fd: int | None,
        builtin: str | None,
        location_fd: int | None,
        layers: list[dict[str, Any]] | None = None,
        image: dict[str, Any] | None = None,
        first_run: bool = False,
        progress_fd: int | None = None,
        name_from_image: bool = False,
    ) -> tuple[Distribution, archives.UnpackResult]:
        """Install a distribution from an archive, a container image's layers or a built-in
        source. *first_run*: run its /etc/wsl-distribution.conf [oobe] command at the first
        interactive launch (an install does, an import does not, as in WSL). *progress_fd*:
        where a build says how it is getting on. *name_from_image*: registered under the
        image's [oobe] defaultName when it has one (*name* holds the place until then)."""
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
        build = None
        if builtin is not None and builders.is_buildable(builtin):
            try:
                build = builders.plan(builtin)
            except builders.BuildError as e:
                raise errors.BuildFailed(distribution=builtin, reason=str(e)) from None
        version = version or self.registry.user(self.uid).default_version
        self.check_version(version)
        async with self._lock:
            quotas.check_room_for_one_more(self.registry, self.uid, self.settings.machine_config)
            guid = registry.new_guid()
            held = name
            if self.registry.find(self.uid, name) is not None:
                if not name_from_image:
                    raise errors.DistroNameAlreadyExists(name=name)
                held = f"installing-{guid}"  # the image may name itself: know it first
            base, identity = self._prepare_location(guid, location_fd)
            record = registry.new_distribution(held, self.uid, base, True, version, guid, identity)
            try:
                self.registry.begin_install(record)
            except BaseException as e:
                self._remove_base(record)
                if isinstance(e, registry.NameTaken):
                    raise errors.DistroNameAlreadyExists(name=name) from None
                raise
            self.locks.hold(guid, registry.INSTALLING)
        try:
            jail = self.jail()
            if archive_fd is not None and layers is not None:
                result = await archives.unpack_layers(jail, archive_fd, layers, image, base)
            elif archive_fd is not None:
                result = await archives.unpack_archive(jail, archive_fd, base)
            elif build is not None:
                result = await self._unpack_build(jail, build, base, progress_fd)
            else:
                assert builtin is not None
                result = await archives.unpack_builtin(jail, builtin, base)
            if not result.is_linux:
                raise errors.NotALinuxDistribution()
            if name_from_image:
                name = result.default_name or name
            if name != held:
                self._rename_installing(guid, name)
            if result.default_uid is not None:
                self.registry.configure(guid, result.default_uid, None)
            if first_run:
                self.registry.set_first_run(guid, True)
            self.registry.finish_install(guid, result.os_id, result.os_version_id)
        except BaseException as e:
            await self._discard(record)
            if isinstance(e, archives.WorkerFailed):
                raise errors.ImportFailed(reason=str(e)) from None
            raise
        finally:
            self.locks.release(guid)
        log.info("uid %d: registered %s (%s) at %s", self.uid, name, guid, base)
        installed = self.registry.get(guid)
        assert installed is not None
        return installed, result

    def _rename_installing(self, guid: str, name: str) -> None:
        """Give the distribution being installed its final name (the one its image
        suggests, or the one asked for when that was taken while it held another)."""
        if not registry.valid_name(name):
            raise errors.InvalidDistributionName(name=name)
        try:
            self.registry.rename(guid, name)
        except registry.NameTaken:
            raise errors.DistroNameAlreadyExists(name=name) from None

    async def _unpack_build(
        self,
        jail: archives.Jail,
        build: builders.Build,
        base: str,
        progress_fd: int | None,
    ) -> archives.UnpackResult:
        """Build (or take from the cache) *build*'s tree, then import it like any archive."""
        progress = builders.Progress(progress_fd)
        try:
            path = await builders.cached_build(build, self.settings.build_cache, progress)
        except builders.BuildError as e:
            raise errors.BuildFailed(distribution=build.label, reason=str(e)) from None
        progress.say(f"unpacking {build.label}")
        with open(path, "rb") as tarball:
            return await archives.unpack_archive(jail, tarball.fileno(), base)

    async def _discard(self, record: Distribution) -> None:
        """Undo a failed registration: the files it made, then its row. The row goes
        whatever happens to the files: a failed import never leaves a registration."""
        left = await self._remove_files(record)
        if left is not None:
            log.error("uid %d: discarding %s: %s", self.uid, record.name, left)
        self.registry.remove(record.guid)

    def _remove_base(self, distribution: Distribution) -> None:
        """rmdir the (empty) base directory lxssd made; OSError if it cannot."""
        if distribution.managed_base:
            locations.remove_base(
                distribution.base_path, distribution.owner_uid, registered_identity(distribution)
            )

    async def _remove_files(self, distribution: Distribution) -> str | None:
        """Delete a distribution's tree (with the owner's rights, in the archive worker),
        then, if lxssd made it, its base directory. Never raises: what is left, and where,
        comes back as one sentence (None when nothing is)."""
        base = distribution.base_path
        try:
            left = await archives.remove_tree(self.jail(), base, registered_identity(distribution))
        except (archives.WorkerFailed, OSError) as e:
            return f"its files were not removed: {e}"
        if left.failures:
            return (
                f"{left.failures} of its files could not be removed and are left in"
                f" {os.path.join(base, locations.ROOTFS)} (first: {left.named[0]})"
            )
        try:
            self._remove_base(distribution)
        except OSError as e:
            return f"its directory {base} was left: {e.strerror}"
        return None

    def check_version(self, version: int) -> None:
        if version not in (1, 2):
            raise errors.InvalidArgument(parameter="version", reason="must be 1 or 2")
        self.runtime.manager(version)  # VersionNotSupported, with why, if none runs it

    async def unregister(self, name_or_guid: str) -> list[str]:
        """Remove a distribution: its registration always (as WSL does), its files as far
        as they can be; the warnings say what is left and where."""
        async with self._lock:
            distribution = self.find(name_or_guid)
            held = self.locks.state(distribution.guid)
            if held is not None:
                raise errors.InvalidState(distribution=distribution.name, state=held)
            self.locks.hold(distribution.guid, registry.UNINSTALLING)
        try:
            await self._stop_instance(distribution)
            self.registry.set_state(distribution.guid, registry.UNINSTALLING)
            left = await self._remove_files(distribution)
            self.registry.remove(distribution.guid)
        finally:
            self.locks.release(distribution.guid)
        log.info("uid %d: unregistered %s", self.uid, distribution.name)
        if left is None:
            return []
        log.warning("uid %d: unregistering %s: %s", self.uid, distribution.name, left)
        return [f"'{distribution.name}' is unregistered, but {left}"]

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
            self.locks.hold(distribution.guid, EXPORTING)
        try:
            # As WSL does: the tree must not change while it is being written.
            await self._stop_instance(distribution)
            locations.check_files(
                self.registry, distribution, lambda reason: errors.ExportFailed(reason=reason)
            )
            return await archives.pack_tree(
                self.jail(), distribution.base_path, out_fd, export_format
            )
        except archives.WorkerFailed as e:
            raise errors.ExportFailed(reason=str(e)) from None
        finally:
            self.locks.release(distribution.guid)

    # Moving and registering in place (WSL's --manage --move, --import-in-place) -------

    async def move(self, name_or_guid: str, location_fd: int) -> list[str]:
        """Move a distribution's tree into a new base directory lxssd makes in the location
        (a rename, or a copy across file systems); the old one is removed after."""
        async with self._lock:
            distribution = self.find(name_or_guid)
            self.ensure_unlocked(distribution)
            self.locks.hold(distribution.guid, MOVING)
        try:
            await self._stop_instance(distribution)
            locations.check_files(
                self.registry, distribution, lambda reason: errors.MoveFailed(reason=reason)
            )
            distribution = self.registry.get(distribution.guid) or distribution
            old = registered_identity(distribution)
            assert old is not None  # check_files recorded it
            base, identity = self._prepare_location(distribution.guid, location_fd)
            target = replace(distribution, base_path=base, managed_base=True,
                             base_dev=identity[0], base_ino=identity[1])  # fmt: skip
            try:
                jail = self.jail()
                moved = await archives.move_tree(
                    jail, (distribution.base_path, old), (base, identity)
                )
                if not moved:
                    jails = (jail, self.jail())
                    await archives.copy_tree(jails, distribution.base_path, base)
            except BaseException as e:
                left = await self._remove_files(target)
                if left is not None:
                    log.error("uid %d: undoing a move of %s: %s", self.uid, distribution.name, left)
                if isinstance(e, archives.WorkerFailed):
                    raise errors.MoveFailed(reason=str(e)) from None
                raise
            self.registry.set_base(distribution.guid, base, identity, managed=True)
            if moved:
                try:
                    self._remove_base(distribution)
                    left = None
                except OSError as e:
                    left = f"its old directory {distribution.base_path} was left: {e.strerror}"
            else:
                left = await self._remove_files(distribution)
        finally:
            self.locks.release(distribution.guid)
        log.info("uid %d: moved %s to %s", self.uid, distribution.name, base)
        return [] if left is None else [f"'{distribution.name}' is moved, but {left}"]

    async def register_in_place(
        self, name: str, version: int | None, location_fd: int
    ) -> tuple[Distribution, list[str]]:
        """Register the tree already at DIR/rootfs where it is, after an import's checks;
        nothing is created, so nothing is removed if it is refused."""
        if not registry.valid_name(name):
            raise errors.InvalidDistributionName(name=name)
        version = version or self.registry.user(self.uid).default_version
        self.check_version(version)
        async with self._lock:
            if self.registry.find(self.uid, name) is not None:
                raise errors.DistroNameAlreadyExists(name=name)
            quotas.check_room_for_one_more(self.registry, self.uid, self.settings.machine_config)
            base, identity = self._existing_base(location_fd)
        # Looked at before any row exists: an Installing row would have the next start
        # (after a crash) remove these files, which were there before.
        try:
            result = await archives.inspect_tree(self.jail(), base, identity)
        except archives.WorkerFailed as e:
            raise errors.ImportFailed(reason=str(e)) from None
        if not result.is_linux:
            raise errors.NotALinuxDistribution()
        guid = registry.new_guid()
        record = registry.new_distribution(name, self.uid, base, False, version, guid, identity)
        record = replace(record, os_id=result.os_id, os_version_id=result.os_version_id)
        async with self._lock:  # what may have changed while the tree was looked at
            quotas.check_room_for_one_more(self.registry, self.uid, self.settings.machine_config)
            for path in (base, os.path.join(base, locations.LEVEL)):
                if self.registry.base_path_in_use(path) is not None:
                    raise errors.InstallLocationInUse(path=base)
            try:
                self.registry.add_installed(record)
            except registry.NameTaken:
                raise errors.DistroNameAlreadyExists(name=name) from None
        log.info("uid %d: registered %s (%s) in place at %s", self.uid, name, guid, base)
        installed = self.registry.get(guid)
        assert installed is not None
        return installed, []

    def _existing_base(self, location_fd: int) -> tuple[str, Identity]:
        """DIR for --import-in-place: the owner's, private, named as the host sees it, in
        no other registration, holding a real rootfs/."""
        st = os.fstat(location_fd)
        if not stat.S_ISDIR(st.st_mode):
            raise errors.InvalidArgument(parameter="location", reason="not a directory")
        try:
            base = locations.host_path_of(location_fd, self.uid)
            if st.st_uid != self.uid:
                raise locations.LocationError(f"{base} is not a directory you own")
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise locations.LocationError(
                    f"other users can reach {base} (mode {stat.S_IMODE(st.st_mode):04o}), and"
                    f" with it the distribution's set-uid programs: chmod 700 {base} first"
                )
            identity = locations.check_base(base, self.uid, locations.identity_of(st))
        except locations.LocationError as e:
            raise errors.PermissionDenied(reason=str(e)) from None
        for path in (base, os.path.join(base, locations.LEVEL), os.path.dirname(base)):
            if self.registry.base_path_in_use(path) is not None:
                raise errors.InstallLocationInUse(path=base)
        return base, identity

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

    def describe(self, distribution: Distribution, default: str | None) -> dict[str, Any]:
        """*distribution* as EnumerateDistributions lists it; *default*: the user's default
        distribution's GUID (looked up once for a whole listing)."""
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
