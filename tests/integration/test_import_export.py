"""--import and --export round trips, through the real lxss and lxssd.

A tree holding every kind of entry (set-id files, hard links, symlinks, a fifo,
a device node, many owners, xattrs, odd names, a deep path) is archived by GNU
tar in every format, imported, and compared entry by entry with the original;
the distribution is then exported in every format, unpacked by GNU tar and
re-imported, and compared again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Service, busybox_tarball
from mgmt import (
    DEVICE,
    FAILURE,
    TAR_FORMATS,
    User,
    assert_fails,
    build_rich_tree,
    gnu_tar,
    magic_of,
    member,
    minimal_linux,
    read_reply,
    registered,
    registry_rows,
    rootfs_of,
    shared_dir,
    spawn_lxss,
    tar_bytes,
)
from treesum import IdShift, TreeSum, archive_sum, tree_sum


@pytest.fixture(scope="module")
def rich_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rich") / "root"
    build_rich_tree(root)
    return root


@pytest.fixture(scope="module")
def expected(rich_tree: Path) -> TreeSum:
    """What an imported copy must hold: everything but the device node."""
    whole = tree_sum(rich_tree)
    assert whole.entry(DEVICE).kind == "chr"  # the source really has one to skip
    return whole.without([DEVICE])


@pytest.fixture(scope="module")
def archives(rich_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The rich tree in each format, plus the same bytes under other names."""
    directory = tmp_path_factory.mktemp("archives")
    made = {fmt: gnu_tar(rich_tree, directory / f"rich.{fmt}", fmt) for fmt in TAR_FORMATS}
    for fmt, path in made.items():
        assert magic_of(path) == fmt
    # A .wsl file is a tar.gz by another name; the others lie about their format.
    extra = {
        "wsl": ("tar.gz", "rich.wsl"),
        "xz-named-gz": ("tar.xz", "really-xz.tar.gz"),
        "tar-named-zst": ("tar", "really-plain.tar.zst"),
        "zst-no-extension": ("tar.zst", "rootfs-image"),
    }
    for key, (fmt, name) in extra.items():
        made[key] = directory / name
        shutil.copyfile(made[fmt], made[key])
    return made


def root_shift() -> IdShift:
    return IdShift.of("root", 0, 0)


def rootfs_sum(rootfs: Path, shift: IdShift) -> TreeSum:
    """The imported tree with its owners translated back into the distribution's ids."""
    return tree_sum(rootfs, uid=shift.uid_to_ns, gid=shift.gid_to_ns)


def assert_same(expected: TreeSum, actual: TreeSum) -> None:
    assert actual == expected, "trees differ:\n" + expected.difference(actual)


def device_warning(stderr: str) -> None:
    warnings = [line for line in stderr.splitlines() if line.startswith("lxss: warning: ")]
    assert warnings == [
        f"lxss: warning: 1 device node(s) skipped (a distribution cannot create them): {DEVICE}"
    ], stderr


@pytest.mark.parametrize("kind", [
    "tar", "tar.gz", "tar.xz", "tar.zst", "tar.bz2", "wsl", "xz-named-gz", "tar-named-zst",
    "zst-no-extension",
])  # fmt: skip
def test_import_every_format_keeps_the_tree(
    service: Service, archives: dict[str, Path], expected: TreeSum, tmp_path: Path, kind: str
) -> None:
    name = f"rt-{kind.replace('.', '_')}"
    location = tmp_path / "install"
    with registered(service, name, location, archives[kind]) as result:
        assert result.out == f"Imported '{name}'.\n"
        device_warning(result.err)
        assert_same(expected, rootfs_sum(rootfs_of(location), root_shift()))
        [row] = registry_rows(service, name)
        assert row["state"] == "Installed"
        assert row["base_path"] == str(rootfs_of(location).parent)
        assert (row["os_id"], row["os_version_id"]) == ("richtree", "42")
    assert not rootfs_of(location).parent.exists(), "lxssd's own directory is removed"
    assert location.is_dir(), "a location the user gave is left in place (empty)"
    assert registry_rows(service, name) == []


