"""A validated scenario, as plain frozen dataclasses.

The loader (``ftsslab.lab.scenario``) turns YAML into these or into a list of errors; the
runner and both backends only ever see these. ``where`` is the YAML path of the
item (``steps[3].send``) and ``line`` its 1-based line, for runtime messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Endpoint:
    node: str
    iface: str
    mac: str  # always set: given, or derived deterministically by the loader
    ipv4: str | None = None  # "10.0.0.1/24" (hosts only)

    @property
    def name(self) -> str:
        return f"{self.node}:{self.iface}"


def max_frame(data: bytes, mtu: int) -> int:
    """The longest frame a link of ``mtu`` carries: MTU + Ethernet header (+ one VLAN tag)."""
    return mtu + (18 if data[12:14] in (b"\x81\x00", b"\x88\xa8") else 14)


@dataclass(frozen=True)
class Impairment:
    """What a link does to the frames of one direction (``ftsslab.lab.impair``); all off by
    default. Probabilities are 0..1, times seconds, ``rate`` bits per second (0: no limit)."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0      # delay +/- jitter, uniform; at most ``delay``
    reorder: float = 0.0     # share of frames that skip the delay (needs ``delay``)
    duplicate: float = 0.0
    corrupt: float = 0.0     # one bit flipped after the Ethernet header
    rate: int = 0

    @property
    def active(self) -> bool:
        return self != NO_IMPAIRMENT

    def summary(self) -> str:
        """``loss 1% delay 5ms``: the values that are set, in the file's units."""
        parts = [f"{k} {getattr(self, k) * 100:g}%" for k in
                 ("loss", "reorder", "duplicate", "corrupt") if getattr(self, k)]
        parts += [f"{k} {getattr(self, k) * 1000:g}ms" for k in ("delay", "jitter")
                  if getattr(self, k)]
        if self.rate:
            unit, per = next((u, n) for u, n in (("gbit", 10**9), ("mbit", 10**6),
                                                  ("kbit", 1000), ("bit", 1)) if self.rate >= n)
            parts.append(f"rate {self.rate / per:g}{unit}")
        return " ".join(parts) or "none"


NO_IMPAIRMENT = Impairment()
# (frames leaving the link's ``a`` end, frames leaving its ``b`` end)
Impairments = tuple[Impairment, Impairment]
NO_IMPAIRMENTS: Impairments = (NO_IMPAIRMENT, NO_IMPAIRMENT)


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int = 1500
    impair: Impairments = NO_IMPAIRMENTS
    seed: int | None = None  # the link's own seed for its impairments (else the scenario's)

    @property
    def name(self) -> str:
        return f"{self.a.name} {self.b.name}"

    def other(self, endpoint: str) -> Endpoint:
        return self.b if self.a.name == endpoint else self.a

    def impair_text(self, impair: Impairments) -> str:
        """Both directions' impairments in one line (events, reports)."""
        return (f"{self.a.name} -> {self.b.name}: {impair[0].summary()}; "
                f"{self.b.name} -> {self.a.name}: {impair[1].summary()}")


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # "host", "switch" (more kinds register later)
    options: dict = field(default_factory=dict)  # kind-specific, validated by the kind's schema


@dataclass(frozen=True)
class ForwardingEntry:
    """Seed 002's forwarding table: client address/port/protocol and virtual IP -> port.

    ``dst_mac`` is the seed's L2 NAT: the destination MAC rewritten on the way out.
    """

    vip: str  # the virtual IP (destination address of the client's packets)
    out_port: str  # switch interface name, e.g. "p2"
    client_ip: str | None = None  # None = any
    proto: int | None = None  # IP protocol number (6 tcp, 17 udp), None = any
    client_port: int | None = None  # transport source port, None = any
    vport: int | None = None  # transport destination port, None = any
    dst_mac: str | None = None  # rewrite the destination MAC (the seed's "L2 NAT")


# ---- steps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    where: str
    line: int
    label: str  # given `name:` or derived "steps[3]"


@dataclass(frozen=True)
class Send(Step):
    endpoint: str  # "h1:eth0": frames leave this interface
    packet: str  # safe expression (ftsslab.expr), checked at load time
    count: int = 1
    interval: float = 0.0  # seconds between copies


@dataclass(frozen=True)
class Exec(Step):
    node: str
    argv: tuple[str, ...]
    timeout: float = 30.0
    background: bool = False  # start and go on; killed at lab down


