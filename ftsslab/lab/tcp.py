"""ftsslab's TCP endpoint (one TCB), sans-IO: segments, bytes and ``now`` in, segments out.

One core for two drivers: the sim (a host's ``fetch`` client and the seed models that serve
connections) and ``ftsslab.lab.veth.rawtcp``, which runs it over AF_PACKET on a veth so a NAS
device can hold one direction of a connection whose client is an unmodified kernel TCP (a
Linux socket cannot be split by direction, seed 002 D2.6). It never touches a socket, a
thread or a clock: the driver calls ``on_segment``, ``on_timer`` once ``next_deadline()``
has passed, and the application calls ``write``/``read``/``close``; each returns the
segments to send. What changed is read from the TCB (``state``, ``received``, ``peer_fin``,
``reset``, ``history``).

What it does (RFC 9293 unless named): the handshake with MSS, window scale and timestamps
(RFC 7323) offered when ``options=True`` and used only when the peer offers them too;
sequence and acknowledgement acceptability, SND.WL1/WL2 window updates, an out-of-order
queue (bounded by the window and ``ooo_max`` segments; an out-of-window empty segment is
answered at most every ``OOW_INTERVAL``, as Linux does), FIN in both orders, RST accepted
only at RCV.NXT with a challenge ACK otherwise and for a SYN in a synchronized state (RFC
5961), and ignored in TIME-WAIT (RFC 1337); PAWS (a segment with an older TSval than
TS.Recent is dropped and acknowledged) and RTT measurement from TSecr (RTTM, none from an
echo older than the last retransmission); RFC 6298 RTO (SRTT/RTTVAR, Karn's rule without
timestamps, backoff, ``max_retries`` then a RST); RFC 5681 slow start and congestion
avoidance, limited transmit (RFC 3042), fast retransmit and NewReno fast recovery (RFC
6582); a persist timer that probes a zero window; a receive buffer whose free space is the
advertised window (never shrunk, receiver SWS avoidance) and a bounded send buffer; delayed
ACKs when ``delack`` is set (every ``ack_every``-th segment at once, out-of-order data and
FIN at once).

Left out: SACK (SACK-permitted is parsed and declined), simultaneous open (a SYN without
ACK in SYN-SENT is ignored), urgent data, ECN, PAWS's 24-day idle rule, keep-alives, the
MSS from the path MTU, Nagle (a write is sent at once, as TCP_NODELAY), IP options and
fragments (``decode`` refuses fragments). Without ``options`` (the sim's default) no
option is sent and ``mss`` is assumed both ways, as the sim's models agree out of band.

``snapshot()`` / ``Tcb.restore`` are TCP_REPAIR's checkpoint and restore (with the
negotiated option state): a restored TCB starts in REPAIR, where it sends nothing and
keeps what arrives until ``leave_repair``.

The TCB reads only the fields of :class:`TcpSegment` it needs, so any record with the same
attribute names (``ftsslab.nas.segment.Segment``, which has no ``ts``) can be fed to it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

from .frames import IPPROTO_TCP, ip_header

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
WINDOW = 65535
MSS = 1460
SNDBUF = 64 * 1024
RCVBUF = 256 * 1024  # the window is its free space (at most 64 KiB unless scaled)
WSCALE = 7  # what Linux offers for its default buffers
TS_OVERHEAD = 12  # NOP NOP TS in every segment once timestamps are on
OOW_INTERVAL = 0.2  # at most one ACK per this for out-of-window empty segments (Linux: 0.5)
_M = 1 << 32
_HALF = 1 << 31
_TCP = struct.Struct("!HHIIHHHH")
_TS = struct.Struct("!II")
_TS_OPT = b"\x01\x01\x08\x0a"


def seq_after(a: int, b: int) -> bool:
    """Sequence number ``a`` is later than ``b`` (RFC 1982)."""
    return 0 < (a - b) % _M < _HALF


def _fold(data, odd: bool) -> int:
    """The RFC 1071 one's complement sum of ``data`` (a zero byte appended when ``odd``),
    modulo 0xFFFF: as 2**16 = 1 (mod 0xFFFF), one big integer's remainder is that sum --
    computed in C at memory speed rather than word by word in Python. A long one is halved
    first (high half + low half, at a multiple of 16 bits: the same remainder), as shifts
    and adds cost less than the division's digit-by-digit loop."""
    x = int.from_bytes(data, "big") << (8 if odd else 0)
    n = len(data) * 8
    while n > 4096:
        h = (n >> 1) & ~1023
        m = _MASKS.get(h) or _MASKS.setdefault(h, (1 << h) - 1)
        x = (x >> h) + (x & m)
        n = n - h + 1
    return x % 0xFFFF


_MASKS: dict[int, int] = {}  # at most 64: h is a multiple of 1024 bits below 2**19


