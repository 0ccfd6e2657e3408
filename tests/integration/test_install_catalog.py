"""`lxss --list --online` and `lxss --install NAME` from a WSL-format catalog served over
real HTTP on 127.0.0.1, downloaded by the real lxss and registered by the real lxssd: the
append list, the Default, hash mismatches, a connection dropped halfway and the resumed
download (Range), the progress lines, --from-file, and a proxy from the environment.

The client runs as root with a cache of the test's own (XDG_CACHE_HOME): the session's test
users are shared with other test runs on the machine, whose fixtures re-create them."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Service, busybox_root
from mgmt import FAILURE, assert_fails, names, registry_rows, rootfs_of, shared_dir

NAME = "CatBox"  # the catalog's entry for the test image
BLOB = 12 << 20  # incompressible bytes in the image, so the download has tenths to report
PROGRESS = re.compile(
    r"Downloading CatBox for tests: (\d+)% \(\d+\.\d MiB of 13\.0 MiB"
    r"(, \d+\.\d [KMG]iB/s(, \d+:\d\d left)?)?\)$"
)


@dataclass
class Served:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path: bytes, then hang up (once)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with served.lock:
                served.requests.append((self.path, dict(self.headers.items())))
                body = served.files.get(self.path)
                drop = served.drop_after.pop(self.path, None)
            if body is None:
                self.send_error(404)
                return
            start = 0
            byte_range = self.headers.get("Range", "")
            if byte_range.startswith("bytes=") and byte_range.endswith("-"):
                start = int(byte_range[6:-1])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            try:
                if drop is not None:
                    self.wfile.write(body[start:drop])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (a full cache): its business

    return Handler


class Proxy(http.server.BaseHTTPRequestHandler):
    """A forwarding HTTP proxy: GET http://host/path, fetched without a proxy."""

    seen: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        Proxy.seen.append(self.path)
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(self.path, timeout=30) as upstream:
            body = upstream.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
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


def _image(work: Path, marker: str) -> bytes:
    root = busybox_root(work / f"root-{marker}")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/marker").write_text(marker + "\n")
    (root / "var").mkdir()
    (root / "var/blob").write_bytes(os.urandom(BLOB))
    image = work / f"{marker}.wsl"
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-czf", str(image), "."],
                   check=True)  # fmt: skip
    shutil.rmtree(root)
    return image.read_bytes()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("catalog-images")
    not_linux = work / "empty"
    not_linux.mkdir()
    (not_linux / "README").write_text("no /etc, no /bin/sh\n")
    subprocess.run(["tar", "-C", str(not_linux), "-czf", str(work / "x.wsl"), "."], check=True)
    return {"main": _image(work, "main"), "append": _image(work, "append"),
            "not-linux": (work / "x.wsl").read_bytes()}  # fmt: skip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(base: str, name: str, path: str, digest: str, default: bool = True,
          friendly: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"Name": name, "FriendlyName": friendly or f"{name} for tests", "Default": default,
            "Amd64Url": {"Url": base + path, "Sha256": digest},
            "Arm64Url": {"Url": base + path, "Sha256": digest}}  # fmt: skip


@dataclass
class Env:
    """One test's catalog world: the server, the client's config and the user's cache."""

    service: Service
    base: str
    served: Served
    config: Path
    cache: Path

    def lxss(self, *args: str, **kwargs: Any) -> Any:
        env = {"LXSS_MACHINE_CONFIG": str(self.config), "XDG_CACHE_HOME": str(self.cache)}
        env.update(kwargs.pop("env", {}))
        return self.service.lxss(*args, env=env, timeout=300, **kwargs)

    def set_catalogs(self, main: dict[str, Any], append: dict[str, Any] | None = None) -> None:
        self.served.files["/catalog.json"] = json.dumps(main).encode()
        text = f"[general]\ndistributionListUrl = {self.base}/catalog.json\n"
        if append is not None:
            self.served.files["/append.json"] = json.dumps(append).encode()
            text += f"distributionListUrlAppend = {self.base}/append.json\n"
        self.config.write_text(text)

    def ranges(self, path: str) -> list[str | None]:
        return [headers.get("Range") for seen, headers in self.served.requests if seen == path]

    def tree_count(self) -> int:
        directory = self.service.state_dir / "0"
        return len(list(directory.iterdir())) if directory.exists() else 0


