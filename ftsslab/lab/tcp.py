"""A modelled TCP endpoint (one TCB) for the sim, sans-IO: segments and ``now`` in, segments out.

On veth the kernel is every node's TCP; in the sim a host's client (the ``fetch`` step) and
the seed models that serve connections use this instead. It is small on purpose: handshake,
sequence and acknowledgement numbers, data within the peer's window and ``mss``, FIN in both
orders, RST, retransmission from SND.UNA after an RTO (doubling, ``max_retries``), a bounded
send buffer. No options (no window scaling, SACK or timestamps: the sim needs no 64 KiB+
windows), no congestion control, out-of-order segments dropped and answered with an ACK.

``snapshot()`` / ``Tcb.restore`` are TCP_REPAIR's checkpoint and restore: a restored TCB
starts in REPAIR, where it sends nothing and keeps what arrives until ``leave_repair``.

The TCB reads only the fields of :class:`TcpSegment` it needs, so any record with the same
attribute names (``ftsslab.nas.segment.Segment``) can be fed to it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .frames import IPPROTO_TCP, checksum, ip_header, ipv4

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
WINDOW = 65535
MSS = 1460
SNDBUF = 64 * 1024
_M = 1 << 32
_TCP = struct.Struct("!HHIIHHHH")
_PSEUDO = struct.Struct("!4s4sBBH")


def seq_after(a: int, b: int) -> bool:
    """Sequence number ``a`` is later than ``b`` (RFC 1982)."""
    return 0 < (a - b) % _M < 1 << 31


@dataclass(frozen=True)
class TcpSegment:
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int = WINDOW
    payload: bytes = b""

    def encode(self) -> bytes:
        """The IPv4 packet, both checksums set."""
        tcp = bytearray(_TCP.pack(self.sport, self.dport, self.seq, self.ack,
                                  (5 << 12) | self.flags, self.window, 0, 0)) + self.payload
        pseudo = _PSEUDO.pack(socket.inet_aton(self.src), socket.inet_aton(self.dst), 0,
                              IPPROTO_TCP, len(tcp))
        tcp[16:18] = checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
        return ipv4(self.src, self.dst, IPPROTO_TCP, bytes(tcp))


def decode(packet: bytes) -> TcpSegment | None:
    """The TCP segment of an IPv4 packet (options skipped), else None; never raises."""
    head = ip_header(packet)
    if head is None or head[2] != IPPROTO_TCP or head[1] - head[0] < _TCP.size:
        return None
    ihl, total, _, src, dst = head
    sport, dport, seq, ack, off_flags, window, _, _ = _TCP.unpack_from(packet, ihl)
    off = (off_flags >> 12) * 4
    if off < _TCP.size or ihl + off > total:
        return None
    return TcpSegment(src, dst, sport, dport, seq, ack, off_flags & 0x1FF, window,
                      bytes(packet[ihl + off:total]))


class SegmentLike(Protocol):
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes


class TcpState(Enum):
    CLOSED = "closed"
    SYN_SENT = "syn-sent"
    SYN_RCVD = "syn-rcvd"
    ESTABLISHED = "established"
    FIN_WAIT_1 = "fin-wait-1"
    FIN_WAIT_2 = "fin-wait-2"
    CLOSING = "closing"
    TIME_WAIT = "time-wait"
    CLOSE_WAIT = "close-wait"
    LAST_ACK = "last-ack"
    REPAIR = "repair"  # restored from a snapshot: silent until leave_repair()


class TcpEvent(Enum):
    CONNECT = "connect()"
    PASSIVE = "SYN to a listener"
    SYNACK = "SYN/ACK"
    ACKED = "our SYN acknowledged"
    CLOSE = "close()"
    PEER_FIN = "FIN"
    FIN_ACKED = "our FIN acknowledged"
    TIME_WAIT_DONE = "2MSL"
    RESET = "RST"
    ABORT = "abort()"
    GIVE_UP = "retries exhausted"
    DROP = "dropped silently"
    RESTORE = "restore()"
    LEAVE_REPAIR = "leave_repair()"


_T, _E = TcpState, TcpEvent
_LIVE = (_T.SYN_SENT, _T.SYN_RCVD, _T.ESTABLISHED, _T.FIN_WAIT_1, _T.FIN_WAIT_2, _T.CLOSING,
         _T.CLOSE_WAIT, _T.LAST_ACK)

TRANSITIONS: dict[tuple[TcpState, TcpEvent], TcpState] = {
    (_T.CLOSED, _E.CONNECT): _T.SYN_SENT,
    (_T.CLOSED, _E.PASSIVE): _T.SYN_RCVD,
    (_T.CLOSED, _E.RESTORE): _T.REPAIR,
    (_T.SYN_SENT, _E.SYNACK): _T.ESTABLISHED,
    (_T.SYN_RCVD, _E.ACKED): _T.ESTABLISHED,
    (_T.ESTABLISHED, _E.CLOSE): _T.FIN_WAIT_1,
    (_T.ESTABLISHED, _E.PEER_FIN): _T.CLOSE_WAIT,
    (_T.FIN_WAIT_1, _E.FIN_ACKED): _T.FIN_WAIT_2,
    (_T.FIN_WAIT_1, _E.PEER_FIN): _T.CLOSING,
    (_T.FIN_WAIT_2, _E.PEER_FIN): _T.TIME_WAIT,
    (_T.CLOSING, _E.FIN_ACKED): _T.TIME_WAIT,
    (_T.CLOSE_WAIT, _E.CLOSE): _T.LAST_ACK,
    (_T.LAST_ACK, _E.FIN_ACKED): _T.CLOSED,
    (_T.TIME_WAIT, _E.TIME_WAIT_DONE): _T.CLOSED,
    (_T.REPAIR, _E.LEAVE_REPAIR): _T.ESTABLISHED,
    (_T.REPAIR, _E.DROP): _T.CLOSED,
    (_T.ESTABLISHED, _E.DROP): _T.CLOSED,
    **{(s, e): _T.CLOSED for s in _LIVE for e in (_E.RESET, _E.ABORT, _E.GIVE_UP)},
}


class TcpError(Exception):
    """The application called the TCB at the wrong moment (segments never raise)."""


@dataclass(frozen=True)
class TcbSnapshot:
    """An established TCB as TCP_REPAIR reads it (``ftsslab.nas.repair.TcpCheckpoint``
    carries the same numbers): ``write_seq`` follows the last byte written."""

    local: tuple[str, int]
    remote: tuple[str, int]
    snd_una: int
    write_seq: int
    rcv_nxt: int
    send_queue: bytes  # [snd_una, write_seq): written, not acknowledged
    unsent: int  # trailing bytes of send_queue never transmitted
    recv_queue: bytes  # received, not read by the application
    mss: int
    snd_wnd: int  # the peer's window


class Tcb:
    """One connection. Make it with ``connect``, ``accept`` (a SYN to a listener) or
    ``restore``; every call returns the segments to send."""

    def __init__(self, local: tuple[str, int], remote: tuple[str, int], iss: int, *,
                 mss: int = MSS, sndbuf: int = SNDBUF, rto: float = 0.2, max_retries: int = 6,
                 time_wait: float = 0.5) -> None:
        self.local, self.remote = local, remote
        self.state = _T.CLOSED
        self.iss = iss % _M
        self.snd_una = self.snd_nxt = self.snd_max = self.iss
        self.rcv_nxt = 0
        self.snd_wnd = WINDOW
        self.mss, self.sndbuf, self.rto0, self.max_retries = mss, sndbuf, rto, max_retries
        self.time_wait = time_wait
        self.rto, self.tries = rto, 0
        self.deadline: float | None = None
        self._out = bytearray()  # from SND.UNA (the SYN/FIN take no room here)
        self._fin_queued = False
        self._fin_seq: int | None = None  # our FIN's sequence number, once sent
        self.received = bytearray()  # in-order data the application has not taken
        self.peer_fin = False
        self.reset = False  # closed by a RST (either side)
        self.history: list[tuple[TcpState, TcpState, TcpEvent]] = []
        self._held: list[SegmentLike] = []  # REPAIR: what arrived, processed on leaving

    # ---- opening --------------------------------------------------------------------------

    @classmethod
    def connect(cls, local: tuple[str, int], remote: tuple[str, int], iss: int, now: float,
                **kw) -> tuple[Tcb, list[TcpSegment]]:
        tcb = cls(local, remote, iss, **kw)
        tcb._fire(_E.CONNECT)
        tcb.snd_nxt = tcb.snd_max = (tcb.iss + 1) % _M
        tcb._arm(now)
        return tcb, [tcb._seg(SYN, seq=tcb.iss, ack=0)]

    @classmethod
    def accept(cls, syn: SegmentLike, iss: int, now: float, **kw) -> tuple[Tcb, list[TcpSegment]]:
        """A listener's answer to ``syn`` (the caller checked it is a SYN without ACK)."""
        tcb = cls((syn.dst, syn.dport), (syn.src, syn.sport), iss, **kw)
        tcb._fire(_E.PASSIVE)
        tcb.rcv_nxt, tcb.snd_wnd = (syn.seq + 1) % _M, syn.window
        tcb.snd_nxt = tcb.snd_max = (tcb.iss + 1) % _M
        tcb._arm(now)
        return tcb, [tcb._seg(SYN | ACK, seq=tcb.iss)]

    @classmethod
    def restore(cls, snap: TcbSnapshot, **kw) -> Tcb:
        """The TCB ``snap`` describes, in REPAIR: silent until ``leave_repair``."""
        tcb = cls(snap.local, snap.remote, snap.snd_una, mss=snap.mss, **kw)
        tcb._fire(_E.RESTORE)
        tcb._out = bytearray(snap.send_queue)
        tcb.snd_nxt = tcb.snd_max = (snap.write_seq - snap.unsent) % _M
        tcb.rcv_nxt, tcb.snd_wnd = snap.rcv_nxt, snap.snd_wnd
        tcb.received = bytearray(snap.recv_queue)
        return tcb

    def snapshot(self) -> TcbSnapshot:
        if self.state is not _T.ESTABLISHED or self._fin_queued:
            raise TcpError(f"snapshot of a connection in {self.state.name}")
        sent = (self.snd_max - self.snd_una) % _M
        return TcbSnapshot(self.local, self.remote, self.snd_una,
                           (self.snd_una + len(self._out)) % _M, self.rcv_nxt, bytes(self._out),
                           len(self._out) - sent, bytes(self.received), self.mss, self.snd_wnd)

    def leave_repair(self, now: float) -> list[TcpSegment]:
        """Live again: an ACK (the window probe), then what arrived meanwhile, then the
        unacknowledged bytes again from SND.UNA."""
        self._fire(_E.LEAVE_REPAIR)
        out = [self._seg(ACK)]
        held, self._held = self._held, []
        for seg in held:
            out += self.on_segment(seg, now)
        self.snd_nxt = self.snd_una
        return out + self._transmit(now)

    def drop(self) -> None:
        """Forget the connection without a segment (TCP_REPAIR's silent close)."""
        self._fire(_E.DROP)
        self.deadline = None

    # ---- the application --------------------------------------------------------------------

    @property
    def room(self) -> int:
        """Bytes ``write`` takes now."""
        return max(0, self.sndbuf - len(self._out)) if self._open_for_writing else 0

    @property
    def unacked(self) -> int:
        """Bytes written and not yet acknowledged."""
        return len(self._out)

    @property
    def _open_for_writing(self) -> bool:
        return self.state in (_T.ESTABLISHED, _T.CLOSE_WAIT, _T.SYN_RCVD) and not self._fin_queued

    def write(self, data: bytes, now: float) -> tuple[int, list[TcpSegment]]:
        """Queue what fits of ``data``: (bytes taken, segments)."""
        n = min(len(data), self.room)
        self._out += data[:n]
        return n, self._transmit(now) if n else []

    def read(self) -> bytes:
        data, self.received = bytes(self.received), bytearray()
        return data

    def close(self, now: float) -> list[TcpSegment]:
        """FIN once everything written is sent."""
        if self.state in (_T.CLOSED, _T.REPAIR) or self._fin_queued:
            return []
        if self.state in (_T.SYN_SENT, _T.SYN_RCVD):
            return self.abort()
        self._fire(_E.CLOSE)
        self._fin_queued = True
        return self._transmit(now)

    def abort(self) -> list[TcpSegment]:
        if self.state not in _LIVE:
            return []
        self._fire(_E.ABORT)
        self.reset, self.deadline = True, None
        return [self._seg(RST | ACK)]

    # ---- the network ----------------------------------------------------------------------

    def on_segment(self, seg: SegmentLike, now: float) -> list[TcpSegment]:
        if (seg.src, seg.sport, seg.dst, seg.dport) != (*self.remote, *self.local):
            return []
        if self.state is _T.REPAIR:
            self._held.append(seg)
            return []
        if self.state is _T.CLOSED:
            return []
        if seg.flags & RST:
            ok = (seg.flags & ACK and seg.ack == self.snd_nxt) if self.state is _T.SYN_SENT \
                else (seg.seq - self.rcv_nxt) % _M <= WINDOW
            if ok:
                self._fire(_E.RESET)
                self.reset, self.deadline = True, None
            return []
        if self.state is _T.SYN_SENT:
            return self._syn_sent(seg, now)
        if seg.flags & SYN:  # a retransmitted SYN or SYN/ACK: our answer was lost
            if self.state is _T.SYN_RCVD:
                return [self._seg(SYN | ACK, seq=self.iss)]
            return [self._seg(ACK)]
        out: list[TcpSegment] = []
        if seg.flags & ACK:
            self._ack(seg, now)
        if self.state is _T.CLOSED:
            return out
        if self.state is _T.SYN_RCVD:
            return out  # no ACK of our SYN yet: nothing else counts
        ack_needed = self._data(seg, now)
        if ack_needed:
            out.append(self._seg(ACK))
        return out + self._transmit(now)

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, now: float) -> list[TcpSegment]:
        if self.deadline is None or now < self.deadline:
            return []
        if self.state is _T.TIME_WAIT:
            self._fire(_E.TIME_WAIT_DONE)
            self.deadline = None
            return []
        if self.tries >= self.max_retries:
            self._fire(_E.GIVE_UP)
            self.reset, self.deadline = True, None
            return [self._seg(RST | ACK)]
        self.tries += 1
        self.rto *= 2
        self.deadline = now + self.rto
        if self.state is _T.SYN_SENT:
            return [self._seg(SYN, seq=self.iss, ack=0)]
        if self.state is _T.SYN_RCVD:
            return [self._seg(SYN | ACK, seq=self.iss)]
        self.snd_nxt = self.snd_una  # go back N
        return self._transmit(now, probe=True)

    # ---- internals --------------------------------------------------------------------------

    def _fire(self, event: TcpEvent) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise TcpError(f"TCP {self.local[0]}:{self.local[1]}: {event.value} while "
                           f"{self.state.name}")
        self.history.append((self.state, new, event))
        self.state = new

    def _arm(self, now: float) -> None:
        self.rto, self.tries, self.deadline = self.rto0, 0, now + self.rto0

    def _seg(self, flags: int, seq: int | None = None, ack: int | None = None,
             payload: bytes = b"") -> TcpSegment:
        return TcpSegment(self.local[0], self.remote[0], self.local[1], self.remote[1],
                          self.snd_nxt if seq is None else seq,
                          self.rcv_nxt if ack is None else ack, flags, WINDOW, payload)

    def _syn_sent(self, seg: SegmentLike, now: float) -> list[TcpSegment]:
        if seg.flags & (SYN | ACK) != SYN | ACK or seg.ack != self.snd_nxt:
            return []
        self._fire(_E.SYNACK)
        self.rcv_nxt, self.snd_wnd = (seg.seq + 1) % _M, seg.window
        self.snd_una, self.deadline = self.snd_nxt, None
        return [self._seg(ACK), *self._transmit(now)]

    def _ack(self, seg: SegmentLike, now: float) -> None:
        una = self.snd_una
        if self.state is _T.SYN_RCVD:
            if seg.ack != self.snd_nxt:
                return
            self._fire(_E.ACKED)
            self.snd_una, self.deadline = seg.ack, None
            self.snd_wnd = seg.window
            return
        if not seq_after(seg.ack, una) or seq_after(seg.ack, self.snd_max):
            if seg.ack == una:
                self.snd_wnd = seg.window
            return
        n = (seg.ack - una) % _M
        fin_acked = self._fin_seq is not None and seg.ack == (self._fin_seq + 1) % _M
        del self._out[:n - (1 if fin_acked else 0)]
        self.snd_una, self.snd_wnd = seg.ack, seg.window
        if seq_after(seg.ack, self.snd_nxt):
            self.snd_nxt = seg.ack
        self.deadline = None if self.snd_una == self.snd_max else now + self.rto0
        self.rto, self.tries = self.rto0, 0
        if fin_acked:
            self._fire(_E.FIN_ACKED)
            if self.state is _T.TIME_WAIT:
                self.deadline = now + self.time_wait
            elif self.state is _T.CLOSED:
                self.deadline = None

    def _data(self, seg: SegmentLike, now: float) -> bool:
        """Take in-order payload and FIN; whether an ACK is due."""
        if self.state not in (_T.ESTABLISHED, _T.FIN_WAIT_1, _T.FIN_WAIT_2):
            return bool(seg.payload or seg.flags & FIN) and self.state is not _T.CLOSED
        payload, fin = seg.payload, bool(seg.flags & FIN)
        off = (self.rcv_nxt - seg.seq) % _M
        if not payload and not fin:
            return False
        if off >= 1 << 31 or off > len(payload):  # a gap (or wholly old with a FIN)
            return True
        new = payload[off:]
        self.received += new
        self.rcv_nxt = (self.rcv_nxt + len(new)) % _M
        if fin:
            self.rcv_nxt = (self.rcv_nxt + 1) % _M
            self.peer_fin = True
            self._fire(_E.PEER_FIN)
            if self.state is _T.TIME_WAIT:
                self.deadline = now + self.time_wait
        return True

    def _transmit(self, now: float, probe: bool = False) -> list[TcpSegment]:
        """Data from SND.NXT as the peer's window allows, then our FIN once queued."""
        if self.state not in (_T.ESTABLISHED, _T.CLOSE_WAIT, _T.FIN_WAIT_1, _T.CLOSING,
                              _T.LAST_ACK):
            return []
        out = []
        while True:
            off = (self.snd_nxt - self.snd_una) % _M
            left = len(self._out) - off
            room = self.snd_wnd - off
            if left <= 0 or (room <= 0 and not (probe and not out)):
                break
            chunk = bytes(self._out[off:off + max(1, min(self.mss, room, left))])
            out.append(self._seg(ACK | (PSH if len(chunk) == left else 0), payload=chunk))
            self._sent(len(chunk))
        fin_due = self._fin_queued and (self.snd_nxt - self.snd_una) % _M == len(self._out)
        if fin_due and (self._fin_seq is None or self.snd_nxt == self._fin_seq):
            self._fin_seq = self.snd_nxt
            out.append(self._seg(FIN | ACK))
            self._sent(1)
        if out and self.deadline is None:
            self.deadline = now + self.rto
        return out

    def _sent(self, n: int) -> None:
        self.snd_nxt = (self.snd_nxt + n) % _M
        if seq_after(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt

