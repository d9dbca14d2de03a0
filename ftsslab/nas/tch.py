# SPDX-License-Identifier: GPL-2.0-or-later
"""The first embodiment's TCH session (seed 002, Figs. 4A/4B/5) as sans-IO cores.

A TCH session is a TCP connection from the first device (own ip, an internal port) to the second
device (own ip, port P1 of the client session). :class:`TchFirst` and :class:`TchSecond` (behind
:class:`TchListener`, which demultiplexes by peer) take segments, application calls and a clock
value ``now`` and return actions; they never touch sockets or time. Fig. 5's exchange::

    first                                      second
    SYN+HND, endpoint(client port, ip) ------>
                                      <------ SYN/ACK+HND
    ACK, state bytes (<= mss each) ---------->         (cumulatively acknowledged)
    SET, NOP NOP update(seq, ack) EOL ------->         Restore -> app restores -> restored()
      Reprogram -> app: XAP, ack  <---------- SET+ACK  (retransmitted until END)
      switch_updated()
    END ------------------------------------->         Morph: the app serves the client
                                      <------ FIN
    FIN ------------------------------------->

Decisions the seed leaves open:

* SET and END take no sequence space (like a pure ACK), so tshark's analysis of the capture
  stays clean. A control segment counts only at ``seq == RCV.NXT``; duplicates are recognised
  by state: the first's SET again while SET_RCVD means our SET was lost (resend it), the second's
  SET again after END means END was lost (resend END).
* Every segment of the session carries HND ("this message is part of a TCH session"), except
  the listener's RST to a SYN without HND.
* The state bytes are sent and acknowledged before SET (D2.2), so the second restores from
  complete state; the update option carries SND.NXT/RCV.NXT of the client session.
* "The packet which set up the current state is retransmitted" (L266) after the RTO, doubling
  it each time; after ``max_retries`` resends the core gives up. After END the first device
  processes nothing but the second's SET and FIN (D2.4); without either it gives up after the
  second's whole retry schedule, as handed off (the switch points at the second device).
  The second device probes a session silent that long in ESTABLISHED (a keepalive: an old
  sequence number, which the first answers with ACK) and closes it if nothing answers.
* ``Outcome`` says what the application does with the client session: HANDED_OFF (the second
  serves it), ABANDONED (nothing was frozen: keep serving), RESUME (restore the own checkpoint,
  the seed's setsockopt(0)), ABORTED (the client closed during the handoff, or the second
  device's half died before END: discard what was restored).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from ftsslab.fast.tch import TCH_END, TCH_HND, TCH_SET

from .segment import ACK, FIN, RST, SYN, Segment

MAX_STATE = 1024 * 1024
"""Largest application checkpoint a handoff carries (bytes): a device's send queue (its
256 KiB SO_SNDBUF, which the kernel doubles) after the drain limit, the receive queue and
the HTTP state fit."""
WINDOW = 65535
MSS = 1460
_M = 1 << 32


def _after(a: int, b: int) -> bool:
    """Sequence number ``a`` is later than ``b`` (RFC 1982 arithmetic)."""
    return 0 < (a - b) % _M < 1 << 31


class ProtocolError(Exception):
    """An event the TCH state machine does not allow in its current state."""


class TchProtocolError(ProtocolError):
    """The application called a TCH core at the wrong moment (e.g. handoff() before
    ESTABLISHED). Segments from the network never raise: those are ignored."""


class Outcome(Enum):
    """How a session ended, as what the application does with the client session."""

    HANDED_OFF = "handed-off"  # the second device serves it (first: drop the TCB silently)
    ABANDONED = "abandoned"  # nothing was frozen: the first device keeps serving
    RESUME = "resume"  # frozen on the first device: restore its own checkpoint
    ABORTED = "aborted"  # the client closed, or (second) the session died before END


@dataclass(frozen=True)
class Send:
    segment: Segment


@dataclass(frozen=True)
class StateChanged:
    """A transition (also to the same state: a resend); ``peer`` is the other device's
    (ip, port) on the TCH connection."""

    role: str
    old: Enum
    new: Enum
    why: str
    peer: tuple[str, int]

    def __str__(self) -> str:
        return f"{self.role} {self.old.name}->{self.new.name} ({self.why})"


@dataclass(frozen=True)
class Reprogram:
    """The second device restored the session: point the switch entry of ``client``
    (ip, port) at it (XAP), then call ``switch_updated``."""

    client: tuple[str, int]
    peer: tuple[str, int]


@dataclass(frozen=True)
class Restore:
    """Restore the client session (repair mode) from ``state``; ``update`` is the update
    option's (seq, ack); then call ``restored`` or ``restore_failed``."""

    client: tuple[str, int]
    update: tuple[int, int]
    state: bytes
    peer: tuple[str, int]


