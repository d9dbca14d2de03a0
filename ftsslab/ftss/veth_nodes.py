"""The `ftss` and `server` kinds on the veth backend: ``daemon.py`` in the node's namespace.

Every fabric/external interface is promiscuous: the FTSS's external port takes frames
addressed to other nodes' MACs, as the seed's link unit does. A server's ``stack`` link
is a TAP device (Fig. 5): the host at its other end gets a TAP as its network interface,
and unit 122 (the daemon) holds the TAP's file, so every frame of that kernel stack goes
through the unit.
"""

from __future__ import annotations

from ftsslab.lab.model import Endpoint, Node
from ftsslab.lab.veth.drivers import VethDriver, register_veth_driver


def _setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    return [f"link set {ep.iface} promisc on" for ep in endpoints]


def _args(node: Node, scenario: str, lab_dir: str) -> list[str]:
    return ["--scenario", scenario, "--node", node.name, "--state", lab_dir]


SERVER_TAPS = frozenset({"stack"})

register_veth_driver("ftss", VethDriver(_setup, "ftsslab.ftss.daemon", _args))
register_veth_driver("server", VethDriver(_setup, "ftsslab.ftss.daemon", _args, SERVER_TAPS))
