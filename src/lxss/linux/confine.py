"""Starting a helper confined to the owner's user namespace and a cgroup, from the
service's event loop: the utility VM's boot process and the archive worker alike.

The order matters and is the same for both: the helper is put in its cgroup before it
unshares its cgroup namespace (which then has that cgroup for its root), and it is mapped
only once it has entered its user namespace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
from collections.abc import Callable

from lxss.aio import kill_and_reap, wait_readable
from lxss.linux.cgroup import Cgroup
from lxss.linux.subids import Mapping
from lxss.linux.userns import PendingHelper

# The service's own threads for short blocking work (cgroup kill and removal, scratch
# directories), apart from asyncio's default pool: nothing that can wait long (a worker,
# a pipe) runs here, so VM starts, stops and shutdown never queue behind a user's import.
_BLOCKING = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lxss-off-loop")


async def off_loop(operation: Callable[[], None]) -> None:
    """Run a short blocking operation in a thread: killing and removing a cgroup waits
    (for the kernel to reap) up to seconds, which the service's event loop must not."""
    await asyncio.get_running_loop().run_in_executor(_BLOCKING, operation)


async def start_in(
    pending: PendingHelper, group: Cgroup, mapping: Mapping, timeout: float
) -> subprocess.Popen[bytes]:
    """Put the helper *pending* (from `spawn_mapped`) in *group*, wait up to *timeout*
    for it to enter its user namespace, and map it. On any failure it is killed and
    reaped (by pidfd: no wait blocks the loop) before the error propagates."""
    try:
        group.add(pending.proc.pid)
        await wait_readable(pending.fileno(), timeout)
        return pending.map_ready(mapping)
    except BaseException:
        pending.close()
        await kill_and_reap(pending.proc)
        raise