@dataclass(frozen=True)
class Morph:
    """END arrived: leave repair mode and serve ``client``."""

    client: tuple[str, int]
    peer: tuple[str, int]


@dataclass(frozen=True)
class Finished:
    """The session is over (CLOSED); the core ignores or answers stray segments after it."""

    outcome: Outcome
    reason: str
    peer: tuple[str, int]


Action = Send | StateChanged | Reprogram | Restore | Morph | Finished


class _Core:
    """What both ends share: sequence variables, the retransmission timer, the table walk."""

    role: str
    table: dict
    events: type[Enum]  # the role's event enum (TIMEOUT, GIVE_UP)
    resends: dict  # state -> what its RTO resends (for the run log)
    state: Enum

    def __init__(self, local: tuple[str, int], peer: tuple[str, int], isn: int, rto: float,
                 max_retries: int) -> None:
        self.local, self.peer = local, peer
        self.iss = isn % _M
        self.snd_una = self.snd_nxt = self.iss
        self.rcv_nxt = 0
        self.rto, self.max_retries = rto, max_retries
        # longer than the peer's whole retry schedule (rto * (2**(max_retries+1) - 1)): how long
        # a silent peer is waited for where nothing is outstanding (AWAIT_FIN, a keepalive)
        self.patience = rto * (1 << (max_retries + 2))
        self.tries = 0
        self.deadline: float | None = None
        self.outcome: Outcome | None = None

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []
        if self.tries >= self.max_retries or (self.state, self.events.TIMEOUT) not in self.table:
            return self._give_up()
        self.tries += 1
        self.deadline = now + self.rto * (1 << self.tries)
        why = f"RTO #{self.tries}: resend {self.resends[self.state]}"
        return self._fire(self.events.TIMEOUT, why) + self._resend(now)

    def _arm(self, now: float) -> None:
        self.tries, self.deadline = 0, now + self.rto

    def _fire(self, event: Enum, why: str) -> list[Action]:
        new = self.table.get((self.state, event))
        if new is None:
            raise TchProtocolError(f"{self.role} device: {event.value} while {self.state.name}")
        old, self.state = self.state, new
        return [StateChanged(self.role, old, new, why, self.peer)]

    def _can(self, event: Enum) -> bool:
        return (self.state, event) in self.table

    def _seg(self, flags: int, tch: int = TCH_HND, seq: int | None = None, **kw) -> Send:
        return Send(Segment(self.local[0], self.peer[0], self.local[1], self.peer[1],
                            self.snd_nxt if seq is None else seq, self.rcv_nxt, flags, tch,
                            WINDOW, **kw))

    def _ours(self, seg: Segment) -> bool:
        return (seg.src, seg.sport, seg.dst, seg.dport) == (*self.peer, *self.local)

    def _finish(self, outcome: Outcome, reason: str) -> list[Action]:
        self.outcome, self.deadline = outcome, None
        return [Finished(outcome, reason, self.peer)]


# --- the first device ---------------------------------------------------------------------


class FirstState(Enum):
    IDLE = "idle"  # constructed, open() not called yet
    SYN_SENT = "syn-sent"
    ESTABLISHED = "established"  # the seed's ESTABLISHED 508; a predictive session waits here
    TRANSFER = "transfer"  # client flow frozen, checkpoint bytes on their way
    SET_SENT = "set-sent"  # the seed's SET_SENT 522
    SWITCHING = "switching"  # the second's SET arrived; waiting for the switch (XAP ack)
    AWAIT_FIN = "await-fin"  # END sent; processes nothing but SET and FIN (D2.4)
    CLOSED = "closed"  # the seed's CLOSED 500; ``outcome`` says how


class FirstEvent(Enum):
    OPEN = "open()"
    SYNACK = "SYN/ACK+HND"
    NO_HND = "SYN/ACK without HND"
    HANDOFF = "handoff()"
    STATE_ACKED = "state acknowledged"
    PEER_SET = "SET from the second device"
    SWITCH_UPDATED = "switch_updated()"
    PEER_FIN = "FIN from the second device"
    PEER_RESET = "RST (or an early FIN) from the second device"
    TIMEOUT = "RTO"
    GIVE_UP = "retries exhausted"
    CLIENT_CLOSED = "client_closed()"
    RESUME = "resume()"
    STRAY = "segment after an aborted session"


_F, _FE = FirstState, FirstEvent
_FIRST_LIVE = (_F.SYN_SENT, _F.ESTABLISHED, _F.TRANSFER, _F.SET_SENT, _F.SWITCHING)
_FROZEN = (_F.TRANSFER, _F.SET_SENT, _F.SWITCHING, _F.AWAIT_FIN)

