# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS cluster as its processes see it, derived from the scenario alone: the switch's
VIP, control address and devices (their own address, MAC and switch port), and each
device's switch. The switch and every device compute the same view from the same file.

Nonces (the XAP "security token which uniquely identifies a connection participant")
are assigned by the switch when it starts and written to ``<lab dir>/<switch>.nonces``
(mode 0600): a device reads its nonce there, as if it had registered.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsslab.lab.model import Node, Scenario

from .balance import PLACEMENT_POLICIES, DeviceLoad, placement_policy

PLACEMENTS = (*PLACEMENT_POLICIES, "delayed")
XAP_CARRIERS = ("udp", "tcp-option")  # how a handoff's change_connection reaches the switch
TCH_EMBODIMENTS = ("segments", "messages")  # Figs. 4-5 (TCP flags) or Figs. 6-9 (UDP 4494)
ROOT_PREFIX_RE = re.compile(r"/([A-Za-z0-9._~-]+/)*")
MAX_FILE_SIZE = 1 << 30
# the devices' UDP service on the VIP: echo (RFC 862), stateless, so a flow moves from device
# to device by a table rewrite alone (check 22, L382)
ECHO_PORT = 7


class Placement:
    """Where the fast path puts a new flow (B2.4 (b)): the one choice both backends make, by
    a policy of ``balance.PLACEMENT_POLICIES`` (round-robin for the delayed mode's flows
    without a path: UDP). ``devices`` by name, ``owners`` the device of every flow the table
    holds now."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self._p = placement_policy("round-robin" if policy == "delayed" else policy)

    def choose(self, devices: Mapping[str, Any], owners: Iterable[Any]) -> Any:
        count = Counter(o.name for o in owners)
        name = self._p.choose([DeviceLoad(n, reported=count[n]) for n in sorted(devices)])
        return devices[name if name is not None else min(devices)]


@dataclass(frozen=True)
class Device:
    name: str
    ip: str          # the device's own address (TCH, XAP), not the VIP
    mac: str
    iface: str       # the device's interface toward the switch
    switch_port: str  # the switch's port toward the device
    alt_mac: str | None = None  # its MAC on its link to this switch's partner (Fig. 12)
    alt_iface: str | None = None  # and its interface there


@dataclass(frozen=True)
class Pair:
    """A switch and its hot standby (Fig. 12, B2.47, D2.17), as one of them sees it."""
    partner: str     # the other switch's name
    standby: bool    # this switch is the standby (it takes over when the active goes silent)
    port: str        # this switch's port on the link between the two
    partner_ip: str  # the other's control address (table mirror, heartbeats)
    active_ip: str   # the active's control address, which the standby takes over
    active_mac: str  # the active's bridge MAC (its VIP's ARP answer), taken over too


@dataclass(frozen=True)
class Cluster:
    switch: str
    vip: str
    vport: int
    control_ip: str  # the switch's own address: XAP goes there
    prefix_len: int
    placement: str
    root: dict[str, str]  # prefix -> device name
    devices: dict[str, Device]
    client_ports: tuple[str, ...]  # the switch's ports that are not toward a device
    xap_carrier: str = "udp"  # "tcp-option": the second device claims the flow on its packets
    tch: str = "segments"  # how devices hand off: "messages" is the second embodiment
    failover: bool = False  # heartbeats, shadows, a silent device's connections moved
    predictive: bool = False  # predictive TCH sessions from every connection's start
    balance: dict = field(default_factory=lambda: {"policy": "none"})  # the shedding policy
    pair: Pair | None = None  # Fig. 12: the switch's partner (active or hot standby)

    def by_ip(self, ip: str) -> Device | None:
        return next((d for d in self.devices.values() if d.ip == ip), None)


def cluster_of(scenario: Scenario, node: str) -> Cluster:
    """The cluster ``node`` (a nas-switch or a nas device) belongs to."""
    n = scenario.node(node)
    if n.kind == "nas":  # the device's switch; of a pair (Fig. 12), the active one
        node = next(peer.node for ln in scenario.links for ep, peer in
                    ((ln.a, ln.b), (ln.b, ln.a)) if ep.node == node
                    and not scenario.node(peer.node).options.get("standby"))
        n = scenario.node(node)
    return _cluster(scenario, n)


def _links_of(scenario: Scenario, node: str):
    """(own endpoint, peer endpoint) of every link of ``node``."""
    return [(ep, peer) for ln in scenario.links for ep, peer in ((ln.a, ln.b), (ln.b, ln.a))
            if ep.node == node]


def _pair(scenario: Scenario, switch: Node) -> Pair | None:
    """``switch``'s partner in a Fig. 12 pair: its standby, or the active it stands by."""
    active = switch.options.get("standby")
    partner = active or next((n.name for n in scenario.nodes if n.kind == "nas-switch"
                              and n.options.get("standby") == switch.name), None)
    if partner is None:
        return None
    port = next(ep.iface for ep, peer in _links_of(scenario, switch.name)
                if peer.node == partner)
    ip = {n: str(ipaddress.IPv4Interface(scenario.node(n).options["address"]).ip)
          for n in (switch.name, partner)}
    act = active or switch.name
    return Pair(partner, active is not None, port, ip[partner], ip[act],
                bridge_mac(scenario, act))


