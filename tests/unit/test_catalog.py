"""Distribution catalogs in WSL's manifest format (lxss.catalog): parsing, the machine's
architecture, name lookup, the Default, the append list's precedence and the listing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lxss.catalog import (
    CatalogError,
    Image,
    default_name,
    listing,
    lookup,
    parse_catalog,
)

A = "a" * 64
B = "b" * 64


def _image(name: str, sha: str = A) -> dict[str, str]:
    return {"Url": f"https://example.test/{name}.wsl", "Sha256": sha}


def _manifest(**extra: Any) -> dict[str, Any]:
    return {
        "ModernDistributions": {
            "Debian": [
                {"Name": "Debian", "FriendlyName": "Debian GNU/Linux", "Default": True,
                 "Amd64Url": _image("debian"), "Arm64Url": _image("debian-arm", B)},
            ],
            "Ubuntu": [
                {"Name": "Ubuntu-22.04", "FriendlyName": "Ubuntu 22.04 LTS",
                 "Amd64Url": _image("u22")},
                {"Name": "Ubuntu-24.04", "FriendlyName": "Ubuntu 24.04 LTS", "Default": True,
                 "Amd64Url": _image("u24")},
                {"Name": "Ubuntu-arm-only", "Arm64Url": _image("uarm")},
            ],
        },
        "Distributions": [
            {"Name": "Legacy", "FriendlyName": "Old one", "Amd64": True, "Arm64": False,
             "Amd64PackageUrl": "https://example.test/legacy.appxbundle"},
            {"Name": "ArmLegacy", "Amd64": False, "Arm64": True},
        ],
        **extra,
    }  # fmt: skip


def _parse(document: Any, arch: str = "Amd64", origin: str = "file:///c.json") -> Any:
    return parse_catalog(json.dumps(document), origin, arch)


def test_modern_entries_for_the_machines_architecture() -> None:
    catalog = _parse(_manifest(Default="Debian"))
    assert [e.name for e in catalog.modern] == ["Debian", "Ubuntu-22.04", "Ubuntu-24.04"]
    debian = catalog.modern[0]
    assert (debian.family, debian.friendly_name, debian.default) == (
        "Debian", "Debian GNU/Linux", True,
    )  # fmt: skip
    assert debian.image == Image("https://example.test/debian.wsl", A)
    assert catalog.default == "Debian"
    assert [e.name for e in catalog.legacy] == ["Legacy"]
    assert catalog.legacy[0].image is None
    arm = _parse(_manifest(), arch="Arm64")
    assert [e.name for e in arm.modern] == ["Debian", "Ubuntu-arm-only"]
    assert arm.modern[0].image == Image("https://example.test/debian-arm.wsl", B)
    assert arm.modern[1].friendly_name == "Ubuntu-arm-only"  # no FriendlyName: the Name


def test_sha256_takes_wsls_0x_prefix_and_any_case() -> None:
    document = _manifest()
    document["ModernDistributions"]["Debian"][0]["Amd64Url"]["Sha256"] = "0x" + "AB" * 32
    assert _parse(document).modern[0].image.sha256 == "ab" * 32


def test_without_a_default_the_first_legacy_entry_is_it() -> None:
    assert _parse(_manifest()).default == "Legacy"
    assert _parse({"ModernDistributions": {}}).default is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["ModernDistributions"]["Debian"][0]["Amd64Url"].update(Sha256="xyz"),
         "ModernDistributions.Debian[0].Amd64Url.Sha256 must be a SHA-256 in hex"),
        (lambda d: d["ModernDistributions"]["Debian"][0]["Amd64Url"].pop("Url"),
         "ModernDistributions.Debian[0].Amd64Url.Url must be a non-empty string"),
        (lambda d: d["ModernDistributions"]["Debian"][0].update(Name=3),
         "ModernDistributions.Debian[0].Name must be a non-empty string"),
        (lambda d: d["ModernDistributions"]["Debian"][0].update(Default="yes"),
         "ModernDistributions.Debian[0].Default must be true or false"),
        (lambda d: d["ModernDistributions"].update(Debian={}),
         "ModernDistributions.Debian must be a list of distributions"),
        (lambda d: d.update(ModernDistributions=[]),
         "ModernDistributions must be an object of families"),
        (lambda d: d.update(Distributions={}), "Distributions must be a list"),
        (lambda d: d["Distributions"].append("x"), "Distributions[2] must be an object"),
        (lambda d: d.update(Default=""), "Default must be a non-empty string"),
        # An image for another architecture is checked too: the catalog is wrong either way.
        (lambda d: d["ModernDistributions"]["Debian"][0]["Arm64Url"].update(Sha256=""),
         "ModernDistributions.Debian[0].Arm64Url.Sha256 must be a non-empty string"),
    ],
)  # fmt: skip
def test_malformed_catalogs_say_where(change: Any, message: str) -> None:
    document = _manifest()
    change(document)
    with pytest.raises(CatalogError) as raised:
        _parse(document)
    assert str(raised.value).startswith("the distribution catalog file:///c.json is malformed: ")
    assert message in str(raised.value)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"x"', b"\xff\xfe"])
def test_not_a_catalog_at_all(text: str | bytes) -> None:
    with pytest.raises(CatalogError, match=r"file:///c\.json is not"):
        parse_catalog(text, "file:///c.json", "Amd64")


def test_lookup_by_name_or_family_ignoring_case() -> None:
    catalogs = [_parse(_manifest())]
    assert lookup(catalogs, "ubuntu-22.04").name == "Ubuntu-22.04"
    assert lookup(catalogs, "UBUNTU").name == "Ubuntu-24.04"  # the family's Default
    assert lookup(catalogs, "debian").name == "Debian"
    assert lookup(catalogs, "legacy").image is None
    with pytest.raises(CatalogError, match="no distribution named 'Fedora'"):
        lookup(catalogs, "Fedora")
    with pytest.raises(CatalogError, match="no distribution named 'Ubuntu-arm-only'"):
        lookup(catalogs, "Ubuntu-arm-only")  # not for this machine


def test_a_family_without_a_default_version_is_not_a_name() -> None:
    document = {"ModernDistributions": {"Fam": [{"Name": "Fam-1", "Amd64Url": _image("f")}]}}
    with pytest.raises(CatalogError):
        lookup([_parse(document)], "Fam")


def _append_list() -> dict[str, Any]:
    return {
        "Default": "Mine",
        "ModernDistributions": {
            "Debian": [{"Name": "Debian", "FriendlyName": "Our Debian", "Default": True,
                        "Amd64Url": _image("our-debian", B)}],
            "Mine": [{"Name": "Mine", "Default": True, "Amd64Url": _image("mine")}],
        },
    }  # fmt: skip


def test_the_append_list_wins() -> None:
    main = _parse(_manifest(Default="Debian"), origin="https://main.test/c.json")
    append = _parse(_append_list(), origin="file:///append.json")
    catalogs = [append, main]
    debian = lookup(catalogs, "Debian")
    assert (debian.friendly_name, debian.origin) == ("Our Debian", "file:///append.json")
    assert lookup(catalogs, "Ubuntu").origin == "https://main.test/c.json"
    assert default_name(catalogs) == "Mine"
    assert default_name([main]) == "Debian"
    assert [(e.name, e.origin.split("/")[2]) for e in listing(catalogs)] == [
        ("Debian", ""),  # the main list's place, the append list's entry (file:///: no host)
        ("Ubuntu-22.04", "main.test"),
        ("Ubuntu-24.04", "main.test"),
        ("Legacy", "main.test"),
        ("Mine", ""),
    ]


def test_listing_names_each_distribution_once() -> None:
    document = _manifest()
    document["Distributions"].append({"Name": "debian", "Amd64": True})  # legacy twin
    names = [e.name for e in listing([_parse(document)])]
    assert names == ["Debian", "Ubuntu-22.04", "Ubuntu-24.04", "Legacy"]


def test_no_default_anywhere() -> None:
    with pytest.raises(CatalogError, match="names no Default"):
        default_name([_parse({"ModernDistributions": {}})])