FIRST_TRANSITIONS: dict[tuple[FirstState, FirstEvent], FirstState] = {
    (_F.IDLE, _FE.OPEN): _F.SYN_SENT,
    (_F.SYN_SENT, _FE.SYNACK): _F.ESTABLISHED,
    (_F.SYN_SENT, _FE.NO_HND): _F.CLOSED,
    (_F.SYN_SENT, _FE.TIMEOUT): _F.SYN_SENT,
    (_F.SYN_SENT, _FE.GIVE_UP): _F.CLOSED,
    (_F.ESTABLISHED, _FE.SYNACK): _F.ESTABLISHED,  # our ACK was lost: resend it
    (_F.ESTABLISHED, _FE.HANDOFF): _F.TRANSFER,
    (_F.TRANSFER, _FE.STATE_ACKED): _F.SET_SENT,
    (_F.TRANSFER, _FE.TIMEOUT): _F.TRANSFER,
    (_F.TRANSFER, _FE.GIVE_UP): _F.CLOSED,
    (_F.SET_SENT, _FE.PEER_SET): _F.SWITCHING,
    (_F.SET_SENT, _FE.TIMEOUT): _F.SET_SENT,
    (_F.SET_SENT, _FE.GIVE_UP): _F.CLOSED,
    (_F.SWITCHING, _FE.SWITCH_UPDATED): _F.AWAIT_FIN,
    (_F.AWAIT_FIN, _FE.PEER_SET): _F.AWAIT_FIN,  # END was lost: resend it
    (_F.AWAIT_FIN, _FE.PEER_FIN): _F.CLOSED,
    (_F.AWAIT_FIN, _FE.GIVE_UP): _F.CLOSED,
    (_F.AWAIT_FIN, _FE.PEER_RESET): _F.CLOSED,
    (_F.CLOSED, _FE.PEER_FIN): _F.CLOSED,  # handed off, our FIN was lost: resend it
    (_F.CLOSED, _FE.STRAY): _F.CLOSED,  # aborted: answer RST
    **{(s, e): _F.CLOSED for s in _FIRST_LIVE
       for e in (_FE.PEER_RESET, _FE.CLIENT_CLOSED, _FE.RESUME)},
}


