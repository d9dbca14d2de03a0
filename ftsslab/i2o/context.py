# SPDX-License-Identifier: GPL-2.0-or-later
"""The Remote Transport's callback objects and the 32-bit handles that stand for them in a
frame's InitiatorContext (steps 530 and 620, D1.2, D1.3).

The seed's new context is "a pointer to a callback object structure" (L216); a 32-bit field
cannot hold a Python reference, so it holds a handle: a slot index in the low 16 bits and the
slot's generation in the high 16. Freeing a slot bumps its generation, so a handle outlives its
object only as a stale number: ``lookup`` answers None and counts it. Generation 0 is never
issued, so 0 (what the host's own executive requests carry) and most forged values name
nothing. Slots are reused first-freed first, so allocation is deterministic (check 15) and a
freed slot waits as long as possible before its next generation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .frames import Request

INDEX_BITS = 16
GENERATION_BITS = 16
MAX_SLOTS = 1 << INDEX_BITS
_INDEX_MASK = MAX_SLOTS - 1
_GENERATION_MASK = (1 << GENERATION_BITS) - 1


class TableFull(Exception):
    """Every one of the 65536 slots holds an outstanding request."""


@dataclass(eq=False)
class CallbackObject:
    """One outstanding request (D1.2): the function the reply goes to (RT.send_handler), its
    context (the IOP connection structure), and the request as it came in, whose
    InitiatorContext step 650 restores; and what the SAN side staged for it (the remote
    buffer its data moves to or from by RDMA, ``san_port.Staged``), which the reply takes
    back out."""

    handle: int
    function: Callable[[CallbackObject, bytes], Any]
    connection: Any  # remote_transport.IopConnection
    request: Request
    staged: Any = None

    @property
    def saved_initiator_context(self) -> int:
        return self.request.initiator_context


class CallbackTable:
    def __init__(self) -> None:
        self._slots: list[CallbackObject | None] = []
        self._generations: list[int] = []
        self._free: deque[int] = deque()
        self.stale = 0  # lookups of handles naming no live object (check 10)

    def alloc(self, function: Callable[[CallbackObject, bytes], Any], connection: Any,
              request: Request, staged: Any = None) -> CallbackObject:
        if self._free:
            index = self._free.popleft()
        elif len(self._slots) < MAX_SLOTS:
            index = len(self._slots)
            self._slots.append(None)
            self._generations.append(1)
        else:
            raise TableFull(f"{MAX_SLOTS} requests outstanding")
        cb = CallbackObject(self._generations[index] << INDEX_BITS | index, function, connection,
                            request, staged)
        self._slots[index] = cb
        return cb

    def lookup(self, handle: int) -> CallbackObject | None:
        index = handle & _INDEX_MASK
        cb = self._slots[index] if index < len(self._slots) else None
        if cb is None or cb.handle != handle:
            self.stale += 1
            return None
        return cb

    def free(self, cb: CallbackObject) -> None:
        index = cb.handle & _INDEX_MASK
        if self._slots[index] is not cb:
            return
        self._slots[index] = None
        self._generations[index] = self._generations[index] % _GENERATION_MASK + 1
        self._free.append(index)

    def live(self) -> list[CallbackObject]:
        return [cb for cb in self._slots if cb is not None]

    def __len__(self) -> int:
        return len(self._slots) - len(self._free)
