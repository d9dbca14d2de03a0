"""The transport packets a queue pair sends and takes, as typed records (B3.14), and their
RoCEv2 frames: ``frame`` builds one on its path's ``fast.roce.Template``, ``packet`` reads one
back -- the common frame (Ether/IPv4 without options/UDP 4791) by ``struct`` at fixed offsets,
the header chain from ``fast.roce.HEADER_CHAINS`` and ``EXT_HEADERS``, anything else by
``fast.roce.parse_roce`` (``parse_general``, also the reference the fast read is tested
against). ``fast.roce`` is the one source of the wire format, which the Scapy layers and the Lua
dissector are proven equal to (tests/layers, tests/wireshark).

An AETH's syndrome (IBA 9.7.5.1, table 42): ACK with a credit count, RNR NAK with a timer, NAK
with a code (``fast.roce.NAK_CODES``).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ftsslab.fast import roce as wire

RC, RD, UD = wire.TRANSPORTS["RC"], wire.TRANSPORTS["RD"], wire.TRANSPORTS["UD"]
OPCODE = {name: RC + value for name, value in wire.OPS.items()}
RD_OPCODE = {name: RD + value for name, value in wire.OPS.items()}
UD_OPCODE = {name: UD + wire.OPS[name] for name in ("SEND_ONLY", "SEND_ONLY_WITH_IMMEDIATE")}
NAME = {value: name for opcodes in (OPCODE, RD_OPCODE, UD_OPCODE)
        for name, value in opcodes.items()}
NAK_CODE = {name: code for code, name in wire.NAK_CODES.items()}
ACK_SYNDROME = (wire.AETH_ACK << 5) | wire.AETH_CREDITS_INVALID
PSN_MASK = (1 << 24) - 1
# operations by what they are (a set lookup per packet, not string tests)
RESPONSES = frozenset(n for n in wire.OPS if n.startswith(
    ("RDMA_READ_RESPONSE", "ACKNOWLEDGE", "ATOMIC_ACKNOWLEDGE")))
SENDS = frozenset(n for n in wire.OPS if n.startswith("SEND_"))
WRITES = frozenset(n for n in wire.OPS if n.startswith("RDMA_WRITE_"))
MESSAGE_ENDS = frozenset(n for n in wire.OPS if n.endswith(("LAST", "ONLY", "WITH_IMMEDIATE")))


def psn_add(psn: int, n: int) -> int:
    return (psn + n) & PSN_MASK


def psn_diff(a: int, b: int) -> int:
    """``a - b`` in the 24-bit PSN space, as a signed number within half of it."""
    d = (a - b) & PSN_MASK
    return d - (1 << 24) if d >= 1 << 23 else d


class Reth(NamedTuple):
    va: int
    rkey: int
    dmalen: int


class AtomicEth(NamedTuple):
    va: int
    rkey: int
    swap: int  # the swap data, or the add data of a FETCH_ADD
    compare: int


class Packet(NamedTuple):
    """One packet: its operation (an ``fast.roce.OPS`` name), PSN, destination QP. The
    transport is told by the headers: an RDETH (``eec``) makes it RD, else a DETH (``qkey``)
    UD, else RC."""

    op: str
    psn: int
    dqpn: int
    ackreq: bool = False
    reth: Reth | None = None
    atomic: AtomicEth | None = None
    syndrome: int | None = None  # AETH
    msn: int = 0
    orig: int | None = None  # AtomicAckETH: the remote data before the atomic
    imm: int | None = None
    payload: bytes = b""
    qkey: int | None = None  # DETH (UD, RD requests): set, the packet is a datagram's
    src_qp: int = 0
    eec: int | None = None  # RDETH (RD): the destination's EE context

    @property
    def is_response(self) -> bool:
        return self.op in RESPONSES


def ack_kind(syndrome: int) -> tuple[str, int]:
    """("ACK", credits) / ("RNR", timer) / ("NAK", code) of an AETH syndrome."""
    kind, value = syndrome >> 5, syndrome & 0x1F
    if kind == wire.AETH_RNR_NAK:
        return "RNR", value
    if kind == wire.AETH_NAK:
        return "NAK", value
    return "ACK", value


def nak(code: str) -> int:
    return (wire.AETH_NAK << 5) | NAK_CODE[code]


def rnr_nak(timer: int) -> int:
    return (wire.AETH_RNR_NAK << 5) | (timer & 0x1F)


_EXT = wire.EXT_HEADERS
_RDETH_S, _DETH_S, _RETH_S, _AETH_S, _ATOMIC_ACK_S, _ATOMIC_S, _IMM_S = (_EXT[h] for h in (
    "RDETH", "DETH", "RETH", "AETH", "AtomicAckETH", "AtomicETH", "ImmDt"))


def frame(p: Packet, *, eth_dst: str, eth_src: str, ip_src: str, ip_dst: str,
          sport: int) -> bytes:
    """The RoCEv2 frame of ``p`` (Ether/IPv4/UDP 4791/BTH/.../ICRC)."""
    op, psn, dqpn, ackreq, reth, atomic, syndrome, msn, orig, imm, payload, qkey, src_qp, eec = p
    headers = b""
    if eec is not None:
        headers += _RDETH_S.pack(eec & PSN_MASK)
    if qkey is not None:
        headers += _DETH_S.pack(qkey, src_qp & PSN_MASK)
    if reth is not None:
        headers += _RETH_S.pack(*reth)
    if syndrome is not None:
        headers += _AETH_S.pack((syndrome << 24) | (msn & PSN_MASK))
    if orig is not None:
        headers += _ATOMIC_ACK_S.pack(orig)
    if atomic is not None:
        headers += _ATOMIC_S.pack(*atomic)
    if imm is not None:
        headers += _IMM_S.pack(imm)
    opcode = (RD_OPCODE if eec is not None else UD_OPCODE if qkey is not None else OPCODE)[op]
    return _template(eth_dst, eth_src, ip_src, ip_dst, sport).build(opcode, dqpn, psn, headers,
                                                                   payload, ackreq)


# ---- reading: each extension header's unpacked values into the Packet's fields (a list)
_, _, _, _, _RETH, _ATOMIC, _SYNDROME, _MSN, _ORIG, _IMM, _PAYLOAD, _QKEY, \
    _SRC_QP, _EEC = range(len(Packet._fields))


def _rdeth(f: list, eecnxt: int) -> None:
    f[_EEC] = eecnxt & PSN_MASK


def _deth(f: list, qkey: int, srcqp: int) -> None:
    f[_QKEY], f[_SRC_QP] = qkey, srcqp & PSN_MASK


def _reth(f: list, va: int, rkey: int, dmalen: int) -> None:
    f[_RETH] = Reth(va, rkey, dmalen)


def _atomic(f: list, va: int, rkey: int, swap: int, compare: int) -> None:
    f[_ATOMIC] = AtomicEth(va, rkey, swap, compare)


def _aeth(f: list, v: int) -> None:
    f[_SYNDROME], f[_MSN] = v >> 24, v & PSN_MASK


def _atomic_ack(f: list, orig: int) -> None:
    f[_ORIG] = orig


def _imm(f: list, imm: int) -> None:
    f[_IMM] = imm


_READERS = {"RDETH": _rdeth, "DETH": _deth, "RETH": _reth, "AtomicETH": _atomic,
            "AETH": _aeth, "AtomicAckETH": _atomic_ack, "ImmDt": _imm}


def _plan(opcode: int) -> tuple[str, int, tuple]:
    """(operation, the payload's offset, ((reader, layout, offset), ...))"""
    steps, off = [], 0
    for name in wire.HEADER_CHAINS[opcode]:
        if name != wire.SEND_PAYLOAD:  # (the SEND payload stays the payload)
            layout = _EXT[name]
            steps.append((_READERS[name], layout, _HEAD.size + off))
            off += layout.size
    return NAME[opcode], _HEAD.size + off, tuple(steps)


# Ether type, IPv4 version+IHL, total length, protocol, UDP destination port, UDP length, then
# the BTH's opcode, destination QP word and PSN word: a frame's fixed-offset fields
_HEAD = struct.Struct("!12xHBxH5xB12xHH2xB3xII")
_PLANS = {opcode: _plan(opcode) for opcode in NAME}
_BLANK = Packet("", 0, 0)[_RETH:]  # the fields after op, psn, dqpn, ackreq, as by default
_MIN_FRAME, _ETH_P_IP, _ROCEV2 = _HEAD.size + 4, wire.ETH_P_IP, wire.ROCEV2_UDP_PORT
_icrc_ok, _template = wire.icrc_ok, wire.template  # (globals, not attributes: it adds up)
_new = tuple.__new__  # (a NamedTuple's own __new__ is a Python function: this is its C core)


def packet(data: bytes) -> Packet | None:
    """The packet of a RoCEv2 frame whose ICRC is right; None for anything else (never
    raises)."""
    if len(data) >= _MIN_FRAME:
        etype, vihl, tot, proto, dport, ulen, opcode, qp, psn = _HEAD.unpack_from(data)
        end = 14 + tot
        if (etype == _ETH_P_IP and vihl == 0x45 and proto == 17 and dport == _ROCEV2
                and ulen + 20 == tot and ulen >= 24 and end <= len(data)):
            plan = _PLANS.get(opcode)
            if plan is None or not _icrc_ok(data, 4, 14, 34, end):
                return None
            op, off, steps = plan
            stop = end - 4
            if off > stop:
                return None  # a header cut short
            f = [op, psn & PSN_MASK, qp & PSN_MASK, psn >> 31 == 1, *_BLANK]
            for read, layout, at in steps:
                read(f, *layout.unpack_from(data, at))
            f[_PAYLOAD] = bytes(data[off:stop])
            return _new(Packet, f)
    return parse_general(data)


def parse_general(data: bytes) -> Packet | None:
    """``packet`` by ``fast.roce.parse_roce``'s dicts: any frame it reads (VLAN tags, IPv6, IP
    options, ...)."""
    d = wire.parse_roce(data)
    if d is None or not d["icrc_ok"]:
        return None
    bth = d["BTH"]
    op = NAME.get(bth["opcode"])
    if op is None:
        return None
    need = wire.HEADER_CHAINS[bth["opcode"]]
    if any(h not in d for h in need if h != wire.SEND_PAYLOAD):
        return None  # a header cut short
    reth = d.get("RETH")
    atomic = d.get("AtomicETH")
    aeth = d.get("AETH")
    payload = d["payload"]
    if (a := d.get("RKeyAdvert")) is not None:  # (parse_roce takes these off: put them back)
        payload = wire._RKEY_ADVERT.pack(a["magic"], a["version"], a["kind"], a["access"],
                                         a["va"], a["rkey"], (a["reserved"] << 24) | a["qpn"],
                                         a["length"]) + payload
    if (m := d.get("SanMad")) is not None:
        payload = wire._SAN_MAD.pack(
            m["basever"], m["mgmtclass"], m["classver"], m["method"], m["status"],
            m["classspecific"], m["tid"], m["attrid"], m["reserved"], m["attrmod"], m["guid"],
            m["ports"], m["reserved2"], m["qp_count"], m["node_desc"], *m["qpns"]) + payload
    return Packet(
        op, bth["psn"], bth["dqpn"], bool(bth["ackreq"]),
        reth=Reth(reth["va"], reth["rkey"], reth["dmalen"]) if reth else None,
        atomic=AtomicEth(atomic["va"], atomic["rkey"], atomic["swapdt"], atomic["cmpdt"])
        if atomic else None,
        syndrome=aeth["syndrome"] if aeth else None, msn=aeth["msn"] if aeth else 0,
        orig=d["AtomicAckETH"]["origremdt"] if "AtomicAckETH" in d else None,
        imm=d["ImmDt"]["imm"] if "ImmDt" in d else None, payload=payload,
        qkey=d["DETH"]["qkey"] if "DETH" in d else None,
        src_qp=d["DETH"]["srcqp"] if "DETH" in d else 0,
        eec=d["RDETH"]["eecnxt"] if "RDETH" in d else None)
