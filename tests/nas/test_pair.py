"""The switch pair's sans-IO parts (Fig. 12, D2.17): the table mirror, the peer's XAP at the
standby, the link messages a switch watches and its gratuitous ARP."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from ftsslab.fast import xap as wire
from ftsslab.nas import xap
from ftsslab.nas.pair import (
    IFF_LOWER_UP,
    IFLA_IFNAME,
    RTM_NEWLINK,
    TableMirror,
    gratuitous_arp,
    parse_link_messages,
)

VIP, ACTIVE, STANDBY = "10.0.0.100", "10.0.0.254", "10.0.0.253"
D1 = xap.Device("d1", 0x111111, "10.0.0.11", "02:00:00:00:1d:01", "p2")
D2 = xap.Device("d2", 0x222222, "10.0.0.12", "02:00:00:00:1d:02", "p3")
S1 = xap.Device("s1", 0x333333, ACTIVE, "", "p9")


def flow(port: int) -> xap.FlowKey:
    return xap.FlowKey("10.0.0.1", 6, port, VIP, 80)


def standby() -> xap.XapSwitch:
    return xap.XapSwitch([D1, D2], VIP, STANDBY, peers=[S1])


def deliver(sw: xap.XapSwitch, actions, now: float, tables: dict, mirror: bool = True) -> list:
    """The standby's answers to the datagrams (the mirror's, or with ``mirror`` False a
    device's); its table applied at once."""
    acks = []
    todo = [a for a in actions if isinstance(a, xap.SendDatagram)]
    while todo:
        a = todo.pop(0)
        for got in sw.on_datagram(ACTIVE, 40000, a.payload, now):
            if isinstance(got, xap.Program):
                tables[got.key] = got.new.name if got.new else None
                assert got.mirror == mirror
                acks += sw.programmed(got.token, now)
            else:
                acks.append(got)
    return acks


def test_a_peer_moves_any_flow_and_removes_it_with_no_device():
    sw, tables = standby(), {}
    mirror = TableMirror(xap.XapClient(S1.nonce, STANDBY))
    for ip in (D1.ip, D2.ip, xap.NO_DEVICE):
        acks = deliver(sw, mirror.changed(flow(1000), ip, 0.0), 0.0, tables)
        assert all(not isinstance(a, xap.SendDatagram) for a in
                   mirror.on_datagram(STANDBY, 5016, acks[0].payload, 0.0))
    assert tables == {flow(1000): None} and sw.entries() == {}
    assert mirror.want == {} and mirror.stats["acked"] == 3


def test_only_the_peer_may_move_another_devices_flow_and_only_by_udp():
    sw, tables = standby(), {}
    sw.placed(flow(1), "d1")
    d2 = xap.XapClient(D2.nonce, STANDBY)
    _, acts = d2.request(wire.XAP_OP_CHANGE_CONNECTION, flow(1), D2.ip, 0.0)
    assert deliver(sw, acts, 0.0, tables, False) == [] and sw.stats["bad_nonce"] == 1
    claim = {"version": wire.XAP_VERSION, "operation": wire.XAP_OP_CHANGE_CONNECTION,
             "nonce": S1.nonce, "proto": 6,
             "sport": 1, "dport": 80, "xid": 7, "cluster_id": STANDBY}
    assert sw.on_flow_options("10.0.0.1", [claim], 0.0) == [] and sw.stats["bad_nonce"] == 2
    assert sw.owner(flow(1)) == D1


