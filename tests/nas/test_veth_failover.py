"""Storage-device failover on real namespaces (claim 41, check 24): a device dies mid-download,
the switch hears the silence and a replica takes the unmodified client's connection over."""

from __future__ import annotations

import pytest

from tests.nas.veth_runs import passing_run
from tests.support import load_bench

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def failover_run():
    return passing_run("nas-failover")[1]


def test_the_client_stalls_less_than_2_s_and_sees_no_reset(failover_run):
    """Check 24: the switch detects d1's silence (after 3.5 heartbeat periods), the download
    goes on from d2 at the very sequence number the client expects (no byte twice, none
    missing: the scenario compares the file), the stall is < 2 s, and no RST reaches it."""
    result = failover_run
    down = next(e for e in result.events if e.node == "s1" and e.kind == "health"
                and "new=DOWN" in e.detail)
    detection = float(dict(kv.split("=", 1) for kv in down.detail.split())["detection_ms"])
    assert 340 <= detection < 2000, down  # 3.5 periods of 100 ms at least; late under load
    frames = load_bench("nas_failover").to_client(result)
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
