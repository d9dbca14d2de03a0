"""SwitchCore: the data plane of LAB.md, sans-IO."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab.model import ForwardingEntry
from ftsslab.lab.switch import SwitchCore, Transmit, format_entry, parse_mac

PORTS = ["p1", "p2", "p3"]
M1, M2, M3 = (bytes.fromhex(f"02000000000{i}") for i in (1, 2, 3))
BCAST = b"\xff" * 6


def ipv4(src="10.0.0.1", dst="10.0.0.100", proto=17, sport=40000, dport=80, payload=b"x",
         frag=0, ihl=5):
    th = struct.pack("!HH", sport, dport) + (b"\x00" * 4 if proto == 17 else b"\x00" * 16)
    body = th + payload
    total = ihl * 4 + len(body)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return hdr + b"\x00" * (ihl * 4 - 20) + body


def eth(dst, src, payload=b"", ethertype=0x0800):
    return dst + src + struct.pack("!H", ethertype) + payload


def core(**kw):
    return SwitchCore(PORTS, **kw)


def ports(actions):
    return [a.port for a in actions]


# ---- learning bridge ------------------------------------------------------------------------

def test_unknown_unicast_floods_then_learns():
    sw = core()
    f = eth(M2, M1, b"hello")
    assert ports(sw.on_frame("p1", f, 0)) == ["p2", "p3"]
    assert sw.mac_table() == {"02:00:00:00:00:01": "p1"}
    # M2 answers from p2: M1 is known on p1 -> unicast
    back = eth(M1, M2)
    assert sw.on_frame("p2", back, 0) == [Transmit("p1", back)]
    # now M2 is known too
    assert ports(sw.on_frame("p1", f, 0)) == ["p2"]
    assert sw.stats["learned"] == 2 and sw.stats["forwarded"] == 2 and sw.stats["flooded"] == 1


def test_broadcast_and_multicast_flood_to_other_up_ports():
    sw = core()
    sw.on_frame("p3", eth(BCAST, M3), 0)          # M3 learned; dst broadcast never learned
    assert ports(sw.on_frame("p1", eth(BCAST, M1), 0)) == ["p2", "p3"]
    assert ports(sw.on_frame("p1", eth(bytes.fromhex("01005e000001"), M1), 0)) == ["p2", "p3"]
    sw.set_port("p3", False)
    assert ports(sw.on_frame("p1", eth(BCAST, M1), 0)) == ["p2"]


def test_same_port_drop_and_move():
    sw = core()
    sw.on_frame("p1", eth(BCAST, M1), 0)
    sw.on_frame("p1", eth(BCAST, M2), 0)
    assert sw.on_frame("p1", eth(M2, M1), 0) == []
    assert sw.stats["same_port_drop"] == 1
    sw.on_frame("p3", eth(BCAST, M2), 0)            # M2 moved to p3
    assert ports(sw.on_frame("p1", eth(M2, M1), 0)) == ["p3"]
    assert sw.stats["moved"] == 1


def test_port_down_carries_nothing_and_forgets_its_macs():
    sw = core()
    sw.on_frame("p2", eth(BCAST, M2), 0)
    sw.set_port("p2", False)
    assert sw.on_frame("p2", eth(BCAST, M2), 0) == []
    assert sw.stats["rx_port_down"] == 1
    assert "02:00:00:00:00:02" not in sw.mac_table()
    assert ports(sw.on_frame("p1", eth(M2, M1), 0)) == ["p3"]   # unknown again, p2 down
    sw.set_port("p2", True)
    assert ports(sw.on_frame("p1", eth(M2, M1), 0)) == ["p2", "p3"]


def test_kernel_rules_invalid_source_link_local_and_own_macs():
    sw = core(local_macs=["02:00:00:00:00:aa"])
    assert sw.on_frame("p1", eth(M2, bytes.fromhex("010000000001")), 0) == []
    assert sw.on_frame("p1", eth(M2, b"\x00" * 6), 0) == []
    assert sw.stats["invalid_src"] == 2
    stp = bytes.fromhex("0180c2000000")
    pause = bytes.fromhex("0180c2000001")
    eapol = bytes.fromhex("0180c2000003")
    assert ports(sw.on_frame("p1", eth(stp, M1), 0)) == ["p2", "p3"]   # STP off: flooded
    assert sw.on_frame("p1", eth(pause, M1), 0) == []
    assert sw.on_frame("p2", eth(eapol, M2), 0) == []                   # consumed...
    assert sw.mac_table()["02:00:00:00:00:02"] == "p2"                  # ...but learned
    assert sw.on_frame("p1", eth(bytes.fromhex("0200000000aa"), M1), 0) == []
    assert sw.stats["local"] == 1
    fwd = core(group_fwd_mask=1 << 3)
    assert ports(fwd.on_frame("p1", eth(eapol, M1), 0)) == ["p2", "p3"]


# ---- forwarding table -----------------------------------------------------------------------

def test_table_match_rewrites_and_beats_learning():
    sw = core()
    sw.on_frame("p3", eth(BCAST, M3), 0)
    e = ForwardingEntry(vip="10.0.0.100", out_port="p2", client_ip="10.0.0.1", proto=17,
                        client_port=40000, vport=80, dst_mac="02:00:00:00:00:02")
    ev = sw.add(e, 1.5)
    assert ev[0].kind == "table-add" and ev[0].time == 1.5 and "-> p2" in ev[0].detail
    f = eth(M3, M1, ipv4())
    out = sw.on_frame("p1", f, 2)
    assert out == [Transmit("p2", M2 + f[6:])]
    assert "02:00:00:00:00:01" not in sw.mac_table()   # table hits are not learned
    # each field must match
    for kw in ({"src": "10.0.0.9"}, {"dst": "10.0.0.101"}, {"proto": 6}, {"sport": 1},
               {"dport": 81}):
        assert ports(sw.on_frame("p1", eth(M3, M1, ipv4(**kw)), 2)) == ["p3"], kw
    assert sw.remove(e, 3)[0].kind == "table-remove"
    assert ports(sw.on_frame("p1", f, 3)) == ["p3"]


def test_table_first_match_wins_hairpin_and_wildcards():
    sw = core()
    wide = ForwardingEntry(vip="10.0.0.100", out_port="p1")            # hairpin
    narrow = ForwardingEntry(vip="10.0.0.100", out_port="p3", vport=80)
    sw.add(wide, 0)
    sw.add(narrow, 0)
    f = eth(M2, M1, ipv4())
    assert sw.on_frame("p1", f, 0) == [Transmit("p1", f)]
    sw.remove(wide, 0)
    assert sw.on_frame("p1", f, 0) == [Transmit("p3", f)]
    sw.set_port("p3", False)
    assert sw.on_frame("p1", f, 0) == []                             # out-port down
    assert sw.stats["table_drop_port_down"] == 1


def test_table_matching_details_vlan_fragments_invalid_headers():
    sw = core()
    sw.add(ForwardingEntry(vip="10.0.0.100", out_port="p3", vport=80), 0)
    tagged = M2 + M1 + b"\x81\x00\x00\x05" + b"\x08\x00" + ipv4()
    assert ports(sw.on_frame("p1", tagged, 0)) == ["p3"]
    later_fragment = eth(M2, M1, ipv4(frag=10))                      # no ports there
    assert ports(sw.on_frame("p1", later_fragment, 0)) == ["p2", "p3"]
    options = eth(M2, M1, ipv4(ihl=6))
    assert ports(sw.on_frame("p1", options, 0)) == ["p3"]
    bad = bytearray(eth(M2, M1, ipv4()))
    bad[14] = 0x44                                                   # IHL 4: no ports
    assert ports(sw.on_frame("p1", bytes(bad), 0)) == ["p2", "p3"]
    truncated = eth(M2, M1, ipv4())[:-3]                             # total length > frame
    assert ports(sw.on_frame("p1", truncated, 0)) == ["p2", "p3"]
    # like nft's `ip daddr` (no header validation) a vip-only entry still matches these
    sw.add(ForwardingEntry(vip="10.0.0.100", out_port="p1"), 0)
    assert ports(sw.on_frame("p1", bytes(bad), 0)) == ["p1"]
    assert ports(sw.on_frame("p1", truncated, 0)) == ["p1"]
    assert ports(sw.on_frame("p1", eth(M2, M1, ipv4()[:19]), 0)) == ["p2", "p3"]  # < 20 bytes


def test_ports_are_raw_transport_bytes_like_nft_th():
    sw = core()
    sw.add(ForwardingEntry(vip="10.0.0.100", out_port="p3", client_port=0x0800), 0)
    echo = eth(M2, M1, ipv4(proto=1, sport=0x0800, dport=0x1234))  # ICMP type 8 code 0
    assert ports(sw.on_frame("p1", echo, 0)) == ["p3"]


def test_table_validation():
    sw = core()
    e = ForwardingEntry(vip="10.0.0.100", out_port="p2")
    sw.add(e, 0)
    sw.add(e, 0)                     # a duplicate is one more rule, as on nft
    assert sw.entries() == [e, e]
    sw.remove(e, 0)
    with pytest.raises(ValueError, match="not in the table"):
        sw.remove(ForwardingEntry(vip="10.0.0.1", out_port="p2"), 0)
    for bad in (ForwardingEntry(vip="10.0.0.300", out_port="p2"),
                ForwardingEntry(vip="10.0.0.1", out_port="p9"),
                ForwardingEntry(vip="10.0.0.1", out_port="p2", vport=70000),
                ForwardingEntry(vip="10.0.0.1", out_port="p2", dst_mac="zz")):
        with pytest.raises(ValueError):
            sw.add(bad, 0)
    assert sw.entries() == [e]
    assert parse_mac("2:0:0:0:0:1") == bytes.fromhex("020000000001")
    assert format_entry(e) == "vip=10.0.0.100 -> p2"


def test_malformed_counted():
    sw = core()
    for f in (b"", b"\x01" * 13, "text", None, 5):
        assert sw.on_frame("p1", f, 0) == []
    assert sw.on_frame("nope", eth(BCAST, M1), 0) == []
    assert sw.stats["malformed"] == 5 and sw.stats["rx_unknown_port"] == 1


# ---- properties -----------------------------------------------------------------------------

port_st = st.sampled_from(PORTS)
mac_st = st.one_of(st.sampled_from([M1, M2, M3, BCAST]), st.binary(min_size=6, max_size=6))
frame_st = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda d, s, p: eth(d, s, p), mac_st, mac_st, st.binary(max_size=40)),
    st.builds(lambda d, s, src, sp, dp, pr: eth(d, s, ipv4(src=src, sport=sp, dport=dp, proto=pr)),
              mac_st, mac_st, st.sampled_from(["10.0.0.1", "10.0.0.2"]),
              st.sampled_from([1, 40000]), st.sampled_from([80, 81]), st.sampled_from([6, 17])),
)
entry_st = st.builds(
    ForwardingEntry, vip=st.just("10.0.0.100"), out_port=port_st,
    client_ip=st.sampled_from([None, "10.0.0.1"]), proto=st.sampled_from([None, 6, 17]),
    client_port=st.sampled_from([None, 40000]), vport=st.sampled_from([None, 80]),
    dst_mac=st.sampled_from([None, "02:00:00:00:00:09"]))
ops_st = st.lists(st.tuples(port_st, frame_st), max_size=30)


def run(entries, ops, downs=()):
    sw = core()
    for e in entries:
        sw.add(e, 0)
    for p in downs:
        sw.set_port(p, False)
    return sw, [sw.on_frame(p, f, i) for i, (p, f) in enumerate(ops)]


@settings(max_examples=150, deadline=None)
@given(st.lists(entry_st, max_size=3), ops_st, st.lists(port_st, max_size=1))
def test_never_raises_and_deterministic(entries, ops, downs):
    sw1, out1 = run(entries, ops, downs)
    sw2, out2 = run(entries, ops, downs)
    assert out1 == out2 and sw1.stats == sw2.stats and sw1.mac_table() == sw2.mac_table()
    for actions in out1:
        for a in actions:
            assert sw1.port_up(a.port) and isinstance(a.frame, bytes)


@settings(max_examples=150, deadline=None)
@given(ops_st)
def test_bridge_never_sends_back_to_in_port(ops):
    sw = core()
    for p, f in ops:
        assert p not in ports(sw.on_frame(p, f, 0))


@settings(max_examples=150, deadline=None)
@given(entry_st, ops_st, port_st, frame_st)
def test_table_match_beats_learning(entry, warmup, port, frame):
    learned = core()
    for p, f in warmup:
        learned.on_frame(p, f, 0)
    learned.add(entry, 0)
    fresh = core()
    fresh.add(entry, 0)
    out = learned.on_frame(port, frame, 0)
    hit = len(frame) >= 14 and fresh._lookup(frame) is not None
    if hit:
        new = frame if entry.dst_mac is None else parse_mac(entry.dst_mac) + frame[6:]
        assert out == [Transmit(entry.out_port, new)]
        assert out == fresh.on_frame(port, frame, 0)


@settings(max_examples=200, deadline=None)
@given(port_st, st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(port, data):
    sw = core()
    sw.add(ForwardingEntry(vip="10.0.0.100", out_port="p2", vport=80, client_port=1), 0)
    sw.on_frame(port, data, 0)
    sw.on_frame(port, bytearray(data), 0)
    sw.on_frame(port, memoryview(data), 0)
