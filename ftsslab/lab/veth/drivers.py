"""How the veth backend runs node kinds of later issues (FTSS, servers, …).

A kind registers a ``VethDriver``: the ``ip`` commands that prepare its
namespace (beyond bringing its links up) and the module its node process runs
inside that namespace. The backend starts, SIGKILLs and restarts that process
for the scenario's ``kill``/``restart`` steps, exactly as it does for switchd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import Endpoint, Node


@dataclass(frozen=True)
class VethDriver:
    # ip -batch commands run in the node's namespace after its links exist
    setup: Callable[[Node, list[Endpoint]], list[str]]
    # `python -m <module> <args>` run in the namespace; args(node, scenario file, lab dir)
    module: str
    args: Callable[[Node, str, str], list[str]]
    # interfaces that are not veth ends but TAP devices: the peer endpoint's interface is
    # created as a TAP in the peer's namespace and the node process holds its file
    tap_ifaces: frozenset[str] = frozenset()


VETH_DRIVERS: dict[str, VethDriver] = {}


def register_veth_driver(kind: str, driver: VethDriver) -> None:
    VETH_DRIVERS[kind] = driver


# Kinds of later issues register their drivers on import (they import this module back).
import ftsslab.ftss.veth_nodes  # noqa: E402, F401, I001  -- seed 000: `ftss`, `server`
