"""What a distribution learns from its host at start: time zone and DNS resolvers.

WSL's service hands init the Windows time zone and DNS settings in its configuration
message; lxss reads the host's /etc/localtime and resolv.conf (the file can be moved for
tests with LXSS_HOST_RESOLV_CONF) and sends the same in InitInitialize.
"""

from __future__ import annotations

import logging
import os

from lxss.config.resolvconf import (
    RESOLVED_UPSTREAMS,
    Resolvers,
    choose_resolvers,
    read_host_resolvers,
)

log = logging.getLogger(__name__)


def host_timezone() -> str:
    """The host's zone as an IANA name ("Europe/Paris"), from where /etc/localtime points."""
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return ""
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


def host_resolvers(
    resolv_conf: str, shares_host_network: bool, vm_resolvers: tuple[str, ...] | None = None
) -> Resolvers:
    """The resolvers a distribution should be given (see `choose_resolvers`): the VM's own
    when it has them (a NAT VM's DNS proxy on its gateway), with the host's search list."""
    host = read_host_resolvers(resolv_conf)
    if vm_resolvers is not None:
        return Resolvers(vm_resolvers, host.search)
    upstreams = None if shares_host_network else read_host_resolvers(RESOLVED_UPSTREAMS)
    chosen = choose_resolvers(host, upstreams, shares_host_network)
    if chosen.note:
        log.info("resolv.conf for a distribution: %s", chosen.note)
    return chosen
