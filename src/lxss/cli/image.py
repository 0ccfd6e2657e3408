"""Container images as distributions: `--install docker://...` (and oci:, oci-archive:,
docker-archive:) and `--import` of an OCI or docker archive file.

The image is read here, as the user (their credentials, proxies and files); its
layers go to the service as one stream on a pipe, written by a thread while the
service's archive worker applies them (io.lxss.Service RegisterDistribution's
`layers`). The worker checks each layer's digest; a failure on either side
leaves nothing registered.
"""

from __future__ import annotations

import contextlib
import os
import threading

from lxss.api.client import Client
from lxss.cli import manage as commands
from lxss.cli.errors import CommandError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from lxss.cli.install import InstallTarget
    from lxss.cli.progress import Progress
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
        # O_NONBLOCK: a FIFO's writer must not be met (and its data lost) by this look.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # register() opens it again and says why it cannot
    try:
        return local.sniff(fd)
    finally:
        os.close(fd)


class _Writer:
    """Writes the image's layers, in order, into a pipe's write end (a thread; the only
    one that advances *progress*)."""

    def __init__(
        self, source: BlobSource, image: ResolvedImage, sink: int, progress: Progress
    ) -> None:
        self.error: BaseException | None = None
        self._source, self._image, self._sink = source, image, sink
        self._progress = progress
        self._thread = threading.Thread(target=self._run, name="image-layers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for layer in self._image.layers:
                self._source.copy(layer, self._sink, self._progress.advance)
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
    quiet: bool = False,
    first_run: bool = False,
) -> dict[str, Any]:
    """Register the image *text* names as distribution *name*; *first_run*: an install,
    whose /etc/wsl-distribution.conf first-run setup runs at its first shell."""
    from lxss.cli.progress import Progress

    source, image = source_and_image or open_source(text)
    total = sum(layer.size for layer in image.layers)
    layers = f"{len(image.layers)} layer{'s' if len(image.layers) > 1 else ''}"
    try:
        with Progress(f"{text} ({layers})", total, quiet=quiet) as progress:
            return _register(client, source, image, name, version, location, for_uid, progress,
                             first_run)  # fmt: skip
    finally:
        source.close()


def _register(
    client: Client,
    source: BlobSource,
    image: ResolvedImage,
    name: str,
    version: int | None,
    location: str | None,
    for_uid: int | None,
    progress: Progress,
    first_run: bool,
) -> dict[str, Any]:
    from lxss.oci import layer_stream

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    writer = _Writer(source, image, write_end, progress)
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
            first_run=first_run,
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


@contextlib.contextmanager
def _said_as_command_errors() -> Iterator[None]:
    """What lxss.oci refuses (a bad reference, manifest, registry answer) is the user's
    to read as lxss's own one-line failure."""
    from lxss.oci.manifest import ManifestError
    from lxss.oci.reference import ReferenceError

    try:
        yield
    except (ManifestError, ReferenceError) as e:
        raise CommandError(str(e)) from None


def install_image(source: str, target: InstallTarget) -> str:
    """`lxss --install docker://...` (and oci:, oci-archive:, docker-archive:): an
    installer of lxss.cli.install's table. Returns the name registered. An install as a
    catalog's is: its first-run setup and desktop shortcut as its
    /etc/wsl-distribution.conf says, named after its repository (the catalog's name)."""
    from lxss.cli.service import connect
    from lxss.oci.reference import parse

    with _said_as_command_errors():
        ref = parse(source)
        name = target.name or default_image_name(ref.repository or ref.path)
        with connect() as client:
            reply = register_image(client, source, name, target.version, target.location,
                                   target.for_uid, quiet=target.quiet,
                                   first_run=True)  # fmt: skip
    return target.registered(reply)


def default_image_name(repository_or_path: str) -> str:
    """An image's distribution name without --name: the last part of its repository
    or file name ("library/debian" -> "debian", "/tmp/img.tar" -> "img")."""
    base = repository_or_path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tar", ".oci"):
        base = base.removesuffix(suffix)
    return base or "image"
