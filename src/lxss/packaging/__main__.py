"""Write the files a package or `setup.sh` installs around lxss into DIR:

    python3 -m lxss.packaging DIR

    DIR/man/lxss.1 lxssd.8 lxss.conf.5 wsl.conf.5
    DIR/completion/bash/lxss   DIR/completion/zsh/_lxss   DIR/completion/fish/lxss.fish
    DIR/lxss.conf              every key commented out at its default

All generated from the tables the programs themselves read (lxss.packaging.completion and
lxss.packaging.manpages say from which), at build time, so that they never fall behind.
"""

from __future__ import annotations

import os
import sys

from lxss.cli.main import USAGE as LXSS_USAGE
from lxss.config.lxssconf import LXSS_CONF_DOCS, LXSS_CONF_NOT_ACTED_ON, LXSS_CONF_SCHEMA
from lxss.config.wslconf import WSL_CONF_DOCS, WSL_CONF_NOT_ACTED_ON, WSL_CONF_SCHEMA
from lxss.packaging import completion, manpages
from lxss.service.main import USAGE as LXSSD_USAGE

LXSS_DESCRIPTION = """
lxss runs programs in Linux distributions kept by the lxss service, lxssd(8), and manages
those distributions. It speaks the command line of WSL's wsl.exe: `lxss` alone opens a login
shell in the default distribution, `lxss -- command` runs a command with $SHELL -c in it.

Each user has distributions of their own, in a utility VM of their own; root may act for
another user with --for-user. Programs get the caller's stdio: pipes and files are handed to
the program itself, a terminal becomes a pty inside the distribution.

A program's exit status is lxss's (death by signal N: 128+N). lxss's own failures print one
line, `lxss: what went wrong`, on stderr and exit with status 255.
"""

LXSS_TAIL = """
ENVIRONMENT
LXSSENV: a colon-separated list of further variables to pass into the distribution (HOME,
USER, LOGNAME, SHELL, PATH, LANG and TERM always are).

LXSS_DISABLE_WARNINGS=1 silences the warnings of the service and of distributions.

LXSS_RUNTIME_DIR: the directory of the service's socket (default /run/lxss).


FILES
~/.lxssconfig and /etc/lxss.conf: the settings of the user's utility VM, see lxss.conf(5).

/etc/wsl.conf inside a distribution: its own settings, see wsl.conf(5).


SEE ALSO
lxssd(8), lxss.conf(5), wsl.conf(5)
"""

LXSSD_DESCRIPTION = """
lxssd is the lxss service (WSL's wslservice): a root daemon that keeps each user's Linux
distributions and the utility VM they run in, and serves the lxss(1) command over a Unix
socket, /run/lxss/lxssd.sock. Who calls is read from the socket (SO_PEERCRED): a user sees
and changes only their own distributions.

systemd starts it through lxssd.socket; without systemd, lxss starts it on demand when root
runs a command and no service answers. SIGTERM or SIGINT stops every user's distributions
and utility VM, then the service.
"""

LXSSD_TAIL = """
ENVIRONMENT
LXSS_STATE_DIR (default /var/lib/lxss), LXSS_RUNTIME_DIR (default /run/lxss),
LXSS_CGROUP_NAME (default lxss) and LXSS_MACHINE_CONFIG (default /etc/lxss.conf) move the
service's state, its socket, its cgroup and the machine's settings, so that a second service
(a test's) keeps apart from the installed one.

LXSS_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR.


FILES
/var/lib/lxss: the registry of distributions (registry.sqlite) and, in one directory per
user id, the distributions installed without --location. Removing the package leaves them;
purging it says where they are and leaves them too.

/run/lxss: the socket, the instance lock and, when not under systemd, lxssd.log.

/etc/lxss.conf: the machine's settings, see lxss.conf(5).


SEE ALSO
lxss(1), lxss.conf(5), wsl.conf(5)
"""

LXSS_CONF_DESCRIPTION = """
The settings of a user's utility VM, in the keys of WSL's .wslconfig that apply to lxss.
/etc/lxss.conf holds the machine's defaults; each user's ~/.lxssconfig overrides them key by
key. The syntax is .wslconfig's: [section] lines, then key = value lines; # starts a comment.
Both files are read when the user's utility VM starts: `lxss --shutdown` makes a change take
effect. An unknown key or a bad value is a warning, and the rest of the file still applies.
"""

CONF_TAIL = """
SEE ALSO
lxss(1), lxssd(8), wsl.conf(5)
"""

WSL_CONF_DESCRIPTION = """
A distribution's own settings, in the file /etc/wsl.conf inside it, spelled as WSL spells
them so that a distribution made for WSL configures lxss unchanged. Read each time the
distribution starts (`lxss -t NAME` makes a change take effect). Where WSL's key names
Windows, lxss reads it as the host. An unknown key or a bad value is a warning, and the rest
of the file still applies.
"""

CONFFILE_HEADER = """
The machine's lxss settings, see lxss.conf(5). Each user's ~/.lxssconfig overrides them key
by key; a change takes effect when a user's utility VM next starts (lxss --shutdown).
Every key is commented out at its default: uncomment a line to set it.
"""


def generate() -> dict[str, str]:
    """Every generated file: its path under DIR -> its text."""
    return {
        "man/lxss.1": manpages.command_page(
            "lxss", 1, "run programs in Linux distributions, WSL's way",
            LXSS_USAGE, LXSS_DESCRIPTION, LXSS_TAIL,
        ),
        "man/lxssd.8": manpages.command_page(
            "lxssd", 8, "the lxss service", LXSSD_USAGE, LXSSD_DESCRIPTION, LXSSD_TAIL
        ),
        "man/lxss.conf.5": manpages.config_page(
            "lxss.conf", "settings of lxss's utility VMs (/etc/lxss.conf, ~/.lxssconfig)",
            LXSS_CONF_DESCRIPTION, list(LXSS_CONF_SCHEMA), LXSS_CONF_DOCS,
            LXSS_CONF_NOT_ACTED_ON, CONF_TAIL,
        ),
        "man/wsl.conf.5": manpages.config_page(
            "wsl.conf", "a distribution's settings, as lxss reads them",
            WSL_CONF_DESCRIPTION, list(WSL_CONF_SCHEMA), WSL_CONF_DOCS,
            WSL_CONF_NOT_ACTED_ON, CONF_TAIL,
        ),
        "completion/bash/lxss": completion.bash_script(),
        "completion/zsh/_lxss": completion.zsh_script(),
        "completion/fish/lxss.fish": completion.fish_script(),
        "lxss.conf": manpages.commented_config(
            list(LXSS_CONF_SCHEMA), LXSS_CONF_DOCS, CONFFILE_HEADER
        ),
    }  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m lxss.packaging DIR\n")
        return 2
    for relative, text in generate().items():
        path = os.path.join(argv[0], relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
