"""Installing a container image from a registry, against pulling and unpacking it
with the usual tools (skopeo copy + umoci unpack).

The image is the import figure's rootfs tarball as one gzip layer, in an OCI
layout the bench writes, pushed once (untimed) with skopeo into Debian's
docker-registry on a loopback port. Every sample starts from an empty cache and
a new directory, so both sides really pull every byte over HTTP.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..harness import Figure, Runner, unavailable
from ..lab import Lab
from ..proc import Unavailable, must, timed_ms
from .common import PLAIN_ENV, guarded, lxss_cmd
from .registry import Spec, figure, result

INSTALLED = "bench-oci"
REPOSITORY = "bench/image:1"


def _layout(tarball: Path, layout: Path) -> None:
    """An OCI layout holding the tarball as a single gzip layer, for this machine."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    raw = tarball.read_bytes()
    layer = put(gzip.compress(raw, 6, mtime=0))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = put(json.dumps({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }).encode())  # fmt: skip
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())  # fmt: skip
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "1"},
    }]}))  # fmt: skip
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@contextmanager
def _registry(work: Path) -> Iterator[str]:
    """docker-registry on a free loopback port; yields its host:port."""
    if shutil.which("docker-registry") is None or shutil.which("skopeo") is None:
        raise Unavailable("needs docker-registry and skopeo (Debian packages)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = work / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'registry-data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(work / "registry.log", "wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise Unavailable("docker-registry did not start") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


@figure(
    "oci-install",
    "Install a container image from a local registry",
    unit="ms",
    better="lower",
    what="`lxss --install docker://127.0.0.1:PORT/bench/image:1 --name bench-oci-N --location "
    "DIR/N --no-launch` (empty blob cache each sample) against `skopeo copy docker://… oci:DIR/N` "
    "followed by `umoci unpack` of it, the import figure's rootfs as one gzip layer.",
)
def oci_install(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    tarball, _tree, desc = lab.archive()
    work = lab.work / "oci"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    names: list[str] = []
    try:
        with _registry(work) as host:
            _layout(tarball, work / "layout")
            source = f"docker://{host}/{REPOSITORY}"
            push = ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]
            must([*push, f"oci:{work / 'layout'}:1", source], timeout=900)

            def lxss_row() -> Runner:
                lxss_cmd(lab, "--version")

                def measure() -> float:
                    n = len(names)
                    name = f"{INSTALLED}-{n}"
                    names.append(name)
                    lab.lxss.track(name)
                    env = {**PLAIN_ENV, "XDG_CACHE_HOME": str(work / f"cache-{n}")}
                    argv = lxss_cmd(lab, "--install", source, "--name", name, "--location",
                                    str(work / "lxss" / str(n)), "--no-launch")  # fmt: skip
                    return timed_ms(argv, timeout=1800, label="", env=env)

                return Runner("lxss", f"lxss --install {source} …", measure, subject=True)

            def peer_row() -> Runner:
                if shutil.which("umoci") is None:
                    raise Unavailable("needs umoci (Debian package)")
                count = [0]

                def measure() -> float:
                    target = work / "umoci" / str(count[0])
                    count[0] += 1
                    target.mkdir(parents=True)
                    script = (
                        f"skopeo --insecure-policy copy -q --src-tls-verify=false {source} "
                        f"oci:{target}/image:1 && umoci unpack --image {target}/image:1 "
                        f"{target}/bundle"
                    )
                    return timed_ms(["sh", "-c", script], timeout=1800, label="", env=PLAIN_ENV)

                return Runner("skopeo + umoci", "skopeo copy … oci:DIR/N && umoci unpack", measure)

            rows = [
                guarded("lxss", f"lxss --install {source}", lxss_row, subject=True),
                guarded("skopeo + umoci", "skopeo copy && umoci unpack", peer_row),
            ]
            return result(spec, rows, runs=s.archive_runs, warmup=1, notes=[f"image: {desc}"])
    except Unavailable as exc:
        row = unavailable("lxss", "lxss --install docker://…", str(exc), subject=True)
        return result(spec, [row], runs=0, warmup=0)
    finally:
        for name in names:
            lab.lxss.unregister(name)
        shutil.rmtree(work, ignore_errors=True)
