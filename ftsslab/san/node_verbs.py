"""The calls a `verb` step makes on a `sanic` node (``VERBS``): what an application on the node
would call -- the seed's verbs, ibverbs' posts, the VMM's page and segment changes, and the
process's own loads and stores -- each logging what it did as the node's events."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ftsslab.fast.roce import build_rkey_advert

from .memory import SEGMENT_SHIFT
from .node_config import QpSpec, parse_seconds
from .node_runs import SEND_DEPTH, Increment, Run
from .qp import WrOpcode
from .rd import RdDest
from .rkeys import Access, InvalidParameter, KeyStateError
from .verbs import SGE, RecvWR, SendWR, UdSendWR

if TYPE_CHECKING:
    from .node import SanicCore

ATOMIC_OPS = (WrOpcode.ATOMIC_CMP_AND_SWP, WrOpcode.ATOMIC_FETCH_AND_ADD)


def _access(names: list[str]) -> Access:
    bits = Access(0)
    for n in names:
        bits |= Access[n]
    return bits


def _seed_verb(core: SanicCore, args: Mapping[str, Any], call: Callable[[], Any],
               what: str) -> Any:
    """A synchronous verb: INVALID_PARAMETER (L822) is its result, logged, not a failure."""
    try:
        got = call()
    except (InvalidParameter, KeyStateError, KeyError) as exc:
        core._event("verb", op=args["op"], key=args.get("key"), result="INVALID_PARAMETER",
                    error=str(exc))
        return None
    rkey = got if isinstance(got, int) else None
    core._event("verb", op=args["op"], key=args.get("key"), result="OK", what=what,
                **({"rkey": rkey} if rkey is not None else {}))
    return got


def v_allocate_rkey(core: SanicCore, a: Mapping[str, Any]) -> None:
    pd = core.pds[a["process"]]
    got = _seed_verb(core, a, pd.allocate_rkey, "allocated")
    if got is not None:
        core.rkeys[a["key"]] = got


def _key(core: SanicCore, a: Mapping[str, Any]) -> int:
    return core.rkeys[a["key"]] if isinstance(a["key"], str) else a["key"]


def v_bind_rkey(core: SanicCore, a: Mapping[str, Any]) -> None:
    pd = core.pds[a["process"]]
    _seed_verb(core, a, lambda: pd.bind_rkey(_key(core, a), a["address"], a["length"],
                                             _access(a.get("access", []))), "bound")


def v_unbind_rkey(core: SanicCore, a: Mapping[str, Any]) -> None:
    pd = core.pds[a["process"]]
    _seed_verb(core, a, lambda: pd.unbind_rkey(_key(core, a)), "unbound")


def v_deallocate_rkey(core: SanicCore, a: Mapping[str, Any]) -> None:
    pd = core.pds[a["process"]]
    _seed_verb(core, a, lambda: pd.deallocate_rkey(_key(core, a)), "deallocated")


def _default_buffer(core: SanicCore, process: str) -> int:
    esid = core.procs[process].segments[0][0]
    return esid << SEGMENT_SHIFT


def v_advertise(core: SanicCore, a: Mapping[str, Any]) -> None:
    """SEND(RKeyAdvert) of a key's binding on a QP (message 748)."""
    spec = core.specs[a["qp"]]
    rkey = _key(core, a)
    b = core.ctx.keys.binding(rkey)
    va, length, access = (b.base, b.length, b.bits) if b is not None else (0, 0, 0)
    buf = a.get("buffer", _default_buffer(core, spec.process))
    core.store(spec.process, buf, build_rkey_advert(va=va, rkey=rkey, length=length,
                                                    access=int(access),
                                                    kind=1 if b is not None else 2))
    wr = SendWR(a.get("wr_id", core._next_wr(spec.name)), WrOpcode.SEND, (SGE(buf, 32),))
    core._wire(core.qps[spec.name].post_send(wr, core.now))


