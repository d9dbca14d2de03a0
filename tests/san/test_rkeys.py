"""Seed 003's remote keys (B3.21-B3.29, D3.1-D3.6, D3.9): the verbs, who may bind, and the
responder's check against a model of it, byte by byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.san.memory import PAGE, SEGMENT_SHIFT, Prot, Vmm
from ftsslab.san.rkeys import (
    INVALID_REQUEST,
    REMOTE_ACCESS_ERROR,
    TRANSITIONS,
    Access,
    Consumer,
    Fault,
    Grant,
    InvalidParameter,
    KeyEvent,
    KeyState,
    KeyStateError,
    Op,
    Refusal,
    RKeys,
)

SEG = 1 << SEGMENT_SHIFT
A, B, KERNEL = Consumer(1), Consumer(2), Consumer(0, kernel=True)
RW = Access.REMOTE_READ | Access.REMOTE_WRITE
BASE = SEG  # process A's buffer: 4 pages at EA 1 << 28


def node(pages: int = 4) -> tuple[Vmm, RKeys]:
    vmm = Vmm(64)
    keys = RKeys(vmm)
    for who in (A, B, KERNEL):
        keys.open_process(who.pid)
    vmm.add_segment(A.pid, esid=1)
    vmm.add_segment(B.pid, esid=1)  # B's own segment 1: another VSID
    vmm.map_range(keys.tables[A.pid], BASE, pages * PAGE)
    return vmm, keys


def bytes_at(vmm: Vmm, grant: Grant) -> bytes:
    return b"".join(vmm.memory.read(pa, n) for pa, n in grant.pieces)


def write(vmm: Vmm, grant: Grant, data: bytes) -> None:
    at = 0
    for pa, n in grant.pieces:
        vmm.memory.write(pa, data[at:at + n])
        at += n


def test_a_key_that_was_never_bound_or_is_gone_is_refused():
    """Checks 1 and 2: never allocated, allocated and unbound, unbound again, retired."""
    vmm, keys = node()
    assert keys.check(0x4242, BASE, 1, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    k = keys.allocate(A)
    assert keys.check(k, BASE, 1, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    keys.bind(A, k, BASE, 100, RW)
    assert isinstance(keys.check(k, BASE, 1, Op.WRITE, A.pid), Grant)
    keys.bind(A, k, 0, 0, RW)  # UnbindRKey: BindRKey with a null address, length 0
    assert keys.state(k) is KeyState.ALLOCATED
    assert keys.check(k, BASE, 1, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    keys.bind(A, k, BASE, 100, RW)
    keys.deallocate(A, k)  # D3.5: bound, and retired at once
    assert keys.state(k) is KeyState.RETIRED
    assert keys.check(k, BASE, 1, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR


def test_a_stale_key_value_never_names_the_next_binding_of_its_index():
    vmm, keys = node()
    old = keys.allocate(A)
    keys.deallocate(A, old)
    new = keys.allocate(A)
    assert new >> 8 == old >> 8 and new != old  # the same index, another tag
    keys.bind(A, new, BASE, 10, RW)
    assert keys.check(old, BASE, 1, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    with pytest.raises(InvalidParameter):
        keys.bind(A, old, BASE, 10, RW)


def test_bounds_are_byte_granular():
    """Check 3: bound [base+3, base+8): exactly those five bytes, each way."""
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE + 3, 5, RW)
    before = vmm.memory.digest()
    for va, n in ((BASE + 2, 1), (BASE + 8, 1), (BASE + 3, 6), (BASE + 2, 7)):
        for op in (Op.WRITE, Op.READ):
            assert keys.check(k, va, n, op, A.pid).code == REMOTE_ACCESS_ERROR, (va, n, op)
    assert vmm.memory.digest() == before
    grant = keys.check(k, BASE + 3, 5, Op.WRITE, A.pid)
    write(vmm, grant, b"12345")
    ea_pa = vmm.page_table.pa(keys.tables[A.pid].va(BASE), Prot.READ)
    assert vmm.memory.read(ea_pa, 10) == b"\0\0\x0012345\0\0"


def test_a_range_over_two_pages_binds_only_where_the_segments_are():
    """Check 4: over a page boundary inside a segment binds; into a segment without an STE
    is INVALID_PARAMETER, and nothing is bound."""
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE + PAGE - 2, 4, RW)
    grant = keys.check(k, BASE + PAGE - 2, 4, Op.WRITE, A.pid)
    assert [n for _, n in grant.pieces] == [2, 2]
    k2 = keys.allocate(A)
    with pytest.raises(InvalidParameter, match="outside process 1's segment table"):
        keys.bind(A, k2, 2 * SEG - 2, 4, RW)
    assert keys.state(k2) is KeyState.ALLOCATED and keys.binding(k2) is None


def test_who_may_bind_and_unbind():
    """Checks 5 and 6: a user process may not bind a VA, nor an EA outside its table, nor
    unbind another's key (which keeps working); a kernel process binds a VA."""
    vmm, keys = node()
    k = keys.allocate(A)
    va = keys.tables[A.pid].va(BASE)
    with pytest.raises(InvalidParameter, match="only a kernel process"):
        keys.bind(A, k, va, 10, RW | Access.VIRTUAL)
    with pytest.raises(InvalidParameter, match="outside"):
        keys.bind(A, k, 7 * SEG, 10, RW)
    keys.bind(A, k, BASE, 10, RW)
    with pytest.raises(InvalidParameter, match="bound by process 1"):
        keys.unbind(B, k)
    with pytest.raises(InvalidParameter, match="bound by process 1"):
        keys.bind(B, k, BASE, 10, RW)  # (B's own segment 1, but A's key)
    assert isinstance(keys.check(k, BASE, 10, Op.WRITE, A.pid), Grant)
    kk = keys.allocate(KERNEL)  # a file system's I/O buffer, by its VA
    keys.bind(KERNEL, kk, va + 100, 50, RW | Access.VIRTUAL)
    grant = keys.check(kk, va + 100, 50, Op.WRITE, KERNEL.pid)
    assert grant.pieces[0][0] == vmm.page_table.pa(va + 100, Prot.WRITE)


