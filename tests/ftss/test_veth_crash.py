"""The FTSS on real namespaces, SIGKILLed at random points under a stream of numbered packets.

An unmodified program on app1 (a Python UDP socket) sends numbered datagrams to app2
through server units and the FTSS, while the FTSS process is killed and restarted at
random moments. From the capture: every datagram whose PKT the FTSS acknowledged as
STORED_GUARANTEED reached app2, and app2's stack never got one twice.
CI runs a few kills; the soak (`FTSSLAB_KILLS=1000 pytest tests/ftss/test_veth_crash.py`)
runs as many as asked.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from ftsslab.fast.ftss import (
    FTSS_ACK_STORED_GUARANTEED,
    FTSS_OP_ACK,
    FTSS_OP_PKT,
    parse_ftss_frame,
)
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario_text

from ..lab.test_veth import _netns_works

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not _netns_works(), reason="needs root and namespaces")]

SENDER = ("import socket,time,sys\\n"
          "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\\n"
          "for i in range({n}):\\n"
          "    s.sendto(b'seq%08d' % i, ('10.0.0.2', 9999)); time.sleep({gap})\\n")

ROOT = Path(__file__).resolve().parents[2]
# the two-server topology of the http-kill scenario (apps with addresses, fabric A and B)
TOPOLOGY = (ROOT / "scenarios" / "ftss-http-kill.yaml").read_text().split("\nsteps:")[0] + "\n"


def scenario_text(kills: int, rng: random.Random, n: int, gap: float) -> str:
    steps = [
        # app1 learns app2's MAC once, so every datagram is a unicast through the FTSS
        '  - exec: {node: app1, cmd: [ping, -c, "1", -W, "2", 10.0.0.2], timeout: 10}',
        f'  - exec: {{node: app1, background: true, cmd: [python3, -c, "{SENDER.format(n=n, gap=gap)}"]}}',  # noqa: E501
    ]
    for _ in range(kills):
        steps.append(f"  - wait: {rng.uniform(0.05, 0.6):.3f}")
        steps.append("  - kill: ftss")
        steps.append(f"  - wait: {rng.uniform(0.0, 0.2):.3f}")
        steps.append("  - restart: ftss")
    steps.append(f"  - wait: {n * gap + 3:.1f}")
    return TOPOLOGY + "steps:\n" + "\n".join(steps) + "\n"


def numbers(frame: bytes) -> bytes | None:
    at = frame.find(b"seq")
    return frame[at:at + 11] if at >= 0 else None


@pytest.mark.parametrize("kills", [int(os.environ.get("FTSSLAB_KILLS", "3"))])
def test_nothing_guaranteed_is_lost_or_duplicated(kills, tmp_path: Path):
    from ftsslab.lab.veth.backend import VethBackend

    seed = int(os.environ.get("FTSSLAB_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    text = scenario_text(kills, rng, n=300, gap=0.005)
    path = tmp_path / "crash.yaml"
    path.write_text(text)
    scenario = load_scenario_text(text, str(path))
    result = Runner(scenario, VethBackend()).run()
    assert [e.kind for e in result.events].count("kill") == kills

    sent_as: dict[int, bytes] = {}   # (msg id) -> datagram number, PKTs srv1 -> FTSS
    guaranteed: set[int] = set()
    delivered: Counter = Counter()   # datagram numbers app2's stack received
    for f in result.frames:
        if f.dst == "app2:eth0":
            if (num := numbers(f.data)) is not None:
                delivered[num] += 1
            continue
        msg = parse_ftss_frame(f.data)
        if msg is None:
            continue
        if f.src.startswith("srv1:") and msg.get("opcode") == FTSS_OP_PKT:
            if (num := numbers(f.data)) is not None:
                sent_as[msg["msg_id"]] = num
        elif (f.dst.startswith("srv1:") and msg.get("opcode") == FTSS_OP_ACK
              and msg.get("status") == FTSS_ACK_STORED_GUARANTEED):
            guaranteed.add(msg["msg_id"])
    promised = {sent_as[m] for m in guaranteed if m in sent_as}
    assert len(promised) > 50, f"seed {seed}: too few guaranteed packets to judge"
    lost = promised - set(delivered)
    twice = {n for n, c in delivered.items() if c > 1}
    assert not lost, f"seed {seed}: guaranteed but never delivered: {sorted(lost)[:10]}"
    assert not twice, f"seed {seed}: delivered twice: {sorted(twice)[:10]}"
