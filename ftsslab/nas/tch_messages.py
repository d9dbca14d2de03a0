# SPDX-License-Identifier: GPL-2.0-or-later
"""The second embodiment's TCH (seed 002, Figs. 6-9) as sans-IO cores over UDP 4494 datagrams.

Three roles, each ONE transition table over the Fig. 9 states (IDLE, OPEN, ACTIVE, HALF-ACTIVE,
WAIT, DONE, FAIL): :class:`FirstDevice` (owns the client session and hands it off),
:class:`SecondDevice` (takes it) and :class:`OtherDevice` (a switch or third device that asks the
first device to hand off). :class:`TchNode` is one device's port 4494: it demultiplexes datagrams
by (peer, session id), opens passive sessions for Opens and counts what it drops. Cores take
datagrams, driver calls and a clock value ``now`` and return actions; no sockets, no time.

Full handoff (Fig. 6, D2.8)::

    first                                             second
    Open(full, state) ----------------------------->  Restore -> driver -> restored()
      pausing: no new data to the client  <---------- Open Response
    ReprogramSwitch (XAP change_connection), RelayHeld (buffered client frames, arrival order)
    switch_updated() (XAP ack)
    Complete -------------------------------------->
                                          <---------- Ack
    Done ------------------------------------------>  Finished(HANDED_OFF): serve the client
                                          <---------- Ack

Decisions the seed leaves open (see the docstrings where they apply):

* Reliability. Every request (Open, and every Message but Ack) is retransmitted after the RTO,
  doubling it, until answered; after ``max_retries`` resends the core takes the TIMEOUT row.
  Open Response answers Open, Ack answers a Message, a Fail copying the request's xid answers it
  negatively (the layer's ``answers``). Only one request is outstanding per session; a newer one
  replaces it (an Update is only a refresh, a Fail ends whatever was pending).
* Numbering. ``session_id`` is chosen by whoever sends the Open. Transaction ids are per
  direction: the Open's sender counts 1, 2, ..., its peer 0x80000001, ...; so a message whose xid
  is in our own range is an answer, any other a request. A request at or below the highest one
  processed is a duplicate: the stored answer is sent again and nothing else happens.
* Commit. The first device relinquishes the session when its Complete is acknowledged (WAIT ->
  DONE); the second serves the client only once Done arrives. The second never sends the client
  anything before, so the first's recovery after a WAIT timeout (revert the switch, go on
  serving) never meets a second device that already sent data: whatever is lost, at most one
  end serves the client.
* Keepalive (predictive sessions and half-handoffs, L336). Each side fails a session it has
  heard nothing of for ``keepalive`` seconds; ``None`` disables it ("this timeout feature can be
  disabled"). The first device sends an Update every ``interval``; the second device's watch
  starts with the first Update after the Open (or the Complete), as the first may still be
  resending those. Keep it above the retry schedule, rto * (2**(max_retries+1) - 1), or a
  Handoff lost a few times ends the session by keepalive (safely: both ends KEPT).
* Garbage. A datagram that does not parse, or names an unknown version or code, is dropped and
  counted with no answer (as D2.11 does for XAP: the sender times out). A well-formed request for
  a session nobody has is answered with a Fail(denied) copying its xid, like a TCP RST; a Fail is
  answered with an Ack, an answer never.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from ftsslab.fast.tch import (
    STATE_KEYS,
    TCH_FULL,
    TCH_HALF_CLIENT,
    TCH_HALF_CLUSTER,
    TCH_HANDOFF_TYPES,
    TCH_INITIATOR_FIRST,
    TCH_INITIATOR_OTHER,
    TCH_INITIATOR_SECOND,
    TCH_INITIATORS,
    TCH_MESSAGE,
    TCH_MESSAGE_TYPES,
    TCH_MSG_ACK,
    TCH_MSG_COMPLETE,
    TCH_MSG_DONE,
    TCH_MSG_FAIL,
    TCH_MSG_HANDOFF,
    TCH_MSG_NONE,
    TCH_MSG_UPDATE,
    TCH_OPEN,
    TCH_OPEN_RESPONSE,
    TCH_PREDICTIVE,
    TCH_STATUS_CLIENT_CLOSED,
    TCH_STATUS_DENIED,
    TCH_STATUS_OK,
    TCH_STATUS_SUPERSEDED,
    TCH_STATUS_TIMEOUT,
    TCH_STATUSES,
    TCH_VERSION,
    build_tch_message,
    parse_tch_message,
)

from .tch import ProtocolError

PEER_RANGE = 0x80000000
"""The Open's receiver numbers its requests from here (the Open's sender from 0)."""
_ANSWERS_KEPT = 16  # stored answers per session: more than a sender can have outstanding


class TchMessageError(ProtocolError):
    """The driver called a core at a moment its table does not allow (or did not ask for).
    Datagrams from the network never raise: they are counted and dropped or answered."""


class State(Enum):
    """The states of Fig. 9."""

    IDLE = "idle"
    OPEN = "open"
    ACTIVE = "active"
    HALF_ACTIVE = "half-active"
    WAIT = "wait"
    DONE = "done"
    FAIL = "fail"


class Kind(Enum):
    """"the type of handoff that was originally initiated" (L332); REQUEST is another device's
    request to the first device (its Open says htype full, initiator other)."""

    FULL = TCH_FULL
    HALF_CLIENT = TCH_HALF_CLIENT
    HALF_CLUSTER = TCH_HALF_CLUSTER
    PREDICTIVE = TCH_PREDICTIVE
    REQUEST = 0


class Event(Enum):
    """The tables' columns: driver calls, datagrams (an Ack named by what it answers, as the
    next state depends on it) and timers."""

    # driver calls
    START = "start"
    ACCEPT = "accept()"
    DENY = "deny()"
    RESTORED = "restored()"
    RESTORE_FAILED = "restore_failed()"
    SWITCH_UPDATED = "switch_updated()"
    SWITCH_FAILED = "switch_failed()"
    HANDOFF = "handoff()"
    RELEASE = "release()"
    FINISH = "finish()"
    CLIENT_CLOSED = "client_closed()"
    # datagrams
    OPEN_FIRST = "Open(initiator=first)"
    OPEN_SECOND = "Open(initiator=second)"
    OPEN_OTHER = "Open(initiator=other)"
    OPEN_RESPONSE = "Open Response"
    DENIED = "Open Response(denied)"
    UPDATE = "Update"
    HANDOFF_MSG = "Handoff"
    HANDOFF_ACKED = "Ack of Handoff"
    COMPLETE = "Complete"
    ACK_FULL = "Ack of Complete (full)"
    ACK_HALF = "Ack of Complete (half)"
    ACK = "Ack of Done or Fail"
    DONE = "Done"
    FAIL = "Fail"
    # internal
    NO_SWITCH = "nothing to reprogram (Fig. 8)"
    TIMEOUT = "timeout"


class Outcome(Enum):
    """Who serves the client session after a first/second session (both ends agree unless a
    give-up hid the other's decision), or how another device's request ended."""

    HANDED_OFF = "handed-off"  # the second device serves it
    KEPT = "kept"  # the first device does (it never left, or recovered)
    ACCEPTED = "accepted"  # another device's request: "the TCH system was successfully initiated"
    DENIED = "denied"


@dataclass(frozen=True)
class Send:
    """One UDP datagram from port 4494 to ``peer``:4494."""

    peer: str
    data: bytes


@dataclass(frozen=True)
class StateChanged:
    """A transition of one session (also to the same state); ``event`` is its table column."""

    role: str
    old: State
    new: State
    event: Event
    why: str
    peer: str
    session_id: int

    def __str__(self) -> str:
        return f"{self.role} {self.old.name}->{self.new.name} ({self.why})"


@dataclass(frozen=True)
class Finished:
    """The session is over (IDLE again); the core still answers duplicates of its requests."""

    outcome: Outcome
    reason: str
    peer: str
    session_id: int


@dataclass(frozen=True)
class Restore:
    """Second device: restore (PREDICTIVE: prepare) the client session from ``state`` (the
    block's fields by their layer names), then call ``restored`` or ``restore_failed``. Send the
    client nothing before Finished(HANDED_OFF); relayed and switched client frames are taken."""

    session_id: int
    kind: Kind
    state: dict
    app_state: bytes


@dataclass(frozen=True)
class ReprogramSwitch:
    """First device, Fig. 6 (7): XAP change_connection of ``client`` (ip, port) to ``to``, then
    call ``switch_updated`` on the XAP ack or ``switch_failed``."""

    session_id: int
    client: tuple[str, int]
    to: str


@dataclass(frozen=True)
class RelayHeld:
    """First device, Fig. 6 (8): relay the client frames held since the Open to ``to`` in the
    order they arrived, and every later one (raw L2, D2.7)."""

    session_id: int
    to: str


@dataclass(frozen=True)
class Recover:
    """First device: the handoff failed; serve the client again (``revert_switch``: XAP the
    entry back here first, it was reprogrammed)."""

    session_id: int
    revert_switch: bool
    why: str = field(default="", compare=False)


@dataclass(frozen=True)
class HandoffRequested:
    """First device: the second (``initiator`` second: the session is predictive, decide later
    by handoff() or release()) or another device (call accept() or deny()) asks for a handoff."""

    session_id: int
    peer: str
    initiator: int
    state: dict


@dataclass(frozen=True)
class PeerUpdate:
    """An Update of a half-handoff: the other device's TCP variables (Fig. 7 path (11): the
    client's acknowledgment numbers)."""

    session_id: int
    state: dict


Action = (Send | StateChanged | Finished | Restore | ReprogramSwitch | RelayHeld | Recover
          | HandoffRequested | PeerUpdate)

_S, _E, _K = State, Event, Kind

FIRST_TRANSITIONS: dict[tuple[State, Event], State] = {
    (_S.IDLE, _E.START): _S.OPEN,
    (_S.IDLE, _E.OPEN_SECOND): _S.ACTIVE,  # "changed to predictive and an ACTIVE state is assumed"
    (_S.IDLE, _E.OPEN_OTHER): _S.OPEN,  # the driver accepts or denies
    (_S.OPEN, _E.OPEN_RESPONSE): _S.ACTIVE,
    (_S.OPEN, _E.DENIED): _S.IDLE,
    (_S.OPEN, _E.ACCEPT): _S.ACTIVE,
    (_S.OPEN, _E.DENY): _S.IDLE,
    (_S.OPEN, _E.FAIL): _S.IDLE,
    (_S.OPEN, _E.TIMEOUT): _S.FAIL,
    (_S.OPEN, _E.CLIENT_CLOSED): _S.FAIL,
    (_S.ACTIVE, _E.NO_SWITCH): _S.WAIT,
    (_S.ACTIVE, _E.SWITCH_UPDATED): _S.WAIT,  # Fig. 6 (9) -> (10): send Complete
    (_S.ACTIVE, _E.SWITCH_FAILED): _S.FAIL,
    (_S.ACTIVE, _E.HANDOFF): _S.ACTIVE,  # predictive -> full: Handoff with fresh seq/ack
    (_S.ACTIVE, _E.HANDOFF_ACKED): _S.ACTIVE,
    (_S.ACTIVE, _E.RELEASE): _S.IDLE,  # Fail(superseded)
    (_S.ACTIVE, _E.DONE): _S.IDLE,  # only after another device's request (L340)
    (_S.ACTIVE, _E.FAIL): _S.IDLE,
    (_S.ACTIVE, _E.TIMEOUT): _S.FAIL,
    (_S.ACTIVE, _E.CLIENT_CLOSED): _S.FAIL,
    (_S.WAIT, _E.ACK_FULL): _S.DONE,
    (_S.WAIT, _E.ACK_HALF): _S.HALF_ACTIVE,
    (_S.WAIT, _E.FAIL): _S.FAIL,
    (_S.WAIT, _E.TIMEOUT): _S.FAIL,
    (_S.WAIT, _E.CLIENT_CLOSED): _S.FAIL,
    (_S.HALF_ACTIVE, _E.UPDATE): _S.HALF_ACTIVE,
    (_S.HALF_ACTIVE, _E.FINISH): _S.HALF_ACTIVE,  # "A Complete message sent ... must be acked"
    (_S.HALF_ACTIVE, _E.ACK_HALF): _S.DONE,
    (_S.HALF_ACTIVE, _E.FAIL): _S.FAIL,
    (_S.HALF_ACTIVE, _E.TIMEOUT): _S.FAIL,
    (_S.HALF_ACTIVE, _E.CLIENT_CLOSED): _S.FAIL,
    (_S.DONE, _E.ACK): _S.IDLE,
    (_S.DONE, _E.FAIL): _S.IDLE,  # the second gave up after all: handed off anyway
    (_S.DONE, _E.TIMEOUT): _S.IDLE,
    (_S.FAIL, _E.ACK): _S.IDLE,
    (_S.FAIL, _E.FAIL): _S.IDLE,
    (_S.FAIL, _E.TIMEOUT): _S.IDLE,
}

SECOND_TRANSITIONS: dict[tuple[State, Event], State] = {
    (_S.IDLE, _E.OPEN_FIRST): _S.OPEN,
    (_S.IDLE, _E.START): _S.OPEN,  # request(): Open(initiator=second)
    (_S.OPEN, _E.RESTORED): _S.ACTIVE,  # send Open Response
    (_S.OPEN, _E.RESTORE_FAILED): _S.IDLE,  # send Open Response(denied)
    (_S.OPEN, _E.OPEN_RESPONSE): _S.ACTIVE,  # the first device assumes ACTIVE: never denied
    (_S.OPEN, _E.FAIL): _S.IDLE,
    (_S.OPEN, _E.TIMEOUT): _S.FAIL,
    (_S.OPEN, _E.CLIENT_CLOSED): _S.FAIL,
    (_S.ACTIVE, _E.UPDATE): _S.ACTIVE,  # "processed or ignored"
    (_S.ACTIVE, _E.HANDOFF_MSG): _S.ACTIVE,  # "processed, but not ignored": Restore
    (_S.ACTIVE, _E.RESTORED): _S.ACTIVE,  # Ack the Handoff
    (_S.ACTIVE, _E.RESTORE_FAILED): _S.FAIL,
    (_S.ACTIVE, _E.COMPLETE): _S.ACTIVE,  # D2.9: send Ack, stay ACTIVE
    (_S.ACTIVE, _E.DONE): _S.IDLE,
    (_S.ACTIVE, _E.FAIL): _S.IDLE,
    (_S.ACTIVE, _E.TIMEOUT): _S.FAIL,
    (_S.ACTIVE, _E.CLIENT_CLOSED): _S.FAIL,
    (_S.FAIL, _E.ACK): _S.IDLE,
    (_S.FAIL, _E.FAIL): _S.IDLE,
    (_S.FAIL, _E.TIMEOUT): _S.IDLE,
}

OTHER_TRANSITIONS: dict[tuple[State, Event], State] = {
    (_S.IDLE, _E.START): _S.OPEN,  # Open(initiator=other) to the first device
    (_S.OPEN, _E.OPEN_RESPONSE): _S.DONE,  # accepted: send Done
    (_S.OPEN, _E.DENIED): _S.FAIL,
    (_S.OPEN, _E.FAIL): _S.IDLE,
    (_S.OPEN, _E.TIMEOUT): _S.FAIL,
    (_S.DONE, _E.ACK): _S.IDLE,
    (_S.DONE, _E.FAIL): _S.IDLE,
    (_S.DONE, _E.TIMEOUT): _S.IDLE,
    (_S.FAIL, _E.ACK): _S.IDLE,
    (_S.FAIL, _E.FAIL): _S.IDLE,
    (_S.FAIL, _E.TIMEOUT): _S.IDLE,
}

_DRIVER_ASKED = frozenset({_E.ACCEPT, _E.DENY, _E.RESTORED, _E.RESTORE_FAILED,
                           _E.SWITCH_UPDATED, _E.SWITCH_FAILED, _E.HANDOFF, _E.RELEASE,
                           _E.FINISH})
"""Driver calls valid only while the core asks for them (by an action or a state entry)."""


def state_fields(msg: dict) -> dict:
    """The TCP state block of a parsed message (empty for kinds without one)."""
    return {k: msg[k] for k in STATE_KEYS if k in msg}


def state_block(cp) -> dict:
    """An Open's state block from a connection's checkpoint (``repair.TcpCheckpoint``)."""
    return {"client_ip": cp.remote_ip, "cluster_ip": cp.local_ip,
            "client_port": cp.remote_port, "cluster_port": cp.local_port,
            "seq": cp.snd_nxt, "ack": cp.rcv_nxt, "snd_una": cp.snd_una,
            "snd_wnd": cp.window.snd_wnd, "rcv_wnd": cp.window.rcv_wnd,
            "snd_wscale": cp.snd_wscale, "rcv_wscale": cp.rcv_wscale, "mss": cp.mss}


def valid_message(msg: dict | None) -> bool:
    """A parsed datagram this protocol version can act on."""
    if msg is None or msg["version"] != TCH_VERSION:
        return False
    ptype, mtype = msg["ptype"], msg["mtype"]
    if ptype == TCH_MESSAGE:
        kind_ok = mtype in TCH_MESSAGE_TYPES and mtype != TCH_MSG_NONE
    else:
        kind_ok = ptype in (TCH_OPEN, TCH_OPEN_RESPONSE) and mtype == TCH_MSG_NONE
    return (kind_ok and msg["htype"] in TCH_HANDOFF_TYPES and msg["status"] in TCH_STATUSES
            and msg["initiator"] in TCH_INITIATORS)


@dataclass
class _Out:
    """The outstanding request."""

    xid: int
    data: bytes
    mtype: int  # TCH_MSG_NONE for the Open
    deadline: float
    tries: int = 0


class _Session:
    """What the three roles share: numbering, retransmission, duplicate answers, the table."""

    role: str
    table: dict

    def __init__(self, local: str, peer: str, session_id: int, kind: Kind, *, opener: bool,
                 initiator: int, rto: float, max_retries: int, keepalive: float | None) -> None:
        self.local, self.peer, self.session_id, self.kind = local, peer, session_id, kind
        self.initiator = initiator
        self.rto, self.max_retries, self.keepalive = rto, max_retries, keepalive
        # longer than the peer's whole retry schedule, rto * (2**(max_retries+1) - 1)
        self.patience = rto * (1 << (max_retries + 2))
        self.state = _S.IDLE
        self.outcome: Outcome | None = None
        self.tcp_state: dict = {}
        self.app_state = b""
        self.counters: Counter[str] = Counter()
        self._base = 0 if opener else PEER_RANGE
        self._xid = self._base
        self._out: _Out | None = None
        self._peer_xid = PEER_RANGE if opener else 0  # highest peer request processed
        self._answers: dict[int, bytes | None] = {}  # None: the driver has not answered yet
        self._pending: int | None = None  # the peer request the driver is answering
        self._expecting: set[Event] = set()
        self._watch: float | None = None
        self._span: float | None = None
        self._why = ""

    # the driver's view

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def expecting(self) -> frozenset[Event]:
        """The driver calls the core accepts now (besides client_closed)."""
        return frozenset(self._expecting)

    def next_deadline(self) -> float | None:
        times = [t for t in (self._out.deadline if self._out else None, self._watch)
                 if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> list[Action]:
        acts: list[Action] = []
        if self._out is not None and self._out.deadline <= now:
            out = self._out
            if out.tries < self.max_retries:
                out.tries += 1
                out.deadline = now + self.rto * (1 << out.tries)
                self.counters["retransmitted"] += 1
                acts.append(Send(self.peer, out.data))
            else:
                self._out = None
                if not self.finished:
                    acts += self._timeout(f"no answer to {self._name(out)} after "
                                          f"{out.tries} resends", now)
        if self._watch is not None and self._watch <= now and not self.finished:
            acts += self._timeout(f"nothing from {self.peer} for {self._span:g} s", now)
        return acts

    def client_closed(self, now: float) -> list[Action]:
        """The client sent FIN or RST (B2.33, L318): "the handoff is to be aborted"."""
        self._check(_E.CLIENT_CLOSED)
        return self._fire(_E.CLIENT_CLOSED, "the client closed", now,
                          status=TCH_STATUS_CLIENT_CLOSED)

    # datagrams (from TchNode, already validated)

    def on_message(self, msg: dict, now: float) -> list[Action]:
        acts = self._on_message(msg, now)
        if not self.finished:  # the peer is there: the watch starts again
            self._span = self._watch_span()
            self._watch = None if self._span is None else now + self._span
        return acts

    def _on_message(self, msg: dict, now: float) -> list[Action]:
        xid = msg["xid"]
        if xid & PEER_RANGE == self._base:  # in our range: an answer
            return self._answered(msg, now)
        if msg["ptype"] == TCH_OPEN_RESPONSE or msg["mtype"] == TCH_MSG_ACK:
            self.counters["stray"] += 1  # an answer to nothing we sent
            return []
        if xid <= self._peer_xid:
            if (answer := self._answers.get(xid)) is not None:
                self.counters["duplicate"] += 1
                return [Send(self.peer, answer)]
            self.counters["stale"] += 1
            return []
        self._peer_xid = xid
        if self.finished:
            self.counters["late"] += 1
            if msg["mtype"] == TCH_MSG_FAIL:
                return [self._answer(xid, TCH_MESSAGE, TCH_MSG_ACK)]
            return [self._answer(xid, TCH_MESSAGE, TCH_MSG_FAIL, TCH_STATUS_TIMEOUT)]
        event = self._classify(msg)
        if event is None or (self.state, event) not in self.table:
            self.counters["unexpected"] += 1
            return []
        return self._request_in(event, msg, now)

    # role hooks

    def _classify(self, msg: dict) -> Event | None:
        raise NotImplementedError

    def _request_in(self, event: Event, msg: dict, now: float) -> list[Action]:
        raise NotImplementedError

    def _entered(self, old: State, event: Event, status: int, now: float) -> list[Action]:
        raise NotImplementedError

    def _watch_span(self) -> float | None:
        return None

    # internals

    def _answered(self, msg: dict, now: float) -> list[Action]:
        out = self._out
        if out is None or msg["xid"] != out.xid or self.finished and out.mtype not in (
                TCH_MSG_FAIL, TCH_MSG_DONE):
            self.counters["stray"] += 1
            return []
        ptype, mtype = msg["ptype"], msg["mtype"]
        if out.mtype == TCH_MSG_NONE:
            ok = ptype == TCH_OPEN_RESPONSE or mtype == TCH_MSG_FAIL
        else:
            ok = ptype == TCH_MESSAGE and mtype in (TCH_MSG_ACK, TCH_MSG_FAIL)
        if not ok:
            self.counters["stray"] += 1
            return []
        if self.finished or out.mtype == TCH_MSG_UPDATE and mtype == TCH_MSG_ACK:
            self._out = None
            return []  # an Update's Ack only shows the peer is there
        if mtype == TCH_MSG_FAIL:
            event = _E.FAIL
        elif ptype == TCH_OPEN_RESPONSE:
            event = _E.DENIED if msg["status"] == TCH_STATUS_DENIED else _E.OPEN_RESPONSE
        elif out.mtype == TCH_MSG_HANDOFF:
            event = _E.HANDOFF_ACKED
        elif out.mtype == TCH_MSG_COMPLETE:
            event = _E.ACK_FULL if self.kind is _K.FULL else _E.ACK_HALF
        else:
            event = _E.ACK
        if (self.state, event) not in self.table:
            self.counters["unexpected"] += 1  # the request stays outstanding
            return []
        self._out = None
        return self._fire(event, self._name_msg(msg), now)

    def _check(self, event: Event) -> None:
        if (self.state, event) not in self.table or (
                event in _DRIVER_ASKED and event not in self._expecting):
            raise TchMessageError(f"{self.role} device, session {self.session_id:#x}: "
                                  f"{event.value} while {self.state.name} ({self.kind.name})")

    def _fire(self, event: Event, why: str, now: float, status: int = TCH_STATUS_TIMEOUT
              ) -> list[Action]:
        new = self.table.get((self.state, event))
        if new is None:
            raise TchMessageError(f"{self.role} device: {event.value} while {self.state.name}")
        old, self.state, self._why = self.state, new, why
        if event is not _E.UPDATE:  # an Update changes nothing the driver may do
            self._expecting = set()
        self._span = self._watch_span()
        self._watch = None if self._span is None else now + self._span
        acts: list[Action] = [StateChanged(self.role, old, new, event, why, self.peer,
                                           self.session_id)]
        return acts + self._entered(old, event, status, now)

    def _timeout(self, why: str, now: float) -> list[Action]:
        if (self.state, _E.TIMEOUT) not in self.table:
            return []
        return self._fire(_E.TIMEOUT, why, now)

    def _finish(self, outcome: Outcome, why: str) -> list[Action]:
        self.outcome, self._watch, self._span = outcome, None, None
        self._expecting = set()
        if self._out is not None and self._out.mtype != TCH_MSG_FAIL:
            self._out = None  # nothing waits for its answer now; a Fail still goes out
        return [Finished(outcome, why, self.peer, self.session_id)]

    def _build(self, ptype: int, mtype: int, xid: int, status: int = TCH_STATUS_OK,
               state: dict | None = None) -> bytes:
        htype = TCH_FULL if self.kind is _K.REQUEST else self.kind.value
        app = self.app_state if state is not None else b""
        return build_tch_message(ptype, mtype, htype, status, self.session_id, xid,
                                 self.initiator, app, **(state or {}))

    def _request(self, ptype: int, mtype: int, now: float, status: int = TCH_STATUS_OK,
                 state: dict | None = None) -> Send:
        self._xid += 1
        data = self._build(ptype, mtype, self._xid, status, state)
        self._out = _Out(self._xid, data, mtype, now + self.rto)
        return Send(self.peer, data)

    def _update(self, now: float) -> list[Action]:
        """An Update, unless a request that matters more is outstanding (it would replace
        that; the next Update carries fresher state anyway)."""
        if self._out is not None and self._out.mtype != TCH_MSG_UPDATE:
            return []
        return [self._request(TCH_MESSAGE, TCH_MSG_UPDATE, now, state=self.tcp_state)]

    def _answer(self, xid: int, ptype: int, mtype: int, status: int = TCH_STATUS_OK) -> Send:
        data = self._build(ptype, mtype, xid, status)
        self._answers[xid] = data
        while len(self._answers) > _ANSWERS_KEPT:
            del self._answers[next(iter(self._answers))]
        return Send(self.peer, data)

    def _defer(self, xid: int) -> None:
        """The driver answers this request: duplicates of it are dropped until then."""
        self._answers[xid], self._pending = None, xid

    def _answer_pending(self, ptype: int, mtype: int, status: int = TCH_STATUS_OK) -> Send:
        xid, self._pending = self._pending, None
        return self._answer(xid, ptype, mtype, status)

    def _fail(self, status: int, now: float) -> Send:
        return self._request(TCH_MESSAGE, TCH_MSG_FAIL, now, status)

    @staticmethod
    def _name(out: _Out) -> str:
        return "Open" if out.mtype == TCH_MSG_NONE else TCH_MESSAGE_TYPES[out.mtype]

    @staticmethod
    def _name_msg(msg: dict) -> str:
        if msg["ptype"] == TCH_OPEN_RESPONSE:
            return f"Open Response ({TCH_STATUSES[msg['status']]})"
        return f"{TCH_MESSAGE_TYPES[msg['mtype']]} ({TCH_STATUSES[msg['status']]})"


# --- the first device -------------------------------------------------------------------------


class FirstDevice(_Session):
    """The first device's end: it owns the client session until the Complete is acknowledged.

    ``pausing`` is what the driver reads: while True it sends the client no new data and holds
    the client's frames for RelayHeld ("Once this handoff initiation message has been sent, the
    first device will not send the client any new data")."""

    role, table = "first", FIRST_TRANSITIONS

    def __init__(self, local: str, peer: str, session_id: int, kind: Kind, *, opener: bool = True,
                 initiator: int = TCH_INITIATOR_FIRST, rto: float = 0.1, max_retries: int = 5,
                 keepalive: float | None = 8.0, interval: float | None = None) -> None:
        super().__init__(local, peer, session_id, kind, opener=opener, initiator=initiator,
                         rto=rto, max_retries=max_retries, keepalive=keepalive)
        self.interval = interval if interval is not None else (keepalive or 1.0) / 4
        self.pausing = False
        self._reprogrammed = False
        self._accepted = False
        self._next_update: float | None = None

    @property
    def client(self) -> tuple[str, int]:
        return self.tcp_state.get("client_ip", "0.0.0.0"), self.tcp_state.get("client_port", 0)

    def open(self, state: dict, now: float, app_state: bytes = b"") -> list[Action]:
        """Send Open(kind, state): a full or half handoff, or a predictive session."""
        self._check(_E.START)
        self.tcp_state, self.app_state = dict(state), app_state
        self.pausing = self.kind in (_K.FULL, _K.HALF_CLUSTER)
        acts = self._fire(_E.START, f"Open({self.kind.name.lower()})", now)
        return [*acts, self._request(TCH_OPEN, TCH_MSG_NONE, now, state=self.tcp_state)]

    def refresh(self, state: dict, now: float) -> list[Action]:
        """Fresh TCP variables from the driver. Predictive: the next periodic Update carries
        them; half-handoff: an Update goes now (Fig. 8's path (11) to (4))."""
        self.tcp_state.update(state)
        return self._update(now) if self.state is _S.HALF_ACTIVE else []

    def handoff(self, state: dict, now: float, app_state: bytes | None = None) -> list[Action]:
        """Turn the predictive session into a full handoff (D2.8): Handoff with fresh seq/ack
        (and, given, fresh application state)."""
        self._check(_E.HANDOFF)
        self.tcp_state.update(state)
        if app_state is not None:
            self.app_state = app_state
        self.kind, self.pausing, self._next_update = _K.FULL, True, None
        acts = self._fire(_E.HANDOFF, "handoff(): Handoff with fresh state", now)
        return [*acts, self._request(TCH_MESSAGE, TCH_MSG_HANDOFF, now, state=self.tcp_state)]

    def release(self, now: float) -> list[Action]:
        """The predictive session is no longer needed (another device got the handoff)."""
        self._check(_E.RELEASE)
        return self._fire(_E.RELEASE, "release(): Fail(superseded)", now)

    def accept(self, now: float) -> list[Action]:
        self._check(_E.ACCEPT)
        self._accepted = True
        acts = self._fire(_E.ACCEPT, "accept(): the request is taken", now)
        return [*acts, self._answer_pending(TCH_OPEN_RESPONSE, TCH_MSG_NONE)]

    def deny(self, now: float) -> list[Action]:
        self._check(_E.DENY)
        return self._fire(_E.DENY, "deny(): Open Response(denied)", now)

    def switch_updated(self, now: float) -> list[Action]:
        """The switch's XAP ack, Fig. 6 (9): Complete."""
        self._check(_E.SWITCH_UPDATED)
        return self._fire(_E.SWITCH_UPDATED, "switch updated: Complete", now)

    def switch_failed(self, now: float) -> list[Action]:
        self._check(_E.SWITCH_FAILED)
        return self._fire(_E.SWITCH_FAILED, "the switch did not acknowledge", now)

    def finish(self, now: float) -> list[Action]:
        """End a half-handoff: the second device gets the whole session (Complete, acked)."""
        self._check(_E.FINISH)
        acts = self._fire(_E.FINISH, "finish(): Complete", now)
        return [*acts, self._request(TCH_MESSAGE, TCH_MSG_COMPLETE, now)]

    def next_deadline(self) -> float | None:
        times = [t for t in (super().next_deadline(), self._next_update) if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> list[Action]:
        acts = super().on_timer(now)
        if self._next_update is not None and self._next_update <= now:
            self._next_update = now + self.interval
            acts += self._update(now)
        return acts

    # hooks

    def _classify(self, msg: dict) -> Event | None:
        ptype, mtype = msg["ptype"], msg["mtype"]
        if ptype == TCH_OPEN:
            return None  # a session opens once (TchNode makes passive ones)
        if mtype == TCH_MSG_DONE:
            return _E.DONE if self.kind is _K.REQUEST else None
        return {TCH_MSG_UPDATE: _E.UPDATE, TCH_MSG_FAIL: _E.FAIL}.get(mtype)

    def opened(self, msg: dict, now: float) -> list[Action]:
        """A passive session's first datagram: another device's Open."""
        self.tcp_state, self.app_state = state_fields(msg), msg["app_state"]
        self._peer_xid = msg["xid"]
        request = HandoffRequested(self.session_id, self.peer, msg["initiator"],
                                   dict(self.tcp_state))
        if msg["initiator"] == TCH_INITIATOR_SECOND:
            acts = self._fire(_E.OPEN_SECOND, "Open(initiator=second): predictive", now)
            acts.append(self._answer(msg["xid"], TCH_OPEN_RESPONSE, TCH_MSG_NONE))
            return [*acts, request]
        self._defer(msg["xid"])
        acts = self._fire(_E.OPEN_OTHER, "Open(initiator=other): decide", now)
        self._expecting = {_E.ACCEPT, _E.DENY}
        return [*acts, request]

    def _request_in(self, event: Event, msg: dict, now: float) -> list[Action]:
        ack = self._answer(msg["xid"], TCH_MESSAGE, TCH_MSG_ACK)
        if event is _E.UPDATE:
            acts = self._fire(event, "Update from the second device", now)
            return [*acts, ack, PeerUpdate(self.session_id, state_fields(msg))]
        return [ack, *self._fire(event, self._name_msg(msg), now,
                                 status=TCH_STATUS_TIMEOUT)]

    def _watch_span(self) -> float | None:
        if self.state is _S.HALF_ACTIVE or self.state is _S.ACTIVE and self.kind is _K.PREDICTIVE:
            return self.keepalive
        if self.state in (_S.OPEN, _S.ACTIVE) and self.kind is _K.REQUEST:
            return self.patience  # the driver's decision, then the requester's Done
        if self.state is _S.ACTIVE and self.kind is not _K.HALF_CLUSTER:
            return self.patience  # the XAP exchange (the driver has its own timeout too)
        return None

    def _entered(self, old: State, event: Event, status: int, now: float) -> list[Action]:
        new, acts = self.state, []
        if new is _S.ACTIVE and event in (_E.OPEN_RESPONSE, _E.HANDOFF_ACKED, _E.OPEN_SECOND):
            if self.kind is _K.PREDICTIVE:
                self._next_update = now + self.interval
                self._expecting = {_E.HANDOFF, _E.RELEASE}
            elif self.kind is _K.HALF_CLUSTER:  # Fig. 8: no (7)-(10), the table stays
                return self._fire(_E.NO_SWITCH, "half-cluster: no switch step, Complete", now)
            elif self.kind is not _K.REQUEST:
                self._reprogrammed = True
                self._expecting = {_E.SWITCH_UPDATED, _E.SWITCH_FAILED}
                acts += [ReprogramSwitch(self.session_id, self.client, self.peer),
                         RelayHeld(self.session_id, self.peer)]
        if new is _S.WAIT:
            acts.append(self._request(TCH_MESSAGE, TCH_MSG_COMPLETE, now))
        elif new is _S.HALF_ACTIVE:
            if event is not _E.FINISH:  # finish() once: its Complete is outstanding
                self._expecting = {_E.FINISH}
            if event is _E.ACK_HALF:  # Updates keep both sides sure of each other
                self._next_update = now + self.interval
        elif new is _S.DONE:
            self._next_update = None
            acts.append(self._request(TCH_MESSAGE, TCH_MSG_DONE, now))
        elif new is _S.FAIL:
            self._next_update = None
            acts += self._recover()
            if event is _E.FAIL:
                status = TCH_STATUS_TIMEOUT
            acts.append(self._fail(status, now))
        elif new is _S.IDLE and old is not _S.IDLE:
            self._next_update = None
            if event is _E.DENY:
                acts.append(self._answer_pending(TCH_OPEN_RESPONSE, TCH_MSG_NONE,
                                                 TCH_STATUS_DENIED))
            elif event is _E.RELEASE:
                acts.append(self._fail(TCH_STATUS_SUPERSEDED, now))
            if self.kind is _K.REQUEST:
                outcome = Outcome.ACCEPTED if self._accepted else Outcome.DENIED
            elif old is _S.DONE:
                outcome = Outcome.HANDED_OFF
            else:
                acts += self._recover()
                outcome = Outcome.KEPT
            acts += self._finish(outcome, self._why)
        return acts

    def _recover(self) -> list[Action]:
        """Undo what the handoff changed, once: the driver serves the client again."""
        if not (self.pausing or self._reprogrammed) or self.kind is _K.REQUEST:
            return []
        revert, self.pausing, self._reprogrammed = self._reprogrammed, False, False
        return [Recover(self.session_id, revert, self._why)]


# --- the second device ------------------------------------------------------------------------


class SecondDevice(_Session):
    """The second device's end: it restores from the Open (or a predictive session's Handoff)
    and serves the client from the Done on; anything else ends with Outcome.KEPT."""

    role, table = "second", SECOND_TRANSITIONS

    def __init__(self, local: str, peer: str, session_id: int, kind: Kind, *, opener: bool = False,
                 initiator: int = TCH_INITIATOR_FIRST, rto: float = 0.1, max_retries: int = 5,
                 keepalive: float | None = 8.0) -> None:
        super().__init__(local, peer, session_id, kind, opener=opener, initiator=initiator,
                         rto=rto, max_retries=max_retries, keepalive=keepalive)
        self.completed = False
        self._quiet_until = 0  # the peer request after which its Updates run

    def request(self, state: dict, now: float, app_state: bytes = b"") -> list[Action]:
        """Ask the first device for a handoff (B2.31): Open(initiator=second, predictive)."""
        self._check(_E.START)
        self.tcp_state, self.app_state = dict(state), app_state
        acts = self._fire(_E.START, "request(): Open(initiator=second)", now)
        return [*acts, self._request(TCH_OPEN, TCH_MSG_NONE, now, state=self.tcp_state)]

    def restored(self, now: float) -> list[Action]:
        self._check(_E.RESTORED)
        if self.state is _S.OPEN:
            acts = self._fire(_E.RESTORED, "restored: Open Response", now)
            return [*acts, self._answer_pending(TCH_OPEN_RESPONSE, TCH_MSG_NONE)]
        acts = self._fire(_E.RESTORED, "restored: Ack the Handoff", now)
        return [*acts, self._answer_pending(TCH_MESSAGE, TCH_MSG_ACK)]

    def restore_failed(self, why: str, now: float) -> list[Action]:
        self._check(_E.RESTORE_FAILED)
        return self._fire(_E.RESTORE_FAILED, f"restore failed: {why}", now,
                          status=TCH_STATUS_DENIED)

    def refresh(self, state: dict, now: float) -> list[Action]:
        """Half-handoff in the client direction: the client's ack numbers to the first device
        (Fig. 7 path (11)), as an Update."""
        if self.state is not _S.ACTIVE or self.kind is not _K.HALF_CLIENT or not self.completed:
            raise TchMessageError(f"second device: refresh() while {self.state.name} "
                                  f"({self.kind.name}, completed={self.completed})")
        self.tcp_state.update(state)
        return self._update(now)

    def opened(self, msg: dict, now: float) -> list[Action]:
        """A passive session's first datagram: the first device's Open."""
        self.tcp_state, self.app_state = state_fields(msg), msg["app_state"]
        self._peer_xid = self._quiet_until = msg["xid"]
        self._defer(msg["xid"])
        acts = self._fire(_E.OPEN_FIRST, f"Open({self.kind.name.lower()}): restore", now)
        self._expecting = {_E.RESTORED, _E.RESTORE_FAILED}
        return [*acts, self._restore()]

    def _restore(self) -> Restore:
        return Restore(self.session_id, self.kind, dict(self.tcp_state), self.app_state)

    def _classify(self, msg: dict) -> Event | None:
        mtype = msg["mtype"]
        if mtype == TCH_MSG_HANDOFF:
            return _E.HANDOFF_MSG if self.kind is _K.PREDICTIVE and self._pending is None else None
        if mtype == TCH_MSG_COMPLETE:
            return _E.COMPLETE if self.kind is not _K.PREDICTIVE else None
        if mtype == TCH_MSG_DONE:
            return _E.DONE if self.completed else None
        return {TCH_MSG_UPDATE: _E.UPDATE, TCH_MSG_FAIL: _E.FAIL}.get(mtype)

    def _request_in(self, event: Event, msg: dict, now: float) -> list[Action]:
        xid = msg["xid"]
        if event is _E.HANDOFF_MSG:
            self.tcp_state.update(state_fields(msg))
            self.app_state = msg["app_state"] or self.app_state
            self.kind = _K(msg["htype"]) if msg["htype"] != TCH_PREDICTIVE else _K.FULL
            self._defer(xid)
            acts = self._fire(event, "Handoff: restore with fresh state", now)
            self._expecting = {_E.RESTORED, _E.RESTORE_FAILED}
            return [*acts, self._restore()]
        ack = self._answer(xid, TCH_MESSAGE, TCH_MSG_ACK)
        if event is _E.UPDATE:
            self.tcp_state.update(state_fields(msg))
            acts = self._fire(event, "Update", now)
            if self.kind in (_K.HALF_CLIENT, _K.HALF_CLUSTER):
                acts.append(PeerUpdate(self.session_id, state_fields(msg)))
            return [*acts, ack]
        if event is _E.COMPLETE:
            if not self.completed:
                self.completed, self._quiet_until = True, xid
            return [*self._fire(event, "Complete: Ack", now), ack]
        return [ack, *self._fire(event, self._name_msg(msg), now)]

    def _watch_span(self) -> float | None:
        if self.state is _S.ACTIVE and self.kind is _K.PREDICTIVE:
            return self._keepalive()
        if self.state is _S.ACTIVE and self.completed and self.kind is not _K.FULL:
            return self._keepalive()  # a half-handoff: the first device's Updates
        if self.state in (_S.OPEN, _S.ACTIVE) and self._out is None:
            return self.patience  # the driver's restore, or the first device's next step
        return None

    def _keepalive(self) -> float | None:
        """The keepalive runs once the first device's Updates have begun; until then it may be
        resending the request (Open, Complete) whose answer was lost, with longer gaps."""
        if self.keepalive is None or self._peer_xid > self._quiet_until:
            return self.keepalive
        return self.patience

    def _entered(self, old: State, event: Event, status: int, now: float) -> list[Action]:
        new = self.state
        if new is _S.FAIL:
            if event is _E.FAIL:
                status = TCH_STATUS_TIMEOUT
            return [self._fail(status, now)]
        if new is _S.IDLE and old is not _S.IDLE:
            acts: list[Action] = []
            if event is _E.RESTORE_FAILED:
                acts.append(self._answer_pending(TCH_OPEN_RESPONSE, TCH_MSG_NONE,
                                                 TCH_STATUS_DENIED))
            outcome = Outcome.HANDED_OFF if event is _E.DONE else Outcome.KEPT
            return acts + self._finish(outcome, self._why)
        return []


# --- another device (the switch) as requester -----------------------------------------------


class OtherDevice(_Session):
    """Another device asking the first device to hand a session off (check 17): DONE if
    accepted ("not a promise to hand off"), FAIL if denied."""

    role, table = "other", OTHER_TRANSITIONS

    def __init__(self, local: str, peer: str, session_id: int, *, rto: float = 0.1,
                 max_retries: int = 5) -> None:
        super().__init__(local, peer, session_id, _K.REQUEST, opener=True,
                         initiator=TCH_INITIATOR_OTHER, rto=rto, max_retries=max_retries,
                         keepalive=None)

    def request(self, state: dict, now: float, app_state: bytes = b"") -> list[Action]:
        self._check(_E.START)
        self.tcp_state, self.app_state = dict(state), app_state
        acts = self._fire(_E.START, "request(): Open(initiator=other)", now)
        return [*acts, self._request(TCH_OPEN, TCH_MSG_NONE, now, state=self.tcp_state)]

    def _classify(self, msg: dict) -> Event | None:
        return _E.FAIL if msg["mtype"] == TCH_MSG_FAIL else None

    def _request_in(self, event: Event, msg: dict, now: float) -> list[Action]:
        return [self._answer(msg["xid"], TCH_MESSAGE, TCH_MSG_ACK),
                *self._fire(event, self._name_msg(msg), now)]

    def _entered(self, old: State, event: Event, status: int, now: float) -> list[Action]:
        new = self.state
        if new is _S.DONE:
            return [self._request(TCH_MESSAGE, TCH_MSG_DONE, now)]
        if new is _S.FAIL:
            return [self._fail(TCH_STATUS_DENIED if event is _E.DENIED else status, now)]
        if new is _S.IDLE and old is not _S.IDLE:
            outcome = Outcome.ACCEPTED if old is _S.DONE else Outcome.DENIED
            return self._finish(outcome, self._why)
        return []


# --- one device's port 4494 -------------------------------------------------------------------

Session = FirstDevice | SecondDevice | OtherDevice


def _session_id(local: str, count: int) -> int:
    """Deterministic (sans-IO) yet unlikely to repeat across devices and restarts."""
    return int.from_bytes(hashlib.blake2s(f"{local}:{count}".encode(), digest_size=4).digest(),
                          "big") or 1


@dataclass
class TchNode:
    """One device's TCH port: sessions by (peer, session id); an Open for an unknown one opens
    a passive session (initiator first: a SecondDevice; second or other: a FirstDevice).
    Finished sessions linger ``linger`` seconds to answer duplicates, then are forgotten."""

    ip: str
    rto: float = 0.1
    max_retries: int = 5
    keepalive: float | None = 8.0
    linger: float = 30.0
    sessions: dict[tuple[str, int], Session] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)
    _opened: int = field(default=0, init=False)
    _ended: dict[tuple[str, int], float] = field(default_factory=dict, init=False)

    def _kw(self) -> dict:
        return {"rto": self.rto, "max_retries": self.max_retries}

    def _new_id(self) -> int:
        self._opened += 1
        return _session_id(self.ip, self._opened)

    def open(self, peer: str, kind: Kind, state: dict, now: float, app_state: bytes = b""
             ) -> tuple[FirstDevice, list[Action]]:
        """As the first device: a full, half or predictive session to ``peer``."""
        s = FirstDevice(self.ip, peer, self._new_id(), kind, keepalive=self.keepalive,
                        **self._kw())
        self.sessions[(peer, s.session_id)] = s
        return s, s.open(state, now, app_state)

    def request(self, peer: str, state: dict, now: float, *, as_second: bool,
                app_state: bytes = b"") -> tuple[SecondDevice | OtherDevice, list[Action]]:
        """Ask the first device ``peer`` for a handoff, as its second device or as another."""
        sid = self._new_id()
        s: SecondDevice | OtherDevice
        if as_second:
            s = SecondDevice(self.ip, peer, sid, _K.PREDICTIVE, opener=True,
                             initiator=TCH_INITIATOR_SECOND, keepalive=self.keepalive,
                             **self._kw())
        else:
            s = OtherDevice(self.ip, peer, sid, **self._kw())
        self.sessions[(peer, sid)] = s
        return s, s.request(state, now, app_state)

    def on_datagram(self, peer: str, data: bytes, now: float) -> list[Action]:
        msg = parse_tch_message(data)
        if not valid_message(msg):
            self.counters["malformed"] += 1
            return []
        key = (peer, msg["session_id"])
        if (s := self.sessions.get(key)) is not None:
            return self._reap(key, s.on_message(msg, now), now)
        if msg["ptype"] == TCH_OPEN and not msg["xid"] & PEER_RANGE:
            return self._opened_by(key, msg, now)
        self.counters["unknown-session"] += 1
        if msg["ptype"] == TCH_OPEN_RESPONSE or msg["mtype"] == TCH_MSG_ACK:
            return []
        mtype = TCH_MSG_ACK if msg["mtype"] == TCH_MSG_FAIL else TCH_MSG_FAIL
        status = TCH_STATUS_OK if mtype == TCH_MSG_ACK else TCH_STATUS_DENIED
        return [Send(peer, build_tch_message(TCH_MESSAGE, mtype, msg["htype"], status,
                                             msg["session_id"], msg["xid"], msg["initiator"]))]

    def _opened_by(self, key: tuple[str, int], msg: dict, now: float) -> list[Action]:
        peer, sid = key
        initiator = msg["initiator"]
        s: FirstDevice | SecondDevice
        if initiator == TCH_INITIATOR_FIRST:
            s = SecondDevice(self.ip, peer, sid, _K(msg["htype"]), keepalive=self.keepalive,
                             **self._kw())
        else:
            kind = _K.PREDICTIVE if initiator == TCH_INITIATOR_SECOND else _K.REQUEST
            s = FirstDevice(self.ip, peer, sid, kind, opener=False, initiator=initiator,
                            keepalive=self.keepalive, **self._kw())
        self.sessions[key] = s
        return self._reap(key, s.opened(msg, now), now)

    def next_deadline(self) -> float | None:
        times = [t for s in self.sessions.values() if (t := s.next_deadline()) is not None]
        times += [t + self.linger for t in self._ended.values()]
        return min(times, default=None)

    def on_timer(self, now: float) -> list[Action]:
        acts = [a for key, s in list(self.sessions.items())
                for a in self._reap(key, s.on_timer(now), now)]
        for key, t in list(self._ended.items()):
            if t + self.linger <= now:
                del self._ended[key], self.sessions[key]
        return acts

    def _reap(self, key: tuple[str, int], acts: list[Action], now: float) -> list[Action]:
        if self.sessions[key].finished and key not in self._ended:
            self._ended[key] = now
        return acts


# --- a virtual-clock runner for two or three devices ------------------------------------------

Net = Callable[[str, str, bytes], Iterable[tuple[float, bytes]]]


class TchNet:
    """Devices back to back on a virtual clock (tests, the sim backend); it plays the drivers.

    ``net(src, dst, data)`` is what the wire makes of each datagram: (delay, bytes) pairs --
    none drops it, two duplicate it, different delays reorder. The drivers restore at once
    (``restore`` False: restore_failed), answer ReprogramSwitch with switch_updated after
    ``switch_delay`` (``switch_ok`` False: switch_failed), and accept another device's request
    unless ``accept`` is False (``decide`` False: the driver never decides). ``restore`` may
    also be a callable taking the Restore action: True restores, False fails, None never
    answers. ``wire`` lists every datagram sent (src, dst, time, bytes),
    ``log`` every other action with the ip of the device that produced it.
    """

    def __init__(self, nodes: Iterable[TchNode], *, net: Net | None = None,
                 restore: bool | Callable[[Restore], bool | None] = True,
                 switch_ok: bool = True, switch_delay: float = 0.002, accept: bool = True,
                 decide: bool = True) -> None:
        self.nodes = {n.ip: n for n in nodes}
        self.net = net or (lambda src, dst, data: [(0.001, data)])
        self.restore = restore if callable(restore) else (lambda act: restore)
        self.switch_ok, self.switch_delay = switch_ok, switch_delay
        self.accept, self.decide = accept, decide
        self.now = 0.0
        self.wire: list[tuple[str, str, float, bytes]] = []
        self.log: list[tuple[str, Action]] = []
        self.seen: dict[tuple[str, str, int], Session] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def session(self, ip: str, peer: str) -> Session:
        """The newest session ``ip`` had with ``peer`` (also after its node forgot it)."""
        return [s for (i, p, _), s in self.seen.items() if (i, p) == (ip, peer)][-1]

    def at(self, when: float, call: Callable[[], list[Action]], ip: str) -> None:
        """Run a driver call at virtual time ``when`` on device ``ip``."""
        self._push(when, lambda: self.apply(ip, call()))

    def run(self, until: float = 1000.0) -> None:
        """Until nothing is left to do (or the clock passes ``until``)."""
        while True:
            due = [t for t in (self._queue[0][0] if self._queue else None,
                               *(n.next_deadline() for n in self.nodes.values()))
                   if t is not None]
            if not due or min(due) > until:
                return
            self.now = max(self.now, min(due))
            if self._queue and self._queue[0][0] <= self.now:
                heapq.heappop(self._queue)[2]()
                continue
            for ip, node in self.nodes.items():
                if (t := node.next_deadline()) is not None and t <= self.now:
                    self.apply(ip, node.on_timer(self.now))

    def apply(self, ip: str, actions: list[Action]) -> None:
        """Deliver ``ip``'s actions: datagrams onto the wire, the rest to its driver."""
        for act in actions:
            if isinstance(act, Send):
                self.wire.append((ip, act.peer, self.now, act.data))
                for delay, data in self.net(ip, act.peer, act.data):
                    self._push(self.now + delay, self._delivery(ip, act.peer, data))
                continue
            self.log.append((ip, act))
            if isinstance(act, StateChanged):
                key = (act.peer, act.session_id)
                self.seen.setdefault((ip, *key), self.nodes[ip].sessions[key])
            self._drive(ip, act)

    def _drive(self, ip: str, act: Action) -> None:
        if isinstance(act, Restore):
            verdict = self.restore(act)
            if verdict is not None:
                event = Event.RESTORED if verdict else Event.RESTORE_FAILED
                self._answer(ip, act.session_id, event, self.now)
        elif isinstance(act, ReprogramSwitch):
            event = Event.SWITCH_UPDATED if self.switch_ok else Event.SWITCH_FAILED
            self._answer(ip, act.session_id, event, self.now + self.switch_delay)
        elif isinstance(act, HandoffRequested) and act.initiator == TCH_INITIATOR_OTHER:
            if self.decide:
                self._answer(ip, act.session_id, Event.ACCEPT if self.accept else Event.DENY,
                             self.now)

    def _answer(self, ip: str, session_id: int, event: Event, when: float) -> None:
        """The driver's answer, unless the session stopped asking meanwhile (a real driver
        cancels its XAP exchange or restore when the session fails)."""
        s = self.nodes[ip].sessions[self._key(ip, session_id)]
        calls = {Event.RESTORED: lambda: s.restored(self.now),
                 Event.RESTORE_FAILED: lambda: s.restore_failed("refused", self.now),
                 Event.SWITCH_UPDATED: lambda: s.switch_updated(self.now),
                 Event.SWITCH_FAILED: lambda: s.switch_failed(self.now),
                 Event.ACCEPT: lambda: s.accept(self.now), Event.DENY: lambda: s.deny(self.now)}
        self.at(when, lambda: calls[event]() if event in s.expecting() else [], ip)

    def _key(self, ip: str, session_id: int) -> tuple[str, int]:
        return next(k for k in self.nodes[ip].sessions if k[1] == session_id)

    def _delivery(self, src: str, dst: str, data: bytes) -> Callable[[], None]:
        def deliver() -> None:
            if dst in self.nodes:
                self.apply(dst, self.nodes[dst].on_datagram(src, data, self.now))
        return deliver

    def _push(self, when: float, call: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._order), call))
