"""What a `sanic` node's applications run over many work requests: counted runs of one shape
(``post_send`` with ``count``), CAS/FETCH_ADD loops (``increment``), and what a QP received."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .rd import RdDest
from .verbs import SendWR

SEND_DEPTH = 256  # work requests a counted run keeps posted on its QP


@dataclass
class Run:
    """``count`` work requests of one shape on one QP, ``depth`` posted at a time (1: each
    after the last completed, timed one by one -- a latency test)."""

    qp: str
    first_wr: int
    count: int
    make: Callable[[int], SendWR]  # the i-th work request
    depth: int = SEND_DEPTH
    dest: RdDest | None = None  # an RD QP's: where they go
    length: int = 0  # bytes each moves
    posted: int = 0
    done: int = 0
    success: int = 0
    first_error: str | None = None
    successes: int = 0  # `increment`: CAS attempts that took
    started: float | None = None  # the first post
    ended: float = 0.0  # the last completion
    last_post: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def completed(self, now: float, ok: bool, status: str) -> None:
        self.done += 1
        self.ended = now
        if self.depth == 1:
            self.latencies.append(now - self.last_post)
        if ok:
            self.success += 1
        elif self.first_error is None:
            self.first_error = status

    def timing(self) -> dict[str, float]:
        """Seconds from the first post to the last completion; with depth 1, latencies."""
        if self.started is None:
            return {}
        out = {"seconds": self.ended - self.started, "bytes": self.length * self.success}
        if self.latencies:
            lat = sorted(self.latencies)
            out |= {"lat_min_us": lat[0] * 1e6, "lat_p50_us": lat[len(lat) // 2] * 1e6,
                    "lat_p99_us": lat[min(len(lat) - 1, len(lat) * 99 // 100)] * 1e6}
        return out


@dataclass
class Increment:
    """An application's loop: add 1 to a remote word ``count`` times by CAS (read the old
    value, CAS old -> old+1, again on a miss) or by FETCH_ADD -- no update may be lost."""

    run: Run
    by: str
    local: int
    guess: int = 0
    attempts: int = 0


@dataclass
class Arrivals:
    """What a QP received, for the `received` summary: by immediate, how many came after a
    larger one (out of order) or twice."""

    messages: int = 0
    last_imm: int = -1
    in_order: int = 0  # arrivals whose immediate is larger than every one before
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