@pytest.mark.parametrize(("how", "fmt"), [("pipe", "tar.gz"), ("pipe", "tar"),
                                          ("file", "tar.zst"), ("file", "tar")])  # fmt: skip
def test_import_from_stdin(
    service: Service, archives: dict[str, Path], expected: TreeSum, tmp_path: Path,
    how: str, fmt: str,
) -> None:  # fmt: skip
    name = f"stdin-{how}-{fmt.replace('.', '_')}"
    location = tmp_path / "install"
    if how == "pipe":
        result = service.lxss("--import", name, str(location), "-",
                              input=archives[fmt].read_bytes())  # fmt: skip
    else:
        with open(archives[fmt], "rb") as f:
            result = service.lxss("--import", name, str(location), "-", stdin=f.fileno())
    assert result.returncode == 0, str(result)
    try:
        device_warning(result.err)
        assert_same(expected, rootfs_sum(rootfs_of(location), root_shift()))
    finally:
        service.ok("--unregister", name)


def test_import_into_service_storage(
    service: Service, archives: dict[str, Path], expected: TreeSum
) -> None:
    """Without a location the service keeps the tree in its own state directory and,
    having made that directory, removes it with the distribution."""
    name = "rt-managed"
    # lxss always passes a location; a Varlink call without one uses the service's storage.
    with open(archives["tar.gz"], "rb") as f:
        reply = call_with_fd(service, name, f.fileno())
    assert "error" not in reply, reply
    [row] = registry_rows(service, name)
    base = Path(row["base_path"])
    try:
        assert base.parent == service.state_dir / "0"
        assert base.name == reply["parameters"]["guid"]
        assert_same(expected, rootfs_sum(base / "rootfs", root_shift()))
    finally:
        service.ok("--unregister", name)
    assert not base.exists()
    assert registry_rows(service, name) == []


