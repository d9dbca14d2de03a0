"""Scenario kinds `ftss` (``FtssCore``) and `server` (``ServerUnit``) and their sim models.

Importing this module registers both kinds and their sim models (``kinds.py`` does,
at its end). A server has two fabric links to the FTSS (``fa``, ``fb``: fabric A and
B) and a ``stack`` link: its peer (a ``host``) stands for the server's own protocol
stack 116, so ``send: {from: app1:eth0, ...}`` is the application sending and
``received: {node: app1, ...}`` counts what unit 122 handed up. In the sim, a node's
store is a dict and durability is a virtual fsync ``fsync_delay`` after a ``Persist``
(``SimDurable``): everything submitted before the fsync completes at once (group
commit). Killing a node loses what was not fsynced; restarting it recovers the rest
(``FtssCore.recover``; a unit gets back the keys it handed up and a new msg-id epoch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ftsslab.lab.kinds import KindSpec, NodeView, Option, OptionIssue, option_schema, register_kind
from ftsslab.lab.model import Node, Scenario
from ftsslab.lab.sim import SIM_NODE_FACTORIES, node_ifaces

from .actions import FTSS_FC_ID, TIME_EPS, Forget, Persist, Transmit
from .core import MAX_FILE, FtssCore
from .delivery import WINDOW
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


def _sim_ftss(node: Node, scenario: Scenario) -> SimDurable:
    make, grace = ftss_factory(node, scenario)
    return SimDurable(make, node.options["fsync_delay"], grace)


def _sim_server(node: Node, scenario: Scenario) -> SimDurable:
    """Each life of the unit gets the next msg-id epoch (the veth daemon's epoch file)."""
    make = server_factory(node, scenario)
    lives = iter(range(2**32))
    return SimDurable(lambda: make(next(lives)), FSYNC_DELAY, 0.0)


NODE_ID = (1, 2**32 - 1)  # node ids are 32-bit fields of HELLO, PKT and ACK
MAX_MACS = 256  # MACs in one list option; a HELLO with 256 is a 1612-byte frame (FCoE MTU 2500)
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _macs(value: list) -> OptionIssue | None:
    """Unicast MACs as text (the cores parse them when the lab comes up)."""
    for i, mac in enumerate(value):
        if not isinstance(mac, str):
            return OptionIssue(f"[{i}]", f"expected a MAC address, got {mac!r}",
                               'quote MACs: YAML reads 12:34:56:00:00:02 unquoted as a number')
        if not _MAC_RE.fullmatch(mac.lower()):
            return OptionIssue(f"[{i}]", f"not a MAC address: {mac!r}",
                               'six hex bytes like "02:00:00:00:00:07" (quote it)')
        if int(mac[:2], 16) & 1:
            return OptionIssue(f"[{i}]", f"{mac} is a group address",
                               "these are the MACs of hosts: unicast, like 02:..")
    return None


def _ifaces(value: list) -> OptionIssue | None:
    for i, iface in enumerate(value):
        if not isinstance(iface, str):
            return OptionIssue(f"[{i}]", f"expected an interface name, got {iface!r}")
        if iface in value[:i]:
            return OptionIssue(f"[{i}]", f"{iface!r} is listed twice")
    return None


ROUTE_KEYS = ("node_id", "macs", "ports")


def _routes(value: list) -> OptionIssue | None:
    hint = "each route is {node_id: 1..4294967295, macs: [MAC, ..], ports: [1 or 2 ifaces]}"
    for i, r in enumerate(value):
        if not isinstance(r, dict) or set(r) - set(ROUTE_KEYS) or "node_id" not in r:
            return OptionIssue(f"[{i}]", f"not a route: {r!r}", hint)
        node_id = r["node_id"]
        if isinstance(node_id, bool) or not isinstance(node_id, int) or \
                not NODE_ID[0] <= node_id <= NODE_ID[1]:
            return OptionIssue(f"[{i}].node_id", f"not a node id: {node_id!r}", hint)
        macs, ports = r.get("macs", []), r.get("ports", [])
        if not isinstance(macs, list) or len(macs) > MAX_MACS:
            return OptionIssue(f"[{i}].macs", f"not a list of up to {MAX_MACS} MACs: {macs!r}",
                               hint)
        if not isinstance(ports, list) or not 1 <= len(ports) <= 2:
            return OptionIssue(f"[{i}].ports", f"not a list of 1 or 2 interfaces: {ports!r}",
                               hint)
        for key, why in (("macs", _macs(macs)), ("ports", _ifaces(ports))):
            if why is not None:
                return OptionIssue(f"[{i}].{key}{why.key}", why.message, why.hint or hint)
    return None


def _not_on_link(node: NodeView) -> str:
    return f"{node.name}'s interfaces on links: {', '.join(node.ports) or 'none'}"


def _ftss_topology(node: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    """What ``ftss_factory`` needs of the links: its external and route ports exist."""
    o, issues = node.options, []
    ext = o.get("external")
    if ext is not None and ext not in node.ports:
        issues.append(OptionIssue("external", f"{ext!r} is not an interface of {node.name} "
                                  "on a link", _not_on_link(node)))
    for i, route in enumerate(o.get("routes", ())):
        if route["node_id"] == o["node_id"]:
            issues.append(OptionIssue(f"routes[{i}].node_id", f"{route['node_id']} is "
                                      f"{node.name}'s own node id", "route to other nodes"))
        for j, port in enumerate(route.get("ports", ())):
            where = f"routes[{i}].ports[{j}]"
            if port not in node.ports:
                issues.append(OptionIssue(where, f"{port!r} is not an interface of "
                                          f"{node.name} on a link", _not_on_link(node)))
            elif port == ext:
                issues.append(OptionIssue(where, f"{port!r} is the external port",
                                          "routes name fabric ports"))
    return issues


def _server_topology(node: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    """What ``server_factory`` needs of the links, and a node id no other node uses."""
    o, issues = node.options, []
    for i, iface in enumerate(o["fabric"]):
        if iface not in node.ports:
            default = "" if "fabric" in node.given else "; fabric defaults to [fa, fb]"
            issues.append(OptionIssue(f"fabric[{i}]", f"fabric interface {iface!r} is not an "
                                      f"interface of {node.name} on a link",
                                      _not_on_link(node) + default))
    stack = o["stack"]
    if stack not in node.ports:
        default = "" if "stack" in node.given else "; stack defaults to 'stack'"
        issues.append(OptionIssue("stack", f"stack interface {stack!r} is not an interface of "
                                  f"{node.name} on a link", _not_on_link(node) + default))
    elif stack in o["fabric"]:
        key = "stack" if "stack" in node.given else f"fabric[{o['fabric'].index(stack)}]"
        issues.append(OptionIssue(key, f"{stack!r} is both the stack and a fabric interface",
                                  "the stack link and the fabric links are different links"))
    order = list(nodes)  # a clash of two servers is reported on the later one
    for other in nodes.values():
        earlier = other.kind == "server" and order.index(other.name) < order.index(node.name)
        if (earlier or other.kind == "ftss") and other.options["node_id"] == o["node_id"]:
            issues.append(OptionIssue("node_id", f"node id {o['node_id']} is also "
                                      f"{other.name}'s", "node ids are unique: the FTSS tells "
                                      "nodes (and its own external frames) apart by them"))
    return issues


_FTSS_VALIDATE, _FTSS_DEFAULTS = option_schema({
    "node_id": Option(int, default=92, range=NODE_ID,
                      doc="node_id: the FTSS's node id, 1..4294967295"),
    "external": Option(str, doc="external: the interface of external network port 148"),
    "external_macs": Option(list, range=(0, MAX_MACS), check=_macs,
                            doc="external_macs: up to 256 unicast MACs always sent out the "
                                "external port"),
    "echo_external": Option(bool, default=False, doc="echo_external: copy fabric traffic out"),
    "retry": Option((int, float), default=0.02, range=(1e-4, 60),
                    doc="retry: the first retransmission timeout in seconds (then it follows "
                        "the measured round trip), 0.0001..60"),
    "window": Option(int, default=WINDOW, range=(1, 1024),
                     doc="window: unacknowledged deliveries per node, 1..1024"),
    "retain": Option((int, float), default=0, range=(0, 65535),
                     doc="retain: seconds delivered packets stay, 0..65535 (like the PKT's "
                         "16-bit retention)"),
    "retain_max": Option(int, default=1024, range=(1, 1_000_000),
                         doc="retain_max: packets the retention FIFO holds, 1..1000000"),
    "capacity": Option(int, default=100_000, range=(1, 10_000_000),
                       doc="capacity: records the store holds, 1..10000000"),
    "capacity_bytes": Option(int, default=1 << 30, range=(1 << 16, 1 << 40),
                             doc="capacity_bytes: payload bytes the store holds, "
                                 "65536..2^40"),
    "max_file": Option(int, default=MAX_FILE, range=(1 << 10, 1 << 24),
                       doc="max_file: bytes one spool file may hold, 1024..16777216"),
    "fsync_delay": Option((int, float), default=FSYNC_DELAY, range=(0, 1),
                          doc="fsync_delay: virtual seconds an fsync takes (sim), 0..1"),
    "recover_grace": Option((int, float), default=0.5, range=(0, 60),
                            doc="recover_grace: seconds after a restart before recovered "
                                "packets are routed, 0..60"),
    "routes": Option(list, range=(0, 256), check=_routes,
                     doc="routes: up to 256 of {node_id: N, macs: [..], ports: [a1]}"),
})

_SERVER_VALIDATE, _SERVER_DEFAULTS = option_schema({
    "node_id": Option(int, required=True, range=NODE_ID,
                      doc="node_id: the server's node id, 1..4294967295"),
    "mode": Option(str, default="packet", choices=("packet", "file")),
    "fabric": Option(list, default=["fa", "fb"], range=(1, 2), check=_ifaces,
                     doc="fabric: 1 or 2 interfaces toward the FTSS, fabric A first"),
    "stack": Option(str, default="stack",
                    doc="stack: the interface toward the server's stack, not a fabric one"),
    "macs": Option(list, range=(0, MAX_MACS), check=_macs,
                   doc="macs: up to 256 inner MACs served (default: the stack link's peer)"),
    "retry": Option((int, float), default=0.02, range=(1e-4, 60),
                    doc="retry: the first retransmission timeout in seconds (then it follows "
                        "the measured round trip), 0.0001..60"),
    "window": Option(int, default=WINDOW, range=(1, 1024),
                     doc="window: unacknowledged packets to the FTSS, 1..1024"),
    "hello_interval": Option((int, float), default=0.2, range=(1e-3, 60),
                             doc="hello_interval: seconds between HELLOs, 0.001..60"),
    "hold_time": Option(int, default=1, range=(1, 65535),
                        doc="hold_time: whole seconds the FTSS keeps the route without a "
                            "HELLO, 1..65535 (16 bits in HELLO)"),
    "poll": Option((int, float), default=0.005, range=(1e-3, 60),
                   doc="poll: seconds between listings of in/ (file mode), 0.001..60"),
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
    validate_topology=_ftss_topology,
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
    validate_topology=_server_topology,
), replace=True)

SIM_NODE_FACTORIES["ftss"] = _sim_ftss
SIM_NODE_FACTORIES["server"] = _sim_server
