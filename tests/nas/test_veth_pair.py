"""Switch failover on real namespaces (Fig. 12, check 28): the standby takes over a dead active
switch's MAC, VIP and sessions; and, with the active alive, a device whose link to it is down
is reached through the standby, which does no NAS processing."""

from __future__ import annotations

import socket
import struct

import pytest

from ftsslab.nas.cluster import bridge_mac
from tests.nas.veth_runs import passing_run
from tests.support import load_bench
from tests.wireshark.oracle import tshark_fields, write_pcap

pytestmark = pytest.mark.root
VIP, S1_IP = "10.0.0.100", "10.0.0.254"


def _detail(e) -> dict:
    return dict(kv.split("=", 1) for kv in e.detail.split() if "=" in kv)


def _event(result, node: str, kind: str):
    return next(e for e in result.events if e.node == node and e.kind == kind)


@pytest.fixture(scope="module")
def takeover():
    return passing_run("nas-switch-failover")


@pytest.fixture(scope="module")
def reroute():
    return passing_run("nas-switch-reroute")


def test_the_standby_takes_the_mac_and_vip_and_says_so_by_gratuitous_arp(takeover, tmp_path):
    """Kill s1 (process and links): s2 notices the silence of its heartbeats and takes over
    within T = 1 s; the client's link then carries ARP announcements of the VIP and of s1's
    address from s1's MAC -- sent by s2, through its port on the client segment (tshark)."""
    scenario, result = takeover
    kill = _event(result, "s1", "kill")
    took = _detail(_event(result, "s2", "takeover"))
    mac = bridge_mac(scenario, "s1")
    assert took["mac"] == mac
    assert float(took["detection_ms"]) + float(took["ms"]) < 1000, took
    arps = [f for f in result.frames if f.data[12:14] == b"\x08\x06" and f.time > kill.time]
    pcap = write_pcap(tmp_path / "arp.pcapng", [f.data for f in arps if f.dst == "c1:eth0"])
    shown = tshark_fields(pcap, "arp.isgratuitous == 1", ["eth.src", "arp.src.proto_ipv4"])
    assert {(r["eth.src"], r["arp.src.proto_ipv4"]) for r in shown} == {(mac, VIP), (mac, S1_IP)}
    into_lan = {f.src for f in arps if f.dst.startswith("lan:")
                and f.data[6:12] == bytes.fromhex(mac.replace(":", ""))}
    assert into_lan == {"s2:p1"}, into_lan


def test_the_sessions_go_on_through_the_standby_with_no_reset(takeover):
    """Both downloads (the scenario compares the bytes) stall less than 2 s, get no RST, and
    their data after the takeover comes from the devices' links to s2."""
    _, result = takeover
    kill = _event(result, "s1", "kill").time
    got = load_bench("nas_switch_failover").measure(result)
    assert got["rst_to_client"] == 0 and got["stall_ms"] < 2000, got
    after = [f for f in result.frames if f.time > kill and f.data[12:14] == b"\x08\x00"
             and f.data[23] == 6 and socket.inet_ntoa(f.data[26:30]) == VIP
             and f.src.startswith("d")]
    # both sessions went on through s2 (on an idle box one may end soon after the takeover)
    assert {f.src for f in after if f.src.endswith(":eth1")} == {"d1:eth1", "d2:eth1"}
    takeover = _event(result, "s2", "takeover").time
    late = {f.src for f in after if f.time > takeover + 1.0}
    assert late <= {"d1:eth1", "d2:eth1"}, late  # and nothing went s1's way any more
    print(got)


def test_the_standby_mirrors_each_table_event_in_order(takeover):
    """D2.17: every entry s1 made is in s2's table before s1 dies, by XAP (its own nonce at
    s2, registered as a peer's), and s2 placed nothing itself; after the takeover the
    entries are s2's (it removes those whose connection ended)."""
    _, result = takeover
    kill = _event(result, "s1", "kill").time
    made = [(_detail(e)["client"], _detail(e)["new"]) for e in result.events
            if e.node == "s1" and e.kind == "table"]
    s2 = [(e.time, _detail(e)) for e in result.events if e.node == "s2" and e.kind == "table"]
    assert len(made) == 2 and [(d["client"], d["new"]) for t, d in s2 if t < kill] == made
    assert all(d["why"] == "mirror" for t, d in s2 if t < kill)
    assert {d["why"] for t, d in s2 if t > kill} <= {"closed"}  # its own from then on
    stats = result.reports["s2"]["stats"]
    assert stats["syn_placed"] == 0 and stats["xap_applied"] == 2
    assert stats["xap_bad_nonce"] == 0