class TchFirst(_Core):
    """The first device's end: it opens the session, sends the checkpoint and SET, reprograms
    the switch when the second device has restored, and sends END.

    ``client`` is the client session's (ip, port); the endpoint option carries it.
    """

    role, table, events = "first", FIRST_TRANSITIONS, FirstEvent
    resends = {_F.SYN_SENT: "SYN", _F.TRANSFER: "state", _F.SET_SENT: "SET"}

    def __init__(self, local: tuple[str, int], peer: tuple[str, int], client: tuple[str, int],
                 isn: int, *, rto: float = 0.2, max_retries: int = 5, mss: int = MSS) -> None:
        super().__init__(local, peer, isn, rto, max_retries)
        self.client, self.mss = client, mss
        self.state = _F.IDLE
        self.peer_window = WINDOW
        self.update: tuple[int, int] | None = None
        self._checkpoint = b""
        self._base = self._snd_max = 0  # sequence number of the first state byte; highest sent

    # the application's calls

    def open(self, now: float) -> list[Action]:
        acts = self._fire(_FE.OPEN, "open the TCH session")
        self.snd_nxt = self._snd_max = (self.iss + 1) % _M
        self._arm(now)
        return [*acts, self._syn()]

    def handoff(self, state: bytes, update: tuple[int, int], now: float) -> list[Action]:
        """The client flow is frozen and checkpointed: send ``state``, then SET with
        ``update`` = (SND.NXT, RCV.NXT) of the client session."""
        if len(state) > MAX_STATE:
            raise ValueError(f"state is {len(state)} bytes; a handoff carries at most {MAX_STATE}")
        if len(update) != 2 or not all(0 <= v < _M for v in update):
            raise ValueError(f"update must be two 32-bit numbers, not {update!r}")
        acts = self._fire(_FE.HANDOFF, f"handoff: {len(state)} state bytes")
        self._checkpoint, self.update = bytes(state), (update[0], update[1])
        self._base = self._snd_max = self.snd_una = self.snd_nxt
        self._arm(now)
        return acts + self._transmit(now)

    def switch_updated(self, now: float) -> list[Action]:
        """The switch acknowledged the new entry: END completes the handoff."""
        acts = self._fire(_FE.SWITCH_UPDATED, "switch updated: send END")
        self.deadline = now + self.patience
        return [*acts, self._seg(ACK, TCH_HND | TCH_END)]

    def resume(self, now: float) -> list[Action]:
        """setsockopt(0): cancel the handoff any time before END."""
        return self._close(_FE.RESUME, "resume() called", reset=True)

    def client_closed(self, now: float) -> list[Action]:
        """The client sent FIN or RST during the handoff (B2.33): abort it."""
        return self._close(_FE.CLIENT_CLOSED, "the client closed during the handoff", reset=True)

    # the network's

    def on_segment(self, seg: Segment, now: float) -> list[Action]:
        if not self._ours(seg):
            return []
        if self.state is _F.CLOSED:
            return self._closed(seg)
        if seg.flags & RST:
            if self.state is _F.SYN_SENT:
                ok = bool(seg.flags & ACK) and seg.ack == self.snd_nxt
            else:
                ok = seg.seq == self.rcv_nxt
            return self._close(_FE.PEER_RESET, "RST from the second device") if ok else []
        if self.state is _F.SYN_SENT:
            return self._syn_sent(seg)
        if not seg.tch & TCH_HND:
            return []  # not part of the TCH session
        if seg.flags & SYN:
            if self._can(_FE.SYNACK) and (seg.seq + 1) % _M == self.rcv_nxt:
                return [*self._fire(_FE.SYNACK, "SYN/ACK again: resend ACK"), self._seg(ACK)]
            return []
        if _after(self.rcv_nxt, seg.seq) and self.state in _FIRST_LIVE:
            return [self._seg(ACK)]  # an old segment, or the second's keepalive probe
        if seg.flags & FIN and seg.seq == self.rcv_nxt:
            if self.state is not _F.AWAIT_FIN:
                return self._close(_FE.PEER_RESET, "FIN before END", reset=True)
            self.rcv_nxt = (self.rcv_nxt + 1) % _M
            acts = self._fire(_FE.PEER_FIN, "FIN from the second device: close")
            acts.append(self._seg(FIN | ACK))
            self.snd_nxt = (self.snd_nxt + 1) % _M
            return acts + self._finish(Outcome.HANDED_OFF, "the second device serves the client")
        if self.state is _F.TRANSFER:
            return self._acked(seg, now) if seg.flags & ACK else []
        if seg.seq != self.rcv_nxt or not seg.flags & ACK or seg.ack != self.snd_nxt:
            return []
        if seg.tch & TCH_SET:
            if self.state is _F.SET_SENT:
                self.deadline = None  # the app's XAP exchange has its own timeout
                acts = self._fire(_FE.PEER_SET, "SET from the second device: reprogram")
                return [*acts, Reprogram(self.client, self.peer)]
            if self.state is _F.AWAIT_FIN:
                acts = self._fire(_FE.PEER_SET, "SET again: END was lost, resend END")
                return [*acts, self._seg(ACK, TCH_HND | TCH_END)]
        return []

    # internals

    def _syn(self) -> Send:
        return self._seg(SYN, seq=self.iss, endpoint=(self.client[1], self.client[0]))

    def _syn_sent(self, seg: Segment) -> list[Action]:
        if seg.flags & (SYN | ACK) != SYN | ACK or seg.ack != self.snd_nxt:
            return []
        self.rcv_nxt, self.peer_window = (seg.seq + 1) % _M, seg.window
        self.snd_una = self.snd_nxt
        if not seg.tch & TCH_HND:
            return self._close(_FE.NO_HND, "SYN/ACK without HND: no TCH on the second device",
                               reset=True)
        self.deadline = None
        return [*self._fire(_FE.SYNACK, "SYN/ACK+HND"), self._seg(ACK)]

    def _transmit(self, now: float, probe: bool = False) -> list[Action]:
        """State bytes from SND.NXT as far as the peer's window allows (at least one segment
        when ``probe``); SET once all of them are acknowledged."""
        if self.snd_una == (self._base + len(self._checkpoint)) % _M:
            self._arm(now)
            acts = self._fire(_FE.STATE_ACKED, "state acknowledged: send SET")
            return [*acts, self._set()]
        out: list[Action] = []
        while True:
            off = (self.snd_nxt - self._base) % _M
            room = self.peer_window - (self.snd_nxt - self.snd_una) % _M
            if off >= len(self._checkpoint) or (room <= 0 and not (probe and not out)):
                break
            chunk = self._checkpoint[off:off + max(1, min(self.mss, room))]
            out.append(self._seg(ACK, payload=chunk))
            self.snd_nxt = (self.snd_nxt + len(chunk)) % _M
            if _after(self.snd_nxt, self._snd_max):
                self._snd_max = self.snd_nxt
        return out

    def _acked(self, seg: Segment, now: float) -> list[Action]:
        flight = (self._snd_max - self.snd_una) % _M
        if not 0 < (seg.ack - self.snd_una) % _M <= flight:
            return []
        self.snd_una, self.peer_window = seg.ack, seg.window
        if _after(seg.ack, self.snd_nxt):
            self.snd_nxt = seg.ack
        self._arm(now)
        return self._transmit(now)

    def _set(self) -> Send:
        return self._seg(ACK, TCH_HND | TCH_SET, update=self.update)

    def _resend(self, now: float) -> list[Action]:
        if self.state is _F.SYN_SENT:
            return [self._syn()]
        if self.state is _F.SET_SENT:
            return [self._set()]
        self.snd_nxt = self.snd_una  # TRANSFER: go back N
        return self._transmit(now, probe=True)

    def _give_up(self) -> list[Action]:
        why = {_F.SYN_SENT: "no SYN/ACK", _F.TRANSFER: "state not acknowledged",
               _F.SET_SENT: "no SET from the second device",
               _F.AWAIT_FIN: "no FIN after END: taken as handed off"}[self.state]
        return self._close(_FE.GIVE_UP, why, reset=self.state is not _F.AWAIT_FIN)

    def _close(self, event: FirstEvent, why: str, reset: bool = False) -> list[Action]:
        old = self.state
        acts = self._fire(event, why)
        if reset:  # at the highest sequence number sent: inside the second's window
            acts.append(self._seg(RST, seq=self._snd_max))
        if event is _FE.CLIENT_CLOSED:
            outcome = Outcome.ABORTED
        elif old is _F.AWAIT_FIN and event is not _FE.PEER_RESET:
            outcome = Outcome.HANDED_OFF
        else:
            outcome = Outcome.RESUME if old in _FROZEN else Outcome.ABANDONED
        return acts + self._finish(outcome, why)

    def _closed(self, seg: Segment) -> list[Action]:
        if self.outcome is Outcome.HANDED_OFF:
            if seg.flags & FIN and (seg.seq + 1) % _M == self.rcv_nxt:
                acts = self._fire(_FE.PEER_FIN, "FIN again: our FIN was lost, resend it")
                return [*acts, self._seg(FIN | ACK, seq=(self.snd_nxt - 1) % _M)]
            return []
        if seg.flags & RST:
            return []
        return [*self._fire(_FE.STRAY, "segment after the abort: RST"), Send(_reset_for(seg))]


