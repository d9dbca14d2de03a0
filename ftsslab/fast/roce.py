"""Fast RoCEv2 parser/builders: Ether / IPv4|IPv6 / UDP 4791 / BTH / extension headers / ICRC.

The header-chain table (which extension headers follow the BTH for each opcode, IBA
ch. 9) lives here, without Scapy, and ``ftsslab.layers.roce`` builds its bindings
from it, so the fast path and the Scapy layers cannot disagree about the order.
The ICRC (IBA Annex A17) is computed over the invariant fields only: variant IP
fields (TOS, TTL, checksum / traffic class, flow label, hop limit), the UDP checksum
and the BTH fecn/becn/resv6 byte are replaced with ones, behind 8 bytes of ones
that stand for the (absent) LRH.
"""

from __future__ import annotations

import functools
import socket
import struct
from zlib import crc32

ROCEV2_UDP_PORT = 4791
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
_VLAN_TYPES = (0x8100, 0x88A8)

# Transport base values of the BTH opcode (upper 3 bits) and operations (lower 5).
TRANSPORTS = {"RC": 0x00, "UC": 0x20, "RD": 0x40, "UD": 0x60}
OPS = {
    "SEND_FIRST": 0x00, "SEND_MIDDLE": 0x01, "SEND_LAST": 0x02,
    "SEND_LAST_WITH_IMMEDIATE": 0x03, "SEND_ONLY": 0x04, "SEND_ONLY_WITH_IMMEDIATE": 0x05,
    "RDMA_WRITE_FIRST": 0x06, "RDMA_WRITE_MIDDLE": 0x07, "RDMA_WRITE_LAST": 0x08,
    "RDMA_WRITE_LAST_WITH_IMMEDIATE": 0x09, "RDMA_WRITE_ONLY": 0x0A,
    "RDMA_WRITE_ONLY_WITH_IMMEDIATE": 0x0B, "RDMA_READ_REQUEST": 0x0C,
    "RDMA_READ_RESPONSE_FIRST": 0x0D, "RDMA_READ_RESPONSE_MIDDLE": 0x0E,
    "RDMA_READ_RESPONSE_LAST": 0x0F, "RDMA_READ_RESPONSE_ONLY": 0x10,
    "ACKNOWLEDGE": 0x11, "ATOMIC_ACKNOWLEDGE": 0x12, "COMPARE_SWAP": 0x13, "FETCH_ADD": 0x14,
}
# Which operations each transport service supports (IBA table 38).
_UC_OPS = ("SEND_", "RDMA_WRITE_")
_UD_OPS = ("SEND_ONLY", "SEND_ONLY_WITH_IMMEDIATE")

# Extension headers after the BTH, per operation (IBA 9.2-9.5, table 35).
_OP_HEADERS = {
    "SEND_LAST_WITH_IMMEDIATE": ("ImmDt",),
    "SEND_ONLY_WITH_IMMEDIATE": ("ImmDt",),
    "RDMA_WRITE_FIRST": ("RETH",),
    "RDMA_WRITE_LAST_WITH_IMMEDIATE": ("ImmDt",),
    "RDMA_WRITE_ONLY": ("RETH",),
    "RDMA_WRITE_ONLY_WITH_IMMEDIATE": ("RETH", "ImmDt"),
    "RDMA_READ_REQUEST": ("RETH",),
    "RDMA_READ_RESPONSE_FIRST": ("AETH",),
    "RDMA_READ_RESPONSE_LAST": ("AETH",),
    "RDMA_READ_RESPONSE_ONLY": ("AETH",),
    "ACKNOWLEDGE": ("AETH",),
    "ATOMIC_ACKNOWLEDGE": ("AETH", "AtomicAckETH"),
    "COMPARE_SWAP": ("AtomicETH",),
    "FETCH_ADD": ("AtomicETH",),
}
_RESPONSES = ("RDMA_READ_RESPONSE_", "ACKNOWLEDGE", "ATOMIC_ACKNOWLEDGE")
# Operations whose payload starts a SEND message (claimed by the SEND payload registry).
SEND_START_OPS = ("SEND_FIRST", "SEND_ONLY", "SEND_ONLY_WITH_IMMEDIATE")
SEND_PAYLOAD = "SendPayload"


