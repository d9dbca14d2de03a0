# SPDX-License-Identifier: GPL-2.0-or-later
"""The NAS switch's storage-device failover on veth (claim 41, D2.12, D2.14, check 24): the
sockets of ``failover_core.SwitchFailover``, which decides (the sim drives the same core).

* Heartbeats: every device sends ClusterStatus to the switch's control address, UDP 4497.
* Shadows: the switch reads every client SYN (placement), every device SYN/ACK and every
  client segment with data (a download's requests: a BPF filter, pure ACKs stay in the
  kernel); the kernel goes on forwarding everything else.
* The switch's TCH port (UDP 4494 of the control address) carries its sessions: Open(full)
  with a shadow to a dead device's replica, Open(initiator=other) to a device that should
  hand a connection off (a predicted failure, balancing).
"""

from __future__ import annotations

import socket
import time

from ftsslab.fast.cluster import CLUSTER_UDP_PORT
from ftsslab.lab.tcp import decode as decode_tcp

from . import tch_messages as tm
from . import xap
from .bpf import tcp_filter
from .failover_core import Log, Program, SwitchFailover
from .process import NasProcess, packet_socket, read_datagrams
from .udp_tch import TchPort


class Failover:
    """The switch's part; ``switch`` is the NasSwitch process (table, XAP state, placement)."""

    def __init__(self, switch: NasProcess) -> None:
        self.switch = sw = switch
        c = sw.cluster
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((c.control_ip, CLUSTER_UDP_PORT))
        self.sock.setblocking(False)
        sw.watch(self.sock, self._heard)
        self.port = TchPort(sw, c.control_ip, first=self._action, second=self._action)
        self.core = SwitchFailover(c, sw.devices, sw.xap, sw.placement, self.port.node,
                                   time.monotonic())
        sw.timed(self.core.next_deadline, lambda now: self._apply(self.core.on_timer(now)))
        data = tcp_filter(dst_ip=c.vip, dport=c.vport, with_data=True)
        for p in c.client_ports:
            s = packet_socket(p, data)
            sw.watch(s, lambda s=s: self._frames(s, self.core.on_client))
        synack = tcp_filter(src_ip=c.vip, sport=c.vport, any_flags=0x02)
        for d in sw.devices.values():
            s = packet_socket(d.port, synack)
            sw.watch(s, lambda s=s: self._frames(s, self.core.on_device))

    def live(self) -> dict[str, xap.Device]:
        return self.core.live()

    def on_syn(self, frame: bytes) -> None:
        """A client SYN the placement socket read."""
        if (seg := decode_tcp(frame[14:])) is not None:
            self.core.on_client(seg)

    def on_table(self, key: xap.FlowKey, device: str, now: float) -> None:
        self.core.on_table(key, device, now)

    def forget(self, key: xap.FlowKey) -> None:
        self.core.forget(key)

    def _frames(self, s: socket.socket, feed) -> None:
        for _ in range(64):
            try:
                frame = s.recv(65536)
            except OSError:  # nothing more, or ENETDOWN once
                return
            if (seg := decode_tcp(frame[14:])) is not None:
                feed(seg)

    def _heard(self) -> None:
        for data, ip in read_datagrams(self.sock):
            self._apply(self.core.heard(data, ip, time.monotonic()))

    def _action(self, s: tm.Session, a: tm.Action) -> None:
        self._apply(self.core.on_session(s, a, time.monotonic()))

    def _apply(self, actions: list) -> None:
        sw = self.switch
        for a in actions:
            if isinstance(a, Log):
                sw.event(a.kind, **a.detail)
            elif isinstance(a, Program):
                sw._program(a.key, a.old, a.new, why=a.why)
            else:
                self.port.apply([a])
        sw.arm()
