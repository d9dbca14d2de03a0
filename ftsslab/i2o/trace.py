# SPDX-License-Identifier: GPL-2.0-or-later
"""The run trace: one event per step the seed numbers (510-560, 610-660) or names (claim 19's
initialisation), so tests assert orders instead of inferring them (D1.6)."""

from __future__ import annotations

import hashlib
from typing import NamedTuple


class Event(NamedTuple):
    who: str  # "LT", "RT", "CM"
    step: str  # "510", "scan", ...
    detail: dict


class Trace(list[Event]):
    def emit(self, who: str, step: str, **detail) -> None:
        self.append(Event(who, step, detail))

    def steps(self, who: str | None = None) -> list[str]:
        return [e.step for e in self if who is None or e.who == who]


class DigestTrace(Trace):
    """A trace for a node that runs for hours: the first ``keep`` events (initialisation) as
    a list, and every event folded into a SHA-256 -- equal digests, equal traces (check 15)."""

    def __init__(self, keep: int = 256) -> None:
        super().__init__()
        self.keep, self.count = keep, 0
        self._hash = hashlib.sha256()

    def emit(self, who: str, step: str, **detail) -> None:
        self.count += 1
        self._hash.update(repr((who, step, sorted(detail.items()))).encode())
        if len(self) < self.keep:
            self.append(Event(who, step, detail))

    def digest(self) -> str:
        return self._hash.hexdigest()[:16]
