"""A SANIC's remote keys: the four verbs, who may bind what, and the responder's check
(B3.21-B3.29, D3.1-D3.6, D3.9).

A key's life is one transition table (``TRANSITIONS``; an event it has no entry for raises
``KeyStateError``)::

    AllocateRKey -> ALLOCATED --BindRKey--> BOUND --UnbindRKey--> ALLOCATED
    BOUND --BindRKey--> BOUND (the new range replaces the old at once: D3.3, claim 16)
    BOUND, one-shot --an RDMA under it completes--> SPENT --BindRKey--> BOUND (claims 17, 18)
    any --DeallocateRKey--> RETIRED (unbound at once, the key value never valid again: D3.5)

A key value is a 24-bit index and an 8-bit tag bumped every time the index is allocated
(D3.5), so a stale value never names a newer binding.

Who may bind (B3.22, L810-L822): a user process an *effective* address range that its
segment table covers, segment by segment (check 4); a kernel process an EA range of its own or
a *virtual* one (access flag VIRTUAL, D3.12). Anything else, and unbinding a key bound by
another user process (check 6), is ``InvalidParameter`` ("an invalid parameter result is
returned", L822). The segment tables are the driver's copies, taken when a process opens a QP
and kept current by the VMM's SegmentTableUpdate calls (B3.19 604-610): binding makes no VMM
call (L824, check 16).

The responder's check (``check``), before a byte moves, for the whole DMA length of a request
(D3.6), in this order: the key is live and bound; the requesting QP belongs to the bound
address space (D3.9); the binding grants the operation (D3.2); an atomic is one aligned 8-byte
word (else INVALID_REQUEST); the range lies within the bound one, to the byte (D3.1); the
range translates (an EA through the bound process's segment table, then the page table). A
refusal names the IBA NAK code (``fast.roce.NAK_CODES``); a page that is not mapped is a
``Fault`` instead, for the default error handler (D3.8). One-shot keys are spent by
``used`` when the operation completes, never by a refused attempt (D3.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, Flag
from typing import NamedTuple

from ftsslab.fast.roce import RKEY_ACCESS_FLAGS

from .memory import (
    PAGE_SHIFT,
    NoSegment,
    PageFault,
    Prot,
    ProtectionFault,
    SegmentTable,
    Vmm,
    pieces,
)

Access = Flag("Access", {name: 1 << bit for bit, name in enumerate(RKEY_ACCESS_FLAGS)})
Access.__doc__ = "BindRKey's access (D3.2): the RKeyAdvert flags, bit for bit."

INDEX_BITS, TAG_BITS = 24, 8
REMOTE_ACCESS_ERROR, INVALID_REQUEST = "REMOTE_ACCESS_ERROR", "INVALID_REQUEST"
REMOTE_OPERATIONAL_ERROR = "REMOTE_OPERATIONAL_ERROR"


class Op(Enum):
    """What a remote request does to the bound memory, and the right it needs."""

    WRITE = "write"
    READ = "read"
    ATOMIC = "atomic"


_NEEDS = {Op.WRITE: (Access.REMOTE_WRITE, Prot.WRITE), Op.READ: (Access.REMOTE_READ, Prot.READ),
          Op.ATOMIC: (Access.REMOTE_ATOMIC, Prot.RW)}
_NEED_BITS = {op: right.value for op, (right, _) in _NEEDS.items()}  # (Flag & is slow)
_ONE_SHOT, _VIRTUAL = Access.ONE_SHOT.value, Access.VIRTUAL.value


class KeyState(Enum):
    ALLOCATED = "allocated"
    BOUND = "bound"
    SPENT = "spent"  # a one-shot key after its RDMA completed
    RETIRED = "retired"


class KeyEvent(Enum):
    BIND = "BindRKey"
    UNBIND = "UnbindRKey"
    USED = "one-shot RDMA completed"
    DEALLOCATE = "DeallocateRKey"


_S, _E = KeyState, KeyEvent
TRANSITIONS: dict[tuple[KeyState, KeyEvent], KeyState] = {
    (_S.ALLOCATED, _E.BIND): _S.BOUND,
    (_S.BOUND, _E.BIND): _S.BOUND,  # D3.3: atomic replace
    (_S.SPENT, _E.BIND): _S.BOUND,  # claim 17: reused
    (_S.BOUND, _E.UNBIND): _S.ALLOCATED,
    (_S.SPENT, _E.UNBIND): _S.ALLOCATED,
    (_S.BOUND, _E.USED): _S.SPENT,
    (_S.ALLOCATED, _E.DEALLOCATE): _S.RETIRED,
    (_S.BOUND, _E.DEALLOCATE): _S.RETIRED,  # D3.5: an implicit unbind
    (_S.SPENT, _E.DEALLOCATE): _S.RETIRED,
}


class KeyStateError(Exception):
    """An event the key's state has no transition for."""


