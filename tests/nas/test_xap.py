# SPDX-License-Identifier: GPL-2.0-or-later
"""XAP control cores (ftsslab/nas/xap.py): check 20 of seed 002 at the core level, the
operations' meanings (D2.11), cascades, a client over a lossy channel, fuzzed input."""

from __future__ import annotations

import heapq
import itertools

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ftsslab.fast import xap as wire
from ftsslab.lab.model import ForwardingEntry
from ftsslab.layers.xap import XAPUDP
from ftsslab.nas.xap import (
    MAX_TRIES,
    Acked,
    Device,
    FlowKey,
    Program,
    ProtocolError,
    SendDatagram,
    SendOnFlow,
    TimedOut,
    XapClient,
    XapError,
    XapSwitch,
)

QUERY, CHANGE, SET, REDIRECT, ACK = (wire.XAP_OP_QUERY, wire.XAP_OP_CHANGE_CONNECTION,
                                     wire.XAP_OP_SET, wire.XAP_OP_REDIRECT, wire.XAP_OP_ACK)
VIP, CLUSTER, CLIENT = "10.0.0.100", "10.0.0.254", "10.0.0.1"
D1 = Device("d1", 0x111111, "10.0.0.11", "02:00:00:00:00:11", "p1")
D2 = Device("d2", 0x222222, "10.0.0.12", "02:00:00:00:00:12", "p2")
D3 = Device("d3", 0x333333, "10.0.0.13", "02:00:00:00:00:13", "p3")
DEVICES = (D1, D2, D3)
KEY = FlowKey(CLIENT, 6, 40000, VIP, 80)
UDP_KEY = FlowKey(CLIENT, 17, 40001, VIP, 2049)
PORT = wire.XAP_UDP_PORT


def switch(**kw) -> XapSwitch:
    return XapSwitch(DEVICES, VIP, CLUSTER, **kw)


def datagram(op, nonce, xid, key=KEY, target=None, *, full=True, client=True, cluster=CLUSTER,
             version=wire.XAP_VERSION, extra=()):
    """A request datagram as a device sends it (TLVs: CLIENT_IP, TARGET_IP, ``extra``)."""
    msg = {"operation": op, "nonce": nonce, "proto": key.proto, "sport": key.client_port,
           "dport": key.vport, "xid": xid, "version": version}
    if full:
        msg["cluster_id"] = cluster
    tlvs = [{"type": wire.XAP_TLV_CLIENT_IP, "client_ip": key.client_ip}] if client else []
    if target:
        tlvs.append({"type": wire.XAP_TLV_TARGET_IP, "target_ip": target})
    return wire.build_xap_udp([msg], [*tlvs, *extra])


def send(sw, payload, src=D1.ip, now=0.0):
    return sw.on_datagram(src, PORT, payload, now)


def ack_of(action):
    """(message, client_ip, target_ip) of an ack datagram action."""
    assert isinstance(action, SendDatagram)
    parsed = wire.parse_xap_udp(action.payload)
    (msg,) = parsed["messages"]
    tlvs = {t["type"]: t for t in parsed["tlvs"]}
    assert msg["operation"] == ACK
    target = tlvs.get(wire.XAP_TLV_TARGET_IP, {}).get("target_ip")
    return msg, tlvs[wire.XAP_TLV_CLIENT_IP]["client_ip"], target


# -- check 20 -------------------------------------------------------------------------------

@pytest.mark.parametrize("full", [True, False])
def test_change_connection_acked_only_after_programmed_echoing_xid_and_nonce(full):
    sw = switch()
    sw.placed(KEY, "d1")
    request = datagram(CHANGE, D1.nonce, 0x1234, target=D2.ip, full=full)
    (program,) = send(sw, request)
    assert program == Program(1, KEY, D1, D2)
    assert sw.owner(KEY) == D1 and sw.stats["acked"] == 0  # not before the table changed
    (ack,) = sw.programmed(program.token, 0.001)
    assert (ack.dst_ip, ack.dst_port) == (D1.ip, PORT)
    msg, client, target = ack_of(ack)
    asked = wire.parse_xap_udp(request)["messages"][0]
    assert msg == {**asked, "operation": ACK}  # nonce, xid, flow and form echoed
    assert (msg["nonce"], msg["xid"]) == (D1.nonce, 0x1234)
    assert ("cluster_id" in msg) is full
    assert (client, target) == (CLIENT, D2.ip)
    assert sw.owner(KEY) == D2 and sw.stats["applied"] == 1
    assert XAPUDP(ack.payload).answers(XAPUDP(request))  # Scapy pairs them too


