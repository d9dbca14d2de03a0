"""A SANIC's port on a real link: the sans-IO ``verbs.Context`` driven over AF_PACKET on veth.

The kernel has no RoCE (no rxe here), and a kernel UDP socket would choose the IPv4 id that
the ICRC covers, so the port builds and reads whole frames itself (``packets.frame``): one
IPv4 host ``ip`` at ``mac`` on one interface, which answers ARP for its address and resolves
its peers by ARP. As with ``lab/veth/rawtcp.py``, ``ip`` and ``mac`` are not the namespace's
own, so its kernel drops what comes for them (no ICMP port unreachable). One thread reads the
interface through a PACKET_MMAP ring behind a BPF filter (ARP, and UDP 4791 to ``ip``) and fires
the QPs' timers; the application calls verbs through ``call``, under the same lock.

A QP's peer is the remote port's IPv4 address.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ftsslab.fast.roce import ROCEV2_UDP_PORT
from ftsslab.lab import frames
from ftsslab.lab.veth.netns import call_in_netns
from ftsslab.lab.veth.ring import PacketRing

from .packets import Packet, frame, packet
from .verbs import Context

SPORT = 49152
T = TypeVar("T")


def roce_filter(ip: str) -> tuple[tuple[int, int, int, int], ...]:
    """Classic BPF: ARP, and IPv4 UDP to ``ip`` port 4791 (no IP options: IHL 5)."""
    addr = int.from_bytes(socket.inet_aton(ip), "big")
    code = ((0x28, 0, 0, 12),                # 0 ldh [12]: EtherType
            (0x15, 8, 0, 0x0806),            # 1 ARP: accept
            (0x15, 0, 6, 0x0800),            # 2 not IPv4: drop
            (0x30, 0, 0, 23),                # 3 ldb [23]: protocol
            (0x15, 0, 4, 17),                # 4 not UDP: drop
            (0x20, 0, 0, 30),                # 5 ld [30]: destination
            (0x15, 0, 2, addr),              # 6 not ours: drop
            (0x28, 0, 0, 36),                # 7 ldh [36]: UDP destination port
            (0x15, 1, 0, ROCEV2_UDP_PORT),   # 8 RoCEv2: accept
            (0x06, 0, 0, 0),                 # 9 drop
            (0x06, 0, 0, 0x40000))           # 10 accept
    return code


class SanPort:
    """``context`` on interface ``ifname`` (opened in namespace ``netns``) as ``ip``/``mac``."""

    def __init__(self, context: Context, ifname: str, ip: str, mac: str, *,
                 netns: str | None = None, mtu: int = 1500) -> None:
        self.context, self.ip, self.mac = context, ip, frames.mac_bytes(mac)
        self._mac_text = mac
        open_ring = lambda: PacketRing(ifname, mtu, 8 << 20)  # noqa: E731
        self.ring = call_in_netns(netns, open_ring) if netns else open_ring()
        self.ring.attach_filter(roce_filter(ip))
        self.neighbours: dict[str, bytes] = {}
        self.lock = threading.Condition()
        self.frames_in = self.frames_out = self.dropped = self.malformed = 0
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"sanport-{ip}", daemon=True)
        self._thread.start()

    # ---- the application --------------------------------------------------------------------
    def call(self, verb: Callable[[], T]) -> T:
        """Run ``verb`` (a verbs call: it may return what goes on the wire) under the lock."""
        with self.lock:
            if self._error is not None:
                raise RuntimeError(f"SAN port loop failed: {self._error!r}")
            got = verb()
            if isinstance(got, list):
                self._send(got)
            os.eventfd_write(self._wake_fd, 1)  # its timers may be new
            return got

    def wait(self, ready: Callable[[], bool], timeout: float) -> None:
        """Until ``ready()`` (checked under the lock) or TimeoutError."""
        end = time.monotonic() + timeout
        with self.lock:
            while not ready():
                if self._error is not None:
                    raise RuntimeError(f"SAN port loop failed: {self._error!r}")
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("SAN port: timed out")
                self.lock.wait(min(left, 0.5))

    def resolve(self, ip: str, timeout: float = 10.0) -> None:
        """The peer's MAC, by ARP (one request every 0.2 s)."""
        end = time.monotonic() + timeout
        while True:
            with self.lock:
                if ip in self.neighbours:
                    return
                self._tx(frames.arp_request(self.mac, self.ip, ip))
            try:
                self.wait(lambda: ip in self.neighbours, min(0.2, end - time.monotonic()))
                return
            except TimeoutError:
                if time.monotonic() >= end:
                    raise

    def close(self) -> None:
        with self.lock:
            self._stop = True
            os.eventfd_write(self._wake_fd, 1)
        self._thread.join(timeout=10)
        self.ring.close()
        os.close(self._wake_fd)

    def __enter__(self) -> SanPort:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        poll = select.poll()
        poll.register(self.ring.fileno(), select.POLLIN)
        poll.register(self._wake_fd, select.POLLIN)
        try:
            while True:
                with self.lock:
                    if self._stop:
                        return
                    due = self.context.next_deadline()
                wait = 1000 if due is None else max(0.0, due - time.monotonic()) * 1000
                for fd, ev in poll.poll(wait):
                    if fd == self._wake_fd:
                        try:
                            os.eventfd_read(self._wake_fd)
                        except BlockingIOError:
                            pass
                    elif ev & select.POLLERR:
                        self.ring.pending_error()
                with self.lock:  # one batch a turn: the application and the timers get theirs
                    for data in self.ring.frames(256):  # (poll(2) is readable while more wait)
                        self._frame(data)
                    now = time.monotonic()
                    self._send(self.context.on_timer(now))
                    self.lock.notify_all()
        except BaseException as exc:  # handed to the application's next call
            with self.lock:
                self._error = exc
                self.lock.notify_all()

    def _frame(self, data: bytes) -> None:
        if data[12:14] == b"\x08\x06":
            arp = frames.parse_arp(data)
            if arp is not None and (reply := frames.answer_arp(arp, self.ip, self.mac,
                                                               self.neighbours)):
                self._tx(reply)
            return
        if data[:6] != self.mac:
            return
        self.frames_in += 1
        got = packet(data)
        if got is None:
            self.malformed += 1  # not RC, cut short, or a wrong ICRC: counted, dropped
            return
        src = socket.inet_ntoa(data[26:30])
        self._send(self.context.receive(got, time.monotonic(), src))

    def _send(self, out: list[tuple[str, Packet]]) -> None:
        for peer, p in out:
            mac = self.neighbours.get(peer)
            if mac is None:
                self.dropped += 1
                continue
            self._tx(frame(p, eth_dst=mac.hex(":"), eth_src=self._mac_text, ip_src=self.ip,
                           ip_dst=peer, sport=SPORT))

    def _tx(self, data: bytes) -> None:
        try:
            self.ring.sock.send(data)
            self.frames_out += 1
        except (BlockingIOError, OSError):  # a full queue is a loss the QP recovers
            self.dropped += 1
