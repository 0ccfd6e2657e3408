"""Container images as distributions, through the real lxss and lxssd: pulled from a
real registry (Debian's docker-registry on a loopback port, the image pushed with
skopeo), read from an OCI layout, an OCI archive and a docker archive, and imported
from archive files, `podman save`'s among them. Every image has two layers, the second
deleting a file with a whiteout and making a directory opaque.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service, busybox_root
from mgmt import assert_fails, names, registry_rows, shared_dir
from oci_support import (
    OCI_INDEX,
    Image,
    Registry,
    TokenServer,
    build_layout,
    free_port,
    htpasswd_file,
    make_multi_arch,
    podman,
    running_registry,
    skopeo,
    tar_of,
    tar_of_tree,
    whiteout_image,
)

pytestmark = pytest.mark.skipif(
    subprocess.run(
        ["sh", "-c", "command -v skopeo docker-registry"], capture_output=True
    ).returncode,
    reason="needs skopeo and docker-registry (setup.sh installs them)",
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with shared_dir("lxss-oci-") as path:
        yield path


@pytest.fixture(scope="module")
def image(scratch: Path) -> Image:
    return whiteout_image(scratch / "image")


@pytest.fixture(scope="module")
def docker_image(scratch: Path) -> Image:
    """The same image with gzip layers only (docker's formats have no zstd)."""
    return whiteout_image(scratch / "docker-image", ("gzip", "gzip"))


@pytest.fixture(scope="module")
def registry(scratch: Path) -> Iterator[Registry]:
    (scratch / "registry").mkdir()
    with running_registry(scratch / "registry") as running:
        yield running


def check_layers_applied(service: Service, name: str) -> None:
    """The second layer's whiteouts took effect over the first layer."""
    run = service.ok("-d", name, "-u", "root", "--", "cat /etc/keep; ls -A /opt/stuff; ls /etc")
    lines = run.out.splitlines()
    assert lines[:2] == ["kept", "new"], run.out  # a and b went with the opaque directory
    assert "gone" not in lines and not any(line.startswith(".wh.") for line in lines), run.out
    assert service.lxss("-d", name, "--", "test -e /opt/stuff/.wh..wh..opq").returncode == 1


def check_config_applied(service: Service, name: str) -> None:
    """User became the default user; Env reaches login shells."""
    assert service.ok("-d", name, "--", "id -u").out.strip() == "1234"
    login = service.ok("-d", name, "--shell-type", "login", "--", 'echo "$GREETING"')
    assert login.out.strip() == "hello from the image"


def install(service: Service, source: str, name: str) -> None:
    service.ok("--install", source, "--name", name, "--no-launch", timeout=300)


def test_install_from_a_registry_applies_layers_whiteouts_and_config(
    service: Service, registry: Registry, image: Image
) -> None:
    source = registry.push(image, "lxss/whiteouts:1")
    result = service.ok("--install", source, "--name", "oci-reg", "--no-launch", timeout=300)
    assert f"{source} (2 layers)" in result.err  # the progress lines (stderr is no terminal)
    try:
        check_layers_applied(service, "oci-reg")
        check_config_applied(service, "oci-reg")
        row = registry_rows(service, "oci-reg")[0]
        assert (row["os_id"], row["default_uid"]) == ("ocitest", 1234)
    finally:
        service.ok("--unregister", "oci-reg")


def test_a_multi_platform_image_is_resolved_to_this_machine(
    service: Service, registry: Registry, scratch: Path
) -> None:
    """An image index (pushed with skopeo --all) whose first entry is another
    architecture's: lxss takes this machine's entry, from the registry and the layout."""
    image = whiteout_image(scratch / "multi")
    make_multi_arch(image)
    source = registry.push(image, "lxss/multi:1", "--all")
    assert registry.manifest("lxss/multi", "1")["mediaType"] == OCI_INDEX
    for from_where in (source, f"oci:{image.layout}:{image.tag}"):
        install(service, from_where, "oci-multi")
        try:
            check_layers_applied(service, "oci-multi")
        finally:
            service.ok("--unregister", "oci-multi")


def test_token_authentication_with_the_users_stored_credentials(
    service: Service, image: Image, scratch: Path
) -> None:
    """A registry that takes only tokens, from a token server that wants a login: the
    401 challenge leads lxss to the token server, with the credentials podman's
    auth.json (then docker's config.json) holds for that registry."""
    directory = scratch / "token"
    directory.mkdir()
    tokens = TokenServer(directory, "tester", "s3cret")
    try:
        with running_registry(directory, tokens) as registry:
            source = registry.push(image, "lxss/private:1", "--dest-creds", "tester:s3cret")
            secret = base64.b64encode(b"tester:s3cret").decode()
            auths = json.dumps({"auths": {registry.host: {"auth": secret}}})
            (directory / "run/containers").mkdir(parents=True)
            (directory / "run/containers/auth.json").write_text(auths)
            (directory / "docker").mkdir()
            (directory / "docker/config.json").write_text(auths)
            cache = str(directory / "cache")
            without = service.lxss("--install", source, "--name", "oci-tok", "--no-launch", "-q",
                                   env={"XDG_CACHE_HOME": cache}, timeout=300)  # fmt: skip
            assert_fails(without, "refused a token")
            assert "oci-tok" not in names(service)
            for env in (
                {"XDG_RUNTIME_DIR": str(directory / "run")},
                {"DOCKER_CONFIG": str(directory / "docker")},
            ):
                tokens.requests.clear()
                install_env = {**env, "XDG_CACHE_HOME": cache}
                service.ok("--install", source, "--name", "oci-tok", "--no-launch",
                           env=install_env, timeout=300)  # fmt: skip
                try:
                    assert tokens.requests, "lxss never asked the token server"
                    assert "scope=repository%3Alxss%2Fprivate%3Apull" in tokens.requests[0]
                    check_layers_applied(service, "oci-tok")
                finally:
                    service.ok("--unregister", "oci-tok")
    finally:
        tokens.stop()


def test_basic_authentication_with_the_users_stored_credentials(
    service: Service, image: Image, scratch: Path
) -> None:
    """A registry that asks for Basic credentials (htpasswd): lxss answers the challenge
    with the login ~/.docker/config.json holds, and says how to log in without one."""
    directory = scratch / "basic"
    directory.mkdir()
    users = htpasswd_file(directory / "htpasswd", "tester", "s3cret")
    with running_registry(directory, htpasswd=users) as registry:
        source = registry.push(image, "lxss/basic:1", "--dest-creds", "tester:s3cret")
        cache = {"XDG_CACHE_HOME": str(directory / "cache")}
        without = service.lxss("--install", source, "--name", "oci-basic", "--no-launch", "-q",
                               env=cache, timeout=300)  # fmt: skip
        assert_fails(without, "needs a login", "podman login")
        secret = base64.b64encode(b"tester:s3cret").decode()
        (directory / ".docker").mkdir()
        (directory / ".docker/config.json").write_text(
            json.dumps({"auths": {f"http://{registry.host}": {"auth": secret}}})
        )
        env = {**cache, "HOME": str(directory)}
        service.ok("--install", source, "--name", "oci-basic", "--no-launch", env=env,
                   timeout=300)  # fmt: skip
        try:
            check_layers_applied(service, "oci-basic")
        finally:
            service.ok("--unregister", "oci-basic")


def test_a_layer_that_does_not_match_its_digest_registers_nothing(
    service: Service, registry: Registry, scratch: Path
) -> None:
    image = whiteout_image(scratch / "corrupt")
    source = registry.push(image, "lxss/corrupt:1")
    top = registry.manifest("lxss/corrupt", "1")["layers"][-1]["digest"].split(":")[1]
    blobs = registry.storage / "data/docker/registry/v2/blobs/sha256"
    stored = blobs / top[:2] / top / "data"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest (or the stream) can tell
    stored.write_bytes(bytes(data))
    # A cache of its own: the good blob, pulled by another test, is in the default one.
    cache = {"XDG_CACHE_HOME": str(scratch / "corrupt-cache")}
    storage = service.state_dir / "0"
    before = set(storage.iterdir()) if storage.exists() else set()
    result = service.lxss(
        "--install", source, "--name", "oci-bad", "--no-launch", "-q", timeout=300, env=cache
    )
    assert_fails(result, "does not match its digest", top)
    assert not list((scratch / "corrupt-cache").rglob(top + "*"))  # never cached
    assert "oci-bad" not in names(service)
    assert registry_rows(service, "oci-bad") == []
    assert set(storage.iterdir()) == before  # no partial tree left


@pytest.mark.parametrize("transport", ["oci", "oci-archive", "docker-archive"])
def test_install_from_a_layout_or_an_archive(
    service: Service, image: Image, docker_image: Image, scratch: Path, transport: str
) -> None:
    if transport == "docker-archive":
        image = docker_image
    if transport == "oci":
        source = f"oci:{image.layout}:{image.tag}"
    else:
        archive = scratch / f"image.{transport}.tar"
        if not archive.exists():
            skopeo(f"oci:{image.layout}:{image.tag}", f"{transport}:{archive}:lxss/test:1")
        source = f"{transport}:{archive}"
    name = f"oci-{transport}"
    install(service, source, name)
    try:
        check_layers_applied(service, name)
        check_config_applied(service, name)
    finally:
        service.ok("--unregister", name)


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_import_takes_an_image_archive(
    service: Service, image: Image, docker_image: Image, scratch: Path, transport: str
) -> None:
    if transport == "docker-archive":
        image = docker_image
    archive = scratch / f"import.{transport}.tar"
    skopeo(f"oci:{image.layout}:{image.tag}", f"{transport}:{archive}:lxss/test:1")
    name = f"imp-{transport}"
    service.ok("--import", name, str(scratch / name), str(archive), timeout=300)
    try:
        check_layers_applied(service, name)
        check_config_applied(service, name)
    finally:
        service.ok("--unregister", name)


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman (setup.sh installs it)")
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_import_takes_a_podman_save_archive(
    service: Service, image: Image, docker_image: Image, scratch: Path, fmt: str
) -> None:
    """What `podman save` writes, in both its formats, from an image podman pulled itself
    (its store re-packs the layers: the whiteouts must survive that)."""
    if fmt == "docker-archive":
        image = docker_image  # podman cannot write zstd layers as docker's
    storage = scratch / f"pd-{fmt[:3]}"  # podman wants a runroot of at most 50 characters
    pulled = podman(storage, "pull", "-q", f"oci:{image.layout}:{image.tag}").split()[-1]
    podman(storage, "tag", pulled, "localhost/lxss/podman:1")
    archive = scratch / f"podman.{fmt}.tar"
    podman(storage, "save", "--format", fmt, "-o", str(archive), "localhost/lxss/podman:1")
    name = f"podman-{fmt}"
    service.ok("--import", name, str(scratch / name), str(archive), timeout=300)
    try:
        check_layers_applied(service, name)
        check_config_applied(service, name)
    finally:
        service.ok("--unregister", name)


def test_a_hostile_image_cannot_reach_outside_its_tree(
    service: Service, test_users: tuple[str, str], scratch: Path
) -> None:
    """Installed by an unprivileged user: the first layer plants symlinks to a host
    directory (absolute and climbing); the second writes through them, whiteouts a host
    file through them, makes them opaque and names parents with '..'. The host
    directory is untouched, whatever the install's outcome."""
    user = test_users[0]
    victim = scratch / "victim"
    victim.mkdir()
    (victim / "precious").write_text("still here\n")
    (victim / "sub").mkdir()
    (victim / "sub/inner").write_text("inner\n")
    root = busybox_root(scratch / "hostile-root")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    climbing = b"../../../../../../.." + str(victim).encode()
    first = tar_of([("abs", "symlink", str(victim).encode()), ("climb", "symlink", climbing)])
    second = tar_of([
        ("abs/pwned", "file", b"x"), ("climb/pwned", "file", b"x"),
        ("abs/.wh.precious", "file", b""), ("climb/.wh.precious", "file", b""),
        ("abs/sub/.wh..wh..opq", "file", b""), ("climb/sub/.wh..wh..opq", "file", b""),
        ("../../../../tmp/.wh.precious", "file", b""), ("abs/.wh..wh..opq", "file", b""),
    ])  # fmt: skip
    image = build_layout(scratch / "hostile", [(tar_of_tree(root), "gzip"), (first, "tar"),
                                                (second, "gzip")], {})  # fmt: skip
    subprocess.run(["chmod", "-R", "a+rX", str(scratch / "hostile")], check=True)
    result = service.lxss("--install", f"oci:{image.layout}:{image.tag}", "--name", "hostile",
                          "--no-launch", user=user, timeout=300)  # fmt: skip
    try:
        assert sorted(p.name for p in victim.rglob("*")) == ["inner", "precious", "sub"]
        assert (victim / "precious").read_text() == "still here\n"
        assert result.returncode == 0, str(result)  # refused members are warnings
        assert "symlink" in result.err or "not a directory" in result.err, result.err
    finally:
        if result.returncode == 0:
            service.ok("--unregister", "hostile", user=user)


def test_what_cannot_be_installed_says_why(
    service: Service, registry: Registry, scratch: Path
) -> None:
    closed = free_port()  # nothing listens there
    for source, fragments in (
        ("containers-storage:debian", ("containers-storage", "podman save")),
        (f"oci:{scratch}/no-such-layout", ("cannot open the OCI layout", "no-such-layout")),
        (f"oci-archive:{scratch}/missing.tar", ("cannot open", "missing.tar")),
        (f"docker://{registry.host}/lxss/absent:1", ("no such image or tag", "HTTP 404")),
        (f"docker://127.0.0.1:{closed}/x:1", ("cannot reach the registry", str(closed))),
        ("docker://Bad_Name", ("not a repository name",)),
    ):
        result = service.lxss("--install", source, "--name", "nope", "--no-launch", "-q")
        assert_fails(result, *fragments)
    assert "nope" not in names(service)


def test_import_from_a_fifo_is_still_a_plain_tarball(service: Service, scratch: Path) -> None:
    """Telling image archives apart must not read from a FIFO: its one writer's data
    belongs to the import."""
    import os
    import threading

    from conftest import busybox_tarball

    tarball = busybox_tarball(scratch / "fifo-src")
    fifo = scratch / "import.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as sink:
            sink.write(tarball.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    service.ok("--import", "from-fifo", str(scratch / "from-fifo"), str(fifo), timeout=120)
    writer.join(timeout=60)
    try:
        assert service.ok("-d", "from-fifo", "--", "cat /etc/os-release").out.startswith(
            "ID=testbox"
        )
    finally:
        service.ok("--unregister", "from-fifo")


def test_an_installed_image_runs_its_first_run_setup_and_gets_a_shortcut(
    service: Service, test_users: tuple[str, str], scratch: Path
) -> None:
    """As a catalog install does: the image's /etc/wsl-distribution.conf [oobe] command
    runs once, before the first shell, and a desktop gets its entry; an --import of the
    same image runs nothing."""
    root = busybox_root(scratch / "oobe-root")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/wsl-distribution.conf").write_text(
        "[oobe]\ncommand = echo ran >> /oobe-runs; echo first-run-done\n"
    )
    image = build_layout(scratch / "oobe-layout", [(tar_of_tree(root), "gzip")], {})
    user = test_users[1]
    entry = Path(pwd.getpwnam(user).pw_dir) / ".local/share/applications/lxss-oci-oobe.desktop"
    with contextlib.suppress(FileNotFoundError):
        entry.unlink()
    source = f"oci:{image.layout}:{image.tag}"
    service.ok("--install", source, "--name", "oci-oobe", "--no-launch", "-q", user=user,
               env={"XDG_CURRENT_DESKTOP": "test"}, timeout=300)  # fmt: skip
    try:
        assert "-d oci-oobe" in entry.read_text()
        first = service.ok("-d", "oci-oobe", input=b"echo shell\n", user=user)
        assert first.out.splitlines() == ["first-run-done", "shell"], str(first)
        second = service.ok("-d", "oci-oobe", input=b"echo shell\n", user=user)
        assert second.out.splitlines() == ["shell"], str(second)
        archive = scratch / "oobe.oci-archive.tar"
        skopeo(source, f"oci-archive:{archive}:lxss/oobe:1")
        service.ok("--import", "oci-oobe-imp", str(scratch / "oobe-imp"), str(archive),
                   timeout=300)  # fmt: skip
        try:
            imported = service.ok("-d", "oci-oobe-imp", input=b"echo shell\n")
            assert imported.out == "shell\n", str(imported)
        finally:
            service.ok("--unregister", "oci-oobe-imp")
    finally:
        service.ok("--unregister", "oci-oobe", user=user)
    assert not entry.exists()
