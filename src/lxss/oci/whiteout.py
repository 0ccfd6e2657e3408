"""Whiteouts: how a layer deletes what the layers below it hold (OCI image spec,
"Representing Changes"; the aufs names docker kept).

    DIR/.wh.NAME       NAME is removed from the layers below
    DIR/.wh..wh..opq   DIR is opaque: everything the layers below put in it is removed
    DIR/.wh..wh.*      other aufs bookkeeping (hard-link dirs): ignored

Entries of the same layer are never removed by its whiteouts, whatever their order.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = ".wh."
OPAQUE: Final = ".wh..wh..opq"
_META: Final = ".wh..wh."


def classify(path: str) -> tuple[str, str] | None:
    """For a member's relative *path* (as unpack.member_path gives it): None for an
    ordinary member, else (action, target) with action 'whiteout' (remove target),
    'opaque' (empty the directory target of lower entries) or 'ignore'."""
    directory, _, base = path.rpartition("/")
    if not base.startswith(PREFIX):
        return None
    if base == OPAQUE:
        return ("opaque", directory or ".")
    if base.startswith(_META):
        return ("ignore", path)
    name = base[len(PREFIX) :]
    if name in ("", ".", ".."):
        return ("ignore", path)
    return ("whiteout", f"{directory}/{name}" if directory else name)
