# SPDX-License-Identifier: GPL-2.0-or-later
"""A client connection split by direction between two devices (seed 002 Figs. 7 and 8, D2.6).

One Linux socket cannot be split, so both devices serve the connection on ftsslab's own TCP
(``ftsslab.lab.tcp.Tcb``), each holding one half:

- :class:`ReceiveHalf` -- the device the client's segments reach. It takes the client's data
  and acknowledges it, but sends none: its TCB has nothing outstanding, and before each client
  segment its SND.UNA = SND.NXT moves up to the client's acknowledgment (the other device's
  bytes, acknowledged), so its pure ACKs carry an acceptable sequence number (the client's
  own last ACK, never below its RCV.WUP) and the client's ACKs are never "ACKs of unsent
  data". :meth:`ReceiveHalf.relay` is what goes to the other device by Update: the client's
  acknowledgment and window, and our RCV.NXT and window.
- :class:`SendHalf` -- the device that sends the data. Its TCB gets the client's ACKs as
  segments built from those Updates (Fig. 7 path (11)), so SND.UNA, the window, congestion
  control and retransmission run as usual; what it sends acknowledges the other device's
  RCV.NXT and advertises its window, not the TCB's stale ones.

When the half-handoff ends (Fig. 7: the first device's response is all acknowledged), the
receiving side's TCB is a whole connection already: SND.UNA = SND.NXT = the client's last
ACK, which is where the sender stopped.

:class:`SplitState` is the app state of the half-handoff's Open: what the TCP state block
lacks (the timestamp option state). Both cores are sans-IO: segments and ``now`` in,
segments out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ftsslab.lab.tcp import ACK, Tcb, TcbSnapshot, TcpSegment, TcpState, seq_after

_SPLIT = struct.Struct("!4sBII")
SPLIT_MAGIC = b"HALF"
SPLIT_SIZE = _SPLIT.size
_M = 1 << 32


@dataclass(frozen=True)
class SplitState:
    """The Open's app state for a half-handoff: the TCP timestamp state (RFC 7323) the other
    half must keep using, or the client's PAWS drops its segments."""

    ts_ok: bool
    ts_recent: int
    ts_offset: int

    def pack(self) -> bytes:
        return _SPLIT.pack(SPLIT_MAGIC, int(self.ts_ok), self.ts_recent, self.ts_offset)

    @classmethod
    def unpack(cls, data: bytes) -> SplitState | None:
        """None for anything that is not one (never raises)."""
        if len(data) < _SPLIT.size:
            return None
        magic, ts_ok, recent, offset = _SPLIT.unpack_from(data)
        if magic != SPLIT_MAGIC or ts_ok > 1:
            return None
        return cls(bool(ts_ok), recent, offset)

    @classmethod
    def of(cls, tcb: Tcb) -> SplitState:
        return cls(tcb.ts_ok, tcb.ts_recent if tcb.ts_ok else 0,
                   tcb.ts_offset % _M if tcb.ts_ok else 0)


def state_of(tcb: Tcb) -> dict:
    """The TCH state block (``tch_messages`` field names) of a live TCB."""
    return {"client_ip": tcb.remote[0], "client_port": tcb.remote[1],
            "cluster_ip": tcb.local[0], "cluster_port": tcb.local[1],
            "seq": tcb.snd_max, "ack": tcb.rcv_nxt, "snd_una": tcb.snd_una,
            "snd_wnd": tcb.snd_wnd, "rcv_wnd": max(0, tcb.rcvbuf - len(tcb.received)),
            "snd_wscale": tcb.snd_wscale, "rcv_wscale": tcb.rcv_wscale, "mss": tcb.mss}


def restore_tcb(state: dict, split: SplitState, now: float, **tcb_options) -> Tcb:
    """The other half's TCB from an Open's state block, live at once: nothing is outstanding
    (the first device sends the rest, Fig. 7, or drained first, Fig. 8). Its window probe is
    not sent: the segments of the half that sends carry the window."""
    seq = state["seq"]
    snap = TcbSnapshot((state["cluster_ip"], state["cluster_port"]),
                       (state["client_ip"], state["client_port"]), seq, seq, state["ack"],
                       b"", 0, b"", state["mss"], state["snd_wnd"], state["snd_wscale"],
                       state["rcv_wscale"], split.ts_ok, split.ts_recent, split.ts_offset)
    tcb = Tcb.restore(snap, **tcb_options)
    tcb.snd_wl1, tcb.snd_wl2 = state["ack"], seq
    tcb.leave_repair(now)
    return tcb