def call_with_fd(service: Service, name: str, fd: int) -> dict[str, Any]:
    """RegisterDistribution without a location, the archive fd sent with SCM_RIGHTS."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(str(service.runtime_dir / "lxssd.sock"))
        message = {"method": "io.lxss.Service.RegisterDistribution",
                   "parameters": {"name": name, "archive": 0}}  # fmt: skip
        socket.send_fds(s, [json.dumps(message).encode() + b"\0"], [fd])
        return read_reply(s)


# Export ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rich_distribution(
    service: Service, archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    location = tmp_path_factory.mktemp("rich-install") / "install"
    with registered(service, "rich", location, archives["tar.xz"]):
        yield "rich"


EXPORTS = [
    # (--format given or None, file name): the format comes from the option, else the name
    ("tar", "out.tar"),
    ("tar.gz", "out.tar.gz"),
    ("tar.xz", "out.tar.xz"),
    ("tar.zst", "out.tar.zst"),
    (None, "by-name.tar.gz"),
    (None, "by-name.tar.xz"),
    (None, "by-name.tar.zst"),
    (None, "by-name.wsl"),
    (None, "by-name.tar"),
    ("tar.zst", "misnamed.tar.gz"),
]


@pytest.mark.parametrize(("fmt", "filename"), EXPORTS)
def test_export_then_reimport(
    service: Service, rich_distribution: str, expected: TreeSum, tmp_path: Path,
    fmt: str | None, filename: str,
) -> None:  # fmt: skip
    out = tmp_path / filename
    args = ["--export", rich_distribution, str(out)] + (["--format", fmt] if fmt else [])
    result = service.ok(*args)
    wanted = fmt or ("tar.gz" if filename.endswith(".wsl") else filename.split(".", 1)[1])
    assert result.out == f"Exported '{rich_distribution}' to {out} ({wanted}).\n"
    assert result.err == ""
    assert magic_of(out) == wanted
    assert sorted(os.listdir(tmp_path)) == [filename], "no temporary file is left beside it"
    # GNU tar (as root) unpacks exactly the tree that was imported ...
    assert_same(expected, archive_sum(out, tmp_path / "gnu"))
    # ... and so does lxss.
    name = f"re-{filename.replace('.', '_')}"
    with registered(service, name, tmp_path / "again", out) as again:
        assert again.err == "", "nothing is skipped the second time"
        assert_same(expected, rootfs_sum(rootfs_of(tmp_path / "again"), root_shift()))


def test_export_is_reproducible_and_goes_to_stdout(
    service: Service, rich_distribution: str, tmp_path: Path
) -> None:
    """Two exports of identical trees are the same bytes, whether written to a file or
    to stdout, and whichever copy of the tree they come from."""
    first = tmp_path / "first.tar"
    service.ok("--export", rich_distribution, str(first))
    piped = service.ok("--export", rich_distribution, "-")
    assert piped.stdout == first.read_bytes()
    assert piped.err == ""
    with registered(service, "copy", tmp_path / "copy", first):
        copy = service.ok("--export", "copy", "-", "--format", "tar")
    assert copy.stdout == first.read_bytes()


def test_failed_export_leaves_no_file(service: Service, tmp_path: Path) -> None:
    """A tree the worker cannot read fails the export; nothing appears at the path, and a
    file already there keeps its content."""
    location = tmp_path / "install"
    with registered(service, "unreadable", location, busybox_tarball(tmp_path)):
        # A file of a host uid outside root's mapping, mode 000: the worker (root of
        # the owner's user namespace) has no right to read it.
        shift = root_shift()
        unmapped = shift.sub_uid + shift.count + 1000
        secret = rootfs_of(location) / "etc/not-mapped"
        secret.write_text("x" * 100_000)
        os.chown(secret, unmapped, unmapped)
        os.chmod(secret, 0)
        outdir = tmp_path / "out"
        outdir.mkdir()
        for fmt in ("tar", "tar.zst"):
            new = outdir / f"new.{fmt}"
            assert_fails(service.lxss("--export", "unreadable", str(new), "--format", fmt),
                         "export failed")  # fmt: skip
            assert not new.exists()
        old = outdir / "old.tar"
        old.write_bytes(b"previous content")
        assert_fails(service.lxss("--export", "unreadable", str(old)), "export failed")
        assert old.read_bytes() == b"previous content"
        assert sorted(os.listdir(outdir)) == ["old.tar"]
        assert_fails(service.lxss("--export", "unreadable", str(outdir / "x.tar"), "--format",
                                  "rar"), "format")  # fmt: skip
        assert_fails(service.lxss("--export", "no-such", str(outdir / "y.tar")), "no-such")
        assert_fails(service.lxss("--export", "unreadable", str(tmp_path / "nodir/z.tar")),
                     "nodir")  # fmt: skip
        assert sorted(os.listdir(outdir)) == ["old.tar"]
        os.unlink(secret)  # so --unregister (as the owner) can remove the tree


def test_archive_streams_refuse_a_terminal(service: Service, tmp_path: Path) -> None:
    """`-` never reads an archive from, or writes one to, a terminal."""
    primary, secondary = os.openpty()
    try:
        importing = spawn_lxss(service, "--import", "tty", str(tmp_path / "i"), "-",
                               stdin=secondary, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
        _, err = importing.communicate(timeout=60)
        assert importing.returncode == FAILURE
        assert err.decode().splitlines() == [
            "lxss: refusing to read an archive from a terminal; pipe one in"
        ]
        with registered(service, "for-tty", tmp_path / "d", busybox_tarball(tmp_path)):
            exporting = spawn_lxss(service, "--export", "for-tty", "-", stdin=subprocess.DEVNULL,
                                   stdout=secondary, stderr=subprocess.PIPE)  # fmt: skip
            _, err = exporting.communicate(timeout=60)
            assert exporting.returncode == FAILURE
            assert err.decode().splitlines() == [
                "lxss: refusing to write an archive to a terminal; redirect stdout"
            ]
    finally:
        os.close(primary)
        os.close(secondary)
    assert registry_rows(service, "tty") == []
    assert not (tmp_path / "i").exists()


# What the importer keeps, skips and says --------------------------------------------------


def test_owners_beyond_the_mapping_become_root_with_a_warning(
    service: Service, tmp_path: Path
) -> None:
    members = minimal_linux()
    for name, uid in (("etc/high", 70_000), ("etc/edge", 65_535), ("etc/normal", 1000)):
        info = member(name)
        info.uid = info.gid = uid
        members.append((info, b"x"))
    archive = tmp_path / "owners.tar"
    archive.write_bytes(tar_bytes(members))
    shift = root_shift()
    with registered(service, "owners", tmp_path / "d", archive) as result:
        rootfs = rootfs_of(tmp_path / "d")
        assert result.err.splitlines() == [
            "lxss: warning: 1 file(s) kept as root: owner or group above 65535: etc/high"
        ]
        for name, ns_id in (("etc/high", 0), ("etc/edge", 65_535), ("etc/normal", 1000)):
            st = os.lstat(rootfs / name)
            assert (st.st_uid, st.st_gid) == (shift.uid_to_host(ns_id), shift.gid_to_host(ns_id))


def test_unsupported_and_special_members(service: Service, tmp_path: Path) -> None:
    """Block devices are skipped like character devices; a sparse file keeps its holes'
    content (zeros) and size."""
    members = minimal_linux()
    block = member("dev/sda", tarfile.BLKTYPE)
    block.devmajor, block.devminor = 8, 0
    members.append((block, None))
    archive = tmp_path / "special.tar"
    archive.write_bytes(tar_bytes(members))
    with registered(service, "special", tmp_path / "d", archive) as result:
        assert result.err.splitlines() == [
            "lxss: warning: 1 device node(s) skipped (a distribution cannot create them): dev/sda"
        ]
        assert not os.path.lexists(rootfs_of(tmp_path / "d") / "dev/sda")


@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_sparse_file_keeps_content_and_holes(
    service: Service, tmp_path: Path, tar_format: str
) -> None:
    source = tmp_path / "src"
    (source / "etc").mkdir(parents=True)
    (source / "etc/os-release").write_text("ID=sparse\n")
    with open(source / "etc/sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(5 << 20)
        f.write(b"tail")
        f.truncate(8 << 20)
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", f"--format={tar_format}", "--numeric-owner", "-C",
                    str(source), "-cf", str(archive), "."], check=True, timeout=60)  # fmt: skip
    with tarfile.open(archive) as t:
        assert t.getmember("./etc/sparse").issparse(), "GNU tar made no sparse member"
    with registered(service, f"sparse-{tar_format}", tmp_path / "d", archive):
        copy = rootfs_of(tmp_path / "d") / "etc/sparse"
        assert copy.read_bytes() == (source / "etc/sparse").read_bytes()
        assert os.stat(copy).st_blocks * 512 < 1 << 20, "the holes were written out"


def test_user_import_is_shifted_and_exports_back(
    service: Service, archives: dict[str, Path], expected: TreeSum, test_users: tuple[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """For a user, the distribution's root is the user and its other ids are the user's
    subordinate ones on the host; the export gives the distribution's own ids back."""
    user = User.named(test_users[0])
    with shared_dir() as work:
        archive = work / "rich.tar.zst"
        shutil.copyfile(archives["tar.zst"], archive)
        archive.chmod(0o644)
        location = Path(user.home) / "rich"
        with registered(service, "rich-user", location, archive, user=user.name) as result:
            device_warning(result.err)
            shift = IdShift.of(user.name, user.uid, user.gid)
            assert shift.sub_uid >= 65536, "a subordinate range, not host system ids"
            rootfs = rootfs_of(location)
            assert (rootfs.stat().st_uid, rootfs.stat().st_gid) == (user.uid, user.gid)
            su = (rootfs / "bin/su").stat()
            assert (su.st_uid, su.st_mode & 0o7777) == (user.uid, 0o4755)
            alice = (rootfs / "home/alice").stat()
            assert (alice.st_uid, alice.st_gid) == (shift.sub_uid + 999, shift.sub_gid + 999)
            assert_same(expected, rootfs_sum(rootfs, shift))
            exported = Path(user.home) / "rich-export.tar.gz"
            service.ok("--export", "rich-user", str(exported), user=user.name)
            assert exported.stat().st_uid == user.uid
            assert magic_of(exported) == "tar.gz"
            assert_same(expected, archive_sum(exported, tmp_path / "gnu"))
            exported.unlink()
        location.rmdir()