# --- the second device --------------------------------------------------------------------


class SecondState(Enum):
    LISTEN = "listen"
    SYN_RCVD = "syn-rcvd"
    ESTABLISHED = "established"
    RESTORING = "restoring"  # SET arrived; the application restores the duplicate TCB
    SET_RCVD = "set-rcvd"  # the seed's SET_RCVD 520: our SET is retransmitted until END
    MORPH = "morph"  # the seed's MORPH 524: the client session is ours
    FIN_WAIT = "fin-wait"  # the seed's FIN_WAIT 530
    CLOSED = "closed"


class SecondEvent(Enum):
    SYN = "SYN+HND with endpoint"
    ACK = "handshake ACK"
    SET = "SET with update"
    MALFORMED = "SET without update, or state over the limit"
    RESTORED = "restored()"
    RESTORE_FAILED = "restore_failed()"
    END = "END"
    FIN_SENT = "FIN sent"
    PEER_FIN = "FIN from the first device"
    PEER_RESET = "RST (or an early FIN) from the first device"
    TIMEOUT = "RTO"
    GIVE_UP = "retries exhausted"
    CLIENT_CLOSED = "client_closed()"


_S, _SE = SecondState, SecondEvent
_SECOND_LIVE = (_S.SYN_RCVD, _S.ESTABLISHED, _S.RESTORING, _S.SET_RCVD)

SECOND_TRANSITIONS: dict[tuple[SecondState, SecondEvent], SecondState] = {
    (_S.LISTEN, _SE.SYN): _S.SYN_RCVD,
    (_S.SYN_RCVD, _SE.SYN): _S.SYN_RCVD,  # SYN again: our SYN/ACK was lost, resend it
    (_S.SYN_RCVD, _SE.ACK): _S.ESTABLISHED,
    (_S.SYN_RCVD, _SE.TIMEOUT): _S.SYN_RCVD,
    (_S.SYN_RCVD, _SE.GIVE_UP): _S.CLOSED,
    (_S.ESTABLISHED, _SE.TIMEOUT): _S.ESTABLISHED,  # silent too long: keepalive probe
    (_S.ESTABLISHED, _SE.GIVE_UP): _S.CLOSED,
    (_S.ESTABLISHED, _SE.SET): _S.RESTORING,
    (_S.ESTABLISHED, _SE.MALFORMED): _S.CLOSED,
    (_S.RESTORING, _SE.RESTORED): _S.SET_RCVD,
    (_S.RESTORING, _SE.RESTORE_FAILED): _S.CLOSED,
    (_S.SET_RCVD, _SE.SET): _S.SET_RCVD,  # the first's SET again: ours was lost, resend it
    (_S.SET_RCVD, _SE.END): _S.MORPH,
    (_S.SET_RCVD, _SE.TIMEOUT): _S.SET_RCVD,
    (_S.SET_RCVD, _SE.GIVE_UP): _S.CLOSED,
    (_S.MORPH, _SE.FIN_SENT): _S.FIN_WAIT,
    (_S.FIN_WAIT, _SE.PEER_FIN): _S.CLOSED,
    (_S.FIN_WAIT, _SE.TIMEOUT): _S.FIN_WAIT,
    (_S.FIN_WAIT, _SE.GIVE_UP): _S.CLOSED,
    (_S.FIN_WAIT, _SE.PEER_RESET): _S.CLOSED,
    **{(s, e): _S.CLOSED for s in _SECOND_LIVE for e in (_SE.PEER_RESET, _SE.CLIENT_CLOSED)},
}


