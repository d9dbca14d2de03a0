# SPDX-License-Identifier: GPL-2.0-or-later
"""Load balancing of seed 002 (B2.46, D2.13, claims 48 and 52, check 25) as a sans-IO core.

Two questions, each answered by a policy named in the scenario: where a new connection goes
(placement: :data:`PLACEMENT_POLICIES`) and which live sessions move where (shedding:
:data:`SHEDDING_POLICIES`). Two deciders run the same shedding policy objects:

* :class:`SwitchDecider` (claim 52): the switch, from every device's load report and its own
  forwarding table, returns moves of any device's sessions.
* :class:`DeviceDecider` (claim 48): a device, from its own sessions and the reports it heard
  from the others, returns moves of its own sessions only. Every device computes the plan the
  switch would from the same reports and performs its part of it, so devices deciding at once
  do not all pour into the same light device.

Inputs are records (:class:`DeviceLoad`, :class:`Session`); outputs are :class:`Move` records.
A returned move is in flight (the driver runs TCH and XAP) until the driver calls ``on_moved``
or ``on_move_failed``; until then it is never decided again and its effect is already counted.
No sockets, no time: every call takes ``now`` (seconds, any monotonic origin).

Weights. A device's share is its capacity weight times :data:`HEALTH_SHARE`: DEGRADED devices
count half (they still serve, so they keep some load), PREDICTED_FAIL devices none: they get no
new sessions and shed all they have, ignoring dwell and rate (draining a device that is about
to fail cannot oscillate: nothing ever moves to it). :class:`Health` has the values of
``ftsslab.nas.health.Health`` (OK=0, DEGRADED=1, PREDICTED_FAIL=2); either, or a plain int, is
accepted.

Hysteresis (``weighted-balance``). A move from g to r is made only while it lowers the
potential sum(n**2 / s) (n sessions, s share normalised to a mean of 1) by more than the
threshold allows, i.e. (n_g - 1/2) / s_g - (n_r + 1/2) / s_r > threshold - 1. With equal weights
that is n_g - n_r > threshold: threshold 1 ends with per-device counts within 1 of each other.
Each move strictly lowers the potential, so without arrivals, departures or health changes
the moves end; on top of that a session stays ``dwell`` seconds where it arrived (or after a
failed move) before it may move, no move reverses a move between the same two devices confirmed
within ``dwell``, and at most ``max_moves`` are decided per ``period`` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Protocol

from ftsslab.lab.kinds import OptionIssue, did_you_mean
from ftsslab.lab.scenario.values import DURATION_RE, MAX_DURATION

Flow = Hashable
"""A session's key: the forwarding table's (``xap.FlowKey``) or anything hashable but None."""
_EPS = 1e-9  # float slack on the gap test: an exact tie must never count as an imbalance


class BalanceError(ValueError):
    """A bad policy spec, or a driver call the move table does not allow (a driver bug)."""


class Health(IntEnum):
    """A device's health flag as its load report carries it (D2.12)."""

    OK = 0
    DEGRADED = 1
    PREDICTED_FAIL = 2


HEALTH_SHARE = {Health.OK: 1.0, Health.DEGRADED: 0.5, Health.PREDICTED_FAIL: 0.0}


@dataclass(frozen=True)
class Session:
    """One session a decider may move; ``since``: when it arrived on its device (placement or
    a confirmed move), by the driver's clock."""

    flow: Flow
    since: float


@dataclass(frozen=True)
class DeviceLoad:
    """One device as a decider sees it: its own state, or a heard load report (D2.12).

    ``sessions`` are the ones the decider knows by flow (the switch: its table's entries for
    the device; a device: its own). ``reported`` is a report's session count when the flows
    are not known; ``at`` is when the report was made, on the decider's clock (None: counted
    now), so that moves this decider saw confirmed since (or at that very time) are added to
    it. Confirmed moves are kept max(dwell, period): a report older than that counts as is."""

    name: str
    weight: float = 1.0
    health: Health | int = Health.OK
    sessions: tuple[Session, ...] = ()
    reported: int | None = None
    at: float | None = None

    @property
    def count(self) -> int:
        return len(self.sessions) if self.reported is None else self.reported

    @property
    def share(self) -> float:
        """Capacity weight scaled by health: 0 for a device that must take nothing new."""
        return self.weight * HEALTH_SHARE[Health(self.health)]


@dataclass(frozen=True)
class Move:
    """Hand ``flow`` from device ``src`` to ``dst`` (TCH, then XAP); ``drain``: ``src`` is
    PREDICTED_FAIL, the move skipped dwell and rate limits."""

    flow: Flow
    src: str
    dst: str
    drain: bool = False


# ---- placement -------------------------------------------------------------------------------

class PlacementPolicy(Protocol):
    def choose(self, devices: Sequence[DeviceLoad]) -> str | None:
        """The device for a new connection, or None when none has a share (all failing)."""


def _open(devices: Sequence[DeviceLoad]) -> list[DeviceLoad]:
    return sorted((d for d in devices if d.share > 0), key=lambda d: d.name)


class LeastWeighted:
    """D2.13's default: the device whose weighted load grows least by one more session,
    (n + 1/2) / share (the marginal cost of the potential the shedding policy lowers, so the
    two never disagree about which device is light), ties by name."""

    def choose(self, devices: Sequence[DeviceLoad]) -> str | None:
        devs = _open(devices)
        return min(devs, key=lambda d: ((d.count + 0.5) / d.share, d.name)).name if devs else None


class LeastConnections:
    """``cluster.Placement``'s least-connections: fewest sessions, weights ignored."""

    def choose(self, devices: Sequence[DeviceLoad]) -> str | None:
        devs = _open(devices)
        return min(devs, key=lambda d: (d.count, d.name)).name if devs else None


class First:
    """``cluster.Placement``'s first: the first device by name (a fixed, predictable owner)."""

    def choose(self, devices: Sequence[DeviceLoad]) -> str | None:
        devs = _open(devices)
        return devs[0].name if devs else None


class RoundRobin:
    """``cluster.Placement``'s round-robin: the devices by name in turn, from the first."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, devices: Sequence[DeviceLoad]) -> str | None:
        devs = _open(devices)
        if not devs:
            return None
        self._turn += 1
        return devs[(self._turn - 1) % len(devs)].name


PLACEMENT_POLICIES: dict[str, type[PlacementPolicy]] = {
    "least-weighted": LeastWeighted,
    "least-connections": LeastConnections,
    "round-robin": RoundRobin,
    "first": First,
}


def placement_policy(name: str) -> PlacementPolicy:
    """A fresh placement policy (round-robin keeps its turn per instance)."""
    if name not in PLACEMENT_POLICIES:
        raise BalanceError(f"unknown placement {name!r}: "
                           + did_you_mean(name, tuple(PLACEMENT_POLICIES)))
    return PLACEMENT_POLICIES[name]()


# ---- shedding --------------------------------------------------------------------------------

@dataclass
class Unit:
    """One device in a plan being built: ``count`` as projected so far, ``movable`` the flows
    the decider may move now (oldest first), ``unseen`` sessions it cannot name but whose
    owner may move them (another device's report, in a device's plan)."""

    name: str
    share: float
    count: int
    movable: list[Flow]
    unseen: int = 0


@dataclass(frozen=True)
class Step:
    """One move of a plan; ``flow`` None: a move of another device's (counted, not returned)."""

    flow: Flow | None
    src: str
    dst: str
    drain: bool


class SheddingPolicy(Protocol):
    dwell: float
    max_moves: int
    period: float

    def plan(self, units: list[Unit], budget: int,
             blocked: frozenset[tuple[str, str]]) -> list[Step]:
        """Moves that balance ``units`` (changed in place): at most ``budget`` named ones that
        are not drains, none named from g to r for (g, r) in ``blocked`` unless a drain."""


@dataclass(frozen=True)
class NoShedding:
    """``none``: sessions stay where placement put them (the behaviour before D2.13)."""

    dwell: float = 0.0
    max_moves: int = 0
    period: float = 1.0

    def plan(self, units: list[Unit], budget: int,
             blocked: frozenset[tuple[str, str]]) -> list[Step]:
        return []


@dataclass(frozen=True)
class WeightedBalance:
    """``weighted-balance``: drain failing devices, then move across the widest gap (of the
    module docstring) while it exceeds ``threshold - 1``. When that move cannot be made now
    (the giver's sessions all dwell or are in flight, it would reverse a recent move, the rate
    is spent) the plan waits instead of taking a narrower gap: waiting costs at most a dwell
    or a period, a narrower move can cost a move back. So failed moves and dwell only delay
    the sequence of counts, and from a still state every session moves at most once and no
    device both gives and takes: the moves are the fewest that reach the end counts."""

    threshold: float = 1.0
    dwell: float = 1.0
    max_moves: int = 4
    period: float = 1.0

    def plan(self, units: list[Unit], budget: int,
             blocked: frozenset[tuple[str, str]]) -> list[Step]:
        takers = [u for u in units if u.share > 0]
        if not takers:
            return []
        mean = sum(u.share for u in takers) / len(takers)
        steps: list[Step] = []

        def cost(u: Unit, delta: float) -> float:
            return (u.count + delta) * mean / u.share

        def step(g: Unit, r: Unit, drain: bool) -> None:
            if g.movable:
                flow = g.movable.pop(0)
            else:
                flow, g.unseen = None, g.unseen - 1
            g.count, r.count = g.count - 1, r.count + 1
            steps.append(Step(flow, g.name, r.name, drain))

        for g in (u for u in units if u.share == 0):
            while g.movable or g.unseen > 0:
                step(g, min(takers, key=lambda r: (cost(r, 0.5), r.name)), True)
        named = 0
        while True:
            best = min(((cost(g, -0.5) - cost(r, 0.5), g.name, r.name, g, r)
                        for g in takers if g.count > 0 for r in takers if r is not g),
                       key=lambda p: (-p[0], p[1], p[2]), default=None)
            if best is None or best[0] <= self.threshold - 1 + _EPS:
                return steps
            g, r = best[3], best[4]
            if g.movable:
                if named == budget or (g.name, r.name) in blocked:
                    return steps
                named += 1
            elif g.unseen <= 0:
                return steps
            step(g, r, False)


SHEDDING_POLICIES: dict[str, type[SheddingPolicy]] = {
    "none": NoShedding,
    "weighted-balance": WeightedBalance,
}


# ---- the scenario's `balance:` option ---------------------------------------------------------

DECIDERS = ("switch", "device")
"""Who decides (the ``decider`` key): the switch (claim 52) or each device (claim 48)."""
_HINT = ("balance: {policy: weighted-balance, decider: switch, threshold: 1, dwell: 1s, "
         "max_moves: 4, period: 1s} (decider switch or device, threshold >= 1 sessions, "
         "dwell >= 0, max_moves 1..1000, period > 0)")
_PARAMS = ("decider", "threshold", "dwell", "max_moves", "period")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    m = DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    return float(m.group(1)) * _UNIT[m.group(2)] if m else None


def _param(key: str, value: Any) -> tuple[Any, str | None]:
    """The parameter's value, or why it is bad."""
    if key in ("dwell", "period"):
        secs = _seconds(value)
        if secs is None or not 0 <= secs <= MAX_DURATION or (key == "period" and secs == 0):
            need = "> 0" if key == "period" else ">= 0"
            return None, f"{key} must be a duration {need} and at most an hour, got {value!r}"
        return secs, None
    if key == "decider":
        return value, None if value in DECIDERS else f"decider must be switch or device, got " \
                                                     f"{value!r}"
    if key == "max_moves":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            return None, f"max_moves must be an integer 1..1000, got {value!r}"
        return value, None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 1 <= value <= 1000:
        return None, (f"threshold must be a number 1..1000 (sessions of imbalance tolerated; "
                      f"below 1 a move could be undone by the next), got {value!r}")
    return float(value), None


