"""What one user may hold: how many distributions (machine-wide, from /etc/lxss.conf).

A user who may register without end can grow the registry (and every listing of it) at
will: issue 11's attacker registered 1,000 distributions in 45 s. The limit is read from the
machine's file at each registration, so an administrator's change applies at once.
"""

from __future__ import annotations

import logging

from lxss.api import errors
from lxss.config.lxssconf import read_distribution_limit
from lxss.service.registry import Registry

log = logging.getLogger(__name__)


def check_room_for_one_more(registry: Registry, uid: int, machine_config: str) -> None:
    """Refuse (TooManyDistributions) a registration by *uid* past the machine's
    security.maxDistributionsPerUser; rows being installed count too. The caller holds the
    user's registration lock, so two registrations cannot both take the last place."""
    limit, warnings = read_distribution_limit(machine_config)
    for warning in warnings:
        log.warning("%s", warning)
    count = registry.count(uid)
    if count >= limit:
        raise errors.TooManyDistributions(count=count, limit=limit)
