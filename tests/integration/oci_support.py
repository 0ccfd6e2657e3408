"""Container images for the tests, built here from host tools, and a real registry.

`build_layout` writes an OCI image layout by hand (the format is small: blobs named
by digest, a manifest, a config, index.json), so the tests know exactly which
bytes every layer holds; skopeo then converts and pushes it as users would.
`Registry` runs Debian's docker-registry (the CNCF distribution registry) on a
loopback port with its own storage directory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import busybox_root

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tar_of_tree(root: Path) -> bytes:
    """*root* as an uncompressed tar (GNU tar, numeric owners, ./-relative names)."""
    return subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


def tar_of(entries: list[tuple[str, str, bytes]]) -> bytes:
    """A tar of (name, kind 'file'|'dir'|'symlink', data) entries, in that order (a
    symlink's data is its target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def compress(data: bytes, how: str) -> tuple[bytes, str]:
    """(blob, media type) of a layer tar compressed with *how* (gzip, zstd or tar)."""
    if how == "gzip":
        return gzip.compress(data, 6, mtime=0), LAYER + "+gzip"
    if how == "zstd":
        blob = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True)
        return blob.stdout, LAYER + "+zstd"
    return data, LAYER


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    layout: Path
    tag: str
    layers: list[str] = field(default_factory=list)  # digests, bottom first


def build_layout(
    layout: Path, layers: list[tuple[bytes, str]], config: dict[str, object], tag: str = "1"
) -> Image:
    """An OCI image layout at *layout* holding one image: *layers* are (tar, compression)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        name = digest(data)
        (blobs / name.split(":")[1]).write_bytes(data)
        return name

    descriptors, diff_ids = [], []
    for tar, how in layers:
        blob, media_type = compress(tar, how)
        descriptors.append({"mediaType": media_type, "digest": put(blob), "size": len(blob)})
        diff_ids.append(digest(tar))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config_blob = json.dumps({
        "architecture": arch, "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": put(config_blob), "size": len(config_blob)},
        "layers": descriptors,
    }).encode()  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": put(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return Image(layout, tag, [d["digest"] for d in descriptors])


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def make_multi_arch(image: Image, foreign: str = "s390x") -> None:
    """Turn *image*'s layout into a multi-platform one: its tag names an image index
    listing a *foreign* architecture's manifest first (a config saying so, and a layer
    that is not a tar: installing it would fail) and this machine's manifest second."""
    blobs = image.layout / "blobs" / "sha256"
    index = json.loads((image.layout / "index.json").read_text())
    native = index["manifests"][0]

    def put(data: bytes) -> dict[str, object]:
        name = digest(data)
        (blobs / name.split(":")[1]).write_bytes(data)
        return {"digest": name, "size": len(data)}

    config = put(json.dumps({"architecture": foreign, "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode())  # fmt: skip
    junk = put(b"not a layer of this machine")
    other = put(json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config},
        "layers": [{"mediaType": LAYER, **junk}],
    }).encode())  # fmt: skip
    arch = json.loads((blobs / json.loads((blobs / native["digest"].split(":")[1]).read_text())
                       ["config"]["digest"].split(":")[1]).read_text())["architecture"]  # fmt: skip
    nested = put(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, **other, "platform": {"os": "linux", "architecture": foreign}},
        {"mediaType": OCI_MANIFEST, "digest": native["digest"], "size": native["size"],
         "platform": {"os": "linux", "architecture": arch}},
    ]}).encode())  # fmt: skip
    annotations = {"org.opencontainers.image.ref.name": image.tag}
    index["manifests"] = [{"mediaType": OCI_INDEX, **nested, "annotations": annotations}]
    (image.layout / "index.json").write_text(json.dumps(index))


