"""A node's memory as seed 003 describes it: effective -> virtual -> physical (B3.17-B3.20).

The layout follows D3.10 (PowerPC-64-like; the seed gives none):

* an **effective address** (EA) is ESID (36 bits) | page (16) | offset (12): 256 MiB segments
  of 4 KiB pages;
* a process's **segment table** maps an ESID to a VSID (L709); the VA is VSID | the EA's low
  28 bits (L715), so the VA space is shared and a process sees only the segments the VMM gave it
  ("A user process cannot access a virtual address unless the operating system has allowed
  the user process to access the virtual address", L703);
* the **page table** is inverted (L791): one entry per physical frame naming the virtual page
  it holds, found through a hash anchor by virtual page number (VPN = VA >> 12); an entry has
  the seed's page valid bit 556 and protection 558;
* **physical memory** is a bytearray of frames; a PA never leaves the node (B3.19 614).

``Vmm`` is the kernel's part: it gives processes segments, maps, swaps and migrates pages,
and tells the drivers that registered (B3.19 604/608) of every segment-table change. Every
call into it is counted (``calls``), so that a test can show that binding a key needs none
(L824). Translation raises a named error: ``NoSegment`` (no STE), ``PageFault`` (not mapped
or swapped out: the SANIC's default error handler takes it, D3.8), ``ProtectionFault``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Flag

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
SEGMENT_SHIFT = 28  # 256 MiB segments
ESID_BITS = 36
EA_BITS = ESID_BITS + SEGMENT_SHIFT  # 64
VSID_BITS = 36
# where physical memory starts: PAs are distinctive 8-byte values, so that a scan of every frame
# for every PA (check 15) cannot mistake small numbers in a header or payload for one
PHYS_BASE = 0x5A5A_0000_0000
_SEG_MASK = (1 << SEGMENT_SHIFT) - 1


class Prot(Flag):
    """Page protection 558 (L722)."""

    READ = 1
    WRITE = 2
    RW = READ | WRITE


class TranslationError(Exception):
    """An address that does not translate; ``address`` is the one that failed."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class NoSegment(TranslationError):
    """No valid segment-table entry for the EA's ESID (B3.28: "no segment table entry")."""


class PageFault(TranslationError):
    """The virtual page is not mapped, or swapped out (B3.20, B3.28): ``address`` is the VA."""


class ProtectionFault(TranslationError):
    """The page's protection does not allow the access."""


def split_ea(ea: int) -> tuple[int, int, int]:
    """(ESID 532, page 534, offset 536) of an EA (L706)."""
    return ea >> SEGMENT_SHIFT, (ea >> PAGE_SHIFT) & 0xFFFF, ea & (PAGE - 1)