class TcpSegment(NamedTuple):
    """A segment; ``mss``/``wscale``/``sack_perm`` are SYN options, ``ts`` is (TSval, TSecr).
    A named tuple: made and taken apart once per segment, so it must be cheap."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int = WINDOW
    payload: bytes = b""
    mss: int | None = None
    wscale: int | None = None
    sack_perm: bool = False
    ts: tuple[int, int] | None = None

    def options(self) -> bytes:
        """Linux's layout: MSS, NOP NOP TS, NOP WS, NOP NOP SACK-permitted."""
        out = b"" if self.mss is None else b"\x02\x04" + self.mss.to_bytes(2, "big")
        if self.ts is not None:
            out += _TS_OPT + _TS.pack(*self.ts)
        if self.wscale is not None:
            out += b"\x01\x03\x03" + bytes((self.wscale,))
        if self.sack_perm:
            out += b"\x01\x01\x04\x02"
        return out

    def encode(self, partial: bool = False) -> bytes:
        """The IPv4 packet (no IP options, DF clear, id 0: Scapy's defaults), both checksums
        set. The TCP checksum is one fold over addresses + segment (the pseudo header's
        addresses lie right before the segment) plus protocol and length. ``partial``: the
        TCP checksum field holds the pseudo header's sum only, for the kernel to finish
        (CHECKSUM_PARTIAL, ``veth/gso.py``), and the payload is not summed here."""
        payload = self.payload
        opts = self.options() if self.mss is not None or self.ts is not None \
            or self.wscale is not None or self.sack_perm else b""
        tcp_len = 20 + len(opts) + len(payload)
        total = 20 + tcp_len
        addrs = socket.inet_aton(self.src) + socket.inet_aton(self.dst)
        off_flags = ((5 + len(opts) // 4) << 12) | self.flags
        head = _IPTCP.pack(0x45, 0, total, 0, 0, 64, IPPROTO_TCP, 0, addrs, self.sport,
                           self.dport, self.seq, self.ack, off_flags, self.window, 0, 0)
        ip_sum = _fold(head[:20], False)
        if partial:
            s = (_fold(addrs, False) + IPPROTO_TCP + tcp_len) % 0xFFFF
            tcp_sum = s or 0xFFFF
        else:
            s = (_fold(head[12:], False) + IPPROTO_TCP + tcp_len + _fold(opts, False)
                 + _fold(payload, len(payload) % 2)) % 0xFFFF
            tcp_sum = 0xFFFF - s if s else 0
        return b"".join((head[:10], (0xFFFF - ip_sum if ip_sum else 0).to_bytes(2, "big"),
                         head[12:36], tcp_sum.to_bytes(2, "big"), head[38:], opts, payload))


_IPTCP = struct.Struct("!BBHHHBBH8sHHIIHHHH")


def _options(buf, at: int, end: int):
    """(mss, wscale, sack_perm, ts) of an option list; a malformed one ends the list."""
    if end - at == 12 and buf[at:at + 4] == _TS_OPT:  # every segment Linux sends with TS
        return None, None, False, _TS.unpack_from(buf, at + 4)
    mss = ws = ts = None
    sack = False
    while at < end:
        kind = buf[at]
        if kind == 0:
            break
        if kind == 1:
            at += 1
            continue
        if at + 1 >= end or buf[at + 1] < 2 or at + buf[at + 1] > end:
            break
        size = buf[at + 1]
        if kind == 2 and size == 4:
            mss = (buf[at + 2] << 8) | buf[at + 3]
        elif kind == 3 and size == 3:
            ws = min(buf[at + 2], 14)  # RFC 7323 2.3: a larger shift is taken as 14
        elif kind == 4 and size == 2:
            sack = True
        elif kind == 8 and size == 10:
            ts = _TS.unpack_from(buf, at + 2)
        at += size
    return mss, ws, sack, ts


def decode(packet: bytes, verify: bool = False) -> TcpSegment | None:
    """The TCP segment of an IPv4 packet (bytes or a memoryview) with its options, else
    None -- also for a bad checksum when ``verify`` (the sim's frames are right by
    construction, a veth's may be corrupted); never raises."""
    head = ip_header(packet)
    if head is None or head[2] != IPPROTO_TCP or head[1] - head[0] < _TCP.size:
        return None
    ihl, total, _, src, dst = head
    sport, dport, seq, ack, off_flags, window, _, _ = _TCP.unpack_from(packet, ihl)
    off = (off_flags >> 12) * 4
    if off < _TCP.size or ihl + off > total:
        return None
    if verify:
        tcp_len = total - ihl
        s = _fold(packet[ihl:total], tcp_len % 2) + _fold(packet[12:20], False)
        if (s + IPPROTO_TCP + tcp_len) % 0xFFFF:
            return None
    mss = ws = ts = None
    sack = False
    if off > _TCP.size:
        mss, ws, sack, ts = _options(packet, ihl + _TCP.size, ihl + off)
    return TcpSegment(src, dst, sport, dport, seq, ack, off_flags & 0x1FF, window,
                      bytes(packet[ihl + off:total]), mss, ws, sack, ts)


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
_SENDING = (_T.ESTABLISHED, _T.CLOSE_WAIT, _T.FIN_WAIT_1, _T.CLOSING, _T.LAST_ACK)
_RECEIVING = (_T.ESTABLISHED, _T.FIN_WAIT_1, _T.FIN_WAIT_2)

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
    carries the same numbers): ``write_seq`` follows the last byte written. The option
    fields default to "none negotiated", what the sim's checkpoints carry."""

    local: tuple[str, int]
    remote: tuple[str, int]
    snd_una: int
    write_seq: int
    rcv_nxt: int
    send_queue: bytes  # [snd_una, write_seq): written, not acknowledged
    unsent: int  # trailing bytes of send_queue never transmitted
    recv_queue: bytes  # received, not read by the application
    mss: int  # the largest segment either way, options excluded
    snd_wnd: int  # the peer's window (bytes, scaled)
    snd_wscale: int = 0  # the peer's shift (applied to the windows it sends)
    rcv_wscale: int = 0  # ours
    ts_ok: bool = False
    ts_recent: int = 0  # the peer's last TSval (RFC 7323 TS.Recent)
    ts_offset: int = 0  # our TSval is now in ms plus this (TCP_TIMESTAMP)


class Tcb:
    """One connection. Make it with ``connect``, ``accept`` (a SYN to a listener) or
    ``restore``; every call returns the segments to send.

    ``options`` offers MSS, window scale ``wscale`` and timestamps. ``rcvbuf`` bounds the
    receive buffer (and the window), ``sndbuf`` the send buffer. ``delack`` (seconds, 0 =
    ACK every segment at once) with ``ack_every``. ``rto`` is the initial RTO (the sim's
    0.2 s; RFC 6298 says 1 s), ``min_rto`` its floor (Linux's 0.2 s)."""

    def __init__(self, local: tuple[str, int], remote: tuple[str, int], iss: int, *,
                 mss: int = MSS, sndbuf: int = SNDBUF, rto: float = 0.2, max_retries: int = 6,
                 time_wait: float = 0.5, options: bool = False, wscale: int = WSCALE,
                 rcvbuf: int = RCVBUF, delack: float = 0.0, ack_every: int = 2,
                 min_rto: float = 0.2, max_rto: float = 60.0, ooo_max: int = 64,
                 iw: int = 10) -> None:
        self.local, self.remote = local, remote
        self._key = (remote[0], remote[1], local[0], local[1])  # what a segment must carry
        (self._src, self._sport), (self._dst, self._dport) = local, remote
        self.state = _T.CLOSED
        self.iss = iss % _M
        self.snd_una = self.snd_nxt = self.snd_max = self.iss
        self.rcv_nxt = self.rcv_adv = 0
        self.snd_wnd = WINDOW
        self.snd_wl1 = self.snd_wl2 = 0
        self.mss, self.sndbuf, self.rcvbuf, self.max_retries = mss, sndbuf, rcvbuf, max_retries
        self.time_wait, self.options, self.delack = time_wait, options, delack
        self.ack_every, self.ooo_max, self.iw = ack_every, ooo_max, iw
        self.our_mss, self.our_wscale = mss, min(max(wscale, 0), 14)
        self.snd_wscale = self.rcv_wscale = 0
        self.ws_ok = False
        self.ts_ok, self.ts_recent, self.ts_offset = False, 0, iss % _M
        self._last_ack_sent = 0
        self.rto0, self.min_rto, self.max_rto = rto, min_rto, max_rto
        self.rto, self.tries = rto, 0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._rtt_seq: int | None = None  # the segment being timed (no timestamps)
        self._retx_ts: int | None = None  # our TSval when we last retransmitted
        self._rtt_at = 0.0
        self._dupacks = 0
        self._recover: int | None = None  # NewReno: in fast recovery until this is acked
        self._alive = False  # an ACK came since the last timeout (persist: not a retry)
        self._oow_at = -OOW_INTERVAL  # when we last answered an unacceptable empty segment
        self.deadline: float | None = None  # retransmission, persist, TIME-WAIT
        self._ack_at: float | None = None  # a delayed ACK
        self._ack_pending = 0  # segments received and not yet acknowledged
        self._now = 0.0
        self._out = bytearray()  # from SND.UNA (the SYN/FIN take no room here)
        self._fin_queued = False
        self._fin_seq: int | None = None  # our FIN's sequence number, once sent
        self.received = bytearray()  # in-order data the application has not taken
        self._ooo: dict[int, tuple[bytes, bool]] = {}  # seq -> (payload, FIN) beyond RCV.NXT
        self.peer_fin = False
        self.reset = False  # closed by a RST (either side)
        self.retransmits = 0
        self.history: list[tuple[TcpState, TcpState, TcpEvent]] = []
        self._held: list[SegmentLike] = []  # REPAIR: what arrived, processed on leaving
        self._set_mss(mss)

    # ---- opening --------------------------------------------------------------------------

    @classmethod
    def connect(cls, local: tuple[str, int], remote: tuple[str, int], iss: int, now: float,
                **kw) -> tuple[Tcb, list[TcpSegment]]:
        tcb = cls(local, remote, iss, **kw)
        tcb._fire(_E.CONNECT)
        tcb.snd_nxt = tcb.snd_max = (tcb.iss + 1) % _M
        tcb._arm(now)
        return tcb, [tcb._syn(now, SYN)]

    @classmethod
    def accept(cls, syn: SegmentLike, iss: int, now: float, **kw) -> tuple[Tcb, list[TcpSegment]]:
        """A listener's answer to ``syn`` (the caller checked it is a SYN without ACK)."""
        tcb = cls((syn.dst, syn.dport), (syn.src, syn.sport), iss, **kw)
        tcb._fire(_E.PASSIVE)
        tcb.rcv_nxt = (syn.seq + 1) % _M
        tcb.snd_wnd = syn.window  # a SYN's window is never scaled
        tcb._negotiate(syn)
        tcb.snd_nxt = tcb.snd_max = (tcb.iss + 1) % _M
        tcb._arm(now)
        return tcb, [tcb._syn(now, SYN | ACK)]

    @classmethod
    def restore(cls, snap: TcbSnapshot, **kw) -> Tcb:
        """The TCB ``snap`` describes, in REPAIR: silent until ``leave_repair``."""
        tcb = cls(snap.local, snap.remote, snap.snd_una, **({"mss": snap.mss} | kw))
        tcb._fire(_E.RESTORE)
        tcb._out = bytearray(snap.send_queue)
        tcb.snd_nxt = tcb.snd_max = (snap.write_seq - snap.unsent) % _M
        tcb.rcv_nxt = tcb.rcv_adv = snap.rcv_nxt
        tcb.snd_wnd = snap.snd_wnd
        tcb.snd_wscale, tcb.rcv_wscale = snap.snd_wscale, snap.rcv_wscale
        tcb.ts_ok, tcb.ts_recent, tcb.ts_offset = snap.ts_ok, snap.ts_recent, snap.ts_offset
        tcb.received = bytearray(snap.recv_queue)
        tcb._set_mss(snap.mss)
        return tcb

    def snapshot(self) -> TcbSnapshot:
        if self.state is not _T.ESTABLISHED or self._fin_queued:
            raise TcpError(f"snapshot of a connection in {self.state.name}")
        sent = (self.snd_max - self.snd_una) % _M
        return TcbSnapshot(self.local, self.remote, self.snd_una,
                           (self.snd_una + len(self._out)) % _M, self.rcv_nxt, bytes(self._out),
                           len(self._out) - sent, bytes(self.received), self.mss, self.snd_wnd,
                           self.snd_wscale, self.rcv_wscale, self.ts_ok,
                           self.ts_recent if self.ts_ok else 0,
                           self.ts_offset if self.ts_ok else 0)

    def leave_repair(self, now: float) -> list[TcpSegment]:
        """Live again: an ACK (the window probe), then what arrived meanwhile, then the
        unacknowledged bytes again from SND.UNA."""
        self._fire(_E.LEAVE_REPAIR)
        self._now = now
        out = [self._seg(ACK)]
        held, self._held = self._held, []
        for seg in held:
            out += self.on_segment(seg, now)
        self.snd_nxt = self.snd_una
        return out + self._transmit(now)

    def drop(self) -> None:
        """Forget the connection without a segment (TCP_REPAIR's silent close)."""
        self._fire(_E.DROP)
        self.deadline = self._ack_at = None

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
        self._now = now
        return n, self._transmit(now) if n else []

    def read(self, limit: int | None = None) -> bytes:
        """Take up to ``limit`` bytes. A window this at least doubles (by a segment or half
        the buffer at least) is announced: its ACK is due at once (``next_deadline``)."""
        n = len(self.received) if limit is None else min(limit, len(self.received))
        data = bytes(self.received[:n])
        del self.received[:n]
        if n and self.state in _RECEIVING:
            shown, free = (self.rcv_adv - self.rcv_nxt) % _M, self._free()
            if free >= 2 * shown and free - shown >= self._sws:
                self._ack_at = self._now
        return data

    def close(self, now: float) -> list[TcpSegment]:
        """FIN once everything written is sent."""
        if self.state in (_T.CLOSED, _T.REPAIR) or self._fin_queued:
            return []
        if self.state in (_T.SYN_SENT, _T.SYN_RCVD):
            return self.abort()
        self._fire(_E.CLOSE)
        self._fin_queued = True
        self._now = now
        return self._transmit(now)

    def abort(self) -> list[TcpSegment]:
        if self.state not in _LIVE:
            return []
        self._fire(_E.ABORT)
        self.reset, self.deadline, self._ack_at = True, None, None
        return [self._seg(RST | ACK)]

    # ---- the network ----------------------------------------------------------------------

    def on_segment(self, seg: SegmentLike, now: float) -> list[TcpSegment]:
        if (seg.src, seg.sport, seg.dst, seg.dport) != self._key:
            return []
        state = self.state
        if state is _T.REPAIR:
            self._held.append(seg)
            return []
        if state is _T.CLOSED:
            return []
        self._now = now
        if state is _T.SYN_SENT:
            return self._syn_sent(seg, now)
        flags, payload = seg.flags, seg.payload
        ts = getattr(seg, "ts", None) if self.ts_ok else None
        if ts is not None and not flags & RST and seq_after(self.ts_recent, ts[0]):
            return [self._seg(ACK)]  # PAWS: an old duplicate
        if not self._acceptable(seg.seq, len(payload) + (flags & SYN) // SYN
                                + (flags & FIN)):
            if flags & RST:
                return []
            if state is _T.SYN_RCVD and flags & SYN:  # our SYN/ACK was lost
                return [self._syn(now, SYN | ACK)]
            if state is _T.TIME_WAIT and flags & FIN:  # our last ACK was lost
                self.deadline = now + self.time_wait  # RFC 9293 3.10.7.4: restart 2MSL
            if not payload and not flags & (SYN | FIN):
                if now - self._oow_at < OOW_INTERVAL:
                    return []  # no ACK war: an ACK answered by an ACK, answered by ...
                self._oow_at = now
            return [self._seg(ACK)]
        if ts is not None and not seq_after(seg.seq, self._last_ack_sent):
            self.ts_recent = ts[0]  # RFC 7323 4.3: the segment at Last.ACK.sent
        if flags & RST:
            if state is _T.TIME_WAIT:
                return []  # RFC 1337: no TIME-WAIT assassination
            if seg.seq != self.rcv_nxt:
                return [self._seg(ACK)]  # RFC 5961 3.2: a challenge ACK
            self._fire(_E.RESET)
            self.reset, self.deadline, self._ack_at = True, None, None
            return []
        if flags & SYN:
            return [self._seg(ACK)]  # RFC 5961 4.2: a SYN in a synchronized state
        if not flags & ACK:
            return []
        out: list[TcpSegment] = []
        if state is _T.SYN_RCVD:
            if seg.ack != self.snd_nxt:
                return []
            self._fire(_E.ACKED)
            self.snd_una, self.deadline = seg.ack, None
            self._window(seg)
            self._sample_rtt(seg, ts, now)
        elif seq_after(seg.ack, self.snd_max):
            return [self._seg(ACK)]  # it acknowledges what was never sent
        else:
            out += self._ack(seg, ts, now)
            if self.state is _T.CLOSED:
                return out
        if self._data(seg, now):
            out.append(self._seg(ACK))
        return out + self._transmit(now)

    def next_deadline(self) -> float | None:
        a, b = self.deadline, self._ack_at
        return a if b is None else b if a is None or b < a else a

    def on_timer(self, now: float) -> list[TcpSegment]:
        self._now = now
        out = []
        if self._ack_at is not None and now >= self._ack_at:
            out.append(self._seg(ACK))
        if self.deadline is None or now < self.deadline:
            return out
        if self.state is _T.TIME_WAIT:
            self._fire(_E.TIME_WAIT_DONE)
            self.deadline = None
            return out
        persist = not self.snd_wnd and self.state in _SENDING
        if persist and self._alive:
            self.tries = 0  # the peer answers our probes: its window is shut, it is not gone
        if self.tries >= self.max_retries:
            self._fire(_E.GIVE_UP)
            self.reset, self.deadline, self._ack_at = True, None, None
            return [self._seg(RST | ACK)]
        self.tries += 1
        self._alive = False
        self.rto = min(self.rto * 2, self.max_rto)
        self.deadline = now + self.rto
        if self.state is _T.SYN_SENT:
            return [self._syn(now, SYN)]
        if self.state is _T.SYN_RCVD:
            return [self._syn(now, SYN | ACK)]
        if not persist:  # RFC 5681 (4): one segment, slow start from there
            flight = (self.snd_max - self.snd_una) % _M
            self.ssthresh = max(flight // 2, 2 * self.smss)
            self.cwnd = self.smss
            self._recover, self._dupacks, self._rtt_seq = self.snd_max, 0, None
        self.retransmits += 1
        self._retx_ts = self._ts_val(now)
        self.snd_nxt = self.snd_una  # go back N
        return out + self._transmit(now, probe=True)

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

    def _set_mss(self, mss: int) -> None:
        self.mss = mss
        self.smss = mss - (TS_OVERHEAD if self.ts_ok else 0)  # payload per full segment
        self._sws = min(self.rcvbuf // 2, self.smss)  # the least window growth worth telling
        self.cwnd, self.ssthresh = self.iw * self.smss, 1 << 30  # RFC 6928's IW: 10

    def _negotiate(self, syn: SegmentLike) -> None:
        """What the peer's SYN offers and we offered too (RFC 7323 1.3, 2.2)."""
        if not self.options:
            return
        peer_mss = getattr(syn, "mss", None)
        ws, ts = getattr(syn, "wscale", None), getattr(syn, "ts", None)
        if ws is not None:
            self.snd_wscale, self.rcv_wscale, self.ws_ok = ws, self.our_wscale, True
        if ts is not None:
            self.ts_ok, self.ts_recent = True, ts[0]
        self._set_mss(min(self.mss, 536 if peer_mss is None else peer_mss))

    def _ts_val(self, now: float) -> int:
        return (int(now * 1000) + self.ts_offset) % _M

    def _syn(self, now: float, flags: int) -> TcpSegment:
        """Our SYN (every option we offer) or SYN/ACK (those the peer offered too)."""
        ack = 0 if flags == SYN else self.rcv_nxt
        window = min(self.rcvbuf, WINDOW)
        self._last_ack_sent, self.rcv_adv = ack, (ack + window) % _M
        mss = ws = ts = None
        if self.options:
            offer = flags == SYN
            if offer or self.ts_ok:
                ts = (self._ts_val(now), self.ts_recent if self.ts_ok else 0)
            mss, ws = self.our_mss, self.our_wscale if offer or self.ws_ok else None
        return TcpSegment(self.local[0], self.remote[0], self.local[1], self.remote[1],
                          self.iss, ack, flags, window, b"", mss, ws, False, ts)

    def _free(self) -> int:
        return max(0, self.rcvbuf - len(self.received))

    def _seg(self, flags: int, seq: int | None = None, payload: bytes = b"") -> TcpSegment:
        """A segment with our window and timestamps; it acknowledges RCV.NXT (a RST too).
        Data and FIN go at SND.NXT; the rest carries the highest sequence number sent that
        the peer's window admits (Linux's tcp_acceptable_seq): after a timeout SND.NXT is
        back at SND.UNA, and an ACK from there would be an old segment to the peer, whose
        acknowledgement it would drop unread."""
        if seq is None:
            seq = self.snd_nxt
            if not payload and not flags & FIN:
                edge = (self.snd_una + self.snd_wnd) % _M
                seq = edge if seq_after(self.snd_max, edge) else self.snd_max
        nxt, adv, shift = self.rcv_nxt, self.rcv_adv, self.rcv_wscale
        edge = (nxt + max(0, self.rcvbuf - len(self.received))) % _M
        grow = (edge - adv) % _M
        if grow >= _HALF or grow < self._sws:
            edge = adv if (adv - nxt) % _M < _HALF else nxt  # SWS avoidance; never shrink
        field = min(((edge - nxt) % _M) >> shift, WINDOW)
        if seq_after((nxt + (field << shift)) % _M, adv):
            self.rcv_adv = (nxt + (field << shift)) % _M
        self._last_ack_sent, self._ack_at, self._ack_pending = nxt, None, 0
        ts = ((int(self._now * 1000) + self.ts_offset) % _M, self.ts_recent) \
            if self.ts_ok else None
        return TcpSegment(self._src, self._dst, self._sport, self._dport, seq, nxt, flags,
                          field, payload, None, None, False, ts)

    def _acceptable(self, seq: int, seglen: int) -> bool:
        """RFC 9293 3.10.7.4's four cases; an empty segment may also sit at the window's
        right edge (as Linux takes it), where a peer whose view of our window is stale puts
        its ACKs."""
        wnd = (self.rcv_adv - self.rcv_nxt) % _M
        if wnd >= _HALF:
            wnd = 0
        first = (seq - self.rcv_nxt) % _M
        if seglen == 0:
            return first <= wnd
        if wnd == 0:
            return False
        return first < wnd or (first + seglen - 1) % _M < wnd

    def _syn_sent(self, seg: SegmentLike, now: float) -> list[TcpSegment]:
        flags = seg.flags
        if flags & ACK and seg.ack != self.snd_nxt:
            return []
        if flags & RST:
            if flags & ACK:
                self._fire(_E.RESET)
                self.reset, self.deadline = True, None
            return []
        if flags & (SYN | ACK) != SYN | ACK:
            return []  # a SYN alone (simultaneous open) is not supported
        self._fire(_E.SYNACK)
        self.rcv_nxt = self.rcv_adv = (seg.seq + 1) % _M
        self._negotiate(seg)
        self.snd_wnd = seg.window
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        ts = getattr(seg, "ts", None) if self.ts_ok else None
        self._sample_rtt(seg, ts, now)
        self.snd_una, self.deadline = self.snd_nxt, None
        self.rto, self.tries = self._rto_base(), 0
        return [self._seg(ACK), *self._transmit(now)]

    def _window(self, seg: SegmentLike) -> None:
        self.snd_wnd = seg.window << self.snd_wscale
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack

    def _rto_base(self) -> float:
        if self.srtt is None:
            return self.rto0
        return min(max(self.min_rto, self.srtt + max(0.001, 4 * self.rttvar)), self.max_rto)

    def _sample_rtt(self, seg: SegmentLike, ts, now: float) -> None:
        """RFC 6298 2.2-2.3 from TSecr (RTTM) or the one timed segment (Karn's rule)."""
        if ts is not None and ts[1]:
            if self._retx_ts is not None and seq_after(self._retx_ts, ts[1]):
                return  # it echoes a segment from before the last retransmission (Karn)
            r = (self._ts_val(now) - ts[1]) % _M / 1000
            if r > self.max_rto:
                return
        elif ts is None and self._rtt_seq is not None and not seq_after(self._rtt_seq, seg.ack):
            r = now - self._rtt_at
            self._rtt_seq = None
        else:
            return
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r

    def _ack(self, seg: SegmentLike, ts, now: float) -> list[TcpSegment]:
        """SND.UNA, the window, RTT, congestion control; what to retransmit at once."""
        una, ack = self.snd_una, seg.ack
        if not seq_after(ack, una):
            if ack == una:
                self._alive = True
                grew = (seg.window << self.snd_wscale) != self.snd_wnd
                if seq_after(seg.seq, self.snd_wl1) or (
                        seg.seq == self.snd_wl1 and not seq_after(self.snd_wl2, ack)):
                    self._window(seg)
                if (not grew and not seg.payload and not seg.flags & FIN
                        and self.snd_max != una):
                    return self._dupack()
            return []
        n = (ack - una) % _M
        fin_acked = self._fin_seq is not None and ack == (self._fin_seq + 1) % _M
        del self._out[:n - (1 if fin_acked else 0)]
        self.snd_una = ack
        self._window(seg)
        self._alive = True
        if seq_after(ack, self.snd_nxt):
            self.snd_nxt = ack
        self._sample_rtt(seg, ts, now)
        self.rto, self.tries = self._rto_base(), 0
        self.deadline = None if ack == self.snd_max else now + self.rto
        out = []
        smss = self.smss
        if self._recover is not None and self._dupacks >= 3:  # in fast recovery
            if seq_after(self._recover, ack):  # RFC 6582 3.2 (5): a partial ACK
                out.append(self._resend())
                self.cwnd = max(self.cwnd - n + (smss if n >= smss else 0), smss)
            else:  # (6): a full one
                flight = (self.snd_max - ack) % _M
                self.cwnd = min(self.ssthresh, max(flight, smss) + smss)
                self._dupacks = 0
        else:
            self._dupacks = 0
            if self.cwnd < self.ssthresh:
                self.cwnd += min(n, smss)  # slow start (RFC 5681 (2), L = 1 SMSS)
            else:
                self.cwnd += max(1, smss * smss // self.cwnd)  # congestion avoidance (3)
        if fin_acked:
            self._fire(_E.FIN_ACKED)
            if self.state is _T.TIME_WAIT:
                self.deadline = now + self.time_wait
            elif self.state is _T.CLOSED:
                self.deadline = self._ack_at = None
        return out

    def _dupack(self) -> list[TcpSegment]:
        """RFC 5681 3.2 / RFC 6582: the third duplicate starts fast retransmit, each further
        one inflates the window by a segment."""
        self._dupacks += 1
        smss = self.smss
        if self._dupacks == 3:
            if self._recover is not None and seq_after(self._recover, self.snd_una):
                self._dupacks = 0  # RFC 6582 3.2 (2): still the old window's losses
                return []
            flight = (self.snd_max - self.snd_una) % _M
            self.ssthresh = max(flight // 2, 2 * smss)
            self.cwnd = self.ssthresh + 3 * smss
            self._recover = self.snd_max
            return [self._resend()]
        if self._dupacks > 3:
            self.cwnd += smss
        return []

    def _resend(self) -> TcpSegment:
        """The first unacknowledged segment again, SND.NXT unmoved."""
        self._rtt_seq, self._retx_ts = None, self._ts_val(self._now)
        self.retransmits += 1
        n = min(self.smss, len(self._out), (self.snd_max - self.snd_una) % _M)  # never unsent
        if not n:  # only our FIN is outstanding
            return self._seg(FIN | ACK, seq=self.snd_una)
        return self._seg(ACK, seq=self.snd_una, payload=bytes(self._out[:n]))

    def _data(self, seg: SegmentLike, now: float) -> bool:
        """Take payload and FIN (in order, or into the out-of-order queue); whether an ACK
        is due now (else one may be due at ``_ack_at``)."""
        if self.state not in _RECEIVING:
            return bool(seg.payload or seg.flags & FIN) and self.state is not _T.CLOSED
        payload, fin, seq = seg.payload, bool(seg.flags & FIN), seg.seq
        if not payload and not fin:
            return False
        off = (self.rcv_nxt - seq) % _M
        if off < _HALF:  # starts at or before RCV.NXT: trim what we have
            if off > len(payload) or (off == len(payload) and not fin):
                return True  # wholly old
            payload, seq = payload[off:], self.rcv_nxt
            rel = 0
        else:
            rel = (seq - self.rcv_nxt) % _M
        wnd = (self.rcv_adv - self.rcv_nxt) % _M
        if rel + len(payload) > wnd:  # what lies beyond the window is not kept
            payload, fin = payload[:max(0, wnd - rel)], False
        if rel:
            if len(self._ooo) < self.ooo_max and (payload or fin):
                old = self._ooo.get(seq)
                if old is None or len(old[0]) < len(payload):
                    self._ooo[seq] = (payload, fin)
            return True  # a duplicate ACK tells the sender (RFC 5681 4.2)
        gap_filled = bool(self._ooo)
        self._take(payload, fin, now)
        if self._ooo:
            self._merge(now)
        if fin or gap_filled or not self.delack:
            return True
        self._ack_pending += 1
        if self._ack_pending >= self.ack_every:
            return True
        if self._ack_at is None:
            self._ack_at = now + self.delack
        return False

    def _take(self, payload: bytes, fin: bool, now: float) -> None:
        self.received += payload
        self.rcv_nxt = (self.rcv_nxt + len(payload)) % _M
        if fin and not self.peer_fin:
            self.rcv_nxt = (self.rcv_nxt + 1) % _M
            self.peer_fin = True
            self._ooo.clear()
            self._fire(_E.PEER_FIN)
            if self.state is _T.TIME_WAIT:
                self.deadline = now + self.time_wait

    def _merge(self, now: float) -> None:
        """Move what the out-of-order queue holds at RCV.NXT into the stream."""
        moved = True
        while moved and self._ooo and not self.peer_fin:
            moved = False
            for seq, (payload, fin) in list(self._ooo.items()):
                rel = (seq - self.rcv_nxt) % _M
                if rel and rel < _HALF:
                    continue
                del self._ooo[seq]
                back = (self.rcv_nxt - seq) % _M
                if back < len(payload) or (back == len(payload) and fin):
                    self._take(payload[back:], fin, now)
                    moved = True
                    break

    def _transmit(self, now: float, probe: bool = False) -> list[TcpSegment]:
        """Data from SND.NXT as the peer's window and cwnd allow, then our FIN once queued;
        ``probe``: one segment even into a shut window."""
        if self.state not in _SENDING:
            return []
        if len(self._out) <= (self.snd_nxt - self.snd_una) % _M and (
                not self._fin_queued or self._fin_seq not in (None, self.snd_nxt)):
            return []  # nothing new to send (the common case for a receiver)
        out = []
        smss, mv = self.smss, memoryview(self._out)
        limited = self._dupacks * smss if self._dupacks < 3 else 0  # RFC 3042
        while True:
            off = (self.snd_nxt - self.snd_una) % _M
            left = len(self._out) - off
            if left <= 0:
                break
            room = min(self.snd_wnd, self.cwnd + limited) - off
            if room <= 0 and not (probe and not out):
                break
            n = max(1, min(smss, room, left))
            if n < smss and n < left and off and not probe:
                break  # sender SWS avoidance: wait for a full segment's room
            if self._rtt_seq is None and self.snd_nxt == self.snd_max and not self.ts_ok:
                self._rtt_seq, self._rtt_at = (self.snd_nxt + n) % _M, now
            out.append(self._seg(ACK | (PSH if n == left else 0),
                                 payload=bytes(mv[off:off + n])))
            self._sent(n)
        mv.release()
        fin_due = self._fin_queued and (self.snd_nxt - self.snd_una) % _M == len(self._out)
        if fin_due and (self._fin_seq is None or self.snd_nxt == self._fin_seq):
            self._fin_seq = self.snd_nxt
            out.append(self._seg(FIN | ACK))
            self._sent(1)
        if self.deadline is None and (out or (self._out and not self.snd_wnd)):
            self.deadline = now + self.rto  # retransmission, or the persist timer
        return out

    def _sent(self, n: int) -> None:
        self.snd_nxt = (self.snd_nxt + n) % _M
        if seq_after(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt
