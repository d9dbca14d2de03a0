"""Run a scenario on a backend: the timeline of steps, then the expectations.

The runner is backend-neutral: the same code drives ``veth`` (real) and ``sim``
(virtual clock). It never touches sockets itself; it asks the backend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from scapy.layers.l2 import Ether

from ..expr import parse_packet, parse_pattern
from .backend import Backend, CapturedFrame, Event, ExecResult
from .model import (
    Absent,
    Check,
    CommandResult,
    Exec,
    Expectation,
    Fetch,
    Handoff,
    LinkState,
    Logged,
    NodeProcess,
    Received,
    Scenario,
    Send,
    SetHealth,
    SetImpairment,
    Step,
    TableHas,
    TableOp,
    Verb,
    Wait,
)
from .switch import format_entry

SETTLE = 0.05  # seconds after each step for frames in flight to land (virtual in sim)
POLL = 0.05  # seconds between two looks of a `wait: {until: ...}` step


@dataclass
class Outcome:
    """One expectation's verdict."""

    where: str
    line: int
    at: str  # "end" or the name of a check step
    what: str  # one-line description
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RunResult:
    scenario: Scenario
    backend: str
    outcomes: list[Outcome] = field(default_factory=list)
    frames: list[CapturedFrame] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    step_times: list[tuple[str, float]] = field(default_factory=list)
    duration: float = 0.0
    reports: dict[str, dict] = field(default_factory=dict)  # node -> its core's report()

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def frames_per_link(self) -> dict[str, int]:
        counts = Counter(f.link for f in self.frames)
        return {link.name: counts.get(link.name, 0) for link in self.scenario.links}

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario.name,
            "file": self.scenario.path,
            "backend": self.backend,
            "passed": self.passed,
            "duration": round(self.duration, 6),
            "expectations": [o.as_dict() for o in self.outcomes],
            "frames_per_link": self.frames_per_link(),
            "events": [e.__dict__ for e in self.events],
            "steps": [{"label": s, "time": round(t, 6)} for s, t in self.step_times],
            "reports": self.reports,
        }


class _Dissected:
    """Frames dissected once, lazily: expectations may look at many frames."""

    def __init__(self, frame: CapturedFrame):
        self.frame = frame

    @cached_property
    def pkt(self):
        return Ether(self.frame.data)


class Runner:
    def __init__(
        self,
        scenario: Scenario,
        backend: Backend,
        progress: Callable[[Step, int, int], None] | None = None,
    ):
        self.scenario = scenario
        self.backend = backend
        self.progress = progress
        self.execs: dict[str, ExecResult | None] = {}
        self.fetches: dict[str, Callable[[], ExecResult]] = {}
        self.waits: list[Outcome] = []  # `wait: {until}` steps that ran out
        self._dissected: dict[CapturedFrame, _Dissected] = {}

    def run(self) -> RunResult:
        result = RunResult(self.scenario, self.backend.name)
        self.backend.up(self.scenario)
        try:
            total = len(self.scenario.steps)
            for i, step in enumerate(self.scenario.steps, start=1):
                self.backend.set_step(step.label)
                result.step_times.append((step.label, self.backend.now()))
                if isinstance(step, Check):
                    self.backend.advance(SETTLE)
                    result.outcomes += self.evaluate(step.expectations, at=step.label)
                else:
                    self.do(step)
                    self.backend.advance(SETTLE)
                if self.progress:
                    self.progress(step, i, total)
            self.backend.set_step("")
            self.backend.advance(SETTLE)
            result.outcomes += self.waits
            result.outcomes += self.evaluate(self.scenario.expectations, at="end")
            result.outcomes += [Outcome("lab", 0, "end", "the lab's own processes are sound",
                                        False, p) for p in self.backend.problems()]
            result.reports = self.backend.reports()
            result.duration = self.backend.now()
            result.frames = self.backend.frames()
            result.events = self.backend.events()
        finally:
            self.backend.down()
        return result

    def do(self, step: Step) -> None:
        b = self.backend
        match step:
            case Send():
                data = bytes(parse_packet(step.packet))
                for n in range(step.count):
                    if n and step.interval:
                        b.advance(step.interval)
                    b.send(step.endpoint, data)
            case Exec():
                self.execs[step.label] = b.exec(
                    step.node, step.argv, step.timeout, background=step.background
                )
            case Fetch():
                self.fetches[step.label] = b.fetch(step.node, step.urls, step.timeout,
                                                   background=step.background,
                                                   pipeline=step.pipeline)
            case LinkState():
                b.set_link(step.link, step.up)
            case SetImpairment():
                b.impair(step.link, step.impair)
            case TableOp():
                b.table(step.switch, step.op, step.entry)
            case Handoff():
                b.handoff(step.node, step.to, step.client_port, step.type)
            case SetHealth():
                b.set_health(step.node, step.health)
            case Verb():
                b.verb(step.node, step.args)
            case NodeProcess():
                b.process(step.node, step.action)
            case Wait() if step.until:
                self._wait_until(step)
            case Wait():
                b.advance(step.seconds)
            case _:
                raise TypeError(f"unknown step {step!r}")

    def _wait_until(self, step: Wait) -> None:
        """Advance in ``POLL`` slices until every ``until`` expectation holds, for at most
        ``step.seconds``; a wait that runs out is a failed outcome of the step (the run
        goes on: what follows says what it missed)."""
        start = self.backend.now()
        while True:
            got = self.evaluate(step.until, at=step.label)
            waited = self.backend.now() - start
            if all(o.passed for o in got) or waited >= step.seconds:
                break
            self.backend.advance(POLL)
        if not all(o.passed for o in got):
            self.waits += [Outcome(o.where, o.line, step.label, f"wait until {o.what}", False,
                                   f"{o.detail} after {waited:.1f} s") for o in got
                           if not o.passed]

    # ---- expectations -----------------------------------------------------------------

    def _frames(self) -> list[_Dissected]:
        return [self._dissected.setdefault(f, _Dissected(f)) for f in self.backend.frames()]

    def evaluate(self, expectations: tuple[Expectation, ...], at: str) -> list[Outcome]:
        return [self.check(e, at) for e in expectations]

    def check(self, e: Expectation, at: str) -> Outcome:
        def outcome(what: str, passed: bool, detail: str) -> Outcome:
            return Outcome(e.where, e.line, at, what, passed, detail)

        match e:
            case Received():
                pattern = parse_pattern(e.match)
                target = f"{e.node}:{e.iface}" if e.iface else None
                n = sum(  # messages: an ACK that answers several PKTs counts as that many
                    pattern.count(d.pkt)
                    for d in self._frames()
                    if (d.frame.dst == target if target else d.frame.dst.startswith(e.node + ":"))
                    and d.frame.delivered
                )
                where = target or e.node
                if e.count is not None:
                    return outcome(
                        f"{where} received {e.count} × {e.match}", n == e.count, f"received {n}"
                    )
                lo, hi = e.min or 0, e.max
                ok = n >= lo and (hi is None or n <= hi)
                bound = f"{lo}..{hi}" if hi is not None else f"≥ {lo}"
                return outcome(f"{where} received {bound} × {e.match}", ok, f"received {n}")
            case Absent():
                pattern = parse_pattern(e.match)
                hits = [
                    d for d in self._frames() if d.frame.link == e.link and pattern.matches(d.pkt)
                ]
                detail = (
                    "none seen"
                    if not hits
                    else (
                        f"{len(hits)} seen, first at {hits[0].frame.time:.6f}s: "
                        f"{hits[0].pkt.summary()}"
                    )
                )
                return outcome(f"no {e.match} on {e.link}", not hits, detail)
            case CommandResult():
                got = self.fetches.get(e.step)
                res = got() if got is not None else self.execs.get(e.step)
                if res is None:
                    return outcome(f"command {e.step}", False, "did not run (or ran in background)")
                ok = (e.status is None or res.status == e.status) and (
                    e.contains is None or e.contains in res.stdout
                )
                want = [f"status {e.status}"] if e.status is not None else []
                want += [f"output has {e.contains!r}"] if e.contains is not None else []
                return outcome(
                    f"command {e.step}: {', '.join(want)}",
                    ok,
                    f"status {res.status}; stdout {res.stdout.strip()[-120:]!r}",
                )
            case TableHas():
                entries = self.backend.entries(e.switch)
                present = e.entry in entries
                verb = "has" if e.present else "lacks"
                return outcome(
                    f"{e.switch} table {verb} {format_entry(e.entry)}",
                    present == e.present,
                    f"{len(entries)} entries",
                )
            case Logged():
                events = self.backend.node_events(e.node)
                n = sum(1 for ev in events if ev.get("kind") == e.event
                        and all(ev.get(k) == v for k, v in e.fields))
                wanted = " ".join(f"{k}={v}" for k, v in e.fields)
                what = f"{e.node} logged {e.event} {wanted}".rstrip()
                if e.count is not None:
                    return outcome(f"{what} × {e.count}", n == e.count, f"logged {n}")
                lo, hi = e.min or 0, e.max
                bound = f"{lo}..{hi}" if hi is not None else f"≥ {lo}"
                return outcome(f"{what} × {bound}", n >= lo and (hi is None or n <= hi),
                               f"logged {n}")
        raise TypeError(f"unknown expectation {e!r}")