class TchSecond(_Core):
    """The second device's end of one TCH session (made by :class:`TchListener`)."""

    role, table, events = "second", SECOND_TRANSITIONS, SecondEvent
    resends = {_S.SYN_RCVD: "SYN/ACK", _S.ESTABLISHED: "keepalive probe", _S.SET_RCVD: "SET",
               _S.FIN_WAIT: "FIN"}

    def __init__(self, local: tuple[str, int], peer: tuple[str, int], isn: int, *,
                 rto: float = 0.2, max_retries: int = 5) -> None:
        super().__init__(local, peer, isn, rto, max_retries)
        self.state = _S.LISTEN
        self.client: tuple[str, int] | None = None
        self.update: tuple[int, int] | None = None
        self.irs = 0
        self._checkpoint = bytearray()

    def restored(self, now: float) -> list[Action]:
        """The duplicate TCB is in place (repair mode): answer SET+ACK."""
        acts = self._fire(_SE.RESTORED, "restored: send SET")
        self._arm(now)
        return [*acts, self._set()]

    def restore_failed(self, why: str, now: float) -> list[Action]:
        return self._close(_SE.RESTORE_FAILED, f"restore failed: {why}", reset=True)

    def client_closed(self, now: float) -> list[Action]:
        return self._close(_SE.CLIENT_CLOSED, "the client closed during the handoff", reset=True)

    def on_segment(self, seg: Segment, now: float) -> list[Action]:
        if not self._ours(seg) or self.state is _S.CLOSED:
            return []
        if self.state is _S.LISTEN:
            return self._listen(seg, now)
        if seg.flags & RST:
            if (seg.seq - self.rcv_nxt) % _M <= WINDOW:
                return self._close(_SE.PEER_RESET, "RST from the first device")
            return []
        if not seg.tch & TCH_HND:
            return []
        if seg.flags & SYN:
            if self.state is _S.SYN_RCVD and seg.seq == self.irs and not seg.flags & ACK:
                return [*self._fire(_SE.SYN, "SYN again: resend SYN/ACK"), self._synack()]
            return []
        acts: list[Action] = []
        if self.state is _S.SYN_RCVD:
            if not seg.flags & ACK or seg.ack != self.snd_nxt:
                return []
            acts = self._fire(_SE.ACK, "handshake complete")
        if self.state is _S.ESTABLISHED:
            self.tries, self.deadline = 0, now + self.patience
        if self.state is _S.ESTABLISHED and seg.payload:
            acts += self._take(seg)
            if self.state is _S.CLOSED:
                return acts
        if (seg.seq + len(seg.payload)) % _M != self.rcv_nxt:
            return acts
        return acts + self._control(seg, now)

    def _listen(self, seg: Segment, now: float) -> list[Action]:
        if seg.flags & (SYN | ACK | RST) != SYN or not seg.tch & TCH_HND or seg.endpoint is None:
            return []
        self.irs, self.rcv_nxt = seg.seq, (seg.seq + 1) % _M
        self.client = (seg.endpoint[1], seg.endpoint[0])
        self.snd_nxt = (self.iss + 1) % _M
        self._arm(now)
        acts = self._fire(_SE.SYN, f"SYN+HND for client {self.client[0]}:{self.client[1]}")
        return [*acts, self._synack()]

    def _take(self, seg: Segment) -> list[Action]:
        """In-order state bytes (a partial overlap gives its new part); anything else is
        dropped. Every data segment is answered with the cumulative ACK."""
        off = (self.rcv_nxt - seg.seq) % _M
        if off < len(seg.payload):
            new = seg.payload[off:]
            if len(self._checkpoint) + len(new) > MAX_STATE:
                return self._close(_SE.MALFORMED, f"state over {MAX_STATE} bytes", reset=True)
            self._checkpoint += new
            self.rcv_nxt = (self.rcv_nxt + len(new)) % _M
        return [self._seg(ACK)]

    def _control(self, seg: Segment, now: float) -> list[Action]:
        """SET, END and FIN, each only at RCV.NXT."""
        if seg.flags & FIN:
            if self.state is _S.FIN_WAIT:
                if seg.ack != self.snd_nxt:
                    return []
                self.rcv_nxt = (self.rcv_nxt + 1) % _M
                return self._close(_SE.PEER_FIN, "FIN from the first device")
            if self.state in _SECOND_LIVE:
                return self._close(_SE.PEER_RESET, "FIN before END", reset=True)
            return []
        if seg.tch & TCH_SET:
            if self.state is _S.ESTABLISHED:
                if seg.update is None:
                    return self._close(_SE.MALFORMED, "SET without update option", reset=True)
                self.update, self.deadline = seg.update, None  # the app restores now
                acts = self._fire(_SE.SET, "SET with update: restore")
                state = bytes(self._checkpoint)
                return [*acts, Restore(self.client, self.update, state, self.peer)]
            if self.state is _S.SET_RCVD:
                return [*self._fire(_SE.SET, "SET again: resend SET"), self._set()]
            return []
        if seg.tch & TCH_END and self.state is _S.SET_RCVD and seg.ack == self.snd_nxt:
            acts = self._fire(_SE.END, "END: morph into the client session")
            acts.append(Morph(self.client, self.peer))
            acts += self._fire(_SE.FIN_SENT, "close the TCH session")
            acts.append(self._seg(FIN | ACK))
            self.snd_nxt = (self.snd_nxt + 1) % _M
            self._arm(now)
            return acts
        return []

    def _synack(self) -> Send:
        return self._seg(SYN | ACK, seq=self.iss)

    def _set(self) -> Send:
        return self._seg(ACK, TCH_HND | TCH_SET)

    def _resend(self, now: float) -> list[Action]:
        if self.state is _S.SYN_RCVD:
            return [self._synack()]
        if self.state is _S.ESTABLISHED:  # an old sequence number: the first answers ACK
            return [self._seg(ACK, seq=(self.snd_nxt - 1) % _M)]
        if self.state is _S.SET_RCVD:
            return [self._set()]
        return [self._seg(FIN | ACK, seq=(self.snd_nxt - 1) % _M)]  # FIN_WAIT

    def _give_up(self) -> list[Action]:
        why = {_S.SYN_RCVD: "handshake not completed", _S.SET_RCVD: "no END",
               _S.ESTABLISHED: "the first device went silent",
               _S.FIN_WAIT: "no FIN from the first device"}[self.state]
        return self._close(_SE.GIVE_UP, why, reset=self.state is not _S.FIN_WAIT)

    def _close(self, event: SecondEvent, why: str, reset: bool = False) -> list[Action]:
        old = self.state
        acts = self._fire(event, why)
        if reset:
            acts.append(self._seg(RST | ACK))
        handed = old in (_S.MORPH, _S.FIN_WAIT)
        return acts + self._finish(Outcome.HANDED_OFF if handed else Outcome.ABORTED, why)


