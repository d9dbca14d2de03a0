"""Reference RoCEv2 frames: every extension header, every AETH syndrome family, the seed 003
RKey flow (message 748 = RKeyAdvert SEND, message 750 = RDMA with RETH), the example of its
Figs. 9B/10A (``tests/san/test_figures.py`` checks that the simulated SAN sends these) and a
discovery GET and GET_RESP on QP1 (``ftsslab.san.discovery``)."""

from __future__ import annotations

from scapy.contrib.roce import AETH, BTH, opcode
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.fast.roce import GSI_QKEY, GSI_QPN
from ftsslab.layers.roce import (
    DETH,
    RDETH,
    RETH,
    AtomicAckETH,
    AtomicETH,
    ImmDt,
    RKeyAdvert,
    SanMad,
    ack_aeth,
    nak_aeth,
    rnr_nak_aeth,
)

# Node 702 (owner of the memory, binds the RKey) and node 703 (remote RDMA user).
MAC_702, MAC_703 = "02:00:00:00:07:02", "02:00:00:00:07:03"
IP_702, IP_703 = "192.0.2.72", "192.0.2.73"
IP6_702, IP6_703 = "2001:db8::702", "2001:db8::703"
QP_702, QP_703 = 0x000702, 0x000703
SPORT = 49152  # RoCEv2 source port (flow entropy); fixed here
VA, RKEY, REGION = 0x00007F3A_10000000, 0x0000C0DE, 0x10000
DATA = bytes(range(64))
PMTU_BLOCK = bytes(range(256))  # multi-packet messages use the smallest IBA path MTU, 256
# Figs. 8-10: message 0's parts 0-3, 500 bytes at a path MTU of 256 (tests/san/test_figures.py)
FIG_PARTS = tuple(bytes([0xA0 + i]) * n for i, n in enumerate((200, 148, 100, 52)))
FIG_MESSAGE = b"".join(FIG_PARTS)


def _frame(op: str, psn: int, *, to_702: bool = True, tr: str = "RC", v6: bool = False,
           ackreq: bool = False) -> Packet:
    src, dst = (MAC_703, MAC_702) if to_702 else (MAC_702, MAC_703)
    if v6:
        ip: Packet = IPv6(src=IP6_703, dst=IP6_702) if to_702 else IPv6(src=IP6_702, dst=IP6_703)
    else:
        ip = IP(src=IP_703, dst=IP_702) if to_702 else IP(src=IP_702, dst=IP_703)
    return (Ether(src=src, dst=dst) / ip / UDP(sport=SPORT, dport=4791, chksum=0)
            / BTH(opcode=opcode(tr, op)[0], dqpn=QP_702 if to_702 else QP_703, psn=psn,
                  ackreq=int(ackreq)))


def packets() -> list[tuple[str, Packet]]:
    advert = RKeyAdvert(kind="BIND", access="LOCAL_WRITE+REMOTE_READ+REMOTE_WRITE+REMOTE_ATOMIC",
                        va=VA, rkey=RKEY, qpn=QP_702, length=REGION)
    resp = {"to_702": False}
    return [
        ("RKeyAdvert BIND in RC SEND ONLY (seed 003 message 748)",
         _frame("SEND_ONLY", 100, to_702=False, ackreq=True) / advert),
        ("RC ACK of the RKeyAdvert SEND (credits 31 = none)",
         _frame("ACKNOWLEDGE", 100) / ack_aeth(msn=1)),
        ("RKeyAdvert UNBIND, one-shot key, null address and zero length (seed 003)",
         _frame("SEND_ONLY", 101, to_702=False)
         / RKeyAdvert(kind="UNBIND", access="REMOTE_WRITE+ONE_SHOT", rkey=RKEY, qpn=QP_702)),
        ("RKeyAdvert BIND of a virtual address in UD SEND ONLY WITH IMMEDIATE (DETH, ImmDt)",
         _frame("SEND_ONLY_WITH_IMMEDIATE", 5, to_702=False, tr="UD")
         / DETH(qkey=0x80010000, srcqp=QP_702) / ImmDt(imm=0x748)
         / RKeyAdvert(access="REMOTE_READ+VIRTUAL+BIND", va=0xFFFF8880_00100000, rkey=0xBEEF,
                      qpn=QP_702, length=4096)),
        ("RC SEND ONLY with an opaque payload (no registered matcher: Raw)",
         _frame("SEND_ONLY", 200) / Raw(b"opaque SEND message")),
        ("RC SEND FIRST, RKeyAdvert at the start of a multi-packet message",
         _frame("SEND_FIRST", 210, to_702=False) / advert),
        ("RC SEND MIDDLE", _frame("SEND_MIDDLE", 211, to_702=False) / Raw(DATA)),
        ("RC SEND LAST WITH IMMEDIATE (ImmDt)",
         _frame("SEND_LAST_WITH_IMMEDIATE", 212, to_702=False) / ImmDt(imm=0xCAFE) / Raw(DATA)),
        ("RC RDMA WRITE ONLY (RETH, seed 003 message 750)",
         _frame("RDMA_WRITE_ONLY", 300, ackreq=True) / RETH(va=VA, rkey=RKEY, dmalen=64)
         / Raw(DATA)),
        ("RC ACK of the RDMA WRITE", _frame("ACKNOWLEDGE", 300, **resp) / ack_aeth(msn=2,
                                                                                  credits=8)),
        ("RC RDMA WRITE FIRST (RETH)",
         _frame("RDMA_WRITE_FIRST", 301) / RETH(va=VA + 64, rkey=RKEY, dmalen=768)
         / Raw(PMTU_BLOCK)),
        ("RC RDMA WRITE MIDDLE", _frame("RDMA_WRITE_MIDDLE", 302) / Raw(PMTU_BLOCK)),
        ("RC RDMA WRITE LAST", _frame("RDMA_WRITE_LAST", 303, ackreq=True) / Raw(PMTU_BLOCK)),
        ("RC RDMA WRITE LAST WITH IMMEDIATE (ImmDt)",
         _frame("RDMA_WRITE_LAST_WITH_IMMEDIATE", 304) / ImmDt(imm=0x1234) / Raw(DATA)),
        ("RC RDMA WRITE ONLY WITH IMMEDIATE (RETH, ImmDt)",
         _frame("RDMA_WRITE_ONLY_WITH_IMMEDIATE", 305) / RETH(va=VA, rkey=RKEY, dmalen=64)
         / ImmDt(imm=0x5678) / Raw(DATA)),
        ("UC RDMA WRITE ONLY (RETH)",
         _frame("RDMA_WRITE_ONLY", 306, tr="UC") / RETH(va=VA, rkey=RKEY, dmalen=64) / Raw(DATA)),
        ("RC RDMA READ REQUEST (RETH)",
         _frame("RDMA_READ_REQUEST", 400) / RETH(va=VA, rkey=RKEY, dmalen=64)),
        ("RC RDMA READ RESPONSE ONLY (AETH)",
         _frame("RDMA_READ_RESPONSE_ONLY", 400, **resp) / ack_aeth(msn=3) / Raw(DATA)),
        ("RC RDMA READ REQUEST, 3 packets of response",
         _frame("RDMA_READ_REQUEST", 401) / RETH(va=VA, rkey=RKEY, dmalen=768)),
        ("RC RDMA READ RESPONSE FIRST (AETH)",
         _frame("RDMA_READ_RESPONSE_FIRST", 401, **resp) / ack_aeth(msn=3) / Raw(PMTU_BLOCK)),
        ("RC RDMA READ RESPONSE MIDDLE",
         _frame("RDMA_READ_RESPONSE_MIDDLE", 402, **resp) / Raw(PMTU_BLOCK)),
        ("RC RDMA READ RESPONSE LAST (AETH)",
         _frame("RDMA_READ_RESPONSE_LAST", 403, **resp) / ack_aeth(msn=4)
         / Raw(PMTU_BLOCK)),
        ("RC RDMA READ REQUEST with a wrong RKey",
         _frame("RDMA_READ_REQUEST", 500) / RETH(va=VA, rkey=0xBAD, dmalen=64)),
        ("RC NAK remote access error (RKey/range mismatch: 'not granted access', seed 003)",
         _frame("ACKNOWLEDGE", 500, **resp) / nak_aeth("REMOTE_ACCESS_ERROR", msn=4)),
        ("RC NAK PSN sequence error",
         _frame("ACKNOWLEDGE", 501, **resp) / nak_aeth("PSN_SEQUENCE_ERROR", msn=4)),
        ("RC NAK invalid request", _frame("ACKNOWLEDGE", 502, **resp)
         / nak_aeth("INVALID_REQUEST", msn=4)),
        ("RC NAK remote operational error", _frame("ACKNOWLEDGE", 503, **resp)
         / nak_aeth("REMOTE_OPERATIONAL_ERROR", msn=4)),
        ("RC RNR NAK (receiver not ready, timer 14)",
         _frame("ACKNOWLEDGE", 504, **resp) / rnr_nak_aeth(14, msn=4)),
        ("RC COMPARE SWAP (AtomicETH)",
         _frame("COMPARE_SWAP", 600) / AtomicETH(va=VA, rkey=RKEY, swapdt=1, cmpdt=0)),
        ("RC ATOMIC ACKNOWLEDGE (AETH, AtomicAckETH)",
         _frame("ATOMIC_ACKNOWLEDGE", 600, **resp) / ack_aeth(msn=5) / AtomicAckETH(origremdt=0)),
        ("RC FETCH ADD (AtomicETH, swapdt = add data)",
         _frame("FETCH_ADD", 601) / AtomicETH(va=VA + 8, rkey=RKEY, swapdt=5)),
        ("RC ATOMIC ACKNOWLEDGE of the FETCH ADD",
         _frame("ATOMIC_ACKNOWLEDGE", 601, **resp) / ack_aeth(msn=6)
         / AtomicAckETH(origremdt=37)),
        ("RD RDMA WRITE ONLY (RDETH, DETH, RETH)",
         _frame("RDMA_WRITE_ONLY", 700, tr="RD") / RDETH(eecnxt=0x7E)
         / DETH(qkey=0x11, srcqp=QP_703) / RETH(va=VA, rkey=RKEY, dmalen=64) / Raw(DATA)),
        ("RD ACK (RDETH, AETH)",
         _frame("ACKNOWLEDGE", 700, tr="RD", **resp) / RDETH(eecnxt=0x7E) / ack_aeth(msn=1)),
        ("RD NAK invalid RD request (RDETH, AETH)",
         _frame("ACKNOWLEDGE", 701, tr="RD", **resp) / RDETH(eecnxt=0x7E)
         / nak_aeth("INVALID_RD_REQUEST", msn=1)),
        ("RC RDMA WRITE ONLY over IPv6 (RETH)",
         _frame("RDMA_WRITE_ONLY", 800, v6=True) / RETH(va=VA, rkey=RKEY, dmalen=64)
         / Raw(DATA)),
        ("RC ACK over IPv6", _frame("ACKNOWLEDGE", 800, v6=True, **resp) / AETH(msn=7)),
        *fig_9b_10a(),
        ("SanMad GET of ENDNODE_INFO, UD from QP1 to QP1 (seed 003 discovery over UD)",
         _gsi(SanMad(method="GET", tid=1))),
        ("SanMad GET_RESP: the endnode's name, GUID, ports and QPs",
         _gsi(SanMad(method="GET_RESP", tid=1, guid=0x0002C90300000702, ports=1,
                     node_desc=b"node-702", qp_count=2, qpns=[1, QP_702] + [0] * 37),
              to_702=False)),
    ]


def _gsi(mad: SanMad, to_702: bool = True) -> Packet:
    """A UD SEND ONLY from QP1 to QP1 (the GSI's, under its Q_Key)."""
    pkt = _frame("SEND_ONLY", 0, to_702=to_702, tr="UD")
    pkt[BTH].dqpn = GSI_QPN
    return pkt / DETH(qkey=GSI_QKEY, srcqp=GSI_QPN) / mad


def fig_9b_10a() -> list[tuple[str, Packet]]:
    """Seed 003 Fig. 9B's two frames of message 0 and Fig. 10A's ACK of each (L633-645)."""
    resp = {"to_702": False}
    return [
        ("Fig. 9B frame 0 (336a): RC SEND FIRST, part 0 and the first 56 bytes of part 1",
         _frame("SEND_FIRST", 100, ackreq=True) / Raw(FIG_MESSAGE[:256])),
        ("Fig. 9B frame 1 (336b): RC SEND LAST, the rest of part 1 and parts 2 and 3",
         _frame("SEND_LAST", 101, ackreq=True) / Raw(FIG_MESSAGE[256:])),
        ("Fig. 10A ACK 346a of frame 0", _frame("ACKNOWLEDGE", 100, **resp) / ack_aeth(msn=0)),
        ("Fig. 10A ACK 346b of frame 1", _frame("ACKNOWLEDGE", 101, **resp) / ack_aeth(msn=1)),
    ]