@dataclass(frozen=True)
class Fetch(Step):
    """GET ``urls`` (one server) over one keep-alive connection from host ``node``: a real
    client on veth, the host's modelled one in sim (``ftsslab.lab.fetch``)."""

    node: str
    urls: tuple[str, ...]
    timeout: float = 30.0
    background: bool = False  # start and go on; a `command` expectation waits for it
    pipeline: bool = False  # each next request once half the current body arrived


@dataclass(frozen=True)
class LinkState(Step):
    link: str  # Link.name
    up: bool


@dataclass(frozen=True)
class TableOp(Step):
    switch: str
    op: Literal["add", "remove"]
    entry: ForwardingEntry


@dataclass(frozen=True)
class NodeProcess(Step):
    node: str
    action: Literal["kill", "restart"]


@dataclass(frozen=True)
class Handoff(Step):
    """Ask ``node`` to hand a live connection it serves to device ``to`` (seed 002's TCH)."""

    node: str
    to: str
    client_port: int | None = None  # which connection (None: the one from the lowest port)
    type: str = "full"  # or a half-handoff: "half-client" (Fig. 7), "half-cluster" (Fig. 8)


@dataclass(frozen=True)
class SetHealth(Step):
    """Make ``node`` report ``health`` in its heartbeats (seed 002's predicted failure)."""

    node: str
    health: str  # "ok", "degraded", "predicted-fail"


@dataclass(frozen=True)
class Verb(Step):
    """An application on ``node`` makes one call (``args["op"]`` with its arguments, checked
    by the node's kind: ``KindSpec.verbs``); what follows is in the node's events."""

    node: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class Wait(Step):
    """``seconds`` pass; with ``until``, only until those expectations hold (``seconds`` is
    then the bound: a run that never gets there fails the step's outcome, and goes on)."""

    seconds: float
    until: tuple[Expectation, ...] = ()


@dataclass(frozen=True)
class SetImpairment(Step):
    """The link's impairments from now on (both directions; ``NO_IMPAIRMENTS`` clears)."""

    link: str  # Link.name
    impair: Impairments


@dataclass(frozen=True)
class Check(Step):
    """A named point: evaluate these expectations now."""

    expectations: tuple[Expectation, ...]


# ---- expectations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    where: str
    line: int


@dataclass(frozen=True)
class Received(Expectation):
    """Frames matching ``match`` that arrived at ``node`` (optionally on one interface)."""

    node: str
    match: str  # pattern (ftsslab.expr.parse_pattern)
    iface: str | None = None
    count: int | None = None  # exact
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Absent(Expectation):
    """No frame matching ``match`` on ``link`` (either direction)."""

    link: str
    match: str


@dataclass(frozen=True)
class CommandResult(Expectation):
    step: str  # label of an Exec or Fetch step
    status: int | None = 0
    contains: str | None = None  # in stdout


@dataclass(frozen=True)
class TableHas(Expectation):
    switch: str
    entry: ForwardingEntry
    present: bool = True


@dataclass(frozen=True)
class Logged(Expectation):
    """A node's process logged events of ``event`` whose fields include ``fields``
    (``Backend.node_events``: a NAS device's requests served, a switch's table changes)."""

    node: str
    event: str
    fields: tuple[tuple[str, str | int | float | bool | None], ...] = ()
    count: int | None = None
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    description: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    steps: tuple[Step, ...]
    expectations: tuple[Expectation, ...]
    backend: Literal["auto", "veth", "sim"] = "auto"
    seed: int = 0  # of every link's impairments, unless the link has its own

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def impaired_links(self) -> set[str]:
        """Links impaired when the lab comes up or by a step: on veth each gets its shim."""
        return {ln.name for ln in self.links if any(i.active for i in ln.impair)} | {
            s.link for s in self.steps if isinstance(s, SetImpairment)}

    def link_seed(self, link: Link) -> int:
        return self.seed if link.seed is None else link.seed

    def needs_kernel(self) -> bool:
        """Whether only the veth backend can run it (commands or kinds need a real stack)."""
        from .kinds import get_kind

        return (  # (a `command` expectation names an exec step, or a fetch: no kernel)
            any(isinstance(s, Exec) for s in self.steps)
            or any(get_kind(n.kind).needs_kernel for n in self.nodes)
        )
