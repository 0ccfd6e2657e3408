"""Who a user session serves: the owner's account and the ids their distributions run as.

Given to the user session and to its runtime alike (plain values, and the id mapping made
on first use), so that neither has to ask the other.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass

from lxss.linux.subids import Mapping, NoFreeRange, ensure_mapping, user_ranges
from lxss.service.settings import Settings


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


class OwnerIds:
    """The owner's subordinate id mapping (allocated in /etc/subuid on first use)."""

    def __init__(self, owner: Owner, settings: Settings) -> None:
        self.owner = owner
        self.settings = settings
        self._mapping: Mapping | None = None

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

    def run_mapping(self, root_distributions_mapped: bool) -> Mapping:
        """The mapping the utility VM runs with: the stored one, except that root's
        distributions, when mapped, play their owner as the last id of root's range."""
        mapping = self.mapping()
        if self.owner.uid != 0 or not root_distributions_mapped:
            return mapping
        uid_range, gid_range = user_ranges(
            0, self.owner.name, self.settings.subuid_file, self.settings.subgid_file
        )
        if uid_range is None or gid_range is None:
            raise NoFreeRange("root has no subordinate range in /etc/subuid or /etc/subgid")
        return mapping.with_root_faces(uid_range, gid_range)
