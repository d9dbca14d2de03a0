# SPDX-License-Identifier: GPL-2.0-or-later
"""The NAS switch's storage-device failover and balancing decisions (claims 34, 41, 52; D2.12,
D2.13, D2.14; checks 23, 24, 25) as one sans-IO core: what ``failover.py`` drives on veth and
``sim.py`` in the sim, so both backends decide alike (check 30).

Inputs: the devices' ClusterStatus heartbeats (``heard``), the segments the switch reads into
its shadows (``on_client``, ``on_device``), the table's changes (``on_table``, ``forget``),
the actions of the switch's own TCH sessions (``on_session``) and a clock (``on_timer`` at
``next_deadline``). Output: a list of :class:`Log` (an event to log), :class:`Program`
(point a flow's entry at a device: the driver programs its table and calls ``on_table``) and
``tch_messages`` actions of the switch's port 4494, in the order to carry them out.

* A ``health.HealthMonitor`` turns silence (3 periods and a half) into PeerDown. New
  connections go to devices that are UP only (``live``).
* On PeerDown each of the dead device's TCP connections is pointed at a live one (the table
  first: the replica must hear the client) and that device gets Open(full) from the switch
  with the connection's shadow (``shadow.py``) as its state; the switch is the first device
  of that session, as in delayed binding, and the table is already moved when the core asks.
* A PREDICTED_FAIL device is asked, by Open(initiator=other) per connection naming the
  target (``to=IP``), to hand each to a live device (claim 34).
* With ``balance`` decided by the switch, every ``period`` a ``balance.SwitchDecider`` sees each
  live device's sessions (the table), capacity weight and health (its last heartbeat) and
  returns moves, each asked of its device as for a predicted failure. A move is done when the
  table moves the flow there, failed when the device denies it or nothing moves within
  ``BALANCE_TIMEOUT``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import tch_messages as tm
from . import xap
from .balance import DeviceLoad, Session, SwitchDecider, shedding_policy
from .cluster import Cluster, Placement
from .health import HealthMonitor, PeerDown, PeerPredictedFail, PeerState, PeerUp
from .shadow import ShadowTable

_M = 1 << 32
IPPROTO_TCP = 6
BALANCE_TIMEOUT = 10.0  # seconds an asked move may take to reach the table


@dataclass(frozen=True)
class Log:
    """An event for the switch's log (``kind`` and its fields)."""

    kind: str
    detail: dict


@dataclass(frozen=True)
class Program:
    """Point ``key``'s entry at ``new`` (``why`` as the table event says)."""

    key: xap.FlowKey
    old: xap.Device
    new: xap.Device
    why: str


Action = Log | Program | tm.Action


