"""Scenario kinds `ftss` (``FtssCore``) and `server` (``ServerUnit``) and their sim models.

Importing this module registers both kinds and their sim models (``kinds.py`` does,
at its end). A server has two fabric links to the FTSS (``fa``, ``fb``: fabric A and
B) and a ``stack`` link: its peer (a ``host``) stands for the server's own protocol
stack 116, so ``send: {from: app1:eth0, ...}`` is the application sending and
``received: {node: app1, ...}`` counts what unit 122 handed up. In the sim, the store
is a dict and durability is a virtual fsync ``fsync_delay`` after a ``Persist``:
everything submitted before the fsync completes at once (group commit). Killing the
FTSS loses what was not fsynced; restarting it runs ``FtssCore.recover`` on the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftsslab.lab.kinds import KindSpec, Option, option_schema, register_kind
from ftsslab.lab.model import Node, Scenario
from ftsslab.lab.sim import SIM_NODE_FACTORIES, node_ifaces

from .actions import FTSS_FC_ID, TIME_EPS, Forget, Persist, Transmit
from .core import FtssCore
from .unit import ServerUnit

FSYNC_DELAY = 100e-6  # virtual seconds an fsync takes
FCOE_MTU = 2500  # FC-BB-5 "baby jumbo": default MTU of an ftss <-> server (fabric) link


def _peer_macs(name: str, scenario: Scenario) -> dict[str, str]:
    """iface of ``name`` -> MAC of the endpoint at the other end of its link."""
    out = {}
    for link in scenario.links:
        for ep, other in ((link.a, link.b), (link.b, link.a)):
            if ep.node == name:
                out[ep.iface] = other.mac
    return out


class SimFtss:
    """An ``FtssCore`` plus a virtual store: the sim backend's view of an FTSS node."""

    has_process = True

    def __init__(self, make: Callable[[], FtssCore], fsync_delay: float, grace: float):
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

    def on_frame(self, iface: str, frame: bytes, now: float) -> list[Transmit]:
        self._now = now
        return self._run(self.core.on_frame(iface, frame, now), now)

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
        for p in done:
            out += self._run(self.core.on_durable(p.record_id, now), now)
        return out + self._run(self.core.on_timer(now), now)

    def on_kill(self, now: float) -> list[Transmit]:
        """The process dies: RAM (the core, unsynced writes) is gone; the store stays."""
        self._syncing, self._ready, self._forgotten = [], [], set()
        self.core = self._make()
        return []

    def on_restart(self, now: float) -> list[Transmit]:
        self._now = now
        records = [(rid, kind, payload) for rid, (kind, payload) in sorted(self.store.items())]
        return self._run(self.core.recover(records, now, grace=self.grace), now)


class SimServer:
    """A ``ServerUnit``; a restart starts a new unit with a new msg id epoch."""

    has_process = True

    def __init__(self, make: Callable[[int], ServerUnit]):
        self._make = make
        self._epoch = 0
        self.unit = make(0)

    def on_frame(self, iface: str, frame: bytes, now: float) -> list[Transmit]:
        return self.unit.on_frame(iface, frame, now)

    def set_port(self, iface: str, up: bool) -> None:
        self.unit.set_port(iface, up)

    def next_deadline(self) -> float | None:
        return self.unit.next_deadline()

    def on_timer(self, now: float) -> list[Transmit]:
        return self.unit.on_timer(now)

    def on_restart(self, now: float) -> list[Transmit]:
        self._epoch += 1
        self.unit = self._make(self._epoch)
        return []


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
                        echo_external=o["echo_external"], retry=o["retry"], retain=o["retain"],
                        retain_max=o["retain_max"], capacity=o["capacity"])
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
                          retry=o["retry"], hello_interval=o["hello_interval"],
                          hold_time=o["hold_time"], poll=o["poll"], epoch=epoch)

    return make


def _sim_ftss(node: Node, scenario: Scenario) -> SimFtss:
    make, grace = ftss_factory(node, scenario)
    return SimFtss(make, node.options["fsync_delay"], grace)


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _node_id(value: Any) -> str | None:
    return None if 0 < value < 2**32 else "a node id is 1 .. 2^32-1"


def _routes(value: Any) -> str | None:
    for r in value:
        if not isinstance(r, dict) or not isinstance(r.get("node_id"), int) or \
                set(r) - {"node_id", "macs", "ports"}:
            return "each route is {node_id: N, macs: [..], ports: [..]}"
    return None


_FTSS_VALIDATE, _FTSS_DEFAULTS = option_schema({
    "node_id": Option(int, default=92, check=_node_id, doc="node_id: the FTSS's node id"),
    "external": Option(str, doc="external: the interface of external network port 148"),
    "external_macs": Option(list, doc="external_macs: MACs always sent to the external port"),
    "echo_external": Option(bool, default=False, doc="echo_external: copy fabric traffic out"),
    "retry": Option((int, float), default=0.02, check=_positive, doc="retry: seconds"),
    "retain": Option((int, float), default=0, doc="retain: seconds delivered packets stay"),
    "retain_max": Option(int, default=1024, check=_positive, doc="retain_max: FIFO capacity"),
    "capacity": Option(int, default=100_000, check=_positive, doc="capacity: records"),
    "fsync_delay": Option((int, float), default=FSYNC_DELAY, doc="fsync_delay: seconds"),
    "recover_grace": Option((int, float), default=0.5, doc="recover_grace: seconds"),
    "routes": Option(list, check=_routes, doc="routes: [{node_id: 1, macs: [..], ports: [a1]}]"),
})

_SERVER_VALIDATE, _SERVER_DEFAULTS = option_schema({
    "node_id": Option(int, required=True, check=_node_id, doc="node_id: 1 .. 2^32-1"),
    "mode": Option(str, default="packet", choices=("packet", "file")),
    "fabric": Option(list, default=["fa", "fb"], doc="fabric: [fabric A iface, fabric B iface]"),
    "stack": Option(str, default="stack", doc="stack: the iface toward the server's stack"),
    "macs": Option(list, doc="macs: inner MACs served (default: the stack link's peer)"),
    "retry": Option((int, float), default=0.02, check=_positive, doc="retry: seconds"),
    "hello_interval": Option((int, float), default=0.2, check=_positive, doc="seconds"),
    "hold_time": Option(int, default=1, check=_positive, doc="hold_time: whole seconds"),
    "poll": Option((int, float), default=0.005, check=_positive, doc="poll: seconds (file)"),
})

FTSS = register_kind(KindSpec(
    name="ftss",
    has_process=True,
    needs_kernel=False,
    validate_options=_FTSS_VALIDATE,
    defaults=_FTSS_DEFAULTS,
    summary="seed 000's fault tolerant storage system: stores, acknowledges and routes "
            "packets between servers' fabric links and an external port",
    link_mtu=FCOE_MTU,
), replace=True)

SERVER = register_kind(KindSpec(
    name="server",
    has_process=True,
    needs_kernel=False,
    validate_options=_SERVER_VALIDATE,
    defaults=_SERVER_DEFAULTS,
    summary="a server's packet conversion and acknowledgment unit 122: its stack link "
            "<-> FTSS over fabric links A and B",
    link_mtu=FCOE_MTU,
), replace=True)

SIM_NODE_FACTORIES["ftss"] = _sim_ftss
SIM_NODE_FACTORIES["server"] = lambda node, scenario: SimServer(server_factory(node, scenario))
