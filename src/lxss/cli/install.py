"""--install (the built-in distribution for now) and --manage."""

from __future__ import annotations

import sys

from lxss.cli import manage as commands
from lxss.cli.errors import CommandError
from lxss.cli.parse import Launch, Management
from lxss.cli.service import connect

BUILTINS = ("busybox",)


def install(request: Management, for_uid: int | None) -> int:
    options = request.options
    source = request.args[0] if request.args else str(options.get("--distribution") or "busybox")
    if source not in BUILTINS:
        raise CommandError(
            f"'{source}' cannot be installed by name yet; the built-in distribution is "
            "busybox. Import others with: lxss --import NAME DIR FILE"
        )
    name = str(options.get("--name") or source)
    location = options.get("--location")
    with connect() as client:
        commands.register(
            client,
            name,
            commands.parse_version(options.get("--version")),
            str(location) if isinstance(location, str) else None,
            builtin=source,
            for_uid=for_uid,
        )
    commands.out(f"Installed '{name}'. Run it with: lxss -d {name}")
    if options.get("--no-launch"):
        return 0
    from lxss.cli.launch import launch

    sys.stdout.flush()
    shell = Launch()
    shell.distribution = name
    return launch(shell, for_uid)


def manage_distribution(request: Management, for_uid: int | None) -> int:
    """--manage NAME --set-default-user USER: the uid is asked of the distribution itself."""
    user = request.options.get("--set-default-user")
    if not isinstance(user, str):
        raise CommandError("--manage needs one of: --set-default-user USER")
    from lxss.cli.launch import lookup_uid

    uid = lookup_uid(request.args[0], user, for_uid)
    with connect() as client:
        client.call(
            "ConfigureDistribution",
            {"distribution": request.args[0], "defaultUid": uid, "forUid": for_uid},
        )
    commands.out(f"'{user}' (uid {uid}) is now the default user of '{request.args[0]}'.")
    return 0
