# SPDX-License-Identifier: GPL-2.0-or-later
"""One TCP segment of a user-space TCH connection as a typed record, and its bytes.

The device process reads TCH segments with AF_PACKET and sends them with a raw IP socket, so it
needs whole IPv4 packets, fast and without Scapy. The wire numbers and the option layout come
from ``ftsslab.fast.tch`` (what ``ftsslab.layers.tch`` dissects); tests prove that
:meth:`Segment.encode` equals the Scapy build byte for byte.

Checksums are written but not verified on decode: a frame captured on a veth before the stack
finished its checksum (CHECKSUM_PARTIAL) still names the right segment; :func:`checksums_ok`
checks them where that matters.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ftsslab.fast.tch import build_tch_options, parse_tch_tcp, tch_flag_names
from ftsslab.lab.frames import checksum, ipv4

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"))

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIHHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_ETHERTYPE = struct.Struct("!H")
ETH_P_IP, ETH_P_8021Q = 0x0800, 0x8100
IPPROTO_TCP = 6


@dataclass(frozen=True)
class Segment:
    """A TCP segment in an IPv4 packet, with TCH's flags (``tch``: HND 4, SET 2, END 1 in
    ``TCP.reserved``) and options. ``endpoint`` is the endpoint option's value as on the wire,
    (client port, client ip); ``update`` the update option's (seq, ack)."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    tch: int = 0
    window: int = 65535
    endpoint: tuple[int, str] | None = None
    update: tuple[int, int] | None = None
    payload: bytes = b""
    ttl: int = 64
    ip_id: int = 0
    options: bytes = b""  # other TCP options, first in the header (XAP's 253), padded with EOL

    def encode(self) -> bytes:
        """The IPv4 packet: no IP options, DF clear (Scapy's defaults), both checksums set.
        TCP options only when a TCH option is present: endpoint, NOP NOP update, EOL, padded."""
        if not (0 <= self.flags <= 0x1FF and 0 <= self.tch <= 7):
            raise ValueError(f"flags {self.flags:#x} / tch {self.tch:#x} do not fit 9 / 3 bits")
        opts = b""
        if self.endpoint is not None or self.update is not None:
            opts = build_tch_options(self.endpoint, self.update)
        if self.options:
            if opts:
                raise ValueError("TCH options and other options do not share a header here")
            opts = self.options + b"\x00" * (-len(self.options) % 4)
        if len(opts) > 40:
            raise ValueError(f"{len(opts)} bytes of TCP options: 40 fit")
        src, dst = socket.inet_aton(self.src), socket.inet_aton(self.dst)
        tcp_len = _TCP.size + len(opts) + len(self.payload)
        off_flags = ((5 + len(opts) // 4) << 12) | (self.tch << 9) | self.flags
        tcp = bytearray(_TCP.pack(self.sport, self.dport, self.seq, self.ack, off_flags,
                                  self.window, 0, 0))
        tcp += opts + self.payload
        pseudo = _PSEUDO.pack(src, dst, 0, IPPROTO_TCP, tcp_len)
        tcp[16:18] = checksum(pseudo + tcp).to_bytes(2, "big")
        return ipv4(self.src, self.dst, IPPROTO_TCP, bytes(tcp), self.ip_id, self.ttl)

    def __str__(self) -> str:
        """One line for run logs and pcapng comments."""
        names = [n for bit, n in _FLAG_NAMES if self.flags & bit]
        names += sorted(tch_flag_names(self.tch), key="HND SET END".index)
        extra = "".join([f" endpoint={self.endpoint}" if self.endpoint else "",
                         f" update={self.update}" if self.update else "",
                         f" len={len(self.payload)}" if self.payload else ""])
        return (f"{self.src}:{self.sport} > {self.dst}:{self.dport} {'|'.join(names) or '-'} "
                f"seq={self.seq} ack={self.ack}{extra}")


def _ip_header(packet: memoryview) -> tuple[int, int] | None:
    """(header length, total length) of an unfragmented IPv4/TCP packet, else None."""
    if len(packet) < _IP.size:
        return None
    vihl, _, total, _, frag, _, proto, _, _, _ = _IP.unpack_from(packet)
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < _IP.size or not ihl <= total <= len(packet):
        return None
    if proto != IPPROTO_TCP or frag & 0x3FFF:  # MF or a fragment offset: not a whole segment
        return None
    return ihl, total


def decode(packet: bytes | bytearray | memoryview) -> Segment | None:
    """The segment of an IPv4 packet; None for anything else (not IPv4/TCP, a fragment,
    truncated, a malformed option list or TCH option). Unknown options are ignored;
    bytes after the IP total length (Ethernet padding) too. Never raises on bytes."""
    buf = memoryview(packet)
    hdr = _ip_header(buf)
    if hdr is None:
        return None
    ihl, total = hdr
    tcp = parse_tch_tcp(buf[ihl:total])
    if tcp is None:
        return None
    opts = tcp["tch_options"]
    return Segment(
        src=socket.inet_ntoa(buf[12:16]), dst=socket.inet_ntoa(buf[16:20]),
        sport=tcp["sport"], dport=tcp["dport"], seq=tcp["seq"], ack=tcp["ack"],
        flags=tcp["flags"], tch=tcp["reserved"], window=tcp["window"],
        endpoint=opts.get("TCHEndpoint"), update=opts.get("TCHUpdate"),
        payload=bytes(tcp["payload"]), ttl=buf[8], ip_id=int.from_bytes(buf[4:6], "big"),
    )


def ip_packet(frame: bytes | bytearray | memoryview) -> memoryview | None:
    """The IPv4 packet inside an Ethernet frame (untagged or one 802.1Q tag), else None."""
    buf = memoryview(frame)
    if len(buf) < 14:
        return None
    (etype,) = _ETHERTYPE.unpack_from(buf, 12)
    at = 14
    if etype == ETH_P_8021Q and len(buf) >= 18:
        (etype,) = _ETHERTYPE.unpack_from(buf, 16)
        at = 18
    return buf[at:] if etype == ETH_P_IP else None


def decode_frame(frame: bytes | bytearray | memoryview) -> Segment | None:
    """:func:`decode` of the IPv4 packet in an Ethernet frame (as AF_PACKET reads it)."""
    packet = ip_packet(frame)
    return None if packet is None else decode(packet)


def checksums_ok(packet: bytes | bytearray | memoryview) -> bool:
    """Whether an IPv4/TCP packet's header and TCP checksums verify (False if it is none)."""
    buf = memoryview(packet)
    hdr = _ip_header(buf)
    if hdr is None:
        return False
    ihl, total = hdr
    pseudo = _PSEUDO.pack(bytes(buf[12:16]), bytes(buf[16:20]), 0, IPPROTO_TCP, total - ihl)
    return checksum(bytes(buf[:ihl])) == 0 and checksum(pseudo + bytes(buf[ihl:total])) == 0
