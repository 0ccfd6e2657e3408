"""Container image parsing: references, manifests and indexes, whiteout rules,
registry authentication challenges and stored credentials, and the checks the
service makes on a client's layer list."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from lxss.archive.image import env_script, resolve_user
from lxss.archive.unpack import Unpacker
from lxss.oci import auth, layer_stream, manifest, reference, resolve, whiteout
from lxss.oci.manifest import Descriptor, ManifestError
from lxss.oci.reference import ReferenceError

H = "0123456789abcdef" * 4
DIGEST = f"sha256:{H}"


# References ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("docker://debian", "docker.io", "library/debian", "latest", None),
        ("docker://debian:bookworm", "docker.io", "library/debian", "bookworm", None),
        ("docker://docker.io/library/debian:12", "docker.io", "library/debian", "12", None),
        ("docker://index.docker.io/foo/bar", "docker.io", "foo/bar", "latest", None),
        ("docker://quay.io/a/b/c:v1.2", "quay.io", "a/b/c", "v1.2", None),
        ("docker://localhost/img", "localhost", "img", "latest", None),
        ("docker://127.0.0.1:5000/x/y:t", "127.0.0.1:5000", "x/y", "t", None),
        (f"docker://ghcr.io/o/r@{DIGEST}", "ghcr.io", "o/r", None, DIGEST),
        (f"docker://r:1@{DIGEST}", "docker.io", "library/r", "1", DIGEST),
        ("docker://user/repo", "docker.io", "user/repo", "latest", None),
    ],
)
def test_docker_references_are_normalised_as_docker_does(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = reference.parse(text)
    assert (ref.transport, ref.registry, ref.repository, ref.tag, ref.digest) == (
        "docker", registry, repository, tag, digest,
    )  # fmt: skip


def test_docker_hub_is_reached_at_its_api_host() -> None:
    assert reference.parse("docker://debian").api_host == "registry-1.docker.io"
    assert reference.parse("docker://quay.io/a/b").api_host == "quay.io"


@pytest.mark.parametrize(
    ("text", "transport", "path", "ref"),
    [
        ("oci:/tmp/layout", "oci", "/tmp/layout", None),
        ("oci:/tmp/layout:v1", "oci", "/tmp/layout", "v1"),
        ("oci:/tmp/layout:", "oci", "/tmp/layout", None),
        ("oci-archive:img.tar", "oci-archive", "img.tar", None),
        ("docker-archive:/x/img.tar:name:tag", "docker-archive", "/x/img.tar", "name:tag"),
    ],
)
def test_local_references(text: str, transport: str, path: str, ref: str | None) -> None:
    parsed = reference.parse(text)
    assert (parsed.transport, parsed.path, parsed.ref) == (transport, path, ref)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("docker:debian", "two slashes"),
        ("docker://Debian", "repository name"),
        ("docker://debian:bad tag", "not a valid tag"),
        ("docker://debian@sha256:abc", "not a digest"),
        ("containers-storage:debian", "podman save"),
        ("oci:", "names no directory"),
        ("docker://" + "a" * 5000, "too long"),
    ],
)
def test_bad_references_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ReferenceError, match=fragment):
        reference.parse(text)


def test_only_transports_make_an_image_reference() -> None:
    assert reference.is_image_reference("docker://debian")
    assert reference.is_image_reference("oci-archive:x.tar")
    assert not reference.is_image_reference("debian")
    assert not reference.is_image_reference("Ubuntu-24.04")
    assert not reference.is_image_reference("debian:bookworm")  # a builder's name, not ours


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [("127.0.0.1:5000", True), ("127.3.4.5", True), ("localhost:80", True), ("[::1]:5000", True),
     ("localhost.example.com", False), ("10.0.0.1:5000", False), ("docker.io", False),
     ("127.0.0.1.nip.io", False)],
)  # fmt: skip
def test_plain_http_only_for_loopback_registries(registry: str, loopback: bool) -> None:
    assert reference.is_loopback_registry(registry) is loopback


# Manifests and indexes ----------------------------------------------------------------


def _entry(arch: str, variant: str = "", os_name: str = "linux") -> dict[str, object]:
    platform = {"os": os_name, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return {"mediaType": manifest.OCI_MANIFEST, "digest": DIGEST, "size": 10, "platform": platform}


def test_index_selection_picks_os_arch_and_variant() -> None:
    entries = manifest.index_entries({"manifests": [
        _entry("amd64", os_name="windows"), _entry("arm", "v6"), _entry("arm", "v7"),
        _entry("arm64", "v8"), _entry("amd64"),
    ]})  # fmt: skip
    assert manifest.select_platform(entries, "amd64").platform == ("linux", "amd64", "")
    assert manifest.select_platform(entries, "arm", "v7").platform[2] == "v7"
    assert manifest.select_platform(entries, "arm64", "v8").platform[1] == "arm64"
    with pytest.raises(ManifestError, match=r"no linux/s390x variant.*linux/amd64"):
        manifest.select_platform(entries, "s390x")


def test_an_arm64_entry_without_a_variant_still_matches() -> None:
    entries = manifest.index_entries({"manifests": [_entry("arm64")]})
    assert manifest.select_platform(entries, "arm64", "v8").platform[1] == "arm64"


def test_document_kinds() -> None:
    assert manifest.kind({"mediaType": manifest.DOCKER_LIST}) == "index"
    assert manifest.kind({}, manifest.OCI_MANIFEST + "; charset=utf-8") == "manifest"
    assert manifest.kind({"manifests": []}) == "index"
    with pytest.raises(ManifestError, match="schema 1"):
        manifest.kind({"schemaVersion": 1, "fsLayers": []})


def _manifest(layers: list[dict[str, object]]) -> dict[str, object]:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 2}
    return {"mediaType": manifest.OCI_MANIFEST, "config": config, "layers": layers}


def test_manifest_layers_are_checked() -> None:
    good = {"mediaType": manifest.LAYER_TYPES[1], "digest": DIGEST, "size": 5}
    assert manifest.parse_manifest(_manifest([good])).layers[0].size == 5
    for bad, fragment in (
        ({**good, "digest": "sha256:xyz"}, "invalid digest"),
        ({**good, "size": -1}, "invalid size"),
        ({**good, "size": True}, "invalid size"),
        ({**good, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"},
         "foreign"),
        ({**good, "mediaType": "application/x-helm-chart"}, "unknown type"),
        ("not an object", "not an object"),
    ):  # fmt: skip
        with pytest.raises(ManifestError, match=fragment):
            manifest.parse_manifest(_manifest([bad]))  # type: ignore[list-item]
    with pytest.raises(ManifestError, match="at most 128"):
        manifest.parse_manifest(_manifest([good] * 129))


def test_config_env_user_and_workdir() -> None:
    config = manifest.parse_config({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin", "A=b=c"], "User": "app:staff", "WorkingDir": "/srv"},
        "rootfs": {"diff_ids": [DIGEST]},
    })  # fmt: skip
    assert (config.env, config.user, config.working_dir) == (
        ("PATH=/usr/bin", "A=b=c"),
        "app:staff",
        "/srv",
    )
    for bad in ({"Env": "x"}, {"Env": ["NOEQUALS"]}, {"Env": ["A=\n"]}, {"User": 5},
                {"Env": [f"V{i}=x" for i in range(300)]}):  # fmt: skip
        with pytest.raises(ManifestError):
            manifest.parse_config({"config": bad})


def test_documents_are_bounded_and_must_be_objects() -> None:
    with pytest.raises(ManifestError, match="larger than"):
        manifest.load(b" " * (manifest.MAX_DOCUMENT + 1), "manifest")
    with pytest.raises(ManifestError, match="not a JSON object"):
        manifest.load(b"[]", "manifest")
    with pytest.raises(ManifestError, match="is not JSON"):
        manifest.load(b"{", "manifest")


def test_documents_must_match_their_digests() -> None:
    data = b'{"a": 1}'
    good = Descriptor("", resolve.digest_of(data), len(data))
    assert resolve.verified(data, good, "config") == data
    with pytest.raises(ManifestError, match="expected sha256:"):
        resolve.verified(data + b" ", good, "config")


def test_layout_entries_by_ref_name() -> None:
    entries = [Descriptor("", DIGEST, 1, ref_name="a"), Descriptor("", DIGEST, 1, ref_name="b")]
    assert resolve.choose_entry(entries, "b") == [entries[1]]
    with pytest.raises(ManifestError, match=r"no image 'c' .*a, b"):
        resolve.choose_entry(entries, "c")
    with pytest.raises(ManifestError, match="several images"):
        resolve.pick(entries)


# Whiteouts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("etc/passwd", None),
        ("etc/.wh.gone", ("whiteout", "etc/gone")),
        (".wh.top", ("whiteout", "top")),
        ("opt/stuff/.wh..wh..opq", ("opaque", "opt/stuff")),
        (".wh..wh..opq", ("opaque", ".")),
        ("x/.wh..wh.plnk", ("ignore", "x/.wh..wh.plnk")),
        ("x/.wh.", ("ignore", "x/.wh.")),
        ("x/.wh...", ("ignore", "x/.wh...")),
        ("x/file.wh.y", None),
    ],
)
def test_whiteout_names(path: str, expected: tuple[str, str] | None) -> None:
    assert whiteout.classify(path) == expected


def _layer(tmp_path: Path, entries: list[tuple[str, str]]) -> None:
    """Apply a layer of (name, 'file'|'dir') entries to the tree at tmp_path."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid = os.getuid(), os.getgid()
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(b""))
    buffer.seek(0)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        Unpacker(buffer, layer=True).run()
    finally:
        os.chdir(cwd)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_whiteouts_remove_lower_entries_but_not_their_own_layers(tmp_path: Path) -> None:
    _layer(tmp_path, [("a", "dir"), ("a/old", "file"), ("a/sub", "dir"), ("a/sub/deep", "file"),
                      ("b", "dir"), ("b/gone", "file"), ("b/dir", "dir"), ("b/dir/x", "file"),
                      ("keep", "file")])  # fmt: skip
    # The opaque marker comes *after* this layer's own entries of a/: they must stay,
    # and a/sub, recreated here, loses what the lower layer had in it.
    _layer(tmp_path, [("a/new", "file"), ("a/sub", "dir"), ("a/.wh..wh..opq", "file"),
                      ("b/.wh.gone", "file"), ("b/.wh.dir", "file"), ("b/.wh.missing", "file"),
                      ("c", "file"), (".wh.c", "file")])  # fmt: skip
    assert _tree(tmp_path) == ["a", "a/new", "a/sub", "b", "c", "keep"]


