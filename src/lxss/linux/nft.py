"""nftables: lxss's rule sets, each a table of its own, loaded and removed whole.

Through nft(8) (`nft -f -`: one script, applied atomically or not at all). A host without
nft but with iptables-nft (the same kernel tables, driven by iptables' syntax) gets the one
rule lxss needs most, masquerading, through it instead: `IptablesRule` below.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Final

TIMEOUT: Final = 30.0


class NftError(OSError):
    pass


def _run(argv: list[str], script: str | None, what: str) -> str:
    try:
        done = subprocess.run(
            argv, input=script, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NftError(f"{what}: {argv[0]}: {e}") from e
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise NftError(f"{what}: {detail[-1] if detail else f'{argv[0]} failed'}")
    return done.stdout


def have_nft() -> bool:
    return shutil.which("nft") is not None


def load(script: str, what: str) -> None:
    """Apply an nft script (all of it, or nothing)."""
    _run(["nft", "-f", "-"], script, what)


def tables() -> set[tuple[str, str]]:
    """(family, name) of every table in the caller's network namespace."""
    found = set()
    for line in _run(["nft", "list", "tables"], None, "listing nftables tables").splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table":
            found.add((words[1], words[2]))
    return found


def delete_table(family: str, name: str) -> bool:
    """Remove a table; False when there was none."""
    if (family, name) not in tables():
        return False
    _run(["nft", "delete", "table", family, name], None, f"removing the table {family} {name}")
    return True


@dataclass(frozen=True)
class IptablesRule:
    """One rule added with iptables-nft, tagged with a comment so that it can be found and
    removed by what it is for."""

    table: str
    chain: str
    spec: tuple[str, ...]
    tag: str

    def _argv(self, action: str) -> list[str]:
        tagged = [*self.spec, "-m", "comment", "--comment", self.tag]
        return ["iptables-nft", "-w", "-t", self.table, action, self.chain, *tagged]

    def add(self) -> None:
        _run(self._argv("-A"), None, f"adding the iptables rule {self.tag}")

    def remove(self) -> bool:
        """Remove every copy of the rule; False if there was none."""
        removed = False
        while True:
            try:
                _run(self._argv("-D"), None, f"removing the iptables rule {self.tag}")
            except NftError:
                return removed
            removed = True


def have_iptables_nft() -> bool:
    return shutil.which("iptables-nft") is not None
