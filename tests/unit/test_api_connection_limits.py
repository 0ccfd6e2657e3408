"""Who may open another connection to the service (lxss.api.server.Limits.refusal), and
the descriptor limit the systemd unit gives it."""

from __future__ import annotations

from pathlib import Path

from lxss.api.server import Limits

LIMITS = Limits(per_owner_connections=4, connections=10, reserve=3)
UNIT = Path(__file__).resolve().parents[2] / "data" / "systemd" / "lxssd.service"


def test_a_user_is_capped_with_its_subordinate_ids() -> None:
    assert LIMITS.refusal(1000, of_owner=3, total=3) is None
    assert LIMITS.refusal(1000, of_owner=4, total=4) == "too many connections of this user"


def test_users_leave_the_reserve_to_root() -> None:
    # Two users at 3 and 4: 7 of 10, the last 3 are root's.
    assert LIMITS.refusal(1001, of_owner=0, total=6) is None
    refusal = LIMITS.refusal(1002, of_owner=0, total=7)
    assert refusal is not None and "root" in refusal
    assert LIMITS.refusal(0, of_owner=0, total=7) is None
    assert LIMITS.refusal(0, of_owner=9, total=9) is None  # root has no per-user cap


def test_nobody_passes_the_total() -> None:
    assert LIMITS.refusal(0, of_owner=0, total=10) == "too many connections"


def test_the_unit_raises_the_descriptor_limit() -> None:
    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line)
    assert int(settings["LimitNOFILE"]) >= 65536
