"""`lxss --list --online` and `lxss --install NAME` from the distribution catalogs.

WSL counterpart: `wsl --list --online` and `wsl --install` (src/windows/common/Distribution.cpp).
The catalogs' URLs are /etc/lxss.conf's `[general] distributionListUrl` and
`distributionListUrlAppend`; file://, http:// and https:// URLs (and plain absolute paths) are
read by the client, as the user, through the user's proxies. Parsing and choosing are
lxss.catalog's; the image is fetched by lxss.cli.download, then registered as --import
registers an archive.
"""

from __future__ import annotations

import os

from lxss.catalog import Catalog, CatalogError, Entry
from lxss.cli import manage as commands
from lxss.cli.errors import CommandError
from lxss.text import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxss.cli.install import InstallTarget

MAX_CATALOG = 16 << 20  # bytes: WSL's own manifest is about 20 KiB


def _machine_config_path() -> str:
    from lxss.config.lxssconf import MACHINE_CONFIG_PATH

    return os.environ.get("LXSS_MACHINE_CONFIG") or MACHINE_CONFIG_PATH


def fetch_text(url: str) -> bytes:
    """The body at `url` (file://, http://, https:// or an absolute path), at most 16 MiB."""
    import http.client

    from lxss.cli.download import open_url

    if url.startswith("/"):
        url = "file://" + url
    failure = f"cannot read the distribution catalog {url}"
    response = open_url(url, failure)
    assert response is not None  # only a ranged request gets None
    try:
        with response:
            body: bytes = response.read(MAX_CATALOG + 1)
    except (OSError, http.client.HTTPException) as e:
        raise CommandError(f"{failure}: {e or type(e).__name__}") from None
    if len(body) > MAX_CATALOG:
        raise CommandError(f"the distribution catalog {url} is larger than 16 MiB")
    return body


def load_catalogs() -> list[Catalog]:
    """The configured catalogs, the append list first (its entries win)."""
    from lxss.catalog import machine_architecture, parse_catalog
    from lxss.config.lxssconf import read_catalog_urls

    main, append, warnings = read_catalog_urls(_machine_config_path())
    commands.warn([str(w) for w in warnings])
    if not main and not append:
        raise CommandError(
            "no distribution catalog is configured: set distributionListUrl in the [general] "
            f"section of {_machine_config_path()} (lxss can install without one: "
            f"{_builtins()})"
        )
    arch = machine_architecture()
    return [parse_catalog(fetch_text(url), url, arch) for url in (append, main) if url]


def _builtins() -> str:
    from lxss.cli.install import installable

    return installable()


def list_online(options: dict[str, str | bool]) -> int:
    """--list --online: every installable name, the default marked; -q: names only."""
    from lxss.catalog import default_name, listing, lookup

    try:
        catalogs = load_catalogs()
        entries = listing(catalogs)
        try:
            default: Entry | None = lookup(catalogs, default_name(catalogs))
        except CatalogError:
            default = None
    except CatalogError as e:
        raise CommandError(str(e)) from None
    if options.get("--quiet"):
        for entry in entries:
            commands.out(one_line(entry.name))
        return 0
    if not entries:
        raise CommandError("the distribution catalog lists no distribution for this machine")
    commands.out("The following distributions can be installed with 'lxss --install NAME':")
    commands.out("")
    names = [one_line(entry.name) for entry in entries]
    width = max(len("NAME"), *(len(name) for name in names))
    commands.out(f"  {'NAME':<{width}}  FRIENDLY NAME")
    for entry, name in zip(entries, names, strict=True):
        mark = "*" if entry == default else " "
        friendly = one_line(entry.friendly_name)
        if entry.image is None:
            friendly += " (Microsoft Store package only: not installable here)"
        commands.out(f"{mark} {name:<{width}}  {friendly}")
    return 0


def install_from_catalog(source: str, target: InstallTarget) -> str:
    """`--install NAME` (or none: the catalog's Default): download, verify, register."""
    from lxss.catalog import default_name, lookup
    from lxss.cli.download import download_and_register

    try:
        catalogs = load_catalogs()
        name = source or default_name(catalogs)
        entry = lookup(catalogs, name)
    except CatalogError as e:
        raise CommandError(f"{e}; lxss can also install: {_builtins()}") from None
    if entry.image is None:
        raise CommandError(
            f"'{entry.name}' is in the catalog only as a Microsoft Store package (its legacy "
            "Distributions list), which lxss cannot install; choose one with an image "
            "(see: lxss --list --online)"
        )
    if len(catalogs) > 1 and entry.origin == catalogs[0].origin:
        _warn_if_overridden(catalogs, entry)
    _refuse_a_taken_name(target.name or entry.name, target.for_uid)
    label = f"Downloading {one_line(entry.friendly_name)}"
    return download_and_register(entry.image.url, entry.image.sha256, label, target.quiet,
                                 lambda fd: target.register(entry.name, stream_fd=fd))  # fmt: skip


def _refuse_a_taken_name(name: str, for_uid: int | None) -> None:
    """Fail before the download, not after it, when the name is taken (as WSL does); the
    service still decides at registration."""
    from lxss.cli.service import connect, registered_distributions

    with connect() as client:
        distributions = registered_distributions(client, for_uid)
    if any(d["name"].casefold() == name.casefold() for d in distributions):
        raise CommandError(
            f"a distribution named '{name}' already exists; choose another with --name NAME"
        )


def _warn_if_overridden(catalogs: list[Catalog], entry: Entry) -> None:
    from lxss.catalog import lookup

    try:
        lookup(catalogs[1:], entry.name)
    except CatalogError:
        return
    commands.warn([f"'{entry.name}' comes from {entry.origin} (distributionListUrlAppend), "
                   "which overrides the main catalog's entry"])  # fmt: skip