@pytest.fixture
def world(service: Service, images: dict[str, bytes]) -> Iterator[Env]:
    served = Served()
    served.files = {"/main.wsl": images["main"], "/append.wsl": images["append"],
                    "/not-linux.wsl": images["not-linux"]}  # fmt: skip
    with shared_dir("lxss-catalog-") as work, http_server(_handler(served)) as base:
        cache = work / "cache"
        cache.mkdir()
        env = Env(service, base, served, work / "lxss.conf", cache)
        before = set(names(service))
        try:
            yield env
        finally:
            for name in set(names(service)) - before:
                service.lxss("--unregister", name)


def _main_catalog(env: Env, images: dict[str, bytes]) -> dict[str, Any]:
    return {
        "Default": "CatFamily",
        "ModernDistributions": {
            "CatFamily": [entry(env.base, NAME, "/main.wsl", sha(images["main"])),
                          entry(env.base, "CatBox-old", "/main.wsl", sha(images["main"]),
                                default=False)],
            "Broken": [entry(env.base, "BadHash", "/main.wsl", "0x" + "0" * 64),
                       entry(env.base, "NotLinux", "/not-linux.wsl", sha(images["not-linux"]),
                             default=False)],
        },
        "Distributions": [{"Name": "StoreOnly", "FriendlyName": "A Store app", "Amd64": True,
                           "Arm64": True, "Amd64PackageUrl": f"{env.base}/x.appxbundle"}],
    }  # fmt: skip


def _marker(env: Env, name: str) -> str:
    result = env.lxss("-d", name, "--", "cat", "/etc/marker")
    assert result.returncode == 0, str(result)
    return str(result.out.strip())


def test_list_online_shows_the_catalog_and_the_append_list(
    world: Env, images: dict[str, bytes]
) -> None:
    append = {"ModernDistributions": {"Extra": [entry(world.base, "AppendOnly", "/append.wsl",
                                                      sha(images["append"]))]}}  # fmt: skip
    world.set_catalogs(_main_catalog(world, images), append)
    result = world.lxss("--list", "--online")
    assert result.returncode == 0, str(result)
    lines = result.out.splitlines()
    assert lines[0] == "The following distributions can be installed with 'lxss --install NAME':"
    width = len("CatBox-old")
    assert lines[2:] == [
        f"  {'NAME':<{width}}  FRIENDLY NAME",
        f"* {NAME:<{width}}  CatBox for tests",
        f"  {'CatBox-old':<{width}}  CatBox-old for tests",
        f"  {'BadHash':<{width}}  BadHash for tests",
        f"  {'NotLinux':<{width}}  NotLinux for tests",
        f"  {'StoreOnly':<{width}}  A Store app (Microsoft Store package only: not installable"
        " here)",
        f"  {'AppendOnly':<{width}}  AppendOnly for tests",
    ]  # fmt: skip
    quiet = world.lxss("-l", "-o", "-q")
    assert quiet.out.split() == [NAME, "CatBox-old", "BadHash", "NotLinux", "StoreOnly",
                                 "AppendOnly"]  # fmt: skip


def test_list_online_without_a_catalog_says_what_to_configure(world: Env) -> None:
    world.config.write_text("")
    assert_fails(world.lxss("--list", "--online"), "distributionListUrl", str(world.config))
    world.config.write_text(f"[general]\ndistributionListUrl = {world.base}/nothing.json\n")
    assert_fails(world.lxss("-l", "-o"), f"{world.base}/nothing.json", "HTTP 404")


