"""Pulling from a registry through its HTTP API v2 (the OCI distribution spec), as
the user, with the user's proxies and stored credentials.

A 401 answer's WWW-Authenticate challenge says how to authenticate: `Bearer`
(fetch a token from the named realm, anonymously or with the user's credentials)
or `Basic`. Plain HTTP is used only for loopback registries (127.0.0.0/8,
localhost, ::1), as podman's registries.conf does for localhost; everything else
is HTTPS. Layer blobs pass through a per-user cache, ~/.cache/lxss/blobs (they
are content-addressed: a blob is kept only once its digest was checked).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Final

from lxss.oci import auth
from lxss.oci import manifest as m
from lxss.oci.manifest import Descriptor, ManifestError
from lxss.oci.reference import ImageReference, is_loopback_registry
from lxss.oci.resolve import Advance

TIMEOUT: Final = 60.0  # per network operation (connect, each read)
CHUNK: Final = 1 << 20
MAX_TOKEN_REPLY: Final = 1 << 20


class RegistryError(ManifestError):
    """The registry refused or could not be reached; the message says which and why."""


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lxss", "blobs")


class RegistrySource:
    def __init__(self, reference: ImageReference, cache: str | None = None) -> None:
        self.reference = reference
        self._host = reference.api_host
        scheme = "http" if is_loopback_registry(reference.registry) else "https"
        self._base = f"{scheme}://{self._host}/v2/{reference.repository}"
        handlers: list[urllib.request.BaseHandler] = []
        if scheme == "http":
            handlers.append(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy
        self._opener = urllib.request.build_opener(*handlers)
        self._authorization: str | None = None
        self._credentials = auth.credentials(reference.registry)
        self._cache = cache if cache is not None else cache_dir()

    # HTTP -------------------------------------------------------------------------

    def _open(self, url: str, accept: str = "") -> IO[bytes]:
        for attempt in range(2):
            request = urllib.request.Request(url)
            if accept:
                request.add_header("Accept", accept)
            if self._authorization:
                # Unredirected: a blob redirect to a CDN or bucket must not carry it.
                request.add_unredirected_header("Authorization", self._authorization)
            try:
                response: IO[bytes] = self._opener.open(request, timeout=TIMEOUT)
                return response
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "")
                e.close()
                if e.code == 401 and attempt == 0 and challenge:
                    self._authenticate(challenge)
                    continue
                raise self._http_error(e.code, url) from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise RegistryError(f"cannot reach the registry {self._host}: {reason}") from None
        raise RegistryError(f"the registry {self._host} refused the credentials")

    def _http_error(self, code: int, url: str) -> RegistryError:
        if code in (401, 403):
            hint = (
                "log in with podman login or docker login"
                if self._credentials is None
                else ("the stored credentials were refused")
            )
            return RegistryError(
                f"the registry {self._host} denied access to {self.reference} ({hint})"
            )
        if code == 404:
            what = "blob" if "/blobs/" in url else "image or tag"
            return RegistryError(f"{self.reference}: no such {what} (HTTP 404 from {self._host})")
        return RegistryError(f"the registry {self._host} answered HTTP {code} for {url}")

    def _authenticate(self, challenge: str) -> None:
        scheme, params = auth.parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                raise RegistryError(
                    f"the registry {self._host} needs a login: "
                    f"run podman login {self.reference.registry}"
                )
            self._authorization = auth.basic_header(*self._credentials)
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(
                f"the registry {self._host} asks for unsupported authentication '{scheme}'"
            )
        realm = params["realm"]
        if not realm.startswith(("https://", "http://")):
            raise RegistryError(f"the registry's token realm '{realm[:100]}' is not an HTTP URL")
        if realm.startswith("http://") and not is_loopback_registry(
            urllib.parse.urlsplit(realm).netloc
        ):
            raise RegistryError("the registry's token realm is plain HTTP on a non-loopback host")
        query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
        query.setdefault("scope", f"repository:{self.reference.repository}:pull")
        request = urllib.request.Request(realm + "?" + urllib.parse.urlencode(query))
        if self._credentials is not None:
            request.add_unredirected_header("Authorization", auth.basic_header(*self._credentials))
        try:
            with self._opener.open(request, timeout=TIMEOUT) as reply:
                body = reply.read(MAX_TOKEN_REPLY + 1)
        except urllib.error.HTTPError as e:
            e.close()
            raise RegistryError(
                f"the token server {realm} refused a token (HTTP {e.code})"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            raise RegistryError(
                f"cannot reach the token server {realm}: {getattr(e, 'reason', e)}"
            ) from None
        try:
            document = json.loads(body[:MAX_TOKEN_REPLY])
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server {realm} gave no token")
        self._authorization = f"Bearer {token}"

    # BlobSource ---------------------------------------------------------------------

    def root(self) -> tuple[bytes, str]:
        reference = self.reference.digest or self.reference.tag or "latest"
        with self._open(f"{self._base}/manifests/{reference}", m.ACCEPT) as response:
            data = response.read(m.MAX_DOCUMENT + 1)
            media_type = response.headers.get("Content-Type", "")  # type: ignore[attr-defined]
        if self.reference.digest:
            from lxss.oci.resolve import digest_of

            actual = digest_of(data, self.reference.digest.split(":", 1)[0])
            if actual != self.reference.digest:
                raise ManifestError(
                    "the manifest does not match its digest: "
                    f"expected {self.reference.digest}, got {actual}"
                )
        return data, media_type

    def read(self, descriptor: Descriptor) -> bytes:
        kind = (
            "manifests" if descriptor.media_type in (*m.INDEX_TYPES, *m.MANIFEST_TYPES) else "blobs"
        )
        with self._open(f"{self._base}/{kind}/{descriptor.digest}", m.ACCEPT) as response:
            return response.read(m.MAX_DOCUMENT + 1)

    def _cached(self, digest: str) -> str:
        return os.path.join(self._cache, *digest.split(":", 1))

    def copy(self, descriptor: Descriptor, sink: int, advance: Advance) -> None:
        """From the cache when the blob is there, else from the registry into the cache
        and *sink* at once (hashed while it streams; kept only when it matches)."""
        cached = self._cached(descriptor.digest)
        try:
            fd = os.open(cached, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                if os.fstat(fd).st_size == descriptor.size:
                    from lxss.oci.local import send_range

                    send_range(fd, 0, descriptor.size, sink, advance)
                    return
            finally:
                os.close(fd)
        self._download(descriptor, cached, sink, advance)

    def _download(self, descriptor: Descriptor, cached: str, sink: int, advance: Advance) -> None:
        os.makedirs(os.path.dirname(cached), 0o700, exist_ok=True)
        partial = f"{cached}.partial-{os.getpid()}"
        algorithm = descriptor.digest.split(":", 1)[0]
        digest = hashlib.new(algorithm)
        remaining = descriptor.size
        try:
            with (
                open(partial, "wb") as keep,
                self._open(f"{self._base}/blobs/{descriptor.digest}") as response,
            ):
                while remaining:
                    chunk = response.read(min(CHUNK, remaining))
                    if not chunk:
                        raise RegistryError(
                            f"the registry {self._host} ended blob {descriptor.digest} early"
                        )
                    remaining -= len(chunk)
                    digest.update(chunk)
                    keep.write(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(sink, view) :]
                    advance(len(chunk))
            actual = f"{algorithm}:{digest.hexdigest()}"
            if actual != descriptor.digest:
                raise ManifestError(
                    f"blob {descriptor.digest} from {self._host} does not match its digest: "
                    f"expected {descriptor.digest}, got {actual}"
                )
            os.rename(partial, cached)
        finally:
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        pass
