# SPDX-License-Identifier: GPL-2.0-or-later
"""The NAS switch's storage-device failover on veth (claim 41, D2.12, D2.14, check 24).

* Heartbeats: every device sends ClusterStatus to the switch's control address, UDP 4497; a
  ``health.HealthMonitor`` turns silence (3 periods and a half) into PeerDown, with how long
  the switch took to notice.
* Shadows: the switch reads every client SYN (placement), every device SYN/ACK and every
  client segment with data (a download's requests) into a ``shadow.ShadowTable``; the kernel
  goes on forwarding everything else.
* On PeerDown each of the dead device's connections is pointed at a live one (the table,
  first: the replica must hear the client) and that device gets Open(full) from the switch
  with the shadow as its state; it asks the client where the stream is, restores there and
  regenerates the answer. The switch is the first device of that session, as in delayed
  binding; the table is already moved when the core asks for it.

New connections go to devices that are UP only (not DOWN, DEGRADED or PREDICTED_FAIL); a
PREDICTED_FAIL device is asked to hand each of its connections to one of those (claim 34).

Load balancing (claim 52, D2.13): with the switch's ``balance``, every ``period`` a
``balance.SwitchDecider`` sees each live device's sessions (the table) and capacity weight
and health (its last heartbeat) and returns moves; each is asked of its device as for a
predicted failure. A move counts as done when the table moves the flow there, as failed when
the device denies it or nothing moves within ``BALANCE_TIMEOUT``.
"""

from __future__ import annotations

import socket
import time

from ftsslab.fast.cluster import CLUSTER_UDP_PORT
from ftsslab.lab.tcp import decode as decode_tcp

from . import tch_messages as tm
from . import xap
from .balance import DeviceLoad, Session, SwitchDecider, shedding_policy
from .bpf import tcp_filter
from .health import HealthMonitor, PeerDown, PeerPredictedFail, PeerState, PeerUp
from .process import NasProcess, packet_socket, read_datagrams
from .shadow import ShadowTable
from .udp_tch import TchPort

_M = 1 << 32
BALANCE_TIMEOUT = 10.0  # seconds an asked move may take to reach the table