def test_a_rebind_moves_the_key_at_once():
    """Check 7 (D3.3): R1 -> R2, and R1 is refused from that instant."""
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE, 100, RW)
    keys.bind(A, k, BASE + 2 * PAGE, 100, RW)
    assert keys.check(k, BASE, 1, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    assert isinstance(keys.check(k, BASE + 2 * PAGE, 100, Op.WRITE, A.pid), Grant)


def test_a_one_shot_key_is_spent_by_its_first_operation_only():
    """Check 8, D3.4: a refused attempt does not spend it; the first one that completes
    does; a bind re-arms it (claim 17)."""
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE, 8192, RW | Access.ONE_SHOT)
    assert keys.check(k, BASE, 8193, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    grant = keys.check(k, BASE, 8192, Op.WRITE, A.pid)
    assert isinstance(grant, Grant) and keys.state(k) is KeyState.BOUND
    keys.used(grant)
    assert keys.state(k) is KeyState.SPENT
    assert keys.check(k, BASE, 1, Op.READ, A.pid).code == REMOTE_ACCESS_ERROR
    keys.bind(A, k, BASE, 8192, RW | Access.ONE_SHOT)
    again = keys.check(k, BASE, 16, Op.READ, A.pid)
    assert isinstance(again, Grant)
    keys.used(grant)  # the old binding's completion: not this one's
    assert keys.state(k) is KeyState.BOUND


def test_only_the_bound_address_space_may_use_a_key():
    """Check 9 (D3.9): a QP of another process is refused."""
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE, 100, RW)
    assert keys.check(k, BASE, 1, Op.WRITE, B.pid).code == REMOTE_ACCESS_ERROR


def test_access_rights_and_atomics():
    """D3.2 and check 19's refusals: a right the binding lacks; a misaligned atomic."""
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE, 64, Access.REMOTE_READ)
    assert keys.check(k, BASE, 8, Op.WRITE, A.pid).code == REMOTE_ACCESS_ERROR
    assert keys.check(k, BASE, 8, Op.ATOMIC, A.pid).code == REMOTE_ACCESS_ERROR
    keys.bind(A, k, BASE, 64, Access.REMOTE_ATOMIC)
    assert keys.check(k, BASE + 4, 8, Op.ATOMIC, A.pid).code == INVALID_REQUEST
    assert isinstance(keys.check(k, BASE + 8, 8, Op.ATOMIC, A.pid), Grant)
    assert isinstance(keys.check(k, BASE + 1000, 0, Op.ATOMIC, A.pid), Refusal)


def test_a_zero_length_request_checks_the_key_not_the_range():
    vmm, keys = node()
    k = keys.allocate(A)
    keys.bind(A, k, BASE, 10, RW)
    assert keys.check(k, BASE + 10**6, 0, Op.WRITE, A.pid) == Grant(k, 1, ())


