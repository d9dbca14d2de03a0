# SPDX-License-Identifier: GPL-2.0-or-later
"""The first device's half of a TCH handoff, in the safe order of D2.1, shared by a NAS
device (a connection it serves) and the NAS switch (delayed binding: the connection its
own kernel accepted on the VIP).

    open the TCH session (SYN+HND+endpoint) while the connection still runs
    stop writing; wait (bounded) until the client acked what was written
    hold the flow: an nft drop in this namespace, an AF_PACKET socket keeping the frames
    checkpoint the socket (TCP_REPAIR), close it silently (no FIN, no RST)
    send checkpoint + application state, then SET(update = SND.NXT, RCV.NXT)
    on the second device's SET: reprogram the switch (the owner's hook), then END
    on its FIN: FIN; relay the held frames to the second device, in arrival order (D2.5)

A handoff that fails after the freeze restores this side's own checkpoint (the seed's
``setsockopt(0)``) and gives the held frames to its own stack (``inject``); so does one where
the client sends FIN or RST before the switch is reprogrammed (check 10). ``udp_tch.py``
drives the same steps with the second embodiment's messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ftsslab.lab.veth.switchd import SwitchdError

from . import repair, tch
from .bpf import NOTHING, attach, tcp_filter
from .process import NasProcess, packet_socket
from .segment import FIN, RST, Segment

GUARD = "ftsslab_nas"  # the inet table of a NAS namespace's own input rules
SIOCOUTQ = 0x5411
DRAIN_LIMIT = 0.5     # seconds a handoff waits for the client to ack what was written
MESSAGES_DRAIN_LIMIT = 5.0  # ... by messages: their state is one datagram, no send queue fits
FLUSH_LIMIT = 10.0    # seconds it waits for its owner (headers written, a partial upload moved)
SNDBUF = 256 * 1024   # the send queue a checkpoint may have to carry
TCH_PORTS = (61000, 61999)  # the first device's side of TCH connections
# a client's FIN/RST aborts a handoff in these states; once the switch moves (SWITCHING on),
# the second device holds the connection and the held FIN/RST is relayed to it
ABORTABLE = (tch.FirstState.TRANSFER, tch.FirstState.SET_SENT)
HOLD_LINGER = 2.0  # seconds a given connection stays held here after its handoff
TCH_RETRIES = 3   # resends of a TCH segment (RTO 0.2 s, doubling): a silent second device is
#                   given up 3 s after the segment -- the longest a frozen client waits


TCP_ESTABLISHED = 1
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}  # the kernel's enum, include/net/tcp_states.h


class NotEstablished(ValueError):
    """The connection is not in ESTABLISHED: it cannot be handed off now."""


@dataclass(frozen=True)
class Target:
    """The device a connection goes to: its name, own address and MAC."""

    name: str
    ip: str
    mac: str


@dataclass
class Gift:
    """One connection being given away."""

    sock: socket.socket
    client: tuple[str, int]
    to: Target
    tch: tch.TchFirst
    reason: str
    started: float
    flushed: Callable[[], bool]   # the owner wrote everything it queued into the socket
    export: Callable[[], bytes]   # the application state, taken at the freeze
    reprogram: Callable[[Gift], None]  # point the switch at ``to``; then ``switch_updated``
    drained: bool = False
    frozen: bool = False
    checkpoint: repair.TcpCheckpoint | None = None
    exported: bytes = b""
    held: list[bytes] = field(default_factory=list)
    relayed: int = 0  # how many of ``held`` went to the second device
    hold_sock: socket.socket | None = None
    xid: int | None = None  # the owner's XAP request, if any ...
    xid_op: str = ""        # ... and what it asked ("change", "query")

    @property
    def name(self) -> str:
        return f"{self.client[0]}:{self.client[1]}"

    @property
    def pausing(self) -> bool:
        """The owner stops writing: the second device answered, the handoff is under way
        (until then the connection runs as if nothing happened)."""
        return self.tch.state not in (tch.FirstState.IDLE, tch.FirstState.SYN_SENT)


# (the gift, whether the second device has it, the socket back here when it does not)
Done = Callable[[Gift, bool, socket.socket | None], None]


class Giver:
    drain_limit = DRAIN_LIMIT
    def __init__(self, proc: NasProcess, ip: str, iface: str, self_mac: str, vip: str,
                 vport: int, nft, send: Callable[[Segment], None], done: Done,
                 arm: Callable[[], None]) -> None:
        """``send`` puts a TCH segment on the wire, ``done`` takes a finished gift, ``arm``
        (re)schedules the owner's timer for ``next_deadline`` after every change."""
        self.proc, self.ip, self.iface, self.self_mac = proc, ip, iface, self_mac
        self.vip, self.vport, self.nft, self.send, self.done = vip, vport, nft, send, done
        self.arm = arm
        self.gifts: dict[tuple[str, int], Gift] = {}  # by (second device ip, our TCH port)
        self.l2 = packet_socket(iface)  # relays held frames
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._port = TCH_PORTS[0]
        self._holds: dict[tuple[str, int], tuple[int, int]] = {}  # client -> generation, rule
        self._spare: list[socket.socket] = []  # hold sockets between two handoffs
        self._gen = 0
        self.counters = {"given": 0, "give_failed": 0, "relayed": 0, "injected": 0}

    def give(self, sock: socket.socket, client: tuple[str, int], to: Target, reason: str, *,
             flushed: Callable[[], bool], export: Callable[[], bytes],
             reprogram: Callable[[Gift], None]) -> Gift:
        """Start giving the connection away; NotEstablished when it is being set up or torn
        down (check 11: "A TCH session handoff will not take place during the connection
        setup phase ... or during the tear down", L296)."""
        self.refuse_unless_established(sock, client, to)
        port = self._next_port()
        first = tch.TchFirst((self.ip, port), (to.ip, self.vport), client, secrets.randbits(32),
                             max_retries=TCH_RETRIES)
        gift = Gift(sock, client, to, first, reason, time.monotonic(), flushed, export,
                    reprogram)
        self.gifts[(to.ip, port)] = gift
        self.proc.event("handoff-start", client=gift.name, to=to.name, reason=reason)
        self._actions(gift, first.open(time.monotonic()))
        return gift

    def refuse_unless_established(self, sock: socket.socket, client: tuple[str, int],
                                  to: Target) -> None:
        state = tcp_state(sock)
        if state != TCP_ESTABLISHED:
            self.proc.event("handoff-refused", client=f"{client[0]}:{client[1]}", to=to.name,
                            tcp_state=TCP_STATES.get(state, str(state)))
            raise NotEstablished(f"{client[0]}:{client[1]} is {TCP_STATES.get(state, state)}, "
                                 "not ESTABLISHED: no handoff during set-up or tear-down")

    def on_segment(self, seg: Segment, now: float) -> bool:
        """A TCH segment for one of our sessions (False: not ours)."""
        gift = self.gifts.get((seg.src, seg.dport))
        if gift is None:
            return False
        self._actions(gift, gift.tch.on_segment(seg, now))
        return True

    def switch_updated(self, gift: Gift) -> None:
        self._actions(gift, gift.tch.switch_updated(time.monotonic()))

    def switch_failed(self, gift: Gift) -> None:
        self._actions(gift, gift.tch.resume(time.monotonic()))

    def hold(self, client: tuple[str, int]) -> None:
        """Drop the client's frames of this connection at this namespace's input: while it
        is frozen (and just after it left), nobody's kernel may answer it. The rule's handle
        comes back with it (``echo``): a release deletes it without listing the chain, which
        would cost a handoff O(rules) on its critical path."""
        self.release(client)
        self._gen += 1
        out = self.nft(f"insert rule inet {GUARD} input ip saddr {client[0]} tcp sport "
                       f"{client[1]} ip daddr {self.vip} tcp dport {self.vport} drop comment "
                       f"\"hold {client[0]}:{client[1]}\"", echo=True)
        handle = next(int(item["insert"]["rule"]["handle"])
                      for item in json.loads(out)["nftables"] if "insert" in item)
        self._holds[client] = (self._gen, handle)

    def release(self, client: tuple[str, int], generation: int | None = None) -> None:
        """Stop holding (only the hold ``generation`` when given: a later hold stays)."""
        gen, handle = self._holds.get(client, (None, None))
        if gen is None or generation not in (None, gen):
            return
        del self._holds[client]
        with contextlib.suppress(SwitchdError):  # (gone already: the table was flushed)
            self.nft(f"delete rule inet {GUARD} input handle {handle}")

    def linger(self, client: tuple[str, int]) -> None:
        """Release the hold HOLD_LINGER from now: the connection left this namespace, and its
        frames still in flight must not reach the kernel here (an unknown flow to it: it
        would answer RST)."""
        n = self._holds.get(client, (None, None))[0]
        self.proc.at(time.monotonic() + HOLD_LINGER, lambda: self.release(client, n))

    def next_deadline(self) -> float | None:
        return min((d for g in self.gifts.values() if (d := g.tch.next_deadline()) is not None),
                   default=None)

    def on_timer(self, now: float) -> None:
        for gift in list(self.gifts.values()):
            d = gift.tch.next_deadline()
            if d is not None and d <= now:
                self._actions(gift, gift.tch.on_timer(now))

    # ---- the steps ----------------------------------------------------------------------------
    def _next_port(self) -> int:
        lo, hi = TCH_PORTS
        busy = {p for _, p in self.gifts}
        for _ in range(hi - lo + 1):
            self._port = lo + (self._port + 1 - lo) % (hi - lo + 1)
            if self._port not in busy:
                return self._port
        raise LookupError("every TCH port is in use")

    def _drain(self, gift: Gift, since: float | None = None) -> None:
        """Wait (bounded) until the client acked what was written: a small checkpoint."""
        if gift.frozen or gift not in self.gifts.values():
            return
        since = time.monotonic() if since is None else since
        if gift not in self.gifts.values():
            return  # the owner gave up (``flushed`` failed)
        if gift.flushed() and gift in self.gifts.values() and \
                (_outq(gift.sock) == 0 or time.monotonic() - since > self.drain_limit):
            gift.drained = True
            self._freeze(gift)
        elif time.monotonic() - since > FLUSH_LIMIT:  # the owner never got ready: no handoff
            self.proc.event("handoff-refused", client=gift.name, to=gift.to.name,
                            why=f"not ready to freeze after {FLUSH_LIMIT:g} s")
            self.switch_failed(gift)
        else:
            self.proc.at(time.monotonic() + 0.0005, lambda: self._drain(gift, since))

    def _may_freeze(self, gift: Gift) -> bool:
        return gift.tch.state is tch.FirstState.ESTABLISHED

    def _freeze(self, gift: Gift) -> None:
        if gift.frozen or not gift.drained or not self._may_freeze(gift):
            return
        if tcp_state(gift.sock) != TCP_ESTABLISHED:  # the client closed meanwhile (B2.33)
            self.proc.event("handoff-refused", client=gift.name, to=gift.to.name,
                            tcp_state=TCP_STATES.get(tcp_state(gift.sock), "gone"))
            self.switch_failed(gift)
            return
        gift.hold_sock = self.catch(gift.client)
        self.proc.watch(gift.hold_sock, lambda: self._held(gift))
        try:
            gift.checkpoint = cp = repair.checkpoint(gift.sock)
        except repair.RepairError as exc:  # the connection stays here, as it was
            with contextlib.suppress(OSError):
                gift.sock.setsockopt(socket.IPPROTO_TCP, repair.TCP_REPAIR, 0)
            self.release(gift.client)
            self._put_back(gift)
            self.proc.event("handoff-refused", client=gift.name, to=gift.to.name,
                            why=str(exc))
            self.switch_failed(gift)
            return
        gift.exported = gift.export()
        self.proc.event("account", client=gift.name, why="freeze", **tcp_counts(gift.sock))
        self.proc.unwatch(gift.sock)
        repair.close_silently(gift.sock)
        gift.frozen = True
        state = cp.pack()
        self.proc.event("freeze", client=gift.name, to=gift.to.name, snd_nxt=cp.snd_nxt,
                        rcv_nxt=cp.rcv_nxt, send_queue=len(cp.send_queue),
                        recv_queue=len(cp.recv_queue))
        self._frozen(gift, struct.pack(">I", len(state)) + state + gift.exported)

    def _frozen(self, gift: Gift, carried: bytes) -> None:
        """Send what the second device restores from: checkpoint + application state (if it
        is more than a TCH session carries -- a slow client's send queue after the drain
        limit -- the connection stays here, on its own checkpoint)."""
        if len(carried) > tch.MAX_STATE:
            self.proc.event("handoff-refused", client=gift.name, to=gift.to.name,
                            why=f"{len(carried)} bytes of state, a TCH session carries "
                                f"{tch.MAX_STATE}")
            self.switch_failed(gift)
            return
        cp = gift.checkpoint
        self._actions(gift, gift.tch.handoff(carried, (cp.snd_nxt, cp.rcv_nxt),
                                             time.monotonic()))

    def catch(self, client: tuple[str, int]) -> socket.socket:
        """Hold the client's frames of its connection (``hold``) and keep them on a packet
        socket, returned. Sockets are kept for the next hold, not closed: closing one
        waits for an RCU grace period (~10 ms here), which would stall the whole loop."""
        code = tcp_filter(src_ip=client[0], sport=client[1], dst_ip=self.vip, dport=self.vport)
        if self._spare:
            s = self._spare.pop()
            attach(s, code)
            _discard(s)  # frames the old filter let in
        else:
            s = packet_socket(self.iface, code)
        self.hold(client)
        return s

    def put_back(self, s: socket.socket) -> None:
        """A ``catch`` socket no longer needed (its hold stays until ``release``)."""
        self.proc.unwatch(s)
        attach(s, NOTHING)
        _discard(s)
        self._spare.append(s)

    def _put_back(self, gift: Gift) -> None:
        s, gift.hold_sock = gift.hold_sock, None
        self.put_back(s)

    def _held(self, gift: Gift) -> None:
        closed = False
        for frame in read_frames(gift.hold_sock):
            gift.held.append(frame)
            closed |= _ends(frame)
        if closed:
            self._client_closed(gift)

    def _client_closed(self, gift: Gift) -> None:
        if gift.tch.state in ABORTABLE:
            # check 10: the client closed (FIN or RST) before the switch moved: both ends
            # abort, and the held frames, the FIN or RST among them, come back here
            self._actions(gift, gift.tch.client_closed(time.monotonic()))

    def _actions(self, gift: Gift, actions: list) -> None:
        for a in actions:
            if isinstance(a, tch.Send):
                self.send(a.segment)
            elif isinstance(a, tch.StateChanged):
                self.proc.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why)
                if a.new is tch.FirstState.ESTABLISHED and a.old is not a.new:
                    self._drain(gift)  # the owner stops writing now (``pausing``)
            elif isinstance(a, tch.Reprogram):
                gift.reprogram(gift)
            elif isinstance(a, tch.Finished):
                self._finish(gift, a.outcome is tch.Outcome.HANDED_OFF, a.outcome.name,
                             a.reason)
        self.arm()

    def _finish(self, gift: Gift, given: bool, outcome: str, reason: str) -> None:
        self.gifts = {k: v for k, v in self.gifts.items() if v is not gift}
        back = None
        if gift.frozen and not given:  # back here: our own checkpoint again
            back = repair.restore(gift.checkpoint, sndbuf=SNDBUF)
            self.release(gift.client)
            repair.leave_repair(back)
        if gift.hold_sock is not None:
            self._held(gift)
            self._put_back(gift)
        if given:
            self.relay(gift.held[gift.relayed:], gift.to.mac)
        else:
            self.inject(gift.held)
        gift.relayed = len(gift.held)
        self.counters["given" if given else "give_failed"] += 1
        if given:  # frames in flight at the flip are still held; then the kernel sees them
            self.linger(gift.client)
        self.proc.event("handoff-end", client=gift.name, to=gift.to.name, outcome=outcome,
                        reason=reason, held=len(gift.held), relayed=gift.relayed if given else 0,
                        ms=round((time.monotonic() - gift.started) * 1000, 3))
        self.done(gift, given, back if gift.frozen else None)


    def relay(self, frames: list[bytes], mac: str) -> None:
        """Client frames to another device through the switch, in arrival order (D2.5)."""
        dst = bytes.fromhex(mac.replace(":", ""))
        for frame in frames:
            try:
                self.l2.send(dst + frame[6:])
            except OSError:  # the link is down: the client retransmits what mattered
                break
        self.counters["relayed"] += len(frames)

    def inject(self, frames: list[bytes]) -> None:
        """Client frames into this namespace's own stack, in arrival order: sent to the
        VIP from a raw socket, they arrive by the loopback (a frame sent to the switch
        for our own MAC would come back on no port: a bridge does not hairpin)."""
        for frame in frames:
            packet = frame[14:]
            if len(packet) < 20:
                continue
            try:
                self.raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
            except OSError:
                break
        self.counters["injected"] += len(frames)


