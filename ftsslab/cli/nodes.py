"""Talking to the node processes of a running veth lab (`ftsslab san`, `ftsslab i2o`): their
control sockets, their `verb` steps, and the events they log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from . import UserError
from .lab import attach, load


class LabNodes:
    def __init__(self, lab: str | None, nodes: Iterable[str], *kinds: str) -> None:
        from ..lab.veth import names

        backend = attach(lab)
        self.dir = names.lab_dir(backend.lab_id)
        self.scenario = load(Path(backend.state.scenario_path))
        for n in nodes:
            if n not in {x.name for x in self.scenario.nodes}:
                raise UserError(f"no node {n!r} in {self.scenario.name}")
            if self.scenario.node(n).kind not in kinds:
                raise UserError(f"{n} is a {self.scenario.node(n).kind}, not "
                                + " or ".join(kinds))

    def ask(self, node: str, request: dict) -> dict:
        from ..lab.veth.control import control_request

        try:
            reply = control_request(self.dir, node, request, timeout=30.0)
        except OSError as exc:
            raise UserError(f"{node} does not answer ({exc}); is its process running?") from None
        if not reply.get("ok"):
            raise UserError(f"{node}: {reply.get('error')}")
        return reply

    def verb(self, node: str, **args) -> None:
        self.ask(node, {"op": "verb", "args": args})

    def events(self, node: str, since: int) -> tuple[list[dict], int]:
        reply = self.ask(node, {"op": "events", "since": since})
        return reply["events"], since + len(reply["events"])

    def logged_since(self, node: str) -> int:
        return self.ask(node, {"op": "events", "since": 1 << 62})["total"]

    def wait_for(self, node: str, since: int, match: Callable[[dict], bool],
                 timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            got, since = self.events(node, since)
            for e in got:
                if match(e):
                    return e
            if not got:
                if time.monotonic() > end:
                    raise UserError(f"{node} did not finish within {timeout:g} s")
                time.sleep(0.05)
