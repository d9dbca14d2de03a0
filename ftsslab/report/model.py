"""What a report shows, as plain data: built from a capture (and a run's result, when there is
one) by ``ftsslab.report.build``, drawn by ``ftsslab.report.render``.

Keeping the model apart from the drawing lets tests check the grouping (which frames make an
exchange, what was folded) without a browser, and the browser test check the drawing against
the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DISSECT = 4000  # frames a report dissects and groups by default; the rest are counted


@dataclass(frozen=True)
class NodeBox:
    """A node of the topology; ``kind`` is the scenario's kind, or "" for a capture's lane."""

    name: str
    kind: str = ""


@dataclass(frozen=True)
class LinkLine:
    """A link between two ``node:if`` endpoints, and what crossed it."""

    a: str
    b: str
    mtu: int | None = None
    impair: str = ""    # "a->b: loss 1% ; b->a: delay 5ms", "" when none
    frames: int = 0
    bytes: int = 0

    @property
    def name(self) -> str:
        return f"{self.a} {self.b}"


@dataclass(frozen=True)
class Topology:
    nodes: tuple[NodeBox, ...]
    links: tuple[LinkLine, ...]
    drawn_from: str     # "scenario" or "capture"


@dataclass(frozen=True)
class Moment:
    """One entry of the timeline: a step starting, an event, or an expectation's verdict."""

    time: float | None  # seconds from the run's start (None: a verdict checked at the end)
    kind: str           # "step", "event" or "verdict"
    label: str          # the step's label, the event's kind, the expectation
    detail: str = ""
    node: str = ""
    passed: bool | None = None  # verdicts only


@dataclass(frozen=True)
class Layer:
    name: str
    fields: tuple[tuple[str, str], ...]  # (field name, value as Scapy shows it)


@dataclass(frozen=True)
class Frame:
    """One captured frame, as an arrow from lane ``src`` to lane ``dst``."""

    number: int         # 1-based, as Wireshark numbers it
    time: float         # seconds from the capture's first frame
    src: str            # lane (node, or address for a foreign capture)
    dst: str
    where: str          # "h1:eth0 -> s1:p1", or the capture's interface
    summary: str        # the top layer's mysummary()
    length: int
    step: str = ""      # the step that was running when it was seen
    note: str = ""      # what an impaired link did to it ("lost", "duplicate", ...)
    layers: tuple[Layer, ...] = ()
    data: bytes = b""   # the captured bytes (the field tree's hex view)


@dataclass(frozen=True)
class Exchange:
    """Frames that belong together: a request and its answers, or one family's longer dialogue
    (an FTSS store-and-deliver round, a TCH handoff, a TCP connection, an RDMA message)."""

    number: int
    family: str         # "ftss", "tch", "xap", "roce", "i2o", "tcp", "arp", ...
    title: str
    lanes: tuple[str, ...]  # in drawing order
    frames: tuple[int, ...]  # every frame number of the exchange
    drawn: tuple[int, ...]   # those drawn as arrows (all, unless folded)
    steps: tuple[str, ...] = ()

    @property
    def folded(self) -> int:
        return len(self.frames) - len(self.drawn)


@dataclass(frozen=True)
class Conversation:
    """Frames that were counted but not dissected (past the report's dissection budget)."""

    title: str          # "IPv4 10.0.0.1 <-> 10.0.0.2 TCP 80/4000", "FC 0x10000 <-> ...", ...
    frames: int
    bytes: int
    first: float
    last: float


@dataclass
class Report:
    title: str
    source: str                 # the capture's path
    topology: Topology
    timeline: list[Moment] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    frames: dict[int, Frame] = field(default_factory=dict)  # the drawn ones, by number
    undissected: list[Conversation] = field(default_factory=list)
    total_frames: int = 0
    dissected_frames: int = 0
    folds: list[str] = field(default_factory=list)  # what the report left out, in words
    backend: str = ""
    passed: bool | None = None  # the run's verdict, None for a bare capture
    damage: str = ""            # where and how the capture is damaged (what follows is lost)
