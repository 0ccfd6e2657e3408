"""Who a distribution's default user is, read from its tree before it starts.

The default user is the one that acts as the owner on the host (lxss.linux.idmap), so it
must be known before the distribution's user namespace is made: it is /etc/wsl.conf's
`[user] default` when that names a user of the distribution's /etc/passwd, else the
registry's default uid. Its group is its primary group there (the uid itself when the
uid has no entry: useradd's usual "one group per user").

The tree is read through a descriptor of its (not yet mounted) root with openat2's
RESOLVE_IN_ROOT: its symlinks resolve inside it, never on the host. Guest roles import
this before pivot_root.
"""

from __future__ import annotations

from lxss.config.wslconf import WSL_CONF_PATH, load_wsl_conf
from lxss.guest.users import MAX_DATABASE_BYTES, User, parse_passwd
from lxss.linux import syscalls as sc
from lxss.linux.files import OPEN_FLAGS, load_opened_file


def read_in_tree(root_fd: int, path: str, limit: int) -> str | None:
    """The text of *path* inside the tree at *root_fd*, or None if it cannot be read."""
    try:
        fd = sc.openat2(
            root_fd, path.lstrip("/"), OPEN_FLAGS, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
        )
        return load_opened_file(fd, path, limit)
    except OSError:
        return None


def default_ids(root_fd: int, registry_uid: int) -> tuple[int, int]:
    """(uid, gid) of the default user of the tree at *root_fd*."""
    conf, _ = load_wsl_conf(read_in_tree(root_fd, WSL_CONF_PATH, 1 << 20))
    users = parse_passwd(read_in_tree(root_fd, "/etc/passwd", MAX_DATABASE_BYTES) or "")
    return choose_default(users, conf.user_default, registry_uid)


def choose_default(users: list[User], conf_user: str | None, registry_uid: int) -> tuple[int, int]:
    """The rule above, on parsed users (pure, for tests)."""
    chosen: User | None = None
    if conf_user:
        chosen = next((u for u in users if u.name == conf_user), None)
        if chosen is None and conf_user.isdigit():
            chosen = next((u for u in users if u.uid == int(conf_user)), None)
    if chosen is None:
        chosen = next((u for u in users if u.uid == registry_uid), None)
    if chosen is None:
        return registry_uid, registry_uid
    return chosen.uid, chosen.gid