def test_install_the_default_downloads_verifies_and_launches(
    world: Env, images: dict[str, bytes]
) -> None:
    world.set_catalogs(_main_catalog(world, images))
    result = world.lxss("--install", input=b"cat /etc/marker; exit 7\n")
    assert result.returncode == 7, str(result)  # the shell ran, read our stdin, exited 7
    assert f"Installed '{NAME}'" in result.out and "main\n" in result.out
    # Not a terminal: a line each time a new tenth is reached (in 1 MiB reads), then the end.
    tenths = [int(m.group(1)) for m in map(PROGRESS.match, result.err.splitlines()) if m]
    assert 5 <= len(tenths) <= 10 and tenths[-1] == 100, result.err
    assert [t // 10 for t in tenths] == sorted({t // 10 for t in tenths}), result.err
    rows = registry_rows(world.service, NAME)
    assert len(rows) == 1
    assert not list(world.cache.rglob("*.partial")) and not list(world.cache.rglob("*.wsl"))
    # The image was fetched once, whole, by the user's lxss.
    assert world.ranges("/main.wsl") == [None]


def test_install_by_family_name_and_options_and_quiet(world: Env, images: dict[str, bytes]) -> None:
    world.set_catalogs(_main_catalog(world, images))
    location = world.cache.parent / "where"
    result = world.lxss("-d", "catfamily", "--install", "--name", "mine", "--location",
                        str(location), "--no-launch", "--web-download", "-q")  # fmt: skip
    assert result.returncode == 0, str(result)
    assert result.err == "", "quiet: no progress"
    assert "mine" in names(world.service)
    assert (rootfs_of(location) / "etc/marker").read_text() == "main\n"
    # A taken name is refused before anything is downloaded.
    fetched = len(world.ranges("/main.wsl"))
    assert_fails(world.lxss("--install", NAME, "--name", "MINE", "-q"), "'MINE' already exists")
    assert len(world.ranges("/main.wsl")) == fetched
    assert_fails(world.lxss("-d", "x", "--install", "y"), "two distributions")


def test_the_append_list_overrides_the_main_one(world: Env, images: dict[str, bytes]) -> None:
    append = {"ModernDistributions": {"CatFamily": [
        entry(world.base, NAME, "/append.wsl", sha(images["append"]))]}}  # fmt: skip
    world.set_catalogs(_main_catalog(world, images), append)
    result = world.lxss("--install", NAME, "--no-launch")
    assert result.returncode == 0, str(result)
    assert "overrides the main catalog's entry" in result.err
    assert _marker(world, NAME) == "append"


def test_hash_mismatch_prints_both_hashes_and_registers_nothing(
    world: Env, images: dict[str, bytes]
) -> None:
    world.set_catalogs(_main_catalog(world, images))
    before = world.tree_count()
    result = world.lxss("--install", "BadHash", "--no-launch", "-q")
    line = assert_fails(result, sha(images["main"]), "0" * 64, "SHA-256")
    assert "deleted" in line
    assert result.returncode == FAILURE
    assert "BadHash" not in names(world.service)
    assert world.tree_count() == before
    assert list(world.cache.rglob("*")) == [world.cache / "lxss", world.cache / "lxss/downloads"]


def test_an_image_that_is_not_linux_leaves_no_tree(world: Env, images: dict[str, bytes]) -> None:
    world.set_catalogs(_main_catalog(world, images))
    before = world.tree_count()
    assert_fails(world.lxss("--install", "NotLinux", "--no-launch", "-q"), "not a Linux")
    assert "NotLinux" not in names(world.service)
    assert world.tree_count() == before


def test_legacy_and_unknown_names_say_why(world: Env, images: dict[str, bytes]) -> None:
    world.set_catalogs(_main_catalog(world, images))
    assert_fails(world.lxss("--install", "StoreOnly"), "Microsoft Store", "cannot install")
    assert_fails(world.lxss("--install", "Nope"), "no distribution named 'Nope'", "busybox")


def test_a_dropped_download_resumes_with_a_range_request(
    world: Env, images: dict[str, bytes]
) -> None:
    world.set_catalogs(_main_catalog(world, images))
    half = len(images["main"]) // 2
    world.served.drop_after["/main.wsl"] = half
    failed = world.lxss("--install", NAME, "--no-launch", "-q")
    assert_fails(failed, "run the same command again to resume")
    assert NAME not in names(world.service)
    (partial,) = world.cache.rglob("*.partial")
    assert partial.stat().st_size == half
    resumed = world.lxss("--install", NAME, "--no-launch")
    assert resumed.returncode == 0, str(resumed)
    assert world.ranges("/main.wsl") == [None, f"bytes={half}-"]
    first = next(m for m in map(PROGRESS.match, resumed.err.splitlines()) if m)
    assert 50 < int(first.group(1)) < 70, "the count starts where the first run stopped"
    assert _marker(world, NAME) == "main"
    assert not list(world.cache.rglob("*.partial"))


def test_from_file_installs_a_local_image(world: Env, images: dict[str, bytes]) -> None:
    image = world.cache / "Local-Box.wsl"
    image.write_bytes(images["append"])
    result = world.lxss("--install", "--from-file", str(image), "--no-launch")
    assert result.returncode == 0, str(result)
    assert _marker(world, "Local-Box") == "append"
    assert_fails(world.lxss("--install", "x", "--from-file", str(image)), "--from-file")


def _named_image(work: Path, default_name: str, conf: str = "",
                 files: dict[str, bytes | str] | None = None) -> Path:  # fmt: skip
    """A small .wsl image whose /etc/wsl-distribution.conf suggests *default_name* (and
    holds *conf*), with *files* (a str: a symbolic link's target)."""
    root = busybox_root(work / "root-named")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/marker").write_text("named\n")
    (root / "etc/wsl-distribution.conf").write_text(f"[oobe]\ndefaultName = {default_name}\n{conf}")
    for path, content in (files or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            (root / path).symlink_to(content)
        else:
            (root / path).write_bytes(content)
    image = work / "Plain-File.wsl"
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-czf", str(image), "."],
                   check=True)  # fmt: skip
    shutil.rmtree(root)
    return image


def test_from_file_takes_the_images_default_name(world: Env, images: dict[str, bytes]) -> None:
    image = _named_image(world.cache, "Named-By-Image")
    result = world.lxss("--install", "--from-file", str(image), "--no-launch")
    assert result.returncode == 0, str(result)
    assert "Installed 'Named-By-Image'" in result.out, str(result)
    assert _marker(world, "Named-By-Image") == "named"
    assert "Plain-File" not in names(world.service)
    # --name wins; a taken file name does not matter while the image's own name is free.
    world.service.ok("--unregister", "Named-By-Image")
    world.lxss("--install", "--from-file", str(image), "--name", "Plain-File", "--no-launch")
    assert _marker(world, "Plain-File") == "named"
    again = world.lxss("--install", "--from-file", str(image), "--no-launch", "-q")
    assert again.returncode == 0, str(again)
    assert {"Plain-File", "Named-By-Image"} <= set(names(world.service))
    # The suggested name is taken now: refused, nothing left behind.
    trees = world.tree_count()
    taken = world.lxss("--install", "--from-file", str(image), "--no-launch", "-q")
    assert_fails(taken, "'Named-By-Image' already exists")
    assert world.tree_count() == trees
    assert not [row for row in registry_rows(world.service) if "installing-" in str(row)]


def test_from_file_refuses_an_invalid_default_name(world: Env, images: dict[str, bytes]) -> None:
    image = _named_image(world.cache, "not valid!")
    trees = world.tree_count()
    result = world.lxss("--install", "--from-file", str(image), "--no-launch", "-q")
    assert_fails(result, "invalid distribution name 'not valid!'")
    assert world.tree_count() == trees
    assert "Plain-File" not in names(world.service)


def test_the_shortcut_shows_the_images_icon(world: Env, images: dict[str, bytes]) -> None:
    data = world.cache / "data"
    desktop = {"XDG_CURRENT_DESKTOP": "test", "XDG_DATA_HOME": str(data)}
    icon = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    image = _named_image(world.cache, "Iconic", "[shortcut]\nicon = /usr/share/wsl/logo.png\n",
                         {"usr/share/wsl/logo.png": icon})  # fmt: skip
    result = world.lxss("--install", "--from-file", str(image), "--no-launch", env=desktop)
    assert result.returncode == 0 and result.err == "", str(result)
    entry = data / "applications/lxss-Iconic.desktop"
    kept = data / "icons/lxss-Iconic.png"
    assert f"Icon={kept}\n" in entry.read_text()
    assert kept.read_bytes() == icon
    world.lxss("--unregister", "iconic", env=desktop)
    assert not entry.exists() and not kept.exists()


def test_an_icon_outside_the_tree_or_too_large_is_left_out(
    world: Env, images: dict[str, bytes]
) -> None:
    """The icon is read inside the new tree: a link to a host file finds nothing there."""
    data = world.cache / "data"
    desktop = {"XDG_CURRENT_DESKTOP": "test", "XDG_DATA_HOME": str(data)}
    secret = world.cache / "host-secret.png"
    secret.write_bytes(b"the host's own file")
    for path, content, reason in (
        ("usr/share/link.png", str(secret), "No such file or directory"),
        ("usr/share/big.png", bytes(1 << 20) + b"!", "larger than 1 MiB"),
    ):
        image = _named_image(world.cache, "Iconless", f"[shortcut]\nicon = /{path}\n",
                             {path: content})  # fmt: skip
        result = world.lxss("--install", "--from-file", str(image), "--no-launch", env=desktop)
        assert result.returncode == 0, str(result)
        (warning,) = result.err.splitlines()
        assert warning.startswith("lxss: warning: ") and f"icon '/{path}'" in warning, warning
        assert reason in warning, warning
        assert (
            "Icon=utilities-terminal\n" in (data / "applications/lxss-Iconless.desktop").read_text()
        )
        assert not list((data / "icons").glob("lxss-Iconless.*"))
        world.lxss("--unregister", "Iconless", env=desktop)


def test_downloads_go_through_the_users_proxy(world: Env, images: dict[str, bytes]) -> None:
    world.set_catalogs(_main_catalog(world, images))
    Proxy.seen.clear()
    with http_server(Proxy) as proxy:
        result = world.lxss("--install", NAME, "--no-launch", "-q",
                            env={"http_proxy": proxy})  # fmt: skip
    assert result.returncode == 0, str(result)
    assert Proxy.seen == [f"{world.base}/catalog.json", f"{world.base}/main.wsl"]


def test_file_urls_serve_catalog_and_image(world: Env, images: dict[str, bytes]) -> None:
    image = world.cache / "local.wsl"
    image.write_bytes(images["main"])
    catalog = world.cache / "catalog.json"
    catalog.write_text(json.dumps({"ModernDistributions": {"F": [
        entry("file://", "FileBox", str(image), sha(images["main"])),
        entry("ftp://example.test", "FtpBox", "/x.wsl", sha(images["main"]), default=False),
    ]}}))  # fmt: skip
    world.config.write_text(f"[general]\ndistributionListUrl = {catalog}\n")  # a plain path
    result = world.lxss("--install", "FileBox", "--no-launch", "-q")
    assert result.returncode == 0, str(result)
    assert _marker(world, "FileBox") == "main"
    assert image.exists(), "the catalog's file is the user's, not the cache's: left alone"
    world.config.write_text(f"[general]\ndistributionListUrl = file://{catalog}\n")
    assert_fails(world.lxss("--install", "FtpBox", "--no-launch"), "ftp://example.test/x.wsl",
                 "only file://, http:// and https://")  # fmt: skip


def test_a_full_cache_says_so_and_registers_nothing(world: Env, images: dict[str, bytes]) -> None:
    world.set_catalogs(_main_catalog(world, images))
    small = world.cache / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        result = world.lxss("--install", NAME, "--no-launch", "-q",
                            env={"XDG_CACHE_HOME": str(small)})  # fmt: skip
        assert_fails(result, f"cannot write to the download cache {small}/lxss",
                     "No space left on device")  # fmt: skip
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert NAME not in names(world.service)
