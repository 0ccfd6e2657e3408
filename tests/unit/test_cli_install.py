"""--install's choice of installer (lxss.cli.install): the table, the SOURCE's spellings,
and the names it gives by default."""

from __future__ import annotations

import importlib

import pytest

from lxss.cli import install
from lxss.cli.parse import Management, UsageError, parse


def test_every_installer_in_the_table_exists() -> None:
    for installer in (*(row[1] for row in install.INSTALLERS), install.FROM_FILE, install.CATALOG):
        module, function = installer.split(":")
        assert callable(getattr(importlib.import_module(module), function)), installer


def test_busybox_is_built_in_and_other_names_go_to_the_catalog() -> None:
    assert (
        install.choose_installer("busybox", from_file=False) == "lxss.cli.install:install_builtin"
    )
    assert install.choose_installer("Debian", from_file=False) == install.CATALOG
    assert install.choose_installer("busyboxes", from_file=False) == install.CATALOG
    assert install.choose_installer(None, from_file=False) == install.CATALOG
    assert install.choose_installer(None, from_file=True) == install.FROM_FILE


def test_a_prefix_row_takes_every_source_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = (*install.INSTALLERS, ("scheme://*", "tests:scheme", "scheme://REF"))
    monkeypatch.setattr(install, "INSTALLERS", rows)
    assert install.choose_installer("scheme://x/y:1", from_file=False) == "tests:scheme"
    assert install.choose_installer("scheme:/x", from_file=False) == install.CATALOG
    assert install.installable().endswith(", scheme://REF")
    assert install.installable().startswith("busybox, docker://IMAGE, oci:DIR[:TAG]")


def test_container_images_go_to_the_image_installer() -> None:
    for source in ("docker://debian", "oci:/x:1", "oci-archive:a.tar", "docker-archive:b.tar",
                   "containers-storage:debian"):  # fmt: skip
        assert install.choose_installer(source, from_file=False) == "lxss.cli.image:install_image"
    assert install.choose_installer("debian:bookworm", from_file=False) != (
        "lxss.cli.image:install_image"
    )


def test_debian_and_ubuntu_are_built_with_or_without_a_suite() -> None:
    for source in ("debian", "debian:trixie", "ubuntu", "ubuntu:jammy"):
        assert install.choose_installer(source, from_file=False) == "lxss.cli.install:install_built"
    # The catalogs' names (WSL spells them "Debian", "Ubuntu-24.04") stay the catalog's.
    assert install.choose_installer("Debian", from_file=False) == install.CATALOG
    assert install.choose_installer("debianish", from_file=False) == install.CATALOG


def _source(argv: list[str]) -> str | None:
    request = parse(argv).request
    assert isinstance(request, Management)
    return install._source(request)


def test_the_source_may_be_given_in_wsls_three_spellings() -> None:
    assert _source(["--install", "Debian"]) == "Debian"
    assert _source(["--install", "-d", "Debian"]) == "Debian"
    assert _source(["-d", "Debian", "--install"]) == "Debian"
    assert _source(["-d", "Debian", "--install", "Debian"]) == "Debian"
    assert _source(["--install"]) is None
    with pytest.raises(UsageError, match="two distributions: Debian and Ubuntu"):
        _source(["-d", "Debian", "--install", "Ubuntu"])


@pytest.mark.parametrize(
    ("path", "name"),
    [("/tmp/Debian-12.wsl", "Debian-12"), ("rootfs.tar.gz", "rootfs"), ("a.tar.zst", "a"),
     ("plain", "plain"), (".wsl", ".wsl"), ("dir/x.tar", "x")],
)  # fmt: skip
def test_from_file_names_the_distribution_after_the_file(path: str, name: str) -> None:
    assert install.default_name_of_file(path) == name