def test_debian_round_trip(service: Service, debian_tarball: Path, tmp_path: Path) -> None:
    """A real distribution (debootstrap's minbase): what lxss unpacks is what GNU tar
    unpacks, set-uid programs included, and its export unpacks to the same tree again."""
    whole = archive_sum(debian_tarball, tmp_path / "reference")
    devices = [e.path for e in whole.entries if e.kind in ("chr", "blk")]
    reference = whole.without(devices)
    setuid = [e.path for e in reference.entries if e.kind == "file" and e.mode & 0o4000]
    assert "usr/bin/su" in setuid, "the reference has set-uid programs to check"
    location = tmp_path / "install"
    with registered(service, "debian-rt", location, debian_tarball) as result:
        [warning] = result.err.splitlines()
        assert warning.startswith(f"lxss: warning: {len(devices)} device node(s) skipped"), warning
        [row] = registry_rows(service, "debian-rt")
        assert (row["os_id"], row["os_version_id"]) == ("debian", "12")
        assert_same(reference, rootfs_sum(rootfs_of(location), root_shift()))
        exported = tmp_path / "debian.tar.zst"
        service.ok("--export", "debian-rt", str(exported))
        assert_same(reference, archive_sum(exported, tmp_path / "exported"))


def test_exports_are_read_silently_by_gnu_tar_and_bsdtar(service: Service, tmp_path: Path) -> None:
    """An export's headers make neither GNU tar nor bsdtar print a word (no `hdrcharset`
    record GNU tar does not know), binary xattr values and names that are not UTF-8
    included, and the archive re-imports identically."""
    root = tmp_path / "odd"
    build_rich_tree(root)  # binary xattr values, non-ASCII names, a 400-byte path
    (root / os.fsdecode(b"srv/latin1-\xe9t\xe9.txt")).write_text("not UTF-8\n")
    (root / os.fsdecode(b"srv/link-\xff")).symlink_to(os.fsdecode(b"latin1-\xe9t\xe9.txt"))
    (root / ("srv/" + "long-é" * 30)).write_text("a long UTF-8 name\n")
    expected = tree_sum(root).without([DEVICE])
    archive = gnu_tar(root, tmp_path / "odd.tar", "tar")
    with registered(service, "odd", tmp_path / "loc", archive):
        out = tmp_path / "export.tar"
        service.ok("--export", "odd", str(out))
    for reader in (["tar", "--xattrs", "-tvf"], ["bsdtar", "-tvf"]):
        listed = subprocess.run([*reader, str(out)], capture_output=True, timeout=120, check=False)
        assert (listed.returncode, listed.stderr) == (0, b""), (reader, listed.stderr)
    assert_same(expected, archive_sum(out, tmp_path / "gnu"))
    with registered(service, "odd-again", tmp_path / "again", out) as again:
        assert again.err == ""
        assert_same(expected, rootfs_sum(rootfs_of(tmp_path / "again"), root_shift()))
