"""A packet's life in the FTSS's fault-tolerant medium, as an explicit state machine.

The routing agent commits a packet (block 154 / 182) and decides nothing until the
store says it is durable; then it routes it (blocks 156-176, 184-192) -- or holds it
while a recovery refills routing table 146 -- until every destination acknowledged it
(block 178); then it forgets it (blocks 166, 172, 188) or keeps it in the retention
queue (claims 5, 20, 29) until its time is up or the queue is full. ``PACKET_TRANSITIONS``
is the whole life, in the style of h11's ``_state.py``: anything else raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .delivery import ProtocolError


class PacketState(Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code
    COMMITTING = "committing"  # its Persist is on the way to the disk: no verdict yet
    HELD = "held"  # durable, waiting to be routed (at once, or after a recovery's grace)
    DELIVERING = "delivering"  # in its destinations' lanes until each acknowledges it
    RETAINED = "retained"  # delivered, kept for roll back (a durable DELIVERED marker)
    GONE = "gone"  # forgotten: its record is (being) tombstoned


class PacketEvent(Enum):
    __hash__ = object.__hash__
    DURABLE = "durable"  # the store's fsync covered it
    FAILED = "failed"  # the store refused it (full, I/O error)
    ROUTED = "routed"  # it has destinations on the fabric
    RETAIN = "retain"  # delivered everywhere, and its retention keeps it
    DROP = "drop"  # undeliverable, delivered with no retention, expired or evicted


PACKET_TRANSITIONS: dict[tuple[PacketState, PacketEvent], PacketState] = {
    (PacketState.COMMITTING, PacketEvent.DURABLE): PacketState.HELD,
    (PacketState.COMMITTING, PacketEvent.FAILED): PacketState.GONE,
    (PacketState.HELD, PacketEvent.ROUTED): PacketState.DELIVERING,
    (PacketState.HELD, PacketEvent.DROP): PacketState.GONE,
    (PacketState.DELIVERING, PacketEvent.RETAIN): PacketState.RETAINED,
    (PacketState.DELIVERING, PacketEvent.DROP): PacketState.GONE,
    (PacketState.RETAINED, PacketEvent.DROP): PacketState.GONE,
}


@dataclass
class Stored:
    """A packet in the fault-tolerant medium (block 154 / 182)."""

    rid: int
    src_node: int
    msg_id: int
    pkt_flags: int
    retention: int
    origin: int
    stored_at: float
    frame: bytes
    state: PacketState = PacketState.COMMITTING
    reply: tuple[str, str, int, int] | None = None  # ack goes to (port, mac, fc_id, ox_id)
    ack: tuple[int, int] | None = None  # (status, reason) once sent
    pending: set[int] = field(default_factory=set)  # nodes that have not acknowledged it
    dests: tuple[int, ...] = ()  # fabric nodes it is (was) for: what a replay re-sends
    delivered_rid: int | None = None  # the DELIVERED marker record while RETAINED
    delivered_at: float = 0.0

    @property
    def durable(self) -> bool:
        return self.state is not PacketState.COMMITTING

    def fire(self, event: PacketEvent) -> PacketState:
        new = PACKET_TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(f"packet {self.src_node}/{self.msg_id}: {event.value} while "
                                f"{self.state.value}")
        self.state = new
        return new
