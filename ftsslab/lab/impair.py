"""Link impairments decided frame by frame from a seed: the one decision both backends make.

The sim (``sim.py``) and the veth backend's shim (``veth/impaird.py``) put every frame of an
impaired direction through ``Direction.decide``. Its draws come from one ``random.Random``
per direction, seeded by BLAKE2b of the seed, the link and the sending endpoint (Python's
``hash()`` is salted per process), in a fixed order per frame, one draw for each parameter
that is set:

1. loss -- a lost frame goes no further;
2. duplicate -- a copy follows the frame;
3. for the frame, then its copy: corrupt (then which bit: one after the 14-byte Ethernet
   header, so the frame still reaches its port), reorder (it skips the delay), jitter.

So the same scenario and seed give the same decisions on both backends whenever a direction
carries the same frames in the same order. A delayed frame never leaves before the one
ahead of it: jitter alone does not reorder (netem's does); ``reorder`` does.

``rate`` is a token bucket after the delay -- Linux's tbf on veth, ``Shaper`` in the sim --
of the sizes ``bucket`` gives, the same on both backends.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from typing import NamedTuple, Protocol

ETH_HLEN = 14
LOST, QUEUE_FULL, LINK_DOWN, DUPLICATE, CORRUPT = 1, 2, 4, 8, 16
GONE = LOST | QUEUE_FULL | LINK_DOWN     # never delivered
_NS = 1_000_000_000


class Params(Protocol):
    """``model.Impairment``'s fields (probabilities 0..1, seconds, bit/s)."""

    loss: float
    delay: float
    jitter: float
    reorder: float
    duplicate: float
    corrupt: float
    rate: int


class Copy(NamedTuple):
    """One frame the link will deliver (or, flagged ``LOST``, not)."""

    due_ns: int      # when it leaves the delay (the time the frame entered, plus its delay)
    data: bytes
    flags: int
    bit: int         # the flipped bit (``CORRUPT``), counted from the frame's first byte


def direction_seed(seed: int, link: str, src: str) -> int:
    """The seed of the frames ``src`` sends on ``link``: stable across runs and processes."""
    digest = hashlib.blake2b(f"{seed} {link} {src}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def note(flags: int, bit: int) -> str:
    """What a capture says the link did to a frame ("" for nothing)."""
    parts = []
    if flags & LOST:
        parts.append("lost")
    if flags & QUEUE_FULL:
        parts.append("lost: rate queue full")
    if flags & LINK_DOWN:
        parts.append("lost: link down")
    if flags & DUPLICATE:
        parts.append("duplicate")
    if flags & CORRUPT:
        parts.append(f"corrupt: bit {bit} flipped")
    return ", ".join(parts)


def flip(data: bytes, bit: int) -> bytes:
    """``data`` with bit ``bit`` inverted (bit 0 is the top bit of byte 0)."""
    out = bytearray(data)
    out[bit >> 3] ^= 0x80 >> (bit & 7)
    return bytes(out)


class Direction:
    """The frames one endpoint sends on an impaired link: their fates, from its own seed."""

    def __init__(self, seed: int, params: Params):
        self.rng = random.Random(seed)
        self.params = params
        self._last_ns = 0   # when the frame ahead leaves the delay

    def decide(self, data: bytes, now_ns: int) -> list[Copy]:
        """The copies to deliver of a frame that entered at ``now_ns``; ``[LOST copy]`` if none."""
        p, rnd = self.params, self.rng.random
        if p.loss and rnd() < p.loss:
            return [Copy(now_ns, data, LOST, 0)]
        copies = 2 if p.duplicate and rnd() < p.duplicate else 1
        return [self._copy(data, now_ns, DUPLICATE if i else 0) for i in range(copies)]

    def _copy(self, data: bytes, now_ns: int, flags: int) -> Copy:
        p, rnd = self.params, self.rng.random
        bit = 0
        if p.corrupt and len(data) > ETH_HLEN and rnd() < p.corrupt:
            bit = ETH_HLEN * 8 + int(rnd() * (len(data) - ETH_HLEN) * 8)
            data, flags = flip(data, bit), flags | CORRUPT
        if p.reorder and rnd() < p.reorder:
            return Copy(now_ns, data, flags, bit)
        delay = p.delay + (p.jitter * (2 * rnd() - 1) if p.jitter else 0.0)
        due = max(now_ns + round(delay * _NS), self._last_ns)
        self._last_ns = due
        return Copy(due, data, flags, bit)


def bucket(rate: int, mtu: int) -> tuple[int, int]:
    """(burst, limit) in bytes for ``rate`` bit/s: the bucket holds 1 ms at the rate (at least
    one full frame), the queue 1 s at the rate but 2..1000 full frames (netem's limit)."""
    frame = mtu + 18
    per_s = rate // 8
    return max(frame, per_s // 1000), max(2 * frame, min(per_s, 1000 * frame))


class Shaper:
    """tbf's token bucket, for the sim: when each frame leaves, or None when the queue is full.

    Tokens are kept in nanoseconds of sending time, as tbf keeps them; the bucket starts full.
    """

    def __init__(self, rate: int, mtu: int):
        self.mtu = mtu
        self._queue: deque[tuple[int, int]] = deque()  # (leaves_ns, bytes) not yet gone
        self._backlog = 0
        self._t_ns = self._tokens_ns = 0
        self.set_rate(rate)
        self._tokens_ns = self._buffer_ns

    def set_rate(self, rate: int) -> None:
        """A new rate for frames from now on (queued ones keep their times)."""
        self.rate = rate
        self.burst, self.limit = bucket(rate, self.mtu)
        self._buffer_ns = self.burst * 8 * _NS // rate

    def leave(self, now_ns: int, length: int) -> int | None:
        q = self._queue
        while q and q[0][0] <= now_ns:
            self._backlog -= q.popleft()[1]
        if self._backlog + length > self.limit:
            return None
        start = max(now_ns, self._t_ns)
        cost = -(-length * 8 * _NS // self.rate)
        tokens = min(self._buffer_ns, self._tokens_ns + start - self._t_ns)
        if tokens < cost:
            start += cost - tokens
            tokens = cost
        self._tokens_ns, self._t_ns = tokens - cost, start
        q.append((start, length))
        self._backlog += length
        return start
