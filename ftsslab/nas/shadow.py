# SPDX-License-Identifier: GPL-2.0-or-later
"""What the switch keeps of each connection so another device can take it over when its own
device dies (D2.14 (b), claim 41, check 24), and how that device rebuilds it. Sans-IO.

Nobody can send SET or an update for a dead device, so the state must already be elsewhere.
The switch sees the client's SYN (placement), the device's SYN/ACK, and every client segment
that carries data (a download's requests: a few hundred bytes); the kernel forwards the rest.
From that a replica holding the same files rebuilds the connection:

* it asks the client where the stream is: one byte at the device's ISN, long acknowledged,
  which the client answers with a duplicate ACK (RFC 9293 3.10.7.4; Linux does not
  rate-limit answers to data segments) carrying its RCV.NXT, window, and the dead device's
  last TSval as TSecr;
* it restores the socket (TCP_REPAIR) at SND.NXT = that ACK, RCV.NXT = the end of the client's
  bytes, the options of the handshake, and its timestamp clock just past that TSecr (PAWS);
* it replays the client's bytes into a fresh HTTP core and skips the response bytes the
  client already has: a GET's response is a function of the request and the file (the Date
  header aside, which the client has long received when the cut is in the body).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from ftsslab.lab.tcp import ACK, PSH, SYN, TcpSegment

from . import http
from .repair import TcpCheckpoint, TcpWindow

MAGIC = b"FTSH"
MAX_DATA = 1024  # client bytes a shadow keeps: more is an upload, which cannot be replayed
MAX_FLOWS = 65536
TS_LEAD = 1000  # TSval ticks the replica's clock starts past the dead device's last
RCV_WINDOW = 65535  # what the replica's socket advertises first (unscaled bytes)
_M = 1 << 32
_HEAD = struct.Struct(">4sB4sH4sHIIHBBBBI")  # magic, version, addresses, ISNs, options, len
VERSION = 1


@dataclass
class Shadow:
    """One connection as the switch saw it; ``usable`` once the handshake was seen both ways
    and every client byte is kept."""

    client_ip: str
    client_port: int
    vip: str
    vport: int
    client_isn: int
    client_mss: int = 536
    client_ws: int | None = None  # None: the client offered no window scaling
    client_ts: bool = False
    device_isn: int | None = None
    device_ws: int | None = None
    device_ts: bool = False
    data: bytearray = field(default_factory=bytearray)  # from client_isn + 1, in order
    overflow: bool = False
    _early: dict[int, bytes] = field(default_factory=dict)  # out of order: offset -> bytes

    @property
    def usable(self) -> bool:
        return self.device_isn is not None and not self.overflow and not self._early

    @property
    def client_next(self) -> int:
        return (self.client_isn + 1 + len(self.data)) % _M

    def on_client(self, seg: TcpSegment) -> None:
        """A client segment with data; retransmitted and reordered ones are placed once."""
        at = (seg.seq - self.client_isn - 1) % _M
        if at >= 1 << 31 or not seg.payload:
            return
        self._early[at] = seg.payload
        while self._early:
            start = min(self._early)
            if start > len(self.data):
                break
            chunk = self._early.pop(start)
            self.data += chunk[len(self.data) - start:]
        if len(self.data) > MAX_DATA or len(self._early) > 64:
            self.overflow, self._early = True, {}
            self.data = self.data[:MAX_DATA]

    def on_synack(self, seg: TcpSegment) -> None:
        self.device_isn, self.device_ws, self.device_ts = seg.seq, seg.wscale, seg.ts is not None

    def pack(self) -> bytes:
        """The app state of the switch's Open to the replica."""
        flags = (1 if self.client_ws is not None else 0) | (2 if self.device_ws is not None
                                                            else 0) \
            | (4 if self.client_ts and self.device_ts else 0)
        return _HEAD.pack(MAGIC, VERSION, socket.inet_aton(self.client_ip), self.client_port,
                          socket.inet_aton(self.vip), self.vport, self.client_isn,
                          self.device_isn or 0, self.client_mss, self.client_ws or 0,
                          self.device_ws or 0, flags, 0, len(self.data)) + bytes(self.data)

    @classmethod
    def unpack(cls, data: bytes) -> Shadow | None:
        """What ``pack`` made, else None (never raises)."""
        if len(data) < _HEAD.size or data[:4] != MAGIC:
            return None
        (_, version, cip, cport, vip, vport, cisn, disn, mss, cws, dws, flags, _,
         n) = _HEAD.unpack_from(data)
        if version != VERSION or len(data) != _HEAD.size + n or n > MAX_DATA \
                or cws > 14 or dws > 14 or not 0 < mss:
            return None
        return cls(socket.inet_ntoa(cip), cport, socket.inet_ntoa(vip), vport, cisn, mss,
                   cws if flags & 1 else None, bool(flags & 4), disn,
                   dws if flags & 2 else None, bool(flags & 4), bytearray(data[_HEAD.size:]))


