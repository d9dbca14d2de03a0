"""What the runner needs from a backend; ``veth`` and ``sim`` both provide it.

Times are seconds since the lab came up (virtual in sim, monotonic on veth).
Every frame a backend sees on a link is a ``CapturedFrame``; every switch
table change, node process, link state or impairment change is an ``Event``.
The runner labels what a step caused through ``set_step`` so captures can carry
it as a pcapng comment.
"""

from __future__ import annotations

import functools
import itertools
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .fetch import CLIENT, PIPELINED
from .model import ForwardingEntry, Impairments, Scenario

FETCH_SLACK = 5.0  # seconds an exec'd client may take beyond its own timeout (start-up)
_FETCH_TAGS = itertools.count()
# a background fetch: the client's output and status in files of the lab's directory
_BACKGROUND = ('o="$FTSSLAB_LAB_DIR/$0"; "$@" > "$o.out" 2> "$o.err"; echo $? > "$o.tmp"; '
               'mv "$o.tmp" "$o.status"')
_COLLECT = ('o="$FTSSLAB_LAB_DIR/$0"; while [ ! -f "$o.status" ]; do sleep 0.05; done; '
            'cat "$o.out"; cat "$o.err" >&2; exit "$(cat "$o.status")"')


class BackendError(RuntimeError):
    """The backend cannot do what the scenario asks (one line for the user)."""


@dataclass(frozen=True)
class CapturedFrame:
    time: float
    link: str        # Link.name
    src: str         # endpoint name the frame left ("h1:eth0")
    dst: str         # endpoint name it arrived at ("s1:p1")
    data: bytes
    step: str        # label of the step running when it was seen ("" before any)
    impair: str = ""  # what an impaired link did to it (``impair.note``): "lost", "duplicate"..

    @property
    def delivered(self) -> bool:
        """It reached ``dst``: an impaired link can lose a frame it captured entering."""
        return not self.impair.startswith("lost")


@dataclass(frozen=True)
class Event:
    time: float
    node: str
    kind: str        # "table-add", "table-remove", "kill", "restart", "link-down", "link-up",
    #                  "impair"
    detail: str      # human-readable, e.g. the entry


@dataclass(frozen=True)
class ExecResult:
    argv: tuple[str, ...]
    status: int
    stdout: str
    stderr: str


class Backend(ABC):
    name: str

    @abstractmethod
    def up(self, scenario: Scenario) -> None:
        """Build the topology and start every node. On failure, leave nothing behind."""

    @abstractmethod
    def down(self) -> None:
        """Remove everything ``up`` created (idempotent; also after a partial ``up``)."""

    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: sleep on veth, run the virtual clock in sim."""

    @abstractmethod
    def set_step(self, label: str) -> None: ...

    @abstractmethod
    def send(self, endpoint: str, frame: bytes) -> None:
        """Put ``frame`` on the wire out of ``endpoint`` ("h1:eth0")."""

    @abstractmethod
    def exec(self, node: str, argv: tuple[str, ...], timeout: float,
             background: bool = False) -> ExecResult | None:
        """Run a command in a node's namespace (veth only; sim raises BackendError)."""

    @abstractmethod
    def set_link(self, link: str, up: bool) -> None: ...

    @abstractmethod
    def impair(self, link: str, impair: Impairments) -> None:
        """Replace the impairments of a link ``Scenario.impaired_links`` names (a, b order)."""

    @abstractmethod
    def table(self, switch: str, op: str, entry: ForwardingEntry) -> None:
        """Add or remove a forwarding entry through the switch's control process."""

    @abstractmethod
    def entries(self, switch: str) -> list[ForwardingEntry]: ...

    def node_events(self, node: str) -> list[dict]:
        """The events ``node``'s process logged (``kind`` and fields), oldest first."""
        return list(self.reports().get(node, {}).get("events", []))

    def fetch(self, node: str, urls: tuple[str, ...], timeout: float,
              background: bool = False, pipeline: bool = False) -> Callable[[], ExecResult]:
        """GET ``urls`` over one connection from ``node`` (``fetch.py``); returns how to
        read the result (a background fetch's is waited for then, up to ``timeout``).
        ``pipeline``: each next request goes out once half the current body arrived.

        This default runs the unmodified client ``fetch.CLIENT`` (``PIPELINED``) with ``exec``
        in the node's namespace; the sim overrides it with its modelled client."""
        client = (sys.executable, "-I", "-c", PIPELINED if pipeline else CLIENT, f"{timeout:g}",
                  *urls)
        if not background:
            res = self.exec(node, client, timeout + FETCH_SLACK)
            return lambda: res
        tag = f"fetch-{node}-{next(_FETCH_TAGS)}"
        self.exec(node, ("sh", "-c", _BACKGROUND, tag, *client), timeout, background=True)

        @functools.cache
        def result() -> ExecResult:
            got = self.exec(node, ("sh", "-c", _COLLECT, tag), timeout + FETCH_SLACK)
            return ExecResult(client, got.status, got.stdout, got.stderr)
        return result

    def handoff(self, node: str, to: str, client_port: int | None, htype: str = "full") -> None:
        """Ask ``node``'s process to hand a live connection to ``to`` (kinds with
        ``hands_off``), whole or half (``htype``); it goes on in the background."""
        raise BackendError(f"the {self.name} backend cannot hand connections off")

    def verb(self, node: str, args: Mapping[str, Any]) -> None:
        """An application on ``node`` makes a call (kinds with ``verbs``); its results are
        the node's events."""
        raise BackendError(f"the {self.name} backend models no verbs")

    def set_health(self, node: str, health: str) -> None:
        """Make ``node``'s process report ``health`` (kinds with ``hands_off``)."""
        raise BackendError(f"the {self.name} backend models no health reports")

    @abstractmethod
    def process(self, node: str, action: str) -> None:
        """"kill" (SIGKILL) or "restart" a node's process."""

    @abstractmethod
    def frames(self) -> list[CapturedFrame]:
        """Every frame seen so far, one capture per link (no duplicates), in time order."""

    @abstractmethod
    def events(self) -> list[Event]: ...

    def reports(self) -> dict[str, dict]:
        """Node name -> what its core reports of its own decisions (``report()``), for the
        nodes whose kind keeps one; read before the lab goes down."""
        return {}

    def problems(self) -> list[str]:
        """What went wrong inside the lab itself, one line each: a node process that died
        without a ``kill`` step, a node that caught a bug of its own (internal errors).
        The runner fails a run that has any. The sim has none: there a bug raises."""
        return []
