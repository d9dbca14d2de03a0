# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS device's reports of itself as a sans-IO core (D2.12, D2.13, claim 48): its
ClusterStatus heartbeat to the switch -- what failover hears and the switch's balancing
weighs -- and, with the switch's ``balance`` decided by the devices, the heartbeats of the
others and this device's own part of the plan every ``period``. ``reports.py`` drives it on
veth, ``sim.py`` in the sim (check 30).

``mine`` is always the device's movable connections: flow -> (since, being given away now).
"""

from __future__ import annotations

from ftsslab.fast.cluster import Status, parse_cluster_status

from .balance import DeviceDecider, DeviceLoad, Move, Session, shedding_policy
from .cluster import Cluster
from .health import Health, Load, StatusReporter

Flow = tuple[str, int]  # a client connection, by the client's address
Mine = dict[Flow, tuple[float, bool]]
HEARD_FOR = 4  # heartbeat intervals a heard report counts


class DeviceReports:
    """One device's heartbeats and, with ``decider: device``, its DeviceDecider. ``boot``
    names this incarnation (``health.StatusReporter``)."""

    def __init__(self, cluster: Cluster, node: str, boot: int, now: float) -> None:
        self.cluster, self.node = cluster, node
        self.health = Health.OK  # (a `health` step sets it)
        self.reporter = StatusReporter(cluster.devices[node].ip, boot, now)
        self.decider: DeviceDecider | None = None
        self.next_balance: float | None = None
        self.heard: dict[str, tuple[Status, float]] = {}  # the others' last heartbeats
        if cluster.balance.get("decider") == "device":
            policy = shedding_policy(cluster.balance)
            self.decider, self.period = DeviceDecider(node, policy), policy.period
            self.next_balance = now + self.period

    def next_deadline(self) -> float:
        return min(t for t in (self.reporter.next_deadline(), self.next_balance)
                   if t is not None)

    def on_timer(self, now: float, mine: Mine) -> tuple[list[tuple[str, bytes]], list[Move]]:
        """The heartbeat if due, as (address, UDP 4497 payload) to send; the moves of this
        device's sessions to start now (``not_moved`` for one the driver cannot start)."""
        moves: list[Move] = []
        sent = self.beat(now, mine)
        if self.next_balance is not None and self.next_balance <= now:
            self.next_balance = now + self.period
            moves = self._decide(now, mine)
        return sent, moves

    def beat(self, now: float, mine: Mine, at_once: bool = False) -> list[tuple[str, bytes]]:
        """The heartbeat when due (``at_once``: now): to the switch, and with devices
        deciding to every other device too."""
        load = Load(sessions=len(mine), health=self.health)
        data = self.reporter.send_now(load) if at_once else self.reporter.on_timer(now, load)
        if data is None:
            return []
        to = [self.cluster.control_ip] + ([d.ip for d in self.cluster.devices.values()
                                           if d.name != self.node] if self.decider else [])
        return [(ip, data) for ip in to]

    def set_health(self, name: str) -> Health:
        """D2.18: the device's own verdict on itself (then ``beat(at_once=True)``)."""
        key = name.upper().replace("-", "_")
        if key not in Health.__members__:
            raise ValueError(f"no health {name!r} (ok, degraded, predicted-fail)")
        self.health = Health[key]
        return self.health

    def on_heartbeat(self, data: bytes, ip: str, now: float) -> None:
        """Another device's heartbeat (devices deciding)."""
        status = parse_cluster_status(data)
        dev = self.cluster.by_ip(ip)
        if status is not None and dev is not None and dev.name != self.node:
            self.heard[dev.name] = (status, now)

    def moved(self, flow: Flow, to: str, given: bool, now: float) -> None:
        """A handoff of ``flow`` ended (this device's decider's, or another)."""
        if self.decider is not None and flow in self.decider.pending:
            if given:
                self.decider.on_moved(flow, to, now)
            else:
                self.decider.on_move_failed(flow, now)

    def not_moved(self, flow: Flow, now: float) -> None:
        """A move ``on_timer`` returned could not start."""
        self.decider.on_move_failed(flow, now)

    def arrived(self, flow: Flow, from_ip: str, now: float) -> None:
        """A connection handed here: it dwells."""
        src = self.cluster.by_ip(from_ip)
        if self.decider is not None and src is not None:
            self.decider.on_arrived(flow, src.name, now)

    def _decide(self, now: float, mine: Mine) -> list[Move]:
        """Claim 48, D2.13: what this device's share of the plan says to hand off."""
        own = DeviceLoad(self.node, health=int(self.health),
                         sessions=tuple(Session(f, since) for f, (since, moving) in mine.items()
                                        if not moving or f in self.decider.pending))
        heard = [DeviceLoad(name, weight=st.weight, health=st.health, reported=st.sessions,
                            at=t - st.interval_ms / 1000)  # (made up to a period before)
                 for name, (st, t) in self.heard.items()
                 if now - t < HEARD_FOR * st.interval_ms / 1000]
        return self.decider.decide(own, heard, now)
