"""Images on disk: an OCI layout directory, an OCI archive (that layout as a tar)
and a docker archive (`docker save` / `podman save`).

Read with the user's rights in the client. Archives are indexed once (member
headers only: the file is seeked over, not read) and blobs are then sent to the
service straight from the archive file with sendfile(2), no copy through Python.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from typing import Final

from lxss.oci import manifest as m
from lxss.oci import resolve as r
from lxss.oci.manifest import Descriptor, ManifestError
from lxss.oci.reference import DIGEST
from lxss.oci.resolve import Advance

MAX_MEMBERS: Final = 1 << 16  # an image archive holds a few files per layer
# Top-level names of image archives: what tells one from a root file system's tar.
_IMAGE_NAMES: Final = frozenset(
    {"oci-layout", "index.json", "manifest.json", "repositories", "blobs"}
)


def send_range(source: int, offset: int, size: int, sink: int, advance: Advance) -> None:
    """Copy *size* bytes at *offset* of *source* to *sink* (a pipe), in the kernel,
    telling *advance* how far it got."""
    while size:
        sent = os.sendfile(sink, source, offset, min(size, 1 << 20))
        if sent == 0:
            raise ManifestError("the image file is shorter than its manifest says")
        offset += sent
        size -= sent
        advance(sent)


def _read_exact(fd: int, offset: int, size: int) -> bytes:
    if size > m.MAX_DOCUMENT:
        raise ManifestError(f"a document of the image is larger than {m.MAX_DOCUMENT >> 20} MiB")
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ManifestError("the image file is shorter than its manifest says")
    return data


def blob_path(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


class LayoutSource:
    """An OCI image layout directory (oci:DIR)."""

    def __init__(self, path: str) -> None:
        try:
            self._dir = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ManifestError(f"cannot open the OCI layout {path}: {e.strerror}") from None
        self._path = path

    def _open(self, name: str) -> int:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir)
        except OSError as e:
            raise ManifestError(f"{self._path}/{name}: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ManifestError(f"{self._path}/{name} is not a regular file")
        return fd

    def _whole(self, name: str) -> bytes:
        fd = self._open(name)
        try:
            return _read_exact(fd, 0, min(os.fstat(fd).st_size, m.MAX_DOCUMENT + 1))
        finally:
            os.close(fd)

    def root(self) -> tuple[bytes, str]:
        return self._whole("index.json"), m.OCI_INDEX

    def read(self, descriptor: Descriptor) -> bytes:
        return self._whole(blob_path(descriptor.digest))

    def copy(self, descriptor: Descriptor, sink: int, advance: Advance) -> None:
        fd = self._open(blob_path(descriptor.digest))
        try:
            send_range(fd, 0, descriptor.size, sink, advance)
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self._dir)


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


class TarIndex:
    """The regular members of an uncompressed tar file: name → where its data is."""

    def __init__(self, fd: int, what: str) -> None:
        self.fd = fd
        self.members: dict[str, _Member] = {}
        links: dict[str, str] = {}
        with open(os.dup(fd), "rb") as f:
            try:
                with tarfile.open(fileobj=f, mode="r:") as archive:
                    for count, info in enumerate(archive):
                        if count >= MAX_MEMBERS:
                            raise ManifestError(f"the {what} has more than {MAX_MEMBERS} members")
                        name = posixpath.normpath(info.name.lstrip("/"))
                        if info.isreg():
                            self.members[name] = _Member(info.offset_data, info.size)
                        elif info.issym():
                            links[name] = posixpath.join(posixpath.dirname(name), info.linkname)
                        elif info.islnk():
                            links[name] = info.linkname
            except tarfile.TarError as e:
                raise ManifestError(f"the {what} is not a valid tar file ({e})") from None
        for name, target in links.items():  # docker's layer.tar links, a few hops at most
            for _ in range(8):
                target = posixpath.normpath(target)
                if target in self.members:
                    self.members[name] = self.members[target]
                    break
                if target not in links:
                    break
                target = links[target]

    def get(self, name: str) -> _Member:
        member = self.members.get(posixpath.normpath(name.lstrip("/")))
        if member is None:
            raise ManifestError(f"the archive has no {name}")
        return member

    def read(self, name: str) -> bytes:
        member = self.get(name)
        return _read_exact(self.fd, member.offset, member.size)

    def copy(self, name: str, size: int, sink: int, advance: Advance) -> None:
        member = self.get(name)
        if member.size != size:
            raise ManifestError(f"{name} in the archive is {member.size} bytes, not {size}")
        send_range(self.fd, member.offset, size, sink, advance)


class OciArchiveSource:
    """An OCI layout in a tar file (oci-archive:FILE)."""

    def __init__(self, fd: int) -> None:
        self._index = TarIndex(fd, "OCI archive")

    def root(self) -> tuple[bytes, str]:
        return self._index.read("index.json"), m.OCI_INDEX

    def read(self, descriptor: Descriptor) -> bytes:
        return self._index.read(blob_path(descriptor.digest))

    def copy(self, descriptor: Descriptor, sink: int, advance: Advance) -> None:
        self._index.copy(blob_path(descriptor.digest), descriptor.size, sink, advance)

    def close(self) -> None:
        os.close(self._index.fd)


class DockerArchiveSource:
    """`docker save` / `podman save` output (docker-archive:FILE): manifest.json lists
    each image's config file, tags and layer files; a layer's digest is its file's
    name when that is a blob path or a hex digest, else the config's diff_id."""

    def __init__(self, fd: int) -> None:
        self._index = TarIndex(fd, "docker archive")
        self._paths: dict[str, str] = {}

    def copy(self, descriptor: Descriptor, sink: int, advance: Advance) -> None:
        self._index.copy(self._paths[descriptor.digest], descriptor.size, sink, advance)

    def close(self) -> None:
        os.close(self._index.fd)

    def resolve(self, ref: str | None) -> r.ResolvedImage:
        listing = json.loads(self._index.read("manifest.json") or b"null")
        if not isinstance(listing, list) or not listing or len(listing) > 1024:
            raise ManifestError("the docker archive's manifest.json lists no image")
        entry = self._choose(listing, ref)
        config_path = entry.get("Config")
        layer_paths = entry.get("Layers")
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise ManifestError("the docker archive's manifest.json entry lacks Config or Layers")
        if not 0 < len(layer_paths) <= m.MAX_LAYERS:
            raise ManifestError(f"the image has {len(layer_paths)} layers (1 to {m.MAX_LAYERS})")
        config = m.parse_config(m.load(self._index.read(config_path), "image config"))
        m.check_platform(config)
        layers = []
        for number, path in enumerate(layer_paths):
            if not isinstance(path, str):
                raise ManifestError("the docker archive's Layers are not file names")
            digest = _digest_from_name(path)
            if digest is None and number < len(config.diff_ids):
                digest = config.diff_ids[number]
            if digest is None:
                raise ManifestError(f"the docker archive gives no digest for layer {path}")
            self._paths[digest] = path
            layers.append(Descriptor("", digest, self._index.get(path).size))
        return r.ResolvedImage(config, tuple(layers))

    @staticmethod
    def _choose(listing: list[object], ref: str | None) -> dict[str, object]:
        entries = [e for e in listing if isinstance(e, dict)]
        if ref is None:
            if len(entries) != 1:
                raise ManifestError("the archive holds several images: name one with :NAME:TAG")
            return entries[0]
        for entry in entries:
            tags = entry.get("RepoTags") or []
            names = {str(t) for t in tags} if isinstance(tags, list) else set()
            short = {n.removeprefix("docker.io/").removeprefix("library/") for n in names}
            if ref in names or ref in short or ref.removeprefix("docker.io/") in short:
                return entry
        raise ManifestError(f"the archive has no image tagged '{ref}'")