def is_shadow(app_state: bytes) -> bool:
    return app_state[:4] == MAGIC


class ShadowTable:
    """The switch's shadows by client (ip, port): a SYN starts one, the SYN/ACK completes it,
    client data fills it."""

    def __init__(self) -> None:
        self.flows: dict[tuple[str, int], Shadow] = {}

    def on_client(self, seg: TcpSegment) -> None:
        key = (seg.src, seg.sport)
        if seg.flags & SYN and not seg.flags & ACK:
            if key not in self.flows and len(self.flows) >= MAX_FLOWS:
                del self.flows[next(iter(self.flows))]
            old = self.flows.get(key)
            if old is None or old.client_isn != seg.seq:  # (a resent SYN changes nothing)
                self.flows[key] = Shadow(seg.src, seg.sport, seg.dst, seg.dport, seg.seq,
                                         seg.mss or 536, seg.wscale, seg.ts is not None)
        elif (s := self.flows.get(key)) is not None:
            s.on_client(seg)

    def on_device(self, seg: TcpSegment) -> None:
        s = self.flows.get((seg.dst, seg.dport))
        if s is not None and seg.flags & SYN and seg.ack == (s.client_isn + 1) % _M:
            s.on_synack(seg)

    def forget(self, client: tuple[str, int]) -> None:
        self.flows.pop(client, None)


def probe(s: Shadow) -> TcpSegment:
    """A byte the client acknowledged long ago: it answers with where its stream is."""
    return TcpSegment(s.vip, s.client_ip, s.vport, s.client_port, s.device_isn, s.client_next,
                      ACK | PSH, 0, b"\0")


def answer(s: Shadow, seg: TcpSegment) -> bool:
    """``seg`` is the client's reply to the probe: a pure ACK of the flow, acknowledging
    something of the device's stream."""
    return ((seg.src, seg.sport, seg.dst, seg.dport) == (s.client_ip, s.client_port, s.vip,
                                                        s.vport)
            and seg.flags & ACK and not seg.flags & ~(ACK | PSH) & 0x1FF and not seg.payload
            and 0 < (seg.ack - s.device_isn) % _M < 1 << 31)


def sent_before(s: Shadow, reply: TcpSegment) -> int:
    """Response bytes the client has: where the replica's stream goes on."""
    return (reply.ack - s.device_isn - 1) % _M


def checkpoint(s: Shadow, reply: TcpSegment) -> TcpCheckpoint | None:
    """The connection at the point the client's ``reply`` names (None: the client sent bytes
    the switch did not see, so its requests cannot be replayed)."""
    if reply.seq != s.client_next:
        return None
    ts_ok = s.client_ts and s.device_ts and reply.ts is not None
    snd_ws = s.client_ws if s.client_ws is not None and s.device_ws is not None else 0
    rcv_ws = s.device_ws if s.client_ws is not None and s.device_ws is not None else 0
    snd_wnd = reply.window << snd_ws
    return TcpCheckpoint(
        local_ip=s.vip, local_port=s.vport, remote_ip=s.client_ip, remote_port=s.client_port,
        snd_nxt=reply.ack, snd_una=reply.ack, rcv_nxt=reply.seq, send_queue=b"",
        recv_queue=b"", mss=s.client_mss, snd_wscale=snd_ws, rcv_wscale=rcv_ws, sack_ok=False,
        ts_ok=ts_ok, timestamp=((reply.ts[1] + TS_LEAD) % _M) if ts_ok else 0,
        window=TcpWindow(snd_wl1=reply.seq, snd_wnd=snd_wnd, max_window=snd_wnd,
                         rcv_wnd=RCV_WINDOW, rcv_wup=reply.seq))


def replay(core: http.HttpServer, data: bytes, skip: int, now: float) -> list[http.Action]:
    """The client's bytes into a fresh ``core``, less the first ``skip`` bytes of its answer:
    the actions that carry on from there (what a driver applies as usual)."""
    pending, out = list(core.receive(bytes(data), now)), []
    while pending:
        a = pending.pop(0)
        if skip and isinstance(a, http.SendBytes):
            out_bytes = a.data[skip:]
            skip = max(0, skip - len(a.data))
            if out_bytes:
                out.append(http.SendBytes(out_bytes))
        elif skip and isinstance(a, http.SendFile):
            taken = min(skip, a.length)
            skip -= taken
            if taken < a.length:
                out.append(http.SendFile(a.path, a.offset + taken, a.length - taken))
            pending = core.sent(taken, now) + pending
        elif not skip:
            out.append(a)
    return out
