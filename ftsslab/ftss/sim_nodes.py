"""The cores of the `ftss` and `server` kinds, built from a scenario, and their sim models.

``ftss_factory``/``server_factory`` build ``FtssCore``/``ServerUnit`` from a node's
options exactly as the veth daemon does. A server has two fabric links to the FTSS
(``fa``, ``fb``: fabric A and B) and a ``stack`` link: its peer (a ``host``) stands for
the server's own protocol stack 116, so ``send: {from: app1:eth0, ...}`` is the
application sending and ``received: {node: app1, ...}`` counts what unit 122 handed
up. In the sim, a node's
store is a dict and durability is a virtual fsync ``fsync_delay`` after a ``Persist``
(``SimDurable``): everything submitted before the fsync completes at once (group
commit). Killing a node loses what was not fsynced; restarting it recovers the rest
(``FtssCore.recover``; a unit gets back the keys it handed up and a new msg-id epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftsslab.lab.model import Node, Scenario
from ftsslab.lab.sim import node_ifaces

from .actions import FTSS_FC_ID, TIME_EPS, Forget, Persist, Transmit
from .core import FtssCore
from .unit import ServerUnit

FSYNC_DELAY = 100e-6  # virtual seconds an fsync takes


def _peer_macs(name: str, scenario: Scenario) -> dict[str, str]:
    """iface of ``name`` -> MAC of the endpoint at the other end of its link."""
    out = {}
    for link in scenario.links:
        for ep, other in ((link.a, link.b), (link.b, link.a)):
            if ep.node == name:
                out[ep.iface] = other.mac
    return out


class SimDurable:
    """A core with a virtual store: the sim backend's view of an ``ftss`` or ``server`` node.

    ``Persist`` is durable ``fsync_delay`` after it was submitted (one virtual fsync covers
    everything submitted before it: group commit); a kill loses the core and what was not
    fsynced; a restart makes a new core and hands it the records (``recover``).
    """

    has_process = True

    def __init__(self, make: Callable[[], Any], fsync_delay: float, grace: float):
        self._make = make
        self.core = make()
        self.fsync_delay = fsync_delay
        self.grace = grace
        self.store: dict[int, tuple[int, bytes]] = {}  # durable records
        self._syncing: list[tuple[float, Persist]] = []  # submitted, fsync not done yet
        self._forgotten: set[int] = set()
        self._ready: list[Transmit] = []  # produced outside a frame/timer call
        self._now = 0.0

    def _run(self, actions: list, now: float) -> list[Transmit]:
        out = []
        for action in actions:
            if isinstance(action, Persist):
                self._syncing.append((now + self.fsync_delay, action))
            elif isinstance(action, Forget):
                if self.store.pop(action.record_id, None) is None:
                    self._forgotten.add(action.record_id)
            else:
                out.append(action)
        return out

    def _flush(self, now: float) -> list[Transmit]:
        """A sim event is a batch of one: the core's ``flush`` after each."""
        flush = getattr(self.core, "flush", None)
        return self._run(flush(now), now) if flush is not None else []

    def on_frame(self, iface: str, frame: bytes, now: float) -> list[Transmit]:
        self._now = now
        return self._run(self.core.on_frame(iface, frame, now), now) + self._flush(now)

    def set_port(self, iface: str, up: bool) -> None:
        self._ready += self._run(self.core.on_port(iface, up, self._now), self._now)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.core.next_deadline(),) if t is not None]
        if self._syncing:
            times.append(self._syncing[0][0])
        if self._ready:
            times.append(self._now)
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Transmit]:
        self._now = now
        out, self._ready = self._ready, []
        due = now + TIME_EPS
        done = [p for t, p in self._syncing if t <= due]
        self._syncing = [(t, p) for t, p in self._syncing if t > due]
        for p in done:  # one fsync covered them all
            if p.record_id in self._forgotten:
                self._forgotten.discard(p.record_id)
            else:
                self.store[p.record_id] = (p.kind, p.payload)
        batch = getattr(self.core, "on_durable_batch", None)
        if batch is not None and done:  # one group commit, as the veth daemon reports it
            out += self._run(batch([p.record_id for p in done], now), now)
        else:
            for p in done:
                out += self._run(self.core.on_durable(p.record_id, now), now)
        return out + self._run(self.core.on_timer(now), now) + self._flush(now)

    def report(self) -> dict:
        return self.core.report()

    def on_kill(self, now: float) -> list[Transmit]:
        """The process dies: RAM (the core, unsynced writes) is gone; the store stays."""
        self._syncing, self._ready, self._forgotten = [], [], set()
        return []

    def on_restart(self, now: float) -> list[Transmit]:
        self._now = now
        self.core = self._make()
        records = [(rid, kind, payload) for rid, (kind, payload) in sorted(self.store.items())]
        return self._run(self.core.recover(records, now, grace=self.grace), now)


