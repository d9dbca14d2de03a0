# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS device's reports of itself on veth: its ClusterStatus heartbeat (D2.12) to the switch
-- what failover hears and the switch's balancing weighs -- and, with the switch's ``balance``
decided by the devices (claim 48), the heartbeats of the others and this device's own part of
the plan, every ``period``."""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Callable

from ftsslab.fast.cluster import CLUSTER_UDP_PORT, Status, parse_cluster_status

from .balance import DeviceDecider, DeviceLoad, Session, shedding_policy
from .cluster import Cluster
from .health import Health, Load, StatusReporter
from .process import read_datagrams

Flow = tuple[str, int]  # a client connection, by the client's address


class DeviceReports:
    """``sessions()``: this device's movable connections (flow -> since, and whether one is
    being given away now); ``move(flow, to)``: start handing one off, False if it cannot."""

    def __init__(self, proc, cluster: Cluster, node: str,
                 sessions: Callable[[], dict[Flow, tuple[float, bool]]],
                 move: Callable[[Flow, str], bool]) -> None:
        self.proc, self.cluster, self.node = proc, cluster, node
        self.sessions, self.move = sessions, move
        self.health = Health.OK  # (a `health` step sets it)
        me = cluster.devices[node]
        self.reporter = StatusReporter(me.ip, secrets.randbits(32), time.monotonic())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((me.ip, CLUSTER_UDP_PORT))
        self.sock.setblocking(False)
        proc.timed(self.reporter.next_deadline, self.beat)
        self.decider: DeviceDecider | None = None
        self.heard: dict[str, tuple[Status, float]] = {}  # the others' last heartbeats
        if cluster.balance.get("decider") == "device":
            policy = shedding_policy(cluster.balance)
            self.decider, self.period = DeviceDecider(node, policy), policy.period
            proc.watch(self.sock, self._heard)
            proc.at(time.monotonic() + self.period, self._balance)

    def beat(self, now: float, at_once: bool = False) -> None:
        """The heartbeat when due (``at_once``: now): to the switch, and with devices
        deciding to every other device too."""
        load = Load(sessions=len(self.sessions()), health=self.health)
        data = self.reporter.send_now(load) if at_once else self.reporter.on_timer(now, load)
        if data is None:
            return
        to = [self.cluster.control_ip] + ([d.ip for d in self.cluster.devices.values()
                                           if d.name != self.node] if self.decider else [])
        for ip in to:
            with contextlib.suppress(OSError):  # the link is down: the switch hears silence
                self.sock.sendto(data, (ip, CLUSTER_UDP_PORT))

    def set_health(self, name: str) -> Health:
        """D2.18: the device's own verdict on itself, told the switch at once."""
        key = name.upper().replace("-", "_")
        if key not in Health.__members__:
            raise ValueError(f"no health {name!r} (ok, degraded, predicted-fail)")
        self.health = Health[key]
        self.proc.event("health", health=self.health.name)
        self.beat(time.monotonic(), at_once=True)
        return self.health

    def moved(self, flow: Flow, to: str, given: bool) -> None:
        """A handoff of ``flow`` ended (this device's decider's, or another)."""
        if self.decider is not None and flow in self.decider.pending:
            now = time.monotonic()
            if given:
                self.decider.on_moved(flow, to, now)
            else:
                self.decider.on_move_failed(flow, now)

    def arrived(self, flow: Flow, from_ip: str) -> None:
        """A connection handed here: it dwells."""
        src = self.cluster.by_ip(from_ip)
        if self.decider is not None and src is not None:
            self.decider.on_arrived(flow, src.name, time.monotonic())

    def _heard(self) -> None:
        for data, ip in read_datagrams(self.sock):
            status = parse_cluster_status(data)
            dev = self.cluster.by_ip(ip)
            if status is not None and dev is not None and dev.name != self.node:
                self.heard[dev.name] = (status, time.monotonic())

    def _balance(self) -> None:
        """Claim 48, D2.13: hand off what this device's share of the plan says."""
        now = time.monotonic()
        self.proc.at(now + self.period, self._balance)
        mine = self.sessions()
        own = DeviceLoad(self.node, health=int(self.health),
                         sessions=tuple(Session(f, since) for f, (since, moving) in mine.items()
                                        if not moving or f in self.decider.pending))
        heard = [DeviceLoad(name, weight=st.weight, health=st.health, reported=st.sessions,
                            at=t - st.interval_ms / 1000)  # (made up to a period before)
                 for name, (st, t) in self.heard.items() if now - t < 4 * st.interval_ms / 1000]
        for m in self.decider.decide(own, heard, now):
            if not self.move(m.flow, m.dst):
                self.decider.on_move_failed(m.flow, now)
