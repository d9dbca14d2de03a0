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

    def by_ip(self, ip: str) -> Device | None:
        return next((d for d in self.devices.values() if d.ip == ip), None)


def cluster_of(scenario: Scenario, node: str) -> Cluster:
    """The cluster ``node`` (a nas-switch or a nas device) belongs to."""
    n = scenario.node(node)
    if n.kind == "nas":
        node = next(peer.node for ln in scenario.links for ep, peer in
                    ((ln.a, ln.b), (ln.b, ln.a)) if ep.node == node)
        n = scenario.node(node)
    return _cluster(scenario, n)


def bridge_mac(scenario: Scenario, switch: str) -> str:
    """The MAC a Linux bridge takes: the lowest of its ports' (the VIP and control address
    answer ARP with it)."""
    return min(ep.mac for ln in scenario.links for ep in (ln.a, ln.b) if ep.node == switch)


def _cluster(scenario: Scenario, switch: Node) -> Cluster:
    o = switch.options
    addr = ipaddress.IPv4Interface(o["address"])
    devices, clients = {}, []
    for ln in scenario.links:
        for ep, peer in ((ln.a, ln.b), (ln.b, ln.a)):
            if ep.node != switch.name:
                continue
            node = scenario.node(peer.node)
            if node.kind == "nas":
                devices[peer.node] = Device(peer.node, str(ipaddress.IPv4Interface(
                    peer.ipv4).ip), peer.mac, peer.iface, ep.iface)
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
                   o["tch"], o["failover"], o["predictive"], dict(o["balance"]))


def nonce_path(lab_dir: str, switch: str) -> Path:
    return Path(lab_dir) / f"{switch}.nonces"


def assign_nonces(lab_dir: str, cluster: Cluster) -> dict[str, int]:
    """The switch's registration: one random 24-bit nonce per device, kept across a restart
    of the switch process (written once, fsync'd, then renamed into place)."""
    path = nonce_path(lab_dir, cluster.switch)
    if path.exists():
        return read_nonces(path)
    nonces, used = {}, {0}
    for name in sorted(cluster.devices):
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