def bridge_mac(scenario: Scenario, switch: str) -> str:
    """The MAC a Linux bridge takes: the lowest of its ports' (the VIP and control address
    answer ARP with it)."""
    return min(ep.mac for ln in scenario.links for ep in (ln.a, ln.b) if ep.node == switch)


def _cluster(scenario: Scenario, switch: Node) -> Cluster:
    o = switch.options
    addr = ipaddress.IPv4Interface(o["address"])
    pair = _pair(scenario, switch)
    devices, clients = {}, []
    for ep, peer in _links_of(scenario, switch.name):
        node = scenario.node(peer.node)
        if node.kind == "nas":
            own = [(e, p) for e, p in _links_of(scenario, peer.node)
                   if p.node in (switch.name, pair and pair.partner)]
            ip = next(e.ipv4 for e, _ in own if e.ipv4)  # one address, on the active's link
            alt = next((e for e, p in own if pair and p.node == pair.partner), None)
            devices[peer.node] = Device(peer.node, str(ipaddress.IPv4Interface(ip).ip),
                                        peer.mac, peer.iface, ep.iface, alt and alt.mac,
                                        alt and alt.iface)
        elif pair is not None and peer.node == pair.partner:
            continue  # the link between the pair: neither a device nor a client port
        elif node.kind == "nas-switch" and node.options.get("parent") == switch.name:
            # a cascade (claims 12, 24): the inner switch is one device of this one,
            # reached at its bridge; its own table places the flow on its devices
            inner = str(ipaddress.IPv4Interface(node.options["address"]).ip)
            devices[peer.node] = Device(peer.node, inner, bridge_mac(scenario, peer.node),
                                        peer.iface, ep.iface)
        else:
            clients.append(ep.iface)
    return Cluster(switch.name, o["vip"], o["vport"], str(addr.ip), addr.network.prefixlen,
                   o["placement"], dict(o["root"]), devices, tuple(clients), o["xap"],
                   o["tch"], o["failover"], o["predictive"], dict(o["balance"]), pair)


def nonce_path(lab_dir: str, switch: str) -> Path:
    return Path(lab_dir) / f"{switch}.nonces"


def assign_nonces(lab_dir: str, cluster: Cluster) -> dict[str, int]:
    """The switch's registration: one random 24-bit nonce per device, kept across a restart
    of the switch process (written once, fsync'd, then renamed into place)."""
    path = nonce_path(lab_dir, cluster.switch)
    if path.exists():
        return read_nonces(path)
    nonces, used = {}, {0}
    # an active switch of a pair registers itself too: its mirror's requests at the standby
    own = [cluster.switch] if cluster.pair is not None and not cluster.pair.standby else []
    for name in [*sorted(cluster.devices), *own]:
        while (n := secrets.randbits(24)) in used:
            pass
        used.add(n)
        nonces[name] = n
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(nonces, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    return nonces


def read_nonces(path: Path) -> dict[str, int]:
    with open(path) as f:
        return {str(k): int(v) for k, v in json.load(f).items()}


def file_bytes(spec: dict) -> bytes:
    """A volume file's content: its text, or ``size`` pseudo-random bytes from ``seed``
    (the same bytes on every device and run, so a client's copy can be checked)."""
    if "text" in spec:
        return spec["text"].encode()
    return random.Random(spec.get("seed", 0)).randbytes(spec["size"])
