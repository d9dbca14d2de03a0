"""How the veth backend realizes a node kind: ``KindSpec.veth`` is a ``VethDriver``.

A driver gives the ``ip`` commands that prepare the node's namespace once its links
exist (addresses for a host, the bridge for a switch, promiscuous ports for the FTSS)
and, for a kind with a process of its own, the Python command line of that process.
The backend runs it inside the namespace, waits until it touches ``<lab dir>/<node>.ready``,
and SIGKILLs and restarts it for the scenario's ``kill``/``restart`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import Endpoint, Node


@dataclass(frozen=True)
class NodeEnv:
    """What a node process's command line may need to know about its lab."""

    lab_id: str
    lab_dir: str  # /run/ftsslab/<id>: state, sockets, stores; every process names it
    scenario_path: str  # absolute path of the scenario file
    ifaces: tuple[str, ...]  # the node's interfaces, in order of appearance


@dataclass(frozen=True)
class VethDriver:
    # ip -batch commands run in the node's namespace after its links exist
    setup: Callable[[Node, list[Endpoint]], list[str]]
    # `python <program(node, env)>` run in the namespace; None: the kind has no process
    program: Callable[[Node, NodeEnv], list[str]] | None = None
    # interfaces that are not veth ends but TAP devices: the peer endpoint's interface is
    # created as a TAP in the peer's namespace and the node process holds its file
    tap_ifaces: frozenset[str] = frozenset()
    # its process answers ``<node>.ctl`` (``control.py``): stats for the run's health
    # check, and its core's report
    control: bool = False

    def process_name(self, node: Node, env: NodeEnv) -> str:
        """The module the process runs (``switchd``, ``daemon``): names it in events."""
        args = self.program(node, env) if self.program else []
        module = args[args.index("-m") + 1] if "-m" in args else "process"
        return module.rsplit(".", 1)[-1]
