"""A node kind with a bug, for tests: ``faulty`` raises on every frame, ``crashing`` exits.

Imported by the test (which registers the kinds in its own process) and run as a node
process by the veth backend (``python -m tests.lab.faulty_node``), where importing it
registers them again before the scenario is loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ftsslab.ftss.daemon import NodeProcess
from ftsslab.lab.kinds import NO_OPTIONS, KindSpec, register_kind
from ftsslab.lab.veth.control import control_path
from ftsslab.lab.veth.drivers import VethDriver


class FaultyCore:
    def __init__(self, crash: bool):
        self.crash = crash
        self.stats: dict[str, int] = {}

    def on_frame(self, port: str, frame: bytes, now: float) -> list:
        if self.crash:
            os._exit(7)
        raise ZeroDivisionError("a bug in the core")

    def on_port(self, port: str, up: bool, now: float) -> list:
        return []

    def next_deadline(self) -> None:
        return None


def _program(node, env) -> list[str]:
    return ["-m", "tests.lab.faulty_node", "--node", node.name, "--kind", node.kind,
            "--ifaces", ",".join(env.ifaces), "--state", env.lab_dir]


for _kind in ("faulty", "crashing"):
    register_kind(KindSpec(name=_kind, has_process=True, needs_kernel=True,
                           validate_options=NO_OPTIONS, summary="a test kind with a bug",
                           veth=VethDriver(lambda node, eps: [], _program, control=True)),
                  replace=True)



def main() -> int:
    ap = argparse.ArgumentParser()
    for flag in ("--node", "--kind", "--ifaces", "--state"):
        ap.add_argument(flag, required=True)
    args = ap.parse_args()
    proc = NodeProcess(FaultyCore(args.kind == "crashing"), args.ifaces.split(","), None,
                       control_path(args.state, args.node))
    (Path(args.state) / f"{args.node}.ready").touch()
    proc.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