class InvalidParameter(ValueError):
    """A verb's "invalid parameter result" (L822)."""


@dataclass(frozen=True)
class Consumer:
    """Who calls a verb: a process (its address space is the protection domain, D3.9)."""

    pid: int
    kernel: bool = False


@dataclass(frozen=True)
class Binding:
    owner: int  # the pid whose address space it is (and whose QPs may use it)
    base: int
    length: int
    access: Access
    generation: int  # bumped by every bind: a grant names the binding it was checked against
    bits: int = field(init=False, repr=False, compare=False)  # access as an int: the check
    #                                                            reads it (Flag ops are slow)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", self.access.value)

    @property
    def virtual(self) -> bool:
        return bool(self.access.value & _VIRTUAL)


@dataclass
class _Key:
    allocator: int
    state: KeyState = KeyState.ALLOCATED
    binding: Binding | None = None


class Grant(NamedTuple):
    """Access granted: the physical pieces (PA, bytes) of the request, in order."""

    rkey: int
    generation: int
    pieces: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Refusal:
    """Access denied before a byte moved: the NAK code and why."""

    code: str
    why: str


@dataclass(frozen=True)
class Fault:
    """A bound page is not mapped (B3.28, D3.8): the default error handler's event."""

    rkey: int
    va: int
    pid: int


def key_value(index: int, tag: int) -> int:
    return (index << TAG_BITS) | tag


