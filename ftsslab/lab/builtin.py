"""The lab's own node kinds: ``host`` and ``switch`` (the engine's, not a seed system's).

A host is a namespace with a real kernel stack on veth, a recorder in the sim. A
switch is a Linux bridge for L2 learning plus seed 002's forwarding table as nftables
netdev rules, programmed by its control process ``switchd``; in the sim it is the
sans-IO ``SwitchCore``.
"""

from __future__ import annotations

from .kinds import NO_OPTIONS, KindSpec, register_kind
from .model import Endpoint, Node, Scenario
from .sim import HostCore, node_ifaces
from .switch import SwitchCore
from .veth import names
from .veth.drivers import NodeEnv, VethDriver

# STP off, no ageing within a lab, no multicast snooping; link-local groups other than
# 01-80-C2-00-00-0{0,1,2} pass (the sim's SwitchCore uses the same mask)
BRIDGE_OPTS = "stp_state 0 ageing_time 100000000 mcast_snooping 0 group_fwd_mask 0xfff8"
GROUP_FWD_MASK = 0xFFF8


def _host_setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    return [f"addr add {ep.ipv4} dev {ep.iface}" for ep in endpoints if ep.ipv4]


def _switch_setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    return [f"link add br0 type bridge {BRIDGE_OPTS}",
            *[f"link set {ep.iface} master br0" for ep in endpoints], "link set br0 up"]


def _switchd(node: Node, env: NodeEnv) -> list[str]:
    # -S: switchd needs only the stdlib and ftsslab (PYTHONPATH), and starts fast
    return ["-S", "-m", "ftsslab.lab.veth.switchd", "--lab", env.lab_id, "--node", node.name,
            "--ports", ",".join(env.ifaces),
            "--socket", names.switchd_socket(env.lab_id, node.name),
            "--log", names.switchd_log(env.lab_id, node.name)]


def _sim_host(node: Node, scenario: Scenario) -> HostCore:
    return HostCore(node.name, [(ep.iface, ep.mac, ep.ipv4) for link in scenario.links
                                for ep in (link.a, link.b) if ep.node == node.name])


def _sim_switch(node: Node, scenario: Scenario) -> SwitchCore:
    ifaces = node_ifaces(node.name, scenario)
    return SwitchCore([i for i, _ in ifaces], local_macs=[m for _, m in ifaces],
                      group_fwd_mask=GROUP_FWD_MASK, name=node.name)


HOST = register_kind(KindSpec(
    name="host",
    has_process=False,
    needs_kernel=False,
    validate_options=NO_OPTIONS,
    summary="an end host: a namespace with a real kernel stack on veth; in sim a recorder "
            "that answers ARP and runs `fetch` steps' client",
    sim=_sim_host,
    veth=VethDriver(_host_setup),
    ip_interfaces=True,
))

SWITCH = register_kind(KindSpec(
    name="switch",
    has_process=True,
    needs_kernel=False,
    validate_options=NO_OPTIONS,
    summary="seed 002's switch: forwarding table (client/VIP -> port, L2 NAT) over a learning "
            "bridge; its control process can be killed and restarted",
    sim=_sim_switch,
    veth=VethDriver(_switch_setup, _switchd),
    has_table=True,
    forwards=True,
    kill_stops_dataplane=False,  # the kernel's bridge and nftables keep forwarding
    reserved_ifaces=frozenset({"lo", "br0"}),
))
