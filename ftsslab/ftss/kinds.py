"""The kinds of seed 000: `ftss` (the FTSS, ``FtssCore``) and `server` (unit 122,
``ServerUnit``), registered once -- options with their ranges, checks against the
links, sim model (``sim_nodes``) and veth driver (the node process ``daemon.py``).

On veth every fabric/external interface is promiscuous: the FTSS's external port takes
frames addressed to other nodes' MACs, as the seed's link unit does. A server's
``stack`` link is a TAP device (Fig. 5): the host at its other end gets a TAP as its
network interface, and unit 122 (the daemon) holds the TAP's file, so every frame of
that kernel stack goes through the unit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ftsslab.lab.kinds import KindSpec, NodeView, Option, OptionIssue, option_schema, register_kind
from ftsslab.lab.model import Endpoint, Node
from ftsslab.lab.veth.drivers import NodeEnv, VethDriver

from .core import MAX_FILE
from .delivery import RETRY, WINDOW
from .sim_nodes import FSYNC_DELAY, sim_ftss, sim_server

FCOE_MTU = 2500  # FC-BB-5 "baby jumbo": default MTU of an ftss <-> server (fabric) link
SERVER_TAPS = frozenset({"stack"})


def _promisc(node: Node, endpoints: list[Endpoint]) -> list[str]:
    return [f"link set {ep.iface} promisc on" for ep in endpoints]


def _daemon(node: Node, env: NodeEnv) -> list[str]:
    return ["-m", "ftsslab.ftss.daemon", "--scenario", env.scenario_path, "--node", node.name,
            "--state", env.lab_dir]


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
    "retry": Option((int, float), default=RETRY, range=(1e-4, 60),
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
    "retry": Option((int, float), default=RETRY, range=(1e-4, 60),
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
    sim=sim_ftss,
    veth=VethDriver(_promisc, _daemon, control=True),
    link_mtu=FCOE_MTU,
    validate_topology=_ftss_topology,
))

SERVER = register_kind(KindSpec(
    name="server",
    has_process=True,
    needs_kernel=False,
    validate_options=_SERVER_VALIDATE,
    defaults=_SERVER_DEFAULTS,
    summary="a server's packet conversion and acknowledgment unit 122: its stack link "
            "<-> FTSS over fabric links A and B",
    sim=sim_server,
    veth=VethDriver(_promisc, _daemon, SERVER_TAPS, control=True),
    link_mtu=FCOE_MTU,
    validate_topology=_server_topology,
))
