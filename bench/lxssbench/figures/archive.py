"""Import and export of a rootfs tarball, against plain GNU tar on the same data."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..harness import Figure, Runner
from ..lab import Lab
from .common import command_row, guarded, lxss_cmd
from .registry import Spec, figure, result

IMPORTED = "bench-import"


def _fresh(path: Path) -> None:
    """Remove a previous sample's output (untimed)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@figure(
    "import",
    "Import a rootfs tarball",
    unit="ms",
    better="lower",
    what="`lxss --import bench-import DIR TARBALL` against `tar -xf TARBALL` into an "
    "empty directory; the previous sample is removed, untimed.",
)
def import_(lab: Lab, spec: Spec) -> Figure:
    s = lab.settings
    tarball, _tree, desc = lab.archive()
    dest = lab.work / "import-lxss"
    plain = lab.work / "import-tar"

    def lxss_row() -> Runner:
        argv = lxss_cmd(lab, "--import", IMPORTED, str(dest), str(tarball))
        lab.lxss.track(IMPORTED)

        def prepare() -> None:
            lab.lxss.run("--unregister", IMPORTED, timeout=300)
            _fresh(dest)
            dest.mkdir()

        return command_row("lxss", argv, timeout=900, subject=True, prepare=prepare)

    def tar_prepare() -> None:
        _fresh(plain)
        plain.mkdir()

    rows = [
        guarded("lxss", f"lxss --import {IMPORTED} DIR TARBALL", lxss_row, subject=True),
        command_row(
            "tar -x",
            ["tar", "-C", str(plain), "-xf", str(tarball)],
            timeout=900,
            prepare=tar_prepare,
        ),
    ]
    try:
        return result(spec, rows, runs=s.archive_runs, warmup=1, notes=[f"archive: {desc}"])
    finally:
        lab.lxss.unregister(IMPORTED)
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
