# SPDX-License-Identifier: GPL-2.0-or-later
"""Move a live kernel TCP connection to another socket (another namespace) with TCP_REPAIR.

The connection is frozen with ``checkpoint`` (the socket enters repair mode and every piece of
state the peer can observe is read: sequence numbers, both queues, negotiated options, the
window and the timestamp clock), dropped with ``close_silently`` (no FIN, no RST), rebuilt
with ``restore`` (a new socket in repair mode: nothing is sent while it is built), and woken
with ``leave_repair``. The peer never learns that its connection changed hands.

The caller must have stopped the connection's incoming frames *before* ``checkpoint``: a
socket in repair mode still processes what arrives (ACKs free the send queue, data lands in
the receive queue), so a checkpoint taken while frames flow can be stale by the time it is
read, and the closed socket's host answers later frames with RST. The peer's frames may
reach the restored socket while it is still in repair mode (after the switch flips).

IPv4 only (the lab is IPv4). Needs CAP_NET_ADMIN in the socket's network namespace.
Not transferred: congestion window, RTT estimate and SACK scoreboard (the kernel has no
repair interface for them; the restored socket starts with IW10 and a 1 s RTO), and socket
options (TCP_NODELAY, SO_MAX_PACING_RATE, TCP_CONGESTION, keepalive: set them again).
Timing limits, both from the kernel:
- a restored socket still runs its timers in repair mode: held there longer than the initial
  RTO (1 s), it sends a loss probe for its in-flight bytes;
- the peer answers the window probe of ``leave_repair`` (an out-of-window segment) at most
  once per net.ipv4.tcp_invalid_ratelimit (0.5 s) per connection: a second handoff sooner
  gets no answer and recovers by RTO (1 s) when bytes were in flight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

# ---- kernel ABI (include/uapi/linux/tcp.h, linux/sockios.h), with the kernel's names -----

TCP_REPAIR = 19  # setsockopt: 1 on, 0 off (window probe), -1 off without window probe
TCP_REPAIR_QUEUE = 20  # which queue TCP_QUEUE_SEQ and send()/recv() act on
TCP_QUEUE_SEQ = 21  # that queue's sequence number (write_seq or rcv_nxt)
TCP_REPAIR_OPTIONS = 22  # array of struct tcp_repair_opt {u32 opt_code, opt_val}
TCP_TIMESTAMP = 24  # the socket's TSval clock (ms); settable only in repair mode
TCP_REPAIR_WINDOW = 29  # struct tcp_repair_window, below

TCP_REPAIR_ON, TCP_REPAIR_OFF, TCP_REPAIR_OFF_NO_WP = 1, 0, -1
TCP_NO_QUEUE, TCP_RECV_QUEUE, TCP_SEND_QUEUE = 0, 1, 2

TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8

TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4  # struct tcp_info.tcpi_options
TCP_ESTABLISHED = 1

SIOCINQ = 0x541B  # bytes in the receive queue not yet read
SIOCOUTQ = 0x5411  # bytes in the send queue not yet acked (sent or not)
SIOCOUTQNSD = 0x894B  # bytes in the send queue not yet sent

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

_REPAIR_WINDOW = struct.Struct("=5I")  # snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup
_REPAIR_OPT = struct.Struct("=II")
_TCP_INFO_HEAD = struct.Struct("=7B")  # state, ca_state, retransmits, probes, backoff,
#                                        options, snd_wscale:4 | rcv_wscale:4
_TCPI_SEGS_OUT = 136  # offset of tcpi_segs_out in struct tcp_info
_INT, _U32 = struct.Struct("=i"), struct.Struct("=I")

MAX_WSCALE = 14  # TCP_MAX_WSCALE
MAX_TCP_WINDOW = 32767  # the largest TCP_MAXSEG the kernel accepts (loopback's MSS is 65483)
TS_LEAD = 10  # TSval ticks (ms) the restored clock starts ahead of the checkpoint's
CHUNK = 1 << 16  # repair-mode send()s allocate one skb per call: keep them small
BUF_SLACK = 1 << 16  # headroom beyond a queue's bytes when a buffer must be forced


class RepairError(OSError):
    """A TCP_REPAIR step failed; the message names the step (``errno`` is the kernel's)."""

    def __init__(self, step: str, err: int = errno.EPROTO, detail: str = "") -> None:
        super().__init__(err, f"{step}: {detail or os.strerror(err)}")
        self.step = step


# ---- the checkpoint -----------------------------------------------------------------------

@dataclass(frozen=True)
class TcpWindow:
    """``struct tcp_repair_window``: what the peer was last told and last told us."""

    snd_wl1: int  # seq of the segment that last updated snd_wnd
    snd_wnd: int  # peer's receive window (bytes, unscaled)
    max_window: int  # largest window the peer ever offered
    rcv_wnd: int  # the window we last advertised
    rcv_wup: int  # rcv_nxt when we advertised it


@dataclass(frozen=True)
class TcpCheckpoint:
    """Everything needed to rebuild one established IPv4 TCP connection elsewhere."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    snd_nxt: int  # write_seq: seq after the last byte the application wrote
    snd_una: int  # first unacked seq, = snd_nxt - len(send_queue)
    rcv_nxt: int  # seq after the last byte received
    send_queue: bytes  # written, not yet acked: [snd_una, snd_nxt)
    recv_queue: bytes  # received, not yet read: [rcv_nxt - len, rcv_nxt)
    mss: int  # mss_clamp: the peer's MSS
    snd_wscale: int  # 0 when window scaling was not negotiated (as it then is)
    rcv_wscale: int
    sack_ok: bool
    ts_ok: bool
    timestamp: int  # TCP_TIMESTAMP: our TSval clock at the checkpoint
    window: TcpWindow
    unsent: int = 0  # trailing bytes of send_queue never transmitted (SIOCOUTQNSD)

    def __post_init__(self) -> None:
        for ip in (self.local_ip, self.remote_ip):
            ipaddress.IPv4Address(ip)  # ValueError if not a dotted IPv4 address
        u16 = (self.local_port, self.remote_port, self.mss)
        u32 = (self.snd_nxt, self.snd_una, self.rcv_nxt, self.timestamp,
               *vars(self.window).values())
        if not all(0 <= v <= 0xFFFF for v in u16) or not all(0 <= v <= 0xFFFFFFFF for v in u32):
            raise ValueError("a port, MSS or 32-bit field is out of range")
        if not (0 <= self.snd_wscale <= MAX_WSCALE and 0 <= self.rcv_wscale <= MAX_WSCALE):
            raise ValueError(f"window scale above {MAX_WSCALE}")
        if (self.snd_nxt - len(self.send_queue)) & 0xFFFFFFFF != self.snd_una:
            raise ValueError("snd_una != snd_nxt - len(send_queue)")
        if not 0 <= self.unsent <= len(self.send_queue):
            raise ValueError("unsent is longer than the send queue")

    # Wire layout, version 1, big-endian: a 62-byte head, then the two queues.
    #   0 B version (1)         1 4s local_ip     5 H local_port    7 4s remote_ip
    #  11 H remote_port        13 I snd_nxt      17 I rcv_nxt      21 H mss
    #  23 B snd_wscale         24 B rcv_wscale   25 B flags (1 sack_ok, 2 ts_ok)
    #  26 I timestamp          30 5I window (snd_wl1 snd_wnd max_window rcv_wnd rcv_wup)
    #  50 I len(send_queue)    54 I unsent       58 I len(recv_queue)  62 send_queue recv_queue
    # snd_una is not sent: it follows from snd_nxt and the send queue.
    VERSION = 1
    _HEAD = struct.Struct(">B4sH4sHIIHBBBI5IIII")

    def pack(self) -> bytes:
        w = self.window
        flags = (1 if self.sack_ok else 0) | (2 if self.ts_ok else 0)
        head = self._HEAD.pack(
            self.VERSION, socket.inet_aton(self.local_ip), self.local_port,
            socket.inet_aton(self.remote_ip), self.remote_port, self.snd_nxt, self.rcv_nxt,
            self.mss, self.snd_wscale, self.rcv_wscale, flags, self.timestamp,
            w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup,
            len(self.send_queue), self.unsent, len(self.recv_queue))
        return head + self.send_queue + self.recv_queue

    @classmethod
    def unpack(cls, data: bytes) -> TcpCheckpoint | None:
        """The checkpoint ``pack`` made, or None for anything else (never raises)."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < cls._HEAD.size:
            return None
        (version, lip, lport, rip, rport, snd_nxt, rcv_nxt, mss, snd_ws, rcv_ws, flags, ts,
         wl1, wnd, maxw, rwnd, wup, sq_len, unsent, rq_len) = cls._HEAD.unpack_from(data)
        n = cls._HEAD.size
        if version != cls.VERSION or flags & ~3 or len(data) != n + sq_len + rq_len:
            return None
        sq = bytes(data[n:n + sq_len])
        try:
            return cls(socket.inet_ntoa(lip), lport, socket.inet_ntoa(rip), rport, snd_nxt,
                       (snd_nxt - sq_len) & 0xFFFFFFFF, rcv_nxt, sq,
                       bytes(data[n + sq_len:]), mss, snd_ws, rcv_ws, bool(flags & 1),
                       bool(flags & 2), ts, TcpWindow(wl1, wnd, maxw, rwnd, wup), unsent)
        except ValueError:
            return None


# ---- socket steps -------------------------------------------------------------------------

def _step(name: str, fn, *args):
    try:
        return fn(*args)
    except RepairError:
        raise
    except OSError as exc:
        raise RepairError(name, exc.errno or errno.EPROTO, exc.strerror or str(exc)) from exc


def _setopt(sock: socket.socket, opt: int, value: int | bytes, name: str) -> None:
    if isinstance(value, int):  # sequence numbers and clocks are u32: past a C int
        value = (_U32 if value >= 0 else _INT).pack(value)
    _step(name, sock.setsockopt, socket.SOL_TCP, opt, value)


def _ioctl_int(sock: socket.socket, req: int, name: str) -> int:
    buf = _step(name, fcntl.ioctl, sock.fileno(), req, bytes(_INT.size))
    return _INT.unpack(buf)[0]


def _peek_queue(sock: socket.socket, queue: int, length: int, name: str) -> tuple[int, bytes]:
    """(TCP_QUEUE_SEQ, the queue's bytes) of one queue; one byte more is asked for, so a queue
    that grew since ``length`` was read is caught."""
    _setopt(sock, TCP_REPAIR_QUEUE, queue, f"TCP_REPAIR_QUEUE={name}")
    seq = _step(f"TCP_QUEUE_SEQ({name})", sock.getsockopt, socket.SOL_TCP, TCP_QUEUE_SEQ)
    data = b""
    if length:
        data = _step(f"recv(MSG_PEEK, {name} queue)", sock.recv, length + 1,
                     socket.MSG_PEEK | socket.MSG_DONTWAIT)
    if len(data) != length:
        raise RepairError(f"recv(MSG_PEEK, {name} queue)", errno.EAGAIN,
                          f"{len(data)} bytes, expected {length}: frames still arrive?")
    return seq & 0xFFFFFFFF, data


def checkpoint(sock: socket.socket) -> TcpCheckpoint:
    """Put ``sock`` (an established IPv4 TCP socket) into repair mode and read its state.

    The socket stays in repair mode, also when a step fails (RepairError): close it with
    ``close_silently``, or resume it with ``leave_repair``. Repair mode does not stop ACK
    processing, so the caller must hold the peer's frames first (see the module docstring).
    """
    _setopt(sock, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR=1")
    info = _step("getsockopt(TCP_INFO)", sock.getsockopt, socket.SOL_TCP, socket.TCP_INFO,
                 _TCP_INFO_HEAD.size)
    state, _, _, _, _, options, wscales = _TCP_INFO_HEAD.unpack(info)
    if state != TCP_ESTABLISHED:
        raise RepairError("checkpoint", errno.ENOTCONN, f"TCP state {state}, not ESTABLISHED")
    local = _step("getsockname", sock.getsockname)
    remote = _step("getpeername", sock.getpeername)
    outq = _ioctl_int(sock, SIOCOUTQ, "ioctl(SIOCOUTQ)")
    unsent = _ioctl_int(sock, SIOCOUTQNSD, "ioctl(SIOCOUTQNSD)")
    inq = _ioctl_int(sock, SIOCINQ, "ioctl(SIOCINQ)")
    rcv_nxt, recv_queue = _peek_queue(sock, TCP_RECV_QUEUE, inq, "recv")
    snd_nxt, send_queue = _peek_queue(sock, TCP_SEND_QUEUE, outq, "send")
    _setopt(sock, TCP_REPAIR_QUEUE, TCP_NO_QUEUE, "TCP_REPAIR_QUEUE=none")
    mss = _step("getsockopt(TCP_MAXSEG)", sock.getsockopt, socket.SOL_TCP, socket.TCP_MAXSEG)
    ts = _step("getsockopt(TCP_TIMESTAMP)", sock.getsockopt, socket.SOL_TCP, TCP_TIMESTAMP)
    scaled = bool(options & TCPI_OPT_WSCALE)
    return TcpCheckpoint(
        local_ip=local[0], local_port=local[1], remote_ip=remote[0], remote_port=remote[1],
        snd_nxt=snd_nxt, snd_una=(snd_nxt - outq) & 0xFFFFFFFF, rcv_nxt=rcv_nxt,
        send_queue=send_queue, recv_queue=recv_queue, mss=mss,
        snd_wscale=wscales & 0xF if scaled else 0, rcv_wscale=wscales >> 4 if scaled else 0,
        sack_ok=bool(options & TCPI_OPT_SACK), ts_ok=bool(options & TCPI_OPT_TIMESTAMPS),
        timestamp=ts & 0xFFFFFFFF, window=_get_window(sock, "getsockopt(TCP_REPAIR_WINDOW)"),
        unsent=min(unsent, outq))


def close_silently(sock: socket.socket) -> None:
    """Close ``sock`` in repair mode: the kernel forgets the connection and sends nothing
    (no FIN, no RST); frames that still reach this host afterwards are answered with RST."""
    _setopt(sock, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR=1 (close)")
    sock.close()


def _fill(sock: socket.socket, queue: int, data: bytes, name: str) -> None:
    """Write ``data`` into one queue in repair mode (nothing goes on the wire)."""
    _setopt(sock, TCP_REPAIR_QUEUE, queue, f"TCP_REPAIR_QUEUE={name}")
    view, off = memoryview(data), 0
    while off < len(data):
        n = _step(f"send({name} queue)", sock.send, view[off:off + CHUNK], socket.MSG_DONTWAIT)
        if n <= 0:
            raise RepairError(f"send({name} queue)", errno.ENOMEM, "the kernel took no bytes")
        off += n


def _ensure_buffer(sock: socket.socket, plain: int, force: int, need: int,
                   name: str) -> None:
    """Raise the socket buffer (SO_*BUFFORCE, ignores rmem/wmem_max) if ``need`` bytes of
    queue would not fit; the kernel counts skb overhead too, hence the doubling."""
    if sock.getsockopt(socket.SOL_SOCKET, plain) < 2 * need + BUF_SLACK:
        _step(name, sock.setsockopt, socket.SOL_SOCKET, force, need + BUF_SLACK)


class RepairSocket(socket.socket):
    """A socket ``restore`` built. Repair mode can only queue bytes as already transmitted,
    so the send-queue tail the old socket had never sent waits here for ``leave_repair``
    (queued as sent, it would reach the peer only by retransmission, after a loss probe)."""

    __slots__ = ("unsent",)


def restore(cp: TcpCheckpoint, *, sndbuf: int | None = None) -> socket.socket:
    """A new socket carrying ``cp``'s connection, still in repair mode (it has sent nothing).

    Call it in the namespace that owns ``cp.local_ip``; the peer's frames must reach this
    socket only after it returns (else this host answers them with RST). ``sndbuf`` is an
    SO_SNDBUF value to force (e.g. the old socket's); the buffers are forced larger anyway
    when a queue would not fit.
    """
    sock = RepairSocket(socket.AF_INET, socket.SOCK_STREAM)
    sent = len(cp.send_queue) - cp.unsent
    sock.unsent = cp.send_queue[sent:]
    try:
        _restore_into(sock, cp, cp.send_queue[:sent], sndbuf)
    except BaseException:
        with contextlib.suppress(OSError):  # it may have failed before repair mode
            sock.setsockopt(socket.SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)
        sock.close()
        raise
    return sock


def _restore_into(sock: socket.socket, cp: TcpCheckpoint, sent: bytes,
                  sndbuf: int | None) -> None:
    # SO_REUSEADDR first: it would overwrite the force-reuse that repair mode sets, which
    # lets the socket bind next to the listener and the old connection's port
    _step("SO_REUSEADDR", sock.setsockopt, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _setopt(sock, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR=1")
    _step(f"bind({cp.local_ip}:{cp.local_port})", sock.bind, (cp.local_ip, cp.local_port))
    # before connect(): connect() computes mss_cache from it (else 536-based segments);
    # TCP_MAXSEG takes at most MAX_TCP_WINDOW, TCP_REPAIR_OPTIONS below sets the real clamp
    _setopt(sock, socket.TCP_MAXSEG, min(cp.mss, MAX_TCP_WINDOW), "TCP_MAXSEG")
    if sndbuf is not None:
        _step("SO_SNDBUFFORCE", sock.setsockopt, socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
    _ensure_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, len(cp.send_queue),
                   "SO_SNDBUFFORCE")
    # before connect(): connect() derives the window clamp from the receive buffer
    _ensure_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, len(cp.recv_queue),
                   "SO_RCVBUFFORCE")
    _setopt(sock, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE=recv")
    _setopt(sock, TCP_QUEUE_SEQ, (cp.rcv_nxt - len(cp.recv_queue)) & 0xFFFFFFFF,
            "TCP_QUEUE_SEQ(recv)")
    _setopt(sock, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE=send")
    _setopt(sock, TCP_QUEUE_SEQ, cp.snd_una, "TCP_QUEUE_SEQ(send)")  # = snd_nxt - len(queue)
    # in repair mode connect() sends no SYN: the socket is ESTABLISHED at once
    _step(f"connect({cp.remote_ip}:{cp.remote_port})", sock.connect,
          (cp.remote_ip, cp.remote_port))
    opts = [(TCPOPT_MSS, cp.mss)]
    if cp.snd_wscale or cp.rcv_wscale:
        opts.append((TCPOPT_WINDOW, cp.snd_wscale | cp.rcv_wscale << 16))
    if cp.sack_ok:
        opts.append((TCPOPT_SACK_PERM, 0))
    if cp.ts_ok:
        opts.append((TCPOPT_TIMESTAMP, 0))
    _setopt(sock, TCP_REPAIR_OPTIONS, b"".join(_REPAIR_OPT.pack(*o) for o in opts),
            "TCP_REPAIR_OPTIONS")
    # the peer drops (PAWS) segments whose TSval went back -- a pure ACK such as the window
    # probe silently: continue the old clock, a little ahead, since the old socket stamped
    # its last segments with their departure time, which pacing puts in the future
    _setopt(sock, TCP_TIMESTAMP, (cp.timestamp + TS_LEAD) & 0xFFFFFFFF, "TCP_TIMESTAMP")
    _fill(sock, TCP_RECV_QUEUE, cp.recv_queue, "recv")
    _fill(sock, TCP_SEND_QUEUE, sent, "send")
    _setopt(sock, TCP_REPAIR_QUEUE, TCP_NO_QUEUE, "TCP_REPAIR_QUEUE=none")
    _set_window(sock, cp.window)  # after the queues: the kernel checks it against rcv_nxt


def leave_repair(sock: socket.socket) -> None:
    """TCP_REPAIR=0: the connection runs again. The kernel at once sends a window probe
    (an ACK with seq = snd_una - 1), which makes the peer answer with its current ACK and
    window: that resynchronises the ACKs dropped during the hold. A restored socket then
    queues the bytes the old one had never sent, as fresh data.

    The probe is out of window on purpose, so the peer ignores the receive window it
    carries, yet the kernel now takes that window as advertised and sends no update until
    it doubles: a peer held at zero window would sit until its persist timer fires
    (0.2 s and more). So unless something else went out meanwhile (which the peer did
    read), the window the peer knows is put back, in repair mode again, without a probe.
    """
    known = _get_window(sock, "TCP_REPAIR_WINDOW (leave)")
    sent = _segs_out(sock)
    _setopt(sock, TCP_REPAIR, TCP_REPAIR_OFF, "TCP_REPAIR=0")
    _setopt(sock, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR=1 (window)")
    try:
        if _segs_out(sock) - sent == 1:  # the probe alone
            now = _get_window(sock, "TCP_REPAIR_WINDOW (probed)")
            _set_window(sock, TcpWindow(now.snd_wl1, now.snd_wnd, now.max_window,
                                        known.rcv_wnd, known.rcv_wup))
    finally:
        _setopt(sock, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP, "TCP_REPAIR=-1")
    unsent = getattr(sock, "unsent", b"")
    view, off = memoryview(unsent), 0
    while off < len(unsent):  # restore() sized the send buffer for the whole queue
        off += _step("send(unsent tail)", sock.send, view[off:], socket.MSG_DONTWAIT)
    if isinstance(sock, RepairSocket):
        sock.unsent = b""


def _get_window(sock: socket.socket, name: str) -> TcpWindow:
    raw = _step(name, sock.getsockopt, socket.SOL_TCP, TCP_REPAIR_WINDOW, _REPAIR_WINDOW.size)
    return TcpWindow(*_REPAIR_WINDOW.unpack(raw))


def _set_window(sock: socket.socket, w: TcpWindow) -> None:
    _setopt(sock, TCP_REPAIR_WINDOW, _REPAIR_WINDOW.pack(
        w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup), "TCP_REPAIR_WINDOW")


def _segs_out(sock: socket.socket) -> int:
    info = _step("getsockopt(TCP_INFO)", sock.getsockopt, socket.SOL_TCP, socket.TCP_INFO,
                 _TCPI_SEGS_OUT + 4)
    return _U32.unpack_from(info, _TCPI_SEGS_OUT)[0]