def _chains() -> dict[int, tuple[str, ...]]:
    chains = {}
    for transport, base in TRANSPORTS.items():
        for op, value in OPS.items():
            if transport == "UC" and not op.startswith(_UC_OPS):
                continue
            if transport == "UD" and op not in _UD_OPS:
                continue
            prefix: tuple[str, ...] = ()
            if transport == "RD":
                prefix = ("RDETH",) if op.startswith(_RESPONSES) else ("RDETH", "DETH")
            elif transport == "UD":
                prefix = ("DETH",)
            chain = prefix + _OP_HEADERS.get(op, ())
            if op in SEND_START_OPS:
                chain += (SEND_PAYLOAD,)
            chains[base + value] = chain
    return chains


HEADER_CHAINS = _chains()
"""BTH opcode -> names of the headers after the BTH (``SendPayload`` = SEND message start)."""


def op(transport: str, operation: str) -> int:
    """BTH opcode value, e.g. ``op("RC", "RDMA_WRITE_ONLY") == 0x0A``."""
    return TRANSPORTS[transport] + OPS[operation]


# ---------------------------------------------------------------- struct formats
_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_BTH = struct.Struct("!BBHII")
_U32 = struct.Struct("!I")
_DETH = struct.Struct("!II")
_RETH = struct.Struct("!QII")
_ATOMIC = struct.Struct("!QIQQ")
_U64 = struct.Struct("!Q")
_RKEY_ADVERT = struct.Struct("!IBBHQIIQ")
_ICRC_WIRE = struct.Struct("<I")  # the ICRC goes on the wire least significant byte first
EXT_HEADERS = {  # extension header -> its layout (size = .size): the one table of them
    "RDETH": _U32, "DETH": _DETH, "RETH": _RETH, "AtomicETH": _ATOMIC, "AETH": _U32,
    "AtomicAckETH": _U64, "ImmDt": _U32,
}
_SAN_MAD = struct.Struct("!BBBBHHQHHIQBBH64s39I")

# The wire numbers of the AETH syndrome and RKeyAdvert, defined here only
# (ftsslab.layers.roce and roce.lua use them).
AETH_ACK = 0  # syndrome bits 6-5 (IBA 9.7.5.1 table 42)
AETH_RNR_NAK = 1
AETH_NAK = 3
AETH_CREDITS_INVALID = 31  # ACK credit count 0b11111: no end-to-end credits advertised
NAK_CODES = {
    0: "PSN_SEQUENCE_ERROR",
    1: "INVALID_REQUEST",
    2: "REMOTE_ACCESS_ERROR",  # seed 003: RKey/range does not match -> "not granted access"
    3: "REMOTE_OPERATIONAL_ERROR",
    4: "INVALID_RD_REQUEST",
}

RKEY_ADVERT_MAGIC = 0x524B4559  # "RKEY": tells message 748 apart from other SEND payloads
RKEY_ADVERT_VERSION = 1
RKEY_ADVERT_LEN = _RKEY_ADVERT.size  # 32: a multiple of 4, so the BTH pad count stays 0
RKEY_ADVERT_KINDS = {
    1: "BIND",  # message 748: RKey bound to [va, va+length)
    2: "UNBIND",  # seed: BindRKey with null address and zero length = UnbindRKey
}
RKEY_ACCESS_FLAGS = [  # bits 0-4 have the values of ibverbs' IBV_ACCESS_*
    "LOCAL_WRITE",
    "REMOTE_WRITE",
    "REMOTE_READ",
    "REMOTE_ATOMIC",
    "BIND",  # the peer may bind memory windows under this key (IBV_ACCESS_MW_BIND)
    "ONE_SHOT",  # seed: "translation for the RKey is disabled" after first RDMA
    "VIRTUAL",  # va is a kernel virtual address, not an effective address
]

