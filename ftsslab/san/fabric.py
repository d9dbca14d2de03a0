"""Endnodes' SANICs on one virtual clock, joined by a fabric that may lose, reorder and
duplicate frames, deterministically from a seed: the SAN's own sim, where the parts the lab's
``sanic`` kind does not carry yet run (RD, discovery, the flits), and the core benchmark.

Every packet travels as its RoCEv2 frame (``packets.frame``: Ether/IPv4/UDP 4791/BTH/.../ICRC)
and is read back on arrival (``packets.packet``, the ICRC verified): what the sim carries is
what a capture of it shows. Switches forward frames unmodified (B3.1), so the fabric is one
delivery queue; ``frames`` keeps every frame delivered, for captures and checks. Software
above an endnode's verbs (``discovery.ManagementAgent``) is ``attach``-ed as a ``Program``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .packets import Packet, frame, packet
from .verbs import Context

ROCE_SPORT = 49152  # the UDP source port every SANIC here sends from
MAX_SPINS = 1000  # a timer that fires this often at one instant without effect is a bug


@dataclass(frozen=True)
class Endnode:
    name: str
    context: Context
    mac: str
    ip: str


class Program(Protocol):
    """Software on an endnode, above its verbs: ``poll`` runs when the endnode's SANIC took a
    packet (its completions may have changed, as a completion channel would say) and when
    ``next_deadline`` comes, and returns what it sent."""

    def poll(self, now: float) -> list[tuple[str, Packet]]: ...

    def next_deadline(self) -> float | None: ...


@dataclass(frozen=True)
class Sent:
    """A frame on the fabric: when it was sent, by whom, to whom, and whether it arrived."""

    time: float
    src: str
    dst: str
    data: bytes
    delivered: bool


class Fabric:
    """``faulty(src, dst)``: whether loss, reordering and duplication apply to the frames
    from ``src`` to ``dst`` (None: to every frame)."""

    def __init__(self, *, seed: int = 0, loss: float = 0.0, reorder: float = 0.0,
                 duplicate: float = 0.0, latency: float = 0.0001,
                 faulty: Callable[[str, str], bool] | None = None) -> None:
        self.nodes: dict[str, Endnode] = {}
        self.programs: dict[str, list[Program]] = {}
        self.rng = random.Random(seed)
        self.loss, self.reorder, self.duplicate, self.latency = loss, reorder, duplicate, latency
        self.faulty = faulty
        self.now = 0.0
        self.frames: list[Sent] = []
        self.malformed = 0
        self._queue: list[tuple[float, int, str, str, bytes]] = []
        self._order = itertools.count()

    def add(self, name: str, context: Context) -> Endnode:
        n = len(self.nodes) + 1
        node = self.nodes[name] = Endnode(name, context, f"02:5a:00:00:00:{n:02x}",
                                          f"10.3.0.{n}")
        return node

    def attach(self, name: str, program: Program) -> None:
        self.programs.setdefault(name, []).append(program)

    def send(self, src: str, out: list[tuple[str, Packet]]) -> None:
        """What ``src``'s SANIC put on the wire (the return value of a verb or of ``receive``)."""
        a = self.nodes[src]
        for dst, p in out:
            b = self.nodes[dst]
            data = frame(p, eth_dst=b.mac, eth_src=a.mac, ip_src=a.ip, ip_dst=b.ip,
                         sport=ROCE_SPORT)
            bad = self.faulty is None or self.faulty(src, dst)
            lost = bad and self.rng.random() < self.loss
            self.frames.append(Sent(self.now, src, dst, data, not lost))
            if lost:
                continue
            for _ in range(2 if bad and self.rng.random() < self.duplicate else 1):
                late = self.rng.random() * 10 * self.latency \
                    if bad and self.rng.random() < self.reorder else 0.0
                heapq.heappush(self._queue, (self.now + self.latency + late,
                                             next(self._order), src, dst, data))

    def run(self, until: float = 60.0) -> None:
        """Deliver and fire timers until nothing is left to do or the clock passes ``until``."""
        spins = 0
        while True:
            due = [t for t in (self._queue[0][0] if self._queue else None,
                               *(n.context.next_deadline() for n in self.nodes.values()),
                               *(p.next_deadline() for ps in self.programs.values()
                                 for p in ps))
                   if t is not None]
            if not due:
                return
            if min(due) > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, min(due))
            if self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._queue)
                got = packet(data)
                if got is None:
                    self.malformed += 1
                    continue
                self.send(dst, self.nodes[dst].context.receive(got, self.now, src))
                for program in self.programs.get(dst, ()):
                    self.send(dst, program.poll(self.now))
                continue
            for name, node in self.nodes.items():
                for clock, fire in ((node.context, node.context.on_timer),
                                    *((p, p.poll) for p in self.programs.get(name, ()))):
                    d = clock.next_deadline()
                    if d is None or d > self.now:
                        continue
                    self.send(name, fire(self.now))
                    if clock.next_deadline() == d:  # a timer that never gets done
                        spins += 1
                        if spins > MAX_SPINS:
                            raise RuntimeError(f"{name}: a timer at {d} keeps firing")
                    else:
                        spins = 0
