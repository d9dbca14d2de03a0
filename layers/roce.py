# SPDX-License-Identifier: GPL-2.0-or-later
"""RoCEv2 extension headers and the RKey advertisement of seed 003.

Seed 003 (IBM, "memory management in a distributed computer system", the SAN that
became InfiniBand) has consumers bind an RKey to a contiguous effective/virtual
address range (BindRKey verb), send "a message 748 containing effective address 744
and RKey 746" to the remote node, which then performs an RDMA "containing effective
address 744 and RKey 746" (message 750).  On today's wire that is RoCEv2, which
``scapy.contrib.roce`` covers only partly (BTH with ICRC, AETH, GRH).  This module
extends it, without forking it, with the IBA extension transport headers:

* ``RDETH``/``DETH`` (reliable/unreliable datagram), ``RETH`` (message 750: VA,
  R_Key, DMA length), ``AtomicETH``, ``AtomicAckETH``, ``ImmDt``;
* AETH syndrome names (``aeth_syndrome``, ``ack_aeth``/``rnr_nak_aeth``/``nak_aeth``);
* ``RKeyAdvert``, message 748, carried as a SEND payload;
* ``SanMad``, the management datagram of discovery over UD (seed 003 L489: "employed by
  management applications to discover ... endnodes"), an IBA MAD of a vendor class;
* ``register_send_payload``: SEND payloads (RKeyAdvert, I2O frames, ...) are claimed
  by the first registered matcher;
* ``icrc``/``verify_icrc`` (pure, no Scapy) and ``roce_answers`` (request/response
  pairing, since Scapy's BTH and AETH do not implement ``answers``).

Which headers follow the BTH for which opcode is one table,
``ftsslab.fast.roce.HEADER_CHAINS`` (IBA ch. 9), shared with the fast parser.
"""

from __future__ import annotations

from collections.abc import Callable

from scapy.contrib.roce import AETH, BTH
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    FieldListField,
    FlagsField,
    IntField,
    ShortField,
    StrFixedLenField,
    XBitField,
    XByteField,
    XIntField,
    XLongField,
    XShortEnumField,
    XShortField,
)
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.packet import (
    Packet,
    Raw,
    bind_bottom_up,
    bind_top_down,
)

from ftsslab.fast import roce as _fast
from ftsslab.fast.roce import (
    AETH_ACK,
    AETH_CREDITS_INVALID,
    AETH_NAK,
    AETH_RNR_NAK,
    NAK_CODES,
    RKEY_ACCESS_FLAGS,
    RKEY_ADVERT_KINDS,
    RKEY_ADVERT_MAGIC,
    RKEY_ADVERT_VERSION,
    ROCEV2_UDP_PORT,
    SAN_MAD_ATTRIBUTES,
    SAN_MAD_BASE_VERSION,
    SAN_MAD_CLASS,
    SAN_MAD_CLASS_VERSION,
    SAN_MAD_LEN,
    SAN_MAD_METHODS,
    SAN_MAD_NODE_DESC_LEN,
    SAN_MAD_QPN_SLOTS,
)

__all__ = [
    "AETH_ACK", "AETH_CREDITS_INVALID", "AETH_NAK", "AETH_RNR_NAK", "HEADER_CHAINS", "NAK_CODES",
    "RKEY_ACCESS_FLAGS",
    "RKEY_ADVERT_KINDS", "RKEY_ADVERT_MAGIC", "RKEY_ADVERT_VERSION", "ROCEV2_UDP_PORT",
    "AtomicAckETH", "AtomicETH", "DETH", "ImmDt", "RDETH", "RETH", "RKeyAdvert", "SanMad",
    "SendPayload", "ack_aeth", "aeth_syndrome", "icrc", "looks_like_rkey_advert",
    "looks_like_san_mad", "nak_aeth",
    "register_send_payload", "rnr_nak_aeth",
    "read_psn_span", "roce_answers", "verify_icrc",
]


def _next_header(pkt: Packet) -> type[Packet]:
    """Class of the header after ``pkt`` in its BTH's header chain (Raw = data)."""
    bth = pkt.underlayer
    while bth is not None and not isinstance(bth, BTH):
        bth = bth.underlayer
    if bth is None:
        return Raw
    chain = HEADER_CHAINS.get(bth.opcode, ())
    for i, cls in enumerate(chain[:-1]):
        if isinstance(pkt, cls):
            return chain[i + 1]
    return Raw