def _digest_from_name(path: str) -> str | None:
    """sha256:<hex> for "blobs/sha256/<hex>" or "<hex>.tar" (podman), else None."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and DIGEST.fullmatch(f"{parts[1]}:{parts[2]}"):
        return f"{parts[1]}:{parts[2]}"
    stem = parts[-1].removesuffix(".tar")
    if len(parts) == 1 and DIGEST.fullmatch(f"sha256:{stem}"):
        return f"sha256:{stem}"
    return None


def sniff(fd: int) -> str | None:
    """'oci-archive' or 'docker-archive' when the regular file *fd* is one (an
    uncompressed tar whose top level holds only an image archive's names), else None.
    Reads member headers until the first name that an image archive has not."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    head = os.pread(fd, 512, 0)
    if len(head) < 512 or head[257:262] != b"ustar":
        return None
    seen: set[str] = set()
    with open(os.dup(fd), "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as archive:
                for count, info in enumerate(archive):
                    top = posixpath.normpath(info.name.lstrip("/")).split("/", 1)[0]
                    if top == ".":
                        continue
                    if count > MAX_MEMBERS or not _image_name(top):
                        return None
                    seen.add(top)
        except tarfile.TarError:
            return None
    if {"oci-layout", "index.json"} <= seen:
        return "oci-archive"
    if "manifest.json" in seen:
        return "docker-archive"
    return None


def _image_name(top: str) -> bool:
    """A top-level name an image archive has: its fixed files, or docker's per-layer
    <hex> directories and <hex>.json / <hex>.tar files."""
    if top in _IMAGE_NAMES:
        return True
    stem = top.removesuffix(".json").removesuffix(".tar")
    return len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)