class RKeys:
    """One SANIC's keys. It reads the VMM's page table (shared, B3.20) and keeps its own
    copy of each process's segment table (``open_process``, at OpenQP)."""

    def __init__(self, vmm: Vmm) -> None:
        self.vmm = vmm
        self.tables: dict[int, SegmentTable] = {}
        self.updates = 0  # SegmentTableUpdate calls taken
        # pages (VPNs) the default error handler declared it cannot bring in (check 12):
        # an access to one is a remote operational error, not a fault again
        self.unresolvable: set[int] = set()
        self._keys: dict[int, _Key] = {}  # index -> key
        self._tags: dict[int, int] = {}  # index -> its last tag
        self._free: list[int] = []
        self._next = 1
        self._generation = 0
        vmm.register(self._segment_update)

    # ---- the driver's segment tables (B3.19 604-610) --------------------------------------
    def open_process(self, pid: int) -> None:
        """OpenQP's part (604): the driver calls the VMM for the caller's segment table (one
        copy per process, kept current by SegmentTableUpdate after that)."""
        self.tables[pid] = self.vmm.process(pid).copy()

    def _segment_update(self, pid: int, esid: int, vsid: int | None) -> None:
        """SegmentTableUpdate (608/610)."""
        self.updates += 1
        table = self.tables.get(pid)
        if table is None:
            return
        if vsid is None:
            table.entries.pop(esid, None)
        else:
            table.entries[esid] = vsid

    # ---- the verbs (B3.24) ---------------------------------------------------------------
    def allocate(self, caller: Consumer) -> int:
        """AllocateRKey: a new key value."""
        if self._free:
            index = self._free.pop()
        else:
            index, self._next = self._next, self._next + 1
            if index >= 1 << INDEX_BITS:
                raise InvalidParameter("no key left")
        tag = self._tags[index] = (self._tags.get(index, -1) + 1) % (1 << TAG_BITS)
        self._keys[index] = _Key(caller.pid)
        return key_value(index, tag)

    def state(self, rkey: int) -> KeyState:
        """A key value's state (RETIRED for one never allocated, or stale)."""
        key = self._live(rkey)
        return KeyState.RETIRED if key is None else key.state

    def binding(self, rkey: int) -> Binding | None:
        key = self._live(rkey)
        return None if key is None else key.binding

    def bind(self, caller: Consumer, rkey: int, address: int, length: int,
             access: Access) -> None:
        """BindRKey(rkey, address, length, access). Null address and length 0: UnbindRKey."""
        if address == 0 and length == 0:
            self.unbind(caller, rkey)
            return
        key = self._key(rkey)
        if length < 0 or address < 0 or address + length > 1 << 64:
            raise InvalidParameter(f"range [{address:#x}, +{length}) is not an address range")
        self._authorised(caller, address, length, bool(access & Access.VIRTUAL), "bind")
        if key.binding is not None and not self._may_change(caller, key.binding):
            raise InvalidParameter(f"key {rkey:#x} is bound by process {key.binding.owner}")
        self._generation += 1
        self._fire(key, KeyEvent.BIND)
        key.binding = Binding(caller.pid, address, length, access, self._generation)

    def unbind(self, caller: Consumer, rkey: int) -> None:
        """UnbindRKey: allowed to whoever may access the bound range (L826)."""
        key = self._key(rkey)
        if key.binding is None:
            raise InvalidParameter(f"key {rkey:#x} is not bound")
        if not self._may_change(caller, key.binding):
            raise InvalidParameter(f"key {rkey:#x} is bound by process {key.binding.owner}, "
                                   f"not accessible to process {caller.pid}")
        self._fire(key, KeyEvent.UNBIND)
        key.binding = None

    def deallocate(self, caller: Consumer, rkey: int) -> None:
        """DeallocateRKey: retired at once, bound or not (D3.5)."""
        key = self._key(rkey)
        if key.allocator != caller.pid and not caller.kernel:
            raise InvalidParameter(f"key {rkey:#x} was allocated by process {key.allocator}")
        self._fire(key, KeyEvent.DEALLOCATE)
        index = rkey >> TAG_BITS
        del self._keys[index]
        self._free.append(index)

    # ---- the responder (B3.28, B3.29) -----------------------------------------------------
    def check(self, rkey: int, va: int, length: int, op: Op, pid: int
              ) -> Grant | Refusal | Fault:
        """May the request [va, va+length) of ``op``, from a QP of process ``pid``, go on?"""
        key = self._live(rkey)
        if key is None or key.state is not KeyState.BOUND or key.binding is None:
            state = "unknown or retired" if key is None else key.state.value
            return Refusal(REMOTE_ACCESS_ERROR, f"key {rkey:#x} is {state}")
        b = key.binding
        if b.owner != pid:
            return Refusal(REMOTE_ACCESS_ERROR, f"key {rkey:#x} is bound to process "
                           f"{b.owner}'s memory, the QP is process {pid}'s")
        right, prot = _NEEDS[op]
        if not b.bits & _NEED_BITS[op]:
            return Refusal(REMOTE_ACCESS_ERROR, f"key {rkey:#x} does not grant {right.name}")
        if op is Op.ATOMIC and (va % 8 or length != 8):
            return Refusal(INVALID_REQUEST, f"atomic at {va:#x}, {length} bytes: not one "
                           "aligned 8-byte word")
        if length == 0:  # D3.1: the key is checked, not the range
            return Grant(rkey, b.generation, ())
        if va < b.base or va + length > b.base + b.length:
            return Refusal(REMOTE_ACCESS_ERROR, f"[{va:#x}, +{length}) is not within the "
                           f"bound [{b.base:#x}, +{b.length})")
        return self._translate(rkey, b, va, length, prot)

    def used(self, grant: Grant) -> None:
        """The operation ``grant`` allowed completed: a one-shot key's translation is
        disabled (B3.29) -- if it is still the binding that was checked."""
        key = self._live(grant.rkey)
        if (key is not None and key.binding is not None
                and key.binding.generation == grant.generation
                and key.binding.bits & _ONE_SHOT and key.state is KeyState.BOUND):
            self._fire(key, KeyEvent.USED)

    # ---- inside ---------------------------------------------------------------------------
    def _live(self, rkey: int) -> _Key | None:
        index, tag = rkey >> TAG_BITS, rkey & ((1 << TAG_BITS) - 1)
        key = self._keys.get(index)
        return key if key is not None and self._tags[index] == tag else None

    def _key(self, rkey: int) -> _Key:
        key = self._live(rkey)
        if key is None:
            raise InvalidParameter(f"key {rkey:#x} is not allocated")
        return key

    def _fire(self, key: _Key, event: KeyEvent) -> None:
        new = TRANSITIONS.get((key.state, event))
        if new is None:
            raise KeyStateError(f"{event.value} in state {key.state.name}")
        key.state = new

    def _authorised(self, caller: Consumer, address: int, length: int, virtual: bool,
                    what: str) -> None:
        if virtual:
            if not caller.kernel:
                raise InvalidParameter(f"process {caller.pid} may not {what} a virtual "
                                       "address: only a kernel process may (L820)")
            return
        table = self.tables.get(caller.pid)
        if table is None:
            raise InvalidParameter(f"process {caller.pid} has opened no QP")
        if not table.covers(address, length):
            raise InvalidParameter(f"[{address:#x}, +{length}) is outside process "
                                   f"{caller.pid}'s segment table")

    def _may_change(self, caller: Consumer, b: Binding) -> bool:
        return caller.kernel or caller.pid == b.owner

    def _translate(self, rkey: int, b: Binding, va: int, length: int, prot: Prot
                   ) -> Grant | Refusal | Fault:
        """The request's pieces: EA -> VA (the bound process's table), VA -> PA."""
        table = None if b.virtual else self.tables.get(b.owner)
        if table is None and not b.virtual:
            return Refusal(REMOTE_ACCESS_ERROR, f"process {b.owner} has no segment table")
        out = []
        for at, n in pieces(va, length):
            try:
                virt = at if table is None else table.va(at)
                out.append((self.vmm.page_table.pa(virt, prot), n))
            except PageFault:
                if virt >> PAGE_SHIFT in self.unresolvable:
                    return Refusal(REMOTE_OPERATIONAL_ERROR, f"the page of {virt:#x} cannot "
                                   "be brought in")
                return Fault(rkey, virt, b.owner)
            except (NoSegment, ProtectionFault) as exc:  # B3.28 "invalid range"
                return Refusal(REMOTE_ACCESS_ERROR, str(exc))
        return Grant(rkey, b.generation, tuple(out))