@classmethod  # type: ignore[misc]
def _whole_or_raw(cls, _pkt=None, *args, **kargs):
    """``dispatch_hook`` of the fixed-size headers: bytes too short for the whole
    header dissect as Raw, as they do inside a frame, so no input makes them raise."""
    if _pkt and len(_pkt) < sum(getattr(f, "size", 0) or f.sz * 8 for f in cls.fields_desc) // 8:
        return Raw
    return cls


class _ChainedHeader:
    """Mixin: the next header is decided by the BTH opcode, not by a field of ours."""

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return _next_header(self)  # type: ignore[arg-type]


class RDETH(_ChainedHeader, Packet):
    """Reliable Datagram ETH: the end-to-end context of an RD packet."""

    name = "IB Reliable Datagram ETH"
    fields_desc = [XByteField("reserved", 0), XBitField("eecnxt", 0, 24)]
    dispatch_hook = _whole_or_raw

    def mysummary(self) -> str:
        return self.sprintf("RDETH ee=%RDETH.eecnxt%")


class DETH(_ChainedHeader, Packet):
    """Datagram ETH: Q_Key and source QP of a UD or RD request."""

    name = "IB Datagram ETH"
    fields_desc = [XIntField("qkey", 0), XByteField("reserved", 0), BitField("srcqp", 0, 24)]
    dispatch_hook = _whole_or_raw

    def mysummary(self) -> str:
        return self.sprintf("DETH qkey=%DETH.qkey% srcqp=%DETH.srcqp%")


class RETH(_ChainedHeader, Packet):
    """RDMA ETH: where an RDMA WRITE/READ goes (seed 003 message 750: address + RKey)."""

    name = "IB RDMA ETH"
    fields_desc = [XLongField("va", 0), XIntField("rkey", 0), IntField("dmalen", 0)]
    dispatch_hook = _whole_or_raw

    def mysummary(self) -> str:
        return self.sprintf("RETH va=%RETH.va% rkey=%RETH.rkey% len=%RETH.dmalen%")


class AtomicETH(_ChainedHeader, Packet):
    """Atomic ETH of COMPARE SWAP / FETCH ADD (swapdt is the add data for FETCH ADD)."""

    name = "IB Atomic ETH"
    fields_desc = [
        XLongField("va", 0),
        XIntField("rkey", 0),
        XLongField("swapdt", 0),
        XLongField("cmpdt", 0),
    ]
    dispatch_hook = _whole_or_raw

    def mysummary(self) -> str:
        return self.sprintf("AtomicETH va=%AtomicETH.va% rkey=%AtomicETH.rkey%")


class AtomicAckETH(_ChainedHeader, Packet):
    """Atomic ACK ETH: the remote data as it was before the atomic operation."""

    name = "IB Atomic ACK ETH"
    fields_desc = [XLongField("origremdt", 0)]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Bound after every AETH: only an ATOMIC ACKNOWLEDGE's AETH is followed by us."""
        under = kargs.get("_underlayer")
        if under is not None and _next_header(under) is not cls:
            return Raw
        return _whole_or_raw.__func__(cls, _pkt)

    def mysummary(self) -> str:
        return self.sprintf("AtomicAckETH orig=%AtomicAckETH.origremdt%")


class ImmDt(_ChainedHeader, Packet):
    """Immediate data of the *_WITH_IMMEDIATE opcodes."""

    name = "IB Immediate Data"
    fields_desc = [XIntField("imm", 0)]
    dispatch_hook = _whole_or_raw

    def mysummary(self) -> str:
        return self.sprintf("ImmDt %ImmDt.imm%")


# ---------------------------------------------------------------- AETH syndrome
_NAK_BY_NAME = {v: k for k, v in NAK_CODES.items()}


