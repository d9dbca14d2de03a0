"""How the FTSS delivers to one node: a lane per destination, in store order (sans-IO).

Fibre Channel delivers a sequence in order; the FTSS keeps that promise per
destination: every node's packets leave in the order the FTSS committed them, on
one fabric port at a time, with at most ``window`` unacknowledged. A lane is an
explicit state machine (``LANE_TRANSITIONS``, in the style of h11's ``_state.py``):

- FLOWING: sends from the head of its queue while fewer than ``window`` are in flight;
- PROBING: the oldest unacknowledged packet timed out, or the node announced a restart
  (what was in flight to it is lost). Everything in flight goes back to the queue, and
  only the head is resent (on the other fabric port after a timeout) until it is
  acknowledged: nothing newer can overtake it. Its acknowledgment resumes FLOWING;
- PARKED: the node cannot receive (down, hold time expired, no fabric port up);
  nothing is sent until it can (HELLO, a link back up);
- SPOOLED: the node reads its packets from its ``in/`` directory (file-I/O
  embodiment); nothing is ever sent.

The retransmission timeout adapts to the measured round trip (``Rto``, RFC 6298 with
Karn's rule), so a slow receiver is not flooded with copies; a timeout that proves
spurious -- an ACK of a copy sent before it arrives while probing (F-RTO, RFC 5682) --
gives back what was in flight instead of sending it all again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

# seconds: a loaded machine stalls a process (or an fsync) for ms at a time, and a lost
# link or a restarted node is told explicitly (netlink, HELLO seq 1): a timeout is rare
RTO_MIN = 0.1
RETRY = 0.2  # the first timeout, before a round trip was measured (RFC 6298 says 1 s)
RTO_MAX = 1.0  # back-off cap: a node that returns is probed again within a second
WINDOW = 256  # unacknowledged deliveries per node: fits a receiver's 8 MiB socket buffer


class ProtocolError(Exception):
    """An event that the state machine does not allow in its current state (a bug)."""


class Lane(Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code
    FLOWING = "flowing"
    PROBING = "probing"
    PARKED = "parked"
    SPOOLED = "spooled"


class LaneEvent(Enum):
    __hash__ = object.__hash__
    TIMEOUT = "timeout"  # the oldest unacknowledged delivery was not acknowledged in time
    PROBE_ACKED = "probe-acked"  # the resent head arrived (or none is left): flow again
    UNABLE = "unable"  # the node went down or lost every fabric port
    ABLE = "able"  # HELLO or a link back up
    RESTARTED = "restarted"  # its HELLO says it (re)started: what was in flight is lost
    SPOOL = "spool"  # the node LISTed its in/ directory: it reads files from now on


LANE_TRANSITIONS: dict[tuple[Lane, LaneEvent], Lane] = {
    (Lane.FLOWING, LaneEvent.TIMEOUT): Lane.PROBING,
    (Lane.PROBING, LaneEvent.TIMEOUT): Lane.PROBING,
    (Lane.PROBING, LaneEvent.PROBE_ACKED): Lane.FLOWING,
    (Lane.FLOWING, LaneEvent.UNABLE): Lane.PARKED,
    (Lane.PROBING, LaneEvent.UNABLE): Lane.PARKED,
    (Lane.PARKED, LaneEvent.UNABLE): Lane.PARKED,
    (Lane.PARKED, LaneEvent.ABLE): Lane.FLOWING,
    (Lane.FLOWING, LaneEvent.ABLE): Lane.FLOWING,
    (Lane.PROBING, LaneEvent.ABLE): Lane.PROBING,
    (Lane.FLOWING, LaneEvent.RESTARTED): Lane.PROBING,
    (Lane.PROBING, LaneEvent.RESTARTED): Lane.PROBING,
    (Lane.PARKED, LaneEvent.RESTARTED): Lane.PARKED,
    (Lane.SPOOLED, LaneEvent.RESTARTED): Lane.SPOOLED,
    (Lane.FLOWING, LaneEvent.SPOOL): Lane.SPOOLED,
    (Lane.PROBING, LaneEvent.SPOOL): Lane.SPOOLED,
    (Lane.PARKED, LaneEvent.SPOOL): Lane.SPOOLED,
    (Lane.SPOOLED, LaneEvent.SPOOL): Lane.SPOOLED,
}


@dataclass
class Rto:
    """RFC 6298: SRTT/RTTVAR from first transmissions only, exponential back-off."""

    initial: float
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 0
    value: float = 0.0  # the timeout now (kept current: every deadline reads it)

    def __post_init__(self) -> None:
        self._update()

    def _update(self) -> None:
        base = self.initial if self.srtt is None else self.srtt + 4 * self.rttvar
        floor = min(RTO_MIN, self.initial)  # a smaller initial timeout asks for a lower floor
        self.value = min(RTO_MAX, max(floor, base) * (1 << self.backoff))

    def sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 0
        self._update()

    def timed_out(self) -> None:
        if self.value < RTO_MAX:
            self.backoff += 1
            self._update()

    def reset_backoff(self) -> None:
        self.backoff = 0
        self._update()


@dataclass
class Delivery:
    """One stored packet on its way to one node (blocks 176/178)."""

    rid: int
    ox_id: int = 0  # one FC exchange for every copy (an ACK of any copy settles it); 0: unsent
    tries: int = 0
    sent_at: float = 0.0


@dataclass
class Outbox:
    """The lane of one destination node: its queue, what is in flight, its timer."""

    node: int
    rto: Rto
    state: Lane = Lane.FLOWING
    queue: OrderedDict[int, Delivery] = field(default_factory=OrderedDict)  # not in flight
    flight: OrderedDict[int, Delivery] = field(default_factory=OrderedDict)  # sent, unacked
    port: str | None = None  # the fabric port every transmission uses, until it fails
    deadline: float | None = None  # when its oldest delivery in flight is due
    timer_at: float | None = None  # the wake-up queued for it (never later than deadline)
    # PROBING after a timeout: an ACK of a copy sent before it says the timeout was
    # spurious (the ACKs were late, not the packets lost: F-RTO, RFC 5682); after a
    # restart nothing sent before can be trusted
    spurious: bool = False
    lost: bool = False

    def fire(self, event: LaneEvent) -> Lane:
        new = LANE_TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(f"lane to node {self.node}: {event.value} while "
                                f"{self.state.value}")
        if event in (LaneEvent.TIMEOUT, LaneEvent.RESTARTED):
            self.spurious, self.lost = False, event is LaneEvent.RESTARTED or self.lost
        self.state = new
        return new

    def requeue(self) -> None:
        """Everything in flight goes back to the head of the queue, in order (go back N).

        What is in flight is older than anything queued: the queue is filled from its head.
        """
        if self.flight:
            self.flight.update(self.queue)
            self.queue, self.flight = self.flight, OrderedDict()

    def pending(self) -> int:
        return len(self.queue) + len(self.flight)

    def report(self) -> dict:
        """Its state and timer, for ``report()``: what a slow or stuck lane looks like."""
        return {"state": self.state.value, "queued": len(self.queue),
                "in_flight": len(self.flight), "port": self.port,
                "srtt": self.rto.srtt, "rttvar": self.rto.rttvar, "rto": self.rto.value}

    def pick_port(self, up_ports: list[str], *, switch: bool = False) -> str | None:
        """The port the lane uses: its current one while it is up (the first up port
        otherwise); the next up port on ``switch`` (a timeout: "the packet will be
        transmitted using a redundant interface")."""
        if not up_ports:
            return None
        if self.port in up_ports:
            if switch:
                self.port = up_ports[(up_ports.index(self.port) + 1) % len(up_ports)]
        else:
            self.port = up_ports[0]
        return self.port

    def park(self) -> bool:
        """Nothing can be sent: all back to the queue, PARKED. True if it just parked."""
        was = self.state is Lane.PARKED
        self.requeue()
        self.fire(LaneEvent.UNABLE)
        self.deadline = None
        return not was

    def take(self, window: int) -> list[Delivery]:
        """What may go out now, oldest first, moved in flight: up to ``window`` when
        FLOWING (a parked lane resumes), nothing while PROBING."""
        if self.state is Lane.PARKED:
            self.fire(LaneEvent.ABLE)
        out = []
        while self.state is Lane.FLOWING and self.queue and len(self.flight) < window:
            rid, delivery = self.queue.popitem(last=False)
            self.flight[rid] = delivery
            out.append(delivery)
        return out

    def take_head(self) -> Delivery | None:
        """PROBING: everything back to the queue, and only its head in flight. With
        nothing to probe with there is nothing to protect: the lane flows again."""
        self.requeue()
        if not self.queue:
            if self.state is Lane.PROBING:
                self.fire(LaneEvent.PROBE_ACKED)
            self.deadline = None
            self.spurious = self.lost = False
            return None
        rid, delivery = self.queue.popitem(last=False)
        self.flight[rid] = delivery
        return delivery

    def due(self) -> float | None:
        """When the oldest delivery in flight times out (None: nothing in flight)."""
        self.deadline = (next(iter(self.flight.values())).sent_at + self.rto.value
                         if self.flight else None)
        return self.deadline

    def acked(self, rid: int, now: float, *, sample: bool = True) -> Delivery | None:
        """A receipt: out of the lane, an RTT sample (Karn: first transmissions only; one
        per ACK frame, ``sample``), and a PROBING lane whose probe arrived flows again --
        without sending again what was in flight, if ACKs of those copies came meanwhile
        (the timeout was spurious)."""
        queued = rid in self.queue
        delivery = self.drop(rid)
        if sample and delivery is not None and delivery.tries == 1:
            self.rto.sample(now - delivery.sent_at)
        if self.state is Lane.PROBING:
            if queued and delivery is not None and delivery.tries and not self.lost:
                self.spurious = True
            if not self.flight:
                self.fire(LaneEvent.PROBE_ACKED)
                self._resume_flight(now)
        return delivery

    def _resume_flight(self, now: float) -> None:
        """After a probe: a spurious timeout gives back what was in flight (not sent
        again, a fresh timeout each) and its back-off; a real loss sends it all again."""
        if self.spurious:
            self.rto.reset_backoff()
            while self.queue and next(iter(self.queue.values())).tries:
                rid, delivery = self.queue.popitem(last=False)
                delivery.sent_at = now
                self.flight[rid] = delivery
        self.spurious = self.lost = False

    def drop(self, rid: int) -> Delivery | None:
        return self.flight.pop(rid, None) or self.queue.pop(rid, None)
