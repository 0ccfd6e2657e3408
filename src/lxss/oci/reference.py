"""Image references, as skopeo spells them: `TRANSPORT:DETAILS`.

    docker://[REGISTRY/]REPOSITORY[:TAG][@DIGEST]   a registry (HTTP API v2)
    oci:DIR[:REF]                                    an OCI image layout directory
    oci-archive:FILE[:REF]                           the same, as a tar file
    docker-archive:FILE[:REF]                        `docker save` / `podman save` output

Docker's short names are normalised as docker does: `debian` is
docker.io/library/debian:latest, and a first component with a dot or a colon,
or `localhost`, names a registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from lxss.errors import LxssError

DOCKER_HUB: Final = "docker.io"
# docker.io is the name users write; the registry API lives at this host.
DOCKER_HUB_API: Final = "registry-1.docker.io"

TRANSPORTS: Final = ("docker", "oci", "oci-archive", "docker-archive")
# skopeo's other transports, named so the error can say why they are not taken.
_UNSUPPORTED: Final = {
    "containers-storage": "it is podman's local store; export with podman save first",
    "docker-daemon": "it needs the docker daemon; export with docker save first",
    "dir": "use an OCI layout instead (skopeo copy ... oci:DIR)",
    "sif": "Singularity images are not container layer images",
}

_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST: Final = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_HOST: Final = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
MAX_REFERENCE: Final = 4096


class ReferenceError(LxssError):
    """An image reference that cannot be used; the message says why."""


@dataclass(frozen=True)
class ImageReference:
    """Where an image comes from. `registry`, `repository`, `tag` and `digest` are set
    for docker://; `path` and `ref` (a tag, a name:tag, or None) for the others."""

    transport: str
    registry: str = ""
    repository: str = ""
    tag: str | None = None
    digest: str | None = None
    path: str = ""
    ref: str | None = None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        if self.transport != "docker":
            return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")
        text = f"docker://{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_image_reference(text: str) -> bool:
    """Whether *text* names a transport (so it is an image, not a catalog name)."""
    transport = text.split(":", 1)[0]
    return ":" in text and (transport in TRANSPORTS or transport in _UNSUPPORTED)


def parse(text: str) -> ImageReference:
    """The reference *text* names; ReferenceError says what is wrong with it."""
    if len(text) > MAX_REFERENCE:
        raise ReferenceError("the image reference is too long")
    transport, _, rest = text.partition(":")
    if transport in _UNSUPPORTED:
        raise ReferenceError(
            f"the {transport}: transport is not supported: {_UNSUPPORTED[transport]}"
        )
    if transport == "docker":
        if not rest.startswith("//"):
            raise ReferenceError(f"'{text}': write docker://NAME (two slashes)")
        return parse_docker(rest[2:])
    if transport in ("oci", "oci-archive", "docker-archive"):
        path, ref = _split_path_ref(rest)
        if not path:
            raise ReferenceError(
                f"'{text}' names no {'directory' if transport == 'oci' else 'file'}"
            )
        return ImageReference(transport, path=path, ref=ref)
    raise ReferenceError(
        f"unknown image transport '{transport}': use one of "
        + ", ".join(f"{t}:" for t in TRANSPORTS)
    )


def _split_path_ref(rest: str) -> tuple[str, str | None]:
    """PATH[:REF], split at the first colon as skopeo does (a path cannot hold one);
    a docker archive's REF is itself NAME:TAG."""
    path, _, ref = rest.partition(":")
    return path, ref or None


def parse_docker(name: str) -> ImageReference:
    """`[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`, normalised as docker does."""
    digest = None
    if "@" in name:
        name, digest = name.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise ReferenceError(f"'{digest}' is not a digest (sha256: and 64 hex digits)")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ReferenceError(f"'{tag}' is not a valid tag")
    registry = DOCKER_HUB
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            raise ReferenceError(f"'{first}' is not a registry host name")
        registry, name = first, remainder
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    if not name or not all(_COMPONENT.fullmatch(part) for part in name.split("/")):
        raise ReferenceError(
            f"'{name}' is not a repository name (lower-case letters, digits, '.', '_', '-')"
        )
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference("docker", registry=registry, repository=name, tag=tag, digest=digest)


def is_loopback_registry(registry: str) -> bool:
    """Whether plain HTTP is used for *registry*: loopback hosts only, as podman's
    registries.conf treats localhost (nothing else leaves TLS)."""
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost" or host == "::1":
        return True
    parts = host.split(".")
    return (
        len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)
    )
