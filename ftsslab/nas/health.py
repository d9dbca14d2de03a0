# SPDX-License-Identifier: GPL-2.0-or-later
"""Seed 002's load and health heartbeat (D2.12) as sans-IO cores over ClusterStatus datagrams.

:class:`StatusReporter` is a sender's side (a device, or a switch reporting to another
switch): it says when the next heartbeat is due and builds it from the load the driver
measured.  :class:`HealthMonitor` is a switch's side: it takes the heartbeats of its peers and
a clock, and returns typed events; per peer ONE transition table (:data:`TRANSITIONS`) over
:class:`PeerState`.  No sockets, no threads, no time: every call takes ``now`` (seconds).

Decisions the seed ("Silence or chatter from a networked device may be observed as a symptom
of device failure", L386) and D2.12 ("Failure = 3 missed heartbeats ... or an error-rate
spike") leave open:

* Silence.  A peer is DOWN when nothing came for ``(misses + lateness) * interval`` after its
  last heartbeat, ``interval`` being the one that heartbeat announced: with the defaults the
  third missed heartbeat is half an interval late (350 ms at 100 ms), so a sender's jitter
  does not read as a failure.  The event carries the detection time, now minus the last
  heartbeat (check 24).
* Chatter.  The cumulative ``errors`` rising by more than ``chatter`` within ``window``
  seconds is a failure too, so DOWN (not DEGRADED: D2.12 calls both symptoms failure).  A
  chattering peer stays DOWN while it chatters and comes back with its first heartbeat whose
  window shows no spike: the window is the hysteresis.
* Restart.  A heartbeat with another ``boot`` than the last one is a new incarnation: its
  sessions are gone (the driver fails them over, D2.14), the peer passes through UNKNOWN and
  its health flag sets the new state.  Within one boot, a ``seq`` at or behind the last one
  is a reordered or duplicated datagram: dropped and counted, not a restart.  (RFC 1982
  serial arithmetic, so a wrap after 2**32 heartbeats is no restart.)
* A DOWN peer that speaks again is UP (or DEGRADED, PREDICTED_FAIL: what its flag says).
* Garbage.  A datagram that does not parse, or names an unknown type, sender kind or health,
  or an interval of 0, is dropped and counted, as D2.11 does for XAP: the sender goes
  silent in the monitor's eyes.
* The peer is named by ``sender_id`` (its own IPv4 address); the datagram's source address
  is kept beside it, for the driver to reach the peer.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum, IntEnum

from ftsslab.fast.cluster import (
    CLUSTER_DEGRADED,
    CLUSTER_DEVICE,
    CLUSTER_HEALTH,
    CLUSTER_INTERVAL_MS,
    CLUSTER_OK,
    CLUSTER_PREDICTED_FAIL,
    CLUSTER_SENDER_KINDS,
    CLUSTER_STATUS,
    Status,
    build_cluster_status,
    parse_cluster_status,
)

DEFAULT_INTERVAL = CLUSTER_INTERVAL_MS / 1000
"""D2.12's period, in seconds."""
_SERIAL = 1 << 32


class Health(IntEnum):
    """The health flag a sender reports (D2.12, D2.18)."""

    OK = CLUSTER_OK
    DEGRADED = CLUSTER_DEGRADED
    PREDICTED_FAIL = CLUSTER_PREDICTED_FAIL


@dataclass(frozen=True)
class Load:
    """What the sender's driver measured of itself, for the next heartbeat.

    ``weight`` is the sender's relative capacity (any unit the cluster shares; 0: place no
    new sessions here), ``errors`` a cumulative count of whatever the sender counts as an
    error (failed storage I/O, refused requests, resets); it wraps at 2**32.
    """

    sessions: int = 0
    bytes_per_s: int = 0
    queue_depth: int = 0
    weight: int = 1
    health: Health = Health.OK
    errors: int = 0


