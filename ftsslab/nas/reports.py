# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS device's reports of itself on veth: the socket (UDP 4497) and timers of
``reports_core.DeviceReports`` -- its ClusterStatus heartbeat to the switch and, with the
switch's ``balance`` decided by the devices (claim 48), the others' heartbeats and this
device's own part of the plan."""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Callable

from ftsslab.fast.cluster import CLUSTER_UDP_PORT

from .cluster import Cluster
from .health import Health
from .process import read_datagrams
from .reports_core import DeviceReports as Core
from .reports_core import Flow


class DeviceReports:
    """``sessions()``: this device's movable connections (flow -> since, and whether one is
    being given away now); ``move(flow, to)``: start handing one off, False if it cannot."""

    def __init__(self, proc, cluster: Cluster, node: str,
                 sessions: Callable[[], dict[Flow, tuple[float, bool]]],
                 move: Callable[[Flow, str], bool]) -> None:
        self.proc, self.sessions, self.move = proc, sessions, move
        self.core = Core(cluster, node, secrets.randbits(32), time.monotonic())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((cluster.devices[node].ip, CLUSTER_UDP_PORT))
        self.sock.setblocking(False)
        proc.timed(self.core.next_deadline, self._due)
        if self.core.decider is not None:
            proc.watch(self.sock, self._heard)

    def _due(self, now: float) -> None:
        sent, moves = self.core.on_timer(now, self.sessions())
        self._send(sent)
        for m in moves:
            if not self.move(m.flow, m.dst):
                self.core.not_moved(m.flow, now)

    def _send(self, datagrams: list[tuple[str, bytes]]) -> None:
        for ip, data in datagrams:
            with contextlib.suppress(OSError):  # the link is down: the switch hears silence
                self.sock.sendto(data, (ip, CLUSTER_UDP_PORT))

    def set_health(self, name: str) -> Health:
        """D2.18: the device's own verdict on itself, told the switch at once."""
        health = self.core.set_health(name)
        self.proc.event("health", health=health.name)
        self._send(self.core.beat(time.monotonic(), self.sessions(), at_once=True))
        return health

    def moved(self, flow: Flow, to: str, given: bool) -> None:
        self.core.moved(flow, to, given, time.monotonic())

    def arrived(self, flow: Flow, from_ip: str) -> None:
        self.core.arrived(flow, from_ip, time.monotonic())

    def _heard(self) -> None:
        for data, ip in read_datagrams(self.sock):
            self.core.on_heartbeat(data, ip, time.monotonic())