def _reset_for(seg: Segment) -> Segment:
    """RFC 793's answer to a segment no connection takes (HND kept if it had it)."""
    if seg.flags & ACK:
        seq, ack, flags = seg.ack, 0, RST
    else:
        seq, flags = 0, RST | ACK
        ack = (seg.seq + len(seg.payload) + bool(seg.flags & SYN) + bool(seg.flags & FIN)) % _M
    return Segment(seg.dst, seg.src, seg.dport, seg.sport, seq, ack, flags, seg.tch & TCH_HND,
                   window=0)


def _default_isn(seg: Segment, opened: int) -> int:
    """Deterministic (sans-IO) yet different for every session, also for an old duplicate
    SYN of a finished one: the peer's ISN and a per-listener counter feed a hash."""
    key = f"{seg.src}:{seg.sport}:{seg.seq}:{opened}".encode()
    return int.from_bytes(hashlib.blake2s(key, digest_size=4).digest(), "big")


class TchListener:
    """The second device's TCH port (own ip, P1): every segment for it, demultiplexed by the
    peer's (ip, port). A SYN with HND and an endpoint option opens a :class:`TchSecond`; a SYN
    without either is answered with RST and leaves no session; other segments of unknown peers
    are dropped. Finished sessions are forgotten."""

    def __init__(self, ip: str, port: int, *, rto: float = 0.2, max_retries: int = 5,
                 isn: Callable[[Segment, int], int] = _default_isn) -> None:
        self.local = (ip, port)
        self.rto, self.max_retries, self._isn = rto, max_retries, isn
        self.sessions: dict[tuple[str, int], TchSecond] = {}
        self._opened = 0

    def on_segment(self, seg: Segment, now: float) -> list[Action]:
        if (seg.dst, seg.dport) != self.local:
            return []
        peer = (seg.src, seg.sport)
        if (session := self.sessions.get(peer)) is not None:
            return self._reap(peer, session.on_segment(seg, now))
        if seg.flags & (SYN | ACK | RST) != SYN:
            return []
        if not seg.tch & TCH_HND or seg.endpoint is None:
            return [Send(_reset_for(seg))]  # B2.19/B2.20: no TCH session, no TCB
        self._opened += 1
        session = TchSecond(self.local, peer, self._isn(seg, self._opened), rto=self.rto,
                            max_retries=self.max_retries)
        self.sessions[peer] = session
        return self._reap(peer, session.on_segment(seg, now))

    def next_deadline(self) -> float | None:
        return min((d for s in self.sessions.values() if (d := s.deadline) is not None),
                   default=None)

    def on_timer(self, now: float) -> list[Action]:
        return [a for peer, s in list(self.sessions.items())
                for a in self._reap(peer, s.on_timer(now))]

    def restored(self, peer: tuple[str, int], now: float) -> list[Action]:
        return self._reap(peer, self._session(peer).restored(now))

    def restore_failed(self, peer: tuple[str, int], why: str, now: float) -> list[Action]:
        return self._reap(peer, self._session(peer).restore_failed(why, now))

    def client_closed(self, peer: tuple[str, int], now: float) -> list[Action]:
        return self._reap(peer, self._session(peer).client_closed(now))

    def _session(self, peer: tuple[str, int]) -> TchSecond:
        if (session := self.sessions.get(peer)) is None:
            raise TchProtocolError(f"no TCH session with {peer[0]}:{peer[1]}")
        return session

    def _reap(self, peer: tuple[str, int], actions: list[Action]) -> list[Action]:
        if self.sessions[peer].state is _S.CLOSED:
            del self.sessions[peer]
        return actions