def ftss_factory(node: Node, scenario: Scenario) -> tuple[Callable[[], FtssCore], float]:
    """A maker of fresh ``FtssCore``s for ``node`` (one per process life) and its
    ``recover_grace``; the sim and the veth daemon build the FTSS the same way."""
    o = node.options
    ext = o.get("external")
    ifaces = dict(node_ifaces(node.name, scenario))
    if ext is not None and ext not in ifaces:
        raise ValueError(f"{node.name}: external port {ext!r} is not on a link")
    fabric = {i: m for i, m in ifaces.items() if i != ext}

    def make() -> FtssCore:
        core = FtssCore(o["node_id"], fabric, external_port=ext,
                        external_macs=o.get("external_macs", ()),
                        echo_external=o["echo_external"], retry=o["retry"],
                        window=o["window"], retain=o["retain"], retain_max=o["retain_max"],
                        capacity=o["capacity"], capacity_bytes=o["capacity_bytes"],
                        max_file=o["max_file"])
        for route in o.get("routes", ()):  # static entries of routing table 146
            peers = {}
            for port in route.get("ports", ()):
                peer = _peer_macs(node.name, scenario).get(port)
                if peer is None:
                    raise ValueError(f"{node.name}: route port {port!r} is not on a link")
                peers[port] = peer
            core.add_route(route["node_id"], route.get("macs", ()), peers)
        return core

    make()  # configuration errors surface now, when the lab comes up
    return make, o["recover_grace"]


def server_factory(node: Node, scenario: Scenario) -> Callable[[int], ServerUnit]:
    """A maker of ``ServerUnit``s for ``node``, given the msg id epoch."""
    o = node.options
    peers = _peer_macs(node.name, scenario)
    own = dict(node_ifaces(node.name, scenario))
    for iface in (*o["fabric"], o["stack"]):
        if iface not in own:
            raise ValueError(f"{node.name}: interface {iface!r} is not on a link")
    macs = o.get("macs") or [peers[o["stack"]]]
    node_id = o["node_id"]

    def make(epoch: int) -> ServerUnit:
        return ServerUnit(node_id, {p: own[p] for p in o["fabric"]},
                          {p: peers[p] for p in o["fabric"]}, o["stack"], macs,
                          fc_id=FTSS_FC_ID | (node_id & 0xFF) << 8, mode=o["mode"],
                          retry=o["retry"], window=o["window"],
                          hello_interval=o["hello_interval"],
                          hold_time=o["hold_time"], poll=o["poll"], epoch=epoch)

    return make


def sim_ftss(node: Node, scenario: Scenario) -> SimDurable:
    make, grace = ftss_factory(node, scenario)
    return SimDurable(make, node.options["fsync_delay"], grace)


def sim_server(node: Node, scenario: Scenario) -> SimDurable:
    """Each life of the unit gets the next msg-id epoch (the veth daemon's epoch file)."""
    make = server_factory(node, scenario)
    lives = iter(range(2**32))
    return SimDurable(lambda: make(next(lives)), FSYNC_DELAY, 0.0)