def test_retransmission_is_acked_again_but_applied_once():
    sw = switch()
    sw.placed(KEY, "d1")
    request = datagram(CHANGE, D1.nonce, 7, target=D2.ip)
    (program,) = send(sw, request)
    assert send(sw, request, now=0.02) == []  # pending: nothing new
    (ack,) = sw.programmed(program.token, 0.03)
    again = [send(sw, request, now=t) for t in (0.06, 0.14)]
    assert again == [[ack], [ack]]  # the same ack, no Program
    assert sw.stats["applied"] == 1 and sw.stats["duplicate"] == 3
    assert sw.owner(KEY) == D2


@pytest.mark.parametrize("nonce", [0x999999, D3.nonce, D2.nonce], ids=["unknown", "d3", "d2"])
def test_wrong_nonce_changes_nothing_and_is_counted(nonce):
    """An unknown nonce, or a registered device's that does not own the flow."""
    sw = switch()
    sw.placed(KEY, "d1")
    for op in (CHANGE, SET):
        assert send(sw, datagram(op, nonce, 1, target=D2.ip if op == CHANGE else None)) == []
    assert sw.stats["bad_nonce"] == 2 and sw.stats["acked"] == 0
    assert sw.entries() == {KEY: D1}


# -- the operations (D2.11) ------------------------------------------------------------------

def test_query_names_the_owner_and_changes_nothing():
    sw = switch()
    (ack,) = send(sw, datagram(QUERY, D3.nonce, 1), src=D3.ip)
    assert ack.dst_ip == D3.ip and ack_of(ack)[2] is None  # no entry: no TARGET_IP
    sw.placed(KEY, "d1")
    (ack,) = send(sw, datagram(QUERY, D3.nonce, 2, full=False), src=D3.ip)
    msg, client, target = ack_of(ack)
    assert (msg["xid"], client, target) == (2, CLIENT, D1.ip) and "cluster_id" not in msg
    assert send(sw, datagram(QUERY, 0x999999, 3)) == []
    assert sw.entries() == {KEY: D1} and sw.stats["bad_nonce"] == 1


def test_set_creates_the_entry_of_the_sender():
    sw = switch()
    (program,) = send(sw, datagram(SET, D2.nonce, 1), src=D2.ip)
    assert program == Program(1, KEY, None, D2)
    (ack,) = sw.programmed(1, 0.0)
    assert ack_of(ack)[2] == D2.ip and sw.owner(KEY) == D2
    (ack,) = send(sw, datagram(SET, D2.nonce, 2), src=D2.ip)  # already so: acked, no Program
    assert ack_of(ack)[2] == D2.ip and sw.stats["noop"] == 1
    assert send(sw, datagram(SET, D1.nonce, 3)) == []  # another's flow
    assert sw.stats["bad_nonce"] == 1 and sw.stats["applied"] == 1


def test_redirect_moves_a_udp_flow_and_refuses_others():
    sw = switch()
    sw.placed(UDP_KEY, "d1")
    sw.placed(KEY, "d1")
    (program,) = send(sw, datagram(REDIRECT, D1.nonce, 1, UDP_KEY, D3.ip))
    assert program == Program(1, UDP_KEY, D1, D3)
    assert ack_of(sw.programmed(1, 0.0)[0])[2] == D3.ip
    assert send(sw, datagram(REDIRECT, D1.nonce, 2, KEY, D3.ip)) == []
    assert sw.stats["bad_proto"] == 1 and sw.entries() == {UDP_KEY: D3, KEY: D1}


def test_a_flow_without_entry_may_be_moved_by_any_registered_device():
    sw = switch()
    (program,) = send(sw, datagram(CHANGE, D3.nonce, 1, target=D2.ip), src=D3.ip)
    assert program == Program(1, KEY, None, D2)


