"""Distribution catalogs in the format of WSL's distribution manifest: parsing and selection.

WSL counterpart: `DistributionInfo.json` as `wsl --list --online` and `wsl --install NAME`
read it (src/windows/common/Distribution.cpp). A catalog is a JSON object with

- `ModernDistributions`: families (``"Debian": [...]``) of entries, each with `Name`,
  `FriendlyName`, an optional `Default` (the family's default version) and, per architecture,
  `Amd64Url`/`Arm64Url` = ``{"Url": ..., "Sha256": ...}``: a `.wsl` image (a rootfs tarball)
  and its SHA-256 (hex, optionally written with WSL's ``0x`` prefix);
- `Distributions`: the legacy list (`Name`, `FriendlyName`, `Amd64`/`Arm64` booleans,
  `Amd64PackageUrl`, ... naming Microsoft Store packages): listed, but not installable here;
- `Default`: the name `lxss --install` installs when given none (without it, the first legacy
  entry, as WSL does).

Names match case-insensitively, as in WSL: an entry's `Name`, or a family's name, which means
that family's `Default` entry; modern entries before legacy ones. A second catalog
(`distributionListUrlAppend`) is consulted first, so its entries win over the main one's.
Entries without an image for the machine's architecture are left out, as WSL leaves them.

Pure: text in, objects out; fetching is lxss.cli.catalog_install's. Every malformed value
raises CatalogError naming where it is (``ModernDistributions.Debian[0].Amd64Url.Sha256``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lxss.errors import LxssError
from lxss.jsondoc import load_object

# The manifest's architecture key prefixes, by the kernel's name for the machine.
ARCHITECTURES = {"x86_64": "Amd64", "amd64": "Amd64", "aarch64": "Arm64", "arm64": "Arm64"}


class CatalogError(LxssError):
    """A catalog that cannot be read, or a name it cannot give; the message says which."""


@dataclass(frozen=True)
class Image:
    """A distribution image: where to get it and the SHA-256 (lower-case hex) it must have."""

    url: str
    sha256: str


@dataclass(frozen=True)
class Entry:
    """One installable (modern) or listed-only (legacy) distribution of a catalog."""

    name: str
    friendly_name: str
    family: str | None  # the ModernDistributions key; None for a legacy entry
    default: bool  # the family's default version (False for legacy entries)
    image: Image | None  # for this machine's architecture; None for a legacy entry
    origin: str  # the catalog's URL, for messages


@dataclass(frozen=True)
class Catalog:
    default: str | None
    modern: tuple[Entry, ...]  # in the catalog's order, family by family
    legacy: tuple[Entry, ...]
    origin: str


def machine_architecture() -> str:
    """The manifest's prefix for this machine ("Amd64", "Arm64"); CatalogError on others."""
    machine = os.uname().machine
    try:
        return ARCHITECTURES[machine]
    except KeyError:
        raise CatalogError(f"distribution catalogs have no images for {machine} machines") from None


