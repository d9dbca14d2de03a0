"""Check 22's other half: management discovery over UD finds all endnodes (``san/discovery.py``),
on the simulated fabric -- a GSI agent on QP1 of each of five endnodes, one of them the manager;
over loss, repeated sweeps find them all, and UD retries nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast.roce import GSI_QKEY, GSI_QPN, build_san_mad, parse_roce
from ftsslab.san.discovery import GET, GET_RESP, ManagementAgent, Sweep
from ftsslab.san.fabric import Fabric
from ftsslab.san.verbs import CQ, SGE, UdSendWR

from .test_verbs import BUF, endnode, poke

NAMES = ("manager", "disk-0", "disk-1", "host-a", "host-b")


def subnet(fabric: Fabric) -> dict[str, ManagementAgent]:
    """Five endnodes, each with its GSI agent; some have more QPs than QP1, so their lists
    differ (host-a two RC QPs, disk-1 a UD QP)."""
    agents = {}
    for i, name in enumerate(NAMES):
        ctx = endnode(fabric, name)
        pd = ctx.pd(1)
        agents[name] = ManagementAgent(pd, BUF, name=name, guid=0x0002_C903_0000_0000 + i,
                                       ports=1 + i % 2)
        fabric.attach(name, agents[name])
        for _ in range({"host-a": 2}.get(name, 0)):
            pd.open_qp(CQ())
        if name == "disk-1":
            pd.open_ud_qp(CQ(), qkey=0x1234)
    return agents


def mads(fabric: Fabric) -> list[tuple[str, str, bool, dict]]:
    """(from, to, delivered, SanMad fields) of every frame, read back from the wire."""
    out = []
    for s in fabric.frames:
        d = parse_roce(s.data)
        assert d is not None and d["icrc_ok"] and d["DETH"]["qkey"] == GSI_QKEY
        assert d["BTH"]["dqpn"] == d["DETH"]["srcqp"] == GSI_QPN
        out.append((s.src, s.dst, s.delivered, d["SanMad"]))
    return out


def test_one_sweep_finds_every_endnode_with_its_name_guid_ports_and_qps():
    f = Fabric()
    agents = subnet(f)
    manager = agents["manager"]
    f.send("manager", manager.discover(NAMES, f.now))
    f.run()
    assert manager.state is Sweep.DONE and manager.sweeps == 1
    assert f.now < 0.01  # done when the last answer came, not at the timeout
    assert sorted(manager.found) == sorted(NAMES)
    for name, agent in agents.items():
        got = manager.found[name]
        assert (got.address, got.name, got.guid, got.ports) == (name, name, agent.guid,
                                                                agent.ports)
        assert got.qpns == tuple(sorted(agent.pd.context.qps))
    assert manager.found["host-a"].qpns == (1, 0x11, 0x12)
    assert manager.found["disk-1"].qpns == (1, 0x11)
    wire = mads(f)
    assert sorted((src, m["method"]) for src, _, _, m in wire) == sorted(
        [("manager", GET)] * 5 + [(n, GET_RESP) for n in NAMES])
    assert manager.counters == {"gets": 1, "answers": 5, "probes": 5, "unanswered": 0,
                                "malformed": 0, "unexpected": 0}


@pytest.mark.parametrize("seed", range(1, 7))  # (seed 0 happens to lose nothing)
def test_over_20_percent_loss_repeated_sweeps_find_all_and_ud_retries_nothing(seed):
    """A lost GET or GET_RESP costs its target one sweep: the manager counts it unanswered,
    one per lost frame; no datagram is ever sent twice -- each GET's transaction ID is in one
    frame, and each UD QP's sent count is its frames on the wire."""
    f = Fabric(seed=seed, loss=0.2)
    agents = subnet(f)
    manager = agents["manager"]
    f.send("manager", manager.discover(NAMES, f.now, sweeps=10))
    f.run()
    assert manager.state is Sweep.DONE
    assert sorted(manager.found) == sorted(NAMES)
    wire = mads(f)
    lost = sum(not delivered for _, _, delivered, _ in wire)
    assert lost > 0 and manager.sweeps > 1
    assert manager.counters["unanswered"] == lost
    assert manager.counters["probes"] == 5 + lost
    gets = [m["tid"] for src, _, _, m in wire if m["method"] == GET]
    assert len(gets) == len(set(gets)) == manager.counters["probes"]
    for name, agent in agents.items():
        assert agent.qp.core.counters["sent"] == sum(src == name for src, *_ in wire)


def test_a_silent_address_is_asked_once_per_sweep_up_to_the_bound():
    """An endnode whose GSI agent is not running (its QP1 is not open): its GET is dropped
    by the SANIC, every sweep, and after the last one the manager stops."""
    f = Fabric()
    agents = subnet(f)
    endnode(f, "mute")
    manager = agents["manager"]
    f.send("manager", manager.discover((*NAMES, "mute"), f.now, sweeps=3, timeout=0.01))
    f.run()
    assert manager.state is Sweep.DONE and manager.sweeps == 3
    assert sorted(manager.found) == sorted(NAMES)
    assert sum(s.dst == "mute" for s in f.frames) == 3
    assert manager.counters["unanswered"] == 3 and manager.next_deadline() is None
    assert f.now == pytest.approx(0.03)


@given(payloads=st.lists(
    st.binary(max_size=300)
    | st.builds(lambda m, a, t: build_san_mad(method=m, attrid=a, tid=t),
                st.sampled_from([GET, GET_RESP, 0x02, 0x7F]), st.sampled_from([0x11, 0x10]),
                st.integers(0, 2**64 - 1)),
    max_size=12))
@settings(max_examples=60, deadline=None)
def test_what_is_not_a_management_datagram_is_counted_and_never_raises(payloads):
    """Arbitrary datagrams to QP1 under its Q_Key: longer than a MAD, dropped by the UD QP
    (too_long); the rest taken -- not a SanMad: malformed; a SanMad that is not a GET of
    ENDNODE_INFO nor an awaited GET_RESP: unexpected; a GET: answered. The agent then still
    answers the manager."""
    f = Fabric()
    agents = subnet(f)
    ctx = endnode(f, "fuzzer")
    fq = ctx.pd(1).open_ud_qp(CQ(), qkey=GSI_QKEY)
    target = agents["disk-0"]
    for i, data in enumerate(payloads):
        poke(ctx, 1, BUF, data)
        f.send("fuzzer", fq.post_datagram(UdSendWR(i, (SGE(BUF, len(data)),), "disk-0",
                                                   GSI_QPN, GSI_QKEY), f.now))
    f.run()
    taken = [p for p in payloads if len(p) <= 256]
    c = target.counters
    assert target.qp.core.counters["too_long"] == len(payloads) - len(taken)
    assert c["malformed"] + c["unexpected"] + c["gets"] == len(taken)
    assert c["gets"] == sum(len(p) == 256 and p[:4] == bytes([1, 9, 1, GET])
                            and p[16:18] == b"\0\x11" for p in taken)
    f.send("manager", agents["manager"].discover(["disk-0"], f.now))
    f.run()
    assert "disk-0" in agents["manager"].found
