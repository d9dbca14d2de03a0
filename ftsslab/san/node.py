"""A ``sanic`` node of the lab: one endnode with its SANIC (B3.2), sans-IO.

Frames and verbs in; frames, completions and events out; the clock passed in. The sim drives
it directly (``on_frame``/``on_timer``/``verb``), and on veth ``sanicd`` drives the same core
from a packet ring and the node's control socket. What the node is -- physical frames,
processes with their segments, QPs and their peers -- comes from the scenario
(``SanicConfig``); what it does comes from ``verb`` steps, each a verbs call as an application
on the node would make it (``VERBS``), and everything that happens is an event (``events``):
``completion`` for each work completion, ``advert`` for each RKeyAdvert received, ``fault``
for each page fault the default error handler saw, ``verb`` for a verb's synchronous result,
``memory`` for hashes and reads, ``burst`` and ``received`` for the counted runs.

One IPv4 port per node; its peers' addresses come from the scenario (as a subnet manager
would assign them). ARP is answered, so a kernel host on the fabric can reach it too.
"""

from __future__ import annotations

import hashlib
import random
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ftsslab.fast.roce import build_rkey_advert, parse_rkey_advert
from ftsslab.lab import frames
from ftsslab.lab.switch import Transmit

from .memory import PAGE, PAGE_SHIFT, SEGMENT_SHIFT, Prot, Vmm
from .packets import Packet, frame, packet
from .qp import PageFault, QpState, WcOpcode, WcStatus, WrOpcode
from .rkeys import Access, InvalidParameter, KeyStateError
from .verbs import CQ, PD, QP, SGE, Context, RecvWR, SendWR, UdSendWR

SPORT = 49152  # the UDP source port of every SANIC here
FIRST_QPN = 0x11  # Context numbers QPs from here, in the order they are opened
SEND_DEPTH = 256  # work requests a counted run keeps posted on its QP
MAX_READ = 256  # bytes a `read` verb logs (as hex)
ATOMIC_OPS = (WrOpcode.ATOMIC_CMP_AND_SWP, WrOpcode.ATOMIC_FETCH_AND_ADD)


# ---- what the scenario says the node is ----------------------------------------------------

@dataclass(frozen=True)
class ProcessSpec:
    name: str
    pid: int
    kernel: bool
    segments: tuple[tuple[int, int, int], ...]  # (ESID, pages, of them mapped from the first)


@dataclass(frozen=True)
class QpSpec:
    name: str
    qpn: int
    process: str
    type: str  # "rc" or "ud"
    peer: str | None  # the remote node (RC)
    remote: str | None  # its QP's name (RC)
    max_outstanding: int
    timeout: float
    retry_cnt: int
    rnr_retry: int
    qkey: int  # UD
    recv_buffer: int | None  # EA of a ring of receives kept posted
    recv_size: int
    receives: int


@dataclass(frozen=True)
class SanicConfig:
    name: str
    iface: str
    mac: str
    ip: str
    frames: int
    mtu: int
    rdma: bool
    fault_handler: str  # "map": MapLocalPage; "refuse": every fault is unresolvable
    processes: tuple[ProcessSpec, ...]
    qps: tuple[QpSpec, ...]
    peers: Mapping[str, tuple[str, str, Mapping[str, int]]]  # node -> (ip, mac, QP -> QPN)


def qp_numbers(options: Mapping[str, Any]) -> dict[str, int]:
    """The QPN each of a node's QPs gets: in the order they are declared."""
    return {name: FIRST_QPN + i for i, name in enumerate(options.get("qps", {}))}