def read_frames(sock: socket.socket | None, limit: int = 256) -> list[bytes]:
    """What a packet socket holds now (up to ``limit`` frames)."""
    frames = []
    for _ in range(limit):
        try:
            frames.append(sock.recv(65536))
        except (OSError, AttributeError):  # none left, ENETDOWN once, or closed
            break
    return frames


def _ends(frame: bytes) -> bool:
    """A client frame with FIN or RST (an IPv4 TCP frame, as the hold filter passes)."""
    flags = 14 + (frame[14] & 0xF) * 4 + 13 if len(frame) > 14 else len(frame)
    return flags < len(frame) and bool(frame[flags] & (FIN | RST))


def _discard(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            sock.recv(65536)


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (the first byte of ``struct tcp_info``)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return 0


# struct tcp_info (include/uapi/linux/tcp.h): offsets of what a device accounts for (check 29)
_COUNTS = (("retrans", "I", 100), ("bytes_out", "Q", 120), ("bytes_in", "Q", 128),
           ("segs_in", "I", 152), ("segs_out", "I", 156))


_PEER_FIN = (6, 8, 9, 11)  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING: the client's FIN arrived


def tcp_counts(sock: socket.socket) -> dict[str, int]:
    """What this socket carried for the client, from the kernel (check 29, L326): data bytes
    the client acked (``bytes_out``) and that came from it (``bytes_in``), data segments each
    way (MSS-sized, as the client sees them), retransmitted segments, and what was written
    but not acked yet (``unacked``: sent later by whoever holds the connection then). A
    restored socket starts from zero, so the devices' figures add up over handoffs."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    except OSError:
        return {}
    if len(info) < 160:
        return {}
    counts = {name: struct.unpack_from(fmt, info, off)[0] for name, fmt, off in _COUNTS}
    if info[0] in _PEER_FIN:  # the kernel counts the client's FIN as one byte received
        counts["bytes_in"] -= 1
    return counts | {"unacked": _outq(sock)}


def _outq(sock: socket.socket) -> int:
    """Bytes written but not yet acked by the peer (SIOCOUTQ); 0 once the socket is closed
    (the client left during a drain): ``fcntl`` refuses its descriptor -1 with a ValueError."""
    if sock.fileno() < 0:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock, SIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0