class Reach:
    """What the QPs of process ``pid`` reach of their node's memory through the keys (the
    responder's ``qp.Memory``): the check, then the granted pieces, byte for byte."""

    def __init__(self, keys: RKeys, pid: int) -> None:
        self.keys, self.pid = keys, pid

    def check(self, rkey: int, va: int, length: int, op: Op) -> Grant | Refusal | Fault:
        return self.keys.check(rkey, va, length, op, self.pid)

    def _span(self, grant: Grant, offset: int, n: int) -> list[tuple[int, int, int]]:
        """(PA, bytes, where in the data) of ``n`` bytes at ``offset`` into the grant."""
        out, at = [], 0
        for pa, size in grant.pieces:
            if offset >= size:
                offset -= size
                continue
            take = min(size - offset, n - at)
            out.append((pa + offset, take, at))
            at, offset = at + take, 0
            if at == n:
                break
        return out

    def write(self, grant: Grant, offset: int, data: bytes) -> None:
        memory = self.keys.vmm.memory
        for pa, n, at in self._span(grant, offset, len(data)):
            memory.write(pa, data[at:at + n])

    def read(self, grant: Grant, offset: int, n: int) -> bytes:
        memory = self.keys.vmm.memory
        return b"".join(memory.read(pa, k) for pa, k, _ in self._span(grant, offset, n))

    def used(self, grant: Grant) -> None:
        self.keys.used(grant)