def esid_of(key: Any) -> int | None:
    """A segment's ESID from its key (YAML mapping keys arrive as text: "1", "0x10")."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    try:
        return int(str(key), 0)
    except ValueError:
        return None


def parse_seconds(value: Any) -> float:
    """``50ms``, ``1s``, ``0.05``: seconds (options are checked before this runs)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    for unit, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def config(name: str, options: Mapping[str, Any], ports: list[tuple[str, str, str | None]],
           peers: Mapping[str, tuple[str, str, Mapping[str, Any]]]) -> SanicConfig:
    """A node's config from its options, its ports (iface, mac, ipv4/len) and the other sanic
    nodes' (ip, mac, options)."""
    iface, mac, ipv4 = next(p for p in ports if p[2])
    procs = []
    for pid, (pname, p) in enumerate(options["processes"].items(), start=1):
        segs = []
        for esid, seg in p.get("segments", {}).items():
            pages = seg if isinstance(seg, int) else seg["pages"]
            mapped = pages if isinstance(seg, int) else seg.get("mapped", pages)
            segs.append((esid_of(esid), pages, mapped))
        procs.append(ProcessSpec(pname, pid, bool(p.get("kernel", False)), tuple(segs)))
    qpns = qp_numbers(options)
    qps = []
    for qname, q in options.get("qps", {}).items():
        peer, remote = None, None
        if q.get("type", "rc") == "rc":
            peer, _, remote = str(q["peer"]).partition(".")
            remote = remote or qname
        qps.append(QpSpec(
            qname, qpns[qname], q["process"], q.get("type", "rc"), peer, remote,
            q.get("max_outstanding", 16), parse_seconds(q.get("timeout", 0.05)),
            q.get("retry_cnt", 7), q.get("rnr_retry", 7), q.get("qkey", 0),
            q.get("recv_buffer"), q.get("recv_size", 4096), q.get("receives", 0)))
    peer_table = {n: (ip, pmac, qp_numbers(popts)) for n, (ip, pmac, popts) in peers.items()}
    return SanicConfig(name, iface, mac, ipv4.split("/")[0], options.get("frames", 256),
                       options.get("mtu", 1024), options.get("rdma", True),
                       options.get("fault_handler", "map"), tuple(procs), tuple(qps),
                       peer_table)


# ---- counted runs ---------------------------------------------------------------------------

