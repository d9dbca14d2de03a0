"""The FTSS on real namespaces, SIGKILLed at random points under a stream of numbered packets.

An unmodified program on app1 (a Python UDP socket) sends numbered datagrams to app2
through server units and the FTSS, while the FTSS process (or app2's server unit) is
killed and restarted at random moments. From the capture: every datagram whose PKT the
FTSS acknowledged as STORED_GUARANTEED reached app2, in order, and app2's stack never
got one twice.
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
from tests.support import load_bench

pytestmark = pytest.mark.root

SENDER = ("import socket,time,sys\\n"
          "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\\n"
          "for i in range({n}):\\n"
          "    s.sendto(b'seq%08d' % i, ('10.0.0.2', 9999)); time.sleep({gap})\\n")

# the two-server topology of the http-kill scenario (apps with addresses, fabric A and B)
ftss_topology = load_bench("baseline").ftss_topology


def scenario_text(kills: int, rng: random.Random, n: int, gap: float,
                  victim: str = "ftss") -> str:
    steps = [
        # app1 learns app2's MAC once, so every datagram is a unicast through the FTSS
        '  - exec: {node: app1, cmd: [ping, -c, "1", -W, "2", 10.0.0.2], timeout: 10}',
        f'  - exec: {{node: app1, background: true, cmd: [python3, -c, "{SENDER.format(n=n, gap=gap)}"]}}',  # noqa: E501
    ]
    for _ in range(kills):
        steps.append(f"  - wait: {rng.uniform(0.05, 0.6):.3f}")
        steps.append(f"  - kill: {victim}")
        steps.append(f"  - wait: {rng.uniform(0.0, 0.2):.3f}")
        steps.append(f"  - restart: {victim}")
    steps.append(f"  - wait: {n * gap + 3:.1f}")
    return ftss_topology(steps)


def numbers(frame: bytes) -> bytes | None:
    at = frame.find(b"seq")
    return frame[at:at + 11] if at >= 0 else None


@pytest.mark.parametrize("victim", ["ftss", "srv2"])
@pytest.mark.parametrize("kills", [int(os.environ.get("FTSSLAB_KILLS", "3"))])
def test_nothing_guaranteed_is_lost_or_duplicated(kills, victim, tmp_path: Path):
    """The FTSS, or the receiving server's unit, SIGKILLed and restarted: nothing
    acknowledged is lost, nothing reaches app2 twice, and app2 gets the datagrams in the
    order app1 sent them (the FTSS delivers in order per source: docs/ftss.md)."""
    from ftsslab.lab.veth.backend import VethBackend

    seed = int(os.environ.get("FTSSLAB_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # a stream that outlasts the kills: each restart (recovery included) takes a while on a
    # loaded box, and only what the FTSS acknowledged while up can be judged
    text = scenario_text(kills, rng, n=300 + 100 * kills, gap=0.005, victim=victim)
    path = tmp_path / "crash.yaml"
    path.write_text(text)
    scenario = load_scenario_text(text, str(path))
    result = Runner(scenario, VethBackend()).run()
    assert [e.kind for e in result.events].count("kill") == kills

    sent_as: dict[int, bytes] = {}   # (msg id) -> datagram number, PKTs srv1 -> FTSS
    guaranteed: set[int] = set()
    delivered: Counter = Counter()   # datagram numbers app2's stack received
    order: list[bytes] = []
    for f in result.frames:
        if f.dst == "app2:eth0":
            if (num := numbers(f.data)) is not None:
                delivered[num] += 1
                order.append(num)
            continue
        msg = parse_ftss_frame(f.data)
        if msg is None:
            continue
        if f.src.startswith("srv1:") and msg.get("opcode") == FTSS_OP_PKT:
            if (num := numbers(f.data)) is not None:
                sent_as[msg["msg_id"]] = num
        elif (f.dst.startswith("srv1:") and msg.get("opcode") == FTSS_OP_ACK
              and msg.get("status") == FTSS_ACK_STORED_GUARANTEED):
            guaranteed.update(range(msg["msg_id"], msg["msg_id"] + msg["more"] + 1))
    promised = {sent_as[m] for m in guaranteed if m in sent_as}
    assert len(promised) > 50, f"seed {seed}: too few guaranteed packets to judge"
    lost = promised - set(delivered)
    twice = {n for n, c in delivered.items() if c > 1}
    assert not lost, f"seed {seed}: guaranteed but never delivered: {sorted(lost)[:10]}"
    assert not twice, f"seed {seed}: delivered twice: {sorted(twice)[:10]}"
    late = [(a, b) for a, b in zip(order, order[1:], strict=False) if b < a]
    assert not late, f"seed {seed}: out of order: {late[:5]}"
    assert not [o for o in result.outcomes if not o.passed], f"seed {seed}: {result.outcomes}"
