"""The VM spec: what a utility VM is given (WSL hands HCS a JSON document of this kind).

Both backends read the same spec; the namespace backend turns memory, processors
and the process limit into cgroup limits, the QEMU backend into -m and -smp.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

# WSL's networking modes, by their LX_MINI_INIT_NETWORKING_MODE numbers.
NETWORKING_MODES: Final = {"None": 0, "Nat": 1, "Bridged": 2, "Mirrored": 3, "VirtioProxy": 4}


@dataclass(frozen=True)
class VmSpec:
    owner_uid: int
    memory_bytes: int
    processors: int
    pids_limit: int
    networking_mode: str = "Mirrored"
    localhost_forwarding: bool = True  # Nat mode: relay the VM's localhost listeners
    hostname: str = "localhost"
    kernel: str = ""
    kernel_command_line: str = ""
    boot_timeout_s: float = 30.0
    distribution_start_timeout_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VmSpec:
        return cls(**json.loads(text))

    @property
    def networking_mode_number(self) -> int:
        return NETWORKING_MODES.get(self.networking_mode, NETWORKING_MODES["Mirrored"])
