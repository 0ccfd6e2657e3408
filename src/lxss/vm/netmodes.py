"""Which networking mode a VM gets, given what the user asked for and what its backend can do.

WSL's names are all accepted in the configuration; a backend lists those it implements
(`VmBackend.networking_modes`) and any other falls back, with a warning the user sees at the
start of each distribution, rather than quietly meaning something else.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Final

from lxss.protocol.messages import NetworkingMode

_NONE, _NAT = NetworkingMode.NONE, NetworkingMode.NAT

# What an unimplemented mode falls back to, in order: the nearest that the backend has.
# Bridged, VirtioProxy and Consomme all give the VM a network of its own behind the host.
FALLBACKS: Final = {
    NetworkingMode.BRIDGED: (_NAT, _NONE),
    NetworkingMode.VIRTIO_PROXY: (_NAT, _NONE),
    NetworkingMode.CONSOMME: (_NAT, _NONE),
    NetworkingMode.NAT: (_NONE,),
    NetworkingMode.MIRRORED: (_NAT, _NONE),
    NetworkingMode.NONE: (),
}


def effective_mode(
    requested: NetworkingMode, supported: Set[NetworkingMode]
) -> tuple[NetworkingMode, str | None]:
    """(the mode to use, a warning for the user or None)."""
    if requested in supported:
        return requested, None
    for fallback in FALLBACKS[requested]:
        if fallback in supported:
            return fallback, (
                f"wsl2.networkingMode {requested.spelling} is not supported here, "
                f"using {fallback.spelling}"
            )
    have = ", ".join(sorted(mode.spelling for mode in supported))
    raise ValueError(f"no networking mode of {have} can stand for {requested.spelling}")