class ReceiveHalf:
    """The client's segments come here; the other device sends the data. ``relayed`` counts
    the Updates :meth:`relay` gave."""

    def __init__(self, tcb: Tcb, client_ack: int | None = None) -> None:
        self.tcb = tcb
        self.client_ack = tcb.snd_una if client_ack is None else client_ack
        self.client_wnd = tcb.snd_wnd
        self.relayed = 0
        self._told: tuple | None = None

    def on_segment(self, seg, now: float) -> list[TcpSegment]:
        """A client segment: its ACK moves our SND.UNA/SND.NXT (the other device's bytes),
        then the TCB takes its data."""
        tcb = self.tcb
        if seg.flags & ACK and seq_after(seg.ack, tcb.snd_max) and not tcb._out:
            tcb.snd_una = tcb.snd_nxt = tcb.snd_max = seg.ack
        if seg.flags & ACK and not seq_after(self.client_ack, seg.ack):
            self.client_ack = seg.ack
            self.client_wnd = seg.window << tcb.snd_wscale
        return tcb.on_segment(seg, now)

    def relay(self) -> dict | None:
        """The Update to the other device, when something in it changed since the last."""
        tcb = self.tcb
        wnd = max(0, tcb.rcvbuf - len(tcb.received))
        now = (self.client_ack, self.client_wnd, tcb.rcv_nxt, wnd)
        if now == self._told:
            return None
        self._told = now
        self.relayed += 1
        return {"snd_una": self.client_ack, "snd_wnd": self.client_wnd, "ack": tcb.rcv_nxt,
                "rcv_wnd": wnd, "seq": tcb.snd_max}


class SendHalf:
    """We send the data; the client's segments reach the other device, which relays their
    acknowledgments. ``relayed`` counts the Updates taken, ``acked`` the bytes they moved
    SND.UNA by, ``malformed`` those without the four numbers. An Update that repeats the
    last one (a keepalive) is no duplicate ACK: the receiving half relays changes only, so a
    loss is recovered by our RTO."""

    def __init__(self, tcb: Tcb) -> None:
        self.tcb = tcb
        self.rcv_nxt = tcb.rcv_nxt
        self.rcv_wnd: int | None = None
        self.relayed = self.acked = self.malformed = 0
        self._last: tuple | None = None

    def on_update(self, state: dict, now: float) -> list[TcpSegment]:
        """The other device's Update: the client's ACK as a segment to our TCB."""
        tcb = self.tcb
        if tcb.state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_1,
                             TcpState.CLOSING, TcpState.LAST_ACK):
            return []
        keys = ("snd_una", "snd_wnd", "ack", "rcv_wnd")
        if any(not isinstance(state.get(k), int) for k in keys):
            self.malformed += 1
            return []
        if (got := tuple(state[k] for k in keys)) == self._last:
            return []
        self._last = got
        if not seq_after(self.rcv_nxt, state["ack"]):
            self.rcv_nxt, self.rcv_wnd = state["ack"], state["rcv_wnd"]
        una = tcb.snd_una
        out = self._ack(state["snd_una"] % _M, min(0xFFFF, state["snd_wnd"] >> tcb.snd_wscale),
                        now)
        self.relayed += 1
        self.acked += (tcb.snd_una - una) % _M
        return out

    def on_client_ack(self, seg, now: float) -> list[TcpSegment]:
        """A client segment that still reached us (the switch had not moved yet): only its
        ACK is ours, its data is the other device's."""
        return self._ack(seg.ack, seg.window, now) if seg.flags & ACK else []

    def _ack(self, ack: int, window: int, now: float) -> list[TcpSegment]:
        tcb = self.tcb
        seg = TcpSegment(tcb.remote[0], tcb.local[0], tcb.remote[1], tcb.local[1], tcb.rcv_nxt,
                         ack, ACK, window)
        return self.outgoing(tcb.on_segment(seg, now))

    def outgoing(self, segs: list[TcpSegment]) -> list[TcpSegment]:
        """Our segments with the receiving device's RCV.NXT and window."""
        if self.rcv_wnd is None:
            return segs
        tcb = self.tcb
        field = min(0xFFFF, self.rcv_wnd >> tcb.rcv_wscale)
        return [s._replace(ack=self.rcv_nxt, window=field) if s.flags & ACK else s
                for s in segs]

    @property
    def drained(self) -> bool:
        """Everything written was acknowledged."""
        return not self.tcb.unacked
