"""A hostile client of the guest protocol: launches programs in a distribution and feeds
their relays malformed frames on the control channel it hands over.

    python guest_garbage.py SOCKET DISTRIBUTION LAUNCHES FRAMES SEED SRC CORPUS

The control channel of CreateLxProcess is a socket the *client* provides: whatever the
client writes to it, the relay (inside the distribution) decodes. For each launch, the
client sends well-formed but odd frames (window sizes of 0 or 65535, signals that do not
exist or are harmless), numbered as the protocol wants, then one malformed frame (a seed
of the fuzz corpus, a mutated encoding of a real message, the wrong message type, a
wrong sequence number, descriptors nobody asked for, an absurd size, random bytes) and
sees whether the relay hangs up. Prints one JSON object: launches, frames sent, what the relays did.
"""

from __future__ import annotations

import array
import json
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HARMLESS_SIGNALS = (0, signal.SIGWINCH, signal.SIGURG, signal.SIGCONT, 65, 1000, -1, 2**31 - 1)


def varlink_call(sock: socket.socket, call: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    data = json.dumps(call).encode() + b"\0"
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    reply = b""
    while not reply.endswith(b"\0"):
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("lxssd closed the connection")
        reply += chunk
    result: dict[str, Any] = json.loads(reply[:-1])
    return result


def main(argv: list[str]) -> int:
    path, distribution = argv[0], argv[1]
    launches, frames, seed = int(argv[2]), int(argv[3]), int(argv[4])
    sys.path.insert(0, argv[5])
    from lxss.protocol import messages as m  # the client's copy of the codec

    seeds = [p.read_bytes()[1:] for p in sorted(Path(argv[6]).glob("*.bin"))]
    rng = random.Random(seed)
    samples = [
        m.InitCreateProcess(rows=1, columns=1, flags=0, shell_options=0, default_uid=0,
                            filename="/bin/sh", cwd="/", username="root",
                            command_line=("sh", "-c", "echo pwned"), environment=("A=b",),
                            distribution_name="x", host_cwd="/"),
        m.InitExitStatus(exit_code=0),
        m.MiniInitLaunchInit(distribution_name="x", guid="g", root_path="/", hostname="h",
                             flags=0, default_uid=0),
        m.InitTerminateInstance(force=True),
        m.InitWindowSizeChanged(rows=1, columns=1),
    ]  # fmt: skip

    def mutated() -> bytes:
        frame = bytearray(m.encode(rng.choice(samples), 1, 0))
        for _ in range(rng.randint(1, 8)):
            frame[rng.randrange(16, len(frame))] = rng.randrange(256)
        return bytes(frame)

    def absurd_size() -> bytes:
        size = rng.choice([0, 15, 17 << 20, 0xFFFFFFFF, 1 << 24])
        return (208).to_bytes(4, "little") + size.to_bytes(4, "little") + bytes(8)

    malformed: dict[str, Callable[[int], bytes]] = {
        "corpus": lambda seq: rng.choice(seeds),
        "mutated": lambda seq: mutated(),
        "wrong-type": lambda seq: m.encode(rng.choice(samples[:4]), seq, 0),
        "wrong-sequence": lambda seq: m.encode(
            m.InitWindowSizeChanged(rows=2, columns=2), seq + 5, 0
        ),
        "absurd-size": lambda seq: absurd_size(),
        "random": lambda seq: os.urandom(rng.randint(1, 300)),
        "descriptors": lambda seq: b"",  # sent with sendmsg below
    }
    outcomes: dict[str, dict[str, int]] = {}
    sent = 0
    null = os.open("/dev/null", os.O_RDWR)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as service:
        service.settimeout(60)
        service.connect(path)
        for launch in range(launches):
            ours, theirs = socket.socketpair()
            reply = varlink_call(service, {
                "method": "io.lxss.Service.CreateLxProcess",
                "parameters": {"distribution": distribution, "commandLine": ["exec sleep 30"],
                               "shellType": "standard", "environment": [], "rows": 24,
                               "columns": 80, "stdin": 1, "stdout": 2, "stderr": 3,
                               "control": 0, "consoleId": 424242},
            }, [theirs.fileno(), null, null, null])  # fmt: skip
            theirs.close()
            if "error" in reply:
                raise SystemExit(f"launch {launch} failed: {reply}")
            ours.settimeout(2)
            try:
                for seq in range(1, frames + 1):
                    if rng.random() < 0.5:
                        odd: Any = m.InitWindowSizeChanged(
                            rows=rng.choice([0, 1, 65535]), columns=rng.choice([0, 65535])
                        )
                    else:
                        odd = m.InitSignal(signal=rng.choice(HARMLESS_SIGNALS))
                    ours.sendall(m.encode(odd, seq, 0))
                    sent += 1
                kind = rng.choice(sorted(malformed))
                if kind == "descriptors":  # a well-formed frame, with fds nobody asked for
                    frame = m.encode(m.InitWindowSizeChanged(rows=3, columns=3), frames + 1, 0)
                    ours.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                            array.array("i", [null] * 4))])  # fmt: skip
                else:
                    ours.sendall(malformed[kind](frames + 1))
                sent += 1
                try:
                    outcome = "closed" if ours.recv(65536) == b"" else "replied"
                except TimeoutError:
                    outcome = "waiting"  # a partial frame: the relay waits for the rest
                except ConnectionResetError:
                    outcome = "closed"
            except (BrokenPipeError, ConnectionResetError):
                kind, outcome = "odd", "closed early"
            finally:
                ours.close()
            outcomes.setdefault(kind, {})
            outcomes[kind][outcome] = outcomes[kind].get(outcome, 0) + 1
    json.dump({"launches": launches, "sent": sent, "outcomes": outcomes}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