@dataclass
class _Run:
    """``count`` work requests of one shape on one QP, ``depth`` posted at a time (1: each
    after the last completed, timed one by one -- a latency test)."""

    qp: str
    first_wr: int
    count: int
    make: Callable[[int], SendWR]  # the i-th work request
    depth: int = SEND_DEPTH
    length: int = 0  # bytes each moves
    posted: int = 0
    done: int = 0
    success: int = 0
    first_error: str | None = None
    successes: int = 0  # `increment`: CAS attempts that took
    started: float | None = None  # the first post
    ended: float = 0.0  # the last completion
    last_post: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def completed(self, now: float, ok: bool, status: str) -> None:
        self.done += 1
        self.ended = now
        if self.depth == 1:
            self.latencies.append(now - self.last_post)
        if ok:
            self.success += 1
        elif self.first_error is None:
            self.first_error = status

    def timing(self) -> dict[str, float]:
        """Seconds from the first post to the last completion; with depth 1, latencies."""
        if self.started is None:
            return {}
        out = {"seconds": self.ended - self.started, "bytes": self.length * self.success}
        if self.latencies:
            lat = sorted(self.latencies)
            out |= {"lat_min_us": lat[0] * 1e6, "lat_p50_us": lat[len(lat) // 2] * 1e6,
                    "lat_p99_us": lat[min(len(lat) - 1, len(lat) * 99 // 100)] * 1e6}
        return out


@dataclass
class _Increment:
    """An application's loop: add 1 to a remote word ``count`` times by CAS (read the old
    value, CAS old -> old+1, again on a miss) or by FETCH_ADD -- no update may be lost."""

    run: _Run
    by: str
    local: int
    guess: int = 0
    attempts: int = 0


@dataclass
class _Arrivals:
    """What a QP received, for the `received` summary: the immediates in order of arrival."""

    messages: int = 0
    next_imm: int = 0
    in_order: int = 0
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0


# ---- the node -------------------------------------------------------------------------------

class SanicCore:
    """The endnode: its VMM, SANIC (``verbs.Context``), processes and QPs."""

    def __init__(self, cfg: SanicConfig, now: float = 0.0) -> None:
        self.cfg, self.name = cfg, cfg.name
        self.mac = frames.mac_bytes(cfg.mac)
        self.now = now
        self.events: list[dict] = []
        self.counters = {"frames_in": 0, "frames_out": 0, "malformed": 0, "unroutable": 0}
        self.vmm = Vmm(cfg.frames)
        self.ctx = Context(self.vmm, cfg.name, mtu=cfg.mtu, rdma=cfg.rdma, handler=self._fault)
        self.cq = CQ(clock=lambda: self.now)  # one CQ for every QP: a completion names its QP
        self.pds: dict[str, PD] = {}
        self.procs = {p.name: p for p in cfg.processes}
        for p in cfg.processes:
            table = self.vmm.process(p.pid)
            for esid, _pages, mapped in p.segments:
                self.vmm.add_segment(p.pid, esid)
                for page in range(mapped):
                    self.vmm.map_page(table.va((esid << SEGMENT_SHIFT) | page << PAGE_SHIFT))
            self.pds[p.name] = self.ctx.pd(p.pid, kernel=p.kernel)
        self.qps: dict[str, QP] = {}
        self.qp_names: dict[int, str] = {}
        self.rkeys: dict[str, int] = {}  # a key's name in the scenario -> its value
        self.adverts: dict[str, list[dict]] = {}
        self.arrivals: dict[str, _Arrivals] = {}
        self.snapshots: dict[str, bytes] = {}
        self.neighbours = {ip: frames.mac_bytes(mac) for ip, mac, _ in cfg.peers.values()}
        self._runs: dict[str, deque[_Run]] = {}
        self._increments: dict[int, _Increment] = {}
        self._wr_ids: dict[str, int] = {}
        self._ring: dict[str, int] = {}  # next receive slot of a QP's ring
        self._out: list[bytes] = []
        for q in cfg.qps:
            pd = self.pds[q.process]
            if q.type == "ud":
                qp = pd.open_ud_qp(self.cq, q.qkey)
            else:
                qp = pd.open_qp(self.cq, max_outstanding=q.max_outstanding)
                ip, _, remote_qpns = cfg.peers[q.peer]
                qp.connect(ip, remote_qpns[q.remote], now, timeout=q.timeout,
                           retry_cnt=q.retry_cnt, rnr_retry=q.rnr_retry)
            assert qp.qp_num == q.qpn, "QPs are numbered in the order they are declared"
            self.qps[q.name] = qp
            self.qp_names[qp.qp_num] = q.name
            self.adverts[q.name] = []
            self.arrivals[q.name] = _Arrivals()
            self._runs[q.name] = deque()
            for slot in range(q.receives):
                self._post_recv_slot(q, slot)

    # ---- the sim's core interface ------------------------------------------------------------
    def on_frame(self, iface: str, data: bytes, now: float) -> list[Transmit]:
        self.now = now
        if data[12:14] == b"\x08\x06":
            arp = frames.parse_arp(data)
            if arp is not None and (reply := frames.answer_arp(arp, self.cfg.ip, self.mac,
                                                               self.neighbours)):
                self._out.append(reply)
            return self._flush()
        if data[:6] != self.mac:
            return []
        self.counters["frames_in"] += 1
        got = packet(data)
        if got is None:
            self.counters["malformed"] += 1  # not ours to parse, cut short or a bad ICRC
            return self._flush()
        self._wire(self.ctx.receive(got, now, socket.inet_ntoa(data[26:30])))
        self._drain()
        return self._flush()

    def next_deadline(self) -> float | None:
        return self.ctx.next_deadline()

    def on_timer(self, now: float) -> list[Transmit]:
        self.now = now
        self._wire(self.ctx.on_timer(now))
        self._drain()
        return self._flush()

    def node_events(self) -> list[dict]:
        return self.events

    def stats(self) -> dict:
        return dict(self.counters)

    def verb(self, args: Mapping[str, Any], now: float) -> list[Transmit]:
        """One verbs call by an application on the node (a `verb` step)."""
        self.now = now
        try:
            VERBS[args["op"]](self, args)
        except (LookupError, ValueError) as exc:  # a key or advert not there (yet)
            self._event("verb", op=args["op"], result="FAILED", error=str(exc))
        self._drain()
        return self._flush()

    # ---- the wire ----------------------------------------------------------------------------
    def _wire(self, out: list[tuple[str, Packet]]) -> None:
        for peer, p in out:
            mac = self.neighbours.get(peer)
            if mac is None:
                self.counters["unroutable"] += 1
                continue
            self._out.append(frame(p, eth_dst=mac.hex(":"), eth_src=self.cfg.mac,
                                   ip_src=self.cfg.ip, ip_dst=peer, sport=SPORT))

    def _flush(self) -> list[Transmit]:
        out, self._out = self._out, []
        self.counters["frames_out"] += len(out)
        return [Transmit(self.cfg.iface, f) for f in out]

    def _event(self, kind: str, **detail: Any) -> None:
        self.events.append({"t": self.now, "node": self.name, "kind": kind, **detail})

    # ---- completions -------------------------------------------------------------------------
    def _drain(self) -> None:
        """Take every completion: log it or count it into its run, refill runs and rings."""
        while wcs := self.cq.poll(64):
            for wc in wcs:
                self._completion(wc)
        for name, runs in self._runs.items():
            while runs and runs[0].posted == runs[0].count and runs[0].done == runs[0].count:
                self._finish(runs.popleft())
            if runs:
                self._pump(name, runs[0])

    def _completion(self, wc) -> None:
        name = self.qp_names.get(wc.qp_num, str(wc.qp_num))
        spec = next(q for q in self.cfg.qps if q.name == name)
        if wc.opcode in (WcOpcode.RECV, WcOpcode.RECV_RDMA_WITH_IMM):
            self._received(spec, wc)
            return
        inc = self._increments.pop(wc.wr_id, None)
        if inc is not None:
            self._increment_done(inc, wc)
            return
        run = next((r for r in self._runs[name]
                    if r.first_wr <= wc.wr_id < r.first_wr + r.count), None)
        if run is not None:
            run.completed(self.now, wc.status is WcStatus.SUCCESS, wc.status.value)
            return
        self._event("completion", qp=name, wr_id=wc.wr_id, status=wc.status.value,
                    opcode=wc.opcode.value, byte_len=wc.byte_len)

    def _received(self, spec: QpSpec, wc) -> None:
        arr = self.arrivals[spec.name]
        if wc.status is not WcStatus.SUCCESS:
            self._event("completion", qp=spec.name, wr_id=wc.wr_id, status=wc.status.value,
                        opcode=wc.opcode.value, byte_len=wc.byte_len)
            return
        arr.messages += 1
        if wc.imm is not None:
            if wc.imm in arr.seen:
                arr.duplicates += 1
            arr.seen.add(wc.imm)
            if wc.imm == arr.next_imm:
                arr.in_order += 1
            arr.next_imm = wc.imm + 1
        if spec.recv_buffer is not None and wc.wr_id >> 32 == 1:  # a ring slot
            slot = wc.wr_id & 0xFFFFFFFF
            data = self._peek(spec.process, spec.recv_buffer + slot * spec.recv_size,
                              min(wc.byte_len, spec.recv_size))
            advert = parse_rkey_advert(data) if data else None
            if advert is not None:
                self.adverts[spec.name].append(advert)
                self._event("advert", qp=spec.name, rkey=advert["rkey"], va=advert["va"],
                            length=advert["length"], advert_kind=advert["kind"])
            self._post_recv_slot(spec, slot)
        elif wc.imm is None:
            self._event("completion", qp=spec.name, wr_id=wc.wr_id, status=wc.status.value,
                        opcode=wc.opcode.value, byte_len=wc.byte_len)

    def _post_recv_slot(self, spec: QpSpec, slot: int) -> None:
        assert spec.recv_buffer is not None
        at = spec.recv_buffer + slot * spec.recv_size
        self._wire(self.qps[spec.name].post_recv(
            RecvWR(1 << 32 | slot, (SGE(at, spec.recv_size),))))

    def _fault(self, f: PageFault) -> None:
        """The SANIC's default error handler (B3.28, D3.8): MapLocalPage, or give up."""
        qp = self.qp_names.get(f.qp_num, str(f.qp_num))
        if self.cfg.fault_handler == "map":
            self.ctx.map_local_page(f.va)
            self._event("fault", qp=qp, va=f.va, rkey=f.rkey, resolved=True)
        else:
            self.ctx.keys.unresolvable.add(f.va >> PAGE_SHIFT)
            self._event("fault", qp=qp, va=f.va, rkey=f.rkey, resolved=False)

    # ---- counted runs ------------------------------------------------------------------------
    def _pump(self, name: str, run: _Run) -> None:
        qp = self.qps[name]
        while run.posted < run.count and run.posted - run.done < run.depth:
            if qp.state is QpState.ERROR:  # the rest would only be flushed
                run.done += run.count - run.posted
                run.first_error = run.first_error or WcStatus.WR_FLUSH_ERR.value
                run.posted = run.count
                break
            if run.started is None:
                run.started = self.now
            run.last_post = self.now
            self._wire(qp.post_send(run.make(run.posted), self.now))
            run.posted += 1

    def _finish(self, run: _Run) -> None:
        self._event("burst", qp=run.qp, wr_id=run.first_wr, count=run.count,
                    success=run.success, first_error=run.first_error, **run.timing(),
                    **({"successes": run.successes} if run.successes else {}))

    def _increment_done(self, inc: _Increment, wc) -> None:
        run = inc.run
        if wc.status is not WcStatus.SUCCESS:
            run.done, run.first_error = run.count, wc.status.value
            self._finish(run)
            return
        old = int.from_bytes(self._peek(self._qp_process(run.qp), inc.local, 8), "big")
        if inc.by == "fetch_add" or old == inc.guess:
            run.done += 1
            run.successes += 1
            inc.guess = old + 1
        else:
            inc.guess = old
        if run.done == run.count:
            run.success = run.count
            self._event("burst", qp=run.qp, wr_id=run.first_wr, count=run.count,
                        success=run.count, first_error=None, successes=run.successes,
                        attempts=inc.attempts)
            return
        self._issue(inc)

    def _issue(self, inc: _Increment) -> None:
        wr = inc.run.make(inc.attempts)
        if inc.by == "cas":
            wr = SendWR(wr.wr_id, wr.opcode, wr.sg_list, wr.remote_addr, wr.rkey,
                        compare_add=inc.guess, swap=inc.guess + 1)
        inc.attempts += 1
        self._increments[wr.wr_id] = inc
        self._wire(self.qps[inc.run.qp].post_send(wr, self.now))

    def _qp_process(self, qp: str) -> str:
        return next(q.process for q in self.cfg.qps if q.name == qp)

    # ---- memory, as the process sees it ------------------------------------------------------
    def _peek(self, process: str, ea: int, n: int) -> bytes:
        table = self.vmm.tables[self.procs[process].pid]
        out = bytearray()
        for at in range(ea, ea + n, PAGE):
            take = min(PAGE - (at % PAGE), ea + n - at)
            out += self.vmm.memory.read(self.vmm.page_table.pa(table.va(at), Prot.READ), take)
        return bytes(out[:n])

    def _poke(self, process: str, ea: int, data: bytes) -> None:
        table = self.vmm.tables[self.procs[process].pid]
        done = 0
        while done < len(data):
            at = ea + done
            take = min(PAGE - (at % PAGE), len(data) - done)
            self.vmm.memory.write(self.vmm.page_table.pa(table.va(at), Prot.WRITE),
                                  data[done:done + take])
            done += take

    def _next_wr(self, qp: str, n: int = 1) -> int:
        first = self._wr_ids.get(qp, 1)
        self._wr_ids[qp] = first + n
        return first



# ---- the verbs a `verb` step may call -------------------------------------------------------

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
    spec = next(q for q in core.cfg.qps if q.name == a["qp"])
    rkey = _key(core, a)
    b = core.ctx.keys.binding(rkey)
    va, length, access = (b.base, b.length, b.bits) if b is not None else (0, 0, 0)
    buf = a.get("buffer", _default_buffer(core, spec.process))
    core._poke(spec.process, buf, build_rkey_advert(va=va, rkey=rkey, length=length,
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
    spec = next(q for q in core.cfg.qps if q.name == a["qp"])
    qp = core.qps[spec.name]
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

    if count == 1 and "depth" not in a:
        core._wire(qp.post_send(make(0), core.now))
        return
    core._runs[spec.name].append(_Run(spec.name, first, count, make, a.get("depth", SEND_DEPTH),
                                      sum(s.length for s in sg)))


def v_increment(core: SanicCore, a: Mapping[str, Any]) -> None:
    """Add 1 to a remote 8-byte word ``count`` times, by CAS or FETCH_ADD (check 19)."""
    spec = next(q for q in core.cfg.qps if q.name == a["qp"])
    by = a.get("by", "cas")
    opcode = WrOpcode.ATOMIC_CMP_AND_SWP if by == "cas" else WrOpcode.ATOMIC_FETCH_AND_ADD
    local = a.get("local", _default_buffer(core, spec.process))
    rkey, address = _remote(core, a)
    count = a["count"]
    first = a.get("wr_id", core._next_wr(spec.name, 1 << 20))
    run = _Run(spec.name, first, count,
               lambda i: SendWR(first + i, opcode, (SGE(local, 8),), address, rkey,
                                compare_add=1, swap=1))
    core._issue(_Increment(run, by, local))


def v_post_recv(core: SanicCore, a: Mapping[str, Any]) -> None:
    spec = next(q for q in core.cfg.qps if q.name == a["qp"])
    first = a.get("wr_id", core._next_wr(spec.name, a.get("count", 1)))
    for i in range(a.get("count", 1)):
        core._wire(core.qps[spec.name].post_recv(
            RecvWR(first + i, (SGE(a["address"], a["length"]),))))


def v_post_datagram(core: SanicCore, a: Mapping[str, Any]) -> None:
    """A UD SEND to (node, QP) with that QP's Q_Key unless one is named."""
    spec = next(q for q in core.cfg.qps if q.name == a["qp"])
    peer, _, remote = str(a["to"]).partition(".")
    ip, _, qpns = core.cfg.peers[peer]
    local = a.get("local", _default_buffer(core, spec.process))
    wr = UdSendWR(a.get("wr_id", core._next_wr(spec.name)), (SGE(local, a.get("length", 0)),),
                  ip, qpns[remote], a.get("qkey", spec.qkey), a.get("imm"))
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
    core._poke(a["process"], a["address"], data[:n] if "hex" not in a else data)


def v_read(core: SanicCore, a: Mapping[str, Any]) -> None:
    """What the process reads at an address: logged as hex (``memory`` event)."""
    try:
        data = core._peek(a["process"], a["address"], a["length"])
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


def v_received(core: SanicCore, a: Mapping[str, Any]) -> None:
    """What a QP received so far, counted by immediate: each once and in order?"""
    arr = core.arrivals[a["qp"]]
    core._event("received", qp=a["qp"], messages=arr.messages, distinct=len(arr.seen),
                duplicates=arr.duplicates, in_order=arr.in_order == arr.messages)


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
    "received": v_received, "fault_handler": v_fault_handler,
}