def _remote(core: SanicCore, a: Mapping[str, Any]) -> tuple[int, int]:
    """(rkey, remote address) of a request: a key value named outright (a forged or stale
    one), or one the QP received in an RKeyAdvert (``advert: 1`` the first, -1 the newest)."""
    ads = core.adverts[a["qp"]]
    advert = None
    if "rkey" not in a or "address" not in a:
        n = a.get("advert", -1)
        advert = ads[n - 1 if n > 0 else n] if ads and -len(ads) <= n <= len(ads) and n else None
    rkey = a["rkey"] if "rkey" in a else (advert["rkey"] if advert else 0)
    address = a["address"] if "address" in a else \
        (advert["va"] if advert else 0) + a.get("offset", 0)
    return rkey, address


_OPCODES = {"send": WrOpcode.SEND, "send_imm": WrOpcode.SEND_WITH_IMM,
            "write": WrOpcode.RDMA_WRITE, "write_imm": WrOpcode.RDMA_WRITE_WITH_IMM,
            "read": WrOpcode.RDMA_READ, "cas": WrOpcode.ATOMIC_CMP_AND_SWP,
            "fetch_add": WrOpcode.ATOMIC_FETCH_AND_ADD, "bind": WrOpcode.BIND_RKEY,
            "delay": WrOpcode.DELAY}


def v_post_send(core: SanicCore, a: Mapping[str, Any]) -> None:
    """ibv_post_send; with ``count``, that many (immediates ``imm``, ``imm``+1, ...), and one
    `burst` event when the last completes."""
    spec = core.specs[a["qp"]]
    opcode = _OPCODES[a["opcode"]]
    local = a.get("local", _default_buffer(core, spec.process))
    length = 8 if opcode in ATOMIC_OPS else a.get("length", 0)
    sg = (SGE(local, length),) if length else ()
    if "sg_list" in a:  # a gathered message (Fig. 8): its parts, in order
        sg = tuple(SGE(p["address"], p["length"]) for p in a["sg_list"])
    if opcode is WrOpcode.BIND_RKEY:
        bind = (_key(core, a), a["address"], a["length"], _access(a.get("access", [])))
        sg, rkey, address = (), 0, 0
    else:
        bind = None
        rkey, address = (0, 0) if opcode in (WrOpcode.SEND, WrOpcode.SEND_WITH_IMM,
                                              WrOpcode.DELAY) else _remote(core, a)
    count = a.get("count", 1)
    first = a.get("wr_id", core._next_wr(spec.name, count))

    def make(i: int) -> SendWR:
        imm = (a.get("imm", 0) + i if count > 1 else a.get("imm")) \
            if opcode in (WrOpcode.SEND_WITH_IMM, WrOpcode.RDMA_WRITE_WITH_IMM) else None
        return SendWR(first + i, opcode, sg, address, rkey, imm, a.get("compare", 0),
                      a.get("swap", a.get("add", 0)), a.get("fence", False),
                      parse_seconds(a.get("delay", 0)), bind)

    dest = _rd_dest(core, spec, a)
    if count == 1 and "depth" not in a:
        core._wire(core._post(spec.name, make(0), dest))
        return
    core._runs[spec.name].append(Run(spec.name, first, count, make, a.get("depth", SEND_DEPTH),
                                      dest, sum(s.length for s in sg)))


def _rd_dest(core: SanicCore, spec: QpSpec, a: Mapping[str, Any]) -> RdDest | None:
    """An RD QP's destination, ``to: node.qp`` (its QPN and Q_Key from the scenario)."""
    if spec.type != "rd":
        return None
    node, _, remote = str(a["to"]).partition(".")
    peer = core.cfg.peers[node]
    return RdDest(peer.ip, peer.qpns[remote], a.get("qkey", peer.qkeys[remote]))