def aeth_syndrome(pkt: Packet | int) -> str:
    """Name an AETH syndrome (an AETH-carrying packet or the syndrome byte).

    ``"ACK credits=31"``, ``"RNR_NAK timer=14"``, ``"NAK REMOTE_ACCESS_ERROR"`` or
    ``"RESERVED 0x.."`` for encodings IBA reserves.
    """
    syndrome = pkt if isinstance(pkt, int) else pkt[AETH].syndrome
    kind, value = (syndrome >> 5) & 3, syndrome & 0x1F
    if syndrome & 0x80 or kind == 2 or (kind == AETH_NAK and value not in NAK_CODES):
        return f"RESERVED {syndrome:#04x}"
    if kind == AETH_ACK:
        return f"ACK credits={value}"
    if kind == AETH_RNR_NAK:
        return f"RNR_NAK timer={value}"
    return f"NAK {NAK_CODES[value]}"


def ack_aeth(msn: int = 0, credits: int = AETH_CREDITS_INVALID) -> AETH:
    return AETH(syndrome=(AETH_ACK << 5) | (credits & 0x1F), msn=msn)


def rnr_nak_aeth(timer: int, msn: int = 0) -> AETH:
    return AETH(syndrome=(AETH_RNR_NAK << 5) | (timer & 0x1F), msn=msn)


def nak_aeth(code: str | int, msn: int = 0) -> AETH:
    """AETH of a NAK, e.g. ``nak_aeth("REMOTE_ACCESS_ERROR", msn=7)``."""
    value = _NAK_BY_NAME[code] if isinstance(code, str) else code
    return AETH(syndrome=(AETH_NAK << 5) | value, msn=msn)


# ---------------------------------------------------------------- SEND payloads
_send_payloads: list[tuple[type[Packet], Callable[[bytes], bool]]] = []


def register_send_payload(cls: type[Packet], match: Callable[[bytes], bool]) -> None:
    """Let ``cls`` dissect SEND message payloads for which ``match(payload)`` is true.

    ``payload`` is the bytes after the BTH and its extension headers (ImmDt, DETH,
    RDETH), without the ICRC, of a SEND_FIRST / SEND_ONLY / SEND_ONLY_WITH_IMMEDIATE
    packet of any transport.  Matchers are tried in registration order; the first true
    one wins; a matcher that raises counts as false; none true gives Raw.  Registering
    a class again replaces its matcher in place.  ``BTH()/cls()`` defaults to RC SEND_ONLY.
    """
    for i, (known, _) in enumerate(_send_payloads):
        if known is cls:
            _send_payloads[i] = (cls, match)
            break
    else:
        _send_payloads.append((cls, match))
    bind_top_down(BTH, cls, opcode=_fast.op("RC", "SEND_ONLY"))


class SendPayload(Packet):
    """Dispatcher bound at the start of a SEND message; never instantiated itself."""

    name = "RoCE SEND payload dispatcher"

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        payload = bytes(_pkt or b"")
        for candidate, match in _send_payloads:
            try:
                if match(payload):
                    return candidate
            except Exception:  # noqa: BLE001, S112 - a broken matcher must not break dissection
                continue
        return Raw


# ---------------------------------------------------------------- RKey advertisement
class RKeyAdvert(Packet):
    """Seed 003 message 748: a bound RKey and its address range, sent to the peer.

    ``length`` is 64 bits because the seed binds "a contiguous memory address range
    [of] arbitrary size" (only one RDMA's DMA length is 32 bits).  ``qpn`` is the QP
    that accepts RDMA under this key (needed for datagram QPs, seed: "can accept RDMA
    operations from any node ... that obtains the RKey").
    """

    name = "RKey Advertisement (seed 003 msg 748)"
    fields_desc = [
        XIntField("magic", RKEY_ADVERT_MAGIC),
        ByteField("version", RKEY_ADVERT_VERSION),
        ByteEnumField("kind", 1, RKEY_ADVERT_KINDS),
        FlagsField("access", 0, 16, RKEY_ACCESS_FLAGS),
        XLongField("va", 0),
        XIntField("rkey", 0),
        XByteField("reserved", 0),
        BitField("qpn", 0, 24),
        XLongField("length", 0),
    ]
    dispatch_hook = _whole_or_raw

    def mysummary(self) -> str:
        return self.sprintf(
            "RKeyAdvert %kind% rkey=%rkey% va=%va% len=%length% qpn=%qpn% [%access%]"
        )