def test_moving_to_the_owner_is_acked_without_a_program():
    sw = switch()
    sw.placed(KEY, "d1")
    (ack,) = send(sw, datagram(CHANGE, D1.nonce, 1, target=D1.ip))
    assert ack_of(ack)[2] == D1.ip and sw.stats["noop"] == 1 and sw.stats["applied"] == 0


@pytest.mark.parametrize("payload, counter", [
    (datagram(CHANGE, D1.nonce, 1, target="10.0.0.99"), "unknown_target"),
    (datagram(CHANGE, D1.nonce, 1), "unknown_target"),  # no TARGET_IP
    (datagram(REDIRECT, D1.nonce, 1, UDP_KEY), "unknown_target"),
    (datagram(5, D1.nonce, 1), "unknown_op"),
    (datagram(ACK, D1.nonce, 1), "unknown_op"),
    (datagram(0, D1.nonce, 1), "unknown_op"),
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip, version=2), "bad_version"),
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip, client=False), "malformed"),
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip)[:-1], "malformed"),  # a TLV cut short
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip) + b"\x01", "malformed"),
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip,
              extra=[{"type": 1, "client_ip": "10.0.0.2"}]), "malformed"),  # CLIENT_IP twice
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip, extra=[{"type": 2, "value": b"abc"}]),
     "malformed"),  # a TARGET_IP of 3 bytes
    (wire.build_xap_udp([], [{"type": 1, "client_ip": CLIENT}]), "malformed"),  # no message
    (b"", "malformed"),
    (b"\x07\x01" + bytes(15), "malformed"),  # unknown form
    (datagram(CHANGE, D1.nonce, 1, target=D2.ip, cluster="10.9.9.9"), "other_cluster"),
])
def test_refused_requests_get_no_ack_and_change_nothing(payload, counter):
    sw = switch()
    sw.placed(KEY, "d1")
    sw.placed(UDP_KEY, "d1")
    assert send(sw, payload) == []
    assert sw.stats[counter] == 1 and sw.stats["acked"] == 0
    assert sw.entries() == {KEY: D1, UDP_KEY: D1}


def test_unknown_tlv_types_are_skipped():
    sw = switch()
    sw.placed(KEY, "d1")
    extra = [{"type": 0, "value": b""}, {"type": 200, "value": b"later"}]
    (program,) = send(sw, datagram(CHANGE, D1.nonce, 1, target=D2.ip, extra=extra))
    assert program.new == D2


def test_program_failed_gives_no_ack_and_a_retransmission_tries_again():
    sw = switch()
    sw.placed(KEY, "d1")
    request = datagram(CHANGE, D1.nonce, 9, target=D2.ip)
    (first,) = send(sw, request)
    assert sw.program_failed(first.token, "nft: busy", 0.01) == []
    assert sw.owner(KEY) == D1 and sw.stats["program_failed"] == 1
    (second,) = send(sw, request, now=0.02)
    assert second == Program(2, KEY, D1, D2)
    assert ack_of(sw.programmed(2, 0.03)[0])[0]["xid"] == 9
    assert sw.stats["applied"] == 1


def test_one_program_per_flow_at_a_time():
    sw = switch()
    sw.placed(KEY, "d1")
    (program,) = send(sw, datagram(CHANGE, D1.nonce, 1, target=D2.ip))
    assert send(sw, datagram(CHANGE, D1.nonce, 2, target=D3.ip)) == []  # another xid
    assert send(sw, datagram(QUERY, D1.nonce, 1)) == []  # another request under a pending xid
    assert sw.stats["busy"] == 2
    sw.programmed(program.token, 0.0)
    assert send(sw, datagram(CHANGE, D1.nonce, 2, target=D3.ip)) == []  # now d2's flow
    assert sw.stats["bad_nonce"] == 1


