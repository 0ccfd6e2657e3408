"""Which networking mode a VM gets, given what the user asked for and what its backend can do.

WSL's five names are all accepted in the configuration; a backend lists those it implements
(`networking_modes`) and any other falls back, with a warning the user sees at the start of
each distribution, rather than quietly meaning something else.
"""

from __future__ import annotations

from typing import Final

# What an unimplemented mode falls back to, in order: the nearest that the backend has.
# Bridged, VirtioProxy and Consomme all give the VM a network of its own behind the host.
FALLBACKS: Final = {
    "Bridged": ("Nat", "None"),
    "VirtioProxy": ("Nat", "None"),
    "Consomme": ("Nat", "None"),
    "Nat": ("None",),
    "Mirrored": ("Nat", "None"),
    "None": (),
}


def effective_mode(requested: str, supported: tuple[str, ...]) -> tuple[str, str | None]:
    """(the mode to use, a warning for the user or None)."""
    if requested in supported:
        return requested, None
    for fallback in FALLBACKS.get(requested, ("None",)):
        if fallback in supported:
            return fallback, (
                f"wsl2.networkingMode {requested} is not supported here, using {fallback}"
            )
    raise ValueError(f"no networking mode of {supported} can stand for {requested}")