# SanMad: the management datagram of seed 003's discovery over UD (L489, check 22). Its layout
# is IBA's MAD (13.4.2): a 24-byte common header and 232 bytes of class data, 256 in all, on the
# well-known GSI QP (QP1) under its well-known Q_Key, so Wireshark reads it as the MAD it is.
# The class is vendor-specific (range 1, which needs no OUI), its one attribute ours.
GSI_QPN = 1
GSI_QKEY = 0x80010000
SAN_MAD_LEN = _SAN_MAD.size  # 256
SAN_MAD_BASE_VERSION = 1
SAN_MAD_CLASS = 0x09  # the first vendor-specific class of range 1 (IBA 13.4.4)
SAN_MAD_CLASS_VERSION = 1
SAN_MAD_METHODS = {0x01: "GET", 0x81: "GET_RESP"}  # IBA 13.4.5; bit 7 = response
SAN_MAD_ATTRIBUTES = {0x0011: "ENDNODE_INFO"}  # name, GUID, ports and QPs of an endnode
SAN_MAD_NODE_DESC_LEN = 64  # as IBA's NodeDescription
SAN_MAD_QPN_SLOTS = 39  # what the data has room for after GUID, ports, count and name


def _mac(b: bytes) -> str:
    return b.hex(":")


def _parse_headers(buf: memoryview) -> tuple[int, int, int, int] | None:
    """(ip version, ip offset, udp offset, end of IP datagram) of an Ether frame."""
    if len(buf) < _ETH.size:
        return None
    off = 12
    (etype,) = struct.unpack_from("!H", buf, off)
    off += 2
    while etype in _VLAN_TYPES and len(buf) >= off + 4:
        (etype,) = struct.unpack_from("!H", buf, off + 2)
        off += 4
    if etype == ETH_P_IP and len(buf) >= off + 20:
        ihl = (buf[off] & 0x0F) * 4
        (tot,) = struct.unpack_from("!H", buf, off + 2)
        if buf[off] >> 4 != 4 or buf[off + 9] != 17 or ihl < 20 or tot < ihl + 8:
            return None
        end = off + tot
        udp = off + ihl
        version = 4
    elif etype == ETH_P_IPV6 and len(buf) >= off + 40:
        (plen,) = struct.unpack_from("!H", buf, off + 4)
        if buf[off] >> 4 != 6 or buf[off + 6] != 17 or plen < 8:
            return None
        end = off + 40 + plen
        udp = off + 40
        version = 6
    else:
        return None
    if end > len(buf):
        return None
    return version, off, udp, end


_LRH_CRC = crc32(b"\xff" * 8)


@functools.cache
def _icrc_mask(version: int, u: int) -> int:
    """The ones the ICRC puts over the variant fields from the IP header to the BTH's byte 4
    (``u``: the UDP header's offset in the IP datagram), as a number to OR on those bytes."""
    m = bytearray(u + 13)
    if version == 4:
        m[1] = m[8] = 0xFF  # TOS, TTL
        m[10] = m[11] = 0xFF  # header checksum
    else:
        m[0] = 0x0F  # traffic class + flow label
        m[1] = m[2] = m[3] = 0xFF
        m[7] = 0xFF  # hop limit
    m[u + 6] = m[u + 7] = 0xFF  # UDP checksum
    m[u + 12] = 0xFF  # BTH fecn, becn, resv6
    return int.from_bytes(m, "big")


def _icrc_crc(buf: memoryview | bytes, version: int, ip: int, udp: int, end: int) -> int:
    """The ICRC as the CRC-32 that goes on the wire (``_ICRC_WIRE``): only the headers up to
    the BTH's fecn/becn/resv6 byte are copied, to OR the mask on; crc32 is chained on through
    the rest of the datagram in place (no masked copy of the whole datagram)."""
    n = udp + 13 - ip
    masked = int.from_bytes(buf[ip:udp + 13], "big") | _icrc_mask(version, udp - ip)
    return crc32(memoryview(buf)[udp + 13:end - 4], crc32(masked.to_bytes(n, "big"), _LRH_CRC))