def pieces(start: int, length: int) -> Iterator[tuple[int, int]]:
    """[start, start+length) cut at page boundaries: (address, bytes) each."""
    end = start + length
    while start < end:
        n = min(end, (start // PAGE + 1) * PAGE) - start
        yield start, n
        start += n


@dataclass
class SegmentTable:
    """One process's segment table 512: ESID -> VSID of its valid entries (STEs)."""

    entries: dict[int, int] = field(default_factory=dict)

    def va(self, ea: int) -> int:
        vsid = self.entries.get(ea >> SEGMENT_SHIFT)
        if vsid is None:
            raise NoSegment(f"EA {ea:#x}: no segment-table entry for ESID "
                            f"{ea >> SEGMENT_SHIFT:#x}", ea)
        return (vsid << SEGMENT_SHIFT) | (ea & _SEG_MASK)

    def covers(self, ea: int, length: int) -> bool:
        """Every segment [ea, ea+length) touches has an entry (a zero length: ``ea``'s)."""
        last = ea + max(length, 1) - 1
        return all(esid in self.entries
                   for esid in range(ea >> SEGMENT_SHIFT, (last >> SEGMENT_SHIFT) + 1))

    def copy(self) -> SegmentTable:
        return SegmentTable(dict(self.entries))


@dataclass
class Pte:
    """A page-table entry: upper VA + page (here the VPN), physical page, valid 556,
    protection 558 (L722)."""

    vpn: int
    pfn: int
    valid: bool
    prot: Prot


class PageTable:
    """The inverted page table: ``frames[pfn]`` is the entry of the page in that frame (or
    None), and a hash anchor finds a VPN's frame (L791: one entry per frame keeps it small)."""

    def __init__(self, nframes: int) -> None:
        self.frames: list[Pte | None] = [None] * nframes
        self._anchor: dict[int, int] = {}  # VPN -> PFN

    def lookup(self, vpn: int) -> Pte | None:
        pfn = self._anchor.get(vpn)
        return None if pfn is None else self.frames[pfn]

    def insert(self, vpn: int, pfn: int, prot: Prot) -> None:
        if self.frames[pfn] is not None or vpn in self._anchor:
            raise ValueError(f"frame {pfn} or VPN {vpn:#x} already in the page table")
        self.frames[pfn] = Pte(vpn, pfn, True, prot)
        self._anchor[vpn] = pfn

    def remove(self, vpn: int) -> Pte:
        pfn = self._anchor.pop(vpn)
        pte, self.frames[pfn] = self.frames[pfn], None
        assert pte is not None
        return pte

    def pa(self, va: int, access: Prot) -> int:
        """The PA of ``va``: PageFault if its page has no valid entry, ProtectionFault if the
        entry forbids ``access``."""
        pte = self.lookup(va >> PAGE_SHIFT)
        if pte is None or not pte.valid:
            raise PageFault(f"VA {va:#x}: page not mapped", va)
        if access.value & ~pte.prot.value:
            raise ProtectionFault(f"VA {va:#x}: page is {pte.prot}, not {access}", va)
        return PHYS_BASE + (pte.pfn << PAGE_SHIFT) + (va & (PAGE - 1))


def frame_pa(pfn: int) -> int:
    """The PA of frame ``pfn``'s first byte."""
    return PHYS_BASE + (pfn << PAGE_SHIFT)


class PhysicalMemory:
    """Frames of ``PAGE`` bytes from ``PHYS_BASE`` on; ``digest`` is the whole image's SHA-256
    (checks' "0 bytes change")."""

    def __init__(self, nframes: int) -> None:
        self.nframes = nframes
        self.data = bytearray(nframes * PAGE)

    def read(self, pa: int, n: int) -> bytes:
        at = pa - PHYS_BASE
        return bytes(self.data[at:at + n])

    def write(self, pa: int, data: bytes) -> None:
        at = pa - PHYS_BASE
        self.data[at:at + len(data)] = data

    def frame(self, pfn: int) -> bytes:
        return self.read(frame_pa(pfn), PAGE)

    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


SegmentListener = Callable[[int, int, int | None], None]  # (pid, ESID, VSID or None: deleted)


class Vmm:
    """The kernel's virtual memory manager (a stand-in): processes' segment tables, the page
    table, frames and a swap store. ``calls`` counts every call into it."""

    def __init__(self, nframes: int = 256) -> None:
        self.memory = PhysicalMemory(nframes)
        self.page_table = PageTable(nframes)
        self.tables: dict[int, SegmentTable] = {}
        self.swap: dict[int, tuple[bytes, Prot]] = {}  # VPN -> page content, protection
        self.calls = 0
        self._free = list(range(nframes - 1, -1, -1))
        self._next_vsid = 1
        self._listeners: list[SegmentListener] = []

    def _call(self) -> None:
        self.calls += 1

    # ---- segments (B3.17, B3.19 604/608) ---------------------------------------------------
    def process(self, pid: int) -> SegmentTable:
        """``pid``'s segment table (created empty)."""
        self._call()
        return self.tables.setdefault(pid, SegmentTable())

    def register(self, listener: SegmentListener) -> None:
        """A driver asks to hear of every segment-table change (604: "registers for updates")."""
        self._call()
        self._listeners.append(listener)

    def add_segment(self, pid: int, esid: int, vsid: int | None = None) -> int:
        """Give ``pid`` the segment ESID -> VSID (a new VSID unless one is named: two
        processes that name one share it); the registered drivers hear of it (608)."""
        self._call()
        if vsid is None:
            vsid, self._next_vsid = self._next_vsid, self._next_vsid + 1
        if not (0 <= esid < 1 << ESID_BITS and 0 < vsid < 1 << VSID_BITS):
            raise ValueError(f"ESID {esid:#x} or VSID {vsid:#x} out of range")
        self.tables.setdefault(pid, SegmentTable()).entries[esid] = vsid
        for tell in self._listeners:
            tell(pid, esid, vsid)
        return vsid

    def delete_segment(self, pid: int, esid: int) -> None:
        self._call()
        del self.tables[pid].entries[esid]
        for tell in self._listeners:
            tell(pid, esid, None)

    # ---- pages (B3.19 612, B3.20) ----------------------------------------------------------
    def _frame(self) -> int:
        if not self._free:
            raise MemoryError("no free physical frame")
        return self._free.pop()

    def map_page(self, va: int, prot: Prot = Prot.RW) -> int:
        """Map ``va``'s page (MapLocalPage, 612): a zeroed frame, or its content back from
        swap. Its PFN."""
        self._call()
        vpn = va >> PAGE_SHIFT
        if (pte := self.page_table.lookup(vpn)) is not None:
            return pte.pfn
        content, prot = self.swap.pop(vpn, (bytes(PAGE), prot))
        pfn = self._frame()
        self.memory.write(frame_pa(pfn), content)
        self.page_table.insert(vpn, pfn, prot)
        return pfn

    def map_range(self, table: SegmentTable, ea: int, length: int, prot: Prot = Prot.RW
                  ) -> None:
        """Map every page of [ea, ea+length) of a process (its buffers, before the test)."""
        for at, _ in pieces(ea, length):
            self.map_page(table.va(at), prot)

    def swap_out(self, va: int) -> int:
        """Write ``va``'s page to swap and free its frame (left as it was: a frame's old
        content is not the page's any more). The freed PFN."""
        self._call()
        pte = self.page_table.remove(va >> PAGE_SHIFT)
        self.swap[pte.vpn] = (self.memory.frame(pte.pfn), pte.prot)
        self._free.append(pte.pfn)
        return pte.pfn

    def migrate(self, va: int) -> tuple[int, int]:
        """Move ``va``'s page to another frame (the PTE follows; the old frame is left
        untouched and freed): (old PFN, new PFN)."""
        self._call()
        vpn = va >> PAGE_SHIFT
        new = self._frame()
        pte = self.page_table.remove(vpn)
        self.memory.write(frame_pa(new), self.memory.frame(pte.pfn))
        self.page_table.insert(vpn, new, pte.prot)
        self._free.insert(0, pte.pfn)  # reused last: the old frame stays as it was
        return pte.pfn, new