class SwitchFailover:
    """The switch's part. ``xap`` and ``placement`` are the switch's own (its table's owners,
    its placement policy); ``node`` is the switch's TCH port (``tm.TchNode`` on its control
    address), whose actions the driver sends and logs and gives back to ``on_session``."""

    def __init__(self, cluster: Cluster, devices: dict[str, xap.Device], xap_switch:
                 xap.XapSwitch, placement: Placement, node: tm.TchNode, now: float) -> None:
        self.cluster, self.devices, self.xap, self.placement = cluster, devices, xap_switch, \
            placement
        self.node = node
        self.by_ip = {d.ip: d for d in devices.values()}
        self.avoid: set[str] = set()  # devices given nothing (DOWN, DEGRADED, PREDICTED_FAIL)
        self.shadows = ShadowTable()
        self.monitor = HealthMonitor()  # (a device is watched from its first heartbeat on)
        self.sessions: dict[int, tuple[xap.FlowKey, str, float]] = {}  # -> flow, device, t0
        self.since: dict[xap.FlowKey, float] = {}  # when each flow came to its device
        self.moving: dict[xap.FlowKey, tuple[str, float]] = {}  # balance: target, deadline
        self.decider: SwitchDecider | None = None
        self.next_balance: float | None = None
        b = cluster.balance
        if b.get("policy", "weighted-balance") != "none" and \
                b.get("decider", "switch") == "switch":  # (else the devices decide)
            policy = shedding_policy(b)
            self.decider, self.period = SwitchDecider(policy), policy.period
            self.next_balance = now + self.period

    def live(self) -> dict[str, xap.Device]:
        return {n: d for n, d in self.devices.items() if n not in self.avoid}

    # ---- inputs ---------------------------------------------------------------------------

    def on_client(self, seg) -> None:
        """A client SYN, or a client segment with data (``lab.tcp.TcpSegment``)."""
        self.shadows.on_client(seg)

    def on_device(self, seg) -> None:
        """A device's SYN/ACK from the VIP."""
        self.shadows.on_device(seg)

    def heard(self, data: bytes, ip: str, now: float) -> list[Action]:
        """A ClusterStatus datagram from ``ip`` (UDP 4497 of the control address)."""
        return self._health(self.monitor.on_datagram(data, ip, now), now)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.monitor.next_deadline(), self.next_balance) if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> list[Action]:
        out = self._health(self.monitor.on_timer(now), now)
        if self.next_balance is not None and self.next_balance <= now:
            self.next_balance = now + self.period
            out += self._balance(now)
        return out

    def on_table(self, key: xap.FlowKey, device: str, now: float) -> None:
        """The switch pointed ``key`` at ``device`` (placed, moved by XAP or failover)."""
        self.since[key] = now
        if key in self.moving:
            to, _ = self.moving.pop(key)
            if to == device:
                self.decider.on_moved(key, to, now)
            else:
                self.decider.on_move_failed(key, now)

    def forget(self, key: xap.FlowKey) -> None:
        """The flow's entry went (the connection ended)."""
        self.shadows.forget((key.client_ip, key.client_port))
        self.since.pop(key, None)

    def on_session(self, s: tm.Session, a: tm.Action, now: float) -> list[Action]:
        """An action of one of the switch's sessions, as the dead device's stand-in (the
        table moved already) or as the requester of a handoff."""
        got = self.sessions.get(s.session_id)
        if got is None:
            return []
        key, to, t0 = got
        if isinstance(a, tm.ReprogramSwitch):
            return list(s.switch_updated(now))
        if not isinstance(a, tm.Finished):
            return []
        del self.sessions[s.session_id]
        outcome = {tm.Outcome.HANDED_OFF: "DONE", tm.Outcome.ACCEPTED: "ACCEPTED",
                   tm.Outcome.DENIED: "DENIED"}.get(a.outcome, "LOST")
        if outcome in ("DENIED", "LOST") and key in self.moving:
            del self.moving[key]
            self.decider.on_move_failed(key, now)
        return [Log("failover", {"client": _client(key), "new": to, "outcome": outcome,
                                 "why": a.reason, "ms": round((now - t0) * 1000, 1)})]

    # ---- decisions ------------------------------------------------------------------------

    def _health(self, events: list, now: float) -> list[Action]:
        out: list[Action] = []
        for ev in events:
            dev = self.by_ip.get(ev.peer)
            if dev is None:
                continue
            detail = {"device": dev.name, "old": ev.old.name, "new": ev.new.name,
                      "why": ev.event.name}
            if isinstance(ev, PeerDown):
                detail["detection_ms"] = round(ev.detection_time * 1000, 1)
            out.append(Log("health", detail))
            if isinstance(ev, PeerUp):
                self.avoid.discard(dev.name)
            else:
                self.avoid.add(dev.name)  # no new connections there
            if isinstance(ev, PeerDown):
                out += self._fail_over(dev, now)
            elif isinstance(ev, PeerPredictedFail):
                out += self._drain(dev, now)
        return out

    def _flows(self, dev: xap.Device) -> list[xap.FlowKey]:
        return [k for k, owner in self.xap.entries().items()
                if owner.name == dev.name and k.proto == IPPROTO_TCP]

    def _fail_over(self, dead: xap.Device, now: float) -> list[Action]:
        """Every TCP connection of ``dead`` to a live device, by its shadow."""
        c, out = self.cluster, []
        for key in self._flows(dead):
            sh = self.shadows.flows.get((key.client_ip, key.client_port))
            live = self.live()
            if sh is None or not sh.usable or not live:
                why = ("no live device" if not live else "no shadow" if sh is None else
                       "the shadow is incomplete (an upload, or a handshake not seen)")
                out.append(Log("failover", {"client": _client(key), "old": dead.name,
                                            "outcome": "LOST", "why": why}))
                continue
            to = self.placement.choose(live, self.xap.entries().values())
            out.append(Program(key, dead, to, "failover"))
            self.xap.placed(key, to.name)
            state = {"client_ip": key.client_ip, "client_port": key.client_port,
                     "cluster_ip": c.vip, "cluster_port": c.vport,
                     "seq": (sh.device_isn + 1) % _M, "ack": sh.client_next,
                     "mss": sh.client_mss}
            session, acts = self.node.open(to.ip, tm.Kind.FULL, state, now,
                                           app_state=sh.pack())
            self.sessions[session.session_id] = (key, to.name, now)
            out.append(Log("failover", {"client": _client(key), "old": dead.name,
                                        "new": to.name, "outcome": "STARTED"}))
            out += acts
        return out

    def _drain(self, dev: xap.Device, now: float) -> list[Action]:
        """Claim 34, check 23: a device predicts its failure; every connection it serves is
        handed to a live device while it still can, with a normal handoff's guarantees."""
        out: list[Action] = []
        for key in self._flows(dev):
            live = self.live()
            if not live:
                out.append(Log("failover", {"client": _client(key), "old": dev.name,
                                            "outcome": "LOST", "why": "no live device"}))
                continue
            to = self.placement.choose(live, self.xap.entries().values())
            out += self.ask(dev, key, to, "predicted failure", now)
        return out

    def ask(self, dev: xap.Device, key: xap.FlowKey, to: xap.Device, why: str,
            now: float) -> list[Action]:
        """Ask ``dev`` by Open(initiator=other) to hand the connection ``key`` to ``to``
        (named in the app state: "to=IP"); the device accepts or denies (check 17)."""
        c = self.cluster
        state = {"client_ip": key.client_ip, "client_port": key.client_port,
                 "cluster_ip": c.vip, "cluster_port": c.vport}
        session, acts = self.node.request(dev.ip, state, now, as_second=False,
                                          app_state=ask_state(to.ip))
        self.sessions[session.session_id] = (key, to.name, now)
        return [Log("failover", {"client": _client(key), "old": dev.name, "new": to.name,
                                 "outcome": "ASKED", "why": why}), *acts]

    def _balance(self, now: float) -> list[Action]:
        for key, (_, deadline) in list(self.moving.items()):
            if deadline <= now:
                del self.moving[key]
                self.decider.on_move_failed(key, now)
        entries = {k: o for k, o in self.xap.entries().items() if k.proto == IPPROTO_TCP}
        loads = []
        for name, dev in self.devices.items():
            peer = self.monitor.peers.get(dev.ip)
            if peer is None or peer.state not in (PeerState.UP, PeerState.DEGRADED):
                continue  # DOWN and PREDICTED_FAIL devices are failover's
            loads.append(DeviceLoad(name, weight=peer.status.weight, health=peer.status.health,
                                    sessions=tuple(Session(k, self.since.get(k, now))
                                                   for k, o in entries.items()
                                                   if o.name == name)))
        out: list[Action] = []
        for m in self.decider.decide(loads, now):
            self.moving[m.flow] = (m.dst, now + BALANCE_TIMEOUT)
            out += self.ask(self.devices[m.src], m.flow, self.devices[m.dst], "balance", now)
        return out


def ask_state(to_ip: str) -> bytes:
    """The app state of an Open(initiator=other): the device to hand the connection to."""
    return f"to={to_ip}".encode()


def asked_to(app_state: bytes) -> str:
    """The address ``ask_state`` named."""
    return app_state.removeprefix(b"to=").decode("ascii", "replace")


def _client(key: xap.FlowKey) -> str:
    return f"{key.client_ip}:{key.client_port}"