def icrc_ok(buf: memoryview | bytes, version: int, ip: int, udp: int, end: int) -> bool:
    """Whether the datagram at these offsets (``_parse_headers``) ends in its right ICRC."""
    return _icrc_crc(buf, version, ip, udp, end) == _ICRC_WIRE.unpack_from(buf, end - 4)[0]


def _icrc_of(buf: memoryview, version: int, ip: int, udp: int, end: int) -> int:
    # as the BTH ``icrc`` field (a big-endian read of the wire's 4 bytes) shows it
    return int.from_bytes(_icrc_crc(buf, version, ip, udp, end).to_bytes(4, "little"), "big")


def icrc(frame: bytes | memoryview) -> int:
    """ICRC of a RoCEv2 Ether frame, as the value of Scapy's ``BTH.icrc`` field.

    Raises ValueError if the frame is not Ether/IP(v4|v6)/UDP with room for BTH + ICRC.
    """
    buf = memoryview(frame)
    hdrs = _parse_headers(buf)
    if hdrs is None or hdrs[3] - hdrs[2] < _UDP.size + _BTH.size + 4:
        raise ValueError("not an Ether/IP/UDP/BTH frame")
    return _icrc_of(buf, *hdrs)


def verify_icrc(frame: bytes | memoryview) -> bool:
    """True if the ICRC at the end of the IP datagram matches the computed one."""
    buf = memoryview(frame)
    hdrs = _parse_headers(buf)
    if hdrs is None or hdrs[3] - hdrs[2] < _UDP.size + _BTH.size + 4:
        return False
    return icrc_ok(buf, *hdrs)


# ---------------------------------------------------------------- parsers
def parse_bth(buf: bytes | memoryview) -> dict | None:
    """BTH fields of a UDP payload (ICRC = its last 4 bytes)."""
    if len(buf) < _BTH.size + 4:
        return None
    opcode, flags, pkey, qp, psn = _BTH.unpack_from(buf)
    return {
        "opcode": opcode, "solicited": flags >> 7, "migreq": (flags >> 6) & 1,
        "padcount": (flags >> 4) & 3, "version": flags & 0x0F, "pkey": pkey,
        "fecn": qp >> 31, "becn": (qp >> 30) & 1, "resv6": (qp >> 24) & 0x3F,
        "dqpn": qp & 0xFFFFFF, "ackreq": psn >> 31, "resv7": (psn >> 24) & 0x7F,
        "psn": psn & 0xFFFFFF, "icrc": _U32.unpack_from(buf, len(buf) - 4)[0],
    }


def _split32(v: int, hi: str, lo: str) -> dict:
    return {hi: v >> 24, lo: v & 0xFFFFFF}


_EXT_FIELDS = {  # name -> its fields as a dict, from EXT_HEADERS[name].unpack_from
    "RDETH": lambda v: _split32(v[0], "reserved", "eecnxt"),
    "DETH": lambda v: {"qkey": v[0], **_split32(v[1], "reserved", "srcqp")},
    "RETH": lambda v: dict(zip(("va", "rkey", "dmalen"), v, strict=True)),
    "AtomicETH": lambda v: dict(zip(("va", "rkey", "swapdt", "cmpdt"), v, strict=True)),
    "AETH": lambda v: _split32(v[0], "syndrome", "msn"),
    "AtomicAckETH": lambda v: {"origremdt": v[0]},
    "ImmDt": lambda v: {"imm": v[0]},
}


def parse_rkey_advert(buf: bytes | memoryview) -> dict | None:
    """RKeyAdvert (seed 003 message 748) fields, or None if ``buf`` is not one."""
    if len(buf) < _RKEY_ADVERT.size:
        return None
    magic, version, kind, access, va, rkey, qp, length = _RKEY_ADVERT.unpack_from(buf)
    if magic != RKEY_ADVERT_MAGIC or version != RKEY_ADVERT_VERSION:
        return None
    return {
        "magic": magic, "version": version, "kind": kind, "access": access, "va": va,
        "rkey": rkey, "reserved": qp >> 24, "qpn": qp & 0xFFFFFF, "length": length,
    }