def test_policy_c_reroutes_through_the_standby_which_only_bridges(reroute):
    """Link s1 -> d2 down: s1 points d2's entry at its port to s2 (d2's MAC there); client
    frames of d2's connection then cross s1:p9 and reach d2 on its link to s2, d2's answers
    go back the same way; d1's connection is untouched; s2's NAS logic did nothing."""
    _, result = reroute
    cut = next(e.time for e in result.events if e.kind == "link-down")

    def ends(src_or_dst: str, when) -> set[str]:
        return {getattr(f, src_or_dst) for f in result.frames if when(f.time)
                and f.data[12:14] == b"\x08\x00" and f.data[23] == 6
                and VIP in (socket.inet_ntoa(f.data[26:30]), socket.inet_ntoa(f.data[30:34]))}

    after = ends("dst", lambda t: t > cut + 0.5)
    assert {"s2:p9", "d2:eth1", "d1:eth0"} <= after and "d2:eth0" not in after, after
    assert "d1:eth1" not in after  # s2 learned the client's MAC: no flooding to d1
    s2 = result.reports["s2"]["stats"]
    assert s2["syn_placed"] == 0 and s2["xap_applied"] == 2
    assert not [e for e in result.events if e.node == "s2" and e.kind not in
                ("table", "health")]


@pytest.fixture(scope="module")
def handed():
    return passing_run("nas-switch-handoff")


def test_a_session_handed_to_the_partner_is_served_from_it(handed):
    """Check 26 (claims 56-62): s1 hands one session's 5-tuple to s2 and points its entry at
    s2. From then on the device's data of that flow reaches the client from s2 with src = VIP
    and not one of its frames crosses a link of s1 (s1 does no processing on the device's
    answers, L416); the client's own frames still come in at s1's MAC and are forwarded by
    s1's kernel table through s2 to the device's second link. The other session stays on
    s1. Both downloads byte for byte, 0 RST (the scenario)."""
    scenario, result = handed
    hand = next(e for e in result.events if e.node == "s1" and e.kind == "hand")
    port = int(_detail(hand)["client"].split(":")[1])
    settle = hand.time + 0.2
    taken = _detail(next(e for e in result.events if e.node == "s2" and e.kind == "table"
                         and "why=handed" in e.detail))
    # the device that holds the handed session (the balancer placed the two on d1 and d2 in
    # whichever order their SYNs came), and its second link, to s2
    (second,) = [(ln.a.name, ln.b.name) for ln in scenario.links
                 if ln.a.name == f"{taken['new']}:eth1" and ln.b.node == "s2"]

    def hops(src_vip: bool, flow: bool) -> set[tuple[str, str]]:
        out = set()
        for f in result.frames:
            d = f.data
            if f.time < settle or d[12:14] != b"\x08\x00" or d[23] != 6:
                continue
            ihl = (d[14] & 0xF) * 4
            sport, dport = struct.unpack_from(">HH", d, 14 + ihl)
            mine = (dport if src_vip else sport) == port
            if (socket.inet_ntoa(d[26:30]) == VIP) == src_vip and mine == flow:
                out.add((f.src, f.dst))
        return out

    answers = hops(src_vip=True, flow=True)
    assert answers and not {h for h in answers if "s1:" in h[0] or "s1:" in h[1]}, answers
    assert ("s2:p1", "lan:p3") in answers and second in answers
    assert ("s1:p9", "s2:p9") in hops(src_vip=False, flow=True)  # the client's, via s1
    assert ("s1:p1", "lan:p2") in hops(src_vip=True, flow=False)  # the other session
    assert taken["client"] == _detail(hand)["client"]
