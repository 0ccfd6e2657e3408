"""Image manifests, indexes (manifest lists) and configs: parsing and platform choice.

Everything here reads documents a registry or an archive supplied, so every size
and count is bounded and every field's type is checked before use.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Final

from lxss.errors import LxssError
from lxss.jsondoc import load_object
from lxss.oci.reference import DIGEST

MAX_DOCUMENT: Final = 4 << 20  # a manifest, index or config; real ones are a few KiB
MAX_LAYERS: Final = 128  # docker and overlayfs stop at 127 layers
MAX_LAYER_SIZE: Final = 1 << 40
MAX_ENV: Final = 256
MAX_ENV_BYTES: Final = 64 << 10  # the worker receives them on its command line

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1: Final = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES: Final = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES: Final = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT: Final = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

LAYER_TYPES: Final = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
)
FOREIGN_MARK: Final = ("foreign", "nondistributable")

# platform.machine() → (GOARCH, variant), the names image indexes use.
_ARCHES: Final = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


class ManifestError(LxssError):
    """An image document that cannot be used; the message says why."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: tuple[str, str, str] = ("", "", "")  # os, architecture, variant (in an index)
    ref_name: str = ""  # org.opencontainers.image.ref.name (in an OCI layout's index)


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """What of an image's config a distribution can use."""

    architecture: str
    os: str
    env: tuple[str, ...]
    user: str
    working_dir: str
    diff_ids: tuple[str, ...]


def machine_platform() -> tuple[str, str]:
    """This machine's (architecture, variant) in image-index terms."""
    machine = platform.machine()
    return _ARCHES.get(machine, (machine, ""))


def load(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from *data* (bounded), or ManifestError naming *what* it was."""
    if len(data) > MAX_DOCUMENT:
        raise ManifestError(f"the {what} is larger than {MAX_DOCUMENT >> 20} MiB")
    try:
        return load_object(data)
    except ValueError as e:
        raise ManifestError(f"the {what} {e}") from None


def _string(document: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = document.get(key, default)
    if not isinstance(value, str):
        raise ManifestError(f"the {what} has no valid '{key}'")
    return value


def descriptor(item: Any, what: str) -> Descriptor:
    if not isinstance(item, dict):
        raise ManifestError(f"a descriptor in the {what} is not an object")
    digest = _string(item, "digest", what)
    if not DIGEST.fullmatch(digest):
        raise ManifestError(f"the {what} names an invalid digest '{digest[:80]}'")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_LAYER_SIZE:
        raise ManifestError(f"the {what} gives {digest} an invalid size")
    found = item.get("platform")
    plat = ("", "", "")
    if isinstance(found, dict):
        plat = tuple(str(found.get(k, "")) for k in ("os", "architecture", "variant"))  # type: ignore[assignment]
    annotations = item.get("annotations")
    ref_name = ""
    if isinstance(annotations, dict):
        ref_name = str(annotations.get("org.opencontainers.image.ref.name", ""))
    return Descriptor(_string(item, "mediaType", what, ""), digest, size, plat, ref_name)


def kind(document: dict[str, Any], content_type: str = "") -> str:
    """'index' or 'manifest': the document's own mediaType, else the HTTP
    Content-Type, else its shape."""
    media_type = document.get("mediaType") or content_type.split(";")[0].strip()
    if media_type in INDEX_TYPES:
        return "index"
    if media_type in MANIFEST_TYPES:
        return "manifest"
    if media_type in DOCKER_SCHEMA1 or document.get("schemaVersion") == 1:
        raise ManifestError("the image uses docker's schema 1 manifest, which is not supported")
    if "manifests" in document:
        return "index"
    if "layers" in document:
        return "manifest"
    raise ManifestError(f"unknown manifest type '{str(media_type)[:80]}'")


def index_entries(document: dict[str, Any]) -> list[Descriptor]:
    entries = document.get("manifests")
    if not isinstance(entries, list) or len(entries) > 1024:
        raise ManifestError("the image index has no valid manifest list")
    return [descriptor(item, "image index") for item in entries]


def select_platform(
    entries: list[Descriptor], architecture: str, variant: str = "", os_name: str = "linux"
) -> Descriptor:
    """The index entry for *os_name*/*architecture*, preferring an exact *variant*
    (and an entry without one next, as containerd does)."""
    candidates = [
        e
        for e in entries
        if e.platform[0] == os_name
        and e.platform[1] == architecture
        and e.media_type not in ("application/vnd.in-toto+json",)
    ]
    for wanted in (variant, ""):
        for entry in candidates:
            if entry.platform[2] == wanted:
                return entry
    if candidates:
        return candidates[0]
    offered = sorted({"/".join(p for p in e.platform if p) for e in entries} - {""})
    want = f"{os_name}/{architecture}" + (f"/{variant}" if variant else "")
    raise ManifestError(
        f"the image has no {want} variant (it offers: {', '.join(offered) or 'none'})"
    )


def parse_manifest(document: dict[str, Any]) -> Manifest:
    config = descriptor(document.get("config"), "manifest's config")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("the manifest has no layer list")
    if len(layers) > MAX_LAYERS:
        raise ManifestError(
            f"the image has {len(layers)} layers; at most {MAX_LAYERS} are supported"
        )
    parsed = tuple(descriptor(item, "manifest") for item in layers)
    for layer in parsed:
        if any(mark in layer.media_type for mark in FOREIGN_MARK):
            raise ManifestError(
                f"layer {layer.digest} is a foreign (non-distributable) layer: not a Linux image"
            )
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise ManifestError(
                f"layer {layer.digest} has an unknown type '{layer.media_type[:80]}'"
            )
    return Manifest(config, parsed)


def parse_config(document: dict[str, Any]) -> ImageConfig:
    """The config blob's platform, Env, User, WorkingDir and rootfs.diff_ids."""
    section = document.get("config") or {}
    if not isinstance(section, dict):
        raise ManifestError("the image config's 'config' is not an object")
    env = section.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(v, str) and "=" in v for v in env):
        raise ManifestError("the image config's Env is not a list of NAME=value strings")
    if len(env) > MAX_ENV or sum(len(v) for v in env) > MAX_ENV_BYTES:
        raise ManifestError(f"the image config's Env is too large (at most {MAX_ENV} entries)")
    if any("\0" in v or "\n" in v for v in env):
        raise ManifestError("the image config's Env holds a NUL or newline")
    user = section.get("User") or ""
    working_dir = section.get("WorkingDir") or ""
    if not isinstance(user, str) or not isinstance(working_dir, str):
        raise ManifestError("the image config's User or WorkingDir is not a string")
    if len(user) > 256 or len(working_dir) > 4096 or "\0" in user + working_dir:
        raise ManifestError("the image config's User or WorkingDir is invalid")
    rootfs = document.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids", []) if isinstance(rootfs, dict) else []
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise ManifestError("the image config's rootfs.diff_ids are invalid")
    return ImageConfig(
        architecture=str(document.get("architecture", "")),
        os=str(document.get("os", "")),
        env=tuple(env),
        user=user,
        working_dir=working_dir,
        diff_ids=tuple(diff_ids),
    )


def check_platform(config: ImageConfig) -> None:
    """Refuse an image built for another OS or architecture (this machine cannot run it)."""
    architecture, _ = machine_platform()
    if config.os and config.os != "linux":
        raise ManifestError(f"the image is for {config.os}, not linux")
    if config.architecture and config.architecture != architecture:
        raise ManifestError(
            f"the image is for {config.architecture}; this machine runs {architecture}"
        )