def v_increment(core: SanicCore, a: Mapping[str, Any]) -> None:
    """Add 1 to a remote 8-byte word ``count`` times, by CAS or FETCH_ADD (check 19)."""
    spec = core.specs[a["qp"]]
    by = a.get("by", "cas")
    opcode = WrOpcode.ATOMIC_CMP_AND_SWP if by == "cas" else WrOpcode.ATOMIC_FETCH_AND_ADD
    local = a.get("local", _default_buffer(core, spec.process))
    rkey, address = _remote(core, a)
    count = a["count"]
    first = a.get("wr_id", core._next_wr(spec.name, 1 << 20))
    run = Run(spec.name, first, count,
               lambda i: SendWR(first + i, opcode, (SGE(local, 8),), address, rkey,
                                compare_add=1, swap=1), dest=_rd_dest(core, spec, a))
    core._issue(Increment(run, by, local))


def v_post_recv(core: SanicCore, a: Mapping[str, Any]) -> None:
    spec = core.specs[a["qp"]]
    first = a.get("wr_id", core._next_wr(spec.name, a.get("count", 1)))
    for i in range(a.get("count", 1)):
        core._wire(core.qps[spec.name].post_recv(
            RecvWR(first + i, (SGE(a["address"], a["length"]),))))


def v_post_datagram(core: SanicCore, a: Mapping[str, Any]) -> None:
    """UD SENDs to (node, QP), with that QP's Q_Key unless one is named; with ``count``, that
    many (immediates from ``imm`` up) and one `burst` event."""
    spec = core.specs[a["qp"]]
    node, _, remote = str(a["to"]).partition(".")
    peer = core.cfg.peers[node]
    local = a.get("local", _default_buffer(core, spec.process))
    count = a.get("count", 1)
    first = a.get("wr_id", core._next_wr(spec.name, count))
    if count > 1:  # (a UD send completes as it leaves: the run is posted whole)
        run = Run(spec.name, first, count, lambda i: SendWR(first + i, WrOpcode.SEND),
                   posted=count, started=core.now)
        core._runs[spec.name].append(run)
    for i in range(count):
        imm = a["imm"] + i if "imm" in a and count > 1 else a.get("imm")
        wr = UdSendWR(first + i, (SGE(local, a.get("length", 0)),), peer.ip,
                      peer.qpns[remote], a.get("qkey", peer.qkeys[remote]), imm)
        core._wire(core.qps[spec.name].post_datagram(wr, core.now))


def _page_verb(core: SanicCore, a: Mapping[str, Any], fn: Callable[[int], Any]) -> None:
    pid = core.procs[a["process"]].pid
    try:
        va = core.vmm.tables[pid].va(a["address"])
        got = fn(va)
    except (LookupError, ValueError, MemoryError) as exc:
        core._event("verb", op=a["op"], result="FAILED", error=str(exc))
        return
    core._event("verb", op=a["op"], result="OK", what=str(got))


def v_map_page(core: SanicCore, a: Mapping[str, Any]) -> None:
    _page_verb(core, a, core.ctx.map_local_page)


def v_swap_out(core: SanicCore, a: Mapping[str, Any]) -> None:
    _page_verb(core, a, core.vmm.swap_out)


def v_migrate(core: SanicCore, a: Mapping[str, Any]) -> None:
    """The VMM moves a page to another frame, the PTE following (check 14): logs the old and
    the new frame number (local to the node: no PA leaves it)."""
    _page_verb(core, a, core.vmm.migrate)


def v_add_segment(core: SanicCore, a: Mapping[str, Any]) -> None:
    """The VMM gives the process a segment (a new VSID, or ``vsid``: the one it had);
    ``notified`` is how many SegmentTableUpdate calls the SANIC's driver took for it."""
    before = core.ctx.keys.updates
    vsid = core.vmm.add_segment(core.procs[a["process"]].pid, a["esid"], a.get("vsid"))
    core._event("verb", op="add_segment", result="OK", vsid=vsid,
                notified=core.ctx.keys.updates - before)


def v_delete_segment(core: SanicCore, a: Mapping[str, Any]) -> None:
    before = core.ctx.keys.updates
    try:
        core.vmm.delete_segment(core.procs[a["process"]].pid, a["esid"])
    except KeyError:
        core._event("verb", op="delete_segment", result="FAILED", error="no such segment")
        return
    core._event("verb", op="delete_segment", result="OK",
                notified=core.ctx.keys.updates - before)