class StatusReporter:
    """A sender's heartbeat schedule and its datagrams.

    ``boot`` names this incarnation: the driver picks a new one at every (re)start (the start
    time in ms, or a random number), and ``seq`` counts from 0 within it.  The first heartbeat
    is due at once, so a (re)start is known without waiting a period; then one every
    ``interval`` on a fixed grid (a late driver skips the missed slots, it sends no burst).
    """

    def __init__(self, sender_id: str, boot: int, now: float, *, kind: int = CLUSTER_DEVICE,
                 interval: float = DEFAULT_INTERVAL) -> None:
        interval_ms = round(interval * 1000)
        if not 1 <= interval_ms <= 0xFFFF:
            raise ValueError(f"a heartbeat interval is 1..65535 ms, not {interval_ms}")
        self.sender_id, self.boot, self.kind = sender_id, boot, kind
        self.interval, self.interval_ms = interval_ms / 1000, interval_ms
        self.seq = 0
        self._due = now

    def next_deadline(self) -> float:
        """When the next heartbeat is due."""
        return self._due

    def on_timer(self, now: float, load: Load) -> bytes | None:
        """The heartbeat to send if one is due (a UDP payload for port 4497), else None."""
        if now < self._due:
            return None
        slots = int((now - self._due) // self.interval) + 1
        self._due += slots * self.interval
        return self.send_now(load)

    def send_now(self, load: Load) -> bytes:
        """A heartbeat outside the schedule: the health flag changed and the switch should
        not wait up to a period to hear it (claim 34).  The schedule stays as it was."""
        status = Status(sender_kind=self.kind, health=int(load.health), sender_id=self.sender_id,
                        boot=self.boot, seq=self.seq, interval_ms=self.interval_ms,
                        weight=load.weight, bytes_per_s=load.bytes_per_s,
                        sessions=load.sessions, queue_depth=load.queue_depth,
                        errors=load.errors % _SERIAL)
        self.seq = (self.seq + 1) % _SERIAL
        return build_cluster_status(status)


class HealthError(Exception):
    """An event the peer's transition table does not allow in its state."""


class PeerState(Enum):
    """What the monitor believes of one peer."""

    UNKNOWN = "unknown"  # never heard (or just restarted)
    UP = "up"
    DEGRADED = "degraded"
    PREDICTED_FAIL = "predicted-fail"
    DOWN = "down"


class Event(Enum):
    """The table's columns: a heartbeat by its health flag, the two failure symptoms, a
    restart."""

    OK = "heartbeat OK"
    DEGRADED = "heartbeat DEGRADED"
    PREDICTED_FAIL = "heartbeat PREDICTED_FAIL"
    SILENCE = "silence"
    CHATTER = "chatter"
    RESTART = "restart"


_S, _E = PeerState, Event

TRANSITIONS: dict[tuple[PeerState, Event], PeerState] = {
    (_S.UNKNOWN, _E.OK): _S.UP,
    (_S.UNKNOWN, _E.DEGRADED): _S.DEGRADED,
    (_S.UNKNOWN, _E.PREDICTED_FAIL): _S.PREDICTED_FAIL,
    (_S.UNKNOWN, _E.SILENCE): _S.DOWN,  # expect()ed and never heard
    (_S.UP, _E.OK): _S.UP,
    (_S.UP, _E.DEGRADED): _S.DEGRADED,
    (_S.UP, _E.PREDICTED_FAIL): _S.PREDICTED_FAIL,
    (_S.UP, _E.SILENCE): _S.DOWN,
    (_S.UP, _E.CHATTER): _S.DOWN,
    (_S.UP, _E.RESTART): _S.UNKNOWN,
    (_S.DEGRADED, _E.OK): _S.UP,
    (_S.DEGRADED, _E.DEGRADED): _S.DEGRADED,
    (_S.DEGRADED, _E.PREDICTED_FAIL): _S.PREDICTED_FAIL,
    (_S.DEGRADED, _E.SILENCE): _S.DOWN,
    (_S.DEGRADED, _E.CHATTER): _S.DOWN,
    (_S.DEGRADED, _E.RESTART): _S.UNKNOWN,
    (_S.PREDICTED_FAIL, _E.OK): _S.UP,
    (_S.PREDICTED_FAIL, _E.DEGRADED): _S.DEGRADED,
    (_S.PREDICTED_FAIL, _E.PREDICTED_FAIL): _S.PREDICTED_FAIL,
    (_S.PREDICTED_FAIL, _E.SILENCE): _S.DOWN,
    (_S.PREDICTED_FAIL, _E.CHATTER): _S.DOWN,
    (_S.PREDICTED_FAIL, _E.RESTART): _S.UNKNOWN,
    (_S.DOWN, _E.OK): _S.UP,  # speaks again
    (_S.DOWN, _E.DEGRADED): _S.DEGRADED,
    (_S.DOWN, _E.PREDICTED_FAIL): _S.PREDICTED_FAIL,
    (_S.DOWN, _E.CHATTER): _S.DOWN,  # still chattering
    (_S.DOWN, _E.RESTART): _S.UNKNOWN,  # killed and started again
}
"""(state, event) -> state.  Not in it: a restart or chatter before a first heartbeat, and
silence while DOWN (a DOWN peer has no deadline)."""

_HEALTH_EVENTS = {Health.OK: _E.OK, Health.DEGRADED: _E.DEGRADED,
                  Health.PREDICTED_FAIL: _E.PREDICTED_FAIL}


@dataclass(frozen=True)
class PeerEvent:
    """A row of the table taken by one peer (``peer`` its sender id, ``address`` where its
    heartbeats came from, None if never heard)."""

    peer: str
    address: str | None
    old: PeerState
    new: PeerState
    event: Event
    at: float


@dataclass(frozen=True)
class PeerUp(PeerEvent):
    """The peer is UP: its first heartbeat, its flag back to OK, or a DOWN peer speaking."""

    status: Status


@dataclass(frozen=True)
class PeerDegraded(PeerEvent):
    """The peer says DEGRADED: it serves, but should take no new load (D2.13)."""

    status: Status


@dataclass(frozen=True)
class PeerPredictedFail(PeerEvent):
    """The peer predicts its failure (claim 34, D2.18): hand its sessions off now."""

    status: Status


@dataclass(frozen=True)
class PeerDown(PeerEvent):
    """The peer failed (claim 41): ``event`` SILENCE or CHATTER.  ``detection_time``: for
    silence, now minus the last heartbeat (or the expect() call); for chatter, the span of
    the window over which ``errors_rise`` exceeded the threshold."""

    detection_time: float
    last_seq: int | None
    errors_rise: int


@dataclass(frozen=True)
class PeerRestarted(PeerEvent):
    """The peer started again (a new ``boot``): whatever it held is gone.  The event of the
    heartbeat's own flag follows (from UNKNOWN)."""

    old_boot: int
    boot: int
    last_seq: int


HealthEvent = PeerUp | PeerDegraded | PeerPredictedFail | PeerDown | PeerRestarted
_ENTERED = {_S.UP: PeerUp, _S.DEGRADED: PeerDegraded, _S.PREDICTED_FAIL: PeerPredictedFail}


class Peer:
    """One peer's machine and what was last heard of it."""

    def __init__(self, peer_id: str, now: float) -> None:
        self.id = peer_id
        self.state = _S.UNKNOWN
        self.status: Status | None = None  # the last heartbeat taken
        self.address: str | None = None
        self.last_heard = now  # of that heartbeat, or of expect()
        self.deadline: float | None = None  # silence from then on
        self.counters: Counter[str] = Counter()  # heartbeats, lost, stale, restarts
        self.samples: deque[tuple[float, int]] = deque()  # (time, errors) in the chatter window

    def fire(self, event: Event) -> PeerState:
        """Take the table's row for ``event``; raises HealthError when there is none."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise HealthError(f"peer {self.id}: {event.value} while {self.state.name}")
        self.state = new
        return new


class HealthMonitor:
    """A switch's view of its peers' heartbeats: silence, chatter, flags, restarts.

    ``misses``/``lateness``: silence after ``(misses + lateness)`` announced intervals;
    ``chatter``/``window``: DOWN when ``errors`` rises by more than ``chatter`` within
    ``window`` seconds.  The driver calls on_timer at next_deadline(), before it feeds any
    datagram that came later: a late heartbeat fed first would hide the silence.
    """

    def __init__(self, *, misses: int = 3, lateness: float = 0.5, chatter: int = 50,
                 window: float = 1.0) -> None:
        if misses < 1 or lateness < 0 or chatter < 0 or window <= 0:
            raise ValueError("misses >= 1, lateness >= 0, chatter >= 0 and window > 0")
        self.misses, self.lateness, self.chatter, self.window = misses, lateness, chatter, window
        self.peers: dict[str, Peer] = {}
        self.counters: Counter[str] = Counter()  # malformed, invalid

    def state(self, peer_id: str) -> PeerState:
        peer = self.peers.get(peer_id)
        return _S.UNKNOWN if peer is None else peer.state

    def expect(self, peer_id: str, now: float, interval: float = DEFAULT_INTERVAL) -> None:
        """Watch a peer before its first heartbeat: DOWN if none comes in time.  A peer
        already known is left as it is."""
        if peer_id not in self.peers:
            peer = self.peers[peer_id] = Peer(peer_id, now)
            peer.deadline = now + (self.misses + self.lateness) * interval

    def next_deadline(self) -> float | None:
        """When on_timer has something to do (the earliest silence), None if never."""
        return min((p.deadline for p in self.peers.values() if p.deadline is not None),
                   default=None)

    def on_timer(self, now: float) -> list[HealthEvent]:
        """Every peer silent at ``now`` is DOWN."""
        events: list[HealthEvent] = []
        for peer in self.peers.values():
            if peer.deadline is not None and peer.deadline <= now:
                old, new = peer.state, peer.fire(_E.SILENCE)
                peer.deadline = None
                events.append(PeerDown(
                    peer.id, peer.address, old, new, _E.SILENCE, now,
                    detection_time=now - peer.last_heard,
                    last_seq=None if peer.status is None else peer.status.seq, errors_rise=0))
        return events

    def on_datagram(self, data: bytes, sender: str, now: float) -> list[HealthEvent]:
        """A UDP payload from port 4497 of ``sender``."""
        status = parse_cluster_status(data)
        if status is None:
            self.counters["malformed"] += 1
            return []
        return self.on_status(status, sender, now)

    def on_status(self, status: Status, sender: str, now: float) -> list[HealthEvent]:
        """A parsed heartbeat from ``sender`` (its source address)."""
        if (status.type != CLUSTER_STATUS or status.sender_kind not in CLUSTER_SENDER_KINDS
                or status.health not in CLUSTER_HEALTH or status.interval_ms == 0):
            self.counters["invalid"] += 1
            return []
        peer = self.peers.get(status.sender_id)
        if peer is None:
            peer = self.peers[status.sender_id] = Peer(status.sender_id, now)
        events: list[HealthEvent] = []
        last = peer.status
        if last is not None and status.boot != last.boot:
            old = peer.state
            peer.fire(_E.RESTART)
            peer.counters["restarts"] += 1
            peer.samples.clear()
            events.append(PeerRestarted(peer.id, sender, old, peer.state, _E.RESTART, now,
                                        old_boot=last.boot, boot=status.boot,
                                        last_seq=last.seq))
        elif last is not None:
            ahead = (status.seq - last.seq) % _SERIAL
            if ahead == 0 or ahead >= _SERIAL // 2:
                peer.counters["stale"] += 1
                return []
            peer.counters["lost"] += ahead - 1
        peer.counters["heartbeats"] += 1
        peer.status, peer.address, peer.last_heard = status, sender, now
        rise, since = self._errors_rise(peer, status.errors, now)
        event = _E.CHATTER if rise > self.chatter else _HEALTH_EVENTS[Health(status.health)]
        old, new = peer.state, peer.fire(event)
        interval = status.interval_ms / 1000
        peer.deadline = None if new is _S.DOWN else now + (self.misses + self.lateness) * interval
        if event is _E.CHATTER:
            if old is not _S.DOWN:
                events.append(PeerDown(peer.id, sender, old, new, event, now,
                                       detection_time=now - since,
                                       last_seq=None if last is None else last.seq,
                                       errors_rise=rise))
        elif new is not old:
            events.append(_ENTERED[new](peer.id, sender, old, new, event, now, status))
        return events

    def _errors_rise(self, peer: Peer, errors: int, now: float) -> tuple[int, float]:
        """How far ``errors`` rose within the window, and since when."""
        samples = peer.samples
        samples.append((now, errors))
        while samples[0][0] < now - self.window:
            samples.popleft()
        since, first = samples[0]
        return (errors - first) % _SERIAL, since
