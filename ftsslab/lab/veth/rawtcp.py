"""ftsslab's own TCP (``ftsslab.lab.tcp.Tcb``) on a veth: Ethernet + IPv4 over AF_PACKET.

A NAS device that takes over one direction of a client's connection cannot do it with a
Linux socket (seed 002 D2.6); it runs this instead, while the client stays an unmodified
kernel TCP. ``RawTcp`` is one IPv4 host, ``ip`` at ``mac`` on one interface: it answers
ARP for its address, resolves its peers by ARP (or takes static ``neighbours``), and gives
a small socket-like API (``listen``/``accept``, ``connect``, ``send``, ``recv``,
``shutdown``/``close``) usable from any thread of a node process.

The namespace's own kernel never answers the core's flows: ``ip`` must not be a local
address of that namespace and ``mac`` must not be the interface's, so the kernel
classifies the core's frames PACKET_OTHERHOST and drops them in ``ip_rcv`` -- no RST, no
ICMP (nothing needs an nftables rule). The lab's host links have checksum offload off, so
every checksum is real: a segment whose TCP checksum is wrong (``corrupt:``) is dropped.

One thread runs the TCBs: it reads the interface through a PACKET_MMAP ring (one wake-up per
burst, ``ring.PacketRing``) behind a BPF filter (ARP, and IPv4 to ``ip``), feeds each TCB
and fires its timers, all under one lock the application's calls share; an eventfd wakes it
when the application did something. What a burst's segments make the TCBs send goes out once
the burst is read, with the superseded ACKs left out (``coalesce``), through the kernel's
segmentation offload where it has it (``gso.py``: a write's segments in one system call, their
checksums summed by the kernel before the interface and its taps).

Segments without a connection are answered with a RST (RFC 9293 3.10.7.1), but a closed
connection lingers ``LINGER`` seconds first, swallowing what still arrives for it: a link
that duplicates and delays frames delivers copies after both FINs were acknowledged, and a
RST for those would be noise. ``rst_in`` / ``rst_out`` count every RST seen and sent.
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import threading
import time
from collections import deque

from .. import frames
from ..tcp import ACK, RST, SYN, Tcb, TcpSegment, TcpState, decode, seq_after
from . import gso
from .netns import call_in_netns
from .ring import PacketRing

SO_SNDBUF = 7
_IP = b"\x08\x00"
_ARP = b"\x08\x06"
BATCH = 512  # frames per pass of the loop: then timers and the application get a turn
LINGER = 30.0  # seconds a closed connection still swallows its late segments


class RawTcpError(OSError):
    pass


def only_ours(ip: str) -> tuple[tuple[int, int, int, int], ...]:
    """Classic BPF: ARP, and IPv4 to ``ip`` -- the kernel drops the rest of the link's
    traffic (its own flows in the namespace, a bench's kernel-to-kernel stream) before it
    costs the loop a wake-up."""
    addr = int.from_bytes(socket.inet_aton(ip), "big")
    code = ((0x28, 0, 0, 12),           # ldh [12]: the EtherType
            (0x15, 3, 0, 0x0806),       # ARP: accept
            (0x15, 0, 3, 0x0800),       # not IPv4: drop
            (0x20, 0, 0, 30),           # ld [30]: the IPv4 destination
            (0x15, 0, 1, addr),         # ours: accept, else drop
            (0x06, 0, 0, 0x40000),      # accept (the whole frame)
            (0x06, 0, 0, 0))            # drop
    return code


def coalesce(segs: list[TcpSegment]) -> list[TcpSegment]:
    """``segs`` without the ACKs a later segment of theirs supersedes (a higher ACK number
    on the same connection) -- GRO's effect on a kernel receiver: one ACK per burst read,
    not one per two segments. Duplicate ACKs (the same number) all stay: they are the
    sender's loss signal."""
    later: dict[tuple[str, int, int], int] = {}
    keep = []
    for seg in reversed(segs):
        if seg.flags & ACK and not seg.flags & RST:
            key = (seg.dst, seg.dport, seg.sport)
            if not seg.payload and seg.flags == ACK and key in later \
                    and seq_after(later[key], seg.ack):
                continue
            if key not in later or seq_after(seg.ack, later[key]):
                later[key] = seg.ack
        keep.append(seg)
    keep.reverse()
    return keep


class Connection:
    """One connection's application end (like a connected socket)."""

    def __init__(self, stack: RawTcp, tcb: Tcb) -> None:
        self.stack, self.tcb = stack, tcb
        self._pending = bytearray()  # written by the application, not yet in the TCB
        self._closing = False

    @property
    def local(self) -> tuple[str, int]:
        return self.tcb.local

    @property
    def remote(self) -> tuple[str, int]:
        return self.tcb.remote

    def send(self, data: bytes, timeout: float | None = None) -> int:
        """Queue all of ``data`` (waiting while a send buffer's worth is pending)."""
        st, view, done = self.stack, memoryview(data), 0
        limit = self.tcb.sndbuf
        with st.cv:
            while done < len(view):
                if self._closing or self.tcb.reset or self.tcb.state is TcpState.CLOSED:
                    raise RawTcpError(errno.EPIPE, "connection closed")
                room = limit - len(self._pending)
                if room <= 0:
                    st._wait(lambda: len(self._pending) < limit or self.tcb.reset, timeout)
                    continue
                self._pending += view[done:done + room]
                done += min(room, len(view) - done)
                st._wake()
        return done

    sendall = send

    def recv(self, limit: int = 1 << 20, timeout: float | None = None) -> bytes:
        """Up to ``limit`` bytes; b"" at the peer's FIN. A reset raises ECONNRESET."""
        st, tcb = self.stack, self.tcb
        with st.cv:
            st._wait(lambda: tcb.received or tcb.peer_fin or tcb.reset
                     or tcb.state is TcpState.CLOSED, timeout)
            if tcb.received:
                data = tcb.read(limit)
                if (d := tcb.next_deadline()) is not None and d <= time.monotonic():
                    st._wake()  # a window update is due
                return data
            if tcb.reset:
                raise RawTcpError(errno.ECONNRESET, "connection reset")
            return b""

    def shutdown(self) -> None:
        """FIN after what was sent (``close`` does the same: reading goes on)."""
        with self.stack.cv:
            self._closing = True
            self.stack._wake()

    close = shutdown

    def wait_closed(self, timeout: float | None = None) -> None:
        """Until both FINs are acknowledged (TIME-WAIT or CLOSED) or it was reset."""
        self.stack._wait_for(lambda: self.tcb.state in (TcpState.TIME_WAIT, TcpState.CLOSED),
                             timeout)


class RawTcp:
    """An IPv4 host with ftsslab's TCP on ``ifname`` (opened in namespace ``netns``)."""

    def __init__(self, ifname: str, ip: str, mac: str, *, netns: str | None = None,
                 mtu: int = 1500, neighbours: dict[str, str] | None = None,
                 offload: bool = True, **tcb_options) -> None:
        """``offload``: segments go out through the kernel's GSO (``gso.py``) where it has
        PACKET_VNET_HDR -- runs of them in one system call, checksums summed in C."""
        self.ip, self.mac = ip, frames.mac_bytes(mac)
        self.tcb_options = {"options": True, "mss": mtu - 40, "rto": 1.0, "delack": 0.04,
                            "time_wait": 30.0, "rcvbuf": 1 << 20, "sndbuf": 1 << 20,
                            **tcb_options}
        self.neighbours = {k: frames.mac_bytes(v) for k, v in (neighbours or {}).items()}
        open_ring = lambda: PacketRing(ifname, mtu, 16 << 20)  # noqa: E731
        self.ring = call_in_netns(netns, open_ring) if netns else open_ring()
        self.ring.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUF, 4 << 20)
        self.ring.attach_filter(only_ours(ip))
        self.gso: socket.socket | None = None
        if offload:
            try:
                self.gso = call_in_netns(netns, gso.open_socket, ifname) if netns \
                    else gso.open_socket(ifname)
                self.gso.setsockopt(socket.SOL_SOCKET, SO_SNDBUF, 4 << 20)
            except OSError:
                self.gso = None
        self._wakefd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.cv = threading.Condition()
        self._conns: dict[tuple[str, int, int], Connection] = {}  # (remote ip, port, ours)
        self._listening: dict[int, deque[Connection]] = {}
        self._closed: dict[tuple[str, int, int], float] = {}  # lingering: when it closed
        self._rng = random.Random()
        self.rst_in = self.rst_out = self.bad_checksum = self.tx_dropped = 0
        self.frames_in = self.frames_out = 0
        self._stop = False
        self._queue: list[TcpSegment] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"rawtcp-{ip}", daemon=True)
        self._thread.start()

    # ---- the application ------------------------------------------------------------------

    def listen(self, port: int) -> None:
        with self.cv:
            self._listening.setdefault(port, deque())

    def accept(self, port: int, timeout: float | None = None) -> Connection:
        """The next connection to ``port`` whose handshake is complete."""
        with self.cv:
            self._wait(lambda: self._listening[port], timeout)
            return self._listening[port].popleft()

    def connect(self, remote: tuple[str, int], timeout: float = 10.0) -> Connection:
        end = time.monotonic() + timeout
        mac = self._resolve(remote[0], end)
        with self.cv:
            port = self._free_port(remote)
            tcb, segs = Tcb.connect((self.ip, port), remote, self._rng.getrandbits(32),
                                    time.monotonic(), **self.tcb_options)
            conn = self._conns[(remote[0], remote[1], port)] = Connection(self, tcb)
            self.neighbours.setdefault(remote[0], mac)
            self._send(segs)
            self._wake()
            self._wait(lambda: tcb.state is not TcpState.SYN_SENT, end - time.monotonic())
            if tcb.state is TcpState.CLOSED:  # reset or given up (the peer's FIN may be in)
                raise RawTcpError(errno.ECONNREFUSED, f"connect to {remote}: refused")
        return conn

    def close(self) -> None:
        """Stop the loop and close the ring (connections end without a segment)."""
        with self.cv:
            self._stop = True
            self._wake()
        self._thread.join(timeout=10)
        self.ring.close()
        if self.gso is not None:
            self.gso.close()
        os.close(self._wakefd)

    def __enter__(self) -> RawTcp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- waiting (the caller holds ``cv``) ---------------------------------------------------

    def _wait(self, ready, timeout: float | None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        while not ready():
            if self._error is not None:
                raise RawTcpError(errno.EIO, f"rawtcp loop failed: {self._error!r}")
            if self._stop:
                raise RawTcpError(errno.ESHUTDOWN, "stack closed")
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("rawtcp: timed out")
            self.cv.wait(left if left is None or left < 1 else 1.0)

    def _wait_for(self, ready, timeout: float | None) -> None:
        with self.cv:
            self._wait(ready, timeout)

    def _wake(self) -> None:
        try:
            os.eventfd_write(self._wakefd, 1)
        except BlockingIOError:
            pass  # already due

    def _resolve(self, ip: str, end: float) -> bytes:
        """The neighbour's MAC: ARP, one request a second."""
        with self.cv:
            while ip not in self.neighbours:
                self._tx(frames.arp_request(self.mac, self.ip, ip))
                try:
                    self._wait(lambda: ip in self.neighbours, min(1.0, end - time.monotonic()))
                except TimeoutError:
                    if time.monotonic() >= end:
                        raise
            return self.neighbours[ip]

    def _free_port(self, remote: tuple[str, int]) -> int:
        while True:
            port = self._rng.randrange(32768, 61000)
            if (remote[0], remote[1], port) not in self._conns:
                return port

    # ---- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        poll = select.poll()
        poll.register(self.ring.fileno(), select.POLLIN)
        poll.register(self._wakefd, select.POLLIN)
        try:
            while True:
                with self.cv:
                    if self._stop:
                        return
                    due = [d for c in self._conns.values()
                           if (d := c.tcb.next_deadline()) is not None]
                wait = 1000 if not due else max(0, min(due) - time.monotonic()) * 1000
                for fd, ev in poll.poll(wait):
                    if fd == self._wakefd:
                        try:
                            os.eventfd_read(self._wakefd)
                        except BlockingIOError:
                            pass
                    elif ev & select.POLLERR:
                        self.ring.pending_error()  # ENETDOWN: cleared, or poll spins
                with self.cv:
                    self._pass()
        except BaseException as exc:  # handed to the application's next call
            with self.cv:
                self._error = exc
                self.cv.notify_all()

    def _pass(self) -> None:
        """Frames that arrived, the application's data, the timers; then wake the waiters."""
        while batch := self.ring.frames(BATCH):
            now = time.monotonic()
            self._queue = []
            for frame in batch:
                self._frame(frame, now)
            self._feed(now)
            queue, self._queue = self._queue, None
            self._send(coalesce(queue))
            if len(batch) < BATCH:
                break
        now = time.monotonic()
        self._feed(now)
        for key, conn in list(self._conns.items()):
            tcb = conn.tcb
            d = tcb.next_deadline()
            if d is not None and d <= now:
                self._send(tcb.on_timer(now))
            if tcb.state is TcpState.CLOSED:
                gone = self._closed.setdefault(key, now)
                if now - gone > LINGER:
                    del self._conns[key], self._closed[key]
        self.cv.notify_all()

    def _feed(self, now: float) -> None:
        """The application's pending bytes into their TCBs, and its closes."""
        for conn in self._conns.values():
            tcb = conn.tcb
            if conn._pending and tcb.room:
                n, segs = tcb.write(conn._pending, now)
                del conn._pending[:n]
                self._send(segs)
            if conn._closing and not conn._pending and tcb.state in (
                    TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                self._send(tcb.close(now))

    def _frame(self, frame: bytes, now: float) -> None:
        kind = frame[12:14]
        if kind == _ARP:
            self._arp(frame)
            return
        if kind != _IP or frame[:6] != self.mac:
            return
        self.frames_in += 1
        packet = memoryview(frame)[14:]
        seg = decode(packet, verify=True)
        if seg is None:
            if decode(packet) is not None:
                self.bad_checksum += 1
            return
        if seg.dst != self.ip:
            return
        if seg.flags & RST:
            self.rst_in += 1
        conn = self._conns.get((seg.src, seg.sport, seg.dport))
        if conn is None:
            self._unknown(seg, frame[6:12], now)
            return
        tcb = conn.tcb
        was = tcb.state
        self._send(tcb.on_segment(seg, now))
        if was is TcpState.SYN_RCVD and tcb.state is not TcpState.SYN_RCVD:
            if tcb.state is not TcpState.CLOSED and tcb.local[1] in self._listening:
                self._listening[tcb.local[1]].append(conn)

    def _unknown(self, seg: TcpSegment, mac: bytes, now: float) -> None:
        """A SYN to a listener opens a connection; anything else but a RST is refused."""
        if seg.flags & (SYN | ACK | RST) == SYN and seg.dport in self._listening:
            self.neighbours[seg.src] = mac
            tcb, segs = Tcb.accept(seg, self._rng.getrandbits(32), now, **self.tcb_options)
            self._conns[(seg.src, seg.sport, seg.dport)] = Connection(self, tcb)
            self._send(segs)
        elif not seg.flags & RST:
            self.neighbours.setdefault(seg.src, mac)
            if seg.flags & ACK:
                rst = TcpSegment(seg.dst, seg.src, seg.dport, seg.sport, seg.ack, 0, RST, 0)
            else:
                end = seg.seq + len(seg.payload) + (seg.flags & SYN) // SYN + (seg.flags & 1)
                rst = TcpSegment(seg.dst, seg.src, seg.dport, seg.sport, 0, end % (1 << 32),
                                 RST | ACK, 0)
            self._send([rst])

    def _arp(self, frame: bytes) -> None:
        arp = frames.parse_arp(frame)
        if arp is not None and (reply := frames.answer_arp(arp, self.ip, self.mac,
                                                           self.neighbours)):
            self._tx(reply)

    def _send(self, segs: list[TcpSegment]) -> None:
        if self._queue is not None:  # a burst is being read: sent once it is done
            self._queue += segs
            return
        if self.gso is None:
            for seg in segs:
                if (mac := self._mac(seg, 1)) is not None:
                    self._tx(mac + self.mac + _IP + seg.encode())
            return
        for run in gso.runs(segs):
            if (mac := self._mac(run[0], len(run))) is not None:
                self._tx(gso.frame(mac + self.mac + _IP, run), self.gso, len(run))

    def _mac(self, seg: TcpSegment, n: int) -> bytes | None:
        """Where ``seg`` (and the ``n`` - 1 after it) goes; None, counted, if unknown."""
        mac = self.neighbours.get(seg.dst)
        if mac is None:
            self.tx_dropped += n
        elif seg.flags & RST:
            self.rst_out += 1
        return mac

    def _tx(self, frame: bytes, sock: socket.socket | None = None, n: int = 1) -> None:
        try:
            (sock or self.ring.sock).send(frame)
            self.frames_out += n
        except (BlockingIOError, OSError) as exc:  # a full queue is a loss TCP recovers
            if isinstance(exc, BlockingIOError) or exc.errno == errno.ENOBUFS:
                self.tx_dropped += n
            else:
                raise

