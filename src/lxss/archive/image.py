"""An image config's defaults, applied to the unpacked tree (in the archive worker,
chrooted into it).

WSL has a default user per distribution but no per-distribution environment or
start directory, so:

- `User` becomes the default uid when it resolves in the image's own /etc/passwd
  (a name, or a number; a `:group` part is dropped: WSL's default user takes the
  user's own groups). Numbers above 65535 cannot be mapped and are refused.
- `Env` is written to /etc/profile.d/00-lxss-image-env.sh, which every login shell
  reads (lxss starts shells as login shells, as WSL does). Variables a login sets
  per user (HOME, USER, LOGNAME, SHELL, PWD, TERM) are left out. When the image
  has no /etc/profile (a bare busybox), one is written that reads /etc/profile.d.
- `WorkingDir` has no equivalent (WSL starts in the caller's directory, or home
  with `~`); it is recorded in that file as LXSS_IMAGE_WORKDIR, for scripts.
"""

from __future__ import annotations

import os
import shlex
from typing import Final

from lxss.guest.users import MAX_DATABASE_BYTES, parse_passwd
from lxss.linux.files import read_regular_file

ENV_SCRIPT: Final = "etc/profile.d/00-lxss-image-env.sh"
PER_LOGIN: Final = frozenset({"HOME", "USER", "LOGNAME", "SHELL", "PWD", "TERM"})
MAX_UID: Final = 65535  # the ids a distribution's user namespace maps

_PROFILE: Final = """\
# Written by lxss: the image had no /etc/profile. Login shells read this.
for script in /etc/profile.d/*.sh; do
    [ -r "$script" ] && . "$script"
done
unset script
"""


def env_script(env: list[str], working_dir: str) -> str:
    """The shell text exporting *env* (NAME=value entries) and the working directory."""
    lines = ["# Written by lxss from the container image's config (Env, WorkingDir)."]
    for entry in env:
        name, _, value = entry.partition("=")
        if name in PER_LOGIN or not name.isidentifier() or not name.isascii():
            continue
        lines.append(f"export {name}={shlex.quote(value)}")
    if working_dir:
        lines.append(f"export LXSS_IMAGE_WORKDIR={shlex.quote(working_dir)}")
    return "\n".join(lines) + "\n"


def resolve_user(spec: str, passwd: str) -> int | None:
    """The uid the config's User names in *passwd*'s text, or None."""
    name = spec.split(":", 1)[0]
    if not name:
        return None
    for user in parse_passwd(passwd):
        if user.name == name:
            return user.uid
    return int(name) if name.isdigit() and len(name) < 10 else None


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)  # whatever the image put there (a symlink too) is replaced
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    with open(fd, "w") as f:
        f.write(text)


def apply(env: list[str], user: str, working_dir: str) -> tuple[int | None, list[str]]:
    """Apply the config at "/": returns (default uid or None, warnings)."""
    warnings: list[str] = []
    if env or working_dir:
        if not os.path.lexists("etc/profile"):
            _write("etc/profile", _PROFILE)
        _write(ENV_SCRIPT, env_script(env, working_dir))
    if not user:
        return None, warnings
    uid = resolve_user(user, read_regular_file("etc/passwd", MAX_DATABASE_BYTES) or "")
    if uid is None:
        warnings.append(
            f"the image's user '{user}' is not in its /etc/passwd: the default user is root"
        )
    elif uid > MAX_UID:
        warnings.append(
            f"the image's user '{user}' has uid {uid}, above {MAX_UID}: the default user is root"
        )
        uid = None
    return uid, warnings