class TchPair:
    """A first device and a listener back to back on a virtual clock (tests, the sim backend).

    It plays both applications: ``handoff(state, update)`` once ESTABLISHED, ``switch_updated``
    on Reprogram, ``restored`` on Restore. ``net(segment)`` is what the wire makes of each
    segment sent: (delay, segment) pairs -- none drops it, two duplicate it, a changed segment
    tampers with it. ``wire`` lists every segment sent (before the net), ``log`` every other
    action of both sides, in order.
    """

    def __init__(self, first: TchFirst, listener: TchListener, state: bytes = b"",
                 update: tuple[int, int] = (0, 0), *,
                 net: Callable[[Segment], Iterable[tuple[float, Segment]]] | None = None) -> None:
        self.first, self.listener, self.state, self.update = first, listener, state, update
        self.net = net or (lambda seg: [(0.001, seg)])
        self.now = 0.0
        self.wire: list[tuple[float, Segment]] = []
        self.log: list[Action] = []
        self._flight: list[tuple[float, int, Segment]] = []
        self._order = itertools.count()

    def run(self, until: float = 100.0) -> None:
        """Until nothing is left to do (or the clock passes ``until``)."""
        if self.first.state is _F.IDLE:
            self._apply(self.first.open(self.now))
        while True:
            due = [t for t in (self._flight[0][0] if self._flight else None,
                               self.first.next_deadline(), self.listener.next_deadline())
                   if t is not None]
            if not due or min(due) > until:
                return
            self.now = max(self.now, min(due))
            if self._flight and self._flight[0][0] <= self.now:
                seg = heapq.heappop(self._flight)[2]
                to_second = (seg.dst, seg.dport) == self.listener.local
                core = self.listener if to_second else self.first
                self._apply(core.on_segment(seg, self.now))
            else:
                self._apply(self.first.on_timer(self.now) + self.listener.on_timer(self.now))

    def _apply(self, actions: list[Action]) -> None:
        then = []
        for act in actions:
            if isinstance(act, Send):
                self.wire.append((self.now, act.segment))
                for delay, seg in self.net(act.segment):
                    heapq.heappush(self._flight, (self.now + delay, next(self._order), seg))
                continue
            self.log.append(act)
            if isinstance(act, StateChanged) and (act.old, act.new) == (_F.SYN_SENT,
                                                                        _F.ESTABLISHED):
                then.append(lambda: self.first.handoff(self.state, self.update, self.now))
            elif isinstance(act, Reprogram):
                then.append(lambda: self.first.switch_updated(self.now))
            elif isinstance(act, Restore):
                then.append(lambda peer=act.peer: self.listener.restored(peer, self.now))
        for call in then:  # after this batch's segments are on the wire, as a real app would
            self._apply(call())