def test_a_whiteout_through_a_symlinked_parent_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/precious").write_text("x")
    (tmp_path / "link").symlink_to("elsewhere")
    _layer(tmp_path, [("link/.wh.precious", "file")])
    assert (tmp_path / "elsewhere/precious").exists()


# The image config's defaults -----------------------------------------------------------


def test_user_resolves_in_the_images_passwd() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\napp:x:1234:50::/home/app:/bin/sh\n"
    assert resolve_user("app", passwd) == 1234
    assert resolve_user("app:staff", passwd) == 1234
    assert resolve_user("4321", passwd) == 4321
    assert resolve_user("4321:10", passwd) == 4321
    assert resolve_user("nobody", passwd) is None
    assert resolve_user("", passwd) is None


def test_env_script_quotes_values_and_skips_per_login_names() -> None:
    script = env_script(["A=it's $HOME", "HOME=/x", "BAD-NAME=1", "PATH=/bin"], "/srv")
    assert "export A='it'\"'\"'s $HOME'" in script
    assert "HOME" not in script.split("\n", 1)[1].replace("$HOME", "")
    assert "BAD-NAME" not in script
    assert "export LXSS_IMAGE_WORKDIR=/srv" in script


# Authentication ------------------------------------------------------------------------


def test_bearer_challenge_parameters() -> None:
    scheme, params = auth.parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/debian:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/debian:pull",
    }
    assert auth.parse_challenge('Basic realm="x \\"q\\""') == ("basic", {"realm": 'x "q"'})
    assert auth.parse_challenge("") == ("", {})


