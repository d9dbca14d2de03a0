# SPDX-License-Identifier: GPL-2.0-or-later
"""The emulated local bus 318 (D1.4): slots holding IOPs, each with I2O's inbound and outbound
FIFOs, and the host memory the IOPs reach by DMA.

LT <-> IOP stays message-based, as in the seed: ``post`` puts a frame in an IOP's inbound
FIFO, ``service`` is the IOPs doing their work (in the sim a call; on a real bus the IOP runs
on its own), ``take`` empties an outbound FIFO for the Local Transport. ``fail`` is the
emulator dying (its FIFOs lost with it) and ``restart`` bringing it back in RESET with the
same devices; ``alive`` and ``failures`` are what the host sees of either.
"""

from __future__ import annotations

from collections import deque

from .ddm import DmaError
from .iop import Iop, IopEvent, IopState


class HostMemory:
    """Host memory as the IOPs' DMA sees it: simple SGL elements address [base, base+size)
    directly. ``load``/``store`` are the memory itself: a bytearray here, the SAN endnode's
    memory under a host on the SAN (``san_port.HostSanMemory``)."""

    def __init__(self, size: int, base: int = 0) -> None:
        self.base, self.size = base, size
        self.data = bytearray(size)

    def load(self, address: int, n: int) -> bytes:
        return bytes(self.data[address - self.base:address - self.base + n])

    def store(self, address: int, data: bytes) -> None:
        self.data[address - self.base:address - self.base + len(data)] = data

    def _pieces(self, sgl: list[dict], length: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for element in sgl:
            if length <= 0:
                break
            if element["layer"] == "I2OSGEAttributes":
                continue
            if element["layer"] not in ("I2OSGESimple", "I2OSGESimple64"):
                raise DmaError(f"{element['layer']}: no DMA path")
            n = min(element["count"], length)
            if not self.base <= element["address"] <= self.base + self.size - n:
                raise DmaError(f"{n} bytes at {element['address']:#x}: outside host memory")
            out.append((element["address"], n))
            length -= n
        if length > 0:
            raise DmaError(f"the SGL is {length} bytes short")
        return out

    def gather(self, sgl: list[dict], length: int) -> bytes:
        return b"".join(self.load(a, n) for a, n in self._pieces(sgl, length))

    def scatter(self, sgl: list[dict], data: bytes) -> None:
        pos = 0
        for a, n in self._pieces(sgl, len(data)):
            self.store(a, data[pos:pos + n])
            pos += n


class _Slot:
    def __init__(self, iop: Iop) -> None:
        self.iop = iop
        self.inbound: deque[bytes] = deque()
        self.outbound: deque[bytes] = deque()
        self.failures = 0


class LocalBus:
    def __init__(self, memory: HostMemory) -> None:
        self.memory = memory
        self._slots: list[_Slot] = []

    def attach(self, iop: Iop) -> int:
        self._slots.append(_Slot(iop))
        return len(self._slots) - 1

    def scan(self) -> range:
        """The slots an IOP sits in (what the LT's bus scan finds)."""
        return range(len(self._slots))

    def alive(self, slot: int) -> bool:
        return self._slots[slot].iop.state is not IopState.FAILED

    def failures(self, slot: int) -> int:
        """How often the IOP died: a host that polls too late to see it dead still sees this."""
        return self._slots[slot].failures

    def post(self, slot: int, frame: bytes) -> bool:
        """Into the IOP's inbound FIFO; False if the IOP is dead (nothing to post to)."""
        s = self._slots[slot]
        if s.iop.state is IopState.FAILED:
            return False
        s.inbound.append(frame)
        return True

    def service(self) -> None:
        for s in self._slots:
            while s.inbound and s.iop.state is not IopState.FAILED:
                s.outbound.extend(s.iop.inbound(s.inbound.popleft()))

    def take(self, slot: int) -> list[bytes]:
        out = list(self._slots[slot].outbound)
        self._slots[slot].outbound.clear()
        return out

    def fail(self, slot: int) -> None:
        s = self._slots[slot]
        s.iop.transition(IopEvent.FAIL)
        s.failures += 1
        s.inbound.clear()
        s.outbound.clear()

    def restart(self, slot: int) -> None:
        self._slots[slot].iop.transition(IopEvent.RESTART)

    def iop(self, slot: int) -> Iop:
        """The emulated IOP itself (for the emulation's owner and tests, not the host)."""
        return self._slots[slot].iop
