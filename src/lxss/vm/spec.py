"""The VM spec: what a utility VM is given (WSL hands HCS a JSON document of this kind).

Both backends read the same spec; the namespace backend turns memory, processors
and the process limit into cgroup limits, the QEMU backend into -m and -smp. The spec is
the host's: the guest learns its settings from the guest protocol (EarlyConfig,
InitialConfig), never from this document.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from lxss.protocol.messages import NetworkingMode


@dataclass(frozen=True)
class VmSpec:
    owner_uid: int
    memory_bytes: int
    processors: int
    pids_limit: int
    networking_mode: NetworkingMode = NetworkingMode.MIRRORED
    localhost_forwarding: bool = True  # Nat mode: relay the VM's localhost listeners
    hostname: str = "localhost"
    kernel: str = ""
    kernel_command_line: str = ""
    boot_timeout_s: float = 30.0
    distribution_start_timeout_s: float = 60.0

    def to_json(self) -> str:
        document: dict[str, Any] = asdict(self)
        document["networking_mode"] = self.networking_mode.spelling
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VmSpec:
        document = json.loads(text)
        document["networking_mode"] = NetworkingMode.from_spelling(document["networking_mode"])
        return cls(**document)