def balance_issues(spec: Any) -> list[OptionIssue]:
    """Every problem with a ``balance:`` mapping, keyed below it (``".dwell"``) as
    ``Option.check`` expects."""
    if not isinstance(spec, Mapping):
        return [OptionIssue("", f"expected a mapping, got {spec!r}", _HINT)]
    name = spec.get("policy", "weighted-balance")
    if not isinstance(name, str) or name not in SHEDDING_POLICIES:
        return [OptionIssue(".policy", f"unknown balance policy {name!r}",
                            did_you_mean(str(name), tuple(SHEDDING_POLICIES)))]
    allowed = _PARAMS if name == "weighted-balance" else ()
    issues = []
    for key, value in spec.items():
        if key == "policy":
            continue
        if key not in allowed:
            hint = did_you_mean(str(key), allowed) if allowed else f"policy {name} takes no " \
                "parameters"
            issues.append(OptionIssue(f".{key}", f"unknown balance parameter {key!r}", hint))
            continue
        why = _param(key, value)[1]
        if why:
            issues.append(OptionIssue(f".{key}", why, _HINT))
    return issues


def check_balance(spec: Any) -> OptionIssue | None:
    """``Option(dict, check=check_balance)``: the first issue (a check reports one)."""
    return next(iter(balance_issues(spec)), None)


def shedding_policy(spec: Mapping[str, Any] | None = None) -> SheddingPolicy:
    """The policy a ``balance:`` mapping names, its durations in seconds (default: a
    ``weighted-balance`` with its defaults); ``decider`` picks the decider class, not a
    parameter."""
    spec = {} if spec is None else spec
    issues = balance_issues(spec)
    if issues:
        raise BalanceError("; ".join(f"balance{i.key}: {i.message}" for i in issues))
    params = {k: _param(k, v)[0] for k, v in spec.items() if k not in ("policy", "decider")}
    return SHEDDING_POLICIES[spec.get("policy", "weighted-balance")](**params)


# ---- the deciders ------------------------------------------------------------------------------

class Phase(Enum):
    """Where a session is in its moves, as one decider sees it."""

    SETTLING = "settling"  # within dwell of arriving or of a failed move
    MOVABLE = "movable"
    PENDING = "pending"  # a move of it was decided and is in flight


class Event(Enum):
    DECIDE = "decide"
    DRAIN = "drain"  # decided off a PREDICTED_FAIL device
    MOVED = "on_moved()"
    FAILED = "on_move_failed()"


_P, _V = Phase, Event

TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (_P.MOVABLE, _V.DECIDE): _P.PENDING,
    (_P.MOVABLE, _V.DRAIN): _P.PENDING,
    (_P.SETTLING, _V.DRAIN): _P.PENDING,  # a failing device's sessions leave at once
    (_P.PENDING, _V.MOVED): _P.SETTLING,  # dwell again, on the new device
    (_P.PENDING, _V.FAILED): _P.SETTLING,  # back off before trying it again
}


