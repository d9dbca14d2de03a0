# SPDX-License-Identifier: GPL-2.0-or-later
"""What the NAS kinds' sim models share (``sim.py``, ``sim_pair.py``): deterministic numbers,
the clock's rounding, and the event log the veth processes write."""

from __future__ import annotations

import hashlib

TIME_EPS = 1e-9  # the sim clock's resolution


def stable_hash(*parts: object, bits: int = 32) -> int:
    key = ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2s(key, digest_size=8).digest(), "big") % (1 << bits)


def due(deadline: float | None, now: float) -> float | None:
    """The time to pass a core whose ``deadline`` is due: the sim's clock is integer ns, so
    ``now`` may be a rounding short of the float a core asked for."""
    if deadline is None or deadline > now + TIME_EPS:
        return None
    return max(deadline, now)


class EventLog:
    """Events as the veth processes write them to ``<node>.events``."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.events: list[dict] = []
        self.now = 0.0

    def event(self, kind: str, **detail) -> None:
        self.events.append({"t": self.now, "node": self.node, "kind": kind, **detail})
