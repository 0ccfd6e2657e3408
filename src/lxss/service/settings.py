"""Where the service keeps things, overridable through the environment (tests run a
private service this way: LXSS_STATE_DIR, LXSS_RUNTIME_DIR, LXSS_CGROUP_NAME, and
LXSS_HOST_RESOLV_CONF / LXSS_BUILD_CACHE to keep its DNS source and builds apart), and how
long a client connection may sit idle (LXSS_CONNECTION_TIMEOUT, seconds; a message begun
must end within half of it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from lxss.config.resolvconf import HOST_RESOLV_CONF
from lxss.linux.subids import SUBGID_FILE, SUBUID_FILE


@dataclass(frozen=True)
class Settings:
    state_dir: str = "/var/lib/lxss"
    runtime_dir: str = "/run/lxss"
    cgroup_name: str = "lxss"
    machine_config: str = "/etc/lxss.conf"
    subuid_file: str = SUBUID_FILE
    subgid_file: str = SUBGID_FILE
    connection_timeout: float = 60.0
    host_resolv_conf: str = HOST_RESOLV_CONF  # where the host's resolvers are read
    build_cache: str = "/var/cache/lxss/builds"  # built root file systems, machine-wide

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        return cls(
            state_dir=env.get("LXSS_STATE_DIR") or cls.state_dir,
            runtime_dir=env.get("LXSS_RUNTIME_DIR") or cls.runtime_dir,
            cgroup_name=env.get("LXSS_CGROUP_NAME") or cls.cgroup_name,
            machine_config=env.get("LXSS_MACHINE_CONFIG") or cls.machine_config,
            connection_timeout=_positive(env.get("LXSS_CONNECTION_TIMEOUT"))
            or cls.connection_timeout,
            host_resolv_conf=env.get("LXSS_HOST_RESOLV_CONF") or cls.host_resolv_conf,
            build_cache=env.get("LXSS_BUILD_CACHE") or cls.build_cache,
        )

    @property
    def registry_path(self) -> str:
        return os.path.join(self.state_dir, "registry.sqlite")

    @property
    def socket_path(self) -> str:
        return os.path.join(self.runtime_dir, "lxssd.sock")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.runtime_dir, "lxssd.lock")

    @property
    def subid_lock_path(self) -> str:
        # One lock for the machine, whatever the runtime directory: every lxssd (tests run
        # several) allocates in the same /etc/subuid and /etc/subgid.
        return "/run/lxss-subid.lock"

    def storage_dir(self, uid: int) -> str:
        """Per-user storage for distributions installed without a location."""
        return os.path.join(self.state_dir, str(uid))


def _positive(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < 86400 else None