def test_an_xid_reused_for_another_request_is_a_new_request():
    sw = switch()
    sw.placed(KEY, "d1")
    (p1,) = send(sw, datagram(CHANGE, D1.nonce, 1, target=D2.ip))
    sw.programmed(p1.token, 0.0)
    (p2,) = send(sw, datagram(CHANGE, D2.nonce, 1, target=D1.ip), src=D2.ip)  # d2's own xid 1
    sw.programmed(p2.token, 0.0)
    (p3,) = send(sw, datagram(CHANGE, D1.nonce, 1, target=D3.ip))  # d1 wrapped around
    assert p3 == Program(3, KEY, D1, D3)


@pytest.mark.parametrize("bound", ["size", "age"])
def test_the_memory_is_bounded(bound):
    """A request retransmitted after it left the memory is judged again: here d1 no longer
    owns the flow, so no ack and no second change (the client times out)."""
    sw = switch(memory_size=2) if bound == "size" else switch(memory_age=1.0)
    sw.placed(KEY, "d1")
    request = datagram(CHANGE, D1.nonce, 1, target=D2.ip)
    sw.programmed(send(sw, request)[0].token, 0.0)
    if bound == "size":
        for xid, key in enumerate((FlowKey(CLIENT, 6, p, VIP, 80) for p in (1, 2)), start=2):
            sw.programmed(send(sw, datagram(SET, D1.nonce, xid, key))[0].token, 0.0)
        later = 0.0
    else:
        assert len(send(sw, request, now=1.0)) == 1  # still remembered
        later = 1.5
    assert send(sw, request, now=later) == []
    assert sw.stats["bad_nonce"] == 1 and sw.stats["applied"] == (3 if bound == "size" else 1)
    assert sw.owner(KEY) == D2
    assert len(sw._applied) <= 2 if bound == "size" else not sw._applied


def test_forget_and_the_forwarding_entry():
    sw = switch()
    sw.placed(KEY, "d2")
    assert KEY.entry(D2) == ForwardingEntry(vip=VIP, out_port="p2", client_ip=CLIENT, proto=6,
                                            client_port=40000, vport=80, dst_mac=D2.mac)
    sw.forget(KEY)
    assert sw.owner(KEY) is None and sw.entries() == {}


# -- cascades and the flow's own packets (B2.16) -------------------------------------------

def test_full_form_cascade_each_switch_applies_its_own():
    s1 = XapSwitch(DEVICES, VIP, CLUSTER)
    s2 = XapSwitch(DEVICES, VIP, "10.1.0.254")
    messages = [{"operation": CHANGE, "nonce": D1.nonce, "proto": 6, "sport": 40000,
                 "dport": 80, "xid": 0x30 + i, "cluster_id": c}
                for i, c in enumerate((CLUSTER, "10.1.0.254"))]
    payload = wire.build_xap_udp(messages, [{"type": 1, "client_ip": CLIENT},
                                            {"type": 2, "target_ip": D2.ip}])
    acks = []
    for sw in (s1, s2):
        sw.placed(KEY, "d1")
        (program,) = send(sw, payload)
        (ack,) = sw.programmed(program.token, 0.0)
        acks.append(ack_of(ack)[0])
        assert sw.stats["other_cluster"] == 1 and sw.owner(KEY) == D2
    assert [(m["xid"], m["cluster_id"]) for m in acks] == [(0x30, CLUSTER), (0x31, "10.1.0.254")]


def test_short_form_cascade_the_first_message_is_this_switchs():
    sw = switch()
    sw.placed(KEY, "d1")
    messages = [{"operation": CHANGE, "nonce": D1.nonce, "sport": 40000, "dport": 80,
                 "xid": x} for x in (1, 2, 3)]
    payload = wire.build_xap_udp(messages, [{"type": 1, "client_ip": CLIENT},
                                            {"type": 2, "target_ip": D2.ip}])
    (program,) = send(sw, payload)
    assert ack_of(sw.programmed(program.token, 0.0)[0])[0]["xid"] == 1
    assert sw.stats["other_cluster"] == 2


