# SPDX-License-Identifier: GPL-2.0-or-later
"""The kinds of seed 002: `nas-switch` (the switch as a virtual IP host, with its
forwarding table, XAP control and placement of new connections) and `nas` (a NAS
device serving a volume over HTTP/1.1 on the VIP, able to hand a live connection to
another device by TCH).

Both run a process of their own on veth (``switchd.py``, ``device.py``) and a model in the
sim (``sim.py``) that drives the same cores (check 30).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ftsslab.lab.kinds import KindSpec, NodeView, Option, OptionIssue, option_schema, register_kind
from ftsslab.lab.model import Endpoint, Node
from ftsslab.lab.veth.drivers import NodeEnv, VethDriver

from .balance import check_balance
from .cluster import MAX_FILE_SIZE, PLACEMENTS, ROOT_PREFIX_RE, TCH_EMBODIMENTS, XAP_CARRIERS
from .pair import STANDBY_METRIC
from .proxy import MAX_LIMIT
from .sim import NasDeviceSim, NasSwitchSim


def _ipv4(value: str) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return f"not an IPv4 address: {value!r}"
    return None


def _iface_addr(value: str) -> str | None:
    try:
        ipaddress.IPv4Interface(value)
    except ValueError:
        return f"not an address with a prefix length like 10.0.0.254/24: {value!r}"
    return None if "/" in value else f"{value!r} needs a prefix length, like {value}/24"


def _root(value: dict) -> OptionIssue | None:
    for prefix, device in value.items():
        if not isinstance(prefix, str) or not ROOT_PREFIX_RE.fullmatch(prefix):
            return OptionIssue(f".{prefix}", f"not a path prefix: {prefix!r}",
                               'a prefix starts and ends with "/", like "/d1/"')
        if not isinstance(device, str):
            return OptionIssue(f".{prefix}", f"expected a device name, got {device!r}")
    return None


def _files(value: dict) -> OptionIssue | None:
    hint = 'each file is {size: BYTES (up to 1 GiB), seed: N} or {text: "..."}'
    for path, spec in value.items():
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/") \
                or path.endswith("/"):
            return OptionIssue(f".{path}", f"not a file path: {path!r}",
                               'an absolute path without "..", like "/d1/big.bin"')
        if not isinstance(spec, dict) or not spec or set(spec) - {"size", "seed", "text"} \
                or ("text" in spec) == ("size" in spec):
            return OptionIssue(f".{path}", f"not a file: {spec!r}", hint)
        size, seed, body = spec.get("size", 0), spec.get("seed", 0), spec.get("text", "")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
            return OptionIssue(f".{path}.size", f"not a size: {size!r}", hint)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            return OptionIssue(f".{path}.seed", f"not a seed 0..2^32-1: {seed!r}", hint)
        if not isinstance(body, str):
            return OptionIssue(f".{path}.text", f"expected text, got {body!r}", hint)
    return None


_SWITCH_VALIDATE, _SWITCH_DEFAULTS = option_schema({
    "vip": Option(str, required=True, check=_ipv4,
                  doc="vip: the virtual IP address clients talk to, like 10.0.0.100"),
    "vport": Option(int, default=80, range=(1, 65535),
                    doc="vport: the service port on the VIP (HTTP), 1..65535"),
    "address": Option(str, required=True, check=_iface_addr,
                      doc="address: the switch's own control address with its prefix "
                          "(XAP is sent to it), like 10.0.0.254/24"),
    "placement": Option(str, default="round-robin", choices=PLACEMENTS,
                        doc="placement: how new connections find a device"),
    "xap": Option(str, default="udp", choices=XAP_CARRIERS,
                  doc="xap: udp (the first device asks, UDP 5016) or tcp-option (the second "
                      "device claims the flow by option 253 on one of its packets; veth only)"),
    "tch": Option(str, default="segments", choices=TCH_EMBODIMENTS,
                  doc="tch: how devices hand a connection off: segments (the first "
                      "embodiment, TCP flags HND/SET/END, Figs. 4-5) or messages (the second, "
                      "Open / Open Response / Message on UDP 4494, Figs. 6 and 9)"),
    "predictive": Option(bool, default=False,
                         doc="predictive: with tch: messages, every device opens a predictive "
                             "TCH session to each other device as a connection starts, kept "
                             "by Updates; a handoff turns one into it (check 16)"),
    "balance": Option(dict, default={"policy": "none"}, check=check_balance,
                      doc="balance: shedding by the switch (claim 52, D2.13), like {policy: "
                          "weighted-balance, decider: switch, threshold: 1, dwell: 1s, "
                          "max_moves: 4, period: 1s}; needs failover: true (the heartbeats "
                          "are the load reports)"),
    "parent": Option(str,
                     doc="parent: the nas-switch this one is a device of (a cascade, claims "
                         "12 and 24): it has the parent's VIP, and its link to the parent is "
                         "its client port"),
    "standby": Option(str,
                      doc="standby: the nas-switch this one is the hot standby of (Fig. 12, "
                          "check 28): linked to it and to each of its devices, it mirrors its "
                          "table, hears its heartbeats and, when they stop, takes over its "
                          "MAC, VIP and control address (gratuitous ARP); veth only"),
    "failover": Option(bool, default=False,
                       doc="failover: devices send ClusterStatus heartbeats (UDP 4497, every "
                           "100 ms); the switch keeps a shadow of each connection and moves a "
                           "silent device's connections to another device (claim 41)"),
    "root": Option(dict, default={}, check=_root,
                   doc='root: the virtual root directory, prefix -> device, like {"/d1/": d1}'),
})

_NAS_VALIDATE, _NAS_DEFAULTS = option_schema({
    "files": Option(dict, default={}, check=_files,
                    doc='files: the volume, path -> {size: N, seed: S} or {text: "..."}'),
    "redirect": Option(bool, default=True,
                       doc="redirect: hand a connection to the device the root directory "
                           "names for a request's path (fast path, claim 10)"),
    "tcp": Option(str, default="kernel", choices=("kernel", "user"),
                  doc="tcp: whose TCP serves the clients -- kernel (sockets, TCP_REPAIR) or "
                      "user (ftsslab's own endpoint over AF_PACKET, the device model the sim "
                      "runs): needed by both devices of a half-handoff (D2.6)"),
    "proxy_limit": Option(int, range=(0, MAX_LIMIT),
                          doc="proxy_limit: answer requests for another device's files by "
                              "proxy until a connection got this many bytes from it, then "
                              f"move there (B2.12; 0..{MAX_LIMIT}; veth only)"),
    "ask_above": Option(int, range=(0, MAX_LIMIT),
                        doc="ask_above: when another device fetches a whole file of this "
                            "many bytes or more from this one to relay it, ask it for the "
                            "client's connection instead (Open initiator=second, B2.31, "
                            "check 17); needs the switch's tch: messages; veth only"),
})


def _one_switch_link(node: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    """A device has one link to a nas-switch, with an address in the switch's subnet; and
    one more, without an address (it keeps its one), if that switch has a hot standby."""
    switches = [p for p in node.ports.values() if p.peer_kind == "nas-switch"]
    standby = [p for p in switches if p.peer_node in nodes
               and nodes[p.peer_node].options.get("standby")]
    active = [p for p in switches if p not in standby]
    pairs = len(active) == 1 and all(nodes[p.peer_node].options["standby"] == active[0].peer_node
                                     for p in standby)
    if len(node.ports) != len(switches) or len(active) != 1 or len(standby) > 1 or not pairs:
        return [OptionIssue("", f"{node.name} needs exactly one link to a nas-switch, and "
                            "one more to that switch's standby if it has one (it has "
                            f"{len(node.ports)})", "links: [\"d1:eth0 s1:p2\"]")]
    port = active[0]
    if standby and standby[0].ipv4 is not None:
        return [OptionIssue("", f"{node.name}:{standby[0].iface} (to the standby "
                            f"{standby[0].peer_node}) has an address", "a device has one "
                            "address, on its link to the active switch: drop this ipv4")]
    if port.ipv4 is None:
        return [OptionIssue("", f"{node.name}:{port.iface} has no address",
                            "give the device's own address: ipv4: 10.0.0.11/24")]
    switch = nodes[port.peer_node].options if port.peer_node in nodes else {}
    if _iface_addr(switch.get("address", "")) is not None:
        return []  # the switch's own options are wrong: reported there
    net = ipaddress.IPv4Interface(switch["address"]).network
    if ipaddress.IPv4Interface(port.ipv4).ip not in net:
        return [OptionIssue("", f"{node.name}'s address {port.ipv4} is outside "
                            f"{port.peer_node}'s subnet {net}", "devices and the switch's "
                            "control address share one subnet")]
    if node.options.get("ask_above") is not None and switch.get("tch") != "messages":
        return [OptionIssue("ask_above", "a device asks for another's connection by the "
                            "second embodiment's Open (initiator=second)",
                            f"{port.peer_node}: tch: messages")]
    if node.options.get("tcp") != "user":
        return []
    if switch.get("tch", "segments") != "messages":
        return [OptionIssue("tcp", "a tcp: user device hands connections off by the second "
                            "embodiment's messages (its model's first-embodiment segments "
                            "are not wired on veth)", f"{port.peer_node}: tch: messages")]
    missing = [o for o in ("failover", "predictive") if switch.get(o)]
    missing += [o for o in ("proxy_limit", "ask_above") if node.options.get(o) is not None]
    if missing:
        return [OptionIssue("tcp", f"a tcp: user device is the device model, which has no "
                            f"{' or '.join(missing)} yet", "tcp: kernel")]
    return []


def _standby_topology(node: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    """A standby serves its active's VIP, has a link to it and to each of its devices."""
    active = node.options["standby"]
    up = nodes.get(active)
    hint = "standby: the active switch's name"
    if up is None or up.kind != "nas-switch" or up.options.get("standby") \
            or not any(p.peer_node == active for p in node.ports.values()):
        return [OptionIssue("standby", f"{active!r} is not an active nas-switch on a link of "
                            f"{node.name}", hint)]
    issues = []
    if (up.options.get("vip"), up.options.get("vport")) != (node.options["vip"],
                                                            node.options["vport"]):
        issues.append(OptionIssue("vip", f"a standby serves its active's VIP "
                                  f"({up.options.get('vip')}:{up.options.get('vport')})",
                                  f"vip: {up.options.get('vip')}"))
    front = [p for p in node.ports.values() if p.peer_kind not in ("nas", "nas-switch")]
    if len(front) != 1:
        issues.append(OptionIssue("standby", f"a standby has one client port, {node.name} has "
                                  f"{len(front)}", "one link to the client segment"))
    mine = {p.peer_node for p in node.ports.values() if p.peer_kind == "nas"}
    theirs = {p.peer_node for p in up.ports.values() if p.peer_kind == "nas"}
    if mine != theirs:
        issues.append(OptionIssue("standby", f"{node.name} must reach every device of "
                                  f"{active} and no other (missing: "
                                  f"{', '.join(sorted(theirs - mine)) or 'none'}; extra: "
                                  f"{', '.join(sorted(mine - theirs)) or 'none'})",
                                  "link each device to both switches"))
    for name in ("parent", "failover", "predictive"):
        if node.options.get(name) or up.options.get(name):
            issues.append(OptionIssue(name, f"a switch pair (standby) with {name} is not "
                                      "built yet", f"drop {name} from {node.name} and "
                                      f"{active}"))
    if node.options["placement"] == "delayed" or up.options["placement"] == "delayed":
        issues.append(OptionIssue("placement", "a standby mirrors the fast path's table; "
                                  "delayed binding's connections are not mirrored",
                                  "placement: round-robin"))
    return issues