def v_fill(core: SanicCore, a: Mapping[str, Any]) -> None:
    """The process writes its buffer: a byte repeated, hex, or seeded random bytes."""
    n = a["length"]
    if "hex" in a:
        data = bytes.fromhex(a["hex"])
    elif "seed" in a:
        data = random.Random(a["seed"]).randbytes(n)
    else:
        data = bytes([a.get("byte", 0)]) * n
    core.store(a["process"], a["address"], data[:n] if "hex" not in a else data)


def v_read(core: SanicCore, a: Mapping[str, Any]) -> None:
    """What the process reads at an address: logged as hex (``memory`` event)."""
    try:
        data = core.load(a["process"], a["address"], a["length"])
    except (LookupError, ValueError) as exc:
        core._event("memory", name=a.get("name"), error=str(exc))
        return
    core._event("memory", name=a.get("name"), data=data.hex(),
                sha256=hashlib.sha256(data).hexdigest())


def v_snapshot(core: SanicCore, a: Mapping[str, Any]) -> None:
    """The whole physical memory image: its SHA-256; with ``since``, the bytes changed
    since that snapshot ("0 bytes change" is ``changed: 0``)."""
    image = bytes(core.vmm.memory.data)
    detail: dict[str, Any] = {}
    if "since" in a:
        old = core.snapshots[a["since"]]
        detail["changed"] = sum(x != y for x, y in zip(old, image, strict=True))
    core.snapshots[a["name"]] = image
    core._event("memory", name=a["name"], sha256=hashlib.sha256(image).hexdigest(), **detail)


def v_query_qp(core: SanicCore, a: Mapping[str, Any]) -> None:
    qp = core.qps[a["qp"]]
    core._event("qp", qp=a["qp"], state=qp.state.name, qpn=qp.qp_num,
                **getattr(qp.core, "counters", {}))


def v_stats(core: SanicCore, a: Mapping[str, Any]) -> None:
    """The node's frame counters, and the packets no QP took (``dropped_*``, by why)."""
    core._event("stats", **core.stats())


def v_received(core: SanicCore, a: Mapping[str, Any]) -> None:
    """What a QP received so far, counted by immediate: each once, none after a later one?"""
    arr = core.arrivals[a["qp"]]
    core._event("received", qp=a["qp"], messages=arr.messages, distinct=len(arr.seen),
                duplicates=arr.duplicates, in_order=arr.in_order == arr.messages)


def v_discover(core: SanicCore, a: Mapping[str, Any]) -> None:
    """The node's agent, as the manager, sweeps every other sanic node of the scenario (the
    addresses a subnet manager would walk); a `discovered` event when it is done."""
    if core.agent is None:
        raise LookupError("this node runs no management agent (its `management` option)")
    core._discovering = True
    targets = [p.ip for _, p in sorted(core.cfg.peers.items())]
    core._wire(core.agent.discover(targets, core.now, sweeps=a.get("sweeps", 4),
                                   timeout=parse_seconds(a.get("timeout", 0.05))))


def v_fault_handler(core: SanicCore, a: Mapping[str, Any]) -> None:
    core.cfg = replace(core.cfg, fault_handler=a["action"])
    if a["action"] == "map":
        core.ctx.keys.unresolvable.clear()


VERBS: dict[str, Callable[[SanicCore, Mapping[str, Any]], None]] = {
    "allocate_rkey": v_allocate_rkey, "bind_rkey": v_bind_rkey, "unbind_rkey": v_unbind_rkey,
    "deallocate_rkey": v_deallocate_rkey, "advertise": v_advertise,
    "post_send": v_post_send, "post_recv": v_post_recv, "post_datagram": v_post_datagram,
    "increment": v_increment, "map_page": v_map_page, "swap_out": v_swap_out,
    "migrate": v_migrate, "add_segment": v_add_segment, "delete_segment": v_delete_segment,
    "fill": v_fill, "read": v_read, "snapshot": v_snapshot, "query_qp": v_query_qp,
    "received": v_received, "stats": v_stats, "discover": v_discover,
    "fault_handler": v_fault_handler,
}
