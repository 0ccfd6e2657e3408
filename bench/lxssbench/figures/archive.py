"""Import and export of a rootfs tarball, against plain GNU tar on the same data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..harness import Figure, Runner
from ..lab import Lab
from ..proc import timed_ms
from .common import PLAIN_ENV, command_row, guarded, lxss_cmd
from .registry import Spec, figure, result

IMPORTED = "bench-import"


def _fresh(path: Path) -> None:
    """Remove a previous sample's output and flush it all to disk (untimed): the
    write-back of one sample must not land in the time of the next."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.sync()


@figure(
    "import",
    "Import a rootfs tarball",
    unit="ms",
    better="lower",
    what="`lxss --import bench-import-N DIR/N TARBALL` against `tar -xf TARBALL` into a "
    "new empty directory each sample; all are removed at the end.",
)
def import_(lab: Lab, spec: Spec) -> Figure:
    """Every sample writes into a directory of its own, and nothing is deleted until the
    figure ends: ext4 skips inodes freed in the last minutes when it allocates new ones,
    so removing one sample's tree before the next makes that next sample's file creation
    many times slower (measured: `tar -x` of the same archive from 0.4 s to 6 s)."""
    s = lab.settings
    tarball, _tree, desc = lab.archive()
    dest = lab.work / "import-lxss"
    plain = lab.work / "import-tar"
    names: list[str] = []

    def lxss_row() -> Runner:
        lxss_cmd(lab, "--version")  # raises Unavailable when there is no lxss to run

        def measure() -> float:
            name = f"{IMPORTED}-{len(names)}"
            names.append(name)
            lab.lxss.track(name)
            target = dest / str(len(names))
            argv = lxss_cmd(lab, "--import", name, str(target), str(tarball))
            return timed_ms(argv, timeout=900, label="", env=PLAIN_ENV)

        return Runner("lxss", f"lxss --import {IMPORTED}-N DIR/N {tarball}", measure, subject=True)

    def tar_measure() -> float:
        target = plain / str(len(list(plain.iterdir())))
        target.mkdir()
        return timed_ms(["tar", "-C", str(target), "-xf", str(tarball)], timeout=900, label="")

    dest.mkdir(exist_ok=True)
    plain.mkdir(exist_ok=True)
    rows = [
        guarded("lxss", f"lxss --import {IMPORTED}-N DIR/N TARBALL", lxss_row, subject=True),
        Runner("tar -x", f"tar -C DIR/N -xf {tarball}", tar_measure),
    ]
    try:
        return result(spec, rows, runs=s.archive_runs, warmup=1, notes=[f"archive: {desc}"])
    finally:
        for name in names:
            lab.lxss.unregister(name)
        _fresh(dest)
        _fresh(plain)


def _export(lab: Lab, spec: Spec, fmt: str | None, tar_flags: str) -> Figure:
    s = lab.settings
    _tarball, tree, desc = lab.archive()
    suffix = fmt or "tar"
    out_lxss = lab.work / f"export-lxss.{suffix}"
    out_tar = lab.work / f"export-tar.{suffix}"

    def lxss_row() -> Runner:
        name = lab.archive_distro()
        argv = lxss_cmd(lab, "--export", name, str(out_lxss), *(["--format", fmt] if fmt else []))
        return command_row(
            "lxss", argv, timeout=900, subject=True, prepare=lambda: _fresh(out_lxss)
        )

    shown = f"lxss --export NAME FILE{' --format ' + fmt if fmt else ''}"
    rows = [
        guarded("lxss", shown, lxss_row, subject=True),
        command_row(
            f"tar -{tar_flags}",
            ["tar", "-C", str(tree), f"-{tar_flags}", str(out_tar), "."],
            timeout=900,
            prepare=lambda: _fresh(out_tar),
        ),
    ]
    try:
        return result(
            spec,
            rows,
            runs=s.archive_runs,
            warmup=1,
            notes=[f"archive: {desc}; the same tree as tar's source"],
        )
    finally:
        _fresh(out_lxss)
        _fresh(out_tar)


@figure(
    "export",
    "Export to tar",
    unit="ms",
    better="lower",
    what="`lxss --export NAME FILE` of the imported distribution against `tar -cf` of "
    "the same tree.",
)
def export(lab: Lab, spec: Spec) -> Figure:
    return _export(lab, spec, None, "cf")


@figure(
    "export-gz",
    "Export to tar.gz",
    unit="ms",
    better="lower",
    what="`lxss --export NAME FILE --format tar.gz` against `tar -czf` of the same tree.",
)
def export_gz(lab: Lab, spec: Spec) -> Figure:
    return _export(lab, spec, "tar.gz", "czf")