def test_a_page_not_mapped_is_a_fault_and_a_deleted_segment_a_refusal():
    """B3.28, D3.8 (check 12's first half), check 13: the key stays bound meanwhile."""
    vmm, keys = node(pages=1)
    k = keys.allocate(A)
    keys.bind(A, k, BASE, 2 * PAGE, RW)
    got = keys.check(k, BASE + PAGE, 10, Op.WRITE, A.pid)
    assert got == Fault(k, keys.tables[A.pid].va(BASE + PAGE), A.pid)
    vmm.map_page(got.va)  # MapLocalPage by the default error handler
    assert isinstance(keys.check(k, BASE + PAGE, 10, Op.WRITE, A.pid), Grant)
    vsid = keys.tables[A.pid].entries[1]
    updates = keys.updates
    vmm.delete_segment(A.pid, esid=1)  # SegmentTableUpdate
    assert keys.updates == updates + 1
    refused = keys.check(k, BASE, 1, Op.WRITE, A.pid)
    assert refused.code == REMOTE_ACCESS_ERROR and "no segment-table entry" in refused.why
    assert keys.state(k) is KeyState.BOUND
    vmm.add_segment(A.pid, esid=1, vsid=vsid)  # re-added: access again, without a re-bind
    assert isinstance(keys.check(k, BASE, 1, Op.WRITE, A.pid), Grant)


def test_binding_and_unbinding_make_no_vmm_call():
    """Check 16 (L824): OpenQP calls the VMM, BindRKey and UnbindRKey do not."""
    vmm = Vmm(8)
    keys = RKeys(vmm)
    vmm.add_segment(A.pid, esid=1)
    before = vmm.calls
    keys.open_process(A.pid)
    assert vmm.calls > before
    k = keys.allocate(A)
    calls = vmm.calls
    keys.bind(A, k, BASE, 100, RW)
    keys.unbind(A, k)
    keys.bind(A, k, BASE, 100, RW)
    keys.check(k, BASE, 1, Op.WRITE, A.pid)
    assert vmm.calls == calls


def test_every_event_outside_the_table_is_a_named_error():
    from ftsslab.san.rkeys import _Key

    vmm, keys = node()
    for state in KeyState:
        for event in KeyEvent:
            key = _Key(A.pid, state)
            if (state, event) in TRANSITIONS:
                keys._fire(key, event)
                assert key.state is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(KeyStateError, match=f"in state {state.name}"):
                    keys._fire(key, event)
    assert not [k for k in TRANSITIONS if k[0] is KeyState.RETIRED]  # retired is the end


# ---- the check against a model ---------------------------------------------------------------

ops = st.sampled_from(list(Op))
acc = st.sets(st.sampled_from([Access.REMOTE_READ, Access.REMOTE_WRITE, Access.REMOTE_ATOMIC]))


@settings(max_examples=400, deadline=None)
@given(base=st.integers(0, 3 * PAGE), length=st.integers(1, PAGE + 50), rights=acc,
       va=st.integers(0, 4 * PAGE), n=st.integers(0, PAGE + 60), op=ops,
       pid=st.sampled_from([1, 2]))
def test_the_check_is_the_model_and_a_grant_is_exactly_the_requested_bytes(
        base, length, rights, va, n, op, pid):
    """Granted iff the same process, the right, an aligned word for an atomic, and
    [va, va+n) within [base, base+length); a grant's pieces are those bytes of A's buffer."""
    vmm, keys = node(pages=5)
    access = Access(0)
    for r in rights:
        access |= r
    k = keys.allocate(A)
    keys.bind(A, k, BASE + base, length, access)
    got = keys.check(k, BASE + va, n, op, pid)
    need = {Op.WRITE: Access.REMOTE_WRITE, Op.READ: Access.REMOTE_READ,
            Op.ATOMIC: Access.REMOTE_ATOMIC}[op]
    aligned = op is not Op.ATOMIC or (va % 8 == 0 and n == 8)
    inside = n == 0 or (base <= va and va + n <= base + length)
    ok = pid == A.pid and bool(access & need) and aligned and inside
    assert isinstance(got, Grant) == ok, got
    if not ok:
        code = INVALID_REQUEST if pid == A.pid and access & need and not aligned \
            else REMOTE_ACCESS_ERROR
        assert got.code == code
        return
    assert sum(p for _, p in got.pieces) == n
    marker = bytes(i % 251 for i in range(n))
    write(vmm, got, marker)
    image = b"".join(vmm.memory.read(vmm.page_table.pa(keys.tables[A.pid].va(BASE + p * PAGE),
                                                        Prot.READ), PAGE) for p in range(5))
    assert image[va:va + n] == marker
    assert image.count(0) == 5 * PAGE - n + marker.count(0)
