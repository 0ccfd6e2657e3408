"""How lxss words the service's errors: one line each, saying what went wrong and
what to do."""

from __future__ import annotations

from lxss.api.errors import VarlinkError

_TEXT = {
    "DistroNotFound": "there is no distribution named '{distribution}' (see: lxss --list)",
    "DefaultDistroNotFound": (
        "no distribution is installed; install one with: lxss --install busybox"
    ),
    "DistroNameAlreadyExists": (
        "a distribution named '{name}' already exists; choose another name"
    ),
    "InvalidDistributionName": (
        "invalid distribution name '{name}': use 1 to 256 letters, digits, '.', '_' or '-'"
    ),
    "InstallLocationInUse": "{path} is already the install location of another distribution",
    "ImportFailed": "import failed: {reason}",
    "BuildFailed": "cannot build {distribution}: {reason}",
    "NotALinuxDistribution": (
        "the archive is not a Linux distribution (it has neither /etc nor /bin/sh)"
    ),
    "ExportFailed": "export failed: {reason}",
    "MoveFailed": "move failed: {reason}",
    "InvalidState": ("'{distribution}' is busy ({state}); try again once that has finished"),
    "UserNotFound": "there is no user '{user}' in the distribution",
    "InvalidArgument": "invalid {parameter}: {reason}",
    "PermissionDenied": "permission denied: {reason}",
    "VersionNotSupported": "version {version} cannot be used: {reason}",
    "StartFailed": "'{distribution}' failed to start: {reason}",
    "LaunchFailed": "{reason}",
    "ServiceBusy": "lxssd is busy ({reason}); try again later",
    "TooManyDistributions": (
        "you have {count} distributions and this machine allows each user {limit} ([security]"
        " maxDistributionsPerUser in /etc/lxss.conf): unregister one first"
    ),
    "ExpectedMore": "lxssd has more replies than this lxss takes (is lxss older than lxssd?)",
    "InternalError": "lxssd failed: {reason} (its log has the details)",
    "InvalidParameter": (
        "lxssd rejected the parameter '{parameter}' (are lxss and lxssd the same version?)"
    ),
    "MethodNotFound": "lxssd does not know {method} (are lxss and lxssd the same version?)",
    "MethodNotImplemented": "lxssd cannot do {method} in this build",
    "InterfaceNotFound": "lxssd does not serve {interface}",
}


def describe(error: VarlinkError) -> str:
    """The one line for *error* (not yet escaped: lxss.cli.main.fail escapes what it prints)."""
    template = _TEXT.get(error.short_name)
    if template is None:
        return f"lxssd answered {error.name} {error.parameters}"
    try:
        return template.format(**error.parameters)
    except (KeyError, IndexError):
        return f"{template.split(':')[0]} ({error.parameters})"