def _switch_topology(node: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    issues = _standby_topology(node, nodes) if node.options.get("standby") else []
    devices = {p.peer_node for p in node.ports.values() if p.peer_kind == "nas"
               or p.peer_kind == "nas-switch" and p.peer_node in nodes
               and nodes[p.peer_node].options.get("parent") == node.name}
    parent = node.options.get("parent")
    if parent is not None:
        up = nodes.get(parent)
        linked = any(p.peer_node == parent for p in node.ports.values())
        if up is None or up.kind != "nas-switch" or not linked:
            issues.append(OptionIssue("parent", f"{parent!r} is not a nas-switch on a link of "
                                      f"{node.name}", "parent: the outer switch's name"))
        elif (up.options.get("vip"), up.options.get("vport")) != (node.options["vip"],
                                                                   node.options["vport"]):
            issues.append(OptionIssue("vip", f"a cascaded switch serves its parent's VIP "
                                      f"({up.options.get('vip')}:{up.options.get('vport')})",
                                      f"vip: {up.options.get('vip')}"))
    for prefix, device in node.options["root"].items():
        if device not in devices:
            issues.append(OptionIssue(f"root.{prefix}", f"{device!r} is not a nas device on a "
                                      f"link of {node.name}",
                                      "devices: " + (", ".join(sorted(devices)) or "none")))
    if node.options["placement"] == "delayed" and not node.options["root"]:
        issues.append(OptionIssue("placement", "delayed binding picks the device from the "
                                  "root directory, which is empty", 'root: {"/d1/": d1}'))
    if node.options["failover"] and node.options["placement"] == "delayed":
        issues.append(OptionIssue("failover", "failover follows connections the fast path "
                                  "placed; delayed binding's are not shadowed yet",
                                  "placement: round-robin"))
    balance = node.options["balance"]
    if balance.get("policy", "weighted-balance") != "none":
        if not node.options["failover"]:
            issues.append(OptionIssue("balance", "the switch decides from the devices' load "
                                      "reports, which are the failover heartbeats",
                                      "failover: true"))
    if node.options["predictive"] and node.options["tch"] != "messages":
        issues.append(OptionIssue("predictive", "predictive sessions are the second "
                                  "embodiment's", "tch: messages"))
    if node.options["tch"] == "messages" and node.options["xap"] != "udp":
        issues.append(OptionIssue("xap", "with tch: messages the first device reprograms "
                                  "the switch (Fig. 6 (7)): the claim carrier is for segments",
                                  "xap: udp"))
    if not devices:
        issues.append(OptionIssue("", f"{node.name} has no nas device on its links",
                                  "link nas nodes to it"))
    return issues


def _switch_setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    from ftsslab.lab.builtin import BRIDGE_OPTS

    o = node.options
    # a standby's process bridges its ports (``pair.py``): its client ports only when it
    # takes over -- until then they would close a loop through the active switch -- and
    # the VIP is not its yet
    ports = [] if o.get("standby") else [ep.iface for ep in endpoints]
    return [f"link add br0 type bridge {BRIDGE_OPTS}",
            *[f"link set {p} master br0" for p in ports],
            "link set br0 up", f"addr add {o['address']} dev br0",
            *([] if o.get("standby") else [f"addr add {o['vip']}/32 dev br0"])]


def _device_setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    """The device's one address on each link; on a second link (to a standby switch, Fig.
    12) with a lower preference, so its route is used only when the first link is down."""
    own = next((ep.ipv4 for ep in endpoints if ep.ipv4), None)
    return [f"addr add {ep.ipv4} dev {ep.iface}" if ep.ipv4 else
            f"addr add {own} dev {ep.iface} metric {STANDBY_METRIC}"
            for ep in endpoints if ep.ipv4 or own]


def _program(module: str):
    def program(node: Node, env: NodeEnv) -> list[str]:
        return ["-m", module, "--scenario", env.scenario_path, "--node", node.name,
                "--state", env.lab_dir]
    return program


NAS_SWITCH = register_kind(KindSpec(
    name="nas-switch",
    has_process=True,
    needs_kernel=False,
    validate_options=_SWITCH_VALIDATE,
    defaults=_SWITCH_DEFAULTS,
    summary="seed 002's switch as a virtual IP host: owns the VIP, places new connections "
            "on NAS devices and moves them when a device asks by XAP",
    sim=NasSwitchSim,
    veth=VethDriver(_switch_setup, _program("ftsslab.nas.switchd"), control=True),
    has_table=True,
    forwards=True,
    fenced_peer=lambda options: options.get("standby"),
    hands_off=True,  # an active switch hands a session to its standby (claims 56-62)
    kill_stops_dataplane=False,  # the bridge and the nftables table stay in the kernel
    keeps_offload=True,  # its packet sockets read headers only, and only clients' frames whole
    reserved_ifaces=frozenset({"lo", "br0"}),
    validate_topology=_switch_topology,
))

NAS = register_kind(KindSpec(
    name="nas",
    has_process=True,
    needs_kernel=False,
    validate_options=_NAS_VALIDATE,
    defaults=_NAS_DEFAULTS,
    summary="seed 002's NAS device: serves its volume over HTTP/1.1 on the VIP and hands "
            "live connections to other devices by TCH",
    sim=NasDeviceSim,
    veth=VethDriver(_device_setup, _program("ftsslab.nas.device"), control=True),
    ip_interfaces=True,
    hands_off=True,
    keeps_offload=True,  # held frames come from clients, whose links keep real checksums
    validate_topology=_one_switch_link,
))