def _string(value: object, where: str, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{where} must be a non-empty string")
    return value


def _sha256(value: object, where: str) -> str:
    text = _string(value, where).lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise CatalogError(f"{where} must be a SHA-256 in hex (64 digits), not {value!r}")
    return text


def _image(value: object, where: str) -> Image:
    if not isinstance(value, dict):
        raise CatalogError(f"{where} must be an object with Url and Sha256")
    return Image(
        _string(value.get("Url"), f"{where}.Url"), _sha256(value.get("Sha256"), f"{where}.Sha256")
    )


def _modern(families: object, arch: str, origin: str) -> list[Entry]:
    if not isinstance(families, dict):
        raise CatalogError("ModernDistributions must be an object of families")
    entries = []
    for family, versions in families.items():
        where = f"ModernDistributions.{family}"
        if not isinstance(versions, list):
            raise CatalogError(f"{where} must be a list of distributions")
        for index, version in enumerate(versions):
            at = f"{where}[{index}]"
            if not isinstance(version, dict):
                raise CatalogError(f"{at} must be an object")
            name = _string(version.get("Name"), f"{at}.Name")
            default = version.get("Default", False)
            if not isinstance(default, bool):
                raise CatalogError(f"{at}.Default must be true or false")
            images = {key: version.get(f"{key}Url") for key in ("Amd64", "Arm64")}
            checked = {k: _image(v, f"{at}.{k}Url") for k, v in images.items() if v is not None}
            if arch not in checked:
                continue  # nothing for this machine: WSL does not list it either
            friendly = _string(version.get("FriendlyName"), f"{at}.FriendlyName", optional=True)
            entries.append(Entry(name, friendly or name, family, default, checked[arch], origin))
    return entries


def _legacy(distributions: object, arch: str, origin: str) -> list[Entry]:
    if not isinstance(distributions, list):
        raise CatalogError("Distributions must be a list")
    entries = []
    for index, distribution in enumerate(distributions):
        at = f"Distributions[{index}]"
        if not isinstance(distribution, dict):
            raise CatalogError(f"{at} must be an object")
        name = _string(distribution.get("Name"), f"{at}.Name")
        if distribution.get(arch) is not True:
            continue
        friendly = _string(distribution.get("FriendlyName"), f"{at}.FriendlyName", optional=True)
        entries.append(Entry(name, friendly or name, None, False, None, origin))
    return entries


def parse_catalog(text: str | bytes, origin: str, arch: str) -> Catalog:
    """The catalog in `text` (fetched from `origin`), keeping what `arch` can install."""
    try:
        document = load_object(text)
    except ValueError as e:
        raise CatalogError(f"the distribution catalog {origin} {e}") from None
    try:
        modern = _modern(document.get("ModernDistributions", {}), arch, origin)
        legacy = _legacy(document.get("Distributions", []), arch, origin)
        default = document.get("Default")
        if default is not None:
            default = _string(default, "Default")
    except CatalogError as e:
        raise CatalogError(f"the distribution catalog {origin} is malformed: {e}") from None
    if default is None and legacy:
        default = legacy[0].name
    return Catalog(default, tuple(modern), tuple(legacy), origin)


def _find(catalog: Catalog, name: str) -> Entry | None:
    wanted = name.casefold()
    for entry in catalog.modern:
        if entry.name.casefold() == wanted:
            return entry
        if entry.default and entry.family is not None and entry.family.casefold() == wanted:
            return entry
    for entry in catalog.legacy:
        if entry.name.casefold() == wanted:
            return entry
    return None


def lookup(catalogs: list[Catalog], name: str) -> Entry:
    """The entry `name` means: the first catalog that has it wins (the append list first)."""
    for catalog in catalogs:
        found = _find(catalog, name)
        if found is not None:
            return found
    raise CatalogError(f"no distribution named '{name}' in the catalog (see: lxss --list --online)")


def default_name(catalogs: list[Catalog]) -> str:
    """What a bare `lxss --install` installs: the first catalog's `Default` that is set."""
    for catalog in catalogs:
        if catalog.default is not None:
            return catalog.default
    raise CatalogError("the distribution catalog names no Default; say which to install")


def listing(catalogs: list[Catalog]) -> list[Entry]:
    """Every name once, for --list --online: the last (main) catalog's order, an entry
    replaced in place by an earlier catalog's of the same name, then the earlier catalogs'
    new entries. Within one catalog the first of a name wins (modern before legacy), as
    lookup() reads it."""
    entries: list[Entry] = []
    position: dict[str, int] = {}
    for catalog in reversed(catalogs):
        this_catalog: set[str] = set()
        for entry in (*catalog.modern, *catalog.legacy):
            key = entry.name.casefold()
            if key in this_catalog:
                continue
            this_catalog.add(key)
            if key in position:
                entries[position[key]] = entry
            else:
                position[key] = len(entries)
                entries.append(entry)
    return entries