def test_option_on_the_flows_own_packet_lets_the_sender_claim_the_flow():
    """TCP option 253 on d2's segment to the client: the client is the IP header's, the
    target the sender; the ack goes to d2's own address."""
    sw = switch()
    sw.placed(KEY, "d1")
    option = wire.build_xap_tcp_option([{"operation": CHANGE, "nonce": D2.nonce, "sport": 40000,
                                         "dport": 80, "xid": 5, "cluster_id": CLUSTER}])
    (parsed,) = wire.parse_xap_tcp_options(b"\x01\x01" + option)
    (program,) = sw.on_flow_options(CLIENT, parsed["messages"], 0.0)
    assert program == Program(1, KEY, D1, D2)
    (ack,) = sw.programmed(1, 0.0)
    assert (ack.dst_ip, ack.dst_port) == (D2.ip, PORT)
    assert ack_of(ack)[1:] == (CLIENT, D2.ip)
    assert sw.on_flow_options(CLIENT, parsed["messages"], 0.1) == [ack]  # retransmitted
    unknown = [{**parsed["messages"][0], "nonce": 0x999999}]
    assert sw.on_flow_options(CLIENT, unknown, 0.1) == [] and sw.stats["bad_nonce"] == 1


def test_a_device_claims_a_flow_on_its_packet_and_takes_the_udp_ack():
    """XapClient.claim: the option for a segment of the flow, resent after the RTO until the
    switch's UDP ack (to the sender's own address) settles it."""
    sw, d2 = switch(), XapClient(D2.nonce, CLUSTER)
    sw.placed(KEY, "d1")
    xid, (send_on,) = d2.claim(KEY, 0.0)
    assert isinstance(send_on, SendOnFlow) and send_on.key == KEY
    assert d2.on_timer(d2.next_deadline()) == [send_on]  # no ack yet: the same option again
    (parsed,) = wire.parse_xap_tcp_options(send_on.option)
    (program,) = sw.on_flow_options(CLIENT, parsed["messages"], 0.0)
    assert (program.old, program.new) == (D1, D2)
    (ack,) = sw.programmed(program.token, 0.0)
    assert (ack.dst_ip, ack.dst_port) == (D2.ip, PORT)
    assert d2.on_datagram(CLUSTER, PORT, ack.payload, 0.1) == [Acked(xid, D2.ip)]
    assert d2.pending() == []


# -- misuse ----------------------------------------------------------------------------------

def test_misuse_raises_the_module_error():
    sw = switch()
    with pytest.raises(XapError, match="token"):
        sw.programmed(1, 0.0)
    with pytest.raises(XapError, match="token"):
        sw.program_failed(1, "x", 0.0)
    with pytest.raises(XapError, match="no registered device"):
        sw.placed(KEY, "d9")
    with pytest.raises(XapError, match="another device"):
        XapSwitch([D1, Device("dx", D1.nonce, "10.0.0.99", D1.mac, "p9")], VIP, CLUSTER)
    with pytest.raises(XapError, match="24 bits"):
        XapSwitch([Device("dx", 1 << 24, "10.0.0.99", D1.mac, "p9")], VIP, CLUSTER)
    cl = XapClient(D1.nonce, CLUSTER)
    for op, target, key in ((ACK, None, KEY), (CHANGE, None, KEY), (SET, D2.ip, KEY),
                            (REDIRECT, D2.ip, KEY), (QUERY, None, FlowKey("x", 6, 1, VIP, 80)),
                            (QUERY, None, FlowKey(CLIENT, 6, 1 << 16, VIP, 80)),
                            (CHANGE, "d2", KEY)):
        with pytest.raises(XapError):
            cl.request(op, key, target, 0.0)
    assert issubclass(XapError, ProtocolError) and cl.pending() == []


# -- the client ------------------------------------------------------------------------------

def test_client_request_datagram():
    cl = XapClient(D1.nonce, CLUSTER, first_xid=0xFFFF)
    xid, (send_,) = cl.request(CHANGE, KEY, D2.ip, 0.0)
    assert xid == 0xFFFF and (send_.dst_ip, send_.dst_port) == (CLUSTER, PORT)
    assert send_.payload == datagram(CHANGE, D1.nonce, 0xFFFF, target=D2.ip)
    xid2, (short,) = XapClient(D1.nonce, CLUSTER, full_form=False).request(SET, KEY, None, 0.0)
    assert short.payload == datagram(SET, D1.nonce, 1, full=False)
    assert cl.request(QUERY, KEY, None, 0.0)[0] == 0  # the xid wraps around