class _Decider:
    """What both deciders keep: moves in flight, when each flow last settled, the confirmed
    moves (for reverse blocks and stale reports) and decision times (for the rate limit)."""

    def __init__(self, policy: SheddingPolicy) -> None:
        self.policy = policy
        self.pending: dict[Flow, Move] = {}
        self._settled: dict[Flow, float] = {}
        self._confirmed: list[tuple[Move, float]] = []
        self._decided: list[float] = []

    def phase(self, session: Session, now: float) -> Phase:
        if session.flow in self.pending:
            return _P.PENDING
        since = max(session.since, self._settled.get(session.flow, -math.inf))
        return _P.SETTLING if now < since + self.policy.dwell else _P.MOVABLE

    def on_moved(self, flow: Flow, to: str, now: float) -> None:
        """The move of ``flow`` is done (TCH Finished HANDED_OFF and the switch reprogrammed)."""
        move = self._pending_move(flow, _V.MOVED, to)
        self._confirmed.append((move, now))
        self._settled[flow] = now

    def on_move_failed(self, flow: Flow, now: float) -> None:
        """The move of ``flow`` did not happen (denied, timed out, client gone): it stays."""
        self._pending_move(flow, _V.FAILED)
        self._settled[flow] = now

    def _pending_move(self, flow: Flow, event: Event, to: str | None = None) -> Move:
        if (_P.PENDING if flow in self.pending else None, event) not in TRANSITIONS:
            raise BalanceError(f"{event.value} for {flow!r}, which is not moving")
        if to is not None and self.pending[flow].dst != to:
            raise BalanceError(f"{flow!r} was moving to {self.pending[flow].dst}, not {to}")
        return self.pending.pop(flow)

    def _plan(self, devices: Sequence[DeviceLoad], mine: frozenset[str],
              now: float) -> list[Move]:
        """The policy's plan over ``devices``; moves of the sessions of ``mine`` returned."""
        horizon = max(self.policy.dwell, self.policy.period)
        self._confirmed = [(m, t) for m, t in self._confirmed if now - t < horizon]
        self._settled = {f: t for f, t in self._settled.items() if now - t < self.policy.dwell}
        self._decided = [t for t in self._decided if now - t < self.policy.period]
        where = {s.flow: d.name for d in devices for s in d.sessions}
        units = []
        for d in devices:
            count = d.count
            for m, t in self._confirmed:  # a report made before moves it cannot show yet
                if d.at is not None and d.at <= t:  # at a tie: better one move late than more
                    count += (m.dst == d.name) - (m.src == d.name)
            for m in self.pending.values():  # as if done: never decide the same load twice
                if where.get(m.flow) == m.src:
                    count += (m.dst == d.name) - (m.src == d.name)
            event = _V.DRAIN if d.share == 0 else _V.DECIDE
            movable = sorted((s for s in d.sessions if d.name in mine
                              and (self.phase(s, now), event) in TRANSITIONS),
                             key=lambda s: (max(s.since, self._settled.get(s.flow, -math.inf)),
                                            repr(s.flow)))
            units.append(Unit(d.name, d.share, max(count, 0), [s.flow for s in movable],
                              0 if d.name in mine else max(count, 0)))
        blocked = frozenset((m.dst, m.src) for m, t in self._confirmed
                            if now - t < self.policy.dwell) \
            | frozenset((m.dst, m.src) for m in self.pending.values())
        budget = max(self.policy.max_moves - len(self._decided), 0)
        moves = [Move(s.flow, s.src, s.dst, s.drain)
                 for s in self.policy.plan(units, budget, blocked) if s.flow is not None]
        for m in moves:
            self.pending[m.flow] = m
            if not m.drain:
                self._decided.append(now)
        return moves


class SwitchDecider(_Decider):
    """Claim 52: the switch decides, from every device's report and its table."""

    def decide(self, devices: Iterable[DeviceLoad], now: float) -> list[Move]:
        """Moves to start now. ``devices``: every device, its ``sessions`` the table's flows
        on it (a flow listed at the move's source while in flight, or at its target, not both).
        """
        devices = list(devices)
        return self._plan(devices, frozenset(d.name for d in devices), now)


class DeviceDecider(_Decider):
    """Claim 48: device ``name`` decides which of its own sessions to hand off, and to whom."""

    def __init__(self, name: str, policy: SheddingPolicy) -> None:
        super().__init__(policy)
        self.name = name

    def decide(self, own: DeviceLoad, heard: Iterable[DeviceLoad], now: float) -> list[Move]:
        """Moves of ``own``'s sessions to start now; ``heard``: the latest report of every
        other device (``reported`` counts, ``at`` their times)."""
        if own.name != self.name:
            raise BalanceError(f"decider of {self.name} given {own.name}'s load")
        others = [d for d in heard if d.name != self.name]
        return self._plan([own, *others], frozenset({self.name}), now)

    def on_arrived(self, flow: Flow, src: str, now: float) -> None:
        """A session handed to this device by ``src`` (TCH Finished HANDED_OFF here): it
        dwells, and nothing goes back to ``src`` within the dwell."""
        self._confirmed.append((Move(flow, src, self.name), now))
        self._settled[flow] = now
