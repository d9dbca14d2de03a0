"""The RC and RD packet records and their RoCEv2 frames: ``packet(frame(p)) == p`` for every kind,
and the frames are what Scapy's own layers build (the one wire format)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import BTH
from scapy.layers.inet import UDP

import ftsslab.layers  # noqa: F401  (the RoCE extension headers' bindings)
from ftsslab.san.packets import ACK_SYNDROME, AtomicEth, Packet, Reth, frame, nak, packet

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
    back, _ = packet(data)
    assert back == p
    scapy = UDP(data[34:])
    bth = scapy[BTH]
    assert (bth.psn, bth.dqpn, bth.ackreq) == (p.psn, p.dqpn, p.ackreq)
    assert bytes(scapy) == data[34:]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_are_no_packet_and_never_raise(junk):
    assert packet(junk) is None or isinstance(packet(junk)[0], Packet)
