"""The RC and RD packet records and their RoCEv2 frames: ``packet(frame(p)) == p`` for every kind,
the frames are byte for byte what Scapy's own layers build (the one wire format), and the
fixed-offset read is the general one (``parse_general``, on ``parse_roce``) for any frame."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import BTH
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

import ftsslab.layers  # noqa: F401  (the RoCE extension headers' bindings)
from ftsslab.fast import roce as wire
from ftsslab.layers import roce as layer
from ftsslab.san.packets import (
    ACK_SYNDROME,
    OPCODE,
    RD_OPCODE,
    UD_OPCODE,
    AtomicEth,
    Packet,
    Reth,
    frame,
    nak,
    packet,
    parse_general,
)

ADDR = {"eth_dst": "02:00:00:00:00:02", "eth_src": "02:00:00:00:00:01",
        "ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "sport": 49152}
u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


def _packet(*args, **kw) -> Packet:
    """(``st.builds`` would draw every field of a named tuple: only the given ones here)"""
    return Packet(*args, **kw)


psn = st.integers(0, 2**24 - 1)
reth = st.builds(lambda *a: Reth(*a), u64, u32, u32)
kinds = st.one_of(
    st.builds(_packet, st.sampled_from(["SEND_FIRST", "SEND_MIDDLE", "SEND_LAST", "SEND_ONLY"]),
              psn, psn, st.booleans(), payload=st.binary(max_size=64)),
    st.builds(_packet, st.just("SEND_ONLY_WITH_IMMEDIATE"), psn, psn, imm=u32,
              payload=st.binary(max_size=64)),
    st.builds(_packet, st.just("RDMA_WRITE_ONLY"), psn, psn, reth=reth,
              payload=st.binary(max_size=64)),
    st.builds(_packet, st.just("RDMA_WRITE_LAST_WITH_IMMEDIATE"), psn, psn, imm=u32),
    st.builds(_packet, st.just("RDMA_READ_REQUEST"), psn, psn, st.just(True), reth=reth),
    st.builds(_packet, st.just("RDMA_READ_RESPONSE_FIRST"), psn, psn,
              syndrome=st.just(ACK_SYNDROME), msn=psn, payload=st.binary(max_size=64)),
    st.builds(_packet, st.just("ACKNOWLEDGE"), psn, psn,
              syndrome=st.sampled_from([ACK_SYNDROME, nak("REMOTE_ACCESS_ERROR"), 0x21]),
              msn=psn),
    st.builds(_packet, st.sampled_from(["COMPARE_SWAP", "FETCH_ADD"]), psn, psn,
              atomic=st.builds(lambda *a: AtomicEth(*a), u64, u32, u64, u64)),
    st.builds(_packet, st.just("ATOMIC_ACKNOWLEDGE"), psn, psn, syndrome=st.just(ACK_SYNDROME),
              msn=psn, orig=u64),
)
rd = st.one_of(  # RD: an RDETH on every packet, a DETH on every request
    st.builds(_packet, st.sampled_from(["SEND_FIRST", "SEND_ONLY", "RDMA_WRITE_MIDDLE"]), psn,
              psn, st.booleans(), payload=st.binary(max_size=64), qkey=u32, src_qp=psn, eec=psn),
    st.builds(_packet, st.sampled_from(["RDMA_WRITE_ONLY", "RDMA_READ_REQUEST"]), psn, psn,
              reth=reth, qkey=u32, src_qp=psn, eec=psn),
    st.builds(_packet, st.just("FETCH_ADD"), psn, psn, qkey=u32, src_qp=psn, eec=psn,
              atomic=st.builds(lambda *a: AtomicEth(*a), u64, u32, u64, u64)),
    st.builds(_packet, st.sampled_from(["ACKNOWLEDGE", "RDMA_READ_RESPONSE_ONLY"]), psn, psn,
              syndrome=st.sampled_from([ACK_SYNDROME, nak("INVALID_RD_REQUEST")]), msn=psn,
              eec=psn),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(kinds, rd))
def test_a_packet_survives_its_frame_and_scapy_reads_the_same(p):
    data = frame(p, **ADDR)
    back = packet(data)
    assert back == p
    scapy = UDP(data[34:])
    bth = scapy[BTH]
    assert (bth.psn, bth.dqpn, bth.ackreq) == (p.psn, p.dqpn, p.ackreq)
    assert bytes(scapy) == data[34:]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_are_no_packet_and_never_raise(junk):
    assert packet(junk) is None or isinstance(packet(junk)[0], Packet)


def _scapy_layers(p: Packet) -> list:
    """``p``'s extension headers and payload as Scapy layers, in its opcode's chain order."""
    out = []
    for name in wire.HEADER_CHAINS[_opcode(p)]:
        out += {
            "RDETH": lambda: [layer.RDETH(eecnxt=p.eec)],
            "DETH": lambda: [layer.DETH(qkey=p.qkey, srcqp=p.src_qp)],
            "RETH": lambda: [layer.RETH(va=p.reth.va, rkey=p.reth.rkey, dmalen=p.reth.dmalen)],
            "AtomicETH": lambda: [layer.AtomicETH(va=p.atomic.va, rkey=p.atomic.rkey,
                                                  swapdt=p.atomic.swap,
                                                  cmpdt=p.atomic.compare)],
            "AETH": lambda: [layer.AETH(syndrome=p.syndrome, msn=p.msn)],
            "AtomicAckETH": lambda: [layer.AtomicAckETH(origremdt=p.orig)],
            "ImmDt": lambda: [layer.ImmDt(imm=p.imm)],
            wire.SEND_PAYLOAD: lambda: [],
        }[name]()
    return out + ([Raw(p.payload)] if p.payload else [])


def _opcode(p: Packet) -> int:
    return (RD_OPCODE if p.eec is not None else UD_OPCODE if p.qkey is not None
            else OPCODE)[p.op]


def _scapy(p: Packet, ip=None, vlan: bool = False):
    """``p``'s frame built by Scapy alone (its BTH computes the ICRC) on ADDR's path."""
    ip = IP(src=ADDR["ip_src"], dst=ADDR["ip_dst"]) if ip is None else ip
    pkt = Ether(dst=ADDR["eth_dst"], src=ADDR["eth_src"])
    pkt = (pkt / Dot1Q(vlan=5) if vlan else pkt) / ip / UDP(
        sport=ADDR["sport"], dport=4791, chksum=0) / BTH(
        opcode=_opcode(p), dqpn=p.dqpn, psn=p.psn, ackreq=p.ackreq)
    for part in _scapy_layers(p):
        pkt = pkt / part
    return pkt


ud = st.builds(_packet, st.sampled_from(["SEND_ONLY", "SEND_ONLY_WITH_IMMEDIATE"]), psn, psn,
               payload=st.binary(max_size=64), qkey=u32, src_qp=psn, imm=u32)
every = st.one_of(kinds, rd, ud).map(
    lambda p: p if p.op.endswith("IMMEDIATE") or p.qkey is None else p._replace(imm=None))


@settings(max_examples=300, deadline=None)
@given(every)
def test_the_frame_is_scapys_byte_for_byte(p):
    assert frame(p, **ADDR) == bytes(_scapy(p))


@settings(max_examples=200, deadline=None)
@given(every, st.sampled_from(["vlan", "ipv6", "options"]))
def test_frames_off_the_fixed_offsets_are_read_by_the_general_path(p, kind):
    ip = {"ipv6": IPv6(src="2001:db8::1", dst="2001:db8::2"),
          "options": IP(src=ADDR["ip_src"], dst=ADDR["ip_dst"], options=b"\x01" * 4)}.get(kind)
    data = bytes(_scapy(p, ip, vlan=kind == "vlan"))
    assert packet(data) == parse_general(data) == p


@st.composite
def frames(draw) -> bytes:
    """A frame of any opcode, header bytes and payload, maybe changed in a header byte (the
    ICRC then made right again, or not), cut short or padded: most near the fast path's edges."""
    data = bytearray(wire.build_roce(
        **ADDR, opcode=draw(st.integers(0, 255)), dqpn=draw(psn), psn=draw(psn),
        ackreq=draw(st.booleans()), headers=draw(st.binary(max_size=40)),
        payload=draw(st.binary(max_size=40)), tos=draw(st.integers(0, 255)),
        ttl=draw(st.integers(0, 255)), ip_id=draw(st.integers(0, 0xFFFF))))
    for _ in range(draw(st.integers(0, 2))):
        data[draw(st.integers(0, 53))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        try:
            data[-4:] = wire.icrc(bytes(data)).to_bytes(4, "big")
        except ValueError:
            pass
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=8))


@settings(max_examples=1000, deadline=None)
@given(frames())
def test_the_fast_read_is_the_general_read_of_any_frame(data):
    assert packet(data) == parse_general(data)


def test_a_frame_with_a_wrong_icrc_or_a_cut_header_is_no_packet():
    data = frame(Packet("RDMA_WRITE_ONLY", 1, 2, reth=Reth(3, 4, 5), payload=b"abcde"), **ADDR)
    assert packet(data) is not None
    for i in range(14, len(data)):
        if i - 14 not in (1, 8, 10, 11, 26, 27, 32):  # (the ICRC's masked bytes)
            bad = bytearray(data)
            bad[i] ^= 0x10
            assert packet(bytes(bad)) is None, i
    ack = wire.build_roce(**ADDR, opcode=OPCODE["ACKNOWLEDGE"], dqpn=1, psn=2,
                          headers=b"\0\0\0")  # an AETH of 3 bytes
    assert parse_general(ack) is None and packet(ack) is None