def looks_like_rkey_advert(payload: bytes) -> bool:
    return _fast.parse_rkey_advert(payload) is not None


register_send_payload(RKeyAdvert, looks_like_rkey_advert)


# ---------------------------------------------------------------- management datagram
class SanMad(Packet):
    """The management datagram of discovery over UD (seed 003 L489; ``ftsslab.san.discovery``).

    An IBA MAD (13.4.2): the 24-byte common header, then 232 bytes of class data, here an
    endnode's answer to who it is -- GUID, port count, name (64 bytes, as NodeDescription) and
    up to 39 QP numbers, ``qp_count`` of them used. Sent QP1 to QP1, so Wireshark's own
    infiniband dissector reads the header; the class is vendor-specific, so it shows the data
    as data.
    """

    name = "SAN management datagram (seed 003 discovery)"
    fields_desc = [
        ByteField("basever", SAN_MAD_BASE_VERSION),
        XByteField("mgmtclass", SAN_MAD_CLASS),
        ByteField("classver", SAN_MAD_CLASS_VERSION),
        ByteEnumField("method", 0x01, SAN_MAD_METHODS),
        XShortField("status", 0),
        XShortField("classspecific", 0),
        XLongField("tid", 0),
        XShortEnumField("attrid", 0x0011, SAN_MAD_ATTRIBUTES),
        XShortField("reserved", 0),
        XIntField("attrmod", 0),
        XLongField("guid", 0),
        ByteField("ports", 0),
        XByteField("reserved2", 0),
        ShortField("qp_count", 0),
        StrFixedLenField("node_desc", b"", SAN_MAD_NODE_DESC_LEN),
        FieldListField("qpns", [0] * SAN_MAD_QPN_SLOTS, IntField("qpn", 0),
                       count_from=lambda _: SAN_MAD_QPN_SLOTS),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Too short for the whole MAD: Raw, as ``_whole_or_raw`` does for fixed headers."""
        if _pkt and len(_pkt) < SAN_MAD_LEN:
            return Raw
        return cls

    def mysummary(self) -> str:
        return self.sprintf("SanMad %method% %attrid% tid=%tid% guid=%guid% qps=%qp_count%")


def looks_like_san_mad(payload: bytes) -> bool:
    return _fast.parse_san_mad(payload) is not None


register_send_payload(SanMad, looks_like_san_mad)


# ---------------------------------------------------------------- ICRC
def icrc(frame: bytes | Packet) -> int:
    """ICRC (as ``BTH.icrc`` shows it) of an Ether/IP|IPv6/UDP/BTH frame; ValueError if not."""
    return _fast.icrc(bytes(frame))


def verify_icrc(frame: bytes | Packet) -> bool:
    """True if the frame's ICRC is right; False if it is wrong or the frame is not RoCEv2."""
    return _fast.verify_icrc(bytes(frame))


# ---------------------------------------------------------------- request/response pairing
_RELIABLE = (_fast.TRANSPORTS["RC"], _fast.TRANSPORTS["RD"])
_READ_RESPONSES = {
    _fast.OPS[f"RDMA_READ_RESPONSE_{p}"] for p in ("FIRST", "MIDDLE", "LAST", "ONLY")
}
_RESPONSE_OPS = {_fast.OPS["ACKNOWLEDGE"], _fast.OPS["ATOMIC_ACKNOWLEDGE"]}
_ATOMICS = {_fast.OPS["COMPARE_SWAP"], _fast.OPS["FETCH_ADD"]}
_MIN_PMTU = 256  # smallest IBA path MTU: bounds the PSN span of a READ's responses


def roce_answers(req: Packet, resp: Packet) -> bool:
    """True if ``resp`` answers ``req`` (reliable transports only, IBA 9.7).

    ACK answers a SEND/WRITE with the same PSN, a NAK any request with the same PSN,
    READ RESPONSEs a READ REQUEST (PSNs from the request's on, one per PMTU of data),
    ATOMIC ACKNOWLEDGE a COMPARE SWAP / FETCH ADD with the same PSN.  IP addresses,
    when present, must be swapped.
    """
    if BTH not in req or BTH not in resp:
        return False
    q, r = req[BTH], resp[BTH]
    if q.opcode & 0xE0 != r.opcode & 0xE0 or q.opcode & 0xE0 not in _RELIABLE:
        return False
    for ip in (IP, IPv6):
        if (ip in req) != (ip in resp):
            return False
        if ip in req and (req[ip].src, req[ip].dst) != (resp[ip].dst, resp[ip].src):
            return False
    qop, rop = q.opcode & 0x1F, r.opcode & 0x1F
    if qop > _fast.OPS["FETCH_ADD"] or qop in _READ_RESPONSES or qop in _RESPONSE_OPS:
        return False  # not a request
    if rop == _fast.OPS["ACKNOWLEDGE"]:
        nak = AETH in resp and (resp[AETH].syndrome >> 5) & 3 != AETH_ACK
        plain = qop != _fast.OPS["RDMA_READ_REQUEST"] and qop not in _ATOMICS
        return r.psn == q.psn and (nak or plain)
    if rop == _fast.OPS["ATOMIC_ACKNOWLEDGE"]:
        return qop in _ATOMICS and r.psn == q.psn
    if rop in _READ_RESPONSES and qop == _fast.OPS["RDMA_READ_REQUEST"] and RETH in req:
        return (r.psn - q.psn) % (1 << 24) < read_psn_span(req)
    return False


def read_psn_span(req: Packet) -> int:
    """How many PSNs, from a READ REQUEST's own, its responses may take: one per smallest
    path MTU of the data it asks for."""
    return max(1, -(-req[RETH].dmalen // _MIN_PMTU))


# ---------------------------------------------------------------- bindings
_CLASSES: dict[str, type[Packet]] = {
    c.__name__: c for c in (RDETH, DETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, SendPayload)
}
HEADER_CHAINS: dict[int, tuple[type[Packet], ...]] = {
    code: tuple(_CLASSES[n] for n in names) for code, names in _fast.HEADER_CHAINS.items()
}
"""BTH opcode -> header classes after the BTH (IBA ch. 9)."""

# Only opcodes after which Scapy binds nothing get a header: Scapy's own AETH bindings (RC
# and RD ACKNOWLEDGE) stay, so packets that Scapy dissects dissect as before.
for _code, _chain in sorted(HEADER_CHAINS.items()):
    if _chain and not any(fval == {"opcode": _code} for fval, _ in BTH.payload_guess):
        bind_bottom_up(BTH, _chain[0], opcode=_code)
bind_bottom_up(AETH, AtomicAckETH)  # its dispatch_hook keeps only ATOMIC ACKNOWLEDGE's
for _cls, _name in (
    (RETH, "RDMA_WRITE_ONLY"),
    (AtomicETH, "COMPARE_SWAP"),
    (ImmDt, "SEND_ONLY_WITH_IMMEDIATE"),
    (RDETH, "SEND_ONLY"),
):
    bind_top_down(BTH, _cls, opcode=_fast.op("RD" if _cls is RDETH else "RC", _name))
bind_top_down(BTH, DETH, opcode=_fast.op("UD", "SEND_ONLY"))

_RD_ACK = _fast.op("RD", "ACKNOWLEDGE")
_SCAPY_RD_ACK = ({"opcode": _RD_ACK}, AETH)
_IBA_RD_ACK = ({"opcode": _RD_ACK}, RDETH)


def read_rd_ack_per_iba(enabled: bool) -> None:
    """Dissect RD ACKNOWLEDGE as BTH/RDETH/AETH (IBA 9.2), or as Scapy does (BTH/AETH).

    Scapy binds AETH right after the BTH of RD ACKNOWLEDGE; the bytes cannot tell the two
    readings apart, so the IBA one is opt-in (``ftsslab.layers.strict()``).  The binding is
    replaced in place, so the order of ``BTH.payload_guess`` stays Scapy's.
    """
    old, new = (_SCAPY_RD_ACK, _IBA_RD_ACK) if enabled else (_IBA_RD_ACK, _SCAPY_RD_ACK)
    BTH.payload_guess = [new if guess == old else guess for guess in BTH.payload_guess]


CRAFT_HELPERS = (ack_aeth, rnr_nak_aeth, nak_aeth)  # callable from `ftsslab craft` expressions
