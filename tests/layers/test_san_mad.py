"""SanMad, the management datagram of discovery over UD: the Scapy layer, the fast parser and
builder, and the SEND payload registry agree, and nothing raises on arbitrary bytes."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from ftsslab.fast import roce as fast
from ftsslab.layers.roce import DETH, ImmDt, SanMad
from tests.layers.test_roce import ADDR, carrier, scapy_matches_fast

UD_SEND, UD_SEND_IMM = fast.op("UD", "SEND_ONLY"), fast.op("UD", "SEND_ONLY_WITH_IMMEDIATE")


@st.composite
def mad_fields(draw) -> dict:
    """Random values for every SanMad field but the three that make it one."""
    u = lambda bits: st.integers(0, (1 << bits) - 1)  # noqa: E731
    return {
        "method": draw(u(8)), "status": draw(u(16)), "classspecific": draw(u(16)),
        "tid": draw(u(64)), "attrid": draw(u(16)), "reserved": draw(u(16)),
        "attrmod": draw(u(32)), "guid": draw(u(64)), "ports": draw(u(8)),
        "reserved2": draw(u(8)), "qp_count": draw(u(16)),
        "node_desc": draw(st.binary(min_size=64, max_size=64)),
        "qpns": draw(st.lists(u(32), min_size=39, max_size=39)),
    }


@given(values=mad_fields())
@settings(max_examples=100, deadline=None)
def test_layer_roundtrip_and_fast_parse_equal(values):
    raw = bytes(SanMad(**values))
    assert len(raw) == fast.SAN_MAD_LEN == 256
    again = SanMad(raw)
    assert {k: again.getfieldval(k) for k in values} == values
    parsed = fast.parse_san_mad(raw)
    assert parsed == {k: again.getfieldval(k) for k in parsed}


@given(values=mad_fields(), imm=st.none() | st.integers(0, 2**32 - 1),
       tail=st.binary(max_size=12))
@settings(max_examples=100, deadline=None)
def test_in_a_ud_send_scapy_and_the_fast_parser_read_the_same(values, imm, tail):
    """Claimed by the SEND payload registry after a DETH (and ImmDt), and by ``parse_roce``."""
    pkt = carrier(UD_SEND if imm is None else UD_SEND_IMM) / DETH(qkey=fast.GSI_QKEY, srcqp=1)
    if imm is not None:
        pkt = pkt / ImmDt(imm=imm)
    pkt = pkt / SanMad(**values)
    if tail:
        pkt = pkt / Raw(tail)
    raw = bytes(pkt)
    dissected = Ether(raw)
    assert SanMad in dissected and bytes(dissected) == raw
    parsed = fast.parse_roce(raw)
    assert parsed is not None and parsed["icrc_ok"]
    scapy_matches_fast(dissected, parsed)


@given(method=st.sampled_from(sorted(fast.SAN_MAD_METHODS)), tid=st.integers(0, 2**64 - 1),
       guid=st.integers(0, 2**64 - 1), ports=st.integers(0, 255),
       name=st.binary(max_size=80), qpns=st.lists(st.integers(0, 2**24 - 1), max_size=50))
@settings(max_examples=100, deadline=None)
def test_fast_builder_equals_scapy(method, tid, guid, ports, name, qpns):
    """Names are cut to 64 bytes and QP lists to 39 numbers, ``qp_count`` the ones kept."""
    kept = qpns[:39]
    built = fast.build_san_mad(method=method, tid=tid, guid=guid, ports=ports, node_desc=name,
                               qpns=qpns)
    assert built == bytes(SanMad(method=method, tid=tid, guid=guid, ports=ports,
                                 node_desc=name[:64], qp_count=len(kept),
                                 qpns=kept + [0] * (39 - len(kept))))


def test_only_a_whole_mad_of_its_class_and_versions_is_one():
    good = fast.build_san_mad(method=1, tid=7)
    assert fast.parse_san_mad(good) is not None
    assert fast.parse_san_mad(good[:255]) is None
    for at, value in ((0, 2), (1, 0x81), (1, 0x03), (2, 2)):  # base version, class, class ver
        bad = bytearray(good)
        bad[at] = value
        assert fast.parse_san_mad(bytes(bad)) is None
        frame = fast.build_roce(opcode=UD_SEND, headers=struct.pack("!II", fast.GSI_QKEY, 1),
                                payload=bytes(bad), dqpn=1, psn=0, **ADDR)
        assert SanMad not in Ether(frame) and "SanMad" not in fast.parse_roce(frame)


@given(blob=st.binary(max_size=300), head=st.booleans())
@settings(max_examples=1000, deadline=None)
def test_arbitrary_bytes_never_raise_and_both_readers_agree(blob, head):
    """Any payload, with or without SanMad's first three bytes, dissects without raising; the
    fast parser claims it exactly when Scapy does."""
    payload = (b"\x01\x09\x01" + blob) if head else blob
    assert fast.parse_san_mad(payload) is None or len(payload) >= 256
    frame = fast.build_roce(opcode=UD_SEND, headers=struct.pack("!II", fast.GSI_QKEY, 1),
                            payload=payload, dqpn=1, psn=0, **ADDR)
    parsed = fast.parse_roce(frame)
    assert parsed is not None
    scapy_matches_fast(Ether(frame), parsed)
