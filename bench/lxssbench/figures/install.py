"""Installing from a distribution catalog over HTTP, against curl, sha256sum and tar."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..harness import Figure, Runner
from ..lab import Lab
from ..proc import must, timed_ms
from .archive import _fresh
from .common import PLAIN_ENV, guarded, lxss_cmd
from .registry import Spec, figure, result

INSTALLED = "bench-catalog"
ENTRY = "BenchCatalog"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[str]:
    """A static HTTP server for `directory` on 127.0.0.1, in a thread of the bench."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@figure(
    "install-catalog",
    "Install from a catalog over HTTP",
    unit="ms",
    better="lower",
    what="`lxss --install BenchCatalog --name bench-catalog-N --location DIR/N --no-launch -q`: "
    "the catalog and its .wsl image (the import figure's tarball, gzipped) served over HTTP on "
    "127.0.0.1, downloaded, hashed and registered; against `curl -s URL | sha256sum` then "
    "`tar -xzf` of the same image into a new directory, in one run per sample.",
)
def install_catalog(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    tarball, _tree, desc = lab.archive()
    served = lab.work / "catalog-served"
    served.mkdir(exist_ok=True)
    image = served / "bench.wsl"
    if not image.exists():
        must(["sh", "-c", f"gzip -1 -c '{tarball}' > '{image}'"], timeout=900)
    dest, plain, cache = (lab.work / f"catalog-{n}" for n in ("lxss", "tar", "cache"))
    for directory in (dest, plain, cache):
        directory.mkdir(exist_ok=True)
    names: list[str] = []
    size = image.stat().st_size / 1e6
    with _serve(served) as base:
        url = f"{base}/bench.wsl"
        (served / "catalog.json").write_text(json.dumps({"ModernDistributions": {ENTRY: [{
            "Name": ENTRY, "Default": True,
            "Amd64Url": {"Url": url, "Sha256": _sha256(image)},
            "Arm64Url": {"Url": url, "Sha256": _sha256(image)},
        }]}}))  # fmt: skip
        config = lab.work / "catalog-lxss.conf"
        config.write_text(f"[general]\ndistributionListUrl = {base}/catalog.json\n")
        env = {**PLAIN_ENV, "LXSS_MACHINE_CONFIG": str(config), "XDG_CACHE_HOME": str(cache)}

        def lxss_row() -> Runner:
            lxss_cmd(lab, "--version")  # raises Unavailable when there is no lxss to run

            def measure() -> float:
                name = f"{INSTALLED}-{len(names)}"
                names.append(name)
                lab.lxss.track(name)
                argv = lxss_cmd(lab, "--install", ENTRY, "--name", name, "--location",
                                str(dest / str(len(names))), "--no-launch", "-q")  # fmt: skip
                return timed_ms(argv, timeout=900, label="", env=env)

            return Runner("lxss", f"lxss --install {ENTRY} --name {INSTALLED}-N ...", measure,
                          subject=True)  # fmt: skip

        def peer_measure() -> float:
            target = plain / str(len(list(plain.iterdir())))
            target.mkdir()
            script = f"curl -sf '{url}' | sha256sum >/dev/null && tar -C '{target}' -xzf '{image}'"
            return timed_ms(["sh", "-c", script], timeout=900, label="", env=PLAIN_ENV)

        rows = [
            guarded("lxss", f"lxss --install {ENTRY} ...", lxss_row, subject=True),
            Runner(
                "curl | sha256sum; tar -xz",
                "curl -s URL | sha256sum; tar -C DIR/N -xzf IMAGE",
                peer_measure,
            ),
        ]
        try:
            return result(spec, rows, runs=s.archive_runs, warmup=1,
                          notes=[f"image: {desc}, gzipped: {size:.0f} MB"])  # fmt: skip
        finally:
            for name in names:
                lab.lxss.unregister(name)
            for directory in (dest, plain, cache):
                _fresh(directory)