def parse_san_mad(buf: bytes | memoryview) -> dict | None:
    """SanMad fields (``qpns`` all 39 slots, ``qp_count`` says how many are used), or None if
    ``buf`` is shorter than a MAD or is not of SanMad's base version, class and class version."""
    if len(buf) < _SAN_MAD.size:
        return None
    v = _SAN_MAD.unpack_from(buf)
    if v[:3] != (SAN_MAD_BASE_VERSION, SAN_MAD_CLASS, SAN_MAD_CLASS_VERSION):
        return None
    names = ("basever", "mgmtclass", "classver", "method", "status", "classspecific", "tid",
             "attrid", "reserved", "attrmod", "guid", "ports", "reserved2", "qp_count",
             "node_desc")
    return {**dict(zip(names, v[:15], strict=True)), "qpns": list(v[15:])}


def parse_roce(frame: bytes | memoryview) -> dict | None:
    """Parse a RoCEv2 Ether frame.

    Returns ``{"Ether": {...}, "IP" or "IPv6": {...}, "UDP": {...}, "BTH": {...},
    <extension header class name>: {...}, ..., "payload": bytes, "icrc_ok": bool}``
    (plus ``"RKeyAdvert"`` or ``"SanMad"`` when the SEND payload is one), or None.
    """
    buf = memoryview(frame)
    hdrs = _parse_headers(buf)
    if hdrs is None:
        return None
    version, ip, udp, end = hdrs
    sport, dport, ulen, uchk = _UDP.unpack_from(buf, udp)
    if dport != ROCEV2_UDP_PORT or udp + ulen != end:
        return None
    bth = parse_bth(buf[udp + 8:end])
    if bth is None:
        return None
    dst, src, etype = _ETH.unpack_from(buf)
    out: dict = {"Ether": {"dst": _mac(dst), "src": _mac(src), "type": etype}}
    if version == 4:
        vihl, tos, tot, ident, frag, ttl, proto, chk, s, d = _IP4.unpack_from(buf, ip)
        out["IP"] = {
            "version": 4, "ihl": vihl & 0x0F, "tos": tos, "len": tot, "id": ident,
            "flags": frag >> 13, "frag": frag & 0x1FFF, "ttl": ttl, "proto": proto,
            "chksum": chk, "src": socket.inet_ntoa(s), "dst": socket.inet_ntoa(d),
        }
    else:
        vtf, plen, nh, hlim, s, d = _IP6.unpack_from(buf, ip)
        out["IPv6"] = {
            "version": 6, "tc": (vtf >> 20) & 0xFF, "fl": vtf & 0xFFFFF, "plen": plen,
            "nh": nh, "hlim": hlim, "src": socket.inet_ntop(socket.AF_INET6, s),
            "dst": socket.inet_ntop(socket.AF_INET6, d),
        }
    out["UDP"] = {"sport": sport, "dport": dport, "len": ulen, "chksum": uchk}
    out["BTH"] = bth
    off, stop = udp + 8 + _BTH.size, end - 4
    for name in HEADER_CHAINS.get(bth["opcode"], ()):
        if name == SEND_PAYLOAD:
            advert = parse_rkey_advert(buf[off:stop])
            if advert is not None:
                out["RKeyAdvert"] = advert
                off += _RKEY_ADVERT.size
            elif (mad := parse_san_mad(buf[off:stop])) is not None:
                out["SanMad"] = mad
                off += _SAN_MAD.size
            break
        layout = EXT_HEADERS[name]
        if off + layout.size > stop:
            break  # Scapy leaves a truncated header as Raw payload
        out[name] = _EXT_FIELDS[name](layout.unpack_from(buf, off))
        off += layout.size
    out["payload"] = bytes(buf[off:stop])
    out["icrc_ok"] = icrc_ok(buf, *hdrs)
    return out


