"""The switch pair's sans-IO parts (Fig. 12, D2.17): the table mirror, the peer's XAP at the
standby, the link messages a switch watches, its gratuitous ARP and the active's paths."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from ftsslab.fast import xap as wire
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.veth.linkstate import (
    IFF_RUNNING,
    IFF_UP,
    IFLA_IFNAME,
    RTM_NEWLINK,
    parse_link_messages,
)
from ftsslab.nas import xap
from ftsslab.nas.cluster import cluster_of
from ftsslab.nas.pair import Paths, TableMirror, gratuitous_arp

from .test_twins import SCENARIOS

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


def test_the_gratuitous_arp_is_scapys_announcement():
    mac = "02:00:00:03:01:00"
    want = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=mac, psrc=VIP, hwdst="00:00:00:00:00:00", pdst=VIP)
    assert gratuitous_arp(mac, VIP) == bytes(want)


def paths() -> tuple[Paths, dict[str, xap.Device]]:
    """The active's ``Paths`` in the reroute twin's cluster, and its devices (as switchd)."""
    c = cluster_of(load_scenario(SCENARIOS / "nas-twins-switch-reroute.yaml"), "s1")
    return Paths(c), {d.name: xap.Device(d.name, 1 + i, d.ip, d.mac, d.switch_port)
                      for i, d in enumerate(c.devices.values())}


def test_a_device_whose_link_is_down_is_reached_through_the_partner_until_it_is_back():
    """Policy (c): the device's flows (not another's) leave by the pair's port to its MAC on
    the partner's link; a second down changes nothing; up restores its own port."""
    p, devs = paths()
    entries = {flow(1): devs["d1"], flow(2): devs["d2"]}
    flows, detail = p.link(devs["d1"], False, entries)
    assert flows == [flow(1)] and p.route(flow(1), devs["d1"]) == ("p9", "02:00:00:00:1d:01")
    assert detail == {"device": "d1", "port": "p9", "mac": "02:00:00:00:1d:01", "via": "s2",
                      "flows": 1}
    assert p.route(flow(2), devs["d2"]) == ("p3", devs["d2"].mac)
    assert p.link(devs["d1"], False, entries) is None
    flows, detail = p.link(devs["d1"], True, entries)
    assert detail["via"] is None and p.route(flow(1), devs["d1"]) == ("p2", devs["d1"].mac)


def test_only_a_session_the_partner_acked_is_handed_and_then_routed_to_it():
    p, devs = paths()
    mirror = TableMirror(xap.XapClient(S1.nonce, STANDBY))
    entries = {flow(7): devs["d2"], flow(5): devs["d1"]}
    with pytest.raises(ValueError):
        p.pick({"to": "s3"}, entries, mirror, "s1")
    with pytest.raises(LookupError):  # nothing mirrored yet
        p.pick({"to": "s2"}, entries, mirror, "s1")
    mirror.synced = {flow(7): devs["d2"].ip, flow(5): devs["d1"].ip}
    assert p.pick({"to": "s2"}, entries, mirror, "s1") == flow(5)  # the lowest port
    assert p.pick({"to": "s2", "client_port": 7}, entries, mirror, "s1") == flow(7)
    assert p.handed_to(flow(5), False, devs["d1"])["outcome"] == "FAILED"
    assert p.route(flow(5), devs["d1"]) == ("p2", devs["d1"].mac)
    assert p.handed_to(flow(5), True, devs["d1"])["outcome"] == "HANDED"
    assert p.route(flow(5), devs["d1"]) == ("p9", "02:00:00:00:1d:01")
    assert p.pick({"to": "s2"}, entries, mirror, "s1") == flow(7)  # not twice


def _newlink(name: str, flags: int, index: int = 7) -> bytes:
    attr = name.encode() + b"\0"
    rta = struct.pack("=HH", 4 + len(attr), IFLA_IFNAME) + attr
    rta += b"\0" * (-len(rta) % 4)
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + rta
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, 0, 0, 0) + body


def test_link_messages_say_which_port_lost_its_carrier():
    """What the active's LinkMonitor reads (policy (c)): a veth whose peer is down keeps IFF_UP
    but loses IFF_RUNNING."""
    data = _newlink("p3", IFF_UP) + _newlink("p2", IFF_UP | IFF_RUNNING, 8)
    assert parse_link_messages(data) == [("p3", 7, False), ("p2", 8, True)]


@given(st.binary(max_size=300))
def test_link_messages_never_raise(data):
    assert isinstance(parse_link_messages(data), list)
    assert parse_link_messages(_newlink("p9", 0) + data)[0] == ("p9", 7, False)