def test_a_peers_set_hands_the_flow_to_this_switch_at_its_owner():
    """Claim 56: the 5-tuple goes to the second switch; it serves the flow where the mirror
    put it (a Program with ``serve``), once per request; a flow it never heard of is
    refused."""
    sw, s1 = standby(), xap.XapClient(S1.nonce, STANDBY)
    sw.placed(flow(3), "d2")
    _, acts = s1.request(wire.XAP_OP_SET, flow(3), None, 0.0)
    got = sw.on_datagram(ACTIVE, 40000, acts[0].payload, 0.0)
    assert [(g.serve, g.mirror, g.old, g.new) for g in got] == [(True, True, D2, D2)]
    assert sw.on_datagram(ACTIVE, 40000, acts[0].payload, 0.0) == []  # in flight: once
    ack = sw.programmed(got[0].token, 0.0)
    assert isinstance(s1.on_datagram(STANDBY, 5016, ack[0].payload, 0.0)[0], xap.Acked)
    _, acts = s1.request(wire.XAP_OP_SET, flow(4), None, 0.0)
    assert sw.on_datagram(ACTIVE, 40000, acts[0].payload, 0.0) == []
    assert sw.stats["unknown_target"] == 1


def test_a_standby_that_took_over_answers_at_the_actives_address():
    sw, tables = standby(), {}
    d1 = xap.XapClient(D1.nonce, ACTIVE)  # the devices know the active's address only
    _, acts = d1.request(wire.XAP_OP_SET, flow(2), None, 0.0)
    assert deliver(sw, acts, 0.0, tables, False) == [] and sw.stats["other_cluster"] == 1
    sw.adopt(ACTIVE)
    assert deliver(sw, acts, 0.0, tables, False) and tables == {flow(2): "d1"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([D1.ip, D2.ip, xap.NO_DEVICE]),
                          st.booleans()), min_size=1, max_size=40))
def test_the_standby_ends_with_the_actives_last_word_whatever_is_lost(script):
    """Changes to four flows, each request or its ack lost at random (retransmitted by the
    XAP client, given up and retried by the mirror): one request per flow in flight, and
    once all is delivered the standby's table is the active's last state of every flow."""
    sw, tables, now = standby(), {}, 0.0
    mirror = TableMirror(xap.XapClient(S1.nonce, STANDBY))
    wanted: dict[xap.FlowKey, str] = {}
    for port, ip, lose in script:
        now += 0.01
        wanted[flow(port)] = ip
        acts = mirror.changed(flow(port), ip, now)
        assert len({k for k, _ in mirror.sent.values()}) == len(mirror.sent)  # one per flow
        if not lose:
            for ack in deliver(sw, acts, now, tables):
                mirror.on_datagram(STANDBY, 5016, ack.payload, now)
    for _ in range(400):  # the network heals: timers run, nothing is lost
        now += 0.05
        acts = mirror.on_timer(now)
        for ack in deliver(sw, acts, now, tables):
            for more in mirror.on_datagram(STANDBY, 5016, ack.payload, now):
                for ack2 in deliver(sw, [more], now, tables):
                    mirror.on_datagram(STANDBY, 5016, ack2.payload, now)
        if not mirror.sent and not mirror.retry:
            break
    expect = {k: {D1.ip: "d1", D2.ip: "d2"}.get(ip) for k, ip in wanted.items()}
    assert {k: tables.get(k) for k in wanted} == expect
    assert {k: o.name for k, o in sw.entries().items()} == \
        {k: v for k, v in expect.items() if v is not None}


def _newlink(name: str, flags: int) -> bytes:
    attr = name.encode() + b"\0"
    rta = struct.pack("=HH", 4 + len(attr), IFLA_IFNAME) + attr
    rta += b"\0" * (-len(rta) % 4)
    body = struct.pack("=BxHiII", 0, 1, 7, flags, 0) + rta
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, 0, 0, 0) + body


def test_link_messages_say_which_port_lost_its_carrier():
    data = _newlink("p3", 0x1003) + _newlink("p2", 0x1003 | IFF_LOWER_UP)
    assert parse_link_messages(data) == [("p3", False), ("p2", True)]


@given(st.binary(max_size=300))
def test_link_messages_never_raise(data):
    assert isinstance(parse_link_messages(data), list)
    assert parse_link_messages(_newlink("p9", 0) + data)[0] == ("p9", False)


def test_the_gratuitous_arp_is_scapys_announcement():
    mac = "02:00:00:03:01:00"
    want = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=mac, psrc=VIP, hwdst="00:00:00:00:00:00", pdst=VIP)
    assert gratuitous_arp(mac, VIP) == bytes(want)