# ---------------------------------------------------------------- builders
_FRAME_HEAD = struct.Struct("!16sH6sH12sHHBBHII")  # Ether .. IPv4 TOS, length, id .. protocol,
# checksum, addresses and ports, UDP length, UDP checksum, BTH


class Template:
    """The Ether/IPv4/UDP headers of one path, packed once: a frame is then one struct pack, the
    IPv4 checksum an add to the header's constant sum, and the ICRC crc32 chained over the
    pieces (no copy of the datagram to compute it)."""

    __slots__ = ("_eth_ip", "_id_proto", "_addrs", "_sum")

    def __init__(self, eth_dst: str, eth_src: str, ip_src: str, ip_dst: str, sport: int,
                 tos: int = 0, ttl: int = 64, ip_id: int = 1) -> None:
        src, dst = socket.inet_aton(ip_src), socket.inet_aton(ip_dst)
        self._eth_ip = _ETH.pack(bytes.fromhex(eth_dst.replace(":", "")),
                                 bytes.fromhex(eth_src.replace(":", "")),
                                 ETH_P_IP) + bytes((0x45, tos))
        self._id_proto = struct.pack("!HHBB", ip_id, 0, ttl, 17)
        self._addrs = src + dst + struct.pack("!HH", sport, ROCEV2_UDP_PORT)
        self._sum = sum(struct.unpack("!10H", _IP4.pack(0x45, tos, 0, ip_id, 0, ttl, 17, 0,
                                                        src, dst)))

    def build(self, opcode: int, dqpn: int, psn: int, headers: bytes = b"",
              payload: bytes = b"", ackreq: bool = False, solicited: bool = False,
              pkey: int = 0xFFFF) -> bytes:
        """The frame ``build_roce`` describes, on this path."""
        udp_len = 24 + len(headers) + len(payload)  # UDP, BTH, ICRC
        s = self._sum + udp_len + 20
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        head = _FRAME_HEAD.pack(self._eth_ip, udp_len + 20, self._id_proto, ~s & 0xFFFF,
                                self._addrs, udp_len, 0, opcode, solicited << 7, pkey,
                                dqpn & 0xFFFFFF, (ackreq << 31) | (psn & 0xFFFFFF))
        crc = crc32(payload, crc32(headers, _icrc_crc(head, 4, 14, 34, _FRAME_HEAD.size + 4)))
        return b"".join((head, headers, payload, _ICRC_WIRE.pack(crc)))


template = functools.lru_cache(maxsize=1024)(Template)
"""A path's ``Template``, made once (the arguments positional, as the cache keys them)."""


def build_roce(
    *, eth_dst: str, eth_src: str, ip_src: str, ip_dst: str, sport: int, opcode: int,
    dqpn: int, psn: int, headers: bytes = b"", payload: bytes = b"", ackreq: bool = False,
    solicited: bool = False, pkey: int = 0xFFFF, tos: int = 0, ttl: int = 64, ip_id: int = 1,
) -> bytes:
    """Ether/IPv4/UDP(checksum 0)/BTH/headers/payload/ICRC, equal to the Scapy frame
    ``Ether()/IP(tos, ttl, id)/UDP(sport, dport=4791, chksum=0)/BTH(...)/...``.
    RoCEv2 NICs send UDP checksum 0 (the ICRC covers the datagram), so we do too."""
    return template(eth_dst, eth_src, ip_src, ip_dst, sport, tos, ttl, ip_id).build(
        opcode, dqpn, psn, headers, payload, ackreq, solicited, pkey)


def build_write(*, va: int, rkey: int, data: bytes, imm: int | None = None,
                transport: str = "RC", **kw) -> bytes:
    """RDMA WRITE ONLY (WITH IMMEDIATE when ``imm`` is given) carrying ``data``."""
    hdr = _RETH.pack(va, rkey, len(data))
    if imm is None:
        return build_roce(opcode=op(transport, "RDMA_WRITE_ONLY"), headers=hdr, payload=data,
                          **kw)
    return build_roce(opcode=op(transport, "RDMA_WRITE_ONLY_WITH_IMMEDIATE"),
                      headers=hdr + _U32.pack(imm), payload=data, **kw)


