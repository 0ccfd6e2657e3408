"""From an image reference to the layers to apply: the walk shared by every source.

A source yields its root document (a registry's manifest for the tag, an OCI
layout's index.json) and any document or blob by descriptor. An index is
resolved to this machine's platform, then the manifest's config is read.
Documents are checked against their digests here; layer blobs are copied to the
service unread and the archive worker checks them (lxss.archive.layers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from lxss.oci import manifest as m
from lxss.oci.manifest import Descriptor, ImageConfig, ManifestError

Advance: TypeAlias = Callable[[int], None]  # told how many more bytes were copied


class BlobSource(Protocol):
    """Where an image's layers are copied from."""

    def copy(self, descriptor: Descriptor, sink: int, advance: Advance) -> None:
        """Write the blob to the fd *sink*: exactly its size in bytes."""

    def close(self) -> None: ...


class OciSource(BlobSource, Protocol):
    """A source of OCI documents (a registry, a layout): the walk below reads it."""

    def root(self) -> tuple[bytes, str]:
        """The top document and its media type ("" when unknown)."""

    def read(self, descriptor: Descriptor) -> bytes:
        """A small blob (a manifest or config), at most MAX_DOCUMENT bytes, unchecked."""


@dataclass(frozen=True)
class ResolvedImage:
    config: ImageConfig
    layers: tuple[Descriptor, ...]


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verified(data: bytes, descriptor: Descriptor, what: str) -> bytes:
    """*data* if it is the blob *descriptor* names; ManifestError otherwise."""
    actual = digest_of(data, descriptor.digest.split(":", 1)[0])
    if actual != descriptor.digest or len(data) != descriptor.size:
        raise ManifestError(
            f"the {what} does not match its digest: expected {descriptor.digest}, got {actual}"
        )
    return data


def document(source: OciSource, descriptor: Descriptor, what: str) -> dict[str, object]:
    if descriptor.size > m.MAX_DOCUMENT:
        raise ManifestError(f"the {what} is larger than {m.MAX_DOCUMENT >> 20} MiB")
    return m.load(verified(source.read(descriptor), descriptor, what), what)


def choose_entry(entries: list[Descriptor], ref: str | None) -> list[Descriptor]:
    """An OCI layout's index entries for *ref* (its ref.name annotation), or all when
    *ref* is None; ManifestError when *ref* names none of them."""
    if ref is None:
        return entries
    chosen = [e for e in entries if e.ref_name == ref]
    if not chosen:
        names = sorted({e.ref_name for e in entries if e.ref_name})
        raise ManifestError(
            f"the layout has no image '{ref}' (it has: {', '.join(names) or 'none'})"
        )
    return chosen


def pick(entries: list[Descriptor]) -> Descriptor:
    """The entry for this machine: by platform when entries carry one, else the only one."""
    if not entries:
        raise ManifestError("the image index is empty")
    if all(not e.platform[1] for e in entries):
        if len(entries) > 1:
            names = sorted({e.ref_name for e in entries if e.ref_name})
            raise ManifestError(
                "the layout holds several images: name one with :REF"
                + (f" ({', '.join(names)})" if names else "")
            )
        return entries[0]
    architecture, variant = m.machine_platform()
    return m.select_platform([e for e in entries if e.platform[1]], architecture, variant)


def resolve(source: OciSource, ref: str | None = None) -> ResolvedImage:
    """Walk from *source*'s root to a manifest for this machine, and read its config."""
    data, media_type = source.root()
    current = m.load(data, "image manifest")
    for depth in range(4):
        if m.kind(current, media_type) == "manifest":
            break
        entries = m.index_entries(current)
        chosen = pick(choose_entry(entries, ref) if depth == 0 else entries)
        media_type = chosen.media_type
        current = document(source, chosen, "image manifest")
    else:
        raise ManifestError("the image's indexes nest too deeply")
    parsed = m.parse_manifest(current)
    config = m.parse_config(document(source, parsed.config, "image config"))
    m.check_platform(config)
    if not parsed.layers:
        raise ManifestError("the image has no layers")
    return ResolvedImage(config, parsed.layers)