def test_client_retransmits_with_a_doubling_rto_then_times_out():
    cl = XapClient(D1.nonce, CLUSTER)
    xid, (first,) = cl.request(CHANGE, KEY, D2.ip, 0.0)
    sends, t = [first], 0.0
    while (deadline := cl.next_deadline()) is not None:
        assert cl.on_timer(deadline - 1e-9) == []  # not before its time
        t = deadline
        actions = cl.on_timer(t)
        sends += [a for a in actions if isinstance(a, SendDatagram)]
        if any(isinstance(a, TimedOut) for a in actions):
            assert actions == [TimedOut(xid)]
            break
    assert len(sends) == MAX_TRIES == 5 and {s.payload for s in sends} == {first.payload}
    assert t == pytest.approx(0.02 + 0.04 + 0.08 + 0.16 + 0.32)
    assert cl.pending() == [] and cl.stats["timed_out"] == 1 and cl.stats["retransmitted"] == 4


def test_client_takes_only_a_matching_ack():
    sw, cl = switch(), XapClient(D1.nonce, CLUSTER)
    sw.placed(KEY, "d1")
    xid, (req,) = cl.request(CHANGE, KEY, D2.ip, 0.0)
    (program,) = send(sw, req.payload)
    (ack,) = sw.programmed(program.token, 0.001)
    msg = wire.parse_xap_udp(ack.payload)["messages"][0]
    tlvs = [{"type": 1, "client_ip": CLIENT}, {"type": 2, "target_ip": D2.ip}]
    strays = [wire.build_xap_udp([{**msg, **change}], tlvs) for change in (
        {"nonce": D2.nonce}, {"xid": xid + 1}, {"sport": 1}, {"operation": CHANGE})]
    strays.append(wire.build_xap_udp([msg], [{"type": 1, "client_ip": "10.0.0.2"}]))
    for stray in strays:
        assert cl.on_datagram(CLUSTER, PORT, stray, 0.002) == []
    assert cl.on_datagram(CLUSTER, PORT, b"\x01\x01", 0.002) == []
    assert cl.stats["stray"] == 5 and cl.stats["malformed"] == 1
    assert cl.on_datagram(CLUSTER, PORT, ack.payload, 0.003) == [Acked(xid, D2.ip)]
    assert cl.on_datagram(CLUSTER, PORT, ack.payload, 0.004) == []
    assert cl.stats["duplicate"] == 1 and cl.next_deadline() is None


def test_client_counts_a_late_ack_after_giving_up():
    cl = XapClient(D1.nonce, CLUSTER, tries=1)
    xid, (req,) = cl.request(QUERY, KEY, None, 0.0)
    assert cl.on_timer(1.0) == [TimedOut(xid)]
    sw = switch()
    (ack,) = send(sw, req.payload)
    assert cl.on_datagram(CLUSTER, PORT, ack.payload, 1.1) == []
    assert cl.stats["late"] == 1


# -- a client and the switch over a lossy channel -----------------------------------------

