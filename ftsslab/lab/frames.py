"""Plain Ethernet, ARP, IPv4 and UDP bytes for the sim's modelled endpoints (no Scapy).

The sim's hosts and seed models build the frames a kernel would send, so the sim's
capture has the veth capture's wire format. Parsers return None instead of raising:
whatever arrives on a link is arbitrary bytes.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

from .switch import parse_mac

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
IPPROTO_TCP, IPPROTO_UDP = 6, 17
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!4s4sBBH")


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum. The one's complement sum does not depend on byte order
    (RFC 1071 2(B)), so the words are summed in native order and swapped once at the end."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    return total if sys.byteorder == "big" else ((total & 0xFF) << 8) | (total >> 8)


def mac_bytes(mac: str | bytes) -> bytes:
    return mac if isinstance(mac, bytes) else parse_mac(mac)


def ether(dst: str | bytes, src: str | bytes, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def ip_payload(frame: bytes) -> bytes | None:
    """The IPv4 packet of an untagged Ethernet frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    return frame[14:]


@dataclass(frozen=True)
class Arp:
    op: int  # 1 request, 2 reply
    sender_mac: bytes
    sender_ip: str
    target_ip: str


def parse_arp(frame: bytes) -> Arp | None:
    """An Ethernet/IPv4 ARP packet, else None."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, smac, sip, _, tip = _ARP.unpack_from(frame, 14)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or op not in (1, 2):
        return None
    return Arp(op, smac, socket.inet_ntoa(sip), socket.inet_ntoa(tip))


def arp_request(src_mac: str | bytes, src_ip: str, target_ip: str) -> bytes:
    body = _ARP.pack(1, ETH_P_IP, 6, 4, 1, mac_bytes(src_mac), socket.inet_aton(src_ip),
                     b"\x00" * 6, socket.inet_aton(target_ip))
    return ether(BROADCAST, src_mac, ETH_P_ARP, body)


def arp_reply(request: Arp, mac: str | bytes) -> bytes:
    """``mac``'s answer to ``request``: ``request.target_ip`` is at ``mac``."""
    body = _ARP.pack(1, ETH_P_IP, 6, 4, 2, mac_bytes(mac), socket.inet_aton(request.target_ip),
                     request.sender_mac, socket.inet_aton(request.sender_ip))
    return ether(request.sender_mac, mac, ETH_P_ARP, body)


def answer_arp(arp: Arp, ip: str, mac: bytes, neighbours: dict[str, bytes]) -> bytes | None:
    """A user-space IPv4 host's ARP: learn the sender of a request for ``ip`` or of any reply
    into ``neighbours``; the reply to send when it asked for ``ip``, else None."""
    if arp.target_ip == ip or arp.op == 2:
        neighbours[arp.sender_ip] = arp.sender_mac
    return arp_reply(arp, mac) if arp.op == 1 and arp.target_ip == ip else None


def ipv4(src: str, dst: str, proto: int, payload: bytes, ip_id: int = 0,
         ttl: int = 64) -> bytes:
    """An IPv4 header (no options, DF clear: Scapy's defaults) in front of ``payload``."""
    head = bytearray(_IP.pack(0x45, 0, 20 + len(payload), ip_id, 0, ttl, proto, 0,
                              socket.inet_aton(src), socket.inet_aton(dst)))
    head[10:12] = checksum(bytes(head)).to_bytes(2, "big")
    return bytes(head) + payload


@dataclass(frozen=True)
class Datagram:
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def udp_packet(d: Datagram) -> bytes:
    length = _UDP.size + len(d.payload)
    head = bytearray(_UDP.pack(d.sport, d.dport, length, 0))
    pseudo = _PSEUDO.pack(socket.inet_aton(d.src), socket.inet_aton(d.dst), 0, IPPROTO_UDP,
                          length)
    head[6:8] = (checksum(pseudo + bytes(head) + d.payload) or 0xFFFF).to_bytes(2, "big")
    return ipv4(d.src, d.dst, IPPROTO_UDP, bytes(head) + d.payload)


def ip_header(packet: bytes) -> tuple[int, int, int, str, str] | None:
    """(header length, total length, protocol, src, dst) of an unfragmented IPv4 packet."""
    if len(packet) < _IP.size:
        return None
    vihl, _, total, _, frag, _, proto, _, src, dst = _IP.unpack_from(packet)
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < _IP.size or not ihl <= total <= len(packet) or frag & 0x3FFF:
        return None
    return ihl, total, proto, socket.inet_ntoa(src), socket.inet_ntoa(dst)


def parse_udp(packet: bytes) -> Datagram | None:
    """The UDP datagram of an IPv4 packet, else None (checksums are not verified)."""
    head = ip_header(packet)
    if head is None or head[2] != IPPROTO_UDP or head[1] - head[0] < _UDP.size:
        return None
    ihl, total, _, src, dst = head
    sport, dport, length, _ = _UDP.unpack_from(packet, ihl)
    if not _UDP.size <= length <= total - ihl:
        return None
    return Datagram(src, dst, sport, dport, bytes(packet[ihl + _UDP.size:ihl + length]))