def whiteout_image(directory: Path, compressions: tuple[str, str] = ("gzip", "zstd")) -> Image:
    """A busybox image of two layers. The first holds /etc/gone, /etc/keep and
    /opt/stuff/{a,b}, and a user `app` (uid 1234); the second deletes /etc/gone with
    a whiteout, makes /opt/stuff opaque and adds /opt/stuff/new in it."""
    root = busybox_root(directory / "base")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n"
    )
    (root / "etc/os-release").write_text("ID=ocitest\nVERSION_ID=7\n")
    (root / "etc/gone").write_text("deleted by layer 2\n")
    (root / "etc/keep").write_text("kept\n")
    (root / "opt/stuff").mkdir(parents=True)
    (root / "opt/stuff/a").write_text("a\n")
    (root / "opt/stuff/b").write_text("b\n")
    (root / "home/app").mkdir(parents=True)
    os.chown(root / "home/app", 1234, 1234)
    second = tar_of([
        ("etc/.wh.gone", "file", b""),
        ("opt/stuff/new", "file", b"new\n"),
        ("opt/stuff/.wh..wh..opq", "file", b""),
    ])  # fmt: skip
    config = {"Env": ["PATH=/bin", "GREETING=hello from the image"], "User": "app",
              "WorkingDir": "/opt/stuff"}  # fmt: skip
    return build_layout(
        directory / "layout",
        [(tar_of_tree(root), compressions[0]), (second, compressions[1])],
        config,
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A token server for the registry's token authentication (the docker/distribution
    scheme): GET /token with the user's basic credentials answers a JWT signed with a
    key whose self-signed certificate the registry trusts. Anything else gets a 401."""

    ISSUER = "lxss-test-issuer"
    SERVICE = "lxss-test-registry"

    def __init__(self, directory: Path, user: str, password: str) -> None:
        self.key, self.cert = directory / "token.key", directory / "token.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=lxss-test-token"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True, timeout=60,
        ).stdout  # fmt: skip
        self._x5c = base64.b64encode(der).decode()
        self._expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if self.headers.get("Authorization") != server._expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self._x5c]}
        claims = {"iss": self.ISSUER, "sub": "tester", "aud": self.SERVICE, "exp": now + 600,
                  "nbf": now - 60, "iat": now, "jti": os.urandom(8).hex(),
                  "access": access}  # fmt: skip
        signed = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signed.encode(), check=True, capture_output=True, timeout=60,
        ).stdout  # fmt: skip
        return signed + "." + _b64url(signature)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=30)


@dataclass
class Registry:
    """A docker-registry on 127.0.0.1:port, storing under *storage*; with *tokens*, it
    takes only tokens that server signed."""

    storage: Path
    tokens: TokenServer | None = None
    htpasswd: Path | None = None  # basic authentication against this file instead
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        config = self.storage / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            + (
                f"auth:\n  token:\n    realm: {self.tokens.realm}\n"
                f"    service: {self.tokens.SERVICE}\n    issuer: {self.tokens.ISSUER}\n"
                f"    rootcertbundle: {self.tokens.cert}\n"
                if self.tokens
                else ""
            )
            + (
                f"auth:\n  htpasswd:\n    realm: lxss-test\n    path: {self.htpasswd}\n"
                if self.htpasswd
                else ""
            )
        )
        log = open(self.storage / "registry.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code == 401 and (self.tokens or self.htpasswd):  # up, asking for a login
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return (self.storage / "registry.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def manifest(self, repository: str, tag: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}",
            headers={
                "Accept": f"{OCI_MANIFEST}, {OCI_INDEX}, "
                "application/vnd.docker.distribution.manifest.v2+json"
            },
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            document: dict[str, Any] = json.loads(reply.read())
        return document

    def push(self, image: Image, repository: str, *extra: str) -> str:
        """skopeo copy the layout's image to the registry; returns the docker:// name."""
        name = f"docker://{self.host}/{repository}"
        skopeo(*extra, "--dest-tls-verify=false", f"oci:{image.layout}:{image.tag}", name)
        return name


def htpasswd_file(path: Path, user: str, password: str) -> Path:
    """An htpasswd file (bcrypt, which the registry requires) for one user."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        path.write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    return path


def skopeo(*args: str) -> None:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "-q", *args],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def podman(storage: Path, *args: str) -> str:
    """Run podman on a store of the test's own (*storage*; vfs, so it mounts nothing) and
    return its stdout."""
    result = subprocess.run(
        ["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
         "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs",
         *args],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


@contextmanager
def running_registry(
    storage: Path, tokens: TokenServer | None = None, htpasswd: Path | None = None
) -> Iterator[Registry]:
    registry = Registry(storage, tokens, htpasswd)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(storage / "data", ignore_errors=True)