FATE = st.tuples(st.sampled_from([0, 1, 1, 1, 2]),  # copies delivered: lost, one, duplicated
                 st.floats(0.0, 0.4))  # one-way delay (s): reorders and late copies


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_lossy_channel_changes_the_table_at_most_once(data):
    """Drops, duplicates, delays, slow or failing table updates: the client ends Acked with
    the table changed exactly once, or TimedOut with it changed at most once; never twice,
    and never an ack before the table changed."""
    sw = switch()
    sw.placed(KEY, "d1")
    cl = XapClient(D1.nonce, CLUSTER)
    queue: list = []
    seq = itertools.count()
    programmed_at: list[float] = []
    outcome: list = []

    def push(t, what, arg):
        heapq.heappush(queue, (t, next(seq), what, arg))

    def carry(now, actions, to):
        for a in actions:
            if isinstance(a, SendDatagram):
                copies, delay = data.draw(FATE)
                for i in range(copies):
                    push(now + delay + i * 0.001, to, a.payload)
            elif isinstance(a, Program):
                latency = data.draw(st.floats(0.0, 0.3))
                push(now + latency, "failed" if data.draw(st.integers(0, 9)) == 0 else "done",
                     a.token)
            else:
                outcome.append((now, a))

    xid, actions = cl.request(CHANGE, KEY, D2.ip, 0.0)
    carry(0.0, actions, "switch")
    while queue or cl.next_deadline() is not None:
        deadline = cl.next_deadline()
        if deadline is not None and (not queue or deadline <= queue[0][0]):
            carry(deadline, cl.on_timer(deadline), "switch")
            continue
        now, _, what, arg = heapq.heappop(queue)
        if what == "switch":
            carry(now, sw.on_datagram(D1.ip, PORT, arg, now), "client")
        elif what == "client":
            carry(now, cl.on_datagram(CLUSTER, PORT, arg, now), "switch")
        elif what == "done":
            programmed_at.append(now)
            carry(now, sw.programmed(arg, now), "client")
        else:
            carry(now, sw.program_failed(arg, "injected", now), "client")
    assert len(outcome) == 1, outcome
    (when, result), applied = outcome[0], sw.stats["applied"]
    event(f"{type(result).__name__}, table changed {applied}x")
    assert applied == len(programmed_at) <= 1
    assert sw.owner(KEY) == (D2 if applied else D1)
    if isinstance(result, Acked):
        assert result == Acked(xid, D2.ip) and applied == 1 and when >= programmed_at[0]
    else:
        assert result == TimedOut(xid)


# -- fuzz: nothing raises ----------------------------------------------------------------------

MESSAGE = st.fixed_dictionaries({
    "version": st.sampled_from([1, 1, 1, 0, 2]),
    "operation": st.integers(0, 15),
    "nonce": st.sampled_from([D1.nonce, D2.nonce, D3.nonce, 0, 0xFFFFFF]),
    "proto": st.sampled_from([6, 17, 1]),
    "sport": st.sampled_from([40000, 40001, 0]),
    "dport": st.sampled_from([80, 2049]),
    "xid": st.integers(0, 3),
}, optional={"cluster_id": st.sampled_from([CLUSTER, "10.1.0.254"])})
ADDRESS = st.sampled_from([CLIENT, D1.ip, D2.ip, D3.ip, "10.0.0.99"])
TLV = st.one_of(st.builds(lambda a: {"type": 1, "client_ip": a}, ADDRESS),
                st.builds(lambda a: {"type": 2, "target_ip": a}, ADDRESS),
                st.builds(lambda t, v: {"type": t, "value": v}, st.integers(0, 255),
                          st.binary(max_size=6)))


def datagrams():
    structured = st.builds(
        lambda msgs, tlvs, cut: wire.build_xap_udp(msgs, tlvs)[:cut],
        st.lists(MESSAGE, min_size=1, max_size=3).map(
            lambda ms: [m if "cluster_id" in ms[0] else {k: v for k, v in m.items()
                                                          if k != "cluster_id"}
                        for m in ms if ("cluster_id" in m) == ("cluster_id" in ms[0])]),
        st.lists(TLV, max_size=4), st.one_of(st.none(), st.integers(0, 60)))
    return st.one_of(st.binary(max_size=80), structured)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(datagrams(), st.booleans()), max_size=8))
def test_fuzzed_datagrams_never_raise(items):
    sw, cl = switch(), XapClient(D1.nonce, CLUSTER)
    sw.placed(KEY, "d1")
    cl.request(CHANGE, KEY, D2.ip, 0.0)
    for i, (payload, finish) in enumerate(items):
        for action in sw.on_datagram(D1.ip, PORT, payload, i * 0.1):
            if isinstance(action, Program):
                assert action.new in DEVICES and action.key.vip == VIP
                if finish:
                    sw.programmed(action.token, i * 0.1)
                else:
                    sw.program_failed(action.token, "x", i * 0.1)
        for action in cl.on_datagram(CLUSTER, PORT, payload, i * 0.1):
            assert isinstance(action, Acked)
        sw.on_flow_options(CLIENT, (wire.parse_xap_udp(payload) or {"messages": []})["messages"],
                           i * 0.1)
    assert sum(sw.stats.values()) >= len(items)
