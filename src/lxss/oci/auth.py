"""Registry authentication: WWW-Authenticate challenges and stored credentials.

Credentials are read where podman and docker keep them, first found wins:
$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json, then $DOCKER_CONFIG/config.json
(~/.docker/config.json). Only inline `auth` entries are used: credential
helpers (`credsStore`, `credHelpers`) would run programs, and are not.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import Final

from lxss.linux.files import read_regular_file
from lxss.oci.reference import DOCKER_HUB

MAX_AUTH_FILE: Final = 1 << 20
_PARAM: Final = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?'
)
_DOCKER_HUB_KEYS: Final = (
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1/",
)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer'|'basic'|..., parameters) of a WWW-Authenticate header (RFC 7235);
    ('', {}) when it names no scheme."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    if not scheme or "=" in scheme:
        return "", {}
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        pos = match.end()
    return scheme.lower(), params


def _keys_for(registry: str) -> tuple[str, ...]:
    if registry == DOCKER_HUB:
        return _DOCKER_HUB_KEYS
    return (registry,)


def _normalise_key(key: str) -> str:
    """A config key ("https://host/v1/", "host", "host/namespace") reduced to its host."""
    key = key.removeprefix("https://").removeprefix("http://")
    return key.split("/", 1)[0]


def lookup(auths: object, registry: str) -> tuple[str, str] | None:
    """(user, password) for *registry* in an `auths` mapping, or None."""
    if not isinstance(auths, dict):
        return None
    wanted = {_normalise_key(k) for k in _keys_for(registry)} | set(_keys_for(registry))
    for key, entry in auths.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            continue
        if key not in wanted and _normalise_key(key) not in wanted:
            continue
        encoded = entry.get("auth")
        if not isinstance(encoded, str):
            continue
        try:
            user, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            continue
        if colon:
            return user, password
    return None


def credential_files() -> list[str]:
    home = os.path.expanduser("~")
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    files.append(os.path.join(home, ".config", "containers", "auth.json"))
    docker = os.environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    files.append(os.path.join(docker, "config.json"))
    return files


def credentials(registry: str) -> tuple[str, str] | None:
    """The user's stored (user, password) for *registry*, or None."""
    for path in credential_files():
        text = read_regular_file(path, MAX_AUTH_FILE)
        if text is None:
            continue
        try:
            document = json.loads(text)
        except ValueError:
            continue
        if isinstance(document, dict):
            found = lookup(document.get("auths"), registry)
            if found is not None:
                return found
    return None


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
