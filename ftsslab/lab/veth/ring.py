"""A packet socket whose receive queue is a ring mapped into the process (PACKET_MMAP).

``recv`` on an AF_PACKET socket costs a system call per frame; with a TPACKET_V2 ring
the kernel copies each frame into a slot of a shared buffer and the process reads it
there: one ``epoll_wait`` per burst, none per frame (Documentation/networking/
packet_mmap.rst). TPACKET_V2 rather than V3: V3 hands frames over in blocks that a
timer retires (milliseconds), V2 frame by frame, as soon as each arrives.

The process's own transmissions are not put in the ring (PACKET_IGNORE_OUTGOING). A
frame longer than a slot is counted (``truncated``) and dropped, never handed on cut. An
802.1Q tag the veth receive path took off (its header says so) is put back in place.
Slots are released in order; on x86 a store is not reordered before the loads of the
frame that precede it, so no explicit barrier is needed between reading and releasing.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import struct

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26

# tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan_tci, vlan_tpid
_HDR = struct.Struct("=IIIHHIIHH")
TP_STATUS_VLAN_VALID = 1 << 4  # the receive path took an 802.1Q tag off: it is in the header
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_STATUS = struct.Struct("=I")
_TAG = struct.Struct("!HH")
PAGE = mmap.PAGESIZE


def slot_size(mtu: int) -> int:
    """A slot holds the tpacket2 header, the sockaddr_ll and a frame of ``mtu`` (with an
    Ethernet header and a VLAN tag), rounded up to a page fraction the kernel accepts."""
    need = 32 + 20 + 16 + mtu + 18
    size = 2048
    while size < need:
        size *= 2
    return size


class PacketRing:
    """An AF_PACKET socket bound to ``iface`` with a TPACKET_V2 receive ring."""

    def __init__(self, iface: str, mtu: int, ring_bytes: int = 8 << 20):
        self.frame_size = slot_size(mtu)
        block = max(self.frame_size, 16 * PAGE)
        self.frames_per_block = block // self.frame_size
        blocks = max(1, ring_bytes // block)
        self.nframes = blocks * self.frames_per_block
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING,
                                 struct.pack("=IIII", block, blocks, self.frame_size,
                                             self.nframes))
            self.map = mmap.mmap(self.sock.fileno(), block * blocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((iface, 0))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self.block = block
        self.head = 0  # the next slot to read
        self.truncated = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _offset(self, slot: int) -> int:
        return (slot // self.frames_per_block) * self.block + \
            (slot % self.frames_per_block) * self.frame_size

    def frames(self, limit: int) -> list[bytes]:
        """Up to ``limit`` frames that arrived, oldest first; their slots go back."""
        out: list[bytes] = []
        m, unpack, release, user = self.map, _HDR.unpack_from, _STATUS.pack_into, TP_STATUS_USER
        head, nframes, per_block = self.head, self.nframes, self.frames_per_block
        block, size = self.block, self.frame_size
        while len(out) < limit:
            off = (head // per_block) * block + (head % per_block) * size  # _offset(head)
            st, length, snaplen, mac, _, _, _, tci, tpid = unpack(m, off)
            if not st & user:
                break
            if snaplen < length:
                self.truncated += 1
            elif st & TP_STATUS_VLAN_VALID:  # put back the tag the kernel took off
                at = off + mac
                tpid = tpid if st & TP_STATUS_VLAN_TPID_VALID else 0x8100
                out.append(m[at : at + 12] + _TAG.pack(tpid, tci) + m[at + 12 : at + snaplen])
            else:
                out.append(m[off + mac : off + mac + snaplen])
            release(m, off, TP_STATUS_KERNEL)
            head = (head + 1) % nframes
        self.head = head
        return out

    def attach_filter(self, insns) -> None:
        """A classic BPF program, (code, jt, jf, k) per instruction: the kernel keeps a copy,
        and drops what it refuses before the ring."""
        code = b"".join(struct.pack("HBBI", *insn) for insn in insns)  # struct sock_filter
        buf = ctypes.create_string_buffer(code)
        prog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))  # struct sock_fprog
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)

    def pending_error(self) -> int:
        """The socket's pending error (ENETDOWN when its link went down), now cleared: a
        readable ring with no frame in it has one, and epoll would report it forever."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def send(self, frame: bytes) -> int:
        return self.sock.send(frame)

    def close(self) -> None:
        self.map.close()
        self.sock.close()
