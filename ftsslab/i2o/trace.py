# SPDX-License-Identifier: GPL-2.0-or-later
"""The run trace: one event per step the seed numbers (510-560, 610-660) or names (claim 19's
initialisation), so tests assert orders instead of inferring them (D1.6)."""

from __future__ import annotations

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
