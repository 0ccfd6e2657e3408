"""Container images as distributions: `--install docker://...` (and oci:, oci-archive:,
docker-archive:) and `--import` of an OCI or docker archive file.

The image is read here, as the user (their credentials, proxies and files); its
layers go to the service as one stream on a pipe, written by a thread while the
service's archive worker applies them (io.lxss.Service RegisterDistribution's
`layers`). The worker checks each layer's digest; a failure on either side
leaves nothing registered.
"""

from __future__ import annotations

import os
import threading

from lxss.api.client import Client
from lxss.cli import manage as commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lxss.oci.resolve import BlobSource, ResolvedImage

# After the service answered, the writer only has to notice the closed pipe.
WRITER_JOIN = 60.0


def open_source(text: str) -> tuple[BlobSource, ResolvedImage]:
    """The source an image reference names, and the image resolved for this machine."""
    from lxss.oci import local, reference, resolve

    ref = reference.parse(text)
    source: Any
    if ref.transport == "docker":
        from lxss.oci.registry import RegistrySource

        source = RegistrySource(ref)
    elif ref.transport == "oci":
        source = local.LayoutSource(ref.path)
    else:
        source = _archive_source(ref.transport, commands.open_archive(ref.path))
    try:
        if isinstance(source, local.DockerArchiveSource):
            return source, source.resolve(ref.ref)
        return source, resolve.resolve(source, ref.ref)
    except BaseException:
        source.close()
        raise


def _archive_source(kind: str, fd: int) -> Any:
    from lxss.oci import local

    try:
        if kind == "oci-archive":
            return local.OciArchiveSource(fd)
        return local.DockerArchiveSource(fd)
    except BaseException:
        os.close(fd)
        raise


def sniff_image_archive(path: str) -> str | None:
    """'oci-archive' or 'docker-archive' when the file at *path* is one, else None
    (a root file system's tar, compressed or not, or stdin)."""
    if path == "-":
        return None
    from lxss.oci import local

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # register() opens it again and says why it cannot
    try:
        return local.sniff(fd)
    finally:
        os.close(fd)


class _Writer:
    """Writes the image's layers, in order, into a pipe's write end (a thread)."""

    def __init__(self, source: BlobSource, image: ResolvedImage, sink: int) -> None:
        self.error: BaseException | None = None
        self._source, self._image, self._sink = source, image, sink
        self._thread = threading.Thread(target=self._run, name="image-layers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for layer in self._image.layers:
                self._source.copy(layer, self._sink)
        except BrokenPipeError:
            pass  # the service stopped reading: its answer says why
        except BaseException as e:
            self.error = e
        finally:
            os.close(self._sink)

    def join(self) -> None:
        self._thread.join(WRITER_JOIN)


def register_image(
    client: Client,
    text: str,
    name: str,
    version: int | None,
    location: str | None,
    for_uid: int | None,
    source_and_image: tuple[BlobSource, ResolvedImage] | None = None,
) -> dict[str, Any]:
    """Register the image *text* names as distribution *name*."""
    from lxss.oci import layer_stream

    source, image = source_and_image or open_source(text)
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        writer = _Writer(source, image, write_end)
        try:
            return commands.register(
                client,
                name,
                version,
                location,
                stream_fd=read_end,
                extra={
                    "layers": [layer_stream.layer_value(d.digest, d.size) for d in image.layers],
                    "image": layer_stream.image_value(image.config),
                },
                for_uid=for_uid,
            )
        except BaseException:
            os.close(read_end)  # unblocks the writer if the service stopped early
            read_end = -1
            writer.join()
            if writer.error is not None:
                raise writer.error from None  # the cause; the service only saw the stream end
            raise
        finally:
            if read_end >= 0:
                os.close(read_end)
            writer.join()
    finally:
        source.close()


def import_archive(
    client: Client,
    kind: str,
    path: str,
    name: str,
    version: int | None,
    location: str,
    for_uid: int | None,
) -> dict[str, Any]:
    """--import of an OCI or docker archive file (told apart by content)."""
    source = _archive_source(kind, commands.open_archive(path))
    try:
        from lxss.oci import local, resolve

        image = (
            source.resolve(None)
            if isinstance(source, local.DockerArchiveSource)
            else (resolve.resolve(source, None))
        )
    except BaseException:
        source.close()
        raise
    return register_image(
        client, f"{kind}:{path}", name, version, location, for_uid, (source, image)
    )
