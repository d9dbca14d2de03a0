"""Replay a capture onto an endpoint, tcpreplay-style, on an absolute timeline.

Two halves, so timing is testable without root or real time:

- ``build_schedule(packets, ...)`` (sans-IO) turns ``(timestamp, frame)`` pairs into
  ``[(due, frame)]``: ``due`` is seconds from the start of the replay. File times are
  taken relative to the first packet; ``multiplier`` scales the gaps (2 = twice as
  fast), ``pps`` ignores the file's times and spaces packets ``1/pps`` apart,
  ``topspeed`` makes every ``due`` 0 (no waiting). ``loop`` repeats the file: each
  pass starts where the previous one ended (with ``pps``, one gap later). A packet
  stamped earlier than the one before it is due at the same time as that one.
- ``run_schedule(schedule, send, clock=..., sleep=...)`` sends each frame at
  ``start + due`` on the given clock (absolute: a late send does not shift the ones
  after it); a ``send`` that raises counts as failed and the replay goes on.
  ``ReplayReport`` is the closing report (packets, bytes, seconds, rates, failed).

``replay_onto(backend, endpoint, ...)`` drives a lab backend: its ``now``/``advance``
are the clock and sleep, so in the sim the replay runs on virtual time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..pcapng import read_packets

__all__ = [
    "ReplayReport", "build_schedule", "read_capture", "replay", "replay_onto", "run_schedule",
]

Schedule = list[tuple[float, bytes]]


def read_capture(source: str | os.PathLike | bytes | bytearray) -> list[tuple[float, bytes]]:
    """``(timestamp, frame)`` of every packet of a pcap or pcapng file (path or its bytes).

    ``pcapng.CaptureError`` (a ValueError) when the data is not a capture file or is damaged:
    all of it is read before a replay starts, so a damaged file sends nothing.
    """
    return [(p.time, p.data) for p in read_packets(source)]


def build_schedule(packets: Iterable[tuple[float, bytes] | bytes], *,
                   multiplier: float | None = None, pps: float | None = None,
                   topspeed: bool = False, loop: int = 1) -> Schedule:
    """The sans-IO timeline: ``[(due seconds from the start, frame)]`` in sending order.

    ``packets`` are ``(timestamp, frame)`` pairs or bare frames (time 0). At most one of
    ``multiplier``/``pps``/``topspeed``; none means the file's own pace (multiplier 1).
    """
    if sum((multiplier is not None, pps is not None, bool(topspeed))) > 1:
        raise ValueError("choose one of multiplier, pps and topspeed")
    if multiplier is not None and not multiplier > 0:
        raise ValueError(f"multiplier must be > 0 (got {multiplier})")
    if pps is not None and not pps > 0:
        raise ValueError(f"pps must be > 0 (got {pps})")
    if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
        raise ValueError(f"loop must be a whole number >= 1 (got {loop!r})")
    items = [(0.0, bytes(p)) if isinstance(p, bytes | bytearray | memoryview)
             else (float(p[0]), bytes(p[1])) for p in packets]
    if not items:
        return []
    if topspeed:
        return [(0.0, frame) for _ in range(loop) for _, frame in items]
    if pps is not None:
        gap = 1.0 / pps
        n = len(items)
        return [(((k * n) + i) * gap, frame)
                for k in range(loop) for i, (_, frame) in enumerate(items)]
    scale = 1.0 / (multiplier if multiplier is not None else 1.0)
    first = items[0][0]
    offsets: list[float] = []
    last = 0.0
    for stamp, _ in items:
        last = max(last, (stamp - first) * scale)
        offsets.append(last)
    span = offsets[-1]
    return [(k * span + off, frame)
            for k in range(loop) for off, (_, frame) in zip(offsets, items, strict=True)]


@dataclass(frozen=True)
class ReplayReport:
    """tcpreplay's closing lines: what was sent, how long it took, how fast."""

    attempted: int
    packets: int        # sent successfully
    bytes: int          # of the packets sent successfully
    seconds: float
    pps: float
    mbps: float
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"Actual: {self.packets} packets ({self.bytes} bytes) sent in "
                f"{self.seconds:.6f} seconds\n"
                f"Rated: {self.bytes / self.seconds if self.seconds > 0 else 0.0:.1f} Bps, "
                f"{self.mbps:.3f} Mbps, {self.pps:.2f} pps\n"
                f"Statistics for network device:\n"
                f"\tSuccessful packets: {self.packets}\n"
                f"\tFailed packets: {self.failed}")


def run_schedule(schedule: Iterable[tuple[float, bytes]], send: Callable[[bytes], Any], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep) -> ReplayReport:
    """Send each frame at ``start + due`` on ``clock``; a ``send`` that raises counts as failed."""
    start = clock()
    attempted = sent = nbytes = failed = 0
    for due, frame in schedule:
        wait = start + due - clock()
        if wait > 0:
            sleep(wait)
        attempted += 1
        try:
            send(frame)
        except Exception:
            failed += 1
            continue
        sent += 1
        nbytes += len(frame)
    seconds = max(clock() - start, 0.0)
    pps = sent / seconds if seconds > 0 else 0.0
    mbps = nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0
    return ReplayReport(attempted, sent, nbytes, seconds, pps, mbps, failed)


def replay(source: str | os.PathLike | bytes | bytearray | Iterable,
           send: Callable[[bytes], Any], *, multiplier: float | None = None,
           pps: float | None = None, topspeed: bool = False, loop: int = 1,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], Any] = time.sleep) -> ReplayReport:
    """Read (a path or a capture's bytes) or take packets, schedule them, send them."""
    packets = (read_capture(source) if isinstance(source, str | os.PathLike | bytes | bytearray)
               else source)
    schedule = build_schedule(packets, multiplier=multiplier, pps=pps, topspeed=topspeed,
                              loop=loop)
    return run_schedule(schedule, send, clock=clock, sleep=sleep)


def replay_onto(backend: Any, endpoint: str,
                source: str | os.PathLike | bytes | bytearray | Iterable,
                **options: Any) -> ReplayReport:
    """Replay onto ``endpoint`` of a lab ``Backend`` on its own clock (virtual in the sim)."""
    return replay(source, lambda frame: backend.send(endpoint, frame),
                  clock=backend.now, sleep=backend.advance, **options)