class Failover:
    """The switch's part; ``switch`` is the NasSwitch process (table, XAP state, placement)."""

    def __init__(self, switch: NasProcess) -> None:
        self.switch = sw = switch
        c = sw.cluster
        self.by_ip = {d.ip: d for d in sw.devices.values()}
        self.avoid: set[str] = set()  # devices given nothing (DOWN, DEGRADED, PREDICTED_FAIL)
        self.shadows = ShadowTable()
        self.monitor = HealthMonitor()  # (a device is watched from its first heartbeat on)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((c.control_ip, CLUSTER_UDP_PORT))
        self.sock.setblocking(False)
        sw.watch(self.sock, self._heard)
        sw.timed(self.monitor.next_deadline, lambda now: self._health(self.monitor.on_timer(now)))
        self.port = TchPort(sw, c.control_ip, first=self._action, second=self._action)
        self.sessions: dict[int, tuple[xap.FlowKey, str, float]] = {}  # -> flow, device, t0
        data = tcp_filter(dst_ip=c.vip, dport=c.vport, with_data=True)
        for p in c.client_ports:
            s = packet_socket(p, data)
            sw.watch(s, lambda s=s: self._frames(s, self.shadows.on_client))
        synack = tcp_filter(src_ip=c.vip, sport=c.vport, any_flags=0x02)
        for d in sw.devices.values():
            s = packet_socket(d.port, synack)
            sw.watch(s, lambda s=s: self._frames(s, self.shadows.on_device))
        self.since: dict[xap.FlowKey, float] = {}  # when each flow came to its device
        self.moving: dict[xap.FlowKey, tuple[str, float]] = {}  # balance: target, deadline
        self.decider = None
        if c.balance.get("policy", "weighted-balance") != "none" and \
                c.balance.get("decider", "switch") == "switch":  # (else the devices decide)
            policy = shedding_policy(c.balance)
            self.decider, self.period = SwitchDecider(policy), policy.period
            sw.at(time.monotonic() + self.period, self._balance)

    def live(self) -> dict[str, xap.Device]:
        return {n: d for n, d in self.switch.devices.items() if n not in self.avoid}

    def on_syn(self, frame: bytes) -> None:
        """A client SYN the placement socket read."""
        if (seg := decode_tcp(frame[14:])) is not None:
            self.shadows.on_client(seg)

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
            self._health(self.monitor.on_datagram(data, ip, time.monotonic()))

    def _health(self, events: list) -> None:
        sw = self.switch
        for ev in events:
            dev = self.by_ip.get(ev.peer)
            if dev is None:
                continue
            detail = {"device": dev.name, "old": ev.old.name, "new": ev.new.name,
                      "why": ev.event.name}
            if isinstance(ev, PeerDown):
                detail["detection_ms"] = round(ev.detection_time * 1000, 1)
            sw.event("health", **detail)
            if isinstance(ev, PeerUp):
                self.avoid.discard(dev.name)
            else:
                self.avoid.add(dev.name)  # no new connections there
            if isinstance(ev, PeerDown):
                self._fail_over(dev)
            elif isinstance(ev, PeerPredictedFail):
                self._drain(dev)
        sw.arm()

    def _fail_over(self, dead: xap.Device) -> None:
        """Every TCP connection of ``dead`` to a live device, by its shadow."""
        sw, c, now = self.switch, self.switch.cluster, time.monotonic()
        flows = [k for k, owner in sw.xap.entries().items()
                 if owner.name == dead.name and k.proto == socket.IPPROTO_TCP]
        for key in flows:
            sh = self.shadows.flows.get((key.client_ip, key.client_port))
            live = self.live()
            client = f"{key.client_ip}:{key.client_port}"
            if sh is None or not sh.usable or not live:
                why = ("no live device" if not live else "no shadow" if sh is None else
                       "the shadow is incomplete (an upload, or a handshake not seen)")
                sw.event("failover", client=client, old=dead.name, outcome="LOST", why=why)
                continue
            to = sw.placement.choose(live, sw.xap.entries().values())
            sw._program(key, dead, to, why="failover")
            sw.xap.placed(key, to.name)
            state = {"client_ip": key.client_ip, "client_port": key.client_port,
                     "cluster_ip": c.vip, "cluster_port": c.vport,
                     "seq": (sh.device_isn + 1) % _M, "ack": sh.client_next,
                     "mss": sh.client_mss}
            session, acts = self.port.node.open(to.ip, tm.Kind.FULL, state, now,
                                                app_state=sh.pack())
            self.sessions[session.session_id] = (key, to.name, now)
            sw.event("failover", client=client, old=dead.name, new=to.name, outcome="STARTED")
            self.port.apply(acts)

    def _drain(self, dev: xap.Device) -> None:
        """Claim 34, check 23: a device predicts its failure; every connection it serves is
        handed to a live device while it still can, with a normal handoff's guarantees."""
        for key in [k for k, owner in self.switch.xap.entries().items()
                    if owner.name == dev.name and k.proto == socket.IPPROTO_TCP]:
            live = self.live()
            if not live:
                self.switch.event("failover", client=f"{key.client_ip}:{key.client_port}",
                                  old=dev.name, outcome="LOST", why="no live device")
                continue
            to = self.switch.placement.choose(live, self.switch.xap.entries().values())
            self.ask(dev, key, to, "predicted failure")

    def ask(self, dev: xap.Device, key: xap.FlowKey, to: xap.Device, why: str) -> None:
        """Ask ``dev`` by Open(initiator=other) to hand the connection ``key`` to ``to``
        (named in the app state: "to=IP"); the device accepts or denies (check 17)."""
        c, now = self.switch.cluster, time.monotonic()
        state = {"client_ip": key.client_ip, "client_port": key.client_port,
                 "cluster_ip": c.vip, "cluster_port": c.vport}
        session, acts = self.port.node.request(dev.ip, state, now, as_second=False,
                                               app_state=f"to={to.ip}".encode())
        self.sessions[session.session_id] = (key, to.name, now)
        self.switch.event("failover", client=f"{key.client_ip}:{key.client_port}",
                          old=dev.name, new=to.name, outcome="ASKED", why=why)
        self.port.apply(acts)

    def forget(self, key: xap.FlowKey) -> None:
        """The flow's entry went (the connection ended)."""
        self.shadows.forget((key.client_ip, key.client_port))
        self.since.pop(key, None)

    def on_table(self, key: xap.FlowKey, device: str, now: float) -> None:
        """The switch pointed ``key`` at ``device`` (placed, moved by XAP or failover)."""
        self.since[key] = now
        if key in self.moving:
            to, _ = self.moving.pop(key)
            if to == device:
                self.decider.on_moved(key, to, now)
            else:
                self.decider.on_move_failed(key, now)

    def _balance(self) -> None:
        sw, now = self.switch, time.monotonic()
        sw.at(now + self.period, self._balance)
        for key, (_, deadline) in list(self.moving.items()):
            if deadline <= now:
                del self.moving[key]
                self.decider.on_move_failed(key, now)
        entries = {k: o for k, o in sw.xap.entries().items() if k.proto == socket.IPPROTO_TCP}
        loads = []
        for name, dev in sw.devices.items():
            peer = self.monitor.peers.get(dev.ip)
            if peer is None or peer.state not in (PeerState.UP, PeerState.DEGRADED):
                continue  # DOWN and PREDICTED_FAIL devices are failover's
            loads.append(DeviceLoad(name, weight=peer.status.weight, health=peer.status.health,
                                    sessions=tuple(Session(k, self.since.get(k, now))
                                                   for k, o in entries.items()
                                                   if o.name == name)))
        for m in self.decider.decide(loads, now):
            self.moving[m.flow] = (m.dst, now + BALANCE_TIMEOUT)
            self.ask(sw.devices[m.src], m.flow, sw.devices[m.dst], "balance")
        sw.arm()

    def _action(self, s: tm.Session, a: tm.Action) -> None:
        """The switch's sessions as the dead device's stand-in: the table moved already."""
        got = self.sessions.get(s.session_id)
        if got is None:
            return
        key, to, t0 = got
        if isinstance(a, tm.ReprogramSwitch):
            self.port.apply(s.switch_updated(time.monotonic()))
        elif isinstance(a, tm.Finished):
            del self.sessions[s.session_id]
            outcome = {tm.Outcome.HANDED_OFF: "DONE", tm.Outcome.ACCEPTED: "ACCEPTED",
                       tm.Outcome.DENIED: "DENIED"}.get(a.outcome, "LOST")
            if outcome in ("DENIED", "LOST") and key in self.moving:
                del self.moving[key]
                self.decider.on_move_failed(key, time.monotonic())
            self.switch.event("failover", client=f"{key.client_ip}:{key.client_port}", new=to,
                              outcome=outcome, why=a.reason,
                              ms=round((time.monotonic() - t0) * 1000, 1))