def _auths(key: str, user: str = "u", password: str = "p:w") -> dict[str, object]:
    return {key: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}


def test_credentials_are_found_under_the_keys_tools_write() -> None:
    assert auth.lookup(_auths("quay.io"), "quay.io") == ("u", "p:w")
    assert auth.lookup(_auths("https://quay.io"), "quay.io") == ("u", "p:w")
    assert auth.lookup(_auths("quay.io/namespace"), "quay.io") == ("u", "p:w")
    assert auth.lookup(_auths("https://index.docker.io/v1/"), "docker.io") == ("u", "p:w")
    assert auth.lookup(_auths("quay.io"), "ghcr.io") is None
    assert auth.lookup({"quay.io": {"auth": "!!!"}}, "quay.io") is None
    assert auth.lookup("junk", "quay.io") is None


def test_credential_files_in_podmans_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker/config.json").write_text(json.dumps({"auths": _auths("r.io", "docker")}))
    assert auth.credentials("r.io") == ("docker", "p:w")
    (tmp_path / "run/containers").mkdir(parents=True)
    (tmp_path / "run/containers/auth.json").write_text(
        json.dumps({"auths": _auths("r.io", "podman")})
    )
    assert auth.credentials("r.io") == ("podman", "p:w")
    assert auth.credentials("other.io") is None


# The service's checks on a client's layer list -------------------------------------------


def test_layer_lists_are_bounded_and_well_formed() -> None:
    layer = layer_stream.layer_value(DIGEST, 10)
    image = {"env": ["A=1"], "user": "app", "workingDir": "/"}
    assert layer_stream.check([layer], image) is None
    assert layer_stream.check([layer], None) is None
    for layers, img in (
        ([], None),
        ([layer] * 129, None),
        ([{"digest": "md5:x", "size": 1}], None),
        ([{"digest": DIGEST, "size": 0}], None),
        ([{"digest": DIGEST, "size": "1"}], None),
        ([layer], {"env": ["A=1"] * 257, "user": "", "workingDir": ""}),
        ([layer], {"env": ["A=" + "x" * 70000], "user": "", "workingDir": ""}),
        ([layer], {"env": [], "user": "a\0b", "workingDir": ""}),
    ):
        assert layer_stream.check(layers, img) is not None, (layers[:1], img)
