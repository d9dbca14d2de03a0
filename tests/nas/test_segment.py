# SPDX-License-Identifier: GPL-2.0-or-later
"""The TCH segment record: its bytes equal Scapy's, Scapy's bytes decode to it, and
decoding arbitrary bytes never raises."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from ftsslab.layers.tch import TCHEndpoint, TCHUpdate, tch_flags, tch_options
from ftsslab.nas.segment import (
    ACK,
    FIN,
    SYN,
    Segment,
    checksums_ok,
    decode,
    decode_frame,
)

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
IPV4 = st.ip_addresses(v=4).map(str)
FUZZ = settings(max_examples=2000, deadline=None)

segments = st.builds(
    Segment, src=IPV4, dst=IPV4, sport=U16, dport=U16, seq=U32, ack=U32,
    flags=st.integers(0, 0x1FF), tch=st.integers(0, 7), window=U16,
    endpoint=st.none() | st.tuples(U16, IPV4), update=st.none() | st.tuples(U32, U32),
    payload=st.binary(max_size=1460), ttl=st.integers(0, 255), ip_id=U16,
)


def scapy_packet(seg: Segment, others=()) -> IP:
    """The same segment built by the Scapy layer (the truth for the wire format)."""
    has_tch = seg.endpoint is not None or seg.update is not None
    opts = tch_options(seg.endpoint, seg.update, others) if has_tch or others else []
    pkt = IP(src=seg.src, dst=seg.dst, ttl=seg.ttl, id=seg.ip_id) / TCP(
        sport=seg.sport, dport=seg.dport, seq=seg.seq, ack=seg.ack, flags=seg.flags,
        reserved=seg.tch, window=seg.window, options=opts)
    return pkt / Raw(seg.payload) if seg.payload else pkt


@given(segments)
def test_encode_equals_scapy(seg):
    raw = seg.encode()
    ref = scapy_packet(seg)
    assert raw == bytes(ref)
    # the checksums are what Scapy computes for the packet it dissects
    back = IP(raw)
    del back.chksum, back[TCP].chksum
    rebuilt = IP(bytes(back))
    assert (rebuilt.chksum, rebuilt[TCP].chksum) == (IP(raw).chksum, IP(raw)[TCP].chksum)
    assert checksums_ok(raw)


@given(segments)
def test_scapy_bytes_decode_to_the_same_segment(seg):
    assert decode(bytes(scapy_packet(seg))) == seg


@given(segments)
def test_scapy_dissects_the_tch_fields(seg):
    pkt = IP(seg.encode())
    assert tch_flags(pkt) == {n for n, b in (("HND", 4), ("SET", 2), ("END", 1)) if seg.tch & b}
    opts = dict(o for o in pkt[TCP].options if o[0] in ("TCHEndpoint", "TCHUpdate"))
    assert opts.get("TCHEndpoint") == (TCHEndpoint(*seg.endpoint) if seg.endpoint else None)
    assert opts.get("TCHUpdate") == (TCHUpdate(*seg.update) if seg.update else None)
    assert bytes(pkt[TCP].payload) == seg.payload


@given(segments, st.sampled_from([[("MSS", 1460)], [("WScale", 7), ("NOP", None)],
                                  [("SAckOK", b""), ("Timestamp", (1, 2))]]))
def test_unknown_options_are_ignored(seg, others):
    raw = bytes(scapy_packet(seg, others))
    got = decode(raw)
    assert got == seg
    assert not checksums_ok(raw[:-1] + bytes([raw[-1] ^ 1]))


@given(segments, st.none() | st.integers(0, 4095), st.binary(max_size=20))
def test_decode_frame_untagged_and_one_vlan_tag(seg, vlan, pad):
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkt = scapy_packet(seg)
    frame = eth / pkt if vlan is None else eth / Dot1Q(vlan=vlan) / pkt
    # Ethernet padding after the IP total length is not part of the segment
    assert decode_frame(bytes(frame) + pad) == seg


def test_not_a_tch_segment_is_none():
    seg = Segment("10.0.0.11", "10.0.0.12", 40000, 80, 1, 0, SYN, tch=4,
                  endpoint=(51000, "10.0.0.1"))
    good = seg.encode()
    assert decode(good) == seg
    udp = bytearray(good)
    udp[9] = 17
    assert decode(bytes(udp)) is None
    fragment = bytearray(good)
    fragment[6] = 0x20  # MF
    assert decode(bytes(fragment)) is None
    assert decode(good[:30]) is None  # shorter than its total length
    assert decode_frame(bytes(Ether() / Dot1Q() / Dot1Q() / IP(good))) is None  # two tags
    assert decode_frame(bytes(Ether(type=0x86DD)) + good) is None


def test_tch_option_of_the_wrong_length_is_none():
    for opt in [(255, b"\x00" * 5), (254, b"\x00" * 9), (255, b"\x00" * 7)]:
        pkt = IP(src="10.0.0.11", dst="10.0.0.12") / TCP(flags="S", reserved=4, options=[opt])
        assert decode(bytes(pkt)) is None, opt
    twice = IP() / TCP(options=[("TCHEndpoint", (1, "1.2.3.4"))] * 2)
    assert decode(bytes(twice)) is None
    unknown = IP() / TCP(options=[(34, b"\x00" * 3), (253, b"\x00" * 6)])  # TFO, XAP-ish
    assert decode(bytes(unknown)) is not None
    past_the_end = bytearray(bytes(IP() / TCP(options=[("MSS", 1460)])))
    past_the_end[20 + 21] = 9  # MSS length runs past the option area
    assert decode(bytes(past_the_end)) is None


def test_str_names_flags_and_options():
    seg = Segment("10.0.0.11", "10.0.0.12", 40000, 80, 7, 9, FIN | ACK, tch=4 | 1,
                  update=(1, 2), payload=b"xy")
    assert str(seg) == ("10.0.0.11:40000 > 10.0.0.12:80 FIN|ACK|HND|END seq=7 ack=9"
                        " update=(1, 2) len=2")


@FUZZ
@given(st.binary(max_size=120))
def test_decode_never_raises_on_arbitrary_bytes(data):
    decode(data)
    decode_frame(data)
    checksums_ok(data)


@FUZZ
@given(segments, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 80))
def test_decode_never_raises_on_damaged_segments(seg, flips, cut):
    raw = bytearray(seg.encode())
    for at, value in flips:
        if at < len(raw):
            raw[at] = value
    damaged = bytes(raw[: len(raw) - cut])
    got = decode(damaged)
    assert got is None or isinstance(got, Segment)
    decode_frame(b"\x02" * 12 + b"\x08\x00" + damaged)


def test_flags_that_do_not_fit_raise():
    for bad in (dict(flags=0x200), dict(tch=8), dict(flags=-1)):
        with pytest.raises(ValueError, match="do not fit"):
            dataclasses.replace(Segment("10.0.0.11", "10.0.0.12", 1, 2, 3, 4, ACK), **bad).encode()


def test_record_is_frozen():
    seg = Segment("10.0.0.11", "10.0.0.12", 1, 2, 3, 4, ACK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.seq = 5  # type: ignore[misc]


def test_an_xap_claim_option_leads_the_header_and_equals_scapys_bytes():
    """A claim (``xap: tcp-option``): option 253 first, EOL padding, as Scapy builds it."""
    from ftsslab.fast.xap import build_xap_tcp_option

    option = build_xap_tcp_option([{"operation": 2, "nonce": 7, "sport": 40000, "dport": 80,
                                    "xid": 9, "cluster_id": "10.0.0.254"}])
    seg = Segment("10.0.0.100", "10.0.0.1", 80, 40000, 5, 6, ACK, window=1000, options=option)
    want = IP(src="10.0.0.100", dst="10.0.0.1", id=0) / TCP(
        sport=80, dport=40000, seq=5, ack=6, flags="A", window=1000,
        options=[(253, option[2:]), ("EOL", None)])
    assert seg.encode() == bytes(want)
    with pytest.raises(ValueError, match="do not share"):
        Segment("10.0.0.1", "10.0.0.2", 1, 2, 0, 0, ACK, update=(1, 2), options=option).encode()