def build_read_request(*, va: int, rkey: int, dmalen: int, **kw) -> bytes:
    return build_roce(opcode=op("RC", "RDMA_READ_REQUEST"), headers=_RETH.pack(va, rkey, dmalen),
                      **kw)


def build_read_response(*, syndrome: int, msn: int, data: bytes, **kw) -> bytes:
    """RC RDMA READ RESPONSE ONLY."""
    return build_roce(opcode=op("RC", "RDMA_READ_RESPONSE_ONLY"),
                      headers=_U32.pack((syndrome << 24) | msn), payload=data, **kw)


def build_send(*, payload: bytes, imm: int | None = None, **kw) -> bytes:
    """RC SEND ONLY (WITH IMMEDIATE when ``imm`` is given)."""
    if imm is None:
        return build_roce(opcode=op("RC", "SEND_ONLY"), payload=payload, **kw)
    return build_roce(opcode=op("RC", "SEND_ONLY_WITH_IMMEDIATE"), headers=_U32.pack(imm),
                      payload=payload, **kw)


def build_ack(*, syndrome: int = 0x1F, msn: int, **kw) -> bytes:
    """RC ACKNOWLEDGE; the default syndrome is ACK with credit count 31 (invalid = none)."""
    return build_roce(opcode=op("RC", "ACKNOWLEDGE"), headers=_U32.pack((syndrome << 24) | msn),
                      **kw)


def build_nak(*, code: int, msn: int, **kw) -> bytes:
    """RC ACKNOWLEDGE carrying a NAK (syndrome 0b011xxxxx, ``code`` = NAK code)."""
    return build_ack(syndrome=0x60 | code, msn=msn, **kw)


def build_atomic(*, va: int, rkey: int, swapdt: int, cmpdt: int = 0, fetch_add: bool = False,
                 **kw) -> bytes:
    """RC COMPARE SWAP (or FETCH ADD, where ``swapdt`` is the add data)."""
    opcode = op("RC", "FETCH_ADD" if fetch_add else "COMPARE_SWAP")
    return build_roce(opcode=opcode, headers=_ATOMIC.pack(va, rkey, swapdt, cmpdt), **kw)


def build_atomic_ack(*, msn: int, origremdt: int, syndrome: int = 0x1F, **kw) -> bytes:
    return build_roce(opcode=op("RC", "ATOMIC_ACKNOWLEDGE"),
                      headers=_U32.pack((syndrome << 24) | msn) + _U64.pack(origremdt), **kw)


def build_rkey_advert(*, va: int, rkey: int, length: int, access: int, qpn: int = 0,
                      kind: int = 1) -> bytes:
    """The 32-byte RKeyAdvert SEND payload (put it in ``build_send(payload=...)``)."""
    return _RKEY_ADVERT.pack(RKEY_ADVERT_MAGIC, RKEY_ADVERT_VERSION, kind, access, va, rkey,
                             qpn & 0xFFFFFF, length)


def build_san_mad(*, method: int, tid: int, attrid: int = 0x0011, status: int = 0,
                  guid: int = 0, ports: int = 0, node_desc: bytes = b"",
                  qpns: tuple[int, ...] | list[int] = (), attrmod: int = 0) -> bytes:
    """The 256-byte SanMad SEND payload; ``node_desc`` is cut to 64 bytes, ``qpns`` to 39."""
    qpns = list(qpns)[:SAN_MAD_QPN_SLOTS]
    return _SAN_MAD.pack(SAN_MAD_BASE_VERSION, SAN_MAD_CLASS, SAN_MAD_CLASS_VERSION, method,
                         status, 0, tid, attrid, 0, attrmod, guid, ports, 0, len(qpns),
                         node_desc[:SAN_MAD_NODE_DESC_LEN],
                         *qpns, *[0] * (SAN_MAD_QPN_SLOTS - len(qpns)))
