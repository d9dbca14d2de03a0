"""Seed 003's memory model (B3.17-B3.20, D3.10): EA -> VA through a process's segment table,
VA -> PA through the inverted page table, and what the VMM does to pages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.san.memory import (
    PAGE,
    SEGMENT_SHIFT,
    NoSegment,
    PageFault,
    Prot,
    ProtectionFault,
    Vmm,
    frame_pa,
    pieces,
    split_ea,
)

SEG = 1 << SEGMENT_SHIFT


def test_an_ea_is_esid_page_offset_and_the_va_swaps_the_esid_for_the_vsid():
    vmm = Vmm(8)
    table = vmm.process(1)
    vsid = vmm.add_segment(1, esid=0x123)
    ea = (0x123 << SEGMENT_SHIFT) | (0x0042 << 12) | 0x0AB
    assert split_ea(ea) == (0x123, 0x42, 0xAB)
    assert table.va(ea) == (vsid << SEGMENT_SHIFT) | (0x42 << 12) | 0xAB
    with pytest.raises(NoSegment):
        table.va(0x124 << SEGMENT_SHIFT)


def test_two_processes_see_one_page_through_a_shared_vsid_and_nothing_else():
    vmm = Vmm(8)
    a, b = vmm.process(1), vmm.process(2)
    vsid = vmm.add_segment(1, esid=5)
    vmm.add_segment(2, esid=9, vsid=vsid)  # b maps the same segment at another EA
    vmm.map_range(a, 5 * SEG, PAGE)
    pa = vmm.page_table.pa(a.va(5 * SEG + 7), Prot.WRITE)
    vmm.memory.write(pa, b"shared")
    assert vmm.memory.read(vmm.page_table.pa(b.va(9 * SEG + 7), Prot.READ), 6) == b"shared"
    assert not b.covers(5 * SEG, 1) and a.covers(5 * SEG, SEG) and not a.covers(5 * SEG, SEG + 1)


def test_unmapped_swapped_and_migrated_pages():
    """B3.20: a page not mapped or swapped out faults; swapped in, it holds what it held; a
    migrated page's next write lands in the new frame and the old one is left untouched
    (check 14)."""
    vmm = Vmm(8)
    t = vmm.process(1)
    vmm.add_segment(1, esid=1)
    va = t.va(SEG)
    with pytest.raises(PageFault) as info:
        vmm.page_table.pa(va, Prot.READ)
    assert info.value.address == va
    first = vmm.map_page(va)
    vmm.memory.write(frame_pa(first), b"before")
    assert vmm.swap_out(va) == first
    with pytest.raises(PageFault):
        vmm.page_table.pa(va, Prot.READ)
    vmm.map_page(t.va(SEG + PAGE))  # another page takes the freed frame
    again = vmm.map_page(va)
    assert again != first and vmm.memory.read(frame_pa(again), 6) == b"before"
    old, new = vmm.migrate(va)
    assert old == again and new != old
    vmm.memory.write(vmm.page_table.pa(va, Prot.WRITE), b"after!")
    assert vmm.memory.read(frame_pa(new), 6) == b"after!"
    assert vmm.memory.read(frame_pa(old), 6) == b"before"


def test_page_protection_is_checked():
    vmm = Vmm(4)
    t = vmm.process(1)
    vmm.add_segment(1, esid=1)
    vmm.map_page(t.va(SEG), Prot.READ)
    assert vmm.page_table.pa(t.va(SEG), Prot.READ) is not None
    with pytest.raises(ProtectionFault):
        vmm.page_table.pa(t.va(SEG), Prot.WRITE)


def test_segment_table_changes_reach_every_registered_driver():
    vmm = Vmm(4)
    heard = []
    vmm.register(lambda pid, esid, vsid: heard.append((pid, esid, vsid)))
    vsid = vmm.add_segment(3, esid=4)
    vmm.delete_segment(3, esid=4)
    assert heard == [(3, 4, vsid), (3, 4, None)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(0, 5 * PAGE))
def test_pieces_cut_a_range_at_page_boundaries(start, length):
    got = list(pieces(start, length))
    assert sum(n for _, n in got) == length
    assert all(a // PAGE == (a + n - 1) // PAGE and n > 0 for a, n in got)
    assert all(a + n == b for (a, n), (b, _) in zip(got, got[1:], strict=False))
