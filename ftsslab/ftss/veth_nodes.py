"""The `ftss` and `server` kinds on the veth backend: ``daemon.py`` in the node's namespace.

Every interface is promiscuous: the FTSS's external port and a server's stack port
take frames addressed to other nodes' MACs (the inner frames), as the seed's link
unit and packet conversion unit do.
"""

from __future__ import annotations

from ftsslab.lab.model import Endpoint, Node
from ftsslab.lab.veth.drivers import VethDriver, register_veth_driver


def _setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    return [f"link set {ep.iface} promisc on" for ep in endpoints]


def _args(node: Node, scenario: str, lab_dir: str) -> list[str]:
    return ["--scenario", scenario, "--node", node.name, "--state", lab_dir]


for _kind in ("ftss", "server"):
    register_veth_driver(_kind, VethDriver(_setup, "ftsslab.ftss.daemon", _args))
