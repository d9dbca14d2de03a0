"""The command line every system's node process takes, as the veth backend starts it
(``python -m MODULE --scenario FILE --node NAME --state DIR``), and how it says it serves."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..model import Node, Scenario
from ..scenario import load_scenario


@dataclass(frozen=True)
class NodeArgs:
    scenario: Scenario
    node: Node
    state: Path  # the lab's directory

    def ready(self) -> None:
        """Tell the backend the process serves: it waits for ``<state>/<node>.ready``."""
        (self.state / f"{self.node.name}.ready").touch()


def node_args(description: str, argv: list[str] | None = None) -> NodeArgs:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--state", required=True, help="the lab's directory")
    args = ap.parse_args(argv)
    scenario = load_scenario(args.scenario)
    return NodeArgs(scenario, scenario.node(args.node), Path(args.state))
