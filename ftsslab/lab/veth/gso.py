"""Sending ftsslab's TCP segments through the kernel's segmentation offload (GSO).

A pure-Python TCP pays per segment: one ``send(2)`` on the packet socket and one checksum
pass over the payload, about two thirds of the sender's time (docs/tcp.md). A packet socket
with PACKET_VNET_HDR takes a ``virtio_net_hdr`` before each frame, as a virtio NIC's driver
does: "this frame is N segments of ``gso_size`` bytes" (VIRTIO_NET_HDR_GSO_TCPV4) and "finish
its TCP checksum from ``csum_start``" (NEEDS_CSUM). The kernel then cuts the run into the
segments the TCB made, in C, before the interface and its taps (the lab's veths have checksum
offload off, so no TSO: captures see the segments), and sums each one.

``runs`` decides what may go as one frame: consecutive segments of one connection whose
headers differ only in the sequence number, each ``gso_size`` bytes long but the last, which
may be shorter and carry PSH -- exactly what the kernel's ``tcp_gso_segment`` gives back
(it copies the header, advances the sequence number, and keeps PSH and FIN for the last
segment only). Its IPv4 ids count up from 0 (``inet_gso_segment``) where ``encode`` sends 0:
DF is clear, and RFC 6864 asks such datagrams for distinct ids, so this is no worse.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

from ..tcp import ACK, PSH, TcpSegment

SOL_PACKET, PACKET_VNET_HDR = 263, 15
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4 = 0, 1
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little-endian on x86, whose
# legacy virtio byte order is the host's)
_VNET = struct.Struct("<BBHHHH")
ETH, IP = 14, 20
MAX_RUN = 65535 - IP - 60  # an IPv4 datagram's payload, less the largest TCP header


def _same_header(a: TcpSegment, b: TcpSegment) -> bool:
    """All but the sequence number and flags (the source is the stack's one address)."""
    return (a.dport == b.dport and a.sport == b.sport and a.dst == b.dst and a.ack == b.ack
            and a.window == b.window and a.ts == b.ts and a.mss == b.mss
            and a.wscale == b.wscale and a.sack_perm == b.sack_perm)


def runs(segs: list[TcpSegment]) -> Iterator[list[TcpSegment]]:
    """``segs`` in order, cut into runs that the kernel's segmentation reproduces exactly
    (a run of one is any segment)."""
    run: list[TcpSegment] = []
    for seg in segs:
        if run:
            first, last = run[0], run[-1]
            size = len(first.payload)
            if (last.flags == ACK and seg.flags in (ACK, ACK | PSH) and _same_header(first, seg)
                    and len(last.payload) == size and 0 < len(seg.payload) <= size
                    and seg.seq == (last.seq + size) % (1 << 32)
                    and size * len(run) + len(seg.payload) <= MAX_RUN):
                run.append(seg)
                continue
            yield run
        run = [seg]
    if run:
        yield run


def frame(mac: bytes, run: list[TcpSegment]) -> bytes:
    """The virtio_net_hdr and Ethernet frame (``mac``: destination, source, EtherType) of a
    run: one segment holding all their payloads, its checksum left to the kernel."""
    first = run[0]
    payload = b"".join(s.payload for s in run) if len(run) > 1 else first.payload
    flags = run[-1].flags
    packet = first._replace(payload=payload, flags=flags).encode(partial=True)
    thlen = (packet[IP + 12] >> 4) * 4
    gso = VIRTIO_NET_HDR_GSO_TCPV4 if len(run) > 1 else VIRTIO_NET_HDR_GSO_NONE
    size = len(first.payload) if len(run) > 1 else 0
    return _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, ETH + IP + thlen, size, ETH + IP,
                      16) + mac + packet


def open_socket(iface: str) -> socket.socket:
    """A send-only packet socket on ``iface`` that takes virtio_net_hdr frames (protocol 0:
    it receives nothing). OSError where the kernel has no PACKET_VNET_HDR."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.bind((iface, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
