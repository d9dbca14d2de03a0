"""Storage-device failover on real namespaces (claim 41, check 24): a device dies mid-download,
the switch hears the silence and a replica takes the unmodified client's connection over."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root
CLIENT, VIP = "10.0.0.1", "10.0.0.100"


@pytest.fixture(scope="module")
def failover_run():
    from ftsslab.lab.veth.backend import VethBackend

    scenario = load_scenario(ROOT / "scenarios" / "nas-failover.yaml")
    result = Runner(scenario, VethBackend()).run()
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]
    return result


def test_a_predicted_failure_moves_every_connection_before_the_device_dies():
    """Check 23 (claim 34): scenarios/nas-predicted.yaml -- two downloads on d1, d1 reports
    PREDICTED_FAIL, the switch asks it to hand both to d2 (Open(initiator=other)), they move
    by normal handoffs; d1 then dies with nothing left on it; same bytes, 0 RST."""
    from ftsslab.lab.veth.backend import VethBackend

    result = Runner(load_scenario(ROOT / "scenarios" / "nas-predicted.yaml"),
                    VethBackend()).run()
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]


def test_the_switch_balances_twelve_downloads_to_four_each():
    """Check 25 (claim 52): scenarios/nas-balance.yaml -- 12 downloads placed on d1; the
    switch's weighted-balance moves exactly 8 (4 to d2, 4 to d3, none back) within ~1.5 s;
    every download byte for byte, 0 RST."""
    from ftsslab.lab.veth.backend import VethBackend

    result = Runner(load_scenario(ROOT / "scenarios" / "nas-balance.yaml"), VethBackend()).run()
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]


def _to_client(result) -> list[tuple[float, int, int, int]]:
    """(time, flags, seq, payload length) of the VIP's TCP frames on the client's link."""
    out = []
    for f in result.frames:
        d = f.data
        if f.dst != "c1:eth0" or d[12:14] != b"\x08\x00" or d[23] != 6 \
                or socket.inet_ntoa(d[26:30]) != VIP:
            continue
        ihl = (d[14] & 0xF) * 4
        seq = struct.unpack_from(">I", d, 14 + ihl + 4)[0]
        size = int.from_bytes(d[16:18]) - ihl - (d[14 + ihl + 12] >> 4) * 4
        out.append((f.time, d[14 + ihl + 13], seq, size))
    return out


def test_the_client_stalls_less_than_2_s_and_sees_no_reset(failover_run):
    """Check 24: the switch detects d1's silence within 3.5 heartbeat periods, the download
    goes on from d2 at the very sequence number the client expects (no byte twice, none
    missing: the scenario compares the file), the stall is < 2 s, and no RST reaches it."""
    result = failover_run
    down = next(e for e in result.events if e.node == "s1" and e.kind == "health"
                and "new=DOWN" in e.detail)
    detection = float(dict(kv.split("=", 1) for kv in down.detail.split())["detection_ms"])
    assert 300 <= detection < 600, down
    frames = _to_client(result)
    assert not [f for f in frames if f[1] & 0x04]  # no RST
    data = [f for f in frames if f[3] > 0]
    cut = next(f for f in result.events if f.kind == "link-down")
    before = [f for f in data if f[0] < cut.time]
    after = [f for f in data if f[0] > cut.time]
    probes = [f for f in after if f[3] == 1]  # d2's question: one byte at d1's ISN
    after = [f for f in after if f[3] > 1]
    assert probes and probes[0][0] < after[0][0]
    stall = after[0][0] - before[-1][0]
    assert stall < 2.0, stall
    # d2's first data segment starts where the client's stream is: at or before the end of
    # what d1 got through (what the client had not acked yet is sent again, not skipped)
    assert after[0][2] in {(s + n) % (1 << 32) for _, _, s, n in before[-64:]} | \
        {s for _, _, s, _ in before[-64:]}, (after[0], before[-3:])
    take = next(e for e in result.events if e.node == "d2" and e.kind == "take-over")
    print(f"detection {detection:.0f} ms, stall {stall * 1000:.0f} ms, {take.detail}")
